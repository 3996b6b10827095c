//! Operating Confab: online backup and restore through the real binary's commands, and
//! upgrades from a data directory written by the previous store format.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{wait_for, GraphStandIn, StreamClient, TestServer};
use crate::process::{all_conversations, confab_binary, lead_writes};

/// Leads writing at once during the backup, and messages each sends.
const LEADS: usize = 8;
const MESSAGES_PER_LEAD: usize = 40;

fn lead_phone(lead: usize) -> String {
    format!("55119876{lead:05}")
}

/// Runs the binary with `args` and returns its standard output; asserts success.
async fn confab(args: Vec<String>, env: Vec<(&'static str, String)>) -> String {
    let binary = confab_binary().await;
    let output = tokio::process::Command::new(binary)
        .args(&args)
        .envs(env)
        .output()
        .await
        .expect("confab runs");
    assert!(
        output.status.success(),
        "confab {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn search_hits(server: &TestServer, token: &str, q: &str) -> Vec<Value> {
    let (status, page) = server.get(token, &format!("/api/v1/search?q={q}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_backup_under_load_restores_every_message_acknowledged_before_it_exactly_once() {
    let graph = GraphStandIn::start().await;
    let server = TestServer::start().await;
    let tenant = server.provision(&graph).await;

    // Leads write concurrently; each acknowledged wamid is noted with whether the backup
    // had started when its 200 arrived.
    let backup_started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let mut writers = Vec::new();
    for lead in 0..LEADS {
        let (base, http, tenant) = (server.url(""), server.http.clone(), tenant.clone());
        let (backup_started, acked) = (backup_started.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..MESSAGES_PER_LEAD {
                let wamid = format!("wamid.L{lead}-{n}");
                lead_writes(
                    &http,
                    &base,
                    &tenant,
                    (&lead_phone(lead), &format!("Lead {lead}")),
                    &wamid,
                    &format!("message {n} from lead {lead} about the brooklyn loft"),
                )
                .await;
                let before = !backup_started.load(std::sync::atomic::Ordering::SeqCst);
                acked.lock().expect("lock").push((wamid, before));
            }
        }));
    }
    wait_for("a quarter of the messages", || async {
        (acked.lock().expect("lock").len() >= LEADS * MESSAGES_PER_LEAD / 4).then_some(())
    })
    .await;

    // `confab backup` against the running server, traffic going on.
    let root = tempfile::tempdir().expect("dir");
    let backup_dir = root.path().join("backup");
    backup_started.store(true, std::sync::atomic::Ordering::SeqCst);
    let printed = confab(
        vec![
            "backup".into(),
            "--to".into(),
            backup_dir.display().to_string(),
            "--url".into(),
            server.url(""),
        ],
        vec![("CONFAB_ADMIN_TOKEN", server.admin_token.clone())],
    )
    .await;
    assert!(printed.contains("backup written to"), "{printed}");
    let acked_before: HashSet<String> = acked
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, before)| *before)
        .map(|(wamid, _)| wamid.clone())
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup_dir.join("manifest.json")).expect("manifest"))
            .expect("manifest is JSON");
    let head = manifest["delta_head"].as_u64().expect("delta head");
    assert!(
        acked.lock().expect("lock").len() == LEADS * MESSAGES_PER_LEAD,
        "every message acknowledged"
    );

    // A second backup into the same directory is refused; nothing in it changes.
    let (status, refused) = server
        .admin_post(
            "/api/v1/admin/backups",
            json!({"to": backup_dir.display().to_string()}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "backup_dir_not_empty");
    let (status, refused) = server
        .admin_post("/api/v1/admin/backups", json!({"to": "relative/dir"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "path_not_absolute");
    server.shutdown().await;

    // `confab restore` into a new data directory, and a server on it.
    let data_dir = root.path().join("restored");
    let printed = confab(
        vec![
            "restore".into(),
            "--from".into(),
            backup_dir.display().to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ],
        vec![],
    )
    .await;
    assert!(
        printed.contains(&format!("up to delta offset {head}")),
        "{printed}"
    );
    let restored = TestServer::start_with(|config| config.data_dir = data_dir.clone()).await;

    // Every message acknowledged before the backup started is there, each once; nothing
    // is there twice.
    let conversations = all_conversations(&restored.http, &restored.url(""), &tenant.token).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, messages) in &conversations {
        for message in messages {
            let text = message["text"].as_str().expect("text").to_string();
            *seen.entry(text).or_default() += 1;
        }
    }
    assert!(seen.values().all(|n| *n == 1), "a message twice: {seen:?}");
    for wamid in &acked_before {
        let (lead, n) = wamid
            .trim_start_matches("wamid.L")
            .split_once('-')
            .expect("wamid");
        let text = format!("message {n} from lead {lead} about the brooklyn loft");
        assert!(
            seen.contains_key(&text),
            "{wamid} acknowledged before the backup, missing"
        );
    }
    assert!(seen.len() >= acked_before.len());

    // It streams: a replay from offset 0 reaches the backup's head.
    let mut stream = StreamClient::connect(&restored, &tenant.token).await;
    let reported = stream.subscribe(Some(0)).await;
    assert_eq!(reported, head);
    let deltas = stream
        .deltas_until(|d| d["offset"].as_u64() == Some(head))
        .await;
    let offsets: Vec<u64> = deltas
        .iter()
        .map(|d| d["offset"].as_u64().expect("offset"))
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "in order, once");

    // It searches: the index, not in the backup, is rebuilt from the store.
    let found = wait_for("the rebuilt index finds the messages", || async {
        let hits = search_hits(&restored, &tenant.token, "brooklyn").await;
        (!hits.is_empty()).then_some(hits)
    })
    .await;
    assert!(!found.is_empty());

    // And it takes new messages.
    restored
        .lead_says(
            &tenant,
            &lead_phone(0),
            "Lead 0",
            "wamid.after",
            "after the restore",
        )
        .await;
    restored.shutdown().await;
}

#[tokio::test]
async fn data_directories_of_every_previous_format_are_migrated_and_serve_all_of_it() {
    // Each written by an earlier release (see tests/fixtures/README.md): a workspace, two
    // leads, three inbound messages, a reply and a tag; formats 1 and 2 also a third lead erased.
    for format in 0..confab_engine::format::FORMAT_VERSION {
        previous_format_serves(format).await;
    }
}

async fn previous_format_serves(format: u32) {
    let root = tempfile::tempdir().expect("dir");
    let data_dir = root.path().join("data");
    std::fs::create_dir(&data_dir).expect("mkdir");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/format-{format}.tar.gz"));
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(&data_dir)
        .status()
        .expect("tar runs");
    assert!(status.success(), "fixture {} extracted", fixture.display());
    let tenant: Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("tenant.json")).expect("tenant.json"))
            .expect("JSON");
    let token = tenant["token"].as_str().expect("token").to_string();

    let server = TestServer::start_with(|config| config.data_dir = data_dir.clone()).await;
    let conversations = all_conversations(&server.http, &server.url(""), &token).await;
    let mut texts: Vec<Vec<String>> = conversations
        .iter()
        .map(|(_, messages)| {
            messages
                .iter()
                .map(|m| m["text"].as_str().expect("text").to_string())
                .collect()
        })
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        vec![
            vec![
                "Hello, is the loft on Rua Augusta still available?".to_string(),
                "I could visit on Saturday morning".to_string(),
                "Yes it is, Saturday at 10 works".to_string(),
            ],
            vec!["What is the price of the penthouse?".to_string()],
        ],
        "format {format}"
    );
    let maria = conversations
        .iter()
        .find(|(card, _)| card["id"] == tenant["conversation_id"])
        .expect("Maria's conversation");
    assert_eq!(maria.0["tags"], json!(["visit"]), "{}", maria.0);
    let found = wait_for("search over the old data", || async {
        let hits = search_hits(&server, &token, "penthouse").await;
        (!hits.is_empty()).then_some(hits)
    })
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    if let Some(erasure) = tenant["erasure_id"].as_str() {
        // The erasure's record is kept, and what it erased stays erased.
        let (status, record) = server
            .get(&token, &format!("/api/v1/erasures/{erasure}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{record}");
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["erased"]["messages"], 1, "{record}");
        assert!(search_hits(&server, &token, "cellar").await.is_empty());
    }
    // New writes land beside the old ones.
    let (status, _) = server
        .post(
            &token,
            &format!(
                "/api/v1/conversations/{}/tags",
                tenant["conversation_id"].as_str().expect("id")
            ),
            json!({"add": ["migrated"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server.shutdown().await;

    // The store now carries the current format.
    let store = confab_engine::store::Store::open(&data_dir, &Default::default()).expect("opens");
    assert_eq!(
        store.format_version().expect("readable"),
        Some(confab_engine::format::FORMAT_VERSION)
    );
}

/// Waits until the erasure `id` is completed, through the API at `base`.
async fn erasure_completed(http: &reqwest::Client, base: &str, token: &str, id: &str) -> Value {
    wait_for("the erasure completes", || async {
        let response = http
            .get(format!("{base}/api/v1/erasures/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        let erasure: Value = response.json().await.ok()?;
        (erasure["status"] == "completed").then_some(erasure)
    })
    .await
}

#[tokio::test]
async fn an_erasure_recorded_before_a_stop_is_carried_out_by_the_next_start() {
    let graph = GraphStandIn::start().await;
    let server = TestServer::start().await;
    let tenant = server.provision(&graph).await;
    server
        .lead_says(
            &tenant,
            "5511900000001",
            "Rui Ramos",
            "wamid.R1",
            "rui wants the garden flat",
        )
        .await;
    server
        .lead_says(
            &tenant,
            "5511900000002",
            "Bia Borges",
            "wamid.B1",
            "bia stays",
        )
        .await;
    let rui = server.conversation_of(&tenant, "5511900000001").await;
    let contact: confab_engine::ids::ContactId = rui["contact"]["id"]
        .as_str()
        .expect("contact")
        .parse()
        .expect("id");
    let dir = server.dir.clone();
    let config = server.config.clone();
    server.shutdown().await;

    // The state a crash right after the erasure was recorded leaves: the record, no step.
    let record = {
        let store =
            confab_engine::store::Store::open(dir.path(), &Default::default()).expect("store");
        let (committer, thread) = confab_engine::committer::Committer::start(
            store,
            confab_engine::committer::Durability::Fsync,
        )
        .expect("committer");
        let record = confab_engine::erasure::Erasure::new(
            tenant.workspace_id.parse().expect("workspace"),
            contact,
            tenant.agent_id.parse().expect("agent"),
            confab_engine::time::now_millis(),
        );
        let mut set = confab_engine::committer::WriteSet::new();
        set.put(confab_engine::catalogue::Ks::Erasure, record.key(), &record);
        committer.commit(set).await.expect("recorded");
        committer.close();
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("committer stops");
        record
    };

    let server = TestServer::start_with(|c| {
        c.data_dir = config.data_dir.clone();
        c.admin_token = config.admin_token.clone();
    })
    .await;
    let done = erasure_completed(&server.http, &server.url(""), &tenant.token, &record.id).await;
    assert_eq!(done["erased"]["conversations"], 1, "{done}");
    let left = server.conversations(&tenant.token).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].to_string().contains("Bia Borges"));
    let (status, _) = server
        .get(&tenant.token, &format!("/api/v1/contacts/{contact}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(search_hits(&server, &tenant.token, "garden")
        .await
        .is_empty());
    let (_, counts) = server
        .get(&tenant.token, "/api/v1/conversations/counts")
        .await;
    assert_eq!(counts["all"], 1, "{counts}");
    // The index itself, not only what the API shows of it.
    assert_eq!(
        server.index_hits(&tenant.workspace_id, "garden").await,
        (0, 0),
        "the index still holds the erased lead"
    );
    // A later message from the lead makes a new lead.
    server
        .lead_says(
            &tenant,
            "5511900000001",
            "Rui Ramos",
            "wamid.R2",
            "rui is back",
        )
        .await;
    let back = server.conversation_of(&tenant, "5511900000001").await;
    assert_ne!(back["id"], rui["id"]);
    assert_ne!(back["contact"]["id"], rui["contact"]["id"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_kill_9_during_an_erasure_leaves_it_to_the_next_start_which_completes_it() {
    let binary = confab_binary().await;
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("data");
    let admin = "admin-erasure-crash".to_string();
    let http = reqwest::Client::new();
    let serve = |binary: std::path::PathBuf, dir: std::path::PathBuf, admin: String| async move {
        tokio::task::spawn_blocking(move || crate::process::Process::serve(&binary, &dir, &admin))
            .await
            .expect("server starts")
    };
    let server = serve(binary.clone(), dir.clone(), admin.clone()).await;
    let tenant = crate::process::provision(&http, &server.base, &admin, "http://127.0.0.1:9").await;
    // A lead with many messages (the erasure takes a while), and one who stays.
    let mut sent = futures_util::stream::FuturesUnordered::new();
    for n in 0..1_500 {
        let (http, base, tenant) = (http.clone(), server.base.clone(), tenant.clone());
        sent.push(async move {
            lead_writes(
                &http,
                &base,
                &tenant,
                ("5511911111111", "Caio Costa"),
                &format!("wamid.C{n}"),
                &format!("caio message {n} about the harbour loft"),
            )
            .await;
        });
        if sent.len() >= 16 {
            futures_util::StreamExt::next(&mut sent).await;
        }
    }
    while futures_util::StreamExt::next(&mut sent).await.is_some() {}
    lead_writes(
        &http,
        &server.base,
        &tenant,
        ("5511922222222", "Dora Dias"),
        "wamid.D1",
        "dora stays",
    )
    .await;
    let conversations = all_conversations(&http, &server.base, &tenant.token).await;
    let caio = conversations
        .iter()
        .find(|(card, _)| card.to_string().contains("Caio Costa"))
        .expect("Caio's conversation");
    let contact = caio.0["contact"]["id"]
        .as_str()
        .expect("contact")
        .to_string();

    // Erase, and kill the server as soon as the erasure is recorded: wherever the kill
    // lands (before any step, in the middle, after the end), the next start finishes it.
    let answer = http
        .delete(format!(
            "{}/api/v1/contacts/{contact}?erase=true",
            server.base
        ))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .expect("erase");
    assert_eq!(answer.status().as_u16(), 202);
    let erasure: Value = answer.json().await.expect("erasure");
    tokio::task::spawn_blocking(move || server.kill_9())
        .await
        .expect("killed");
    let id = erasure["id"].as_str().expect("id").to_string();

    let server = serve(binary, dir, admin).await;
    let done = erasure_completed(&http, &server.base, &tenant.token, &id).await;
    assert_eq!(
        done["conversations"].as_array().map(Vec::len),
        Some(1),
        "{done}"
    );
    let left = all_conversations(&http, &server.base, &tenant.token).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].0.to_string().contains("Dora Dias"));
    let answer = http
        .get(format!("{}/api/v1/search?q=harbour", server.base))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .expect("search");
    let page: Value = answer.json().await.expect("page");
    assert_eq!(page["items"], json!([]), "{page}");
    tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("stopped");
}

#[tokio::test]
async fn retention_archives_then_removes_old_messages_and_conversations_inactive_since() {
    let clock = confab_actors::ManualClock::starting_at(confab_engine::time::now_millis());
    let graph = GraphStandIn::start().await;
    let server = TestServer::start_with_clock(clock.clone(), |c| {
        c.retention.interval_secs = 1;
    })
    .await;
    let tenant = server.provision(&graph).await;
    // Carla's conversation goes quiet; Ana writes before and after the cutoff; Beto after.
    server
        .lead_says(
            &tenant,
            "5511933333333",
            "Carla Cruz",
            "wamid.C1",
            "carla asks about the cellar",
        )
        .await;
    server
        .lead_says(
            &tenant,
            "5511944444444",
            "Ana Alves",
            "wamid.A1",
            "ana first asks about the attic",
        )
        .await;
    // A WhatsApp message is dated by the provider to the second: the cutoff is the start
    // of the next second.
    let first_second = confab_engine::time::now_millis() / 1000;
    wait_for("the next second", || async {
        (confab_engine::time::now_millis() / 1000 > first_second).then_some(())
    })
    .await;
    let cutoff = (first_second + 1) * 1000;
    server
        .lead_says(
            &tenant,
            "5511944444444",
            "Ana Alves",
            "wamid.A2",
            "ana later asks about the balcony",
        )
        .await;
    server
        .lead_says(
            &tenant,
            "5511955555555",
            "Beto Braga",
            "wamid.B1",
            "beto asks about the garage",
        )
        .await;
    let ana = server.conversation_of(&tenant, "5511944444444").await;
    let ana_id = ana["id"].as_str().expect("id").to_string();

    let (status, settings) = server
        .patch_json(
            &tenant.token,
            "/api/v1/workspace/settings",
            // A whole number as JSON may write it.
            json!({"retention_days": 30.0, "retention_archive": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["retention_days"], 30);
    let (status, refused) = server
        .patch_json(
            &tenant.token,
            "/api/v1/workspace/settings",
            json!({"retention_days": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    // Nothing is 30 days old yet.
    assert_eq!(server.conversations(&tenant.token).await.len(), 3);

    let carla = server.conversation_of(&tenant, "5511933333333").await;
    let carla_id = carla["id"].as_str().expect("id").to_string();
    let ana_first = server
        .messages(&tenant.token, &ana_id)
        .await
        .iter()
        .find(|m| m["text"] == "ana first asks about the attic")
        .map(|m| m["id"].clone())
        .expect("Ana's first message");
    let mut live = StreamClient::connect(&server, &tenant.token).await;
    live.subscribe(None).await;

    // Thirty days later, to the second between Ana's two messages.
    clock.set(cutoff + 30 * 86_400_000);
    wait_for("retention removed Ana's first message", || async {
        let texts: Vec<String> = server
            .messages(&tenant.token, &ana_id)
            .await
            .iter()
            .map(|m| m["text"].as_str().expect("text").to_string())
            .collect();
        (texts == ["ana later asks about the balcony"]).then_some(())
    })
    .await;
    let left = wait_for("Carla's quiet conversation is gone", || async {
        let left = server.conversations(&tenant.token).await;
        (left.len() == 2).then_some(left)
    })
    .await;
    assert!(
        !left.iter().any(|c| c.to_string().contains("Carla")),
        "{left:?}"
    );
    let (_, counts) = server
        .get(&tenant.token, "/api/v1/conversations/counts")
        .await;
    assert_eq!(counts["all"], 2, "{counts}");
    // An open inbox hears of both removals.
    let (mut conversation_removed, mut messages_removed) = (false, false);
    while !(conversation_removed && messages_removed) {
        let delta = live.next_of("delta").await;
        match delta["kind"].as_str() {
            Some("conversation_removed") => {
                assert_eq!(delta["conversation_id"], carla_id.as_str(), "{delta}");
                conversation_removed = true;
            }
            Some("messages_removed") => {
                assert_eq!(delta["conversation_id"], ana_id.as_str(), "{delta}");
                assert_eq!(delta["message_ids"], json!([ana_first]), "{delta}");
                messages_removed = true;
            }
            _ => {}
        }
    }
    live.close().await;

    // Gone from the index itself; what stays is still found.
    for (word, expected) in [("cellar", 0), ("attic", 0), ("balcony", 1), ("garage", 1)] {
        let (messages, _) = server.index_hits(&tenant.workspace_id, word).await;
        assert_eq!(messages, expected, "message hits for {word}");
    }

    // The archive holds what went, and only that.
    let archive_dir = server
        .config
        .data_dir
        .join("archive")
        .join(&tenant.workspace_id);
    let archived: String = std::fs::read_dir(&archive_dir)
        .expect("archive dir")
        .map(|f| std::fs::read_to_string(f.expect("entry").path()).expect("read"))
        .collect();
    let lines: Vec<Value> = archived
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON Lines"))
        .collect();
    let mut texts: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "message")
        .map(|l| l["message"]["text"].as_str().expect("text"))
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            "ana first asks about the attic",
            "carla asks about the cellar"
        ],
        "{archived}"
    );
    // Each archived message follows its conversation's line (its state, for context).
    assert_eq!(
        lines.iter().filter(|l| l["type"] == "conversation").count(),
        2
    );
    server.shutdown().await;
}
