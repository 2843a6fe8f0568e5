//! Deleting tenants (issue 19): schedule, cancel and purge, each an audited operator action, and
//! the background purge of deletions whose grace period has ended. The steps and their
//! guarantees are in `bulkhead_store::lifecycle::deletion`; docs/operator-api.md says why.

use std::time::Duration;

use bulkhead_audit::LogSigningKey;
use bulkhead_core::{Clock, TenantId};
use bulkhead_store::lifecycle::deletion::{
    PurgeOutcome, TenantDeletion, DEFAULT_GRACE_SECONDS, MAX_GRACE_SECONDS,
};
use bulkhead_store::placement::registry::Tenant;
use bulkhead_store::{Store, StoreError};
use serde_json::json;
use tokio::sync::watch;

use crate::service::operators;

/// The actor the background purge names in the operator log.
pub const BACKGROUND_ACTOR: &str = "system:tenant-purge";

/// Why a deletion request was refused. Mapped to HTTP once (`http/error/`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeletionError {
    /// No such tenant, or no deletion of it (404).
    #[error("not found")]
    NotFound,
    /// The request is invalid (422).
    #[error("{0}")]
    Invalid(String),
    /// Refused in the tenant's current state (409): a move in progress, a purge begun, none
    /// scheduled, a purge running elsewhere. The text says which.
    #[error("{0}")]
    Conflict(String),
    /// A location of the tenant does not answer (503): the purge is retried; the tenant stays
    /// suspended.
    #[error("a location of the tenant is unreachable; the purge will be retried: {0}")]
    Unreachable(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for DeletionError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => DeletionError::NotFound,
            StoreError::Conflict { constraint } => DeletionError::Conflict(constraint),
            StoreError::Invalid(what) => DeletionError::Invalid(what.into_owned()),
            StoreError::WrongRegion(region) => {
                DeletionError::Unreachable(format!("region {region} is not served here"))
            }
            StoreError::Database(db) if unreachable(&db) => {
                DeletionError::Unreachable("a database does not answer".into())
            }
            other => DeletionError::Store(other),
        }
    }
}

/// Errors that say the database is not there (rather than that the request is wrong).
fn unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // connection exceptions, insufficient resources, operator intervention (shutdown,
            // connections not allowed), no such database.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "3D000"
                // "database is not currently accepting connections"
                || code == "55000"
        }),
        _ => false,
    }
}

/// Schedules `tenant`'s deletion (`grace_seconds`: default 7 days, at most 90), suspending it at
/// once. Returns the record and whether it was made now (a second schedule returns the first).
/// Audited as `tenant.delete.schedule`.
pub async fn schedule(
    owner: &Store,
    tenant: &Tenant,
    grace_seconds: Option<i64>,
    operator: &str,
) -> Result<(TenantDeletion, bool), DeletionError> {
    let grace = grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(DeletionError::Invalid(format!(
            "grace_period: 0 to {MAX_GRACE_SECONDS} seconds (90 days); default {DEFAULT_GRACE_SECONDS}"
        )));
    }
    operators::audited(
        owner,
        operator,
        "tenant.delete.schedule",
        Some(tenant.id.to_string()),
        json!({ "grace_period": grace }),
        |(d, _): &(TenantDeletion, bool)| d.tenant_id.to_string(),
        async {
            owner
                .schedule_tenant_deletion(tenant, grace, operator)
                .await
                .map_err(DeletionError::from)
        },
    )
    .await
}

/// Cancels `tenant`'s scheduled deletion, restoring its previous status. Audited as
/// `tenant.delete.cancel`.
pub async fn cancel(
    owner: &Store,
    tenant: TenantId,
    operator: &str,
) -> Result<TenantDeletion, DeletionError> {
    operators::audited(
        owner,
        operator,
        "tenant.delete.cancel",
        Some(tenant.to_string()),
        json!({}),
        |d: &TenantDeletion| d.tenant_id.to_string(),
        async {
            owner
                .cancel_tenant_deletion(tenant, operator)
                .await
                .map_err(DeletionError::from)
        },
    )
    .await
}

/// Runs (or resumes) the purge of `tenant` now. Audited as `tenant.purge` (started, then
/// success or failure); the receipt is its own event, `tenant.erasure_receipt`, written with the
/// purge's last step.
pub async fn purge(
    owner: &Store,
    key: &LogSigningKey,
    clock: &Clock,
    tenant: TenantId,
    operator: &str,
) -> Result<PurgeOutcome, DeletionError> {
    operators::audited(
        owner,
        operator,
        "tenant.purge",
        Some(tenant.to_string()),
        json!({}),
        |o: &PurgeOutcome| o.deletion.tenant_id.to_string(),
        async {
            owner
                .purge_tenant(tenant, key, clock.now(), operator)
                .await
                .map_err(DeletionError::from)
        },
    )
    .await
}

/// One pass of the background purge: every deletion whose grace period has ended, and every
/// purge begun and not finished. A tenant that fails (an unreachable database) is logged and
/// retried on the next pass; it stays suspended. Returns the tenants purged.
pub async fn purge_due(owner: &Store, key: &LogSigningKey, clock: &Clock) -> Vec<TenantId> {
    let due = match owner.due_tenant_deletions(clock.now()).await {
        Ok(due) => due,
        Err(err) => {
            tracing::warn!(error = %err, "cannot list the tenant deletions due; will retry");
            return Vec::new();
        }
    };
    let mut purged = Vec::new();
    for tenant in due {
        match purge(owner, key, clock, tenant, BACKGROUND_ACTOR).await {
            Ok(_) => purged.push(tenant),
            Err(DeletionError::Conflict(why)) => {
                tracing::info!(tenant_id = %tenant, reason = %why, "tenant purge deferred")
            }
            Err(err) => {
                tracing::warn!(tenant_id = %tenant, error = %err, "tenant purge failed; will retry")
            }
        }
    }
    purged
}

/// Runs [`purge_due`] every `every` until `stopped` turns true (in `bulkhead serve`).
pub async fn run_purges(
    owner: Store,
    key: LogSigningKey,
    clock: Clock,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        purge_due(&owner, &key, &clock).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
}
