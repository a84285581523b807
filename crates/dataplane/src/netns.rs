//! Doing things inside another network namespace without moving the caller.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread. Two ways to use that:
//!
//! - [`visit`]: a synchronous closure on the calling thread, which is switched into the
//!   namespace and back (no thread per call: the CNI plugin's fast path).
//! - [`run_in`]: a plain closure (sysctl writes, socket creation) on a dedicated thread that
//!   enters the namespace first and is gone when the work is done.
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

/// Moves the calling thread into the namespace held open by `ns`.
fn setns(ns: &NetnsFile) -> Result<(), NetnsError> {
    // SAFETY: setns with an fd we hold open; it changes only the calling thread's namespace.
    if unsafe { libc::setns(ns.fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Enter {
            path: ns.path.clone(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Moves the calling thread into the namespace. Only for threads made for that purpose.
fn enter(path: &Path) -> Result<(), NetnsError> {
    setns(&NetnsFile::open(path)?)
}

/// Runs `f` on THIS thread inside the network namespace at `path`, then switches back.
///
/// `f` is synchronous, so nothing else (no other task of any runtime) runs on this thread
/// while it is switched, and the thread is home again before this returns. That spares a
/// thread per visit: spawning and joining one costs two scheduler hand-offs, which on a loaded
/// node is more than the work itself. Sockets `f` opens stay in the visited namespace for their
/// whole life; sysctl files it writes are that namespace's.
pub fn visit<R>(path: &Path, f: impl FnOnce() -> R) -> Result<R, NetnsError> {
    let home = NetnsFile::open(Path::new("/proc/thread-self/ns/net"))?;
    let target = NetnsFile::open(path)?;
    setns(&target)?;
    let out = f();
    if let Err(e) = setns(&home) {
        // Going on would create the host's state inside the visited namespace: stop here.
        tracing::error!(error = %e, "cannot return to the original network namespace");
        eprintln!("calico: cannot return to the original network namespace: {e}");
        std::process::abort();
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visiting_a_missing_namespace_names_it_and_runs_nothing() {
        let mut ran = false;
        let e = visit(Path::new("/run/netns/calico-rs-no-such-ns"), || ran = true).unwrap_err();
        assert!(e.to_string().contains("calico-rs-no-such-ns"), "{e}");
        assert!(!ran);
    }

    #[test]
    fn a_visit_brings_the_thread_back_home() {
        let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        // Visiting our own namespace exercises both switches (needs root, as the tests have);
        // visiting a pod's is what every CNI ADD in crates/cni/tests does.
        let inside = visit(Path::new("/proc/self/ns/net"), || {
            std::fs::read_link("/proc/thread-self/ns/net").unwrap()
        })
        .expect("setns into our own namespace");
        assert_eq!(inside, before);
        assert_eq!(
            std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
            before
        );
    }
}
