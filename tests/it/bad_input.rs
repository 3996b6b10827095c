//! Provider input that can never be stored: answered with a 4xx that says why, nothing
//! left behind, and the store keeps serving every workspace.

use axum::http::StatusCode;
use confab_engine::wire::whatsapp;
use serde_json::{json, Value};

use crate::harness::{GraphStandIn, StreamClient, Tenant, TestServer};

/// Longer than fjall's 65,535-byte key limit, which used to stop the committer.
fn huge() -> String {
    "w".repeat(70_000)
}

fn text_webhook(tenant: &Tenant, from: &str, wamid: &str, text: &str) -> Value {
    whatsapp::inbound_text_webhook(
        &tenant.phone_number_id,
        from,
        "Lead",
        wamid,
        confab_engine::time::now_millis() / 1000,
        text,
    )
}

async fn post_signed(server: &TestServer, tenant: &Tenant, body: &Value) -> (StatusCode, Value) {
    let raw = body.to_string();
    let signature = whatsapp::sign(&tenant.app_secret, raw.as_bytes());
    server
        .post_webhook(tenant, raw.as_bytes(), Some(signature))
        .await
}

async fn assert_ready(server: &TestServer) {
    let response = reqwest::get(server.url("/readyz")).await.expect("readyz");
    assert_eq!(
        response.status().as_u16(),
        200,
        "the store still accepts writes"
    );
}

#[tokio::test]
async fn oversize_provider_ids_get_a_4xx_and_leave_nothing_behind() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let huge = huge();
    let bodies = [
        (
            "message id",
            text_webhook(&tenant, "5511900000001", &huge, "hi"),
        ),
        (
            "sender",
            text_webhook(&tenant, &huge, "wamid.long-from", "hi"),
        ),
        (
            "status id",
            whatsapp::status_webhook(&tenant.phone_number_id, &huge, "read", 1, "5511900000001"),
        ),
    ];
    for (what, body) in &bodies {
        // Twice: a provider retries what it was refused, and a retry must fare the same.
        for _ in 0..2 {
            let (status, answer) = post_signed(&server, &tenant, body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {answer}");
            assert_eq!(answer["error"]["code"], "invalid_items", "{what}");
            let message = answer["error"]["message"].as_str().expect("message");
            assert!(!message.contains("panic"), "{what}: {message}");
        }
    }
    assert!(
        server.conversations(&tenant.token).await.is_empty(),
        "no conversation is left behind"
    );
    assert_ready(&server).await;

    // Every workspace still writes.
    let answer = server
        .lead_says(&tenant, "5511900000002", "Ana", "wamid.fine", "still here")
        .await;
    assert_eq!(answer["stored"], 1);
    let other = server.provision(&graph).await;
    server
        .lead_says(&other, "5511900000003", "Bia", "wamid.other", "me too")
        .await;
    assert_eq!(server.conversations(&tenant.token).await.len(), 1);
    assert_eq!(server.conversations(&other.token).await.len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_batch_keeps_its_good_items_and_counts_the_rejected() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let mut body = text_webhook(&tenant, "5511900000001", "wamid.good", "kept");
    let messages = &mut body["entry"][0]["changes"][0]["value"]["messages"];
    let bad = json!({"from": "5511900000001", "id": huge(), "type": "text",
                     "text": {"body": "never stored"}});
    messages.as_array_mut().expect("messages").push(bad);
    let (status, answer) = post_signed(&server, &tenant, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (answer["stored"].as_u64(), answer["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    let conversations = server.conversations(&tenant.token).await;
    assert_eq!(conversations.len(), 1);
    let id = conversations[0]["id"].as_str().expect("id");
    let texts: Vec<Value> = server
        .messages(&tenant.token, id)
        .await
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!("kept")]);
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversize_campaign_is_cut_and_the_message_stored() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let mut body = text_webhook(&tenant, "5511900000001", "wamid.ad", "saw your ad");
    body["entry"][0]["changes"][0]["value"]["messages"][0]["referral"] = json!({
        "source_type": "ad", "source_id": huge(), "headline": "H".repeat(70_000)});
    let (status, answer) = post_signed(&server, &tenant, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["stored"], 1);
    let conversations = server.conversations(&tenant.token).await;
    let campaign = conversations[0]["campaign"].as_str().expect("campaign");
    assert_eq!(campaign, "H".repeat(whatsapp::MAX_LABEL_CHARS));
    // The campaign filter finds it by the label as stored.
    let (status, page) = server
        .get(
            &tenant.token,
            &format!("/api/v1/conversations?campaign={campaign}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_ready(&server).await;
    server.shutdown().await;
}

/// A new lead's conversation and its first message are one commit: nobody ever sees the
/// conversation without the message.
#[tokio::test]
async fn a_new_conversation_is_never_seen_without_its_first_message() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let mut client = StreamClient::connect(&server, &tenant.token).await;
    client.subscribe(None).await;
    for i in 0..20 {
        let lead = format!("55119000001{i:02}");
        let text = format!("first words of lead {i}");
        let body = text_webhook(&tenant, &lead, &format!("wamid.new-{i}"), &text);
        let (status, answer) = post_signed(&server, &tenant, &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let deltas = client
            .deltas_until(|d| d["kind"] == "message_created")
            .await;
        let created = &deltas[0];
        assert_eq!(created["kind"], "conversation_created");
        assert_eq!(created["conversation"]["preview"], text.as_str());
        assert_eq!(
            deltas[1]["offset"].as_u64(),
            created["offset"].as_u64().map(|o| o + 1),
            "one commit: adjacent offsets"
        );
    }
    for card in server.conversations(&tenant.token).await {
        assert!(
            card["preview"].as_str().is_some_and(|p| !p.is_empty()),
            "{card}"
        );
    }
    client.close().await;
    server.shutdown().await;
}
