//! The tokio side of the speaker: one task that runs the [`Core`] and performs its actions.
//! It owns the listening socket (and its TCP-MD5 keys), the table of session tasks, and the
//! core's timers; it hands accepted connections to the right session task and turns session
//! reports, expired timers and new configurations into core events stamped with the time.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::config::SpeakerConfig;
use super::core::{Action, Core, CoreTimer, Event, PeerStatus, RouteEvent};
use super::outbox::Outbox;
use super::session::{self, SessionCmd};
use crate::codec::notif;
use crate::sockopt;

/// The status map shared with [`super::Speaker::status`].
pub(super) type SharedStatus = Arc<Mutex<BTreeMap<IpAddr, PeerStatus>>>;

struct ListenerHandle {
    addr: SocketAddr,
    fd: std::os::fd::RawFd,
    is_v6: bool,
    task: JoinHandle<()>,
    /// Peers whose MD5 key is installed on the listening socket.
    keys: HashMap<IpAddr, String>,
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running session task.
struct SessionHandle {
    cmd: mpsc::UnboundedSender<SessionCmd>,
    task: JoinHandle<()>,
    ttl_security: Option<u8>,
}

pub(super) struct Runtime {
    core: Core,
    /// Bounded; coalesced per prefix while the consumer is behind (see [`Outbox`]).
    routes: Outbox,
    status: SharedStatus,
    /// Session reports and expired timers; every session and timer task holds a clone.
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    incoming_tx: mpsc::UnboundedSender<(TcpStream, SocketAddr)>,
    incoming_rx: mpsc::UnboundedReceiver<(TcpStream, SocketAddr)>,
    listener: Option<ListenerHandle>,
    sessions: HashMap<IpAddr, SessionHandle>,
    timers: HashMap<CoreTimer, JoinHandle<()>>,
    /// Writes replay fixtures (`CALICO_BGP_RECORD`, `record` feature only).
    #[cfg(feature = "record")]
    recorder: Option<super::replay::Recorder>,
}

impl Runtime {
    pub(super) fn new(routes: mpsc::Sender<RouteEvent>, status: SharedStatus) -> Runtime {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        Runtime {
            core: Core::default(),
            routes: Outbox::new(routes),
            status,
            events_tx,
            events_rx,
            incoming_tx,
            incoming_rx,
            listener: None,
            sessions: HashMap::new(),
            timers: HashMap::new(),
            #[cfg(feature = "record")]
            recorder: super::replay::Recorder::from_env(),
        }
    }

    /// Runs until every [`super::Speaker`] handle is gone and nothing else can happen: no
    /// listener and no session task left.
    pub(super) async fn run(mut self, mut config: mpsc::UnboundedReceiver<Box<SpeakerConfig>>) {
        let mut handles_gone = false;
        loop {
            if handles_gone && self.listener.is_none() && self.sessions.is_empty() {
                break;
            }
            tokio::select! {
                cfg = config.recv(), if !handles_gone => match cfg {
                    Some(cfg) => self.core_event(Event::Config(cfg)),
                    None => handles_gone = true,
                },
                Some(event) = self.events_rx.recv() => {
                    if let Event::Timer(t) = &event
                        && self.timers.get(t).is_some_and(|h| h.is_finished())
                    {
                        self.timers.remove(t);
                    }
                    self.core_event(event);
                }
                Some((stream, from)) = self.incoming_rx.recv() => self.incoming(stream, from),
                // Route events held back while the consumer was behind, as room appears.
                () = self.routes.drain(), if self.routes.has_pending() => {}
            }
        }
        for (_, s) in self.sessions.drain() {
            let _ = s.cmd.send(SessionCmd::Stop(notif::CEASE_ADMIN_SHUTDOWN));
        }
    }

    fn core_event(&mut self, event: Event) {
        #[cfg(feature = "record")]
        let recorded = self
            .recorder
            .as_ref()
            .map(|_| super::replay::EventRec::from_event(&event));
        let actions = self.core.handle(SystemTime::now(), event);
        #[cfg(feature = "record")]
        if let (Some(r), Some(e)) = (self.recorder.as_mut(), recorded) {
            r.record(&e, &actions);
        }
        for action in actions {
            self.perform(action);
        }
        if self.core.take_status_changed() {
            *self.status.lock().unwrap_or_else(|p| p.into_inner()) = self.core.status().clone();
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Route(ev) => self.routes.push(ev),
            Action::Listen(addr) => self.ensure_listener(addr),
            Action::ListenerKeys(keys) => self.sync_listener_keys(keys),
            Action::StartSession(spec) => {
                let peer = spec.peer;
                let ttl_security = spec.ttl_security;
                let (cmd, task) = session::spawn(spec, self.events_tx.clone());
                let old = self.sessions.insert(
                    peer,
                    SessionHandle {
                        cmd,
                        task,
                        ttl_security,
                    },
                );
                if let Some(old) = old {
                    old.task.abort();
                }
            }
            Action::StopSession { peer, subcode } => {
                if let Some(s) = self.sessions.remove(&peer) {
                    let _ = s.cmd.send(SessionCmd::Stop(subcode));
                    // The session task ends after sending Cease; abort only if it lingers.
                    let task = s.task;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        task.abort();
                    });
                }
            }
            Action::Send { peer, messages } => {
                if let Some(s) = self.sessions.get(&peer) {
                    let _ = s.cmd.send(SessionCmd::Send(messages));
                }
            }
            Action::SetTimer { timer, after } => {
                let tx = self.events_tx.clone();
                let task = tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(Event::Timer(timer));
                });
                if let Some(old) = self.timers.insert(timer, task) {
                    old.abort();
                }
            }
            Action::CancelTimer(timer) => {
                if let Some(t) = self.timers.remove(&timer) {
                    t.abort();
                }
            }
        }
    }

    /// An accepted connection goes to the session task of the peer it came from.
    fn incoming(&mut self, stream: TcpStream, from: SocketAddr) {
        let peer = from.ip();
        match self.sessions.get(&peer) {
            Some(s) => {
                if let Some(hops) = s.ttl_security {
                    let is_v6 = stream.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
                    if let Err(e) = sockopt::set_ttl_security(stream.as_raw_fd(), is_v6, peer, hops)
                    {
                        warn!(%peer, error = %e, "cannot apply TTL security to accepted connection");
                        return;
                    }
                }
                let _ = s.cmd.send(SessionCmd::Incoming(stream));
            }
            None => debug!(%peer, "connection from an unconfigured address, closing"),
        }
    }

    fn ensure_listener(&mut self, addr: SocketAddr) {
        if self.listener.as_ref().is_some_and(|l| l.addr == addr) {
            return;
        }
        self.listener = None;
        match bind_listener(addr) {
            Ok(listener) => {
                info!(%addr, "BGP listening");
                let fd = listener.as_raw_fd();
                let tx = self.incoming_tx.clone();
                let task = tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, from)) => {
                                if tx.send((stream, sockopt::canonical(from))).is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                warn!(error = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                self.listener = Some(ListenerHandle {
                    addr,
                    fd,
                    is_v6: addr.is_ipv6(),
                    task,
                    keys: HashMap::new(),
                });
            }
            Err(e) => {
                warn!(%addr, error = %e, "cannot listen for BGP; only outgoing sessions will work")
            }
        }
    }

    /// Installs MD5 keys for configured peers on the listening socket and removes stale ones.
    fn sync_listener_keys(&mut self, wanted: BTreeMap<IpAddr, String>) {
        let Some(l) = self.listener.as_mut() else {
            return;
        };
        let old: Vec<IpAddr> = l.keys.keys().copied().collect();
        for peer in old {
            if !wanted.contains_key(&peer) {
                if let Err(e) = sockopt::set_md5(l.fd, l.is_v6, peer, None) {
                    warn!(%peer, error = %e, "cannot remove TCP-MD5 key from listener");
                }
                l.keys.remove(&peer);
            }
        }
        for (peer, key) in wanted {
            if l.keys.get(&peer) != Some(&key) {
                match sockopt::set_md5(l.fd, l.is_v6, peer, Some(&key)) {
                    Ok(()) => {
                        l.keys.insert(peer, key);
                    }
                    Err(e) => warn!(%peer, error = %e, "cannot install TCP-MD5 key on listener"),
                }
            }
        }
    }
}

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(128)
}
