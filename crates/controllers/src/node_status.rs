//! calico-node's report on a CalicoNodeStatus applied with kubectl, copied back from etcd.
//!
//! The mirror writes the object's spec into etcd; calico-node on the named node writes its
//! agent, BGP and route state into the etcd object's `status` every `updatePeriodSeconds`
//! (`crates/node/src/node_status.rs`); this loop copies that status into the Kubernetes
//! object's status subresource (Calico's CRD has one), so `kubectl get caliconodestatus -o
//! yaml` shows it as Calico's does. Only objects the mirror owns (marked as Kubernetes')
//! are copied; a status is patched only when it differs, so a steady cluster costs no writes
//! beyond calico-node's own period.

use std::sync::Arc;
use std::time::Duration;

use calico_api::CalicoNodeStatus;
use calico_datastore::{Datastore, ResourceError};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;
use tracing::warn;

use crate::mirror::owned_by_kubernetes;
use crate::reconcile::Context;

/// How often the statuses are brought up to date (calico-node's finest period is 1 s; a
/// typical one is 10 s or more).
pub const ROUND: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NodeStatusCopyError {
    #[error("listing CalicoNodeStatus in etcd: {0}")]
    ListEtcd(#[source] ResourceError),
    #[error("listing CalicoNodeStatus in Kubernetes: {0}")]
    ListKubernetes(#[source] Box<kube::Error>),
    #[error("CalicoNodeStatus {name:?}: patching the status: {source}")]
    Patch {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// Copies the status of every Kubernetes-owned CalicoNodeStatus in etcd to its Kubernetes
/// object where they differ; returns the names patched.
pub async fn copy_back(
    client: kube::Client,
    ds: &Datastore,
) -> Result<Vec<String>, NodeStatusCopyError> {
    let in_etcd = ds
        .list::<CalicoNodeStatus>(None)
        .await
        .map_err(NodeStatusCopyError::ListEtcd)?
        .items;
    let api: Api<CalicoNodeStatus> = Api::all(client);
    let in_kube = api
        .list(&ListParams::default())
        .await
        .map_err(|e| NodeStatusCopyError::ListKubernetes(Box::new(e)))?
        .items;
    let mut patched = Vec::new();
    for stored in in_etcd
        .iter()
        .filter(|s| owned_by_kubernetes(&s.metadata) && s.status.is_some())
    {
        let Some(name) = stored.metadata.name.as_deref() else {
            continue;
        };
        let Some(obj) = in_kube
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some(name))
        else {
            continue;
        };
        if obj.status == stored.status {
            continue;
        }
        // A merge patch of the whole status: fields calico-node dropped (a class no longer
        // asked for) are replaced by the JSON merge of objects, so send nulls for them.
        let mut status = serde_json::to_value(&stored.status).unwrap_or_default();
        if let (Some(new), Some(old)) = (
            status.as_object_mut(),
            serde_json::to_value(&obj.status)
                .ok()
                .and_then(|v| v.as_object().cloned()),
        ) {
            for key in old.keys() {
                new.entry(key.clone()).or_insert(serde_json::Value::Null);
            }
        }
        let patch = json!({ "status": status });
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| NodeStatusCopyError::Patch {
                name: name.to_owned(),
                source: Box::new(e),
            })?;
        patched.push(name.to_owned());
    }
    Ok(patched)
}

/// Metrics name of this loop's rounds.
const METRIC_KIND: &str = "CalicoNodeStatusCopy";

/// Runs [`copy_back`] every [`ROUND`] until `lost` turns true.
pub async fn run_loop(ctx: Arc<Context>, mut lost: watch::Receiver<bool>) {
    loop {
        ctx.metrics.reconcile_started(METRIC_KIND);
        if let Err(e) = copy_back(ctx.client.clone(), ctx.mirror.datastore()).await {
            ctx.metrics.reconcile_failed(METRIC_KIND);
            warn!(error = %e, "CalicoNodeStatus status copy");
        }
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = lost.wait_for(|l| *l) => return,
        }
    }
}
