//! The login, consent, return and error pages of the authorization endpoint: their askama
//! templates (`templates/oauth/`), the headers every page carries, the scopes in words, and the
//! one stylesheet.

use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_core::{Scope, ScopeSet};
use bulkhead_store::placement::registry::{Tenant, TenantStatus};

use crate::http::apidoc::OpDoc;
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The pages' Content-Security-Policy.
pub(crate) const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";
const STYLESHEET: &str = include_str!("../../../../templates/oauth/style.css");

pub(super) fn html(status: u16, description: &str) -> OpDoc {
    OpDoc::inline(
        status,
        description,
        "text/html",
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .into(),
    )
}

pub(super) async fn stylesheet() -> Response {
    let mut response = STYLESHEET.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[derive(Template)]
#[template(path = "oauth/error.html")]
pub(super) struct ErrorPage<'a> {
    pub(super) tenant: &'a str,
    pub(super) message: &'a str,
}

#[derive(Template)]
#[template(path = "oauth/login.html")]
pub(super) struct LoginPage<'a> {
    pub(super) tenant: &'a str,
    /// As shown (`service::oauth::shown_client_name`): a stored name today's rule refuses is
    /// replaced by the client's id.
    pub(super) client_name: String,
    pub(super) csrf: &'a str,
    pub(super) hidden: Vec<(&'a str, &'a str)>,
    pub(super) email: &'a str,
    pub(super) problem: Option<&'a str>,
}

pub(super) struct ScopeItem {
    pub(super) scope: String,
    pub(super) words: String,
}

#[derive(Template)]
#[template(path = "oauth/consent.html")]
pub(super) struct ConsentPage<'a> {
    pub(super) tenant: &'a str,
    /// As [`LoginPage::client_name`].
    pub(super) client_name: String,
    /// A client named by its metadata document: the host of its URL, shown plainly.
    pub(super) client_url_host: Option<String>,
    pub(super) user_email: &'a str,
    pub(super) redirect_host: &'a str,
    /// The protected resource the access is for (name as shown, identifier), if one was named.
    pub(super) resource: Option<(String, &'a str)>,
    pub(super) csrf: &'a str,
    pub(super) hidden: Vec<(&'a str, &'a str)>,
    pub(super) offered: Vec<ScopeItem>,
    pub(super) withheld: Vec<ScopeItem>,
}

#[derive(Template)]
#[template(path = "oauth/redirect.html")]
pub(super) struct RedirectPage<'a> {
    pub(super) tenant: &'a str,
    pub(super) client_name: &'a str,
    pub(super) redirect_host: &'a str,
    pub(super) target: &'a str,
    pub(super) message: &'a str,
}

/// A rendered page with the pages' headers.
pub(super) fn page(status: StatusCode, rendered: Result<String, askama::Error>) -> Response {
    let body = match rendered {
        Ok(body) => body,
        Err(err) => {
            return ApiError::Internal(anyhow::anyhow!("template failed: {err}")).into_response()
        }
    };
    let mut response = (status, body).into_response();
    page_headers(response.headers_mut());
    response
}

pub(super) fn page_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub(super) fn error_page(status: StatusCode, tenant: &str, message: &str) -> Response {
    page(status, ErrorPage { tenant, message }.render())
}

/// The scope in words, for the consent page.
fn scope_words(name: &str) -> String {
    if let Some(tool) = name.strip_prefix("tools:call:") {
        return if tool == "*" {
            "Call every tool of the organisation".to_owned()
        } else {
            format!("Call the tool “{tool}”")
        };
    }
    let words = match (name, Scope::parse(name)) {
        ("openid", _) => "Know who you are: your user id in this organisation",
        ("profile", _) => "See your basic profile",
        ("email", _) => "See your email address",
        (_, scope) => match scope {
            Ok(Scope::SessionsRead) => "Read agent sessions",
            Ok(Scope::SessionsWrite) => "Create, change and delete agent sessions",
            Ok(Scope::KeysManage) => "Create, rotate and revoke API keys, and end sign-in sessions",
            Ok(Scope::WebhooksManage) => "Manage webhook endpoints and messages",
            Ok(Scope::AuditRead) => "Read the audit log",
            Ok(Scope::ToolsList) => "List the organisation's tools",
            Ok(Scope::ToolsManage) => "Create, change and disable tools",
            Ok(Scope::UsersRead) => "See users",
            Ok(Scope::UsersWrite) => "Create, disable and re-enable users",
            Ok(Scope::AgentsRead) => "See agents",
            Ok(Scope::AgentsWrite) => "Create, change and disable agents",
            Ok(Scope::RolesRead) => "See roles and who holds them",
            Ok(Scope::RolesManage) => "Create and assign roles",
            Ok(Scope::BillingRead) => "See usage and quotas",
            Ok(Scope::BillingManage) => "Manage billing",
            _ => "A permission this page cannot describe",
        },
    };
    words.to_owned()
}

/// The identity scopes (OpenID Connect) as items of the consent page, before the permissions.
pub(super) fn identity_items(names: &[&str]) -> Vec<ScopeItem> {
    names
        .iter()
        .map(|scope| ScopeItem {
            words: scope_words(scope),
            scope: (*scope).to_owned(),
        })
        .collect()
}

pub(super) fn items(scopes: &ScopeSet) -> Vec<ScopeItem> {
    scopes
        .to_strings()
        .into_iter()
        .map(|scope| ScopeItem {
            words: scope_words(&scope),
            scope,
        })
        .collect()
}

/// The tenant of the host, active; else the page to show.
pub(super) async fn page_tenant(state: &AppState, headers: &HeaderMap) -> Result<Tenant, Response> {
    let host = crate::http::resolve::request_host(headers);
    match crate::http::resolve::host_tenant(state, host).await {
        Ok(Some(tenant)) if tenant.status == TenantStatus::Active => Ok(tenant),
        Ok(Some(tenant)) => Err(error_page(
            StatusCode::FORBIDDEN,
            tenant.slug.as_str(),
            "This organisation is suspended.",
        )),
        Ok(None) => Err(error_page(
            StatusCode::BAD_REQUEST,
            "Bulkhead",
            "Open this page through your organisation's own address.",
        )),
        Err(ApiError::Unavailable) => Err(error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Bulkhead",
            "The service is temporarily unavailable. Try again shortly.",
        )),
        Err(_) => Err(error_page(
            StatusCode::NOT_FOUND,
            "Bulkhead",
            "No organisation is served at this address.",
        )),
    }
}
