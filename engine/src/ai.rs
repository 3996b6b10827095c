//! The AI agent's domain, as types and pure rules: a workspace's AI configuration, its
//! escalation rules (and how one matches), the reasoning recorded for every AI decision,
//! and knowledge-base articles. The agent itself (the pool, the backends) lives in the
//! actors crate; the knowledge index in the index crate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, ArticleId, ConversationId, FeedbackId, WorkspaceId};
use crate::model::{AiMode, ChannelKind, Status};
use crate::time::UnixMillis;

/// Which backend answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Embedded, offline, deterministic: intent rules and the knowledge base.
    #[default]
    Builtin,
    /// Any OpenAI-compatible `POST {base_url}/chat/completions`.
    Openai,
}

/// An OpenAI-compatible endpoint. The key is stored, never shown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiSettings {
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: String,
}

/// When the agent answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ScheduleMode {
    #[default]
    Always,
    /// Only outside the working hours; inside them, conversations go to humans.
    OffHours,
}

/// Days (1 = Monday … 7 = Sunday) and a time range, `HH:MM` to `HH:MM`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkingHours {
    pub days: Vec<u8>,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    pub mode: ScheduleMode,
    /// An IANA time zone name (`America/Sao_Paulo`, daylight saving time included),
    /// `UTC`, or a fixed offset such as `-03:00`.
    pub timezone: String,
    pub working_hours: Vec<WorkingHours>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            mode: ScheduleMode::Always,
            timezone: "UTC".into(),
            working_hours: Vec::new(),
        }
    }
}

/// The fixed phrases of the built-in backend (it never invents anything else).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Phrases {
    pub greeting: String,
    pub thanks: String,
    /// Asked once when the lead's first words are not a question the knowledge base
    /// answers (a statement, an introduction).
    #[serde(default = "default_clarify")]
    pub clarify: String,
}

fn default_clarify() -> String {
    "Thanks for the details! What would you like to know: pricing, what is included, or booking a call?".into()
}

impl Default for Phrases {
    fn default() -> Self {
        Phrases {
            greeting: "Hi! Thanks for reaching out. How can I help you today?".into(),
            thanks: "You're welcome! Anything else I can help with?".into(),
            clarify: default_clarify(),
        }
    }
}

/// A workspace's AI agent (`ai_config`). Confidences are 0 to 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AiConfig {
    pub enabled: bool,
    pub backend: BackendKind,
    #[serde(default)]
    pub openai: OpenAiSettings,
    #[serde(default)]
    pub instructions: String,
    /// The AI mode of new conversations while the agent is enabled.
    pub default_mode: AiMode,
    #[serde(default)]
    pub schedule: Schedule,
    /// The quiet period after a lead's message before the agent answers: several quick
    /// messages get one answer.
    pub reply_delay_ms: u64,
    pub max_replies_per_conversation_per_day: u32,
    pub confidence_threshold: f64,
    #[serde(default)]
    pub phrases: Phrases,
    /// Per campaign (by name), whether the agent answers its conversations, whatever
    /// `enabled` says: pilot the agent on one campaign, or keep it off another.
    #[serde(default)]
    pub campaigns: BTreeMap<String, CampaignAi>,
}

/// A campaign's override of the workspace's `enabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CampaignAi {
    pub enabled: bool,
}

impl Default for AiConfig {
    fn default() -> Self {
        AiConfig {
            enabled: false,
            backend: BackendKind::Builtin,
            openai: OpenAiSettings::default(),
            instructions: String::new(),
            default_mode: AiMode::Active,
            schedule: Schedule::default(),
            reply_delay_ms: 1500,
            max_replies_per_conversation_per_day: 20,
            confidence_threshold: 0.5,
            phrases: Phrases::default(),
            campaigns: BTreeMap::new(),
        }
    }
}

impl AiConfig {
    /// The AI mode a new conversation starts in: `manual` until the agent is enabled,
    /// so no conversation claims to be handled while nothing answers.
    pub fn new_conversation_mode(&self, campaign: Option<&str>) -> AiMode {
        if self.enabled_for(campaign) {
            self.default_mode
        } else {
            AiMode::Manual
        }
    }

    /// Whether the agent answers a conversation of `campaign`: the campaign's override,
    /// else the workspace's `enabled`.
    pub fn enabled_for(&self, campaign: Option<&str>) -> bool {
        campaign
            .and_then(|c| self.campaigns.get(c))
            .map_or(self.enabled, |o| o.enabled)
    }
}

/// The time zone a schedule names: an IANA name (from the time zone database built into
/// the binary, so a machine without `/usr/share/zoneinfo` reads it the same), `UTC`, `Z`
/// or a fixed `±HH:MM`.
pub fn time_zone(timezone: &str) -> Option<jiff::tz::TimeZone> {
    if let Some(minutes) = parse_offset(timezone) {
        let offset = jiff::tz::Offset::from_seconds(i32::try_from(minutes * 60).ok()?).ok()?;
        return Some(jiff::tz::TimeZone::fixed(offset));
    }
    let name = timezone.trim();
    if name.is_empty() || name.len() > 64 {
        return None;
    }
    jiff::tz::TimeZone::get(name).ok()
}

/// A fixed offset from UTC in minutes, from `UTC`, `Z` or `±HH:MM`.
pub fn parse_offset(timezone: &str) -> Option<i64> {
    let tz = timezone.trim();
    if tz.eq_ignore_ascii_case("utc") || tz == "Z" {
        return Some(0);
    }
    let (sign, rest) = match tz.as_bytes().first()? {
        b'+' => (1, &tz[1..]),
        b'-' => (-1, &tz[1..]),
        _ => return None,
    };
    let minutes = parse_hhmm(rest)?;
    (minutes <= 14 * 60).then_some(sign * minutes)
}

/// Minutes since midnight of `HH:MM` (24:00 allowed as the end of a day).
pub fn parse_hhmm(text: &str) -> Option<i64> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

impl Schedule {
    /// Whether the agent may answer at `now`.
    pub fn answers_at(&self, now: UnixMillis) -> bool {
        match self.mode {
            ScheduleMode::Always => true,
            ScheduleMode::OffHours => !self.working_at(now),
        }
    }

    /// Whether `now` falls in the working hours.
    pub fn working_at(&self, now: UnixMillis) -> bool {
        let zone = time_zone(&self.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
        let Ok(instant) = jiff::Timestamp::from_millisecond(now) else {
            return false;
        };
        let local = instant.to_zoned(zone);
        let minute = i64::from(local.hour()) * 60 + i64::from(local.minute());
        let weekday = i64::from(local.weekday().to_monday_one_offset());
        self.working_hours.iter().any(|w| {
            let (Some(from), Some(to)) = (parse_hhmm(&w.from), parse_hhmm(&w.to)) else {
                return false;
            };
            w.days.iter().any(|d| i64::from(*d) == weekday) && (from..to).contains(&minute)
        })
    }
}

/// What the agent decided about a lead's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AiDecision {
    Answered,
    Escalated,
    /// Nothing was sent: a human took over first, a newer message superseded it, or the
    /// message needed no answer (an auto-reply).
    Discarded,
}

/// A knowledge-base article the agent used, and how well it matched (0 to 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KnowledgeRef {
    pub id: ArticleId,
    pub title: String,
    pub score: f64,
}

/// Why the agent did what it did: on every AI message and escalation, and in the
/// conversation's reasoning log for every decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AiReasoning {
    /// `greeting`, `question`, `pricing`, `meeting_request`, `human_request`, `opt_out`,
    /// `complaint`, `out_of_office`, `thanks`, `other`.
    pub intent: String,
    pub confidence: f64,
    pub knowledge: Vec<KnowledgeRef>,
    /// The escalation rule that applied, if one did.
    pub rule: Option<String>,
    pub decision: AiDecision,
    pub why: String,
    /// `builtin` or `openai`.
    pub backend: String,
    pub model: Option<String>,
    pub latency_ms: u64,
    /// The lead's message this decision is about.
    pub answers_seq: u64,
}

/// Where an escalation assigns the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignTo {
    Agent(AgentId),
    /// The workspace's agents in turn.
    RoundRobin,
}

impl Serialize for AssignTo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AssignTo::Agent(id) => s.serialize_str(&id.to_string()),
            AssignTo::RoundRobin => s.serialize_str("round_robin"),
        }
    }
}

impl<'de> Deserialize<'de> for AssignTo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "round_robin" {
            return Ok(AssignTo::RoundRobin);
        }
        text.parse()
            .map(AssignTo::Agent)
            .map_err(|_| serde::de::Error::custom("an agent id or \"round_robin\""))
    }
}

/// When a rule applies: every condition given must hold (at least one is given).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleWhen {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intents: Option<Vec<String>>,
    /// Any of these words or phrases in the lead's message (case and accents ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence_below: Option<f64>,
    /// The AI already answered this conversation more than this many times today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_replies_over: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
}

/// What an escalation does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleThen {
    #[serde(default = "yes")]
    pub pause_ai: bool,
    /// An agent id or `round_robin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub assign_to: Option<AssignTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Notify the assignee (`notification` delta).
    #[serde(default = "yes")]
    pub notify: bool,
}

fn yes() -> bool {
    true
}

impl Default for RuleThen {
    fn default() -> Self {
        RuleThen {
            pause_ai: true,
            assign_to: None,
            tags: Vec::new(),
            status: None,
            notify: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EscalationRule {
    pub name: String,
    pub when: RuleWhen,
    pub then: RuleThen,
}

/// What a rule is matched against.
#[derive(Clone, Debug)]
pub struct RuleContext<'a> {
    pub intent: &'a str,
    pub confidence: f64,
    /// The lead's message, folded (lower case, no accents).
    pub folded_text: &'a str,
    pub ai_replies_today: u32,
    pub channel: ChannelKind,
    pub campaign: Option<&'a str>,
}

impl RuleWhen {
    pub fn is_empty(&self) -> bool {
        self.intents.is_none()
            && self.keywords.is_none()
            && self.confidence_below.is_none()
            && self.ai_replies_over.is_none()
            && self.channel.is_none()
            && self.campaign.is_none()
    }

    pub fn matches(&self, ctx: &RuleContext<'_>) -> bool {
        if self.is_empty() {
            return false;
        }
        let intent = self
            .intents
            .as_ref()
            .is_none_or(|i| i.iter().any(|i| i == ctx.intent));
        let keywords = self.keywords.as_ref().is_none_or(|k| {
            k.iter()
                .any(|k| !k.trim().is_empty() && ctx.folded_text.contains(&fold(k)))
        });
        let confidence = self.confidence_below.is_none_or(|c| ctx.confidence < c);
        let replies = self
            .ai_replies_over
            .is_none_or(|n| ctx.ai_replies_today > n);
        let channel = self.channel.is_none_or(|c| c == ctx.channel);
        let campaign = self
            .campaign
            .as_ref()
            .is_none_or(|c| ctx.campaign == Some(c.as_str()));
        intent && keywords && confidence && replies && channel && campaign
    }
}

/// Lower case without accents, for matching words.
pub fn fold(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ã' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'õ' | 'ö' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            'ñ' => 'n',
            other => other,
        })
        .collect()
}

/// The rules a workspace starts with.
pub fn default_rules() -> Vec<EscalationRule> {
    let rule = |name: &str, intents: &[&str], tags: &[&str]| EscalationRule {
        name: name.into(),
        when: RuleWhen {
            intents: Some(intents.iter().map(|s| s.to_string()).collect()),
            ..RuleWhen::default()
        },
        then: RuleThen {
            tags: tags.iter().map(|s| s.to_string()).collect(),
            ..RuleThen::default()
        },
    };
    vec![
        rule("human_request", &["human_request"], &["needs-human"]),
        rule("complaint", &["complaint"], &["complaint"]),
        rule("opt_out", &["opt_out"], &["opted-out"]),
        EscalationRule {
            name: "pricing_unanswered".into(),
            when: RuleWhen {
                intents: Some(vec!["pricing".into()]),
                confidence_below: Some(0.5),
                ..RuleWhen::default()
            },
            then: RuleThen {
                tags: vec!["pricing".into()],
                ..RuleThen::default()
            },
        },
    ]
}

/// A knowledge-base article (`kb_article`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Article {
    pub id: ArticleId,
    pub workspace_id: WorkspaceId,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// A correction from an agent's feedback: the conversation and message it corrects.
    #[serde(default)]
    pub source: Option<(ConversationId, u64)>,
}

/// An agent's rating of an AI message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    Up,
    Down,
}

/// Feedback on an AI message (`ai_feedback`): counted in analytics, shown with the
/// reasoning; a correction becomes a knowledge-base article.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Feedback {
    pub id: FeedbackId,
    pub agent_id: AgentId,
    pub rating: Rating,
    pub correction: Option<String>,
    /// The article the correction became.
    pub article_id: Option<ArticleId>,
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: UnixMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_hours_parse() {
        assert_eq!(parse_offset("UTC"), Some(0));
        assert_eq!(parse_offset("-03:00"), Some(-180));
        assert_eq!(parse_offset("+05:30"), Some(330));
        assert_eq!(parse_offset("Mars/Olympus"), None);
        assert_eq!(parse_hhmm("09:00"), Some(540));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        assert_eq!(parse_hhmm("25:00"), None);
        assert_eq!(parse_hhmm("9:00"), None);
    }

    #[test]
    fn off_hours_answer_outside_the_working_week() {
        let schedule = Schedule {
            mode: ScheduleMode::OffHours,
            timezone: "-03:00".into(),
            working_hours: vec![WorkingHours {
                days: vec![1, 2, 3, 4, 5],
                from: "09:00".into(),
                to: "18:00".into(),
            }],
        };
        // 2026-12-07 is a Monday. 13:00 UTC = 10:00 at -03:00: working.
        let monday_10 = 1_796_648_400_000;
        assert!(schedule.working_at(monday_10));
        assert!(!schedule.answers_at(monday_10));
        // 23:00 UTC = 20:00 local: off hours.
        assert!(schedule.answers_at(monday_10 + 10 * 3_600_000));
        // Saturday.
        assert!(schedule.answers_at(monday_10 + 5 * 86_400_000));
    }

    #[test]
    fn rules_match_when_every_condition_holds() {
        let ctx = RuleContext {
            intent: "pricing",
            confidence: 0.2,
            folded_text: "quanto custa o plano?",
            ai_replies_today: 3,
            channel: ChannelKind::Whatsapp,
            campaign: Some("Black Friday"),
        };
        let rules = default_rules();
        let pricing = rules
            .iter()
            .find(|r| r.name == "pricing_unanswered")
            .expect("rule");
        assert!(pricing.when.matches(&ctx));
        assert!(!pricing.when.matches(&RuleContext {
            confidence: 0.9,
            ..ctx.clone()
        }));
        let keywords = RuleWhen {
            keywords: Some(vec!["Custa".into()]),
            channel: Some(ChannelKind::Whatsapp),
            ..RuleWhen::default()
        };
        assert!(keywords.matches(&ctx));
        assert!(
            !RuleWhen::default().matches(&ctx),
            "an empty rule matches nothing"
        );
        let loops = RuleWhen {
            ai_replies_over: Some(3),
            ..RuleWhen::default()
        };
        assert!(!loops.matches(&ctx));
        assert!(loops.matches(&RuleContext {
            ai_replies_today: 4,
            ..ctx
        }));
    }

    #[test]
    fn new_conversations_start_manual_until_the_agent_is_enabled() {
        let mut config = AiConfig::default();
        assert_eq!(config.new_conversation_mode(None), AiMode::Manual);
        config.enabled = true;
        assert_eq!(config.new_conversation_mode(None), AiMode::Active);
    }

    #[test]
    fn a_campaign_override_wins_over_the_workspace_switch() {
        let mut config = AiConfig::default();
        config
            .campaigns
            .insert("Pilot".into(), CampaignAi { enabled: true });
        config
            .campaigns
            .insert("Enterprise".into(), CampaignAi { enabled: false });
        assert!(config.enabled_for(Some("Pilot")));
        assert!(!config.enabled_for(Some("Enterprise")));
        assert!(!config.enabled_for(Some("Other")));
        assert!(!config.enabled_for(None));
        assert_eq!(config.new_conversation_mode(Some("Pilot")), AiMode::Active);
        config.enabled = true;
        assert!(config.enabled_for(Some("Other")));
        assert!(!config.enabled_for(Some("Enterprise")));
        assert_eq!(
            config.new_conversation_mode(Some("Enterprise")),
            AiMode::Manual
        );
    }

    #[test]
    fn iana_zones_follow_daylight_saving_time() {
        let schedule = Schedule {
            mode: ScheduleMode::OffHours,
            timezone: "Europe/Berlin".into(),
            working_hours: vec![WorkingHours {
                days: vec![1, 2, 3, 4, 5],
                from: "09:00".into(),
                to: "18:00".into(),
            }],
        };
        // Monday 2026-12-07 08:30 UTC = 09:30 in Berlin (CET, +01:00): working.
        let winter = 1_796_632_200_000;
        assert!(schedule.working_at(winter));
        // Monday 2026-07-06 07:30 UTC = 09:30 in Berlin (CEST, +02:00): working; the same
        // UTC time in winter (08:30 local) is not.
        let summer = 1_783_323_000_000;
        assert!(schedule.working_at(summer));
        assert!(!schedule.working_at(winter - 3_600_000));
        assert!(time_zone("America/Sao_Paulo").is_some());
        assert!(time_zone("-03:00").is_some());
        assert!(time_zone("Mars/Olympus").is_none());
        assert!(time_zone("").is_none());
    }
}
