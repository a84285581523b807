//! Calico's policy model, compiled to a dataplane-neutral program.
//!
//! - [`model`]: the input (tiers, policies, profiles, endpoints, network sets, failsafe ports);
//! - [`compile()`]/[`Compiler`]: per-endpoint, per-direction programs ([`program`]) in Calico's
//!   evaluation order, with every referenced selector turned into one IP set;
//! - [`sets::SetIndex`]: set membership kept up to date incrementally, reporting exactly the
//!   sets an endpoint change touches;
//! - [`verdict()`]/[`verdict::evaluate`]: a reference evaluator for tests and cross-checks;
//! - [`knp::translate`]: Kubernetes NetworkPolicy → Calico policy;
//! - [`felix::settings_for`]: failsafe ports and `DefaultEndpointToHostAction` from
//!   FelixConfiguration (`default`, then `node.<name>`).
//!
//! Pure: no I/O. The nftables dataplane consumes [`program::HostProgram`]: endpoints' chains
//! refer to shared rule lists (one per policy or profile and direction) and to IP sets by
//! stable id; render each rule per IP family with [`program::RuleMatch::for_family`].
//!
//! [`isolate::compile_isolated`] keeps one bad policy from stopping the others (skipped rules,
//! policies replaced by deny, reported as [`isolate::PolicyIssue`]).
//!
//! [`incremental::Incremental`] keeps one node's program up to date change by change (a
//! policy recompiled only for the endpoints it selects, sets updated from the endpoints that
//! enter or leave them); it always equals `compile_isolated` of the same resources.
//!
//! Not modelled (yet): rule `http` and `services` matches (reported and handled fail closed,
//! see [`isolate`]), `metadata`; anything specific to a
//! `*` (all-interfaces) host endpoint beyond having no interface name; incremental updates of
//! tiers and profiles (rebuild the [`Compiler`]; policies have [`Compiler::upsert_policy`] and
//! [`Compiler::remove_policy`], endpoints and network sets [`sets::SetIndex`]); garbage
//! collection of sets no policy uses any more. [`from_api`] converts `calico-api` resources.
//! Left to the dataplane: allowing established/related and dropping invalid packets before the
//! chains, the workload-to-host default action, and dropping encapsulated packets from
//! workloads.

pub mod compile;
pub mod felix;
pub mod from_api;
pub mod incremental;
pub mod isolate;
pub mod knp;
pub mod labels;
pub mod model;
pub mod program;
pub mod sets;
pub mod verdict;

pub use compile::{CompileError, Compiler, compile};
pub use verdict::{Packet, Verdict, evaluate, path_verdict, verdict};
