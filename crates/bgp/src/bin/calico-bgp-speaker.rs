//! Test and benchmark driver for the speaker:
//! `calico-bgp-speaker CONFIG.json [--install-routes PROTO] [--quiet-routes]`.
//!
//! Reads a [`SpeakerConfig`] as JSON, re-reads it whenever the file changes (poll every 200 ms),
//! and prints one JSON object per line on stdout: `{"route": RouteEvent}` for every best-path
//! change (unless `--quiet-routes`) and `{"status": [PeerStatus]}` once a second. With
//! `--install-routes PROTO` it also programs each best path into the kernel's main table
//! (route protocol PROTO) and prints `{"installed": N}` after each batch. Logs go to stderr
//! (`RUST_LOG`).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use calico_bgp::{RouteEvent, Speaker, SpeakerConfig};
use tokio::io::AsyncWriteExt;

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
    // Prefixes currently installed (a best-path change replaces, it does not add).
    let mut installed = std::collections::HashSet::new();
    let (speaker, mut routes) = Speaker::start();
    let mut mtime = std::fs::metadata(&path)?.modified()?;
    speaker.set_config(load(&path)?)?;
    let mut out = tokio::io::stdout();
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    let mut status_every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = routes.recv() => {
                let Some(first): Option<RouteEvent> = ev else { break };
                // Drain what is queued so a burst becomes one batch.
                let mut batch = vec![first];
                while let Ok(ev) = routes.try_recv() {
                    batch.push(ev);
                }
                let mut text = String::new();
                for ev in &batch {
                    if let (Some(nl), Some(proto)) = (&netlink, install) {
                        match ev {
                            RouteEvent::Best { prefix, next_hop, .. } => {
                                let r = calico_dataplane::Route::gateway(*prefix, *next_hop, None, proto);
                                match nl.replace_route(&r).await {
                                    Ok(()) => {
                                        installed.insert(*prefix);
                                    }
                                    Err(e) => tracing::warn!(error = %e, "route not installed"),
                                }
                            }
                            RouteEvent::Withdrawn { prefix } => {
                                let r = calico_dataplane::Route::blackhole(*prefix, proto);
                                if let Err(e) = nl.delete_route(&r).await {
                                    tracing::warn!(error = %e, "route not removed");
                                }
                                installed.remove(prefix);
                            }
                            RouteEvent::Synced => {}
                        }
                    }
                    if !quiet {
                        text.push_str(&format!("{}\n", serde_json::json!({ "route": ev })));
                    }
                }
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
