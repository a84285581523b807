//! BGP-4 speaker for calico-rs: codec, FSM, RIB and sessions.
//!
//! - [`codec`]: bytes <-> messages, with typed decode errors that map to NOTIFICATIONs.
//! - [`fsm`]: the RFC 4271 state machine as `handle(input) -> Vec<Output>`, no I/O.
//! - [`rib`]: paths, best-path selection, import/export filters and iBGP/eBGP export rules.
//! - [`speaker`]: the tokio service the node agent drives with a desired-state config.

pub mod codec;
pub mod fsm;
pub mod rib;
pub mod sockopt;
pub mod speaker;

pub use speaker::{
    AfiName, NextHopMode, PeerConfig, PeerStatus, Route, RouteEvent, Speaker, SpeakerConfig,
    SpeakerError,
};
