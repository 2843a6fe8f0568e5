//! Deliveries per second to a local HTTPS receiver (loopback, TLS with a CA made here), signed,
//! through the egress guard; and the same client without the guard, in the same run, to show
//! the guard's cost as a ratio. The test receiver answers `connection: close`, so every delivery
//! includes a fresh TCP connection, DNS lookup (through the guard) and TLS handshake: the worst
//! case for the guard, which runs once per connection.
//!
//! `cargo bench -p bulkhead-webhooks --bench delivery`
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_test_support::receiver::{Receiver, TestCa};
use bulkhead_test_support::test_egress_policy;
use bulkhead_webhooks::egress::{send_post, unguarded_client, SendOutcome};
use bulkhead_webhooks::signing::signed_headers;
use bulkhead_webhooks::{EgressClient, EgressConfig, EgressPolicy, Secret, StaticResolver};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A resolver without any checks, for the unguarded baseline.
struct PlainResolver;

impl reqwest::dns::Resolve for PlainResolver {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async {
            let addrs: reqwest::dns::Addrs =
                Box::new(std::iter::once(SocketAddr::new(LOOPBACK, 0)));
            Ok(addrs)
        })
    }
}

struct Setup {
    url: String,
    guarded: EgressClient,
    plain: reqwest::Client,
    secret: Secret,
    body: bytes::Bytes,
}

async fn setup() -> (Setup, Receiver) {
    let ca = TestCa::new();
    let receiver =
        Receiver::start(LOOPBACK, 0, Some(ca.server_config(&["receiver.example"]))).await;
    let resolver = StaticResolver::new();
    resolver.insert("receiver.example", vec![LOOPBACK]);
    let config = EgressConfig {
        extra_roots_der: vec![ca.cert_der.clone()],
        total_timeout: Duration::from_secs(5),
        ..EgressConfig::default()
    };
    let guarded = EgressClient::new(test_egress_policy(), Arc::new(resolver), &config).unwrap();
    let plain = unguarded_client(&config, Arc::new(PlainResolver)).unwrap();
    let body = bytes::Bytes::from(
        serde_json::to_vec(&serde_json::json!({ "type": "invoice.paid", "data": { "id": "inv_1", "amount": 4200 } })).unwrap(),
    );
    (
        Setup {
            url: format!("https://receiver.example:{}/hook", receiver.addr.port()),
            guarded,
            plain,
            secret: Secret::generate(),
            body,
        },
        receiver,
    )
}

impl Setup {
    fn headers(&self) -> http::HeaderMap {
        let ts = chrono::Utc::now().timestamp();
        signed_headers(
            &[&self.secret],
            "msg_01h455vb4pex5vsknk084sn02q",
            ts,
            &self.body,
        )
    }

    async fn guarded_once(&self) {
        let out = self
            .guarded
            .post(
                bulkhead_core::TenantId::from_uuid(uuid::Uuid::from_u128(1)),
                &self.url,
                self.headers(),
                self.body.clone(),
            )
            .await;
        assert!(
            matches!(out, SendOutcome::Response { status: 200, .. }),
            "{out:?}"
        );
    }

    async fn plain_once(&self) {
        let url = url::Url::parse(&self.url).unwrap();
        let out = send_post(&self.plain, url, self.headers(), self.body.clone()).await;
        assert!(
            matches!(out, SendOutcome::Response { status: 200, .. }),
            "{out:?}"
        );
    }
}

fn delivery(c: &mut Criterion) {
    // What users run: the cluster writes as `serve`'s embedded one does (fsync and synchronous
    // commit on), not as the test suites' does.
    bulkhead_test_support::use_served_durability();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (s, _receiver) = rt.block_on(setup());

    // Same run, interleaved rounds: deliveries per second with and without the guard.
    rt.block_on(async {
        let rounds = 5;
        let per_round = 200;
        let (mut g_total, mut p_total) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..per_round {
                s.guarded_once().await;
            }
            g_total += t.elapsed();
            let t = Instant::now();
            for _ in 0..per_round {
                s.plain_once().await;
            }
            p_total += t.elapsed();
        }
        let n = f64::from(rounds * per_round);
        let g = n / g_total.as_secs_f64();
        let p = n / p_total.as_secs_f64();
        println!("sequential signed HTTPS deliveries: guarded {g:.0}/s, unguarded {p:.0}/s, guard cost ratio (unguarded rate / guarded rate) {:.3}", p / g);
        let concurrency = 16;
        let total = 1600;
        let t = Instant::now();
        let s_ref = &s;
        futures::future::join_all((0..concurrency).map(|_| async move {
            for _ in 0..total / concurrency {
                s_ref.guarded_once().await;
            }
        }))
        .await;
        println!("guarded deliveries with {concurrency} in flight: {:.0}/s", f64::from(total) / t.elapsed().as_secs_f64());
    });

    let mut group = c.benchmark_group("delivery");
    group.throughput(Throughput::Elements(1));
    group.sample_size(50);
    group.bench_function("signed_https_guarded", |b| {
        b.to_async(&rt).iter(|| s.guarded_once())
    });
    group.bench_function("signed_https_unguarded", |b| {
        b.to_async(&rt).iter(|| s.plain_once())
    });
    group.finish();

    let policy = EgressPolicy::default();
    let mut group = c.benchmark_group("guard");
    group.bench_function("check_url", |b| {
        b.iter(|| {
            policy.check_url(std::hint::black_box(
                "https://hooks.partner.example/v1/in?x=1",
            ))
        })
    });
    group.bench_function("check_ip_v6_embedded", |b| {
        b.iter(|| policy.check_ip(std::hint::black_box("64:ff9b::808:808".parse().unwrap())))
    });
    group.bench_function("sign", |b| {
        b.iter(|| {
            s.secret
                .sign("msg_01h455vb4pex5vsknk084sn02q", 1_700_000_000, &s.body)
        })
    });
    group.finish();
}

/// Enqueue-to-delivery latency at a steady 500 messages/s for 5 s: messages published through
/// the store (one transaction each, as the API does), one dispatcher process delivering them to
/// the HTTPS receiver. Printed, not a criterion measurement (an open-loop load is not an iteration).
fn latency(_c: &mut Criterion) {
    // What users run: the cluster writes as `serve`'s embedded one does (fsync and synchronous
    // commit on), not as the test suites' does.
    bulkhead_test_support::use_served_durability();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use bulkhead_core::{Actor, Clock, RequestId, TenantContext};
        use bulkhead_store::tenant::webhooks::{self as store, MessageSource, NewEndpoint};
        use bulkhead_store::Access;
        use bulkhead_webhooks::delivery::{DeliveryConfig, Dispatcher};

        let db = bulkhead_test_support::TestDb::new().await;
        let tenant = bulkhead_test_support::create_tenant(&db, "bench").await;
        let store_ = db.app_store().await;
        let ca = TestCa::new();
        let receiver = Receiver::start(LOOPBACK, 0, Some(ca.server_config(&["receiver.example"]))).await;
        receiver.set_keep_alive(true);
        let resolver = StaticResolver::new();
        resolver.insert("receiver.example", vec![LOOPBACK]);
        let config = EgressConfig { extra_roots_der: vec![ca.cert_der.clone()], ..EgressConfig::default() };
        let client = EgressClient::new(test_egress_policy(), Arc::new(resolver), &config).unwrap();
        let ctx = TenantContext::for_test(tenant.id, Actor::System { component: "bench" }, RequestId::new());
        let mut tx = store_.begin(&ctx, Access::ReadWrite).await.unwrap();
        store::create_endpoint(&mut tx, &NewEndpoint {
            url: format!("https://receiver.example:{}/", receiver.addr.port()),
            description: String::new(),
            event_types: Vec::new(),
            rate_limit_per_second: None,
            headers: serde_json::json!({}),
            secret: Secret::generate().expose_bytes().to_vec(),
            enabled: true,
        }, &bulkhead_test_support::test_master_key())
        .await
        .unwrap();
        tx.commit().await.unwrap();
        // The shipped tuning, as `serve` builds it: no setting changed.
        let dispatcher = Arc::new(Dispatcher::new(store_.clone(), client, Clock::system(), DeliveryConfig::default(), Arc::new(bulkhead_test_support::test_master_key())));
        println!("dispatcher settings: DeliveryConfig::default() unchanged ({:?}); receiver keeps connections alive", dispatcher.config());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let run = tokio::spawn(dispatcher.run(stopped));

        let rate = 500u32;
        let seconds = 5u32;
        let total = (rate * seconds) as usize;
        let mut sent = Vec::with_capacity(total);
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        // Open loop: each tick's publish runs as its own task, so a slow commit does not lower
        // the offered rate.
        let mut publishes = Vec::with_capacity(total);
        for n in 0..total {
            ticker.tick().await;
            sent.push(Instant::now());
            let (store_, ctx) = (store_.clone(), ctx.clone());
            publishes.push(tokio::spawn(async move {
                let mut tx = store_.begin(&ctx, Access::ReadWrite).await.unwrap();
                store::publish(&mut tx, "bench.tick", &serde_json::json!({ "n": n }), MessageSource::Tenant, None, chrono::Utc::now())
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }));
        }
        let offered = total as f64 / started.elapsed().as_secs_f64();
        for p in publishes {
            p.await.unwrap();
        }
        let delivered = receiver.wait_for(total, Duration::from_secs(60)).await;
        let _ = stop.send(true);
        run.abort();
        let mut latencies: Vec<Duration> = receiver
            .requests()
            .iter()
            .filter_map(|r| {
                let body: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
                let n = usize::try_from(body["n"].as_u64()?).ok()?;
                Some(r.at.duration_since(sent[n]))
            })
            .collect();
        latencies.sort();
        let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "enqueue-to-delivery at {offered:.0} msg/s offered for {seconds} s: {} of {total} delivered{}, p50 {:?}, p99 {:?}, max {:?}",
            latencies.len(),
            if delivered { "" } else { " (timed out waiting)" },
            pick(0.50),
            pick(0.99),
            latencies.last().copied().unwrap_or_default(),
        );
    });
}

criterion_group!(benches, delivery, latency);
criterion_main!(benches);
