//! Notifications end to end: who is notified of what (never the agent who acted),
//! settings and quiet hours, read marks, batched emails against an SMTP sink, Web Push
//! against a push-service stand-in that verifies the VAPID JWT and decrypts the payload
//! with the subscription's own key, expired subscriptions, delivery after a restart, and
//! overdue conversations on a driven clock.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use confab_actors::ManualClock;
use confab_gateway::config::NotificationEmailConfig;
use confab_gateway::demo::smtp_sink::SmtpSink;
use serde_json::{json, Value};

use crate::commands::second_agent;
use crate::harness::{wait_for, GraphStandIn, StreamClient, Tenant, TestServer};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

async fn notifications(server: &TestServer, token: &str) -> Value {
    let (status, page) = server.get(token, "/api/v1/me/notifications").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

fn reasons(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| n["reason"].as_str().expect("reason").to_owned())
        .collect()
}

async fn assign(server: &TestServer, token: &str, conversation: &str, agent: &str) {
    let (status, card) = server
        .post(
            token,
            &format!("/api/v1/conversations/{conversation}/assign"),
            json!({"agent_id": agent}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{card}");
}

async fn first_conversation(server: &TestServer, tenant: &Tenant, wa_id: &str) -> String {
    server.conversation_of(tenant, wa_id).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// Everything on, for one event.
fn everywhere() -> Value {
    json!({"in_app": true, "browser": true, "email": true, "push": true})
}

#[tokio::test]
async fn each_event_notifies_the_right_agents_never_the_actor_and_read_marks_follow() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (bo, bo_token) = second_agent(&server, &tenant, "Bo Chen", "agent").await;
    // Bo also wants to hear of new unassigned conversations; Ana keeps the defaults.
    let (status, settings) = server
        .put(
            &bo_token,
            "/api/v1/me/notification-settings",
            json!({"events": {"new_conversation": {"in_app": true}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(
        settings["events"]["assignment"],
        everywhere(),
        "defaults kept"
    );
    assert_eq!(settings["email_available"], false);
    let mut bo_stream = StreamClient::connect(&server, &bo_token).await;
    bo_stream.subscribe(None).await;

    server
        .lead_says(
            &tenant,
            "5511900000001",
            "Maria Lopez",
            "wamid.N1",
            "Hi, pricing?",
        )
        .await;
    let id = first_conversation(&server, &tenant, "5511900000001").await;
    let bo_page = wait_for("Bo hears of the new conversation", || async {
        let page = notifications(&server, &bo_token).await;
        (page["unread_count"] == 1).then_some(page)
    })
    .await;
    assert_eq!(reasons(&bo_page), vec!["new_conversation"]);
    assert_eq!(
        bo_page["items"][0]["title"],
        "New conversation with Maria Lopez"
    );
    assert_eq!(bo_page["items"][0]["body"], "Hi, pricing?");
    assert_eq!(bo_page["items"][0]["conversation_id"], id.as_str());

    // Ana assigns Bo: Bo is notified, Ana (who acted) is not; assigning herself is silent.
    assign(&server, &tenant.token, &id, &bo).await;
    assign(&server, &tenant.token, &id, &tenant.agent_id).await;
    assign(&server, &tenant.token, &id, &bo).await;
    // The lead writes in Bo's conversation; Ana mentions Bo (and herself) in a note.
    server
        .lead_says(
            &tenant,
            "5511900000001",
            "Maria Lopez",
            "wamid.N2",
            "Still there?",
        )
        .await;
    let (status, note) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "@Bo Chen she is hot, and note to self @Ana Agent", "internal": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{note}");
    let page = wait_for("Bo's five notifications", || async {
        let page = notifications(&server, &bo_token).await;
        (page["unread_count"] == 5).then_some(page)
    })
    .await;
    assert_eq!(
        reasons(&page),
        vec![
            "mention",
            "new_message",
            "assignment",
            "assignment",
            "new_conversation"
        ],
        "newest first"
    );
    assert_eq!(
        page["items"][0]["title"],
        "Ana Agent mentioned you in Maria Lopez"
    );
    assert_eq!(page["items"][0]["by_agent_id"], tenant.agent_id.as_str());
    assert_eq!(page["items"][1]["body"], "Still there?");
    assert_eq!(
        page["items"][2]["title"],
        "Ana Agent assigned you Maria Lopez"
    );
    let ana = notifications(&server, &tenant.token).await;
    assert_eq!(ana["unread_count"], 0, "the actor is never notified: {ana}");
    assert!(ana["items"].as_array().expect("items").is_empty());

    // The same notifications reached Bo's stream, as listed.
    let deltas = bo_stream
        .deltas_until(|d| d["kind"] == "notification" && d["reason"] == "mention")
        .await;
    let streamed: Vec<&Value> = deltas
        .iter()
        .filter(|d| d["kind"] == "notification")
        .collect();
    assert_eq!(streamed.len(), 5);
    assert!(streamed.iter().all(|d| d["agent_id"] == bo.as_str()));
    assert_eq!(streamed[4]["notification"]["id"], page["items"][0]["id"]);
    assert_eq!(streamed[4]["notification"]["browser"], true);

    // Read marks: one, then all; other sessions hear of them.
    let first = page["items"][0]["id"].as_str().expect("id");
    let (status, read) = server
        .post(
            &bo_token,
            &format!("/api/v1/me/notifications/{first}/read"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert!(read["read_at"].is_string());
    let read_delta = bo_stream
        .deltas_until(|d| d["kind"] == "notifications_read")
        .await;
    assert_eq!(
        read_delta.last().expect("delta")["notification_ids"],
        json!([first])
    );
    assert_eq!(notifications(&server, &bo_token).await["unread_count"], 4);
    let (status, unread) = server
        .get(&bo_token, "/api/v1/me/notifications?unread=true&limit=2")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unread["items"].as_array().expect("items").len(), 2);
    assert!(unread["next_cursor"].is_string(), "{unread}");
    let (status, all) = server
        .post(&bo_token, "/api/v1/me/notifications/read-all", json!({}))
        .await;
    assert_eq!((status, &all["marked"]), (StatusCode::OK, &json!(4)));
    assert_eq!(notifications(&server, &bo_token).await["unread_count"], 0);
    // Someone else's notification is not found.
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/me/notifications/{first}/read"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Settings are respected: Bo turns assignments off entirely.
    let (status, _) = server
        .put(
            &bo_token,
            "/api/v1/me/notification-settings",
            json!({"events": {"assignment": {}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assign(&server, &tenant.token, &id, &tenant.agent_id).await;
    assign(&server, &tenant.token, &id, &bo).await;
    // A later event that is on proves the assignment was processed before it.
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "@Bo Chen ping", "internal": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let page = wait_for("the mention after the silent assignment", || async {
        let page = notifications(&server, &bo_token).await;
        (page["unread_count"] == 1).then_some(page)
    })
    .await;
    assert_eq!(reasons(&page)[0], "mention");
    assert_eq!(
        reasons(&page).iter().filter(|r| *r == "assignment").count(),
        2
    );

    // Bad settings change nothing.
    for (body, code) in [
        (
            json!({"quiet_hours": {"from": "22:00", "to": "07:00", "timezone": "Mars/Base"}}),
            "invalid_timezone",
        ),
        (
            json!({"quiet_hours": {"from": "25:00", "to": "07:00", "timezone": "UTC"}}),
            "invalid_value",
        ),
        (json!({"events": {"birthday": {}}}), "invalid_value"),
    ] {
        let (status, error) = server
            .put(&bo_token, "/api/v1/me/notification-settings", body)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["error"]["code"], code);
    }
    bo_stream.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn notification_emails_are_batched_per_agent_and_never_sent_to_the_actor() {
    let sink = SmtpSink::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("smtp sink");
    let clock = ManualClock::starting_at(confab_engine::time::now_millis());
    let server = TestServer::start_with_clock(clock.clone(), |c| {
        c.notifications.email = Some(NotificationEmailConfig {
            host: "127.0.0.1".into(),
            port: sink.addr.port(),
            security: confab_engine::model::MailSecurity::None,
            username: String::new(),
            password: String::new(),
            from: "Confab <notify@confab.test>".into(),
            batch_secs: 120,
        });
        c.notifications.tick_ms = 20;
        c.notifications.public_url = Some("https://inbox.acme.test".into());
    })
    .await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (bo, bo_token) = second_agent(&server, &tenant, "Bo Chen", "agent").await;
    let (status, settings) = server
        .put(
            &bo_token,
            "/api/v1/me/notification-settings",
            json!({"events": {"new_message": {"in_app": true, "email": true}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["email_available"], true);
    server
        .lead_says(&tenant, "5511900000002", "Maria Lopez", "wamid.E1", "Hello")
        .await;
    let id = first_conversation(&server, &tenant, "5511900000002").await;
    assign(&server, &tenant.token, &id, &bo).await;
    for (n, text) in ["One", "Two", "Three"].iter().enumerate() {
        server
            .lead_says(
                &tenant,
                "5511900000002",
                "Maria Lopez",
                &format!("wamid.E1{n}"),
                text,
            )
            .await;
    }
    wait_for("Bo's four notifications", || async {
        (notifications(&server, &bo_token).await["unread_count"] == 4).then_some(())
    })
    .await;
    assert!(
        sink.received().is_empty(),
        "nothing before the batch window ends"
    );
    clock.advance(121_000);
    let mail = wait_for("one batched email", || async {
        sink.received().first().cloned()
    })
    .await;
    assert_eq!(mail.to, vec!["bo.chen@acme.test".to_owned()]);
    let text = String::from_utf8_lossy(&mail.data).replace("=\r\n", "");
    assert!(
        text.contains("Subject: 4 new notifications in Confab"),
        "{text}"
    );
    for line in [
        "Ana Agent assigned you Maria Lopez",
        "New message from Maria Lopez",
        "Three",
        &format!("https://inbox.acme.test/#/conversations/{id}"),
        "Auto-Submitted: auto-generated",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    // What was sent is not sent again: the next email holds only what came after it.
    server
        .lead_says(&tenant, "5511900000002", "Maria Lopez", "wamid.E20", "Four")
        .await;
    wait_for("the fifth notification", || async {
        (notifications(&server, &bo_token).await["unread_count"] == 5).then_some(())
    })
    .await;
    clock.advance(121_000);
    let second = wait_for("a second email", || async {
        sink.received().get(1).cloned()
    })
    .await;
    let text = String::from_utf8_lossy(&second.data).replace("=\r\n", "");
    assert!(
        text.contains("Subject: New message from Maria Lopez"),
        "{text}"
    );
    assert!(text.contains("Four") && !text.contains("Three"), "{text}");
    assert!(
        sink.received()
            .iter()
            .all(|m| m.to == vec!["bo.chen@acme.test".to_owned()]),
        "Ana acted: she gets no email"
    );
    server.shutdown().await;
}

/// One push the stand-in received, decrypted.
#[derive(Clone, Debug)]
struct Push {
    path: String,
    payload: Value,
    answered: u16,
}

#[derive(Clone)]
struct PushService {
    addr: SocketAddr,
    /// The subscription's keys (the browser's side): its ECE key pair and auth secret.
    keys: Arc<(Box<dyn ece::LocalKeyPair>, [u8; 16])>,
    vapid: Arc<Mutex<Option<String>>>,
    answer: Arc<Mutex<u16>>,
    pushes: Arc<Mutex<Vec<Push>>>,
    refused: Arc<Mutex<Vec<String>>>,
}

/// Checks one push as a push service would (RFC 8030/8291/8292) and decrypts it.
fn check_push(service: &PushService, headers: &HeaderMap, body: &[u8]) -> Result<Value, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(format!("no {name}"))
    };
    if header("content-encoding")? != "aes128gcm" {
        return Err("not aes128gcm".into());
    }
    header("ttl")?.parse::<u64>().map_err(|_| "bad TTL")?;
    let auth = header("authorization")?;
    let rest = auth
        .strip_prefix("vapid ")
        .ok_or("not a vapid authorization")?;
    let (mut token, mut key) = (None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(t) = part.strip_prefix("t=") {
            token = Some(t.to_owned());
        } else if let Some(k) = part.strip_prefix("k=") {
            key = Some(k.to_owned());
        }
    }
    let (token, key) = (token.ok_or("no t=")?, key.ok_or("no k=")?);
    let expected = service
        .vapid
        .lock()
        .expect("lock")
        .clone()
        .ok_or("no key yet")?;
    if key != expected {
        return Err("k= is not the server's VAPID key".into());
    }
    use jwt_simple::prelude::*;
    let public = ES256PublicKey::from_bytes(&B64.decode(&key).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let options = VerificationOptions {
        allowed_audiences: Some(HashSet::from_strings(&[format!(
            "http://{}",
            service.addr.ip()
        )])),
        ..Default::default()
    };
    let claims = public
        .verify_token::<NoCustomClaims>(&token, Some(options))
        .map_err(|e| format!("JWT: {e}"))?;
    if claims.subject.as_deref() != Some("mailto:ops@acme.test") {
        return Err(format!("sub is {:?}", claims.subject));
    }
    let components = service.keys.0.raw_components().map_err(|e| e.to_string())?;
    let plain = ece::decrypt(&components, &service.keys.1, body).map_err(|e| e.to_string())?;
    serde_json::from_slice(&plain).map_err(|e| e.to_string())
}

async fn push_handler(
    State(service): State<PushService>,
    Path(who): Path<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> StatusCode {
    match check_push(&service, &headers, &body) {
        Ok(payload) => {
            let answered = *service.answer.lock().expect("lock");
            service.pushes.lock().expect("lock").push(Push {
                path: who,
                payload,
                answered,
            });
            StatusCode::from_u16(answered).unwrap_or(StatusCode::CREATED)
        }
        Err(why) => {
            service.refused.lock().expect("lock").push(why);
            StatusCode::BAD_REQUEST
        }
    }
}

impl PushService {
    async fn start() -> PushService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let service = PushService {
            addr: listener.local_addr().expect("addr"),
            keys: Arc::new(ece::generate_keypair_and_auth_secret().expect("keys")),
            vapid: Arc::default(),
            answer: Arc::new(Mutex::new(201)),
            pushes: Arc::default(),
            refused: Arc::default(),
        };
        let app = Router::new()
            .route("/push/{who}", post(push_handler))
            .with_state(service.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        service
    }

    fn answer_with(&self, status: u16) {
        *self.answer.lock().expect("lock") = status;
    }

    fn pushes(&self) -> Vec<Push> {
        self.pushes.lock().expect("lock").clone()
    }

    /// The browser's `PushSubscription.toJSON()`.
    fn subscription(&self, who: &str) -> Value {
        json!({
            "endpoint": format!("http://{}/push/{who}", self.addr),
            "expirationTime": null,
            "keys": {
                "p256dh": B64.encode(self.keys.0.pub_as_raw().expect("public key")),
                "auth": B64.encode(self.keys.1),
            }
        })
    }
}

fn push_config(c: &mut confab_gateway::config::Config) {
    c.notifications.allow_private_push = true;
    c.notifications.push_subject = "mailto:ops@acme.test".into();
    c.notifications.tick_ms = 20;
}

async fn register(server: &TestServer, token: &str, push: &PushService, who: &str) -> String {
    let (status, keys) = server.get(token, "/api/v1/me/push-subscriptions").await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let vapid = keys["vapid_public_key"].as_str().expect("key").to_owned();
    assert_eq!(B64.decode(&vapid).expect("base64url").len(), 65);
    *push.vapid.lock().expect("lock") = Some(vapid);
    let (status, sub) = server
        .post(
            token,
            "/api/v1/me/push-subscriptions",
            push.subscription(who),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    let (status, again) = server
        .post(
            token,
            "/api/v1/me/push-subscriptions",
            push.subscription(who),
        )
        .await;
    assert_eq!(
        (status, &again["id"]),
        (StatusCode::OK, &sub["id"]),
        "same endpoint, same id"
    );
    sub["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn web_push_is_encrypted_and_signed_quiet_hours_hold_it_and_a_gone_subscription_is_removed() {
    let push = PushService::start().await;
    let server = TestServer::start_with(push_config).await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (bo, bo_token) = second_agent(&server, &tenant, "Bo Chen", "agent").await;
    register(&server, &bo_token, &push, "bo").await;
    // Bad subscriptions are refused.
    for (body, code) in [
        (
            json!({"endpoint": "ftp://x/y", "keys": {"p256dh": "AA", "auth": "AA"}}),
            "invalid_url",
        ),
        (
            json!({"endpoint": format!("http://{}/push/x", push.addr), "keys": {"p256dh": "AA", "auth": "AA"}}),
            "invalid_value",
        ),
    ] {
        let (status, error) = server
            .post(&bo_token, "/api/v1/me/push-subscriptions", body)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["error"]["code"], code);
    }
    server
        .lead_says(&tenant, "5511900000003", "Maria Lopez", "wamid.P1", "Hello")
        .await;
    let id = first_conversation(&server, &tenant, "5511900000003").await;

    // During quiet hours (all day, here) Bo's assignment is listed but not pushed.
    let (status, _) = server
        .put(
            &bo_token,
            "/api/v1/me/notification-settings",
            json!({"quiet_hours": {"from": "00:00", "to": "24:00", "timezone": "UTC"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assign(&server, &tenant.token, &id, &bo).await;
    let quiet = wait_for("the quiet assignment", || async {
        let page = notifications(&server, &bo_token).await;
        (page["unread_count"] == 1).then_some(page)
    })
    .await;
    assert_eq!(quiet["items"][0]["browser"], false);
    let (status, _) = server
        .put(&bo_token, "/api/v1/me/notification-settings", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assign(&server, &tenant.token, &id, &tenant.agent_id).await;
    assign(&server, &tenant.token, &id, &bo).await;
    let pushes = wait_for("a push", || async {
        let pushes = push.pushes();
        (!pushes.is_empty()).then_some(pushes)
    })
    .await;
    assert!(
        push.refused.lock().expect("lock").is_empty(),
        "{:?}",
        push.refused
    );
    let page = notifications(&server, &bo_token).await;
    assert_eq!(
        pushes.len(),
        1,
        "the quiet one was never pushed: {pushes:?}"
    );
    let payload = &pushes[0].payload;
    assert_eq!(payload["title"], "Ana Agent assigned you Maria Lopez");
    assert_eq!(payload["notification_id"], page["items"][0]["id"]);
    assert_eq!(payload["reason"], "assignment");
    assert!(payload["url"]
        .as_str()
        .expect("url")
        .ends_with(&format!("/#/conversations/{id}")));

    // The push service says the subscription is gone: it is removed.
    push.answer_with(410);
    assign(&server, &tenant.token, &id, &tenant.agent_id).await;
    assign(&server, &tenant.token, &id, &bo).await;
    wait_for("the subscription removed", || async {
        let (_, subs) = server.get(&bo_token, "/api/v1/me/push-subscriptions").await;
        subs["items"]
            .as_array()
            .is_some_and(|i| i.is_empty())
            .then_some(())
    })
    .await;
    assert_eq!(push.pushes().len(), 2);
    assert_eq!(push.pushes()[1].answered, 410);
    server.shutdown().await;
}

/// A request to the child process as `token`; the status and the JSON answer.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    crate::harness::status_json(request.send().await.expect("request")).await
}

#[tokio::test]
async fn a_push_not_yet_accepted_is_delivered_once_after_kill_9() {
    let push = PushService::start().await;
    let graph = GraphStandIn::start().await;
    let binary = crate::process::confab_binary().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("confab.toml");
    std::fs::write(
        &config,
        "[notifications]\nallow_private_push = true\npush_subject = \"mailto:ops@acme.test\"\ntick_ms = 20\n",
    )
    .expect("config");
    let data = dir.path().join("data");
    let admin = format!("admin-{}", confab_engine::admin::new_token());
    let serve = || {
        crate::process::Process::serve_with(
            &binary,
            &data,
            &admin,
            &[std::ffi::OsStr::new("--config"), config.as_os_str()],
        )
    };
    let process = serve();
    let http = reqwest::Client::new();
    let tenant = crate::process::provision(&http, &process.base, &admin, &graph.base_url).await;
    let base = process.base.clone();
    let (status, bo) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/agents"),
        &tenant.token,
        Some(json!({"name": "Bo Chen", "email": "bo@acme.test", "role": "agent"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bo}");
    let (bo_id, bo_token) = (
        bo["id"].as_str().expect("id").to_owned(),
        bo["token"].as_str().expect("token").to_owned(),
    );
    let (_, keys) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/v1/me/push-subscriptions"),
        &bo_token,
        None,
    )
    .await;
    *push.vapid.lock().expect("lock") = keys["vapid_public_key"].as_str().map(str::to_owned);
    let (status, sub) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/me/push-subscriptions"),
        &bo_token,
        Some(push.subscription("bo")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    let (body, signature) = crate::process::signed_text_webhook(
        &tenant,
        "5511900000004",
        "Maria Lopez",
        "wamid.R1",
        "Hello",
    );
    let response = http
        .post(format!("{base}/webhooks/whatsapp/{}", tenant.channel_id))
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(response.status(), StatusCode::OK);
    let id = wait_for("the conversation", || async {
        let (_, page) = call(
            &http,
            reqwest::Method::GET,
            format!("{base}/api/v1/conversations"),
            &tenant.token,
            None,
        )
        .await;
        page["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    // The push service fails: the delivery stays in the durable outbox; then the
    // process dies without a chance to clean up.
    push.answer_with(503);
    let (status, _) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/conversations/{id}/assign"),
        &tenant.token,
        Some(json!({"agent_id": bo_id})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    wait_for("a failed attempt", || async {
        (!push.pushes().is_empty()).then_some(())
    })
    .await;
    let first = push.pushes()[0].payload["notification_id"].clone();
    tokio::task::spawn_blocking(move || process.kill_9())
        .await
        .expect("killed");
    push.answer_with(201);
    let process = serve();
    let base = process.base.clone();
    wait_for("the push accepted after the restart", || async {
        push.pushes()
            .iter()
            .any(|p| p.answered == 201)
            .then_some(())
    })
    .await;
    // A later notification's push proves the worker went past the first one.
    for agent in [&tenant.agent_id, &bo_id] {
        let (status, _) = call(
            &http,
            reqwest::Method::POST,
            format!("{base}/api/v1/conversations/{id}/assign"),
            &tenant.token,
            Some(json!({"agent_id": agent})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    wait_for("the second notification's push", || async {
        push.pushes()
            .iter()
            .any(|p| p.answered == 201 && p.payload["notification_id"] != first)
            .then_some(())
    })
    .await;
    let accepted = push
        .pushes()
        .iter()
        .filter(|p| p.answered == 201 && p.payload["notification_id"] == first)
        .count();
    assert_eq!(accepted, 1, "{:?}", push.pushes());
    assert!(push.refused.lock().expect("lock").is_empty());
    assert!(push.pushes().iter().all(|p| p.path == "bo"));
    tokio::task::spawn_blocking(move || process.kill_9())
        .await
        .expect("stopped");
}

#[tokio::test]
async fn a_conversation_waiting_past_the_response_target_notifies_its_assignee_once() {
    let clock = ManualClock::starting_at(confab_engine::time::now_millis());
    let server =
        TestServer::start_with_clock(clock.clone(), |c| c.notifications.tick_ms = 20).await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (bo, bo_token) = second_agent(&server, &tenant, "Bo Chen", "agent").await;
    let (status, error) = server
        .patch_json(
            &bo_token,
            "/api/v1/workspace/settings",
            json!({"response_target_secs": 60}),
        )
        .await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("admin_only"))
    );
    let (status, settings) = server
        .patch_json(
            &tenant.token,
            "/api/v1/workspace/settings",
            json!({"response_target_secs": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    // Two leads write; Bo answers one of them; both conversations are Bo's.
    server
        .lead_says(
            &tenant,
            "5511900000005",
            "Maria Lopez",
            "wamid.O1",
            "Hello?",
        )
        .await;
    server
        .lead_says(&tenant, "5511900000006", "Omar Diaz", "wamid.O2", "Hi")
        .await;
    let waiting = first_conversation(&server, &tenant, "5511900000005").await;
    let answered = first_conversation(&server, &tenant, "5511900000006").await;
    assign(&server, &tenant.token, &waiting, &bo).await;
    assign(&server, &tenant.token, &answered, &bo).await;
    let (status, reply) = server
        .post(
            &bo_token,
            &format!("/api/v1/conversations/{answered}/messages"),
            json!({"text": "Hello Omar"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    clock.advance(61_000);
    let page = wait_for("the overdue notification", || async {
        let page = notifications(&server, &bo_token).await;
        reasons(&page)
            .contains(&"overdue".to_owned())
            .then_some(page)
    })
    .await;
    let overdue: Vec<&Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|n| n["reason"] == "overdue")
        .collect();
    assert_eq!(overdue.len(), 1, "{page}");
    assert_eq!(overdue[0]["conversation_id"], waiting.as_str());
    assert_eq!(overdue[0]["title"], "Maria Lopez is waiting for an answer");
    // It fired once: a later event comes after it with no second overdue.
    clock.advance(61_000);
    server
        .lead_says(
            &tenant,
            "5511900000005",
            "Maria Lopez",
            "wamid.O3",
            "Anyone?",
        )
        .await;
    let page = wait_for("the new message", || async {
        let page = notifications(&server, &bo_token).await;
        (reasons(&page)[0] == "new_message").then_some(page)
    })
    .await;
    assert_eq!(reasons(&page).iter().filter(|r| *r == "overdue").count(), 1);
    server.shutdown().await;
}

/// The ids of the conversations a listing query answers (first page).
async fn listed(server: &TestServer, token: &str, query: &str) -> Vec<String> {
    let (status, page) = server
        .get(token, &format!("/api/v1/conversations?{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn card(server: &TestServer, token: &str, conversation: &str) -> Value {
    let (status, card) = server
        .get(token, &format!("/api/v1/conversations/{conversation}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{card}");
    card
}

async fn snooze(
    server: &TestServer,
    token: &str,
    conversation: &str,
    until: Value,
) -> (StatusCode, Value) {
    server
        .post(
            token,
            &format!("/api/v1/conversations/{conversation}/snooze"),
            json!({ "until": until }),
        )
        .await
}

#[tokio::test]
async fn a_snoozed_conversation_leaves_the_working_views_until_its_time_or_the_leads_message() {
    let start = confab_engine::time::now_millis();
    let clock = ManualClock::starting_at(start);
    let server =
        TestServer::start_with_clock(clock.clone(), |c| c.notifications.tick_ms = 20).await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (bo, bo_token) = second_agent(&server, &tenant, "Bo Chen", "agent").await;
    server
        .lead_says(
            &tenant,
            "5511900000011",
            "Maria Lopez",
            "wamid.S1",
            "Call me next week",
        )
        .await;
    server
        .lead_says(
            &tenant,
            "5511900000012",
            "Omar Diaz",
            "wamid.S2",
            "Busy now",
        )
        .await;
    let maria = first_conversation(&server, &tenant, "5511900000011").await;
    let omar = first_conversation(&server, &tenant, "5511900000012").await;
    assign(&server, &tenant.token, &maria, &bo).await;

    // Bad times are refused and change nothing.
    let hour = 3_600_000;
    let at = |ms: i64| json!(confab_engine::time::to_rfc3339(ms));
    for bad in [
        at(start - 1000),
        at(start + 367 * 24 * hour),
        json!("next tuesday"),
        json!(12),
    ] {
        let (status, error) = snooze(&server, &bo_token, &maria, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {error}");
        assert_eq!(error["error"]["code"], "invalid_value", "{error}");
    }
    let unchanged = card(&server, &tenant.token, &maria).await;
    assert_eq!(unchanged["status"], "open");
    assert_eq!(unchanged["snoozed_until"], Value::Null);

    // Bo snoozes Maria for an hour, the admin snoozes Omar for two.
    let (status, snoozed) = snooze(&server, &bo_token, &maria, at(start + hour)).await;
    assert_eq!(status, StatusCode::OK, "{snoozed}");
    assert_eq!(snoozed["status"], "pending");
    assert_eq!(snoozed["snoozed_until"], at(start + hour));
    let (status, again) = snooze(&server, &bo_token, &maria, at(start + hour)).await;
    assert_eq!(
        (status, &again),
        (StatusCode::OK, &snoozed),
        "the same snooze again changes nothing"
    );
    let (status, _) = snooze(&server, &tenant.token, &omar, at(start + 2 * hour)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(listed(&server, &tenant.token, "view=all").await.is_empty());
    assert!(listed(&server, &bo_token, "view=mine").await.is_empty());
    assert_eq!(
        listed(&server, &tenant.token, "view=snoozed").await,
        vec![omar.clone(), maria.clone()]
    );
    let (_, counts) = server.get(&bo_token, "/api/v1/conversations/counts").await;
    assert_eq!(
        (
            &counts["all"],
            &counts["mine"],
            &counts["snoozed"],
            &counts["closed"]
        ),
        (&json!(0), &json!(0), &json!(2), &json!(0)),
        "{counts}"
    );

    // The timers survive a restart; Omar writes first: his snooze ends at once.
    let server = server.restart_with_clock(clock.clone()).await;
    server
        .lead_says(
            &tenant,
            "5511900000012",
            "Omar Diaz",
            "wamid.S3",
            "Free now",
        )
        .await;
    let woken = card(&server, &tenant.token, &omar).await;
    assert_eq!(
        (&woken["status"], &woken["snoozed_until"]),
        (&json!("open"), &Value::Null)
    );
    assert_eq!(
        listed(&server, &tenant.token, "view=snoozed").await,
        vec![maria.clone()]
    );
    assert_eq!(
        listed(&server, &tenant.token, "view=all").await,
        vec![omar.clone()]
    );

    // Maria's hour passes: she is back, on top, and Bo (her assignee) hears of it.
    clock.advance(hour + 1000);
    let page = wait_for("the snooze to end", || async {
        let page = notifications(&server, &bo_token).await;
        reasons(&page)
            .contains(&"snooze_ended".to_owned())
            .then_some(page)
    })
    .await;
    assert_eq!(
        page["items"][0]["conversation_id"],
        maria.as_str(),
        "{page}"
    );
    assert_eq!(page["items"][0]["title"], "Maria Lopez is back from snooze");
    let back = card(&server, &tenant.token, &maria).await;
    assert_eq!(
        (&back["status"], &back["snoozed_until"]),
        (&json!("open"), &Value::Null)
    );
    assert_eq!(
        listed(&server, &tenant.token, "view=all").await,
        vec![maria.clone(), omar.clone()]
    );
    assert_eq!(
        listed(&server, &bo_token, "view=mine").await,
        vec![maria.clone()]
    );
    assert!(listed(&server, &tenant.token, "view=snoozed")
        .await
        .is_empty());
    // Omar's own timer is gone with his snooze: nobody hears of him at his old time.
    assert!(
        !reasons(&notifications(&server, &tenant.token).await).contains(&"snooze_ended".to_owned())
    );

    // A status change ends a snooze too, and its timer with it.
    let (status, _) = snooze(&server, &tenant.token, &omar, at(start + 3 * hour)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, closed) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{omar}/status"),
            json!({"status": "closed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&closed["status"], &closed["snoozed_until"]),
        (&json!("closed"), &Value::Null)
    );
    let (_, counts) = server
        .get(&tenant.token, "/api/v1/conversations/counts")
        .await;
    assert_eq!(
        (&counts["snoozed"], &counts["closed"]),
        (&json!(0), &json!(1)),
        "{counts}"
    );
    clock.advance(3 * hour);
    // A later event arrives after the old time with no snooze notification before it.
    server
        .lead_says(
            &tenant,
            "5511900000011",
            "Maria Lopez",
            "wamid.S4",
            "Thanks",
        )
        .await;
    wait_for("Maria's message notified", || async {
        let page = notifications(&server, &bo_token).await;
        (reasons(&page)[0] == "new_message").then_some(())
    })
    .await;
    assert!(
        !reasons(&notifications(&server, &tenant.token).await).contains(&"snooze_ended".to_owned())
    );
    server.shutdown().await;
}
