//! Full-text search end to end: what the manual says one can find, the query language,
//! filters, tenancy, freshness, hostile queries, and the index surviving crashes and
//! rebuilds as an exact copy of the store.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{status_json, wait_for, GraphStandIn, Tenant, TestServer};
use crate::process::{confab_binary, Process};

async fn search(server: &TestServer, token: &str, params: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = server
        .http
        .get(server.url("/api/v1/search"))
        .query(params)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    status_json(response).await
}

async fn items(server: &TestServer, token: &str, params: &[(&str, &str)]) -> Vec<Value> {
    let (status, page) = search(server, token, params).await;
    assert_eq!(status, StatusCode::OK, "{params:?}: {page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

/// Waits until searching `q` returns at least one hit, and returns the hits.
async fn found(server: &TestServer, token: &str, q: &str) -> Vec<Value> {
    wait_for(&format!("a hit for {q:?}"), || async {
        let hits = items(server, token, &[("q", q)]).await;
        (!hits.is_empty()).then_some(hits)
    })
    .await
}

fn conversation_ids(hits: &[Value]) -> BTreeSet<String> {
    hits.iter()
        .map(|h| {
            h["conversation_id"]
                .as_str()
                .expect("conversation_id")
                .to_string()
        })
        .collect()
}

async fn conversation_of(server: &TestServer, tenant: &Tenant, wa_id: &str) -> Value {
    server
        .conversations(&tenant.token)
        .await
        .into_iter()
        .find(|c| {
            c["contact"]["phone"]
                .as_str()
                .is_some_and(|p| p.ends_with(wa_id))
        })
        .expect("the lead's conversation")
}

#[tokio::test]
async fn the_manuals_four_searches_find_the_conversation() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server
        .lead_says(
            &tenant,
            "5511987654321",
            "Maria Souza",
            "wamid.M1",
            "Could you send the pricing for the enterprise plan?",
        )
        .await;
    server
        .lead_says(
            &tenant,
            "5521912345678",
            "João Pereira",
            "wamid.J1",
            "Olá, I want a demo",
        )
        .await;
    let maria = conversation_of(&server, &tenant, "5511987654321").await;
    let maria_id = maria["id"].as_str().expect("id").to_string();
    let contact_id = maria["contact"]["id"].as_str().expect("contact id");
    let response = server
        .http
        .patch(server.url(&format!("/api/v1/contacts/{contact_id}")))
        .bearer_auth(&tenant.token)
        .json(&json!({"company": "Acme Industries", "email": "maria.souza@acme.io"}))
        .send()
        .await
        .expect("request");
    let (status, body) = status_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Contact name, company name, message content, email address; and the phone.
    for (q, field) in [
        ("Maria", "name"),
        ("Acme", "company"),
        ("pricing", "text"),
        ("maria.souza@acme.io", "email"),
        ("5511987654321", "phone"),
    ] {
        let hits = found(&server, &tenant.token, q).await;
        assert_eq!(
            conversation_ids(&hits),
            BTreeSet::from([maria_id.clone()]),
            "{q}: {hits:?}"
        );
        let hit = &hits[0];
        assert_eq!(hit["field"], field, "{q}: {hit}");
        assert!(
            hit["snippet"].as_str().is_some_and(|s| s.contains("<b>")),
            "{hit}"
        );
        assert_eq!(hit["contact"]["name"], "Maria Souza");
        assert_eq!(hit["channel"], "whatsapp");
        assert!(hit["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(hit["score"].as_f64().is_some_and(|s| s > 0.0));
    }
    let pricing = found(&server, &tenant.token, "pricing").await;
    assert!(
        pricing[0]["message_id"].is_string(),
        "a message hit: {}",
        pricing[0]
    );
    assert_eq!(
        pricing[0]["snippet"],
        "Could you send the <b>pricing</b> for the enterprise plan?"
    );
    // The hit names the message's seq: the page around it starts at the hit.
    let seq = pricing[0]["seq"].as_u64().expect("seq on a message hit");
    let (status, around) = server
        .get(
            &tenant.token,
            &format!("/api/v1/conversations/{maria_id}/messages?around={seq}&limit=1"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{around}");
    assert_eq!(around["items"][0]["id"], pricing[0]["message_id"]);
    let acme = found(&server, &tenant.token, "Acme").await;
    assert!(
        acme[0]["message_id"].is_null(),
        "a conversation hit: {}",
        acme[0]
    );
    assert!(acme[0]["seq"].is_null(), "{}", acme[0]);
    assert_eq!(acme[0]["contact"]["company"], "Acme Industries");
    server.shutdown().await;
}

#[tokio::test]
async fn prefixes_phrases_near_misses_and_filters() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server
        .lead_says(
            &tenant,
            "441",
            "Ada",
            "wamid.P1",
            "the quarterly invoice is attached",
        )
        .await;
    server
        .lead_says(
            &tenant,
            "442",
            "Bob",
            "wamid.P2",
            "invoice quarterly numbers",
        )
        .await;
    let ada = conversation_of(&server, &tenant, "441").await;
    let ada_id = ada["id"].as_str().expect("id").to_string();
    found(&server, &tenant.token, "numbers").await;
    let token = &tenant.token;
    let both = |hits: &[Value]| conversation_ids(hits).len() == 2;
    assert!(both(&items(&server, token, &[("q", "invo*")]).await));
    assert!(
        both(&items(&server, token, &[("q", "quartrly")]).await),
        "one edit"
    );
    let phrase = items(&server, token, &[("q", "\"quarterly invoice\"")]).await;
    assert_eq!(conversation_ids(&phrase), BTreeSet::from([ada_id.clone()]));
    let excluded = items(&server, token, &[("q", "invoice -numbers")]).await;
    assert_eq!(
        conversation_ids(&excluded),
        BTreeSet::from([ada_id.clone()])
    );
    assert!(
        items(&server, token, &[("q", "qrtrly")]).await.is_empty(),
        "two edits"
    );

    for (filter, value, expect) in [
        ("channel", "whatsapp", 2),
        ("channel", "email", 0),
        ("status", "open", 2),
        ("status", "closed", 0),
        ("period", "today", 2),
        ("period", "all", 2),
        ("conversation_id", ada_id.as_str(), 1),
    ] {
        let hits = items(&server, token, &[("q", "invoice"), (filter, value)]).await;
        assert_eq!(
            conversation_ids(&hits).len(),
            expect,
            "{filter}={value}: {hits:?}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn another_workspaces_marker_words_never_come_back() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let ours = server.provision(&graph).await;
    let theirs = server.provision(&graph).await;
    server
        .lead_says(
            &theirs,
            "777",
            "Xylophone Zebracorn",
            "wamid.T1",
            "zebracorn secret plans",
        )
        .await;
    server
        .lead_says(&ours, "778", "Our Lead", "wamid.O1", "our own plans")
        .await;
    // Their marker is indexed (they find it) …
    found(&server, &theirs.token, "zebracorn").await;
    found(&server, &ours.token, "plans").await;
    // … and nothing of it reaches us, however we ask.
    for q in [
        "zebracorn",
        "zebracor*",
        "zebracorm",
        "xylophone",
        "\"secret plans\"",
        "zebracorn OR plans",
    ] {
        let hits = items(&server, &ours.token, &[("q", q)]).await;
        assert!(
            hits.iter()
                .all(|h| !h.to_string().to_lowercase().contains("zebracorn")
                    && !h.to_string().contains("secret")),
            "{q}: {hits:?}"
        );
    }
    let plans = items(&server, &ours.token, &[("q", "plans")]).await;
    assert_eq!(plans.len(), 1, "{plans:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_is_searchable_soon_after_it_is_acknowledged() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let mut waits = Vec::new();
    for i in 0..5 {
        let word = format!("fresh{i}marker");
        server
            .lead_says(&tenant, "500", "Lead", &format!("wamid.F{i}"), &word)
            .await;
        let acknowledged = Instant::now();
        found(&server, &tenant.token, &word).await;
        waits.push(acknowledged.elapsed());
    }
    waits.sort();
    // The indexer commits every 200 ms; well under a second even on a busy machine.
    assert!(
        waits[2] < Duration::from_secs(1),
        "median wait {:?}",
        waits[2]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn syntax_errors_and_hostile_queries_are_refused_with_the_reason() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    // Over the query limit (512 characters), under the edge's URI limit (8 KiB: 414 first).
    let long = "a".repeat(2 * 1024);
    let ors = (0..40)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    for (q, reason) in [
        ("\"unclosed", "closing quote"),
        ("(a b", "closing"),
        ("*acme", "wildcard"),
        ("a*", "at least 2"),
        ("-spam", "only excludes"),
        ("OR", "OR"),
        (long.as_str(), "characters"),
        (ors.as_str(), "terms"),
    ] {
        let (status, body) = search(&server, &tenant.token, &[("q", q)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_query");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            message.contains(reason),
            "{message:?} should mention {reason:?}"
        );
    }
    let (status, body) = search(&server, &tenant.token, &[]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_query"))
    );
    let (status, _) = search(&server, &tenant.token, &[("q", "a"), ("limit", "0")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = search(&server, &tenant.token, &[("q", "a"), ("cursor", "zz")]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_cursor"))
    );
    let response = server
        .http
        .get(server.url("/api/v1/search?q=a"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);

    // A burst of the most expensive queries allowed never stalls the rest of the API.
    let expensive = (0..16)
        .map(|i| format!("ab{i}* OR cd{i}*"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let burst: Vec<_> = (0..32)
        .map(|_| {
            let http = server.http.clone();
            let url = server.url("/api/v1/search");
            let token = tenant.token.clone();
            let q = expensive.clone();
            tokio::spawn(async move {
                http.get(url)
                    .query(&[("q", q)])
                    .bearer_auth(token)
                    .send()
                    .await
            })
        })
        .collect();
    let started = Instant::now();
    assert!(server.conversations(&tenant.token).await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    for request in burst {
        let status = request
            .await
            .expect("task")
            .expect("response")
            .status()
            .as_u16();
        assert!([200, 503].contains(&status), "{status}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn pages_follow_cursors_without_gaps_or_repeats() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    for i in 0..25 {
        server
            .lead_says(
                &tenant,
                &format!("60{}", i % 5),
                "Lead",
                &format!("wamid.W{i}"),
                &format!("widget request number {i}"),
            )
            .await;
    }
    wait_for("all 25 widgets indexed", || async {
        let hits = items(&server, &tenant.token, &[("q", "widget"), ("limit", "100")]).await;
        (hits.len() == 25).then_some(())
    })
    .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![("q", "widget".to_string()), ("limit", "10".to_string())];
        if let Some(c) = &cursor {
            params.push(("cursor", c.clone()));
        }
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, page) = search(&server, &tenant.token, &params).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for hit in page["items"].as_array().expect("items") {
            seen.push(hit["message_id"].as_str().expect("message").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (25, 25));
    server.shutdown().await;
}

#[tokio::test]
async fn a_restarted_server_searches_the_same_without_duplicates() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    for i in 0..6 {
        server
            .lead_says(
                &tenant,
                "70",
                "Lead",
                &format!("wamid.R{i}"),
                &format!("restart{i} gizmo"),
            )
            .await;
    }
    wait_for("6 gizmos", || async {
        (items(&server, &tenant.token, &[("q", "gizmo")]).await.len() == 6).then_some(())
    })
    .await;
    let server = server.restart().await;
    let server = server.restart().await;
    let hits = items(&server, &tenant.token, &[("q", "gizmo")]).await;
    assert_eq!(hits.len(), 6, "{hits:?}");
    server
        .lead_says(&tenant, "70", "Lead", "wamid.R9", "restart9 gizmo")
        .await;
    wait_for("7 gizmos", || async {
        (items(&server, &tenant.token, &[("q", "gizmo")]).await.len() == 7).then_some(())
    })
    .await;
    server.shutdown().await;
}

/// An HTTP client of a `confab` child process.
struct Remote {
    base: String,
    http: reqwest::Client,
}

impl Remote {
    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        status_json(request.send().await.expect("request")).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    async fn search(&self, token: &str, q: &str) -> Vec<Value> {
        let (status, page) = self
            .send(
                self.http
                    .get(format!("{}/api/v1/search", self.base))
                    .query(&[("q", q), ("limit", "100")])
                    .bearer_auth(token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// A workspace, an agent token and a WhatsApp channel; returns (token, channel id).
    async fn provision(&self, admin: &str, secret: &str, graph: &GraphStandIn) -> (String, String) {
        let (_, ws) = self
            .post("/api/v1/admin/workspaces", admin, json!({"name": "Crashy"}))
            .await;
        let ws = ws["id"].as_str().expect("ws").to_string();
        let (_, agent) = self
            .post(
                &format!("/api/v1/admin/workspaces/{ws}/agents"),
                admin,
                json!({"name": "A", "email": "a@x.io", "role": "admin"}),
            )
            .await;
        let (status, channel) = self
            .post(
                &format!("/api/v1/admin/workspaces/{ws}/channels"),
                admin,
                json!({"kind": "whatsapp", "name": "WA", "phone_number_id": "999",
                       "app_secret": secret, "verify_token": "v", "access_token": "t",
                       "api_base_url": graph.base_url}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{channel}");
        (
            agent["token"].as_str().expect("token").to_string(),
            channel["id"].as_str().expect("channel").to_string(),
        )
    }

    async fn lead_says(&self, channel: &str, secret: &str, wa_id: &str, wamid: &str, text: &str) {
        let body = confab_engine::wire::whatsapp::inbound_text_webhook(
            "999",
            wa_id,
            "Lead",
            wamid,
            confab_engine::time::now_millis() / 1000,
            text,
        )
        .to_string();
        let (status, answer) = self
            .send(
                self.http
                    .post(format!("{}/webhooks/whatsapp/{channel}", self.base))
                    .header(
                        "X-Hub-Signature-256",
                        confab_engine::wire::whatsapp::sign(secret, body.as_bytes()),
                    )
                    .body(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
}

/// Each of `words` is found exactly once, and `common` finds `total` hits: the index
/// holds every stored message once.
async fn assert_index_equals_store(remote: &Remote, token: &str, words: &[String], common: &str) {
    wait_for("the index to catch up with the store", || async {
        (remote.search(token, common).await.len() == words.len()).then_some(())
    })
    .await;
    for word in words {
        let hits = remote.search(token, word).await;
        assert_eq!(hits.len(), 1, "{word}: {hits:?}");
        assert!(hits[0]["message_id"].is_string());
    }
}

/// Words two edits or more apart from each other (the fuzzy match allows one).
fn distinct_word(stem: &str, i: usize) -> String {
    format!("{stem}{:03}x{:03}", i * 7, i * 13)
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("confab.toml");
    std::fs::write(&path, text).expect("config file");
    path
}

#[tokio::test]
async fn killed_between_store_and_index_commit_the_index_equals_the_store_after_restart() {
    let binary = confab_binary().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let admin = format!("admin-{}", confab_engine::admin::new_token());
    let secret = "search-kill-secret";
    let graph = GraphStandIn::start().await;
    // An index that never commits on its own: every acknowledged message sits between
    // the store commit and the index commit when the process is killed.
    let lazy = write_config(
        dir.path(),
        "[search]\ncommit_interval_ms = 3600000\ncommit_docs = 1000000\n",
    );
    let process = Process::serve_with(
        &binary,
        &data,
        &admin,
        &["--config".as_ref(), lazy.as_os_str()],
    );
    let remote = Remote {
        base: process.base.clone(),
        http: reqwest::Client::new(),
    };
    let (token, channel) = remote.provision(&admin, secret, &graph).await;
    let mut words = Vec::new();
    for i in 0..12 {
        let word = distinct_word("crash", i);
        remote
            .lead_says(
                &channel,
                secret,
                &format!("3300{}", i % 3),
                &format!("wamid.C{i}"),
                &format!("{word} shared"),
            )
            .await;
        words.push(word);
    }
    assert!(
        remote.search(&token, "shared").await.is_empty(),
        "nothing committed yet"
    );
    process.kill_9();

    let process = Process::serve(&binary, &data, &admin);
    let remote = Remote {
        base: process.base.clone(),
        http: reqwest::Client::new(),
    };
    assert_index_equals_store(&remote, &token, &words, "shared").await;
    // And once more, after a kill with a committed index (nothing is replayed twice).
    remote
        .lead_says(
            &channel,
            secret,
            "33009",
            "wamid.C99",
            &format!("{} shared", distinct_word("crash", 99)),
        )
        .await;
    words.push(distinct_word("crash", 99));
    assert_index_equals_store(&remote, &token, &words, "shared").await;
    process.kill_9();
    let process = Process::serve(&binary, &data, &admin);
    let remote = Remote {
        base: process.base.clone(),
        http: reqwest::Client::new(),
    };
    assert_index_equals_store(&remote, &token, &words, "shared").await;
    process.kill_9();
}

#[tokio::test]
async fn confab_reindex_rebuilds_the_index_from_the_store() {
    let binary = confab_binary().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = format!("admin-{}", confab_engine::admin::new_token());
    let secret = "reindex-secret";
    let graph = GraphStandIn::start().await;
    let process = Process::serve(&binary, dir.path(), &admin);
    let remote = Remote {
        base: process.base.clone(),
        http: reqwest::Client::new(),
    };
    let (token, channel) = remote.provision(&admin, secret, &graph).await;
    let mut words = Vec::new();
    for i in 0..8 {
        let word = distinct_word("rebuilt", i);
        remote
            .lead_says(
                &channel,
                secret,
                &format!("880{}", i % 2),
                &format!("wamid.X{i}"),
                &format!("{word} everything"),
            )
            .await;
        words.push(word);
    }
    assert!(process.terminate().success());

    // Lose the index entirely, then rebuild it offline.
    std::fs::remove_dir_all(dir.path().join("index")).expect("remove the index");
    let output = tokio::task::spawn_blocking({
        let binary = binary.clone();
        let data = dir.path().to_path_buf();
        move || {
            std::process::Command::new(binary)
                .args(["reindex", "--data-dir"])
                .arg(data)
                .output()
                .expect("confab reindex runs")
        }
    })
    .await
    .expect("task");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 2 conversations and 8 messages.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some("reindexed 10 documents"),
        "{stdout}"
    );
    let index = confab_index::SearchIndex::open(&dir.path().join("index")).expect("index");
    assert_eq!(index.num_docs(), 10);
    drop(index);

    // A server with an index that never commits by itself finds everything at once.
    let lazy = write_config(
        dir.path(),
        "[search]\ncommit_interval_ms = 3600000\ncommit_docs = 1000000\n",
    );
    let process = Process::serve_with(
        &binary,
        dir.path(),
        &admin,
        &["--config".as_ref(), lazy.as_os_str()],
    );
    let remote = Remote {
        base: process.base.clone(),
        http: reqwest::Client::new(),
    };
    assert_index_equals_store(&remote, &token, &words, "everything").await;
    process.kill_9();
}
