//! The audit log against a real PostgreSQL (private cluster from the harness), in four phases:
//! 1. append rate across 100 tenants, unthrottled, no sequencer (batch inserts per tenant);
//! 2. sequencing throughput: draining that backlog, checkpoints included;
//! 3. steady state: appends at a fixed rate across 100 tenants with the sequencer running; the
//!    sequencing lag (p50/p99, from the event's transaction start to its leaf's) of those events;
//! 4. inclusion proof latency and checkpoint signing in a large tree.
//!
//! A bench binary, not a timed test: it prints figures.
//!
//! `cargo bench -p bulkhead-server --bench audit_log`
//! (knobs: AUDIT_BENCH_SECONDS, default 10, per phase; AUDIT_BENCH_BATCH, default 500;
//! AUDIT_BENCH_WRITERS, default 4; AUDIT_BENCH_RATE, default 10000 events/s in phase 3;
//! AUDIT_BENCH_TREE, default 200000 leaves in phase 4)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_audit::LogSigningKey;
use bulkhead_core::{Actor, AuditEventId, RequestId, TenantContext, TenantId};
use bulkhead_server::service::audit_log::Sequencer;
use bulkhead_store::audit::log::{self as audit_log, Sweep};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::{Access, Store};
use bulkhead_test_support::{create_tenant, TestDb};
use serde_json::json;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::for_test(
        tenant,
        Actor::System { component: "bench" },
        RequestId::new(),
    )
}

async fn append(store: &Store, tenant: TenantId, n: usize) {
    append_as(store, tenant, n, "bench.event").await
}

async fn append_as(store: &Store, tenant: TenantId, n: usize, action: &'static str) {
    let events: Vec<_> = (0..n)
        .map(|i| {
            (
                action,
                None,
                Outcome::Success,
                json!({ "i": i, "note": "a typical small metadata object" }),
            )
        })
        .collect();
    let mut tx = store
        .begin(&ctx(tenant), Access::ReadWrite)
        .await
        .expect("begin");
    audit::record_batch(&mut tx, &events).await.expect("insert");
    tx.commit().await.expect("commit");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // What users run: the cluster writes as `serve`'s embedded one does (fsync and synchronous
    // commit on), not as the test suites' does.
    bulkhead_test_support::use_served_durability();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let seconds = knob("AUDIT_BENCH_SECONDS", 10);
    let batch = knob("AUDIT_BENCH_BATCH", 500) as usize;
    let writers = knob("AUDIT_BENCH_WRITERS", 4) as usize;
    let db = TestDb::new().await;
    let mut tenants = Vec::new();
    for i in 0..100 {
        tenants.push(create_tenant(&db, &format!("bench-{i:03}")).await.id);
    }
    let store = Store::connect_app(db.app_options.clone(), (writers + 4) as u32)
        .await
        .expect("store");
    let key = LogSigningKey::generate();
    let sequencer = Sequencer::new(store.clone(), key.clone());
    sequencer
        .run_once(Sweep::Full, true)
        .await
        .expect("first pass");

    // 1. Append rate, unthrottled, no sequencer.
    println!("append: {writers} writers, {batch} events per transaction, 100 tenants, {seconds} s");
    let appended = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..writers {
        let (store, tenants, appended, stop) = (
            store.clone(),
            tenants.clone(),
            appended.clone(),
            stop.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                append(&store, tenants[i % tenants.len()], batch).await;
                appended.fetch_add(batch as u64, Ordering::Relaxed);
                i += writers;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("writer");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = appended.load(Ordering::Relaxed);
    println!(
        "append: {total} events in {elapsed:.1} s = {:.0} events/s",
        total as f64 / elapsed
    );

    // 2. Sequencing throughput: drain the backlog.
    let drain = Instant::now();
    let run = sequencer
        .run_once(Sweep::Recent, true)
        .await
        .expect("drain");
    let secs = drain.elapsed().as_secs_f64();
    println!(
        "sequencer: {} events sequenced and {} checkpoints signed in {secs:.1} s = {:.0} events/s",
        run.appended,
        run.checkpoints,
        run.appended as f64 / secs
    );

    // 3. Steady state at a fixed rate, sequencer running.
    let rate = knob("AUDIT_BENCH_RATE", 10_000);
    let per_writer_interval = Duration::from_secs_f64((batch * writers) as f64 / rate as f64);
    println!("steady: {rate} events/s across 100 tenants for {seconds} s, sequencer every pass");
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let started = Instant::now();
    for w in 0..writers {
        let (store, tenants, appended, stop) = (
            store.clone(),
            tenants.clone(),
            appended.clone(),
            stop.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per_writer_interval);
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                append_as(&store, tenants[i % tenants.len()], batch, "bench.steady").await;
                appended.fetch_add(batch as u64, Ordering::Relaxed);
                i += writers;
            }
        }));
    }
    let seq_stop = stop.clone();
    let seq = sequencer.clone();
    let seq_handle = tokio::spawn(async move {
        let mut passes = 0u64;
        while !seq_stop.load(Ordering::Relaxed) {
            seq.run_once(Sweep::Recent, false).await.expect("sequence");
            passes += 1;
        }
        passes
    });
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("writer");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let passes = seq_handle.await.expect("sequencer");
    sequencer
        .run_once(Sweep::Recent, true)
        .await
        .expect("drain");
    let total = appended.load(Ordering::Relaxed);
    println!(
        "steady: {total} events in {elapsed:.1} s = {:.0} events/s appended; {passes} sequencer passes",
        total as f64 / elapsed
    );
    let su = db.superuser_pool().await;
    let lags: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM l.sequenced_at - e.occurred_at)::float8 \
         FROM bulkhead.audit_leaves l JOIN bulkhead.audit_events e \
           ON e.tenant_id = l.tenant_id AND e.id = l.event_id \
         WHERE e.action = 'bench.steady' ORDER BY 1",
    )
    .fetch_all(&su)
    .await
    .expect("lags");
    println!(
        "sequencing lag over {} events: p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN)
    );

    // 4. Inclusion proofs in one large tree.
    let big = tenants[0];
    let target = knob("AUDIT_BENCH_TREE", 200_000);
    let mut size = {
        let mut tx = store
            .begin(&ctx(big), Access::ReadOnly)
            .await
            .expect("begin");
        audit_log::tree_size(&mut tx).await.expect("size")
    };
    while size < target {
        append(&store, big, 5000).await;
        sequencer
            .sequence_tenant(big, Sweep::Recent, false)
            .await
            .expect("sequence");
        size += 5000;
    }
    let mut tx = store
        .begin(&ctx(big), Access::ReadOnly)
        .await
        .expect("begin");
    let size = audit_log::tree_size(&mut tx).await.expect("size");
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM bulkhead.audit_leaves WHERE tenant_id = $1 ORDER BY random() LIMIT 1000",
    )
    .bind(big.uuid())
    .fetch_all(tx.conn())
    .await
    .expect("ids");
    drop(tx);
    let mut latencies = Vec::new();
    for id in ids {
        let t = Instant::now();
        let mut tx = store
            .begin(&ctx(big), Access::ReadOnly)
            .await
            .expect("begin");
        let proof = audit_log::inclusion_proof(&mut tx, AuditEventId::from_uuid(id), size)
            .await
            .expect("proof")
            .expect("in the tree");
        tx.commit().await.expect("commit");
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(!proof.audit_path.is_empty());
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "inclusion proof (tree of {size}, own transaction each, {} proofs): p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    let t = Instant::now();
    let mut tx = store
        .begin(&ctx(big), Access::ReadWrite)
        .await
        .expect("begin");
    audit_log::sign_checkpoint(&mut tx, &key, chrono::Utc::now())
        .await
        .expect("sign");
    tx.commit().await.expect("commit");
    println!(
        "checkpoint of the tree of {size}: {:.2} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
}
