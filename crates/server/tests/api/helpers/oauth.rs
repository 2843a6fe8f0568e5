//! OAuth requests (client credentials, token exchange, refresh) as form posts, and reading the
//! tokens they grant.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bulkhead_test_support::{TestApp, TestTenant};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

use super::call_as;
use super::keys::Agent;

/// The token exchange grant (RFC 8693).
pub(crate) const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of an access token.
pub(crate) const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The token type of a Bulkhead API key presented as a token.
pub(crate) const API_KEY_TOKEN_TYPE: &str = "urn:bulkhead:params:oauth:token-type:api_key";

/// `pairs` as an `application/x-www-form-urlencoded` body.
pub(crate) fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

/// A form post of `pairs` to `path` under `slug`'s subdomain (the bare host for `None`), not
/// yet sent (a test may add headers).
pub(crate) fn form_post(
    app: &TestApp,
    slug: Option<&str>,
    path: &str,
    pairs: &[(&str, &str)],
) -> RequestBuilder {
    let url = match slug {
        Some(slug) => app.tenant_url(slug, path),
        None => app.url(path),
    };
    app.client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(pairs))
}

/// Sends [`form_post`], with HTTP Basic client authentication when `basic` is given.
pub(crate) async fn post_form(
    app: &TestApp,
    slug: Option<&str>,
    path: &str,
    basic: Option<(&str, &str)>,
    pairs: &[(&str, &str)],
) -> Response {
    let mut request = form_post(app, slug, path, pairs);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    request.send().await.unwrap()
}

/// `POST /oauth/token` under `slug`'s subdomain.
pub(crate) async fn token_request(
    app: &TestApp,
    slug: &str,
    basic: Option<(&str, &str)>,
    pairs: &[(&str, &str)],
) -> Response {
    post_form(app, Some(slug), "/oauth/token", basic, pairs).await
}

/// The client credentials grant for the key `(id, key)`, asking for `scope` when given.
pub(crate) async fn client_credentials(
    app: &TestApp,
    slug: &str,
    (id, key): (&str, &str),
    scope: Option<&str>,
) -> Response {
    let mut pairs = vec![("grant_type", "client_credentials")];
    if let Some(scope) = scope {
        pairs.push(("scope", scope));
    }
    token_request(app, slug, Some((id, key)), &pairs).await
}

/// Exchanges `subject` (an access token) with `actor`'s key as `actor_token`; `extra` pairs
/// appended.
pub(crate) async fn exchange(
    app: &TestApp,
    slug: &str,
    subject: &str,
    actor: &Agent,
    extra: &[(&str, &str)],
) -> Response {
    let mut pairs = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("actor_token", actor.key.as_str()),
        ("actor_token_type", API_KEY_TOKEN_TYPE),
    ];
    pairs.extend_from_slice(extra);
    token_request(app, slug, None, &pairs).await
}

/// The body of a granted token response (setup: anything but 200 fails with the body).
pub(crate) async fn granted(response: Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The access token of a granted token response.
pub(crate) async fn granted_token(response: Response) -> String {
    granted(response).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A client credentials access token of `agent`, with the key's own scopes.
pub(crate) async fn token_for(app: &TestApp, slug: &str, agent: &Agent) -> String {
    granted_token(client_credentials(app, slug, agent.basic(), None).await).await
}

/// A token of the tenant's admin key (every permission), a delegated token exchanged from it
/// (every permission, no prefix), and a delegated token confined to `marketing`.
pub(crate) async fn admin_and_delegated_tokens(
    app: &TestApp,
    tenant: &TestTenant,
) -> (String, String, String) {
    let root = granted_token(
        token_request(
            app,
            &tenant.slug,
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_secret", &tenant.key),
            ],
        )
        .await,
    )
    .await;
    let exchange = |extra: Vec<(&'static str, &'static str)>| {
        let root = root.clone();
        async move {
            let mut pairs = vec![
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", root.as_str()),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("audience", "helper-agent"),
            ];
            pairs.extend(extra);
            granted_token(token_request(app, &tenant.slug, None, &pairs).await).await
        }
    };
    let delegated = exchange(vec![]).await;
    let prefixed = exchange(vec![("resource_prefix", "marketing")]).await;
    (root, delegated, prefixed)
}

/// Sets `tenant`'s token policy (setup: anything but 200 fails): whether agents get refresh
/// tokens, and how long a rotated refresh token may be presented again; sessions keep the
/// default lifetimes (30 days absolute, 7 idle).
pub(crate) async fn set_token_policy(
    app: &TestApp,
    tenant: &TestTenant,
    agent_refresh_tokens: bool,
    refresh_reuse_interval_seconds: u32,
) {
    let response = call_as(
        app,
        tenant,
        Method::PUT,
        "/v1/token-policy",
        Some(json!({
            "agent_refresh_tokens": agent_refresh_tokens,
            "refresh_reuse_interval_seconds": refresh_reuse_interval_seconds,
            "session_absolute_seconds": 2592000,
            "session_idle_seconds": 604800,
        })),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// The decoded claims (payload) of a JWT; its signature is not checked.
pub(crate) fn claims(token: &str) -> Value {
    jwt_part(token, 1)
}

/// The decoded JOSE header of a JWT.
pub(crate) fn jwt_header(token: &str) -> Value {
    jwt_part(token, 0)
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The scopes of a space-separated `scope` value, as a set.
pub(crate) fn scope_set(text: &str) -> std::collections::BTreeSet<String> {
    text.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A tenant's issuer: its own origin (`https://<slug>.bulkhead.test` here), the `iss` of its
/// tokens and the issuer of its metadata.
pub(crate) fn tenant_issuer(app: &TestApp, slug: &str) -> String {
    let slug = bulkhead_core::TenantSlug::parse(slug).expect("a valid slug");
    app.state.config().tokens.tenant_issuer(&slug)
}
