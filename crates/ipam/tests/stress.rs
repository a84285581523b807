//! Several OS processes (`ipam-stress`), each acting as one host with several concurrent
//! tasks, against one real etcd and one small pool.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Write as _};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use calico_ipam::{admin, model};
use common::*;
use ipnet::IpNet;
use serde_json::{Value, json};

const HOSTS: usize = 4;

/// Reads the next event of every process (bounded by `timeout`).
async fn next_events(procs: &mut [Proc], timeout: Duration) -> Vec<Value> {
    let mut handles = Vec::new();
    for p in procs.iter_mut() {
        let out = p.child.stdout.take().expect("stdout piped");
        handles.push(tokio::task::spawn_blocking(move || {
            let mut r = BufReader::new(out);
            let ev = read_event(&mut r);
            (ev, r.into_inner())
        }));
    }
    let mut events = Vec::new();
    for (p, h) in procs.iter_mut().zip(handles) {
        let (ev, out) = tokio::time::timeout(timeout, h)
            .await
            .unwrap_or_else(|_| panic!("{} produced no event within {timeout:?}", p.host))
            .expect("reader thread");
        p.child.stdout = Some(out);
        events.push(ev.unwrap_or_else(|| panic!("{} exited without an event", p.host)));
    }
    events
}

fn send(p: &mut Proc, line: &str) {
    let stdin = p.child.stdin.as_mut().expect("stdin piped");
    writeln!(stdin, "{line}").expect("write to child");
    stdin.flush().expect("flush");
}

fn wait_ok(p: &mut Proc, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = p.child.try_wait().expect("wait") {
            assert!(st.success(), "{} exited with {st}", p.host);
            return;
        }
        assert!(Instant::now() < deadline, "{} did not exit", p.host);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hosts_exhaust_a_small_pool_without_duplicates_or_leaks() {
    let started = Instant::now();
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    // 32 blocks of 8; 4 addresses reserved: 252 can be handed out.
    create_pool(&ds, "stress-pool", "10.77.0.0/24", 29, json!({})).await;
    create_reservation(&ds, "stress-res", &["10.77.0.0/30"]).await;
    let hosts: Vec<String> = (0..HOSTS).map(|i| format!("stress-h{i}")).collect();
    for h in &hosts {
        create_node(&ds, h, json!({})).await;
    }
    let mut procs: Vec<Proc> = hosts
        .iter()
        .map(|h| {
            Proc::spawn(
                &etcd.url,
                h,
                &["--mode", "fill", "--tasks", "4", "--churn", "250"],
            )
        })
        .collect();

    for ev in next_events(&mut procs, Duration::from_secs(40)).await {
        assert_eq!(ev["event"], "churned", "{ev}");
    }
    for p in procs.iter_mut() {
        send(p, "fill");
    }
    let full = next_events(&mut procs, Duration::from_secs(20)).await;
    let mut holder: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut total_allocations = 0;
    for ev in &full {
        assert_eq!(ev["event"], "full", "{ev}");
        total_allocations += ev["allocations"].as_u64().unwrap();
        assert!(
            ev["exhausted"].as_u64().unwrap() >= 4,
            "every task ends on exhaustion: {ev}"
        );
        assert_eq!(
            ev["churn_exhausted"], 0,
            "no exhaustion while the pool has room: {ev}"
        );
        let msg = ev["exhaustion_message"].as_str().unwrap();
        assert!(msg.contains("stress-pool") && msg.contains("IPv4"), "{msg}");
        for pair in ev["held"].as_array().unwrap() {
            let ip: IpAddr = pair[0].as_str().unwrap().parse().unwrap();
            let handle = pair[1].as_str().unwrap().to_owned();
            if let Some(prev) = holder.insert(ip, handle.clone()) {
                panic!("{ip} handed out twice: to {prev} and {handle}");
            }
        }
    }
    assert!(
        total_allocations >= 4000,
        "only {total_allocations} allocations"
    );
    let reserved: IpNet = "10.77.0.0/30".parse().unwrap();
    assert!(holder.keys().all(|ip| !reserved.contains(ip)));
    assert_eq!(holder.len(), 252, "the pool is exactly full");
    // What the processes believe matches etcd, handle by handle.
    let report = admin::check(&ipam).await.unwrap().report;
    assert_eq!(report.allocations.len(), 252);
    for (ip, allocs) in &report.allocations {
        assert_eq!(allocs.len(), 1);
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(allocs[0].handle.as_ref(), holder.get(&ip), "{ip}");
    }
    assert!(report.missing_handles.is_empty() && report.leaked_handles.is_empty());

    for p in procs.iter_mut() {
        send(p, "release");
    }
    let released = next_events(&mut procs, Duration::from_secs(30)).await;
    let mut n = 0;
    for ev in &released {
        assert_eq!(ev["event"], "released", "{ev}");
        n += ev["released_at_end"].as_u64().unwrap();
    }
    assert_eq!(n, 252);
    for p in procs.iter_mut() {
        wait_ok(p, Duration::from_secs(10));
    }
    let after = admin::check(&ipam).await.unwrap().report;
    assert!(
        after.allocations.is_empty(),
        "leaked: {:?}",
        after.allocations.keys()
    );
    assert_eq!(after.problems(), 0);
    assert!(
        ipam.kv()
            .list(model::HANDLES_PREFIX)
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    eprintln!(
        "{total_allocations} allocations by {HOSTS} processes x 4 tasks in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_host_leaves_only_what_check_explains_and_release_repairs_it() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "kill-pool", "10.78.0.0/25", 29, json!({})).await;
    let live: Vec<String> = (0..3).map(|i| format!("live-{i}")).collect();
    for h in &live {
        create_node(&ds, h, json!({})).await;
    }
    let mut leaked_total = 0;
    for round in 0..4 {
        let victim = format!("victim-{round}");
        create_node(&ds, &victim, json!({})).await;
        let mut procs: Vec<Proc> = live
            .iter()
            .map(|h| {
                Proc::spawn(
                    &etcd.url,
                    h,
                    &["--mode", "churn", "--tasks", "3", "--seconds", "40"],
                )
            })
            .collect();
        let mut v = Proc::spawn(
            &etcd.url,
            &victim,
            &["--mode", "churn", "--tasks", "4", "--seconds", "40"],
        );
        // Kill at a random point of its allocation loop.
        let delay = 300 + rand::random::<u64>() % 1200;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(v.pid(), libc::SIGKILL) }, 0);
        let st = v.child.wait().unwrap();
        assert!(!st.success(), "victim was killed");
        for p in procs.iter_mut() {
            send(p, "stop");
        }
        let evs = next_events(&mut procs, Duration::from_secs(30)).await;
        for ev in &evs {
            assert_eq!(ev["event"], "released", "{ev}");
        }
        for p in procs.iter_mut() {
            wait_ok(p, Duration::from_secs(10));
        }
        // The victim's node is gone (decommissioned after the crash).
        delete_node(&ds, &victim).await;

        let r = admin::check(&ipam).await.unwrap();
        let report = &r.report;
        // Everything left is explained: leaked addresses of the dead host, its affinities and
        // blocks. Nothing inconsistent (no address without its handle record, or vice versa).
        for (ip, allocs) in &report.allocations {
            for a in allocs {
                assert!(!a.in_use);
                assert_eq!(a.node.as_deref(), Some(victim.as_str()), "{ip}: {a:?}");
                assert!(a.handle.is_some());
            }
        }
        assert!(
            report.missing_handles.is_empty(),
            "{:?}",
            report.missing_handles
        );
        assert!(
            report.leaked_handles.is_empty(),
            "{:?}",
            report.leaked_handles
        );
        for o in &report.orphaned_affinities {
            assert_eq!(o.node, victim, "{o:?}");
        }
        leaked_total += report.leaked_ips().len();

        // Repair from the JSON report, as `calicoctl ipam release --from-report` does.
        let path = etcd_report_path(round);
        std::fs::write(&path, report.to_json()).unwrap();
        let parsed = admin::Report::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let s = admin::release_from_report(&ipam, &parsed).await.unwrap();
        assert_eq!(s.released_ips.len(), report.leaked_ips().len());
        let after = admin::check(&ipam).await.unwrap().report;
        assert_eq!(after.problems(), 0, "round {round}: {after:?}");
        assert!(after.allocations.is_empty());
        let hosts = ipam.kv().list(model::HOSTS_PREFIX).await.unwrap();
        let owners: BTreeSet<String> = hosts
            .kvs
            .iter()
            .filter_map(|k| model::parse_affinity_key(&k.key).map(|(h, _)| h))
            .collect();
        assert!(!owners.contains(&victim), "{owners:?}");
        let _ = std::fs::remove_file(&path);
    }
    eprintln!("repaired {leaked_total} leaked addresses over 4 kills");
}

fn etcd_report_path(round: usize) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ipam-report-{}-{round}.json", std::process::id()))
}
