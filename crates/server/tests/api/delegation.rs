//! Delegation by token exchange (RFC 8693) and resource prefixes (issue 5): every hop narrows,
//! nothing widens, the chain is recorded and dies with its root, and prefixed credentials reach
//! only their namespace.

use bulkhead_core::Clock;
use bulkhead_test_support::{spawn_app, spawn_app_with, AppOptions, TestApp, TestTenant};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::keys::{agent, Agent};
use crate::helpers::oauth::{
    claims, exchange, token_for, token_request, ACCESS_TOKEN_TYPE, API_KEY_TOKEN_TYPE,
    TOKEN_EXCHANGE,
};
use crate::helpers::{as_tenant, call, call_as, get_json, problem};

async fn issued(response: Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert!(body.get("refresh_token").is_none());
    body["access_token"].as_str().unwrap().to_owned()
}

async fn refused(response: Response) -> String {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    response.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn admin_token(app: &TestApp, tenant: &TestTenant) -> String {
    let admin = agent(
        app,
        tenant,
        "root-agent",
        &["sessions:read", "sessions:write", "keys:manage"],
    )
    .await;
    token_for(app, &tenant.slug, &admin).await
}

#[tokio::test]
async fn a_three_hop_chain_narrows_at_every_hop_and_never_widens() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let root = admin_token(&app, &acme).await;
    let planner = agent(&app, &acme, "planner", &["sessions:read", "sessions:write"]).await;
    let writer = agent(&app, &acme, "writer", &["sessions:read", "sessions:write"]).await;
    let reader = agent(&app, &acme, "reader", &["sessions:read"]).await;

    // Hop 1: root → planner, asking for two of root's three scopes.
    let t1 = issued(
        exchange(
            &app,
            "acme",
            &root,
            &planner,
            &[("scope", "sessions:read sessions:write")],
        )
        .await,
    )
    .await;
    let c1 = claims(&t1);
    assert_eq!(c1["scope"], "sessions:read sessions:write");
    assert_eq!(
        c1["sub"], "root-agent",
        "the subject stays the delegating principal"
    );
    assert_eq!(c1["act"], json!({ "sub": "planner" }));
    assert_eq!(c1["delegated_from"], json!([claims(&root)["jti"]]));

    // Hop 2: planner → writer, authenticating as a client instead of an actor_token.
    let t2 = issued(
        token_request(
            &app,
            "acme",
            Some(writer.basic()),
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &t1),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "sessions:read"),
            ],
        )
        .await,
    )
    .await;
    let c2 = claims(&t2);
    assert_eq!(c2["scope"], "sessions:read");
    assert_eq!(
        c2["act"],
        json!({ "sub": "writer", "act": { "sub": "planner" } })
    );

    // Hop 3: writer → reader, no scope asked: the intersection.
    let t3 = issued(exchange(&app, "acme", &t2, &reader, &[]).await).await;
    let c3 = claims(&t3);
    assert_eq!(c3["scope"], "sessions:read");
    assert_eq!(
        c3["act"],
        json!({ "sub": "reader", "act": { "sub": "writer", "act": { "sub": "planner" } } })
    );
    assert!(c3["exp"].as_i64() <= c2["exp"].as_i64());

    // The end of the chain can read, and nothing more.
    assert_eq!(
        call(&app, "acme", &t3, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::OK
    );
    let write = call(
        &app,
        "acme",
        &t3,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "x" })),
    )
    .await;
    assert_eq!(problem(write).await.0, StatusCode::FORBIDDEN);

    // Widening at any hop is refused and audited.
    assert_eq!(
        refused(
            exchange(
                &app,
                "acme",
                &t2,
                &writer,
                &[("scope", "sessions:read sessions:write")]
            )
            .await
        )
        .await,
        "invalid_scope"
    );
    assert_eq!(
        refused(exchange(&app, "acme", &t1, &reader, &[("scope", "sessions:write")]).await).await,
        "invalid_scope"
    );
    assert_eq!(
        refused(exchange(&app, "acme", &t1, &planner, &[("scope", "keys:manage")]).await).await,
        "invalid_scope"
    );
    let su = app.db.superuser_pool().await;
    let blocked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bulkhead.audit_events WHERE tenant_id = $1 AND action = 'auth.token_exchange' AND outcome = 'blocked'",
    )
    .bind(acme.id.uuid())
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!(blocked, 3);
}

#[tokio::test]
async fn the_chain_is_limited_in_depth() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let mut token = admin_token(&app, &acme).await;
    let helper = agent(&app, &acme, "helper", &["sessions:read"]).await;
    for hop in 1..=4 {
        token = issued(exchange(&app, "acme", &token, &helper, &[]).await).await;
        assert_eq!(
            claims(&token)["act"].to_string().matches("\"sub\"").count(),
            hop
        );
    }
    assert_eq!(
        refused(exchange(&app, "acme", &token, &helper, &[]).await).await,
        "invalid_grant"
    );
}

#[tokio::test]
async fn a_delegated_token_never_outlives_its_subject() {
    let clock = Clock::manual(chrono::Utc::now());
    let limits = std::sync::Arc::new(
        bulkhead_server::service::rate_limits::RateLimits::in_memory(
            bulkhead_server::service::rate_limits::default_limits(),
            bulkhead_server::service::rate_limits::default_preauth_limits(),
            Clock::system(),
        ),
    );
    let app = spawn_app_with(AppOptions {
        clock: Some(clock.clone()),
        rate_limits: Some(limits),
        ..Default::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let root = admin_token(&app, &acme).await;
    let helper = agent(&app, &acme, "helper", &["sessions:read"]).await;
    // Moving the clock 600 s ahead makes a denylist without a live listener stale (503): wait
    // for the listener, as a server that has been up a moment has it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !app.state.tokens().is_listening() {
        assert!(
            std::time::Instant::now() < deadline,
            "the token listener never connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    clock.advance(chrono::Duration::seconds(600));
    let response = exchange(&app, "acme", &root, &helper, &[]).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["expires_in"], 300,
        "capped at the subject's remaining 300 s, not a fresh 900"
    );
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["exp"],
        claims(&root)["exp"]
    );
}

#[tokio::test]
async fn revoking_the_root_invalidates_everything_derived_from_it() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let root = admin_token(&app, &acme).await;
    let helper = agent(&app, &acme, "helper", &["sessions:read"]).await;
    let t1 = issued(exchange(&app, "acme", &root, &helper, &[]).await).await;
    let t2 = issued(exchange(&app, "acme", &t1, &helper, &[]).await).await;
    assert_eq!(
        call(&app, "acme", &t2, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::OK
    );
    let mut body = form_urlencoded::Serializer::new(String::new());
    body.append_pair("token", &root);
    let revoked = app
        .client
        .post(app.tenant_url("acme", "/oauth/revoke"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.finish())
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    for token in [&root, &t1, &t2] {
        assert_eq!(
            call(&app, "acme", token, Method::GET, "/v1/sessions", None)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // And a revoked subject cannot be exchanged again.
    assert_eq!(
        refused(exchange(&app, "acme", &t1, &helper, &[]).await).await,
        "invalid_grant"
    );
}

#[tokio::test]
async fn an_actors_broader_credentials_never_add_to_a_delegated_token() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    // The subject can only read; the actor's own key could manage keys.
    let reader = agent(&app, &acme, "reader", &["sessions:read"]).await;
    let subject = token_for(&app, "acme", &reader).await;
    let deputy = agent(
        &app,
        &acme,
        "deputy",
        &["sessions:read", "sessions:write", "keys:manage"],
    )
    .await;
    let delegated = issued(exchange(&app, "acme", &subject, &deputy, &[]).await).await;
    assert_eq!(claims(&delegated)["scope"], "sessions:read");
    assert_eq!(
        refused(exchange(&app, "acme", &subject, &deputy, &[("scope", "keys:manage")]).await).await,
        "invalid_scope"
    );
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/api-keys",
            Some(json!({ "scopes": ["sessions:read"] })),
        ),
        (Method::GET, "/v1/api-keys", None),
        (
            Method::POST,
            "/v1/sessions",
            Some(json!({ "agent_id": "x" })),
        ),
    ] {
        let response = call(&app, "acme", &delegated, method, path, body).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn actors_and_subjects_of_another_tenant_are_refused() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let a_root = admin_token(&app, &acme).await;
    let b_agent = agent(&app, &globex, "b-agent", &["sessions:read"]).await;
    let a_agent = agent(&app, &acme, "a-agent", &["sessions:read"]).await;
    // B's key as A's actor, on A's host and on B's.
    assert_eq!(
        refused(exchange(&app, "acme", &a_root, &b_agent, &[]).await).await,
        "invalid_grant"
    );
    assert_eq!(
        refused(exchange(&app, "globex", &a_root, &b_agent, &[]).await).await,
        "invalid_grant"
    );
    // B's access token as actor_token.
    let b_token = token_for(&app, "globex", &b_agent).await;
    let pairs = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", a_root.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("actor_token", b_token.as_str()),
        ("actor_token_type", ACCESS_TOKEN_TYPE),
    ];
    assert_eq!(
        refused(token_request(&app, "acme", None, &pairs).await).await,
        "invalid_grant"
    );
    // B's key authenticating as the client.
    let pairs = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", a_root.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    let response = token_request(&app, "acme", Some(b_agent.basic()), &pairs).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A's subject through B's host, even with an A actor.
    assert_eq!(
        refused(exchange(&app, "globex", &a_root, &a_agent, &[]).await).await,
        "invalid_grant"
    );
    // Missing pieces.
    let no_actor = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", a_root.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    assert_eq!(
        refused(token_request(&app, "acme", None, &no_actor).await).await,
        "invalid_request"
    );
    let no_type = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", a_root.as_str()),
        ("audience", "helper"),
    ];
    assert_eq!(
        refused(token_request(&app, "acme", None, &no_type).await).await,
        "invalid_request"
    );
    // An audience (a sub-agent without its own credential) gets at most the subject's authority.
    let to_audience = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", a_root.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("audience", "sub-agent"),
        ("scope", "sessions:read"),
    ];
    let token = issued(token_request(&app, "acme", None, &to_audience).await).await;
    assert_eq!(claims(&token)["act"], json!({ "sub": "sub-agent" }));
}

async fn create_in(
    app: &TestApp,
    tenant: &TestTenant,
    namespace: Option<&str>,
    title: &str,
) -> String {
    let mut body = json!({ "agent_id": "agent-1", "title": title });
    if let Some(ns) = namespace {
        body["namespace"] = json!(ns);
    }
    let response = as_tenant(app, tenant, Method::POST, "/v1/sessions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_prefixed_credential_reaches_only_its_namespace() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let root = admin_token(&app, &acme).await;
    let helper = agent(&app, &acme, "helper", &["sessions:read", "sessions:write"]).await;
    let inside = create_in(&app, &acme, Some("marketing/campaigns"), "inside").await;
    let top = create_in(&app, &acme, Some("marketing"), "top").await;
    let finance = create_in(&app, &acme, Some("finance"), "finance").await;
    let lookalike = create_in(&app, &acme, Some("marketingx"), "lookalike").await;
    let unplaced = create_in(&app, &acme, None, "unplaced").await;

    let scoped = issued(
        exchange(
            &app,
            "acme",
            &root,
            &helper,
            &[("resource_prefix", "marketing")],
        )
        .await,
    )
    .await;
    assert_eq!(claims(&scoped)["resource_prefix"], "marketing");

    // Lists are filtered to the prefix, by whole segments.
    let listed: Value = call(&app, "acme", &scoped, Method::GET, "/v1/sessions", None)
        .await
        .json()
        .await
        .unwrap();
    let mut ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![inside.as_str(), top.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);

    // Outside the prefix is indistinguishable from missing, for every verb.
    let missing = bulkhead_core::SessionId::new().to_string();
    let missing_answer = problem(
        call(
            &app,
            "acme",
            &scoped,
            Method::GET,
            &format!("/v1/sessions/{missing}"),
            None,
        )
        .await,
    )
    .await;
    for other in [&finance, &lookalike, &unplaced] {
        for (method, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({ "title": "pwned" }))),
            (Method::DELETE, None),
        ] {
            let answer = problem(
                call(
                    &app,
                    "acme",
                    &scoped,
                    method.clone(),
                    &format!("/v1/sessions/{other}"),
                    body,
                )
                .await,
            )
            .await;
            assert_eq!(answer, missing_answer, "{method} {other}");
        }
    }
    let untouched: Value = get_json(&app, &acme, &format!("/v1/sessions/{finance}")).await;
    assert_eq!(untouched["title"], "finance");

    // Inside: readable and writable; creating or moving outside is refused.
    assert_eq!(
        call(
            &app,
            "acme",
            &scoped,
            Method::GET,
            &format!("/v1/sessions/{inside}"),
            None
        )
        .await
        .status(),
        StatusCode::OK
    );
    let created = call(
        &app,
        "acme",
        &scoped,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "a", "namespace": "marketing/new" })),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/sessions".to_owned(),
            json!({ "agent_id": "a", "namespace": "finance" }),
        ),
        (
            Method::POST,
            "/v1/sessions".to_owned(),
            json!({ "agent_id": "a" }),
        ),
        (
            Method::PATCH,
            format!("/v1/sessions/{inside}"),
            json!({ "namespace": "finance" }),
        ),
    ] {
        let (status, body) =
            problem(call(&app, "acme", &scoped, method, &path, Some(body)).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body["type"],
            "https://bulkhead.dev/problems/outside-resource-prefix"
        );
    }

    // The prefix can be narrowed by a further hop, never widened or escaped.
    let narrower = issued(
        exchange(
            &app,
            "acme",
            &scoped,
            &helper,
            &[("resource_prefix", "marketing/campaigns")],
        )
        .await,
    )
    .await;
    let listed: Value = call(&app, "acme", &narrower, Method::GET, "/v1/sessions", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    for escape in [
        "finance",
        "marketingx",
        "marketing/../finance",
        "marketing%2F..%2Ffinance",
        "marketingX",
        "marketing/",
        "/marketing",
        "marketing//x",
        "mаrketing",
        "marketing\u{2215}finance",
    ] {
        let code = refused(
            exchange(
                &app,
                "acme",
                &scoped,
                &helper,
                &[("resource_prefix", escape)],
            )
            .await,
        )
        .await;
        assert_eq!(code, "invalid_target", "{escape}");
    }
    // Bypass spellings are not namespaces at all.
    for bad in [
        "marketing/../finance",
        "Marketing",
        "marketing/",
        "marketing%2Ffinance",
    ] {
        let response = call_as(
            &app,
            &acme,
            Method::POST,
            "/v1/sessions",
            Some(json!({ "agent_id": "a", "namespace": bad })),
        )
        .await;
        assert_eq!(
            problem(response).await.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn confined_or_delegated_tokens_cannot_mint_keys_or_see_sessions() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let root = admin_token(&app, &acme).await;
    let manager = agent(&app, &acme, "manager", &["sessions:read", "keys:manage"]).await;
    let delegated = issued(exchange(&app, "acme", &root, &manager, &[]).await).await;
    let prefixed = issued(
        exchange(
            &app,
            "acme",
            &root,
            &manager,
            &[("resource_prefix", "marketing")],
        )
        .await,
    )
    .await;
    assert!(claims(&delegated)["scope"]
        .as_str()
        .unwrap()
        .contains("keys:manage"));
    for token in [&delegated, &prefixed] {
        let mint = call(
            &app,
            "acme",
            token,
            Method::POST,
            "/v1/api-keys",
            Some(json!({ "scopes": ["sessions:read"] })),
        )
        .await;
        let (status, body) = problem(mint).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body["type"],
            "https://bulkhead.dev/problems/confined-credential"
        );
        let sessions = call(&app, "acme", token, Method::GET, "/v1/auth/sessions", None).await;
        assert_eq!(sessions.status(), StatusCode::FORBIDDEN);
    }
    // The undelegated root token still may.
    let mint = call(
        &app,
        "acme",
        &root,
        Method::POST,
        "/v1/api-keys",
        Some(json!({ "scopes": ["sessions:read"] })),
    )
    .await;
    assert_eq!(mint.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn revoking_the_actors_own_token_revokes_what_it_was_used_for() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let root = admin_token(&app, &acme).await;
    let helper = agent(&app, &acme, "helper", &["sessions:read"]).await;
    let helper_token = token_for(&app, "acme", &helper).await;
    let pairs = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", root.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("actor_token", helper_token.as_str()),
        ("actor_token_type", ACCESS_TOKEN_TYPE),
    ];
    let delegated = issued(token_request(&app, "acme", None, &pairs).await).await;
    assert_eq!(
        call(&app, "acme", &delegated, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::OK
    );
    let mut body = form_urlencoded::Serializer::new(String::new());
    body.append_pair("token", &helper_token);
    let revoked = app
        .client
        .post(app.tenant_url("acme", "/oauth/revoke"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.finish())
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        call(&app, "acme", &delegated, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // A wrong client secret is refused even when the actor comes as actor_token.
    let bad = Agent {
        id: helper.id.clone(),
        key: "bk_live_wrong".into(),
    };
    let pairs = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", root.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("actor_token", helper.key.as_str()),
        ("actor_token_type", API_KEY_TOKEN_TYPE),
    ];
    let response = token_request(&app, "acme", Some(bad.basic()), &pairs).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
