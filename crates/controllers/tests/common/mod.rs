//! Shared by the integration tests: a REAL etcd (calico_lab) with the IPAM client over it,
//! Calico resources to start from, and a scripted Kubernetes API server for kube's own client
//! (`tower_test::mock`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_api::{IPPool, Node, NodeSpec, OrchRef};
use calico_datastore::{Datastore, EtcdClient, EtcdConfig};
use calico_ipam::{AutoAssignArgs, Ipam};
use calico_lab::etcd::{Etcd, EtcdOptions};
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

pub struct Lab {
    pub etcd: Etcd,
    pub ds: Datastore,
    pub ipam: Ipam,
}

pub async fn lab() -> Lab {
    let etcd = tokio::task::spawn_blocking(|| Etcd::start(EtcdOptions::default()))
        .await
        .expect("join")
        .expect("start etcd");
    let kv = EtcdClient::connect(&EtcdConfig::new(etcd.endpoints()))
        .await
        .expect("connect etcd");
    Lab {
        ds: Datastore::from_etcd(kv.clone()),
        ipam: Ipam::new(kv),
        etcd,
    }
}

impl Lab {
    pub async fn pool(&self, name: &str, cidr: &str) {
        let pool: IPPool = serde_json::from_value(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": name},
            "spec": {"cidr": cidr, "blockSize": 28, "nodeSelector": "all()"}
        }))
        .expect("pool");
        self.ds.create(&pool).await.expect("create pool");
    }

    /// A Calico Node; `kubernetes` gives it the `k8s` orchRef of a Kubernetes node.
    pub async fn node(&self, name: &str, kubernetes: bool) {
        let mut n = Node::new(name, NodeSpec::default());
        if kubernetes {
            n.spec.orch_refs.push(OrchRef {
                node_name: Some(name.into()),
                orchestrator: "k8s".into(),
            });
        }
        self.ds.create(&n).await.expect("create node");
    }

    /// One address for a pod on `node`, as the CNI plugin allocates it.
    pub async fn pod_ip(&self, node: &str, ns: &str, pod: &str, container: &str) -> IpAddr {
        let attrs = BTreeMap::from([
            ("node".to_string(), node.to_string()),
            ("namespace".to_string(), ns.to_string()),
            ("pod".to_string(), pod.to_string()),
        ]);
        self.assign(node, &format!("k8s-pod-network.{container}"), attrs)
            .await
    }

    pub async fn assign(
        &self,
        node: &str,
        handle: &str,
        attrs: BTreeMap<String, String>,
    ) -> IpAddr {
        let got = self
            .ipam
            .auto_assign(AutoAssignArgs {
                num_v4: 1,
                handle_id: Some(handle.to_string()),
                hostname: node.to_string(),
                attrs,
                ..Default::default()
            })
            .await
            .expect("auto_assign");
        got.v4[0]
    }

    pub async fn allocated(&self, ip: IpAddr) -> bool {
        self.ipam
            .get_assignment_attributes(ip)
            .await
            .expect("read block")
            .is_some()
    }
}

pub fn kube_node(name: &str, labels: Value) -> k8s_openapi::api::core::v1::Node {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("node")
}

pub fn pod(ns: &str, name: &str, ips: &[IpAddr]) -> k8s_openapi::api::core::v1::Pod {
    let ips: Vec<Value> = ips.iter().map(|i| json!({"ip": i.to_string()})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": []},
        "status": {"podIPs": ips}
    }))
    .expect("pod")
}

/// One request the scripted API server expects and its reply; `check` sees the request body.
pub struct Expect {
    pub method: &'static str,
    pub path: String,
    pub reply: Value,
    pub check: Box<dyn FnOnce(&Value) + Send>,
}

pub fn expect(
    method: &'static str,
    path: &str,
    reply: Value,
    check: impl FnOnce(&Value) + Send + 'static,
) -> Expect {
    Expect {
        method,
        path: path.into(),
        reply,
        check: Box::new(check),
    }
}

/// kube's client over a scripted API server that answers `script` in order and fails the test
/// on any other request.
pub fn scripted(script: Vec<Expect>) -> (kube::Client, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        for e in script {
            let (req, send) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("expected {} {}", e.method, e.path));
            assert_eq!(req.method().as_str(), e.method, "{}", req.uri());
            assert_eq!(req.uri().path(), e.path);
            let bytes = req.into_body().collect_bytes().await.expect("body");
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("JSON body")
            };
            (e.check)(&body);
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&e.reply).expect("JSON")))
                    .expect("response"),
            );
        }
        if let Some((req, _)) = handle.next_request().await {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    });
    (kube::Client::new(service, "default"), server)
}
