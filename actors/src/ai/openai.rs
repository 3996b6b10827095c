//! The OpenAI-compatible backend: `POST {base_url}/chat/completions` (OpenAI, Ollama,
//! vLLM …) with the workspace's instructions, the retrieved knowledge and the
//! conversation's recent history; the model answers a JSON object
//! `{"reply","intent","confidence","escalate","reason"}`. Each attempt has a timeout;
//! failed attempts are retried with backoff; when none succeeds the pool escalates with
//! `ai_backend_unavailable`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use confab_engine::ai::OpenAiSettings;
use confab_engine::model::{Direction, Message, Sender};
use confab_engine::wire::openai::{parse_answer, Answer};
use confab_index::KnowledgeHit;
use serde_json::{json, Value};

/// The longest answer read from a backend: a chat completion is a few kilobytes.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Whether `ip` is an address of this machine or of a private network (loopback,
/// RFC 1918, carrier-grade NAT, link-local and cloud metadata, unique local, unspecified,
/// multicast, broadcast): workspace admins choose the backend's URL, and must not reach the
/// operator's internal services through it unless the operator allows it.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Why `url` may not be used as a backend when private addresses are not allowed: a
/// literal private address or `localhost`. Names are checked again when they resolve.
pub fn refused_host(url: &reqwest::Url) -> Option<String> {
    private_host(url).map(|host| format!("{host} is a private or local address (allowed only with the server's `ai.allow_private_backends`)"))
}

/// The URL's host when it is a private or local address (or `localhost`).
pub fn private_host(url: &reqwest::Url) -> Option<&str> {
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let private = match bare.parse::<IpAddr>() {
        Ok(ip) => is_private(ip),
        Err(_) => {
            let name = bare.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    private.then_some(host)
}

/// Resolves names to public addresses only: a name that resolves to a private one (DNS
/// rebinding included) is not connected to.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The client that calls backends: one that connects to public addresses only, unless
/// the operator allows private ones (a model served on the same machine or network).
pub fn client(allow_private: bool) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder().pool_max_idle_per_host(16);
    if allow_private {
        builder.build()
    } else {
        builder.dns_resolver(Arc::new(PublicOnly)).build()
    }
}

/// What one decision sends.
pub struct Call<'a> {
    pub settings: &'a OpenAiSettings,
    pub instructions: &'a str,
    pub knowledge: &'a [KnowledgeHit],
    pub history: &'a [Message],
    pub timeout: Duration,
    pub attempts: u32,
    pub allow_private: bool,
}

/// The answer format the model is told to follow.
const FORMAT: &str = "Answer with one JSON object and nothing else: {\"reply\": the message to send to the lead (empty if you escalate), \"intent\": one of greeting, question, pricing, meeting_request, human_request, opt_out, complaint, out_of_office, thanks, other, \"confidence\": 0 to 1, \"escalate\": true when a person should answer, \"reason\": why, in one sentence}. Use only the knowledge given; if it does not answer the question, escalate.";

/// The request body: system instructions and knowledge, then the conversation.
pub fn request_body(call: &Call<'_>) -> Value {
    let mut system = String::new();
    if !call.instructions.trim().is_empty() {
        system.push_str(call.instructions.trim());
        system.push_str("\n\n");
    }
    system.push_str("Knowledge base:\n");
    if call.knowledge.is_empty() {
        system.push_str("(nothing relevant)\n");
    }
    for hit in call.knowledge {
        system.push_str(&format!("## {}\n{}\n\n", hit.title, hit.text));
    }
    system.push('\n');
    system.push_str(FORMAT);
    let mut messages = vec![json!({"role": "system", "content": system})];
    for m in call.history.iter().filter(|m| !m.internal) {
        let role = match (m.direction, m.sender) {
            (Direction::Inbound, _) => "user",
            (_, Sender::System) => continue,
            _ => "assistant",
        };
        messages.push(json!({"role": role, "content": m.text}));
    }
    json!({
        "model": call.settings.model,
        "messages": messages,
        "temperature": 0,
        "response_format": {"type": "json_object"},
    })
}

/// The answer's body, refused past [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(format!(
                        "the backend's answer is over {MAX_ANSWER_BYTES} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("reading the backend's answer failed: {e}")),
        }
    }
}

/// Asks the model, retrying failed attempts with backoff.
pub async fn ask(http: &reqwest::Client, call: Call<'_>) -> Result<Answer, String> {
    let url = format!(
        "{}/chat/completions",
        call.settings.base_url.trim_end_matches('/')
    );
    if !call.allow_private {
        let parsed = reqwest::Url::parse(&url).map_err(|e| format!("the backend's URL: {e}"))?;
        if let Some(why) = refused_host(&parsed) {
            return Err(why);
        }
    }
    let body = request_body(&call);
    let mut last = String::new();
    for attempt in 0..call.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt - 1))).await;
        }
        let mut request = http.post(&url).timeout(call.timeout).json(&body);
        if !call.settings.api_key.is_empty() {
            request = request.bearer_auth(&call.settings.api_key);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                last = format!("the backend could not be reached: {e}");
                continue;
            }
        };
        let status = response.status();
        let bytes = match read_capped(response).await {
            Ok(bytes) => bytes,
            Err(e) => {
                last = e;
                continue;
            }
        };
        if !status.is_success() {
            last = format!("HTTP {}", status.as_u16());
            // A request the backend refuses will be refused again.
            if status.is_client_error() && status.as_u16() != 429 && status.as_u16() != 408 {
                break;
            }
            continue;
        }
        match parse_answer(&bytes) {
            Ok(answer) => return Ok(answer),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod address_tests {
    use super::*;

    #[test]
    fn private_and_local_addresses_are_recognized() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(private.parse().expect("ip")), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_private(public.parse().expect("ip")), "{public}");
        }
        let refused = |u: &str| refused_host(&reqwest::Url::parse(u).expect("url")).is_some();
        assert!(refused("http://127.0.0.1:11434/v1"));
        assert!(refused("http://localhost:11434/v1"));
        assert!(refused("http://[::1]/v1"));
        assert!(refused("http://169.254.169.254/latest"));
        assert!(!refused("https://api.openai.com/v1"));
    }
}
