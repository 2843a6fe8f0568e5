//! Audit events written in the same transaction as the change they record.

use bulkhead_core::AuditEventId;
use serde::Serialize;

use crate::{StoreError, TenantTx};

/// The result of the audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was refused or failed.
    Failure,
    /// A guard stopped it.
    Blocked,
    /// An outbound action is about to leave (recorded and committed before it does); a second
    /// event with the same id in its metadata says how it ended.
    Started,
}

impl Outcome {
    /// The stored text form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Blocked => "blocked",
            Outcome::Started => "started",
        }
    }
}

/// Appends an audit event for the transaction's tenant, actor and request. It commits or rolls
/// back with the change it describes. `metadata` must hold no secret.
pub async fn record(
    tx: &mut TenantTx,
    action: &str,
    resource_id: Option<&str>,
    outcome: Outcome,
    metadata: serde_json::Value,
) -> Result<AuditEventId, StoreError> {
    record_event(
        tx,
        &NewEvent {
            resource_id,
            metadata,
            ..NewEvent::new(action, outcome)
        },
    )
    .await
}

/// An audit event as read back.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// Event id.
    pub id: AuditEventId,
    /// Who acted.
    pub actor_id: String,
    /// What the action was.
    pub action: String,
    /// What it was done to.
    pub resource_id: Option<String>,
    /// How it ended.
    pub outcome: String,
}

/// The tenant's most recent events, newest first (at most `limit`).
pub async fn recent(tx: &mut TenantTx, limit: i64) -> Result<Vec<AuditEvent>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<(uuid::Uuid, String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT id, actor_id, action, resource_id, outcome FROM audit_events \
         WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(tenant.uuid())
    .bind(limit)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, actor_id, action, resource_id, outcome)| AuditEvent {
            id: AuditEventId::from_uuid(id),
            actor_id,
            action,
            resource_id,
            outcome,
        })
        .collect())
}

/// An event with the fields [`record`] does not take: who acted when there is no authenticated
/// actor, the client's address and agent, a delegation chain. For events written outside a
/// request's own context (authentication failures) or with client details.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// What the action was (`^[a-z][a-z0-9_.]{0,63}$`).
    pub action: &'a str,
    /// What it was done to.
    pub resource_id: Option<&'a str>,
    /// How it ended.
    pub outcome: Outcome,
    /// Actor id; `None`: the transaction's actor.
    pub actor_id: Option<&'a str>,
    /// Actor type (`api_key`, `human`, `agent`, `system`, `anonymous`); `None`: the transaction's.
    pub actor_type: Option<&'a str>,
    /// Client address.
    pub ip_address: Option<std::net::IpAddr>,
    /// Client `User-Agent` (truncated to 256 bytes here).
    pub user_agent: Option<&'a str>,
    /// Request id; `None`: the transaction's.
    pub request_id: Option<String>,
    /// Who delegated to whom, outermost first; `None`: the transaction actor's chain, if its
    /// credential is delegated.
    pub delegation: Option<Vec<String>>,
    /// Details; must hold no secret.
    pub metadata: serde_json::Value,
}

impl<'a> NewEvent<'a> {
    /// An event with only the essentials; the rest from the transaction.
    pub fn new(action: &'a str, outcome: Outcome) -> Self {
        Self {
            action,
            resource_id: None,
            outcome,
            actor_id: None,
            actor_type: None,
            ip_address: None,
            user_agent: None,
            request_id: None,
            delegation: None,
            metadata: serde_json::json!({}),
        }
    }
}

/// Longest `user_agent` stored, in bytes (cut at a character boundary).
pub const MAX_USER_AGENT_BYTES: usize = 256;

/// Appends `event` for the transaction's tenant (same transaction as the change, like [`record`]).
pub async fn record_event(
    tx: &mut TenantTx,
    event: &NewEvent<'_>,
) -> Result<AuditEventId, StoreError> {
    record_event_with_id(tx, AuditEventId::new(), event).await
}

/// [`record_event`] under an id chosen (and recorded elsewhere) beforehand, for writers that
/// must write an event exactly once across a crash: they look for the id before writing again.
/// The id must be a fresh UUIDv7 (the sequencer orders and windows events by its time).
pub async fn record_event_with_id(
    tx: &mut TenantTx,
    id: AuditEventId,
    event: &NewEvent<'_>,
) -> Result<AuditEventId, StoreError> {
    let tenant = tx.tenant_id();
    let actor_id = event
        .actor_id
        .map_or_else(|| tx.actor().audit_id(), str::to_owned);
    let actor_type = event.actor_type.unwrap_or_else(|| tx.actor().audit_type());
    let request_id = event
        .request_id
        .clone()
        .unwrap_or_else(|| tx.request_id().to_string());
    let user_agent = event.user_agent.map(|ua| {
        let mut end = ua.len().min(MAX_USER_AGENT_BYTES);
        while !ua.is_char_boundary(end) {
            end -= 1;
        }
        ua[..end].replace('\0', "")
    });
    sqlx::query(
        "INSERT INTO audit_events \
         (tenant_id, id, actor_id, actor_type, action, resource_id, outcome, request_id, metadata, \
          ip_address, user_agent, delegation) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::inet, $11, $12)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(actor_id)
    .bind(actor_type)
    .bind(event.action)
    .bind(event.resource_id)
    .bind(event.outcome.as_str())
    .bind(request_id)
    .bind(&event.metadata)
    .bind(event.ip_address.map(|ip| ip.to_string()))
    .bind(user_agent)
    .bind(
        event
            .delegation
            .clone()
            .or_else(|| tx.actor().delegation().map(<[String]>::to_vec)),
    )
    .execute(tx.conn())
    .await?;
    Ok(id)
}

/// Appends many events of the transaction's actor in one statement (bulk writers, benchmarks):
/// `(action, resource_id, outcome, metadata)` each. Returns their ids, in order.
pub async fn record_batch(
    tx: &mut TenantTx,
    events: &[(&str, Option<&str>, Outcome, serde_json::Value)],
) -> Result<Vec<AuditEventId>, StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<AuditEventId> = events.iter().map(|_| AuditEventId::new()).collect();
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|id| id.uuid()).collect();
    let actions: Vec<&str> = events.iter().map(|e| e.0).collect();
    let resources: Vec<Option<&str>> = events.iter().map(|e| e.1).collect();
    let outcomes: Vec<&str> = events.iter().map(|e| e.2.as_str()).collect();
    let metadata: Vec<&serde_json::Value> = events.iter().map(|e| &e.3).collect();
    sqlx::query(
        "INSERT INTO audit_events \
         (tenant_id, id, actor_id, actor_type, action, resource_id, outcome, request_id, metadata) \
         SELECT $1, u.id, $2, $3, u.action, u.resource_id, u.outcome, $4, u.metadata \
         FROM unnest($5::uuid[], $6::text[], $7::text[], $8::text[], $9::jsonb[]) \
              AS u(id, action, resource_id, outcome, metadata)",
    )
    .bind(tenant.uuid())
    .bind(tx.actor().audit_id())
    .bind(tx.actor().audit_type())
    .bind(tx.request_id().to_string())
    .bind(&uuids)
    .bind(&actions)
    .bind(&resources)
    .bind(&outcomes)
    .bind(&metadata)
    .execute(tx.conn())
    .await?;
    Ok(ids)
}
