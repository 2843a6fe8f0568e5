//! Webhook endpoints.

use bulkhead_test_support::{TestApp, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{call_as, created};

/// Registers a webhook endpoint with `body` (`url`, `event_types`, …): the created endpoint,
/// with its secret.
pub(crate) async fn create_endpoint(app: &TestApp, tenant: &TestTenant, body: Value) -> Value {
    created(app, tenant, "/v1/webhooks/endpoints", body).await
}

/// Publishes one `order.paid` message as `tenant` (202 asserted): the message id.
pub(crate) async fn publish_order_paid(app: &TestApp, tenant: &TestTenant) -> String {
    let published = call_as(
        app,
        tenant,
        Method::POST,
        "/v1/webhooks/messages",
        Some(json!({ "event_type": "order.paid", "payload": { "n": 1 } })),
    )
    .await;
    assert_eq!(published.status(), StatusCode::ACCEPTED);
    let message: Value = published.json().await.unwrap();
    message["id"].as_str().unwrap().to_owned()
}
