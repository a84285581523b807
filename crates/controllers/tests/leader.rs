//! Leader election over kube's client and a scripted API server (`tower_test::mock`): taking a
//! free Lease, following a live holder, taking over an expired one (hand-over), renewing, and
//! losing races (409) without error. The API server is a mock: the compare-and-swap it stands
//! for (409 on a stale resourceVersion) is scripted, not exercised.

use std::time::Duration;

use calico_controllers::leader::LeaseLock;
use http::{Request, Response};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::client::Body;
use serde_json::{Value, json};

const PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/calico-kube-controllers";
const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";

fn lease(holder: &str, renewed_secs_ago: i64, transitions: i32) -> Value {
    let renewed = Timestamp::from_second(Timestamp::now().as_second() - renewed_secs_ago).unwrap();
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "calico-kube-controllers", "namespace": "kube-system", "resourceVersion": "77"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "acquireTime": renewed.to_string(), "renewTime": renewed.to_string(),
                 "leaseTransitions": transitions}
    })
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason,
           "reason": reason, "code": code})
}

/// (method, path, reply status, reply body); returns the request bodies.
async fn run_script(
    me: &str,
    script: Vec<(&'static str, &'static str, u16, Value)>,
) -> (bool, Vec<Value>) {
    run_script_doing(me, script, false).await
}

/// [`run_script`] of `try_acquire_or_renew`, or (`release`) of `release`.
async fn run_script_doing(
    me: &str,
    script: Vec<(&'static str, &'static str, u16, Value)>,
    release: bool,
) -> (bool, Vec<Value>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "kube-system");
    let server = tokio::spawn(async move {
        let mut bodies = Vec::new();
        for (method, path, code, reply) in script {
            let (req, send) = handle.next_request().await.expect("client stopped early");
            assert_eq!(req.method().as_str(), method, "{}", req.uri());
            assert_eq!(req.uri().path(), path);
            let bytes = req.into_body().collect_bytes().await.unwrap();
            bodies.push(if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            });
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
        if let Some((req, _)) = handle.next_request().await {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
        bodies
    });
    let api: Api<Lease> = Api::namespaced(client, "kube-system");
    let lock = LeaseLock::new(
        api,
        "kube-system",
        "calico-kube-controllers",
        me,
        Duration::from_secs(15),
    );
    let held = if release {
        lock.release().await
    } else {
        lock.try_acquire_or_renew().await
    }
    .expect("no API error");
    drop(lock);
    (held, server.await.expect("scripted server"))
}

#[tokio::test]
async fn creates_a_missing_lease() {
    let (held, bodies) = run_script(
        "pod-a",
        vec![
            ("GET", PATH, 404, status(404, "NotFound")),
            ("POST", COLLECTION, 201, lease("pod-a", 0, 0)),
        ],
    )
    .await;
    assert!(held);
    assert_eq!(bodies[1]["spec"]["holderIdentity"], "pod-a");
    assert_eq!(bodies[1]["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn losing_the_create_race_is_following() {
    let (held, _) = run_script(
        "pod-a",
        vec![
            ("GET", PATH, 404, status(404, "NotFound")),
            ("POST", COLLECTION, 409, status(409, "AlreadyExists")),
        ],
    )
    .await;
    assert!(!held);
}

#[tokio::test]
async fn follows_a_live_holder_without_writing() {
    let (held, bodies) = run_script("pod-b", vec![("GET", PATH, 200, lease("pod-a", 2, 0))]).await;
    assert!(!held);
    assert_eq!(bodies.len(), 1);
}

#[tokio::test]
async fn takes_over_an_expired_lease() {
    // pod-a stopped renewing 60 s ago (15 s duration): pod-b takes over, keeping the
    // resourceVersion it read (the compare-and-swap) and counting the transition.
    let (held, bodies) = run_script(
        "pod-b",
        vec![
            ("GET", PATH, 200, lease("pod-a", 60, 3)),
            ("PUT", PATH, 200, lease("pod-b", 0, 4)),
        ],
    )
    .await;
    assert!(held);
    let put = &bodies[1];
    assert_eq!(put["spec"]["holderIdentity"], "pod-b");
    assert_eq!(put["spec"]["leaseTransitions"], 4);
    assert_eq!(put["metadata"]["resourceVersion"], "77");
}

#[tokio::test]
async fn two_replicas_racing_for_an_expired_lease_only_one_wins() {
    let (won, _) = run_script(
        "pod-b",
        vec![
            ("GET", PATH, 200, lease("pod-a", 60, 3)),
            ("PUT", PATH, 200, lease("pod-b", 0, 4)),
        ],
    )
    .await;
    // pod-c read the same expired Lease (resourceVersion 77) but writes second: 409.
    let (lost, _) = run_script(
        "pod-c",
        vec![
            ("GET", PATH, 200, lease("pod-a", 60, 3)),
            ("PUT", PATH, 409, status(409, "Conflict")),
        ],
    )
    .await;
    assert!(won && !lost);
}

#[tokio::test]
async fn holder_renews() {
    let (held, bodies) = run_script(
        "pod-a",
        vec![
            ("GET", PATH, 200, lease("pod-a", 5, 1)),
            ("PUT", PATH, 200, lease("pod-a", 0, 1)),
        ],
    )
    .await;
    assert!(held);
    let renewed: Timestamp = bodies[1]["spec"]["renewTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(Timestamp::now().as_second() - renewed.as_second() <= 2);
    assert_eq!(
        bodies[1]["spec"]["leaseTransitions"], 1,
        "a renewal is not a transition"
    );
}

#[tokio::test]
async fn api_errors_are_reported() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "kube-system");
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(
            Response::builder()
                .status(403)
                .body(Body::from(
                    serde_json::to_vec(&status(403, "Forbidden")).unwrap(),
                ))
                .unwrap(),
        );
    });
    let lock = LeaseLock::new(
        Api::namespaced(client, "kube-system"),
        "kube-system",
        "calico-kube-controllers",
        "pod-a",
        Duration::from_secs(15),
    );
    let err = lock
        .try_acquire_or_renew()
        .await
        .expect_err("403 is an error");
    assert!(
        err.to_string()
            .contains("kube-system/calico-kube-controllers"),
        "{err}"
    );
    server.await.unwrap();
}

/// Serves `script` and counts requests; returns when the client is dropped.
fn scripted(
    script: Vec<(&'static str, u16, Value)>,
) -> (kube::Client, tokio::task::JoinHandle<usize>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "kube-system");
    let server = tokio::spawn(async move {
        let mut n = 0;
        for (method, code, reply) in script {
            let (req, send) = handle.next_request().await.expect("client stopped early");
            assert_eq!(req.method().as_str(), method, "{}", req.uri());
            n += 1;
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
        if let Some((req, _)) = handle.next_request().await {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
        n
    });
    (client, server)
}

fn lock(client: kube::Client) -> LeaseLock {
    LeaseLock::new(
        Api::namespaced(client, "kube-system"),
        "kube-system",
        "calico-kube-controllers",
        "pod-a",
        Duration::from_secs(15),
    )
}

#[tokio::test(start_paused = true)]
async fn leader_stops_when_the_lease_is_taken_over() {
    // Two renewals, then another replica holds a live Lease (e.g. after a long GC pause of
    // ours): keep_renewing returns, which stops the controllers.
    let (client, server) = scripted(vec![
        ("GET", 200, lease("pod-a", 5, 0)),
        ("PUT", 200, lease("pod-a", 0, 0)),
        ("GET", 200, lease("pod-a", 5, 0)),
        ("PUT", 200, lease("pod-a", 0, 0)),
        ("GET", 200, lease("pod-b", 1, 1)),
    ]);
    let l = lock(client);
    let started = tokio::time::Instant::now();
    calico_controllers::leader::keep_renewing(&l, Duration::from_secs(15)).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(15),
        "three renewal periods of 5 s"
    );
    drop(l);
    assert_eq!(server.await.unwrap(), 5);
}

#[tokio::test(start_paused = true)]
async fn leader_gives_up_before_the_lease_can_expire() {
    // The API server fails every renewal: with a 15 s Lease renewed every 5 s, the leader
    // retries at 5 s and gives up at 10 s, before anyone else may take over at 15 s.
    let fail = || ("GET", 500, status(500, "InternalError"));
    let (client, server) = scripted(vec![fail(), fail()]);
    let l = lock(client);
    let started = tokio::time::Instant::now();
    calico_controllers::leader::keep_renewing(&l, Duration::from_secs(15)).await;
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    drop(l);
    assert_eq!(server.await.unwrap(), 2);
}

#[tokio::test]
async fn release_clears_the_holder_so_another_replica_need_not_wait() {
    let (released, bodies) = run_script_doing(
        "pod-a",
        vec![
            ("GET", PATH, 200, lease("pod-a", 1, 2)),
            ("PUT", PATH, 200, lease("", 0, 2)),
        ],
        true,
    )
    .await;
    assert!(released);
    let put = &bodies[1];
    assert!(
        put["spec"].get("holderIdentity").is_none_or(Value::is_null),
        "{put}"
    );
    assert_eq!(put["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(put["metadata"]["resourceVersion"], "77");
}

#[tokio::test]
async fn release_leaves_someone_elses_lease_alone() {
    let (released, bodies) = run_script_doing(
        "pod-b",
        vec![("GET", PATH, 200, lease("pod-a", 1, 2))],
        true,
    )
    .await;
    assert!(!released);
    assert_eq!(bodies.len(), 1);
}
