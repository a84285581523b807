//! calicoctl as a library: the CLI entry ([`run`], [`main_with_args`]) and everything behind it.
//!
//! Layout:
//! - [`cli`]: clap definitions of Calico's commands and flags;
//! - [`document`]: reading `-f` files (multi-document YAML, JSON, lists);
//! - [`validate`]: envelope checks, the [`validate::ResourceModel`] hook for per-kind rules,
//!   and cross checks (duplicates, IP pool overlap, tiers);
//! - [`objects`]: resources as calicoctl names and reads them; every write is one batch of
//!   `calico-datastore`'s batch writer (calicoctl has no writer of its own);
//! - [`session`]: what every command shares ([`Io`], [`Session`], datastore access errors);
//! - [`commands`]: dispatch of each command to its module, and [`CtlError`];
//! - [`resource_cmd`]: create / apply / replace / delete / get / patch / label / validate /
//!   version;
//! - [`ipam_cmd`] / [`ipam_view`]: `calicoctl ipam ...` over `calico-ipam`'s data;
//! - [`node_cmd`] / [`node_run`] / [`status_view`] / [`policy_view`]: `calicoctl node run`,
//!   `status`, `peers` and `policy` (calico-node owns the agent and its status socket;
//!   calicoctl owns what these commands do and print);
//! - [`output`] / [`kinds`]: Calico's table layouts and per-kind facts; every bordered table
//!   goes through `calico_api::table`.
//!
//! Where this calicoctl deliberately differs from Calico's:
//! - writes are all-or-nothing: every document is validated and every precondition checked
//!   before anything is written, then one etcd transaction per 128 writes, each pinning the
//!   objects to the state the checks saw (Calico writes document by document and reports
//!   partial success);
//! - `apply` of an unchanged resource writes nothing (same resourceVersion afterwards);
//! - `get KIND A B` prints one table with a row per resource (Calico prints one table each)
//!   and `-o yaml|json` of several named resources prints a `<Kind>List`.
//!
//! Like Calico's: `apply` and `replace` make the stored object equal to the document, labels
//! and annotations included (a label the document no longer has is removed); `uid` and
//! `creationTimestamp` stay the datastore's (see `calico_datastore::resource::meta`).
//!
//! Configuration (`-c`, `/etc/calico/calicoctl.cfg`, DATASTORE_TYPE / ETCD_* variables) is
//! loaded by `calico-datastore`'s `CalicoApiConfig`.

pub mod cli;
pub mod commands;
pub mod document;
pub mod ipam_cmd;
pub mod ipam_view;
pub mod kinds;
pub mod merge_patch;
pub mod model;
pub mod node_cmd;
pub mod node_run;
pub mod objects;
pub mod output;
pub mod policy_view;
pub mod resource_cmd;
pub mod session;
pub mod status_view;
pub mod validate;

use std::sync::Arc;

use clap::Parser;

pub use commands::CtlError;
pub use session::{Io, Session};

use crate::cli::Cli;

/// The model used to check resources of every kind: the typed kinds of `calico-api`
/// (see [`model::ApiModel`] for what is and is not checked yet).
pub fn default_model() -> Arc<dyn validate::ResourceModel> {
    Arc::new(model::ApiModel)
}

/// Runs calicoctl with `args` (including the program name) and returns the exit code.
pub async fn run(args: Vec<String>, io: &mut Io<'_>, session: &Session) -> i32 {
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = write!(io.out, "{e}");
                    0
                }
                _ => {
                    let _ = write!(io.err, "{e}");
                    1
                }
            };
        }
    };
    match commands::execute(&cli, io, session).await {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(io.err, "{e}");
            1
        }
    }
}

/// Entry point for the `calicoctl` binary: process arguments, stdio and environment.
pub fn main_with_args(args: Vec<String>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("calicoctl: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let mut stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let env = |k: &str| std::env::var(k).ok();
    let mut io = Io {
        stdin: &mut stdin,
        out: &mut stdout,
        err: &mut stderr,
        env: &env,
    };
    let session = Session::default();
    runtime.block_on(run(args, &mut io, &session))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            model: default_model(),
            store: None,
            default_config_path: "/nonexistent/calicoctl.cfg".into(),
        }
    }

    async fn run_with(session: &Session, args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut input = stdin.as_bytes();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let no_env = |_: &str| None;
        let mut io = Io {
            stdin: &mut input,
            out: &mut out,
            err: &mut err,
            env: &no_env,
        };
        let args = std::iter::once("calicoctl")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        let code = run(args, &mut io, session).await;
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    #[tokio::test]
    async fn usage_errors_exit_1_and_help_exits_0() {
        let s = session();
        assert_eq!(run_with(&s, &["frobnicate"], "").await.0, 1);
        assert_eq!(
            run_with(&s, &["get"], "").await.2,
            "No resources specified\n"
        );
        let (code, out, _) = run_with(&s, &["apply", "--help"], "").await;
        assert_eq!(code, 0);
        assert!(out.contains("--filename"), "{out}");
    }
}
