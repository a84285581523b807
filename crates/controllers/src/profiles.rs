//! Kubernetes Namespaces and ServiceAccounts as Calico Profiles, as Calico's converter names
//! and labels them: `kns.<namespace>` (allow-all ingress and egress, the namespace's labels
//! applied as `pcns.<key>` plus `pcns.projectcalico.org/name`) and `ksa.<namespace>.<sa>` (no
//! rules, labels as `pcsa.<key>` plus `pcsa.projectcalico.org/name`).
//!
//! Level-triggered: [`plan`] compares the profiles the cluster implies with the Kubernetes-owned
//! profiles in etcd; [`sync`] applies the difference. Profiles without the owner mark (made by
//! calicoctl or Docker hosts) are never touched.
//!
//! The binary runs [`sync`] from watched stores of Namespaces and ServiceAccounts after every
//! change and every 5 minutes (`run::kubernetes_inputs`, `watch::sync_loop`); [`sync`] itself
//! is tested against a real etcd.

use std::collections::BTreeMap;

use calico_api::{CalicoResource, Profile, ProfileSpec, Rule};
use calico_datastore::ResourceError;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::ObjectMeta;

use crate::mirror::{EtcdMirror, MirrorError, owned_by_kubernetes};

use calico_api::names::{LABEL_NAME, NAMESPACE_LABEL_PREFIX, SERVICE_ACCOUNT_LABEL_PREFIX};
/// Name prefixes of namespace and service account profiles.
pub use calico_api::names::{
    NAMESPACE_PROFILE_PREFIX as NAMESPACE_PREFIX,
    SERVICE_ACCOUNT_PROFILE_PREFIX as SERVICE_ACCOUNT_PREFIX,
};

#[derive(Debug, thiserror::Error)]
pub enum ProfilesError {
    #[error("listing Profiles in etcd: {0}")]
    List(#[source] ResourceError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
}

fn allow_all() -> Vec<Rule> {
    // Built from JSON: Rule has many optional fields and no Default.
    match serde_json::from_value(serde_json::json!({ "action": "Allow" })) {
        Ok(rule) => vec![rule],
        Err(_) => Vec::new(),
    }
}

fn profile(name: String, labels: BTreeMap<String, String>, rules: Vec<Rule>) -> Profile {
    Profile {
        metadata: ObjectMeta {
            name: Some(name),
            ..ObjectMeta::default()
        },
        spec: ProfileSpec {
            ingress: rules.clone(),
            egress: rules,
            labels_to_apply: labels,
        },
    }
}

/// `kns.<name>` for a Namespace.
pub fn namespace_profile(ns: &Namespace) -> Option<Profile> {
    let name = ns.metadata.name.clone()?;
    let mut labels: BTreeMap<String, String> = ns
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (format!("{NAMESPACE_LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    labels.insert(
        format!("{NAMESPACE_LABEL_PREFIX}{LABEL_NAME}"),
        name.clone(),
    );
    Some(profile(
        format!("{NAMESPACE_PREFIX}{name}"),
        labels,
        allow_all(),
    ))
}

/// `ksa.<namespace>.<name>` for a ServiceAccount.
pub fn service_account_profile(sa: &ServiceAccount) -> Option<Profile> {
    let name = sa.metadata.name.clone()?;
    let ns = sa.metadata.namespace.clone()?;
    let mut labels: BTreeMap<String, String> = sa
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    labels.insert(
        format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{LABEL_NAME}"),
        name.clone(),
    );
    Some(profile(
        format!("{SERVICE_ACCOUNT_PREFIX}{ns}.{name}"),
        labels,
        Vec::new(),
    ))
}

/// What [`sync`] must do.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Profiles to create or update (the mirror skips unchanged ones).
    pub upsert: Vec<Profile>,
    /// Names of Kubernetes-owned profiles whose Namespace or ServiceAccount is gone.
    pub delete: Vec<String>,
}

/// Desired profiles vs the Kubernetes-owned `kns.`/`ksa.` profiles in etcd (pure).
pub fn plan(desired: Vec<Profile>, in_etcd: &[Profile]) -> Plan {
    let wanted: std::collections::BTreeSet<String> = desired
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let delete = in_etcd
        .iter()
        .filter(|p| owned_by_kubernetes(&p.metadata))
        .filter_map(|p| p.metadata.name.clone())
        .filter(|n| n.starts_with(NAMESPACE_PREFIX) || n.starts_with(SERVICE_ACCOUNT_PREFIX))
        .filter(|n| !wanted.contains(n))
        .collect();
    Plan {
        upsert: desired,
        delete,
    }
}

/// Makes etcd's Kubernetes-owned profiles match `namespaces` and `service_accounts`.
/// A profile of the same name that Kubernetes does not own is reported and left alone.
pub async fn sync(
    mirror: &EtcdMirror,
    namespaces: &[Namespace],
    service_accounts: &[ServiceAccount],
) -> Result<Plan, ProfilesError> {
    let desired: Vec<Profile> = namespaces
        .iter()
        .filter_map(namespace_profile)
        .chain(service_accounts.iter().filter_map(service_account_profile))
        .collect();
    let in_etcd = mirror
        .datastore()
        .list::<Profile>(None)
        .await
        .map_err(ProfilesError::List)?
        .items;
    let plan = plan(desired, &in_etcd);
    for p in &plan.upsert {
        match mirror.upsert(p).await {
            Ok(_) => {}
            Err(e @ MirrorError::NotOwned { .. }) => {
                tracing::warn!(error = %e, "profile not mirrored")
            }
            Err(e) => return Err(e.into()),
        }
    }
    for name in &plan.delete {
        if let Some(p) = in_etcd
            .iter()
            .find(|p| CalicoResource::meta(*p).name.as_deref() == Some(name))
        {
            mirror.remove(p).await?;
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    #[test]
    fn namespace_profile_names_and_labels_as_calico() {
        let p = namespace_profile(&ns("shop", &[("team", "web")])).unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("kns.shop"));
        assert_eq!(p.spec.labels_to_apply["pcns.team"], "web");
        assert_eq!(
            p.spec.labels_to_apply["pcns.projectcalico.org/name"],
            "shop"
        );
        assert_eq!(p.spec.ingress.len(), 1);
        assert_eq!(p.spec.egress.len(), 1);
    }

    #[test]
    fn service_account_profile_names_and_labels_as_calico() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("api".into()),
                namespace: Some("shop".into()),
                labels: Some([("tier".to_string(), "be".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        let p = service_account_profile(&sa).unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("ksa.shop.api"));
        assert_eq!(p.spec.labels_to_apply["pcsa.tier"], "be");
        assert_eq!(p.spec.labels_to_apply["pcsa.projectcalico.org/name"], "api");
        assert!(p.spec.ingress.is_empty() && p.spec.egress.is_empty());
    }

    #[test]
    fn plan_deletes_only_owned_stale_profiles() {
        let owned = |name: &str| {
            let mut p = namespace_profile(&ns(name, &[])).unwrap();
            p.metadata.annotations = Some(
                [(
                    crate::OWNER_ANNOTATION.to_string(),
                    crate::OWNER_KUBERNETES.to_string(),
                )]
                .into(),
            );
            p
        };
        let foreign = namespace_profile(&ns("docker", &[])).unwrap();
        let mut other = owned("x");
        other.metadata.name = Some("my-profile".into());
        let in_etcd = vec![owned("shop"), owned("gone"), foreign, other];
        let p = plan(vec![namespace_profile(&ns("shop", &[])).unwrap()], &in_etcd);
        assert_eq!(p.delete, vec!["kns.gone".to_string()]);
        assert_eq!(p.upsert.len(), 1);
    }
}
