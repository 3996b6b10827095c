//! LinkedIn through Unipile, end to end: the real server, and a loopback stand-in for
//! Unipile's API speaking its wire format (multipart sends with `X-API-KEY`, new chats,
//! chat and message lists for gap repair), able to fail on demand and to post webhooks
//! back to Confab with the channel's `Unipile-Auth` secret.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use confab_actors::ManualClock;
use confab_engine::wire::unipile::{account_status_webhook, message_webhook, Member};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::harness::{wait_for, GraphStandIn, StreamClient, Tenant, TestServer};

const API_KEY: &str = "unipile-api-key";
pub(crate) const ACCOUNT: &str = "acc-linkedin-1";

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub(crate) struct UnipileRequest {
    pub(crate) path: String,
    api_key: Option<String>,
    pub(crate) fields: HashMap<String, String>,
    /// (file name, content type, bytes)
    files: Vec<(String, String, Vec<u8>)>,
}

/// A chat the stand-in keeps: who it is with, and its messages (Unipile's shape).
#[derive(Clone, Debug, Default)]
struct Chat {
    attendee: String,
    name: String,
    messages: Vec<Value>,
}

#[derive(Default)]
pub(crate) struct UnipileState {
    requests: Mutex<Vec<UnipileRequest>>,
    /// Answers to sends, in order, before the default success: (status, body, Retry-After).
    script: Mutex<VecDeque<(u16, Value, Option<u64>)>>,
    chats: Mutex<HashMap<String, Chat>>,
    next_id: Mutex<u64>,
    /// Chat lists read (each gap repair reads one).
    lists: Mutex<usize>,
    /// Where Confab takes this channel's webhooks, and the secret it expects.
    webhook: Mutex<Option<(String, String)>>,
    /// Post the echo of each accepted send to Confab before answering the send.
    echo_first: Mutex<bool>,
    /// The account's source status `GET /api/v1/accounts/{id}` reports (`OK` when unset).
    account_status: Mutex<Option<String>>,
}

#[derive(Clone)]
pub(crate) struct Unipile {
    base_url: String,
    pub(crate) state: Arc<UnipileState>,
    http: reqwest::Client,
}

pub(crate) fn us() -> Member {
    Member {
        provider_id: "ACoAAUS".into(),
        name: "Sam Seller".into(),
        profile_url: None,
    }
}

pub(crate) fn lead(n: u32) -> Member {
    Member {
        provider_id: format!("ACoAALEAD{n}"),
        name: format!("Lead Number{n}"),
        profile_url: Some(format!("https://www.linkedin.com/in/lead{n}")),
    }
}

pub(crate) fn now_text() -> String {
    confab_engine::time::to_rfc3339(confab_engine::time::now_millis())
}

impl Unipile {
    pub(crate) async fn start() -> Unipile {
        let state = Arc::new(UnipileState::default());
        let app = Router::new()
            .route("/api/v1/chats", post(start_chat).get(list_chats))
            .route("/api/v1/accounts/{account_id}", axum::routing::get(account))
            .route(
                "/api/v1/chats/{chat_id}/messages",
                post(send_in_chat).get(list_messages),
            )
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Unipile {
            base_url: format!("http://{addr}"),
            state,
            http: reqwest::Client::new(),
        }
    }

    fn connect(&self, url: String, secret: &str) {
        *self.state.webhook.lock().expect("lock") = Some((url, secret.to_owned()));
    }

    fn script(&self, answers: Vec<(u16, Value, Option<u64>)>) {
        self.state.script.lock().expect("lock").extend(answers);
    }

    fn requests(&self) -> Vec<UnipileRequest> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// Sends received (history reads left out).
    fn sends(&self) -> Vec<UnipileRequest> {
        self.requests()
    }

    pub(crate) async fn wait_sends(&self, n: usize) -> Vec<UnipileRequest> {
        wait_for(&format!("{n} sends at the Unipile stand-in"), || async {
            let sends = self.sends();
            (sends.len() >= n).then_some(sends)
        })
        .await
    }

    /// A message in a chat's history that no webhook announced.
    fn add_history(&self, chat_id: &str, with: &Member, message_id: &str, text: &str, ours: bool) {
        let mut chats = self.state.chats.lock().expect("lock");
        let chat = chats.entry(chat_id.to_owned()).or_insert_with(|| Chat {
            attendee: with.provider_id.clone(),
            name: with.name.clone(),
            messages: Vec::new(),
        });
        let sender = if ours {
            us().provider_id
        } else {
            with.provider_id.clone()
        };
        chat.messages
            .push(history_item(chat_id, message_id, text, ours, &sender));
    }

    /// Posts a webhook body to Confab with the secret given.
    async fn post_with(&self, secret: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let (url, _) = self
            .state
            .webhook
            .lock()
            .expect("lock")
            .clone()
            .expect("connected");
        post_webhook(&self.http, &url, secret, body).await
    }

    pub(crate) async fn post(&self, body: &Value) -> (StatusCode, Value) {
        let secret = self
            .state
            .webhook
            .lock()
            .expect("lock")
            .clone()
            .expect("connected")
            .1;
        self.post_with(Some(&secret), body).await
    }
}

async fn post_webhook(
    http: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let mut request = http.post(url).json(body);
    if let Some(secret) = secret {
        request = request.header("Unipile-Auth", secret);
    }
    let response = request.send().await.expect("webhook request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn history_item(chat_id: &str, id: &str, text: &str, ours: bool, sender: &str) -> Value {
    json!({
        "object": "Message", "id": id, "chat_id": chat_id, "account_id": ACCOUNT,
        "text": text, "timestamp": now_text(), "is_sender": if ours { 1 } else { 0 },
        "sender_id": sender, "attachments": [], "seen": 0,
    })
}

/// Reads a multipart send the way Unipile does.
async fn read_form(
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> (HashMap<String, String>, Vec<(String, String, Vec<u8>)>) {
    let boundary = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .expect("a multipart send");
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let (mut fields, mut files) = (HashMap::new(), Vec::new());
    while let Some(field) = form.next_field().await.expect("a well-formed form") {
        let name = field.name().unwrap_or_default().to_owned();
        match field.file_name().map(str::to_owned) {
            Some(file_name) => {
                let content_type = field
                    .content_type()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                files.push((
                    file_name,
                    content_type,
                    field.bytes().await.expect("file").to_vec(),
                ));
            }
            None => {
                fields.insert(name, field.text().await.expect("text"));
            }
        }
    }
    (fields, files)
}

/// Records a send and answers it: from the script, else accepted (the message joins the
/// chat's history, and its echo is posted first when asked).
async fn answer_send(
    state: &Arc<UnipileState>,
    path: String,
    headers: &HeaderMap,
    body: bytes::Bytes,
    chat: Option<String>,
) -> Response {
    let (fields, files) = read_form(headers, body).await;
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.requests.lock().expect("lock").push(UnipileRequest {
        path,
        api_key,
        fields: fields.clone(),
        files,
    });
    if let Some((status, body, retry_after)) = state.script.lock().expect("lock").pop_front() {
        let mut response =
            (StatusCode::from_u16(status).expect("status"), Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("header"));
        }
        return response;
    }
    let id = {
        let mut next = state.next_id.lock().expect("lock");
        *next += 1;
        format!("msg-out-{next}")
    };
    let text = fields.get("text").cloned().unwrap_or_default();
    let (chat_id, started) = match chat {
        Some(chat) => (chat, false),
        None => (format!("chat-new-{id}"), true),
    };
    let lead_id = fields.get("attendees_ids").cloned();
    {
        let mut chats = state.chats.lock().expect("lock");
        let entry = chats.entry(chat_id.clone()).or_insert_with(|| Chat {
            attendee: lead_id.clone().unwrap_or_default(),
            name: String::new(),
            messages: Vec::new(),
        });
        entry
            .messages
            .push(history_item(&chat_id, &id, &text, true, &us().provider_id));
    }
    let echo_first = *state.echo_first.lock().expect("lock");
    let webhook = state.webhook.lock().expect("lock").clone();
    if let (true, Some((url, secret))) = (echo_first, webhook) {
        let attendee = state
            .chats
            .lock()
            .expect("lock")
            .get(&chat_id)
            .map(|c| c.attendee.clone())
            .unwrap_or_default();
        let lead = Member {
            provider_id: attendee,
            name: "Lead".into(),
            profile_url: None,
        };
        let echo = message_webhook(
            ACCOUNT,
            &us(),
            &lead,
            &chat_id,
            &id,
            &text,
            true,
            &now_text(),
        );
        let (status, _) = post_webhook(&reqwest::Client::new(), &url, Some(&secret), &echo).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the echo before the answer is taken"
        );
    }
    let body = if started {
        json!({"object": "ChatStarted", "chat_id": chat_id, "message_id": id})
    } else {
        json!({"object": "MessageSent", "message_id": id})
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn send_in_chat(
    State(state): State<Arc<UnipileState>>,
    Path(chat_id): Path<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let path = format!("/api/v1/chats/{chat_id}/messages");
    answer_send(&state, path, &headers, body, Some(chat_id)).await
}

async fn start_chat(
    State(state): State<Arc<UnipileState>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    answer_send(&state, "/api/v1/chats".into(), &headers, body, None).await
}

async fn account(
    State(state): State<Arc<UnipileState>>,
    Path(account_id): Path<String>,
) -> Response {
    let status = state
        .account_status
        .lock()
        .expect("lock")
        .clone()
        .unwrap_or_else(|| "OK".into());
    Json(
        json!({"object": "Account", "id": account_id, "type": "LINKEDIN",
                "sources": [{"id": format!("{account_id}_MESSAGING"), "status": status}]}),
    )
    .into_response()
}

async fn list_chats(
    State(state): State<Arc<UnipileState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("x-api-key").is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    assert_eq!(query.get("account_id").map(String::as_str), Some(ACCOUNT));
    *state.lists.lock().expect("lock") += 1;
    let items: Vec<Value> = state
        .chats
        .lock()
        .expect("lock")
        .iter()
        .map(|(id, chat)| {
            json!({"object": "Chat", "id": id, "account_id": ACCOUNT, "name": chat.name,
                   "attendee_provider_id": chat.attendee, "timestamp": now_text()})
        })
        .collect();
    Json(json!({"object": "ChatList", "items": items, "cursor": null})).into_response()
}

/// A chat's messages, newest first, two per page (so repair follows cursors).
async fn list_messages(
    State(state): State<Arc<UnipileState>>,
    Path(chat_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("x-api-key").is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let messages: Vec<Value> = state
        .chats
        .lock()
        .expect("lock")
        .get(&chat_id)
        .map(|c| c.messages.iter().rev().cloned().collect())
        .unwrap_or_default();
    let from: usize = query
        .get("cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = messages.iter().skip(from).take(2).cloned().collect();
    let cursor = (from + 2 < messages.len()).then(|| (from + 2).to_string());
    Json(json!({"object": "MessageList", "items": page, "cursor": cursor})).into_response()
}

struct Setup {
    server: TestServer,
    tenant: Tenant,
    unipile: Unipile,
    channel: String,
    secret: String,
}

pub(crate) async fn linkedin_channel(
    server: &TestServer,
    tenant: &Tenant,
    unipile: &Unipile,
    extra: Value,
) -> (String, String) {
    let secret = format!("hook-{}", confab_engine::admin::new_token());
    let mut body = json!({
        "kind": "linkedin", "name": "Sam's LinkedIn", "account_id": ACCOUNT,
        "api_base_url": unipile.base_url, "api_key": API_KEY, "webhook_secret": secret,
        "min_interval_secs": 0,
    });
    for (k, v) in extra.as_object().expect("an object") {
        body[k] = v.clone();
    }
    let (status, channel) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/channels", tenant.workspace_id),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    assert!(channel.get("api_key").is_none() && channel.get("webhook_secret").is_none());
    let id = channel["id"].as_str().expect("id").to_owned();
    unipile.connect(server.url(&format!("/webhooks/linkedin/{id}")), &secret);
    (id, secret)
}

async fn setup(adjust: impl FnOnce(&mut confab_gateway::Config), extra: Value) -> Setup {
    let server = TestServer::start_with(|c| {
        c.channels.retry_base_ms = 5;
        c.channels.retry_max_ms = 2_000;
        adjust(c);
    })
    .await;
    setup_on(server, extra).await
}

async fn setup_on(server: TestServer, extra: Value) -> Setup {
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let unipile = Unipile::start().await;
    let (channel, secret) = linkedin_channel(&server, &tenant, &unipile, extra).await;
    Setup {
        server,
        tenant,
        unipile,
        channel,
        secret,
    }
}

impl Setup {
    async fn lead_writes(&self, n: u32, chat: &str, id: &str, text: &str) -> (StatusCode, Value) {
        let body = message_webhook(ACCOUNT, &us(), &lead(n), chat, id, text, false, &now_text());
        self.unipile.post(&body).await
    }

    /// The workspace's LinkedIn conversation (each test has one lead at a time).
    async fn conversation_of_chat(&self, chat: &str) -> Value {
        wait_for(&format!("the conversation of {chat}"), || async {
            let all = self.server.conversations(&self.tenant.token).await;
            all.into_iter().find(|c| c["channel"] == "linkedin")
        })
        .await
    }

    async fn messages(&self, conversation: &str) -> Vec<Value> {
        self.server.messages(&self.tenant.token, conversation).await
    }

    async fn reply(&self, conversation: &str, text: &str) -> String {
        let (status, message) = self
            .server
            .post(
                &self.tenant.token,
                &format!("/api/v1/conversations/{conversation}/messages"),
                json!({"text": text}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{message}");
        message["id"].as_str().expect("id").to_owned()
    }

    async fn message_until(
        &self,
        conversation: &str,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(what, || async {
            self.messages(conversation)
                .await
                .into_iter()
                .find(|m| m["id"] == id)
                .filter(|m| check(m))
        })
        .await
    }

    async fn health_until(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, || async {
            let (status, h) = self
                .server
                .get(
                    &self.tenant.token,
                    &format!("/api/v1/channels/{}", self.channel),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{h}");
            check(&h).then_some(h)
        })
        .await
    }
}

#[tokio::test]
async fn a_leads_message_is_stored_once_whether_it_came_by_webhook_by_repair_or_both() {
    let s = setup(|c| c.linkedin.repair_interval_secs = 1, json!({})).await;
    // Unipile names the sender's headline too.
    let mut body = message_webhook(
        ACCOUNT,
        &us(),
        &lead(1),
        "chat-1",
        "in-1",
        "Hi, saw your post",
        false,
        &now_text(),
    );
    body["sender"]["attendee_specifics"] = json!({"occupation": "Head of Growth at Zephyrlabs"});
    let (status, first) = s.unipile.post(&body).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["stored"], 1);
    let (status, again) = s
        .lead_writes(1, "chat-1", "in-1", "Hi, saw your post")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        again["duplicates"], 1,
        "Unipile's retry is a duplicate: {again}"
    );

    let conversation = s.conversation_of_chat("chat-1").await;
    let id = conversation["id"].as_str().expect("id").to_owned();
    assert_eq!(conversation["contact"]["name"], "Lead Number1");
    assert_eq!(
        conversation["contact"]["profile_url"],
        "https://www.linkedin.com/in/lead1"
    );
    assert_eq!(
        conversation["contact"]["title"],
        "Head of Growth at Zephyrlabs"
    );
    // LinkedIn in the inbox's filters and in search (by the headline's company).
    let (status, page) = s
        .server
        .get(&s.tenant.token, "/api/v1/conversations?channel=linkedin")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"][0]["id"], id.as_str(), "{page}");
    let (_, page) = s
        .server
        .get(&s.tenant.token, "/api/v1/conversations?channel=whatsapp")
        .await;
    assert!(
        page["items"].as_array().is_some_and(|i| i.is_empty()),
        "{page}"
    );
    wait_for("the lead found by their headline", || async {
        let (_, hits) = s
            .server
            .get(
                &s.tenant.token,
                "/api/v1/search?q=zephyrlabs&channel=linkedin",
            )
            .await;
        hits["items"]
            .as_array()?
            .iter()
            .any(|h| h["conversation_id"] == id.as_str())
            .then_some(())
    })
    .await;

    // The same message in the chat's history, and two the webhooks never brought.
    s.unipile
        .add_history("chat-1", &lead(1), "in-1", "Hi, saw your post", false);
    s.unipile
        .add_history("chat-1", &lead(1), "in-2", "Are you there?", false);
    s.unipile
        .add_history("chat-1", &lead(1), "in-3", "Call me maybe", false);
    let messages = wait_for("repair to find the missed messages", || async {
        let messages = s.messages(&id).await;
        (messages.len() >= 3).then_some(messages)
    })
    .await;
    let mut in_order = messages.clone();
    in_order.sort_by_key(|m| m["seq"].as_u64());
    let texts: Vec<&str> = in_order.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(
        texts,
        ["Hi, saw your post", "Are you there?", "Call me maybe"]
    );
    // A webhook arriving after the repair found its message is a duplicate too.
    let (_, late) = s.lead_writes(1, "chat-1", "in-3", "Call me maybe").await;
    assert_eq!(late["duplicates"], 1, "{late}");
    // Repairs keep running: nothing is stored twice.
    let lists = *s.unipile.state.lists.lock().expect("lock");
    wait_for("two more repairs", || async {
        (*s.unipile.state.lists.lock().expect("lock") >= lists + 2).then_some(())
    })
    .await;
    assert_eq!(s.messages(&id).await.len(), 3);
    let all = s.server.conversations(&s.tenant.token).await;
    assert_eq!(all.iter().filter(|c| c["channel"] == "linkedin").count(), 1);
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_reply_is_the_exact_multipart_request_and_echoes_of_it_are_no_duplicates() {
    let s = setup(|_| {}, json!({})).await;
    s.lead_writes(2, "chat-2", "in-1", "Tell me more").await;
    let conversation = s.conversation_of_chat("chat-2").await;
    let id = conversation["id"].as_str().expect("id").to_owned();

    let reply = s.reply(&id, "Happy to, {{first_name}}!").await;
    let sends = s.unipile.wait_sends(1).await;
    assert_eq!(sends[0].path, "/api/v1/chats/chat-2/messages");
    assert_eq!(sends[0].api_key.as_deref(), Some(API_KEY));
    assert_eq!(
        sends[0].fields.get("text").map(String::as_str),
        Some("Happy to, Lead!")
    );
    assert_eq!(
        sends[0].fields.len(),
        1,
        "only the text: {:?}",
        sends[0].fields
    );
    let sent = s
        .message_until(&id, &reply, "sent", |m| m["delivery"] == "sent")
        .await;
    assert_eq!(sent["external_id"], "msg-out-1");

    // Unipile's webhook for our own send: it only confirms it.
    let echo = message_webhook(
        ACCOUNT,
        &us(),
        &lead(2),
        "chat-2",
        "msg-out-1",
        "Happy to, Lead!",
        true,
        &now_text(),
    );
    let (status, report) = s.unipile.post(&echo).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["duplicates"], 1, "{report}");

    // The echo can beat Unipile's answer to the send: still one message.
    *s.unipile.state.echo_first.lock().expect("lock") = true;
    let second = s.reply(&id, "Here is our deck").await;
    s.unipile.wait_sends(2).await;
    let sent = s
        .message_until(&id, &second, "the second sent", |m| m["delivery"] == "sent")
        .await;
    assert_eq!(sent["external_id"], "msg-out-2");
    let messages = s.messages(&id).await;
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages.iter().all(|m| m.get("sent_elsewhere").is_none()));

    // A file goes as a multipart file part.
    let (status, with_file) = s
        .server
        .post(
            &s.tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "The deck", "attachments": [{"name": "deck.pdf", "content_type": "application/pdf", "data": "JVBERi0xLjQK"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{with_file}");
    let sends = s.unipile.wait_sends(3).await;
    assert_eq!(
        sends[2].files,
        vec![(
            "deck.pdf".to_owned(),
            "application/pdf".to_owned(),
            b"%PDF-1.4\n".to_vec()
        )]
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_message_typed_on_linkedin_is_ours_and_pauses_the_ai() {
    let s = setup(|_| {}, json!({})).await;
    s.server.enable_ai_later(&s.tenant).await;
    s.lead_writes(3, "chat-3", "in-1", "Interested").await;
    let conversation = s.conversation_of_chat("chat-3").await;
    assert_eq!(conversation["ai_mode"], "active");
    let id = conversation["id"].as_str().expect("id").to_owned();

    let typed = message_webhook(
        ACCOUNT,
        &us(),
        &lead(3),
        "chat-3",
        "typed-1",
        "Let me call you",
        true,
        &now_text(),
    );
    let (status, report) = s.unipile.post(&typed).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["stored"], 1, "{report}");
    let messages = s.messages(&id).await;
    let ours = messages
        .iter()
        .find(|m| m["external_id"] == "typed-1")
        .expect("stored");
    assert_eq!(ours["direction"], "outbound");
    assert_eq!(ours["sender"], "agent");
    assert_eq!(ours["sent_elsewhere"], true);
    assert_eq!(ours["delivery"], "sent");
    let (_, detail) = s
        .server
        .get(&s.tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(detail["ai_mode"], "paused", "{detail}");
    assert!(s.unipile.sends().is_empty(), "nothing was sent by Confab");

    // The lead's reaction, an edit of the lead's message, a deletion, a read receipt, and
    // an event Confab does not use.
    let base = json!({"account_id": ACCOUNT, "account_type": "LINKEDIN", "account_info": {"user_id": us().provider_id}, "timestamp": now_text()});
    let with = |extra: Value| {
        let mut body = base.clone();
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    let (_, r) = s.unipile.post(&with(json!({"event": "message_reaction", "message_id": "typed-1", "reaction": "👍", "reaction_sender": {"attendee_provider_id": lead(3).provider_id}}))).await;
    assert_eq!(r["statuses"], 1, "{r}");
    s.unipile
        .post(&with(
            json!({"event": "message_edited", "message_id": "in-1", "message": "Very interested"}),
        ))
        .await;
    s.unipile
        .post(&with(
            json!({"event": "message_deleted", "message_id": "in-1"}),
        ))
        .await;
    s.unipile.post(&with(json!({"event": "message_read", "chat_id": "chat-3", "sender": {"attendee_provider_id": lead(3).provider_id}}))).await;
    let (status, ignored) = s
        .unipile
        .post(&with(json!({"event": "message_delivered_somewhere_new"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ignored["ignored"], 1, "{ignored}");

    let messages = s.messages(&id).await;
    let theirs = messages
        .iter()
        .find(|m| m["external_id"] == "in-1")
        .expect("lead's");
    assert_eq!(theirs["text"], "Very interested");
    assert_eq!(theirs["edits"][0]["text"], "Interested");
    assert!(theirs["deleted_at"].is_string(), "{theirs}");
    let ours = messages
        .iter()
        .find(|m| m["external_id"] == "typed-1")
        .expect("ours");
    assert_eq!(ours["reactions"][0]["emoji"], "👍");
    assert_eq!(ours["reactions"][0]["by"], "lead");
    assert_eq!(ours["delivery"], "read");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_chat_started_from_the_api_becomes_the_conversation_of_the_providers_chat() {
    let s = setup(|_| {}, json!({})).await;
    let (status, started) = s
        .server
        .post(
            &s.tenant.token,
            "/api/v1/conversations",
            json!({"channel_id": s.channel, "to": {"provider_id": lead(4).provider_id, "name": "Lead Number4"}, "text": "Hello {{first_name}}, quick question"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(started["created"], true);
    let id = started["conversation"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let sends = s.unipile.wait_sends(1).await;
    assert_eq!(sends[0].path, "/api/v1/chats");
    assert_eq!(
        sends[0].fields.get("account_id").map(String::as_str),
        Some(ACCOUNT)
    );
    assert_eq!(
        sends[0].fields.get("attendees_ids").map(String::as_str),
        Some(lead(4).provider_id.as_str())
    );
    assert_eq!(
        sends[0].fields.get("text").map(String::as_str),
        Some("Hello Lead, quick question")
    );
    let first = started["message"]["id"].as_str().expect("id").to_owned();
    s.message_until(&id, &first, "sent", |m| m["delivery"] == "sent")
        .await;

    // The lead answers in the chat Unipile opened: the same conversation.
    let chat = "chat-new-msg-out-1";
    let (_, stored) = s.lead_writes(4, chat, "in-4", "Sure, ask away").await;
    assert_eq!(stored["stored"], 1, "{stored}");
    let messages = s.messages(&id).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    // Replies now go to the chat; writing first again continues this conversation.
    s.reply(&id, "Thanks!").await;
    let sends = s.unipile.wait_sends(2).await;
    assert_eq!(sends[1].path, format!("/api/v1/chats/{chat}/messages"));
    let (status, again) = s
        .server
        .post(
            &s.tenant.token,
            "/api/v1/conversations",
            json!({"channel_id": s.channel, "to": {"provider_id": lead(4).provider_id}, "text": "One more thing"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["conversation"]["id"], id.as_str());
    let all = s.server.conversations(&s.tenant.token).await;
    assert_eq!(all.iter().filter(|c| c["channel"] == "linkedin").count(), 1);

    // A channel that cannot write first says so.
    let (status, refused) = s
        .server
        .post(
            &s.tenant.token,
            "/api/v1/conversations",
            json!({"channel_id": s.tenant.channel_id, "to": {"provider_id": "x"}, "text": "hi"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "cannot_start_conversation");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_sent_once_later_and_a_refused_key_marks_the_channel() {
    let s = setup(|_| {}, json!({})).await;
    s.lead_writes(5, "chat-5", "in-1", "Hello").await;
    let id = s.conversation_of_chat("chat-5").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    s.unipile.script(vec![(
        429,
        json!({"status": 429, "type": "errors/too_many_requests", "title": "Too many requests"}),
        Some(1),
    )]);
    let reply = s.reply(&id, "Answer").await;
    let sent = s
        .message_until(&id, &reply, "sent after the wait", |m| {
            m["delivery"] == "sent"
        })
        .await;
    assert_eq!(sent["external_id"], "msg-out-1");
    assert_eq!(s.unipile.sends().len(), 2, "one refused, one accepted");

    s.unipile.script(vec![(
        401,
        json!({"status": 401, "type": "errors/invalid_credentials", "title": "Unauthorized"}),
        None,
    )]);
    let held = s.reply(&id, "Second").await;
    s.health_until("auth_failed", |h| h["status"] == "auth_failed")
        .await;
    let m = s
        .message_until(&id, &held, "held", |m| {
            m["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("auth_failed"))
        })
        .await;
    assert_eq!(m["delivery"], "queued");
    // A new key releases it.
    let (status, _) = s
        .server
        .admin_patch(
            &format!(
                "/api/v1/admin/workspaces/{}/channels/{}",
                s.tenant.workspace_id, s.channel
            ),
            json!({"api_key": "a-rotated-key"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    s.message_until(&id, &held, "sent with the new key", |m| {
        m["delivery"] == "sent"
    })
    .await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_disconnected_account_holds_sends_which_go_in_order_when_it_runs_again() {
    // Repairs (and, while the account is down, probes of it) every second.
    let s = setup(|c| c.linkedin.repair_interval_secs = 1, json!({})).await;
    let mut stream = StreamClient::connect(&s.server, &s.tenant.token).await;
    stream.subscribe(None).await;
    s.lead_writes(6, "chat-6", "in-1", "Hello").await;
    let id = s.conversation_of_chat("chat-6").await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    *s.unipile.state.account_status.lock().expect("lock") = Some("STOPPED".into());
    let (status, _) = s
        .unipile
        .post(&account_status_webhook(ACCOUNT, "STOPPED"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let update = stream
        .deltas_until(|d| {
            d["kind"] == "channel_updated" && d["channel"]["status"] == "disconnected"
        })
        .await;
    assert_eq!(
        update.last().expect("delta")["channel"]["last_error"]["code"],
        "disconnected"
    );
    let first = s.reply(&id, "one").await;
    let second = s.reply(&id, "two").await;
    let held = s
        .message_until(&id, &first, "held", |m| {
            m["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("disconnected"))
        })
        .await;
    assert_eq!(held["delivery"], "queued");
    let h = s
        .health_until("two waiting", |h| h["outbox_depth"] == 2)
        .await;
    assert_eq!(h["status"], "disconnected");
    assert!(s.unipile.sends().is_empty());

    // Unipile's newer event shape: the account runs again.
    *s.unipile.state.account_status.lock().expect("lock") = None;
    let running = json!({"id": "evt-1", "created_at": now_text(), "account_id": ACCOUNT, "type": "account.status.updated", "payload": {"status": "running"}});
    let (status, _) = s.unipile.post(&running).await;
    assert_eq!(status, StatusCode::OK);
    s.message_until(&id, &second, "sent after reconnecting", |m| {
        m["delivery"] == "sent"
    })
    .await;
    let texts: Vec<String> = s
        .unipile
        .sends()
        .iter()
        .map(|r| r.fields["text"].clone())
        .collect();
    assert_eq!(texts, ["one", "two"]);
    let first = s
        .message_until(&id, &first, "sent", |m| m["delivery"] == "sent")
        .await;
    assert!(first.get("error").is_none(), "{first}");
    s.health_until("connected", |h| {
        h["status"] == "connected" && h["outbox_depth"] == 0
    })
    .await;
    stream.close().await;

    // Down again, and the server restarts meanwhile: the message still waits. The
    // "running" webhook is lost this time; asking Unipile for the account finds it back.
    *s.unipile.state.account_status.lock().expect("lock") = Some("ERROR".into());
    s.unipile
        .post(&account_status_webhook(ACCOUNT, "ERROR"))
        .await;
    s.health_until("disconnected", |h| h["status"] == "disconnected")
        .await;
    let third = s.reply(&id, "three").await;
    s.message_until(&id, &third, "held", |m| {
        m["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("disconnected"))
    })
    .await;
    let Setup {
        server,
        tenant,
        unipile,
        channel,
        secret,
    } = s;
    let s = Setup {
        server: server.restart().await,
        tenant,
        unipile,
        channel,
        secret,
    };
    let h = s
        .health_until("the channel", |h| h["outbox_depth"] == 1)
        .await;
    assert_eq!(
        h["status"], "disconnected",
        "still down after a restart: {h}"
    );
    assert_eq!(s.unipile.sends().len(), 2);
    *s.unipile.state.account_status.lock().expect("lock") = None;
    s.message_until(
        &id,
        &third,
        "sent once Unipile says the account runs",
        |m| m["delivery"] == "sent",
    )
    .await;
    assert_eq!(s.unipile.sends().len(), 3);
    s.server.shutdown().await;
}

#[tokio::test]
async fn the_daily_cap_holds_sends_until_the_next_day_and_spacing_shows_in_health() {
    let day = confab_engine::port::DAY_MS;
    let clock = ManualClock::starting_at(confab_engine::time::now_millis());
    let server = TestServer::start_with_clock(clock.clone(), |c| {
        c.channels.retry_base_ms = 5;
    })
    .await;
    let s = setup_on(server, json!({"daily_limit": 1})).await;
    let h = s
        .health_until("the channel", |h| h["status"] == "connected")
        .await;
    assert_eq!(h["limits"]["per_day"], 1);
    assert_eq!(
        h["limits"]["min_interval_secs"],
        Value::Null,
        "0: no spacing"
    );
    s.lead_writes(7, "chat-7", "in-1", "Hello").await;
    let id = s.conversation_of_chat("chat-7").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let first = s.reply(&id, "one").await;
    let second = s.reply(&id, "two").await;
    s.message_until(&id, &first, "sent", |m| m["delivery"] == "sent")
        .await;
    let held = s
        .message_until(&id, &second, "held for tomorrow", |m| {
            m["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("daily_limit_reached"))
        })
        .await;
    assert_eq!(held["delivery"], "queued");
    assert_eq!(s.unipile.sends().len(), 1);
    clock.advance(day);
    s.message_until(&id, &second, "sent the next day", |m| {
        m["delivery"] == "sent"
    })
    .await;
    assert_eq!(s.unipile.sends().len(), 2);

    // A channel left to LinkedIn's defaults: 100 a day, 20 s apart.
    let unipile = Unipile::start().await;
    let secret = "another-secret";
    let (status, channel) = s
        .server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/channels", s.tenant.workspace_id),
            json!({"kind": "linkedin", "name": "Defaults", "account_id": "acc-2", "api_base_url": unipile.base_url, "api_key": "k", "webhook_secret": secret}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    let (_, h) = s
        .server
        .get(
            &s.tenant.token,
            &format!("/api/v1/channels/{}", channel["id"].as_str().expect("id")),
        )
        .await;
    assert_eq!(h["limits"]["per_day"], 100);
    assert_eq!(h["limits"]["min_interval_secs"], 20);
    s.server.shutdown().await;
}

#[tokio::test]
async fn webhooks_need_the_channels_own_secret_and_bad_settings_are_refused() {
    let s = setup(|_| {}, json!({})).await;
    let body = message_webhook(
        ACCOUNT,
        &us(),
        &lead(8),
        "chat-8",
        "in-1",
        "Hello",
        false,
        &now_text(),
    );
    let (status, missing) = s.unipile.post_with(None, &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{missing}");
    assert_eq!(missing["error"]["code"], "missing_secret");
    let (status, wrong) = s.unipile.post_with(Some("not-it"), &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong["error"]["code"], "invalid_secret");
    // Another workspace's LinkedIn channel, with this one's secret: refused too.
    let graph = GraphStandIn::start().await;
    let other = s.server.provision(&graph).await;
    let other_unipile = Unipile::start().await;
    let (other_channel, _) = linkedin_channel(&s.server, &other, &other_unipile, json!({})).await;
    let url = s.server.url(&format!("/webhooks/linkedin/{other_channel}"));
    let (status, _) = post_webhook(&s.server.http, &url, Some(&s.secret), &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(s.server.conversations(&s.tenant.token).await.is_empty());
    assert!(s.server.conversations(&other.token).await.is_empty());
    // Not Unipile's format: 400; an event without ids: 422; both change nothing.
    let (status, _) = s.unipile.post(&json!(["not", "an", "event"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, invalid) = s
        .unipile
        .post(&json!({"account_id": ACCOUNT, "event": "message_received"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{invalid}");

    let path = format!(
        "/api/v1/admin/workspaces/{}/channels",
        s.tenant.workspace_id
    );
    for (body, code) in [
        (
            json!({"kind": "linkedin", "name": "x", "api_base_url": "http://127.0.0.1:1", "api_key": "k", "webhook_secret": "s"}),
            "missing_field",
        ),
        (
            json!({"kind": "linkedin", "name": "x", "account_id": "a", "api_base_url": "ftp://x", "api_key": "k", "webhook_secret": "s"}),
            "invalid_url",
        ),
        (
            json!({"kind": "linkedin", "name": "x", "account_id": "a", "api_base_url": "http://x", "api_key": "k", "webhook_secret": "s", "phone_number_id": "1"}),
            "invalid_value",
        ),
        (
            json!({"kind": "linkedin", "name": "x", "account_id": "a", "api_base_url": "http://x", "api_key": "k", "webhook_secret": "s", "min_interval_secs": 100000}),
            "invalid_value",
        ),
    ] {
        let (status, refused) = s.server.admin_post(&path, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        assert_eq!(refused["error"]["code"], code, "{refused}");
    }
    s.server.shutdown().await;
}
