//! Rate limiter benchmarks.
//!
//! - In process (criterion): one four-level decision (global + tenant + agent + endpoint) against
//!   one `governor` keyed check, in the same run, then a side-by-side timing loop that prints the
//!   ratio (target: four levels ≤ 4× one governor check).
//! - Redis (plain timing loop, printed): decisions per second from one process over one
//!   multiplexed connection with concurrent tasks (target ≥ 30k/s), and median / p99 latency. It
//!   starts its own `redis-server` on a loopback port, and is skipped with a note if
//!   `redis-server` is not installed.
//!
//! `cargo bench -p bulkhead-ratelimit --bench limits`

use std::future::Future;
use std::hint::black_box;
use std::net::TcpListener;
use std::num::NonZeroU32;
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bulkhead_core::{Clock, TenantId};
use bulkhead_ratelimit::{
    ClassQuota, Decision, LimitConfig, Limiter, Plan, Quota, RedisOptions, Request, Source,
};
use criterion::{criterion_group, criterion_main, Criterion};

const TENANTS: usize = 1_000;

/// Quotas nothing in a benchmark run can exhaust, so every decision takes the "allowed and
/// committed" path at all four levels.
fn four_level_config() -> LimitConfig {
    let huge = Quota::per_second(u32::MAX).with_burst(u32::MAX);
    let mut config = LimitConfig {
        global: Some(huge),
        per_agent: Some(huge),
        ..LimitConfig::default()
    };
    config.plans.insert(Plan::Standard, huge);
    config
        .classes
        .insert("token".into(), ClassQuota::limited(2, huge));
    config
}

type Governor = governor::DefaultKeyedRateLimiter<TenantId>;

fn governor_limiter() -> Governor {
    let max = NonZeroU32::new(u32::MAX).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::keyed(governor::Quota::per_second(max))
}

/// The in-process limiter never suspends: poll once with a no-op waker (no runtime overhead).
fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-process limiter suspended"),
    }
}

fn four_levels(limiter: &Limiter, tenant: TenantId) -> Decision {
    let request = Request::new(tenant, Plan::Standard, "token").with_agent("key_01");
    now_or_never(limiter.check(&request))
}

/// Whether a part runs: with no filter argument all do; with one, the parts whose name contains
/// it (`cargo bench --bench limits -- redis`).
fn selected(part: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|filter| part.contains(filter.as_str()))
}

fn in_process(c: &mut Criterion) {
    if !selected("in_process/four_level_decision in_process/governor_keyed_check") {
        return;
    }
    let tenants: Vec<TenantId> = (0..TENANTS).map(|_| TenantId::new()).collect();
    let limiter = Limiter::in_memory(four_level_config(), Clock::system());
    let governor = governor_limiter();
    assert!(four_levels(&limiter, tenants[0]).allowed);
    assert!(governor.check_key(&tenants[0]).is_ok());

    let mut group = c.benchmark_group("in_process");
    let mut i = 0usize;
    group.bench_function("four_level_decision", |b| {
        b.iter(|| {
            i = (i + 1) % TENANTS;
            black_box(four_levels(&limiter, tenants[i]))
        })
    });
    let mut j = 0usize;
    group.bench_function("governor_keyed_check", |b| {
        b.iter(|| {
            j = (j + 1) % TENANTS;
            black_box(governor.check_key(&tenants[j]).is_ok())
        })
    });
    group.finish();

    // Side by side: short interleaved rounds, so a burst of load from elsewhere on the machine
    // hits both sides of a pair alike; the ratio is the median of the per-pair ratios.
    const ROUND: usize = 50_000;
    const PAIRS: usize = 41;
    let mut ours = Vec::with_capacity(PAIRS);
    let mut theirs = Vec::with_capacity(PAIRS);
    let mut ratios = Vec::with_capacity(PAIRS);
    for _ in 0..PAIRS {
        let start = Instant::now();
        for k in 0..ROUND {
            black_box(four_levels(&limiter, tenants[k % TENANTS]));
        }
        let four = start.elapsed().as_nanos() as f64 / ROUND as f64;
        let start = Instant::now();
        for k in 0..ROUND {
            black_box(governor.check_key(&tenants[k % TENANTS]).is_ok());
        }
        let one = start.elapsed().as_nanos() as f64 / ROUND as f64;
        ours.push(four);
        theirs.push(one);
        ratios.push(four / one);
    }
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));
    println!(
        "\nin process: four-level decision {ours:.1} ns, governor keyed check {theirs:.1} ns \
         (medians of {PAIRS} rounds); median per-round ratio {:.2}x (target <= 4x)\n",
        median(&mut ratios)
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A `redis-server` of the benchmark's own on 127.0.0.1, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis(_: &mut Criterion) {
    if !selected("redis") {
        return;
    }
    let Some(server) = RedisServer::start() else {
        println!("redis: skipped (redis-server is not installed or did not start)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("redis://127.0.0.1:{}/", server.port);
    let options = RedisOptions {
        // A saturated 2-core machine (client and server on it) must not turn slow replies into
        // fallback decisions: they are counted and reported instead.
        timeout: Duration::from_secs(1),
        ..RedisOptions::new(url)
    };
    let limiter = Limiter::redis(four_level_config(), Clock::system(), options).expect("limiter");
    let tenants: Arc<Vec<TenantId>> = Arc::new((0..TENANTS).map(|_| TenantId::new()).collect());

    runtime.block_on(async {
        // Warm up: connect and load the script.
        let request = Request::new(tenants[0], Plan::Standard, "token").with_agent("key_01");
        assert_eq!(limiter.check(&request).await.source, Source::Backend);

        // Sequential: one decision at a time, the unloaded round trip.
        let mut latencies = Vec::with_capacity(5_000);
        for k in 0..5_000 {
            let request =
                Request::new(tenants[k % TENANTS], Plan::Standard, "token").with_agent("key_01");
            let start = Instant::now();
            black_box(limiter.check(&request).await);
            latencies.push(start.elapsed());
        }
        latencies.sort();
        println!(
            "redis, sequential: median {:?}, p99 {:?}",
            latencies[latencies.len() / 2],
            latencies[latencies.len() * 99 / 100]
        );

        for tasks in [16usize, 64, 256] {
            let per_task = 60_000 / tasks;
            let start = Instant::now();
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let limiter = limiter.clone();
                    let tenants = Arc::clone(&tenants);
                    tokio::spawn(async move {
                        let mut latencies = Vec::with_capacity(per_task);
                        let mut fallbacks = 0u32;
                        for k in 0..per_task {
                            let tenant = tenants[(t * per_task + k) % TENANTS];
                            let request =
                                Request::new(tenant, Plan::Standard, "token").with_agent("key_01");
                            let begin = Instant::now();
                            let decision = limiter.check(&request).await;
                            latencies.push(begin.elapsed());
                            if decision.source != Source::Backend {
                                fallbacks += 1;
                            }
                        }
                        (latencies, fallbacks)
                    })
                })
                .collect();
            let mut latencies = Vec::with_capacity(60_000);
            let mut fallbacks = 0;
            for handle in handles {
                let (mut part, fell) = handle.await.expect("task");
                latencies.append(&mut part);
                fallbacks += fell;
            }
            let elapsed = start.elapsed();
            latencies.sort();
            println!(
                "redis, {tasks} concurrent tasks: {:.0} decisions/s, median {:?}, p99 {:?}, \
                 {fallbacks} fell back (target >= 30000/s)",
                latencies.len() as f64 / elapsed.as_secs_f64(),
                latencies[latencies.len() / 2],
                latencies[latencies.len() * 99 / 100]
            );
        }
    });
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = in_process, redis
}

criterion_main!(benches);
