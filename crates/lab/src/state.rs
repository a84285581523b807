//! What each lab run owns, recorded on disk so that leftovers of killed runs can be swept.
//!
//! Layout (all under [`ROOT`], a tmpfs that a reboot clears):
//! - `runs/<id>.json`: the [`RunRecord`]: owner PID and its start time, namespaces, PIDs of
//!   daemons started outside a guard, the run's directory. Written *before* anything it names
//!   is created, rewritten atomically (temp file + rename) whenever it grows.
//! - `<id>/`: the run's directory (logs, pid files, etcd data, generated config).
//!
//! A run is *dead* when its owner PID no longer exists or now belongs to another process (the
//! start time differs). A detached run (`calico-lab up`) has no owner and is never swept: only
//! `calico-lab down` removes it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::process::{kill_pid, pid_alive, pid_start_time};

/// Root of every lab's on-disk state.
pub const ROOT: &str = "/run/calico-lab";

/// Errors reading or writing run records.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write run record {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read run record {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run record {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no lab run {id} (no {path})")]
    NoSuchRun { id: String, path: PathBuf },
}

/// Everything one run owns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunRecord {
    pub id: String,
    /// PID of the process that owns the run; `None` when detached.
    pub owner_pid: Option<u32>,
    /// The owner's start time (see [`pid_start_time`]) to detect PID reuse.
    pub owner_start: Option<u64>,
    /// Network namespaces (names under /run/netns), LAN first.
    pub namespaces: Vec<String>,
    /// Daemons started detached (not killed by a death signal).
    pub pids: Vec<u32>,
    /// Cgroups the run owns (relative to each hierarchy's root, e.g. a Kubernetes node's
    /// cgroup root): every process left in them is killed and they are removed.
    #[serde(default)]
    pub cgroups: Vec<String>,
    /// The run's directory.
    pub dir: PathBuf,
}

impl RunRecord {
    pub fn path_for(id: &str) -> PathBuf {
        Path::new(ROOT).join("runs").join(format!("{id}.json"))
    }

    /// Writes the record atomically.
    pub fn save(&self) -> Result<(), StateError> {
        let path = Self::path_for(&self.id);
        let werr = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(werr)?;
        }
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        let json = serde_json::to_vec_pretty(self).map_err(|e| werr(std::io::Error::other(e)))?;
        std::fs::write(&tmp, json).map_err(werr)?;
        std::fs::rename(&tmp, &path).map_err(werr)
    }

    pub fn load(id: &str) -> Result<RunRecord, StateError> {
        let path = Self::path_for(id);
        let bytes = std::fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                StateError::NoSuchRun {
                    id: id.to_owned(),
                    path: path.clone(),
                }
            } else {
                StateError::Read {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path, source })
    }

    /// True when the owner is gone (or was replaced by another process with its PID).
    pub fn owner_dead(&self) -> bool {
        self.owner_pid
            .is_some_and(|pid| process_gone(pid, self.owner_start))
    }
}

/// Whether process `pid` (started at `start`, when known) no longer exists: dead, or its PID
/// now belongs to another process.
fn process_gone(pid: u32, start: Option<u64>) -> bool {
    if !pid_alive(pid) {
        return true;
    }
    match (start, pid_start_time(pid)) {
        (Some(recorded), Some(now)) => recorded != now,
        _ => false,
    }
}

/// Prefix of the temporary directories that etcds started by tests keep their data in.
pub const ETCD_TEMP_PREFIX: &str = "calico-lab-etcd-";
/// File in such a directory naming the process that owns it: `<pid> <start time>`.
const OWNER_FILE: &str = "lab-owner";

/// Marks `dir` as owned by this process, so that [`sweep`] removes it if the process is
/// killed before it can clean up (a SIGKILLed test never runs its destructors).
pub fn write_owner(dir: &Path) -> std::io::Result<()> {
    let pid = std::process::id();
    let start = pid_start_time(pid).unwrap_or(0);
    std::fs::write(dir.join(OWNER_FILE), format!("{pid} {start}"))
}

/// Owned temporary directories (see [`write_owner`]) whose owner is gone.
fn orphaned_temp_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(ETCD_TEMP_PREFIX)
        })
        .map(|e| e.path())
        .filter(|dir| {
            let Ok(text) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
                return false; // no owner recorded: not ours to judge
            };
            let mut parts = text.split_whitespace();
            match (
                parts.next().and_then(|p| p.parse::<u32>().ok()),
                parts.next().and_then(|s| s.parse::<u64>().ok()),
            ) {
                (Some(pid), start) => process_gone(pid, start.filter(|s| *s != 0)),
                _ => false,
            }
        })
        .collect()
}

/// Every run record on disk (unreadable ones are skipped with a warning).
pub fn list_runs() -> Vec<RunRecord> {
    let dir = Path::new(ROOT).join("runs");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut runs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        match RunRecord::load(id) {
            Ok(r) => runs.push(r),
            Err(e) => tracing::warn!(error = %e, "skipping run record"),
        }
    }
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    runs
}

/// Runs a command bounded in time; returns its stdout (empty on failure).
pub(crate) fn run_quiet(program: &str, args: &[&str]) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let out = child.wait_with_output().ok()?;
                return status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned());
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// True if `/run/netns/NAME` exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Removes everything a run owns: detached daemons, every process still inside its
/// namespaces or its cgroups (a Kubernetes node's containers live in neither of the run's
/// namespaces), every mount under its directory (a node's mount namespace, pods' network
/// namespaces), the namespaces (which removes their links), its cgroups, its directory and its
/// record. Idempotent: what is already gone is skipped.
pub fn teardown_run(rec: &RunRecord) {
    for &pid in &rec.pids {
        kill_pid(pid, Duration::from_secs(5));
    }
    kill_cgroup_processes(&rec.cgroups);
    // Hosts first, the LAN last: deleting a host namespace removes its veth pair.
    for ns in rec.namespaces.iter().rev() {
        if !netns_exists(ns) {
            continue;
        }
        if let Some(pids) = run_quiet("ip", &["netns", "pids", ns]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                if pid != std::process::id() {
                    kill_pid(pid, Duration::from_secs(2));
                }
            }
        }
        if run_quiet("ip", &["netns", "del", ns]).is_none() && netns_exists(ns) {
            tracing::warn!(netns = ns, "could not delete namespace");
        }
    }
    // Processes a namespace's daemons started (containerd's shims start containers) may
    // have been created while we killed: one more pass.
    kill_cgroup_processes(&rec.cgroups);
    remove_cgroups(&rec.cgroups);
    if rec.dir.starts_with(ROOT) && rec.dir != Path::new(ROOT) {
        unmount_under(&rec.dir);
        let _ = std::fs::remove_dir_all(&rec.dir);
    }
    let _ = std::fs::remove_file(RunRecord::path_for(&rec.id));
}

/// The mounted cgroup hierarchies: each v1 controller directory under /sys/fs/cgroup (a
/// symlinked co-mount such as `cpu,cpuacct` once), or /sys/fs/cgroup itself on a pure v2
/// machine.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_owned()];
    }
    let mut out: Vec<PathBuf> = Vec::new();
    let Ok(entries) = std::fs::read_dir(base) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        // `unified` is the v2 hierarchy of a hybrid machine: the kubelet (cgroupfs, v1) never
        // puts anything there.
        if e.file_name() == "unified" || path.is_symlink() || !path.join("cgroup.procs").exists() {
            continue;
        }
        out.push(path);
    }
    out.sort();
    out
}

/// Every cgroup directory at or below `cgroup` in every hierarchy, deepest first.
fn cgroup_dirs(cgroup: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
        if depth > 32 {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out, depth + 1);
                }
            }
        }
        out.push(dir.to_owned());
    }
    let rel = cgroup.trim_start_matches('/');
    let mut out = Vec::new();
    if rel.is_empty() || rel.contains("..") {
        return out; // never the root of a hierarchy
    }
    for h in cgroup_hierarchies() {
        let dir = h.join(rel);
        if dir.is_dir() {
            walk(&dir, &mut out, 0);
        }
    }
    out
}

/// SIGKILLs every process in the cgroups (and below), a few rounds (a dying shim may still
/// start one), bounded.
fn kill_cgroup_processes(cgroups: &[String]) {
    for _ in 0..10 {
        let mut found = false;
        for cg in cgroups {
            for dir in cgroup_dirs(cg) {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                    if pid != std::process::id() {
                        found = true;
                        kill_pid(pid, Duration::ZERO);
                    }
                }
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes the cgroups, deepest first (a cgroup directory goes with rmdir once empty).
fn remove_cgroups(cgroups: &[String]) {
    for cg in cgroups {
        for dir in cgroup_dirs(cg) {
            if let Err(e) = std::fs::remove_dir(&dir) {
                tracing::warn!(cgroup = %dir.display(), error = %e, "could not remove cgroup");
            }
        }
    }
}

/// Mount points at or below `dir` in this process's mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount_path(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches every mount at or below `dir` (e.g. a node's kept mount namespace), deepest first.
fn unmount_under(dir: &Path) {
    // A mount may be stacked several times: bounded rounds.
    for _ in 0..5 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: umount2 with a valid NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                let e = std::io::Error::last_os_error();
                tracing::warn!(mount = %m.display(), error = %e, "could not unmount");
            }
        }
    }
}

/// Tears down every run whose owner is dead; returns the ids swept. Detached runs and runs of
/// live processes are left alone.
pub fn sweep() -> Vec<String> {
    let mut swept = Vec::new();
    for rec in list_runs() {
        if rec.owner_dead() {
            tracing::info!(run = rec.id, owner = ?rec.owner_pid, "sweeping leftovers of a dead run");
            teardown_run(&rec);
            swept.push(rec.id);
        }
    }
    for dir in orphaned_temp_dirs() {
        tracing::info!(dir = %dir.display(), "removing the data of a dead test's etcd");
        if std::fs::remove_dir_all(&dir).is_ok() {
            swept.push(dir.display().to_string());
        }
    }
    swept
}

#[cfg(test)]
mod owner_tests {
    use super::*;

    #[test]
    fn temp_dirs_of_dead_owners_are_orphans_and_live_ones_are_not() {
        let mine = tempfile::Builder::new()
            .prefix(ETCD_TEMP_PREFIX)
            .tempdir()
            .unwrap();
        write_owner(mine.path()).unwrap();
        let dead = tempfile::Builder::new()
            .prefix(ETCD_TEMP_PREFIX)
            .tempdir()
            .unwrap();
        // A process that has exited (and been reaped) owns the second one.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        std::fs::write(dead.path().join(OWNER_FILE), format!("{pid} 1")).unwrap();

        let orphans = orphaned_temp_dirs();
        assert!(orphans.contains(&dead.path().to_path_buf()), "{orphans:?}");
        assert!(!orphans.contains(&mine.path().to_path_buf()), "{orphans:?}");
    }
}
