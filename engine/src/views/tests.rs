//! The view indexes against a model: random sequences of conversation changes, then every
//! query answered from the indexes (both plans) equals filtering the model.

use std::collections::HashMap;

use super::*;
use crate::committer::{Committer, Durability};
use crate::ids::ChannelId;
use crate::model::Contact;
use crate::store::StoreOptions;

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TAGS: [&str; 4] = ["hot", "vip", "cold", "b2b"];
const CAMPAIGNS: [Option<&str>; 3] = [None, Some("ad-1"), Some("ad-2")];
const KINDS: [ChannelKind; 3] = [
    ChannelKind::Whatsapp,
    ChannelKind::Email,
    ChannelKind::Linkedin,
];
const MODES_: [AiMode; 3] = [AiMode::Active, AiMode::Paused, AiMode::Manual];
const STATUSES: [Status; 3] = [Status::Open, Status::Pending, Status::Closed];

fn conversation(ws: WorkspaceId, rng: &mut Rng, at: i64) -> Conversation {
    Conversation {
        id: ConversationId::new(),
        workspace_id: ws,
        channel_id: ChannelId::new(),
        channel: *rng.pick(&KINDS),
        external_thread: "t".into(),
        contact: Contact::default(),
        status: Status::Open,
        assignee_id: None,
        tags: Vec::new(),
        campaign: rng.pick(&CAMPAIGNS).map(str::to_string),
        unread_count: 0,
        ai_mode: AiMode::Active,
        created_at: at,
        last_activity_at: at,
        preview: String::new(),
        last_inbound_at: None,
        next_seq: 1,
        ..serde_default_fields()
    }
}

/// Fields added later to `Conversation` keep their defaults here.
fn serde_default_fields() -> Conversation {
    serde_json::from_value(serde_json::json!({
        "id": ConversationId::new(), "workspace_id": WorkspaceId::new(),
        "channel_id": ChannelId::new(), "channel": "whatsapp", "external_thread": "",
        "contact": {"id": crate::ids::ContactId::new(), "name": null, "email": null,
            "phone": null, "company": null, "title": null, "avatar_url": null},
        "status": "open", "assignee_id": null, "tags": [], "campaign": null,
        "unread_count": 0, "ai_mode": "active", "created_at": 0, "last_activity_at": 0,
        "preview": "", "last_inbound_at": null, "next_seq": 1
    }))
    .expect("a conversation from JSON")
}

const OUTCOMES: [Option<&str>; 3] = [None, Some("Interested"), Some("Meeting booked")];

fn mutate(conv: &mut Conversation, rng: &mut Rng, agents: &[AgentId], now: i64) {
    match rng.below(9) {
        // Merged into another (out of every view) or split off again.
        8 => {
            conv.merged_into = match conv.merged_into {
                Some(_) => None,
                None => Some(ConversationId::new()),
            }
        }
        0 | 1 => conv.last_activity_at = now,
        2 => {
            // A snooze is only ever on a pending conversation (a status change ends it).
            conv.status = *rng.pick(&STATUSES);
            conv.snoozed_until = None;
            if conv.status == Status::Pending && rng.below(2) == 0 {
                conv.snoozed_until = Some(now + 1000);
            }
        }
        3 => {
            conv.assignee_id = rng
                .pick(&[None, Some(agents[0]), Some(agents[1])])
                .to_owned()
        }
        4 => conv.ai_mode = *rng.pick(&MODES_),
        5 => {
            let tag = rng.pick(&TAGS).to_string();
            match conv.tags.iter().position(|t| *t == tag) {
                Some(i) => {
                    conv.tags.remove(i);
                }
                None => conv.tags.push(tag),
            }
        }
        6 => conv.campaign = rng.pick(&CAMPAIGNS).map(str::to_string),
        _ => {
            conv.outcome = rng.pick(&OUTCOMES).map(str::to_string);
            conv.outcome_at = Some(now);
        }
    }
}

fn random_filter(rng: &mut Rng) -> Filter {
    let mut tags = Vec::new();
    for _ in 0..rng.below(3) {
        tags.push(rng.pick(&TAGS).to_string());
    }
    Filter {
        view: *rng.pick(&[
            View::All,
            View::Mine,
            View::Unassigned,
            View::Closed,
            View::Snoozed,
        ]),
        channel: rng
            .pick(&[None, Some(ChannelKind::Whatsapp), Some(ChannelKind::Email)])
            .to_owned(),
        mode: rng
            .pick(&[None, None, Some(AiMode::Paused), Some(AiMode::Manual)])
            .to_owned(),
        campaign: rng.pick(&CAMPAIGNS).map(str::to_string),
        outcome: rng
            .pick(&[None, None, Some("Interested")])
            .map(str::to_string),
        tags,
        since: rng.pick(&[None, None, Some(150)]).to_owned(),
    }
}

type Pager<'a> = dyn Fn(Option<Position>) -> Result<Page> + 'a;

/// Follows `next` to the end, checking pages are newest first and never repeat.
fn all_pages(pager: &Pager<'_>) -> Vec<ConversationId> {
    let mut ids = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let page = pager(after).expect("page");
        for c in &page.items {
            assert!(after.is_none_or(|a| position(c) < a), "page goes back up");
            after = Some(position(c));
            ids.push(c.id);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
    panic!("pagination does not end");
}

fn expected(
    model: &HashMap<ConversationId, Conversation>,
    f: &Filter,
    me: AgentId,
) -> Vec<ConversationId> {
    let mut convs: Vec<_> = model.values().filter(|c| f.matches(c, me)).collect();
    convs.sort_by_key(|c| std::cmp::Reverse(position(c)));
    convs.into_iter().map(|c| c.id).collect()
}

#[tokio::test]
async fn every_query_from_the_indexes_equals_filtering_a_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
    let (committer, thread) = Committer::start(store.clone(), Durability::Buffered).expect("start");
    let ws = WorkspaceId::new();
    let other_ws = WorkspaceId::new();
    let agents = [AgentId::new(), AgentId::new()];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut model: HashMap<ConversationId, Conversation> = HashMap::new();
    let mut ids: Vec<ConversationId> = Vec::new();
    let mut now = 100;

    // Another workspace's conversation, in every facet, must never show up.
    let mut stranger = conversation(other_ws, &mut rng, 500);
    stranger.tags = TAGS.iter().map(|t| t.to_string()).collect();
    let mut set = WriteSet::new();
    update(&mut set, None, &stranger);
    committer.commit(set).await.expect("commit");

    for step in 0..600 {
        now += 1 + rng.below(3) as i64;
        let mut set = WriteSet::new();
        if ids.len() < 8 || rng.below(4) == 0 {
            let conv = conversation(ws, &mut rng, now);
            update(&mut set, None, &conv);
            set.put(Ks::ConvState, conv.id.to_bytes().to_vec(), &conv);
            ids.push(conv.id);
            model.insert(conv.id, conv);
        } else if rng.below(10) == 0 {
            // An erasure takes a conversation out of every view and count.
            let at = rng.below(ids.len());
            let id = ids.swap_remove(at);
            let before = model.remove(&id).expect("modelled");
            super::remove(&mut set, &before);
            set.delete(Ks::ConvState, id.to_bytes().to_vec());
        } else {
            // Sometimes two changes of one conversation in one set, as a command may.
            let id = *rng.pick(&ids);
            let before = model[&id].clone();
            let mut after = before.clone();
            mutate(&mut after, &mut rng, &agents, now);
            if rng.below(3) == 0 {
                mutate(&mut after, &mut rng, &agents, now);
            }
            update(&mut set, Some(&before), &after);
            set.put(Ks::ConvState, id.to_bytes().to_vec(), &after);
            model.insert(id, after);
        }
        committer.commit(set).await.expect("commit");

        if step % 60 != 59 {
            continue;
        }
        let snap = store.db().snapshot();
        for _ in 0..40 {
            let filter = random_filter(&mut rng);
            let me = *rng.pick(&agents);
            let limit = 1 + rng.below(4);
            let want = expected(&model, &filter, me);
            let planned = all_pages(&|after| page(&store, &snap, ws, me, &filter, after, limit));
            assert_eq!(planned, want, "planned {filter:?}");
            // Both plans, whatever the planner would pick.
            let lanes = filter.lanes(me);
            let walked = all_pages(&|after| walk(&store, &snap, ws, &lanes, &filter, after, limit));
            assert_eq!(walked, want, "walk {filter:?}");
            if let Some(&facet) = filter.facets().first() {
                let via_members = all_pages(&|after| {
                    members(&store, &snap, ws, me, &filter, facet, after, limit)
                });
                assert_eq!(via_members, want, "members {filter:?}");
            }
        }
        // Counters equal the model's sizes (a merged conversation counts through the one
        // it is merged into).
        let listed = || model.values().filter(|c| c.merged_into.is_none());
        for outcome in OUTCOMES.iter().flatten() {
            let n = listed()
                .filter(|c| c.outcome.as_deref() == Some(*outcome))
                .count() as u64;
            assert_eq!(
                count(&snap, &store, &catalogue::facet(ws, FACET_OUTCOME, outcome)).expect("count"),
                n
            );
            let by_day: u64 = crate::outcomes::read(&store, ws, 0, u32::MAX - 1)
                .expect("outcome counters")
                .iter()
                .filter(|((_, o), _)| o == outcome)
                .map(|(_, n)| n)
                .sum();
            assert_eq!(by_day, n, "{outcome}");
        }
        for tag in TAGS {
            let n = listed().filter(|c| c.tags.iter().any(|t| t == tag)).count() as u64;
            assert_eq!(
                count(&snap, &store, &catalogue::facet(ws, FACET_TAG, tag)).expect("count"),
                n
            );
        }
        for f in [View::All, View::Closed, View::Unassigned, View::Snoozed] {
            let filter = Filter {
                view: f,
                ..Filter::default()
            };
            let lanes_total: u64 = filter
                .lanes(agents[0])
                .iter()
                .map(|l| count(&snap, &store, &catalogue::lane_count(ws, *l)).expect("count"))
                .sum();
            assert_eq!(
                lanes_total,
                expected(&model, &filter, agents[0]).len() as u64
            );
        }
    }
    drop(committer);
    thread.join();
}

#[tokio::test]
async fn a_listing_reads_one_snapshot_while_activity_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
    let (committer, thread) = Committer::start(store.clone(), Durability::Buffered).expect("start");
    let ws = WorkspaceId::new();
    let me = AgentId::new();
    let mut rng = Rng(7);
    let mut convs = Vec::new();
    let mut set = WriteSet::new();
    for at in 1..=10 {
        let c = conversation(ws, &mut rng, at);
        update(&mut set, None, &c);
        set.put(Ks::ConvState, c.id.to_bytes().to_vec(), &c);
        convs.push(c);
    }
    committer.commit(set).await.expect("commit");
    let (listing, snap) = store.listings().begin(&store);
    let filter = Filter::default();
    let first = page(&store, &snap, ws, me, &filter, None, 4).expect("page");
    assert_eq!(first.items.len(), 4);

    // The oldest conversation (not listed yet) gets new activity: it jumps to the top.
    let before = convs[0].clone();
    let mut after = before.clone();
    after.last_activity_at = 100;
    let mut set = WriteSet::new();
    update(&mut set, Some(&before), &after);
    set.put(Ks::ConvState, after.id.to_bytes().to_vec(), &after);
    committer.commit(set).await.expect("commit");

    let snap = store.listings().resume(listing).expect("kept");
    let mut seen: Vec<_> = first.items.iter().map(|c| c.id).collect();
    let mut next = first.next;
    while let Some(after) = next {
        let p = page(&store, &snap, ws, me, &filter, Some(after), 4).expect("page");
        seen.extend(p.items.iter().map(|c| c.id));
        next = p.next;
    }
    let mut want: Vec<_> = convs.iter().rev().map(|c| c.id).collect();
    assert_eq!(
        seen, want,
        "every conversation once, in the first page's order"
    );
    store.listings().end(listing);
    assert!(store.listings().resume(listing).is_none());

    // A fresh listing sees the move.
    let fresh = store.db().snapshot();
    let all = page(&store, &fresh, ws, me, &filter, None, 20).expect("page");
    want.rotate_right(1);
    assert_eq!(all.items.iter().map(|c| c.id).collect::<Vec<_>>(), want);
    drop(committer);
    thread.join();
}

#[test]
fn the_planner_reads_small_sets_whole_and_walks_for_common_ones() {
    // A tag on 10 of a million: read the 10.
    assert!(prefer_members(10, 1_000_000, 50));
    // A tag on a third of the view: walking finds a page in ~150 entries.
    assert!(!prefer_members(300_000, 1_000_000, 50));
    // Past the cap the walk is used even when it is expensive.
    assert!(!prefer_members(MEMBERS_MAX + 1, u64::MAX / 2, 50));
}
