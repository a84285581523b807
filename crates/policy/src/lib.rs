//! Calico's policy model, compiled to a dataplane-neutral program.
//!
//! - [`model`]: the input (tiers, policies, profiles, endpoints, network sets, failsafe ports);
//! - [`compile()`]/[`Compiler`]: per-endpoint, per-direction programs ([`program`]) in Calico's
//!   evaluation order, with every referenced selector turned into one IP set;
//! - [`sets::SetIndex`]: set membership kept up to date incrementally, reporting exactly the
//!   sets an endpoint change touches;
//! - [`verdict()`]/[`verdict::evaluate`]: a reference evaluator for tests and cross-checks;
//! - [`knp::translate`]: Kubernetes NetworkPolicy → Calico policy.
//!
//! Pure: no I/O. The nftables dataplane consumes [`program::HostProgram`].

pub mod compile;
pub mod knp;
pub mod labels;
pub mod model;
pub mod program;
pub mod sets;
pub mod verdict;

pub use compile::{CompileError, Compiler, compile};
pub use verdict::{Packet, Verdict, evaluate, path_verdict, verdict};
