//! Running Rust code inside a network namespace: the dataplane crate's helpers (one
//! implementation of setns-on-a-dedicated-thread), re-exported for lab users.

pub use calico_dataplane::netns::{NetnsError, run_async_in, run_in};
