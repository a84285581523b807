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

/// A TCP echo server started by [`Host::serve_tcp_echo`]: it records the peer address of
/// every connection (the source the server's host sees, e.g. after NAT) and echoes what each
/// connection sends. Stops (threads joined) on drop.
#[derive(Debug)]
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    peers: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    /// Peer addresses of the connections accepted so far, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Host {
    /// Listens on `bind:port` inside this host: every connection's peer address is recorded
    /// ([`EchoServer::peers`]) and what it sends is echoed back.
    pub fn serve_tcp_echo(&self, bind: IpAddr, port: u16) -> Result<EchoServer, LabError> {
        let listener = self
            .run(move || {
                TcpListener::bind((bind, port)).and_then(|l| l.set_nonblocking(true).map(|()| l))
            })?
            .map_err(|source| LabError::Run {
                command: format!("tcp echo server on {bind}:{port} in {}", self.name()),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, p) = (stop.clone(), peers.clone());
        // The listening socket belongs to the host's namespace: accepting needs no setns.
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + MAX_LIFETIME;
            let mut conns = Vec::new();
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        if let Ok(mut v) = p.lock() {
                            v.push(peer);
                        }
                        let s = s.clone();
                        conns.push(std::thread::spawn(move || echo(stream, &s, deadline)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            s.store(true, Ordering::SeqCst);
            for c in conns {
                let _ = c.join();
            }
        });
        Ok(EchoServer {
            stop,
            peers,
            thread: Some(thread),
        })
    }
}

fn echo(mut s: TcpStream, stop: &AtomicBool, deadline: Instant) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
