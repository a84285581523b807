//! Pure helpers on resource documents (JSON values): identity, keys, and the one metadata
//! rule every writer follows (calicoctl, CNI, Docker, the controllers, calico-node):
//!
//! - The document is the whole object. `spec`, `labels` and `annotations` are stored as the
//!   document gives them; a label or annotation the document no longer has is removed (a stale
//!   label would keep every policy that selects it applying). This is calicoctl's
//!   `mergeMetadataForUpdate` for `apply` and `replace`.
//! - `uid` and `creationTimestamp` belong to the datastore: set on create (whatever the
//!   document said), kept from the stored object on every update.
//! - `resourceVersion` is the key's etcd mod revision; it is never stored in the value. Given
//!   on an update it is a compare-and-swap precondition; given on a create it is refused.
//! - Any other metadata (`generateName`, `ownerReferences`, ...) is taken from the document on
//!   create and kept from the stored object on update (libcalico-go's rule). calicoctl drops
//!   such fields from a user's document before it writes, as Calico's calicoctl does.

use serde_json::{Map, Value};

use super::{KindRef, ObjectId, ResourceError};

/// Prefix under which every Calico v3 resource is stored.
pub const RESOURCES_PREFIX: &str = "/calico/resources/v3/projectcalico.org/";

/// `/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>`.
pub fn resource_key(kind: &KindRef, id: &ObjectId) -> String {
    match &id.namespace {
        Some(ns) => format!("{RESOURCES_PREFIX}{}/{ns}/{}", kind.plural, id.name),
        None => format!("{RESOURCES_PREFIX}{}/{}", kind.plural, id.name),
    }
}

/// Prefix of every object of `kind`, or of the objects in one namespace.
pub fn resource_prefix(kind: &KindRef, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if kind.namespaced => format!("{RESOURCES_PREFIX}{}/{ns}/", kind.plural),
        _ => format!("{RESOURCES_PREFIX}{}/", kind.plural),
    }
}

/// The object identity encoded in a key under `resource_prefix(kind, None)`, if it is one.
pub fn id_from_key(kind: &KindRef, key: &str) -> Option<ObjectId> {
    let rest = key.strip_prefix(RESOURCES_PREFIX)?;
    let rest = rest.strip_prefix(kind.plural.as_str())?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let id = if kind.namespaced {
        let ns = parts.next()?;
        let name = parts.next()?;
        ObjectId::namespaced(ns, name)
    } else {
        ObjectId::global(parts.next()?)
    };
    if parts.next().is_some() || id.name.is_empty() {
        return None;
    }
    Some(id)
}

fn metadata(doc: &Value) -> Option<&Map<String, Value>> {
    doc.get("metadata")?.as_object()
}

fn metadata_mut(doc: &mut Value) -> &mut Map<String, Value> {
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let obj = doc.as_object_mut().expect("made an object above");
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made an object above")
}

/// A string field of `metadata`, treating "" as absent.
pub fn meta_str<'a>(doc: &'a Value, field: &str) -> Option<&'a str> {
    metadata(doc)?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
}

pub fn set_meta(doc: &mut Value, field: &str, value: Option<Value>) {
    let meta = metadata_mut(doc);
    match value {
        Some(v) => {
            meta.insert(field.to_owned(), v);
        }
        None => {
            meta.remove(field);
        }
    }
}

/// The identity of `doc` as an object of `kind`, checking `kind`, name and namespace.
pub fn identify(kind: &KindRef, doc: &Value) -> Result<ObjectId, ResourceError> {
    if !doc.is_object() {
        return Err(ResourceError::NotAnObject {
            kind: kind.kind.clone(),
        });
    }
    if let Some(k) = doc.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != kind.kind
    {
        return Err(ResourceError::WrongKind {
            expected: kind.kind.clone(),
            found: k.to_owned(),
        });
    }
    let name = meta_str(doc, "name").ok_or_else(|| ResourceError::MissingName {
        kind: kind.kind.clone(),
    })?;
    check_segment(kind, "metadata.name", name)?;
    let namespace = meta_str(doc, "namespace");
    match (kind.namespaced, namespace) {
        (true, Some(ns)) => {
            check_segment(kind, "metadata.namespace", ns)?;
            Ok(ObjectId::namespaced(ns, name))
        }
        (true, None) => Err(ResourceError::MissingNamespace {
            kind: kind.kind.clone(),
            name: name.to_owned(),
        }),
        (false, Some(ns)) => Err(ResourceError::UnexpectedNamespace {
            kind: kind.kind.clone(),
            name: name.to_owned(),
            namespace: ns.to_owned(),
        }),
        (false, None) => Ok(ObjectId::global(name)),
    }
}

/// A name or namespace becomes one key segment: it must not be able to escape it.
fn check_segment(kind: &KindRef, field: &'static str, value: &str) -> Result<(), ResourceError> {
    if value.contains('/') || value == "." || value == ".." || value.chars().any(char::is_control) {
        return Err(ResourceError::InvalidKeySegment {
            kind: kind.kind.clone(),
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// `metadata.resourceVersion` as an etcd revision, if present.
pub fn resource_version(
    kind: &KindRef,
    id: &ObjectId,
    doc: &Value,
) -> Result<Option<i64>, ResourceError> {
    match meta_str(doc, "resourceVersion") {
        None => Ok(None),
        Some(rv) => parse_resource_version(kind, id, rv).map(Some),
    }
}

pub fn parse_resource_version(
    kind: &KindRef,
    id: &ObjectId,
    rv: &str,
) -> Result<i64, ResourceError> {
    rv.parse::<i64>()
        .ok()
        .filter(|r| *r > 0)
        .ok_or_else(|| ResourceError::InvalidResourceVersion {
            kind: kind.kind.clone(),
            id: id.clone(),
            value: rv.to_owned(),
        })
}

/// The document as written on create: `apiVersion`/`kind` set, a fresh `uid` and
/// `creationTimestamp` (both server-assigned in Calico, overriding whatever the input said),
/// no `resourceVersion` (that is the etcd mod revision, never stored in the value).
pub fn prepare_create(kind: &KindRef, mut doc: Value, uid: &str, now: &str) -> Value {
    set_type_meta(kind, &mut doc);
    set_meta(&mut doc, "uid", Some(Value::String(uid.to_owned())));
    set_meta(
        &mut doc,
        "creationTimestamp",
        Some(Value::String(now.to_owned())),
    );
    set_meta(&mut doc, "resourceVersion", None);
    doc
}

/// The document as written on update: the new content, with the stored metadata except for
/// labels and annotations, which come from the new document (absent = removed). This is what
/// calicoctl does before every update so that server-managed metadata (uid, creation
/// timestamp) cannot be changed or lost by a replace, while labels are exactly the document's.
pub fn prepare_update(kind: &KindRef, stored: &Value, mut doc: Value) -> Value {
    set_type_meta(kind, &mut doc);
    let labels = metadata(&doc).and_then(|m| m.get("labels")).cloned();
    let annotations = metadata(&doc).and_then(|m| m.get("annotations")).cloned();
    let mut meta = metadata(stored).cloned().unwrap_or_default();
    for (field, value) in [("labels", labels), ("annotations", annotations)] {
        match value {
            Some(v) if !v.is_null() => {
                meta.insert(field.to_owned(), v);
            }
            _ => {
                meta.remove(field);
            }
        }
    }
    meta.remove("resourceVersion");
    doc.as_object_mut()
        .expect("set_type_meta made an object")
        .insert("metadata".into(), Value::Object(meta));
    doc
}

fn set_type_meta(kind: &KindRef, doc: &mut Value) {
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let obj = doc.as_object_mut().expect("made an object above");
    obj.insert(
        "apiVersion".into(),
        Value::String(calico_api::API_VERSION.into()),
    );
    obj.insert("kind".into(), Value::String(kind.kind.clone()));
}

/// The document as returned to callers: the stored value with `resourceVersion` = mod revision.
pub fn with_resource_version(mut doc: Value, mod_revision: i64) -> Value {
    set_meta(
        &mut doc,
        "resourceVersion",
        Some(Value::String(mod_revision.to_string())),
    );
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pools() -> KindRef {
        KindRef::new("IPPool", "ippools", false)
    }
    fn policies() -> KindRef {
        KindRef::new("NetworkPolicy", "networkpolicies", true)
    }

    #[test]
    fn keys_follow_calicos_layout() {
        assert_eq!(
            resource_key(&pools(), &ObjectId::global("pool-a")),
            "/calico/resources/v3/projectcalico.org/ippools/pool-a"
        );
        assert_eq!(
            resource_key(&policies(), &ObjectId::namespaced("ns1", "allow")),
            "/calico/resources/v3/projectcalico.org/networkpolicies/ns1/allow"
        );
        assert_eq!(
            resource_prefix(&policies(), Some("ns1")),
            "/calico/resources/v3/projectcalico.org/networkpolicies/ns1/"
        );
        assert_eq!(
            resource_prefix(&policies(), None),
            "/calico/resources/v3/projectcalico.org/networkpolicies/"
        );
    }

    #[test]
    fn keys_parse_back_to_identities() {
        let k = resource_key(&policies(), &ObjectId::namespaced("ns1", "allow"));
        assert_eq!(
            id_from_key(&policies(), &k),
            Some(ObjectId::namespaced("ns1", "allow"))
        );
        assert_eq!(id_from_key(&pools(), &k), None);
        assert_eq!(
            id_from_key(
                &policies(),
                "/calico/resources/v3/projectcalico.org/networkpolicies/ns1"
            ),
            None
        );
    }

    #[test]
    fn identify_checks_kind_name_and_namespace() {
        let doc = json!({"kind": "IPPool", "metadata": {"name": "p"}});
        assert_eq!(identify(&pools(), &doc).unwrap(), ObjectId::global("p"));
        let wrong = json!({"kind": "BGPPeer", "metadata": {"name": "p"}});
        assert!(matches!(
            identify(&pools(), &wrong),
            Err(ResourceError::WrongKind { .. })
        ));
        let nameless = json!({"metadata": {}});
        assert!(matches!(
            identify(&pools(), &nameless),
            Err(ResourceError::MissingName { .. })
        ));
        let ns = json!({"metadata": {"name": "p", "namespace": "x"}});
        assert!(matches!(
            identify(&pools(), &ns),
            Err(ResourceError::UnexpectedNamespace { .. })
        ));
        let no_ns = json!({"metadata": {"name": "p"}});
        assert!(matches!(
            identify(&policies(), &no_ns),
            Err(ResourceError::MissingNamespace { .. })
        ));
        let escape = json!({"metadata": {"name": "../x"}});
        assert!(matches!(
            identify(&pools(), &escape),
            Err(ResourceError::InvalidKeySegment {
                field: "metadata.name",
                ..
            })
        ));
    }

    #[test]
    fn create_sets_server_metadata_and_drops_resource_version() {
        let doc = json!({"metadata": {"name": "p", "uid": "user-set", "resourceVersion": "7"}, "spec": {"cidr": "10.0.0.0/24"}});
        let out = prepare_create(&pools(), doc, "u-1", "2026-01-01T00:00:00Z");
        assert_eq!(
            out,
            json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": "p", "uid": "u-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"cidr": "10.0.0.0/24"}
            })
        );
    }

    #[test]
    fn update_removes_labels_and_annotations_the_document_no_longer_has() {
        let stored = json!({"metadata": {"name": "h", "uid": "u-1", "creationTimestamp": "t0",
            "labels": {"role": "db", "zone": "a"}, "annotations": {"a": "1"}}, "spec": {}});
        let new = json!({"metadata": {"name": "h", "labels": {"zone": "a"}}, "spec": {}});
        let out = prepare_update(&pools(), &stored, new);
        assert_eq!(out["metadata"]["labels"], json!({"zone": "a"}));
        assert!(out["metadata"].get("annotations").is_none(), "{out}");
        let bare = json!({"metadata": {"name": "h"}, "spec": {}});
        let out = prepare_update(&pools(), &stored, bare);
        assert!(out["metadata"].get("labels").is_none(), "{out}");
        assert_eq!(out["metadata"]["uid"], "u-1");
    }

    #[test]
    fn update_keeps_stored_metadata_but_takes_new_labels_and_annotations() {
        let stored = json!({"metadata": {"name": "p", "uid": "u-1", "creationTimestamp": "t0",
            "labels": {"old": "1"}, "annotations": {"a": "1"}}, "spec": {"x": 1}});
        let new = json!({"metadata": {"name": "p", "uid": "forged", "labels": {"new": "2"},
            "resourceVersion": "9"}, "spec": {"x": 2}});
        let out = prepare_update(&pools(), &stored, new);
        assert_eq!(
            out,
            json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": "p", "uid": "u-1", "creationTimestamp": "t0", "labels": {"new": "2"}},
                "spec": {"x": 2}
            })
        );
    }

    #[test]
    fn resource_versions_must_be_positive_integers() {
        let id = ObjectId::global("p");
        assert_eq!(parse_resource_version(&pools(), &id, "42").unwrap(), 42);
        for bad in ["", "0", "-1", "abc", "1.5"] {
            assert!(parse_resource_version(&pools(), &id, bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?"
    }

    proptest! {
        #[test]
        fn keys_round_trip_to_identities(ns in segment(), name in segment(), namespaced: bool) {
            let kind = KindRef::new("K", "ks", namespaced);
            let id = if namespaced { ObjectId::namespaced(ns, name) } else { ObjectId::global(name) };
            let key = resource_key(&kind, &id);
            prop_assert!(key.starts_with(&resource_prefix(&kind, id.namespace.as_deref())));
            prop_assert_eq!(id_from_key(&kind, &key), Some(id));
        }

        #[test]
        fn a_namespace_prefix_never_matches_another_namespace(a in segment(), b in segment(), name in segment()) {
            prop_assume!(a != b);
            let kind = KindRef::new("K", "ks", true);
            let key = resource_key(&kind, &ObjectId::namespaced(b, name));
            prop_assert!(!key.starts_with(&resource_prefix(&kind, Some(&a))));
        }
    }
}
