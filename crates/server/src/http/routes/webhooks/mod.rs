//! `/v1/webhooks`: a tenant's endpoints, the messages sent to them and the attempt log. Every
//! route needs `webhooks:manage`. The API process never makes an outbound request: URLs are
//! judged here by the egress policy (text, parsed value, IP literals) and again, with their DNS
//! answers, by the delivery worker before every attempt.

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::{self, Requires};
use crate::http::authz::RouteTable;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bulkhead_core::id::EndpointKind;
use bulkhead_core::{Actor, ApiKeyId, EndpointId, MessageId, Scope, TenantContext};
use bulkhead_store::tenant::webhooks::{self as store, Endpoint, EndpointPatch, NewEndpoint};
use bulkhead_store::TenantTx;
use bulkhead_webhooks::headers::check_custom_headers;
use bulkhead_webhooks::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Tenant};
use crate::http::routes::kit::by_id::{ById, ByIdJson};
use crate::http::routes::kit::page::{ListQuery, NoFilters};
use crate::http::routes::kit::tx;
use crate::http::routes::kit::validate;
use crate::http::routes::kit::write::Tail;
use crate::http::state::AppState;

pub mod deliveries;
use deliveries::{
    attempts, fetch_message, publish, recover, resend, send_test, AttemptList, MessageView,
    PublishMessage, Queued, Recover, Requeued,
};

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
    RouteTable::tagged("webhooks")
        .resource(
            "/v1/webhooks/endpoints/{id}",
            OpDoc::one::<EndpointId>("endpoint"),
        )
        .resource(
            "/v1/webhooks/messages/{id}",
            OpDoc::one::<MessageId>("message"),
        )
        .get("/v1/webhooks/endpoints", MANAGE, list)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::page::<EndpointPage, NoFilters>("A page of endpoints")
                .cursor::<EndpointId>()
                .summary("Lists the tenant's endpoints.")
                .invalid("Limit outside 1 to 200"),
        )
        .post("/v1/webhooks/endpoints", MANAGE, create)
        .confine(Refused)
        .doc(
            OpDoc::ok::<EndpointWithSecret>(201, "The endpoint with its secret")
                .summary(
                    "Registers an endpoint; the `whsec_` secret is in the answer, \
                    once.",
                )
                .body::<CreateEndpoint>()
                .invalid(
                    "An invalid field, or a URL the egress policy refuses (the rule \
                    is named)",
                ),
        )
        .get("/v1/webhooks/endpoints/{id}", MANAGE, fetch)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::ok::<Endpoint>(200, "The endpoint")
                .summary("Fetches an endpoint (never its secret)."),
        )
        .patch("/v1/webhooks/endpoints/{id}", MANAGE, update)
        .confine(Refused)
        .doc(
            OpDoc::ok::<Endpoint>(200, "The endpoint")
                .summary("Updates an endpoint; re-enabling clears its failure state.")
                .body::<UpdateEndpoint>()
                .invalid("An invalid field, or a URL the egress policy refuses"),
        )
        .delete("/v1/webhooks/endpoints/{id}", MANAGE, remove)
        .confine(Refused)
        .doc(OpDoc::empty(204, "Deleted").summary("Deletes an endpoint."))
        .post(
            "/v1/webhooks/endpoints/{id}/rotate-secret",
            MANAGE,
            rotate_secret,
        )
        .confine(Refused)
        .doc(
            OpDoc::ok::<EndpointWithSecret>(200, "The endpoint with its new secret")
                .summary(
                    "A new secret (in the answer, once); the old one keeps signing \
                    for `grace_seconds`. The body is optional.",
                )
                .optional_body::<RotateSecret>()
                .invalid("Grace period out of range, or an invalid body"),
        )
        .post("/v1/webhooks/endpoints/{id}/test", MANAGE, send_test)
        .confine(Refused)
        .doc(
            OpDoc::ok::<Queued>(202, "Queued")
                .summary("Queues a `webhook.test` message to this endpoint."),
        )
        .post("/v1/webhooks/endpoints/{id}/recover", MANAGE, recover)
        .confine(Refused)
        .doc(
            OpDoc::ok::<Requeued>(200, "How many were queued")
                .summary("Queues again the failed deliveries created since a time.")
                .body::<Recover>(),
        )
        .post("/v1/webhooks/messages", MANAGE, publish)
        .confine(Refused)
        .doc(
            OpDoc::ok::<Queued>(202, "Queued")
                .summary("Publishes the tenant's own event to its subscribed endpoints.")
                .body::<PublishMessage>()
                .invalid("An invalid or reserved event type, or a payload too large"),
        )
        .get("/v1/webhooks/messages/{id}", MANAGE, fetch_message)
        .confine(TENANT_WIDE_READ)
        .doc(OpDoc::ok::<MessageView>(200, "The message").summary("A message with its deliveries."))
        .get("/v1/webhooks/messages/{id}/attempts", MANAGE, attempts)
        .confine(TENANT_WIDE_READ)
        .doc(OpDoc::ok::<AttemptList>(200, "The attempts").summary("A message's attempt log."))
        .post("/v1/webhooks/messages/{id}/resend", MANAGE, resend)
        .confine(Refused)
        .doc(
            OpDoc::ok::<Requeued>(200, "How many were queued")
                .summary("Queues every delivery of a message again."),
        )
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

/// Judges a URL by the egress policy ([`validate::egress_url`]).
async fn check_url(state: &AppState, ctx: &TenantContext, url: &str) -> Result<String, ApiError> {
    validate::egress_url(state, ctx, url, "webhook.blocked", "url", "endpoint URL").await
}

async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateEndpoint>,
) -> Result<impl IntoResponse, ApiError> {
    let ctx = &tenant.0;
    let description = validate::description(&body.description)?;
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
        description,
        event_types: body.event_types,
        rate_limit_per_second: body.rate_limit_per_second,
        headers,
        secret: secret.expose_bytes().to_vec(),
        enabled: body.enabled.unwrap_or(true),
    };
    let endpoint = tx::write(&state, ctx, async |tx| {
        let endpoint = store::create_endpoint(tx, &new, state.master_key()).await?;
        if streams {
            store::set_audit_grantors(tx, endpoint.id, &audit_grantors(ctx.actor())).await?;
        }
        let tail = Tail::new().audit("webhook.endpoint_create", endpoint.id, json!({}));
        Ok((endpoint, tail))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(EndpointWithSecret {
            endpoint,
            secret: secret.expose_text(),
        }),
    ))
}

async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery,
) -> Result<axum::Json<EndpointPage>, ApiError> {
    let rows = async |tx: &mut TenantTx, after, n| Ok(store::list_endpoints(tx, after, n).await?);
    let (data, next_cursor) = query
        .page_of_ids()?
        .read(&state, &tenant.0, rows, |e| e.id)
        .await?;
    Ok(axum::Json(EndpointPage { data, next_cursor }))
}

async fn fetch(at: ById<EndpointKind>) -> Result<axum::Json<Endpoint>, ApiError> {
    at.read(store::get_endpoint).await.map(axum::Json)
}

async fn update(
    ByIdJson(ById { state, tenant, id }, body): ByIdJson<EndpointKind, UpdateEndpoint>,
) -> Result<axum::Json<Endpoint>, ApiError> {
    let ctx = &tenant.0;
    let description = validate::optional_description(body.description.as_deref())?;
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
        description,
        event_types: body.event_types,
        enabled: body.enabled,
        rate_limit_per_second: body.rate_limit_per_second,
        headers,
    };
    let endpoint = tx::write(&state, ctx, async |tx| {
        let endpoint = store::update_endpoint(tx, id, &patch).await?;
        // Judged on the endpoint as it will be (in the transaction, so a concurrent change cannot
        // slip between the check and the commit): whoever leaves it on the audit stream must
        // hold `audit:read`, and becomes the grantor the stream is checked against from now on.
        // Changing any field of a streaming endpoint (its URL above all) needs it too.
        if streams_audit(&endpoint.event_types) {
            require_audit_read(ctx, "audit-stream-subscription")?;
            store::set_audit_grantors(tx, id, &audit_grantors(ctx.actor())).await?;
        }
        let meta = json!({ "enabled": body.enabled });
        Ok((
            endpoint,
            Tail::new().audit("webhook.endpoint_update", id, meta),
        ))
    })
    .await?;
    Ok(axum::Json(endpoint))
}

async fn remove(at: ById<EndpointKind>) -> Result<StatusCode, ApiError> {
    let tail = Tail::new().audit("webhook.endpoint_delete", at.id, json!({}));
    at.delete(store::delete_endpoint, tail).await
}

async fn rotate_secret(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<EndpointWithSecret>, ApiError> {
    let ctx = &tenant.0;
    let id: EndpointId = validate::id(&id)?;
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
    let endpoint = tx::write(&state, ctx, async |tx| {
        // The new secret signs the audit stream a receiver trusts: taking it needs `audit:read`,
        // like subscribing does (checked before anything changes; another tenant's id is still
        // a 404).
        let current = store::get_endpoint(tx, id).await?;
        if streams_audit(&current.event_types) {
            require_audit_read(ctx, "audit-stream-secret")?;
        }
        store::rotate_secret(tx, id, secret.expose_bytes(), until, state.master_key()).await?;
        let meta = json!({ "previous_valid_until": until });
        let tail = Tail::new().audit("webhook.secret_rotate", id, meta);
        Ok((store::get_endpoint(tx, id).await?, tail))
    })
    .await?;
    Ok(axum::Json(EndpointWithSecret {
        endpoint,
        secret: secret.expose_text(),
    }))
}
