//! Conversation analytics end to end: replies, closing, reopening and CSAT move the
//! figures of `GET /api/v1/analytics`, per workspace, durably.

use axum::http::StatusCode;
use confab_actors::{ConversationMsg, OutboundRequest};
use confab_engine::model::Sender;
use serde_json::{json, Value};

use crate::harness::{GraphStandIn, Tenant, TestServer};

async fn conversation_of(server: &TestServer, tenant: &Tenant, wa_id: &str) -> String {
    server
        .conversations(&tenant.token)
        .await
        .into_iter()
        .find(|c| c["contact"]["phone"] == format!("+{wa_id}"))
        .and_then(|c| c["id"].as_str().map(str::to_string))
        .expect("the lead's conversation")
}

async fn analytics(server: &TestServer, tenant: &Tenant, query: &str) -> Value {
    let (status, body) = server
        .get(&tenant.token, &format!("/api/v1/analytics?{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn csat(
    server: &TestServer,
    tenant: &Tenant,
    id: &str,
    rating: Value,
) -> (StatusCode, Value) {
    server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/csat"),
            json!({ "rating": rating }),
        )
        .await
}

/// An AI reply, as the AI agent will send it (there is no public route for it yet).
async fn ai_replies(server: &TestServer, id: &str, text: &str) {
    let id = id.parse().expect("conversation id");
    let request = OutboundRequest {
        text: text.into(),
        internal: false,
        sender: Sender::Ai,
        agent_id: None,
        agent_name: None,
        mentions: Vec::new(),
        ai: None,
        files: Vec::new(),
    };
    server
        .server()
        .app()
        .runtime
        .conversations
        .request(id, |reply| ConversationMsg::Send(request, reply))
        .await
        .expect("the AI's reply is stored");
}

#[tokio::test]
async fn replies_closing_and_csat_make_the_workspace_figures() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let other = server.provision(&graph).await;

    server
        .lead_says(&tenant, "5511900000001", "Ana", "wamid.A1", "Hi")
        .await;
    server
        .lead_says(&tenant, "5511900000002", "Bo", "wamid.B1", "Hello")
        .await;
    server
        .lead_says(&tenant, "5511900000003", "Cy", "wamid.C1", "Hey")
        .await;
    let ana = conversation_of(&server, &tenant, "5511900000001").await;
    let bo = conversation_of(&server, &tenant, "5511900000002").await;
    let cy = conversation_of(&server, &tenant, "5511900000003").await;

    let empty = analytics(&server, &tenant, "period=today").await;
    assert_eq!(empty["conversations_opened"], 3);
    assert_eq!(empty["resolution_rate"], 0.0);
    assert_eq!(empty["first_responses"], 0);
    assert!(empty["avg_first_response_seconds"].is_null());
    assert!(empty["median_first_response_seconds"].is_null());

    // Ana: a human answers and closes. Bo: the AI answers alone. Cy: the AI, then a human.
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{ana}/messages"),
            json!({"text": "Hi Ana, how can I help?"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    ai_replies(&server, &bo, "Hello Bo! Here is our price list.").await;
    ai_replies(&server, &cy, "Hey Cy!").await;
    ai_replies(&server, &cy, "Anything else?").await;
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{cy}/messages"),
            json!({"text": "A human here."}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // A note is not a reply.
    server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{bo}/messages"),
            json!({"text": "internal only", "internal": true}),
        )
        .await;
    for id in [&ana, &bo] {
        let (status, _) = server
            .post(
                &tenant.token,
                &format!("/api/v1/conversations/{id}/status"),
                json!({"status": "closed"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Bo writes again: reopened, no longer resolved.
    server
        .lead_says(&tenant, "5511900000002", "Bo", "wamid.B2", "One more thing")
        .await;

    // CSAT: out of range is refused; a new rating replaces the old; the same one is a no-op.
    for bad in [json!(0), json!(6), json!(-1), json!(300), json!("5")] {
        let (status, body) = csat(&server, &tenant, &ana, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_value");
    }
    let (status, body) = csat(&server, &tenant, &ana, json!(2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rating"], 2);
    csat(&server, &tenant, &ana, json!(5)).await;
    csat(&server, &tenant, &ana, json!(5)).await;
    csat(&server, &tenant, &bo, json!(3)).await;
    let (status, _) = csat(&server, &other, &ana, json!(1)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another workspace cannot rate it"
    );
    let (_, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{ana}"))
        .await;
    assert_eq!(detail["csat"], 5);

    let check = |figures: &Value| {
        assert_eq!(figures["conversations_opened"], 3, "{figures}");
        assert_eq!(figures["conversations_resolved"], 1);
        let rate = figures["resolution_rate"].as_f64().expect("rate");
        assert!((rate - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(figures["first_responses"], 3);
        assert_eq!(figures["first_responses_by_ai"], 2);
        assert_eq!(figures["first_responses_by_human"], 1);
        assert!(figures["avg_first_response_seconds"].as_f64().expect("avg") >= 0.0);
        assert!(figures["median_first_response_seconds"].is_number());
        assert_eq!(figures["outbound_messages_ai"], 3);
        assert_eq!(figures["outbound_messages_human"], 2);
        assert_eq!(figures["ai_message_share"], 0.6);
        assert_eq!(figures["conversations_ai_only"], 1);
        assert_eq!(figures["conversations_with_human"], 2);
        assert_eq!(figures["csat_count"], 2);
        assert_eq!(figures["csat_average"], 4.0);
        assert_eq!(figures["csat_distribution"]["5"], 1);
        assert_eq!(figures["csat_distribution"]["3"], 1);
        assert_eq!(figures["csat_distribution"]["2"], 0);
    };
    for query in [
        "period=today",
        "period=week",
        "period=month",
        "period=all",
        "",
    ] {
        check(&analytics(&server, &tenant, query).await);
    }
    let today = analytics(&server, &tenant, "period=today").await;
    assert_eq!(today["period"], "today");
    assert_eq!(today["workspace_id"], tenant.workspace_id.as_str());
    let from = today["from"].as_str().expect("from").to_string();
    check(&analytics(&server, &tenant, &format!("from={from}")).await);

    // Day by day: a week is seven days, oldest first; everything happened today, so the
    // last day carries the week's figures and the others none.
    let week = analytics(&server, &tenant, "period=week&interval=day").await;
    check(&week);
    let days = week["days"].as_array().expect("days");
    assert_eq!(days.len(), 7, "{week}");
    assert_eq!(days[6]["date"], from[..10]);
    assert!(days
        .windows(2)
        .all(|d| d[0]["date"].as_str() < d[1]["date"].as_str()));
    check(&days[6]);
    for day in &days[..6] {
        assert_eq!(day["conversations_opened"], 0, "{day}");
        assert_eq!(day["outbound_messages_ai"], 0, "{day}");
    }
    assert!(analytics(&server, &tenant, "period=week").await["days"].is_null());

    // Another workspace sees only its own (nothing); the past is empty.
    let theirs = analytics(&server, &other, "period=all").await;
    assert_eq!(theirs["conversations_opened"], 0);
    assert!(theirs["resolution_rate"].is_null());
    let past = analytics(
        &server,
        &tenant,
        "from=2020-01-01T00:00:00Z&to=2020-01-31T00:00:00Z",
    )
    .await;
    assert_eq!(past["period"], "range");
    assert_eq!(past["conversations_opened"], 0);
    assert!(past["csat_average"].is_null());

    for bad in [
        "period=year",
        "from=yesterday",
        "period=week&to=2020-01-01T00:00:00Z",
        "from=2021-01-01T00:00:00Z&to=2020-01-01T00:00:00Z",
        "period=all&interval=day",
        "period=week&interval=hour",
    ] {
        let (status, body) = server
            .get(&tenant.token, &format!("/api/v1/analytics?{bad}"))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(body["error"]["code"], "invalid_query");
    }
    let (status, _) = server.get("cfb_nope", "/api/v1/analytics").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The figures are as durable as the changes they count.
    let server = server.restart().await;
    check(&analytics(&server, &tenant, "period=all").await);
    server.shutdown().await;
}
