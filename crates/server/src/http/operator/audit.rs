//! `/operator/v1/audit/…`: the operator log's signed checkpoints and its verifiable export, in
//! the tenants' format (`bulkhead audit verify` reads both). Mirrors `/v1/audit/…`.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_audit::export::ExportLine;
use bulkhead_audit::SignedCheckpoint;
use futures::StreamExt;

use super::OperatorState;
use crate::http::error::ApiError;
use crate::service::operators::{export_lines, EXPORT_PAGE};

/// How long one export may stream before it is ended (the verifier reports the short export).
const EXPORT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// `GET /operator/v1/audit/checkpoints/latest`: the latest signed checkpoint; 404 before the
/// first.
pub(super) async fn latest_checkpoint(
    State(state): State<OperatorState>,
) -> Result<Json<SignedCheckpoint>, ApiError> {
    state
        .owner()
        .latest_operator_checkpoint()
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `POST /operator/v1/audit/checkpoints`: a checkpoint of the whole log, new (201) if the log
/// grew since the latest one (or the log key changed), else the latest (200). Signing records no
/// event of its own: an event per checkpoint would make every checkpoint stale at once.
pub(super) async fn checkpoint_now(
    State(state): State<OperatorState>,
) -> Result<(StatusCode, Json<SignedCheckpoint>), ApiError> {
    let app = state.app();
    let (signed, created) = state
        .owner()
        .operator_checkpoint(app.audit().key(), app.clock().now())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(signed)))
}

/// `GET /operator/v1/audit/export`: a checkpoint of the whole log (the latest, or a new one if
/// the log grew), then every leaf it covers, as NDJSON. Leaves and bodies are append-only, so
/// pages read one after the other agree with the checkpoint; a failure mid-stream ends the
/// response early, which the verifier reports (the size does not match the checkpoint).
pub(super) async fn export(State(state): State<OperatorState>) -> Result<Response, ApiError> {
    let app = state.app();
    let (checkpoint, _) = state
        .owner()
        .operator_checkpoint(app.audit().key(), app.clock().now())
        .await?;
    let size = checkpoint.checkpoint.tree_size;
    let mut head = serde_json::to_vec(&ExportLine::Checkpoint { checkpoint })
        .map_err(|e| ApiError::Internal(e.into()))?;
    head.push(b'\n');
    let owner = state.owner().clone();
    let deadline = tokio::time::Instant::now() + EXPORT_DEADLINE;
    let pages = futures::stream::unfold(Some(0u64), move |from| {
        let owner = owner.clone();
        async move {
            let from = from?;
            if from >= size {
                return None;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("operator audit export ran past its deadline; ended early");
                return Some((Err(std::io::Error::other("export deadline passed")), None));
            }
            let to = (from + EXPORT_PAGE).min(size);
            match export_lines(&owner, from, to).await {
                Ok(bytes) => Some((Ok(Bytes::from(bytes)), Some(to))),
                Err(err) => {
                    tracing::error!(error = %err, "operator audit export failed mid-stream");
                    Some((Err(std::io::Error::other("export failed")), None))
                }
            }
        }
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
        .chain(pages);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}
