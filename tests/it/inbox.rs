//! The inbox API: listing, details, paging, validation, admin access.

use axum::http::StatusCode;
use serde_json::json;

use crate::harness::{GraphStandIn, TestServer};

#[tokio::test]
async fn conversations_and_messages_page_without_skipping_or_repeating() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    for i in 0..7 {
        server
            .lead_says(
                &tenant,
                &format!("4930000000{i}"),
                &format!("Lead {i}"),
                &format!("wamid.L{i}"),
                "hello",
            )
            .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/conversations?limit=3&cursor={c}"),
            None => "/api/v1/conversations?limit=3".to_string(),
        };
        let (status, page) = server.get(&tenant.token, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().expect("items") {
            seen.push(item["contact"]["name"].as_str().expect("name").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("Lead {i}")).collect();
    assert_eq!(seen, expected);

    let id = server.conversations(&tenant.token).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    for i in 0..4 {
        server
            .lead_says(
                &tenant,
                "49300000006",
                "Lead 6",
                &format!("wamid.M{i}"),
                &format!("more {i}"),
            )
            .await;
    }
    let (_, first) = server
        .get(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages?limit=2"),
        )
        .await;
    let seqs: Vec<u64> = first["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![5, 4]);
    let before = first["next_before"].as_u64().expect("more pages");
    let (_, rest) = server
        .get(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages?limit=10&before={before}"),
        )
        .await;
    let seqs: Vec<u64> = rest["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![3, 2, 1]);
    assert!(rest["next_before"].is_null());

    let (status, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["id"], id.as_str());
    assert_eq!(detail["whatsapp_window_open"], true);
    // The provider-neutral form: open, closing 24 h after the lead's last message.
    assert_eq!(detail["reply_window"]["open"], true);
    let last_inbound = confab_engine::time::parse_rfc3339(
        detail["last_inbound_at"].as_str().expect("last_inbound_at"),
    )
    .expect("a time");
    let closes = confab_engine::time::parse_rfc3339(
        detail["reply_window"]["closes_at"]
            .as_str()
            .expect("closes_at"),
    )
    .expect("a time");
    assert_eq!(closes - last_inbound, 24 * 60 * 60 * 1000);
    assert_eq!(detail["contact"]["phone"], "+49300000006");
    // The card carries the same window, for lists and deltas.
    let card = server
        .conversations(&tenant.token)
        .await
        .into_iter()
        .find(|c| c["id"] == id.as_str())
        .expect("card");
    assert_eq!(
        card["reply_window"]["closes_at"],
        detail["reply_window"]["closes_at"]
    );

    // Pages around a message (a search hit) and after it; seqs run 1..=5.
    let page = |query: String| {
        let server = &server;
        let token = tenant.token.clone();
        let id = id.clone();
        async move {
            let (status, page) = server
                .get(
                    &token,
                    &format!("/api/v1/conversations/{id}/messages?{query}"),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{query}: {page}");
            let seqs: Vec<u64> = page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|m| m["seq"].as_u64().expect("seq"))
                .collect();
            (
                seqs,
                page["next_before"].as_u64(),
                page["next_after"].as_u64(),
            )
        }
    };
    assert_eq!(
        page("limit=3&around=3".into()).await,
        (vec![4, 3, 2], Some(2), Some(4))
    );
    assert_eq!(
        page("limit=10&around=3".into()).await,
        (vec![5, 4, 3, 2, 1], None, None)
    );
    assert_eq!(
        page("limit=2&after=2".into()).await,
        (vec![4, 3], Some(3), Some(4))
    );
    assert_eq!(
        page("limit=2&after=4".into()).await,
        (vec![5], Some(5), None)
    );
    assert_eq!(page("limit=2".into()).await, (vec![5, 4], Some(4), None));
    for bad in [
        "around=3&before=4",
        "after=-1",
        "around=x",
        "before=9223372036854775808",
    ] {
        let (status, error) = server
            .get(
                &tenant.token,
                &format!("/api/v1/conversations/{id}/messages?{bad}"),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(error["error"]["code"], "invalid_query", "{bad}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_stable_error_codes_and_change_nothing() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server
        .lead_says(&tenant, "111", "Lead", "wamid.X", "hi")
        .await;
    let id = server.conversations(&tenant.token).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let messages = format!("/api/v1/conversations/{id}/messages");

    let (status, e) = server
        .post(&tenant.token, &messages, json!({"text": "   "}))
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("empty_text"))
    );
    let (status, e) = server
        .post(&tenant.token, &messages, json!({"text": "x".repeat(5000)}))
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("text_too_long"))
    );
    let (status, e) = server
        .post(&tenant.token, &messages, json!({"internal": false}))
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("missing_field"))
    );
    let (status, e) = server
        .post(&tenant.token, &messages, json!({"text": 5}))
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"))
    );
    let raw = server
        .http
        .post(server.url(&messages))
        .bearer_auth(&tenant.token)
        .header("content-type", "application/json")
        .body("{\"text\":")
        .send()
        .await
        .expect("request");
    assert_eq!(raw.status(), 400);
    let (status, e) = server
        .post(&tenant.token, &messages, json!({"text": "Hi {{nickname}}"}))
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_variable"))
    );
    assert!(e["error"]["message"]
        .as_str()
        .expect("message")
        .contains("nickname"));
    let (status, e) = server
        .post(&tenant.token, &messages, json!({"text": "At {{company}}?"}))
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("variable_without_value")
        )
    );
    let (status, e) = server
        .get(&tenant.token, "/api/v1/conversations?limit=999")
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_query"))
    );
    let (status, e) = server
        .get(&tenant.token, "/api/v1/conversations?cursor=garbage")
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_cursor"))
    );
    for path in [
        "/api/v1/conversations/not-an-id",
        "/api/v1/conversations/01ARZ3NDEKTSV4RRFFQ69G5FAV",
    ] {
        let (status, e) = server.get(&tenant.token, path).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path}"
        );
    }
    let (status, e) = server.get(&tenant.token, "/api/v1/nothing-here").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_route"))
    );
    assert_eq!(
        server.messages(&tenant.token, &id).await.len(),
        1,
        "nothing was stored"
    );
    assert!(graph.requests().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn tokens_are_checked_and_admin_and_agent_routes_do_not_mix() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (status, e) = server.get("not-a-token", "/api/v1/conversations").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let bare = server
        .http
        .get(server.url("/api/v1/conversations"))
        .send()
        .await
        .expect("request");
    assert_eq!(bare.status(), 401);
    // The admin token is not an agent token, and an agent token is not the admin's.
    let (status, _) = server
        .get(&server.admin_token, "/api/v1/conversations")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .post(
            &tenant.token,
            "/api/v1/admin/workspaces",
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, e) = server
        .admin_post("/api/v1/admin/workspaces", json!({"name": ""}))
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("missing_field"))
    );
    let (status, _) = server
        .admin_post(
            "/api/v1/admin/workspaces/01ARZ3NDEKTSV4RRFFQ69G5FAV/agents",
            json!({"name": "a", "email": "a@b.c"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, e) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/channels", tenant.workspace_id),
            json!({"kind": "fax", "name": "x"}),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("invalid_channel_kind")
        )
    );
    server.shutdown().await;

    let no_admin = TestServer::start_with(|c| c.admin_token = None).await;
    let response = no_admin
        .http
        .post(no_admin.url("/api/v1/admin/workspaces"))
        .bearer_auth("anything")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 403);
    no_admin.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let server = TestServer::start().await;
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(health.status(), 200);
    let ready = server
        .http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("request");
    assert_eq!(ready.status(), 200);
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.expect("text").contains("confab_"));
    server.shutdown().await;
}
