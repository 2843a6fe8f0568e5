//! `/v1/sessions`: agent sessions.

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::Requires;
use crate::http::authz::RouteTable;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bulkhead_core::id::SessionKind;
use bulkhead_core::{Scope, SessionId};
use bulkhead_store::tenant::sessions::{
    self, AgentSession, ListSessions, NewSession, SessionPatch, SessionState,
};
use bulkhead_store::TenantTx;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::http::error::ApiError;
use crate::http::extract::{Json, Tenant};
use crate::http::routes::kit::by_id::{ById, ByIdJson};
use crate::http::routes::kit::page::ListQuery;
use crate::http::routes::kit::tx;
use crate::http::routes::kit::validate;
use crate::http::routes::kit::write::Tail;
use crate::http::state::AppState;

/// Largest serialized `metadata` object.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 500;

/// The routes and who may call them.
pub fn routes() -> RouteTable {
    use crate::http::authz::Confinement;
    // Sessions are the resources prefixes bound: the handlers filter lists by the prefix, answer
    // 404 for a session outside it, and refuse (403 `outside-resource-prefix`) creating or moving
    // one outside it; what a confined token creates stays inside its subject's reach.
    const IN_PREFIX: Confinement =
        Confinement::Admitted("the handlers keep every read and write inside the prefix");
    RouteTable::tagged("sessions")
        .resource("/v1/sessions/{id}", OpDoc::one::<SessionId>("session"))
        .get("/v1/sessions", Requires(Scope::SessionsRead), list)
        .confine(IN_PREFIX)
        .doc(
            OpDoc::page::<SessionPage, ListFilters>("A page of sessions")
                .cursor::<SessionId>()
                .summary("Lists sessions, newest last, a page at a time.")
                .invalid("Limit outside 1 to 200, or an invalid agent id"),
        )
        .post("/v1/sessions", Requires(Scope::SessionsWrite), create)
        .confine(IN_PREFIX)
        .doc(
            OpDoc::ok::<AgentSession>(201, "The new session")
                .summary("Creates an agent session.")
                .body::<CreateSession>()
                .forbidden(
                    "Missing `sessions:write`, or the namespace is outside the \
                    credential's resource prefix",
                )
                .invalid("An invalid field (agent id, title, metadata, namespace)"),
        )
        .get("/v1/sessions/{id}", Requires(Scope::SessionsRead), fetch)
        .confine(IN_PREFIX)
        .doc(OpDoc::ok::<AgentSession>(200, "The session").summary("Fetches a session."))
        .patch("/v1/sessions/{id}", Requires(Scope::SessionsWrite), update)
        .confine(IN_PREFIX)
        .doc(
            OpDoc::ok::<AgentSession>(200, "The updated session")
                .summary("Updates a session's title, state, metadata or namespace.")
                .body::<UpdateSession>()
                .invalid("An invalid field"),
        )
        .delete("/v1/sessions/{id}", Requires(Scope::SessionsWrite), remove)
        .confine(IN_PREFIX)
        .doc(OpDoc::empty(204, "Deleted").summary("Deletes a session."))
}

/// Body of `POST /v1/sessions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// `[A-Za-z0-9][A-Za-z0-9._:-]{0,127}`.
    #[schema(example = "agent-1")]
    agent_id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    state: Option<SessionState>,
    /// A JSON object, at most 64 KiB serialized.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
    /// Where the session sits in the tenant's hierarchy (`marketing/campaigns`).
    /// Where the session sits in the tenant's hierarchy (`marketing/campaigns`).
    #[serde(default)]
    #[schema(example = "marketing/campaigns")]
    namespace: Option<String>,
}

/// Body of `PATCH /v1/sessions/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSession {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    state: Option<SessionState>,
    /// A JSON object, at most 64 KiB serialized.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
    /// Where the session sits in the tenant's hierarchy (`marketing/campaigns`).
    #[serde(default)]
    #[schema(example = "marketing/campaigns")]
    namespace: Option<String>,
}

/// Filters of `GET /v1/sessions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListFilters {
    /// Only this agent's sessions.
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    state: Option<SessionState>,
}

/// A page of sessions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionPage {
    data: Vec<AgentSession>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<SessionId>,
}

/// A write outside the credential's resource prefix is a security decision: leave its event.
fn audit_prefix_refusal(
    ctx: &bulkhead_core::TenantContext,
    err: bulkhead_store::StoreError,
) -> ApiError {
    if matches!(err, bulkhead_store::StoreError::OutsideResourcePrefix) {
        crate::http::extract::audit_forbidden(ctx, Scope::SessionsWrite, "resource-prefix");
    }
    err.into()
}

/// A write to a session leaves its audit event and tells the tenant's subscribers.
fn session_tail(action: &'static str, event: &'static str, id: SessionId) -> Tail {
    Tail::new()
        .audit(action, id, json!({}))
        .event(event, json!({ "session_id": id }))
}

fn parse_namespace(text: &str) -> Result<bulkhead_core::Namespace, ApiError> {
    bulkhead_core::Namespace::parse(text).map_err(|e| ApiError::Invalid(e.to_string().into()))
}

fn check_agent_id(agent_id: &str) -> Result<(), ApiError> {
    let bytes = agent_id.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            "agent_id has 1 to 128 characters: letters, digits, `.`, `_`, `:`, `-`, starting with a letter or digit".into(),
        ))
    }
}

fn check_title(title: &str) -> Result<(), ApiError> {
    if title.chars().count() > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
        return Err(ApiError::Invalid(
            format!("title has at most {MAX_TITLE_CHARS} characters and no control characters")
                .into(),
        ));
    }
    Ok(())
}

fn check_metadata(metadata: Map<String, Value>) -> Result<Value, ApiError> {
    let value = Value::Object(metadata);
    validate::refuse_nul("metadata", &value)?;
    let size = serde_json::to_vec(&value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(ApiError::Invalid(
            format!("metadata is limited to {MAX_METADATA_BYTES} bytes of JSON").into(),
        ));
    }
    Ok(value)
}

async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateSession>,
) -> Result<impl IntoResponse, ApiError> {
    let ctx = &tenant.0;
    check_agent_id(&body.agent_id)?;
    check_title(&body.title)?;
    let new = NewSession {
        agent_id: body.agent_id,
        title: body.title,
        state: body.state.unwrap_or(SessionState::Active),
        metadata: check_metadata(body.metadata.unwrap_or_default())?,
        namespace: body.namespace.as_deref().map(parse_namespace).transpose()?,
    };
    let session = tx::write(&state, ctx, async |tx| {
        let session = sessions::create(tx, &new)
            .await
            .map_err(|e| audit_prefix_refusal(ctx, e))?;
        let tail = session_tail("session.create", "session.created", session.id);
        Ok((session, tail))
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(session)))
}

async fn fetch(at: ById<SessionKind>) -> Result<axum::Json<AgentSession>, ApiError> {
    at.read(sessions::get).await.map(axum::Json)
}

async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery<ListFilters>,
) -> Result<axum::Json<SessionPage>, ApiError> {
    let page = query.page_of_ids()?;
    let query = query.filter;
    if let Some(agent_id) = &query.agent_id {
        check_agent_id(agent_id)?;
    }
    let rows = async |tx: &mut TenantTx, after, limit| {
        let filter = ListSessions {
            after,
            limit,
            agent_id: query.agent_id,
            state: query.state,
        };
        Ok(sessions::list(tx, &filter).await?)
    };
    let (data, next_cursor) = page.read(&state, &tenant.0, rows, |s| s.id).await?;
    Ok(axum::Json(SessionPage { data, next_cursor }))
}

async fn update(
    ByIdJson(ById { state, tenant, id }, body): ByIdJson<SessionKind, UpdateSession>,
) -> Result<axum::Json<AgentSession>, ApiError> {
    let ctx = &tenant.0;
    if let Some(title) = &body.title {
        check_title(title)?;
    }
    let patch = SessionPatch {
        title: body.title,
        state: body.state,
        metadata: body.metadata.map(check_metadata).transpose()?,
        namespace: body.namespace.as_deref().map(parse_namespace).transpose()?,
    };
    let session = tx::write(&state, ctx, async |tx| {
        let session = sessions::update(tx, id, &patch)
            .await
            .map_err(|e| audit_prefix_refusal(ctx, e))?;
        let tail = session_tail("session.update", "session.updated", session.id);
        Ok((session, tail))
    })
    .await?;
    Ok(axum::Json(session))
}

async fn remove(at: ById<SessionKind>) -> Result<StatusCode, ApiError> {
    let tail = session_tail("session.delete", "session.deleted", at.id);
    at.delete(sessions::delete, tail).await
}
