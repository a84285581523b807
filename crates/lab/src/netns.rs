//! Running Rust code inside a network namespace.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling *thread* only, so the code runs
//! on a dedicated thread that enters the namespace first and ends with the closure; the
//! caller's thread never changes namespace.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Errors entering a namespace.
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
    #[error("cannot build a tokio runtime inside network namespace {path}")]
    Runtime {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread running inside network namespace {path} panicked")]
    Panicked { path: PathBuf },
}

fn enter(path: &Path) -> Result<(), NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: setns on a valid fd we own; it affects only the current thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Enter {
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` on a new thread inside the namespace at `path` and returns its result.
pub fn run_in<R, F>(path: &Path, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            enter(path)?;
            Ok(f())
        });
        handle.join().map_err(|_| NetnsError::Panicked {
            path: path.to_owned(),
        })?
    })
}

/// Runs the future made by `f` to completion on a current-thread tokio runtime, on a new
/// thread inside the namespace at `path` (sockets it opens, e.g. netlink, belong to that
/// namespace).
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
