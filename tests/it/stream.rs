//! The WebSocket delta stream: live deltas, resuming without loss, authentication.

use std::collections::BTreeSet;

use confab_gateway::stream::{prune, PruneProgress};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{GraphStandIn, StreamClient, TestServer};

#[tokio::test]
async fn an_inbound_message_reaches_a_subscribed_socket_after_it_is_stored() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let mut client = StreamClient::connect(&server, &tenant.token).await;
    let head = client.subscribe(None).await;

    server
        .lead_says(
            &tenant,
            "5511987654321",
            "Ana Lima",
            "wamid.W1",
            "Hi, is the offer still valid?",
        )
        .await;
    let deltas = client
        .deltas_until(|d| d["kind"] == "message_created")
        .await;
    let kinds: Vec<&str> = deltas
        .iter()
        .map(|d| d["kind"].as_str().expect("kind"))
        .collect();
    // A new lead's conversation is created together with its first message: its card
    // already shows the message.
    assert_eq!(kinds, vec!["conversation_created", "message_created"]);
    let offsets: Vec<u64> = deltas
        .iter()
        .map(|d| d["offset"].as_u64().expect("offset"))
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert!(offsets[0] > head);
    let message = &deltas[1]["message"];
    assert_eq!(message["text"], "Hi, is the offer still valid?");
    assert_eq!(message["direction"], "inbound");
    let card = &deltas[0]["conversation"];
    assert_eq!(card["contact"]["name"], "Ana Lima");
    assert_eq!(card["unread_count"], 1);
    assert_eq!(card["preview"], "Hi, is the offer still valid?");
    // What the socket said is what the store has.
    let id = deltas[1]["conversation_id"].as_str().expect("id");
    assert_eq!(
        server.messages(&tenant.token, id).await[0]["id"],
        message["id"]
    );
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_resuming_with_since_gets_exactly_the_deltas_it_missed() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let mut client = StreamClient::connect(&server, &tenant.token).await;
    client.subscribe(Some(0)).await;
    server
        .lead_says(&tenant, "111", "Lead", "wamid.R0", "before")
        .await;
    let seen = client
        .deltas_until(|d| d["kind"] == "message_created")
        .await;
    let last_seen = seen.last().expect("delta")["offset"]
        .as_u64()
        .expect("offset");
    client.close().await;

    // Traffic while the client is away, from several leads and an agent.
    for i in 1..=6 {
        server
            .lead_says(
                &tenant,
                &format!("11{}", i % 3),
                "Lead",
                &format!("wamid.R{i}"),
                &format!("away {i}"),
            )
            .await;
    }
    let head = server.server().app().committer.durable_head();
    assert!(head > last_seen);

    let mut again = StreamClient::connect(&server, &tenant.token).await;
    again.subscribe(Some(last_seen)).await;
    let missed = again
        .deltas_until(|d| d["offset"].as_u64() == Some(head))
        .await;
    let offsets: Vec<u64> = missed
        .iter()
        .map(|d| d["offset"].as_u64().expect("offset"))
        .collect();
    let expected: Vec<u64> = ((last_seen + 1)..=head).collect();
    assert_eq!(offsets, expected, "every missed delta, once, in order");
    let texts: BTreeSet<String> = missed
        .iter()
        .filter(|d| d["kind"] == "message_created")
        .map(|d| d["message"]["text"].as_str().expect("text").to_string())
        .collect();
    assert_eq!(texts, (1..=6).map(|i| format!("away {i}")).collect());

    // And it goes on live from there, without repeating anything.
    server
        .lead_says(&tenant, "111", "Lead", "wamid.R7", "live again")
        .await;
    let live = again.deltas_until(|d| d["kind"] == "message_created").await;
    assert_eq!(live[0]["offset"].as_u64(), Some(head + 1));
    assert_eq!(live.last().expect("delta")["message"]["text"], "live again");
    again.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn resuming_across_a_server_restart_loses_nothing() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server
        .lead_says(&tenant, "111", "Lead", "wamid.X1", "one")
        .await;
    let first_head = server.server().app().committer.durable_head();
    let server = server.restart().await;
    server
        .lead_says(&tenant, "111", "Lead", "wamid.X2", "two")
        .await;
    let head = server.server().app().committer.durable_head();
    let mut client = StreamClient::connect(&server, &tenant.token).await;
    client.subscribe(Some(first_head)).await;
    let missed = client
        .deltas_until(|d| d["offset"].as_u64() == Some(head))
        .await;
    let offsets: Vec<u64> = missed
        .iter()
        .map(|d| d["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, ((first_head + 1)..=head).collect::<Vec<_>>());
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_upgrades_are_refused_and_tickets_work_once() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let refused = tokio_tungstenite::connect_async(server.ws_url("/api/v1/stream")).await;
    assert!(refused.is_err(), "no token, no stream");
    let mut request = server
        .ws_url("/api/v1/stream")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("authorization", "Bearer cfb_wrong".parse().expect("header"));
    assert!(tokio_tungstenite::connect_async(request).await.is_err());

    let (status, ticket) = server
        .post(&tenant.token, "/api/v1/stream/ticket", json!({}))
        .await;
    assert_eq!(status, 201, "{ticket}");
    let ticket = ticket["ticket"].as_str().expect("ticket").to_string();
    let url = server.ws_url(&format!("/api/v1/stream?ticket={ticket}"));
    let (mut socket, _) = tokio_tungstenite::connect_async(url.clone())
        .await
        .expect("ticket accepted");
    use futures_util::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"type": "subscribe", "since": null})
                .to_string()
                .into(),
        ))
        .await
        .expect("send");
    assert!(
        tokio_tungstenite::connect_async(url).await.is_err(),
        "a ticket works once"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_asking_for_pruned_history_is_told_to_resync_and_stays_live() {
    let server = TestServer::start_with(|c| c.stream.retention_deltas = 3).await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    for i in 0..4 {
        server
            .lead_says(&tenant, "111", "Lead", &format!("wamid.P{i}"), "hello")
            .await;
    }
    let mut progress = PruneProgress::new();
    let pruned = prune(server.server().app(), &mut progress)
        .await
        .expect("prune");
    assert!(pruned > 0);
    let head = server.server().app().committer.durable_head();

    let mut client = StreamClient::connect(&server, &tenant.token).await;
    client.send(json!({"type": "subscribe", "since": 1})).await;
    let mut saw_resync = None;
    while saw_resync.is_none() {
        let frame = client.next().await.expect("open");
        assert_ne!(
            frame["type"], "delta",
            "no partial history after a gap: {frame}"
        );
        if frame["type"] == "resync" {
            saw_resync = Some(frame);
        }
    }
    assert_eq!(saw_resync.expect("resync")["head"].as_u64(), Some(head));
    server
        .lead_says(&tenant, "111", "Lead", "wamid.AFTER", "after the resync")
        .await;
    let live = client
        .deltas_until(|d| d["kind"] == "message_created")
        .await;
    assert_eq!(live[0]["offset"].as_u64(), Some(head + 1));

    // A client within the retained history still resumes without a resync.
    let mut recent = StreamClient::connect(&server, &tenant.token).await;
    recent.subscribe(Some(head - 1)).await;
    let frame = recent.next().await.expect("open");
    assert_eq!(frame["type"], "delta");
    assert_eq!(frame["offset"].as_u64(), Some(head));

    // Later passes start where the last one stopped, and still leave nothing behind: a
    // pass starting from offset 0 (as after a restart) finds nothing left to delete.
    for i in 0..3 {
        server
            .lead_says(&tenant, "111", "Lead", &format!("wamid.Q{i}"), "more")
            .await;
    }
    let pruned = prune(server.server().app(), &mut progress)
        .await
        .expect("prune");
    assert!(pruned > 0, "the newly expired deltas are deleted");
    let left = prune(server.server().app(), &mut PruneProgress::new())
        .await
        .expect("prune");
    assert_eq!(left, 0, "nothing under the cutoff was skipped");
    client.close().await;
    recent.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let mut client = StreamClient::connect(&server, &tenant.token).await;
    client.send(json!({"type": "dance"})).await;
    assert_eq!(client.next_of("error").await["code"], "bad_frame");
    client
        .send(json!({"type": "subscribe", "since": "yesterday"}))
        .await;
    assert_eq!(client.next_of("error").await["code"], "bad_frame");
    client.send(json!({"type": "ping"})).await;
    client.next_of("pong").await;
    client.subscribe(None).await;
    client
        .send(json!({"type": "subscribe", "since": null}))
        .await;
    assert_eq!(client.next_of("error").await["code"], "already_subscribed");
    server
        .lead_says(&tenant, "111", "Lead", "wamid.OK", "still streaming")
        .await;
    let deltas = client
        .deltas_until(|d| d["kind"] == "message_created")
        .await;
    assert_eq!(
        deltas.last().expect("delta")["message"]["text"],
        "still streaming"
    );
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_a_resume_hint_and_never_slows_commits() {
    use confab_engine::committer::WriteSet;
    use confab_engine::delta::{DeltaBody, NotificationReason};
    use confab_engine::ids::{AgentId, ConversationId, WorkspaceId};

    let server = TestServer::start_with(|c| c.stream.queue_capacity = 16).await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let mut slow = StreamClient::connect(&server, &tenant.token).await;
    slow.subscribe(None).await;

    // Far more deltas than the socket buffers and the queue hold, while the client reads
    // nothing. Every commit still completes.
    let app = server.server().app().clone();
    let ws: WorkspaceId = tenant.workspace_id.parse().expect("workspace id");
    let agent: AgentId = tenant.agent_id.parse().expect("agent id");
    for _ in 0..200 {
        let mut set = WriteSet::new();
        for _ in 0..250 {
            set.delta(
                ws,
                ConversationId::new(),
                DeltaBody::Notification {
                    agent_id: agent,
                    reason: NotificationReason::Mention,
                    message_id: None,
                    by_agent_id: None,
                    notification: None,
                },
            );
        }
        app.committer
            .commit(set)
            .await
            .expect("commit is never held up by a client");
    }
    let (last, code) = slow.until_closed().await;
    assert_eq!(code, Some(4008), "closed as a slow consumer");
    let hint = last.expect("a last frame");
    assert_eq!(hint["type"], "resync_hint", "{hint}");
    assert!(hint["last_offset"].as_u64().is_some());
    server.shutdown().await;
}
