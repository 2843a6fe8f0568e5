//! The axum application and serving it.

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::{middleware, Router};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use bulkhead_store::audit;

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The route table (defined with the routes; here because the application is built from it).
pub use crate::http::routes::route_table;

/// The whole application.
pub fn router(state: AppState) -> Router {
    // Install the recorder before the first request, or that request's metrics are lost.
    crate::http::telemetry::metrics_handle();
    let routers = route_table().into_routers();
    // Layers run bottom-up: per-address limit, then resolution and authentication, then the
    // tenant's limits, then the route's permission check, then the handler.
    let tenant_api = routers
        .tenant
        // Innermost: audits a quota refusal the handler answered.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::http::quotas::audit_refusals,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::http::limits::tenant_limit,
        ))
        // Inside resolution: the step-up challenge of a 403 needs the credential.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::http::challenge::step_up,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::http::resolve::resolve_tenant,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::http::limits::preauth_limit,
        ))
        // Outermost: every 401 of the tenant API names Bulkhead's resource metadata.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::http::challenge::resource_metadata,
        ));

    // Endpoints where the client authenticates itself (OAuth, login): no tenant resolution in
    // front, but the per-address limit before any credential work.
    let self_authenticating =
        routers
            .self_authenticating
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                crate::http::limits::preauth_limit,
            ));

    let router = routers.public.merge(self_authenticating).merge(tenant_api);

    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(crate::http::telemetry::request_span))
                // One host per request, before anything reads it (issue 17, item 7).
                .layer(middleware::from_fn(crate::http::resolve::single_host))
                // Every audit event of a request carries its client's address and user agent.
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    request_client,
                ))
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    crate::http::listener::request_timeout,
                ))
                .layer(CatchPanicLayer::custom(|_| {
                    axum::response::IntoResponse::into_response(ApiError::Internal(
                        anyhow::anyhow!("handler panicked"),
                    ))
                }))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .with_state(state)
}

/// The operator's metrics listener (`--metrics-listen`): `GET /metrics` and nothing else. The
/// API listener does not serve metrics (404): they show every tenant's activity by route and
/// status. Answers within `request_timeout` (408 beyond), like the API.
pub fn metrics_router(request_timeout: std::time::Duration) -> Router {
    crate::http::telemetry::metrics_handle();
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(crate::http::routes::health::metrics),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(move |request, next| {
            crate::http::listener::within(request_timeout, request, next)
        }))
}

/// Serves [`metrics_router`] on `listener` until `shutdown` completes, through the same bounded
/// accept loop as the API (not axum::serve: no header timeout, no connection cap) with the
/// API's timeouts and the metrics listener's own caps
/// ([`crate::config::ConnectionSettings::for_metrics`]). `settings` are the API's.
pub async fn serve_metrics(
    listener: TcpListener,
    settings: crate::config::ConnectionSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = settings.for_metrics();
    let router = metrics_router(settings.request_timeout);
    // No trusted proxies: a scraper connects directly, and every address is capped.
    crate::http::listener::serve(listener, router, settings, Vec::new(), shutdown).await
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Key verification caches must hear about revocations from other processes.
    let listener_task = tokio::spawn(state.verifier().clone().listen_for_changes());
    // Signing keys and the token denylist are loaded before the first request; until they are,
    // tokens are refused (503), never accepted unchecked.
    if let Err(err) = state.tokens().reload().await {
        tracing::error!(error = %err, "cannot load signing keys and the token denylist; tokens are refused until they load");
    }
    let token_task = tokio::spawn(state.tokens().clone().listen_for_changes());
    // Role ceilings must hear about role and principal changes made by other processes.
    let ceiling_task = tokio::spawn(crate::service::ceilings::listen_for_changes(
        state.store().clone(),
        Some(state.ceilings_handle()),
    ));
    // Authentication failures are persisted in batches, and once more at shutdown.
    let (stop_flusher, flusher_stopped) = tokio::sync::watch::channel(false);
    let flusher = tokio::spawn(
        state
            .audit()
            .clone()
            .run_flusher(state.store().clone(), flusher_stopped),
    );
    // Not axum::serve: it has no header or idle timeout and no connection cap (crate::http::listener).
    let settings = state.config().connections.clone();
    let trusted_proxies = state.config().trusted_proxies.clone();
    let served =
        crate::http::listener::serve(listener, router(state), settings, trusted_proxies, shutdown)
            .await;
    listener_task.abort();
    token_task.abort();
    ceiling_task.abort();
    let _ = stop_flusher.send(true);
    flusher.await.ok();
    served
}

/// Middleware in front of every route: the request's client address and user agent become the
/// default of every audit event recorded while serving it (`bulkhead_store::audit::with_client`),
/// so no event of a request is left without them.
pub async fn request_client(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let client = audit::RequestClient {
        ip_address: crate::service::credentials::request_client_ip(
            &request,
            &state.config().trusted_proxies,
        ),
        user_agent: request
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| audit::clean_free_text(ua, audit::MAX_USER_AGENT_BYTES))
            .filter(|ua| !ua.is_empty()),
    };
    audit::with_client(client, next.run(request)).await
}
