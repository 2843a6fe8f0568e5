//! HTTP routes, one module per resource.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod delegation;
pub mod health;
pub mod oauth;
pub mod sessions;
pub mod webhooks;

use axum::http::Method;

use crate::error::ApiError;

/// Every (method, path) the app serves, paths in the router's `{param}` form. Checked against
/// the router over HTTP and against the OpenAPI document by `tests/api/openapi.rs`.
///
/// Interim: a list kept by hand until routes are declared in one table the router is built
/// from; then this function reads that table.
pub fn served_routes() -> Vec<(Method, &'static str)> {
    SERVED_ROUTES.to_vec()
}

const SERVED_ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/healthz"),
    (Method::GET, "/readyz"),
    (Method::GET, "/metrics"),
    (Method::GET, "/openapi.json"),
    (Method::POST, "/oauth/token"),
    (Method::POST, "/oauth/revoke"),
    (Method::POST, "/oauth/introspect"),
    (Method::GET, "/.well-known/oauth-authorization-server"),
    (Method::GET, "/.well-known/jwks.json"),
    (Method::GET, audit::LOG_KEY_PATH),
    (Method::POST, "/v1/auth/login"),
    (Method::POST, "/v1/auth/logout"),
    (Method::GET, "/v1/auth/sessions"),
    (Method::DELETE, "/v1/auth/sessions/{id}"),
    (Method::GET, "/v1/token-policy"),
    (Method::PUT, "/v1/token-policy"),
    (Method::GET, "/v1/sessions"),
    (Method::POST, "/v1/sessions"),
    (Method::GET, "/v1/sessions/{id}"),
    (Method::PATCH, "/v1/sessions/{id}"),
    (Method::DELETE, "/v1/sessions/{id}"),
    (Method::GET, "/v1/api-keys"),
    (Method::POST, "/v1/api-keys"),
    (Method::POST, "/v1/api-keys/revoke-all"),
    (Method::GET, "/v1/api-keys/{id}"),
    (Method::PATCH, "/v1/api-keys/{id}"),
    (Method::POST, "/v1/api-keys/{id}/rotate"),
    (Method::POST, "/v1/api-keys/{id}/revoke"),
    (Method::GET, "/v1/key-policy"),
    (Method::PUT, "/v1/key-policy"),
    (Method::GET, "/v1/webhooks/endpoints"),
    (Method::POST, "/v1/webhooks/endpoints"),
    (Method::GET, "/v1/webhooks/endpoints/{id}"),
    (Method::PATCH, "/v1/webhooks/endpoints/{id}"),
    (Method::DELETE, "/v1/webhooks/endpoints/{id}"),
    (Method::POST, "/v1/webhooks/endpoints/{id}/rotate-secret"),
    (Method::POST, "/v1/webhooks/endpoints/{id}/test"),
    (Method::POST, "/v1/webhooks/endpoints/{id}/recover"),
    (Method::POST, "/v1/webhooks/messages"),
    (Method::GET, "/v1/webhooks/messages/{id}"),
    (Method::GET, "/v1/webhooks/messages/{id}/attempts"),
    (Method::POST, "/v1/webhooks/messages/{id}/resend"),
    (Method::GET, "/v1/audit/events"),
    (Method::POST, "/v1/audit/checkpoints"),
    (Method::GET, "/v1/audit/checkpoints/latest"),
    (Method::GET, "/v1/audit/proofs/inclusion"),
    (Method::GET, "/v1/audit/proofs/consistency"),
    (Method::GET, "/v1/audit/export"),
];

/// The page size a list request asked for, or `default`; outside `1..=max` is refused (422), not
/// silently clamped.
pub(crate) fn page_limit(requested: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = requested.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(ApiError::Invalid(
            format!("limit is between 1 and {max}").into(),
        ));
    }
    Ok(limit)
}

/// List queries fetch `limit + 1` rows: one extra row tells whether another page exists without
/// a count query. This cuts the page to `limit` and names the cursor of the next page, if any.
pub(crate) fn into_page<T, C>(
    mut rows: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> C,
) -> (Vec<T>, Option<C>) {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        let cursor = rows.last().map(&cursor_of);
        (rows, cursor)
    } else {
        (rows, None)
    }
}
