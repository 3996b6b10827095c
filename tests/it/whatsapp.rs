//! The WhatsApp channel through its real webhook and a Graph API stand-in.

use axum::http::StatusCode;
use confab_engine::wire::whatsapp;
use serde_json::{json, Value};

use crate::harness::{wait_for, GraphStandIn, Tenant, TestServer};

const LEAD: &str = "5511987654321";

async fn setup() -> (TestServer, GraphStandIn, Tenant) {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server.enable_ai_later(&tenant).await;
    (server, graph, tenant)
}

async fn only_conversation(server: &TestServer, tenant: &Tenant) -> Value {
    let conversations = server.conversations(&tenant.token).await;
    assert_eq!(conversations.len(), 1, "{conversations:?}");
    conversations[0].clone()
}

/// Ana writes "Hi!" (opening the 24-hour window); the id of her conversation.
async fn greeted(server: &TestServer, tenant: &Tenant) -> String {
    server
        .lead_says(tenant, LEAD, "Ana Lima", "wamid.IN1", "Hi!")
        .await;
    only_conversation(server, tenant).await["id"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn post_status(server: &TestServer, tenant: &Tenant, wamid: &str, status: &str) {
    let body =
        whatsapp::status_webhook(&tenant.phone_number_id, wamid, status, 1_767_225_660, LEAD)
            .to_string();
    let signature = whatsapp::sign(&tenant.app_secret, body.as_bytes());
    let (code, answer) = server
        .post_webhook(tenant, body.as_bytes(), Some(signature))
        .await;
    assert_eq!(code, StatusCode::OK, "{answer}");
}

async fn message_with_seq(
    server: &TestServer,
    tenant: &Tenant,
    conversation: &str,
    seq: u64,
) -> Value {
    server
        .messages(&tenant.token, conversation)
        .await
        .into_iter()
        .find(|m| m["seq"] == seq)
        .expect("message exists")
}

#[tokio::test]
async fn the_verification_handshake_echoes_the_challenge_only_for_the_right_token() {
    let (server, _graph, tenant) = setup().await;
    let base = format!("/webhooks/whatsapp/{}", tenant.channel_id);
    let ok = server
        .http
        .get(server.url(&format!(
            "{base}?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444"
        )))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    assert!(ok.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    assert_eq!(ok.text().await.expect("body"), "1158201444");
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=verify-me&hub.challenge=1",
        "hub.challenge=1",
    ] {
        let refused = server
            .http
            .get(server.url(&format!("{base}?{query}")))
            .send()
            .await
            .expect("request");
        assert_eq!(refused.status(), 403, "{query}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bad_and_missing_signatures_are_rejected_and_store_nothing() {
    let (server, _graph, tenant) = setup().await;
    let body = whatsapp::inbound_text_webhook(
        &tenant.phone_number_id,
        LEAD,
        "Ana",
        "wamid.SIG1",
        1_767_225_600,
        "hi",
    )
    .to_string();
    let cases = [
        (None, "missing_signature"),
        (
            Some("sha256=".to_string() + &"0".repeat(64)),
            "invalid_signature",
        ),
        (
            Some(whatsapp::sign("another-secret", body.as_bytes())),
            "invalid_signature",
        ),
        (Some("md5=abc".to_string()), "invalid_signature"),
    ];
    for (signature, code) in cases {
        let (status, answer) = server
            .post_webhook(&tenant, body.as_bytes(), signature)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"]["code"], code);
    }
    // A body signed for the right secret but tampered with after signing.
    let signature = whatsapp::sign(&tenant.app_secret, body.as_bytes());
    let tampered = body.replace("hi", "ho");
    let (status, _) = server
        .post_webhook(&tenant, tampered.as_bytes(), Some(signature))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(server.conversations(&tenant.token).await.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_signed_body_that_is_not_a_webhook_is_a_400_and_stores_nothing() {
    let (server, _graph, tenant) = setup().await;
    for body in [
        &b"not json"[..],
        br#"{"object":"page","entry":[]}"#,
        br#"[1,2,3]"#,
    ] {
        let signature = whatsapp::sign(&tenant.app_secret, body);
        let (status, answer) = server.post_webhook(&tenant, body, Some(signature)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "not_a_webhook");
    }
    assert!(server.conversations(&tenant.token).await.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_redelivered_webhook_stores_nothing_new() {
    let (server, _graph, tenant) = setup().await;
    let first = server
        .lead_says(
            &tenant,
            LEAD,
            "Ana Lima",
            "wamid.DUP1",
            "Is the offer still valid?",
        )
        .await;
    assert_eq!(first["stored"], 1);
    for _ in 0..3 {
        let again = server
            .lead_says(
                &tenant,
                LEAD,
                "Ana Lima",
                "wamid.DUP1",
                "Is the offer still valid?",
            )
            .await;
        assert_eq!(again["stored"], 0);
        assert_eq!(again["duplicates"], 1);
    }
    let conversation = only_conversation(&server, &tenant).await;
    assert_eq!(conversation["unread_count"], 1);
    let messages = server
        .messages(&tenant.token, conversation["id"].as_str().expect("id"))
        .await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["external_id"], "wamid.DUP1");
    server.shutdown().await;
}

#[tokio::test]
async fn inbound_messages_create_one_conversation_per_lead_with_contact_and_preview() {
    let (server, _graph, tenant) = setup().await;
    server
        .lead_says(
            &tenant,
            LEAD,
            "Ana Lima",
            "wamid.A1",
            "Hi, is the offer still valid?",
        )
        .await;
    server
        .lead_says(
            &tenant,
            LEAD,
            "Ana Lima",
            "wamid.A2",
            "And does it include onboarding?",
        )
        .await;
    server
        .lead_says(&tenant, "4915112345678", "Kim Doe", "wamid.K1", "Hello!")
        .await;
    let conversations = server.conversations(&tenant.token).await;
    assert_eq!(conversations.len(), 2);
    // Newest activity first.
    assert_eq!(conversations[0]["contact"]["name"], "Kim Doe");
    let ana = &conversations[1];
    assert_eq!(ana["contact"]["name"], "Ana Lima");
    assert_eq!(ana["contact"]["phone"], "+5511987654321");
    assert_eq!(ana["channel"], "whatsapp");
    assert_eq!(ana["status"], "open");
    assert_eq!(ana["ai_mode"], "active");
    assert_eq!(ana["unread_count"], 2);
    assert_eq!(ana["preview"], "And does it include onboarding?");
    let messages = server
        .messages(&tenant.token, ana["id"].as_str().expect("id"))
        .await;
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![2, 1], "newest first, contiguous");
    assert!(messages
        .iter()
        .all(|m| m["direction"] == "inbound" && m["sender"] == "lead"));
    server.shutdown().await;
}

#[tokio::test]
async fn batched_entries_and_unknown_types_are_all_stored() {
    let (server, _graph, tenant) = setup().await;
    let change = |from: &str, messages: Value| {
        json!({"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15551230000", "phone_number_id": tenant.phone_number_id},
            "contacts": [{"profile": {"name": "Lead"}, "wa_id": from}],
            "messages": messages}})
    };
    let body = json!({"object": "whatsapp_business_account", "entry": [
        {"id": "1", "changes": [change("111", json!([
            {"from": "111", "id": "wamid.B1", "timestamp": "1767225600", "type": "text", "text": {"body": "one"}},
            {"from": "111", "id": "wamid.B2", "timestamp": "1767225601", "type": "hologram", "hologram": {"x": 1}}
        ]))]},
        {"id": "1", "changes": [change("222", json!([
            {"from": "222", "id": "wamid.B3", "timestamp": "1767225602", "type": "image",
             "image": {"id": "media-1", "mime_type": "image/jpeg", "caption": "our office"}}
        ]))]}
    ]})
    .to_string();
    let signature = whatsapp::sign(&tenant.app_secret, body.as_bytes());
    let (status, answer) = server
        .post_webhook(&tenant, body.as_bytes(), Some(signature))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["stored"], 3);
    let conversations = server.conversations(&tenant.token).await;
    assert_eq!(conversations.len(), 2);
    let mut all = Vec::new();
    for c in &conversations {
        all.extend(
            server
                .messages(&tenant.token, c["id"].as_str().expect("id"))
                .await,
        );
    }
    let hologram = all
        .iter()
        .find(|m| m["external_id"] == "wamid.B2")
        .expect("unknown type stored");
    assert_eq!(hologram["content_type"], "hologram");
    assert!(
        hologram["text"]
            .as_str()
            .expect("text")
            .contains("hologram"),
        "{hologram}"
    );
    assert_eq!(hologram["raw"]["hologram"]["x"], 1);
    let image = all
        .iter()
        .find(|m| m["external_id"] == "wamid.B3")
        .expect("image stored");
    assert!(image["text"].as_str().expect("text").contains("our office"));
    assert_eq!(
        image["attachments"],
        json!([{"name": null, "content_type": "image/jpeg", "size": null, "media_id": "media-1"}])
    );
    server.shutdown().await;
}

/// Sends one media message from the lead; the stored message.
async fn lead_sends_media(
    server: &TestServer,
    tenant: &Tenant,
    wamid: &str,
    kind: &str,
    content: Value,
) -> Value {
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15551230000", "phone_number_id": tenant.phone_number_id},
            "contacts": [{"profile": {"name": "Ana Lima"}, "wa_id": LEAD}],
            "messages": [{"from": LEAD, "id": wamid, "timestamp": "1767225600", "type": kind, kind: content}]}}]}]})
    .to_string();
    let signature = whatsapp::sign(&tenant.app_secret, body.as_bytes());
    let (status, answer) = server
        .post_webhook(tenant, body.as_bytes(), Some(signature))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let conversation = only_conversation(server, tenant).await;
    server
        .messages(&tenant.token, conversation["id"].as_str().expect("id"))
        .await
        .into_iter()
        .find(|m| m["external_id"] == wamid)
        .expect("media message stored")
}

#[tokio::test]
async fn media_files_are_fetched_from_the_graph_api_with_the_channels_token() {
    let (server, graph, tenant) = setup().await;
    let photo = b"\xff\xd8\xff\xe0 a tiny jpeg".to_vec();
    graph.add_media("media-photo", "image/jpeg", &photo);
    graph.add_media("media-pdf", "application/pdf", b"%PDF-1.7 quote");
    let image = lead_sends_media(
        &server,
        &tenant,
        "wamid.M1",
        "image",
        json!({"id": "media-photo", "mime_type": "image/jpeg", "caption": "my car"}),
    )
    .await;
    let document = lead_sends_media(
        &server,
        &tenant,
        "wamid.M2",
        "document",
        json!({"id": "media-pdf", "mime_type": "application/pdf", "filename": "Angebot März.pdf"}),
    )
    .await;
    let gone = lead_sends_media(
        &server,
        &tenant,
        "wamid.M3",
        "audio",
        json!({"id": "media-expired", "mime_type": "audio/ogg"}),
    )
    .await;
    let url = |message: &Value, index: u32| {
        server.url(&format!(
            "/api/v1/conversations/{}/messages/{}/attachments/{index}",
            message["conversation_id"].as_str().expect("conversation"),
            message["seq"]
        ))
    };
    let http = reqwest::Client::new();
    let fetch = |url: String| http.get(url).bearer_auth(&tenant.token).send();

    // An image is shown inline, sandboxed, with the bytes the provider keeps.
    let answer = fetch(url(&image, 0)).await.expect("image");
    assert_eq!(answer.status(), StatusCode::OK);
    let header = |answer: &reqwest::Response, name: &str| {
        answer
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header(&answer, "content-type").as_deref(),
        Some("image/jpeg")
    );
    assert_eq!(
        header(&answer, "content-disposition").as_deref(),
        Some("inline")
    );
    assert_eq!(
        header(&answer, "content-security-policy").as_deref(),
        Some("default-src 'none'; sandbox")
    );
    assert_eq!(answer.bytes().await.expect("bytes").to_vec(), photo);

    // A document is a download under its own name.
    let answer = fetch(url(&document, 0)).await.expect("document");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        header(&answer, "content-disposition").as_deref(),
        Some("attachment; filename=\"Angebot M_rz.pdf\"; filename*=UTF-8''Angebot%20M%C3%A4rz.pdf")
    );
    assert_eq!(&answer.bytes().await.expect("bytes")[..], b"%PDF-1.7 quote");

    // The stand-in serves files to the channel's token only, so the two answers above
    // prove it was sent. A file the provider no longer keeps:
    let (status, error) =
        crate::harness::status_json(fetch(url(&gone, 0)).await.expect("gone")).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("media_gone"))
    );

    // No such attachment, or a message without one.
    for (message, index) in [(&image, 1), (&gone, 7)] {
        let (status, error) =
            crate::harness::status_json(fetch(url(message, index)).await.expect("missing")).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_reply_reaches_the_graph_api_with_the_exact_json_and_records_the_wamid() {
    let (server, graph, tenant) = setup().await;
    server
        .lead_says(&tenant, LEAD, "Ana Lima", "wamid.IN1", "Hi!")
        .await;
    let conversation = only_conversation(&server, &tenant).await;
    let id = conversation["id"].as_str().expect("id").to_string();
    let (status, sent) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "Hello {{first_name}}, yes it is! {{agent_name}}"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    assert_eq!(sent["direction"], "outbound");
    assert_eq!(sent["sender"], "agent");
    assert_eq!(sent["agent_id"], tenant.agent_id.as_str());
    assert_eq!(sent["seq"], 2);
    assert_eq!(
        sent["text"], "Hello Ana, yes it is! Ana Agent",
        "variables are filled in"
    );

    let requests = graph.wait_requests(1).await;
    assert_eq!(
        requests[0].path,
        format!("/{}/messages", tenant.phone_number_id)
    );
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some("Bearer graph-access-token")
    );
    assert_eq!(
        requests[0].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": LEAD,
               "type": "text", "text": {"preview_url": false, "body": "Hello Ana, yes it is! Ana Agent"}})
    );
    let stored = wait_for("the provider's id on the message", || async {
        let m = message_with_seq(&server, &tenant, &id, 2).await;
        (m["external_id"] == "wamid.OUT1").then_some(m)
    })
    .await;
    assert_eq!(stored["delivery"], "sent");
    // Replying means the conversation now waits for the lead.
    let (_, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(detail["status"], "pending");
    assert_eq!(detail["preview"], "Hello Ana, yes it is! Ana Agent");
    server.shutdown().await;
}

#[tokio::test]
async fn internal_notes_are_stored_but_never_sent_to_the_lead() {
    let (server, graph, tenant) = setup().await;
    let id = greeted(&server, &tenant).await;
    let (status, note) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "VIP, call her", "internal": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{note}");
    assert_eq!(note["internal"], true);
    assert_eq!(note["delivery"], Value::Null);
    // A real reply after the note is the first and only thing the provider sees.
    server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "Hi Ana"}),
        )
        .await;
    let requests = graph.wait_requests(1).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body["text"]["body"], "Hi Ana");
    server.shutdown().await;
}

#[tokio::test]
async fn statuses_move_delivery_forward_only() {
    let (server, graph, tenant) = setup().await;
    let id = greeted(&server, &tenant).await;
    server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "Hello"}),
        )
        .await;
    graph.wait_requests(1).await;
    wait_for("sent", || async {
        (message_with_seq(&server, &tenant, &id, 2).await["delivery"] == "sent").then_some(())
    })
    .await;

    let delivery = |expected: &'static str| {
        let server = &server;
        let tenant = &tenant;
        let id = id.clone();
        async move {
            let m = message_with_seq(server, tenant, &id, 2).await;
            assert_eq!(m["delivery"], expected, "{m}");
        }
    };
    post_status(&server, &tenant, "wamid.OUT1", "delivered").await;
    delivery("delivered").await;
    post_status(&server, &tenant, "wamid.OUT1", "sent").await;
    delivery("delivered").await;
    post_status(&server, &tenant, "wamid.OUT1", "read").await;
    delivery("read").await;
    post_status(&server, &tenant, "wamid.OUT1", "delivered").await;
    post_status(&server, &tenant, "wamid.OUT1", "failed").await;
    delivery("read").await;
    // A status for a message nobody knows is accepted and changes nothing.
    post_status(&server, &tenant, "wamid.NOBODY", "read").await;
    delivery("read").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_status_that_beats_the_send_answer_is_applied_when_the_id_arrives() {
    let (server, graph, tenant) = setup().await;
    let id = greeted(&server, &tenant).await;
    // The stand-in will call its first outbound message wamid.OUT1: report it first.
    post_status(&server, &tenant, "wamid.OUT1", "delivered").await;
    server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "Hello"}),
        )
        .await;
    graph.wait_requests(1).await;
    let m = wait_for("the early status applied", || async {
        let m = message_with_seq(&server, &tenant, &id, 2).await;
        (m["external_id"] == "wamid.OUT1").then_some(m)
    })
    .await;
    assert_eq!(m["delivery"], "delivered");
    server.shutdown().await;
}

#[tokio::test]
async fn retryable_provider_errors_are_retried_and_final_ones_fail_the_message() {
    let (server, graph, tenant) = setup().await;
    let id = greeted(&server, &tenant).await;
    graph.script(vec![
        (
            500,
            json!({"error": {"message": "Service temporarily unavailable", "code": 2}}),
        ),
        (
            400,
            json!({"error": {"message": "(#130429) Rate limit hit", "code": 130429}}),
        ),
    ]);
    server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "first"}),
        )
        .await;
    let m = wait_for("sent after retries", || async {
        let m = message_with_seq(&server, &tenant, &id, 2).await;
        (m["delivery"] == "sent").then_some(m)
    })
    .await;
    assert_eq!(m["external_id"], "wamid.OUT1");
    assert_eq!(
        graph.requests().len(),
        3,
        "two retryable failures, then success"
    );

    graph.script(vec![(400, json!({"error": {"message": "(#131047) Re-engagement message", "code": 131047,
        "error_data": {"details": "Message failed to send because more than 24 hours have passed"}}}))]);
    server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "second"}),
        )
        .await;
    let failed = wait_for("failed", || async {
        let m = message_with_seq(&server, &tenant, &id, 3).await;
        (m["delivery"] == "failed").then_some(m)
    })
    .await;
    assert!(
        failed["error"]
            .as_str()
            .expect("error text")
            .contains("131047"),
        "{failed}"
    );
    assert_eq!(graph.requests().len(), 4, "a final error is not retried");
    server.shutdown().await;
}

#[tokio::test]
async fn free_text_outside_the_24_hour_window_is_refused_with_409() {
    let (server, graph, tenant) = setup().await;
    let two_days_ago = confab_engine::time::now_millis() / 1000 - 2 * 24 * 3600;
    let body = whatsapp::inbound_text_webhook(
        &tenant.phone_number_id,
        LEAD,
        "Ana",
        "wamid.OLD",
        two_days_ago,
        "old",
    )
    .to_string();
    let signature = whatsapp::sign(&tenant.app_secret, body.as_bytes());
    assert_eq!(
        server
            .post_webhook(&tenant, body.as_bytes(), Some(signature))
            .await
            .0,
        StatusCode::OK
    );
    let id = only_conversation(&server, &tenant).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, answer) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "late"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "whatsapp_window_closed");
    assert_eq!(
        server.messages(&tenant.token, &id).await.len(),
        1,
        "nothing stored"
    );
    // A note is not a message to the lead: allowed.
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "call instead", "internal": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(graph.requests().is_empty());
    server.shutdown().await;
}
