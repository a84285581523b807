//! The three images the Helm chart references, built by images/kubernetes/build.sh into a
//! throw-away dockerd (in a per-run network namespace, as docs/docker-lab.md describes), and
//! run under `--net none`:
//! - the tags are the chart's default `images.{node,cni,controllers}` from values.yaml;
//! - calico-node's and calico-kube-controllers' entrypoints start (without a datastore they
//!   stop at reading it, which proves the binary and its libraries load inside the image);
//!   calicoctl and ip run from the node image;
//! - the CNI image runs the install-cni init container exactly as the rendered
//!   manifests/calico-rs.yaml has it (command, args, env, mounts): the plugins land byte-identical
//!   in the host's CNI bin dir and the conflist has the node name filled in; each plugin answers
//!   CNI_COMMAND=VERSION inside the image.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use calico_lab::dockerd::{Dockerd, DockerdConfig};
use serde_yaml_ng::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}x{:x}", std::process::id(), nanos % 0xffff)
}

/// A network namespace and a temporary directory for this run, removed on drop (also on panic).
struct Lab {
    netns: String,
    dir: PathBuf,
}

impl Lab {
    fn new() -> Self {
        let netns = unique("k8si");
        let st = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .expect("ip netns add");
        assert!(st.success(), "ip netns add {netns}");
        let dir = std::env::temp_dir().join(unique("calico-rs-k8s-images-"));
        let lab = Lab { netns, dir };
        std::fs::create_dir_all(&lab.dir).expect("temp dir");
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn docker(daemon: &Dockerd, args: &[&str]) -> Output {
    daemon.cli().args(args).output().expect("docker CLI")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn docker_ok(daemon: &Dockerd, args: &[&str]) -> String {
    let out = docker(daemon, args);
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    text(&out)
}

fn image_of(values: &Value, key: &str) -> String {
    let img = &values["images"][key];
    let repo = img["repository"].as_str().expect("repository");
    let tag = img["tag"].as_str().expect("tag");
    format!("{repo}:{tag}")
}

/// The install-cni init container and the calico-rs-config ConfigMap of the plain manifest.
fn install_cni_from_manifest() -> (Value, String) {
    let text = std::fs::read_to_string(root().join("manifests/calico-rs.yaml")).expect("manifest");
    let mut init = None;
    let mut cni_config = None;
    for doc in text.split("\n---") {
        let v: Value = serde_yaml_ng::from_str(doc).expect("manifest YAML");
        match (v["kind"].as_str(), v["metadata"]["name"].as_str()) {
            (Some("DaemonSet"), Some("calico-node")) => {
                let inits = v["spec"]["template"]["spec"]["initContainers"]
                    .as_sequence()
                    .expect("initContainers");
                init = inits
                    .iter()
                    .find(|c| c["name"].as_str() == Some("install-cni"))
                    .cloned();
            }
            (Some("ConfigMap"), Some("calico-rs-config")) => {
                cni_config = v["data"]["cni_network_config"].as_str().map(str::to_string);
            }
            _ => {}
        }
    }
    (
        init.expect("install-cni init container in manifests/calico-rs.yaml"),
        cni_config.expect("cni_network_config in manifests/calico-rs.yaml"),
    )
}

#[test]
fn chart_images_build_and_run() {
    let started = Instant::now();
    let lab = Lab::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let daemon = rt
        .block_on(Dockerd::start(DockerdConfig {
            netns: lab.netns.clone(),
            state_dir: lab.dir.join("docker"),
            plugins_dir: lab.dir.join("plugins"),
            start_timeout: Duration::from_secs(30),
            cgroup_parent: None,
        }))
        .expect("dockerd");

    let bin_dir = Path::new(env!("CARGO_BIN_EXE_calico-node"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let out = Command::new("sh")
        .arg(root().join("images/kubernetes/build.sh"))
        .arg(daemon.socket())
        .env("BIN_DIR", &bin_dir)
        .output()
        .expect("build.sh");
    assert!(out.status.success(), "build.sh: {}", text(&out));

    let values: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("charts/calico-rs/values.yaml")).expect("values"),
    )
    .expect("values.yaml");
    let node = image_of(&values, "node");
    let cni = image_of(&values, "cni");
    let controllers = image_of(&values, "controllers");
    let built = text(&out);
    for tag in [&node, &cni, &controllers] {
        assert!(built.contains(tag.as_str()), "{tag} not built: {built}");
        let layers = docker_ok(&daemon, &["history", "-q", tag]);
        assert!(!layers.trim().is_empty(), "{tag}: no layers");
    }
    // The staging image of the CNI build is not left behind.
    let images = docker_ok(&daemon, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(images.lines().count(), 3, "{images}");

    // calico-node: its entrypoint runs and stops at the missing datastore configuration.
    let out = docker(&daemon, &["run", "--rm", "--net", "none", &node]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("datastore configuration"),
        "{}",
        text(&out)
    );
    let out = docker_ok(
        &daemon,
        &[
            "run",
            "--rm",
            "--net",
            "none",
            "--entrypoint",
            "/bin/calicoctl",
            &node,
            "version",
        ],
    );
    assert!(out.contains("Client Version:"), "{out}");
    let out = docker_ok(
        &daemon,
        &[
            "run",
            "--rm",
            "--net",
            "none",
            "--entrypoint",
            "/bin/ip",
            &node,
            "-o",
            "link",
        ],
    );
    assert!(out.contains("lo:"), "{out}");

    // calico-kube-controllers: the same for its entrypoint.
    let out = docker(&daemon, &["run", "--rm", "--net", "none", &controllers]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("datastore configuration"),
        "{}",
        text(&out)
    );

    // CNI: each plugin answers VERSION inside the image.
    for plugin in ["calico", "calico-ipam", "portmap"] {
        let entry = format!("/opt/cni/bin/{plugin}");
        let out = docker_ok(
            &daemon,
            &[
                "run",
                "--rm",
                "--net",
                "none",
                "-e",
                "CNI_COMMAND=VERSION",
                "--entrypoint",
                &entry,
                &cni,
            ],
        );
        assert!(out.contains("supportedVersions"), "{plugin}: {out}");
    }

    // CNI: the manifest's install-cni container, run as the kubelet would (its command, args,
    // env and the two host mounts).
    let (init, cni_config) = install_cni_from_manifest();
    let host = lab.dir.join("host");
    let mut run: Vec<String> = ["run", "--rm", "--net", "none"].map(String::from).to_vec();
    for m in init["volumeMounts"].as_sequence().expect("volumeMounts") {
        let path = m["mountPath"].as_str().expect("mountPath");
        let on_host = host.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&on_host).expect("host dir");
        run.push("-v".into());
        run.push(format!("{}:{path}", on_host.display()));
    }
    run.push("-e".into());
    run.push("KUBERNETES_NODE_NAME=node-a".into());
    run.push("-e".into());
    run.push(format!("CNI_NETWORK_CONFIG={cni_config}"));
    let command: Vec<&str> = init["command"]
        .as_sequence()
        .expect("command")
        .iter()
        .map(|c| c.as_str().expect("command string"))
        .collect();
    run.push("--entrypoint".into());
    run.push(command[0].to_string());
    run.push(cni.clone());
    run.extend(command[1..].iter().map(|s| s.to_string()));
    for a in init["args"].as_sequence().expect("args") {
        run.push(a.as_str().expect("arg string").to_string());
    }
    let args: Vec<&str> = run.iter().map(String::as_str).collect();
    let out = docker_ok(&daemon, &args);
    assert!(out.contains("for node node-a"), "{out}");
    let bin_on_host = host.join("host/opt/cni/bin");
    for (plugin, source) in [
        ("calico", bin_dir.join("calico")),
        ("calico-ipam", bin_dir.join("calico-ipam")),
        ("portmap", PathBuf::from("/usr/lib/cni/portmap")),
    ] {
        let installed = std::fs::read(bin_on_host.join(plugin)).expect("installed plugin");
        assert!(
            installed == std::fs::read(&source).expect("source plugin"),
            "{plugin} differs from {}",
            source.display()
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&bin_on_host)
        .expect("bin dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let conf_name = values["cni"]["confName"].as_str().expect("confName");
    let conf =
        std::fs::read_to_string(host.join("host/etc/cni/net.d").join(conf_name)).expect("conflist");
    assert!(conf.contains("node-a"), "{conf}");
    assert!(!conf.contains("__KUBERNETES_NODE_NAME__"), "{conf}");
    let _: serde_json::Value = serde_json::from_str(&conf).expect("conflist is JSON");

    // Containers leave root-owned files in the temp dir; dockerd goes before the namespace.
    drop(daemon);
    drop(lab);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}
