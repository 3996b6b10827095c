//! The indexer: the one actor that writes the search index.
//!
//! It listens to the committer (deltas arrive after they are durable, in offset order),
//! buffers them, and every `commit_interval` — or sooner once `commit_docs` are waiting —
//! hands them to the index [`Writer`] and commits, which reloads the searcher. All tantivy
//! work runs on the blocking pool, never on the reactor.
//!
//! On start, and after any index failure, it reopens the writer and catches up from the
//! store: the deltas after the offset of the last index commit, or a rebuild from the
//! store's state when the delta log was pruned past it. Deltas buffered when a failure
//! struck are simply dropped: they are in the store, and the catch-up replays them. A gap
//! between the last applied offset and the next live delta (which the committer's ordering
//! rules out, but costs nothing to check) is filled from the store the same way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_engine::committer::{Committer, DeltaListener};
use confab_engine::delta::Delta;
use confab_engine::ids::ConversationId;
use confab_engine::store::Store;
use confab_index::{SearchIndex, Writer, WriterOptions};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;

/// How the indexer batches.
#[derive(Clone, Debug)]
pub struct IndexerConfig {
    /// Where the index lives (`<data_dir>/index`).
    pub dir: PathBuf,
    /// Longest a durable delta waits before it is committed to the index.
    pub commit_interval: Duration,
    /// Commit at once when this many deltas are waiting.
    pub commit_docs: usize,
    pub writer: WriterOptions,
}

impl IndexerConfig {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            commit_interval: Duration::from_millis(200),
            commit_docs: 10_000,
            writer: WriterOptions::default(),
        }
    }
}

/// After an index failure, the indexer waits this long before reopening and catching up.
const RETRY_AFTER: Duration = Duration::from_secs(2);

pub enum IndexerMsg {
    /// Deltas the committer just made durable.
    Deltas(Vec<Arc<Delta>>),
    /// Time to commit what is buffered (or to retry after a failure).
    Tick,
    /// Delete every document of these conversations and these messages, after everything
    /// buffered, and commit: answered once that is durable (erasure, retention).
    Erase {
        conversations: Vec<ConversationId>,
        messages: Vec<confab_engine::ids::MessageId>,
        reply: RpcReplyPort<Result<(), String>>,
    },
}

/// Forwards the committer's deltas into the indexer's mailbox without blocking it.
struct Forward(ActorRef<IndexerMsg>);

impl DeltaListener for Forward {
    fn published(&self, deltas: &[Arc<Delta>]) {
        // Fails only once the indexer stopped; the next start catches up from the store.
        let _ = self.0.cast(IndexerMsg::Deltas(deltas.to_vec()));
    }
}

pub struct IndexerArgs {
    pub store: Store,
    pub committer: Committer,
    pub index: SearchIndex,
    pub config: IndexerConfig,
}

pub struct IndexerState {
    args: IndexerArgs,
    /// `None` before the first catch-up and after a failure.
    writer: Option<Writer>,
    buffer: Vec<Arc<Delta>>,
    retry_at: Option<Instant>,
    ticker: Option<JoinHandle<()>>,
}

pub struct Indexer;

impl Indexer {
    /// Starts the indexer and subscribes it to the committer.
    pub async fn start(args: IndexerArgs) -> Result<ActorRef<IndexerMsg>, ActorProcessingErr> {
        let (actor, _) = Actor::spawn(None, Indexer, args).await?;
        Ok(actor)
    }
}

impl IndexerState {
    /// Opens the writer if needed, applies the buffer (filling any gap from the store) and
    /// commits, on the blocking pool. On failure the writer is dropped (its uncommitted
    /// work with it) and reopened later.
    async fn flush(&mut self) {
        let _ = self.flush_erasing(Vec::new(), Vec::new()).await;
    }

    /// [`IndexerState::flush`], deleting the documents of `erase` before the commit.
    /// Fails when the index cannot be written now (it is reopened later).
    async fn flush_erasing(
        &mut self,
        erase: Vec<ConversationId>,
        messages: Vec<confab_engine::ids::MessageId>,
    ) -> Result<(), String> {
        if self.writer.is_none() && self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err("the search index is recovering from a failure".into());
        }
        if self.writer.is_some()
            && self.buffer.is_empty()
            && erase.is_empty()
            && messages.is_empty()
        {
            return Ok(());
        }
        let writer = self.writer.take();
        let deltas = std::mem::take(&mut self.buffer);
        let store = self.args.store.clone();
        let index = self.args.index.clone();
        let options = self.args.config.writer;
        let committer = self.args.committer.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut writer = match writer {
                Some(writer) => writer,
                None => {
                    let mut writer = Writer::open(&index, options)?;
                    let through = committer.durable_head();
                    let done = writer.catch_up(&store, through)?;
                    tracing::info!(?done, through, "search index caught up with the store");
                    writer
                }
            };
            for delta in &deltas {
                if delta.offset > writer.applied() + 1 {
                    writer.catch_up(&store, delta.offset - 1)?;
                }
                writer.apply(delta);
            }
            if !erase.is_empty() {
                writer.erase_conversations(&erase);
            }
            if !messages.is_empty() {
                writer.erase_messages(&messages);
            }
            writer.commit()?;
            Ok::<_, confab_index::IndexError>(writer)
        })
        .await;
        match outcome {
            Ok(Ok(writer)) => {
                let lag = self
                    .args
                    .committer
                    .durable_head()
                    .saturating_sub(writer.committed());
                metrics::gauge!(confab_index::metrics::INDEX_LAG_OFFSETS).set(lag as f64);
                self.writer = Some(writer);
                self.retry_at = None;
                Ok(())
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                Err(e.to_string())
            }
            Err(e) => {
                let why = format!("indexing task panicked: {e}");
                self.failed(&why);
                Err(why)
            }
        }
    }

    fn failed(&mut self, why: &str) {
        tracing::error!(
            error = why,
            "search index failure: reopening and catching up from the store"
        );
        metrics::counter!(confab_index::metrics::INDEX_FAILURES).increment(1);
        self.buffer.clear();
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
    }
}

impl Actor for Indexer {
    type Msg = IndexerMsg;
    type State = IndexerState;
    type Arguments = IndexerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<IndexerMsg>,
        args: IndexerArgs,
    ) -> Result<IndexerState, ActorProcessingErr> {
        // Subscribe before the first catch-up reads the durable head: every later delta
        // then arrives here, and earlier ones are replayed from the store.
        args.committer.subscribe(Arc::new(Forward(myself.clone())));
        let ticker = myself.send_interval(args.config.commit_interval, || IndexerMsg::Tick);
        myself.cast(IndexerMsg::Tick)?;
        Ok(IndexerState {
            args,
            writer: None,
            buffer: Vec::new(),
            retry_at: None,
            ticker: Some(ticker),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<IndexerMsg>,
        msg: IndexerMsg,
        state: &mut IndexerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            IndexerMsg::Deltas(deltas) => {
                state.buffer.extend(deltas);
                if state.buffer.len() >= state.args.config.commit_docs {
                    state.flush().await;
                }
            }
            IndexerMsg::Tick => state.flush().await,
            IndexerMsg::Erase {
                conversations,
                messages,
                reply,
            } => {
                let _ = reply.send(state.flush_erasing(conversations, messages).await);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<IndexerMsg>,
        state: &mut IndexerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        // What is buffered is durable in the store: commit it now so the next start has
        // nothing to replay (a failure here only costs that replay).
        if state.writer.is_some() {
            state.flush().await;
        }
        if let Some(writer) = state.writer.take() {
            let _ = tokio::task::spawn_blocking(move || drop(writer)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use confab_engine::catalogue::{self, Ks};
    use confab_engine::committer::{Durability, WriteSet};
    use confab_engine::delta::DeltaBody;
    use confab_engine::ids::{ConversationId, MessageId};
    use confab_engine::model::{ChannelKind, Direction, Message, Sender};
    use confab_engine::store::StoreOptions;
    use confab_index::{ParsedQuery, SearchRequest};

    use super::*;

    fn message(conversation_id: ConversationId, seq: u64, text: &str) -> Message {
        Message {
            id: MessageId::new(),
            conversation_id,
            seq,
            direction: Direction::Inbound,
            sender: Sender::Lead,
            agent_id: None,
            text: text.into(),
            internal: false,
            channel: ChannelKind::Whatsapp,
            created_at: 0,
            delivery: None,
            external_id: None,
            content_type: None,
            reply_to: None,
            error: None,
            raw: None,
            ai: None,
            attachments: Vec::new(),
            subject: None,
            full_text: None,
            auto_reply: false,
            sent_elsewhere: false,
            reactions: Vec::new(),
            edits: Vec::new(),
            deleted_at: None,
        }
    }

    #[tokio::test]
    async fn committed_messages_become_searchable_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("store");
        let (committer, _thread) =
            Committer::start(store.clone(), Durability::Buffered).expect("committer");
        let index = SearchIndex::open(&dir.path().join("index")).expect("index");
        let start = || {
            Indexer::start(IndexerArgs {
                store: store.clone(),
                committer: committer.clone(),
                index: index.clone(),
                config: IndexerConfig::new(dir.path().join("index")),
            })
        };
        let indexer = start().await.expect("indexer");
        // Catch-up replays the deltas of the workspaces the store knows.
        let (workspace, set) = confab_engine::admin::new_workspace("Zoo");
        committer.commit(set).await.expect("workspace");
        let ws = workspace.id;
        let conv = ConversationId::new();
        let count = |word: &'static str| {
            let index = index.clone();
            async move {
                let request = SearchRequest {
                    workspace: ws,
                    query: ParsedQuery::parse(word).expect("query"),
                    channel: None,
                    intent: None,
                    since: None,
                    conversation: None,
                    offset: 0,
                    limit: 10,
                };
                tokio::task::spawn_blocking(move || {
                    index
                        .search(&request, 100, |_| Ok(Some(())))
                        .map(|p| p.items.len())
                })
                .await
                .expect("task")
                .expect("search")
            }
        };
        let wait = |word: &'static str, n: usize| async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while count(word).await != n {
                assert!(Instant::now() < deadline, "{word}: never {n} hits");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        for (seq, text) in [(1, "quokka"), (2, "wombat")] {
            let m = message(conv, seq, text);
            let mut set = WriteSet::new();
            set.put(Ks::ConvMsg, catalogue::conv_msg(conv, seq), &m)
                .delta(ws, conv, DeltaBody::MessageCreated(m));
            committer.commit(set).await.expect("commit");
        }
        wait("quokka", 1).await;
        wait("wombat", 1).await;
        indexer
            .drain_and_wait(Some(Duration::from_secs(10)))
            .await
            .expect("stops");
        assert_eq!(index.committed_offset().expect("offset"), Some(2));
        // Written while no indexer runs: the next one catches up from the store.
        let m = message(conv, 3, "capybara");
        let mut set = WriteSet::new();
        set.put(Ks::ConvMsg, catalogue::conv_msg(conv, 3), &m)
            .delta(ws, conv, DeltaBody::MessageCreated(m));
        committer.commit(set).await.expect("commit");
        let _indexer = start().await.expect("indexer");
        wait("capybara", 1).await;
        assert_eq!(count("quokka").await, 1);
    }
}
