//! OpenID Connect (issue 20): the discovery document, ID tokens verified against the JWKS,
//! `userinfo` per scope and across tenants, the step-up challenge of a 403 and the token that
//! follows it, and `prompt` / `max_age` at the authorization endpoint.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bulkhead_test_support::{spawn_app, TestApp};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::call;
use crate::helpers::users::{login_response, PASSWORD};
use crate::oauth_code::{
    authorize_path, form_fields, param, register_client, returned, sign_in, token, user_with_role,
    Browser, VERIFIER,
};

const REDIRECT: &str = "https://app.example/cb";
const LOOPBACK: &str = "http://127.0.0.1:49152/callback";

/// Verifies an ID token's EdDSA signature with the JWKS the server publishes; its claims.
async fn verified_id_token(app: &TestApp, id_token: &str) -> Value {
    let parts: Vec<&str> = id_token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "JWT");
    let jwks: Value = app
        .client
        .get(app.tenant_url("acme", "/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the ID token's kid is in the JWKS");
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let public = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
        .verify(signed.as_bytes(), &signature)
        .expect("the ID token's signature verifies with the JWKS key");
    // One flipped bit in the claims and it does not.
    let mut tampered = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
    tampered[3] ^= 1;
    let forged = format!("{}.{}", parts[0], URL_SAFE_NO_PAD.encode(&tampered));
    assert!(
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
            .verify(forged.as_bytes(), &signature)
            .is_err()
    );
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

async fn exchange(
    app: &TestApp,
    slug: &str,
    client: (&str, Option<&str>),
    redirect: &str,
    code: &str,
) -> Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("client_id", client.0),
        ("code_verifier", VERIFIER),
    ];
    if let Some(secret) = client.1 {
        form.push(("client_secret", secret));
    }
    token(app, slug, &form).await
}

/// Consents on the page with everything offered ticked except `untick`; the code.
async fn consent(browser: &mut Browser<'_>, html: &str, untick: &[&str]) -> String {
    assert!(html.contains("action=\"/oauth/authorize\""), "{html}");
    let mut allow: Vec<_> = form_fields(html)
        .into_iter()
        .filter(|(n, v)| !(n == "grant" && untick.contains(&v.as_str())))
        .collect();
    allow.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &allow).await;
    let (_, back) = returned(&answer.text().await.unwrap());
    param(&back, "code").unwrap().to_owned()
}

async fn userinfo(app: &TestApp, slug: &str, method: Method, bearer: Option<&str>) -> Response {
    let mut request = app
        .client
        .request(method, app.tenant_url(slug, "/oauth/userinfo"));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request.send().await.unwrap()
}

/// A public client "Notes app" of `tenant` with the loopback redirect and `sessions:read`; its id.
async fn notes_app(app: &TestApp, tenant: &bulkhead_test_support::TestTenant) -> String {
    let client = register_client(
        app,
        tenant,
        json!({
            "name": "Notes app",
            "redirect_uris": [LOOPBACK],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read"],
        }),
    )
    .await;
    client["id"].as_str().unwrap().to_owned()
}

/// The query of a 303 to the client.
fn redirected(response: &Response) -> Vec<(String, String)> {
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn openid_issues_an_id_token_and_userinfo_answers_per_scope() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    user_with_role(&app, &globex, "gil@globex.example", "admin").await;
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");

    // Discovery: the RFC 8414 fields and OpenID Connect's.
    let discovery: Value = app
        .client
        .get(app.tenant_url("acme", "/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(
        discovery["userinfo_endpoint"],
        format!("{issuer}/oauth/userinfo")
    );
    assert_eq!(
        discovery["jwks_uri"],
        format!("{issuer}/.well-known/jwks.json")
    );
    assert_eq!(discovery["subject_types_supported"], json!(["public"]));
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["EdDSA"])
    );
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );
    for scope in ["openid", "profile", "email", "sessions:read"] {
        assert!(discovery["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(scope)));
    }
    assert!(discovery["claims_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("nonce")));

    let client_id = notes_app(&app, &acme).await;
    let authorize = authorize_path(
        &client_id,
        LOOPBACK,
        "openid email sessions:read",
        &[("nonce", "n-0S6_WzA2Mj")],
    );

    // The consent page names the identity scopes in words, with checkboxes.
    let mut browser = Browser::new(&app, "acme");
    let html = sign_in(&mut browser, &authorize, "ada@acme.example").await;
    assert!(
        html.contains("Know who you are") && html.contains("See your email address"),
        "{html}"
    );
    let grants: Vec<String> = form_fields(&html)
        .into_iter()
        .filter(|(n, _)| n == "grant")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(grants, ["openid", "email", "sessions:read"]);
    let before = chrono::Utc::now().timestamp();
    let code = consent(&mut browser, &html, &[]).await;
    let answer = exchange(&app, "acme", (&client_id, None), LOOPBACK, &code).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["scope"], "sessions:read");
    let claims = verified_id_token(&app, answer["id_token"].as_str().unwrap()).await;
    let user_id = claims["sub"].as_str().unwrap().to_owned();
    assert!(user_id.starts_with("user_"));
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(claims["aud"], client_id.as_str());
    assert_eq!(claims["azp"], client_id.as_str());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["email"], "ada@acme.example");
    assert_eq!(claims["email_verified"], false);
    assert_eq!(claims["tenant_id"], acme.id.to_string());
    let (iat, exp, auth_time) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
        claims["auth_time"].as_i64().unwrap(),
    );
    assert!(
        auth_time <= iat && iat >= before - 5 && exp > iat,
        "{claims}"
    );
    // An ID token is no access token.
    let as_bearer = call(
        &app,
        "acme",
        answer["id_token"].as_str().unwrap(),
        Method::GET,
        "/v1/sessions",
        None,
    )
    .await;
    assert_eq!(as_bearer.status(), StatusCode::UNAUTHORIZED);

    // userinfo, by GET and by POST: the subject and, with `email`, the address.
    let access = answer["access_token"].as_str().unwrap().to_owned();
    for method in [Method::GET, Method::POST] {
        let info = userinfo(&app, "acme", method, Some(&access)).await;
        assert_eq!(info.status(), StatusCode::OK);
        assert_eq!(info.headers()["cache-control"], "no-store");
        let info: Value = info.json().await.unwrap();
        assert_eq!(info["sub"], user_id.as_str());
        assert_eq!(info["email"], "ada@acme.example");
    }

    // Without `email` (unticked), neither the ID token nor userinfo carries the address; and
    // the consent is the latest one, so the first token's userinfo loses it too.
    let mut browser = Browser::new(&app, "acme");
    let html = sign_in(&mut browser, &authorize, "ada@acme.example").await;
    let code = consent(&mut browser, &html, &["email"]).await;
    let narrow: Value = exchange(&app, "acme", (&client_id, None), LOOPBACK, &code)
        .await
        .json()
        .await
        .unwrap();
    let claims = verified_id_token(&app, narrow["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], user_id.as_str());
    assert!(claims.get("email").is_none(), "{claims}");
    let info: Value = userinfo(&app, "acme", Method::GET, narrow["access_token"].as_str())
        .await
        .json()
        .await
        .unwrap();
    assert!(
        info.get("email").is_none() && info["sub"] == user_id.as_str(),
        "{info}"
    );
    let info: Value = userinfo(&app, "acme", Method::GET, Some(&access))
        .await
        .json()
        .await
        .unwrap();
    assert!(info.get("email").is_none(), "{info}");

    // Ticking `email` again widens the consent, but only for sessions that were granted it: the
    // first token shows the address again, the narrow one (granted without it) still does not
    // (review L9), and neither does its refresh.
    let mut browser = Browser::new(&app, "acme");
    let html = sign_in(&mut browser, &authorize, "ada@acme.example").await;
    let code = consent(&mut browser, &html, &[]).await;
    let wide = exchange(&app, "acme", (&client_id, None), LOOPBACK, &code).await;
    assert_eq!(wide.status(), StatusCode::OK);
    let info: Value = userinfo(&app, "acme", Method::GET, Some(&access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["email"], "ada@acme.example", "{info}");
    let refreshed: Value = token(
        &app,
        "acme",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", narrow["refresh_token"].as_str().unwrap()),
            ("client_id", client_id.as_str()),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    for narrow_access in [&narrow["access_token"], &refreshed["access_token"]] {
        let info: Value = userinfo(&app, "acme", Method::GET, narrow_access.as_str())
            .await
            .json()
            .await
            .unwrap();
        assert!(
            info.get("email").is_none() && info["sub"] == user_id.as_str(),
            "{info}"
        );
    }

    // Without `openid`: no ID token, and userinfo is a 403 with the step-up challenge.
    let plain = authorize_path(&client_id, LOOPBACK, "sessions:read", &[]);
    let mut browser = Browser::new(&app, "acme");
    let html = sign_in(&mut browser, &plain, "ada@acme.example").await;
    let code = consent(&mut browser, &html, &[]).await;
    let plain: Value = exchange(&app, "acme", (&client_id, None), LOOPBACK, &code)
        .await
        .json()
        .await
        .unwrap();
    assert!(plain.get("id_token").is_none());
    let refused = userinfo(&app, "acme", Method::GET, plain["access_token"].as_str()).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("scope=\"sessions:read openid\""),
        "{challenge}"
    );
    // An API key is no OpenID Connect credential either (403, no challenge: a key cannot step up).
    let key = userinfo(&app, "acme", Method::GET, Some(&acme.key)).await;
    assert_eq!(key.status(), StatusCode::FORBIDDEN);
    assert!(key.headers().get("www-authenticate").is_none());

    // No token, a garbage one, another tenant's: the same 401.
    let globex_token: Value = login_response(&app, "globex", "gil@globex.example", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let none = userinfo(&app, "acme", Method::GET, None).await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(none.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("resource_metadata="));
    // An invalid token of acme's own: its signature's last character changed.
    let mut forged = access.clone();
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(forged.len() - 1.., last);
    let garbage = userinfo(&app, "acme", Method::GET, Some(&forged)).await;
    let globex_access = globex_token["access_token"].as_str().unwrap();
    let foreign = userinfo(&app, "acme", Method::GET, Some(globex_access)).await;
    assert_eq!(
        (garbage.status(), foreign.status()),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    // Another tenant's token is an invalid token: the same challenge, the same body.
    assert_eq!(
        garbage.headers()["www-authenticate"],
        foreign.headers()["www-authenticate"]
    );
    assert_eq!(garbage.text().await.unwrap(), foreign.text().await.unwrap());
    // acme's token on globex's host, too.
    let crossed = userinfo(&app, "globex", Method::GET, Some(&access)).await;
    assert_eq!(crossed.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_403_names_the_missing_scope_and_the_reauthorized_token_succeeds() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let client = register_client(
        &app,
        &acme,
        json!({
            "name": "Assistant",
            "redirect_uris": [LOOPBACK],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read", "sessions:write"],
        }),
    )
    .await;
    let client_id = client["id"].as_str().unwrap().to_owned();

    // A 401 on a route that declares a permission names it.
    let anonymous = app
        .client
        .post(app.tenant_url("acme", "/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let challenge = anonymous.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.ends_with(", scope=\"sessions:write\""),
        "{challenge}"
    );

    let mut browser = Browser::new(&app, "acme");
    let authorize = authorize_path(&client_id, LOOPBACK, "sessions:read", &[]);
    let html = sign_in(&mut browser, &authorize, "ada@acme.example").await;
    let code = consent(&mut browser, &html, &[]).await;
    let first: Value = exchange(&app, "acme", (&client_id, None), LOOPBACK, &code)
        .await
        .json()
        .await
        .unwrap();
    let body = json!({ "agent_id": "agent-1", "title": "from the assistant" });
    let refused = call(
        &app,
        "acme",
        first["access_token"].as_str().unwrap(),
        Method::POST,
        "/v1/sessions",
        Some(body.clone()),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://bulkhead.dev/problems/missing-scope"
    );
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    assert!(
        challenge.starts_with("Bearer realm=\"bulkhead\", error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!(
            "resource_metadata=\"{issuer}/.well-known/oauth-protected-resource\""
        )),
        "{challenge}"
    );
    let scope = challenge
        .split("scope=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(scope, "sessions:read sessions:write");

    // The client asks again with the challenge's scope; the new token does what was refused.
    let again = authorize_path(&client_id, LOOPBACK, &scope, &[]);
    let html = browser.get(&again).await.text().await.unwrap();
    let code = consent(&mut browser, &html, &[]).await;
    let second: Value = exchange(&app, "acme", (&client_id, None), LOOPBACK, &code)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["scope"], "sessions:read sessions:write");
    let created = call(
        &app,
        "acme",
        second["access_token"].as_str().unwrap(),
        Method::POST,
        "/v1/sessions",
        Some(body.clone()),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);

    // An API key lacking the permission: the same problem, no challenge (a key cannot step up).
    let key = crate::helpers::keys::agent(&app, &acme, "agent-1", &["sessions:read"]).await;
    let refused = call(
        &app,
        "acme",
        &key.key,
        Method::POST,
        "/v1/sessions",
        Some(body),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.headers().get("www-authenticate").is_none());
    assert_eq!(refused.json::<Value>().await.unwrap(), problem);
}

#[tokio::test]
async fn prompt_and_max_age_are_honoured() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let registered = register_client(
        &app,
        &acme,
        json!({
            "name": "Web app",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "client_secret_post",
            "scopes": ["sessions:read", "sessions:write"],
        }),
    )
    .await;
    let id = registered["id"].as_str().unwrap().to_owned();
    let with = |scope: &str, extra: &[(&str, &str)]| authorize_path(&id, REDIRECT, scope, extra);

    // Signed out with prompt=none: login_required at the redirect URI, no page, no cookie.
    let mut browser = Browser::new(&app, "acme");
    let none = browser
        .get(&with("sessions:read", &[("prompt", "none")]))
        .await;
    assert!(none.headers().get("set-cookie").is_none());
    let back = redirected(&none);
    assert_eq!(param(&back, "error"), Some("login_required"));
    assert_eq!(param(&back, "state"), Some("xyz-state"));
    // prompt=none with another value, or an unknown value: invalid_request.
    for prompt in ["none login", "create"] {
        let back = redirected(
            &browser
                .get(&with("sessions:read", &[("prompt", prompt)]))
                .await,
        );
        assert_eq!(param(&back, "error"), Some("invalid_request"), "{prompt}");
    }

    // Consent once (remembered).
    let html = sign_in(
        &mut browser,
        &with("sessions:read", &[]),
        "ada@acme.example",
    )
    .await;
    consent(&mut browser, &html, &[]).await;
    // Covered: no page; prompt=none gets the code.
    let back = redirected(
        &browser
            .get(&with("sessions:read", &[("prompt", "none")]))
            .await,
    );
    assert!(param(&back, "code").is_some());
    // Not covered, prompt=none: consent_required.
    let back = redirected(
        &browser
            .get(&with("sessions:read sessions:write", &[("prompt", "none")]))
            .await,
    );
    assert_eq!(param(&back, "error"), Some("consent_required"));
    // prompt=consent: the consent page although the consent is remembered.
    let page = browser
        .get(&with("sessions:read", &[("prompt", "consent")]))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("action=\"/oauth/authorize\""));

    // prompt=login and max_age=0: the login page for a signed-in browser; signing in again
    // replaces the session and goes on (here: the remembered consent's code).
    for extra in [("prompt", "login"), ("max_age", "0")] {
        let authorize = with("sessions:read", &[extra]);
        let before = browser.cookie.clone();
        let page = browser.get(&authorize).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(
            html.contains("action=\"/oauth/authorize/login\""),
            "{extra:?}"
        );
        let mut fields = form_fields(&html);
        fields.push(("email".into(), "ada@acme.example".into()));
        fields.push(("password".into(), PASSWORD.into()));
        let answer = browser.post("/oauth/authorize/login", &fields).await;
        assert_ne!(browser.cookie, before);
        let (_, back) = returned(&answer.text().await.unwrap());
        assert!(param(&back, "code").is_some(), "{extra:?}");
    }
    // A generous max_age: the session is young enough, no login page.
    let back = redirected(
        &browser
            .get(&with("sessions:read", &[("max_age", "3600")]))
            .await,
    );
    assert!(param(&back, "code").is_some());
    // With prompt=none and a session too old for max_age: login_required.
    let back = redirected(
        &browser
            .get(&with(
                "sessions:read",
                &[("prompt", "none"), ("max_age", "0")],
            ))
            .await,
    );
    assert_eq!(param(&back, "error"), Some("login_required"));
}

#[tokio::test]
async fn a_stored_name_the_rule_now_refuses_is_shown_as_the_client_id() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let client_id = notes_app(&app, &acme).await;
    // A name stored before the rule tightened (review L5): it reverses what follows it.
    let su = sqlx::PgPool::connect_with(app.db.superuser_options.clone())
        .await
        .unwrap();
    sqlx::query("UPDATE bulkhead.oauth_clients SET name = $1 WHERE tenant_id = $2")
        .bind("Trusted \u{202E}nimdA")
        .bind(acme.id.uuid())
        .execute(&su)
        .await
        .unwrap();
    let authorize = authorize_path(&client_id, LOOPBACK, "openid sessions:read", &[]);
    let mut browser = Browser::new(&app, "acme");
    let login = browser.get(&authorize).await.text().await.unwrap();
    let consent = sign_in(&mut browser, &authorize, "ada@acme.example").await;
    for html in [&login, &consent] {
        assert!(
            !html.contains('\u{202E}') && !html.contains("nimdA"),
            "{html}"
        );
        assert!(html.contains(&format!("client {client_id}")), "{html}");
    }
}
