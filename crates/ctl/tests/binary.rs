//! The real `calicoctl` binary (built by `cargo build -p calico-rs --bin calicoctl`), run as a
//! process against a real etcd: arguments, stdin, exit codes and the environment as a user
//! sees them. Skipped with a note when the binary has not been built.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{Etcd, write};

fn binary() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("debug/calicoctl");
    if bin.is_file() {
        Some(bin)
    } else {
        eprintln!(
            "skipping: {} not built (cargo build -p calico-rs --bin calicoctl)",
            bin.display()
        );
        None
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(bin: &PathBuf, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("CALICO_ETCD_ENDPOINTS")
        .env_remove("DATASTORE_TYPE")
        .env_remove("CALICO_DATASTORE_TYPE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn calicoctl");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for calicoctl");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const POOL: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: bin-pool
spec:
  cidr: 10.44.0.0/16
  natOutgoing: true
";

#[tokio::test]
async fn binary_applies_from_stdin_with_config_file_and_prints_tables() {
    let Some(bin) = binary() else { return };
    let etcd = Etcd::start();
    let cfg = etcd.config_file().display().to_string();
    let out = run(&bin, &["apply", "-f", "-", "-c", &cfg], &[], POOL);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "Successfully applied 1 'IPPool' resource(s)\n");
    assert_eq!(etcd.dump().await.len(), 1);
    let out = run(&bin, &["get", "ippool", "-o", "wide", "-c", &cfg], &[], "");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "NAME       CIDR           NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR   \n\
         bin-pool   10.44.0.0/16   true   Never      Never       false      false              all()      \n\n"
    );
}

#[tokio::test]
async fn binary_reads_the_environment_when_given_no_config_file() {
    let Some(bin) = binary() else { return };
    let etcd = Etcd::start();
    let f = write(etcd.dir.path(), "pool.yaml", POOL);
    // A named config that does not exist is an error (exit 1, message on stderr)...
    let out = run(
        &bin,
        &["create", "-f", &f, "-c", "/nonexistent/calicoctl.cfg"],
        &[],
        "",
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("/nonexistent/calicoctl.cfg"),
        "{}",
        out.stderr
    );
    assert!(etcd.dump().await.is_empty());
    // ...while the environment is used when the default file is absent.
    if std::path::Path::new(calico_datastore::DEFAULT_CONFIG_PATH).exists() {
        eprintln!("skipping the environment case: this machine has a default calicoctl.cfg");
        return;
    }
    let env = [
        ("DATASTORE_TYPE", "etcdv3"),
        ("ETCD_ENDPOINTS", etcd.endpoint.as_str()),
    ];
    let out = run(&bin, &["create", "-f", &f], &env, "");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(etcd.dump().await.len(), 1);
}

#[tokio::test]
async fn binary_exits_1_on_invalid_input_and_0_on_help() {
    let Some(bin) = binary() else { return };
    let etcd = Etcd::start();
    let cfg = etcd.config_file().display().to_string();
    let bad = POOL.replace("10.44.0.0/16", "10.44.0.0/33");
    let out = run(&bin, &["apply", "-f", "-", "-c", &cfg], &[], &bad);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("<stdin>: document 1 (IPPool \"bin-pool\"): spec.cidr: "),
        "{}",
        out.stderr
    );
    assert!(etcd.dump().await.is_empty());
    let out = run(&bin, &["--help"], &[], "");
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("apply"), "{}", out.stdout);
    let out = run(&bin, &["frobnicate"], &[], "");
    assert_eq!(out.code, Some(1));
}

const DB_POLICY: &str = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: db-only
spec:
  selector: role == 'db'
  ingress:
  - action: Allow
";

fn host_endpoint(metadata_extra: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: h1
{metadata_extra}spec:
  node: node1
  interfaceName: eth0
  expectedIPs:
  - 192.168.33.11
"
    )
}

/// The stored HostEndpoint `h1` (etcd's value, parsed) and whether the stored policy
/// `db-only` selects it, evaluated with the project's selector engine on the stored labels.
async fn stored_h1(etcd: &Etcd) -> (serde_json::Value, bool) {
    let dump = etcd.dump().await;
    let value = |suffix: &str| -> serde_json::Value {
        let (_, v) = dump
            .iter()
            .find(|(k, _)| k.ends_with(suffix))
            .unwrap_or_else(|| panic!("no key ending in {suffix} in {dump:?}"));
        serde_json::from_str(v).expect("stored JSON")
    };
    let hep = value("/hostendpoints/h1");
    let policy = value("/globalnetworkpolicies/db-only");
    let selector = calico_selector::Selector::parse(policy["spec"]["selector"].as_str().unwrap())
        .expect("stored selector parses");
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_value(hep["metadata"]["labels"].clone()).unwrap_or_default();
    (hep.clone(), selector.matches(&labels))
}

/// Calico's rule for `apply` and `replace`: the stored object equals the document, labels and
/// annotations included. A label the new document no longer has must go, or every policy that
/// selects it keeps applying to the endpoint; uid and creationTimestamp stay the datastore's.
#[tokio::test]
async fn apply_and_replace_remove_labels_the_document_no_longer_has() {
    let bin = binary().expect("build calicoctl first: cargo build -p calico-rs --bin calicoctl");
    let etcd = Etcd::start();
    let cfg = etcd.config_file().display().to_string();
    let ctl = |verb: &str, doc: &str| {
        let out = run(&bin, &[verb, "-f", "-", "-c", &cfg], &[], doc);
        assert_eq!(out.code, Some(0), "calicoctl {verb}: {}", out.stderr);
    };
    ctl("apply", DB_POLICY);
    ctl(
        "apply",
        &host_endpoint(
            "  labels:\n    role: db\n    zone: a\n  annotations:\n    owner: team-db\n",
        ),
    );
    let (first, selected) = stored_h1(&etcd).await;
    assert_eq!(
        first["metadata"]["labels"],
        serde_json::json!({"role": "db", "zone": "a"})
    );
    assert!(selected, "role == 'db' selects h1 while it has the label");

    // apply with only `zone: a`: `role` and the annotation are gone, the policy no longer
    // applies, the identity is kept.
    ctl("apply", &host_endpoint("  labels:\n    zone: a\n"));
    let (applied, selected) = stored_h1(&etcd).await;
    assert_eq!(
        applied["metadata"]["labels"],
        serde_json::json!({"zone": "a"})
    );
    assert!(
        applied["metadata"].get("annotations").is_none(),
        "{applied}"
    );
    assert!(
        !selected,
        "role == 'db' must not select h1 any more: {applied}"
    );
    for field in ["uid", "creationTimestamp"] {
        assert!(first["metadata"][field].is_string(), "{first}");
        assert_eq!(applied["metadata"][field], first["metadata"][field]);
    }

    // replace with a document without labels: none are left.
    ctl("apply", &host_endpoint("  labels:\n    role: db\n"));
    assert!(stored_h1(&etcd).await.1);
    ctl("replace", &host_endpoint(""));
    let (replaced, selected) = stored_h1(&etcd).await;
    assert!(replaced["metadata"].get("labels").is_none(), "{replaced}");
    assert!(!selected);
    assert_eq!(replaced["metadata"]["uid"], first["metadata"]["uid"]);
}

/// A field calico-rs cannot honour is refused by name before anything is written, even when
/// the other documents of the same file are valid; the existing state is left as it was.
#[tokio::test]
async fn binary_refuses_an_unimplemented_field_and_writes_nothing() {
    let Some(bin) = binary() else { return };
    let etcd = Etcd::start();
    let cfg = etcd.config_file().display().to_string();
    let out = run(&bin, &["apply", "-f", "-", "-c", &cfg], &[], POOL);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let before = etcd.dump().await;
    for (doc, field) in [
        (
            "kind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 64513\n  \
             sourceAddress: None\n",
            "spec.sourceAddress",
        ),
        (
            "kind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  bindMode: NodeIP\n",
            "spec.bindMode",
        ),
        (
            "kind: BGPFilter\nmetadata:\n  name: f\nspec:\n  exportV4:\n  - action: Reject\n    \
             interface: 'cali*'\n",
            "spec.exportV4[0].interface",
        ),
        (
            "kind: IPPool\nmetadata:\n  name: bin-pool\nspec:\n  cidr: 10.44.0.0/16\n  \
             allowedUses: [Workload]\n  namespaceSelector: team == 'a'\n",
            "spec.namespaceSelector",
        ),
    ] {
        // A valid document first: the refusal of the second must stop both.
        let file = format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: other\nspec:\n  \
             cidr: 10.45.0.0/16\n---\napiVersion: projectcalico.org/v3\n{doc}"
        );
        for verb in ["apply", "create"] {
            let out = run(&bin, &[verb, "-f", "-", "-c", &cfg], &[], &file);
            assert_eq!(out.code, Some(1), "{verb} {field}: {}", out.stdout);
            assert!(
                out.stderr
                    .contains(&format!("{field}: not implemented by calico-rs")),
                "{verb} {field}: {}",
                out.stderr
            );
            assert_eq!(etcd.dump().await, before, "{verb} {field} wrote something");
        }
    }
}
