//! API keys and agents, minted over `POST /v1/api-keys`.

use bulkhead_test_support::{TestApp, TestTenant};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::{as_tenant, call_as};

/// `POST /v1/api-keys` with `body` as `holder`, for tests that check the answer.
pub(crate) async fn request_key(app: &TestApp, holder: &TestTenant, body: &Value) -> Response {
    as_tenant(app, holder, Method::POST, "/v1/api-keys")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// `POST /v1/api-keys/{id}/rotate` as `holder`, with `body` (`grace_seconds`) when given.
pub(crate) async fn rotate_key(
    app: &TestApp,
    holder: &TestTenant,
    id: &str,
    body: Option<Value>,
) -> Response {
    let path = format!("/v1/api-keys/{id}/rotate");
    call_as(app, holder, Method::POST, &path, body).await
}

/// `POST /v1/api-keys/{id}/revoke` as `holder`.
pub(crate) async fn revoke_key(app: &TestApp, holder: &TestTenant, id: &str) -> Response {
    let path = format!("/v1/api-keys/{id}/revoke");
    call_as(app, holder, Method::POST, &path, None).await
}

/// Mints a key of `holder`'s tenant with `body`: the tenant as the new key's holder, and the
/// key's metadata (`api_key` of the answer).
pub(crate) async fn mint_key(
    app: &TestApp,
    holder: &TestTenant,
    body: Value,
) -> (TestTenant, Value) {
    let response = request_key(app, holder, &body).await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let minted: Value = response.json().await.unwrap();
    let minted_holder = TestTenant {
        key: minted["key"].as_str().unwrap().to_owned(),
        ..holder.clone()
    };
    (minted_holder, minted["api_key"].clone())
}

/// A key as an OAuth client: its id and its text.
pub(crate) struct Agent {
    pub(crate) id: String,
    pub(crate) key: String,
}

impl Agent {
    /// `(client id, client secret)` for HTTP Basic client authentication.
    pub(crate) fn basic(&self) -> (&str, &str) {
        (&self.id, &self.key)
    }
}

/// Mints a key with `body` (scopes, principal, restrictions) as an [`Agent`].
pub(crate) async fn agent_with(app: &TestApp, tenant: &TestTenant, body: Value) -> Agent {
    let (holder, meta) = mint_key(app, tenant, body).await;
    Agent {
        id: meta["id"].as_str().unwrap().to_owned(),
        key: holder.key,
    }
}

/// An agent key of `principal` with `scopes`.
pub(crate) async fn agent(
    app: &TestApp,
    tenant: &TestTenant,
    principal: &str,
    scopes: &[&str],
) -> Agent {
    agent_with(
        app,
        tenant,
        json!({ "scopes": scopes, "principal": principal }),
    )
    .await
}
