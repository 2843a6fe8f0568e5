//! Each tenant is its own OAuth issuer: its origin `https://<slug>.<base-domain>` is the `iss`
//! of its tokens and the issuer of its metadata, and a token is good only where its issuer's
//! tenant is served. The attacks: a tenant's token at another's subdomain, a genuinely signed
//! token naming one tenant's issuer and another's `tenant_id`, the deployment's old issuer,
//! spellings of an issuer that are not it, and metadata on hosts that serve no tenant.

use bulkhead_auth::token::sign_access_token;
use bulkhead_auth::{AccessClaims, SigningKey};
use bulkhead_server::service::tokens::{Grant, IssueError};
use bulkhead_store::signing_keys::SigningKeyState;
use bulkhead_test_support::{spawn_app, TestApp, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::call;
use crate::helpers::keys::agent;
use crate::helpers::oauth::{
    claims, exchange, granted_token, post_form, tenant_issuer, token_request,
};

const SERVER_METADATA: &str = "/.well-known/oauth-authorization-server";
const OPENID_METADATA: &str = "/.well-known/openid-configuration";
const OWN_RESOURCE_METADATA: &str = "/.well-known/oauth-protected-resource";

async fn get(app: &TestApp, url: String) -> (StatusCode, Value) {
    let response = app.client.get(url).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// An access token of `tenant`'s admin key, by `client_credentials` on its subdomain.
async fn admin_token(app: &TestApp, tenant: &TestTenant) -> String {
    granted_token(
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
    .await
}

/// The deployment's current signing key, opened as the server opens it: what an attacker who
/// could choose the claims but not forge a signature would need. The tests use it to show that
/// the checks after the signature hold on their own.
async fn current_signing_key(app: &TestApp) -> SigningKey {
    let keys = app
        .state
        .store()
        .published_signing_keys(chrono::Utc::now())
        .await
        .unwrap();
    let current = keys
        .iter()
        .find(|k| k.state == SigningKeyState::Current)
        .expect("a current key");
    let pkcs8 = bulkhead_test_support::test_master_key()
        .open_signing_key(&current.kid, &current.sealed_private_key)
        .unwrap();
    let public: [u8; 32] = current.public_key.as_slice().try_into().unwrap();
    SigningKey::from_pkcs8(&current.kid, &pkcs8, &public).unwrap()
}

/// `token`'s claims with `iss` replaced, signed with the deployment's key.
fn resigned(key: &SigningKey, token: &str, iss: &str) -> String {
    let mut changed = claims(token);
    changed["iss"] = Value::String(iss.to_owned());
    let changed: AccessClaims = serde_json::from_value(changed).unwrap();
    sign_access_token(key, &changed)
}

#[tokio::test]
async fn each_tenant_is_its_own_issuer_in_its_metadata() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    for slug in ["acme", "globex"] {
        let issuer = tenant_issuer(&app, slug);
        assert_eq!(issuer, format!("https://{slug}.bulkhead.test"));
        let (status, server) = get(&app, app.tenant_url(slug, SERVER_METADATA)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(server["issuer"], issuer.as_str());
        for endpoint in [
            "authorization_endpoint",
            "token_endpoint",
            "registration_endpoint",
            "jwks_uri",
            "introspection_endpoint",
            "revocation_endpoint",
        ] {
            let named = server[endpoint].as_str().unwrap();
            assert!(
                named.starts_with(&format!("{issuer}/")),
                "{slug} {endpoint}: {named}"
            );
        }
        let (status, openid) = get(&app, app.tenant_url(slug, OPENID_METADATA)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(openid["issuer"], issuer.as_str());
        assert_eq!(
            openid["userinfo_endpoint"],
            format!("{issuer}/oauth/userinfo")
        );
        assert_eq!(
            openid["authorization_endpoint"],
            server["authorization_endpoint"]
        );
        let (status, own) = get(&app, app.tenant_url(slug, OWN_RESOURCE_METADATA)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(own["resource"], issuer.as_str());
        assert_eq!(own["authorization_servers"], serde_json::json!([issuer]));
        // Mix-up defence (RFC 9207, RFC 8414 §3.3): one tenant's documents never name another.
        let other = if slug == "acme" { "globex" } else { "acme" };
        for document in [&server, &openid, &own] {
            assert!(!document.to_string().contains(other), "{slug}: {document}");
        }
    }

    // No tenant, no authorization server: the deployment's host and a subdomain that names no
    // tenant answer every metadata document with the same 404 (the unknown tenant's).
    let (status, unknown) = get(&app, app.tenant_url("nobody", SERVER_METADATA)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown["type"],
        "https://bulkhead.dev/problems/unknown-tenant"
    );
    for url in [
        app.url(SERVER_METADATA),
        app.url(OPENID_METADATA),
        app.tenant_url("nobody", OPENID_METADATA),
        app.tenant_url("nobody", OWN_RESOURCE_METADATA),
        app.tenant_url("no--such", SERVER_METADATA),
    ] {
        let (status, body) = get(&app, url.clone()).await;
        assert_eq!((status, &body), (StatusCode::NOT_FOUND, &unknown), "{url}");
    }

    // The keys are the deployment's, the same on every host.
    let (_, bare) = get(&app, app.url("/.well-known/jwks.json")).await;
    let (_, acme) = get(&app, app.tenant_url("acme", "/.well-known/jwks.json")).await;
    assert_eq!(bare, acme);
}

#[tokio::test]
async fn a_token_is_good_only_where_its_issuers_tenant_is_served() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let token = admin_token(&app, &acme).await;
    assert_eq!(claims(&token)["iss"], tenant_issuer(&app, "acme").as_str());
    assert_eq!(claims(&token)["tenant_id"], acme.id.to_string());
    let sessions = |slug: &'static str, bearer: String| {
        let app = &app;
        async move { call(app, slug, &bearer, Method::GET, "/v1/sessions", None).await }
    };
    assert_eq!(
        sessions("acme", token.clone()).await.status(),
        StatusCode::OK
    );

    // At globex's subdomain, A's token (iss A) is the one invalid-token answer, exactly as a
    // token that is no token at all.
    let at_globex = sessions("globex", token.clone()).await;
    let garbage = sessions("globex", "not.a.token".into()).await;
    assert_eq!(at_globex.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        at_globex.headers()["www-authenticate"],
        garbage.headers()["www-authenticate"]
    );
    assert_eq!(
        at_globex.text().await.unwrap(),
        garbage.text().await.unwrap()
    );
    // Introspected by globex: not active.
    let answer: Value = post_form(
        &app,
        Some("globex"),
        "/oauth/introspect",
        None,
        &[("token", &token), ("client_secret", &globex.key)],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer, serde_json::json!({ "active": false }));
}

#[tokio::test]
async fn a_genuinely_signed_token_whose_issuer_is_not_its_tenants_is_refused() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let token = admin_token(&app, &acme).await;
    let key = current_signing_key(&app).await;
    let acme_issuer = tenant_issuer(&app, "acme");
    let deployment = app.state.config().tokens.issuer.clone();
    let introspect = |text: String| {
        let app = &app;
        let key = acme.key.clone();
        async move {
            post_form(
                app,
                Some("acme"),
                "/oauth/introspect",
                None,
                &[("token", &text), ("client_secret", &key)],
            )
            .await
            .json::<Value>()
            .await
            .unwrap()
        }
    };

    // The control: the same claims re-signed unchanged pass, so what follows can fail.
    let same = resigned(&key, &token, &acme_issuer);
    let passed = call(&app, "acme", &same, Method::GET, "/v1/sessions", None).await;
    assert_eq!(passed.status(), StatusCode::OK);
    let helper = agent(&app, &acme, "helper", &["sessions:read"]).await;
    let narrow = [("scope", "sessions:read")];
    let exchanged = exchange(&app, "acme", &same, &helper, &narrow).await;
    assert_eq!(exchanged.status(), StatusCode::OK);
    assert_eq!(introspect(same).await["active"], true);

    // globex's issuer on acme's `tenant_id`; the deployment's issuer (every token's before
    // tenants had their own: refused, not honoured until expiry); spellings of acme's issuer
    // that are not it.
    for iss in [
        tenant_issuer(&app, "globex"),
        deployment.clone(),
        format!("{deployment}/"),
        format!("{acme_issuer}/"),
        "https://ACME.bulkhead.test".to_owned(),
        "https://acme.bulkhead.test:443".to_owned(),
        "http://acme.bulkhead.test".to_owned(),
        "https://acme.bulkhead.test.".to_owned(),
        String::new(),
    ] {
        let forged = resigned(&key, &token, &iss);
        for slug in ["acme", "globex"] {
            let refused = call(&app, slug, &forged, Method::GET, "/v1/sessions", None).await;
            assert_eq!(
                refused.status(),
                StatusCode::UNAUTHORIZED,
                "{iss:?} at {slug}"
            );
        }
        let bare = app
            .client
            .get(app.url("/v1/sessions"))
            .bearer_auth(&forged)
            .send()
            .await
            .unwrap();
        assert_eq!(
            bare.status(),
            StatusCode::UNAUTHORIZED,
            "{iss:?} on the bare host"
        );
        // As a token exchange's subject token: unusable.
        let exchanged = exchange(&app, "acme", &forged, &helper, &narrow).await;
        assert_eq!(exchanged.status(), StatusCode::BAD_REQUEST, "{iss:?}");
        let body: Value = exchanged.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant", "{iss:?}");
        assert_eq!(
            introspect(forged).await,
            serde_json::json!({ "active": false }),
            "{iss:?}"
        );
    }

    // And the server itself signs nothing that names no tenant's issuer.
    let scopes = bulkhead_core::ScopeSet::parse_all(["sessions:read"]).unwrap();
    let grant = |issuer| Grant {
        tenant_id: acme.id,
        issuer,
        subject: "agent-1",
        human: false,
        client_id: "key_x",
        scopes: &scopes,
        session_id: None,
        act: None,
        resource_prefix: None,
        not_after: None,
        delegated_from: Vec::new(),
        allowed_networks: Vec::new(),
        derived_keys: Vec::new(),
    };
    assert!(matches!(
        app.state.tokens().issue(&grant(&deployment)),
        Err(IssueError::NotATenantIssuer)
    ));
    assert!(app.state.tokens().issue(&grant(&acme_issuer)).is_ok());
}
