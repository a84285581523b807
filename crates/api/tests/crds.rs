//! The CRDs in crds/ are generated from the Rust types and must match Calico's published CRDs
//! field for field, read as Kubernetes reads them: YAML 1.1 scalars (go-yaml v2 behind
//! sigs.k8s.io/yaml, where a plain `Off` is the boolean false), through
//! tests/support/yaml11.py.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Calico's published CRDs: `../shared/reference/calico-crds/v3` beside the checkout, or
/// `$CALICO_REFERENCE_DIR/calico-crds/v3` (a checkout elsewhere, e.g. a worktree).
fn reference_dir() -> PathBuf {
    let shared = std::env::var_os("CALICO_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/reference"));
    shared.join("calico-crds/v3")
}

/// Each YAML text read as Kubernetes reads it (tests/support/yaml11.py): its documents as JSON.
fn read_as_kubernetes(texts: &[&str]) -> Vec<Vec<Value>> {
    use std::io::Write;
    let script = workspace_root().join("tests/support/yaml11.py");
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/setup.sh installs it with PyYAML)");
    let input = serde_json::to_vec(texts).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("yaml11.py prints JSON")
}

/// What Kubernetes reads from each generated CRD is exactly what the Rust types produce: no
/// scalar changes type under YAML 1.1 (`Off` stays the string "Off").
#[test]
fn crds_read_by_kubernetes_are_what_the_rust_types_say() {
    let generated = calico_api::crd::all_crds().unwrap();
    let texts: Vec<&str> = generated.iter().map(|(_, t)| t.as_str()).collect();
    let read = read_as_kubernetes(&texts);
    let objects = calico_api::crd::all_crd_objects().unwrap();
    let mut differ = Vec::new();
    for (((name, _), docs), object) in generated.iter().zip(&read).zip(&objects) {
        let intended = serde_json::to_value(object).unwrap();
        if docs.as_slice() != std::slice::from_ref(&intended) {
            differ.push(name.clone());
        }
    }
    assert!(
        differ.is_empty(),
        "read with YAML 1.1 these CRDs differ from the Rust types: {differ:?}"
    );
    // The case that was broken: FelixConfiguration's bpfConntrackLogLevel enum.
    let felix = generated
        .iter()
        .position(|(n, _)| n == "projectcalico.org_felixconfigurations.yaml")
        .unwrap();
    let field = read[felix][0].pointer(
        "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/bpfConntrackLogLevel/enum",
    );
    assert_eq!(field, Some(&serde_json::json!(["Off", "Debug"])));
}

/// `UPDATE_CRDS=1 cargo test -p calico-api --test crds` rewrites crds/.
#[test]
fn crds_folder_matches_the_rust_types() {
    let dir = workspace_root().join("crds");
    let generated = calico_api::crd::all_crds().expect("CRDs generate");
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &generated {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    let mut stale = Vec::new();
    let expected: BTreeSet<&str> = generated.iter().map(|(n, _)| n.as_str()).collect();
    for (name, text) in &generated {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(on_disk) if &on_disk == text => {}
            Ok(_) => stale.push(format!("{name}: differs from the Rust types")),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("projectcalico.org_") && !expected.contains(name.as_str()) {
            stale.push(format!("{name}: no Rust type generates it"));
        }
    }
    assert!(
        stale.is_empty(),
        "crds/ is stale (regenerate with UPDATE_CRDS=1 cargo test -p calico-api --test crds):\n{}",
        stale.join("\n")
    );
}

/// What "field for field" compares at one schema node.
fn facts(node: &Value) -> BTreeMap<&'static str, Value> {
    let mut f = BTreeMap::new();
    let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let ty = if int_or_string {
        Value::String("int-or-string".into())
    } else {
        node.get("type").cloned().unwrap_or(Value::Null)
    };
    f.insert("type", ty);
    // Enum values, also when expressed as an intersection (allOf of enums).
    let enum_values = node.get("enum").cloned().or_else(|| {
        let all = node.get("allOf")?.as_array()?;
        let sets: Vec<&Vec<Value>> = all
            .iter()
            .filter_map(|s| s.get("enum")?.as_array())
            .collect();
        let last = sets.last()?;
        Some(Value::Array(
            last.iter()
                .filter(|v| sets.iter().all(|s| s.contains(v)))
                .cloned()
                .collect(),
        ))
    });
    if let Some(Value::Array(mut values)) = enum_values {
        values.sort_by_key(|v| v.to_string());
        f.insert("enum", Value::Array(values));
    }
    if let Some(Value::Array(req)) = node.get("required") {
        let mut req = req.clone();
        req.sort_by_key(|v| v.to_string());
        f.insert("required", Value::Array(req));
    }
    for key in [
        "format",
        "default",
        "nullable",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
    ] {
        if let Some(v) = node.get(key) {
            f.insert(key, v.clone());
        }
    }
    f
}

fn walk(node: &Value, path: String, out: &mut BTreeMap<String, BTreeMap<&'static str, Value>>) {
    out.insert(path.clone(), facts(node));
    if let Some(Value::Object(props)) = node.get("properties") {
        for (k, v) in props {
            walk(v, format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, format!("{path}[]"), out);
    }
    if let Some(add) = node.get("additionalProperties").filter(|a| a.is_object()) {
        walk(add, format!("{path}{{}}"), out);
    }
}

fn schema_facts(crd: &Value) -> BTreeMap<String, BTreeMap<&'static str, Value>> {
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut out = BTreeMap::new();
    for top in ["spec", "status"] {
        if let Some(node) = schema["properties"].get(top) {
            walk(node, top.to_string(), &mut out);
        }
    }
    out.insert(
        "<root>.required".into(),
        facts(schema)
            .into_iter()
            .filter(|(k, _)| *k == "required")
            .collect(),
    );
    out
}

fn crd_facts(crd: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let spec = &crd["spec"];
    out.insert("group".into(), spec["group"].clone());
    out.insert("scope".into(), spec["scope"].clone());
    for k in ["kind", "listKind", "plural", "singular"] {
        out.insert(format!("names.{k}"), spec["names"][k].clone());
    }
    let mut short = spec["names"]["shortNames"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    short.sort_by_key(|v| v.to_string());
    out.insert("names.shortNames".into(), Value::Array(short));
    let v = &spec["versions"][0];
    out.insert("version.name".into(), v["name"].clone());
    let cols: Vec<Value> = v["additionalPrinterColumns"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            serde_json::json!([
                c["name"],
                c["type"],
                c["jsonPath"],
                c.get("priority").cloned().unwrap_or(Value::Null)
            ])
        })
        .collect();
    out.insert("printerColumns".into(), Value::Array(cols));
    let status_sub = v.pointer("/subresources/status").is_some();
    out.insert("subresources.status".into(), Value::Bool(status_sub));
    out
}

#[test]
fn crds_match_calicos_published_crds_field_for_field() {
    let ref_dir = reference_dir();
    let generated = calico_api::crd::all_crds().unwrap();
    let texts: Vec<&str> = generated.iter().map(|(_, t)| t.as_str()).collect();
    let ours: BTreeMap<String, Value> = generated
        .iter()
        .zip(read_as_kubernetes(&texts))
        .map(|((n, _), mut docs)| (n.clone(), docs.remove(0)))
        .collect();
    let mut mismatches = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ref_dir)
        .unwrap_or_else(|e| panic!("reference CRDs at {}: {e}", ref_dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no reference CRDs in {}",
        ref_dir.display()
    );
    let reference_texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let refs: Vec<&str> = reference_texts.iter().map(String::as_str).collect();
    let references = read_as_kubernetes(&refs);
    for (file, mut docs) in files.iter().zip(references) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let reference: Value = docs.remove(0);
        let Some(mine) = ours.get(&name) else {
            mismatches.push(format!("{name}: we generate no such CRD"));
            continue;
        };
        let (rc, mc) = (crd_facts(&reference), crd_facts(mine));
        for (k, rv) in &rc {
            if mc.get(k) != Some(rv) {
                mismatches.push(format!(
                    "{name}: {k}: reference {rv}, ours {}",
                    mc.get(k).unwrap_or(&Value::Null)
                ));
            }
        }
        let (rs, ms) = (schema_facts(&reference), schema_facts(mine));
        for (path, rf) in &rs {
            match ms.get(path) {
                None => mismatches.push(format!("{name}: {path}: missing in ours")),
                Some(mf) => {
                    for (k, rv) in rf {
                        if mf.get(k) != Some(rv) {
                            mismatches.push(format!(
                                "{name}: {path}: {k}: reference {rv}, ours {}",
                                mf.get(k).unwrap_or(&Value::Null)
                            ));
                        }
                    }
                    for (k, mv) in mf {
                        if !rf.contains_key(k) {
                            mismatches.push(format!(
                                "{name}: {path}: {k}: reference has none, ours {mv}"
                            ));
                        }
                    }
                }
            }
        }
        for path in ms.keys() {
            if !rs.contains_key(path) {
                mismatches.push(format!("{name}: {path}: ours only"));
            }
        }
    }
    for m in &mismatches {
        eprintln!("{m}");
    }
    assert!(
        mismatches.is_empty(),
        "{} differences from Calico's CRDs (listed above)",
        mismatches.len()
    );
}

/// The generated CRDs are valid `apiextensions.k8s.io/v1` objects for current Kubernetes,
/// checked by `kubernetes-validate` (installed by scripts/setup.sh).
#[test]
fn crds_pass_kubernetes_validate() {
    let dir = workspace_root().join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let out = std::process::Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .output()
        .expect("kubernetes-validate runs (scripts/setup.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate failed:\n{text}");
    assert_eq!(text.matches(" passed ").count(), files.len(), "{text}");
}
