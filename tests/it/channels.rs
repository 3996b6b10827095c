//! The channel port end to end, through the test-only loopback provider (no provider's
//! name in the path under test): inbound, replies, statuses, retries, the circuit opening
//! and closing, authentication failures and reconnection, daily caps on a controllable
//! clock, disabling and enabling, outbox replay, channel health and its deltas, tenancy.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use confab_actors::ManualClock;
use confab_engine::ids::{ChannelId, WorkspaceId};
use confab_engine::model::{ChannelConfig, ChannelKind, LoopbackConfig};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::harness::{wait_for, GraphStandIn, StreamClient, Tenant, TestServer};

/// One send the loopback provider received.
#[derive(Clone, Debug)]
struct Sent {
    authorization: Option<String>,
    to: String,
    text: String,
}

/// The loopback provider's send endpoint: answers from a script (status, body), then
/// `200 {"id"}` with a fresh id.
#[derive(Clone)]
struct Provider {
    base_url: String,
    state: Arc<ProviderState>,
}

#[derive(Default)]
struct ProviderState {
    sent: Mutex<Vec<Sent>>,
    script: Mutex<VecDeque<(u16, Value)>>,
}

impl Provider {
    async fn start() -> Provider {
        let state = Arc::new(ProviderState::default());
        let app = Router::new()
            .route("/send", post(provider_send))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Provider {
            base_url: format!("http://{addr}"),
            state,
        }
    }

    fn script(&self, answers: Vec<(u16, Value)>) {
        self.state.script.lock().expect("lock").extend(answers);
    }

    fn sent(&self) -> Vec<Sent> {
        self.state.sent.lock().expect("lock").clone()
    }

    async fn wait_sent(&self, n: usize) -> Vec<Sent> {
        wait_for(&format!("{n} sends at the loopback provider"), || async {
            let sent = self.sent();
            (sent.len() >= n).then_some(sent)
        })
        .await
    }
}

async fn provider_send(
    State(state): State<Arc<ProviderState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut sent = state.sent.lock().expect("lock");
    sent.push(Sent {
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        to: body["to"].as_str().unwrap_or_default().to_string(),
        text: body["text"].as_str().unwrap_or_default().to_string(),
    });
    if let Some((status, answer)) = state.script.lock().expect("lock").pop_front() {
        return (StatusCode::from_u16(status).expect("status"), Json(answer));
    }
    (
        StatusCode::OK,
        Json(json!({"id": format!("lb-{}", sent.len())})),
    )
}

/// A loopback channel (posing as LinkedIn) in the tenant's workspace.
struct Loop {
    id: ChannelId,
    secret: String,
}

async fn loopback_channel(server: &TestServer, tenant: &Tenant, provider: &Provider) -> Loop {
    let app = server.server().app();
    let ws: WorkspaceId = tenant.workspace_id.parse().expect("workspace id");
    let secret = format!("loop-{}", confab_engine::admin::new_token());
    let (mut channel, _) = confab_engine::admin::new_channel(
        ws,
        "Sales loop",
        ChannelConfig::Loopback(LoopbackConfig {
            poses_as: ChannelKind::Linkedin,
            base_url: provider.base_url.clone(),
            secret: secret.clone(),
        }),
    );
    // These tests are about the generic connector (retries, the circuit, budgets): no
    // spacing between sends, which LinkedIn's rules would otherwise impose.
    channel.limits.min_interval_secs = Some(0);
    let set = confab_engine::admin::channel_set(&channel);
    app.committer.commit(set).await.expect("channel stored");
    app.runtime
        .channels
        .start(channel.clone())
        .await
        .expect("connector starts");
    Loop {
        id: channel.id,
        secret,
    }
}

/// A webhook of the loopback provider, through the same generic entry the HTTP webhook
/// routes use (adapter verification, parsing, the connector, conversations).
async fn webhook(
    server: &TestServer,
    channel: &Loop,
    secret: &str,
    body: Value,
) -> Result<confab_actors::WebhookReport, confab_actors::WebhookError> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {secret}").parse().expect("header"),
    );
    server
        .server()
        .app()
        .runtime
        .channels
        .webhook(
            channel.id,
            None,
            &headers,
            body.to_string().into(),
            Instant::now(),
        )
        .await
}

/// A lead's message on the loopback channel; returns the conversation's id.
async fn lead_writes(
    server: &TestServer,
    tenant: &Tenant,
    channel: &Loop,
    from: &str,
    id: &str,
) -> String {
    let report = webhook(
        server,
        channel,
        &channel.secret,
        json!({"messages": [{"id": id, "from": from, "name": "Lena Loop", "email": format!("{from}@leads.test"), "text": "hello from the loop"}]}),
    )
    .await
    .expect("webhook taken");
    assert_eq!(report.stored + report.duplicates, 1, "{report:?}");
    let conversations = server.conversations(&tenant.token).await;
    conversations
        .iter()
        .find(|c| c["channel_id"] == channel.id.to_string())
        .and_then(|c| c["id"].as_str())
        .expect("the loop conversation")
        .to_string()
}

async fn reply(server: &TestServer, tenant: &Tenant, conversation: &str, text: &str) -> String {
    let (status, message) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{conversation}/messages"),
            json!({"text": text}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{message}");
    message["id"].as_str().expect("message id").to_string()
}

async fn message(server: &TestServer, tenant: &Tenant, conversation: &str, id: &str) -> Value {
    server
        .messages(&tenant.token, conversation)
        .await
        .into_iter()
        .find(|m| m["id"] == id)
        .expect("the message")
}

/// Waits until the message satisfies `check`.
async fn message_until(
    server: &TestServer,
    tenant: &Tenant,
    conversation: &str,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, || async {
        let m = message(server, tenant, conversation, id).await;
        check(&m).then_some(m)
    })
    .await
}

async fn health(server: &TestServer, tenant: &Tenant, channel: ChannelId) -> Value {
    let (status, health) = server
        .get(&tenant.token, &format!("/api/v1/channels/{channel}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{health}");
    health
}

async fn health_until(
    server: &TestServer,
    tenant: &Tenant,
    channel: ChannelId,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, || async {
        let h = health(server, tenant, channel).await;
        check(&h).then_some(h)
    })
    .await
}

/// The next `channel_updated` delta of `channel` on the stream.
async fn next_channel_update(stream: &mut StreamClient, channel: ChannelId) -> Value {
    let id = channel.to_string();
    let deltas = stream
        .deltas_until(|d| d["kind"] == "channel_updated" && d["channel"]["id"] == id)
        .await;
    deltas.last().expect("a delta")["channel"].clone()
}

async fn setup_with(
    adjust: impl FnOnce(&mut confab_gateway::Config),
) -> (TestServer, Tenant, Provider, Loop) {
    let server = TestServer::start_with(adjust).await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let provider = Provider::start().await;
    let channel = loopback_channel(&server, &tenant, &provider).await;
    (server, tenant, provider, channel)
}

fn fast_retries(config: &mut confab_gateway::Config) {
    config.channels.retry_base_ms = 5;
    config.channels.retry_max_ms = 200;
}

#[tokio::test]
async fn the_loopback_adapter_carries_a_conversation_both_ways_with_statuses() {
    let (server, tenant, provider, channel) = setup_with(|_| {}).await;

    // A webhook that is not the provider's changes nothing.
    let refused = webhook(
        &server,
        &channel,
        "wrong-secret",
        json!({"messages": [{"id": "x", "from": "lead-1", "text": "hi"}]}),
    )
    .await;
    assert!(
        matches!(refused, Err(confab_actors::WebhookError::Refused(ref r)) if r.code == "invalid_signature"),
        "{refused:?}"
    );
    assert!(server.conversations(&tenant.token).await.is_empty());

    let conversation = lead_writes(&server, &tenant, &channel, "lead-1", "in-1").await;
    let (_, detail) = server
        .get(
            &tenant.token,
            &format!("/api/v1/conversations/{conversation}"),
        )
        .await;
    assert_eq!(detail["channel"], "linkedin", "{detail}");
    assert_eq!(detail["contact"]["name"], "Lena Loop");
    assert_eq!(detail["contact"]["email"], "lead-1@leads.test");
    // A channel without a reply window says so.
    assert_eq!(detail["reply_window"], Value::Null, "{detail}");
    // The same message again is a duplicate.
    let again = webhook(
        &server,
        &channel,
        &channel.secret,
        json!({"messages": [{"id": "in-1", "from": "lead-1", "text": "hello from the loop"}]}),
    )
    .await
    .expect("taken");
    assert_eq!(again.duplicates, 1);

    let id = reply(&server, &tenant, &conversation, "Thanks, Lena!").await;
    let sent = provider.wait_sent(1).await;
    assert_eq!(sent[0].to, "lead-1");
    assert_eq!(sent[0].text, "Thanks, Lena!");
    assert_eq!(
        sent[0].authorization.as_deref(),
        Some(format!("Bearer {}", channel.secret).as_str())
    );
    let m = message_until(
        &server,
        &tenant,
        &conversation,
        &id,
        "the provider's id",
        |m| m["external_id"] == "lb-1",
    )
    .await;
    assert_eq!(m["delivery"], "sent");

    let report = webhook(
        &server,
        &channel,
        &channel.secret,
        json!({"statuses": [{"id": "lb-1", "status": "delivered"}, {"id": "lb-1", "status": "read"}, {"status": "read"}]}),
    )
    .await
    .expect("taken");
    assert_eq!(report.statuses, 2);
    assert_eq!(report.rejected, 1);
    message_until(&server, &tenant, &conversation, &id, "read", |m| {
        m["delivery"] == "read"
    })
    .await;

    let h = health(&server, &tenant, channel.id).await;
    assert_eq!(h["status"], "connected", "{h}");
    assert_eq!(h["kind"], "linkedin");
    assert_eq!(h["circuit"], "closed");
    assert_eq!(h["limits"]["sent_today"], 1);
    assert_eq!(h["outbox_depth"], 0);
    assert_eq!(h["last_error"], Value::Null);
    server.shutdown().await;
}

#[tokio::test]
async fn retryable_failures_open_the_circuit_and_a_success_closes_it_streamed() {
    let (server, tenant, provider, channel) = setup_with(fast_retries).await;
    let conversation = lead_writes(&server, &tenant, &channel, "lead-2", "in-2").await;
    let mut stream = StreamClient::connect(&server, &tenant.token).await;
    stream.subscribe(None).await;

    // Five failures in a row open the circuit; the sixth attempt, a probe after the
    // cool-down, succeeds and closes it.
    provider.script(vec![(503, json!({"error": "upstream down"})); 5]);
    let id = reply(&server, &tenant, &conversation, "are you there?").await;

    let degraded = next_channel_update(&mut stream, channel.id).await;
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert_eq!(degraded["last_error"]["code"], "provider_unavailable");
    assert_eq!(degraded["last_error"]["message"], "upstream down");
    let connected = next_channel_update(&mut stream, channel.id).await;
    assert_eq!(connected["status"], "connected", "{connected}");
    assert_eq!(connected["circuit"], "closed");
    assert_eq!(connected["last_error"], Value::Null);

    let m = message_until(
        &server,
        &tenant,
        &conversation,
        &id,
        "sent after retries",
        |m| m["delivery"] == "sent",
    )
    .await;
    assert_eq!(m["external_id"], "lb-6");
    assert_eq!(provider.sent().len(), 6, "five failures and the probe");
    assert!(m.get("error").is_none(), "{m}");
    stream.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_auth_failure_holds_sends_until_the_account_reconnects() {
    let (server, tenant, provider, channel) = setup_with(fast_retries).await;
    let conversation = lead_writes(&server, &tenant, &channel, "lead-3", "in-3").await;
    let mut stream = StreamClient::connect(&server, &tenant.token).await;
    stream.subscribe(None).await;

    // Every send is refused for our credentials: the message waits, never fails.
    provider.script(vec![(401, json!({"error": "session expired"})); 1000]);
    let id = reply(&server, &tenant, &conversation, "still interested?").await;
    let failed = next_channel_update(&mut stream, channel.id).await;
    assert_eq!(failed["status"], "auth_failed", "{failed}");
    assert_eq!(failed["last_error"]["code"], "auth_failed");
    assert_eq!(failed["circuit"], "open");
    let m = message_until(
        &server,
        &tenant,
        &conversation,
        &id,
        "the hold shown",
        |m| {
            m["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("auth_failed"))
        },
    )
    .await;
    assert_eq!(m["delivery"], "queued");
    assert_eq!(
        health(&server, &tenant, channel.id).await["outbox_depth"],
        1
    );

    // The provider says the account works again: held sends go at once.
    provider.state.script.lock().expect("lock").clear();
    webhook(
        &server,
        &channel,
        &channel.secret,
        json!({"account": "connected"}),
    )
    .await
    .expect("taken");
    let connected = next_channel_update(&mut stream, channel.id).await;
    assert_eq!(connected["status"], "connected", "{connected}");
    let m = message_until(
        &server,
        &tenant,
        &conversation,
        &id,
        "sent after reconnecting",
        |m| m["delivery"] == "sent",
    )
    .await;
    assert!(m.get("error").is_none(), "the hold is over: {m}");
    health_until(&server, &tenant, channel.id, "an empty outbox", |h| {
        h["outbox_depth"] == 0
    })
    .await;

    // An account event alone moves the status too.
    webhook(
        &server,
        &channel,
        &channel.secret,
        json!({"account": "disconnected"}),
    )
    .await
    .expect("taken");
    let gone = next_channel_update(&mut stream, channel.id).await;
    assert_eq!(gone["status"], "disconnected");
    assert_eq!(gone["last_error"]["code"], "disconnected");
    stream.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_daily_cap_holds_the_message_until_the_next_day_on_the_channels_clock() {
    let day = confab_engine::port::DAY_MS;
    let clock = ManualClock::starting_at(20_000 * day + 10 * 60 * 60 * 1000);
    let server = TestServer::start_with_clock(clock.clone(), fast_retries).await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let provider = Provider::start().await;
    let channel = loopback_channel(&server, &tenant, &provider).await;
    let path = format!(
        "/api/v1/admin/workspaces/{}/channels/{}",
        tenant.workspace_id, channel.id
    );
    let (status, view) = server
        .admin_patch(&path, json!({"limits": {"per_day": 2}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["limits"]["per_day"], 2);
    assert_eq!(view["limits"]["over_daily_cap"], "wait");

    let conversation = lead_writes(&server, &tenant, &channel, "lead-4", "in-4").await;
    let first = reply(&server, &tenant, &conversation, "one").await;
    let second = reply(&server, &tenant, &conversation, "two").await;
    let third = reply(&server, &tenant, &conversation, "three").await;
    for id in [&first, &second] {
        message_until(&server, &tenant, &conversation, id, "sent", |m| {
            m["delivery"] == "sent"
        })
        .await;
    }
    let held = message_until(
        &server,
        &tenant,
        &conversation,
        &third,
        "held for tomorrow",
        |m| {
            m["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("daily_limit_reached"))
        },
    )
    .await;
    assert_eq!(held["delivery"], "queued");
    let h = health(&server, &tenant, channel.id).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["limits"]["sent_today"], 2);
    assert_eq!(h["limits"]["per_day"], 2);
    assert_eq!(h["outbox_depth"], 1);
    assert_eq!(h["last_error"]["code"], "daily_limit_reached");
    assert_eq!(
        provider.sent().len(),
        2,
        "the third waits: {:?}",
        provider.sent()
    );

    // The next UTC day: it goes.
    clock.advance(day);
    let sent = message_until(
        &server,
        &tenant,
        &conversation,
        &third,
        "sent the next day",
        |m| m["delivery"] == "sent",
    )
    .await;
    assert!(sent.get("error").is_none(), "{sent}");
    assert_eq!(provider.wait_sent(3).await[2].text, "three");
    let h = health_until(&server, &tenant, channel.id, "a new day's count", |h| {
        h["status"] == "connected" && h["limits"]["sent_today"] == 1
    })
    .await;
    assert_eq!(h["outbox_depth"], 0);

    // Configured to fail instead: over the cap is a failed message with a clear error.
    let (status, _) = server
        .admin_patch(
            &path,
            json!({"limits": {"per_day": 1, "over_daily_cap": "fail"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let refused = reply(&server, &tenant, &conversation, "four").await;
    let failed = message_until(&server, &tenant, &conversation, &refused, "failed", |m| {
        m["delivery"] == "failed"
    })
    .await;
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("daily_limit_reached")),
        "{failed}"
    );
    assert_eq!(provider.sent().len(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_disabled_channel_stores_webhooks_and_holds_sends_until_enabled() {
    let (server, tenant, provider, channel) = setup_with(|_| {}).await;
    let conversation = lead_writes(&server, &tenant, &channel, "lead-5", "in-5").await;
    let mut stream = StreamClient::connect(&server, &tenant.token).await;
    stream.subscribe(None).await;
    let path = format!(
        "/api/v1/admin/workspaces/{}/channels/{}",
        tenant.workspace_id, channel.id
    );
    let (status, view) = server.admin_patch(&path, json!({"disabled": true})).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["disabled"], true);
    let disabled = next_channel_update(&mut stream, channel.id).await;
    assert_eq!(disabled["status"], "disabled");

    let id = reply(&server, &tenant, &conversation, "held while disabled").await;
    let held = message_until(
        &server,
        &tenant,
        &conversation,
        &id,
        "the hold shown",
        |m| {
            m["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("channel_disabled"))
        },
    )
    .await;
    assert_eq!(held["delivery"], "queued");
    assert!(provider.sent().is_empty(), "nothing reaches the provider");
    // Webhooks are still stored.
    let report = webhook(
        &server,
        &channel,
        &channel.secret,
        json!({"messages": [{"id": "in-5b", "from": "lead-5", "text": "anyone?"}]}),
    )
    .await
    .expect("taken");
    assert_eq!(report.stored, 1);

    // A crash of the connector meanwhile loses nothing and sends nothing twice.
    let channels = server.server().app().runtime.channels.clone();
    let before = channels
        .registry()
        .connector_id(channel.id)
        .expect("running");
    channels.crash(channel.id);
    wait_for("a restarted connector", || async {
        channels
            .registry()
            .connector_id(channel.id)
            .filter(|now| *now != before)
    })
    .await;

    let (status, view) = server.admin_patch(&path, json!({"disabled": false})).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let enabled = next_channel_update(&mut stream, channel.id).await;
    assert_eq!(enabled["status"], "connected");
    message_until(
        &server,
        &tenant,
        &conversation,
        &id,
        "sent once enabled",
        |m| m["delivery"] == "sent" && m.get("error").is_none(),
    )
    .await;
    assert_eq!(provider.sent().len(), 1, "{:?}", provider.sent());
    stream.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_held_message_survives_a_restart_and_goes_once_the_channel_is_enabled() {
    let (server, tenant, provider, channel) = setup_with(|_| {}).await;
    let conversation = lead_writes(&server, &tenant, &channel, "lead-6", "in-6").await;
    let path = format!(
        "/api/v1/admin/workspaces/{}/channels/{}",
        tenant.workspace_id, channel.id
    );
    server.admin_patch(&path, json!({"disabled": true})).await;
    let id = reply(&server, &tenant, &conversation, "after the restart").await;
    message_until(&server, &tenant, &conversation, &id, "held", |m| {
        m["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("channel_disabled"))
    })
    .await;

    let server = server.restart().await;
    let h = health(&server, &tenant, channel.id).await;
    assert_eq!(h["status"], "disabled", "the setting is stored: {h}");
    assert_eq!(h["outbox_depth"], 1, "replayed from the outbox: {h}");
    let (status, _) = server.admin_patch(&path, json!({"disabled": false})).await;
    assert_eq!(status, StatusCode::OK);
    message_until(&server, &tenant, &conversation, &id, "sent", |m| {
        m["delivery"] == "sent"
    })
    .await;
    assert_eq!(provider.sent().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn channel_health_and_settings_are_per_workspace() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let ours = server.provision(&graph).await;
    let theirs = server.provision(&graph).await;
    let provider = Provider::start().await;
    let channel = loopback_channel(&server, &ours, &provider).await;

    let (status, list) = server.get(&ours.token, "/api/v1/channels").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        vec![ours.channel_id.as_str(), channel.id.to_string().as_str()]
    );
    assert_eq!(list["channels"][0]["kind"], "whatsapp");
    assert_eq!(list["channels"][0]["limits"]["per_second"], 80);
    assert!(list["channels"][0].get("app_secret").is_none());

    let (status, list) = server.get(&theirs.token, "/api/v1/channels").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["channels"].as_array().map(Vec::len), Some(1));
    let (status, _) = server
        .get(&theirs.token, &format!("/api/v1/channels/{}", channel.id))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .admin_patch(
            &format!(
                "/api/v1/admin/workspaces/{}/channels/{}",
                theirs.workspace_id, channel.id
            ),
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        health(&server, &ours, channel.id).await["status"],
        "connected"
    );

    // Credentials of another provider, and limits out of range, are refused.
    let path = format!(
        "/api/v1/admin/workspaces/{}/channels/{}",
        ours.workspace_id, channel.id
    );
    for bad in [
        json!({"access_token": "x"}),
        json!({"limits": {"per_day": 0}}),
        json!({"limits": {"per_second": 10001}}),
    ] {
        let (status, error) = server.admin_patch(&path, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad} → {error}");
        assert_eq!(error["error"]["code"], "invalid_value");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn whatsapp_credentials_rotated_by_an_admin_release_sends_held_by_an_auth_failure() {
    let server = TestServer::start_with(fast_retries).await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let channel: ChannelId = tenant.channel_id.parse().expect("channel id");
    server
        .lead_says(&tenant, "5511900000001", "Rita", "wamid.IN1", "hello")
        .await;
    let conversation = server.conversations(&tenant.token).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut stream = StreamClient::connect(&server, &tenant.token).await;
    stream.subscribe(None).await;

    // Meta's answer to an expired token: OAuthException 190.
    let expired = json!({"error": {"message": "Error validating access token: Session has expired", "type": "OAuthException", "code": 190}});
    graph.script(vec![(401, expired); 1000]);
    let id = reply(&server, &tenant, &conversation, "your quote is ready").await;
    let failed = next_channel_update(&mut stream, channel).await;
    assert_eq!(failed["status"], "auth_failed", "{failed}");
    assert_eq!(failed["kind"], "whatsapp");
    let held = message_until(&server, &tenant, &conversation, &id, "held", |m| {
        m["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("auth_failed"))
    })
    .await;
    assert_eq!(
        held["delivery"], "queued",
        "never failed for our credentials"
    );

    graph.clear_script();
    let (status, view) = server
        .admin_patch(
            &format!(
                "/api/v1/admin/workspaces/{}/channels/{}",
                tenant.workspace_id, channel
            ),
            json!({"access_token": "rotated-token"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert!(
        view.get("access_token").is_none(),
        "secrets are never shown: {view}"
    );
    let connected = next_channel_update(&mut stream, channel).await;
    assert_eq!(connected["status"], "connected", "{connected}");
    message_until(&server, &tenant, &conversation, &id, "sent", |m| {
        m["delivery"] == "sent" && m.get("error").is_none()
    })
    .await;
    let last = graph.requests().last().cloned().expect("a request");
    assert_eq!(last.authorization.as_deref(), Some("Bearer rotated-token"));
    stream.close().await;
    server.shutdown().await;
}
