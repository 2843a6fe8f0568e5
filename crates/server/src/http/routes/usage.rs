//! `GET /v1/usage`: the tenant's usage and limit of every quota (docs/quotas.md). Permission:
//! `billing:read`, the permission reserved for the plan's business: quotas come with the plan,
//! and admins and viewers hold it while developers and agents (who meet a limit in the
//! `quota-exceeded` problem itself, which names kind, limit and usage) do not.

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::Requires;
use crate::http::authz::RouteTable;
use axum::extract::State;
use bulkhead_core::Scope;
use bulkhead_store::tenant::quotas::{self, Usage};
use bulkhead_store::Access;
use serde::Serialize;

use crate::http::error::ApiError;
use crate::http::extract::Tenant;
use crate::http::state::AppState;

/// The routes, mounted under `/v1` behind tenant resolution.
pub fn routes() -> RouteTable {
    RouteTable::tagged("usage")
        .get("/v1/usage", Requires(Scope::BillingRead), usage)
        .doc(OpDoc::ok::<UsageReport>(
            200,
            "Usage and limit of every quota of the calling tenant",
        ))
        // Tenant-wide counts, which no resource prefix bounds.
        .confine(crate::http::authz::TENANT_WIDE_READ)
}

/// The tenant's quotas.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// One entry per counted kind: rows, or bytes for `stored_bytes`.
    quotas: Vec<Usage>,
}

async fn usage(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<axum::Json<UsageReport>, ApiError> {
    let mut tx = state.store().begin(&tenant.0, Access::ReadOnly).await?;
    let quotas = quotas::usage(&mut tx).await?;
    tx.commit().await?;
    Ok(axum::Json(UsageReport { quotas }))
}
