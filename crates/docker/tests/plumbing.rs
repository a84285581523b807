//! Endpoint plumbing (calico-dataplane's workload recipe) against the real kernel, in a per-run
//! namespace: a failed setup leaves neither the veth nor a route behind, and a successful one
//! has the route, proxy ARP and no-delay proxy.

mod common;

use calico_docker::plumbing::{DataplanePlumber, EndpointPlumber};
use common::*;

async fn check<P: EndpointPlumber>(p: &P, host_if: &str, temp_if: &str, ip: &str) {
    // New interfaces get IPv6 disabled, so the /128 route of the second address fails after
    // the veth, the sysctls, the link-up and the IPv4 route were done.
    let err = p
        .create(
            host_if,
            temp_if,
            &[ip.parse().unwrap(), "fd00::1".parse().unwrap()],
        )
        .await;
    assert!(
        err.is_err(),
        "IPv6 route on an IPv6-disabled link must fail"
    );
    let links = sh(&["ip", "-o", "link"]).await.stdout;
    assert!(
        !links.contains(host_if) && !links.contains(temp_if),
        "{links}"
    );
    assert!(!sh(&["ip", "route"]).await.stdout.contains(ip));

    // The same endpoint then succeeds completely.
    p.create(host_if, temp_if, &[ip.parse().unwrap()])
        .await
        .unwrap();
    let routes = sh(&["ip", "route"]).await.stdout;
    let want = format!("{ip} dev {host_if} scope link");
    assert!(
        routes.lines().any(|l| l.trim().starts_with(&want)),
        "want {want:?} in\n{routes}"
    );
    let proxy =
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{host_if}/proxy_arp")).unwrap();
    assert_eq!(proxy.trim(), "1");
    let delay =
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/neigh/{host_if}/proxy_delay")).unwrap();
    assert_eq!(delay.trim(), "0");
    assert!(
        sh(&["ip", "-o", "link", "show", temp_if]).await.ok,
        "temp end stays here for dockerd"
    );
    // Removal takes the route with it, and removing twice is fine.
    p.remove(host_if).await.unwrap();
    p.remove(host_if).await.unwrap();
    assert!(!sh(&["ip", "route"]).await.stdout.contains(ip));
}

#[test]
fn failed_setup_leaves_nothing_and_success_is_complete() {
    let ns = Netns::new("cdp");
    in_netns(&ns.name.clone(), || async {
        std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1").unwrap();
        check(
            &DataplanePlumber::new(),
            "calitest00002",
            "temptest00002",
            "10.1.1.2",
        )
        .await;
    });
}
