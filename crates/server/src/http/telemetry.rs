//! Request ids, JSON logs, metrics.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use bulkhead_core::RequestId;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::http::error::InternalErrorReport;

/// JSON logs on stderr with the current span's fields (request_id, tenant_id). `RUST_LOG`
/// filters; default `info`. Safe to call more than once (later calls do nothing).
pub fn init_logging() {
    init_logging_as(false);
}

/// Logs on stderr: human-readable lines (with the span's fields) when `pretty`, else JSON as
/// [`init_logging`].
pub fn init_logging_as(pretty: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if pretty {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            // Colours only for a terminal: `--log-format pretty` into a file gets plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process-wide Prometheus recorder (installed once; several apps in one test process share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just stays unused.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Gives every request a fresh server-made id (client-supplied ids are not trusted into logs),
/// opens the request span that carries it and, later, the tenant id, and returns it as
/// `x-request-id`. Also records request metrics and logs internal errors with their cause.
pub async fn request_span(mut request: Request, next: Next) -> Response {
    let request_id = RequestId::new();
    request.extensions_mut().insert(request_id);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = %route,
        tenant_id = tracing::field::Empty,
        actor_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = {
        use tracing::Instrument;
        next.run(request).instrument(span.clone()).await
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let _entered = span.enter();
    if let Some(report) = response.extensions_mut().remove::<InternalErrorReport>() {
        tracing::error!(status, error = %report.0, "request failed");
    } else {
        tracing::info!(status, latency_ms = elapsed.as_secs_f64() * 1e3, "request");
    }
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("bulkhead_http_requests_total", &labels).increment(1);
    metrics::histogram!("bulkhead_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&request_id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
