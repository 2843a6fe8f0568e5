//! Authentication failures: one indistinguishable 401 for every bad credential; tenant signals.

use bulkhead_auth::{ApiKey, KeyEnvironment};
use bulkhead_store::registry::TenantStatus;
use bulkhead_test_support::spawn_app;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::problem;

#[tokio::test]
async fn every_bad_credential_gets_the_same_401() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let mut flipped = acme.key.clone().into_bytes();
    // Change one character of the random part: the checksum no longer matches.
    flipped[20] = if flipped[20] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    let unknown = ApiKey::generate(KeyEnvironment::Live)
        .expose_secret()
        .to_owned();
    let test_env = ApiKey::generate(KeyEnvironment::Test)
        .expose_secret()
        .to_owned();
    let headers: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("empty bearer", Some("Bearer ".into())),
        ("basic scheme", Some(format!("Basic {}", acme.key))),
        ("garbage", Some("Bearer hello".into())),
        ("bad checksum", Some(format!("Bearer {flipped}"))),
        ("unknown key", Some(format!("Bearer {unknown}"))),
        ("test key on live", Some(format!("Bearer {test_env}"))),
        ("key with suffix", Some(format!("Bearer {}x", acme.key))),
        (
            "lowercased key",
            Some(format!("Bearer {}", acme.key.to_lowercase())),
        ),
    ];
    let mut bodies: Vec<(String, Value)> = Vec::new();
    for (name, header) in headers {
        for url in [
            app.url("/v1/sessions"),
            app.tenant_url("acme", "/v1/sessions"),
        ] {
            let mut request = app.client.get(&url);
            if let Some(h) = &header {
                request = request.header("authorization", h);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer realm=\"bulkhead\""),
                "{name}"
            );
            let (status, body) = problem(response).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{name} at {url}");
            bodies.push((name.to_owned(), body));
        }
    }
    let first = &bodies[0].1;
    for (name, body) in &bodies {
        assert_eq!(body, first, "{name} is distinguishable");
    }
}

#[tokio::test]
async fn revoked_and_expired_keys_fail_like_unknown_ones() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let su = app.db.superuser_pool().await;
    let unknown = app
        .client
        .get(app.url("/v1/sessions"))
        .bearer_auth(ApiKey::generate(KeyEnvironment::Live).expose_secret())
        .send()
        .await
        .unwrap();
    let (_, unknown_body) = problem(unknown).await;
    for (label, sql) in [
        (
            "expired",
            "UPDATE bulkhead.api_keys SET expires_at = now() - interval '1 second'",
        ),
        (
            "revoked",
            "UPDATE bulkhead.api_keys SET expires_at = NULL, status = 'revoked'",
        ),
    ] {
        sqlx::query(sql).execute(&su).await.unwrap();
        let response = app
            .client
            .get(app.url("/v1/sessions"))
            .bearer_auth(&acme.key)
            .send()
            .await
            .unwrap();
        let (status, body) = problem(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{label}");
        assert_eq!(body, unknown_body, "{label}");
    }
}

#[tokio::test]
async fn unknown_subdomains_are_404_and_suspended_tenants_403() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let response = app
        .client
        .get(app.tenant_url("nosuch", "/v1/sessions"))
        .bearer_auth(&acme.key)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["type"], "https://bulkhead.dev/problems/unknown-tenant");
    // A reserved or malformed label is an unknown tenant too.
    let response = app
        .client
        .get(app.tenant_url("www", "/v1/sessions"))
        .bearer_auth(&acme.key)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response).await.0, StatusCode::NOT_FOUND);

    app.db
        .owner_store()
        .await
        .set_tenant_status(acme.id, TenantStatus::Suspended)
        .await
        .unwrap();
    // The registry answer is cached for at most the configured TTL.
    tokio::time::sleep(app.state.config().registry_ttl + std::time::Duration::from_millis(200))
        .await;
    let response = app
        .client
        .get(app.tenant_url("acme", "/v1/sessions"))
        .bearer_auth(&acme.key)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["type"],
        "https://bulkhead.dev/problems/tenant-suspended"
    );
    let response = app
        .client
        .get(app.url("/v1/sessions"))
        .bearer_auth(&acme.key)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response).await.0, StatusCode::FORBIDDEN);
    // An anonymous caller learns nothing about the suspension.
    let response = app
        .client
        .get(app.tenant_url("acme", "/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_database_holds_no_plaintext_key() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let su = app.db.superuser_pool().await;
    // Every text-castable column of every row of every table in the schema.
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'bulkhead'")
            .fetch_all(&su)
            .await
            .unwrap();
    let secret_part = &acme.key["bk_live_".len()..];
    for table in tables {
        let dump: Vec<String> =
            sqlx::query_scalar(&format!("SELECT t::text FROM bulkhead.{table} t"))
                .fetch_all(&su)
                .await
                .unwrap();
        for row in dump {
            assert!(!row.contains(secret_part), "{table} holds the key: {row}");
        }
    }
}
