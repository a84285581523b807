//! Test harness: a real etcd started per test (loopback only, free ports, throw-away data
//! directory, killed on drop and when the test process dies), and calicoctl run in-process
//! against it with captured output.
//!
//! This is a small local launcher because the shared `calico_lab::etcd` launcher did not
//! exist yet when these tests were written.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calico_ctl::{Io, Session};
use etcd_client::{Client, GetOptions};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One etcd server on 127.0.0.1.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    pub dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let client_port = free_port();
        let peer_port = free_port();
        let name = format!("ctl-test-{}-{client_port}", std::process::id());
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log file");
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer_url}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when
        // the spawning thread exits, so a crashed test leaves no etcd behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("start etcd (is /usr/bin/etcd installed?)");
        let etcd = Etcd {
            child,
            endpoint: client_url,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", client_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not listen within 20 s; log: {}",
                etcd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// A CalicoAPIConfig file pointing at this etcd.
    pub fn config_file(&self) -> PathBuf {
        let path = self.dir.path().join("calicoctl.cfg");
        std::fs::write(
            &path,
            format!(
                "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata:\nspec:\n  datastoreType: \"etcdv3\"\n  etcdEndpoints: \"{}\"\n",
                self.endpoint
            ),
        )
        .expect("write calicoctl.cfg");
        path
    }

    pub async fn client(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let last = match Client::connect([self.endpoint.as_str()], None).await {
                Ok(mut c) => match c.get("health-probe", None).await {
                    Ok(_) => return c,
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "etcd not ready: {last}; log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every key under `/calico/` with its value, read straight from etcd.
    pub async fn dump(&self) -> Vec<(String, String)> {
        let resp = self
            .client()
            .await
            .get("/calico/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("read etcd");
        resp.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect()
    }

    /// Store revision (changes on every write).
    pub async fn revision(&self) -> i64 {
        let resp = self
            .client()
            .await
            .get(
                "/calico/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("read etcd");
        resp.header().map_or(0, |h| h.revision())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Result of one calicoctl run.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "calicoctl failed: {self:?}");
        self
    }

    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert_eq!(self.code, 1, "calicoctl should have failed: {self:?}");
        self
    }
}

/// calicoctl configured with `-c` for one etcd, run in-process.
pub struct Ctl {
    pub config: PathBuf,
    pub session: Session,
    pub env: Vec<(String, String)>,
}

impl Ctl {
    pub fn new(etcd: &Etcd) -> Ctl {
        Ctl {
            config: etcd.config_file(),
            session: no_default_config_session(),
            env: Vec::new(),
        }
    }

    /// Runs `calicoctl ARGS -c CONFIG`.
    pub async fn run(&self, args: &[&str]) -> Outcome {
        self.run_stdin(args, "").await
    }

    pub async fn run_stdin(&self, args: &[&str], stdin: &str) -> Outcome {
        let mut full: Vec<String> = vec!["calicoctl".into()];
        full.extend(args.iter().map(|s| s.to_string()));
        full.push("-c".into());
        full.push(self.config.display().to_string());
        run_raw(full, stdin, &self.env, &self.session).await
    }
}

/// A session whose default config file does not exist, so only `-c` or the environment
/// configure it (the machine's own /etc/calico/calicoctl.cfg must not leak into tests).
pub fn no_default_config_session() -> Session {
    Session {
        default_config_path: "/nonexistent/calico-rs-test/calicoctl.cfg".into(),
        ..Session::default()
    }
}

pub async fn run_raw(
    args: Vec<String>,
    stdin: &str,
    env: &[(String, String)],
    session: &Session,
) -> Outcome {
    let mut input = stdin.as_bytes();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut io = Io {
        stdin: &mut input,
        out: &mut out,
        err: &mut err,
        env: &lookup,
    };
    let code = calico_ctl::run(args, &mut io, session).await;
    Outcome {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// Writes `text` to a file in `dir` and returns its path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("create dir");
    }
    std::fs::write(&p, text).expect("write test file");
    p.display().to_string()
}

/// The corpus directory of this crate.
pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}
