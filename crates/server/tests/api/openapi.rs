//! The OpenAPI document against the routes the app serves: no served route missing from the
//! document, no documented operation the app does not serve, and the route list itself proven
//! against the router over HTTP.

use std::collections::BTreeSet;

use axum::http::Method;
use bulkhead_server::http::routes::served_routes;
use bulkhead_test_support::spawn_app;
use serde_json::Value;

/// Operations anyone may call without a credential.
const PUBLIC: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/.well-known/openid-configuration"),
    ("GET", "/.well-known/oauth-protected-resource"),
    ("GET", "/.well-known/oauth-protected-resource/{id}"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/bulkhead-audit-key"),
    ("POST", "/v1/auth/login"),
    ("GET", "/oauth/authorize"),
    ("POST", "/oauth/authorize"),
    ("POST", "/oauth/authorize/login"),
    ("POST", "/oauth/register"),
    ("GET", "/oauth/style.css"),
];

/// Operations no request can make fail with a client error: no parameters, no body, no
/// credential and no rate limit in front (405 is the path's answer, not the operation's).
const NO_CLIENT_ERROR: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/.well-known/bulkhead-audit-key"),
    ("GET", "/oauth/style.css"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn document() -> Value {
    serde_json::to_value(bulkhead_server::http::routes::openapi::openapi()).unwrap()
}

/// Every (METHOD, path) the document names.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn served() -> BTreeSet<(String, String)> {
    served_routes()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_owned(), path.to_owned()))
        .collect()
}

#[test]
fn every_served_route_is_documented_and_nothing_else() {
    let doc = document();
    let documented = documented(&doc);
    let served = served();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "served but not in /openapi.json: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in /openapi.json but not served: {extra:?}"
    );
    assert_eq!(
        served.len(),
        served_routes().len(),
        "served_routes() lists a route twice"
    );
}

#[test]
fn every_operation_documents_refusals_and_security() {
    let doc = document();
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..4]), Some("3.1."));
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    for (method, path) in documented(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            NO_CLIENT_ERROR.contains(&(method.as_str(), path.as_str()))
                || responses.keys().any(|status| status.starts_with('4')),
            "{method} {path} documents no 4xx answer"
        );
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{method} {path} documents no success"
        );
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let content = response["content"].as_object();
                assert!(
                    content.is_some_and(|c| !c.is_empty()),
                    "{method} {path} {status} has no body schema"
                );
            }
        }
        if let Some(body) = op["requestBody"]["content"].as_object() {
            for (media, content) in body {
                let nullable = content["schema"]["oneOf"]
                    .as_array()
                    .is_some_and(|items| items.iter().any(|i| i["type"] == "null"));
                assert!(
                    !nullable,
                    "{method} {path}: a {media} body of JSON null is not a body"
                );
            }
        }
        let public = PUBLIC.contains(&(method.as_str(), path.as_str()));
        let security = op["security"].as_array();
        if public {
            assert!(
                security.is_none_or(|s| s.is_empty()),
                "{method} {path} is public but names a security requirement"
            );
            continue;
        }
        let security = security.unwrap_or_else(|| panic!("{method} {path}: no security"));
        assert!(!security.is_empty(), "{method} {path}: empty security");
        for requirement in security {
            for name in requirement.as_object().expect("requirement").keys() {
                assert!(
                    schemes.contains_key(name),
                    "{method} {path}: unknown scheme {name}"
                );
            }
        }
        // OpenID Connect's userinfo is the one credential route outside `/v1`; it has no body.
        let userinfo = path == "/oauth/userinfo";
        if path.starts_with("/v1/") || userinfo {
            assert!(
                security.iter().all(|r| r.get("bearer").is_some()),
                "{method} {path}: the tenant API needs the bearer credential"
            );
            for status in ["401", "403", "429"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: no {status}"
                );
            }
        }
        if path.starts_with("/oauth/") && !userinfo {
            let body = &op["requestBody"]["content"];
            assert!(
                body.get("application/x-www-form-urlencoded").is_some(),
                "{method} {path}: OAuth takes a form body"
            );
        }
    }
    // Problem details are RFC 9457's members.
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for member in ["type", "title", "status", "detail"] {
        assert!(problem.get(member).is_some(), "Problem lacks `{member}`");
    }
}

#[test]
fn every_reference_resolves() {
    fn walk(value: &Value, doc: &Value, bad: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    let pointer = target.strip_prefix('#').unwrap_or(target);
                    if doc.pointer(pointer).is_none() {
                        bad.push(target.clone());
                    }
                }
                map.values().for_each(|v| walk(v, doc, bad));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, doc, bad)),
            _ => {}
        }
    }
    let doc = document();
    let mut bad = Vec::new();
    walk(&doc, &doc, &mut bad);
    assert!(bad.is_empty(), "dangling references: {bad:?}");
}

/// Whether an answer means "no such route": the router's fallback (404 `not-found` before any
/// middleware or handler ran) or 405.
async fn route_missing(response: reqwest::Response) -> bool {
    match response.status().as_u16() {
        405 => true,
        404 => {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            body["type"] == "https://bulkhead.dev/problems/not-found"
        }
        _ => false,
    }
}

/// The route list is the router: every listed (method, path) is served, every other method on a
/// listed path is 405, and unlisted paths are 404. Requests carry no credential, so every `/v1`
/// route answers 401 from the resolver (which runs only for matched routes) and no handler can
/// answer a 404 of its own.
#[tokio::test]
async fn served_routes_is_what_the_router_serves() {
    let app = spawn_app().await;
    let client = &app.client;
    let served = served();
    for (method, path) in &served {
        let url = app.url(&path.replace("{id}", "x"));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = client.request(method.clone(), &url).send().await.unwrap();
        let status = response.status();
        assert!(
            !route_missing(response).await,
            "{method} {path} is listed but not served ({status})"
        );
    }
    let paths: BTreeSet<&String> = served.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if served.contains(&(method.to_owned(), path.clone())) {
                continue;
            }
            let url = app.url(&path.replace("{id}", "x"));
            let response = client
                .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                405,
                "{method} {path} is not listed but is served"
            );
        }
    }
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/openapi.yaml"),
        ("GET", "/v1"),
        ("GET", "/v1/nope"),
        ("POST", "/v1/sessions/x/extra"),
        ("GET", "/v1/api-keys/x/y"),
        ("GET", "/oauth/authorize/nope"),
        ("GET", "/.well-known/openid-configuration/nope"),
        ("GET", "/v2/sessions"),
    ] {
        let response = client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(path),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            404,
            "{method} {path} is not listed but is served"
        );
        assert!(route_missing(response).await, "{method} {path}");
    }
}

/// The served document is the one [`bulkhead_server::http::routes::openapi::openapi`] builds, as JSON, with
/// no credential.
#[tokio::test]
async fn openapi_json_is_served_without_a_credential() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, document());
}

/// The scope each operation documents is the permission its route declares: the document cannot
/// drift from the route table the router enforces.
#[test]
fn documented_scopes_are_the_route_tables_permissions() {
    use bulkhead_server::http::authz::RouteAccess;
    let doc = document();
    for spec in bulkhead_server::http::app::route_table().specs() {
        let op = &doc["paths"][spec.path][spec.method.as_str().to_lowercase()];
        let bearer: Vec<&str> = op["security"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|requirement| requirement["bearer"].as_array())
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match spec.access {
            RouteAccess::Requires(scope) => assert_eq!(
                bearer,
                [scope.as_str()],
                "{} {} declares {scope}",
                spec.method,
                spec.path
            ),
            RouteAccess::Authenticated => assert!(
                op["security"].as_array().is_some_and(|s| !s.is_empty()),
                "{} {} needs a credential",
                spec.method,
                spec.path
            ),
            RouteAccess::Public | RouteAccess::SelfAuthenticating => assert!(
                bearer.is_empty(),
                "{} {} takes no bearer credential",
                spec.method,
                spec.path
            ),
        }
    }
}
