//! Agent sessions: the first tenant-owned resource.
//!
//! Invariant: when the transaction's actor is confined to a resource prefix, every function
//! here sees and changes only sessions whose namespace is inside it (by whole segments), and
//! refuses to create or move a session outside it. The prefix comes from the transaction itself,
//! so a handler cannot forget it.

use bulkhead_core::{Namespace, SessionId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::text_enum::text_enum;
use crate::{StoreError, TenantTx};

text_enum!(
    /// Lifecycle state of an agent session.
    SessionState { /** Running. */ Active = "active", /** Paused by the agent or an operator. */ Paused = "paused", /** Finished. */ Closed = "closed" }
);

/// An agent session as stored.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentSession {
    /// Public id.
    pub id: SessionId,
    /// The agent the session belongs to.
    pub agent_id: String,
    /// Human-readable title.
    pub title: String,
    /// Lifecycle state.
    pub state: SessionState,
    /// Free-form JSON object.
    pub metadata: serde_json::Value,
    /// Where the session sits in the tenant's hierarchy, if anywhere.
    pub namespace: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Fields of a new session (validated by the caller; the database checks again).
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The agent the session belongs to.
    pub agent_id: String,
    /// Title.
    pub title: String,
    /// Initial state.
    pub state: SessionState,
    /// JSON object.
    pub metadata: serde_json::Value,
    /// Namespace.
    pub namespace: Option<Namespace>,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SessionPatch {
    /// New title.
    pub title: Option<String>,
    /// New state.
    pub state: Option<SessionState>,
    /// Replacement metadata object.
    pub metadata: Option<serde_json::Value>,
    /// New namespace.
    pub namespace: Option<Namespace>,
}

/// A page request: sessions after the cursor, in id (creation) order.
#[derive(Debug, Clone, Default)]
pub struct ListSessions {
    /// Only sessions with an id greater than this one.
    pub after: Option<SessionId>,
    /// Page size; the caller bounds it.
    pub limit: u32,
    /// Only this agent's sessions.
    pub agent_id: Option<String>,
    /// Only sessions in this state.
    pub state: Option<SessionState>,
}

type SessionRow = (
    uuid::Uuid,
    String,
    String,
    String,
    serde_json::Value,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);
const COLUMNS: &str = "id, agent_id, title, state, metadata, namespace, created_at, updated_at";

/// The predicate confining a query to the actor's prefix, bound as `$n` (NULL: no prefix).
fn within_prefix(n: u8) -> String {
    format!(
        "(${n}::text IS NULL OR (namespace IS NOT NULL AND \
         (namespace = ${n} OR starts_with(namespace, ${n} || '/'))))"
    )
}

fn prefix_of(tx: &TenantTx) -> Option<String> {
    tx.actor().resource_prefix().map(|p| p.as_str().to_owned())
}

/// Refuses a namespace the actor may not write to.
fn check_inside(tx: &TenantTx, namespace: Option<&Namespace>) -> Result<(), StoreError> {
    match (tx.actor().resource_prefix(), namespace) {
        (None, _) => Ok(()),
        (Some(prefix), Some(ns)) if prefix.contains(ns) => Ok(()),
        _ => Err(StoreError::OutsideResourcePrefix),
    }
}

fn from_row(row: SessionRow) -> Result<AgentSession, StoreError> {
    let (id, agent_id, title, state, metadata, namespace, created_at, updated_at) = row;
    Ok(AgentSession {
        id: SessionId::from_uuid(id),
        agent_id,
        title,
        state: SessionState::parse(&state).ok_or_else(|| {
            StoreError::UnsafeConfiguration("session row has an invalid state".into())
        })?,
        metadata,
        namespace,
        created_at,
        updated_at,
    })
}

/// Creates a session for the transaction's tenant.
pub async fn create(tx: &mut TenantTx, new: &NewSession) -> Result<AgentSession, StoreError> {
    check_inside(tx, new.namespace.as_ref())?;
    let tenant = tx.tenant_id();
    let row: SessionRow = sqlx::query_as(&format!(
        "INSERT INTO agent_sessions (tenant_id, id, agent_id, title, state, metadata, \
         namespace) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(SessionId::new().uuid())
    .bind(&new.agent_id)
    .bind(&new.title)
    .bind(new.state.as_str())
    .bind(&new.metadata)
    .bind(new.namespace.as_ref().map(|n| n.as_str()))
    .fetch_one(tx.conn())
    .await?;
    from_row(row)
}

/// One session of the transaction's tenant; another tenant's id is [`StoreError::NotFound`].
pub async fn get(tx: &mut TenantTx, id: SessionId) -> Result<AgentSession, StoreError> {
    let tenant = tx.tenant_id();
    let prefix = prefix_of(tx);
    let row: Option<SessionRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agent_sessions WHERE tenant_id = $1 AND id = $2 AND {}",
        within_prefix(3)
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(prefix)
    .fetch_optional(tx.conn())
    .await?;
    row.map(from_row).transpose()?.ok_or(StoreError::NotFound)
}

/// A page of the tenant's sessions.
pub async fn list(
    tx: &mut TenantTx,
    query: &ListSessions,
) -> Result<Vec<AgentSession>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<SessionRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agent_sessions \
         WHERE tenant_id = $1 \
           AND ($2::uuid IS NULL OR id > $2) \
           AND ($3::text IS NULL OR agent_id = $3) \
           AND ($4::text IS NULL OR state = $4) \
           AND {} \
         ORDER BY id LIMIT $5",
        within_prefix(6)
    ))
    .bind(tenant.uuid())
    .bind(query.after.map(|id| id.uuid()))
    .bind(query.agent_id.as_deref())
    .bind(query.state.map(|s| s.as_str()))
    .bind(i64::from(query.limit))
    .bind(prefix_of(tx))
    .fetch_all(tx.conn())
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// Applies a patch; another tenant's id is [`StoreError::NotFound`] and changes nothing.
pub async fn update(
    tx: &mut TenantTx,
    id: SessionId,
    patch: &SessionPatch,
) -> Result<AgentSession, StoreError> {
    if patch.namespace.is_some() {
        check_inside(tx, patch.namespace.as_ref())?;
    }
    let tenant = tx.tenant_id();
    let row: Option<SessionRow> = sqlx::query_as(&format!(
        "UPDATE agent_sessions SET \
           title = COALESCE($3, title), state = COALESCE($4, state), \
           metadata = COALESCE($5, metadata), namespace = COALESCE($7, namespace), \
           updated_at = now() \
         WHERE tenant_id = $1 AND id = $2 AND {} RETURNING {COLUMNS}",
        within_prefix(6)
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(patch.title.as_deref())
    .bind(patch.state.map(|s| s.as_str()))
    .bind(patch.metadata.as_ref())
    .bind(prefix_of(tx))
    .bind(patch.namespace.as_ref().map(|n| n.as_str()))
    .fetch_optional(tx.conn())
    .await?;
    row.map(from_row).transpose()?.ok_or(StoreError::NotFound)
}

/// Deletes a session; another tenant's id is [`StoreError::NotFound`] and deletes nothing.
pub async fn delete(tx: &mut TenantTx, id: SessionId) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let prefix = prefix_of(tx);
    let done = sqlx::query(&format!(
        "DELETE FROM agent_sessions WHERE tenant_id = $1 AND id = $2 AND {}",
        within_prefix(3)
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(prefix)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
