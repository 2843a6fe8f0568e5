//! The official MCP Python SDK (`mcp`, pinned in `.ci/run`) finds Bulkhead from a protected
//! resource's 401 (RFC 9728 → RFC 8414), identifies itself by a client ID metadata document
//! served on loopback (and, in a second run, by dynamic registration), completes PKCE while the
//! test's browser signs in and consents, and calls a tool on the resource with the token.
//!
//! The resource is a small MCP server the script starts on loopback (the SDK's own `MCPServer`),
//! registered in Bulkhead as `https://acme.bulkhead.test/mcp/search`; it verifies tokens from
//! Bulkhead's JWKS. The script's httpx transport sends every `https` URL the SDK believes in to
//! its loopback listener over plain HTTP (see `tests/clients/mcp_sdk_client.py` for why).
//! Python is `BULKHEAD_TEST_PYTHON`; skipped, loudly, without the SDK, except in CI.

use std::net::IpAddr;

use bulkhead_test_support::receiver::{NamedReceivers, Reply};
use bulkhead_test_support::{spawn_app_with, AppOptions, TestApp, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::call_as;
use crate::helpers::clients::{python, python_has, require, script};
use crate::oauth_code::{form_fields, returned, sign_in, user_with_role, Browser};

const REDIRECT: &str = "http://127.0.0.1:61010/callback";

/// Runs the SDK client once; `document`: the client ID metadata document's URL, else the SDK
/// registers. Returns its final JSON line.
async fn run_sdk(
    app: &TestApp,
    acme: &TestTenant,
    python: &str,
    resource_id: &str,
    document: Option<&str>,
) -> Value {
    // The tenant's own issuer: the SDK finds it in the resource's metadata and follows the
    // endpoints its metadata names, all on that origin.
    let issuer = crate::helpers::oauth::tenant_issuer(app, "acme");
    let config = json!({
        "bulkhead_port": app.addr.port(),
        "issuer": issuer,
        "resource": format!("{issuer}/mcp/search"),
        "resource_metadata": format!(
            "{issuer}/.well-known/oauth-protected-resource/{resource_id}"
        ),
        "jwks_url": app.url("/.well-known/jwks.json"),
        "tenant_id": acme.id.to_string(),
        "redirect_uri": REDIRECT,
        "client_metadata_url": document,
    });
    let mut child = tokio::process::Command::new(python)
        .arg(script("mcp_sdk_client.py"))
        .arg(config.to_string())
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .kill_on_drop(true)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let limit = std::time::Duration::from_secs(60);
    let first = tokio::time::timeout(limit, stdout.next_line())
        .await
        .expect("the SDK asked for no authorization in time")
        .unwrap()
        .expect("the SDK ended before asking for authorization");
    let asked: Value = serde_json::from_str(&first).unwrap();
    let authorize = url::Url::parse(asked["authorize"].as_str().unwrap()).unwrap();
    let query: Vec<(String, String)> = authorize
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let named = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(named("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(named("resource"), Some(format!("{issuer}/mcp/search")));
    assert_eq!(
        authorize[..url::Position::AfterPath],
        format!("{issuer}/oauth/authorize"),
        "the SDK follows the tenant's metadata to the tenant's authorization endpoint"
    );
    if let Some(document) = document {
        assert_eq!(named("client_id").as_deref(), Some(document));
    }
    // The browser step, on the tenant's host.
    let path = format!("/oauth/authorize?{}", authorize.query().unwrap());
    let mut browser = Browser::new(app, "acme");
    let consent = sign_in(&mut browser, &path, "ada@acme.example").await;
    assert!(consent.contains("MCP SDK test client") || consent.contains("Research agent"));
    let mut fields = form_fields(&consent);
    fields.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &fields).await;
    let (href, _) = returned(&answer.text().await.unwrap());
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{href}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let last = tokio::time::timeout(limit, stdout.next_line())
        .await
        .expect("the SDK did not finish in time")
        .unwrap()
        .expect("the SDK ended without an answer");
    let status = child.wait().await.unwrap();
    assert!(status.success(), "the SDK client failed");
    serde_json::from_str(&last).unwrap()
}

#[tokio::test]
async fn the_mcp_sdk_discovers_bulkhead_and_calls_a_protected_tool() {
    let python = python();
    let mut missing = Vec::new();
    if !python_has(&python, "mcp, httpx2, jwt, uvicorn") {
        missing.push(format!("Python package mcp in {python}"));
    }
    if require(
        "the_mcp_sdk_discovers_bulkhead_and_calls_a_protected_tool",
        &missing,
    )
    .is_none()
    {
        return;
    }
    let receivers = NamedReceivers::new();
    let app = spawn_app_with(AppOptions {
        document_client: Some(receivers.egress_client(&receivers.egress_config())),
        ..AppOptions::default()
    })
    .await;
    let docs = receivers
        .start("docs.example", IpAddr::from([127, 0, 0, 1]))
        .await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let settings = call_as(
        &app,
        &acme,
        Method::PUT,
        "/v1/oauth-settings",
        Some(json!({
            "dynamic_registration": true,
            "client_id_metadata_documents": true,
            "dynamic_client_scopes": ["sessions:read"],
        })),
    )
    .await;
    assert_eq!(settings.status(), StatusCode::OK);
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    let resource = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/oauth-resources",
        Some(json!({
            "identifier": format!("{issuer}/mcp/search"),
            "name": "Search tools",
            "scopes": ["sessions:read"],
        })),
    )
    .await;
    assert_eq!(resource.status(), StatusCode::CREATED);
    let resource: Value = resource.json().await.unwrap();
    let resource_id = resource["id"].as_str().unwrap();

    // By a client ID metadata document served on loopback.
    let document = format!("https://docs.example:{}/mcp-client.json", docs.addr.port());
    docs.set_route(
        "/mcp-client.json",
        Reply::Status(
            200,
            vec![("content-type".into(), "application/json".into())],
            json!({
                "client_id": document,
                "client_name": "Research agent",
                "redirect_uris": ["http://127.0.0.1/callback"],
                "token_endpoint_auth_method": "none",
            })
            .to_string(),
        ),
    );
    let by_document = run_sdk(&app, &acme, &python, resource_id, Some(&document)).await;
    assert_eq!(by_document["tool"], "results for bulkhead");
    assert_eq!(by_document["is_error"], false);
    assert_eq!(by_document["client_id"], document.as_str());
    assert_eq!(by_document["scope"], "sessions:read");
    assert_eq!(docs.requests().len(), 1);

    // By dynamic registration.
    let registered = run_sdk(&app, &acme, &python, resource_id, None).await;
    assert_eq!(registered["tool"], "results for bulkhead");
    assert!(registered["client_id"]
        .as_str()
        .unwrap()
        .starts_with("oac_"));
    let clients = crate::helpers::get_ok_json(&app, &acme, "/v1/oauth-clients").await;
    let kinds: Vec<&str> = clients["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["registered_by"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"dynamic") && kinds.contains(&"metadata_document"));
}
