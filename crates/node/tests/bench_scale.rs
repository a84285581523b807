//! The real agent at cluster scale (issue 15; ignored by default: `scripts/bench-scale.sh`,
//! figures in docs/BENCHMARKS.md). Per scale (10 and 1,000 synthetic nodes, the rest of the
//! cluster the same: `scale_support::Shape::issue`), in lab namespaces:
//! 1. the synthetic cluster is written into a real etcd; node-0 gets 100 real workloads
//!    (veths into their own namespaces);
//! 2. etcd's idle request latency: a client-side probe in the etcd host's namespace (a put of
//!    its own key, then a linearizable get of it, every 50 ms for 10 s), before any agent runs;
//! 3. the real `calico-node` starts as node-0 (VXLAN backend: a remote block's route comes
//!    from its affinity in the datastore, as Felix's VXLAN route manager does it); start →
//!    first complete sync: spawn → policy applied to all 100 endpoints and a VXLAN route to
//!    every remote node's block in the kernel;
//! 4. write → ENFORCED in node-0's kernel, median of `SAMPLES`, the clock started just before
//!    the etcd write: a one-rule change (an 11th rule in a policy selecting local endpoints;
//!    its comment polled in the policy's chain over netlink), a remote endpoint's label change
//!    (its address polled until in the new label's nft set and out of the old one, `nft list
//!    set`), a new remote block (its route polled with `ip route show exact`); range requests
//!    per change from etcd's own counters (mvcc range_total and gRPC Range);
//! 5. the agent's peak RSS (VmHWM);
//! 6. model-only agents (`calico-node` with `CALICO_MODEL_ONLY=true`, separate processes) are
//!    started in batches of 10 up to `BENCH_FOLLOWERS` (default 100), each batch only while
//!    the machine's MemAvailable stays above 6 GiB plus the batch's expected RSS, and each
//!    batch waits until its agents have the whole cluster;
//! 7. etcd's latency under load: the same probe for 20 s while 10 changes per second are
//!    written (policy edits, endpoint label changes, new block affinities, in turn), with the
//!    real agent and the model-only agents watching; then every model-only agent must have
//!    taken the last write.
//!
//! The `_no_overlay` variants run the same without the overlay (the pool `vxlanMode: Never`,
//! the BGP backend with no peer since the mesh is off; the block change is a new block of
//! node-0, its blackhole route) and without model-only agents: what the agent costs when no
//! round runs the overlay's sync, which still reads the datastore (tunnel.rs).
//!
//! Prints `BENCH|scale|<nodes>|...` (`BENCH|scale-no-overlay|...`) lines. Needs root and a built `calico-node`
//! (`BENCH_PROFILE=release` for the release binary).

mod scale_support;
use scale_support::lab::*;
use scale_support::*;

use std::time::{Duration, Instant};

use calico_datastore::EtcdClient;
use serde_json::Value;

const SAMPLES: usize = 5;
const RESERVE_KIB: u64 = 6 * 1024 * 1024;
const BATCH: usize = 10;

/// Wall-clock time (UTC seconds of the day, µs), to line a change up with the agent's log.
fn chrono_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99).div_ceil(100).max(1) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Client-side probe: every 50 ms a put of `/probe/latency` then a get of it, for `secs`;
/// with `writes`, 10 changes per second of the cluster are written meanwhile. Returns (put
/// latencies, get latencies, changes written, last revision).
async fn probe(
    kv: &EtcdClient,
    secs: u64,
    writes: Option<usize>,
) -> (Vec<Duration>, Vec<Duration>, usize, i64) {
    let writer = writes.map(|nodes| {
        let kv = kv.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let (mut n, mut last) = (0usize, 0i64);
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                tick.tick().await;
                let remote = 1 + n % (nodes - 1);
                let doc = match n % 3 {
                    0 => policy(300 + n % 100, 100 + n),
                    1 => wep(remote, 10 + n % 40, (n * 7) % APPS),
                    _ => affinity(remote, 6 + (n / 3) % 2),
                };
                last = put_all(&kv, vec![doc]).await;
                n += 1;
            }
            (n, last)
        })
    });
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tick.tick().await;
        let t = Instant::now();
        kv.put("/probe/latency", b"x".to_vec())
            .await
            .expect("probe put");
        puts.push(t.elapsed());
        let t = Instant::now();
        kv.get("/probe/latency").await.expect("probe get");
        gets.push(t.elapsed());
    }
    let (n, last) = match writer {
        Some(w) => w.await.expect("writer"),
        None => (0, 0),
    };
    (puts, gets, n, last)
}

/// One change: written, then polled in the kernel until `done`; returns write → enforced
/// and the range requests (mvcc, gRPC) etcd served meanwhile and in the 300 ms after.
fn change(
    lab: &ScaleLab,
    what: &str,
    docs: Vec<(String, Value)>,
    done: impl Fn(&ScaleLab) -> bool,
) -> (Duration, (u64, u64)) {
    let before = lab.ranges();
    let wall = chrono_now();
    let (_, t) = lab.put(docs);
    // The probe's floor: the put has returned (etcd's answer, the client's teardown) before
    // the first poll.
    let returned = t.elapsed();
    let d = poll(Duration::from_secs(120), Duration::from_micros(500), || {
        done(lab).then(|| t.elapsed())
    })
    .unwrap_or_else(|| panic!("{what}: never enforced\n{}", lab.agent_log()));
    std::thread::sleep(Duration::from_millis(300));
    let after = lab.ranges();
    println!(
        "BENCH|change|{what}|written_at|{wall}|put_returned_ms|{}|enforced_ms|{}",
        ms(returned),
        ms(d)
    );
    (d, (after.0 - before.0, after.1 - before.1))
}

/// `vxlan`: the pool is VXLAN Always and the agent runs the VXLAN backend (remote blocks
/// routed from affinities); otherwise the pool has no overlay and the agent runs the BGP
/// backend with no peer (mesh off), and the block change is a new block of node-0 (its
/// blackhole route), so no round runs the overlay's sync.
fn run(nodes: usize, followers_wanted: usize, vxlan: bool) {
    let shape = Shape {
        vxlan,
        ..Shape::issue(nodes)
    };
    let tag = if vxlan { "scale" } else { "scale-no-overlay" };
    let mut lab = ScaleLab::new(shape);
    let (objects, _) = lab.write_cluster();
    lab.add_local_workloads();
    let (idle_puts, idle_gets, _, _) =
        lab.with_kv(async |kv: &EtcdClient| probe(kv, 10, None).await);

    // Start → first complete sync.
    let spawned = lab.start_agent(if vxlan { "vxlan" } else { "bird" });
    let want = format!("endpoints={}", shape.local_weps);
    let synced = poll(Duration::from_secs(900), Duration::from_millis(20), || {
        (lab.agent_log()
            .lines()
            .any(|l| l.contains("policy applied") && l.contains(&want))
            && if vxlan {
                lab.vxlan_routes() >= nodes - 1
            } else {
                lab.route(&block(0, 0)).starts_with("blackhole")
            })
        .then(|| spawned.elapsed())
    });
    let first_sync = synced.unwrap_or_else(|| {
        panic!(
            "no first complete sync ({} VXLAN routes):\n{}",
            lab.vxlan_routes(),
            lab.agent_log()
        )
    });
    println!(
        "BENCH|{tag}|{nodes}|objects|{objects}|first_sync_ms|{}",
        ms(first_sync)
    );
    std::thread::sleep(Duration::from_secs(2));

    let mut kinds: Vec<(&str, Vec<Duration>, (u64, u64))> = vec![
        ("one-rule policy change", vec![], (0, 0)),
        ("remote endpoint label change", vec![], (0, 0)),
        (
            if vxlan {
                "new remote block (route)"
            } else {
                "new block of this node (blackhole)"
            },
            vec![],
            (0, 0),
        ),
    ];
    for k in 0..SAMPLES {
        let i = APPS * k;
        let chain = lab.policy_chain(i);
        let (d, r) = change(
            &lab,
            "one-rule change",
            vec![policy_with(i, 0, RULES_PER_POLICY + 1)],
            |l| l.chain_has_rule(&chain, RULES_PER_POLICY),
        );
        kinds[0].1.push(d);
        kinds[0].2 = (kinds[0].2.0 + r.0, kinds[0].2.1 + r.1);

        let n = 1 + k % (nodes - 1);
        let from = app_of(n, k);
        let to = (from + 1) % APPS;
        let (set_from, set_to) = (
            selector_set(&format!("app == 'app{from}'")),
            selector_set(&format!("app == 'app{to}'")),
        );
        let ip = wep_ip(n, k);
        assert!(lab.set_holds(&set_from, &ip), "{ip} not in {set_from}");
        let (d, r) = change(&lab, "label change", vec![wep(n, k, to)], |l| {
            l.set_holds(&set_to, &ip) && !l.set_holds(&set_from, &ip)
        });
        kinds[1].1.push(d);
        kinds[1].2 = (kinds[1].2.0 + r.0, kinds[1].2.1 + r.1);

        let owner = if vxlan { n } else { 0 };
        let cidr = block(owner, 1 + k);
        let (d, r) = change(&lab, "new block", vec![affinity(owner, 1 + k)], |l| {
            !l.route(&cidr).is_empty()
        });
        kinds[2].1.push(d);
        kinds[2].2 = (kinds[2].2.0 + r.0, kinds[2].2.1 + r.1);
    }
    let example = block(if vxlan { 1 } else { 0 }, 1);
    println!(
        "BENCH|{tag}|{nodes}|route_example|{example}|{}|blackholes|{}",
        lab.route(&example),
        lab.node
            .exec_ok(&["ip", "-4", "route", "show", "type", "blackhole"])
            .unwrap_or_default()
            .replace('\n', ";")
    );
    for (name, v, (mvcc, grpc)) in &kinds {
        println!(
            "BENCH|{tag}|{nodes}|write_to_enforced_ms|{name}|{}|max|{}|ranges_per_change_mvcc|{:.1}|grpc|{:.1}",
            ms(median(v.clone())),
            ms(*v.iter().max().unwrap()),
            *mvcc as f64 / SAMPLES as f64,
            *grpc as f64 / SAMPLES as f64
        );
    }
    // What the agent's last rounds did (sizes of the policy transactions).
    let log = lab.agent_log();
    let applied: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("policy applied"))
        .collect();
    for l in &applied[applied.len().saturating_sub(4)..] {
        println!("BENCH|{tag}|{nodes}|agent_log|{l}");
    }
    // With BENCH_AGENT_LOG=info,calico_node::agent=debug: the rounds of the changes above.
    let rounds: Vec<&str> = log.lines().filter(|l| l.contains("round done")).collect();
    for l in &rounds[rounds.len().saturating_sub(3 * SAMPLES)..] {
        println!("BENCH|{tag}|{nodes}|agent_round|{l}");
    }
    let (hwm, rss) = memory_kib(lab.agent_pid());
    println!(
        "BENCH|{tag}|{nodes}|agent_peak_rss_mib|{:.1}|rss_mib|{:.1}",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );

    // Model-only agents, in batches while memory allows.
    let mut per_follower_kib = 0u64;
    let t = Instant::now();
    while lab.followers.len() < followers_wanted {
        let batch = BATCH.min(followers_wanted - lab.followers.len());
        let expected = per_follower_kib.max(100 * 1024) * batch as u64 * 5 / 4;
        if mem_available_kib() < RESERVE_KIB + expected {
            println!(
                "BENCH|{tag}|{nodes}|followers_stopped_at|{}|mem_available_mib|{}",
                lab.followers.len(),
                mem_available_kib() / 1024
            );
            break;
        }
        let (rev, _) = lab.put(vec![policy(999, 0)]);
        let first = lab.followers.len();
        for i in first..first + batch {
            lab.start_follower(i);
        }
        lab.wait_followers(rev, Duration::from_secs(900));
        per_follower_kib = lab.followers[first..]
            .iter()
            .filter_map(|f| f.pid())
            .map(|p| memory_kib(p).0)
            .max()
            .unwrap_or(0);
    }
    let followers = lab.followers.len();
    println!(
        "BENCH|{tag}|{nodes}|followers|{followers}|started_in_s|{:.1}|follower_peak_rss_mib|{:.1}|mem_available_mib|{}",
        t.elapsed().as_secs_f64(),
        per_follower_kib as f64 / 1024.0,
        mem_available_kib() / 1024
    );

    let (load_puts, load_gets, written, last) =
        lab.with_kv(async move |kv: &EtcdClient| probe(kv, 20, Some(nodes)).await);
    lab.wait_followers(last, Duration::from_secs(300));
    let mut agent = lab.agent.take().expect("agent");
    assert!(agent.is_running(), "the agent died:\n{}", agent.log());
    lab.agent = Some(agent);
    let probes = load_gets.len();
    println!(
        "BENCH|{tag}|{nodes}|etcd_p99_ms|idle|put|{}|get|{}|load|put|{}|get|{}|changes_written|{written}|followers|{followers}|probes|{}",
        ms(p99(idle_puts)),
        ms(p99(idle_gets)),
        ms(p99(load_puts)),
        ms(p99(load_gets)),
        probes
    );
}

fn followers_wanted() -> usize {
    std::env::var("BENCH_FOLLOWERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

#[test]
#[ignore = "benchmark: scripts/bench-scale.sh"]
fn agent_at_10_nodes() {
    run(10, followers_wanted(), true);
}

#[test]
#[ignore = "benchmark: scripts/bench-scale.sh"]
fn agent_at_1000_nodes() {
    run(1_000, followers_wanted(), true);
}

#[test]
#[ignore = "benchmark: scripts/bench-scale.sh"]
fn agent_at_10_nodes_no_overlay() {
    run(10, 0, false);
}

#[test]
#[ignore = "benchmark: scripts/bench-scale.sh"]
fn agent_at_1000_nodes_no_overlay() {
    run(1_000, 0, false);
}
