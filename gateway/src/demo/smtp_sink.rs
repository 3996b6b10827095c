//! A loopback SMTP server that accepts mail and keeps it: the demo's email channel sends
//! through it, and the tests use it as the real protocol peer of the SMTP path (RFC 5321:
//! EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT). Replies
//! to DATA can be scripted (`451` then `250`, `550`) to drive retries and failures.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// Longest command line and longest message taken.
const MAX_LINE: usize = 4096;
const MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// One message the sink accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent, dot-stuffing undone, CRLF line ends kept.
    pub data: Vec<u8>,
    /// The user name it authenticated as, if it did.
    pub user: Option<String>,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// Replies to the next DATA commands, in order; then `250`.
    script: Mutex<VecDeque<String>>,
    /// `(user, password)` required by AUTH when set.
    credentials: Mutex<Option<(String, String)>>,
}

/// A running sink. Dropping it stops accepting connections.
pub struct SmtpSink {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    news: broadcast::Sender<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    /// Listens on `addr` (port 0 for any).
    pub async fn start(addr: SocketAddr) -> std::io::Result<SmtpSink> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (news, _) = broadcast::channel(1024);
        let task = {
            let (shared, news) = (shared.clone(), news.clone());
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let (shared, news) = (shared.clone(), news.clone());
                    tokio::spawn(async move {
                        if let Err(e) = session(socket, &shared, &news).await {
                            tracing::debug!(error = %e, "SMTP sink session ended");
                        }
                    });
                }
            })
        };
        Ok(SmtpSink {
            addr,
            shared,
            news,
            task,
        })
    }

    /// Every message accepted so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Messages as they are accepted.
    pub fn subscribe(&self) -> broadcast::Receiver<Received> {
        self.news.subscribe()
    }

    /// The replies to the next DATA commands (`"451 4.3.0 try again"`), before `250`.
    pub fn script(&self, replies: &[&str]) {
        lock(&self.shared.script).extend(replies.iter().map(|r| r.to_string()));
    }

    /// Requires AUTH with these credentials (`535` otherwise).
    pub fn require_auth(&self, user: &str, password: &str) {
        *lock(&self.shared.credentials) = Some((user.to_owned(), password.to_owned()));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Envelope {
    from: Option<String>,
    to: Vec<String>,
}

async fn session(
    socket: TcpStream,
    shared: &Shared,
    news: &broadcast::Sender<Received>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    let mut envelope = Envelope {
        from: None,
        to: Vec::new(),
    };
    let mut user: Option<String> = None;
    write.write_all(b"220 confab-sink ESMTP\r\n").await?;
    loop {
        let Some(line) = read_line(&mut lines).await? else {
            return Ok(());
        };
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-confab-sink\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 33554432".into()
        } else if upper.starts_with("HELO") {
            "250 confab-sink".into()
        } else if upper.starts_with("AUTH PLAIN") {
            let given = match line.split_whitespace().nth(2) {
                Some(encoded) => encoded.to_owned(),
                None => {
                    write.write_all(b"334 \r\n").await?;
                    read_line(&mut lines).await?.unwrap_or_default()
                }
            };
            let decoded = confab_engine::wire::email::base64_decode(&given).unwrap_or_default();
            let mut parts = decoded.split(|&b| b == 0).skip(1);
            let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let password = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            auth_reply(shared, &mut user, name, &password)
        } else if upper.starts_with("AUTH LOGIN") {
            write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
            let name = read_line(&mut lines).await?.unwrap_or_default();
            write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
            let password = read_line(&mut lines).await?.unwrap_or_default();
            let text = |b64: &str| {
                String::from_utf8_lossy(
                    &confab_engine::wire::email::base64_decode(b64).unwrap_or_default(),
                )
                .into_owned()
            };
            auth_reply(shared, &mut user, text(&name), &text(&password))
        } else if upper.starts_with("MAIL FROM:") {
            if lock(&shared.credentials).is_some() && user.is_none() {
                "530 5.7.0 Authentication required".into()
            } else {
                envelope.from = Some(address(&line["MAIL FROM:".len()..]));
                envelope.to.clear();
                "250 2.1.0 Ok".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            if envelope.from.is_none() {
                "503 5.5.1 MAIL first".into()
            } else {
                envelope.to.push(address(&line["RCPT TO:".len()..]));
                "250 2.1.5 Ok".into()
            }
        } else if upper == "DATA" {
            if envelope.to.is_empty() {
                "503 5.5.1 RCPT first".into()
            } else {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let data = read_data(&mut lines).await?;
                let reply = lock(&shared.script)
                    .pop_front()
                    .unwrap_or_else(|| "250 2.0.0 Ok: queued".into());
                if reply.starts_with('2') {
                    let received = Received {
                        from: envelope.from.clone().unwrap_or_default(),
                        to: envelope.to.clone(),
                        data,
                        user: user.clone(),
                    };
                    lock(&shared.received).push(received.clone());
                    let _ = news.send(received);
                }
                envelope.from = None;
                envelope.to.clear();
                reply
            }
        } else if upper == "RSET" {
            envelope.from = None;
            envelope.to.clear();
            "250 2.0.0 Ok".into()
        } else if upper == "NOOP" {
            "250 2.0.0 Ok".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 Command not recognized".into()
        };
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\r\n").await?;
    }
}

fn auth_reply(shared: &Shared, user: &mut Option<String>, name: String, password: &str) -> String {
    match &*lock(&shared.credentials) {
        Some((expected_user, expected)) if *expected_user != name || expected != password => {
            "535 5.7.8 Authentication credentials invalid".into()
        }
        _ => {
            *user = Some(name);
            "235 2.7.0 Authentication successful".into()
        }
    }
}

/// `<a@b> SIZE=…` → `a@b`.
fn address(rest: &str) -> String {
    let rest = rest.trim();
    match (rest.find('<'), rest.find('>')) {
        (Some(open), Some(close)) if open < close => rest[open + 1..close].to_owned(),
        _ => rest.split_whitespace().next().unwrap_or("").to_owned(),
    }
}

async fn read_line(
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *lines)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
    ))
}

/// The DATA section up to the lone `.`, dot-stuffing undone (RFC 5321 §4.5.2).
async fn read_data(
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = lines.read_until(b'\n', &mut line).await?;
        if n == 0 || line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() + line.len() <= MAX_MESSAGE {
            data.extend_from_slice(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_addresses_lose_their_brackets_and_parameters() {
        assert_eq!(address(" <a@b.example> SIZE=10"), "a@b.example");
        assert_eq!(address("a@b.example"), "a@b.example");
        assert_eq!(
            confab_engine::wire::email::base64_decode("AGFuYQBzM2NyZXQ="),
            Some(b"\0ana\0s3cret".to_vec())
        );
    }
}
