//! Outgoing webhooks against a loopback receiver that fails on demand: order, signatures,
//! stable ids, retries, a restart, disabling after failure, re-enabling and replay.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::harness::{wait_for, GraphStandIn, TestServer};

/// One POST the receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Received {
    offset: u64,
    signature: String,
    body: String,
    answered: u16,
}

/// What the receiver answers next, and what it got.
type ReceiverState = (Arc<AtomicU16>, Arc<Mutex<Vec<Received>>>);

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    answer: Arc<AtomicU16>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let answer = Arc::new(AtomicU16::new(200));
        let got = Arc::new(Mutex::new(Vec::new()));
        let state = (answer.clone(), got.clone());
        let app = Router::new()
            .route(
                "/hook",
                post(
                    |State((answer, got)): State<ReceiverState>,
                     headers: HeaderMap,
                     body: String| async move {
                        let code = answer.load(Ordering::SeqCst);
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        got.lock().expect("lock").push(Received {
                            offset: header("x-confab-delivery").parse().expect("offset"),
                            signature: header("x-confab-signature"),
                            body,
                            answered: code,
                        });
                        StatusCode::from_u16(code).expect("status")
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, answer, got }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn accepted(&self) -> Vec<Received> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.answered == 200)
            .cloned()
            .collect()
    }

    fn refused(&self) -> usize {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.answered != 200)
            .count()
    }
}

async fn wait_accepted(receiver: &Receiver, n: usize) -> Vec<Received> {
    wait_for("the receiver to accept the deliveries", || async {
        let got = receiver.accepted();
        (got.len() >= n).then_some(got)
    })
    .await
}

#[tokio::test]
async fn changes_are_posted_in_order_signed_retried_through_a_restart_and_replayed() {
    let receiver = Receiver::start().await;
    let server = TestServer::start_with(|c| {
        c.webhooks.min_backoff_ms = 20;
        c.webhooks.max_backoff_ms = 100;
    })
    .await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (status, error) = server
        .post(&tenant.token, "/api/v1/webhooks", json!({"url": "ftp://x"}))
        .await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_value"))
    );
    let (status, created) = server
        .post(
            &tenant.token,
            "/api/v1/webhooks",
            json!({"url": receiver.url(), "kinds": ["conversation_created", "message_created"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let hook = format!("/api/v1/webhooks/{}", created["id"].as_str().expect("id"));

    for (wa, wamid) in [
        ("5511900000401", "wamid.W1"),
        ("5511900000402", "wamid.W2"),
        ("5511900000401", "wamid.W3"),
    ] {
        server.lead_says(&tenant, wa, "Lead", wamid, "hello").await;
    }
    // Two conversations created, three messages: in offset order, each signed.
    let got = wait_accepted(&receiver, 5).await;
    let kinds: Vec<String> = got
        .iter()
        .map(|r| {
            let frame: Value = serde_json::from_str(&r.body).expect("JSON");
            assert_eq!(frame["offset"], r.offset, "{frame}");
            assert_eq!(
                r.signature,
                confab_engine::webhooks::sign(&secret, r.body.as_bytes()),
                "signed with the endpoint's secret"
            );
            frame["kind"].as_str().expect("kind").to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "conversation_created",
            "message_created",
            "conversation_created",
            "message_created",
            "message_created"
        ]
    );
    assert!(got.windows(2).all(|w| w[0].offset < w[1].offset), "{got:?}");

    // The receiver fails: the same delta is retried, the failure shows on the endpoint.
    receiver.answer.store(500, Ordering::SeqCst);
    server
        .lead_says(&tenant, "5511900000402", "Lead", "wamid.W4", "still there?")
        .await;
    server
        .lead_says(&tenant, "5511900000402", "Lead", "wamid.W5", "hello?")
        .await;
    wait_for("two failed attempts", || async {
        (receiver.refused() >= 2).then_some(())
    })
    .await;
    let failing = wait_for("the failure on the endpoint", || async {
        let (_, view) = server.get(&tenant.token, &hook).await;
        (view["failures"].as_u64() >= Some(1)).then_some(view)
    })
    .await;
    assert_eq!(failing["enabled"], true, "{failing}");
    assert_eq!(
        failing["last_error"],
        "the endpoint answered 500 Internal Server Error"
    );
    // A restart meanwhile: delivery resumes where it stopped once the receiver is back.
    let server = server.restart().await;
    receiver.answer.store(200, Ordering::SeqCst);
    let got = wait_accepted(&receiver, 7).await;
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    let mut unique = offsets.clone();
    unique.dedup();
    assert_eq!(
        offsets, unique,
        "each change accepted once, in order: {offsets:?}"
    );
    assert!(got[5..]
        .iter()
        .all(|r| r.body.contains("\"message_created\"")));

    // Replay from the first offset: the same ids again, in order.
    let first = got[0].offset;
    let (status, view) = server
        .patch_json(&tenant.token, &hook, json!({"replay_from": first}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let again = wait_accepted(&receiver, 14).await;
    let replayed: Vec<u64> = again[7..].iter().map(|r| r.offset).collect();
    assert_eq!(
        replayed, offsets,
        "the replay repeats the same ids in order"
    );
    let (status, error) = server
        .patch_json(&tenant.token, &hook, json!({"replay_from": 999_999}))
        .await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (StatusCode::CONFLICT, &json!("replay_unavailable"))
    );
    // Another workspace does not see this one.
    let other = server.provision(&graph).await;
    let (status, _) = server.get(&other.token, &hook).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, list) = server.get(&other.token, "/api/v1/webhooks").await;
    assert_eq!((status, &list["items"]), (StatusCode::OK, &json!([])));
    let (status, _) = server.delete(&tenant.token, &hook).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.shutdown().await;
}

#[tokio::test]
async fn sustained_failure_disables_an_endpoint_until_an_admin_enables_it_again() {
    let receiver = Receiver::start().await;
    receiver.answer.store(503, Ordering::SeqCst);
    let server = TestServer::start_with(|c| {
        c.webhooks.min_backoff_ms = 20;
        c.webhooks.disable_after_secs = 0;
    })
    .await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (_, created) = server
        .post(
            &tenant.token,
            "/api/v1/webhooks",
            json!({"url": receiver.url(), "kinds": ["message_created"]}),
        )
        .await;
    let hook = format!("/api/v1/webhooks/{}", created["id"].as_str().expect("id"));
    server
        .lead_says(&tenant, "5511900000501", "Lead", "wamid.D1", "hello")
        .await;
    let disabled = wait_for("the endpoint disabled", || async {
        let (_, view) = server.get(&tenant.token, &hook).await;
        (view["enabled"] == false).then_some(view)
    })
    .await;
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .expect("reason")
            .contains("503"),
        "{disabled}"
    );
    assert!(disabled["behind"].as_u64() >= Some(1), "{disabled}");
    // Re-enabled by an admin, with the receiver back: the waiting change arrives.
    receiver.answer.store(200, Ordering::SeqCst);
    let (status, view) = server
        .patch_json(&tenant.token, &hook, json!({"enabled": true}))
        .await;
    assert_eq!(
        (status, &view["enabled"]),
        (StatusCode::OK, &json!(true)),
        "{view}"
    );
    let got = wait_accepted(&receiver, 1).await;
    assert!(got[0].body.contains("hello"), "{got:?}");
    let (_, audit) = server.get(&tenant.token, "/api/v1/audit").await;
    assert_eq!(audit["items"][0]["action"], "webhook_changed", "{audit}");
    server.shutdown().await;
}
