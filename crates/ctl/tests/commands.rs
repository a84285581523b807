//! calicoctl commands against a real etcd started by each test.

mod common;

use common::{Ctl, Etcd, run_raw, write};

const POOL_A: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 10.10.0.0/16
  natOutgoing: true
";

const TWO_POOLS: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 10.10.0.0/16
  natOutgoing: true
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-b
spec:
  cidr: 10.20.0.0/16
  ipipMode: CrossSubnet
";

#[tokio::test]
async fn apply_writes_calico_keys_and_reports_like_calicoctl() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "pools.yaml", TWO_POOLS);
    let out = ctl.run(&["apply", "-f", &f]).await;
    out.ok();
    assert_eq!(out.stdout, "Successfully applied 2 'IPPool' resource(s)\n");
    let keys: Vec<String> = etcd.dump().await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "/calico/resources/v3/projectcalico.org/ippools/pool-a",
            "/calico/resources/v3/projectcalico.org/ippools/pool-b"
        ]
    );
    let (_, value) = &etcd.dump().await[0];
    let stored: serde_json::Value = serde_json::from_str(value).unwrap();
    assert_eq!(stored["spec"]["cidr"], "10.10.0.0/16");
    assert!(stored["metadata"]["uid"].is_string());
    assert!(stored["metadata"].get("resourceVersion").is_none());
}

#[tokio::test]
async fn apply_twice_is_idempotent_and_keeps_the_revision() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "pools.yaml", TWO_POOLS);
    ctl.run(&["apply", "-f", &f]).await.ok();
    let before = etcd.dump().await;
    let rev = etcd.revision().await;
    let out = ctl.run(&["apply", "-f", &f]).await;
    out.ok();
    assert_eq!(out.stdout, "Successfully applied 2 'IPPool' resource(s)\n");
    assert_eq!(etcd.dump().await, before);
    assert_eq!(etcd.revision().await, rev);
}

#[tokio::test]
async fn create_of_existing_fails_unless_skip_exists_and_writes_nothing() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let one = write(etcd.dir.path(), "a.yaml", POOL_A);
    let two = write(etcd.dir.path(), "two.yaml", TWO_POOLS);
    ctl.run(&["create", "-f", &one]).await.ok();
    assert_eq!(
        ctl.run(&["create", "-f", &one]).await.failed().stderr,
        "Failed to create 'IPPool' resource: [resource already exists: IPPool(pool-a)]\n"
    );
    // pool-b is new but pool-a exists: all or nothing, so pool-b is not created either.
    ctl.run(&["create", "-f", &two]).await.failed();
    assert_eq!(etcd.dump().await.len(), 1);
    let out = ctl.run(&["create", "-f", &two, "--skip-exists"]).await;
    out.ok();
    assert_eq!(out.stdout, "Successfully created 2 'IPPool' resource(s)\n");
    assert_eq!(etcd.dump().await.len(), 2);
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_is_a_conflict_and_changes_nothing() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "a.yaml", POOL_A);
    ctl.run(&["create", "-f", &f]).await.ok();
    let old = ctl.run(&["get", "ippool", "pool-a", "-o", "yaml"]).await;
    old.ok();
    let old_yaml = write(etcd.dir.path(), "old.yaml", &old.stdout);
    // Someone else changes the pool.
    ctl.run(&[
        "patch",
        "ippool",
        "pool-a",
        "-p",
        r#"{"spec":{"natOutgoing":false}}"#,
    ])
    .await
    .ok();
    let after_patch = etcd.dump().await;
    let out = ctl.run(&["replace", "-f", &old_yaml]).await;
    out.failed();
    assert!(
        out.stderr.starts_with("Failed to replace 'IPPool' resource: [update conflict: IPPool(pool-a): resource version '"),
        "{out:?}"
    );
    assert_eq!(etcd.dump().await, after_patch);
    // The same document without a resourceVersion replaces unconditionally.
    let f2 = write(etcd.dir.path(), "a2.yaml", POOL_A);
    let out = ctl.run(&["replace", "-f", &f2]).await;
    out.ok();
    assert_eq!(out.stdout, "Successfully replaced 1 'IPPool' resource(s)\n");
}

#[tokio::test]
async fn replace_of_a_missing_resource_fails() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "a.yaml", POOL_A);
    let out = ctl.run(&["replace", "-f", &f]).await;
    out.failed();
    assert_eq!(
        out.stderr,
        "Failed to replace 'IPPool' resource: [resource does not exist: IPPool(pool-a)]\n"
    );
    assert!(etcd.dump().await.is_empty());
}

#[tokio::test]
async fn a_file_with_one_invalid_document_writes_nothing_and_names_every_problem() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let text = format!(
        "{TWO_POOLS}---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: Pool_C\nspec:\n  cidr: 10.30.0.0/16\n  vxlanMode: Sometimes\n"
    );
    let f = write(etcd.dir.path(), "pools.yaml", &text);
    let out = ctl.run(&["apply", "-f", &f]).await;
    out.failed();
    assert!(out.stderr.contains("nothing was written"), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{f}: document 3 (IPPool \"Pool_C\"): metadata.name: "
        )),
        "{out:?}"
    );
    assert!(etcd.dump().await.is_empty());
}

#[tokio::test]
async fn overlapping_pool_is_refused_against_the_datastore() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "a.yaml", POOL_A);
    ctl.run(&["apply", "-f", &f]).await.ok();
    let overlapping = POOL_A
        .replace("pool-a", "pool-x")
        .replace("10.10.0.0/16", "10.10.128.0/24");
    let g = write(etcd.dir.path(), "x.yaml", &overlapping);
    let before = etcd.dump().await;
    let out = ctl.run(&["apply", "-f", &g]).await;
    out.failed();
    assert!(
        out.stderr.contains(&format!(
            "{g}: document 1 (IPPool \"pool-x\"): spec.cidr: IPPool(pool-x) CIDR 10.10.128.0/24 overlaps with IPPool(pool-a) CIDR 10.10.0.0/16"
        )),
        "{out:?}"
    );
    assert_eq!(etcd.dump().await, before);
}

#[tokio::test]
async fn changing_the_cidr_of_an_existing_pool_is_refused() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "a.yaml", POOL_A);
    ctl.run(&["apply", "-f", &f]).await.ok();
    let out = ctl
        .run(&[
            "patch",
            "ippool",
            "pool-a",
            "-p",
            r#"{"spec":{"cidr":"10.99.0.0/16"}}"#,
        ])
        .await;
    out.failed();
    assert!(
        out.stderr.contains("spec.cidr: cannot change the CIDR"),
        "{out:?}"
    );
}

#[tokio::test]
async fn list_documents_and_directories_apply_every_item_in_order() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let dir = etcd.dir.path().join("manifests");
    write(
        &dir,
        "01-list.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: IPPool\n  metadata: {name: l1}\n  spec: {cidr: 10.1.0.0/16}\n- apiVersion: projectcalico.org/v3\n  kind: IPPool\n  metadata: {name: l2}\n  spec: {cidr: 10.2.0.0/16}\n",
    );
    write(
        &dir,
        "02-peer.json",
        r#"{"apiVersion":"projectcalico.org/v3","kind":"BGPPeer","metadata":{"name":"rr"},"spec":{"peerIP":"192.168.33.12","asNumber":64512}}"#,
    );
    write(&dir, "ignored.txt", "not a manifest");
    let out = ctl.run(&["create", "-f", &dir.display().to_string()]).await;
    out.ok();
    assert_eq!(out.stdout, "Successfully created 3 resource(s)\n");
    assert_eq!(etcd.dump().await.len(), 3);
}

#[tokio::test]
async fn stdin_is_read_with_dash() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let out = ctl.run_stdin(&["create", "-f", "-"], POOL_A).await;
    out.ok();
    assert_eq!(etcd.dump().await.len(), 1);
}

#[tokio::test]
async fn delete_by_name_and_by_file_with_skip_not_exists() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "two.yaml", TWO_POOLS);
    ctl.run(&["apply", "-f", &f]).await.ok();
    let out = ctl.run(&["delete", "ippool", "pool-a"]).await;
    out.ok();
    assert_eq!(out.stdout, "Successfully deleted 1 'IPPool' resource(s)\n");
    // pool-a is gone: deleting both fails as a whole and keeps pool-b.
    let out = ctl.run(&["delete", "-f", &f]).await;
    out.failed();
    assert_eq!(
        out.stderr,
        "Failed to delete 'IPPool' resource: resource does not exist: IPPool(pool-a)\n"
    );
    assert_eq!(etcd.dump().await.len(), 1);
    let out = ctl.run(&["delete", "-f", &f, "--skip-not-exists"]).await;
    out.ok();
    assert_eq!(out.stdout, "Successfully deleted 2 'IPPool' resource(s)\n");
    assert!(etcd.dump().await.is_empty());
}

#[tokio::test]
async fn label_sets_refuses_overwrite_without_flag_overwrites_and_removes() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "a.yaml", POOL_A);
    ctl.run(&["apply", "-f", &f]).await.ok();
    let out = ctl.run(&["label", "ippools", "pool-a", "zone=west"]).await;
    out.ok();
    assert_eq!(
        out.stdout,
        "Successfully set label zone on ippools pool-a\n"
    );
    let out = ctl.run(&["label", "ippools", "pool-a", "zone=east"]).await;
    out.failed();
    assert_eq!(
        out.stderr,
        "failed to update label of ippools pool-a, key zone is already present. please use '--overwrite' to set a new value.\n"
    );
    let out = ctl
        .run(&["label", "ippools", "pool-a", "zone=east", "--overwrite"])
        .await;
    assert_eq!(
        out.ok().stdout,
        "Successfully updated label zone on ippools pool-a\n"
    );
    let stored: serde_json::Value = serde_json::from_str(&etcd.dump().await[0].1).unwrap();
    assert_eq!(stored["metadata"]["labels"]["zone"], "east");
    let out = ctl
        .run(&["label", "ippools", "pool-a", "zone", "--remove"])
        .await;
    assert_eq!(
        out.ok().stdout,
        "Successfully removed label zone from ippools pool-a\n"
    );
    let stored: serde_json::Value = serde_json::from_str(&etcd.dump().await[0].1).unwrap();
    assert!(
        stored["metadata"]["labels"].get("zone").is_none(),
        "{stored}"
    );
    let out = ctl
        .run(&["label", "ippools", "pool-a", "zone", "--remove"])
        .await;
    assert_eq!(
        out.failed().stderr,
        "cannot remove label of ippools pool-a, key zone does not exist\n"
    );
}

#[tokio::test]
async fn patch_merges_json_and_validates_the_result() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "a.yaml", POOL_A);
    ctl.run(&["apply", "-f", &f]).await.ok();
    let out = ctl
        .run(&[
            "patch",
            "ippool",
            "pool-a",
            "-p",
            r#"{"spec":{"disabled":true,"natOutgoing":null}}"#,
        ])
        .await;
    assert_eq!(
        out.ok().stdout,
        "Successfully patched 1 'IPPool' resource\n"
    );
    let stored: serde_json::Value = serde_json::from_str(&etcd.dump().await[0].1).unwrap();
    assert_eq!(stored["spec"]["disabled"], true);
    assert!(stored["spec"].get("natOutgoing").is_none());
    let before = etcd.dump().await;
    let out = ctl
        .run(&[
            "patch",
            "ippool",
            "pool-a",
            "-p",
            r#"{"spec":{"ipipMode":"Sometimes"}}"#,
        ])
        .await;
    out.failed();
    assert!(out.stderr.contains("spec.ipipMode"), "{out:?}");
    assert_eq!(etcd.dump().await, before);
    let out = ctl.run(&["patch", "ippool", "nope", "-p", "{}"]).await;
    assert_eq!(
        out.failed().stderr,
        "Failed to patch 'IPPool' resource: resource does not exist: IPPool(nope)\n"
    );
}

#[tokio::test]
async fn namespaced_resources_use_default_namespace_flag_and_all_namespaces() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let np = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: allow-web\nspec:\n  tier: default\n  selector: app == 'web'\n  order: 100\n";
    let f = write(etcd.dir.path(), "np.yaml", np);
    ctl.run(&["apply", "-f", &f]).await.ok();
    ctl.run(&["apply", "-f", &f, "-n", "prod"]).await.ok();
    let keys: Vec<String> = etcd.dump().await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "/calico/resources/v3/projectcalico.org/networkpolicies/default/allow-web",
            "/calico/resources/v3/projectcalico.org/networkpolicies/prod/allow-web"
        ]
    );
    let out = ctl.run(&["get", "networkpolicy"]).await;
    assert_eq!(
        out.ok().stdout,
        "NAME        TIER      \nallow-web   default   \n\n"
    );
    let out = ctl.run(&["get", "networkpolicy", "-A", "-o", "wide"]).await;
    assert_eq!(
        out.ok().stdout,
        "NAMESPACE   NAME        TIER      ORDER   SELECTOR       \ndefault     allow-web   default   100     app == 'web'   \nprod        allow-web   default   100     app == 'web'   \n\n"
    );
    let out = ctl.run(&["get", "ippool", "-n", "prod"]).await;
    assert_eq!(out.failed().stderr, "IPPool is not namespaced\n");
    let out = ctl.run(&["get", "networkpolicy", "-A", "-n", "prod"]).await;
    assert_eq!(
        out.failed().stderr,
        "cannot use both --namespace and --all-namespaces flags at the same time\n"
    );
}

#[tokio::test]
async fn get_tables_match_calico_layouts() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "two.yaml", TWO_POOLS);
    ctl.run(&["apply", "-f", &f]).await.ok();
    let ps = ctl.run(&["get", "ippools"]).await;
    assert_eq!(
        ps.ok().stdout,
        "NAME     CIDR           SELECTOR   \npool-a   10.10.0.0/16   all()      \npool-b   10.20.0.0/16   all()      \n\n"
    );
    let wide = ctl.run(&["get", "ipp", "-o", "wide"]).await;
    assert_eq!(
        wide.ok().stdout,
        "NAME     CIDR           NAT     IPIPMODE      VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR   \n\
         pool-a   10.10.0.0/16   true    Never         Never       false      false              all()      \n\
         pool-b   10.20.0.0/16   false   CrossSubnet   Never       false      false              all()      \n\n"
    );
    let custom = ctl
        .run(&["get", "pools", "-o", "custom-columns=NAME,NAT"])
        .await;
    assert_eq!(
        custom.ok().stdout,
        "NAME     NAT     \npool-a   true    \npool-b   false   \n\n"
    );
    let bad = ctl
        .run(&["get", "pools", "-o", "custom-columns=NAME,COLOUR"])
        .await;
    assert!(
        bad.failed()
            .stderr
            .starts_with("Unknown heading COLOUR, valid values are: NAME, CIDR")
    );
    let bad = ctl.run(&["get", "pools", "-o", "toml"]).await;
    assert_eq!(bad.failed().stderr, "unrecognized output format 'toml'\n");
    let missing = ctl.run(&["get", "ippool", "pool-a", "nope"]).await;
    missing.failed();
    assert_eq!(
        missing.stdout,
        "NAME     CIDR           SELECTOR   \npool-a   10.10.0.0/16   all()      \n\n"
    );
    assert_eq!(missing.stderr, "resource does not exist: IPPool(nope)\n");
    let unknown = ctl.run(&["get", "pods"]).await;
    assert_eq!(
        unknown.failed().stderr,
        "resource type 'pods' is not supported\n"
    );
}

#[tokio::test]
async fn get_yaml_prints_one_object_or_a_list_and_round_trips_through_apply() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "two.yaml", TWO_POOLS);
    ctl.run(&["apply", "-f", &f]).await.ok();
    let one = ctl.run(&["get", "ippool", "pool-a", "-o", "yaml"]).await;
    let v: serde_json::Value = serde_yaml_ng::from_str(&one.ok().stdout).unwrap();
    assert_eq!(v["kind"], "IPPool");
    assert!(v["metadata"]["resourceVersion"].is_string());
    let list = ctl.run(&["get", "ippools", "-o", "yaml"]).await;
    let v: serde_json::Value = serde_yaml_ng::from_str(&list.ok().stdout).unwrap();
    assert_eq!(v["kind"], "IPPoolList");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2));
    let several = ctl
        .run(&["get", "ippool", "pool-a", "pool-b", "-o", "json"])
        .await;
    let v: serde_json::Value = serde_json::from_str(&several.ok().stdout).unwrap();
    assert_eq!(v["kind"], "IPPoolList");
    // What get prints, apply takes back unchanged.
    let back = write(etcd.dir.path(), "back.yaml", &list.stdout);
    let before = etcd.dump().await;
    ctl.run(&["apply", "-f", &back]).await.ok();
    assert_eq!(etcd.dump().await, before);
    let exported = ctl
        .run(&["get", "ippool", "pool-a", "-o", "yaml", "--export"])
        .await;
    assert!(!exported.ok().stdout.contains("resourceVersion"));
}

#[tokio::test]
async fn config_file_wins_over_environment_and_environment_is_used_without_file() {
    let etcd = Etcd::start();
    let f = write(etcd.dir.path(), "a.yaml", POOL_A);
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let env = vec![
        ("DATASTORE_TYPE".to_string(), "etcdv3".to_string()),
        ("ETCD_ENDPOINTS".to_string(), etcd.endpoint.clone()),
    ];
    let session = common::no_default_config_session();
    // No -c and no default file: the environment names the datastore.
    let out = run_raw(
        vec!["calicoctl".into(), "apply".into(), "-f".into(), f.clone()],
        "",
        &env,
        &session,
    )
    .await;
    out.ok();
    assert_eq!(etcd.dump().await.len(), 1);
    // A config file is used alone, even when the environment points elsewhere.
    let mut ctl = Ctl::new(&etcd);
    ctl.env = vec![("ETCD_ENDPOINTS".to_string(), dead.clone())];
    ctl.run(&["get", "ippool", "pool-a"]).await.ok();
    // CALICO_-prefixed variables win over plain ones.
    let env = vec![
        ("CALICO_ETCD_ENDPOINTS".to_string(), dead.clone()),
        ("ETCD_ENDPOINTS".to_string(), etcd.endpoint.clone()),
    ];
    let out = run_raw(
        vec!["calicoctl".into(), "get".into(), "ippools".into()],
        "",
        &env,
        &session,
    )
    .await;
    out.failed();
    // A named config file that does not exist is an error.
    let out = run_raw(
        vec![
            "calicoctl".into(),
            "get".into(),
            "ippools".into(),
            "-c".into(),
            "/nonexistent/x.cfg".into(),
        ],
        "",
        &[],
        &session,
    )
    .await;
    assert!(
        out.failed()
            .stderr
            .starts_with("Failed to create Calico API client: config file /nonexistent/x.cfg")
    );
    // A kubernetes datastore is refused by name.
    let env = vec![("DATASTORE_TYPE".to_string(), "kubernetes".to_string())];
    let out = run_raw(
        vec!["calicoctl".into(), "get".into(), "ippools".into()],
        "",
        &env,
        &session,
    )
    .await;
    assert!(
        out.failed().stderr.contains("datastore type is kubernetes"),
        "{out:?}"
    );
}

#[tokio::test]
async fn validate_needs_no_datastore_and_reports_problems() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", TWO_POOLS);
    let session = common::no_default_config_session();
    let out = run_raw(
        vec!["calicoctl".into(), "validate".into(), "-f".into(), good],
        "",
        &[],
        &session,
    )
    .await;
    assert_eq!(
        out.ok().stdout,
        "Successfully validated 2 'IPPool' resource(s)\n"
    );
    let bad = write(
        dir.path(),
        "bad.yaml",
        &POOL_A.replace("natOutgoing", "natOutgoin"),
    );
    let out = run_raw(
        vec![
            "calicoctl".into(),
            "validate".into(),
            "-f".into(),
            bad.clone(),
        ],
        "",
        &[],
        &session,
    )
    .await;
    assert!(
        out.failed().stderr.contains(&format!(
            "{bad}: document 1 (IPPool \"pool-a\"): spec.natOutgoin: "
        )),
        "{out:?}"
    );
}

#[tokio::test]
async fn cluster_information_is_read_only_and_version_shows_it() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let ci = "apiVersion: projectcalico.org/v3\nkind: ClusterInformation\nmetadata:\n  name: default\nspec:\n  calicoVersion: v3.30.0\n  clusterType: docker,bgp\n  datastoreReady: true\n";
    let f = write(etcd.dir.path(), "ci.yaml", ci);
    let out = ctl.run(&["apply", "-f", &f]).await;
    assert_eq!(
        out.failed().stderr,
        "Failed to apply 'ClusterInformation' resource: [operation apply is not supported on ClusterInformation: resource is readonly]\n"
    );
    let out = ctl.run(&["version"]).await;
    assert!(
        out.ok()
            .stdout
            .contains("Unable to retrieve Cluster Version or Type"),
        "{out:?}"
    );
    // calico/node writes it; calicoctl reads it.
    etcd.client()
        .await
        .put(
            "/calico/resources/v3/projectcalico.org/clusterinformations/default",
            r#"{"apiVersion":"projectcalico.org/v3","kind":"ClusterInformation","metadata":{"name":"default"},"spec":{"calicoVersion":"v3.30.0","clusterType":"docker,bgp","datastoreReady":true}}"#,
            None,
        )
        .await
        .unwrap();
    let out = ctl.run(&["version"]).await;
    let text = &out.ok().stdout;
    assert!(text.starts_with("Client Version:    v"), "{text}");
    assert!(
        text.contains("Cluster Version:   v3.30.0\nCluster Type:      docker,bgp\n"),
        "{text}"
    );
    let out = ctl.run(&["get", "clusterinformation", "-o", "wide"]).await;
    assert!(out.ok().stdout.contains("docker,bgp"), "{out:?}");
}

/// More resources than one etcd transaction takes (128 operations by default).
fn many_pools(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool-{i}\nspec:\n  cidr: 10.{}.{}.0/24\n",
                i / 256,
                i % 256
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[tokio::test]
async fn apply_of_more_resources_than_one_transaction_writes_all_and_reapplies_as_no_op() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let f = write(etcd.dir.path(), "many.yaml", &many_pools(300));
    let out = ctl.run(&["apply", "-f", &f]).await;
    assert_eq!(
        out.ok().stdout,
        "Successfully applied 300 'IPPool' resource(s)\n"
    );
    assert_eq!(etcd.dump().await.len(), 300);
    let rev = etcd.revision().await;
    ctl.run(&["apply", "-f", &f]).await.ok();
    assert_eq!(etcd.revision().await, rev);
    // One invalid document among 301 still writes nothing.
    let bad = format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool-bad\nspec:\n  cidr: 10.0.5.0/24\n",
        many_pools(300)
            .replace("pool-", "other-")
            .replace("10.", "11.")
    );
    let g = write(etcd.dir.path(), "bad.yaml", &bad);
    let out = ctl.run(&["apply", "-f", &g]).await;
    assert!(
        out.failed()
            .stderr
            .contains("document 301 (IPPool \"pool-bad\"): spec.cidr: "),
        "{out:?}"
    );
    assert_eq!(etcd.revision().await, rev);
    let out = ctl.run(&["delete", "-f", &f]).await;
    assert_eq!(
        out.ok().stdout,
        "Successfully deleted 300 'IPPool' resource(s)\n"
    );
    assert!(etcd.dump().await.is_empty());
}

#[tokio::test]
async fn node_and_workload_endpoint_tables_match_calico_layouts() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let nodes = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node1\nspec:\n  bgp:\n    ipv4Address: 192.168.33.11/24\n---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node2\nspec:\n  bgp:\n    asNumber: 65002\n    ipv4Address: 192.168.33.12/24\n";
    let f = write(etcd.dir.path(), "nodes.yaml", nodes);
    ctl.run(&["apply", "-f", &f]).await.ok();
    let out = ctl.run(&["get", "nodes", "-o", "wide"]).await;
    assert_eq!(
        out.ok().stdout,
        "NAME    ASN       IPV4               IPV6   \nnode1   (64512)   192.168.33.11/24          \nnode2   65002     192.168.33.12/24          \n\n"
    );
    let bgp = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  asNumber: 63400\n";
    let g = write(etcd.dir.path(), "bgp.yaml", bgp);
    ctl.run(&["apply", "-f", &g]).await.ok();
    let out = ctl.run(&["get", "node", "node1", "-o", "wide"]).await;
    assert!(
        out.ok()
            .stdout
            .contains("node1   (63400)   192.168.33.11/24"),
        "{out:?}"
    );

    let wep = "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: node1-libnetwork-libnetwork-abc\n  namespace: default\nspec:\n  node: node1\n  orchestrator: libnetwork\n  workload: libnetwork\n  endpoint: abc\n  interfaceName: calicce21fc3677\n  ipNetworks:\n  - 192.168.166.128/32\n  profiles:\n  - cal-net1\n";
    let h = write(etcd.dir.path(), "wep.yaml", wep);
    ctl.run(&["apply", "-f", &h]).await.ok();
    let out = ctl.run(&["get", "workloadendpoints"]).await;
    assert_eq!(
        out.ok().stdout,
        "WORKLOAD     NODE    NETWORKS             INTERFACE         \nlibnetwork   node1   192.168.166.128/32   calicce21fc3677   \n\n"
    );
    let out = ctl.run(&["get", "wep", "-A"]).await;
    assert!(
        out.ok().stdout.starts_with("NAMESPACE   WORKLOAD     NODE"),
        "{out:?}"
    );
}

#[tokio::test]
async fn kubernetes_owned_objects_are_refused_with_a_pointer_to_kubectl() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    // What the Kubernetes controllers write: the etcd copy carries the owner annotation.
    let owned = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
  annotations:
    projectcalico.org/owner: kubernetes
spec:
  cidr: 10.10.0.0/16
";
    let f = write(etcd.dir.path(), "owned.yaml", owned);
    ctl.run(&["create", "-f", &f]).await.ok();
    let before = etcd.dump().await;
    let edit = write(etcd.dir.path(), "edit.yaml", POOL_A);
    let applied = ctl.run(&["apply", "-f", &edit]).await;
    let out = applied.failed();
    assert!(out.stderr.contains("owned by Kubernetes"), "{}", out.stderr);
    assert!(out.stderr.contains("kubectl"), "{}", out.stderr);
    let deleted = ctl.run(&["delete", "ippool", "pool-a"]).await;
    let out = deleted.failed();
    assert!(out.stderr.contains("owned by Kubernetes"), "{}", out.stderr);
    let patched = ctl
        .run(&[
            "patch",
            "ippool",
            "pool-a",
            "-p",
            r#"{"spec":{"disabled":true}}"#,
        ])
        .await;
    let out = patched.failed();
    assert!(out.stderr.contains("owned by Kubernetes"), "{}", out.stderr);
    let labelled = ctl.run(&["label", "ippool", "pool-a", "team=x"]).await;
    let out = labelled.failed();
    assert!(out.stderr.contains("owned by Kubernetes"), "{}", out.stderr);
    assert_eq!(etcd.dump().await, before, "a refused edit changed etcd");
}

#[tokio::test]
async fn kubernetes_policies_cannot_be_written_through_calicoctl() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let knp = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: knp.default.allow\n  namespace: default\nspec:\n  selector: all()\n";
    let out = ctl.run_stdin(&["apply", "-f", "-"], knp).await;
    assert!(
        out.failed()
            .stderr
            .contains("kubernetes network policies must be managed through the kubernetes API"),
        "{out:?}"
    );
    assert!(etcd.dump().await.is_empty());
    // As the Kubernetes side stores one: patch and label refuse it like apply does.
    let key = "/calico/resources/v3/projectcalico.org/networkpolicies/default/knp.default.allow";
    let doc = serde_json::json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "knp.default.allow", "namespace": "default"},
        "spec": {"selector": "all()"},
    });
    etcd.client()
        .await
        .put(key, doc.to_string(), None)
        .await
        .expect("write the Kubernetes policy");
    let before = etcd.dump().await;
    for args in [
        &[
            "patch",
            "networkpolicy",
            "knp.default.allow",
            "-n",
            "default",
            "-p",
            r#"{"spec":{"order":1}}"#,
        ][..],
        &[
            "label",
            "networkpolicy",
            "knp.default.allow",
            "-n",
            "default",
            "team=x",
        ][..],
    ] {
        let out = ctl.run(args).await;
        assert!(
            out.failed()
                .stderr
                .contains("kubernetes network policies must be managed through the kubernetes API"),
            "{args:?}: {out:?}"
        );
    }
    assert_eq!(etcd.dump().await, before, "a refused edit changed etcd");
}
