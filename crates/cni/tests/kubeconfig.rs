//! `calico kubeconfig`: the file it writes is read by kube's client (as the plugin reads
//! `kubernetes.kubeconfig`) with the server, CA and token it was given; a rotated token is
//! written through a rename, an unchanged one is not rewritten, and an unreadable token keeps
//! the last good file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use calico_cni::kubeconfig::{Settings, refresh, watch};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A self-signed CA certificate made by openssl (a real certificate, so rustls accepts it).
fn ca_pem(dir: &Path) -> Vec<u8> {
    let (key, cert) = (dir.join("ca.key"), dir.join("ca.crt"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=test-ca", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&cert).unwrap()
}

fn settings(dir: &Path) -> Settings {
    Settings {
        server: "https://10.96.0.1:443".into(),
        token_file: dir.join("token"),
        ca_file: dir.join("ca.crt"),
        output: dir.join("net.d/calico-kubeconfig"),
    }
}

/// What the plugin's client gets from the file: the server, a bearer token (kube keeps it
/// secret, so the test reads its value from the text), and a client that builds with the CA
/// (rustls parses the certificate).
fn server_as_plugin_reads_it(path: &Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let file = Kubeconfig::read_from(path).expect("kube reads the kubeconfig");
    let config = rt
        .block_on(kube::Config::from_custom_kubeconfig(
            file,
            &KubeConfigOptions::default(),
        ))
        .expect("kube builds a config from it");
    assert_eq!(
        config.root_cert.as_ref().map(Vec::len),
        Some(1),
        "one CA certificate"
    );
    assert!(config.auth_info.token.is_some(), "a bearer token");
    let _guard = rt.enter();
    kube::Client::try_from(config.clone()).expect("a client builds with the CA");
    config.cluster_url.to_string()
}

#[test]
fn writes_a_kubeconfig_the_plugin_reads_and_rewrites_it_when_the_token_rotates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca_pem(dir.path())).unwrap();
    std::fs::write(dir.path().join("token"), "token-one\n").unwrap();
    let s = settings(dir.path());

    assert!(refresh(&s).unwrap(), "first write");
    let mode = std::fs::metadata(&s.output).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the kubeconfig holds a credential");
    assert_eq!(
        server_as_plugin_reads_it(&s.output),
        "https://10.96.0.1:443/"
    );
    let text = std::fs::read_to_string(&s.output).unwrap();
    assert!(text.contains("token: \"token-one\"\n"), "{text}");

    assert!(!refresh(&s).unwrap(), "unchanged token: no rewrite");

    std::fs::write(dir.path().join("token"), "token-two").unwrap();
    assert!(refresh(&s).unwrap(), "rotated token: rewritten");
    let text = std::fs::read_to_string(&s.output).unwrap();
    assert!(
        text.contains("token: \"token-two\"\n") && !text.contains("token-one"),
        "{text}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("net.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["calico-kubeconfig"], "no temporary file left");

    // A token that cannot be read is an error naming the file; the last good file stays.
    std::fs::write(dir.path().join("token"), "").unwrap();
    let e = refresh(&s).unwrap_err().to_string();
    assert!(e.contains("token") && e.contains("empty"), "{e}");
    assert!(
        std::fs::read_to_string(&s.output)
            .unwrap()
            .contains("token-two")
    );
}

#[test]
fn the_watch_picks_up_a_rotated_token_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca_pem(dir.path())).unwrap();
    std::fs::write(dir.path().join("token"), "first").unwrap();
    let s = settings(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || watch(&s, Duration::from_millis(50), &stop))
    };
    let wait_for = |needle: &str| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if std::fs::read_to_string(&s.output).is_ok_and(|t| t.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    assert!(wait_for("\"first\""), "initial kubeconfig");
    // The kubelet replaces a projected token by renaming a new file into place.
    std::fs::write(dir.path().join("token.new"), "second").unwrap();
    std::fs::rename(dir.path().join("token.new"), dir.path().join("token")).unwrap();
    let rotated = wait_for("\"second\"");
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap().unwrap();
    assert!(
        rotated,
        "the rotated token reached the kubeconfig within 10 s"
    );
}
