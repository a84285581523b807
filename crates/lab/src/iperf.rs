//! TCP throughput between two lab hosts with iperf3 (the benchmarks' one probe): a one-shot
//! server in one host's namespace, a client in another's, the receiver's rate back.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::lab::{Host, LabError};

/// Length of one run (`iperf3 -t`): the figure docs/BENCHMARKS.md publishes.
pub const RUN_SECONDS: u32 = 5;
/// How long the client may try to connect (`--connect-timeout`, ms): a path that drops the
/// SYN fails here instead of waiting out the kernel's retries.
const CONNECT_TIMEOUT_MS: u32 = 5_000;
/// Bound on the whole client run: connect, the run, and iperf3's exchange of results.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the server's start (until it listens).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// One iperf3 TCP run of [`RUN_SECONDS`] from `client` to `dst:port`, served by a one-shot
/// `iperf3 -s -1` started in `server`'s namespace: the rate the receiver saw, in Gbit/s.
/// The server is killed on return, also on failure (its guard); every wait is bounded.
pub fn throughput(server: &Host, client: &Host, dst: IpAddr, port: u16) -> Result<f64, LabError> {
    let port_s = port.to_string();
    let mut cmd = Command::new("iperf3");
    cmd.args(["-s", "-1", "-p", &port_s]);
    let mut srv = server.spawn(cmd, &format!("iperf3-{port}"))?;
    let what = format!("iperf3 from {} to {dst}:{port}", client.name());
    wait_listening(server, &mut srv, port, &what)?;
    let argv = [
        "iperf3",
        "-c",
        &dst.to_string(),
        "-p",
        &port_s,
        "-t",
        &RUN_SECONDS.to_string(),
        "--connect-timeout",
        &CONNECT_TIMEOUT_MS.to_string(),
        "-J",
    ];
    let out = client.exec_timeout(&argv, CLIENT_TIMEOUT)?;
    let failed = |reason: String| LabError::Command {
        what: what.clone(),
        command: argv.join(" "),
        stderr: reason,
    };
    // With -J, iperf3 reports its errors in the JSON on stdout too.
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        failed(format!(
            "output is not iperf3's JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    })?;
    if !out.status.success() {
        return Err(failed(format!("{}, {}", out.status, json["error"])));
    }
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .ok_or_else(|| failed(format!("no end.sum_received.bits_per_second: {json}")))
}

/// Waits until a socket listens on `port` in `server` (`ss`), failing early if the server
/// exits (a port already taken, say).
fn wait_listening(
    server: &Host,
    srv: &mut crate::ProcessGuard,
    port: u16,
    what: &str,
) -> Result<(), LabError> {
    let filter = format!("sport = :{port}");
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    loop {
        if let Some(status) = srv.try_wait() {
            return Err(LabError::Command {
                what: what.to_owned(),
                command: format!("iperf3 -s -1 -p {port} in {}", server.name()),
                stderr: format!("server exited ({status}) before listening: {}", srv.log()),
            });
        }
        let out = server.exec_timeout(&["ss", "-Hltn", &filter], Duration::from_secs(5))?;
        if out.status.success() && !out.stdout.trim_ascii().is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                command: format!("iperf3 -s -1 -p {port} in {} (listening)", server.name()),
                timeout: LISTEN_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
