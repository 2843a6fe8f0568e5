use bulkhead_test_support::{TestApp, TestTenant};
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

pub(crate) async fn create_session(app: &TestApp, tenant: &TestTenant, title: &str) -> Value {
    let response = as_tenant(app, tenant, Method::POST, "/v1/sessions")
        .json(&json!({ "agent_id": "agent-7", "title": title, "metadata": { "marker": title } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
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
