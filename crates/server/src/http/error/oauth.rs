//! The OAuth 2.0 error response: the second of the two shapes errors take over HTTP (the other
//! is the problem document of the parent module), for the endpoints OAuth clients call.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_store::StoreError;

use super::no_store;

/// An OAuth 2.0 error response (RFC 6749 §5.2, RFC 7009 §2.2.1): the token, revocation and
/// introspection endpoints answer in this form so that any OAuth client library understands
/// them. Mapped here, beside the problem-details mapping, so there is still one place where
/// errors become HTTP.
#[derive(Debug, Clone, thiserror::Error)]
#[error("oauth error {code}")]
pub struct OAuthError {
    /// The RFC 6749 error code.
    pub code: &'static str,
    /// `error_description`: never echoes a credential.
    pub description: Cow<'static, str>,
    /// Whether the client authenticated with HTTP Basic (then `invalid_client` is a 401 with a
    /// Basic challenge, RFC 6749 §5.2).
    pub basic_challenge: bool,
}

impl OAuthError {
    fn new(code: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: description.into(),
            basic_challenge: false,
        }
    }
    /// `invalid_request`: a parameter is missing, repeated or malformed.
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new("invalid_request", description)
    }
    /// `invalid_client`: client authentication failed.
    pub fn invalid_client(basic_challenge: bool) -> Self {
        Self {
            basic_challenge,
            ..Self::new("invalid_client", "client authentication failed")
        }
    }
    /// `invalid_grant`: the grant (refresh token, subject token) is invalid, expired or revoked.
    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new("invalid_grant", description)
    }
    /// `invalid_scope`: the requested scope is unknown or exceeds what may be granted.
    pub fn invalid_scope(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new("invalid_scope", description)
    }
    /// `invalid_target` (RFC 8693): the requested audience or resource is not acceptable.
    pub fn invalid_target(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new("invalid_target", description)
    }
    /// `unsupported_grant_type`.
    pub fn unsupported_grant_type() -> Self {
        Self::new(
            "unsupported_grant_type",
            "supported: authorization_code, client_credentials, refresh_token, urn:ietf:params:oauth:grant-type:token-exchange",
        )
    }
    /// `unauthorized_client`: the client may not use this grant.
    pub fn unauthorized_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new("unauthorized_client", description)
    }
    /// `temporarily_unavailable` (503): retry later; never a pass.
    pub fn unavailable() -> Self {
        Self::new(
            "temporarily_unavailable",
            "the service is temporarily unavailable; retry later",
        )
    }
    /// `server_error` (500), after logging the cause.
    pub fn server_error(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "oauth endpoint failed");
        Self::new(
            "server_error",
            "an internal error occurred; it has been logged",
        )
    }
}

impl From<StoreError> for OAuthError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))
            | StoreError::TenantMoving
            | StoreError::LocationMismatch
            | StoreError::Timeout
            | StoreError::WrongRegion(_) => OAuthError::unavailable(),
            other => OAuthError::server_error(other),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = match self.code {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = serde_json::json!({
            "error": self.code,
            "error_description": self.description,
        });
        let mut response = (status, axum::Json(body)).into_response();
        no_store(response.headers_mut());
        if status == StatusCode::UNAUTHORIZED {
            let challenge = if self.basic_challenge {
                "Basic realm=\"bulkhead\""
            } else {
                "Bearer realm=\"bulkhead\""
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
