//! Kubernetes Nodes as Calico Nodes in etcd, as Calico's node controller keeps them in etcd
//! mode.
//!
//! - A Calico Node belongs to Kubernetes when its `spec.orchRefs` holds
//!   `{orchestrator: k8s, nodeName: <Kubernetes node>}`. Docker hosts' Nodes have no such
//!   reference and are never changed or deleted here.
//! - Every Kubernetes Node has a Calico Node: the one whose orchRef names it, else the Calico
//!   Node of the same name (calico-node in the DaemonSet registers itself under
//!   `spec.nodeName`, possibly before this controller ran), which gets the orchRef; else a new
//!   one (name, orchRef, labels) that calico-node fills in at start-up.
//! - Labels: the Kubernetes Node's labels are copied onto the Calico Node. Which keys came from
//!   Kubernetes is recorded in [`KUBE_LABELS_ANNOTATION`] (Calico's annotation), so a label
//!   removed in Kubernetes is removed from the Calico Node while labels set with calicoctl stay.
//! - A Calico Node that belongs to a Kubernetes Node that no longer exists is deleted after IPAM
//!   released its addresses (`ipam_gc::release_node`) and affinities. Addresses still used by
//!   a live pod are kept, and so is the Calico Node, until they are released; otherwise the
//!   next round could no longer tell that the node was Kubernetes'.
//! - Safety: an empty list of Kubernetes Nodes deletes nothing (a cluster without nodes cannot
//!   run this controller; an empty answer is far likelier a mistake).

use std::collections::{BTreeMap, BTreeSet};

use calico_api::{CalicoResource, Node, NodeSpec, OrchRef};
use calico_datastore::{Datastore, ResourceError};
use calico_ipam::{Ipam, IpamError};
use k8s_openapi::api::core::v1::{Node as KubeNode, Pod};
use kube::api::ObjectMeta;

use crate::ipam_gc;

/// Calico's annotation on a Calico Node listing the labels copied from Kubernetes (JSON map),
/// and `orchRefs[].orchestrator` of Kubernetes.
pub use calico_api::names::{KUBE_LABELS_ANNOTATION, ORCHESTRATOR_K8S};

#[derive(Debug, thiserror::Error)]
pub enum NodeSyncError {
    #[error("listing Calico Nodes in etcd: {0}")]
    List(#[source] ResourceError),
    #[error("Node {name:?}: {action} in etcd: {source}")]
    Write {
        name: String,
        action: &'static str,
        #[source]
        source: ResourceError,
    },
    #[error("Node {name:?}: releasing its IPAM allocations: {source}")]
    Ipam {
        name: String,
        #[source]
        source: Box<ipam_gc::GcError>,
    },
    #[error("Node {name:?}: releasing its block affinities: {source}")]
    Affinities {
        name: String,
        #[source]
        source: IpamError,
    },
}

/// The Kubernetes node name a Calico Node stands for, if it is a Kubernetes node.
pub fn kubernetes_name(node: &Node) -> Option<&str> {
    node.spec
        .orch_refs
        .iter()
        .find(|r| r.orchestrator == ORCHESTRATOR_K8S)
        .and_then(|r| r.node_name.as_deref())
}

fn name_of(node: &Node) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

/// Labels the Calico Node got from Kubernetes last time (from [`KUBE_LABELS_ANNOTATION`]).
fn previous_kube_labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(KUBE_LABELS_ANNOTATION))
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// `calico` brought in line with `kube`: the orchRef and the labels (pure).
pub fn desired_node(calico: Option<&Node>, kube: &KubeNode) -> Option<Node> {
    let kube_name = kube.metadata.name.clone()?;
    let kube_labels: BTreeMap<String, String> = kube
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut node = match calico {
        Some(n) => n.clone(),
        None => Node::new(&kube_name, NodeSpec::default()),
    };
    node.spec
        .orch_refs
        .retain(|r| r.orchestrator != ORCHESTRATOR_K8S);
    node.spec.orch_refs.push(OrchRef {
        node_name: Some(kube_name),
        orchestrator: ORCHESTRATOR_K8S.into(),
    });
    let previous = previous_kube_labels(&node.metadata);
    let mut labels: BTreeMap<String, String> = node.metadata.labels.clone().unwrap_or_default();
    labels.retain(|k, _| !previous.contains_key(k) || kube_labels.contains_key(k));
    labels.extend(kube_labels.clone());
    node.metadata.labels = (!labels.is_empty()).then_some(labels);
    let annotations = node.metadata.annotations.get_or_insert_with(BTreeMap::new);
    // Serialising a string map cannot fail.
    annotations.insert(
        KUBE_LABELS_ANNOTATION.into(),
        serde_json::to_string(&kube_labels).unwrap_or_default(),
    );
    Some(node)
}

/// What [`sync`] must do.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<Node>,
    /// Changed Calico Nodes (with the resourceVersion read, so the write is a compare-and-swap).
    pub update: Vec<Node>,
    /// Calico Nodes of Kubernetes Nodes that no longer exist.
    pub delete: Vec<Node>,
}

/// The Calico Nodes the Kubernetes Nodes imply vs those in etcd (pure).
pub fn plan(kube_nodes: &[KubeNode], calico_nodes: &[Node]) -> Plan {
    let mut out = Plan::default();
    let kube_names: BTreeSet<&str> = kube_nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    for kube in kube_nodes {
        let Some(name) = kube.metadata.name.as_deref() else {
            continue;
        };
        let existing = calico_nodes
            .iter()
            .find(|c| kubernetes_name(c) == Some(name))
            .or_else(|| {
                // Adopted only when it stands for no Kubernetes node yet: one whose orchRef
                // names a deleted Kubernetes node is deleted below, never re-targeted.
                calico_nodes.iter().find(|c| {
                    c.metadata.name.as_deref() == Some(name) && kubernetes_name(c).is_none()
                })
            });
        let Some(desired) = desired_node(existing, kube) else {
            continue;
        };
        if existing.is_none()
            && calico_nodes
                .iter()
                .any(|c| c.metadata.name.as_deref() == Some(name))
        {
            // The name is taken by a Calico Node of another (deleted) Kubernetes node: created
            // once that one is gone.
            continue;
        }
        match existing {
            None => out.create.push(desired),
            Some(c) if *c != desired => out.update.push(desired),
            Some(_) => {}
        }
    }
    if !kube_names.is_empty() {
        out.delete = calico_nodes
            .iter()
            .filter(|c| kubernetes_name(c).is_some_and(|k| !kube_names.contains(k)))
            .cloned()
            .collect();
    }
    out
}

/// What [`sync`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    /// Calico Nodes of deleted Kubernetes Nodes kept because live pods still hold addresses.
    pub kept: Vec<String>,
    /// Addresses released for deleted nodes.
    pub released: Vec<std::net::IpAddr>,
}

/// Makes etcd's Calico Nodes match the Kubernetes Nodes; releases deleted nodes' IPAM.
/// `pods` are the cluster's pods, so that no address a live pod uses is released.
pub async fn sync(
    ds: &Datastore,
    ipam: &Ipam,
    kube_nodes: &[KubeNode],
    pods: &[Pod],
) -> Result<Report, NodeSyncError> {
    let calico = ds
        .list::<Node>(None)
        .await
        .map_err(NodeSyncError::List)?
        .items;
    let plan = plan(kube_nodes, &calico);
    let mut report = Report::default();
    let write_err = |name: &str, action| {
        let name = name.to_string();
        move |source| NodeSyncError::Write {
            name,
            action,
            source,
        }
    };
    for n in &plan.create {
        let name = name_of(n);
        ds.create(n).await.map_err(write_err(&name, "creating"))?;
        tracing::info!(node = %name, "created Calico Node for Kubernetes Node");
        report.created.push(name);
    }
    for n in &plan.update {
        let name = name_of(n);
        ds.update(n).await.map_err(write_err(&name, "updating"))?;
        tracing::info!(node = %name, "updated Calico Node from Kubernetes Node");
        report.updated.push(name);
    }
    for n in &plan.delete {
        let name = name_of(n);
        let outcome = ipam_gc::release_node(ipam, &name, pods)
            .await
            .map_err(|e| NodeSyncError::Ipam {
                name: name.clone(),
                source: Box::new(e),
            })?;
        report.released.extend(outcome.released.iter().copied());
        if !outcome.in_use.is_empty() {
            tracing::warn!(
                node = %name, in_use = ?outcome.in_use,
                "Kubernetes Node deleted but live pods still hold addresses on it; \
                 keeping its Calico Node until they are released"
            );
            report.kept.push(name);
            continue;
        }
        ipam.release_host_affinities(&name)
            .await
            .map_err(|source| NodeSyncError::Affinities {
                name: name.clone(),
                source,
            })?;
        match ds
            .delete::<Node>(
                None,
                &name,
                CalicoResource::meta(n).resource_version.as_deref(),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(write_err(&name, "deleting")(e)),
        }
        tracing::info!(node = %name, "deleted Calico Node of deleted Kubernetes Node");
        report.deleted.push(name);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kube(name: &str, labels: serde_json::Value) -> KubeNode {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .expect("Node JSON")
    }

    fn calico(name: &str, k8s: Option<&str>) -> Node {
        let mut n = Node::new(name, NodeSpec::default());
        if let Some(k) = k8s {
            n.spec.orch_refs.push(OrchRef {
                node_name: Some(k.into()),
                orchestrator: ORCHESTRATOR_K8S.into(),
            });
        }
        n
    }

    #[test]
    fn labels_from_kubernetes_replace_only_their_own() {
        let mut c = calico("a", Some("a"));
        c.metadata.labels = Some(
            [("mine", "x"), ("zone", "old"), ("gone", "y")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        );
        c.metadata.annotations = Some(
            [(
                KUBE_LABELS_ANNOTATION.to_string(),
                r#"{"zone":"old","gone":"y"}"#.to_string(),
            )]
            .into(),
        );
        let d = desired_node(Some(&c), &kube("a", json!({"zone": "new", "rack": "r1"}))).unwrap();
        let labels = d.metadata.labels.clone().unwrap();
        assert_eq!(
            labels,
            [("mine", "x"), ("zone", "new"), ("rack", "r1")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into()
        );
        let ann = &d.metadata.annotations.as_ref().unwrap()[KUBE_LABELS_ANNOTATION];
        assert_eq!(ann, r#"{"rack":"r1","zone":"new"}"#);
        assert_eq!(kubernetes_name(&d), Some("a"));
        // Settled: a second pass changes nothing.
        assert_eq!(
            desired_node(Some(&d), &kube("a", json!({"zone": "new", "rack": "r1"}))),
            Some(d)
        );
    }

    #[test]
    fn plan_creates_adopts_and_deletes_only_kubernetes_nodes() {
        let kubes = [
            kube("k1", json!({})),
            kube("k2", json!({})),
            kube("k3", json!({})),
        ];
        let calicos = [
            calico("k1", Some("k1")),    // settled after labels annotation? no: updated
            calico("k2", None),          // adopted: same name, gets the orchRef
            calico("docker-host", None), // never touched
            calico("old", Some("old")),  // Kubernetes node gone: deleted
        ];
        let p = plan(&kubes, &calicos);
        assert_eq!(p.create.iter().map(name_of).collect::<Vec<_>>(), ["k3"]);
        assert_eq!(kubernetes_name(&p.create[0]), Some("k3"));
        assert_eq!(
            p.update.iter().map(name_of).collect::<Vec<_>>(),
            ["k1", "k2"]
        );
        assert_eq!(p.delete.iter().map(name_of).collect::<Vec<_>>(), ["old"]);
        // With the updates applied, nothing is left to do but the deletion.
        let settled: Vec<Node> = p
            .update
            .iter()
            .cloned()
            .chain(p.create.iter().cloned())
            .chain([calicos[2].clone(), calicos[3].clone()])
            .collect();
        let again = plan(&kubes, &settled);
        assert!(
            again.create.is_empty() && again.update.is_empty(),
            "{again:?}"
        );
        assert_eq!(again.delete.len(), 1);
    }

    #[test]
    fn a_calico_node_of_a_deleted_kubernetes_node_is_deleted_not_retargeted() {
        // Calico Node "n" stood for Kubernetes node "x" (names may differ in Calico); "x" is
        // gone and a Kubernetes node "n" exists.
        let p = plan(&[kube("n", json!({}))], &[calico("n", Some("x"))]);
        assert!(p.update.is_empty() && p.create.is_empty(), "{p:?}");
        assert_eq!(p.delete.iter().map(name_of).collect::<Vec<_>>(), ["n"]);
        // Once it is gone, "n" gets its own.
        let p = plan(&[kube("n", json!({}))], &[]);
        assert_eq!(p.create.iter().map(name_of).collect::<Vec<_>>(), ["n"]);
    }

    #[test]
    fn an_empty_node_list_deletes_nothing() {
        let p = plan(&[], &[calico("k1", Some("k1"))]);
        assert!(p.delete.is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
            proptest::collection::btree_map("[a-e]", "[xy]", 0..5)
        }

        proptest! {
            /// Whatever the Calico Node held and Kubernetes held before: after a pass the node
            /// carries exactly Kubernetes' current labels plus the labels Kubernetes never set,
            /// and a second pass changes nothing.
            #[test]
            fn label_sync_is_exact_and_idempotent(
                own in label_map(), before in label_map(), now in label_map()
            ) {
                let mut c = calico("n", Some("n"));
                let mut labels = own.clone();
                labels.extend(before.clone());
                c.metadata.labels = Some(labels);
                c.metadata.annotations = Some([(
                    KUBE_LABELS_ANNOTATION.to_string(),
                    serde_json::to_string(&before).unwrap(),
                )].into());
                let k = kube("n", serde_json::to_value(&now).unwrap());
                let d = desired_node(Some(&c), &k).unwrap();
                let got = d.metadata.labels.clone().unwrap_or_default();
                let mut want: BTreeMap<String, String> = own
                    .into_iter()
                    .filter(|(key, _)| !before.contains_key(key))
                    .collect();
                want.extend(now);
                prop_assert_eq!(got, want);
                prop_assert_eq!(desired_node(Some(&d), &k), Some(d));
            }
        }
    }
}
