//! Metadata rules for writes and the JSON merge patch used by `calicoctl patch`.

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch: objects merge key by key, `null` removes a key, anything
/// else replaces the target.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Metadata of a new object: only name, namespace, labels and annotations come from the
/// user (as calicoctl does); uid and creationTimestamp are set here.
pub fn for_create(mut value: Value, uid: &str, now_rfc3339: &str) -> Value {
    let old = value
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut meta = Map::new();
    for k in ["name", "namespace", "labels", "annotations"] {
        if let Some(v) = old.get(k)
            && !v.is_null()
        {
            meta.insert(k.into(), v.clone());
        }
    }
    meta.insert("uid".into(), Value::String(uid.into()));
    meta.insert(
        "creationTimestamp".into(),
        Value::String(now_rfc3339.into()),
    );
    if let Some(obj) = value.as_object_mut() {
        obj.insert("metadata".into(), Value::Object(meta));
    }
    value
}

/// Metadata of an updated object, as calicoctl's apply and replace do it: everything from
/// the stored object, except that labels and annotations given in the update are added to
/// (and override) the stored ones. Labels are never removed this way; `calicoctl label
/// --remove` does that.
pub fn for_update(stored: &Value, mut update: Value) -> Value {
    let mut meta = stored
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let new_meta = update
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for k in ["labels", "annotations"] {
        if let Some(Value::Object(add)) = new_meta.get(k) {
            let entry = meta
                .entry(k.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(m) = entry {
                for (lk, lv) in add {
                    m.insert(lk.clone(), lv.clone());
                }
            }
        }
    }
    meta.remove("resourceVersion");
    if let Some(obj) = update.as_object_mut() {
        obj.insert("metadata".into(), Value::Object(meta));
    }
    update
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386_examples() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
        let mut t = json!({"a": "b"});
        merge_patch(&mut t, &json!({"b": {"c": 1}}));
        assert_eq!(t, json!({"a": "b", "b": {"c": 1}}));
    }

    #[test]
    fn create_keeps_only_user_owned_metadata() {
        let v = json!({"metadata": {"name": "a", "labels": {"x": "1"}, "resourceVersion": "9", "uid": "old"}});
        let out = for_create(v, "u-1", "2026-01-01T00:00:00Z");
        assert_eq!(
            out["metadata"],
            json!({"name": "a", "labels": {"x": "1"}, "uid": "u-1", "creationTimestamp": "2026-01-01T00:00:00Z"})
        );
    }

    #[test]
    fn update_keeps_stored_identity_and_adds_labels() {
        let stored = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "y": "2"}, "resourceVersion": "4"}});
        let upd = json!({"metadata": {"name": "a", "uid": "forged", "labels": {"x": "9"}}, "spec": {"k": 1}});
        let out = for_update(&stored, upd);
        assert_eq!(out["metadata"]["uid"], "u");
        assert_eq!(out["metadata"]["labels"], json!({"x": "9", "y": "2"}));
        assert!(out["metadata"].get("resourceVersion").is_none());
        assert_eq!(out["spec"]["k"], 1);
    }
}
