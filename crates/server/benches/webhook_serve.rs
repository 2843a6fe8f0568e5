//! Webhook delivery through `bulkhead serve` itself (issue 25): the release-path binary started
//! as a child process with the shipped defaults, against the harness's private PostgreSQL, and
//! loopback receivers answering 204-style 200s with keep-alive.
//!
//! Settings this bench changes, all egress policy (so that deliveries may reach loopback at
//! all), none of them delivery tuning: `BULKHEAD_WEBHOOK_ALLOW_HTTP=true`,
//! `BULKHEAD_WEBHOOK_PORTS=<receiver ports>`, `BULKHEAD_WEBHOOK_ALLOW_CIDRS=127.0.0.1/32`. It
//! prints them at start.
//!
//! Messages are published from this process with the same store call the publish route makes
//! (`webhooks::publish` in the tenant's transaction; the commit sends the NOTIFY that wakes
//! `serve`'s dispatcher): the API's per-key rate limits would otherwise cap the offered load,
//! and HTTP publishing is not what this measures. Enqueue time is the commit's return;
//! delivery time is the receiver's arrival of the whole request.
//!
//! Phases: (a) one tenant, one endpoint, WEBHOOK_BENCH_N messages (default 5000) published as
//! fast as WEBHOOK_BENCH_PUBLISHERS publishers (default 8) can: deliveries per second; (b) open
//! loop at 500 messages/s for 10 s: enqueue-to-delivery p50/p99; (c) 100 tenants publishing 20
//! messages each at once, once with every endpoint healthy and once with one tenant's endpoint
//! hanging, then healthy again: the other tenants' p99 and the ratio of the hanging round's to
//! the healthy rounds' mean; (e) idle with the tenants made by then: CPU over 10 s. CPU per 1,000 deliveries counts `serve` and the PostgreSQL cluster (postmaster,
//! its children, and its reaped children), from /proc/<pid>/stat.
//!
//! When `taskset` exists, the server and PostgreSQL are pinned to CPU 0 (`taskset -c 0 bulkhead
//! serve …`, `taskset -a -p -c 0` on the postmaster and each process it has started) and the
//! bench process, which publishes and runs the receivers, pins itself to CPU 1 (`taskset -a -p
//! -c 1 <own pid>`) before starting any thread. `WEBHOOK_BENCH_PIN=0` pins nothing (printed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use bulkhead_server::config::DEFAULT_MAX_CONNECTIONS;
use bulkhead_store::tenant::webhooks::{self as store, MessageSource, NewEndpoint};
use bulkhead_store::{Access, Store};
use bulkhead_test_support::receiver::{Receiver, Reply};
use bulkhead_test_support::{create_tenant, test_master_key, test_pepper, TestDb};
use serde_json::json;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const MASTER_KEY: &str = "base64:YnVsa2hlYWQtdGVzdC1tYXN0ZXIta2V5LTAxMjM0NTY3ODk=";

fn env_or(name: &str, default: u64) -> u64 {
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

/// Clock ticks (utime + stime) of a process, with its reaped children when `children`.
fn ticks(pid: u32, children: bool) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    let get = |field: usize| fields.get(field - 3).copied().unwrap_or(0);
    get(14) + get(15) + if children { get(16) + get(17) } else { 0 }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds so far of `serve` and of the PostgreSQL cluster under `postmaster`.
fn cpu_seconds(serve: u32, postmaster: u32) -> f64 {
    let total = ticks(serve, true)
        + ticks(postmaster, true)
        + children_of(postmaster)
            .into_iter()
            .map(|pid| ticks(pid, false))
            .sum::<u64>();
    // USER_HZ is 100 on every Linux this runs on.
    total as f64 / 100.0
}

/// The live children of `parent` (PostgreSQL's backends and background processes).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// Whether to pin: `taskset` exists and `WEBHOOK_BENCH_PIN` is not `0` (unpinned, everything
/// shares every CPU, as the side-by-side run of Svix did).
fn pinning() -> bool {
    if std::env::var("WEBHOOK_BENCH_PIN").is_ok_and(|v| v == "0") {
        return false;
    }
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Serve {
    child: Child,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

async fn start_serve(db: &TestDb, ports: &str, pin: bool) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary = env!("CARGO_BIN_EXE_bulkhead");
    let mut command = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", binary]);
        c
    } else {
        Command::new(binary)
    };
    let log = std::env::temp_dir().join(format!("bulkhead-webhook-bench-{port}.log"));
    let child = command
        .env("DATABASE_URL", db.owner_url())
        .env("BULKHEAD_APP_DATABASE_URL", db.app_url())
        .env("BULKHEAD_KEY_PEPPER", test_pepper().to_config_string())
        .env("BULKHEAD_MASTER_KEY", MASTER_KEY)
        // Required with DATABASE_URL; a fixed bench value.
        .env(
            "BULKHEAD_AUDIT_LOG_KEY",
            "base64:YnVsa2hlYWQtYmVuY2gtYXVkaXQtbG9nLWtleS0zMmI=",
        )
        .env("BULKHEAD_ISSUER", "http://bulkhead.bench.test")
        .env("BULKHEAD_WEBHOOK_ALLOW_HTTP", "true")
        .env("BULKHEAD_WEBHOOK_PORTS", ports)
        .env("BULKHEAD_WEBHOOK_ALLOW_CIDRS", "127.0.0.1/32")
        .env("RUST_LOG", "warn")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        // serve logs (warnings and up) to stdout: kept with stderr for a failed run's reader.
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .expect("start bulkhead serve");
    let serve = Serve {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = bulkhead_test_support::loopback_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", serve.base)).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "serve never became ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve
}

async fn endpoint(store: &Store, tenant: TenantId, url: &str) {
    let mut tx = store.begin(&ctx(tenant), Access::ReadWrite).await.unwrap();
    store::create_endpoint(
        &mut tx,
        &NewEndpoint {
            url: url.into(),
            description: String::new(),
            event_types: Vec::new(),
            rate_limit_per_second: None,
            headers: json!({}),
            secret: bulkhead_webhooks::Secret::generate()
                .expose_bytes()
                .to_vec(),
            enabled: true,
        },
        &test_master_key(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Publishes one message tagged `tag` and returns when its transaction has committed.
async fn publish(store: &Store, tenant: TenantId, tag: &str) -> Instant {
    try_publish(store, tenant, tag)
        .await
        .expect("publish a bench message")
}

/// Like [`publish`], `None` when the transaction could not be had or committed.
async fn try_publish(store: &Store, tenant: TenantId, tag: &str) -> Option<Instant> {
    let mut tx = store.begin(&ctx(tenant), Access::ReadWrite).await.ok()?;
    store::publish(
        &mut tx,
        "bench.tick",
        &json!({ "tag": tag }),
        MessageSource::Tenant,
        None,
        chrono::Utc::now(),
    )
    .await
    .ok()?;
    tx.commit().await.ok()?;
    Some(Instant::now())
}

/// Arrival time of each tagged message at `receiver`.
fn arrivals(receiver: &Receiver) -> HashMap<String, Instant> {
    receiver
        .requests()
        .into_iter()
        .filter_map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            Some((body["data"]["tag"].as_str()?.to_owned(), r.at))
        })
        .collect()
}

fn latencies(sent: &HashMap<String, Instant>, got: &HashMap<String, Instant>) -> Vec<Duration> {
    let mut out: Vec<Duration> = sent
        .iter()
        .filter_map(|(tag, at)| Some(got.get(tag)?.saturating_duration_since(*at)))
        .collect();
    out.sort();
    out
}

fn pick(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

async fn wait_for(receiver: &Receiver, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if receiver.count() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

fn main() {
    // What users run: the cluster writes as `serve`'s embedded one does (fsync and synchronous
    // commit on), not as the test suites' does.
    bulkhead_test_support::use_served_durability();
    if pinning() {
        // The load generator and the receivers (this process, every thread it starts from here
        // on) on CPU 1, away from serve and PostgreSQL on CPU 0.
        let pinned = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        println!("bench process (publishers, receivers) pinned to CPU 1: {pinned}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let n = env_or("WEBHOOK_BENCH_N", 5000) as usize;
    let db = TestDb::new().await;
    bulkhead_test_support::ensure_signing_keys(&db).await;
    // Publishers go through a store sized as `serve`'s serving pool, so one tenant may hold the
    // transactions it may hold there (a quarter of the pool), not the test harness's two.
    let store = Store::connect_app(db.app_options.clone(), DEFAULT_MAX_CONNECTIONS)
        .await
        .unwrap();
    // The open-loop publishers of (b) hold up to 8 transactions at once (more than the 5 a
    // tenant holds in `serve`: an offered load never throttled by the door). A publish that
    // still waits past the pool's acquire timeout is counted as not published, not a crash of
    // the bench.
    let open_loop_store =
        Store::from_pool_unchecked(db.app_pool(8).await).with_tenant_connection_cap(8);
    let fast = Receiver::start(LOOPBACK, 0, None).await;
    fast.set_keep_alive(true);
    let hanging = Receiver::start(LOOPBACK, 0, None).await;
    hanging.set_default(Reply::Hang);
    let ports = format!("{},{}", fast.addr.port(), hanging.addr.port());
    let pin = pinning();
    // PostgreSQL runs on the server's CPU too: its postmaster is a backend's parent.
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&db.owner_pool().await)
        .await
        .unwrap();
    let postmaster = parent_of(backend as u32).expect("postmaster pid");
    if pin {
        // The postmaster and every process it has already started (backends connected so far,
        // the WAL writer, the checkpointer, ...): only processes forked later inherit its CPU.
        for pid in std::iter::once(postmaster).chain(children_of(postmaster)) {
            let _ = Command::new("taskset")
                .args(["-a", "-p", "-c", "0", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    println!(
        "settings changed from serve's defaults: BULKHEAD_WEBHOOK_ALLOW_HTTP=true \
         BULKHEAD_WEBHOOK_PORTS={ports} BULKHEAD_WEBHOOK_ALLOW_CIDRS=127.0.0.1/32 (egress policy \
         only; delivery tuning is DeliveryConfig::default()); serve and PostgreSQL pinned to CPU 0: {pin}"
    );
    let serve = start_serve(&db, &ports, pin).await;
    let serve_pid = serve.child.id();
    let hook = format!("http://127.0.0.1:{}/hook", fast.addr.port());

    // (a) One tenant, one endpoint, N messages.
    let solo = create_tenant(&db, "solo").await;
    endpoint(&store, solo.id, &hook).await;
    let cpu0 = cpu_seconds(serve_pid, postmaster);
    let started = Instant::now();
    // One tenant's concurrent publishers queue on its rows (the quota counter until commit):
    // the count is a setting so that cost can be told from the delivery's.
    let writers = env_or("WEBHOOK_BENCH_PUBLISHERS", 8).clamp(1, 64) as usize;
    if writers != 8 {
        println!("(a) publishers: {writers} (WEBHOOK_BENCH_PUBLISHERS; default 8)");
    }
    let per = n.div_ceil(writers);
    let mut publishers = Vec::new();
    for p in 0..writers {
        let store = store.clone();
        publishers.push(tokio::spawn(async move {
            for i in (p * per)..((p + 1) * per).min(n) {
                publish(&store, solo.id, &format!("a{i}")).await;
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let published = started.elapsed();
    let done = wait_for(&fast, n, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(serve_pid, postmaster) - cpu0;
    let delivered = fast.count().min(n);
    println!(
        "(a) one tenant, one endpoint: {delivered} of {n} delivered{} in {:.2} s (published in {:.2} s): \
         {:.0} deliveries/s; CPU (serve + PostgreSQL) {:.2} s per 1,000 deliveries; connections opened {}",
        if done { "" } else { " (timed out)" },
        elapsed.as_secs_f64(),
        published.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        cpu / (delivered.max(1) as f64 / 1000.0),
        fast.connections(),
    );

    // (a2) The same endpoint draining a backlog: N messages published while the tenant is
    // suspended (the claim skips it), then reactivated (which wakes the workers at once).
    let owner = db.owner_store().await;
    let backlog = create_tenant(&db, "backlog").await;
    endpoint(&store, backlog.id, &hook).await;
    owner
        .set_tenant_status(
            backlog.id,
            bulkhead_store::placement::registry::TenantStatus::Suspended,
        )
        .await
        .unwrap();
    let per = n.div_ceil(8);
    let mut publishers = Vec::new();
    for p in 0..8 {
        let store = store.clone();
        publishers.push(tokio::spawn(async move {
            for i in (p * per)..((p + 1) * per).min(n) {
                publish(&store, backlog.id, &format!("a2x{i}")).await;
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let before = fast.count();
    let cpu0 = cpu_seconds(serve_pid, postmaster);
    let started = Instant::now();
    owner
        .set_tenant_status(
            backlog.id,
            bulkhead_store::placement::registry::TenantStatus::Active,
        )
        .await
        .unwrap();
    let done = wait_for(&fast, before + n, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(serve_pid, postmaster) - cpu0;
    let delivered = (fast.count() - before).min(n);
    println!(
        "(a2) one tenant, one endpoint, backlog of {n}: {delivered} delivered{} in {:.2} s: \
         {:.0} deliveries/s; CPU (serve + PostgreSQL) {:.2} s per 1,000 deliveries",
        if done { "" } else { " (timed out)" },
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        cpu / (delivered.max(1) as f64 / 1000.0),
    );

    // (b) Open loop at 500 messages/s for 10 s.
    let rate = env_or("WEBHOOK_BENCH_RATE", 500) as u32;
    let seconds = env_or("WEBHOOK_BENCH_SECONDS", 10) as u32;
    let before = fast.count();
    let total = (rate * seconds) as usize;
    let cpu0 = cpu_seconds(serve_pid, postmaster);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        ticker.tick().await;
        let store = open_loop_store.clone();
        tasks.push(tokio::spawn(async move {
            let tag = format!("b{i}");
            let at = try_publish(&store, solo.id, &tag).await;
            (tag, at)
        }));
    }
    let offered = total as f64 / started.elapsed().as_secs_f64();
    let mut sent = HashMap::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (tag, Some(at)) => {
                sent.insert(tag, at);
            }
            (_, None) => refused += 1,
        }
    }
    if refused > 0 {
        println!(
            "(b) {refused} of {total} publishes failed (the database was too slow to take them)"
        );
    }
    let done = wait_for(&fast, before + sent.len(), Duration::from_secs(30)).await;
    let cpu = cpu_seconds(serve_pid, postmaster) - cpu0;
    let lat = latencies(&sent, &arrivals(&fast));
    println!(
        "(b) open loop {offered:.0} msg/s offered for {seconds} s: {} of {total} delivered{}; \
         enqueue-to-delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; CPU {:.2} s per 1,000 deliveries",
        lat.len(),
        if done { "" } else { " (timed out)" },
        pick(&lat, 0.5).as_secs_f64() * 1e3,
        pick(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        cpu / (lat.len().max(1) as f64 / 1000.0),
    );

    // (c) 100 tenants at once: healthy, with one hanging endpoint, healthy again. Each round
    // adds 100 tenants, so the hanging round is compared with the healthy rounds on both sides of
    // it (with only the one before it, anything that grows with the deployment counted against
    // the hanging endpoint).
    let per_tenant = env_or("WEBHOOK_BENCH_PER_TENANT", 20) as usize;
    let hang_hook = format!("http://127.0.0.1:{}/hook", hanging.addr.port());
    let mut p99s = Vec::new();
    for (round, with_hang) in [(0, false), (1, true), (2, false)] {
        let mut tenants = Vec::new();
        for t in 0..100 {
            let tenant = create_tenant(&db, &format!("fair{round}x{t}")).await;
            let url = if with_hang && t == 0 {
                &hang_hook
            } else {
                &hook
            };
            endpoint(&store, tenant.id, url).await;
            tenants.push(tenant.id);
        }
        let before = fast.count();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (t, tenant) in tenants.iter().enumerate() {
            let (store, tenant) = (store.clone(), *tenant);
            tasks.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                for i in 0..per_tenant {
                    let tag = format!("c{round}t{t}m{i}");
                    let at = publish(&store, tenant, &tag).await;
                    sent.push((t, tag, at));
                }
                sent
            }));
        }
        let mut sent = HashMap::new();
        for task in tasks {
            for (t, tag, at) in task.await.unwrap() {
                // The others: every tenant but the one that may hang.
                if t != 0 {
                    sent.insert(tag, at);
                }
            }
        }
        let others = 99 * per_tenant;
        let expected = before
            + if with_hang {
                others
            } else {
                others + per_tenant
            };
        let done = wait_for(&fast, expected, Duration::from_secs(30)).await;
        let lat = latencies(&sent, &arrivals(&fast));
        println!(
            "(c) 100 tenants x {per_tenant} messages, {}: others {} of {others} delivered{} in {:.2} s; \
             p50 {:.1} ms, p99 {:.1} ms",
            if with_hang { "one endpoint hanging" } else { "all endpoints healthy" },
            lat.len(),
            if done { "" } else { " (timed out)" },
            started.elapsed().as_secs_f64(),
            pick(&lat, 0.5).as_secs_f64() * 1e3,
            pick(&lat, 0.99).as_secs_f64() * 1e3,
        );
        p99s.push(pick(&lat, 0.99));
    }
    let healthy = (p99s[0].as_secs_f64() + p99s[2].as_secs_f64()) / 2.0;
    println!(
        "(c) others' p99 with a hanging endpoint / the healthy rounds' mean: {:.2}x \
         (against the round before it: {:.2}x, after it: {:.2}x)",
        p99s[1].as_secs_f64() / healthy.max(1e-9),
        p99s[1].as_secs_f64() / p99s[0].as_secs_f64().max(1e-9),
        p99s[1].as_secs_f64() / p99s[2].as_secs_f64().max(1e-9),
    );

    // (e) Idle: what `serve` and PostgreSQL spend when nothing is published, with the tenants
    // the phases above made (the hanging endpoint's retries wait minutes by now).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM bulkhead.tenants")
        .fetch_one(&db.owner_pool().await)
        .await
        .unwrap();
    let idle_seconds = env_or("WEBHOOK_BENCH_IDLE_SECONDS", 10);
    let cpu0 = cpu_seconds(serve_pid, postmaster);
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let cpu = cpu_seconds(serve_pid, postmaster) - cpu0;
    println!(
        "(e) idle, {tenants} tenants: serve + PostgreSQL used {cpu:.2} s of CPU in {idle_seconds} s ({:.1} % of a core)",
        cpu * 100.0 / idle_seconds as f64
    );
    drop(serve);
}
