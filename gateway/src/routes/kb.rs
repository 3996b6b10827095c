//! The knowledge base the AI agent answers from: articles, chunked and indexed as soon as
//! they are written.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use confab_engine::ai::Article;
use confab_engine::catalogue::{self, Ks};
use confab_engine::committer::WriteSet;
use confab_engine::ids::{ArticleId, ConversationId, WorkspaceId};
use confab_engine::time::now_millis;
use confab_index::ArticleDoc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{blocking, Body};
use crate::app::AppState;
use crate::auth::AgentAuth;
use crate::error::{ApiError, ApiResult};
use crate::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, replace, delete))
}

/// Most articles a workspace keeps.
const MAX_ARTICLES: usize = 5_000;

/// An article as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct ArticleView {
    id: ArticleId,
    title: String,
    body: String,
    tags: Vec<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// For a correction made from feedback: the conversation it came from.
    source_conversation_id: Option<ConversationId>,
}

impl ArticleView {
    pub fn of(article: &Article) -> ArticleView {
        ArticleView {
            id: article.id,
            title: article.title.clone(),
            body: article.body.clone(),
            tags: article.tags.clone(),
            created_at: confab_engine::time::to_rfc3339(article.created_at),
            updated_at: confab_engine::time::to_rfc3339(article.updated_at),
            source_conversation_id: article.source.map(|(c, _)| c),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ArticleList {
    /// Oldest first.
    items: Vec<ArticleView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArticleBody {
    #[schema(min_length = 1, max_length = 200, pattern = "[^\\s\\u0085]")]
    title: String,
    #[schema(min_length = 1, max_length = 20000, pattern = "[^\\s\\u0085]")]
    body: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// A checked article body: trimmed title and body, normalized tags.
pub fn checked(body: ArticleBody) -> ApiResult<(String, String, Vec<String>)> {
    let (title, text) = (body.title.trim(), body.body.trim());
    if title.is_empty() || body.title.chars().count() > 200 {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "`title` is 1 to 200 characters",
        ));
    }
    if text.is_empty() || body.body.chars().count() > 20_000 {
        return Err(ApiError::unprocessable(
            "invalid_value",
            "`body` is 1 to 20,000 characters",
        ));
    }
    if body.tags.len() > 20 {
        return Err(ApiError::unprocessable("invalid_tag", "at most 20 tags"));
    }
    let tags = confab_actors::conversation::normalize_tags(body.tags)?;
    Ok((title.to_owned(), text.to_owned(), tags))
}

/// Stores an article and indexes it (searchable when this returns).
pub async fn save(app: &AppState, article: &Article) -> ApiResult<()> {
    let mut set = WriteSet::new();
    set.put(
        Ks::KbArticle,
        catalogue::kb_article(article.workspace_id, article.id),
        article,
    );
    app.committer.commit(set).await?;
    let (kb, article) = (app.runtime.ai.knowledge.clone(), article.clone());
    tokio::task::spawn_blocking(move || {
        kb.upsert(&[ArticleDoc {
            workspace: article.workspace_id,
            id: article.id,
            title: &article.title,
            body: &article.body,
            tags: &article.tags,
        }])
    })
    .await?
    .map_err(ApiError::from)
}

async fn owned(app: &AppState, ws: WorkspaceId, id: &str) -> ApiResult<Article> {
    let id: ArticleId = id.parse().map_err(|_| ApiError::not_found("article"))?;
    let store = app.store.clone();
    blocking(move || store.get::<Article>(Ks::KbArticle, &catalogue::kb_article(ws, id)))
        .await?
        .ok_or_else(|| ApiError::not_found("article"))
}

/// The workspace's articles.
#[utoipa::path(
    get,
    path = "/api/v1/kb/articles",
    tag = "knowledge",
    security(("agent_token" = [])),
    responses(
        (status = 200, description = "Every article, oldest first.", body = ArticleList),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn list(agent: AgentAuth, State(app): State<AppState>) -> ApiResult<Json<ArticleList>> {
    let (store, ws) = (app.store.clone(), agent.0.workspace_id);
    let articles: Vec<Article> =
        blocking(move || store.with_prefix(Ks::KbArticle, &ws.to_bytes())).await?;
    Ok(Json(ArticleList {
        items: articles.iter().map(ArticleView::of).collect(),
    }))
}

/// Adds an article; the AI uses it from the next question on.
#[utoipa::path(
    post,
    path = "/api/v1/kb/articles",
    tag = "knowledge",
    security(("agent_token" = [])),
    request_body = ArticleBody,
    responses(
        (status = 201, description = "Stored and indexed.", body = ArticleView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 409, description = "`too_many_articles`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`, `invalid_tag`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `search_unavailable`.", body = ErrorBody),
    )
)]
async fn create(
    agent: AgentAuth,
    State(app): State<AppState>,
    Body(body): Body<ArticleBody>,
) -> ApiResult<(StatusCode, Json<ArticleView>)> {
    let (title, text, tags) = checked(body)?;
    let ws = agent.0.workspace_id;
    let _writing = app.runtime.ai.knowledge_writes.lock().await;
    let store = app.store.clone();
    let count = blocking(move || store.count_prefix(Ks::KbArticle, &ws.to_bytes())).await?;
    if count >= MAX_ARTICLES {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_articles",
            format!("a workspace keeps at most {MAX_ARTICLES} articles"),
        ));
    }
    let now = now_millis();
    let article = Article {
        id: ArticleId::new(),
        workspace_id: ws,
        title,
        body: text,
        tags,
        created_at: now,
        updated_at: now,
        source: None,
    };
    save(&app, &article).await?;
    Ok((StatusCode::CREATED, Json(ArticleView::of(&article))))
}

/// One article.
#[utoipa::path(
    get,
    path = "/api/v1/kb/articles/{id}",
    tag = "knowledge",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The article.")),
    responses(
        (status = 200, description = "The article.", body = ArticleView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such article in the caller's workspace.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
async fn show(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ArticleView>> {
    let article = owned(&app, agent.0.workspace_id, &id).await?;
    Ok(Json(ArticleView::of(&article)))
}

/// Replaces an article's title, body and tags; re-indexed at once.
#[utoipa::path(
    put,
    path = "/api/v1/kb/articles/{id}",
    tag = "knowledge",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The article.")),
    request_body = ArticleBody,
    responses(
        (status = 200, description = "Stored and indexed.", body = ArticleView),
        (status = 400, description = "`malformed_json`, `unreadable_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such article in the caller's workspace.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_value`, `invalid_tag`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `search_unavailable`.", body = ErrorBody),
    )
)]
async fn replace(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<ArticleBody>,
) -> ApiResult<Json<ArticleView>> {
    let (title, text, tags) = checked(body)?;
    let _writing = app.runtime.ai.knowledge_writes.lock().await;
    let mut article = owned(&app, agent.0.workspace_id, &id).await?;
    article.title = title;
    article.body = text;
    article.tags = tags;
    article.updated_at = now_millis();
    save(&app, &article).await?;
    Ok(Json(ArticleView::of(&article)))
}

/// Deletes an article; the AI no longer uses it.
#[utoipa::path(
    delete,
    path = "/api/v1/kb/articles/{id}",
    tag = "knowledge",
    security(("agent_token" = [])),
    params(("id" = String, Path, description = "The article.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such article in the caller's workspace.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `search_unavailable`.", body = ErrorBody),
    )
)]
async fn delete(
    agent: AgentAuth,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let _writing = app.runtime.ai.knowledge_writes.lock().await;
    let article = owned(&app, agent.0.workspace_id, &id).await?;
    let mut set = WriteSet::new();
    set.delete(
        Ks::KbArticle,
        catalogue::kb_article(article.workspace_id, article.id),
    );
    app.committer.commit(set).await?;
    let kb = app.runtime.ai.knowledge.clone();
    tokio::task::spawn_blocking(move || kb.delete(article.id))
        .await?
        .map_err(ApiError::from)?;
    Ok(StatusCode::NO_CONTENT)
}
