//! Test etcd for this crate: a thin adapter over the shared launcher `calico_lab::etcd`
//! (loopback, free ports, per-run state directory removed on drop, children killed on drop and
//! death-signalled with `PR_SET_PDEATHSIG`), plus what only these tests need: a client config
//! for the datastore, `etcdctl` that must succeed, and a client certificate from a rogue CA.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use calico_datastore::EtcdConfig;
use calico_lab::{EtcdCluster, EtcdOptions, TlsFiles};

/// Options for a test cluster.
#[derive(Default, Clone)]
pub struct Options {
    pub members: usize,
    pub tls: bool,
    /// etcd's `--max-txn-ops` (default 128).
    pub max_txn_ops: Option<usize>,
}

enum Inner {
    One(Box<calico_lab::Etcd>),
    Many(EtcdCluster),
}

/// A running etcd (one member or a cluster) on 127.0.0.1.
pub struct Etcd {
    inner: Inner,
}

impl Etcd {
    /// One plain member.
    pub fn start() -> Etcd {
        Etcd::start_with(Options {
            members: 1,
            ..Default::default()
        })
    }

    pub fn start_with(opts: Options) -> Etcd {
        let mut lab_opts = EtcdOptions {
            tls: opts.tls,
            ..Default::default()
        };
        if let Some(max) = opts.max_txn_ops {
            lab_opts.extra_args.push(format!("--max-txn-ops={max}"));
        }
        let inner = if opts.members <= 1 {
            Inner::One(Box::new(
                calico_lab::Etcd::start(lab_opts).expect("start etcd"),
            ))
        } else {
            Inner::Many(
                EtcdCluster::start_with(opts.members, lab_opts).expect("start etcd cluster"),
            )
        };
        Etcd { inner }
    }

    pub fn endpoints(&self) -> Vec<String> {
        match &self.inner {
            Inner::One(e) => e.endpoints(),
            Inner::Many(c) => c.endpoints(),
        }
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        match &self.inner {
            Inner::One(e) => e.tls(),
            Inner::Many(c) => c.tls(),
        }
    }

    pub fn members(&self) -> usize {
        match &self.inner {
            Inner::One(_) => 1,
            Inner::Many(c) => c.len(),
        }
    }

    /// Client config for every member, with client certificates when TLS is on.
    pub fn config(&self) -> EtcdConfig {
        let mut c = EtcdConfig::new(self.endpoints());
        if let Some(tls) = self.tls() {
            c.ca_cert_file = Some(tls.ca.clone());
            c.cert_file = Some(tls.client_cert.clone());
            c.key_file = Some(tls.client_key.clone());
        }
        c
    }

    /// Runs etcdctl (v3 API, with the client certificate under TLS) against member `i`.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> Output {
        match &self.inner {
            Inner::One(e) => {
                assert_eq!(i, 0, "single member");
                e.etcdctl(args).expect("run etcdctl")
            }
            Inner::Many(c) => c.etcdctl(i, args).expect("run etcdctl"),
        }
    }

    /// Runs etcdctl and panics with its output unless it succeeds.
    pub fn etcdctl_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.etcdctl(i, args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        match &mut self.inner {
            Inner::One(e) => e.kill(),
            Inner::Many(c) => c.kill(i),
        }
    }

    /// Starts member `i` again (after `kill`, or stopping it first) on the same data
    /// directory and ports, and waits until it serves.
    pub fn restart(&mut self, i: usize) {
        match &mut self.inner {
            Inner::One(e) => e.restart().expect("restart etcd"),
            Inner::Many(c) => c.restart(i).expect("restart etcd member"),
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client certificate and key signed by a freshly made CA that no server trusts.
pub fn rogue_client_cert(dir: &Path) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rogue-ca.key",
            "-out",
            "rogue-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rogue CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rogue.key",
            "-out",
            "rogue.csr",
            "-subj",
            "/CN=calico",
        ],
    );
    std::fs::write(
        dir.join("rogue.ext"),
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "rogue.csr",
            "-CA",
            "rogue-ca.pem",
            "-CAkey",
            "rogue-ca.key",
            "-CAcreateserial",
            "-out",
            "rogue.pem",
            "-days",
            "2",
            "-extfile",
            "rogue.ext",
        ],
    );
    (dir.join("rogue.pem"), dir.join("rogue.key"))
}
