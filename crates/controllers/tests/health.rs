//! /healthz, /readyz and /metrics over real HTTP on loopback.

use std::sync::Arc;

use calico_controllers::health::{Metrics, router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        s.read_to_string(&mut out),
    )
    .await
    .expect("reply in time")
    .expect("read");
    out
}

#[tokio::test]
async fn endpoints_answer() {
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(metrics.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
    metrics.set_ready(true);
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    metrics.reconcile_started("IPPool");
    let m = get(addr, "/metrics").await;
    assert!(
        m.contains("calico_controllers_reconciles_total{kind=\"IPPool\"} 1"),
        "{m}"
    );
    assert!(m.contains("calico_controllers_leader 0"), "{m}");
    server.abort();
}
