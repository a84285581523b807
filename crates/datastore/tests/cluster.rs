//! A three-member etcd cluster that loses a member (its leader) while clients read, write and
//! watch through all three endpoints.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use calico_datastore::kv::{EtcdClient, WatchEvent};
use common::{Etcd, Options};
use futures::StreamExt;

/// Index of the member that is currently leader, from `etcdctl endpoint status`.
fn leader(etcd: &Etcd) -> usize {
    for i in 0..etcd.members() {
        let out = etcd.etcdctl(i, &["endpoint", "status", "-w", "json"]);
        if !out.status.success() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let status = &v[0]["Status"];
        if status["leader"] == status["header"]["member_id"] {
            return i;
        }
    }
    panic!("no leader found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_keep_reading_writing_and_watching_when_the_leader_dies_and_catch_up_after_it_returns()
 {
    let mut etcd = Etcd::start_with(Options {
        members: 3,
        ..Default::default()
    });
    let kv = EtcdClient::connect(&etcd.config()).await.unwrap();
    let start = kv.create("/cl/start", b"0".to_vec()).await.unwrap();
    let mut watch = kv.watch("/cl/", start + 1);
    // The member to kill is the current leader. A second watch talks to it alone: it must
    // resume and catch up once that member is back.
    let victim = leader(&etcd);
    let mut victim_only = etcd.config();
    victim_only.endpoints = vec![etcd.endpoints()[victim].clone()];
    let victim_kv = EtcdClient::connect(&victim_only).await.unwrap();
    let mut victim_watch = victim_kv.watch("/cl/", start + 1);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let kv = kv.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut written = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && i < 10_000 {
                let key = format!("/cl/k{i:05}");
                // Every write must succeed within the client's retry budget.
                kv.create(&key, i.to_string().into_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("write {key} failed: {e}"));
                written.push(key);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            written
        })
    };
    let reader = {
        let kv = kv.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) && reads < 10_000 {
                kv.get("/cl/start")
                    .await
                    .unwrap_or_else(|e| panic!("read failed: {e}"))
                    .expect("start key present");
                reads += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reads
        })
    };

    tokio::time::sleep(Duration::from_millis(800)).await;
    etcd.kill(victim);
    let killed_at = Instant::now();
    // Keep going on two members for a while.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    let reads = reader.await.expect("reader");
    assert!(reads > 50, "only {reads} reads");
    assert!(written.len() > 50, "only {} writes", written.len());

    // Writes acknowledged after the kill exist on the surviving members.
    let listing = kv.list("/cl/k").await.unwrap();
    let stored: BTreeSet<_> = listing.kvs.iter().map(|kv| kv.key.clone()).collect();
    let acked: BTreeSet<_> = written.iter().cloned().collect();
    assert_eq!(stored, acked);

    // The watch saw every write exactly once, in order, across the loss of the leader.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < written.len() {
        assert!(
            Instant::now() < deadline,
            "watch saw {} of {}",
            seen.len(),
            written.len()
        );
        match tokio::time::timeout(Duration::from_secs(20), watch.next()).await {
            Ok(Some(Ok(WatchEvent::Put(kv)))) => seen.push(kv.key),
            other => panic!("unexpected watch item {other:?}"),
        }
    }
    assert_eq!(seen, written);

    // The killed member comes back; the watch that only knew it resumes and catches up.
    etcd.restart(victim);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < written.len() {
        assert!(
            Instant::now() < deadline,
            "victim watch saw {} of {}",
            seen.len(),
            written.len()
        );
        match tokio::time::timeout(Duration::from_secs(30), victim_watch.next()).await {
            Ok(Some(Ok(WatchEvent::Put(kv)))) => seen.push(kv.key),
            other => panic!("unexpected item on the victim's watch {other:?}"),
        }
    }
    assert_eq!(seen, written);
    eprintln!(
        "killed member {victim} (the leader when the test began); {} writes and {reads} reads in total, {:?} after the kill",
        written.len(),
        killed_at.elapsed()
    );
}
