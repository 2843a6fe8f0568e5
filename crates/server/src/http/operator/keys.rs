//! `/operator/v1/operator-keys` and the operator log: operator keys made, listed and revoked
//! through the same service as `bulkhead operator key …`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bulkhead_core::{OperatorKeyId, OperatorScopes};
use bulkhead_store::operators::{OperatorEvent, OperatorKeyRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::OperatorState;
use crate::http::error::ApiError;
use crate::service::operators::{self, OperatorContext, OperatorKeySpec};

/// `POST /operator/v1/operator-keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateKey {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// A new operator key, shown this once.
#[derive(Debug, Serialize)]
pub(super) struct CreatedKey {
    operator_key: OperatorKeyRecord,
    key: String,
}

pub(super) async fn create(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    crate::http::extract::Json(body): crate::http::extract::Json<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let scopes = OperatorScopes::parse_all(&body.scopes).map_err(|_| {
        ApiError::Invalid(
            "scopes: one or more of tenants:read, tenants:write, tenants:delete, operators:manage"
                .into(),
        )
    })?;
    if body
        .expires_at
        .is_some_and(|at| at <= state.app().clock().now())
    {
        return Err(ApiError::Invalid("expires_at is in the past".into()));
    }
    let spec = OperatorKeySpec {
        name: body.name,
        scopes,
        expires_at: body.expires_at,
    };
    let (record, key) = operators::mint(
        state.owner(),
        state.app().verifier().peppers(),
        &spec,
        &ctx.actor,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            operator_key: record,
            key: key.expose_secret().to_owned(),
        }),
    ))
}

/// Every operator key.
#[derive(Debug, Serialize)]
pub(super) struct KeyList {
    data: Vec<OperatorKeyRecord>,
}

pub(super) async fn list(State(state): State<OperatorState>) -> Result<Json<KeyList>, ApiError> {
    Ok(Json(KeyList {
        data: state.owner().operator_keys().await?,
    }))
}

pub(super) async fn revoke(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Path(id): Path<String>,
) -> Result<Json<OperatorKeyRecord>, ApiError> {
    let id = OperatorKeyId::parse(&id)
        .map_err(|_| ApiError::BadRequest("malformed operator key id".into()))?;
    let now = state.app().clock().now();
    Ok(Json(
        operators::revoke(state.owner(), id, &ctx.actor, now).await?,
    ))
}

/// `GET /operator/v1/audit-events?limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    #[serde(default)]
    limit: Option<u32>,
}

/// The latest events of the operator log, newest first.
#[derive(Debug, Serialize)]
pub(super) struct EventList {
    data: Vec<OperatorEvent>,
}

pub(super) async fn events(
    State(state): State<OperatorState>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventList>, ApiError> {
    let limit = crate::http::routes::kit::page::page_limit(query.limit)?;
    Ok(Json(EventList {
        data: state.owner().operator_events(i64::from(limit)).await?,
    }))
}
