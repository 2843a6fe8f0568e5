//! The documents a client discovers the server by: authorization-server metadata (RFC 8414), on
//! each tenant's own origin, and the token signing keys (RFC 7517), the deployment's, on every
//! host.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bulkhead_core::Scope;
use serde_json::{json, Value};

use super::TOKEN_EXCHANGE;
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// RFC 8414 metadata of the tenant the host names: its issuer is the tenant's own origin, and
/// every endpoint is named under it. The deployment's host (no tenant) and a subdomain that
/// names no tenant both answer the unknown tenant's 404: an authorization server here is always
/// a tenant's, so a document naming the deployment would name an issuer no token carries.
pub(super) async fn metadata(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match tenant_metadata(&state, &headers).await {
        Ok(document) => cached(axum::Json(document).into_response()),
        Err(err) => err.into_response(),
    }
}

/// The RFC 8414 document of the host's tenant (also the base of the OpenID Connect one).
pub(super) async fn tenant_metadata(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Value, ApiError> {
    let host = crate::http::resolve::request_host(headers);
    let tenant = crate::http::resolve::host_tenant(state, host)
        .await?
        .ok_or(ApiError::UnknownTenant)?;
    let issuer = super::tenant_issuer(state, &tenant);
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    Ok(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth/token"),
        // The signing keys are the deployment's, served on every host: `iss` and `tenant_id`
        // tell tenants' tokens apart, not the key.
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        // RFC 7591; a tenant that has not enabled it answers 403.
        "registration_endpoint": format!("{issuer}/oauth/register"),
        // A `client_id` may be an `https` URL (a tenant setting, off by default).
        "client_id_metadata_document_supported": true,
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token", TOKEN_EXCHANGE],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes,
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
    }))
}

/// A metadata document's caching.
pub(super) fn cached(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

pub(super) async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(state.tokens().jwks()).into_response();
    // Short: a key is published a full rotation period before it signs, so a cached copy only
    // needs to be younger than the time between rotations.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
