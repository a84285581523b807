//! `calicoctl ipam ...` against a real etcd, with addresses allocated through calico-ipam.

mod common;

use calico_datastore::{EtcdClient, EtcdConfig};
use calico_ipam::{AutoAssignArgs, Ipam};
use common::{Ctl, Etcd, write};

const POOL: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 192.168.0.0/16
  natOutgoing: true
";

async fn ipam(etcd: &Etcd) -> Ipam {
    let kv = EtcdClient::connect(&EtcdConfig::new([etcd.endpoint.clone()]))
        .await
        .expect("connect to etcd");
    Ipam::new(kv)
}

#[tokio::test]
async fn ipam_show_check_release_and_configure() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "pool.yaml", POOL);
    ctl.run(&["apply", "-f", &f]).await.ok();

    let assigned = ipam(&etcd)
        .await
        .auto_assign(AutoAssignArgs {
            num_v4: 1,
            hostname: "node1".into(),
            handle_id: Some("libnetwork.bbox1".into()),
            ..Default::default()
        })
        .await
        .expect("allocate an address for bbox1");
    let ip = assigned.v4[0].to_string();

    let out = ctl.run(&["ipam", "show"]).await;
    let text = &out.ok().stdout;
    assert!(text.contains("IP Pool"), "{text}");
    assert!(text.contains("192.168.0.0/16"), "{text}");
    assert!(text.contains("65536"), "{text}");

    let out = ctl.run(&["ipam", "show", "--ip", &ip]).await;
    assert!(out.ok().stdout.contains(&ip), "{out:?}");

    let out = ctl.run(&["ipam", "show", "--show-blocks"]).await;
    assert!(out.ok().stdout.contains("Block"), "{out:?}");

    let report = etcd.dir.path().join("report.json").display().to_string();
    let out = ctl.run(&["ipam", "check", "-o", &report]).await;
    assert!(
        out.ok()
            .stdout
            .starts_with("Checking IPAM for inconsistencies..."),
        "{out:?}"
    );
    assert!(std::path::Path::new(&report).is_file());

    let out = ctl.run(&["ipam", "release", "--ip", &ip]).await;
    assert_eq!(
        out.ok().stdout,
        format!("Successfully released IP address {ip}\n")
    );
    let out = ctl.run(&["ipam", "release", "--ip", &ip]).await;
    assert_eq!(
        out.ok().stdout,
        format!("IP address {ip} is not assigned\n")
    );
    let out = ctl.run(&["ipam", "release"]).await;
    assert_eq!(
        out.failed().stderr,
        "specify --ip=<IP> or --from-report=<FILE>\n"
    );

    let out = ctl
        .run(&["ipam", "configure", "--strictaffinity=true"])
        .await;
    assert_eq!(
        out.ok().stdout,
        "Successfully set StrictAffinity to: true\n"
    );
    let out = ctl.run(&["ipam", "show", "--show-configuration"]).await;
    let text = &out.ok().stdout;
    assert!(text.contains("StrictAffinity"), "{text}");
    assert!(text.contains("true"), "{text}");
}

#[tokio::test]
async fn ipam_split_replaces_a_pool_with_smaller_ones() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "pool.yaml", POOL);
    ctl.run(&["apply", "-f", &f]).await.ok();
    let out = ctl
        .run(&["ipam", "split", "2", "--name", "default-ipv4-ippool"])
        .await;
    assert!(
        out.ok()
            .stdout
            .ends_with("Successfully split the IP pool into 2 IP pools\n"),
        "{out:?}"
    );
    let out = ctl
        .run(&["get", "ippools", "-o", "custom-columns=CIDR"])
        .await;
    assert_eq!(
        out.ok().stdout,
        "CIDR               \n192.168.0.0/17     \n192.168.128.0/17   \n\n"
    );
}

/// The text `calicoctl ipam` prints is Calico's, byte for byte where Calico's is fixed: the
/// views live in calicoctl (crates/ctl) and read calico-ipam's data from a real etcd.
#[tokio::test]
async fn ipam_views_print_calicos_tables_from_real_etcd() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let pool = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: p
spec:
  cidr: 10.59.0.0/24
  blockSize: 26
";
    let f = write(etcd.dir.path(), "pool.yaml", pool);
    ctl.run(&["apply", "-f", &f]).await.ok();
    let ipam = ipam(&etcd).await;
    ipam.auto_assign(AutoAssignArgs {
        num_v4: 3,
        hostname: "n1".into(),
        handle_id: Some("h".into()),
        ..Default::default()
    })
    .await
    .expect("allocate three addresses");

    let out = ctl.run(&["ipam", "show", "--show-blocks"]).await;
    let text = &out.ok().stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "+----------+--------------+-----------+------------+-----------+",
            "| GROUPING |     CIDR     | IPS TOTAL | IPS IN USE | IPS FREE  |",
            "+----------+--------------+-----------+------------+-----------+",
            "| IP Pool  | 10.59.0.0/24 |       256 | 3 (1%)     | 253 (99%) |",
        ],
        "{text}"
    );
    assert!(lines[4].starts_with("| Block    | 10.59.0."), "{text}");
    assert!(
        lines[4].ends_with("|        64 | 3 (5%)     | 61 (95%)  |"),
        "{text}"
    );
    assert_eq!(lines.len(), 6, "{text}");

    let ip = ipam.ips_by_handle("h").await.expect("handle")[0].to_string();
    let out = ctl.run(&["ipam", "show", "--ip", &ip]).await;
    let text = &out.ok().stdout;
    assert!(
        text.starts_with(&format!("IP {ip} is in use\nHandle ID: h\n")),
        "{text}"
    );
    assert!(text.contains("  node: n1\n"), "{text}");

    let out = ctl.run(&["ipam", "show", "--show-borrowed"]).await;
    assert_eq!(
        out.ok().stdout,
        "\
+----+----------------+-------+-------------+------+--------------+
| IP | BORROWING-NODE | BLOCK | BLOCK OWNER | TYPE | ALLOCATED-TO |
+----+----------------+-------+-------------+------+--------------+
+----+----------------+-------+-------------+------+--------------+
"
    );

    ctl.run(&["ipam", "configure", "--strictaffinity=true"])
        .await
        .ok();
    let out = ctl.run(&["ipam", "show", "--show-configuration"]).await;
    assert_eq!(
        out.ok().stdout,
        "\
+--------------------+-------+
|      PROPERTY      | VALUE |
+--------------------+-------+
| StrictAffinity     | true  |
| AutoAllocateBlocks | true  |
| MaxBlocksPerHost   | 0     |
+--------------------+-------+
"
    );

    // No Node resources and no workload endpoints: the three addresses are leaked.
    let out = ctl.run(&["ipam", "check", "--show-problem-ips"]).await;
    let text = &out.ok().stdout;
    assert!(
        text.starts_with(
            "Checking IPAM for inconsistencies...\n\n\
             No Node resources found: not checking for blocks of deleted nodes.\n\
             Found 1 IPAM blocks.\n"
        ),
        "{text}"
    );
    assert_eq!(
        text.matches(" leaked; handle h node n1\n").count(),
        3,
        "{text}"
    );
    assert!(
        text.contains(
            "IPAM blocks record 3 allocations.\n\n\
             Found 0 workload IPs and node tunnel IPs in use.\n\
             Found 3 IPs that are allocated in IPAM but not actually in use.\n\
             Found 0 handles with no matching IPs (and 1 handles with matches).\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("Check complete; found 3 problems.\n"),
        "{text}"
    );
}
