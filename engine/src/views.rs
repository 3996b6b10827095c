//! Secondary indexes over conversations (the inbox's views and filters), maintained in the
//! same write batch as the conversation state they derive from, and the planner that
//! answers a list query from them.
//!
//! Three keyspaces (layouts in `catalogue`):
//! - `lane_conv`: time-ordered lanes. Every conversation has one entry in its status lane
//!   (active, closed or snoozed × channel × AI mode) and, when active, one in its assignee
//!   lane (agent or unassigned × channel × AI mode). The value carries the tags and campaign so
//!   that a walk can test them without loading the conversation. New activity moves both
//!   entries: 2 deletes + 2 puts, the only index work an ordinary message causes.
//! - `facet_conv`: membership sets per tag and per campaign; they change only when the
//!   tags or the campaign change, never on activity.
//! - `facet_count`: the size of every lane and every facet set, kept with
//!   `WriteSet::add` (exact: the committer is the single writer). The planner reads them
//!   to pick the cheaper path, and lanes with no conversation are never opened.
//!
//! Reads go through a [`fjall::Snapshot`]. A listing (the pages of one query) keeps the
//! snapshot of its first page in [`Listings`], so its pages are cut from one consistent
//! state: nothing is repeated or skipped however activity moves meanwhile.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fjall::{Readable, Snapshot};
use serde::{Deserialize, Serialize};

use crate::catalogue::{self, Ks, Lane, LaneState, FACET_CAMPAIGN, FACET_OUTCOME, FACET_TAG};
use crate::codec;
use crate::committer::{decode_counter, WriteSet};
use crate::error::Result;
use crate::ids::{AgentId, ConversationId, WorkspaceId};
use crate::model::{AiMode, ChannelKind, Conversation, Status};
use crate::store::Store;
use crate::time::UnixMillis;

/// What a lane entry carries besides its key: enough to test tag and campaign filters
/// while walking, without a point read per entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct LaneSummary {
    tags: Vec<String>,
    campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
}

fn channel_byte(c: ChannelKind) -> u8 {
    match c {
        ChannelKind::Whatsapp => 0,
        ChannelKind::Email => 1,
        ChannelKind::Linkedin => 2,
    }
}

fn mode_byte(m: AiMode) -> u8 {
    match m {
        AiMode::Active => 0,
        AiMode::Paused => 1,
        AiMode::Manual => 2,
    }
}

const CHANNELS: [u8; 3] = [0, 1, 2];
const MODES: [u8; 3] = [0, 1, 2];

/// Which status lane `c` is in: closed, snoozed (out of the working views until it comes
/// back) or active.
fn lane_state(c: &Conversation) -> LaneState {
    if c.status == Status::Closed {
        LaneState::Closed
    } else if c.snoozed_until.is_some() {
        LaneState::Snoozed
    } else {
        LaneState::Active
    }
}

/// The conversation's status lane and, when active, its assignee lane; none when it is
/// merged into another (listed through that one).
fn lanes(c: &Conversation) -> [Option<Lane>; 2] {
    if c.merged_into.is_some() {
        return [None, None];
    }
    let channel = channel_byte(c.channel);
    let mode = mode_byte(c.ai_mode);
    let state = lane_state(c);
    [
        Some(Lane::Status {
            state,
            channel,
            mode,
        }),
        (state == LaneState::Active).then_some(Lane::Assignee {
            agent: c.assignee_id,
            channel,
            mode,
        }),
    ]
}

fn summary(c: &Conversation) -> LaneSummary {
    LaneSummary {
        tags: c.tags.clone(),
        campaign: c.campaign.clone(),
        outcome: c.outcome.clone(),
    }
}

fn facets(c: &Conversation) -> BTreeSet<(u8, &str)> {
    if c.merged_into.is_some() {
        return BTreeSet::new();
    }
    let mut set: BTreeSet<(u8, &str)> = c.tags.iter().map(|t| (FACET_TAG, t.as_str())).collect();
    if let Some(campaign) = &c.campaign {
        set.insert((FACET_CAMPAIGN, campaign.as_str()));
    }
    if let Some(outcome) = &c.outcome {
        set.insert((FACET_OUTCOME, outcome.as_str()));
    }
    set
}

/// Adds to `set` the index changes that take a conversation from `before` (absent when it
/// is new) to `after`. Every writer of conversation state calls this in the same batch, so
/// the indexes are exactly as current as the state.
///
/// An ordinary message (only the activity moves) costs 2 deletes and 2 puts (one of each
/// for a closed conversation); lane counters and facet sets change only when status,
/// assignee, AI mode, tags or campaign do.
pub fn update(set: &mut WriteSet, before: Option<&Conversation>, after: &Conversation) {
    crate::outcomes::record(set, before, Some(after));
    let ws = after.workspace_id;
    let old_lanes = before.map_or([None, None], lanes);
    let new_lanes = lanes(after);
    let old_summary = before.map(summary);
    let new_summary = summary(after);
    let value = codec::encode(&new_summary);
    for (old, new) in old_lanes.into_iter().zip(new_lanes) {
        let old_key = old
            .zip(before)
            .map(|(lane, b)| catalogue::lane_conv(b.workspace_id, lane, b.last_activity_at, b.id));
        let new_key =
            new.map(|lane| catalogue::lane_conv(ws, lane, after.last_activity_at, after.id));
        if old_key == new_key && old_summary.as_ref() == Some(&new_summary) {
            continue;
        }
        if let Some(old_key) = old_key.filter(|k| Some(k) != new_key.as_ref()) {
            set.delete(Ks::LaneConv, old_key);
        }
        if let Some(new_key) = new_key {
            set.put_raw(Ks::LaneConv, new_key, value.clone());
        }
        if old != new {
            if let Some((lane, b)) = old.zip(before) {
                set.add(
                    Ks::FacetCount,
                    catalogue::lane_count(b.workspace_id, lane),
                    -1,
                );
            }
            if let Some(lane) = new {
                set.add(Ks::FacetCount, catalogue::lane_count(ws, lane), 1);
            }
        }
    }
    let old_facets = before.map(facets).unwrap_or_default();
    let new_facets = facets(after);
    if let Some(b) = before {
        for (kind, value) in old_facets.difference(&new_facets) {
            set.delete(
                Ks::FacetConv,
                catalogue::facet_conv(b.workspace_id, *kind, value, b.id),
            );
            set.add(
                Ks::FacetCount,
                catalogue::facet(b.workspace_id, *kind, value),
                -1,
            );
        }
    }
    for (kind, value) in new_facets.difference(&old_facets) {
        set.put_raw(
            Ks::FacetConv,
            catalogue::facet_conv(ws, *kind, value, after.id),
            Vec::new(),
        );
        set.add(Ks::FacetCount, catalogue::facet(ws, *kind, value), 1);
    }
}

/// Adds to `set` the index changes that take `before` out of every view: its lane
/// entries and set memberships deleted, their counters moved down (erasure).
pub fn remove(set: &mut WriteSet, before: &Conversation) {
    crate::outcomes::record(set, Some(before), None);
    let ws = before.workspace_id;
    for lane in lanes(before).into_iter().flatten() {
        set.delete(
            Ks::LaneConv,
            catalogue::lane_conv(ws, lane, before.last_activity_at, before.id),
        );
        set.add(Ks::FacetCount, catalogue::lane_count(ws, lane), -1);
    }
    for (kind, value) in facets(before) {
        set.delete(
            Ks::FacetConv,
            catalogue::facet_conv(ws, kind, value, before.id),
        );
        set.add(Ks::FacetCount, catalogue::facet(ws, kind, value), -1);
    }
}

/// The inbox views of the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// Open and pending, not snoozed.
    #[default]
    All,
    /// Assigned to the caller, open or pending, not snoozed.
    Mine,
    /// No assignee, open or pending, not snoozed.
    Unassigned,
    Closed,
    /// Snoozed: pending until a time or the lead's next message.
    Snoozed,
}

/// A list query: a view and filters that all must match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub view: View,
    pub channel: Option<ChannelKind>,
    pub mode: Option<AiMode>,
    pub campaign: Option<String>,
    pub outcome: Option<String>,
    /// All must be on the conversation.
    pub tags: Vec<String>,
    /// Only conversations with activity at or after this time.
    pub since: Option<UnixMillis>,
}

impl Filter {
    /// The reference semantics the indexes must reproduce (also used on the membership
    /// path, where conversations are loaded anyway).
    pub fn matches(&self, conv: &Conversation, me: AgentId) -> bool {
        if conv.merged_into.is_some() {
            return false;
        }
        let state = lane_state(conv);
        let active = state == LaneState::Active;
        let in_view = match self.view {
            View::All => active,
            View::Mine => active && conv.assignee_id == Some(me),
            View::Unassigned => active && conv.assignee_id.is_none(),
            View::Closed => state == LaneState::Closed,
            View::Snoozed => state == LaneState::Snoozed,
        };
        in_view
            && self.channel.is_none_or(|c| conv.channel == c)
            && self.mode.is_none_or(|m| conv.ai_mode == m)
            && self
                .campaign
                .as_ref()
                .is_none_or(|c| conv.campaign.as_ref() == Some(c))
            && self
                .outcome
                .as_ref()
                .is_none_or(|o| conv.outcome.as_ref() == Some(o))
            && self.tags.iter().all(|t| conv.tags.contains(t))
            && self.since.is_none_or(|s| conv.last_activity_at >= s)
    }

    fn lanes(&self, me: AgentId) -> Vec<Lane> {
        let channels: Vec<u8> = match self.channel {
            Some(c) => vec![channel_byte(c)],
            None => CHANNELS.to_vec(),
        };
        let modes: Vec<u8> = match self.mode {
            Some(m) => vec![mode_byte(m)],
            None => MODES.to_vec(),
        };
        let mut lanes = Vec::with_capacity(channels.len() * modes.len());
        for &channel in &channels {
            for &mode in &modes {
                let status = |state| Lane::Status {
                    state,
                    channel,
                    mode,
                };
                lanes.push(match self.view {
                    View::All => status(LaneState::Active),
                    View::Closed => status(LaneState::Closed),
                    View::Snoozed => status(LaneState::Snoozed),
                    View::Mine => Lane::Assignee {
                        agent: Some(me),
                        channel,
                        mode,
                    },
                    View::Unassigned => Lane::Assignee {
                        agent: None,
                        channel,
                        mode,
                    },
                });
            }
        }
        lanes
    }

    fn facets(&self) -> Vec<(u8, &str)> {
        let mut facets: Vec<(u8, &str)> =
            self.tags.iter().map(|t| (FACET_TAG, t.as_str())).collect();
        facets.extend(self.campaign.iter().map(|c| (FACET_CAMPAIGN, c.as_str())));
        facets.extend(self.outcome.iter().map(|o| (FACET_OUTCOME, o.as_str())));
        facets.sort_unstable();
        facets.dedup();
        facets
    }

    fn summary_matches(&self, s: &LaneSummary) -> bool {
        self.tags.iter().all(|t| s.tags.contains(t))
            && self
                .campaign
                .as_ref()
                .is_none_or(|c| s.campaign.as_ref() == Some(c))
            && self
                .outcome
                .as_ref()
                .is_none_or(|o| s.outcome.as_ref() == Some(o))
    }
}

/// A place in a listing: `(last activity, id)`, newest first; pages continue strictly
/// after it.
pub type Position = (i64, ConversationId);

fn position(c: &Conversation) -> Position {
    (c.last_activity_at.max(0), c.id)
}

/// Lane entries one page reads at most on the walk path; a page whose filters match
/// little may come back short, with a cursor to continue.
pub const WALK_BUDGET: usize = 20_000;
/// Largest membership set the planner reads whole for one page.
pub const MEMBERS_MAX: u64 = 20_000;
/// A point read of a conversation costs about this many lane entries of a walk.
const POINT_READ_COST: u64 = 4;

/// How a page was answered (for tests, metrics and the benchmark).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// A filter's set is empty: nothing can match.
    Empty,
    /// Merge the query's lanes newest first, testing facets on the entries.
    Walk,
    /// Read the smallest facet set whole, load, filter and sort its members.
    Members,
}

impl Plan {
    pub fn label(self) -> &'static str {
        match self {
            Plan::Empty => "empty",
            Plan::Walk => "walk",
            Plan::Members => "members",
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug)]
pub struct Page {
    pub items: Vec<Conversation>,
    pub next: Option<Position>,
    pub plan: Plan,
    /// Index entries (walk) or members (membership path) read.
    pub read: usize,
}

fn count(snap: &Snapshot, store: &Store, key: &[u8]) -> Result<u64> {
    Ok(snap
        .get(store.ks(Ks::FacetCount), key)?
        .map_or(0, |v| decode_counter(&v).max(0) as u64))
}

/// How many conversations each quick view holds, for agent `me`, within `filter`'s
/// channel and AI mode (its view, tags, campaign and period are not looked at): sums of
/// the lane counters, so as cheap at a million conversations as at ten.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ViewCounts {
    pub mine: u64,
    pub all: u64,
    pub unassigned: u64,
    pub closed: u64,
    pub snoozed: u64,
}

pub fn counts(
    store: &Store,
    snap: &Snapshot,
    ws: WorkspaceId,
    me: AgentId,
    filter: &Filter,
) -> Result<ViewCounts> {
    let mut counts = ViewCounts::default();
    for (view, slot) in [
        (View::Mine, &mut counts.mine),
        (View::All, &mut counts.all),
        (View::Unassigned, &mut counts.unassigned),
        (View::Closed, &mut counts.closed),
        (View::Snoozed, &mut counts.snoozed),
    ] {
        let filter = Filter {
            view,
            ..filter.clone()
        };
        for lane in filter.lanes(me) {
            *slot += count(snap, store, &catalogue::lane_count(ws, lane))?;
        }
    }
    Ok(counts)
}

/// The workspace's tags (`FACET_TAG`) or campaigns (`FACET_CAMPAIGN`) with how many
/// conversations carry each, most used first (ties by name), at most `limit`: read from
/// the facet counters, one entry per distinct value.
pub fn facet_values(
    store: &Store,
    ws: WorkspaceId,
    kind: u8,
    limit: usize,
) -> Result<Vec<(String, u64)>> {
    let mut prefix = ws.to_bytes().to_vec();
    prefix.push(kind);
    let mut values = Vec::new();
    for kv in store.ks(Ks::FacetCount).prefix(&prefix) {
        let (key, value) = kv.into_inner()?;
        let count = decode_counter(&value);
        // Values too long for a key are stored hashed: not a name to show.
        let name = key
            .get(prefix.len() + 2..)
            .and_then(|bytes| std::str::from_utf8(bytes).ok());
        if let (Some(name), true) = (name, count > 0) {
            values.push((name.to_owned(), count as u64));
        }
    }
    values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    values.truncate(limit);
    Ok(values)
}

fn load(snap: &Snapshot, store: &Store, id: ConversationId) -> Result<Option<Conversation>> {
    match snap.get(store.ks(Ks::ConvState), id.to_bytes())? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// The page after `after` of `filter` for agent `me` in `ws`, read from `snap`. Its cost
/// depends on the page size, the number of non-empty lanes of the query (at most 9) and,
/// with tag or campaign filters, on the planner's choice; never on how many conversations
/// the workspace has outside them.
pub fn page(
    store: &Store,
    snap: &Snapshot,
    ws: WorkspaceId,
    me: AgentId,
    filter: &Filter,
    after: Option<Position>,
    limit: usize,
) -> Result<Page> {
    let mut lanes = Vec::new();
    let mut view_size = 0u64;
    for lane in filter.lanes(me) {
        let n = count(snap, store, &catalogue::lane_count(ws, lane))?;
        if n > 0 {
            view_size += n;
            lanes.push(lane);
        }
    }
    let mut smallest: Option<((u8, &str), u64)> = None;
    for facet in filter.facets() {
        let n = count(snap, store, &catalogue::facet(ws, facet.0, facet.1))?;
        if smallest.is_none_or(|(_, m)| n < m) {
            smallest = Some((facet, n));
        }
    }
    let empty = Page {
        items: Vec::new(),
        next: None,
        plan: Plan::Empty,
        read: 0,
    };
    if lanes.is_empty() || smallest.is_some_and(|(_, n)| n == 0) {
        return Ok(empty);
    }
    let page = match smallest {
        Some((facet, n)) if prefer_members(n, view_size, limit) => {
            members(store, snap, ws, me, filter, facet, after, limit)?
        }
        _ => walk(store, snap, ws, &lanes, filter, after, limit)?,
    };
    metrics::counter!(crate::metrics::LIST_PAGES, "plan" => page.plan.label()).increment(1);
    Ok(page)
}

/// Reading a set of `set` members whole costs `set` point reads; walking the view finds a
/// member about every `view / set` entries, so a page costs `(limit + 1) * view / set`
/// entries. The cheaper one wins, as long as the set fits in [`MEMBERS_MAX`].
fn prefer_members(set: u64, view: u64, limit: usize) -> bool {
    let walk = (limit as u64 + 1).saturating_mul(view) / set.max(1);
    set <= MEMBERS_MAX && set.saturating_mul(POINT_READ_COST) <= walk.min(view)
}

struct LaneCursor {
    iter: fjall::Iter,
    head: Option<(Position, fjall::UserValue)>,
}

impl LaneCursor {
    fn advance(&mut self) -> Result<()> {
        self.head = match self.iter.next_back() {
            Some(guard) => {
                let (key, value) = guard.into_inner()?;
                let pos = catalogue::decode_lane_position(&key)
                    .ok_or_else(|| crate::Error::Corrupt("lane_conv key".into()))?;
                Some((pos, value))
            }
            None => None,
        };
        Ok(())
    }
}

fn walk(
    store: &Store,
    snap: &Snapshot,
    ws: WorkspaceId,
    lanes: &[Lane],
    filter: &Filter,
    after: Option<Position>,
    limit: usize,
) -> Result<Page> {
    let since = u64::try_from(filter.since.unwrap_or(0)).unwrap_or(0);
    let mut cursors = Vec::with_capacity(lanes.len());
    for &lane in lanes {
        let prefix = catalogue::lane_prefix(ws, lane);
        let mut start = prefix.clone();
        start.extend_from_slice(&since.to_be_bytes());
        let iter = match after {
            Some((at, id)) => snap.range(
                store.ks(Ks::LaneConv),
                start..catalogue::lane_conv(ws, lane, at, id),
            ),
            None => {
                let mut end = prefix;
                end.extend_from_slice(&[0xff; 24]);
                snap.range(store.ks(Ks::LaneConv), start..=end)
            }
        };
        let mut cursor = LaneCursor { iter, head: None };
        cursor.advance()?;
        cursors.push(cursor);
    }
    let mut items = Vec::with_capacity(limit.min(256));
    let mut read = 0;
    let mut last = None;
    let needs_summary =
        !filter.tags.is_empty() || filter.campaign.is_some() || filter.outcome.is_some();
    loop {
        // At most 9 lanes: a linear pick of the newest head beats a heap.
        let newest = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.head.as_ref().map(|(pos, _)| (*pos, i)))
            .max();
        let Some((pos, i)) = newest else {
            return Ok(Page {
                items,
                next: None,
                plan: Plan::Walk,
                read,
            });
        };
        if items.len() == limit || read == WALK_BUDGET {
            return Ok(Page {
                items,
                next: last,
                plan: Plan::Walk,
                read,
            });
        }
        read += 1;
        last = Some(pos);
        let keep = match (&cursors[i].head, needs_summary) {
            (Some((_, value)), true) => filter.summary_matches(&codec::decode(value)?),
            _ => true,
        };
        cursors[i].advance()?;
        if keep {
            if let Some(conv) = load(snap, store, pos.1)? {
                items.push(conv);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn members(
    store: &Store,
    snap: &Snapshot,
    ws: WorkspaceId,
    me: AgentId,
    filter: &Filter,
    (kind, value): (u8, &str),
    after: Option<Position>,
    limit: usize,
) -> Result<Page> {
    let prefix = catalogue::facet(ws, kind, value);
    let mut matching = Vec::new();
    let mut read = 0;
    for guard in snap.prefix(store.ks(Ks::FacetConv), &prefix) {
        let key = guard.key()?;
        let id = key
            .get(prefix.len()..)
            .and_then(ConversationId::from_key_prefix)
            .ok_or_else(|| crate::Error::Corrupt("facet_conv key".into()))?;
        read += 1;
        if let Some(conv) = load(snap, store, id)? {
            if filter.matches(&conv, me) && after.is_none_or(|a| position(&conv) < a) {
                matching.push(conv);
            }
        }
    }
    matching.sort_unstable_by_key(|c| std::cmp::Reverse(position(c)));
    let next = (matching.len() > limit).then(|| position(&matching[limit - 1]));
    matching.truncate(limit);
    Ok(Page {
        items: matching,
        next,
        plan: Plan::Members,
        read,
    })
}

/// How long an idle listing keeps its snapshot. A snapshot holds back the removal of
/// overwritten versions, so listings are short-lived and capped.
pub const LISTING_IDLE: Duration = Duration::from_secs(5 * 60);
/// Most listings kept at once; the least recently used goes first.
pub const MAX_LISTINGS: usize = 1024;

/// The snapshots of listings in progress, by listing id (carried in the cursor).
#[derive(Default)]
pub struct Listings {
    open: Mutex<HashMap<u64, (Snapshot, Instant)>>,
}

impl Listings {
    /// Starts a listing at the store's current state.
    pub fn begin(&self, store: &Store) -> (u64, Snapshot) {
        let snapshot = store.db().snapshot();
        let id = rand_id();
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, (_, used)| now.duration_since(*used) < LISTING_IDLE);
        if open.len() >= MAX_LISTINGS {
            if let Some(oldest) = open.iter().min_by_key(|(_, (_, used))| *used).map(|e| *e.0) {
                open.remove(&oldest);
            }
        }
        open.insert(id, (snapshot.clone(), now));
        (id, snapshot)
    }

    /// The snapshot of listing `id`, if it is still kept.
    pub fn resume(&self, id: u64) -> Option<Snapshot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (snapshot, used) = open.get_mut(&id)?;
        if used.elapsed() >= LISTING_IDLE {
            open.remove(&id);
            return None;
        }
        *used = Instant::now();
        Some(snapshot.clone())
    }

    /// Forgets a finished listing, releasing its snapshot.
    pub fn end(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

fn rand_id() -> u64 {
    let ulid = crate::ids::next_ulid().to_bytes();
    // The random half of a fresh ULID: unguessable enough for a handle that only
    // selects which consistent state of the caller's own workspace is read.
    u64::from_be_bytes(ulid[8..16].try_into().unwrap_or([0; 8]))
}

/// The delta offset a snapshot is consistent with: every delta up to it is in the
/// snapshot, none after it.
pub fn snapshot_head(store: &Store, snap: &Snapshot) -> Result<u64> {
    Ok(snap
        .get(store.ks(Ks::Meta), catalogue::META_DELTA_HEAD)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

#[cfg(test)]
mod tests;
