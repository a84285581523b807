//! Serving the drivers: HTTP/1 on two unix sockets in dockerd's plugin directory,
//! `<dir>/calico.sock` (NetworkDriver) and `<dir>/calico-ipam.sock` (IpamDriver). dockerd finds
//! a plugin by the socket's file name and POSTs `/Plugin.Activate`, then `/<Interface>.<Call>`.
//!
//! The sockets and the endpoint plumbing act on the network namespace of the thread that runs
//! [`serve`]: the node agent must run it inside the node's namespace.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::net::UnixListener;

use crate::driver::Driver;
use crate::ipam::AddressAllocator;
use crate::plumbing::EndpointPlumber;
use crate::protocol::{ActivateResponse, ErrResponse, PLUGIN_CONTENT_TYPE};

pub const NETWORK_PLUGIN: &str = "calico";
pub const IPAM_PLUGIN: &str = "calico-ipam";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("plugin socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serving {path}: {source}")]
    Serve {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which interface a socket implements; calls to the other interface are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    NetworkDriver,
    IpamDriver,
}

impl Interface {
    fn name(self) -> &'static str {
        match self {
            Interface::NetworkDriver => "NetworkDriver",
            Interface::IpamDriver => "IpamDriver",
        }
    }
}

/// The socket paths for a plugin directory.
pub fn socket_paths(plugins_dir: &Path) -> (PathBuf, PathBuf) {
    (
        plugins_dir.join(format!("{NETWORK_PLUGIN}.sock")),
        plugins_dir.join(format!("{IPAM_PLUGIN}.sock")),
    )
}

struct Ctx<A, P> {
    driver: Arc<Driver<A, P>>,
    interface: Interface,
}

impl<A, P> Clone for Ctx<A, P> {
    fn clone(&self) -> Self {
        Ctx {
            driver: self.driver.clone(),
            interface: self.interface,
        }
    }
}

fn plugin_json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, PLUGIN_CONTENT_TYPE)],
        value.to_string(),
    )
        .into_response()
}

async fn dispatch<A: AddressAllocator, P: EndpointPlumber>(
    State(ctx): State<Ctx<A, P>>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let call = uri.path().trim_start_matches('/');
    if call == "Plugin.Activate" {
        let v = serde_json::to_value(ActivateResponse {
            implements: vec![ctx.interface.name()],
        })
        .unwrap_or_default();
        return plugin_json(StatusCode::OK, v);
    }
    let belongs = call
        .split_once('.')
        .is_some_and(|(iface, _)| iface == ctx.interface.name());
    let result = if belongs {
        ctx.driver.handle(call, &body).await
    } else {
        Err(crate::driver::DriverError::UnknownEndpoint {
            endpoint: call.to_string(),
        })
    };
    match result {
        Ok(v) => plugin_json(StatusCode::OK, v),
        Err(e) => {
            let status = match &e {
                crate::driver::DriverError::UnknownEndpoint { .. } => StatusCode::NOT_FOUND,
                e if e.is_bad_request() => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::warn!(call, error = %e, "plugin call failed");
            let v = serde_json::to_value(ErrResponse { err: e.to_string() }).unwrap_or_default();
            plugin_json(status, v)
        }
    }
}

fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // A socket file left by a previous run would make bind fail; nothing else may live there.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    UnixListener::bind(path).map_err(err)
}

/// Binds both sockets in `plugins_dir` and serves until `shutdown` completes; the sockets are
/// removed on return.
pub async fn serve<A: AddressAllocator, P: EndpointPlumber>(
    driver: Arc<Driver<A, P>>,
    plugins_dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (net_path, ipam_path) = socket_paths(plugins_dir);
    let net = bind(&net_path)?;
    let ipam = bind(&ipam_path)?;
    let router = |interface| {
        Router::new().fallback(dispatch::<A, P>).with_state(Ctx {
            driver: driver.clone(),
            interface,
        })
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let a = axum::serve(net, router(Interface::NetworkDriver))
        .with_graceful_shutdown(wait(stop_rx.clone()));
    let b = axum::serve(ipam, router(Interface::IpamDriver)).with_graceful_shutdown(wait(stop_rx));
    tracing::info!(network = %net_path.display(), ipam = %ipam_path.display(), "Docker drivers listening");
    let stopper = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (ra, rb) = tokio::join!(a, b);
    stopper.abort();
    let _ = std::fs::remove_file(&net_path);
    let _ = std::fs::remove_file(&ipam_path);
    ra.map_err(|source| ServeError::Serve {
        path: net_path.clone(),
        source,
    })?;
    rb.map_err(|source| ServeError::Serve {
        path: ipam_path.clone(),
        source,
    })
}
