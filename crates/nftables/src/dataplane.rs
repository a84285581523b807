//! What the node agent calls.

use std::path::Path;

use calico_policy::program::HostProgram;
use calico_policy::sets::SetId;

use crate::batch::{Batch, Family};
use crate::render::{EndpointToHost, RenderError, TABLE_NAME, render_set_update, render_table};
use crate::socket::{NftError, NftSocket};

/// Why a program could not be enforced.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The program has something the renderer does not support; nothing was changed.
    #[error("cannot render the policy program: {0}")]
    Render(#[from] RenderError),
    /// The kernel refused the transaction or could not be reached; nothing was changed.
    #[error(transparent)]
    Kernel(#[from] NftError),
}

/// The policy dataplane of one host (one network namespace): owns the table `inet calico-rs`.
#[derive(Debug)]
pub struct PolicyDataplane {
    socket: NftSocket,
    to_host: EndpointToHost,
}

impl PolicyDataplane {
    /// For the current thread's network namespace.
    pub fn new() -> Result<PolicyDataplane, NftError> {
        Ok(PolicyDataplane {
            socket: NftSocket::open()?,
            to_host: EndpointToHost::default(),
        })
    }

    /// For the network namespace at `path`.
    pub fn new_in(path: &Path) -> Result<PolicyDataplane, NftError> {
        Ok(PolicyDataplane {
            socket: NftSocket::open_in(path)?,
            to_host: EndpointToHost::default(),
        })
    }

    /// Sets what happens to traffic from workloads to the host (default: Felix's Drop);
    /// takes effect with the next [`PolicyDataplane::apply`].
    pub fn set_endpoint_to_host(&mut self, action: EndpointToHost) {
        self.to_host = action;
    }

    /// Makes the kernel enforce exactly `program`: the previous table (if any, e.g. left by a
    /// previous run of the agent) is replaced in the same transaction, so there is no moment
    /// without enforcement and no half-applied policy. Returns the number of messages sent.
    pub fn apply(&mut self, program: &HostProgram) -> Result<usize, ApplyError> {
        let batch = render_table(program, self.to_host)?;
        self.socket.send(&batch)?;
        tracing::debug!(
            messages = batch.len(),
            endpoints = program.endpoints.len(),
            "policy table applied"
        );
        Ok(batch.len())
    }

    /// Rewrites the elements of the given sets only (one transaction), after a membership
    /// change reported by `calico_policy::sets::SetIndex`. Every id must be a set the last
    /// [`PolicyDataplane::apply`] rendered; a new set needs a full apply.
    pub fn update_sets(
        &mut self,
        program: &HostProgram,
        ids: &[SetId],
    ) -> Result<usize, ApplyError> {
        let batch = render_set_update(program, ids);
        self.socket.send(&batch)?;
        Ok(batch.len())
    }

    /// Removes the table (agent uninstall); no error when it is absent.
    pub fn remove(&mut self) -> Result<(), NftError> {
        let mut b = Batch::new(Family::Inet);
        b.add_table(TABLE_NAME);
        b.delete_table(TABLE_NAME);
        self.socket.send(&b)
    }

    /// Sends a hand-built batch (tests, tools).
    pub fn send(&mut self, batch: &Batch) -> Result<(), NftError> {
        self.socket.send(batch)
    }
}
