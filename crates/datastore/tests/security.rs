//! TLS client certificates and username/password authentication against a real etcd.

mod common;

use std::time::Duration;

use calico_datastore::kv::{EtcdClient, KvError, RetryPolicy, WatchEvent};
use calico_datastore::{CalicoApiConfig, Datastore, EtcdConfig};
use common::{Etcd, Options, rogue_client_cert};
use futures::StreamExt;

/// Few, quick retries: for cases that must fail.
fn impatient() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        watch_max_failures: 2,
    }
}

#[tokio::test]
async fn tls_with_client_certificates_from_a_calico_config_file() {
    let certs_dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start_with(Options {
        members: 1,
        tls: true,
        ..Default::default()
    });
    let tls = etcd.tls().expect("TLS files").clone();
    // The configuration comes from a CalicoAPIConfig file, as calicoctl would read it.
    let cfg_path = certs_dir.path().join("calicoctl.cfg");
    std::fs::write(
        &cfg_path,
        format!(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata:\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: {}\n  etcdCACertFile: {}\n  etcdCertFile: {}\n  etcdKeyFile: {}\n",
            etcd.endpoints()[0],
            tls.ca.display(),
            tls.client_cert.display(),
            tls.client_key.display()
        ),
    )
    .unwrap();
    let config = CalicoApiConfig::from_file(&cfg_path).unwrap();
    let kv = EtcdClient::connect(config.etcd_config().unwrap())
        .await
        .unwrap();
    let r = kv
        .create("/calico/tls-test", b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(
        kv.get("/calico/tls-test")
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        r
    );
    let mut w = kv.watch("/calico/", r);
    let e = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap();
    assert!(matches!(e, Some(Ok(WatchEvent::Put(kv))) if kv.value == b"hello"));
    // The typed layer goes through the same client.
    let ds = Datastore::connect(config.etcd_config().unwrap())
        .await
        .unwrap();
    assert!(
        ds.list::<NoSuchKindIsNeeded>(None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// A minimal kind for the TLS list check above.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct NoSuchKindIsNeeded {
    metadata: calico_api::ObjectMeta,
}
impl calico_api::CalicoResource for NoSuchKindIsNeeded {
    const KIND: &'static str = "Tier";
    const PLURAL: &'static str = "tiers";
    const NAMESPACED: bool = false;
    fn meta(&self) -> &calico_api::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut calico_api::ObjectMeta {
        &mut self.metadata
    }
}

#[tokio::test]
async fn tls_refuses_clients_without_a_certificate_from_the_trusted_ca() {
    let certs_dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start_with(Options {
        members: 1,
        tls: true,
        ..Default::default()
    });
    let tls = etcd.tls().expect("TLS files").clone();
    let endpoint = etcd.endpoints()[0].clone();

    // CA only, no client certificate: the server demands one.
    let no_cert = EtcdConfig {
        ca_cert_file: Some(tls.ca.clone()),
        ..EtcdConfig::new([endpoint.clone()])
    };
    let kv = EtcdClient::connect_with(&no_cert, impatient())
        .await
        .unwrap();
    assert!(
        kv.get("/x").await.is_err(),
        "a client without a certificate was served"
    );

    // A certificate signed by another CA.
    let (rogue_cert, rogue_key) = rogue_client_cert(certs_dir.path());
    let rogue = EtcdConfig {
        ca_cert_file: Some(tls.ca.clone()),
        cert_file: Some(rogue_cert),
        key_file: Some(rogue_key),
        ..EtcdConfig::new([endpoint.clone()])
    };
    let kv = EtcdClient::connect_with(&rogue, impatient()).await.unwrap();
    assert!(
        kv.get("/x").await.is_err(),
        "a rogue certificate was accepted"
    );

    // Misconfigurations are reported before connecting, naming the field.
    let no_ca = EtcdConfig {
        cert_file: Some(tls.client_cert.clone()),
        key_file: Some(tls.client_key.clone()),
        ..EtcdConfig::new([endpoint.clone()])
    };
    let err = EtcdClient::connect(&no_ca).await.unwrap_err();
    assert!(
        matches!(
            err,
            KvError::Config {
                field: "etcdCACertFile",
                ..
            }
        ),
        "{err}"
    );
    let plain_with_certs = EtcdConfig {
        ca_cert_file: Some(tls.ca.clone()),
        ..EtcdConfig::new([endpoint.replace("https://", "http://")])
    };
    let err = EtcdClient::connect(&plain_with_certs).await.unwrap_err();
    assert!(
        matches!(
            err,
            KvError::Config {
                field: "etcdEndpoints",
                ..
            }
        ),
        "{err}"
    );
    let missing_file = EtcdConfig {
        ca_cert_file: Some(certs_dir.path().join("absent.pem")),
        ..EtcdConfig::new([endpoint])
    };
    let err = EtcdClient::connect(&missing_file).await.unwrap_err();
    assert!(
        matches!(
            err,
            KvError::ReadFile {
                field: "etcdCACertFile",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn username_and_password_authentication() {
    let etcd = Etcd::start();
    // Users: root (required before enabling auth) and calico, allowed /calico/ only.
    etcd.etcdctl_ok(0, &["user", "add", "root", "--new-user-password=rootpw"]);
    let _ = etcd.etcdctl(0, &["role", "add", "root"]);
    etcd.etcdctl_ok(0, &["user", "grant-role", "root", "root"]);
    etcd.etcdctl_ok(0, &["role", "add", "calico-rw"]);
    etcd.etcdctl_ok(
        0,
        &[
            "role",
            "grant-permission",
            "calico-rw",
            "readwrite",
            "/calico/",
            "--prefix=true",
        ],
    );
    etcd.etcdctl_ok(
        0,
        &["user", "add", "calico", "--new-user-password=calicopw"],
    );
    etcd.etcdctl_ok(0, &["user", "grant-role", "calico", "calico-rw"]);
    etcd.etcdctl_ok(0, &["auth", "enable"]);

    // Credentials from the environment, as calico-node would get them.
    let endpoints = etcd.endpoints()[0].clone();
    let config = CalicoApiConfig::from_env_vars(|name| match name {
        "ETCD_ENDPOINTS" => Some(endpoints.clone()),
        "ETCD_USERNAME" => Some("calico".into()),
        "ETCD_PASSWORD" => Some("calicopw".into()),
        _ => None,
    })
    .unwrap();
    let kv = EtcdClient::connect(config.etcd_config().unwrap())
        .await
        .unwrap();
    let r = kv
        .create("/calico/auth-test", b"ok".to_vec())
        .await
        .unwrap();
    assert_eq!(
        kv.get("/calico/auth-test")
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        r
    );
    let mut w = kv.watch("/calico/", r);
    let e = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap();
    assert!(matches!(e, Some(Ok(WatchEvent::Put(_)))), "{e:?}");

    // Outside the granted prefix: refused, and not retried as if transient.
    let started = std::time::Instant::now();
    let err = kv.create("/other/x", b"no".to_vec()).await.unwrap_err();
    assert!(matches!(err, KvError::Etcd { attempts: 1, .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Wrong password: connecting fails.
    let wrong = EtcdConfig {
        username: Some("calico".into()),
        password: Some("nope".into()),
        ..EtcdConfig::new([etcd.endpoints()[0].clone()])
    };
    assert!(EtcdClient::connect_with(&wrong, impatient()).await.is_err());

    // No credentials at all: requests are refused.
    let anonymous = EtcdClient::connect_with(&EtcdConfig::new(etcd.endpoints()), impatient())
        .await
        .unwrap();
    assert!(anonymous.get("/calico/auth-test").await.is_err());

    // A username without a password is a configuration error.
    let half = EtcdConfig {
        username: Some("calico".into()),
        ..EtcdConfig::new(etcd.endpoints())
    };
    assert!(matches!(
        EtcdClient::connect(&half).await,
        Err(KvError::Config {
            field: "etcdPassword",
            ..
        })
    ));
}
