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

    /// Opens a connection to dockerd's socket and sends `req` on it. The returned task drives
    /// the connection: abort it once the response body is no longer wanted.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        http: &(dyn Fn(String) -> EngineError + Sync),
    ) -> Result<
        (
            hyper::Response<hyper::body::Incoming>,
            tokio::task::JoinHandle<Result<(), hyper::Error>>,
        ),
        EngineError,
    > {
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
        let conn = tokio::spawn(conn);
        match sender.send_request(req).await {
            Ok(resp) => Ok((resp, conn)),
            Err(e) => {
                conn.abort();
                Err(http(e.to_string()))
            }
        }
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
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("{API}{path}"))
            .header("Host", "docker")
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| http(e.to_string()))?;
        let (resp, driver) = self.send(req, &http).await?;
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

/// One entry of dockerd's event stream (`GET /events`), the parts we use.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct DockerEvent {
    /// `network`, `container`, ...
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `destroy`, `connect`, `disconnect`, ...
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    /// When dockerd recorded it, nanoseconds since the epoch.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct EventActor {
    #[serde(rename = "ID")]
    pub id: String,
    /// For a network: `name` and `type` (its driver); for `connect`/`disconnect` also
    /// `container`.
    #[serde(rename = "Attributes")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// dockerd's event stream, open until dockerd or the connection goes away.
pub struct EventStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    _conn: AbortOnDrop,
}

/// Stops the connection task with the stream.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EventStream {
    /// The next event; `None` when the stream ended. dockerd writes one JSON object per line.
    pub async fn next(&mut self) -> Option<Result<DockerEvent, EngineError>> {
        let decode = |line: &[u8]| {
            serde_json::from_slice::<DockerEvent>(line).map_err(|e| EngineError::Decode {
                method: "GET".into(),
                path: "/events".into(),
                reason: e.to_string(),
            })
        };
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(decode(&line));
            }
            match self.body.frame().await {
                None => return None,
                Some(Err(e)) => {
                    return Some(Err(EngineError::Http {
                        method: "GET".into(),
                        path: "/events".into(),
                        reason: e.to_string(),
                    }));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

impl DockerEngine {
    /// Follows dockerd's events of the given types (`GET /events?filters={"type":[...]}`),
    /// from now on. Connecting is bounded by the client's time limit; the stream itself is
    /// not (it is quiet until something happens).
    pub async fn events(&self, types: &[&str]) -> Result<EventStream, EngineError> {
        let filter = serde_json::json!({ "type": types }).to_string();
        let path = format!("/events?filters={}", percent_encode(&filter));
        let http = |reason: String| EngineError::Http {
            method: "GET".into(),
            path: path.clone(),
            reason,
        };
        let open = async {
            let req = Request::builder()
                .method(Method::GET)
                .uri(format!("{API}{path}"))
                .header("Host", "docker")
                .body(Full::new(Bytes::new()))
                .map_err(|e| http(e.to_string()))?;
            let (resp, conn) = self.send(req, &http).await?;
            if !resp.status().is_success() {
                conn.abort();
                return Err(EngineError::Status {
                    method: "GET".into(),
                    path: path.clone(),
                    status: resp.status().as_u16(),
                    message: String::new(),
                });
            }
            Ok(EventStream {
                body: resp.into_body(),
                buf: Vec::new(),
                _conn: AbortOnDrop(conn.abort_handle()),
            })
        };
        tokio::time::timeout(self.timeout, open)
            .await
            .map_err(|_| EngineError::Timeout {
                method: "GET".into(),
                path: path.clone(),
                secs: self.timeout.as_secs(),
            })?
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
    fn events_read_docker_event_json() {
        let v = br#"{"Type":"network","Action":"connect","Actor":{"ID":"4f1c",
            "Attributes":{"container":"9a2b","name":"cal_net1","type":"calico"}},
            "scope":"local","time":1700000000,"timeNano":1700000000000000000}"#;
        let e: DockerEvent = serde_json::from_slice(v).unwrap();
        assert_eq!((e.kind.as_str(), e.action.as_str()), ("network", "connect"));
        assert_eq!(e.actor.attributes["type"], "calico");
        assert_eq!(e.actor.attributes["name"], "cal_net1");
        assert_eq!(e.time_nano, 1_700_000_000_000_000_000);
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
