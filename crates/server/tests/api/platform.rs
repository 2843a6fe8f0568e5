//! Health, readiness, metrics, request ids, fallbacks.

use bulkhead_test_support::spawn_app;
use reqwest::StatusCode;

use crate::helpers::problem;

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_credentials() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let request_id = health.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(request_id.starts_with("req_"), "{request_id}");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("bulkhead_http_requests_total"), "{text}");
}

#[tokio::test]
async fn readiness_fails_when_migrations_are_not_current() {
    let app = spawn_app().await;
    let su = app.db.superuser_pool().await;
    sqlx::query("DELETE FROM bulkhead._sqlx_migrations WHERE version = (SELECT max(version) FROM bulkhead._sqlx_migrations)")
        .execute(&su)
        .await
        .unwrap();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    let (status, _) = problem(ready).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let (status, _) = problem(app.client.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = problem(app.client.put(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
