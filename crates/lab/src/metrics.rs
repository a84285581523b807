//! Reading a Prometheus `/metrics` endpoint from a test: etcd's own request counters (the
//! proof that the agent makes no list request per change) and calico-node's gauges.
//!
//! Blocking on purpose: called from the thread a lab host's `run` puts in its namespace, where
//! the endpoint listens.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The `/metrics` text of `addr` (`host:port`, or an endpoint like `http://host:port/`).
pub fn scrape(addr: &str) -> std::io::Result<String> {
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// The value of the first series named `name` (no labels) in `/metrics` text.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The range (read) requests etcd has served, from its `/metrics` text:
/// (`etcd_debugging_mvcc_range_total`, gRPC `Range` calls handled, all codes). `None` when
/// the text lacks the mvcc counter (not etcd's metrics).
pub fn etcd_range_counts(text: &str) -> Option<(u64, u64)> {
    let mut mvcc = None;
    let mut grpc = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        if name == "etcd_debugging_mvcc_range_total" {
            mvcc = Some(value);
        }
        if name.starts_with("grpc_server_handled_total") && name.contains("grpc_method=\"Range\"") {
            grpc += value;
        }
    }
    Some((mvcc?, grpc))
}

/// [`etcd_range_counts`] of the etcd at `endpoint`; panics naming what is missing (tests only).
pub fn etcd_ranges(endpoint: &str) -> (u64, u64) {
    let text = scrape(endpoint).unwrap_or_else(|e| panic!("etcd /metrics at {endpoint}: {e}"));
    etcd_range_counts(&text)
        .unwrap_or_else(|| panic!("no etcd_debugging_mvcc_range_total at {endpoint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_counts_add_up_the_grpc_range_codes_beside_the_mvcc_counter() {
        let text = "# HELP etcd_debugging_mvcc_range_total Total number of ranges seen.\n\
            etcd_debugging_mvcc_range_total 7\n\
            grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 3\n\
            grpc_server_handled_total{grpc_code=\"NotFound\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 2\n\
            grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 9\n";
        assert_eq!(etcd_range_counts(text), Some((7, 5)));
        assert_eq!(etcd_range_counts("process_open_fds 12\n"), None);
    }

    #[test]
    fn gauge_reads_an_unlabelled_series_only() {
        let text = "# TYPE calico_model_revision gauge\ncalico_model_revision 42\ncalico_model_revision_x 1\n";
        assert_eq!(gauge(text, "calico_model_revision"), Some(42.0));
        assert_eq!(gauge(text, "felix_cluster_num_hosts"), None);
    }
}
