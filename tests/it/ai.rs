//! The AI agent end to end: the built-in backend answering from the knowledge base with its
//! reasoning, escalation rules, the takeover race, the quiet period, the loop limit,
//! opt-outs, an OpenAI-compatible backend (a loopback stand-in speaking its wire format:
//! answers, held answers, failures, malformed answers), and tenancy.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::harness::{wait_for, GraphStandIn, StreamClient, Tenant, TestServer};

async fn setup() -> (TestServer, GraphStandIn, Tenant) {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    (server, graph, tenant)
}

async fn configure(server: &TestServer, tenant: &Tenant, config: Value) {
    let (status, body) = server.put(&tenant.token, "/api/v1/ai/config", config).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn article(server: &TestServer, tenant: &Tenant, title: &str, body: &str) -> String {
    let (status, created) = server
        .post(
            &tenant.token,
            "/api/v1/kb/articles",
            json!({"title": title, "body": body, "tags": ["faq"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().expect("id").to_string()
}

/// Waits until the conversation has a message satisfying `check`.
async fn message_where(
    server: &TestServer,
    tenant: &Tenant,
    conversation: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, || async {
        server
            .messages(&tenant.token, conversation)
            .await
            .into_iter()
            .find(|m| check(m))
    })
    .await
}

async fn decisions(server: &TestServer, tenant: &Tenant, conversation: &str, seq: u64) -> Value {
    let (status, reasoning) = server
        .get(
            &tenant.token,
            &format!("/api/v1/conversations/{conversation}/messages/{seq}/reasoning"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reasoning}");
    reasoning
}

/// Waits until the AI decided about the lead's message `seq`; returns the decisions.
async fn decided(server: &TestServer, tenant: &Tenant, conversation: &str, seq: u64) -> Vec<Value> {
    wait_for("an AI decision", || async {
        let r = decisions(server, tenant, conversation, seq).await;
        let list = r["decisions"].as_array().cloned().unwrap_or_default();
        (!list.is_empty()).then_some(list)
    })
    .await
}

#[tokio::test]
async fn conversations_start_manual_until_the_agent_is_enabled_then_in_its_default_mode() {
    let (server, graph, tenant) = setup().await;
    server
        .lead_says(&tenant, "5511900000101", "Ana", "wamid.M1", "Hi")
        .await;
    let before = server.conversation_of(&tenant, "5511900000101").await;
    assert_eq!(
        before["ai_mode"], "manual",
        "nothing claims to answer: {before}"
    );

    let (_, config) = server.get(&tenant.token, "/api/v1/ai/config").await;
    assert_eq!(config["enabled"], false);
    configure(
        &server,
        &tenant,
        json!({"enabled": true, "reply_delay_ms": 0}),
    )
    .await;
    server
        .lead_says(&tenant, "5511900000102", "Bia", "wamid.M2", "Hello!")
        .await;
    let after = server.conversation_of(&tenant, "5511900000102").await;
    let id = after["id"].as_str().expect("id");
    // The greeting is answered with the workspace's phrase, through the channel.
    let reply = message_where(&server, &tenant, id, "the AI's greeting", |m| {
        m["sender"] == "ai"
    })
    .await;
    assert_eq!(
        reply["text"],
        "Hi! Thanks for reaching out. How can I help you today?"
    );
    assert_eq!(reply["ai"]["intent"], "greeting");
    assert_eq!(reply["ai"]["decision"], "answered");
    assert_eq!(reply["ai"]["backend"], "builtin");
    let sent = graph.wait_requests(1).await;
    assert_eq!(sent[0].body["text"]["body"], reply["text"]);
    // The first conversation stays manual: the AI never touched it.
    let (_, detail) = server
        .get(
            &tenant.token,
            &format!(
                "/api/v1/conversations/{}",
                before["id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(detail["ai_mode"], "manual");
    assert_eq!(
        server
            .messages(&tenant.token, before["id"].as_str().expect("id"))
            .await
            .len(),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_builtin_agent_answers_only_from_the_knowledge_base_and_explains_itself() {
    let (server, graph, tenant) = setup().await;
    configure(
        &server,
        &tenant,
        json!({"enabled": true, "reply_delay_ms": 0}),
    )
    .await;
    let pricing = article(
        &server,
        &tenant,
        "Pricing",
        "The Pro plan costs 49 dollars per month, billed monthly.\n\nThe Team plan costs 199 dollars per month for ten seats.",
    )
    .await;
    article(
        &server,
        &tenant,
        "Opening hours",
        "Support answers Monday to Friday, 9 to 18.",
    )
    .await;

    server
        .lead_says(
            &tenant,
            "5511900000201",
            "Caio",
            "wamid.K1",
            "How much does the Pro plan cost per month?",
        )
        .await;
    let conv = server.conversation_of(&tenant, "5511900000201").await;
    let id = conv["id"].as_str().expect("id");
    let reply = message_where(&server, &tenant, id, "the AI's answer", |m| {
        m["sender"] == "ai"
    })
    .await;
    assert!(
        reply["text"].as_str().expect("text").contains("49 dollars"),
        "{reply}"
    );
    let ai = &reply["ai"];
    assert_eq!(ai["intent"], "pricing");
    assert_eq!(ai["decision"], "answered");
    assert_eq!(ai["knowledge"][0]["id"], pricing);
    assert_eq!(ai["knowledge"][0]["title"], "Pricing");
    assert!(
        ai["confidence"].as_f64().expect("confidence") >= 0.5,
        "{ai}"
    );
    assert_eq!(ai["answers_seq"], 1);
    graph.wait_requests(1).await;

    // The reasoning route: on the AI message, and as the decision about the lead's one.
    let seq = reply["seq"].as_u64().expect("seq");
    assert_eq!(decisions(&server, &tenant, id, seq).await["ai"], *ai);
    let about = decided(&server, &tenant, id, 1).await;
    assert_eq!(about.len(), 1);
    assert_eq!(about[0]["decision"], "answered");

    // A question the knowledge base does not answer is escalated, never invented.
    server
        .lead_says(
            &tenant,
            "5511900000201",
            "Caio",
            "wamid.K2",
            "Do you integrate with Salesforce?",
        )
        .await;
    let escalation = message_where(&server, &tenant, id, "the escalation", |m| {
        m["sender"] == "system"
    })
    .await;
    assert_eq!(escalation["internal"], true);
    assert_eq!(escalation["ai"]["decision"], "escalated");
    assert_eq!(escalation["ai"]["rule"], "no_relevant_knowledge");
    let (_, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(
        detail["ai_mode"], "paused",
        "escalation hands it to people: {detail}"
    );
    assert_eq!(graph.requests().len(), 1, "nothing more reached the lead");

    // An edited article answers the next question at once.
    let (status, _) = server
        .put(
            &tenant.token,
            &format!("/api/v1/kb/articles/{pricing}"),
            json!({"title": "Pricing", "body": "The Pro plan now costs 59 dollars per month."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/ai"),
            json!({"mode": "active"}),
        )
        .await;
    server
        .lead_says(
            &tenant,
            "5511900000201",
            "Caio",
            "wamid.K3",
            "And the Pro plan price per month now?",
        )
        .await;
    message_where(&server, &tenant, id, "the new answer", |m| {
        m["sender"] == "ai" && m["text"].as_str().is_some_and(|t| t.contains("59 dollars"))
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn escalation_rules_pause_assign_tag_and_notify_on_the_stream() {
    let (server, graph, tenant) = setup().await;
    configure(
        &server,
        &tenant,
        json!({"enabled": true, "reply_delay_ms": 0}),
    )
    .await;
    let (status, rules) = server
        .get(&tenant.token, "/api/v1/ai/escalation-rules")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(rules["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .any(|r| r["name"] == "human_request"));
    let (status, rules) = server
        .put(
            &tenant.token,
            "/api/v1/ai/escalation-rules",
            json!({"rules": [
                {"name": "vip words", "when": {"keywords": ["enterprise contract"]},
                 "then": {"assign_to": tenant.agent_id, "tags": ["VIP"], "status": "pending"}},
                {"name": "human", "when": {"intents": ["human_request"]},
                 "then": {"assign_to": "round_robin", "tags": ["needs-human"]}}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rules}");
    let mut stream = StreamClient::connect(&server, &tenant.token).await;
    stream.subscribe(None).await;

    server
        .lead_says(
            &tenant,
            "5511900000301",
            "Duda",
            "wamid.E1",
            "Hi, we want an Enterprise Contract for 300 seats",
        )
        .await;
    let deltas = stream
        .deltas_until(|d| d["kind"] == "notification" && d["reason"] == "escalation")
        .await;
    let notification = deltas.last().expect("notification");
    assert_eq!(notification["agent_id"], tenant.agent_id);
    let conv = server.conversation_of(&tenant, "5511900000301").await;
    assert_eq!(conv["ai_mode"], "paused");
    assert_eq!(conv["assignee_id"], tenant.agent_id);
    assert_eq!(conv["tags"], json!(["VIP"]));
    assert_eq!(conv["status"], "pending");
    let id = conv["id"].as_str().expect("id");
    let system = message_where(&server, &tenant, id, "the system message", |m| {
        m["sender"] == "system"
    })
    .await;
    assert_eq!(system["ai"]["rule"], "vip words");
    assert!(
        graph.requests().is_empty(),
        "an escalation sends nothing to the lead"
    );

    server
        .lead_says(
            &tenant,
            "5511900000302",
            "Edu",
            "wamid.E2",
            "Can I talk to a real person please?",
        )
        .await;
    let conv = wait_for("the second escalation", || async {
        let c = server.conversation_of(&tenant, "5511900000302").await;
        (c["ai_mode"] == "paused").then_some(c)
    })
    .await;
    assert_eq!(conv["tags"], json!(["needs-human"]));
    assert_eq!(
        conv["assignee_id"], tenant.agent_id,
        "round robin over the only agent"
    );

    // Non-admins cannot change the rules; bad rules change nothing.
    let (status, error) = server
        .put(
            &tenant.token,
            "/api/v1/ai/escalation-rules",
            json!({"rules": [{"name": "x", "when": {}, "then": {}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    stream.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn opt_outs_and_auto_replies_get_no_answer_and_the_loop_limit_hands_over() {
    let (server, graph, tenant) = setup().await;
    configure(
        &server,
        &tenant,
        json!({"enabled": true, "reply_delay_ms": 0, "max_replies_per_conversation_per_day": 2}),
    )
    .await;
    server
        .lead_says(&tenant, "5511900000401", "Fabi", "wamid.O1", "STOP")
        .await;
    let conv = wait_for("the opt-out", || async {
        let c = server.conversation_of(&tenant, "5511900000401").await;
        (c["ai_mode"] == "paused").then_some(c)
    })
    .await;
    assert_eq!(conv["tags"], json!(["opted-out"]));

    server
        .lead_says(
            &tenant,
            "5511900000402",
            "Gabi",
            "wamid.A1",
            "Automatic reply: I am out of office until Monday",
        )
        .await;
    let id = server.conversation_of(&tenant, "5511900000402").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let about = decided(&server, &tenant, &id, 1).await;
    assert_eq!(about[0]["decision"], "discarded");
    assert_eq!(about[0]["intent"], "out_of_office");

    // A bot loop: the third AI reply of the day becomes an escalation.
    let mut answered = 0;
    for (i, text) in ["Hi", "Thanks!", "Hello again"].iter().enumerate() {
        server
            .lead_says(
                &tenant,
                "5511900000403",
                "Bot",
                &format!("wamid.L{i}"),
                text,
            )
            .await;
        let id = server.conversation_of(&tenant, "5511900000403").await["id"]
            .as_str()
            .expect("id")
            .to_string();
        let seq = server
            .messages(&tenant.token, &id)
            .await
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .map(|m| m["seq"].as_u64().expect("seq"))
            .max()
            .expect("a lead message");
        let about = decided(&server, &tenant, &id, seq).await;
        if about[0]["decision"] == "answered" {
            answered += 1;
        } else {
            assert_eq!(about[0]["rule"], "reply_limit", "{about:?}");
        }
    }
    assert_eq!(answered, 2);
    graph.wait_requests(2).await;
    server.shutdown().await;
}

/// An OpenAI-compatible `chat/completions` stand-in: records requests; answers from a
/// script, optionally holding each answer until released.
#[derive(Clone)]
struct ModelStandIn {
    base_url: String,
    state: Arc<ModelState>,
}

struct ModelState {
    requests: Mutex<Vec<Value>>,
    script: Mutex<VecDeque<(u16, Value)>>,
    hold: Mutex<bool>,
    /// One permit per held answer to let go.
    release: Semaphore,
    arrived: Notify,
}

impl ModelStandIn {
    async fn start() -> ModelStandIn {
        let state = Arc::new(ModelState {
            requests: Mutex::default(),
            script: Mutex::default(),
            hold: Mutex::new(false),
            release: Semaphore::new(0),
            arrived: Notify::new(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(model_answer))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ModelStandIn {
            base_url: format!("http://{addr}/v1"),
            state,
        }
    }

    fn answer(reply: &str, intent: &str, confidence: f64, escalate: bool) -> (u16, Value) {
        let content = json!({"reply": reply, "intent": intent, "confidence": confidence, "escalate": escalate, "reason": "from the test"});
        (
            200,
            json!({"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": content.to_string()}, "finish_reason": "stop"}]}),
        )
    }

    fn script(&self, answers: Vec<(u16, Value)>) {
        self.state.script.lock().expect("lock").extend(answers);
    }

    fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().expect("lock").clone()
    }
}

async fn model_answer(
    State(state): State<Arc<ModelState>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    state.requests.lock().expect("lock").push(body);
    state.arrived.notify_waiters();
    let held = *state.hold.lock().expect("lock");
    if held {
        if let Ok(permit) = state.release.acquire().await {
            permit.forget();
        }
    }
    let next = state.script.lock().expect("lock").pop_front();
    let (status, answer) = next.unwrap_or_else(|| ModelStandIn::answer("ok", "other", 0.9, false));
    (StatusCode::from_u16(status).expect("status"), Json(answer))
}

async fn openai_setup(
    adjust: impl FnOnce(&mut confab_gateway::Config),
) -> (TestServer, GraphStandIn, Tenant, ModelStandIn) {
    // The stand-in listens on loopback, which only an operator's setting allows.
    let server = TestServer::start_with(|c| {
        c.ai.allow_private_backends = true;
        adjust(c);
    })
    .await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let model = ModelStandIn::start().await;
    configure(
        &server,
        &tenant,
        json!({"enabled": true, "reply_delay_ms": 0, "backend": "openai",
               "instructions": "You are Acme's sales assistant.",
               "openai": {"base_url": model.base_url, "model": "acme-small", "api_key": "sk-test"}}),
    )
    .await;
    (server, graph, tenant, model)
}

#[tokio::test]
async fn an_openai_compatible_backend_gets_the_exact_request_and_its_answer_is_sent() {
    let (server, graph, tenant, model) = openai_setup(|_| {}).await;
    article(
        &server,
        &tenant,
        "Pricing",
        "The Pro plan costs 49 dollars per month.",
    )
    .await;
    model.script(vec![ModelStandIn::answer(
        "Pro is 49 dollars a month.",
        "pricing",
        0.93,
        false,
    )]);
    server
        .lead_says(
            &tenant,
            "5511900000501",
            "Hugo",
            "wamid.P1",
            "What does Pro cost per month?",
        )
        .await;
    let id = server.conversation_of(&tenant, "5511900000501").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let reply = message_where(&server, &tenant, &id, "the model's answer", |m| {
        m["sender"] == "ai"
    })
    .await;
    assert_eq!(reply["text"], "Pro is 49 dollars a month.");
    assert_eq!(reply["ai"]["backend"], "openai");
    assert_eq!(reply["ai"]["model"], "acme-small");
    assert_eq!(reply["ai"]["intent"], "pricing");
    assert_eq!(
        graph.wait_requests(1).await[0].body["text"]["body"],
        "Pro is 49 dollars a month."
    );

    let request = &model.requests()[0];
    assert_eq!(request["model"], "acme-small");
    assert_eq!(request["response_format"]["type"], "json_object");
    let messages = request["messages"].as_array().expect("messages");
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().expect("system");
    assert!(
        system.starts_with("You are Acme's sales assistant."),
        "{system}"
    );
    assert!(
        system.contains("The Pro plan costs 49 dollars per month."),
        "the knowledge: {system}"
    );
    assert_eq!(messages.last().expect("last")["role"], "user");
    assert_eq!(
        messages.last().expect("last")["content"],
        "What does Pro cost per month?"
    );
    server.shutdown().await;
}

/// The id of a lead's conversation and the `seq` of its newest message satisfying `check`.
async fn newest_where(
    server: &TestServer,
    tenant: &Tenant,
    conversation: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, || async {
        server
            .messages(&tenant.token, conversation)
            .await
            .into_iter()
            .rev()
            .find(|m| check(m))
    })
    .await
}

#[tokio::test]
async fn rules_match_on_confidence_replies_today_channel_and_campaign() {
    let (server, graph, tenant, model) = openai_setup(|_| {}).await;
    let (status, rules) = server
        .put(
            &tenant.token,
            "/api/v1/ai/escalation-rules",
            json!({"rules": [
                {"name": "email pricing", "when": {"channel": "email", "intents": ["pricing"]},
                 "then": {"tags": ["email-pricing"]}},
                {"name": "spring", "when": {"campaign": "Spring Promo"}, "then": {"tags": ["spring"]}},
                {"name": "unsure", "when": {"confidence_below": 0.6}, "then": {"tags": ["unsure"]}},
                {"name": "chatty", "when": {"ai_replies_over": 1}, "then": {"tags": ["chatty"]}}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rules}");
    let escalated_by =
        |rule: &'static str| move |m: &Value| m["sender"] == "system" && m["ai"]["rule"] == rule;

    // A confident pricing answer on WhatsApp: the email-only rule does not apply.
    model.script(vec![ModelStandIn::answer(
        "49 a month.",
        "pricing",
        0.9,
        false,
    )]);
    server
        .lead_says(&tenant, "5511900000601", "Ines", "wamid.R1", "Price?")
        .await;
    let id = server.conversation_of(&tenant, "5511900000601").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    message_where(&server, &tenant, &id, "the first answer", |m| {
        m["sender"] == "ai"
    })
    .await;

    // Below the rule's confidence: escalated by `unsure`, nothing sent.
    model.script(vec![ModelStandIn::answer(
        "Maybe 49?",
        "pricing",
        0.5,
        false,
    )]);
    server
        .lead_says(
            &tenant,
            "5511900000601",
            "Ines",
            "wamid.R2",
            "For ten seats?",
        )
        .await;
    newest_where(
        &server,
        &tenant,
        &id,
        "the unsure escalation",
        escalated_by("unsure"),
    )
    .await;
    let (_, conv) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(conv["tags"], json!(["unsure"]));
    assert_eq!(graph.requests().len(), 1, "only the confident answer left");

    // Resumed: a second answer today is allowed (1 reply so far), the third is over the
    // rule's limit of 1.
    server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/ai"),
            json!({"mode": "active"}),
        )
        .await;
    model.script(vec![ModelStandIn::answer(
        "Yes, 199.",
        "pricing",
        0.9,
        false,
    )]);
    server
        .lead_says(&tenant, "5511900000601", "Ines", "wamid.R3", "Team plan?")
        .await;
    wait_for("the second answer", || async {
        let answers = server
            .messages(&tenant.token, &id)
            .await
            .into_iter()
            .filter(|m| m["sender"] == "ai")
            .count();
        (answers == 2).then_some(())
    })
    .await;
    model.script(vec![ModelStandIn::answer("Sure.", "pricing", 0.9, false)]);
    server
        .lead_says(
            &tenant,
            "5511900000601",
            "Ines",
            "wamid.R4",
            "Annual discount?",
        )
        .await;
    newest_where(
        &server,
        &tenant,
        &id,
        "the chatty escalation",
        escalated_by("chatty"),
    )
    .await;
    assert_eq!(graph.requests().len(), 2);

    // A lead from the campaign's ad: escalated by `spring` whatever the model proposed.
    model.script(vec![ModelStandIn::answer(
        "49 a month.",
        "pricing",
        0.95,
        false,
    )]);
    server
        .lead_from_ad(
            &tenant,
            "5511900000602",
            "wamid.R5",
            "Price?",
            "Spring Promo",
        )
        .await;
    let spring = server.conversation_of(&tenant, "5511900000602").await;
    assert_eq!(spring["campaign"], "Spring Promo");
    let spring_id = spring["id"].as_str().expect("id");
    newest_where(
        &server,
        &tenant,
        spring_id,
        "the campaign escalation",
        escalated_by("spring"),
    )
    .await;
    assert_eq!(
        graph.requests().len(),
        2,
        "nothing sent to the campaign's lead"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_campaign_can_pilot_the_agent_and_its_decisions_are_searchable_by_intent() {
    let (server, graph, tenant) = setup().await;
    // Off for the workspace, on for one campaign; working hours by IANA zone name.
    configure(
        &server,
        &tenant,
        json!({"enabled": false, "reply_delay_ms": 0,
               "campaigns": {"Pilot": {"enabled": true}},
               "schedule": {"mode": "always", "timezone": "America/Sao_Paulo", "working_hours": []}}),
    )
    .await;
    let (status, error) = server
        .put(
            &tenant.token,
            "/api/v1/ai/config",
            json!({"schedule": {"mode": "off_hours", "timezone": "Mars/Olympus", "working_hours": []}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "invalid_timezone");
    let (_, config) = server.get(&tenant.token, "/api/v1/ai/config").await;
    assert_eq!(config["schedule"]["timezone"], "America/Sao_Paulo");
    assert_eq!(config["campaigns"]["Pilot"]["enabled"], true);
    article(
        &server,
        &tenant,
        "Pricing",
        "The Pro plan costs 49 dollars per month.",
    )
    .await;

    server
        .lead_from_ad(
            &tenant,
            "5511900000701",
            "wamid.C1",
            "How much does the Pro plan cost per month?",
            "Pilot",
        )
        .await;
    let pilot = server.conversation_of(&tenant, "5511900000701").await;
    assert_eq!(pilot["ai_mode"], "active", "{pilot}");
    let pilot_id = pilot["id"].as_str().expect("id").to_string();
    let answer = message_where(&server, &tenant, &pilot_id, "the pilot's answer", |m| {
        m["sender"] == "ai"
    })
    .await;
    graph.wait_requests(1).await;

    server
        .lead_says(
            &tenant,
            "5511900000702",
            "Joao",
            "wamid.C2",
            "How much does the Pro plan cost per month?",
        )
        .await;
    let other = server.conversation_of(&tenant, "5511900000702").await;
    assert_eq!(other["ai_mode"], "manual", "outside the pilot: {other}");

    // The AI's decisions are found by intent, with or without words.
    let search = |query: &'static str| {
        let server = &server;
        let token = tenant.token.clone();
        async move {
            let (status, page) = server.get(&token, &format!("/api/v1/search?{query}")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {page}");
            page["items"].as_array().cloned().unwrap_or_default()
        }
    };
    let found = wait_for("the answer indexed", || async {
        let items = search("intent=pricing").await;
        (!items.is_empty()).then_some(items)
    })
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["message_id"], answer["id"]);
    assert_eq!(search("intent=pricing&q=dollars").await.len(), 1);
    assert!(search("intent=pricing&q=salesforce").await.is_empty());
    assert!(search("intent=greeting").await.is_empty());
    let (status, error) = server
        .get(&tenant.token, "/api/v1/search?intent=Pricing%21")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let (status, _) = server.get(&tenant.token, "/api/v1/search").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.shutdown().await;
}

/// A lead asks about a free trial; the escalation note the AI leaves, once it exists.
async fn escalation_after_trial_question(
    server: &TestServer,
    tenant: &Tenant,
    wa_id: &str,
    name: &str,
    wamid: &str,
) -> Value {
    server
        .lead_says(tenant, wa_id, name, wamid, "Is there a free trial?")
        .await;
    let id = server.conversation_of(tenant, wa_id).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    message_where(server, tenant, &id, "the escalation", |m| {
        m["sender"] == "system"
    })
    .await
}

#[tokio::test]
async fn a_failing_or_malformed_backend_escalates_with_its_reason() {
    let (server, graph, tenant, model) = openai_setup(|c| {
        c.ai.backend_attempts = 2;
        c.ai.backend_timeout_ms = 2_000;
    })
    .await;
    model.script(vec![
        (500, json!({"error": "overloaded"})),
        (500, json!({"error": "overloaded"})),
    ]);
    let escalation =
        escalation_after_trial_question(&server, &tenant, "5511900000601", "Iris", "wamid.F1")
            .await;
    assert_eq!(escalation["ai"]["rule"], "ai_backend_unavailable");
    assert!(
        escalation["ai"]["why"]
            .as_str()
            .expect("why")
            .contains("HTTP 500"),
        "{escalation}"
    );
    assert_eq!(model.requests().len(), 2, "retried once");

    model.script(vec![
        (
            200,
            json!({"choices": [{"message": {"content": "Sure! We have a trial."}}]}),
        ),
        (
            200,
            json!({"choices": [{"message": {"content": "still not JSON"}}]}),
        ),
    ]);
    let escalation =
        escalation_after_trial_question(&server, &tenant, "5511900000602", "Juca", "wamid.F2")
            .await;
    assert_eq!(escalation["ai"]["rule"], "ai_backend_unavailable");

    // An answer too large to be a chat completion is not read to its end.
    let huge = ModelStandIn::answer(&"x".repeat(300 * 1024), "other", 0.9, false);
    model.script(vec![huge.clone(), huge]);
    let escalation =
        escalation_after_trial_question(&server, &tenant, "5511900000603", "Lia", "wamid.F3").await;
    assert_eq!(escalation["ai"]["rule"], "ai_backend_unavailable");
    assert!(
        escalation["ai"]["why"]
            .as_str()
            .expect("why")
            .contains("bytes"),
        "{escalation}"
    );
    assert!(
        graph.requests().is_empty(),
        "nothing invented reached the lead"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_ai_answer_never_lands_after_a_human_took_over() {
    let (server, graph, tenant, model) = openai_setup(|_| {}).await;
    *model.state.hold.lock().expect("lock") = true;
    for round in 0..10u32 {
        let phone = format!("55119000007{round:02}");
        let arrived = model.state.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        server
            .lead_says(
                &tenant,
                &phone,
                "Race",
                &format!("wamid.R{round}"),
                "Can you tell me more about Pro?",
            )
            .await;
        // The backend has the question and holds its answer.
        arrived.await;
        let id = server.conversation_of(&tenant, &phone).await["id"]
            .as_str()
            .expect("id")
            .to_string();
        // Alternate: a human reply, or a takeover by mode.
        if round % 2 == 0 {
            let (status, _) = server
                .post(
                    &tenant.token,
                    &format!("/api/v1/conversations/{id}/messages"),
                    json!({"text": "Ana here, let me help."}),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED);
        } else {
            let (status, _) = server
                .post(
                    &tenant.token,
                    &format!("/api/v1/conversations/{id}/ai"),
                    json!({"mode": "paused"}),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
        }
        model.script(vec![ModelStandIn::answer(
            "AI answer that must never be sent",
            "question",
            0.95,
            false,
        )]);
        model.state.release.add_permits(1);
        let about = decided(&server, &tenant, &id, 1).await;
        assert_eq!(
            about[0]["decision"], "discarded",
            "round {round}: {about:?}"
        );
        assert!(
            server
                .messages(&tenant.token, &id)
                .await
                .iter()
                .all(|m| m["sender"] != "ai"),
            "round {round}"
        );
    }
    assert!(
        graph
            .requests()
            .iter()
            .all(|r| r.body["text"]["body"] != "AI answer that must never be sent"),
        "a discarded answer never reaches the provider"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn quick_messages_get_one_answer_after_the_quiet_period() {
    let (server, graph, tenant) = setup().await;
    configure(
        &server,
        &tenant,
        json!({"enabled": true, "reply_delay_ms": 1500}),
    )
    .await;
    article(
        &server,
        &tenant,
        "Pricing",
        "The Pro plan costs 49 dollars per month.",
    )
    .await;
    for (i, text) in [
        "Hi",
        "I have a question",
        "how much is the Pro plan per month?",
    ]
    .iter()
    .enumerate()
    {
        server
            .lead_says(
                &tenant,
                "5511900000801",
                "Kiko",
                &format!("wamid.Q{i}"),
                text,
            )
            .await;
    }
    let id = server.conversation_of(&tenant, "5511900000801").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let about = decided(&server, &tenant, &id, 3).await;
    assert_eq!(about[0]["decision"], "answered", "{about:?}");
    let messages = server.messages(&tenant.token, &id).await;
    let ai: Vec<_> = messages.iter().filter(|m| m["sender"] == "ai").collect();
    assert_eq!(ai.len(), 1, "one answer for three messages: {messages:?}");
    assert!(ai[0]["text"].as_str().expect("text").contains("49 dollars"));
    for seq in [1, 2] {
        assert_eq!(
            decisions(&server, &tenant, &id, seq).await["decisions"],
            json!([])
        );
    }
    graph.wait_requests(1).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_backend_on_a_private_address_is_refused_unless_the_operator_allows_it() {
    let (server, _graph, tenant) = setup().await;
    for url in [
        "http://127.0.0.1:11434/v1",
        "http://localhost:11434/v1",
        "http://169.254.169.254/latest",
        "http://[::1]:8000/v1",
        "http://10.0.0.7/v1",
    ] {
        let (status, error) = server
            .put(
                &tenant.token,
                "/api/v1/ai/config",
                json!({"openai": {"base_url": url, "model": "m"}}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {error}");
        assert_eq!(error["error"]["code"], "private_address", "{url}");
    }
    let (_, config) = server.get(&tenant.token, "/api/v1/ai/config").await;
    assert_eq!(config["openai"]["base_url"], "", "nothing was stored");
    server.shutdown().await;

    let allowed = TestServer::start_with(|c| c.ai.allow_private_backends = true).await;
    let graph = GraphStandIn::start().await;
    let tenant = allowed.provision(&graph).await;
    configure(
        &allowed,
        &tenant,
        json!({"openai": {"base_url": "http://127.0.0.1:11434/v1", "model": "llama3"}}),
    )
    .await;
    allowed.shutdown().await;
}

#[tokio::test]
async fn ai_settings_knowledge_and_reasoning_belong_to_their_workspace() {
    let (server, graph, ours) = setup().await;
    let theirs = server.provision(&graph).await;
    let article_id = article(&server, &ours, "Secret", "Our margin is 80 percent.").await;
    configure(&server, &ours, json!({"enabled": true, "reply_delay_ms": 0, "openai": {"base_url": "https://models.example/v1", "model": "m", "api_key": "sk-secret"}})).await;
    let (_, config) = server.get(&ours.token, "/api/v1/ai/config").await;
    assert_eq!(config["openai"]["api_key_set"], true);
    assert!(
        !config.to_string().contains("sk-secret"),
        "the key is never shown"
    );
    let (_, theirs_config) = server.get(&theirs.token, "/api/v1/ai/config").await;
    assert_eq!(theirs_config["enabled"], false);

    for path in [format!("/api/v1/kb/articles/{article_id}")] {
        let (status, _) = server.get(&theirs.token, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let (status, _) = server
            .put(&theirs.token, &path, json!({"title": "x", "body": "y"}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, list) = server.get(&theirs.token, "/api/v1/kb/articles").await;
    assert_eq!(list["items"], json!([]));

    server
        .lead_says(
            &ours,
            "5511900000901",
            "Lia",
            "wamid.T1",
            "What is your margin?",
        )
        .await;
    let id = server.conversation_of(&ours, "5511900000901").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    decided(&server, &ours, &id, 1).await;
    let (status, _) = server
        .get(
            &theirs.token,
            &format!("/api/v1/conversations/{id}/messages/1/reasoning"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Their lead asking the same question finds nothing of ours.
    configure(
        &server,
        &theirs,
        json!({"enabled": true, "reply_delay_ms": 0}),
    )
    .await;
    server
        .lead_says(
            &theirs,
            "5511900000902",
            "Max",
            "wamid.T2",
            "What is your margin?",
        )
        .await;
    let id = server.conversation_of(&theirs, "5511900000902").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let about = decided(&server, &theirs, &id, 1).await;
    assert_eq!(about[0]["decision"], "escalated");
    assert_eq!(about[0]["knowledge"], json!([]));

    // Only admins change the agent.
    let (status, second) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/agents", ours.workspace_id),
            json!({"name": "Bo", "email": "bo@acme.test", "role": "agent"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let second = second["token"].as_str().expect("token").to_string();
    let (status, error) = server
        .put(&second, "/api/v1/ai/config", json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["error"]["code"], "admin_only");
    let (status, _) = server
        .delete(&theirs.token, &format!("/api/v1/kb/articles/{article_id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .delete(&ours.token, &format!("/api/v1/kb/articles/{article_id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.shutdown().await;
}

#[tokio::test]
async fn feedback_is_counted_and_a_correction_answers_the_next_similar_question() {
    let (server, _graph, tenant) = setup().await;
    configure(
        &server,
        &tenant,
        json!({"enabled": true, "reply_delay_ms": 0, "confidence_threshold": 0.3}),
    )
    .await;
    article(
        &server,
        &tenant,
        "Pricing",
        "The Pro plan costs 49 dollars per month.",
    )
    .await;
    server
        .lead_says(
            &tenant,
            "5511900001001",
            "Nina",
            "wamid.B1",
            "Tell me about the Pro plan with annual billing?",
        )
        .await;
    let id = server.conversation_of(&tenant, "5511900001001").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let answer = message_where(&server, &tenant, &id, "the AI's answer", |m| {
        m["sender"] == "ai"
    })
    .await;
    assert!(answer["text"]
        .as_str()
        .expect("text")
        .contains("49 dollars"));
    let seq = answer["seq"].as_u64().expect("seq");

    let path = format!("/api/v1/conversations/{id}/messages/{seq}/feedback");
    let (status, feedback) = server
        .post(
            &tenant.token,
            &path,
            json!({"rating": "down", "correction": "With annual billing the Pro plan costs 39 dollars per month."}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{feedback}");
    assert_eq!(feedback["rating"], "down");
    assert_eq!(feedback["agent_id"], tenant.agent_id);
    let article_id = feedback["article_id"]
        .as_str()
        .expect("an article")
        .to_string();
    let (_, created) = server
        .get(&tenant.token, &format!("/api/v1/kb/articles/{article_id}"))
        .await;
    assert_eq!(
        created["title"],
        "Tell me about the Pro plan with annual billing?"
    );
    assert_eq!(created["source_conversation_id"], id);
    let reasoning = decisions(&server, &tenant, &id, seq).await;
    assert_eq!(reasoning["feedback"][0]["id"], feedback["id"]);
    // Feedback is for the AI's messages only.
    let (status, error) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages/1/feedback"),
            json!({"rating": "up"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["code"], "not_an_ai_message");

    server
        .lead_says(
            &tenant,
            "5511900001002",
            "Otto",
            "wamid.B2",
            "Anything on the Pro plan with annual billing?",
        )
        .await;
    let other = server.conversation_of(&tenant, "5511900001002").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let corrected = message_where(&server, &tenant, &other, "the corrected answer", |m| {
        m["sender"] == "ai"
    })
    .await;
    assert!(
        corrected["text"]
            .as_str()
            .expect("text")
            .contains("39 dollars"),
        "{corrected}"
    );
    assert_eq!(corrected["ai"]["knowledge"][0]["id"], article_id);

    let (status, report) = server
        .get(&tenant.token, "/api/v1/analytics?period=today")
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["ai_feedback_down"], 1);
    assert_eq!(report["ai_feedback_up"], 0);
    assert_eq!(report["ai_answered"], 2);
    assert_eq!(report["ai_answer_rate"], 1.0);
    assert!(
        report["median_ai_latency_ms"].as_f64().is_some(),
        "{report}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_full_pool_and_an_unsendable_answer_escalate_instead_of_leaving_the_lead_waiting() {
    let (server, graph, tenant, model) = openai_setup(|c| c.ai.queue_depth = 1).await;
    *model.state.hold.lock().expect("lock") = true;
    let arrived = model.state.arrived.notified();
    tokio::pin!(arrived);
    arrived.as_mut().enable();
    server
        .lead_says(
            &tenant,
            "5511900001101",
            "Pia",
            "wamid.U1",
            "Tell me about onboarding?",
        )
        .await;
    // The only place in the pool is taken by a decision the backend holds.
    arrived.await;
    server
        .lead_says(
            &tenant,
            "5511900001102",
            "Rui",
            "wamid.U2",
            "Tell me about onboarding?",
        )
        .await;
    let id = server.conversation_of(&tenant, "5511900001102").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let escalation = message_where(&server, &tenant, &id, "the escalation", |m| {
        m["sender"] == "system"
    })
    .await;
    assert_eq!(escalation["ai"]["rule"], "ai_unavailable", "{escalation}");

    // The held decision's answer is longer than the channel takes: escalated, not lost.
    model.script(vec![ModelStandIn::answer(
        &"x".repeat(5000),
        "question",
        0.9,
        false,
    )]);
    model.state.release.add_permits(1);
    let first = server.conversation_of(&tenant, "5511900001101").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let escalation = message_where(&server, &tenant, &first, "the send failure", |m| {
        m["sender"] == "system"
    })
    .await;
    assert_eq!(escalation["ai"]["rule"], "ai_send_failed", "{escalation}");
    assert!(escalation["ai"]["why"]
        .as_str()
        .expect("why")
        .contains("text_too_long"));
    assert!(graph.requests().is_empty());
    server.shutdown().await;
}
