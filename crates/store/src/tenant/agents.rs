//! A tenant's agents: machine principals that hold roles and own API keys.

use bulkhead_core::{AgentId, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{StoreError, TenantTx};

/// Whether an agent may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Its credentials work.
    Active,
    /// Its keys and tokens are refused.
    Disabled,
}

impl AgentStatus {
    fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Disabled => "disabled",
        }
    }
}

/// An agent as stored and shown.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Agent {
    /// Id.
    pub id: AgentId,
    /// Unique in the tenant; also the principal label of its keys.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The user responsible for it, if any.
    pub owner_user_id: Option<UserId>,
    /// Status.
    pub status: AgentStatus,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

type Row = (
    uuid::Uuid,
    String,
    String,
    Option<uuid::Uuid>,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

const COLUMNS: &str = "id, name, description, owner_user_id, status, created_at, updated_at";

fn from_row((id, name, description, owner, status, created_at, updated_at): Row) -> Agent {
    Agent {
        id: AgentId::from_uuid(id),
        name,
        description,
        owner_user_id: owner.map(UserId::from_uuid),
        // Anything but `active` (the CHECK allows only two values) fails closed.
        status: if status == "active" {
            AgentStatus::Active
        } else {
            AgentStatus::Disabled
        },
        created_at,
        updated_at,
    }
}

/// Creates an agent. An owner of another tenant is [`StoreError::NotFound`] (composite key).
pub async fn create(
    tx: &mut TenantTx,
    name: &str,
    description: &str,
    owner: Option<UserId>,
) -> Result<Agent, StoreError> {
    let tenant = tx.tenant_id();
    let row: Row = sqlx::query_as(&format!(
        "INSERT INTO agents (tenant_id, id, name, description, owner_user_id) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(AgentId::new().uuid())
    .bind(name)
    .bind(description)
    .bind(owner.map(|o| o.uuid()))
    .fetch_one(tx.conn())
    .await?;
    Ok(from_row(row))
}

/// One agent; another tenant's id is [`StoreError::NotFound`].
pub async fn get(tx: &mut TenantTx, id: AgentId) -> Result<Agent, StoreError> {
    let tenant = tx.tenant_id();
    let row: Row = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agents WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_one(tx.conn())
    .await?;
    Ok(from_row(row))
}

/// A page of agents in id order, after `after`.
pub async fn list(
    tx: &mut TenantTx,
    after: Option<AgentId>,
    limit: u32,
) -> Result<Vec<Agent>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agents WHERE tenant_id = $1 \
         AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant.uuid())
    .bind(after.map(|a| a.uuid()))
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Changes description and/or status. Another tenant's id is [`StoreError::NotFound`].
pub async fn update(
    tx: &mut TenantTx,
    id: AgentId,
    description: Option<&str>,
    status: Option<AgentStatus>,
) -> Result<Agent, StoreError> {
    let tenant = tx.tenant_id();
    let row: Row = sqlx::query_as(&format!(
        "UPDATE agents SET description = COALESCE($3, description), \
         status = COALESCE($4, status), updated_at = now() \
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(description)
    .bind(status.map(AgentStatus::as_str))
    .fetch_one(tx.conn())
    .await?;
    Ok(from_row(row))
}
