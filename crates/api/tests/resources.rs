//! Decoding, defaults and validation of Calico documents, per kind.

use calico_api::*;
use serde_json::{Value, json};

fn yaml(s: &str) -> Value {
    serde_yaml_ng::from_str(s).expect("test YAML parses")
}

fn decode_ok(s: &str) -> AnyResource {
    from_value(yaml(s)).unwrap_or_else(|e| panic!("decode failed: {e}"))
}

fn paths(r: &AnyResource) -> Vec<String> {
    match r.validate() {
        Ok(()) => vec![],
        Err(e) => e.errors.into_iter().map(|f| f.path).collect(),
    }
}

fn pool(name: &str, cidr: &str) -> IPPool {
    match decode_ok(&format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: \"{cidr}\"}}"
    )) {
        AnyResource::IPPool(p) => p,
        other => panic!("decoded {other:?}"),
    }
}

// ------------------------------------------------------------------ registry

#[test]
fn kinds_are_found_by_kind_plural_and_short_names_in_any_case() {
    for (name, kind) in [
        ("IPPool", "IPPool"),
        ("ippools", "IPPool"),
        ("IPPOOL", "IPPool"),
        ("gnp", "GlobalNetworkPolicy"),
        ("bgpp", "BGPPeer"),
        ("BGPConfig", "BGPConfiguration"),
        ("hep", "HostEndpoint"),
        ("wep", "WorkloadEndpoint"),
        ("networkpolicies", "NetworkPolicy"),
        ("kcc", "KubeControllersConfiguration"),
    ] {
        assert_eq!(lookup_kind(name).map(|k| k.kind), Some(kind), "{name}");
    }
    assert!(lookup_kind("pods").is_none());
    assert_eq!(KINDS.len(), 25);
}

#[test]
fn unknown_kind_and_foreign_api_version_are_rejected() {
    let e = from_value(
        json!({"apiVersion": "projectcalico.org/v3", "kind": "Pod", "metadata": {"name": "a"}}),
    )
    .unwrap_err();
    assert_eq!(
        e,
        DecodeError::UnknownKind {
            found: "Pod".into()
        }
    );
    let e = from_value(
        json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool", "metadata": {}}),
    )
    .unwrap_err();
    assert_eq!(e.path(), "apiVersion");
    let e = from_value(json!({"kind": "IPPool"})).unwrap_err();
    assert_eq!(
        e,
        DecodeError::MissingField {
            field: "apiVersion"
        }
    );
}

#[test]
fn unknown_fields_are_rejected_with_their_full_path() {
    let cases = [
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/16, natOutgoin: true}",
            "spec.natOutgoin",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a, lables: {}}\nspec: {cidr: 10.0.0.0/16}",
            "metadata.lables",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspce: {}",
            "spce",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\nspec:\n  ingress:\n  - action: Allow\n    source: {selectr: all()}",
            "spec.ingress[0].source.selectr",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a}\nspec: {}\nstatus: {bogus: 1}",
            "status.bogus",
        ),
    ];
    for (doc, path) in cases {
        let e = from_value(yaml(doc)).unwrap_err();
        assert_eq!(e, DecodeError::UnknownField { path: path.into() }, "{doc}");
    }
}

#[test]
fn wrong_value_types_name_the_field() {
    let e = from_value(yaml(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/16, ipipMode: Sometimes}",
    ))
    .unwrap_err();
    assert_eq!(e.path(), "spec.ipipMode");
    let e = from_value(yaml(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: [80, \"90:80\"]}",
    ))
    .unwrap_err();
    assert_eq!(e.path(), "spec.ingress[0].destination.ports[1]");
    assert!(e.to_string().contains("minimum above its maximum"), "{e}");
}

#[test]
fn a_missing_spec_reads_as_empty_and_lists_decode_item_by_item() {
    let r = decode_ok("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a}");
    assert_eq!(r.kind(), "Tier");
    let list = from_value_list(yaml(
        "apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: IPPool\n  metadata: {name: a}\n  spec: {cidr: 10.0.0.0/16}\n- apiVersion: projectcalico.org/v3\n  kind: IPPool\n  metadata: {name: b}\n  spec: {cidr: 10.1.0.0/16, bad: 1}",
    ))
    .unwrap_err();
    assert_eq!(list.0, 1);
    assert_eq!(list.1.path(), "items[1].spec.bad");
}

#[test]
fn documents_round_trip_unchanged() {
    let docs = [
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  blockSize: 26\n  cidr: 192.168.0.0/16\n  ipipMode: Never\n  natOutgoing: true\n  nodeSelector: all()\n  vxlanMode: Never\n",
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rr\nspec:\n  asNumber: 64513\n  peerIP: 192.168.33.12\n",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: allow-dns\nspec:\n  egress:\n  - action: Allow\n    destination:\n      ports:\n      - 53\n      - 1000:2000\n      - dns\n    protocol: UDP\n  selector: all()\n  types:\n  - Egress\n",
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node1\nspec:\n  bgp:\n    asNumber: 64512\n    ipv4Address: 192.168.33.11/24\n",
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: node1-libnetwork-libnetwork-abc\n  namespace: libnetwork\nspec:\n  endpoint: abc\n  interfaceName: calicce21fc3677\n  ipNetworks:\n  - 192.168.166.128/32\n  mac: ee:ee:ee:ee:ee:ee\n  node: node1\n  orchestrator: libnetwork\n",
    ];
    for doc in docs {
        let r = decode_ok(doc);
        let back = serde_yaml_ng::to_string(&r.to_value().unwrap()).unwrap();
        assert_eq!(yaml(&back), yaml(doc), "round trip of\n{doc}\ngave\n{back}");
    }
}

#[test]
fn dotted_as_numbers_are_read_from_strings() {
    let r = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.1, asNumber: \"1.10\"}",
    );
    let AnyResource::BGPPeer(p) = r else { panic!() };
    assert_eq!(p.spec.as_number, Some(AsNumber(65546)));
}

// ------------------------------------------------------------------ defaults

#[test]
fn ippool_defaults_follow_calico() {
    let mut p = pool("p4", "10.0.0.0/16");
    Defaults::default(&mut p);
    assert_eq!(p.spec.block_size, Some(26));
    assert_eq!(p.spec.ipip_mode, Some(IPIPMode::Never));
    assert_eq!(p.spec.vxlan_mode, Some(VXLANMode::Never));
    assert_eq!(p.spec.nat_outgoing, None, "natOutgoing stays unset (false)");
    assert_eq!(p.spec.node_selector.as_deref(), Some("all()"));
    assert_eq!(
        p.spec.allowed_uses,
        vec![IPPoolAllowedUse::Workload, IPPoolAllowedUse::Tunnel]
    );
    assert_eq!(p.spec.assignment_mode, Some(AssignmentMode::Automatic));
    let once = p.clone();
    Defaults::default(&mut p);
    assert_eq!(p, once, "defaults are idempotent");

    let mut p6 = pool("p6", "fd00::/64");
    Defaults::default(&mut p6);
    assert_eq!(p6.spec.block_size, Some(122));
}

#[test]
fn policy_defaults_put_it_in_the_default_tier_with_types_from_its_rules() {
    let mut r = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a, namespace: ns}\nspec:\n  egress: [{action: Allow}]",
    );
    r.set_defaults();
    let AnyResource::NetworkPolicy(np) = r else {
        panic!()
    };
    assert_eq!(np.spec.tier.as_deref(), Some("default"));
    assert_eq!(np.spec.types, vec![PolicyType::Egress]);
    assert_eq!(
        default_policy_types(false, false),
        vec![PolicyType::Ingress]
    );
    assert_eq!(
        default_policy_types(true, true),
        vec![PolicyType::Ingress, PolicyType::Egress]
    );
}

#[test]
fn tier_and_bgp_configuration_defaults() {
    let mut t = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}",
    );
    t.set_defaults();
    let AnyResource::Tier(t) = t else { panic!() };
    assert_eq!(t.spec.default_action, Some(TierDefaultAction::Deny));

    let mut b = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}",
    );
    b.set_defaults();
    let AnyResource::BGPConfiguration(b) = b else {
        panic!()
    };
    assert_eq!(b.spec.node_to_node_mesh_enabled, Some(true));
    assert_eq!(b.spec.as_number, Some(AsNumber(64512)));
    assert_eq!(b.spec.log_severity_screen.as_deref(), Some("Info"));
}

// ------------------------------------------------------------------ validation

#[test]
fn ippool_block_size_and_cidr_rules() {
    let mut p = pool("pool-b", "10.0.0.0/16");
    p.spec.block_size = Some(33);
    let e = p.validate().unwrap_err();
    assert_eq!(e.errors[0].path, "spec.blockSize");
    assert_eq!(e.errors[0].reason, "33 is not in 20..=32 for an IPv4 pool");
    assert_eq!(
        e.to_string(),
        "IPPool \"pool-b\": spec.blockSize: 33 is not in 20..=32 for an IPv4 pool"
    );

    let mut p6 = pool("v6", "fd00::/64");
    p6.spec.block_size = Some(115);
    assert_eq!(paths(&p6.clone().into()), vec!["spec.blockSize"]);
    p6.spec.block_size = Some(116);
    p6.validate().unwrap();

    assert_eq!(
        paths(&pool("x", "10.0.0.1/16").into()),
        vec!["spec.cidr"],
        "host bits"
    );
    assert_eq!(
        paths(&pool("x", "10.0.0.0/28").into()),
        vec!["spec.cidr"],
        "smaller than a block"
    );
    assert_eq!(
        paths(&pool("x", "169.254.0.0/16").into()),
        vec!["spec.cidr"],
        "link local"
    );
    assert_eq!(paths(&pool("x", "not-a-cidr").into()), vec!["spec.cidr"]);
    assert_eq!(
        paths(&pool("Bad_Name", "10.0.0.0/16").into()),
        vec!["metadata.name"]
    );
}

#[test]
fn ippool_encapsulation_and_selector_rules() {
    let mut p = pool("p", "fd00::/64");
    p.spec.ipip_mode = Some(IPIPMode::Always);
    assert_eq!(paths(&p.into()), vec!["spec.ipipMode"]);
    let mut p = pool("p", "10.0.0.0/16");
    p.spec.ipip_mode = Some(IPIPMode::Always);
    p.spec.vxlan_mode = Some(VXLANMode::CrossSubnet);
    p.spec.node_selector = Some("role ==".into());
    assert_eq!(
        paths(&p.into()),
        vec!["spec.vxlanMode", "spec.nodeSelector"]
    );
}

#[test]
fn overlapping_pools_are_reported_with_both_names() {
    let pools = [
        pool("a", "10.0.0.0/16"),
        pool("b", "10.0.128.0/17"),
        pool("c", "10.1.0.0/16"),
    ];
    let errs = validate_pools_disjoint(&pools).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "IPPool \"b\": spec.cidr");
    assert!(errs[0].reason.contains("IPPool \"a\""));
    validate_pools_disjoint(&[pool("a", "10.0.0.0/16"), pool("c", "10.1.0.0/16")]).unwrap();
}

fn policy(rules: &str) -> AnyResource {
    decode_ok(&format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\nspec:\n  selector: all()\n  ingress:\n{rules}"
    ))
}

#[test]
fn rule_consistency_follows_calico() {
    assert!(
        paths(&policy(
            "  - action: Allow\n    protocol: TCP\n    destination: {ports: [80, http]}"
        ))
        .is_empty()
    );
    assert_eq!(
        paths(&policy("  - action: Allow\n    destination: {ports: [80]}")),
        vec!["spec.ingress[0].destination.ports"]
    );
    assert_eq!(
        paths(&policy(
            "  - action: Allow\n    protocol: ICMP\n    destination: {ports: [80]}"
        )),
        vec!["spec.ingress[0].destination.ports"]
    );
    assert_eq!(
        paths(&policy(
            "  - action: Allow\n    protocol: TCP\n    icmp: {type: 8}"
        )),
        vec!["spec.ingress[0].icmp"]
    );
    assert_eq!(
        paths(&policy(
            "  - action: Allow\n    protocol: ICMP\n    icmp: {type: 255, code: 256}"
        )),
        vec!["spec.ingress[0].icmp.type", "spec.ingress[0].icmp.code"]
    );
    assert!(
        paths(&policy(
            "  - action: Allow\n    protocol: ICMP\n    icmp: {type: 254, code: 255}"
        ))
        .is_empty()
    );
    assert_eq!(
        paths(&policy(
            "  - action: Allow\n    protocol: ICMP\n    icmp: {code: 0}"
        )),
        vec!["spec.ingress[0].icmp.code"]
    );
    assert_eq!(
        paths(&policy(
            "  - action: Allow\n    protocol: ICMPv6\n    ipVersion: 4"
        )),
        vec!["spec.ingress[0].protocol"]
    );
    assert_eq!(
        paths(&policy(
            "  - action: Deny\n    source: {nets: [10.0.0.0/8, 300.1.1.1/32], selector: \"a ==\"}"
        )),
        vec![
            "spec.ingress[0].source.selector",
            "spec.ingress[0].source.nets[1]"
        ]
    );
}

#[test]
fn bgp_peer_and_configuration_rules() {
    let peer = |spec: &str| {
        decode_ok(&format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: p}}\nspec: {spec}"
        ))
    };
    assert!(paths(&peer("{peerIP: 192.168.33.12, asNumber: 64512}")).is_empty());
    assert!(paths(&peer("{peerIP: \"[fd00::1]:179\", asNumber: 64512}")).is_empty());
    assert_eq!(
        paths(&peer("{peerIP: 192.168.33.300, asNumber: 1}")),
        vec!["spec.peerIP"]
    );
    assert_eq!(
        paths(&peer("{peerSelector: all(), asNumber: 64512}")),
        vec!["spec.asNumber"]
    );
    assert_eq!(
        paths(&peer("{localWorkloadSelector: app == 'x'}")),
        // Calico's rule, then calico-rs's refusal of workload peering.
        vec!["spec.asNumber", "spec.localWorkloadSelector"]
    );
    assert_eq!(
        paths(&peer("{peerSelector: all(), reachableBy: 10.0.0.1}")),
        vec!["spec.reachableBy"]
    );
    assert_eq!(
        paths(&peer(
            "{peerIP: 10.0.0.1, keepOriginalNextHop: true, nextHopMode: Self}"
        )),
        vec!["spec.keepOriginalNextHop"]
    );
    assert_eq!(
        paths(&peer(
            "{peerIP: 10.0.0.1, asNumber: 1, node: a, nodeSelector: all()}"
        )),
        vec!["spec.nodeSelector"]
    );
    let conf = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n  listenPort: 0\n  communities: [{name: c, value: \"65000:70000\"}]\n  serviceClusterIPs: [{cidr: 10.96.0.0/12}]",
    );
    assert_eq!(
        paths(&conf),
        vec![
            "spec.listenPort",
            "spec.communities",
            "spec.communities[0].value"
        ]
    );
}

#[test]
fn endpoints_and_sets_rules() {
    let hep = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\nspec: {node: n}",
    );
    assert_eq!(paths(&hep), vec!["spec.interfaceName"]);
    let ns = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: s, namespace: Bad_NS}\nspec: {nets: [10.0.0.0/8, x]}",
    );
    assert_eq!(paths(&ns), vec!["metadata.namespace", "spec.nets[1]"]);
    let gns = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: s, namespace: x}\nspec: {nets: [1.2.3.4]}",
    );
    assert_eq!(paths(&gns), vec!["metadata.namespace"]);
}

/// One valid and one invalid document per kind, with the field paths the invalid one must
/// report. Each valid document also survives defaulting and a JSON round trip unchanged.
#[test]
fn every_kind_accepts_a_valid_document_and_names_the_fields_of_an_invalid_one() {
    let h = "apiVersion: projectcalico.org/v3\nkind:";
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "IPPool",
            "metadata: {name: p}\nspec: {cidr: 10.0.0.0/16}",
            &[],
        ),
        (
            "IPPool",
            "metadata: {name: p}\nspec: {cidr: 10.0.0.0/16, blockSize: 19}",
            &["spec.blockSize"],
        ),
        (
            "IPReservation",
            "metadata: {name: r}\nspec: {reservedCIDRs: [10.0.0.0/24, 10.1.0.1]}",
            &[],
        ),
        (
            "IPReservation",
            "metadata: {name: r}\nspec: {reservedCIDRs: [10.0.0.0/33]}",
            &["spec.reservedCIDRs[0]"],
        ),
        (
            "IPAMConfiguration",
            "metadata: {name: default}\nspec: {strictAffinity: false, autoAllocateBlocks: true, maxBlocksPerHost: 4}",
            &[],
        ),
        (
            "IPAMConfiguration",
            "metadata: {name: default}\nspec: {strictAffinity: false, autoAllocateBlocks: true, maxBlocksPerHost: -1}",
            &["spec.maxBlocksPerHost"],
        ),
        (
            "IPAMConfiguration",
            "metadata: {name: default}\nspec: {strictAffinity: false, autoAllocateBlocks: true, ipCooldownSeconds: 0, kubeVirtVMAddressPersistence: Disabled}",
            &[],
        ),
        (
            "IPAMConfiguration",
            "metadata: {name: other}\nspec: {strictAffinity: false, autoAllocateBlocks: true, ipCooldownSeconds: 30, kubeVirtVMAddressPersistence: Enabled}",
            &[
                "metadata.name",
                "spec.ipCooldownSeconds",
                "spec.kubeVirtVMAddressPersistence",
            ],
        ),
        (
            "BGPConfiguration",
            "metadata: {name: default}\nspec: {asNumber: 64512, nodeToNodeMeshEnabled: true}",
            &[],
        ),
        (
            "BGPConfiguration",
            "metadata: {name: default}\nspec: {nodeToNodeMeshEnabled: false, nodeMeshMaxRestartTime: 120s}",
            &["spec.nodeMeshMaxRestartTime"],
        ),
        (
            "BGPPeer",
            "metadata: {name: p}\nspec: {peerIP: 192.168.33.12, asNumber: 64512}",
            &[],
        ),
        (
            "BGPPeer",
            "metadata: {name: p}\nspec: {peerIP: 192.168.33.12, peerSelector: all()}",
            &["spec.peerSelector"],
        ),
        (
            "BGPFilter",
            "metadata: {name: f}\nspec:\n  exportV4: [{action: Accept, cidr: 10.0.0.0/8, matchOperator: In}]",
            &[],
        ),
        (
            "BGPFilter",
            "metadata: {name: f}\nspec:\n  exportV4: [{action: Reject, cidr: fd00::/8, operations: [{addCommunity: {value: '1:1'}}]}]",
            &[
                "spec.exportV4[0].matchOperator",
                "spec.exportV4[0].cidr",
                "spec.exportV4[0].operations",
            ],
        ),
        (
            "Node",
            "metadata: {name: node1}\nspec: {bgp: {ipv4Address: 192.168.33.11/24}}",
            &[],
        ),
        (
            "Node",
            "metadata: {name: node1}\nspec: {bgp: {ipv4Address: 'fd00::1/64'}}",
            &["spec.bgp.ipv4Address"],
        ),
        (
            "WorkloadEndpoint",
            "metadata: {name: w, namespace: ns}\nspec: {node: n, ipNetworks: [10.0.0.1/32], mac: 'ee:ee:ee:ee:ee:ee'}",
            &[],
        ),
        (
            "WorkloadEndpoint",
            "metadata: {name: w, namespace: ns}\nspec: {ipNetworks: [10.0.0.0/24], mac: 'ee:ee'}",
            &["spec.ipNetworks[0]", "spec.mac"],
        ),
        (
            "HostEndpoint",
            "metadata: {name: h}\nspec: {node: n, interfaceName: eth0}",
            &[],
        ),
        (
            "HostEndpoint",
            "metadata: {name: h}\nspec: {interfaceName: eth0, expectedIPs: [x]}",
            &["spec.node", "spec.expectedIPs[0]"],
        ),
        (
            "NetworkPolicy",
            "metadata: {name: p, namespace: ns}\nspec: {selector: app == 'x', ingress: [{action: Allow}]}",
            &[],
        ),
        (
            "NetworkPolicy",
            "metadata: {name: p, namespace: ns}\nspec: {selector: global()}",
            &["spec.selector"],
        ),
        (
            "GlobalNetworkPolicy",
            "metadata: {name: p}\nspec: {selector: all(), preDNAT: true, applyOnForward: true, ingress: [{action: Deny}]}",
            &[],
        ),
        (
            "GlobalNetworkPolicy",
            "metadata: {name: p}\nspec: {preDNAT: true, types: [Egress]}",
            &["spec.types", "spec.applyOnForward"],
        ),
        (
            "StagedNetworkPolicy",
            "metadata: {name: p, namespace: ns}\nspec: {stagedAction: Set, selector: all()}",
            &[],
        ),
        (
            "StagedNetworkPolicy",
            "metadata: {name: p, namespace: ns}\nspec: {egress: [{action: Allow, destination: {services: {namespace: x}}}]}",
            &["spec.egress[0].destination.services.name"],
        ),
        (
            "StagedGlobalNetworkPolicy",
            "metadata: {name: p}\nspec: {stagedAction: Delete}",
            &[],
        ),
        (
            "StagedGlobalNetworkPolicy",
            "metadata: {name: p}\nspec: {doNotTrack: true}",
            &["spec.applyOnForward"],
        ),
        (
            "StagedKubernetesNetworkPolicy",
            "metadata: {name: k, namespace: ns}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]}]}",
            &[],
        ),
        (
            "StagedKubernetesNetworkPolicy",
            "metadata: {name: k, namespace: ns}\nspec: {ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]}",
            &["spec.ingress[0].from[0].ipBlock.except[0]"],
        ),
        (
            "Tier",
            "metadata: {name: security}\nspec: {order: 100}",
            &[],
        ),
        (
            "Tier",
            "metadata: {name: default}\nspec: {order: 5, defaultAction: Pass}",
            &["spec.order", "spec.defaultAction"],
        ),
        (
            "NetworkSet",
            "metadata: {name: s, namespace: ns}\nspec: {nets: [10.0.0.0/8]}",
            &[],
        ),
        (
            "NetworkSet",
            "metadata: {name: s}\nspec: {nets: [10.0.0.0/99]}",
            &["spec.nets[0]"],
        ),
        (
            "GlobalNetworkSet",
            "metadata: {name: s, labels: {a: b}}\nspec: {nets: ['fd00::/8']}",
            &[],
        ),
        (
            "GlobalNetworkSet",
            "metadata: {name: S}\nspec: {}",
            &["metadata.name"],
        ),
        (
            "Profile",
            "metadata: {name: kns.default}\nspec: {labelsToApply: {a: b}, ingress: [{action: Allow}]}",
            &[],
        ),
        (
            "Profile",
            "metadata: {name: p}\nspec: {egress: [{action: Allow, protocol: UDP, icmp: {type: 3}}]}",
            &["spec.egress[0].icmp"],
        ),
        (
            "FelixConfiguration",
            "metadata: {name: default}\nspec: {logSeverityScreen: Info, routeTableRange: {min: 1, max: 250}}",
            &[],
        ),
        (
            "FelixConfiguration",
            "metadata: {name: default}\nspec: {nodeSelector: all(), natOutgoingAddress: 'fd00::1'}",
            &["spec.nodeSelector", "spec.natOutgoingAddress"],
        ),
        (
            "KubeControllersConfiguration",
            "metadata: {name: default}\nspec: {controllers: {node: {syncLabels: Enabled}}}",
            &[],
        ),
        (
            "KubeControllersConfiguration",
            "metadata: {name: default, namespace: x}\nspec: {controllers: {}}",
            &["metadata.namespace"],
        ),
        (
            "ClusterInformation",
            "metadata: {name: default}\nspec: {clusterGUID: abc, datastoreReady: true}",
            &[],
        ),
        (
            "ClusterInformation",
            "metadata: {}\nspec: {}",
            &["metadata.name"],
        ),
        (
            "CalicoNodeStatus",
            "metadata: {name: n}\nspec: {node: node1, classes: [Agent, BGP], updatePeriodSeconds: 10}",
            &[],
        ),
        (
            "CalicoNodeStatus",
            "metadata: {name: n_1}\nspec: {}",
            &["metadata.name"],
        ),
        (
            "IPAMBlock",
            "metadata: {name: 10-0-0-0-26}\nspec: {cidr: 10.0.0.0/26, allocations: [0, null], unallocated: [1], attributes: [], strictAffinity: false}",
            &[],
        ),
        (
            "IPAMBlock",
            "metadata: {name: b}\nspec: {cidr: 10.0.0.1/26, allocations: [], unallocated: [], attributes: [], strictAffinity: false}",
            &["spec.cidr"],
        ),
        (
            "IPAMHandle",
            "metadata: {name: h}\nspec: {handleID: h, block: {'10.0.0.0/26': 1}}",
            &[],
        ),
        (
            "IPAMHandle",
            "metadata: {name: 'h h'}\nspec: {handleID: h, block: {}}",
            &["metadata.name"],
        ),
        (
            "BlockAffinity",
            "metadata: {name: a}\nspec: {cidr: 10.0.0.0/26, node: n, state: confirmed, deleted: false}",
            &[],
        ),
        (
            "BlockAffinity",
            "metadata: {name: a}\nspec: {cidr: 10.0.0.0, node: n, state: pending, deleted: false}",
            &["spec.cidr"],
        ),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (kind, body, expected) in cases {
        let doc = format!("{h} {kind}\n{body}");
        let mut r = from_value(yaml(&doc)).unwrap_or_else(|e| panic!("{kind}: {e}\n{doc}"));
        assert_eq!(r.kind(), *kind);
        covered.insert(*kind);
        let got = paths(&r);
        assert_eq!(got, *expected, "{doc}");
        if expected.is_empty() {
            let value = r.to_value().unwrap();
            assert_eq!(
                from_value(value.clone()).unwrap(),
                r,
                "round trip of {kind}"
            );
            r.set_defaults();
            assert!(
                r.validate().is_ok(),
                "{kind} invalid after defaults: {:?}",
                r.validate()
            );
        }
    }
    let all: std::collections::BTreeSet<&str> = KINDS.iter().map(|k| k.kind).collect();
    assert_eq!(covered, all, "every kind has cases");
}

#[test]
fn yaml_numbers_and_booleans_become_strings_where_calico_expects_strings() {
    let r = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: w\n  namespace: default\n  labels: {version: 1, canary: true}\nspec:\n  containerID: 1337\n  node: node1\n  ports:\n  - {name: some-port, port: 1234, protocol: TCP}",
    );
    let AnyResource::WorkloadEndpoint(w) = r else {
        panic!()
    };
    assert_eq!(w.spec.container_id.as_deref(), Some("1337"));
    let labels = w.metadata.labels.unwrap();
    assert_eq!(labels["version"], "1");
    assert_eq!(labels["canary"], "true");
    assert_eq!(w.spec.ports[0].port, 1234, "integers stay integers");
}

/// Documents shaped like the samples of Calico's reference pages for the kinds without a
/// CRD (our own values) decode, default and validate cleanly.
#[test]
fn documents_shaped_like_calicos_samples_are_accepted() {
    let samples = [
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: host-a\nspec:\n  bgp:\n    asNumber: 65001\n    ipv4Address: 10.20.0.5/24\n    ipv6Address: fd12:3456::5/64\n    ipv4IPIPTunnelAddr: 10.64.1.1\n",
        "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n  name: team-web\nspec:\n  labelsToApply:\n    team: web\n",
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: host--a-k8s-web--7d9f-eth0\n  namespace: shop\n  labels:\n    role: web\n    projectcalico.org/namespace: shop\n    projectcalico.org/orchestrator: k8s\nspec:\n  node: host-a\n  orchestrator: k8s\n  containerID: 4242424242\n  pod: web-7d9f\n  endpoint: eth0\n  interfaceName: cali1a2b3c4d5e6\n  mac: 0a:58:0a:40:01:07\n  ipNetworks:\n  - 10.64.1.7/32\n  profiles:\n  - kns.shop\n  ports:\n  - name: web\n    port: 8080\n    protocol: TCP\n  - name: metrics\n    port: 9090\n    protocol: UDP\n",
    ];
    for doc in samples {
        let mut r = decode_ok(doc);
        r.set_defaults();
        r.validate().unwrap_or_else(|e| panic!("{e}\n{doc}"));
    }
}

/// Rules taken from Calico's validator beyond the basic ones above.
#[test]
fn calico_validator_rules_on_ports_protocols_nets_and_names() {
    let gnp = |name: &str, spec: &str| {
        decode_ok(&format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {spec}"
        ))
    };
    // Named ports resolve against the endpoint, so they need no protocol; numbers do.
    assert!(
        paths(&gnp(
            "p",
            "{ingress: [{action: Allow, destination: {ports: [http]}}]}"
        ))
        .is_empty()
    );
    assert_eq!(
        paths(&gnp(
            "p",
            "{ingress: [{action: Allow, destination: {ports: [http, 80]}}]}"
        )),
        vec!["spec.ingress[0].destination.ports"]
    );
    assert_eq!(
        paths(&gnp(
            "p",
            "{ingress: [{action: Allow, protocol: UDPLite, destination: {ports: [80]}}]}"
        )),
        vec!["spec.ingress[0].destination.ports"],
        "Calico allows ports only with TCP, UDP and SCTP"
    );
    assert_eq!(
        paths(&gnp(
            "p",
            "{ingress: [{action: Allow, protocol: TCP, destination: {ports: [0, Bad_Name]}}]}"
        )),
        vec![
            "spec.ingress[0].destination.ports[0]",
            "spec.ingress[0].destination.ports[1]"
        ]
    );
    assert_eq!(
        paths(&gnp("p", "{ingress: [{action: Allow, protocol: 0}]}")),
        vec!["spec.ingress[0].protocol"]
    );
    let e = from_value(yaml(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{action: Allow, protocol: tcp}]}",
    ))
    .unwrap_err();
    assert_eq!(
        e.path(),
        "spec.ingress[0].protocol",
        "protocol names are case-sensitive"
    );
    // Nets: one address family per rule, matching ipVersion; no negated catch-all.
    assert_eq!(
        paths(&gnp(
            "p",
            "{ingress: [{action: Allow, source: {nets: [10.0.0.0/8]}, destination: {nets: ['fd00::/8']}}]}"
        )),
        vec!["spec.ingress[0].destination.nets"]
    );
    assert_eq!(
        paths(&gnp(
            "p",
            "{ingress: [{action: Allow, ipVersion: 6, source: {nets: [10.0.0.0/8]}}]}"
        )),
        vec!["spec.ingress[0].source.nets"]
    );
    assert_eq!(
        paths(&gnp(
            "p",
            "{ingress: [{action: Allow, source: {notNets: [0.0.0.0/0]}}]}"
        )),
        vec!["spec.ingress[0].source.notNets[0]"]
    );
    assert_eq!(
        paths(&gnp(
            "p",
            "{ingress: [{action: Allow, source: {nets: [10.0.0.1]}}]}"
        )),
        vec!["spec.ingress[0].source.nets[0]"],
        "rule nets are CIDRs"
    );
    // HTTP matches: Allow ingress rules only, with sane paths and no duplicate methods.
    assert_eq!(
        paths(&gnp(
            "p",
            "{egress: [{action: Allow, http: {methods: [GET, GET], paths: [{exact: x}, {exact: /a, prefix: /b}]}}]}"
        )),
        vec![
            "spec.egress[0].http.methods",
            "spec.egress[0].http.paths[0]",
            "spec.egress[0].http.paths[1]",
            "spec.egress[0].http"
        ]
    );
    // Global policies must name the namespace of a service.
    assert_eq!(
        paths(&gnp(
            "p",
            "{egress: [{action: Allow, destination: {services: {name: s}}}]}"
        )),
        vec!["spec.egress[0].destination.services.namespace"]
    );
    assert_eq!(
        paths(&gnp(
            "p",
            "{ingress: [{action: Allow, source: {namespaceSelector: global() && a == 'b'}}]}"
        )),
        vec!["spec.ingress[0].source.namespaceSelector"]
    );
    assert_eq!(
        paths(&gnp("p", "{types: [Ingress, Ingress]}")),
        vec!["spec.types"]
    );
    // Policy names: a DNS label, optionally two joined by one dot.
    assert!(paths(&gnp("security.allow-dns", "{}")).is_empty());
    assert_eq!(paths(&gnp("a.b.c", "{}")), vec!["metadata.name"]);
    let np = |name: &str| {
        decode_ok(&format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{}}"
        ))
    };
    assert!(paths(&np("knp.default.allow.all")).is_empty());
    assert_eq!(paths(&np("a.b.c")), vec!["metadata.name"]);
    let tier =
        decode_ok("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a.b}\nspec: {}");
    assert_eq!(paths(&tier), vec!["metadata.name"]);
}

#[test]
fn calico_validator_rules_on_endpoints_nodes_labels_and_config() {
    let wep = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: w, namespace: ns}\nspec:\n  ipNetworks: [10.0.0.1/32]\n  ipNATs: [{internalIP: 10.0.0.2, externalIP: 172.16.0.1}]\n  ports: [{name: '', port: 80, protocol: TCP}]\n  containerID: 'abc_def'",
    );
    assert_eq!(
        paths(&wep),
        vec![
            "spec.ipNATs[0].internalIP",
            "spec.containerID",
            "spec.ports[0].name"
        ]
    );
    let node = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n}\nspec: {bgp: {}}",
    );
    assert_eq!(paths(&node), vec!["spec.bgp"]);
    let peer = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.1, asNumber: 1, reachableBy: 'fd00::1'}",
    );
    assert_eq!(paths(&peer), vec!["spec.reachableBy"]);
    let set = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata:\n  name: s\n  namespace: ns\n  labels: {projectcalico.org/namespace: ns, 'bad key!': x, ok: 'bad value!'}\nspec: {}",
    );
    assert_eq!(
        paths(&set),
        vec![
            "metadata.labels[bad key!]",
            "metadata.labels[ok]",
            "metadata.labels[projectcalico.org/namespace]"
        ]
    );
    let felix = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {kubeNodePortRanges: [30000:32767, http], openstackRegion: Region_1, policySyncPathPrefix: /var/run/nodeagent}",
    );
    assert_eq!(
        paths(&felix),
        vec![
            "spec.kubeNodePortRanges[1]",
            "spec.openstackRegion",
            "spec.policySyncPathPrefix"
        ]
    );
    let aff = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: BlockAffinity\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/26, node: n, state: confirmed, deleted: true}",
    );
    assert_eq!(paths(&aff), vec!["spec.deleted"]);
}

#[test]
fn field_names_match_case_insensitively_and_absent_required_flags_read_as_false() {
    let r = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: KubeControllersConfiguration\nmetadata: {name: default}\nspec:\n  controllers:\n    loadbalancer: {assignIPs: AllServices}",
    );
    let AnyResource::KubeControllersConfiguration(k) = r else {
        panic!()
    };
    assert!(k.spec.controllers.load_balancer.is_some());
    let r = decode_ok(
        "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: {strictAffinity: true}",
    );
    let AnyResource::IPAMConfiguration(c) = r else {
        panic!()
    };
    assert!(c.spec.strict_affinity);
    assert!(!c.spec.auto_allocate_blocks);
    // A required string stays required.
    let e = from_value(yaml(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {}",
    ))
    .unwrap_err();
    assert_eq!(e.path(), "spec.cidr");
    assert_eq!(e.to_string(), "spec.cidr: required field is missing");
}

#[test]
fn typed_decoding_checks_kind_and_api_version() {
    let ok = json!({"apiVersion": API_VERSION, "kind": "IPPool", "metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16"}});
    assert!(decode::<IPPool>(ok.clone()).is_ok());
    assert_eq!(
        decode::<BGPPeer>(ok).unwrap_err(),
        DecodeError::WrongKind {
            expected: "BGPPeer",
            found: "IPPool".into()
        }
    );
    let v1 = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool", "metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16"}});
    assert_eq!(decode::<IPPool>(v1).unwrap_err().path(), "apiVersion");
}

#[test]
fn pool_helpers_and_cidr_normalisation() {
    let mut p = pool("p6", "FD00:0:0::/64");
    Defaults::default(&mut p);
    assert_eq!(p.spec.cidr, "fd00::/64");
    assert_eq!(p.spec.effective_block_size(), Some(122));
    assert!(!p.spec.nat_outgoing());
    assert!(p.spec.is_enabled());
    assert!(p.spec.allows(IPPoolAllowedUse::Tunnel));
    assert!(!p.spec.allows(IPPoolAllowedUse::LoadBalancer));
    let unmasked = {
        let mut p = pool("x", "10.0.0.1/16");
        Defaults::default(&mut p);
        p
    };
    assert_eq!(
        unmasked.spec.cidr, "10.0.0.1/16",
        "left for validation to reject"
    );
    let r: AnyResource = pool("named", "10.0.0.0/16").into();
    assert_eq!(r.name(), "named");
    assert_eq!(r.kind_info().plural, "ippools");
    assert_eq!(r.namespace(), None);
}

#[test]
fn bgp_configuration_effective_values() {
    let spec = BGPConfigurationSpec::default();
    assert_eq!(spec.effective_as_number(), AsNumber(64512));
    assert!(spec.node_to_node_mesh());
    assert_eq!(spec.effective_listen_port(), 179);
    let spec = BGPConfigurationSpec {
        as_number: Some(AsNumber(65001)),
        node_to_node_mesh_enabled: Some(false),
        listen_port: Some(1179),
        ..Default::default()
    };
    assert_eq!(spec.effective_as_number(), AsNumber(65001));
    assert!(!spec.node_to_node_mesh());
    assert_eq!(spec.effective_listen_port(), 1179);
}
