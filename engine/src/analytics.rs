//! Conversation analytics: the manual's "Conversation Metrics" (first-response time,
//! resolution rate, AI vs manual share, satisfaction), per workspace and period.
//!
//! Maintained incrementally, never by scanning history. Every writer of a conversation's
//! state calls [`record`] with the state before and after; it turns the difference into
//! counter additions ([`crate::committer::WriteSet::add`]) on per-workspace daily buckets
//! (`day_stat`: workspace ‖ UTC day ‖ stat → i64), in the same write set as the change, so
//! the numbers are exactly as durable as the state they describe. Concurrent conversations
//! add to the same bucket; the committer (the single writer) makes every sum exact.
//!
//! Two kinds of buckets:
//! - *cohort* stats are filed under the day the conversation was created (the lead's first
//!   message): opened, resolved (currently closed), first responses and their times,
//!   handled by AI only / by a human, CSAT. A period's figures are those of the
//!   conversations opened in it, so a later change (closing, a rating, a reopening) moves
//!   the counter of the conversation's own day and rates never exceed 100 %.
//! - *event* stats are filed under the day they happened: outbound messages by the AI and
//!   by humans.
//!
//! A period is a range of whole UTC days; reading it sums at most one small set of keys
//! per day with activity ([`read`]). The median first-response time comes from a fixed
//! log-scale histogram (buckets 25 % wide), so it is approximate to about ±12 %; the
//! average is exact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalogue::{self, Ks};
use crate::committer::{decode_counter, WriteSet};
use crate::error::Result;
use crate::ids::{ConversationId, WorkspaceId};
use crate::model::{Conversation, Responder, Status};
use crate::store::Store;
use crate::time::UnixMillis;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// What analytics remember of a conversation beyond its state (`conv_stats`): kept apart
/// from [`Conversation`] so the card and the inbox indexes never carry it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationStats {
    /// The lead's satisfaction, 1–5; a new rating replaces the old one.
    #[serde(default)]
    pub csat: Option<u8>,
    /// Replies sent to the lead by the AI.
    #[serde(default)]
    pub ai_replies: u32,
    /// Replies sent to the lead by humans.
    #[serde(default)]
    pub human_replies: u32,
}

impl ConversationStats {
    fn ai_only(&self) -> bool {
        self.ai_replies > 0 && self.human_replies == 0
    }
}

/// Lowest and highest CSAT rating.
pub const CSAT_RANGE: std::ops::RangeInclusive<u8> = 1..=5;

/// The counters of a daily bucket (the last byte of a `day_stat` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stat {
    Opened = 0,
    Resolved = 1,
    FirstResponses = 2,
    FirstResponseMillis = 3,
    FirstResponseByAi = 4,
    FirstResponseByHuman = 5,
    AiOnly = 6,
    WithHuman = 7,
    CsatCount = 8,
    CsatSum = 9,
    OutboundAi = 10,
    OutboundHuman = 11,
    /// AI decisions, filed under the day they were made.
    AiAnswered = 12,
    AiEscalated = 13,
    AiDiscarded = 14,
    /// Agents' feedback on AI messages, filed under the day it was given.
    FeedbackUp = 15,
    FeedbackDown = 16,
    /// Sum of the latencies (ms) of answered and escalated AI decisions.
    AiLatencyMillis = 17,
}

/// `ESCALATION_BASE + i`: escalations for [`ESCALATION_REASONS`]`[i]`.
const ESCALATION_BASE: u8 = 30;
/// Reasons escalations are counted by: the built-in rules and outcomes, then `custom`
/// for the workspace's own rules (their names are free text, so not a counter each).
pub const ESCALATION_REASONS: [&str; 12] = [
    "human_request",
    "complaint",
    "opt_out",
    "pricing_unanswered",
    "no_relevant_knowledge",
    "ai_backend_unavailable",
    "ai_disabled",
    "outside_schedule",
    "reply_limit",
    "ai_unavailable",
    "ai_send_failed",
    "custom",
];
/// `AI_LATENCY_BASE + bucket`: AI decisions in that latency bucket (see
/// [`ai_latency_bucket`]).
const AI_LATENCY_BASE: u8 = 215;
const AI_LATENCY_BUCKETS: u8 = 40;
const AI_LATENCY_GROWTH: f64 = 1.4;

/// The latency bucket of an AI decision: 0 is under a millisecond, `b >= 1` is
/// `[1.4^(b-1), 1.4^b)` ms.
pub fn ai_latency_bucket(millis: u64) -> u8 {
    if millis < 1 {
        return 0;
    }
    let b = 1.0 + ((millis as f64).ln() / AI_LATENCY_GROWTH.ln()).floor();
    (b as u64).min(u64::from(AI_LATENCY_BUCKETS - 1)) as u8
}

/// The counter additions of one AI decision made at `now` (pure; the conversation actor
/// adds them to the set that records the decision).
pub fn ai_decision(
    decision: crate::ai::AiDecision,
    rule: Option<&str>,
    latency_ms: u64,
    now: UnixMillis,
) -> Vec<Change> {
    use crate::ai::AiDecision;
    let day = day_of(now);
    let one = |stat: u8| Change { day, stat, by: 1 };
    let mut out = Vec::new();
    match decision {
        AiDecision::Answered => out.push(one(Stat::AiAnswered as u8)),
        AiDecision::Escalated => {
            out.push(one(Stat::AiEscalated as u8));
            let reason = rule
                .and_then(|r| ESCALATION_REASONS.iter().position(|known| *known == r))
                .unwrap_or(ESCALATION_REASONS.len() - 1);
            out.push(one(ESCALATION_BASE + reason as u8));
        }
        AiDecision::Discarded => {
            out.push(one(Stat::AiDiscarded as u8));
            return out;
        }
    }
    out.push(Change {
        day,
        stat: Stat::AiLatencyMillis as u8,
        by: latency_ms.min(i64::MAX as u64) as i64,
    });
    out.push(one(AI_LATENCY_BASE + ai_latency_bucket(latency_ms)));
    out
}

/// Adds `changes` of workspace `ws` to `set`.
pub fn add_changes(set: &mut WriteSet, ws: WorkspaceId, changes: &[Change]) {
    for change in changes {
        set.add(
            Ks::DayStat,
            catalogue::day_stat(ws, change.day, change.stat),
            change.by,
        );
    }
}

/// `CSAT_BASE + rating`: how many conversations carry that rating.
const CSAT_BASE: u8 = 20;
/// `FRT_BASE + bucket`: first responses in that histogram bucket (see [`frt_bucket`]).
const FRT_BASE: u8 = 64;
/// Histogram buckets: 0 is under a second, `b >= 1` is `[1.25^(b-1), 1.25^b)` seconds.
const FRT_BUCKETS: u8 = 150;
const FRT_GROWTH: f64 = 1.25;

/// The histogram bucket of a first-response time.
pub fn frt_bucket(millis: i64) -> u8 {
    let secs = millis.max(0) as f64 / 1000.0;
    if secs < 1.0 {
        return 0;
    }
    let b = 1.0 + (secs.ln() / FRT_GROWTH.ln()).floor();
    (b as u64).min(u64::from(FRT_BUCKETS - 1)) as u8
}

/// A representative value (seconds) of a bucket: its geometric middle.
fn frt_bucket_middle(bucket: u8) -> f64 {
    match bucket {
        0 => 0.5,
        b => FRT_GROWTH.powf(f64::from(b) - 0.5),
    }
}

/// The UTC day (days since 1970-01-01) of a time.
pub fn day_of(at: UnixMillis) -> u32 {
    at.div_euclid(DAY_MS).clamp(0, i64::from(u32::MAX)) as u32
}

/// The time 00:00 UTC of a day.
pub fn start_of_day(day: u32) -> UnixMillis {
    i64::from(day) * DAY_MS
}

/// A conversation as analytics see it: its state and its stats.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot<'a> {
    pub conv: &'a Conversation,
    pub stats: &'a ConversationStats,
}

/// One counter addition: `by` on `stat` (a byte, see [`Stat`]) of `day`'s bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub day: u32,
    pub stat: u8,
    pub by: i64,
}

/// The counter additions that a conversation going from `before` (`None`: it is being
/// created) to `after` at time `now` makes. Pure; [`record`] applies them.
pub fn changes(before: Option<Snapshot<'_>>, after: Snapshot<'_>, now: UnixMillis) -> Vec<Change> {
    let cohort = day_of(after.conv.created_at);
    let mut out = Vec::new();
    let mut add = |day: u32, stat: u8, by: i64| {
        if by != 0 {
            out.push(Change { day, stat, by });
        }
    };
    let none = ConversationStats::default();
    let (was_closed, responded_before, old) = match before {
        Some(b) => (
            b.conv.status == Status::Closed,
            b.conv.first_response_at.is_some(),
            b.stats,
        ),
        None => {
            add(cohort, Stat::Opened as u8, 1);
            (false, false, &none)
        }
    };
    let new = after.stats;

    let is_closed = after.conv.status == Status::Closed;
    if was_closed != is_closed {
        add(cohort, Stat::Resolved as u8, if is_closed { 1 } else { -1 });
    }

    if !responded_before {
        if let (Some(answered), Some(asked)) =
            (after.conv.first_response_at, after.conv.first_inbound_at)
        {
            let millis = (answered - asked).max(0);
            add(cohort, Stat::FirstResponses as u8, 1);
            add(cohort, Stat::FirstResponseMillis as u8, millis);
            add(cohort, FRT_BASE + frt_bucket(millis), 1);
            let by = match after.conv.first_responder {
                Some(Responder::Ai) => Stat::FirstResponseByAi,
                _ => Stat::FirstResponseByHuman,
            };
            add(cohort, by as u8, 1);
        }
    }

    add(
        cohort,
        Stat::AiOnly as u8,
        i64::from(new.ai_only()) - i64::from(old.ai_only()),
    );
    add(
        cohort,
        Stat::WithHuman as u8,
        i64::from(new.human_replies > 0) - i64::from(old.human_replies > 0),
    );

    let today = day_of(now);
    add(
        today,
        Stat::OutboundAi as u8,
        i64::from(new.ai_replies) - i64::from(old.ai_replies),
    );
    add(
        today,
        Stat::OutboundHuman as u8,
        i64::from(new.human_replies) - i64::from(old.human_replies),
    );

    if old.csat != new.csat {
        for (rating, sign) in [(old.csat, -1), (new.csat, 1)] {
            if let Some(rating) = rating {
                add(cohort, Stat::CsatCount as u8, sign);
                add(cohort, Stat::CsatSum as u8, sign * i64::from(rating));
                add(cohort, CSAT_BASE + rating, sign);
            }
        }
    }
    out
}

/// Adds the analytics of a conversation's change to `set` (the set that writes the change),
/// and stores its stats when they changed.
pub fn record(
    set: &mut WriteSet,
    before: Option<Snapshot<'_>>,
    after: Snapshot<'_>,
    now: UnixMillis,
) {
    let ws = after.conv.workspace_id;
    for change in changes(before, after, now) {
        set.add(
            Ks::DayStat,
            catalogue::day_stat(ws, change.day, change.stat),
            change.by,
        );
    }
    let old = before.map(|b| *b.stats).unwrap_or_default();
    if old != *after.stats {
        set.put(
            Ks::ConvStats,
            after.conv.id.to_bytes().to_vec(),
            after.stats,
        );
    }
}

/// A conversation's stats (defaults when it has none yet).
pub fn conversation_stats(store: &Store, id: ConversationId) -> Result<ConversationStats> {
    Ok(store
        .get(Ks::ConvStats, &id.to_bytes())?
        .unwrap_or_default())
}

/// Sums of every stat of `ws`'s buckets from day `from` through day `to`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals(BTreeMap<u8, i64>);

impl Totals {
    pub fn add(&mut self, stat: u8, by: i64) {
        *self.0.entry(stat).or_default() += by;
    }

    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Totals) {
        for (&stat, &by) in &other.0 {
            self.add(stat, by);
        }
    }

    fn get(&self, stat: u8) -> i64 {
        self.0.get(&stat).copied().unwrap_or(0)
    }

    /// The figures of the API.
    pub fn report(&self) -> Report {
        let ratio = |part: i64, whole: i64| (whole > 0).then(|| part as f64 / whole as f64);
        let responses = self.get(Stat::FirstResponses as u8);
        let opened = self.get(Stat::Opened as u8);
        let resolved = self.get(Stat::Resolved as u8);
        let out_ai = self.get(Stat::OutboundAi as u8);
        let out_human = self.get(Stat::OutboundHuman as u8);
        let ai_only = self.get(Stat::AiOnly as u8);
        let with_human = self.get(Stat::WithHuman as u8);
        let csat_count = self.get(Stat::CsatCount as u8);
        Report {
            conversations_opened: opened,
            conversations_resolved: resolved,
            resolution_rate: ratio(resolved, opened),
            first_responses: responses,
            first_responses_by_ai: self.get(Stat::FirstResponseByAi as u8),
            first_responses_by_human: self.get(Stat::FirstResponseByHuman as u8),
            avg_first_response_seconds: ratio(self.get(Stat::FirstResponseMillis as u8), responses)
                .map(|ms| ms / 1000.0),
            median_first_response_seconds: self.median_first_response(),
            outbound_messages_ai: out_ai,
            outbound_messages_human: out_human,
            ai_message_share: ratio(out_ai, out_ai + out_human),
            conversations_ai_only: ai_only,
            conversations_with_human: with_human,
            ai_conversation_share: ratio(ai_only, ai_only + with_human),
            csat_count,
            csat_average: ratio(self.get(Stat::CsatSum as u8), csat_count),
            csat_distribution: CSAT_RANGE
                .map(|r| (r.to_string(), self.get(CSAT_BASE + r)))
                .collect(),
            ai_answered: self.get(Stat::AiAnswered as u8),
            ai_escalated: self.get(Stat::AiEscalated as u8),
            ai_discarded: self.get(Stat::AiDiscarded as u8),
            ai_answer_rate: ratio(
                self.get(Stat::AiAnswered as u8),
                self.get(Stat::AiAnswered as u8) + self.get(Stat::AiEscalated as u8),
            ),
            escalations_by_reason: ESCALATION_REASONS
                .iter()
                .enumerate()
                .map(|(i, r)| (r.to_string(), self.get(ESCALATION_BASE + i as u8)))
                .filter(|(_, n)| *n != 0)
                .collect(),
            ai_feedback_up: self.get(Stat::FeedbackUp as u8),
            ai_feedback_down: self.get(Stat::FeedbackDown as u8),
            median_ai_latency_ms: self.median_ai_latency(),
        }
    }

    fn median_ai_latency(&self) -> Option<f64> {
        let buckets: Vec<(u8, i64)> = (0..AI_LATENCY_BUCKETS)
            .map(|b| (b, self.get(AI_LATENCY_BASE + b)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let total: i64 = buckets.iter().map(|(_, n)| n).sum();
        let rank = (total + 1) / 2;
        let mut seen = 0;
        for (bucket, n) in buckets {
            seen += n;
            if total > 0 && seen >= rank {
                return Some(match bucket {
                    0 => 0.5,
                    b => (AI_LATENCY_GROWTH.powf(f64::from(b) - 0.5) * 10.0).round() / 10.0,
                });
            }
        }
        None
    }

    fn median_first_response(&self) -> Option<f64> {
        let buckets: Vec<(u8, i64)> = (0..FRT_BUCKETS)
            .map(|b| (b, self.get(FRT_BASE + b)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let total: i64 = buckets.iter().map(|(_, n)| n).sum();
        if total <= 0 {
            return None;
        }
        // The lower middle element: the median of an odd count, one of the two of an even.
        let rank = (total + 1) / 2;
        let mut seen = 0;
        for (bucket, n) in buckets {
            seen += n;
            if seen >= rank {
                return Some(frt_bucket_middle(bucket));
            }
        }
        None
    }
}

/// The conversation metrics of a period (see the module documentation for what counts
/// where). Rates and shares are `None` when their denominator is 0.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Report {
    pub conversations_opened: i64,
    pub conversations_resolved: i64,
    pub resolution_rate: Option<f64>,
    pub first_responses: i64,
    pub first_responses_by_ai: i64,
    pub first_responses_by_human: i64,
    pub avg_first_response_seconds: Option<f64>,
    pub median_first_response_seconds: Option<f64>,
    pub outbound_messages_ai: i64,
    pub outbound_messages_human: i64,
    pub ai_message_share: Option<f64>,
    pub conversations_ai_only: i64,
    pub conversations_with_human: i64,
    pub ai_conversation_share: Option<f64>,
    pub csat_count: i64,
    pub csat_average: Option<f64>,
    pub csat_distribution: BTreeMap<String, i64>,
    /// AI decisions made in the period.
    pub ai_answered: i64,
    pub ai_escalated: i64,
    /// Answers dropped because a person took over first, or not due (automatic replies).
    pub ai_discarded: i64,
    /// Answered / (answered + escalated).
    pub ai_answer_rate: Option<f64>,
    /// Escalations by reason (built-in rules and outcomes; the workspace's own rules as
    /// `custom`); reasons with none are left out.
    pub escalations_by_reason: BTreeMap<String, i64>,
    pub ai_feedback_up: i64,
    pub ai_feedback_down: i64,
    /// The median time to an AI decision (approximate: buckets 40 % wide).
    pub median_ai_latency_ms: Option<f64>,
}

/// Sums `ws`'s buckets from day `from` through day `to` (inclusive).
pub fn read(store: &Store, ws: WorkspaceId, from: u32, to: u32) -> Result<Totals> {
    let mut totals = Totals::default();
    if from > to {
        return Ok(totals);
    }
    let start = catalogue::day_stat(ws, from, 0);
    let end = catalogue::day_stat(ws, to, u8::MAX);
    for kv in store.ks(Ks::DayStat).range(start..=end) {
        let (key, value) = kv.into_inner()?;
        if let Some(&stat) = key.last() {
            totals.add(stat, decode_counter(&value));
        }
    }
    Ok(totals)
}

/// `ws`'s buckets from day `from` through day `to` (inclusive), summed per day: one entry
/// for every day, oldest first, in one scan.
pub fn read_days(store: &Store, ws: WorkspaceId, from: u32, to: u32) -> Result<Vec<(u32, Totals)>> {
    if from > to {
        return Ok(Vec::new());
    }
    let mut days: Vec<(u32, Totals)> = (from..=to).map(|d| (d, Totals::default())).collect();
    let start = catalogue::day_stat(ws, from, 0);
    let end = catalogue::day_stat(ws, to, u8::MAX);
    for kv in store.ks(Ks::DayStat).range(start..=end) {
        let (key, value) = kv.into_inner()?;
        // Key: workspace, day (4 bytes, big-endian), stat.
        let Some((&stat, rest)) = key.split_last() else {
            continue;
        };
        let Some(day) = rest
            .len()
            .checked_sub(4)
            .and_then(|at| rest.get(at..))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
        else {
            continue;
        };
        if let Some((_, totals)) = day.checked_sub(from).and_then(|i| days.get_mut(i as usize)) {
            totals.add(stat, decode_counter(&value));
        }
    }
    Ok(days)
}

/// A period of the API, resolved to whole UTC days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// Since 00:00 UTC today.
    Today,
    /// Today and the 6 days before.
    Week,
    /// Today and the 29 days before.
    Month,
    All,
    /// The days of `from` through the day of `to`.
    Between(UnixMillis, UnixMillis),
}

impl Period {
    pub fn parse(name: &str) -> Option<Period> {
        match name {
            "today" => Some(Period::Today),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            "all" => Some(Period::All),
            _ => None,
        }
    }

    /// The name [`Period::parse`] reads (`all` for a range, which has none).
    pub fn name(self) -> &'static str {
        match self {
            Period::Today => "today",
            Period::Week => "week",
            Period::Month => "month",
            _ => "all",
        }
    }

    /// First and last day, inclusive.
    pub fn days(self, now: UnixMillis) -> (u32, u32) {
        let today = day_of(now);
        match self {
            Period::Today => (today, today),
            Period::Week => (today.saturating_sub(6), today),
            Period::Month => (today.saturating_sub(29), today),
            Period::All => (0, u32::MAX),
            Period::Between(from, to) => (day_of(from), day_of(to)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChannelId, ContactId};
    use crate::model::{AiMode, ChannelKind, Contact};

    const T0: i64 = 20_000 * DAY_MS + 3_600_000;

    fn conversation(created_at: i64) -> Conversation {
        Conversation {
            id: ConversationId::new(),
            workspace_id: WorkspaceId::new(),
            channel_id: ChannelId::new(),
            channel: ChannelKind::Whatsapp,
            external_thread: "1".into(),
            contact: Contact {
                id: ContactId::new(),
                ..Contact::default()
            },
            status: Status::Open,
            assignee_id: None,
            tags: Vec::new(),
            campaign: None,
            unread_count: 0,
            ai_mode: AiMode::Active,
            created_at,
            last_activity_at: created_at,
            preview: String::new(),
            last_inbound_at: None,
            next_seq: 1,
            first_inbound_at: None,
            first_response_at: None,
            first_responder: None,
            closed_at: None,
            last_inbound_seq: None,
            ai_epoch: 0,
            ai_day: 0,
            ai_replies_today: 0,
            subject: None,
            references: Vec::new(),
            awaiting_thread: None,
            overdue_at: None,
            snoozed_until: None,
            snoozed_by: None,
            outcome: None,
            outcome_at: None,
            suggested_outcome: None,
            merged_into: None,
            merged: Vec::new(),
        }
    }

    /// A model of the committer's counters: applies changes, sums a range of days.
    #[derive(Default)]
    struct Model(BTreeMap<(u32, u8), i64>);

    impl Model {
        fn step(
            &mut self,
            before: Option<(&Conversation, &ConversationStats)>,
            after: (&Conversation, &ConversationStats),
            now: i64,
        ) {
            let before = before.map(|(conv, stats)| Snapshot { conv, stats });
            let (conv, stats) = after;
            for c in changes(before, Snapshot { conv, stats }, now) {
                *self.0.entry((c.day, c.stat)).or_default() += c.by;
            }
        }

        fn report(&self, from: u32, to: u32) -> Report {
            let mut totals = Totals::default();
            for ((day, stat), n) in &self.0 {
                if (from..=to).contains(day) {
                    totals.add(*stat, *n);
                }
            }
            totals.report()
        }
    }

    #[test]
    fn buckets_are_log_scale_and_bounded() {
        assert_eq!(frt_bucket(-5), 0);
        assert_eq!(frt_bucket(999), 0);
        assert_eq!(frt_bucket(1_000), 1);
        assert_eq!(frt_bucket(1_249), 1);
        assert_eq!(frt_bucket(1_250), 2);
        assert_eq!(frt_bucket(i64::MAX), FRT_BUCKETS - 1);
        for ms in [1_000, 7_000, 60_000, 3_600_000, 86_400_000] {
            let middle = frt_bucket_middle(frt_bucket(ms)) * 1000.0;
            let error = (middle - ms as f64).abs() / ms as f64;
            assert!(error < 0.125, "{ms} ms is represented by {middle}");
        }
    }

    #[test]
    fn a_conversations_life_is_counted_once_in_its_cohort() {
        let mut model = Model::default();
        let stats = ConversationStats::default();
        let mut conv = conversation(T0);
        model.step(None, (&conv, &stats), T0);

        // The lead writes, the AI answers 30 s later.
        let before = conv.clone();
        conv.first_inbound_at = Some(T0);
        model.step(Some((&before, &stats)), (&conv, &stats), T0);
        let before = conv.clone();
        conv.first_response_at = Some(T0 + 30_000);
        conv.first_responder = Some(Responder::Ai);
        let ai = ConversationStats {
            ai_replies: 1,
            ..stats
        };
        model.step(Some((&before, &stats)), (&conv, &ai), T0 + 30_000);

        // A human replies the next day: no longer AI only; the first response stands.
        let human = ConversationStats {
            human_replies: 1,
            ..ai
        };
        let next_day = T0 + DAY_MS;
        model.step(Some((&conv, &ai)), (&conv, &human), next_day);

        // Closed, reopened, closed again; rated 2, then re-rated 5.
        let open = conv.clone();
        conv.status = Status::Closed;
        model.step(Some((&open, &human)), (&conv, &human), next_day);
        model.step(Some((&conv, &human)), (&open, &human), next_day);
        model.step(Some((&open, &human)), (&conv, &human), next_day);
        let rated = ConversationStats {
            csat: Some(2),
            ..human
        };
        model.step(Some((&conv, &human)), (&conv, &rated), next_day);
        let rerated = ConversationStats {
            csat: Some(5),
            ..rated
        };
        model.step(Some((&conv, &rated)), (&conv, &rerated), next_day);

        let day = day_of(T0);
        let report = model.report(day, day);
        assert_eq!(report.conversations_opened, 1);
        assert_eq!(report.conversations_resolved, 1);
        assert_eq!(report.resolution_rate, Some(1.0));
        assert_eq!(report.first_responses, 1);
        assert_eq!(report.first_responses_by_ai, 1);
        assert_eq!(report.avg_first_response_seconds, Some(30.0));
        let median = report.median_first_response_seconds.expect("median");
        assert!((median - 30.0).abs() < 30.0 * 0.125, "median {median}");
        assert_eq!(report.conversations_ai_only, 0);
        assert_eq!(report.conversations_with_human, 1);
        assert_eq!(report.csat_count, 1);
        assert_eq!(report.csat_average, Some(5.0));
        assert_eq!(report.csat_distribution["2"], 0);
        assert_eq!(report.csat_distribution["5"], 1);
        // Outbound messages count on the day they were sent.
        assert_eq!(report.outbound_messages_ai, 1);
        assert_eq!(report.outbound_messages_human, 0);
        let both = model.report(day, day + 1);
        assert_eq!(both.outbound_messages_human, 1);
        assert_eq!(both.ai_message_share, Some(0.5));
        assert_eq!(both.conversations_opened, 1);
        // Nothing at all: every ratio is absent, not zero.
        let empty = model.report(day + 5, day + 9);
        assert_eq!(empty.resolution_rate, None);
        assert_eq!(empty.avg_first_response_seconds, None);
        assert_eq!(empty.median_first_response_seconds, None);
        assert_eq!(empty.csat_average, None);
    }

    #[test]
    fn averages_medians_and_shares_over_many_conversations() {
        let mut model = Model::default();
        let none = ConversationStats::default();
        // Response times 1..=9 minutes; odd ones by the AI alone, even ones by a human.
        for minutes in 1..=9i64 {
            let mut conv = conversation(T0);
            conv.first_inbound_at = Some(T0);
            model.step(None, (&conv, &none), T0);
            let before = conv.clone();
            conv.first_response_at = Some(T0 + minutes * 60_000);
            let ai = minutes % 2 == 1;
            conv.first_responder = Some(if ai { Responder::Ai } else { Responder::Human });
            let stats = ConversationStats {
                ai_replies: u32::from(ai) * 2,
                human_replies: u32::from(!ai),
                csat: None,
            };
            model.step(Some((&before, &none)), (&conv, &stats), T0);
        }
        let day = day_of(T0);
        let report = model.report(day, day);
        assert_eq!(report.conversations_opened, 9);
        assert_eq!(report.resolution_rate, Some(0.0));
        assert_eq!(report.avg_first_response_seconds, Some(300.0));
        let median = report.median_first_response_seconds.expect("median");
        assert!((median - 300.0).abs() <= 300.0 * 0.125, "median {median}");
        assert_eq!(report.conversations_ai_only, 5);
        assert_eq!(report.conversations_with_human, 4);
        assert_eq!(report.outbound_messages_ai, 10);
        assert_eq!(report.outbound_messages_human, 4);
        assert_eq!(report.first_responses_by_ai, 5);
        assert_eq!(report.first_responses_by_human, 4);
    }

    #[test]
    fn periods_are_whole_utc_days() {
        let now = T0;
        let today = day_of(now);
        assert_eq!(Period::Today.days(now), (today, today));
        assert_eq!(Period::Week.days(now), (today - 6, today));
        assert_eq!(Period::Month.days(now), (today - 29, today));
        assert_eq!(Period::All.days(now).0, 0);
        assert_eq!(
            Period::Between(start_of_day(today - 2) + 5, now).days(now),
            (today - 2, today)
        );
        assert_eq!(Period::parse("week"), Some(Period::Week));
        assert_eq!(Period::parse("year"), None);
        assert_eq!(day_of(-1), 0);
    }
}
