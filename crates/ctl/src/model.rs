//! [`ResourceModel`] backed by `calico-api`: each document is decoded strictly as its typed
//! kind (unknown fields, wrong types and bad enum values are refused with the path of the
//! offending field), Calico's defaults are applied (e.g. IPPool blockSize 26/122, policy
//! tier `default`), Calico's validation rules run, and the result is re-encoded, so what is
//! stored is exactly what the typed model understands.

use calico_api::DecodeError;
use serde_json::Value;

use crate::kinds::KindInfo;
use crate::validate::{FieldIssue, ResourceModel};

/// Checks resources with the typed model of `calico-api`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ApiModel;

/// The reason part of a decode error (its `Display` is `path: reason`).
fn decode_issue(e: &DecodeError) -> FieldIssue {
    let path = e.path().to_string();
    let reason = match e {
        DecodeError::UnknownField { .. } => {
            "field in document is not recognized or is in the wrong location".to_string()
        }
        DecodeError::MissingField { .. } => "required".to_string(),
        DecodeError::Invalid { reason, .. } => {
            // serde reports a missing field at its parent; name the field itself.
            if let Some(field) = reason
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                let full = if path.is_empty() {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
                return FieldIssue::new(full, "required");
            }
            reason.clone()
        }
        other => {
            let text = other.to_string();
            text.strip_prefix(&format!("{path}: "))
                .map_or(text.clone(), str::to_string)
        }
    };
    FieldIssue::new(
        if path.is_empty() {
            "(document)".to_string()
        } else {
            path
        },
        reason,
    )
}

impl ResourceModel for ApiModel {
    fn prepare(&self, kind: &'static KindInfo, value: Value) -> Result<Value, Vec<FieldIssue>> {
        let mut resource = calico_api::from_value(value).map_err(|e| vec![decode_issue(&e)])?;
        if resource.kind() != kind.kind {
            return Err(vec![FieldIssue::new(
                "kind",
                format!("decoded as {} instead of {}", resource.kind(), kind.kind),
            )]);
        }
        resource.set_defaults();
        resource.validate().map_err(|errs| {
            errs.errors
                .into_iter()
                .map(|e| FieldIssue::new(e.path, e.reason))
                .collect::<Vec<_>>()
        })?;
        resource
            .to_value()
            .map_err(|e| vec![FieldIssue::new("(document)", e.to_string())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds;
    use serde_json::json;

    fn pool(spec: Value) -> Value {
        json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn every_calicoctl_kind_is_known_to_the_typed_model() {
        for k in kinds::KINDS {
            let v = json!({"apiVersion": "projectcalico.org/v3", "kind": k.kind, "metadata": {"name": "x"}});
            if let Err(issues) = ApiModel.prepare(k, v) {
                assert!(
                    issues.iter().all(|i| i.path != "kind"),
                    "{}: {issues:?}",
                    k.kind
                );
            }
        }
    }

    #[test]
    fn unknown_fields_and_bad_enum_values_name_the_field() {
        let kind = kinds::by_kind("IPPool").unwrap();
        let issues = ApiModel
            .prepare(
                kind,
                pool(json!({"cidr": "10.0.0.0/16", "natOutgoin": true})),
            )
            .unwrap_err();
        assert_eq!(issues[0].path, "spec.natOutgoin");
        let issues = ApiModel
            .prepare(
                kind,
                pool(json!({"cidr": "10.0.0.0/16", "ipipMode": "Sometimes"})),
            )
            .unwrap_err();
        assert_eq!(issues[0].path, "spec.ipipMode");
    }

    #[test]
    fn valid_pool_gets_calico_defaults() {
        let kind = kinds::by_kind("IPPool").unwrap();
        let v = ApiModel
            .prepare(
                kind,
                pool(json!({"cidr": "10.0.0.0/16", "natOutgoing": true})),
            )
            .unwrap();
        assert_eq!(v["spec"]["cidr"], "10.0.0.0/16");
        assert_eq!(v["spec"]["natOutgoing"], true);
        assert_eq!(v["spec"]["blockSize"], 26);
    }
}
