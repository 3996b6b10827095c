//! One-time stream tickets: browsers cannot set an `Authorization` header on a WebSocket,
//! so an authenticated agent trades its token for a ticket valid 30 s and passes it as
//! `?ticket=`. Tickets live in memory only; a restart invalidates them, which is harmless.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use confab_engine::model::Agent;
use dashmap::DashMap;
use rand::RngCore;

use crate::app::AppState;
use crate::auth::AgentAuth;

/// How long a ticket may wait before it is used.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Expired tickets are swept once this many are outstanding (then at twice the live count).
const SWEEP_AT_LEAST: usize = 1024;

/// Outstanding tickets. Cheap to clone (a handle).
#[derive(Clone, Default)]
pub struct Tickets {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    issued: DashMap<String, Issued>,
    /// Size of `issued` at which the next sweep runs (0 = [`SWEEP_AT_LEAST`]).
    sweep_at: AtomicUsize,
}

struct Issued {
    agent: Arc<Agent>,
    expires: Instant,
}

impl Tickets {
    /// A new ticket for `agent`, valid [`TICKET_TTL`], usable once.
    pub fn issue(&self, agent: Arc<Agent>) -> String {
        self.issue_at(agent, Instant::now())
    }

    /// The agent a ticket was issued to, if it exists and has not expired; the ticket is
    /// spent either way.
    pub fn redeem(&self, ticket: &str) -> Option<Arc<Agent>> {
        self.redeem_at(ticket, Instant::now())
    }

    /// Tickets issued and not yet redeemed or swept.
    pub fn outstanding(&self) -> usize {
        self.inner.issued.len()
    }

    fn issue_at(&self, agent: Arc<Agent>, now: Instant) -> String {
        self.sweep_if_due(now);
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let ticket = hex::encode(bytes);
        self.inner.issued.insert(
            ticket.clone(),
            Issued {
                agent,
                expires: now + TICKET_TTL,
            },
        );
        ticket
    }

    fn redeem_at(&self, ticket: &str, now: Instant) -> Option<Arc<Agent>> {
        let (_, issued) = self.inner.issued.remove(ticket)?;
        (now < issued.expires).then_some(issued.agent)
    }

    /// Drops expired tickets, amortized: a sweep costs the map's size and runs only when
    /// the map has doubled since the last one.
    fn sweep_if_due(&self, now: Instant) {
        let due = self
            .inner
            .sweep_at
            .load(Ordering::Relaxed)
            .max(SWEEP_AT_LEAST);
        if self.inner.issued.len() < due {
            return;
        }
        self.inner.issued.retain(|_, issued| now < issued.expires);
        let next = (self.inner.issued.len() * 2).max(SWEEP_AT_LEAST);
        self.inner.sweep_at.store(next, Ordering::Relaxed);
    }
}

/// A one-time credential for `GET /api/v1/stream?ticket=…`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StreamTicket {
    ticket: String,
    /// Seconds it stays valid.
    expires_in: u64,
}

/// Issues a one-time ticket to open the stream where a header cannot be set (a browser's
/// WebSocket).
#[utoipa::path(
    post,
    path = "/api/v1/stream/ticket",
    tag = "stream",
    security(("agent_token" = [])),
    responses(
        (status = 201, description = "Valid once, for `expires_in` seconds.", body = StreamTicket),
        (status = 401, description = "`unauthorized`.", body = crate::openapi::ErrorBody),
    )
)]
pub async fn create(
    State(app): State<AppState>,
    AgentAuth(agent): AgentAuth,
) -> (StatusCode, Json<StreamTicket>) {
    let ticket = app.tickets.issue(agent);
    (
        StatusCode::CREATED,
        Json(StreamTicket {
            ticket,
            expires_in: TICKET_TTL.as_secs(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use confab_engine::ids::{AgentId, WorkspaceId};
    use confab_engine::model::Role;

    use super::*;

    fn agent() -> Arc<Agent> {
        Arc::new(Agent {
            id: AgentId::new(),
            workspace_id: WorkspaceId::new(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            role: Role::Agent,
            created_at: 0,
        })
    }

    #[test]
    fn a_ticket_works_once() {
        let tickets = Tickets::default();
        let ada = agent();
        let now = Instant::now();
        let ticket = tickets.issue_at(ada.clone(), now);
        assert_eq!(ticket.len(), 64);
        assert_eq!(tickets.redeem_at(&ticket, now).map(|a| a.id), Some(ada.id));
        assert!(tickets.redeem_at(&ticket, now).is_none());
        assert!(tickets.redeem("not-a-ticket").is_none());
    }

    #[test]
    fn a_ticket_expires_after_thirty_seconds_and_is_spent_by_the_attempt() {
        let tickets = Tickets::default();
        let now = Instant::now();
        let fresh = tickets.issue_at(agent(), now);
        assert!(tickets
            .redeem_at(&fresh, now + TICKET_TTL - Duration::from_millis(1))
            .is_some());
        let stale = tickets.issue_at(agent(), now);
        assert!(tickets.redeem_at(&stale, now + TICKET_TTL).is_none());
        assert_eq!(tickets.outstanding(), 0);
    }

    #[test]
    fn tickets_are_distinct() {
        let tickets = Tickets::default();
        let a = tickets.issue(agent());
        let b = tickets.issue(agent());
        assert_ne!(a, b);
        assert_eq!(tickets.outstanding(), 2);
    }

    #[test]
    fn expired_tickets_are_swept_lazily() {
        let tickets = Tickets::default();
        let start = Instant::now();
        for _ in 0..SWEEP_AT_LEAST {
            tickets.issue_at(agent(), start);
        }
        assert_eq!(tickets.outstanding(), SWEEP_AT_LEAST);
        let later = start + TICKET_TTL + Duration::from_secs(1);
        let kept = tickets.issue_at(agent(), later);
        assert_eq!(tickets.outstanding(), 1);
        assert!(tickets.redeem_at(&kept, later).is_some());
    }
}
