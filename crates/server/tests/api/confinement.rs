//! Confinement as a property of the route table (issue 27 item 4): every credential-needing
//! route declares whether prefix-confined and delegated credentials may call it, and the table
//! enforces the declaration before the handler runs.

use bulkhead_server::http::authz::{Confinement, RouteAccess, RouteSpec};
use bulkhead_test_support::spawn_app;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::oauth::admin_and_delegated_tokens;
use crate::helpers::{call, concrete_path, problem};

const CONFINED: &str = "https://bulkhead.dev/problems/confined-credential";

async fn is_confined_refusal(response: Response) -> bool {
    if response.status() != StatusCode::FORBIDDEN {
        return false;
    }
    let (_, body) = problem(response).await;
    body["type"] == CONFINED
}

#[tokio::test]
async fn every_route_declares_and_enforces_what_confined_credentials_may_call() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let (_root, delegated, prefixed) = admin_and_delegated_tokens(&app, &acme).await;
    let specs: Vec<RouteSpec> = bulkhead_server::http::app::route_table()
        .specs()
        .cloned()
        .collect();
    let mut walked = 0;
    for spec in &specs {
        if matches!(
            spec.access,
            RouteAccess::Public | RouteAccess::SelfAuthenticating
        ) {
            continue;
        }
        walked += 1;
        let what = format!("{} {}", spec.method, spec.path);
        assert_ne!(
            spec.confinement,
            Confinement::Undeclared,
            "{what} does not declare whether confined credentials may call it"
        );
        let path = concrete_path(spec);
        let as_prefixed = call(
            &app,
            "acme",
            &prefixed,
            spec.method.clone(),
            &path,
            Some(json!({})),
        )
        .await;
        let as_delegated = call(
            &app,
            "acme",
            &delegated,
            spec.method.clone(),
            &path,
            Some(json!({})),
        )
        .await;
        match spec.confinement {
            Confinement::Undeclared | Confinement::Refused => {
                assert!(is_confined_refusal(as_prefixed).await, "{what}: prefixed");
                assert!(is_confined_refusal(as_delegated).await, "{what}: delegated");
            }
            Confinement::Delegated(_) => {
                assert!(is_confined_refusal(as_prefixed).await, "{what}: prefixed");
                assert!(
                    !is_confined_refusal(as_delegated).await,
                    "{what}: delegated refused"
                );
            }
            // The handler decides (and may refuse for its own documented reasons).
            Confinement::Admitted(rule) => assert!(!rule.is_empty(), "{what}: no rule"),
        }
    }
    assert!(walked > 40, "the table lists the whole API");
}

/// The review's reproduction: a token exchanged with `resource_prefix=marketing` created a
/// webhook endpoint subscribed to `session.*`, a tool and a user, and listed other namespaces'
/// session ids through the audit log.
#[tokio::test]
async fn a_prefix_confined_token_creates_nothing_lasting_and_reads_no_audit() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let (root, delegated, prefixed) = admin_and_delegated_tokens(&app, &acme).await;
    // A session outside the prefix, whose creation is in the audit log.
    let outside = call(
        &app,
        "acme",
        &root,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "payroll-bot", "namespace": "finance/payroll" })),
    )
    .await;
    assert_eq!(outside.status(), StatusCode::CREATED);
    let outside_id = outside.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let creations = [
        (
            "/v1/webhooks/endpoints",
            json!({ "url": "https://hooks.example/in", "event_types": ["session.*"] }),
        ),
        (
            "/v1/tools",
            json!({
                "name": "weather",
                "description": "Looks up the weather.",
                "input_schema": { "type": "object" },
                "endpoint_url": "https://tools.example/run",
            }),
        ),
        (
            "/v1/users",
            json!({ "email": "mallory@example.com", "password": "correct horse battery staple" }),
        ),
        ("/v1/agents", json!({ "name": "stray-agent" })),
    ];
    for token in [&prefixed, &delegated] {
        for (path, body) in &creations {
            let response = call(&app, "acme", token, Method::POST, path, Some(body.clone())).await;
            assert!(is_confined_refusal(response).await, "POST {path}");
        }
    }
    let audit = call(
        &app,
        "acme",
        &prefixed,
        Method::GET,
        "/v1/audit/events?action=session.create",
        None,
    )
    .await;
    let status = audit.status();
    let text = audit.text().await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(!text.contains(&outside_id));
    // The prefixed token still works inside its prefix, and its session list holds only that.
    let inside = call(
        &app,
        "acme",
        &prefixed,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "campaign-bot", "namespace": "marketing/spring" })),
    )
    .await;
    assert_eq!(inside.status(), StatusCode::CREATED);
    let list = call(&app, "acme", &prefixed, Method::GET, "/v1/sessions", None).await;
    assert_eq!(list.status(), StatusCode::OK);
    assert!(!list.text().await.unwrap().contains(&outside_id));
    // An unconfined, undelegated credential is untouched by all of this.
    let made = call(
        &app,
        "acme",
        &root,
        Method::POST,
        "/v1/agents",
        Some(json!({ "name": "allowed-agent" })),
    )
    .await;
    assert_eq!(made.status(), StatusCode::CREATED);
}
