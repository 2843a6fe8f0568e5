//! `/operator/v1/tenants/{tenant}/deletion`: scheduling, reading, cancelling and running a
//! tenant's deletion (`service::deletion`), and what the operator API's document says of them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bulkhead_core::TenantId;
use bulkhead_store::lifecycle::deletion::TenantDeletion;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::OperatorState;
use crate::http::error::ApiError;
use crate::service::deletion::{self, DeletionError};
use crate::service::operators::OperatorContext;
use crate::service::tenants;

/// `POST /operator/v1/tenants/{tenant}/deletion`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleDeletion {
    /// Seconds until the purge may run: 0 to 7776000 (90 days); default 604800 (7 days).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 7776000)]
    grace_period: Option<i64>,
}

/// The tenant named by `text` (slug or `tnt_…`), while its registry row exists.
async fn live_tenant(
    state: &OperatorState,
    text: &str,
) -> Result<bulkhead_store::placement::registry::Tenant, ApiError> {
    tenants::find(state.owner(), text)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The tenant id `text` names: the live tenant's, or, for a `tnt_…` id whose tenant is purged,
/// the id itself (its deletion record outlives it as a tombstone).
async fn tenant_id(state: &OperatorState, text: &str) -> Result<TenantId, ApiError> {
    if let Some(tenant) = tenants::find(state.owner(), text).await? {
        return Ok(tenant.id);
    }
    match text.starts_with("tnt_").then(|| TenantId::parse(text)) {
        Some(Ok(id)) => Ok(id),
        _ => Err(ApiError::NotFound),
    }
}

/// This process's cached registry answer for the tenant goes, so its status change holds on
/// the next request here (other processes: within the registry cache's lifetime, 2 s by
/// default, as for a suspension).
pub(super) async fn forget(
    state: &OperatorState,
    tenant: &bulkhead_store::placement::registry::Tenant,
) {
    state
        .app()
        .directory()
        .forget(tenant.id, Some(&tenant.slug))
        .await;
}

pub(super) async fn schedule(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Path(tenant): Path<String>,
    body: bytes::Bytes,
) -> Result<(StatusCode, Json<TenantDeletion>), ApiError> {
    // The body is optional: an empty one means the default grace period.
    let body: ScheduleDeletion = if body.is_empty() {
        ScheduleDeletion::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::Invalid(e.to_string().into()))?
    };
    let found = live_tenant(&state, &tenant).await?;
    let scheduled = deletion::schedule(state.owner(), &found, body.grace_period, &ctx.actor).await;
    forget(&state, &found).await;
    let (record, created) = scheduled?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(record)))
}

pub(super) async fn get(
    State(state): State<OperatorState>,
    Path(tenant): Path<String>,
) -> Result<Json<TenantDeletion>, ApiError> {
    let id = tenant_id(&state, &tenant).await?;
    let record = state
        .owner()
        .tenant_deletion(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(record))
}

pub(super) async fn cancel(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Path(tenant): Path<String>,
) -> Result<Json<TenantDeletion>, ApiError> {
    let found = live_tenant(&state, &tenant).await?;
    let cancelled = deletion::cancel(state.owner(), found.id, &ctx.actor).await;
    forget(&state, &found).await;
    Ok(Json(cancelled?))
}

/// What `POST …/deletion/purge` answers.
#[derive(Debug, Serialize)]
pub(super) struct Purged {
    deletion: TenantDeletion,
    /// The receipt this run wrote; `null` when an earlier run had finished the purge.
    receipt: Option<serde_json::Value>,
}

pub(super) async fn purge(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Path(tenant): Path<String>,
) -> Result<Json<Purged>, ApiError> {
    let id = tenant_id(&state, &tenant).await?;
    let slug = tenants::find(state.owner(), &tenant).await?.map(|t| t.slug);
    let app = state.app();
    let outcome = deletion::purge(
        state.owner(),
        app.audit().key(),
        app.clock(),
        id,
        &ctx.actor,
    )
    .await;
    app.directory().forget(id, slug.as_ref()).await;
    let outcome = outcome?;
    Ok(Json(Purged {
        deletion: outcome.deletion,
        receipt: outcome.receipt,
    }))
}

/// Where a deletion is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // a type for the document only
pub(super) enum DeletionStateName {
    /// Suspended; the grace period runs; cancellable.
    Scheduled,
    /// The purge has begun; not cancellable.
    Purging,
    /// Purged: this record is the tombstone.
    Purged,
}

/// A tenant's deletion record.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TenantDeletionDoc {
    /// `tnt_…`.
    pub tenant_id: String,
    /// Where the deletion is.
    pub state: DeletionStateName,
    /// The status a cancel restores.
    pub previous_status: super::openapi::StatusName,
    /// Seconds between scheduling and the purge.
    pub grace_period: i64,
    /// When it was scheduled.
    pub scheduled_at: chrono::DateTime<chrono::Utc>,
    /// When the background purge may begin.
    pub purge_after: chrono::DateTime<chrono::Utc>,
    /// Who scheduled it.
    pub scheduled_by: String,
    /// When the purge began.
    pub purge_started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the purge finished.
    pub purged_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Rows removed, per location, then per table.
    #[schema(value_type = Object)]
    pub removed: serde_json::Value,
    /// Purge runs begun.
    pub attempts: i32,
    /// Why the last run stopped, if it failed.
    pub last_error: Option<String>,
}

/// The answer of a purge.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PurgedDoc {
    /// The record, `purged`.
    pub deletion: TenantDeletionDoc,
    /// The erasure receipt written to the operator log (`tenant.erasure_receipt`): tenant id,
    /// times, per-table row counts, the tenant log's last signed checkpoint. `null` when an
    /// earlier run had finished the purge (the receipt is in the operator log).
    #[schema(value_type = Option<Object>)]
    pub receipt: Option<serde_json::Value>,
}

/// The deletion service's refusals as HTTP (beside the routes that are their only callers).
impl From<DeletionError> for ApiError {
    fn from(err: DeletionError) -> Self {
        match err {
            DeletionError::NotFound => ApiError::NotFound,
            DeletionError::Invalid(detail) => ApiError::Invalid(detail.into()),
            DeletionError::Conflict(detail) => ApiError::Conflict(detail),
            DeletionError::Unreachable(detail) => {
                tracing::warn!(%detail, "tenant purge deferred: a location is unreachable");
                ApiError::Unavailable
            }
            DeletionError::Store(err) => err.into(),
        }
    }
}
