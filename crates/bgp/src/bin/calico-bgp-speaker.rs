//! Test and benchmark driver for the speaker:
//! `calico-bgp-speaker CONFIG.json [--install-routes PROTO] [--quiet-routes]`.
//!
//! Reads a [`SpeakerConfig`] as JSON, re-reads it whenever the file changes (poll every 200 ms),
//! and prints one JSON object per line on stdout: `{"route": RouteEvent}` for every best-path
//! change (unless `--quiet-routes`) and `{"status": [PeerStatus]}` once a second. With
//! `--install-routes PROTO` it also programs each best path into the kernel's main table
//! (route protocol PROTO) and prints `{"installed": N}` after each batch. Logs go to stderr
//! (`RUST_LOG`).
//!
//! Three threads: the speaker (core, sessions) runs on its own single-threaded runtime, the
//! main thread takes its route events as they come and keeps them, until the kernel has them,
//! in a compact queue ([`Pending`]), and the installer thread hands them to the kernel in
//! batches (many routes per netlink message, each acknowledged). During a bulk load the speaker produces changes much faster
//! than netlink installs them; left in the speaker's channel, 100k changes would take about
//! 5 MiB, in [`Pending`] they take 1 MiB.

use std::collections::HashSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use calico_bgp::{RouteEvent, Speaker, SpeakerConfig};
use calico_dataplane::{Route, RouteChange};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::sync::{Notify, mpsc};

/// Route changes handed to netlink per batch (one `sendmsg` each when the socket's receive
/// buffer holds that many acknowledgements).
const BATCH: usize = calico_dataplane::MAX_PER_SEND;

/// One change for the kernel: the prefix and its next hop, or `None` to remove it.
type Change = (IpNet, Option<IpAddr>);

/// An IPv4 prefix with an IPv4 next hop, or its removal: 10 bytes.
#[derive(Clone, Copy)]
struct V4Change {
    net: Ipv4Net,
    via: Option<Ipv4Addr>,
}

/// Route changes not yet given to the kernel, in arrival order.
#[derive(Default)]
struct Pending {
    /// IPv4 prefixes with IPv4 next hops (nearly every change).
    v4: Vec<V4Change>,
    /// Every other change, with the length of `v4` when it arrived: its place in the order.
    other: Vec<(usize, Change)>,
}

impl Pending {
    fn push(&mut self, ev: &RouteEvent) {
        let change = match ev {
            RouteEvent::Best {
                prefix, next_hop, ..
            } => (*prefix, Some(*next_hop)),
            RouteEvent::Withdrawn { prefix } => (*prefix, None),
            RouteEvent::Synced => return,
        };
        match change {
            (IpNet::V4(net), Some(IpAddr::V4(via))) => self.v4.push(V4Change {
                net,
                via: Some(via),
            }),
            (IpNet::V4(net), None) => self.v4.push(V4Change { net, via: None }),
            other => self.other.push((self.v4.len(), other)),
        }
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.other.is_empty()
    }

    /// The changes in the order they arrived.
    fn into_changes(self) -> impl Iterator<Item = Change> {
        let mut v4 = self.v4.into_iter().enumerate().peekable();
        let mut other = self.other.into_iter().peekable();
        std::iter::from_fn(move || {
            let next_v4 = v4.peek().map(|(i, _)| *i).unwrap_or(usize::MAX);
            match other.next_if(|(pos, _)| *pos <= next_v4) {
                Some((_, change)) => Some(change),
                None => v4
                    .next()
                    .map(|(_, c)| (IpNet::V4(c.net), c.via.map(IpAddr::V4))),
            }
        })
    }
}

/// Prefixes currently installed (a best-path change replaces, it does not add), per family so
/// that an IPv4 entry takes 5 bytes rather than `IpNet`'s 18.
#[derive(Default)]
struct Installed {
    v4: HashSet<Ipv4Net>,
    v6: HashSet<Ipv6Net>,
}

impl Installed {
    fn set(&mut self, prefix: IpNet, present: bool) {
        match (prefix, present) {
            (IpNet::V4(n), true) => {
                self.v4.insert(n);
            }
            (IpNet::V4(n), false) => {
                self.v4.remove(&n);
            }
            (IpNet::V6(n), true) => {
                self.v6.insert(n);
            }
            (IpNet::V6(n), false) => {
                self.v6.remove(&n);
            }
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// Programs one batch of changes through the kernel's batched route requests (many per
/// `sendmsg`, each acknowledged): a refused route is logged with its prefix, the rest land.
async fn install_batch(
    nl: &calico_dataplane::Netlink,
    proto: u8,
    batch: &[Change],
    installed: &mut Installed,
) {
    let changes: Vec<RouteChange> = batch
        .iter()
        .map(|(prefix, via)| match via {
            Some(via) => RouteChange::Replace(Route::gateway(*prefix, *via, None, proto)),
            None => RouteChange::Delete(Route::blackhole(*prefix, proto)),
        })
        .collect();
    let mut failures = nl
        .apply_route_changes(&changes)
        .await
        .into_iter()
        .peekable();
    for (i, (prefix, via)) in batch.iter().enumerate() {
        match (failures.next_if(|(f, _)| *f == i), via) {
            // A refused replace changed nothing: the prefix is as installed as it was.
            (Some((_, e)), Some(_)) => tracing::warn!(error = %e, "route not installed"),
            (Some((_, e)), None) => {
                tracing::warn!(error = %e, "route not removed");
                installed.set(*prefix, false);
            }
            (None, via) => installed.set(*prefix, via.is_some()),
        }
    }
}

/// The queue between the event reader and the installer.
#[derive(Default)]
struct Queue {
    pending: Mutex<Pending>,
    /// Wakes the installer when changes are queued.
    notify: Notify,
}

impl Queue {
    fn push_all(&self, events: &[RouteEvent]) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for ev in events {
            p.push(ev);
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Installs whatever is pending, batch by batch, until the queue is empty; then waits for more.
async fn installer(nl: calico_dataplane::Netlink, proto: u8, queue: Arc<Queue>) {
    let mut installed = Installed::default();
    loop {
        let taken = queue.take();
        if taken.is_empty() {
            queue.notify.notified().await;
            continue;
        }
        let mut changes = taken.into_changes();
        loop {
            let batch: Vec<Change> = changes.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                break;
            }
            install_batch(&nl, proto, &batch, &mut installed).await;
            print_line(&serde_json::json!({ "installed": installed.len() }));
        }
    }
}

/// Runs the installer on its own thread and runtime: a batch blocks its thread while the
/// kernel installs it, and meanwhile this thread must keep moving the speaker's events into
/// the compact queue (left in the speaker's channel they take five times the memory).
fn start_installer(proto: u8, queue: Arc<Queue>) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("installer".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            rt.block_on(async move {
                match calico_dataplane::Netlink::connect() {
                    Ok(nl) => {
                        let _ = tx.send(Ok(()));
                        installer(nl, proto, queue).await
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            })
        })
        .context("starting the installer thread")?;
    rx.recv()
        .context("the installer thread ended before starting")?
        .context("installer netlink")
}

fn print_line(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) is not this driver's failure.
    let _ = writeln!(out, "{v}").and_then(|()| out.flush());
}

fn load(path: &PathBuf) -> anyhow::Result<SpeakerConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Starts the speaker on its own thread and single-threaded runtime (one core loop plus I/O
/// tasks: more workers would only cost memory).
fn start_speaker() -> anyhow::Result<(Speaker, mpsc::Receiver<RouteEvent>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("speaker".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let _ = tx.send(Ok(Speaker::start()));
                std::future::pending::<()>().await
            })
        })
        .context("starting the speaker thread")?;
    rx.recv()
        .context("the speaker thread ended before starting")?
        .context("speaker runtime")
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path: PathBuf = args.first().map(Into::into).context(
        "usage: calico-bgp-speaker CONFIG.json [--install-routes PROTO] [--quiet-routes]",
    )?;
    let install: Option<u8> = match args.iter().position(|a| a == "--install-routes") {
        Some(i) => Some(
            args.get(i + 1)
                .context("--install-routes needs a protocol number")?
                .parse()?,
        ),
        None => None,
    };
    let quiet = args.iter().any(|a| a == "--quiet-routes");
    let (speaker, routes) = start_speaker()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(path, install, quiet, speaker, routes))
}

async fn run(
    path: PathBuf,
    install: Option<u8>,
    quiet: bool,
    speaker: Speaker,
    mut routes: mpsc::Receiver<RouteEvent>,
) -> anyhow::Result<()> {
    let queue = Arc::new(Queue::default());
    if let Some(proto) = install {
        start_installer(proto, queue.clone())?;
    }
    let mut mtime = std::fs::metadata(&path)?.modified()?;
    speaker.set_config(load(&path)?)?;
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    let mut status_every = tokio::time::interval(Duration::from_secs(1));
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = routes.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                if !quiet {
                    for ev in &batch {
                        print_line(&serde_json::json!({ "route": ev }));
                    }
                }
                if install.is_some() {
                    queue.push_all(&batch);
                }
                batch.clear();
            }
            _ = status_every.tick() => {
                print_line(&serde_json::json!({ "status": speaker.status() }));
            }
            _ = poll.tick() => {
                let m = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
                if m != mtime {
                    mtime = m;
                    match load(&path) {
                        Ok(cfg) => speaker.set_config(cfg)?,
                        Err(e) => tracing::warn!(error = %e, "config not reloaded"),
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(prefix: &str, via: &str) -> RouteEvent {
        RouteEvent::Best {
            prefix: prefix.parse().unwrap(),
            next_hop: via.parse().unwrap(),
            learned_from: "192.0.2.1".parse().unwrap(),
            stale: false,
        }
    }

    /// Compact and other changes come back in the order they were queued.
    #[test]
    fn pending_keeps_arrival_order() {
        let events = [
            RouteEvent::Withdrawn {
                prefix: "fd00::/64".parse().unwrap(),
            },
            best("10.0.0.0/24", "192.0.2.1"),
            best("10.0.1.0/24", "fe80::1"),
            RouteEvent::Synced,
            best("fd00::/64", "fd00::1"),
            RouteEvent::Withdrawn {
                prefix: "10.0.0.0/24".parse().unwrap(),
            },
            best("10.0.1.0/24", "192.0.2.2"),
            best("fd00:1::/64", "fd00::1"),
        ];
        let mut p = Pending::default();
        for ev in &events {
            p.push(ev);
        }
        assert_eq!(p.v4.len(), 3, "IPv4 with IPv4 next hops are compact");
        let expected: Vec<Change> = events
            .iter()
            .filter_map(|ev| match ev {
                RouteEvent::Best {
                    prefix, next_hop, ..
                } => Some((*prefix, Some(*next_hop))),
                RouteEvent::Withdrawn { prefix } => Some((*prefix, None)),
                RouteEvent::Synced => None,
            })
            .collect();
        assert_eq!(p.into_changes().collect::<Vec<_>>(), expected);
        assert_eq!(std::mem::size_of::<V4Change>(), 10);
    }
}
