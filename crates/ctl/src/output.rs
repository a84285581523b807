//! `calicoctl get` output: `ps` / `wide` / `custom-columns=` tables laid out as Calico's
//! (Go tabwriter: minimum cell width 5, padding 3, every cell including the last padded,
//! a blank line after each table), and `yaml` / `json` with keys in sorted order.

use serde_json::{Map, Value};

use crate::kinds::{self, KindInfo, TableContext};

/// Output format chosen with `-o`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Ps,
    Wide,
    Yaml,
    Json,
    CustomColumns(Vec<String>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("unrecognized output format '{0}'")]
    Unknown(String),
    #[error("need to specify at least one column")]
    NoColumns,
    #[error("Unknown heading {heading}, valid values are: {valid}")]
    UnknownHeading { heading: String, valid: String },
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, FormatError> {
        match s {
            "ps" => Ok(Format::Ps),
            "wide" => Ok(Format::Wide),
            "yaml" | "yml" => Ok(Format::Yaml),
            "json" => Ok(Format::Json),
            _ => match s.split_once('=') {
                Some(("custom-columns", cols)) => {
                    let cols: Vec<String> = cols
                        .split(',')
                        .map(|c| c.trim().to_ascii_uppercase())
                        .filter(|c| !c.is_empty())
                        .collect();
                    if cols.is_empty() {
                        Err(FormatError::NoColumns)
                    } else {
                        Ok(Format::CustomColumns(cols))
                    }
                }
                None if s == "custom-columns" => Err(FormatError::NoColumns),
                _ => Err(FormatError::Unknown(s.to_string())),
            },
        }
    }
}

/// Headings for a table of `kind` in `format` (None for yaml/json).
pub fn headings(
    kind: &KindInfo,
    format: &Format,
    print_namespace: bool,
) -> Result<Vec<String>, FormatError> {
    let mut cols: Vec<String> = match format {
        Format::Ps => kind.headings.iter().map(|s| s.to_string()).collect(),
        Format::Wide => kind.wide_headings.iter().map(|s| s.to_string()).collect(),
        Format::CustomColumns(c) => {
            for h in c {
                if !kind.all_headings.contains(&h.as_str()) {
                    return Err(FormatError::UnknownHeading {
                        heading: h.clone(),
                        valid: kind.all_headings.join(", "),
                    });
                }
            }
            c.clone()
        }
        Format::Yaml | Format::Json => Vec::new(),
    };
    if print_namespace && kind.namespaced && !cols.iter().any(|c| c == "NAMESPACE") {
        cols.insert(0, "NAMESPACE".to_string());
    }
    Ok(cols)
}

/// One table: header row then one row per object, followed by a blank line.
pub fn table(kind: &KindInfo, cols: &[String], objects: &[Value], ctx: &TableContext) -> String {
    let mut rows: Vec<Vec<String>> = vec![cols.to_vec()];
    for o in objects {
        rows.push(
            cols.iter()
                .map(|c| kinds::column(kind, c, o, ctx).unwrap_or_default())
                .collect(),
        );
    }
    let mut out = tabwrite(&rows);
    out.push('\n');
    out
}

/// Go's `tabwriter.NewWriter(w, 5, 1, 3, ' ', 0)` for rows whose every cell ends in a tab.
pub fn tabwrite(rows: &[Vec<String>]) -> String {
    const MIN_WIDTH: usize = 5;
    const PADDING: usize = 3;
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncols)
        .map(|c| {
            let w = rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0);
            (w + PADDING).max(MIN_WIDTH)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, cell) in r.iter().enumerate() {
            out.push_str(cell);
            for _ in cell.chars().count()..widths[c] {
                out.push(' ');
            }
        }
        out.push('\n');
    }
    out
}

/// The same value with every object's keys in sorted order (Calico prints YAML and JSON
/// through Go structs marshalled via maps, which sorts keys).
pub fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// A `<Kind>List` document holding `items`.
pub fn list_document(list_kind: &str, items: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert(
        "apiVersion".into(),
        Value::String(calico_api::API_VERSION.into()),
    );
    m.insert("items".into(), Value::Array(items));
    m.insert("kind".into(), Value::String(list_kind.into()));
    m.insert("metadata".into(), Value::Object(Map::new()));
    Value::Object(m)
}

pub fn to_yaml(v: &Value) -> String {
    serde_yaml_ng::to_string(&sorted(v)).unwrap_or_default()
}

pub fn to_json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(&sorted(v)).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_pad_every_cell_like_go_tabwriter() {
        let kind = kinds::by_kind("GlobalNetworkPolicy").unwrap();
        let cols = headings(kind, &Format::Wide, false).unwrap();
        let out = table(kind, &cols, &[], &TableContext::default());
        assert_eq!(out, "NAME   ORDER   SELECTOR   \n\n");
    }

    #[test]
    fn ippool_wide_table_matches_calico_layout() {
        let kind = kinds::by_kind("IPPool").unwrap();
        let cols = headings(kind, &Format::Wide, false).unwrap();
        let pool = json!({"metadata": {"name": "default-ipv4-ippool"}, "spec": {"cidr": "192.168.0.0/16", "natOutgoing": true, "ipipMode": "Never", "vxlanMode": "Never", "nodeSelector": "all()"}});
        let out = table(kind, &cols, &[pool], &TableContext::default());
        let expected = "\
NAME                  CIDR             NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR   
default-ipv4-ippool   192.168.0.0/16   true   Never      Never       false      false              all()      

";
        assert_eq!(out, expected);
    }

    #[test]
    fn namespace_column_is_prepended_for_namespaced_kinds_only() {
        let np = kinds::by_kind("NetworkPolicy").unwrap();
        assert_eq!(
            headings(np, &Format::Ps, true).unwrap(),
            ["NAMESPACE", "NAME", "TIER"]
        );
        let pool = kinds::by_kind("IPPool").unwrap();
        assert_eq!(
            headings(pool, &Format::Ps, true).unwrap(),
            ["NAME", "CIDR", "SELECTOR"]
        );
    }

    #[test]
    fn custom_columns_reject_unknown_headings() {
        let pool = kinds::by_kind("IPPool").unwrap();
        let f = Format::parse("custom-columns=name,cidr").unwrap();
        assert_eq!(headings(pool, &f, false).unwrap(), ["NAME", "CIDR"]);
        let f = Format::parse("custom-columns=NAME,BOGUS").unwrap();
        assert!(matches!(
            headings(pool, &f, false),
            Err(FormatError::UnknownHeading { .. })
        ));
        assert_eq!(
            Format::parse("xml"),
            Err(FormatError::Unknown("xml".into()))
        );
        assert_eq!(
            Format::parse("custom-columns="),
            Err(FormatError::NoColumns)
        );
    }

    #[test]
    fn yaml_output_sorts_keys() {
        let v = json!({"spec": {"b": 1, "a": 2}, "kind": "IPPool", "apiVersion": "projectcalico.org/v3"});
        assert_eq!(
            to_yaml(&v),
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nspec:\n  a: 2\n  b: 1\n"
        );
    }
}
