//! Setup and requests shared by the API tests; the tests themselves assert.
//!
//! A helper checks only that its setup worked (a key was minted, a token granted), never what a
//! test is about: a test that checks a refusal sends the request itself (or with a helper that
//! returns the response) and asserts on it.
//!
//! By topic: [`clients`] (the off-the-shelf clients and the browser run as child processes),
//! [`keys`] (API keys and agents), [`oauth`] (token requests, form bodies, claims),
//! [`regions`] (two-region deployments), [`users`] (logins), [`webhooks`] (endpoints); requests and problems in general here.

pub(crate) mod clients;
pub(crate) mod keys;
pub(crate) mod oauth;
pub(crate) mod regions;
pub(crate) mod users;
pub(crate) mod webhooks;

use bulkhead_server::http::authz::RouteSpec;
use bulkhead_test_support::{AppOptions, TestApp, TestTenant, BASE_DOMAIN};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

/// A request to `path` under `tenant`'s subdomain with its key.
pub(crate) fn as_tenant(
    app: &TestApp,
    tenant: &TestTenant,
    method: Method,
    path: &str,
) -> RequestBuilder {
    app.client
        .request(method, app.tenant_url(&tenant.slug, path))
        .bearer_auth(&tenant.key)
}

/// Sends `method path` under `slug`'s subdomain with `bearer` (a key or an access token) and
/// `body` as JSON when given.
pub(crate) async fn call(
    app: &TestApp,
    slug: &str,
    bearer: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut request = app
        .client
        .request(method, app.tenant_url(slug, path))
        .bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// [`call`] with `tenant`'s subdomain and key.
pub(crate) async fn call_as(
    app: &TestApp,
    tenant: &TestTenant,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    call(app, &tenant.slug, &tenant.key, method, path, body).await
}

/// The JSON body of `GET path` as `tenant`, whatever the status (a test that cares checks it).
pub(crate) async fn get_json(app: &TestApp, tenant: &TestTenant, path: &str) -> Value {
    as_tenant(app, tenant, Method::GET, path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The JSON body of `GET path` as `tenant` (setup: anything but 200 fails).
pub(crate) async fn get_ok_json(app: &TestApp, tenant: &TestTenant, path: &str) -> Value {
    let response = call_as(app, tenant, Method::GET, path, None).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

/// `POST path` with `body` as `tenant`: the created resource (setup: anything but 201 fails
/// with the answer).
pub(crate) async fn created(app: &TestApp, tenant: &TestTenant, path: &str, body: Value) -> Value {
    let response = call_as(app, tenant, Method::POST, path, Some(body)).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

pub(crate) async fn create_session(app: &TestApp, tenant: &TestTenant, title: &str) -> Value {
    let response = as_tenant(app, tenant, Method::POST, "/v1/sessions")
        .json(&json!({ "agent_id": "agent-7", "title": title, "metadata": { "marker": title } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// The tenant's audit events of `action` (the first page of 200), through the API.
pub(crate) async fn audit_events(app: &TestApp, tenant: &TestTenant, action: &str) -> Vec<Value> {
    let path = format!("/v1/audit/events?action={action}&limit=200");
    get_ok_json(app, tenant, &path).await["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Status, content type and parsed body of a problem response.
pub(crate) async fn problem(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "status {status}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"].as_u64(), Some(u64::from(status.as_u16())));
    assert!(body["type"]
        .as_str()
        .unwrap()
        .starts_with("https://bulkhead.dev/problems/"));
    (status, body)
}

/// The route's path with every `{param}` replaced by `x0`: permission and confinement checks
/// run before the handler parses anything, so any segment reaches them.
pub(crate) fn concrete_path(spec: &RouteSpec) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in spec.path.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push_str("x0");
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// App options with the deployment's own egress policy (the test default lets webhooks reach
/// 127.0.0.1, where test receivers listen).
pub(crate) fn production_egress() -> AppOptions {
    let config =
        bulkhead_server::config::AppConfig::new(BASE_DOMAIN, bulkhead_auth::KeyEnvironment::Live)
            .unwrap();
    AppOptions {
        webhook_egress: Some(config.webhook_egress),
        ..AppOptions::default()
    }
}
