//! nf_tables programmed over netlink, from Rust, for calico-rs.
//!
//! - [`batch`]: an encoder of nf_tables netlink messages (tables, chains, rules with their
//!   expressions, sets and set elements) into one `NFNL_MSG_BATCH_BEGIN … END` transaction;
//! - [`socket`]: a `NETLINK_NETFILTER` socket that sends a batch and maps the kernel's errors to
//!   the object that caused them;
//! - [`render`]: a [`calico_policy::program::HostProgram`] rendered as the one table
//!   `inet calico-rs`;
//! - [`PolicyDataplane`]: what the node agent calls: [`PolicyDataplane::apply`] replaces the
//!   whole table in one transaction, [`PolicyDataplane::update_sets`] rewrites only the
//!   elements of the sets whose membership changed, [`PolicyDataplane::apply_changes`] sends
//!   only the difference from the last applied table ([`table::diff`]);
//! - [`nat`]: NAT outgoing (Felix's `cali-nat-outgoing`) in the same table;
//! - [`read`]: the table read back (chains, rules, comments, counters, verdicts).

pub mod batch;
pub mod dataplane;
pub mod nat;
mod netlink;
pub mod read;
pub mod render;
pub mod socket;
pub mod table;

pub use batch::{Batch, ChainSpec, ChainType, Expr, Family, Hook, SetElem, SetSpec, Verdict};
pub use dataplane::{ApplyError, ApplyReport, ApplyTimings, PolicyDataplane};
pub use nat::NatOutgoing;
pub use render::{
    DEFAULT_INTERFACE_PREFIX, EndpointToHost, RenderError, RenderSettings, TABLE_NAME,
    UNKNOWN_INTERFACE, render_spec, render_table,
};
pub use socket::{ListedChain, ListedSet, NftError, NftSocket};
pub use table::{Applied, TableSpec};
