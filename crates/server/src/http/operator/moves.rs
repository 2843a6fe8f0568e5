//! `/operator/v1/tenants/{tenant}/move`: start (or resume) a tenant's move to another tier or
//! region, follow it, abandon it (`service::moves`; the move itself is
//! `bulkhead_store::lifecycle::moves`, as `bulkhead tenant move` runs it).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bulkhead_store::lifecycle::moves::{self, RecordedMove};
use bulkhead_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::OperatorState;
use crate::http::error::ApiError;
use crate::service::moves::MoveRun;
use crate::service::operators::{self, OperatorContext};
use crate::service::tenants;

/// `POST /operator/v1/tenants/{tenant}/move`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StartMove {
    /// `shared` or `schema` (`dedicated` is `bulkhead tenant move --to dedicated
    /// --database-url …`: a database is never named through this API).
    tier: String,
    /// Move to this region as well (its databases must be configured here); default: stay.
    #[serde(default)]
    region: Option<String>,
}

/// A tenant's move as far as this process and its record know it.
#[derive(Debug, Serialize)]
pub(super) struct MoveState {
    /// `tnt_…`.
    tenant_id: String,
    /// Whether a run started by this process is going.
    running: bool,
    /// The latest run started by this process, if any.
    run: Option<MoveRun>,
    /// The move recorded for the tenant (`null`: none in progress: finished, abandoned or never
    /// begun).
    recorded: Option<RecordedMove>,
}

async fn state_of(
    state: &OperatorState,
    tenant: bulkhead_core::TenantId,
) -> Result<MoveState, ApiError> {
    let run = state.moves().get(tenant);
    let recorded = moves::recorded_move(state.owner(), tenant).await?;
    Ok(MoveState {
        tenant_id: tenant.to_string(),
        running: run.as_ref().is_some_and(MoveRun::running),
        run,
        recorded,
    })
}

pub(super) async fn start(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Path(tenant): Path<String>,
    crate::http::extract::Json(body): crate::http::extract::Json<StartMove>,
) -> Result<(StatusCode, Json<MoveState>), ApiError> {
    if body.tier == "dedicated" {
        return Err(ApiError::Invalid(
            "tier: shared or schema; a dedicated database is never named through this API \
             (`bulkhead tenant move --to dedicated --database-url …`)"
                .into(),
        ));
    }
    if !matches!(body.tier.as_str(), "shared" | "schema") {
        return Err(ApiError::Invalid("tier: shared or schema".into()));
    }
    if let Some(region) = &body.region {
        // Refused before anything is audited or begun: a region this process cannot reach.
        if region.len() > 64 || !state.owner().serves_region(region) {
            return Err(ApiError::Invalid(
                "region: one this server is configured with".into(),
            ));
        }
    }
    let found = super::tenants::find(&state, &tenant).await?;
    let region = body.region.clone().unwrap_or_else(|| found.region.clone());
    let placement = tenants::placement(
        state.owner(),
        &body.tier,
        None,
        &found.slug,
        Some(found.id),
        &region,
        None,
        &ctx.actor,
    )
    .await?;
    // When the run ends, this process's cached answer for the tenant (its place) goes, so its
    // requests here find the new location at once (others within the cache's 2 s).
    let app = state.app().clone();
    let (id, slug) = (found.id, found.slug.clone());
    let forget = async move { app.directory().forget(id, Some(&slug)).await };
    state
        .moves()
        .start(
            state.owner(),
            found.id,
            placement,
            body.region,
            &ctx.actor,
            forget,
        )
        .await
        .map_err(refused)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(state_of(&state, found.id).await?),
    ))
}

pub(super) async fn get(
    State(state): State<OperatorState>,
    Path(tenant): Path<String>,
) -> Result<Json<MoveState>, ApiError> {
    let found = super::tenants::find(&state, &tenant).await?;
    let current = state_of(&state, found.id).await?;
    if current.run.is_none() && current.recorded.is_none() {
        return Err(ApiError::NotFound);
    }
    Ok(Json(current))
}

pub(super) async fn abandon(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Path(tenant): Path<String>,
) -> Result<Json<MoveState>, ApiError> {
    let found = super::tenants::find(&state, &tenant).await?;
    let running_here = state.moves().get(found.id).is_some_and(|run| run.running());
    operators::audited(
        state.owner(),
        &ctx.actor,
        "tenant.move.abandon",
        Some(found.id.to_string()),
        json!({}),
        |_: &()| found.id.to_string(),
        async {
            // Refused in the log as a run elsewhere is (the store's lock).
            if running_here {
                return Err(StoreError::Conflict {
                    constraint: "a run of this tenant's move is in progress here: wait for it \
                                 to stop"
                        .into(),
                });
            }
            moves::abandon_move(state.owner(), found.id).await
        },
    )
    .await
    .map_err(refused)?;
    super::deletion::forget(&state, &found).await;
    Ok(Json(state_of(&state, found.id).await?))
}

/// A move's refusals as HTTP: a state that forbids it (another move, a deletion, the same
/// location, a move that has switched) is a 409, not the 422 of a malformed request.
fn refused(err: StoreError) -> ApiError {
    match err {
        StoreError::Invalid(detail) => ApiError::Conflict(detail.into_owned()),
        other => other.into(),
    }
}

/// A tenant's move, for the document.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // a type for the document only
pub(super) struct MoveStateDoc {
    /// `tnt_…`.
    tenant_id: String,
    /// Whether a run started by this process is going.
    running: bool,
    /// The latest run started by this process: `started_at`, `finished_at`, `step`, `table`,
    /// `report` (a finished move's: rows and checksums per table, frozen and total ms),
    /// `error`.
    #[schema(value_type = Option<Object>)]
    run: Option<serde_json::Value>,
    /// The move recorded for the tenant: `move_id`, `to_tier`, `to_region`, `step` (`null`:
    /// none in progress).
    #[schema(value_type = Option<Object>)]
    recorded: Option<serde_json::Value>,
}
