//! The encoder against the kernel, read back with `nft -j list ruleset`, inside a throw-away
//! lab namespace only.

use calico_lab::{Host, Lab};
use calico_nftables::batch::matches::{ct_state_any, ifname_key, meta_eq};
use calico_nftables::batch::{CmpOp, KeyType, MetaKey, PayloadBase, ct};
use calico_nftables::render::interval_elems;
use calico_nftables::{
    Batch, ChainSpec, Expr, Family, Hook, NftError, NftSocket, SetElem, SetSpec, Verdict,
};
use serde_json::Value;

fn ruleset(ns: &Host) -> Value {
    let out = ns
        .exec_ok(&["nft", "-j", "list", "ruleset"])
        .expect("nft list");
    serde_json::from_str(&out).expect("nft json")
}

fn items<'a>(v: &'a Value, kind: &str) -> Vec<&'a Value> {
    v["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|i| i.get(kind))
        .collect()
}

#[test]
fn batch_reads_back_as_nft_sees_it() {
    let lab = Lab::new().expect("lab");
    let ns = lab.add_namespace("enc").expect("namespace");
    let mut sock = NftSocket::open_in(&ns.netns_path()).expect("socket");

    let t = "enc-test";
    let mut b = Batch::new(Family::Inet);
    b.add_table(t);
    b.add_set(
        t,
        &SetSpec {
            name: "nets4".into(),
            key: KeyType::Ipv4Addr,
            interval: true,
            verdict_map: false,
        },
    );
    b.add_elements(
        t,
        "nets4",
        &interval_elems(
            [
                "10.0.0.0/8".parse().unwrap(),
                "192.168.1.7/32".parse().unwrap(),
            ]
            .into_iter(),
        ),
    );
    b.add_set(
        t,
        &SetSpec {
            name: "ports".into(),
            key: KeyType::InetService,
            interval: false,
            verdict_map: false,
        },
    );
    b.add_elements(
        t,
        "ports",
        &[
            SetElem::key(80u16.to_be_bytes().to_vec()),
            SetElem::key(443u16.to_be_bytes().to_vec()),
        ],
    );
    b.add_chain(t, &ChainSpec::regular("sub"));
    b.add_set(
        t,
        &SetSpec {
            name: "dispatch".into(),
            key: KeyType::IfName,
            interval: false,
            verdict_map: true,
        },
    );
    b.add_elements(
        t,
        "dispatch",
        &[SetElem {
            verdict: Some(Verdict::Goto("sub".into())),
            ..SetElem::key(ifname_key("cali1234"))
        }],
    );
    b.add_chain(t, &ChainSpec::base("fwd", Hook::Forward, 0, Verdict::Drop));
    let mut r = ct_state_any(ct::ESTABLISHED | ct::RELATED);
    r.extend([Expr::Counter, Expr::Verdict(Verdict::Accept)]);
    b.add_rule(t, "fwd", &r, Some("est"));
    b.add_rule(
        t,
        "fwd",
        &[
            Expr::Meta(MetaKey::IifName),
            Expr::VerdictMap("dispatch".into()),
        ],
        None,
    );
    let mut r = meta_eq(MetaKey::NfProto, vec![2]);
    r.extend(meta_eq(MetaKey::L4Proto, vec![6]));
    r.extend([
        Expr::Payload {
            base: PayloadBase::Network,
            offset: 12,
            len: 4,
        },
        Expr::Lookup {
            set: "nets4".into(),
            inverted: false,
        },
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
        },
        Expr::Lookup {
            set: "ports".into(),
            inverted: true,
        },
        Expr::Payload {
            base: PayloadBase::Network,
            offset: 16,
            len: 4,
        },
        Expr::Bitwise {
            mask: vec![255, 255, 255, 0],
            xor: vec![0; 4],
        },
        Expr::Cmp(CmpOp::Eq, vec![10, 1, 2, 0]),
        Expr::Log("hello: ".into()),
        Expr::Counter,
        Expr::Verdict(Verdict::Jump("sub".into())),
    ]);
    b.add_rule(t, "fwd", &r, Some("complex"));
    b.add_rule(t, "sub", &[Expr::Verdict(Verdict::Return)], None);
    sock.send(&b).expect("batch accepted");

    let rs = ruleset(&ns);
    let tables = items(&rs, "table");
    assert_eq!(tables.len(), 1, "{rs}");
    assert_eq!(tables[0]["family"], "inet");
    assert_eq!(tables[0]["name"], t);

    let chains = items(&rs, "chain");
    let fwd = chains
        .iter()
        .find(|c| c["name"] == "fwd")
        .expect("fwd chain");
    assert_eq!(fwd["hook"], "forward");
    assert_eq!(fwd["prio"], 0);
    assert_eq!(fwd["policy"], "drop");
    assert_eq!(fwd["type"], "filter");
    assert!(
        chains
            .iter()
            .any(|c| c["name"] == "sub" && c.get("hook").is_none())
    );

    let sets = items(&rs, "set");
    let nets = sets.iter().find(|s| s["name"] == "nets4").expect("nets4");
    assert_eq!(nets["type"], "ipv4_addr");
    assert_eq!(nets["flags"], serde_json::json!(["interval"]));
    let elems = nets["elem"].to_string();
    assert!(elems.contains("\"addr\":\"10.0.0.0\",\"len\":8"), "{elems}");
    assert!(elems.contains("192.168.1.7"), "{elems}");
    let ports = sets.iter().find(|s| s["name"] == "ports").expect("ports");
    assert_eq!(ports["type"], "inet_service");
    assert_eq!(ports["elem"], serde_json::json!([80, 443]));
    let map = items(&rs, "map");
    let dispatch = map.iter().find(|m| m["name"] == "dispatch").expect("vmap");
    assert_eq!(dispatch["type"], "ifname");
    assert_eq!(dispatch["map"], "verdict");
    let e = dispatch["elem"].to_string();
    assert!(
        e.contains("cali1234") && e.contains("\"goto\":{\"target\":\"sub\"}"),
        "{e}"
    );

    let rules = items(&rs, "rule");
    let in_fwd: Vec<_> = rules.iter().filter(|r| r["chain"] == "fwd").collect();
    assert_eq!(in_fwd.len(), 3, "{rs}");
    let est = in_fwd[0]["expr"].to_string();
    assert!(est.contains("\"ct\":{\"key\":\"state\"}"), "{est}");
    assert!(
        est.contains("established") && est.contains("related"),
        "{est}"
    );
    assert!(est.contains("\"accept\":null"), "{est}");
    assert_eq!(in_fwd[0]["comment"], "est");
    let vmap = in_fwd[1]["expr"].to_string();
    assert!(
        vmap.contains("\"vmap\"") && vmap.contains("iifname") && vmap.contains("@dispatch"),
        "{vmap}"
    );
    let c = in_fwd[2]["expr"].to_string();
    for needle in [
        // nft folds `meta nfproto ipv4` and `meta l4proto tcp` into the payload's protocol.
        "{\"field\":\"saddr\",\"protocol\":\"ip\"}",
        "{\"field\":\"dport\",\"protocol\":\"tcp\"}",
        "\"right\":\"@nets4\"",
        "\"op\":\"!=\"",
        "\"right\":\"@ports\"",
        "\"field\":\"daddr\"",
        "\"prefix\":{\"addr\":\"10.1.2.0\",\"len\":24}",
        "\"log\":{\"prefix\":\"hello: \"}",
        "\"counter\"",
        "\"jump\":{\"target\":\"sub\"}",
    ] {
        assert!(c.contains(needle), "missing {needle} in {c}");
    }
    assert_eq!(in_fwd[2]["comment"], "complex");

    // Removal: the table is gone.
    let mut b = Batch::new(Family::Inet);
    b.delete_table(t);
    sock.send(&b).expect("delete");
    assert!(items(&ruleset(&ns), "table").is_empty());
}

#[test]
fn refused_batch_names_the_object_and_changes_nothing() {
    let lab = Lab::new().expect("lab");
    let ns = lab.add_namespace("enc-err").expect("namespace");
    let mut sock = NftSocket::open_in(&ns.netns_path()).expect("socket");
    let t = "err-test";
    let mut b = Batch::new(Family::Inet);
    b.add_table(t);
    b.add_chain(t, &ChainSpec::regular("a"));
    b.add_rule(
        t,
        "a",
        &[Expr::Verdict(Verdict::Jump("missing".into()))],
        Some("bad jump"),
    );
    let err = sock.send(&b).expect_err("jump to a missing chain");
    match &err {
        NftError::Rejected { what, errno } => {
            assert!(
                what.contains("chain err-test a") && what.contains("bad jump"),
                "{what}"
            );
            assert_eq!(*errno, libc_enoent(), "{err}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("rolled back"), "{err}");
    // All or nothing: the table of the same batch was not created.
    assert!(items(&ruleset(&ns), "table").is_empty());

    // Deleting a table that is not there is an error naming it.
    let mut b = Batch::new(Family::Inet);
    b.delete_table("nope");
    let err = sock.send(&b).expect_err("missing table");
    assert!(err.to_string().contains("table nope"), "{err}");
    // And the socket remains usable.
    let mut b = Batch::new(Family::Inet);
    b.add_table(t);
    sock.send(&b).expect("table");
    assert_eq!(items(&ruleset(&ns), "table").len(), 1);
}

fn libc_enoent() -> i32 {
    2
}
