//! BGP-4 speaker for calico-rs: codec, FSM, RIB and sessions.
//!
//! - [`codec`]: bytes <-> messages, with typed decode errors that map to NOTIFICATIONs.
//! - [`fsm`]: the RFC 4271 state machine as `handle(input) -> Vec<Output>`, no I/O.
//! - [`rib`]: paths, best-path selection and iBGP/eBGP export rules.
//! - [`speaker`]: the service the node agent drives with a desired-state config, in layers:
//!   - `speaker::config`: the desired state ([`SpeakerConfig`], [`PeerConfig`], [`Route`]);
//!   - `speaker::policy`: Calico's BGPFilter import/export rules ([`speaker::PolicyRule`]);
//!   - `speaker::core`: the sans-I/O core, `Core::handle(now, event) -> Vec<Action>`: config
//!     diff, Loc-RIB, Adj-RIB-Out, graceful-restart helper, peer status; no sockets, timers or
//!     tokio, time is an input;
//!   - `speaker::runtime` and `speaker::session`: the tokio tasks that own the listener, the
//!     TCP connections, the FSMs and every timer, perform the core's actions and feed it
//!     events;
//!   - `speaker::wire`: packing announcements and withdrawals into UPDATEs within 4096 bytes.
//! - [`sockopt`]: TCP-MD5 and GTSM socket options.
//!
//! Tests without sockets or root: the FSM, the RIB, policy and wire packing have unit tests;
//! the core has replay tests (`speaker::replay_tests`) that play fixture files of events
//! (`tests/replay/*.jsonl`, recorded from the interop runs with the `record` feature or
//! written by hand) and compare the actions, plus a property test against a plain model. The
//! interop tests (`tests/interop.rs`, root) run the whole speaker against BIRD, GoBGP and FRR.
//!
//! Graceful-restart helper: when a peer's session drops gracefully its paths are kept, marked
//! stale. A stale path loses ties, so where another peer has an equal fresh path that one
//! becomes best and is reported ([`RouteEvent::Best`], UPDATEs to the other peers) like any
//! other change. Where the stale path stays best nothing is reported: the route is unchanged
//! (so `RouteEvent::Best { stale: true }` only appears when a stale path becomes best later).
//!
//! Usage: `let (speaker, mut routes) = Speaker::start();` then `speaker.set_config(cfg)` with
//! the whole desired state whenever it changes; read [`RouteEvent`]s from `routes` and program
//! them; `speaker.status()` for `calicoctl node status`.
//!
//! Backpressure: the [`RouteEvent`] channel holds at most [`ROUTE_EVENTS`] events; while a
//! consumer lags, further changes are coalesced per prefix (newest wins, `Synced` last) and
//! delivered as room appears, so memory is bounded by the table, not by the churn.
//!
//! Not implemented yet (said plainly so nobody relies on it):
//! - RFC 7606 revised error handling (a malformed UPDATE resets the session), extended
//!   messages (RFC 8654), ADD-PATH, confederations (segments are parsed and kept, not acted on).
//! - Enhanced route refresh (RFC 7313): in the codec only; the speaker does not announce it.
//! - As restarting speaker we announce the Restart State and Forwarding bits and send
//!   End-of-RIB, but we do not defer our own best-path selection until peers' End-of-RIB; the
//!   agent is told when all peers are in sync through [`RouteEvent::Synced`] instead.
//! - GTSM on accepted connections is applied right after `accept`, not on the listening socket
//!   (the first segment of such a connection is not checked).

pub mod codec;
pub mod fsm;
pub mod rib;
pub mod sockopt;
pub mod speaker;

pub use speaker::{
    AfiName, NextHopMode, PeerConfig, PeerStatus, ROUTE_EVENTS, Route, RouteEvent, Speaker,
    SpeakerConfig, SpeakerError,
};
