//! The shared harness: a running server, a provisioned workspace, a Graph API stand-in,
//! WebSocket clients, and waiting for conditions with a deadline.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use confab_gateway::{Config, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `check` returns `Some`, polling, failing the test after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Confab server running in this process, on its own data directory.
pub struct TestServer {
    pub server: Option<Server>,
    pub dir: Arc<tempfile::TempDir>,
    pub admin_token: String,
    pub http: reqwest::Client,
    pub config: Config,
}

pub fn test_config(dir: PathBuf) -> Config {
    Config {
        data_dir: dir,
        admin_token: Some(format!("admin-{}", confab_engine::admin::new_token())),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut config = test_config(dir.path().to_path_buf());
        adjust(&mut config);
        Self::boot(dir, config).await
    }

    /// A server whose channels count days by `clock` (daily send budgets).
    pub async fn start_with_clock(
        clock: confab_actors::SharedClock,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut config = test_config(dir.path().to_path_buf());
        adjust(&mut config);
        Self::boot_with(dir, config, clock).await
    }

    async fn boot(dir: Arc<tempfile::TempDir>, config: Config) -> TestServer {
        Self::boot_with(dir, config, Arc::new(confab_actors::SystemClock)).await
    }

    async fn boot_with(
        dir: Arc<tempfile::TempDir>,
        config: Config,
        clock: confab_actors::SharedClock,
    ) -> TestServer {
        let listener = TcpListener::bind(config.listen).await.expect("bind");
        let server = confab_gateway::start_with_clock(config.clone(), listener, clock)
            .await
            .expect("server starts");
        TestServer {
            server: Some(server),
            admin_token: config.admin_token.clone().unwrap_or_default(),
            dir,
            http: reqwest::Client::new(),
            config,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.server().addr(), path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.server().addr(), path)
    }

    /// Graceful stop and start again on the same data directory (new port).
    /// Restarts on the address it had (as a supervisor restarting the process would), so
    /// clients reconnect to the same URL.
    pub async fn restart_on_same_address(mut self) -> TestServer {
        let server = self.server.take().expect("running");
        let addr = server.addr();
        server.shutdown().await.expect("clean shutdown");
        let mut config = self.config.clone();
        config.listen = addr;
        Self::boot(self.dir.clone(), config).await
    }

    /// Restarts in the same data directory with `clock` (a server started with a clock
    /// keeps it only if it is given again).
    pub async fn restart_with_clock(mut self, clock: confab_actors::SharedClock) -> TestServer {
        let server = self.server.take().expect("running");
        server.shutdown().await.expect("clean shutdown");
        Self::boot_with(self.dir.clone(), self.config.clone(), clock).await
    }

    pub async fn restart(mut self) -> TestServer {
        let server = self.server.take().expect("running");
        server.shutdown().await.expect("clean shutdown");
        Self::boot(self.dir.clone(), self.config.clone()).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .expect("request");
        checked("POST", path, response).await
    }

    pub async fn admin_patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .patch(self.url(path))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .expect("request");
        checked("PATCH", path, response).await
    }

    /// A workspace with an admin agent and a WhatsApp channel sending to `graph`.
    pub async fn provision(&self, graph: &GraphStandIn) -> Tenant {
        let (status, ws) = self
            .admin_post("/api/v1/admin/workspaces", json!({"name": "Acme Leads"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ws}");
        let ws_id = ws["id"].as_str().expect("workspace id").to_string();
        let (status, agent) = self
            .admin_post(
                &format!("/api/v1/admin/workspaces/{ws_id}/agents"),
                json!({"name": "Ana Agent", "email": "ana@acme.test", "role": "admin"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{agent}");
        let app_secret = format!("secret-{}", confab_engine::admin::new_token());
        let phone_number_id = "106540352242922".to_string();
        let (status, channel) = self
            .admin_post(
                &format!("/api/v1/admin/workspaces/{ws_id}/channels"),
                json!({
                    "kind": "whatsapp",
                    "name": "Sales WhatsApp",
                    "phone_number_id": phone_number_id,
                    "app_secret": app_secret,
                    "verify_token": "verify-me",
                    "access_token": GRAPH_TOKEN,
                    "api_base_url": graph.base_url,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{channel}");
        Tenant {
            workspace_id: ws_id,
            agent_id: agent["id"].as_str().expect("agent id").to_string(),
            token: agent["token"].as_str().expect("token").to_string(),
            channel_id: channel["id"].as_str().expect("channel id").to_string(),
            app_secret,
            phone_number_id,
        }
    }

    /// Enables the tenant's AI agent with a quiet period longer than any test: new
    /// conversations start with the AI active, and it never answers during the test. For
    /// tests of other features that expect the AI-active default.
    pub async fn enable_ai_later(&self, tenant: &Tenant) {
        let (status, config) = self
            .put(
                &tenant.token,
                "/api/v1/ai/config",
                json!({"enabled": true, "reply_delay_ms": 600_000}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{config}");
    }

    pub async fn put(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .put(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        checked("PUT", path, response).await
    }

    pub async fn patch_json(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .patch(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        checked("PATCH", path, response).await
    }

    pub async fn delete(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        checked("DELETE", path, response).await
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        checked("GET", path, response).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        checked("POST", path, response).await
    }

    /// Posts a webhook body signed with `secret` (or unsigned / with a raw header).
    pub async fn post_webhook(
        &self,
        tenant: &Tenant,
        body: &[u8],
        signature: Option<String>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(self.url(&format!("/webhooks/whatsapp/{}", tenant.channel_id)))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        let path = format!("/webhooks/whatsapp/{}", tenant.channel_id);
        checked("POST", &path, request.send().await.expect("request")).await
    }

    /// A lead's text message through the signed webhook path; asserts the 200.
    pub async fn lead_says(
        &self,
        tenant: &Tenant,
        wa_id: &str,
        name: &str,
        wamid: &str,
        text: &str,
    ) -> Value {
        let (body, signature) =
            crate::process::signed_text_webhook(tenant, wa_id, name, wamid, text);
        let (status, answer) = self
            .post_webhook(tenant, body.as_bytes(), Some(signature))
            .await;
        assert_eq!(status, StatusCode::OK, "webhook answered {answer}");
        answer
    }

    /// A lead's first text message from a click-to-WhatsApp ad whose headline is
    /// `campaign`; asserts the 200.
    pub async fn lead_from_ad(
        &self,
        tenant: &Tenant,
        wa_id: &str,
        wamid: &str,
        text: &str,
        campaign: &str,
    ) -> Value {
        let mut body = confab_engine::wire::whatsapp::inbound_text_webhook(
            &tenant.phone_number_id,
            wa_id,
            "Lead",
            wamid,
            confab_engine::time::now_millis() / 1000,
            text,
        );
        body["entry"][0]["changes"][0]["value"]["messages"][0]["referral"] = serde_json::json!({
            "source_type": "ad", "source_id": "120210001", "headline": campaign,
        });
        let body = body.to_string();
        let signature = confab_engine::wire::whatsapp::sign(&tenant.app_secret, body.as_bytes());
        let (status, answer) = self
            .post_webhook(tenant, body.as_bytes(), Some(signature))
            .await;
        assert_eq!(status, StatusCode::OK, "webhook answered {answer}");
        answer
    }

    /// The conversation of the lead with WhatsApp id `wa_id`, once it exists.
    pub async fn conversation_of(&self, tenant: &Tenant, wa_id: &str) -> Value {
        let phone = format!("+{wa_id}");
        wait_for("the lead's conversation", || async {
            self.conversations(&tenant.token)
                .await
                .into_iter()
                .find(|c| c["contact"]["phone"] == phone.as_str())
        })
        .await
    }

    pub async fn conversations(&self, token: &str) -> Vec<Value> {
        let (status, page) = self.get(token, "/api/v1/conversations?limit=200").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["items"].as_array().cloned().unwrap_or_default()
    }

    pub async fn messages(&self, token: &str, conversation_id: &str) -> Vec<Value> {
        let (status, page) = self
            .get(
                token,
                &format!("/api/v1/conversations/{conversation_id}/messages?limit=200"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// The hits of one word in the search index itself, message hits first in the pair
    /// (the API drops hits of conversations it cannot find: erasure and retention tests
    /// look underneath it).
    pub async fn index_hits(&self, workspace: &str, word: &str) -> (usize, usize) {
        let index = self
            .server()
            .app()
            .runtime
            .search
            .clone()
            .expect("search index");
        let request = confab_index::SearchRequest {
            workspace: workspace.parse().expect("workspace id"),
            query: confab_index::ParsedQuery::parse(word).expect("query"),
            channel: None,
            intent: None,
            since: None,
            conversation: None,
            offset: 0,
            limit: 10,
        };
        let page =
            tokio::task::spawn_blocking(move || index.search(&request, 100, |_| Ok(Some(()))))
                .await
                .expect("search task")
                .expect("search");
        let messages = page
            .items
            .iter()
            .filter(|(hit, _)| hit.message_id.is_some())
            .count();
        (messages, page.items.len() - messages)
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// [`status_json`], and the answer checked against the OpenAPI document.
pub async fn checked(method: &str, path: &str, response: reqwest::Response) -> (StatusCode, Value) {
    let (status, body) = status_json(response).await;
    crate::contract::check(method, path, status, &body);
    (status, body)
}

pub async fn status_json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// What `provision` made.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub workspace_id: String,
    pub agent_id: String,
    pub token: String,
    pub channel_id: String,
    pub app_secret: String,
    pub phone_number_id: String,
}

/// One request the Graph API stand-in received.
#[derive(Clone, Debug)]
pub struct GraphRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// A loopback stand-in for the WhatsApp Cloud API's send endpoint, speaking its wire
/// format. Answers from a script (status, body) first, then 200 with a fresh wamid.
#[derive(Clone)]
pub struct GraphStandIn {
    pub base_url: String,
    state: Arc<GraphState>,
}

#[derive(Default)]
struct GraphState {
    requests: Mutex<Vec<GraphRequest>>,
    script: Mutex<VecDeque<(u16, Value)>>,
    issued: Mutex<Vec<String>>,
    /// Media files by media id: (type, bytes), served with the access token only.
    media: Mutex<std::collections::HashMap<String, (String, Vec<u8>)>>,
    /// Where the stand-in listens (the media URLs it names).
    origin: Mutex<String>,
}

/// The access token every provisioned channel sends (see `TestServer::provision`).
pub const GRAPH_TOKEN: &str = "graph-access-token";

impl GraphStandIn {
    pub async fn start() -> GraphStandIn {
        let state = Arc::new(GraphState::default());
        let app = Router::new()
            .route("/v21.0/{phone_number_id}/messages", post(graph_send))
            .route("/v21.0/{media_id}", axum::routing::get(graph_media_url))
            .route(
                "/lookaside/{media_id}",
                axum::routing::get(graph_media_file),
            )
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        *state.origin.lock().expect("lock") = format!("http://{addr}");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GraphStandIn {
            base_url: format!("http://{addr}/v21.0"),
            state,
        }
    }

    /// The next answers, in order, before the default success.
    pub fn script(&self, answers: Vec<(u16, Value)>) {
        self.state.script.lock().expect("lock").extend(answers);
    }

    /// Keeps a media file the way the Graph API does: `GET /{media_id}` names a URL, which
    /// serves the bytes to the same bearer token.
    pub fn add_media(&self, media_id: &str, content_type: &str, bytes: &[u8]) {
        self.state
            .media
            .lock()
            .expect("lock")
            .insert(media_id.into(), (content_type.into(), bytes.to_vec()));
    }

    /// Drops the answers still scripted: from now on every send succeeds.
    pub fn clear_script(&self) {
        self.state.script.lock().expect("lock").clear();
    }

    pub fn requests(&self) -> Vec<GraphRequest> {
        self.state.requests.lock().expect("lock").clone()
    }

    pub async fn wait_requests(&self, n: usize) -> Vec<GraphRequest> {
        wait_for(&format!("{n} requests at the Graph stand-in"), || async {
            let requests = self.requests();
            (requests.len() >= n).then_some(requests)
        })
        .await
    }
}

fn graph_authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {GRAPH_TOKEN}"))
}

fn graph_error(status: StatusCode, code: i64, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        Json(json!({"error": {"message": message, "type": "OAuthException", "code": code}})),
    )
        .into_response()
}

/// `GET /{media-id}`: the media's short-lived URL, as the Graph API answers.
async fn graph_media_url(
    State(state): State<Arc<GraphState>>,
    Path(media_id): Path<String>,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !graph_authorized(&headers) {
        return graph_error(StatusCode::UNAUTHORIZED, 190, "Invalid OAuth access token");
    }
    let media = state.media.lock().expect("lock");
    let Some((content_type, bytes)) = media.get(&media_id) else {
        return graph_error(StatusCode::BAD_REQUEST, 100, "Unsupported get request");
    };
    let origin = state.origin.lock().expect("lock").clone();
    Json(json!({
        "messaging_product": "whatsapp",
        "url": format!("{origin}/lookaside/{media_id}"),
        "mime_type": content_type,
        "sha256": "not-checked",
        "file_size": bytes.len().to_string(),
        "id": media_id,
    }))
    .into_response()
}

/// The media URL: the bytes, to the access token only.
async fn graph_media_file(
    State(state): State<Arc<GraphState>>,
    Path(media_id): Path<String>,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !graph_authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match state.media.lock().expect("lock").get(&media_id) {
        Some((content_type, bytes)) => (
            [(axum::http::header::CONTENT_TYPE, content_type.clone())],
            bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn graph_send(
    State(state): State<Arc<GraphState>>,
    Path(phone_number_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    state.requests.lock().expect("lock").push(GraphRequest {
        path: format!("/{phone_number_id}/messages"),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.clone(),
    });
    if let Some((status, answer)) = state.script.lock().expect("lock").pop_front() {
        return (StatusCode::from_u16(status).expect("status"), Json(answer));
    }
    let mut issued = state.issued.lock().expect("lock");
    let wamid = format!("wamid.OUT{}", issued.len() + 1);
    issued.push(wamid.clone());
    let to = body["to"].clone();
    (
        StatusCode::OK,
        Json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": wamid}],
        })),
    )
}

/// A WebSocket client of the delta stream.
pub struct StreamClient {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl StreamClient {
    pub async fn connect(server: &TestServer, token: &str) -> StreamClient {
        let mut request = server
            .ws_url("/api/v1/stream")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        StreamClient { socket }
    }

    pub async fn send(&mut self, frame: Value) {
        self.socket
            .send(WsMessage::Text(frame.to_string().into()))
            .await
            .expect("send frame");
    }

    /// Subscribes and returns the head the server reported.
    pub async fn subscribe(&mut self, since: Option<u64>) -> u64 {
        self.send(json!({"type": "subscribe", "since": since}))
            .await;
        let frame = self.next_of("subscribed").await;
        frame["head"].as_u64().expect("head")
    }

    /// The next JSON text frame, failing after the deadline.
    pub async fn next(&mut self) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("a frame within the deadline");
            match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                    crate::contract::check_server_frame(&frame);
                    return Some(frame);
                }
                Some(Ok(WsMessage::Close(_))) | None => return None,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("stream error: {e}"),
            }
        }
    }

    /// Skips frames until one of `frame_type` arrives.
    pub async fn next_of(&mut self, frame_type: &str) -> Value {
        loop {
            let frame = self.next().await.expect("stream open");
            if frame["type"] == frame_type {
                return frame;
            }
        }
    }

    /// Deltas until one satisfies `done`, returning all of them.
    pub async fn deltas_until(&mut self, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let mut deltas = Vec::new();
        loop {
            let frame = self.next_of("delta").await;
            let stop = done(&frame);
            deltas.push(frame);
            if stop {
                return deltas;
            }
        }
    }

    /// Reads until the server closes the socket; returns the last text frame and the
    /// close code.
    pub async fn until_closed(&mut self) -> (Option<Value>, Option<u16>) {
        let mut last = None;
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("the server closes within the deadline");
            match frame {
                Some(Ok(WsMessage::Text(text))) => last = serde_json::from_str(&text).ok(),
                Some(Ok(WsMessage::Close(close))) => {
                    return (last, close.map(|c| u16::from(c.code)))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (last, None),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// Posts `total` leads' first messages in signed webhooks of `per_webhook` leads each, two
/// webhooks at a time (the provider batches the same way).
pub async fn many_leads(server: &TestServer, tenant: &Tenant, total: usize, per_webhook: usize) {
    let bodies: Vec<String> = (0..total.div_ceil(per_webhook))
        .map(|batch| {
            let leads = (batch * per_webhook..((batch + 1) * per_webhook).min(total)).map(|i| {
                let wa_id = format!("55119{i:08}");
                json!({"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15551230000", "phone_number_id": tenant.phone_number_id},
                    "contacts": [{"profile": {"name": format!("Lead {i}")}, "wa_id": wa_id}],
                    "messages": [{"from": wa_id, "id": format!("wamid.V{i}"), "timestamp": "1767225600",
                                  "type": "text", "text": {"body": format!("hello from lead {i}")}}]}})
            });
            json!({"object": "whatsapp_business_account",
                   "entry": [{"id": "1", "changes": leads.collect::<Vec<_>>()}]})
            .to_string()
        })
        .collect();
    let mut pending = futures_util::stream::iter(bodies.into_iter().map(|body| async move {
        let signature = confab_engine::wire::whatsapp::sign(&tenant.app_secret, body.as_bytes());
        let (status, answer) = server
            .post_webhook(tenant, body.as_bytes(), Some(signature))
            .await;
        assert_eq!(status.as_u16(), 200, "{answer}");
    }))
    .buffer_unordered(2);
    while pending.next().await.is_some() {}
}
