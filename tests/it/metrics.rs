//! `/metrics` after real traffic: the documented names are there, labels carry no ids,
//! and Prometheus' own linter (`promtool check metrics`) accepts the exposition. Before
//! any traffic: every documented counter and gauge is already there, at 0.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use axum::http::StatusCode;
use serde_json::json;

use crate::harness::{GraphStandIn, StreamClient, TestServer};
use crate::process::{confab_binary, Process};

#[tokio::test]
async fn metrics_after_traffic_pass_promtool() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let mut client = StreamClient::connect(&server, &tenant.token).await;
    client.subscribe(None).await;
    server
        .lead_says(&tenant, "5511911112222", "Ana", "wamid.M1", "Hi")
        .await;
    // The delta reached our socket: the end-to-end histogram has an observation.
    client
        .deltas_until(|d| d["kind"] == "message_created")
        .await;
    let id = server.conversations(&tenant.token).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, _) = server
        .post(
            &tenant.token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "Hello!"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    graph.wait_requests(1).await;
    let (status, _) = server.get(&tenant.token, "/api/v1/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server
        .get(&tenant.token, "/api/v1/analytics?period=today")
        .await;

    let response = reqwest::get(server.url("/metrics")).await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    for name in [
        "confab_http_requests_total",
        "confab_http_request_duration_seconds_bucket",
        "confab_webhook_requests_total",
        "confab_messages_total",
        "confab_commit_group_size_bucket",
        "confab_fsync_seconds_bucket",
        "confab_commit_queue_depth",
        "confab_conversation_actors_live",
        "confab_conversation_activations_total",
        "confab_conversation_mailbox_messages",
        "confab_conversation_mailbox_max_messages",
        "confab_delta_head_offset",
        "confab_ws_clients",
        "confab_ws_frames_sent_total",
        "confab_connector_sends_total",
        "confab_ingest_to_socket_seconds_bucket",
        "confab_delta_publish_to_send_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(
        text.contains(r#"route="/api/v1/conversations/{id}/messages""#),
        "requests are labelled by route template"
    );
    assert!(text.contains(r#"route="unmatched""#));
    for id in [
        &tenant.workspace_id,
        &tenant.channel_id,
        &tenant.agent_id,
        &id,
    ] {
        assert!(!text.contains(id.as_str()), "an id in a label: {id}");
    }

    promtool_accepts(&text);
    client.close().await;
    server.shutdown().await;
}

/// Fails the test unless `promtool check metrics` accepts the exposition.
fn promtool_accepts(text: &str) {
    let mut promtool = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            panic!("promtool is required (Debian package `prometheus`; .ci/run installs it): {e}")
        }
    };
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = promtool.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// The counters and gauges `docs/METRICS.md` documents (its table rows).
fn documented_counters_and_gauges() -> Vec<String> {
    let doc = include_str!("../../docs/METRICS.md");
    let names: Vec<String> = doc
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix("`confab_")?.strip_suffix('`')?;
            let kind = cells.next()?;
            matches!(kind, "counter" | "gauge").then(|| format!("confab_{name}"))
        })
        .collect();
    assert!(
        names.len() > 20,
        "the tables of docs/METRICS.md were not found"
    );
    names
}

/// Every sample of the exposition, by metric name.
fn samples(text: &str) -> HashMap<String, Vec<f64>> {
    let mut samples: HashMap<String, Vec<f64>> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let name = series.split('{').next().expect("name");
        let value = value.parse().expect("a numeric value");
        samples.entry(name.to_string()).or_default().push(value);
    }
    samples
}

#[tokio::test]
async fn a_fresh_servers_first_scrape_has_every_documented_counter_and_gauge() {
    let server = TestServer::start().await;
    let text = reqwest::get(server.url("/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let samples = samples(&text);
    // Other tests share this process's recorder: presence only; see the next test for 0.
    for name in documented_counters_and_gauges() {
        assert!(samples.contains_key(&name), "{name} missing from:\n{text}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_fresh_process_shows_every_documented_counter_and_gauge_at_zero() {
    let binary = confab_binary().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("confab.toml");
    std::fs::write(&config, "metrics_token = \"scrape-me\"\n").expect("config");
    let admin = format!("admin-{}", confab_engine::admin::new_token());
    let process = Process::serve_with(
        &binary,
        &dir.path().join("data"),
        &admin,
        &["--config".as_ref(), config.as_os_str()],
    );
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", process.base))
        .bearer_auth("scrape-me")
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    let samples = samples(&text);
    for name in documented_counters_and_gauges() {
        let values = samples
            .get(&name)
            .unwrap_or_else(|| panic!("{name} missing from the first scrape:\n{text}"));
        assert!(
            values.iter().all(|v| *v == 0.0),
            "{name} is not 0 on a fresh process: {values:?}"
        );
    }
    promtool_accepts(&text);
    process.kill_9();
}
