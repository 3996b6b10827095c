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
    let deadline = Instant::now() + Duration::from_secs(60);
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
        assert!(!published.duplicate);
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
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("reader");
    let mut messages = consumer.messages().await.expect("messages");
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
