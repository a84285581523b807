//! Benchmark (ignored by default; `scripts/bench-bgp.sh` runs it in release mode): time for a
//! speaker to receive N IPv4 prefixes from a GoBGP peer and install them into the kernel, ours
//! vs BIRD 2 in the same topology, plus the speaker's peak resident memory (VmHWM).
//!
//! GoBGP's RIB is loaded from an MRT TABLE_DUMP_V2 file (RFC 6396) this test writes, with
//! `gobgp mrt inject global`. Each speaker is then started fresh in the `us` namespace; the
//! clock runs from its start until `ip -4 route show proto P` counts N routes.
//!
//! `loc_rib_bytes_per_prefix` measures the Loc-RIB alone (heap bytes per IPv4 prefix from
//! glibc's `mallinfo2`), without sockets.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use calico_lab::{Host, Lab, ProcessGuard};

const US: &str = "192.168.33.11";
const PEER: &str = "192.168.33.13";
const OUR_PROTO: u8 = 201;
const BIRD_PROTO: u8 = 12;

fn mrt_record(out: &mut Vec<u8>, subtype: u16, body: &[u8]) {
    out.extend_from_slice(&0u32.to_be_bytes()); // timestamp
    out.extend_from_slice(&13u16.to_be_bytes()); // TABLE_DUMP_V2
    out.extend_from_slice(&subtype.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// N distinct /24s from 10.0.0.0 up, origin IGP, AS path 65003, next hop the GoBGP host.
fn write_mrt(path: &Path, n: u32) {
    let mut out = Vec::new();
    let peer: std::net::Ipv4Addr = PEER.parse().unwrap();
    let mut pit = Vec::new();
    pit.extend_from_slice(&peer.octets()); // collector id
    pit.extend_from_slice(&0u16.to_be_bytes()); // view name length
    pit.extend_from_slice(&1u16.to_be_bytes()); // peer count
    pit.push(0x02); // AS4, IPv4 address
    pit.extend_from_slice(&peer.octets());
    pit.extend_from_slice(&peer.octets());
    pit.extend_from_slice(&65003u32.to_be_bytes());
    mrt_record(&mut out, 1, &pit);
    // ORIGIN IGP, AS_PATH [65003] (4-octet in MRT), NEXT_HOP.
    let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 6, 2, 1];
    attrs.extend_from_slice(&65003u32.to_be_bytes());
    attrs.extend_from_slice(&[0x40, 3, 4]);
    attrs.extend_from_slice(&peer.octets());
    for i in 0..n {
        let net = 0x0a00_0000u32 + (i << 8);
        let mut rib = Vec::new();
        rib.extend_from_slice(&i.to_be_bytes());
        rib.push(24);
        rib.extend_from_slice(&net.to_be_bytes()[..3]);
        rib.extend_from_slice(&1u16.to_be_bytes());
        rib.extend_from_slice(&0u16.to_be_bytes()); // peer index
        rib.extend_from_slice(&0u32.to_be_bytes()); // originated time
        rib.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        rib.extend_from_slice(&attrs);
        mrt_record(&mut out, 2, &rib);
    }
    std::fs::File::create(path)
        .unwrap()
        .write_all(&out)
        .unwrap();
}

fn count_routes(host: &Host, proto: u8) -> usize {
    host.exec(&[
        "sh",
        "-c",
        &format!("ip -4 route show proto {proto} | wc -l"),
    ])
    .ok()
    .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    .unwrap_or(0)
}

/// Memory of a process in KiB: peak RSS (`VmHWM`), and the current RSS split into anonymous
/// memory (heap, stacks: the data) and file-backed pages (the binary and libraries).
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    peak: u64,
    anon: u64,
    file: u64,
    /// Largest `RssAnon` seen by the 100 ms polls: a lower bound of the peak private memory.
    anon_polled_peak: u64,
}

fn memory_kib(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory {
        peak: field("VmHWM:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        anon_polled_peak: 0,
    }
}

/// Starts a speaker, waits for `n` routes of `proto`; returns (seconds from start, seconds from
/// the first installed route, memory). The second figure leaves out session set-up, which
/// differs by daemon (BIRD's start delay, GoBGP's idle hold after the previous session).
fn measure(
    host: &Host,
    n: usize,
    proto: u8,
    start: impl FnOnce() -> ProcessGuard,
) -> (f64, f64, Memory) {
    let t0 = Instant::now();
    let mut guard = start();
    let deadline = t0 + Duration::from_secs(600);
    let mut first = None;
    let mut anon_polled_peak = 0;
    loop {
        let c = count_routes(host, proto);
        if let Some(pid) = guard.pid() {
            anon_polled_peak = anon_polled_peak.max(memory_kib(pid).anon);
        }
        if c > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if c >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out at {} routes\n{}",
            count_routes(host, proto),
            guard.log()
        );
        assert!(guard.is_running(), "speaker exited\n{}", guard.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = t0.elapsed().as_secs_f64();
    let from_first = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(secs);
    let mut rss = guard.pid().map(memory_kib).unwrap_or_default();
    rss.anon_polled_peak = anon_polled_peak.max(rss.anon);
    guard.kill();
    (secs, from_first, rss)
}

fn run(requested: u32) {
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let us = lab.add_host("us", &format!("{US}/24")).unwrap();
    let gob = lab.add_host("gobgp", &format!("{PEER}/24")).unwrap();
    let conf = dir.path().join("gobgpd.toml");
    std::fs::write(
        &conf,
        format!(
            "[global.config]\n  as = 65003\n  router-id = \"{PEER}\"\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{US}\"\n    peer-as = 64512\n  [neighbors.timers.config]\n    connect-retry = 1\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("gobgpd");
    cmd.arg("-f").arg(&conf).args(["-p", "-l", "warn"]);
    let _gobgpd = gob.spawn(cmd, "gobgpd").unwrap();
    let mrt = dir.path().join("rib.mrt");
    write_mrt(&mrt, requested);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = gob
            .exec(&[
                "gobgp",
                "mrt",
                "inject",
                "global",
                &mrt.display().to_string(),
            ])
            .unwrap();
        if o.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mrt inject: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // `mrt inject` returns before GoBGP has loaded everything, and GoBGP skips a few entries of
    // large dumps: wait until the destination count stops moving and use that as N.
    let mut last = 0usize;
    let n = loop {
        std::thread::sleep(Duration::from_millis(1000));
        let o = gob
            .exec(&["gobgp", "global", "rib", "summary", "-a", "ipv4"])
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let count: usize = text
            .split("Destination: ")
            .nth(1)
            .and_then(|t| t.split(',').next())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        if count > 0 && count == last {
            break count;
        }
        last = count;
        assert!(Instant::now() < deadline, "GoBGP RIB not loaded: {text}");
    };
    println!("GoBGP holds {n} of {requested} injected prefixes");

    // Ours.
    let cfg = serde_json::json!({
        "routerId": US, "localAs": 64512,
        "peers": [{"address": PEER, "remoteAs": 65003, "connectRetry": 1}],
    });
    let cfg_path = dir.path().join("speaker.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let (ours_s, ours_xfer, ours_kib) = measure(&us, n, OUR_PROTO, || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_calico-bgp-speaker"));
        cmd.arg(&cfg_path)
            .args(["--install-routes", &OUR_PROTO.to_string(), "--quiet-routes"]);
        us.spawn(cmd, "speaker").unwrap()
    });
    us.exec_ok(&["ip", "route", "flush", "proto", &OUR_PROTO.to_string()])
        .unwrap();

    // BIRD 2, same peer, installing with its kernel protocol.
    let bird_conf = dir.path().join("bird.conf");
    std::fs::write(
        &bird_conf,
        format!(
            "router id {US};\nprotocol device {{ }}\nprotocol kernel {{ ipv4 {{ export all; }}; }}\nprotocol bgp gobgp {{\n  local {US} as 64512;\n  neighbor {PEER} as 65003;\n  connect retry time 1;\n  start delay time 0;\n  ipv4 {{ import all; export none; }};\n}}\n"
        ),
    )
    .unwrap();
    let (bird_s, bird_xfer, bird_kib) = measure(&us, n, BIRD_PROTO, || {
        let mut cmd = Command::new("bird");
        cmd.arg("-c")
            .arg(&bird_conf)
            .arg("-s")
            .arg(dir.path().join("bird.ctl"))
            .arg("-f");
        us.spawn(cmd, "bird").unwrap()
    });
    println!(
        "BENCH requested={requested} n={n} ours_total_s={ours_s:.2} ours_first_to_all_s={ours_xfer:.2} ours_peak_rss_kib={} bird_total_s={bird_s:.2} bird_first_to_all_s={bird_xfer:.2} bird_peak_rss_kib={} ratio={:.2}",
        ours_kib.peak,
        bird_kib.peak,
        ours_kib.peak as f64 / bird_kib.peak.max(1) as f64
    );
    println!(
        "BENCH requested={requested} at_end_kib: ours_anon={} ours_file={} bird_anon={} bird_file={} polled_peak_anon_kib: ours={} bird={}",
        ours_kib.anon,
        ours_kib.file,
        bird_kib.anon,
        bird_kib.file,
        ours_kib.anon_polled_peak,
        bird_kib.anon_polled_peak
    );
}

#[test]
#[ignore = "benchmark: scripts/bench-bgp.sh"]
fn receive_and_install_10k() {
    run(10_000);
}

#[test]
#[ignore = "benchmark: scripts/bench-bgp.sh"]
fn receive_and_install_100k() {
    run(100_000);
}

/// Heap bytes in use (glibc).
fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    unsafe { libc::mallinfo2() }.uordblks
}

/// Loc-RIB memory per prefix: 100,000 IPv4 /24s from one peer in one attribute set (as from
/// GoBGP in the benchmark above), inserted in address order and in a shuffled order (B-tree
/// nodes fill differently).
#[test]
#[ignore = "benchmark: scripts/bench-bgp.sh"]
fn loc_rib_bytes_per_prefix() {
    use calico_bgp::rib::{LocRib, Path, PathAttrs, Source};
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    const N: u32 = 100_000;
    let peer: std::net::IpAddr = PEER.parse().unwrap();
    let mut orders = vec![("address order", (0..N).collect::<Vec<u32>>())];
    let mut shuffled: Vec<u32> = (0..N).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..shuffled.len()).rev() {
        // xorshift64: a fixed, dependency-free shuffle.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        shuffled.swap(i, (x % (i as u64 + 1)) as usize);
    }
    orders.push(("shuffled", shuffled));
    for (name, order) in orders {
        let before = heap_in_use();
        let mut rib = LocRib::default();
        for i in order {
            let attrs = Arc::new(PathAttrs::local(Some(peer)));
            let prefix = ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap();
            rib.insert(
                ipnet::IpNet::V4(prefix),
                Path {
                    source: Source::Peer(peer),
                    attrs,
                    ebgp: true,
                    peer_router_id: Ipv4Addr::new(192, 168, 33, 13),
                    from_rr_client: false,
                    stale: false,
                },
            );
        }
        let bytes = heap_in_use().saturating_sub(before);
        assert_eq!(rib.len(), N as usize);
        println!(
            "BENCH loc_rib order=\"{name}\" prefixes={N} heap_bytes={bytes} bytes_per_prefix={:.1}",
            bytes as f64 / f64::from(N)
        );
    }
}
