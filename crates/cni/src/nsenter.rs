//! Entering the pod's network namespace on the calling thread, for one synchronous closure.
//!
//! `setns(CLONE_NEWNET)` changes only the calling thread's namespace. The closure is
//! synchronous, so no other task can run on this thread while it is switched (whatever the
//! runtime), and the thread is switched back before this returns. That spares ADD a thread
//! per namespace visit: spawning and joining one means two scheduler hand-offs, which on a
//! loaded node cost more than the work itself. Sockets the closure opens stay in the pod's
//! namespace for their whole life; sysctl files it writes are the pod's.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NsEnterError {
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
}

fn open(path: &Path) -> Result<File, NsEnterError> {
    File::open(path).map_err(|source| NsEnterError::Open {
        path: path.to_owned(),
        source,
    })
}

fn setns(file: &File, path: &Path) -> Result<(), NsEnterError> {
    // SAFETY: setns on a namespace fd we hold open; it affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NsEnterError::Enter {
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` on this thread inside the network namespace at `path`, then switches back.
pub fn in_netns<R>(path: &Path, f: impl FnOnce() -> R) -> Result<R, NsEnterError> {
    let home_path = Path::new("/proc/thread-self/ns/net");
    let home = open(home_path)?;
    let target = open(path)?;
    setns(&target, path)?;
    let out = f();
    if let Err(e) = setns(&home, home_path) {
        // Going on would create the host's state inside the pod: stop here.
        eprintln!("calico: cannot return to the original network namespace: {e}");
        std::process::abort();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_named_and_nothing_runs() {
        let mut ran = false;
        let e = in_netns(Path::new("/run/netns/calico-rs-no-such-ns"), || ran = true).unwrap_err();
        assert!(e.to_string().contains("calico-rs-no-such-ns"), "{e}");
        assert!(!ran);
    }

    #[test]
    fn the_thread_comes_back_home() {
        let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        // Entering our own namespace exercises both switches (needs root, as the tests have);
        // entering a pod's is what every ADD in tests/ does.
        let inside = in_netns(Path::new("/proc/self/ns/net"), || {
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
