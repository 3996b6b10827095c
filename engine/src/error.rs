//! The engine's one error type.

use crate::ids::ConversationId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed. Fatal: the store stops acknowledging writes and `/readyz` fails.
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the store refuses writes after an earlier failure")]
    Poisoned,
    #[error("the committer has shut down")]
    CommitterClosed,
    #[error("stored value is corrupt or of an unknown schema version: {0}")]
    Corrupt(String),
    #[error("not a valid id: {0:?}")]
    InvalidId(String),
    /// A write set with a key or value over the store's limits: refused, nothing written.
    #[error("too large to store: {0}")]
    TooLarge(String),
    #[error("already exists")]
    AlreadyExists,
    /// The data directory was written by a newer Confab: refused before anything is
    /// written to it.
    #[error("the data directory is in store format {found}, newer than this binary's format {supported}: run the Confab release that wrote it, or a newer one (a store cannot be downgraded; restore a backup made by this release instead)")]
    NewerFormat { found: u32, supported: u32 },
    /// A write this committer does not take: a local write on a cluster replica (its writes
    /// go through the changelog), or a changelog entry on a single node's committer.
    #[error("wrong committer for this write: {0}")]
    WrongCommitter(&'static str),
    #[error("conversation {0} not found")]
    ConversationNotFound(ConversationId),
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Poisoned => Error::Poisoned,
            other => Error::Storage(other.to_string()),
        }
    }
}
