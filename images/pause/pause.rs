//! The pod sandbox's "pause" process (containerd's `sandbox_image`): it holds the pod's
//! namespaces open and does nothing else. It exits on SIGINT/SIGTERM (the runtime stops the
//! sandbox that way) and, when it is PID 1 of a shared PID namespace, reaps orphaned children.
//!
//! Built as a static binary (no libc in the image) by images/containerd/build.sh:
//! `rustc -O -C panic=abort -C target-feature=+crt-static -C relocation-model=static pause.rs`. Only std and four libc
//! calls, declared here, so that it needs no crate.

use std::os::raw::c_int;

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;
const WNOHANG: c_int = 1;

unsafe extern "C" {
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    fn pause() -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn _exit(status: c_int) -> !;
}

extern "C" fn on_stop(_: c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { _exit(0) }
}

extern "C" fn on_child(_: c_int) {
    let mut status = 0;
    // SAFETY: waitpid is async-signal-safe; reap every finished child without blocking.
    while unsafe { waitpid(-1, &mut status, WNOHANG) } > 0 {}
}

fn main() {
    // SAFETY: installing handlers that only call async-signal-safe functions.
    unsafe {
        signal(SIGINT, on_stop);
        signal(SIGTERM, on_stop);
        signal(SIGCHLD, on_child);
    }
    loop {
        // SAFETY: pause(2) just waits for a signal.
        unsafe { pause() };
    }
}
