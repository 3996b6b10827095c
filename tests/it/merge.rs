//! Merging two conversations of one lead into one timeline, and splitting them again.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{wait_for, GraphStandIn, StreamClient, Tenant, TestServer, GRAPH_TOKEN};

const LEAD: (&str, &str) = ("5511912345678", "Rita Prado");

/// A second WhatsApp number of the tenant's workspace: the same lead writing to it is the
/// same contact (by phone), in a conversation of its own.
pub(crate) async fn second_number(
    server: &TestServer,
    tenant: &Tenant,
    graph: &GraphStandIn,
) -> Tenant {
    let app_secret = "second-number-secret".to_string();
    let phone_number_id = "206540352242923".to_string();
    let (status, channel) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/channels", tenant.workspace_id),
            json!({"kind": "whatsapp", "name": "Support WhatsApp",
                   "phone_number_id": phone_number_id, "app_secret": app_secret,
                   "verify_token": "v2", "access_token": GRAPH_TOKEN,
                   "api_base_url": graph.base_url}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    Tenant {
        channel_id: channel["id"].as_str().expect("id").to_string(),
        app_secret,
        phone_number_id,
        ..tenant.clone()
    }
}

async fn card(server: &TestServer, tenant: &Tenant, id: &str) -> Value {
    let (status, card) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{card}");
    card
}

async fn listed(server: &TestServer, tenant: &Tenant) -> (Vec<String>, Value) {
    let ids = server
        .conversations(&tenant.token)
        .await
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect();
    let (_, counts) = server
        .get(&tenant.token, "/api/v1/conversations/counts")
        .await;
    (ids, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_threads_of_a_lead_merge_into_one_timeline_follow_it_and_split_again() {
    let graph = GraphStandIn::start().await;
    let server = TestServer::start().await;
    let tenant = server.provision(&graph).await;
    let support = second_number(&server, &tenant, &graph).await;

    server
        .lead_says(
            &tenant,
            LEAD.0,
            LEAD.1,
            "wamid.M1",
            "Is the loft still free?",
        )
        .await;
    let primary = server.conversation_of(&tenant, LEAD.0).await;
    let primary_id = primary["id"].as_str().expect("id").to_string();
    server
        .lead_says(
            &support,
            LEAD.0,
            LEAD.1,
            "wamid.M2",
            "Also: parking included?",
        )
        .await;
    let (ids, counts) = listed(&server, &tenant).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(counts["all"], 2, "{counts}");
    let other_id = ids
        .iter()
        .find(|id| **id != primary_id)
        .expect("the other thread")
        .clone();
    let other = card(&server, &tenant, &other_id).await;
    assert_eq!(other["contact"]["id"], primary["contact"]["id"], "one lead");

    let mut stream = StreamClient::connect(&server, &tenant.token).await;
    stream.subscribe(None).await;

    // Bad merges change nothing.
    let merge = |into: &str, from: &str| {
        let (into, from) = (into.to_string(), from.to_string());
        let server = &server;
        let token = tenant.token.clone();
        async move {
            server
                .post(
                    &token,
                    &format!("/api/v1/conversations/{into}/merge"),
                    json!({"conversation_id": from}),
                )
                .await
        }
    };
    let (status, error) = merge(&primary_id, &primary_id).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let (status, error) = merge(&primary_id, "01M99B11RACMHSY7CVJEAQQ116").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");

    // Merged: one conversation listed, with both threads.
    let (status, merged) = merge(&primary_id, &other_id).await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(merged["merged"][0]["id"], other_id.as_str(), "{merged}");
    assert_eq!(
        merged["merged"][0]["channel_id"],
        support.channel_id.as_str()
    );
    assert_eq!(merged["unread_count"], 2, "both threads' unread: {merged}");
    let (ids, counts) = listed(&server, &tenant).await;
    assert_eq!(ids, vec![primary_id.clone()]);
    assert_eq!(counts["all"], 1, "{counts}");
    assert_eq!(
        card(&server, &tenant, &other_id).await["merged_into"],
        primary_id.as_str()
    );
    let deltas = stream
        .deltas_until(|d| {
            d["conversation"]["id"] == primary_id.as_str()
                && d["conversation"]["merged"]
                    .as_array()
                    .is_some_and(|m| !m.is_empty())
        })
        .await;
    assert!(
        deltas
            .iter()
            .any(|d| d["conversation"]["id"] == other_id.as_str()
                && d["conversation"]["merged_into"] == primary_id.as_str()),
        "the merged one's card says where it went: {deltas:?}"
    );
    // Repeating it changes nothing; the other way round, or a third one into the merged
    // one, is refused.
    let (status, again) = merge(&primary_id, &other_id).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["merged"].as_array().map(Vec::len), Some(1));
    let (status, error) = merge(&other_id, &primary_id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["error"]["code"], "already_merged");

    // The lead writes in the merged thread: the merged conversation moves and reopens.
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{primary_id}/status"),
            json!({"status": "closed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server
        .lead_says(
            &support,
            LEAD.0,
            LEAD.1,
            "wamid.M3",
            "And the penthouse price?",
        )
        .await;
    let moved = wait_for("the merged conversation follows its thread", || async {
        let card = card(&server, &tenant, &primary_id).await;
        (card["preview"] == "And the penthouse price?").then_some(card)
    })
    .await;
    assert_eq!(moved["status"], "open", "{moved}");
    assert_eq!(moved["unread_count"], 3, "{moved}");
    let (ids, _) = listed(&server, &tenant).await;
    assert_eq!(ids, vec![primary_id.clone()]);

    // Search finds the thread's message and names the conversation to open.
    let hit = wait_for("the thread's message is searchable", || async {
        let (_, page) = server
            .get(&tenant.token, "/api/v1/search?q=penthouse")
            .await;
        page["items"]
            .as_array()
            .and_then(|items| items.first().cloned())
    })
    .await;
    assert_eq!(hit["conversation_id"], other_id.as_str(), "{hit}");
    assert_eq!(hit["merged_into"], primary_id.as_str(), "{hit}");

    // The assignee goes to both threads (the merged one's notifications reach the agent).
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{primary_id}/assign"),
            json!({"agent_id": tenant.agent_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_for("the thread's assignee follows", || async {
        (card(&server, &tenant, &other_id).await["assignee_id"] == tenant.agent_id.as_str())
            .then_some(())
    })
    .await;

    // AI mode and reading go to both threads.
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{primary_id}/ai"),
            json!({"mode": "manual"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{primary_id}/read"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_for("the thread follows", || async {
        let other = card(&server, &tenant, &other_id).await;
        let primary = card(&server, &tenant, &primary_id).await;
        (other["ai_mode"] == "manual" && other["unread_count"] == 0 && primary["unread_count"] == 0)
            .then_some(())
    })
    .await;

    // A reply goes out on the thread the agent picks: the second number.
    let (status, sent) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{other_id}/messages"),
            json!({"text": "The penthouse is 1.2M"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let requests = graph.wait_requests(1).await;
    assert!(
        requests[0].path.contains(&support.phone_number_id),
        "sent from the second number: {}",
        requests[0].path
    );
    wait_for("the reply is the merged conversation's preview", || async {
        (card(&server, &tenant, &primary_id).await["preview"] == "The penthouse is 1.2M")
            .then_some(())
    })
    .await;

    // One timeline of both threads, newest first, paged without a repeat or a gap.
    let mut all: Vec<String> = Vec::new();
    for thread in [&primary_id, &other_id] {
        for m in server.messages(&tenant.token, thread).await {
            all.push(m["id"].as_str().expect("id").to_string());
        }
    }
    let mut seen: Vec<Value> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(cursor) => {
                format!("/api/v1/conversations/{primary_id}/timeline?limit=2&before={cursor}")
            }
            None => format!("/api/v1/conversations/{primary_id}/timeline?limit=2"),
        };
        let (status, page) = server.get(&tenant.token, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_before"].as_str() {
            Some(next) => before = Some(next.to_string()),
            None => break,
        }
        assert!(seen.len() <= all.len(), "pages repeat: {seen:?}");
    }
    let mut ids: Vec<String> = seen
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), all.len(), "{ids:?}");
    let times: Vec<&str> = seen
        .iter()
        .map(|m| m["created_at"].as_str().expect("time"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    ids.sort();
    all.sort();
    assert_eq!(ids, all);
    assert!(seen
        .iter()
        .any(|m| m["conversation_id"] == other_id.as_str()));
    assert!(seen
        .iter()
        .any(|m| m["conversation_id"] == primary_id.as_str()));

    // Each side's activity says what happened.
    let (_, activity) = server
        .get(
            &tenant.token,
            &format!("/api/v1/conversations/{primary_id}/activity"),
        )
        .await;
    assert!(
        activity["items"].as_array().expect("items").iter().any(
            |a| a["action"] == "merged" && a["details"]["conversation_id"] == other_id.as_str()
        ),
        "{activity}"
    );

    // A restart changes nothing.
    stream.close().await;
    let server = server.restart().await;
    let (ids, counts) = listed(&server, &tenant).await;
    assert_eq!(ids, vec![primary_id.clone()]);
    assert_eq!(counts["all"], 1, "{counts}");
    assert_eq!(
        card(&server, &tenant, &primary_id).await["merged"][0]["id"],
        other_id.as_str()
    );

    // Split: both listed again, each as it is.
    let (status, split) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{primary_id}/split"),
            json!({"conversation_id": other_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{split}");
    assert_eq!(split["merged"], json!([]), "{split}");
    let (ids, counts) = listed(&server, &tenant).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(counts["all"], 2, "{counts}");
    let other = card(&server, &tenant, &other_id).await;
    assert_eq!(other["merged_into"], Value::Null, "{other}");
    assert_eq!(other["preview"], "The penthouse is 1.2M", "{other}");
    let (_, activity) = server
        .get(
            &tenant.token,
            &format!("/api/v1/conversations/{other_id}/activity"),
        )
        .await;
    let actions: Vec<&str> = activity["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"merged_into") && actions.contains(&"split_from"),
        "{actions:?}"
    );
    // Splitting again changes nothing.
    let (status, again) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{primary_id}/split"),
            json!({"conversation_id": other_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_either_side_of_a_merge_leaves_the_other_whole_and_listed() {
    let graph = GraphStandIn::start().await;
    let server = TestServer::start().await;
    let tenant = server.provision(&graph).await;
    let leads = [
        ("5511900000311", "Ana Dias", "wamid.E1"),
        ("5511900000312", "Bia Dias", "wamid.E2"),
        ("5511900000313", "Cid Dias", "wamid.E3"),
    ];
    for (wa_id, name, wamid) in leads {
        server.lead_says(&tenant, wa_id, name, wamid, "Hello").await;
    }
    let mut ids = Vec::new();
    for (wa_id, _, _) in leads {
        let conv = server.conversation_of(&tenant, wa_id).await;
        ids.push(conv["id"].as_str().expect("id").to_string());
    }
    let (a, b, c) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let contact = |conv: Value| conv["contact"]["id"].as_str().expect("contact").to_string();
    // Two leads' conversations can be merged too (the agent knows they are one person).
    for other in [&b, &c] {
        let (status, body) = server
            .post(
                &tenant.token,
                &format!("/api/v1/conversations/{a}/merge"),
                json!({"conversation_id": other}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(listed(&server, &tenant).await.0, vec![a.clone()]);

    // The merged one erased: the other no longer lists it.
    let b_contact = contact(card(&server, &tenant, &b).await);
    let (status, _) = server
        .delete(
            &tenant.token,
            &format!("/api/v1/contacts/{b_contact}?erase=true"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for("b dropped from a", || async {
        let merged = card(&server, &tenant, &a).await["merged"].clone();
        (merged.as_array().map(Vec::len) == Some(1) && merged[0]["id"] == c.as_str()).then_some(())
    })
    .await;

    // The one merged into erased: the other is split off and listed again.
    let a_contact = contact(card(&server, &tenant, &a).await);
    let (status, _) = server
        .delete(
            &tenant.token,
            &format!("/api/v1/contacts/{a_contact}?erase=true"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for("c listed again", || async {
        let (ids, counts) = listed(&server, &tenant).await;
        (ids == vec![c.clone()] && counts["all"] == 1).then_some(())
    })
    .await;
    assert_eq!(card(&server, &tenant, &c).await["merged_into"], Value::Null);
    server.shutdown().await;
}
