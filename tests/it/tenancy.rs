//! Another workspace's token sees nothing of this one.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{GraphStandIn, StreamClient, TestServer};

#[tokio::test]
async fn another_workspaces_token_sees_and_touches_nothing() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let ours = server.provision(&graph).await;
    let theirs = server.provision(&graph).await;

    let mut their_stream = StreamClient::connect(&server, &theirs.token).await;
    their_stream.subscribe(Some(0)).await;

    server
        .lead_says(
            &ours,
            "111",
            "Secret Lead",
            "wamid.S1",
            "confidential pricing question",
        )
        .await;
    let id = server.conversations(&ours.token).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let contact = server.conversations(&ours.token).await[0]["contact"]["id"]
        .as_str()
        .expect("contact")
        .to_string();

    assert!(server.conversations(&theirs.token).await.is_empty());
    let (status, article) = server
        .post(
            &ours.token,
            "/api/v1/kb/articles",
            json!({"title": "Pricing", "body": "confidential pricing for Acme"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{article}");
    let article = article["id"].as_str().expect("article").to_string();
    let (status, canned) = server
        .post(
            &ours.token,
            "/api/v1/canned-replies",
            json!({"title": "Prices", "shortcut": "price", "text": "confidential price list"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{canned}");
    let canned = canned["id"].as_str().expect("canned reply").to_string();
    for path in [
        format!("/api/v1/canned-replies/{canned}"),
        format!("/api/v1/channels/{}", ours.channel_id),
        format!("/api/v1/kb/articles/{article}"),
        format!("/api/v1/conversations/{id}/messages/1/reasoning"),
        format!("/api/v1/conversations/{id}/activity"),
        format!("/api/v1/conversations/{id}"),
        format!("/api/v1/conversations/{id}/messages"),
        format!("/api/v1/conversations/{id}/messages?around=1"),
        format!("/api/v1/conversations/{id}/timeline"),
        format!("/api/v1/conversations/{id}/messages/1/attachments/0"),
        format!("/api/v1/contacts/{contact}"),
        format!("/api/v1/contacts/{contact}/export"),
    ] {
        let (status, body) = server.get(&theirs.token, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(
            !body.to_string().contains("confidential"),
            "{path} leaked: {body}"
        );
    }
    let (status, _) = server
        .post(
            &theirs.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "hijack"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Writing first on another workspace's channel: it does not exist for them.
    let (status, _) = server
        .post(
            &theirs.token,
            "/api/v1/conversations",
            json!({"channel_id": ours.channel_id, "to": {"provider_id": "ACoAAX"}, "text": "hijack"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .post(
            &theirs.token,
            &format!("/api/v1/conversations/{id}/messages/1/feedback"),
            json!({"rating": "down", "correction": "hijack"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (status, _) in [
        server
            .put(
                &theirs.token,
                &format!("/api/v1/kb/articles/{article}"),
                json!({"title": "x", "body": "hijack"}),
            )
            .await,
        server
            .delete(&theirs.token, &format!("/api/v1/kb/articles/{article}"))
            .await,
        server
            .put(
                &theirs.token,
                &format!("/api/v1/canned-replies/{canned}"),
                json!({"title": "x", "shortcut": "x", "text": "hijack"}),
            )
            .await,
        server
            .delete(&theirs.token, &format!("/api/v1/canned-replies/{canned}"))
            .await,
        server
            .post(
                &theirs.token,
                &format!("/api/v1/conversations/{id}/snooze"),
                json!({"until": confab_engine::time::to_rfc3339(confab_engine::time::now_millis() + 3_600_000)}),
            )
            .await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    // Our agent's password and invitations are not theirs to set (both are admins).
    for (status, _) in [
        server
            .put(
                &theirs.token,
                &format!("/api/v1/agents/{}/password", ours.agent_id),
                json!({"password": "their chosen password"}),
            )
            .await,
        server
            .post(
                &theirs.token,
                &format!("/api/v1/agents/{}/invite", ours.agent_id),
                json!({}),
            )
            .await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (_, counts) = server
        .get(&theirs.token, "/api/v1/conversations/counts")
        .await;
    assert_eq!(counts["all"], 0, "{counts}");
    assert_eq!(counts["snoozed"], 0, "{counts}");
    let (_, ours_card) = server
        .get(&ours.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(
        ours_card["snoozed_until"],
        Value::Null,
        "their snooze changed nothing"
    );
    // Their bulk action names our conversation: not found there; their query finds none
    // of ours.
    let (status, answer) = server
        .post(
            &theirs.token,
            "/api/v1/conversations/bulk",
            json!({"ids": [id], "status": "closed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["results"][0]["error"]["code"], "not_found",
        "{answer}"
    );
    let (status, answer) = server
        .post(
            &theirs.token,
            "/api/v1/conversations/bulk",
            json!({"query": "view=all", "status": "closed"}),
        )
        .await;
    assert_eq!(
        (status, &answer["results"]),
        (StatusCode::OK, &json!([])),
        "{answer}"
    );
    let (_, ours_card) = server
        .get(&ours.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(ours_card["status"], "open", "{ours_card}");
    // Our outcome is ours: theirs cannot set it, their counts and breakdown hold none.
    let (status, _) = server
        .post(
            &ours.token,
            &format!("/api/v1/conversations/{id}/outcome"),
            json!({"outcome": "Interested"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .post(
            &theirs.token,
            &format!("/api/v1/conversations/{id}/outcome"),
            json!({"outcome": "Not interested"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = server.get(&theirs.token, "/api/v1/outcomes").await;
    assert!(
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|o| o["count"] == 0),
        "{list}"
    );
    let (_, report) = server
        .get(&theirs.token, "/api/v1/analytics/outcomes")
        .await;
    assert_eq!(report["items"], json!([]), "{report}");
    // Our webhook is ours: theirs neither list nor reach it.
    let (status, hook) = server
        .post(
            &ours.token,
            "/api/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "kinds": ["message_created"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let hook_path = format!("/api/v1/webhooks/{}", hook["id"].as_str().expect("id"));
    let (_, list) = server.get(&theirs.token, "/api/v1/webhooks").await;
    assert_eq!(list["items"], json!([]), "{list}");
    for (status, _) in [
        server.get(&theirs.token, &hook_path).await,
        server
            .patch_json(&theirs.token, &hook_path, json!({"enabled": false}))
            .await,
        server.delete(&theirs.token, &hook_path).await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (_, audit) = server.get(&theirs.token, "/api/v1/audit").await;
    assert!(!audit.to_string().contains(&ours.agent_id), "{audit}");
    assert!(!audit.to_string().contains(&ours.channel_id), "{audit}");
    // Our tags and campaigns are ours to list.
    let (status, _) = server
        .post(
            &ours.token,
            &format!("/api/v1/conversations/{id}/tags"),
            json!({"add": ["ours-only"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, tags) = server.get(&ours.token, "/api/v1/tags").await;
    assert_eq!(tags["items"][0]["name"], "ours-only", "{tags}");
    for path in ["/api/v1/tags", "/api/v1/campaigns"] {
        let (_, list) = server.get(&theirs.token, path).await;
        assert_eq!(list["items"], json!([]), "{path}: {list}");
    }
    let (_, list) = server.get(&theirs.token, "/api/v1/kb/articles").await;
    assert_eq!(list["items"], json!([]));
    // Their library is their own: empty, and our shortcut is free in it.
    let (_, list) = server.get(&theirs.token, "/api/v1/canned-replies").await;
    assert_eq!(list["items"], json!([]));
    let (status, theirs_canned) = server
        .post(
            &theirs.token,
            "/api/v1/canned-replies",
            json!({"title": "Their prices", "shortcut": "price", "text": "theirs"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{theirs_canned}");
    let (_, list) = server.get(&ours.token, "/api/v1/canned-replies").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["items"][0]["text"], "confidential price list");
    let (_, channels) = server.get(&theirs.token, "/api/v1/channels").await;
    assert!(
        !channels.to_string().contains(&ours.channel_id),
        "{channels}"
    );
    assert_eq!(server.messages(&ours.token, &id).await.len(), 1);
    assert!(graph.requests().is_empty());

    // Their stream got nothing of ours: the next delta it sees is its own.
    server
        .lead_says(&theirs, "222", "Their Lead", "wamid.T1", "their own")
        .await;
    let deltas = their_stream
        .deltas_until(|d| d["kind"] == "message_created")
        .await;
    for delta in &deltas {
        assert!(
            !delta.to_string().contains("confidential"),
            "leaked {delta}"
        );
        assert_ne!(delta["conversation_id"], id.as_str());
    }
    assert_eq!(
        deltas.last().expect("delta")["message"]["text"],
        "their own"
    );
    // Merging names a conversation of one workspace only: neither way round, nor a split.
    let their_id = server.conversations(&theirs.token).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    for (token, path, other) in [
        (
            &theirs.token,
            format!("/api/v1/conversations/{their_id}/merge"),
            &id,
        ),
        (
            &theirs.token,
            format!("/api/v1/conversations/{id}/merge"),
            &their_id,
        ),
        (
            &ours.token,
            format!("/api/v1/conversations/{id}/merge"),
            &their_id,
        ),
        (
            &theirs.token,
            format!("/api/v1/conversations/{their_id}/split"),
            &id,
        ),
        (
            &theirs.token,
            format!("/api/v1/conversations/{id}/split"),
            &their_id,
        ),
    ] {
        let (status, body) = server
            .post(token, &path, json!({"conversation_id": other}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (_, ours_card) = server
        .get(&ours.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(
        (&ours_card["merged_into"], &ours_card["merged"]),
        (&Value::Null, &json!([])),
        "{ours_card}"
    );
    their_stream.close().await;
    // Operations: their export holds nothing of ours; they cannot erase our lead nor see
    // our erasures.
    let (status, _) = server
        .delete(
            &theirs.token,
            &format!("/api/v1/contacts/{contact}?erase=true"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(server.conversations(&ours.token).await.len(), 1);
    let export = server
        .http
        .get(server.url("/api/v1/export"))
        .bearer_auth(&theirs.token)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    assert!(
        !export.contains("confidential") && !export.contains(&id),
        "{export}"
    );
    let (status, erasure) = server
        .delete(
            &ours.token,
            &format!("/api/v1/contacts/{contact}?erase=true"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{erasure}");
    let erasure = erasure["id"].as_str().expect("erasure id");
    let (status, _) = server
        .get(&theirs.token, &format!("/api/v1/erasures/{erasure}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = server.get(&theirs.token, "/api/v1/erasures").await;
    assert_eq!(list["items"], json!([]), "{list}");
    server.shutdown().await;
}

#[tokio::test]
async fn notifications_devices_and_workspace_settings_stay_in_their_workspace() {
    let server = TestServer::start_with(|c| c.notifications.allow_private_push = true).await;
    let graph = GraphStandIn::start().await;
    let ours = server.provision(&graph).await;
    let theirs = server.provision(&graph).await;
    let (status, bo) = server
        .post(
            &ours.token,
            "/api/v1/agents",
            json!({"name": "Bo Chen", "email": "bo@acme.test", "role": "agent"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bo}");
    let bo_token = bo["token"].as_str().expect("token");
    server
        .lead_says(&ours, "333", "Secret Lead", "wamid.S9", "confidential")
        .await;
    let id = server.conversations(&ours.token).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, _) = server
        .post(
            &ours.token,
            &format!("/api/v1/conversations/{id}/assign"),
            json!({"agent_id": bo["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = crate::harness::wait_for("Bo's notification", || async {
        let (status, page) = server.get(bo_token, "/api/v1/me/notifications").await;
        (page["unread_count"] == 1).then_some((status, page))
    })
    .await;
    let notification = page["items"][0]["id"].as_str().expect("id").to_string();
    let p256dh =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    let (status, device) = server
        .post(
            bo_token,
            "/api/v1/me/push-subscriptions",
            json!({"endpoint": "http://127.0.0.1:9/push/bo",
                   "keys": {"p256dh": p256dh, "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    let device = device["id"].as_str().expect("id").to_string();

    // Another workspace's agent (and another agent of ours) sees none of Bo's.
    for token in [theirs.token.as_str(), ours.token.as_str()] {
        let (_, list) = server.get(token, "/api/v1/me/notifications").await;
        assert_eq!(list["items"], json!([]), "{list}");
        let (status, _) = server
            .post(
                token,
                &format!("/api/v1/me/notifications/{notification}/read"),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, devices) = server.get(token, "/api/v1/me/push-subscriptions").await;
        assert_eq!(devices["items"], json!([]));
        let (status, _) = server
            .delete(token, &format!("/api/v1/me/push-subscriptions/{device}"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (_, list) = server.get(bo_token, "/api/v1/me/notifications").await;
    assert_eq!(list["unread_count"], 1, "still unread: {list}");
    let (_, devices) = server.get(bo_token, "/api/v1/me/push-subscriptions").await;
    assert_eq!(devices["items"].as_array().map(Vec::len), Some(1));

    // A workspace's response target is its own.
    let (status, _) = server
        .patch_json(
            &theirs.token,
            "/api/v1/workspace/settings",
            json!({"response_target_secs": 600}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, settings) = server.get(&ours.token, "/api/v1/workspace/settings").await;
    assert_eq!(settings["response_target_secs"], 86400);
    server.shutdown().await;
}
