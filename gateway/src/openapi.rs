//! The API as a machine-readable contract: an OpenAPI 3.1 document generated from the code.
//!
//! Every route is registered through `utoipa_axum`'s `OpenApiRouter` from its handler's
//! `#[utoipa::path]` annotation, so the router and the document are built from the same
//! declarations and cannot disagree. Shapes come from the types the handlers serialize
//! (`ToSchema`); errors share one shape, [`ErrorBody`]. `GET /api/v1/openapi.json` serves
//! the document.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

/// The security scheme of agent tokens (`cfb_…`).
pub const AGENT_TOKEN: &str = "agent_token";
/// The security scheme of the server's admin token.
pub const ADMIN_TOKEN: &str = "admin_token";

/// Every 4xx and 5xx answer: a stable snake_case `code` and a sentence for humans.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case; each operation lists the codes it can answer with.
    pub code: String,
    /// For humans; may change.
    pub message: String,
}

/// `view` of a conversation listing.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ViewParam {
    All,
    Mine,
    Unassigned,
    Closed,
    Snoozed,
}

/// `mode` of a conversation listing: the AI mode.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModeParam {
    AiActive,
    AiPaused,
    Manual,
}

/// `period`: last activity today (UTC), in the last 7 or 30 days, or ever.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeriodParam {
    Today,
    Week,
    Month,
    All,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Confab",
        description = "A realtime message engine behind a unified lead inbox. The guarantees \
                       a schema cannot state (ordering, resume, durability) are in docs/API.md.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    components(schemas(
        ErrorBody,
        // Schemas of query parameters (utoipa collects only bodies' schemas by itself).
        ViewParam,
        ModeParam,
        PeriodParam,
        confab_engine::model::ChannelKind,
        confab_engine::model::Status,
        crate::stream::frames::schema::StreamClientFrame,
        crate::stream::frames::schema::StreamServerFrame,
    )),
    tags(
        (name = "admin", description = "Provisioning with the server's admin token."),
        (name = "webhooks", description = "Called by providers; authenticated by signature."),
        (name = "inbox", description = "Conversations, messages and commands (agent token)."),
        (name = "contacts", description = "Leads' details."),
        (name = "ai", description = "The AI agent: configuration, escalation rules, reasoning."),
        (name = "knowledge", description = "The knowledge base the AI answers from."),
        (name = "channels", description = "Channels' health: status, last error, outbox, send budgets."),
        (name = "agents", description = "The workspace's agents."),
        (name = "auth", description = "Browser sign-in: session cookie, sign-out, who is signed in."),
        (name = "analytics", description = "Conversation metrics."),
        (name = "notifications", description = "Agents' notifications: the list, read marks, settings, push devices; the workspace's response target."),
        (name = "search", description = "Full-text search."),
        (name = "stream", description = "The realtime WebSocket stream."),
        (name = "process", description = "Health, readiness, metrics and this document."),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [
            (
                AGENT_TOKEN,
                "An agent's token (`cfb_` + 64 hex digits), for its workspace.",
            ),
            (
                ADMIN_TOKEN,
                "The server's admin token (`CONFAB_ADMIN_TOKEN`), for /api/v1/admin.",
            ),
        ] {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(description.to_string());
            components.add_security_scheme(name, SecurityScheme::Http(http));
        }
    }
}

/// The whole document: the routes' operations over [`ApiDoc`]. Built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| crate::app::api_routes().into_openapi())
}

/// The document as JSON, rendered once.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This document: the API's machine-readable contract (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "process",
    responses((status = 200, description = "The OpenAPI document.", body = Object))
)]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        serde_json::from_str(document_json()).expect("the document is JSON")
    }

    /// Every `$ref` in `value`.
    fn refs(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(target)) => {
                            out.insert(target.clone());
                        }
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// Routes are registered only through `OpenApiRouter::routes` (from their annotations):
    /// a plain axum `.route(…)` anywhere in the gateway would serve a path the document
    /// lacks, so this test refuses one.
    #[test]
    fn no_route_is_registered_outside_the_document() {
        fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        sources(&src, &mut files);
        assert!(files.len() > 10);
        // The demo's sandbox is another server (a stand-in for Meta's Graph API); the web
        // inbox's page and assets (`ui.rs`) are not API operations.
        files.retain(|f| !f.starts_with(src.join("demo")) && *f != src.join("ui.rs"));
        let forbidden = [".route(", ".route_service(", ".nest(", ".nest_service("];
        let mut found = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source");
            // Unit tests may build small routers of their own.
            let code_end = text.find("#[cfg(test)]").unwrap_or(text.len());
            for (n, line) in text[..code_end].lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if forbidden.iter().any(|f| code.contains(f)) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(found.is_empty(), "routes outside the document: {found:#?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut found = BTreeSet::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let pointer = target.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
        }
    }

    #[test]
    fn every_operation_is_tagged_secured_and_lists_its_errors_with_the_error_shape() {
        let doc = doc();
        let schemes = doc["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes");
        assert!(schemes.contains_key(AGENT_TOKEN) && schemes.contains_key(ADMIN_TOKEN));
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("path item") {
                let name = format!("{method} {path}");
                assert!(
                    op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                    "{name}"
                );
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|s| s.starts_with('2') || s == "101"),
                    "{name}: no success"
                );
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        let schema = &response["content"]["application/json"]["schema"];
                        assert_eq!(
                            schema["$ref"], "#/components/schemas/ErrorBody",
                            "{name} {status}"
                        );
                        let text = response["description"].as_str().unwrap_or("");
                        assert!(text.contains('`'), "{name} {status} names no code");
                    }
                }
                let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
                let public = path.starts_with("/webhooks/")
                    || [
                        "/healthz",
                        "/readyz",
                        "/metrics",
                        "/api/v1/openapi.json",
                        "/api/v1/auth/login",
                        "/api/v1/auth/logout",
                        "/api/v1/auth/accept-invite",
                    ]
                    .contains(&path.as_str());
                assert_eq!(secured, !public, "{name}: security");
                if path.starts_with("/api/v1/admin/") {
                    assert_eq!(
                        op["security"][0]
                            .as_object()
                            .map(|o| o.contains_key(ADMIN_TOKEN)),
                        Some(true),
                        "{name}"
                    );
                }
            }
        }
    }
}
