//! Reading resources from `-f FILE|DIR|-`: multi-document YAML, JSON (one value or a
//! stream of values), top-level arrays, and `List` / `<Kind>List` documents with `items`.
//!
//! Every resource keeps where it came from (file, document number, list item) so that
//! errors can name it precisely.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {document}: {reason}")]
    Parse {
        path: String,
        document: usize,
        reason: String,
    },
    #[error("No resources specified in file {path}")]
    EmptyFile { path: String },
    #[error("No resources specified in directory {path}")]
    EmptyDirectory { path: String },
}

/// Where one resource was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file as the user named it (`-` for stdin).
    pub file: String,
    /// 1-based document number within the file.
    pub document: usize,
    /// 0-based index when the document is a list.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = if self.file == "-" {
            "<stdin>"
        } else {
            &self.file
        };
        write!(f, "{file}: document {}", self.document)?;
        if let Some(i) = self.item {
            write!(f, " item {i}")?;
        }
        Ok(())
    }
}

/// One resource as written by the user, not yet checked.
#[derive(Debug, Clone)]
pub struct RawResource {
    pub origin: Origin,
    pub value: Value,
}

/// Files named by `-f`: the file itself, or the `.yaml`, `.yml` and `.json` files of a
/// directory in name order (recursively with `-R`).
pub fn expand_paths(path: &str, recursive: bool) -> Result<Vec<String>, LoadError> {
    if path == "-" {
        return Ok(vec![path.to_string()]);
    }
    let p = Path::new(path);
    if !p.is_dir() {
        return Ok(vec![path.to_string()]);
    }
    let mut out = Vec::new();
    collect_dir(p, recursive, &mut out)?;
    if out.is_empty() {
        return Err(LoadError::EmptyDirectory { path: path.into() });
    }
    Ok(out)
}

fn collect_dir(dir: &Path, recursive: bool, out: &mut Vec<String>) -> Result<(), LoadError> {
    let read_err = |source| LoadError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            if recursive {
                collect_dir(&entry, recursive, out)?;
            }
            continue;
        }
        let ext = entry.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "yaml" | "yml" | "json") {
            out.push(entry.display().to_string());
        }
    }
    Ok(())
}

/// Reads one file (or stdin for `-`) into resources.
pub fn load_file(path: &str, stdin: &mut dyn Read) -> Result<Vec<RawResource>, LoadError> {
    let mut text = String::new();
    let read = if path == "-" {
        stdin.read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|source| LoadError::Read {
        path: path.into(),
        source,
    })?;
    let resources = parse_text(path, &text)?;
    if resources.is_empty() {
        return Err(LoadError::EmptyFile { path: path.into() });
    }
    Ok(resources)
}

/// Splits text into documents and flattens lists.
pub fn parse_text(path: &str, text: &str) -> Result<Vec<RawResource>, LoadError> {
    let docs = if looks_like_json(path, text) {
        parse_json_stream(path, text)?
    } else {
        parse_yaml_stream(path, text)?
    };
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let document = i + 1;
        flatten(path, document, doc, &mut out);
    }
    Ok(out)
}

fn looks_like_json(path: &str, text: &str) -> bool {
    path.ends_with(".json") || text.trim_start().starts_with(['{', '['])
}

fn parse_json_stream(path: &str, text: &str) -> Result<Vec<Value>, LoadError> {
    let mut docs = Vec::new();
    for (i, v) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        docs.push(v.map_err(|e| LoadError::Parse {
            path: path.into(),
            document: i + 1,
            reason: e.to_string(),
        })?);
    }
    Ok(docs)
}

fn parse_yaml_stream(path: &str, text: &str) -> Result<Vec<Value>, LoadError> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = YamlValue::deserialize(de).map_err(|e| LoadError::Parse {
            path: path.into(),
            document: i + 1,
            reason: e.to_string(),
        })?;
        docs.push(v.0);
    }
    Ok(docs)
}

/// A JSON value read from YAML, where integers too large for 64 bits keep their digits as a
/// string (Calico's documented WorkloadEndpoint has a 25-digit `containerID`, which Go's
/// type-directed decoding reads into a string field; a float would lose the digits).
struct YamlValue(Value);

impl<'de> Deserialize<'de> for YamlValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(YamlValueVisitor).map(YamlValue)
    }
}

struct YamlValueVisitor;

impl<'de> serde::de::Visitor<'de> for YamlValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(u64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        YamlValue::deserialize(d).map(|v| v.0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(YamlValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some((k, YamlValue(v))) = map.next_entry::<YamlKey, YamlValue>()? {
            out.insert(k.0, v);
        }
        Ok(Value::Object(out))
    }
}

/// Mapping keys as strings (YAML allows `1: x` or `true: x`; JSON keys are strings).
struct YamlKey(String);

impl<'de> Deserialize<'de> for YamlKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match YamlValue::deserialize(d)?.0 {
            Value::String(s) => Ok(YamlKey(s)),
            other => Ok(YamlKey(other.to_string())),
        }
    }
}

/// A document may hold one resource, a list document (`kind: List` or `kind: IPPoolList`
/// with `items`), or a bare array of resources. Empty documents (only comments) are
/// skipped but still counted, so document numbers match what the user sees.
fn flatten(path: &str, document: usize, doc: Value, out: &mut Vec<RawResource>) {
    let origin = |item| Origin {
        file: path.to_string(),
        document,
        item,
    };
    match doc {
        Value::Null => {}
        Value::Array(items) => {
            for (i, v) in items.into_iter().enumerate() {
                out.push(RawResource {
                    origin: origin(Some(i)),
                    value: v,
                });
            }
        }
        Value::Object(ref map) if is_list_kind(map.get("kind")) => {
            let items = map
                .get("items")
                .cloned()
                .unwrap_or(Value::Array(Vec::new()));
            match items {
                Value::Array(items) => {
                    for (i, v) in items.into_iter().enumerate() {
                        out.push(RawResource {
                            origin: origin(Some(i)),
                            value: v,
                        });
                    }
                }
                other => out.push(RawResource {
                    origin: origin(None),
                    value: other,
                }),
            }
        }
        other => out.push(RawResource {
            origin: origin(None),
            value: other,
        }),
    }
}

fn is_list_kind(kind: Option<&Value>) -> bool {
    matches!(kind, Some(Value::String(k)) if k == "List" || k.ends_with("List"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_keeps_document_numbers_and_skips_empty_ones() {
        let text = "kind: IPPool\nmetadata: {name: a}\n---\n# only a comment\n---\nkind: IPPool\nmetadata: {name: b}\n";
        let r = parse_text("f.yaml", text).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].origin.document, 1);
        assert_eq!(r[1].origin.document, 3);
        assert_eq!(r[1].value["metadata"]["name"], "b");
    }

    #[test]
    fn list_documents_are_flattened_with_item_indexes() {
        let text = "apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- kind: IPPool\n  metadata: {name: a}\n- kind: IPPool\n  metadata: {name: b}\n";
        let r = parse_text("f.yaml", text).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].origin.item, Some(1));
        assert_eq!(r[1].origin.to_string(), "f.yaml: document 1 item 1");
    }

    #[test]
    fn json_streams_and_arrays_are_accepted() {
        let text = r#"{"kind":"IPPool","metadata":{"name":"a"}} [{"kind":"Tier","metadata":{"name":"t"}}]"#;
        let r = parse_text("f.json", text).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].value["kind"], "Tier");
        assert_eq!(r[1].origin.document, 2);
    }

    #[test]
    fn integers_beyond_64_bits_keep_their_digits() {
        let r = parse_text(
            "f.yaml",
            "spec:\n  containerID: 1337495556942031415926535\n  port: 80\n",
        )
        .unwrap();
        assert_eq!(
            r[0].value["spec"]["containerID"],
            "1337495556942031415926535"
        );
        assert_eq!(r[0].value["spec"]["port"], 80);
    }

    #[test]
    fn yaml_syntax_errors_name_the_document() {
        let err = parse_text("f.yaml", "kind: IPPool\n---\nkind: [unclosed\n").unwrap_err();
        assert!(err.to_string().starts_with("f.yaml: document 2: "), "{err}");
    }
}
