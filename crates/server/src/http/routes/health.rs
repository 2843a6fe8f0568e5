//! Liveness and readiness: unauthenticated, they reveal nothing about any tenant. Metrics are
//! served by the same handler on the operator's own listener only (`crate::http::app::metrics_router`).

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use crate::http::apidoc::OpDoc;
use crate::http::authz::{RouteAccess, RouteTable};
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The routes: public, as the module doc says.
pub fn routes() -> RouteTable {
    RouteTable::tagged("meta")
        .get("/healthz", RouteAccess::Public, healthz)
        .doc(OpDoc::ok::<Status>(200, "Up").summary("`GET /healthz`: the process is up."))
        .get("/readyz", RouteAccess::Public, readyz)
        .doc(
            OpDoc::ok::<Status>(200, "Ready")
                .summary(
                    "`GET /readyz`: the database answers and its migrations are \
                    current.",
                )
                .answer(
                    503,
                    "The database is unreachable or its migrations are not current",
                ),
        )
}

/// The handler of `GET /healthz` (see [`routes`]).
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// `{"status": …}` of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    status: &'static str,
}

/// The handler of `GET /readyz` (see [`routes`]).
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
