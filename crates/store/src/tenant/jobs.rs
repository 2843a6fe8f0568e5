//! Background jobs. Every job belongs to one tenant and runs inside that tenant's context.

use bulkhead_core::{JobId, TenantId};
use chrono::{DateTime, Utc};

use crate::{Store, StoreError, TenantTx};

/// Queues a job for the transaction's tenant; it becomes visible to workers on commit.
pub async fn enqueue(
    tx: &mut TenantTx,
    kind: &str,
    payload: &serde_json::Value,
    run_at: Option<DateTime<Utc>>,
) -> Result<JobId, StoreError> {
    let id = JobId::new();
    let tenant = tx.tenant_id();
    sqlx::query(
        "INSERT INTO jobs (tenant_id, id, kind, payload, run_at) \
         VALUES ($1, $2, $3, $4, COALESCE($5, now()))",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(kind)
    .bind(payload)
    .bind(run_at)
    .execute(tx.conn())
    .await?;
    Ok(id)
}

/// The registry's verdict on a claimed job's tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimVerdict {
    /// The tenant is active: run the job in its context.
    Run,
    /// The tenant is not in the registry; the job was marked refused.
    TenantMissing,
    /// The tenant is suspended; the job was marked refused.
    TenantSuspended,
}

/// A job handed to this worker.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Job id.
    pub id: JobId,
    /// What to do.
    pub kind: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// Limit on attempts.
    pub max_attempts: i32,
    /// Whether to run it.
    pub verdict: ClaimVerdict,
}

impl Store {
    /// Claims up to `limit` due jobs for `lease_seconds` (`FOR UPDATE SKIP LOCKED`). Jobs whose
    /// tenant is missing or suspended come back with a refusing verdict and are already marked
    /// `refused` in the database.
    pub async fn claim_jobs(
        &self,
        limit: i32,
        lease_seconds: i32,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        // Every location has its own queue (jobs live with their tenant's rows); one claim per
        // location per pass, until the batch is full.
        let mut rows: Vec<(uuid::Uuid, uuid::Uuid, String, i32, i32, String)> = Vec::new();
        for (i, (pool, schema)) in self.router().all_locations().await?.into_iter().enumerate() {
            // The first call always runs, so hostile arguments are refused by the function.
            let want = if i == 0 {
                limit
            } else {
                limit - rows.len() as i32
            };
            if i > 0 && want <= 0 {
                break;
            }
            rows.extend(
                sqlx::query_as::<_, (uuid::Uuid, uuid::Uuid, String, i32, i32, String)>(&format!(
                    "SELECT job_tenant_id, job_id, job_kind, job_attempts, job_max_attempts, \
                     verdict FROM \"{schema}\".claim_jobs($1, $2)"
                ))
                .bind(want)
                .bind(lease_seconds)
                .fetch_all(&pool)
                .await
                .or_else(|err| crate::placement::location::skip_unreachable(i, err))?,
            );
        }
        Ok(rows
            .into_iter()
            .map(
                |(tenant, id, kind, attempts, max_attempts, verdict)| ClaimedJob {
                    tenant_id: TenantId::from_uuid(tenant),
                    id: JobId::from_uuid(id),
                    kind,
                    attempts,
                    max_attempts,
                    verdict: match verdict.as_str() {
                        "run" => ClaimVerdict::Run,
                        "tenant_missing" => ClaimVerdict::TenantMissing,
                        _ => ClaimVerdict::TenantSuspended,
                    },
                },
            )
            .collect())
    }
}

/// The payload of a job of the transaction's tenant.
pub async fn payload(tx: &mut TenantTx, id: JobId) -> Result<serde_json::Value, StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query_scalar("SELECT payload FROM jobs WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(id.uuid())
        .fetch_optional(tx.conn())
        .await?
        .ok_or(StoreError::NotFound)
}

/// Marks a job done, in the same transaction as its work.
pub async fn mark_succeeded(tx: &mut TenantTx, id: JobId) -> Result<(), StoreError> {
    set_outcome(tx, id, "succeeded", None, None).await
}

/// Records a failed attempt: back to `queued` at `retry_at`, or `failed` for good when `None`.
pub async fn mark_failed(
    tx: &mut TenantTx,
    id: JobId,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let status = if retry_at.is_some() {
        "queued"
    } else {
        "failed"
    };
    set_outcome(tx, id, status, Some(error), retry_at).await
}

async fn set_outcome(
    tx: &mut TenantTx,
    id: JobId,
    status: &str,
    error: Option<&str>,
    retry_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query(
        "UPDATE jobs SET status = $3, last_error = COALESCE($4, last_error), \
         run_at = COALESCE($5, run_at), locked_until = NULL, updated_at = now() \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(status)
    .bind(error)
    .bind(retry_at)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Status and last error of a job of the transaction's tenant.
pub async fn status(tx: &mut TenantTx, id: JobId) -> Result<(String, Option<String>), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query_as("SELECT status, last_error FROM jobs WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(id.uuid())
        .fetch_optional(tx.conn())
        .await?
        .ok_or(StoreError::NotFound)
}
