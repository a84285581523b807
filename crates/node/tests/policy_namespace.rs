//! namespaceSelector end to end, with the real agent: a NetworkPolicy in namespace `shop`
//! allows TCP 8080 and ping to its database only from endpoints in namespaces labelled
//! `team=x`. Namespaces are what Calico's controllers write in etcd mode: a `kns.<ns>` Profile
//! per namespace whose `labelsToApply` carries the namespace's labels as `pcns.<key>`; every
//! endpoint of the namespace lists it. Real TCP connections and pings from workloads in three
//! namespaces are asserted allowed or denied. See `policy_support` for the topology.

mod policy_support;

use policy_support::{PolicyLab, eventually, namespace_profile, pings, tcp_connects};

#[test]
fn namespace_selector_admits_only_namespaces_with_the_label() {
    let mut lab = PolicyLab::new();
    lab.apply_yaml(&[
        namespace_profile("shop", &[("team", "shop")]),
        namespace_profile("team-x", &[("team", "x")]),
        namespace_profile("team-y", &[("team", "y")]),
        // A namespace whose name says x but whose label does not: the selector reads labels.
        namespace_profile("x", &[("team", "z")]),
    ]);
    lab.start_agent();
    let db = lab.add_workload("db", "shop", "db-0", "10.65.0.10", &[("app", "db")]);
    let from_x = lab.add_workload("cx", "team-x", "client", "10.65.0.11", &[]);
    let from_y = lab.add_workload("cy", "team-y", "client", "10.65.0.12", &[]);
    let from_shop = lab.add_workload("cs", "shop", "web-0", "10.65.0.13", &[("app", "web")]);
    let named_x = lab.add_workload("cn", "x", "client", "10.65.0.14", &[]);
    lab.serve_tcp(&db, 8080);
    lab.serve_tcp(&db, 9090);
    let clients = [&from_x, &from_y, &from_shop, &named_x];

    // Before the policy every namespace's profile allows all: the plumbing and the agent's
    // routes work, so any drop below is the policy's.
    for c in clients {
        eventually(
            &format!("{} pings db before the policy", c.name),
            &lab,
            || pings(c, &db),
        );
        assert!(tcp_connects(c, &db, 8080), "{} -> db:8080 before", c.name);
    }

    lab.apply_yaml(&[
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: db-from-team-x\n  \
         namespace: shop\nspec:\n  selector: app == 'db'\n  types: [Ingress]\n  ingress:\n  \
         - action: Allow\n    protocol: TCP\n    source:\n      namespaceSelector: team == 'x'\n    \
         destination:\n      ports: [8080]\n  - action: Allow\n    protocol: ICMP\n    source:\n      \
         namespaceSelector: team == 'x'\n"
            .to_string(),
    ]);
    eventually("the policy drops team-y's pings", &lab, || {
        !pings(&from_y, &db)
    });

    // team=x: allowed, but only what the rules name (9090 is no rule's port).
    assert!(pings(&from_x, &db), "team-x -> db ping must be allowed");
    assert!(
        tcp_connects(&from_x, &db, 8080),
        "team-x -> db:8080 must be allowed"
    );
    assert!(
        !tcp_connects(&from_x, &db, 9090),
        "team-x -> db:9090: no rule allows it, the end of tier drops it"
    );
    // Other namespaces, including the policy's own and one named like the label value.
    for (c, why) in [
        (&from_y, "team=y"),
        (&from_shop, "the policy's own namespace (team=shop)"),
        (&named_x, "namespace named x, labelled team=z"),
    ] {
        assert!(
            !pings(c, &db),
            "{} -> db ping: {why} must be denied",
            c.name
        );
        assert!(
            !tcp_connects(c, &db, 8080),
            "{} -> db:8080: {why} must be denied",
            c.name
        );
    }
    // Egress of the clients and traffic to endpoints the policy does not select is untouched.
    assert!(
        pings(&from_y, &from_shop),
        "team-y -> web (no policy selects it) allowed by its profile"
    );

    // Relabelling a namespace (its kns profile) moves it in or out of the selector.
    lab.apply_yaml(&[namespace_profile("team-y", &[("team", "x")])]);
    eventually("team-y, relabelled team=x, is admitted", &lab, || {
        tcp_connects(&from_y, &db, 8080)
    });
    lab.apply_yaml(&[namespace_profile("team-x", &[("team", "gone")])]);
    eventually("team-x, relabelled, is denied", &lab, || {
        !tcp_connects(&from_x, &db, 8080)
    });
    assert!(!pings(&from_x, &db), "team-x relabelled: ping denied too");
    assert!(
        pings(&from_y, &db),
        "team-y relabelled team=x: ping allowed"
    );
}
