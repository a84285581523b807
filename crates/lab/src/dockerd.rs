//! Running one Docker 20.10 daemon per lab host (a network namespace), isolated from any other
//! dockerd on the machine, and stopping it for sure.
//!
//! The invocation (proven in docs/docker-lab.md):
//! `unshare --mount --propagation private sh -c 'mkdir -p /run/docker/plugins && mount --bind
//! <plugins> /run/docker/plugins && exec nsenter --net=/run/netns/<ns> dockerd --config-file
//! <state>/daemon.json --data-root <state>/data --exec-root <state>/exec -H unix://<state>/docker.sock
//! --pidfile <state>/docker.pid --bridge=none --iptables=false --ip6tables=false'`.
//! - a private mount namespace so each daemon sees its own plugin directory at the fixed path
//!   dockerd searches (`/run/docker/plugins`), and so its overlay mounts vanish with it;
//! - `nsenter --net` rather than `ip netns exec`, which remounts /sys and hides the cgroup
//!   mounts dockerd needs;
//! - dockerd starts its own containerd with socket and state under the exec root and data
//!   root, so several daemons do not share one.
//!
//! The exec chain (unshare → sh → nsenter → dockerd) keeps one pid: the child *is* dockerd.
//!
//! Test and demo harness (it moved here from calico-docker, whose production code does not
//! start daemons): the Docker tests, the image tests and anything that needs a throw-away
//! dockerd in a lab host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("dockerd state dir {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start dockerd: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("dockerd in netns {netns} exited during start-up ({status}); log {log}: {tail}")]
    Exited {
        netns: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("dockerd in netns {netns} did not answer within {secs}s; log {log}: {tail}")]
    NotReady {
        netns: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
}

#[derive(Debug, Clone)]
pub struct DockerdConfig {
    /// Name under /run/netns of the host's network namespace.
    pub netns: String,
    /// Per-daemon directory for data, exec root, socket, pid file and log (created).
    pub state_dir: PathBuf,
    /// The directory this daemon sees as /run/docker/plugins (created).
    pub plugins_dir: PathBuf,
    pub start_timeout: Duration,
    /// `--cgroup-parent` for the containers (e.g. a per-run `/calico-lab-<id>-docker` that the
    /// run records, so teardown finds every container process); `None`: dockerd's `docker`.
    pub cgroup_parent: Option<String>,
}

/// A running dockerd; stopped (and its containerd reaped) on drop.
#[derive(Debug)]
pub struct Dockerd {
    child: Option<Child>,
    config: DockerdConfig,
    /// Set once [`Dockerd::stop`] ran: a later stop (e.g. the drop of this value after a new
    /// daemon was started on the same state dir) must not reap the new daemon's processes.
    stopped: bool,
}

/// Whether the daemon's API answers `GET /_ping` with 200 on its unix socket (one HTTP/1.0
/// request, bounded to a second).
async fn ping(socket: &Path) -> bool {
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(socket).await?;
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/1.") && head.ends_with(b" 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), exchange).await,
        Ok(Ok(true))
    )
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

impl Dockerd {
    pub fn socket_path(state_dir: &Path) -> PathBuf {
        state_dir.join("docker.sock")
    }

    /// The shell script run inside the private mount namespace.
    pub fn script(config: &DockerdConfig) -> String {
        let s = config.state_dir.display();
        let cgroup_parent = config
            .cgroup_parent
            .as_ref()
            .map(|c| format!(" --cgroup-parent '{c}'"))
            .unwrap_or_default();
        format!(
            "mkdir -p /run/docker/plugins && mount --bind '{plugins}' /run/docker/plugins && \
             exec nsenter --net=/run/netns/{ns} dockerd --config-file '{s}/daemon.json' \
             --data-root '{s}/data' --exec-root '{s}/exec' -H 'unix://{s}/docker.sock' \
             --pidfile '{s}/docker.pid' --bridge=none --iptables=false --ip6tables=false \
             --shutdown-timeout 5{cgroup_parent}",
            plugins = config.plugins_dir.display(),
            ns = config.netns,
        )
    }

    /// Starts dockerd and waits (bounded by `start_timeout`) until its API answers.
    pub async fn start(config: DockerdConfig) -> Result<Self, DaemonError> {
        for dir in [&config.state_dir, &config.plugins_dir] {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::Dir {
                path: dir.clone(),
                source,
            })?;
        }
        let cfg = config.state_dir.join("daemon.json");
        std::fs::write(&cfg, "{}\n").map_err(|source| DaemonError::Dir { path: cfg, source })?;
        let log_path = config.state_dir.join("dockerd.log");
        let log = std::fs::File::create(&log_path).map_err(|source| DaemonError::Dir {
            path: log_path.clone(),
            source,
        })?;
        let log2 = log.try_clone().map_err(DaemonError::Spawn)?;
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(Self::script(&config))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(DaemonError::Spawn)?;
        let mut daemon = Dockerd {
            child: Some(child),
            config,
            stopped: false,
        };
        let socket = daemon.socket();
        let deadline = Instant::now() + daemon.config.start_timeout;
        loop {
            if let Some(child) = daemon.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(DaemonError::Exited {
                    netns: daemon.config.netns.clone(),
                    status: status.to_string(),
                    tail: tail(&log_path),
                    log: log_path,
                });
            }
            if ping(&socket).await {
                tracing::info!(netns = %daemon.config.netns, "dockerd ready");
                return Ok(daemon);
            }
            if Instant::now() >= deadline {
                return Err(DaemonError::NotReady {
                    netns: daemon.config.netns.clone(),
                    secs: daemon.config.start_timeout.as_secs(),
                    tail: tail(&log_path),
                    log: log_path,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn socket(&self) -> PathBuf {
        Self::socket_path(&self.config.state_dir)
    }

    pub fn config(&self) -> &DockerdConfig {
        &self.config
    }

    /// A `docker` CLI command aimed at this daemon.
    pub fn cli(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H")
            .arg(format!("unix://{}", self.socket().display()));
        c
    }

    /// Stops dockerd (SIGTERM, then SIGKILL after 15 s), then kills what an unclean exit can
    /// leave: its containerd, the containers' shims and the containers' processes.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            // SAFETY: plain kill(2) on the pid of our own child, which we have not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        self.reap_containerd();
        self.reap_shims();
    }

    /// Shims of this daemon (`containerd-shim-runc-v2 ... -id <id> -address <our exec root>/...`)
    /// as (shim pid, container id).
    pub fn leftover_shims(&self) -> Vec<(i32, String)> {
        let exec_root = self.config.state_dir.join("exec");
        let exec_root = exec_root.to_string_lossy();
        let mut out = Vec::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return out;
        };
        for entry in procs.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let raw = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args.first().is_some_and(|a| a.contains("containerd-shim"));
            let value = |flag: &str| {
                args.iter()
                    .position(|a| a == flag)
                    .and_then(|i| args.get(i + 1))
            };
            let ours = value("-address").is_some_and(|a| a.starts_with(&*exec_root));
            if let (true, true, Some(id)) = (is_shim, ours, value("-id")) {
                out.push((pid, id.clone()));
            }
        }
        out
    }

    /// Kills the processes of each leftover container (found through its cgroup,
    /// `<cgroup parent>/<id>` under every v1 controller, as the cgroupfs driver lays them out),
    /// removes the emptied cgroups, and kills the shim.
    fn reap_shims(&self) {
        let parent = self
            .config
            .cgroup_parent
            .as_deref()
            .unwrap_or("docker")
            .trim_start_matches('/');
        for (shim, id) in self.leftover_shims() {
            let dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
                .map(|c| c.path().join(parent).join(&id))
                .filter(|d| d.is_dir())
                .collect();
            for dir in &dirs {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) on a process inside this daemon's container cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            // SAFETY: kill(2) on a shim verified above to serve this daemon's containerd.
            unsafe { libc::kill(shim, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(100));
            for dir in &dirs {
                let _ = std::fs::remove_dir(dir);
            }
            tracing::warn!(container = %id, "reaped a container left by an unclean dockerd exit");
        }
    }

    /// Kills dockerd and its containerd abruptly (SIGKILL, as a crash of the service would),
    /// leaving the containers' shims to the next start's clean-up. Used to test recovery.
    /// (Killing dockerd alone leaves a containerd the next dockerd cannot reuse: its output
    /// pipe went with the old daemon.)
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.reap_containerd();
    }

    /// dockerd stops its containerd on a clean exit; after a kill it may survive. Its pid file
    /// is in our exec root; the pid is killed only if its command line names that exec root.
    fn reap_containerd(&self) {
        let exec_root = self.config.state_dir.join("exec");
        let pid_file = exec_root.join("containerd").join("containerd.pid");
        let Ok(text) = std::fs::read_to_string(&pid_file) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<i32>() else {
            return;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*exec_root.to_string_lossy());
        if ours {
            // SAFETY: kill(2) on a pid verified above to be the containerd of our daemon.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Dockerd {
    /// Leaves the daemon running after `self` is dropped (a detached lab: `calico-lab k8s
    /// up`); returns its PID for the run record, whose teardown kills it.
    pub fn detach(mut self) -> Option<u32> {
        self.stopped = true;
        self.child.take().map(|c| c.id())
    }

    /// The daemon's PID while this value owns it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds the FROM-scratch busybox image (images/busybox/build.sh) into `daemon` as `tag`.
pub fn build_busybox_image(daemon: &Dockerd, tag: &str) -> Result<(), std::io::Error> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/busybox/build.sh");
    let out = Command::new("sh")
        .arg(script)
        .arg(daemon.socket())
        .arg(tag)
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "images/busybox/build.sh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Builds an image FROM scratch with `binaries` and the shared libraries they load
/// (images/calico-node/build.sh); the first binary is the entrypoint.
pub fn build_scratch_image(
    daemon: &Dockerd,
    tag: &str,
    binaries: &[&Path],
) -> Result<(), std::io::Error> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/calico-node/build.sh");
    let out = Command::new("sh")
        .arg(script)
        .arg(daemon.socket())
        .arg(tag)
        .args(binaries)
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "images/calico-node/build.sh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
