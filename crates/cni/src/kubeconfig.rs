//! The kubeconfig the `calico` plugin reads the Kubernetes API with (`kubernetes.kubeconfig`
//! in the netconf), written on the node by the chart's `cni-kubeconfig` container
//! (`calico kubeconfig`), as Calico's install-cni writes `calico-kubeconfig`.
//!
//! Inputs, as the kubelet gives them to a pod: the API server's address from
//! `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` (`KUBERNETES_SERVICE_PROTOCOL`, default
//! `https`), and the pod's projected service-account token and cluster CA. The kubelet rotates a
//! projected token when 80% of its lifetime has passed; [`watch`] compares the file with what
//! the kubeconfig holds every [`REFRESH_EVERY`] and rewrites it when the token (or the CA)
//! changed, so the plugin's token is replaced well before it expires. Writes go through a
//! temporary file and a rename (mode 0600: the file holds a credential), so the plugin never
//! reads half a file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use tracing::{info, warn};

/// How often [`watch`] compares the token with the kubeconfig (Calico's install-cni: 10 s).
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// Where the inputs come from and where the kubeconfig goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `https://host:port` of the API server.
    pub server: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    /// The kubeconfig, as the container sees it (the host's CNI conf dir is mounted).
    pub output: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("{name}: not set (the kubelet sets it in every pod; set it for a cluster without it)")]
    MissingEnv { name: &'static str },
    #[error("{name}: {value:?} {reason}")]
    BadEnv {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: empty (the projected service-account token or CA is not mounted)")]
    Empty { path: PathBuf },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Environment variables read by [`Settings::from_lookup`].
pub const ENV_HOST: &str = "KUBERNETES_SERVICE_HOST";
pub const ENV_PORT: &str = "KUBERNETES_SERVICE_PORT";
pub const ENV_PROTOCOL: &str = "KUBERNETES_SERVICE_PROTOCOL";
/// Overrides of the file locations (defaults: the service-account mount, the chart's path).
pub const ENV_TOKEN_FILE: &str = "CNI_TOKEN_FILE";
pub const ENV_CA_FILE: &str = "CNI_CA_FILE";
pub const ENV_OUTPUT: &str = "CNI_KUBECONFIG";

const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const DEFAULT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
const DEFAULT_OUTPUT: &str = "/host/etc/cni/net.d/calico-kubeconfig";

impl Settings {
    /// Settings from environment variables, looked up with `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, KubeconfigError> {
        let required = |name: &'static str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or(KubeconfigError::MissingEnv { name })
        };
        let host = required(ENV_HOST)?;
        let port = required(ENV_PORT)?;
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(KubeconfigError::BadEnv {
                name: ENV_PORT,
                value: port,
                reason: "is not a port number (1-65535)",
            });
        }
        let protocol = get(ENV_PROTOCOL).unwrap_or_else(|| "https".into());
        if protocol != "https" && protocol != "http" {
            return Err(KubeconfigError::BadEnv {
                name: ENV_PROTOCOL,
                value: protocol,
                reason: "must be https or http",
            });
        }
        if host.contains(['/', ' ', '[', ']']) {
            return Err(KubeconfigError::BadEnv {
                name: ENV_HOST,
                value: host,
                reason: "is not a host name or IP address",
            });
        }
        // An IPv6 service address goes in brackets.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let path = |name, default: &str| PathBuf::from(get(name).unwrap_or_else(|| default.into()));
        Ok(Settings {
            server: format!("{protocol}://{host}:{port}"),
            token_file: path(ENV_TOKEN_FILE, DEFAULT_TOKEN_FILE),
            ca_file: path(ENV_CA_FILE, DEFAULT_CA_FILE),
            output: path(ENV_OUTPUT, DEFAULT_OUTPUT),
        })
    }
}

fn read_nonempty(path: &Path) -> Result<Vec<u8>, KubeconfigError> {
    let data = std::fs::read(path).map_err(|source| KubeconfigError::Read {
        path: path.into(),
        source,
    })?;
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(KubeconfigError::Empty { path: path.into() });
    }
    Ok(data)
}

/// The kubeconfig text for `server`, CA certificate (PEM) and bearer token.
pub fn render(server: &str, ca_pem: &[u8], token: &str) -> String {
    // JSON strings are valid YAML double-quoted scalars: nothing in them is re-typed.
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "# Written by calico-rs (calico kubeconfig) for the calico CNI plugin; rewritten when the\n\
         # service-account token rotates.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n\
         - name: calico\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: calico-context\n  context:\n    cluster: local\n    user: calico\n\
         current-context: calico-context\n",
        server = q(server),
        ca = q(&ca),
        token = q(token.trim()),
    )
}

/// Makes `settings.output` hold the kubeconfig for the current token and CA. Returns whether
/// the file was (re)written; an up-to-date file is left alone.
pub fn refresh(settings: &Settings) -> Result<bool, KubeconfigError> {
    let token = read_nonempty(&settings.token_file)?;
    let ca = read_nonempty(&settings.ca_file)?;
    let text = render(&settings.server, &ca, &String::from_utf8_lossy(&token));
    if std::fs::read(&settings.output).is_ok_and(|current| current == text.as_bytes()) {
        return Ok(false);
    }
    write_atomically(&settings.output, text.as_bytes())?;
    Ok(true)
}

/// Writes `data` to a temporary file beside `path` (mode 0600) and renames it over `path`.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), KubeconfigError> {
    let err = |source| KubeconfigError::Write {
        path: path.into(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

/// Writes the kubeconfig, then keeps it up to date: every `every` until `stop` is set (the
/// binary never sets it: the watch runs as long as the pod). A failed first write is returned;
/// a failed refresh is logged and retried, and the last good file stays.
pub fn watch(
    settings: &Settings,
    every: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), KubeconfigError> {
    refresh(settings)?;
    info!(path = %settings.output.display(), server = %settings.server, "wrote the CNI kubeconfig");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(every);
        match refresh(settings) {
            Ok(true) => {
                info!(path = %settings.output.display(), "token rotated; rewrote the CNI kubeconfig")
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "refreshing the CNI kubeconfig; keeping the last one"),
        }
    }
    Ok(())
}

/// `calico kubeconfig`: settings from the environment, then [`watch`] every [`REFRESH_EVERY`].
/// Returns the exit status (only on error: the watch runs until the pod stops).
pub fn main() -> i32 {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let never = std::sync::atomic::AtomicBool::new(false);
    let result = Settings::from_lookup(|k| std::env::var(k).ok())
        .and_then(|s| watch(&s, REFRESH_EVERY, &never));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("calico kubeconfig: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn server_from_the_service_environment() {
        let s = Settings::from_lookup(env(&[(ENV_HOST, "10.96.0.1"), (ENV_PORT, "443")])).unwrap();
        assert_eq!(s.server, "https://10.96.0.1:443");
        assert_eq!(s.output, PathBuf::from(DEFAULT_OUTPUT));
        let s = Settings::from_lookup(env(&[(ENV_HOST, "fd00::1"), (ENV_PORT, "6443")])).unwrap();
        assert_eq!(s.server, "https://[fd00::1]:6443");
    }

    #[test]
    fn missing_or_bad_environment_names_the_variable() {
        let e = Settings::from_lookup(env(&[(ENV_PORT, "443")])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("KUBERNETES_SERVICE_HOST: not set"),
            "{e}"
        );
        let e = Settings::from_lookup(env(&[(ENV_HOST, "h"), (ENV_PORT, "http")])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("KUBERNETES_SERVICE_PORT: \"http\""),
            "{e}"
        );
        let e = Settings::from_lookup(env(&[
            (ENV_HOST, "h"),
            (ENV_PORT, "1"),
            (ENV_PROTOCOL, "ftp"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string().starts_with("KUBERNETES_SERVICE_PROTOCOL"),
            "{e}"
        );
    }
}
