//! The AI agent's settings (workspace admins), its escalation rules, and the reasoning of
//! each AI decision.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use confab_actors::ai;
use confab_engine::ai::{
    parse_hhmm, time_zone, AiConfig, AiReasoning, Article, BackendKind, CampaignAi, EscalationRule,
    Feedback, Phrases, Rating, Schedule,
};
use confab_engine::analytics::{self, Stat};
use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::WriteSet;
use confab_engine::ids::{ArticleId, ConversationId, FeedbackId, WorkspaceId};
use confab_engine::model::{AiMode, Role, Sender};
use confab_engine::time::now_millis;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{blocking, Body};
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show_config, put_config))
        .routes(routes!(show_rules, put_rules))
        .routes(routes!(reasoning))
        .routes(routes!(feedback))
}

fn admin_only(agent: &AgentAuth) -> ApiResult<()> {
    if agent.0.role != Role::Admin {
        return Err(ApiError::forbidden(
            "admin_only",
            "only workspace admins may change the AI agent",
        ));
    }
    Ok(())
}

/// The OpenAI-compatible endpoint as shown: the key is never returned.
#[derive(Serialize, ToSchema)]
pub struct OpenAiView {
    base_url: String,
    model: String,
    /// Whether a key is stored.
    api_key_set: bool,
}

/// The workspace's AI agent.
#[derive(Serialize, ToSchema)]
pub struct AiConfigView {
    enabled: bool,
    backend: BackendKind,
    openai: OpenAiView,
    instructions: String,
    /// The AI mode of new conversations while the agent is enabled (`manual` while it is
    /// not).
    default_mode: AiMode,
    schedule: Schedule,
    reply_delay_ms: u64,
    max_replies_per_conversation_per_day: u32,
    confidence_threshold: f64,
    /// The built-in backend's fixed phrases.
    phrases: Phrases,
    /// Per campaign (by name): whether the agent answers its conversations, overriding
    /// `enabled`.
    campaigns: BTreeMap<String, CampaignAi>,
}

impl AiConfigView {
    fn of(config: AiConfig) -> AiConfigView {
        AiConfigView {
            enabled: config.enabled,
            backend: config.backend,
            openai: OpenAiView {
                api_key_set: !config.openai.api_key.is_empty(),
                base_url: config.openai.base_url,
                model: config.openai.model,
            },
            instructions: config.instructions,
            default_mode: config.default_mode,
            schedule: config.schedule,
            reply_delay_ms: config.reply_delay_ms,
            max_replies_per_conversation_per_day: config.max_replies_per_conversation_per_day,
            confidence_threshold: config.confidence_threshold,
            phrases: config.phrases,
            campaigns: config.campaigns,
        }
    }
}

async fn stored_config(app: &AppState, ws: WorkspaceId) -> ApiResult<AiConfig> {
    let store = app.store.clone();
    blocking(move || ai::config(&store, ws)).await
}

/// The workspace's AI agent (any agent may read it; the API key is never shown).
#[utoipa::path(
    get,
    path = "/api/v1/ai/config",
    tag = "ai",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The configuration.", body = AiConfigView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn show_config(
    agent: AgentAuth,
    State(app): State<AppState>,
) -> ApiResult<Json<AiConfigView>> {
    Ok(Json(AiConfigView::of(
        stored_config(&app, agent.0.workspace_id).await?,
    )))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiBody {
    /// http(s) URL of the endpoint's base (`…/v1`).
    base_url: Option<String>,
    #[schema(max_length = 200)]
    model: Option<String>,
    /// Left out: the stored key stays; empty: removed.
    #[schema(max_length = 1000)]
    api_key: Option<String>,
}

/// Any subset of the configuration; fields left out keep their value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiConfigBody {
    enabled: Option<bool>,
    backend: Option<BackendKind>,
    openai: Option<OpenAiBody>,
    #[schema(max_length = 20000)]
    instructions: Option<String>,
    /// `active` or `manual`.
    default_mode: Option<AiMode>,
    schedule: Option<Schedule>,
    #[schema(maximum = 600000)]
    reply_delay_ms: Option<u64>,
    #[schema(minimum = 1, maximum = 1000)]
    max_replies_per_conversation_per_day: Option<u32>,
    #[schema(minimum = 0, maximum = 1)]
    confidence_threshold: Option<f64>,
    phrases: Option<Phrases>,
    /// Replaces the per-campaign overrides (at most 1000; `{}` removes them all).
    campaigns: Option<BTreeMap<String, CampaignAi>>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_value", message)
}

fn check_schedule(schedule: &Schedule) -> ApiResult<()> {
    if time_zone(&schedule.timezone).is_none() {
        return Err(ApiError::unprocessable(
            "invalid_timezone",
            "`schedule.timezone` is an IANA time zone (`Europe/Berlin`), `UTC` or an offset such as `-03:00`",
        ));
    }
    if schedule.working_hours.len() > 50 {
        return Err(invalid("at most 50 `schedule.working_hours`"));
    }
    for hours in &schedule.working_hours {
        let (from, to) = (parse_hhmm(&hours.from), parse_hhmm(&hours.to));
        let ordered = matches!((from, to), (Some(f), Some(t)) if f < t);
        if !ordered || hours.days.is_empty() || hours.days.iter().any(|d| !(1..=7).contains(d)) {
            return Err(invalid(
                "each `working_hours` entry has `days` (1 = Monday … 7 = Sunday) and `from` before `to`, as HH:MM",
            ));
        }
    }
    Ok(())
}

/// Changes the AI agent (workspace admins). Enabling it makes new conversations start in
/// `default_mode`; until then they start in `manual`.
#[utoipa::path(
    put,
    path = "/api/v1/ai/config",
    tag = "ai",
    security(("agent_token" = [])),
    request_body = AiConfigBody,
    responses(
        (status = 200, description = "The configuration as stored.", body = AiConfigView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`, `invalid_timezone`, `invalid_url`, `private_address` (a backend on a private or local address, unless the server allows it).", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn put_config(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<AiConfigBody>,
) -> ApiResult<Json<AiConfigView>> {
    admin_only(&agent)?;
    let ws = agent.0.workspace_id;
    let mut config = stored_config(&app, ws).await?;
    if let Some(enabled) = body.enabled {
        config.enabled = enabled;
    }
    if let Some(backend) = body.backend {
        config.backend = backend;
    }
    if let Some(openai) = body.openai {
        if let Some(url) = openai.base_url {
            let url = url.trim().trim_end_matches('/').to_owned();
            if !url.is_empty() {
                let parsed = reqwest::Url::parse(&url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        ApiError::unprocessable(
                            "invalid_url",
                            "`openai.base_url` must be an http(s) URL",
                        )
                    })?;
                if !app.config.ai.allow_private_backends {
                    if let Some(why) = confab_actors::ai::openai::refused_host(&parsed) {
                        return Err(ApiError::unprocessable(
                            "private_address",
                            format!("`openai.base_url`: {why}"),
                        ));
                    }
                }
            }
            config.openai.base_url = url;
        }
        if let Some(model) = openai.model {
            if model.chars().count() > 200 {
                return Err(invalid("`openai.model` is at most 200 characters"));
            }
            config.openai.model = model.trim().to_owned();
        }
        if let Some(key) = openai.api_key {
            if key.chars().count() > 1000 {
                return Err(invalid("`openai.api_key` is at most 1000 characters"));
            }
            config.openai.api_key = key.trim().to_owned();
        }
    }
    if let Some(instructions) = body.instructions {
        if instructions.chars().count() > 20_000 {
            return Err(invalid("`instructions` is at most 20,000 characters"));
        }
        config.instructions = instructions;
    }
    if let Some(mode) = body.default_mode {
        if mode == AiMode::Paused {
            return Err(invalid("`default_mode` is `active` or `manual`"));
        }
        config.default_mode = mode;
    }
    if let Some(schedule) = body.schedule {
        check_schedule(&schedule)?;
        config.schedule = schedule;
    }
    if let Some(delay) = body.reply_delay_ms {
        if delay > 600_000 {
            return Err(invalid("`reply_delay_ms` is at most 600000"));
        }
        config.reply_delay_ms = delay;
    }
    if let Some(max) = body.max_replies_per_conversation_per_day {
        if !(1..=1000).contains(&max) {
            return Err(invalid(
                "`max_replies_per_conversation_per_day` is 1 to 1000",
            ));
        }
        config.max_replies_per_conversation_per_day = max;
    }
    if let Some(threshold) = body.confidence_threshold {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(invalid("`confidence_threshold` is 0 to 1"));
        }
        config.confidence_threshold = threshold;
    }
    if let Some(phrases) = body.phrases {
        for (name, text) in [
            ("greeting", &phrases.greeting),
            ("thanks", &phrases.thanks),
            ("clarify", &phrases.clarify),
        ] {
            if text.trim().is_empty() || text.chars().count() > 1000 {
                return Err(invalid(format!("`phrases.{name}` is 1 to 1000 characters")));
            }
        }
        config.phrases = confab_engine::ai::Phrases {
            greeting: phrases.greeting.trim().to_owned(),
            thanks: phrases.thanks.trim().to_owned(),
            clarify: phrases.clarify.trim().to_owned(),
        };
    }
    if let Some(campaigns) = body.campaigns {
        if campaigns.len() > 1000 {
            return Err(invalid("at most 1000 `campaigns`"));
        }
        if campaigns
            .keys()
            .any(|c| c.trim().is_empty() || c.chars().count() > 200)
        {
            return Err(invalid("a campaign name is 1 to 200 characters"));
        }
        config.campaigns = campaigns;
    }
    let answers_somewhere = config.enabled || config.campaigns.values().any(|c| c.enabled);
    if answers_somewhere
        && config.backend == BackendKind::Openai
        && (config.openai.base_url.is_empty() || config.openai.model.is_empty())
    {
        return Err(invalid(
            "the openai backend needs `openai.base_url` and `openai.model`",
        ));
    }
    let mut set = WriteSet::new();
    set.put(Ks::AiConfig, ws.to_bytes().to_vec(), &config);
    super::audit_into(
        &mut set,
        ws,
        confab_engine::audit::Author::agent(agent.0.id),
        "ai_config_changed",
        None,
        &[("enabled", config.enabled.to_string())],
    );
    app.committer.commit(set).await?;
    Ok(Json(AiConfigView::of(config)))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleList {
    /// In order: the first rule that matches a message decides.
    rules: Vec<EscalationRule>,
}

/// The workspace's escalation rules (the built-in defaults until changed).
#[utoipa::path(
    get,
    path = "/api/v1/ai/escalation-rules",
    tag = "ai",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "The rules, in order.", body = RuleList),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn show_rules(agent: AgentAuth, State(app): State<AppState>) -> ApiResult<Json<RuleList>> {
    let (store, ws) = (app.store.clone(), agent.0.workspace_id);
    let rules = blocking(move || ai::rules(&store, ws)).await?;
    Ok(Json(RuleList { rules }))
}

/// Replaces the escalation rules (workspace admins).
#[utoipa::path(
    put,
    path = "/api/v1/ai/escalation-rules",
    tag = "ai",
    security(("agent_token" = [])),
    request_body = RuleList,
    responses(
        (status = 200, description = "The rules as stored.", body = RuleList),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`admin_only`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`, `invalid_tag`, `unknown_agent`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn put_rules(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<RuleList>,
) -> ApiResult<Json<RuleList>> {
    admin_only(&agent)?;
    let ws = agent.0.workspace_id;
    let mut rules = body.rules;
    if rules.len() > 50 {
        return Err(invalid("at most 50 rules"));
    }
    let store = app.store.clone();
    let agents = blocking(move || store.workspace_agents(ws)).await?;
    let mut names = std::collections::HashSet::new();
    for rule in &mut rules {
        rule.name = rule.name.trim().to_owned();
        if rule.name.is_empty()
            || rule.name.chars().count() > 100
            || !names.insert(rule.name.clone())
        {
            return Err(invalid(
                "each rule has a unique `name` of 1 to 100 characters",
            ));
        }
        if rule.when.is_empty() {
            return Err(invalid(format!(
                "rule \"{}\" has no condition in `when`",
                rule.name
            )));
        }
        let words = rule
            .when
            .intents
            .iter()
            .flatten()
            .chain(rule.when.keywords.iter().flatten());
        if words.clone().count() > 100
            || words
                .into_iter()
                .any(|w| w.trim().is_empty() || w.chars().count() > 100)
        {
            return Err(invalid(
                "intents and keywords are 1 to 100 characters, at most 100 of them",
            ));
        }
        if rule
            .when
            .confidence_below
            .is_some_and(|c| !(0.0..=1.0).contains(&c))
        {
            return Err(invalid("`confidence_below` is 0 to 1"));
        }
        if rule
            .when
            .campaign
            .as_ref()
            .is_some_and(|c| c.chars().count() > 200)
        {
            return Err(invalid("`campaign` is at most 200 characters"));
        }
        if let Some(confab_engine::ai::AssignTo::Agent(id)) = rule.then.assign_to {
            if !agents.iter().any(|a| a.id == id) {
                return Err(ApiError::unprocessable(
                    "unknown_agent",
                    format!(
                        "rule \"{}\" assigns to an agent not in this workspace",
                        rule.name
                    ),
                ));
            }
        }
        rule.then.tags =
            confab_actors::conversation::normalize_tags(std::mem::take(&mut rule.then.tags))?;
    }
    let mut set = WriteSet::new();
    set.put(Ks::AiRules, ws.to_bytes().to_vec(), &rules);
    super::audit_into(
        &mut set,
        ws,
        confab_engine::audit::Author::agent(agent.0.id),
        "escalation_rules_changed",
        None,
        &[("rules", rules.len().to_string())],
    );
    app.committer.commit(set).await?;
    Ok(Json(RuleList { rules }))
}

/// Why the AI did what it did about a message.
#[derive(Serialize, ToSchema)]
pub struct ReasoningView {
    seq: u64,
    /// The reasoning the message carries (an AI reply or an escalation's system message).
    ai: Option<AiReasoning>,
    /// Every AI decision about this message when it is the lead's (answered, escalated,
    /// discarded), oldest first.
    decisions: Vec<AiReasoning>,
    /// Agents' feedback on this message, oldest first.
    feedback: Vec<Feedback>,
}

/// The reasoning of an AI message, or the AI's decisions about a lead's message.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/messages/{seq}/reasoning",
    tag = "ai",
    security(("agent_token" = [])),
    params(
        ("id" = String, Path, description = "The conversation."),
        ("seq" = u64, Path, description = "The message's sequence number."),
    ),
    responses(
        (status = 200, description = "The reasoning.", body = ReasoningView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace, or no such message.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn reasoning(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path((id, seq)): Path<(String, String)>,
) -> ApiResult<Json<ReasoningView>> {
    let id: ConversationId = id
        .parse()
        .map_err(|_| ApiError::not_found("conversation"))?;
    let seq: u64 = seq.parse().map_err(|_| ApiError::not_found("message"))?;
    let (store, ws) = (app.store.clone(), agent.0.workspace_id);
    let found = blocking(move || {
        let Some(conv) = store.conversation(id)?.filter(|c| c.workspace_id == ws) else {
            return Ok(None);
        };
        let Some(message) = store.message(conv.id, seq)? else {
            return Ok(None);
        };
        let mut prefix = conv.id.to_bytes().to_vec();
        prefix.extend_from_slice(&seq.to_be_bytes());
        let decisions: Vec<AiReasoning> = store.with_prefix(Ks::AiLog, &prefix)?;
        let feedback: Vec<Feedback> = store.with_prefix(Ks::AiFeedback, &prefix)?;
        Ok(Some((message, decisions, feedback)))
    })
    .await?;
    let Some((message, decisions, feedback)) = found else {
        return Err(ApiError::not_found("message"));
    };
    Ok(Json(ReasoningView {
        seq,
        ai: message.ai,
        decisions,
        feedback,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    rating: Rating,
    /// What the AI should have answered: becomes a knowledge-base article for the
    /// question it answered, used from the next similar question on.
    #[schema(min_length = 1, max_length = 5000, pattern = "[^\\s\\u0085]")]
    correction: Option<String>,
}

/// Rates an AI message (any agent); a correction teaches the agent.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/messages/{seq}/feedback",
    tag = "ai",
    security(("agent_token" = [])),
    params(
        ("id" = String, Path, description = "The conversation."),
        ("seq" = u64, Path, description = "The AI message's sequence number."),
    ),
    request_body = FeedbackBody,
    responses(
        (status = 201, description = "Stored (and the correction indexed).", body = Feedback),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation in the caller's workspace, or no such message.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`not_an_ai_message`, `invalid_value`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `search_unavailable`.", body = ErrorBody),
    )
)]
async fn feedback(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path((id, seq)): Path<(String, String)>,
    Body(body): Body<FeedbackBody>,
) -> ApiResult<(StatusCode, Json<Feedback>)> {
    let id: ConversationId = id
        .parse()
        .map_err(|_| ApiError::not_found("conversation"))?;
    let seq: u64 = seq.parse().map_err(|_| ApiError::not_found("message"))?;
    let correction = match body.correction {
        Some(text) if text.trim().is_empty() || text.chars().count() > 5000 => {
            return Err(invalid("`correction` is 1 to 5,000 characters"));
        }
        other => other.map(|t| t.trim().to_owned()),
    };
    let (store, ws) = (app.store.clone(), agent.0.workspace_id);
    let found = blocking(move || {
        let Some(conv) = store.conversation(id)?.filter(|c| c.workspace_id == ws) else {
            return Ok(None);
        };
        let Some(message) = store.message(conv.id, seq)? else {
            return Ok(None);
        };
        let question = match &message.ai {
            Some(ai) => store.message(conv.id, ai.answers_seq)?.map(|m| m.text),
            None => None,
        };
        Ok(Some((message, question)))
    })
    .await?;
    let Some((message, question)) = found else {
        return Err(ApiError::not_found("message"));
    };
    if message.sender != Sender::Ai {
        return Err(ApiError::unprocessable(
            "not_an_ai_message",
            "feedback is for messages the AI sent",
        ));
    }
    let now = now_millis();
    let article_id = match &correction {
        Some(text) => {
            let title: String = question
                .as_deref()
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .unwrap_or("Correction")
                .chars()
                .take(200)
                .collect();
            let article = Article {
                id: ArticleId::new(),
                workspace_id: ws,
                title,
                body: text.clone(),
                tags: vec!["correction".into()],
                created_at: now,
                updated_at: now,
                source: Some((id, seq)),
            };
            super::kb::save(&app, &article).await?;
            Some(article.id)
        }
        None => None,
    };
    let feedback = Feedback {
        id: FeedbackId::new(),
        agent_id: agent.0.id,
        rating: body.rating,
        correction,
        article_id,
        created_at: now,
    };
    let stat = match feedback.rating {
        Rating::Up => Stat::FeedbackUp,
        Rating::Down => Stat::FeedbackDown,
    };
    let mut set = WriteSet::new();
    set.put(
        Ks::AiFeedback,
        catalogue::ai_feedback(id, seq, feedback.id),
        &feedback,
    );
    analytics::add_changes(
        &mut set,
        ws,
        &[analytics::Change {
            day: analytics::day_of(now),
            stat: stat as u8,
            by: 1,
        }],
    );
    app.committer.commit(set).await?;
    Ok((StatusCode::CREATED, Json(feedback)))
}
