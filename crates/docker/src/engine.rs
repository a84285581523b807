//! A minimal Docker Engine API client over the daemon's unix socket: the few network calls the
//! driver and the syncer need. API version 1.41 (Docker 20.10).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::UnixStream;

const API: &str = "/v1.41";
const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("docker socket {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("docker API {method} {path}: {reason}")]
    Http {
        method: String,
        path: String,
        reason: String,
    },
    #[error("docker API {method} {path} answered {status}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("docker API {method} {path}: {reason}")]
    Decode {
        method: String,
        path: String,
        reason: String,
    },
    #[error("docker API {method} {path}: no answer within {secs}s")]
    Timeout {
        method: String,
        path: String,
        secs: u64,
    },
}

impl EngineError {
    pub fn status(&self) -> Option<u16> {
        match self {
            EngineError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamConfig {
    pub subnet: String,
    pub gateway: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ipam {
    pub driver: String,
    pub config: Option<Vec<IpamConfig>>,
    pub options: Option<std::collections::BTreeMap<String, String>>,
}

/// The parts of `GET /networks/{id}` we use.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    pub driver: String,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// Container id → attachment (only filled by inspect, not by list).
    pub containers: Option<std::collections::BTreeMap<String, NetworkContainer>>,
}

/// One container attached to a network, from `GET /networks/{id}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkContainer {
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// The parts of `GET /containers/{id}/json` we use.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub hosts_path: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CreateNetwork {
    pub name: String,
    pub driver: String,
    pub check_duplicate: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: CreateIpam,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CreateIpam {
    pub driver: String,
    pub config: Vec<CreateIpamConfig>,
    pub options: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CreateIpamConfig {
    pub subnet: String,
}

#[derive(Debug, Clone)]
pub struct DockerEngine {
    socket: PathBuf,
    timeout: Duration,
}

impl DockerEngine {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        DockerEngine {
            socket: socket.as_ref().to_path_buf(),
            timeout: TIMEOUT,
        }
    }

    /// The same client with another per-call time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, EngineError> {
        let m = method.to_string();
        let fut = self.call_inner(method, path, body);
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| EngineError::Timeout {
                method: m,
                path: path.to_string(),
                secs: self.timeout.as_secs(),
            })?
    }

    async fn call_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, EngineError> {
        let http = |reason: String| EngineError::Http {
            method: method.to_string(),
            path: path.to_string(),
            reason,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| EngineError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("{API}{path}"))
            .header("Host", "docker")
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| http(e.to_string()))?
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(EngineError::Status {
                method: method.to_string(),
                path: path.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        Ok(bytes)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        method: &str,
        path: &str,
        bytes: &[u8],
    ) -> Result<T, EngineError> {
        serde_json::from_slice(bytes).map_err(|e| EngineError::Decode {
            method: method.to_string(),
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    /// `GET /networks/{id or name}`; `None` when dockerd does not know it.
    pub async fn inspect_network(&self, id: &str) -> Result<Option<NetworkInfo>, EngineError> {
        let path = format!("/networks/{id}");
        match self.call(Method::GET, &path, None).await {
            Ok(b) => Self::decode("GET", &path, &b).map(Some),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND.as_u16()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Networks of one driver.
    pub async fn list_networks(&self, driver: &str) -> Result<Vec<NetworkInfo>, EngineError> {
        let filter = serde_json::json!({ "driver": [driver] }).to_string();
        let path = format!("/networks?filters={}", percent_encode(&filter));
        let b = self.call(Method::GET, &path, None).await?;
        Self::decode("GET", &path, &b)
    }

    pub async fn create_network(&self, req: &CreateNetwork) -> Result<String, EngineError> {
        let path = "/networks/create";
        let body = serde_json::to_vec(req).map_err(|e| EngineError::Decode {
            method: "POST".into(),
            path: path.into(),
            reason: e.to_string(),
        })?;
        let b = self.call(Method::POST, path, Some(body)).await?;
        let v: Value = Self::decode("POST", path, &b)?;
        Ok(v.get("Id")
            .and_then(|i| i.as_str())
            .unwrap_or_default()
            .to_string())
    }

    pub async fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        self.call(Method::DELETE, &format!("/networks/{id}"), None)
            .await
            .map(|_| ())
    }

    /// `GET /containers/{id}/json`; `None` when dockerd does not know it.
    pub async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, EngineError> {
        let path = format!("/containers/{id}/json");
        match self.call(Method::GET, &path, None).await {
            Ok(b) => Self::decode("GET", &path, &b).map(Some),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND.as_u16()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /_ping`: whether the daemon answers.
    pub async fn ping(&self) -> Result<(), EngineError> {
        self.call(Method::GET, "/_ping", None).await.map(|_| ())
    }
}

/// Percent-encodes everything but unreserved characters (for the `filters` query).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_encoded() {
        assert_eq!(
            percent_encode(r#"{"driver":["calico"]}"#),
            "%7B%22driver%22%3A%5B%22calico%22%5D%7D"
        );
    }

    #[test]
    fn network_info_reads_docker_inspect_output() {
        let v = br#"{"Name":"cal_net1","Id":"abc","Driver":"calico","EnableIPv6":false,
            "IPAM":{"Driver":"calico-ipam","Options":{},"Config":[{"Subnet":"0.0.0.0/0","Gateway":"0.0.0.0/0"}]},
            "Containers":{}}"#;
        let n: NetworkInfo = serde_json::from_slice(v).unwrap();
        assert_eq!(n.ipam.driver, "calico-ipam");
        assert_eq!(n.ipam.config.unwrap()[0].subnet, "0.0.0.0/0");
    }
}
