//! The small version of `bench_scale.rs`, in CI: the synthetic cluster at 10 nodes (3 local
//! workloads with real veths, 5 endpoints per remote node, 5 policies of 3 rules, 5 network
//! sets, the node-to-node mesh off), the real `calico-node` as node-0, and two model-only
//! agents (`calico-node` with `CALICO_MODEL_ONLY=true`, separate processes). Asserts, per
//! change (a one-rule policy change, a remote endpoint's label change, a new block of this
//! node), that it is enforced in node-0's kernel (the rule's comment in the policy chain, the
//! address moved between the label sets, the block's blackhole route), that etcd served no
//! range request for it (its own mvcc and gRPC counters), and that both model-only agents took
//! it (their `calico_model_revision`), see every node (`felix_cluster_num_hosts`) and are
//! ready (`/readiness` 200).
//!
//! Needs root and `target/debug/calico-node` (`cargo build -p calico-rs --bin calico-node`).

mod scale_support;
use scale_support::lab::*;
use scale_support::*;

use std::time::Duration;

use calico_datastore::EtcdClient;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn real_agent_and_model_only_agents_enforce_every_change_without_reads() {
    let shape = Shape {
        nodes: 10,
        local_weps: 3,
        remote_weps_per_node: 5,
        policies: 5,
        rules_per_policy: 3,
        sets: 5,
        vxlan: false,
    };
    let mut lab = ScaleLab::new(shape);
    let (_, written) = lab.write_cluster();
    lab.add_local_workloads();
    lab.start_agent("bird");
    lab.start_follower(0);
    lab.start_follower(1);
    let want = format!("endpoints={}", shape.local_weps);
    let synced = poll(WAIT, Duration::from_millis(100), || {
        lab.agent_log()
            .lines()
            .any(|l| l.contains("policy applied") && l.contains(&want))
            .then_some(())
    });
    assert!(synced.is_some(), "no policy applied:\n{}", lab.agent_log());
    lab.wait_followers(written, WAIT);
    // Let start-up settle (status reports, the first node status).
    std::thread::sleep(Duration::from_secs(2));

    let check = |what: &str, docs: Vec<(String, Value)>, done: &dyn Fn(&ScaleLab) -> bool| {
        let before = lab.ranges();
        let (rev, _) = lab.put(docs);
        let enforced = poll(WAIT, Duration::from_millis(20), || done(&lab).then_some(()));
        assert!(
            enforced.is_some(),
            "{what}: not enforced:\n{}",
            lab.agent_log()
        );
        lab.wait_followers(rev, WAIT);
        std::thread::sleep(Duration::from_millis(500));
        let after = lab.ranges();
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (0, 0),
            "{what}: range requests (mvcc, gRPC) by the agent and two model-only agents"
        );
        eprintln!("{what}: enforced, taken by both model-only agents, 0 range requests");
    };

    // A one-rule change of pol1 (selects app1: local endpoint 1).
    let chain = lab.policy_chain(1);
    assert!(!lab.chain_has_rule(&chain, 3), "pol1 has 3 rules");
    check("one-rule policy change", vec![policy_with(1, 0, 4)], &|l| {
        l.chain_has_rule(&chain, 3)
    });

    // A remote endpoint moves from app2 to app3: its address changes sets.
    let (n, j) = (2, 0);
    let from = app_of(n, j);
    let (set_from, set_to) = (
        selector_set(&format!("app == 'app{from}'")),
        selector_set(&format!("app == 'app{}'", from + 1)),
    );
    let ip = wep_ip(n, j);
    assert!(lab.set_holds(&set_from, &ip) && !lab.set_holds(&set_to, &ip));
    check(
        "remote endpoint label change",
        vec![wep(n, j, from + 1)],
        &|l| l.set_holds(&set_to, &ip) && !l.set_holds(&set_from, &ip),
    );

    // A new block of this node: its blackhole route.
    let cidr = block(0, 1);
    check("new block of this node", vec![affinity(0, 1)], &|l| {
        l.route(&cidr).starts_with("blackhole")
    });

    // The block's route stays when another block of this node comes.
    let second = block(0, 2);
    lab.put(vec![affinity(0, 2)]);
    let ok = poll(WAIT, Duration::from_millis(20), || {
        lab.route(&second).starts_with("blackhole").then_some(())
    });
    assert!(ok.is_some(), "{second}: no blackhole\n{}", lab.agent_log());
    std::thread::sleep(Duration::from_secs(2));
    let later = lab.route(&cidr);
    assert!(
        later.starts_with("blackhole"),
        "{cidr}: {later:?}\n{}",
        lab.agent_log()
    );

    // Both model-only agents see every node.
    let hosts: Vec<Option<f64>> = lab
        .etcd_host
        .run(|| {
            [21_000, 21_001]
                .map(|port| {
                    let text = scrape(&format!("127.0.0.1:{port}")).expect("scrape");
                    gauge(&text, "felix_cluster_num_hosts")
                })
                .to_vec()
        })
        .expect("scrape");
    assert_eq!(hosts, vec![Some(shape.nodes as f64); 2]);
    // And are ready (their model holds the first list).
    let ready: Vec<String> = lab
        .etcd_host
        .run_async(|| async {
            let mut out = vec![];
            for i in 0..2 {
                let text = get(&format!("127.0.0.1:{}", HEALTH_PORT + i), "/readiness").await;
                out.push(text.lines().next().unwrap_or_default().to_string());
            }
            out
        })
        .expect("readiness");
    assert!(ready.iter().all(|l| l.contains(" 200 ")), "{ready:?}");

    // Control: a read of ours moves the counters, so zero above means zero.
    let before = lab.ranges();
    lab.with_kv(async |kv: &EtcdClient| kv.get("/calico/x").await.expect("get"));
    let after = lab.ranges();
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "{before:?} → {after:?}"
    );
}

async fn get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text
}
