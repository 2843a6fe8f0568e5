//! Users and their logins.

use bulkhead_test_support::TestApp;
use reqwest::Response;
use serde_json::json;

/// The password of every test user.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// `POST /v1/auth/login` under `slug`'s subdomain, for tests that check the answer.
pub(crate) async fn login_response(
    app: &TestApp,
    slug: &str,
    email: &str,
    password: &str,
) -> Response {
    app.client
        .post(app.tenant_url(slug, "/v1/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}
