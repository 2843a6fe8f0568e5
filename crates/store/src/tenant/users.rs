//! A tenant's human users.

use bulkhead_core::{ScopeSet, UserId};
use chrono::{DateTime, Utc};

use crate::{StoreError, TenantTx};

/// Whether a user may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// May sign in.
    Active,
    /// May not; existing sessions were ended when it was disabled.
    Disabled,
}

/// A user as stored. `Debug` leaves the password hash out.
#[derive(Clone)]
pub struct UserRecord {
    /// Id.
    pub id: UserId,
    /// Lowercased email, unique in the tenant.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Status.
    pub status: UserStatus,
    /// What the user may do (`None`: the stored set names a scope this binary does not know, so
    /// the user gets nothing).
    pub scopes: Option<ScopeSet>,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

type Row = (
    uuid::Uuid,
    String,
    String,
    String,
    Vec<String>,
    DateTime<Utc>,
);

fn from_row((id, email, password_hash, status, scopes, created_at): Row) -> UserRecord {
    UserRecord {
        id: UserId::from_uuid(id),
        email,
        password_hash,
        status: if status == "active" {
            UserStatus::Active
        } else {
            UserStatus::Disabled
        },
        scopes: ScopeSet::parse_all(&scopes).ok(),
        created_at,
    }
}

const COLUMNS: &str = "id, email, password_hash, status, scopes, created_at";

/// Creates a user. `email` must already be normalised (trimmed, lowercased); a second user with
/// the same email in the tenant is a conflict.
pub async fn create(
    tx: &mut TenantTx,
    email: &str,
    password_hash: &str,
    scopes: &ScopeSet,
) -> Result<UserRecord, StoreError> {
    let tenant = tx.tenant_id();
    let row: Row = sqlx::query_as(&format!(
        "INSERT INTO users (tenant_id, id, email, password_hash, scopes) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(UserId::new().uuid())
    .bind(email)
    .bind(password_hash)
    .bind(scopes.to_strings())
    .fetch_one(tx.conn())
    .await?;
    Ok(from_row(row))
}

/// The user with this (normalised) email, if any.
pub async fn by_email(tx: &mut TenantTx, email: &str) -> Result<Option<UserRecord>, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND email = $2"
    ))
    .bind(tenant.uuid())
    .bind(email)
    .fetch_optional(tx.conn())
    .await?;
    Ok(row.map(from_row))
}

/// One user; another tenant's id is [`StoreError::NotFound`].
pub async fn get(tx: &mut TenantTx, id: UserId) -> Result<UserRecord, StoreError> {
    let tenant = tx.tenant_id();
    let row: Row = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_one(tx.conn())
    .await?;
    Ok(from_row(row))
}

/// Sets a user's status.
pub async fn set_status(
    tx: &mut TenantTx,
    id: UserId,
    status: UserStatus,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let text = match status {
        UserStatus::Active => "active",
        UserStatus::Disabled => "disabled",
    };
    let done = sqlx::query(
        "UPDATE users SET status = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(text)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// A page of users in id order, after `after`.
pub async fn list(
    tx: &mut TenantTx,
    after: Option<UserId>,
    limit: u32,
) -> Result<Vec<UserRecord>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 \
         AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant.uuid())
    .bind(after.map(|u| u.uuid()))
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}
