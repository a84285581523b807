//! The RFC 4271 session state machine, without sockets or clocks.
//!
//! [`Fsm::handle`] takes one [`Input`] (a start/stop request, a transport event, a decoded
//! message, a timer expiry) and returns the [`Output`]s to perform (connect, send, arm or cancel
//! a timer, report the session up or down, hand an UPDATE to the RIB). The session task in
//! `speaker/session.rs` does the I/O. One `Fsm` drives one TCP connection at a time;
//! connection collisions (two connections to the same peer) are resolved by the session task
//! with [`collision_keeps_outgoing`].
//!
//! Automatic restart: after an error the machine goes to Idle and arms the connect-retry timer
//! with exponential backoff ([`Fsm::retry_delay`]); its expiry starts the machine again. The
//! backoff resets once a session reaches Established.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::codec::{
    Capability, DecodeError, Family, GracefulRestart, Message, Notification, Open, RouteRefresh,
    Update, notif,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Start the session (configure the peer).
    Start,
    /// Stop the session: sends `Cease` with this subcode if a connection is open.
    Stop {
        subcode: u8,
    },
    /// A TCP connection is up (ours, or an accepted one handed to this FSM).
    Connected,
    /// Our connection attempt failed.
    ConnectFailed,
    /// The TCP connection closed or failed.
    Closed,
    Message(Message),
    /// The peer sent bytes we could not decode.
    DecodeError(DecodeError),
    TimerExpired(Timer),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a TCP connection to the peer.
    Connect,
    /// Close the current TCP connection.
    Disconnect,
    Send(Message),
    SetTimer(Timer, Duration),
    CancelTimer(Timer),
    StateChanged(State),
    Established(Negotiated),
    /// The session left Established (or failed before it).
    Down(DownReason),
    Update(Update),
    RouteRefresh(RouteRefresh),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DownReason {
    #[error("stopped by configuration")]
    Stopped,
    #[error("connection closed")]
    ConnectionClosed,
    #[error("received NOTIFICATION: {0}")]
    NotificationReceived(Notification),
    #[error("sent NOTIFICATION: {0}")]
    NotificationSent(Notification),
    #[error("hold timer expired")]
    HoldTimerExpired,
}

impl DownReason {
    /// Whether the peer may keep our routes as stale (RFC 4724 applies to transport failures
    /// and hold-timer expiry, not to an administrative stop or a NOTIFICATION).
    pub fn graceful(&self) -> bool {
        matches!(
            self,
            DownReason::ConnectionClosed | DownReason::HoldTimerExpired
        )
    }
}

/// What both OPENs agreed on.
#[derive(Debug, Clone, PartialEq)]
pub struct Negotiated {
    pub peer_as: u32,
    pub peer_router_id: Ipv4Addr,
    /// Seconds; 0 means no hold timer and no keepalives.
    pub hold_time: u16,
    pub keepalive: u16,
    pub four_octet_as: bool,
    /// Families both sides announced.
    pub families: Vec<Family>,
    pub route_refresh: bool,
    pub peer_graceful_restart: Option<GracefulRestart>,
}

#[derive(Debug, Clone)]
pub struct FsmConfig {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Expected peer AS.
    pub remote_as: u32,
    /// Our proposed hold time (seconds, 0 or >= 3).
    pub hold_time: u16,
    /// Keepalive interval; `None` means a third of the negotiated hold time.
    pub keepalive: Option<u16>,
    /// Capabilities we announce besides 4-octet AS (which `Open::new` adds).
    pub capabilities: Vec<Capability>,
    /// Only accept connections, never connect.
    pub passive: bool,
    /// First connect-retry delay; doubles after each failure up to `connect_retry_max`.
    pub connect_retry: Duration,
    pub connect_retry_max: Duration,
}

/// Hold timer while waiting for the peer's OPEN (RFC 4271 suggests 4 minutes).
pub const LARGE_HOLD: Duration = Duration::from_secs(240);

#[derive(Debug)]
pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    failures: u32,
    negotiated: Option<Negotiated>,
    /// Whether `Start` was given and no `Stop` since: decides automatic restart.
    enabled: bool,
}

/// RFC 4271 section 6.8: of two connections, keep the one opened by the speaker with the higher
/// BGP identifier. Returns true when our outgoing connection is the one to keep.
pub fn collision_keeps_outgoing(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> bool {
    u32::from(local_id) > u32::from(remote_id)
}

impl Fsm {
    pub fn new(cfg: FsmConfig) -> Fsm {
        Fsm {
            cfg,
            state: State::Idle,
            failures: 0,
            negotiated: None,
            enabled: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Started and not stopped: the session wants to be up.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Connect-retry delay after `failures` consecutive failures.
    pub fn retry_delay(&self) -> Duration {
        let factor = 1u32 << self.failures.min(16);
        self.cfg
            .connect_retry
            .saturating_mul(factor)
            .min(self.cfg.connect_retry_max)
    }

    fn set_state(&mut self, s: State, out: &mut Vec<Output>) {
        if self.state != s {
            self.state = s;
            out.push(Output::StateChanged(s));
        }
    }

    /// The OPEN this FSM sends (also sent on a colliding connection before it is resolved).
    pub fn open_message(&self) -> Message {
        Message::Open(Open::new(
            self.cfg.local_as,
            self.cfg.hold_time,
            self.cfg.router_id,
            self.cfg.capabilities.clone(),
        ))
    }

    /// Moves to Idle after a failure and arms the automatic restart.
    fn fail(&mut self, reason: DownReason, out: &mut Vec<Output>) {
        let was_up = self.state == State::Established;
        out.push(Output::CancelTimer(Timer::Hold));
        out.push(Output::CancelTimer(Timer::Keepalive));
        out.push(Output::Disconnect);
        self.set_state(State::Idle, out);
        self.negotiated = None;
        if !was_up {
            self.failures = self.failures.saturating_add(1);
        }
        out.push(Output::Down(reason));
        if self.enabled {
            out.push(Output::SetTimer(Timer::ConnectRetry, self.retry_delay()));
        }
    }

    fn notify_and_fail(&mut self, n: Notification, out: &mut Vec<Output>) {
        out.push(Output::Send(Message::Notification(n.clone())));
        self.fail(DownReason::NotificationSent(n), out);
    }

    fn start(&mut self, out: &mut Vec<Output>) {
        if self.cfg.passive {
            self.set_state(State::Active, out);
        } else {
            self.set_state(State::Connect, out);
            out.push(Output::Connect);
            out.push(Output::SetTimer(Timer::ConnectRetry, self.retry_delay()));
        }
    }

    fn fsm_error(&self) -> Notification {
        // RFC 6608 subcodes: 1 OpenSent, 2 OpenConfirm, 3 Established.
        let sub = match self.state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            State::Established => 3,
            _ => 0,
        };
        Notification::new(notif::FSM, sub)
    }

    /// Validates the peer's OPEN and computes the negotiated parameters.
    fn negotiate(&self, open: &Open) -> Result<Negotiated, Notification> {
        let peer_as = open.asn();
        if peer_as != self.cfg.remote_as {
            return Err(Notification {
                code: notif::OPEN,
                subcode: notif::OPEN_BAD_PEER_AS,
                data: open.my_as.to_be_bytes().to_vec(),
            });
        }
        // Same identifier on an iBGP session means a loop or a misconfiguration (RFC 6286).
        if open.router_id == self.cfg.router_id && peer_as == self.cfg.local_as {
            return Err(Notification::new(notif::OPEN, notif::OPEN_BAD_BGP_ID));
        }
        let hold_time = open.hold_time.min(self.cfg.hold_time);
        let keepalive = match self.cfg.keepalive {
            _ if hold_time == 0 => 0,
            Some(k) if k > 0 && k < hold_time => k,
            _ => (hold_time / 3).max(1),
        };
        let ours: Vec<Family> = self
            .cfg
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        let families = open
            .families()
            .into_iter()
            .filter(|f| ours.is_empty() && *f == Family::IPV4_UNICAST || ours.contains(f))
            .collect();
        Ok(Negotiated {
            peer_as,
            peer_router_id: open.router_id,
            hold_time,
            keepalive,
            four_octet_as: open.has(|c| matches!(c, Capability::FourOctetAs(_))),
            families,
            route_refresh: open.has(|c| matches!(c, Capability::RouteRefresh))
                && self.cfg.capabilities.contains(&Capability::RouteRefresh),
            peer_graceful_restart: open.graceful_restart().cloned(),
        })
    }

    fn arm_session_timers(&self, n: &Negotiated, out: &mut Vec<Output>) {
        if n.hold_time > 0 {
            out.push(Output::SetTimer(
                Timer::Hold,
                Duration::from_secs(u64::from(n.hold_time)),
            ));
            out.push(Output::SetTimer(
                Timer::Keepalive,
                Duration::from_secs(u64::from(n.keepalive)),
            ));
        }
    }

    fn restart_hold(&self, out: &mut Vec<Output>) {
        if let Some(n) = &self.negotiated
            && n.hold_time > 0
        {
            out.push(Output::SetTimer(
                Timer::Hold,
                Duration::from_secs(u64::from(n.hold_time)),
            ));
        }
    }

    /// Feeds one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        use State::*;
        match (self.state, input) {
            (_, Input::Stop { subcode }) => {
                self.enabled = false;
                if matches!(self.state, OpenSent | OpenConfirm | Established) {
                    out.push(Output::Send(Message::Notification(Notification::new(
                        notif::CEASE,
                        subcode,
                    ))));
                }
                out.push(Output::CancelTimer(Timer::ConnectRetry));
                out.push(Output::CancelTimer(Timer::Hold));
                out.push(Output::CancelTimer(Timer::Keepalive));
                if self.state != Idle {
                    out.push(Output::Disconnect);
                    let was = self.state;
                    self.set_state(Idle, &mut out);
                    self.negotiated = None;
                    if was != Connect && was != Active {
                        out.push(Output::Down(DownReason::Stopped));
                    }
                }
            }
            (Idle, Input::Start) => {
                self.enabled = true;
                self.failures = 0;
                self.start(&mut out);
            }
            (_, Input::Start) => {}
            (Idle, Input::TimerExpired(Timer::ConnectRetry)) if self.enabled => {
                self.start(&mut out)
            }
            (Connect | Active, Input::TimerExpired(Timer::ConnectRetry)) if !self.cfg.passive => {
                self.set_state(Connect, &mut out);
                out.push(Output::Connect);
                out.push(Output::SetTimer(Timer::ConnectRetry, self.retry_delay()));
            }
            (Connect, Input::ConnectFailed) => {
                self.failures = self.failures.saturating_add(1);
                self.set_state(Active, &mut out);
                out.push(Output::SetTimer(Timer::ConnectRetry, self.retry_delay()));
            }
            (Connect | Active, Input::Connected) => {
                out.push(Output::CancelTimer(Timer::ConnectRetry));
                out.push(Output::Send(self.open_message()));
                out.push(Output::SetTimer(Timer::Hold, LARGE_HOLD));
                self.set_state(OpenSent, &mut out);
            }
            // An accepted connection while waiting to retry: use it.
            (Idle, Input::Connected) if self.enabled => {
                out.push(Output::CancelTimer(Timer::ConnectRetry));
                out.push(Output::Send(self.open_message()));
                out.push(Output::SetTimer(Timer::Hold, LARGE_HOLD));
                self.set_state(OpenSent, &mut out);
            }
            (Connect | Active | Idle, Input::Closed) => {}
            (OpenSent, Input::Message(Message::Open(open))) => match self.negotiate(&open) {
                Ok(n) => {
                    out.push(Output::Send(Message::Keepalive));
                    out.push(Output::CancelTimer(Timer::Hold));
                    self.arm_session_timers(&n, &mut out);
                    self.negotiated = Some(n);
                    self.set_state(OpenConfirm, &mut out);
                }
                Err(notification) => self.notify_and_fail(notification, &mut out),
            },
            (OpenConfirm, Input::Message(Message::Keepalive)) => {
                self.failures = 0;
                self.set_state(Established, &mut out);
                self.restart_hold(&mut out);
                if let Some(n) = &self.negotiated {
                    out.push(Output::Established(n.clone()));
                }
            }
            (Established, Input::Message(Message::Keepalive)) => self.restart_hold(&mut out),
            (Established, Input::Message(Message::Update(u))) => {
                self.restart_hold(&mut out);
                out.push(Output::Update(u));
            }
            (Established, Input::Message(Message::RouteRefresh(rr))) => {
                out.push(Output::RouteRefresh(rr))
            }
            (OpenSent | OpenConfirm | Established, Input::Message(Message::Notification(n))) => {
                self.fail(DownReason::NotificationReceived(n), &mut out)
            }
            (OpenSent | OpenConfirm | Established, Input::Message(_)) => {
                let n = self.fsm_error();
                self.notify_and_fail(n, &mut out);
            }
            (OpenSent | OpenConfirm | Established, Input::DecodeError(e)) => {
                self.notify_and_fail(e.notification(), &mut out)
            }
            (OpenConfirm | Established, Input::TimerExpired(Timer::Keepalive)) => {
                out.push(Output::Send(Message::Keepalive));
                if let Some(n) = &self.negotiated
                    && n.keepalive > 0
                {
                    out.push(Output::SetTimer(
                        Timer::Keepalive,
                        Duration::from_secs(u64::from(n.keepalive)),
                    ));
                }
            }
            (OpenSent | OpenConfirm | Established, Input::TimerExpired(Timer::Hold)) => {
                out.push(Output::Send(Message::Notification(Notification::new(
                    notif::HOLD_TIMER_EXPIRED,
                    0,
                ))));
                self.fail(DownReason::HoldTimerExpired, &mut out);
            }
            (OpenSent | OpenConfirm | Established, Input::Closed) => {
                self.fail(DownReason::ConnectionClosed, &mut out)
            }
            // Everything else (stale timers, events for a connection we no longer have) is
            // ignored: the session task cancels timers, but an expiry may already be queued.
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FsmConfig {
        FsmConfig {
            local_as: 64512,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            remote_as: 65001,
            hold_time: 90,
            keepalive: None,
            capabilities: vec![
                Capability::Multiprotocol(Family::IPV4_UNICAST),
                Capability::RouteRefresh,
            ],
            passive: false,
            connect_retry: Duration::from_secs(1),
            connect_retry_max: Duration::from_secs(30),
        }
    }

    fn peer_open(asn: u32, hold: u16) -> Message {
        Message::Open(Open::new(
            asn,
            hold,
            Ipv4Addr::new(10, 0, 0, 2),
            vec![
                Capability::Multiprotocol(Family::IPV4_UNICAST),
                Capability::Multiprotocol(Family::IPV6_UNICAST),
                Capability::RouteRefresh,
            ],
        ))
    }

    fn to_established(f: &mut Fsm) -> Vec<Output> {
        f.handle(Input::Start);
        f.handle(Input::Connected);
        f.handle(Input::Message(peer_open(65001, 30)));
        f.handle(Input::Message(Message::Keepalive))
    }

    #[test]
    fn happy_path_negotiates_hold_and_keepalive() {
        let mut f = Fsm::new(cfg());
        let out = f.handle(Input::Start);
        assert_eq!(f.state(), State::Connect);
        assert!(out.contains(&Output::Connect));
        let out = f.handle(Input::Connected);
        assert_eq!(f.state(), State::OpenSent);
        assert!(
            matches!(&out[1], Output::Send(Message::Open(o)) if o.asn() == 64512 && o.hold_time == 90)
        );
        let out = f.handle(Input::Message(peer_open(65001, 30)));
        assert_eq!(f.state(), State::OpenConfirm);
        assert!(out.contains(&Output::Send(Message::Keepalive)));
        assert!(out.contains(&Output::SetTimer(Timer::Hold, Duration::from_secs(30))));
        assert!(out.contains(&Output::SetTimer(Timer::Keepalive, Duration::from_secs(10))));
        let out = f.handle(Input::Message(Message::Keepalive));
        assert_eq!(f.state(), State::Established);
        let n = out
            .iter()
            .find_map(|o| match o {
                Output::Established(n) => Some(n.clone()),
                _ => None,
            })
            .expect("established output");
        assert_eq!(n.hold_time, 30);
        assert_eq!(n.families, vec![Family::IPV4_UNICAST]);
        assert!(n.route_refresh && n.four_octet_as);
    }

    #[test]
    fn zero_hold_time_disables_timers() {
        let mut f = Fsm::new(cfg());
        f.handle(Input::Start);
        f.handle(Input::Connected);
        let out = f.handle(Input::Message(peer_open(65001, 0)));
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::SetTimer(Timer::Hold | Timer::Keepalive, _)))
        );
    }

    #[test]
    fn wrong_peer_as_sends_bad_peer_as_and_retries() {
        let mut f = Fsm::new(cfg());
        f.handle(Input::Start);
        f.handle(Input::Connected);
        let out = f.handle(Input::Message(peer_open(65099, 90)));
        assert_eq!(f.state(), State::Idle);
        assert!(out.iter().any(|o| matches!(o, Output::Send(Message::Notification(n)) if n.code == notif::OPEN && n.subcode == notif::OPEN_BAD_PEER_AS)));
        assert!(out.contains(&Output::Disconnect));
        // Automatic restart armed with backoff (one failure: 2 s).
        assert!(out.contains(&Output::SetTimer(
            Timer::ConnectRetry,
            Duration::from_secs(2)
        )));
        let out = f.handle(Input::TimerExpired(Timer::ConnectRetry));
        assert_eq!(f.state(), State::Connect);
        assert!(out.contains(&Output::Connect));
    }

    #[test]
    fn connect_retry_backs_off_and_caps() {
        let mut f = Fsm::new(cfg());
        f.handle(Input::Start);
        let mut delays = Vec::new();
        for _ in 0..8 {
            let out = f.handle(Input::ConnectFailed);
            assert_eq!(f.state(), State::Active);
            delays.extend(out.iter().filter_map(|o| match o {
                Output::SetTimer(Timer::ConnectRetry, d) => Some(d.as_secs()),
                _ => None,
            }));
            f.handle(Input::TimerExpired(Timer::ConnectRetry));
            assert_eq!(f.state(), State::Connect);
        }
        assert_eq!(delays, vec![2, 4, 8, 16, 30, 30, 30, 30]);
        // Success resets the backoff.
        f.handle(Input::Connected);
        f.handle(Input::Message(peer_open(65001, 90)));
        f.handle(Input::Message(Message::Keepalive));
        assert_eq!(f.retry_delay(), Duration::from_secs(1));
    }

    #[test]
    fn hold_timer_expiry_sends_notification() {
        let mut f = Fsm::new(cfg());
        to_established(&mut f);
        let out = f.handle(Input::TimerExpired(Timer::Hold));
        assert!(out.iter().any(|o| matches!(o, Output::Send(Message::Notification(n)) if n.code == notif::HOLD_TIMER_EXPIRED)));
        assert!(out.contains(&Output::Down(DownReason::HoldTimerExpired)));
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn keepalive_timer_sends_and_rearms() {
        let mut f = Fsm::new(cfg());
        to_established(&mut f);
        let out = f.handle(Input::TimerExpired(Timer::Keepalive));
        assert_eq!(
            out,
            vec![
                Output::Send(Message::Keepalive),
                Output::SetTimer(Timer::Keepalive, Duration::from_secs(10))
            ]
        );
    }

    #[test]
    fn update_restarts_hold_and_is_delivered() {
        let mut f = Fsm::new(cfg());
        to_established(&mut f);
        let u = Update::end_of_rib(Family::IPV4_UNICAST);
        let out = f.handle(Input::Message(Message::Update(u.clone())));
        assert_eq!(
            out,
            vec![
                Output::SetTimer(Timer::Hold, Duration::from_secs(30)),
                Output::Update(u)
            ]
        );
    }

    #[test]
    fn update_before_established_is_fsm_error() {
        let mut f = Fsm::new(cfg());
        f.handle(Input::Start);
        f.handle(Input::Connected);
        let out = f.handle(Input::Message(Message::Update(Update::default())));
        assert!(out.iter().any(|o| matches!(o, Output::Send(Message::Notification(n)) if n.code == notif::FSM && n.subcode == 1)));
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn decode_error_maps_to_its_notification() {
        let mut f = Fsm::new(cfg());
        to_established(&mut f);
        let out = f.handle(Input::DecodeError(DecodeError::InvalidOrigin {
            value: 7,
            raw: vec![0x40, 1, 1, 7],
        }));
        assert!(
            out.contains(&Output::Send(Message::Notification(Notification {
                code: notif::UPDATE,
                subcode: notif::UPDATE_INVALID_ORIGIN,
                data: vec![0x40, 1, 1, 7]
            })))
        );
    }

    #[test]
    fn stop_sends_cease_and_does_not_restart() {
        let mut f = Fsm::new(cfg());
        to_established(&mut f);
        let out = f.handle(Input::Stop {
            subcode: notif::CEASE_PEER_DECONFIGURED,
        });
        assert!(
            out.contains(&Output::Send(Message::Notification(Notification::new(
                notif::CEASE,
                notif::CEASE_PEER_DECONFIGURED
            ))))
        );
        assert!(!out.iter().any(|o| matches!(o, Output::SetTimer(..))));
        assert!(
            f.handle(Input::TimerExpired(Timer::ConnectRetry))
                .is_empty()
        );
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn passive_waits_for_incoming() {
        let mut f = Fsm::new(FsmConfig {
            passive: true,
            ..cfg()
        });
        let out = f.handle(Input::Start);
        assert_eq!(f.state(), State::Active);
        assert!(!out.contains(&Output::Connect));
        assert!(
            f.handle(Input::TimerExpired(Timer::ConnectRetry))
                .is_empty()
        );
        f.handle(Input::Connected);
        assert_eq!(f.state(), State::OpenSent);
    }

    #[test]
    fn ibgp_same_router_id_is_rejected() {
        let mut f = Fsm::new(FsmConfig {
            remote_as: 64512,
            ..cfg()
        });
        f.handle(Input::Start);
        f.handle(Input::Connected);
        let open = Message::Open(Open::new(64512, 90, Ipv4Addr::new(10, 0, 0, 1), vec![]));
        let out = f.handle(Input::Message(open));
        assert!(out.iter().any(|o| matches!(o, Output::Send(Message::Notification(n)) if n.subcode == notif::OPEN_BAD_BGP_ID)));
    }

    #[test]
    fn four_octet_peer_as_via_capability() {
        let mut f = Fsm::new(FsmConfig {
            remote_as: 4_200_000_001,
            ..cfg()
        });
        f.handle(Input::Start);
        f.handle(Input::Connected);
        let open = Open::new(4_200_000_001, 90, Ipv4Addr::new(10, 0, 0, 2), vec![]);
        assert_eq!(open.my_as, crate::codec::AS_TRANS);
        f.handle(Input::Message(Message::Open(open)));
        assert_eq!(f.state(), State::OpenConfirm);
    }

    #[test]
    fn collision_keeps_higher_id_initiator() {
        let lo = Ipv4Addr::new(10, 0, 0, 1);
        let hi = Ipv4Addr::new(10, 0, 0, 2);
        assert!(collision_keeps_outgoing(hi, lo));
        assert!(!collision_keeps_outgoing(lo, hi));
    }

    #[test]
    fn graceful_reasons() {
        assert!(DownReason::ConnectionClosed.graceful());
        assert!(DownReason::HoldTimerExpired.graceful());
        assert!(!DownReason::Stopped.graceful());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn input() -> impl Strategy<Value = Input> {
            prop_oneof![
                Just(Input::Start),
                Just(Input::Stop {
                    subcode: notif::CEASE_ADMIN_SHUTDOWN
                }),
                Just(Input::Connected),
                Just(Input::ConnectFailed),
                Just(Input::Closed),
                Just(Input::Message(Message::Keepalive)),
                Just(Input::Message(peer_open(65001, 30))),
                Just(Input::Message(peer_open(65002, 30))),
                Just(Input::Message(Message::Update(Update::default()))),
                Just(Input::Message(Message::Notification(Notification::new(
                    6, 2
                )))),
                Just(Input::TimerExpired(Timer::ConnectRetry)),
                Just(Input::TimerExpired(Timer::Hold)),
                Just(Input::TimerExpired(Timer::Keepalive)),
            ]
        }

        proptest! {
            /// Whatever arrives: Established is reported only on OpenConfirm + KEEPALIVE, every
            /// Established is followed by at most one Down before the next, a stopped machine
            /// never connects, and UPDATEs reach the RIB only when Established.
            #[test]
            fn invariants_hold(inputs in prop::collection::vec(input(), 0..60)) {
                let mut f = Fsm::new(cfg());
                let mut up = false;
                for i in inputs {
                    let before = f.state();
                    let is_keepalive = matches!(i, Input::Message(Message::Keepalive));
                    let out = f.handle(i);
                    for o in &out {
                        match o {
                            Output::Established(_) => {
                                prop_assert!(before == State::OpenConfirm && is_keepalive);
                                prop_assert!(!up);
                                up = true;
                            }
                            Output::Down(_) => up = false,
                            Output::Connect => prop_assert!(f.enabled()),
                            Output::Update(_) => prop_assert_eq!(before, State::Established),
                            _ => {}
                        }
                    }
                    prop_assert_eq!(up, f.state() == State::Established);
                    prop_assert!(f.retry_delay() <= Duration::from_secs(30));
                }
            }
        }
    }
}
