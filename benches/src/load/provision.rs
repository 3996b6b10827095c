//! Provisioning through the admin API: a fresh workspace, an admin agent (whose token the
//! subscribers and replies use) and, for message load, a WhatsApp channel with a random
//! app secret pointing at the loopback Graph API stand-in.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

/// Random lowercase hex of `len` characters. The standard library seeds `RandomState`
/// from the OS, which is ample for run ids and test secrets.
pub fn random_hex(len: usize) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_usize(out.len());
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(len);
    out
}

/// Random digits of `len` characters, not starting with 0.
pub fn random_digits(len: usize) -> String {
    let mut out: String = random_hex(len * 2)
        .bytes()
        .map(|b| char::from(b'0' + (b % 10)))
        .take(len)
        .collect();
    if out.starts_with('0') {
        out.replace_range(0..1, "9");
    }
    out
}

pub struct Channel {
    pub id: String,
    pub phone_number_id: String,
    pub app_secret: String,
}

pub struct Provisioned {
    pub workspace_id: String,
    pub agent_token: String,
    pub channel: Option<Channel>,
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    admin_token: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let response = client
        .post(url)
        .bearer_auth(admin_token)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 | 403 => " (is --admin-token the server's CONFAB_ADMIN_TOKEN?)",
            404 => " (admin routes are disabled unless the server has CONFAB_ADMIN_TOKEN set)",
            _ => "",
        };
        bail!("POST {url} answered {status}: {text}{hint}");
    }
    serde_json::from_str(&text).with_context(|| {
        format!("POST {url} answered {status} with a body that is not JSON: {text}")
    })
}

fn string_field(value: &Value, key: &str, what: &str) -> anyhow::Result<String> {
    match value.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => bail!("{what} response lacks a `{key}` string: {value}"),
    }
}

/// Creates the workspace, agent and (when `graph_api_base` is given) WhatsApp channel.
pub async fn provision(
    client: &reqwest::Client,
    base_url: &str,
    admin_token: &str,
    run_id: &str,
    graph_api_base: Option<&str>,
) -> anyhow::Result<Provisioned> {
    let admin = format!("{base_url}/api/v1/admin/workspaces");
    let workspace = post(
        client,
        &admin,
        admin_token,
        &json!({"name": format!("confab-load {run_id}")}),
    )
    .await
    .context("creating the workspace")?;
    let workspace_id = string_field(&workspace, "id", "workspace")?;

    let agent = post(
        client,
        &format!("{admin}/{workspace_id}/agents"),
        admin_token,
        &json!({
            "name": "Load Admin",
            "email": format!("load-{run_id}@confab-load.invalid"),
            "role": "admin",
        }),
    )
    .await
    .context("creating the agent")?;
    let agent_token = string_field(&agent, "token", "agent")?;

    let channel = match graph_api_base {
        None => None,
        Some(api_base_url) => {
            let phone_number_id = random_digits(15);
            let app_secret = random_hex(32);
            let channel = post(
                client,
                &format!("{admin}/{workspace_id}/channels"),
                admin_token,
                &json!({
                    "kind": "whatsapp",
                    "name": format!("load {run_id}"),
                    "phone_number_id": phone_number_id,
                    "app_secret": app_secret,
                    "verify_token": random_hex(16),
                    "access_token": format!("load-access-{}", random_hex(16)),
                    "api_base_url": api_base_url,
                }),
            )
            .await
            .context("creating the WhatsApp channel")?;
            Some(Channel {
                id: string_field(&channel, "id", "channel")?,
                phone_number_id,
                app_secret,
            })
        }
    };
    Ok(Provisioned {
        workspace_id,
        agent_token,
        channel,
    })
}

/// Enables the built-in AI agent for the load's workspace, answering every message (see
/// `--ai`), through the API as a workspace admin would.
pub async fn enable_ai(
    client: &reqwest::Client,
    base_url: &str,
    agent_token: &str,
    reply_delay_ms: u64,
) -> anyhow::Result<()> {
    post(
        client,
        &format!("{base_url}/api/v1/kb/articles"),
        agent_token,
        &json!({"title": "load", "body": "This answers every load message."}),
    )
    .await
    .context("adding the knowledge article")?;
    let url = format!("{base_url}/api/v1/ai/config");
    let response = client
        .put(&url)
        .bearer_auth(agent_token)
        .json(&json!({
            "enabled": true,
            "reply_delay_ms": reply_delay_ms,
            "confidence_threshold": 0.3,
            "max_replies_per_conversation_per_day": 1000,
        }))
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    if !response.status().is_success() {
        bail!("PUT {url} answered {}", response.status());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_have_the_requested_shape() {
        let a = random_hex(32);
        let b = random_hex(32);
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        let digits = random_digits(15);
        assert_eq!(digits.len(), 15);
        assert!(digits.bytes().all(|c| c.is_ascii_digit()));
        assert!(!digits.starts_with('0'));
    }
}
