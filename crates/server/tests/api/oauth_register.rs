//! Dynamic client registration (RFC 7591, issue 20) at `POST /oauth/register`: off until an
//! admin enables it, checked like admin registration, capped, rate-limited, audited, and the
//! clients it makes complete the authorization-code flow and expire when unused.

use bulkhead_test_support::{spawn_app, TestApp, TestTenant};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::keys::mint_key;
use crate::helpers::{audit_events, call_as, get_ok_json};
use crate::oauth_code::{
    authorize_path, param, register_client, returned, sign_in, token, user_with_role, Browser,
    VERIFIER,
};

async fn register(app: &TestApp, slug: &str, body: &Value) -> Response {
    app.client
        .post(app.tenant_url(slug, "/oauth/register"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn enable(app: &TestApp, tenant: &TestTenant, scopes: &[&str]) {
    let response = call_as(
        app,
        tenant,
        Method::PUT,
        "/v1/oauth-settings",
        Some(json!({ "dynamic_registration": true, "dynamic_client_scopes": scopes })),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

fn public_client(name: &str) -> Value {
    json!({
        "client_name": name,
        "redirect_uris": ["http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "software_id": "ignored-by-the-server",
    })
}

/// The reasons of the tenant's refused registrations, in the order the audit log lists them.
async fn refusal_reasons(app: &TestApp, tenant: &TestTenant) -> Vec<String> {
    let reasons: Vec<String> = audit_events(app, tenant, "oauth_client.register")
        .await
        .iter()
        .filter(|e| e["outcome"] == "failure")
        .map(|e| e["metadata"]["reason"].as_str().unwrap().to_owned())
        .collect();
    reasons
}

#[tokio::test]
async fn a_client_registers_itself_once_enabled_and_completes_the_code_flow() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;

    // The tenant's metadata names the endpoint under its issuer, whether or not it enabled
    // registration; it has not: 403.
    let metadata: Value = app
        .client
        .get(app.tenant_url("acme", "/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    assert_eq!(
        metadata["registration_endpoint"],
        format!("{issuer}/oauth/register")
    );
    let settings = get_ok_json(&app, &acme, "/v1/oauth-settings").await;
    assert_eq!(settings["dynamic_registration"], false);
    let refused = register(&app, "acme", &public_client("Assistant")).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(refused.headers()["cache-control"], "no-store");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "access_denied");
    assert_eq!(refusal_reasons(&app, &acme).await, ["disabled"]);

    // Enabling needs a ceiling, of scopes the admin holds.
    let no_scopes = call_as(
        &app,
        &acme,
        Method::PUT,
        "/v1/oauth-settings",
        Some(json!({ "dynamic_registration": true, "dynamic_client_scopes": [] })),
    )
    .await;
    assert_eq!(no_scopes.status(), StatusCode::UNPROCESSABLE_ENTITY);
    enable(&app, &acme, &["sessions:read", "sessions:write"]).await;
    let changes = audit_events(&app, &acme, "oauth_settings.update").await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["metadata"]["dynamic_registration"], true);

    // A public client: no secret, marked dynamic, listed for the admins.
    let created = register(&app, "acme", &public_client("Desktop assistant")).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let client: Value = created.json().await.unwrap();
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    assert!(client_id.starts_with("oac_"));
    assert!(client.get("client_secret").is_none());
    assert_eq!(client["token_endpoint_auth_method"], "none");
    assert_eq!(client["scope"], "sessions:read sessions:write");
    assert_eq!(client["registered_by"], "dynamic");
    let listed = get_ok_json(&app, &acme, &format!("/v1/oauth-clients/{client_id}")).await;
    assert_eq!(listed["registered_by"], "dynamic");
    assert_eq!(listed["name"], "Desktop assistant");
    let registered = audit_events(&app, &acme, "oauth_client.register").await;
    let last = registered.last().unwrap();
    assert_eq!(last["outcome"], "success");
    assert_eq!(last["resource_id"], client_id.as_str());

    // A confidential one, asking for less than the ceiling: its secret once, HMAC-stored.
    let confidential = register(
        &app,
        "acme",
        &json!({
            "client_name": "Server agent",
            "redirect_uris": ["https://agent.example/cb"],
            "scope": "sessions:read",
        }),
    )
    .await;
    assert_eq!(confidential.status(), StatusCode::CREATED);
    let confidential: Value = confidential.json().await.unwrap();
    assert_eq!(
        confidential["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    assert!(confidential["client_secret"]
        .as_str()
        .unwrap()
        .starts_with("bkcs_"));
    assert_eq!(confidential["client_secret_expires_at"], 0);
    assert_eq!(confidential["scope"], "sessions:read");

    // The public client completes the flow with PKCE.
    let redirect = "http://127.0.0.1:49153/callback";
    let authorize = authorize_path(&client_id, redirect, "sessions:read", &[]);
    let mut browser = Browser::new(&app, "acme");
    let consent = sign_in(&mut browser, &authorize, "ada@acme.example").await;
    assert!(consent.contains("Desktop assistant"), "{consent}");
    let mut fields = crate::oauth_code::form_fields(&consent);
    fields.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &fields).await;
    let (_, back) = returned(&answer.text().await.unwrap());
    let code = param(&back, "code").unwrap().to_owned();
    let tokens = token(
        &app,
        "acme",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(tokens.status(), StatusCode::OK);
    let tokens: Value = tokens.json().await.unwrap();
    assert_eq!(tokens["scope"], "sessions:read");

    // Another tenant's subdomain does not know the client (and has registration off).
    app.create_tenant("globex").await;
    let elsewhere = Browser::new(&app, "globex").get(&authorize).await;
    assert_eq!(elsewhere.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        register(&app, "globex", &public_client("Assistant"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn registrations_outside_the_rules_are_refused_in_rfc_7591_terms_and_audited() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    enable(&app, &acme, &["sessions:read"]).await;
    let cases = [
        (
            json!({ "client_name": "A", "redirect_uris": ["http://app.example/cb"] }),
            "invalid_redirect_uri",
            "redirect_uri",
        ),
        (
            json!({ "client_name": "A", "redirect_uris": ["http://localhost/cb"] }),
            "invalid_redirect_uri",
            "redirect_uri",
        ),
        (
            json!({ "client_name": "A", "redirect_uris": ["https://app.example/cb#x"] }),
            "invalid_redirect_uri",
            "redirect_uri",
        ),
        (
            json!({ "client_name": "A", "redirect_uris": [] }),
            "invalid_redirect_uri",
            "redirect_uri_count",
        ),
        (
            json!({ "redirect_uris": ["https://app.example/cb"] }),
            "invalid_client_metadata",
            "client_name",
        ),
        // Review L8: a right-to-left override shows what follows it reversed on the consent
        // page; a zero-width space makes two different names look alike.
        (
            json!({ "client_name": "Trusted \u{202E}nimdA", "redirect_uris": ["https://app.example/cb"] }),
            "invalid_client_metadata",
            "client_name",
        ),
        (
            json!({ "client_name": "Pay\u{200B}Pal", "redirect_uris": ["https://app.example/cb"] }),
            "invalid_client_metadata",
            "client_name",
        ),
        (
            json!({ "client_name": "A", "redirect_uris": ["https://app.example/cb"],
                    "scope": "keys:manage" }),
            "invalid_client_metadata",
            "scope",
        ),
        (
            json!({ "client_name": "A", "redirect_uris": ["https://app.example/cb"],
                    "token_endpoint_auth_method": "private_key_jwt" }),
            "invalid_client_metadata",
            "auth_method",
        ),
        (
            json!({ "client_name": "A", "redirect_uris": ["https://app.example/cb"],
                    "grant_types": ["client_credentials"] }),
            "invalid_client_metadata",
            "grant_types",
        ),
    ];
    let mut expected = Vec::new();
    for (body, error, reason) in &cases {
        let response = register(&app, "acme", body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], *error, "{body}");
        assert!(answer["error_description"].is_string());
        expected.push(*reason);
    }
    assert_eq!(refusal_reasons(&app, &acme).await, expected);
    // Nothing was stored.
    let clients = get_ok_json(&app, &acme, "/v1/oauth-clients").await;
    assert_eq!(clients["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn registration_is_rate_limited_per_source_address() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    enable(&app, &acme, &["sessions:read"]).await;
    // The per-address burst is 10 attempts; the 11th from the same address waits.
    for n in 0..10 {
        let response = register(&app, "acme", &public_client(&format!("App {n}"))).await;
        assert_eq!(response.status(), StatusCode::CREATED, "attempt {n}");
    }
    let limited = register(&app, "acme", &public_client("One too many")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    let clients = get_ok_json(&app, &acme, "/v1/oauth-clients?limit=200").await;
    assert_eq!(clients["data"].as_array().unwrap().len(), 10);
}

/// Adds `n` clients registered by `by` to the tenant's only client's tenant, straight in the
/// table (faster than the API, and past the per-address budget).
async fn add_clients(app: &TestApp, n: i64, by: &str) {
    let pool = app.db.superuser_pool().await;
    sqlx::query(
        "INSERT INTO bulkhead.oauth_clients (tenant_id, id, name, redirect_uris, \
         token_endpoint_auth_method, scopes, registered_by) \
         SELECT c.tenant_id, gen_random_uuid(), 'Filler ' || g, c.redirect_uris, 'none', \
         c.scopes, $2 FROM (SELECT * FROM bulkhead.oauth_clients LIMIT 1) c, \
         generate_series(1, $1) g",
    )
    .bind(n)
    .bind(by)
    .execute(&pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn self_registered_clients_have_their_own_cap_and_never_take_an_admins_place() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    enable(&app, &acme, &["sessions:read"]).await;
    let first = register(&app, "acme", &public_client("The first")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    add_clients(&app, 99, "dynamic").await;
    let full = register(&app, "acme", &public_client("One too many")).await;
    assert_eq!(full.status(), StatusCode::CONFLICT);
    let body: Value = full.json().await.unwrap();
    assert_eq!(body["error"], "client_limit_reached");
    assert_eq!(refusal_reasons(&app, &acme).await, ["client_limit"]);
    // A hundred strangers take no admin's place: admins still have all of theirs.
    let admin_client = |name: &str| {
        json!({
            "name": name,
            "redirect_uris": ["https://app.example/cb"],
            "scopes": ["sessions:read"],
        })
    };
    let post = |body: Value| call_as(&app, &acme, Method::POST, "/v1/oauth-clients", Some(body));
    assert_eq!(
        post(admin_client("Admin")).await.status(),
        StatusCode::CREATED
    );
    add_clients(&app, 98, "admin").await;
    assert_eq!(
        post(admin_client("Hundredth")).await.status(),
        StatusCode::CREATED
    );
    let admin_full = post(admin_client("One too many")).await;
    assert_eq!(admin_full.status(), StatusCode::CONFLICT);
    // Counted apart both ways: self-registration is still full, no more, no less.
    let again = register(&app, "acme", &public_client("Still full")).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn an_unused_dynamic_client_expires_and_a_later_registration_deletes_it() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    enable(&app, &acme, &["sessions:read"]).await;
    let admin_client = register_client(
        &app,
        &acme,
        json!({
            "name": "Admin client",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read"],
        }),
    )
    .await;
    let stale: Value = register(&app, "acme", &public_client("Stale"))
        .await
        .json()
        .await
        .unwrap();
    let stale_id = stale["client_id"].as_str().unwrap().to_owned();
    let authorize = authorize_path(
        &stale_id,
        "http://127.0.0.1:1/callback",
        "sessions:read",
        &[],
    );
    assert_eq!(
        Browser::new(&app, "acme").get(&authorize).await.status(),
        StatusCode::OK
    );

    // Unused for 31 days (an admin client as long: admin clients never expire).
    let pool = app.db.superuser_pool().await;
    sqlx::query(
        "UPDATE bulkhead.oauth_clients SET last_used_at = now() - interval '31 days', \
         created_at = now() - interval '31 days'",
    )
    .execute(&pool)
    .await
    .unwrap();
    // Expired at once: the authorization endpoint no longer knows it.
    assert_eq!(
        Browser::new(&app, "acme").get(&authorize).await.status(),
        StatusCode::BAD_REQUEST
    );
    let admin_authorize = authorize_path(
        admin_client["id"].as_str().unwrap(),
        "http://127.0.0.1:1/callback",
        "sessions:read",
        &[],
    );
    assert_eq!(
        Browser::new(&app, "acme")
            .get(&admin_authorize)
            .await
            .status(),
        StatusCode::OK
    );
    // The next registration deletes it.
    let fresh = register(&app, "acme", &public_client("Fresh")).await;
    assert_eq!(fresh.status(), StatusCode::CREATED);
    let gone = call_as(
        &app,
        &acme,
        Method::GET,
        &format!("/v1/oauth-clients/{stale_id}"),
        None,
    )
    .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let expired = audit_events(&app, &acme, "oauth_client.expire").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["resource_id"], stale_id.as_str());
    let clients = get_ok_json(&app, &acme, "/v1/oauth-clients").await;
    assert_eq!(clients["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn oauth_settings_are_a_grant_of_their_scopes() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    // A key holding keys:manage but not the scopes it names cannot set them.
    let (narrow, _) = mint_key(&app, &acme, json!({ "scopes": ["keys:manage"] })).await;
    let refused = call_as(
        &app,
        &narrow,
        Method::PUT,
        "/v1/oauth-settings",
        Some(json!({ "dynamic_registration": true, "dynamic_client_scopes": ["users:write"] })),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // Nor turn off (or change) a ceiling naming scopes it does not hold.
    enable(&app, &acme, &["users:write"]).await;
    let refused = call_as(
        &app,
        &narrow,
        Method::PUT,
        "/v1/oauth-settings",
        Some(json!({ "dynamic_registration": false })),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let settings = get_ok_json(&app, &acme, "/v1/oauth-settings").await;
    assert_eq!(settings["dynamic_registration"], true);
}
