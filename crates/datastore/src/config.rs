//! Datastore connection settings, loaded the way Calico loads them.
//!
//! Sources (libcalico-go `apiconfig` and calicoctl):
//! - A `CalicoAPIConfig` file, YAML or JSON, strictly parsed (unknown fields are errors):
//!   `apiVersion: projectcalico.org/v3`, `kind: CalicoAPIConfig`, `spec.datastoreType`,
//!   `spec.etcdEndpoints` (comma-separated), `spec.etcdCACertFile`, `spec.etcdCertFile`,
//!   `spec.etcdKeyFile`, `spec.etcdUsername`, `spec.etcdPassword`.
//! - Environment variables `DATASTORE_TYPE`, `ETCD_ENDPOINTS`, `ETCD_CA_CERT_FILE`,
//!   `ETCD_CERT_FILE`, `ETCD_KEY_FILE`, `ETCD_USERNAME`, `ETCD_PASSWORD`; each may also be given
//!   with a `CALICO_` prefix, which wins (Calico reads them through envconfig with that prefix).
//!
//! Precedence: the file and the environment are not merged. An explicitly named file must
//! exist and is the only source. Otherwise the default file `/etc/calico/calicoctl.cfg` is used
//! if it exists, and the environment only if it does not.
//!
//! Defaults: with no `datastoreType`, `etcdv3` if etcd endpoints are given, else `kubernetes`.
//!
//! Not supported (rejected with a clear error rather than ignored): inline PEM content
//! (`etcdKey`, `etcdCert`, `etcdCACert`) and `etcdDiscoverySrv`. Kubernetes fields are accepted
//! in the file (so Calico's files parse) but calico-rs only connects to etcd.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where calicoctl looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/calico/calicoctl.cfg";

/// How to reach etcd: endpoints, TLS files and credentials, as Calico's configuration names them
/// (`etcdEndpoints`, `etcdCACertFile`, `etcdCertFile`, `etcdKeyFile`, `etcdUsername`,
/// `etcdPassword`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    pub ca_cert_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl EtcdConfig {
    /// Plain (no TLS, no auth) configuration for the given endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

/// `spec.datastoreType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatastoreType {
    EtcdV3,
    Kubernetes,
}

impl DatastoreType {
    pub fn as_str(self) -> &'static str {
        match self {
            DatastoreType::EtcdV3 => "etcdv3",
            DatastoreType::Kubernetes => "kubernetes",
        }
    }
}

/// Where a configuration came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Environment,
    /// Parsed from text given by the caller.
    Text,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::Environment => f.write_str("environment"),
            ConfigSource::Text => f.write_str("configuration text"),
        }
    }
}

/// A loaded `CalicoAPIConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalicoApiConfig {
    pub datastore_type: DatastoreType,
    pub etcd: EtcdConfig,
    pub source: ConfigSource,
}

/// Errors loading configuration; each names the source and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist or cannot be read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: not a valid CalicoAPIConfig (YAML or JSON)")]
    Parse {
        source_name: ConfigSource,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{source_name}: apiVersion: expected projectcalico.org/v3, found {found:?}")]
    ApiVersion {
        source_name: ConfigSource,
        found: String,
    },
    #[error("{source_name}: kind: expected CalicoAPIConfig, found {found:?}")]
    Kind {
        source_name: ConfigSource,
        found: String,
    },
    #[error(
        "{source_name}: {field}: unknown datastore type {value:?} (expected etcdv3 or kubernetes)"
    )]
    DatastoreType {
        source_name: ConfigSource,
        field: &'static str,
        value: String,
    },
    #[error("{source_name}: {field}: not supported by calico-rs: {reason}")]
    Unsupported {
        source_name: ConfigSource,
        field: &'static str,
        reason: &'static str,
    },
    #[error("{source_name}: {field}: endpoint {endpoint:?} must be an http:// or https:// URL")]
    Endpoint {
        source_name: ConfigSource,
        field: &'static str,
        endpoint: String,
    },
    #[error("{source_name}: datastore type is {datastore_type}, but calico-rs needs etcdv3")]
    NotEtcd {
        source_name: ConfigSource,
        datastore_type: &'static str,
    },
    #[error("{source_name}: {field}: no etcd endpoints configured")]
    NoEndpoints {
        source_name: ConfigSource,
        field: &'static str,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileDoc {
    api_version: Option<String>,
    kind: Option<String>,
    #[allow(dead_code)]
    metadata: Option<serde_yaml_ng::Value>,
    spec: Option<FileSpec>,
}

/// The spec of a `CalicoAPIConfig`, with Calico's exact field names.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case, dead_code)]
struct FileSpec {
    datastoreType: Option<String>,
    etcdEndpoints: Option<String>,
    etcdDiscoverySrv: Option<String>,
    etcdUsername: Option<String>,
    etcdPassword: Option<String>,
    etcdKeyFile: Option<String>,
    etcdCertFile: Option<String>,
    etcdCACertFile: Option<String>,
    etcdKey: Option<String>,
    etcdCert: Option<String>,
    etcdCACert: Option<String>,
    // Kubernetes datastore fields: accepted so Calico's files parse; unused here.
    kubeconfig: Option<serde_yaml_ng::Value>,
    kubeconfigInline: Option<serde_yaml_ng::Value>,
    k8sAPIEndpoint: Option<serde_yaml_ng::Value>,
    k8sKeyFile: Option<serde_yaml_ng::Value>,
    k8sCertFile: Option<serde_yaml_ng::Value>,
    k8sCAFile: Option<serde_yaml_ng::Value>,
    k8sAPIToken: Option<serde_yaml_ng::Value>,
    k8sInsecureSkipTLSVerify: Option<serde_yaml_ng::Value>,
    k8sDisableNodePoll: Option<serde_yaml_ng::Value>,
    k8sClientQPS: Option<serde_yaml_ng::Value>,
}

/// Raw values from either source, before defaults and validation. "" counts as unset.
#[derive(Default)]
struct Raw {
    datastore_type: Option<String>,
    endpoints: Option<String>,
    discovery_srv: Option<String>,
    username: Option<String>,
    password: Option<String>,
    key_file: Option<String>,
    cert_file: Option<String>,
    ca_cert_file: Option<String>,
    inline_pem: bool,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// Field names for messages, per source.
struct Names {
    datastore_type: &'static str,
    endpoints: &'static str,
    discovery_srv: &'static str,
    inline_pem: &'static str,
}

const FILE_NAMES: Names = Names {
    datastore_type: "spec.datastoreType",
    endpoints: "spec.etcdEndpoints",
    discovery_srv: "spec.etcdDiscoverySrv",
    inline_pem: "spec.etcdKey/etcdCert/etcdCACert",
};

const ENV_NAMES: Names = Names {
    datastore_type: "DATASTORE_TYPE",
    endpoints: "ETCD_ENDPOINTS",
    discovery_srv: "ETCD_DISCOVERY_SRV",
    inline_pem: "ETCD_KEY/ETCD_CERT/ETCD_CA_CERT",
};

fn build(raw: Raw, source: ConfigSource, names: &Names) -> Result<CalicoApiConfig, ConfigError> {
    if raw.inline_pem {
        return Err(ConfigError::Unsupported {
            source_name: source,
            field: names.inline_pem,
            reason: "inline certificates; give file paths (etcdCACertFile, etcdCertFile, etcdKeyFile)",
        });
    }
    if raw.discovery_srv.is_some() {
        return Err(ConfigError::Unsupported {
            source_name: source,
            field: names.discovery_srv,
            reason: "DNS SRV discovery; list the endpoints in etcdEndpoints",
        });
    }
    let endpoints: Vec<String> = raw
        .endpoints
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    for e in &endpoints {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(ConfigError::Endpoint {
                source_name: source,
                field: names.endpoints,
                endpoint: e.clone(),
            });
        }
    }
    let datastore_type = match raw.datastore_type.as_deref().map(str::trim) {
        Some("etcdv3") => DatastoreType::EtcdV3,
        Some("kubernetes") => DatastoreType::Kubernetes,
        Some(other) => {
            return Err(ConfigError::DatastoreType {
                source_name: source,
                field: names.datastore_type,
                value: other.to_owned(),
            });
        }
        None if !endpoints.is_empty() => DatastoreType::EtcdV3,
        None => DatastoreType::Kubernetes,
    };
    Ok(CalicoApiConfig {
        datastore_type,
        etcd: EtcdConfig {
            endpoints,
            ca_cert_file: raw.ca_cert_file.map(PathBuf::from),
            cert_file: raw.cert_file.map(PathBuf::from),
            key_file: raw.key_file.map(PathBuf::from),
            username: raw.username,
            password: raw.password,
        },
        source,
    })
}

impl CalicoApiConfig {
    /// Parses a `CalicoAPIConfig` document (YAML or JSON).
    pub fn from_text(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, ConfigSource::Text)
    }

    fn parse(text: &str, source: ConfigSource) -> Result<Self, ConfigError> {
        let doc: FileDoc = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source.clone(),
            source: e,
        })?;
        let api_version = doc.api_version.unwrap_or_default();
        if api_version != calico_api::API_VERSION {
            return Err(ConfigError::ApiVersion {
                source_name: source,
                found: api_version,
            });
        }
        let kind = doc.kind.unwrap_or_default();
        if kind != "CalicoAPIConfig" {
            return Err(ConfigError::Kind {
                source_name: source,
                found: kind,
            });
        }
        let spec = doc.spec.unwrap_or_default();
        let raw = Raw {
            datastore_type: non_empty(spec.datastoreType),
            endpoints: non_empty(spec.etcdEndpoints),
            discovery_srv: non_empty(spec.etcdDiscoverySrv),
            username: non_empty(spec.etcdUsername),
            password: spec.etcdPassword.filter(|p| !p.is_empty()),
            key_file: non_empty(spec.etcdKeyFile),
            cert_file: non_empty(spec.etcdCertFile),
            ca_cert_file: non_empty(spec.etcdCACertFile),
            inline_pem: [spec.etcdKey, spec.etcdCert, spec.etcdCACert]
                .into_iter()
                .any(|v| non_empty(v).is_some()),
        };
        build(raw, source, &FILE_NAMES)
    }

    /// Reads and parses a config file, which must exist.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, ConfigSource::File(path.to_owned()))
    }

    /// From the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_vars(|name| std::env::var(name).ok())
    }

    /// From environment variables looked up by `var` (for tests and embedding).
    pub fn from_env_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| non_empty(var(&format!("CALICO_{name}")).or_else(|| var(name)));
        let raw = Raw {
            datastore_type: get("DATASTORE_TYPE"),
            endpoints: get("ETCD_ENDPOINTS"),
            discovery_srv: get("ETCD_DISCOVERY_SRV"),
            username: get("ETCD_USERNAME"),
            password: get("ETCD_PASSWORD"),
            key_file: get("ETCD_KEY_FILE"),
            cert_file: get("ETCD_CERT_FILE"),
            ca_cert_file: get("ETCD_CA_CERT_FILE"),
            inline_pem: ["ETCD_KEY", "ETCD_CERT", "ETCD_CA_CERT"]
                .into_iter()
                .any(|n| get(n).is_some()),
        };
        build(raw, ConfigSource::Environment, &ENV_NAMES)
    }

    /// calicoctl's rule: `Some(path)` (from `-c/--config`) must exist unless it is the default
    /// path; the default path is used if it exists; otherwise the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, Path::new(DEFAULT_CONFIG_PATH), |n| {
            std::env::var(n).ok()
        })
    }

    /// [`Self::load`] with an explicit default path and environment (for tests).
    pub fn load_with(
        path: Option<&Path>,
        default_path: &Path,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let path = path.unwrap_or(default_path);
        if path.exists() || path != default_path {
            Self::from_file(path)
        } else {
            Self::from_env_vars(var)
        }
    }

    /// The etcd settings, if this configuration is for etcd and names endpoints.
    pub fn etcd_config(&self) -> Result<&EtcdConfig, ConfigError> {
        if self.datastore_type != DatastoreType::EtcdV3 {
            return Err(ConfigError::NotEtcd {
                source_name: self.source.clone(),
                datastore_type: self.datastore_type.as_str(),
            });
        }
        if self.etcd.endpoints.is_empty() {
            return Err(ConfigError::NoEndpoints {
                source_name: self.source.clone(),
                field: match self.source {
                    ConfigSource::Environment => ENV_NAMES.endpoints,
                    _ => FILE_NAMES.endpoints,
                },
            });
        }
        Ok(&self.etcd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: &str = r#"
apiVersion: projectcalico.org/v3
kind: CalicoAPIConfig
metadata:
spec:
  datastoreType: "etcdv3"
  etcdEndpoints: "https://10.0.0.1:2379, https://10.0.0.2:2379,"
  etcdCACertFile: /etc/calico/ca.pem
  etcdCertFile: /etc/calico/cert.pem
  etcdKeyFile: /etc/calico/key.pem
  etcdUsername: calico
  etcdPassword: s3cret
"#;

    #[test]
    fn parses_calicos_file_format() {
        let c = CalicoApiConfig::from_text(FULL).unwrap();
        assert_eq!(c.datastore_type, DatastoreType::EtcdV3);
        assert_eq!(
            c.etcd,
            EtcdConfig {
                endpoints: vec![
                    "https://10.0.0.1:2379".into(),
                    "https://10.0.0.2:2379".into()
                ],
                ca_cert_file: Some("/etc/calico/ca.pem".into()),
                cert_file: Some("/etc/calico/cert.pem".into()),
                key_file: Some("/etc/calico/key.pem".into()),
                username: Some("calico".into()),
                password: Some("s3cret".into()),
            }
        );
    }

    #[test]
    fn parses_json_too() {
        let c = CalicoApiConfig::from_text(
            r#"{"apiVersion":"projectcalico.org/v3","kind":"CalicoAPIConfig",
               "spec":{"etcdEndpoints":"http://192.168.33.10:2379"}}"#,
        )
        .unwrap();
        assert_eq!(
            c.etcd_config().unwrap().endpoints,
            ["http://192.168.33.10:2379"]
        );
    }

    #[test]
    fn datastore_type_defaults_like_calico() {
        let with_endpoints = "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  etcdEndpoints: http://e:2379\n";
        assert_eq!(
            CalicoApiConfig::from_text(with_endpoints)
                .unwrap()
                .datastore_type,
            DatastoreType::EtcdV3
        );
        let bare = "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\n";
        let c = CalicoApiConfig::from_text(bare).unwrap();
        assert_eq!(c.datastore_type, DatastoreType::Kubernetes);
        assert!(matches!(c.etcd_config(), Err(ConfigError::NotEtcd { .. })));
        let no_endpoints = "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: etcdv3\n";
        let err = CalicoApiConfig::from_text(no_endpoints)
            .unwrap()
            .etcd_config()
            .unwrap_err();
        assert!(err.to_string().contains("spec.etcdEndpoints"), "{err}");
    }

    #[test]
    fn rejects_wrong_header_unknown_fields_and_bad_values() {
        let e = CalicoApiConfig::from_text("apiVersion: v1\nkind: CalicoAPIConfig\n").unwrap_err();
        assert!(matches!(e, ConfigError::ApiVersion { .. }), "{e}");
        let e = CalicoApiConfig::from_text("apiVersion: projectcalico.org/v3\nkind: IPPool\n")
            .unwrap_err();
        assert!(matches!(e, ConfigError::Kind { .. }), "{e}");
        let e = CalicoApiConfig::from_text(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  etcdEndpoint: http://x:2379\n",
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        let e = CalicoApiConfig::from_text(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: etcdv2\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("spec.datastoreType"), "{e}");
        let e = CalicoApiConfig::from_text(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  etcdEndpoints: 10.0.0.1:2379\n",
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Endpoint { .. }), "{e}");
        let e = CalicoApiConfig::from_text(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  etcdEndpoints: https://x:2379\n  etcdCACert: '-----BEGIN'\n",
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Unsupported { .. }), "{e}");
    }

    #[test]
    fn kubernetes_fields_are_accepted() {
        let text = "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: kubernetes\n  kubeconfig: /root/.kube/config\n";
        assert_eq!(
            CalicoApiConfig::from_text(text).unwrap().datastore_type,
            DatastoreType::Kubernetes
        );
    }

    #[test]
    fn environment_variables_with_calico_prefix_winning() {
        let c = CalicoApiConfig::from_env_vars(env(&[
            ("DATASTORE_TYPE", "etcdv3"),
            ("ETCD_ENDPOINTS", "http://a:2379,http://b:2379"),
            ("CALICO_ETCD_ENDPOINTS", "http://c:2379"),
            ("ETCD_USERNAME", "root"),
            ("ETCD_PASSWORD", "pw"),
            ("ETCD_CA_CERT_FILE", "/ca"),
            ("ETCD_CERT_FILE", "/cert"),
            ("ETCD_KEY_FILE", "/key"),
        ]))
        .unwrap();
        assert_eq!(c.source, ConfigSource::Environment);
        let e = c.etcd_config().unwrap();
        assert_eq!(e.endpoints, ["http://c:2379"]);
        assert_eq!(e.username.as_deref(), Some("root"));
        assert_eq!(e.password.as_deref(), Some("pw"));
        assert_eq!(e.ca_cert_file.as_deref(), Some(Path::new("/ca")));
        assert_eq!(e.cert_file.as_deref(), Some(Path::new("/cert")));
        assert_eq!(e.key_file.as_deref(), Some(Path::new("/key")));
        let only_endpoints =
            CalicoApiConfig::from_env_vars(env(&[("ETCD_ENDPOINTS", "http://a:2379")]));
        assert_eq!(
            only_endpoints.unwrap().datastore_type,
            DatastoreType::EtcdV3
        );
    }

    #[test]
    fn file_wins_over_environment_and_environment_is_used_without_default_file() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("calicoctl.cfg");
        let vars = env(&[
            ("DATASTORE_TYPE", "etcdv3"),
            ("ETCD_ENDPOINTS", "http://env:2379"),
        ]);
        // No default file: the environment.
        let c = CalicoApiConfig::load_with(None, &default, &vars).unwrap();
        assert_eq!(c.etcd.endpoints, ["http://env:2379"]);
        // Default file present: the file only, environment ignored.
        std::fs::write(
            &default,
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: http://file:2379\n",
        )
        .unwrap();
        let c = CalicoApiConfig::load_with(None, &default, &vars).unwrap();
        assert_eq!(c.etcd.endpoints, ["http://file:2379"]);
        assert_eq!(c.source, ConfigSource::File(default.clone()));
        // An explicitly named file that does not exist is an error, not a fallback.
        let missing = dir.path().join("nope.cfg");
        let e = CalicoApiConfig::load_with(Some(&missing), &default, &vars).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }
}
