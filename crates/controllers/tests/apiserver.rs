//! Every projectcalico.org/v3 kind against a REAL kube-apiserver (v1.35.4, built from the
//! k8s.io/kubernetes module by scripts/k8s-build.sh) and REAL etcds (one for Kubernetes, one
//! for Calico), with the controllers running under the chart's own service account and RBAC:
//!
//! - `kubectl apply --server-side -f crds/` installs every CRD and each becomes Established
//!   (the API server reads the files with YAML 1.1, as users' kubectl does);
//! - the chart's ValidatingAdmissionPolicies (from manifests/calico-rs.yaml) are installed;
//! - for each kind, a valid object applied with kubectl reaches etcd in Calico's layout with
//!   `projectcalico.org/owner: kubernetes` and reports Ready; an invalid one is refused by the
//!   API server with the field named (CRD schema or CEL), or, where neither can tell, reports
//!   `Invalid` with the field named and nothing of it reaches etcd; deleting the valid object
//!   deletes its etcd copy;
//! - the kinds that are etcd state (IPAM, ClusterInformation) are refused at apply time.
//!
//! Needs the Kubernetes binaries: `scripts/k8s-build.sh` (or K8S_BIN_DIR pointing at them).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_controllers::mirror::EtcdMirror;
use calico_controllers::run::{Settings, run};
use calico_datastore::{Datastore, EtcdClient, EtcdConfig};
use calico_ipam::Ipam;
use calico_lab::etcd::{Etcd, EtcdOptions, free_port};
use calico_lab::process::{ProcessGuard, SpawnOptions, spawn};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where scripts/k8s-build.sh puts the binaries for the version pinned in tests/cluster/go.mod.
fn k8s_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("K8S_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let gomod = std::fs::read_to_string(workspace_root().join("tests/cluster/go.mod"))
        .expect("tests/cluster/go.mod");
    let version = gomod
        .lines()
        .filter_map(|l| l.trim().strip_prefix("k8s.io/kubernetes v"))
        .next()
        .expect("k8s.io/kubernetes in tests/cluster/go.mod");
    workspace_root().join(format!(
        "target/k8s/v{}/bin",
        version.split_whitespace().next().unwrap()
    ))
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn openssl(dir: &Path, args: &[&str]) {
    run_ok(Command::new("openssl").current_dir(dir).args(args));
}

/// A kubeconfig for `server` with the CA file and a bearer token.
fn kubeconfig(server: &str, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    \
         certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  \
         context:\n    cluster: test\n    user: u\ncurrent-context: c\n",
        ca.display()
    )
}

/// etcd + kube-apiserver on loopback with a per-run PKI (CA, serving certificate for
/// 127.0.0.1, service-account signing key), RBAC authorization and an admin token.
struct ApiServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    server: String,
    admin: PathBuf,
    process: ProcessGuard,
    _etcd: Etcd,
}

impl ApiServer {
    fn start() -> ApiServer {
        let bin = k8s_bin_dir();
        for b in ["kube-apiserver", "kubectl"] {
            assert!(
                bin.join(b).is_file(),
                "{} missing: build the Kubernetes binaries with scripts/k8s-build.sh (about 25 \
                 minutes cold) or point K8S_BIN_DIR at them",
                bin.join(b).display()
            );
        }
        let etcd = Etcd::start(EtcdOptions::default()).expect("etcd for Kubernetes");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=calico-rs-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=kube-apiserver",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n\
             basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        );
        openssl(d, &["genrsa", "-out", "sa.key", "2048"]);
        openssl(d, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        let admin_token = format!("admin-{}", std::process::id());
        std::fs::write(
            d.join("tokens.csv"),
            format!("{admin_token},admin,admin,system:masters\n"),
        )
        .unwrap();
        let port = free_port().unwrap();
        let mut cmd = Command::new(bin.join("kube-apiserver"));
        cmd.current_dir(d).args([
            format!("--etcd-servers={}", etcd.endpoint()),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", d.join("certs").display()),
            "--tls-cert-file=server.crt".into(),
            "--tls-private-key-file=server.key".into(),
            "--client-ca-file=ca.crt".into(),
            "--token-auth-file=tokens.csv".into(),
            "--service-account-key-file=sa.pub".into(),
            "--service-account-signing-key-file=sa.key".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--allow-privileged=true".into(),
        ]);
        let process = spawn(
            cmd,
            &SpawnOptions {
                log: Some(d.join("kube-apiserver.log")),
                ..Default::default()
            },
        )
        .expect("kube-apiserver starts");
        let server = format!("https://127.0.0.1:{port}");
        let admin = d.join("admin.kubeconfig");
        std::fs::write(&admin, kubeconfig(&server, &d.join("ca.crt"), &admin_token)).unwrap();
        let mut api = ApiServer {
            dir,
            bin,
            server,
            admin,
            process,
            _etcd: etcd,
        };
        let start = Instant::now();
        loop {
            let out = api.kubectl(&["get", "--raw", "/readyz"], None);
            if out.status.success() {
                break;
            }
            assert!(
                api.process.is_running(),
                "kube-apiserver exited:\n{}",
                api.log()
            );
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "kube-apiserver not ready in 90 s:\n{}",
                api.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        api
    }

    fn log(&self) -> String {
        let text = self.process.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// kubectl as the cluster admin, `stdin` fed to it.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.admin)
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A kube client for a service account, with a token from the TokenRequest API.
    async fn client_as(&self, namespace: &str, account: &str) -> kube::Client {
        let token = self.kubectl_ok(
            &["create", "token", account, "-n", namespace, "--duration=1h"],
            None,
        );
        let path = self.dir.path().join(format!("{account}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig(&self.server, &self.dir.path().join("ca.crt"), token.trim()),
        )
        .unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&path).unwrap(),
            &KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    }
}

/// The documents of manifests/calico-rs.yaml whose kind is in `kinds`, as one YAML stream.
fn manifest_objects(kinds: &[&str]) -> String {
    let text = std::fs::read_to_string(workspace_root().join("manifests/calico-rs.yaml")).unwrap();
    let mut out = String::new();
    for doc in text.split("\n---") {
        let kind = doc
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .map(str::trim);
        if kind.is_some_and(|k| kinds.contains(&k)) {
            out.push_str("---\n");
            out.push_str(doc.trim_start_matches('\n'));
            out.push('\n');
        }
    }
    out
}

/// What an apply of an invalid object must lead to.
enum Invalid {
    /// Refused by the API server; the error names this field.
    Refused(&'static str),
    /// Accepted, then reported `Invalid` by the controllers naming this field; nothing in etcd.
    Reported(&'static str),
}

struct Case {
    kind: &'static str,
    plural: &'static str,
    namespace: Option<&'static str>,
    name: &'static str,
    /// `spec` of the valid object (JSON).
    valid: &'static str,
    /// Name and `spec` of the invalid object.
    bad_name: &'static str,
    invalid: &'static str,
    expect: Invalid,
}

fn document(case: &Case, name: &str, spec: &str) -> String {
    let ns = case
        .namespace
        .map(|n| format!(", \"namespace\": \"{n}\""))
        .unwrap_or_default();
    format!(
        "{{\"apiVersion\": \"projectcalico.org/v3\", \"kind\": \"{}\", \"metadata\": {{\"name\": \"{name}\"{ns}}}, \"spec\": {spec}}}",
        case.kind
    )
}

fn cases() -> Vec<Case> {
    use Invalid::*;
    let c = |kind, plural, namespace, name, valid, bad_name, invalid, expect| Case {
        kind,
        plural,
        namespace,
        name,
        valid,
        bad_name,
        invalid,
        expect,
    };
    vec![
        c(
            "IPPool",
            "ippools",
            None,
            "pool-a",
            r#"{"cidr": "10.70.0.0/16", "blockSize": 26}"#,
            "pool-bad",
            r#"{"cidr": "10.70.0.0/33"}"#,
            Refused("spec.cidr"),
        ),
        c(
            "IPReservation",
            "ipreservations",
            None,
            "res-a",
            r#"{"reservedCIDRs": ["10.70.1.0/24"]}"#,
            "res-bad",
            r#"{"reservedCIDRs": ["ten.seventy"]}"#,
            Refused("spec.reservedCIDRs[0]"),
        ),
        c(
            "BGPConfiguration",
            "bgpconfigurations",
            None,
            "default",
            r#"{"asNumber": 64512, "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]}"#,
            "bgp-bad",
            r#"{"serviceClusterIPs": [{"cidr": "not-a-cidr"}]}"#,
            Refused("spec.serviceClusterIPs[0].cidr"),
        ),
        c(
            "BGPFilter",
            "bgpfilters",
            None,
            "filter-a",
            r#"{"exportV4": [{"action": "Accept", "matchOperator": "In", "cidr": "10.70.0.0/16"}]}"#,
            "filter-bad",
            r#"{"exportV4": [{"action": "Accept", "matchOperator": "In", "cidr": "10.70.0.0"}]}"#,
            Refused("spec.exportV4[0].cidr"),
        ),
        c(
            "BGPPeer",
            "bgppeers",
            None,
            "peer-a",
            r#"{"peerIP": "192.0.2.1", "asNumber": 64513}"#,
            "peer-bad",
            r#"{"peerIP": "192.0.2.1"}"#,
            Refused("spec.asNumber"),
        ),
        c(
            "HostEndpoint",
            "hostendpoints",
            None,
            "hep-a",
            r#"{"node": "node1", "interfaceName": "eth0", "expectedIPs": ["192.0.2.10"]}"#,
            "hep-bad",
            r#"{"node": "node1", "expectedIPs": ["192.0.2.300"]}"#,
            Refused("spec.expectedIPs"),
        ),
        c(
            "NetworkSet",
            "networksets",
            Some("default"),
            "set-a",
            r#"{"nets": ["198.51.100.0/24"]}"#,
            "set-bad",
            r#"{"nets": ["198.51.100.0/40"]}"#,
            Refused("spec.nets"),
        ),
        c(
            "GlobalNetworkSet",
            "globalnetworksets",
            None,
            "gset-a",
            r#"{"nets": ["198.51.100.0/24"]}"#,
            "gset-bad",
            r#"{"nets": ["nope"]}"#,
            Refused("spec.nets"),
        ),
        c(
            "FelixConfiguration",
            "felixconfigurations",
            None,
            "default",
            r#"{"logSeverityScreen": "Info", "bpfConntrackLogLevel": "Off"}"#,
            "node.bad",
            r#"{"nodeSelector": "all()"}"#,
            Refused("spec.nodeSelector"),
        ),
        c(
            "KubeControllersConfiguration",
            "kubecontrollersconfigurations",
            None,
            "default",
            r#"{"controllers": {"node": {"leakGracePeriod": "20m"}}}"#,
            "kcc-bad",
            r#"{"controllers": {"node": {"leakGracePeriod": "a fortnight"}}}"#,
            Reported("spec.controllers.node.leakGracePeriod"),
        ),
        c(
            "IPAMConfiguration",
            "ipamconfigurations",
            None,
            "default",
            r#"{"strictAffinity": false, "maxBlocksPerHost": 4}"#,
            "ipamconfig-bad",
            r#"{"strictAffinity": false, "maxBlocksPerHost": -1}"#,
            Reported("spec.maxBlocksPerHost"),
        ),
        c(
            "Tier",
            "tiers",
            None,
            "tier-a",
            r#"{"order": 100}"#,
            "default",
            r#"{"order": 5}"#,
            Reported("spec.order"),
        ),
        c(
            "GlobalNetworkPolicy",
            "globalnetworkpolicies",
            None,
            "gnp-a",
            r#"{"selector": "app == 'web'", "types": ["Ingress"], "ingress": [{"action": "Allow"}]}"#,
            "gnp-bad",
            r#"{"selector": "app == ", "types": ["Ingress"]}"#,
            Reported("spec.selector"),
        ),
        c(
            "NetworkPolicy",
            "networkpolicies",
            Some("default"),
            "np-a",
            r#"{"selector": "app == 'web'", "types": ["Ingress"], "ingress": [{"action": "Allow"}]}"#,
            "np-bad",
            r#"{"selector": "app == ", "types": ["Ingress"]}"#,
            Reported("spec.selector"),
        ),
        c(
            "StagedGlobalNetworkPolicy",
            "stagedglobalnetworkpolicies",
            None,
            "sgnp-a",
            r#"{"selector": "app == 'web'", "types": ["Ingress"], "ingress": [{"action": "Deny"}]}"#,
            "sgnp-bad",
            r#"{"selector": "app == ", "types": ["Ingress"]}"#,
            Reported("spec.selector"),
        ),
        c(
            "StagedNetworkPolicy",
            "stagednetworkpolicies",
            Some("default"),
            "snp-a",
            r#"{"selector": "app == 'web'", "types": ["Ingress"], "ingress": [{"action": "Deny"}]}"#,
            "snp-bad",
            r#"{"selector": "app == ", "types": ["Ingress"]}"#,
            Reported("spec.selector"),
        ),
        c(
            "StagedKubernetesNetworkPolicy",
            "stagedkubernetesnetworkpolicies",
            Some("default"),
            "sknp-a",
            r#"{"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}"#,
            "sknp-bad",
            r#"{"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Sideways"]}"#,
            Reported("spec.policyTypes[0]"),
        ),
    ]
}

fn etcd_key(case: &Case, name: &str) -> String {
    match case.namespace {
        Some(ns) => format!(
            "/calico/resources/v3/projectcalico.org/{}/{ns}/{name}",
            case.plural
        ),
        None => format!(
            "/calico/resources/v3/projectcalico.org/{}/{name}",
            case.plural
        ),
    }
}

async fn etcd_doc(kv: &EtcdClient, key: &str) -> Option<Value> {
    let got = kv.get(key).await.expect("etcd get")?;
    Some(serde_json::from_slice(&got.value).expect("etcd value is JSON"))
}

/// Polls `check` every 200 ms until it returns Some, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = check().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// `metadata.annotations` and `status` of an object as the API server holds it.
fn get_object(api: &ApiServer, case: &Case, name: &str) -> Option<Value> {
    // Qualified: `networkpolicies` alone is Kubernetes' own NetworkPolicy.
    let resource = format!("{}.projectcalico.org", case.plural);
    let mut args = vec!["get", &resource, name, "-o", "json"];
    if let Some(ns) = case.namespace {
        args.extend(["-n", ns]);
    }
    let out = api.kubectl(&args, None);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The Ready status the controllers reported: (status, reason, message), from the annotations
/// or, for IPPool and Tier, the `Ready` condition.
fn ready(obj: &Value) -> Option<(String, String, String)> {
    let a = &obj["metadata"]["annotations"];
    if let Some(s) = a["status.projectcalico.org/ready"].as_str() {
        return Some((
            s.to_string(),
            a["status.projectcalico.org/reason"].as_str()?.to_string(),
            a["status.projectcalico.org/message"].as_str()?.to_string(),
        ));
    }
    let c = obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
        c["message"].as_str()?.to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_applied_with_kubectl_takes_effect_or_is_refused_with_its_field() {
    let started = Instant::now();
    let api = tokio::task::block_in_place(ApiServer::start);
    let calico_etcd =
        tokio::task::block_in_place(|| Etcd::start(EtcdOptions::default())).expect("Calico's etcd");

    // The CRDs, as a user installs them.
    let crds = workspace_root().join("crds");
    tokio::task::block_in_place(|| {
        api.kubectl_ok(
            &["apply", "--server-side", "-f", crds.to_str().unwrap()],
            None,
        );
        api.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                "--all",
            ],
            None,
        );
    });
    let established = api.kubectl_ok(&["get", "crd", "-o", "name"], None);
    assert_eq!(established.lines().count(), 22, "{established}");
    // What the API server stored is what the Rust types say (YAML 1.1: "Off" stayed a string).
    let felix = api.kubectl_ok(
        &[
            "get",
            "crd",
            "felixconfigurations.projectcalico.org",
            "-o",
            "json",
        ],
        None,
    );
    let felix: Value = serde_json::from_str(&felix).unwrap();
    assert_eq!(
        felix.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/bpfConntrackLogLevel/enum"),
        Some(&serde_json::json!(["Off", "Debug"]))
    );

    // The chart's RBAC and admission policies.
    let objects = manifest_objects(&[
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]);
    assert!(
        objects.contains("kind: ValidatingAdmissionPolicy\n"),
        "{objects}"
    );
    tokio::task::block_in_place(|| api.kubectl_ok(&["apply", "-f", "-"], Some(&objects)));

    // The controllers, as the chart's service account.
    let client = api
        .client_as("kube-system", "calico-kube-controllers")
        .await;
    let kv = EtcdClient::connect(&EtcdConfig::new(calico_etcd.endpoints()))
        .await
        .expect("connect Calico's etcd");
    let settings = Settings {
        namespace: "kube-system".into(),
        lease_name: "calico-kube-controllers".into(),
        identity: "apiserver-test".into(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        lease_duration: Duration::from_secs(15),
        leak_grace: None,
    };
    let controllers = tokio::spawn(run(
        client,
        EtcdMirror::new(Datastore::from_etcd(kv.clone())),
        Arc::new(Ipam::new(kv.clone())),
        settings,
    ));

    // A CEL policy takes a moment to be loaded: wait until the first one refuses.
    let first = &cases()[4];
    assert_eq!(first.kind, "BGPPeer");
    let loaded = eventually(Duration::from_secs(30), || async {
        let out = tokio::task::block_in_place(|| {
            api.kubectl(
                &["apply", "--dry-run=server", "-f", "-"],
                Some(&document(first, "probe", first.invalid)),
            )
        });
        (!out.status.success()).then_some(())
    })
    .await;
    assert!(loaded.is_some(), "the admission policies never took effect");

    let mut failures = Vec::new();
    for case in cases() {
        let kind = case.kind;
        // Valid: mirrored with the owner mark, Ready.
        let valid = document(&case, case.name, case.valid);
        tokio::task::block_in_place(|| api.kubectl_ok(&["apply", "-f", "-"], Some(&valid)));
        let key = etcd_key(&case, case.name);
        let stored = eventually(Duration::from_secs(30), || etcd_doc(&kv, &key)).await;
        match stored {
            None => failures.push(format!("{kind}: valid object never reached {key}")),
            Some(doc) => {
                if doc["metadata"]["annotations"]["projectcalico.org/owner"] != "kubernetes" {
                    failures.push(format!("{kind}: etcd copy without the owner mark: {doc}"));
                }
                if doc["kind"] != kind {
                    failures.push(format!("{kind}: etcd holds kind {}", doc["kind"]));
                }
            }
        }
        let status = eventually(Duration::from_secs(30), || async {
            let obj = tokio::task::block_in_place(|| get_object(&api, &case, case.name))?;
            ready(&obj).filter(|(s, _, _)| s == "True")
        })
        .await;
        if status.is_none() {
            failures.push(format!("{kind}: valid object never reported Ready=True"));
        }

        // Invalid: refused with the field named, or reported Invalid; never in etcd.
        let invalid = document(&case, case.bad_name, case.invalid);
        let out =
            tokio::task::block_in_place(|| api.kubectl(&["apply", "-f", "-"], Some(&invalid)));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        match case.expect {
            Invalid::Refused(field) => {
                if out.status.success() {
                    failures.push(format!("{kind}: invalid object was accepted"));
                } else if !stderr.contains(field) {
                    failures.push(format!("{kind}: refused without naming {field}: {stderr}"));
                }
            }
            Invalid::Reported(field) => {
                if !out.status.success() {
                    failures.push(format!(
                        "{kind}: expected acceptance then Invalid, got: {stderr}"
                    ));
                } else {
                    let reported = eventually(Duration::from_secs(30), || async {
                        let obj =
                            tokio::task::block_in_place(|| get_object(&api, &case, case.bad_name))?;
                        ready(&obj).filter(|(_, r, _)| r == "Invalid")
                    })
                    .await;
                    match reported {
                        None => {
                            failures.push(format!("{kind}: invalid object never reported Invalid"))
                        }
                        Some((_, _, message)) if !message.contains(field) => failures.push(
                            format!("{kind}: Invalid message does not name {field}: {message}"),
                        ),
                        Some(_) => {}
                    }
                }
            }
        }
        let bad_key = etcd_key(&case, case.bad_name);
        if let Some(doc) = etcd_doc(&kv, &bad_key).await {
            failures.push(format!("{kind}: invalid object reached etcd: {doc}"));
        }

        // Delete: the etcd copy goes, then the object (finalizer).
        let resource = format!("{}.projectcalico.org", case.plural);
        let mut del = vec![
            "delete",
            &resource,
            case.name,
            "--wait=true",
            "--timeout=30s",
        ];
        if let Some(ns) = case.namespace {
            del.extend(["-n", ns]);
        }
        tokio::task::block_in_place(|| api.kubectl_ok(&del, None));
        if etcd_doc(&kv, &key).await.is_some() {
            failures.push(format!("{kind}: etcd copy survived the delete"));
        }
        eprintln!("{kind}: checked ({:?} since start)", started.elapsed());
    }

    // etcd state kinds are refused at apply time, naming the kind.
    for (kind, spec) in [
        (
            "IPAMBlock",
            r#"{"cidr": "10.70.0.0/26", "allocations": [], "unallocated": [], "attributes": [], "strictAffinity": false}"#,
        ),
        ("IPAMHandle", r#"{"handleID": "h", "block": {}}"#),
        (
            "BlockAffinity",
            r#"{"cidr": "10.70.0.0/26", "node": "n", "state": "confirmed", "deleted": false}"#,
        ),
        ("ClusterInformation", r#"{"clusterType": "k8s"}"#),
    ] {
        let doc = format!(
            "{{\"apiVersion\": \"projectcalico.org/v3\", \"kind\": \"{kind}\", \"metadata\": {{\"name\": \"x\"}}, \"spec\": {spec}}}"
        );
        let out = tokio::task::block_in_place(|| api.kubectl(&["apply", "-f", "-"], Some(&doc)));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(&format!("kind: {kind}")) {
            failures.push(format!("{kind}: not refused with its kind named: {stderr}"));
        }
    }

    // Fields calico-rs does not implement are refused at apply time, each by name
    // (docs/resources.md), and nothing reaches etcd.
    for (kind, plural, spec, field) in [
        (
            "BGPPeer",
            "bgppeers",
            r#"{"peerIP": "192.0.2.1", "asNumber": 64513, "sourceAddress": "None"}"#,
            "spec.sourceAddress",
        ),
        (
            "BGPPeer",
            "bgppeers",
            r#"{"peerIP": "192.0.2.1", "asNumber": 64513, "reachableBy": "192.0.2.254"}"#,
            "spec.reachableBy",
        ),
        (
            "BGPConfiguration",
            "bgpconfigurations",
            r#"{"bindMode": "NodeIP"}"#,
            "spec.bindMode",
        ),
        (
            "BGPConfiguration",
            "bgpconfigurations",
            r#"{"ipv4NormalRoutePriority": 1024}"#,
            "spec.ipv4NormalRoutePriority",
        ),
        (
            "BGPFilter",
            "bgpfilters",
            r#"{"exportV4": [{"action": "Reject", "interface": "cali*"}]}"#,
            "interface: not implemented by calico-rs",
        ),
        (
            "IPPool",
            "ippools",
            r#"{"cidr": "10.71.0.0/16", "allowedUses": ["Workload"], "namespaceSelector": "team == 'a'"}"#,
            "spec.namespaceSelector",
        ),
    ] {
        let name = if kind == "BGPConfiguration" {
            "default"
        } else {
            "unimplemented"
        };
        let doc = format!(
            "{{\"apiVersion\": \"projectcalico.org/v3\", \"kind\": \"{kind}\", \"metadata\": {{\"name\": \"{name}\"}}, \"spec\": {spec}}}"
        );
        let out = tokio::task::block_in_place(|| api.kubectl(&["apply", "-f", "-"], Some(&doc)));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(field) {
            failures.push(format!(
                "{kind} {spec}: not refused naming {field}: {stderr}"
            ));
        }
        let key = format!("/calico/resources/v3/projectcalico.org/{plural}/{name}");
        if let Some(doc) = etcd_doc(&kv, &key).await {
            failures.push(format!("{kind}: refused object reached etcd: {doc}"));
        }
    }

    controllers.abort();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\nkube-apiserver log tail:\n{}",
        failures.len(),
        failures.join("\n"),
        api.log()
    );
    eprintln!("whole test: {:?}", started.elapsed());
}

/// A Service with `externalTrafficPolicy: Local` and its EndpointSlice, created with kubectl,
/// reach Calico's etcd as the record calico-node advertises from (`AdvertisedService` at
/// `/calico/calico-rs/v1/services/<ns>/<name>`): its cluster, external and load-balancer
/// addresses and the nodes of its ready endpoints, read under the chart's RBAC; the record
/// follows the endpoints and goes when the Service turns `Cluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_service_and_its_endpoints_are_published_for_the_nodes() {
    use calico_api::service_advertisement::{AdvertisedService, service_key};
    let api = tokio::task::block_in_place(ApiServer::start);
    let calico_etcd =
        tokio::task::block_in_place(|| Etcd::start(EtcdOptions::default())).expect("Calico's etcd");
    let crds = workspace_root().join("crds");
    let objects = manifest_objects(&[
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ]);
    tokio::task::block_in_place(|| {
        api.kubectl_ok(
            &["apply", "--server-side", "-f", crds.to_str().unwrap()],
            None,
        );
        api.kubectl_ok(&["apply", "-f", "-"], Some(&objects));
        api.kubectl_ok(&["create", "namespace", "shop"], None);
    });
    let client = api
        .client_as("kube-system", "calico-kube-controllers")
        .await;
    let kv = EtcdClient::connect(&EtcdConfig::new(calico_etcd.endpoints()))
        .await
        .expect("connect Calico's etcd");
    let settings = Settings {
        namespace: "kube-system".into(),
        lease_name: "calico-kube-controllers".into(),
        identity: "apiserver-test".into(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        lease_duration: Duration::from_secs(15),
        leak_grace: None,
    };
    let controllers = tokio::spawn(run(
        client,
        EtcdMirror::new(Datastore::from_etcd(kv.clone())),
        Arc::new(Ipam::new(kv.clone())),
        settings,
    ));

    let service = |policy: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n  \
             type: LoadBalancer\n  externalTrafficPolicy: {policy}\n  externalIPs: [203.0.113.5]\n  \
             selector: {{app: web}}\n  ports: [{{port: 80, protocol: TCP}}]\n"
        )
    };
    let slice = |second_ready: bool| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  \
             namespace: shop\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\n\
             ports: [{{port: 80, protocol: TCP}}]\nendpoints:\n\
             - addresses: [10.65.0.2]\n  nodeName: node1\n  conditions: {{ready: true}}\n\
             - addresses: [10.65.1.2]\n  nodeName: node2\n  conditions: {{ready: {second_ready}}}\n"
        )
    };
    tokio::task::block_in_place(|| {
        api.kubectl_ok(&["apply", "-f", "-"], Some(&service("Local")));
        api.kubectl_ok(&["apply", "-f", "-"], Some(&slice(false)));
        // No cloud controller here: give the load balancer its address as one would.
        api.kubectl_ok(
            &[
                "patch",
                "service",
                "web",
                "-n",
                "shop",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"loadBalancer":{"ingress":[{"ip":"198.51.100.7"}]}}}"#,
            ],
            None,
        );
    });
    let cluster_ip: std::net::IpAddr = tokio::task::block_in_place(|| {
        api.kubectl_ok(
            &[
                "get",
                "service",
                "web",
                "-n",
                "shop",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
            None,
        )
    })
    .trim()
    .parse()
    .expect("cluster IP");
    let key = service_key("shop", "web");
    let record = |nodes: &[&str]| AdvertisedService {
        cluster_ips: [cluster_ip].into(),
        external_ips: ["203.0.113.5".parse().unwrap()].into(),
        load_balancer_ips: ["198.51.100.7".parse().unwrap()].into(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
    };
    let published = |want: Option<AdvertisedService>| {
        let (kv, key) = (kv.clone(), key.clone());
        async move {
            eventually(Duration::from_secs(30), || async {
                let got = kv
                    .get(&key)
                    .await
                    .expect("etcd get")
                    .map(|v| serde_json::from_slice::<AdvertisedService>(&v.value).unwrap());
                (got == want).then_some(())
            })
            .await
            .is_some()
        }
    };
    let only_node1 = record(&["node1"]);
    assert!(
        published(Some(only_node1.clone())).await,
        "never published {only_node1:?}: {:?}",
        kv.get(&key).await
    );
    // node2's endpoint turns ready: node2 joins.
    tokio::task::block_in_place(|| api.kubectl_ok(&["apply", "-f", "-"], Some(&slice(true))));
    assert!(
        published(Some(record(&["node1", "node2"]))).await,
        "node2 never added: {:?}",
        kv.get(&key).await
    );
    // The Service turns Cluster: every node advertises the ranges, the record goes.
    tokio::task::block_in_place(|| {
        api.kubectl_ok(&["apply", "-f", "-"], Some(&service("Cluster")))
    });
    assert!(
        published(None).await,
        "record survived: {:?}",
        kv.get(&key).await
    );
    controllers.abort();
}
