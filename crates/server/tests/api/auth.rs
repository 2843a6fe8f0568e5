//! Authentication failures: one indistinguishable 401 for every bad credential; tenant signals.

use bulkhead_auth::{ApiKey, KeyEnvironment};
use bulkhead_store::placement::registry::TenantStatus;
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
        // The challenge names the own API's metadata where the request was made: under the
        // tenant's issuer on its subdomain, under `--issuer` on the deployment's host.
        for (url, issuer) in [
            (
                app.url("/v1/sessions"),
                app.state.config().tokens.issuer.clone(),
            ),
            (
                app.tenant_url("acme", "/v1/sessions"),
                crate::helpers::oauth::tenant_issuer(&app, "acme"),
            ),
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
                Some(
                    format!(
                        "Bearer realm=\"bulkhead\", resource_metadata=\"{issuer}/.well-known/oauth-protected-resource\", scope=\"sessions:read\""
                    )
                    .as_str()
                ),
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
    tokio::time::sleep(
        app.state.config().caches.registry_ttl + std::time::Duration::from_millis(200),
    )
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

/// Sends one raw HTTP/1.1 request to the app (loopback) and returns the status code: reqwest
/// cannot write an absolute-form target with a different `Host`.
async fn raw_status(app: &bulkhead_test_support::TestApp, request: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Issue 17, item 7: a request whose absolute-form target named `acme` while `Host` named
/// `beta` was served as acme, while OAuth and login read only `Host`. Now one function reads
/// the host and such a request is refused (400) on every listener path.
#[tokio::test]
async fn a_target_and_host_that_disagree_are_refused_everywhere() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    app.create_tenant("beta").await;
    let port = app.addr.port();
    let domain = bulkhead_test_support::BASE_DOMAIN;
    let get = |target: &str, hosts: &[&str]| {
        let mut text = format!("GET {target} HTTP/1.1\r\n");
        for host in hosts {
            text.push_str(&format!("Host: {host}\r\n"));
        }
        text.push_str(&format!(
            "Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
            acme.key
        ));
        text
    };
    let acme_host = format!("acme.{domain}:{port}");
    let beta_host = format!("beta.{domain}:{port}");
    let acme_target = format!("http://{acme_host}/v1/sessions");
    // Agreeing (and differing only in case or a trailing dot): served.
    assert_eq!(
        raw_status(&app, get(&acme_target, &[&acme_host])).await,
        200
    );
    assert_eq!(
        raw_status(
            &app,
            get(&acme_target, &[&format!("ACME.{domain}.:{port}")])
        )
        .await,
        200
    );
    assert_eq!(
        raw_status(&app, get("/v1/sessions", &[&acme_host])).await,
        200
    );
    // Disagreeing: refused, never served as either tenant.
    assert_eq!(
        raw_status(&app, get(&acme_target, &[&beta_host])).await,
        400
    );
    assert_eq!(
        raw_status(
            &app,
            get(&format!("http://{beta_host}/v1/sessions"), &[&acme_host])
        )
        .await,
        400
    );
    // Two Host headers: refused.
    assert_eq!(
        raw_status(&app, get("/v1/sessions", &[&acme_host, &beta_host])).await,
        400
    );
    // OAuth and login read the same host: the same refusal.
    for (path, body) in [
        ("/oauth/token", "grant_type=client_credentials".to_owned()),
        (
            "/v1/auth/login",
            r#"{"email":"a@b.example","password":"x"}"#.to_owned(),
        ),
    ] {
        let content_type = if path.starts_with("/oauth") {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        let request = format!(
            "POST http://{acme_host}{path} HTTP/1.1\r\nHost: {beta_host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(raw_status(&app, request).await, 400, "{path}");
    }
}
