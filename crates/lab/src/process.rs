//! Child processes that cannot outlive their owner.
//!
//! Every process the lab starts goes through [`spawn`]: its output goes to a log file, it is
//! optionally moved into a network namespace (by `setns` between fork and exec, so the PID we
//! hold is the daemon itself, not a wrapper), and unless it is *detached* it gets
//! `PR_SET_PDEATHSIG(SIGKILL)` so that a test killed with SIGKILL leaves nothing running.
//!
//! Note: the death signal fires when the *thread* that forked the child exits, not only the
//! process. Spawn long-lived children from a thread that lives as long as the guard (the test's
//! own thread), never from a short-lived helper thread.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors starting or stopping a child process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot open network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open log file {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// How to start a child.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// Network namespace to run in (`/run/netns/NAME` or `/proc/PID/ns/net`); `None` keeps
    /// the caller's.
    pub netns: Option<PathBuf>,
    /// File that receives stdout and stderr (appended); `None` discards them.
    pub log: Option<PathBuf>,
    /// A detached child survives its parent: no death signal, its own session (so a Ctrl-C on
    /// the terminal does not reach it), and the guard does not kill it on drop.
    pub detached: bool,
}

/// A running child. Killed (SIGTERM, then SIGKILL after a bounded grace period) on drop unless
/// it was spawned detached or [`ProcessGuard::detach`] was called.
#[derive(Debug)]
pub struct ProcessGuard {
    program: String,
    child: Option<Child>,
    log: Option<PathBuf>,
    detached: bool,
}

/// Starts `cmd` as described by `opts`.
pub fn spawn(mut cmd: Command, opts: &SpawnOptions) -> Result<ProcessGuard, ProcessError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let netns = match &opts.netns {
        Some(path) => Some(File::open(path).map_err(|source| ProcessError::OpenNetns {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    match &opts.log {
        Some(path) => {
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| ProcessError::Log {
                        path: path.clone(),
                        source,
                    })
            };
            cmd.stdout(open()?).stderr(open()?);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    cmd.stdin(Stdio::null());
    let netns_fd = netns.as_ref().map(|f| f.as_raw_fd());
    let detached = opts.detached;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls (getppid, prctl, setsid, setns); it allocates nothing.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if detached {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            if let Some(fd) = netns_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    drop(netns);
    tracing::debug!(program, pid = child.id(), detached, "spawned");
    Ok(ProcessGuard {
        program,
        child: Some(child),
        log: opts.log.clone(),
        detached,
    })
}

impl ProcessGuard {
    /// The child's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The program name, for messages.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Path of the log file, if any.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Contents of the log file (empty when there is none or it cannot be read).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// `Some(status)` once the child has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// True while the child runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Sends SIGKILL and reaps the child.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL. Returns true if it exited on SIGTERM.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: plain kill(2) on our own child's PID, which we have not reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Gives up ownership: the process keeps running after the guard is dropped. Returns its
    /// PID so that the caller can record it (e.g. in a pid file).
    pub fn detach(mut self) -> Option<u32> {
        self.detached = true;
        self.child.take().map(|c| c.id())
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if !self.detached {
            self.stop(Duration::from_secs(3));
        }
    }
}

/// True if a process with this PID exists (zombies included).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The start time of a process (field 22 of /proc/PID/stat, clock ticks since boot), used to
/// tell a live owner from a new process that reused its PID.
pub fn pid_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kills `pid` with SIGTERM, then SIGKILL if it is still there after `grace`. For processes
/// that are not our children (detached daemons found through pid files).
pub fn kill_pid(pid: u32, grace: Duration) {
    if !pid_alive(pid) {
        return;
    }
    // SAFETY: kill(2) with a PID we recorded ourselves.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !pid_alive(pid) || is_zombie(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while pid_running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True if `pid` exists and is not a zombie (a zombie has finished; only its parent's
/// `wait` is missing).
pub fn pid_running(pid: u32) -> bool {
    pid_alive(pid) && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s[s.rfind(')')? + 1..].to_owned();
            rest.split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(false)
}
