//! Doing things inside another network namespace without moving the caller.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread, so everything here runs on a
//! dedicated thread that enters the namespace first and is gone when the work is done.
//!
//! - [`run_in`]: a plain closure (sysctl writes, socket creation).
//! - [`with_netlink_in`]: a future on the thread's own current-thread runtime, given a
//!   [`Netlink`] connection opened in that namespace:
//!
//! ```no_run
//! use calico_dataplane::{netns::with_netlink_in, Netlink};
//! let up = with_netlink_in("/run/netns/crs12345-node1".as_ref(), |nl: Netlink| async move {
//!     nl.set_link_up("eth1", true).await
//! })??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::conn::{ConnectError, Netlink};

/// Errors entering a namespace or running work there.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build a tokio runtime in network namespace {path}")]
    Runtime {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open netlink in network namespace {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: Box<ConnectError>,
    },
    #[error("the worker thread in network namespace {path} panicked")]
    Panicked { path: PathBuf },
}

/// An open handle on a namespace file, e.g. to move a link there (`IFLA_NET_NS_FD`).
#[derive(Debug)]
pub struct NetnsFile {
    file: File,
    path: PathBuf,
}

impl NetnsFile {
    pub fn open(path: &Path) -> Result<NetnsFile, NetnsError> {
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(NetnsFile {
            file,
            path: path.to_owned(),
        })
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Moves the calling thread into the namespace. Only for threads made for that purpose.
fn enter(path: &Path) -> Result<(), NetnsError> {
    let ns = NetnsFile::open(path)?;
    // SAFETY: setns with an fd we own; it changes only the calling thread's namespace.
    if unsafe { libc::setns(ns.fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Enter {
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` on a new thread inside the namespace at `path`.
pub fn run_in<R, F>(path: &Path, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(path)?;
            Ok(f())
        })
        .join()
        .map_err(|_| NetnsError::Panicked {
            path: path.to_owned(),
        })?
    })
}

/// Runs the future made by `f` to completion on a new thread inside the namespace at `path`,
/// on that thread's own current-thread tokio runtime (sockets it opens belong to the
/// namespace). Blocks the caller until it finishes: from async code, call it through
/// `spawn_blocking`.
pub fn run_async_in<R, F, Fut>(path: &Path, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = R>,
    R: Send,
{
    run_in(path, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| NetnsError::Runtime {
                path: path.to_owned(),
                source,
            })?;
        Ok(rt.block_on(f()))
    })?
}

/// [`run_async_in`] with a netlink connection opened inside the namespace. Prefer
/// [`Netlink::connect_in`], which needs no thread per call.
pub fn with_netlink_in<R, F, Fut>(path: &Path, f: F) -> Result<R, NetnsError>
where
    F: FnOnce(Netlink) -> Fut + Send,
    Fut: Future<Output = R>,
    R: Send,
{
    run_async_in(path, || async {
        let nl = Netlink::connect().map_err(|source| NetnsError::Connect {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        Ok(f(nl).await)
    })?
}
