//! Conversation actors are passivated when idle, capped in number, and restarted from the
//! store after a crash; a crashed connector is restarted by its supervisor.

use confab_actors::ConversationMsg;
use confab_engine::ids::{ChannelId, ConversationId};

use crate::harness::{wait_for, GraphStandIn, TestServer};

#[tokio::test]
async fn a_crashed_conversation_actor_is_restarted_from_the_store() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server
        .lead_says(&tenant, "111", "Lead", "wamid.C1", "before the crash")
        .await;
    let id: ConversationId = server.conversations(&tenant.token).await[0]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("conversation id");
    let conversations = server.server().app().runtime.conversations.clone();
    let before = conversations.actor(id).await.expect("live").get_id();
    conversations
        .tell(id, ConversationMsg::Crash)
        .await
        .expect("told");
    wait_for("a new actor for the conversation", || async {
        let now = conversations.actor(id).await.ok()?.get_id();
        (now != before).then_some(())
    })
    .await;
    server
        .lead_says(&tenant, "111", "Lead", "wamid.C2", "after the crash")
        .await;
    let messages = server.messages(&tenant.token, &id.to_string()).await;
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        vec![2, 1],
        "state reloaded from the store: seq continues"
    );
    assert_eq!(
        server.conversations(&tenant.token).await[0]["unread_count"],
        2
    );
    server.shutdown().await;
}

#[tokio::test]
async fn idle_conversations_are_passivated_and_come_back_on_demand() {
    let server = TestServer::start_with(|c| c.conversations.idle_timeout_secs = 1).await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server
        .lead_says(&tenant, "111", "Lead", "wamid.P1", "one")
        .await;
    let id: ConversationId = server.conversations(&tenant.token).await[0]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("conversation id");
    let conversations = server.server().app().runtime.conversations.clone();
    wait_for("passivation", || async {
        (!conversations.is_live(id)).then_some(())
    })
    .await;
    server
        .lead_says(&tenant, "111", "Lead", "wamid.P2", "two")
        .await;
    let seqs: Vec<u64> = server
        .messages(&tenant.token, &id.to_string())
        .await
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![2, 1]);
    server.shutdown().await;
}

#[tokio::test]
async fn the_number_of_live_actors_stays_under_the_cap() {
    let server = TestServer::start_with(|c| c.conversations.max_live = 2).await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let conversations = server.server().app().runtime.conversations.clone();
    for round in 0..2 {
        for lead in 0..5 {
            server
                .lead_says(
                    &tenant,
                    &format!("77{lead}"),
                    "Lead",
                    &format!("wamid.R{round}L{lead}"),
                    "hi",
                )
                .await;
            assert!(
                conversations.live_count() <= 2,
                "live: {}",
                conversations.live_count()
            );
        }
    }
    let listed = server.conversations(&tenant.token).await;
    assert_eq!(listed.len(), 5);
    for conversation in listed {
        assert_eq!(conversation["unread_count"], 2, "{conversation}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_crashed_connector_is_restarted_by_its_supervisor() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let channel: ChannelId = tenant.channel_id.parse().expect("channel id");
    let channels = server.server().app().runtime.channels.clone();
    let connector_id = || channels.registry().connector_id(channel);
    let before = connector_id().expect("running");
    channels.crash(channel);
    wait_for("a restarted connector", || async {
        connector_id().filter(|now| *now != before).map(|_| ())
    })
    .await;
    let answer = server
        .lead_says(&tenant, "111", "Lead", "wamid.AFTER", "still there?")
        .await;
    assert_eq!(answer["stored"], 1);
    server.shutdown().await;
}
