//! Lead outcomes: what became of a lead (Interested, Meeting booked, Not interested …), from
//! a per-workspace list of labels. Agents set a conversation's outcome; the AI agent only
//! suggests one, with its reason. Counters per day, campaign and outcome (kept in the same
//! batch as the conversation state, like the view indexes) answer "meetings booked this
//! week, by campaign" without a scan.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analytics::day_of;
use crate::catalogue::{self, Ks};
use crate::committer::{decode_counter, WriteSet};
use crate::error::Result;
use crate::ids::WorkspaceId;
use crate::model::Conversation;
use crate::store::Store;

/// The labels a workspace starts with.
pub const DEFAULT_OUTCOMES: [&str; 5] = [
    "Interested",
    "Meeting booked",
    "Not interested",
    "Wrong person",
    "Out of office",
];
/// Most labels in a workspace's list.
pub const MAX_OUTCOMES: usize = 30;
/// Longest label, in characters.
pub const MAX_OUTCOME_CHARS: usize = 40;

/// The AI agent's suggestion of an outcome for a conversation, with why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutcomeSuggestion {
    pub outcome: String,
    /// What in the lead's message led to it.
    pub reason: String,
}

/// A workspace's list as stored (`None`: never edited, the defaults).
pub fn labels(stored: Option<&Vec<String>>) -> Vec<String> {
    match stored {
        Some(list) => list.clone(),
        None => DEFAULT_OUTCOMES.iter().map(|s| s.to_string()).collect(),
    }
}

/// A list as an admin gives it: each label trimmed, 1 to 40 printable characters, each once
/// whatever the case, at most 30.
pub fn check_labels(list: Vec<String>) -> std::result::Result<Vec<String>, String> {
    if list.len() > MAX_OUTCOMES {
        return Err(format!("at most {MAX_OUTCOMES} outcomes"));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for label in list {
        let label = label.trim();
        let chars = label.chars().count();
        if chars == 0 || chars > MAX_OUTCOME_CHARS || label.chars().any(char::is_control) {
            return Err(format!(
                "an outcome is 1 to {MAX_OUTCOME_CHARS} printable characters, not {label:?}"
            ));
        }
        if out.iter().any(|o| o.to_lowercase() == label.to_lowercase()) {
            return Err(format!("{label:?} is in the list twice"));
        }
        out.push(label.to_owned());
    }
    Ok(out)
}

/// The label of `list` that `name` names, whatever the case.
pub fn find<'a>(list: &'a [String], name: &str) -> Option<&'a str> {
    let name = name.trim().to_lowercase();
    list.iter()
        .find(|l| l.to_lowercase() == name)
        .map(String::as_str)
}

/// What the counters count of a conversation: (day set, campaign, outcome).
/// A merged conversation counts through the one it is merged into (one lead, one outcome).
fn counted(c: &Conversation) -> Option<(u32, Option<&str>, &str)> {
    if c.merged_into.is_some() {
        return None;
    }
    let outcome = c.outcome.as_deref()?;
    Some((
        day_of(c.outcome_at.unwrap_or(c.created_at)),
        c.campaign.as_deref(),
        outcome,
    ))
}

/// Adds to `set` the counter changes of going from `before` to `after` (either absent: a
/// new or an erased conversation). Every writer of conversation state gets here through
/// [`crate::views::update`] and [`crate::views::remove`].
pub fn record(set: &mut WriteSet, before: Option<&Conversation>, after: Option<&Conversation>) {
    let old = before.and_then(counted);
    let new = after.and_then(counted);
    if old == new {
        return;
    }
    if let (Some((day, campaign, outcome)), Some(b)) = (old, before) {
        set.add(
            Ks::OutcomeStat,
            catalogue::outcome_stat(b.workspace_id, day, campaign, outcome),
            -1,
        );
    }
    if let (Some((day, campaign, outcome)), Some(a)) = (new, after) {
        set.add(
            Ks::OutcomeStat,
            catalogue::outcome_stat(a.workspace_id, day, campaign, outcome),
            1,
        );
    }
}

/// (campaign, outcome): a row of the breakdown.
pub type CampaignOutcome = (Option<String>, String);

/// Conversations with each outcome, by campaign, whose outcome was set from day `first`
/// through day `last`: ((campaign, outcome), count), campaigns without a name first.
pub fn read(
    store: &Store,
    ws: WorkspaceId,
    first: u32,
    last: u32,
) -> Result<Vec<(CampaignOutcome, u64)>> {
    let from = catalogue::outcome_stat_day(ws, first);
    let to = catalogue::outcome_stat_day(ws, last.saturating_add(1));
    let mut sums: BTreeMap<CampaignOutcome, i64> = BTreeMap::new();
    for kv in store.ks(Ks::OutcomeStat).range(from..to) {
        let (key, value) = kv.into_inner()?;
        if let Some((campaign, outcome)) = catalogue::decode_outcome_stat(&key) {
            *sums.entry((campaign, outcome)).or_default() += decode_counter(&value);
        }
    }
    Ok(sums
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k, n as u64))
        .collect())
}

/// Words that point at an outcome, for the labels of [`DEFAULT_OUTCOMES`] (a workspace that
/// renamed or removed one gets no suggestion of it).
const CUES: [(&str, &[&str]); 4] = [
    (
        "Not interested",
        &[
            "not interested",
            "uninterested",
            "no longer interested",
            "not really interested",
            "not very interested",
            "not that interested",
            "never interested",
            "no thanks",
            "no thank you",
            "unsubscribe",
            "stop messaging",
            "stop contacting",
            "remove me",
            "don't contact",
            "do not contact",
            "not for us",
        ],
    ),
    (
        "Wrong person",
        &[
            "wrong person",
            "wrong number",
            "not the right person",
            "no longer work",
            "not my department",
            "don't work there",
        ],
    ),
    (
        "Meeting booked",
        &[
            "booked",
            "see you on",
            "see you at",
            "calendar invite",
            "sent an invite",
            "confirmed for",
            "works for me",
        ],
    ),
    (
        "Interested",
        &[
            "interested",
            "tell me more",
            "more information",
            "more info",
            "send me",
            "how much",
            "price",
            "pricing",
            "quote",
            "can we talk",
            "let's talk",
            "schedule a call",
            "book a call",
        ],
    ),
];

/// The outcome a lead's message suggests, if one of `list`'s labels fits, and why: an
/// automatic reply suggests "Out of office"; otherwise the first cue found, the stronger
/// ones (a refusal, the wrong person) before the hopeful ones.
pub fn suggest(text: &str, auto_reply: bool, list: &[String]) -> Option<OutcomeSuggestion> {
    if auto_reply {
        return find(list, "Out of office").map(|outcome| OutcomeSuggestion {
            outcome: outcome.to_owned(),
            reason: "The lead's message is an automatic reply.".to_owned(),
        });
    }
    let lower = text.to_lowercase().replace(['\u{2019}', '\u{2018}'], "'");
    // "not interested" also contains "interested": the first kind of cue found decides,
    // and when its label is not in the list nothing is suggested.
    let (label, cue) = CUES.iter().find_map(|(label, cues)| {
        cues.iter()
            .find(|cue| lower.contains(**cue))
            .map(|cue| (*label, *cue))
    })?;
    find(list, label).map(|outcome| OutcomeSuggestion {
        outcome: outcome.to_owned(),
        reason: format!("The lead wrote \u{201c}{cue}\u{201d}."),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        labels(None)
    }

    #[test]
    fn labels_are_checked_trimmed_and_unique_whatever_the_case() {
        assert_eq!(
            check_labels(vec![" Hot ".into(), "Cold".into()]).expect("fine"),
            vec!["Hot", "Cold"]
        );
        for bad in [
            vec!["".to_owned()],
            vec!["x".repeat(41)],
            vec!["a\u{7}b".to_owned()],
            vec!["Hot".to_owned(), "hot".to_owned()],
            (0..31).map(|i| format!("o{i}")).collect(),
        ] {
            assert!(check_labels(bad.clone()).is_err(), "{bad:?}");
        }
        assert_eq!(find(&defaults(), "meeting BOOKED"), Some("Meeting booked"));
    }

    #[test]
    fn a_refusal_is_not_mistaken_for_interest_and_auto_replies_are_out_of_office() {
        let list = defaults();
        let outcome = |text: &str| suggest(text, false, &list).map(|s| s.outcome);
        assert_eq!(
            outcome("Sorry, not interested at the moment"),
            Some("Not interested".into())
        );
        assert_eq!(
            outcome("Yes, I'm interested, what's the price?"),
            Some("Interested".into())
        );
        assert_eq!(
            outcome("You have the wrong number"),
            Some("Wrong person".into())
        );
        assert_eq!(outcome("Hello"), None);
        for refusal in [
            "I'm no longer interested",
            "not really interested, sorry",
            "Totally uninterested",
            "Please don\u{2019}t contact me again",
        ] {
            assert_eq!(outcome(refusal), Some("Not interested".into()), "{refusal}");
        }
        assert_eq!(
            suggest("I am away until Monday", true, &list).map(|s| s.outcome),
            Some("Out of office".into())
        );
        // A label the workspace removed is never suggested.
        let without: Vec<String> = vec!["Interested".into()];
        assert_eq!(suggest("not interested", false, &without), None);
        assert_eq!(suggest("wrong number", false, &without), None);
    }
}
