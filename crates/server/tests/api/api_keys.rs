//! `/v1/api-keys`: the key lifecycle over HTTP.

use std::time::{Duration, Instant};

use bulkhead_auth::KeyPepper;
use bulkhead_core::Clock;
use bulkhead_server::service::credentials::Peppers;
use bulkhead_test_support::{
    spawn_app, spawn_app_with, test_pepper, AppOptions, TestApp, TestTenant,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::keys::{mint_key, request_key, revoke_key, rotate_key};
use crate::helpers::{as_tenant, call_as, get_json, problem};

async fn status_with(app: &TestApp, tenant: &TestTenant) -> StatusCode {
    call_as(app, tenant, Method::GET, "/v1/sessions", None)
        .await
        .status()
}

async fn unknown_key_body(app: &TestApp) -> Value {
    let key = bulkhead_auth::ApiKey::generate(bulkhead_auth::KeyEnvironment::Live);
    let response = app
        .client
        .get(app.url("/v1/sessions"))
        .bearer_auth(key.expose_secret())
        .send()
        .await
        .unwrap();
    problem(response).await.1
}

#[tokio::test]
async fn create_rotate_with_grace_and_revoke() {
    let clock = Clock::manual(chrono::Utc::now());
    let app = spawn_app_with(AppOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let (agent, meta) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["sessions:read"], "principal": "agent-1", "description": "ci agent" }),
    )
    .await;
    assert!(agent.key.starts_with("bk_live_"));
    assert_eq!(meta["status"], "active");
    assert_eq!(meta["principal"], "agent-1");
    assert!(meta.get("key").is_none() && meta.get("key_hash").is_none());
    assert_eq!(status_with(&app, &agent).await, StatusCode::OK);
    let id = meta["id"].as_str().unwrap().to_owned();

    // Metadata reads never carry the key.
    let listed = call_as(&app, &acme, Method::GET, "/v1/api-keys", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains(&id) && !listed.contains(&agent.key[8..]));

    // Rotation: a new key with the same scopes; the old one keeps working for the grace period.
    let rotated = rotate_key(&app, &acme, &id, None).await;
    assert_eq!(rotated.status(), StatusCode::CREATED);
    let rotated: Value = rotated.json().await.unwrap();
    let successor = TestTenant {
        key: rotated["key"].as_str().unwrap().to_owned(),
        ..acme.clone()
    };
    assert_eq!(rotated["api_key"]["scopes"], json!(["sessions:read"]));
    assert_eq!(rotated["api_key"]["predecessor_id"], json!(id));
    assert_eq!(status_with(&app, &successor).await, StatusCode::OK);
    assert_eq!(
        status_with(&app, &agent).await,
        StatusCode::OK,
        "old key works during grace"
    );
    let old: Value = get_json(&app, &acme, &format!("/v1/api-keys/{id}")).await;
    assert_eq!(old["status"], "rotating");
    // A key in grace cannot be rotated again (rotate its successor instead).
    let again = rotate_key(&app, &acme, &id, None).await;
    assert_eq!(problem(again).await.0, StatusCode::CONFLICT);

    // Default grace is 7 days: still fine after 6, refused like an unknown key after 8.
    clock.advance(chrono::Duration::days(6));
    assert_eq!(status_with(&app, &agent).await, StatusCode::OK);
    clock.advance(chrono::Duration::days(2));
    let after = call_as(&app, &agent, Method::GET, "/v1/sessions", None).await;
    let (status, body) = problem(after).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, unknown_key_body(&app).await);
    assert_eq!(status_with(&app, &successor).await, StatusCode::OK);

    // Revocation is immediate.
    let successor_id = rotated["api_key"]["id"].as_str().unwrap();
    let revoked = revoke_key(&app, &acme, successor_id).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        status_with(&app, &successor).await,
        StatusCode::UNAUTHORIZED
    );

    // Neither key is stored anywhere in plaintext.
    let su = app.db.superuser_pool().await;
    let dump: Vec<String> = sqlx::query_scalar("SELECT t::text FROM bulkhead.api_keys t UNION ALL SELECT t::text FROM bulkhead.audit_events t")
        .fetch_all(&su).await.unwrap();
    for row in dump {
        assert!(
            !row.contains(&agent.key[8..]) && !row.contains(&successor.key[8..]),
            "plaintext key stored: {row}"
        );
    }
    // And every step left its audit event.
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM bulkhead.audit_events WHERE action LIKE 'api_key.%' ORDER BY id",
    )
    .fetch_all(&su)
    .await
    .unwrap();
    for expected in ["api_key.create", "api_key.rotate", "api_key.revoke"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
}

#[tokio::test]
async fn no_key_can_mint_or_rotate_a_stronger_key() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let (reader, _) = mint_key(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let denied = request_key(&app, &reader, &json!({ "scopes": ["keys:manage"] })).await;
    let (status, body) = problem(denied).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["detail"].as_str().unwrap().contains("keys:manage"));

    let (manager, _) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["keys:manage", "sessions:read"] }),
    )
    .await;
    let denied = request_key(&app, &manager, &json!({ "scopes": ["sessions:write"] })).await;
    let (status, body) = problem(denied).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["detail"].as_str().unwrap().contains("sessions:write"),
        "{body}"
    );
    // Nor by rotating a stronger key (that hands out its scopes).
    let (_, admin_meta) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["sessions:write", "keys:manage"] }),
    )
    .await;
    let admin_id = admin_meta["id"].as_str().unwrap();
    let denied = rotate_key(&app, &manager, admin_id, None).await;
    assert_eq!(problem(denied).await.0, StatusCode::FORBIDDEN);
    // An equal or weaker key is fine.
    let ok = request_key(&app, &manager, &json!({ "scopes": ["sessions:read"] })).await;
    assert_eq!(ok.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_key_may_narrow_itself_but_not_widen() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let (agent, meta) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["sessions:read"], "expires_at": later, "allowed_ips": ["127.0.0.0/8"] }),
    )
    .await;
    let id = meta["id"].as_str().unwrap();
    let sooner = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let narrowed = call_as(
        &app,
        &agent,
        Method::PATCH,
        &format!("/v1/api-keys/{id}"),
        Some(json!({ "expires_at": sooner, "allowed_ips": ["127.0.0.1/32"] })),
    )
    .await;
    assert_eq!(narrowed.status(), StatusCode::OK);
    for widening in [
        json!({ "expires_at": null }),
        json!({ "expires_at": later }),
        json!({ "allowed_ips": [] }),
        json!({ "allowed_ips": ["0.0.0.0/0"] }),
    ] {
        let response = as_tenant(&app, &agent, Method::PATCH, &format!("/v1/api-keys/{id}"))
            .json(&widening)
            .send()
            .await
            .unwrap();
        assert_eq!(
            problem(response).await.0,
            StatusCode::FORBIDDEN,
            "{widening}"
        );
    }
    // The admin key (keys:manage) may widen it again.
    let widened = call_as(
        &app,
        &acme,
        Method::PATCH,
        &format!("/v1/api-keys/{id}"),
        Some(json!({ "allowed_ips": [] })),
    )
    .await;
    assert_eq!(widened.status(), StatusCode::OK);
    // And a key may always revoke itself.
    let revoked = revoke_key(&app, &agent, id).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(status_with(&app, &agent).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn invalid_key_requests_are_422() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    for body in [
        json!({ "scopes": [] }),
        json!({ "scopes": ["sessions:*"] }),
        json!({ "scopes": ["sessions:read"], "allowed_ips": ["10.0.0.0/33"] }),
        json!({ "scopes": ["sessions:read"], "allowed_ips": ["not-an-ip"] }),
        json!({ "scopes": ["sessions:read"], "expires_at": past }),
        json!({ "scopes": ["sessions:read"], "principal": "has space" }),
        json!({ "scopes": ["sessions:read"], "surprise": true }),
    ] {
        let response = request_key(&app, &acme, &body).await;
        assert_eq!(
            problem(response).await.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
    }
    let bad_grace = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/api-keys/key_00000000000000000000000000/rotate",
        Some(json!({ "grace_seconds": 99_999_999 })),
    )
    .await;
    assert!(matches!(
        problem(bad_grace).await.0,
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_FOUND
    ));
}

#[tokio::test]
async fn ip_allowlists_use_the_real_client_address() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let (elsewhere, _) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["sessions:read"], "allowed_ips": ["198.51.100.0/24"] }),
    )
    .await;
    let (loopback, _) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["sessions:read"], "allowed_ips": ["127.0.0.1"] }),
    )
    .await;
    assert_eq!(status_with(&app, &loopback).await, StatusCode::OK);
    assert_eq!(
        status_with(&app, &elsewhere).await,
        StatusCode::UNAUTHORIZED
    );
    // Our peer (127.0.0.1) is not a trusted proxy here: a forged X-Forwarded-For is ignored.
    let spoofed = as_tenant(&app, &elsewhere, Method::GET, "/v1/sessions")
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::UNAUTHORIZED);

    // Behind a trusted proxy (loopback), the header names the client.
    let proxied = spawn_app_with(AppOptions {
        db: Some(app.db.clone()),
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..Default::default()
    })
    .await;
    let through = as_tenant(&proxied, &elsewhere, Method::GET, "/v1/sessions")
        .header("x-forwarded-for", "203.0.113.1, 198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(through.status(), StatusCode::OK);
    let wrong = as_tenant(&proxied, &elsewhere, Method::GET, "/v1/sessions")
        .header("x-forwarded-for", "198.51.100.7, 203.0.113.1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        wrong.status(),
        StatusCode::UNAUTHORIZED,
        "only the right-most untrusted hop counts"
    );
    let malformed = as_tenant(&proxied, &elsewhere, Method::GET, "/v1/sessions")
        .header("x-forwarded-for", "198.51.100.7:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn another_tenants_keys_are_not_found() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("bravo").await;
    let (b_agent, b_meta) = mint_key(
        &app,
        &b,
        json!({ "scopes": ["sessions:read"], "principal": "bravo-agent" }),
    )
    .await;
    let b_id = b_meta["id"].as_str().unwrap();
    let missing = bulkhead_core::ApiKeyId::new().to_string();
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::PATCH, "", Some(json!({ "description": "pwned" }))),
        (Method::POST, "/rotate", None),
        (Method::POST, "/revoke", None),
    ] {
        let send = |id: &str| {
            let request = as_tenant(
                &app,
                &a,
                method.clone(),
                &format!("/v1/api-keys/{id}{suffix}"),
            );
            match &body {
                Some(b) => request.json(b),
                None => request,
            }
        };
        let theirs = send(b_id).send().await.unwrap();
        let nobody = send(&missing).send().await.unwrap();
        assert_eq!(theirs.status(), StatusCode::NOT_FOUND, "{method} {suffix}");
        assert_eq!(
            theirs.bytes().await.unwrap(),
            nobody.bytes().await.unwrap(),
            "{method} {suffix}"
        );
    }
    let listed = call_as(
        &app,
        &a,
        Method::GET,
        "/v1/api-keys?principal=bravo-agent",
        None,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(!listed.contains(b_id));
    let revoke_all = call_as(
        &app,
        &a,
        Method::POST,
        "/v1/api-keys/revoke-all",
        Some(json!({ "principal": "bravo-agent" })),
    )
    .await;
    let revoked: Value = revoke_all.json().await.unwrap();
    assert_eq!(revoked["revoked"], json!([]));
    // A's key on B's subdomain, aimed at B's keys: 401 before anything runs.
    let cross = app
        .client
        .get(app.tenant_url("bravo", &format!("/v1/api-keys/{b_id}")))
        .bearer_auth(&a.key)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_with(&app, &b_agent).await,
        StatusCode::OK,
        "B's key is untouched"
    );
}

#[tokio::test]
async fn revoke_all_for_principal_stops_every_key_of_an_agent() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let (k1, _) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["sessions:read"], "principal": "rogue-agent" }),
    )
    .await;
    let (k2, _) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["sessions:read"], "principal": "rogue-agent" }),
    )
    .await;
    let (other, _) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["sessions:read"], "principal": "good-agent" }),
    )
    .await;
    for k in [&k1, &k2, &other] {
        assert_eq!(status_with(&app, k).await, StatusCode::OK);
    }
    let response = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/api-keys/revoke-all",
        Some(json!({ "principal": "rogue-agent" })),
    )
    .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["revoked"].as_array().unwrap().len(), 2);
    assert_eq!(status_with(&app, &k1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&app, &k2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&app, &other).await, StatusCode::OK);
}

#[tokio::test]
async fn revocation_reaches_a_second_process_within_the_bound() {
    let first = spawn_app().await;
    let second = spawn_app_with(AppOptions {
        db: Some(first.db.clone()),
        ..Default::default()
    })
    .await;
    let acme = first.create_tenant("acme").await;
    let (agent, meta) = mint_key(&first, &acme, json!({ "scopes": ["sessions:read"] })).await;
    // Give the second process's listener a moment to subscribe, then warm its cache.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_with(&second, &agent).await, StatusCode::OK);
    assert_eq!(status_with(&second, &agent).await, StatusCode::OK);
    let id = meta["id"].as_str().unwrap();
    let revoked_at = Instant::now();
    let response = revoke_key(&first, &acme, id).await;
    assert_eq!(response.status(), StatusCode::OK);
    loop {
        if status_with(&second, &agent).await == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "revocation did not reach the second process within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "revocation visible in the second process after {:?}",
        revoked_at.elapsed()
    );
}

#[tokio::test]
async fn keys_hashed_with_an_old_pepper_verify_and_are_rehashed() {
    let first = spawn_app().await;
    let acme = first.create_tenant("acme").await;
    let (agent, meta) = mint_key(&first, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let v2 = KeyPepper::new(2, b"bulkhead-test-pepper-version-two-0123456789".to_vec()).unwrap();
    let rotated = spawn_app_with(AppOptions {
        db: Some(first.db.clone()),
        peppers: Some(Peppers::new(v2, vec![test_pepper()]).unwrap()),
        ..Default::default()
    })
    .await;
    assert_eq!(status_with(&rotated, &agent).await, StatusCode::OK);
    let su = first.db.superuser_pool().await;
    let id = bulkhead_core::ApiKeyId::parse(meta["id"].as_str().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let version: i16 =
            sqlx::query_scalar("SELECT pepper_version FROM bulkhead.api_keys WHERE id = $1")
                .bind(id.uuid())
                .fetch_one(&su)
                .await
                .unwrap();
        if version == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "key was not re-hashed under pepper v2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // After re-hashing, a process that knows only the new pepper accepts it too.
    let v2_only = spawn_app_with(AppOptions {
        db: Some(first.db.clone()),
        peppers: Some(
            Peppers::new(
                KeyPepper::new(2, b"bulkhead-test-pepper-version-two-0123456789".to_vec()).unwrap(),
                vec![],
            )
            .unwrap(),
        ),
        ..Default::default()
    })
    .await;
    assert_eq!(status_with(&v2_only, &agent).await, StatusCode::OK);
}

#[tokio::test]
async fn the_sweep_warns_before_a_grace_deadline_and_expires_after_it() {
    let clock = Clock::manual(chrono::Utc::now());
    let app = spawn_app_with(AppOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let (agent, meta) = mint_key(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let id = meta["id"].as_str().unwrap().to_owned();
    let rotated = rotate_key(
        &app,
        &acme,
        &id,
        Some(json!({ "grace_seconds": 5 * 86_400 })),
    )
    .await;
    assert_eq!(rotated.status(), StatusCode::CREATED);
    // The old key is still used after rotation: that use is recorded (in the background).
    clock.advance(chrono::Duration::minutes(5));
    assert_eq!(status_with(&app, &agent).await, StatusCode::OK);
    let su = app.db.superuser_pool().await;
    let key_uuid = bulkhead_core::ApiKeyId::parse(&id).unwrap().uuid();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let recorded: bool = sqlx::query_scalar(
            "SELECT coalesce(last_used_at > rotated_at, false) FROM bulkhead.api_keys WHERE id = $1",
        )
        .bind(key_uuid)
        .fetch_one(&su)
        .await
        .unwrap();
        if recorded {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "use during grace was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let worker = bulkhead_server::service::worker::Worker::new(app.db.app_store().await);
    // A day in, the deadline is four days away: no warning yet (the window is 48 h).
    clock.advance(chrono::Duration::days(1));
    assert!(worker
        .sweep_keys(clock.now())
        .await
        .unwrap()
        .deadline_warnings
        .is_empty());
    // Three days in, it is under 48 h away: one warning, raised once.
    clock.advance(chrono::Duration::days(2));
    let sweep = worker.sweep_keys(clock.now()).await.unwrap();
    assert_eq!(sweep.deadline_warnings.len(), 1);
    assert!(worker
        .sweep_keys(clock.now())
        .await
        .unwrap()
        .deadline_warnings
        .is_empty());
    // After the deadline the sweep marks it expired.
    clock.advance(chrono::Duration::days(3));
    let sweep = worker.sweep_keys(clock.now()).await.unwrap();
    assert_eq!(sweep.expired.len(), 1);
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM bulkhead.audit_events WHERE resource_id = $1 ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&su)
    .await
    .unwrap();
    assert!(
        events.contains(&"api_key.used_during_grace".to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(&"api_key.rotation_deadline_approaching".to_owned()),
        "{events:?}"
    );
    assert!(events.contains(&"api_key.expired".to_owned()), "{events:?}");
}

#[tokio::test]
async fn the_sweep_reminds_about_keys_nearing_their_maximum_age() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let store = app.db.app_store().await;
    let ctx = bulkhead_core::TenantContext::for_test(
        acme.id,
        bulkhead_core::Actor::System { component: "test" },
        Default::default(),
    );
    let mut tx = store
        .begin(&ctx, bulkhead_store::Access::ReadWrite)
        .await
        .unwrap();
    let regulated = bulkhead_store::tenant::api_keys::KeyPolicy {
        max_age_days: 30,
        ..Default::default()
    };
    bulkhead_store::tenant::api_keys::set_policy(&mut tx, &regulated)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let worker = bulkhead_server::service::worker::Worker::new(store);
    let now = chrono::Utc::now();
    assert!(worker
        .sweep_keys(now + chrono::Duration::days(20))
        .await
        .unwrap()
        .rotation_due
        .is_empty());
    let sweep = worker
        .sweep_keys(now + chrono::Duration::days(24))
        .await
        .unwrap();
    assert_eq!(
        sweep.rotation_due.len(),
        1,
        "the bootstrap key is 23+ days into a 30-day maximum"
    );
    assert!(
        worker
            .sweep_keys(now + chrono::Duration::days(25))
            .await
            .unwrap()
            .rotation_due
            .is_empty(),
        "reminded once"
    );
}

#[test]
fn the_leak_scanner_finds_real_keys_prints_no_secret_and_fails_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let key = bulkhead_auth::ApiKey::generate(bulkhead_auth::KeyEnvironment::Live);
    std::fs::write(
        dir.path().join("config.env"),
        format!(
            "# settings\nDEBUG=1\nBULKHEAD_KEY={}\n",
            key.expose_secret()
        ),
    )
    .unwrap();
    // Right shape, wrong checksum: a look-alike, not a key.
    let mut fake = key.expose_secret().to_owned();
    fake.replace_range(20..21, if &fake[20..21] == "a" { "b" } else { "a" });
    std::fs::write(dir.path().join("notes.md"), format!("example: {fake}\n")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["key", "scan"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("config.env:3"), "{stdout}");
    assert!(stdout.contains(&key.display_prefix()), "{stdout}");
    assert!(
        !stdout.contains(&key.expose_secret()[16..]),
        "the scanner printed the secret"
    );
    assert!(
        !stdout.contains("notes.md"),
        "a look-alike was reported: {stdout}"
    );

    std::fs::remove_file(dir.path().join("config.env")).unwrap();
    let clean = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["key", "scan"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
}

#[tokio::test]
async fn the_tenant_key_policy_sets_the_default_grace_period() {
    let clock = Clock::manual(chrono::Utc::now());
    let app = spawn_app_with(AppOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other-co").await;
    let default: Value = get_json(&app, &acme, "/v1/key-policy").await;
    assert_eq!(
        default,
        json!({ "grace_seconds": 604800, "max_age_days": 90, "deadline_warning_seconds": 172800 })
    );
    for bad in [
        json!({ "grace_seconds": 2_592_001, "max_age_days": 30, "deadline_warning_seconds": 0 }),
        json!({ "grace_seconds": 3600, "max_age_days": 0, "deadline_warning_seconds": 0 }),
        json!({ "grace_seconds": 3600, "max_age_days": 30 }),
    ] {
        let response = as_tenant(&app, &acme, Method::PUT, "/v1/key-policy")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(
            problem(response).await.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }
    let regulated =
        json!({ "grace_seconds": 3600, "max_age_days": 30, "deadline_warning_seconds": 600 });
    let set = as_tenant(&app, &acme, Method::PUT, "/v1/key-policy")
        .json(&regulated)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    // Another tenant's policy is its own.
    let theirs: Value = get_json(&app, &other, "/v1/key-policy").await;
    assert_eq!(theirs["grace_seconds"], 604800);

    // A rotation without an explicit grace now uses one hour.
    let (agent, meta) = mint_key(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let id = meta["id"].as_str().unwrap();
    let rotated = rotate_key(&app, &acme, id, None).await;
    assert_eq!(rotated.status(), StatusCode::CREATED);
    clock.advance(chrono::Duration::minutes(59));
    assert_eq!(status_with(&app, &agent).await, StatusCode::OK);
    clock.advance(chrono::Duration::minutes(2));
    assert_eq!(status_with(&app, &agent).await, StatusCode::UNAUTHORIZED);
    // A key without keys:manage cannot read or change the policy.
    let (reader, _) = mint_key(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let denied = as_tenant(&app, &reader, Method::PUT, "/v1/key-policy")
        .json(&regulated)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(denied).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn revoking_a_stolen_key_also_revokes_the_successor_it_minted_for_itself() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let (stolen, meta) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["sessions:read"], "principal": "agent-1" }),
    )
    .await;
    let id = meta["id"].as_str().unwrap();
    // The thief rotates the stolen key with the key itself.
    let rotated: Value = rotate_key(&app, &stolen, id, None)
        .await
        .json()
        .await
        .unwrap();
    let thiefs = TestTenant {
        key: rotated["key"].as_str().unwrap().to_owned(),
        ..acme.clone()
    };
    assert_eq!(status_with(&app, &thiefs).await, StatusCode::OK);
    // The operator revokes the key they know about: the self-made successor goes with it.
    let revoked = revoke_key(&app, &acme, id).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(status_with(&app, &stolen).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&app, &thiefs).await, StatusCode::UNAUTHORIZED);

    // An operator's own rotation is different: revoking the old key ends its grace early and
    // leaves the replacement working.
    let (old, meta) = mint_key(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let id = meta["id"].as_str().unwrap();
    let rotated: Value = rotate_key(&app, &acme, id, None)
        .await
        .json()
        .await
        .unwrap();
    let replacement = TestTenant {
        key: rotated["key"].as_str().unwrap().to_owned(),
        ..acme.clone()
    };
    revoke_key(&app, &acme, id).await;
    assert_eq!(status_with(&app, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&app, &replacement).await, StatusCode::OK);
}

#[tokio::test]
async fn a_key_manager_cannot_loosen_a_stronger_key() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let (_, strong) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["sessions:write", "keys:manage"], "allowed_ips": ["192.0.2.0/24"] }),
    )
    .await;
    let (manager, _) = mint_key(&app, &acme, json!({ "scopes": ["keys:manage"] })).await;
    let id = strong["id"].as_str().unwrap();
    for loosen in [
        json!({ "allowed_ips": [] }),
        json!({ "expires_at": null }),
        json!({ "description": "harmless?" }),
    ] {
        let response = as_tenant(&app, &manager, Method::PATCH, &format!("/v1/api-keys/{id}"))
            .json(&loosen)
            .send()
            .await
            .unwrap();
        let (status, body) = problem(response).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{loosen}");
        assert!(
            body["detail"].as_str().unwrap().contains("sessions:write"),
            "{body}"
        );
    }
    let after: Value = get_json(&app, &acme, &format!("/v1/api-keys/{id}")).await;
    assert_eq!(after["allowed_ips"], json!(["192.0.2.0/24"]));
}
