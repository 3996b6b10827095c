//! The AI agent pool: answers leads beside the conversations, never inside them.
//!
//! After a lead's message is durable in a conversation whose AI mode is active, the
//! conversation offers an [`AiRequest`] (the seq it answers) to the pool's bounded queue.
//! The pool waits for a quiet period (several quick messages get one answer), then, with a
//! permit of its bounded concurrency, reads the conversation, the workspace's configuration
//! and rules, retrieves knowledge, asks the backend, applies the escalation rules, and
//! hands an [`AiOutcome`] with its reasoning back to the conversation actor. The actor
//! commits it only if the AI is still active and nothing human happened since that seq;
//! otherwise it records a discard. A slow backend holds a permit, never an actor or the
//! committer.

pub mod builtin;
pub mod openai;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_engine::ai::{
    default_rules, fold, AiConfig, AiDecision, AiReasoning, AssignTo, BackendKind, EscalationRule,
    KnowledgeRef, RuleContext, RuleThen,
};
use confab_engine::catalogue::Ks;
use confab_engine::ids::{AgentId, ConversationId, WorkspaceId};
use confab_engine::model::{AiMode, Conversation, Direction, Message, Sender, Status};
use confab_engine::store::Store;
use confab_engine::time::now_millis;
use confab_index::KnowledgeIndex;
use dashmap::DashMap;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::conversation::ConversationMsg;
use crate::manager::Conversations;

/// A lead's message the AI should consider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AiRequest {
    pub workspace: WorkspaceId,
    pub conversation: ConversationId,
    pub seq: u64,
    /// The conversation's `ai_epoch` when asked: a decision made under an older one is
    /// discarded.
    pub epoch: u64,
}

/// A request with its place in the pool: the place is given back when the request is
/// decided, dropped as superseded, or replaced by a newer one of its conversation.
pub struct Queued {
    request: AiRequest,
    _place: Place,
}

/// One of the pool's `queue_depth` places, counted in `confab_ai_queue_depth`.
struct Place(#[allow(dead_code)] OwnedSemaphorePermit);

impl Drop for Place {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::AI_QUEUE).decrement(1.0);
    }
}

/// The pool's bounded queue, as conversations see it. Its bound counts every request
/// from the offer until it is decided (waiting for its quiet period, for a permit, or
/// being decided), so a slow backend fills it and conversations escalate instead of
/// waiting in silence.
#[derive(Clone)]
pub struct AiQueue {
    tx: mpsc::UnboundedSender<Queued>,
    places: Arc<Semaphore>,
}

impl AiQueue {
    pub fn bounded(depth: usize) -> (AiQueue, mpsc::UnboundedReceiver<Queued>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let places = Arc::new(Semaphore::new(depth.max(1)));
        (AiQueue { tx, places }, rx)
    }

    /// Offers a request; false when the pool cannot take it (full or not running): the
    /// conversation then escalates rather than wait in silence.
    pub fn offer(&self, request: AiRequest) -> bool {
        let Ok(permit) = self.places.clone().try_acquire_owned() else {
            return false;
        };
        metrics::gauge!(crate::metrics::AI_QUEUE).increment(1.0);
        self.tx
            .send(Queued {
                request,
                _place: Place(permit),
            })
            .is_ok()
    }
}

/// What the agent does about a lead's message.
#[derive(Clone, Debug, PartialEq)]
pub enum AiAction {
    Reply(String),
    Escalate(Escalation),
    /// Nothing to send (an automatic reply): only the reasoning is kept.
    Nothing,
}

/// An escalation, resolved: who gets the conversation and what changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Escalation {
    pub pause_ai: bool,
    pub assignee: Option<AgentId>,
    pub tags: Vec<String>,
    pub status: Option<Status>,
    pub notify: bool,
}

impl Escalation {
    /// The plain hand-over: the AI paused and the assignee (if any) notified.
    pub fn to_people() -> Escalation {
        Escalation {
            pause_ai: true,
            notify: true,
            ..Escalation::default()
        }
    }
}

/// The pool's proposal, for the conversation actor to commit or discard.
#[derive(Clone, Debug, PartialEq)]
pub struct AiOutcome {
    pub reasoning: AiReasoning,
    pub action: AiAction,
    /// The workspace's loop limit: AI replies per conversation per day.
    pub max_replies_per_day: u32,
    /// The conversation's `ai_epoch` the decision was made under.
    pub epoch: u64,
}

/// The pool's settings.
#[derive(Clone, Debug)]
pub struct AiSettings {
    /// Decisions made at once (backend calls in flight).
    pub concurrency: usize,
    /// Requests waiting for the pool before conversations escalate instead.
    pub queue_depth: usize,
    /// Longest an OpenAI-compatible backend may take per attempt.
    pub backend_timeout: Duration,
    /// Attempts at the backend before escalating with `ai_backend_unavailable`.
    pub backend_attempts: u32,
    /// Whether backends may be on private or local addresses (a model on this machine or
    /// network). Off by default: workspace admins choose the URL.
    pub allow_private_backends: bool,
    /// Decisions a second at most, over all workspaces (0: no limit).
    pub max_decisions_per_second: u32,
}

impl Default for AiSettings {
    fn default() -> Self {
        AiSettings {
            concurrency: 4,
            queue_depth: 10_000,
            backend_timeout: Duration::from_secs(20),
            backend_attempts: 3,
            allow_private_backends: false,
            max_decisions_per_second: 200,
        }
    }
}

/// The running pool: the knowledge index the API edits.
#[derive(Clone)]
pub struct AiPool {
    pub knowledge: Arc<KnowledgeIndex>,
    /// Held by whoever changes articles, from reading the stored article to indexing the
    /// new one: two edits of one article cannot index in the other order than they were
    /// stored.
    pub knowledge_writes: Arc<tokio::sync::Mutex<()>>,
    stopping: Arc<watch::Sender<bool>>,
}

struct Inner {
    store: Store,
    conversations: Conversations,
    knowledge: Arc<KnowledgeIndex>,
    http: reqwest::Client,
    settings: AiSettings,
    permits: Semaphore,
    /// At most `max_decisions_per_second` (none when 0).
    pace: Option<governor::DefaultDirectRateLimiter>,
    /// Conversations waiting for their quiet period: the latest request (holding its
    /// place in the queue) and when it came.
    waiting: DashMap<ConversationId, (Arc<Queued>, Instant)>,
    /// The newest lead message offered per conversation with a request under way: a
    /// request for an older one is superseded, known without reading the store.
    newest: DashMap<ConversationId, u64>,
    /// Round-robin position per workspace.
    turns: DashMap<WorkspaceId, AtomicUsize>,
    /// Turns true when the runtime stops: waiting and deciding end, nothing is sent.
    stopping: watch::Receiver<bool>,
    /// Each workspace's configuration and rules, read at most once per [`SETTINGS_TTL`].
    workspaces: DashMap<WorkspaceId, (Arc<Settings>, Instant)>,
}

/// The lead's latest unanswered messages a decision reads as the question.
const QUESTION_MESSAGES: usize = 5;

/// A conversation whose lead never pauses is answered after this many reply delays.
const MAX_WAIT_DELAYS: u32 = 4;

/// How long a workspace's AI settings are used before they are read again: a change
/// through the API applies within this.
const SETTINGS_TTL: Duration = Duration::from_secs(1);

/// A workspace's AI configuration and escalation rules.
struct Settings {
    config: AiConfig,
    rules: Vec<EscalationRule>,
    /// The workspace's agents, for assignments.
    agents: Vec<AgentId>,
}

impl AiPool {
    /// Builds the knowledge index from the store and starts taking requests.
    pub async fn start(
        store: Store,
        conversations: Conversations,
        settings: AiSettings,
        mut requests: mpsc::UnboundedReceiver<Queued>,
    ) -> crate::ActorResult<AiPool> {
        let knowledge = Arc::new(
            KnowledgeIndex::new()
                .map_err(|e| crate::ActorError::Unavailable(format!("knowledge index: {e}")))?,
        );
        let (kb, store_in) = (knowledge.clone(), store.clone());
        tokio::task::spawn_blocking(move || load_knowledge(&store_in, &kb))
            .await
            .map_err(|e| crate::ActorError::Unavailable(e.to_string()))??;
        let http = openai::client(settings.allow_private_backends).map_err(|e| {
            crate::ActorError::Unavailable(format!("cannot build the AI's HTTP client: {e}"))
        })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopping = Arc::new(stop_tx);
        let inner = Arc::new(Inner {
            store,
            conversations,
            knowledge: knowledge.clone(),
            http,
            permits: Semaphore::new(settings.concurrency.max(1)),
            pace: std::num::NonZeroU32::new(settings.max_decisions_per_second)
                .map(|n| governor::RateLimiter::direct(governor::Quota::per_second(n))),
            settings,
            waiting: DashMap::new(),
            newest: DashMap::new(),
            turns: DashMap::new(),
            stopping: stop_rx.clone(),
            workspaces: DashMap::new(),
        });
        let mut stop = stop_rx;
        tokio::spawn(async move {
            loop {
                let queued = tokio::select! {
                    queued = requests.recv() => match queued {
                        Some(queued) => queued,
                        None => break,
                    },
                    _ = stop.wait_for(|s| *s) => break,
                };
                let conversation = queued.request.conversation;
                inner
                    .newest
                    .entry(conversation)
                    .and_modify(|seq| *seq = (*seq).max(queued.request.seq))
                    .or_insert(queued.request.seq);
                // A newer request of a conversation replaces the waiting one (and frees
                // its place).
                let fresh = inner
                    .waiting
                    .insert(conversation, (Arc::new(queued), Instant::now()))
                    .is_none();
                if fresh {
                    tokio::spawn(inner.clone().run(conversation));
                }
            }
        });
        Ok(AiPool {
            knowledge,
            knowledge_writes: Arc::default(),
            stopping,
        })
    }

    /// Stops taking requests; decisions under way are dropped (their messages stay
    /// unanswered, as if the process had stopped a moment earlier).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }
}

/// Indexes every stored article (the index is in memory: rebuilt at each start).
fn load_knowledge(store: &Store, index: &KnowledgeIndex) -> crate::ActorResult<()> {
    let articles = store.all::<confab_engine::ai::Article>(Ks::KbArticle)?;
    let docs: Vec<_> = articles
        .iter()
        .map(|a| confab_index::ArticleDoc {
            workspace: a.workspace_id,
            id: a.id,
            title: &a.title,
            body: &a.body,
            tags: &a.tags,
        })
        .collect();
    index
        .upsert(&docs)
        .map_err(|e| crate::ActorError::Unavailable(format!("knowledge index: {e}")))
}

/// The workspace's AI configuration (defaults when never set). Blocking.
pub fn config(store: &Store, ws: WorkspaceId) -> confab_engine::Result<AiConfig> {
    Ok(store.get(Ks::AiConfig, &ws.to_bytes())?.unwrap_or_default())
}

/// The workspace's escalation rules (the defaults when never set). Blocking.
pub fn rules(store: &Store, ws: WorkspaceId) -> confab_engine::Result<Vec<EscalationRule>> {
    Ok(store
        .get(Ks::AiRules, &ws.to_bytes())?
        .unwrap_or_else(default_rules))
}

/// What the pool read to decide.
struct Context {
    config: AiConfig,
    rules: Vec<EscalationRule>,
    /// The workspace's agents, for assignments.
    agents: Vec<AgentId>,
    conv: Conversation,
    /// The lead's messages since our last message, oldest first.
    question: String,
    /// Recent messages, oldest first (for a model's context).
    history: Vec<Message>,
}

/// What [`Inner::context`] found.
enum Read {
    Fresh(Box<Context>),
    Stale,
    Gone,
}

/// A backend's answer, before the rules.
pub struct Proposed {
    pub intent: String,
    pub confidence: f64,
    pub knowledge: Vec<KnowledgeRef>,
    pub action: ProposedAction,
    pub why: String,
    pub backend: &'static str,
    pub model: Option<String>,
    /// A rule of the backend's own (`no_relevant_knowledge`, `ai_backend_unavailable`).
    pub rule: Option<String>,
}

pub enum ProposedAction {
    Reply(String),
    Escalate,
    Nothing,
}

impl Inner {
    async fn run(self: Arc<Self>, conversation: ConversationId) {
        let mut stop = self.stopping.clone();
        tokio::select! {
            () = self.clone().after_quiet(conversation) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    /// Waits until the conversation has been quiet for the reply delay, then decides. A
    /// lead who keeps writing is answered at the latest [`MAX_WAIT_DELAYS`] delays after
    /// the first unanswered message.
    async fn after_quiet(self: Arc<Self>, conversation: ConversationId) {
        let since = Instant::now();
        let Some(first) = self.waiting.get(&conversation).map(|w| w.0.request) else {
            return;
        };
        let delay = match self.settings(first.workspace).await {
            Some(settings) => Duration::from_millis(settings.config.reply_delay_ms),
            None => Duration::ZERO,
        };
        let (queued, request) = loop {
            let Some((queued, at)) = self.waiting.get(&conversation).map(|w| (w.0.clone(), w.1))
            else {
                return;
            };
            let due = (at + delay).min(since + delay * MAX_WAIT_DELAYS);
            if Instant::now() >= due {
                // Take it only if nothing newer came meanwhile.
                if self
                    .waiting
                    .remove_if(&conversation, |_, w| w.1 == at)
                    .is_some()
                {
                    let request = queued.request;
                    break (queued, request);
                }
                continue;
            }
            tokio::time::sleep_until(due.into()).await;
        };
        // Holds the request's place in the queue until it is decided.
        let _place = queued;
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let newest = self.newest.get(&conversation).map(|n| *n);
        if newest.is_some_and(|n| n > request.seq) {
            // The lead wrote again: that message's request decides.
            metrics::counter!(crate::metrics::AI_SKIPPED).increment(1);
            return;
        }
        metrics::gauge!(crate::metrics::AI_IN_FLIGHT).increment(1.0);
        let started = Instant::now();
        let outcome = self.decide(request).await;
        // Nothing newer came meanwhile: forget the conversation until it asks again.
        self.newest
            .remove_if(&conversation, |_, n| *n <= request.seq);
        metrics::gauge!(crate::metrics::AI_IN_FLIGHT).decrement(1.0);
        metrics::histogram!(crate::metrics::AI_DECISION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        let Some(outcome) = outcome else {
            return;
        };
        if let Err(e) = self
            .conversations
            .tell(conversation, ConversationMsg::Ai(Box::new(outcome)))
            .await
        {
            tracing::warn!(%conversation, error = %e, "cannot hand the AI's decision to the conversation");
        }
    }

    /// The workspace's settings, from the cache while fresh.
    async fn settings(&self, ws: WorkspaceId) -> Option<Arc<Settings>> {
        if let Some(entry) = self.workspaces.get(&ws) {
            if entry.1.elapsed() < SETTINGS_TTL {
                return Some(entry.0.clone());
            }
        }
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            Ok::<_, confab_engine::Error>(Settings {
                config: config(&store, ws)?,
                rules: rules(&store, ws)?,
                agents: store.workspace_agents(ws)?.iter().map(|a| a.id).collect(),
            })
        })
        .await;
        match read {
            Ok(Ok(settings)) => {
                let settings = Arc::new(settings);
                self.workspaces
                    .insert(ws, (settings.clone(), Instant::now()));
                Some(settings)
            }
            Ok(Err(e)) => {
                tracing::warn!(workspace = %ws, error = %e, "cannot read the AI settings");
                None
            }
            Err(_) => None,
        }
    }

    /// What deciding needs, or `Stale` when the request is already superseded (checked on
    /// the conversation's state before anything else is read).
    async fn context(&self, request: AiRequest) -> confab_engine::Result<Read> {
        let Some(settings) = self.settings(request.workspace).await else {
            return Ok(Read::Gone);
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let Some(conv) = store.conversation(request.conversation)? else {
                return Ok(Read::Gone);
            };
            if conv.last_inbound_seq != Some(request.seq)
                || conv.ai_epoch != request.epoch
                || conv.ai_mode != AiMode::Active
            {
                return Ok(Read::Stale);
            }
            let page = store.messages_before(request.conversation, Some(request.seq + 1), 20)?;
            let mut history: Vec<Message> = page.items;
            history.reverse();
            // Since our last message (a reply, a note, an escalation): what is unanswered,
            // its latest few messages (a lead who wrote twenty lines in a row is answered
            // on what they said last).
            let question: Vec<&str> = history
                .iter()
                .rev()
                .take_while(|m| m.direction == Direction::Inbound)
                .take(QUESTION_MESSAGES)
                .map(|m| m.text.as_str())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let question = question.join("\n");
            Ok(Read::Fresh(Box::new(Context {
                config: settings.config.clone(),
                rules: settings.rules.clone(),
                agents: settings.agents.clone(),
                conv,
                question,
                history,
            })))
        })
        .await
        .unwrap_or_else(|e| Err(confab_engine::Error::Storage(e.to_string())))
    }

    async fn decide(&self, request: AiRequest) -> Option<AiOutcome> {
        let started = Instant::now();
        let context = match self.context(request).await {
            Ok(Read::Fresh(context)) => *context,
            // Superseded already (the lead wrote again, a person stepped in): the newer
            // state gets its own decision; deciding this one would be wasted work.
            Ok(Read::Stale) => {
                metrics::counter!(crate::metrics::AI_SKIPPED).increment(1);
                return None;
            }
            Ok(Read::Gone) => return None,
            Err(e) => {
                tracing::warn!(conversation = %request.conversation, error = %e, "the AI cannot read the conversation");
                return None;
            }
        };
        // The pool's share of the machine: at most so many decisions a second, spent on
        // requests still current, so that a flood of lead messages is stored at full speed
        // and answered as the budget allows (each conversation's newest message; past the
        // queue's depth, people). An answer that went stale meanwhile is discarded by the
        // conversation.
        if let Some(pace) = &self.pace {
            pace.until_ready().await;
        }
        let proposed = if !context.config.enabled_for(context.conv.campaign.as_deref()) {
            unavailable(
                "ai_disabled",
                "the AI agent is disabled for this workspace or campaign",
            )
        } else if !context.config.schedule.answers_at(now_millis()) {
            unavailable(
                "outside_schedule",
                "inside working hours the AI leaves conversations to people",
            )
        } else {
            match context.config.backend {
                BackendKind::Builtin => self.builtin(request.workspace, &context).await,
                BackendKind::Openai => self.openai(request.workspace, &context).await,
            }
        };
        Some(self.apply_rules(request, &context, proposed, started))
    }

    async fn retrieve(&self, ws: WorkspaceId, question: &str) -> Vec<confab_index::KnowledgeHit> {
        let (kb, question) = (self.knowledge.clone(), question.to_owned());
        match tokio::task::spawn_blocking(move || kb.search(ws, &question, 3)).await {
            Ok(Ok(hits)) => hits,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "knowledge search failed");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    async fn builtin(&self, ws: WorkspaceId, context: &Context) -> Proposed {
        let intent = builtin::intent(&context.question);
        let hits = self.retrieve(ws, &context.question).await;
        let clarified = context.history.iter().any(|m| {
            m.sender == Sender::Ai
                && m.ai
                    .as_ref()
                    .is_some_and(|ai| ai.why == builtin::CLARIFY_WHY)
        });
        let decision = builtin::decide(&context.config, &intent, &hits, clarified);
        let knowledge = knowledge_refs(&hits);
        let (action, why, confidence, rule) = match decision {
            builtin::Proposal::Reply {
                text,
                confidence,
                why,
            } => (ProposedAction::Reply(text), why, confidence, None),
            builtin::Proposal::Escalate { why, confidence } => {
                let rule = matches!(
                    intent.name,
                    "question" | "pricing" | "meeting_request" | "other"
                )
                .then(|| "no_relevant_knowledge".to_owned());
                (ProposedAction::Escalate, why, confidence, rule)
            }
            builtin::Proposal::Nothing { why } => {
                (ProposedAction::Nothing, why, intent.confidence, None)
            }
        };
        Proposed {
            intent: intent.name.to_owned(),
            confidence,
            knowledge,
            action,
            why,
            backend: "builtin",
            model: None,
            rule,
        }
    }

    async fn openai(&self, ws: WorkspaceId, context: &Context) -> Proposed {
        let hits = self.retrieve(ws, &context.question).await;
        let knowledge = knowledge_refs(&hits);
        let call = openai::Call {
            settings: &context.config.openai,
            instructions: &context.config.instructions,
            knowledge: &hits,
            history: &context.history,
            timeout: self.settings.backend_timeout,
            attempts: self.settings.backend_attempts,
            allow_private: self.settings.allow_private_backends,
        };
        match openai::ask(&self.http, call).await {
            Ok(answer) => {
                let escalate = answer.escalate
                    || answer.confidence < context.config.confidence_threshold
                    || answer.reply.trim().is_empty();
                Proposed {
                    intent: answer.intent,
                    confidence: answer.confidence,
                    knowledge,
                    action: if escalate {
                        ProposedAction::Escalate
                    } else {
                        ProposedAction::Reply(answer.reply)
                    },
                    why: answer.reason,
                    backend: "openai",
                    model: Some(context.config.openai.model.clone()),
                    rule: None,
                }
            }
            Err(e) => Proposed {
                knowledge,
                model: Some(context.config.openai.model.clone()),
                backend: "openai",
                ..unavailable(
                    "ai_backend_unavailable",
                    &format!("the AI backend did not answer: {e}"),
                )
            },
        }
    }

    /// The escalation rules over the backend's proposal: the first rule that matches
    /// escalates, whatever the backend proposed.
    fn apply_rules(
        &self,
        request: AiRequest,
        context: &Context,
        proposed: Proposed,
        started: Instant,
    ) -> AiOutcome {
        let folded = fold(&context.question);
        let today = confab_engine::port::utc_day(now_millis());
        let ai_replies_today = if context.conv.ai_day == today {
            context.conv.ai_replies_today
        } else {
            0
        };
        let rule_context = RuleContext {
            intent: &proposed.intent,
            confidence: proposed.confidence,
            folded_text: &folded,
            ai_replies_today,
            channel: context.conv.channel,
            campaign: context.conv.campaign.as_deref(),
        };
        let matched = match proposed.action {
            // A backend that could not run has nothing for rules to weigh.
            ProposedAction::Escalate if proposed.backend == "none" => None,
            ProposedAction::Nothing => None,
            _ => context
                .rules
                .iter()
                .find(|rule| rule.when.matches(&rule_context)),
        };
        let (decision, action, rule, why) = match (matched, proposed.action) {
            (Some(rule), _) => (
                AiDecision::Escalated,
                AiAction::Escalate(self.resolve(request.workspace, &context.agents, &rule.then)),
                Some(rule.name.clone()),
                format!("rule \"{}\" applies; {}", rule.name, proposed.why),
            ),
            (None, ProposedAction::Reply(text)) => (
                AiDecision::Answered,
                AiAction::Reply(text),
                None,
                proposed.why,
            ),
            (None, ProposedAction::Escalate) => (
                AiDecision::Escalated,
                AiAction::Escalate(self.resolve(
                    request.workspace,
                    &context.agents,
                    &RuleThen::default(),
                )),
                proposed.rule,
                proposed.why,
            ),
            (None, ProposedAction::Nothing) => {
                (AiDecision::Discarded, AiAction::Nothing, None, proposed.why)
            }
        };
        let counter = match decision {
            AiDecision::Answered => "answered",
            AiDecision::Escalated => "escalated",
            AiDecision::Discarded => "discarded",
        };
        metrics::counter!(crate::metrics::AI_DECISIONS, "decision" => counter).increment(1);
        AiOutcome {
            reasoning: AiReasoning {
                intent: proposed.intent,
                confidence: proposed.confidence,
                knowledge: proposed.knowledge,
                rule,
                decision,
                why,
                backend: proposed.backend.to_owned(),
                model: proposed.model,
                latency_ms: started.elapsed().as_millis() as u64,
                answers_seq: request.seq,
            },
            action,
            max_replies_per_day: context.config.max_replies_per_conversation_per_day,
            epoch: request.epoch,
        }
    }

    /// An escalation's assignee resolved among the workspace's `agents` (the one named, or
    /// the next in turn).
    fn resolve(&self, ws: WorkspaceId, agents: &[AgentId], then: &RuleThen) -> Escalation {
        let assignee = match then.assign_to {
            None => None,
            Some(assign) => match assign {
                AssignTo::Agent(id) => agents.iter().find(|a| **a == id).copied(),
                AssignTo::RoundRobin if agents.is_empty() => None,
                AssignTo::RoundRobin => {
                    let turn = self
                        .turns
                        .entry(ws)
                        .or_default()
                        .fetch_add(1, Ordering::Relaxed);
                    Some(agents[turn % agents.len()])
                }
            },
        };
        Escalation {
            pause_ai: then.pause_ai,
            assignee,
            tags: then.tags.clone(),
            status: then.status,
            notify: then.notify,
        }
    }
}

/// A proposal to escalate because the agent cannot answer at all.
fn unavailable(rule: &str, why: &str) -> Proposed {
    Proposed {
        intent: "unknown".into(),
        confidence: 0.0,
        knowledge: Vec::new(),
        action: ProposedAction::Escalate,
        why: why.to_owned(),
        backend: "none",
        model: None,
        rule: Some(rule.to_owned()),
    }
}

fn knowledge_refs(hits: &[confab_index::KnowledgeHit]) -> Vec<KnowledgeRef> {
    hits.iter()
        .map(|h| KnowledgeRef {
            id: h.article,
            title: h.title.clone(),
            score: (h.score * 1000.0).round() / 1000.0,
        })
        .collect()
}

/// The reasoning of an escalation the conversation makes by itself (the pool could not
/// take the request).
pub fn unavailable_reasoning(seq: u64, why: &str) -> AiReasoning {
    AiReasoning {
        intent: "unknown".into(),
        confidence: 0.0,
        knowledge: Vec::new(),
        rule: Some("ai_unavailable".into()),
        decision: AiDecision::Escalated,
        why: why.to_owned(),
        backend: "none".into(),
        model: None,
        latency_ms: 0,
        answers_seq: seq,
    }
}
