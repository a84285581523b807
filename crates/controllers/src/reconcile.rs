//! One reconcile pass over one object: validate → mirror into etcd → report status; on
//! deletion (the finalizer holds the object) remove the etcd copy first.

use std::sync::Arc;
use std::time::Duration;

use calico_api::{CalicoResource, ObjectMeta};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event, finalizer};
use kube::{Api, Client};
use serde_json::json;
use tracing::{info, warn};

use crate::FINALIZER;
use crate::health::Metrics;
use crate::kinds::{
    MESSAGE_ANNOTATION, MirroredKind, OBSERVED_GENERATION_ANNOTATION, READY_ANNOTATION,
    REASON_ANNOTATION, StatusMode,
};
use crate::mirror::{EtcdMirror, MirrorError};
use crate::status::{Outcome, READY, condition, merge_conditions, ready_condition};

/// How often a mirrored object is reconciled again without a change, so an etcd copy deleted
/// or edited behind our back is restored.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Retry interval while etcd holds a same-named object that Kubernetes does not own.
pub const CONFLICT_RETRY: Duration = Duration::from_secs(60);
/// Retry interval after an error (API server or etcd unreachable, write conflict).
pub const ERROR_RETRY: Duration = Duration::from_secs(5);

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub mirror: EtcdMirror,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{kind} {name:?}: writing status: {source}")]
    Status {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("{kind} {name:?}: finalizer {FINALIZER}: {reason}")]
    Finalizer {
        kind: &'static str,
        name: String,
        reason: String,
    },
}

fn meta<K: MirroredKind>(obj: &K) -> &ObjectMeta {
    CalicoResource::meta(obj)
}

fn name_of<K: MirroredKind>(obj: &K) -> String {
    meta(obj).name.clone().unwrap_or_default()
}

/// Reconciles one object (the kube-runtime `Controller` callback).
pub async fn reconcile<K: MirroredKind>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    // A read-only reflection of an etcd object (reflect.rs): never mirrored back into etcd,
    // never given a finalizer or a status, so the two directions cannot ping-pong.
    if crate::reflect::owned_by_etcd(meta(&*obj)) {
        return Ok(Action::await_change());
    }
    ctx.metrics.reconcile_started(K::KIND);
    let name = name_of(&*obj);
    let api = K::api(ctx.client.clone(), meta(&*obj).namespace.as_deref());
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(o) => apply(&api, o, &ctx).await,
            Event::Cleanup(o) => cleanup(o, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => ReconcileError::Finalizer {
            kind: K::KIND,
            name,
            reason: other.to_string(),
        },
    })
}

/// What to do after an error: count it and retry soon.
pub fn error_policy<K: MirroredKind>(
    obj: Arc<K>,
    err: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.reconcile_failed(K::KIND);
    warn!(kind = K::KIND, name = %name_of(&*obj), error = %err, "reconcile failed; retrying");
    Action::requeue(ERROR_RETRY)
}

async fn apply<K: MirroredKind>(
    api: &Api<K>,
    obj: Arc<K>,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let outcome = match obj.validate() {
        // An invalid update leaves the last valid etcd copy in place: the network keeps
        // running on it while the user fixes the object.
        Err(errors) => Outcome::invalid(&errors),
        Ok(()) => match ctx.mirror.upsert(&*obj).await {
            Ok(done) => {
                info!(kind = K::KIND, name = %name_of(&*obj), ?done, "mirrored into etcd");
                Outcome::Mirrored
            }
            Err(e @ MirrorError::NotOwned { .. }) => Outcome::Conflict(e.to_string()),
            Err(e) => return Err(e.into()),
        },
    };
    ctx.metrics.outcome(K::KIND, &outcome);
    write_status(api, &*obj, &outcome).await?;
    Ok(match outcome {
        Outcome::Mirrored => Action::requeue(RESYNC),
        Outcome::Invalid(_) => Action::await_change(),
        Outcome::Conflict(_) => Action::requeue(CONFLICT_RETRY),
    })
}

async fn cleanup<K: MirroredKind>(obj: Arc<K>, ctx: &Context) -> Result<Action, ReconcileError> {
    let deleted = ctx.mirror.remove(&*obj).await?;
    info!(kind = K::KIND, name = %name_of(&*obj), deleted, "removed from etcd");
    Ok(Action::await_change())
}

/// Writes the outcome on the object, only when it differs from what the object shows (so a
/// status write, which triggers another reconcile, settles after one round).
pub async fn write_status<K: MirroredKind>(
    api: &Api<K>,
    obj: &K,
    outcome: &Outcome,
) -> Result<(), ReconcileError> {
    let name = name_of(obj);
    let generation = meta(obj).generation;
    let err = |source| ReconcileError::Status {
        kind: K::KIND,
        name: name.clone(),
        source,
    };
    match K::STATUS {
        StatusMode::Conditions => {
            let current = obj.conditions();
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let previous = current.iter().find(|c| c.r#type == READY);
            let mut conditions = merge_conditions(
                current,
                ready_condition(outcome, generation, previous, &now),
            );
            for (kind, status, reason, message) in obj.extra_conditions(outcome) {
                let previous = current.iter().find(|c| c.r#type == kind);
                let c = condition(kind, status, reason, message, generation, previous, &now);
                conditions.retain(|x| x.r#type != kind);
                conditions.push(c);
            }
            // Compared as sets by type: the order the API server returns them in is not ours.
            let same =
                conditions.len() == current.len() && conditions.iter().all(|c| current.contains(c));
            if same {
                return Ok(());
            }
            let patch = json!({ "status": { "conditions": conditions } });
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err)?;
        }
        StatusMode::Annotations => {
            let desired = [
                (READY_ANNOTATION, format!("{:?}", outcome.status())),
                (REASON_ANNOTATION, outcome.reason().to_string()),
                (MESSAGE_ANNOTATION, outcome.message()),
                (
                    OBSERVED_GENERATION_ANNOTATION,
                    generation.map(|g| g.to_string()).unwrap_or_default(),
                ),
            ];
            let current = meta(obj).annotations.as_ref();
            let unchanged = desired
                .iter()
                .all(|(k, v)| current.and_then(|a| a.get(*k)) == Some(v));
            if unchanged {
                return Ok(());
            }
            let annotations: serde_json::Map<String, serde_json::Value> = desired
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
            let patch = json!({ "metadata": { "annotations": annotations } });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err)?;
        }
    }
    Ok(())
}
