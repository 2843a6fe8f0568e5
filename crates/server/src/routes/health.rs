//! Liveness, readiness and metrics. Unauthenticated; they reveal nothing about any tenant.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::authz::{RouteAccess, RouteTable};
use crate::error::ApiError;
use crate::state::AppState;

/// The routes: public, as the module doc says.
pub fn routes() -> RouteTable {
    RouteTable::new()
        .get("/healthz", RouteAccess::Public, healthz)
        .get("/readyz", RouteAccess::Public, readyz)
        .get("/metrics", RouteAccess::Public, metrics)
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers and its migrations are current.
pub async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    match state.store().ready().await {
        Ok(true) => Ok(Json(json!({ "status": "ready" }))),
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

/// `GET /metrics`: Prometheus text format. No per-tenant labels (ids would leak and explode
/// cardinality).
pub async fn metrics() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics_handle().render(),
    )
}
