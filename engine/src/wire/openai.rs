//! OpenAI-compatible chat completions (OpenAI, Ollama, vLLM …) as the AI agent reads
//! them: the model's structured answer inside `choices[0].message.content`. Pure, and no
//! input can make it panic (fuzzed: `fuzz/fuzz_targets/openai_answer.rs`).

use serde_json::Value;

/// Longest intent name kept; a longer one is `other`.
pub const MAX_INTENT_CHARS: usize = 40;

/// The model's structured answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub reply: String,
    pub intent: String,
    /// 0 to 1.
    pub confidence: f64,
    pub escalate: bool,
    pub reason: String,
}

/// Reads a chat completion's answer: `choices[0].message.content` as the JSON object.
pub fn parse_answer(body: &[u8]) -> Result<Answer, String> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let content = root
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or("the answer has no choices[0].message.content")?;
    // Some models wrap JSON in a code fence.
    let trimmed = content
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    let answer: Value = serde_json::from_str(trimmed)
        .map_err(|e| format!("the model's content is not the JSON asked for: {e}"))?;
    let text = |key: &str| {
        answer
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let confidence = answer
        .get("confidence")
        .and_then(Value::as_f64)
        .filter(|c| c.is_finite())
        .ok_or("the model's answer has no numeric confidence")?
        .clamp(0.0, 1.0);
    let intent = Some(text("intent"))
        .filter(|i| !i.is_empty() && i.chars().count() <= MAX_INTENT_CHARS)
        .unwrap_or_else(|| "other".into());
    Ok(Answer {
        reply: text("reply"),
        intent,
        confidence,
        escalate: answer
            .get("escalate")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        reason: Some(text("reason"))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "the model gave no reason".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_parse_from_the_content_json() {
        let body = json!({"choices": [{"message": {"role": "assistant", "content": "```json\n{\"reply\":\"It costs 49.\",\"intent\":\"pricing\",\"confidence\":0.92,\"escalate\":false,\"reason\":\"from Pricing\"}\n```"}}]});
        let answer = parse_answer(body.to_string().as_bytes()).expect("parses");
        assert_eq!(answer.reply, "It costs 49.");
        assert_eq!(answer.intent, "pricing");
        assert!(!answer.escalate);
        assert!((answer.confidence - 0.92).abs() < 1e-9);
        for bad in [
            json!({"choices": []}),
            json!({"choices": [{"message": {"content": "just text"}}]}),
            json!({"choices": [{"message": {"content": "{\"reply\":\"x\"}"}}]}),
        ] {
            assert!(parse_answer(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
    }
}
