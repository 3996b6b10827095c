//! `confab demo`: a seeded workspace, a sandbox provider and simulated leads, all through
//! the real binary and its real HTTP paths.

use crate::harness::{status_json, wait_for};
use crate::process::{confab_binary, Process};

#[tokio::test]
async fn the_demo_seeds_a_workspace_and_leads_write_in_through_the_webhook() {
    let binary = confab_binary().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (process, token) = Process::demo(&binary, dir.path());
    assert!(token.starts_with("cfb_"), "{token}");
    let http = reqwest::Client::new();
    // A conversation is created (empty preview) one commit before its first message is
    // stored: wait for one that has its message.
    let first = wait_for("a simulated lead's message", || async {
        let response = http
            .get(format!("{}/api/v1/conversations", process.base))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?;
        let (_, page) = status_json(response).await;
        page["items"]
            .as_array()?
            .iter()
            .find(|c| c["preview"].as_str().is_some_and(|p| !p.is_empty()))
            .cloned()
    })
    .await;
    assert!(
        ["whatsapp", "email", "linkedin"].contains(&first["channel"].as_str().unwrap_or("")),
        "{first}"
    );
    assert!(first["contact"]["name"].is_string());
    // The demo mailbox and the LinkedIn account are there beside the WhatsApp sandbox.
    let response = http
        .get(format!("{}/api/v1/channels", process.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("channels");
    let (_, channels) = status_json(response).await;
    let kinds: Vec<&str> = channels["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"whatsapp") && kinds.contains(&"email") && kinds.contains(&"linkedin"),
        "{channels}"
    );
    // The LinkedIn account's Unipile stand-in answers: its gap repair reads the history
    // and the channel stays connected.
    let linkedin = channels["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["kind"] == "linkedin")
        .expect("the LinkedIn channel");
    assert_eq!(linkedin["status"], "connected", "{linkedin}");
    // A library of canned replies to try with `/` in the composer.
    let response = http
        .get(format!("{}/api/v1/canned-replies?q=vis", process.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("canned replies");
    let (_, canned) = status_json(response).await;
    assert_eq!(canned["items"][0]["shortcut"], "visit", "{canned}");
    assert!(
        dir.path().join("demo.json").exists(),
        "seed state kept for restarts"
    );
    assert!(process.terminate().success(), "the demo exits 0 on SIGTERM");
}
