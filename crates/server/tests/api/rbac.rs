//! RBAC over HTTP: every route's declared permission is enforced (deny by default), the
//! built-in roles allow exactly what `docs/authorization.md` says, nobody grants more than they
//! hold, and roles, agents and users never cross a tenant boundary.

use std::sync::Arc;

use bulkhead_auth::rbac::BuiltInRole;
use bulkhead_auth::KeyEnvironment;
use bulkhead_core::{Actor, AgentId, RequestId, Scope, ScopeSet, TenantContext};
use bulkhead_server::http::authz::{RouteAccess, RouteSpec};
use bulkhead_server::service::keys::{self, KeySpec};
use bulkhead_server::service::rate_limits::RateLimits;
use bulkhead_store::tenant::rbac::{self, Principal};
use bulkhead_store::Access;
use bulkhead_test_support::{spawn_app_with, AppOptions, TestApp, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::keys::request_key;
use crate::helpers::oauth::{token_request, ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE};
use crate::helpers::{call_as, concrete_path, created, problem};

/// An app without request budgets: these tests send a request to every route several times.
async fn app() -> TestApp {
    let clock = bulkhead_core::Clock::default();
    spawn_app_with(AppOptions {
        rate_limits: Some(Arc::new(RateLimits::in_memory(
            Default::default(),
            Default::default(),
            clock,
        ))),
        ..AppOptions::default()
    })
    .await
}

fn system(tenant: &TestTenant) -> TenantContext {
    TenantContext::for_test(
        tenant.id,
        Actor::System { component: "test" },
        RequestId::new(),
    )
}

/// A key with `scopes`, optionally belonging to `agent`, minted through the store (the HTTP
/// route has a small per-minute budget of its own).
async fn key_with(
    app: &TestApp,
    tenant: &TestTenant,
    scopes: ScopeSet,
    agent: Option<AgentId>,
) -> TestTenant {
    key_and_id(app, tenant, scopes, agent).await.0
}

async fn key_and_id(
    app: &TestApp,
    tenant: &TestTenant,
    scopes: ScopeSet,
    agent: Option<AgentId>,
) -> (TestTenant, String) {
    let mut tx = app
        .state
        .store()
        .begin(&system(tenant), Access::ReadWrite)
        .await
        .unwrap();
    let spec = KeySpec {
        principal: "rbac-test".into(),
        scopes,
        agent,
        allowed_ips: Vec::new(),
        description: String::new(),
        expires_at: None,
    };
    let (id, key) = keys::mint(
        &mut tx,
        app.state.verifier().peppers(),
        KeyEnvironment::Live,
        &spec,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let holder = TestTenant {
        key: key.expose_secret().to_owned(),
        ..tenant.clone()
    };
    (holder, id.to_string())
}

/// An agent holding `role`, and a key of it holding every scope: its effective permissions are
/// exactly the role's.
async fn agent_with_role(
    app: &TestApp,
    tenant: &TestTenant,
    name: &str,
    role: &str,
) -> (TestTenant, String) {
    let agent = created(app, tenant, "/v1/agents", json!({ "name": name })).await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    created(
        app,
        tenant,
        "/v1/role-assignments",
        json!({ "role": role, "agent_id": agent_id }),
    )
    .await;
    let key = key_with(
        app,
        tenant,
        ScopeSet::all(),
        Some(AgentId::parse(&agent_id).unwrap()),
    )
    .await;
    (key, agent_id)
}

fn routes() -> Vec<RouteSpec> {
    bulkhead_server::http::app::route_table()
        .specs()
        .cloned()
        .collect()
}

#[tokio::test]
async fn every_route_refuses_a_credential_without_its_permission() {
    let app = app().await;
    let tenant = app.create_tenant("acme").await;
    let routes = routes();
    assert!(routes.len() > 40, "the table lists the whole API");
    let mut required = 0;
    for spec in &routes {
        let path = concrete_path(spec);
        match spec.access {
            RouteAccess::Requires(scope) => {
                required += 1;
                let without: ScopeSet =
                    Scope::ALL.iter().copied().filter(|s| *s != scope).collect();
                let holder = key_with(&app, &tenant, without, None).await;
                let response =
                    call_as(&app, &holder, spec.method.clone(), &path, Some(json!({}))).await;
                let (status, body) = problem(response).await;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{} {}",
                    spec.method,
                    spec.path
                );
                assert!(
                    body["detail"].as_str().unwrap().contains(scope.as_str()),
                    "{} {}: {body}",
                    spec.method,
                    spec.path
                );
                // No credential at all: 401 before any permission is considered.
                let anonymous = app
                    .client
                    .request(spec.method.clone(), app.tenant_url("acme", &path))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    anonymous.status(),
                    StatusCode::UNAUTHORIZED,
                    "{} {}",
                    spec.method,
                    spec.path
                );
            }
            RouteAccess::Authenticated => {
                let anonymous = app
                    .client
                    .request(spec.method.clone(), app.tenant_url("acme", &path))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    anonymous.status(),
                    StatusCode::UNAUTHORIZED,
                    "{} {}",
                    spec.method,
                    spec.path
                );
            }
            RouteAccess::Public | RouteAccess::SelfAuthenticating => {
                assert!(
                    !spec.path.starts_with("/v1/") || spec.path == "/v1/auth/login",
                    "only login may be reached under /v1 without tenant resolution: {}",
                    spec.path
                );
            }
        }
    }
    assert!(required > 30);
    // Every route that does not require a permission is one of these, reviewed one by one: a
    // new route cannot slip in as "any credential" or "public" without changing this list.
    let mut open: Vec<String> = routes
        .iter()
        .filter(|spec| !matches!(spec.access, RouteAccess::Requires(_)))
        .map(|spec| format!("{:?} {} {}", spec.access, spec.method, spec.path))
        .collect();
    open.sort();
    let reviewed = [
        "Authenticated DELETE /v1/auth/grants/{id}",
        "Authenticated DELETE /v1/auth/sessions/{id}",
        "Authenticated GET /oauth/userinfo",
        "Authenticated GET /v1/api-keys/{id}",
        "Authenticated GET /v1/auth/grants",
        "Authenticated GET /v1/auth/sessions",
        "Authenticated PATCH /v1/api-keys/{id}",
        "Authenticated POST /oauth/userinfo",
        "Authenticated POST /v1/api-keys/{id}/revoke",
        "Authenticated POST /v1/api-keys/{id}/rotate",
        "Authenticated POST /v1/auth/logout",
        "Authenticated POST /v1/tools/{name}/calls",
        "Public GET /.well-known/bulkhead-audit-key",
        "Public GET /.well-known/jwks.json",
        "Public GET /.well-known/oauth-authorization-server",
        "Public GET /.well-known/oauth-protected-resource",
        "Public GET /.well-known/oauth-protected-resource/{id}",
        "Public GET /.well-known/openid-configuration",
        "Public GET /healthz",
        "Public GET /oauth/style.css",
        "Public GET /openapi.json",
        "Public GET /readyz",
        "SelfAuthenticating GET /oauth/authorize",
        "SelfAuthenticating POST /oauth/authorize",
        "SelfAuthenticating POST /oauth/authorize/login",
        "SelfAuthenticating POST /oauth/introspect",
        "SelfAuthenticating POST /oauth/register",
        "SelfAuthenticating POST /oauth/revoke",
        "SelfAuthenticating POST /oauth/token",
        "SelfAuthenticating POST /v1/auth/login",
    ];
    assert_eq!(open, reviewed);
    // A route that is not in the table does not exist, with or without a credential.
    let response = call_as(&app, &tenant, Method::GET, "/v1/not-a-route", None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn built_in_roles_allow_exactly_their_documented_routes() {
    let app = app().await;
    let tenant = app.create_tenant("acme").await;
    let routes = routes();
    for role in BuiltInRole::ALL {
        let (holder, _) =
            agent_with_role(&app, &tenant, &format!("{}-bot", role.name()), role.name()).await;
        let allowed = role.permissions();
        for spec in &routes {
            let RouteAccess::Requires(scope) = spec.access else {
                continue;
            };
            let path = concrete_path(spec);
            let status = call_as(&app, &holder, spec.method.clone(), &path, Some(json!({})))
                .await
                .status();
            if allowed.contains(scope) {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{} should reach {} {} ({scope}), got {status}",
                    role.name(),
                    spec.method,
                    spec.path
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{} must not reach {} {} ({scope})",
                    role.name(),
                    spec.method,
                    spec.path
                );
            }
        }
    }
}

/// The role table in `docs/authorization.md` is the one the binary enforces.
#[test]
fn the_documented_role_table_matches_the_built_in_roles() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/authorization.md"
    ))
    .unwrap();
    let header = "| permission | admin | developer | agent | viewer |";
    let start = doc.find(header).expect("the role table");
    let mut rows = 0;
    for line in doc[start..].lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let permission =
            ScopeSet::parse_all([cells[0].trim_matches('`')]).expect("a known permission");
        for (role, cell) in BuiltInRole::ALL.iter().zip(&cells[1..]) {
            assert_eq!(
                role.permissions().is_superset(&permission),
                *cell == "✓",
                "{} / {}",
                role.name(),
                cells[0]
            );
        }
        rows += 1;
    }
    assert_eq!(
        rows,
        Scope::ALL.len() + 1,
        "every permission (and tools:call:*) has a row"
    );
}

#[tokio::test]
async fn nobody_grants_more_than_they_hold() {
    let app = app().await;
    let tenant = app.create_tenant("acme").await;

    // A developer can mint keys, but not one with role administration or billing in it.
    let (developer, _) = agent_with_role(&app, &tenant, "dev-bot", "developer").await;
    let admin_key = request_key(
        &app,
        &developer,
        &json!({ "scopes": Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>() }),
    )
    .await;
    let (status, body) = problem(admin_key).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let ok = request_key(&app, &developer, &json!({ "scopes": ["sessions:read"] })).await;
    assert_eq!(ok.status(), StatusCode::CREATED, "the positive control");
    // ...and cannot administer roles at all.
    for (path, body) in [
        (
            "/v1/role-assignments",
            json!({ "role": "admin", "agent_id": AgentId::new().to_string() }),
        ),
        (
            "/v1/roles",
            json!({ "name": "billing", "permissions": ["billing:manage"] }),
        ),
    ] {
        let (status, _) =
            problem(call_as(&app, &developer, Method::POST, path, Some(body)).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }

    // An agent can mint no key at all.
    let (agent, _) = agent_with_role(&app, &tenant, "worker-bot", "agent").await;
    let (status, _) =
        problem(request_key(&app, &agent, &json!({ "scopes": ["sessions:read"] })).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A delegated administrator: roles:manage and sessions only. It may hand out what it holds
    // and nothing else.
    created(
        &app,
        &tenant,
        "/v1/roles",
        json!({ "name": "session-admin", "permissions": ["roles:manage", "roles:read", "sessions:read", "sessions:write"] }),
    )
    .await;
    let (session_admin, _) =
        agent_with_role(&app, &tenant, "session-admin-bot", "session-admin").await;
    let (_, target) = agent_with_role(&app, &tenant, "target-bot", "viewer").await;
    for (path, body, what) in [
        (
            "/v1/roles",
            json!({ "name": "with-billing", "permissions": ["sessions:read", "billing:manage"] }),
            "a custom role with billing",
        ),
        (
            "/v1/role-assignments",
            json!({ "role": "admin", "agent_id": target }),
            "assigning admin",
        ),
        (
            "/v1/role-assignments",
            json!({ "role": "developer", "agent_id": target }),
            "assigning developer",
        ),
    ] {
        let (status, body) =
            problem(call_as(&app, &session_admin, Method::POST, path, Some(body)).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
    }
    let narrower = created(
        &app,
        &session_admin,
        "/v1/roles",
        json!({ "name": "reader", "permissions": ["sessions:read"] }),
    )
    .await;
    created(
        &app,
        &session_admin,
        "/v1/role-assignments",
        json!({ "role_id": narrower["id"], "agent_id": target }),
    )
    .await;
    // Nor can it widen a role it may edit into one it could not create.
    let path = format!("/v1/roles/{}", narrower["id"].as_str().unwrap());
    let (status, _) = problem(
        call_as(
            &app,
            &session_admin,
            Method::PATCH,
            &path,
            Some(json!({ "permissions": ["sessions:read", "keys:manage"] })),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The refusals are in the tenant's audit log.
    let mut tx = app
        .state
        .store()
        .begin(&system(&tenant), Access::ReadOnly)
        .await
        .unwrap();
    let blocked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bulkhead.audit_events WHERE tenant_id = $1 AND outcome = 'blocked' AND action LIKE 'role.%'",
    )
    .bind(tenant.id.uuid())
    .fetch_one(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(blocked >= 4, "{blocked} blocked role events");

    // Built-in roles cannot be edited or deleted, even by an admin.
    let roles: Value = call_as(&app, &tenant, Method::GET, "/v1/roles", None)
        .await
        .json()
        .await
        .unwrap();
    let admin = roles["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "admin")
        .unwrap();
    let path = format!("/v1/roles/{}", admin["id"].as_str().unwrap());
    let patch = call_as(
        &app,
        &tenant,
        Method::PATCH,
        &path,
        Some(json!({ "description": "mine now" })),
    )
    .await;
    assert_eq!(patch.status(), StatusCode::CONFLICT);
    let delete = call_as(&app, &tenant, Method::DELETE, &path, None).await;
    assert_eq!(delete.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn role_changes_and_disabled_agents_take_effect_on_the_next_request() {
    let app = app().await;
    let tenant = app.create_tenant("acme").await;
    let (holder, agent_id) = agent_with_role(&app, &tenant, "ops-bot", "developer").await;
    assert_eq!(
        call_as(&app, &holder, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::OK
    );

    // Remove the role: the key (which still holds every scope) can do nothing.
    let assignments: Value = call_as(
        &app,
        &tenant,
        Method::GET,
        &format!("/v1/role-assignments?agent_id={agent_id}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let assignment = assignments["data"][0]["id"].as_str().unwrap();
    let removed = call_as(
        &app,
        &tenant,
        Method::DELETE,
        &format!("/v1/role-assignments/{assignment}"),
        None,
    )
    .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        call_as(&app, &holder, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // Viewer: reads, never writes.
    created(
        &app,
        &tenant,
        "/v1/role-assignments",
        json!({ "role": "viewer", "agent_id": agent_id }),
    )
    .await;
    assert_eq!(
        call_as(&app, &holder, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::OK
    );
    let write = call_as(
        &app,
        &holder,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "a" })),
    )
    .await;
    assert_eq!(write.status(), StatusCode::FORBIDDEN);

    // A token minted from a key of the agent cannot hold more than the agent's roles either.
    let agent = AgentId::parse(&agent_id).unwrap();
    let (client, client_id) = key_and_id(&app, &tenant, ScopeSet::all(), Some(agent)).await;
    let token = app
        .client
        .post(app.tenant_url("acme", "/oauth/token"))
        .basic_auth(&client_id, Some(&client.key))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "sessions:write"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::BAD_REQUEST);
    let body: Value = token.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");

    // Disable the agent: its key is refused outright, like an unknown key.
    let path = format!("/v1/agents/{agent_id}");
    let disabled = call_as(
        &app,
        &tenant,
        Method::PATCH,
        &path,
        Some(json!({ "status": "disabled" })),
    )
    .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    let (status, _) =
        problem(call_as(&app, &holder, Method::GET, "/v1/sessions", None).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A disabled agent gets no new keys.
    let minted = request_key(
        &app,
        &tenant,
        &json!({ "scopes": ["sessions:read"], "agent_id": agent_id }),
    )
    .await;
    assert_eq!(minted.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let enabled = call_as(
        &app,
        &tenant,
        Method::PATCH,
        &path,
        Some(json!({ "status": "active" })),
    )
    .await;
    assert_eq!(enabled.status(), StatusCode::OK);
    assert_eq!(
        call_as(&app, &holder, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn principals_and_roles_never_cross_tenants() {
    let app = app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let (_, globex_agent) = agent_with_role(&app, &globex, "globex-bot", "viewer").await;
    let globex_user = created(
        &app,
        &globex,
        "/v1/users",
        json!({ "email": "ceo@globex.test", "password": "correct horse battery staple" }),
    )
    .await;
    let globex_roles: Value = call_as(&app, &globex, Method::GET, "/v1/roles", None)
        .await
        .json()
        .await
        .unwrap();
    let globex_admin_role = globex_roles["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let globex_user_id = globex_user["id"].as_str().unwrap().to_owned();

    // Reading another tenant's principal or role answers exactly like a missing one.
    let missing_agent = problem(
        call_as(
            &app,
            &acme,
            Method::GET,
            &format!("/v1/agents/{}", AgentId::new()),
            None,
        )
        .await,
    )
    .await;
    for path in [
        format!("/v1/agents/{globex_agent}"),
        format!("/v1/users/{globex_user_id}"),
        format!("/v1/roles/{globex_admin_role}"),
    ] {
        let (status, body) = problem(call_as(&app, &acme, Method::GET, &path, None).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, missing_agent.1, "{path}");
    }
    // Assigning across the boundary: the composite keys refuse it, as if the ids did not exist.
    let acme_agent = created(&app, &acme, "/v1/agents", json!({ "name": "acme-bot" })).await;
    for body in [
        json!({ "role": "viewer", "agent_id": globex_agent }),
        json!({ "role": "viewer", "user_id": globex_user_id }),
        json!({ "role_id": globex_admin_role, "agent_id": acme_agent["id"] }),
    ] {
        let (status, problem_body) = problem(
            call_as(
                &app,
                &acme,
                Method::POST,
                "/v1/role-assignments",
                Some(body.clone()),
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(problem_body, missing_agent.1);
    }
    // A key for another tenant's agent, an agent owned by another tenant's user.
    let key = request_key(
        &app,
        &acme,
        &json!({ "scopes": ["sessions:read"], "agent_id": globex_agent }),
    )
    .await;
    assert_eq!(key.status(), StatusCode::NOT_FOUND);
    let owned = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/agents",
        Some(json!({ "name": "stray", "owner_user_id": globex_user_id })),
    )
    .await;
    assert_eq!(owned.status(), StatusCode::NOT_FOUND);
    // And the database itself refuses the row, whatever the application asks.
    let mut tx = app
        .state
        .store()
        .begin(&system(&acme), Access::ReadWrite)
        .await
        .unwrap();
    let refused = rbac::assign(
        &mut tx,
        bulkhead_core::RoleId::parse(&globex_admin_role).unwrap(),
        Principal::Agent(AgentId::parse(acme_agent["id"].as_str().unwrap()).unwrap()),
    )
    .await;
    assert!(
        matches!(refused, Err(bulkhead_store::StoreError::NotFound)),
        "{refused:?}"
    );
    tx.rollback().await.unwrap();

    // Lists hold only the tenant's own.
    for path in [
        "/v1/agents",
        "/v1/users",
        "/v1/roles",
        "/v1/role-assignments",
    ] {
        let text = call_as(&app, &acme, Method::GET, path, None)
            .await
            .text()
            .await
            .unwrap();
        assert!(
            !text.contains(&globex_agent)
                && !text.contains(&globex_user_id)
                && !text.contains(&globex_admin_role),
            "{path}: {text}"
        );
    }
    // Globex's key on acme's subdomain gets nothing.
    let foreign = TestTenant {
        slug: "acme".into(),
        ..globex.clone()
    };
    assert_eq!(
        call_as(&app, &foreign, Method::GET, "/v1/agents", None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn users_and_agents_have_a_lifecycle() {
    let app = app().await;
    let tenant = app.create_tenant("acme").await;
    let user = created(
        &app,
        &tenant,
        "/v1/users",
        json!({ "email": "Dev@Acme.test", "password": "correct horse battery staple" }),
    )
    .await;
    assert_eq!(user["email"], "dev@acme.test");
    assert!(user.get("password_hash").is_none());
    let again = call_as(
        &app,
        &tenant,
        Method::POST,
        "/v1/users",
        Some(json!({ "email": "dev@acme.test", "password": "correct horse battery staple" })),
    )
    .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let user_id = user["id"].as_str().unwrap();

    // A new user has no role: it can log in, and do nothing.
    let login = app
        .client
        .post(app.tenant_url("acme", "/v1/auth/login"))
        .json(&json!({ "email": "dev@acme.test", "password": "correct horse battery staple" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let token = login.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_user = TestTenant {
        key: token,
        ..tenant.clone()
    };
    assert_eq!(
        call_as(&app, &as_user, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // Developer: a new login now reads and writes sessions, and still cannot manage roles. (A
    // login token carries only what the roles granted when it was issued: issue 26 item 3.)
    created(
        &app,
        &tenant,
        "/v1/role-assignments",
        json!({ "role": "developer", "user_id": user_id }),
    )
    .await;
    let login = app
        .client
        .post(app.tenant_url("acme", "/v1/auth/login"))
        .json(&json!({ "email": "dev@acme.test", "password": "correct horse battery staple" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let as_user = TestTenant {
        key: login.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        ..tenant.clone()
    };
    assert_eq!(
        call_as(&app, &as_user, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::OK
    );
    let role = call_as(
        &app,
        &as_user,
        Method::POST,
        "/v1/roles",
        Some(json!({ "name": "x", "permissions": [] })),
    )
    .await;
    assert_eq!(role.status(), StatusCode::FORBIDDEN);
    // Disabled: the token is refused at once.
    let path = format!("/v1/users/{user_id}");
    let disabled = call_as(
        &app,
        &tenant,
        Method::PATCH,
        &path,
        Some(json!({ "status": "disabled" })),
    )
    .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    assert_eq!(
        call_as(&app, &as_user, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Agents: unique names, paged lists, bad input refused.
    created(
        &app,
        &tenant,
        "/v1/agents",
        json!({ "name": "a1", "description": "first", "owner_user_id": user_id }),
    )
    .await;
    created(&app, &tenant, "/v1/agents", json!({ "name": "a2" })).await;
    let duplicate = call_as(
        &app,
        &tenant,
        Method::POST,
        "/v1/agents",
        Some(json!({ "name": "a1" })),
    )
    .await;
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    for name in ["", "Upper", "-dash", "a/b", &"x".repeat(64)] {
        let bad = call_as(
            &app,
            &tenant,
            Method::POST,
            "/v1/agents",
            Some(json!({ "name": name })),
        )
        .await;
        assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY, "{name:?}");
    }
    let page: Value = call_as(&app, &tenant, Method::GET, "/v1/agents?limit=1", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let next = page["next_cursor"].as_str().unwrap();
    let rest: Value = call_as(
        &app,
        &tenant,
        Method::GET,
        &format!("/v1/agents?limit=1&cursor={next}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(rest["data"][0]["name"], "a2");
    assert!(rest["next_cursor"].is_null());
}

/// Delegation passes on the subject's *effective* authority, cut again by the actor's roles, and
/// a delegated token loses what its subject loses.
#[tokio::test]
async fn delegation_narrows_through_both_principals_roles() {
    let app = app().await;
    let tenant = app.create_tenant("acme").await;
    // The subject: a developer agent; its token claims every scope, its role allows less.
    let subject_agent = created(&app, &tenant, "/v1/agents", json!({ "name": "planner" })).await;
    let subject_agent_id = subject_agent["id"].as_str().unwrap().to_owned();
    let assignment = created(
        &app,
        &tenant,
        "/v1/role-assignments",
        json!({ "role": "developer", "agent_id": subject_agent_id }),
    )
    .await;
    let (subject_key, subject_key_id) = key_and_id(
        &app,
        &tenant,
        ScopeSet::all(),
        Some(AgentId::parse(&subject_agent_id).unwrap()),
    )
    .await;
    // client_credentials already cuts the token to the role: no roles:manage in it.
    let issued = token_request(
        &app,
        "acme",
        Some((&subject_key_id, &subject_key.key)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "roles:manage"),
        ],
    )
    .await;
    assert_eq!(issued.status(), StatusCode::BAD_REQUEST);
    let issued = token_request(
        &app,
        "acme",
        Some((&subject_key_id, &subject_key.key)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(issued.status(), StatusCode::OK);
    let issued: Value = issued.json().await.unwrap();
    let subject_token = issued["access_token"].as_str().unwrap().to_owned();
    assert!(!issued["scope"].as_str().unwrap().contains("roles:manage"));
    assert!(issued["scope"].as_str().unwrap().contains("keys:manage"));

    // The actor: a viewer agent whose key claims every scope.
    let actor_agent = created(&app, &tenant, "/v1/agents", json!({ "name": "reader" })).await;
    let actor_agent_id = actor_agent["id"].as_str().unwrap().to_owned();
    created(
        &app,
        &tenant,
        "/v1/role-assignments",
        json!({ "role": "viewer", "agent_id": actor_agent_id }),
    )
    .await;
    let (actor_key, actor_key_id) = key_and_id(
        &app,
        &tenant,
        ScopeSet::all(),
        Some(AgentId::parse(&actor_agent_id).unwrap()),
    )
    .await;
    let base = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject_token.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    // Asking for what the subject may do but the actor's role may not: refused.
    let mut wide = base.to_vec();
    wide.push(("scope", "sessions:write"));
    let refused = token_request(&app, "acme", Some((&actor_key_id, &actor_key.key)), &wide).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    // No scope asked: the intersection of both roles (viewer ∩ developer).
    let delegated = token_request(&app, "acme", Some((&actor_key_id, &actor_key.key)), &base).await;
    assert_eq!(delegated.status(), StatusCode::OK);
    let delegated: Value = delegated.json().await.unwrap();
    let scope = delegated["scope"].as_str().unwrap().to_owned();
    let granted: Vec<&str> = scope.split(' ').collect();
    let expected: ScopeSet = BuiltInRole::Viewer
        .permissions()
        .intersection(&BuiltInRole::Developer.permissions());
    assert_eq!(granted, expected.to_strings());
    let holder = TestTenant {
        key: delegated["access_token"].as_str().unwrap().to_owned(),
        ..tenant.clone()
    };
    assert_eq!(
        call_as(&app, &holder, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::OK
    );

    // The subject loses its role: the delegated token loses it with it.
    let path = format!(
        "/v1/role-assignments/{}",
        assignment["id"].as_str().unwrap()
    );
    assert_eq!(
        call_as(&app, &tenant, Method::DELETE, &path, None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call_as(&app, &holder, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // And a disabled subject cannot delegate at all.
    let disable = format!("/v1/agents/{subject_agent_id}");
    call_as(
        &app,
        &tenant,
        Method::PATCH,
        &disable,
        Some(json!({ "status": "disabled" })),
    )
    .await;
    let after = token_request(&app, "acme", Some((&actor_key_id, &actor_key.key)), &base).await;
    assert_eq!(after.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        after.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

/// Migration 0009 gives tenants that existed before roles their built-in roles, and makes their
/// users admins (so nobody loses or gains authority on upgrade). Fresh databases have no tenants,
/// so this replays the migration's data step on a tenant made to look like a pre-0009 one.
#[tokio::test]
async fn the_rbac_migration_upgrades_existing_tenants() {
    let app = app().await;
    let tenant = app.create_tenant("acme").await;
    let migration = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/0009_rbac.sql"
    ))
    .unwrap();
    let start = migration.find("DO $$").unwrap();
    let data_step = &migration[start..];
    let owner = app.db.owner_pool().await;
    let mut tx = owner.begin().await.unwrap();
    sqlx::query("SELECT set_config('bulkhead.tenant_id', $1, true)")
        .bind(tenant.id.uuid().to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM bulkhead.roles WHERE tenant_id = $1")
        .bind(tenant.id.uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    let user = bulkhead_core::UserId::new();
    sqlx::query(
        "INSERT INTO bulkhead.users (tenant_id, id, email, password_hash, scopes) \
         VALUES ($1, $2, 'old@acme.test', '$argon2id$x', '{sessions:read}')",
    )
    .bind(tenant.id.uuid())
    .bind(user.uuid())
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::raw_sql(data_step).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    owner.close().await;

    let roles: Value = call_as(&app, &tenant, Method::GET, "/v1/roles", None)
        .await
        .json()
        .await
        .unwrap();
    let mut names: Vec<&str> = roles["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["admin", "agent", "developer", "viewer"]);
    let mut tx = app
        .state
        .store()
        .begin(&system(&tenant), Access::ReadOnly)
        .await
        .unwrap();
    let held = rbac::permissions_of(&mut tx, Principal::User(user))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(held, Some(BuiltInRole::Admin.permissions()));
}

/// Issue 17, item 12: a role change reached other processes only when their 5 s ceiling cache
/// expired. It is now pushed with NOTIFY like key revocations: a second process of the same
/// deployment refuses the credential well inside the cache's lifetime.
#[tokio::test]
async fn role_changes_reach_a_second_process_before_its_cache_expires() {
    let first = app().await;
    let second = spawn_app_with(AppOptions {
        db: Some(first.db.clone()),
        ..AppOptions::default()
    })
    .await;
    let tenant = first.create_tenant("acme").await;
    let (holder, agent_id) = agent_with_role(&first, &tenant, "ops-bot", "developer").await;
    // Let the second process's listener subscribe, then warm its ceiling cache.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for _ in 0..2 {
        assert_eq!(
            call_as(&second, &holder, Method::GET, "/v1/sessions", None)
                .await
                .status(),
            StatusCode::OK
        );
    }
    let assignments: Value = call_as(
        &first,
        &tenant,
        Method::GET,
        &format!("/v1/role-assignments?agent_id={agent_id}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let assignment = assignments["data"][0]["id"].as_str().unwrap();
    let removed_at = std::time::Instant::now();
    let removed = call_as(
        &first,
        &tenant,
        Method::DELETE,
        &format!("/v1/role-assignments/{assignment}"),
        None,
    )
    .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    // Well under the 5 s cache lifetime: only a pushed invalidation can explain a refusal.
    let bound = bulkhead_server::service::ceilings::CEILING_TTL / 2;
    loop {
        let status = call_as(&second, &holder, Method::GET, "/v1/sessions", None)
            .await
            .status();
        if status == StatusCode::FORBIDDEN {
            break;
        }
        assert!(
            removed_at.elapsed() < bound,
            "the role change did not reach the second process within {bound:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
