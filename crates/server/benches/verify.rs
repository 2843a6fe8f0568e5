//! In-process API-key verification: a cached key (format + checksum + HMAC + cache hit + scope
//! check) with criterion, and an uncached one (one indexed lookup through the definer function)
//! with a plain timing loop for its median and p99. Needs the PostgreSQL server binaries: the
//! harness starts a private cluster.
//!
//! `cargo bench -p bulkhead-server --bench verify`

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bulkhead_core::{Clock, Scope};
use bulkhead_server::credentials::KeyVerifier;
use bulkhead_test_support::{create_tenant, test_peppers, TestDb};
use criterion::{criterion_group, criterion_main, Criterion};

fn verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (verifier, key) = runtime.block_on(async {
        let db = TestDb::new().await;
        let tenant = create_tenant(&db, "bench").await;
        let verifier = KeyVerifier::new(
            db.app_store().await,
            test_peppers(),
            bulkhead_auth::KeyEnvironment::Live,
            Clock::system(),
        );
        (verifier, tenant.key)
    });
    let ip: Option<IpAddr> = Some([127, 0, 0, 1].into());
    // Populate the cache once.
    runtime.block_on(async {
        verifier
            .verify(&key, ip)
            .await
            .expect("store")
            .expect("valid key")
    });

    c.bench_function("verify cached key (parse + HMAC + cache + scope)", |b| {
        b.to_async(&runtime).iter(|| async {
            let verified = verifier
                .verify(&key, ip)
                .await
                .expect("store")
                .expect("valid key");
            assert!(verified.scopes.contains(Scope::SessionsRead));
        })
    });

    // Uncached: drop the cache before every verification.
    let samples = runtime.block_on(async {
        let mut samples = Vec::with_capacity(2000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while samples.len() < 2000 && Instant::now() < deadline {
            verifier.forget_all();
            let started = Instant::now();
            verifier
                .verify(&key, ip)
                .await
                .expect("store")
                .expect("valid key");
            samples.push(started.elapsed());
        }
        samples
    });
    let mut sorted = samples;
    sorted.sort();
    let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    println!(
        "verify uncached key (one lookup): {} samples, median {:?}, p99 {:?}",
        sorted.len(),
        at(0.5),
        at(0.99)
    );
}

criterion_group!(benches, verification);
criterion_main!(benches);
