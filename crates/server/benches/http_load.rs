//! Load benchmark on loopback: `GET /v1/sessions/{id}` through the full stack (tenant
//! resolution, API-key authentication, one tenant transaction, RLS) against a baseline endpoint
//! that runs the same primary-key SELECT through a plain pool with no tenant transaction.
//! A third endpoint runs the full stack minus resolution and authentication (same tenant
//! transaction and store code), to isolate what authentication costs, and the full stack once
//! more with an EdDSA access token instead of the API key. All are served by the
//! same process, measured in the same run, in alternating rounds.
//!
//! The last section is the per-address fairness measurement of issue 17, item 10: tenant A floods
//! from one address with 16 tasks while tenant B sends ordinary requests from the same address,
//! on the shipped per-address budget; it prints B's refusals (must be 0) and B's p99 against
//! alone.
//!
//! `cargo bench -p bulkhead-server --bench http_load` (env BENCH_ONLY=fairness: only the fairness
//! sections;: BENCH_SECONDS per round, default 5;
//! BENCH_ROUNDS, default 3; BENCH_CONCURRENCY, default 32). Traffic goes to 127.0.0.1 only, and
//! every loop is bounded in time.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use bulkhead_core::{SessionId, TenantId};
use std::sync::Arc;

use bulkhead_ratelimit::{LimitConfig, Plan, Quota};
use bulkhead_server::config::AppConfig;
use bulkhead_server::http::state::AppState;
use bulkhead_server::service::rate_limits::{default_limits, default_preauth_limits, RateLimits};
use bulkhead_test_support::{create_tenant, loopback_client, TestDb};

#[path = "common/load.rs"]
mod load;
use load::{percentile, run_paced, run_round, summarize, Round};
use serde_json::{json, Value};
use sqlx::PgPool;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The baseline: same SELECT, same primary key, no resolution, no authentication, no transaction.
async fn baseline(
    State(pool): State<PgPool>,
    Path((tenant, id)): Path<(String, String)>,
) -> axum::Json<Value> {
    let tenant = TenantId::parse(&tenant).expect("tenant id");
    let id = SessionId::parse(&id).expect("session id");
    let row: (uuid::Uuid, String, String, String, Value) = sqlx::query_as(
        "SELECT id, agent_id, title, state, metadata FROM bulkhead.agent_sessions \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_one(&pool)
    .await
    .expect("baseline row");
    axum::Json(
        json!({ "id": SessionId::from_uuid(row.0), "agent_id": row.1, "title": row.2, "state": row.3, "metadata": row.4 }),
    )
}

/// The same endpoint as the full stack (tenant transaction, RLS, same store functions) with
/// resolution and authentication skipped: the context is made directly. Isolates what
/// authentication costs.
async fn unauthenticated(
    State(store): State<bulkhead_store::Store>,
    Path((tenant, id)): Path<(String, String)>,
) -> axum::Json<bulkhead_store::tenant::sessions::AgentSession> {
    let tenant = TenantId::parse(&tenant).expect("tenant id");
    let id = SessionId::parse(&id).expect("session id");
    let ctx = bulkhead_core::TenantContext::for_test(
        tenant,
        bulkhead_core::Actor::System { component: "bench" },
        Default::default(),
    );
    let mut tx = store
        .begin(&ctx, bulkhead_store::Access::ReadOnly)
        .await
        .expect("tx");
    let session = bulkhead_store::tenant::sessions::get(&mut tx, id)
        .await
        .expect("row");
    tx.commit().await.expect("commit");
    axum::Json(session)
}

fn roomy_preauth() -> LimitConfig {
    let roomy = Quota::per_second(10_000_000).with_burst(10_000_000);
    LimitConfig {
        plans: [Plan::Free, Plan::Standard, Plan::Enterprise]
            .into_iter()
            .map(|p| (p, roomy))
            .collect(),
        ..LimitConfig::default()
    }
}

/// Serves `app` on a loopback port and returns the port.
async fn serve(app: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    port
}

fn main() {
    // What users run: the cluster writes as `serve`'s embedded one does (fsync and synchronous
    // commit on), not as the test suites' does.
    bulkhead_test_support::use_served_durability();
    // RUST_LOG set: the server's logs on stderr (why a request was refused).
    if std::env::var_os("RUST_LOG").is_some() {
        bulkhead_server::http::telemetry::init_logging();
    }
    let seconds = env_or("BENCH_SECONDS", 5);
    let rounds = env_or("BENCH_ROUNDS", 3);
    let concurrency = env_or("BENCH_CONCURRENCY", 32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let db = TestDb::new().await;
        bulkhead_test_support::ensure_signing_keys(&db).await;
        let tenant = create_tenant(&db, "bench").await;
        // The serving pool `serve` ships (not the test harness's 10): its size sets the
        // per-tenant transaction cap (a quarter), which all 32 connections of the one tenant
        // queue behind.
        let pool_size = bulkhead_server::config::DEFAULT_MAX_CONNECTIONS;
        let store = bulkhead_store::Store::connect_app(db.app_options.clone(), pool_size)
            .await
            .expect("app store")
            .reconfigured(|t| t.master_key = Some(Arc::new(bulkhead_test_support::test_master_key())));
        println!(
            "serving pool {pool_size} connections (serve's default), per-tenant transaction cap {}, baseline plain pool {pool_size}",
            store.tenant_connection_cap()
        );
        let config = AppConfig::new("bulkhead.test", bulkhead_auth::KeyEnvironment::Live).expect("config");
        let clock = bulkhead_core::Clock::system();
        // The first comparison measures resolution, authentication and the tenant transaction:
        // no rate limiting in this app (limiting has its own sections below).
        let state = AppState::from_parts(bulkhead_test_support::app_parts(store.clone(), config.clone(), clock.clone(), None));
        // A plain pool that sees every row: the cluster's superuser, as a deployment without
        // tenant isolation would use. Same size as the serving pool.
        let plain = sqlx::postgres::PgPoolOptions::new()
            .max_connections(pool_size)
            .connect_with(db.superuser_options.clone())
            .await
            .expect("plain pool");
        let app = bulkhead_server::http::app::router(state.clone())
            .merge(Router::new().route("/bench/baseline/{tenant}/sessions/{id}", get(baseline)).with_state(plain))
            .merge(Router::new().route("/bench/noauth/{tenant}/sessions/{id}", get(unauthenticated)).with_state(state.store().clone()));
        let port = serve(app).await;
        // `app::serve` loads the signing keys and denylist; this bench serves the router itself.
        state.tokens().reload().await.expect("signing keys");
        let jwt = state
            .tokens()
            .issue(&bulkhead_server::service::tokens::Grant {
                tenant_id: tenant.id,
                issuer: &state.config().tokens.tenant_issuer(
                    &bulkhead_core::TenantSlug::parse(&tenant.slug).expect("slug"),
                ),
                subject: "agent-1",
                human: false,
                client_id: "bench",
                scopes: &bulkhead_core::ScopeSet::all(),
                session_id: None,
                act: None,
                resource_prefix: None,
                not_after: None,
                delegated_from: Vec::new(),
                allowed_networks: Vec::new(),
                derived_keys: Vec::new(),
            })
            .expect("token")
            .token;

        let client = loopback_client();
        let created: Value = client
            .post(format!("http://bench.bulkhead.test:{port}/v1/sessions"))
            .bearer_auth(&tenant.key)
            .json(&json!({ "agent_id": "agent-1", "title": "bench", "metadata": { "k": "v" } }))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let id = created["id"].as_str().expect("id").to_owned();
        let full_url = format!("http://bench.bulkhead.test:{port}/v1/sessions/{id}");
        let base_url = format!("http://127.0.0.1:{port}/bench/baseline/{}/sessions/{id}", tenant.id);
        let noauth_url = format!("http://127.0.0.1:{port}/bench/noauth/{}/sessions/{id}", tenant.id);

        // BENCH_ONLY=fairness skips the throughput comparisons. Their 32-connection closed loop
        // of one tenant queues behind the tenant's transaction cap; a request that waits there
        // longer than the pool's acquire timeout (5 s) is refused with 503 `unavailable`, which
        // fails the round (on a machine so starved that a transaction takes ~0.8 s).
        if std::env::var("BENCH_ONLY").as_deref() != Ok("fairness") {
        // Warm both paths (connections, caches, prepared statements).
        run_round(full_url.clone(), Some(tenant.key.clone()), 1, concurrency).await;
        run_round(base_url.clone(), None, 1, concurrency).await;

        run_round(noauth_url.clone(), None, 1, concurrency).await;
        run_round(full_url.clone(), Some(jwt.clone()), 1, concurrency).await;
        let (mut full, mut base, mut noauth, mut with_jwt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            base.push(run_round(base_url.clone(), None, seconds, concurrency).await);
            noauth.push(run_round(noauth_url.clone(), None, seconds, concurrency).await);
            full.push(run_round(full_url.clone(), Some(tenant.key.clone()), seconds, concurrency).await);
            with_jwt.push(run_round(full_url.clone(), Some(jwt.clone()), seconds, concurrency).await);
        }
        println!("GET /v1/sessions/{{id}}, {concurrency} connections, {rounds} alternating rounds of {seconds} s each, loopback");
        let base_rps = summarize("baseline", &base);
        let noauth_rps = summarize("no-auth", &noauth);
        let full_rps = summarize("full", &full);
        let jwt_rps = summarize("full, access token (JWT)", &with_jwt);
        println!("full / baseline throughput ratio: {:.2}", full_rps / base_rps);
        println!("full / no-auth throughput ratio (cost of resolution + cached key auth): {:.2}", full_rps / noauth_rps);
        println!("JWT / cached API key throughput ratio: {:.2}", jwt_rps / full_rps);

        // Rate limiting on versus off: the same authenticated GET, with quotas so roomy that
        // nothing is refused, so only the limiter's own cost shows.
        let roomy = Quota::per_second(10_000_000).with_burst(10_000_000);
        let roomy_limits = LimitConfig {
            global: Some(roomy),
            plans: [Plan::Free, Plan::Standard, Plan::Enterprise].into_iter().map(|p| (p, roomy)).collect(),
            per_agent: Some(roomy),
            ..LimitConfig::default()
        };
        let limited = RateLimits::in_memory(roomy_limits.clone(), roomy_limits, clock.clone());
        let on_state = AppState::from_parts(bulkhead_test_support::app_parts(store.clone(), config.clone(), clock.clone(), Some(Arc::new(limited))));
        let on_port = serve(bulkhead_server::http::app::router(on_state)).await;
        let on_url = format!("http://bench.bulkhead.test:{on_port}/v1/sessions/{id}");
        run_round(on_url.clone(), Some(tenant.key.clone()), 1, concurrency).await;
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            off.push(run_round(full_url.clone(), Some(tenant.key.clone()), seconds, concurrency).await);
            on.push(run_round(on_url.clone(), Some(tenant.key.clone()), seconds, concurrency).await);
        }
        println!("rate limiting, same endpoint, same run:");
        let off_rps = summarize("limits off", &off);
        let on_rps = summarize("limits on", &on);
        println!("limits on / off throughput ratio: {:.2}", on_rps / off_rps);
        }

        // Fairness: tenant B at a steady, normal load, alone and while tenant A floods far past
        // its budget, on the default limits.
        // All load comes from 127.0.0.1, so the per-address (pre-authentication) budget would be
        // shared by both tenants: give it room; this section measures the tenant limits.
        let fair_limits = RateLimits::in_memory(default_limits(), roomy_preauth(), clock.clone());
        let default_state = AppState::from_parts(bulkhead_test_support::app_parts(store.clone(), config.clone(), clock.clone(), Some(Arc::new(fair_limits))));
        let fair_port = serve(bulkhead_server::http::app::router(default_state)).await;
        let flooder = create_tenant(&db, "flood").await;
        let calm = create_tenant(&db, "calm").await;
        let calm_session: Value = client
            .post(format!("http://calm.bulkhead.test:{fair_port}/v1/sessions"))
            .bearer_auth(&calm.key)
            .json(&json!({ "agent_id": "agent-1", "title": "calm" }))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let calm_url = format!("http://calm.bulkhead.test:{fair_port}/v1/sessions/{}", calm_session["id"].as_str().expect("id"));
        let flood_url = format!("http://flood.bulkhead.test:{fair_port}/v1/sessions");
        let pace = Some(Duration::from_millis(50));
        let alone = run_paced(calm_url.clone(), Some(calm.key.clone()), seconds * rounds, 4, pace, false).await;
        let flood = tokio::spawn(run_paced(flood_url, Some(flooder.key.clone()), seconds * rounds, concurrency, None, true));
        let crowded = run_paced(calm_url.clone(), Some(calm.key.clone()), seconds * rounds, 4, pace, false).await;
        let flood = flood.await.expect("flood");
        println!("fairness: B with 4 connections at 20 req/s each; A flooding with {concurrency} connections:");
        summarize("B alone", std::slice::from_ref(&alone));
        summarize("B + flood", std::slice::from_ref(&crowded));
        summarize("A flood", std::slice::from_ref(&flood));
        let p99 = |r: &Round| {
            let mut v = r.latencies_us.clone();
            v.sort_unstable();
            percentile(&v, 0.99)
        };
        println!("B p99 with A flooding / B p99 alone: {:.2}", p99(&crowded) / p99(&alone));

        // Per-address fairness (issue 17, item 10): the shipped per-address (pre-authentication)
        // budget this time. A floods from one address with 16 tasks; B sends ordinary requests
        // from the same address (127.0.0.1, as behind a shared NAT or proxy). The address budget
        // is charged only for missing or failed authentication, so B must see no refusal.
        let shared_limits = RateLimits::in_memory(default_limits(), default_preauth_limits(), clock.clone());
        let shared_state = AppState::from_parts(bulkhead_test_support::app_parts(store.clone(), config.clone(), clock.clone(), Some(Arc::new(shared_limits))));
        let shared_port = serve(bulkhead_server::http::app::router(shared_state)).await;
        let calm_url = calm_url.replace(&format!(":{fair_port}/"), &format!(":{shared_port}/"));
        let flood_url = format!("http://flood.bulkhead.test:{shared_port}/v1/sessions");
        let window = seconds * rounds;
        let (alone, alone_refused) = paced_counting(calm_url.clone(), calm.key.clone(), window, 4, pace).await;
        let flood = tokio::spawn(run_paced(flood_url, Some(flooder.key.clone()), window, 16, None, true));
        let (crowded, refused) = paced_counting(calm_url, calm.key.clone(), window, 4, pace).await;
        let flood = flood.await.expect("flood");
        println!("per-address fairness, shipped per-address budget: A floods with 16 tasks and B sends 4 x 20 req/s, both from 127.0.0.1:");
        summarize("B alone", std::slice::from_ref(&alone));
        summarize("B + flood", std::slice::from_ref(&crowded));
        summarize("A flood", std::slice::from_ref(&flood));
        println!("B refusals (must be 0): alone {alone_refused}, with A flooding from the same address {refused}");
        println!("B p99 with A flooding from B's address / B p99 alone: {:.2}", p99(&crowded) / p99(&alone));
    });
}

/// Like `run_paced` for a victim: every answer's latency, and the number of answers that were not
/// 2xx (refusals) instead of a panic.
async fn paced_counting(
    url: String,
    key: String,
    seconds: u64,
    concurrency: u64,
    pace: Option<Duration>,
) -> (Round, u64) {
    let client = loopback_client();
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, key, refused) =
            (client.clone(), url.clone(), key.clone(), refused.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while std::time::Instant::now() < deadline {
                let t = std::time::Instant::now();
                let response = client
                    .get(&url)
                    .bearer_auth(&key)
                    .send()
                    .await
                    .expect("request");
                if !response.status().is_success() {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                response.bytes().await.expect("body");
                latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if let Some(pace) = pace {
                    tokio::time::sleep(pace).await;
                }
            }
            latencies
        }));
    }
    let mut latencies_us = Vec::new();
    for w in workers {
        latencies_us.extend(w.await.expect("worker"));
    }
    let round = Round {
        requests: latencies_us.len() as u64,
        latencies_us,
        elapsed: started.elapsed(),
    };
    (round, refused.load(std::sync::atomic::Ordering::Relaxed))
}
