//! Protected resources (issue 20, RFC 8707 and RFC 9728): `/v1/oauth-resources`, their
//! metadata, and the challenge of Bulkhead's own 401s that names its metadata.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bulkhead_test_support::{spawn_app, TestApp};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::users::PASSWORD;
use crate::helpers::{audit_events, call, call_as};
use crate::oauth_code::{
    authorize_path, form_fields, param, register_client, returned, sign_in, token, user_with_role,
    Browser, VERIFIER,
};

/// The claims of an access token (not verified: the server did that).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The `error` of a 303 back to the client.
fn back_error(response: &Response) -> String {
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap();
    let url = url::Url::parse(location).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "error")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{location}"))
}

async fn form_token(app: &TestApp, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = token(app, "acme", form).await;
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_tenant_registers_protected_resources_and_their_metadata_is_served() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    let body = json!({
        "identifier": "https://acme.bulkhead.test/mcp/search",
        "name": "Acme MCP server",
        "scopes": ["sessions:read", "tools:call:search"],
    });
    let created = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/oauth-resources",
        Some(body.clone()),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ores_"));
    assert_eq!(
        created["identifier"],
        "https://acme.bulkhead.test/mcp/search"
    );
    assert_eq!(
        audit_events(&app, &acme, "oauth_resource.create")
            .await
            .len(),
        1
    );

    // The same identifier again is a conflict; identifiers that are not canonical https URLs
    // without query or fragment are refused.
    let again = call_as(&app, &acme, Method::POST, "/v1/oauth-resources", Some(body)).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    for bad in [
        "http://acme.bulkhead.test/mcp/search",
        "https://acme.bulkhead.test/mcp/search?x=1",
        "https://acme.bulkhead.test/mcp/search#f",
        "HTTPS://acme.bulkhead.test/mcp/search",
        "https://u@acme.bulkhead.test/mcp/search",
        "acme.bulkhead.test",
    ] {
        let refused = call_as(
            &app,
            &acme,
            Method::POST,
            "/v1/oauth-resources",
            Some(json!({ "identifier": bad, "name": "x", "scopes": ["sessions:read"] })),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    // Only the tenant's own origin, with a path below its root: another host (one another
    // tenant could register too, their tokens sharing one issuer), another tenant's origin, a
    // loopback address, another port, the bare origin, the issuer and the token audience are
    // refused with a problem that says why.
    for (bad, why) in [
        ("https://mcp.globex.example/mcp", "own origin"),
        ("https://globex.bulkhead.test/mcp/search", "own origin"),
        ("http://127.0.0.1:8000/mcp", "own origin"),
        ("https://acme.bulkhead.test:8443/mcp/search", "own origin"),
        ("https://acme.bulkhead.test/", "own origin"),
        ("https://bulkhead.test", "issuer"),
        ("https://bulkhead.test/", "issuer"),
        ("bulkhead", "issuer"),
    ] {
        let refused = call_as(
            &app,
            &acme,
            Method::POST,
            "/v1/oauth-resources",
            Some(json!({ "identifier": bad, "name": "x", "scopes": ["sessions:read"] })),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let problem: Value = refused.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{bad}: {detail}");
    }
    let second = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/oauth-resources",
        Some(json!({
            "identifier": "https://acme.bulkhead.test/mcp/local",
            "name": "Local",
            "scopes": ["sessions:read"],
        })),
    )
    .await;
    assert_eq!(second.status(), StatusCode::CREATED);

    // Read, list, change.
    let path = format!("/v1/oauth-resources/{id}");
    let fetched = call_as(&app, &acme, Method::GET, &path, None).await;
    assert_eq!(fetched.status(), StatusCode::OK);
    let listed: Value = call_as(&app, &acme, Method::GET, "/v1/oauth-resources", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    let patched = call_as(
        &app,
        &acme,
        Method::PATCH,
        &path,
        Some(json!({ "scopes": ["sessions:read"] })),
    )
    .await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(
        patched.json::<Value>().await.unwrap()["scopes"],
        json!(["sessions:read"])
    );

    // Another tenant's caller: the same 404 as an unknown id, for every method; nothing listed.
    let unknown = format!(
        "/v1/oauth-resources/{}",
        bulkhead_core::OAuthResourceId::new()
    );
    let missing = call_as(&app, &globex, Method::GET, &unknown, None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let missing = missing.text().await.unwrap();
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({ "name": "mine now" }))),
        (Method::DELETE, None),
    ] {
        let foreign = call_as(&app, &globex, method.clone(), &path, body).await;
        assert_eq!(foreign.status(), StatusCode::NOT_FOUND, "{method}");
        assert_eq!(foreign.text().await.unwrap(), missing, "{method}");
    }
    let theirs: Value = call_as(&app, &globex, Method::GET, "/v1/oauth-resources", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["data"], json!([]));

    // RFC 9728 metadata on the tenant's subdomain; on another tenant's, the unknown id's 404.
    let metadata_path = format!("/.well-known/oauth-protected-resource/{id}");
    let metadata = app
        .client
        .get(app.tenant_url("acme", &metadata_path))
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), StatusCode::OK);
    let metadata: Value = metadata.json().await.unwrap();
    assert_eq!(
        metadata["resource"],
        "https://acme.bulkhead.test/mcp/search"
    );
    assert_eq!(metadata["authorization_servers"], json!([issuer]));
    assert_eq!(metadata["scopes_supported"], json!(["sessions:read"]));
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
    let unknown_metadata = format!(
        "/.well-known/oauth-protected-resource/{}",
        bulkhead_core::OAuthResourceId::new()
    );
    let get = |slug: &'static str, path: String| {
        let app = &app;
        async move {
            let response = app
                .client
                .get(app.tenant_url(slug, &path))
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let (status, unknown_body) = get("globex", unknown_metadata).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, foreign_body) = get("globex", metadata_path.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(foreign_body, unknown_body);

    // Deleted: gone, metadata too.
    let deleted = call_as(&app, &acme, Method::DELETE, &path, None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, _) = get("acme", metadata_path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        audit_events(&app, &acme, "oauth_resource.delete")
            .await
            .len(),
        1
    );
}

/// A client that meets Bulkhead's 401 finds the metadata, and from it the authorization server.
#[tokio::test]
async fn a_401_names_the_protected_resource_metadata() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let anonymous = app
        .client
        .get(app.tenant_url("acme", "/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let challenge = anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("{challenge}"));
    // On the tenant's host: the document under the tenant's own issuer, naming it as the
    // authorization server, whose metadata names it as the issuer.
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    assert_eq!(
        url,
        format!("{issuer}/.well-known/oauth-protected-resource")
    );
    let fetch = |url: String| {
        let client = app.client.clone();
        async move {
            let response = client.get(url).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (_, metadata) =
        fetch(app.tenant_url("acme", "/.well-known/oauth-protected-resource")).await;
    assert_eq!(metadata["resource"], issuer);
    assert_eq!(metadata["authorization_servers"], json!([issuer]));
    let (_, server) =
        fetch(app.tenant_url("acme", "/.well-known/oauth-authorization-server")).await;
    assert_eq!(server["issuer"], issuer);

    // On the deployment's host: `--issuer` names the own API, and no authorization server is
    // named (each tenant is its own); its 401 points there.
    let deployment = app.state.config().tokens.issuer.clone();
    let (_, bare) = fetch(app.url("/.well-known/oauth-protected-resource")).await;
    assert_eq!(bare["resource"], deployment);
    assert!(bare.get("authorization_servers").is_none(), "{bare}");
    let anonymous = app
        .client
        .get(app.url("/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert!(anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains(&format!(
            "resource_metadata=\"{deployment}/.well-known/oauth-protected-resource\""
        )));
}

#[tokio::test]
async fn a_tenant_registers_at_most_so_many_resources() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    for i in 0..100 {
        let created = call_as(
            &app,
            &acme,
            Method::POST,
            "/v1/oauth-resources",
            Some(json!({
                "identifier": format!("https://acme.bulkhead.test/mcp/r{i}"),
                "name": "r",
                "scopes": ["sessions:read"],
            })),
        )
        .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let refused = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/oauth-resources",
        Some(json!({
            "identifier": "https://acme.bulkhead.test/mcp/one-more",
            "name": "r",
            "scopes": ["sessions:read"],
        })),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
}

/// RFC 8707: a tenant with resources issues tokens for one of them, whose `aud` it is; such a
/// token is refused by Bulkhead's own API, and a refresh keeps its audience.
#[tokio::test]
async fn a_token_for_a_resource_is_for_that_resource_only() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    const MCP: &str = "https://acme.bulkhead.test/mcp/search";
    const API: &str = "https://acme.bulkhead.test/mcp/api";
    for (identifier, scopes) in [
        (MCP, json!(["sessions:read"])),
        (API, json!(["sessions:read", "sessions:write"])),
    ] {
        let created = call_as(
            &app,
            &acme,
            Method::POST,
            "/v1/oauth-resources",
            Some(json!({ "identifier": identifier, "name": "Acme MCP", "scopes": scopes })),
        )
        .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let redirect = "https://app.example/cb";
    let body = json!({
        "name": "Assistant",
        "redirect_uris": [redirect],
        "token_endpoint_auth_method": "client_secret_post",
        "scopes": ["sessions:read", "sessions:write"],
    });
    let client = register_client(&app, &acme, body.clone()).await;
    let client_id = client["id"].as_str().unwrap();
    let secret = client["client_secret"].as_str().unwrap();
    let mut browser = Browser::new(&app, "acme");

    // Without a resource, with an unknown one, or asking what the resource does not accept:
    // back to the client with the error.
    let none = browser
        .get(&authorize_path(client_id, redirect, "sessions:read", &[]))
        .await;
    assert_eq!(back_error(&none), "invalid_target");
    let unknown = browser
        .get(&authorize_path(
            client_id,
            redirect,
            "sessions:read",
            &[("resource", "https://other.example/")],
        ))
        .await;
    assert_eq!(back_error(&unknown), "invalid_target");
    let too_much = browser
        .get(&authorize_path(
            client_id,
            redirect,
            "sessions:write",
            &[("resource", MCP)],
        ))
        .await;
    assert_eq!(back_error(&too_much), "invalid_scope");
    // A tenant without resources names none.
    let theirs = register_client(&app, &globex, body).await;
    let mut elsewhere = Browser::new(&app, "globex");
    let named = elsewhere
        .get(&authorize_path(
            theirs["id"].as_str().unwrap(),
            redirect,
            "sessions:read",
            &[("resource", MCP)],
        ))
        .await;
    assert_eq!(back_error(&named), "invalid_target");

    // For the MCP server: the consent page names it; the code's token is for it alone.
    let authorize = authorize_path(client_id, redirect, "sessions:read", &[("resource", MCP)]);
    let html = sign_in(&mut browser, &authorize, "ada@acme.example").await;
    assert!(html.contains("id=\"resource\""), "{html}");
    assert!(html.contains(MCP), "{html}");
    let mut allow = form_fields(&html);
    allow.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &allow).await;
    let (_, back) = returned(&answer.text().await.unwrap());
    let code = param(&back, "code").unwrap().to_owned();
    let exchange = |resource: &'static str| {
        let code = code.clone();
        let app = &app;
        async move {
            let mut form = vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect),
                ("client_id", client_id),
                ("client_secret", secret),
                ("code_verifier", VERIFIER),
            ];
            if !resource.is_empty() {
                form.push(("resource", resource));
            }
            form_token(app, &form).await
        }
    };
    let (status, refused) = exchange(API).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"], "invalid_target");
    let (status, tokens) = exchange(MCP).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(claims(access)["aud"], MCP);
    assert_eq!(tokens["scope"], "sessions:read");
    // Bulkhead's own API is another resource: the token is refused there.
    let own = call(&app, "acme", access, Method::GET, "/v1/sessions", None).await;
    assert_eq!(own.status(), StatusCode::UNAUTHORIZED);

    // A refresh keeps the audience: asking for another is invalid_target, none keeps MCP.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, widened) = form_token(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", client_id),
            ("client_secret", secret),
            ("resource", API),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(widened["error"], "invalid_target");
    let (status, refreshed) = form_token(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", client_id),
            ("client_secret", secret),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(
        claims(refreshed["access_token"].as_str().unwrap())["aud"],
        MCP
    );

    // The consent is remembered for that resource only: the other resource asks again.
    let ada = crate::helpers::users::login_response(&app, "acme", "ada@acme.example", PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let grants: Value = call(
        &app,
        "acme",
        ada["access_token"].as_str().unwrap(),
        Method::GET,
        "/v1/auth/grants",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(grants["data"][0]["resource"], MCP);
    let remembered = browser.get(&authorize).await;
    assert_eq!(remembered.status(), StatusCode::SEE_OTHER);
    assert!(remembered.headers()["location"]
        .to_str()
        .unwrap()
        .contains("code="));
    let other = browser
        .get(&authorize_path(
            client_id,
            redirect,
            "sessions:read",
            &[("resource", API)],
        ))
        .await;
    assert_eq!(other.status(), StatusCode::OK);
    assert!(other
        .text()
        .await
        .unwrap()
        .contains("action=\"/oauth/authorize\""));

    // Deleting the resource takes its consents with it and ends its sessions, audited with
    // the counts: nothing issued for the identifier outlives its registration.
    let listed: Value = call_as(&app, &acme, Method::GET, "/v1/oauth-resources", None)
        .await
        .json()
        .await
        .unwrap();
    let mcp_id = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["identifier"] == MCP)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = call_as(
        &app,
        &acme,
        Method::DELETE,
        &format!("/v1/oauth-resources/{mcp_id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let pool = app.db.superuser_pool().await;
    let (grants, live): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bulkhead.oauth_grants WHERE resource = $1), \
         (SELECT count(*) FROM bulkhead.auth_sessions WHERE resource = $1 \
          AND revoked_at IS NULL)",
    )
    .bind(MCP)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((grants, live), (0, 0));
    let events = audit_events(&app, &acme, "oauth_resource.delete").await;
    assert_eq!(events.len(), 1);
    let event = events[0].to_string();
    assert!(event.contains("\"grants_deleted\":1"), "{event}");
    assert!(event.contains("\"sessions_ended\":1"), "{event}");
}

/// Bulkhead's own API is named by the issuer (its protected-resource metadata's `resource`):
/// `resource=<issuer>` gets own-API tokens everywhere, even in a tenant with registered
/// resources; a `resource` with a control character is `invalid_target` before any lookup.
#[tokio::test]
async fn the_issuer_names_bulkheads_own_api() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    // Both name the own API: the tenant's issuer (what its metadata on the tenant's host
    // publishes) and the deployment's `--issuer` (on the deployment's host), each as written or
    // in canonical form.
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    let deployment = app.state.config().tokens.issuer.clone();
    let canonical = url::Url::parse(&deployment).unwrap().to_string();
    let created = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/oauth-resources",
        Some(json!({
            "identifier": "https://acme.bulkhead.test/mcp/search",
            "name": "Acme MCP",
            "scopes": ["sessions:read"],
        })),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let redirect = "https://app.example/cb";
    let client = register_client(
        &app,
        &acme,
        json!({
            "name": "Assistant",
            "redirect_uris": [redirect],
            "token_endpoint_auth_method": "client_secret_post",
            "scopes": ["sessions:read", "sessions:write"],
        }),
    )
    .await;
    let client_id = client["id"].as_str().unwrap();
    let secret = client["client_secret"].as_str().unwrap();
    let mut browser = Browser::new(&app, "acme");

    // A NUL (or any control character) is refused back to the client, not a 503.
    for bad in ["\u{0}", "https://acme.bulkhead.test/mcp/\u{1}"] {
        let refused = browser
            .get(&authorize_path(
                client_id,
                redirect,
                "sessions:read",
                &[("resource", bad)],
            ))
            .await;
        assert_eq!(back_error(&refused), "invalid_target");
    }

    // The issuer: the consent page, then an own-API token (aud = --token-audience) that
    // Bulkhead's API accepts, with both scopes (the resource's scopes do not apply).
    let authorize = authorize_path(
        client_id,
        redirect,
        "sessions:read sessions:write",
        &[("resource", &issuer)],
    );
    let html = sign_in(&mut browser, &authorize, "ada@acme.example").await;
    let mut allow = form_fields(&html);
    allow.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &allow).await;
    let (_, back) = returned(&answer.text().await.unwrap());
    let code = param(&back, "code").unwrap().to_owned();
    let (status, tokens) = form_token(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", client_id),
            ("client_secret", secret),
            ("code_verifier", VERIFIER),
            ("resource", &canonical),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        claims(access)["aud"],
        app.state.config().tokens.audience.as_str()
    );
    assert_eq!(tokens["scope"], "sessions:read sessions:write");
    let own = call(&app, "acme", access, Method::GET, "/v1/sessions", None).await;
    assert_eq!(own.status(), StatusCode::OK);

    // A refresh naming the issuer keeps the own API; naming the registered resource is refused.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, refused) = form_token(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", client_id),
            ("client_secret", secret),
            ("resource", "https://acme.bulkhead.test/mcp/search"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"], "invalid_target");
    let (status, refreshed) = form_token(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", client_id),
            ("client_secret", secret),
            ("resource", &format!("{issuer}/")),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(
        claims(refreshed["access_token"].as_str().unwrap())["aud"],
        app.state.config().tokens.audience.as_str()
    );
}
