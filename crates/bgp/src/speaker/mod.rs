//! The BGP speaker service: desired-state API for the node agent, split the way routing suites
//! split theirs:
//!
//! - `config`: the desired state ([`SpeakerConfig`], [`PeerConfig`], originated routes).
//! - `policy`: Calico's BGPFilter import/export rules ([`PolicyRule`], [`apply_policy`]).
//! - `core`: the sans-I/O core, `Core::handle(now, event) -> Vec<Action>`: configuration
//!   diff, Loc-RIB, Adj-RIB-Out per peer, graceful-restart helper, `Synced`, peer status. No
//!   sockets, no timers, no tokio; time comes in with each event.
//! - `runtime` and `session`: the tokio tasks that own sockets and timers, perform the core's
//!   actions and feed it events.
//! - `wire`: packing announcements and withdrawals into UPDATE messages.
//!
//! ```text
//!  agent ── Speaker::set_config ──┐                 ┌──► RouteEvent (bounded mpsc, ──► agent
//!                                 │                 │    coalesced per prefix when full)
//!                                 ▼                 │
//!  listener task ──────► ┌──────────────────────────┴──┐
//!  (accept; the MD5      │ runtime task                │ ──► status map ──► Speaker::status()
//!   keys on its socket)  │   Core::handle(now, event)  │ ◄── Event::Timer from the sleep
//!                        │     -> Vec<Action>          │     tasks it spawns for SetTimer
//!                        └───┬─────────────────▲───────┘     (Synced deadline, GR stale)
//!           SessionCmd       │                 │  Event::Session{peer, generation, event}
//!  (Send msgs, Incoming,     ▼                 │  (state, established, update, refresh, down)
//!   Stop)          ┌───────────────────────────┐
//!                  │ session task (per peer)   │ owns Fsm, its timers, the TCP write half
//!                  │   ├─ connect task (1 shot)│ ── ConnectResult ──► session
//!                  │   └─ reader task          │ ── raw frames ──────► session (decodes)
//!                  └───────────────────────────┘
//! ```

mod config;
mod core;
mod outbox;
mod policy;
mod runtime;
mod session;
mod wire;

#[cfg(any(test, feature = "record"))]
// The recorder (`record`) uses the writing half only; the tests use both.
#[cfg_attr(not(test), allow(dead_code))]
mod replay;
#[cfg(test)]
mod replay_tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

pub use self::config::{AfiName, NextHopMode, PeerConfig, PrefixCommunities, Route, SpeakerConfig};
pub use self::core::{PeerStatus, RouteEvent};
pub use self::outbox::ROUTE_EVENTS;
pub use self::policy::{Community, PolicyRule, RouteOperation, apply_policy};
use self::runtime::{Runtime, SharedStatus};

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("the speaker task has stopped")]
    Stopped,
}

/// Handle to the running speaker. The speaker runs while a handle exists, and after the last
/// one is dropped for as long as it still listens or has sessions.
#[derive(Clone)]
pub struct Speaker {
    tx: mpsc::UnboundedSender<Box<SpeakerConfig>>,
    status: SharedStatus,
}

impl Speaker {
    /// Starts the speaker's runtime task on the current tokio runtime. Returns the handle and
    /// the stream of best-path changes: at most [`ROUTE_EVENTS`] wait in it; beyond that the
    /// speaker coalesces them per prefix until there is room (nothing is lost, see `outbox`).
    pub fn start() -> (Speaker, mpsc::Receiver<RouteEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (route_tx, route_rx) = mpsc::channel(ROUTE_EVENTS);
        let status = Arc::new(Mutex::new(BTreeMap::new()));
        tokio::spawn(Runtime::new(route_tx, status.clone()).run(rx));
        (Speaker { tx, status }, route_rx)
    }

    /// Replaces the desired state.
    pub fn set_config(&self, cfg: SpeakerConfig) -> Result<(), SpeakerError> {
        self.tx
            .send(Box::new(cfg))
            .map_err(|_| SpeakerError::Stopped)
    }

    /// Session status of every configured peer, by address.
    pub fn status(&self) -> Vec<PeerStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
