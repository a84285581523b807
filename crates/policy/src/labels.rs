//! The labels selectors see for each endpoint and network set, as Calico builds them: own labels
//! plus generated `projectcalico.org/*` labels, over labels inherited from the namespace
//! (`pcns.*`), the service account (`pcsa.*`) and the profiles' `labelsToApply`.

use std::collections::BTreeMap;

use crate::model::{
    HostEndpoint, LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT, LabelMap, NAME_LABEL,
    NAMESPACE_LABEL_PREFIX, NetworkSet, Profile, SERVICE_ACCOUNT_LABEL_PREFIX, WorkloadEndpoint,
};

fn inherit(out: &mut LabelMap, prefix: &str, labels: &LabelMap, name: &str) {
    for (k, v) in labels {
        out.insert(format!("{prefix}{k}"), v.clone());
    }
    out.insert(format!("{prefix}{NAME_LABEL}"), name.to_string());
}

/// Inherited profile labels: the first profile listed that sets a key wins.
fn profile_labels(out: &mut LabelMap, names: &[String], profiles: &BTreeMap<&str, &Profile>) {
    for name in names.iter().rev() {
        if let Some(p) = profiles.get(name.as_str()) {
            out.extend(
                p.labels_to_apply
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
    }
}

/// Effective labels of a workload endpoint.
pub fn workload_labels(ep: &WorkloadEndpoint, profiles: &BTreeMap<&str, &Profile>) -> LabelMap {
    let mut out = LabelMap::new();
    profile_labels(&mut out, &ep.profiles, profiles);
    inherit(
        &mut out,
        NAMESPACE_LABEL_PREFIX,
        &ep.namespace_labels,
        &ep.namespace,
    );
    if let Some(sa) = &ep.service_account {
        inherit(
            &mut out,
            SERVICE_ACCOUNT_LABEL_PREFIX,
            &ep.service_account_labels,
            sa,
        );
    }
    out.extend(ep.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    out.insert(LABEL_NAMESPACE.to_string(), ep.namespace.clone());
    if let Some(o) = &ep.orchestrator {
        out.insert(LABEL_ORCHESTRATOR.to_string(), o.clone());
    }
    if let Some(sa) = &ep.service_account {
        out.insert(LABEL_SERVICE_ACCOUNT.to_string(), sa.clone());
    }
    out
}

/// Effective labels of a host endpoint (not namespaced).
pub fn host_labels(ep: &HostEndpoint, profiles: &BTreeMap<&str, &Profile>) -> LabelMap {
    let mut out = LabelMap::new();
    profile_labels(&mut out, &ep.profiles, profiles);
    out.extend(ep.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// Effective labels of a network set: a namespaced set carries its namespace label and
/// inherits its namespace's labels, like a workload.
pub fn network_set_labels(set: &NetworkSet) -> LabelMap {
    let mut out = LabelMap::new();
    if let Some(ns) = &set.namespace {
        inherit(&mut out, NAMESPACE_LABEL_PREFIX, &set.namespace_labels, ns);
    }
    out.extend(set.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(ns) = &set.namespace {
        out.insert(LABEL_NAMESPACE.to_string(), ns.clone());
    }
    out
}
