//! The audit trail: who changed what, and when.
//!
//! - A conversation's **activity** (`activity` keyspace, conversation ‖ activity id, so a
//!   conversation's history is one range, oldest first): every change of its assignee,
//!   tags, status, AI mode, snooze, outcome, satisfaction rating or contact, recorded in
//!   the batch of the change itself by comparing the state before and after, with who
//!   made it (an agent, the AI agent, the system, the lead, the provider).
//! - A workspace's **admin audit** (`audit` keyspace, workspace ‖ entry id): agents,
//!   channels, settings, AI configuration, outcome labels and erasures changed by admins.
//!
//! Both are kept longer than the stream's deltas: until `audit.retention_days` (for ever
//! by default), and a conversation's activity goes with the conversation when it is erased.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalogue::{self, Ks};
use crate::codec;
use crate::committer::WriteSet;
use crate::error::Result;
use crate::ids::{ActivityId, AgentId, ConversationId, WorkspaceId};
use crate::model::{AiMode, Conversation, Status};
use crate::store::Store;
use crate::time::{now_millis, to_rfc3339, UnixMillis};

/// Who made a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// An agent (`agent_id`), through the inbox or the API.
    Agent,
    /// The AI agent (its answers, hand-overs to people).
    Ai,
    /// Confab itself (a snooze that ran out, retention).
    System,
    /// The lead (a message that reopened or woke the conversation).
    Lead,
    /// The channel's provider (a message a person wrote on WhatsApp or LinkedIn directly).
    Provider,
    /// The server's operator, with its admin token (provisioning).
    Operator,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Author {
    pub kind: ActorKind,
    /// The agent, when `kind` is `agent`.
    pub agent_id: Option<AgentId>,
}

impl Author {
    pub fn agent(id: AgentId) -> Author {
        Author {
            kind: ActorKind::Agent,
            agent_id: Some(id),
        }
    }

    /// An agent when one is named, else the system.
    pub fn agent_or_system(id: Option<AgentId>) -> Author {
        id.map_or(Author::of(ActorKind::System), Author::agent)
    }

    pub fn of(kind: ActorKind) -> Author {
        Author {
            kind,
            agent_id: None,
        }
    }
}

/// One change of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Activity {
    pub id: ActivityId,
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: UnixMillis,
    pub by: Author,
    /// `assigned`, `unassigned`, `tags_changed`, `status_changed`, `ai_mode_changed`,
    /// `snoozed`, `snooze_ended`, `outcome_changed`, `csat_recorded`, `contact_edited`.
    pub action: String,
    /// What changed: `from` / `to` values, `added` / `removed` tags, `agent_id`, `until`.
    pub details: BTreeMap<String, String>,
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Open => "open",
        Status::Pending => "pending",
        Status::Closed => "closed",
    }
}

fn mode_name(m: AiMode) -> &'static str {
    match m {
        AiMode::Active => "active",
        AiMode::Paused => "paused",
        AiMode::Manual => "manual",
    }
}

fn details<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// The audited changes from `before` to `after`: (action, details), in a fixed order.
pub fn changes(
    before: &Conversation,
    after: &Conversation,
) -> Vec<(&'static str, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    if before.assignee_id != after.assignee_id {
        out.push(match after.assignee_id {
            Some(agent) => ("assigned", details([("agent_id", agent.to_string())])),
            None => (
                "unassigned",
                details([(
                    "agent_id",
                    before
                        .assignee_id
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                )]),
            ),
        });
    }
    if before.tags != after.tags {
        let added: Vec<&str> = after
            .tags
            .iter()
            .filter(|t| !before.tags.contains(t))
            .map(String::as_str)
            .collect();
        let removed: Vec<&str> = before
            .tags
            .iter()
            .filter(|t| !after.tags.contains(t))
            .map(String::as_str)
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            out.push((
                "tags_changed",
                details([("added", added.join(", ")), ("removed", removed.join(", "))]),
            ));
        }
    }
    if before.status != after.status {
        out.push((
            "status_changed",
            details([
                ("from", status_name(before.status).to_owned()),
                ("to", status_name(after.status).to_owned()),
            ]),
        ));
    }
    if before.ai_mode != after.ai_mode {
        out.push((
            "ai_mode_changed",
            details([
                ("from", mode_name(before.ai_mode).to_owned()),
                ("to", mode_name(after.ai_mode).to_owned()),
            ]),
        ));
    }
    match (before.snoozed_until, after.snoozed_until) {
        (old, Some(until)) if old != Some(until) => {
            out.push(("snoozed", details([("until", to_rfc3339(until))])))
        }
        (Some(_), None) => out.push(("snooze_ended", BTreeMap::new())),
        _ => {}
    }
    if before.outcome != after.outcome {
        out.push((
            "outcome_changed",
            details([
                ("from", before.outcome.clone().unwrap_or_default()),
                ("to", after.outcome.clone().unwrap_or_default()),
            ]),
        ));
    }
    if before.contact != after.contact {
        out.push(("contact_edited", BTreeMap::new()));
    }
    match (before.merged_into, after.merged_into) {
        (None, Some(into)) => out.push((
            "merged_into",
            details([("conversation_id", into.to_string())]),
        )),
        (Some(from), None) => out.push((
            "split_from",
            details([("conversation_id", from.to_string())]),
        )),
        _ => {}
    }
    let ids = |c: &Conversation| c.merged.iter().map(|m| m.id).collect::<Vec<_>>();
    let (old, new) = (ids(before), ids(after));
    for id in new.iter().filter(|id| !old.contains(id)) {
        out.push(("merged", details([("conversation_id", id.to_string())])));
    }
    for id in old.iter().filter(|id| !new.contains(id)) {
        out.push(("split", details([("conversation_id", id.to_string())])));
    }
    out
}

/// Adds to `set` an activity entry for each audited change from `before` to `after`.
pub fn record_changes(set: &mut WriteSet, before: &Conversation, after: &Conversation, by: Author) {
    for (action, details) in changes(before, after) {
        record(set, after.id, by, action, details);
    }
}

/// Adds to `set` one activity entry of conversation `conv`.
pub fn record(
    set: &mut WriteSet,
    conv: ConversationId,
    by: Author,
    action: &str,
    details: BTreeMap<String, String>,
) {
    let id = ActivityId::new();
    set.put(
        Ks::Activity,
        catalogue::activity(conv, id),
        &Activity {
            id,
            at: now_millis(),
            by,
            action: action.to_owned(),
            details,
        },
    );
}

/// A conversation's activity, newest first: at most `limit` entries before `before`.
pub fn activity(
    store: &Store,
    conv: ConversationId,
    before: Option<ActivityId>,
    limit: usize,
) -> Result<Vec<Activity>> {
    newest_first(store, Ks::Activity, conv.to_bytes(), before, limit)
}

/// Entries of one owner (keys `owner ‖ entry id`: a conversation's activity, a
/// workspace's audit), newest first, at most `limit` before `before`.
fn newest_first<T: serde::de::DeserializeOwned>(
    store: &Store,
    ks: Ks,
    owner: [u8; 16],
    before: Option<ActivityId>,
    limit: usize,
) -> Result<Vec<T>> {
    let end = match before {
        Some(id) => [owner.as_slice(), &id.to_bytes()].concat(),
        None => catalogue::prefix_end(&owner),
    };
    store
        .ks(ks)
        .range(owner.to_vec()..end)
        .rev()
        .take(limit)
        .map(|kv| codec::decode(&kv.value()?))
        .collect()
}

/// An admin's change to the workspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: ActivityId,
    #[serde(with = "crate::time::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: UnixMillis,
    pub by: Author,
    /// `agent_created`, `agent_updated`, `agent_invited`, `channel_created`,
    /// `channel_updated`, `workspace_settings_changed`, `ai_config_changed`,
    /// `escalation_rules_changed`, `outcomes_changed`, `erasure_requested`.
    pub action: String,
    /// What it was done to: an agent's, channel's or erasure's id; `null` for the
    /// workspace itself.
    pub target_id: Option<String>,
    pub details: BTreeMap<String, String>,
}

/// Adds to `set` an entry of workspace `ws`'s admin audit.
pub fn record_admin(
    set: &mut WriteSet,
    ws: WorkspaceId,
    by: Author,
    action: &str,
    target_id: Option<String>,
    details: BTreeMap<String, String>,
) {
    let id = ActivityId::new();
    set.put(
        Ks::Audit,
        catalogue::audit(ws, id),
        &AuditEntry {
            id,
            at: now_millis(),
            by,
            action: action.to_owned(),
            target_id,
            details,
        },
    );
}

/// A workspace's admin audit, newest first: at most `limit` entries before `before`.
pub fn admin_audit(
    store: &Store,
    ws: WorkspaceId,
    before: Option<ActivityId>,
    limit: usize,
) -> Result<Vec<AuditEntry>> {
    newest_first(store, Ks::Audit, ws.to_bytes(), before, limit)
}

/// Up to `limit` activity and audit entries older than `cutoff`, as write sets deleting
/// them (retention; keys only are read).
pub fn expired(store: &Store, cutoff: UnixMillis, limit: usize) -> Result<Vec<WriteSet>> {
    let mut sets = Vec::new();
    let mut set = WriteSet::new();
    let mut n = 0;
    for ks in [Ks::Activity, Ks::Audit] {
        for kv in store.ks(ks).iter() {
            let key = kv.key()?;
            // Both keys end with the entry's id, a ULID whose first 6 bytes are its time.
            let at = key
                .len()
                .checked_sub(16)
                .and_then(|i| key.get(i..i + 6))
                .map(|b| b.iter().fold(0i64, |acc, x| (acc << 8) | i64::from(*x)));
            if at.is_some_and(|at| at < cutoff) {
                set.delete(ks, key.to_vec());
                n += 1;
                if n % 4096 == 0 {
                    sets.push(std::mem::take(&mut set));
                }
                if n >= limit {
                    break;
                }
            }
        }
    }
    if !set.is_empty() {
        sets.push(set);
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committer::{Committer, Durability};
    use crate::store::StoreOptions;

    #[tokio::test]
    async fn entries_read_newest_first_in_pages_and_expire_by_their_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let (committer, thread) =
            Committer::start(store.clone(), Durability::Buffered).expect("start");
        let (conv, other) = (ConversationId::new(), ConversationId::new());
        let ws = WorkspaceId::new();
        let mut set = WriteSet::new();
        for i in 0..5 {
            record(
                &mut set,
                conv,
                Author::of(ActorKind::System),
                "status_changed",
                [("n".to_owned(), i.to_string())].into(),
            );
        }
        record(
            &mut set,
            other,
            Author::of(ActorKind::Lead),
            "snoozed",
            BTreeMap::new(),
        );
        record_admin(
            &mut set,
            ws,
            Author::of(ActorKind::Operator),
            "channel_created",
            None,
            BTreeMap::new(),
        );
        committer.commit(set).await.expect("commit");

        let first = activity(&store, conv, None, 3).expect("page");
        let n = |a: &Activity| a.details["n"].clone();
        assert_eq!(first.iter().map(n).collect::<Vec<_>>(), ["4", "3", "2"]);
        let rest = activity(&store, conv, Some(first[2].id), 10).expect("page");
        assert_eq!(rest.iter().map(n).collect::<Vec<_>>(), ["1", "0"]);
        assert_eq!(activity(&store, other, None, 10).expect("other").len(), 1);
        assert_eq!(admin_audit(&store, ws, None, 10).expect("audit").len(), 1);

        // Nothing is older than a minute ago; everything is older than a minute ahead.
        let now = now_millis();
        assert!(expired(&store, now - 60_000, 100).expect("none").is_empty());
        for set in expired(&store, now + 60_000, 100).expect("all") {
            committer.commit(set).await.expect("prune");
        }
        assert!(activity(&store, conv, None, 10).expect("gone").is_empty());
        assert!(admin_audit(&store, ws, None, 10).expect("gone").is_empty());
        drop(committer);
        thread.join();
    }

    #[test]
    fn changes_name_each_audited_field_once() {
        let before: Conversation = serde_json::from_value(serde_json::json!({
            "id": ConversationId::new(), "workspace_id": WorkspaceId::new(),
            "channel_id": crate::ids::ChannelId::new(), "channel": "whatsapp", "external_thread": "",
            "contact": {"id": crate::ids::ContactId::new(), "name": null, "email": null,
                "phone": null, "company": null, "title": null, "avatar_url": null},
            "status": "open", "assignee_id": null, "tags": ["a"], "campaign": null,
            "unread_count": 0, "ai_mode": "active", "created_at": 0, "last_activity_at": 0,
            "preview": "", "last_inbound_at": null, "next_seq": 1
        }))
        .expect("conversation");
        let mut after = before.clone();
        after.status = Status::Closed;
        after.tags = vec!["b".into()];
        after.assignee_id = Some(AgentId::new());
        after.unread_count = 3;
        after.last_activity_at = 99;
        let found: Vec<&str> = changes(&before, &after).iter().map(|(a, _)| *a).collect();
        assert_eq!(found, ["assigned", "tags_changed", "status_changed"]);
        let tags = &changes(&before, &after)[1].1;
        assert_eq!(
            (tags["added"].as_str(), tags["removed"].as_str()),
            ("b", "a")
        );
        assert!(changes(&before, &before).is_empty());
    }
}
