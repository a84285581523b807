//! Leader election on a coordination.k8s.io Lease, so that several replicas are safe: only the
//! holder reconciles.
//!
//! The holder renews `spec.renewTime` every [`LeaseLock::renew_every`]; another replica takes
//! the Lease over once `renewTime + leaseDurationSeconds` has passed. Every write is a replace
//! carrying the `resourceVersion` that was read, so two replicas racing for an expired Lease
//! cannot both win: the API server refuses the second with 409 Conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("Lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What this replica should do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    Acquire,
    /// Someone else holds a live Lease.
    Follow { holder: String },
}

/// Decides from the Lease's spec (pure; `now` in whole seconds since the epoch).
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: i64, default_duration: i64) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = spec
        .lease_duration_seconds
        .map(i64::from)
        .unwrap_or(default_duration);
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0.as_second());
    match renewed {
        Some(at) if at + duration > now => Decision::Follow {
            holder: holder.to_string(),
        },
        _ => Decision::Acquire,
    }
}

/// One replica's handle on the Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    pub fn new(
        api: Api<Lease>,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaseLock {
            api,
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often the holder renews: a third of the duration, so two missed renewals are
    /// survived.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    fn err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// Tries to take or renew the Lease; `Ok(true)` when this replica holds it afterwards.
    /// Losing a race (409 Conflict on create or replace) is `Ok(false)`, not an error.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(self.err(e)),
            };
        };
        let decision = decide(
            lease.spec.as_ref(),
            &self.identity,
            now.as_second(),
            i64::from(secs),
        );
        let mut spec = lease.spec.take().unwrap_or_default();
        match decision {
            Decision::Follow { .. } => return Ok(false),
            Decision::Renew => {
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(secs);
            }
            Decision::Acquire => {
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(secs);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        lease.spec = Some(spec);
        // `lease.metadata.resourceVersion` is what we read: the replace is a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }
}

impl LeaseLock {
    /// Gives the Lease up if this replica holds it, as client-go's `ReleaseOnCancel` does: no
    /// holder, a one-second duration, so that another replica takes it at its next try
    /// instead of waiting for it to expire. `Ok(false)` when someone else holds it (or won a
    /// race for it). Call only once this replica has stopped reconciling.
    pub async fn release(&self) -> Result<bool, LeaderError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(false);
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }
}

/// Renews the Lease every [`LeaseLock::renew_every`] and returns once leadership is lost: the
/// Lease was taken by someone else, or could not be renewed for `duration - renew_every`
/// (one renewal period before it could expire for the others, so two leaders never overlap).
pub async fn keep_renewing(lock: &LeaseLock, duration: Duration) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(lock.renew_every()).await;
        match lock.try_acquire_or_renew().await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::warn!(identity = lock.identity(), "the Lease was taken over");
                return;
            }
            Err(e) if last_ok.elapsed() + lock.renew_every() < duration => {
                tracing::warn!(error = %e, "renewing the Lease; will retry");
            }
            Err(e) => {
                tracing::error!(error = %e, "could not renew the Lease in time; giving it up");
                return;
            }
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", 100, 15), Decision::Acquire);
        assert_eq!(
            decide(Some(&spec("a", 0, 15)), "a", 100, 15),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec("b", 90, 15)), "a", 100, 15),
            Decision::Follow { holder: "b".into() }
        );
        // Expired exactly at renewTime + duration.
        assert_eq!(
            decide(Some(&spec("b", 85, 15)), "a", 100, 15),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&spec("", 99, 15)), "a", 100, 15),
            Decision::Acquire
        );
        let never_renewed = LeaseSpec {
            holder_identity: Some("b".into()),
            ..LeaseSpec::default()
        };
        assert_eq!(
            decide(Some(&never_renewed), "a", 100, 15),
            Decision::Acquire
        );
    }
}
