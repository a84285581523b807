//! The pod look-up ADD makes when a Kubernetes API is configured, with kube's own client over a
//! scripted API server (`tower_test::mock`, kube's documented test pattern, as the controllers'
//! tests do). What is checked is the requests our code sends (method, path) and how it reads
//! the answers; there is no API server on this machine and we do not imitate one beyond that.
//! The same `PodInfo` then drives a real ADD in tests/annotations.rs.

use std::collections::BTreeMap;

use calico_cni::k8s::{self, K8sError};
use calico_cni::netconf::NetConf;
use calico_cni::pod::{self, PodInfo};
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

/// Answers each request by its path from `routes` (404 Status otherwise); returns the
/// `(method, path)` of every request seen once the client is dropped.
fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    routes: BTreeMap<String, Value>,
) -> tokio::task::JoinHandle<Vec<(String, String)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_owned();
            seen.push((req.method().to_string(), path.clone()));
            let (status, body) = match routes.get(&path) {
                Some(v) => (200, v.clone()),
                None => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404,
                           "message": format!("{path} not found")}),
                ),
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
        seen
    })
}

fn namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": "prod", "annotations": {
               "cni.projectcalico.org/ipv4pools": "[\"ns-pool\"]",
               "cni.projectcalico.org/ipv6pools": "[\"fd00:6::/64\"]"}}})
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web-0", "namespace": "prod", "generateName": "web-",
                        "labels": {"app": "web", "tier": "front"},
                        "annotations": {
                            "cni.projectcalico.org/ipv4pools": "[\"10.60.0.0/24\"]",
                            "cni.projectcalico.org/floatingIPs": "[\"203.0.113.9\"]"}},
           "spec": {"serviceAccountName": "builder", "nodeName": "node1",
                    "containers": [{"name": "c", "image": "x",
                                    "ports": [{"name": "http", "containerPort": 8080}]}]}})
}

async fn lookup_against(
    routes: BTreeMap<String, Value>,
) -> (Result<PodInfo, K8sError>, Vec<(String, String)>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = serve(handle, routes);
    let client = kube::Client::new(service, "default");
    let got = k8s::lookup(client, "prod", "web-0").await;
    // `lookup` consumed the client: the server sees the end of requests.
    let seen = server.await.unwrap();
    (got, seen)
}

#[tokio::test]
async fn reads_pod_and_namespace_into_pod_info() {
    let routes = BTreeMap::from([
        ("/api/v1/namespaces/prod".to_owned(), namespace()),
        ("/api/v1/namespaces/prod/pods/web-0".to_owned(), pod()),
    ]);
    let (got, mut seen) = lookup_against(routes).await;
    let info = got.expect("lookup");
    seen.sort();
    assert_eq!(
        seen,
        [
            ("GET".to_owned(), "/api/v1/namespaces/prod".to_owned()),
            (
                "GET".to_owned(),
                "/api/v1/namespaces/prod/pods/web-0".to_owned()
            )
        ]
    );
    assert_eq!(info.labels["app"], "web");
    assert_eq!(info.service_account.as_deref(), Some("builder"));
    assert_eq!(info.ports.len(), 1);
    assert_eq!(info.ports[0].name, "http");
    assert_eq!(info.generate_name.as_deref(), Some("web-"));

    // What ADD does with it: Calico's labels and profiles, the pod's IPv4 pools over the
    // namespace's, the namespace's IPv6 pools, the floating IP (flag on).
    let labels = info.endpoint_labels("prod", "k8s");
    assert_eq!(labels["tier"], "front");
    assert_eq!(labels["projectcalico.org/namespace"], "prod");
    assert_eq!(labels["projectcalico.org/serviceaccount"], "builder");
    assert_eq!(info.profiles("prod"), ["kns.prod", "ksa.prod.builder"]);
    let conf = NetConf::parse(
        br#"{"cniVersion":"1.1.0","type":"calico","ipam":{"type":"calico-ipam"},
             "feature_control":{"floating_ips":true}}"#,
    )
    .unwrap();
    let req = pod::requests(&info, &conf).unwrap();
    assert_eq!(req.v4_pools, Some(vec!["10.60.0.0/24".to_owned()]));
    assert_eq!(req.v6_pools, Some(vec!["fd00:6::/64".to_owned()]));
    assert_eq!(
        req.floating_ips,
        ["203.0.113.9".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[tokio::test]
async fn a_missing_pod_is_an_error_naming_it() {
    let routes = BTreeMap::from([("/api/v1/namespaces/prod".to_owned(), namespace())]);
    let (got, _) = lookup_against(routes).await;
    let e = got.expect_err("no such pod");
    assert!(matches!(e, K8sError::Get { kind: "Pod", .. }), "{e:?}");
    assert!(e.to_string().contains("prod/web-0"), "{e}");
}

#[tokio::test]
async fn kubeconfig_is_read_and_errors_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calico-kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://127.0.0.1:6443\n    insecure-skip-tls-verify: true\nusers:\n- name: calico-cni\n  user:\n    token: abc\ncontexts:\n- name: calico\n  context:\n    cluster: local\n    user: calico-cni\ncurrent-context: calico\n",
    )
    .unwrap();
    let conf = |kubeconfig: &std::path::Path| {
        NetConf::parse(
            json!({"cniVersion": "1.1.0", "type": "calico", "policy": {"type": "k8s"},
                   "kubernetes": {"kubeconfig": kubeconfig}})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    };
    assert!(k8s::api_configured(&conf(&path)));
    k8s::client(&conf(&path))
        .await
        .expect("client from kubeconfig");
    let missing = dir.path().join("nope");
    let Err(e) = k8s::client(&conf(&missing)).await else {
        panic!("a missing kubeconfig must be an error");
    };
    assert!(matches!(e, K8sError::Kubeconfig { .. }), "{e:?}");
    assert!(e.to_string().contains("nope"), "{e}");
}
