//! Test and benchmark driver for the speaker: `calico-bgp-speaker CONFIG.json`.
//!
//! Reads a [`SpeakerConfig`] as JSON, re-reads it whenever the file changes (poll every 200 ms),
//! and prints one JSON object per line on stdout: `{"route": RouteEvent}` for every best-path
//! change and `{"status": [PeerStatus]}` once a second. Logs go to stderr (`RUST_LOG`).

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(Into::into)
        .context("usage: calico-bgp-speaker CONFIG.json")?;
    let (speaker, mut routes) = Speaker::start();
    let mut mtime = std::fs::metadata(&path)?.modified()?;
    speaker.set_config(load(&path)?)?;
    let mut out = tokio::io::stdout();
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    let mut status_every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = routes.recv() => {
                let Some(ev): Option<RouteEvent> = ev else { break };
                let line = serde_json::json!({ "route": ev });
                out.write_all(format!("{line}\n").as_bytes()).await?;
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
