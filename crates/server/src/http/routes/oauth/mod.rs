//! The OAuth 2.0 endpoints: token (RFC 6749), revocation (RFC 7009), introspection (RFC 7662),
//! authorization-server metadata (RFC 8414) and the JWKS (RFC 7517).
//!
//! They follow the standards to the letter so that any OAuth client library works unchanged:
//! form-encoded requests, a parameter sent twice is `invalid_request` (RFC 6749 §3.2), errors in
//! the RFC 6749 §5.2 JSON form, `Cache-Control: no-store` on everything carrying a token.
//!
//! # Where things are
//! - this module: the routes, and `POST /oauth/token`'s dispatch by `grant_type`;
//! - [`form`]: the form body; [`client_auth`]: client authentication (HTTP Basic or body
//!   credentials, never both; a client is an API key);
//! - one module per grant, each parsing its parameters, authenticating what is presented and
//!   calling its service in [`crate::service::oauth`], which checks, mints and audits:
//!   [`client_credentials`], [`refresh_token`], [`token_exchange`] (RFC 8693 delegation);
//! - [`revocation`], [`introspection`], and [`discovery`] (metadata and JWKS).
//!
//! The authorization-code grant's front door, the authorization endpoint with its login and
//! consent pages, is [`authorize`]; its token-endpoint half is [`authorization_code`].
//!
//! A new grant is a new module here beside its service
//! module, one arm in the dispatch of `token_inner`, and its name in the metadata's
//! `grant_types_supported` ([`discovery`]).

pub mod authorization_code;
pub mod authorize;
mod back;
mod browser;
pub mod client_auth;
pub mod client_credentials;
pub mod discovery;
pub mod form;
pub mod introspection;
mod metadata_client;
pub mod oidc;
mod pages;
mod params;
mod prompt;
pub mod refresh_token;
pub mod register;
pub mod revocation;
pub mod token_exchange;

use std::net::{IpAddr, SocketAddr};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bulkhead_auth::RefreshToken;
use bulkhead_core::{AuthSessionId, TenantId};
use bulkhead_store::placement::registry::{Tenant, TenantStatus};
use serde::Serialize;

use crate::http::apidoc::OpDoc;
use crate::http::authz::{RouteAccess, RouteTable};
use crate::http::error::{no_store, ApiError, OAuthError};
use crate::http::resolve::host_tenant;
use crate::http::routes::openapi::{Introspection, Jwks, ServerMetadata, TokenForm, TokenRequest};
use crate::http::state::AppState;
use crate::service::oauth::refresh_token::INVALID_REFRESH;
use crate::service::oauth::{GrantError, IssuedTokens, Issuer};
use crate::service::tokens::scope_text;

/// RFC 8693's grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The routes (outside tenant resolution: the client authenticates itself here).
pub fn routes() -> RouteTable {
    const SELF: RouteAccess = RouteAccess::SelfAuthenticating;
    RouteTable::tagged("oauth")
        .post("/oauth/token", SELF, token)
        .doc(
            OpDoc::ok::<TokenResponse>(200, "Tokens")
                .summary(
                    "RFC 6749 token endpoint: `authorization_code` (with PKCE), \
                    `client_credentials`, `refresh_token`, and RFC 8693 token exchange.",
                )
                .form::<TokenRequest>()
                .answer(
                    400,
                    "`invalid_request`, `invalid_grant`, `invalid_scope`, \
                    `invalid_target`, `unauthorized_client` or \
                    `unsupported_grant_type`",
                )
                .answer(401, "`invalid_client`")
                .client_auth(true),
        )
        .merge(authorize::routes())
        .post("/oauth/register", SELF, register::register)
        .doc(
            OpDoc::ok::<register::Registered>(201, "The client, with its secret (shown once)")
                .summary(
                    "RFC 7591 dynamic client registration, on the tenant's subdomain, when \
                    the tenant enabled it (`/v1/oauth-settings`).",
                )
                .body::<register::RegistrationRequest>()
                .answer(
                    400,
                    "`invalid_redirect_uri` or `invalid_client_metadata` (RFC 7591 §3.2.2)",
                )
                .answer(403, "`access_denied`: registration is not enabled")
                .answer(404, "No organisation is served under this host name")
                .answer(
                    409,
                    "`client_limit_reached`: the organisation has 100 clients",
                )
                .answer(429, "`rate_limited` per source address or per organisation"),
        )
        .merge(oidc::routes())
        .post("/oauth/revoke", SELF, revocation::revoke)
        .doc(
            OpDoc::empty(200, "Revoked, or nothing to revoke")
                .summary(
                    "RFC 7009: revokes an access or refresh token; possession \
                    suffices. 200 whether or not the token existed.",
                )
                .form::<TokenForm>()
                .answer(400, "`invalid_request`")
                .answer(401, "A client authenticated and failed (`invalid_client`)")
                .client_auth(true),
        )
        .post("/oauth/introspect", SELF, introspection::introspect)
        .doc(
            OpDoc::ok::<Introspection>(200, "The token's state")
                .summary(
                    "RFC 7662: what a token of the client's own tenant is; anything \
                    else is `{\"active\": false}`.",
                )
                .form::<TokenForm>()
                .answer(400, "`invalid_request`")
                .answer(401, "`invalid_client`")
                .client_auth(false),
        )
        .get(
            "/.well-known/oauth-authorization-server",
            RouteAccess::Public,
            discovery::metadata,
        )
        .doc(
            OpDoc::ok::<ServerMetadata>(200, "The metadata")
                .summary(
                    "RFC 8414 authorization-server metadata of the tenant whose subdomain is \
                     asked: its issuer is the tenant's own origin.",
                )
                .answer(404, "No organisation is served under this host name")
                .answer(429, "Rate limited per address; see `Retry-After`"),
        )
        .get(
            "/.well-known/jwks.json",
            RouteAccess::Public,
            discovery::jwks,
        )
        .doc(
            OpDoc::ok::<Jwks>(200, "The JWKS")
                .summary(
                    "The token signing keys (RFC 7517), the next one published before \
                    it signs.",
                )
                .answer(429, "Rate limited per address; see `Retry-After`"),
        )
}

/// A token response (RFC 6749 §5.1), also the body of a successful login.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The refresh token, when one was issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The auth session, when one was created or used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<AuthSessionId>,
    /// RFC 8693 §2.2.1: the type of the issued token, on token-exchange responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// OpenID Connect: the ID token, from the code grant when `openid` was granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl TokenResponse {
    /// The answer for what a grant (or a login) issued.
    pub(crate) fn new(issued: IssuedTokens, issued_token_type: Option<&'static str>) -> Self {
        TokenResponse {
            access_token: issued.access.token,
            token_type: "Bearer",
            expires_in: issued.access.expires_in,
            refresh_token: issued.refresh.map(|r| r.expose_secret().to_owned()),
            scope: scope_text(&issued.scopes),
            session_id: issued.session_id,
            issued_token_type,
            id_token: None,
        }
    }
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        let mut response = axum::Json(self).into_response();
        no_store(response.headers_mut());
        response
    }
}

/// The parts of the state the OAuth services use.
pub(crate) fn issuer(state: &AppState) -> Issuer<'_> {
    Issuer {
        store: state.store(),
        clock: state.clock(),
        tokens: state.tokens(),
        ceilings: state.ceilings(),
    }
}

/// A tenant's issuer ([`crate::service::tokens::TokenSettings::tenant_issuer`]): its tokens'
/// `iss`, the issuer of its metadata and of its authorization responses.
pub(crate) fn tenant_issuer(state: &AppState, tenant: &Tenant) -> String {
    state.config().tokens.tenant_issuer(&tenant.slug)
}

/// A grant's refusal as an OAuth error. `basic`: the client authenticated with HTTP Basic, so
/// `invalid_client` answers with a Basic challenge.
pub(crate) fn grant_error(err: GrantError, basic: bool) -> OAuthError {
    match err {
        GrantError::InvalidGrant(description) => OAuthError::invalid_grant(description),
        GrantError::InvalidScope(description) => OAuthError::invalid_scope(description),
        GrantError::InvalidTarget(description) => OAuthError::invalid_target(description),
        GrantError::InvalidClient => OAuthError::invalid_client(basic),
        GrantError::Unavailable => OAuthError::unavailable(),
        GrantError::Store(err) => err.into(),
    }
}

/// Without a Basic challenge (`grant_error` with `basic` false).
impl From<GrantError> for OAuthError {
    fn from(err: GrantError) -> Self {
        grant_error(err, false)
    }
}

/// The caller's address, through the trusted proxies.
pub(crate) fn request_ip(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    crate::service::credentials::headers_client_ip(
        Some(peer.ip()),
        headers,
        &state.config().trusted_proxies,
    )
}

/// The tenant the request's host names, in OAuth terms: an unknown subdomain is an invalid
/// request, a registry failure is `temporarily_unavailable`.
pub(crate) async fn oauth_host_tenant(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Tenant>, OAuthError> {
    host_tenant(state, crate::http::resolve::request_host(headers))
        .await
        .map_err(|err| match err {
            ApiError::Unavailable => OAuthError::unavailable(),
            _ => OAuthError::invalid_request("no tenant is served under this host name"),
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

/// [`claimed_tenant`] of a refresh token (the refresh grant, revocation).
pub(crate) async fn refresh_tenant(
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

async fn token(State(state): State<AppState>, request: form::FormRequest) -> Response {
    match token_inner(&state, &request).await {
        Ok(response) => response.into_response(),
        Err(err) => err.into_response(),
    }
}

/// What every grant shares (the form, the caller's address, the host's tenant, the client
/// credentials as presented), then the grant's own module.
async fn token_inner(
    state: &AppState,
    request: &form::FormRequest,
) -> Result<TokenResponse, OAuthError> {
    let (peer, headers) = (request.peer, &request.headers);
    let form = form::Form::parse(headers, &request.body)?;
    let client_ip = request_ip(state, peer, headers);
    let host_tenant = oauth_host_tenant(state, headers).await?;
    let auth = client_auth::client_auth(headers, &form)?;
    let request = GrantRequest {
        state,
        form: &form,
        auth,
        host_tenant,
        client_ip,
        headers,
    };
    match form.get("grant_type") {
        None => Err(OAuthError::invalid_request("grant_type is required")),
        Some("authorization_code") => authorization_code::grant(request).await,
        Some("client_credentials") => client_credentials::grant(request).await,
        Some("refresh_token") => refresh_token::grant(request).await,
        Some(TOKEN_EXCHANGE) => token_exchange::grant(request).await,
        Some(_) => Err(OAuthError::unsupported_grant_type()),
    }
}

/// What every grant is given: the form, the client credentials as presented, the host's tenant,
/// the caller's address and the request's headers.
pub(super) struct GrantRequest<'a> {
    state: &'a AppState,
    form: &'a form::Form,
    auth: Option<client_auth::ClientAuth>,
    host_tenant: Option<Tenant>,
    client_ip: Option<IpAddr>,
    headers: &'a HeaderMap,
}
