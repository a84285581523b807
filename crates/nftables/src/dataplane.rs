//! What the node agent calls.

use std::path::Path;

use calico_policy::program::HostProgram;
use calico_policy::sets::SetId;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::batch::{Batch, ChainSpec, ChainType, Family, Hook, KeyType, SetSpec, Verdict};
use crate::render::{
    EndpointToHost, RenderError, RenderSettings, TABLE_NAME, render_changes, render_set_update,
    render_spec_from,
};
use crate::socket::{NftError, NftSocket};
use crate::table::{Applied, Op, TableSpec, diff, diff_patch, full_batch, to_batch};

/// What one [`PolicyDataplane::apply_changes`] sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyReport {
    /// The whole table was replaced (first apply, or the difference was refused).
    pub full: bool,
    /// Messages in the transaction (0: nothing changed, nothing sent).
    pub messages: usize,
    /// Chains whose rules the transaction flushed, wrote or deleted (empty for a full apply).
    pub chains: BTreeSet<String>,
    /// Sets (and verdict maps) whose elements it changed, or that it created or deleted.
    pub sets: BTreeSet<String>,
    /// Where the time went: rendering the table from the program, computing the difference,
    /// and the kernel's transaction (send to acknowledgement).
    pub timings: ApplyTimings,
}

impl ApplyReport {
    /// Notes the chains and sets `ops` touch.
    fn record(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::FlushChain(c) | Op::DeleteChain(c) | Op::AddRule(c, _) => {
                    self.chains.insert(c.clone());
                }
                Op::AddChain(c) => {
                    self.chains.insert(c.name.clone());
                }
                Op::AddSet(s) => {
                    self.sets.insert(s.name.clone());
                }
                Op::DeleteSet(s) | Op::FlushSet(s) | Op::AddElems(s, _) | Op::DeleteElems(s, _) => {
                    self.sets.insert(s.clone());
                }
            }
        }
    }
}

/// How long each step of one apply took (logged with every applied change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyTimings {
    /// [`render_spec_from`]: the program rendered as a table.
    pub render: Duration,
    /// [`diff`]: the operations from the last applied table to the new one.
    pub diff: Duration,
    /// The transaction: encoding, sending and the kernel's acknowledgement.
    pub kernel: Duration,
}

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
    settings: RenderSettings,
    /// What the table holds, as far as we know: `None` until the first apply or adoption.
    applied: Option<Applied>,
    /// The program `applied` was rendered from (when it is `Applied::Exactly`): lets the
    /// next render reuse the chains and sets of what did not change.
    program: Option<HostProgram>,
    /// The settings `applied` was rendered with: the table is patched by the program's
    /// changes only while they stay the same.
    rendered: Option<RenderSettings>,
    /// The next apply renders and compares the whole table (the periodic resync).
    whole_next: bool,
}

impl PolicyDataplane {
    /// For the current thread's network namespace.
    pub fn new() -> Result<PolicyDataplane, NftError> {
        Ok(PolicyDataplane {
            socket: NftSocket::open()?,
            settings: RenderSettings::default(),
            applied: None,
            program: None,
            rendered: None,
            whole_next: false,
        })
    }

    /// For the network namespace at `path`.
    pub fn new_in(path: &Path) -> Result<PolicyDataplane, NftError> {
        Ok(PolicyDataplane {
            socket: NftSocket::open_in(path)?,
            settings: RenderSettings::default(),
            applied: None,
            program: None,
            rendered: None,
            whole_next: false,
        })
    }

    /// Sets what happens to traffic from workloads to the host (default: Felix's Drop);
    /// takes effect with the next [`PolicyDataplane::apply`].
    pub fn set_endpoint_to_host(&mut self, action: EndpointToHost) {
        self.settings.to_host = action;
    }

    /// Sets the workload interface prefixes (Felix's `InterfacePrefix`, default `cali`):
    /// traffic on such an interface that has no endpoint is dropped. Takes effect with the
    /// next apply.
    pub fn set_interface_prefixes(&mut self, prefixes: Vec<String>) {
        self.settings.interface_prefixes = prefixes;
    }

    /// Sets what NAT outgoing does; takes effect with the next apply (by difference: only
    /// the pool sets that changed are refilled, the nat chain is rewritten only when its
    /// rules change).
    pub fn set_nat_outgoing(&mut self, nat: crate::nat::NatOutgoing) {
        self.settings.nat = nat;
    }

    /// Packets and bytes dropped so far because they came from or went to a workload-prefixed
    /// interface without an endpoint (see [`crate::read::unknown_interface_drops`]).
    pub fn unknown_interface_drops(&mut self) -> Result<crate::read::Counter, NftError> {
        crate::read::unknown_interface_drops(&mut self.socket)
    }

    /// Makes the kernel enforce exactly `program`, in one transaction, so there is no moment
    /// without enforcement and no half-applied policy. A table already in the kernel (ours
    /// from before, or a previous run's) is rewritten in place by difference, never deleted
    /// and re-created: with delete-and-re-create, a ping flood that both policies deny got a
    /// packet through in 3 of 40 runs of `traffic::policy_change_under_pings_is_atomic` on a
    /// loaded machine (kernel 6.18), the in-place rewrite in none of 20. Returns the number of
    /// messages sent.
    pub fn apply(&mut self, program: &HostProgram) -> Result<usize, ApplyError> {
        if self.applied.is_none() {
            self.adopt_existing()?;
        }
        let report = self.apply_changes(program)?;
        tracing::debug!(
            messages = report.messages,
            endpoints = program.endpoints.len(),
            "policy table applied"
        );
        Ok(report.messages)
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
        // The table now differs from the last applied one in ways not recorded here: the next
        // `apply_changes` replaces the whole table.
        self.applied = None;
        Ok(batch.len())
    }

    /// Makes the kernel enforce exactly `program` by sending only the difference from what
    /// was applied last (see [`crate::table::diff`]), in one transaction: a rule change in one
    /// policy rewrites that policy's chains only; a membership change, that set's elements.
    /// The first call (nothing applied, nothing adopted) replaces the whole table; so does a
    /// difference the kernel refuses (e.g. someone changed the table behind our back), in
    /// the same atomic way.
    pub fn apply_changes(&mut self, program: &HostProgram) -> Result<ApplyReport, ApplyError> {
        let whole = std::mem::take(&mut self.whole_next);
        if !whole
            && self.rendered.as_ref() == Some(&self.settings)
            && let Some(report) = self.apply_patch(program)?
        {
            return Ok(report);
        }
        let prev = match (&self.applied, &self.program) {
            (Some(Applied::Exactly(t)), Some(p)) => Some((p, t)),
            _ => None,
        };
        let t = Instant::now();
        let spec = render_spec_from(program, &self.settings, prev)?;
        let mut timings = ApplyTimings {
            render: t.elapsed(),
            ..Default::default()
        };
        let Some(applied) = &self.applied else {
            return self.replace(spec, program, timings);
        };
        let t = Instant::now();
        let ops = diff(applied, &spec);
        timings.diff = t.elapsed();
        if ops.is_empty() {
            return Ok(ApplyReport {
                timings,
                ..Default::default()
            });
        }
        let t = Instant::now();
        let batch = to_batch(TABLE_NAME, &ops);
        if let Err(e) = self.socket.send(&batch) {
            tracing::warn!(error = %e, "incremental policy update refused; replacing the whole table");
            return self.replace(spec, program, timings);
        }
        timings.kernel = t.elapsed();
        let mut report = ApplyReport {
            full: false,
            messages: batch.len(),
            timings,
            ..Default::default()
        };
        report.record(&ops);
        tracing::debug!(
            messages = report.messages,
            chains = report.chains.len(),
            sets = report.sets.len(),
            "policy difference applied"
        );
        self.applied = Some(Applied::Exactly(spec));
        self.program = Some(program.clone());
        self.rendered = Some(self.settings.clone());
        Ok(report)
    }

    /// The fast path of [`PolicyDataplane::apply_changes`]: only the sets and rule lists the
    /// program changed (by pointer, see [`render_changes`]) are rendered and compared, and the
    /// table we keep is patched in place. `None` when the change needs the whole render
    /// (endpoints changed, a host endpoint, a set or chain re-created, nothing applied yet).
    fn apply_patch(&mut self, program: &HostProgram) -> Result<Option<ApplyReport>, ApplyError> {
        let (Some(Applied::Exactly(table)), Some(prev)) = (&self.applied, &self.program) else {
            return Ok(None);
        };
        let t = Instant::now();
        let Some(patch) = render_changes(program, (prev, table))? else {
            return Ok(None);
        };
        let mut timings = ApplyTimings {
            render: t.elapsed(),
            ..Default::default()
        };
        let t = Instant::now();
        let Some(ops) = diff_patch(table, &patch) else {
            return Ok(None);
        };
        timings.diff = t.elapsed();
        let mut report = ApplyReport {
            timings,
            ..Default::default()
        };
        if !ops.is_empty() {
            let t = Instant::now();
            let batch = to_batch(TABLE_NAME, &ops);
            if let Err(e) = self.socket.send(&batch) {
                tracing::warn!(error = %e, "incremental policy update refused; replacing the whole table");
                let spec = render_spec_from(program, &self.settings, None)?;
                return self.replace(spec, program, timings).map(Some);
            }
            report.timings.kernel = t.elapsed();
            report.messages = batch.len();
            report.record(&ops);
        }
        if let Some(Applied::Exactly(table)) = &mut self.applied {
            table.apply_patch(&patch);
        }
        self.program = Some(program.clone());
        Ok(Some(report))
    }

    /// The next [`PolicyDataplane::apply_changes`] renders the whole table from the program
    /// and compares all of it with what was applied (the agent's periodic resync: whatever
    /// an incremental step might have missed is repaired then).
    pub fn whole_next(&mut self) {
        self.whole_next = true;
    }

    fn replace(
        &mut self,
        spec: TableSpec,
        program: &HostProgram,
        mut timings: ApplyTimings,
    ) -> Result<ApplyReport, ApplyError> {
        let t = Instant::now();
        let batch = full_batch(TABLE_NAME, &spec);
        self.program = None;
        self.socket.send(&batch)?;
        timings.kernel = t.elapsed();
        self.applied = Some(Applied::Exactly(spec));
        self.program = Some(program.clone());
        self.rendered = Some(self.settings.clone());
        Ok(ApplyReport {
            full: true,
            messages: batch.len(),
            timings,
            ..Default::default()
        })
    }

    /// Recognises a table `inet calico-rs` left by a previous run (the restart path): reads
    /// which chains and sets it has, and leaves it enforcing untouched. The next
    /// [`PolicyDataplane::apply_changes`] then keeps every chain and set the new program
    /// still has (same name and kind): it rewrites their rules and elements in place, adds
    /// what is new and deletes what is gone, in one transaction, so there is no moment
    /// without the table. Rule counters restart then (rules are rewritten, chains kept).
    /// Returns the number of chains and sets found (`(0, 0)`: no table).
    pub fn adopt_existing(&mut self) -> Result<(usize, usize), NftError> {
        let mut t = TableSpec::default();
        for c in self.socket.list_chains()? {
            if c.table != TABLE_NAME {
                continue;
            }
            let base = match (c.hook, c.policy) {
                (Some((num, prio)), policy) => {
                    let hook = match num {
                        0 => Hook::Prerouting,
                        1 => Hook::Input,
                        2 => Hook::Forward,
                        3 => Hook::Output,
                        _ => Hook::Postrouting,
                    };
                    let policy = if policy == Some(0) {
                        Verdict::Drop
                    } else {
                        Verdict::Accept
                    };
                    Some((hook, prio, policy))
                }
                (None, _) => None,
            };
            let kind = match c.kind.as_deref() {
                Some("nat") => ChainType::Nat,
                _ => ChainType::Filter,
            };
            t.add_chain(&ChainSpec {
                name: c.name,
                base,
                kind,
            });
        }
        for s in self.socket.list_sets()? {
            if s.table != TABLE_NAME {
                continue;
            }
            let key = [
                KeyType::Ipv4Addr,
                KeyType::Ipv6Addr,
                KeyType::InetService,
                KeyType::IfName,
                KeyType::Ipv4AddrPort,
                KeyType::Ipv6AddrPort,
            ]
            .into_iter()
            .find(|k| k.code() == s.key_type && k.key_len() == s.key_len);
            let Some(key) = key else {
                // Not one of ours: a full replace is the only safe thing.
                tracing::warn!(set = %s.name, "unknown set type in our table; it will be replaced whole");
                self.applied = None;
                return Ok((0, 0));
            };
            t.add_set(&SetSpec {
                name: s.name,
                key,
                interval: s.flags & 0x4 != 0,
                verdict_map: s.flags & 0x8 != 0,
            });
        }
        let found = (t.chains.len(), t.sets.len());
        self.applied = if found == (0, 0) {
            None
        } else {
            Some(Applied::Adopted(t))
        };
        Ok(found)
    }

    /// The socket, for reading the kernel's view (listing chains, sets, rules).
    pub fn socket(&mut self) -> &mut NftSocket {
        &mut self.socket
    }

    /// Removes the table (agent uninstall); no error when it is absent.
    pub fn remove(&mut self) -> Result<(), NftError> {
        let mut b = Batch::new(Family::Inet);
        b.add_table(TABLE_NAME);
        b.delete_table(TABLE_NAME);
        self.socket.send(&b)?;
        self.applied = None;
        Ok(())
    }

    /// Sends a hand-built batch (tests, tools).
    pub fn send(&mut self, batch: &Batch) -> Result<(), NftError> {
        // It may change anything: the next `apply_changes` replaces the whole table.
        self.applied = None;
        self.socket.send(batch)
    }
}
