//! The resource commands: create / apply / replace / delete / get / patch / label / validate /
//! version. Writes are all-or-nothing: every document of every file is parsed, defaulted and
//! validated, then checked against the datastore, and only when nothing is wrong is everything
//! written in one batch through calico-datastore's batch writer ([`Objects::write`]), which
//! pins every object to the state these checks saw.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;

use calico_api::error_chain;
use serde_json::Value;

use crate::cli::{CreateArgs, DeleteArgs, FileArgs, GetArgs, LabelArgs, PatchArgs, Source};
use crate::document::{self, LoadError, Origin, RawResource};
use crate::kinds::{self, KindInfo, TableContext};
use crate::merge_patch;
use crate::objects::{Objects, ResourceKey, Stored};
use crate::output::{self, Format, FormatError};
use crate::session::{Io, Session, SessionError};
use crate::validate::{self, Depth, NamespaceFlags, Prepared, Problem};
use calico_datastore::{BatchItem, BatchOp, ResourceError as DatastoreError};

/// The write verbs, with the words calicoctl uses for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    Apply,
    Replace,
    Delete,
    Patch,
    Validate,
}

impl Verb {
    fn word(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Apply => "apply",
            Verb::Replace => "replace",
            Verb::Delete => "delete",
            Verb::Patch => "patch",
            Verb::Validate => "validate",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Verb::Create => "created",
            Verb::Apply => "applied",
            Verb::Replace => "replaced",
            Verb::Delete => "deleted",
            Verb::Patch => "patched",
            Verb::Validate => "validated",
        }
    }

    /// Operation name in Calico's "operation ... is not supported" errors.
    fn operation(self) -> &'static str {
        match self {
            Verb::Create => "create or apply",
            Verb::Apply => "apply",
            Verb::Replace | Verb::Patch => "apply or replace",
            Verb::Delete => "delete",
            Verb::Validate => "validate",
        }
    }
}

/// Why one resource could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("resource already exists: {0}")]
    AlreadyExists(String),
    #[error("resource does not exist: {0}")]
    DoesNotExist(String),
    #[error(
        "update conflict: {id}: resource version '{given}' is out of date (latest: {latest}). Update the resource YAML/JSON in order to make changes."
    )]
    OutOfDate { id: String, given: i64, latest: i64 },
    #[error("operation {operation} is not supported on {kind}: resource is readonly")]
    ReadOnly {
        operation: &'static str,
        kind: &'static str,
    },
    /// In etcd mode Calico keeps Kubernetes NetworkPolicies as `knp.default.*` Calico
    /// policies; only the Kubernetes side may change them.
    #[error(
        "operation {operation} is not supported on {id}: kubernetes network policies must be managed through the kubernetes API"
    )]
    KubernetesPolicy { operation: &'static str, id: String },
    /// The operator mirrors objects applied with kubectl into etcd and marks them; Kubernetes
    /// is their owner, so an edit here would be overwritten at the next resync.
    #[error(
        "operation {operation} is not supported on {id}: it is owned by Kubernetes (annotation {OWNER_ANNOTATION}=kubernetes); change it with kubectl"
    )]
    OwnedByKubernetes { operation: &'static str, id: String },
    #[error(
        "error with field Metadata.ResourceVersion = '{revision}' (field must not be set for a Create request)"
    )]
    VersionOnCreate { revision: i64 },
}

/// Every way a command fails; `Display` is what the user sees on stderr.
#[derive(Debug, thiserror::Error)]
pub enum ResourceCmdError {
    #[error("Failed to execute command: {0}")]
    Load(#[from] LoadError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{}", invalid_message(*verb, problems))]
    Invalid { verb: Verb, problems: Vec<Problem> },
    #[error("{}", failed_message(*verb, *single_kind, *total, errors))]
    Failed {
        verb: Verb,
        single_kind: Option<&'static str>,
        total: usize,
        errors: Vec<ResourceError>,
    },
    #[error("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    GetFailed { errors: Vec<ResourceError> },
    #[error("resource type '{0}' is not supported")]
    UnknownKind(String),
    #[error("{0}")]
    Format(#[from] FormatError),
    #[error("No resources specified")]
    NoResources,
    #[error("resource name may not be empty")]
    EmptyName,
    #[error("cannot use both --namespace and --all-namespaces flags at the same time")]
    BothNamespaceFlags,
    #[error("cannot use --all-namespace flag for getting a single resource")]
    AllNamespacesWithName,
    #[error("{0} is not namespaced")]
    NotNamespaced(&'static str),
    #[error("invalid label {0}")]
    InvalidLabel(String),
    #[error("failed to get {kind} {name}, error {source}")]
    LabelTarget {
        kind: String,
        name: String,
        source: ResourceError,
    },
    #[error(
        "failed to update label of {kind} {name}, key {key} is already present. please use '--overwrite' to set a new value."
    )]
    LabelPresent {
        kind: String,
        name: String,
        key: String,
    },
    #[error("cannot remove label of {kind} {name}, key {key} does not exist")]
    LabelAbsent {
        kind: String,
        name: String,
        key: String,
    },
    #[error(
        "failed to update {kind} {name}, label not changed: {}",
        error_chain(source.as_ref())
    )]
    LabelUpdate {
        kind: String,
        name: String,
        source: Box<DatastoreError>,
    },
    #[error("Failed to patch '{kind}' resource: patch is not a JSON or YAML object: {reason}")]
    BadPatch { kind: &'static str, reason: String },
}

impl From<DatastoreError> for ResourceCmdError {
    fn from(e: DatastoreError) -> Self {
        ResourceCmdError::Session(e.into())
    }
}

fn invalid_message(verb: Verb, problems: &[Problem]) -> String {
    let mut s = format!(
        "Failed to {} any resources: {} problem(s) found, nothing was written:",
        verb.word(),
        problems.len()
    );
    if verb == Verb::Validate {
        s = format!(
            "failed to validate any resources: {} problem(s) found:",
            problems.len()
        );
    }
    for p in problems {
        s.push('\n');
        s.push_str(&p.to_string());
    }
    s
}

fn failed_message(
    verb: Verb,
    single_kind: Option<&str>,
    total: usize,
    errors: &[ResourceError],
) -> String {
    if matches!(verb, Verb::Delete | Verb::Patch) {
        return errors
            .iter()
            .map(|e| match single_kind {
                Some(k) => format!("Failed to {} '{k}' resource: {e}", verb.word()),
                None => format!("Failed to {} resource: {e}", verb.word()),
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    let list = format!(
        "[{}]",
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    match (total, single_kind) {
        (1, Some(k)) => format!("Failed to {} '{k}' resource: {list}", verb.word()),
        (_, Some(k)) => format!("Failed to {} any '{k}' resources: {list}", verb.word()),
        _ => format!("Failed to {} any resources: {list}", verb.word()),
    }
}

fn success_message(verb: Verb, single_kind: Option<&str>, n: usize) -> String {
    match single_kind {
        Some(k) => format!("Successfully {} {n} '{k}' resource(s)", verb.past()),
        None => format!("Successfully {} {n} resource(s)", verb.past()),
    }
}

/// The one kind every resource has, if they share one.
fn single_kind<'a>(kinds: impl Iterator<Item = &'a KindInfo>) -> Option<&'static str> {
    let mut found: Option<&'static str> = None;
    for k in kinds {
        match found {
            None => found = Some(kinds::by_kind(k.kind).map_or("", |k| k.kind)),
            Some(f) if f != k.kind => return None,
            _ => {}
        }
    }
    found
}

/// Reads every file named by `-f` (directories expanded).
fn load_sources(
    source: &Source,
    stdin: &mut dyn Read,
) -> Result<Vec<RawResource>, ResourceCmdError> {
    let Some(path) = &source.filename else {
        return Err(ResourceCmdError::NoResources);
    };
    let mut out = Vec::new();
    for file in document::expand_paths(path, source.recursive)? {
        match document::load_file(&file, stdin) {
            Ok(mut r) => out.append(&mut r),
            Err(LoadError::EmptyFile { .. }) if source.skip_empty => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn ns_flags(namespace: &Option<String>) -> NamespaceFlags {
    NamespaceFlags {
        namespace: namespace.clone().filter(|n| !n.is_empty()),
        all_namespaces: false,
    }
}

/// Current state of every input key, plus the pools and tiers the cross checks need.
async fn read_current(
    store: &Objects,
    input: &[Prepared],
) -> Result<(HashMap<ResourceKey, Stored>, Vec<Stored>, Vec<Stored>), DatastoreError> {
    // Many objects of one kind are read with one list instead of one get each.
    const LIST_THRESHOLD: usize = 16;
    let mut existing = HashMap::new();
    let mut per_kind: HashMap<&'static str, (&'static KindInfo, usize)> = HashMap::new();
    for p in input {
        per_kind.entry(p.kind.kind).or_insert((p.kind, 0)).1 += 1;
    }
    let mut listed: HashMap<&'static str, HashMap<ResourceKey, Stored>> = HashMap::new();
    for (kind, n) in per_kind.values() {
        if *n > LIST_THRESHOLD {
            let mut by_key = HashMap::new();
            for s in store.list(kind, None).await? {
                let meta = |f: &str| {
                    s.value
                        .pointer(&format!("/metadata/{f}"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                if let Some(name) = meta("name") {
                    let key = ResourceKey::new(kind, meta("namespace").as_deref(), &name);
                    by_key.insert(key, s);
                }
            }
            listed.insert(kind.kind, by_key);
        }
    }
    for p in input {
        let found = match listed.get(p.kind.kind) {
            Some(by_key) => by_key.get(&p.key).cloned(),
            None => store.get(&p.key).await?,
        };
        if let Some(s) = found {
            existing.insert(p.key.clone(), s);
        }
    }
    let has = |kinds: &[&str]| input.iter().any(|p| kinds.contains(&p.kind.kind));
    let pools = match kinds::by_kind("IPPool") {
        Some(k) if has(&["IPPool"]) => store.list(k, None).await?,
        _ => Vec::new(),
    };
    let tiers = match kinds::by_kind("Tier") {
        Some(k)
            if has(&[
                "NetworkPolicy",
                "GlobalNetworkPolicy",
                "StagedNetworkPolicy",
                "StagedGlobalNetworkPolicy",
            ]) =>
        {
            store.list(k, None).await?
        }
        _ => Vec::new(),
    };
    Ok((existing, pools, tiers))
}

/// Name prefix under which Calico (etcd mode) stores Kubernetes NetworkPolicies.
const KUBERNETES_POLICY_PREFIX: &str = "knp.default.";

fn is_kubernetes_policy(key: &ResourceKey) -> bool {
    key.kind == "NetworkPolicy" && key.name.starts_with(KUBERNETES_POLICY_PREFIX)
}

/// `create`, `apply` and `replace` from files.
pub async fn write_from_files(
    verb: Verb,
    args: WriteArgs<'_>,
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), ResourceCmdError> {
    let raw = load_sources(args.source, io.stdin)?;
    if raw.is_empty() {
        let _ = writeln!(io.out, "No resources specified");
        return Ok(());
    }
    let flags = ns_flags(args.namespace);
    let input = prepare(raw, &flags, Depth::Full, verb, session)?;
    let store = session.store(config_path, io).await?;
    let existing = check_against_store(&store, &input, verb).await?;

    let mut batch = Batch::default();
    for p in &input {
        if let Some(e) = refused(verb, p.kind, &p.key) {
            batch.errors.push(e);
            continue;
        }
        let id = p.key.identifier();
        match (verb, existing.get(&p.key)) {
            (Verb::Create, Some(_)) if args.skip_exists => batch.skipped += 1,
            (Verb::Create, Some(_)) => batch.errors.push(ResourceError::AlreadyExists(id)),
            (Verb::Create, None) if p.given_revision.is_some() => {
                batch.errors.push(ResourceError::VersionOnCreate {
                    revision: p.given_revision.unwrap_or_default(),
                })
            }
            // Absent when read: created, and only if it is still absent when written.
            (Verb::Create | Verb::Apply, None) => batch.items.push(BatchItem::new(
                BatchOp::Create,
                p.key.kind_ref(),
                for_create(p.value.clone()),
            )),
            (_, None) => batch.errors.push(ResourceError::DoesNotExist(id)),
            // The document replaces the object (labels and annotations included), and only
            // at the revision these checks saw. Applying what is already stored writes
            // nothing (and keeps the revision), so repeated applies of the same file are
            // true no-ops.
            (_, Some(cur)) => batch.change(verb, &p.key, p.given_revision, cur, || {
                BatchItem::new(
                    BatchOp::Replace,
                    p.key.kind_ref(),
                    at_revision(p.value.clone(), cur.revision),
                )
            }),
        }
    }
    let kind = single_kind(input.iter().map(|p| p.kind));
    batch.commit(&store, verb, kind, input.len(), io).await
}

/// What a write or delete command will do: the batch it writes, the resources it refused
/// (then it writes nothing) and those it skipped (`--skip-exists`, `--skip-not-exists`).
#[derive(Default)]
struct Batch {
    items: Vec<BatchItem>,
    errors: Vec<ResourceError>,
    skipped: usize,
}

impl Batch {
    /// A change to the stored object `cur` at `key`: refused when Kubernetes owns it or the
    /// user's revision (`given`) is not the latest, else `item` joins the batch.
    fn change(
        &mut self,
        verb: Verb,
        key: &ResourceKey,
        given: Option<i64>,
        cur: &Stored,
        item: impl FnOnce() -> BatchItem,
    ) {
        if let Some(e) = kubernetes_owner(verb, key, cur) {
            self.errors.push(e);
        } else if let Some(given) = given.filter(|g| *g != cur.revision) {
            self.errors.push(ResourceError::OutOfDate {
                id: key.identifier(),
                given,
                latest: cur.revision,
            });
        } else {
            self.items.push(item());
        }
    }

    /// All or nothing: the refusals (of `total` resources) as the command's error, else the
    /// batch written and the success line printed.
    async fn commit(
        self,
        store: &Objects,
        verb: Verb,
        single_kind: Option<&'static str>,
        total: usize,
        io: &mut Io<'_>,
    ) -> Result<(), ResourceCmdError> {
        if !self.errors.is_empty() {
            return Err(ResourceCmdError::Failed {
                verb,
                single_kind,
                total,
                errors: self.errors,
            });
        }
        let done = self.items.len() + self.skipped;
        if !self.items.is_empty() {
            store.write(self.items).await?;
        }
        let _ = writeln!(io.out, "{}", success_message(verb, single_kind, done));
        Ok(())
    }
}

/// Why `verb` may not touch `key` whatever is stored: its kind is read-only, or it is a
/// Kubernetes NetworkPolicy.
fn refused(verb: Verb, kind: &KindInfo, key: &ResourceKey) -> Option<ResourceError> {
    if kind.read_only {
        Some(ResourceError::ReadOnly {
            operation: verb.operation(),
            kind: kind.kind,
        })
    } else if is_kubernetes_policy(key) {
        Some(ResourceError::KubernetesPolicy {
            operation: verb.operation(),
            id: key.identifier(),
        })
    } else {
        None
    }
}

/// Why `verb` may not change the stored object `cur`: Kubernetes owns it.
fn kubernetes_owner(verb: Verb, key: &ResourceKey, cur: &Stored) -> Option<ResourceError> {
    owned_by_kubernetes(&cur.value).then(|| ResourceError::OwnedByKubernetes {
        operation: verb.operation(),
        id: key.identifier(),
    })
}

/// The document with `metadata.resourceVersion` set to `revision`: the batch writer's
/// precondition that the object is still as it was read.
fn at_revision(mut value: Value, revision: i64) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    value
}

/// A user's document as calicoctl creates it: of the metadata only name, namespace, labels
/// and annotations (Calico's calicoctl drops the rest, e.g. a copied uid or resourceVersion;
/// the datastore sets uid and creationTimestamp).
fn for_create(mut value: Value) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, v| {
            ["name", "namespace", "labels", "annotations"].contains(&k.as_str()) && !v.is_null()
        });
    }
    value
}

/// Arguments shared by the file-driven write commands.
pub struct WriteArgs<'a> {
    pub source: &'a Source,
    pub namespace: &'a Option<String>,
    pub skip_exists: bool,
}

impl<'a> From<&'a CreateArgs> for WriteArgs<'a> {
    fn from(a: &'a CreateArgs) -> Self {
        WriteArgs {
            source: &a.source,
            namespace: &a.ns.namespace,
            skip_exists: a.skip_exists,
        }
    }
}

impl<'a> From<&'a FileArgs> for WriteArgs<'a> {
    fn from(a: &'a FileArgs) -> Self {
        WriteArgs {
            source: &a.source,
            namespace: &a.ns.namespace,
            skip_exists: false,
        }
    }
}

/// `validate -f`: every check that needs no datastore.
pub fn validate_files(
    source: &Source,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), ResourceCmdError> {
    let raw = load_sources(source, io.stdin)?;
    if raw.is_empty() {
        let _ = writeln!(io.out, "No resources specified");
        return Ok(());
    }
    let flags = NamespaceFlags::default();
    let input = prepare(raw, &flags, Depth::Full, Verb::Validate, session)?;
    let problems = validate::cross_check(&input, &HashMap::new(), &[], &[])
        .into_iter()
        .filter(|p| p.issue.path != "spec.tier")
        .collect::<Vec<_>>();
    if !problems.is_empty() {
        return Err(ResourceCmdError::Invalid {
            verb: Verb::Validate,
            problems,
        });
    }
    let kind = single_kind(input.iter().map(|p| p.kind));
    let _ = writeln!(
        io.out,
        "{}",
        success_message(Verb::Validate, kind, input.len())
    );
    Ok(())
}

/// Resolves `KIND NAME...` from the command line into keys.
fn keys_from_args(
    kind: &str,
    names: &[String],
    namespace: Option<&str>,
) -> Result<(&'static KindInfo, Vec<ResourceKey>), ResourceCmdError> {
    let info =
        kinds::by_cli_name(kind).ok_or_else(|| ResourceCmdError::UnknownKind(kind.to_string()))?;
    if !info.namespaced && namespace.is_some() {
        return Err(ResourceCmdError::NotNamespaced(info.kind));
    }
    if names.iter().any(String::is_empty) {
        return Err(ResourceCmdError::EmptyName);
    }
    let ns = namespace.unwrap_or("default");
    Ok((
        info,
        names
            .iter()
            .map(|n| ResourceKey::new(info, Some(ns), n))
            .collect(),
    ))
}

/// Keys (and optional revisions) named by documents, checking only their identity.
fn keys_from_files(
    source: &Source,
    namespace: &Option<String>,
    verb: Verb,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<Vec<Prepared>, ResourceCmdError> {
    let raw = load_sources(source, io.stdin)?;
    prepare(raw, &ns_flags(namespace), Depth::Identity, verb, session)
}

/// The documents parsed, defaulted and checked to `depth` on their own; every problem is
/// `verb`'s error.
fn prepare(
    raw: Vec<RawResource>,
    flags: &NamespaceFlags,
    depth: Depth,
    verb: Verb,
    session: &Session,
) -> Result<Vec<Prepared>, ResourceCmdError> {
    validate::prepare_all(raw, flags, session.model.as_ref(), depth)
        .map_err(|problems| ResourceCmdError::Invalid { verb, problems })
}

/// The checks of `input` against what is stored (pools, tiers, the objects themselves); every
/// problem is `verb`'s error. Returns the stored state of each input key.
async fn check_against_store(
    store: &Objects,
    input: &[Prepared],
    verb: Verb,
) -> Result<HashMap<ResourceKey, Stored>, ResourceCmdError> {
    let (existing, pools, tiers) = read_current(store, input).await?;
    let problems = validate::cross_check(input, &existing, &pools, &tiers);
    if !problems.is_empty() {
        return Err(ResourceCmdError::Invalid { verb, problems });
    }
    Ok(existing)
}

/// Annotation the Kubernetes controllers put on the etcd copies of objects they own.
pub use calico_api::names::OWNER_ANNOTATION;

fn owned_by_kubernetes(stored: &serde_json::Value) -> bool {
    stored
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(OWNER_ANNOTATION))
        .and_then(serde_json::Value::as_str)
        == Some(calico_api::names::OWNER_KUBERNETES)
}

pub async fn delete(
    args: &DeleteArgs,
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), ResourceCmdError> {
    let targets: Vec<(ResourceKey, &'static KindInfo, Option<i64>)> =
        if args.source.filename.is_some() {
            keys_from_files(&args.source, &args.ns.namespace, Verb::Delete, io, session)?
                .into_iter()
                .map(|p| (p.key, p.kind, p.given_revision))
                .collect()
        } else {
            let Some(kind) = &args.kind else {
                return Err(ResourceCmdError::NoResources);
            };
            if args.names.is_empty() {
                return Err(ResourceCmdError::NoResources);
            }
            let (info, keys) = keys_from_args(kind, &args.names, args.ns.namespace.as_deref())?;
            keys.into_iter().map(|k| (k, info, None)).collect()
        };
    if targets.is_empty() {
        let _ = writeln!(io.out, "No resources specified");
        return Ok(());
    }
    let store = session.store(config_path, io).await?;
    let mut batch = Batch::default();
    for (key, info, given) in &targets {
        if let Some(e) = refused(Verb::Delete, info, key) {
            batch.errors.push(e);
            continue;
        }
        match store.get(key).await? {
            None if args.skip_not_exists => batch.skipped += 1,
            None => batch
                .errors
                .push(ResourceError::DoesNotExist(key.identifier())),
            Some(cur) => batch.change(Verb::Delete, key, *given, &cur, || {
                BatchItem::new(
                    BatchOp::Delete,
                    key.kind_ref(),
                    at_revision(cur.value.clone(), cur.revision),
                )
            }),
        }
    }
    let kind = single_kind(targets.iter().map(|t| t.1));
    batch
        .commit(&store, Verb::Delete, kind, targets.len(), io)
        .await
}

/// What `get` found for one kind: objects in display order, and whether they came from a
/// list (so YAML/JSON print a `<Kind>List`).
struct Found {
    kind: &'static KindInfo,
    objects: Vec<Value>,
}

pub async fn get(
    args: &GetArgs,
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), ResourceCmdError> {
    let format = Format::parse(&args.output)?;
    if args.all_namespaces && args.ns.namespace.is_some() {
        return Err(ResourceCmdError::BothNamespaceFlags);
    }
    let print_namespace = args.all_namespaces || args.ns.namespace.is_some();
    let named: bool;
    let mut groups: Vec<Found> = Vec::new();
    let mut errors = Vec::new();
    if args.source.filename.is_some() {
        named = true;
        let targets = keys_from_files(
            &args.source,
            &args.ns.namespace,
            Verb::Validate,
            io,
            session,
        )?;
        let store = session.store(config_path, io).await?;
        for p in targets {
            match store.get(&p.key).await? {
                Some(s) => push_found(&mut groups, p.kind, s.value),
                None => errors.push(ResourceError::DoesNotExist(p.key.identifier())),
            }
        }
    } else {
        let Some(kind) = &args.kind else {
            return Err(ResourceCmdError::NoResources);
        };
        let info =
            kinds::by_cli_name(kind).ok_or_else(|| ResourceCmdError::UnknownKind(kind.clone()))?;
        if !info.namespaced && (args.all_namespaces || args.ns.namespace.is_some()) {
            return Err(ResourceCmdError::NotNamespaced(info.kind));
        }
        if args.names.iter().any(String::is_empty) {
            return Err(ResourceCmdError::EmptyName);
        }
        if args.all_namespaces && !args.names.is_empty() && info.namespaced {
            return Err(ResourceCmdError::AllNamespacesWithName);
        }
        let store = session.store(config_path, io).await?;
        let ns = args.ns.namespace.as_deref().unwrap_or("default");
        if args.names.is_empty() {
            named = false;
            let list_ns = if args.all_namespaces { None } else { Some(ns) };
            let mut objects: Vec<Value> = store
                .list(info, list_ns)
                .await?
                .into_iter()
                .map(|s| s.value)
                .collect();
            if info.kind == "Tier" {
                sort_tiers(&mut objects);
            }
            groups.push(Found {
                kind: info,
                objects,
            });
        } else {
            named = true;
            for name in &args.names {
                let key = ResourceKey::new(info, Some(ns), name);
                match store.get(&key).await? {
                    Some(s) => push_found(&mut groups, info, s.value),
                    None => errors.push(ResourceError::DoesNotExist(key.identifier())),
                }
            }
        }
    }
    if args.export && named {
        for g in &mut groups {
            for o in &mut g.objects {
                if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                    for k in ["resourceVersion", "uid", "creationTimestamp", "namespace"] {
                        meta.remove(k);
                    }
                }
            }
        }
    }

    let mut ctx = TableContext::default();
    match &format {
        Format::Yaml | Format::Json => {
            let mut all: Vec<(&'static KindInfo, Value)> = Vec::new();
            for g in &groups {
                for o in &g.objects {
                    all.push((g.kind, o.clone()));
                }
            }
            let doc = if named && all.len() == 1 {
                all.pop().map(|(_, v)| v)
            } else if named && all.is_empty() {
                None
            } else {
                let list_kind = match single_kind(all.iter().map(|(k, _)| *k)) {
                    Some(_) => all.first().map_or_else(
                        || {
                            groups
                                .first()
                                .map_or("List".to_string(), |g| g.kind.list_kind())
                        },
                        |(k, _)| k.list_kind(),
                    ),
                    None if all.is_empty() => groups
                        .first()
                        .map_or("List".to_string(), |g| g.kind.list_kind()),
                    None => "List".to_string(),
                };
                Some(output::list_document(
                    &list_kind,
                    all.into_iter().map(|(_, v)| v).collect(),
                ))
            };
            if let Some(doc) = doc {
                let text = if format == Format::Yaml {
                    output::to_yaml(&doc)
                } else {
                    output::to_json(&doc)
                };
                let _ = io.out.write_all(text.as_bytes());
            }
        }
        _ => {
            for g in &groups {
                let cols = output::headings(g.kind, &format, print_namespace)?;
                if g.kind.kind == "Node" && cols.iter().any(|c| c == "ASN") {
                    ctx.global_as_number = Some(global_as_number(session, config_path, io).await?);
                }
                let _ = io
                    .out
                    .write_all(output::table(g.kind, &cols, &g.objects, &ctx).as_bytes());
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ResourceCmdError::GetFailed { errors })
    }
}

fn push_found(groups: &mut Vec<Found>, kind: &'static KindInfo, v: Value) {
    match groups.iter_mut().find(|g| g.kind.kind == kind.kind) {
        Some(g) => g.objects.push(v),
        None => groups.push(Found {
            kind,
            objects: vec![v],
        }),
    }
}

/// Tiers print in order of `spec.order`, tiers without an order last.
fn sort_tiers(objects: &mut [Value]) {
    objects.sort_by(|a, b| {
        let order = |v: &Value| v.pointer("/spec/order").and_then(Value::as_f64);
        match (order(a), order(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    });
}

/// BGPConfiguration `default` `spec.asNumber`, else Calico's default 64512.
async fn global_as_number(
    session: &Session,
    config_path: Option<&str>,
    io: &Io<'_>,
) -> Result<String, ResourceCmdError> {
    let store = session.store(config_path, io).await?;
    let Some(kind) = kinds::by_kind("BGPConfiguration") else {
        return Ok("64512".into());
    };
    let cfg = store.get(&ResourceKey::new(kind, None, "default")).await?;
    Ok(cfg
        .and_then(|s| s.value.pointer("/spec/asNumber").cloned())
        .filter(|v| !v.is_null())
        .map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .unwrap_or_else(|| "64512".into()))
}

pub async fn patch(
    args: &PatchArgs,
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), ResourceCmdError> {
    let (info, keys) = keys_from_args(
        &args.kind,
        std::slice::from_ref(&args.name),
        args.ns.namespace.as_deref(),
    )?;
    let Some(key) = keys.into_iter().next() else {
        return Err(ResourceCmdError::EmptyName);
    };
    let patch: Value =
        serde_yaml_ng::from_str(&args.patch).map_err(|e| ResourceCmdError::BadPatch {
            kind: info.kind,
            reason: e.to_string(),
        })?;
    if !patch.is_object() {
        return Err(ResourceCmdError::BadPatch {
            kind: info.kind,
            reason: format!("found {patch}"),
        });
    }
    let failed = |e| ResourceCmdError::Failed {
        verb: Verb::Patch,
        single_kind: Some(info.kind),
        total: 1,
        errors: vec![e],
    };
    if let Some(e) = refused(Verb::Patch, info, &key) {
        return Err(failed(e));
    }
    let store = session.store(config_path, io).await?;
    let Some(cur) = store.get(&key).await? else {
        return Err(failed(ResourceError::DoesNotExist(key.identifier())));
    };
    if let Some(e) = kubernetes_owner(Verb::Patch, &key, &cur) {
        return Err(failed(e));
    }
    let mut patched = cur.value.clone();
    merge_patch::apply(&mut patched, &patch);
    // Identity is not patchable: keep the stored metadata except labels and annotations.
    if let (Some(stored_meta), Some(new_meta)) = (
        cur.value.get("metadata").and_then(Value::as_object),
        patched.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        for (k, v) in stored_meta {
            if k != "labels" && k != "annotations" {
                new_meta.insert(k.clone(), v.clone());
            }
        }
        new_meta.remove("resourceVersion");
    }
    let raw = RawResource {
        origin: Origin {
            file: "<patch>".into(),
            document: 1,
            item: None,
        },
        value: patched,
    };
    let flags = ns_flags(&args.ns.namespace);
    let input = prepare(vec![raw], &flags, Depth::Full, Verb::Patch, session)?;
    check_against_store(&store, &input, Verb::Patch).await?;
    let Some(p) = input.into_iter().next() else {
        return Err(ResourceCmdError::NoResources);
    };
    store
        .write(vec![BatchItem::new(
            BatchOp::Replace,
            key.kind_ref(),
            at_revision(p.value, cur.revision),
        )])
        .await?;
    let _ = writeln!(io.out, "Successfully patched 1 '{}' resource", info.kind);
    Ok(())
}

pub async fn label(
    args: &LabelArgs,
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), ResourceCmdError> {
    let (key_name, value) = if args.remove {
        (args.label.clone(), None)
    } else {
        let parts: Vec<&str> = args.label.split('=').collect();
        if parts.len() != 2 || parts[0].is_empty() {
            return Err(ResourceCmdError::InvalidLabel(args.label.clone()));
        }
        (parts[0].to_string(), Some(parts[1].to_string()))
    };
    let (info, keys) = keys_from_args(
        &args.kind,
        std::slice::from_ref(&args.name),
        args.ns.namespace.as_deref(),
    )?;
    let Some(key) = keys.into_iter().next() else {
        return Err(ResourceCmdError::EmptyName);
    };
    let store = session.store(config_path, io).await?;
    let Some(cur) = store.get(&key).await? else {
        return Err(ResourceCmdError::LabelTarget {
            kind: args.kind.clone(),
            name: args.name.clone(),
            source: ResourceError::DoesNotExist(key.identifier()),
        });
    };
    // A label change is a replace of the stored object: refused where a replace is.
    if let Some(e) =
        refused(Verb::Replace, info, &key).or_else(|| kubernetes_owner(Verb::Replace, &key, &cur))
    {
        return Err(ResourceCmdError::LabelTarget {
            kind: args.kind.clone(),
            name: args.name.clone(),
            source: e,
        });
    }
    let mut updated = cur.value.clone();
    let meta = updated.as_object_mut().map(|o| {
        o.entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()))
    });
    let Some(Value::Object(meta)) = meta else {
        return Err(DatastoreError::NotAnObject {
            kind: info.kind.into(),
        }
        .into());
    };
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()));
    if !labels.is_object() {
        *labels = Value::Object(Default::default());
    }
    let Value::Object(labels) = labels else {
        return Err(ResourceCmdError::NoResources);
    };
    let mut overwritten = false;
    match &value {
        None => {
            if labels.remove(&key_name).is_none() {
                return Err(ResourceCmdError::LabelAbsent {
                    kind: args.kind.clone(),
                    name: args.name.clone(),
                    key: key_name,
                });
            }
        }
        Some(v) => {
            if let Some(old) = labels.get(&key_name) {
                if !args.overwrite && old.as_str() != Some(v.as_str()) {
                    return Err(ResourceCmdError::LabelPresent {
                        kind: args.kind.clone(),
                        name: args.name.clone(),
                        key: key_name,
                    });
                }
                overwritten = true;
            }
            labels.insert(key_name.clone(), Value::String(v.clone()));
        }
    }
    store
        .write(vec![BatchItem::new(
            BatchOp::Replace,
            key.kind_ref(),
            at_revision(updated, cur.revision),
        )])
        .await
        .map_err(|source| ResourceCmdError::LabelUpdate {
            kind: args.kind.clone(),
            name: args.name.clone(),
            source: Box::new(source),
        })?;
    let msg = match (&value, overwritten) {
        (None, _) => format!(
            "Successfully removed label {key_name} from {} {}",
            args.kind, args.name
        ),
        (Some(_), true) => format!(
            "Successfully updated label {key_name} on {} {}",
            args.kind, args.name
        ),
        (Some(_), false) => format!(
            "Successfully set label {key_name} on {} {}",
            args.kind, args.name
        ),
    };
    let _ = writeln!(io.out, "{msg}");
    Ok(())
}

/// `version`: this binary's version, then the cluster's from ClusterInformation `default`.
pub async fn version(
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), ResourceCmdError> {
    let _ = writeln!(io.out, "Client Version:    v{}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(
        io.out,
        "Git commit:        {}",
        option_env!("CALICO_RS_GIT_COMMIT").unwrap_or("unknown")
    );
    let cluster = async {
        let store = session.store(config_path, io).await?;
        let kind = kinds::by_kind("ClusterInformation").ok_or(ResourceCmdError::NoResources)?;
        let key = ResourceKey::new(kind, None, "default");
        store
            .get(&key)
            .await?
            .ok_or_else(|| ResourceCmdError::GetFailed {
                errors: vec![ResourceError::DoesNotExist(key.identifier())],
            })
    }
    .await;
    match cluster {
        Ok(info) => {
            let field = |f: &str| {
                info.value
                    .pointer(&format!("/spec/{f}"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let _ = writeln!(io.out, "Cluster Version:   {}", field("calicoVersion"));
            let _ = writeln!(io.out, "Cluster Type:      {}", field("clusterType"));
        }
        Err(e) => {
            let _ = writeln!(io.out, "Unable to retrieve Cluster Version or Type: {e}");
        }
    }
    Ok(())
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}
