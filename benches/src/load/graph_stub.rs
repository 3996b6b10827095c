//! A tiny loopback stand-in for the WhatsApp Graph API, so that agent replies (and any AI
//! answers) the server sends during a load run succeed. It speaks just enough HTTP/1.1
//! (keep-alive, Content-Length and chunked bodies) to answer
//! `POST {base}/{phone_number_id}/messages` with Meta's success shape.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const MAX_LINE: u64 = 16 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A running stand-in; stops accepting when dropped.
pub struct GraphStub {
    /// Value for the channel's `api_base_url`.
    pub base_url: String,
    state: Arc<StubState>,
    accept: JoinHandle<()>,
}

impl GraphStub {
    /// Outbound send requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.sends.load(Ordering::Relaxed)
    }
}

impl Drop for GraphStub {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct StubState {
    run_id: String,
    sends: AtomicU64,
    next_id: AtomicU64,
}

/// Binds 127.0.0.1:0 and serves until dropped.
pub async fn start(run_id: &str) -> anyhow::Result<GraphStub> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding the Graph API stand-in on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let state = Arc::new(StubState {
        run_id: run_id.to_owned(),
        sends: AtomicU64::new(0),
        next_id: AtomicU64::new(0),
    });
    let accept_state = Arc::clone(&state);
    let accept = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((socket, _)) => {
                    let state = Arc::clone(&accept_state);
                    tokio::spawn(async move {
                        // A broken client connection only ends that connection.
                        let _ = serve_connection(socket, &state).await;
                    });
                }
                // Typically EMFILE while thousands of sockets are open: back off briefly.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    });
    Ok(GraphStub {
        base_url: format!("http://{addr}/v21.0"),
        state,
        accept,
    })
}

#[derive(Debug, PartialEq)]
struct StubRequest {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

async fn serve_connection(socket: TcpStream, state: &StubState) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    while let Some(request) = read_request(&mut reader).await? {
        let (status, body) = state.respond(&request);
        let connection = if request.close { "close" } else { "keep-alive" };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n",
            body.len()
        );
        write.write_all(head.as_bytes()).await?;
        write.write_all(body.as_bytes()).await?;
        if request.close {
            break;
        }
    }
    Ok(())
}

impl StubState {
    fn respond(&self, request: &StubRequest) -> (&'static str, String) {
        if request.method != "POST" || !request.path.ends_with("/messages") {
            let body = serde_json::json!({"error": {
                "message": format!("unsupported {} {}", request.method, request.path),
                "type": "OAuthException", "code": 100}});
            return ("404 Not Found", body.to_string());
        }
        self.sends.fetch_add(1, Ordering::Relaxed);
        let to = serde_json::from_slice::<serde_json::Value>(&request.body)
            .ok()
            .and_then(|v| v.get("to").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_default();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": format!("wamid.stub.{}.{id}", self.run_id)}],
        });
        ("200 OK", body.to_string())
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// Reads one line (with its terminator) of at most `MAX_LINE` bytes; 0 at end of stream.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut String,
) -> io::Result<usize> {
    line.clear();
    let n = (&mut *reader).take(MAX_LINE).read_line(line).await?;
    if n as u64 == MAX_LINE && !line.ends_with('\n') {
        return Err(invalid("line too long"));
    }
    Ok(n)
}

/// Reads one HTTP/1.1 request; `None` when the peer closed between requests.
async fn read_request<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<StubRequest>> {
    let mut line = String::new();
    loop {
        if read_line(reader, &mut line).await? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let version = parts.next().unwrap_or("HTTP/1.1").to_owned();
    let mut close = version == "HTTP/1.0";
    let mut content_length = 0usize;
    let mut chunked = false;
    let mut headers_done = false;
    for _ in 0..MAX_HEADERS {
        if read_line(reader, &mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            headers_done = true;
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                content_length = value.parse().map_err(|_| invalid("bad content-length"))?;
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let value = value.to_ascii_lowercase();
                if value.contains("close") {
                    close = true;
                } else if value.contains("keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    }
    if !headers_done {
        return Err(invalid("too many headers"));
    }
    let body = if chunked {
        read_chunked(reader, &mut line).await?
    } else {
        if content_length > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).await?;
        body
    };
    Ok(Some(StubRequest {
        method,
        path,
        body,
        close,
    }))
}

async fn read_chunked<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut String,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        if read_line(reader, line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let size_text = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailer section, ended by an empty line.
            for _ in 0..MAX_HEADERS {
                if read_line(reader, line).await? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
            return Err(invalid("too many trailers"));
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        if let Some(chunk) = body.get_mut(start..) {
            reader.read_exact(chunk).await?;
        }
        read_line(reader, line).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_content_length_and_chunked_requests() {
        let raw: &[u8] = b"POST /v21.0/123/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{\"to\":\"42\"}\
POST /v21.0/123/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\n{\"to\r\n6\r\n\":\"7\"}\r\n0\r\n\r\n";
        let mut reader = BufReader::new(raw);
        let first = read_request(&mut reader).await.ok().flatten();
        assert_eq!(
            first,
            Some(StubRequest {
                method: "POST".to_owned(),
                path: "/v21.0/123/messages".to_owned(),
                body: br#"{"to":"42"}"#.to_vec(),
                close: false,
            })
        );
        let second = read_request(&mut reader).await.ok().flatten();
        assert_eq!(
            second.as_ref().map(|r| r.body.as_slice()),
            Some(&br#"{"to":"7"}"#[..])
        );
        assert_eq!(second.map(|r| r.close), Some(true));
        assert!(matches!(read_request(&mut reader).await, Ok(None)));
    }

    #[tokio::test]
    async fn answers_sends_like_the_graph_api() {
        let stub = match start("run1").await {
            Ok(stub) => stub,
            Err(e) => panic!("{e}"),
        };
        let client = reqwest::Client::builder().no_proxy().build();
        let client = match client {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        for _ in 0..2 {
            let response = client
                .post(format!("{}/1555000/messages", stub.base_url))
                .json(&serde_json::json!({"messaging_product": "whatsapp", "to": "15550001", "type": "text"}))
                .send()
                .await;
            let response = match response {
                Ok(r) => r,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            assert_eq!(body["contacts"][0]["wa_id"], "15550001");
            assert_eq!(body["contacts"][0]["input"], "15550001");
            assert!(body["messages"][0]["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("wamid.")));
        }
        assert_eq!(stub.requests(), 2);
        let missing = client.get(format!("{}/other", stub.base_url)).send().await;
        assert_eq!(missing.map(|r| r.status().as_u16()).ok(), Some(404));
    }
}
