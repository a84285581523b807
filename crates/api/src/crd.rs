//! CustomResourceDefinitions generated from the Rust types.
//!
//! kube's derive produces the schema; [`crd_for`] then shapes it the way Calico publishes its
//! CRDs: no `nullable` markers (Calico omits absent fields instead of writing `null`), the
//! standard `apiVersion`/`kind`/`metadata` properties, and `metadata` and `spec` required.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::kinds::*;

/// Why a CRD could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("CRD for {kind} does not convert to JSON")]
    Json {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("CRD for {kind} does not convert to YAML")]
    Yaml {
        kind: &'static str,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

/// The CRD of kind `K`, shaped like Calico's published one.
pub fn crd_for<K: CustomResourceExt + crate::CalicoResource>()
-> Result<CustomResourceDefinition, CrdError> {
    let json_err = |source| CrdError::Json {
        kind: K::KIND,
        source,
    };
    let mut crd = serde_json::to_value(K::crd()).map_err(json_err)?;
    if let Some(names) = crd
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    {
        names.insert("listKind".into(), Value::String(format!("{}List", K::KIND)));
    }
    if let Some(versions) = crd
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    {
        for version in versions {
            if let Some(schema) = version.pointer_mut("/schema/openAPIV3Schema") {
                shape_root_schema(K::KIND, schema);
            }
        }
    }
    serde_json::from_value(crd).map_err(json_err)
}

/// Fields Calico publishes as `nullable`: (kind, JSON pointer into the root schema).
const NULLABLE_FIELDS: &[(&str, &str)] = &[(
    "CalicoNodeStatus",
    "/properties/status/properties/lastUpdated",
)];

fn shape_root_schema(kind: &str, schema: &mut Value) {
    strip_nullable(schema);
    for (_, pointer) in NULLABLE_FIELDS.iter().filter(|(k, _)| *k == kind) {
        if let Some(Value::Object(field)) = schema.pointer_mut(pointer) {
            field.insert("nullable".into(), Value::Bool(true));
        }
    }
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.remove("description");
    obj.remove("title");
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": "Versioned schema of this object: projectcalico.org/v3."}),
        );
        props.insert(
            "kind".into(),
            json!({"type": "string", "description": "The resource kind, in CamelCase."}),
        );
        props.insert("metadata".into(), json!({"type": "object"}));
    }
    obj.insert("required".into(), json!(["metadata", "spec"]));
}

/// Removes kube's `nullable: true` from optional fields: Calico omits absent fields instead of
/// writing `null`. Two cases keep it, as in Calico's CRDs: list items declared `Option`
/// (e.g. free slots in an IPAM block's allocations) and fields marked
/// listed in [`NULLABLE_FIELDS`] (timestamps Go writes as `null`). A list rather than a schema
/// marker because the CRD types of k8s-openapi drop unknown schema keys.
fn strip_nullable(v: &mut Value) {
    strip_nullable_in(v, false);
}

fn strip_nullable_in(v: &mut Value, is_items: bool) {
    match v {
        Value::Object(map) => {
            if !is_items {
                map.remove("nullable");
            }
            // kube leaves `null` among the values of an optional enum; Calico lists only
            // the real values.
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            for (key, child) in map.iter_mut() {
                strip_nullable_in(child, key == "items");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| strip_nullable_in(i, false)),
        _ => {}
    }
}

/// The CRD YAML text for `K`, as written to `crds/`.
pub fn crd_yaml<K: CustomResourceExt + crate::CalicoResource>() -> Result<String, CrdError> {
    let crd = crd_for::<K>()?;
    serde_yaml_ng::to_string(&crd).map_err(|source| CrdError::Yaml {
        kind: K::KIND,
        source,
    })
}

/// Every kind Calico publishes as a CRD: `(file name in crds/, YAML)`.
///
/// Node, WorkloadEndpoint and Profile have no CRD upstream (they are served by Calico's API
/// server or live only in etcd), so none is generated for them either.
pub fn all_crds() -> Result<Vec<(String, String)>, CrdError> {
    macro_rules! files {
        ($($ty:ident { kind: $_k:literal, plural: $_p:literal, namespaced: $_n:literal, crd: $crd:tt, $($_rest:tt)* })*) => {
            vec![$(crd_file!($ty, $crd)),*]
        };
    }
    // Kinds without a published CRD give `None`.
    macro_rules! crd_file {
        ($ty:ident, true) => {
            Some(crd_yaml::<$ty>().map(|yaml| {
                (
                    format!(
                        "projectcalico.org_{}.yaml",
                        <$ty as crate::CalicoResource>::PLURAL
                    ),
                    yaml,
                )
            }))
        };
        ($ty:ident, false) => {
            None
        };
    }
    every_kind!(files).into_iter().flatten().collect()
}

/// The OpenAPI schema (`openAPIV3Schema`) of a kind, built once per process. Also available
/// for Node, WorkloadEndpoint and Profile, which have no published CRD.
pub fn schema(kind: &str) -> Option<&'static Value> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static SCHEMAS: OnceLock<HashMap<&'static str, Value>> = OnceLock::new();
    fn one<K: CustomResourceExt + crate::CalicoResource>() -> Option<(&'static str, Value)> {
        let crd = serde_json::to_value(crd_for::<K>().ok()?).ok()?;
        let schema = crd
            .pointer("/spec/versions/0/schema/openAPIV3Schema")?
            .clone();
        Some((K::KIND, schema))
    }
    macro_rules! all {
        ($($ty:ident { $($_rest:tt)* })*) => { [$(one::<$ty>()),*].into_iter().flatten().collect() };
    }
    SCHEMAS.get_or_init(|| every_kind!(all)).get(kind)
}

/// Reads a document the way Calico's Go decoding does, guided by the kind's schema:
/// - YAML scalars that landed as numbers or booleans become strings where a string is
///   expected (`containerID: 1337`, `version: 1`); int-or-string fields keep their numbers;
/// - field names match case-insensitively (`loadbalancer` is `loadBalancer`), as Go's
///   `encoding/json` matches them;
/// - required booleans, integers and lists that are absent get Go's zero value (`false`, `0`,
///   `[]`), as Go leaves them; required strings stay missing and are reported.
pub fn normalize_document(value: &mut Value, schema: &Value) {
    let wants_string = schema.get("type").and_then(Value::as_str) == Some("string");
    match value {
        Value::Number(n) if wants_string => *value = Value::String(n.to_string()),
        Value::Bool(b) if wants_string => *value = Value::String(b.to_string()),
        Value::Object(map) => {
            if let Some(Value::Object(props)) = schema.get("properties") {
                let unknown: Vec<String> = map
                    .keys()
                    .filter(|k| !props.contains_key(k.as_str()))
                    .cloned()
                    .collect();
                for key in unknown {
                    let mut matches = props.keys().filter(|p| p.eq_ignore_ascii_case(&key));
                    if let (Some(prop), None) = (matches.next(), matches.next())
                        && !map.contains_key(prop.as_str())
                        && let Some(v) = map.remove(&key)
                    {
                        map.insert(prop.clone(), v);
                    }
                }
                if let Some(Value::Array(required)) = schema.get("required") {
                    for name in required.iter().filter_map(Value::as_str) {
                        if map.contains_key(name) {
                            continue;
                        }
                        let zero = match props
                            .get(name)
                            .and_then(|p| p.get("type"))
                            .and_then(Value::as_str)
                        {
                            Some("boolean") => Value::Bool(false),
                            Some("integer") => Value::from(0),
                            Some("array") => Value::Array(Vec::new()),
                            _ => continue,
                        };
                        map.insert(name.to_string(), zero);
                    }
                }
                for (name, prop) in props {
                    if let Some(child) = map.get_mut(name) {
                        normalize_document(child, prop);
                    }
                }
            }
            if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in map.values_mut() {
                    normalize_document(child, add);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                items
                    .iter_mut()
                    .for_each(|i| normalize_document(i, item_schema));
            }
        }
        _ => {}
    }
}
