//! The messages of `/v1/webhooks`: a tenant's own events published, a test message, the
//! deliveries of a message and their attempt log, and queueing failed deliveries again. The
//! endpoints themselves are in the parent module.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bulkhead_core::id::{EndpointKind, MessageKind};
use bulkhead_core::{MessageId, TenantContext};
use bulkhead_store::tenant::webhooks::{self as store, Attempt, Delivery, Message, MessageSource};
use bulkhead_store::TenantTx;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{require_audit_read_for_message, valid_event_type, MAX_PAYLOAD_BYTES};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Tenant};
use crate::http::routes::kit::by_id::{ById, ByIdJson};
use crate::http::routes::kit::tx;
use crate::http::routes::kit::validate;
use crate::http::routes::kit::write::Tail;
use crate::http::state::AppState;

/// Body of `POST …/recover`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// Failed deliveries created at or after this time are queued again.
    since: DateTime<Utc>,
}

/// Body of `POST /v1/webhooks/messages`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishMessage {
    /// `^[a-z][a-z0-9_.-]{0,99}$`, outside the platform namespaces.
    #[schema(example = "invoice.paid")]
    event_type: String,
    /// Any JSON, at most 256 KiB serialized.
    #[schema(value_type = Object)]
    payload: Value,
}

/// Deliveries queued again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Requeued {
    /// How many.
    requeued: u64,
}

/// A message with its deliveries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// The message.
    message: Message,
    /// One per endpoint it was sent to.
    deliveries: Vec<Delivery>,
}

/// A message's attempt log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptList {
    /// Attempts, oldest first.
    data: Vec<Attempt>,
}

/// A queued message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Queued {
    /// The message id (its `webhook-id`).
    id: MessageId,
    /// Deliveries queued.
    deliveries: u64,
}

/// A message of the tenant (404 if missing or another tenant's), read for a caller that may see
/// it: one of the audit stream only with `audit:read`.
async fn readable_message(
    tx: &mut TenantTx,
    ctx: &TenantContext,
    id: MessageId,
) -> Result<Message, ApiError> {
    let message = store::get_message(tx, id).await?;
    require_audit_read_for_message(ctx, &message)?;
    Ok(message)
}

pub(super) async fn send_test(
    ById { state, tenant, id }: ById<EndpointKind>,
) -> Result<impl IntoResponse, ApiError> {
    let now = state.clock().now();
    let queued = tx::write(&state, &tenant.0, async |tx| {
        let payload = json!({ "endpoint_id": id });
        let source = MessageSource::Platform;
        let (message, deliveries) =
            store::publish(tx, "webhook.test", &payload, source, Some(id), now).await?;
        let tail = Tail::new().audit("webhook.test", id, json!({ "message_id": message }));
        Ok((
            Queued {
                id: message,
                deliveries,
            },
            tail,
        ))
    })
    .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(queued)))
}

pub(super) async fn recover(
    ByIdJson(ById { state, tenant, id }, body): ByIdJson<EndpointKind, Recover>,
) -> Result<axum::Json<Requeued>, ApiError> {
    let ctx = &tenant.0;
    let now = state.clock().now();
    let requeued = tx::write(&state, ctx, async |tx| {
        let requeued = store::recover(tx, id, body.since, now).await?;
        let meta = json!({ "since": body.since, "requeued": requeued });
        Ok((requeued, Tail::new().audit("webhook.recover", id, meta)))
    })
    .await?;
    Ok(axum::Json(Requeued { requeued }))
}

pub(super) async fn publish(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<PublishMessage>,
) -> Result<impl IntoResponse, ApiError> {
    let ctx = &tenant.0;
    if !valid_event_type(&body.event_type) {
        return Err(ApiError::Invalid(
            "event_type: 1 to 100 characters a-z, 0-9, `_`, `.`, `-`, starting with a letter"
                .into(),
        ));
    }
    // The one list of platform namespaces (`PLATFORM_EVENT_NAMESPACES`), which the store also
    // enforces on every message it writes.
    if store::is_platform_event_type(&body.event_type) {
        return Err(ApiError::Invalid(
            "event_type: that namespace is reserved for platform events".into(),
        ));
    }
    validate::refuse_nul("payload", &body.payload)?;
    let size = serde_json::to_vec(&body.payload)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(ApiError::Invalid(
            format!("payload is limited to {MAX_PAYLOAD_BYTES} bytes of JSON").into(),
        ));
    }
    let now = state.clock().now();
    let queued = tx::write(&state, ctx, async |tx| {
        let (event_type, source) = (&body.event_type, MessageSource::Tenant);
        let (id, deliveries) =
            store::publish(tx, event_type, &body.payload, source, None, now).await?;
        let meta = json!({ "event_type": event_type, "deliveries": deliveries });
        let tail = Tail::new().audit("webhook.message_publish", id, meta);
        Ok((Queued { id, deliveries }, tail))
    })
    .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(queued)))
}

pub(super) async fn fetch_message(
    ById { state, tenant, id }: ById<MessageKind>,
) -> Result<axum::Json<MessageView>, ApiError> {
    let ctx = &tenant.0;
    let view = tx::read(&state, ctx, async |tx| {
        let message = readable_message(tx, ctx, id).await?;
        let deliveries = store::deliveries_of(tx, id).await?;
        Ok(MessageView {
            message,
            deliveries,
        })
    })
    .await?;
    Ok(axum::Json(view))
}

pub(super) async fn attempts(
    ById { state, tenant, id }: ById<MessageKind>,
) -> Result<axum::Json<AttemptList>, ApiError> {
    let ctx = &tenant.0;
    let data = tx::read(&state, ctx, async |tx| {
        readable_message(tx, ctx, id).await?;
        Ok(store::attempts_of(tx, id).await?)
    })
    .await?;
    Ok(axum::Json(AttemptList { data }))
}

pub(super) async fn resend(
    ById { state, tenant, id }: ById<MessageKind>,
) -> Result<axum::Json<Requeued>, ApiError> {
    let ctx = &tenant.0;
    let now = state.clock().now();
    let requeued = tx::write(&state, ctx, async |tx| {
        readable_message(tx, ctx, id).await?;
        let requeued = store::resend(tx, id, now).await?;
        let meta = json!({ "requeued": requeued });
        Ok((requeued, Tail::new().audit("webhook.resend", id, meta)))
    })
    .await?;
    Ok(axum::Json(Requeued { requeued }))
}
