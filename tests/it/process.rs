//! The real `confab` binary in a child process: for `kill -9`, signals and the demo.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use axum::http::StatusCode;
use confab_engine::wire::whatsapp;
use serde_json::{json, Value};

use crate::harness::{status_json, Tenant};

/// The `confab` binary, built by cargo for the profile these tests run in (a no-op when
/// it is up to date).
pub async fn confab_binary() -> PathBuf {
    tokio::task::spawn_blocking(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "confab-gateway",
            "--bin",
            "confab",
        ]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the confab binary failed");
        let binary = profile_dir.join("confab");
        assert!(binary.exists(), "{} missing", binary.display());
        binary
    })
    .await
    .expect("build task")
}

pub struct Process {
    child: Child,
    pub base: String,
}

impl Process {
    /// Starts the binary and reads its output until `found` extracts the base URL.
    fn spawn(mut command: Command, found: impl Fn(&str) -> Option<String>) -> Process {
        command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("confab starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let base = loop {
            let Some(line) = lines.next() else {
                panic!(
                    "confab exited before printing its address; its output:\n{}",
                    seen.join("\n")
                );
            };
            let line = line.expect("readable output");
            if let Some(base) = found(&line) {
                break base;
            }
            seen.push(line);
        };
        // Keep draining the output so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Process { child, base }
    }

    /// `confab serve` on `dir`, on a free port.
    pub fn serve(binary: &Path, dir: &Path, admin_token: &str) -> Process {
        Self::serve_with(binary, dir, admin_token, &[])
    }

    /// `confab serve` on `dir` with extra arguments (`--config FILE`).
    pub fn serve_with(
        binary: &Path,
        dir: &Path,
        admin_token: &str,
        extra: &[&std::ffi::OsStr],
    ) -> Process {
        Self::serve_env(binary, dir, admin_token, extra, &[])
    }

    /// `confab serve` on `dir` with extra arguments and environment variables
    /// (`CONFAB_DURABILITY=buffered`).
    pub fn serve_env(
        binary: &Path,
        dir: &Path,
        admin_token: &str,
        extra: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
    ) -> Process {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("CONFAB_ADMIN_TOKEN", admin_token)
            .envs(env.iter().copied());
        Self::spawn(command, |line| {
            let at = line.find("addr=")?;
            let addr: String = line[at + 5..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            Some(format!("http://{addr}"))
        })
    }

    /// `confab demo` on `dir`; the base URL and agent token come from its banner.
    pub fn demo(binary: &Path, dir: &Path) -> (Process, String) {
        let mut command = Command::new(binary);
        command
            .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env_remove("CONFAB_ADMIN_TOKEN");
        let mut process = Self::spawn(command, |line| {
            let rest = line.trim().strip_prefix("export CONFAB=")?;
            Some(rest.to_string())
        });
        // The line is `export CONFAB=http://ADDR TOKEN=cfb_…`.
        let (base, token) = process.base.split_once(" TOKEN=").expect("banner line");
        let (base, token) = (base.to_string(), token.to_string());
        process.base = base;
        (process, token)
    }

    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.child.wait().expect("reaped")
    }
}

/// A test that fails half-way must not leave a server running behind it.
impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Provisions a workspace, an admin agent and a WhatsApp channel sending to
/// `api_base_url`, through the admin API of the server at `base`.
pub async fn provision(
    http: &reqwest::Client,
    base: &str,
    admin_token: &str,
    api_base_url: &str,
) -> Tenant {
    let post = |path: String, body: Value| async move {
        let response = http
            .post(format!("{base}{path}"))
            .bearer_auth(admin_token)
            .json(&body)
            .send()
            .await
            .expect("admin request");
        let (status, answer) = status_json(response).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
        answer
    };
    let workspace = post(
        "/api/v1/admin/workspaces".into(),
        json!({"name": "Child Process Leads"}),
    )
    .await;
    let workspace_id = workspace["id"].as_str().expect("workspace id").to_string();
    let agent = post(
        format!("/api/v1/admin/workspaces/{workspace_id}/agents"),
        json!({"name": "Ana Agent", "email": "ana@acme.test", "role": "admin"}),
    )
    .await;
    let app_secret = format!("secret-{}", confab_engine::admin::new_token());
    let phone_number_id = "106540352242922".to_string();
    let channel = post(
        format!("/api/v1/admin/workspaces/{workspace_id}/channels"),
        json!({"kind": "whatsapp", "name": "Sales WhatsApp", "phone_number_id": phone_number_id,
               "app_secret": app_secret, "verify_token": "verify-me",
               "access_token": "graph-access-token", "api_base_url": api_base_url}),
    )
    .await;
    Tenant {
        workspace_id,
        agent_id: agent["id"].as_str().expect("agent id").to_string(),
        token: agent["token"].as_str().expect("token").to_string(),
        channel_id: channel["id"].as_str().expect("channel id").to_string(),
        app_secret,
        phone_number_id,
    }
}

/// A lead's text message as Meta would post it: the body and its `X-Hub-Signature-256`.
pub fn signed_text_webhook(
    tenant: &Tenant,
    wa_id: &str,
    name: &str,
    wamid: &str,
    text: &str,
) -> (String, String) {
    let body = whatsapp::inbound_text_webhook(
        &tenant.phone_number_id,
        wa_id,
        name,
        wamid,
        confab_engine::time::now_millis() / 1000,
        text,
    )
    .to_string();
    let signature = whatsapp::sign(&tenant.app_secret, body.as_bytes());
    (body, signature)
}

/// Posts a lead's text message to the tenant's WhatsApp webhook as Meta would (see
/// [`signed_text_webhook`]) and checks it is acknowledged.
pub async fn lead_writes(
    http: &reqwest::Client,
    base: &str,
    tenant: &Tenant,
    (wa_id, name): (&str, &str),
    wamid: &str,
    text: &str,
) {
    let (body, signature) = signed_text_webhook(tenant, wa_id, name, wamid, text);
    let response = http
        .post(format!("{base}/webhooks/whatsapp/{}", tenant.channel_id))
        .header("content-type", "application/json")
        .header("X-Hub-Signature-256", signature)
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(response.status().as_u16(), 200, "{wamid}");
}

/// Every conversation of the token's workspace (all pages of the default view) with all
/// its messages in `seq` order (all pages).
pub async fn all_conversations(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> Vec<(Value, Vec<Value>)> {
    let get = |path: String, query: Vec<(&'static str, String)>| async move {
        let response = http
            .get(format!("{base}{path}"))
            .query(&query)
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let (status, page) = status_json(response).await;
        assert_eq!(status, StatusCode::OK, "{path} {query:?}: {page}");
        page
    };
    let mut cards = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "200".to_string())];
        query.extend(cursor.clone().map(|c| ("cursor", c)));
        let page = get("/api/v1/conversations".into(), query).await;
        cards.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let mut out = Vec::new();
    for card in cards {
        let id = card["id"].as_str().expect("conversation id").to_string();
        let mut messages = Vec::new();
        let mut before: Option<u64> = None;
        loop {
            let mut query = vec![("limit", "200".to_string())];
            query.extend(before.map(|b| ("before", b.to_string())));
            let page = get(format!("/api/v1/conversations/{id}/messages"), query).await;
            messages.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_before"].as_u64() {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        messages.reverse();
        out.push((card, messages));
    }
    out
}

/// Every hit of a search (all pages, following `next_cursor`); `params` besides `q` are
/// filters (`conversation_id`, …).
pub async fn search_all(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    params: &[(&str, &str)],
) -> Vec<Value> {
    let mut hits = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query: Vec<(&str, &str)> = params.to_vec();
        query.push(("limit", "100"));
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let response = http
            .get(format!("{base}/api/v1/search"))
            .query(&query)
            .bearer_auth(token)
            .send()
            .await
            .expect("search");
        let (status, page) = status_json(response).await;
        assert_eq!(status, StatusCode::OK, "search {query:?}: {page}");
        hits.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return hits,
        }
    }
}
