//! Errors a request to an actor can answer with. They travel in reply ports; an actor's
//! handler itself only fails when the actor must die.

/// Why a conversation or channel request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("not found")]
    NotFound,
    /// Free text outside the channel's reply window (WhatsApp's 24-hour
    /// customer-service window).
    #[error("the channel's reply window is closed")]
    WindowClosed,
    /// A value the request carried is not acceptable.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The request conflicts with the conversation's state (a merge of a merged one).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The actor could not be reached (crashed, restart budget spent, shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] confab_engine::Error),
}

impl ActorError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ActorError::Invalid {
            code,
            message: message.into(),
        }
    }
}

impl ActorError {
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ActorError::Conflict {
            code,
            message: message.into(),
        }
    }
}

/// Runs a store read on the blocking pool (never on the async runtime); a panic there is an
/// internal failure.
pub async fn read_store<T: Send + 'static>(
    read: impl FnOnce() -> confab_engine::Result<T> + Send + 'static,
) -> ActorResult<T> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| ActorError::Unavailable(format!("a store read failed: {e}")))?
        .map_err(ActorError::from)
}

pub type ActorResult<T> = Result<T, ActorError>;
