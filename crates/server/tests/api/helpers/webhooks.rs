//! Webhook endpoints.

use bulkhead_test_support::{TestApp, TestTenant};
use serde_json::Value;

use super::created;

/// Registers a webhook endpoint with `body` (`url`, `event_types`, …): the created endpoint,
/// with its secret.
pub(crate) async fn create_endpoint(app: &TestApp, tenant: &TestTenant, body: Value) -> Value {
    created(app, tenant, "/v1/webhooks/endpoints", body).await
}
