//! The OpenAI-compatible backend: `POST {base_url}/chat/completions` (OpenAI, Ollama,
//! vLLM …) with the workspace's instructions, the retrieved knowledge and the
//! conversation's recent history; the model answers a JSON object
//! `{"reply","intent","confidence","escalate","reason"}`. Each attempt has a timeout;
//! failed attempts are retried with backoff; when none succeeds the pool escalates with
//! `ai_backend_unavailable`.

use std::time::Duration;

use confab_engine::ai::OpenAiSettings;
use confab_engine::model::{Direction, Message, Sender};
use confab_engine::wire::openai::{parse_answer, Answer};
use confab_index::KnowledgeHit;
use serde_json::{json, Value};

/// What one decision sends.
pub struct Call<'a> {
    pub settings: &'a OpenAiSettings,
    pub instructions: &'a str,
    pub knowledge: &'a [KnowledgeHit],
    pub history: &'a [Message],
    pub timeout: Duration,
    pub attempts: u32,
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

/// Asks the model, retrying failed attempts with backoff.
pub async fn ask(http: &reqwest::Client, call: Call<'_>) -> Result<Answer, String> {
    let url = format!(
        "{}/chat/completions",
        call.settings.base_url.trim_end_matches('/')
    );
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
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                last = format!("reading the backend's answer failed: {e}");
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
