//! A loopback stand-in for the WhatsApp Cloud API, playing Meta's part on both sides of a
//! WhatsApp channel so the demo (and tests) exercise the real send and webhook paths without
//! leaving the machine:
//!
//! - as the **Graph API** it answers `POST /{phone_number_id}/messages` with Meta's shapes
//!   (a `wamid` on success, a Graph-style `{"error":{…}}` otherwise), then reports the
//!   message `sent`, `delivered` and `read` through signed status webhooks;
//! - as the **webhook sender** ([`WebhookSender`]) it delivers what leads write, signed with
//!   the channel's app secret, to Confab's `POST /webhooks/whatsapp/{channel_id}`.
//!
//! Every accepted send is also broadcast as a [`SentMessage`], so a simulation (or a test) can
//! react to what the server sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use confab_engine::wire::whatsapp as wire;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// When Meta typically reports each delivery status, counted from the send.
pub const DEFAULT_STATUS_SCHEDULE: [(Duration, &str); 3] = [
    (Duration::from_millis(300), "sent"),
    (Duration::from_millis(1000), "delivered"),
    (Duration::from_millis(3000), "read"),
];

/// Webhook deliveries give up after this long; Confab answers local requests in milliseconds.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Sandbox::stop`] lets in-flight requests finish before cutting them off.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Sent messages buffered for a slow subscriber; older ones are dropped for it (it lags).
const SENT_BUFFER: usize = 256;

/// What the sandbox needs to know about the channel it serves.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Confab's `…/webhooks/whatsapp/{channel_id}` URL.
    pub webhook_url: String,
    /// The only number the sandbox accepts sends from, and the one webhooks are addressed to.
    pub phone_number_id: String,
    /// Signs every webhook, as Meta signs with the app secret.
    pub app_secret: String,
    /// The bearer token sends must carry.
    pub access_token: String,
    /// Which statuses to report after a send, and when; in order.
    pub status_schedule: Vec<(Duration, &'static str)>,
}

impl SandboxConfig {
    /// A configuration with Meta-like status timings.
    pub fn new(
        webhook_url: impl Into<String>,
        phone_number_id: impl Into<String>,
        app_secret: impl Into<String>,
        access_token: impl Into<String>,
    ) -> Self {
        Self {
            webhook_url: webhook_url.into(),
            phone_number_id: phone_number_id.into(),
            app_secret: app_secret.into(),
            access_token: access_token.into(),
            status_schedule: DEFAULT_STATUS_SCHEDULE.to_vec(),
        }
    }
}

/// A message the sandbox accepted from Confab, as a lead's phone would receive it.
#[derive(Clone, Debug, PartialEq)]
pub struct SentMessage {
    /// The id the sandbox answered with.
    pub wamid: String,
    /// The lead's `wa_id`.
    pub to: String,
    /// The Graph message type: `text`, `template`, …
    pub kind: String,
    /// The text for `text` messages, `[template name]` for templates.
    pub text: Option<String>,
}

/// A running sandbox. Dropping it stops it abruptly; [`Sandbox::stop`] stops it gracefully.
pub struct Sandbox {
    /// The value for the channel's `api_base_url`.
    pub base_url: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Shared {
    config: SandboxConfig,
    webhooks: WebhookSender,
    sent: broadcast::Sender<SentMessage>,
    /// Turns true on stop, so pending status reports are abandoned instead of posted to a
    /// server that is going away.
    stopping: watch::Receiver<bool>,
}

/// Binds `127.0.0.1:0` and serves until stopped.
pub async fn start(config: SandboxConfig) -> anyhow::Result<Sandbox> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot bind the WhatsApp sandbox on 127.0.0.1")?;
    start_on(listener, config)
}

/// Like [`start`], on an already bound listener: the demo binds first because the channel
/// (whose `api_base_url` is this listener's address) must exist before its webhook URL does.
pub fn start_on(listener: TcpListener, config: SandboxConfig) -> anyhow::Result<Sandbox> {
    let addr = listener
        .local_addr()
        .context("the sandbox listener has no address")?;
    let webhooks = WebhookSender::new(
        &config.webhook_url,
        &config.phone_number_id,
        &config.app_secret,
    )?;
    let (stop, mut stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        config,
        webhooks,
        sent: broadcast::channel(SENT_BUFFER).0,
        stopping: stop.subscribe(),
    });
    let router = Router::new()
        .route("/{phone_number_id}/messages", post(send_message))
        .fallback(unknown_path)
        .with_state(shared.clone());
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the WhatsApp sandbox failed");
        }
    });
    tracing::info!(%addr, "WhatsApp sandbox provider is listening");
    Ok(Sandbox {
        base_url: base_url(addr),
        shared,
        stop,
        task,
    })
}

impl Sandbox {
    /// Every message accepted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SentMessage> {
        self.shared.sent.subscribe()
    }

    /// Delivers webhooks to the channel as Meta would.
    pub fn webhooks(&self) -> WebhookSender {
        self.shared.webhooks.clone()
    }

    /// Stops accepting sends and abandons pending status reports.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(STOP_GRACE, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!("the WhatsApp sandbox did not stop in time; cutting it off");
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// The URL a channel's `api_base_url` takes to reach a sandbox listening on `addr`.
pub fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// `POST /{phone_number_id}/messages`: the Graph API's send endpoint.
async fn send_message(
    State(shared): State<Arc<Shared>>,
    Path(phone_number_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = &shared.config;
    if !bearer_matches(&headers, &config.access_token) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token - Cannot parse access token",
            None,
        );
    }
    if phone_number_id != config.phone_number_id {
        // What Graph answers for an id the token cannot see.
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            &format!(
                "Unsupported post request. Object with ID '{phone_number_id}' does not exist, \
                 cannot be loaded due to missing permissions, or does not support this operation"
            ),
            None,
        );
    }
    let request = match parse_send_request(&body) {
        Ok(request) => request,
        Err(details) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                100,
                "(#100) Invalid parameter",
                Some(&details),
            )
        }
    };
    let wamid = shared.webhooks.ids.next("SANDBOX");
    tracing::info!(
        to = %request.to,
        %wamid,
        text = request.text.as_deref().unwrap_or(""),
        "sandbox: message delivered to the lead's phone"
    );
    let response = send_response(&request.to, &wamid);
    // Nobody listening is fine: the sandbox also runs without a simulation.
    let _ = shared.sent.send(SentMessage {
        wamid: wamid.clone(),
        to: request.to.clone(),
        kind: request.kind,
        text: request.text,
    });
    tokio::spawn(report_statuses(shared.clone(), wamid, request.to));
    (StatusCode::OK, Json(response)).into_response()
}

/// Any other path: Graph's answer to a path it does not know.
async fn unknown_path(uri: axum::http::Uri) -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        2500,
        &format!("Unknown path components: {}", uri.path()),
        None,
    )
}

/// Posts the scheduled delivery statuses for one sent message, in order.
async fn report_statuses(shared: Arc<Shared>, wamid: String, recipient: String) {
    let started = Instant::now();
    let mut stopping = shared.stopping.clone();
    for (after, status) in &shared.config.status_schedule {
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep_until(started + *after) => {}
        }
        match shared.webhooks.status(&wamid, status, &recipient).await {
            Ok(()) => tracing::debug!(%wamid, status, "sandbox: status reported"),
            Err(e) => tracing::warn!(%wamid, status, error = %e, "sandbox: status report failed"),
        }
    }
}

/// Whether the request carries `Authorization: Bearer <expected>`.
fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(token.trim().as_bytes().ct_eq(expected.as_bytes()))
}

/// The parts of a send request the sandbox acts on.
#[derive(Debug, PartialEq)]
struct SendRequest {
    to: String,
    kind: String,
    text: Option<String>,
}

/// Validates a send body as Graph does, returning the `error_data.details` Graph would give
/// for a bad one.
fn parse_send_request(body: &[u8]) -> Result<SendRequest, String> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let field = |path: &[&str]| -> Option<&str> {
        path.iter()
            .try_fold(&json, |value, key| value.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if field(&["messaging_product"]) != Some("whatsapp") {
        return Err("The parameter messaging_product is required and must be whatsapp.".into());
    }
    let to = field(&["to"]).ok_or("The parameter to is required.")?;
    // Graph sends text when the type is left out.
    let kind = field(&["type"]).unwrap_or("text");
    let text = match kind {
        "text" => Some(
            field(&["text", "body"])
                .ok_or("The parameter text['body'] is required.")?
                .to_owned(),
        ),
        "template" => Some(format!(
            "[template {}]",
            field(&["template", "name"]).ok_or("The parameter template['name'] is required.")?
        )),
        _ => None,
    };
    Ok(SendRequest {
        to: to.to_owned(),
        kind: kind.to_owned(),
        text,
    })
}

/// Graph's answer to a successful send.
fn send_response(to: &str, wamid: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": wamid}],
    })
}

/// A Graph-style error response: `{"error":{"message","type","code",…}}`.
fn graph_error(status: StatusCode, code: i64, message: &str, details: Option<&str>) -> Response {
    (status, Json(graph_error_body(code, message, details))).into_response()
}

fn graph_error_body(code: i64, message: &str, details: Option<&str>) -> Value {
    let mut error = json!({
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "ASandboxTrace",
    });
    if let (Some(details), Some(error)) = (details, error.as_object_mut()) {
        error.insert(
            "error_data".into(),
            json!({"messaging_product": "whatsapp", "details": details}),
        );
    }
    json!({ "error": error })
}

/// Unique `wamid`s for one process run. The random run prefix keeps a restarted demo from
/// reusing an id the store already holds, which Confab would rightly drop as a re-delivery.
#[derive(Debug)]
struct WamidSource {
    run: u64,
    next: AtomicU64,
}

impl WamidSource {
    fn new() -> Self {
        Self {
            run: rand::random(),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self, kind: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("wamid.{kind}{:016X}{n:08X}", self.run)
    }
}

/// Delivers signed webhooks to one channel, as Meta does. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
    phone_number_id: String,
    app_secret: String,
    ids: Arc<WamidSource>,
}

impl WebhookSender {
    pub fn new(url: &str, phone_number_id: &str, app_secret: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .build()
            .context("cannot build the webhook HTTP client")?;
        Ok(Self {
            client,
            url: url.to_owned(),
            phone_number_id: phone_number_id.to_owned(),
            app_secret: app_secret.to_owned(),
            ids: Arc::new(WamidSource::new()),
        })
    }

    /// Delivers a text a lead wrote; returns its new `wamid`.
    pub async fn inbound_text(
        &self,
        from: &str,
        profile_name: &str,
        text: &str,
    ) -> anyhow::Result<String> {
        let wamid = self.ids.next("LEAD");
        let body = wire::inbound_text_webhook(
            &self.phone_number_id,
            from,
            profile_name,
            &wamid,
            now_secs(),
            text,
        );
        self.post(&body).await?;
        Ok(wamid)
    }

    /// Reports a delivery status (`sent`, `delivered`, `read`, `failed`) of a sent message.
    pub async fn status(&self, wamid: &str, status: &str, recipient: &str) -> anyhow::Result<()> {
        let body =
            wire::status_webhook(&self.phone_number_id, wamid, status, now_secs(), recipient);
        self.post(&body).await
    }

    /// Posts `body` with its signature; anything but a 200 is an error.
    async fn post(&self, body: &Value) -> anyhow::Result<()> {
        let (raw, signature) = signed(&self.app_secret, body);
        let response = self
            .client
            .post(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(wire::SIGNATURE_HEADER, signature)
            .body(raw)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        let status = response.status();
        if status != StatusCode::OK {
            let text = response.text().await.unwrap_or_default();
            anyhow::bail!("the webhook answered HTTP {status}: {}", text.trim());
        }
        Ok(())
    }
}

/// The raw body Meta would send for `body`, and its `X-Hub-Signature-256` value.
fn signed(app_secret: &str, body: &Value) -> (Vec<u8>, String) {
    let raw = body.to_string().into_bytes();
    let signature = wire::sign(app_secret, &raw);
    (raw, signature)
}

fn now_secs() -> i64 {
    confab_engine::time::now_millis() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_engine::model::Delivery;
    use tokio::sync::mpsc;

    const SECRET: &str = "app-secret";
    const ACCESS: &str = "access-token";
    const NUMBER: &str = "100000000000002";

    #[test]
    fn the_send_response_has_graphs_shape() {
        let body = send_response("5511987654321", "wamid.X").to_string();
        let wamid = wire::parse_send_response(200, body.as_bytes()).expect("a wamid");
        assert_eq!(wamid, "wamid.X");
        let json: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["messaging_product"], "whatsapp");
        assert_eq!(json["contacts"][0]["input"], "5511987654321");
        assert_eq!(json["contacts"][0]["wa_id"], "5511987654321");
    }

    #[test]
    fn errors_have_graphs_shape_and_are_not_retryable() {
        let body = graph_error_body(100, "(#100) Invalid parameter", Some("why")).to_string();
        let error = wire::parse_send_response(400, body.as_bytes()).expect_err("an error");
        assert_eq!(error.code, Some(100));
        assert!(!error.retryable);
        let json: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["error"]["type"], "OAuthException");
        assert_eq!(json["error"]["error_data"]["details"], "why");
    }

    #[test]
    fn the_body_confab_sends_is_accepted() {
        let body = wire::text_message_body("5511987654321", "Hello there").to_string();
        assert_eq!(
            parse_send_request(body.as_bytes()),
            Ok(SendRequest {
                to: "5511987654321".into(),
                kind: "text".into(),
                text: Some("Hello there".into()),
            })
        );
        let template =
            wire::template_message_body("5511987654321", "follow_up", "en_US", json!([]));
        let request = parse_send_request(template.to_string().as_bytes()).expect("valid");
        assert_eq!(request.text.as_deref(), Some("[template follow_up]"));
    }

    #[test]
    fn malformed_sends_are_refused() {
        for body in [
            "not json",
            r#"{"to":"1","type":"text","text":{"body":"x"}}"#,
            r#"{"messaging_product":"whatsapp","type":"text","text":{"body":"x"}}"#,
            r#"{"messaging_product":"whatsapp","to":"1","type":"text","text":{}}"#,
            r#"{"messaging_product":"whatsapp","to":"1","type":"template","template":{}}"#,
        ] {
            assert!(parse_send_request(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn webhooks_are_signed_over_the_exact_body() {
        let body = wire::status_webhook(NUMBER, "wamid.X", "read", 1_767_225_600, "5511987654321");
        let (raw, signature) = signed(SECRET, &body);
        assert!(wire::verify_signature(SECRET, &raw, Some(&signature)).is_ok());
        assert!(wire::verify_signature("other", &raw, Some(&signature)).is_err());
    }

    #[test]
    fn wamids_are_unique() {
        let ids = WamidSource::new();
        let a = ids.next("LEAD");
        let b = ids.next("LEAD");
        assert_ne!(a, b);
        assert!(a.starts_with("wamid.LEAD"));
    }

    /// A webhook endpoint that checks signatures and hands over what it received.
    async fn webhook_receiver() -> (String, mpsc::UnboundedReceiver<wire::WebhookBatch>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let router = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let signature = headers
                        .get(wire::SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok());
                    if wire::verify_signature(SECRET, &body, signature).is_err() {
                        return StatusCode::UNAUTHORIZED;
                    }
                    let _ = tx.send(wire::parse_webhook(&body).expect("a webhook"));
                    StatusCode::OK
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (url, rx)
    }

    async fn next_batch(
        rx: &mut mpsc::UnboundedReceiver<wire::WebhookBatch>,
    ) -> wire::WebhookBatch {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a webhook in time")
            .expect("the receiver is alive")
    }

    #[tokio::test]
    async fn a_send_is_answered_then_reported_sent_delivered_and_read() {
        let (url, mut webhooks) = webhook_receiver().await;
        let mut config = SandboxConfig::new(url, NUMBER, SECRET, ACCESS);
        config.status_schedule = DEFAULT_STATUS_SCHEDULE
            .iter()
            .map(|(_, status)| (Duration::ZERO, *status))
            .collect();
        let sandbox = start(config).await.expect("sandbox");
        let mut sent = sandbox.subscribe();
        let client = reqwest::Client::new();
        let endpoint = format!("{}/{NUMBER}/messages", sandbox.base_url);
        let body = wire::text_message_body("5511987654321", "Hi Ana");

        let refused = client
            .post(&endpoint)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let refused = client
            .post(format!("{}/999/messages", sandbox.base_url))
            .bearer_auth(ACCESS)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);

        let response = client
            .post(&endpoint)
            .bearer_auth(ACCESS)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        let answer = response.bytes().await.expect("body");
        let wamid = wire::parse_send_response(200, &answer).expect("a wamid");

        let message = sent.recv().await.expect("broadcast");
        assert_eq!(message.wamid, wamid);
        assert_eq!(message.text.as_deref(), Some("Hi Ana"));
        for expected in [Delivery::Sent, Delivery::Delivered, Delivery::Read] {
            let batch = next_batch(&mut webhooks).await;
            assert_eq!(batch.statuses.len(), 1);
            assert_eq!(batch.statuses[0].wamid, wamid);
            assert_eq!(batch.statuses[0].status, expected);
            assert_eq!(batch.statuses[0].phone_number_id, NUMBER);
        }

        let inbound = sandbox
            .webhooks()
            .inbound_text("5511987654321", "Ana Lima", "Thanks!")
            .await
            .expect("delivered");
        let batch = next_batch(&mut webhooks).await;
        assert_eq!(batch.messages[0].wamid, inbound);
        assert_eq!(batch.messages[0].text, "Thanks!");
        assert_eq!(batch.messages[0].profile_name.as_deref(), Some("Ana Lima"));
        sandbox.stop().await;
    }
}
