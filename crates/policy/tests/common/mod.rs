//! Small builders shared by the policy tests.
#![allow(dead_code)]

use std::net::IpAddr;

use calico_policy::model::{
    Action, HostEndpoint, LabelMap, NamedPort, Policy, PolicyModel, Port, Profile, Protocol, Rule,
    WorkloadEndpoint,
};
use calico_policy::program::{EndpointId, HostProgram};
use calico_policy::verdict::{Outcome, evaluate};
use calico_policy::{Packet, Verdict, compile, verdict};
use ipnet::IpNet;

pub fn labels(pairs: &[(&str, &str)]) -> LabelMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

pub fn net(s: &str) -> IpNet {
    s.parse().expect("test network")
}

pub fn workload(ns: &str, name: &str, addr: &str, l: &[(&str, &str)]) -> WorkloadEndpoint {
    WorkloadEndpoint {
        name: name.to_string(),
        node: "node1".to_string(),
        namespace: ns.to_string(),
        interface_name: format!("cali{name}"),
        labels: labels(l),
        orchestrator: Some("k8s".to_string()),
        ips: vec![IpNet::from(ip(addr))],
        ..Default::default()
    }
}

pub fn with_port(
    mut ep: WorkloadEndpoint,
    name: &str,
    protocol: Protocol,
    port: u16,
) -> WorkloadEndpoint {
    ep.ports.push(NamedPort {
        name: name.to_string(),
        protocol,
        port,
    });
    ep
}

pub fn host_endpoint(name: &str, iface: &str, addr: &str, l: &[(&str, &str)]) -> HostEndpoint {
    HostEndpoint {
        name: name.to_string(),
        node: "node1".to_string(),
        interface_name: Some(iface.to_string()),
        expected_ips: vec![ip(addr)],
        labels: labels(l),
        ..Default::default()
    }
}

pub fn allow_all_profile(name: &str) -> Profile {
    Profile {
        name: name.to_string(),
        labels_to_apply: LabelMap::new(),
        ingress: vec![Rule::new(Action::Allow)],
        egress: vec![Rule::new(Action::Allow)],
    }
}

pub fn rule(action: Action) -> Rule {
    Rule::new(action)
}

pub fn tcp_to(action: Action, ports: &[Port]) -> Rule {
    let mut r = Rule::new(action);
    r.protocol = Some("TCP".to_string());
    r.destination.ports = ports.to_vec();
    r
}

pub fn from_selector(action: Action, sel: &str) -> Rule {
    let mut r = Rule::new(action);
    r.source.selector = sel.to_string();
    r
}

pub fn ingress_policy(name: &str, selector: &str, rules: Vec<Rule>) -> Policy {
    let mut p = Policy::new(name, selector);
    p.ingress = rules;
    p
}

pub fn wid(ns: &str, name: &str) -> EndpointId {
    EndpointId::Workload {
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

pub fn hid(name: &str) -> EndpointId {
    EndpointId::Host {
        name: name.to_string(),
    }
}

/// Compiles the whole model (every endpoint local).
pub fn build(model: &PolicyModel) -> HostProgram {
    compile(model, None).unwrap_or_else(|e| panic!("compile: {e}"))
}

/// Verdict for a packet arriving at (`Ingress`) an endpoint.
pub fn ingress(prog: &HostProgram, to: &EndpointId, p: &Packet) -> Verdict {
    let ep = prog.endpoints.get(to).expect("endpoint compiled");
    verdict(ep, calico_policy::model::Direction::Ingress, prog, p)
}

/// Verdict for a packet leaving an endpoint.
pub fn egress(prog: &HostProgram, from: &EndpointId, p: &Packet) -> Verdict {
    let ep = prog.endpoints.get(from).expect("endpoint compiled");
    verdict(ep, calico_policy::model::Direction::Egress, prog, p)
}

pub fn outcome(prog: &HostProgram, chain: &calico_policy::program::Chain, p: &Packet) -> Outcome {
    evaluate(chain, prog, p).outcome
}
