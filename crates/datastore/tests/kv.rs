//! The raw key-value layer against a real etcd started by the test.

mod common;

use std::time::Duration;

use calico_datastore::kv::{
    Compare, EtcdClient, KvError, RetryPolicy, TxnOutcome, WatchEvent, Write,
};
use common::Etcd;
use futures::StreamExt;

async fn client(etcd: &Etcd) -> EtcdClient {
    EtcdClient::connect(&etcd.config()).await.expect("connect")
}

/// Next event, or panic after a bounded wait.
async fn next_event(w: &mut calico_datastore::KvWatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("watch event within 20 s")
        .expect("watch stream ended")
        .expect("watch error")
}

#[tokio::test]
async fn create_get_list_update_delete_round_trip() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    let r1 = c.create("/t/a", b"1".to_vec()).await.unwrap();
    c.create("/t/b", b"2".to_vec()).await.unwrap();
    c.create("/u/c", b"other prefix".to_vec()).await.unwrap();

    let a = c.get("/t/a").await.unwrap().expect("a exists");
    assert_eq!(a.value, b"1");
    assert_eq!(a.mod_revision, r1);
    assert_eq!(a.create_revision, r1);
    assert_eq!(c.get("/t/missing").await.unwrap(), None);

    let listing = c.list("/t/").await.unwrap();
    let keys: Vec<_> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/t/a", "/t/b"]);
    assert!(listing.revision >= r1 + 2);

    let r2 = c.update("/t/a", b"1b".to_vec(), r1).await.unwrap();
    assert!(r2 > r1);
    let a = c.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (a.value.as_slice(), a.mod_revision, a.create_revision),
        (&b"1b"[..], r2, r1)
    );

    let deleted = c.delete("/t/a", Some(r2)).await.unwrap();
    assert_eq!(deleted.value, b"1b");
    assert_eq!(c.get("/t/a").await.unwrap(), None);
    let deleted = c.delete("/t/b", None).await.unwrap();
    assert_eq!(deleted.value, b"2");
    assert!(matches!(
        c.delete("/t/b", None).await,
        Err(KvError::NotFound { ref key, .. }) if key == "/t/b"
    ));
}

#[tokio::test]
async fn list_pages_through_more_keys_than_one_page_at_one_revision() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    // 1,200 keys in batches of 100 writes per transaction.
    for batch in 0..12 {
        let writes = (0..100)
            .map(|i| Write::Put {
                key: format!("/many/{:05}", batch * 100 + i),
                value: vec![b'x'; 10],
            })
            .collect();
        assert!(matches!(
            c.txn(vec![], writes).await.unwrap(),
            TxnOutcome::Committed { .. }
        ));
    }
    let listing = c.list("/many/").await.unwrap();
    assert_eq!(listing.kvs.len(), 1200);
    assert!(listing.kvs.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(listing.kvs[1199].key, "/many/01199");
}

#[tokio::test]
async fn create_of_existing_key_is_already_exists_and_changes_nothing() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    let r = c.create("/x", b"first".to_vec()).await.unwrap();
    match c.create("/x", b"second".to_vec()).await {
        Err(KvError::AlreadyExists {
            key, mod_revision, ..
        }) => {
            assert_eq!(key, "/x");
            assert_eq!(mod_revision, r);
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(c.get("/x").await.unwrap().unwrap().value, b"first");
}

#[tokio::test]
async fn stale_revision_update_is_a_conflict_naming_key_and_revisions() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    let r1 = c.create("/cas", b"v1".to_vec()).await.unwrap();
    let r2 = c.update("/cas", b"v2".to_vec(), r1).await.unwrap();
    match c.update("/cas", b"v3".to_vec(), r1).await {
        Err(e @ KvError::Conflict { .. }) => {
            let KvError::Conflict {
                ref key,
                expected,
                actual,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!((key.as_str(), expected, actual), ("/cas", r1, r2));
            let msg = e.to_string();
            assert!(
                msg.contains("/cas") && msg.contains(&r1.to_string()),
                "{msg}"
            );
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(matches!(
        c.delete("/cas", Some(r1)).await,
        Err(KvError::Conflict { expected, actual, .. }) if expected == r1 && actual == r2
    ));
    assert!(matches!(
        c.update("/nope", b"v".to_vec(), 1).await,
        Err(KvError::NotFound { .. })
    ));
    assert_eq!(c.get("/cas").await.unwrap().unwrap().value, b"v2");
}

#[tokio::test]
async fn multi_key_txn_applies_all_or_nothing() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    let block = c.create("/ipam/block", b"b0".to_vec()).await.unwrap();

    // Committed: block CAS + handle create + affinity create, one revision.
    let outcome = c
        .txn(
            vec![
                Compare::ModRevision {
                    key: "/ipam/block".into(),
                    revision: block,
                },
                Compare::Absent {
                    key: "/ipam/handle".into(),
                },
            ],
            vec![
                Write::Put {
                    key: "/ipam/block".into(),
                    value: b"b1".to_vec(),
                },
                Write::Put {
                    key: "/ipam/handle".into(),
                    value: b"h1".to_vec(),
                },
                Write::Put {
                    key: "/ipam/affinity".into(),
                    value: b"a1".to_vec(),
                },
            ],
        )
        .await
        .unwrap();
    let TxnOutcome::Committed { revision } = outcome else {
        panic!("{outcome:?}")
    };
    for key in ["/ipam/block", "/ipam/handle", "/ipam/affinity"] {
        assert_eq!(
            c.get(key).await.unwrap().unwrap().mod_revision,
            revision,
            "{key}"
        );
    }

    // Failed: the block compare is stale, so neither the block nor the new key is written.
    let outcome = c
        .txn(
            vec![
                Compare::ModRevision {
                    key: "/ipam/block".into(),
                    revision: block,
                },
                Compare::Absent {
                    key: "/ipam/other".into(),
                },
            ],
            vec![
                Write::Put {
                    key: "/ipam/block".into(),
                    value: b"b2".to_vec(),
                },
                Write::Put {
                    key: "/ipam/other".into(),
                    value: b"o".to_vec(),
                },
                Write::Delete {
                    key: "/ipam/handle".into(),
                },
            ],
        )
        .await
        .unwrap();
    match outcome {
        TxnOutcome::Failed {
            current, failed, ..
        } => {
            assert_eq!(failed, vec![0]);
            assert_eq!(current[0].0, "/ipam/block");
            assert_eq!(current[0].1.as_ref().unwrap().mod_revision, revision);
            assert_eq!(current[1], ("/ipam/other".to_string(), None));
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(c.get("/ipam/block").await.unwrap().unwrap().value, b"b1");
    assert_eq!(c.get("/ipam/other").await.unwrap(), None);
    assert!(c.get("/ipam/handle").await.unwrap().is_some());
}

#[tokio::test]
async fn txn_over_the_op_limit_is_refused_before_sending() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    let writes = (0..129)
        .map(|i| Write::Put {
            key: format!("/big/{i}"),
            value: vec![],
        })
        .collect();
    assert!(matches!(
        c.txn(vec![], writes).await,
        Err(KvError::TooManyOps {
            ops: 129,
            limit: 128,
            ..
        })
    ));
    assert!(c.list("/big/").await.unwrap().kvs.is_empty());
}

#[tokio::test]
async fn concurrent_compare_and_swap_increments_lose_no_update() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    c.create("/counter", b"0".to_vec()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            let mut conflicts = 0;
            while done < 10 {
                assert!(conflicts < 1000, "too many conflicts");
                let cur = c.get("/counter").await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                match c
                    .update(
                        "/counter",
                        (n + 1).to_string().into_bytes(),
                        cur.mod_revision,
                    )
                    .await
                {
                    Ok(_) => done += 1,
                    Err(KvError::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.get("/counter").await.unwrap().unwrap().value, b"80");
}

#[tokio::test]
async fn watch_from_a_past_revision_replays_history_then_follows() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    c.create("/w/ignored-before", b"0".to_vec()).await.unwrap();
    let r1 = c.create("/w/a", b"1".to_vec()).await.unwrap();
    let r2 = c.update("/w/a", b"2".to_vec(), r1).await.unwrap();
    c.create("/elsewhere", b"x".to_vec()).await.unwrap();

    let mut w = c.watch("/w/", r1);
    assert_eq!(
        next_event(&mut w).await,
        WatchEvent::Put(c_kv("/w/a", b"1", r1, r1))
    );
    assert_eq!(
        next_event(&mut w).await,
        WatchEvent::Put(c_kv("/w/a", b"2", r1, r2))
    );
    let r3 = c
        .delete("/w/a", None)
        .await
        .map(|_| ())
        .and(c.current_revision().await)
        .unwrap();
    match next_event(&mut w).await {
        WatchEvent::Delete {
            key,
            revision,
            prev,
        } => {
            assert_eq!((key.as_str(), revision), ("/w/a", r3));
            assert_eq!(prev.unwrap().value, b"2");
        }
        other => panic!("expected delete, got {other:?}"),
    }
}

fn c_kv(key: &str, value: &[u8], create: i64, modr: i64) -> calico_datastore::KeyValue {
    calico_datastore::KeyValue {
        key: key.into(),
        value: value.to_vec(),
        create_revision: create,
        mod_revision: modr,
    }
}

#[tokio::test]
async fn watch_resumes_after_etcd_restart_without_losing_or_repeating_events() {
    let mut etcd = Etcd::start();
    let c = client(&etcd).await;
    let mut w = c.watch("/r/", 0);
    // Make sure the watch is established before writing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.create("/r/1", b"before".to_vec()).await.unwrap();
    assert!(matches!(next_event(&mut w).await, WatchEvent::Put(kv) if kv.key == "/r/1"));

    // SIGKILL, then start again on the same data directory and port.
    etcd.kill(0);
    etcd.restart(0);
    // Changes made right after the restart, possibly before the watch reconnects, must arrive.
    etcd.etcdctl_ok(0, &["put", "/r/2", "after-restart"]);
    etcd.etcdctl_ok(0, &["put", "/r/3", "after-restart"]);
    let e2 = next_event(&mut w).await;
    let e3 = next_event(&mut w).await;
    assert!(
        matches!(&e2, WatchEvent::Put(kv) if kv.key == "/r/2"),
        "{e2:?}"
    );
    assert!(
        matches!(&e3, WatchEvent::Put(kv) if kv.key == "/r/3"),
        "{e3:?}"
    );
    // Nothing repeated: the next thing seen is the next write.
    c.create("/r/4", b"x".to_vec()).await.unwrap();
    let e4 = next_event(&mut w).await;
    assert!(
        matches!(&e4, WatchEvent::Put(kv) if kv.key == "/r/4"),
        "{e4:?}"
    );
}

#[tokio::test]
async fn watch_from_a_compacted_revision_emits_a_snapshot_then_follows() {
    let etcd = Etcd::start();
    let c = client(&etcd).await;
    let r1 = c.create("/c/a", b"1".to_vec()).await.unwrap();
    let r2 = c.create("/c/b", b"1".to_vec()).await.unwrap();
    c.delete("/c/a", None).await.unwrap();
    let now = c.current_revision().await.unwrap();
    etcd.etcdctl_ok(0, &["compact", &now.to_string()]);

    let mut w = c.watch("/c/", r1);
    match next_event(&mut w).await {
        WatchEvent::Snapshot(listing) => {
            assert_eq!(listing.revision, now);
            let keys: Vec<_> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
            assert_eq!(keys, ["/c/b"]);
            assert_eq!(listing.kvs[0].mod_revision, r2);
        }
        other => panic!("expected a snapshot after compaction, got {other:?}"),
    }
    c.create("/c/c", b"new".to_vec()).await.unwrap();
    assert!(matches!(next_event(&mut w).await, WatchEvent::Put(kv) if kv.key == "/c/c"));
}

#[tokio::test]
async fn watch_that_misses_history_during_an_outage_resyncs_with_a_snapshot() {
    let mut etcd = Etcd::start();
    // A long reconnect backoff keeps this watch away while the history is compacted.
    let policy = RetryPolicy {
        initial_backoff: Duration::from_secs(3),
        max_backoff: Duration::from_secs(3),
        ..RetryPolicy::default()
    };
    let c = EtcdClient::connect_with(&etcd.config(), policy)
        .await
        .unwrap();
    let mut w = c.list_watch("/o/");
    assert!(matches!(next_event(&mut w).await, WatchEvent::Snapshot(l) if l.kvs.is_empty()));
    c.create("/o/seen", b"1".to_vec()).await.unwrap();
    assert!(matches!(next_event(&mut w).await, WatchEvent::Put(_)));

    // While our client cannot see etcd, keys change and the history is compacted away.
    etcd.kill(0);
    etcd.restart(0);
    etcd.etcdctl_ok(0, &["put", "/o/new", "2"]);
    etcd.etcdctl_ok(0, &["del", "/o/seen"]);
    let rev: i64 = {
        let out = etcd.etcdctl_ok(0, &["put", "/other", "x", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    };
    etcd.etcdctl_ok(0, &["compact", &rev.to_string()]);

    // The consumer's view must converge to {"/o/new"} through a snapshot.
    let mut saw_snapshot = false;
    let mut view = std::collections::BTreeMap::new();
    view.insert("/o/seen".to_string(), ());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while view.keys().map(String::as_str).collect::<Vec<_>>() != ["/o/new"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "view never converged: {view:?}"
        );
        match next_event(&mut w).await {
            WatchEvent::Put(kv) => {
                view.insert(kv.key, ());
            }
            WatchEvent::Delete { key, .. } => {
                view.remove(&key);
            }
            WatchEvent::Snapshot(l) => {
                saw_snapshot = true;
                view = l.kvs.into_iter().map(|kv| (kv.key, ())).collect();
            }
        }
    }
    assert!(
        saw_snapshot,
        "the resume point was compacted: expected a snapshot"
    );
}
