//! Install artefacts: the Helm chart in charts/calico-rs and the plain manifests in manifests/.
//!
//! What is checked, and with what:
//! - `helm lint --strict` and `helm template` with the default values and with
//!   charts/calico-rs/ci/non-default-values.yaml (values.schema.json is enforced by both);
//! - every rendered object and manifests/calico-rs.yaml with `kubernetes-validate --strict`
//!   against Kubernetes 1.35 (built-in kinds and the CRD objects themselves);
//! - the example custom resources (ippool.yaml, bgppeer.yaml, policy.yaml), which
//!   kubernetes-validate cannot check (it has no schema for projectcalico.org kinds), against
//!   our CRDs' openAPIV3Schema with unknown fields rejected (tests/support/crd_validate.py) and
//!   with `calicoctl validate` (calico-api's semantic rules);
//! - manifests/calico-rs.yaml equals a fresh scripts/render-manifests.sh run (no drift);
//! - charts/calico-rs/crds is byte-identical to crds/.
//!
//! helm, kubernetes-validate and python3 (with jsonschema and PyYAML, which kubernetes-validate
//! brings) are installed by scripts/setup.sh; a missing tool fails the test, it is never skipped.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const K8S_VERSION: &str = "1.35.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/calico-rs")
}

fn non_default_values() -> PathBuf {
    chart().join("ci/non-default-values.yaml")
}

/// Runs a tool and returns its output; panics naming the command when it cannot start.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (installed by scripts/setup.sh?): {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("calico-rs-install-{tag}-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// `helm template` of the chart, CRDs and test hooks included.
fn render(values: Option<&Path>) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "calico-rs",
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        "kube-system",
        "--include-crds",
    ];
    if let Some(v) = values {
        args.extend(["-f", v.to_str().expect("utf-8 path")]);
    }
    run_ok("helm", &args)
}

/// Counts `kind: X` lines at the start of a document (top-level kinds).
fn kinds(rendered: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for line in rendered.lines() {
        if let Some(k) = line.strip_prefix("kind: ") {
            *m.entry(k.trim().to_string()).or_default() += 1;
        }
    }
    m
}

fn kubernetes_validate(file: &Path) {
    let out = run(
        "kubernetes-validate",
        &[
            "--strict",
            "-k",
            K8S_VERSION,
            file.to_str().expect("utf-8 path"),
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate rejected {}:\n{text}",
        file.display()
    );
    // A kind without a schema is only a warning for kubernetes-validate; here it is a failure,
    // so nothing in these files goes unchecked.
    assert!(
        !text.contains("Couldn't find schema"),
        "unvalidated kind in {}:\n{text}",
        file.display()
    );
    assert!(
        text.contains("passed"),
        "nothing validated in {}:\n{text}",
        file.display()
    );
}

#[test]
fn helm_lint_is_clean_with_default_and_non_default_values() {
    let chart = chart();
    let chart = chart.to_str().expect("utf-8 path");
    let nd = non_default_values();
    for args in [
        vec!["lint", "--strict", chart],
        vec![
            "lint",
            "--strict",
            chart,
            "-f",
            nd.to_str().expect("utf-8 path"),
        ],
    ] {
        let out = run_ok("helm", &args);
        assert!(out.contains("0 chart(s) failed"), "helm {args:?}:\n{out}");
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "helm {args:?}:\n{out}"
        );
    }
}

#[test]
fn values_schema_rejects_bad_values() {
    // The schema is a real gate: a typo'd key and an out-of-range MTU are both refused.
    let chart = chart();
    for bad in [
        "mtuu=1500",
        "mtu=100",
        "etcd.endpoints={10.0.0.1:2379}",
        "networkingBackend=vxlan",
        "cni.tokenExpirationSeconds=60",
        "kubernetesServiceEndpoint.host=https://10.0.0.1",
    ] {
        let out = run(
            "helm",
            &[
                "template",
                "x",
                chart.to_str().expect("utf-8 path"),
                "--set",
                bad,
            ],
        );
        assert!(
            !out.status.success(),
            "--set {bad} should be rejected by values.schema.json"
        );
    }
}

#[test]
fn default_render_has_every_object_and_passes_kubernetes_validate() {
    let rendered = render(None);
    let k = kinds(&rendered);
    let crds = fs::read_dir(root().join("crds")).expect("crds/").count();
    assert_eq!(k.get("CustomResourceDefinition"), Some(&crds), "{k:?}");
    for (kind, n) in [
        ("DaemonSet", 1),
        ("Deployment", 1),
        ("ConfigMap", 1),
        ("ClusterRole", 2),
        ("ClusterRoleBinding", 2),
        ("Role", 1),
        ("RoleBinding", 1),
        ("ServiceAccount", 2),
        ("Service", 1),
        ("ValidatingAdmissionPolicy", 9),
        ("ValidatingAdmissionPolicyBinding", 9),
        ("Lease", 1),
        ("Pod", 3), // helm test hooks
        ("Job", 1), // the pre-delete hook that marks an uninstall
    ] {
        assert_eq!(k.get(kind), Some(&n), "{kind} count in {k:?}");
    }
    for needle in [
        "hostNetwork: true",
        "privileged: true",
        "fieldPath: spec.nodeName",
        "name: install-cni",
        "name: cni-kubeconfig",
        "restartPolicy: Always",
        "/opt/cni/bin/calico kubeconfig &",
        "helm.sh/hook: pre-delete",
        "command: [\"/bin/calico-node\", \"-mark-uninstall\"]",
        "name: CNI_CONF_NAME",
        "\"kubernetes\": {\"kubeconfig\": \"/etc/cni/net.d/calico-kubeconfig\"}",
        "expirationSeconds: 3600",
        "path: /liveness",
        "path: /readiness",
        "port: 9099",
        "value: etcdv3",
        "etcd_endpoints: \"http://127.0.0.1:2379\"",
        "value: \"192.168.0.0/16\"",
        "\"mtu\": 1440",
        "helm.sh/hook: test",
        // IPv6 left empty: IPv4 only, no default IPv6 pool (as Calico's manifests).
        "name: FELIX_IPV6SUPPORT\n              value: \"false\"",
    ] {
        assert!(rendered.contains(needle), "default render lacks {needle:?}");
    }
    assert!(
        !rendered.contains("CALICO_IPV6POOL_CIDR"),
        "an IPv6 pool is configured although pools.ipv6.cidr is empty"
    );
    let dir = temp_dir("default");
    let file = dir.join("rendered.yaml");
    fs::write(&file, &rendered).expect("write render");
    kubernetes_validate(&file);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn non_default_render_applies_the_values_and_passes_kubernetes_validate() {
    let rendered = render(Some(&non_default_values()));
    for needle in [
        "etcd_endpoints: \"https://10.0.0.11:2379,https://10.0.0.12:2379,https://10.0.0.13:2379\"",
        "secretName: calico-etcd-secrets",
        "value: /calico-secrets/etcd-ca",
        "image: registry.example.com/calico-rs/node:0.2.0",
        "image: registry.example.com/calico-rs/cni:0.2.0",
        "image: registry.example.com/calico-rs/kube-controllers:0.2.0",
        "name: AS\n              value: \"65001\"",
        "\"mtu\": 8950",
        "value: \"10.244.0.0/16\"",
        "value: \"fd00:10:244::/56\"",
        "\"assign_ipv6\": \"true\"",
        "calico_backend: \"none\"",
        "key: dedicated",
        "network: calico-rs",
        "replicas: 2",
        "resourceNames: [\"calico-rs-controllers\"]",
        "containerPort: 9095",
        "05-calico-rs.conflist",
        "name: KUBERNETES_SERVICE_HOST\n              value: \"10.0.0.10\"",
        "name: KUBERNETES_SERVICE_PORT\n              value: \"6443\"",
        "expirationSeconds: 7200",
    ] {
        assert!(
            rendered.contains(needle),
            "non-default render lacks {needle:?}"
        );
    }
    assert!(
        !rendered.contains("FELIX_IPV6SUPPORT"),
        "IPv6 support turned off although pools.ipv6.cidr is set"
    );
    assert!(
        !kinds(&rendered).contains_key("ValidatingAdmissionPolicy"),
        "admissionPolicy.enabled=false still renders the policies"
    );
    let dir = temp_dir("non-default");
    let file = dir.join("rendered.yaml");
    fs::write(&file, &rendered).expect("write render");
    kubernetes_validate(&file);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn plain_manifest_passes_kubernetes_validate() {
    kubernetes_validate(&root().join("manifests/calico-rs.yaml"));
}

fn examples() -> Vec<PathBuf> {
    ["ippool.yaml", "bgppeer.yaml", "policy.yaml"]
        .iter()
        .map(|f| root().join("manifests").join(f))
        .collect()
}

fn crd_validate(files: &[PathBuf]) -> Output {
    let script = root().join("tests/support/crd_validate.py");
    let crds = root().join("crds");
    let mut args = vec![
        script.to_str().expect("utf-8 path").to_string(),
        crds.to_str().expect("utf-8 path").to_string(),
    ];
    args.extend(
        files
            .iter()
            .map(|f| f.to_str().expect("utf-8 path").to_string()),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run("python3", &refs)
}

#[test]
fn example_resources_match_the_crd_schemas() {
    let out = crd_validate(&examples());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("checked 4 document(s)"), "{text}");

    // The same check refuses a misspelt field and a wrong type.
    let dir = temp_dir("crd-negative");
    let bad = dir.join("bad.yaml");
    let pool = fs::read_to_string(root().join("manifests/ippool.yaml")).expect("ippool.yaml");
    fs::write(
        &bad,
        pool.replace("natOutgoing: true", "natOutgoin: true")
            .replace("blockSize: 26", "blockSize: twenty-six"),
    )
    .expect("write");
    let out = crd_validate(std::slice::from_ref(&bad));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a broken pool passed:\n{text}");
    assert!(
        text.contains("natOutgoin") && text.contains("blockSize"),
        "{text}"
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn example_resources_pass_calicoctl_validate() {
    let calicoctl = env!("CARGO_BIN_EXE_calicoctl");
    for file in examples() {
        let out = run(
            calicoctl,
            &["validate", "-f", file.to_str().expect("utf-8 path")],
        );
        assert!(
            out.status.success(),
            "calicoctl validate {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And it refuses a semantically invalid pool (a /40 block in an IPv4 pool).
    let dir = temp_dir("ctl-negative");
    let bad = dir.join("bad.yaml");
    let pool = fs::read_to_string(root().join("manifests/ippool.yaml")).expect("ippool.yaml");
    fs::write(&bad, pool.replace("blockSize: 26", "blockSize: 40")).expect("write");
    let out = run(
        calicoctl,
        &["validate", "-f", bad.to_str().expect("utf-8 path")],
    );
    assert!(!out.status.success(), "calicoctl accepted blockSize 40");
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.blockSize"));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn plain_manifest_is_a_fresh_render_of_the_chart() {
    let dir = temp_dir("drift");
    let fresh = dir.join("calico-rs.yaml");
    let script = root().join("scripts/render-manifests.sh");
    run_ok(
        "sh",
        &[
            script.to_str().expect("utf-8 path"),
            fresh.to_str().expect("utf-8 path"),
        ],
    );
    let fresh = fs::read_to_string(&fresh).expect("fresh render");
    let committed = fs::read_to_string(root().join("manifests/calico-rs.yaml")).expect("manifest");
    let _ = fs::remove_dir_all(dir);
    assert!(
        fresh == committed,
        "manifests/calico-rs.yaml differs from the chart; run scripts/render-manifests.sh"
    );
    assert!(
        !committed.contains("helm.sh/hook"),
        "hooks leaked into the plain manifest"
    );
}

#[test]
fn chart_crds_are_identical_to_repo_crds() {
    let list = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                let e = e.expect("dir entry");
                let name = e.file_name().to_string_lossy().into_owned();
                (name, fs::read(e.path()).expect("read CRD"))
            })
            .collect()
    };
    let repo = list(&root().join("crds"));
    let chart = list(&chart().join("crds"));
    assert!(!repo.is_empty(), "crds/ is empty");
    assert_eq!(
        repo.keys().collect::<Vec<_>>(),
        chart.keys().collect::<Vec<_>>(),
        "file lists differ: copy crds/ to charts/calico-rs/crds/"
    );
    for (name, bytes) in &repo {
        assert!(
            chart[name] == *bytes,
            "charts/calico-rs/crds/{name} differs from crds/{name}"
        );
    }
}

/// The `cni_network_config` conflist from a render (the ConfigMap's block scalar).
fn conflist(rendered: &str) -> serde_json::Value {
    let mut lines = rendered
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("cni_network_config: |-"));
    let header = lines.next().expect("cni_network_config in the ConfigMap");
    let indent = header.len() - header.trim_start().len();
    let block: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .collect();
    serde_json::from_str(&block.join("\n")).expect("cni_network_config is JSON")
}

#[test]
fn installed_conflist_is_accepted_by_our_calico_plugin() {
    // What the kubelet's runtime hands the `calico` plugin: the first plugin object of the
    // conflist with the list's name and cniVersion, after install-cni filled in the node name.
    for (values, mtu, v6) in [
        (None, 1440, false),
        (Some(non_default_values()), 8950, true),
    ] {
        let rendered = render(values.as_deref());
        let list = conflist(&rendered);
        let plugins = list["plugins"].as_array().expect("plugins");
        assert_eq!(plugins[0]["type"], "calico");
        assert_eq!(plugins[1]["type"], "portmap");
        let mut plugin = plugins[0].clone();
        plugin["name"] = list["name"].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        let text = serde_json::to_string(&plugin)
            .expect("JSON")
            .replace("__KUBERNETES_NODE_NAME__", "node-1");
        let conf = calico_cni::netconf::NetConf::parse(text.as_bytes()).unwrap_or_else(|e| {
            panic!("our calico plugin rejects the chart's conflist: {e}\n{text}")
        });
        assert_eq!(conf.mtu, Some(mtu));
        assert_eq!(conf.nodename.as_deref(), Some("node-1"));
        assert_eq!(conf.datastore_type.as_deref(), Some("etcdv3"));
        let ipam = conf.ipam.expect("calico-ipam section");
        assert!(ipam.wants_v4());
        assert_eq!(ipam.wants_v6(), v6);
        if v6 {
            assert_eq!(
                conf.etcd_ca_cert_file.as_deref(),
                Some(Path::new("/etc/cni/net.d/calico-tls/etcd-ca"))
            );
        }
    }
}
