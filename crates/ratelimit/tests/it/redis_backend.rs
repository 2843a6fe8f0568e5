//! The Redis backend against a real `redis-server` of the test's own (127.0.0.1 only).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_core::TenantId;
use bulkhead_ratelimit::{
    Fallback, GlobalMode, Level, LimitConfig, Limiter, Plan, Quota, RedisOptions, Request, Source,
};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

use crate::memory::{all_or_nothing_config, all_or_nothing_scenario};
use crate::support::{advance, four_level_config, manual_clock, RedisServer};

/// Generous timeouts: on a busy 2-core machine running debug tests in parallel, a 50 ms budget
/// could send a decision to the fallback and make a comparison test flaky.
fn options(url: String) -> RedisOptions {
    RedisOptions {
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        retry_interval: Duration::from_millis(300),
        ..RedisOptions::new(url)
    }
}

#[tokio::test]
async fn a_rejection_at_the_agent_level_charges_no_other_level_in_redis() {
    let server = RedisServer::start();
    let limiter = Limiter::redis(
        all_or_nothing_config(),
        manual_clock(),
        options(server.url()),
    )
    .unwrap();
    all_or_nothing_scenario(&limiter, Source::Backend).await;
}

/// A small deterministic generator (xorshift64*), so the sequence is the same on every run.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
    }
}

#[tokio::test]
async fn redis_and_memory_make_the_same_decisions_over_a_scripted_sequence() {
    let server = RedisServer::start();
    let clock = manual_clock();
    let memory = Limiter::in_memory(four_level_config(), clock.clone());
    let redis = Limiter::redis(four_level_config(), clock.clone(), options(server.url())).unwrap();
    let tenants = [
        (TenantId::new(), Plan::Free),
        (TenantId::new(), Plan::Standard),
        (TenantId::new(), Plan::Enterprise),
    ];
    let agents = ["agent-a", "agent-b"];
    let classes = ["default", "token"];
    let steps_ms = [0, 0, 0, 0, 250, 500, 1_000, 3_000];

    let mut sequence = Sequence(0x9E37_79B9_7F4A_7C15);
    let mut allowed = 0;
    let mut rejected_by: BTreeMap<Level, u32> = BTreeMap::new();
    const REQUESTS: usize = 400;
    for i in 0..REQUESTS {
        let (tenant, plan) = tenants[sequence.next(3) as usize];
        let agent = agents[sequence.next(2) as usize];
        let class = classes[sequence.next(2) as usize];
        advance(&clock, steps_ms[sequence.next(8) as usize] * 1_000);
        let request = Request::new(tenant, plan, class).with_agent(agent);

        let in_memory = memory.check(&request).await;
        let in_redis = redis.check(&request).await;
        assert_eq!(in_redis.source, Source::Backend, "request {i} fell back");
        assert_eq!(in_memory, in_redis, "request {i}: {request:?}");
        if in_redis.allowed {
            allowed += 1;
        } else {
            *rejected_by
                .entry(in_redis.rejected_by.unwrap())
                .or_default() += 1;
        }
    }
    eprintln!("{allowed} allowed; rejections by level: {rejected_by:?}");
    // The sequence exercised every level, and both outcomes.
    for level in [Level::Global, Level::Tenant, Level::Agent, Level::Endpoint] {
        assert!(
            rejected_by.contains_key(&level),
            "{level} never rejected: {rejected_by:?}"
        );
    }
    assert!(
        allowed > REQUESTS / 5 && allowed < REQUESTS * 9 / 10,
        "{allowed} allowed"
    );
}

#[tokio::test]
async fn keys_share_the_tenant_hash_tag_and_expire_when_fully_rested() {
    let server = RedisServer::start();
    let mut config = LimitConfig {
        global: Some(Quota::per_minute(600)),
        per_agent: Some(Quota::per_minute(30)),
        ..LimitConfig::default()
    };
    config.plans.insert(Plan::Free, Quota::per_minute(60));
    let limiter = Limiter::redis(config, manual_clock(), options(server.url())).unwrap();
    let tenant = TenantId::new();
    let decision = limiter
        .check(&Request::new(tenant, Plan::Free, "default").with_agent("key_1"))
        .await;
    assert!(decision.allowed);

    let client = ::redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Rest time = one emission interval: 1 s for the tenant, 2 s for the agent, 100 ms global.
    for (key, rest_ms) in [
        (format!("bulkhead:rl:{{{tenant}}}:t"), 1_000),
        (format!("bulkhead:rl:{{{tenant}}}:a:key_1"), 2_000),
        ("bulkhead:rl:{global}:g".to_owned(), 100),
    ] {
        let pttl: i64 = ::redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(pttl > rest_ms - 500 && pttl <= rest_ms, "{key}: {pttl} ms");
    }
}

/// Counts counters by name, for one thread (`metrics::with_local_recorder`).
#[derive(Debug, Default, Clone)]
struct CountingRecorder {
    counters: Arc<Mutex<HashMap<String, Arc<Count>>>>,
}

#[derive(Debug, Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl CountingRecorder {
    fn get(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |count| count.0.load(Ordering::Relaxed))
    }
}

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let count = Arc::clone(
            self.counters
                .lock()
                .unwrap()
                .entry(key.name().to_owned())
                .or_default(),
        );
        Counter::from_arc(count)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Runs `body` on a current-thread runtime with `recorder` installed for this thread.
fn with_recorder<F: std::future::Future<Output = ()>>(recorder: &CountingRecorder, body: F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(recorder, || runtime.block_on(body));
}

const ERRORS: &str = "bulkhead_ratelimit_backend_errors_total";
const FALLBACKS: &str = "bulkhead_ratelimit_fallback_decisions_total";

fn ten_per_minute() -> LimitConfig {
    let mut config = LimitConfig::default();
    config.plans.insert(Plan::Free, Quota::per_minute(10));
    config
}

#[test]
fn an_outage_falls_back_to_local_decisions_and_redis_resumes_after_restart() {
    let recorder = CountingRecorder::default();
    with_recorder(&recorder, async {
        let mut server = RedisServer::start();
        let limiter =
            Limiter::redis(ten_per_minute(), manual_clock(), options(server.url())).unwrap();
        let request = Request::new(TenantId::new(), Plan::Free, "default");
        for remaining in [9, 8, 7] {
            let decision = limiter.check(&request).await;
            assert_eq!(decision.source, Source::Backend);
            assert_eq!(decision.limiting.unwrap().remaining, remaining);
        }

        server.stop();
        // Fallback::Local: decisions go on in process, from the process's own (fresh) state.
        for remaining in [9, 8, 7, 6] {
            let decision = limiter.check(&request).await;
            assert_eq!(decision.source, Source::LocalFallback);
            assert!(decision.allowed);
            assert_eq!(decision.limiting.unwrap().remaining, remaining);
        }
        let errors = recorder.get(ERRORS);
        assert!(errors >= 1, "the outage was counted");
        // After the first failure the next attempt waits for retry_interval: no error per request.
        assert!(errors < 4, "{errors} errors for 4 decisions");
        assert_eq!(recorder.get(FALLBACKS), 4);

        server.restart();
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Back in Redis (which lost its state with the restart: nothing is persisted).
        for remaining in [9, 8] {
            let decision = limiter.check(&request).await;
            assert_eq!(decision.source, Source::Backend);
            assert_eq!(decision.limiting.unwrap().remaining, remaining);
        }
        assert_eq!(recorder.get(FALLBACKS), 4);
    });
}

#[test]
fn an_outage_with_the_deny_policy_denies_everything_until_redis_returns() {
    let recorder = CountingRecorder::default();
    with_recorder(&recorder, async {
        let mut server = RedisServer::start();
        let options = RedisOptions {
            fallback: Fallback::Deny,
            ..options(server.url())
        };
        let limiter = Limiter::redis(ten_per_minute(), manual_clock(), options).unwrap();
        let request = Request::new(TenantId::new(), Plan::Free, "default");
        assert!(limiter.check(&request).await.allowed);

        server.stop();
        for _ in 0..5 {
            let decision = limiter.check(&request).await;
            assert!(!decision.allowed);
            assert_eq!(decision.source, Source::Unavailable);
            assert_eq!(decision.rejected_by, None);
            assert_eq!(decision.retry_after, Some(Duration::from_millis(300)));
            assert_eq!(
                bulkhead_ratelimit::header_values(&decision),
                vec![("retry-after", "1".to_owned())]
            );
        }
        assert!(recorder.get(ERRORS) >= 1);

        server.restart();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let decision = limiter.check(&request).await;
        assert!(decision.allowed);
        assert_eq!(decision.source, Source::Backend);
    });
}

#[tokio::test]
async fn a_limiter_started_before_redis_connects_once_it_is_up() {
    let port = RedisServer::unused_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let limiter = Limiter::redis(ten_per_minute(), manual_clock(), options(url)).unwrap();
    let request = Request::new(TenantId::new(), Plan::Free, "default");
    let decision = limiter.check(&request).await;
    assert_eq!(decision.source, Source::LocalFallback);
    assert!(decision.allowed);

    let server = RedisServer::start_on(port);
    assert_eq!(server.port(), port);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let decision = limiter.check(&request).await;
    assert_eq!(decision.source, Source::Backend);
    assert_eq!(decision.limiting.unwrap().remaining, 9);
}

#[tokio::test]
async fn with_a_local_global_share_a_global_rejection_touches_nothing_in_redis() {
    let server = RedisServer::start();
    let mut config = LimitConfig {
        global: Some(Quota::per_minute(10)),
        ..LimitConfig::default()
    };
    config.plans.insert(Plan::Standard, Quota::per_minute(8));
    let options = RedisOptions {
        global: GlobalMode::LocalShare { processes: 2 },
        ..options(server.url())
    };
    // Two "processes" sharing one Redis, each with half the global budget.
    let clock = manual_clock();
    let first = Limiter::redis(config.clone(), clock.clone(), options.clone()).unwrap();
    let second = Limiter::redis(config, clock.clone(), options).unwrap();
    let request = Request::new(TenantId::new(), Plan::Standard, "default");

    for _ in 0..5 {
        assert!(first.check(&request).await.allowed);
    }
    for _ in 0..3 {
        let decision = first.check(&request).await;
        assert_eq!(decision.rejected_by, Some(Level::Global));
        assert_eq!(
            decision.limiting.unwrap().quota.count(),
            5,
            "the share is reported"
        );
        assert_eq!(decision.source, Source::Backend);
    }
    // The tenant (in Redis) was charged for the 5 allowed requests only.
    let decision = second.check(&request).await;
    assert!(decision.allowed);
    let state = decision.limiting.unwrap();
    assert_eq!((state.level, state.remaining), (Level::Tenant, 8 - 6));

    // The share refills at its own rate: 5 per minute, one every 12 s.
    advance(&clock, 12_000_000);
    assert!(first.check(&request).await.allowed);
}
