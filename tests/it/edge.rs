//! The HTTP edge against hostile or broken clients, on real sockets: heads and bodies
//! that stop arriving, over-long URIs and over-large headers, framework errors in our JSON
//! shape, WebSocket close codes and the `Origin` check, where `/metrics` is served, and what
//! a poisoned store does to readiness and to the process.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::harness::{status_json, GraphStandIn, StreamClient, TestServer, DEADLINE};
use crate::process::confab_binary;

/// A raw HTTP/1.1 answer.
struct RawAnswer {
    status: u16,
    head: String,
    body: Value,
}

/// Reads one HTTP/1.1 answer (head, then a `content-length` body) from `tcp`, failing the
/// test after the deadline.
async fn read_answer(tcp: &mut TcpStream) -> RawAnswer {
    let read = async {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = tcp.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the connection closed before an answer");
            bytes.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
        let status = head[9..12].parse().expect("status code");
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = bytes[head_end..].to_vec();
        while body.len() < length {
            let n = tcp.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        let body = serde_json::from_slice(&body[..length])
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).to_string()));
        RawAnswer { status, head, body }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("an answer within the deadline")
}

/// Waits until the server closes `tcp` (EOF or reset), failing the test after the
/// deadline; returns whatever it sent before closing.
async fn closed_by_server(tcp: &mut TcpStream) -> Vec<u8> {
    let mut sent = Vec::new();
    let mut chunk = [0u8; 1024];
    let closing = async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => sent.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, closing)
        .await
        .expect("the server closes the connection within the deadline");
    sent
}

fn assert_json_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408_in_json_and_the_connection_closed() {
    let server = TestServer::start_with(|c| c.http.body_read_timeout_secs = 1).await;
    let mut tcp = TcpStream::connect(server.server().addr())
        .await
        .expect("connect");
    // Content-Length promises 100 bytes; 8 arrive.
    let request = format!(
        "POST /api/v1/admin/workspaces HTTP/1.1\r\nHost: confab\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"name\":",
        server.admin_token
    );
    let started = Instant::now();
    tcp.write_all(request.as_bytes()).await.expect("write");
    let answer = read_answer(&mut tcp).await;
    assert_eq!(answer.status, 408, "{}{}", answer.head, answer.body);
    assert_eq!(answer.body["error"]["code"], "request_timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{}",
        answer.head
    );
    closed_by_server(&mut tcp).await;
    // Nothing was created from half a body.
    let (status, _) = server
        .admin_post("/api/v1/admin/workspaces", json!({"name": "Whole"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    server.shutdown().await;
}

#[tokio::test]
async fn a_head_that_stops_arriving_or_never_starts_gets_the_connection_closed() {
    let server = TestServer::start_with(|c| c.http.header_read_timeout_secs = 1).await;
    let addr = server.server().addr();
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: confab\r\nX-Slow: ")
        .await
        .expect("write");
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    closed_by_server(&mut slow).await;
    closed_by_server(&mut silent).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A client that sends its head at once is served as ever.
    let response = reqwest::get(server.url("/healthz")).await.expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn an_overlong_uri_is_answered_414_in_json() {
    let server = TestServer::start().await;
    let query_at_limit = "a".repeat(8 * 1024 - "/healthz?q=".len());
    let response = reqwest::get(server.url(&format!("/healthz?q={query_at_limit}")))
        .await
        .expect("get");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a URI at the limit passes"
    );
    // Just over ours, and just under hyper's own cap (64 KiB): both ours, in JSON.
    for length in [8 * 1024 + 1, 60 * 1024] {
        let query = "a".repeat(length - "/healthz?q=".len());
        let response = reqwest::get(server.url(&format!("/healthz?q={query}")))
            .await
            .expect("get");
        let (status, body) = status_json(response).await;
        assert_json_error(status, &body, StatusCode::URI_TOO_LONG, "uri_too_long");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn over_large_headers_are_answered_431_in_json() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let one_big = http
        .get(server.url("/healthz"))
        .header("x-pad", "a".repeat(40 * 1024))
        .send()
        .await
        .expect("get");
    let (status, body) = status_json(one_big).await;
    assert_json_error(
        status,
        &body,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    );
    let mut many = http.get(server.url("/healthz"));
    for i in 0..20 {
        many = many.header(format!("x-pad-{i}"), "b".repeat(2 * 1024));
    }
    let (status, body) = status_json(many.send().await.expect("get")).await;
    assert_json_error(
        status,
        &body,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    );
    let under = http
        .get(server.url("/healthz"))
        .header("x-pad", "a".repeat(16 * 1024))
        .send()
        .await
        .expect("get");
    assert_eq!(under.status(), StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn router_and_extractor_errors_are_json() {
    let server = TestServer::start_with(|c| c.max_body_bytes = 1024).await;
    let http = reqwest::Client::new();
    // A path parameter that is not UTF-8: axum's rejection is plain text.
    let response = http
        .get(server.url("/webhooks/whatsapp/%FF%FE?hub.mode=subscribe"))
        .send()
        .await
        .expect("get");
    assert!(response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json")));
    let (status, body) = status_json(response).await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    // Wrong method, unknown route, body over the limit.
    let response = http
        .delete(server.url("/healthz"))
        .send()
        .await
        .expect("delete");
    let (status, body) = status_json(response).await;
    assert_json_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (status, body) =
        status_json(http.get(server.url("/nowhere")).send().await.expect("get")).await;
    assert_json_error(status, &body, StatusCode::NOT_FOUND, "no_route");
    let (status, body) = server
        .admin_post(
            "/api/v1/admin/workspaces",
            json!({"name": "x".repeat(4096)}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    server.shutdown().await;
}

// --- The stream ---

/// Opens `/api/v1/stream` by hand: the raw answer, and the socket if it was upgraded.
async fn raw_upgrade(server: &TestServer, headers: &[(&str, String)]) -> (RawAnswer, TcpStream) {
    let addr = server.server().addr();
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "GET /api/v1/stream HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let answer = read_answer(&mut tcp).await;
    (answer, tcp)
}

/// An upgraded stream on which `raw` (hand-made frames) was written; returns the code of
/// the close frame the server answers with (`None`: closed without one).
async fn close_code_after(server: &TestServer, token: &str, raw: &[u8]) -> Option<u16> {
    let (answer, mut tcp) =
        raw_upgrade(server, &[("Authorization", format!("Bearer {token}"))]).await;
    assert_eq!(answer.status, 101, "{}", answer.head);
    tcp.write_all(raw).await.expect("write frame");
    let mut socket = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    close_code(&mut socket).await
}

/// Reads until the server's close frame: its code, or `None` when the connection ended
/// without one. Text frames before it are skipped.
async fn close_code<S>(socket: &mut WebSocketStream<S>) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("the server answers within the deadline");
        match message {
            Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// A masked client frame (mask key 0: the payload goes as is).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn stream_clients_that_break_the_rules_get_a_close_code_that_says_why() {
    let server = TestServer::start_with(|c| c.stream.max_message_bytes = 1024).await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;

    // Over stream.max_message_bytes: 1009.
    let mut client = StreamClient::connect(&server, &tenant.token).await;
    client
        .send(json!({"type": "ping", "pad": "x".repeat(4096)}))
        .await;
    assert_eq!(client.until_closed().await.1, Some(1009), "too large");

    // Binary: 1003 (the protocol is JSON text).
    let binary = client_frame(0x2, &[1, 2, 3]);
    assert_eq!(
        close_code_after(&server, &tenant.token, &binary).await,
        Some(1003),
        "binary"
    );
    // A text frame that is not UTF-8: 1007.
    let not_utf8 = client_frame(0x1, &[0xff, 0xfe]);
    assert_eq!(
        close_code_after(&server, &tenant.token, &not_utf8).await,
        Some(1007),
        "not UTF-8"
    );
    // Protocol violations: an unmasked client frame, then a reserved opcode: 1002.
    let unmasked = [0x81, 0x02, b'h', b'i'];
    assert_eq!(
        close_code_after(&server, &tenant.token, &unmasked).await,
        Some(1002),
        "unmasked"
    );
    let reserved_opcode = client_frame(0x3, b"?");
    assert_eq!(
        close_code_after(&server, &tenant.token, &reserved_opcode).await,
        Some(1002),
        "reserved opcode"
    );

    // Frames it does not understand: an error frame each, then 1008.
    let mut client = StreamClient::connect(&server, &tenant.token).await;
    let allowed = confab_gateway::stream::MAX_BAD_FRAMES;
    for _ in 0..allowed {
        client.send(json!({"type": "dance"})).await;
        assert_eq!(client.next_of("error").await["code"], "bad_frame");
    }
    client.send(json!({"type": "dance"})).await;
    assert_eq!(client.until_closed().await.1, Some(1008), "policy");
    server.shutdown().await;
}

#[tokio::test]
async fn the_stream_checks_the_origin_before_upgrading_or_spending_a_ticket() {
    let server = TestServer::start_with(|c| {
        c.stream.allowed_origins = vec!["https://app.example.com".to_string()];
    })
    .await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let addr = server.server().addr();
    let bearer = ("Authorization", format!("Bearer {}", tenant.token));

    for origin in [
        None,
        Some(format!("http://{addr}")),
        Some("https://app.example.com".to_string()),
    ] {
        let mut headers = vec![bearer.clone()];
        headers.extend(origin.clone().map(|o| ("Origin", o)));
        let (answer, _) = raw_upgrade(&server, &headers).await;
        assert_eq!(answer.status, 101, "{origin:?}: {}", answer.head);
    }
    for origin in [
        "https://evil.example".to_string(),
        format!("http://127.0.0.1:{}", addr.port() + 1),
        "null".to_string(),
    ] {
        let (answer, _) = raw_upgrade(&server, &[bearer.clone(), ("Origin", origin.clone())]).await;
        assert_eq!(answer.status, 403, "{origin}: {}", answer.head);
        assert_eq!(
            answer.body["error"]["code"], "origin_not_allowed",
            "{origin}"
        );
    }

    // A refused origin does not spend the ticket.
    let (status, ticket) = server
        .post(&tenant.token, "/api/v1/stream/ticket", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ticket}");
    let ticket = ticket["ticket"].as_str().expect("ticket").to_string();
    let with_ticket = |origin: &str| {
        let server = &server;
        let origin = origin.to_string();
        let ticket = ticket.clone();
        async move {
            let addr = server.server().addr();
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            let request = format!(
                "GET /api/v1/stream?ticket={ticket} HTTP/1.1\r\nHost: {addr}\r\n\
                 Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {origin}\r\n\r\n"
            );
            tcp.write_all(request.as_bytes()).await.expect("write");
            read_answer(&mut tcp).await.status
        }
    };
    assert_eq!(with_ticket("https://evil.example").await, 403);
    assert_eq!(with_ticket("https://app.example.com").await, 101);
    server.shutdown().await;
}

// --- /metrics ---

#[tokio::test]
async fn metrics_can_have_their_own_listener_and_leave_the_main_one() {
    let server = TestServer::start_with(|c| {
        c.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let metrics_addr = server.server().metrics_addr().expect("a metrics listener");
    assert_ne!(metrics_addr, server.server().addr());
    let (status, body) =
        status_json(reqwest::get(server.url("/metrics")).await.expect("get")).await;
    assert_json_error(status, &body, StatusCode::NOT_FOUND, "no_route");
    let response = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert!(text.contains("confab_ws_clients"), "{text}");
    // Only /metrics there.
    let (status, body) = status_json(
        reqwest::get(format!("http://{metrics_addr}/api/v1/conversations"))
            .await
            .expect("get"),
    )
    .await;
    assert_json_error(status, &body, StatusCode::NOT_FOUND, "no_route");
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_can_require_a_bearer_token() {
    let server = TestServer::start_with(|c| c.metrics_token = Some("scrape-secret".into())).await;
    let http = reqwest::Client::new();
    for token in [None, Some("wrong"), Some("scrape-secre")] {
        let mut request = http.get(server.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let (status, body) = status_json(request.send().await.expect("get")).await;
        assert_json_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let response = http
        .get(server.url("/metrics"))
        .bearer_auth("scrape-secret")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.expect("body").contains("confab_"));
    server.shutdown().await;
}

// --- A poisoned store ---

/// A tmpfs of `size` mounted on `at` for the test's lifetime: a disk that can fill up.
struct SmallDisk {
    at: std::path::PathBuf,
}

impl SmallDisk {
    /// `Err` with the reason when mounting is not possible here (it needs root).
    fn mount(at: std::path::PathBuf, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(&at).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(SmallDisk { at })
    }

    /// Writes a file until the disk refuses more (ENOSPC).
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.at.join("filler")).expect("filler file");
        let chunk = vec![0u8; 64 * 1024];
        while filler.write_all(&chunk).is_ok() {}
        let _ = filler.flush();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// `confab serve` in a child process, to watch its exit status.
struct ChildServer {
    child: Child,
    base: String,
}

impl ChildServer {
    fn start(
        binary: &std::path::Path,
        dir: &std::path::Path,
        config: &std::path::Path,
        admin: &str,
    ) -> ChildServer {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .arg("--config")
            .arg(config)
            .env("CONFAB_ADMIN_TOKEN", admin)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("confab starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("confab printed its address before exiting")
                .expect("readable output");
            if let Some(at) = line.find(" addr=") {
                let addr: String = line[at + 6..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                break format!("http://{addr}");
            }
        };
        // Keep draining the output so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ChildServer { child, base }
    }

    /// The exit status, once the process exits on its own (failing after the deadline).
    async fn exit_status(&mut self) -> std::process::ExitStatus {
        crate::harness::wait_for("the process to exit", || {
            let exited = self.child.try_wait().expect("try_wait");
            async move { exited }
        })
        .await
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn a_full_disk_poisons_the_store_fails_readiness_with_the_reason_then_exits_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = match SmallDisk::mount(dir.path().join("disk"), "16m") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_poisons_the_store…: cannot mount a tmpfs ({why}); run as root to exercise it");
            return;
        }
    };
    let binary = confab_binary().await;
    let config = dir.path().join("confab.toml");
    std::fs::write(&config, "poisoned_exit_grace_secs = 2\n").expect("config");
    let admin = format!("admin-{}", confab_engine::admin::new_token());
    let mut server = ChildServer::start(&binary, &disk.at.join("data"), &config, &admin);
    let http = reqwest::Client::new();
    let base = server.base.clone();

    let admin_post = |path: String, body: Value| {
        let request = http
            .post(format!("{base}{path}"))
            .bearer_auth(&admin)
            .json(&body);
        async move {
            let (status, answer) = status_json(request.send().await.expect("admin request")).await;
            assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
            answer
        }
    };
    let workspace = admin_post(
        "/api/v1/admin/workspaces".into(),
        json!({"name": "Full Disk"}),
    )
    .await;
    let ws = workspace["id"].as_str().expect("id");
    let app_secret = "full-disk-secret";
    let channel = admin_post(
        format!("/api/v1/admin/workspaces/{ws}/channels"),
        json!({"kind": "whatsapp", "name": "WA", "phone_number_id": "106540352242922",
               "app_secret": app_secret, "verify_token": "v", "access_token": "a",
               "api_base_url": "http://127.0.0.1:9/v21.0"}),
    )
    .await;
    let channel_id = channel["id"].as_str().expect("id");
    let readyz = || async {
        let response = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        status_json(response).await
    };
    let (status, ready) = readyz().await;
    assert_eq!(status, StatusCode::OK, "{ready}");

    // The disk fills up; the next messages cannot be written.
    disk.fill();
    let mut refused = None;
    for i in 0..100 {
        let body = confab_engine::wire::whatsapp::inbound_text_webhook(
            "106540352242922",
            &format!("5511900000{i:03}"),
            "Lead",
            &format!("wamid.FULL{i}"),
            confab_engine::time::now_millis() / 1000,
            &"A message for a full disk. ".repeat(40),
        )
        .to_string();
        let signature = confab_engine::wire::whatsapp::sign(app_secret, body.as_bytes());
        let response = http
            .post(format!("{base}/webhooks/whatsapp/{channel_id}"))
            .header("content-type", "application/json")
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
            .await
            .expect("webhook");
        let (status, answer) = status_json(response).await;
        if status != StatusCode::OK {
            refused = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refused.expect("a write fails on a full disk");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
    assert!(
        !answer.to_string().contains("space"),
        "storage internals reach an API client: {answer}"
    );

    // Within the grace period /readyz says why, for the operator.
    let (status, ready) = readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["error"]["code"], "store_unavailable");
    let message = ready["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("No space left on device"),
        "the reason is missing: {message}"
    );

    // Then the process exits on its own, non-zero, for its supervisor to restart it.
    let exit = server.exit_status().await;
    assert_eq!(exit.code(), Some(1), "{exit:?}");
}
