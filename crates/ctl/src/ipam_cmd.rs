//! `calicoctl ipam ...`: argument handling and output around `calico-ipam`'s calicoctl
//! functions (which own the IPAM logic and its table layouts).

use calico_ipam::Ipam;
use calico_ipam::cli::{self as ipam_cli, CliError, Report};

use crate::cli::IpamCommand;
use crate::commands::{CtlError, Io, Session};

#[derive(Debug, thiserror::Error)]
pub enum IpamCmdError {
    #[error("{0}")]
    Ipam(#[from] CliError),
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
) -> Result<(), CtlError> {
    let kv = session.etcd_client(config_path, io).await?;
    let ipam = Ipam::new(kv);
    let text = execute(cmd, &ipam).await.map_err(CtlError::Ipam)?;
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
                ipam_cli::show_ip(ipam, *ip).await?
            } else if *show_configuration {
                ipam_cli::show_configuration(ipam).await?
            } else if *show_borrowed {
                ipam_cli::show_borrowed(ipam).await?
            } else {
                ipam_cli::show(ipam, *show_blocks).await?
            }
        }
        IpamCommand::Configure {
            strict_affinity,
            max_blocks_per_host,
        } => {
            if strict_affinity.is_none() && max_blocks_per_host.is_none() {
                return Err(IpamCmdError::NothingToConfigure);
            }
            ipam_cli::configure(ipam, *strict_affinity, *max_blocks_per_host).await?
        }
        IpamCommand::Release { ip, from_report } => match (ip, from_report) {
            (Some(ip), _) => ipam_cli::release_ip(ipam, *ip).await?,
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| IpamCmdError::ReadReport {
                        path: path.clone(),
                        source,
                    })?;
                let report = Report::from_json(&text)?;
                let s = ipam_cli::release_from_report(ipam, &report).await?;
                let mut out = String::new();
                for ip in &s.released_ips {
                    out.push_str(&format!("Released leaked IP {ip}\n"));
                }
                for ip in &s.skipped_ips {
                    out.push_str(&format!(
                        "Skipped IP {ip}: its allocation changed since the report\n"
                    ));
                }
                for h in &s.deleted_handles {
                    out.push_str(&format!("Deleted leaked handle {h}\n"));
                }
                for (node, cidr) in &s.released_affinities {
                    out.push_str(&format!(
                        "Released orphaned affinity of {node} for {cidr}\n"
                    ));
                }
                out.push_str(&format!(
                    "Released {} IP(s), deleted {} handle(s), released {} affinity(ies)\n",
                    s.released_ips.len(),
                    s.deleted_handles.len(),
                    s.released_affinities.len()
                ));
                out
            }
            (None, None) => return Err(IpamCmdError::NothingToRelease),
        },
        IpamCommand::Check {
            show_problem_ips,
            output,
        } => {
            let result = ipam_cli::check(ipam, *show_problem_ips).await?;
            let mut text = result.text;
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
            let pools = ipam_cli::split(ipam, name.as_deref(), *cidr, *number).await?;
            let mut out = String::new();
            for (name, cidr) in &pools {
                out.push_str(&format!("Created IP pool {name} with CIDR {cidr}\n"));
            }
            out.push_str(&format!(
                "Successfully split the IP pool into {} IP pools\n",
                pools.len()
            ));
            out
        }
    })
}
