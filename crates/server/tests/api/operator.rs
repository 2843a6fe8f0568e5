//! The operator API (issue 19): its own door (a Unix socket), its own credential (`bk_op_…`),
//! declared scopes, and the operator log. A tenant credential never opens an operator route, an
//! operator key never opens a `/v1` route, and every operator action and refusal is recorded.

use std::os::unix::fs::PermissionsExt;

use bulkhead_core::OperatorScopes;
use bulkhead_server::http::operator::route_table;
use bulkhead_server::service::operators::{self, OperatorKeySpec};
use bulkhead_test_support::{spawn_app, test_peppers, TestOperator, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::oauth::admin_and_delegated_tokens;
use crate::helpers::{audit_events, call};

/// An operator key with `scopes`, made as `bulkhead operator key create` makes one.
pub(crate) async fn operator_key(op: &TestOperator, scopes: &[&str]) -> (String, String) {
    let spec = OperatorKeySpec {
        name: format!("test {}", scopes.join(" ")),
        scopes: OperatorScopes::parse_all(scopes).unwrap(),
        expires_at: None,
    };
    let (record, key) = operators::mint(&op.owner, &test_peppers(), &spec, "cli:test")
        .await
        .unwrap();
    (record.id.to_string(), key.expose_secret().to_owned())
}

pub(crate) const ALL: &[&str] = &[
    "tenants:read",
    "tenants:write",
    "tenants:delete",
    "operators:manage",
];

/// The operator log's latest events (setup: through the API with a managing key).
pub(crate) async fn operator_log(op: &TestOperator, key: &str) -> Vec<Value> {
    let (status, body) = op
        .request(
            Method::GET,
            "/operator/v1/audit-events?limit=200",
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().unwrap().clone()
}

fn has_event(log: &[Value], action: &str, outcome: &str, actor: &str) -> bool {
    log.iter()
        .any(|e| e["action"] == action && e["outcome"] == outcome && e["actor"] == actor)
}

#[tokio::test]
async fn an_operator_key_on_the_socket_onboards_a_tenant_whose_admin_key_then_works() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    // The socket is the owner's alone.
    let mode = std::fs::metadata(&op.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let (key_id, key) = operator_key(&op, ALL).await;

    let (status, created) = op
        .request(
            Method::POST,
            "/operator/v1/tenants",
            Some(&key),
            Some(json!({ "slug": "acme-op", "name": "Acme Op", "plan": "enterprise", "tier": "schema" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["tenant"]["plan"], "enterprise");
    assert_eq!(created["tenant"]["isolation_tier"], "schema");
    let tenant_id = created["tenant"]["id"].as_str().unwrap().to_owned();
    let admin_key = created["admin_api_key"].as_str().unwrap().to_owned();

    // The bootstrap admin key works on the tenant API at once.
    let response = call(
        &app,
        "acme-op",
        &admin_key,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "agent-1", "title": "first" })),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);

    // The same slug again is a conflict; a bad plan is refused before anything is written.
    let (status, body) = op
        .request(
            Method::POST,
            "/operator/v1/tenants",
            Some(&key),
            Some(json!({ "slug": "acme-op", "name": "Again" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = op
        .request(
            Method::POST,
            "/operator/v1/tenants",
            Some(&key),
            Some(json!({ "slug": "other-op", "name": "Other", "plan": "gold" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Read by slug and by id; list with filters and cursor paging.
    for path in [
        "/operator/v1/tenants/acme-op",
        &format!("/operator/v1/tenants/{tenant_id}"),
    ] {
        let (status, body) = op.request(Method::GET, path, Some(&key), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["id"], tenant_id.as_str());
    }
    let (status, _) = op
        .request(
            Method::GET,
            "/operator/v1/tenants/nobody-here",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.create_tenant("beta-op").await;
    app.create_tenant("gamma-op").await;
    let (_, page) = op
        .request(
            Method::GET,
            "/operator/v1/tenants?plan=enterprise",
            Some(&key),
            None,
        )
        .await;
    let slugs: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["acme-op"]);
    let mut seen = Vec::new();
    let mut path = "/operator/v1/tenants?limit=2".to_owned();
    loop {
        let (status, page) = op.request(Method::GET, &path, Some(&key), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["slug"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/operator/v1/tenants?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["acme-op", "beta-op", "gamma-op"]);
    let (status, _) = op
        .request(
            Method::GET,
            "/operator/v1/tenants?colour=red",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Plan change and suspension reach every copy (the tenant's schema holds an anchor row).
    let (status, body) = op
        .request(
            Method::PATCH,
            "/operator/v1/tenants/acme-op",
            Some(&key),
            Some(json!({ "plan": "free" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["plan"], "free");
    let (status, body) = op
        .request(
            Method::POST,
            "/operator/v1/tenants/acme-op/suspend",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "suspended");
    let (_, listed) = op
        .request(
            Method::GET,
            "/operator/v1/tenants?status=suspended",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let (status, body) = op
        .request(
            Method::POST,
            "/operator/v1/tenants/acme-op/activate",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "active");

    // Every action is in the operator log with the key as actor, started before and done after;
    // the tenant's own log names the key too.
    let log = operator_log(&op, &key).await;
    for action in [
        "tenant.create",
        "tenant.plan",
        "tenant.suspend",
        "tenant.activate",
    ] {
        assert!(
            has_event(&log, action, "started", &key_id),
            "{action} started: {log:?}"
        );
        assert!(
            has_event(&log, action, "success", &key_id),
            "{action} success: {log:?}"
        );
    }
    assert!(
        has_event(&log, "tenant.create", "failure", &key_id),
        "the refused duplicate"
    );
    let acme = TestTenant {
        id: tenant_id.parse().unwrap(),
        slug: "acme-op".into(),
        key: admin_key,
    };
    for action in ["tenant.plan", "tenant.suspend", "tenant.activate"] {
        let own = audit_events(&app, &acme, action).await;
        assert_eq!(own.len(), 1, "{action}: {own:?}");
        assert_eq!(own[0]["metadata"]["operator"], key_id.as_str(), "{action}");
    }
    op.stop().await;
}

/// A `tenants:write` key cannot name a dedicated database: the server would connect to it and
/// store an app URL carrying the serving role's password, which later connections would send
/// to the caller's host. Refused with a pointer to the CLI, before anything is created.
#[tokio::test]
async fn the_operator_api_refuses_dedicated_tenants_and_database_urls() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, &["tenants:read", "tenants:write"]).await;
    // Loopback only (tests never leave the host); port 1 answers nothing.
    let url = "postgres://me:pw@127.0.0.1:1/evil_db";
    for body in [
        json!({ "slug": "evil-a", "name": "Evil", "tier": "dedicated", "database_url": url }),
        json!({ "slug": "evil-b", "name": "Evil", "tier": "dedicated" }),
        json!({ "slug": "evil-c", "name": "Evil", "database_url": url }),
        json!({ "slug": "evil-d", "name": "Evil", "tier": "schema", "database_name": "evil_db" }),
    ] {
        let (status, problem) = op
            .request(
                Method::POST,
                "/operator/v1/tenants",
                Some(&key),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("bulkhead tenant create --tier dedicated"),
            "{body}: {problem}"
        );
        assert!(!detail.contains("127.0.0.1"), "{problem}");
    }
    // Nothing was created: no tenant, no registered database.
    let (status, page) = op
        .request(Method::GET, "/operator/v1/tenants", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 0, "{page}");
    let su = sqlx::PgPool::connect_with(app.db.superuser_options.clone())
        .await
        .unwrap();
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM bulkhead.tenant_databases")
        .fetch_one(&su)
        .await
        .unwrap();
    assert_eq!(registered, 0);
    su.close().await;
    op.stop().await;
}

/// Every operator route with its path parameters filled in.
fn operator_paths() -> Vec<(Method, String)> {
    route_table()
        .specs()
        .map(|spec| {
            let path = spec
                .path
                .replace("{tenant}", "acme")
                .replace("{id}", "opkey_01jd7x5q9r8m3k2h1g0f9e8d7c");
            (spec.method.clone(), path)
        })
        .collect()
}

#[tokio::test]
async fn tenant_credentials_never_open_operator_routes_nor_operator_keys_tenant_routes() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let op = app.spawn_operator_tcp().await;
    let (_, key) = operator_key(&op, ALL).await;
    let (token, _, _) = admin_and_delegated_tokens(&app, &tenant).await;
    let routes = operator_paths();
    assert!(routes.len() >= 10, "{routes:?}");
    let garbage = format!("bk_op_{}", "A".repeat(49));
    // Well formed, checksum and all, but never stored.
    let unknown = bulkhead_auth::OperatorKey::generate();
    let credentials = [
        Some(tenant.key.as_str()),
        Some(token.as_str()),
        Some(garbage.as_str()),
        Some(unknown.expose_secret()),
    ];
    let tcp = op.tcp.clone().expect("a TCP operator endpoint");
    for (method, path) in &routes {
        for credential in credentials {
            let (status, body) = op
                .request(method.clone(), path, credential, Some(json!({})))
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert_eq!(body["type"], "https://bulkhead.dev/problems/unauthorized");
        }
        // No credential at all: 401 on TCP (on the socket, the server's own account is the
        // owner: `embedded::tenant_commands_reach_…`).
        let response = app
            .client
            .request(method.clone(), format!("{tcp}{path}"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }
    // The operator key opens nothing of the tenant API, under the tenant's host or the bare one.
    for path in ["/v1/sessions", "/v1/api-keys", "/v1/audit/events"] {
        let response = call(&app, &tenant.slug, &key, Method::GET, path, None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // And the tenant listener has no operator route at all.
    let response = app
        .client
        .get(app.url("/operator/v1/tenants"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Each refusal is in the operator log, with its reason.
    let log = operator_log(&op, &key).await;
    let refused: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "operator.auth" && e["outcome"] == "failure")
        .collect();
    assert!(
        refused.len() >= credentials.len() * routes.len(),
        "{}",
        refused.len()
    );
    for reason in ["malformed", "unknown_key", "no_credential"] {
        assert!(refused.iter().any(|e| e["reason"] == reason), "{reason}");
    }
    op.stop().await;
}

#[tokio::test]
async fn scopes_refuse_with_403_and_revoked_keys_with_401() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let op = app.spawn_operator().await;
    let (_, manager) = operator_key(&op, &["operators:manage"]).await;
    let (reader_id, reader) = operator_key(&op, &["tenants:read"]).await;

    let (status, body) = op
        .request(
            Method::POST,
            "/operator/v1/tenants",
            Some(&reader),
            Some(json!({ "slug": "nope", "name": "Nope" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("tenants:write"));
    let (status, _) = op
        .request(
            Method::GET,
            "/operator/v1/operator-keys",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = op
        .request(
            Method::GET,
            "/operator/v1/tenants/acme",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The manager manages keys but cannot read tenants.
    let (status, _) = op
        .request(Method::GET, "/operator/v1/tenants", Some(&manager), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A key made through the API works; revoked, it is refused at once.
    let (status, made) = op
        .request(
            Method::POST,
            "/operator/v1/operator-keys",
            Some(&manager),
            Some(json!({ "name": "backend", "scopes": ["tenants:read"] })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let made_key = made["key"].as_str().unwrap().to_owned();
    let made_id = made["operator_key"]["id"].as_str().unwrap().to_owned();
    assert!(made_key.starts_with("bk_op_"));
    let (status, _) = op
        .request(Method::GET, "/operator/v1/tenants", Some(&made_key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, listed) = op
        .request(
            Method::GET,
            "/operator/v1/operator-keys",
            Some(&manager),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !listed.to_string().contains(&made_key[6..]),
        "a list never shows a key"
    );
    for id in [&made_id, &reader_id] {
        let (status, body) = op
            .request(
                Method::POST,
                &format!("/operator/v1/operator-keys/{id}/revoke"),
                Some(&manager),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["revoked_at"].is_string());
    }
    for revoked in [&made_key, &reader] {
        let (status, _) = op
            .request(Method::GET, "/operator/v1/tenants", Some(revoked), None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = op
        .request(
            Method::POST,
            "/operator/v1/operator-keys/opkey_01jd7x5q9r8m3k2h1g0f9e8d7c/revoke",
            Some(&manager),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = op
        .request(
            Method::POST,
            "/operator/v1/operator-keys",
            Some(&manager),
            Some(json!({ "name": "bad", "scopes": ["sessions:read"] })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let log = operator_log(&op, &manager).await;
    assert!(has_event(&log, "operator.forbidden", "blocked", &reader_id));
    assert!(log.iter().any(|e| e["action"] == "operator.auth"
        && e["actor"] == reader_id.as_str()
        && e["reason"] == "revoked"));
    assert!(log
        .iter()
        .any(|e| e["action"] == "operator_key.create" && e["resource_id"] == made_id.as_str()));
    assert!(log
        .iter()
        .any(|e| e["action"] == "operator_key.revoke" && e["resource_id"] == made_id.as_str()));
    op.stop().await;
}

#[tokio::test]
async fn the_serving_role_cannot_touch_the_operator_tables_and_a_live_socket_is_not_replaced() {
    let app = spawn_app().await;
    let serving = app.db.app_pool(1).await;
    for table in [
        "operator_keys",
        "operator_audit_events",
        "operator_audit_leaves",
        "operator_audit_checkpoints",
    ] {
        let err = sqlx::query(&format!("SELECT count(*) FROM bulkhead.{table}"))
            .execute(&serving)
            .await
            .unwrap_err();
        assert_eq!(
            err.as_database_error().and_then(|e| e.code()).as_deref(),
            Some("42501"),
            "{table}"
        );
    }
    let op = app.spawn_operator().await;
    let err = bulkhead_server::http::operator::socket::bind(&op.socket).unwrap_err();
    assert!(format!("{err:#}").contains("another process"), "{err:#}");
    let socket = op.socket.clone();
    op.stop().await;
    assert!(!socket.exists(), "the socket is removed at shutdown");
}

#[tokio::test]
async fn a_tenants_own_rate_limit_replaces_its_plans() {
    use bulkhead_server::service::rate_limits::{
        default_limits, default_preauth_limits, RateLimits,
    };
    // The shipped limits, with a clock that stands still: no budget refills during the test.
    let clock = bulkhead_core::Clock::manual(chrono::Utc::now());
    let limits = RateLimits::in_memory(default_limits(), default_preauth_limits(), clock.clone());
    let app = bulkhead_test_support::spawn_app_with(bulkhead_test_support::AppOptions {
        clock: Some(clock),
        rate_limits: Some(std::sync::Arc::new(limits)),
        ..Default::default()
    })
    .await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, &["tenants:read", "tenants:write", "operators:manage"]).await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let path = "/operator/v1/tenants/acme";

    // Out of range, or not the object's fields: 422, nothing changed.
    for bad in [
        json!({ "rate_limit": { "requests_per_minute": 0 } }),
        json!({ "rate_limit": { "requests_per_minute": 10_000_001u64 } }),
        json!({ "rate_limit": { "requests_per_minute": 60, "burst": 61 } }),
        json!({ "rate_limit": { "requests_per_minute": 60, "burst": 9 } }),
        json!({ "rate_limit": { "requests_per_minute": 60, "per_hour": 5 } }),
        json!({ "rate_limit": 60 }),
    ] {
        let (status, body) = op
            .request(Method::PATCH, path, Some(&key), Some(bad.clone()))
            .await;
        assert!(status.is_client_error(), "{bad}: {status} {body}");
    }
    let (_, shown) = op.request(Method::GET, path, Some(&key), None).await;
    assert_eq!(shown["rate_limit"], Value::Null, "{shown}");

    // 600 a minute with a burst of 10: the eleventh request at once is refused at the tenant
    // level, where the standard plan would allow 400; another tenant keeps its plan's budget.
    let (status, body) = op
        .request(
            Method::PATCH,
            path,
            Some(&key),
            Some(json!({ "rate_limit": { "requests_per_minute": 600, "burst": 10 } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["rate_limit"],
        json!({ "requests_per_minute": 600, "burst": 10 })
    );
    for _ in 0..10 {
        let ok = call(&app, "acme", &acme.key, Method::GET, "/v1/sessions", None).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
    let refused = call(&app, "acme", &acme.key, Method::GET, "/v1/sessions", None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let policy = refused.headers()["ratelimit-policy"].to_str().unwrap();
    assert!(policy.contains("\"tenant\";q=600;w=60"), "{policy}");
    for _ in 0..10 {
        let other = call(
            &app,
            "globex",
            &globex.key,
            Method::GET,
            "/v1/sessions",
            None,
        )
        .await;
        assert_eq!(other.status(), StatusCode::OK);
    }

    // Cleared: back to the plan's budget at once in this process, and recorded in both logs.
    let (status, body) = op
        .request(
            Method::PATCH,
            path,
            Some(&key),
            Some(json!({ "rate_limit": null })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rate_limit"], Value::Null);
    assert_eq!(
        body["plan"], "standard",
        "a rate limit alone leaves the plan"
    );
    // The small budget's debt (1 s) fits in the plan's burst window (2 s): ten at once, where
    // the cleared budget would have refused every one.
    for _ in 0..10 {
        let ok = call(&app, "acme", &acme.key, Method::GET, "/v1/sessions", None).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
    let log = operator_log(&op, &key).await;
    let changes: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "tenant.rate_limit" && e["outcome"] == "success")
        .collect();
    assert_eq!(changes.len(), 2, "{log:#?}");
    let own: Vec<Value> = audit_events(&app, &acme, "tenant.rate_limit").await;
    assert_eq!(own.len(), 2, "{own:#?}");
}
