//! `GET /operator/v1/tenants/{tenant}/export`: the tenant's archive (`service::portability`),
//! streamed as it is read from the database.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

use super::pace::{Floor, FlooredWriter};
use super::tenants::find;
use super::OperatorState;
use crate::http::error::ApiError;
use crate::service::operators::{self, OperatorContext};
use crate::service::portability;

/// Bytes buffered between the archive writer and the response body.
const PIPE_BYTES: usize = 256 * 1024;

pub(super) async fn export(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let found = find(&state, &tenant).await?;
    let owner = state.owner().clone();
    let target = Some(found.id.to_string());
    // Committed before the first byte of the tenant's data leaves the process.
    operators::record(
        &owner,
        operators::event(
            &ctx.actor,
            "tenant.export",
            "started",
            target.clone(),
            json!({}),
        ),
    )
    .await?;
    let (writer, reader) = tokio::io::duplex(PIPE_BYTES);
    // A client that takes the archive slower than the transfer floor (`super::pace`) ends the
    // export, and with it the snapshot (and VACUUM) it holds; one that stops reading is ended
    // sooner by the snapshot's idle timeout.
    let mut writer = FlooredWriter::new(
        writer,
        Floor::new(state.app().config().connections.request_timeout),
    );
    let app = state.app().clone();
    let actor = ctx.actor.clone();
    let work = state.spawn_transfer(async move {
        let result = portability::export(
            &owner,
            app.audit().key(),
            found.id,
            app.clock().now(),
            &mut writer,
            &|_| {},
        )
        .await;
        let closing = match &result {
            Ok(manifest) => operators::event(
                &actor,
                "tenant.export",
                "success",
                target,
                json!({ "rows": manifest.tables.values().sum::<u64>() }),
            ),
            Err(err) => {
                tracing::error!(tenant_id = %found.id, error = %format!("{err:#}"), "tenant export failed mid-stream");
                let reason = if super::pace::timed_out(err) {
                    "the client read the export slower than 64 KiB/s"
                } else {
                    "the export failed mid-stream"
                };
                bulkhead_store::operators::NewOperatorEvent {
                    reason: Some(reason.into()),
                    ..operators::event(&actor, "tenant.export", "failure", target, json!({}))
                }
            }
        };
        let _ = operators::record(&owner, closing).await;
        result.is_ok()
    });
    // The body ends with an error (the client sees a broken transfer, never a short archive
    // that ends cleanly) when the export failed.
    let body = futures::stream::unfold(
        (reader, reader_buf(), Some(work)),
        |(mut reader, mut buf, work)| async move {
            let work = work?;
            match reader.read(&mut buf).await {
                Ok(0) => match work.await {
                    Ok(true) => None,
                    _ => Some((
                        Err(std::io::Error::other("the export failed")),
                        (reader, buf, None),
                    )),
                },
                Ok(n) => Some((
                    Ok(Bytes::copy_from_slice(&buf[..n])),
                    (reader, buf, Some(work)),
                )),
                Err(err) => Some((Err(err), (reader, buf, None))),
            }
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tenant-export.tar\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn reader_buf() -> Vec<u8> {
    vec![0u8; 64 * 1024]
}
