//! Audiences beyond the code flow (issue 20, RFC 8707): `client_credentials` for a registered
//! protected resource, and token exchange of a resource's token, which keeps its audience and
//! only narrows. The resource-server layer accepting the exchanged token is in
//! `resource_server.rs`.

use bulkhead_test_support::{spawn_app, TestApp, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::keys::{agent, Agent};
use crate::helpers::oauth::{
    claims, client_credentials, exchange, granted, granted_token, post_form, set_token_policy,
    token_request, ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE,
};
use crate::helpers::{audit_events, call_as};

pub(crate) const MCP: &str = "https://acme.bulkhead.test/mcp/search";
const OTHER: &str = "https://acme.bulkhead.test/mcp/other";
const GLOBEX: &str = "https://globex.bulkhead.test/mcp/search";

/// Registers `identifier` in `tenant`, accepting `sessions:read` and `sessions:write`.
pub(crate) async fn register(app: &TestApp, tenant: &TestTenant, identifier: &str) {
    let created = call_as(
        app,
        tenant,
        Method::POST,
        "/v1/oauth-resources",
        Some(json!({
            "identifier": identifier,
            "name": "MCP",
            "scopes": ["sessions:read", "sessions:write"],
        })),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
}

/// `client_credentials` for `agent` with `resource` (and `scope`, when given).
pub(crate) async fn for_resource(
    app: &TestApp,
    slug: &str,
    agent: &Agent,
    resource: &str,
    scope: Option<&str>,
) -> reqwest::Response {
    let mut pairs = vec![("grant_type", "client_credentials"), ("resource", resource)];
    if let Some(scope) = scope {
        pairs.push(("scope", scope));
    }
    token_request(app, slug, Some(agent.basic()), &pairs).await
}

async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn introspect(app: &TestApp, tenant: &TestTenant, token: &str) -> Value {
    let response = post_form(
        app,
        Some(&tenant.slug),
        "/oauth/introspect",
        None,
        &[("token", token), ("client_secret", &tenant.key)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn client_credentials_issue_a_token_for_a_registered_resource_only() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    register(&app, &acme, MCP).await;
    register(&app, &globex, GLOBEX).await;
    let reader = agent(&app, &acme, "reader", &["sessions:read", "audit:read"]).await;

    // The token is for the resource and holds what both the key and the resource accept.
    let body = granted(for_resource(&app, "acme", &reader, MCP, None).await).await;
    let token = body["access_token"].as_str().unwrap();
    let c = claims(token);
    assert_eq!(c["aud"], MCP);
    assert_eq!(c["scope"], "sessions:read");
    assert_eq!(body["scope"], "sessions:read");
    let issued = audit_events(&app, &acme, "auth.token_issue").await;
    assert!(
        issued
            .iter()
            .any(|e| e["outcome"] == "success" && e["metadata"]["resource"] == MCP),
        "{issued:?}"
    );
    // Bulkhead's own API refuses it; introspection by the tenant answers for the resource.
    let own = app
        .client
        .get(app.tenant_url("acme", "/v1/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::UNAUTHORIZED);
    let answer = introspect(&app, &acme, token).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["aud"], MCP);

    // A scope the resource does not accept, or a key sharing none with it: invalid_scope.
    let (status, err) =
        error_of(for_resource(&app, "acme", &reader, MCP, Some("audit:read")).await).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let auditor = agent(&app, &acme, "auditor", &["audit:read"]).await;
    let (status, err) = error_of(for_resource(&app, "acme", &auditor, MCP, None).await).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );

    // Another tenant's resource is exactly an unregistered one: invalid_target, nothing issued.
    let (status, theirs) = error_of(for_resource(&app, "acme", &reader, GLOBEX, None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(theirs["error"], "invalid_target");
    let (_, unknown) = error_of(
        for_resource(
            &app,
            "acme",
            &reader,
            "https://acme.bulkhead.test/mcp/none",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(theirs, unknown);
    let (_, control) = error_of(
        for_resource(
            &app,
            "acme",
            &reader,
            "https://acme.bulkhead.test/\u{0}",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(theirs, control);
    let refused = audit_events(&app, &acme, "auth.token_issue").await;
    assert_eq!(
        refused
            .iter()
            .filter(|e| e["metadata"]["reason"] == "invalid_target")
            .count(),
        3,
        "{refused:?}"
    );

    // Without `resource`, or naming the issuer: a token for Bulkhead's own API, as before.
    let audience = app.state.config().tokens.audience.clone();
    let plain = granted_token(client_credentials(&app, "acme", reader.basic(), None).await).await;
    assert_eq!(claims(&plain)["aud"], audience.as_str());
    assert_eq!(claims(&plain)["scope"], "sessions:read audit:read");
    // Both names of the own API: the deployment's `--issuer` and the tenant's own issuer.
    for issuer in [
        app.state.config().tokens.issuer.clone(),
        crate::helpers::oauth::tenant_issuer(&app, "acme"),
    ] {
        let own = granted_token(for_resource(&app, "acme", &reader, &issuer, None).await).await;
        assert_eq!(claims(&own)["aud"], audience.as_str());
    }
}

#[tokio::test]
async fn an_agent_session_for_a_resource_refreshes_for_that_resource_and_ends_with_it() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    register(&app, &acme, MCP).await;
    set_token_policy(&app, &acme, true, 0).await;
    let reader = agent(&app, &acme, "reader", &["sessions:read", "audit:read"]).await;
    let body = granted(for_resource(&app, "acme", &reader, MCP, None).await).await;
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let refresh_with = |token: String, resource: Option<&'static str>| {
        let app = &app;
        let reader = &reader;
        async move {
            let mut pairs = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
            ];
            if let Some(resource) = resource {
                pairs.push(("resource", resource));
            }
            token_request(app, "acme", Some(reader.basic()), &pairs).await
        }
    };
    // Another resource is refused; the refresh keeps the resource's audience and scopes.
    let (status, err) = error_of(refresh_with(refresh.clone(), Some(OTHER)).await).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    let body = granted(refresh_with(refresh, None).await).await;
    assert_eq!(claims(body["access_token"].as_str().unwrap())["aud"], MCP);
    assert_eq!(body["scope"], "sessions:read");
    // Deleting the resource ends the session: its refresh token is refused.
    let listed: Value = call_as(&app, &acme, Method::GET, "/v1/oauth-resources", None)
        .await
        .json()
        .await
        .unwrap();
    let id = listed["data"][0]["id"].as_str().unwrap();
    let deleted = call_as(
        &app,
        &acme,
        Method::DELETE,
        &format!("/v1/oauth-resources/{id}"),
        None,
    )
    .await;
    assert!(deleted.status().is_success());
    let next = body["refresh_token"].as_str().unwrap().to_owned();
    let (status, err) = error_of(refresh_with(next, None).await).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn a_resource_token_exchanges_only_into_a_narrower_token_for_the_same_resource() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    register(&app, &acme, MCP).await;
    register(&app, &acme, OTHER).await;
    register(&app, &globex, GLOBEX).await;
    let owner = agent(&app, &acme, "owner", &["sessions:read", "sessions:write"]).await;
    let helper = agent(&app, &acme, "helper", &["sessions:read", "sessions:write"]).await;
    let subject = granted_token(for_resource(&app, "acme", &owner, MCP, None).await).await;

    // Narrowed: same audience, fewer scopes, the actor in `act`, no longer than the subject.
    let body = granted(
        exchange(
            &app,
            "acme",
            &subject,
            &helper,
            &[("scope", "sessions:read"), ("resource", MCP)],
        )
        .await,
    )
    .await;
    let narrowed = body["access_token"].as_str().unwrap().to_owned();
    let c = claims(&narrowed);
    assert_eq!(c["aud"], MCP);
    assert_eq!(c["scope"], "sessions:read");
    assert_eq!(c["act"]["sub"], "helper");
    assert!(c["exp"].as_i64() <= claims(&subject)["exp"].as_i64());
    let answer = introspect(&app, &acme, &narrowed).await;
    assert_eq!(
        (answer["active"].clone(), answer["aud"].clone()),
        (json!(true), json!(MCP))
    );
    // Narrowed again, confirming the audience by `audience`.
    let again = exchange(&app, "acme", &narrowed, &helper, &[("audience", MCP)]).await;
    assert_eq!(claims(&granted_token(again).await)["aud"], MCP);

    // Any other target: another resource, Bulkhead's own API by either name, another tenant's.
    let issuer = app.state.config().tokens.issuer.clone();
    let tenant_issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    let own_audience = app.state.config().tokens.audience.clone();
    for (name, value) in [
        ("resource", OTHER),
        ("resource", issuer.as_str()),
        ("resource", tenant_issuer.as_str()),
        ("resource", GLOBEX),
        ("audience", OTHER),
        ("audience", issuer.as_str()),
        ("audience", own_audience.as_str()),
    ] {
        let (status, err) =
            error_of(exchange(&app, "acme", &subject, &helper, &[(name, value)]).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}={value}");
        assert_eq!(err["error"], "invalid_target", "{name}={value}: {err}");
    }
    let blocked = audit_events(&app, &acme, "auth.token_exchange").await;
    assert_eq!(
        blocked
            .iter()
            .filter(|e| e["outcome"] == "blocked" && e["metadata"]["reason"] == "audience_change")
            .count(),
        7,
        "{blocked:?}"
    );
    // Scopes only narrow: the narrowed token cannot get `sessions:write` back.
    let (status, err) = error_of(
        exchange(
            &app,
            "acme",
            &narrowed,
            &helper,
            &[("scope", "sessions:write")],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    // The exchanged token is still refused by Bulkhead's own API.
    let own = app
        .client
        .get(app.tenant_url("acme", "/v1/sessions"))
        .bearer_auth(&narrowed)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::UNAUTHORIZED);
    // On another tenant's host, the subject token is no token at all.
    let globex_helper = agent(&app, &globex, "helper", &["sessions:read"]).await;
    let (status, err) =
        error_of(exchange(&app, "globex", &subject, &globex_helper, &[]).await).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // Revoking the subject revokes what was exchanged from it.
    let revoked = post_form(
        &app,
        Some("acme"),
        "/oauth/revoke",
        None,
        &[("token", subject.as_str())],
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(introspect(&app, &acme, &narrowed).await["active"], false);

    // A deleted resource's token can no longer be exchanged (audited).
    let fresh = granted_token(for_resource(&app, "acme", &owner, MCP, None).await).await;
    let listed: Value = call_as(&app, &acme, Method::GET, "/v1/oauth-resources", None)
        .await
        .json()
        .await
        .unwrap();
    let id = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["identifier"] == MCP)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/oauth-resources/{id}");
    assert!(call_as(&app, &acme, Method::DELETE, &path, None)
        .await
        .status()
        .is_success());
    let (status, err) = error_of(exchange(&app, "acme", &fresh, &helper, &[]).await).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let blocked = audit_events(&app, &acme, "auth.token_exchange").await;
    assert!(
        blocked
            .iter()
            .any(|e| e["metadata"]["reason"] == "resource_gone"),
        "{blocked:?}"
    );
}

#[tokio::test]
async fn an_exchange_of_an_own_api_token_cannot_name_a_resource() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    register(&app, &acme, MCP).await;
    let owner = agent(&app, &acme, "owner", &["sessions:read"]).await;
    let helper = agent(&app, &acme, "helper", &["sessions:read"]).await;
    let subject = granted_token(client_credentials(&app, "acme", owner.basic(), None).await).await;
    let (status, err) =
        error_of(exchange(&app, "acme", &subject, &helper, &[("resource", MCP)]).await).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    // Naming the issuer keeps the own API's audience.
    let issuer = app.state.config().tokens.issuer.clone();
    let kept = exchange(
        &app,
        "acme",
        &subject,
        &helper,
        &[("resource", issuer.as_str())],
    )
    .await;
    let audience = app.state.config().tokens.audience.clone();
    assert_eq!(claims(&granted_token(kept).await)["aud"], audience.as_str());
    // `audience` naming an actor (no credential) still works for an own-API subject.
    let named = token_request(
        &app,
        "acme",
        None,
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject.as_str()),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("audience", "sub-agent"),
        ],
    )
    .await;
    assert_eq!(
        claims(&granted_token(named).await)["act"]["sub"],
        "sub-agent"
    );
}
