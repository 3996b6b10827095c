//! The web inbox in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (`chromedriver`), against the real server on port 0 with the Graph API stand-in. Each
//! test has its own browser profile; nothing is mocked on our side.
//!
//! `CONFAB_SCREENSHOTS=DIR` saves a screenshot of each pane to DIR (for reviews).

use std::process::Stdio;
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{many_leads, wait_for, GraphStandIn, Tenant, TestServer};

const PASSWORD: &str = "correct horse battery";
const ENTER: char = '\u{E007}';
const ESCAPE: char = '\u{E00C}';
const ARROW_DOWN: char = '\u{E015}';
const TAB: char = '\u{E004}';

/// A headless Chromium with its own WebDriver server and profile.
struct Browser {
    client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        // Under a loaded machine chromedriver has been seen to exit before it listens: a
        // new one is started (three tries), and what it said is shown if none comes up.
        let mut said = Vec::new();
        let mut started = None;
        for _ in 0..3 {
            let mut driver = Command::new(
                std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()),
            )
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) must be installed");
            let stdout = driver.stdout.take().expect("stdout");
            let mut lines = BufReader::new(stdout).lines();
            let port = tokio::time::timeout(Duration::from_secs(20), async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(rest) = line.split("started successfully on port ").nth(1) {
                        return rest.trim_end_matches('.').trim().parse::<u16>().ok();
                    }
                    said.push(line);
                }
                None
            })
            .await
            .ok()
            .flatten();
            if let Some(port) = port {
                started = Some((driver, lines, port));
                break;
            }
        }
        let (driver, mut lines, port) =
            started.unwrap_or_else(|| panic!("chromedriver did not start: {said:?}"));
        // Keep reading its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage", "--window-size=1440,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Browser {
            client,
            driver,
            profile,
        }
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }

    /// The first element with this `data-testid`, once it exists.
    async fn find(&self, testid: &str) -> Element {
        self.wait(&format!("[data-testid=\"{testid}\"]")).await
    }

    async fn wait(&self, css: &str) -> Element {
        wait_for(&format!("`{css}` on the page"), || async {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await
    }

    async fn all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
    }

    /// Waits until the page's text inside `css` contains `text`.
    async fn wait_text(&self, css: &str, text: &str) {
        wait_for(&format!("\"{text}\" in `{css}`"), || async {
            for element in self.all(css).await {
                if element.text().await.is_ok_and(|t| t.contains(text)) {
                    return Some(());
                }
            }
            None
        })
        .await
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.attr(name).await.ok().flatten()
    }

    /// Types keys into whatever has the focus (page shortcuts).
    async fn keys(&self, keys: &str) {
        let mut actions = KeyActions::new("keyboard".into());
        for key in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        self.client
            .perform_actions(actions)
            .await
            .expect("key actions");
    }

    /// Sets the value of the field `testid` as typing would (an `input` event follows), so
    /// that what was in it goes whatever the keyboard layout.
    async fn set_value(&self, testid: &str, value: &str) {
        self.find(testid).await;
        self.client
            .execute(
                "const el = document.querySelector(`[data-testid=\"${arguments[0]}\"]`); \
                 el.value = arguments[1]; el.dispatchEvent(new Event('input', { bubbles: true }));",
                vec![json!(testid), json!(value)],
            )
            .await
            .expect("set a field's value");
    }

    /// Types `text` into the composer and sends it.
    async fn compose_and_send(&self, text: &str) {
        self.find("composer-input")
            .await
            .send_keys(text)
            .await
            .expect("type");
        self.find("composer-send")
            .await
            .click()
            .await
            .expect("send");
    }

    async fn screenshot(&self, name: &str) {
        if let Ok(dir) = std::env::var("CONFAB_SCREENSHOTS") {
            let png = self.client.screenshot().await.expect("screenshot");
            std::fs::write(format!("{dir}/{name}.png"), png).expect("write screenshot");
        }
    }

    async fn sign_in(&self, server: &TestServer, email: &str, password: &str) {
        self.client.goto(&server.url("/")).await.expect("open");
        self.find("signin-email")
            .await
            .send_keys(email)
            .await
            .expect("email");
        self.find("signin-password")
            .await
            .send_keys(password)
            .await
            .expect("password");
        self.find("signin-submit")
            .await
            .click()
            .await
            .expect("submit");
        self.find("conversation-list").await;
    }
}

impl Drop for Browser {
    /// However the test ends (a failed assertion included), no browser process outlives
    /// it: Chromium's processes are found by their profile directory, unique to this test.
    fn drop(&mut self) {
        let _ = self.driver.start_kill();
        let _ = std::process::Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .status();
    }
}

async fn set_password(server: &TestServer, token: &str, agent_id: &str) {
    let (status, body) = server
        .put(
            token,
            &format!("/api/v1/agents/{agent_id}/password"),
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(status.as_u16(), 204, "{body}");
}

async fn setup() -> (TestServer, GraphStandIn, Tenant) {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    set_password(&server, &tenant.token, &tenant.agent_id).await;
    (server, graph, tenant)
}

fn row(id: &str) -> String {
    format!("[data-testid=\"conversation-row\"][data-id=\"{id}\"]")
}

async fn conversation_id(server: &TestServer, tenant: &Tenant, wa_id: &str) -> String {
    server.conversation_of(tenant, wa_id).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

#[tokio::test]
async fn signing_in_shows_the_inbox_live_and_a_reply_reaches_the_lead() {
    let (server, graph, tenant) = setup().await;
    server
        .lead_says(
            &tenant,
            "5511900000901",
            "Caio Prado",
            "wamid.B1",
            "Hello there",
        )
        .await;
    let first = conversation_id(&server, &tenant, "5511900000901").await;
    let browser = Browser::start().await;

    // A wrong password is refused with the server's message; the right one signs in.
    browser.client.goto(&server.url("/")).await.expect("open");
    browser
        .find("signin-email")
        .await
        .send_keys("ana@acme.test")
        .await
        .expect("email");
    browser
        .find("signin-password")
        .await
        .send_keys("not the password")
        .await
        .expect("password");
    browser
        .find("signin-submit")
        .await
        .click()
        .await
        .expect("submit");
    browser
        .wait_text("[data-testid=\"signin-error\"]", "Wrong email or password")
        .await;
    browser.sign_in(&server, "ANA@acme.test", PASSWORD).await;
    browser.wait(&row(&first)).await;
    browser.wait_text(&row(&first), "Caio Prado").await;
    // The session cookie is out of the page's reach.
    let cookies = browser
        .client
        .execute("return document.cookie", vec![])
        .await
        .expect("script");
    assert!(
        !cookies
            .as_str()
            .unwrap_or_default()
            .contains("confab_session"),
        "HttpOnly: {cookies}"
    );

    // A new lead appears in the list without a reload.
    server
        .lead_says(
            &tenant,
            "5511900000902",
            "Bia Souza",
            "wamid.B2",
            "Oi, tudo bem?",
        )
        .await;
    let second = conversation_id(&server, &tenant, "5511900000902").await;
    browser.wait_text(&row(&second), "Oi, tudo bem?").await;

    // Open the first; the lead writes again and the chat shows it live.
    browser
        .wait(&row(&first))
        .await
        .click()
        .await
        .expect("open");
    browser
        .wait_text(
            "[data-testid=\"message\"][data-kind=\"lead\"]",
            "Hello there",
        )
        .await;
    server
        .lead_says(
            &tenant,
            "5511900000901",
            "Caio Prado",
            "wamid.B3",
            "Are you there?",
        )
        .await;
    browser
        .wait_text(
            "[data-testid=\"message\"][data-kind=\"lead\"]",
            "Are you there?",
        )
        .await;
    browser.screenshot("inbox-chat").await;

    // A reply with a variable: the provider stand-in receives it filled in.
    browser
        .compose_and_send("Hi {{first_name}}, how can I help?")
        .await;
    let sent = graph.wait_requests(1).await;
    assert_eq!(sent[0].body["text"]["body"], "Hi Caio, how can I help?");
    browser
        .wait_text(
            "[data-testid=\"message\"][data-kind=\"agent\"]",
            "Hi Caio, how can I help?",
        )
        .await;

    // An unknown variable is refused with the server's error, and nothing is sent.
    browser.compose_and_send("Your {{favourite_colour}}").await;
    browser
        .wait_text("[data-testid=\"composer-error\"]", "favourite_colour")
        .await;
    assert_eq!(graph.requests().len(), 1);

    // A canned reply, added on its settings screen (a taken shortcut is refused with the
    // server's message); then `/` and the start of its shortcut open the composer's picker,
    // Enter puts its text in, and it is filled like any reply when sent.
    let (status, taken) = server
        .post(
            &tenant.token,
            "/api/v1/canned-replies",
            json!({"title": "Prices", "shortcut": "price", "text": "From 49 dollars."}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{taken}");
    browser.find("user-menu").await.click().await.expect("menu");
    browser
        .find("nav-canned")
        .await
        .click()
        .await
        .expect("canned");
    browser
        .wait_text("[data-testid=\"canned-item\"]", "/price")
        .await;
    for (testid, text) in [
        ("canned-title", "Visit"),
        ("canned-shortcut", "PRICE"),
        ("canned-text", "Hi {{first_name}}, when could you visit?"),
    ] {
        browser
            .find(testid)
            .await
            .send_keys(text)
            .await
            .expect("type");
    }
    browser
        .find("canned-save")
        .await
        .click()
        .await
        .expect("save");
    browser
        .wait_text("[data-testid=\"canned-error\"]", "shortcut")
        .await;
    browser.set_value("canned-shortcut", "visit").await;
    browser
        .find("canned-save")
        .await
        .click()
        .await
        .expect("save");
    browser
        .wait_text("[data-testid=\"canned-item\"]", "/visit")
        .await;
    browser.screenshot("canned-replies").await;
    browser
        .find("nav-conversations")
        .await
        .click()
        .await
        .expect("inbox");
    browser
        .wait(&row(&first))
        .await
        .click()
        .await
        .expect("open");
    browser.find("composer-input").await;
    let composer_value = "return document.querySelector('[data-testid=\"composer-input\"]').value";
    browser.set_value("composer-input", "").await;
    let input = browser.find("composer-input").await;
    input.send_keys("/vis").await.expect("type");
    browser
        .wait_text("[data-testid=\"canned-option\"]", "/visit")
        .await;
    input.send_keys(&ENTER.to_string()).await.expect("pick");
    wait_for("the canned reply in the composer", || async {
        let value = browser.client.execute(composer_value, vec![]).await.ok()?;
        (value == "Hi {{first_name}}, when could you visit?").then_some(())
    })
    .await;
    assert!(browser
        .all("[data-testid=\"canned-list\"]")
        .await
        .is_empty());
    browser
        .find("composer-send")
        .await
        .click()
        .await
        .expect("send");
    let sent = graph.wait_requests(2).await;
    assert_eq!(
        sent[1].body["text"]["body"],
        "Hi Caio, when could you visit?"
    );

    // Erasing the lead (an admin, elsewhere) takes the open conversation away at once; the
    // other lead stays.
    let contact = server.conversation_of(&tenant, "5511900000901").await["contact"]["id"]
        .as_str()
        .expect("contact")
        .to_owned();
    let (status, erasure) = server
        .delete(
            &tenant.token,
            &format!("/api/v1/contacts/{contact}?erase=true"),
        )
        .await;
    assert_eq!(status.as_u16(), 202, "{erasure}");
    browser
        .wait_text("[data-testid=\"toast\"]", "This conversation was erased")
        .await;
    wait_for("the erased conversation leaves the page", || async {
        (browser.all(&row(&first)).await.is_empty()
            && browser.all("[data-testid=\"chat\"]").await.is_empty())
        .then_some(())
    })
    .await;
    browser.wait_text(&row(&second), "Oi, tudo bem?").await;

    // Signing out ends the session on the server: the old cookie no longer works.
    browser.find("user-menu").await.click().await.expect("menu");
    browser
        .find("btn-signout")
        .await
        .click()
        .await
        .expect("sign out");
    browser.find("signin-form").await;
    let (status, _) = server.get(&tenant.token, "/api/v1/me").await;
    assert_eq!(status.as_u16(), 200, "the token still works");
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_mention_notifies_the_other_agent_and_the_details_panel_changes_the_conversation() {
    let (server, _graph, tenant) = setup().await;
    server.enable_ai_later(&tenant).await;
    let (status, bea) = server
        .post(
            &tenant.token,
            "/api/v1/agents",
            json!({"name": "Bea Costa", "email": "bea@acme.test", "role": "agent"}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{bea}");
    let bea_id = bea["id"].as_str().expect("id").to_string();
    let bea_token = bea["token"].as_str().expect("token").to_string();
    set_password(&server, &tenant.token, &bea_id).await;
    server
        .lead_says(
            &tenant,
            "5511900000911",
            "Davi Lima",
            "wamid.M1",
            "I need a quote",
        )
        .await;
    let id = conversation_id(&server, &tenant, "5511900000911").await;

    let ana = Browser::start().await;
    let other = Browser::start().await;
    ana.sign_in(&server, "ana@acme.test", PASSWORD).await;
    other.sign_in(&server, "bea@acme.test", PASSWORD).await;
    other.find("connection-status").await;
    wait_for("Bea's stream to be live", || async {
        (other
            .attr("[data-testid=\"connection-status\"]", "data-state")
            .await
            .as_deref()
            == Some("live"))
        .then_some(())
    })
    .await;

    ana.wait(&row(&id)).await.click().await.expect("open");
    ana.find("chat").await;
    // A note with a mention picked from the autocomplete.
    ana.find("composer-mode-note")
        .await
        .click()
        .await
        .expect("note mode");
    let input = ana.find("composer-input").await;
    input
        .send_keys("Can you take this, @Be")
        .await
        .expect("type");
    ana.find("mention-option").await;
    ana.wait_text("[data-testid=\"mention-option\"]", "Bea Costa")
        .await;
    input.send_keys(&ENTER.to_string()).await.expect("pick");
    input.send_keys("?").await.expect("type");
    ana.find("composer-send").await.click().await.expect("send");
    ana.wait_text(
        "[data-testid=\"message\"][data-kind=\"note\"]",
        "@Bea Costa",
    )
    .await;
    // Bea is notified live, in her own browser.
    other
        .wait_text("[data-testid=\"notifications-count\"]", "1")
        .await;
    other
        .wait_text("[data-testid=\"toast\"]", "Davi Lima")
        .await;

    // Take over, then resume the AI.
    ana.find("btn-take-over")
        .await
        .click()
        .await
        .expect("take over");
    wait_for("the AI paused", || async {
        let (_, c) = server
            .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
            .await;
        (c["ai_mode"] == "paused" && c["assignee_id"] == tenant.agent_id).then_some(())
    })
    .await;
    ana.find("btn-resume-ai")
        .await
        .click()
        .await
        .expect("resume");
    wait_for("the AI active again", || async {
        let (_, c) = server
            .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
            .await;
        (c["ai_mode"] == "active").then_some(())
    })
    .await;

    // Snooze until tomorrow morning from the menu: the conversation leaves the working
    // views and waits in Snoozed, chip and note saying until when; Unsnooze brings it back.
    ana.find("btn-snooze")
        .await
        .click()
        .await
        .expect("snooze menu");
    ana.find("snooze-tomorrow")
        .await
        .click()
        .await
        .expect("tomorrow");
    let snoozed: Value = wait_for("snoozed on the server", || async {
        let (_, c) = server
            .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
            .await;
        (c["status"] == "pending" && c["snoozed_until"].is_string()).then_some(c)
    })
    .await;
    let until =
        confab_engine::time::parse_rfc3339(snoozed["snoozed_until"].as_str().expect("time"))
            .expect("RFC 3339");
    let ahead = until - confab_engine::time::now_millis();
    assert!(
        ahead > 0 && ahead <= 34 * 3_600_000,
        "tomorrow 9:00 local: {snoozed}"
    );
    wait_for("the row out of All", || async {
        ana.all(&row(&id)).await.is_empty().then_some(())
    })
    .await;
    ana.find("filter-snoozed")
        .await
        .click()
        .await
        .expect("Snoozed view");
    ana.wait(&format!("{} [data-testid=\"snoozed-chip\"]", row(&id)))
        .await;
    ana.wait_text("[data-testid=\"snoozed-note\"]", "Snoozed until")
        .await;
    ana.wait_text("[data-testid=\"count-snoozed\"]", "1").await;
    ana.screenshot("snoozed").await;
    ana.find("btn-unsnooze")
        .await
        .click()
        .await
        .expect("unsnooze");
    wait_for("unsnoozed on the server, and out of Snoozed", || async {
        let (_, c) = server
            .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
            .await;
        (c["status"] == "open"
            && c["snoozed_until"].is_null()
            && ana.all(&row(&id)).await.is_empty())
        .then_some(())
    })
    .await;
    ana.find("filter-all")
        .await
        .click()
        .await
        .expect("All view");
    ana.wait(&row(&id)).await;

    // Assign to Bea, tag, close: from the details panel.
    ana.find("assignee-select")
        .await
        .select_by_value(&bea_id)
        .await
        .expect("assign");
    let tag = ana.find("tag-input").await;
    tag.send_keys("hot-lead").await.expect("tag");
    tag.send_keys(&ENTER.to_string()).await.expect("add tag");
    ana.wait_text("[data-testid=\"tag\"]", "hot-lead").await;
    ana.screenshot("details-panel").await;
    ana.find("btn-close").await.click().await.expect("close");
    let closed: Value = wait_for("assigned, tagged and closed", || async {
        let (_, c) = server
            .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
            .await;
        (c["status"] == "closed" && c["assignee_id"] == bea_id.as_str()).then_some(c)
    })
    .await;
    assert_eq!(closed["tags"], json!(["hot-lead"]));
    // The details panel's activity names who did each of it.
    ana.wait_text("[data-testid=\"activity-item\"]", "Ana Agent closed it")
        .await;
    ana.wait_text("[data-testid=\"activity-item\"]", "tagged it hot-lead")
        .await;
    ana.wait_text(
        "[data-testid=\"activity-item\"]",
        "assigned it to Bea Costa",
    )
    .await;
    // Bea sees the assignment arrive too.
    other
        .wait_text("[data-testid=\"notifications-count\"]", "2")
        .await;
    // Her bell lists both, as the server stored them; "Mark all read" clears them.
    other
        .find("notifications-bell")
        .await
        .click()
        .await
        .expect("bell");
    other
        .wait_text(
            "[data-testid=\"notification-item\"]",
            "Ana Agent assigned you Davi Lima",
        )
        .await;
    other
        .wait_text(
            "[data-testid=\"notification-item\"]",
            "Ana Agent mentioned you in Davi Lima",
        )
        .await;
    assert_eq!(
        other
            .all("[data-testid=\"notification-item\"][data-unread=\"true\"]")
            .await
            .len(),
        2
    );
    other
        .find("notifications-mark-all")
        .await
        .click()
        .await
        .expect("mark all read");
    wait_for("Bea's notifications read, and her badge gone", || async {
        let (_, page) = server.get(&bea_token, "/api/v1/me/notifications").await;
        let badge = other.all("[data-testid=\"notifications-count\"]").await;
        (page["unread_count"] == 0 && badge.is_empty()).then_some(())
    })
    .await;
    // Settings → Notifications: Bea turns off pushes for mentions, saves, and the server
    // has it.
    other
        .client
        .goto(&server.url("/#/settings/notifications"))
        .await
        .expect("settings page");
    other.find("notification-settings").await;
    let push = other.find("notif-mention-push").await;
    wait_for("the stored settings shown", || async {
        push.prop("checked")
            .await
            .ok()
            .flatten()
            .filter(|v| v == "true")
    })
    .await;
    push.click().await.expect("uncheck");
    other
        .find("notification-settings-save")
        .await
        .click()
        .await
        .expect("save");
    wait_for("Bea's mention pushes off on the server", || async {
        let (_, settings) = server
            .get(&bea_token, "/api/v1/me/notification-settings")
            .await;
        (settings["events"]["mention"]["push"] == false
            && settings["events"]["mention"]["in_app"] == true)
            .then_some(())
    })
    .await;
    ana.close().await;
    other.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn filters_search_shortcuts_reasoning_and_a_reconnect_after_a_restart() {
    let (server, _graph, tenant) = setup().await;
    let (status, config) = server
        .put(
            &tenant.token,
            "/api/v1/ai/config",
            json!({"enabled": true, "reply_delay_ms": 0}),
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{config}");
    let (status, _) = server
        .post(
            &tenant.token,
            "/api/v1/kb/articles",
            json!({"title": "Pricing", "body": "The Pro plan costs 49 dollars per month."}),
        )
        .await;
    assert_eq!(status.as_u16(), 201);
    server
        .lead_says(
            &tenant,
            "5511900000921",
            "Elis Regina",
            "wamid.S1",
            "How much does the Pro plan cost per month?",
        )
        .await;
    server
        .lead_says(
            &tenant,
            "5511900000922",
            "Fabio Junior",
            "wamid.S2",
            "Quero cancelar",
        )
        .await;
    let elis = conversation_id(&server, &tenant, "5511900000921").await;
    let fabio = conversation_id(&server, &tenant, "5511900000922").await;
    wait_for("the AI's answer", || async {
        server
            .messages(&tenant.token, &elis)
            .await
            .into_iter()
            .find(|m| m["sender"] == "ai")
    })
    .await;

    let browser = Browser::start().await;
    browser.sign_in(&server, "ana@acme.test", PASSWORD).await;
    browser.wait(&row(&elis)).await;
    browser.wait(&row(&fabio)).await;
    wait_for("exact counts", || async {
        (browser
            .attr("[data-testid=\"count-all\"]", "data-count")
            .await
            .as_deref()
            == Some("2"))
        .then_some(())
    })
    .await;

    // Quick filters: nothing is closed, nothing unassigned is mine.
    browser
        .find("filter-closed")
        .await
        .click()
        .await
        .expect("closed");
    browser.find("list-empty").await;
    browser.find("filter-all").await.click().await.expect("all");
    browser.wait(&row(&elis)).await;

    // `/` focuses the search; results are highlighted; Esc clears.
    browser.keys("/").await;
    let search = browser.find("search-input").await;
    search.send_keys("dollars").await.expect("type");
    browser
        .wait_text("[data-testid=\"search-result\"]", "dollars")
        .await;
    let highlighted = browser
        .all("[data-testid=\"search-result\"] b, [data-testid=\"search-result\"] mark")
        .await;
    assert!(!highlighted.is_empty(), "the match is highlighted");
    browser.screenshot("search").await;
    search.send_keys(&ESCAPE.to_string()).await.expect("escape");
    wait_for("the search cleared", || async {
        browser
            .all("[data-testid=\"search-result\"]")
            .await
            .is_empty()
            .then_some(())
    })
    .await;

    // ↓ and Enter open a conversation from the list (the focus is still in the search).
    assert!(browser.all("[data-testid=\"chat\"]").await.is_empty());
    browser.keys(&format!("{ARROW_DOWN}{ENTER}")).await;
    browser.find("chat").await;
    // `?` shows the shortcuts.
    browser
        .find("message-list")
        .await
        .click()
        .await
        .expect("focus chat");
    browser.keys("?").await;
    browser.find("shortcut-help").await;
    browser.keys(&ESCAPE.to_string()).await;

    // The AI's answer opens its reasoning.
    browser.wait(&row(&elis)).await.click().await.expect("open");
    browser
        .find("open-reasoning")
        .await
        .click()
        .await
        .expect("reasoning");
    browser
        .wait_text("[data-testid=\"reasoning-intent\"]", "pricing")
        .await;
    browser
        .wait_text("[data-testid=\"reasoning-knowledge\"]", "Pricing")
        .await;
    browser.screenshot("reasoning").await;

    // The analytics page: the manual's metrics, with the AI's share.
    browser
        .find("nav-analytics")
        .await
        .click()
        .await
        .expect("analytics");
    browser.find("analytics-page").await;
    browser
        .wait_text("[data-testid=\"kpi-ai-answer-rate\"]", "%")
        .await;
    browser.find("channel-health").await;
    browser.screenshot("analytics").await;
    browser
        .find("nav-conversations")
        .await
        .click()
        .await
        .expect("inbox");
    browser.find("conversation-list").await;

    // The server restarts on the same address: the page reconnects by itself and goes on
    // showing what happens.
    let server = server.restart_on_same_address().await;

    wait_for("the page live again", || async {
        (browser
            .attr("[data-testid=\"connection-status\"]", "data-state")
            .await
            .as_deref()
            == Some("live"))
        .then_some(())
    })
    .await;
    server
        .lead_says(
            &tenant,
            "5511900000923",
            "Gal Costa",
            "wamid.S3",
            "After the restart",
        )
        .await;
    let gal = conversation_id(&server, &tenant, "5511900000923").await;
    browser.wait_text(&row(&gal), "Gal Costa").await;
    browser.close().await;
    server.shutdown().await;
}

/// A 1×1 PNG.
const PNG: [u8; 68] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x04, 0x00, 0x00, 0x00, 0xb5, 0x1c, 0x0c,
    0x02, 0x00, 0x00, 0x00, 0x0b, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x64, 0x60, 0x00, 0x00,
    0x00, 0x06, 0x00, 0x02, 0x30, 0x81, 0xd0, 0x2f, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
    0xae, 0x42, 0x60, 0x82,
];

#[tokio::test]
async fn an_image_shows_in_the_chat_and_a_search_hit_opens_deep_history_at_the_message() {
    let (server, graph, tenant) = setup().await;
    let lead = "5511900000931";
    // 70 messages: the one with the rare word is older than the newest page of 50.
    for i in 0..70 {
        let text = if i == 3 {
            "Do you deliver to Zanzibar?".to_string()
        } else {
            format!("message number {i}")
        };
        server
            .lead_says(&tenant, lead, "Hugo Lima", &format!("wamid.H{i}"), &text)
            .await;
    }
    graph.add_media("media-png", "image/png", &PNG);
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15551230000", "phone_number_id": tenant.phone_number_id},
            "contacts": [{"profile": {"name": "Hugo Lima"}, "wa_id": lead}],
            "messages": [{"from": lead, "id": "wamid.IMG", "timestamp": "1767225600", "type": "image",
                          "image": {"id": "media-png", "mime_type": "image/png", "caption": "the gate"}}]}}]}]})
    .to_string();
    let signature = confab_engine::wire::whatsapp::sign(&tenant.app_secret, body.as_bytes());
    let (status, answer) = server
        .post_webhook(&tenant, body.as_bytes(), Some(signature))
        .await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    let hugo = conversation_id(&server, &tenant, lead).await;

    let browser = Browser::start().await;
    browser.sign_in(&server, "ana@acme.test", PASSWORD).await;
    browser.wait(&row(&hugo)).await.click().await.expect("open");

    // The image is fetched through the server (with the channel's token) and shown.
    browser.wait("[data-testid=\"attachment-image\"]").await;
    wait_for("the image decoded", || async {
        let width = browser
            .client
            .execute(
                "const i = document.querySelector('[data-testid=\"attachment-image\"]'); \
                 return i && i.complete ? i.naturalWidth : 0;",
                vec![],
            )
            .await
            .expect("script");
        (width.as_u64() == Some(1)).then_some(())
    })
    .await;
    browser.screenshot("attachment").await;

    // The hit for a message deep in the history opens the chat at that message.
    assert!(browser
        .all("[data-testid=\"message\"][data-seq=\"4\"]")
        .await
        .is_empty());
    browser.keys("/").await;
    browser
        .find("search-input")
        .await
        .send_keys("zanzibar")
        .await
        .expect("type");
    browser
        .wait_text("[data-testid=\"search-result\"]", "Zanzibar")
        .await;
    browser
        .wait("[data-testid=\"search-result\"][data-seq=\"4\"]")
        .await
        .click()
        .await
        .expect("open the hit");
    browser
        .wait_text(
            "[data-testid=\"message\"][data-highlight=\"true\"]",
            "Zanzibar",
        )
        .await;
    browser.screenshot("search-hit").await;
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_keyboard_reaches_every_pane_and_every_focus_is_visible() {
    let (server, _graph, tenant) = setup().await;
    server
        .lead_says(
            &tenant,
            "5511900000941",
            "Ines Brito",
            "wamid.K1",
            "Hello there",
        )
        .await;
    let ines = conversation_id(&server, &tenant, "5511900000941").await;
    let browser = Browser::start().await;
    browser.sign_in(&server, "ana@acme.test", PASSWORD).await;
    browser.wait(&row(&ines)).await.click().await.expect("open");
    browser.find("composer-input").await;
    // Start from the top of the page, then Tab until the focus comes back around.
    browser
        .client
        .execute(
            "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);",
            vec![],
        )
        .await
        .expect("blur");
    let mut stops: Vec<Value> = Vec::new();
    for _ in 0..80 {
        browser.keys(&TAB.to_string()).await;
        let stop = browser
            .client
            .execute(
                "const e = document.activeElement; \
                 if (!e || e === document.body) return null; \
                 const drawn = (n) => { const s = getComputedStyle(n); \
                   return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) \
                     || (s.boxShadow && s.boxShadow !== 'none'); }; \
                 let ring = drawn(e); \
                 /* A field without a border of its own shows focus on its frame. */ \
                 for (let n = e.parentElement, i = 0; !ring && n && i < 3; n = n.parentElement, i++) { \
                   const s = getComputedStyle(n); \
                   ring = drawn(n) || parseFloat(s.borderTopWidth) >= 2; } \
                 const testid = e.dataset.testid \
                   || (e.closest('[data-testid]') && e.closest('[data-testid]').dataset.testid) || ''; \
                 return {testid, tag: e.tagName, label: e.getAttribute('aria-label') || (e.textContent || '').trim().slice(0, 30), \
                         ring, focusVisible: e.matches(':focus-visible')};",
                vec![],
            )
            .await
            .expect("focus");
        if stop.is_null() {
            continue;
        }
        if stops.first().is_some_and(|first| first == &stop) {
            break;
        }
        stops.push(stop);
    }
    // The walk began wherever the browser's focus start was: read it from the rail.
    let rail = stops
        .iter()
        .position(|s| s["testid"] == "nav-conversations")
        .unwrap_or_else(|| panic!("the rail is not reached by Tab: {stops:?}"));
    stops.rotate_left(rail);
    let reached: Vec<&str> = stops.iter().filter_map(|s| s["testid"].as_str()).collect();
    for needed in [
        "nav-conversations",
        "search-input",
        "conversation-list",
        "composer-input",
        "status-select",
        "assignee-select",
        "tag-input",
        "contact-name",
    ] {
        assert!(
            reached.contains(&needed),
            "{needed} is not reached by Tab: {reached:?}"
        );
    }
    // Sidebar, then chat, then details: the order of the screen.
    let at = |testid: &str| reached.iter().position(|r| *r == testid).expect("reached");
    assert!(at("search-input") < at("composer-input"));
    assert!(at("composer-input") < at("status-select"));
    for stop in &stops {
        assert_eq!(stop["focusVisible"], true, "{stop}");
        assert_eq!(stop["ring"], true, "no visible focus on {stop}");
    }
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_invitation_link_lets_a_new_agent_choose_a_password_and_work() {
    let (server, _graph, tenant) = setup().await;
    let (status, agent) = server
        .post(
            &tenant.token,
            "/api/v1/agents",
            json!({"name": "Caio Lima", "email": "caio@acme.test", "role": "agent"}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{agent}");
    let agent_id = agent["id"].as_str().expect("id").to_owned();
    let (status, invite) = server
        .post(
            &tenant.token,
            &format!("/api/v1/agents/{agent_id}/invite"),
            json!({}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{invite}");
    let url = invite["url"].as_str().expect("url");
    server
        .lead_says(&tenant, "5511900000951", "Rita Lee", "wamid.I1", "Hello")
        .await;
    let rita = conversation_id(&server, &tenant, "5511900000951").await;

    let browser = Browser::start().await;
    browser
        .client
        .goto(&server.url(url))
        .await
        .expect("open the link");
    browser.find("invite-form").await;
    // Two different passwords are refused before anything is sent.
    browser
        .find("invite-password")
        .await
        .send_keys("a good long password")
        .await
        .expect("type");
    browser
        .find("invite-password-again")
        .await
        .send_keys("a different password")
        .await
        .expect("type");
    browser
        .find("invite-submit")
        .await
        .click()
        .await
        .expect("submit");
    browser.find("invite-error").await;
    let again = browser.find("invite-password-again").await;
    again.clear().await.expect("clear");
    again.send_keys("a good long password").await.expect("type");
    browser
        .find("invite-submit")
        .await
        .click()
        .await
        .expect("submit");
    // Signed in: the workspace's inbox, and the new password signs in by API too.
    browser.wait(&row(&rita)).await;
    let (status, me) = status_json_of(
        server
            .http
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({"email": "caio@acme.test", "password": "a good long password"}))
            .send()
            .await
            .expect("login"),
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["agent"]["id"], agent_id.as_str());
    // The link works once.
    browser
        .client
        .goto(&server.url(url))
        .await
        .expect("open again");
    let (status, _) = status_json_of(
        server
            .http
            .post(server.url("/api/v1/auth/accept-invite"))
            .json(&json!({"invite": invite["invite"], "password": "yet another password"}))
            .send()
            .await
            .expect("accept"),
    )
    .await;
    assert_eq!(status, 401);
    browser.close().await;
    server.shutdown().await;
}

async fn status_json_of(response: reqwest::Response) -> (u16, Value) {
    let (status, body) = crate::harness::status_json(response).await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn an_agent_attaches_a_file_to_an_email_reply_in_the_composer() {
    use confab_gateway::demo::smtp_sink::SmtpSink;
    let (server, _graph, tenant) = setup().await;
    let sink = SmtpSink::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sink");
    let secret = "browser-mail-secret";
    let (status, channel) = server
        .admin_post(
            &format!("/api/v1/admin/workspaces/{}/channels", tenant.workspace_id),
            json!({"kind": "email", "name": "Mail", "address": "sales@acme.test",
                   "inbound_secret": secret,
                   "smtp": {"host": "127.0.0.1", "port": sink.addr.port(), "security": "none"}}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{channel}");
    let raw = "From: Lena Park <lena@park.example>\r\nTo: sales@acme.test\r\nSubject: Brochure\r\n\
               Message-ID: <lena-1@park.example>\r\n\r\nCould you send the brochure?\r\n";
    let answer = server
        .http
        .post(server.url(&format!(
            "/webhooks/email/{}",
            channel["id"].as_str().expect("id")
        )))
        .header("content-type", "message/rfc822")
        .header(
            confab_engine::wire::email::SIGNATURE_HEADER,
            confab_engine::wire::email::sign(secret, raw.as_bytes()),
        )
        .body(raw)
        .send()
        .await
        .expect("webhook");
    assert_eq!(answer.status().as_u16(), 200);
    let lena = server
        .conversations(&tenant.token)
        .await
        .into_iter()
        .find(|c| c["contact"]["email"] == "lena@park.example")
        .and_then(|c| c["id"].as_str().map(str::to_owned))
        .expect("Lena's conversation");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("brochure.pdf");
    std::fs::write(&file, b"%PDF-1.4 the brochure\n").expect("file");

    let browser = Browser::start().await;
    browser.sign_in(&server, "ana@acme.test", PASSWORD).await;
    browser.wait(&row(&lena)).await.click().await.expect("open");
    browser
        .find("attach-input")
        .await
        .send_keys(&file.display().to_string())
        .await
        .expect("pick the file");
    browser
        .wait_text("[data-testid=\"attachment-chip\"]", "brochure.pdf")
        .await;
    browser.compose_and_send("Here is our brochure.").await;
    let mail = wait_for("the mail at the SMTP sink", || async {
        sink.received().first().cloned()
    })
    .await;
    let parsed = confab_engine::wire::email::parse(&mail.data, i64::MAX / 2).expect("parses");
    assert_eq!(
        parsed.files.len(),
        1,
        "{:?}",
        String::from_utf8_lossy(&mail.data)
    );
    assert_eq!(parsed.files[0].name.as_deref(), Some("brochure.pdf"));
    assert_eq!(parsed.files[0].bytes, b"%PDF-1.4 the brochure\n");
    assert!(parsed.text.contains("Here is our brochure."));
    // The sent message shows its file in the chat.
    browser
        .wait_text(
            "[data-testid=\"message\"][data-kind=\"agent\"] [data-testid=\"attachment\"]",
            "brochure.pdf",
        )
        .await;
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_hundred_thousand_conversations_scroll_in_pages_with_a_bounded_page() {
    const LEADS: usize = 100_000;
    let (server, _graph, tenant) = setup().await;
    let seeding = std::time::Instant::now();
    many_leads(&server, &tenant, LEADS, 500).await;
    eprintln!("seeded {LEADS} conversations in {:?}", seeding.elapsed());

    let browser = Browser::start().await;
    let opened = std::time::Instant::now();
    browser.sign_in(&server, "ana@acme.test", PASSWORD).await;
    browser.wait("[data-testid=\"conversation-row\"]").await;
    eprintln!("first rows {:?} after signing in began", opened.elapsed());
    // The counts are exact, not the loaded rows.
    wait_for("the count of all conversations", || async {
        (browser
            .attr("[data-testid=\"count-all\"]", "data-count")
            .await
            .as_deref()
            == Some("100000"))
        .then_some(())
    })
    .await;
    // Scrolling to the end loads the next cursor page, again and again; the page keeps
    // only the rows in view.
    let loaded = || async {
        browser
            .attr("[data-testid=\"conversation-list\"]", "data-count")
            .await
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let scrolling = std::time::Instant::now();
    let mut seen = loaded().await;
    for _ in 0..10 {
        browser
            .client
            .execute(
                "const l = document.querySelector('[data-testid=\"conversation-list\"]'); \
                 l.scrollTop = l.scrollHeight;",
                vec![],
            )
            .await
            .expect("scroll");
        seen = wait_for("the next page", || async {
            let now = loaded().await;
            (now > seen).then_some(now)
        })
        .await;
        let rows = browser
            .all("[data-testid=\"conversation-row\"]")
            .await
            .len();
        assert!(rows <= 40, "{rows} rows in the page for {seen} loaded");
    }
    eprintln!(
        "10 pages scrolled in {:?}, {seen} conversations loaded",
        scrolling.elapsed()
    );
    // The newest lead is first, and the rows are in order of activity.
    browser
        .client
        .execute(
            "document.querySelector('[data-testid=\"conversation-list\"]').scrollTop = 0;",
            vec![],
        )
        .await
        .expect("scroll");
    browser
        .wait_text(
            "[data-testid=\"conversation-row\"]",
            &format!("Lead {}", LEADS - 1),
        )
        .await;
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_cookie_sessions_are_same_origin_only() {
    let (server, _graph, tenant) = setup().await;
    let http = reqwest::Client::new();
    let page = http.get(server.url("/")).send().await.expect("page");
    assert_eq!(page.status().as_u16(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await.expect("html");
    assert!(!html.contains("<script>"), "no inline script");
    let js = http
        .get(server.url("/app.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("app.js");
    assert_eq!(js.headers()["content-encoding"], "gzip");

    // Sign in by API: an HttpOnly, SameSite=Strict cookie.
    let login = http
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": "ana@acme.test", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().expect("pair").to_owned();
    let origin = server.url("");
    // Same origin: allowed. Another site's page: refused, and nothing changes.
    let tag = |from: &'static str| {
        let (http, session, origin, url) = (
            http.clone(),
            session.clone(),
            origin.clone(),
            server.url("/api/v1/agents/x/password"),
        );
        async move {
            let origin = if from == "same" {
                origin
            } else {
                "https://evil.example".into()
            };
            http.put(url)
                .header("cookie", session)
                .header("origin", origin)
                .json(&json!({"password": "another password"}))
                .send()
                .await
                .expect("request")
        }
    };
    assert_eq!(
        tag("same").await.status().as_u16(),
        404,
        "authenticated, no such agent"
    );
    let refused = tag("evil").await;
    assert_eq!(refused.status().as_u16(), 403);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "cross_origin");
    // Sign-out ends the session server-side.
    let out = http
        .post(server.url("/api/v1/auth/logout"))
        .header("cookie", &session)
        .header("origin", &origin)
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status().as_u16(), 204);
    let me = http
        .get(server.url("/api/v1/me"))
        .header("cookie", &session)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status().as_u16(), 401);

    // Changing one's own password takes the current one, and ends the sessions begun
    // before it.
    let (status, refused) = server
        .put(
            &tenant.token,
            &format!("/api/v1/agents/{}/password", tenant.agent_id),
            json!({"password": "a brand new password"}),
        )
        .await;
    assert_eq!(status.as_u16(), 401, "{refused}");
    let login = http
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": "ana@acme.test", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    let older = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let me = http
        .get(server.url("/api/v1/me"))
        .header("cookie", &older)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status().as_u16(), 200);
    assert_eq!(me.headers()["cache-control"], "no-store");
    let (status, body) = server
        .put(
            &tenant.token,
            &format!("/api/v1/agents/{}/password", tenant.agent_id),
            json!({"password": "a brand new password", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(status.as_u16(), 204, "{body}");
    let me = http
        .get(server.url("/api/v1/me"))
        .header("cookie", &older)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status().as_u16(), 401, "the old session ended");

    // Repeated wrong passwords are limited per email.
    let mut limited = false;
    for _ in 0..8 {
        let attempt = http
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({"email": " ANA@acme.test", "password": "wrong password"}))
            .send()
            .await
            .expect("login");
        if attempt.status().as_u16() == 429 {
            limited = true;
            break;
        }
        assert_eq!(attempt.status().as_u16(), 401);
    }
    assert!(
        limited,
        "the sixth wrong password within a minute is refused"
    );
    let (status, _) = server.get(&tenant.token, "/api/v1/me").await;
    assert_eq!(status.as_u16(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn a_linkedin_conversation_starts_from_the_dialog_and_shows_what_happened_on_linkedin() {
    use crate::linkedin::{lead, linkedin_channel, now_text, us, Unipile, ACCOUNT};
    use confab_engine::wire::unipile::message_webhook;

    let (server, _graph, tenant) = setup().await;
    let unipile = Unipile::start().await;
    linkedin_channel(&server, &tenant, &unipile, json!({})).await;
    let browser = Browser::start().await;
    browser.sign_in(&server, "ana@acme.test", PASSWORD).await;

    // Writing first: the dialog, then the conversation it opens.
    browser
        .find("new-conversation")
        .await
        .click()
        .await
        .expect("open the dialog");
    browser.find("new-conversation-dialog").await;
    let member = lead(9);
    for (field, value) in [
        ("new-conversation-member", member.provider_id.as_str()),
        ("new-conversation-name", member.name.as_str()),
        (
            "new-conversation-text",
            "Hello {{first_name}}, saw your talk",
        ),
    ] {
        browser
            .find(field)
            .await
            .send_keys(value)
            .await
            .expect("type");
    }
    browser
        .find("new-conversation-send")
        .await
        .click()
        .await
        .expect("send");
    let sends = unipile.wait_sends(1).await;
    assert_eq!(sends[0].path, "/api/v1/chats");
    assert_eq!(
        sends[0].fields.get("text").map(String::as_str),
        Some("Hello Lead, saw your talk")
    );
    let chat = browser.find("chat").await;
    let id = chat
        .attr("data-conversation-id")
        .await
        .expect("attr")
        .expect("the opened conversation");
    browser
        .wait_text("[data-testid=\"chat\"]", "Hello Lead, saw your talk")
        .await;

    // The lead answers in the chat Unipile opened; the account's user answers on LinkedIn
    // itself; the lead reacts to that, edits and deletes their own message.
    let chat_id = "chat-new-msg-out-1";
    let answer = message_webhook(
        ACCOUNT,
        &us(),
        &member,
        chat_id,
        "in-9",
        "Thanks! Call me?",
        false,
        &now_text(),
    );
    assert_eq!(unipile.post(&answer).await.0.as_u16(), 200);
    browser
        .wait_text("[data-testid=\"chat\"]", "Thanks! Call me?")
        .await;
    let typed = message_webhook(
        ACCOUNT,
        &us(),
        &member,
        chat_id,
        "typed-9",
        "Calling you now",
        true,
        &now_text(),
    );
    assert_eq!(unipile.post(&typed).await.0.as_u16(), 200);
    browser
        .wait("[data-testid=\"message\"][data-sent-elsewhere=\"true\"]")
        .await;
    browser
        .wait_text("[data-testid=\"sent-elsewhere\"]", "LinkedIn")
        .await;
    let base = json!({"account_id": ACCOUNT, "account_info": {"user_id": us().provider_id}, "timestamp": now_text()});
    for extra in [
        json!({"event": "message_reaction", "message_id": "typed-9", "reaction": "👍",
               "reaction_sender": {"attendee_provider_id": member.provider_id}}),
        json!({"event": "message_edited", "message_id": "in-9", "message": "Thanks! Call me tomorrow?"}),
        json!({"event": "message_deleted", "message_id": "in-9"}),
    ] {
        let mut body = base.clone();
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        assert_eq!(unipile.post(&body).await.0.as_u16(), 200);
    }
    browser
        .wait("[data-testid=\"reaction\"][data-by=\"lead\"]")
        .await;
    browser.wait("[data-testid=\"edited\"]").await;
    browser
        .wait("[data-testid=\"message\"][data-deleted=\"true\"] [data-testid=\"deleted\"]")
        .await;
    browser
        .wait_text("[data-testid=\"chat\"]", "Thanks! Call me tomorrow?")
        .await;
    // The lead's profile, learnt from their answer, is one click away.
    let link = browser.find("profile-link").await;
    assert_eq!(
        link.attr("href").await.expect("attr").as_deref(),
        member.profile_url.as_deref()
    );
    assert_eq!(
        link.attr("rel").await.expect("attr").as_deref(),
        Some("noopener noreferrer")
    );
    browser.screenshot("linkedin").await;
    let (_, detail) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(detail["ai_mode"], "manual", "{detail}");
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn picked_conversations_are_tagged_and_a_whole_view_closed_from_the_bulk_bar() {
    let (server, _graph, tenant) = setup().await;
    for (wa_id, name, wamid) in [
        ("5511900000701", "Rita Melo", "wamid.K1"),
        ("5511900000702", "Saul Nunes", "wamid.K2"),
        ("5511900000703", "Tina Ortiz", "wamid.K3"),
    ] {
        server.lead_says(&tenant, wa_id, name, wamid, "Hello").await;
    }
    let rita = conversation_id(&server, &tenant, "5511900000701").await;
    let saul = conversation_id(&server, &tenant, "5511900000702").await;
    let tina = conversation_id(&server, &tenant, "5511900000703").await;
    let browser = Browser::start().await;
    browser.sign_in(&server, "ana@acme.test", PASSWORD).await;
    browser.wait(&row(&tina)).await;

    // Two picked with their boxes (the rows stay closed), tagged from the bar.
    for id in [&rita, &saul] {
        browser
            .wait(&format!("{} [data-testid=\"conv-pick\"]", row(id)))
            .await
            .click()
            .await
            .expect("pick");
    }
    browser
        .wait_text("[data-testid=\"bulk-count\"]", "2 selected")
        .await;
    assert!(browser.all("[data-testid=\"chat\"]").await.is_empty());
    let tag = browser.find("bulk-tag").await;
    tag.send_keys("bulk-vip").await.expect("type");
    tag.send_keys(&ENTER.to_string()).await.expect("add");
    wait_for("both tagged on the server, the third not", || async {
        let mut tagged = Vec::new();
        for id in [&rita, &saul, &tina] {
            let (_, c) = server
                .get(&tenant.token, &format!("/api/v1/conversations/{id}"))
                .await;
            tagged.push(c["tags"] == json!(["bulk-vip"]));
        }
        (tagged == [true, true, false]).then_some(())
    })
    .await;
    wait_for("the picks cleared", || async {
        browser
            .all("[data-testid=\"bulk-bar\"]")
            .await
            .is_empty()
            .then_some(())
    })
    .await;

    // x picks the highlighted row; "Select all in this view" takes the whole view,
    // which the bar then closes.
    browser
        .find("conversation-list")
        .await
        .click()
        .await
        .expect("list");
    browser.keys("x").await;
    browser
        .wait_text("[data-testid=\"bulk-count\"]", "1 selected")
        .await;
    browser.find("bulk-all").await.click().await.expect("all");
    browser
        .wait_text("[data-testid=\"bulk-count\"]", "3 selected")
        .await;
    browser.screenshot("bulk-bar").await;
    browser
        .find("bulk-close")
        .await
        .click()
        .await
        .expect("close");
    wait_for("all three closed, and gone from All", || async {
        let (_, counts) = server
            .get(&tenant.token, "/api/v1/conversations/counts")
            .await;
        (counts["closed"] == 3
            && counts["all"] == 0
            && browser
                .all("[data-testid=\"conversation-row\"]")
                .await
                .is_empty())
        .then_some(())
    })
    .await;
    browser
        .wait_text("[data-testid=\"toast\"]", "Closed 3 conversations")
        .await;
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_ais_outcome_suggestion_is_accepted_shown_filtered_and_counted() {
    let (server, _graph, tenant) = setup().await;
    server.enable_ai_later(&tenant).await;
    server
        .lead_from_ad(
            &tenant,
            "5511900000801",
            "wamid.U1",
            "I'm interested, what is the price?",
            "Spring sale",
        )
        .await;
    server
        .lead_says(&tenant, "5511900000802", "Vera Luz", "wamid.U2", "Hello")
        .await;
    let lead = conversation_id(&server, &tenant, "5511900000801").await;
    let other = conversation_id(&server, &tenant, "5511900000802").await;
    let browser = Browser::start().await;
    browser.sign_in(&server, "ana@acme.test", PASSWORD).await;
    browser.wait(&row(&lead)).await.click().await.expect("open");
    browser
        .wait_text("[data-testid=\"outcome-suggestion\"]", "Interested")
        .await;
    browser
        .find("outcome-accept")
        .await
        .click()
        .await
        .expect("accept");
    wait_for("the outcome set on the server", || async {
        let (_, c) = server
            .get(&tenant.token, &format!("/api/v1/conversations/{lead}"))
            .await;
        (c["outcome"] == "Interested" && c["suggested_outcome"].is_null()).then_some(())
    })
    .await;
    browser
        .wait_text(
            &format!("{} [data-testid=\"outcome-chip\"]", row(&lead)),
            "Interested",
        )
        .await;
    assert!(browser
        .all("[data-testid=\"outcome-suggestion\"]")
        .await
        .is_empty());
    // The filter keeps the lead with that outcome only.
    browser
        .find("filters-toggle")
        .await
        .click()
        .await
        .expect("filters");
    browser
        .find("filter-outcome")
        .await
        .select_by_value("Interested")
        .await
        .expect("outcome filter");
    wait_for("only the lead with the outcome listed", || async {
        (browser.all(&row(&other)).await.is_empty() && !browser.all(&row(&lead)).await.is_empty())
            .then_some(())
    })
    .await;
    // Analytics counts it under its campaign.
    browser
        .find("nav-analytics")
        .await
        .click()
        .await
        .expect("analytics");
    browser
        .wait_text("[data-testid=\"outcome-row\"]", "Spring sale")
        .await;
    browser
        .wait_text("[data-testid=\"outcome-row\"]", "Interested")
        .await;
    browser.screenshot("outcomes").await;
    // Settings → Lead outcomes: the counts, and an admin's edit of the list.
    browser
        .client
        .goto(&server.url("/#/settings/outcomes"))
        .await
        .expect("outcome settings");
    browser
        .wait_text("[data-testid=\"outcome-item\"]", "1 conversation")
        .await;
    browser
        .set_value("outcome-text", "Interested\nMeeting booked\nDemo done")
        .await;
    browser
        .find("outcome-save")
        .await
        .click()
        .await
        .expect("save");
    wait_for("the new list on the server", || async {
        let (_, list) = server.get(&tenant.token, "/api/v1/outcomes").await;
        (list["items"].as_array().map(Vec::len) == Some(3)
            && list["items"][2]["name"] == "Demo done")
            .then_some(())
    })
    .await;
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn two_threads_of_a_lead_are_merged_answered_on_the_picked_one_and_split_again() {
    let (server, graph, tenant) = setup().await;
    let support = crate::merge::second_number(&server, &tenant, &graph).await;
    server
        .lead_says(
            &tenant,
            "5511900000801",
            "Vera Lins",
            "wamid.V1",
            "Is the loft free?",
        )
        .await;
    let primary = conversation_id(&server, &tenant, "5511900000801").await;
    server
        .lead_says(
            &support,
            "5511900000801",
            "Vera Lins",
            "wamid.V2",
            "Parking included?",
        )
        .await;
    let other = server
        .conversations(&tenant.token)
        .await
        .iter()
        .filter_map(|c| c["id"].as_str())
        .find(|id| *id != primary)
        .expect("the second thread")
        .to_owned();
    let browser = Browser::start().await;
    browser.sign_in(&server, "ana@acme.test", PASSWORD).await;
    browser.wait(&row(&other)).await;
    browser
        .wait(&row(&primary))
        .await
        .click()
        .await
        .expect("open");

    // The details offer the lead's other conversation; merged, it leaves the list and its
    // message joins the timeline, marked with its thread.
    browser
        .wait("[data-testid=\"merge-candidate\"] [data-testid=\"btn-merge\"]")
        .await
        .click()
        .await
        .expect("merge");
    browser.wait("[data-testid=\"merged-thread\"]").await;
    wait_for("one row, both messages in the chat", || async {
        let rows = browser
            .all("[data-testid=\"conversation-row\"]")
            .await
            .len();
        let messages = browser.all("[data-testid=\"message\"]").await.len();
        let threads = browser.all("[data-testid=\"message-thread\"]").await.len();
        (rows == 1 && messages == 2 && threads == 2).then_some(())
    })
    .await;
    browser
        .wait_text("[data-testid=\"chat\"]", "Parking included?")
        .await;
    browser
        .wait_text(
            &format!("{} [data-testid=\"threads-chip\"]", row(&primary)),
            "2 threads",
        )
        .await;
    browser.screenshot("merged").await;

    // A reply on the picked thread goes out from its number.
    browser
        .find("composer-via")
        .await
        .select_by_value(&other)
        .await
        .expect("pick the thread");
    let input = browser.find("composer-input").await;
    input.send_keys("Yes, one space").await.expect("type");
    input.send_keys(&ENTER.to_string()).await.expect("send");
    let requests = graph.wait_requests(1).await;
    assert!(
        requests[0].path.contains(&support.phone_number_id),
        "{}",
        requests[0].path
    );
    // The lead answers on that thread: live in the merged timeline.
    server
        .lead_says(
            &support,
            "5511900000801",
            "Vera Lins",
            "wamid.V3",
            "Great, thanks",
        )
        .await;
    browser
        .wait_text("[data-testid=\"chat\"]", "Great, thanks")
        .await;

    // Split: both listed again, the timeline back to its own thread.
    browser
        .find("btn-split")
        .await
        .click()
        .await
        .expect("split");
    wait_for("two rows, one thread in the chat", || async {
        let rows = browser
            .all("[data-testid=\"conversation-row\"]")
            .await
            .len();
        let threads = browser.all("[data-testid=\"message-thread\"]").await.len();
        let merged = browser.all("[data-testid=\"merged-thread\"]").await.len();
        (rows == 2 && threads == 0 && merged == 0).then_some(())
    })
    .await;
    let (_, card) = server
        .get(&tenant.token, &format!("/api/v1/conversations/{other}"))
        .await;
    assert_eq!(card["merged_into"], Value::Null, "{card}");

    // The same person under another contact (another number) is found by search and
    // merged from there.
    server
        .lead_says(
            &tenant,
            "5511900000802",
            "V. Lins (work)",
            "wamid.V4",
            "Invoice address please",
        )
        .await;
    let work = conversation_id(&server, &tenant, "5511900000802").await;
    browser.wait(&row(&work)).await;
    browser
        .find("btn-find-merge")
        .await
        .click()
        .await
        .expect("find");
    browser
        .find("merge-search")
        .await
        .send_keys("invoice")
        .await
        .expect("type");
    browser
        .wait("[data-testid=\"merge-found-item\"] [data-testid=\"btn-merge-found\"]")
        .await
        .click()
        .await
        .expect("merge the hit");
    wait_for("the work number's conversation merged", || async {
        let (_, card) = server
            .get(&tenant.token, &format!("/api/v1/conversations/{work}"))
            .await;
        (card["merged_into"] == primary.as_str() && browser.all(&row(&work)).await.is_empty())
            .then_some(())
    })
    .await;
    browser
        .wait_text("[data-testid=\"chat\"]", "Invoice address please")
        .await;
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_admin_adds_a_webhook_sees_it_disabled_by_failures_enables_and_removes_it() {
    let server = TestServer::start_with(|c| {
        c.webhooks.min_backoff_ms = 20;
        c.webhooks.max_backoff_ms = 50;
        c.webhooks.disable_after_secs = 0;
    })
    .await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    set_password(&server, &tenant.token, &tenant.agent_id).await;
    let browser = Browser::start().await;
    browser.sign_in(&server, "ana@acme.test", PASSWORD).await;
    browser
        .client
        .goto(&server.url("/#/settings/webhooks"))
        .await
        .expect("webhook settings");
    browser.find("webhook-settings").await;
    // Nothing listens on port 9 of loopback: every delivery fails.
    browser
        .set_value("webhook-url", "http://127.0.0.1:9/confab")
        .await;
    browser
        .find("webhook-kind-message_created")
        .await
        .click()
        .await
        .expect("kind");
    browser
        .find("webhook-add")
        .await
        .click()
        .await
        .expect("add");
    browser
        .wait_text("[data-testid=\"webhook-secret\"]", "not shown again")
        .await;
    let (_, list) = server.get(&tenant.token, "/api/v1/webhooks").await;
    assert_eq!(
        list["items"][0]["kinds"],
        json!(["message_created"]),
        "{list}"
    );
    assert_eq!(
        list["items"][0]["url"], "http://127.0.0.1:9/confab",
        "{list}"
    );

    // A change to deliver fails at once and, with no grace configured, disables it.
    server
        .lead_says(&tenant, "5511900000951", "Olga Reis", "wamid.W1", "Hi")
        .await;
    browser
        .wait_text("[data-testid=\"webhook-state\"]", "Disabled")
        .await;
    browser.screenshot("webhooks").await;
    browser
        .find("webhook-enable")
        .await
        .click()
        .await
        .expect("enable");
    browser
        .wait_text("[data-testid=\"toast\"]", "Webhook enabled")
        .await;
    browser
        .find("webhook-delete")
        .await
        .click()
        .await
        .expect("remove");
    browser
        .find("webhook-delete-confirm")
        .await
        .click()
        .await
        .expect("confirm");
    wait_for("the endpoint removed", || async {
        let (_, list) = server.get(&tenant.token, "/api/v1/webhooks").await;
        (list["items"] == json!([])
            && browser
                .all("[data-testid=\"webhook-item\"]")
                .await
                .is_empty())
        .then_some(())
    })
    .await;
    browser.close().await;
    server.shutdown().await;
}
