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
    /// Calico node management: run calico-node on this host, show its status.
    #[command(subcommand)]
    Node(NodeCommand),
    /// IP address management: show, configure, release, check, split.
    #[command(subcommand)]
    Ipam(IpamCommand),
    /// Display the version of this binary.
    Version,
}

#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Show IP pool and block utilization, one address's allocation, borrowed addresses or
    /// the IPAM configuration.
    Show {
        /// Show the allocation of this address.
        #[arg(long = "ip", value_name = "IP")]
        ip: Option<std::net::IpAddr>,
        /// Also show each block.
        #[arg(long = "show-blocks")]
        show_blocks: bool,
        /// Show addresses borrowed from blocks affine to other nodes.
        #[arg(long = "show-borrowed")]
        show_borrowed: bool,
        /// Show the IPAM configuration.
        #[arg(long = "show-configuration")]
        show_configuration: bool,
    },
    /// Change the IPAM configuration.
    Configure {
        /// Only assign addresses from blocks affine to the node (true or false).
        #[arg(long = "strictaffinity", value_name = "BOOL")]
        strict_affinity: Option<bool>,
        /// Maximum number of blocks one node may claim (0: no limit).
        #[arg(long = "max-blocks-per-host", value_name = "N")]
        max_blocks_per_host: Option<u32>,
    },
    /// Release an address, or everything a check report found leaked.
    Release {
        /// The address to release.
        #[arg(long = "ip", value_name = "IP", conflicts_with = "from_report")]
        ip: Option<std::net::IpAddr>,
        /// A report written by `ipam check -o FILE`.
        #[arg(long = "from-report", value_name = "FILE")]
        from_report: Option<String>,
    },
    /// Check IPAM for inconsistencies (leaked addresses and handles, orphaned affinities).
    Check {
        /// List every problem address.
        #[arg(long = "show-problem-ips")]
        show_problem_ips: bool,
        /// Write the report (JSON) to this file, for `ipam release --from-report`.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<String>,
    },
    /// Split an IP pool into NUMBER smaller pools.
    Split {
        /// Number of pools (a power of 2).
        number: u32,
        /// CIDR of the pool to split.
        #[arg(long = "cidr", value_name = "CIDR", conflicts_with = "name")]
        cidr: Option<ipnet::IpNet>,
        /// Name of the pool to split.
        #[arg(long = "name", value_name = "NAME")]
        name: Option<String>,
    },
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

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Prepare this host and start calico-node (a Docker container, or a process with
    /// --no-docker) connected to the configured datastore.
    Run(NodeRunArgs),
    /// Show the status of calico-node on this host (BGP sessions).
    Status(NodeStatusArgs),
    /// Print the BGP sessions a node must have, computed from the datastore alone.
    Peers(NodePeersArgs),
    /// Show the policy enforced on this host per endpoint: tiers, policies and profiles in
    /// evaluation order, with each rule's action and packet/byte counters (from the kernel).
    Policy(NodePolicyArgs),
}

#[derive(Debug, Args)]
pub struct NodePolicyArgs {
    /// Only the endpoint on this host interface (e.g. cali0123456789a, or eth0 for a host
    /// endpoint).
    #[arg(long = "interface", value_name = "IFACE")]
    pub interface: Option<String>,
    /// Only this WorkloadEndpoint or HostEndpoint (looked up in the datastore for its
    /// interface).
    #[arg(long = "endpoint", value_name = "NAME", conflicts_with = "interface")]
    pub endpoint: Option<String>,
    /// Namespace of the --endpoint WorkloadEndpoint (default: any).
    #[arg(
        short = 'n',
        long = "namespace",
        value_name = "NS",
        requires = "endpoint"
    )]
    pub namespace: Option<String>,
    /// Output format: table (default) or json.
    #[arg(short = 'o', long = "output", default_value = "table")]
    pub output: String,
}

#[derive(Debug, Args)]
pub struct NodeStatusArgs {
    /// Output format: the table Calico prints (default), or json.
    #[arg(short = 'o', long = "output", default_value = "table")]
    pub output: String,
}

#[derive(Debug, Args)]
pub struct NodePeersArgs {
    /// The node whose sessions to print.
    pub name: String,
    /// Output format: yaml or json.
    #[arg(short = 'o', long = "output", default_value = "yaml")]
    pub output: String,
}

#[derive(Debug, Args)]
pub struct NodeRunArgs {
    /// The node name (default: the host name).
    #[arg(long = "name")]
    pub name: Option<String>,
    /// IPv4 address (and prefix) of the node, "autodetect", or "none".
    #[arg(long = "ip")]
    pub ip: Option<String>,
    /// IPv6 address of the node, "autodetect", or "none".
    #[arg(long = "ip6")]
    pub ip6: Option<String>,
    /// AS number of this node (default: the global one).
    #[arg(long = "as")]
    pub as_number: Option<String>,
    /// How to autodetect the IPv4 address (first-found, can-reach=, interface=, skip-interface=, cidr=).
    #[arg(long = "ip-autodetection-method")]
    pub ip_autodetection_method: Option<String>,
    /// How to autodetect the IPv6 address.
    #[arg(long = "ip6-autodetection-method")]
    pub ip6_autodetection_method: Option<String>,
    /// Networking backend: bird (BGP), vxlan (VXLAN routes from block affinities, no BGP) or none.
    #[arg(long = "backend")]
    pub backend: Option<String>,
    /// Do not create the default IPv4 and IPv6 pools.
    #[arg(long = "no-default-ippools")]
    pub no_default_ippools: bool,
    /// Print the command that would start calico-node instead of running it.
    #[arg(long = "dryrun")]
    pub dryrun: bool,
    /// The calico-node image.
    #[arg(long = "node-image")]
    pub node_image: Option<String>,
    /// Do not run the Docker network and IPAM drivers.
    #[arg(long = "disable-docker-networking")]
    pub disable_docker_networking: bool,
    /// Run calico-node as a process on this host instead of a container.
    #[arg(long = "no-docker")]
    pub no_docker: bool,
}
