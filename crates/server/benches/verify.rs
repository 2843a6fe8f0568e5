//! In-process API-key verification: a cached key (format + checksum + HMAC + cache hit + scope
//! check) with criterion, and an uncached one (one indexed lookup through the definer function)
//! with a plain timing loop for its median and p99. Needs the PostgreSQL server binaries: the
//! harness starts a private cluster.
//!
//! `cargo bench -p bulkhead-server --bench verify`

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bulkhead_core::{Clock, Scope, ScopeSet};
use bulkhead_server::service::credentials::KeyVerifier;
use bulkhead_server::service::tokens::{Grant, TokenService};
use bulkhead_test_support::{create_tenant, test_peppers, TestDb};
use criterion::{criterion_group, criterion_main, Criterion};

fn verification(c: &mut Criterion) {
    // What users run: the cluster writes as `serve`'s embedded one does (fsync and synchronous
    // commit on), not as the test suites' does.
    bulkhead_test_support::use_served_durability();
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
            bulkhead_server::config::CacheSettings::default().key_ttl,
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

/// Access-token verification in process: signature, claims, and the denylist check, with a
/// denylist of 10,000 revoked tokens; on first use of a token and on later uses (the verified
/// token cache skips the signature, never the time bounds or the denylist).
fn token_verification(c: &mut Criterion) {
    // What users run: the cluster writes as `serve`'s embedded one does (fsync and synchronous
    // commit on), not as the test suites' does.
    bulkhead_test_support::use_served_durability();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (service, token) = runtime.block_on(async {
        let db = TestDb::new().await;
        bulkhead_test_support::ensure_signing_keys(&db).await;
        let tenant = create_tenant(&db, "bench").await;
        let config = bulkhead_server::config::AppConfig::new(
            "bulkhead.test",
            bulkhead_auth::KeyEnvironment::Live,
        )
        .expect("config");
        let issuer = config
            .tokens
            .tenant_issuer(&bulkhead_core::TenantSlug::parse(&tenant.slug).expect("slug"));
        let service = TokenService::new(
            db.app_store().await,
            std::sync::Arc::new(bulkhead_test_support::test_master_key()),
            Clock::system(),
            config.tokens,
            config.caches.tokens,
        );
        service.reload().await.expect("keys");
        let until = chrono::Utc::now() + chrono::Duration::hours(1);
        for _ in 0..10_000 {
            service.deny_locally(tenant.id, uuid::Uuid::now_v7(), until);
        }
        let token = service
            .issue(&Grant {
                tenant_id: tenant.id,
                issuer: &issuer,
                subject: "agent-1",
                human: false,
                client_id: "bench",
                scopes: &ScopeSet::all(),
                session_id: Some(bulkhead_core::AuthSessionId::new()),
                act: None,
                resource_prefix: None,
                not_after: None,
                delegated_from: Vec::new(),
                allowed_networks: Vec::new(),
                derived_keys: Vec::new(),
            })
            .expect("token")
            .token;
        (service, token)
    });
    c.bench_function(
        "verify access token, first use (EdDSA + claims + denylist)",
        |b| {
            b.iter(|| {
                service.forget_verified();
                let verified = service.verify(&token).expect("valid token");
                assert!(verified.scopes.contains(Scope::SessionsRead));
            })
        },
    );
    c.bench_function(
        "verify access token, seen before (cache + time + denylist)",
        |b| {
            b.iter(|| {
                let verified = service.verify(&token).expect("valid token");
                assert!(verified.scopes.contains(Scope::SessionsRead));
            })
        },
    );
}

criterion_group!(benches, verification, token_verification);
criterion_main!(benches);
