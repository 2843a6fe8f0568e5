//! Access tokens over HTTP (issue 4): the OAuth endpoints, human login, refresh rotation with
//! reuse detection, revocation and introspection, signing-key rotation, throttling, and every
//! token kind used across tenants.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bulkhead_core::{Actor, Clock, RequestId, ScopeSet, TenantContext};
use bulkhead_store::Access;
use bulkhead_test_support::{spawn_app, spawn_app_with, AppOptions, TestApp, TestTenant};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::keys::{agent, Agent};
use crate::helpers::oauth::{claims, client_credentials, jwt_header, post_form, set_token_policy};
use crate::helpers::users::{login_response, PASSWORD};
use crate::helpers::webhooks::create_endpoint;
use crate::helpers::{call, call_as, get_json, problem};

/// The server's default rate limits on the real clock, for tests that move the application's
/// clock: the limiters must not see time stand still or run backwards.
fn real_time_limits() -> bulkhead_server::service::rate_limits::SharedLimits {
    std::sync::Arc::new(
        bulkhead_server::service::rate_limits::RateLimits::in_memory(
            bulkhead_server::service::rate_limits::default_limits(),
            bulkhead_server::service::rate_limits::default_preauth_limits(),
            Clock::system(),
        ),
    )
}

async fn oauth_error(response: Response) -> (StatusCode, String) {
    let status = response.status();
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "OAuth errors are not cacheable"
    );
    let body: Value = response.json().await.unwrap();
    (status, body["error"].as_str().unwrap().to_owned())
}

async fn get_sessions_with(app: &TestApp, slug: &str, token: &str) -> Response {
    call(app, slug, token, Method::GET, "/v1/sessions", None).await
}

/// Asserts the response is the one invalid-token answer.
async fn assert_invalid_token(response: Response) {
    if !response.headers().contains_key("www-authenticate") {
        panic!(
            "expected invalid_token, got {} {}",
            response.status(),
            response.text().await.unwrap()
        );
    }
    // RFC 6750 invalid_token, naming Bulkhead's protected-resource metadata (RFC 9728 §5.1).
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with(
            "Bearer realm=\"bulkhead\", error=\"invalid_token\", resource_metadata=\""
        ) && challenge
            .ends_with("/.well-known/oauth-protected-resource\", scope=\"sessions:read\""),
        "{challenge}"
    );
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["type"], "https://bulkhead.dev/problems/invalid-token");
}

async fn create_user(app: &TestApp, tenant: &TestTenant, email: &str, scopes: &[&str]) {
    let ctx = TenantContext::for_test(
        tenant.id,
        Actor::System { component: "test" },
        RequestId::new(),
    );
    let mut tx = app
        .state
        .store()
        .begin(&ctx, Access::ReadWrite)
        .await
        .unwrap();
    let hash = bulkhead_auth::password::hash_password(PASSWORD).unwrap();
    let user = bulkhead_store::tenant::users::create(
        &mut tx,
        email,
        &hash,
        &ScopeSet::parse_all(scopes).unwrap(),
    )
    .await
    .unwrap();
    // Admin: the user is exactly as strong as the scopes it was given.
    let admin = bulkhead_store::tenant::rbac::role_by_name(&mut tx, "admin")
        .await
        .unwrap();
    bulkhead_store::tenant::rbac::assign(
        &mut tx,
        admin.id,
        bulkhead_store::tenant::rbac::Principal::User(user.id),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Logs in; returns (access token, refresh token).
async fn login(app: &TestApp, slug: &str, email: &str) -> (String, String) {
    let response = login_response(app, slug, email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn refresh(app: &TestApp, slug: &str, refresh_token: &str) -> Response {
    post_form(
        app,
        Some(slug),
        "/oauth/token",
        None,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

async fn refreshed(response: Response) -> (String, String) {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn audit_actions(app: &TestApp, tenant: &TestTenant) -> Vec<String> {
    let su = app.db.superuser_pool().await;
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT action FROM bulkhead.audit_events WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant.id.uuid())
            .fetch_all(&su)
            .await
            .unwrap();
    rows.into_iter().map(|(a,)| a).collect()
}

#[tokio::test]
async fn client_credentials_issue_rfc_9068_tokens_that_authenticate_requests() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let Agent { id, key } =
        agent(&app, &acme, "agent-1", &["sessions:read", "sessions:write"]).await;

    let response = client_credentials(&app, &acme.slug, (&id, &key), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(
        body.get("refresh_token").is_none(),
        "agents get no refresh token by default"
    );
    let token = body["access_token"].as_str().unwrap();
    let h = jwt_header(token);
    assert_eq!(h["alg"], "EdDSA");
    assert_eq!(h["typ"], "at+jwt");
    let c = claims(token);
    assert_eq!(c["tenant_id"], acme.id.to_string());
    assert_eq!(c["client_id"], id);
    assert_eq!(c["sub"], "agent-1");
    assert_eq!(c["scope"], "sessions:read sessions:write");
    assert_eq!(c["aud"], "bulkhead");
    // The tenant's own issuer, its origin.
    assert_eq!(c["iss"], "https://acme.bulkhead.test");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
    assert!(c["jti"].as_str().unwrap().starts_with("at_"));

    // The token authenticates, on the subdomain and on the bare host.
    assert_eq!(
        get_sessions_with(&app, "acme", token).await.status(),
        StatusCode::OK
    );
    let bare = app
        .client
        .get(app.url("/v1/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::OK);

    // A narrowed token can do only what it says.
    let narrow: Value = client_credentials(&app, &acme.slug, (&id, &key), Some("sessions:read"))
        .await
        .json()
        .await
        .unwrap();
    let narrow = narrow["access_token"].as_str().unwrap();
    let create = app
        .client
        .post(app.tenant_url("acme", "/v1/sessions"))
        .bearer_auth(narrow)
        .json(&json!({ "agent_id": "a", "title": "t" }))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(create).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["type"], "https://bulkhead.dev/problems/missing-scope");
    // A token with keys:manage cannot be minted from a key without it, nor can a token mint a
    // key stronger than itself.
    let wider = client_credentials(
        &app,
        &acme.slug,
        (&id, &key),
        Some("sessions:read keys:manage"),
    )
    .await;
    assert_eq!(
        oauth_error(wider).await,
        (StatusCode::BAD_REQUEST, "invalid_scope".into())
    );
    let unknown = client_credentials(&app, &acme.slug, (&id, &key), Some("sessions:*")).await;
    assert_eq!(
        oauth_error(unknown).await,
        (StatusCode::BAD_REQUEST, "invalid_scope".into())
    );
    let admin_id = {
        let list: Value = get_json(&app, &acme, "/v1/api-keys").await;
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["principal"] == "tenant-admin")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let admin_token: Value = client_credentials(
        &app,
        &acme.slug,
        (&admin_id, &acme.key),
        Some("keys:manage"),
    )
    .await
    .json()
    .await
    .unwrap();
    let escalate = call(
        &app,
        "acme",
        admin_token["access_token"].as_str().unwrap(),
        Method::POST,
        "/v1/api-keys",
        Some(json!({ "scopes": ["sessions:write"] })),
    )
    .await;
    assert_eq!(
        escalate.status(),
        StatusCode::FORBIDDEN,
        "a keys:manage token cannot mint sessions:write"
    );
}

#[tokio::test]
async fn the_token_endpoint_answers_in_rfc_6749_form() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let Agent { id, key } = agent(&app, &acme, "agent-1", &["sessions:read"]).await;

    // Wrong secret, or a key id that is not the presented key: invalid_client with a Basic
    // challenge.
    let wrong = client_credentials(&app, &acme.slug, (&id, "bk_live_nope"), None).await;
    assert_eq!(
        wrong.headers()["www-authenticate"],
        "Basic realm=\"bulkhead\""
    );
    assert_eq!(
        oauth_error(wrong).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );
    let Agent { id: other_id, .. } = agent(&app, &acme, "agent-1", &["sessions:read"]).await;
    let mismatch = client_credentials(&app, &acme.slug, (&other_id, &key), None).await;
    assert_eq!(oauth_error(mismatch).await.1, "invalid_client");
    // client_secret_post works; both methods at once does not.
    let post = post_form(
        &app,
        Some("acme"),
        "/oauth/token",
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &key),
        ],
    )
    .await;
    assert_eq!(post.status(), StatusCode::OK);
    let both = post_form(
        &app,
        Some("acme"),
        "/oauth/token",
        Some((&id, &key)),
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", &key),
        ],
    )
    .await;
    assert_eq!(oauth_error(both).await.1, "invalid_request");
    // No client authentication at all.
    let none = post_form(
        &app,
        Some("acme"),
        "/oauth/token",
        None,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(
        oauth_error(none).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );
    // Repeated parameters, missing and unknown grant types, JSON instead of a form.
    let repeated = post_form(
        &app,
        Some("acme"),
        "/oauth/token",
        Some((&id, &key)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "sessions:read"),
            ("scope", "keys:manage"),
        ],
    )
    .await;
    assert_eq!(oauth_error(repeated).await.1, "invalid_request");
    let missing = post_form(&app, Some("acme"), "/oauth/token", Some((&id, &key)), &[]).await;
    assert_eq!(oauth_error(missing).await.1, "invalid_request");
    let password_grant = post_form(
        &app,
        Some("acme"),
        "/oauth/token",
        Some((&id, &key)),
        &[
            ("grant_type", "password"),
            ("username", "x"),
            ("password", "y"),
        ],
    )
    .await;
    assert_eq!(
        oauth_error(password_grant).await.1,
        "unsupported_grant_type"
    );
    let json_body = app
        .client
        .post(app.tenant_url("acme", "/oauth/token"))
        .json(&json!({ "grant_type": "client_credentials" }))
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(json_body).await.1, "invalid_request");
    // Garbage refresh tokens.
    for garbage in ["", "bkrt_short", &"A".repeat(5000), "bkrt_\u{0}\u{1}"] {
        let r = refresh(&app, "acme", garbage).await;
        let (status, code) = oauth_error(r).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            code == "invalid_grant" || code == "invalid_request",
            "{code}"
        );
    }
}

#[tokio::test]
async fn metadata_and_jwks_are_published() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let metadata: Value = app
        .client
        .get(app.tenant_url("acme", "/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], "https://acme.bulkhead.test");
    assert_eq!(
        metadata["token_endpoint"],
        "https://acme.bulkhead.test/oauth/token"
    );
    assert_eq!(
        metadata["jwks_uri"],
        "https://acme.bulkhead.test/.well-known/jwks.json"
    );
    assert_eq!(
        metadata["revocation_endpoint"],
        "https://acme.bulkhead.test/oauth/revoke"
    );
    assert_eq!(
        metadata["introspection_endpoint"],
        "https://acme.bulkhead.test/oauth/introspect"
    );
    let jwks: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    // The current key and the next one, published before it signs anything.
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["use"], "sig");
        assert!(key.get("d").is_none(), "no private part is ever published");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(key["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }
}

#[tokio::test]
async fn hostile_tokens_get_one_invalid_token_answer_and_never_a_500() {
    let clock = Clock::manual(chrono::Utc::now());
    let app = spawn_app_with(AppOptions {
        clock: Some(clock.clone()),
        rate_limits: Some(real_time_limits()),
        ..Default::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let Agent { id, key } = agent(&app, &acme, "agent-1", &["sessions:read"]).await;
    let body: Value = client_credentials(&app, &acme.slug, (&id, &key), None)
        .await
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (h, p, s) = {
        let mut parts = token.split('.');
        (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        )
    };
    let jwks: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let kid = jwt_header(&token)["kid"].clone();
    let mut c = claims(&token);

    let mut hostile: Vec<String> = Vec::new();
    for alg in ["none", "None", "NONE"] {
        hostile.push(format!(
            "{}.{p}.",
            b64(&json!({"alg": alg, "typ": "at+jwt", "kid": kid}))
        ));
    }
    {
        use hmac::{Hmac, Mac};
        let hs_header = b64(&json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&public).unwrap();
        mac.update(format!("{hs_header}.{p}").as_bytes());
        hostile.push(format!(
            "{hs_header}.{p}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        ));
    }
    for bad_kid in ["../../etc/passwd", "x' OR '1'='1", "nope"] {
        hostile.push(format!(
            "{}.{p}.{s}",
            b64(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": bad_kid}))
        ));
    }
    hostile.push(format!(
        "{}.{p}.{s}",
        b64(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jwk": jwks["keys"][0]}))
    ));
    hostile.push(format!("{}.{p}.{s}", b64(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jku": "https://evil.example/jwks"}))));
    hostile.push(format!(
        "{}.{p}.{s}",
        b64(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "x5u": "https://evil.example/c"}))
    ));
    hostile.push(format!(
        "{}.{p}.{}",
        b64(&json!({"alg": "ES256", "typ": "at+jwt", "kid": kid})),
        URL_SAFE_NO_PAD.encode([0u8; 64])
    ));
    hostile.push(format!("{h}.{p}."));
    hostile.push(format!("{h}.{p}"));
    c["scope"] = json!("sessions:read keys:manage");
    hostile.push(format!("{h}.{}.{s}", b64(&c)));
    let text = claims(&token).to_string();
    let duplicate = format!("{},\"scope\":\"keys:manage\"}}", &text[..text.len() - 1]);
    hostile.push(format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(duplicate)));
    hostile.push(format!("{h}.{p}.{s}{}", "A".repeat(9000)));
    hostile.push(format!(
        "{}.{p}.{s}",
        b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}))
    ));
    hostile.push("a.b.c".into());
    hostile.push("..".into());

    for (i, bad) in hostile.iter().enumerate() {
        let response = get_sessions_with(&app, "acme", bad).await;
        assert!(
            response.headers().contains_key("www-authenticate"),
            "attack {i}: {}",
            response.status()
        );
        assert_invalid_token(response).await;
    }

    // A refresh token presented as an access token.
    set_token_policy(&app, &acme, true, 0).await;
    let with_refresh: Value = client_credentials(&app, &acme.slug, (&id, &key), None)
        .await
        .json()
        .await
        .unwrap();
    let refresh_token = with_refresh["refresh_token"].as_str().unwrap();
    assert_invalid_token(get_sessions_with(&app, "acme", refresh_token).await).await;

    // Expired (past the 30 s leeway) and not-yet-valid by the server's clock.
    assert_eq!(
        get_sessions_with(&app, "acme", &token).await.status(),
        StatusCode::OK
    );
    clock.advance(chrono::Duration::seconds(900 + 31));
    assert_invalid_token(get_sessions_with(&app, "acme", &token).await).await;
    clock.advance(chrono::Duration::seconds(-(900 + 31) - 3600));
    assert_invalid_token(get_sessions_with(&app, "acme", &token).await).await;
}

#[tokio::test]
async fn every_token_kind_of_one_tenant_is_refused_for_another() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let Agent {
        id: a_id,
        key: a_key,
    } = agent(&app, &acme, "agent-1", &["sessions:read", "sessions:write"]).await;
    let Agent {
        id: b_id,
        key: b_key,
    } = agent(&app, &globex, "agent-1", &["sessions:read"]).await;
    create_user(&app, &acme, "ann@acme.test", &["sessions:read"]).await;
    let (a_access, a_refresh) = login(&app, "acme", "ann@acme.test").await;
    let session = crate::helpers::create_session(&app, &acme, "acme secret").await;

    // A's access token on B's subdomain: the one invalid-token answer; nothing of A's leaks.
    let on_b = get_sessions_with(&app, "globex", &a_access).await;
    assert_invalid_token(on_b).await;
    let by_id = app
        .client
        .get(app.tenant_url(
            "globex",
            &format!("/v1/sessions/{}", session["id"].as_str().unwrap()),
        ))
        .bearer_auth(&a_access)
        .send()
        .await
        .unwrap();
    assert_invalid_token(by_id).await;
    // A's refresh token through B's host.
    let r = refresh(&app, "globex", &a_refresh).await;
    assert_eq!(oauth_error(r).await.1, "invalid_grant");
    // A's key as client credentials on B's host.
    let cc = client_credentials(&app, &globex.slug, (&a_id, &a_key), None).await;
    assert_eq!(oauth_error(cc).await.1, "invalid_client");
    // B introspecting A's tokens learns nothing.
    for token in [&a_access, &a_refresh] {
        let introspected: Value = post_form(
            &app,
            Some("globex"),
            "/oauth/introspect",
            Some((&b_id, &b_key)),
            &[("token", token)],
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(introspected, json!({ "active": false }));
    }
    // B revoking A's tokens through B's host changes nothing.
    for token in [&a_access, &a_refresh] {
        let revoked = post_form(
            &app,
            Some("globex"),
            "/oauth/revoke",
            None,
            &[("token", token)],
        )
        .await;
        assert_eq!(revoked.status(), StatusCode::OK);
    }
    assert_eq!(
        get_sessions_with(&app, "acme", &a_access).await.status(),
        StatusCode::OK
    );
    // A's auth sessions are not visible to, nor endable by, B.
    let b_token: Value = client_credentials(&app, &globex.slug, (&b_id, &b_key), None)
        .await
        .json()
        .await
        .unwrap();
    let b_token = b_token["access_token"].as_str().unwrap();
    let a_sessions: Value = app
        .client
        .get(app.tenant_url("acme", "/v1/auth/sessions"))
        .bearer_auth(&a_access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a_session_id = a_sessions["data"][0]["id"].as_str().unwrap();
    let end = |id: String| {
        let client = app.client.clone();
        let url = app.tenant_url("globex", &format!("/v1/auth/sessions/{id}"));
        let token = b_token.to_owned();
        async move { client.delete(url).bearer_auth(token).send().await.unwrap() }
    };
    let theirs = problem(end(a_session_id.to_owned()).await).await;
    let missing = problem(end(bulkhead_core::AuthSessionId::new().to_string()).await).await;
    assert_eq!(
        theirs, missing,
        "another tenant's session is indistinguishable from a missing one"
    );
    assert_eq!(theirs.0, StatusCode::NOT_FOUND);
    let mine: Value = app
        .client
        .get(app.tenant_url("globex", "/v1/auth/sessions"))
        .bearer_auth(b_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["data"], json!([]));
    // And A's refresh still works: nothing B did touched it.
    refreshed(refresh(&app, "acme", &a_refresh).await).await;
}

#[tokio::test]
async fn a_chain_of_100_refreshes_rotates_every_time() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_user(&app, &acme, "ann@acme.test", &["sessions:read"]).await;
    let (_, mut current) = login(&app, "acme", "ann@acme.test").await;
    let mut seen = std::collections::HashSet::new();
    let mut access = String::new();
    let mut session = None;
    for _ in 0..100 {
        assert!(seen.insert(current.clone()), "a refresh token repeated");
        let (a, r) = refreshed(refresh(&app, "acme", &current).await).await;
        let sid = claims(&a)["sid"].as_str().unwrap().to_owned();
        assert_eq!(
            session.get_or_insert(sid.clone()),
            &sid,
            "one family throughout"
        );
        access = a;
        current = r;
    }
    assert_eq!(
        get_sessions_with(&app, "acme", &access).await.status(),
        StatusCode::OK
    );
    let su = app.db.superuser_pool().await;
    let (active, rotated): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'active'), count(*) FILTER (WHERE status = 'rotated') \
         FROM bulkhead.refresh_tokens WHERE tenant_id = $1",
    )
    .bind(acme.id.uuid())
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!((active, rotated), (1, 100));
    // Nothing but hashes is stored.
    let stored: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT token_hash FROM bulkhead.refresh_tokens")
        .fetch_all(&su)
        .await
        .unwrap();
    assert!(stored.iter().all(|(h,)| h.len() == 32));
}

#[tokio::test]
async fn reuse_after_rotation_revokes_the_family_and_its_access_tokens() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_user(&app, &acme, "ann@acme.test", &["sessions:read"]).await;
    // The tenant's security team subscribes to the alert.
    create_endpoint(
        &app,
        &acme,
        json!({ "url": "https://siem.acme.example/hooks", "event_types": ["security.refresh_token_reuse"] }),
    )
    .await;
    let (first_access, r0) = login(&app, "acme", "ann@acme.test").await;
    let (a1, r1) = refreshed(refresh(&app, "acme", &r0).await).await;
    assert_eq!(
        get_sessions_with(&app, "acme", &a1).await.status(),
        StatusCode::OK
    );

    // The thief (or the victim) presents the rotated token again.
    let reuse = refresh(&app, "acme", &r0).await;
    assert_eq!(
        oauth_error(reuse).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
    // Every access token of the family stops working, and so does the newest refresh token.
    assert_invalid_token(get_sessions_with(&app, "acme", &a1).await).await;
    assert_invalid_token(get_sessions_with(&app, "acme", &first_access).await).await;
    assert_eq!(
        oauth_error(refresh(&app, "acme", &r1).await).await.1,
        "invalid_grant"
    );
    let actions = audit_actions(&app, &acme).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "security.refresh_token_reuse")
            .count(),
        1
    );
    let su = app.db.superuser_pool().await;
    let alerts: Vec<(Value,)> = sqlx::query_as(
        "SELECT payload FROM bulkhead.webhook_messages WHERE tenant_id = $1 AND event_type = 'security.refresh_token_reuse'",
    )
    .bind(acme.id.uuid())
    .fetch_all(&su)
    .await
    .unwrap();
    assert_eq!(alerts.len(), 1, "one alert to the tenant's webhook");
    assert_eq!(alerts[0].0["data"]["action_taken"], "session_revoked");
    assert_eq!(alerts[0].0["data"]["session_id"], claims(&a1)["sid"]);
    // A new login is a new family and works.
    let (fresh, _) = login(&app, "acme", "ann@acme.test").await;
    assert_eq!(
        get_sessions_with(&app, "acme", &fresh).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_have_exactly_one_winner() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_user(&app, &acme, "ann@acme.test", &["sessions:read"]).await;

    // With the default reuse interval (0 s) the losers are reuse: the family is revoked.
    let (_, token) = login(&app, "acme", "ann@acme.test").await;
    let attempts = futures::future::join_all((0..8).map(|_| refresh(&app, "acme", &token))).await;
    let winners: Vec<&Response> = attempts
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one concurrent refresh wins");
    assert!(attempts
        .iter()
        .all(|r| r.status() == StatusCode::OK || r.status() == StatusCode::BAD_REQUEST));

    // With a reuse interval for network races, the losers are refused and the family survives.
    set_token_policy(&app, &acme, false, 30).await;
    let (_, token) = login(&app, "acme", "ann@acme.test").await;
    let attempts = futures::future::join_all((0..8).map(|_| refresh(&app, "acme", &token))).await;
    let mut winner = None;
    for response in attempts {
        if response.status() == StatusCode::OK {
            assert!(winner.is_none(), "two winners");
            winner = Some(refreshed(response).await);
        } else {
            assert_eq!(oauth_error(response).await.1, "invalid_grant");
        }
    }
    let (access, next) = winner.expect("one winner");
    assert_eq!(
        get_sessions_with(&app, "acme", &access).await.status(),
        StatusCode::OK
    );
    refreshed(refresh(&app, "acme", &next).await).await;
}

#[tokio::test]
async fn logout_and_ending_a_session_stop_its_tokens() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_user(&app, &acme, "ann@acme.test", &["sessions:read"]).await;
    let (laptop, laptop_refresh) = login(&app, "acme", "ann@acme.test").await;
    let (phone, phone_refresh) = login(&app, "acme", "ann@acme.test").await;

    let listed: Value = app
        .client
        .get(app.tenant_url("acme", "/v1/auth/sessions"))
        .bearer_auth(&laptop)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(data.iter().all(|s| s["principal_type"] == "user"));

    // Logout ends the laptop's session only.
    let out = app
        .client
        .post(app.tenant_url("acme", "/v1/auth/logout"))
        .bearer_auth(&laptop)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_invalid_token(get_sessions_with(&app, "acme", &laptop).await).await;
    assert_eq!(
        oauth_error(refresh(&app, "acme", &laptop_refresh).await)
            .await
            .1,
        "invalid_grant"
    );
    assert_eq!(
        get_sessions_with(&app, "acme", &phone).await.status(),
        StatusCode::OK
    );

    // DELETE /v1/auth/sessions/{id} ends the phone's.
    let phone_sid = claims(&phone)["sid"].as_str().unwrap().to_owned();
    let ended = app
        .client
        .delete(app.tenant_url("acme", &format!("/v1/auth/sessions/{phone_sid}")))
        .bearer_auth(&phone)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_invalid_token(get_sessions_with(&app, "acme", &phone).await).await;
    assert_eq!(
        oauth_error(refresh(&app, "acme", &phone_refresh).await)
            .await
            .1,
        "invalid_grant"
    );
    let actions = audit_actions(&app, &acme).await;
    for action in ["auth.login", "auth.logout", "auth.session_end"] {
        assert!(actions.iter().any(|a| a == action), "{action} audited");
    }
    // An API key has no session to log out of.
    let (status, _) =
        problem(call_as(&app, &acme, Method::POST, "/v1/auth/logout", None).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn revocation_and_introspection_follow_rfc_7009_and_7662() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let Agent { id, key } = agent(&app, &acme, "agent-1", &["sessions:read"]).await;
    create_user(&app, &acme, "ann@acme.test", &["sessions:read"]).await;
    let body: Value = client_credentials(&app, &acme.slug, (&id, &key), None)
        .await
        .json()
        .await
        .unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();

    let introspect = |token: String| {
        let app = &app;
        let (id, key) = (id.clone(), key.clone());
        async move {
            let r = post_form(
                app,
                Some("acme"),
                "/oauth/introspect",
                Some((&id, &key)),
                &[("token", &token)],
            )
            .await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()["cache-control"], "no-store");
            r.json::<Value>().await.unwrap()
        }
    };
    let active = introspect(access.clone()).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], id);
    assert_eq!(active["scope"], "sessions:read");
    assert_eq!(active["tenant_id"], acme.id.to_string());
    // Introspection needs client authentication.
    let anonymous = post_form(
        &app,
        Some("acme"),
        "/oauth/introspect",
        None,
        &[("token", &access)],
    )
    .await;
    assert_eq!(oauth_error(anonymous).await.1, "invalid_client");

    // Revoking the access token: 200, inactive, refused, audited.
    let revoked = post_form(
        &app,
        Some("acme"),
        "/oauth/revoke",
        None,
        &[("token", &access), ("token_type_hint", "access_token")],
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(introspect(access.clone()).await, json!({ "active": false }));
    assert_invalid_token(get_sessions_with(&app, "acme", &access).await).await;

    // Revoking a refresh token ends its session and the access tokens minted from it.
    let (user_access, user_refresh) = login(&app, "acme", "ann@acme.test").await;
    assert_eq!(introspect(user_refresh.clone()).await["active"], true);
    let revoked = post_form(
        &app,
        Some("acme"),
        "/oauth/revoke",
        None,
        &[("token", &user_refresh)],
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        introspect(user_refresh.clone()).await,
        json!({ "active": false })
    );
    assert_invalid_token(get_sessions_with(&app, "acme", &user_access).await).await;
    assert_eq!(
        oauth_error(refresh(&app, "acme", &user_refresh).await)
            .await
            .1,
        "invalid_grant"
    );

    // Unknown, garbage and repeated revocations are 200 (RFC 7009 §2.2); a missing token is not.
    for garbage in ["nonsense", "a.b.c", &access] {
        let r = post_form(
            &app,
            Some("acme"),
            "/oauth/revoke",
            None,
            &[("token", garbage)],
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let missing = post_form(&app, Some("acme"), "/oauth/revoke", None, &[]).await;
    assert_eq!(oauth_error(missing).await.1, "invalid_request");
    let actions = audit_actions(&app, &acme).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "auth.token_revoke").count(),
        2
    );
}

#[tokio::test]
async fn signing_key_rotation_keeps_both_generations_verifying() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let Agent { id, key } = agent(&app, &acme, "agent-1", &["sessions:read"]).await;
    let issue = || async {
        let body: Value = client_credentials(&app, &acme.slug, (&id, &key), None)
            .await
            .json()
            .await
            .unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    };
    let old = issue().await;
    let old_kid = jwt_header(&old)["kid"].as_str().unwrap().to_owned();
    let before: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published_before: Vec<String> = before["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();

    let owner = app.db.owner_pool().await;
    let rotation = bulkhead_store::signing_keys::rotate_signing_keys(
        &owner,
        &bulkhead_test_support::test_master_key(),
        chrono::Utc::now(),
        chrono::Duration::seconds(3630),
    )
    .await
    .unwrap();
    assert_eq!(rotation.retired.as_ref().unwrap().0, old_kid);
    assert!(
        published_before.contains(&rotation.current),
        "the new signing key was published before it signed"
    );

    // The server hears the rotation; new tokens carry the new kid.
    let deadline = Instant::now() + Duration::from_secs(5);
    let new = loop {
        let token = issue().await;
        if jwt_header(&token)["kid"] != old_kid.as_str() {
            break token;
        }
        assert!(
            Instant::now() < deadline,
            "rotation not picked up within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(jwt_header(&new)["kid"], rotation.current.as_str());
    assert_eq!(
        get_sessions_with(&app, "acme", &old).await.status(),
        StatusCode::OK,
        "old tokens verify until they expire"
    );
    assert_eq!(
        get_sessions_with(&app, "acme", &new).await.status(),
        StatusCode::OK
    );
    let after: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = after["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 3, "retired, current and next: {kids:?}");
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&rotation.next.as_str()));

    // The private keys are sealed: the stored bytes are not a PKCS#8 document.
    let sealed: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT sealed_private_key FROM bulkhead.signing_keys")
            .fetch_all(&owner)
            .await
            .unwrap();
    for (bytes,) in sealed {
        assert!(ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&bytes).is_err());
    }
}

#[tokio::test]
async fn login_is_throttled_per_account_name_without_revealing_which_accounts_exist() {
    let clock = Clock::manual(chrono::Utc::now());
    let app = spawn_app_with(AppOptions {
        clock: Some(clock.clone()),
        rate_limits: Some(real_time_limits()),
        ..Default::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    create_user(&app, &acme, "ann@acme.test", &["sessions:read"]).await;

    let wrong =
        problem(login_response(&app, "acme", "ann@acme.test", "wrong password!!").await).await;
    let unknown = problem(login_response(&app, "acme", "nobody@acme.test", PASSWORD).await).await;
    assert_eq!(
        wrong, unknown,
        "unknown user and wrong password answer alike"
    );
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);

    for email in ["ann@acme.test", "nobody@acme.test"] {
        for _ in 1..bulkhead_server::http::routes::auth::FREE_FAILURES {
            let r = login_response(&app, "acme", email, "wrong password!!").await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        // Locked now, even for the right password, and alike for both names.
        let locked = login_response(&app, "acme", email, PASSWORD).await;
        assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS, "{email}");
        assert_eq!(locked.headers()["retry-after"], "1");
        // Another failure after the lock doubles it.
        clock.advance(chrono::Duration::seconds(2));
        let r = login_response(&app, "acme", email, "wrong password!!").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let locked = login_response(&app, "acme", email, PASSWORD).await;
        assert_eq!(locked.headers()["retry-after"], "2");
        clock.advance(chrono::Duration::seconds(3));
    }
    // After the lock, the right password works and clears the count.
    assert_eq!(
        login_response(&app, "acme", "ANN@acme.test ", PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        login_response(&app, "acme", "ann@acme.test", "wrong password!!")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_response(&app, "acme", "ann@acme.test", PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
    // The password and its hash never reach the audit log.
    let su = app.db.superuser_pool().await;
    let dump: Vec<(String,)> = sqlx::query_as("SELECT metadata::text FROM bulkhead.audit_events")
        .fetch_all(&su)
        .await
        .unwrap();
    assert!(dump
        .iter()
        .all(|(m,)| !m.contains("horse") && !m.contains("argon2")));
}

#[tokio::test]
async fn login_is_throttled_per_address_across_accounts() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_user(&app, &acme, "ann@acme.test", &["sessions:read"]).await;
    for i in 0..bulkhead_server::config::limits::DEFAULT_LOGIN_FAILURES_PER_ADDRESS {
        let r = login_response(
            &app,
            "acme",
            &format!("guess{i}@acme.test"),
            "wrong password!!",
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login_response(&app, "acme", "ann@acme.test", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn agent_sessions_need_the_tenant_policy_and_their_own_key_to_refresh() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let Agent { id, key } = agent(&app, &acme, "agent-1", &["sessions:read"]).await;
    let Agent {
        id: other_id,
        key: other_key,
    } = agent(&app, &acme, "agent-1", &["sessions:read"]).await;
    set_token_policy(&app, &acme, true, 0).await;
    let body: Value = client_credentials(&app, &acme.slug, (&id, &key), None)
        .await
        .json()
        .await
        .unwrap();
    let refresh_token = body["refresh_token"].as_str().unwrap().to_owned();
    // Alone, or with another key, the refresh token is not enough.
    assert_eq!(
        oauth_error(refresh(&app, "acme", &refresh_token).await)
            .await
            .1,
        "invalid_client"
    );
    let pairs = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.as_str()),
    ];
    let other = post_form(
        &app,
        Some("acme"),
        "/oauth/token",
        Some((&other_id, &other_key)),
        &pairs,
    )
    .await;
    assert_eq!(oauth_error(other).await.1, "invalid_client");
    let own = post_form(
        &app,
        Some("acme"),
        "/oauth/token",
        Some((&id, &key)),
        &pairs,
    )
    .await;
    assert_eq!(own.status(), StatusCode::OK);
    // Policy bounds are enforced.
    let bad = call_as(
        &app,
        &acme,
        Method::PUT,
        "/v1/token-policy",
        Some(
            json!({ "agent_refresh_tokens": true, "refresh_reuse_interval_seconds": 61,
                       "session_absolute_seconds": 2592000, "session_idle_seconds": 604800 }),
        ),
    )
    .await;
    assert_eq!(problem(bad).await.0, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn token_revocation_reaches_a_second_process_within_the_bound() {
    let first = spawn_app().await;
    let second = spawn_app_with(AppOptions {
        db: Some(first.db.clone()),
        ..Default::default()
    })
    .await;
    let acme = first.create_tenant("acme").await;
    let Agent { id, key } = agent(&first, &acme, "agent-1", &["sessions:read"]).await;
    let body: Value = client_credentials(&first, &acme.slug, (&id, &key), None)
        .await
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get_sessions_with(&second, "acme", &token).await.status(),
        StatusCode::OK
    );
    let revoked_at = Instant::now();
    let r = post_form(
        &first,
        Some("acme"),
        "/oauth/revoke",
        None,
        &[("token", &token)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    loop {
        if get_sessions_with(&second, "acme", &token).await.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "revocation did not reach the second process within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "token revocation visible in the second process after {:?}",
        revoked_at.elapsed()
    );
}

#[tokio::test]
async fn a_suspended_tenants_tokens_are_refused() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let Agent { id, key } = agent(&app, &acme, "agent-1", &["sessions:read"]).await;
    let body: Value = client_credentials(&app, &acme.slug, (&id, &key), None)
        .await
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let owner = app.db.owner_store().await;
    owner
        .set_tenant_status(
            acme.id,
            bulkhead_store::placement::registry::TenantStatus::Suspended,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await; // the registry cache's TTL
    let (status, body) = problem(get_sessions_with(&app, "acme", &token).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["type"],
        "https://bulkhead.dev/problems/tenant-suspended"
    );
    let cc = client_credentials(&app, &acme.slug, (&id, &key), None).await;
    assert_eq!(oauth_error(cc).await.1, "unauthorized_client");
}

#[tokio::test]
async fn concurrent_guesses_cannot_exceed_the_per_account_budget() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_user(&app, &acme, "ann@acme.test", &["sessions:read"]).await;
    let attempts = futures::future::join_all(
        (0..16).map(|_| login_response(&app, "acme", "ann@acme.test", "wrong password!!")),
    )
    .await;
    let checked = attempts
        .iter()
        .filter(|r| r.status() == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = attempts
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // The bounded hashing pool (issue 28.2) may turn some away before any check: 503 with
    // Retry-After, which reaches the password no more than a 429 does.
    let busy = attempts
        .iter()
        .filter(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(checked + throttled + busy, 16);
    assert!(
        checked <= bulkhead_server::http::routes::auth::FREE_FAILURES as usize,
        "{checked} concurrent guesses reached the password check"
    );
}

#[tokio::test]
async fn forged_refresh_tokens_say_nothing_about_tenants() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let owner = app.db.owner_store().await;
    owner
        .set_tenant_status(
            globex.id,
            bulkhead_store::placement::registry::TenantStatus::Suspended,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let forged = |tenant: uuid::Uuid| {
        bulkhead_auth::RefreshToken::generate(*tenant.as_bytes())
            .expose_secret()
            .to_owned()
    };
    let mut answers = Vec::new();
    for tenant in [acme.id.uuid(), globex.id.uuid(), uuid::Uuid::now_v7()] {
        let response = post_form(
            &app,
            None,
            "/oauth/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &forged(tenant)),
            ],
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        answers.push(response.json::<Value>().await.unwrap());
    }
    assert_eq!(
        answers[0], answers[1],
        "active and suspended tenants answer alike"
    );
    assert_eq!(
        answers[0], answers[2],
        "existing and missing tenants answer alike"
    );
    // A suspended tenant's login answers like a wrong password, whatever the password.
    create_user(&app, &globex, "gus@globex.test", &["sessions:read"]).await;
    let right = problem(login_response(&app, "globex", "gus@globex.test", PASSWORD).await).await;
    let wrong =
        problem(login_response(&app, "globex", "gus@globex.test", "wrong password!!").await).await;
    assert_eq!(right, wrong);
    assert_eq!(right.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn auth_sessions_are_matched_on_identity_not_on_a_principal_label() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_user(&app, &acme, "ann@acme.test", &["sessions:read"]).await;
    let (ann, _) = login(&app, "acme", "ann@acme.test").await;
    let ann_id = claims(&ann)["sub"].as_str().unwrap().to_owned();
    // A key whose principal label is Ann's user id is still not Ann.
    let Agent { id, key } = agent(&app, &acme, &ann_id, &["sessions:read"]).await;
    let impostor: Value = client_credentials(&app, &acme.slug, (&id, &key), None)
        .await
        .json()
        .await
        .unwrap();
    let impostor = impostor["access_token"].as_str().unwrap();
    assert_eq!(claims(impostor)["sub"], ann_id.as_str());
    let seen: Value = app
        .client
        .get(app.tenant_url("acme", "/v1/auth/sessions"))
        .bearer_auth(impostor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        seen["data"],
        json!([]),
        "the impostor sees none of Ann's sessions"
    );
    let ann_sid = claims(&ann)["sid"].as_str().unwrap().to_owned();
    let end = app
        .client
        .delete(app.tenant_url("acme", &format!("/v1/auth/sessions/{ann_sid}")))
        .bearer_auth(impostor)
        .send()
        .await
        .unwrap();
    assert_eq!(end.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get_sessions_with(&app, "acme", &ann).await.status(),
        StatusCode::OK
    );
}
