//! Human login, logout, the caller's auth sessions, and the tenant's token policy.
//!
//! # Login throttling
//! Two throttles, both checked before any password work:
//! - per account name (the lowercased email, whether or not such a user exists, so a lockout
//!   reveals nothing about which accounts exist): after [`FREE_FAILURES`] consecutive failures
//!   each further failure locks the name for twice as long as the last, from 1 s up to
//!   [`MAX_LOCK_SECS`]; a success clears it. Kept in the tenant's database, so every server
//!   process sees it. A name whose last failure and lock both ended [`MAX_LOCK_SECS`] ago is
//!   forgotten (each attempt sweeps up to [`SWEEP_BATCH`] such rows), so its count starts over.
//! - per client address: at most
//!   `--login-failures-per-address` failures (default 30) per
//!   `--login-address-window-secs` (default 15 minutes)
//!   across all accounts, in process.
//!
//! Unknown email, wrong password and disabled user give one answer (401 `invalid-login`) after
//! the same argon2id work ([`bulkhead_auth::password::verify_password`]).

use std::net::SocketAddr;

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::{self, Requires};
use crate::http::authz::RouteTable;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use bulkhead_core::id::AuthSessionKind;
use bulkhead_core::{Actor, AuthSessionId, Scope, TenantContext};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::placement::registry::Tenant;
use bulkhead_store::tenant::tokens::{
    self, AuthSession, EndReason, NewAuthSession, PrincipalType, TokenPolicy,
};
use bulkhead_store::{Access, TenantTx};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::error::ApiError;
use crate::http::extract::{Json, Tenant as TenantExtract};
use crate::http::resolve::LOGOUT_PATH;

use crate::http::routes::kit::by_id::ById;
use crate::http::routes::kit::{policy, tx};
use crate::http::routes::oauth::TokenResponse;
use crate::http::state::AppState;
use crate::service::auth_sessions::{end_audited, Ending};
use crate::service::oauth::IssuedTokens;
use crate::service::tokens::Grant;

use crate::http::routes::kit::login::{audit_login, check_password, PasswordLogin};
pub use crate::http::routes::kit::login::{
    normalise_email, FREE_FAILURES, MAX_LOCK_SECS, SWEEP_BATCH,
};

/// The `client_id` of tokens issued by human login.
pub const LOGIN_CLIENT_ID: &str = "bulkhead-login";

/// The routes and who may call them. Login is how a human gets a credential, so it
/// authenticates itself; the others act on the caller's own sessions (the handlers check
/// `keys:manage` before touching anyone else's).
pub fn routes() -> RouteTable {
    use crate::http::authz::{
        Confinement::{self, Refused},
        TENANT_WIDE_READ,
    };
    RouteTable::tagged("auth")
        .post("/v1/auth/login", RouteAccess::SelfAuthenticating, login)
        .doc(
            OpDoc::ok::<TokenResponse>(200, "Tokens")
                .summary(
                    "Human login: an access token and a refresh token. Throttled per \
                    account name and per address.",
                )
                .body::<LoginRequest>()
                .answer(400, "The body is not valid JSON")
                .answer(
                    401,
                    "Wrong email or password, disabled user or suspended tenant (one \
                    answer)",
                )
                .answer(404, "The subdomain or `tenant` names no tenant")
                .answer(
                    413,
                    "The body is larger than the route accepts (1 MiB; a tool call \
                    256 KiB)",
                )
                .answer(415, "The body is not `application/json`")
                .invalid("No tenant named, or host and `tenant` disagree")
                .answer(429, "Too many failed logins; see `Retry-After`")
                .answer(
                    503,
                    "Temporarily unavailable, or too many password checks in \
                    progress; see `Retry-After`",
                ),
        )
        .post(LOGOUT_PATH, RouteAccess::Authenticated, logout)
        .confine(Confinement::Admitted(
            "ending one's own session only takes authority away; the handler refuses a \
             delegated token, which carries its delegator's session",
        ))
        .doc(
            OpDoc::empty(204, "Logged out")
                .summary("Ends the session of the calling access token (from a login).")
                .invalid("The credential has no session to log out of"),
        )
        .get(
            "/v1/auth/sessions",
            RouteAccess::Authenticated,
            list_sessions,
        )
        .confine(Confinement::Admitted(
            "the caller's own auth sessions; the handler shows a delegated \
            credential none",
        ))
        .doc(
            OpDoc::ok::<crate::http::routes::openapi::AuthSessionList>(200, "Sessions")
                .summary("The caller's live auth sessions (refresh-token families)."),
        )
        .delete(
            "/v1/auth/sessions/{id}",
            RouteAccess::Authenticated,
            end_session,
        )
        .confine(Confinement::Admitted(
            "ends one of the caller's own auth sessions (a delegated credential owns none); \
             ending another's with keys:manage is refused to confined and delegated credentials",
        ))
        .doc(
            OpDoc::empty(204, "Ended")
                .summary(
                    "Ends one of the caller's auth sessions (any of the tenant's with \
                    `keys:manage`).",
                )
                .id::<AuthSessionId>("The auth session")
                .answer(404, "No such session of the caller's"),
        )
        .get("/v1/token-policy", Requires(Scope::KeysManage), get_policy)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::ok::<TokenPolicy>(200, "The token policy").summary("The tenant's token policy."),
        )
        .put("/v1/token-policy", Requires(Scope::KeysManage), put_policy)
        .confine(Refused)
        .doc(
            OpDoc::ok::<TokenPolicy>(200, "The new token policy")
                .summary("Replaces the tenant's token policy.")
                .body::<TokenPolicy>()
                .invalid("A value out of range"),
        )
}

/// Body of `POST /v1/auth/login`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
    /// The tenant's slug, when the request does not come through the tenant's subdomain.
    #[serde(default)]
    tenant: Option<String>,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("email", &self.email)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<LoginRequest>,
) -> Result<TokenResponse, ApiError> {
    let host = crate::http::resolve::request_host(&headers);
    let tenant = login_tenant(&state, host, body.tenant.as_deref()).await?;
    let client_ip = crate::service::credentials::headers_client_ip(
        Some(peer.ip()),
        &headers,
        &state.config().trusted_proxies,
    );
    let now = state.clock().now();
    let PasswordLogin {
        user,
        scopes,
        mut tx,
    } = check_password(
        &state,
        &tenant,
        &body.email,
        body.password.clone(),
        client_ip,
    )
    .await?;
    let policy = tokens::token_policy(&mut tx).await?;
    let subject = user.id.to_string();
    let (session, refresh) = crate::service::auth_sessions::start(
        &mut tx,
        &NewAuthSession {
            principal_type: PrincipalType::User,
            principal_id: &subject,
            client_id: LOGIN_CLIENT_ID,
            scopes: &scopes,
            now,
            absolute: chrono::Duration::seconds(i64::from(policy.session_absolute_seconds)),
            idle: chrono::Duration::seconds(i64::from(policy.session_idle_seconds)),
            client_ip,
            user_agent: user_agent(&headers).as_deref(),
        },
    )
    .await?;
    audit::record(
        &mut tx,
        "auth.login",
        Some(&subject),
        Outcome::Success,
        json!({ "session_id": session.id.to_string() }),
    )
    .await?;
    let issued = state
        .tokens()
        .issue(&Grant {
            tenant_id: tenant.id,
            issuer: &state.config().tokens.tenant_issuer(&tenant.slug),
            subject: &subject,
            human: true,
            client_id: LOGIN_CLIENT_ID,
            scopes: &scopes,
            session_id: Some(session.id),
            act: None,
            resource_prefix: None,
            not_after: None,
            delegated_from: Vec::new(),
            allowed_networks: Vec::new(),
            derived_keys: Vec::new(),
        })
        .map_err(|_| ApiError::Unavailable)?;
    tx.commit().await?;
    audit_login(&tenant, "success", "ok", Some(user.id));
    Ok(TokenResponse::new(
        IssuedTokens {
            access: issued,
            refresh: Some(refresh),
            scopes,
            session_id: Some(session.id),
        },
        None,
    ))
}

/// The tenant a login is for: the subdomain's, or the body's `tenant` slug; both given must
/// agree.
async fn login_tenant(
    state: &AppState,
    host: &str,
    named: Option<&str>,
) -> Result<Tenant, ApiError> {
    let from_host = crate::http::resolve::host_tenant(state, host).await?;
    let from_body = match named {
        Some(slug) => {
            let slug = bulkhead_core::TenantSlug::parse(slug)
                .map_err(|_| ApiError::Invalid("tenant is not a valid tenant slug".into()))?;
            Some(
                state
                    .directory()
                    .by_slug(state.store(), &slug)
                    .await
                    .map_err(|_| ApiError::Unavailable)?
                    .ok_or(ApiError::UnknownTenant)?,
            )
        }
        None => None,
    };
    match (from_host, from_body) {
        (Some(h), Some(b)) if h.id != b.id => Err(ApiError::Invalid(
            "tenant names another tenant than the host".into(),
        )),
        (Some(t), _) | (None, Some(t)) => Ok(t),
        (None, None) => Err(ApiError::Invalid(
            "log in through the tenant's subdomain, or name it as `tenant`".into(),
        )),
    }
}

async fn logout(
    State(state): State<AppState>,
    tenant: TenantExtract,
) -> Result<StatusCode, ApiError> {
    let ctx = &tenant.0;
    let Actor::Token {
        session_id: Some(session),
        ..
    } = ctx.actor()
    else {
        return Err(ApiError::Invalid(
            "this credential has no session to log out of (use an access token from a login)"
                .into(),
        ));
    };
    let session = *session;
    if ctx.actor().delegation().is_some() {
        // A delegated token carries its delegator's session; it may not end it.
        return Err(ApiError::ConfinedCredential);
    }
    let tx = state.store().begin(ctx, Access::ReadWrite).await?;
    end_auth_session(&state, ctx, tx, session, EndReason::Logout, "auth.logout").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends an auth session in `tx` with its audit event, commits, then denies its tokens in this
/// process at once (other processes hear the NOTIFY sent at commit).
async fn end_auth_session(
    state: &AppState,
    ctx: &TenantContext,
    mut tx: TenantTx,
    session: AuthSessionId,
    reason: EndReason,
    action: &'static str,
) -> Result<(), ApiError> {
    let ending = Ending {
        reason,
        action,
        outcome: Outcome::Success,
        meta: json!({}),
    };
    end_audited(state.tokens(), state.clock(), &mut tx, session, ending).await?;
    tx.commit().await?;
    state
        .tokens()
        .deny_session_locally(ctx.tenant_id(), session);
    Ok(())
}

/// Whose sessions a caller sees: a human's token, that user's; an agent's token or key, the
/// sessions issued to that key. Matched on the principal's type and id, or the key id, never on
/// a free-form principal label (which any key manager can choose). A delegated credential acts
/// for someone else and sees no sessions of its own.
fn session_owner(ctx: &TenantContext) -> Option<tokens::SessionOwner> {
    if ctx.actor().delegation().is_some() {
        return None;
    }
    match ctx.actor() {
        Actor::Token {
            human: true,
            subject,
            ..
        } => Some(tokens::SessionOwner::User(subject.clone())),
        Actor::Token { client_id, .. } => Some(tokens::SessionOwner::Client(client_id.clone())),
        Actor::ApiKey { key_id, .. } => Some(tokens::SessionOwner::Client(key_id.to_string())),
        _ => None,
    }
}

fn caller_owns(ctx: &TenantContext, session: &AuthSession) -> bool {
    match session_owner(ctx) {
        Some(tokens::SessionOwner::User(id)) => {
            session.principal_type == PrincipalType::User && session.principal_id == id
        }
        Some(tokens::SessionOwner::Client(id)) => session.client_id == id,
        None => false,
    }
}

/// One entry of `GET /v1/auth/sessions`.
#[derive(Debug, Serialize)]
struct SessionView {
    #[serde(flatten)]
    session: AuthSession,
    current: bool,
}

async fn list_sessions(
    State(state): State<AppState>,
    tenant: TenantExtract,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let ctx = &tenant.0;
    let Some(owner) = session_owner(ctx) else {
        return Err(ApiError::ConfinedCredential);
    };
    let current = match ctx.actor() {
        Actor::Token { session_id, .. } => *session_id,
        _ => None,
    };
    let now = state.clock().now();
    let sessions = tx::read(&state, ctx, async |tx| {
        Ok(tokens::live_sessions_of(tx, &owner, now).await?)
    })
    .await?;
    let data: Vec<SessionView> = sessions
        .into_iter()
        .map(|s| SessionView {
            current: Some(s.id) == current,
            session: s,
        })
        .collect();
    Ok(axum::Json(json!({ "data": data })))
}

async fn end_session(
    ById { state, tenant, id }: ById<AuthSessionKind>,
) -> Result<StatusCode, ApiError> {
    let ctx = &tenant.0;
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let session = tokens::get_session(&mut tx, id).await?;
    // Someone else's session answers exactly like a missing one, unless the caller manages
    // the tenant's credentials. That power is the unconfined, undelegated caller's only: the
    // route admits confined and delegated credentials for their *own* sessions, and a
    // delegated `keys:manage` must not end every login of the tenant (refused, audited).
    if !caller_owns(ctx, &session) {
        if !ctx.has_scope(Scope::KeysManage) {
            return Err(ApiError::NotFound);
        }
        crate::http::authz::refuse_confined(ctx, Scope::KeysManage)?;
    }
    end_auth_session(&state, ctx, tx, id, EndReason::Ended, "auth.session_end").await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_policy(
    State(state): State<AppState>,
    tenant: TenantExtract,
) -> Result<axum::Json<TokenPolicy>, ApiError> {
    Ok(axum::Json(policy::read(&state, &tenant.0).await?))
}

async fn put_policy(
    State(state): State<AppState>,
    tenant: TenantExtract,
    Json(policy): Json<TokenPolicy>,
) -> Result<axum::Json<TokenPolicy>, ApiError> {
    let ctx = &tenant.0;
    let lifetimes = 300..=31_536_000;
    if !(0..=60).contains(&policy.refresh_reuse_interval_seconds)
        || !lifetimes.contains(&policy.session_absolute_seconds)
        || !lifetimes.contains(&policy.session_idle_seconds)
    {
        return Err(ApiError::Invalid(
            "refresh_reuse_interval_seconds is 0 to 60; session_absolute_seconds and \
             session_idle_seconds are 300 to 31536000"
                .into(),
        ));
    }
    policy::replace(&state, ctx, &policy).await?;
    Ok(axum::Json(policy))
}
