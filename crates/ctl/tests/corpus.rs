//! The document corpus (tests/corpus/<kind>/{valid,invalid}) against calicoctl and a real etcd.

mod common;

use std::path::{Path, PathBuf};

use common::{Ctl, Etcd, corpus, no_default_config_session, run_raw};

fn files(kind_dir: &Path, sub: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(kind_dir.join(sub))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.retain(|p| {
        matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
    });
    out.sort();
    out
}

fn kind_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// `# expect: DOC: PATH` lines of an invalid document.
fn expectations(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file).expect("read corpus file");
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .filter_map(|l| l.split_once(": "))
        .map(|(doc, path)| (doc.trim().to_string(), path.trim().to_string()))
        .collect()
}

#[test]
fn every_kind_has_valid_and_invalid_examples() {
    for k in calico_ctl::kinds::KINDS {
        let dir = corpus().join(k.kind.to_ascii_lowercase());
        assert!(
            !files(&dir, "valid").is_empty(),
            "no valid corpus for {}",
            k.kind
        );
        let invalid = files(&dir, "invalid");
        assert!(!invalid.is_empty(), "no invalid corpus for {}", k.kind);
        for f in invalid {
            assert!(
                !expectations(&f).is_empty(),
                "{} has no '# expect:' line",
                f.display()
            );
        }
    }
}

#[tokio::test]
async fn every_valid_document_passes_validate_offline() {
    let session = no_default_config_session();
    let mut failures = Vec::new();
    for dir in kind_dirs() {
        for f in files(&dir, "valid") {
            let file = f.display().to_string();
            let out = run_raw(
                vec![
                    "calicoctl".into(),
                    "validate".into(),
                    "-f".into(),
                    file.clone(),
                ],
                "",
                &[],
                &session,
            )
            .await;
            if out.code != 0 {
                failures.push(format!("{file}:\n{}", out.stderr));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "valid documents refused:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_invalid_document_is_refused_naming_the_field_and_nothing_is_written() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let mut failures = Vec::new();
    for dir in kind_dirs() {
        for f in files(&dir, "invalid") {
            let file = f.display().to_string();
            let before = etcd.revision().await;
            let out = ctl.run(&["apply", "-f", &file]).await;
            if out.code != 1 {
                failures.push(format!("{file}: accepted: {out:?}"));
                continue;
            }
            for (doc, path) in expectations(&f) {
                let located = format!("{file}: document {doc} ");
                let named = format!(": {path}: ");
                if !out
                    .stderr
                    .lines()
                    .any(|l| l.starts_with(&located) && l.contains(&named))
                {
                    failures.push(format!(
                        "{file}: expected a problem at document {doc}, field {path}; got:\n{}",
                        out.stderr
                    ));
                }
            }
            if etcd.revision().await != before {
                failures.push(format!(
                    "{file}: etcd changed although the file was refused"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(etcd.dump().await.is_empty(), "something was written");
}

#[tokio::test]
async fn crud_of_every_kind_from_the_valid_corpus() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let mut failures = Vec::new();
    for dir in kind_dirs() {
        let kind = calico_ctl::kinds::KINDS
            .iter()
            .find(|k| dir.ends_with(k.kind.to_ascii_lowercase()));
        for f in files(&dir, "valid") {
            let file = f.display().to_string();
            if kind.is_some_and(|k| k.read_only) {
                let out = ctl.run(&["apply", "-f", &file]).await;
                if out.code != 1 || !out.stderr.contains("resource is readonly") {
                    failures.push(format!("{file}: read-only kind was not refused: {out:?}"));
                }
                continue;
            }
            fn step(
                failures: &mut Vec<String>,
                file: &str,
                what: &str,
                out: common::Outcome,
            ) -> bool {
                if out.code != 0 {
                    failures.push(format!("{file}: {what} failed: {}", out.stderr));
                    false
                } else {
                    true
                }
            }
            if !step(
                &mut failures,
                &file,
                "create",
                ctl.run(&["create", "-f", &file]).await,
            ) {
                continue;
            }
            let stored = etcd.dump().await;
            let got = ctl.run(&["get", "-f", &file, "-o", "yaml"]).await;
            let yaml = got.stdout.clone();
            if !step(&mut failures, &file, "get", got) {
                continue;
            }
            // What get prints applies back without changing anything.
            let back = common::write(etcd.dir.path(), "back.yaml", &yaml);
            step(
                &mut failures,
                &file,
                "apply of get output",
                ctl.run(&["apply", "-f", &back]).await,
            );
            if etcd.dump().await != stored {
                failures.push(format!(
                    "{file}: applying get's output changed the datastore"
                ));
            }
            step(
                &mut failures,
                &file,
                "replace",
                ctl.run(&["replace", "-f", &file]).await,
            );
            step(
                &mut failures,
                &file,
                "get -o wide",
                ctl.run(&["get", "-f", &file, "-o", "wide"]).await,
            );
            step(
                &mut failures,
                &file,
                "delete",
                ctl.run(&["delete", "-f", &file]).await,
            );
            let left = etcd.dump().await;
            if !left.is_empty() {
                failures.push(format!("{file}: keys left after delete: {left:?}"));
                for (k, _) in left {
                    let _ = etcd.client().await.delete(k, None).await;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
