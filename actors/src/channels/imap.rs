//! A connected mailbox: an email channel's IMAP account (RFC 3501/9051), read with IDLE
//! (RFC 2177) where the server offers it, by polling otherwise. Every message goes through
//! the same path as the email webhook (the adapter's parse, then the connector's routing)
//! and the mailbox's cursor (UIDVALIDITY and the last UID stored) moves only once the
//! message is durable, so a restart, a reconnect or a re-sync never skips one and never
//! stores one twice (the Message-ID dedupes what is read again). A changed UIDVALIDITY
//! means a re-sync of the recent window. Failures reconnect with backoff and show in the
//! channel's health (degraded: sending goes on).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::WriteSet;
use confab_engine::model::{MailSecurity, MailServer};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::connector::Inbound;

/// How a connected mailbox is read.
#[derive(Clone, Debug)]
pub struct MailboxSettings {
    /// Between two reads when the server has no IDLE.
    pub poll_interval: Duration,
    /// Longest an IDLE lasts before it is renewed (servers drop it after 30 minutes).
    pub idle_timeout: Duration,
    /// Larger messages are skipped (and counted).
    pub max_message_bytes: usize,
    /// A mailbox read for the first time (or after its UIDVALIDITY changed) is imported
    /// back to this many days.
    pub first_sync_days: u32,
    /// First reconnect delay, doubled per failure up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for MailboxSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(25 * 60),
            max_message_bytes: 25 * 1024 * 1024,
            first_sync_days: 30,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Where reading a mailbox stands (`channel_runtime`, key [`catalogue::imap_cursor`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxCursor {
    pub uid_validity: u32,
    /// The highest UID whose message is durably stored (or skipped for good).
    pub last_uid: u32,
}

/// Messages fetched per command.
const FETCH_CHUNK: usize = 20;

pub trait ImapIo: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> ImapIo for T {}
type Session = async_imap::Session<Box<dyn ImapIo>>;

/// Why a connection ended.
#[derive(Debug)]
enum Failure {
    /// The server refused the credentials: retried slowly, shown as such.
    Auth(String),
    /// Anything else (network, protocol, a NO): retried with backoff.
    Other(String),
    /// The channel is stopping.
    Stopped,
    /// The mailbox's settings changed: connect again with the new ones, at once.
    Changed,
}

impl From<async_imap::error::Error> for Failure {
    fn from(e: async_imap::error::Error) -> Self {
        Failure::Other(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Other(e.to_string())
    }
}

/// Reads the channel's mailbox until `stop` turns true; while the channel has no IMAP
/// account, waits for one to be configured.
pub(super) async fn run(
    inbound: Inbound,
    settings: MailboxSettings,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = settings.backoff;
    loop {
        if *stop.borrow() {
            return;
        }
        let channel = inbound.link.channel();
        let Some(server) = channel.config.email().and_then(|c| c.imap.clone()) else {
            // No mailbox (yet): one may be added to the channel.
            tokio::select! {
                _ = inbound.link.wake.notified() => continue,
                _ = stop.changed() => return,
            }
        };
        let started = Instant::now();
        let failure = match connect(&server, &mut stop).await {
            Ok(session) => read(&inbound, &settings, &server, session, &mut stop).await,
            Err(failure) => failure,
        };
        let (code, message) = match failure {
            Failure::Stopped => return,
            Failure::Changed => {
                delay = settings.backoff;
                continue;
            }
            Failure::Auth(reason) => ("imap_auth_failed", reason),
            Failure::Other(reason) => ("imap_disconnected", reason),
        };
        tracing::warn!(channel = %channel.id, code, reason = %message, "mailbox connection ended");
        inbound.link.set_receive_error(Some((code, message))).await;
        // A connection that worked a while starts the backoff over.
        if started.elapsed() > settings.max_backoff {
            delay = settings.backoff;
        }
        let wait = if code == "imap_auth_failed" {
            settings.max_backoff
        } else {
            delay
        };
        delay = (delay * 2).min(settings.max_backoff);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = inbound.link.wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Connects, secures and logs in.
async fn connect(
    server: &MailServer,
    stop: &mut watch::Receiver<bool>,
) -> Result<Session, Failure> {
    let attempt = async {
        let tcp = tokio::time::timeout(
            Duration::from_secs(30),
            TcpStream::connect((server.host.as_str(), server.port)),
        )
        .await
        .map_err(|_| Failure::Other("connecting timed out".into()))??;
        let client = match server.security {
            MailSecurity::None => {
                let mut client = async_imap::Client::new(Box::new(tcp) as Box<dyn ImapIo>);
                greeting(&mut client).await?;
                client
            }
            MailSecurity::Tls => {
                let tls = tls_connect(&server.host, tcp).await?;
                let mut client = async_imap::Client::new(Box::new(tls) as Box<dyn ImapIo>);
                greeting(&mut client).await?;
                client
            }
            MailSecurity::Starttls => {
                let mut plain = async_imap::Client::new(tcp);
                plain
                    .read_response()
                    .await?
                    .ok_or_else(|| Failure::Other("the server sent no greeting".into()))?;
                plain.run_command_and_check_ok("STARTTLS", None).await?;
                let tls = tls_connect(&server.host, plain.into_inner()).await?;
                async_imap::Client::new(Box::new(tls) as Box<dyn ImapIo>)
            }
        };
        client
            .login(&server.username, &server.password)
            .await
            .map_err(|(e, _)| match e {
                async_imap::error::Error::No(reason) => Failure::Auth(reason),
                other => Failure::Other(other.to_string()),
            })
    };
    tokio::select! {
        result = attempt => result,
        _ = stop.changed() => Err(Failure::Stopped),
    }
}

async fn greeting(client: &mut async_imap::Client<Box<dyn ImapIo>>) -> Result<(), Failure> {
    client
        .read_response()
        .await?
        .ok_or_else(|| Failure::Other("the server sent no greeting".into()))?;
    Ok(())
}

async fn tls_connect(
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Failure::Other(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| Failure::Other(format!("bad host name: {e}")))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?)
}

/// Reads the mailbox on one connection until it fails or the channel stops.
async fn read(
    inbound: &Inbound,
    settings: &MailboxSettings,
    server: &MailServer,
    mut session: Session,
    stop: &mut watch::Receiver<bool>,
) -> Failure {
    let mailbox = server.mailbox.clone().unwrap_or_else(|| "INBOX".to_owned());
    let result = async {
        let idle = session.capabilities().await?.has_str("IDLE");
        let selected = session.select(&mailbox).await?;
        let validity = selected.uid_validity.unwrap_or(0);
        inbound.link.set_receive_error(None).await;
        loop {
            sync(inbound, settings, &mut session, validity).await?;
            if *stop.borrow() {
                return Err(Failure::Stopped);
            }
            session = if idle {
                wait_idle(inbound, server, session, settings.idle_timeout, stop).await?
            } else {
                let deadline = tokio::time::Instant::now() + settings.poll_interval;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = inbound.link.wake.notified() => changed(inbound, server)?,
                        _ = stop.changed() => return Err(Failure::Stopped),
                    }
                }
                session.noop().await?;
                session
            };
        }
    }
    .await;
    match result {
        Ok(()) => Failure::Stopped,
        Err(failure) => failure,
    }
}

/// `Err(Changed)` when the channel's mailbox settings are no longer `server`.
fn changed(inbound: &Inbound, server: &MailServer) -> Result<(), Failure> {
    let now = inbound
        .link
        .channel()
        .config
        .email()
        .and_then(|c| c.imap.clone());
    if now.as_ref() == Some(server) {
        Ok(())
    } else {
        Err(Failure::Changed)
    }
}

/// Waits in IDLE until the server has news, the IDLE times out, the mailbox's settings
/// change or the channel stops.
async fn wait_idle(
    inbound: &Inbound,
    server: &MailServer,
    session: Session,
    timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<Session, Failure> {
    let mut idle = session.idle();
    idle.init().await?;
    let woke = {
        let (wait, interrupt) = idle.wait_with_timeout(timeout);
        tokio::pin!(wait);
        let woke = loop {
            tokio::select! {
                woke = &mut wait => break Some(woke?),
                _ = inbound.link.wake.notified() => {
                    if changed(inbound, server).is_err() {
                        return Err(Failure::Changed);
                    }
                }
                _ = stop.changed() => break None,
            }
        };
        drop(interrupt);
        woke
    };
    // A connection lost while idling reads as an interrupt we did not make.
    if matches!(woke, Some(IdleResponse::ManualInterrupt)) {
        return Err(Failure::Other(
            "the connection was lost while idling".into(),
        ));
    }
    let session = idle.done().await?;
    if woke.is_none() {
        return Err(Failure::Stopped);
    }
    Ok(session)
}

/// Stores every message past the cursor, oldest first, moving the cursor after each.
async fn sync(
    inbound: &Inbound,
    settings: &MailboxSettings,
    session: &mut Session,
    validity: u32,
) -> Result<(), Failure> {
    // Whatever the server said meanwhile (EXISTS, EXPUNGE): the UID search below sees it.
    while session.unsolicited_responses.try_recv().is_ok() {}
    let channel_id = inbound.link.channel().id;
    let stored = load_cursor(inbound, channel_id).await?;
    let (last_uid, imported) = match stored {
        Some(cursor) if cursor.uid_validity == validity => (cursor.last_uid, false),
        // First read, or the server renumbered the mailbox: the recent window, again.
        _ => (0, true),
    };
    let query = if imported {
        let since = confab_engine::time::now_millis()
            - i64::from(settings.first_sync_days) * confab_engine::port::DAY_MS;
        format!("SINCE {}", imap_date(since))
    } else {
        format!("UID {}:*", last_uid.saturating_add(1))
    };
    let mut uids: Vec<u32> = session
        .uid_search(&query)
        .await?
        .into_iter()
        // `N:*` names the last message even when N is past it.
        .filter(|&uid| uid > last_uid)
        .collect();
    uids.sort_unstable();
    if imported && uids.is_empty() {
        save_cursor(
            inbound,
            channel_id,
            MailboxCursor {
                uid_validity: validity,
                last_uid: 0,
            },
        )
        .await?;
    }
    for chunk in uids.chunks(FETCH_CHUNK) {
        let set = chunk
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // Sizes first: a message over the limit is never downloaded.
        let mut sizes = Vec::with_capacity(chunk.len());
        {
            let mut fetches = session.uid_fetch(&set, "(UID RFC822.SIZE)").await?;
            while let Some(fetch) = fetches.try_next().await? {
                if let (Some(uid), Some(size)) = (fetch.uid, fetch.size) {
                    sizes.push((uid, size));
                }
            }
        }
        let wanted: Vec<u32> = chunk
            .iter()
            .copied()
            .filter(|uid| {
                sizes
                    .iter()
                    .find(|(u, _)| u == uid)
                    .is_none_or(|(_, size)| (*size as usize) <= settings.max_message_bytes)
            })
            .collect();
        let mut bodies = Vec::with_capacity(wanted.len());
        if !wanted.is_empty() {
            let set = wanted
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut fetches = session.uid_fetch(&set, "(UID BODY.PEEK[])").await?;
            while let Some(fetch) = fetches.try_next().await? {
                if let (Some(uid), Some(body)) = (fetch.uid, fetch.body()) {
                    bodies.push((uid, body.to_vec()));
                }
            }
        }
        bodies.sort_by_key(|(uid, _)| *uid);
        for &uid in chunk {
            match bodies.iter().find(|(u, _)| *u == uid) {
                Some((_, raw)) => store(inbound, raw, imported).await?,
                None if !wanted.contains(&uid) => {
                    tracing::warn!(channel = %channel_id, uid, "a message over email.max_message_bytes was skipped");
                    metrics::counter!(crate::metrics::WEBHOOK_ITEMS_REJECTED, "channel" => "email")
                        .increment(1);
                }
                // Expunged between the search and the fetch: nothing to store.
                None => {}
            }
            save_cursor(
                inbound,
                channel_id,
                MailboxCursor {
                    uid_validity: validity,
                    last_uid: uid,
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// One raw message through the adapter and the connector, waited on until durable.
async fn store(inbound: &Inbound, raw: &[u8], imported: bool) -> Result<(), Failure> {
    let mut batch = match inbound.link.adapter().parse(raw) {
        Ok(batch) => batch,
        // Not a message at all: nothing to keep, and retrying would not change it.
        Err(refusal) => {
            tracing::warn!(reason = %refusal.message, "an unreadable message in the mailbox was skipped");
            return Ok(());
        }
    };
    for event in &mut batch.messages {
        event.details.imported = imported;
    }
    let pending = inbound
        .batch(batch, Instant::now())
        .await
        .map_err(|e| Failure::Other(e.to_string()))?;
    super::wait_all(pending)
        .await
        .map(|_| ())
        .map_err(|e| Failure::Other(e.to_string()))
}

async fn load_cursor(
    inbound: &Inbound,
    channel: confab_engine::ids::ChannelId,
) -> Result<Option<MailboxCursor>, Failure> {
    let store = inbound.deps.store.clone();
    tokio::task::spawn_blocking(move || {
        store.get(Ks::ChannelRuntime, &catalogue::imap_cursor(channel))
    })
    .await
    .map_err(|e| Failure::Other(e.to_string()))?
    .map_err(|e| Failure::Other(e.to_string()))
}

async fn save_cursor(
    inbound: &Inbound,
    channel: confab_engine::ids::ChannelId,
    cursor: MailboxCursor,
) -> Result<(), Failure> {
    let mut set = WriteSet::new();
    set.put(Ks::ChannelRuntime, catalogue::imap_cursor(channel), &cursor);
    inbound
        .deps
        .committer
        .commit(set)
        .await
        .map(|_| ())
        .map_err(|e| Failure::Other(e.to_string()))
}

/// An IMAP date (`1-Jan-2026`) for SEARCH SINCE.
fn imap_date(at: confab_engine::time::UnixMillis) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let text = confab_engine::time::to_rfc3339(at);
    // `2026-01-05T…`
    let (year, rest) = text.split_at(4);
    let month: usize = rest.get(1..3).and_then(|m| m.parse().ok()).unwrap_or(1);
    let day: u32 = rest.get(4..6).and_then(|d| d.parse().ok()).unwrap_or(1);
    format!("{day}-{}-{year}", MONTHS[month.clamp(1, 12) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_dates_are_imap_dates() {
        assert_eq!(imap_date(1_767_225_600_000), "1-Jan-2026");
        assert_eq!(
            imap_date(1_767_225_600_000 + 40 * confab_engine::port::DAY_MS),
            "10-Feb-2026"
        );
    }
}
