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
use bulkhead_core::{Actor, AuthSessionId, Scope, TenantContext, UserId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::placement::registry::{Tenant, TenantStatus};
use bulkhead_store::tenant::tokens::{
    self, AuthSession, EndReason, NewAuthSession, PrincipalType, TokenPolicy,
};
use bulkhead_store::tenant::users::{self, UserStatus};
use bulkhead_store::{Access, TenantTx};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

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

/// Consecutive failures per account name before locking starts.
pub const FREE_FAILURES: i32 = 5;
/// Longest lock of an account name.
pub const MAX_LOCK_SECS: i64 = 15 * 60;
/// Stale login-throttle rows deleted by each login attempt, at most.
pub const SWEEP_BATCH: i64 = 64;
/// The `client_id` of tokens issued by human login.
pub const LOGIN_CLIENT_ID: &str = "bulkhead-login";

const THROTTLE_NAMESPACE: Uuid = Uuid::from_u128(0x6b75_6c6b_6865_6164_2d6c_6f67_696e_0001);

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

/// Trims and lowercases an email; `None` if it cannot be one.
pub fn normalise_email(text: &str) -> Option<String> {
    let email = text.trim().to_lowercase();
    let valid = (3..=254).contains(&email.len())
        && email.contains('@')
        && !email.starts_with('@')
        && !email.ends_with('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then_some(email)
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

fn throttle_id(email: &str) -> Uuid {
    Uuid::new_v5(&THROTTLE_NAMESPACE, email.as_bytes())
}

fn lock_for(failures: i32) -> Option<i64> {
    (failures >= FREE_FAILURES).then(|| {
        let exponent = u32::try_from(failures - FREE_FAILURES)
            .unwrap_or(u32::MAX)
            .min(20);
        (1i64 << exponent).min(MAX_LOCK_SECS)
    })
}

/// Whole seconds until `until`, rounded up (the database keeps microseconds, so a lock of 2 s
/// may be 1.999999 s away), at least 1.
fn retry_secs(until: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let millis = u64::try_from((until - now).num_milliseconds()).unwrap_or(0);
    millis.div_ceil(1000).max(1)
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A password that verified: the user, what their roles let a login carry now, and the open
/// transaction (in the login context of the tenant) the caller continues in and commits.
pub(crate) struct PasswordLogin {
    /// The user, active.
    pub(crate) user: users::UserRecord,
    /// The user's stored scopes ∩ its roles' permissions.
    pub(crate) scopes: bulkhead_core::ScopeSet,
    /// The transaction the throttle was cleared in; the caller records its outcome and commits.
    pub(crate) tx: TenantTx,
}

/// The one password check of a human login (`POST /v1/auth/login` and the OAuth login page):
/// the tenant's status, both throttles, the argon2id check on the hashing pool outside any
/// transaction, the failure's audit event, and the user's current permissions. Unknown email,
/// wrong password and disabled user are one [`ApiError::InvalidLogin`] after the same work.
pub(crate) async fn check_password(
    state: &AppState,
    tenant: &Tenant,
    email: &str,
    password: String,
    client_ip: Option<std::net::IpAddr>,
) -> Result<PasswordLogin, ApiError> {
    let clock = state.clock().clone();
    let now = clock.now();
    // A suspended tenant refuses every login before any password work, with the answer a wrong
    // password gets: whether a password is right must not be learnable from the status code.
    if tenant.status != TenantStatus::Active {
        audit_login(tenant, "blocked", "tenant_suspended", None);
        return Err(ApiError::InvalidLogin);
    }
    // Each attempt is counted against the address before the password is checked (and given
    // back if it succeeds), so concurrent guesses cannot all slip under the budget.
    if let Some(ip) = client_ip {
        if let Some(wait) = state.login_ips().take_attempt(ip, now.timestamp()).await {
            audit_login(tenant, "blocked", "address_throttled", None);
            return Err(ApiError::LoginThrottled(wait));
        }
    }
    let email = normalise_email(email).unwrap_or_else(|| email.trim().to_lowercase());
    let name_id = throttle_id(&email);
    let ctx = crate::http::resolve::login_context(tenant);

    // The attempt is counted as a failure, under the row lock, before the password is checked
    // (a success clears it): N concurrent guesses are serialised here, so at most
    // FREE_FAILURES of them reach the password check before the lock applies. The check itself
    // runs outside any transaction: argon2id takes tens of milliseconds and must not hold a
    // connection or a row lock.
    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    let counted = tokens::count_login_attempt(&mut tx, name_id, now).await?;
    if let Some(until) = counted.locked_until.filter(|until| *until > now) {
        // Locked: this attempt is not counted and no password is checked.
        tx.rollback().await?;
        audit_login(tenant, "blocked", "account_throttled", None);
        return Err(ApiError::LoginThrottled(retry_secs(until, now)));
    }
    let failures = counted.failures;
    // Each attempt sweeps a few rows whose failures and lock ended a whole lock window ago,
    // so the table holds only names attempted recently (issue 28, item 5).
    tokens::sweep_login_throttle(
        &mut tx,
        now - chrono::Duration::seconds(MAX_LOCK_SECS),
        SWEEP_BATCH,
    )
    .await?;
    if let Some(secs) = lock_for(failures) {
        tokens::set_login_lock(&mut tx, name_id, now + chrono::Duration::seconds(secs)).await?;
    }
    let user = users::by_email(&mut tx, &email).await?;
    tx.commit().await?;
    let usable = user.as_ref().filter(|u| u.status == UserStatus::Active);
    // On the bounded hashing pool, as an anonymous caller (crate::service::hashing): a full pool answers
    // 503 before any work; the attempt stays counted against the name.
    let matched = state
        .hashing()
        .verify_password(
            crate::service::hashing::Caller::Anonymous(tenant.id),
            usable.map(|u| u.password_hash.clone()),
            password,
        )
        .await?;

    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    let (Some(user), true) = (usable, matched) else {
        audit::record(
            &mut tx,
            "auth.login",
            None,
            Outcome::Failure,
            json!({ "reason": "invalid_credentials", "consecutive_failures": failures }),
        )
        .await?;
        tx.commit().await?;
        audit_login(tenant, "failure", "invalid_credentials", None);
        return Err(ApiError::InvalidLogin);
    };
    if let Some(ip) = client_ip {
        state.login_ips().give_back(ip).await;
    }
    let Some(scopes) = user.scopes.clone() else {
        // A stored scope this binary cannot read grants nothing; refuse rather than guess.
        return Err(ApiError::Internal(anyhow::anyhow!(
            "user {} has unreadable scopes",
            user.id
        )));
    };
    // The session and its tokens carry only what the user's roles grant now, never the stored
    // scopes' superset for the resolver to cut later: a token's `scope` is what it may do.
    let Some(held) = bulkhead_store::tenant::rbac::permissions_of(
        &mut tx,
        bulkhead_store::tenant::rbac::Principal::User(user.id),
    )
    .await?
    else {
        // Disabled since the password check.
        tx.rollback().await?;
        audit_login(tenant, "failure", "invalid_credentials", None);
        return Err(ApiError::InvalidLogin);
    };
    let scopes = scopes.intersection(&held);
    tokens::clear_login_failures(&mut tx, name_id).await?;
    Ok(PasswordLogin {
        user: user.clone(),
        scopes,
        tx,
    })
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

pub(crate) fn audit_login(
    tenant: &Tenant,
    outcome: &'static str,
    reason: &'static str,
    user: Option<UserId>,
) {
    tracing::warn!(
        target: "bulkhead::audit",
        action = "auth.login",
        outcome,
        reason,
        tenant_id = %tenant.id,
        actor_id = user.map(|u| u.to_string()),
        "login"
    );
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
