//! One peer's session task: owns the peer's [`Fsm`], its TCP connection (connect, accepted
//! connections handed over by the runtime, connection collisions) and its timers (connect
//! retry, hold, keepalive). It decodes what the peer sends, feeds it to the FSM, performs the
//! FSM's outputs and reports what concerns the core as [`Event::Session`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::core::{Event, SessionEvent, SessionSpec};
use crate::codec::{self, Ctx, Message, Notification, notif};
use crate::fsm::{self, Fsm, Input, Output, State, Timer};
use crate::sockopt;

/// What the runtime tells a session task.
pub(super) enum SessionCmd {
    Send(Vec<Message>),
    Incoming(TcpStream),
    Stop(u8),
}

/// Starts the session task of `spec`; it reports to `events` and obeys the returned sender.
pub(super) fn spawn(
    spec: SessionSpec,
    events: mpsc::UnboundedSender<Event>,
) -> (mpsc::UnboundedSender<SessionCmd>, JoinHandle<()>) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let session = Session {
        peer: spec.peer,
        port: spec.port,
        password: spec.password,
        ttl_security: spec.ttl_security,
        generation: spec.generation,
        fsm: Fsm::new(spec.fsm),
        events,
        writer: None,
        reader: None,
        conn_id: 0,
        next_conn_id: 0,
        outgoing: false,
        pending: None,
        open_sent: false,
        connect_attempt: 0,
        ctx: Ctx::default(),
        timers: HashMap::new(),
    };
    (cmd_tx, tokio::spawn(session.run(cmd_rx)))
}

/// One frame (or the read error that ended the connection), tagged with the connection id.
type Frame = (u64, Result<Vec<u8>, std::io::Error>);

struct Pending {
    /// Connection id its frames are tagged with (becomes `conn_id` if adopted).
    id: u64,
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
    rx: mpsc::UnboundedReceiver<Frame>,
}

enum SessionInput {
    Cmd(Option<SessionCmd>),
    Frame(u64, Result<Vec<u8>, std::io::Error>),
    PendingFrame(Result<Vec<u8>, std::io::Error>),
    ConnectResult(u64, std::io::Result<TcpStream>),
    Timer(Timer),
}

struct Session {
    peer: IpAddr,
    port: u16,
    password: Option<String>,
    ttl_security: Option<u8>,
    generation: u64,
    fsm: Fsm,
    events: mpsc::UnboundedSender<Event>,
    writer: Option<OwnedWriteHalf>,
    reader: Option<(JoinHandle<()>, mpsc::UnboundedReceiver<Frame>)>,
    conn_id: u64,
    next_conn_id: u64,
    /// The current connection is one we opened.
    outgoing: bool,
    /// An accepted connection that collided with ours: we sent it our OPEN and wait for the
    /// peer's OPEN on it to decide which connection stays (RFC 4271 6.8).
    pending: Option<Pending>,
    /// The OPEN for the next `Connected` was already sent (on a connection adopted from
    /// `pending`): do not send it twice.
    open_sent: bool,
    connect_attempt: u64,
    ctx: Ctx,
    timers: HashMap<Timer, Instant>,
}

async fn read_frames(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    id: u64,
    tx: mpsc::UnboundedSender<(u64, Result<Vec<u8>, std::io::Error>)>,
) {
    let mut buf = vec![0u8; codec::MAX_MESSAGE_LEN];
    loop {
        let r = async {
            rd.read_exact(&mut buf[..codec::HEADER_LEN]).await?;
            let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
            // Length errors are the decoder's to report; never read past our buffer.
            let len = len.clamp(codec::HEADER_LEN, codec::MAX_MESSAGE_LEN);
            rd.read_exact(&mut buf[codec::HEADER_LEN..len]).await?;
            Ok::<_, std::io::Error>(buf[..len].to_vec())
        }
        .await;
        let stop = r.is_err();
        if tx.send((id, r)).is_err() || stop {
            break;
        }
    }
}

impl Session {
    fn emit(&self, event: SessionEvent) {
        let _ = self.events.send(Event::Session {
            peer: self.peer,
            generation: self.generation,
            event,
        });
    }

    async fn next_input(
        &mut self,
        cmd_rx: &mut mpsc::UnboundedReceiver<SessionCmd>,
        connect_rx: &mut mpsc::UnboundedReceiver<(u64, std::io::Result<TcpStream>)>,
    ) -> SessionInput {
        let next_timer = self
            .timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at));
        let sleep = async {
            match next_timer {
                Some((t, at)) => {
                    tokio::time::sleep_until(at).await;
                    t
                }
                None => std::future::pending().await,
            }
        };
        let frame = async {
            match self.reader.as_mut() {
                Some((_, rx)) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let pending = async {
            match self.pending.as_mut() {
                Some(p) => p.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            c = cmd_rx.recv() => SessionInput::Cmd(c),
            Some((id, r)) = frame => SessionInput::Frame(id, r),
            Some((_, r)) = pending => SessionInput::PendingFrame(r),
            Some((attempt, r)) = connect_rx.recv() => SessionInput::ConnectResult(attempt, r),
            t = sleep => SessionInput::Timer(t),
        }
    }

    async fn run(mut self, mut cmd_rx: mpsc::UnboundedReceiver<SessionCmd>) {
        let (connect_tx, mut connect_rx) = mpsc::unbounded_channel();
        let out = self.fsm.handle(Input::Start);
        self.apply(out, &connect_tx).await;
        loop {
            match self.next_input(&mut cmd_rx, &mut connect_rx).await {
                SessionInput::Cmd(None) => {
                    let out = self.fsm.handle(Input::Stop {
                        subcode: notif::CEASE_ADMIN_SHUTDOWN,
                    });
                    self.apply(out, &connect_tx).await;
                    break;
                }
                SessionInput::Cmd(Some(SessionCmd::Stop(subcode))) => {
                    let out = self.fsm.handle(Input::Stop { subcode });
                    self.apply(out, &connect_tx).await;
                    break;
                }
                SessionInput::Cmd(Some(SessionCmd::Send(msgs))) => {
                    if self.fsm.state() == State::Established {
                        for m in msgs {
                            if !self.send(&m).await {
                                let out = self.fsm.handle(Input::Closed);
                                self.apply(out, &connect_tx).await;
                                break;
                            }
                        }
                    }
                }
                SessionInput::Cmd(Some(SessionCmd::Incoming(stream))) => {
                    self.incoming(stream, &connect_tx).await
                }
                SessionInput::Frame(id, r) if id == self.conn_id => {
                    let input = match r {
                        Err(_) => Input::Closed,
                        Ok(bytes) => match codec::decode(&bytes, self.ctx) {
                            Ok(m) => Input::Message(m),
                            Err(e) => {
                                warn!(peer = %self.peer, error = %e, "malformed message");
                                Input::DecodeError(e)
                            }
                        },
                    };
                    let out = self.fsm.handle(input);
                    self.apply(out, &connect_tx).await;
                }
                SessionInput::Frame(..) => {}
                SessionInput::PendingFrame(r) => self.pending_frame(r, &connect_tx).await,
                SessionInput::ConnectResult(attempt, r) if attempt == self.connect_attempt => {
                    match r {
                        Ok(stream)
                            if matches!(self.fsm.state(), State::Connect | State::Active) =>
                        {
                            self.attach(stream, true);
                            let out = self.fsm.handle(Input::Connected);
                            self.apply(out, &connect_tx).await;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            debug!(peer = %self.peer, error = %e, "connect failed");
                            let out = self.fsm.handle(Input::ConnectFailed);
                            self.apply(out, &connect_tx).await;
                        }
                    }
                }
                SessionInput::ConnectResult(..) => {}
                SessionInput::Timer(t) => {
                    self.timers.remove(&t);
                    let out = self.fsm.handle(Input::TimerExpired(t));
                    self.apply(out, &connect_tx).await;
                }
            }
        }
    }

    /// An accepted connection from the peer: use it, keep it for collision resolution, or
    /// refuse it (RFC 4271 6.8).
    async fn incoming(
        &mut self,
        stream: TcpStream,
        connect_tx: &mpsc::UnboundedSender<(u64, std::io::Result<TcpStream>)>,
    ) {
        match self.fsm.state() {
            State::Idle | State::Connect | State::Active if self.fsm.enabled() => {
                self.connect_attempt += 1; // forget any connect in flight
                self.attach(stream, false);
                let out = self.fsm.handle(Input::Connected);
                self.apply(out, connect_tx).await;
            }
            State::OpenSent | State::OpenConfirm if self.pending.is_none() => {
                let _ = stream.set_nodelay(true);
                let (rd, mut wr) = stream.into_split();
                match codec::encode(&self.fsm.open_message(), Ctx::default()) {
                    Ok(bytes) if wr.write_all(&bytes).await.is_ok() => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        self.next_conn_id += 1;
                        let id = self.next_conn_id;
                        let reader = tokio::spawn(read_frames(rd, id, tx));
                        self.pending = Some(Pending {
                            id,
                            writer: wr,
                            reader,
                            rx,
                        });
                    }
                    _ => debug!(peer = %self.peer, "colliding connection failed before its OPEN"),
                }
            }
            _ => refuse(stream).await,
        }
    }

    /// The first message on a colliding connection: its OPEN carries the identifier that decides
    /// which connection stays.
    async fn pending_frame(
        &mut self,
        r: Result<Vec<u8>, std::io::Error>,
        connect_tx: &mpsc::UnboundedSender<(u64, std::io::Result<TcpStream>)>,
    ) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let open = match r.map(|b| codec::decode(&b, Ctx::default())) {
            Ok(Ok(Message::Open(open))) => open,
            _ => {
                // Not a usable connection.
                pending.reader.abort();
                return;
            }
        };
        let keep_outgoing =
            fsm::collision_keeps_outgoing(self.fsm.config().router_id, open.router_id);
        let cease = Message::Notification(Notification::new(notif::CEASE, notif::CEASE_COLLISION));
        let current_alive = matches!(self.fsm.state(), State::OpenSent | State::OpenConfirm);
        // Keep the current connection if it is the one the rule picks (or if both were
        // accepted, which the rule cannot order).
        if current_alive && (keep_outgoing == self.outgoing || !self.outgoing) {
            if let Ok(bytes) = codec::encode(&cease, Ctx::default()) {
                let _ = pending.writer.write_all(&bytes).await;
            }
            pending.reader.abort();
            return;
        }
        if current_alive {
            info!(peer = %self.peer, "connection collision: keeping the peer's connection");
            self.send(&cease).await;
            let out = self.fsm.handle(Input::Closed);
            self.apply(out, connect_tx).await;
        }
        if !matches!(
            self.fsm.state(),
            State::Idle | State::Connect | State::Active
        ) || !self.fsm.enabled()
        {
            pending.reader.abort();
            return;
        }
        // Adopt it: our OPEN is already on it, and the peer's is `open`.
        self.detach();
        self.connect_attempt += 1; // forget any connect in flight
        self.conn_id = pending.id;
        self.outgoing = false;
        self.reader = Some((pending.reader, pending.rx));
        self.writer = Some(pending.writer);
        self.open_sent = true;
        let out = self.fsm.handle(Input::Connected);
        self.apply(out, connect_tx).await;
        let out = self.fsm.handle(Input::Message(Message::Open(open)));
        self.apply(out, connect_tx).await;
    }

    fn attach(&mut self, stream: TcpStream, outgoing: bool) {
        self.detach();
        let _ = stream.set_nodelay(true);
        self.next_conn_id += 1;
        self.conn_id = self.next_conn_id;
        self.outgoing = outgoing;
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(read_frames(rd, self.conn_id, tx));
        self.reader = Some((task, rx));
        self.writer = Some(wr);
    }

    fn detach(&mut self) {
        if let Some((task, _)) = self.reader.take() {
            task.abort();
        }
        self.writer = None;
        self.ctx = Ctx::default();
    }

    async fn send(&mut self, msg: &Message) -> bool {
        let Some(w) = self.writer.as_mut() else {
            return false;
        };
        match codec::encode(msg, self.ctx) {
            Ok(bytes) => w.write_all(&bytes).await.is_ok(),
            Err(e) => {
                warn!(peer = %self.peer, error = %e, "cannot encode message, dropped");
                true
            }
        }
    }

    async fn apply(
        &mut self,
        outputs: Vec<Output>,
        connect_tx: &mpsc::UnboundedSender<(u64, std::io::Result<TcpStream>)>,
    ) {
        let mut queue: std::collections::VecDeque<Output> = outputs.into();
        while let Some(o) = queue.pop_front() {
            match o {
                Output::Connect => {
                    self.connect_attempt += 1;
                    let attempt = self.connect_attempt;
                    let (peer, port, pw, ttl) = (
                        self.peer,
                        self.port,
                        self.password.clone(),
                        self.ttl_security,
                    );
                    let tx = connect_tx.clone();
                    tokio::spawn(async move {
                        let r = connect(peer, port, pw.as_deref(), ttl).await;
                        let _ = tx.send((attempt, r));
                    });
                }
                Output::Disconnect => {
                    if let Some(w) = self.writer.as_mut() {
                        let _ = w.shutdown().await;
                    }
                    self.detach();
                }
                Output::Send(Message::Open(_)) if self.open_sent => self.open_sent = false,
                Output::Send(m) => {
                    if !self.send(&m).await && !matches!(m, Message::Notification(_)) {
                        queue.extend(self.fsm.handle(Input::Closed));
                    }
                }
                Output::SetTimer(t, d) => {
                    self.timers.insert(t, Instant::now() + d);
                }
                Output::CancelTimer(t) => {
                    self.timers.remove(&t);
                }
                Output::StateChanged(s) => {
                    debug!(peer = %self.peer, state = %s, "state");
                    self.emit(SessionEvent::State(s));
                }
                Output::Established(n) => {
                    self.ctx = Ctx {
                        four_octet_as: n.four_octet_as,
                    };
                    let local = self
                        .writer
                        .as_ref()
                        .and_then(|w| w.local_addr().ok())
                        .map(|a| a.ip().to_canonical())
                        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                    self.emit(SessionEvent::Established {
                        negotiated: n,
                        local,
                    });
                }
                Output::Down(r) => self.emit(SessionEvent::Down(r)),
                Output::Update(u) => self.emit(SessionEvent::Update(u)),
                Output::RouteRefresh(rr) => self.emit(SessionEvent::RouteRefresh(rr)),
            }
        }
    }
}

async fn refuse(mut stream: TcpStream) {
    // RFC 4271 6.8: the refused connection gets Cease / connection collision resolution.
    if let Ok(bytes) = codec::encode(
        &Message::Notification(Notification::new(notif::CEASE, notif::CEASE_COLLISION)),
        Ctx::default(),
    ) {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&bytes)).await;
    }
}

async fn connect(
    peer: IpAddr,
    port: u16,
    password: Option<&str>,
    ttl: Option<u8>,
) -> std::io::Result<TcpStream> {
    let sock = if peer.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    let fd = sock.as_raw_fd();
    if let Some(pw) = password {
        sockopt::set_md5(fd, peer.is_ipv6(), peer, Some(pw)).map_err(std::io::Error::other)?;
    }
    if let Some(hops) = ttl {
        sockopt::set_ttl_security(fd, peer.is_ipv6(), peer, hops).map_err(std::io::Error::other)?;
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        sock.connect(SocketAddr::new(peer, port)),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}
