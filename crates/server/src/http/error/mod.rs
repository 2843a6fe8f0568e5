//! The one mapping from errors to HTTP: RFC 9457 problem details.

use std::borrow::Cow;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_core::Scope;
use bulkhead_store::StoreError;
use serde::Serialize;

mod oauth;
pub use oauth::OAuthError;

macro_rules! problem_type {
    ($slug:literal) => {
        concat!("https://bulkhead.dev/problems/", $slug)
    };
}

/// Every way a request can fail, with the status it maps to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 401: no credential, or one that is malformed, unknown, expired, revoked, of the wrong
    /// environment, or for another tenant than the subdomain. One body for all of them.
    #[error("unauthorized")]
    Unauthorized,
    /// 401: a bearer access token (JWT) that is malformed, forged, expired, revoked or for
    /// another tenant. One body for all of them; `WWW-Authenticate` says `invalid_token`.
    #[error("invalid access token")]
    InvalidToken,
    /// 401 on the operator listener: no operator key, or one that is malformed, unknown, revoked
    /// or expired (a tenant key or token included). One body for all of them.
    #[error("operator unauthorized")]
    OperatorUnauthorized,
    /// 403 on the operator listener: the operator key lacks this scope (named).
    #[error("missing operator scope {0}")]
    MissingOperatorScope(bulkhead_core::OperatorScope),
    /// 401: login refused: unknown email, wrong password or disabled user (one answer).
    #[error("invalid login")]
    InvalidLogin,
    /// 429: too many failed logins for this account name or from this address; retry after the
    /// given seconds.
    #[error("login throttled")]
    LoginThrottled(u64),
    /// 403: the credential lacks a scope; the scope is named.
    #[error("missing scope {0}")]
    MissingScope(Scope),
    /// 403: the credential may not call this tool; names the scope `tools:call:<name>`.
    #[error("missing scope tools:call:{0}")]
    MissingToolScope(String),
    /// 422: screening refused tenant-supplied text; names the field and the matched rules.
    #[error("content rejected: {0}")]
    ContentRejected(Cow<'static, str>),
    /// 502: the tool's endpoint answered with a status outside 2xx; names it.
    #[error("tool answered {0}")]
    ToolFailed(u16),
    /// 502: the egress guard refused the tool's endpoint at call time (its name resolved to a
    /// denied address, or its URL no longer passes); names the rule. Nothing was sent.
    #[error("tool endpoint refused: {0}")]
    ToolEndpointRefused(String),
    /// 502: the tool's endpoint could not be reached (connect, TLS, I/O); names the class.
    #[error("tool unreachable: {0}")]
    ToolUnreachable(&'static str),
    /// 502: the tool's answer is longer than the cap.
    #[error("tool answer too large")]
    ToolResponseTooLarge(usize),
    /// 502: screening refused the tool's answer under the tenant's policy; names the rules.
    /// The answer is not returned.
    #[error("tool output rejected: {0}")]
    ToolOutputRejected(String),
    /// 504: the tool did not answer in time.
    #[error("tool timed out")]
    ToolTimeout,
    /// 503 with `Retry-After`: the bounded pool that evaluates tenant JSON Schemas is full (or
    /// this tenant holds its share of it), or the evaluation missed its deadline. Nothing was
    /// sent.
    #[error("schema evaluation busy")]
    SchemaBusy,
    /// 403: the request would create or move a resource outside the credential's resource
    /// prefix.
    #[error("outside the resource prefix")]
    OutsidePrefix,
    /// 403: a delegated or prefix-confined credential may not do this (mint, rotate or loosen
    /// API keys; see or end auth sessions): it acts for someone else, within bounds a key or a
    /// session could not carry.
    #[error("confined credential")]
    ConfinedCredential,
    /// 403: the tenant is suspended.
    #[error("tenant suspended")]
    TenantSuspended,
    /// 404: the subdomain names no tenant.
    #[error("unknown tenant")]
    UnknownTenant,
    /// 404: no such resource, or another tenant's (indistinguishable by design).
    #[error("not found")]
    NotFound,
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 400: the request is malformed (syntax, malformed id, unknown query parameter).
    #[error("bad request: {0}")]
    BadRequest(Cow<'static, str>),
    /// 409: conflicts with existing state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 413: body over the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415: not JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 422: well-formed but invalid.
    #[error("invalid: {0}")]
    Invalid(Cow<'static, str>),
    /// 429: a rate limit was reached; names the level (`address` before authentication, then
    /// `global`, `tenant`, `agent`, `endpoint`).
    #[error("rate limited at the {0} level")]
    RateLimited(&'static str),
    /// 503: the database is unreachable or not ready.
    #[error("unavailable")]
    Unavailable,
    /// 503, no `Retry-After`: an append-only log no longer extends its latest signed checkpoint;
    /// nothing was signed or exported until it is restored (docs/operator-api.md).
    #[error("audit log inconsistent")]
    LogInconsistent,
    /// 503 with `Retry-After`: the tenant is frozen for a move between tiers; nothing was
    /// changed and the same request will succeed shortly.
    #[error("tenant moving")]
    TenantMoving,
    /// 421: the tenant's data lives in a region this process does not serve (named); with a
    /// configured base URL for that region the request is redirected there instead.
    #[error("wrong region: {0}")]
    WrongRegion(String),
    /// 307 to the tenant's region (configured with `--region-endpoint`): same method and body.
    #[error("redirected to the tenant's region")]
    RegionRedirect(String),
    /// 408: the request (its body and the answer) did not complete within the request timeout
    /// (seconds); the connection is closed.
    #[error("request timeout")]
    RequestTimeout(u64),
    /// 503 with `Retry-After`: the password-hashing pool (or this tenant's share of it, or the
    /// anonymous budget) is full; nothing was changed.
    #[error("password hashing busy")]
    HashingBusy,
    /// 403: the write would pass the tenant's quota of a kind (docs/quotas.md); names the kind,
    /// the limit and the usage. Nothing was stored; the refusal is audited (`quota.exceeded`).
    #[error("quota {kind} exceeded")]
    QuotaExceeded {
        /// The kind (`sessions`, `stored_bytes`, ...).
        kind: String,
        /// The limit in force.
        limit: i64,
        /// The usage before the refused write.
        usage: i64,
        /// What the refused write would have added.
        requested: i64,
    },
    /// 500: a bug or an unexpected failure. Logged with its cause; the client sees nothing of it.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Carried in the extensions of a `quota-exceeded` answer, for the middleware that audits the
/// refusal ([`crate::http::quotas::audit_refusals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// The kind.
    pub kind: String,
    /// The limit in force.
    pub limit: i64,
    /// The usage before the refused write.
    pub usage: i64,
    /// What the refused write would have added.
    pub requested: i64,
}

impl QuotaRefusal {
    /// The refusal as answered to a prefix-confined credential: kind and limit, no usage. Counts
    /// are tenant-wide, which `GET /v1/usage` denies such a credential, so neither the `usage`
    /// member nor the detail names them (the audit event still records them).
    pub fn confined_response(&self) -> Response {
        let body = Problem {
            kind: problem_type!("quota-exceeded"),
            title: "Quota exceeded",
            status: StatusCode::FORBIDDEN.as_u16(),
            detail: format!(
                "the tenant's quota of {} is {}, and this write would pass it; nothing was \
                 stored (delete some, or ask the operator to raise the limit)",
                self.kind, self.limit
            )
            .into(),
            quota: Some(self.kind.clone()),
            limit: Some(self.limit),
            usage: None,
        };
        let mut response = (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response.extensions_mut().insert(self.clone());
        response
    }
}

/// An RFC 9457 problem details body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Short summary of the type.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// Explanation of this occurrence.
    #[schema(value_type = String)]
    pub detail: Cow<'static, str>,
    /// `quota-exceeded` only: the quota's kind (`sessions`, `stored_bytes`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// `quota-exceeded` only: the limit in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// `quota-exceeded` only: the usage before the refused write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<i64>,
}

/// Carried in response extensions so the logging middleware can report what the client was not
/// told.
#[derive(Debug, Clone)]
pub struct InternalErrorReport(pub String);

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str, Cow<'static, str>) {
        use ApiError::*;
        match self {
            Unauthorized => (
                StatusCode::UNAUTHORIZED,
                problem_type!("unauthorized"),
                "Unauthorized",
                "a valid API key for this tenant is required as `Authorization: Bearer <key>`"
                    .into(),
            ),
            InvalidToken => (
                StatusCode::UNAUTHORIZED,
                problem_type!("invalid-token"),
                "Unauthorized",
                "the access token is invalid, expired, revoked or not for this tenant".into(),
            ),
            OperatorUnauthorized => (
                StatusCode::UNAUTHORIZED,
                problem_type!("unauthorized"),
                "Unauthorized",
                "a valid operator key is required as `Authorization: Bearer bk_op_…`".into(),
            ),
            MissingOperatorScope(scope) => (
                StatusCode::FORBIDDEN,
                problem_type!("missing-scope"),
                "Forbidden",
                format!("the operator key lacks the scope `{scope}`").into(),
            ),
            InvalidLogin => (
                StatusCode::UNAUTHORIZED,
                problem_type!("invalid-login"),
                "Unauthorized",
                "the email or password is wrong".into(),
            ),
            LoginThrottled(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                problem_type!("login-throttled"),
                "Too Many Requests",
                "too many failed logins; retry after the time in Retry-After".into(),
            ),
            MissingScope(scope) => (
                StatusCode::FORBIDDEN,
                problem_type!("missing-scope"),
                "Forbidden",
                format!("the credential lacks the scope `{scope}`").into(),
            ),
            MissingToolScope(name) => (
                StatusCode::FORBIDDEN,
                problem_type!("missing-scope"),
                "Forbidden",
                format!("the credential lacks the scope `tools:call:{name}`").into(),
            ),
            ContentRejected(detail) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                problem_type!("content-rejected"),
                "Unprocessable Content",
                detail.clone(),
            ),
            ToolFailed(status) => (
                StatusCode::BAD_GATEWAY,
                problem_type!("tool-call-failed"),
                "Bad Gateway",
                format!("the tool's endpoint answered {status}").into(),
            ),
            ToolEndpointRefused(rule) => (
                StatusCode::BAD_GATEWAY,
                problem_type!("tool-endpoint-refused"),
                "Bad Gateway",
                format!("the egress guard refused the tool's endpoint: {rule}").into(),
            ),
            ToolUnreachable(class) => (
                StatusCode::BAD_GATEWAY,
                problem_type!("tool-call-failed"),
                "Bad Gateway",
                format!("the tool's endpoint could not be reached ({class})").into(),
            ),
            ToolResponseTooLarge(cap) => (
                StatusCode::BAD_GATEWAY,
                problem_type!("tool-response-too-large"),
                "Bad Gateway",
                format!("the tool's answer is longer than {cap} bytes").into(),
            ),
            ToolOutputRejected(rules) => (
                StatusCode::BAD_GATEWAY,
                problem_type!("tool-output-rejected"),
                "Bad Gateway",
                format!("screening refused the tool's answer (rules: {rules}); it is not returned").into(),
            ),
            ToolTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                problem_type!("tool-call-timeout"),
                "Gateway Timeout",
                "the tool's endpoint did not answer in time".into(),
            ),
            OutsidePrefix => (
                StatusCode::FORBIDDEN,
                problem_type!("outside-resource-prefix"),
                "Forbidden",
                "the credential is confined to a resource prefix that does not contain this namespace"
                    .into(),
            ),
            ConfinedCredential => (
                StatusCode::FORBIDDEN,
                problem_type!("confined-credential"),
                "Forbidden",
                "a delegated or prefix-confined credential cannot do this: it acts for someone else \
                 within bounds that API keys and sessions cannot carry"
                    .into(),
            ),
            TenantSuspended => (
                StatusCode::FORBIDDEN,
                problem_type!("tenant-suspended"),
                "Tenant suspended",
                "this tenant is suspended".into(),
            ),
            UnknownTenant => (
                StatusCode::NOT_FOUND,
                problem_type!("unknown-tenant"),
                "Unknown tenant",
                "no tenant is served under this host name".into(),
            ),
            NotFound => (
                StatusCode::NOT_FOUND,
                problem_type!("not-found"),
                "Not Found",
                "no such resource".into(),
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                problem_type!("method-not-allowed"),
                "Method Not Allowed",
                "this resource does not support that method".into(),
            ),
            BadRequest(detail) => (
                StatusCode::BAD_REQUEST,
                problem_type!("bad-request"),
                "Bad Request",
                detail.clone(),
            ),
            Conflict(detail) => (
                StatusCode::CONFLICT,
                problem_type!("conflict"),
                "Conflict",
                detail.clone().into(),
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                problem_type!("payload-too-large"),
                "Payload Too Large",
                "the request body is larger than this route accepts (1 MiB; a tool call 256 KiB)".into(),
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                problem_type!("unsupported-media-type"),
                "Unsupported Media Type",
                "send JSON with `Content-Type: application/json`".into(),
            ),
            Invalid(detail) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                problem_type!("invalid"),
                "Unprocessable Content",
                detail.clone(),
            ),
            RateLimited(level) => (
                StatusCode::TOO_MANY_REQUESTS,
                problem_type!("rate-limited"),
                "Too Many Requests",
                format!(
                    "rate limit reached at the {level} level; retry after the time in Retry-After"
                )
                .into(),
            ),
            Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                problem_type!("unavailable"),
                "Service Unavailable",
                "the service is temporarily unavailable; retry later".into(),
            ),
            LogInconsistent => (
                StatusCode::SERVICE_UNAVAILABLE,
                problem_type!("audit-log-inconsistent"),
                "Audit log failed its consistency check",
                "the log no longer matches its latest signed checkpoint (leaves removed or \
                 rewritten); nothing was signed or exported; retrying will not help"
                    .into(),
            ),
            SchemaBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                problem_type!("schema-evaluation-busy"),
                "Service Unavailable",
                "schema evaluation is busy or took too long; nothing was sent; retry after the time in Retry-After".into(),
            ),
            TenantMoving => (
                StatusCode::SERVICE_UNAVAILABLE,
                problem_type!("tenant-moving"),
                "Service Unavailable",
                "the tenant's data is being moved; nothing was changed; retry after the time in Retry-After".into(),
            ),
            RegionRedirect(_) => (
                StatusCode::TEMPORARY_REDIRECT,
                problem_type!("wrong-region"),
                "Temporary Redirect",
                "this tenant is served in another region: repeat the request at the URL in Location".into(),
            ),
            WrongRegion(_) => (
                StatusCode::MISDIRECTED_REQUEST,
                problem_type!("wrong-region"),
                "Misdirected Request",
                // The region is not named: the caller may not even be authenticated yet.
                "this tenant is served in another region, not by this server; send the request to that region's endpoint".into(),
            ),
            RequestTimeout(seconds) => (
                StatusCode::REQUEST_TIMEOUT,
                problem_type!("request-timeout"),
                "Request Timeout",
                format!("the request was not completed within {seconds} s").into(),
            ),
            HashingBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                problem_type!("busy"),
                "Service Unavailable",
                "too many password operations are in progress; nothing was changed; retry after the time in Retry-After".into(),
            ),
            QuotaExceeded {
                kind,
                limit,
                usage,
                requested,
            } => (
                StatusCode::FORBIDDEN,
                problem_type!("quota-exceeded"),
                "Quota exceeded",
                format!(
                    "the tenant's quota of {kind} is {limit}; {usage} used, and this would add \
                     {requested}; nothing was stored (delete some, or ask the operator to raise \
                     the limit)"
                )
                .into(),
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                problem_type!("internal"),
                "Internal Server Error",
                "an internal error occurred; it has been logged".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title, detail) = self.parts();
        let quota = match &self {
            ApiError::QuotaExceeded {
                kind,
                limit,
                usage,
                requested,
            } => Some(QuotaRefusal {
                kind: kind.clone(),
                limit: *limit,
                usage: *usage,
                requested: *requested,
            }),
            _ => None,
        };
        let body = Problem {
            kind,
            title,
            status: status.as_u16(),
            detail,
            quota: quota.as_ref().map(|q| q.kind.clone()),
            limit: quota.as_ref().map(|q| q.limit),
            usage: quota.as_ref().map(|q| q.usage),
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3.1: a presented but unusable access token is `invalid_token`.
            let challenge = if matches!(self, ApiError::InvalidToken) {
                "Bearer realm=\"bulkhead\", error=\"invalid_token\""
            } else if matches!(self, ApiError::OperatorUnauthorized) {
                "Bearer realm=\"bulkhead-operator\""
            } else {
                "Bearer realm=\"bulkhead\""
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let ApiError::RegionRedirect(location) = &self {
            if let Ok(value) = HeaderValue::from_str(location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
        }
        if matches!(self, ApiError::HashingBusy) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u32));
        }
        if matches!(self, ApiError::RequestTimeout(_)) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(self, ApiError::TenantMoving | ApiError::SchemaBusy) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(2u32));
        }
        if let ApiError::LoginThrottled(seconds) = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
        }
        if let Some(refusal) = quota {
            response.extensions_mut().insert(refusal);
        }
        let needed = match &self {
            ApiError::MissingScope(scope) => Some(scope.to_string()),
            ApiError::MissingToolScope(name) => Some(format!("tools:call:{name}")),
            _ => None,
        };
        if let Some(needed) = needed.map(crate::http::needed_scope::NeededScope) {
            response.extensions_mut().insert(needed);
        }
        if let ApiError::Internal(err) = &self {
            response
                .extensions_mut()
                .insert(InternalErrorReport(format!("{err:#}")));
        }
        response
    }
}

impl From<crate::service::screen::ContentRejected> for ApiError {
    fn from(rejected: crate::service::screen::ContentRejected) -> Self {
        ApiError::ContentRejected(rejected.0.into())
    }
}

impl From<crate::service::tenants::TenantChangeError> for ApiError {
    fn from(err: crate::service::tenants::TenantChangeError) -> Self {
        use crate::service::tenants::TenantChangeError;
        match err {
            TenantChangeError::Invalid(detail) => ApiError::Invalid(detail.into()),
            TenantChangeError::SlugTaken(_) | TenantChangeError::DatabaseTaken(_) => {
                ApiError::Conflict(err.to_string())
            }
            TenantChangeError::Store(err) => err.into(),
            // The driver's text (host reachable? port open? TLS?) would make the server a
            // network probe for the caller: the detail is logged, the answer is generic.
            TenantChangeError::Dedicated(err) => {
                tracing::warn!(error = %format!("{err:#}"), "dedicated database registration failed");
                ApiError::Invalid("the dedicated database could not be registered".into())
            }
        }
    }
}

impl From<crate::service::hashing::HashError> for ApiError {
    fn from(err: crate::service::hashing::HashError) -> Self {
        use crate::service::hashing::HashError;
        match err {
            HashError::Busy => ApiError::HashingBusy,
            HashError::Unavailable => ApiError::Unavailable,
            HashError::Invalid(detail) => ApiError::Invalid(detail.into()),
            HashError::Internal(err) => ApiError::Internal(err),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::OutsideResourcePrefix => ApiError::OutsidePrefix,
            StoreError::Conflict { constraint } => {
                ApiError::Conflict(format!("conflicts with an existing record ({constraint})"))
            }
            StoreError::Invalid(what) => {
                ApiError::Invalid(format!("refused by constraint {what}").into())
            }
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                ApiError::Unavailable
            }
            // The database refuses a new connection: out of connections or memory (class 53),
            // or starting up / shutting down (57P03). Retryable, not a server fault.
            StoreError::Database(sqlx::Error::Database(db))
                if db
                    .code()
                    .is_some_and(|code| code.starts_with("53") || code == "57P03") =>
            {
                ApiError::Unavailable
            }
            StoreError::TenantMoving | StoreError::LocationMismatch => ApiError::TenantMoving,
            StoreError::LogInconsistent(_) => ApiError::LogInconsistent,
            StoreError::WrongRegion(region) => ApiError::WrongRegion(region),
            StoreError::Timeout => ApiError::Unavailable, // the route class's statement timeout
            err @ StoreError::SecretUnopenable(_) => ApiError::Conflict(err.to_string()),
            StoreError::QuotaExceeded {
                kind,
                limit,
                usage,
                requested,
            } => ApiError::QuotaExceeded {
                kind,
                limit,
                usage,
                requested,
            },
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => ApiError::Invalid(e.body_text().into()),
            JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(e.body_text().into()),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            other => ApiError::BadRequest(other.body_text().into()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text().into())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text().into())
    }
}

/// RFC 6749 §5.1: responses carrying tokens must not be cached.
pub fn no_store(headers: &mut header::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}
