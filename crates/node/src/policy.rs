//! Keeps this host's nftables policy table equal to the datastore's policy resources.
//!
//! One [`PolicySync::sync`] reads every policy-relevant resource, converts it with
//! `calico_policy::from_api`, compiles the program of this node's workload endpoints and, when
//! it differs from the last one applied, replaces the table `inet calico-rs` in one atomic
//! nf_tables transaction. Any failure (datastore, a resource that does not convert or compile,
//! the kernel) leaves the previously applied table enforcing: a bad resource never opens
//! traffic by being skipped.
//!
//! Not done here: watching (the agent calls `sync` on its own cadence), incremental set
//! updates (`PolicyDataplane::update_sets`; every change is a full, atomic apply), host
//! endpoints and FelixConfiguration (failsafe ports, `DefaultEndpointToHostAction`: Felix's
//! default `Drop` applies).

use calico_api as api;
use calico_datastore::{Datastore, ResourceError};
use calico_nftables::{ApplyError, NftError, PolicyDataplane};
use calico_policy::from_api::{self, ApiResources, ConvertError};
use calico_policy::program::HostProgram;
use calico_policy::{CompileError, compile};

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
    /// Replaces whatever is enforced with `program`, atomically.
    fn enforce(&mut self, program: &HostProgram) -> Result<(), ApplyError>;
}

impl Enforcer for PolicyDataplane {
    fn enforce(&mut self, program: &HostProgram) -> Result<(), ApplyError> {
        self.apply(program).map(|_| ())
    }
}

/// Owns the policy dataplane of this host and the last program it applied.
#[derive(Debug)]
pub struct PolicySync<E: Enforcer = PolicyDataplane> {
    enforcer: E,
    applied: Option<HostProgram>,
}

impl PolicySync<PolicyDataplane> {
    /// For the current thread's network namespace.
    pub fn new() -> Result<Self, PolicyError> {
        Ok(Self::with_enforcer(
            PolicyDataplane::new().map_err(PolicyError::Open)?,
        ))
    }
}

impl<E: Enforcer> PolicySync<E> {
    /// Around any enforcer. Nothing is considered applied yet, so the first sync always
    /// applies (that is also the restart path: it replaces a table left by a previous run).
    pub fn with_enforcer(enforcer: E) -> Self {
        PolicySync {
            enforcer,
            applied: None,
        }
    }

    /// The program last applied successfully.
    pub fn applied(&self) -> Option<&HostProgram> {
        self.applied.as_ref()
    }

    /// Reads every policy-relevant resource, compiles for `node`, applies only if it changed.
    /// Returns whether the table was replaced.
    pub async fn sync(&mut self, ds: &Datastore, node: &str) -> Result<bool, PolicyError> {
        let resources = read_resources(ds).await?;
        self.sync_resources(&resources, node)
    }

    /// The pure half of [`PolicySync::sync`]: compiles `resources` for `node` and enforces the
    /// program when it differs from the last one applied.
    pub fn sync_resources(
        &mut self,
        resources: &ApiResources,
        node: &str,
    ) -> Result<bool, PolicyError> {
        let program = compile_for(resources, node)?;
        if self.applied.as_ref() == Some(&program) {
            return Ok(false);
        }
        self.enforcer
            .enforce(&program)
            .map_err(|source| PolicyError::Apply {
                node: node.to_string(),
                source: Box::new(source),
            })?;
        tracing::info!(
            node,
            endpoints = program.endpoints.len(),
            rule_lists = program.rule_lists.len(),
            sets = program.sets.len(),
            "policy applied"
        );
        self.applied = Some(program);
        Ok(true)
    }
}

/// Converts and compiles: the program of `node`'s workload endpoints.
pub fn compile_for(resources: &ApiResources, node: &str) -> Result<HostProgram, PolicyError> {
    let model = from_api::model_from_resources(resources).map_err(Box::new)?;
    compile(&model, Some(node)).map_err(|source| PolicyError::Compile {
        node: node.to_string(),
        source: Box::new(source),
    })
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
        fn enforce(&mut self, program: &HostProgram) -> Result<(), ApplyError> {
            if self.refuse {
                return Err(ApplyError::Kernel(NftError::Rejected {
                    what: "test".into(),
                    errno: 1,
                }));
            }
            self.applied.push(program.clone());
            Ok(())
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
        let e = s.sync_resources(&bad, "node1").unwrap_err();
        assert!(matches!(e, PolicyError::Compile { .. }), "{e}");
        assert!(e.to_string().contains("node1"), "{e}");

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
