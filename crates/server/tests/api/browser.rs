//! A real browser through the authorization endpoint's pages (issue 20): Playwright driving the
//! system's Chromium (`tests/clients/browser_oauth.py`) signs in, unticks a scope, approves, and
//! follows the return page to a loopback redirect URI this test serves; the test exchanges each
//! code and checks what the browser saw (headers, cookies, console, framing, axe-core).
//!
//! The tenant is reached as `acme.localhost`: browsers treat `http://*.localhost` as a secure
//! context, so Chromium stores the pages' `__Host-` Secure cookie over plain loopback HTTP
//! without any flag that weakens it (no certificate bypass, no "treat as secure" override). The
//! app is configured with the base domain `localhost` (the server's default) for that.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bulkhead_server::config::AppConfig;
use bulkhead_test_support::receiver::{Receiver, Reply};
use bulkhead_test_support::{spawn_app_with, AppOptions, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::clients::BrowserTools;
use crate::helpers::users::PASSWORD;
use crate::helpers::{call, call_as};

const VARIANTS: [&str; 3] = ["pointer", "keyboard", "no_js"];

/// The user who signs in for `flow`: one each, so no flow finds another's session or consent.
fn email(flow: &str) -> String {
    format!("{}@acme.example", flow.replace('_', "-"))
}

fn on_localhost(config: &mut AppConfig) {
    config.base_domain = "localhost".into();
}

/// `path` on the tenant's subdomain as the browser reaches it.
fn page_url(app: &TestApp, path: &str) -> String {
    format!("http://acme.localhost:{}{path}", app.addr.port())
}

fn verifier(variant: &str) -> String {
    format!("browser-test-verifier-{variant}-{}", "x".repeat(43))
}

fn authorize_url(app: &TestApp, client_id: &str, redirect: &str, state: &str) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier(state).as_bytes()));
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "sessions:read sessions:write audit:read")
        .append_pair("state", state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    page_url(app, &format!("/oauth/authorize?{query}"))
}

/// The code exchange at the tenant's token endpoint (reqwest reaches `127.0.0.1` with the
/// tenant's host name, as the browser's resolver maps it).
async fn exchange(
    app: &TestApp,
    client_id: &str,
    redirect: &str,
    code: &str,
    state: &str,
) -> Value {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect)
        .append_pair("client_id", client_id)
        .append_pair("code_verifier", &verifier(state))
        .finish();
    let response = app
        .client
        .post(app.url("/oauth/token"))
        .header("host", format!("acme.localhost:{}", app.addr.port()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "exchange for {state}");
    response.json().await.unwrap()
}

fn scopes(text: &str) -> BTreeSet<&str> {
    text.split(' ').filter(|s| !s.is_empty()).collect()
}

fn texts(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["text"]
                .as_str()
                .unwrap_or_else(|| m.as_str().unwrap())
                .to_owned()
        })
        .collect()
}

/// What every flow's browser saw: the pages' clickjacking headers and cookies, a clean console.
fn assert_pages_seen(variant: &str, flow: &Value, port: u16) {
    let console = &flow["console"];
    assert!(
        console.as_array().unwrap().is_empty(),
        "{variant}: the console reported {console}"
    );
    let origin = format!("http://acme.localhost:{port}/");
    let pages: Vec<&Value> = flow["documents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["url"].as_str().unwrap().starts_with(&origin))
        .collect();
    // The login page, the consent page (answer to the login POST), the return page.
    assert!(pages.len() >= 3, "{variant}: {pages:?}");
    let mut cookies_set = Vec::new();
    for page in &pages {
        let csp = page["content-security-policy"].as_str().unwrap_or_default();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
            "{variant}: {page}"
        );
        assert_eq!(page["x-frame-options"], "DENY", "{variant}: {page}");
        for cookie in page["set-cookie"].as_array().unwrap() {
            let cookie = cookie.as_str().unwrap();
            assert!(cookie.starts_with("__Host-bulkhead-oauth="), "{cookie}");
            for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
                assert!(cookie.split("; ").any(|a| a == attribute), "{cookie}");
            }
            assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
            let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
            cookies_set.push(value.to_owned());
        }
    }
    // The login's answer (the second page) set the signed-in session's cookie.
    assert!(
        !pages[1]["set-cookie"].as_array().unwrap().is_empty(),
        "{variant}: the login set no session cookie"
    );
    // What the browser kept: one host-only `__Host-` cookie, as the server set it.
    let jar = flow["cookies"].as_array().unwrap();
    assert_eq!(jar.len(), 1, "{variant}: {jar:?}");
    let cookie = &jar[0];
    assert_eq!(cookie["name"], "__Host-bulkhead-oauth");
    assert_eq!(cookie["domain"], "acme.localhost");
    assert_eq!(cookie["path"], "/");
    assert_eq!(cookie["secure"], true);
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["sameSite"], "Lax");
    // No fixation: a cookie set before the login is not the session after it.
    let kept = cookie["value"].as_str().unwrap();
    assert_eq!(
        cookies_set.last().map(String::as_str),
        Some(kept),
        "{variant}"
    );
    assert!(
        cookies_set[..cookies_set.len() - 1]
            .iter()
            .all(|v| v != kept),
        "{variant}: {cookies_set:?}"
    );
}

/// Playwright drives Debian's Chromium through login and consent three times (pointer,
/// keyboard only, JavaScript off), each time unticking `sessions:write`; every code is exchanged
/// and its token holds exactly the narrowed scopes. Also: no CSP violation in the console (and a
/// canary proves the console watch sees one), the pages refuse to be framed, the cookie is
/// `__Host-` Secure HttpOnly SameSite=Lax in the browser's own jar, focus is visible, and
/// axe-core finds no serious or critical violation on the login, consent and error pages.
#[tokio::test]
async fn a_real_browser_signs_in_and_consents_with_a_narrowed_scope() {
    let test = "a_real_browser_signs_in_and_consents_with_a_narrowed_scope";
    let Some(tools) = BrowserTools::find(test) else {
        return;
    };
    let app = spawn_app_with(AppOptions {
        configure: Some(on_localhost),
        ..AppOptions::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    for flow in VARIANTS.iter().chain(&["axe"]) {
        let user = call_as(
            &app,
            &acme,
            Method::POST,
            "/v1/users",
            Some(json!({ "email": email(flow), "password": PASSWORD })),
        )
        .await;
        assert_eq!(user.status(), StatusCode::CREATED);
        let user: Value = user.json().await.unwrap();
        let assigned = call_as(
            &app,
            &acme,
            Method::POST,
            "/v1/role-assignments",
            Some(json!({ "role": "admin", "user_id": user["id"] })),
        )
        .await;
        assert_eq!(assigned.status(), StatusCode::CREATED);
    }
    let client = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/oauth-clients",
        Some(json!({
            "name": "Browser test client",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read", "sessions:write", "audit:read"],
        })),
    )
    .await;
    assert_eq!(client.status(), StatusCode::CREATED);
    let client: Value = client.json().await.unwrap();
    let client_id = client["id"].as_str().unwrap();

    // The redirect URI: a loopback receiver on a port of its own (RFC 8252: any port).
    let receiver = Receiver::start(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, None).await;
    receiver.set_default(Reply::Status(
        200,
        vec![("content-type".into(), "text/html; charset=utf-8".into())],
        "<!DOCTYPE html><html lang=\"en\"><title>Signed in</title><main><h1>Signed in</h1>\
         </main></html>"
            .into(),
    ));
    let redirect = format!("http://127.0.0.1:{}/callback", receiver.addr.port());
    let flows: serde_json::Map<String, Value> = VARIANTS
        .iter()
        .map(|v| {
            let url = authorize_url(&app, client_id, &redirect, v);
            ((*v).to_owned(), json!({ "url": url, "email": email(v) }))
        })
        .collect();
    let argument = json!({
        "chromium": tools.chromium,
        "axe_script": tools.axe,
        "screenshots": concat!(env!("CARGO_TARGET_TMPDIR"), "/browser-oauth"),
        "password": PASSWORD,
        "untick": "sessions:write",
        "callback": redirect,
        "flows": flows,
        "axe": { "url": authorize_url(&app, client_id, &redirect, "axe"), "email": email("axe") },
        "error_url": page_url(&app, "/oauth/authorize?response_type=code&client_id=oac_unknown"),
    });
    let report = tools
        .run("browser_oauth.py", &argument, Duration::from_secs(150))
        .await;
    let saved = concat!(env!("CARGO_TARGET_TMPDIR"), "/browser-oauth/report.json");
    std::fs::write(saved, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    eprintln!("Chromium {}: report in {saved}", report["browser"]);

    // Each flow reached the redirect URI with a code, its state and the issuer; the code buys a
    // token of exactly the scopes left ticked.
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    let arrived = receiver.requests();
    for variant in VARIANTS {
        let flow = &report["flows"][variant];
        assert!(
            flow["ended_at"].as_str().unwrap().starts_with(&redirect),
            "{variant}: {flow}"
        );
        let request = arrived
            .iter()
            .filter_map(|r| url::Url::parse(&format!("http://127.0.0.1{}", r.path)).ok())
            .find(|url| {
                url.path() == "/callback"
                    && url.query_pairs().any(|(k, v)| k == "state" && v == variant)
            })
            .unwrap_or_else(|| panic!("{variant}: the redirect URI was not reached"));
        let param = |name: &str| {
            request
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(param("iss").as_deref(), Some(issuer.as_str()), "{variant}");
        assert!(param("error").is_none(), "{variant}: {request}");
        let code = param("code").unwrap();
        let tokens = exchange(&app, client_id, &redirect, &code, variant).await;
        assert_eq!(
            scopes(tokens["scope"].as_str().unwrap()),
            BTreeSet::from(["audit:read", "sessions:read"]),
            "{variant}: {tokens}"
        );
        let access = tokens["access_token"].as_str().unwrap();
        let read = call(&app, "acme", access, Method::GET, "/v1/sessions", None).await;
        assert_eq!(read.status(), StatusCode::OK, "{variant}");
        let write = call(
            &app,
            "acme",
            access,
            Method::POST,
            "/v1/sessions",
            Some(json!({ "agent_id": "a", "title": "t" })),
        )
        .await;
        assert_eq!(write.status(), StatusCode::FORBIDDEN, "{variant}");
        assert_pages_seen(variant, flow, app.addr.port());
    }

    // Keyboard only: every control was reached by Tab and showed its focus outline.
    let notes = &report["flows"]["keyboard"]["notes"];
    for control in ["sign_in_outline", "checkbox_outline", "allow_outline"] {
        assert_ne!(notes[control], "none", "{control}: {notes}");
    }

    // The console watch does see a violation (an inline style injected into a page).
    let canary = texts(&report["csp_canary"]);
    assert!(
        canary.iter().any(|t| t.contains("Content Security Policy")),
        "{canary:?}"
    );

    // Another origin cannot frame the login page.
    let framing = &report["framing"];
    assert_eq!(framing["login_form_shown"], false, "{framing}");
    assert!(
        texts(&framing["console"])
            .iter()
            .any(|t| t.contains("frame-ancestors")),
        "{framing}"
    );

    // axe-core: nothing serious or critical on any page (lesser findings are printed); on the
    // canary page it does find the image without a text alternative.
    let axe = report["axe"].as_object().unwrap();
    let canary = axe["canary"].as_array().unwrap();
    assert!(canary.iter().any(|v| v["id"] == "image-alt"), "{canary:?}");
    for page in ["login", "consent", "error"] {
        let violations = &axe[page];
        let violations = violations.as_array().unwrap();
        if !violations.is_empty() {
            eprintln!("axe-core on the {page} page: {violations:?}");
        }
        let grave: Vec<&Value> = violations
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(grave.is_empty(), "axe-core on the {page} page: {grave:?}");
    }
}
