//! Agent replies through the REST API (`--replies`): which acknowledged inbound messages
//! get one, the directory from lead number to conversation id (learned from deltas, or
//! from `GET /api/v1/conversations` as a fallback), and the bounded reply workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};

use crate::cli::Replies;
use crate::stats::{ErrorCounts, ShardedHistogram};
use crate::webhook::{classify_reqwest, conversation_of};

/// Replies waiting for a worker; beyond this they are dropped and counted.
const QUEUE_CAPACITY: usize = 65_536;
/// Conversation listing pages are at most this long (the API's maximum `limit`).
const PAGE_LIMIT: usize = 200;

/// Conversation id of each lead, filled in as they become known.
pub struct Directory {
    ids: Box<[OnceLock<String>]>,
}

impl Directory {
    pub fn new(conversations: usize) -> Self {
        Self {
            ids: (0..conversations).map(|_| OnceLock::new()).collect(),
        }
    }

    pub fn learn(&self, conversation: usize, id: &str) {
        if let Some(cell) = self.ids.get(conversation) {
            if cell.get().is_none() {
                // Losing a race to another subscriber is fine: ids are the same.
                let _ = cell.set(id.to_owned());
            }
        }
    }

    pub fn get(&self, conversation: usize) -> Option<&str> {
        self.ids.get(conversation)?.get().map(String::as_str)
    }
}

/// Whether the `nth` acknowledged inbound message (0-based) gets a reply. Ratios and
/// counts are spread evenly: ratio 0.25 replies to every 4th, a count of 10 over 1000
/// planned messages to every 100th. Without a plan a count replies from the start.
pub fn reply_due(plan: Replies, nth: u64, planned: Option<u64>) -> bool {
    match plan {
        Replies::Ratio(ratio) => ((nth + 1) as f64 * ratio).floor() > (nth as f64 * ratio).floor(),
        Replies::Count(count) => match planned {
            Some(planned) if planned > 0 => {
                let step = |n: u64| u128::from(n) * u128::from(count) / u128::from(planned);
                step(nth + 1) > step(nth)
            }
            _ => true,
        },
    }
}

/// Text of reply number `n`.
pub fn reply_text(run_id: &str, n: u64) -> String {
    format!("reply {run_id} {n}")
}

pub fn is_reply_text(text: &str, run_id: &str) -> bool {
    text.strip_prefix("reply ")
        .and_then(|rest| rest.strip_prefix(run_id))
        .is_some_and(|rest| rest.starts_with(' '))
}

#[derive(Debug, Clone, Copy)]
pub struct ReplyJob {
    pub conversation: usize,
}

pub struct ReplyStats {
    pub planned: AtomicU64,
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub latency: ShardedHistogram,
}

impl Default for ReplyStats {
    fn default() -> Self {
        Self {
            planned: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            latency: ShardedHistogram::new(4),
        }
    }
}

/// Decides, per acknowledged inbound message, whether to queue a reply.
pub struct ReplyPlanner {
    plan: Replies,
    planned_messages: Option<u64>,
    budget: AtomicU64,
    queue: mpsc::Sender<ReplyJob>,
    stats: Arc<ReplyStats>,
    errors: Arc<ErrorCounts>,
}

impl ReplyPlanner {
    /// `planned_messages` is the number of measured inbound messages when known.
    pub fn new(
        plan: Replies,
        planned_messages: Option<u64>,
        stats: Arc<ReplyStats>,
        errors: Arc<ErrorCounts>,
    ) -> (Self, mpsc::Receiver<ReplyJob>) {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let budget = match plan {
            Replies::Count(count) => count,
            Replies::Ratio(_) => u64::MAX,
        };
        let planner = Self {
            plan,
            planned_messages,
            budget: AtomicU64::new(budget),
            queue,
            stats,
            errors,
        };
        (planner, jobs)
    }

    pub fn offer(&self, nth_ack: u64, conversation: usize) {
        if !reply_due(self.plan, nth_ack, self.planned_messages) {
            return;
        }
        let within_budget = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok();
        if !within_budget {
            return;
        }
        self.stats.planned.fetch_add(1, Ordering::Relaxed);
        if self.queue.try_send(ReplyJob { conversation }).is_err() {
            self.errors.add("reply_dropped_queue_full");
        }
    }
}

/// What reply workers need to call the REST API.
pub struct ReplyContext {
    pub client: reqwest::Client,
    pub base_url: String,
    pub agent_token: String,
    pub run_id: String,
    pub directory: Arc<Directory>,
    /// Whether subscribers are connected that will learn conversation ids from deltas.
    pub learning_from_stream: bool,
    pub stats: Arc<ReplyStats>,
    pub errors: Arc<ErrorCounts>,
    pub last_listing: tokio::sync::Mutex<Option<Instant>>,
}

impl ReplyContext {
    async fn resolve(&self, conversation: usize) -> Option<String> {
        if let Some(id) = self.directory.get(conversation) {
            return Some(id.to_owned());
        }
        if self.learning_from_stream {
            // The delta usually arrives within milliseconds of the acknowledgement.
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if let Some(id) = self.directory.get(conversation) {
                    return Some(id.to_owned());
                }
            }
        }
        self.list_conversations().await;
        self.directory.get(conversation).map(str::to_owned)
    }

    /// Fills the directory from `GET /api/v1/conversations`, matching leads by contact
    /// name ("Lead N") or phone. At most one listing runs at a time, and not more often
    /// than every 250 ms.
    async fn list_conversations(&self) {
        let mut last = self.last_listing.lock().await;
        if last.is_some_and(|at| at.elapsed() < Duration::from_millis(250)) {
            return;
        }
        let max_pages = self.directory.ids.len() / PAGE_LIMIT + 2;
        let mut cursor: Option<String> = None;
        for _ in 0..max_pages.min(500) {
            let mut request = self
                .client
                .get(format!("{}/api/v1/conversations", self.base_url))
                .bearer_auth(&self.agent_token)
                .query(&[("limit", PAGE_LIMIT.to_string())]);
            if let Some(cursor) = &cursor {
                request = request.query(&[("cursor", cursor)]);
            }
            let page = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    response.json::<serde_json::Value>().await
                }
                Ok(response) => {
                    self.errors
                        .add(&format!("reply_list_http_{}", response.status().as_u16()));
                    break;
                }
                Err(e) => {
                    self.errors.add(&classify_reqwest("reply_list", &e));
                    break;
                }
            };
            let Ok(page) = page else {
                self.errors.add("reply_list_bad_body");
                break;
            };
            for card in page["items"].as_array().into_iter().flatten() {
                let Some(id) = card["id"].as_str() else {
                    continue;
                };
                let contact = &card["contact"];
                let lead = [&contact["name"], &contact["phone"]]
                    .into_iter()
                    .filter_map(|v| v.as_str())
                    .find_map(conversation_of);
                if let Some(lead) = lead {
                    self.directory.learn(lead, id);
                }
            }
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        *last = Some(Instant::now());
    }

    async fn reply(&self, job: ReplyJob) {
        let Some(conversation_id) = self.resolve(job.conversation).await else {
            self.errors.add("reply_conversation_unknown");
            return;
        };
        let n = self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self
            .client
            .post(format!(
                "{}/api/v1/conversations/{conversation_id}/messages",
                self.base_url
            ))
            .bearer_auth(&self.agent_token)
            .json(&serde_json::json!({"text": reply_text(&self.run_id, n), "internal": false}))
            .send()
            .await;
        match result {
            Ok(response) => {
                let status = response.status();
                let body = response.bytes().await;
                if status.is_success() && body.is_ok() {
                    self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    self.stats.latency.record(n, started.elapsed());
                } else {
                    self.errors.add(&format!("reply_http_{}", status.as_u16()));
                }
            }
            Err(e) => self.errors.add(&classify_reqwest("reply", &e)),
        }
    }
}

/// Runs queued replies with at most `parallel` in flight until the queue closes (every
/// planner dropped), then waits at most `drain_timeout` for the last ones.
pub async fn run_workers(
    mut jobs: mpsc::Receiver<ReplyJob>,
    context: Arc<ReplyContext>,
    parallel: usize,
    drain_timeout: Duration,
) {
    let permits = u32::try_from(parallel.max(1)).unwrap_or(u32::MAX);
    let in_flight = Arc::new(Semaphore::new(permits as usize));
    while let Some(job) = jobs.recv().await {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let context = Arc::clone(&context);
        tokio::spawn(async move {
            context.reply(job).await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(drain_timeout, in_flight.acquire_many(permits)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due_count(plan: Replies, messages: u64, planned: Option<u64>) -> usize {
        (0..messages)
            .filter(|&n| reply_due(plan, n, planned))
            .count()
    }

    #[test]
    fn ratios_and_counts_are_spread_evenly() {
        assert_eq!(due_count(Replies::Ratio(0.25), 1000, None), 250);
        assert_eq!(due_count(Replies::Ratio(1.0), 10, None), 10);
        assert_eq!(due_count(Replies::Ratio(0.0), 10, None), 0);
        assert_eq!(due_count(Replies::Count(10), 1000, Some(1000)), 10);
        let due: Vec<u64> = (0..1000)
            .filter(|&n| reply_due(Replies::Count(10), n, Some(1000)))
            .collect();
        assert_eq!(due.first(), Some(&99));
        assert_eq!(due.get(1), Some(&199));
        assert!(reply_due(Replies::Count(3), 0, None));
    }

    #[test]
    fn planner_respects_the_count_budget() {
        let errors = Arc::new(ErrorCounts::default());
        let stats = Arc::new(ReplyStats::default());
        let (planner, mut jobs) =
            ReplyPlanner::new(Replies::Count(3), None, Arc::clone(&stats), errors);
        for n in 0..10 {
            planner.offer(n, usize::try_from(n).unwrap_or_default());
        }
        assert_eq!(stats.planned.load(Ordering::Relaxed), 3);
        let mut queued = Vec::new();
        while let Ok(job) = jobs.try_recv() {
            queued.push(job.conversation);
        }
        assert_eq!(queued, vec![0, 1, 2]);
    }

    #[test]
    fn reply_markers_and_directory() {
        assert!(is_reply_text(&reply_text("abc", 7), "abc"));
        assert!(!is_reply_text("reply abcd 7", "abc"));
        let directory = Directory::new(3);
        directory.learn(1, "c1");
        directory.learn(1, "other");
        directory.learn(9, "ignored");
        assert_eq!(directory.get(1), Some("c1"));
        assert_eq!(directory.get(0), None);
    }
}
