//! Confinement as a property of the route table (issue 27 item 4): every credential-needing
//! route declares whether prefix-confined and delegated credentials may call it, and the table
//! enforces the declaration before the handler runs.

use bulkhead_server::http::authz::{Confinement, RouteAccess, RouteSpec};
use bulkhead_test_support::{spawn_app, TestApp, TestTenant};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::problem;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
const CONFINED: &str = "https://bulkhead.dev/problems/confined-credential";

async fn form(app: &TestApp, slug: &str, pairs: &[(&str, &str)]) -> Value {
    let mut body = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        body.append_pair(k, v);
    }
    let response = app
        .client
        .post(app.tenant_url(slug, "/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.finish())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// A token of the tenant's admin key (every permission), a delegated token exchanged from it
/// (every permission, no prefix), and a delegated token confined to `marketing`.
pub(crate) async fn tokens(app: &TestApp, tenant: &TestTenant) -> (String, String, String) {
    let root = form(
        app,
        &tenant.slug,
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", &tenant.key),
        ],
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let exchange = |extra: Vec<(&'static str, &'static str)>| {
        let root = root.clone();
        async move {
            let mut pairs = vec![
                ("grant_type", EXCHANGE),
                ("subject_token", root.as_str()),
                ("subject_token_type", AT),
                ("audience", "helper-agent"),
            ];
            pairs.extend(extra);
            form(app, &tenant.slug, &pairs).await["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let delegated = exchange(vec![]).await;
    let prefixed = exchange(vec![("resource_prefix", "marketing")]).await;
    (root, delegated, prefixed)
}

async fn call(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut request = app
        .client
        .request(method, app.tenant_url("acme", path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

fn concrete(spec: &RouteSpec) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in spec.path.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push_str("x0");
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

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
    let (_root, delegated, prefixed) = tokens(&app, &acme).await;
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
        let path = concrete(spec);
        let as_prefixed = call(&app, &prefixed, spec.method.clone(), &path, Some(json!({}))).await;
        let as_delegated = call(
            &app,
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
    let (root, delegated, prefixed) = tokens(&app, &acme).await;
    // A session outside the prefix, whose creation is in the audit log.
    let outside = call(
        &app,
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
            let response = call(&app, token, Method::POST, path, Some(body.clone())).await;
            assert!(is_confined_refusal(response).await, "POST {path}");
        }
    }
    let audit = call(
        &app,
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
        &prefixed,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "campaign-bot", "namespace": "marketing/spring" })),
    )
    .await;
    assert_eq!(inside.status(), StatusCode::CREATED);
    let list = call(&app, &prefixed, Method::GET, "/v1/sessions", None).await;
    assert_eq!(list.status(), StatusCode::OK);
    assert!(!list.text().await.unwrap().contains(&outside_id));
    // An unconfined, undelegated credential is untouched by all of this.
    let made = call(
        &app,
        &root,
        Method::POST,
        "/v1/agents",
        Some(json!({ "name": "allowed-agent" })),
    )
    .await;
    assert_eq!(made.status(), StatusCode::CREATED);
}
