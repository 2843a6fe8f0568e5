//! Liveness and readiness: unauthenticated, they reveal nothing about any tenant. Metrics are
//! served by the same handler on the operator's own listener only (`crate::http::app::metrics_router`).

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use crate::http::authz::{RouteAccess, RouteTable};
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// This module's operations in the OpenAPI document, which [`super::openapi`] merges.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(healthz, readyz))]
pub struct Api;

/// The routes: public, as the module doc says.
pub fn routes() -> RouteTable {
    RouteTable::new()
        .get("/healthz", RouteAccess::Public, healthz)
        .get("/readyz", RouteAccess::Public, readyz)
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "Up", body = Status)),
)]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// `{"status": …}` of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    status: &'static str,
}

/// `GET /readyz`: the database answers and its migrations are current.
#[utoipa::path(
    get, path = "/readyz", tag = "meta",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "The database is unreachable or its migrations are not current"),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    match state.store().ready().await {
        Ok(true) => Ok(Json(Status { status: "ready" })),
        Ok(false) => {
            tracing::warn!("not ready: migrations are not current");
            Err(ApiError::Unavailable)
        }
        Err(err) => {
            tracing::warn!(error = %err, "not ready: database unreachable");
            Err(ApiError::Unavailable)
        }
    }
}

/// `GET /metrics` on the metrics listener: Prometheus text format. No per-tenant labels (ids
/// would leak and explode cardinality).
pub async fn metrics() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::http::telemetry::metrics_handle().render(),
    )
}
