//! The protected resources a tenant registers (migration 0031): an identifier URL (the RFC 8707
//! `resource` value, the RFC 9728 `resource` of its metadata) and the scopes it accepts. Every
//! query runs in the tenant's transaction, under its row-level security.

use bulkhead_core::{OAuthResourceId, ScopeSet};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{StoreError, TenantTx};

/// A registered protected resource.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthResource {
    /// Its id.
    pub id: OAuthResourceId,
    /// The identifier URL clients name as `resource`; the `aud` of tokens for it.
    pub identifier: String,
    /// Shown on the consent page and in its metadata (`resource_name`).
    pub name: String,
    /// The scopes it accepts.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub scopes: Vec<String>,
    /// When registered.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

impl OAuthResource {
    /// The accepted scopes as a set; a name this binary does not know empties it (fail closed).
    pub fn scope_set(&self) -> ScopeSet {
        ScopeSet::parse_all(&self.scopes).unwrap_or_default()
    }
}

type Row = (
    Uuid,
    String,
    String,
    Vec<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

const COLUMNS: &str = "id, identifier, name, scopes, created_at, updated_at";

fn from_row((id, identifier, name, scopes, created, updated): Row) -> OAuthResource {
    OAuthResource {
        id: OAuthResourceId::from_uuid(id),
        identifier,
        name,
        scopes,
        created_at: created,
        updated_at: updated,
    }
}

/// How many resources the tenant has, under a lock of its list that holds to the end of the
/// transaction (so a cap checked with it holds; [`super::count_locked`]).
pub async fn count_locked(tx: &mut TenantTx) -> Result<i64, StoreError> {
    super::count_locked(tx, super::CappedList::OAuthResources).await
}

/// Registers a resource (a duplicate identifier is [`StoreError::Conflict`]).
pub async fn create(
    tx: &mut TenantTx,
    identifier: &str,
    name: &str,
    scopes: &ScopeSet,
    now: DateTime<Utc>,
) -> Result<OAuthResource, StoreError> {
    let tenant = tx.tenant_id();
    let row: Row = sqlx::query_as(&format!(
        "INSERT INTO oauth_resources (tenant_id, id, identifier, name, scopes, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(Uuid::now_v7())
    .bind(identifier)
    .bind(name)
    .bind(scopes.to_strings())
    .bind(now)
    .fetch_one(tx.conn())
    .await?;
    Ok(from_row(row))
}

/// One resource; another tenant's is [`StoreError::NotFound`] like a missing one.
pub async fn get(tx: &mut TenantTx, id: OAuthResourceId) -> Result<OAuthResource, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM oauth_resources WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_optional(tx.conn())
    .await?;
    row.map(from_row).ok_or(StoreError::NotFound)
}

/// The resource whose identifier is exactly `identifier`, if registered.
pub async fn by_identifier(
    tx: &mut TenantTx,
    identifier: &str,
) -> Result<Option<OAuthResource>, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM oauth_resources WHERE tenant_id = $1 AND identifier = $2"
    ))
    .bind(tenant.uuid())
    .bind(identifier)
    .fetch_optional(tx.conn())
    .await?;
    Ok(row.map(from_row))
}

/// Whether the tenant has registered any resource.
pub async fn any(tx: &mut TenantTx) -> Result<bool, StoreError> {
    let tenant = tx.tenant_id();
    let (found,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM oauth_resources WHERE tenant_id = $1)")
            .bind(tenant.uuid())
            .fetch_one(tx.conn())
            .await?;
    Ok(found)
}

/// A page of resources in id order, after `after`.
pub async fn list(
    tx: &mut TenantTx,
    after: Option<OAuthResourceId>,
    limit: u32,
) -> Result<Vec<OAuthResource>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM oauth_resources WHERE tenant_id = $1 \
         AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant.uuid())
    .bind(after.map(|a| a.uuid()))
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Changes a resource's name and/or scopes (the identifier is its identity: register another).
pub async fn update(
    tx: &mut TenantTx,
    id: OAuthResourceId,
    name: Option<&str>,
    scopes: Option<&ScopeSet>,
    now: DateTime<Utc>,
) -> Result<OAuthResource, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<Row> = sqlx::query_as(&format!(
        "UPDATE oauth_resources SET name = coalesce($3, name), scopes = coalesce($4, scopes), \
         updated_at = $5 WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(name)
    .bind(scopes.map(ScopeSet::to_strings))
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    row.map(from_row).ok_or(StoreError::NotFound)
}

/// Deletes a resource.
pub async fn delete(tx: &mut TenantTx, id: OAuthResourceId) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query("DELETE FROM oauth_resources WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(id.uuid())
        .execute(tx.conn())
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
