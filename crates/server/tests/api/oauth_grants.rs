//! Remembered consents (issue 20): a consent is remembered per (user, client, resource), a later
//! request for a subset skips the consent page (not the login), `GET`/`DELETE /v1/auth/grants`
//! list and revoke them, and revoking ends the refresh families issued under them. Also the
//! review findings of the first slice: the signed-out state writes nothing, many scopes fit the
//! consent form, and a tenant's OAuth clients are capped.

use bulkhead_test_support::{spawn_app, TestApp};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::users::{login_response, PASSWORD};
use crate::helpers::{audit_events, call, call_as};
use crate::oauth_code::{
    authorize_path, form_fields, param, register_client, returned, sign_in, token, user_with_role,
    Browser, VERIFIER,
};

/// A confidential web client's redirect URI.
const REDIRECT: &str = "https://app.example/cb";
/// A native (public, loopback) client's.
const LOOPBACK: &str = "http://127.0.0.1:49152/callback";

/// A client: its id and, for a confidential one, its secret.
struct Client {
    id: String,
    secret: Option<String>,
    redirect: &'static str,
}

async fn exchange(app: &TestApp, client: &Client, code: &str) -> Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", client.redirect),
        ("client_id", client.id.as_str()),
        ("code_verifier", VERIFIER),
    ];
    if let Some(secret) = &client.secret {
        form.push(("client_secret", secret.as_str()));
    }
    token(app, "acme", &form).await
}

async fn refresh(app: &TestApp, client: &Client, refresh_token: &str) -> Response {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client.id.as_str()),
    ];
    if let Some(secret) = &client.secret {
        form.push(("client_secret", secret.as_str()));
    }
    token(app, "acme", &form).await
}

/// The code in a 303 to the client.
fn redirected_code(response: &Response) -> String {
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    let url = url::Url::parse(location).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(param(&pairs, "state"), Some("xyz-state"));
    param(&pairs, "code")
        .unwrap_or_else(|| panic!("no code: {location}"))
        .to_owned()
}

async fn login_token(app: &TestApp, slug: &str, email: &str) -> String {
    let response = login_response(app, slug, email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn oauth_browser_sessions(app: &TestApp) -> i64 {
    let pool = app.db.superuser_pool().await;
    sqlx::query_scalar("SELECT count(*) FROM bulkhead.oauth_browser_sessions")
        .fetch_one(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_remembered_consent_skips_the_page_and_revoking_it_ends_its_sessions() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    user_with_role(&app, &acme, "bob@acme.example", "viewer").await;
    user_with_role(&app, &globex, "gil@globex.example", "admin").await;
    let registered = register_client(
        &app,
        &acme,
        json!({
            "name": "Desktop assistant",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "client_secret_post",
            "scopes": ["sessions:read", "sessions:write"],
        }),
    )
    .await;
    let client = Client {
        id: registered["id"].as_str().unwrap().to_owned(),
        secret: Some(registered["client_secret"].as_str().unwrap().to_owned()),
        redirect: REDIRECT,
    };
    let client_id = client.id.as_str();
    let both = authorize_path(client_id, REDIRECT, "sessions:read sessions:write", &[]);
    let read_only = authorize_path(client_id, REDIRECT, "sessions:read", &[]);

    // The first authorization shows the consent page; ada unticks sessions:write.
    let mut browser = Browser::new(&app, "acme");
    let html = sign_in(&mut browser, &both, "ada@acme.example").await;
    assert!(html.contains("action=\"/oauth/authorize\""), "{html}");
    let mut allow: Vec<_> = form_fields(&html)
        .into_iter()
        .filter(|(n, v)| !(n == "grant" && v == "sessions:write"))
        .collect();
    allow.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &allow).await;
    let (_, back) = returned(&answer.text().await.unwrap());
    let first = exchange(&app, &client, param(&back, "code").unwrap()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["scope"], "sessions:read");
    let grants = audit_events(&app, &acme, "oauth.grant").await;
    assert_eq!(grants.len(), 1);

    // A subset of the remembered consent: no page, the code comes back at once (303).
    let skipped = browser.get(&read_only).await;
    let code = redirected_code(&skipped);
    let second = exchange(&app, &client, &code).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["scope"], "sessions:read");
    // More than was consented: the consent page again.
    let wider = browser.get(&both).await;
    assert_eq!(wider.status(), StatusCode::OK);
    assert!(wider
        .text()
        .await
        .unwrap()
        .contains("action=\"/oauth/authorize\""));
    // A signed-out browser must still sign in; then it returns to the client without consent.
    let mut other_browser = Browser::new(&app, "acme");
    let page = other_browser.get(&read_only).await;
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("action=\"/oauth/authorize/login\""));
    let after_login = sign_in(&mut other_browser, &read_only, "ada@acme.example").await;
    let (_, back) = returned(&after_login);
    let pending_code = param(&back, "code").unwrap().to_owned();
    assert_eq!(audit_events(&app, &acme, "oauth.grant").await.len(), 1);

    // RFC 8252 §8.6: a public client on a loopback redirect cannot prove who it is, so its
    // remembered consent does not skip the page.
    let native = register_client(
        &app,
        &acme,
        json!({
            "name": "Native app",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read"],
        }),
    )
    .await;
    let native_authorize = authorize_path(
        native["id"].as_str().unwrap(),
        LOOPBACK,
        "sessions:read",
        &[],
    );
    for _ in 0..2 {
        let page = browser.get(&native_authorize).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(html.contains("action=\"/oauth/authorize\""), "{html}");
        let mut allow = form_fields(&html);
        allow.push(("decision".into(), "allow".into()));
        let answer = browser.post("/oauth/authorize", &allow).await;
        assert!(param(&returned(&answer.text().await.unwrap()).1, "code").is_some());
    }

    // ada lists her consent; bob, a viewer, sees none of hers; the admin key sees it.
    let ada = login_token(&app, "acme", "ada@acme.example").await;
    let bob = login_token(&app, "acme", "bob@acme.example").await;
    let listed = call(&app, "acme", &ada, Method::GET, "/v1/auth/grants", None).await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed: Value = listed.json().await.unwrap();
    let data: Vec<&Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["client_id"] == client_id)
        .collect();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(data.len(), 1, "{listed}");
    assert_eq!(data[0]["client_name"], "Desktop assistant");
    assert_eq!(data[0]["scopes"], json!(["sessions:read"]));
    let grant_id = data[0]["id"].as_str().unwrap().to_owned();
    assert!(grant_id.starts_with("ogr_"));
    let bobs: Value = call(&app, "acme", &bob, Method::GET, "/v1/auth/grants", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["data"], json!([]));
    let tenant_wide: Value = call_as(&app, &acme, Method::GET, "/v1/auth/grants", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tenant_wide["data"].as_array().unwrap().len(), 2);
    // A token a client got for ada does not show her other clients.
    let by_client = call(
        &app,
        "acme",
        first["access_token"].as_str().unwrap(),
        Method::GET,
        "/v1/auth/grants",
        None,
    )
    .await;
    assert_eq!(by_client.status(), StatusCode::FORBIDDEN);

    // Someone else's consent, another tenant's caller, an unknown id: one 404, one body.
    let path = format!("/v1/auth/grants/{grant_id}");
    let unknown = format!("/v1/auth/grants/{}", bulkhead_core::OAuthGrantId::new());
    let missing = call(&app, "acme", &bob, Method::DELETE, &unknown, None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let missing = missing.text().await.unwrap();
    let by_bob = call(&app, "acme", &bob, Method::DELETE, &path, None).await;
    assert_eq!(by_bob.status(), StatusCode::NOT_FOUND);
    assert_eq!(by_bob.text().await.unwrap(), missing);
    // A delegated or prefix-confined credential holding keys:manage may not revoke another's
    // consent: the unknown id's 404 too, for an existing consent and an unknown one alike.
    let (_, delegated, prefixed) =
        crate::helpers::oauth::admin_and_delegated_tokens(&app, &acme).await;
    for confined in [&delegated, &prefixed] {
        for target in [&path, &unknown] {
            let refused = call(&app, "acme", confined, Method::DELETE, target, None).await;
            assert_eq!(refused.status(), StatusCode::NOT_FOUND, "{target}");
            assert_eq!(refused.text().await.unwrap(), missing);
        }
    }
    let gil = login_token(&app, "globex", "gil@globex.example").await;
    for (bearer, slug) in [(gil.as_str(), "globex"), (globex.key.as_str(), "globex")] {
        let foreign = call(&app, slug, bearer, Method::DELETE, &path, None).await;
        assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
        assert_eq!(foreign.text().await.unwrap(), missing);
        let listed: Value = call(&app, slug, bearer, Method::GET, "/v1/auth/grants", None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(listed["data"], json!([]));
    }
    // acme's own token on globex's host is not a credential there.
    let crossed = call(&app, "globex", &ada, Method::DELETE, &path, None).await;
    assert_eq!(crossed.status(), StatusCode::UNAUTHORIZED);

    // ada revokes it: the families issued under it end, its pending code is refused, and the
    // next authorization shows the consent page again.
    let revoked = call(&app, "acme", &ada, Method::DELETE, &path, None).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    for tokens in [&first, &second] {
        let access = tokens["access_token"].as_str().unwrap();
        let read = call(&app, "acme", access, Method::GET, "/v1/sessions", None).await;
        assert_eq!(read.status(), StatusCode::UNAUTHORIZED);
        let rt = tokens["refresh_token"].as_str().unwrap();
        let dead = refresh(&app, &client, rt).await;
        assert_eq!(dead.status(), StatusCode::BAD_REQUEST);
    }
    let late = exchange(&app, &client, &pending_code).await;
    assert_eq!(late.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        late.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let again = browser.get(&read_only).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert!(again
        .text()
        .await
        .unwrap()
        .contains("action=\"/oauth/authorize\""));
    let revokes = audit_events(&app, &acme, "oauth.grant_revoke").await;
    assert_eq!(revokes.len(), 1);
    assert!(
        revokes[0].to_string().contains("\"sessions_ended\":2"),
        "{}",
        revokes[0]
    );
    let gone = call(&app, "acme", &ada, Method::DELETE, &path, None).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

/// Review finding: a cookieless `GET /oauth/authorize` wrote a browser-session row, so an
/// anonymous caller could grow the database. Signed out is now stateless.
#[tokio::test]
async fn the_signed_out_pages_store_nothing() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let client = register_client(
        &app,
        &acme,
        json!({
            "name": "Desktop assistant",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read"],
        }),
    )
    .await;
    let authorize = authorize_path(
        client["id"].as_str().unwrap(),
        LOOPBACK,
        "sessions:read",
        &[],
    );
    for _ in 0..20 {
        let page = Browser::new(&app, "acme").get(&authorize).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers().get("set-cookie").is_some());
    }
    assert_eq!(oauth_browser_sessions(&app).await, 0);
    // A made-up cookie is just signed out: the login page, nothing stored, and its form still
    // needs the server's CSRF token for that cookie.
    let mut browser = Browser::new(&app, "acme");
    browser.cookie = Some("A".repeat(43));
    let html = browser.get(&authorize).await.text().await.unwrap();
    assert!(html.contains("action=\"/oauth/authorize/login\""));
    assert_eq!(oauth_browser_sessions(&app).await, 0);
    let mut forged: Vec<_> = form_fields(&html)
        .into_iter()
        .filter(|(n, _)| n != "csrf")
        .collect();
    forged.push(("csrf".into(), "A".repeat(43)));
    forged.push(("email".into(), "ada@acme.example".into()));
    forged.push(("password".into(), PASSWORD.into()));
    let refused = browser.post("/oauth/authorize/login", &forged).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(oauth_browser_sessions(&app).await, 0);
    // The real form signs in: one row, the signed-in session's.
    let consent = sign_in(
        &mut Browser::new(&app, "acme"),
        &authorize,
        "ada@acme.example",
    )
    .await;
    assert!(consent.contains("action=\"/oauth/authorize\""));
    assert_eq!(oauth_browser_sessions(&app).await, 1);
}

/// Review finding: consent failed with 16 or more scopes (the form's parameter cap counted the
/// ticked boxes).
#[tokio::test]
async fn consent_with_many_scopes_succeeds() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let mut scopes: Vec<String> = (1..=40).map(|i| format!("tools:call:tool{i:02}")).collect();
    scopes.push("sessions:read".into());
    let client = register_client(
        &app,
        &acme,
        json!({
            "name": "Many tools",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "scopes": scopes,
        }),
    )
    .await;
    let client = Client {
        id: client["id"].as_str().unwrap().to_owned(),
        secret: None,
        redirect: LOOPBACK,
    };
    let authorize = authorize_path(&client.id, LOOPBACK, &scopes.join(" "), &[]);
    let mut browser = Browser::new(&app, "acme");
    let html = sign_in(&mut browser, &authorize, "ada@acme.example").await;
    let mut allow = form_fields(&html);
    assert_eq!(allow.iter().filter(|(n, _)| n == "grant").count(), 41);
    allow.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &allow).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let (_, back) = returned(&answer.text().await.unwrap());
    let granted = exchange(&app, &client, param(&back, "code").unwrap()).await;
    assert_eq!(granted.status(), StatusCode::OK);
    let granted: Value = granted.json().await.unwrap();
    let scope = granted["scope"].as_str().unwrap();
    assert_eq!(scope.split(' ').count(), 41, "{scope}");
}

/// Review finding: a tenant could register OAuth clients without end.
#[tokio::test]
async fn a_tenant_registers_at_most_so_many_oauth_clients() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let body = json!({
        "name": "One of many",
        "redirect_uris": ["https://app.example/cb"],
        "scopes": ["sessions:read"],
    });
    let mut last = None;
    for _ in 0..100 {
        let created = register_client(&app, &acme, body.clone()).await;
        last = Some(created["id"].as_str().unwrap().to_owned());
    }
    let refused = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/oauth-clients",
        Some(body.clone()),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert!(refused.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/problem+json"));
    // Another tenant is not affected; deleting one frees a place.
    register_client(&app, &globex, body.clone()).await;
    let deleted = call_as(
        &app,
        &acme,
        Method::DELETE,
        &format!("/v1/oauth-clients/{}", last.unwrap()),
        None,
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    register_client(&app, &acme, body).await;
}

/// A refresh family started under a remembered consent follows the consent: narrowed, the next
/// refresh carries at most the narrowed scopes; gone (a revocation that raced the exchange and
/// missed the family), the refresh is refused and the family ended.
#[tokio::test]
async fn a_refresh_follows_its_consent_narrowed_or_revoked() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let registered = register_client(
        &app,
        &acme,
        json!({
            "name": "Desktop assistant",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "client_secret_post",
            "scopes": ["sessions:read", "sessions:write"],
        }),
    )
    .await;
    let client = Client {
        id: registered["id"].as_str().unwrap().to_owned(),
        secret: Some(registered["client_secret"].as_str().unwrap().to_owned()),
        redirect: REDIRECT,
    };
    let both = authorize_path(&client.id, REDIRECT, "sessions:read sessions:write", &[]);
    let mut browser = Browser::new(&app, "acme");
    let html = sign_in(&mut browser, &both, "ada@acme.example").await;
    let mut allow = form_fields(&html);
    allow.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &allow).await;
    let (_, back) = returned(&answer.text().await.unwrap());
    let first: Value = exchange(&app, &client, param(&back, "code").unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["scope"], "sessions:read sessions:write");
    let second: Value = exchange(&app, &client, &redirected_code(&browser.get(&both).await))
        .await
        .json()
        .await
        .unwrap();

    // The consent narrowed to sessions:read (as a later consent with fewer scopes does): the
    // family's next refresh is cut to it.
    let pool = app.db.superuser_pool().await;
    sqlx::query("UPDATE bulkhead.oauth_grants SET scopes = '{sessions:read}' WHERE client_id = $1")
        .bind(
            bulkhead_core::OAuthClientId::parse(&client.id)
                .unwrap()
                .uuid(),
        )
        .execute(&pool)
        .await
        .unwrap();
    let narrowed = refresh(&app, &client, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(narrowed.status(), StatusCode::OK);
    let narrowed: Value = narrowed.json().await.unwrap();
    assert_eq!(narrowed["scope"], "sessions:read");

    // The consent gone while the family lives (the row deleted behind the revocation's back,
    // as a revocation racing the exchange could have left it): the refresh is refused and the
    // family ended, so its rotated token is refused too.
    sqlx::query("DELETE FROM bulkhead.oauth_grants WHERE client_id = $1")
        .bind(
            bulkhead_core::OAuthClientId::parse(&client.id)
                .unwrap()
                .uuid(),
        )
        .execute(&pool)
        .await
        .unwrap();
    for presented in [&second["refresh_token"], &narrowed["refresh_token"]] {
        let refused = refresh(&app, &client, presented.as_str().unwrap()).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let refused: Value = refused.json().await.unwrap();
        assert_eq!(refused["error"], "invalid_grant");
    }
    let failures = audit_events(&app, &acme, "auth.token_refresh").await;
    assert!(
        failures
            .iter()
            .filter(|e| e.to_string().contains("grant_revoked"))
            .count()
            == 2,
        "{failures:?}"
    );
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bulkhead.auth_sessions WHERE grant_id IS NOT NULL \
         AND revoked_at IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(ended, 2);
}
