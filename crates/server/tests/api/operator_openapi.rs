//! The operator API's own OpenAPI document (issue 19): served on the operator listener only,
//! naming every operator route with the operator scope it requires, and no tenant route.

use bulkhead_server::http::operator::route_table;
use bulkhead_test_support::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::operator::{operator_key, ALL};

#[tokio::test]
async fn the_operator_document_names_every_operator_route_and_is_served_only_there() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    // No credential needed: the document holds no data.
    let (status, doc) = op
        .request(Method::GET, "/operator/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"].as_str().unwrap().get(..3), Some("3.1"));
    assert_eq!(
        doc["paths"]["/operator/v1/openapi.json"]["get"]["security"],
        serde_json::json!([])
    );
    let paths = doc["paths"].as_object().unwrap();
    assert!(
        paths.keys().all(|p| p.starts_with("/operator/v1/")),
        "{paths:?}"
    );
    let mut operations = 0;
    for spec in route_table().specs() {
        let op_doc = &paths[spec.path][spec.method.as_str().to_lowercase()];
        assert!(
            op_doc.is_object(),
            "{} {} undocumented",
            spec.method,
            spec.path
        );
        assert_eq!(
            op_doc["security"],
            serde_json::json!([{ "operator_key": [spec.scope.as_str()] }]),
            "{} {}",
            spec.method,
            spec.path
        );
        for status in ["401", "403"] {
            assert_eq!(
                op_doc["responses"][status]["content"]["application/problem+json"]["schema"]
                    ["$ref"],
                "#/components/schemas/Problem",
                "{} {} {status}",
                spec.method,
                spec.path
            );
        }
        operations += 1;
    }
    assert!(operations >= 13, "{operations}");
    assert_eq!(
        doc["components"]["securitySchemes"]["operator_key"]["scheme"],
        "bearer"
    );
    // Every schema an operation refers to is in the components.
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "missing schema {name}"
        );
    }
    // The real answers of a few operations match the documented shapes' required fields.
    let (_, key) = operator_key(&op, ALL).await;
    let (status, keys) = op
        .request(Method::GET, "/operator/v1/operator-keys", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let documented: Vec<&str> = doc["components"]["schemas"]["OperatorKeyDoc"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut served: Vec<&str> = keys["data"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    served.sort_unstable();
    let mut documented = documented;
    documented.sort_unstable();
    assert_eq!(served, documented);

    // The tenant listener serves neither the document nor any operator path in its own.
    let response = app
        .client
        .get(app.url("/operator/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let tenant_doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tenant_doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .all(|p| !p.starts_with("/operator")));
    op.stop().await;
}
