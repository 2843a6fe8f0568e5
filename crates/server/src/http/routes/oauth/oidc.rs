//! OpenID Connect: the discovery document (OpenID Connect Discovery 1.0) and `userinfo`
//! (OpenID Connect Core 1.0 §5.3). ID tokens come from the code grant
//! ([`crate::service::oauth::oidc`]).
//!
//! - `GET /.well-known/openid-configuration`: the RFC 8414 document (the same fields, read from
//!   it, so the two never disagree) plus what OpenID Connect Discovery requires, on the tenant's
//!   own origin. The issuer is the tenant's, as in the RFC 8414 document, the ID and access
//!   tokens and the authorization responses' `iss` (RFC 9207): an OpenID Connect client compares
//!   them all.
//! - `GET`/`POST /oauth/userinfo`: behind tenant resolution like `/v1`, so a missing, invalid,
//!   expired, revoked or other tenant's token is the tenant API's one 401 with its
//!   `WWW-Authenticate` challenge. A valid credential without `openid` (an API key, a login's or
//!   an agent's token, a token whose consent holds no `openid`) is the 403 `missing-scope`
//!   problem, with the step-up challenge `scope="… openid"` for a token.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_core::{Actor, Scope};
use bulkhead_store::tenant::{oauth_grants, users};
use bulkhead_store::{Access, StoreError};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::http::apidoc::OpDoc;
use crate::http::authz::{Confinement, RouteAccess, RouteTable};
use crate::http::error::ApiError;
use crate::http::extract::Tenant;
use crate::http::needed_scope::NeededScope;
use crate::http::state::AppState;
use crate::service::oauth::oidc::{self, Identity, CLAIMS_SUPPORTED, IDENTITY_SCOPES, OPENID};

pub use crate::http::authz::USERINFO_PATH;

/// The routes.
pub fn routes() -> RouteTable {
    const ITSELF: Confinement =
        Confinement::Admitted("answers only about the credential's own subject");
    let userinfo_doc = || {
        OpDoc::ok::<UserInfo>(200, "The claims the consent allows")
            .summary(
                "OpenID Connect userinfo: the signed-in user's claims, for an access token \
                 whose consent holds `openid`.",
            )
            .forbidden("The credential's consent does not hold `openid`")
    };
    RouteTable::tagged("oauth")
        .get(
            "/.well-known/openid-configuration",
            RouteAccess::Public,
            configuration,
        )
        .doc(
            OpDoc::ok::<OpenIdConfiguration>(200, "The discovery document")
                .summary(
                    "OpenID Connect Discovery 1.0 provider metadata of the tenant whose \
                     subdomain is asked.",
                )
                .answer(404, "No organisation is served under this host name")
                .answer(429, "Rate limited per address; see `Retry-After`"),
        )
        .get(USERINFO_PATH, RouteAccess::Authenticated, userinfo)
        .confine(ITSELF)
        .doc(userinfo_doc())
        .post(USERINFO_PATH, RouteAccess::Authenticated, userinfo)
        .confine(ITSELF)
        .doc(userinfo_doc())
}

/// OpenID Connect Discovery 1.0 provider metadata: the RFC 8414 document's fields and these.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenIdConfiguration {
    /// The tenant's issuer, its own origin (the ID tokens' `iss`).
    pub issuer: String,
    /// The authorization endpoint (on the tenant's subdomain).
    pub authorization_endpoint: String,
    /// The token endpoint.
    pub token_endpoint: String,
    /// The userinfo endpoint.
    pub userinfo_endpoint: String,
    /// The JWKS the ID tokens are signed with.
    pub jwks_uri: String,
    /// `["code"]`.
    pub response_types_supported: Vec<String>,
    /// `["public"]`.
    pub subject_types_supported: Vec<String>,
    /// `["EdDSA"]`.
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// Every permission and `openid`, `profile`, `email`.
    pub scopes_supported: Vec<String>,
    /// The claims an ID token or `userinfo` may carry.
    pub claims_supported: Vec<String>,
}

/// The `userinfo` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    /// The user's id.
    pub sub: String,
    /// The user's tenant.
    pub tenant_id: String,
    /// With `email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// With `email`: always `false` (Bulkhead does not verify addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

async fn configuration(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // The RFC 8414 document of the host's tenant, so the two never disagree.
    let mut document = match super::discovery::tenant_metadata(&state, &headers).await {
        Ok(Value::Object(document)) => document,
        Ok(_) => return ApiError::Unavailable.into_response(),
        Err(err) => return err.into_response(),
    };
    let issuer = document
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    scopes.extend(IDENTITY_SCOPES);
    let additions = json!({
        "userinfo_endpoint": format!("{issuer}{USERINFO_PATH}"),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "scopes_supported": scopes,
        "claims_supported": CLAIMS_SUPPORTED,
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    });
    if let Value::Object(additions) = additions {
        document.extend(additions);
    }
    super::discovery::cached(axum::Json(Value::Object(document)).into_response())
}

/// The 403 of a credential whose consent does not hold `openid`: the `missing-scope` problem
/// (the step-up challenge is added for a token by [`crate::http::challenge::step_up`]).
fn without_openid() -> Response {
    let body = json!({
        "type": "https://bulkhead.dev/problems/missing-scope",
        "title": "Forbidden",
        "status": 403,
        "detail": "the credential lacks the scope `openid`",
    });
    let mut response = (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
        .extensions_mut()
        .insert(NeededScope(OPENID.to_owned()));
    response
}

async fn userinfo(State(state): State<AppState>, Tenant(ctx): Tenant) -> Response {
    // Only an authorization code's token (a human's, with a session) can hold `openid`.
    let (subject, session) = match ctx.actor() {
        Actor::Token {
            subject,
            human: true,
            session_id: Some(session),
            ..
        } => (subject.clone(), *session),
        _ => return without_openid(),
    };
    let Some(user) = oidc::user_of(&subject) else {
        return without_openid();
    };
    let looked_up = async {
        let mut tx = state.store().begin(&ctx, Access::ReadOnly).await?;
        let link = oauth_grants::session_link(&mut tx, session).await?;
        let identity = match link.grant {
            Some(grant) => match oauth_grants::get(&mut tx, grant).await {
                Ok(grant) => {
                    oidc::granted_now(&grant.identity_scopes, link.identity_scopes.as_deref())
                }
                Err(StoreError::NotFound) => Identity::default(),
                Err(err) => return Err(err),
            },
            None => Identity::default(),
        };
        let record = users::get(&mut tx, user).await?;
        tx.commit().await?;
        Ok::<_, StoreError>((identity, record))
    }
    .await;
    let mut response = match looked_up {
        Ok((identity, _)) if !identity.openid() => return without_openid(),
        Ok((identity, record)) => {
            axum::Json(oidc::userinfo(ctx.tenant_id(), &record, &identity)).into_response()
        }
        Err(StoreError::NotFound) => return ApiError::InvalidToken.into_response(),
        Err(err) => return ApiError::from(err).into_response(),
    };
    crate::http::error::no_store(response.headers_mut());
    response
}
