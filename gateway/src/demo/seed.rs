//! The demo workspace: provisioned through the admin HTTP API on the first run, remembered
//! in `demo.json` in the data directory, and reused on later runs so restarting the demo
//! keeps its conversations and its agent token instead of piling up duplicate workspaces.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use confab_engine::admin::token_hash;
use confab_engine::ids::{ChannelId, WorkspaceId};
use confab_engine::model::WhatsappConfig;
use confab_engine::store::Store;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The file, inside the data directory, that remembers the demo's ids and secrets.
pub const STATE_FILE: &str = "demo.json";

pub const WORKSPACE_NAME: &str = "Northwind Growth Agency (demo)";
pub const AGENT_NAME: &str = "Demo Admin";
pub const AGENT_EMAIL: &str = "demo-admin@example.com";
/// The demo agent's password in the web inbox (the demo is local and loopback-only).
pub const AGENT_PASSWORD: &str = "confab-demo";
pub const CHANNEL_NAME: &str = "WhatsApp (sandbox)";
pub const MAILBOX_NAME: &str = "Email (demo mailbox)";
pub const LINKEDIN_NAME: &str = "LinkedIn (demo account)";
/// The demo mailbox's address: leads write to it, replies leave from it.
pub const MAILBOX_ADDRESS: &str = "hello@northwind-growth.example";

/// What the demo created, as kept in `demo.json`. Holds secrets: the file is private to
/// its owner where the platform allows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoState {
    pub workspace_id: String,
    pub agent_id: String,
    /// Shown once by the API, so this file is the only place it survives.
    pub agent_token: String,
    pub channel: DemoChannel,
    /// How far each simulated lead got through its script, so a restarted demo carries on
    /// instead of having every lead say hello again.
    #[serde(default)]
    pub script_progress: Vec<usize>,
    /// The demo's email channel (absent in states saved before it existed).
    #[serde(default)]
    pub mailbox: Option<DemoMailbox>,
    /// The demo's LinkedIn channel (absent in states saved before it existed).
    #[serde(default)]
    pub linkedin: Option<DemoLinkedin>,
}

/// The demo's LinkedIn account: its Unipile stand-in answers with these credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoLinkedin {
    /// Empty until the channel is created.
    pub id: String,
    pub account_id: String,
    pub api_key: String,
    pub webhook_secret: String,
}

impl DemoLinkedin {
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        let mut secret = || hex::encode(rng.gen::<[u8; 16]>());
        let (account_id, api_key, webhook_secret) = (secret(), secret(), secret());
        Self {
            id: String::new(),
            account_id: format!("demo-{}", &account_id[..12]),
            api_key,
            webhook_secret,
        }
    }
}

/// The loopback stand-ins the demo's channels talk to.
pub struct StandIns<'a> {
    /// The WhatsApp sandbox's base URL.
    pub sandbox_base_url: &'a str,
    /// The SMTP sink's port.
    pub smtp_port: u16,
    /// The LinkedIn account the Unipile stand-in plays, and where it listens.
    pub linkedin: &'a DemoLinkedin,
    pub unipile_base_url: &'a str,
}

/// The demo's email channel: leads write in through its signed webhook, its mail goes to
/// the built-in SMTP sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoMailbox {
    pub id: String,
    pub inbound_secret: String,
    /// Where the SMTP sink listened; the demo tries to listen there again.
    pub smtp_port: u16,
}

/// The demo's WhatsApp channel and the credentials the sandbox plays Meta with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoChannel {
    pub id: String,
    pub phone_number_id: String,
    pub app_secret: String,
    pub verify_token: String,
    pub access_token: String,
    /// The sandbox address the channel sends to; the demo tries to listen there again.
    pub api_base_url: String,
}

impl DemoChannel {
    /// Fresh credentials for a channel served by the sandbox at `api_base_url`.
    fn generate(api_base_url: &str) -> Self {
        let mut rng = rand::thread_rng();
        let mut secret = || hex::encode(rng.gen::<[u8; 16]>());
        let (app_secret, verify_token, access_token) = (secret(), secret(), secret());
        Self {
            id: String::new(),
            // Graph phone number ids are 15-digit numbers.
            phone_number_id: format!(
                "1{:014}",
                rand::thread_rng().gen_range(0..100_000_000_000_000u64)
            ),
            app_secret,
            verify_token,
            access_token,
            api_base_url: api_base_url.to_owned(),
        }
    }

    fn as_config(&self) -> WhatsappConfig {
        WhatsappConfig {
            phone_number_id: self.phone_number_id.clone(),
            app_secret: self.app_secret.clone(),
            verify_token: self.verify_token.clone(),
            access_token: self.access_token.clone(),
            api_base_url: self.api_base_url.clone(),
        }
    }
}

pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE)
}

/// The remembered state, if there is a readable one. A damaged file is reported and
/// ignored: the demo then provisions a new workspace next to the old one.
pub fn load(data_dir: &Path) -> Option<DemoState> {
    let path = state_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the demo state; provisioning afresh");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the demo state is damaged; provisioning afresh");
            None
        }
    }
}

/// Writes the state atomically (a temporary file renamed over the old one), so a crash
/// never leaves half a file and loses the agent token.
pub fn save(data_dir: &Path, state: &DemoState) -> anyhow::Result<()> {
    let path = state_path(data_dir);
    let temp = data_dir.join(format!("{STATE_FILE}.tmp"));
    let text = serde_json::to_string_pretty(state)?;
    write_private(&temp, text.as_bytes())
        .with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, &path).with_context(|| format!("cannot write {}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Which parts of a remembered state the store still agrees with.
#[derive(Debug, Default, PartialEq)]
struct Still {
    workspace: bool,
    agent: bool,
    channel: bool,
    mailbox: bool,
    linkedin: bool,
}

/// Checks the remembered ids against the store: the workspace exists, the token still
/// authenticates the remembered agent of that workspace, and the channel is configured
/// exactly as remembered and sends to `sandbox_base_url`.
fn check(store: &Store, state: &DemoState, sandbox_base_url: &str) -> anyhow::Result<Still> {
    let Ok(workspace_id) = state.workspace_id.parse::<WorkspaceId>() else {
        return Ok(Still::default());
    };
    if store.workspace(workspace_id)?.is_none() {
        return Ok(Still::default());
    }
    let agent = store
        .agent_by_token_hash(&token_hash(&state.agent_token))?
        .is_some_and(|agent| {
            agent.workspace_id == workspace_id && agent.id.to_string() == state.agent_id
        });
    let channel = match state.channel.id.parse::<ChannelId>() {
        Ok(id) => store.channel(id)?.is_some_and(|channel| {
            channel.workspace_id == workspace_id
                && channel.config.whatsapp().is_some_and(|config| {
                    *config == state.channel.as_config() && config.api_base_url == sandbox_base_url
                })
        }),
        Err(_) => false,
    };
    let mailbox = match state.mailbox.as_ref().map(|m| m.id.parse::<ChannelId>()) {
        Some(Ok(id)) => store.channel(id)?.is_some_and(|channel| {
            channel.workspace_id == workspace_id && channel.config.email().is_some()
        }),
        _ => false,
    };
    let linkedin = match state.linkedin.as_ref() {
        Some(saved) => match saved.id.parse::<ChannelId>() {
            Ok(id) => store.channel(id)?.is_some_and(|channel| {
                channel.workspace_id == workspace_id
                    && channel.config.linkedin().is_some_and(|c| {
                        c.account_id == saved.account_id
                            && c.api_key == saved.api_key
                            && c.webhook_secret == saved.webhook_secret
                    })
            }),
            Err(_) => false,
        },
        None => false,
    };
    Ok(Still {
        workspace: true,
        agent,
        channel,
        mailbox,
        linkedin,
    })
}

/// The admin API of the running server, reached over real HTTP.
struct AdminApi {
    client: reqwest::Client,
    base_url: String,
    token: String,
}

impl AdminApi {
    /// POSTs `body` to `path` and returns the created object; anything but a 201 is an error.
    async fn create(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .client
            .post(&url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        anyhow::ensure!(
            status == reqwest::StatusCode::CREATED,
            "POST {path} answered HTTP {status}: {}",
            text.trim()
        );
        serde_json::from_str(&text).with_context(|| format!("POST {path} answered {text:?}"))
    }

    async fn create_workspace(&self) -> anyhow::Result<String> {
        let created = self
            .create("/api/v1/admin/workspaces", json!({"name": WORKSPACE_NAME}))
            .await?;
        field(&created, "id")
    }

    /// Returns the agent's id and token.
    async fn create_agent(&self, workspace_id: &str) -> anyhow::Result<(String, String)> {
        let created = self
            .create(
                &format!("/api/v1/admin/workspaces/{workspace_id}/agents"),
                json!({"name": AGENT_NAME, "email": AGENT_EMAIL, "role": "admin"}),
            )
            .await?;
        Ok((field(&created, "id")?, field(&created, "token")?))
    }

    /// PATCHes `body` onto `path`; anything but a 200 is an error.
    async fn patch(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .client
            .patch(&url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("PATCH {url}"))?;
        anyhow::ensure!(
            response.status() == reqwest::StatusCode::OK,
            "PATCH {path} answered HTTP {}",
            response.status()
        );
        Ok(())
    }

    /// Creates the demo mailbox, sending to the SMTP sink on `smtp_port`.
    async fn create_mailbox(
        &self,
        workspace_id: &str,
        smtp_port: u16,
    ) -> anyhow::Result<DemoMailbox> {
        let inbound_secret = hex::encode(rand::thread_rng().gen::<[u8; 16]>());
        let created = self
            .create(
                &format!("/api/v1/admin/workspaces/{workspace_id}/channels"),
                json!({
                    "kind": "email",
                    "name": MAILBOX_NAME,
                    "address": MAILBOX_ADDRESS,
                    "display_name": "Northwind Growth",
                    "inbound_secret": inbound_secret,
                    "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none"},
                }),
            )
            .await?;
        Ok(DemoMailbox {
            id: field(&created, "id")?,
            inbound_secret,
            smtp_port,
        })
    }

    /// Creates the demo LinkedIn channel, its Unipile API at `api_base_url`.
    async fn create_linkedin(
        &self,
        workspace_id: &str,
        mut account: DemoLinkedin,
        api_base_url: &str,
    ) -> anyhow::Result<DemoLinkedin> {
        let created = self
            .create(
                &format!("/api/v1/admin/workspaces/{workspace_id}/channels"),
                json!({
                    "kind": "linkedin",
                    "name": LINKEDIN_NAME,
                    "account_id": account.account_id,
                    "api_base_url": api_base_url,
                    "api_key": account.api_key,
                    "webhook_secret": account.webhook_secret,
                    // A lively demo: LinkedIn's real spacing (20 s) would feel broken here.
                    "min_interval_secs": 2,
                }),
            )
            .await?;
        account.id = field(&created, "id")?;
        Ok(account)
    }

    /// Creates the channel described by `channel` and returns it with its new id.
    async fn create_channel(
        &self,
        workspace_id: &str,
        mut channel: DemoChannel,
    ) -> anyhow::Result<DemoChannel> {
        let created = self
            .create(
                &format!("/api/v1/admin/workspaces/{workspace_id}/channels"),
                json!({
                    "kind": "whatsapp",
                    "name": CHANNEL_NAME,
                    "phone_number_id": channel.phone_number_id,
                    "app_secret": channel.app_secret,
                    "verify_token": channel.verify_token,
                    "access_token": channel.access_token,
                    "api_base_url": channel.api_base_url,
                }),
            )
            .await?;
        channel.id = field(&created, "id")?;
        Ok(channel)
    }
}

/// The demo agency's knowledge base: what the built-in AI agent answers from.
const KNOWLEDGE: [(&str, &str); 6] = [
    (
        "Pricing and retainer",
        "Our lead generation retainer costs 2,500 dollars per month for one location, and 1,500 dollars per month for each extra location. There is no setup fee and no long contract: cancel with 30 days notice.",
    ),
    (
        "Ad spend",
        "Ad spend is separate from the retainer and is paid directly to Meta and Google from your own ad accounts. We recommend starting with at least 1,000 dollars of ad spend per month per location.",
    ),
    (
        "What the offer includes",
        "The offer includes campaign setup, landing pages, daily optimisation, a lead inbox answered within minutes, and a weekly report. The current offer for new clinics is still valid this month.",
    ),
    (
        "Booking a call",
        "You can book a 20 minute call with our team any weekday between 9:00 and 18:00. Reply with a day and time that suits you and we will send a calendar invite.",
    ),
    (
        "Proposal",
        "We send a written proposal within one business day after a short discovery call: goals, budget, channels and expected cost per lead.",
    ),
    (
        "Results and case studies",
        "Clinics we work with typically see 40 to 80 qualified leads per month per location within the first 60 days. We can share case studies from dental and aesthetic clinics.",
    ),
];

/// Turns on the built-in AI agent and seeds its knowledge base, through the API like a
/// workspace admin would; skipped when the workspace already has articles.
/// Lets the demo agent sign in to the web inbox with [`AGENT_EMAIL`] and
/// [`AGENT_PASSWORD`].
async fn set_password(
    client: &reqwest::Client,
    base_url: &str,
    agent_token: &str,
    agent_id: &str,
) -> anyhow::Result<()> {
    let url = format!("{base_url}/api/v1/agents/{agent_id}/password");
    let response = client
        .put(&url)
        .bearer_auth(agent_token)
        .json(&json!({"password": AGENT_PASSWORD, "current_password": AGENT_PASSWORD}))
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    if !response.status().is_success() {
        // Changed by the user since: theirs to keep.
        tracing::warn!(status = %response.status(), "the demo agent's password was changed; the printed one may not work");
    }
    Ok(())
}

/// The demo workspace's canned replies (Settings → Canned replies; `/` in the composer).
const CANNED: [(&str, &str, &str); 3] = [
    (
        "Pricing",
        "price",
        "Hi {{first_name}}, our plans start at 49 dollars a seat per month, billed monthly. Shall I send the details?",
    ),
    (
        "Book a visit",
        "visit",
        "Hi {{first_name}}, we can show you around on weekdays from 9 to 18. Which day suits you?",
    ),
    (
        "Thanks",
        "thanks",
        "Thank you, {{first_name}}! I'm {{agent_name}}, and I'll be your contact from here.",
    ),
];

/// Seeds the canned replies through the API; skipped when the library has any.
async fn seed_canned(
    client: &reqwest::Client,
    base_url: &str,
    agent_token: &str,
) -> anyhow::Result<()> {
    let url = format!("{base_url}/api/v1/canned-replies");
    let listed: Value = client
        .get(&url)
        .bearer_auth(agent_token)
        .send()
        .await
        .context("listing the canned replies")?
        .json()
        .await
        .context("reading the canned replies")?;
    if listed["items"]
        .as_array()
        .is_some_and(|items| !items.is_empty())
    {
        return Ok(());
    }
    for (title, shortcut, text) in CANNED {
        let response = client
            .post(&url)
            .bearer_auth(agent_token)
            .json(&json!({"title": title, "shortcut": shortcut, "text": text}))
            .send()
            .await
            .context("adding a canned reply")?;
        anyhow::ensure!(
            response.status() == reqwest::StatusCode::CREATED,
            "adding a canned reply answered HTTP {}",
            response.status()
        );
    }
    Ok(())
}

async fn seed_ai(
    client: &reqwest::Client,
    base_url: &str,
    agent_token: &str,
) -> anyhow::Result<()> {
    let url = |path: &str| format!("{base_url}{path}");
    let listed: Value = client
        .get(url("/api/v1/kb/articles"))
        .bearer_auth(agent_token)
        .send()
        .await
        .context("listing the knowledge base")?
        .json()
        .await
        .context("reading the knowledge base")?;
    if listed["items"]
        .as_array()
        .is_some_and(|items| !items.is_empty())
    {
        return Ok(());
    }
    for (title, body) in KNOWLEDGE {
        let response = client
            .post(url("/api/v1/kb/articles"))
            .bearer_auth(agent_token)
            .json(&json!({"title": title, "body": body, "tags": ["demo"]}))
            .send()
            .await
            .context("adding a knowledge article")?;
        anyhow::ensure!(
            response.status() == reqwest::StatusCode::CREATED,
            "adding a knowledge article answered HTTP {}",
            response.status()
        );
    }
    let response = client
        .put(url("/api/v1/ai/config"))
        .bearer_auth(agent_token)
        .json(&json!({
            "enabled": true,
            "backend": "builtin",
            "default_mode": "active",
            "reply_delay_ms": 2000,
            "confidence_threshold": 0.4,
        }))
        .send()
        .await
        .context("enabling the AI agent")?;
    anyhow::ensure!(
        response.status().is_success(),
        "enabling the AI agent answered HTTP {}",
        response.status()
    );
    tracing::info!(
        "demo AI agent enabled with {} knowledge articles",
        KNOWLEDGE.len()
    );
    Ok(())
}

fn field(object: &Value, name: &str) -> anyhow::Result<String> {
    object
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("the admin API's answer has no {name:?}: {object}"))
}

/// Makes sure the demo workspace, its admin agent and its sandbox WhatsApp channel exist,
/// reusing what `saved` remembers when the store still agrees, and saves the result.
pub async fn ensure(
    store: &Store,
    data_dir: &Path,
    server_base_url: &str,
    admin_token: &str,
    saved: Option<DemoState>,
    stand_ins: StandIns<'_>,
) -> anyhow::Result<DemoState> {
    let StandIns {
        sandbox_base_url,
        smtp_port,
        linkedin,
        unipile_base_url,
    } = stand_ins;
    let still = match &saved {
        Some(state) => {
            let (store, state, url) = (store.clone(), state.clone(), sandbox_base_url.to_owned());
            tokio::task::spawn_blocking(move || check(&store, &state, &url))
                .await
                .context("the demo state check panicked")??
        }
        None => Still::default(),
    };
    let admin = AdminApi {
        client: reqwest::Client::new(),
        base_url: server_base_url.to_owned(),
        token: admin_token.to_owned(),
    };

    let (workspace_id, saved) = match saved {
        Some(state) if still.workspace => (state.workspace_id.clone(), Some(state)),
        _ => {
            let id = admin.create_workspace().await?;
            tracing::info!(workspace_id = %id, "demo workspace created");
            (id, None)
        }
    };
    let (agent_id, agent_token) = match &saved {
        Some(state) if still.agent => (state.agent_id.clone(), state.agent_token.clone()),
        _ => {
            let (id, token) = admin.create_agent(&workspace_id).await?;
            tracing::info!(agent_id = %id, "demo agent created");
            (id, token)
        }
    };
    // The leads' conversations live on the channel: a new channel starts them over.
    let script_progress = match &saved {
        Some(state) if still.channel => state.script_progress.clone(),
        _ => Vec::new(),
    };
    let channel = match &saved {
        Some(state) if still.channel => state.channel.clone(),
        _ => {
            if saved.is_some() {
                // Usually the sandbox could not get its old port back. The old channel's
                // conversations stay readable, but replies in them cannot be delivered.
                tracing::warn!("the demo's WhatsApp channel cannot be reused; creating a new one");
            }
            let channel = admin
                .create_channel(&workspace_id, DemoChannel::generate(sandbox_base_url))
                .await?;
            tracing::info!(channel_id = %channel.id, "demo WhatsApp channel created");
            channel
        }
    };
    let mailbox = match saved.as_ref().and_then(|s| s.mailbox.clone()) {
        Some(mailbox) if still.mailbox => {
            if mailbox.smtp_port != smtp_port {
                // The sink could not get its old port back: the mailbox follows it.
                admin
                    .patch(
                        &format!("/api/v1/admin/workspaces/{workspace_id}/channels/{}", mailbox.id),
                        json!({"smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none"}}),
                    )
                    .await?;
            }
            DemoMailbox {
                smtp_port,
                ..mailbox
            }
        }
        _ => {
            let mailbox = admin.create_mailbox(&workspace_id, smtp_port).await?;
            tracing::info!(channel_id = %mailbox.id, "demo email channel created");
            mailbox
        }
    };
    let linkedin = match saved.as_ref().and_then(|s| s.linkedin.clone()) {
        Some(account) if still.linkedin => {
            // The stand-in listens on a new port each run: the channel follows it.
            admin
                .patch(
                    &format!(
                        "/api/v1/admin/workspaces/{workspace_id}/channels/{}",
                        account.id
                    ),
                    json!({"api_base_url": unipile_base_url}),
                )
                .await?;
            account
        }
        _ => {
            let account = admin
                .create_linkedin(&workspace_id, linkedin.clone(), unipile_base_url)
                .await?;
            tracing::info!(channel_id = %account.id, "demo LinkedIn channel created");
            account
        }
    };
    if saved.is_some() && still.agent && still.channel {
        tracing::info!(%workspace_id, "reusing the demo workspace");
    }

    seed_ai(&admin.client, server_base_url, &agent_token).await?;
    seed_canned(&admin.client, server_base_url, &agent_token).await?;
    set_password(&admin.client, server_base_url, &agent_token, &agent_id).await?;

    let state = DemoState {
        workspace_id,
        agent_id,
        agent_token,
        channel,
        script_progress,
        mailbox: Some(mailbox),
        linkedin: Some(linkedin),
    };
    let dir = data_dir.to_owned();
    let to_save = state.clone();
    tokio::task::spawn_blocking(move || save(&dir, &to_save))
        .await
        .context("saving the demo state panicked")??;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DemoState {
        DemoState {
            workspace_id: "01JGZZZZZZZZZZZZZZZZZZZZZZ".into(),
            agent_id: "01JGZZZZZZZZZZZZZZZZZZZZZY".into(),
            agent_token: "cfb_token".into(),
            channel: DemoChannel::generate("http://127.0.0.1:4000"),
            script_progress: vec![2, 0, 5],
            mailbox: Some(DemoMailbox {
                id: "01JGZZZZZZZZZZZZZZZZZZZZZX".into(),
                inbound_secret: "s3cr3t-mail".into(),
                smtp_port: 2525,
            }),
            linkedin: Some(DemoLinkedin {
                id: "01JGZZZZZZZZZZZZZZZZZZZZZW".into(),
                ..DemoLinkedin::generate()
            }),
        }
    }

    #[test]
    fn the_state_survives_a_save_and_load() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(load(dir.path()), None);
        let state = sample();
        save(dir.path(), &state).expect("save");
        assert_eq!(load(dir.path()), Some(state));
        assert!(!dir.path().join(format!("{STATE_FILE}.tmp")).exists());
    }

    #[cfg(unix)]
    #[test]
    fn the_state_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        save(dir.path(), &sample()).expect("save");
        let mode = std::fs::metadata(state_path(dir.path()))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_state_is_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(state_path(dir.path()), "{not json").expect("write");
        assert_eq!(load(dir.path()), None);
    }

    #[test]
    fn generated_channels_have_fresh_graph_like_credentials() {
        let a = DemoChannel::generate("http://127.0.0.1:4000");
        let b = DemoChannel::generate("http://127.0.0.1:4000");
        assert_eq!(a.phone_number_id.len(), 15);
        assert!(a.phone_number_id.bytes().all(|b| b.is_ascii_digit()));
        assert_ne!(a.app_secret, b.app_secret);
        assert_ne!(a.app_secret, a.access_token);
        assert_eq!(a.api_base_url, "http://127.0.0.1:4000");
    }
}
