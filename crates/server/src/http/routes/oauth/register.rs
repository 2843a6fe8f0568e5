//! `POST /oauth/register`: dynamic client registration (RFC 7591), on the tenant's subdomain.
//!
//! Off unless the tenant's admins turned it on (`PUT /v1/oauth-settings`): then `403
//! access_denied`. Rate-limited per source address and per tenant (the class
//! [`crate::config::limits::OAUTH_REGISTER_CLASS`]) before the metadata is parsed or checked;
//! the body itself is read first, under the application's 1 MiB cap, and its 16 KiB cap is
//! checked after the limits. The metadata is checked by
//! [`crate::service::oauth::registration`]; the client is made on the same model as an
//! admin-registered one (a confidential client's secret is shown once and kept as an HMAC bound
//! to the client), marked `registered_by: dynamic`, counted in the tenant's self-registered
//! cap of [`MAX_SELF_REGISTERED_CLIENTS`] (apart from the admins'; `409` when full), and
//! deleted once unused for [`DYNAMIC_CLIENT_IDLE_DAYS`] days (a registration, or a document's
//! client stored at consent, sweeps a few such clients first, ending their sessions). No registration access token is issued (RFC 7592 is not supported: a
//! self-registered client cannot read or change itself; an admin can, through
//! `/v1/oauth-clients`).
//!
//! Every registration and every refusal after the rate limiter is an audit event
//! (`oauth_client.register`) committed before the answer. A rate-limited request is logged on
//! the audit log line only, not stored: storing a row for each would turn the limiter's refusals
//! into the very database writes it exists to bound.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_core::{AuthSessionId, OAuthClientId, TenantId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::placement::registry::{Tenant, TenantStatus};
use bulkhead_store::tenant::oauth::{
    self as store_oauth, NewClient, RegisteredBy, DYNAMIC_CLIENT_IDLE_DAYS,
};
use bulkhead_store::tenant::oauth_settings;
use bulkhead_store::tenant::tokens::EndReason;
use bulkhead_store::{Access, TenantTx};
use serde::Serialize;
use serde_json::json;

use crate::config::limits::OAUTH_REGISTER_CLASS;
use crate::http::error::no_store;
use crate::http::routes::oauth_clients::secret_binding;
use crate::http::state::AppState;
use crate::service::audit_line::{AuditLine, Detail};
use crate::service::oauth::registration::{self, Refused};
use bulkhead_store::tenant::oauth::MAX_SELF_REGISTERED_CLIENTS;

/// Expired dynamic clients one registration deletes at most (the rest go with later ones).
const SWEEP_BATCH: i64 = 10;

/// An RFC 7591 §3.2.2 error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegistrationError {
    /// `invalid_redirect_uri`, `invalid_client_metadata`, `access_denied` (registration is
    /// off), `client_limit_reached`, `rate_limited`, `invalid_request` or
    /// `temporarily_unavailable`.
    pub error: &'static str,
    /// Why, in words.
    pub error_description: String,
}

/// Body of `POST /oauth/register` (RFC 7591 §2; other metadata is ignored).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // documentation only: the body is read as JSON by `registration::check`
pub struct RegistrationRequest {
    /// 1 to 100 characters, shown on the consent page (required).
    #[schema(example = "Desktop assistant")]
    client_name: String,
    /// 1 to 10 exact redirect URIs: `https`, or `http` on `127.0.0.1`/`[::1]` (any port then
    /// matches), in canonical form, without userinfo or fragment.
    #[schema(example = json!(["http://127.0.0.1/callback"]))]
    redirect_uris: Vec<String>,
    /// `none` (public), `client_secret_basic` (default) or `client_secret_post`.
    token_endpoint_auth_method: Option<String>,
    /// `authorization_code`, optionally with `refresh_token`.
    grant_types: Option<Vec<String>>,
    /// `code`.
    response_types: Option<Vec<String>>,
    /// Space-separated, within the tenant's `dynamic_client_scopes` (all of them if absent).
    scope: Option<String>,
}

/// The answer of a registration (RFC 7591 §3.2.1).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Registered {
    /// The new `client_id` (`oac_…`).
    pub client_id: OAuthClientId,
    /// A confidential client's secret: shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// When it was issued (seconds since the epoch).
    pub client_id_issued_at: i64,
    /// `0` (the secret does not expire) for a confidential client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
    /// As registered.
    pub client_name: String,
    /// As registered.
    pub redirect_uris: Vec<String>,
    /// As registered.
    pub token_endpoint_auth_method: &'static str,
    /// As registered.
    pub grant_types: Vec<String>,
    /// `["code"]`.
    pub response_types: Vec<&'static str>,
    /// The scopes it may be granted, space-separated.
    pub scope: String,
    /// `dynamic`.
    pub registered_by: RegisteredBy,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn error(status: StatusCode, error: &'static str, description: impl Into<String>) -> Response {
    let mut response = (
        status,
        axum::Json(RegistrationError {
            error,
            error_description: description.into(),
        }),
    )
        .into_response();
    no_store(response.headers_mut());
    response
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "try again shortly",
    )
}

/// The handler.
pub(crate) async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = match super::oauth_host_tenant(&state, &headers).await {
        Ok(Some(tenant)) if tenant.status == TenantStatus::Active => tenant,
        Ok(_) | Err(_) => {
            return error(
                StatusCode::NOT_FOUND,
                "invalid_request",
                "register through your organisation's own address",
            )
        }
    };
    let client_ip = super::request_ip(&state, peer, &headers);
    if let Some(wait) = rate_limited(&state, &tenant, client_ip).await {
        AuditLine::blocked("oauth_client.register")
            .tenant(tenant.id)
            .with(Detail::Reason, "rate_limited")
            .warn("dynamic client registration rate limited");
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many registrations; try again later",
        );
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    match registered(&state, tenant.id, json_body, &body).await {
        Ok(Ok(registered)) => {
            let mut response = (StatusCode::CREATED, axum::Json(registered)).into_response();
            no_store(response.headers_mut());
            response
        }
        Ok(Err(refusal)) => refusal,
        Err(_) => unavailable(),
    }
}

/// Spends one registration of the source address's and the tenant's budgets; `Some(wait)` when
/// either has none left.
async fn rate_limited(
    state: &AppState,
    tenant: &Tenant,
    client_ip: Option<std::net::IpAddr>,
) -> Option<std::time::Duration> {
    let limits = state.rate_limits()?;
    // An unknown address (malformed chain) shares one budget rather than escaping the limit.
    let ip = client_ip.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let source = limits
        .preauth
        .check(&bulkhead_ratelimit::Request::new(
            crate::http::limits::address_key(ip),
            bulkhead_ratelimit::Plan::Standard,
            OAUTH_REGISTER_CLASS,
        ))
        .await;
    let refused = |d: &bulkhead_ratelimit::Decision| {
        d.retry_after.unwrap_or(std::time::Duration::from_secs(1))
    };
    if !source.allowed {
        return Some(refused(&source));
    }
    let tenant_wide = limits
        .tenant
        .check(
            &crate::http::limits::TenantPlan::of(tenant).request(tenant.id, OAUTH_REGISTER_CLASS),
        )
        .await;
    (!tenant_wide.allowed).then(|| refused(&tenant_wide))
}

/// Checks, sweeps, counts and stores, with the audit event, in one transaction. `Ok(Err(_))` is
/// a refusal already audited and committed.
async fn registered(
    state: &AppState,
    tenant: TenantId,
    json_body: bool,
    body: &[u8],
) -> Result<Result<Registered, Response>, bulkhead_store::StoreError> {
    let ctx = crate::http::resolve::oauth_context(tenant);
    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    let settings = oauth_settings::get(&mut tx).await?;
    if !settings.dynamic_registration {
        let answer = error(
            StatusCode::FORBIDDEN,
            "access_denied",
            "dynamic client registration is not enabled for this organisation",
        );
        return refuse(tx, "disabled", answer).await;
    }
    let checked = if json_body {
        registration::check(body, &settings.dynamic_scope_set())
    } else {
        Err(Refused {
            error: "invalid_client_metadata",
            description: "send the metadata as application/json".into(),
            reason: "content_type",
        })
    };
    let metadata = match checked {
        Ok(metadata) => metadata,
        Err(refused) => {
            let answer = error(StatusCode::BAD_REQUEST, refused.error, refused.description);
            return refuse(tx, refused.reason, answer).await;
        }
    };
    let now = state.clock().now();
    let ended = sweep_expired(state, &mut tx, now).await?;
    if store_oauth::count_clients_locked(&mut tx, true).await? >= MAX_SELF_REGISTERED_CLIENTS {
        let answer = error(
            StatusCode::CONFLICT,
            "client_limit_reached",
            format!(
                "the organisation already has {MAX_SELF_REGISTERED_CLIENTS} self-registered \
                 OAuth clients"
            ),
        );
        let refused = refuse(tx, "client_limit", answer).await;
        deny_locally(state, tenant, ended);
        return refused;
    }
    let id = OAuthClientId::new();
    let secret = metadata
        .method
        .is_confidential()
        .then(bulkhead_auth::code::generate_client_secret);
    let secret_hash = secret.as_ref().map(|s| {
        state
            .master_key()
            .client_secret_mac(&secret_binding(tenant, id), s.as_bytes())
    });
    let client = store_oauth::create_client(
        &mut tx,
        &NewClient {
            id,
            name: &metadata.name,
            redirect_uris: &metadata.redirect_uris,
            method: metadata.method,
            secret_hash,
            scopes: &metadata.scopes,
            registered_by: RegisteredBy::Dynamic,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        "oauth_client.register",
        Some(&id.to_string()),
        Outcome::Success,
        json!({
            "name": client.name,
            "redirect_uris": client.redirect_uris,
            "token_endpoint_auth_method": metadata.method.as_str(),
            "scopes": client.scopes,
        }),
    )
    .await?;
    tx.commit().await?;
    deny_locally(state, tenant, ended);
    Ok(Ok(Registered {
        client_id: id,
        client_secret: secret.map(|s| s.to_string()),
        client_id_issued_at: client.created_at.timestamp(),
        client_secret_expires_at: metadata.method.is_confidential().then_some(0),
        client_name: client.name,
        redirect_uris: client.redirect_uris,
        token_endpoint_auth_method: metadata.method.as_str(),
        grant_types: metadata.grant_types,
        response_types: vec!["code"],
        scope: crate::service::tokens::scope_text(&metadata.scopes),
        registered_by: RegisteredBy::Dynamic,
    }))
}

/// Audits a refusal, commits, and gives the answer.
async fn refuse(
    mut tx: TenantTx,
    reason: &'static str,
    answer: Response,
) -> Result<Result<Registered, Response>, bulkhead_store::StoreError> {
    audit::record(
        &mut tx,
        "oauth_client.register",
        None,
        Outcome::Failure,
        json!({ "reason": reason }),
    )
    .await?;
    tx.commit().await?;
    Ok(Err(answer))
}

/// Deletes a few dynamic clients unused for [`DYNAMIC_CLIENT_IDLE_DAYS`], ending their
/// sessions, each audited `oauth_client.expire`. Returns the sessions ended.
pub(super) async fn sweep_expired(
    state: &AppState,
    tx: &mut TenantTx,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<AuthSessionId>, bulkhead_store::StoreError> {
    let cutoff = store_oauth::idle_cutoff(now);
    let mut ended = Vec::new();
    for id in store_oauth::expired_dynamic_clients(tx, cutoff, SWEEP_BATCH).await? {
        let sessions = store_oauth::live_sessions_of_client(tx, id).await?;
        store_oauth::delete_client(tx, id).await?;
        for session in &sessions {
            crate::service::auth_sessions::end(
                state.tokens(),
                state.clock(),
                tx,
                *session,
                EndReason::Revoked,
            )
            .await?;
        }
        audit::record(
            tx,
            "oauth_client.expire",
            Some(&id.to_string()),
            Outcome::Success,
            json!({ "idle_days": DYNAMIC_CLIENT_IDLE_DAYS, "sessions_ended": sessions.len() }),
        )
        .await?;
        ended.extend(sessions);
    }
    Ok(ended)
}

/// After the commit: refuses the ended sessions' tokens on this node at once.
pub(super) fn deny_locally(state: &AppState, tenant: TenantId, ended: Vec<AuthSessionId>) {
    for session in ended {
        state.tokens().deny_session_locally(tenant, session);
    }
}
