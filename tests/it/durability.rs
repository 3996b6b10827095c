//! What was acknowledged survives a restart, graceful or `kill -9`.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{status_json, wait_for, GraphStandIn, TestServer};
use crate::process::{confab_binary, Process};

#[tokio::test]
async fn a_gracefully_restarted_server_has_everything_it_acknowledged() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    for i in 0..20 {
        server
            .lead_says(
                &tenant,
                &format!("55{}", i % 4),
                "Lead",
                &format!("wamid.G{i}"),
                &format!("message {i}"),
            )
            .await;
    }
    let id = server.conversations(&tenant.token).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "reply"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let head_before = server.server().app().committer.durable_head();

    let server = server.restart().await;
    assert_eq!(server.server().app().committer.durable_head(), head_before);
    let conversations = server.conversations(&tenant.token).await;
    assert_eq!(conversations.len(), 4);
    let mut total = 0;
    for c in &conversations {
        total += server
            .messages(&tenant.token, c["id"].as_str().expect("id"))
            .await
            .len();
    }
    assert_eq!(total, 21);
    // Still a working engine after the restart: the channel's connector is back.
    let answer = server
        .lead_says(&tenant, "550", "Lead", "wamid.G0", "message 0")
        .await;
    assert_eq!(answer["duplicates"], 1, "dedupe survives restarts");
    server.shutdown().await;
}

#[tokio::test]
async fn everything_acknowledged_survives_kill_9_and_unsent_replies_are_resent() {
    let binary = confab_binary().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = format!("admin-{}", confab_engine::admin::new_token());
    let graph = GraphStandIn::start().await;
    // The provider is down: replies stay in the outbox.
    graph.script(
        (0..200)
            .map(|_| (503, json!({"error": {"message": "down", "code": 2}})))
            .collect(),
    );
    let http = reqwest::Client::new();
    let process = Process::serve(&binary, dir.path(), &admin);

    let post = |path: String, token: String, body: Value| {
        let http = http.clone();
        let url = format!("{}{}", process.base, path);
        async move {
            status_json(
                http.post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .expect("request"),
            )
            .await
        }
    };
    let (_, ws) = post(
        "/api/v1/admin/workspaces".into(),
        admin.clone(),
        json!({"name": "Crashy"}),
    )
    .await;
    let ws = ws["id"].as_str().expect("ws").to_string();
    let (_, agent) = post(
        format!("/api/v1/admin/workspaces/{ws}/agents"),
        admin.clone(),
        json!({"name": "A", "email": "a@x.io", "role": "admin"}),
    )
    .await;
    let token = agent["token"].as_str().expect("token").to_string();
    let secret = "kill-nine-secret";
    let (status, channel) = post(
        format!("/api/v1/admin/workspaces/{ws}/channels"),
        admin.clone(),
        json!({"kind": "whatsapp", "name": "WA", "phone_number_id": "999", "app_secret": secret,
               "verify_token": "v", "access_token": "t", "api_base_url": graph.base_url}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    let channel = channel["id"].as_str().expect("channel").to_string();

    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let body = confab_engine::wire::whatsapp::inbound_text_webhook(
            "999",
            &format!("4477{}", i % 3),
            "Lead",
            &format!("wamid.K{i}"),
            confab_engine::time::now_millis() / 1000,
            &format!("acknowledged {i}"),
        )
        .to_string();
        let response = http
            .post(format!("{}/webhooks/whatsapp/{channel}", process.base))
            .header(
                "X-Hub-Signature-256",
                confab_engine::wire::whatsapp::sign(secret, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        acknowledged.push(format!("acknowledged {i}"));
    }
    let (_, list) = status_json(
        http.get(format!("{}/api/v1/conversations", process.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("list"),
    )
    .await;
    let conversation = list["items"][0]["id"].as_str().expect("id").to_string();
    let (status, _) = post(
        format!("/api/v1/conversations/{conversation}/messages"),
        token.clone(),
        json!({"text": "this reply must not be lost"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    graph.wait_requests(1).await;
    process.kill_9();

    graph.clear_script();
    let process = Process::serve(&binary, dir.path(), &admin);
    let mut found = Vec::new();
    let (_, list) = status_json(
        http.get(format!("{}/api/v1/conversations", process.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("list"),
    )
    .await;
    for item in list["items"].as_array().expect("items") {
        let id = item["id"].as_str().expect("id");
        let (_, page) = status_json(
            http.get(format!(
                "{}/api/v1/conversations/{id}/messages?limit=200",
                process.base
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("messages"),
        )
        .await;
        for m in page["items"].as_array().expect("items") {
            if m["direction"] == "inbound" {
                found.push(m["text"].as_str().expect("text").to_string());
            }
        }
    }
    found.sort();
    acknowledged.sort();
    assert_eq!(found, acknowledged, "every acknowledged message, once");

    // The reply acknowledged with 202 was resent from the outbox and accepted this time.
    let sent = wait_for("the reply resent after the crash", || async {
        graph
            .requests()
            .iter()
            .any(|r| r.body["text"]["body"] == "this reply must not be lost")
            .then_some(())?;
        let (_, page) = status_json(
            http.get(format!(
                "{}/api/v1/conversations/{conversation}/messages?limit=1",
                process.base
            ))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?,
        )
        .await;
        (page["items"][0]["delivery"] == "sent").then_some(page)
    })
    .await;
    assert!(sent["items"][0]["external_id"]
        .as_str()
        .expect("wamid")
        .starts_with("wamid.OUT"));
    process.kill_9();
}
