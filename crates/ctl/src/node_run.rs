//! `calicoctl node run`: prepare the host and start calico-node, as the seed's transcript shows.
//!
//! With Docker (the default) calico-node runs as a host-networked, privileged container from a
//! locally built image (nothing can be pulled); with `--no-docker` it runs as a detached process
//! supervised through its pid file. Either way the command waits, bounded, for the agent to
//! print `Calico node started successfully` and shows what the agent logged until then.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calico_node::status::STARTED_LINE;

/// Name of the calico-node container.
pub const CONTAINER_NAME: &str = "calico-node";
/// The image `images/calico-node/build.sh` produces.
pub const DEFAULT_IMAGE: &str = "calico-rs/node:latest";
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("--{flag}: {reason}")]
    BadFlag { flag: &'static str, reason: String },
    #[error("running {what}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {stderr}")]
    Failed { what: String, stderr: String },
    #[error(
        "image {image} is not on this Docker host and cannot be pulled here: build it with images/calico-node/build.sh"
    )]
    NoImage { image: String },
    #[error("calico-node did not report a successful start within {secs}s (see its log above)")]
    NotStarted { secs: u64 },
    #[error("calico-node exited during start-up (see its log above)")]
    Exited,
}

/// The flags of `calicoctl node run`, plus what calicoctl knows of the datastore.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub name: Option<String>,
    pub ip: Option<String>,
    pub ip6: Option<String>,
    pub as_number: Option<String>,
    pub ip_autodetection_method: Option<String>,
    pub ip6_autodetection_method: Option<String>,
    pub backend: Option<String>,
    pub no_default_ippools: bool,
    pub dryrun: bool,
    pub node_image: Option<String>,
    pub disable_docker_networking: bool,
    pub no_docker: bool,
    /// Datastore settings for the agent (`DATASTORE_TYPE`, `ETCD_ENDPOINTS`, ...).
    pub datastore_env: Vec<(String, String)>,
    /// The agent's run directory (shared with calicoctl for `node status`).
    pub run_dir: PathBuf,
    /// The Docker daemon's socket.
    pub docker_socket: PathBuf,
    /// Docker's data root, shared with the agent so it can keep containers' hosts files
    /// (names of containers on other hosts); read from `docker info` when not given.
    pub docker_root: Option<PathBuf>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The agent's environment, in the order the seed prints it.
pub fn agent_env(o: &RunOptions) -> Result<Vec<(String, String)>, RunError> {
    let backend = o.backend.clone().unwrap_or_else(|| "bird".into());
    if !["bird", "vxlan", "none"].contains(&backend.as_str()) {
        return Err(RunError::BadFlag {
            flag: "backend",
            reason: format!("{backend:?} is not bird, vxlan or none"),
        });
    }
    let mut env = vec![
        (
            "NODENAME".to_string(),
            o.name.clone().unwrap_or_else(hostname),
        ),
        ("CALICO_NETWORKING_BACKEND".into(), backend),
    ];
    if !o.disable_docker_networking && !o.no_docker {
        env.push(("CALICO_LIBNETWORK_ENABLED".into(), "true".into()));
    }
    env.extend(o.datastore_env.iter().cloned());
    let optional = [
        ("IP", &o.ip),
        ("IP6", &o.ip6),
        ("AS", &o.as_number),
        ("IP_AUTODETECTION_METHOD", &o.ip_autodetection_method),
        ("IP6_AUTODETECTION_METHOD", &o.ip6_autodetection_method),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            env.push((k.to_string(), v.clone()));
        }
    }
    if o.no_default_ippools {
        env.push(("NO_DEFAULT_POOLS".into(), "true".into()));
    }
    Ok(env)
}

/// Linux capability names by bit number (capabilities(7)).
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Capabilities missing from this process's bounding set (`CapBnd` in /proc/self/status).
fn missing_capabilities(status: &str) -> Vec<&'static str> {
    let Some(bnd) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return vec![];
    };
    CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bnd >> bit & 1 == 0)
        .map(|(_, name)| *name)
        .collect()
}

/// `--privileged` where the host can grant every capability; otherwise (a sandboxed host whose
/// bounding set lacks some) every capability it has, which is what calico-node needs.
fn privilege_args(missing: &[&str]) -> Vec<String> {
    if missing.is_empty() {
        return vec!["--privileged".into()];
    }
    let mut args = vec!["--cap-add=ALL".to_string()];
    args.extend(missing.iter().map(|c| format!("--cap-drop={c}")));
    // What --privileged also does: no seccomp filter, and a writable /proc/sys (sysctls).
    args.push("--security-opt=seccomp=unconfined".into());
    args.push("--security-opt=systempaths=unconfined".into());
    args
}

/// The `docker run` arguments that start calico-node (pure, so `--dryrun` prints them).
pub fn docker_run_args(o: &RunOptions) -> Result<Vec<String>, RunError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut args: Vec<String> = vec!["run".into(), "--net=host".into()];
    args.extend(privilege_args(&missing_capabilities(&status)));
    args.extend(
        [
            &format!("--name={CONTAINER_NAME}"),
            "-d",
            "--restart=always",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    for (k, v) in agent_env(o)? {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    let run_dir = o.run_dir.display();
    let sock = o.docker_socket.display();
    for v in [
        "/var/log/calico:/var/log/calico".to_string(),
        format!("{run_dir}:/var/run/calico"),
        "/lib/modules:/lib/modules".into(),
        "/run/docker/plugins:/run/docker/plugins".into(),
        format!("{sock}:/var/run/docker.sock"),
    ] {
        args.push("-v".into());
        args.push(v);
    }
    if let Some(root) = &o.docker_root {
        args.push("-v".into());
        args.push(format!("{0}:{0}", root.display()));
    }
    args.push(o.node_image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into()));
    Ok(args)
}

/// Host preparation lines and actions, as Calico's `node run` does them (best effort: inside
/// a container or a namespace some settings are not ours to change).
fn prepare_host(out: &mut dyn Write, ipv6: bool) {
    let _ = writeln!(
        out,
        "Running command to load modules: modprobe -a xt_set ip6_tables"
    );
    let _ = Command::new("modprobe")
        .args(["-a", "xt_set", "ip6_tables"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = writeln!(out, "Enabling IPv4 forwarding");
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
    let _ = writeln!(out, "Enabling IPv6 forwarding");
    if ipv6 || Path::new("/proc/sys/net/ipv6").exists() {
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1");
    }
    let _ = writeln!(out, "Increasing conntrack limit");
    let _ = std::fs::write("/proc/sys/net/netfilter/nf_conntrack_max", "1000000");
}

fn docker(o: &RunOptions) -> Command {
    let mut c = Command::new("docker");
    c.arg("-H")
        .arg(format!("unix://{}", o.docker_socket.display()));
    c
}

fn run_checked(mut cmd: Command, what: &str) -> Result<String, RunError> {
    let output = cmd.output().map_err(|source| RunError::Spawn {
        what: what.to_string(),
        source,
    })?;
    if !output.status.success() {
        return Err(RunError::Failed {
            what: what.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Copies the agent's log lines to `out` until the start line, an exit, or the time bound.
fn follow_until_started(
    reader: impl std::io::Read + Send + 'static,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let _ = writeln!(out, "{line}");
                if line.contains(STARTED_LINE) {
                    return Ok(());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(RunError::NotStarted {
                    secs: START_TIMEOUT.as_secs(),
                });
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(RunError::Exited),
        }
    }
}

/// Runs `calicoctl node run`.
pub fn run(o: &RunOptions, out: &mut dyn Write) -> Result<(), RunError> {
    if o.dryrun {
        let args = docker_run_args(o)?;
        let _ = writeln!(
            out,
            "Use the following command to start the calico/node container:\n"
        );
        let _ = writeln!(out, "docker {}\n", args.join(" "));
        return Ok(());
    }
    prepare_host(out, o.ip6.is_some());
    std::fs::create_dir_all(&o.run_dir).map_err(|source| RunError::Spawn {
        what: format!("creating {}", o.run_dir.display()),
        source,
    })?;
    if o.no_docker {
        return run_supervised(o, out);
    }
    let image = o.node_image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into());
    let mut inspect = docker(o);
    inspect.args(["image", "inspect", "--format", "{{.Id}}", &image]);
    if run_checked(inspect, "docker image inspect").is_err() {
        return Err(RunError::NoImage { image });
    }
    let _ = writeln!(out, "Removing old calico-node container (if running).");
    let mut rm = docker(o);
    rm.args(["rm", "-f", CONTAINER_NAME])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = rm.status();
    let mut o = o.clone();
    if o.docker_root.is_none() {
        let mut info = docker(&o);
        info.args(["info", "--format", "{{.DockerRootDir}}"]);
        o.docker_root = run_checked(info, "docker info")
            .ok()
            .map(|r| PathBuf::from(r.trim()))
            .filter(|p| p.is_absolute());
    }
    let o = &o;
    let args = docker_run_args(o)?;
    let _ = writeln!(out, "Running the following command to start calico-node:\n");
    let _ = writeln!(out, "docker {}\n", args.join(" "));
    let _ = writeln!(
        out,
        "Image may take a short time to download if it is not available locally."
    );
    let mut start = docker(o);
    start.args(&args);
    run_checked(start, "docker run calico-node")?;
    let _ = writeln!(out, "Container started, checking progress logs.\n");
    let mut logs = docker(o);
    let mut child = logs
        .args(["logs", "-f", CONTAINER_NAME])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| RunError::Spawn {
            what: "docker logs".into(),
            source,
        })?;
    let stdout = child.stdout.take().expect("piped");
    let result = follow_until_started(stdout, out);
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Starts calico-node without Docker: a detached process whose pid is in the run directory.
fn run_supervised(o: &RunOptions, out: &mut dyn Write) -> Result<(), RunError> {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("calico-node")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("calico-node"));
    let pid_file = o.run_dir.join("calico-node.pid");
    if let Ok(pid) = std::fs::read_to_string(&pid_file)
        && let Ok(pid) = pid.trim().parse::<i32>()
    {
        let _ = writeln!(out, "Removing old calico-node process (if running).");
        // SAFETY: kill(2) with a pid read from our own pid file and a plain signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(300));
    }
    let log_path = o.run_dir.join("calico-node.log");
    let log = std::fs::File::create(&log_path).map_err(|source| RunError::Spawn {
        what: format!("creating {}", log_path.display()),
        source,
    })?;
    let mut cmd = Command::new(&exe);
    cmd.envs(agent_env(o)?)
        .env("CALICO_RUN_DIR", &o.run_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|source| RunError::Spawn {
            what: "log file".into(),
            source,
        })?)
        .stderr(log);
    // Its own session: the agent outlives this command and the terminal it ran in.
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let child = cmd.spawn().map_err(|source| RunError::Spawn {
        what: exe.display().to_string(),
        source,
    })?;
    let _ = std::fs::write(&pid_file, child.id().to_string());
    let _ = writeln!(
        out,
        "Started calico-node (pid {}), log {}\n",
        child.id(),
        log_path.display()
    );
    // Follow the log file until the agent reports.
    let deadline = Instant::now() + START_TIMEOUT;
    let mut shown = 0usize;
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        for line in text.lines().skip(shown) {
            let _ = writeln!(out, "{line}");
            shown += 1;
            if line.contains(STARTED_LINE) {
                return Ok(());
            }
        }
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(child.id() as i32, 0) } != 0 {
            return Err(RunError::Exited);
        }
        if Instant::now() > deadline {
            return Err(RunError::NotStarted {
                secs: START_TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RunOptions {
        RunOptions {
            name: Some("node1".into()),
            datastore_env: vec![("ETCD_ENDPOINTS".into(), "http://192.168.33.10:2379".into())],
            run_dir: "/var/run/calico".into(),
            docker_socket: "/var/run/docker.sock".into(),
            ..Default::default()
        }
    }

    #[test]
    fn docker_command_matches_the_seed() {
        let args = docker_run_args(&opts()).unwrap().join(" ");
        assert!(args.starts_with("run --net=host --"), "{args}");
        assert!(
            args.contains(
                "--name=calico-node -d --restart=always \
             -e NODENAME=node1 -e CALICO_NETWORKING_BACKEND=bird -e CALICO_LIBNETWORK_ENABLED=true \
             -e ETCD_ENDPOINTS=http://192.168.33.10:2379"
            ),
            "{args}"
        );
        assert!(
            args.contains("-v /var/run/calico:/var/run/calico"),
            "{args}"
        );
        assert!(
            args.contains("-v /run/docker/plugins:/run/docker/plugins"),
            "{args}"
        );
        assert!(args.ends_with(DEFAULT_IMAGE), "{args}");
        let mut o = opts();
        o.docker_root = Some("/var/lib/docker".into());
        let args = docker_run_args(&o).unwrap().join(" ");
        assert!(
            args.contains("-v /var/lib/docker:/var/lib/docker"),
            "{args}"
        );
    }

    #[test]
    fn privileged_only_when_every_capability_can_be_granted() {
        assert_eq!(privilege_args(&[]), ["--privileged"]);
        let sandboxed = "CapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\n";
        let missing = missing_capabilities(sandboxed);
        assert_eq!(missing, ["SYS_RESOURCE"]);
        assert_eq!(
            privilege_args(&missing),
            [
                "--cap-add=ALL",
                "--cap-drop=SYS_RESOURCE",
                "--security-opt=seccomp=unconfined",
                "--security-opt=systempaths=unconfined"
            ]
        );
        assert!(missing_capabilities("CapBnd:\t000001ffffffffff\n").is_empty());
    }

    #[test]
    fn flags_become_agent_environment() {
        let mut o = opts();
        o.ip = Some("192.168.33.11".into());
        o.as_number = Some("64513".into());
        o.ip_autodetection_method = Some("interface=eth1".into());
        o.no_default_ippools = true;
        o.backend = Some("none".into());
        let env = agent_env(&o).unwrap();
        for pair in [
            ("IP", "192.168.33.11"),
            ("AS", "64513"),
            ("IP_AUTODETECTION_METHOD", "interface=eth1"),
            ("NO_DEFAULT_POOLS", "true"),
            ("CALICO_NETWORKING_BACKEND", "none"),
        ] {
            assert!(
                env.contains(&(pair.0.to_string(), pair.1.to_string())),
                "{pair:?} in {env:?}"
            );
        }
    }

    #[test]
    fn unknown_backend_names_the_flag() {
        let mut o = opts();
        o.backend = Some("gobgp".into());
        let err = docker_run_args(&o).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--backend: \"gobgp\" is not bird, vxlan or none"
        );
    }

    #[test]
    fn dryrun_prints_and_starts_nothing() {
        let mut o = opts();
        o.dryrun = true;
        o.docker_socket = "/nonexistent/docker.sock".into();
        let mut out = Vec::new();
        run(&o, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("docker run --net=host"), "{text}");
    }

    #[test]
    fn following_stops_at_the_started_line() {
        let log = "early line\nCalico node started successfully\nlater\n".as_bytes();
        let mut out = Vec::new();
        follow_until_started(std::io::Cursor::new(log.to_vec()), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("Calico node started successfully\n"),
            "{text}"
        );
        let mut out = Vec::new();
        let err = follow_until_started(std::io::Cursor::new(b"no luck\n".to_vec()), &mut out)
            .unwrap_err();
        assert!(matches!(err, RunError::Exited));
    }
}
