//! A power cut, not just a crashed process: the data directory is on ext4 on a loop device;
//! the server is killed under webhook load and the loop device's backing image is copied
//! at once, while the file system is still mounted. The copy has what reached the "disk"
//! and lacks whatever was only in the mounted ext4's page cache (dirty pages stay there
//! for ~30 s, `vm.dirty_expire_centisecs`), exactly like a power cut. The copy is then
//! mounted (ext4 replays its journal) and a server started on it.
//!
//! With the default durability (`fsync`) every acknowledged message is there, search finds
//! each once and nothing else, and finds new messages too. The control,
//! `CONFAB_DURABILITY=buffered`, must lose acknowledged messages, or this test could not
//! tell the two apart.
//!
//! The copy is not an atomic snapshot of the device: a write reaching the image while
//! `cp` reads it could be torn in a way a real power cut would not. Nothing writes to the
//! file system then except, at worst, a jbd2 commit (checksummed: an incomplete one is
//! ignored at replay), and the copy takes a few milliseconds.
//!
//! Needs root, loop devices and ext4; without them the tests print why and pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{GraphStandIn, Tenant};
use crate::process::{
    all_conversations, confab_binary, lead_writes, provision, search_all, signed_text_webhook,
    Process,
};

const IMAGE_BYTES: u64 = 256 << 20;
const SENDERS: usize = 4;
/// Messages per lead before a sender moves on to a new lead (a new conversation).
const MESSAGES_PER_LEAD: u32 = 20;
/// The load runs at least this long and until this many messages are acknowledged.
const LOAD_FOR: Duration = Duration::from_millis(1500);
const MIN_ACKED: usize = 50;
/// Messages sent after the power cut, on the copy.
const AFTERWARDS: usize = 5;
const PATIENCE: Duration = Duration::from_secs(60);

/// Why this machine cannot run the test.
struct Unavailable(String);

/// Runs a command; `Err` says what failed, `Unavailable` when the program is missing.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String, Result<String, Unavailable>> {
    match Command::new(program).args(args).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Err(Unavailable(format!("{program} is not installed"))))
        }
        Err(e) => Err(Ok(format!("{program} did not run: {e}"))),
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(Ok(format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

fn is_root() -> bool {
    // The effective uid is the second field of `Uid:`.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// A loop device over an image file with ext4 mounted on it; unmounted and detached on
/// drop, whether the test passed or not.
struct LoopMount {
    device: String,
    mount_point: PathBuf,
    mounted: bool,
}

impl LoopMount {
    fn mount(image: &Path, mount_point: &Path) -> Result<LoopMount, Unavailable> {
        std::fs::create_dir_all(mount_point).expect("mount point");
        // `losetup -f` picks a free device atomically, so parallel tests never share one.
        let device = match run(
            "losetup",
            &["-f".as_ref(), "--show".as_ref(), image.as_ref()],
        ) {
            Ok(out) => out.trim().to_string(),
            Err(Err(missing)) => return Err(missing),
            Err(Ok(why)) => return Err(Unavailable(format!("no loop device: {why}"))),
        };
        let mut mounted = LoopMount {
            device,
            mount_point: mount_point.to_path_buf(),
            mounted: false,
        };
        match run("mount", &[mounted.device.as_ref(), mount_point.as_ref()]) {
            Ok(_) => mounted.mounted = true,
            Err(Err(missing)) => return Err(missing),
            Err(Ok(why)) => {
                let lower = why.to_lowercase();
                if ["permission denied", "not permitted", "must be superuser"]
                    .iter()
                    .any(|p| lower.contains(p))
                {
                    return Err(Unavailable(format!("mounting is not allowed: {why}")));
                }
                panic!("mounting {} failed: {why}", image.display());
            }
        }
        Ok(mounted)
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            let point: &std::ffi::OsStr = self.mount_point.as_ref();
            let unmounted = (0..50).any(|_| {
                run("umount", &[point]).is_ok() || {
                    std::thread::sleep(Duration::from_millis(100));
                    false
                }
            });
            if !unmounted {
                eprintln!(
                    "powerloss: {} busy, unmounting lazily",
                    self.mount_point.display()
                );
                let _ = run("umount", &["-l".as_ref(), point]);
            }
        }
        if let Err(why) = run("losetup", &["-d".as_ref(), self.device.as_ref()]) {
            eprintln!("powerloss: detaching {}: {:?}", self.device, why.ok());
        }
    }
}

/// Creates a sparse image with an empty ext4 on it.
fn make_disk(image: &Path) -> Result<(), Unavailable> {
    std::fs::File::create(image)
        .and_then(|f| f.set_len(IMAGE_BYTES))
        .expect("sparse image");
    // Inode tables and journal initialised now, not by a background thread during the test.
    let args: [&std::ffi::OsStr; 5] = [
        "-q".as_ref(),
        "-F".as_ref(),
        "-E".as_ref(),
        "lazy_itable_init=0,lazy_journal_init=0".as_ref(),
        image.as_ref(),
    ];
    match run("mkfs.ext4", &args) {
        Ok(_) => Ok(()),
        Err(Err(missing)) => Err(missing),
        Err(Ok(why)) => panic!("{why}"),
    }
}

async fn serve(binary: &Path, dir: &Path, admin: &str, durability: &'static str) -> Process {
    let (binary, dir, admin) = (binary.to_path_buf(), dir.to_path_buf(), admin.to_string());
    tokio::task::spawn_blocking(move || {
        Process::serve_env(
            &binary,
            &dir,
            &admin,
            &[],
            &[("CONFAB_DURABILITY", durability)],
        )
    })
    .await
    .expect("server start task")
}

struct Load {
    tenant: Tenant,
    http: reqwest::Client,
    base: String,
    killed: AtomicBool,
    /// wamids acknowledged (2xx), and when the last was.
    acked: Mutex<(Vec<String>, Option<Instant>)>,
}

/// Posts messages one after the other (a new lead every [`MESSAGES_PER_LEAD`]) until the
/// server is killed.
async fn sender(load: Arc<Load>, sender: usize) {
    for i in 0u32.. {
        let (lead, n) = (i / MESSAGES_PER_LEAD, i % MESSAGES_PER_LEAD + 1);
        let wamid = format!("wamid.PL.s{sender}l{lead}.{n}");
        let (body, signature) = signed_text_webhook(
            &load.tenant,
            &format!("4478{sender:02}{lead:05}"),
            &format!("Lead {sender}-{lead}"),
            &wamid,
            &format!("power loss sender {sender} lead {lead} message {n}"),
        );
        let response = load
            .http
            .post(format!(
                "{}/webhooks/whatsapp/{}",
                load.base, load.tenant.channel_id
            ))
            .header("content-type", "application/json")
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
            .await;
        let acked = match response {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.is_ok(),
            _ => false,
        };
        if !acked {
            // Requests fail once the server is killed, never before.
            assert!(
                load.killed.load(Ordering::Acquire),
                "{wamid} failed before the power cut"
            );
            return;
        }
        let mut acked = load.acked.lock().expect("lock");
        acked.0.push(wamid);
        acked.1 = Some(Instant::now());
    }
}

/// Sends [`AFTERWARDS`] messages of a new lead and returns how many of them search finds
/// (waiting up to 10 s for them).
async fn afterwards(http: &reqwest::Client, base: &str, tenant: &Tenant) -> usize {
    for n in 1..=AFTERWARDS {
        lead_writes(
            http,
            base,
            tenant,
            ("447899999", "Lead After"),
            &format!("wamid.PL.after.{n}"),
            &format!("afterwards message {n}"),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hits = search_all(http, base, &tenant.token, &[("q", "afterwards")]).await;
        if hits.len() >= AFTERWARDS || Instant::now() > deadline {
            return hits.len();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Figures {
    acked: usize,
    present: usize,
    lost: usize,
    /// Search hits beyond the first for one message.
    found_twice: usize,
    /// Search hits for messages the store does not have.
    stale: usize,
    /// Of the [`AFTERWARDS`] messages sent after the power cut, how many search finds
    /// (when asked for).
    new_found: Option<usize>,
}

/// Provisions durably, runs the load under `durability`, cuts the power and counts what the
/// copy of the disk has, and what search finds of it; with `search_afterwards` also whether
/// search finds new messages sent after the power cut. `None` when the machine cannot run
/// it.
async fn power_cut(durability: &'static str, search_afterwards: bool) -> Option<Figures> {
    let skip = |why: Unavailable| {
        println!("powerloss ({durability}): SKIPPED: {}", why.0);
        None
    };
    if !is_root() {
        return skip(Unavailable("not root: cannot set up loop devices".into()));
    }
    if !Path::new("/dev/loop-control").exists() {
        return skip(Unavailable("no /dev/loop-control".into()));
    }
    let started = Instant::now();
    let binary = confab_binary().await;
    let built = started.elapsed();
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("disk.img");
    if let Err(why) = make_disk(&image) {
        return skip(why);
    }
    let disk = match LoopMount::mount(&image, &dir.path().join("disk")) {
        Ok(disk) => disk,
        Err(why) => return skip(why),
    };
    let data = disk.mount_point.join("data");
    let admin = format!("admin-{}", confab_engine::admin::new_token());
    let graph = GraphStandIn::start().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");

    // The workspace, agent and channel are made durable first (fsync), so that what the
    // control loses is the load, not the means to read it back.
    let process = serve(&binary, &data, &admin, "fsync").await;
    let tenant = provision(&http, &process.base, &admin, &graph.base_url).await;
    tokio::task::spawn_blocking(move || process.kill_9())
        .await
        .expect("kill");

    let process = serve(&binary, &data, &admin, durability).await;
    let load = Arc::new(Load {
        tenant: tenant.clone(),
        http: http.clone(),
        base: process.base.clone(),
        killed: AtomicBool::new(false),
        acked: Mutex::new((Vec::new(), None)),
    });
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| tokio::spawn(sender(load.clone(), s)))
        .collect();
    let load_started = Instant::now();
    loop {
        let acked = load.acked.lock().expect("lock").0.len();
        if acked >= MIN_ACKED && load_started.elapsed() >= LOAD_FOR {
            break;
        }
        assert!(
            load_started.elapsed() < PATIENCE,
            "only {acked} messages acknowledged in {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The power cut: the process dies, and the disk is what the device has right now.
    let copy = dir.path().join("after-power-cut.img");
    let (killed_at, copy_started, copied_at) = {
        let (image, copy, load) = (image.clone(), copy.clone(), load.clone());
        tokio::task::spawn_blocking(move || {
            load.killed.store(true, Ordering::Release);
            process.kill_9();
            let killed_at = Instant::now();
            let copy_started = Instant::now();
            run(
                "cp",
                &["--sparse=always".as_ref(), image.as_ref(), copy.as_ref()],
            )
            .unwrap_or_else(|why| panic!("copying the disk: {:?}", why.ok()));
            (killed_at, copy_started, Instant::now())
        })
        .await
        .expect("power cut")
    };
    for handle in senders {
        tokio::time::timeout(PATIENCE, handle)
            .await
            .expect("senders stop after the kill")
            .expect("sender task");
    }
    let (acked, last_ack) = load.acked.lock().expect("lock").clone();
    let last_ack_before_kill = last_ack.map(|at| killed_at.saturating_duration_since(at));
    drop(disk);

    // Power back on: the copy, journal replayed by the mount, and a server on it.
    let after = LoopMount::mount(&copy, &dir.path().join("after"))
        .unwrap_or_else(|why| panic!("the copy does not mount: {}", why.0));
    // What the search index on the copy says it holds: the offset in its last commit.
    let index_offset = std::fs::read_to_string(after.mount_point.join("data/index/meta.json"))
        .ok()
        .and_then(|meta| serde_json::from_str::<Value>(&meta).ok())
        .and_then(|meta| serde_json::from_str::<Value>(meta["payload"].as_str()?).ok())
        .and_then(|payload| payload["offset"].as_u64());
    let process = serve(&binary, &after.mount_point.join("data"), &admin, "fsync").await;
    let ready = http
        .get(format!("{}/readyz", process.base))
        .send()
        .await
        .expect("readyz");
    let (_, ready) = crate::harness::status_json(ready).await;
    let store_head = ready["delta_head"].as_u64();
    let conversations = all_conversations(&http, &process.base, &tenant.token).await;
    let stored: Vec<String> = conversations
        .iter()
        .flat_map(|(_, messages)| messages.iter())
        .filter_map(|m| m["external_id"].as_str().map(str::to_string))
        .collect();
    let stored_set: std::collections::BTreeSet<&String> = stored.iter().collect();
    assert_eq!(stored_set.len(), stored.len(), "a message stored twice");
    for (card, messages) in &conversations {
        let seqs: Vec<u64> = messages.iter().filter_map(|m| m["seq"].as_u64()).collect();
        let contiguous: Vec<u64> = (1..=messages.len() as u64).collect();
        assert_eq!(seqs, contiguous, "{}: seq contiguous from 1", card["id"]);
    }
    let present = acked.iter().filter(|w| stored_set.contains(w)).count();

    // The search index (derived from the store) after the power cut: wait until it finds
    // every stored message, then count what it finds that the store does not have. One
    // search per conversation (pages go at most 1,000 hits deep).
    let deadline = Instant::now() + PATIENCE;
    let (mut found_twice, mut stale) = (0, 0);
    for (card, messages) in &conversations {
        let id = card["id"].as_str().expect("conversation id");
        let expected: std::collections::BTreeSet<&str> =
            messages.iter().filter_map(|m| m["id"].as_str()).collect();
        loop {
            let params = [("q", "loss"), ("conversation_id", id)];
            let hits = search_all(&http, &process.base, &tenant.token, &params).await;
            let ids: Vec<&str> = hits
                .iter()
                .filter_map(|h| h["message_id"].as_str())
                .collect();
            let found: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
            if expected.is_subset(&found) {
                found_twice += ids.len() - found.len();
                stale += found.difference(&expected).count();
                break;
            }
            if Instant::now() >= deadline {
                let metrics = http
                    .get(format!("{}/metrics", process.base))
                    .send()
                    .await
                    .expect("metrics")
                    .text()
                    .await
                    .unwrap_or_default();
                let index: Vec<&str> = metrics
                    .lines()
                    .filter(|l| l.starts_with("confab_index") || l.starts_with("confab_search"))
                    .collect();
                println!(
                    "powerloss ({durability}): index metrics:\n{}",
                    index.join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "powerloss ({durability}): search found {} of the {} messages of conversation \
                 {id} within {PATIENCE:?}; acked {}, present {present}; the index's last \
                 commit holds offsets through {index_offset:?}, the store's head was \
                 {store_head:?}",
                expected.intersection(&found).count(),
                expected.len(),
                acked.len(),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // And the server goes on: a new lead's messages are stored and found.
    let new_found = if search_afterwards {
        Some(afterwards(&http, &process.base, &tenant).await)
    } else {
        None
    };
    let figures = Figures {
        acked: acked.len(),
        present,
        lost: acked.len() - present,
        found_twice,
        stale,
        new_found,
    };
    println!(
        "powerloss ({durability}): acked {}, present {}, lost {}; stored {} (acknowledged or \
         in flight at the cut) in {} conversations; the last acknowledgement {:?} before the \
         kill, the copy started {:?} after it and took {:?}; binary build check {built:?}, \
         the rest {:?}; search: {found_twice} found twice, {stale} stale hits (messages the \
         store does not have), {new_found:?} of {AFTERWARDS} messages sent after the power cut \
         found; the index's last commit holds offsets through {index_offset:?}, the store's \
         head is {store_head:?}",
        figures.acked,
        figures.present,
        figures.lost,
        stored.len(),
        conversations.len(),
        last_ack_before_kill,
        copy_started.saturating_duration_since(killed_at),
        copied_at.saturating_duration_since(copy_started),
        started.elapsed() - built,
    );
    tokio::task::spawn_blocking(move || process.kill_9())
        .await
        .expect("kill");
    drop(after);
    Some(figures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_nothing_acknowledged_with_fsync() {
    let Some(figures) = power_cut("fsync", true).await else {
        return;
    };
    assert_eq!(
        figures.lost, 0,
        "{} of {} acknowledged messages lost",
        figures.lost, figures.acked
    );
    assert_eq!(figures.found_twice, 0, "messages found twice by search");
    assert_eq!(figures.stale, 0, "search finds messages the store lost");
    assert_eq!(
        figures.new_found,
        Some(AFTERWARDS),
        "messages sent after the power cut not found by search"
    );
}

/// The control: without the fsync, acknowledged messages are only in the page cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_acknowledged_messages_with_buffered_durability() {
    let Some(figures) = power_cut("buffered", false).await else {
        return;
    };
    assert!(
        figures.lost > 0,
        "buffered durability lost nothing of {} acknowledged messages ({} present): the \
         power cut is not simulated, so the fsync run proves nothing",
        figures.acked,
        figures.present
    );
}

/// After a power cut in buffered mode the store lost its last deltas but the search index
/// (tantivy fsyncs its commits) still holds their offsets. The index must notice it is
/// ahead of the store and rebuild; it used to skip the offsets the store hands out again,
/// so new messages were never found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_buffered_power_cut_new_messages_are_found_by_search() {
    let Some(figures) = power_cut("buffered", true).await else {
        return;
    };
    assert_eq!(figures.stale, 0, "search finds messages the store lost");
    assert_eq!(
        figures.new_found,
        Some(AFTERWARDS),
        "messages sent after the power cut not found by search"
    );
}
