//! `ipam-stress`: one OS process acting as one host, with several concurrent tasks allocating
//! and releasing addresses through the etcd-backed allocator. Spawned by crates/ipam/tests and
//! scripts/bench-ipam.sh.
//!
//! Protocol (stdout, one JSON object per line; stdin, one command per line):
//! - `--mode fill`: churn (`--churn` allocate/release rounds per task), print
//!   `{"event":"churned"}` and wait for `fill` on stdin, then allocate until the pool is
//!   exhausted, print `{"event":"full","held":[[ip,handle]...],...}` and wait for
//!   `release` on stdin; then release everything (half by handle, half by address), print
//!   `{"event":"released",...}` and exit.
//! - `--mode churn`: allocate/release continuously until `stop` on stdin (or `--seconds`),
//!   then release everything and print `{"event":"released",...}`. Used for SIGKILL tests.
//! - `--mode bench`: each task allocates `--churn` single addresses (distinct handles) as
//!   fast as it can; prints `{"event":"bench","allocations":n,"seconds":s}`. `--floor` instead
//!   times one etcd compare-and-swap transaction of the same shape (block + handle keys).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use calico_datastore::{Compare, EtcdClient, EtcdConfig, TxnOutcome, Write};
use calico_ipam::{AutoAssignArgs, Ipam, IpamError};
use clap::Parser;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Mutex;

#[derive(Parser, Debug, Clone)]
struct Args {
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    #[arg(long)]
    host: String,
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    #[arg(long, default_value_t = 50)]
    churn: usize,
    #[arg(long, default_value = "fill")]
    mode: String,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// With --mode bench: time raw CAS transactions instead of allocations.
    #[arg(long)]
    floor: bool,
    /// Create IPPool `bench-pool` with this CIDR (block size /26) unless it exists.
    #[arg(long)]
    setup_pool: Option<String>,
}

fn emit(v: serde_json::Value) {
    println!("{v}");
}

struct Shared {
    ipam: Ipam,
    held: Mutex<Vec<(IpAddr, String)>>,
    exhausted: AtomicU64,
    /// Exhaustion during churn, when the pool is never full: must stay zero.
    churn_exhausted: AtomicU64,
    exhaustion_message: Mutex<Option<String>>,
    allocations: AtomicU64,
    releases: AtomicU64,
    seq: AtomicU64,
}

impl Shared {
    fn handle(&self, host: &str, task: usize) -> String {
        format!(
            "{host}.t{task}.{}",
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn alloc(&self, host: &str, task: usize) -> anyhow::Result<bool> {
        let handle = self.handle(host, task);
        let args = AutoAssignArgs {
            num_v4: 1,
            handle_id: Some(handle.clone()),
            hostname: host.to_owned(),
            attrs: BTreeMap::from([("container".to_owned(), handle.clone())]),
            ..Default::default()
        };
        match self.ipam.auto_assign(args).await {
            Ok(a) => {
                anyhow::ensure!(a.v4.len() == 1, "asked for 1 address, got {:?}", a.v4);
                self.allocations.fetch_add(1, Ordering::Relaxed);
                self.held.lock().await.push((a.v4[0], handle));
                Ok(true)
            }
            Err(e @ IpamError::Exhausted { .. }) => {
                self.exhausted.fetch_add(1, Ordering::Relaxed);
                let mut m = self.exhaustion_message.lock().await;
                if m.is_none() {
                    *m = Some(e.to_string());
                }
                Ok(false)
            }
            Err(e) => Err(e).context("auto_assign"),
        }
    }

    async fn release_one(&self, pick: usize, by_handle: bool) -> anyhow::Result<()> {
        let item = {
            let mut h = self.held.lock().await;
            if h.is_empty() {
                return Ok(());
            }
            let i = pick % h.len();
            h.swap_remove(i)
        };
        if by_handle {
            let ips = self.ipam.release_by_handle(&item.1).await?;
            anyhow::ensure!(
                ips == vec![item.0],
                "handle {} released {ips:?}, held {}",
                item.1,
                item.0
            );
        } else {
            let not = self.ipam.release_ips(&[item.0]).await?;
            anyhow::ensure!(not.is_empty(), "{} was not allocated when released", item.0);
        }
        self.releases.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn release_all(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        loop {
            let len = self.held.lock().await.len();
            if len == 0 {
                return Ok(n);
            }
            self.release_one(0, n % 2 == 0).await?;
            n += 1;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let kv = EtcdClient::connect(&EtcdConfig::new(args.endpoints.clone()))
        .await
        .context("connect to etcd")?;
    if let Some(cidr) = &args.setup_pool {
        let ds = calico_datastore::Datastore::from_etcd(kv.clone());
        if ds
            .get::<calico_api::IPPool>(None, "bench-pool")
            .await?
            .is_none()
        {
            let pool: calico_api::IPPool = serde_json::from_value(serde_json::json!({
                "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                "metadata": {"name": "bench-pool"},
                "spec": {"cidr": cidr, "blockSize": 26}
            }))?;
            ds.create(&pool).await?;
        }
        return Ok(());
    }
    if args.mode == "bench" && args.floor {
        return floor(kv, &args).await;
    }
    let shared = Arc::new(Shared {
        ipam: Ipam::new(kv),
        held: Mutex::new(Vec::new()),
        exhausted: AtomicU64::new(0),
        churn_exhausted: AtomicU64::new(0),
        exhaustion_message: Mutex::new(None),
        allocations: AtomicU64::new(0),
        releases: AtomicU64::new(0),
        seq: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.tasks {
        let s = shared.clone();
        let a = args.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            // Churn: bounded by count (fill/bench) or by stop/deadline (churn mode).
            loop {
                let done = match a.mode.as_str() {
                    "churn" => stop.load(Ordering::Relaxed) || Instant::now() > deadline,
                    _ => i >= a.churn,
                };
                if done {
                    break;
                }
                i += 1;
                // Benchmark allocators are separate hosts (as CNI plugins on separate nodes).
                let host = if a.mode == "bench" {
                    format!("{}-{t}", a.host)
                } else {
                    a.host.clone()
                };
                if !s.alloc(&host, t).await? {
                    s.churn_exhausted.fetch_add(1, Ordering::Relaxed);
                }
                // Keep at most 12 addresses per task during churn so that the pool runs out
                // only in the fill phase.
                let over = s.held.lock().await.len() > a.tasks * 12;
                if a.mode != "bench" && (over || rand::random::<bool>()) {
                    s.release_one(rand::random::<u32>() as usize, rand::random())
                        .await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    if args.mode == "churn" {
        let stop2 = stop.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if l.trim() == "stop" {
                    stop2.store(true, Ordering::Relaxed);
                    break;
                }
            }
        });
    }
    for t in tasks {
        t.await.context("task panicked")??;
    }
    let mut stdin_lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    if args.mode == "fill" {
        // Barrier: every host finishes churning before any starts filling, so exhaustion
        // during churn would be a real error.
        emit(serde_json::json!({"event": "churned", "host": args.host}));
        while let Some(l) = stdin_lines.next_line().await? {
            if l.trim() == "fill" {
                break;
            }
        }
        let mut fills = Vec::new();
        for t in 0..args.tasks {
            let s = shared.clone();
            let host = args.host.clone();
            fills.push(tokio::spawn(async move {
                // Until exhausted, bounded by the largest pool a test uses.
                for _ in 0..100_000 {
                    if !s.alloc(&host, t).await? {
                        break;
                    }
                }
                anyhow::Ok(())
            }));
        }
        for f in fills {
            f.await.context("fill task panicked")??;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    match args.mode.as_str() {
        "bench" => {
            emit(serde_json::json!({
                "event": "bench", "host": args.host,
                "allocations": shared.allocations.load(Ordering::Relaxed),
                "seconds": elapsed,
            }));
            return Ok(());
        }
        "fill" => {
            let held = shared.held.lock().await.clone();
            emit(serde_json::json!({
                "event": "full", "host": args.host,
                "held": held.iter().map(|(ip, h)| (ip.to_string(), h.clone())).collect::<Vec<_>>(),
                "allocations": shared.allocations.load(Ordering::Relaxed),
                "releases": shared.releases.load(Ordering::Relaxed),
                "exhausted": shared.exhausted.load(Ordering::Relaxed),
                "churn_exhausted": shared.churn_exhausted.load(Ordering::Relaxed),
                "exhaustion_message": shared.exhaustion_message.lock().await.clone(),
            }));
            // Wait for the test's go-ahead (EOF also releases, so a dying test cleans up).
            while let Some(l) = stdin_lines.next_line().await? {
                if l.trim() == "release" {
                    break;
                }
            }
        }
        _ => {}
    }
    let n = shared.release_all().await?;
    emit(serde_json::json!({
        "event": "released", "host": args.host, "released_at_end": n,
        "allocations": shared.allocations.load(Ordering::Relaxed),
        "releases": shared.releases.load(Ordering::Relaxed),
        "exhausted": shared.exhausted.load(Ordering::Relaxed),
    }));
    Ok(())
}

/// The floor: the same etcd completes `tasks` concurrent streams of one CAS transaction each
/// of the allocation's shape (compare a block's mod revision and a handle's absence; put a
/// block-sized value and a handle), every task on its own key as each allocator has its own
/// block.
async fn floor(kv: EtcdClient, args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.tasks {
        let kv = kv.clone();
        let host = args.host.clone();
        let n = args.churn;
        tasks.push(tokio::spawn(async move {
            let key = format!("/calico-rs-bench/{host}/{t}/block");
            // A realistic value: a /26 block document.
            let block = calico_ipam::model::AllocationBlock::new(
                "10.0.0.0/26".parse().expect("literal CIDR"),
                Some(&host),
                false,
            );
            let value = serde_json::to_vec(&block)?;
            let mut rev = kv.put(&key, value.clone()).await?;
            for i in 0..n {
                let hkey = format!("/calico-rs-bench/{host}/{t}/handle/{i}");
                let out = kv
                    .txn(
                        vec![
                            Compare::ModRevision {
                                key: key.clone(),
                                revision: rev,
                            },
                            Compare::Absent { key: hkey.clone() },
                        ],
                        vec![
                            Write::Put {
                                key: key.clone(),
                                value: value.clone(),
                            },
                            Write::Put {
                                key: hkey,
                                value: b"{\"block\":{\"10.0.0.0/26\":1}}".to_vec(),
                            },
                        ],
                    )
                    .await?;
                match out {
                    TxnOutcome::Committed { revision } => rev = revision,
                    TxnOutcome::Failed { .. } => {
                        anyhow::bail!("floor txn conflicted on its own key")
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    emit(serde_json::json!({
        "event": "bench", "host": args.host, "floor": true,
        "allocations": (args.tasks * args.churn) as u64,
        "seconds": started.elapsed().as_secs_f64(),
    }));
    Ok(())
}
