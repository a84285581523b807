//! Where calicoctl finds the datastore: a `CalicoAPIConfig` file (`-c`, default
//! `/etc/calico/calicoctl.cfg`) or, when the default file does not exist, the environment.
//!
//! Precedence as in Calico: a config file that exists is used alone; the environment is read
//! only when no file is used. An explicitly named file that is missing is an error. Each
//! environment variable may also be given with a `CALICO_` prefix, which wins.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default path of the client configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/calico/calicoctl.cfg";
/// Endpoint used when neither file nor environment names one.
pub const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("config file {path}: {field}: {reason}")]
    Invalid {
        path: String,
        field: &'static str,
        reason: String,
    },
    #[error("{source_name}: datastore type {datastore_type:?} is not supported (only etcdv3)")]
    UnsupportedDatastore {
        source_name: String,
        datastore_type: String,
    },
}

/// How to reach etcd (the fields of Calico's `etcd*` settings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub ca_cert_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiConfigFile {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    spec: ApiConfigSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiConfigSpec {
    datastore_type: Option<String>,
    etcd_endpoints: Option<String>,
    etcd_username: Option<String>,
    etcd_password: Option<String>,
    etcd_key_file: Option<String>,
    etcd_cert_file: Option<String>,
    #[serde(rename = "etcdCACertFile")]
    etcd_ca_cert_file: Option<String>,
}

/// Loads the datastore configuration. `path` is the `-c` value (None = default path);
/// `env` looks up environment variables (injected so tests need not touch the process
/// environment).
pub fn load(
    path: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<EtcdConfig, ConfigError> {
    let explicit = path.is_some();
    let path = path.unwrap_or(DEFAULT_CONFIG_PATH);
    match std::fs::read_to_string(path) {
        Ok(text) => from_file_text(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => from_env(env),
        Err(source) => Err(ConfigError::Read {
            path: path.into(),
            source,
        }),
    }
}

fn from_file_text(path: &str, text: &str) -> Result<EtcdConfig, ConfigError> {
    let file: ApiConfigFile = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if let Some(kind) = &file.kind
        && kind != "CalicoAPIConfig"
    {
        return Err(ConfigError::Invalid {
            path: path.into(),
            field: "kind",
            reason: format!("expected CalicoAPIConfig, found {kind:?}"),
        });
    }
    if let Some(v) = &file.api_version
        && v != "projectcalico.org/v3"
    {
        return Err(ConfigError::Invalid {
            path: path.into(),
            field: "apiVersion",
            reason: format!("expected projectcalico.org/v3, found {v:?}"),
        });
    }
    let s = file.spec;
    check_type(path, s.datastore_type.as_deref())?;
    Ok(EtcdConfig {
        endpoints: endpoints(s.etcd_endpoints.as_deref()),
        ca_cert_file: s
            .etcd_ca_cert_file
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        cert_file: s
            .etcd_cert_file
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        key_file: s.etcd_key_file.filter(|v| !v.is_empty()).map(PathBuf::from),
        username: s.etcd_username.filter(|v| !v.is_empty()),
        password: s.etcd_password.filter(|v| !v.is_empty()),
    })
}

fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<EtcdConfig, ConfigError> {
    let var = |name: &str| {
        env(&format!("CALICO_{name}"))
            .or_else(|| env(name))
            .filter(|v| !v.is_empty())
    };
    check_type("environment", var("DATASTORE_TYPE").as_deref())?;
    Ok(EtcdConfig {
        endpoints: endpoints(var("ETCD_ENDPOINTS").as_deref()),
        ca_cert_file: var("ETCD_CA_CERT_FILE").map(PathBuf::from),
        cert_file: var("ETCD_CERT_FILE").map(PathBuf::from),
        key_file: var("ETCD_KEY_FILE").map(PathBuf::from),
        username: var("ETCD_USERNAME"),
        password: var("ETCD_PASSWORD"),
    })
}

fn check_type(source_name: &str, t: Option<&str>) -> Result<(), ConfigError> {
    match t {
        None | Some("") | Some("etcdv3") => Ok(()),
        Some(other) => Err(ConfigError::UnsupportedDatastore {
            source_name: source_name.into(),
            datastore_type: other.into(),
        }),
    }
}

fn endpoints(v: Option<&str>) -> Vec<String> {
    let list: Vec<String> = v
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        vec![DEFAULT_ETCD_ENDPOINT.to_string()]
    } else {
        list
    }
}

/// Whether a path names an existing config file (for messages).
pub fn exists(path: &str) -> bool {
    Path::new(path).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn file_gives_endpoints_and_tls_files() {
        let text = "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: \"http://192.168.33.10:2379, http://192.168.33.11:2379\"\n  etcdCACertFile: /ca.pem\n";
        let c = from_file_text("x", text).unwrap();
        assert_eq!(
            c.endpoints,
            ["http://192.168.33.10:2379", "http://192.168.33.11:2379"]
        );
        assert_eq!(c.ca_cert_file.as_deref(), Some(Path::new("/ca.pem")));
    }

    #[test]
    fn kubernetes_datastore_is_refused_with_its_name() {
        let text = "kind: CalicoAPIConfig\nspec:\n  datastoreType: kubernetes\n";
        let err = from_file_text("cfg", text).unwrap_err();
        assert!(err.to_string().contains("\"kubernetes\""), "{err}");
    }

    #[test]
    fn environment_uses_calico_prefix_first_and_defaults_endpoint() {
        let env = |k: &str| match k {
            "CALICO_ETCD_ENDPOINTS" => Some("http://a:1".to_string()),
            "ETCD_ENDPOINTS" => Some("http://b:2".to_string()),
            _ => None,
        };
        assert_eq!(from_env(&env).unwrap().endpoints, ["http://a:1"]);
        assert_eq!(
            from_env(&no_env).unwrap().endpoints,
            [DEFAULT_ETCD_ENDPOINT]
        );
    }

    #[test]
    fn missing_explicit_file_is_an_error_but_missing_default_falls_back() {
        assert!(load(Some("/nonexistent/calicoctl.cfg"), &no_env).is_err());
    }
}
