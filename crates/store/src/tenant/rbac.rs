//! Roles and role assignments of a tenant, and the permissions they give a principal.
//!
//! Built-in roles are rows (so assignments can reference them by composite foreign key) whose
//! permissions come from [`BuiltInRole::permissions`], never from the row. A stored permission
//! name this binary does not know grants nothing.

use bulkhead_auth::rbac::BuiltInRole;
use bulkhead_core::{AgentId, ApiKeyId, RoleAssignmentId, RoleId, ScopeSet, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{StoreError, TenantTx};

/// Who holds roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", content = "id", rename_all = "lowercase")]
pub enum Principal {
    /// A human user.
    User(UserId),
    /// An agent.
    Agent(AgentId),
}

/// A role as stored and shown.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Role {
    /// Id.
    pub id: RoleId,
    /// Unique in the tenant.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Built-in roles cannot be changed or deleted.
    pub built_in: bool,
    /// What the role allows.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<bulkhead_core::Scope>))]
    pub permissions: ScopeSet,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

type RoleRow = (
    uuid::Uuid,
    String,
    String,
    bool,
    Vec<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

const ROLE_COLUMNS: &str = "id, name, description, built_in, permissions, created_at, updated_at";

/// The permissions a role row gives.
fn role_permissions(built_in: bool, name: &str, stored: &[String]) -> ScopeSet {
    if built_in {
        // A built-in row whose name this binary does not know grants nothing.
        BuiltInRole::by_name(name)
            .map(BuiltInRole::permissions)
            .unwrap_or_default()
    } else {
        stored
            .iter()
            .filter_map(|p| ScopeSet::parse_all([p]).ok())
            .fold(ScopeSet::default(), |held, one| held.union(&one))
    }
}

fn role_from_row(
    (id, name, description, built_in, stored, created_at, updated_at): RoleRow,
) -> Role {
    Role {
        id: RoleId::from_uuid(id),
        permissions: role_permissions(built_in, &name, &stored),
        name,
        description,
        built_in,
        created_at,
        updated_at,
    }
}

/// Creates the built-in roles in the transaction's tenant (onboarding).
pub async fn seed_built_in_roles(tx: &mut TenantTx) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    for role in BuiltInRole::ALL {
        sqlx::query(
            "INSERT INTO roles (tenant_id, id, name, description, built_in) \
             VALUES ($1, $2, $3, $4, true)",
        )
        .bind(tenant.uuid())
        .bind(RoleId::new().uuid())
        .bind(role.name())
        .bind(role.description())
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// Creates a custom role. A built-in name is a conflict (the built-in row holds it).
pub async fn create_role(
    tx: &mut TenantTx,
    name: &str,
    description: &str,
    permissions: &ScopeSet,
) -> Result<Role, StoreError> {
    let tenant = tx.tenant_id();
    let row: RoleRow = sqlx::query_as(&format!(
        "INSERT INTO roles (tenant_id, id, name, description, permissions) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {ROLE_COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(RoleId::new().uuid())
    .bind(name)
    .bind(description)
    .bind(permissions.to_strings())
    .fetch_one(tx.conn())
    .await?;
    Ok(role_from_row(row))
}

/// One role; another tenant's id is [`StoreError::NotFound`].
pub async fn get_role(tx: &mut TenantTx, id: RoleId) -> Result<Role, StoreError> {
    fetch_role(tx, id, "").await
}

async fn fetch_role(tx: &mut TenantTx, id: RoleId, lock: &str) -> Result<Role, StoreError> {
    let tenant = tx.tenant_id();
    let row: RoleRow = sqlx::query_as(&format!(
        "SELECT {ROLE_COLUMNS} FROM roles WHERE tenant_id = $1 AND id = $2 {lock}"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_one(tx.conn())
    .await?;
    Ok(role_from_row(row))
}

/// The role of this name, if any.
pub async fn role_by_name(tx: &mut TenantTx, name: &str) -> Result<Role, StoreError> {
    let tenant = tx.tenant_id();
    let row: RoleRow = sqlx::query_as(&format!(
        "SELECT {ROLE_COLUMNS} FROM roles WHERE tenant_id = $1 AND name = $2"
    ))
    .bind(tenant.uuid())
    .bind(name)
    .fetch_one(tx.conn())
    .await?;
    Ok(role_from_row(row))
}

/// A page of roles in id order.
pub async fn list_roles(
    tx: &mut TenantTx,
    after: Option<RoleId>,
    limit: u32,
) -> Result<Vec<Role>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<RoleRow> = sqlx::query_as(&format!(
        "SELECT {ROLE_COLUMNS} FROM roles WHERE tenant_id = $1 \
         AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant.uuid())
    .bind(after.map(|r| r.uuid()))
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(role_from_row).collect())
}

/// The role before a change, locked for the rest of the transaction (so the caller's escalation
/// check and the write see the same row).
pub async fn get_role_for_update(tx: &mut TenantTx, id: RoleId) -> Result<Role, StoreError> {
    fetch_role(tx, id, "FOR UPDATE").await
}

/// Replaces a custom role's description and/or permissions. Built-in roles: conflict.
pub async fn update_role(
    tx: &mut TenantTx,
    id: RoleId,
    description: Option<&str>,
    permissions: Option<&ScopeSet>,
) -> Result<Role, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<RoleRow> = sqlx::query_as(&format!(
        "UPDATE roles SET description = COALESCE($3, description), \
         permissions = COALESCE($4, permissions), updated_at = now() \
         WHERE tenant_id = $1 AND id = $2 AND NOT built_in RETURNING {ROLE_COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(description)
    .bind(permissions.map(ScopeSet::to_strings))
    .fetch_optional(tx.conn())
    .await?;
    match row {
        Some(row) => Ok(role_from_row(row)),
        None => Err(built_in_or_missing(tx, id).await),
    }
}

/// Deletes a custom role and its assignments. Built-in roles: conflict.
pub async fn delete_role(tx: &mut TenantTx, id: RoleId) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query("DELETE FROM roles WHERE tenant_id = $1 AND id = $2 AND NOT built_in")
        .bind(tenant.uuid())
        .bind(id.uuid())
        .execute(tx.conn())
        .await?;
    if done.rows_affected() == 0 {
        return Err(built_in_or_missing(tx, id).await);
    }
    Ok(())
}

async fn built_in_or_missing(tx: &mut TenantTx, id: RoleId) -> StoreError {
    match get_role(tx, id).await {
        Ok(role) if role.built_in => StoreError::Conflict {
            constraint: "built-in roles cannot be changed".into(),
        },
        Ok(_) => StoreError::NotFound,
        Err(err) => err,
    }
}

/// One principal holding one role.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assignment {
    /// Id.
    pub id: RoleAssignmentId,
    /// The role.
    pub role_id: RoleId,
    /// Its name.
    pub role_name: String,
    /// Who holds it.
    pub principal: Principal,
    /// Who assigned it (audit id).
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

type AssignmentRow = (
    uuid::Uuid,
    uuid::Uuid,
    String,
    Option<uuid::Uuid>,
    Option<uuid::Uuid>,
    String,
    DateTime<Utc>,
);

const ASSIGNMENT_SELECT: &str = "SELECT a.id, a.role_id, r.name, a.user_id, a.agent_id, \
    a.created_by, a.created_at FROM role_assignments a \
    JOIN roles r ON r.tenant_id = a.tenant_id AND r.id = a.role_id";

fn assignment_from_row(
    (id, role_id, role_name, user, agent, created_by, created_at): AssignmentRow,
) -> Result<Assignment, StoreError> {
    let principal = match (user, agent) {
        (Some(user), None) => Principal::User(UserId::from_uuid(user)),
        (None, Some(agent)) => Principal::Agent(AgentId::from_uuid(agent)),
        _ => {
            return Err(StoreError::UnsafeConfiguration(
                "role assignment without exactly one principal".into(),
            ))
        }
    };
    Ok(Assignment {
        id: RoleAssignmentId::from_uuid(id),
        role_id: RoleId::from_uuid(role_id),
        role_name,
        principal,
        created_by,
        created_at,
    })
}

fn principal_columns(principal: Principal) -> (Option<uuid::Uuid>, Option<uuid::Uuid>) {
    match principal {
        Principal::User(user) => (Some(user.uuid()), None),
        Principal::Agent(agent) => (None, Some(agent.uuid())),
    }
}

/// Gives `principal` the role. A role or principal of another tenant is
/// [`StoreError::NotFound`]: the composite foreign keys refuse the row.
pub async fn assign(
    tx: &mut TenantTx,
    role: RoleId,
    principal: Principal,
) -> Result<Assignment, StoreError> {
    let tenant = tx.tenant_id();
    let id = RoleAssignmentId::new();
    let (user, agent) = principal_columns(principal);
    let created_by = tx.actor().audit_id();
    sqlx::query(
        "INSERT INTO role_assignments (tenant_id, id, role_id, user_id, agent_id, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(role.uuid())
    .bind(user)
    .bind(agent)
    .bind(created_by)
    .execute(tx.conn())
    .await?;
    get_assignment(tx, id).await
}

/// One assignment; another tenant's id is [`StoreError::NotFound`].
pub async fn get_assignment(
    tx: &mut TenantTx,
    id: RoleAssignmentId,
) -> Result<Assignment, StoreError> {
    let tenant = tx.tenant_id();
    let row: AssignmentRow = sqlx::query_as(&format!(
        "{ASSIGNMENT_SELECT} WHERE a.tenant_id = $1 AND a.id = $2"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_one(tx.conn())
    .await?;
    assignment_from_row(row)
}

/// A page of assignments in id order, optionally of one principal or one role.
pub async fn list_assignments(
    tx: &mut TenantTx,
    principal: Option<Principal>,
    role: Option<RoleId>,
    after: Option<RoleAssignmentId>,
    limit: u32,
) -> Result<Vec<Assignment>, StoreError> {
    let tenant = tx.tenant_id();
    let (user, agent) = principal.map(principal_columns).unwrap_or((None, None));
    let rows: Vec<AssignmentRow> = sqlx::query_as(&format!(
        "{ASSIGNMENT_SELECT} WHERE a.tenant_id = $1 \
         AND ($2::uuid IS NULL OR a.user_id = $2) AND ($3::uuid IS NULL OR a.agent_id = $3) \
         AND ($4::uuid IS NULL OR a.role_id = $4) AND ($5::uuid IS NULL OR a.id > $5) \
         ORDER BY a.id LIMIT $6"
    ))
    .bind(tenant.uuid())
    .bind(user)
    .bind(agent)
    .bind(role.map(|r| r.uuid()))
    .bind(after.map(|a| a.uuid()))
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    rows.into_iter().map(assignment_from_row).collect()
}

/// Removes an assignment and returns what it was.
pub async fn unassign(tx: &mut TenantTx, id: RoleAssignmentId) -> Result<Assignment, StoreError> {
    let assignment = get_assignment(tx, id).await?;
    let tenant = tx.tenant_id();
    sqlx::query("DELETE FROM role_assignments WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(id.uuid())
        .execute(tx.conn())
        .await?;
    Ok(assignment)
}

/// The principal's status, and one of its roles (all `None` when it holds none).
type HeldRoleRow = (String, Option<bool>, Option<String>, Option<Vec<String>>);

/// What a principal's roles allow; `None` if the principal does not exist in the tenant or is
/// disabled (its credentials must then be refused, not merely narrowed).
pub async fn permissions_of(
    tx: &mut TenantTx,
    principal: Principal,
) -> Result<Option<ScopeSet>, StoreError> {
    let tenant = tx.tenant_id();
    let (table, column, id) = match principal {
        Principal::User(user) => ("users", "user_id", user.uuid()),
        Principal::Agent(agent) => ("agents", "agent_id", agent.uuid()),
    };
    // Table and column names are the constants above, never input.
    let rows: Vec<HeldRoleRow> = sqlx::query_as(&format!(
        "SELECT p.status, r.built_in, r.name, r.permissions FROM {table} p \
             LEFT JOIN role_assignments a ON a.tenant_id = p.tenant_id AND a.{column} = p.id \
             LEFT JOIN roles r ON r.tenant_id = a.tenant_id AND r.id = a.role_id \
             WHERE p.tenant_id = $1 AND p.id = $2"
    ))
    .bind(tenant.uuid())
    .bind(id)
    .fetch_all(tx.conn())
    .await?;
    if rows.is_empty() || rows.iter().any(|(status, ..)| status != "active") {
        return Ok(None);
    }
    let mut held = ScopeSet::default();
    for (_, built_in, name, stored) in rows {
        if let (Some(built_in), Some(name), Some(stored)) = (built_in, name, stored) {
            held = held.union(&role_permissions(built_in, &name, &stored));
        }
    }
    Ok(Some(held))
}

/// The agent a key belongs to, if any. Another tenant's key is [`StoreError::NotFound`].
pub async fn key_agent(tx: &mut TenantTx, key: ApiKeyId) -> Result<Option<AgentId>, StoreError> {
    let tenant = tx.tenant_id();
    let agent: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT agent_id FROM api_keys WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.uuid())
            .bind(key.uuid())
            .fetch_one(tx.conn())
            .await?;
    Ok(agent.map(AgentId::from_uuid))
}

/// Channel on which a change to a tenant's roles, role assignments or principals' status is
/// announced (payload: the tenant's uuid), so every process drops that tenant's cached role
/// ceilings at once instead of when they expire. Delivered at commit, like key changes.
pub const CEILING_CHANGES_CHANNEL: &str = "bulkhead_ceilings";

/// Announces, at commit, that the transaction's tenant's role ceilings changed.
pub async fn notify_ceiling_change(tx: &mut TenantTx) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    tx.notify(CEILING_CHANGES_CHANNEL, tenant.uuid().to_string())
        .await
}

impl crate::Store {
    /// A listener subscribed to [`CEILING_CHANGES_CHANNEL`], for cache invalidation.
    pub async fn listen_ceiling_changes(&self) -> Result<sqlx::postgres::PgListener, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(self.pool()).await?;
        listener.listen(CEILING_CHANGES_CHANNEL).await?;
        Ok(listener)
    }
}
