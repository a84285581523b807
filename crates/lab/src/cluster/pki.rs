//! A per-run PKI for the Kubernetes lab, made with the `openssl` CLI (ECDSA P-256 keys: fast
//! to generate on a busy machine, accepted by every component).
//!
//! One CA signs everything: the API server's serving certificate, one client certificate per
//! identity (the organisation is the Kubernetes group: `system:masters` for the admin,
//! `system:nodes` for kubelets), each kubelet's serving certificate; plus the service-account
//! signing key pair. Certificates are valid for 7 days: a lab never lives longer.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ClusterError;

/// A certificate and its key (PEM files).
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA of one run, and the directory its files live in.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    pub ca: CertPair,
}

impl Pki {
    /// Creates the CA in `dir` (created if missing).
    pub fn create(dir: &Path) -> Result<Pki, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|e| ClusterError::io(dir, e))?;
        openssl(
            dir,
            "the CA",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "7",
                "-subj",
                "/CN=calico-lab-kubernetes-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            ],
        )?;
        Ok(Pki {
            dir: dir.to_owned(),
            ca: CertPair {
                cert: dir.join("ca.crt"),
                key: dir.join("ca.key"),
            },
        })
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client certificate `name.crt`/`name.key` for user `cn` in groups `orgs`.
    pub fn client(&self, name: &str, cn: &str, orgs: &[&str]) -> Result<CertPair, ClusterError> {
        let subject: String = orgs
            .iter()
            .map(|o| format!("/O={o}"))
            .chain(std::iter::once(format!("/CN={cn}")))
            .collect();
        self.leaf(
            name,
            &subject,
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        )
    }

    /// A serving certificate for `cn` valid for `ips` and `dns` names.
    pub fn server(
        &self,
        name: &str,
        cn: &str,
        ips: &[IpAddr],
        dns: &[&str],
    ) -> Result<CertPair, ClusterError> {
        let sans: Vec<String> = ips
            .iter()
            .map(|ip| format!("IP:{ip}"))
            .chain(dns.iter().map(|d| format!("DNS:{d}")))
            .collect();
        self.leaf(
            name,
            &format!("/CN={cn}"),
            &format!(
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nsubjectAltName={}\n",
                sans.join(",")
            ),
        )
    }

    /// The service-account token signing key pair: `sa.key` (private) and `sa.pub`.
    pub fn service_account_keys(&self) -> Result<CertPair, ClusterError> {
        openssl(
            &self.dir,
            "the service-account key",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-out",
                "sa.key",
            ],
        )?;
        openssl(
            &self.dir,
            "the service-account public key",
            &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        )?;
        Ok(CertPair {
            cert: self.dir.join("sa.pub"),
            key: self.dir.join("sa.key"),
        })
    }

    fn leaf(&self, name: &str, subject: &str, ext: &str) -> Result<CertPair, ClusterError> {
        let ext_file = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext_file, ext).map_err(|e| ClusterError::io(&ext_file, e))?;
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            &self.dir,
            &format!("the key of {name}"),
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                subject,
            ],
        )?;
        openssl(
            &self.dir,
            &format!("the certificate of {name}"),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "7",
                "-extfile",
                &ext_file.to_string_lossy(),
            ],
        )?;
        Ok(CertPair {
            cert: self.dir.join(crt),
            key: self.dir.join(key),
        })
    }
}

fn openssl(dir: &Path, what: &str, args: &[&str]) -> Result<(), ClusterError> {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    let out = crate::lab::output_bounded(cmd, std::time::Duration::from_secs(30))?;
    if !out.status.success() {
        return Err(ClusterError::Failed {
            what: format!("openssl: {what}"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// A kubeconfig for `user` (client certificate `pair`) against `server`, trusting `ca`.
/// Paths, not embedded data: every file stays in the run's PKI directory.
pub fn kubeconfig(server: &str, ca: &Path, user: &str, pair: &CertPair) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: calico-lab\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: {user}@calico-lab\n  context:\n    cluster: calico-lab\n    user: {user}\ncurrent-context: {user}@calico-lab\n",
        ca = ca.display(),
        cert = pair.cert.display(),
        key = pair.key.display(),
    )
}
