//! BGP-4 speaker for calico-rs: codec, FSM, RIB and sessions.
//!
//! - [`codec`]: bytes <-> messages, with typed decode errors that map to NOTIFICATIONs.
//! - [`fsm`]: the RFC 4271 state machine as `handle(input) -> Vec<Output>`, no I/O.
//! - [`rib`]: paths, best-path selection and iBGP/eBGP export rules.
//! - [`speaker`]: the tokio service the node agent drives with a desired-state config.
//! - [`sockopt`]: TCP-MD5 and GTSM socket options.
//!
//! Usage: `let (speaker, mut routes) = Speaker::start();` then `speaker.set_config(cfg)` with
//! the whole desired state whenever it changes; read [`RouteEvent`]s from `routes` and program
//! them; `speaker.status()` for `calicoctl node status`.
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
//! - Backpressure: the [`RouteEvent`] channel is unbounded; a consumer that does not drain it
//!   promptly holds a bulk load as events, about 54 bytes each (docs/BENCHMARKS.md, BGP).

pub mod codec;
pub mod fsm;
pub mod rib;
pub mod sockopt;
pub mod speaker;

pub use speaker::{
    AfiName, NextHopMode, PeerConfig, PeerStatus, Route, RouteEvent, Speaker, SpeakerConfig,
    SpeakerError,
};
