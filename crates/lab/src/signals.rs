//! Ctrl-C / SIGTERM / SIGHUP: tear down the labs this process owns, then die of the signal.
//!
//! The handler itself only writes the signal number to a pipe (the one thing that is safe in
//! a signal handler); a watcher thread reads it, tears down every registered run and re-raises
//! the signal with the default action, so the exit status still says what killed us.

use std::collections::BTreeSet;
use std::sync::{Mutex, Once};

use crate::state::{RunRecord, teardown_run};

static REGISTERED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static INSTALL: Once = Once::new();
static mut PIPE_WRITE: libc::c_int = -1;

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    let byte = sig as u8;
    // SAFETY: write(2) is async-signal-safe; PIPE_WRITE is set once before the handler is
    // installed and never changed afterwards.
    unsafe {
        let fd = PIPE_WRITE;
        libc::write(fd, (&byte as *const u8).cast(), 1);
    }
}

/// Registers run `id` for teardown on a fatal signal (installs the handler on first use).
pub fn register(id: &str) {
    install();
    if let Ok(mut set) = REGISTERED.lock() {
        set.insert(id.to_owned());
    }
}

/// The run was torn down or detached: a signal must no longer touch it.
pub fn unregister(id: &str) {
    if let Ok(mut set) = REGISTERED.lock() {
        set.remove(id);
    }
}

fn install() {
    INSTALL.call_once(|| {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills the two fds; we check the result.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            tracing::warn!("cannot create the signal pipe: labs will not be torn down on Ctrl-C");
            return;
        }
        let read_fd = fds[0];
        // SAFETY: written once, before any handler that reads it is installed.
        unsafe { PIPE_WRITE = fds[1] };
        let spawned = std::thread::Builder::new()
            .name("calico-lab-signals".into())
            .spawn(move || watch(read_fd));
        if spawned.is_err() {
            tracing::warn!("cannot start the signal thread: labs will not be torn down on Ctrl-C");
            return;
        }
        for sig in SIGNALS {
            // SAFETY: a zeroed sigaction with our handler; the handler is async-signal-safe.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
    });
}

fn watch(read_fd: libc::c_int) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reading one byte into a valid buffer from our own pipe.
        let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            break;
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return;
    }
    let sig = libc::c_int::from(byte);
    let ids: Vec<String> = REGISTERED
        .lock()
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    eprintln!(
        "calico-lab: signal {sig}: tearing down {} lab run(s)",
        ids.len()
    );
    for id in ids {
        if let Ok(rec) = RunRecord::load(&id) {
            teardown_run(&rec);
        }
    }
    // SAFETY: restore the default action and re-raise so that we die of the signal.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
    std::process::exit(128 + sig);
}
