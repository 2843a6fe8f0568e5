//! Deleting a tenant with verifiable erasure: schedule (suspend at once, grace period), cancel,
//! and the purge ([`purge`]), recorded in `bulkhead.tenant_deletions` (migration 0036).
//!
//! # Invariants
//! - A tenant with a deletion row is suspended: scheduling suspends it before its row commits,
//!   cancelling restores the status before its row goes, and the purge suspends it again first
//!   should anything have reactivated it. Its credentials are refused throughout.
//! - The row's `state` only moves forward (`scheduled` → `purging` → `purged`), except that a
//!   `scheduled` row may be cancelled (deleted). Once `purging`, cancelling is refused.
//! - A tenant in the middle of a move cannot be scheduled (409 naming the move), and a tenant
//!   with a deletion cannot start a move ([`crate::lifecycle::moves`] checks).

use bulkhead_core::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::placement::registry::{Tenant, TenantStatus};
use crate::text_enum::text_enum;
use crate::{Store, StoreError};

mod purge;

pub use purge::PurgeOutcome;

text_enum!(
    /// Where a tenant's deletion is.
    DeletionState {
        /** Suspended; the grace period runs; cancellable. */ Scheduled = "scheduled",
        /** The purge has begun (resumable); no longer cancellable. */ Purging = "purging",
        /** Every row is gone; this record is the tombstone. */ Purged = "purged"
    }
);

/// The longest grace period an operator may set: 90 days.
pub const MAX_GRACE_SECONDS: i64 = 90 * 24 * 3600;
/// The grace period when none is given: 7 days.
pub const DEFAULT_GRACE_SECONDS: i64 = 7 * 24 * 3600;

/// A tenant's deletion record.
#[derive(Debug, Clone, Serialize)]
pub struct TenantDeletion {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Where the deletion is.
    pub state: DeletionState,
    /// The status a cancel restores.
    pub previous_status: TenantStatus,
    /// Seconds between scheduling and the purge.
    pub grace_period: i64,
    /// When it was scheduled.
    pub scheduled_at: DateTime<Utc>,
    /// When the background purge may begin.
    pub purge_after: DateTime<Utc>,
    /// Who scheduled it (`opkey_…` or `cli:<account>`).
    pub scheduled_by: String,
    /// When the purge began.
    pub purge_started_at: Option<DateTime<Utc>>,
    /// When the purge finished.
    pub purged_at: Option<DateTime<Utc>>,
    /// Rows removed so far, per location, then per table.
    pub removed: serde_json::Value,
    /// Purge runs begun (more than one: it was resumed).
    pub attempts: i32,
    /// Why the last run stopped, if it failed.
    pub last_error: Option<String>,
}

const COLUMNS: &str = "tenant_id, state, previous_status, grace_seconds, scheduled_at, \
    purge_after, scheduled_by, purge_started_at, purged_at, removed, attempts, last_error";

type Row = (
    uuid::Uuid,
    String,
    String,
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    serde_json::Value,
    i32,
    Option<String>,
);

fn from_row(row: Row) -> Result<TenantDeletion, StoreError> {
    let corrupt = || StoreError::UnsafeConfiguration("tenant_deletions row is inconsistent".into());
    Ok(TenantDeletion {
        tenant_id: TenantId::from_uuid(row.0),
        state: DeletionState::parse(&row.1).ok_or_else(corrupt)?,
        previous_status: TenantStatus::parse(&row.2).ok_or_else(corrupt)?,
        grace_period: row.3,
        scheduled_at: row.4,
        purge_after: row.5,
        scheduled_by: row.6,
        purge_started_at: row.7,
        purged_at: row.8,
        removed: row.9,
        attempts: row.10,
        last_error: row.11,
    })
}

pub(crate) async fn deletion_row(
    conn: &mut PgConnection,
    tenant: TenantId,
    lock: bool,
) -> Result<Option<TenantDeletion>, StoreError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM bulkhead.tenant_deletions WHERE tenant_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind(tenant.uuid())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(from_row).transpose()
}

/// Takes the deletion lock of `tenant` for the rest of `conn`'s transaction: schedules,
/// cancels, operator status changes and purge starts of one tenant run one at a time.
pub(crate) async fn lock_deletion(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bulkhead.tenant_deletion'), hashtext($1))")
        .bind(tenant.uuid().to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The key of a tenant's purge lock (`$1`: the tenant's id), held exclusively by a purge run
/// (for the session) and shared by an export (for its transaction), so neither starts during
/// the other.
pub(crate) const PURGE_LOCK_KEY: &str = "hashtext('bulkhead.tenant_purge'), hashtext($1)";

/// The move recorded for `tenant`, described for a 409, if one is in progress.
pub(crate) async fn move_in_progress(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Option<String>, StoreError> {
    let row: Option<(Option<uuid::Uuid>, String, String, String)> = sqlx::query_as(
        "SELECT move_id, to_tier, to_region, step FROM bulkhead.tenant_moves WHERE tenant_id = $1",
    )
    .bind(tenant.uuid())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(id, tier, region, step)| {
        let id = id.map_or_else(|| "(no id)".to_owned(), |id| id.to_string());
        format!(
            "the tenant is being moved (move {id} to tier {tier} in region {region}, at step \
             {step}); finish or abandon the move first"
        )
    }))
}

impl Store {
    /// The deletion record of `tenant` (also after the purge: the tombstone). Owner role.
    pub async fn tenant_deletion(
        &self,
        tenant: TenantId,
    ) -> Result<Option<TenantDeletion>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        deletion_row(&mut conn, tenant, false).await
    }

    /// An operator's status change under the deletion lock (review L2): activation is refused
    /// (a [`StoreError::Conflict`]) while a deletion exists, and a suspension during the grace
    /// period becomes the status a cancel restores, so cancelling never lifts an operator's
    /// suspension. Holding the lock across the check and the change keeps a schedule that
    /// commits in between from leaving a served tenant with a deletion scheduled.
    pub async fn set_tenant_status_unless_deleting(
        &self,
        tenant: TenantId,
        status: TenantStatus,
        operator: &str,
    ) -> Result<Tenant, StoreError> {
        let mut guard = self.pool().begin().await?;
        lock_deletion(&mut guard, tenant).await?;
        let deletion = deletion_row(&mut guard, tenant, false).await?;
        if status == TenantStatus::Active && deletion.is_some() {
            return Err(StoreError::Conflict {
                constraint: "a deletion of this tenant is scheduled; cancel it to reactivate \
                             the tenant"
                    .into(),
            });
        }
        let changed = self.set_tenant_status_by(tenant, status, operator).await?;
        if status == TenantStatus::Suspended && deletion.is_some() {
            sqlx::query(
                "UPDATE bulkhead.tenant_deletions SET previous_status = 'suspended' \
                 WHERE tenant_id = $1 AND state = 'scheduled'",
            )
            .bind(tenant.uuid())
            .execute(&mut *guard)
            .await?;
        }
        guard.commit().await?;
        Ok(changed)
    }

    /// Schedules the deletion of `tenant` after `grace_seconds`, suspending it at once (every
    /// copy of its status, with a `tenant.suspend` event in its own log naming `operator`).
    /// Returns the record and whether it was made now: a second schedule returns the existing
    /// one unchanged. A tenant being moved is a [`StoreError::Conflict`] naming the move.
    pub async fn schedule_tenant_deletion(
        &self,
        tenant: &Tenant,
        grace_seconds: i64,
        operator: &str,
    ) -> Result<(TenantDeletion, bool), StoreError> {
        if !(0..=MAX_GRACE_SECONDS).contains(&grace_seconds) {
            return Err(StoreError::Invalid(
                format!("grace_period: 0 to {MAX_GRACE_SECONDS} seconds").into(),
            ));
        }
        let mut tx = self.pool().begin().await?;
        // Serializes schedules, cancels and purge starts of this tenant.
        lock_deletion(&mut tx, tenant.id).await?;
        if let Some(existing) = deletion_row(&mut tx, tenant.id, false).await? {
            return Ok((existing, false));
        }
        if let Some(moving) = move_in_progress(&mut tx, tenant.id).await? {
            return Err(StoreError::Conflict { constraint: moving });
        }
        let row: Row = sqlx::query_as(&format!(
            "INSERT INTO bulkhead.tenant_deletions \
             (tenant_id, previous_status, grace_seconds, purge_after, scheduled_by) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $3), $4) RETURNING {COLUMNS}"
        ))
        .bind(tenant.id.uuid())
        .bind(tenant.status.as_str())
        .bind(grace_seconds)
        .bind(operator.chars().take(200).collect::<String>())
        .fetch_one(&mut *tx)
        .await?;
        // Suspended before the schedule commits: a schedule never exists over a served tenant.
        if tenant.status != TenantStatus::Suspended {
            self.set_tenant_status_by(tenant.id, TenantStatus::Suspended, operator)
                .await?;
        }
        tx.commit().await?;
        Ok((from_row(row)?, true))
    }

    /// Cancels the scheduled deletion of `tenant` and restores the status it had before. Refused
    /// ([`StoreError::Conflict`]) once the purge has begun; [`StoreError::NotFound`] without one.
    pub async fn cancel_tenant_deletion(
        &self,
        tenant: TenantId,
        operator: &str,
    ) -> Result<TenantDeletion, StoreError> {
        let mut tx = self.pool().begin().await?;
        lock_deletion(&mut tx, tenant).await?;
        let current = deletion_row(&mut tx, tenant, true)
            .await?
            .ok_or(StoreError::NotFound)?;
        if current.state != DeletionState::Scheduled {
            return Err(StoreError::Conflict {
                constraint: format!(
                    "the purge has begun (state {}); a deletion can be cancelled only while scheduled",
                    current.state
                ),
            });
        }
        sqlx::query("DELETE FROM bulkhead.tenant_deletions WHERE tenant_id = $1")
            .bind(tenant.uuid())
            .execute(&mut *tx)
            .await?;
        // Restored before the row goes: should this fail, the deletion is still scheduled.
        if current.previous_status == TenantStatus::Active {
            self.set_tenant_status_by(tenant, TenantStatus::Active, operator)
                .await?;
        }
        tx.commit().await?;
        Ok(current)
    }

    /// Tenants whose purge should run now: scheduled ones past their grace period, and purges
    /// begun and not finished (a crash, an unreachable database).
    pub async fn due_tenant_deletions(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<TenantId>, StoreError> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT tenant_id FROM bulkhead.tenant_deletions \
             WHERE state = 'purging' OR (state = 'scheduled' AND purge_after <= $1) \
             ORDER BY purge_after LIMIT 100",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        Ok(ids.into_iter().map(TenantId::from_uuid).collect())
    }
}
