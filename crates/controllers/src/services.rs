//! Services for BGP advertisement: what calico-node needs of Kubernetes Services and their
//! EndpointSlices to advertise service addresses as Calico does, published into etcd (the
//! nodes hold no Kubernetes credentials).
//!
//! For every Service with `externalTrafficPolicy: Local` this sync writes an
//! [`AdvertisedService`] (its cluster, external and load-balancer addresses and the nodes that
//! host a ready endpoint) at [`service_key`]; a record whose Service is gone or no longer Local
//! is deleted. Each pass compares the whole prefix with the desired records and writes only the
//! difference (level-triggered, like every other sync here). Services with the `Cluster` policy
//! need nothing published: every node advertises the configured ranges whole.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_api::service_advertisement::{AdvertisedService, SERVICES_PREFIX, service_key};
use calico_datastore::{EtcdClient, KvError};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tracing::info;

/// The label an EndpointSlice carries naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, thiserror::Error)]
pub enum ServiceSyncError {
    #[error("published services in etcd ({SERVICES_PREFIX}): {0}")]
    Etcd(#[source] KvError),
    #[error("encoding the record of {0}: {1}")]
    Encode(String, #[source] serde_json::Error),
}

fn ips<'a>(v: impl IntoIterator<Item = &'a String>) -> impl Iterator<Item = IpAddr> {
    v.into_iter().filter_map(|s| s.parse().ok())
}

/// The record of one Service, or `None` when it needs none (not `externalTrafficPolicy:
/// Local`). `slices` may hold any EndpointSlices; those of this Service are picked by label.
pub fn advertised(svc: &Service, slices: &[EndpointSlice]) -> Option<AdvertisedService> {
    let spec = svc.spec.as_ref()?;
    if spec.external_traffic_policy.as_deref() != Some("Local") {
        return None;
    }
    let (namespace, name) = (
        svc.metadata.namespace.as_deref()?,
        svc.metadata.name.as_deref()?,
    );
    let mut out = AdvertisedService {
        cluster_ips: ips(spec.cluster_ips.iter().flatten().chain(&spec.cluster_ip)).collect(),
        external_ips: ips(spec.external_ips.iter().flatten()).collect(),
        load_balancer_ips: ips(spec.load_balancer_ip.iter()).collect(),
        nodes: Default::default(),
    };
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref());
    out.load_balancer_ips.extend(ips(ingress
        .iter()
        .flat_map(|i| i.iter().flat_map(|i| &i.ip))));
    let ours = slices.iter().filter(|s| {
        s.metadata.namespace.as_deref() == Some(namespace)
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(name)
    });
    for slice in ours {
        for ep in &slice.endpoints {
            // Kubernetes: a missing `ready` means ready.
            let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            if let Some(node) = ep.node_name.as_ref().filter(|_| ready) {
                out.nodes.insert(node.clone());
            }
        }
    }
    Some(out)
}

/// The records every Service needs, by etcd key.
pub fn plan(services: &[Service], slices: &[EndpointSlice]) -> BTreeMap<String, AdvertisedService> {
    services
        .iter()
        .filter_map(|s| {
            let key = service_key(
                s.metadata.namespace.as_deref()?,
                s.metadata.name.as_deref()?,
            );
            Some((key, advertised(s, slices)?))
        })
        .collect()
}

/// Brings the published records in line with `services` and `slices`; returns the keys
/// written or deleted.
pub async fn sync(
    kv: &EtcdClient,
    services: &[Service],
    slices: &[EndpointSlice],
) -> Result<Vec<String>, ServiceSyncError> {
    let desired = plan(services, slices);
    let current: BTreeMap<String, Vec<u8>> = kv
        .list(SERVICES_PREFIX)
        .await
        .map_err(ServiceSyncError::Etcd)?
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    let mut changed = Vec::new();
    for (key, record) in &desired {
        let value =
            serde_json::to_vec(record).map_err(|e| ServiceSyncError::Encode(key.clone(), e))?;
        if current.get(key) != Some(&value) {
            kv.put(key, value).await.map_err(ServiceSyncError::Etcd)?;
            info!(%key, nodes = ?record.nodes, "service published for BGP advertisement");
            changed.push(key.clone());
        }
    }
    for key in current.keys().filter(|k| !desired.contains_key(*k)) {
        match kv.delete(key, None).await {
            Ok(_) => {}
            // Deleted meanwhile (another controller pass): already what we want.
            Err(KvError::NotFound { .. }) => {}
            Err(e) => return Err(ServiceSyncError::Etcd(e)),
        }
        info!(%key, "service no longer published for BGP advertisement");
        changed.push(key.clone());
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(policy: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::a"],
                "externalIPs": ["203.0.113.5"],
                "externalTrafficPolicy": policy
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}, {"hostname": "lb.example"}]}}
        }))
        .unwrap()
    }

    fn slice(service: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": endpoints
        }))
        .unwrap()
    }

    #[test]
    fn a_local_service_is_published_with_the_nodes_of_its_ready_endpoints() {
        let slices = [
            slice(
                "web",
                json!([
                    {"addresses": ["10.65.0.2"], "nodeName": "n1"},
                    {"addresses": ["10.65.1.2"], "nodeName": "n2", "conditions": {"ready": false}},
                    {"addresses": ["10.65.2.2"], "nodeName": "n3", "conditions": {"ready": true}}
                ]),
            ),
            // Another Service's endpoints never count.
            slice(
                "db",
                json!([{"addresses": ["10.65.4.2"], "nodeName": "n4"}]),
            ),
        ];
        let got = advertised(&service("Local"), &slices).unwrap();
        let ips = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(got.cluster_ips, ips(&["10.96.0.10", "fd00:96::a"]));
        assert_eq!(got.external_ips, ips(&["203.0.113.5"]));
        assert_eq!(got.load_balancer_ips, ips(&["198.51.100.7"]));
        assert_eq!(
            got.nodes,
            ["n1".to_string(), "n3".to_string()].into_iter().collect()
        );
        let plan = plan(&[service("Local")], &slices);
        assert_eq!(
            plan.keys().collect::<Vec<_>>(),
            ["/calico/calico-rs/v1/services/shop/web"]
        );
    }

    #[test]
    fn a_cluster_policy_service_needs_no_record() {
        assert_eq!(advertised(&service("Cluster"), &[]), None);
        assert!(plan(&[service("Cluster")], &[]).is_empty());
    }
}
