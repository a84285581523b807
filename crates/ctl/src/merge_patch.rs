//! The JSON merge patch used by `calicoctl patch` (the metadata rules for writes are
//! calico-datastore's, in `calico_datastore::resource::meta`).

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch: objects merge key by key, `null` removes a key, anything
/// else replaces the target.
pub fn apply(target: &mut Value, patch: &Value) {
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
                        apply(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386_examples() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        apply(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        apply(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
        let mut t = json!({"a": "b"});
        apply(&mut t, &json!({"b": {"c": 1}}));
        assert_eq!(t, json!({"a": "b", "b": {"c": 1}}));
    }
}
