//! `GET /v1/sessions/{id}/context`: what an agent engine should see for one session, and
//! nothing more. Permission: `sessions:read` (the tools listed are those the credential may
//! call; no further scope is needed to learn them).
//!
//! Minimal by construction: one session read through the store door (so the credential's
//! resource prefix applies: a session outside it answers like a missing one), the enabled tools
//! the calling credential may call (its `tools:call:*` or `tools:call:<name>` grants), and only
//! screened text. The session's free-form `metadata` is not included. Tool text was screened
//! when it was stored; the session's title is screened here, under the tenant's policy, and a
//! title the policy refuses is left out (`null`) with the decision recorded.

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::Requires;
use crate::http::authz::RouteTable;
use bulkhead_core::id::SessionKind;
use bulkhead_core::{Scope, SessionId};
use bulkhead_screening::FieldKind;
use bulkhead_store::tenant::sessions;
use bulkhead_store::tenant::tools as tool_store;
use serde::Serialize;
use serde_json::Value;

use crate::http::error::ApiError;
use crate::http::routes::kit::by_id::ById;
use crate::http::routes::kit::tx;

use crate::service::screen::{self, Report};

/// Most tools a context lists; more sets `tools_truncated`.
pub const MAX_CONTEXT_TOOLS: u32 = 200;

/// The routes, mounted under `/v1` behind tenant resolution.
pub fn routes() -> RouteTable {
    RouteTable::tagged("sessions")
        .get(
            "/v1/sessions/{id}/context",
            Requires(Scope::SessionsRead),
            context,
        )
        .confine(crate::http::authz::Confinement::Admitted(
            "the handler reads only a session inside the credential's prefix \
            (404 outside)",
        ))
        .doc(
            OpDoc::ok::<Context>(
                200,
                "What an agent engine should see: the session and the tools this \
                credential may call, screened",
            )
            .id::<SessionId>("The session")
            .answer(
                404,
                "No such session (or another tenant's, or outside the \
                credential's resource prefix)",
            ),
        )
}

/// The session as an agent sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContextSession {
    id: SessionId,
    agent_id: String,
    /// Screened; `null` when the tenant's policy refused it.
    title: Option<String>,
    state: String,
    namespace: Option<String>,
}

/// A tool as an agent sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContextTool {
    name: String,
    description: String,
    #[schema(value_type = Object)]
    input_schema: Value,
    version: i32,
    /// `clean` or `flagged`.
    screening: String,
}

/// The context of one session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Context {
    session: ContextSession,
    tools: Vec<ContextTool>,
    tools_truncated: bool,
    /// The rule file version the text was screened with.
    rules_version: String,
}

async fn context(
    ById { state, tenant, id }: ById<SessionKind>,
) -> Result<axum::Json<Context>, ApiError> {
    let ctx = &tenant.0;
    let visible = super::tools::visible_to(ctx);
    let screener = state.screener();
    let (session, policy, mut tools) = tx::read(&state, ctx, async |tx| {
        let session = sessions::get(tx, id).await?;
        let policy = screen::policy(tx).await?;
        let tools = tool_store::list(tx, &visible, None, MAX_CONTEXT_TOOLS + 1).await?;
        Ok((session, policy, tools))
    })
    .await?;
    let tools_truncated = tools.len() > MAX_CONTEXT_TOOLS as usize;
    tools.truncate(MAX_CONTEXT_TOOLS as usize);

    let mut report = Report::new(screener, policy);
    let title = report.text(FieldKind::SessionTitle, "title", &session.title);
    if !report.decisions.is_empty() {
        report
            .record_alone(state.store(), ctx, &format!("session:{}", session.id))
            .await?;
    }
    Ok(axum::Json(Context {
        session: ContextSession {
            id: session.id,
            agent_id: session.agent_id,
            title,
            state: session.state.as_str().to_owned(),
            namespace: session.namespace,
        },
        tools: tools
            .into_iter()
            .map(|t| ContextTool {
                name: t.name,
                description: t.description,
                input_schema: t.input_schema,
                version: t.version,
                screening: t.screening,
            })
            .collect(),
        tools_truncated,
        rules_version: screener.version().to_owned(),
    }))
}
