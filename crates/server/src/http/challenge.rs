//! The `WWW-Authenticate` challenge of the tenant API's 401s names where Bulkhead's own
//! protected-resource metadata is (RFC 9728 §5.1), so a client that meets a 401 can discover the
//! authorization server from it.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::http::routes::oauth_resources::OWN_METADATA_PATH;
use crate::http::state::AppState;

/// Adds `resource_metadata="<issuer>/.well-known/oauth-protected-resource"` to a 401's Bearer
/// challenge.
pub(crate) async fn resource_metadata(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if response.status() != StatusCode::UNAUTHORIZED {
        return response;
    }
    let Some(challenge) = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("Bearer "))
    else {
        return response;
    };
    let issuer = state.config().tokens.issuer.trim_end_matches('/');
    let with_metadata = format!("{challenge}, resource_metadata=\"{issuer}{OWN_METADATA_PATH}\"");
    if let Ok(value) = HeaderValue::from_str(&with_metadata) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
