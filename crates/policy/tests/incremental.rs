//! The compiler's set index tells the dataplane exactly which sets an endpoint change touches.

mod common;

use calico_policy::Compiler;
use calico_policy::model::{Action, PolicyModel};
use calico_policy::sets::{Member, SetKey};
use calico_selector::Selector;
use common::*;

fn model() -> PolicyModel {
    let mut m = PolicyModel {
        workload_endpoints: vec![
            workload("prod", "a", "10.0.0.1", &[("app", "frontend")]),
            workload("prod", "b", "10.0.0.2", &[("app", "db"), ("env", "prod")]),
        ],
        ..Default::default()
    };
    m.policies.push(ingress_policy(
        "p",
        "all()",
        vec![
            from_selector(Action::Allow, "app == 'frontend'"),
            from_selector(Action::Allow, "env == 'prod'"),
            from_selector(Action::Allow, "app == 'db'"),
        ],
    ));
    m
}

fn set_id(sel: &str) -> calico_policy::sets::SetId {
    SetKey::Selector(Selector::parse(sel).unwrap()).id()
}

#[test]
fn a_label_change_reports_only_the_sets_whose_membership_changed() {
    let m = model();
    let mut compiler = Compiler::new(&m).unwrap();
    for ep in &m.workload_endpoints {
        compiler.workload_program(ep);
    }
    let frontend = set_id("app == 'frontend'");
    let db = set_id("app == 'db'");
    let prod = set_id("env == 'prod'");
    assert_eq!(compiler.index().members(&frontend).len(), 1);

    // a: frontend → db. env == 'prod' is untouched (a has no env label).
    let mut a = m.workload_endpoints[0].clone();
    a.labels.insert("app".into(), "db".into());
    let (id, src) = compiler.workload_source(&a);
    let changes = compiler.index_mut().upsert_source(id, src);
    let member = Member::Net(net("10.0.0.1/32"));
    let touched: Vec<_> = changes.iter().map(|c| c.id.clone()).collect();
    assert_eq!(touched.len(), 2, "{changes:?}");
    let f = changes.iter().find(|c| c.id == frontend).unwrap();
    assert!(f.removed.contains(&member) && f.added.is_empty());
    let d = changes.iter().find(|c| c.id == db).unwrap();
    assert!(d.added.contains(&member) && d.removed.is_empty());
    assert!(!touched.contains(&prod));

    // A label no selector reads: nothing to do.
    a.labels.insert("unrelated".into(), "x".into());
    let (id, src) = compiler.workload_source(&a);
    assert!(compiler.index_mut().upsert_source(id, src).is_empty());

    // Removing the endpoint removes its address from the sets it was in.
    let (id, _) = compiler.workload_source(&a);
    let changes = compiler.index_mut().remove_source(&id);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].id, db);
}

#[test]
fn a_new_address_on_an_endpoint_updates_its_sets() {
    let m = model();
    let mut compiler = Compiler::new(&m).unwrap();
    for ep in &m.workload_endpoints {
        compiler.workload_program(ep);
    }
    let mut b = m.workload_endpoints[1].clone();
    b.ips.push(net("fd00::2/128"));
    let (id, src) = compiler.workload_source(&b);
    let changes = compiler.index_mut().upsert_source(id, src);
    let ids: Vec<_> = changes.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&set_id("app == 'db'")) && ids.contains(&set_id("env == 'prod'")));
    for c in &changes {
        assert_eq!(
            c.added.iter().collect::<Vec<_>>(),
            [&Member::Net(net("fd00::2/128"))]
        );
    }
}

#[test]
fn a_policy_update_changes_only_that_policy_and_keeps_staged_twins_apart() {
    use calico_policy::model::{Direction, Port};
    use calico_policy::{Packet, Verdict, verdict};
    let m = model();
    let mut compiler = Compiler::new(&m).unwrap();
    let eps: Vec<_> = m.workload_endpoints.iter().collect();
    let b = wid("prod", "b");
    let from_a = Packet::tcp(ip("10.0.0.1"), 1, ip("10.0.0.2"), 80);
    let prog = compiler.host_program_for(&eps, &[]);
    assert_eq!(
        verdict(&prog.endpoints[&b], Direction::Ingress, &prog, &from_a),
        Verdict::Allow
    );

    // Replace "p" with a version that only allows TCP 443 from the frontend.
    let mut p = ingress_policy(
        "p",
        "all()",
        vec![{
            let mut r = tcp_to(Action::Allow, &[Port::number(443)]);
            r.source.selector = "app == 'frontend'".into();
            r
        }],
    );
    compiler.upsert_policy(&p).unwrap();
    // A staged twin with the same name does not replace it and is not enforced.
    p.staged = true;
    p.ingress = vec![rule(Action::Deny)];
    compiler.upsert_policy(&p).unwrap();
    let prog = compiler.host_program_for(&eps, &[]);
    assert_eq!(prog.rule_lists.len(), 2);
    assert_eq!(
        verdict(&prog.endpoints[&b], Direction::Ingress, &prog, &from_a),
        Verdict::Deny
    );
    let https = Packet::tcp(ip("10.0.0.1"), 1, ip("10.0.0.2"), 443);
    assert_eq!(
        verdict(&prog.endpoints[&b], Direction::Ingress, &prog, &https),
        Verdict::Allow
    );

    compiler.remove_policy("p", false);
    let prog = compiler.host_program_for(&eps, &[]);
    // Only the staged policy applies: no end-of-tier drop, no profile: default deny.
    assert_eq!(
        verdict(&prog.endpoints[&b], Direction::Ingress, &prog, &https),
        Verdict::Deny
    );
    assert_eq!(prog.rule_lists.len(), 1);
}
