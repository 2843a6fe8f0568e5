//! The resource-server layer (`bulkhead-resource-server`, issue 20) in front of a real axum
//! server on loopback, with tokens from a real Bulkhead through the authorization-code flow,
//! and Bulkhead's introspection answering for a resource's tokens.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{Extensions, HeaderMap};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bulkhead_resource_server::{ResourceServer, VerifiedAccess};
use bulkhead_test_support::{spawn_app, TestApp, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::call_as;
use crate::helpers::oauth::{granted_token, post_form, token_request};
use crate::oauth_code::{
    authorize_path, form_fields, param, register_client, returned, sign_in, token, user_with_role,
    Browser, VERIFIER,
};

const MCP: &str = "https://acme.bulkhead.test/mcp/search";
const OTHER: &str = "https://acme.bulkhead.test/mcp/other";
const GLOBEX: &str = "https://globex.bulkhead.test/mcp/search";
const REDIRECT: &str = "https://app.example/cb";

/// Registers `identifier` in `tenant` accepting `sessions:read` and `sessions:write`; its id.
async fn register_resource(app: &TestApp, tenant: &TestTenant, identifier: &str) -> String {
    let created = call_as(
        app,
        tenant,
        Method::POST,
        "/v1/oauth-resources",
        Some(json!({
            "identifier": identifier,
            "name": "MCP",
            "scopes": ["sessions:read", "sessions:write"],
        })),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

/// A tenant's user and confidential client, ready for the code flow.
struct Flow {
    slug: String,
    client_id: String,
    secret: String,
    email: String,
}

async fn flow(app: &TestApp, tenant: &TestTenant) -> Flow {
    let email = format!("ada@{}.example", tenant.slug);
    user_with_role(app, tenant, &email, "admin").await;
    let client = register_client(
        app,
        tenant,
        json!({
            "name": "Assistant",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "client_secret_post",
            "scopes": ["sessions:read", "sessions:write"],
        }),
    )
    .await;
    Flow {
        slug: tenant.slug.clone(),
        client_id: client["id"].as_str().unwrap().to_owned(),
        secret: client["client_secret"].as_str().unwrap().to_owned(),
        email,
    }
}

/// An access token for `resource` with `scope`, through sign-in, consent and the code exchange.
async fn resource_token(app: &TestApp, flow: &Flow, resource: &str, scope: &str) -> String {
    let mut browser = Browser::new(app, &flow.slug);
    let authorize = authorize_path(&flow.client_id, REDIRECT, scope, &[("resource", resource)]);
    let html = sign_in(&mut browser, &authorize, &flow.email).await;
    // A remembered consent returns to the client at once; otherwise the consent page.
    let (_, back) = if html.contains("id=\"continue\"") {
        returned(&html)
    } else {
        let mut allow = form_fields(&html);
        allow.push(("decision".into(), "allow".into()));
        let answer = browser.post("/oauth/authorize", &allow).await;
        returned(&answer.text().await.unwrap())
    };
    let code = param(&back, "code").unwrap().to_owned();
    let response = token(
        app,
        &flow.slug,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &flow.client_id),
            ("client_secret", &flow.secret),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn metadata_url(resource_id: &str) -> String {
    format!("https://acme.bulkhead.test/.well-known/oauth-protected-resource/{resource_id}")
}

/// The resource server's settings for acme's MCP resource, keys and introspection at the given
/// base URL (Bulkhead itself, or a proxy in front of it).
fn settings(
    app: &TestApp,
    acme: &TestTenant,
    resource_id: &str,
    issuer_base: &str,
) -> bulkhead_resource_server::Builder {
    ResourceServer::builder()
        .issuer(crate::helpers::oauth::tenant_issuer(app, "acme"))
        .resource(MCP)
        .tenant_id(acme.id.to_string())
        .jwks_url(format!("{issuer_base}/.well-known/jwks.json"))
        .resource_metadata(metadata_url(resource_id))
        .introspection(format!("{issuer_base}/oauth/introspect"), None, &acme.key)
        .allow_loopback_http(true)
}

async fn whoami(Extension(access): Extension<VerifiedAccess>) -> Json<Value> {
    Json(json!({
        "tenant_id": access.tenant_id,
        "subject": access.subject,
        "subject_type": access.subject_type,
        "client_id": access.client_id,
        "scopes": access.scopes,
    }))
}

/// A real axum resource server on loopback: `/read` needs `sessions:read`, `/write`
/// `sessions:write`; its base URL.
async fn serve_resource(server: &ResourceServer) -> String {
    let router = Router::new()
        .route(
            "/read",
            get(whoami).layer(server.require(["sessions:read"]).unwrap()),
        )
        .route(
            "/write",
            get(whoami).layer(server.require(["sessions:write"]).unwrap()),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    format!("http://{addr}")
}

/// The caller's address as axum's `ConnectInfo` records it.
fn connected_peer(extensions: &Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

async fn get_with(app: &TestApp, url: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(url);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request.send().await.unwrap()
}

fn challenge(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_resource_server_admits_only_its_own_tokens_with_the_scopes_a_route_needs() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let mcp_id = register_resource(&app, &acme, MCP).await;
    register_resource(&app, &acme, OTHER).await;
    register_resource(&app, &globex, GLOBEX).await;
    let acme_flow = flow(&app, &acme).await;
    let globex_flow = flow(&app, &globex).await;
    let server = settings(&app, &acme, &mcp_id, &app.url(""))
        .introspection_cache(Duration::from_secs(1))
        .build()
        .unwrap();
    let base = serve_resource(&server).await;
    let (read, write) = (format!("{base}/read"), format!("{base}/write"));
    let meta = metadata_url(&mcp_id);

    // No token: 401 naming the metadata and the scope, no error.
    let none = get_with(&app, &read, None).await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&none),
        format!("Bearer scope=\"sessions:read\", resource_metadata=\"{meta}\"")
    );

    // A token for this resource with sessions:read passes /read; the handler sees its claims.
    let token = resource_token(&app, &acme_flow, MCP, "sessions:read").await;
    let passed = get_with(&app, &read, Some(&token)).await;
    assert_eq!(passed.status(), StatusCode::OK);
    let seen: Value = passed.json().await.unwrap();
    assert_eq!(seen["tenant_id"], acme.id.to_string());
    assert_eq!(seen["subject_type"], "user");
    assert_eq!(seen["client_id"], acme_flow.client_id.as_str());
    assert_eq!(seen["scopes"], json!(["sessions:read"]));

    // The same token on /write: 403 with the scope needed.
    let short = get_with(&app, &write, Some(&token)).await;
    assert_eq!(short.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        challenge(&short),
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"sessions:write\", resource_metadata=\"{meta}\""
        )
    );

    // Bulkhead's introspection answers for the resource's token to a key of its tenant, and
    // not to another tenant's key.
    let introspect = |key: String, text: String| {
        let app = &app;
        async move {
            let response = post_form(
                app,
                None,
                "/oauth/introspect",
                None,
                &[("token", &text), ("client_secret", &key)],
            )
            .await;
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        }
    };
    let answer = introspect(acme.key.clone(), token.clone()).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["aud"], MCP);
    assert_eq!(answer["scope"], "sessions:read");
    assert_eq!(
        introspect(globex.key.clone(), token.clone()).await,
        json!({ "active": false })
    );
    // Introspection verified it for the resource (and remembered that): Bulkhead's own API
    // still refuses it.
    let own = crate::helpers::call(&app, "acme", &token, Method::GET, "/v1/sessions", None).await;
    assert_eq!(own.status(), StatusCode::UNAUTHORIZED);

    // A token for another resource of the tenant, another tenant's token for its own resource,
    // and a token for Bulkhead's own API: each 401 invalid_token.
    let other = resource_token(&app, &acme_flow, OTHER, "sessions:read").await;
    let theirs = resource_token(&app, &globex_flow, GLOBEX, "sessions:read").await;
    let own_api = granted_token(
        token_request(
            &app,
            "acme",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_secret", &acme.key),
                ("scope", "sessions:read"),
            ],
        )
        .await,
    )
    .await;
    for (what, refused) in [
        ("other", &other),
        ("globex", &theirs),
        ("own api", &own_api),
    ] {
        let response = get_with(&app, &read, Some(refused)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            challenge(&response),
            format!(
                "Bearer error=\"invalid_token\", scope=\"sessions:read\", resource_metadata=\"{meta}\""
            ),
            "{what}"
        );
    }

    // An expired token: the same token, judged by a clock past its expiry and leeway.
    let exp = crate::helpers::oauth::claims(&token)["exp"]
        .as_i64()
        .unwrap();
    let late = settings(&app, &acme, &mcp_id, &app.url(""))
        .clock(move || exp + 31)
        .build()
        .unwrap();
    let late_base = serve_resource(&late).await;
    let expired = get_with(&app, &format!("{late_base}/read"), Some(&token)).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&expired).contains("error=\"invalid_token\""));

    // Each tenant is its own issuer: a layer expecting the deployment's `--issuer` (the issuer
    // of every token before tenants had their own) or another tenant's refuses acme's token.
    for wrong in [
        app.state.config().tokens.issuer.clone(),
        crate::helpers::oauth::tenant_issuer(&app, "globex"),
    ] {
        let misconfigured = settings(&app, &acme, &mcp_id, &app.url(""))
            .issuer(wrong.clone())
            .build()
            .unwrap();
        let base = serve_resource(&misconfigured).await;
        let refused = get_with(&app, &format!("{base}/read"), Some(&token)).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{wrong}");
    }

    // `tenant_id` is a check of its own: a layer for globex's resource on globex's issuer that
    // names acme's tenant refuses globex's token, which the same layer naming globex admits
    // (without introspection, whose answer names the tenant too and would refuse it first).
    let globex_layer = |tenant_id: String| {
        ResourceServer::builder()
            .issuer(crate::helpers::oauth::tenant_issuer(&app, "globex"))
            .resource(GLOBEX)
            .tenant_id(tenant_id)
            .jwks_url(format!("{}/.well-known/jwks.json", app.url("")))
            .resource_metadata(metadata_url(&mcp_id))
            .without_revocation_checks()
            .allow_loopback_http(true)
            .build()
            .unwrap()
    };
    for (tenant_id, expected) in [
        (acme.id.to_string(), StatusCode::UNAUTHORIZED),
        (globex.id.to_string(), StatusCode::OK),
    ] {
        let base = serve_resource(&globex_layer(tenant_id.clone())).await;
        let answer = get_with(&app, &format!("{base}/read"), Some(&theirs)).await;
        assert_eq!(answer.status(), expected, "{tenant_id}");
    }

    // Revoked (RFC 7009): refused once the introspection answer (1 s here) is older.
    let revoked = post_form(
        &app,
        Some("acme"),
        "/oauth/revoke",
        None,
        &[("token", &token)],
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        introspect(acme.key.clone(), token.clone()).await,
        json!({ "active": false })
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = get_with(&app, &read, Some(&token)).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&after).contains("error=\"invalid_token\""));
}

/// A loopback stand-in for the issuer's host: forwards the JWKS and introspection to Bulkhead,
/// counts JWKS requests, and can be switched off (every request then 503).
#[derive(Clone)]
struct Issuer {
    upstream: String,
    client: reqwest::Client,
    jwks_fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

async fn proxy_jwks(State(issuer): State<Issuer>) -> (StatusCode, String) {
    issuer.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if issuer.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    let url = format!("{}/.well-known/jwks.json", issuer.upstream);
    let body = issuer.client.get(url).send().await.unwrap();
    (StatusCode::OK, body.text().await.unwrap())
}

async fn proxy_introspect(
    State(issuer): State<Issuer>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    if issuer.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    let mut request = issuer
        .client
        .post(format!("{}/oauth/introspect", issuer.upstream))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(auth) = headers.get("authorization") {
        request = request.header("authorization", auth.clone());
    }
    let response = request.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.text().await.unwrap())
}

async fn serve_issuer(app: &TestApp) -> (Issuer, String) {
    let issuer = Issuer {
        upstream: app.url(""),
        client: app.client.clone(),
        jwks_fetches: Arc::new(AtomicUsize::new(0)),
        down: Arc::new(AtomicBool::new(false)),
    };
    let router = Router::new()
        .route("/.well-known/jwks.json", get(proxy_jwks))
        .route("/oauth/introspect", post(proxy_introspect))
        .with_state(issuer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (issuer, format!("http://{addr}"))
}

/// A token whose header names a `kid` the issuer never published (the signature is noise).
fn made_up_kid_token(n: usize) -> String {
    let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": format!("ed-made-up-{n}") });
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(&header),
        part(&json!({ "sub": "x" })),
        URL_SAFE_NO_PAD.encode([1u8; 64])
    )
}

#[tokio::test]
async fn keys_are_fetched_at_most_once_per_interval_and_kept_while_the_issuer_is_down() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let mcp_id = register_resource(&app, &acme, MCP).await;
    let acme_flow = flow(&app, &acme).await;
    let (issuer, issuer_base) = serve_issuer(&app).await;
    let server = settings(&app, &acme, &mcp_id, &issuer_base)
        .jwks_min_refresh(Duration::from_secs(2))
        .jwks_max_age(Duration::from_secs(2))
        .introspection_cache(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = serve_resource(&server).await;
    let read = format!("{base}/read");
    let token = resource_token(&app, &acme_flow, MCP, "sessions:read").await;

    let first = get_with(&app, &read, Some(&token)).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);

    // Past the interval, a burst of made-up kids (sequential and concurrent) costs the issuer
    // one fetch, not one per request; each is 401 invalid_token.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for n in 0..10 {
        let refused = get_with(&app, &read, Some(&made_up_kid_token(n))).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(challenge(&refused).contains("error=\"invalid_token\""));
    }
    let burst = (10..30).map(|n| {
        let (app, read) = (&app, &read);
        async move {
            get_with(app, read, Some(&made_up_kid_token(n)))
                .await
                .status()
        }
    });
    for status in futures::future::join_all(burst).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2);

    // The issuer goes down and the key set grows old: the refresh fails, and the last good set
    // (with the remembered introspection answer) still verifies.
    issuer.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let cached = get_with(&app, &read, Some(&token)).await;
    assert_eq!(cached.status(), StatusCode::OK);
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 3);
    let unknown = get_with(&app, &read, Some(&made_up_kid_token(99))).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let still = get_with(&app, &read, Some(&token)).await;
    assert_eq!(still.status(), StatusCode::OK);

    // A server that never fetched the keys fails closed: 503, retry later, no challenge.
    let cold = settings(&app, &acme, &mcp_id, &issuer_base)
        .build()
        .unwrap();
    let cold_base = serve_resource(&cold).await;
    let refused = get_with(&app, &format!("{cold_base}/read"), Some(&token)).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "5");
    assert!(refused.headers().get("www-authenticate").is_none());

    // Keys known but introspection unreachable and nothing remembered: 503 too.
    issuer.down.store(false, Ordering::SeqCst);
    let fresh = settings(&app, &acme, &mcp_id, &issuer_base)
        .build()
        .unwrap();
    let fresh_base = serve_resource(&fresh).await;
    let warm = get_with(&app, &format!("{fresh_base}/read"), Some(&token)).await;
    assert_eq!(warm.status(), StatusCode::OK);
    issuer.down.store(true, Ordering::SeqCst);
    let other_token = resource_token(&app, &acme_flow, MCP, "sessions:read").await;
    let unchecked = get_with(&app, &format!("{fresh_base}/read"), Some(&other_token)).await;
    assert_eq!(unchecked.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// A resource's token from `client_credentials`, narrowed by token exchange, is accepted by the
/// layer of that resource with the narrowed scopes and its actor, and refused by another
/// resource's layer (issue 20: exchange keeps the audience).
#[tokio::test]
async fn an_exchanged_resource_token_is_accepted_by_its_resource_only() {
    use crate::helpers::keys::agent;
    use crate::helpers::oauth::exchange;
    use crate::oauth_audiences::for_resource;

    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let mcp_id = register_resource(&app, &acme, MCP).await;
    let other_id = register_resource(&app, &acme, OTHER).await;
    let server = settings(&app, &acme, &mcp_id, &app.url(""))
        .build()
        .unwrap();
    let other = settings(&app, &acme, &other_id, &app.url(""))
        .resource(OTHER)
        .build()
        .unwrap();
    let (base, other_base) = (serve_resource(&server).await, serve_resource(&other).await);

    let owner = agent(&app, &acme, "owner", &["sessions:read", "sessions:write"]).await;
    let helper = agent(&app, &acme, "helper", &["sessions:read", "sessions:write"]).await;
    let subject = granted_token(for_resource(&app, "acme", &owner, MCP, None).await).await;
    // The client-credentials token itself passes its resource's layer.
    let direct = get_with(&app, &format!("{base}/write"), Some(&subject)).await;
    assert_eq!(direct.status(), StatusCode::OK);
    let narrowed = granted_token(
        exchange(
            &app,
            "acme",
            &subject,
            &helper,
            &[("scope", "sessions:read")],
        )
        .await,
    )
    .await;

    let passed = get_with(&app, &format!("{base}/read"), Some(&narrowed)).await;
    assert_eq!(passed.status(), StatusCode::OK);
    let seen: Value = passed.json().await.unwrap();
    let sub = crate::helpers::oauth::claims(&subject)["sub"].clone();
    assert_eq!(seen["subject"], sub);
    assert_eq!(seen["scopes"], json!(["sessions:read"]));
    // Narrowed: the scope given up is gone.
    let short = get_with(&app, &format!("{base}/write"), Some(&narrowed)).await;
    assert_eq!(short.status(), StatusCode::FORBIDDEN);
    // Another resource of the same tenant refuses it, and the subject token too.
    for token in [&narrowed, &subject] {
        let elsewhere = get_with(&app, &format!("{other_base}/read"), Some(token)).await;
        assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
        assert!(challenge(&elsewhere).contains("error=\"invalid_token\""));
    }
}

#[tokio::test]
async fn a_token_bound_to_a_keys_networks_passes_only_from_them() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let mcp_id = register_resource(&app, &acme, MCP).await;
    let key = crate::helpers::keys::agent_with(
        &app,
        &acme,
        json!({
            "scopes": ["sessions:read"],
            "principal": "agent-1",
            "allowed_ips": ["127.0.0.0/8"],
        }),
    )
    .await;
    let token = granted_token(
        token_request(
            &app,
            "acme",
            Some(key.basic()),
            &[
                ("grant_type", "client_credentials"),
                ("resource", MCP),
                ("scope", "sessions:read"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(
        crate::helpers::oauth::claims(&token)["allowed_networks"],
        json!([["127.0.0.0/8"]])
    );
    // From an address other than 127.0.0.1 (loopback too, so nothing leaves the host).
    let elsewhere = reqwest::Client::builder()
        .no_proxy()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let from = |client: &reqwest::Client, url: String| {
        let request = client.get(url).bearer_auth(&token);
        async move { request.send().await.unwrap().status() }
    };

    // A layer that cannot tell the caller's address refuses the token.
    let blind = settings(&app, &acme, &mcp_id, &app.url(""))
        .introspection_cache(Duration::from_secs(1))
        .build()
        .unwrap();
    let base = serve_resource(&blind).await;
    assert_eq!(
        from(&app.client, format!("{base}/read")).await,
        StatusCode::UNAUTHORIZED
    );

    // One that can admits it from inside the key's networks, from both addresses.
    let seeing = settings(&app, &acme, &mcp_id, &app.url(""))
        .introspection_cache(Duration::from_secs(1))
        .peer_address(connected_peer)
        .build()
        .unwrap();
    let base = serve_resource(&seeing).await;
    let read = format!("{base}/read");
    assert_eq!(from(&app.client, read.clone()).await, StatusCode::OK);
    assert_eq!(from(&elsewhere, read.clone()).await, StatusCode::OK);

    // The key narrowed to 127.0.0.2: introspection reports the key's allowlist as it is now,
    // so once the remembered answer is older, 127.0.0.1 is refused and 127.0.0.2 still passes.
    let narrowed = call_as(
        &app,
        &acme,
        Method::PATCH,
        &format!("/v1/api-keys/{}", key.id),
        Some(json!({ "allowed_ips": ["127.0.0.2/32"] })),
    )
    .await;
    assert_eq!(narrowed.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        from(&app.client, read.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(from(&elsewhere, read).await, StatusCode::OK);
}
