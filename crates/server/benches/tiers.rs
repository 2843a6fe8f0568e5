//! Isolation tiers against a real PostgreSQL (the harness's private cluster), in three phases:
//! 1. request throughput per tier for the same endpoint (`GET /v1/sessions/{id}` through the
//!    full stack), alternating rounds, as ratios to the shared tier;
//! 2. schema creation and migration per tenant schema (`bulkhead migrate` over N fresh tenant
//!    schemas) at each N of TIERS_BENCH_SCHEMAS, against the baseline of migrating one fresh
//!    shared schema in the same run; and a pass over N schemas that are already current;
//! 3. moving a tenant with TIERS_BENCH_ROWS rows (half sessions, half audit events) shared →
//!    schema → dedicated → shared: total time and the time writes were frozen, against the
//!    baseline of reading every row once (one checksum pass); after each move, exporting the
//!    tenant (`service::portability::export`, the archive `bulkhead tenant export` writes, into
//!    a sink) against the baseline of a plain `COPY … TO STDOUT` of every one of its tables in
//!    the same location, in the same run (issue 19's measure);
//! 4. purging a tenant with TIERS_BENCH_ROWS rows in each tier (a deletion scheduled with no
//!    grace period, then the purge, as the operator API runs them), against the baseline of
//!    reading the same rows once in the same run (issue 19's measure).
//!
//! A bench binary, not a timed test: it prints figures.
//!
//! `cargo bench -p bulkhead-server --bench tiers` (knobs: BENCH_SECONDS per round, default 5;
//! BENCH_ROUNDS, default 3; BENCH_CONCURRENCY, default 16; TIERS_BENCH_SCHEMAS, default
//! "100,1000"; TIERS_BENCH_PARALLEL, default 4; TIERS_BENCH_ROWS, default 100000). Traffic goes
//! to 127.0.0.1 only.

use std::time::Instant;

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use bulkhead_server::config::AppConfig;
use bulkhead_server::http::state::AppState;
use bulkhead_server::service::deletion;
use bulkhead_store::lifecycle::moves::{self, MoveOptions};
use bulkhead_store::{Access, Store};
use bulkhead_test_support::{create_tenant_in, loopback_client, TestDb, TestTier};

#[path = "common/load.rs"]
mod load;
use load::{run_round, summarize, Round};
use serde_json::{json, Value};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn system(tenant: TenantId) -> TenantContext {
    TenantContext::for_test(
        tenant,
        Actor::System { component: "bench" },
        RequestId::new(),
    )
}

async fn throughput_per_tier(seconds: u64, rounds: u64, concurrency: u64) {
    let db = TestDb::new().await;
    bulkhead_test_support::ensure_signing_keys(&db).await;
    let mut tenants = Vec::new();
    for (slug, tier) in [
        ("shared", TestTier::Shared),
        ("schema", TestTier::Schema),
        ("dedicated", TestTier::Dedicated),
    ] {
        tenants.push((slug, create_tenant_in(&db, slug, tier).await));
    }
    let config =
        AppConfig::new("bulkhead.test", bulkhead_auth::KeyEnvironment::Live).expect("config");
    let state = AppState::from_parts(bulkhead_test_support::app_parts(
        db.app_store().await,
        config,
        bulkhead_core::Clock::system(),
        None,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = bulkhead_server::http::app::router(state);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let client = loopback_client();
    let mut urls = Vec::new();
    for (slug, tenant) in &tenants {
        let created: Value = client
            .post(format!("http://{slug}.bulkhead.test:{port}/v1/sessions"))
            .bearer_auth(&tenant.key)
            .json(&json!({ "agent_id": "agent-1", "title": "bench", "metadata": { "k": "v" } }))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let id = created["id"].as_str().expect("id").to_owned();
        urls.push((
            *slug,
            format!("http://{slug}.bulkhead.test:{port}/v1/sessions/{id}"),
            tenant.key.clone(),
        ));
    }
    for (_, url, key) in &urls {
        run_round(url.clone(), Some(key.clone()), 1, concurrency).await;
    }
    let mut results: Vec<Vec<Round>> = urls.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (_, url, key)) in urls.iter().enumerate() {
            results[i].push(run_round(url.clone(), Some(key.clone()), seconds, concurrency).await);
        }
    }
    println!(
        "phase 1: GET /v1/sessions/{{id}}, full stack, {concurrency} connections, {rounds} alternating rounds of {seconds} s, loopback"
    );
    let rps: Vec<f64> = urls
        .iter()
        .zip(&results)
        .map(|((slug, _, _), r)| summarize(slug, r))
        .collect();
    println!("schema / shared throughput ratio: {:.2}", rps[1] / rps[0]);
    println!(
        "dedicated / shared throughput ratio: {:.2}",
        rps[2] / rps[0]
    );
}

async fn schema_migrations(counts: &[u64], parallel: usize) {
    println!(
        "phase 2: creating and migrating tenant schemas (bulkhead migrate, parallel {parallel})"
    );
    for &n in counts {
        let db = TestDb::new().await;
        // Baseline, same run: one fresh database's shared schema, migrated by the migrator.
        let fresh = TestDb::new().await;
        let owner = fresh.owner_pool().await;
        sqlx::query("DROP SCHEMA bulkhead CASCADE")
            .execute(&owner)
            .await
            .expect("drop");
        let t = Instant::now();
        bulkhead_store::placement::migrate::run(&owner)
            .await
            .expect("baseline migrate");
        let baseline = t.elapsed();
        let owner_pool = db.owner_pool().await;
        for i in 0..n {
            let id = TenantId::new();
            sqlx::query(
                "INSERT INTO bulkhead.tenants (id, slug, display_name, isolation_tier, schema_name) \
                 VALUES ($1, $2, 'Bench', 'schema', $3)",
            )
            .bind(id.uuid())
            .bind(format!("bench-{i:05}"))
            .bind(format!("tenant_{}", id.uuid().simple()))
            .execute(&owner_pool)
            .await
            .expect("registry row");
        }
        let store = db.owner_store().await;
        let t = Instant::now();
        let outcomes = bulkhead_store::placement::tiers::migrate_all(
            store.migration_targets().await.expect("targets"),
            parallel,
            |_| {},
        )
        .await;
        let created = t.elapsed();
        assert!(outcomes.iter().all(|o| o.result.is_ok()));
        let t = Instant::now();
        bulkhead_store::placement::tiers::migrate_all(
            store.migration_targets().await.expect("targets"),
            parallel,
            |_| {},
        )
        .await;
        let current = t.elapsed();
        let per = created.as_secs_f64() * 1000.0 / n as f64;
        println!(
            "{n:>5} schemas: created and migrated in {:.1} s ({per:.1} ms per schema wall, {:.2}x the baseline of one fresh shared schema, {:.1} ms); a pass over {n} current schemas {:.2} s",
            created.as_secs_f64(),
            per / (baseline.as_secs_f64() * 1000.0),
            baseline.as_secs_f64() * 1000.0,
            current.as_secs_f64()
        );
    }
}

/// Gives `tenant` `rows` rows, half agent sessions and half audit events, in one transaction.
async fn seed(owner: &Store, tenant: TenantId, rows: u64) {
    let half = rows / 2;
    let mut tx = owner
        .begin(&system(tenant), Access::ReadWrite)
        .await
        .expect("begin");
    sqlx::query(
        "INSERT INTO agent_sessions (tenant_id, id, agent_id, title, metadata) \
         SELECT $1, gen_random_uuid(), 'agent-' || (g % 50), 'session ' || g, jsonb_build_object('n', g) \
         FROM generate_series(1, $2) g",
    )
    .bind(tenant.uuid())
    .bind(half as i64)
    .execute(tx.conn())
    .await
    .expect("sessions");
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, id, action, actor_type, actor_id, resource_id, outcome, metadata, request_id) \
         SELECT $1, gen_random_uuid(), 'bench.event', 'system', 'system:bench', 'r' || g, 'success', \
                jsonb_build_object('n', g), gen_random_uuid()::text FROM generate_series(1, $2) g",
    )
    .bind(tenant.uuid())
    .bind((rows - half) as i64)
    .execute(tx.conn())
    .await
    .expect("events");
    tx.commit().await.expect("commit");
}

/// The baseline of phases 3 and 4, in ms: one read of every seeded row of `tenant` (a checksum
/// pass over both tables).
async fn read_once(owner: &Store, tenant: TenantId) -> f64 {
    let t = Instant::now();
    let mut tx = owner
        .begin(&system(tenant), Access::ReadOnly)
        .await
        .expect("begin");
    for table in ["agent_sessions", "audit_events"] {
        let _: String = sqlx::query_scalar(&format!(
            "SELECT md5(coalesce(string_agg(r::text, '' ORDER BY r::text COLLATE \"C\"), '')) FROM {table} r WHERE tenant_id = $1"
        ))
        .bind(tenant.uuid())
        .fetch_one(tx.conn())
        .await
        .expect("read");
    }
    drop(tx);
    t.elapsed().as_secs_f64() * 1000.0
}

async fn move_time(rows: u64) {
    let db = TestDb::new().await;
    let tenant = bulkhead_test_support::create_tenant(&db, "big-co").await;
    let owner: Store = db.owner_store().await;
    seed(&owner, tenant.id, rows).await;
    // Baseline, same run: one read of every row of the tenant (a checksum pass).
    let read = read_once(&owner, tenant.id).await;
    println!(
        "phase 3: moving a tenant with {rows} rows (baseline: reading them once, {read:.0} ms)"
    );
    for tier in [TestTier::Schema, TestTier::Dedicated, TestTier::Shared] {
        let placement = tier.placement(&db, &owner).await;
        let report = moves::move_tenant(&owner, tenant.id, placement, MoveOptions::default())
            .await
            .expect("move");
        println!(
            "  {} -> {}: {} rows in {} ms ({:.1}x the read), writes frozen {} ms",
            report.from,
            report.to,
            report.rows,
            report.total_ms,
            report.total_ms as f64 / read,
            report.frozen_ms
        );
        export_time(&db, &owner, tenant.id).await;
    }
}

/// Purges a tenant with `rows` rows in each tier, as `POST /operator/v1/tenants/{t}/deletion/purge`
/// does (`service::deletion::schedule` with no grace period, then `service::deletion::purge`),
/// against the baseline of reading the same rows once, measured just before in the same run.
async fn purge_time(rows: u64) {
    let db = TestDb::new().await;
    let owner: Store = db.owner_store().await;
    let key = bulkhead_audit::LogSigningKey::generate();
    let clock = bulkhead_core::Clock::system();
    println!("phase 4: purging a tenant with {rows} rows (baseline: reading them once)");
    for (slug, tier) in [
        ("purge-shared", TestTier::Shared),
        ("purge-schema", TestTier::Schema),
        ("purge-dedicated", TestTier::Dedicated),
    ] {
        let tenant = create_tenant_in(&db, slug, tier).await;
        seed(&owner, tenant.id, rows).await;
        let read = read_once(&owner, tenant.id).await;
        let record = owner
            .tenant_by_id(tenant.id)
            .await
            .expect("registry")
            .expect("tenant");
        let t = Instant::now();
        deletion::schedule(&owner, &record, Some(0), "bench")
            .await
            .expect("schedule");
        let outcome = deletion::purge(&owner, &key, &clock, tenant.id, "bench")
            .await
            .expect("purge");
        let purge = t.elapsed().as_secs_f64() * 1000.0;
        let removed = outcome
            .receipt
            .as_ref()
            .and_then(|r| r["rows"].as_u64())
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        println!(
            "  {}: purged in {purge:.0} ms ({removed} rows removed incl. the sequenced log); reading the seeded rows once {read:.0} ms: {:.1}x",
            record.isolation_tier.as_str(),
            purge / read,
        );
    }
}

/// Exports the tenant into a sink, against a plain binary `COPY` of the same rows (every tenant
/// table, as the owner, the context set) read from the same location just before.
async fn export_time(db: &TestDb, owner: &Store, tenant: TenantId) {
    use futures::StreamExt as _;
    let record = owner
        .tenant_by_id(tenant)
        .await
        .expect("registry")
        .expect("tenant");
    let schema = record
        .schema_name
        .clone()
        .unwrap_or_else(|| "bulkhead".into());
    // A dedicated tenant's registry name is its database's name in the test cluster.
    let options = db.superuser_options_for(record.database_name.as_deref().unwrap_or(&db.name));
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
        .await
        .expect("baseline connection");
    let t = Instant::now();
    let mut copied = 0usize;
    for table in bulkhead_store::placement::location::TENANT_TABLES {
        let mut out = conn
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM \"{schema}\".{table} WHERE tenant_id = '{}') TO STDOUT (FORMAT binary)",
                tenant.uuid()
            ))
            .await
            .expect("copy out");
        while let Some(chunk) = out.next().await {
            copied += chunk.expect("chunk").len();
        }
    }
    let copy = t.elapsed().as_secs_f64() * 1000.0;
    let key = bulkhead_audit::LogSigningKey::generate();
    let t = Instant::now();
    let mut sink = CountingSink(0);
    let manifest = bulkhead_server::service::portability::export(
        owner,
        &key,
        tenant,
        chrono::Utc::now(),
        &mut sink,
        &|_| {},
    )
    .await
    .expect("export");
    let export = t.elapsed().as_secs_f64() * 1000.0;
    let rows: u64 = manifest.tables.values().sum();
    println!(
        "    export ({}): {rows} rows, {:.1} MB archive in {export:.0} ms ({:.0} rows/s); plain COPY of the same tables {copy:.0} ms ({:.1} MB binary): {:.2}x",
        record.isolation_tier.as_str(),
        sink.0 as f64 / 1e6,
        rows as f64 / (export / 1000.0),
        copied as f64 / 1e6,
        export / copy,
    );
}

/// Counts what an export writes.
struct CountingSink(u64);

impl tokio::io::AsyncWrite for CountingSink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0 += buf.len() as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn main() {
    // What users run: the cluster writes as `serve`'s embedded one does (fsync and synchronous
    // commit on), not as the test suites' does.
    bulkhead_test_support::use_served_durability();
    let seconds = env_or("BENCH_SECONDS", 5);
    let rounds = env_or("BENCH_ROUNDS", 3);
    let concurrency = env_or("BENCH_CONCURRENCY", 16);
    let parallel = env_or("TIERS_BENCH_PARALLEL", 4) as usize;
    let rows = env_or("TIERS_BENCH_ROWS", 100_000);
    let counts: Vec<u64> = std::env::var("TIERS_BENCH_SCHEMAS")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let phases = std::env::var("TIERS_BENCH_PHASES").unwrap_or_else(|_| "1,2,3,4".into());
    runtime.block_on(async move {
        if phases.contains('1') {
            throughput_per_tier(seconds, rounds, concurrency).await;
        }
        if phases.contains('2') {
            schema_migrations(&counts, parallel).await;
        }
        if phases.contains('3') {
            move_time(rows).await;
        }
        if phases.contains('4') {
            purge_time(rows).await;
        }
    });
}
