//! Notification emails: one worker reads the notifications waiting for an email
//! (`notif_email`), and sends each agent one email per batch window with everything that
//! waited, grouped by conversation, over the server's mail relay (lettre). The waiting
//! entries are deleted only after the relay accepted the email: a crash in between sends
//! that email again, never loses it.

use std::collections::BTreeMap;
use std::time::Duration;

use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::{Committer, WriteSet};
use confab_engine::ids::{AgentId, ConversationId, NotificationId};
use confab_engine::model::{Agent, MailServer};
use confab_engine::notify::Notification;
use confab_engine::store::Store;
use confab_engine::time::UnixMillis;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::AsyncTransport;

use crate::clock::SharedClock;

/// Notifications read per look.
const SCAN: usize = 20_000;
/// Longest wait between attempts for an agent whose emails fail.
const MAX_BACKOFF_MS: i64 = 10 * 60 * 1000;

/// The mail relay notification emails leave through.
#[derive(Clone, Debug)]
pub struct EmailRelay {
    pub server: MailServer,
    /// `From:` of notification emails (`Confab <notify@example.com>`).
    pub from: String,
    /// One email per agent per this long at most: notifications wait this long for
    /// others to join them.
    pub batch: Duration,
}

/// What one worker needs.
pub struct EmailWorker {
    pub store: Store,
    pub committer: Committer,
    pub clock: SharedClock,
    pub relay: EmailRelay,
    pub public_url: String,
    pub tick: Duration,
}

/// An agent's next email: who, what, and the waiting entries it clears.
struct Digest {
    agent: Agent,
    notifications: Vec<Notification>,
    /// Entries whose notification is gone (nothing to say about them): cleared too.
    stale: Vec<NotificationId>,
}

fn outcome(outcome: &'static str) {
    metrics::counter!(crate::metrics::NOTIFICATION_DELIVERIES, "channel" => "email", "outcome" => outcome)
        .increment(1);
}

impl EmailWorker {
    pub async fn run(self) {
        let transport = match crate::channels::email::transport(&self.relay.server) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "the notification mail relay is misconfigured: no notification emails");
                return;
            }
        };
        let from: Mailbox = match self.relay.from.parse() {
            Ok(from) => from,
            Err(e) => {
                tracing::error!(error = %e, "`notifications.email.from` is not an address: no notification emails");
                return;
            }
        };
        let batch_ms = i64::try_from(self.relay.batch.as_millis()).unwrap_or(i64::MAX);
        // Per agent: failures in a row and when to try again.
        let mut backoff: BTreeMap<AgentId, (u32, UnixMillis)> = BTreeMap::new();
        loop {
            let now = self.clock.now();
            let store = self.store.clone();
            let pending = tokio::task::spawn_blocking(move || store.pending_emails(SCAN)).await;
            let pending = match pending {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read waiting notification emails");
                    Vec::new()
                }
                Err(_) => return,
            };
            let mut by_agent: BTreeMap<AgentId, Vec<(NotificationId, UnixMillis)>> =
                BTreeMap::new();
            for (agent, id, at) in pending {
                by_agent.entry(agent).or_default().push((id, at));
            }
            for (agent, waiting) in by_agent {
                if backoff.get(&agent).is_some_and(|(_, next)| *next > now) {
                    continue;
                }
                let first = waiting.iter().map(|(_, at)| *at).min().unwrap_or(now);
                if first.saturating_add(batch_ms) > now {
                    continue;
                }
                let due: Vec<NotificationId> = waiting
                    .iter()
                    .filter(|(_, at)| *at <= now)
                    .map(|(id, _)| *id)
                    .collect();
                let digest = match self.digest(agent, due.clone()).await {
                    Some(d) => d,
                    None => continue,
                };
                let cleared: Vec<NotificationId> = digest
                    .notifications
                    .iter()
                    .map(|n| n.id)
                    .chain(digest.stale.iter().copied())
                    .collect();
                if !digest.notifications.is_empty() {
                    let email = self.compose(&from, &digest);
                    let sent = match email {
                        Ok(email) => transport.send(email).await.map(|_| ()).map_err(|e| {
                            let permanent = e.is_permanent();
                            (e.to_string(), permanent)
                        }),
                        Err(e) => Err((e, true)),
                    };
                    match sent {
                        Ok(()) => {
                            outcome("sent");
                            backoff.remove(&agent);
                        }
                        Err((reason, true)) => {
                            // Refused for good (a bad address): retrying would not help.
                            tracing::warn!(agent = %agent, reason, "a notification email was refused");
                            outcome("rejected");
                        }
                        Err((reason, false)) => {
                            tracing::warn!(agent = %agent, reason, "a notification email could not be sent; will retry");
                            outcome("retry");
                            let failures = backoff.get(&agent).map_or(1, |(n, _)| n + 1);
                            let wait = (5_000i64 << failures.min(8)).min(MAX_BACKOFF_MS);
                            backoff.insert(agent, (failures, now + wait));
                            continue;
                        }
                    }
                }
                let mut set = WriteSet::new();
                for id in cleared {
                    set.delete(Ks::NotifEmail, catalogue::agent_notif(agent, id));
                }
                if let Err(e) = self.committer.commit(set).await {
                    tracing::warn!(error = %e, "cannot clear sent notification emails");
                }
            }
            super::pause(&self.clock, self.tick).await;
        }
    }

    async fn digest(&self, agent: AgentId, ids: Vec<NotificationId>) -> Option<Digest> {
        if ids.is_empty() {
            return None;
        }
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            let agent = store.agent(agent)?;
            let mut notifications = Vec::new();
            let mut stale = Vec::new();
            for id in ids {
                match agent
                    .as_ref()
                    .map(|a| store.notification(a.id, id))
                    .transpose()?
                    .flatten()
                {
                    Some(n) => notifications.push(n),
                    None => stale.push(id),
                }
            }
            Ok::<_, confab_engine::Error>((agent, notifications, stale))
        })
        .await;
        match read {
            Ok(Ok((Some(agent), notifications, stale))) => Some(Digest {
                agent,
                notifications,
                stale,
            }),
            Ok(Ok((None, _, _))) => {
                tracing::warn!(agent = %agent, "notification emails for an agent that no longer exists");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read notifications for an email");
                None
            }
            Err(_) => None,
        }
    }

    /// One email: the title of each notification, grouped by conversation in the order
    /// they happened, with a link to each conversation.
    fn compose(&self, from: &Mailbox, digest: &Digest) -> Result<lettre::Message, String> {
        let to: Mailbox = format!(
            "{} <{}>",
            digest.agent.name.replace(['<', '>', '"'], ""),
            digest.agent.email
        )
        .parse()
        .or_else(|_| digest.agent.email.parse())
        .map_err(|e| format!("the agent's email address: {e}"))?;
        let subject = match digest.notifications.as_slice() {
            [one] => one.title.clone(),
            many => format!("{} new notifications in Confab", many.len()),
        };
        let mut groups: Vec<(ConversationId, Vec<&Notification>)> = Vec::new();
        for n in &digest.notifications {
            match groups.iter_mut().find(|(c, _)| *c == n.conversation_id) {
                Some((_, list)) => list.push(n),
                None => groups.push((n.conversation_id, vec![n])),
            }
        }
        let base = self.public_url.trim_end_matches('/');
        let mut text = format!("Hello {},\n\n", digest.agent.name);
        for (conversation, list) in &groups {
            for n in list {
                text.push_str(&format!(
                    "• {} ({})\n",
                    n.title,
                    confab_engine::time::to_rfc3339(n.created_at)
                ));
                if !n.body.is_empty() {
                    text.push_str(&format!("  “{}”\n", n.body));
                }
            }
            text.push_str(&format!(
                "  Open: {base}/#/conversations/{conversation}\n\n"
            ));
        }
        text.push_str(&format!(
            "You receive these because of your notification settings: {base}/#/settings/notifications\n"
        ));
        lettre::Message::builder()
            .from(from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            // RFC 3834: an automatic message; auto-responders do not answer it.
            .header(AutoSubmitted)
            .body(text)
            .map_err(|e| e.to_string())
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834).
#[derive(Clone)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}
