//! Inbox operations: commands on a conversation, notes with mentions, contacts, roles.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{GraphStandIn, StreamClient, Tenant, TestServer};

async fn conversation(server: &TestServer, tenant: &Tenant) -> String {
    server
        .lead_says(tenant, "5511987654321", "Ana Lima", "wamid.C1", "Hi there")
        .await;
    server.conversations(&tenant.token).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// A second agent in the tenant's workspace.
pub(crate) async fn second_agent(
    server: &TestServer,
    tenant: &Tenant,
    name: &str,
    role: &str,
) -> (String, String) {
    let (status, agent) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/agents", tenant.workspace_id),
            json!({"name": name, "email": format!("{}@acme.test", name.to_lowercase().replace(' ', ".")), "role": role}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    (
        agent["id"].as_str().expect("id").to_string(),
        agent["token"].as_str().expect("token").to_string(),
    )
}

#[tokio::test]
async fn each_command_is_one_update_and_repeating_it_changes_nothing() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server.enable_ai_later(&tenant).await;
    let id = conversation(&server, &tenant).await;
    let (bo, bo_token) = second_agent(&server, &tenant, "Bo Chen", "agent").await;
    let mut stream = StreamClient::connect(&server, &tenant.token).await;
    stream.subscribe(None).await;
    let mut bo_stream = StreamClient::connect(&server, &bo_token).await;
    bo_stream.subscribe(None).await;
    let path = |cmd: &str| format!("/api/v1/conversations/{id}/{cmd}");

    let (status, card) = server
        .post(&tenant.token, &path("assign"), json!({"agent_id": bo}))
        .await;
    assert_eq!(status, StatusCode::OK, "{card}");
    assert_eq!(card["assignee_id"], bo.as_str());
    let deltas = stream.deltas_until(|d| d["kind"] == "notification").await;
    assert_eq!(deltas.len(), 2, "one update, one notification: {deltas:?}");
    assert_eq!(deltas[0]["kind"], "conversation_updated");
    assert_eq!(deltas[0]["conversation"]["assignee_id"], bo.as_str());
    assert_eq!(deltas[1]["agent_id"], bo.as_str());
    assert_eq!(deltas[1]["reason"], "assignment");
    assert_eq!(deltas[1]["by_agent_id"], tenant.agent_id.as_str());
    let for_bo = bo_stream
        .deltas_until(|d| d["kind"] == "notification")
        .await;
    assert_eq!(for_bo.last().expect("delta")["agent_id"], bo.as_str());

    // Repeats: same answer, no delta. The next delta seen is the tag change below.
    let (status, again) = server
        .post(&tenant.token, &path("assign"), json!({"agent_id": bo}))
        .await;
    assert_eq!(
        (status, &again["assignee_id"]),
        (StatusCode::OK, &json!(bo))
    );
    for _ in 0..2 {
        let (status, card) = server
            .post(
                &tenant.token,
                &path("tags"),
                json!({"add": ["vip", " hot "]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{card}");
        assert_eq!(card["tags"], json!(["vip", "hot"]));
    }
    let next = stream.next_of("delta").await;
    assert_eq!(next["conversation"]["tags"], json!(["vip", "hot"]));
    let (_, card) = server
        .post(
            &tenant.token,
            &path("tags"),
            json!({"remove": ["hot"], "add": ["q3"]}),
        )
        .await;
    assert_eq!(card["tags"], json!(["vip", "q3"]));

    let (_, card) = server
        .post(&tenant.token, &path("status"), json!({"status": "closed"}))
        .await;
    assert_eq!(card["status"], "closed");
    let (_, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert!(detail["closed_at"].is_string());
    // A new message from the lead reopens it.
    server
        .lead_says(
            &tenant,
            "5511987654321",
            "Ana Lima",
            "wamid.C2",
            "one more thing",
        )
        .await;
    let (_, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(detail["status"], "open");
    assert_eq!(detail["unread_count"], 2);

    let (_, card) = server.post(&tenant.token, &path("read"), json!({})).await;
    assert_eq!(card["unread_count"], 0);
    for (mode, expected) in [
        ("paused", "paused"),
        ("manual", "manual"),
        ("active", "active"),
    ] {
        let (status, card) = server
            .post(&tenant.token, &path("ai"), json!({"mode": mode}))
            .await;
        assert_eq!(
            (status, card["ai_mode"].as_str()),
            (StatusCode::OK, Some(expected))
        );
    }
    let (status, card) = server
        .post(&tenant.token, &path("assign"), json!({"agent_id": null}))
        .await;
    assert_eq!(
        (status, &card["assignee_id"]),
        (StatusCode::OK, &Value::Null)
    );
    stream.close().await;
    bo_stream.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_command_values_are_422_and_change_nothing() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server.enable_ai_later(&tenant).await;
    let other = server.provision(&graph).await;
    let id = conversation(&server, &tenant).await;
    let path = |cmd: &str| format!("/api/v1/conversations/{id}/{cmd}");
    let cases = [
        ("status", json!({"status": "archived"}), "invalid_value"),
        ("ai", json!({"mode": "turbo"}), "invalid_value"),
        ("assign", json!({"agent_id": "nobody"}), "unknown_agent"),
        (
            "assign",
            json!({"agent_id": other.agent_id}),
            "unknown_agent",
        ),
        ("tags", json!({"add": [""]}), "invalid_tag"),
        ("tags", json!({"add": ["x".repeat(65)]}), "invalid_tag"),
        (
            "tags",
            json!({"add": (0..51).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
            "too_many_tags",
        ),
    ];
    for (cmd, body, code) in cases {
        let (status, e) = server.post(&tenant.token, &path(cmd), body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{cmd} {body}: {e}"
        );
        assert_eq!(e["error"]["code"], code, "{cmd} {body}");
    }
    let (_, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(detail["status"], "open");
    assert_eq!(detail["ai_mode"], "active");
    assert_eq!(detail["tags"], json!([]));
    assert!(detail["assignee_id"].is_null());
    server.shutdown().await;
}

#[tokio::test]
async fn a_human_reply_pauses_the_ai_and_records_the_first_response() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server.enable_ai_later(&tenant).await;
    let id = conversation(&server, &tenant).await;
    let (_, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(detail["ai_mode"], "active");
    assert!(detail["first_inbound_at"].is_string());
    assert!(detail["first_response_at"].is_null());
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "I'll take this one"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(detail["ai_mode"], "paused", "the human took over");
    assert_eq!(detail["status"], "pending", "waiting for the lead");
    assert_eq!(detail["first_responder"], "human");
    let first = detail["first_response_at"]
        .as_str()
        .expect("first response")
        .to_string();
    server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "second"}),
        )
        .await;
    let (_, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(
        detail["first_response_at"],
        first.as_str(),
        "only the first counts"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn mentions_in_notes_notify_each_mentioned_agent_and_never_reach_the_lead() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server.enable_ai_later(&tenant).await;
    let id = conversation(&server, &tenant).await;
    let (bo, _) = second_agent(&server, &tenant, "Bo Chen", "agent").await;
    let (cy, _) = second_agent(&server, &tenant, "Cy Diaz", "agent").await;
    let mut stream = StreamClient::connect(&server, &tenant.token).await;
    stream.subscribe(None).await;
    let (status, note) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "@Bo Chen and @cy: VIP, call her. @nobody", "internal": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{note}");
    let deltas = stream
        .deltas_until(|d| d["kind"] == "notification" && d["agent_id"] == cy.as_str())
        .await;
    let notified: Vec<&str> = deltas
        .iter()
        .filter(|d| d["kind"] == "notification")
        .map(|d| d["agent_id"].as_str().expect("agent"))
        .collect();
    assert_eq!(notified, vec![bo.as_str(), cy.as_str()]);
    for n in deltas.iter().filter(|d| d["kind"] == "notification") {
        assert_eq!(n["reason"], "mention");
        assert_eq!(n["message_id"], note["id"]);
    }
    let (_, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(detail["ai_mode"], "active", "a note is not a takeover");
    assert_eq!(
        detail["preview"], "Hi there",
        "a note does not replace the lead's preview"
    );
    assert!(
        graph.requests().is_empty(),
        "notes never go to the provider"
    );
    stream.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn one_lead_on_two_channels_is_one_contact_and_edits_reach_both_conversations() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (status, channel) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/channels", tenant.workspace_id),
            json!({"kind": "whatsapp", "name": "Support", "phone_number_id": "222333", "app_secret": "second-secret",
                   "verify_token": "v", "access_token": "t", "api_base_url": graph.base_url}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let second = Tenant {
        channel_id: channel["id"].as_str().expect("id").to_string(),
        app_secret: "second-secret".into(),
        phone_number_id: "222333".into(),
        ..tenant.clone()
    };
    server
        .lead_says(
            &tenant,
            "5511987654321",
            "Ana Lima",
            "wamid.S1",
            "sales question",
        )
        .await;
    server
        .lead_says(
            &second,
            "5511987654321",
            "Ana",
            "wamid.S2",
            "support question",
        )
        .await;
    let conversations = server.conversations(&tenant.token).await;
    assert_eq!(conversations.len(), 2);
    let contact_id = conversations[0]["contact"]["id"]
        .as_str()
        .expect("contact")
        .to_string();
    assert_eq!(
        conversations[1]["contact"]["id"],
        contact_id.as_str(),
        "the same lead"
    );

    let (status, contact) = server
        .get(&tenant.token, &format!("/api/v1/contacts/{contact_id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{contact}");
    assert_eq!(contact["phone"], "+5511987654321");
    assert_eq!(contact["conversations"].as_array().expect("list").len(), 2);

    let mut stream = StreamClient::connect(&server, &tenant.token).await;
    stream.subscribe(None).await;
    let response = server
        .http
        .patch(server.url(&format!("/api/v1/contacts/{contact_id}")))
        .bearer_auth(&tenant.token)
        .json(&json!({"company": "Acme Corp", "title": "CTO", "email": "ana@acme.io", "avatar_url": "https://cdn.acme.io/ana.png"}))
        .send()
        .await
        .expect("patch");
    let (status, edited) = crate::harness::status_json(response).await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["company"], "Acme Corp");
    assert_eq!(edited["name"], "Ana Lima", "fields not sent are kept");
    let updates = stream
        .deltas_until({
            let mut seen = 0;
            move |d| {
                if d["kind"] == "conversation_updated" {
                    seen += 1;
                }
                seen == 2
            }
        })
        .await;
    let mut updated: Vec<&str> = updates
        .iter()
        .map(|d| d["conversation_id"].as_str().expect("id"))
        .collect();
    updated.sort_unstable();
    let mut expected: Vec<&str> = conversations
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    expected.sort_unstable();
    assert_eq!(
        updated, expected,
        "one update per conversation of the contact"
    );
    for u in &updates {
        assert_eq!(u["conversation"]["contact"]["company"], "Acme Corp");
        assert_eq!(
            u["conversation"]["contact"]["avatar_url"],
            "https://cdn.acme.io/ana.png"
        );
    }
    for bad in [
        json!({"email": "not-an-email"}),
        json!({"avatar_url": "ftp://x"}),
        json!({"nickname": "A"}),
        json!({"phone": "abc"}),
    ] {
        let response = server
            .http
            .patch(server.url(&format!("/api/v1/contacts/{contact_id}")))
            .bearer_auth(&tenant.token)
            .json(&bad)
            .send()
            .await
            .expect("patch");
        assert_eq!(response.status(), 422, "{bad}");
    }
    stream.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn only_workspace_admins_add_agents_and_everyone_lists_them() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (_, agent_token) = second_agent(&server, &tenant, "Bo Chen", "agent").await;
    let (status, e) = server
        .post(
            &agent_token,
            "/api/v1/agents",
            json!({"name": "Eve", "email": "eve@acme.test"}),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("admin_only"))
    );
    let (status, created) = server
        .post(
            &tenant.token,
            "/api/v1/agents",
            json!({"name": "Dee", "email": "dee@acme.test"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["role"], "agent");
    let (_, list) = server.get(&agent_token, "/api/v1/agents").await;
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| a["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, vec!["Ana Agent", "Bo Chen", "Dee"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_canned_reply_is_found_by_its_shortcut_and_filled_like_any_reply_when_sent() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let id = conversation(&server, &tenant).await;
    let create = |title: &str, shortcut: &str, text: &str| {
        let body = json!({"title": title, "shortcut": shortcut, "text": text});
        let server = &server;
        let token = tenant.token.clone();
        async move { server.post(&token, "/api/v1/canned-replies", body).await }
    };

    let (status, price) = create(
        "Price list",
        "price",
        "Hi {{first_name}}, our plans start at 49 dollars.",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{price}");
    assert_eq!(price["shortcut"], "price");
    assert_eq!(price["created_by"], tenant.agent_id.as_str());
    let (status, hours) = create("Opening hours", "hours", "We answer 9 to 18.").await;
    assert_eq!(status, StatusCode::CREATED, "{hours}");

    // Refused, and nothing stored: a shortcut taken in any case, a bad shortcut, an
    // unknown variable, an empty text, an unknown field.
    for (body, code) in [
        (
            json!({"title": "x", "shortcut": "PRICE", "text": "x"}),
            "shortcut_taken",
        ),
        (
            json!({"title": "x", "shortcut": "two words", "text": "x"}),
            "invalid_shortcut",
        ),
        (
            json!({"title": "x", "shortcut": "nick", "text": "Hi {{nickname}}"}),
            "unknown_variable",
        ),
        (
            json!({"title": "x", "shortcut": "empty", "text": "  "}),
            "invalid_value",
        ),
        (
            json!({"title": "x", "shortcut": "extra", "text": "x", "tags": []}),
            "invalid_value",
        ),
    ] {
        let (status, error) = server
            .post(&tenant.token, "/api/v1/canned-replies", body.clone())
            .await;
        assert!(status.is_client_error(), "{body}: {status} {error}");
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
    }
    let (_, all) = server.get(&tenant.token, "/api/v1/canned-replies").await;
    let shortcuts: Vec<&str> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["shortcut"].as_str().expect("shortcut"))
        .collect();
    assert_eq!(shortcuts, ["hours", "price"], "{all}");

    // The composer's search: shortcuts starting with the query first, then titles.
    let (_, found) = server
        .get(&tenant.token, "/api/v1/canned-replies?q=PR")
        .await;
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found["items"][0]["id"], price["id"]);
    let (_, found) = server
        .get(&tenant.token, "/api/v1/canned-replies?q=open")
        .await;
    assert_eq!(found["items"][0]["id"], hours["id"], "{found}");
    let (status, refused) = server
        .get(
            &tenant.token,
            &format!("/api/v1/canned-replies?q={}", "p".repeat(201)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");

    // Inserted and sent, it is filled as any reply is.
    let (status, sent) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": price["text"]}),
        )
        .await;
    assert!(status.is_success(), "{sent}");
    let requests = graph.wait_requests(1).await;
    assert_eq!(
        requests[0].body["text"]["body"],
        "Hi Ana, our plans start at 49 dollars."
    );

    // A new shortcut frees the old one; a deleted reply frees its own.
    let price_id = price["id"].as_str().expect("id");
    let (status, renamed) = server
        .put(
            &tenant.token,
            &format!("/api/v1/canned-replies/{price_id}"),
            json!({"title": "Pricing", "shortcut": "pricing", "text": "From 49 dollars."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["shortcut"], "pricing");
    let (status, again) = create("Price again", "price", "x").await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    let (status, taken) = server
        .put(
            &tenant.token,
            &format!("/api/v1/canned-replies/{price_id}"),
            json!({"title": "Pricing", "shortcut": "Price", "text": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{taken}");
    let (_, unchanged) = server
        .get(&tenant.token, &format!("/api/v1/canned-replies/{price_id}"))
        .await;
    assert_eq!(unchanged["shortcut"], "pricing", "{unchanged}");
    let hours_id = hours["id"].as_str().expect("id");
    let (status, _) = server
        .delete(&tenant.token, &format!("/api/v1/canned-replies/{hours_id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .get(&tenant.token, &format!("/api/v1/canned-replies/{hours_id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, reused) = create("Hours", "hours", "Still 9 to 18.").await;
    assert_eq!(status, StatusCode::CREATED, "{reused}");
    server.shutdown().await;
}

async fn bulk(server: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    server.post(token, "/api/v1/conversations/bulk", body).await
}

fn result_ids(answer: &Value) -> Vec<(String, bool)> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (r["id"].as_str().expect("id").to_owned(), r["ok"] == true))
        .collect()
}

#[tokio::test]
async fn a_bulk_action_changes_each_selected_conversation_once_through_its_own_actor() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let theirs = server.provision(&graph).await;
    for (wa_id, name, wamid) in [
        ("5511900000201", "Ana Lima", "wamid.B1"),
        ("5511900000202", "Bruno Dias", "wamid.B2"),
        ("5511900000203", "Carla Reis", "wamid.B3"),
    ] {
        server.lead_says(&tenant, wa_id, name, wamid, "Hello").await;
    }
    server
        .lead_says(&theirs, "5511900000299", "Zed", "wamid.B9", "Hello")
        .await;
    let id_of = |wa_id: &'static str| {
        let server = &server;
        let tenant = &tenant;
        async move {
            server.conversation_of(tenant, wa_id).await["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    };
    let (ana, bruno, carla) = (
        id_of("5511900000201").await,
        id_of("5511900000202").await,
        id_of("5511900000203").await,
    );
    let zed = server.conversation_of(&theirs, "5511900000299").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (bo, bo_token) = second_agent(&server, &tenant, "Bo Chen", "agent").await;
    let mut stream = StreamClient::connect(&server, &tenant.token).await;
    stream.subscribe(None).await;

    // Refused as a whole, changing nothing: no action, two actions, both selections,
    // a paging query, a bad tag, an unknown agent, too many ids.
    let too_many: Vec<String> = (0..1001).map(|i| format!("id-{i}")).collect();
    for (body, code) in [
        (json!({"ids": [ana]}), "invalid_value"),
        (
            json!({"ids": [ana], "status": "closed", "ai_mode": "paused"}),
            "invalid_value",
        ),
        (
            json!({"ids": [ana], "query": "view=all", "status": "closed"}),
            "invalid_value",
        ),
        (
            json!({"query": "view=all&limit=5", "status": "closed"}),
            "invalid_query",
        ),
        (
            json!({"query": "view=everything", "status": "closed"}),
            "invalid_query",
        ),
        (
            json!({"ids": [ana], "tags": {"add": ["bad\u{7}tag"]}}),
            "invalid_tag",
        ),
        (
            json!({"ids": [ana], "assign": {"agent_id": theirs.agent_id}}),
            "unknown_agent",
        ),
        (
            json!({"ids": too_many, "status": "closed"}),
            "too_many_conversations",
        ),
    ] {
        let (status, error) = bulk(&server, &tenant.token, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
    }

    // By ids: ours are assigned (a duplicate counts once), theirs and nonsense are
    // not found there, and nothing else stops.
    let body = json!({"ids": [ana, bruno, zed, "nonsense", ana], "assign": {"agent_id": bo}});
    let (status, answer) = bulk(&server, &tenant.token, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        result_ids(&answer),
        vec![
            (ana.clone(), true),
            (bruno.clone(), true),
            (zed.clone(), false),
            ("nonsense".to_owned(), false)
        ]
    );
    assert_eq!(
        (&answer["succeeded"], &answer["failed"]),
        (&json!(2), &json!(2))
    );
    assert_eq!(
        answer["results"][0]["conversation"]["assignee_id"],
        bo.as_str()
    );
    assert_eq!(answer["results"][2]["error"]["code"], "not_found");
    let (_, theirs_card) = server
        .get(&theirs.token, &format!("/api/v1/conversations/{zed}"))
        .await;
    assert_eq!(theirs_card["assignee_id"], Value::Null, "{theirs_card}");
    // Repeating it is answered the same and changes nothing more.
    let (status, again) = bulk(&server, &tenant.token, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["succeeded"], 2, "{again}");
    assert_eq!(
        again["results"][1]["conversation"],
        answer["results"][1]["conversation"]
    );
    // On the stream, up to a later marker (Carla pended): one update and one notification
    // per conversation, each from its own actor, none for the repeat.
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{carla}/status"),
            json!({"status": "pending"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let deltas = stream
        .deltas_until(|d| {
            d["conversation"]["id"] == carla.as_str() && d["conversation"]["status"] == "pending"
        })
        .await;
    let mut updated: Vec<&str> = deltas
        .iter()
        .filter(|d| {
            d["kind"] == "conversation_updated" && d["conversation"]["assignee_id"] == bo.as_str()
        })
        .map(|d| d["conversation"]["id"].as_str().expect("id"))
        .collect();
    updated.sort_unstable();
    let mut want = vec![ana.as_str(), bruno.as_str()];
    want.sort_unstable();
    assert_eq!(updated, want, "{deltas:?}");
    let assignments = deltas
        .iter()
        .filter(|d| d["kind"] == "notification" && d["reason"] == "assignment")
        .count();
    assert_eq!(assignments, 2, "{deltas:?}");
    let (_, notes) = server.get(&bo_token, "/api/v1/me/notifications").await;
    assert_eq!(notes["unread_count"], 2, "{notes}");

    // By a listing query: the unassigned one (Carla) is closed, nothing else.
    let (status, answer) = bulk(
        &server,
        &tenant.token,
        json!({"query": "view=unassigned", "status": "closed"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(result_ids(&answer), vec![(carla.clone(), true)]);
    assert_eq!(answer["results"][0]["conversation"]["status"], "closed");
    // Tags on Bo's, then the AI mode of everything tagged, newest activity first.
    let (status, answer) = bulk(
        &server,
        &bo_token,
        json!({"query": "view=mine", "tags": {"add": ["vip"]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        result_ids(&answer),
        vec![(bruno.clone(), true), (ana.clone(), true)]
    );
    let (_, tags) = server.get(&tenant.token, "/api/v1/tags").await;
    assert_eq!(tags["items"], json!([{"name": "vip", "count": 2}]));
    let (status, answer) = bulk(
        &server,
        &tenant.token,
        json!({"query": "tag=vip", "ai_mode": "paused"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["succeeded"], 2);
    assert!(answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .all(|r| r["conversation"]["ai_mode"] == "paused"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_bulk_query_takes_up_to_a_thousand_conversations_and_refuses_more() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    crate::harness::many_leads(&server, &tenant, 1001, 500).await;
    let close_all = json!({"query": "view=all", "status": "closed"});
    let (status, error) = bulk(&server, &tenant.token, close_all.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["code"], "too_many_conversations");
    let (_, counts) = server
        .get(&tenant.token, "/api/v1/conversations/counts")
        .await;
    assert_eq!(
        (&counts["all"], &counts["closed"]),
        (&json!(1001), &json!(0)),
        "{counts}"
    );
    // One fewer matches: all of them change, each with its own result.
    let one = server.conversations(&tenant.token).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, _) = bulk(
        &server,
        &tenant.token,
        json!({"ids": [one], "status": "closed"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = bulk(&server, &tenant.token, close_all).await;
    assert_eq!(status, StatusCode::OK, "{}", answer["failed"]);
    assert_eq!(
        (&answer["succeeded"], &answer["failed"]),
        (&json!(1000), &json!(0))
    );
    let (_, counts) = server
        .get(&tenant.token, "/api/v1/conversations/counts")
        .await;
    assert_eq!(
        (&counts["all"], &counts["closed"]),
        (&json!(0), &json!(1001)),
        "{counts}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn lead_outcomes_are_suggested_by_the_ai_set_by_agents_filtered_and_counted_by_campaign() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (_, bo_token) = second_agent(&server, &tenant, "Bo Chen", "agent").await;
    let (status, list) = server.get(&bo_token, "/api/v1/outcomes").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list["items"],
        json!([
            {"name": "Interested", "count": 0}, {"name": "Meeting booked", "count": 0},
            {"name": "Not interested", "count": 0}, {"name": "Wrong person", "count": 0},
            {"name": "Out of office", "count": 0}
        ])
    );
    // Only admins edit the list; bad lists are refused.
    let custom = json!({"items": ["Interested", "Meeting booked", "Not interested", "Demo done"]});
    let (status, _) = server
        .put(&bo_token, "/api/v1/outcomes", custom.clone())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for bad in [
        json!({"items": ["Hot", "hot"]}),
        json!({"items": [" "]}),
        json!({"items": ["x".repeat(41)]}),
    ] {
        let (status, error) = server
            .put(&tenant.token, "/api/v1/outcomes", bad.clone())
            .await;
        assert_eq!(
            (status, &error["error"]["code"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_value")),
            "{bad}"
        );
    }
    let (status, list) = server.put(&tenant.token, "/api/v1/outcomes", custom).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"][3], json!({"name": "Demo done", "count": 0}));

    // Without the AI agent, nothing is suggested; with it, the lead's words are.
    server
        .lead_says(
            &tenant,
            "5511900000301",
            "Ana Lima",
            "wamid.O1",
            "What is the price?",
        )
        .await;
    let ana = server.conversation_of(&tenant, "5511900000301").await;
    assert_eq!(ana["suggested_outcome"], Value::Null, "{ana}");
    server.enable_ai_later(&tenant).await;
    server
        .lead_says(
            &tenant,
            "5511900000302",
            "Rui Alves",
            "wamid.O2",
            "Yes, I'm interested. What is the price?",
        )
        .await;
    server
        .lead_from_ad(
            &tenant,
            "5511900000303",
            "wamid.O3",
            "Sorry, not interested",
            "Spring sale",
        )
        .await;
    let rui = server.conversation_of(&tenant, "5511900000302").await;
    assert_eq!(rui["suggested_outcome"]["outcome"], "Interested", "{rui}");
    assert!(rui["suggested_outcome"]["reason"]
        .as_str()
        .expect("reason")
        .contains("interested"));
    let spring = server.conversation_of(&tenant, "5511900000303").await;
    assert_eq!(
        spring["suggested_outcome"]["outcome"], "Not interested",
        "{spring}"
    );
    let (rui, spring) = (
        rui["id"].as_str().expect("id").to_owned(),
        spring["id"].as_str().expect("id").to_owned(),
    );

    // Agents set outcomes: by name whatever the case; the suggestion goes.
    let path = format!("/api/v1/conversations/{rui}/outcome");
    for (body, code) in [
        (json!({"outcome": "Wrong person"}), "unknown_outcome"),
        (json!({}), "invalid_value"),
    ] {
        let (status, error) = server.post(&bo_token, &path, body.clone()).await;
        assert_eq!(
            (status, &error["error"]["code"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!(code)),
            "{body}"
        );
    }
    let (status, card) = server
        .post(&bo_token, &path, json!({"outcome": "meeting BOOKED"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{card}");
    assert_eq!(
        (&card["outcome"], &card["suggested_outcome"]),
        (&json!("Meeting booked"), &Value::Null)
    );
    let (status, answer) = server
        .post(
            &bo_token,
            "/api/v1/conversations/bulk",
            json!({"ids": [spring], "outcome": {"outcome": "Not interested"}}),
        )
        .await;
    assert_eq!(
        (status, &answer["succeeded"]),
        (StatusCode::OK, &json!(1)),
        "{answer}"
    );
    let listed = |query: &'static str| {
        let server = &server;
        let token = tenant.token.clone();
        async move {
            let (status, page) = server
                .get(&token, &format!("/api/v1/conversations?{query}"))
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|c| c["id"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("outcome=Meeting%20booked").await, vec![rui.clone()]);
    assert_eq!(
        listed("outcome=Not%20interested&campaign=Spring%20sale").await,
        vec![spring.clone()]
    );
    let (_, list) = server.get(&bo_token, "/api/v1/outcomes").await;
    assert_eq!(
        list["items"][1],
        json!({"name": "Meeting booked", "count": 1})
    );

    // The breakdown by campaign and outcome follows every change.
    let report = || async {
        let (status, report) = server
            .get(&tenant.token, "/api/v1/analytics/outcomes?period=today")
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        report
    };
    let r = report().await;
    assert_eq!(r["period"], "today");
    let mut items = r["items"].as_array().expect("items").clone();
    items.sort_by_key(|i| i["outcome"].to_string());
    assert_eq!(
        items,
        vec![
            json!({"campaign": null, "outcome": "Meeting booked", "conversations": 1}),
            json!({"campaign": "Spring sale", "outcome": "Not interested", "conversations": 1}),
        ]
    );
    let (_, _) = server
        .post(&bo_token, &path, json!({"outcome": "Interested"}))
        .await;
    let (_, _) = server
        .post(
            &bo_token,
            &format!("/api/v1/conversations/{spring}/outcome"),
            json!({"outcome": null}),
        )
        .await;
    let r = report().await;
    assert_eq!(
        r["items"],
        json!([{"campaign": null, "outcome": "Interested", "conversations": 1}]),
        "{r}"
    );
    assert_eq!(
        r["by_outcome"],
        json!([{"name": "Interested", "count": 1}]),
        "{r}"
    );
    let (status, _) = server
        .get(&tenant.token, "/api/v1/analytics/outcomes?period=year")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    server.shutdown().await;
}

/// (action, by.kind, by.agent_id) of a page of activity or audit entries.
fn trail(page: &Value) -> Vec<(String, String, Option<String>)> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().expect("action").to_owned(),
                e["by"]["kind"].as_str().expect("kind").to_owned(),
                e["by"]["agent_id"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_change_is_in_the_conversations_activity_and_admin_changes_in_the_audit() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let id = conversation(&server, &tenant).await;
    let (bo, bo_token) = second_agent(&server, &tenant, "Bo Chen", "agent").await;
    let admin = Some(tenant.agent_id.clone());
    let path = |cmd: &str| format!("/api/v1/conversations/{id}/{cmd}");
    for (token, cmd, body) in [
        (&tenant.token, "assign", json!({"agent_id": bo})),
        (&bo_token, "tags", json!({"add": ["vip"]})),
        (&bo_token, "status", json!({"status": "closed"})),
        (&bo_token, "outcome", json!({"outcome": "Interested"})),
        (&bo_token, "csat", json!({"rating": 5})),
    ] {
        let (status, answer) = server.post(token, &path(cmd), body).await;
        assert_eq!(status, StatusCode::OK, "{cmd}: {answer}");
    }
    // Repeating a command records nothing; the lead's message reopens it (by the lead).
    let (status, _) = server
        .post(&bo_token, &path("status"), json!({"status": "closed"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    server
        .lead_says(
            &tenant,
            "5511987654321",
            "Ana Lima",
            "wamid.C9",
            "One more thing",
        )
        .await;
    let (status, page) = server.get(&bo_token, &path("activity")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let bo_did = |action: &str| (action.to_owned(), "agent".to_owned(), Some(bo.clone()));
    assert_eq!(
        trail(&page),
        vec![
            ("status_changed".to_owned(), "lead".to_owned(), None),
            bo_did("csat_recorded"),
            bo_did("outcome_changed"),
            bo_did("status_changed"),
            bo_did("tags_changed"),
            ("assigned".to_owned(), "agent".to_owned(), admin.clone()),
        ],
        "{page}"
    );
    assert_eq!(
        page["items"][0]["details"],
        json!({"from": "closed", "to": "open"})
    );
    assert_eq!(page["items"][4]["details"], json!({"added": "vip"}));
    assert_eq!(page["items"][5]["details"]["agent_id"], bo.as_str());
    assert!(page["items"][0]["at"].is_string());
    // Pages follow `next_before`.
    let (_, first) = server
        .get(&bo_token, &format!("{}?limit=4", path("activity")))
        .await;
    let before = first["next_before"].as_str().expect("more");
    let (_, rest) = server
        .get(
            &bo_token,
            &format!("{}?limit=4&before={before}", path("activity")),
        )
        .await;
    assert_eq!(trail(&first).len() + trail(&rest).len(), 6);
    assert_eq!(rest["next_before"], Value::Null);
    let (status, _) = server
        .get(&bo_token, &format!("{}?limit=0", path("activity")))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // The admin audit: an admin's changes, readable by admins only.
    let (status, _) = server
        .patch_json(
            &tenant.token,
            "/api/v1/workspace/settings",
            json!({"response_target_secs": 600}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .put(
            &tenant.token,
            "/api/v1/outcomes",
            json!({"items": ["Interested", "Won"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, created) = server
        .post(
            &tenant.token,
            "/api/v1/agents",
            json!({"name": "Cy Dias", "email": "cy@acme.test", "role": "agent"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = server.get(&bo_token, "/api/v1/audit").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, audit) = server.get(&tenant.token, "/api/v1/audit").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let by_admin = |action: &str| (action.to_owned(), "agent".to_owned(), admin.clone());
    let entries = trail(&audit);
    assert_eq!(
        entries[..3].to_vec(),
        vec![
            by_admin("agent_created"),
            by_admin("outcomes_changed"),
            by_admin("workspace_settings_changed")
        ],
        "{audit}"
    );
    assert_eq!(audit["items"][0]["target_id"], created["id"]);
    assert_eq!(audit["items"][1]["details"]["outcomes"], "Interested, Won");
    // Bo was made by the operator (the admin token), and the channel before him.
    assert!(
        entries.contains(&("agent_created".to_owned(), "operator".to_owned(), None)),
        "{audit}"
    );
    assert!(
        entries.contains(&("channel_created".to_owned(), "operator".to_owned(), None)),
        "{audit}"
    );
    server.shutdown().await;
}
