//! THE list of Calico kinds, written once. Everything else that enumerates kinds (the
//! [`crate::CalicoResource`] impls, the registry and [`crate::KINDS`], the CRD files, the
//! schemas) is generated from it: `every_kind!(m)` calls the macro `m` with the whole table.
//!
//! Per kind: its Rust type, `kind`, plural (datastore keys, CRD names), whether namespaced,
//! whether Calico publishes a CRD for it, its singular and short names on the command line,
//! and whether objects carry a `status`. In alphabetical order (the order [`crate::KINDS`]
//! and `calicoctl` list them in).

macro_rules! every_kind {
    ($m:ident) => {
        $m! {
            BGPConfiguration { kind: "BGPConfiguration", plural: "bgpconfigurations", namespaced: false, crd: true, singular: "bgpconfiguration", status: false, short: ["bgpconfig", "bgpconfigs"] }
            BGPFilter { kind: "BGPFilter", plural: "bgpfilters", namespaced: false, crd: true, singular: "bgpfilter", status: false, short: ["bgpf", "bgpfs", "bf", "bfs"] }
            BGPPeer { kind: "BGPPeer", plural: "bgppeers", namespaced: false, crd: true, singular: "bgppeer", status: false, short: ["bgpp", "bgpps", "bp", "bps"] }
            BlockAffinity { kind: "BlockAffinity", plural: "blockaffinities", namespaced: false, crd: true, singular: "blockaffinity", status: false, short: ["affinity", "affinities"] }
            CalicoNodeStatus { kind: "CalicoNodeStatus", plural: "caliconodestatuses", namespaced: false, crd: true, singular: "caliconodestatus", status: true, short: ["nodestatus", "nodestatuses", "cns"] }
            ClusterInformation { kind: "ClusterInformation", plural: "clusterinformations", namespaced: false, crd: true, singular: "clusterinformation", status: false, short: ["clusterinfo", "clusterinfos"] }
            FelixConfiguration { kind: "FelixConfiguration", plural: "felixconfigurations", namespaced: false, crd: true, singular: "felixconfiguration", status: false, short: ["felixconfig", "felixconfigs"] }
            GlobalNetworkPolicy { kind: "GlobalNetworkPolicy", plural: "globalnetworkpolicies", namespaced: false, crd: true, singular: "globalnetworkpolicy", status: false, short: ["gnp", "gnps", "cgnp"] }
            GlobalNetworkSet { kind: "GlobalNetworkSet", plural: "globalnetworksets", namespaced: false, crd: true, singular: "globalnetworkset", status: false, short: ["gnetsets", "gns"] }
            HostEndpoint { kind: "HostEndpoint", plural: "hostendpoints", namespaced: false, crd: true, singular: "hostendpoint", status: false, short: ["hep", "heps"] }
            IPAMBlock { kind: "IPAMBlock", plural: "ipamblocks", namespaced: false, crd: true, singular: "ipamblock", status: false, short: [] }
            IPAMConfiguration { kind: "IPAMConfiguration", plural: "ipamconfigurations", namespaced: false, crd: true, singular: "ipamconfiguration", status: false, short: ["ipamconfig", "ipamconfigs"] }
            IPAMHandle { kind: "IPAMHandle", plural: "ipamhandles", namespaced: false, crd: true, singular: "ipamhandle", status: false, short: [] }
            IPPool { kind: "IPPool", plural: "ippools", namespaced: false, crd: true, singular: "ippool", status: true, short: ["ipp", "ipps", "pool", "pools"] }
            IPReservation { kind: "IPReservation", plural: "ipreservations", namespaced: false, crd: true, singular: "ipreservation", status: false, short: ["reservation", "reservations"] }
            KubeControllersConfiguration { kind: "KubeControllersConfiguration", plural: "kubecontrollersconfigurations", namespaced: false, crd: true, singular: "kubecontrollersconfiguration", status: true, short: ["kubecontrollersconfig", "kubecontrollersconfigs", "kcc", "kccs"] }
            NetworkPolicy { kind: "NetworkPolicy", plural: "networkpolicies", namespaced: true, crd: true, singular: "networkpolicy", status: false, short: ["policy", "policies", "np", "pol", "pols", "cnp", "caliconetworkpolicy"] }
            NetworkSet { kind: "NetworkSet", plural: "networksets", namespaced: true, crd: true, singular: "networkset", status: false, short: ["netsets"] }
            Node { kind: "Node", plural: "nodes", namespaced: false, crd: false, singular: "node", status: true, short: ["no", "nos"] }
            Profile { kind: "Profile", plural: "profiles", namespaced: false, crd: false, singular: "profile", status: false, short: ["pro", "pros"] }
            StagedGlobalNetworkPolicy { kind: "StagedGlobalNetworkPolicy", plural: "stagedglobalnetworkpolicies", namespaced: false, crd: true, singular: "stagedglobalnetworkpolicy", status: false, short: ["sgnp", "sgnps"] }
            StagedKubernetesNetworkPolicy { kind: "StagedKubernetesNetworkPolicy", plural: "stagedkubernetesnetworkpolicies", namespaced: true, crd: true, singular: "stagedkubernetesnetworkpolicy", status: false, short: ["stagedkubernetespolicy", "stagedkubernetespolicies", "sknp", "skpol", "skpols"] }
            StagedNetworkPolicy { kind: "StagedNetworkPolicy", plural: "stagednetworkpolicies", namespaced: true, crd: true, singular: "stagednetworkpolicy", status: false, short: ["stagedpolicy", "stagedpolicies", "snp", "scnp", "spol", "spols"] }
            Tier { kind: "Tier", plural: "tiers", namespaced: false, crd: true, singular: "tier", status: true, short: [] }
            WorkloadEndpoint { kind: "WorkloadEndpoint", plural: "workloadendpoints", namespaced: true, crd: false, singular: "workloadendpoint", status: false, short: ["wep", "weps"] }
        }
    };
}
