//! The one place where errors become HTTP statuses and stable error codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use confab_actors::ActorError;
use serde_json::json;

/// An API error: status, stable snake_case code, human sentence.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<confab_engine::Error> for ApiError {
    fn from(e: confab_engine::Error) -> Self {
        use confab_engine::Error as E;
        match e {
            E::InvalidId(_) => ApiError::not_found("object"),
            E::ConversationNotFound(_) => ApiError::not_found("conversation"),
            E::AlreadyExists => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", e.to_string())
            }
            E::TooLarge(_) => {
                tracing::warn!(error = %e, "write refused");
                ApiError::unprocessable("too_large", "a value in the request is too large to store")
            }
            E::Poisoned | E::Storage(_) | E::CommitterClosed => {
                tracing::error!(error = %e, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store cannot accept writes right now",
                )
            }
            E::NewerFormat { .. } => {
                tracing::error!(error = %e, "store of a newer format");
                ApiError::internal(e.to_string())
            }
            E::Corrupt(_) => {
                tracing::error!(error = %e, "corrupt value in the store");
                ApiError::internal("a stored value could not be read")
            }
            // A bug in wiring (the server runs one kind of committer), never a client's.
            E::WrongCommitter(_) => {
                tracing::error!(error = %e, "write refused");
                ApiError::internal("the write went to the wrong committer")
            }
        }
    }
}

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::NotFound => ApiError::not_found("conversation"),
            ActorError::WindowClosed => ApiError::new(
                StatusCode::CONFLICT,
                "whatsapp_window_closed",
                "more than 24 hours have passed since the lead last wrote: only a template message may be sent on WhatsApp now",
            ),
            ActorError::Invalid { code, message } => ApiError::unprocessable(code, message),
            ActorError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            ActorError::Unavailable(why) => {
                // Internals (a task's panic, an actor's exit) go to the log, not the client.
                tracing::error!(reason = %why, "conversation unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "conversation_unavailable",
                    "the conversation cannot be reached right now; retry later",
                )
            }
            ActorError::Store(e) => e.into(),
        }
    }
}

impl From<confab_index::IndexError> for ApiError {
    fn from(e: confab_index::IndexError) -> Self {
        use confab_index::IndexError as E;
        match e {
            E::InvalidQuery(why) => ApiError::bad_request("invalid_query", why.to_string()),
            E::Store(e) => e.into(),
            E::Locked(_) | E::Tantivy(_) | E::Io(_) => {
                tracing::error!(error = %e, "search index unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "search_unavailable",
                    "the search index cannot be read right now",
                )
            }
        }
    }
}

/// A task that failed (panicked or was cancelled): the reason goes to the log only, since a
/// panic's text may carry internals.
impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "a task failed");
        ApiError::internal("the request failed inside the server")
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as R;
        match rejection {
            R::JsonDataError(e) => ApiError::unprocessable("invalid_value", e.body_text()),
            R::JsonSyntaxError(e) => ApiError::bad_request("malformed_json", e.body_text()),
            R::MissingJsonContentType(e) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.body_text(),
            ),
            R::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(e.status(), "payload_too_large", e.body_text())
            }
            R::BytesRejection(e) => ApiError::new(e.status(), "unreadable_body", e.body_text()),
            other => ApiError::bad_request("malformed_request", other.body_text()),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request("malformed_query", rejection.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        ApiError::not_found(&format!("path ({})", rejection.body_text()))
    }
}
