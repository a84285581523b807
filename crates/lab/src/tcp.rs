//! TCP reachability for policy tests: servers inside a lab host that answer every connection
//! with one byte, and a probe that counts as "reachable" only when that byte arrives (a SYN
//! that is accepted by the kernel but whose data is dropped by policy does not count).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::lab::{Host, LabError};

/// A server never outlives this, even if its guard is leaked (tests are far shorter).
const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// How long a server may take to bind before the test is told.
const BIND_TIMEOUT: Duration = Duration::from_secs(10);

/// Servers started by [`Host::serve_tcp`]; they stop (and their threads are joined) on drop.
#[derive(Debug)]
pub struct TcpServers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for TcpServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Host {
    /// Listens on `bind:port` for every port, inside this host, answering each connection
    /// with one byte; returns once all are listening.
    pub fn serve_tcp(&self, bind: IpAddr, ports: &[u16]) -> Result<TcpServers, LabError> {
        let mut servers = TcpServers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for &port in ports {
            let (host, stop) = (self.clone(), servers.stop.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            servers.threads.push(std::thread::spawn(move || {
                let served = host.run(move || {
                    let listener = TcpListener::bind((bind, port))
                        .and_then(|l| l.set_nonblocking(true).map(|()| l));
                    let listener = match listener {
                        Ok(l) => {
                            let _ = tx.send(Ok(()));
                            l
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let deadline = Instant::now() + MAX_LIFETIME;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        match listener.accept() {
                            Ok((mut s, _)) => {
                                let _ = s.write_all(b"k");
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                });
                if let Err(e) = served {
                    tracing::warn!(error = %e, port, "tcp server could not enter its namespace");
                }
            }));
            let what = format!("tcp server on {bind}:{port} in {}", self.name());
            match rx.recv_timeout(BIND_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(LabError::Run {
                        command: what,
                        source,
                    });
                }
                Err(_) => {
                    return Err(LabError::Timeout {
                        command: what,
                        timeout: BIND_TIMEOUT,
                    });
                }
            }
        }
        Ok(servers)
    }

    /// Whether a TCP connection from this host to `dst` gets a server's byte within `timeout`
    /// (for the connection and again for the read).
    pub fn tcp_probe(&self, dst: SocketAddr, timeout: Duration) -> Result<bool, LabError> {
        self.run(move || {
            let Ok(mut s) = TcpStream::connect_timeout(&dst, timeout) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(timeout));
            let mut b = [0u8; 1];
            matches!(s.read(&mut b), Ok(1))
        })
    }
}
