//! `calicoctl ipam ...`: flags to `calico_ipam::admin` (which owns the IPAM logic) and its
//! data to text ([`crate::ipam_view`]).

use calico_ipam::Ipam;
use calico_ipam::admin::{self, AdminError, Report};

use crate::cli::IpamCommand;
use crate::ipam_view as view;
use crate::session::{Io, Session, SessionError};

#[derive(Debug, thiserror::Error)]
pub enum IpamCmdError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{0}")]
    Ipam(#[from] AdminError),
    #[error("cannot read report {path}: {source}")]
    ReadReport {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write report {path}: {source}")]
    WriteReport {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("specify --ip=<IP> or --from-report=<FILE>")]
    NothingToRelease,
    #[error("specify --cidr=<CIDR> or --name=<NAME> of the pool to split")]
    NoPoolToSplit,
    #[error("specify --strictaffinity=<true|false> or --max-blocks-per-host=<N>")]
    NothingToConfigure,
}

pub async fn run(
    cmd: &IpamCommand,
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), IpamCmdError> {
    let kv = session.etcd_client(config_path, io).await?;
    let ipam = Ipam::new(kv);
    let text = execute(cmd, &ipam).await?;
    let _ = io.out.write_all(text.as_bytes());
    Ok(())
}

async fn execute(cmd: &IpamCommand, ipam: &Ipam) -> Result<String, IpamCmdError> {
    Ok(match cmd {
        IpamCommand::Show {
            ip,
            show_blocks,
            show_borrowed,
            show_configuration,
        } => {
            if let Some(ip) = ip {
                let info = ipam
                    .get_assignment_attributes(*ip)
                    .await
                    .map_err(AdminError::from)?;
                view::assignment(*ip, info.as_ref())
            } else if *show_configuration {
                let cfg = ipam.get_config().await.map_err(AdminError::from)?;
                view::configuration(&cfg)
            } else if *show_borrowed {
                view::borrowed(&admin::borrowed(ipam).await?)
            } else {
                view::usage(&admin::utilization(ipam).await?, *show_blocks)
            }
        }
        IpamCommand::Configure {
            strict_affinity,
            max_blocks_per_host,
        } => {
            if strict_affinity.is_none() && max_blocks_per_host.is_none() {
                return Err(IpamCmdError::NothingToConfigure);
            }
            view::configured(&admin::configure(ipam, *strict_affinity, *max_blocks_per_host).await?)
        }
        IpamCommand::Release { ip, from_report } => match (ip, from_report) {
            (Some(ip), _) => view::released(*ip, admin::release_ip(ipam, *ip).await?),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| IpamCmdError::ReadReport {
                        path: path.clone(),
                        source,
                    })?;
                let report = Report::from_json(&text)?;
                view::release_summary(&admin::release_from_report(ipam, &report).await?)
            }
            (None, None) => return Err(IpamCmdError::NothingToRelease),
        },
        IpamCommand::Check {
            show_problem_ips,
            output,
        } => {
            let result = admin::check(ipam).await?;
            let mut text = view::check(&result, *show_problem_ips);
            if let Some(path) = output {
                std::fs::write(path, result.report.to_json()).map_err(|source| {
                    IpamCmdError::WriteReport {
                        path: path.clone(),
                        source,
                    }
                })?;
                text.push_str(&format!("IPAM check report written to {path}\n"));
            }
            text
        }
        IpamCommand::Split { number, cidr, name } => {
            if cidr.is_none() && name.is_none() {
                return Err(IpamCmdError::NoPoolToSplit);
            }
            view::split(&admin::split(ipam, name.as_deref(), *cidr, *number).await?)
        }
    })
}
