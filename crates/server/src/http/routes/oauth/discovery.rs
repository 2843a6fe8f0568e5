//! The documents a client discovers the server by: authorization-server metadata (RFC 8414) and
//! the token signing keys (RFC 7517).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bulkhead_core::Scope;
use serde_json::json;

use super::TOKEN_EXCHANGE;
use crate::http::state::AppState;

pub(super) async fn metadata(State(state): State<AppState>) -> Response {
    let issuer = &state.config().tokens.issuer;
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    let mut response = axum::Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        // Served on each tenant's subdomain: a client of a tenant uses the tenant's host.
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        // RFC 7591, on each tenant's subdomain; a tenant that has not enabled it answers 403.
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
    .into_response();
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
