//! The email channel end to end: signed webhooks and SendGrid's form in, threading like a
//! mail client, replies out over real SMTP to a loopback server (the demo's sink), retries
//! on 4xx, failures on 5xx, bounces and auto-replies.

use std::collections::HashSet;

use axum::http::StatusCode;
use confab_engine::wire::email;
use confab_gateway::demo::smtp_sink::{Received, SmtpSink};
use serde_json::{json, Value};

use crate::harness::{status_json, wait_for, GraphStandIn, TestServer};

const ADDRESS: &str = "sales@agency.example";
const SECRET: &str = "inbound-secret-for-tests";

struct Mailbox {
    token: String,
    channel_id: String,
    workspace_id: String,
    sink: SmtpSink,
}

/// A workspace with an email channel sending through a fresh SMTP sink.
async fn mailbox(server: &TestServer) -> Mailbox {
    let sink = SmtpSink::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sink");
    sink.require_auth("sales", "smtp-password");
    let (status, ws) = server
        .admin_post("/api/v1/admin/workspaces", json!({"name": "Mail Agency"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    let workspace_id = ws["id"].as_str().expect("id").to_owned();
    let (status, agent) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{workspace_id}/agents"),
            json!({"name": "Eva Agent", "email": "eva@agency.example", "role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let (status, channel) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{workspace_id}/channels"),
            json!({
                "kind": "email",
                "name": "Sales mailbox",
                "address": ADDRESS,
                "display_name": "Agency Sales",
                "inbound_secret": SECRET,
                "smtp": {"host": "127.0.0.1", "port": sink.addr.port(), "security": "none",
                         "username": "sales", "password": "smtp-password"},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    assert_eq!(channel["kind"], "email");
    assert_eq!(channel["address"], ADDRESS);
    assert!(
        !channel.to_string().contains("smtp-password") && !channel.to_string().contains(SECRET),
        "secrets are never shown: {channel}"
    );
    Mailbox {
        token: agent["token"].as_str().expect("token").to_owned(),
        channel_id: channel["id"].as_str().expect("id").to_owned(),
        workspace_id,
        sink,
    }
}

async fn post_raw(server: &TestServer, mailbox: &Mailbox, raw: &str) -> (StatusCode, Value) {
    let answer = server
        .http
        .post(server.url(&format!("/webhooks/email/{}", mailbox.channel_id)))
        .header("content-type", "message/rfc822")
        .header(email::SIGNATURE_HEADER, email::sign(SECRET, raw.as_bytes()))
        .body(raw.to_owned())
        .send()
        .await
        .expect("webhook");
    status_json(answer).await
}

/// A plain message from `from` with these headers.
fn mail(from: &str, message_id: &str, subject: &str, extra: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: {ADDRESS}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
         Date: Mon, 5 Jan 2026 10:00:00 +0000\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

async fn stored(server: &TestServer, mailbox: &Mailbox, raw: &str) {
    let (status, answer) = post_raw(server, mailbox, raw).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

async fn conversations(server: &TestServer, mailbox: &Mailbox) -> Vec<Value> {
    server.conversations(&mailbox.token).await
}

async fn reply(server: &TestServer, mailbox: &Mailbox, conversation: &str, text: &str) -> Value {
    let (status, message) = server
        .post(
            &mailbox.token,
            &format!("/api/v1/conversations/{conversation}/messages"),
            json!({ "text": text }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{message}");
    message
}

/// The value of header `name` in a raw message (unfolded).
fn header(data: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(data)
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ");
    text.split("\r\n\r\n").next()?.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

async fn next_mail(sink: &SmtpSink, n: usize) -> Received {
    wait_for(&format!("{n} mails at the SMTP sink"), || async {
        sink.received().get(n - 1).cloned()
    })
    .await
}

#[tokio::test]
async fn a_lead_writes_we_reply_over_smtp_and_their_answer_threads_into_the_same_conversation() {
    let server = TestServer::start().await;
    let mailbox = mailbox(&server).await;
    stored(
        &server,
        &mailbox,
        &mail(
            "Maria Souza <Maria.Souza@gmail.com>",
            "first@mail.gmail.com",
            "Pricing for 50 seats",
            "",
            "Hi, what does it cost?\r\n\r\nMaria\r\n-- \r\nMaria Souza, Acme",
        ),
    )
    .await;
    let list = conversations(&server, &mailbox).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let conversation = list[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(list[0]["channel"], "email");
    assert_eq!(list[0]["contact"]["email"], "maria.souza@gmail.com");
    assert_eq!(list[0]["contact"]["name"], "Maria Souza");
    assert_eq!(list[0]["preview"], "Hi, what does it cost? Maria");
    let messages = server.messages(&mailbox.token, &conversation).await;
    assert_eq!(messages[0]["subject"], "Pricing for 50 seats");
    assert_eq!(messages[0]["text"], "Hi, what does it cost?\n\nMaria");
    assert!(messages[0]["full_text"]
        .as_str()
        .is_some_and(|t| t.contains("Maria Souza, Acme")));

    // Our reply leaves over SMTP, threaded in the lead's client.
    let sent = reply(
        &server,
        &mailbox,
        &conversation,
        "Hi {{first_name}}, 49 dollars a seat.",
    )
    .await;
    let received = next_mail(&mailbox.sink, 1).await;
    assert_eq!(received.to, vec!["maria.souza@gmail.com"]);
    assert_eq!(received.from, ADDRESS);
    assert_eq!(received.user.as_deref(), Some("sales"));
    let data = &received.data;
    assert_eq!(
        header(data, "Subject").as_deref(),
        Some("Re: Pricing for 50 seats")
    );
    assert_eq!(
        header(data, "In-Reply-To").as_deref(),
        Some("<first@mail.gmail.com>")
    );
    assert_eq!(
        header(data, "References").as_deref(),
        Some("<first@mail.gmail.com>")
    );
    assert!(header(data, "From").is_some_and(|f| f.contains("Agency Sales") && f.contains(ADDRESS)));
    let reply_to = header(data, "Reply-To").expect("Reply-To");
    assert!(reply_to.contains("sales+"), "{reply_to}");
    let our_id = header(data, "Message-ID").expect("Message-ID");
    assert!(String::from_utf8_lossy(data).contains("Hi Maria, 49 dollars a seat."));
    let sent_id = sent["id"].as_str().expect("id");
    let message = wait_for("the reply marked sent", || async {
        server
            .messages(&mailbox.token, &conversation)
            .await
            .into_iter()
            .find(|m| m["id"] == sent_id && m["delivery"] == "sent")
    })
    .await;
    assert_eq!(
        message["external_id"].as_str().map(|id| format!("<{id}>")),
        Some(our_id.clone())
    );

    // The lead answers in their client: In-Reply-To names our message.
    stored(
        &server,
        &mailbox,
        &mail(
            "Maria Souza <maria.souza@gmail.com>",
            "second@mail.gmail.com",
            "Re: Pricing for 50 seats",
            &format!("In-Reply-To: {our_id}\r\nReferences: <first@mail.gmail.com> {our_id}\r\n"),
            "Great, send the contract.\r\n\r\nOn Mon, 5 Jan 2026 at 11:00, Agency Sales wrote:\r\n> Hi Maria, 49 dollars a seat.",
        ),
    )
    .await;
    // Only the reply token (a new subject, no references): still the same conversation.
    let token_address = reply_to
        .rsplit('<')
        .next()
        .map(|a| a.trim_end_matches('>').to_owned())
        .expect("address");
    stored(
        &server,
        &mailbox,
        &format!(
            "From: maria.souza@gmail.com\r\nTo: {token_address}\r\nSubject: One more thing\r\n\
             Message-ID: <third@mail.gmail.com>\r\n\r\nCan we start Monday?\r\n"
        ),
    )
    .await;
    let list = conversations(&server, &mailbox).await;
    assert_eq!(list.len(), 1, "one conversation: {list:?}");
    let messages = server.messages(&mailbox.token, &conversation).await;
    let texts: Vec<&str> = messages.iter().filter_map(|m| m["text"].as_str()).collect();
    assert!(texts.contains(&"Great, send the contract."), "{texts:?}");
    assert!(texts.contains(&"Can we start Monday?"), "{texts:?}");

    // The next reply names the whole thread.
    reply(&server, &mailbox, &conversation, "Monday works.").await;
    let second = next_mail(&mailbox.sink, 2).await;
    assert_eq!(
        header(&second.data, "In-Reply-To").as_deref(),
        Some("<third@mail.gmail.com>")
    );
    let references = header(&second.data, "References").expect("References");
    for id in [
        "<first@mail.gmail.com>",
        our_id.as_str(),
        "<second@mail.gmail.com>",
        "<third@mail.gmail.com>",
    ] {
        assert!(references.contains(id), "{id} in {references}");
    }
    // A redelivered message stores nothing new.
    let (status, answer) = post_raw(
        &server,
        &mailbox,
        &format!(
            "From: maria.souza@gmail.com\r\nTo: {token_address}\r\nSubject: One more thing\r\n\
             Message-ID: <third@mail.gmail.com>\r\n\r\nCan we start Monday?\r\n"
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["duplicates"], 1, "{answer}");

    // Search finds mail by its subject, and the lead by address and name.
    for (q, field) in [
        ("pricing", "text"),
        ("maria.souza@gmail.com", "email"),
        ("Souza", "name"),
    ] {
        let hit = wait_for(&format!("a hit for {q}"), || async {
            let (status, page) = server
                .get(&mailbox.token, &format!("/api/v1/search?q={q}"))
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["items"]
                .as_array()
                .and_then(|items| items.iter().find(|i| i["field"] == field).cloned())
        })
        .await;
        assert_eq!(hit["conversation_id"], conversation.as_str(), "{q}: {hit}");
        assert_eq!(hit["channel"], "email");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn subjects_thread_one_sender_only_and_unsigned_mail_is_refused() {
    let server = TestServer::start().await;
    let mailbox = mailbox(&server).await;
    stored(
        &server,
        &mailbox,
        &mail(
            "a@lead.example",
            "a1@lead.example",
            "Demo request",
            "",
            "Hello",
        ),
    )
    .await;
    // Same sender, same subject after Re:, no headers: the same conversation.
    stored(
        &server,
        &mailbox,
        &mail(
            "a@lead.example",
            "a2@lead.example",
            "RE: Demo request",
            "",
            "Again",
        ),
    )
    .await;
    // Another sender with the same subject: never merged.
    stored(
        &server,
        &mailbox,
        &mail(
            "b@lead.example",
            "b1@lead.example",
            "Re: Demo request",
            "",
            "Me too",
        ),
    )
    .await;
    let list = conversations(&server, &mailbox).await;
    assert_eq!(list.len(), 2, "{list:?}");

    let raw = mail("c@lead.example", "c1@lead.example", "Unsigned", "", "x");
    let answer = server
        .http
        .post(server.url(&format!("/webhooks/email/{}", mailbox.channel_id)))
        .header("content-type", "message/rfc822")
        .header(
            email::SIGNATURE_HEADER,
            email::sign("wrong secret", raw.as_bytes()),
        )
        .body(raw.clone())
        .send()
        .await
        .expect("webhook");
    let (status, error) = status_json(answer).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"]["code"], "invalid_signature");
    let (status, error) = post_raw(&server, &mailbox, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, error) = post_raw(&server, &mailbox, "Subject: nobody\r\n\r\nx").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(
        conversations(&server, &mailbox).await.len(),
        2,
        "nothing stored"
    );

    // SendGrid's Inbound Parse form, the secret as the Basic password; the reply token only
    // in the envelope.
    let boundary = "xYzZY";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"envelope\"\r\n\r\n{{\"to\":[\"{ADDRESS}\"],\"from\":\"d@lead.example\"}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n{}\r\n--{boundary}--\r\n",
        mail("d@lead.example", "d1@lead.example", "Via SendGrid", "", "Hi from SendGrid")
    );
    let send_form = |password: &'static str| {
        let (http, url, form) = (
            server.http.clone(),
            server.url(&format!("/webhooks/email/{}", mailbox.channel_id)),
            form.clone(),
        );
        async move {
            let answer = http
                .post(url)
                .basic_auth("confab", Some(password))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(form)
                .send()
                .await
                .expect("form");
            status_json(answer).await
        }
    };
    assert_eq!(send_form("wrong").await.0, StatusCode::UNAUTHORIZED);
    let (status, answer) = send_form(SECRET).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["stored"], 1);
    let list = conversations(&server, &mailbox).await;
    assert!(
        list.iter()
            .any(|c| c["contact"]["email"] == "d@lead.example"),
        "{list:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn smtp_451_is_retried_once_sent_550_fails_and_a_bounce_fails_the_message() {
    let server = TestServer::start_with(|config| {
        config.channels.retry_base_ms = 20;
    })
    .await;
    let mailbox = mailbox(&server).await;
    stored(
        &server,
        &mailbox,
        &mail("lead@lead.example", "l1@lead.example", "Hello", "", "Hi"),
    )
    .await;
    let conversation = conversations(&server, &mailbox).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    mailbox.sink.script(&["451 4.3.0 Try again later"]);
    let first = reply(&server, &mailbox, &conversation, "First answer").await;
    next_mail(&mailbox.sink, 1).await;
    let first_id = first["id"].as_str().expect("id").to_owned();
    wait_for("the first answer sent", || async {
        server
            .messages(&mailbox.token, &conversation)
            .await
            .into_iter()
            .find(|m| m["id"] == first_id.as_str() && m["delivery"] == "sent")
    })
    .await;
    assert_eq!(mailbox.sink.received().len(), 1, "sent once");

    mailbox
        .sink
        .script(&["550 5.1.1 <lead@lead.example>: Recipient address rejected"]);
    let second = reply(&server, &mailbox, &conversation, "Second answer").await;
    let second_id = second["id"].as_str().expect("id").to_owned();
    let failed = wait_for("the second answer failed", || async {
        server
            .messages(&mailbox.token, &conversation)
            .await
            .into_iter()
            .find(|m| m["id"] == second_id.as_str() && m["delivery"] == "failed")
    })
    .await;
    assert!(
        failed["error"].as_str().is_some_and(|e| e.contains("550")),
        "{failed}"
    );

    // A bounce for the first answer, days later: it failed after all.
    let our_id = email::outbound_message_id(first_id.parse().expect("id"), ADDRESS);
    let bounce = format!(
        "From: MAILER-DAEMON@mx.example\r\nTo: {ADDRESS}\r\nSubject: Undelivered Mail\r\n\
         Message-ID: <bounce-1@mx.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n\
         Final-Recipient: rfc822; lead@lead.example\r\nAction: failed\r\nStatus: 5.2.2\r\n\
         Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n\r\n\
         --B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{our_id}>\r\n\r\n--B--\r\n"
    );
    let (status, answer) = post_raw(&server, &mailbox, &bounce).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["statuses"], 1, "{answer}");
    let bounced = wait_for("the bounce applied", || async {
        server
            .messages(&mailbox.token, &conversation)
            .await
            .into_iter()
            .find(|m| m["id"] == first_id.as_str() && m["delivery"] == "failed")
    })
    .await;
    assert!(
        bounced["error"]
            .as_str()
            .is_some_and(|e| e.contains("Mailbox full")),
        "{bounced}"
    );
    assert_eq!(
        server.messages(&mailbox.token, &conversation).await.len(),
        3,
        "the bounce is not a message"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_out_of_office_is_kept_but_never_answered_nor_reopens() {
    let server = TestServer::start().await;
    let mailbox = mailbox(&server).await;
    let (status, _) = server
        .put(
            &mailbox.token,
            "/api/v1/ai/config",
            json!({"enabled": true, "reply_delay_ms": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    stored(
        &server,
        &mailbox,
        &mail(
            "kim@doe.example",
            "k1@doe.example",
            "Your offer",
            "",
            "Tell me more",
        ),
    )
    .await;
    let conversation = conversations(&server, &mailbox).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let decided = |seq: u64| {
        let (server, token, conversation) = (&server, mailbox.token.clone(), conversation.clone());
        async move {
            let (status, view) = server
                .get(
                    &token,
                    &format!("/api/v1/conversations/{conversation}/messages/{seq}/reasoning"),
                )
                .await;
            status == StatusCode::OK && view["decisions"].as_array().is_some_and(|d| !d.is_empty())
        }
    };
    wait_for("the AI's decision on the lead's mail", || async {
        decided(1).await.then_some(())
    })
    .await;
    let (status, closed) = server
        .post(
            &mailbox.token,
            &format!("/api/v1/conversations/{conversation}/status"),
            json!({"status": "closed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    stored(
        &server,
        &mailbox,
        &mail(
            "kim@doe.example",
            "k2@doe.example",
            "Automatic reply: Your offer",
            "Auto-Submitted: auto-replied\r\nIn-Reply-To: <k1@doe.example>\r\n",
            "I am out of the office until Monday.",
        ),
    )
    .await;
    let messages = server.messages(&mailbox.token, &conversation).await;
    let ooo = messages
        .iter()
        .find(|m| m["external_id"] == "k2@doe.example")
        .expect("the auto-reply is stored")
        .clone();
    assert_eq!(ooo["auto_reply"], true);
    let (_, detail) = server
        .get(
            &mailbox.token,
            &format!("/api/v1/conversations/{conversation}"),
        )
        .await;
    assert_eq!(detail["status"], "closed", "an auto-reply does not reopen");
    // The lead's own next mail is decided on; the auto-reply before it never was.
    stored(
        &server,
        &mailbox,
        &mail(
            "kim@doe.example",
            "k3@doe.example",
            "Re: Your offer",
            "",
            "Back now: price?",
        ),
    )
    .await;
    let latest = server
        .messages(&mailbox.token, &conversation)
        .await
        .into_iter()
        .find(|m| m["external_id"] == "k3@doe.example")
        .expect("stored");
    let latest_seq = latest["seq"].as_u64().expect("seq");
    wait_for("the AI's decision on the lead's next mail", || async {
        decided(latest_seq).await.then_some(())
    })
    .await;
    assert!(
        !decided(ooo["seq"].as_u64().expect("seq")).await,
        "no AI decision on an auto-reply"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn attachments_are_stored_and_served_and_one_lead_on_two_channels_is_one_contact() {
    let server = TestServer::start().await;
    let mailbox = mailbox(&server).await;
    let raw = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/email/apple-attachment.eml"),
    )
    .expect("fixture");
    stored(&server, &mailbox, &raw).await;
    let conversation = conversations(&server, &mailbox).await[0].clone();
    let id = conversation["id"].as_str().expect("id");
    let message = server.messages(&mailbox.token, id).await[0].clone();
    assert_eq!(
        message["attachments"],
        json!([{"name": "Angebot März.pdf", "content_type": "application/pdf", "size": 28, "media_id": null}])
    );
    let answer = server
        .http
        .get(server.url(&format!(
            "/api/v1/conversations/{id}/messages/{}/attachments/0",
            message["seq"]
        )))
        .bearer_auth(&mailbox.token)
        .send()
        .await
        .expect("file");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["content-type"], "application/pdf");
    assert_eq!(
        &answer.bytes().await.expect("bytes")[..],
        b"%PDF-1.4 fake pdf for tests\n"
    );

    // The same person wrote on WhatsApp before; once the agent records their address, their
    // email lands on the same contact.
    let (status, whatsapp) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/channels", mailbox.workspace_id),
            json!({"kind": "whatsapp", "name": "WA", "phone_number_id": "555", "app_secret": "wa-secret",
                   "verify_token": "v", "access_token": "t"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{whatsapp}");
    let body = confab_engine::wire::whatsapp::inbound_text_webhook(
        "555",
        "5511987654321",
        "Lia Costa",
        "wamid.LIA",
        confab_engine::time::now_millis() / 1000,
        "Oi!",
    )
    .to_string();
    let answer = server
        .http
        .post(server.url(&format!(
            "/webhooks/whatsapp/{}",
            whatsapp["id"].as_str().expect("id")
        )))
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            confab_engine::wire::whatsapp::sign("wa-secret", body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(answer.status(), StatusCode::OK);
    let lia = conversations(&server, &mailbox)
        .await
        .into_iter()
        .find(|c| c["channel"] == "whatsapp")
        .expect("the WhatsApp conversation");
    let contact = lia["contact"]["id"].as_str().expect("contact").to_owned();
    let answer = server
        .http
        .patch(server.url(&format!("/api/v1/contacts/{contact}")))
        .bearer_auth(&mailbox.token)
        .json(&json!({"email": "lia.costa@example.com"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(answer.status(), StatusCode::OK);
    stored(
        &server,
        &mailbox,
        &mail(
            "Lia Costa <Lia.Costa@example.com>",
            "lia-1@example.com",
            "By email now",
            "",
            "Hi again",
        ),
    )
    .await;
    let by_email = conversations(&server, &mailbox)
        .await
        .into_iter()
        .find(|c| c["channel"] == "email" && c["contact"]["email"] == "lia.costa@example.com")
        .expect("the email conversation");
    assert_eq!(
        by_email["contact"]["id"],
        contact.as_str(),
        "one contact: {by_email}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn provisioning_refuses_plaintext_to_a_remote_server_and_incomplete_settings() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let path = format!("/api/v1/admin/workspaces/{}/channels", tenant.workspace_id);
    for (body, code) in [
        (
            json!({"kind": "email", "name": "x", "address": ADDRESS,
                   "smtp": {"host": "smtp.example.com", "port": 25, "security": "none"}}),
            "insecure_mail_server",
        ),
        (
            json!({"kind": "email", "name": "x", "address": ADDRESS}),
            "missing_field",
        ),
        (
            json!({"kind": "email", "name": "x", "address": "sales+x@agency.example",
                   "smtp": {"host": "127.0.0.1", "port": 25, "security": "none"}}),
            "invalid_email",
        ),
        (
            json!({"kind": "email", "name": "x", "address": ADDRESS, "access_token": "t",
                   "smtp": {"host": "127.0.0.1", "port": 25, "security": "none"}}),
            "invalid_value",
        ),
        (
            json!({"kind": "whatsapp", "name": "x", "phone_number_id": "1", "app_secret": "s",
                   "verify_token": "v", "access_token": "t", "daily_limit": 5}),
            "invalid_value",
        ),
        (
            json!({"kind": "email", "name": "x", "address": ADDRESS, "daily_limit": 0,
                   "smtp": {"host": "127.0.0.1", "port": 25, "security": "none"}}),
            "invalid_value",
        ),
    ] {
        let (status, error) = server.admin_post(&path, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(error["error"]["code"], code, "{body}");
    }
    server.shutdown().await;
}

/// A mailbox channel reading `dovecot` over IMAP (and sending to a fresh sink).
async fn imap_mailbox(
    server: &TestServer,
    dovecot: &crate::dovecot::Dovecot,
    password: &str,
) -> Mailbox {
    let sink = SmtpSink::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sink");
    let (status, ws) = server
        .admin_post("/api/v1/admin/workspaces", json!({"name": "IMAP Agency"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    let workspace_id = ws["id"].as_str().expect("id").to_owned();
    let (status, agent) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{workspace_id}/agents"),
            json!({"name": "Ivo Agent", "email": "ivo@agency.example", "role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let (status, channel) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{workspace_id}/channels"),
            json!({
                "kind": "email",
                "name": "Connected mailbox",
                "address": ADDRESS,
                "smtp": {"host": "127.0.0.1", "port": sink.addr.port(), "security": "none"},
                "imap": {"host": "127.0.0.1", "port": dovecot.port, "security": "none",
                         "username": crate::dovecot::USER, "password": password},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    assert_eq!(channel["imap"]["mailbox"], "INBOX");
    Mailbox {
        token: agent["token"].as_str().expect("token").to_owned(),
        channel_id: channel["id"].as_str().expect("id").to_owned(),
        workspace_id,
        sink,
    }
}

/// Every message of the workspace's conversations, by Message-ID (its `external_id`).
async fn stored_ids(server: &TestServer, mailbox: &Mailbox) -> Vec<String> {
    let mut ids = Vec::new();
    for conversation in conversations(server, mailbox).await {
        for message in server
            .messages(&mailbox.token, conversation["id"].as_str().expect("id"))
            .await
        {
            if let Some(id) = message["external_id"].as_str() {
                ids.push(id.to_owned());
            }
        }
    }
    ids.sort();
    ids
}

async fn wait_stored(server: &TestServer, mailbox: &Mailbox, expected: &[&str]) {
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let what = format!("exactly {expected:?} stored");
    wait_for(&what, || async {
        (stored_ids(server, mailbox).await == expected).then_some(())
    })
    .await;
}

fn dated(from: &str, id: &str, subject: &str, date: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: {ADDRESS}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: {date}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

#[tokio::test]
async fn a_connected_mailbox_is_read_over_imap_without_skipping_or_repeating_across_drops_restarts_and_renumbering(
) {
    let dovecot = crate::dovecot::Dovecot::start().await;
    // Mail from 40 days ago, there before the channel is connected.
    let old = confab_engine::time::now_millis() - 40 * confab_engine::port::DAY_MS;
    let old_date = time::OffsetDateTime::from_unix_timestamp(old / 1000)
        .expect("time")
        .format(&time::format_description::well_known::Rfc2822)
        .expect("rfc 2822");
    dovecot.deliver(&dated(
        "old@lead.example",
        "old-1@lead.example",
        "Last month",
        &old_date,
        "An old question",
    ));
    let server = TestServer::start_with(|config| {
        config.email.reconnect_ms = 50;
    })
    .await;
    let mailbox = imap_mailbox(&server, &dovecot, crate::dovecot::PASSWORD).await;
    wait_stored(&server, &mailbox, &["old-1@lead.example"]).await;

    // Live mail arrives through IDLE; the old conversation keeps its own time.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .expect("rfc 2822");
    // An agent's browser is subscribed: the message reaches it as a delta.
    let mut stream = crate::harness::StreamClient::connect(&server, &mailbox.token).await;
    stream.subscribe(None).await;
    let delivered = std::time::Instant::now();
    dovecot.deliver(&dated(
        "new@lead.example",
        "new-1@lead.example",
        "Today",
        &now,
        "A new question",
    ));
    stream
        .deltas_until(|d| {
            d["kind"] == "message_created" && d["message"]["external_id"] == "new-1@lead.example"
        })
        .await;
    eprintln!(
        "IMAP-delivered (doveadm save) to the stream's message_created: {:?}",
        delivered.elapsed()
    );
    stream.close().await;
    wait_stored(
        &server,
        &mailbox,
        &["new-1@lead.example", "old-1@lead.example"],
    )
    .await;
    let list = conversations(&server, &mailbox).await;
    assert_eq!(list[0]["contact"]["email"], "new@lead.example", "{list:?}");
    let old_activity =
        confab_engine::time::parse_rfc3339(list[1]["last_activity_at"].as_str().expect("time"))
            .expect("time");
    assert!(
        old_activity < confab_engine::time::now_millis() - 39 * confab_engine::port::DAY_MS,
        "imported mail does not rise to today: {}",
        list[1]
    );
    let old_message = &server
        .messages(&mailbox.token, list[1]["id"].as_str().expect("id"))
        .await[0];
    assert_eq!(
        confab_engine::time::parse_rfc3339(old_message["created_at"].as_str().expect("time"))
            .map(|t| t / 1000),
        Some(old / 1000)
    );

    // Our own sent copy in the mailbox is not a lead's message.
    dovecot.deliver(&dated(
        ADDRESS,
        "ours-1@agency.example",
        "Re: Today",
        &now,
        "our reply",
    ));
    // The server drops the connection: mail delivered meanwhile comes once.
    dovecot.kick();
    dovecot.deliver(&dated(
        "new@lead.example",
        "new-2@lead.example",
        "Re: Today",
        &now,
        "After the drop",
    ));
    wait_stored(
        &server,
        &mailbox,
        &[
            "new-1@lead.example",
            "new-2@lead.example",
            "old-1@lead.example",
        ],
    )
    .await;

    // Confab restarts while idling; mail delivered around it comes once.
    dovecot.deliver(&dated(
        "new@lead.example",
        "new-3@lead.example",
        "Re: Today",
        &now,
        "Around the restart",
    ));
    let server = server.restart().await;
    dovecot.deliver(&dated(
        "new@lead.example",
        "new-4@lead.example",
        "Re: Today",
        &now,
        "After the restart",
    ));
    wait_stored(
        &server,
        &mailbox,
        &[
            "new-1@lead.example",
            "new-2@lead.example",
            "new-3@lead.example",
            "new-4@lead.example",
            "old-1@lead.example",
        ],
    )
    .await;

    // The mailbox is renumbered: read anew, nothing doubled.
    dovecot.renumber(4242);
    dovecot.kick();
    dovecot.deliver(&dated(
        "new@lead.example",
        "new-5@lead.example",
        "Re: Today",
        &now,
        "Renumbered",
    ));
    wait_stored(
        &server,
        &mailbox,
        &[
            "new-1@lead.example",
            "new-2@lead.example",
            "new-3@lead.example",
            "new-4@lead.example",
            "new-5@lead.example",
            "old-1@lead.example",
        ],
    )
    .await;
    assert_eq!(conversations(&server, &mailbox).await.len(), 2);
    let (status, health) = server
        .get(
            &mailbox.token,
            &format!("/api/v1/channels/{}", mailbox.channel_id),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "connected", "{health}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_mailbox_password_shows_in_the_channels_health_until_it_is_rotated() {
    let dovecot = crate::dovecot::Dovecot::start().await;
    let server = TestServer::start().await;
    let mailbox = imap_mailbox(&server, &dovecot, "not the password").await;
    let health = wait_for("the mailbox's refusal in the health", || async {
        let (_, health) = server
            .get(
                &mailbox.token,
                &format!("/api/v1/channels/{}", mailbox.channel_id),
            )
            .await;
        (health["last_error"]["code"] == "imap_auth_failed").then_some(health)
    })
    .await;
    assert_eq!(health["status"], "degraded", "{health}");

    // Rotating the password reconnects at once; the mailbox is read.
    let path = format!(
        "/api/v1/admin/workspaces/{}/channels/{}",
        mailbox.workspace_id, mailbox.channel_id
    );
    let (status, wrong_kind) = server
        .admin_patch(&path, json!({"access_token": "a WhatsApp setting"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{wrong_kind}");
    let (status, channel) = server
        .admin_patch(
            &path,
            json!({"imap": {"host": "127.0.0.1", "port": dovecot.port, "security": "none",
                            "username": crate::dovecot::USER, "password": crate::dovecot::PASSWORD}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{channel}");
    assert!(!channel.to_string().contains(crate::dovecot::PASSWORD));
    dovecot.deliver(&mail(
        "late@lead.example",
        "late-1@lead.example",
        "Hello",
        "",
        "Now you can read me",
    ));
    wait_stored(&server, &mailbox, &["late-1@lead.example"]).await;
    let health = wait_for("the channel connected", || async {
        let (_, health) = server
            .get(
                &mailbox.token,
                &format!("/api/v1/channels/{}", mailbox.channel_id),
            )
            .await;
        (health["status"] == "connected").then_some(health)
    })
    .await;
    assert!(health["last_error"].is_null(), "{health}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_daily_limit_holds_mail_for_tomorrow() {
    let server = TestServer::start().await;
    let mailbox = mailbox(&server).await;
    let path = format!(
        "/api/v1/admin/workspaces/{}/channels/{}",
        mailbox.workspace_id, mailbox.channel_id
    );
    let (status, channel) = server
        .admin_patch(&path, json!({"limits": {"per_day": 1}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{channel}");
    stored(
        &server,
        &mailbox,
        &mail("lead@lead.example", "d1@lead.example", "Hello", "", "Hi"),
    )
    .await;
    let conversation = conversations(&server, &mailbox).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    reply(&server, &mailbox, &conversation, "First").await;
    next_mail(&mailbox.sink, 1).await;
    let second = reply(&server, &mailbox, &conversation, "Second").await;
    let second_id = second["id"].as_str().expect("id").to_owned();
    let held = wait_for("the second mail held by the daily limit", || async {
        server
            .messages(&mailbox.token, &conversation)
            .await
            .into_iter()
            .find(|m| m["id"] == second_id.as_str() && m["error"].as_str().is_some())
    })
    .await;
    assert_eq!(held["delivery"], "queued", "{held}");
    assert!(
        held["error"].as_str().is_some_and(|e| e.contains("daily")),
        "{held}"
    );
    let (_, health) = server
        .get(
            &mailbox.token,
            &format!("/api/v1/channels/{}", mailbox.channel_id),
        )
        .await;
    assert_eq!(health["limits"]["sent_today"], 1, "{health}");
    assert_eq!(
        mailbox.sink.received().len(),
        1,
        "the second waits for tomorrow"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_reply_carries_files_as_attachments_and_whatsapp_refuses_them() {
    let server = TestServer::start().await;
    let mailbox = mailbox(&server).await;
    stored(
        &server,
        &mailbox,
        &mail(
            "lead@lead.example",
            "f1@lead.example",
            "The offer",
            "",
            "Send it please",
        ),
    )
    .await;
    let conversation = conversations(&server, &mailbox).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/api/v1/conversations/{conversation}/messages");
    // "%PDF-1.4 our offer\n"
    let pdf = "JVBERi0xLjQgb3VyIG9mZmVyCg==";
    let (status, message) = server
        .post(
            &mailbox.token,
            &path,
            json!({"text": "Here it is.", "attachments": [
                {"name": "offer.pdf", "content_type": "application/pdf", "data": pdf}]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{message}");
    assert_eq!(
        message["attachments"],
        json!([{"name": "offer.pdf", "content_type": "application/pdf", "size": 19, "media_id": null}])
    );
    let sent = next_mail(&mailbox.sink, 1).await;
    let data = String::from_utf8_lossy(&sent.data).into_owned();
    assert!(data.contains("multipart/mixed"), "{data}");
    assert!(data.contains("filename=\"offer.pdf\""), "{data}");
    assert!(data.contains("Here it is."), "{data}");
    // The lead's mail client sees the file: our own parser reads it back.
    let parsed = email::parse(&sent.data, i64::MAX / 2).expect("parses");
    assert_eq!(parsed.files.len(), 1);
    assert_eq!(parsed.files[0].bytes, b"%PDF-1.4 our offer\n");
    let answer = server
        .http
        .get(server.url(&format!("{path}/{}/attachments/0", message["seq"])))
        .bearer_auth(&mailbox.token)
        .send()
        .await
        .expect("file");
    assert_eq!(
        &answer.bytes().await.expect("bytes")[..],
        b"%PDF-1.4 our offer\n"
    );

    for (body, code) in [
        (
            json!({"text": "x", "attachments": [{"name": "a.pdf", "data": "not base64!"}]}),
            "invalid_attachment",
        ),
        (
            json!({"text": "x", "attachments": [{"name": "a.pdf", "content_type": "pdf", "data": pdf}]}),
            "invalid_attachment",
        ),
    ] {
        let (status, error) = server.post(&mailbox.token, &path, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["error"]["code"], code);
    }

    // WhatsApp cannot send files from Confab yet: refused, nothing stored; a note keeps them.
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    server
        .lead_says(&tenant, "5511987650000", "Wanda", "wamid.F1", "Hi")
        .await;
    let wa = server.conversation_of(&tenant, "5511987650000").await;
    let wa_path = format!(
        "/api/v1/conversations/{}/messages",
        wa["id"].as_str().expect("id")
    );
    let with_file = |internal: bool| json!({"text": "file", "internal": internal, "attachments": [{"name": "a.pdf", "data": pdf}]});
    let (status, error) = server.post(&tenant.token, &wa_path, with_file(false)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["code"], "attachments_unsupported");
    let (status, note) = server.post(&tenant.token, &wa_path, with_file(true)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{note}");
    assert_eq!(note["attachments"][0]["name"], "a.pdf");
    assert!(graph.requests().is_empty(), "nothing sent to the lead");
    server.shutdown().await;
}

/// The lines of an export answer, parsed; asserts the 200 and the content type.
async fn export_lines(server: &TestServer, token: &str, path: &str) -> (String, Vec<Value>) {
    let answer = server
        .http
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("export");
    assert_eq!(answer.status(), StatusCode::OK, "{path}");
    assert_eq!(answer.headers()["content-type"], "application/x-ndjson");
    let text = answer.text().await.expect("body");
    let lines = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect();
    (text, lines)
}

#[tokio::test]
async fn a_contact_export_holds_its_messages_and_stored_files_and_nothing_of_other_leads() {
    use base64::Engine as _;

    let server = TestServer::start().await;
    let mailbox = mailbox(&server).await;
    let raw = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/email/apple-attachment.eml"),
    )
    .expect("fixture");
    stored(&server, &mailbox, &raw).await;
    stored(
        &server,
        &mailbox,
        &mail(
            "olga@other.example",
            "olga-1@other.example",
            "Hi",
            "",
            "olga's own private words",
        ),
    )
    .await;
    let conversation = conversations(&server, &mailbox)
        .await
        .into_iter()
        .find(|c| !c.to_string().contains("olga"))
        .expect("the lead with the file");
    let contact = conversation["contact"]["id"]
        .as_str()
        .expect("contact id")
        .to_string();

    let (text, lines) = export_lines(
        &server,
        &mailbox.token,
        &format!("/api/v1/contacts/{contact}/export"),
    )
    .await;
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        [
            "export",
            "contact",
            "conversation",
            "message",
            "attachment",
            "end"
        ]
    );
    assert_eq!(lines[0]["scope"], "contact");
    assert_eq!(lines[0]["contact_id"], contact.as_str());
    assert_eq!(lines[1]["contact"]["contact"]["id"], contact.as_str());
    assert_eq!(lines[2]["conversation"]["id"], conversation["id"]);
    let file = base64::engine::general_purpose::STANDARD
        .decode(lines[4]["data_base64"].as_str().expect("base64"))
        .expect("valid base64");
    assert_eq!(file, b"%PDF-1.4 fake pdf for tests\n");
    assert_eq!(lines[4]["name"], "Angebot März.pdf");
    assert_eq!(
        lines[5],
        json!({"type": "end", "contacts": 1, "conversations": 1, "messages": 1, "attachments": 1})
    );
    assert!(!text.contains("olga"), "another lead's data in the export");

    // The whole workspace: both leads.
    let (text, lines) = export_lines(&server, &mailbox.token, "/api/v1/export").await;
    assert!(text.contains("olga's own private words"));
    assert_eq!(
        lines.last().expect("end"),
        &json!({"type": "end", "contacts": 2, "conversations": 2, "messages": 2, "attachments": 1})
    );

    // Admins only; another workspace's contact is not found.
    let (status, agent) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/agents", mailbox.workspace_id),
            json!({"name": "Ivo Agent", "email": "ivo@agency.example", "role": "agent"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let plain = agent["token"].as_str().expect("token");
    for path in [
        "/api/v1/export".to_string(),
        format!("/api/v1/contacts/{contact}/export"),
    ] {
        let (status, refused) = server.get(plain, &path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {refused}");
        assert_eq!(refused["error"]["code"], "admin_only");
    }
    let other = mailbox_named(&server, "Other Agency").await;
    let (status, _) = server
        .get(&other, &format!("/api/v1/contacts/{contact}/export"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await;
}

/// An admin token of a new, empty workspace.
async fn mailbox_named(server: &TestServer, name: &str) -> String {
    let (_, ws) = server
        .admin_post("/api/v1/admin/workspaces", json!({"name": name}))
        .await;
    let (status, agent) = server
        .admin_post(
            &format!(
                "/api/v1/admin/workspaces/{}/agents",
                ws["id"].as_str().expect("id")
            ),
            json!({"name": "Other Admin", "email": "admin@other.example", "role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    agent["token"].as_str().expect("token").to_string()
}

/// Posts a signed WhatsApp text from `wa_id` to the channel `channel` (secret
/// `wa-secret`, phone number id 555); asserts the 200.
async fn whatsapp_says(server: &TestServer, channel: &str, wa_id: &str, wamid: &str, text: &str) {
    let body = confab_engine::wire::whatsapp::inbound_text_webhook(
        "555",
        wa_id,
        "Lia Costa",
        wamid,
        confab_engine::time::now_millis() / 1000,
        text,
    )
    .to_string();
    let answer = server
        .http
        .post(server.url(&format!("/webhooks/whatsapp/{channel}")))
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            confab_engine::wire::whatsapp::sign("wa-secret", body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(answer.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_erased_lead_on_two_channels_is_gone_from_the_inbox_search_stream_and_later_backups() {
    let server = TestServer::start().await;
    let mailbox = mailbox(&server).await;
    let (status, whatsapp) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/channels", mailbox.workspace_id),
            json!({"kind": "whatsapp", "name": "WA", "phone_number_id": "555", "app_secret": "wa-secret",
                   "verify_token": "v", "access_token": "t"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{whatsapp}");
    let wa_channel = whatsapp["id"].as_str().expect("id").to_string();
    // Lia writes on WhatsApp, the agent records her email, she writes by email with a file.
    whatsapp_says(
        &server,
        &wa_channel,
        "5511987654321",
        "wamid.LIA",
        "Oi! Is the Quixaba duplex free?",
    )
    .await;
    let lia = conversations(&server, &mailbox).await[0].clone();
    let contact = lia["contact"]["id"].as_str().expect("contact").to_owned();
    let (status, _) = server
        .patch_json(
            &mailbox.token,
            &format!("/api/v1/contacts/{contact}"),
            json!({"email": "lia.costa@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let raw = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/email/apple-attachment.eml"),
    )
    .expect("fixture")
    .replace(
        "Ana Lima <ana@lima.example>",
        "Lia Costa <lia.costa@example.com>",
    );
    assert!(
        raw.contains("lia.costa@example.com"),
        "the fixture's sender was replaced"
    );
    stored(&server, &mailbox, &raw).await;
    stored(
        &server,
        &mailbox,
        &mail(
            "Lia Costa <lia.costa@example.com>",
            "lia-2@example.com",
            "Re: Signed offer",
            "In-Reply-To: <5A1B2C3D-0000-4000-8000-000000000002@lima.example>\r\n",
            "my code is zebrafish42",
        ),
    )
    .await;
    // Another lead stays.
    stored(
        &server,
        &mailbox,
        &mail(
            "olga@other.example",
            "olga-1@other.example",
            "Hi",
            "",
            "olga asks about the penthouse",
        ),
    )
    .await;
    let lia_conversations: Vec<Value> = conversations(&server, &mailbox)
        .await
        .into_iter()
        .filter(|c| c["contact"]["id"] == contact.as_str())
        .collect();
    // WhatsApp and email (the two mails may or may not share a thread).
    assert!(
        lia_conversations.len() >= 2,
        "one contact on two channels: {lia_conversations:?}"
    );
    let lia_strings = [
        "Quixaba",
        "zebrafish42",
        "Lia Costa",
        "lia.costa@example.com",
        "5511987654321",
        "fake pdf for tests",
    ];
    wait_for("Lia's words are searchable", || async {
        let (_, page) = server
            .get(&mailbox.token, "/api/v1/search?q=zebrafish42")
            .await;
        (page["items"].as_array().is_some_and(|i| !i.is_empty())).then_some(())
    })
    .await;

    // Only with erase=true, only by an admin.
    let (status, refused) = server
        .delete(&mailbox.token, &format!("/api/v1/contacts/{contact}"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "erase_required");
    let (_, plain) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/agents", mailbox.workspace_id),
            json!({"name": "Ivo Agent", "email": "ivo@agency.example", "role": "agent"}),
        )
        .await;
    let (status, _) = server
        .delete(
            plain["token"].as_str().expect("token"),
            &format!("/api/v1/contacts/{contact}?erase=true"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // An open inbox hears of each conversation's removal.
    let lia_ids: HashSet<String> = lia_conversations
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect();
    let mut live = crate::harness::StreamClient::connect(&server, &mailbox.token).await;
    live.subscribe(None).await;
    let (status, erasure) = server
        .delete(
            &mailbox.token,
            &format!("/api/v1/contacts/{contact}?erase=true"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{erasure}");
    let id = erasure["id"].as_str().expect("erasure id").to_string();
    let mut announced = HashSet::new();
    while announced.len() < lia_ids.len() {
        let delta = live.next_of("delta").await;
        if delta["kind"] == "conversation_removed" {
            let of = delta["conversation_id"].as_str().expect("conversation_id");
            assert!(lia_ids.contains(of), "{delta}");
            assert!(announced.insert(of.to_string()), "announced twice: {delta}");
        }
    }
    live.close().await;
    let done = wait_for("the erasure completes", || async {
        let (_, erasure) = server
            .get(&mailbox.token, &format!("/api/v1/erasures/{id}"))
            .await;
        (erasure["status"] == "completed").then_some(erasure)
    })
    .await;
    assert_eq!(
        done["erased"]["conversations"],
        lia_conversations.len(),
        "{done}"
    );
    assert_eq!(done["erased"]["messages"], 3, "{done}");
    assert_eq!(done["erased"]["files"], 1, "{done}");
    assert!(
        done["erased"]["deltas"].as_u64().expect("deltas") > 0,
        "{done}"
    );
    assert_eq!(done["contact_id"], contact.as_str());
    let (_, audit) = server.get(&mailbox.token, "/api/v1/erasures").await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
    for needle in lia_strings {
        assert!(
            !audit.to_string().contains(needle),
            "the audit holds {needle}: {audit}"
        );
    }

    // The inbox, the contact and search know nothing of her.
    let (status, _) = server
        .get(&mailbox.token, &format!("/api/v1/contacts/{contact}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let left = conversations(&server, &mailbox).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].to_string().contains("olga"));
    for q in [
        "Quixaba",
        "zebrafish42",
        "Lia",
        "lia.costa@example.com",
        "5511987654321",
        "Angebot",
    ] {
        let (status, page) = server
            .get(
                &mailbox.token,
                &format!("/api/v1/search?q={}", q.replace('@', "%40")),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["items"], json!([]), "search for {q}: {page}");
    }
    let (_, counts) = server
        .get(&mailbox.token, "/api/v1/conversations/counts")
        .await;
    assert_eq!(counts["all"], 1, "{counts}");
    // Not only hidden: the index itself holds no document of hers (the API drops hits of
    // conversations it cannot find, so ask the index directly).
    for word in ["quixaba", "zebrafish42", "lia", "angebot"] {
        let hits = server.index_hits(&mailbox.workspace_id, word).await;
        assert_eq!(hits, (0, 0), "the index still holds {word}");
    }

    // A replay of the stream from the start holds none of it.
    stored(
        &server,
        &mailbox,
        &mail(
            "olga@other.example",
            "olga-2@other.example",
            "Hi",
            "",
            "olga again",
        ),
    )
    .await;
    let mut stream = crate::harness::StreamClient::connect(&server, &mailbox.token).await;
    let head = stream.subscribe(Some(0)).await;
    let replay = stream
        .deltas_until(|d| d["offset"].as_u64() == Some(head))
        .await;
    // Of her conversations only their removal: ids, nothing of what they held.
    let about_her: Vec<&Value> = replay
        .iter()
        .filter(|d| {
            d["conversation_id"]
                .as_str()
                .is_some_and(|c| lia_ids.contains(c))
        })
        .collect();
    assert_eq!(about_her.len(), lia_ids.len(), "{about_her:?}");
    assert!(
        about_her
            .iter()
            .all(|d| d["kind"] == "conversation_removed"),
        "{about_her:?}"
    );
    let replay = serde_json::to_string(&replay).expect("json");
    assert!(replay.contains("olga again"));
    for needle in lia_strings {
        assert!(!replay.contains(needle), "the stream replays {needle}");
    }

    // Nor does a backup made afterwards.
    let dir = tempfile::tempdir().expect("dir");
    let to = dir.path().join("backup");
    let (status, answer) = server
        .admin_post(
            "/api/v1/admin/backups",
            json!({"to": to.display().to_string()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let mut scanned = 0;
    for file in std::fs::read_dir(&to).expect("backup dir") {
        let bytes = std::fs::read(file.expect("entry").path()).expect("read");
        scanned += bytes.len();
        for needle in lia_strings {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "the backup holds {needle}"
            );
        }
    }
    assert!(scanned > 0);
    server.shutdown().await;
}
