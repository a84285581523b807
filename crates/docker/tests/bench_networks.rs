//! Benchmark (ignored by default; `scripts/bench-docker.sh networks` runs it in release mode):
//! how soon a Calico network created on one host exists on the other, through the syncer
//! (etcd watch + dockerd events). Two lab namespaces, each with dockerd, the drivers and the
//! syncer; etcd on node1's link address.
//!
//! For each of N networks (default 100, `BENCH_NETWORKS`), one at a time: `POST
//! /networks/create` on node1, then wait for node2's dockerd to report the same network's
//! `create` event. The latency is the difference of the two `create` events' own timestamps
//! (`timeNano`, written by each dockerd on the same machine clock): from the moment the
//! network exists on node1 to the moment it exists on node2 (usable by `docker run --net`).
//! Then the same for deletions (`destroy` on node1 → `destroy` on node2). Prints p50, p99 and
//! max as `BENCH|` lines.

mod common;

use std::time::Duration;

use calico_docker::engine::{CreateIpam, CreateNetwork, DockerEngine, EventStream};
use common::*;

/// Waits for the `action` event of network `name` on a stream; returns its timestamp.
async fn event_time(events: &mut EventStream, action: &str, name: &str) -> i64 {
    let wait = async {
        loop {
            let ev = events
                .next()
                .await
                .expect("event stream open")
                .expect("event");
            if ev.kind == "network"
                && ev.action == action
                && ev.actor.attributes.get("name").map(String::as_str) == Some(name)
            {
                return ev.time_nano;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no {action} event for {name} within 20 s"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "BENCH|networks|{what}|{}|{:.1}|{:.1}|{:.1}",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or_default()
    );
}

#[test]
#[ignore = "benchmark: scripts/bench-docker.sh networks"]
fn network_created_on_one_host_exists_on_the_other() {
    let n: usize = std::env::var("BENCH_NETWORKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let ns1 = Netns::new("cdb");
    let ns2 = Netns::new("cdb");
    link(&ns1.name, "10.200.0.1/24", &ns2.name, "10.200.0.2/24");
    let (n1, n2) = (ns1.name.clone(), ns2.name.clone());
    in_netns(&ns1.name.clone(), move || async move {
        let dir = tempfile::tempdir().unwrap();
        let (etcd, _kv, h1, h2) = two_hosts_setup(dir.path(), &n1, &n2).await;
        let (e1, e2) = (DockerEngine::new(h1.sock()), DockerEngine::new(h2.sock()));
        let mut ev1 = e1.events(&["network"]).await.expect("node1 events");
        let mut ev2 = e2.events(&["network"]).await.expect("node2 events");

        let names: Vec<String> = (0..n).map(|i| format!("bench_net{i}")).collect();
        let mut created = Vec::new();
        for name in &names {
            e1.create_network(&CreateNetwork {
                name: name.clone(),
                driver: "calico".into(),
                check_duplicate: true,
                enable_ipv6: false,
                ipam: CreateIpam {
                    driver: "calico-ipam".into(),
                    config: vec![],
                    options: Default::default(),
                },
            })
            .await
            .expect("create on node1");
            let t1 = event_time(&mut ev1, "create", name).await;
            let t2 = event_time(&mut ev2, "create", name).await;
            created.push((t2 - t1) as f64 / 1e6);
        }
        let mut removed = Vec::new();
        for name in &names {
            e1.remove_network(name).await.expect("remove on node1");
            let t1 = event_time(&mut ev1, "destroy", name).await;
            let t2 = event_time(&mut ev2, "destroy", name).await;
            removed.push((t2 - t1) as f64 / 1e6);
        }
        println!("BENCH|header|change|networks|p50 (ms)|p99 (ms)|max (ms)");
        report("created on node1 → exists on node2", created);
        report("removed on node1 → gone from node2", removed);
        h2.shutdown().await;
        h1.shutdown().await;
        drop(etcd);
    });
}
