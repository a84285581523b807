//! The real agent at cluster scale (issue 15; ignored by default: `scripts/bench-scale.sh`,
//! figures in docs/BENCHMARKS.md). Per scale (10 and 1,000 synthetic nodes, the rest of the
//! cluster the same: `scale_support::Shape::issue`), in lab namespaces:
//! 1. the synthetic cluster is written into a real etcd; node-0 gets 100 real workloads
//!    (veths into their own namespaces);
//! 2. the real `calico-node` starts as node-0 (VXLAN backend: a remote block's route comes
//!    from its affinity in the datastore, as Felix's VXLAN route manager does it); start →
//!    first complete sync: spawn → policy applied to all 100 endpoints and a VXLAN route to
//!    every remote node's block in the kernel;
//! 3. write → ENFORCED in node-0's kernel, median of `SAMPLES`, the clock started just before
//!    the etcd write: a one-rule change (an 11th rule in a policy selecting local endpoints;
//!    its comment polled in the policy's chain over netlink), a remote endpoint's label change
//!    (its address polled until in the new label's nft set and out of the old one, `nft list
//!    set`), a new remote block (its route polled with `ip route show exact`); range requests
//!    per change from etcd's own counters (mvcc range_total and gRPC Range);
//! 4. the agent's peak RSS (VmHWM);
//! 5. etcd's request latency, measured by a client-side probe in the etcd host's namespace (a
//!    put of its own key, then a linearizable get of it, every 50 ms), with the parties placed
//!    as in a cluster where every agent has its own machine (scale_support::cpu): etcd and the
//!    probe on CPU 0; the real agent, the writer and the model-only agents on the others, the
//!    model-only agents at SCHED_IDLE (`BENCH_PLACEMENT=shared` turns this off). Three phases,
//!    each with the CPU time every party used (from /proc), CPU 0's busy and stolen time, and
//!    etcd's own view (server-side request latency, WAL fsync, bytes sent to watchers, slow
//!    watchers) from its /metrics:
//!    - `idle`: 10 s, only the real agent watching, nothing written;
//!    - model-only agents (`calico-node` with `CALICO_MODEL_ONLY=true`, separate processes)
//!      are started in batches of 10 up to `BENCH_FOLLOWERS` (default 100), each batch only
//!      while the machine's MemAvailable stays above 6 GiB plus the batch's expected RSS, and
//!      each batch waits until its agents have the whole cluster;
//!    - `idle_watched`: 10 s, every model-only agent watching too, nothing written;
//!    - `load`: 20 s while 10 changes per second are written (policy edits, endpoint label
//!      changes, new block affinities, in turn); then every model-only agent must have taken
//!      the last write.
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

/// The latency probe, client-side in the etcd host's namespace: every 50 ms a put of
/// `/probe/latency` (outside `/calico/`: no agent sees it), then a linearizable get of it, for
/// `secs`. Runs on its own thread, pinned to `cpus` (etcd's). Returns (put latencies, get
/// latencies, the probe thread's CPU time).
async fn probe(
    kv: &EtcdClient,
    secs: u64,
    cpus: Option<&str>,
) -> (Vec<Duration>, Vec<Duration>, Duration) {
    if let Some(c) = cpus {
        cpu::pin(cpu::this_thread_id(), c, true);
    }
    let cpu0 = cpu::cpu_time("/proc/thread-self");
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
    (puts, gets, cpu::cpu_time("/proc/thread-self") - cpu0)
}

/// The writer: 10 changes per second of the cluster for `secs`, a policy edit (policies
/// 300..399, new ports), a remote endpoint's label change and a new block affinity of a remote
/// node, in turn, one put each. On its own thread, pinned to `cpus` (the agents'). Returns
/// (changes written, the last one's revision, the writer thread's CPU time).
async fn write_changes(
    kv: &EtcdClient,
    secs: u64,
    nodes: usize,
    cpus: Option<&str>,
) -> (usize, i64, Duration) {
    if let Some(c) = cpus {
        cpu::pin(cpu::this_thread_id(), c, true);
    }
    let cpu0 = cpu::cpu_time("/proc/thread-self");
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
        last = put_all(kv, vec![doc]).await;
        n += 1;
    }
    (n, last, cpu::cpu_time("/proc/thread-self") - cpu0)
}

/// Runs `f` with a fresh etcd client on a new thread in the etcd host's namespace (the probe
/// and the writer each have their own, so each can be placed on its own CPUs).
fn with_client<R: Send>(
    host: &calico_lab::Host,
    endpoint: &str,
    f: impl AsyncFnOnce(&EtcdClient) -> R + Send,
) -> R {
    let endpoint = endpoint.to_string();
    host.run_async(move || async move {
        let kv = EtcdClient::connect(&calico_datastore::EtcdConfig::new([endpoint]))
            .await
            .expect("etcd client");
        f(&kv).await
    })
    .expect("run in the etcd namespace")
}

/// What one phase of the etcd-latency measurement saw.
struct Phase {
    name: &'static str,
    puts: Vec<Duration>,
    gets: Vec<Duration>,
    written: usize,
    last: i64,
    /// CPU time of each party over the phase: etcd, the real agent, the model-only agents
    /// (all, and the busiest), the writer, the probe.
    etcd: Duration,
    agent: Duration,
    followers: Duration,
    follower_max: Duration,
    writer: Duration,
    probe: Duration,
    /// etcd's CPU (CPU 0, with a placement) busy and stolen, whoever used it.
    core_busy: Duration,
    core_steal: Duration,
    wall: Duration,
    /// etcd's /metrics before and after.
    metrics: (String, String),
}

/// One phase: the probe for `secs` and, with `writes` (the cluster's node count), the
/// writer meanwhile; the CPU of every party from /proc and etcd's metrics around it.
fn phase(
    lab: &ScaleLab,
    name: &'static str,
    secs: u64,
    writes: Option<usize>,
    place: Option<&cpu::Placement>,
) -> Phase {
    let etcd_pid = lab.etcd.pid().expect("etcd pid");
    let agent_pid = lab.agent_pid();
    let follower_pids: Vec<u32> = lab.followers.iter().filter_map(|f| f.pid()).collect();
    let endpoint = lab.etcd.endpoint();
    let scrape_etcd = || {
        let e = endpoint.clone();
        lab.etcd_host
            .run(move || scrape(&e).expect("etcd /metrics"))
            .expect("scrape in the etcd namespace")
    };
    let metrics_before = scrape_etcd();
    let before = (
        cpu::process_cpu(etcd_pid),
        cpu::process_cpu(agent_pid),
        follower_pids
            .iter()
            .map(|p| cpu::process_cpu(*p))
            .collect::<Vec<_>>(),
        cpu::core_times(0),
    );
    let t = Instant::now();
    let ((puts, gets, probe_cpu), (written, last, writer_cpu)) = std::thread::scope(|s| {
        let writer = writes.map(|nodes| {
            let (host, endpoint) = (&lab.etcd_host, &endpoint);
            let cpus = place.map(|p| p.agents.as_str());
            s.spawn(move || {
                with_client(host, endpoint, async move |kv: &EtcdClient| {
                    write_changes(kv, secs, nodes, cpus).await
                })
            })
        });
        let cpus = place.map(|p| p.etcd.as_str());
        let probed = with_client(&lab.etcd_host, &endpoint, async move |kv: &EtcdClient| {
            probe(kv, secs, cpus).await
        });
        let written = writer
            .map(|w| w.join().expect("writer"))
            .unwrap_or((0, 0, Duration::ZERO));
        (probed, written)
    });
    let wall = t.elapsed();
    let followers: Vec<Duration> = follower_pids
        .iter()
        .zip(&before.2)
        .map(|(p, b)| cpu::process_cpu(*p).saturating_sub(*b))
        .collect();
    let core = cpu::core_times(0);
    Phase {
        name,
        puts,
        gets,
        written,
        last,
        etcd: cpu::process_cpu(etcd_pid) - before.0,
        agent: cpu::process_cpu(agent_pid) - before.1,
        followers: followers.iter().sum(),
        follower_max: followers.iter().max().copied().unwrap_or_default(),
        writer: writer_cpu,
        probe: probe_cpu,
        core_busy: core.0 - before.3.0,
        core_steal: core.1 - before.3.1,
        wall,
        metrics: (metrics_before, scrape_etcd()),
    }
}

/// The sum of the series of `/metrics` text whose name (with labels) starts with `name` and
/// contains every one of `with`.
fn series(text: &str, name: &str, with: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(n, _)| n.starts_with(name) && with.iter().all(|w| n.contains(w)))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// The 99th percentile of the observations histogram `name` (filtered by `with`) took between
/// two scrapes, as its bucket's upper bound in ms (Prometheus buckets: no finer than that),
/// and the number of observations.
fn histogram_p99_ms(before: &str, after: &str, name: &str, with: &[&str]) -> (String, u64) {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{name}_bucket")) && with.iter().all(|w| l.contains(w))
            })
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, l.rsplit_once(' ')?.1.parse().ok()?))
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let (b, a) = (buckets(before), buckets(after));
    let delta: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, n)| (*le, n - b.iter().find(|x| x.0 == *le).map_or(0.0, |x| x.1)))
        .collect();
    let total = delta.last().map_or(0.0, |x| x.1);
    let p99 = delta
        .iter()
        .find(|(_, n)| *n >= total * 0.99)
        .map_or("-".to_string(), |(le, _)| {
            if le.is_infinite() {
                "inf".into()
            } else {
                format!("{}", le * 1e3)
            }
        });
    (if total > 0.0 { p99 } else { "-".into() }, total as u64)
}

impl Phase {
    fn print(&self, tag: &str, nodes: usize) {
        let (b, a) = (&self.metrics.0, &self.metrics.1);
        let delta = |name: &str, with: &[&str]| series(a, name, with) - series(b, name, with);
        let fsync = histogram_p99_ms(b, a, "etcd_disk_wal_fsync_duration_seconds", &[]);
        let put_server = histogram_p99_ms(
            b,
            a,
            "grpc_server_handling_seconds",
            &["grpc_method=\"Put\""],
        );
        let get_server = histogram_p99_ms(
            b,
            a,
            "grpc_server_handling_seconds",
            &["grpc_method=\"Range\""],
        );
        let cpu = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
        let share =
            |d: Duration| format!("{:.0}%", 100.0 * d.as_secs_f64() / self.wall.as_secs_f64());
        println!(
            "BENCH|{tag}|{nodes}|etcd_phase|{}|secs|{:.1}|probes|{}|put_p99_ms|{}|get_p99_ms|{}|put_p50_ms|{}|get_p50_ms|{}|changes_written|{}|etcd_watchers|{}",
            self.name,
            self.wall.as_secs_f64(),
            self.gets.len(),
            ms(p99(self.puts.clone())),
            ms(p99(self.gets.clone())),
            ms(median(self.puts.clone())),
            ms(median(self.gets.clone())),
            self.written,
            series(a, "etcd_debugging_mvcc_watcher_total", &[]),
        );
        println!(
            "BENCH|{tag}|{nodes}|etcd_phase_server|{}|put_p99_le_ms|{}|get_p99_le_ms|{}|wal_fsync_p99_le_ms|{}|fsyncs|{}|grpc_sent_kib|{:.0}|slow_watchers_after|{}|pending_events_after|{}",
            self.name,
            put_server.0,
            get_server.0,
            fsync.0,
            fsync.1,
            delta("etcd_network_client_grpc_sent_bytes_total", &[]) / 1024.0,
            series(a, "etcd_debugging_mvcc_slow_watcher_total", &[]),
            series(a, "etcd_debugging_mvcc_pending_events_total", &[]),
        );
        println!(
            "BENCH|{tag}|{nodes}|etcd_phase_cpu_ms|{}|etcd|{}|{}|agent|{}|followers|{}|follower_max|{}|writer|{}|probe|{}|cpu0_busy|{}|{}|cpu0_steal|{}",
            self.name,
            cpu(self.etcd),
            share(self.etcd),
            cpu(self.agent),
            cpu(self.followers),
            cpu(self.follower_max),
            cpu(self.writer),
            cpu(self.probe),
            cpu(self.core_busy),
            share(self.core_busy),
            cpu(self.core_steal),
        );
    }
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

    // etcd's latency, idle and under 10 changes/s, with the parties placed as in a cluster
    // (scale_support::cpu): etcd and the probe on CPU 0, the real agent, the writer and the
    // model-only agents on the others (the model-only agents at SCHED_IDLE). Three phases:
    // only the real agent watching, nothing written; the model-only agents watching too,
    // nothing written; 10 changes/s written.
    // BENCH_PLACEMENT=shared: no placement, every party anywhere at normal priority (how the
    // figures before 2026-12-08 02:00 were taken), to show what the placement changes.
    let shared = std::env::var("BENCH_PLACEMENT").is_ok_and(|v| v == "shared");
    let place = if shared { None } else { cpu::placement() };
    match &place {
        Some(p) => {
            cpu::pin(lab.etcd.pid().expect("etcd pid"), &p.etcd, false);
            cpu::pin(lab.agent_pid(), &p.agents, false);
            lab.follower_cpus = Some(p.agents.clone());
            println!(
                "BENCH|{tag}|{nodes}|placement|etcd+probe|cpu {}|agent+writer+model-only (SCHED_IDLE)|cpu {}",
                p.etcd, p.agents
            );
        }
        None => println!(
            "BENCH|{tag}|{nodes}|placement|none ({}): etcd shares every CPU with the agents",
            if shared {
                "BENCH_PLACEMENT=shared"
            } else {
                "one CPU"
            }
        ),
    }
    let idle = phase(&lab, "idle", 10, None, place.as_ref());
    idle.print(tag, nodes);

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
    let rss_total: u64 = lab
        .followers
        .iter()
        .filter_map(|f| f.pid())
        .map(|p| memory_kib(p).1)
        .sum();
    println!(
        "BENCH|{tag}|{nodes}|followers|{followers}|started_in_s|{:.1}|follower_peak_rss_mib|{:.1}|followers_rss_total_mib|{}|mem_available_mib|{}",
        t.elapsed().as_secs_f64(),
        per_follower_kib as f64 / 1024.0,
        rss_total / 1024,
        mem_available_kib() / 1024
    );

    // Started at normal priority (their first list is not measured); from now on they only
    // take CPU that the real agent and the writer leave.
    if place.is_some() {
        for pid in lab.followers.iter().filter_map(|f| f.pid()) {
            cpu::make_idle(pid);
        }
    }
    let watched = phase(&lab, "idle_watched", 10, None, place.as_ref());
    watched.print(tag, nodes);
    let load = phase(&lab, "load", 20, Some(nodes), place.as_ref());
    load.print(tag, nodes);
    // The load is what the goal names: 10 changes per second for the whole phase.
    assert!(
        load.written as f64 >= 0.95 * 10.0 * load.wall.as_secs_f64(),
        "the writer wrote {} changes in {:.1} s, not 10 per second",
        load.written,
        load.wall.as_secs_f64()
    );
    let t = Instant::now();
    let cpu_then: Duration = lab
        .followers
        .iter()
        .filter_map(|f| f.pid())
        .map(cpu::process_cpu)
        .sum();
    lab.wait_followers(load.last, Duration::from_secs(300));
    let caught_up = t.elapsed();
    // At SCHED_IDLE the model-only agents may still be behind when the load ends: their cost
    // per change counts until every one has taken the last change.
    let follower_cpu = load.followers
        + lab
            .followers
            .iter()
            .filter_map(|f| f.pid())
            .map(cpu::process_cpu)
            .sum::<Duration>()
            .saturating_sub(cpu_then);
    println!(
        "BENCH|{tag}|{nodes}|model_only_cpu_per_change_ms|{:.3}|followers_cpu_ms|{:.0}|changes|{}|followers|{followers}",
        follower_cpu.as_secs_f64() * 1e3 / (load.written * followers.max(1)) as f64,
        follower_cpu.as_secs_f64() * 1e3,
        load.written
    );
    let mut agent = lab.agent.take().expect("agent");
    assert!(agent.is_running(), "the agent died:\n{}", agent.log());
    lab.agent = Some(agent);
    let (idle_p99, load_p99) = (
        p99(idle.puts.clone()).max(p99(idle.gets.clone())),
        p99(load.puts.clone()).max(p99(load.gets.clone())),
    );
    println!(
        "BENCH|{tag}|{nodes}|etcd_p99_ms|idle|put|{}|get|{}|load|put|{}|get|{}|ratio|{:.2}|changes_written|{}|followers|{followers}|all_followers_at_last_change_after_ms|{}",
        ms(p99(idle.puts.clone())),
        ms(p99(idle.gets.clone())),
        ms(p99(load.puts.clone())),
        ms(p99(load.gets.clone())),
        load_p99.as_secs_f64() / idle_p99.as_secs_f64(),
        load.written,
        caught_up.as_millis()
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
