//! One decision about a credential everywhere it is accepted (issue 26 items 2–5, issue 27
//! item 3, issue 17 item 9): introspection refuses what the resolver refuses and reports the
//! effective scope; login tokens carry only what roles grant; tokens keep their key's network
//! restriction; delegated actors keep their whole chain; tenant status changes reach every copy,
//! are audited, and never stop a user from logging out.

use std::time::Duration;

use bulkhead_store::placement::registry::TenantStatus;
use bulkhead_store::StoreError;
use bulkhead_test_support::{spawn_app, spawn_app_with, AppOptions, TestApp, TestDb, TestTenant};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::keys::{agent_with, Agent};
use crate::helpers::oauth::{
    admin_and_delegated_tokens, claims, form_post, scope_set, ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE,
};
use crate::helpers::regions::{onboard_in_region, us_and_eu};
use crate::helpers::users::{login_response, PASSWORD};
use crate::helpers::{as_tenant, call, call_as};

async fn ok_json(response: Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

async fn admin(
    app: &TestApp,
    tenant: &TestTenant,
    method: Method,
    path: &str,
    body: Value,
) -> Value {
    ok_json(
        as_tenant(app, tenant, method, path)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// A client of the tenant (an API key) for introspection: (id, key).
async fn client(app: &TestApp, tenant: &TestTenant, body: Value) -> (String, String) {
    let Agent { id, key } = agent_with(app, tenant, body).await;
    (id, key)
}

async fn introspect(app: &TestApp, slug: &str, (id, key): (&str, &str), token: &str) -> Value {
    ok_json(
        form_post(app, Some(slug), "/oauth/introspect", &[("token", token)])
            .basic_auth(id, Some(key))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn permissions_of_role(app: &TestApp, tenant: &TestTenant, name: &str) -> Vec<String> {
    let roles = admin(app, tenant, Method::GET, "/v1/roles?limit=200", Value::Null).await;
    let role = roles["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()
        .clone();
    let mut permissions: Vec<String> = role["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    permissions.sort();
    permissions
}

/// A user made over the API (its stored scopes are every permission) holding `role`.
async fn user_with_role(app: &TestApp, tenant: &TestTenant, email: &str, role: &str) -> String {
    let user = admin(
        app,
        tenant,
        Method::POST,
        "/v1/users",
        json!({ "email": email, "password": PASSWORD }),
    )
    .await;
    let id = user["id"].as_str().unwrap().to_owned();
    admin(
        app,
        tenant,
        Method::POST,
        "/v1/role-assignments",
        json!({ "role": role, "user_id": id }),
    )
    .await;
    id
}

async fn login(app: &TestApp, slug: &str, email: &str) -> Value {
    ok_json(login_response(app, slug, email, PASSWORD).await).await
}

#[tokio::test]
async fn a_viewers_login_token_carries_only_the_viewers_permissions() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "vera@acme.test", "viewer").await;
    let viewer = permissions_of_role(&app, &acme, "viewer").await;
    let issued = login(&app, "acme", "vera@acme.test").await;
    let token = issued["access_token"].as_str().unwrap();
    let carried = scope_set(claims(token)["scope"].as_str().unwrap());
    assert_eq!(
        carried,
        viewer.iter().cloned().collect(),
        "the token's scope claim"
    );
    assert_eq!(scope_set(issued["scope"].as_str().unwrap()), carried);
    assert!(!carried.contains("keys:manage") && !carried.contains("roles:manage"));
    // A refresh grants no more either.
    let refreshed = ok_json(
        form_post(
            &app,
            Some("acme"),
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", issued["refresh_token"].as_str().unwrap()),
            ],
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        scope_set(
            claims(refreshed["access_token"].as_str().unwrap())["scope"]
                .as_str()
                .unwrap()
        ),
        carried
    );
}

#[tokio::test]
async fn introspection_applies_the_resolvers_checks_and_reports_the_effective_scope() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let introspector = client(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let introspector = (introspector.0.as_str(), introspector.1.as_str());
    let user = user_with_role(&app, &acme, "ann@acme.test", "admin").await;
    let issued = login(&app, "acme", "ann@acme.test").await;
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    let active = introspect(&app, "acme", introspector, &access).await;
    assert_eq!(active["active"], true);
    assert!(active["scope"].as_str().unwrap().contains("roles:manage"));

    // The user becomes a viewer: the token's text still says admin, introspection says viewer.
    let assignments = admin(
        &app,
        &acme,
        Method::GET,
        &format!("/v1/role-assignments?user_id={user}"),
        Value::Null,
    )
    .await;
    let admin_assignment = assignments["data"][0]["id"].as_str().unwrap().to_owned();
    admin(
        &app,
        &acme,
        Method::POST,
        "/v1/role-assignments",
        json!({ "role": "viewer", "user_id": user }),
    )
    .await;
    let removed = call_as(
        &app,
        &acme,
        Method::DELETE,
        &format!("/v1/role-assignments/{admin_assignment}"),
        None,
    )
    .await;
    assert!(removed.status().is_success());
    let viewer = permissions_of_role(&app, &acme, "viewer").await;
    let narrowed = introspect(&app, "acme", introspector, &access).await;
    assert_eq!(narrowed["active"], true);
    assert_eq!(
        scope_set(narrowed["scope"].as_str().unwrap()),
        viewer.iter().cloned().collect()
    );
    let refresh_view = introspect(&app, "acme", introspector, &refresh).await;
    assert_eq!(
        scope_set(refresh_view["scope"].as_str().unwrap()),
        viewer.iter().cloned().collect()
    );

    // Disabled: the API refuses the token, and introspection says inactive, for both tokens.
    admin(
        &app,
        &acme,
        Method::PATCH,
        &format!("/v1/users/{user}"),
        json!({ "status": "disabled" }),
    )
    .await;
    assert_eq!(
        call(&app, "acme", &access, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        introspect(&app, "acme", introspector, &access).await,
        json!({ "active": false })
    );
    assert_eq!(
        introspect(&app, "acme", introspector, &refresh).await,
        json!({ "active": false })
    );
}

async fn with_forwarded(request: RequestBuilder, from: &str) -> Response {
    request
        .header("x-forwarded-for", from)
        .send()
        .await
        .unwrap()
}

/// The statuses of `GET /v1/sessions` with `token` from `inside`, then from `outside`.
async fn inside_and_outside(
    app: &TestApp,
    token: &str,
    inside: &str,
    outside: &str,
) -> (StatusCode, StatusCode) {
    (
        sessions_from(app, token, inside).await,
        sessions_from(app, token, outside).await,
    )
}

#[tokio::test]
async fn tokens_from_an_allowlisted_key_keep_its_network_restriction() {
    let app = spawn_app_with(AppOptions {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..AppOptions::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    // Agent refresh tokens on, so a refresh can be tried too.
    let mut policy = admin(&app, &acme, Method::GET, "/v1/token-policy", Value::Null).await;
    policy["agent_refresh_tokens"] = json!(true);
    admin(&app, &acme, Method::PUT, "/v1/token-policy", policy).await;
    let (id, key) = client(
        &app,
        &acme,
        json!({ "scopes": ["sessions:read"], "principal": "fenced", "allowed_ips": ["10.9.9.0/24"] }),
    )
    .await;
    let (inside, outside) = ("10.9.9.5", "203.0.113.5");
    // The key itself: refused outside, as before.
    let key_outside = with_forwarded(
        app.client
            .get(app.tenant_url("acme", "/v1/sessions"))
            .bearer_auth(&key),
        outside,
    )
    .await;
    assert_eq!(key_outside.status(), StatusCode::UNAUTHORIZED);
    let issued = ok_json(
        with_forwarded(
            form_post(
                &app,
                Some("acme"),
                "/oauth/token",
                &[("grant_type", "client_credentials")],
            )
            .basic_auth(&id, Some(&key)),
            inside,
        )
        .await,
    )
    .await;
    let token = issued["access_token"].as_str().unwrap().to_owned();
    let allowed = (StatusCode::OK, StatusCode::UNAUTHORIZED);
    assert_eq!(
        inside_and_outside(&app, &token, inside, outside).await,
        allowed
    );
    // No address known at all (no X-Forwarded-For from the trusted proxy): refused too.
    assert_eq!(
        call(&app, "acme", &token, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Exchanged from it: still bound.
    let exchanged = ok_json(
        with_forwarded(
            form_post(
                &app,
                Some("acme"),
                "/oauth/token",
                &[
                    ("grant_type", TOKEN_EXCHANGE),
                    ("subject_token", &token),
                    ("subject_token_type", ACCESS_TOKEN_TYPE),
                    ("audience", "helper-agent"),
                ],
            ),
            inside,
        )
        .await,
    )
    .await;
    let delegated = exchanged["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        inside_and_outside(&app, &delegated, inside, outside).await,
        allowed
    );

    // Refreshed: the new access token is bound too.
    let refreshed = ok_json(
        with_forwarded(
            form_post(
                &app,
                Some("acme"),
                "/oauth/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", issued["refresh_token"].as_str().unwrap()),
                ],
            )
            .basic_auth(&id, Some(&key)),
            inside,
        )
        .await,
    )
    .await;
    let renewed = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        inside_and_outside(&app, &renewed, inside, outside).await,
        allowed
    );

    // Introspection reports the restriction, for a resource server to apply.
    let introspector = client(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let seen = introspect(&app, "acme", (&introspector.0, &introspector.1), &delegated).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["allowed_networks"], json!([["10.9.9.0/24"]]));
}

#[tokio::test]
async fn a_delegated_actor_token_passes_on_its_whole_chain() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let token_of = |scopes: Value, principal: &'static str| {
        let (app, acme) = (&app, &acme);
        async move {
            let (id, key) = client(
                app,
                acme,
                json!({ "scopes": scopes, "principal": principal }),
            )
            .await;
            ok_json(
                form_post(
                    app,
                    Some("acme"),
                    "/oauth/token",
                    &[("grant_type", "client_credentials")],
                )
                .basic_auth(&id, Some(&key))
                .send()
                .await
                .unwrap(),
            )
            .await["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let root = token_of(json!(["sessions:read", "audit:read"]), "root-agent").await;
    let planner = token_of(json!(["sessions:read", "audit:read"]), "planner").await;
    // The planner's own token is delegated to a worker: act = {worker}.
    let exchange = |subject: String, extra: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let mut pairs: Vec<(&str, String)> = vec![
                ("grant_type", TOKEN_EXCHANGE.into()),
                ("subject_token", subject),
                ("subject_token_type", ACCESS_TOKEN_TYPE.into()),
            ];
            pairs.extend(extra);
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            ok_json(
                form_post(app, Some("acme"), "/oauth/token", &pairs)
                    .send()
                    .await
                    .unwrap(),
            )
            .await["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let worker_as_planner = exchange(planner, vec![("audience", "worker".into())]).await;
    assert_eq!(
        claims(&worker_as_planner)["act"],
        json!({ "sub": "worker" })
    );
    // Root delegates to the planner, who presents that delegated token as the actor.
    let chained = exchange(
        root,
        vec![
            ("actor_token", worker_as_planner),
            ("actor_token_type", ACCESS_TOKEN_TYPE.into()),
        ],
    )
    .await;
    let act = &claims(&chained)["act"];
    assert_eq!(
        act,
        &json!({ "sub": "worker", "act": { "sub": "planner" } }),
        "the actor's own chain is nested, the current actor outermost"
    );
    // The exchange's audit event and the events of the new token's use carry the whole chain.
    let used = call(
        &app,
        "acme",
        &chained,
        Method::GET,
        "/v1/audit/events?action=auth.token_exchange",
        None,
    )
    .await;
    assert_eq!(used.status(), StatusCode::OK);
    let events = admin(
        &app,
        &acme,
        Method::GET,
        "/v1/audit/events?action=auth.token_exchange",
        Value::Null,
    )
    .await;
    let jti = claims(&chained)["jti"].as_str().unwrap().to_owned();
    let event = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource_id"] == jti.as_str())
        .unwrap_or_else(|| panic!("no exchange event for {jti}: {events}"))
        .clone();
    assert_eq!(event["delegation"], json!(["worker", "planner"]));
    assert_eq!(event["metadata"]["act"], *act);
}

async fn status_in(pool: &PgPool, tenant: bulkhead_core::TenantId) -> String {
    sqlx::query_scalar("SELECT status FROM bulkhead.tenants WHERE id = $1")
        .bind(tenant.uuid())
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn status_events(pool: &PgPool, tenant: bulkhead_core::TenantId) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT action, actor_id FROM bulkhead.audit_events \
         WHERE tenant_id = $1 AND action IN ('tenant.suspend', 'tenant.activate') ORDER BY id",
    )
    .bind(tenant.uuid())
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_status_change_reaches_every_copy_or_none_and_is_audited() {
    let us = TestDb::new().await;
    let eu = TestDb::new().await;
    let owner = us_and_eu(us.owner_store().await, eu.owner_pool().await);
    let eu_tenant = onboard_in_region(&owner, "eu-co", "eu").await.id;
    let us_tenant = onboard_in_region(&owner, "us-co", "us").await.id;
    let us_su = PgPool::connect_with(us.superuser_options.clone())
        .await
        .unwrap();
    let eu_su = PgPool::connect_with(eu.superuser_options.clone())
        .await
        .unwrap();

    // Run where the EU is not configured: refused, naming the region, and nothing changed.
    let us_only = us
        .owner_store()
        .await
        .reconfigured(|t| t.default_region = "us".into());
    let refused = us_only
        .set_tenant_status_by(eu_tenant, TenantStatus::Suspended, "cli:ops")
        .await;
    assert!(
        matches!(&refused, Err(StoreError::WrongRegion(region)) if region == "eu"),
        "{refused:?}"
    );
    assert!(refused.unwrap_err().to_string().contains("eu"));
    assert_eq!(status_in(&us_su, eu_tenant).await, "active");
    assert_eq!(status_in(&eu_su, eu_tenant).await, "active");
    assert!(status_events(&eu_su, eu_tenant).await.is_empty());

    // Where it is: both copies, and the tenant's own log, with the operator as actor.
    owner
        .set_tenant_status_by(eu_tenant, TenantStatus::Suspended, "cli:ops")
        .await
        .unwrap();
    assert_eq!(status_in(&us_su, eu_tenant).await, "suspended");
    assert_eq!(status_in(&eu_su, eu_tenant).await, "suspended");
    owner
        .set_tenant_status_by(eu_tenant, TenantStatus::Active, "cli:ops")
        .await
        .unwrap();
    assert_eq!(status_in(&us_su, eu_tenant).await, "active");
    assert_eq!(status_in(&eu_su, eu_tenant).await, "active");
    assert_eq!(
        status_events(&eu_su, eu_tenant).await,
        vec![
            ("tenant.suspend".to_owned(), "system:operator".to_owned()),
            ("tenant.activate".to_owned(), "system:operator".to_owned()),
        ]
    );
    // A tenant in the registry's own database: one transaction, audited the same way.
    owner
        .set_tenant_status_by(us_tenant, TenantStatus::Suspended, "cli:ops")
        .await
        .unwrap();
    assert_eq!(status_in(&us_su, us_tenant).await, "suspended");
    assert_eq!(
        status_events(&us_su, us_tenant).await,
        vec![("tenant.suspend".to_owned(), "system:operator".to_owned())]
    );
    let operator: String = sqlx::query_scalar(
        "SELECT metadata->>'operator' FROM bulkhead.audit_events \
         WHERE tenant_id = $1 AND action = 'tenant.suspend'",
    )
    .bind(us_tenant.uuid())
    .fetch_one(&us_su)
    .await
    .unwrap();
    assert_eq!(operator, "cli:ops");
}

#[tokio::test]
async fn a_suspended_tenants_user_can_still_log_out() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ann@acme.test", "viewer").await;
    let issued = login(&app, "acme", "ann@acme.test").await;
    let access = issued["access_token"].as_str().unwrap().to_owned();
    app.db
        .owner_store()
        .await
        .set_tenant_status(acme.id, TenantStatus::Suspended)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await; // the registry cache's TTL
    assert_eq!(
        call(&app, "acme", &access, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let logout = app
        .client
        .post(app.tenant_url("acme", "/v1/auth/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    // The session is over: once the tenant is back, the token and its refresh are dead.
    app.db
        .owner_store()
        .await
        .set_tenant_status(acme.id, TenantStatus::Active)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        call(&app, "acme", &access, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Exchanges `token` (no actor) into a delegated token for `helper-agent`, from `from`.
async fn exchanged_from(app: &TestApp, token: &str, from: &str) -> String {
    let exchanged = ok_json(
        with_forwarded(
            form_post(
                app,
                Some("acme"),
                "/oauth/token",
                &[
                    ("grant_type", TOKEN_EXCHANGE),
                    ("subject_token", token),
                    ("subject_token_type", ACCESS_TOKEN_TYPE),
                    ("audience", "helper-agent"),
                ],
            ),
            from,
        )
        .await,
    )
    .await;
    exchanged["access_token"].as_str().unwrap().to_owned()
}

/// A `client_credentials` token of the key `(id, key)`, asked for from `from`.
async fn minted(app: &TestApp, (id, key): (&str, &str), from: &str) -> String {
    let issued = ok_json(
        with_forwarded(
            form_post(
                app,
                Some("acme"),
                "/oauth/token",
                &[("grant_type", "client_credentials")],
            )
            .basic_auth(id, Some(key)),
            from,
        )
        .await,
    )
    .await;
    issued["access_token"].as_str().unwrap().to_owned()
}

async fn sessions_from(app: &TestApp, token: &str, from: &str) -> StatusCode {
    let request = app
        .client
        .get(app.tenant_url("acme", "/v1/sessions"))
        .bearer_auth(token);
    with_forwarded(request, from).await.status()
}

/// Review finding 4b (issue 26.3/27.3): revoking a key, or rotating it with no grace, left the
/// access tokens minted from it (and exchanged from those) valid at `/v1` and `active: true` at
/// introspection for their whole lifetime; the one decision now asks whether the key a token
/// was issued to still works.
#[tokio::test]
async fn revoking_or_rotating_out_a_key_ends_the_tokens_minted_from_it() {
    let app = spawn_app_with(AppOptions {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..AppOptions::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let from = "10.9.9.5";
    let introspector = client(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let introspector = (introspector.0.as_str(), introspector.1.as_str());

    let (id, key) = client(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let token = minted(&app, (&id, &key), from).await;
    let delegated = exchanged_from(&app, &token, from).await;
    for t in [&token, &delegated] {
        assert_eq!(sessions_from(&app, t, from).await, StatusCode::OK);
        assert_eq!(
            introspect(&app, "acme", introspector, t).await["active"],
            true
        );
    }
    admin(
        &app,
        &acme,
        Method::POST,
        &format!("/v1/api-keys/{id}/revoke"),
        Value::Null,
    )
    .await;
    for t in [&token, &delegated] {
        assert_eq!(
            sessions_from(&app, t, from).await,
            StatusCode::UNAUTHORIZED,
            "a token of a revoked key"
        );
        assert_eq!(
            introspect(&app, "acme", introspector, t).await,
            json!({ "active": false })
        );
    }

    // Rotated with no grace: the old key is expired at once, and so are its tokens; the
    // successor's tokens work.
    let (id, key) = client(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let token = minted(&app, (&id, &key), from).await;
    assert_eq!(sessions_from(&app, &token, from).await, StatusCode::OK);
    let rotated = admin(
        &app,
        &acme,
        Method::POST,
        &format!("/v1/api-keys/{id}/rotate"),
        json!({ "grace_seconds": 0 }),
    )
    .await;
    assert_eq!(
        sessions_from(&app, &token, from).await,
        StatusCode::UNAUTHORIZED,
        "a token of a key past its rotation grace"
    );
    assert_eq!(
        introspect(&app, "acme", introspector, &token).await,
        json!({ "active": false })
    );
    let successor = (
        rotated["api_key"]["id"].as_str().unwrap(),
        rotated["key"].as_str().unwrap(),
    );
    let fresh = minted(&app, successor, from).await;
    assert_eq!(sessions_from(&app, &fresh, from).await, StatusCode::OK);
}

/// Review finding 4 (issue 26.4): narrowing a key's `allowed_ips` left the tokens minted from
/// it (and exchanged from them) usable from the removed addresses until they expired, because
/// only the allowlist copied into the claim was checked.
#[tokio::test]
async fn narrowing_a_keys_allowlist_binds_the_tokens_already_minted_from_it() {
    let app = spawn_app_with(AppOptions {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..AppOptions::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let (id, key) = client(
        &app,
        &acme,
        json!({ "scopes": ["sessions:read"], "allowed_ips": ["10.9.9.0/24"] }),
    )
    .await;
    let (kept, removed) = ("10.9.9.5", "10.9.9.66");
    let token = minted(&app, (&id, &key), removed).await;
    let delegated = exchanged_from(&app, &token, removed).await;
    for t in [&token, &delegated] {
        assert_eq!(sessions_from(&app, t, removed).await, StatusCode::OK);
    }
    admin(
        &app,
        &acme,
        Method::PATCH,
        &format!("/v1/api-keys/{id}"),
        json!({ "allowed_ips": ["10.9.9.5/32"] }),
    )
    .await;
    for t in [&token, &delegated] {
        assert_eq!(
            sessions_from(&app, t, removed).await,
            StatusCode::UNAUTHORIZED,
            "an address the key no longer allows"
        );
        assert_eq!(sessions_from(&app, t, kept).await, StatusCode::OK);
    }
}

/// Review finding 8b (issue 27.4): the route admits delegated and confined credentials to end
/// their *own* sessions, but with `keys:manage` they could end any session of the tenant.
#[tokio::test]
async fn a_delegated_keys_manager_cannot_end_anothers_session() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ann@acme.test", "admin").await;
    let session = login(&app, "acme", "ann@acme.test").await;
    let sid = session["session_id"].as_str().unwrap().to_owned();
    // The admin key's token (every permission, keys:manage included), exchanged: delegated,
    // and delegated and confined.
    let (root, delegated, confined) = admin_and_delegated_tokens(&app, &acme).await;
    for token in [&delegated, &confined] {
        assert!(claims(token)["scope"]
            .as_str()
            .unwrap()
            .contains("keys:manage"));
        let response = call(
            &app,
            "acme",
            token,
            Method::DELETE,
            &format!("/v1/auth/sessions/{sid}"),
            None,
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    // The login still works; the unconfined, undelegated manager may end it.
    let access = session["access_token"].as_str().unwrap();
    assert_eq!(
        call(&app, "acme", access, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::OK
    );
    let response = app
        .client
        .delete(app.tenant_url("acme", &format!("/v1/auth/sessions/{sid}")))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        call(&app, "acme", access, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Exchanges `subject` with the actor named by `actor`: `Ok((id, key))` authenticates that key
/// as the client, `Err(token)` presents that access token as `actor_token`. From `from`.
async fn exchanged_by(
    app: &TestApp,
    subject: &str,
    actor: Result<(&str, &str), &str>,
    from: &str,
) -> String {
    let mut pairs = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    if let Err(actor_token) = actor {
        pairs.extend([
            ("actor_token", actor_token),
            ("actor_token_type", ACCESS_TOKEN_TYPE),
        ]);
    }
    let mut request = form_post(app, Some("acme"), "/oauth/token", &pairs);
    if let Ok((id, key)) = actor {
        request = request.basic_auth(id, Some(key));
    }
    ok_json(with_forwarded(request, from).await).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Review finding (issue 27.3): a token exchanged with a subject token of key K1 and an actor
/// credential of key K2 was bound only to K2 (its `client_id`): revoking K1 left it valid at
/// `/v1` and active at introspection. Every key of its chain now binds it, and so every token
/// exchanged from it in turn.
#[tokio::test]
async fn revoking_any_key_of_an_exchange_ends_the_exchanged_token() {
    let app = spawn_app_with(AppOptions {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..AppOptions::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let from = "10.9.9.5";
    let introspector = client(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let introspector = (introspector.0.as_str(), introspector.1.as_str());
    let key = || client(&app, &acme, json!({ "scopes": ["sessions:read"] }));
    let revoke = |id: String| {
        let (app, acme) = (&app, &acme);
        async move {
            admin(
                app,
                acme,
                Method::POST,
                &format!("/v1/api-keys/{id}/revoke"),
                Value::Null,
            )
            .await;
        }
    };
    let assert_usable = |token: String, usable: bool, what: String| {
        let app = &app;
        async move {
            let (status, active) = if usable {
                (StatusCode::OK, json!(true))
            } else {
                (StatusCode::UNAUTHORIZED, json!(false))
            };
            assert_eq!(sessions_from(app, &token, from).await, status, "{what}");
            assert_eq!(
                introspect(app, "acme", introspector, &token).await["active"],
                active,
                "{what}"
            );
        }
    };

    // Each actor form (K2 as the authenticated client, K2's token as actor_token), each key
    // revoked in turn.
    for (actor_form, revoked) in [
        ("client", "subject"),
        ("client", "actor"),
        ("actor_token", "subject"),
        ("actor_token", "actor"),
    ] {
        let (k1, s1) = key().await;
        let (k2, s2) = key().await;
        let subject = minted(&app, (&k1, &s1), from).await;
        let actor_token = minted(&app, (&k2, &s2), from).await;
        let actor = match actor_form {
            "client" => Ok((k2.as_str(), s2.as_str())),
            _ => Err(actor_token.as_str()),
        };
        let exchanged = exchanged_by(&app, &subject, actor, from).await;
        // And exchanged again from it (no credential of its own for the next actor).
        let again = exchanged_from(&app, &exchanged, from).await;
        assert_eq!(claims(&exchanged)["client_id"], k2.as_str());
        for token in [&exchanged, &again] {
            assert_usable(token.clone(), true, format!("{actor_form}: before")).await;
        }
        revoke(if revoked == "subject" { k1 } else { k2 }).await;
        for token in [&exchanged, &again] {
            let what = format!("{actor_form}: the {revoked}'s key revoked");
            assert_usable(token.clone(), false, what).await;
        }
    }
}

/// The same finding for allowlists: narrowing the subject token's key (K1) did not bind the
/// token exchanged with another client (K2); now narrowing either binds it, at `/v1` and in what
/// introspection reports.
#[tokio::test]
async fn narrowing_any_key_of_an_exchange_binds_the_exchanged_token() {
    let app = spawn_app_with(AppOptions {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..AppOptions::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let introspector = client(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let introspector = (introspector.0.as_str(), introspector.1.as_str());
    let (kept, removed) = ("10.9.9.5", "10.9.9.66");
    for narrowed in ["subject", "actor"] {
        let fenced = json!({ "scopes": ["sessions:read"], "allowed_ips": ["10.9.9.0/24"] });
        let (k1, s1) = client(&app, &acme, fenced.clone()).await;
        let (k2, s2) = client(&app, &acme, fenced).await;
        let subject = minted(&app, (&k1, &s1), removed).await;
        let exchanged = exchanged_by(&app, &subject, Ok((&k2, &s2)), removed).await;
        assert_eq!(
            sessions_from(&app, &exchanged, removed).await,
            StatusCode::OK
        );
        let id = if narrowed == "subject" { &k1 } else { &k2 };
        admin(
            &app,
            &acme,
            Method::PATCH,
            &format!("/v1/api-keys/{id}"),
            json!({ "allowed_ips": ["10.9.9.5/32"] }),
        )
        .await;
        assert_eq!(
            sessions_from(&app, &exchanged, removed).await,
            StatusCode::UNAUTHORIZED,
            "an address the {narrowed}'s key no longer allows"
        );
        assert_eq!(sessions_from(&app, &exchanged, kept).await, StatusCode::OK);
        let seen = introspect(&app, "acme", introspector, &exchanged).await;
        assert_eq!(seen["active"], true);
        let lists = seen["allowed_networks"].as_array().unwrap();
        assert!(
            lists.contains(&json!(["10.9.9.5/32"])),
            "introspection does not report the {narrowed}'s key's allowlist: {seen}"
        );
    }
}
