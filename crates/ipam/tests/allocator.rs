//! The allocator and the calicoctl-ipam functions against a real etcd.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use calico_ipam::admin;
use calico_ipam::model::{self, AffinityState, AffinityValue, HandleValue};
use calico_ipam::plan::ExhaustedReason;
use calico_ipam::{AutoAssignArgs, Ipam, IpamError, IpamOptions};
use common::*;
use ipnet::IpNet;
use serde_json::json;

fn args(host: &str, v4: usize, v6: usize, handle: &str) -> AutoAssignArgs {
    AutoAssignArgs {
        num_v4: v4,
        num_v6: v6,
        handle_id: Some(handle.to_owned()),
        hostname: host.to_owned(),
        attrs: BTreeMap::from([("container".to_owned(), handle.to_owned())]),
        ..Default::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[tokio::test]
async fn claims_a_block_and_writes_calicos_etcd_layout() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "pool1", "10.50.0.0/24", 26, json!({})).await;
    create_node(&ds, "n1", json!({})).await;

    let got = ipam.auto_assign(args("n1", 2, 0, "h1")).await.unwrap();
    assert_eq!(got.v4.len(), 2);
    let block = calico_ipam::cidr::block_containing(got.v4[0], 26);
    // First two addresses of the claimed block, in order.
    assert_eq!(
        got.v4,
        vec![
            block.network(),
            calico_ipam::cidr::ordinal_to_ip(&block, 1).unwrap()
        ]
    );

    let kv = ipam.kv();
    let bkey = format!(
        "/calico/ipam/v2/assignment/ipv4/block/{}",
        block.to_string().replace('/', "-")
    );
    let raw = kv.get(&bkey).await.unwrap().expect("block key");
    let doc: serde_json::Value = serde_json::from_slice(&raw.value).unwrap();
    assert_eq!(doc["cidr"], block.to_string());
    assert_eq!(doc["affinity"], "host:n1");
    assert_eq!(doc["allocations"][0], 0);
    assert_eq!(doc["allocations"][2], serde_json::Value::Null);
    assert_eq!(doc["attributes"][0]["handle_id"], "h1");
    assert_eq!(doc["attributes"][0]["secondary"]["node"], "n1");
    assert_eq!(doc["unallocated"].as_array().unwrap().len(), 62);

    let akey = format!(
        "/calico/ipam/v2/host/n1/ipv4/block/{}",
        block.to_string().replace('/', "-")
    );
    let aff: AffinityValue =
        serde_json::from_slice(&kv.get(&akey).await.unwrap().unwrap().value).unwrap();
    assert_eq!(aff.state, AffinityState::Confirmed);
    let h: HandleValue = serde_json::from_slice(
        &kv.get("/calico/ipam/v2/handle/h1")
            .await
            .unwrap()
            .unwrap()
            .value,
    )
    .unwrap();
    assert_eq!(h.block.get(&block.to_string()), Some(&2));

    assert_eq!(ipam.ips_by_handle("h1").await.unwrap(), got.v4);
    let info = ipam
        .get_assignment_attributes(got.v4[1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.attributes.handle_id.as_deref(), Some("h1"));
    assert_eq!(info.block_affinity.as_deref(), Some("host:n1"));

    let released = ipam.release_by_handle("h1").await.unwrap();
    assert_eq!(released.len(), 2);
    assert!(kv.get("/calico/ipam/v2/handle/h1").await.unwrap().is_none());
    assert!(
        ipam.get_assignment_attributes(got.v4[0])
            .await
            .unwrap()
            .is_none()
    );
    // The next allocation reuses the block (affinity) and takes the never-used addresses first.
    let again = ipam.auto_assign(args("n1", 1, 0, "h2")).await.unwrap();
    assert_eq!(
        again.v4,
        vec![calico_ipam::cidr::ordinal_to_ip(&block, 2).unwrap()]
    );
}

#[tokio::test]
async fn ipv4_and_ipv6_in_one_call_and_all_or_nothing() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "v4", "10.51.0.0/24", 26, json!({})).await;
    create_pool(&ds, "v6", "fd00:51::/120", 122, json!({})).await;
    let got = ipam.auto_assign(args("n1", 1, 2, "c1")).await.unwrap();
    assert_eq!(got.v4.len(), 1);
    assert_eq!(got.v6.len(), 2);
    assert!(got.v6.iter().all(|a| net("fd00:51::/120").contains(a)));
    let kv = ipam.kv();
    let l = kv
        .list("/calico/ipam/v2/assignment/ipv6/block/")
        .await
        .unwrap();
    assert_eq!(l.kvs.len(), 1);
    assert!(l.kvs[0].key.ends_with("-122"));
    // Asking for more IPv6 than the pool holds fails as a whole: the IPv4 part is given back.
    let err = ipam
        .auto_assign(args("n1", 1, 300, "c2"))
        .await
        .unwrap_err();
    match &err {
        IpamError::Exhausted { pools, .. } => assert_eq!(pools, &vec!["v6".to_owned()]),
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains("v6"), "{err}");
    assert!(ipam.ips_by_handle("c2").await.unwrap().is_empty());
    let (report, _) = (admin::check(&ipam).await.unwrap().report, ());
    // Only c1's three addresses remain.
    assert_eq!(report.allocations.len(), 3);
}

#[tokio::test]
async fn reserved_addresses_are_never_handed_out_and_exhaustion_names_the_pool() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "tiny", "10.52.0.0/28", 28, json!({})).await;
    create_reservation(&ds, "res", &["10.52.0.0/30", "10.52.0.9"]).await;
    let mut seen = BTreeSet::new();
    for i in 0..11 {
        let a = ipam
            .auto_assign(args("n1", 1, 0, &format!("h{i}")))
            .await
            .unwrap();
        assert!(seen.insert(a.v4[0]));
    }
    assert!(
        seen.iter()
            .all(|a| !net("10.52.0.0/30").contains(a) && *a != ip("10.52.0.9"))
    );
    let err = ipam.auto_assign(args("n1", 1, 0, "hx")).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("tiny") && msg.contains("IPv4"), "{msg}");
}

#[tokio::test]
async fn borrows_only_when_no_block_is_free_and_strict_affinity_is_off() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "p", "10.53.0.0/27", 28, json!({})).await;
    create_node(&ds, "n1", json!({})).await;
    create_node(&ds, "n2", json!({})).await;
    let a = ipam
        .auto_assign(args("n1", 16, 0, "n1-fill"))
        .await
        .unwrap();
    let n1_block = calico_ipam::cidr::block_containing(a.v4[0], 28);
    assert!(
        a.v4.iter().all(|x| n1_block.contains(x)),
        "first 16 from one own block"
    );
    let b = ipam.auto_assign(args("n2", 1, 0, "n2-a")).await.unwrap();
    let n2_block = calico_ipam::cidr::block_containing(b.v4[0], 28);
    assert_ne!(n1_block, n2_block);
    // n1 is full, nothing is unclaimed: it borrows from n2's block.
    let c = ipam
        .auto_assign(args("n1", 1, 0, "n1-borrow"))
        .await
        .unwrap();
    assert!(n2_block.contains(&c.v4[0]));
    let borrowed = admin::borrowed(&ipam).await.unwrap();
    assert_eq!(borrowed.len(), 1);
    assert_eq!(borrowed[0].borrowing_node, "n1");
    assert_eq!(borrowed[0].block_owner, "n2");
    assert_eq!(borrowed[0].ip, c.v4[0]);

    // With strict affinity, no borrowing.
    let cfg = admin::configure(&ipam, Some(true), None).await.unwrap();
    assert!(cfg.strict_affinity);
    ipam.invalidate_settings();
    let err = ipam
        .auto_assign(args("n1", 1, 0, "n1-strict"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                reason: ExhaustedReason::StrictAffinity,
                ..
            }
        ),
        "{err}"
    );
    assert!(ipam.get_config().await.unwrap().strict_affinity);
}

#[tokio::test]
async fn max_blocks_per_host_and_node_selector_limit_claims() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(
        &ds,
        "rack-a",
        "10.54.0.0/26",
        28,
        json!({"nodeSelector": "rack == 'a'"}),
    )
    .await;
    create_node(&ds, "na", json!({"rack": "a"})).await;
    create_node(&ds, "nb", json!({"rack": "b"})).await;
    let err = ipam.auto_assign(args("nb", 1, 0, "x")).await.unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                reason: ExhaustedReason::NoPools,
                ..
            }
        ),
        "{err}"
    );
    admin::configure(&ipam, None, Some(1)).await.unwrap();
    ipam.invalidate_settings();
    ipam.auto_assign(args("na", 16, 0, "fill")).await.unwrap();
    let err = ipam
        .auto_assign(args("na", 1, 0, "more"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                reason: ExhaustedReason::MaxBlocksPerHost,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_manual_pool_serves_only_requests_that_name_it() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "auto", "10.55.0.0/26", 26, json!({})).await;
    create_pool(
        &ds,
        "manual",
        "10.56.0.0/26",
        26,
        json!({"assignmentMode": "Manual"}),
    )
    .await;
    create_node(&ds, "n1", json!({})).await;
    // Automatic choice never lands in the Manual pool, however many addresses it takes.
    let got = ipam.auto_assign(args("n1", 3, 0, "a")).await.unwrap();
    assert!(
        got.v4.iter().all(|a| net("10.55.0.0/26").contains(a)),
        "{got:?}"
    );
    // A request naming the Manual pool gets an address from it.
    let named = AutoAssignArgs {
        v4_pools: vec![net("10.56.0.0/26")],
        ..args("n1", 1, 0, "m")
    };
    let got = ipam.auto_assign(named).await.unwrap();
    assert!(net("10.56.0.0/26").contains(&got.v4[0]), "{got:?}");
    // With only the Manual pool left, an automatic request finds no pool at all.
    ds.delete::<calico_api::IPPool>(None, "auto", None)
        .await
        .unwrap();
    ipam.invalidate_settings();
    let err = ipam.auto_assign(args("n1", 1, 0, "b")).await.unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                reason: ExhaustedReason::NoPools,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn assign_ip_takes_exactly_that_address_once() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "p", "10.55.0.0/24", 26, json!({})).await;
    ipam.assign_ip(ip("10.55.0.77"), Some("fixed"), BTreeMap::new(), "n1")
        .await
        .unwrap();
    let err = ipam
        .assign_ip(ip("10.55.0.77"), Some("other"), BTreeMap::new(), "n2")
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::AlreadyAllocated { .. }), "{err}");
    let err = ipam
        .assign_ip(ip("10.99.0.1"), None, BTreeMap::new(), "n1")
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::NoPoolForIp { .. }), "{err}");
    assert_eq!(
        ipam.ips_by_handle("fixed").await.unwrap(),
        vec![ip("10.55.0.77")]
    );
    let shown = ipam
        .get_assignment_attributes(ip("10.55.0.77"))
        .await
        .unwrap()
        .expect("assigned");
    assert_eq!(shown.attributes.handle_id.as_deref(), Some("fixed"));
    assert_eq!(
        shown.attributes.secondary.get("node").map(String::as_str),
        Some("n1")
    );
    assert!(admin::release_ip(&ipam, ip("10.55.0.77")).await.unwrap());
    assert!(!admin::release_ip(&ipam, ip("10.55.0.77")).await.unwrap());
    assert!(
        ipam.get_assignment_attributes(ip("10.55.0.77"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn empty_affine_block_is_released_after_the_grace_period() {
    let etcd = Etcd::start();
    let opts = IpamOptions {
        empty_block_grace: Duration::from_millis(300),
        ..Default::default()
    };
    let ipam = Ipam::with_options(etcd.client().await, opts);
    let ds = ipam.datastore().clone();
    create_pool(&ds, "p", "10.56.0.0/24", 26, json!({})).await;
    ipam.auto_assign(args("n1", 1, 0, "h")).await.unwrap();
    ipam.release_by_handle("h").await.unwrap();
    // First look starts the clock; nothing released yet.
    assert!(ipam.release_empty_blocks("n1").await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let released = ipam.release_empty_blocks("n1").await.unwrap();
    assert_eq!(released.len(), 1);
    let kv = ipam.kv();
    assert!(kv.list(model::BLOCKS_PREFIX).await.unwrap().kvs.is_empty());
    assert!(kv.list(model::HOSTS_PREFIX).await.unwrap().kvs.is_empty());
}

#[tokio::test]
async fn deleted_node_gives_up_its_affinities_keeping_live_addresses() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "p", "10.57.0.0/24", 28, json!({})).await;
    let kept = ipam.auto_assign(args("n1", 17, 0, "h")).await.unwrap(); // two blocks
    ipam.release_ips(&kept.v4[16..]).await.unwrap(); // second block now empty
    assert_eq!(ipam.release_host_affinities("n1").await.unwrap(), 2);
    let kv = ipam.kv();
    assert!(kv.list(model::HOSTS_PREFIX).await.unwrap().kvs.is_empty());
    let blocks = kv.list(model::BLOCKS_PREFIX).await.unwrap();
    assert_eq!(
        blocks.kvs.len(),
        1,
        "the empty block is deleted, the used one stays"
    );
    let b: model::AllocationBlock = serde_json::from_slice(&blocks.kvs[0].value).unwrap();
    assert_eq!(b.affinity, None);
    assert_eq!(b.in_use(), 16);
}

#[tokio::test]
async fn check_reports_unfinished_claims_and_missing_nodes_and_release_repairs() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "p", "10.58.0.0/24", 26, json!({})).await;
    create_node(&ds, "live", json!({})).await;
    create_node(&ds, "gone", json!({})).await;
    ipam.auto_assign(args("live", 1, 0, "live-h"))
        .await
        .unwrap();
    ipam.auto_assign(args("gone", 2, 0, "gone-h"))
        .await
        .unwrap();
    // A crash between the two claim phases: a pending affinity and no block.
    let kv = ipam.kv();
    let used: BTreeSet<IpNet> = kv
        .list(model::BLOCKS_PREFIX)
        .await
        .unwrap()
        .kvs
        .iter()
        .filter_map(|k| model::parse_block_key(&k.key))
        .collect();
    let pending = (0..4)
        .map(|i| calico_ipam::cidr::nth_block(&net("10.58.0.0/24"), 26, i).unwrap())
        .find(|b| !used.contains(b))
        .unwrap();
    kv.create(
        &model::affinity_key("live", &pending),
        serde_json::to_vec(&AffinityValue::new(AffinityState::Pending)).unwrap(),
    )
    .await
    .unwrap();
    // A handle with no addresses.
    kv.create(
        &model::handle_key("empty"),
        br#"{"block":{},"deleted":false}"#.to_vec(),
    )
    .await
    .unwrap();
    delete_node(&ds, "gone").await;

    let r = admin::check(&ipam).await.unwrap();
    // All three allocations are leaked (no workload endpoint uses them).
    assert_eq!(r.report.leaked_ips().len(), 3);
    assert_eq!(r.report.leaked_handles.len(), 1);
    let reasons: BTreeSet<(String, String)> = r
        .report
        .orphaned_affinities
        .iter()
        .map(|o| (o.node.clone(), o.reason.clone()))
        .collect();
    assert!(
        reasons.contains(&(
            "live".into(),
            "pending claim never completed (no block)".into()
        )),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|(n, _)| n == "gone"), "{reasons:?}");
    assert!(r.nodes_known);
    assert_eq!(r.leaked.len(), 3);

    let json = r.report.to_json();
    let report = admin::Report::from_json(&json).unwrap();
    let s = admin::release_from_report(&ipam, &report).await.unwrap();
    assert_eq!(s.released_ips.len(), 3);
    assert!(s.skipped_ips.is_empty());
    let after = admin::check(&ipam).await.unwrap().report;
    assert_eq!(after.problems(), 0, "{after:?}");
    assert!(after.allocations.is_empty());
    assert!(kv.list(model::HANDLES_PREFIX).await.unwrap().kvs.is_empty());
    // The live node keeps its (now empty) confirmed block; the gone node has nothing left.
    let hosts = kv.list(model::HOSTS_PREFIX).await.unwrap();
    assert!(
        hosts
            .kvs
            .iter()
            .all(|k| k.key.starts_with("/calico/ipam/v2/host/live/"))
    );
}

#[tokio::test]
async fn usage_and_split() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "p", "10.59.0.0/24", 26, json!({})).await;
    ipam.auto_assign(args("n1", 3, 0, "h")).await.unwrap();
    let usage = admin::utilization(&ipam).await.unwrap();
    assert_eq!(usage.len(), 1);
    let (pool, blocks) = &usage[0];
    assert_eq!(
        (pool.cidr, pool.total, pool.in_use),
        (net("10.59.0.0/24"), 256, 3)
    );
    assert_eq!(blocks.len(), 1);
    assert!(pool.cidr.contains(&blocks[0].cidr), "{blocks:?}");
    assert_eq!((blocks[0].total, blocks[0].in_use), (64, 3));
    let created = admin::split(&ipam, Some("p"), None, 2).await.unwrap();
    assert_eq!(
        created,
        vec![
            ("split-p-0".to_owned(), net("10.59.0.0/25")),
            ("split-p-1".to_owned(), net("10.59.0.128/25"))
        ]
    );
    let pools = ipam.load_pools().await.unwrap();
    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["split-p-0", "split-p-1"]);
    // Existing allocations stay valid and visible under the new pools.
    assert_eq!(ipam.ips_by_handle("h").await.unwrap().len(), 3);
}

#[tokio::test]
async fn an_allocation_from_a_cached_block_is_one_etcd_round_trip() {
    let etcd = Etcd::start();
    let opts = IpamOptions {
        settings_ttl: Duration::from_secs(600),
        ..Default::default()
    };
    let ipam = Ipam::with_options(etcd.client().await, opts);
    let ds = ipam.datastore().clone();
    create_pool(&ds, "p", "10.60.0.0/24", 26, json!({})).await;
    create_node(&ds, "n1", json!({})).await;
    // Warm-up: reads settings and the host's affinities, claims a block.
    ipam.auto_assign(args("n1", 1, 0, "warm")).await.unwrap();
    let rpcs = |m| etcd_rpc_count(&etcd.url, m);
    let (txn0, range0, put0, del0) = (rpcs("Txn"), rpcs("Range"), rpcs("Put"), rpcs("DeleteRange"));
    for i in 0..20 {
        ipam.auto_assign(args("n1", 1, 0, &format!("c{i}")))
            .await
            .unwrap();
    }
    assert_eq!(rpcs("Txn") - txn0, 20, "one transaction per allocation");
    assert_eq!(rpcs("Range") - range0, 0, "no reads");
    assert_eq!(
        rpcs("Put") + rpcs("DeleteRange") - put0 - del0,
        0,
        "no other writes"
    );
}

#[tokio::test]
async fn releases_keep_the_block_cache_current() {
    let etcd = Etcd::start();
    let opts = IpamOptions {
        settings_ttl: Duration::from_secs(600),
        ..Default::default()
    };
    let ipam = Ipam::with_options(etcd.client().await, opts);
    let ds = ipam.datastore().clone();
    create_pool(&ds, "p", "10.61.0.0/24", 26, json!({})).await;
    ipam.auto_assign(args("n1", 1, 0, "warm")).await.unwrap();
    let txn0 = etcd_rpc_count(&etcd.url, "Txn");
    let range0 = etcd_rpc_count(&etcd.url, "Range");
    for i in 0..10 {
        let got = ipam
            .auto_assign(args("n1", 1, 0, &format!("c{i}")))
            .await
            .unwrap();
        ipam.release_ips(&got.v4).await.unwrap();
    }
    // Each allocation is still one Txn after the release before it (no re-read of the host's
    // affinities); a release is one read of the block (Range), one read of its handles (a
    // read-only Txn) and one Txn.
    assert_eq!(etcd_rpc_count(&etcd.url, "Txn") - txn0, 10 + 10 * 2);
    assert_eq!(etcd_rpc_count(&etcd.url, "Range") - range0, 10);
}

#[tokio::test]
async fn a_large_request_spanning_many_blocks_is_not_cut_short_by_the_retry_budget() {
    let etcd = Etcd::start();
    let opts = IpamOptions {
        max_attempts: 5,
        ..Default::default()
    };
    let ipam = Ipam::with_options(etcd.client().await, opts);
    let ds = ipam.datastore().clone();
    create_pool(&ds, "p", "10.62.0.0/22", 29, json!({})).await;
    // 400 addresses = 50 blocks of 8: far more steps than 5 attempts.
    let got = ipam.auto_assign(args("n1", 400, 0, "big")).await.unwrap();
    let unique: BTreeSet<IpAddr> = got.v4.iter().copied().collect();
    assert_eq!(unique.len(), 400);
    assert_eq!(ipam.ips_by_handle("big").await.unwrap().len(), 400);
}

#[tokio::test]
async fn check_without_any_node_resources_does_not_condemn_every_block() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "p", "10.63.0.0/24", 26, json!({})).await;
    ipam.auto_assign(args("unregistered", 1, 0, "h"))
        .await
        .unwrap();
    let r = admin::check(&ipam).await.unwrap();
    assert!(
        r.report.orphaned_affinities.is_empty(),
        "{:?}",
        r.report.orphaned_affinities
    );
    assert!(!r.nodes_known);
}

/// The IPAM settings are the `default` IPAMConfiguration, whoever writes it: an object applied
/// as calicoctl (or the controllers' mirror of `kubectl apply`) does is what auto_assign obeys,
/// and `calicoctl ipam configure` changes that same object (its other fields and labels kept).
#[tokio::test]
async fn the_ipamconfiguration_resource_is_the_one_source_of_settings() {
    let etcd = Etcd::start();
    let ipam = etcd.ipam().await;
    let ds = ipam.datastore().clone();
    create_pool(&ds, "p", "10.57.0.0/24", 26, json!({})).await;
    create_node(&ds, "n1", json!({})).await;

    let mut applied = calico_api::IPAMConfiguration::new(
        "default",
        calico_api::IPAMConfigurationSpec {
            auto_allocate_blocks: false,
            strict_affinity: true,
            ..Default::default()
        },
    );
    applied.metadata.labels = Some([("owner".to_string(), "ops".to_string())].into());
    ds.create(&applied).await.unwrap();
    ipam.invalidate_settings();
    let err = ipam.auto_assign(args("n1", 1, 0, "h1")).await.unwrap_err();
    assert!(
        matches!(err, IpamError::Exhausted { .. }),
        "no block may be claimed with autoAllocateBlocks false: {err}"
    );
    assert!(
        !ipam.get_config().await.unwrap().auto_allocate_blocks,
        "the settings calicoctl ipam show --show-configuration prints come from the resource"
    );

    // `calicoctl ipam configure` edits the same object.
    admin::configure(&ipam, Some(false), Some(3)).await.unwrap();
    let stored: calico_api::IPAMConfiguration = ds.get(None, "default").await.unwrap().unwrap();
    assert!(!stored.spec.strict_affinity);
    assert_eq!(stored.spec.max_blocks_per_host, Some(3));
    assert!(!stored.spec.auto_allocate_blocks, "untouched field kept");
    assert_eq!(stored.metadata.labels, applied.metadata.labels);

    // Block allocation back on (as kubectl apply would change it): the host gets a block.
    let mut on = stored.clone();
    on.spec.auto_allocate_blocks = true;
    ds.update(&on).await.unwrap();
    ipam.invalidate_settings();
    let got = ipam.auto_assign(args("n1", 1, 0, "h2")).await.unwrap();
    assert_eq!(got.v4.len(), 1);
    assert_eq!(
        ipam.kv()
            .get("/calico/ipam/v2/config")
            .await
            .unwrap()
            .map(|kv| kv.key),
        None,
        "nothing is written to Calico's etcd-mode key"
    );
}
