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
}

impl Outcome {
    /// The stored text form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Blocked => "blocked",
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
    let id = AuditEventId::new();
    let tenant = tx.tenant_id();
    let actor_id = tx.actor().audit_id();
    let actor_type = tx.actor().audit_type();
    let request_id = tx.request_id().to_string();
    sqlx::query(
        "INSERT INTO bulkhead.audit_events \
         (tenant_id, id, actor_id, actor_type, action, resource_id, outcome, request_id, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(actor_id)
    .bind(actor_type)
    .bind(action)
    .bind(resource_id)
    .bind(outcome.as_str())
    .bind(request_id)
    .bind(metadata)
    .execute(tx.conn())
    .await?;
    Ok(id)
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
        "SELECT id, actor_id, action, resource_id, outcome FROM bulkhead.audit_events \
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
