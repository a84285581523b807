//! Dynamic handling of every kind: names users type, and decoding a JSON/YAML document into
//! the right typed resource with strict field checking.

use serde_json::Value;

use crate::kinds::*;
use crate::{API_VERSION, CalicoResource, ObjectMeta};

/// Names and scope of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    /// Further names accepted on the command line (Calico's short names and aliases).
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Whether objects carry a `status`.
    pub has_status: bool,
}

/// Why a document could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("a resource must be a mapping, found {found}")]
    NotAMapping { found: &'static str },
    #[error("{field}: required field is missing")]
    MissingField { field: &'static str },
    #[error("apiVersion: {found:?} is not supported, expected {API_VERSION:?}")]
    BadApiVersion { found: String },
    #[error("kind: {found:?} is not a Calico resource kind")]
    UnknownKind { found: String },
    #[error("kind: expected {expected:?}, found {found:?}")]
    WrongKind {
        expected: &'static str,
        found: String,
    },
    #[error("{path}: unknown field")]
    UnknownField { path: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl DecodeError {
    /// Field path the error is about (`spec.blockSize`), empty for the whole document.
    pub fn path(&self) -> &str {
        match self {
            DecodeError::NotAMapping { .. } => "",
            DecodeError::MissingField { field } => field,
            DecodeError::BadApiVersion { .. } => "apiVersion",
            DecodeError::UnknownKind { .. } | DecodeError::WrongKind { .. } => "kind",
            DecodeError::UnknownField { path } | DecodeError::Invalid { path, .. } => path,
        }
    }
}

/// Fields of Kubernetes' ObjectMeta (which ignores unknown fields when decoding, so they are
/// checked here).
const OBJECT_META_FIELDS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

macro_rules! registry {
    ($($ty:ident { kind: $_kind:literal, plural: $_plural:literal, namespaced: $_ns:literal, crd: $_crd:literal, singular: $singular:literal, status: $status:literal, short: [$($short:literal),*] })*) => {
        /// Any Calico resource, for code that handles kinds dynamically.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum AnyResource {
            $($ty($ty),)*
        }

        /// Every kind, in alphabetical order.
        pub static KINDS: &[KindInfo] = &[
            $(KindInfo {
                kind: <$ty as CalicoResource>::KIND,
                plural: <$ty as CalicoResource>::PLURAL,
                singular: $singular,
                short_names: &[$($short),*],
                namespaced: <$ty as CalicoResource>::NAMESPACED,
                has_status: $status,
            },)*
        ];

        impl AnyResource {
            pub fn kind(&self) -> &'static str {
                match self { $(AnyResource::$ty(_) => <$ty as CalicoResource>::KIND,)* }
            }
            /// `metadata.name`, empty when unset.
            pub fn name(&self) -> &str {
                self.meta().name.as_deref().unwrap_or_default()
            }
            /// `metadata.namespace` of a namespaced kind.
            pub fn namespace(&self) -> Option<&str> {
                self.meta().namespace.as_deref()
            }
            /// Names and scope of this resource's kind.
            pub fn kind_info(&self) -> &'static KindInfo {
                lookup_exact(self.kind()).expect("every kind is registered")
            }
            pub fn meta(&self) -> &ObjectMeta {
                match self { $(AnyResource::$ty(r) => r.meta(),)* }
            }
            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self { $(AnyResource::$ty(r) => r.meta_mut(),)* }
            }
            /// JSON form with `apiVersion` and `kind`.
            pub fn to_value(&self) -> Result<Value, serde_json::Error> {
                match self { $(AnyResource::$ty(r) => serde_json::to_value(r),)* }
            }
            /// Fills in the fields Calico defaults (see [`crate::Defaults`]).
            pub fn set_defaults(&mut self) {
                match self { $(AnyResource::$ty(r) => crate::Defaults::default(r),)* }
            }
            /// Calico's validation rules (see [`crate::Validate`]).
            pub fn validate(&self) -> Result<(), crate::ValidationErrors> {
                match self { $(AnyResource::$ty(r) => crate::Validate::validate(r),)* }
            }
        }

        $(impl From<$ty> for AnyResource {
            fn from(r: $ty) -> Self { AnyResource::$ty(r) }
        })*

        fn decode_kind(kind: &str, value: Value) -> Result<AnyResource, DecodeError> {
            match kind {
                $(k if k == <$ty as CalicoResource>::KIND => decode::<$ty>(value).map(AnyResource::$ty),)*
                other => Err(DecodeError::UnknownKind { found: other.to_string() }),
            }
        }
    };
}

every_kind!(registry);

/// Finds a kind by any name users type: kind, singular, plural or short name,
/// case-insensitively (`IPPool`, `ippools`, `gnp`, `BGPP`).
pub fn lookup_kind(name: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| {
        k.kind.eq_ignore_ascii_case(name)
            || k.plural.eq_ignore_ascii_case(name)
            || k.singular.eq_ignore_ascii_case(name)
            || k.short_names.iter().any(|s| s.eq_ignore_ascii_case(name))
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Decodes one document into the typed resource its `kind` names.
///
/// Rejects a missing or foreign `apiVersion`, unknown kinds, and unknown fields anywhere
/// (the error names the field path, e.g. `spec.ingress[0].source.nots`). A missing `spec`
/// reads as an empty one, as calicoctl does.
pub fn from_value(value: Value) -> Result<AnyResource, DecodeError> {
    let Value::Object(map) = &value else {
        return Err(DecodeError::NotAMapping {
            found: type_name(&value),
        });
    };
    match map.get("apiVersion") {
        None => {
            return Err(DecodeError::MissingField {
                field: "apiVersion",
            });
        }
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => {
            let found = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_string);
            return Err(DecodeError::BadApiVersion { found });
        }
    }
    let kind = match map.get("kind") {
        None => return Err(DecodeError::MissingField { field: "kind" }),
        Some(Value::String(k)) => k.clone(),
        Some(other) => {
            return Err(DecodeError::UnknownKind {
                found: other.to_string(),
            });
        }
    };
    decode_kind(&kind, value)
}

/// Decodes a document that is either one resource or a list (`kind: List` or `<Kind>List`
/// with `items`), returning the resources in order.
pub fn from_value_list(value: Value) -> Result<Vec<AnyResource>, (usize, DecodeError)> {
    let is_list = value.get("kind").and_then(Value::as_str).is_some_and(|k| {
        k == "List"
            || k.strip_suffix("List")
                .is_some_and(|b| lookup_exact(b).is_some())
    });
    if !is_list {
        return from_value(value).map(|r| vec![r]).map_err(|e| (0, e));
    }
    let items = match value.get("items") {
        Some(Value::Array(items)) => items.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(other) => {
            return Err((
                0,
                DecodeError::Invalid {
                    path: "items".into(),
                    reason: format!("expected a list, found {}", type_name(other)),
                },
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            from_value(item).map_err(|e| {
                let path = format!(
                    "items[{i}]{}{}",
                    if e.path().is_empty() { "" } else { "." },
                    e.path()
                );
                (
                    i,
                    DecodeError::Invalid {
                        path,
                        reason: e.to_string(),
                    },
                )
            })
        })
        .collect()
}

fn lookup_exact(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// Decodes into `T`, checking the top-level and `metadata` fields by hand (the derived
/// root type and ObjectMeta ignore unknown fields) and everything below through serde.
pub fn decode<T: CalicoResource>(mut value: Value) -> Result<T, DecodeError> {
    let info = lookup_exact(T::KIND);
    let has_status = info.is_some_and(|i| i.has_status);
    if let Value::Object(map) = &mut value {
        if let Some(kind) = map.get("kind")
            && kind.as_str() != Some(T::KIND)
        {
            let found = kind
                .as_str()
                .map_or_else(|| kind.to_string(), str::to_string);
            return Err(DecodeError::WrongKind {
                expected: T::KIND,
                found,
            });
        }
        if let Some(v) = map.get("apiVersion")
            && v.as_str() != Some(API_VERSION)
        {
            let found = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            return Err(DecodeError::BadApiVersion { found });
        }
        for key in map.keys() {
            let known = matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "spec")
                || (key == "status" && has_status);
            if !known {
                return Err(DecodeError::UnknownField { path: key.clone() });
            }
        }
        match map.get("metadata") {
            None => return Err(DecodeError::MissingField { field: "metadata" }),
            Some(Value::Object(meta)) => {
                if let Some(key) = meta
                    .keys()
                    .find(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
                {
                    return Err(DecodeError::UnknownField {
                        path: format!("metadata.{key}"),
                    });
                }
            }
            Some(other) => {
                return Err(DecodeError::Invalid {
                    path: "metadata".into(),
                    reason: format!("expected a mapping, found {}", type_name(other)),
                });
            }
        }
        if matches!(map.get("spec"), None | Some(Value::Null)) {
            map.insert("spec".into(), Value::Object(Default::default()));
        }
        if matches!(map.get("status"), Some(Value::Null)) {
            map.remove("status");
        }
        // Label and annotation values are strings even when YAML read `1` or `true`.
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for key in ["labels", "annotations"] {
                if let Some(Value::Object(m)) = meta.get_mut(key) {
                    for v in m.values_mut() {
                        match v {
                            Value::Number(n) => *v = Value::String(n.to_string()),
                            Value::Bool(b) => *v = Value::String(b.to_string()),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    if let Some(schema) = crate::crd::schema(T::KIND) {
        crate::crd::normalize_document(&mut value, schema);
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_path_to_error's path already ends at the unknown field.
        if let Some(field) = inner
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            let path = if path == "." || path.is_empty() {
                field.to_string()
            } else if path.ends_with(field) {
                path
            } else {
                format!("{path}.{field}")
            };
            return DecodeError::UnknownField { path };
        }
        let path = if path == "." { String::new() } else { path };
        // serde reports a missing field at its parent; name the field itself.
        if let Some(field) = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            let path = if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            return DecodeError::Invalid {
                path,
                reason: "required field is missing".into(),
            };
        }
        DecodeError::Invalid {
            path,
            reason: inner,
        }
    })
}
