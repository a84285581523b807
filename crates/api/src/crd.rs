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
    #[error("CRD for {kind}: no schema node at {pointer} (a FORMATS entry is stale)")]
    NoSuchField {
        kind: &'static str,
        pointer: &'static str,
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
                shape_root_schema(K::KIND, schema)?;
            }
        }
    }
    serde_json::from_value(crd).map_err(json_err)
}

/// The `format` of each field where Calico's CRDs have one: (kind, JSON pointer into the root
/// schema, format). Every other `format` is dropped (see [`shape_root_schema`]): Calico's Go
/// `int` and `float64` fields carry none, while schemars marks Rust's `i64` and `f64`.
/// `cidr` and `date-time` make the API server refuse a bad CIDR or time at apply time.
const FORMATS: &[(&str, &str, &str)] = &[
    (
        "BGPConfiguration",
        "/properties/spec/properties/prefixAdvertisements/items/properties/cidr",
        "cidr",
    ),
    (
        "BGPConfiguration",
        "/properties/spec/properties/serviceClusterIPs/items/properties/cidr",
        "cidr",
    ),
    (
        "BGPConfiguration",
        "/properties/spec/properties/serviceExternalIPs/items/properties/cidr",
        "cidr",
    ),
    (
        "BGPConfiguration",
        "/properties/spec/properties/serviceLoadBalancerIPs/items/properties/cidr",
        "cidr",
    ),
    (
        "BGPFilter",
        "/properties/spec/properties/exportV4/items/properties/cidr",
        "cidr",
    ),
    (
        "BGPFilter",
        "/properties/spec/properties/exportV6/items/properties/cidr",
        "cidr",
    ),
    (
        "BGPFilter",
        "/properties/spec/properties/importV4/items/properties/cidr",
        "cidr",
    ),
    (
        "BGPFilter",
        "/properties/spec/properties/importV6/items/properties/cidr",
        "cidr",
    ),
    ("BlockAffinity", "/properties/spec/properties/cidr", "cidr"),
    (
        "CalicoNodeStatus",
        "/properties/status/properties/lastUpdated",
        "date-time",
    ),
    (
        "FelixConfiguration",
        "/properties/spec/properties/iptablesMarkMask",
        "int64",
    ),
    (
        "FelixConfiguration",
        "/properties/spec/properties/nftablesMarkMask",
        "int64",
    ),
    (
        "IPAMBlock",
        "/properties/spec/properties/affinityClaimTime",
        "date-time",
    ),
    (
        "IPAMBlock",
        "/properties/spec/properties/attributes/items/properties/releasedAt",
        "date-time",
    ),
    ("IPAMBlock", "/properties/spec/properties/cidr", "cidr"),
    (
        "IPAMBlock",
        "/properties/spec/properties/sequenceNumber",
        "int64",
    ),
    (
        "IPAMBlock",
        "/properties/spec/properties/sequenceNumberForAllocation/additionalProperties",
        "int64",
    ),
    ("IPPool", "/properties/spec/properties/cidr", "cidr"),
    (
        "IPPool",
        "/properties/status/properties/conditions/items/properties/lastTransitionTime",
        "date-time",
    ),
    (
        "IPPool",
        "/properties/status/properties/conditions/items/properties/observedGeneration",
        "int64",
    ),
    (
        "IPReservation",
        "/properties/spec/properties/reservedCIDRs/items",
        "cidr",
    ),
    (
        "Tier",
        "/properties/status/properties/conditions/items/properties/lastTransitionTime",
        "date-time",
    ),
    (
        "Tier",
        "/properties/status/properties/conditions/items/properties/observedGeneration",
        "int64",
    ),
];

/// Fields Calico publishes as `nullable`: (kind, JSON pointer into the root schema).
const NULLABLE_FIELDS: &[(&str, &str)] = &[(
    "CalicoNodeStatus",
    "/properties/status/properties/lastUpdated",
)];

fn shape_root_schema(kind: &'static str, schema: &mut Value) -> Result<(), CrdError> {
    strip_nullable(schema);
    for (_, pointer) in NULLABLE_FIELDS.iter().filter(|(k, _)| *k == kind) {
        if let Some(Value::Object(field)) = schema.pointer_mut(pointer) {
            field.insert("nullable".into(), Value::Bool(true));
        }
    }
    strip_number_formats(schema);
    for (_, pointer, format) in FORMATS.iter().filter(|(k, _, _)| *k == kind) {
        let Some(Value::Object(field)) = schema.pointer_mut(pointer) else {
            return Err(CrdError::NoSuchField { kind, pointer });
        };
        field.insert("format".into(), Value::String((*format).into()));
    }
    let Some(obj) = schema.as_object_mut() else {
        return Ok(());
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
    Ok(())
}

/// Drops schemars' `int64` and `double` formats (Rust `i64`/`f64`), which Calico's CRDs do not
/// have for Go `int` and `float64`; [`FORMATS`] puts back the ones Calico has.
fn strip_number_formats(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if matches!(
                map.get("format").and_then(Value::as_str),
                Some("int64" | "double")
            ) {
                map.remove("format");
            }
            map.values_mut().for_each(strip_number_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_number_formats),
        _ => {}
    }
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
///
/// Kubernetes reads YAML with YAML 1.1 rules (sigs.k8s.io/yaml, go-yaml v2 semantics), where
/// plain `Off`, `yes` or `n` are booleans; serde_yaml_ng writes YAML 1.2 and leaves them plain.
/// [`quote_yaml11_ambiguous`] quotes every such scalar so both readers see the same strings.
pub fn crd_yaml<K: CustomResourceExt + crate::CalicoResource>() -> Result<String, CrdError> {
    let crd = crd_for::<K>()?;
    let text = serde_yaml_ng::to_string(&crd).map_err(|source| CrdError::Yaml {
        kind: K::KIND,
        source,
    })?;
    Ok(quote_yaml11_ambiguous(&text))
}

/// Whether a plain (unquoted) YAML scalar would be read as something other than a string by a
/// YAML 1.1 reader (go-yaml v2, which Kubernetes uses; PyYAML): the 1.1 booleans
/// (`y`/`n`/`yes`/`no`/`on`/`off` in their spellings), null, and 1.1-only number forms
/// (`0b1`, `0777`, `1_000`, `1:30`, `.5`). A superset is harmless: it only adds quotes.
pub fn yaml11_ambiguous(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "~", "null", "Null", "NULL", "",
        "<<", "=", ".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", "+.inf", "+.Inf", "+.INF",
        ".nan", ".NaN", ".NAN",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    // Numbers: an optional sign, then digits with `_`, `:`, `.`, exponent or a 0b/0x prefix.
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let Some(first) = body.chars().next() else {
        return false;
    };
    if !(first.is_ascii_digit() || first == '.') {
        return false;
    }
    if let Some(hex) = body.strip_prefix("0x") {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit() || c == '_');
    }
    if let Some(bin) = body.strip_prefix("0b") {
        return !bin.is_empty() && bin.chars().all(|c| matches!(c, '0' | '1' | '_'));
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
    });
    exponent_ok
        && mantissa.chars().any(|c| c.is_ascii_digit())
        && mantissa.chars().filter(|c| *c == '.').count() <= 1
        && mantissa
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '_' | ':' | '.'))
}

/// Quotes (`"…"`) every plain scalar in serde_yaml_ng's block-style output that a YAML 1.1
/// reader would not read as a string (see [`yaml11_ambiguous`]): values after `key: ` or
/// `- `, and keys. Block scalars (`|-` and friends) are text and left alone.
pub fn quote_yaml11_ambiguous(text: &str) -> String {
    fn quote(s: &str) -> String {
        // Only strings: a plain `true` or `3` that YAML 1.2 already reads as a boolean or a
        // number is a typed value and reads the same in YAML 1.1.
        let string_in_yaml12 = matches!(
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(s),
            Ok(serde_yaml_ng::Value::String(_))
        );
        if string_in_yaml12 && yaml11_ambiguous(s) {
            format!("\"{s}\"")
        } else {
            s.to_string()
        }
    }
    let mut out = String::with_capacity(text.len() + 16);
    // Indentation of the line that opened a block scalar: deeper lines are its content.
    let mut block_indent: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches('\n');
        let indent = content.len() - content.trim_start_matches(' ').len();
        if content.trim().is_empty() {
            out.push_str(line);
            continue;
        }
        if let Some(base) = block_indent {
            if content.trim().is_empty() || indent > base {
                out.push_str(line);
                continue;
            }
            block_indent = None;
        }
        let mut rest = &content[indent..];
        let mut rebuilt = " ".repeat(indent);
        while let Some(r) = rest.strip_prefix("- ") {
            rebuilt.push_str("- ");
            rest = r;
        }
        let plain = |s: &str| !s.starts_with(['"', '\'', '|', '>', '{', '[', '&', '*', '!']);
        let value = match rest.split_once(": ") {
            Some((key, value)) if plain(key) => {
                rebuilt.push_str(&quote(key));
                rebuilt.push_str(": ");
                value
            }
            Some((key, value)) => {
                rebuilt.push_str(key);
                rebuilt.push_str(": ");
                value
            }
            None => match rest.strip_suffix(':') {
                Some(key) if plain(key) => {
                    rebuilt.push_str(&quote(key));
                    rebuilt.push(':');
                    ""
                }
                _ => rest,
            },
        };
        if value.starts_with(['|', '>']) {
            block_indent = Some(indent);
            rebuilt.push_str(value);
        } else if plain(value) && !(value.is_empty() && rest.ends_with(':')) {
            rebuilt.push_str(&quote(value));
        } else {
            rebuilt.push_str(value);
        }
        out.push_str(&rebuilt);
        out.push_str(&line[content.len()..]);
    }
    out
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

/// Every CRD of [`all_crds`] as the object the Rust types produce (before any YAML), in the
/// same order: what Kubernetes must read back from the files.
pub fn all_crd_objects() -> Result<Vec<CustomResourceDefinition>, CrdError> {
    macro_rules! objects {
        ($($ty:ident { kind: $_k:literal, plural: $_p:literal, namespaced: $_n:literal, crd: $crd:tt, $($_rest:tt)* })*) => {
            vec![$(crd_object!($ty, $crd)),*]
        };
    }
    // Kinds without a published CRD give `None`.
    macro_rules! crd_object {
        ($ty:ident, true) => {
            Some(crd_for::<$ty>())
        };
        ($ty:ident, false) => {
            None
        };
    }
    every_kind!(objects).into_iter().flatten().collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml11_booleans_nulls_and_numbers_are_ambiguous() {
        for s in [
            "Off", "on", "YES", "n", "Y", "~", "null", "0b101", "0777", "1_000", "1:30", ".5",
            "-1.5e3", "0x1F", ".inf",
        ] {
            assert!(yaml11_ambiguous(s), "{s}");
        }
        for s in [
            "Debug",
            "Offline",
            "none",
            "1.2.3",
            "10.0.0.0/8",
            "v3",
            "-",
            "e5",
            "1e",
            "Never",
        ] {
            assert!(!yaml11_ambiguous(s), "{s}");
        }
    }

    #[test]
    fn quoting_covers_values_list_items_and_keys_but_not_block_text() {
        let text = "a:\n  enum:\n  - Off\n  - Debug\n  default: yes\n  on: x\n  \
                    description: |-\n    Off\n    no: 1\n  b: []\n- n\n";
        assert_eq!(
            quote_yaml11_ambiguous(text),
            "a:\n  enum:\n  - \"Off\"\n  - Debug\n  default: \"yes\"\n  \"on\": x\n  \
             description: |-\n    Off\n    no: 1\n  b: []\n- \"n\"\n"
        );
    }

    #[test]
    fn felixconfiguration_crd_quotes_off() {
        let text = crd_yaml::<FelixConfiguration>().unwrap();
        assert!(text.contains("- \"Off\"\n"), "bpfConntrackLogLevel enum");
        assert!(!text.lines().any(|l| l.trim_end().ends_with("- Off")));
    }
}
