//! `POST /operator/v1/tenant-imports`: a tenant's archive (`service::portability`), uploaded as
//! the request body and imported as it arrives (`service::tenant_import`): all or nothing.
//!
//! An archive is larger than any JSON body and takes longer than a request may, so this route is
//! served outside the router's body cap and request timeout (`super::router`). What bounds it
//! instead: the body must keep arriving (no pause longer than the request timeout,
//! `--http-request-timeout-secs`, and no slower than 64 KiB/s on average after that long, else
//! 408 and nothing is kept), every entry the reader holds
//! in memory is capped by the archive reader, one import runs at a time in a process (another is
//! 409: each holds an owner connection for its length), and the route needs `tenants:write`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::{Extension, Json};
use bulkhead_store::StoreError;
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::json;

use super::pace::Floor;
use super::OperatorState;
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::service::operators::OperatorContext;
use crate::service::portability::RowsRefused;
use crate::service::tenant_import::{self, ImportFailed, ImportPlace};

/// The query of `POST /operator/v1/tenant-imports`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportQuery {
    /// `shared` (default) or `schema`.
    #[serde(default)]
    tier: Option<String>,
    /// Default: the archive's.
    #[serde(default)]
    region: Option<String>,
}

pub(super) async fn import(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let tier = query.tier.as_deref().unwrap_or("shared");
    if !matches!(tier, "shared" | "schema") {
        return Err(ApiError::Invalid(
            "tier: shared or schema; a dedicated database is never named through this API \
             (`bulkhead tenant import --tier dedicated --database-url …` with the server stopped)"
                .into(),
        ));
    }
    if let Some(region) = &query.region {
        if region.len() > 64 || !state.owner().serves_region(region) {
            return Err(ApiError::Invalid(
                "region: one this server is configured with".into(),
            ));
        }
    }
    let tar = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-tar"));
    if !tar {
        return Err(ApiError::UnsupportedMediaType);
    }
    let Some(permit) = state.import_permit() else {
        return Err(ApiError::Conflict(
            "another import runs in this server: retry when it has ended".into(),
        ));
    };
    let stall = state.app().config().connections.request_timeout;
    let (owner, app, actor) = (
        state.owner().clone(),
        state.app().clone(),
        ctx.actor.clone(),
    );
    let (tier, region) = (tier.to_owned(), query.region);
    // Its own task, which the request only waits for: a client that goes away (after its last
    // byte, or a connection's idle timer) drops the handler, never the import half-way, so it
    // always ends committed or abandoned, with its closing event in the operator log. A client
    // gone mid-body ends the stream, and with it the import (abandoned).
    let work = state.spawn_transfer(async move {
        let _running = permit;
        let place = ImportPlace {
            tier: &tier,
            region: region.as_deref(),
            dedicated: None,
            master: None,
        };
        let input = tokio_util::io::StreamReader::new(paced(body, stall));
        let source = json!({ "via": "operator-api", "tier": tier });
        let result = tenant_import::import(&owner, input, place, &actor, source).await;
        if let Ok((_, tenant)) = &result {
            // A lookup of the slug before the import may have cached its absence.
            app.directory().forget(tenant.id, Some(&tenant.slug)).await;
        }
        result
    });
    let (checked, tenant) = work
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("the import task failed: {e}")))?
        .map_err(|failed| refusal(failed, stall))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "tenant": tenant, "tables": checked.manifest.tables })),
    ))
}

/// The body's bytes, failing with `TimedOut` when none arrives for `stall`, or when the time
/// spent waiting on the client passes the transfer floor's allowance (`super::pace`; the
/// import's own work between chunks is not counted).
fn paced(
    body: Body,
    stall: Duration,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin + 'static {
    // The shortest wait for a chunk: a chunk already in the socket needs a poll or two of the
    // body to arrive, so a wait of (nearly) nothing would fail a client that has kept up.
    const SHORTEST_WAIT: Duration = Duration::from_secs(1);
    let floor = Floor::new(stall);
    let stream = body.into_data_stream();
    Box::pin(futures::stream::unfold(
        Some((stream, 0u64, Duration::ZERO)),
        move |state| async move {
            let (mut stream, received, waited) = state?;
            let left = floor.allowance(received).saturating_sub(waited);
            let wait = stall.min(left.max(SHORTEST_WAIT));
            let asked = tokio::time::Instant::now();
            let next = tokio::time::timeout(wait, stream.next()).await;
            let waited = waited + asked.elapsed();
            let timed_out = |what: &str| {
                let err = std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_owned());
                Some((Err(err), None))
            };
            match next {
                Ok(Some(Ok(bytes))) => {
                    let received = received + bytes.len() as u64;
                    Some((Ok(bytes), Some((stream, received, waited))))
                }
                Ok(Some(Err(err))) => Some((Err(std::io::Error::other(err)), None)),
                Ok(None) => None,
                Err(_) if wait == stall => timed_out("the upload stalled"),
                Err(_) => timed_out("the upload is slower than 64 KiB/s"),
            }
        },
    ))
}

/// A failed import as an answer: rows the database refused and anything else the reader found
/// are the archive's fault (422, saying what); a tenant already here 409; a stalled or
/// trickling upload 408; the database not answering 503.
fn refusal(failed: ImportFailed, stall: Duration) -> ApiError {
    let err = failed.0;
    if let Some(refused) = err.downcast_ref::<RowsRefused>() {
        let detail = format!("the archive does not import: {refused}");
        // The database not answering is the deployment's, as everywhere (the one mapping).
        return match err
            .downcast::<RowsRefused>()
            .map(|r| ApiError::from(r.source))
        {
            Ok(ApiError::Unavailable) => ApiError::Unavailable,
            _ => ApiError::Invalid(detail.into()),
        };
    }
    if let Some(store) = err.downcast_ref::<StoreError>() {
        return match store {
            StoreError::WrongRegion(region) => ApiError::Invalid(
                format!(
                    "the archive's region {region:?} is not one this server is configured \
                     with: name one with `region`"
                )
                .into(),
            ),
            StoreError::Conflict { .. } => {
                ApiError::Conflict("a tenant with the archive's id or slug exists here".into())
            }
            StoreError::Invalid(what) => ApiError::Invalid(what.clone()),
            // The registry row of a crafted tenant.json the database refuses (a date out of
            // its range, a value too long): the archive's fault.
            StoreError::Database(sqlx::Error::Database(db))
                if db
                    .code()
                    .is_some_and(|code| code.starts_with("22") || code.starts_with("23")) =>
            {
                ApiError::Invalid("the archive's tenant.json is refused by the database".into())
            }
            _ => match err.downcast::<StoreError>() {
                Ok(store) => store.into(),
                Err(other) => ApiError::Internal(other),
            },
        };
    }
    if super::pace::timed_out(&err) {
        return ApiError::RequestTimeout(stall.as_secs());
    }
    ApiError::Invalid(format!("the archive does not check out: {err:#}").into())
}
