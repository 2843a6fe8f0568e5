//! Health, readiness, metrics, request ids, fallbacks.

use bulkhead_test_support::spawn_app;
use reqwest::StatusCode;

use crate::helpers::problem;

#[tokio::test]
async fn health_and_readiness_answer_without_credentials() {
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
}

/// Issue 17, item 8: `/metrics` on the API listener showed every tenant's activity by route and
/// status to anyone. The API answers 404 (like any unknown path, on every host); the metrics are
/// on the operator's listener (`--metrics-listen`, loopback by default).
#[tokio::test]
async fn metrics_are_served_on_their_own_listener_never_the_apis() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    for url in [app.url("/metrics"), app.tenant_url(&acme.slug, "/metrics")] {
        let response = app.client.get(&url).send().await.unwrap();
        let (status, _) = problem(response).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{url}");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bulkhead_server::http::app::serve_metrics(
        listener,
        app.state.config().connections.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let metrics = app
        .client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("bulkhead_http_requests_total"), "{text}");
    // Nothing else is served there.
    let other = app
        .client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    // The flag's parser: an address or `off`.
    use bulkhead_server::config::{parse_metrics_listen, MetricsListen};
    assert_eq!(parse_metrics_listen("off"), Ok(MetricsListen(None)));
    assert_eq!(
        parse_metrics_listen("127.0.0.1:9090"),
        Ok(MetricsListen(Some("127.0.0.1:9090".parse().unwrap())))
    );
    assert!(parse_metrics_listen("everywhere").is_err());
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
