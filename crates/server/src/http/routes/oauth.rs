//! The OAuth 2.0 endpoints: token (RFC 6749), revocation (RFC 7009), introspection (RFC 7662),
//! authorization-server metadata (RFC 8414) and the JWKS (RFC 7517).
//!
//! They follow the standards to the letter so that any OAuth client library works unchanged:
//! form-encoded requests, a parameter sent twice is `invalid_request` (RFC 6749 §3.2), errors in
//! the RFC 6749 §5.2 JSON form, `Cache-Control: no-store` on everything carrying a token.
//! Clients authenticate with HTTP Basic (`client_id` = the API key's id, `client_secret` = the
//! key) or with `client_id`/`client_secret` in the body, never both.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::http::authz::RouteAccess;
use crate::http::authz::RouteTable;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bulkhead_auth::RefreshToken;
use bulkhead_core::{Actor, RequestId, Scope, ScopeSet, TenantContext, TenantId, UserId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::placement::registry::{Tenant, TenantStatus};
use bulkhead_store::tenant::tokens::{
    self, EndReason, NewAuthSession, PresentedRefresh, PrincipalType, RefreshStatus,
};
use bulkhead_store::tenant::users::{self, UserStatus};
use bulkhead_store::Access;
use serde_json::json;
use zeroize::Zeroizing;

use crate::http::error::{no_store, ApiError, OAuthError};
use crate::http::resolve::{authenticate_api_key, host_tenant, is_access_token};
use crate::http::routes::auth::{end_session_in, TokenResponse};
use crate::http::state::AppState;
use crate::service::credentials::VerifiedKey;
use crate::service::tokens::{parse_scope_param, scope_text, Grant};

/// RFC 8693's grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Most parameters a form may carry.
const MAX_PARAMS: usize = 16;

/// The routes (outside tenant resolution: the client authenticates itself here).
pub fn routes() -> RouteTable {
    const SELF: RouteAccess = RouteAccess::SelfAuthenticating;
    RouteTable::new()
        .post("/oauth/token", SELF, token)
        .post("/oauth/revoke", SELF, revoke)
        .post("/oauth/introspect", SELF, introspect)
        .get(
            "/.well-known/oauth-authorization-server",
            RouteAccess::Public,
            metadata,
        )
        .get("/.well-known/jwks.json", RouteAccess::Public, jwks)
}

/// RFC 8414 authorization-server metadata.
#[utoipa::path(
    get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses(
        (status = 200, description = "The metadata", body = crate::http::routes::openapi::ServerMetadata),
        (status = 429, description = "Rate limited per address; see `Retry-After`"),
    ),
)]
async fn metadata(State(state): State<AppState>) -> Response {
    let issuer = &state.config().tokens.issuer;
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    let mut response = axum::Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "grant_types_supported": ["client_credentials", "refresh_token", TOKEN_EXCHANGE],
        // No authorization endpoint: every grant here is a direct token request.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes,
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
    }))
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// The token signing keys (RFC 7517), the next one published before it signs.
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "oauth",
    responses(
        (status = 200, description = "The JWKS", body = crate::http::routes::openapi::Jwks),
        (status = 429, description = "Rate limited per address; see `Retry-After`"),
    ),
)]
async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(state.tokens().jwks()).into_response();
    // Short: a key is published a full rotation period before it signs, so a cached copy only
    // needs to be younger than the time between rotations.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

/// A parsed form body: each parameter at most once.
pub(crate) struct Form(HashMap<String, Zeroizing<String>>);

impl Form {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form_type {
            return Err(OAuthError::invalid_request(
                "send parameters as application/x-www-form-urlencoded",
            ));
        }
        let mut params = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if params.len() >= MAX_PARAMS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            let name = name.into_owned();
            if params.contains_key(&name) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{}` is repeated",
                    truncate_name(&name)
                )));
            }
            params.insert(name, Zeroizing::new(value.into_owned()));
        }
        Ok(Form(params))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

fn truncate_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect()
}

/// Client credentials as presented.
pub(crate) struct ClientAuth {
    client_id: Option<String>,
    secret: Zeroizing<String>,
    basic: bool,
}

fn form_decode(text: &str) -> Zeroizing<String> {
    let encoded = Zeroizing::new(format!("v={text}"));
    Zeroizing::new(
        form_urlencoded::parse(encoded.as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default(),
    )
}

/// HTTP Basic (RFC 6749 §2.3.1: both parts form-encoded) or body parameters, never both.
fn client_auth(headers: &HeaderMap, form: &Form) -> Result<Option<ClientAuth>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let header_value = values.next();
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    let body_secret = form.get("client_secret");
    match header_value {
        Some(value) => {
            if body_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            let text = value
                .to_str()
                .map_err(|_| OAuthError::invalid_client(true))?;
            let Some((scheme, encoded)) = text.split_once(' ') else {
                return Err(OAuthError::invalid_client(true));
            };
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::invalid_client(true));
            }
            let decoded = Zeroizing::new(
                STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| OAuthError::invalid_client(true))?,
            );
            let decoded =
                std::str::from_utf8(&decoded).map_err(|_| OAuthError::invalid_client(true))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| OAuthError::invalid_client(true))?;
            let id = form_decode(id);
            if form
                .get("client_id")
                .is_some_and(|body_id| body_id != id.as_str())
            {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the Basic credentials",
                ));
            }
            Ok(Some(ClientAuth {
                client_id: Some(id.to_string()),
                secret: form_decode(secret),
                basic: true,
            }))
        }
        None => Ok(body_secret.map(|secret| ClientAuth {
            client_id: form.get("client_id").map(str::to_owned),
            secret: Zeroizing::new(secret.to_owned()),
            basic: false,
        })),
    }
}

fn request_ip(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Option<IpAddr> {
    crate::service::credentials::headers_client_ip(
        Some(peer.ip()),
        headers,
        &state.config().trusted_proxies,
    )
}

/// The tenant the request's host names, in OAuth terms: an unknown subdomain is an invalid
/// request, a registry failure is `temporarily_unavailable`.
async fn oauth_host_tenant(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Tenant>, OAuthError> {
    host_tenant(state, host(headers))
        .await
        .map_err(|err| match err {
            ApiError::Unavailable => OAuthError::unavailable(),
            _ => OAuthError::invalid_request("no tenant is served under this host name"),
        })
}

/// The request's host, read by the one function every route uses.
pub(crate) fn host(headers: &HeaderMap) -> &str {
    crate::http::resolve::request_host(headers)
}

/// Authenticates a client by its API key: the key must verify, agree with the host's tenant,
/// and be the key `client_id` names (when it names one).
pub(crate) async fn authenticate_client(
    state: &AppState,
    auth: &ClientAuth,
    host_tenant: Option<Tenant>,
    client_ip: Option<IpAddr>,
) -> Result<(VerifiedKey, Tenant), OAuthError> {
    let (key, tenant) = authenticate_api_key(state, &auth.secret, host_tenant, client_ip)
        .await
        .map_err(|err| match err {
            ApiError::Unavailable => OAuthError::unavailable(),
            ApiError::TenantSuspended => OAuthError::unauthorized_client("the tenant is suspended"),
            _ => OAuthError::invalid_client(auth.basic),
        })?;
    if auth
        .client_id
        .as_deref()
        .is_some_and(|id| id != key.key_id.to_string())
    {
        tracing::warn!(
            target: "bulkhead::audit",
            action = "auth.failure",
            outcome = "failure",
            reason = "ClientIdMismatch",
            tenant_id = %tenant.id,
            actor_id = %key.key_id,
            "client_id does not name the presented key"
        );
        return Err(OAuthError::invalid_client(auth.basic));
    }
    state.verifier().record_use(&key, client_ip);
    Ok((key, tenant))
}

/// RFC 6749 token endpoint: `client_credentials`, `refresh_token`, and RFC 8693 token exchange.
#[utoipa::path(
    post, path = "/oauth/token", tag = "oauth",
    request_body(content = crate::http::routes::openapi::TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Tokens", body = TokenResponse),
        (status = 400, description = "`invalid_request`, `invalid_grant`, `invalid_scope`, `invalid_target`, `unauthorized_client` or `unsupported_grant_type`"),
        (status = 401, description = "`invalid_client`"),
    ),
    security((), ("client_basic" = [])),
)]
async fn token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match token_inner(&state, peer, &headers, &body).await {
        Ok(response) => response.into_response(),
        Err(err) => err.into_response(),
    }
}

async fn token_inner(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TokenResponse, OAuthError> {
    let form = Form::parse(headers, body)?;
    let client_ip = request_ip(state, peer, headers);
    let host_tenant = oauth_host_tenant(state, headers).await?;
    let auth = client_auth(headers, &form)?;
    match form.get("grant_type") {
        None => Err(OAuthError::invalid_request("grant_type is required")),
        Some("client_credentials") => {
            let Some(auth) = auth else {
                return Err(OAuthError::invalid_client(false));
            };
            let (key, tenant) = authenticate_client(state, &auth, host_tenant, client_ip).await?;
            client_credentials(state, &form, &key, &tenant, client_ip, headers).await
        }
        Some("refresh_token") => refresh(state, &form, auth, host_tenant, client_ip).await,
        Some(TOKEN_EXCHANGE) => {
            crate::http::routes::delegation::exchange(state, &form, auth, host_tenant, client_ip)
                .await
        }
        Some(_) => Err(OAuthError::unsupported_grant_type()),
    }
}

/// The scopes to grant: the requested ones, which must all be held; all held when none are asked.
pub(crate) fn granted_scopes(form: &Form, held: &ScopeSet) -> Result<ScopeSet, OAuthError> {
    match form.get("scope") {
        None => Ok(held.clone()),
        Some(text) => {
            let requested = parse_scope_param(text)
                .map_err(|_| OAuthError::invalid_scope("a requested scope does not exist"))?;
            if !held.is_superset(&requested) {
                return Err(OAuthError::invalid_scope(
                    "the requested scope exceeds what the client holds",
                ));
            }
            Ok(requested)
        }
    }
}

async fn client_credentials(
    state: &AppState,
    form: &Form,
    key: &VerifiedKey,
    tenant: &Tenant,
    client_ip: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<TokenResponse, OAuthError> {
    let ctx = TenantContext::new(
        tenant.id,
        Actor::ApiKey {
            key_id: key.key_id,
            scopes: key.scopes.clone(),
        },
        RequestId::new(),
    );
    // The key's agent's roles bound what the token may hold, as they bound the key itself.
    let held = crate::service::ceilings::key_scopes(
        state.ceilings(),
        state.store(),
        state.clock().now(),
        key,
    )
    .await
    .map_err(|_| OAuthError::unavailable())?;
    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    let Some(held) = held else {
        audit::record(
            &mut tx,
            "auth.token_issue",
            Some(&key.key_id.to_string()),
            Outcome::Failure,
            json!({ "grant_type": "client_credentials", "reason": "principal_inactive" }),
        )
        .await?;
        tx.commit().await?;
        return Err(OAuthError::invalid_client(false));
    };
    let scopes = match granted_scopes(form, &held) {
        Ok(scopes) => scopes,
        Err(err) => {
            audit::record(
                &mut tx,
                "auth.token_issue",
                Some(&key.key_id.to_string()),
                Outcome::Failure,
                json!({ "grant_type": "client_credentials", "reason": "invalid_scope" }),
            )
            .await?;
            tx.commit().await?;
            return Err(err);
        }
    };
    let client_id = key.key_id.to_string();
    // A key of an agent issues tokens whose subject is the agent itself: its roles then bound
    // the token (and every token delegated from it) at each use.
    let subject = match bulkhead_store::tenant::rbac::key_agent(&mut tx, key.key_id).await? {
        Some(agent) => agent.to_string(),
        None => key.principal.clone(),
    };
    let now = state.clock().now();
    let policy = tokens::token_policy(&mut tx).await?;
    let (session_id, refresh) = if policy.agent_refresh_tokens {
        let session = tokens::create_session(
            &mut tx,
            &NewAuthSession {
                principal_type: PrincipalType::Agent,
                principal_id: &key.principal,
                client_id: &client_id,
                scopes: &scopes,
                now,
                absolute: chrono::Duration::seconds(i64::from(policy.session_absolute_seconds)),
                idle: chrono::Duration::seconds(i64::from(policy.session_idle_seconds)),
                client_ip,
                user_agent: headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
            },
        )
        .await?;
        let refresh = RefreshToken::generate(*tenant.id.uuid().as_bytes());
        tokens::insert_refresh_token(&mut tx, session.id, &refresh.hash(), now).await?;
        (Some(session.id), Some(refresh))
    } else {
        (None, None)
    };
    let issued = state
        .tokens()
        .issue(&Grant {
            tenant_id: tenant.id,
            subject: &subject,
            human: false,
            client_id: &client_id,
            scopes: &scopes,
            session_id,
            act: None,
            resource_prefix: None,
            not_after: None,
            delegated_from: Vec::new(),
            // The key's allowlist binds every token minted from it, and every token derived
            // from those (refresh, exchange).
            allowed_networks: vec![key.allowed_ips.clone()],
            derived_keys: Vec::new(),
        })
        .map_err(|_| OAuthError::unavailable())?;
    audit::record(
        &mut tx,
        "auth.token_issue",
        Some(&issued.claims.jti),
        Outcome::Success,
        json!({ "grant_type": "client_credentials", "scope": issued.claims.scope, "session_id": session_id.map(|s| s.to_string()) }),
    )
    .await?;
    tx.commit().await?;
    Ok(TokenResponse {
        access_token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        refresh_token: refresh.map(|r| r.expose_secret().to_owned()),
        scope: scope_text(&scopes),
        session_id,
        issued_token_type: None,
    })
}

/// The tenant a presented token names (a refresh token's tenant part, a subject token's
/// `tenant_id`), which must agree with the host and be active. Every refusal is `invalid`:
/// the answer must not say whether such a tenant exists or is suspended.
pub(crate) async fn claimed_tenant(
    state: &AppState,
    claimed: TenantId,
    host_tenant: Option<Tenant>,
    invalid: impl Fn() -> OAuthError,
) -> Result<Tenant, OAuthError> {
    if host_tenant.as_ref().is_some_and(|t| t.id != claimed) {
        return Err(invalid());
    }
    let tenant = match host_tenant {
        Some(t) => t,
        None => state
            .directory()
            .by_id(state.store(), claimed)
            .await
            .map_err(|_| OAuthError::unavailable())?
            .ok_or_else(&invalid)?,
    };
    if tenant.status != TenantStatus::Active {
        return Err(invalid());
    }
    Ok(tenant)
}

/// [`claimed_tenant`] of a refresh token.
async fn refresh_tenant(
    state: &AppState,
    presented: &RefreshToken,
    host_tenant: Option<Tenant>,
) -> Result<Tenant, OAuthError> {
    let claimed = TenantId::from_uuid(uuid::Uuid::from_bytes(presented.tenant()));
    claimed_tenant(state, claimed, host_tenant, || {
        OAuthError::invalid_grant(INVALID_REFRESH)
    })
    .await
}

/// The one description of every refused refresh token.
const INVALID_REFRESH: &str = "the refresh token is invalid, expired or revoked";

async fn refresh(
    state: &AppState,
    form: &Form,
    auth: Option<ClientAuth>,
    host: Option<Tenant>,
    client_ip: Option<IpAddr>,
) -> Result<TokenResponse, OAuthError> {
    let invalid = || OAuthError::invalid_grant(INVALID_REFRESH);
    let text = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    let presented = RefreshToken::parse(text).map_err(|_| invalid())?;
    let tenant = refresh_tenant(state, &presented, host).await?;
    let client = match &auth {
        Some(auth) => Some(
            authenticate_client(state, auth, Some(tenant.clone()), client_ip)
                .await?
                .0,
        ),
        None => None,
    };
    let ctx = TenantContext::new(
        tenant.id,
        Actor::System { component: "oauth" },
        RequestId::new(),
    );
    let now = state.clock().now();
    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    let Some(found) = tokens::find_refresh_for_update(&mut tx, &presented.hash()).await? else {
        audit_refresh_failure(&mut tx, None, "unknown_token").await?;
        tx.commit().await?;
        return Err(invalid());
    };
    // An agent's session belongs to its API key: refreshing it needs that key too, so a stolen
    // refresh token alone is not enough, and revoking the key ends its sessions' refreshes.
    let session_client_ok = match (&client, found.session.principal_type) {
        (Some(key), _) => key.key_id.to_string() == found.session.client_id,
        (None, PrincipalType::User) => true,
        (None, PrincipalType::Agent) => false,
    };
    if !session_client_ok {
        audit_refresh_failure(&mut tx, Some(&found), "client_mismatch").await?;
        tx.commit().await?;
        return Err(OAuthError::invalid_client(
            auth.as_ref().is_some_and(|a| a.basic),
        ));
    }
    match found.status {
        RefreshStatus::Active => {}
        RefreshStatus::Revoked => {
            audit_refresh_failure(&mut tx, Some(&found), "revoked").await?;
            tx.commit().await?;
            return Err(invalid());
        }
        RefreshStatus::Rotated(at) => {
            let policy = tokens::token_policy(&mut tx).await?;
            let race = now - at
                <= chrono::Duration::seconds(i64::from(policy.refresh_reuse_interval_seconds));
            if race && policy.refresh_reuse_interval_seconds > 0 {
                audit_refresh_failure(&mut tx, Some(&found), "reused_within_interval").await?;
                tx.commit().await?;
                return Err(invalid());
            }
            // A rotated token presented again: whoever holds it, the family is compromised.
            let session = found.session.id;
            end_session_in(state, &mut tx, session, EndReason::ReuseDetected).await?;
            audit::record(
                &mut tx,
                "security.refresh_token_reuse",
                Some(&session.to_string()),
                Outcome::Blocked,
                json!({
                    "principal_id": found.session.principal_id,
                    "client_id": found.session.client_id,
                    "rotated_at": at,
                }),
            )
            .await?;
            // The tenant's security alert, in the same transaction: no alert without the
            // revocation, no revocation without the alert.
            bulkhead_store::tenant::webhooks::enqueue_platform_event(
                &mut tx,
                "security.refresh_token_reuse",
                json!({
                    "session_id": session.to_string(),
                    "principal_id": found.session.principal_id,
                    "client_id": found.session.client_id,
                    "rotated_at": at,
                    "detected_at": now,
                    "action_taken": "session_revoked",
                }),
            )
            .await?;
            tx.commit().await?;
            state.tokens().deny_session_locally(tenant.id, session);
            tracing::warn!(
                target: "bulkhead::audit",
                action = "security.refresh_token_reuse",
                outcome = "blocked",
                tenant_id = %tenant.id,
                actor_id = %found.session.principal_id,
                resource_id = %session,
                "refresh token reuse: session revoked"
            );
            return Err(invalid());
        }
    }
    if !found.session.is_live(now) {
        audit_refresh_failure(&mut tx, Some(&found), "session_ended").await?;
        tx.commit().await?;
        return Err(invalid());
    }
    if found.session.principal_type == PrincipalType::User {
        let user_ok = match UserId::parse(&found.session.principal_id) {
            Ok(id) => users::get(&mut tx, id)
                .await
                .map(|u| u.status == UserStatus::Active)
                .or_else(|e| match e {
                    bulkhead_store::StoreError::NotFound => Ok(false),
                    other => Err(other),
                })?,
            Err(_) => false,
        };
        if !user_ok {
            audit_refresh_failure(&mut tx, Some(&found), "user_disabled").await?;
            tx.commit().await?;
            return Err(invalid());
        }
    }
    // What the session may grant now: its scopes cut to its principals' roles (a user's role
    // narrowed since login narrows the next access token, not only its use).
    let Some(session_scopes) =
        crate::service::ceilings::session_scopes(&mut tx, &found.session, state.clock().now())
            .await?
    else {
        audit_refresh_failure(&mut tx, Some(&found), "principal_inactive").await?;
        tx.commit().await?;
        return Err(invalid());
    };
    let scopes = match granted_scopes(form, &session_scopes) {
        Ok(scopes) => scopes,
        Err(err) => {
            tx.rollback().await?;
            return Err(err);
        }
    };
    tokens::mark_rotated(&mut tx, &found, now).await?;
    let next = RefreshToken::generate(*tenant.id.uuid().as_bytes());
    tokens::insert_refresh_token(&mut tx, found.session.id, &next.hash(), now).await?;
    let issued = state
        .tokens()
        .issue(&Grant {
            tenant_id: tenant.id,
            subject: &found.session.principal_id,
            human: found.session.principal_type == PrincipalType::User,
            client_id: &found.session.client_id,
            scopes: &scopes,
            session_id: Some(found.session.id),
            act: None,
            resource_prefix: None,
            not_after: None,
            delegated_from: Vec::new(),
            // An agent's session is refreshed with its key: the key's allowlist binds the token.
            allowed_networks: client
                .as_ref()
                .map(|key| vec![key.allowed_ips.clone()])
                .unwrap_or_default(),
            derived_keys: Vec::new(),
        })
        .map_err(|_| OAuthError::unavailable())?;
    audit::record(
        &mut tx,
        "auth.token_refresh",
        Some(&found.session.id.to_string()),
        Outcome::Success,
        json!({ "principal_id": found.session.principal_id, "jti": issued.claims.jti }),
    )
    .await?;
    tx.commit().await?;
    Ok(TokenResponse {
        access_token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        refresh_token: Some(next.expose_secret().to_owned()),
        scope: scope_text(&scopes),
        session_id: Some(found.session.id),
        issued_token_type: None,
    })
}

async fn audit_refresh_failure(
    tx: &mut bulkhead_store::TenantTx,
    found: Option<&PresentedRefresh>,
    reason: &'static str,
) -> Result<(), bulkhead_store::StoreError> {
    audit::record(
        tx,
        "auth.token_refresh",
        found.map(|f| f.session.id.to_string()).as_deref(),
        Outcome::Failure,
        json!({ "reason": reason }),
    )
    .await?;
    Ok(())
}

fn ok_no_store() -> Response {
    let mut response = StatusCode::OK.into_response();
    no_store(response.headers_mut());
    response
}

/// RFC 7009: revokes an access or refresh token; possession suffices. 200 whether or not the token existed.
#[utoipa::path(
    post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = crate::http::routes::openapi::TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke"),
        (status = 400, description = "`invalid_request`"),
        (status = 401, description = "A client authenticated and failed (`invalid_client`)"),
    ),
    security((), ("client_basic" = [])),
)]
async fn revoke(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match revoke_inner(&state, peer, &headers, &body).await {
        Ok(()) => ok_no_store(),
        Err(err) => err.into_response(),
    }
}

/// RFC 7009: revokes an access or refresh token. Possession suffices (revoking only ever takes
/// authority away); a client that authenticates must do so correctly. An unknown, invalid or
/// already revoked token is not an error (§2.2): the answer is 200 either way, so the endpoint
/// tells nobody whether a token existed.
async fn revoke_inner(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), OAuthError> {
    let form = Form::parse(headers, body)?;
    let text = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let host = oauth_host_tenant(state, headers).await?;
    if let Some(auth) = client_auth(headers, &form)? {
        let client_ip = request_ip(state, peer, headers);
        authenticate_client(state, &auth, host.clone(), client_ip).await?;
    }
    if is_access_token(text) {
        let Ok(token) = state.tokens().verify(text) else {
            return Ok(());
        };
        if host.as_ref().is_some_and(|t| t.id != token.tenant_id) {
            return Ok(());
        }
        let ctx = TenantContext::new(
            token.tenant_id,
            Actor::System { component: "oauth" },
            RequestId::new(),
        );
        let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
        let until = token.expires_at + chrono::Duration::seconds(bulkhead_auth::token::LEEWAY_SECS);
        tokens::revoke_access_token(&mut tx, token.token_id, until).await?;
        audit::record(
            &mut tx,
            "auth.token_revoke",
            Some(&token.claims.jti),
            Outcome::Success,
            json!({ "token_type": "access_token", "sub": token.claims.sub }),
        )
        .await?;
        tx.commit().await?;
        state
            .tokens()
            .deny_locally(token.tenant_id, token.token_id.uuid(), until);
        return Ok(());
    }
    let Ok(presented) = RefreshToken::parse(text) else {
        return Ok(());
    };
    let Ok(tenant) = refresh_tenant(state, &presented, host).await else {
        return Ok(());
    };
    let ctx = TenantContext::new(
        tenant.id,
        Actor::System { component: "oauth" },
        RequestId::new(),
    );
    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    let Some(found) = tokens::find_refresh_for_update(&mut tx, &presented.hash()).await? else {
        return Ok(());
    };
    // RFC 7009 §2.1: revoking a refresh token also invalidates the access tokens of its grant.
    let session = found.session.id;
    end_session_in(state, &mut tx, session, EndReason::Revoked).await?;
    audit::record(
        &mut tx,
        "auth.token_revoke",
        Some(&session.to_string()),
        Outcome::Success,
        json!({ "token_type": "refresh_token" }),
    )
    .await?;
    tx.commit().await?;
    state.tokens().deny_session_locally(tenant.id, session);
    Ok(())
}

/// RFC 7662: what a token of the client's own tenant is; anything else is `{"active": false}`.
#[utoipa::path(
    post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = crate::http::routes::openapi::TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The token's state", body = crate::http::routes::openapi::Introspection),
        (status = 400, description = "`invalid_request`"),
        (status = 401, description = "`invalid_client`"),
    ),
    security(("client_basic" = [])),
)]
async fn introspect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match introspect_inner(&state, peer, &headers, &body).await {
        Ok(value) => {
            let mut response = axum::Json(value).into_response();
            no_store(response.headers_mut());
            response
        }
        Err(err) => err.into_response(),
    }
}

/// RFC 7662: what a token is, for a client of the same tenant (authenticated with its API key).
/// Another tenant's token, and any token that is invalid, expired or revoked, is
/// `{"active": false}` and nothing else.
async fn introspect_inner(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, OAuthError> {
    let form = Form::parse(headers, body)?;
    let host = oauth_host_tenant(state, headers).await?;
    let Some(auth) = client_auth(headers, &form)? else {
        return Err(OAuthError::invalid_client(false));
    };
    let client_ip = request_ip(state, peer, headers);
    let (key, tenant) = authenticate_client(state, &auth, host, client_ip).await?;
    let text = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let inactive = json!({ "active": false });
    let ctx = TenantContext::new(
        tenant.id,
        Actor::ApiKey {
            key_id: key.key_id,
            scopes: key.scopes.clone(),
        },
        RequestId::new(),
    );
    if is_access_token(text) {
        // Exactly the resolver's decision (crate::http::resolve::authorize_access_token): a token the
        // API would refuse is inactive here, and the scope reported is what it may do now.
        let standing = match crate::http::resolve::authorize_access_token(
            state,
            text,
            Some(tenant.clone()),
            crate::http::resolve::TokenUse::Introspection,
            RequestId::new(),
        )
        .await
        {
            Ok(standing) => standing,
            Err(ApiError::Unavailable) => return Err(OAuthError::unavailable()),
            Err(_) => return Ok(inactive),
        };
        let effective = standing
            .ctx
            .actor()
            .scopes()
            .map(scope_text)
            .unwrap_or_default();
        let c = &standing.token.claims;
        let mut answer = json!({
            "active": true,
            "token_type": "Bearer",
            "scope": effective,
            "client_id": c.client_id,
            "sub": c.sub,
            "sub_type": c.sub_type,
            "aud": c.aud,
            "iss": c.iss,
            "exp": c.exp,
            "iat": c.iat,
            "nbf": c.nbf,
            "jti": c.jti,
            "tenant_id": c.tenant_id,
            "sid": c.sid,
            "act": c.act,
            "resource_prefix": c.resource_prefix,
        });
        // A resource server enforces the network restrictions of the keys the token comes from
        // as the API does: its caller's address must lie in a network of every list. Those
        // copied at mint, and the keys' allowlists as they are now (a narrowed key binds).
        let mut networks = c.allowed_networks.clone();
        for list in &standing.networks {
            let list: Vec<String> = list.iter().map(ToString::to_string).collect();
            if !networks.contains(&list) {
                networks.push(list);
            }
        }
        if !networks.is_empty() {
            answer["allowed_networks"] = json!(networks);
        }
        return Ok(answer);
    }
    let Ok(presented) = RefreshToken::parse(text) else {
        return Ok(inactive);
    };
    if presented.tenant() != *tenant.id.uuid().as_bytes() {
        return Ok(inactive);
    }
    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    let found = tokens::find_refresh_for_update(&mut tx, &presented.hash()).await?;
    let now = state.clock().now();
    let found = found.filter(|f| f.status == RefreshStatus::Active && f.session.is_live(now));
    let Some(found) = found else {
        tx.commit().await?;
        return Ok(inactive);
    };
    // What a refresh would grant now: the session's scopes cut to its principal's roles; a
    // disabled principal's refresh token is inactive.
    let effective =
        crate::service::ceilings::session_scopes(&mut tx, &found.session, state.clock().now())
            .await?;
    tx.commit().await?;
    let Some(effective) = effective else {
        return Ok(inactive);
    };
    let s = &found.session;
    Ok(json!({
        "active": true,
        "token_type": "refresh_token",
        "scope": scope_text(&effective),
        "client_id": s.client_id,
        "sub": s.principal_id,
        "exp": s.expires_at.min(s.idle_expires_at).timestamp(),
        "iat": s.created_at.timestamp(),
        "tenant_id": tenant.id.to_string(),
        "sid": s.id.to_string(),
    }))
}
