//! Inbox views and filters through HTTP: every view and filter, and pagination that
//! neither repeats nor skips while new activity arrives.

use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{wait_for, GraphStandIn, Tenant, TestServer};

/// `n` conversations, oldest activity first; returns their ids in creation order.
async fn conversations(server: &TestServer, tenant: &Tenant, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        server
            .lead_says(
                tenant,
                &format!("55119000{i:05}"),
                &format!("Lead {i}"),
                &format!("wamid.V{i}"),
                "Hello",
            )
            .await;
        // Newest first: the conversation just written is on top.
        let top = server.conversations(&tenant.token).await[0]["id"]
            .as_str()
            .expect("id")
            .to_string();
        ids.push(top);
    }
    ids
}

async fn list(server: &TestServer, token: &str, query: &str) -> Vec<String> {
    let (status, page) = server
        .get(token, &format!("/api/v1/conversations?{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {page}");
    assert!(page["next_cursor"].is_null(), "{query}: one page: {page}");
    ids(&page)
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect()
}

async fn command(server: &TestServer, token: &str, id: &str, cmd: &str, body: Value) {
    let (status, answer) = server
        .post(token, &format!("/api/v1/conversations/{id}/{cmd}"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{cmd}: {answer}");
}

#[tokio::test]
async fn every_view_and_filter_lists_exactly_its_conversations_newest_first() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server.enable_ai_later(&tenant).await;
    let t = &tenant.token;
    let c = conversations(&server, &tenant, 6).await;
    // Expected lists are newest first: c5 … c0.
    let rev = |picks: &[usize]| -> Vec<String> {
        let mut v: Vec<usize> = picks.to_vec();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.into_iter().map(|i| c[i].clone()).collect()
    };
    command(&server, t, &c[0], "tags", json!({"add": ["hot", "vip"]})).await;
    command(&server, t, &c[1], "tags", json!({"add": ["hot"]})).await;
    command(
        &server,
        t,
        &c[2],
        "tags",
        json!({"add": ["vip", "hot"], "remove": []}),
    )
    .await;
    command(&server, t, &c[2], "tags", json!({"remove": ["vip"]})).await;
    command(
        &server,
        t,
        &c[1],
        "assign",
        json!({"agent_id": tenant.agent_id}),
    )
    .await;
    command(
        &server,
        t,
        &c[3],
        "assign",
        json!({"agent_id": tenant.agent_id}),
    )
    .await;
    command(&server, t, &c[4], "status", json!({"status": "closed"})).await;
    command(&server, t, &c[3], "status", json!({"status": "pending"})).await;
    command(&server, t, &c[5], "ai", json!({"mode": "manual"})).await;
    command(&server, t, &c[0], "ai", json!({"mode": "paused"})).await;

    assert_eq!(list(&server, t, "").await, rev(&[0, 1, 2, 3, 5]));
    assert_eq!(list(&server, t, "view=all").await, rev(&[0, 1, 2, 3, 5]));
    assert_eq!(list(&server, t, "view=mine").await, rev(&[1, 3]));
    assert_eq!(list(&server, t, "view=unassigned").await, rev(&[0, 2, 5]));
    assert_eq!(list(&server, t, "view=closed").await, rev(&[4]));
    assert_eq!(list(&server, t, "tag=hot").await, rev(&[0, 1, 2]));
    assert_eq!(list(&server, t, "tag=hot&tag=vip").await, rev(&[0]));
    assert_eq!(list(&server, t, "tag=nope").await, rev(&[]));
    assert_eq!(list(&server, t, "view=mine&tag=hot").await, rev(&[1]));
    assert_eq!(list(&server, t, "mode=manual").await, rev(&[5]));
    assert_eq!(list(&server, t, "mode=ai_paused").await, rev(&[0]));
    assert_eq!(list(&server, t, "mode=ai_active").await, rev(&[1, 2, 3]));
    assert_eq!(
        list(&server, t, "channel=whatsapp&mode=ai_active").await,
        rev(&[1, 2, 3])
    );
    assert_eq!(list(&server, t, "channel=email").await, rev(&[]));
    assert_eq!(list(&server, t, "campaign=spring").await, rev(&[]));
    assert_eq!(
        list(&server, t, "period=today").await,
        rev(&[0, 1, 2, 3, 5])
    );
    assert_eq!(
        list(&server, t, "period=month&view=closed").await,
        rev(&[4])
    );

    // A new inbound message reopens the closed conversation and puts it on top.
    server
        .lead_says(&tenant, "5511900000004", "Lead 4", "wamid.again", "Back")
        .await;
    assert_eq!(list(&server, t, "view=closed").await, rev(&[]));
    assert_eq!(list(&server, t, "").await[0], c[4]);

    for (bad, status) in [
        ("view=everything", StatusCode::UNPROCESSABLE_ENTITY),
        ("mode=ai", StatusCode::UNPROCESSABLE_ENTITY),
        ("limit=201", StatusCode::UNPROCESSABLE_ENTITY),
        ("cursor=nope", StatusCode::BAD_REQUEST),
    ] {
        let (got, body) = server.get(t, &format!("/api/v1/conversations?{bad}")).await;
        assert_eq!(got, status, "{bad}: {body}");
    }
}

#[tokio::test]
async fn paginating_while_new_activity_arrives_never_repeats_or_skips() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let t = &tenant.token;
    let c = conversations(&server, &tenant, 10).await;
    let at_start: Vec<String> = c.iter().rev().cloned().collect();

    let (status, first) = server.get(t, "/api/v1/conversations?limit=3").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(first["head"].as_u64().is_some(), "{first}");
    let mut seen = ids(&first);
    let mut cursor = first["next_cursor"].as_str().map(str::to_string);
    let mut round = 0;
    while let Some(next) = cursor {
        // Between pages: the oldest not-yet-listed conversation and an already listed
        // one get new messages (both jump to the top), and a new lead writes.
        let unlisted = at_start
            .iter()
            .rev()
            .position(|id| !seen.contains(id))
            .map(|i| at_start.len() - 1 - i);
        if let Some(i) = unlisted {
            let lead = c.len() - 1 - i;
            server
                .lead_says(
                    &tenant,
                    &format!("55119000{lead:05}"),
                    "again",
                    &format!("wamid.M{round}"),
                    "New activity",
                )
                .await;
        }
        server
            .lead_says(
                &tenant,
                "5511900000009",
                "Lead 9",
                &format!("wamid.L{round}"),
                "Listed, moves",
            )
            .await;
        server
            .lead_says(
                &tenant,
                &format!("55118000{round:05}"),
                "New lead",
                &format!("wamid.N{round}"),
                "Hi",
            )
            .await;
        round += 1;

        let (status, page) = server
            .get(t, &format!("/api/v1/conversations?limit=3&cursor={next}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["head"], first["head"], "one listing, one snapshot");
        seen.extend(ids(&page));
        cursor = page["next_cursor"].as_str().map(str::to_string);
    }
    assert!(round >= 3, "activity arrived during the pagination");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "no conversation repeated: {seen:?}"
    );
    assert_eq!(
        seen, at_start,
        "every conversation of the first page's moment, once, in its order"
    );

    // A fresh listing shows the new activity and the new leads.
    let fresh = server.conversations(t).await;
    assert_eq!(fresh.len(), 10 + round);
}

#[tokio::test]
async fn the_workspace_lists_its_tags_and_campaigns_with_their_counts() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let other = server.provision(&graph).await;
    server
        .lead_from_ad(&tenant, "5511900000801", "wamid.F1", "Hi", "Spring Promo")
        .await;
    server
        .lead_from_ad(&tenant, "5511900000802", "wamid.F2", "Hi", "Spring Promo")
        .await;
    server
        .lead_says(&tenant, "5511900000803", "Lead", "wamid.F3", "Hi")
        .await;
    let ids: Vec<String> = wait_for("three conversations", || async {
        let cards = server.conversations(&tenant.token).await;
        (cards.len() == 3).then(|| {
            cards
                .iter()
                .map(|c| c["id"].as_str().expect("id").to_owned())
                .collect()
        })
    })
    .await;
    for (i, id) in ids.iter().enumerate() {
        let tags = if i == 0 {
            json!(["vip", "hot"])
        } else {
            json!(["hot"])
        };
        let (status, _) = server
            .post(
                &tenant.token,
                &format!("/api/v1/conversations/{id}/tags"),
                json!({"add": tags}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, tags) = server.get(&tenant.token, "/api/v1/tags").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        tags["items"],
        json!([{"name": "hot", "count": 3}, {"name": "vip", "count": 1}])
    );
    let (_, campaigns) = server.get(&tenant.token, "/api/v1/campaigns").await;
    assert_eq!(
        campaigns["items"],
        json!([{"name": "Spring Promo", "count": 2}])
    );
    // A tag removed everywhere is no longer listed; another workspace sees none of it.
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{}/tags", ids[0]),
            json!({"remove": ["vip"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, tags) = server.get(&tenant.token, "/api/v1/tags").await;
    assert_eq!(tags["items"], json!([{"name": "hot", "count": 3}]));
    let (_, theirs) = server.get(&other.token, "/api/v1/tags").await;
    assert_eq!(theirs["items"], json!([]));
    let (_, counts) = server
        .get(
            &tenant.token,
            "/api/v1/conversations/counts?channel=whatsapp",
        )
        .await;
    assert_eq!(counts["all"], 3, "{counts}");
    assert_eq!(counts["unassigned"], 3, "{counts}");
    assert_eq!(counts["mine"], 0, "{counts}");
    let (status, _) = server
        .get(&tenant.token, "/api/v1/conversations/counts?tag=hot")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    server.shutdown().await;
}
