//! The agent's model at cluster scale (ignored by default; the command is in
//! docs/BENCHMARKS.md). A synthetic cluster is written into a real etcd in a lab namespace,
//! the same at every scale except the number of nodes: per node one confirmed block and 50
//! workload endpoints; node-0 (this node) has 100 local endpoints; 10,000 rules in 1,000
//! GlobalNetworkPolicies (label selectors, a named port); 1,000 GlobalNetworkSets. One
//! model-only agent ([`Follower`]: the agent's watch, store and incremental policy model,
//! without a dataplane) follows it as node-0. Measured, per scale:
//! - start → first complete model (the watch's list, the store, the full policy compile);
//! - write → model updated, per change kind (a one-rule policy edit, a remote endpoint label
//!   change that moves its address between sets, a new remote block affinity, a new block of
//!   this node), median of `SAMPLES`;
//! - range requests per change (etcd's gRPC Range count and `etcd_debugging_mvcc_range_total`);
//! - the process's resident memory grown by the follower (VmRSS after its first model minus
//!   before it started; the writer's own allocations are mostly freed by then).
//!
//! - the heap each part of the model holds (bytes live in the allocator, counted by this test's
//!   global allocator: the whole follower, and a copy of its store and of its policy model).
//!
//! The cluster's writer is `scale_support` (shared with `bench_scale.rs` and `scale_ci.rs`).
//!
//! Prints `BENCH|` lines. `BENCH_MODEL_NODES=1000` runs one scale only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

mod scale_support;
use scale_support::{APPS, POLICIES, Shape, affinity, cluster, etcd_ranges, policy, put_all, wep};

use calico_datastore::{EtcdClient, EtcdConfig};
use calico_lab::Lab;
use calico_lab::etcd::{Etcd, EtcdOptions};
use calico_node::model::follow::Follower;
use serde_json::Value;

/// Changes of each kind timed per scale (their median is reported: on a shared machine single
/// writes vary by milliseconds).
const SAMPLES: usize = 21;

/// The system allocator, counting the bytes live (for the heap figures per part of the model).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The most bytes live at once since the last [`reset_peak`].
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes live on the heap now.
fn heap() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Starts a new peak from the bytes live now.
fn reset_peak() {
    PEAK.store(heap(), Ordering::Relaxed);
}

/// The most bytes live at once since [`reset_peak`].
fn peak() -> isize {
    PEAK.load(Ordering::Relaxed)
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The heap a copy of `v` holds (what `v` itself holds, as far as its `Clone` copies it).
fn heap_of<T: Clone>(v: &T) -> f64 {
    let before = heap();
    let copy = v.clone();
    let grown = heap() - before;
    drop(copy);
    grown as f64 / (1024.0 * 1024.0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the follower has taken revision `rev` (its lock is held from taking an event
/// until the model is updated, so reaching it means the work is done).
async fn reached(f: &Follower, rev: i64) {
    let t = Instant::now();
    while f.revision() < rev {
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "never reached {rev}"
        );
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
}

/// Write → model updated: the clock starts before the write.
async fn write_to_model(kv: &EtcdClient, f: &Follower, docs: Vec<(String, Value)>) -> Duration {
    let t = Instant::now();
    let rev = put_all(kv, docs).await;
    reached(f, rev).await;
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run_scale(nodes: usize) {
    let lab = Lab::new().expect("lab");
    let host = lab.add_host("etcd", "192.168.33.2/24").expect("etcd host");
    let etcd = Etcd::start(EtcdOptions::in_netns(host.netns_path(), host.ip())).expect("etcd");
    let endpoint = etcd.endpoint();
    let addr = endpoint.clone();
    host.run_async(move || async move {
        let kv = EtcdClient::connect(&EtcdConfig::new([endpoint]))
            .await
            .expect("etcd client");
        let docs = cluster(Shape::issue(nodes));
        let objects = docs.len();
        let written = put_all(&kv, docs).await;

        let rss_before = rss_kib();
        let heap_before = heap();
        reset_peak();
        let t = Instant::now();
        let f = Follower::start(kv.clone(), "node-0");
        reached(&f, written).await;
        let first_sync = t.elapsed();
        let rss_model = rss_kib().saturating_sub(rss_before);
        let heap_model = (heap() - heap_before) as f64 / (1024.0 * 1024.0);
        let peak_model = mib(peak() - heap_before);
        f.observe(|s| {
            let (store, p) = (&s.store, s.store.policy());
            let nodes: Vec<_> = store.nodes().cloned().collect();
            println!(
                "BENCH|model|{nodes_n}|store_mib|other_endpoints|{:.1}|own_endpoints|{:.1}|policies|{:.1}|network_sets|{:.1}|affinities|{:.1}|nodes|{:.1}",
                heap_of(&p.other_workload_endpoints),
                heap_of(&p.workload_endpoints),
                heap_of(&p.global_network_policies),
                heap_of(&p.global_network_sets),
                heap_of(store.affinities()),
                heap_of(&nodes),
                nodes_n = nodes.len(),
            );
            if let Some(Ok((program, _))) = s.policy.as_ref().map(|m| m.program()) {
                let lists: f64 = program.rule_lists.values().map(|r| heap_of(&**r)).sum();
                let sets: f64 = program.sets.values().map(|x| heap_of(&**x)).sum();
                println!(
                    "BENCH|model|{}|program_mib|endpoints|{:.1}|rule_lists|{lists:.1}|sets|{sets:.1}",
                    nodes.len(),
                    heap_of(&program.endpoints),
                );
            }
        });
        let s = f.state();
        println!("BENCH|model|{nodes}|heap_mib|peak_during_first_sync|{peak_model:.1}");
        println!(
            "BENCH|model|{nodes}|heap_mib|follower|{heap_model:.1}|store|{:.1}|policy_model|{:.1}",
            heap_of(&s.store),
            heap_of(&s.policy),
        );
        let (program, _) = s.policy.as_ref().unwrap().program().expect("compiles");
        let started = etcd_ranges(&addr);
        println!(
            "BENCH|model|{nodes}|objects|{objects}|endpoints|{}|rule_lists|{}|sets|{}",
            program.endpoints.len(),
            program.rule_lists.len(),
            program.sets.len()
        );

        let mut kinds: Vec<(&str, Vec<Duration>)> = Vec::new();
        let mut timed = |name: &'static str, d: Duration| match kinds
            .iter_mut()
            .find(|(n, _)| *n == name)
        {
            Some((_, v)) => v.push(d),
            None => kinds.push((name, vec![d])),
        };
        for k in 0..SAMPLES {
            // A one-rule change of a policy that selects local endpoints.
            let d = write_to_model(&kv, &f, vec![policy((APPS * k) % POLICIES, 1 + k)]).await;
            timed("one-rule policy edit", d);
            // A remote endpoint's label change (its address moves between sets).
            let n = 1 + k % (nodes - 1);
            let d = write_to_model(&kv, &f, vec![wep(n, k, (n + k + 1) % APPS)]).await;
            timed("remote endpoint label change", d);
            // A new remote block (routes would learn it over BGP; the model keeps affinities).
            // (node, block) differs for every k: scale_support packs eight blocks per node.
            let d = write_to_model(&kv, &f, vec![affinity(n, 1 + k / (nodes - 1))]).await;
            timed("new remote block affinity", d);
            // A new block of this node (a route: its blackhole); node-0 has room for seven.
            if k < 7 {
                let d = write_to_model(&kv, &f, vec![affinity(0, 1 + k)]).await;
                timed("new local block affinity", d);
            }
        }
        let after = etcd_ranges(&addr);
        let changes = (SAMPLES * 3 + 7) as u64;
        println!(
            "BENCH|model|{nodes}|first_sync_ms|{:.1}|rss_model_mib|{:.1}|ranges_per_change_grpc|{}|ranges_per_change_mvcc|{}",
            first_sync.as_secs_f64() * 1e3,
            rss_model as f64 / 1024.0,
            (after.1 - started.1) as f64 / changes as f64,
            (after.0 - started.0) as f64 / changes as f64,
        );
        for (name, v) in kinds {
            println!(
                "BENCH|model|{nodes}|write_to_model_ms|{name}|{:.2}",
                median(v).as_secs_f64() * 1e3
            );
        }
    })
    .expect("run in the etcd namespace");
    drop(etcd);
}

#[test]
#[ignore = "benchmark: see docs/BENCHMARKS.md"]
fn model_at_10_and_1000_nodes() {
    let only: Option<usize> = std::env::var("BENCH_MODEL_NODES")
        .ok()
        .map(|n| n.parse().expect("BENCH_MODEL_NODES: a number of nodes"));
    for nodes in [10, 1_000] {
        if only.is_some_and(|o| o != nodes) {
            continue;
        }
        run_scale(nodes);
    }
}
