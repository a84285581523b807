//! Command line: the commands and flags of Calico's calicoctl.

use clap::{Args, Parser, Subcommand};

use calico_datastore::DEFAULT_CONFIG_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "calicoctl",
    about = "The command line tool for managing Calico network and security policy,\nviewing and managing endpoint configuration, and managing a Calico node instance.",
    disable_version_flag = true
)]
pub struct Cli {
    /// Path to the file containing connection configuration in YAML or JSON format.
    #[arg(short = 'c', long = "config", global = true, value_name = "CONFIG",
          help = format!("Path to the file containing connection configuration in YAML or JSON format [default: {DEFAULT_CONFIG_PATH}]"))]
    pub config: Option<String>,
    /// Set the log level (one of panic, fatal, error, warn, info, debug).
    #[arg(
        short = 'l',
        long = "log-level",
        global = true,
        default_value = "panic"
    )]
    pub log_level: String,
    /// Allow client and cluster versions mismatch (accepted for compatibility).
    #[arg(long = "allow-version-mismatch", global = true)]
    pub allow_version_mismatch: bool,
    /// The name of the kubeconfig context to use (accepted for compatibility; etcd only).
    #[arg(long = "context", global = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a resource by file, directory or stdin.
    Create(CreateArgs),
    /// Apply a resource by file, directory or stdin: create it, or update it if it exists.
    Apply(FileArgs),
    /// Replace a resource by file, directory or stdin.
    Replace(FileArgs),
    /// Delete a resource identified by file, directory, stdin or resource type and name.
    Delete(DeleteArgs),
    /// Get a resource identified by file, directory, stdin or resource type and name.
    Get(GetArgs),
    /// Patch a pre-existing resource in place.
    Patch(PatchArgs),
    /// Add or update labels of resources.
    Label(LabelArgs),
    /// Validate a resource by file, directory or stdin, without a datastore.
    Validate(ValidateArgs),
    /// Display the version of this binary.
    Version,
}

#[derive(Debug, Args)]
pub struct Source {
    /// Filename to use; "-" loads from stdin; a directory means each .json, .yaml and .yml
    /// file within it.
    #[arg(short = 'f', long = "filename", value_name = "FILENAME")]
    pub filename: Option<String>,
    /// Process the directory given in -f recursively.
    #[arg(short = 'R', long = "recursive")]
    pub recursive: bool,
    /// Do not error if any file or directory given in -f contains no data.
    #[arg(long = "skip-empty")]
    pub skip_empty: bool,
}

#[derive(Debug, Args)]
pub struct Namespace {
    /// Namespace of the resource (namespaced kinds only; default "default").
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct FileArgs {
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub ns: Namespace,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub ns: Namespace,
    /// Skip over and treat as successful any attempt to create an entry that already exists.
    #[arg(long = "skip-exists")]
    pub skip_exists: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Resource type (case-insensitive, may be pluralized or a short name).
    pub kind: Option<String>,
    /// Resource names.
    pub names: Vec<String>,
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub ns: Namespace,
    /// Skip over and treat as successful any attempt to delete an entry that does not exist.
    #[arg(long = "skip-not-exists")]
    pub skip_not_exists: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Resource type (case-insensitive, may be pluralized or a short name).
    pub kind: Option<String>,
    /// Resource names (all of the kind when none).
    pub names: Vec<String>,
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub ns: Namespace,
    /// List the requested object(s) across all namespaces.
    #[arg(short = 'A', visible_short_alias = 'a', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// Output format: ps, wide, custom-columns=COL,..., yaml, json.
    #[arg(short = 'o', long = "output", default_value = "ps")]
    pub output: String,
    /// Strip cluster-specific metadata (resourceVersion, uid, creationTimestamp) from
    /// named resources.
    #[arg(long = "export")]
    pub export: bool,
}

#[derive(Debug, Args)]
pub struct PatchArgs {
    /// Resource type.
    pub kind: String,
    /// Resource name.
    pub name: String,
    /// Patch to apply: a JSON (or YAML) object merged into the resource (RFC 7386 JSON merge
    /// patch: objects merge, null deletes, other values replace).
    #[arg(short = 'p', long = "patch", value_name = "PATCH")]
    pub patch: String,
    #[command(flatten)]
    pub ns: Namespace,
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// Resource type.
    pub kind: String,
    /// Resource name.
    pub name: String,
    /// `key=value` to set, or `key` with --remove.
    pub label: String,
    /// Overwrite the value when the key is already present.
    #[arg(long = "overwrite", conflicts_with = "remove")]
    pub overwrite: bool,
    /// Remove the label with the given key.
    #[arg(long = "remove")]
    pub remove: bool,
    #[command(flatten)]
    pub ns: Namespace,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub source: Source,
}
