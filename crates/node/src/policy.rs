//! Keeps this host's nftables policy table equal to the datastore's policy resources.
//!
//! One [`PolicySync::sync`] reads every policy-relevant resource (and the `default` and
//! `node.<name>` FelixConfiguration for failsafe ports and `DefaultEndpointToHostAction`),
//! converts it with `calico_policy::from_api`, compiles the program of this node's endpoints
//! and, when it differs from the last one applied, sends the kernel only the difference
//! (`PolicyDataplane::apply_changes`): the chains of the policies whose rules changed, the
//! endpoint chains whose policies changed, the sets whose members changed, in one atomic
//! nf_tables transaction. Any failure (datastore, a resource that does not convert or compile,
//! the kernel) leaves the previously applied table enforcing: a bad resource never opens
//! traffic by being skipped.
//!
//! Restart: [`PolicySync::new`] recognises the table a previous run left (its chains and sets)
//! and leaves it enforcing; the first sync, made from a complete listing of the datastore,
//! rewrites it in place in one transaction (no moment without the table).
//!
//! `DefaultEndpointToHostAction: Return` is rendered as Felix means it: after the workload's
//! egress policy the host's own input rules (other tables) decide. `Accept` is enforced the
//! same way: in nftables an `accept` ends only our base chain, so no table can accept for the
//! host's other tables. `interfacePrefix` sets which interfaces are workloads'; traffic on one
//! without an endpoint is dropped ("Unknown interface").
//!
//! Isolation: a policy or profile that cannot be enforced as written is handled on its own
//! (`calico_policy::isolate`: a rule skipped, a Deny enforced without the unenforceable match,
//! the policy's rules replaced by Deny, or the policy dropped when its selector is broken),
//! logged once per change naming the policy and the field, and kept in
//! [`PolicySync::issues`]; the other policies are enforced.

use calico_api as api;
use calico_datastore::{Datastore, KindRef, ResourceError};
use calico_nftables::{
    ApplyError, ApplyReport, EndpointToHost, NatOutgoing, NftError, PolicyDataplane,
};
use calico_policy::CompileError;
use calico_policy::felix::{self, EndpointToHostAction, FelixConfigError, FelixPolicySettings};
use calico_policy::from_api::{ApiResources, ConvertError};
use calico_policy::isolate::{IsolateError, PolicyIssue, compile_isolated};
use calico_policy::program::HostProgram;

/// Why a policy sync failed (the previously applied table stays in place).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The nftables socket could not be opened.
    #[error("policy dataplane: {0}")]
    Open(#[source] NftError),
    /// Listing a kind from the datastore failed.
    #[error("policy sync: listing {kind}: {source}")]
    Datastore {
        /// Kind being listed.
        kind: &'static str,
        /// What the datastore said.
        #[source]
        source: Box<ResourceError>,
    },
    /// A resource does not convert into the policy model.
    #[error("policy sync: {0}")]
    Convert(#[from] Box<ConvertError>),
    /// A FelixConfiguration policy field does not convert.
    #[error("policy sync: {0}")]
    Felix(#[from] FelixConfigError),
    /// The model does not compile (e.g. an invalid selector).
    #[error("policy sync: compiling for node {node}: {source}")]
    Compile {
        /// Node compiled for.
        node: String,
        /// The compiler's error (names the resource and field).
        #[source]
        source: Box<CompileError>,
    },
    /// The kernel refused the table, or it could not be rendered.
    #[error("policy sync: applying for node {node}: {source}")]
    Apply {
        /// Node applied for.
        node: String,
        /// The dataplane's error.
        #[source]
        source: Box<ApplyError>,
    },
}

/// Where a compiled program is enforced. [`PolicyDataplane`] in production; tests substitute
/// a recorder.
pub trait Enforcer {
    /// Makes the enforced program `program`, with `felix`'s workload-to-host action and
    /// workload interface prefixes, atomically.
    fn enforce(
        &mut self,
        program: &HostProgram,
        felix: &FelixPolicySettings,
    ) -> Result<ApplyReport, ApplyError>;

    /// Whether what was enforced is still in the kernel (someone may delete or replace the
    /// table behind the agent's back). `false` also makes the next `enforce` start afresh.
    fn still_enforced(&mut self) -> Result<bool, NftError> {
        Ok(true)
    }

    /// Sets what NAT outgoing does; enforced with the next `enforce` (same table, same
    /// transaction as the policy).
    fn set_nat_outgoing(&mut self, _nat: NatOutgoing) {}

    /// The next `enforce` recomputes everything it enforces from the program and compares
    /// all of it with what it enforced, rather than only what the program says changed.
    fn whole_next(&mut self) {}
}

impl Enforcer for PolicyDataplane {
    fn still_enforced(&mut self) -> Result<bool, NftError> {
        let ours = self
            .socket()
            .list_chains()?
            .iter()
            .any(|c| c.table == calico_nftables::TABLE_NAME);
        if !ours {
            // Forget what we believed the table held: the next apply replaces it whole.
            self.adopt_existing()?;
        }
        Ok(ours)
    }

    fn set_nat_outgoing(&mut self, nat: NatOutgoing) {
        PolicyDataplane::set_nat_outgoing(self, nat);
    }

    fn whole_next(&mut self) {
        PolicyDataplane::whole_next(self);
    }

    fn enforce(
        &mut self,
        program: &HostProgram,
        felix: &FelixPolicySettings,
    ) -> Result<ApplyReport, ApplyError> {
        self.set_endpoint_to_host(match felix.endpoint_to_host {
            EndpointToHostAction::Drop => EndpointToHost::Drop,
            // See the module comment: RETURN and ACCEPT are the same thing in nftables.
            EndpointToHostAction::Return | EndpointToHostAction::Accept => EndpointToHost::Return,
        });
        self.set_interface_prefixes(felix.interface_prefixes.clone());
        self.apply_changes(program)
    }
}

/// Owns the policy dataplane of this host and the last program it applied.
#[derive(Debug)]
pub struct PolicySync<E: Enforcer = PolicyDataplane> {
    enforcer: E,
    applied: Option<(HostProgram, FelixPolicySettings)>,
    /// Policies and profiles not enforced as written, from the last compilation.
    issues: Vec<PolicyIssue>,
    /// NAT outgoing wanted (`crate::nat`), and as last enforced.
    nat: NatOutgoing,
    nat_applied: Option<NatOutgoing>,
}

impl PolicySync<PolicyDataplane> {
    /// For the current thread's network namespace. A table left by a previous run is
    /// recognised and kept enforcing until the first sync rewrites it in place.
    pub fn new() -> Result<Self, PolicyError> {
        let mut dp = PolicyDataplane::new().map_err(PolicyError::Open)?;
        match dp.adopt_existing() {
            Ok((0, 0)) => {}
            Ok((chains, sets)) => tracing::info!(
                chains,
                sets,
                "found the policy table of a previous run; it stays in force until the first sync"
            ),
            // Not fatal: the first sync then replaces the table whole (still atomically).
            Err(e) => tracing::warn!(error = %e, "cannot read the existing policy table"),
        }
        Ok(Self::with_enforcer(dp))
    }
}

impl<E: Enforcer> PolicySync<E> {
    /// Around any enforcer. Nothing is considered applied yet, so the first sync always
    /// enforces (that is also the restart path).
    pub fn with_enforcer(enforcer: E) -> Self {
        PolicySync {
            enforcer,
            applied: None,
            issues: Vec::new(),
            nat: NatOutgoing::default(),
            nat_applied: None,
        }
    }

    /// Sets what NAT outgoing does (see `crate::nat`); the next [`PolicySync::sync`] enforces
    /// it when it differs from what is in force.
    pub fn set_nat_outgoing(&mut self, nat: NatOutgoing) {
        if nat != self.nat {
            tracing::info!(
                pools = nat.all_pools.len(),
                masquerading = nat.masq_pools.len(),
                to_address = ?nat.to_address,
                ports = ?nat.ports,
                "NAT outgoing changed"
            );
        }
        self.nat = nat;
    }

    /// Checks that the applied table is still in the kernel; when it is gone, the next
    /// [`PolicySync::sync`] enforces again (the agent calls this on every resync). Returns
    /// whether it was still there.
    pub fn verify(&mut self) -> Result<bool, PolicyError> {
        if self.applied.is_none() {
            return Ok(true);
        }
        let present = self.enforcer.still_enforced().map_err(PolicyError::Open)?;
        if !present {
            tracing::warn!("the policy table is no longer in the kernel; enforcing it again");
            self.applied = None;
        }
        Ok(present)
    }

    /// The level-triggered check of the periodic resync: whether the applied table is still
    /// in the kernel ([`PolicySync::verify`]), and the next enforcement renders and compares
    /// the whole table, not only what the program says changed.
    pub fn resync(&mut self) -> Result<bool, PolicyError> {
        self.enforcer.whole_next();
        self.verify()
    }

    /// The program last applied successfully.
    pub fn applied(&self) -> Option<&HostProgram> {
        self.applied.as_ref().map(|(p, _)| p)
    }

    /// Policies and profiles the last sync could not enforce as written (a skipped rule, a
    /// policy replaced by Deny or dropped), each naming the resource, the field and why.
    pub fn issues(&self) -> &[PolicyIssue] {
        &self.issues
    }

    /// Reads every policy-relevant resource, compiles for `node`, applies only if it changed.
    /// Returns whether anything was sent to the kernel.
    pub async fn sync(&mut self, ds: &Datastore, node: &str) -> Result<bool, PolicyError> {
        let resources = read_resources(ds).await?;
        let felix = read_felix_settings(ds, node).await?;
        self.sync_with(&resources, &felix, node)
    }

    /// [`PolicySync::sync_with`] with FelixConfiguration's defaults.
    pub fn sync_resources(
        &mut self,
        resources: &ApiResources,
        node: &str,
    ) -> Result<bool, PolicyError> {
        self.sync_with(resources, &FelixPolicySettings::default(), node)
    }

    /// The pure half of [`PolicySync::sync`]: compiles `resources` for `node` with `felix`'s
    /// failsafe ports and enforces the program when it differs from the last one applied.
    pub fn sync_with(
        &mut self,
        resources: &ApiResources,
        felix: &FelixPolicySettings,
        node: &str,
    ) -> Result<bool, PolicyError> {
        let (program, issues) = compile_isolated_for(resources, felix, node)?;
        self.enforce_compiled(&program, &issues, felix, node)
    }

    /// Enforces a program already compiled (the agent's model keeps it up to date change by
    /// change) when it differs from the last one applied; records its issues. Returns whether
    /// anything was sent to the kernel. Only the difference is sent
    /// (`PolicyDataplane::apply_changes`: the chains and sets that changed).
    pub fn enforce_compiled(
        &mut self,
        program: &HostProgram,
        issues: &[PolicyIssue],
        felix: &FelixPolicySettings,
        node: &str,
    ) -> Result<bool, PolicyError> {
        if issues != self.issues.as_slice() {
            for i in issues {
                tracing::warn!(
                    node,
                    policy = %i.owner,
                    rule = %i.field,
                    outcome = %i.outcome,
                    reason = %i.reason,
                    "policy not enforced as written"
                );
            }
            self.issues = issues.to_vec();
        }
        let t = std::time::Instant::now();
        if self
            .applied
            .as_ref()
            .is_some_and(|(p, f)| p == program && f == felix)
            && self.nat_applied.as_ref() == Some(&self.nat)
        {
            return Ok(false);
        }
        let compare = t.elapsed();
        self.enforcer.set_nat_outgoing(self.nat.clone());
        let report =
            self.enforcer
                .enforce(program, felix)
                .map_err(|source| PolicyError::Apply {
                    node: node.to_string(),
                    source: Box::new(source),
                })?;
        tracing::info!(
            node,
            endpoints = program.endpoints.len(),
            rule_lists = program.rule_lists.len(),
            sets = program.sets.len(),
            full = report.full,
            messages = report.messages,
            chains_touched = report.chains.len(),
            sets_touched = report.sets.len(),
            render_us = report.timings.render.as_micros() as u64,
            diff_us = report.timings.diff.as_micros() as u64,
            kernel_us = report.timings.kernel.as_micros() as u64,
            compare_us = compare.as_micros() as u64,
            "policy applied"
        );
        let t = std::time::Instant::now();
        self.applied = Some((program.clone(), felix.clone()));
        tracing::debug!(us = t.elapsed().as_micros() as u64, "applied program kept");
        self.nat_applied = Some(self.nat.clone());
        Ok(true)
    }
}

/// Converts and compiles: the program of `node`'s endpoints, with Calico's default failsafe
/// ports.
pub fn compile_for(resources: &ApiResources, node: &str) -> Result<HostProgram, PolicyError> {
    compile_with(resources, &FelixPolicySettings::default(), node)
}

/// Converts and compiles with FelixConfiguration's failsafe ports; a policy or profile that
/// cannot be enforced as written is isolated (see `calico_policy::isolate`), not an error.
pub fn compile_with(
    resources: &ApiResources,
    felix: &FelixPolicySettings,
    node: &str,
) -> Result<HostProgram, PolicyError> {
    Ok(compile_isolated_for(resources, felix, node)?.0)
}

/// [`compile_with`], and the policies and profiles not enforced as written.
pub fn compile_isolated_for(
    resources: &ApiResources,
    felix: &FelixPolicySettings,
    node: &str,
) -> Result<(HostProgram, Vec<PolicyIssue>), PolicyError> {
    compile_isolated(resources, &felix.failsafe, Some(node)).map_err(|e| isolate_error(e, node))
}

/// The error of a compilation for `node` that failed as a whole.
pub(crate) fn isolate_error(e: IsolateError, node: &str) -> PolicyError {
    match e {
        IsolateError::Convert(e) => PolicyError::Convert(Box::new(e)),
        IsolateError::Compile(source) => PolicyError::Compile {
            node: node.to_string(),
            source: Box::new(source),
        },
    }
}

/// The policy settings of FelixConfiguration `default` and `node.<node>`, read as stored
/// documents (an explicit empty failsafe list must stay apart from an absent one).
pub async fn read_felix_settings(
    ds: &Datastore,
    node: &str,
) -> Result<FelixPolicySettings, PolicyError> {
    let docs = ds
        .dynamic()
        .list(&KindRef::of::<api::FelixConfiguration>(), None)
        .await
        .map_err(|source| PolicyError::Datastore {
            kind: "FelixConfiguration",
            source: Box::new(source),
        })?
        .items;
    Ok(felix::settings_for(&docs, node)?)
}

/// Lists every kind the policy model uses.
pub async fn read_resources(ds: &Datastore) -> Result<ApiResources, PolicyError> {
    async fn all<T: api::CalicoResource>(
        ds: &Datastore,
        kind: &'static str,
    ) -> Result<Vec<T>, PolicyError> {
        Ok(ds
            .list::<T>(None)
            .await
            .map_err(|source| PolicyError::Datastore {
                kind,
                source: Box::new(source),
            })?
            .items)
    }
    Ok(ApiResources {
        tiers: all(ds, "Tier").await?,
        network_policies: all(ds, "NetworkPolicy").await?,
        global_network_policies: all(ds, "GlobalNetworkPolicy").await?,
        staged_network_policies: all(ds, "StagedNetworkPolicy").await?,
        staged_global_network_policies: all(ds, "StagedGlobalNetworkPolicy").await?,
        profiles: all(ds, "Profile").await?,
        workload_endpoints: all(ds, "WorkloadEndpoint").await?,
        host_endpoints: all(ds, "HostEndpoint").await?,
        network_sets: all(ds, "NetworkSet").await?,
        global_network_sets: all(ds, "GlobalNetworkSet").await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_policy::program::EndpointId;

    /// Records what it was asked to enforce; can be told to refuse.
    #[derive(Default)]
    struct Recorder {
        applied: Vec<HostProgram>,
        refuse: bool,
    }

    impl Enforcer for Recorder {
        fn enforce(
            &mut self,
            program: &HostProgram,
            _felix: &FelixPolicySettings,
        ) -> Result<ApplyReport, ApplyError> {
            if self.refuse {
                return Err(ApplyError::Kernel(NftError::Rejected {
                    what: "test".into(),
                    errno: 1,
                }));
            }
            self.applied.push(program.clone());
            Ok(ApplyReport::default())
        }
    }

    fn wep(name: &str, node: &str, iface: &str, ip: &str, net: &str) -> api::WorkloadEndpoint {
        let mut w = api::WorkloadEndpoint::new(
            name,
            api::WorkloadEndpointSpec {
                orchestrator: Some("libnetwork".into()),
                node: Some(node.into()),
                interface_name: Some(iface.into()),
                ip_networks: vec![ip.into()],
                profiles: vec![net.into()],
                ..Default::default()
            },
        );
        w.metadata.namespace = Some("libnetwork".into());
        w
    }

    fn docker_lab() -> ApiResources {
        ApiResources {
            profiles: vec![
                calico_docker::driver::network_profile("net1"),
                calico_docker::driver::network_profile("net2"),
            ],
            workload_endpoints: vec![
                wep("w1", "node1", "caliw1", "10.0.0.1/32", "net1"),
                wep("w2", "node1", "caliw2", "10.0.0.2/32", "net1"),
                wep("w3", "node2", "caliw3", "10.0.0.3/32", "net2"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn compiles_only_this_nodes_endpoints() {
        let p = compile_for(&docker_lab(), "node1").unwrap();
        let ifaces: Vec<&str> = p
            .endpoints
            .values()
            .filter_map(|e| e.interface.as_deref())
            .collect();
        assert_eq!(ifaces, vec!["caliw1", "caliw2"]);
        assert!(
            p.endpoints
                .keys()
                .all(|k| matches!(k, EndpointId::Workload { .. }))
        );
    }

    #[test]
    fn applies_only_changes() {
        let mut s = PolicySync::with_enforcer(Recorder::default());
        let mut r = docker_lab();
        assert!(s.sync_resources(&r, "node1").unwrap(), "first sync applies");
        assert!(
            !s.sync_resources(&r, "node1").unwrap(),
            "unchanged: no apply"
        );
        // A change on another node that does not touch any set used here: still unchanged.
        r.workload_endpoints[2].spec.interface_name = Some("caliother".into());
        assert!(!s.sync_resources(&r, "node1").unwrap());
        // A new member of net1 on node2 changes the has(net1) set: applied.
        r.workload_endpoints
            .push(wep("w4", "node2", "caliw4", "10.0.0.4/32", "net1"));
        assert!(s.sync_resources(&r, "node1").unwrap());
        assert_eq!(s.enforcer.applied.len(), 2);
        assert_eq!(s.applied(), s.enforcer.applied.last());
    }

    #[test]
    fn felix_settings_change_what_is_enforced() {
        let mut s = PolicySync::with_enforcer(Recorder::default());
        let r = docker_lab();
        let mut felix = FelixPolicySettings::default();
        assert!(s.sync_with(&r, &felix, "node1").unwrap());
        assert!(!s.sync_with(&r, &felix, "node1").unwrap());
        // Only the workload-to-host action changes: the program is the same, still enforced.
        felix.endpoint_to_host = EndpointToHostAction::Accept;
        assert!(s.sync_with(&r, &felix, "node1").unwrap());
        assert_eq!(s.enforcer.applied.len(), 2);
        // Failsafe ports end up in the model (host endpoints' chains use them).
        felix.failsafe.inbound.clear();
        let mut with_hep = r.clone();
        let mut hep = api::HostEndpoint::new(
            "h1",
            api::HostEndpointSpec {
                node: Some("node1".into()),
                interface_name: Some("eth0".into()),
                ..Default::default()
            },
        );
        hep.metadata.name = Some("h1".into());
        with_hep.host_endpoints.push(hep);
        let p = compile_with(&with_hep, &felix, "node1").unwrap();
        let h = p
            .endpoints
            .values()
            .find(|e| e.host.is_some())
            .expect("host endpoint");
        assert!(h.ingress.failsafe.is_empty());
        assert!(!h.egress.failsafe.is_empty(), "outbound defaults kept");
    }

    #[test]
    fn failures_keep_the_last_program() {
        let mut s = PolicySync::with_enforcer(Recorder::default());
        let good = docker_lab();
        s.sync_resources(&good, "node1").unwrap();
        let before = s.applied().cloned();

        let mut bad = good.clone();
        bad.profiles[0].spec.ingress[0]
            .source
            .as_mut()
            .unwrap()
            .selector = Some("has(".into());
        // A profile with a bad rule is isolated: replaced by Deny, reported, the rest applied.
        assert!(s.sync_resources(&bad, "node1").unwrap());
        assert_eq!(s.issues().len(), 1, "{:?}", s.issues());
        assert_eq!(s.issues()[0].owner, "Profile \"net1\"");
        assert_eq!(s.issues()[0].field, "spec.ingress[0].source.selector");
        s.sync_resources(&good, "node1").unwrap();
        assert!(s.issues().is_empty());

        let mut bad = good.clone();
        bad.workload_endpoints[0].spec.ip_networks = vec!["nope".into()];
        let e = s.sync_resources(&bad, "node1").unwrap_err();
        assert!(e.to_string().contains("spec.ipNetworks[0]"), "{e}");

        let mut changed = good.clone();
        changed.workload_endpoints.remove(1);
        s.enforcer.refuse = true;
        assert!(matches!(
            s.sync_resources(&changed, "node1").unwrap_err(),
            PolicyError::Apply { .. }
        ));
        assert_eq!(s.applied().cloned(), before);
        // Once the kernel accepts again, the refused program is retried (not remembered).
        s.enforcer.refuse = false;
        assert!(s.sync_resources(&changed, "node1").unwrap());
    }
}
