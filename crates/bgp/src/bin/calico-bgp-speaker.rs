//! Test and benchmark driver for the speaker:
//! `calico-bgp-speaker CONFIG.json [--install-routes PROTO] [--quiet-routes]`.
//!
//! Reads a [`SpeakerConfig`] as JSON, re-reads it whenever the file changes (poll every 200 ms),
//! and prints one JSON object per line on stdout: `{"route": RouteEvent}` for every best-path
//! change (unless `--quiet-routes`) and `{"status": [PeerStatus]}` once a second. With
//! `--install-routes PROTO` it also programs each best path into the kernel's main table
//! (route protocol PROTO) and prints `{"installed": N}` after each batch. Logs go to stderr
//! (`RUST_LOG`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use calico_bgp::{RouteEvent, Speaker, SpeakerConfig};
use futures::StreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::io::AsyncWriteExt;

/// Route events taken from the speaker per batch. Bounded so that a burst of 100k best-path
/// changes waits in the speaker's channel, not in a second copy here.
const BATCH: usize = 512;

/// Netlink requests outstanding at once. Each answer (an ack of about 1 KiB of socket buffer)
/// waits in the socket until the connection task reads it; 64 stay well inside the default
/// 208 KiB receive buffer, so no answer is dropped with ENOBUFS.
const IN_FLIGHT: usize = 64;

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

/// Programs one batch of events. Only the last event per prefix counts (a batch may hold a
/// best path and its withdrawal), so the remaining requests touch distinct prefixes and are
/// sent [`IN_FLIGHT`] at a time: the round trips overlap instead of adding up.
async fn install_batch(
    nl: &calico_dataplane::Netlink,
    proto: u8,
    batch: &[RouteEvent],
    installed: &mut Installed,
) {
    let mut last: HashMap<IpNet, &RouteEvent> = HashMap::with_capacity(batch.len());
    for ev in batch {
        match ev {
            RouteEvent::Best { prefix, .. } | RouteEvent::Withdrawn { prefix } => {
                last.insert(*prefix, ev);
            }
            RouteEvent::Synced => {}
        }
    }
    let requests = last.into_values().map(|ev| async move {
        match ev {
            RouteEvent::Best {
                prefix, next_hop, ..
            } => {
                let r = calico_dataplane::Route::gateway(*prefix, *next_hop, None, proto);
                match nl.replace_route(&r).await {
                    Ok(()) => Some((*prefix, true)),
                    Err(e) => {
                        tracing::warn!(error = %e, "route not installed");
                        None
                    }
                }
            }
            RouteEvent::Withdrawn { prefix } => {
                let r = calico_dataplane::Route::blackhole(*prefix, proto);
                if let Err(e) = nl.delete_route(&r).await {
                    tracing::warn!(error = %e, "route not removed");
                }
                Some((*prefix, false))
            }
            RouteEvent::Synced => None,
        }
    });
    let mut done = futures::stream::iter(requests).buffer_unordered(IN_FLIGHT);
    while let Some(result) = done.next().await {
        if let Some((prefix, present)) = result {
            installed.set(prefix, present);
        }
    }
}

fn load(path: &PathBuf) -> anyhow::Result<SpeakerConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

// One thread: the speaker is one core loop plus I/O tasks; more workers only cost memory.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
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
    let netlink = match install {
        Some(_) => Some(calico_dataplane::Netlink::connect()?),
        None => None,
    };
    let mut installed = Installed::default();
    let (speaker, mut routes) = Speaker::start();
    let mut mtime = std::fs::metadata(&path)?.modified()?;
    speaker.set_config(load(&path)?)?;
    let mut out = tokio::io::stdout();
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    let mut status_every = tokio::time::interval(Duration::from_secs(1));
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = routes.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                if let (Some(nl), Some(proto)) = (&netlink, install) {
                    install_batch(nl, proto, &batch, &mut installed).await;
                }
                let mut text = String::new();
                if !quiet {
                    for ev in &batch {
                        text.push_str(&format!("{}\n", serde_json::json!({ "route": ev })));
                    }
                }
                batch.clear();
                if install.is_some() {
                    text.push_str(&format!("{}\n", serde_json::json!({ "installed": installed.len() })));
                }
                out.write_all(text.as_bytes()).await?;
                out.flush().await?;
            }
            _ = status_every.tick() => {
                let line = serde_json::json!({ "status": speaker.status() });
                out.write_all(format!("{line}\n").as_bytes()).await?;
                out.flush().await?;
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
