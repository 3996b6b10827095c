//! The cluster's shared parts against a real 3-server NATS JetStream cluster (Debian's
//! nats-server 2.9): partition leases (one owner at a time, shared between nodes, taken
//! over with a higher epoch only after the former owner stopped writing) and the inbound
//! log (an acknowledged item survives a server's crash; a retry is recognised).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_cluster::lease::Leases;
use confab_cluster::{Cluster, ClusterConfig, INBOUND_STREAM};
use futures_util::StreamExt;

use crate::nats::NatsCluster;

/// Short lease times, so that lapses and takeovers happen within seconds.
fn config(node: &str, urls: Vec<String>, partitions: u16) -> ClusterConfig {
    ClusterConfig {
        partitions,
        lease_ttl: Duration::from_secs(4),
        renew_every: Duration::from_millis(500),
        lease_margin: Duration::from_millis(1500),
        poll_every: Duration::from_millis(200),
        ..ClusterConfig::new(node, urls)
    }
}

/// Partitions `leases` may write now, with their epochs.
fn writable(leases: &Leases, partitions: u16) -> BTreeMap<u16, u64> {
    (0..partitions)
        .filter_map(|p| leases.epoch(p).map(|e| (p, e)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_get_one_owner_each_and_are_shared_when_nodes_join() {
    const P: u16 = 6;
    let nats = NatsCluster::start().await;
    let a = Cluster::connect(config("a", nats.urls(), P))
        .await
        .expect("connect a");
    let leases_a = Leases::start(&a).await.expect("leases a");
    // Alone, a takes every partition.
    let deadline = Instant::now() + Duration::from_secs(30);
    while writable(&leases_a, P).len() < usize::from(P) {
        assert!(
            Instant::now() < deadline,
            "a alone did not take every partition"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_epochs = writable(&leases_a, P);
    // A node that counts partitions differently would route threads elsewhere: refused.
    let odd = Cluster::connect(config("odd", nats.urls(), P + 1)).await;
    assert!(
        matches!(&odd, Err(confab_cluster::ClusterError::Config(m)) if m.contains("partitions")),
        "a node with another partition count joined"
    );

    // b and c join: a lets the excess lapse and they take it, two each; at no moment do
    // two nodes both hold a partition they may write.
    let b = Cluster::connect(config("b", nats.urls(), P))
        .await
        .expect("b");
    let c = Cluster::connect(config("c", nats.urls(), P))
        .await
        .expect("c");
    let leases_b = Leases::start(&b).await.expect("leases b");
    let leases_c = Leases::start(&c).await.expect("leases c");
    let nodes = [&leases_a, &leases_b, &leases_c];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: Vec<_> = nodes.iter().map(|l| writable(l, P)).collect();
        for p in 0..P {
            let owners = held.iter().filter(|h| h.contains_key(&p)).count();
            assert!(
                owners <= 1,
                "partition {p} writable on {owners} nodes: {held:?}"
            );
        }
        let shared = held.iter().all(|h| h.len() == 2);
        if shared {
            // Every partition taken over has a higher epoch than its first owner's.
            for h in &held[1..] {
                for (p, epoch) in h {
                    assert!(
                        *epoch > first_epochs[p],
                        "partition {p}: epoch {epoch} after {}",
                        first_epochs[p]
                    );
                }
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partitions were not shared two each: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_cut_off_from_nats_stops_writing_before_another_node_takes_over() {
    const P: u16 = 2;
    let nats = NatsCluster::start().await;
    // a reaches NATS through server 0 only; b through servers 1 and 2.
    let a = Cluster::connect(ClusterConfig {
        only_listed_servers: true,
        ..config("a", vec![nats.url(0)], P)
    })
    .await
    .expect("connect a");
    let leases_a = Leases::start(&a).await.expect("leases a");
    let deadline = Instant::now() + Duration::from_secs(30);
    while writable(&leases_a, P).len() < usize::from(P) {
        assert!(Instant::now() < deadline, "a did not take the partitions");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let epochs_a = writable(&leases_a, P);
    let b = Cluster::connect(ClusterConfig {
        only_listed_servers: true,
        ..config("b", vec![nats.url(1), nats.url(2)], P)
    })
    .await
    .expect("connect b");
    let leases_b = Leases::start(&b).await.expect("leases b");

    // Server 0 stops answering: a's renewals no longer get through.
    nats.freeze(0);
    let frozen = Instant::now();
    let mut a_stopped: BTreeMap<u16, Instant> = BTreeMap::new();
    let mut b_started: BTreeMap<u16, Instant> = BTreeMap::new();
    // A frozen server keeps its connections open: its peers notice by their heartbeats
    // and elect new leaders for what it led; measured 4–37 s until b owns both.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now_a = writable(&leases_a, P);
        let now_b = writable(&leases_b, P);
        for p in 0..P {
            if !now_a.contains_key(&p) {
                a_stopped.entry(p).or_insert_with(Instant::now);
            }
            if let Some(epoch) = now_b.get(&p) {
                assert!(
                    a_stopped.contains_key(&p),
                    "b writes partition {p} while a still may"
                );
                assert!(*epoch > epochs_a[&p], "b's epoch is not above a's");
                b_started.entry(p).or_insert_with(Instant::now);
            }
        }
        if now_b.len() == usize::from(P) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b did not take over: a {now_a:?}, b {now_b:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "takeover {:.1} s after the owner's NATS server froze (lease 4 s)",
        frozen.elapsed().as_secs_f64()
    );
    for p in 0..P {
        // a stopped within the validity of its last renewal before the freeze (at most
        // 4 s lease − 1.5 s margin = 2.5 s; two seconds of slack for a loaded machine)...
        let stopped = a_stopped[&p].duration_since(frozen);
        assert!(
            stopped <= Duration::from_millis(4_500),
            "a stopped {stopped:?} after the freeze"
        );
        // ...and b began clearly later (the margin is 1.5 s; a third of it, against a
        // starved sampling loop): the lease had to lapse first.
        let gap = b_started[&p].duration_since(a_stopped[&p]);
        assert!(
            gap >= Duration::from_millis(500),
            "partition {p}: only {gap:?} between owners"
        );
    }
    // Server 0 answers again, with a's renewals and reads queued while it was frozen. a
    // is a live node again and gets its fair share back (one partition each), but only
    // through new leases: never two owners at once, and a partition's epoch only grows.
    nats.thaw(0);
    let thawed = Instant::now();
    let mut newest: BTreeMap<u16, u64> = writable(&leases_b, P);
    let deadline = thawed + Duration::from_secs(90);
    loop {
        let now_a = writable(&leases_a, P);
        let now_b = writable(&leases_b, P);
        for p in 0..P {
            assert!(
                !(now_a.contains_key(&p) && now_b.contains_key(&p)),
                "partition {p} writable on both after the thaw: a {now_a:?}, b {now_b:?}"
            );
            for epoch in now_a.get(&p).into_iter().chain(now_b.get(&p)) {
                let seen = newest.entry(p).or_insert(*epoch);
                assert!(*epoch >= *seen, "partition {p}: epoch {epoch} after {seen}");
                *seen = *epoch;
            }
        }
        if now_a.len() == 1 && now_b.len() == 1 && thawed.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "shared again {:.1} s after the thaw",
                thawed.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partitions were not shared again after the thaw: a {now_a:?}, b {now_b:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_inbound_item_survives_a_server_crash_and_a_retry_is_not_stored_twice() {
    const P: u16 = 4;
    let mut nats = NatsCluster::start().await;
    let node = Cluster::connect(config("a", nats.urls(), P))
        .await
        .expect("connect");
    let item = |i: usize| {
        (
            format!("whatsapp:wamid.{i}"),
            Bytes::from(format!("item {i}")),
        )
    };
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let (id, payload) = item(i);
        let p = u16::try_from(i % 4).expect("small");
        let published = node
            .publish_inbound(p, &id, payload)
            .await
            .expect("publish");
        assert!(!published.duplicate);
        acknowledged.push((p, published.sequence, i));
    }
    // A crash of the server leading the stream: the other two elect a new leader, and
    // publishing goes on through the election (retried with the same ids).
    let leader = node
        .jetstream()
        .get_stream(INBOUND_STREAM)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let leader: usize = leader
        .trim_start_matches('n')
        .parse()
        .expect("servers are named n0, n1, n2");
    nats.kill(leader);
    let crashed = Instant::now();
    for i in 40..80 {
        let (id, payload) = item(i);
        let p = u16::try_from(i % 4).expect("small");
        let published = node
            .publish_inbound(p, &id, payload)
            .await
            .expect("publish after a server crash");
        // `duplicate` may be true here: an attempt stored during the election whose
        // acknowledgement was lost, then retried (the count below shows nothing twice).
        acknowledged.push((p, published.sequence, i));
    }
    eprintln!(
        "40 items published in {:.1} s after the stream leader's crash",
        crashed.elapsed().as_secs_f64()
    );
    // A provider's retry of an item already in the log.
    let (id, payload) = item(7);
    let retry = node.publish_inbound(3, &id, payload).await.expect("retry");
    assert!(retry.duplicate, "a retry within the window is recognised");
    let original = acknowledged.iter().find(|a| a.2 == 7).expect("item 7");
    assert_eq!(
        retry.sequence, original.1,
        "the retry names the stored item"
    );
    assert!(
        node.publish_inbound(P, "x", Bytes::from_static(b"x"))
            .await
            .is_err(),
        "a partition past the count is refused"
    );

    // Read back from the log: every acknowledged item, once, in order.
    let mut stream = node
        .jetstream()
        .get_stream(INBOUND_STREAM)
        .await
        .expect("stream");
    let info = stream.info().await.expect("info");
    assert_eq!(info.state.messages, 80, "80 items stored, the retry not");
    // Made through the JetStream meta leader, which the crash may have cost an election.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut messages = loop {
        let reader = async {
            stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
                .await?
                .messages()
                .await
                .map_err(async_nats::Error::from)
        };
        match reader.await {
            Ok(messages) => break messages,
            Err(e) => {
                assert!(Instant::now() < deadline, "no reader of the log: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut read = Vec::new();
    while read.len() < 80 {
        let message = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .expect("the log is read within 20 s")
            .expect("a message")
            .expect("no error");
        let p: u16 = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("partition subject");
        let sequence = message.info().expect("info").stream_sequence;
        read.push((
            p,
            sequence,
            String::from_utf8_lossy(&message.payload).into_owned(),
        ));
    }
    let expected: Vec<_> = acknowledged
        .iter()
        .map(|(p, s, i)| (*p, *s, format!("item {i}")))
        .collect();
    assert_eq!(read, expected);
}

/// A node of the changelog test: its own store and committer, applying the changelog.
struct Replica {
    _dir: tempfile::TempDir,
    store: confab_engine::store::Store,
    changelog: confab_cluster::changelog::Changelog,
}

async fn replica(cluster: &Cluster) -> Replica {
    use confab_engine::committer::{Committer, Durability};
    use confab_engine::store::{Store, StoreOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
    let (committer, _thread) =
        Committer::start_replica(store.clone(), Durability::Fsync).expect("committer");
    let changelog = confab_cluster::changelog::Changelog::start(cluster, &store, committer)
        .await
        .expect("changelog");
    Replica {
        _dir: dir,
        store,
        changelog,
    }
}

/// What a conversation's inbound message writes, in miniature: the provider id guarded,
/// a counter, two deltas.
fn message_set(ws: confab_engine::ids::WorkspaceId, n: u32) -> confab_engine::committer::WriteSet {
    use confab_engine::catalogue::Ks;
    use confab_engine::delta::{DeltaBody, NotificationReason};
    let mut set = confab_engine::committer::WriteSet::new();
    let ext = format!("wamid.{n}").into_bytes();
    set.require_absent(Ks::ExtMsg, ext.clone())
        .put_raw(Ks::ExtMsg, ext, n.to_be_bytes().to_vec())
        .add(Ks::FacetCount, b"cluster-test".to_vec(), 1);
    for _ in 0..2 {
        set.delta(
            ws,
            confab_engine::ids::ConversationId::new(),
            DeltaBody::Notification {
                agent_id: confab_engine::ids::AgentId::new(),
                reason: NotificationReason::Mention,
                message_id: None,
                by_agent_id: None,
                notification: None,
            },
        );
    }
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_applying_the_changelog_hold_the_same_deltas_through_a_server_crash() {
    use confab_engine::changelog::Applied;
    let mut nats = NatsCluster::start().await;
    let a_node = Cluster::connect(config("a", nats.urls(), 4))
        .await
        .expect("a");
    let b_node = Cluster::connect(config("b", nats.urls(), 4))
        .await
        .expect("b");
    let a = replica(&a_node).await;
    let b = replica(&b_node).await;
    let ws = confab_engine::ids::WorkspaceId::new();

    let mut offsets = Vec::new();
    for n in 0..60u32 {
        if n == 30 {
            // The changelog's leader crashes: the owner's commits go on after the election.
            let leader = a_node
                .jetstream()
                .get_stream(confab_cluster::CHANGES_STREAM)
                .await
                .expect("stream")
                .info()
                .await
                .expect("info")
                .cluster
                .clone()
                .and_then(|c| c.leader)
                .expect("a leader");
            nats.kill(leader.trim_start_matches('n').parse().expect("n0..n2"));
        }
        let applied = a
            .changelog
            .commit(
                0,
                7,
                vec![message_set(ws, 2 * n), message_set(ws, 2 * n + 1)],
            )
            .await
            .expect("commit");
        let Applied::Sets(outcomes) = applied else {
            panic!("the owner's entry was not applied: {applied:?}");
        };
        for outcome in outcomes {
            offsets.extend(outcome.expect("each set applied").offsets);
        }
    }
    assert_eq!(
        offsets,
        (1..=240).collect::<Vec<_>>(),
        "offsets in the changelog's order"
    );
    // A retried provider message: refused by its guard on every node.
    let retry = a
        .changelog
        .commit(0, 7, vec![message_set(ws, 5)])
        .await
        .expect("commit");
    assert!(
        matches!(&retry, Applied::Sets(o) if o[0].is_err()),
        "{retry:?}"
    );
    // A former owner's late write, under an older epoch: fenced on every node.
    let late = b
        .changelog
        .commit(0, 6, vec![message_set(ws, 9_999)])
        .await
        .expect("commit");
    assert!(
        matches!(late, Applied::Fenced { newest_epoch: 7 }),
        "{late:?}"
    );

    // b reaches a's position, and holds the same deltas at the same offsets.
    let target = *a.changelog.applied().borrow();
    let mut watch_b = b.changelog.applied();
    tokio::time::timeout(Duration::from_secs(30), watch_b.wait_for(|p| *p >= target))
        .await
        .expect("b applies the changelog within 30 s")
        .expect("b's reader runs");
    let head = a.store.delta_head().expect("head");
    assert_eq!(head, 240);
    assert_eq!(b.store.delta_head().expect("head"), head);
    let deltas_a = a
        .store
        .deltas_between(ws, 0, head, 1_000)
        .expect("a deltas");
    let deltas_b = b
        .store
        .deltas_between(ws, 0, head, 1_000)
        .expect("b deltas");
    assert_eq!(deltas_a.len(), 240);
    assert_eq!(deltas_a, deltas_b, "the replicas' delta logs differ");
    let count = |r: &Replica| {
        r.store
            .get_raw(confab_engine::catalogue::Ks::FacetCount, b"cluster-test")
            .expect("read")
            .map(|v| confab_engine::committer::decode_counter(&v))
    };
    assert_eq!(count(&a), Some(120));
    assert_eq!(count(&b), Some(120));
}
