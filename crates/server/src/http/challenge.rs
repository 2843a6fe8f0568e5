//! The `WWW-Authenticate` challenges of the tenant API.
//!
//! - A 401 names where Bulkhead's own protected-resource metadata is (RFC 9728 §5.1), so a client
//!   that meets a 401 can discover the authorization server from it, and, on a route that
//!   declares a permission, `scope="<that permission>"`: what a client should ask for.
//! - A 403 `missing-scope` answered to an **access token** carries the step-up challenge
//!   (RFC 6750 §3.1, MCP authorization "scope challenge"): `error="insufficient_scope"`,
//!   `scope="<the token's effective scopes and the one missing>"` (so a client that asks again
//!   for exactly that keeps what it had) and `resource_metadata`. An API key gets none: its
//!   scopes are fixed when it is made, and no flow widens them. The problem+json body is the
//!   same in both cases, on every route.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bulkhead_core::{Actor, Scope, TenantContext};

use crate::http::authz::RouteAccess;
use crate::http::needed_scope::NeededScope;
use crate::http::resolve::{host_signal, request_host, HostSignal};
use crate::http::routes::oauth_resources::OWN_METADATA_PATH;
use crate::http::state::AppState;

/// Where the own API's metadata is for this request: under the tenant's issuer on a tenant's
/// subdomain (the document there names the tenant's authorization server), under `--issuer` on
/// the deployment's host. Read from the host alone: an unknown tenant's request never gets here
/// (the resolver answers 404 first).
fn metadata_url(state: &AppState, headers: &HeaderMap) -> String {
    let config = state.config();
    let origin = match host_signal(request_host(headers), &config.base_domain) {
        HostSignal::Slug(slug) => config.tokens.tenant_issuer(&slug),
        _ => config.tokens.issuer.trim_end_matches('/').to_owned(),
    };
    format!("{origin}{OWN_METADATA_PATH}")
}

/// The permission each route declares, by method and path (built once from the route table).
fn declared_scope(method: &Method, path: &str) -> Option<Scope> {
    static TABLE: OnceLock<HashMap<(String, &'static str), Scope>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        crate::http::routes::route_table()
            .specs()
            .filter_map(|spec| match spec.access {
                RouteAccess::Requires(scope) => Some(((spec.method.to_string(), spec.path), scope)),
                _ => None,
            })
            .collect()
    });
    table.get(&(method.to_string(), path)).copied()
}

/// Adds `resource_metadata="<tenant's issuer>/.well-known/oauth-protected-resource"[,
/// scope="…"]` to a 401's Bearer challenge (`--issuer` on the deployment's host).
pub(crate) async fn resource_metadata(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let scope = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| declared_scope(request.method(), path.as_str()));
    let metadata = metadata_url(&state, request.headers());
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
    let scope = scope.map_or_else(String::new, |s| format!(", scope=\"{s}\""));
    let with_metadata = format!("{challenge}, resource_metadata=\"{metadata}\"{scope}");
    if let Ok(value) = HeaderValue::from_str(&with_metadata) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The step-up challenge on a 403 `missing-scope` answered to an access token (see the module
/// doc). Runs inside tenant resolution, where the request carries its [`TenantContext`].
pub(crate) async fn step_up(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let held = match request
        .extensions()
        .get::<TenantContext>()
        .map(TenantContext::actor)
    {
        Some(Actor::Token { scopes, .. }) => Some(scopes.to_strings()),
        _ => None,
    };
    let metadata = metadata_url(&state, request.headers());
    let mut response = next.run(request).await;
    let Some(mut scopes) = held else {
        return response;
    };
    if response.status() != StatusCode::FORBIDDEN {
        return response;
    }
    let Some(NeededScope(needed)) = response.extensions().get::<NeededScope>().cloned() else {
        return response;
    };
    if !scopes.contains(&needed) {
        scopes.push(needed);
    }
    let challenge = format!(
        "Bearer realm=\"bulkhead\", error=\"insufficient_scope\", resource_metadata=\"{}\", \
         scope=\"{}\"",
        metadata,
        scopes.join(" ")
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
