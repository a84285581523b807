//! The `ip`-command plumbing against the real kernel, in a per-run namespace: a failed setup
//! leaves neither the veth nor a route behind.

mod common;

use calico_docker::plumbing::{EndpointPlumber, IpCommandPlumber};
use common::*;

#[test]
fn failed_setup_leaves_nothing_and_success_is_complete() {
    let ns = Netns::new("cdp");
    in_netns(&ns.name.clone(), || async {
        // New interfaces get IPv6 disabled, so the /128 route of the second address fails
        // after the veth, sysctls, link-up and the IPv4 route were done.
        std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1").unwrap();
        let p = IpCommandPlumber;
        let err = p
            .create(
                "calitest00001",
                "temptest00001",
                &["10.1.1.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("fd00::1/128"), "{err}");
        let links = sh(&["ip", "-o", "link"]).await.stdout;
        assert!(
            !links.contains("calitest00001") && !links.contains("temptest00001"),
            "{links}"
        );
        assert!(!sh(&["ip", "route"]).await.stdout.contains("10.1.1.1"));

        // The same endpoint then succeeds completely.
        p.create(
            "calitest00001",
            "temptest00001",
            &["10.1.1.1".parse().unwrap()],
        )
        .await
        .unwrap();
        let routes = sh(&["ip", "route"]).await.stdout;
        assert!(
            routes.lines().any(
                |l| l.trim() == "10.1.1.1 dev calitest00001 scope link linkdown"
                    || l.trim() == "10.1.1.1 dev calitest00001 scope link"
            ),
            "{routes}"
        );
        let proxy =
            std::fs::read_to_string("/proc/sys/net/ipv4/conf/calitest00001/proxy_arp").unwrap();
        assert_eq!(proxy.trim(), "1");
        let delay =
            std::fs::read_to_string("/proc/sys/net/ipv4/neigh/calitest00001/proxy_delay").unwrap();
        assert_eq!(delay.trim(), "0");
        // Removal takes the route with it, and removing twice is fine.
        p.remove("calitest00001").await.unwrap();
        p.remove("calitest00001").await.unwrap();
        assert!(!sh(&["ip", "route"]).await.stdout.contains("10.1.1.1"));
    });
}
