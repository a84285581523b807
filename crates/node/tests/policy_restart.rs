//! A SIGKILLed agent never opens a gap in policy: the table it left keeps enforcing until
//! the restarted agent, with its view of the datastore complete, replaces it in one
//! transaction.
//!
//! Every workload's profile allows all, so without the table every flow below would pass: a
//! denied packet getting through would show a gap. A GlobalNetworkPolicy on the server denies
//! the `bad` client (explicit Deny rule) and allows the `ok` client. While the agent is
//! SIGKILLed and restarted, probes run every 10 ms: pings from both clients, and from each a
//! new TCP connection per probe (a new connection is judged by the policy chains every time,
//! while a ping flow's later echo requests are conntrack-established). The denied flows must
//! get nothing through; the allowed flows must lose nothing. See `policy_support`.

mod policy_support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use policy_support::{
    PolicyLab, WAIT, Workload, eventually, namespace_profile, pings, tcp_connects, wait_for,
};

/// A new TCP connection from `from` to `to:port` every 10 ms until `stop`, each given
/// `timeout` to connect and read the server's byte: (attempts, connected, answered). A
/// connection that completes its handshake got its SYN through the policy; on a local veth
/// the SYN-ACK takes microseconds, so 100 ms is ample for a denied flow's probes.
fn tcp_prober(
    from: &Workload,
    to: &Workload,
    port: u16,
    timeout: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, u32, u32)> {
    let (from_ns, to_ip) = (from.ns.clone(), to.ip);
    std::thread::spawn(move || {
        from_ns
            .run(move || {
                let (mut tries, mut connected, mut answered) = (0u32, 0u32, 0u32);
                let dst = std::net::SocketAddr::new(to_ip, port);
                let deadline = Instant::now() + Duration::from_secs(40);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    tries += 1;
                    if let Ok(mut s) = std::net::TcpStream::connect_timeout(&dst, timeout) {
                        connected += 1;
                        let _ = s.set_read_timeout(Some(timeout));
                        let mut b = [0u8; 1];
                        if matches!(std::io::Read::read(&mut s, &mut b), Ok(1)) {
                            answered += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                (tries, connected, answered)
            })
            .expect("prober in the workload's namespace")
    })
}

/// `ping -i 0.01 -c N` from `from` to `to` in its own thread: the summary line.
fn ping_flow(from: &Workload, to: &Workload, count: u32) -> std::thread::JoinHandle<String> {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        from.ns.netns(),
        "ping",
        "-n",
        "-q",
        "-i",
        "0.01",
        "-W",
        "1",
        "-c",
        &count.to_string(),
        &to.ip.to_string(),
    ]);
    std::thread::spawn(move || {
        let out = calico_lab::lab::output_bounded(cmd, Duration::from_secs(40)).expect("ping");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or("no summary")
            .to_string()
    })
}

fn received(summary: &str) -> Option<(u32, u32)> {
    let mut words = summary.split(", ");
    let sent = words.next()?.split_whitespace().next()?.parse().ok()?;
    let got = words.next()?.split_whitespace().next()?.parse().ok()?;
    Some((sent, got))
}

#[test]
fn sigkilled_agent_restarts_without_a_gap_in_policy() {
    let mut lab = PolicyLab::new();
    lab.apply_yaml(&[
        namespace_profile("ops", &[]),
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: srv-ingress\n\
         spec:\n  selector: app == 'srv'\n  types: [Ingress]\n  ingress:\n  \
         - action: Deny\n    source:\n      selector: role == 'bad'\n  \
         - action: Allow\n    source:\n      selector: role == 'ok'\n"
            .to_string(),
    ]);
    let first_log = lab.start_agent();
    let srv = lab.add_workload("srv", "ops", "srv", "10.65.0.20", &[("app", "srv")]);
    let good = lab.add_workload("good", "ops", "good", "10.65.0.21", &[("role", "ok")]);
    let bad = lab.add_workload("bad", "ops", "bad", "10.65.0.22", &[("role", "bad")]);
    lab.serve_tcp(&srv, 8080);
    eventually("the allowed client reaches the server", &lab, || {
        pings(&good, &srv) && tcp_connects(&good, &srv, 8080)
    });
    // The denied client's own egress is open (its profile): it is the server's ingress
    // policy that stops it.
    assert!(pings(&bad, &good), "bad -> good is open (no policy)");
    assert!(!pings(&bad, &srv), "bad -> srv denied before the restart");
    assert!(!tcp_connects(&bad, &srv, 8080), "bad -> srv:8080 denied");
    assert!(
        std::fs::read_to_string(&first_log)
            .unwrap_or_default()
            .contains("policy applied"),
        "the first agent applied the policy"
    );

    // 1000 echo requests per client, one every 10 ms (~16 s as ping paces them here),
    // spanning the kill, the time without an agent, the restart and its first apply.
    let good_pings = ping_flow(&good, &srv, 1000);
    let bad_pings = ping_flow(&bad, &srv, 1000);
    let stop = Arc::new(AtomicBool::new(false));
    let good_tcp = tcp_prober(&good, &srv, 8080, Duration::from_secs(1), stop.clone());
    let bad_tcp = tcp_prober(&bad, &srv, 8080, Duration::from_millis(100), stop.clone());

    std::thread::sleep(Duration::from_secs(2));
    let pid = lab.agent.as_ref().and_then(|a| a.pid()).expect("agent pid");
    // SAFETY: kill(2) on the agent this test started; no memory is touched.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    if let Some(mut old) = lab.agent.take() {
        old.kill(); // reaps it
    }
    let killed_at = Instant::now();
    // The table outlives its agent.
    let listing = lab
        .node
        .exec_ok(&["nft", "list", "table", "inet", "calico-rs"])
        .expect("the table is still there after SIGKILL");
    assert!(listing.contains("pol:i:srv-ingress"), "{listing}");
    // Stay down a while, so that the flows run against an agent-less node.
    std::thread::sleep(Duration::from_secs(2));
    let second_log = lab.start_agent();
    let reapplied = wait_for(WAIT, || {
        std::fs::read_to_string(&second_log)
            .ok()
            .filter(|l| l.contains("policy applied"))
    });
    assert!(
        reapplied.is_some(),
        "the restarted agent did not apply policy:\n{}",
        lab.agent_log()
    );
    eprintln!(
        "agent back and policy re-applied {:?} after SIGKILL",
        killed_at.elapsed()
    );

    let good_summary = good_pings.join().expect("good ping thread");
    let bad_summary = bad_pings.join().expect("bad ping thread");
    stop.store(true, Ordering::SeqCst);
    let (good_tries, _, good_ok) = good_tcp.join().expect("good prober");
    let (bad_tries, bad_ok, _) = bad_tcp.join().expect("bad prober");
    eprintln!("allowed ping: {good_summary}; denied ping: {bad_summary}");
    eprintln!("allowed tcp: {good_ok}/{good_tries}; denied tcp: {bad_ok}/{bad_tries}");

    assert_eq!(
        received(&good_summary),
        Some((1000, 1000)),
        "the allowed ping flow lost packets across the restart: {good_summary}"
    );
    assert_eq!(
        received(&bad_summary),
        Some((1000, 0)),
        "a denied echo request got through during the restart: {bad_summary}"
    );
    assert!(
        good_tries > 100 && bad_tries > 50,
        "probes ran {good_tries} and {bad_tries} times"
    );
    assert_eq!(
        good_ok, good_tries,
        "allowed TCP connections failed during the restart"
    );
    assert_eq!(
        bad_ok, 0,
        "denied TCP handshakes completed during the restart"
    );
    // And the restarted agent enforces the same.
    assert!(!pings(&bad, &srv) && pings(&good, &srv));
}
