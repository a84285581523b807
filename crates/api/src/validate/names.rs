//! Names, namespaces, labels and annotations.

use std::collections::BTreeMap;

use super::Errs;
use crate::{CalicoResource, ObjectMeta};

/// DNS-1123 label: at most 63 characters of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain: at most 253 characters, dot-separated labels.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The name part of a Kubernetes qualified name or a label value: at most 63 characters of
/// `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn is_k8s_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn check_qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err(format!("{s:?}: the prefix {p:?} must be a DNS subdomain"));
    }
    if !is_k8s_name_part(name) {
        return Err(format!(
            "{s:?}: the name must be 1 to 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: empty, or a name part.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_k8s_name_part(s)
}

/// An IANA service name, as Kubernetes requires for named ports: 1 to 15 characters of
/// `[a-z0-9-]` with at least one letter, no hyphen at either end and no two in a row.
pub fn is_iana_service_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Calico caps the total size of annotation keys and values.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

pub(crate) fn check_annotations(path: &str, annotations: &BTreeMap<String, String>, e: &mut Errs) {
    let mut total = 0;
    for (k, v) in annotations {
        if let Err(r) = check_qualified_name(&k.to_ascii_lowercase()) {
            e.add(
                format!("{path}[{k}]"),
                format!("invalid annotation key {r}"),
            );
        }
        total += k.len() + v.len();
    }
    if total > ANNOTATIONS_MAX_BYTES {
        e.add(
            path,
            format!(
                "annotations total {total} bytes, more than the {ANNOTATIONS_MAX_BYTES} allowed"
            ),
        );
    }
}

/// What every kind checks: a DNS-subdomain name, a namespace exactly when the kind is
/// namespaced, valid label keys and values, valid annotation keys.
pub(crate) fn check_meta<R: CalicoResource>(meta: &ObjectMeta, e: &mut Errs) {
    match meta.name.as_deref() {
        None | Some("") => e.add("metadata.name", "a name is required"),
        Some(name) if !is_dns_subdomain(name) => e.add(
            "metadata.name",
            format!("{name:?} is not a valid name: use lower-case letters, digits, '-' and '.', at most 253 characters, starting and ending with a letter or digit"),
        ),
        _ => {}
    }
    match meta.namespace.as_deref() {
        Some(ns) if R::NAMESPACED && !is_dns_label(ns) => e.add(
            "metadata.namespace",
            format!("{ns:?} is not a valid namespace (a DNS label)"),
        ),
        Some(ns) if !R::NAMESPACED && !ns.is_empty() => e.add(
            "metadata.namespace",
            format!(
                "{} is not namespaced, but namespace {ns:?} was given",
                R::KIND
            ),
        ),
        _ => {}
    }
    if let Some(labels) = &meta.labels {
        for (k, v) in labels {
            if let Err(r) = check_qualified_name(k) {
                e.add(
                    format!("metadata.labels[{k}]"),
                    format!("invalid label key {r}"),
                );
            }
            if !is_label_value(v) {
                e.add(
                    format!("metadata.labels[{k}]"),
                    format!("{v:?} is not a valid label value (at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"),
                );
            }
        }
    }
    if let Some(annotations) = &meta.annotations {
        check_annotations("metadata.annotations", annotations, e);
    }
}

/// Calico's stricter names for namespaced policies: a DNS label, two labels joined by a dot
/// (e.g. a legacy `tier.name`), or the `knp.default.` / `ossg.default.` prefixes that
/// converted Kubernetes and OpenStack policies carry.
pub(crate) fn check_network_policy_name(meta: &ObjectMeta, e: &mut Errs) {
    let Some(name) = meta.name.as_deref().filter(|n| !n.is_empty()) else {
        return;
    };
    let ok = match name.split_once('.') {
        None => is_dns_label(name),
        Some((a, b)) if is_dns_label(a) && is_dns_label(b) => true,
        Some(_) => ["knp.default.", "ossg.default."]
            .iter()
            .any(|p| name.strip_prefix(p).is_some_and(is_dns_subdomain)),
    };
    if !ok {
        e.add(
            "metadata.name",
            format!("{name:?} is not a valid policy name: use a DNS label (lower-case letters, digits and '-'), optionally one '.' between two of them"),
        );
    }
}

/// Global policies: a DNS label, optionally prefixed by one `label.`.
pub(crate) fn check_global_policy_name(meta: &ObjectMeta, e: &mut Errs) {
    let Some(name) = meta.name.as_deref().filter(|n| !n.is_empty()) else {
        return;
    };
    let ok = match name.split_once('.') {
        None => is_dns_label(name),
        Some((a, b)) => is_dns_label(a) && is_dns_label(b),
    };
    if !ok {
        e.add(
            "metadata.name",
            format!("{name:?} is not a valid policy name: use a DNS label (lower-case letters, digits and '-'), optionally one '.' between two of them"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_follow_kubernetes() {
        for ok in ["app", "projectcalico.org/namespace", "a_b.c-d", "x/Y"] {
            assert!(check_qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Bad_Prefix/a", "a/b/c", &"x".repeat(64)] {
            assert!(check_qualified_name(bad).is_err(), "{bad}");
        }
        assert!(is_label_value(""));
        assert!(!is_label_value("a b"));
    }

    #[test]
    fn iana_service_names_follow_kubernetes() {
        for ok in ["http", "dns-tcp", "h2c", "a1"] {
            assert!(is_iana_service_name(ok), "{ok}");
        }
        for bad in ["", "8080", "HTTP", "a--b", "-a", "a-", "sixteen-letters1"] {
            assert!(!is_iana_service_name(bad), "{bad}");
        }
    }
}
