//! `/v1/webhooks`: a tenant's endpoints, the messages sent to them and the attempt log. Every
//! route needs `webhooks:manage`. The API process never makes an outbound request: URLs are
//! judged here by the egress policy (text, parsed value, IP literals) and again, with their DNS
//! answers, by the delivery worker before every attempt.

use crate::http::authz::RouteAccess::{self, Requires};
use crate::http::authz::RouteTable;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bulkhead_core::{Actor, ApiKeyId, EndpointId, MessageId, PrefixedId, Scope, TenantContext};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::webhooks::{
    self as store, Endpoint, EndpointPatch, MessageSource, NewEndpoint,
};
use bulkhead_store::Access;
use bulkhead_webhooks::headers::check_custom_headers;
use bulkhead_webhooks::Secret;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query, Tenant};
use crate::http::state::AppState;

/// Default page size of the endpoint list.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 200;
/// Most event types an endpoint subscribes to.
pub const MAX_EVENT_TYPES: usize = 100;
/// Largest message payload (serialized JSON).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Default validity of the previous secret after a rotation.
pub const DEFAULT_ROTATION_GRACE_SECONDS: i64 = 86_400;

/// The routes and who may call them.
pub fn routes() -> RouteTable {
    use crate::http::authz::{Confinement::Refused, TENANT_WIDE_READ};
    const MANAGE: RouteAccess = Requires(Scope::WebhooksManage);
    RouteTable::new()
        .get("/v1/webhooks/endpoints", MANAGE, list)
        .confine(TENANT_WIDE_READ)
        .post("/v1/webhooks/endpoints", MANAGE, create)
        .confine(Refused)
        .get("/v1/webhooks/endpoints/{id}", MANAGE, fetch)
        .confine(TENANT_WIDE_READ)
        .patch("/v1/webhooks/endpoints/{id}", MANAGE, update)
        .confine(Refused)
        .delete("/v1/webhooks/endpoints/{id}", MANAGE, remove)
        .confine(Refused)
        .post(
            "/v1/webhooks/endpoints/{id}/rotate-secret",
            MANAGE,
            rotate_secret,
        )
        .confine(Refused)
        .post("/v1/webhooks/endpoints/{id}/test", MANAGE, send_test)
        .confine(Refused)
        .post("/v1/webhooks/endpoints/{id}/recover", MANAGE, recover)
        .confine(Refused)
        .post("/v1/webhooks/messages", MANAGE, publish)
        .confine(Refused)
        .get("/v1/webhooks/messages/{id}", MANAGE, fetch_message)
        .confine(TENANT_WIDE_READ)
        .get("/v1/webhooks/messages/{id}/attempts", MANAGE, attempts)
        .confine(TENANT_WIDE_READ)
        .post("/v1/webhooks/messages/{id}/resend", MANAGE, resend)
        .confine(Refused)
}

/// Body of `POST /v1/webhooks/endpoints`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where deliveries go; judged by the egress policy (a refusal is 422 naming the rule).
    #[schema(example = "https://hooks.example.com/bulkhead")]
    url: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    rate_limit_per_second: Option<i32>,
    /// Extra request headers: name to string value.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    headers: Option<Map<String, Value>>,
}

/// Body of `PATCH /v1/webhooks/endpoints/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
    /// 1 to 10000; `null` removes the limit.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i32>)]
    rate_limit_per_second: Option<Option<i32>>,
    /// Extra request headers: name to string value.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    headers: Option<Map<String, Value>>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i32>>, D::Error> {
    Option::<i32>::deserialize(d).map(Some)
}

/// Query of the endpoint list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    #[param(value_type = Option<EndpointId>)]
    cursor: Option<String>,
}

/// A page of endpoints.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointPage {
    data: Vec<Endpoint>,
    next_cursor: Option<EndpointId>,
}

/// An endpoint with its secret: only in the answers of create and rotate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// `whsec_…`; shown once.
    secret: String,
}

/// Body of `POST …/rotate-secret`.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the old secret keeps signing (0 to 7 days; default 24 h).
    #[serde(default)]
    grace_seconds: Option<i64>,
}

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

fn parse<K: bulkhead_core::id::IdKind>(text: &str) -> Result<PrefixedId<K>, ApiError> {
    PrefixedId::<K>::parse(text).map_err(|e| ApiError::BadRequest(e.to_string().into()))
}

/// `^[a-z][a-z0-9_.-]{0,99}$`, the database's own rule.
pub fn valid_event_type(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 100
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

fn check_event_types(types: &[String]) -> Result<(), ApiError> {
    if types.len() > MAX_EVENT_TYPES || !types.iter().all(|t| valid_event_type(t)) {
        return Err(ApiError::Invalid(
            format!("event_types: at most {MAX_EVENT_TYPES} types of 1 to 100 characters a-z, 0-9, `_`, `.`, `-`, starting with a letter").into(),
        ));
    }
    Ok(())
}

fn check_description(text: &str) -> Result<(), ApiError> {
    if text.chars().count() > 500 || text.chars().any(char::is_control) {
        return Err(ApiError::Invalid(
            "description has at most 500 characters and no control characters".into(),
        ));
    }
    Ok(())
}

fn check_rate(rate: Option<i32>) -> Result<(), ApiError> {
    if rate.is_some_and(|r| !(1..=10_000).contains(&r)) {
        return Err(ApiError::Invalid(
            "rate_limit_per_second is between 1 and 10000".into(),
        ));
    }
    Ok(())
}

fn check_headers(headers: Map<String, Value>) -> Result<Value, ApiError> {
    check_custom_headers(&headers)
        .map_err(|e| ApiError::Invalid(format!("headers: {e}").into()))?;
    Ok(Value::Object(headers))
}

/// Whether a subscription list takes the audit stream.
fn streams_audit(types: &[String]) -> bool {
    types.iter().any(|t| t == store::AUDIT_STREAM_EVENT)
}

/// The audit stream carries every audit event of the tenant (actors, addresses, user agents), so
/// subscribing to it needs what reading the log needs: `audit:read` as well as `webhooks:manage`.
/// The same holds for anything else that would hand the stream to the caller: rotating a
/// streaming endpoint's secret (the new secret signs audit events a receiver trusts), and reading
/// or resending a stored `audit.event` message (its payload is an audit event). `what` names the
/// check in the audit event of a refusal.
fn require_audit_read(ctx: &TenantContext, what: &'static str) -> Result<(), ApiError> {
    if ctx.has_scope(Scope::AuditRead) {
        return Ok(());
    }
    crate::http::extract::audit_forbidden(ctx, Scope::AuditRead, what);
    Err(ApiError::MissingScope(Scope::AuditRead))
}

/// A stored message of the audit stream may be read or resent only with `audit:read`.
fn require_audit_read_for_message(
    ctx: &TenantContext,
    message: &store::Message,
) -> Result<(), ApiError> {
    if message.event_type == store::AUDIT_STREAM_EVENT {
        require_audit_read(ctx, "audit-stream-message")?;
    }
    Ok(())
}

/// The principals whose `audit:read` keeps an audit subscription flowing: the ones whose roles
/// bound the caller's credential (as in `ceilings.rs`), checked again at every fan-out.
fn audit_grantors(actor: &Actor) -> Vec<String> {
    match actor {
        Actor::ApiKey { key_id, .. } => vec![key_id.to_string()],
        Actor::Token {
            subject,
            client_id,
            derived_keys,
            ..
        } => {
            let mut out = vec![subject.clone()];
            if ApiKeyId::parse(client_id).is_ok() {
                out.push(client_id.clone());
            }
            // A token exchanged from another key's token derives its authority from that key
            // too: revoking it (or its principal losing audit:read) must stop the stream.
            // Unreachable today (endpoint routes refuse delegated credentials, see the route
            // table), kept so that a future rule admitting them cannot forget the chain.
            out.extend(derived_keys.iter().map(ToString::to_string));
            out.sort();
            out.dedup();
            out
        }
        other => vec![other.audit_id()],
    }
}

/// Judges a URL by the egress policy; a refusal is audited and answered 422 naming the rule.
async fn check_url(state: &AppState, ctx: &TenantContext, url: &str) -> Result<String, ApiError> {
    match state.config().webhook_egress.check_url(url) {
        Ok(checked) => Ok(checked.as_str().to_owned()),
        Err(refusal) => {
            let rule = refusal.to_string();
            let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
            audit::record(
                &mut tx,
                "webhook.blocked",
                None,
                Outcome::Blocked,
                json!({ "stage": "registration", "rule": rule }),
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(target: "bulkhead::audit", action = "webhook.blocked", tenant_id = %ctx.tenant_id(), rule = %rule, "endpoint URL refused");
            Err(ApiError::Invalid(format!("url: {rule}").into()))
        }
    }
}

/// Registers an endpoint; the `whsec_` secret is in the answer, once.
#[utoipa::path(
    post, path = "/v1/webhooks/endpoints", tag = "webhooks",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "The endpoint with its secret", body = EndpointWithSecret),
        (status = 422, description = "An invalid field, or a URL the egress policy refuses (the rule is named)"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateEndpoint>,
) -> Result<impl IntoResponse, ApiError> {
    let ctx = &tenant.0;
    check_description(&body.description)?;
    check_event_types(&body.event_types)?;
    let streams = streams_audit(&body.event_types);
    if streams {
        require_audit_read(ctx, "audit-stream-subscription")?;
    }
    check_rate(body.rate_limit_per_second)?;
    let headers = check_headers(body.headers.unwrap_or_default())?;
    let url = check_url(&state, ctx, &body.url).await?;
    let secret = Secret::generate();
    let new = NewEndpoint {
        url,
        description: body.description,
        event_types: body.event_types,
        rate_limit_per_second: body.rate_limit_per_second,
        headers,
        secret: secret.expose_bytes().to_vec(),
        enabled: body.enabled.unwrap_or(true),
    };
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let endpoint = store::create_endpoint(&mut tx, &new, state.master_key()).await?;
    if streams {
        store::set_audit_grantors(&mut tx, endpoint.id, &audit_grantors(ctx.actor())).await?;
    }
    audit::record(
        &mut tx,
        "webhook.endpoint_create",
        Some(&endpoint.id.to_string()),
        Outcome::Success,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(EndpointWithSecret {
            endpoint,
            secret: secret.expose_text(),
        }),
    ))
}

/// Lists the tenant's endpoints.
#[utoipa::path(
    get, path = "/v1/webhooks/endpoints", tag = "webhooks",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of endpoints", body = EndpointPage),
        (status = 422, description = "Limit outside 1 to 200"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<EndpointPage>, ApiError> {
    let ctx = &tenant.0;
    let limit = super::page_limit(query.limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let after = query
        .cursor
        .as_deref()
        .map(parse::<bulkhead_core::id::EndpointKind>)
        .transpose()?;
    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let rows = store::list_endpoints(&mut tx, after, limit + 1).await?;
    tx.commit().await?;
    let (data, next_cursor) = super::into_page(rows, limit, |e| e.id);
    Ok(axum::Json(EndpointPage { data, next_cursor }))
}

/// Fetches an endpoint (never its secret).
#[utoipa::path(
    get, path = "/v1/webhooks/endpoints/{id}", tag = "webhooks",
    params(("id" = EndpointId, Path, description = "The endpoint")),
    responses(
        (status = 200, description = "The endpoint", body = Endpoint),
        (status = 404, description = "No such endpoint (or another tenant's)"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn fetch(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Endpoint>, ApiError> {
    let ctx = &tenant.0;
    let id: EndpointId = parse(&id)?;
    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let endpoint = store::get_endpoint(&mut tx, id).await?;
    tx.commit().await?;
    Ok(axum::Json(endpoint))
}

/// Updates an endpoint; re-enabling clears its failure state.
#[utoipa::path(
    patch, path = "/v1/webhooks/endpoints/{id}", tag = "webhooks",
    params(("id" = EndpointId, Path, description = "The endpoint")),
    request_body = UpdateEndpoint,
    responses(
        (status = 200, description = "The endpoint", body = Endpoint),
        (status = 404, description = "No such endpoint (or another tenant's)"),
        (status = 422, description = "An invalid field, or a URL the egress policy refuses"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn update(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    Json(body): Json<UpdateEndpoint>,
) -> Result<axum::Json<Endpoint>, ApiError> {
    let ctx = &tenant.0;
    let id: EndpointId = parse(&id)?;
    if let Some(d) = &body.description {
        check_description(d)?;
    }
    if let Some(t) = &body.event_types {
        check_event_types(t)?;
    }
    check_rate(body.rate_limit_per_second.flatten())?;
    let headers = body.headers.map(check_headers).transpose()?;
    let url = match &body.url {
        Some(url) => Some(check_url(&state, ctx, url).await?),
        None => None,
    };
    let patch = EndpointPatch {
        url,
        description: body.description,
        event_types: body.event_types,
        enabled: body.enabled,
        rate_limit_per_second: body.rate_limit_per_second,
        headers,
    };
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let endpoint = store::update_endpoint(&mut tx, id, &patch).await?;
    // Judged on the endpoint as it will be (in the transaction, so a concurrent change cannot
    // slip between the check and the commit): whoever leaves it on the audit stream must hold
    // `audit:read`, and becomes the grantor the stream is checked against from now on. Changing
    // any field of a streaming endpoint (its URL above all) needs it too.
    if streams_audit(&endpoint.event_types) {
        require_audit_read(ctx, "audit-stream-subscription")?;
        store::set_audit_grantors(&mut tx, id, &audit_grantors(ctx.actor())).await?;
    }
    audit::record(
        &mut tx,
        "webhook.endpoint_update",
        Some(&id.to_string()),
        Outcome::Success,
        json!({ "enabled": body.enabled }),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(endpoint))
}

/// Deletes an endpoint.
#[utoipa::path(
    delete, path = "/v1/webhooks/endpoints/{id}", tag = "webhooks",
    params(("id" = EndpointId, Path, description = "The endpoint")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such endpoint (or another tenant's)"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn remove(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ctx = &tenant.0;
    let id: EndpointId = parse(&id)?;
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    store::delete_endpoint(&mut tx, id).await?;
    audit::record(
        &mut tx,
        "webhook.endpoint_delete",
        Some(&id.to_string()),
        Outcome::Success,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret (in the answer, once); the old one keeps signing for `grace_seconds`. The body is optional.
#[utoipa::path(
    post, path = "/v1/webhooks/endpoints/{id}/rotate-secret", tag = "webhooks",
    params(("id" = EndpointId, Path, description = "The endpoint")),
    request_body(content = Option<RotateSecret>, content_type = "application/json"),
    responses(
        (status = 200, description = "The endpoint with its new secret", body = EndpointWithSecret),
        (status = 404, description = "No such endpoint (or another tenant's)"),
        (status = 422, description = "Grace period out of range, or an invalid body"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn rotate_secret(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<EndpointWithSecret>, ApiError> {
    let ctx = &tenant.0;
    let id: EndpointId = parse(&id)?;
    // The body is optional: empty means the defaults.
    let body: RotateSecret = if body.iter().all(u8::is_ascii_whitespace) {
        RotateSecret::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::Invalid(format!("body: {e}").into()))?
    };
    let grace = body.grace_seconds.unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
    if !(0..=7 * 86_400).contains(&grace) {
        return Err(ApiError::Invalid(
            "grace_seconds is between 0 and 604800 (7 days)".into(),
        ));
    }
    let secret = Secret::generate();
    let until = state.clock().now() + chrono::Duration::seconds(grace);
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    // The new secret signs the audit stream a receiver trusts: taking it needs `audit:read`, like
    // subscribing does (checked before anything changes; another tenant's id is still a 404).
    let current = store::get_endpoint(&mut tx, id).await?;
    if streams_audit(&current.event_types) {
        require_audit_read(ctx, "audit-stream-secret")?;
    }
    store::rotate_secret(
        &mut tx,
        id,
        secret.expose_bytes(),
        until,
        state.master_key(),
    )
    .await?;
    let endpoint = store::get_endpoint(&mut tx, id).await?;
    audit::record(
        &mut tx,
        "webhook.secret_rotate",
        Some(&id.to_string()),
        Outcome::Success,
        json!({ "previous_valid_until": until }),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(EndpointWithSecret {
        endpoint,
        secret: secret.expose_text(),
    }))
}

/// A queued message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Queued {
    /// The message id (its `webhook-id`).
    id: MessageId,
    /// Deliveries queued.
    deliveries: u64,
}

/// Queues a `webhook.test` message to this endpoint.
#[utoipa::path(
    post, path = "/v1/webhooks/endpoints/{id}/test", tag = "webhooks",
    params(("id" = EndpointId, Path, description = "The endpoint")),
    responses(
        (status = 202, description = "Queued", body = Queued),
        (status = 404, description = "No such endpoint (or another tenant's)"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn send_test(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let ctx = &tenant.0;
    let id: EndpointId = parse(&id)?;
    let now = state.clock().now();
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let payload = json!({ "endpoint_id": id });
    let (message, deliveries) = store::publish(
        &mut tx,
        "webhook.test",
        &payload,
        MessageSource::Platform,
        Some(id),
        now,
    )
    .await?;
    audit::record(
        &mut tx,
        "webhook.test",
        Some(&id.to_string()),
        Outcome::Success,
        json!({ "message_id": message }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Queued {
            id: message,
            deliveries,
        }),
    ))
}

/// Queues again the failed deliveries created since a time.
#[utoipa::path(
    post, path = "/v1/webhooks/endpoints/{id}/recover", tag = "webhooks",
    params(("id" = EndpointId, Path, description = "The endpoint")),
    request_body = Recover,
    responses(
        (status = 200, description = "How many were queued", body = crate::http::routes::openapi::Requeued),
        (status = 404, description = "No such endpoint (or another tenant's)"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn recover(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    Json(body): Json<Recover>,
) -> Result<axum::Json<Value>, ApiError> {
    let ctx = &tenant.0;
    let id: EndpointId = parse(&id)?;
    let now = state.clock().now();
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let requeued = store::recover(&mut tx, id, body.since, now).await?;
    audit::record(
        &mut tx,
        "webhook.recover",
        Some(&id.to_string()),
        Outcome::Success,
        json!({ "since": body.since, "requeued": requeued }),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(json!({ "requeued": requeued })))
}

/// Publishes the tenant's own event to its subscribed endpoints.
#[utoipa::path(
    post, path = "/v1/webhooks/messages", tag = "webhooks",
    request_body = PublishMessage,
    responses(
        (status = 202, description = "Queued", body = Queued),
        (status = 422, description = "An invalid or reserved event type, or a payload too large"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn publish(
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
    if holds_nul(&body.payload) {
        return Err(ApiError::Invalid(
            "payload may not contain NUL characters".into(),
        ));
    }
    let size = serde_json::to_vec(&body.payload)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(ApiError::Invalid(
            format!("payload is limited to {MAX_PAYLOAD_BYTES} bytes of JSON").into(),
        ));
    }
    let now = state.clock().now();
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let (id, deliveries) = store::publish(
        &mut tx,
        &body.event_type,
        &body.payload,
        MessageSource::Tenant,
        None,
        now,
    )
    .await?;
    audit::record(
        &mut tx,
        "webhook.message_publish",
        Some(&id.to_string()),
        Outcome::Success,
        json!({ "event_type": body.event_type, "deliveries": deliveries }),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Queued { id, deliveries })))
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// A message with its deliveries.
#[utoipa::path(
    get, path = "/v1/webhooks/messages/{id}", tag = "webhooks",
    params(("id" = MessageId, Path, description = "The message")),
    responses(
        (status = 200, description = "The message", body = crate::http::routes::openapi::MessageView),
        (status = 404, description = "No such message (or another tenant's)"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn fetch_message(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let ctx = &tenant.0;
    let id: MessageId = parse(&id)?;
    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let message = store::get_message(&mut tx, id).await?;
    require_audit_read_for_message(ctx, &message)?;
    let deliveries = store::deliveries_of(&mut tx, id).await?;
    tx.commit().await?;
    Ok(axum::Json(
        json!({ "message": message, "deliveries": deliveries }),
    ))
}

/// A message's attempt log.
#[utoipa::path(
    get, path = "/v1/webhooks/messages/{id}/attempts", tag = "webhooks",
    params(("id" = MessageId, Path, description = "The message")),
    responses(
        (status = 200, description = "The attempts", body = crate::http::routes::openapi::AttemptList),
        (status = 404, description = "No such message (or another tenant's)"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn attempts(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let ctx = &tenant.0;
    let id: MessageId = parse(&id)?;
    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let message = store::get_message(&mut tx, id).await?;
    require_audit_read_for_message(ctx, &message)?;
    let attempts = store::attempts_of(&mut tx, id).await?;
    tx.commit().await?;
    Ok(axum::Json(json!({ "data": attempts })))
}

/// Queues every delivery of a message again.
#[utoipa::path(
    post, path = "/v1/webhooks/messages/{id}/resend", tag = "webhooks",
    params(("id" = MessageId, Path, description = "The message")),
    responses(
        (status = 200, description = "How many were queued", body = crate::http::routes::openapi::Requeued),
        (status = 404, description = "No such message (or another tenant's)"),
    ),
    security(("bearer" = ["webhooks:manage"])),
)]
async fn resend(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let ctx = &tenant.0;
    let id: MessageId = parse(&id)?;
    let now = state.clock().now();
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let message = store::get_message(&mut tx, id).await?;
    require_audit_read_for_message(ctx, &message)?;
    let requeued = store::resend(&mut tx, id, now).await?;
    audit::record(
        &mut tx,
        "webhook.resend",
        Some(&id.to_string()),
        Outcome::Success,
        json!({ "requeued": requeued }),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(json!({ "requeued": requeued })))
}
