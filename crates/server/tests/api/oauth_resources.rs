//! Protected resources (issue 20, RFC 8707 and RFC 9728): `/v1/oauth-resources`, their
//! metadata, and the challenge of Bulkhead's own 401s that names its metadata.

use bulkhead_test_support::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{audit_events, call_as};

#[tokio::test]
async fn a_tenant_registers_protected_resources_and_their_metadata_is_served() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let issuer = app.state.config().tokens.issuer.clone();
    let body = json!({
        "identifier": "https://mcp.acme.example/mcp",
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
    assert_eq!(created["identifier"], "https://mcp.acme.example/mcp");
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
        "http://mcp.acme.example/mcp",
        "https://mcp.acme.example/mcp?x=1",
        "https://mcp.acme.example/mcp#f",
        "HTTPS://mcp.acme.example/mcp",
        "https://u@mcp.acme.example/mcp",
        "mcp.acme.example",
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
    let loopback = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/oauth-resources",
        Some(json!({
            "identifier": "http://127.0.0.1:8000/mcp",
            "name": "Local",
            "scopes": ["sessions:read"],
        })),
    )
    .await;
    assert_eq!(loopback.status(), StatusCode::CREATED);

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
    assert_eq!(metadata["resource"], "https://mcp.acme.example/mcp");
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
    let issuer = app.state.config().tokens.issuer.clone();
    assert_eq!(
        url,
        format!("{issuer}/.well-known/oauth-protected-resource")
    );
    let metadata: Value = app
        .client
        .get(app.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["resource"], issuer);
    assert_eq!(metadata["authorization_servers"], json!([issuer]));
    let server: Value = app
        .client
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(server["issuer"], issuer);
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
                "identifier": format!("https://r{i}.acme.example/"),
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
            "identifier": "https://one-more.acme.example/",
            "name": "r",
            "scopes": ["sessions:read"],
        })),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
}
