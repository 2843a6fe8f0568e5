//! Extractors: the tenant context, and JSON/query/path extractors whose rejections are problems.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use bulkhead_core::{Scope, TenantContext};

use crate::http::error::ApiError;
use crate::service::audit_line::AuditLine;

/// The request's tenant context, put there by [`crate::http::resolve`]. Absent means the route was
/// mounted outside the resolving middleware: fail closed with 401, never run without a tenant.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantContext);

impl Tenant {
    /// Fails with 403 naming the scope unless the credential holds it.
    pub fn require(&self, scope: Scope) -> Result<&TenantContext, ApiError> {
        if self.0.has_scope(scope) {
            Ok(&self.0)
        } else {
            audit_forbidden(&self.0, scope, "route");
            Err(ApiError::MissingScope(scope))
        }
    }
}

/// The audit event of an authorization refusal (403).
pub fn audit_forbidden(ctx: &TenantContext, scope: Scope, what: &'static str) {
    AuditLine::failure("auth.forbidden")
        .by(ctx)
        .missing(scope, what)
        .warn("permission denied");
    crate::service::audit_log::forbidden_in_scope(ctx, format!("missing {scope} ({what})"));
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantContext>()
            .cloned()
            .map(Tenant)
            .ok_or(ApiError::Unauthorized)
    }
}

/// JSON body; rejections become 400/413/415/422 problems.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// A JSON body not yet parsed: the content type checked (415) and the route's body limit
/// applied (413) as [`Json`] does, the parsing left to the handler. For bodies whose parsing
/// costs milliseconds (a tool call's 256 KiB input), so that it can run off the async runtime:
/// parsed there, it held every other request that runtime thread served.
#[derive(Debug)]
pub struct JsonBytes(pub bytes::Bytes);

impl JsonBytes {
    /// Parses the body as [`Json`] would, with the same problems (400 syntax, 422 data).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        Ok(axum::Json::<T>::from_bytes(&self.0)?.0)
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed, parsed as a media
/// type: exactly what [`Json`] (axum's `json_content_type`) accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(mime) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
    else {
        return false;
    };
    mime.type_() == "application"
        && (mime.subtype() == "json" || mime.suffix().is_some_and(|name| name == "json"))
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        bytes::Bytes::from_request(request, state)
            .await
            .map(JsonBytes)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(rejection.body_text().into())
                }
            })
    }
}

/// Query string; rejections become 400 problems.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters; rejections become 400 problems.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);
