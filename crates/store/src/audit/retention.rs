//! Retention of audit event bodies: purged after the tenant's retention period, through the
//! maintenance role; the leaves (and nodes and checkpoints) stay, so proofs and export
//! verification keep passing.
//!
//! Nobody is a member of `bulkhead_audit_maintenance` at rest. [`purge`], on the owner role
//! (which has `CREATEROLE`), grants the role to itself, `SET LOCAL ROLE`s to it, deletes, resets
//! and revokes, all in one transaction: the membership is never committed. The application role
//! cannot grant roles and cannot purge. Run it from an operator command (`bulkhead audit purge`).

use bulkhead_core::TenantContext;
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::audit::{self, log, Outcome};
use crate::{Access, Store, StoreError, TenantTx};

/// Retention when a tenant has not chosen one.
pub const DEFAULT_RETENTION_DAYS: i32 = 365;

/// The maintenance role (NOLOGIN; see migration 0007).
pub const MAINTENANCE_ROLE: &str = "bulkhead_audit_maintenance";

/// The tenant's retention, in days.
pub async fn retention_days(tx: &mut TenantTx) -> Result<i32, StoreError> {
    let tenant = tx.tenant_id();
    let days: Option<i32> =
        sqlx::query_scalar("SELECT audit_retention_days FROM tenant_settings WHERE tenant_id = $1")
            .bind(tenant.uuid())
            .fetch_optional(tx.conn())
            .await?;
    Ok(days.unwrap_or(DEFAULT_RETENTION_DAYS))
}

/// Sets the tenant's retention (1 to 36500 days; the database refuses anything else).
pub async fn set_retention_days(tx: &mut TenantTx, days: i32) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "INSERT INTO tenant_settings (tenant_id, audit_retention_days) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET audit_retention_days = EXCLUDED.audit_retention_days, \
         updated_at = now()",
    )
    .bind(tenant.uuid())
    .bind(days)
    .execute(tx.conn())
    .await?;
    audit::record(
        tx,
        "audit.retention_update",
        None,
        Outcome::Success,
        json!({ "retention_days": days }),
    )
    .await?;
    Ok(())
}

/// Deletes the bodies of the tenant's events older than its retention (relative to `now`) that
/// are already sequenced (an unsequenced event is never purged: its leaf would be lost). Records
/// an `audit.purge` event with the count and `through_leaf` (the highest leaf purged), and
/// sequences it in the same transaction. `owner` must be a store on the owner role.
pub async fn purge(
    owner: &Store,
    ctx: &TenantContext,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut tx = owner.begin(ctx, Access::ReadWrite).await?;
    let tenant = tx.tenant_id();
    let days = retention_days(&mut tx).await?;
    let cutoff = now - chrono::Duration::days(i64::from(days));
    // Role names cannot be bound; MAINTENANCE_ROLE is a constant. Granted and revoked inside this
    // transaction only.
    sqlx::query(&format!("GRANT {MAINTENANCE_ROLE} TO CURRENT_USER"))
        .execute(tx.conn())
        .await?;
    sqlx::query(&format!("SET LOCAL ROLE {MAINTENANCE_ROLE}"))
        .execute(tx.conn())
        .await?;
    let (deleted, through_leaf): (i64, Option<i64>) = sqlx::query_as(
        "WITH gone AS ( \
             DELETE FROM audit_events e WHERE e.tenant_id = $1 AND e.occurred_at < $2 \
             AND EXISTS (SELECT 1 FROM audit_leaves l \
                         WHERE l.tenant_id = e.tenant_id AND l.event_id = e.id) \
             RETURNING e.id) \
         SELECT count(*), max(l.leaf_index) FROM gone \
         JOIN audit_leaves l ON l.tenant_id = $1 AND l.event_id = gone.id",
    )
    .bind(tenant.uuid())
    .bind(cutoff)
    .fetch_one(tx.conn())
    .await?;
    let deleted = deleted as u64;
    sqlx::query("RESET ROLE").execute(tx.conn()).await?;
    sqlx::query(&format!("REVOKE {MAINTENANCE_ROLE} FROM CURRENT_USER"))
        .execute(tx.conn())
        .await?;
    let purge_event = audit::record(
        &mut tx,
        "audit.purge",
        None,
        Outcome::Success,
        json!({
            "purged": deleted,
            "through_leaf": through_leaf,
            "before": cutoff,
            "retention_days": days,
        }),
    )
    .await?;
    // The purge event joins the log now, so any checkpoint that covers a purged leaf also covers
    // the event that accounts for it (export verification checks that). Its id carries this
    // host's clock, which may lag the database's: the sweep is widened to include it.
    log::sequence(&mut tx, log::Sweep::Including(purge_event)).await?;
    tx.commit().await?;
    Ok(deleted)
}
