//! Dispatch: each calicoctl command to the module that owns it, and [`CtlError`], every way a
//! command fails (each module's own error, shown as that module words it).

use crate::cli::{Cli, Command, NodeCommand};
use crate::ipam_cmd::{self, IpamCmdError};
use crate::node_cmd::{self, NodeCmdError};
use crate::policy_view::{self, PolicyViewError};
use crate::resource_cmd::{self, ResourceCmdError, Verb};
use crate::session::{Io, Session};

/// Every way a command fails; `Display` is what the user sees on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(transparent)]
    Resource(#[from] ResourceCmdError),
    #[error(transparent)]
    Ipam(#[from] IpamCmdError),
    #[error(transparent)]
    Node(#[from] NodeCmdError),
    #[error(transparent)]
    PolicyView(#[from] PolicyViewError),
}

/// Runs the parsed command line.
pub async fn execute(cli: &Cli, io: &mut Io<'_>, session: &Session) -> Result<(), CtlError> {
    let config = cli.config.as_deref();
    match &cli.command {
        Command::Create(a) => {
            resource_cmd::write_from_files(Verb::Create, a.into(), config, io, session).await?
        }
        Command::Apply(a) => {
            resource_cmd::write_from_files(Verb::Apply, a.into(), config, io, session).await?
        }
        Command::Replace(a) => {
            resource_cmd::write_from_files(Verb::Replace, a.into(), config, io, session).await?
        }
        Command::Delete(a) => resource_cmd::delete(a, config, io, session).await?,
        Command::Get(a) => resource_cmd::get(a, config, io, session).await?,
        Command::Patch(a) => resource_cmd::patch(a, config, io, session).await?,
        Command::Label(a) => resource_cmd::label(a, config, io, session).await?,
        Command::Validate(a) => resource_cmd::validate_files(&a.source, io, session)?,
        Command::Version => resource_cmd::version(config, io, session).await?,
        Command::Node(NodeCommand::Run(a)) => node_cmd::run(a, config, io, session)?,
        Command::Node(NodeCommand::Status(a)) => node_cmd::status(a, io).await?,
        Command::Node(NodeCommand::Peers(a)) => node_cmd::peers(a, config, io, session).await?,
        Command::Node(NodeCommand::Policy(a)) => policy_view::run(a, config, io, session).await?,
        Command::Ipam(c) => ipam_cmd::run(c, config, io, session).await?,
    }
    Ok(())
}
