//! Noisy neighbours at the resource level (issues 28 and 27): tenant B, the victim, sends one
//! `GET /v1/sessions` every 20 ms; its p50/p99 is measured alone and then while tenant A (or an
//! anonymous caller aimed at A) runs each attack, in the same run, against the built `serve`
//! binary with its shipped defaults, started as a child process the way `webhook_serve` does,
//! against the harness's private PostgreSQL.
//!
//! Attacks, each for NOISY_SECONDS (default 10):
//! - (a) password hashing at A's full allowed rate: A creating users with fresh emails; logins
//!   with a wrong password for A's existing users (a fresh `X-Forwarded-For` address each, so
//!   only the per-account lock and the hashing pool hold them back); anonymous logins with
//!   fresh emails from fresh addresses; each task waits out a 429 or 503 `Retry-After`, so A
//!   hashes at its full allowed rate. Target: B's p99 ≤ 3× alone.
//! - (b) heavy lists: A holds NOISY_SESSIONS (default 1,000,000) sessions, seeded straight into
//!   the database with one `INSERT … SELECT generate_series` as the cluster's superuser (the API's
//!   rate limits would take hours); 24 and then 64 concurrent `GET /v1/sessions?state=closed&limit=200`
//!   plus 4 tasks cycling the audit-event filters, each task waiting out a 429's `Retry-After`
//!   (A stays inside its limits, as the issue measured). Target: B's p99 ≤ 2× alone. Then the
//!   same 64 ignoring every 429 (a flood; no target, shown for comparison).
//! - (c) slow-loris: NOISY_LORIS (default 4,000) connections from 16 loopback source addresses
//!   (127.0.0.2…) that send half a request head and then one header line a second, reconnecting
//!   when the server closes them; then 11,000 from 44 addresses, past the total cap of 10,000.
//!   B keeps its keep-alive connection; a second probe of B opens a fresh connection every
//!   500 ms. Reported: B's p99 and errors on both.
//! - (d) hostile schemas (issue 27): A registers a tool for every corpus case registration
//!   accepts and calls the ones whose input must be refused (fan-out, slow patterns with
//!   ~900 KB strings, …) from 8 tasks, and registers the refused ones again and again, each
//!   task waiting out a 429's `Retry-After`. Target: B's p99 ≤ 2× alone. Then the same ignoring
//!   every 429 (a flood of large bodies; no target, shown for comparison).
//!
//! NOISY_PHASES (default `abcd`) picks the attacks by letter.
//!
//! Baselines: before every attack the database is vacuumed and B runs alone for the same
//! length, and once more after the last attack. Each phase's line shows its ratio to the window
//! right before it; the summary at the end judges every phase against the **median** of all
//! alone windows of the run and prints their spread. One baseline taken at the start moved
//! threefold between quiet runs of the same binary, and every ratio with it.
//!
//! Settings changed from serve's defaults (printed at start): `--heavy-read-priority lowered`
//! (what `auto` does on the embedded default; the harness's cluster comes by `DATABASE_URL`),
//! `--trusted-proxies 127.0.0.1/32`
//! (so the bench can send fresh `X-Forwarded-For` addresses) and `--base-domain bulkhead.test`
//! (the harness's loopback resolver answers that domain only). `serve` and PostgreSQL are pinned
//! to CPU 0 and this process (every load generator) to CPU 1 with `taskset` when it exists.
//!
//! `CARGO_PROFILE_RELEASE_DEBUG=0 nice -n 10 cargo bench -p bulkhead-server --bench noisy_neighbours`.
//! Loopback only; every loop is bounded in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_schema::corpus::{self, Expect};
use bulkhead_test_support::{create_tenant, loopback_client, test_pepper, TestDb, TestTenant};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const MASTER_KEY: &str = "base64:YnVsa2hlYWQtdGVzdC1tYXN0ZXIta2V5LTAxMjM0NTY3ODk=";
const BASE_DOMAIN: &str = "bulkhead.test";
const PASSWORD: &str = "a perfectly good password";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// NOISY_PHASES (default `abcd`): the attacks to run, by letter.
fn phase_wanted(phase: char) -> bool {
    std::env::var("NOISY_PHASES").map_or(true, |phases| phases.contains(phase))
}

fn taskset_available() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn pin(pid: u32, cpu: &str) {
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Pins `parent` and every process it has forked so far (PostgreSQL's backends and helpers).
fn pin_tree(parent: u32, cpu: &str) {
    pin(parent, cpu);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                if parent_of(pid) == Some(parent) {
                    pin(pid, cpu);
                }
            }
        }
    }
}

/// NOISY_HEAVY_READ_PRIORITY (default `lowered`, what `auto` gives the embedded default): serve's
/// `--heavy-read-priority`, for an A/B of the reniced heavy-read backends.
fn heavy_read_priority() -> String {
    std::env::var("NOISY_HEAVY_READ_PRIORITY").unwrap_or_else(|_| "lowered".into())
}

struct Serve {
    child: Child,
    port: u16,
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

async fn start_serve(db: &TestDb, pinned: bool) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary = env!("CARGO_BIN_EXE_bulkhead");
    let mut command = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", binary]);
        c
    } else {
        Command::new(binary)
    };
    let log = std::env::temp_dir().join(format!("bulkhead-noisy-bench-{port}.log"));
    let child = command
        .env("DATABASE_URL", db.owner_url())
        .env("BULKHEAD_APP_DATABASE_URL", db.app_url())
        .env("BULKHEAD_KEY_PEPPER", test_pepper().to_config_string())
        .env("BULKHEAD_MASTER_KEY", MASTER_KEY)
        .env(
            "BULKHEAD_AUDIT_LOG_KEY",
            "base64:YnVsa2hlYWQtYmVuY2gtYXVkaXQtbG9nLWtleS0zMmI=",
        )
        .env("BULKHEAD_ISSUER", "http://bulkhead.bench.test")
        .env("RUST_LOG", "warn")
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            "127.0.0.1:0",
            "--base-domain",
            BASE_DOMAIN,
            "--trusted-proxies",
            "127.0.0.1/32",
            "--heavy-read-priority",
            &heavy_read_priority(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start bulkhead serve");
    let serve = Serve { child, port };
    let client = loopback_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
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

/// Status counts: `"200"`, `"503"`, `"error"` (transport or timeout).
#[derive(Debug, Default, Clone)]
struct Counts(BTreeMap<String, u64>);

impl Counts {
    fn add(&mut self, key: impl Into<String>) {
        *self.0.entry(key.into()).or_default() += 1;
    }
    fn merge(&mut self, other: &Counts) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }
    fn total(&self) -> u64 {
        self.0.values().sum()
    }
    fn not_ok(&self) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| !k.starts_with('2'))
            .map(|(_, v)| v)
            .sum()
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        write!(f, "{}", parts.join(", "))
    }
}

/// What B saw in one phase.
struct Victim {
    latencies: Vec<Duration>,
    counts: Counts,
}

impl Victim {
    fn pick(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i].as_secs_f64() * 1e3
    }
}

/// B: one `GET /v1/sessions` every `every`, for `seconds`; latency of every answer (errors too).
async fn victim(
    client: reqwest::Client,
    url: String,
    key: String,
    seconds: u64,
    every: Duration,
) -> Victim {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Victim {
        latencies: Vec::new(),
        counts: Counts::default(),
    };
    while Instant::now() < deadline {
        ticker.tick().await;
        let t = Instant::now();
        let answer = client
            .get(&url)
            .bearer_auth(&key)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match answer {
            Ok(r) => {
                let status = r.status().as_u16().to_string();
                let body = r.bytes().await;
                out.counts
                    .add(if body.is_ok() { status } else { "error".into() });
            }
            Err(_) => out.counts.add("error"),
        }
        out.latencies.push(t.elapsed());
    }
    out.latencies.sort();
    out
}

/// `tasks` attackers, each sending `make(n)` back to back until the deadline; when `polite`, a
/// task that gets 429 (or 503) waits its `Retry-After` (at most 2 s)
/// before the next request, so the load stays inside the tenant's limits.
async fn attack_with<F>(tasks: usize, seconds: u64, polite: bool, make: F) -> Counts
where
    F: Fn(u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let make = Arc::new(make);
    let sequence = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (make, sequence) = (make.clone(), sequence.clone());
        handles.push(tokio::spawn(async move {
            let mut counts = Counts::default();
            while Instant::now() < deadline {
                let n = sequence.fetch_add(1, Ordering::Relaxed);
                match make(n).timeout(Duration::from_secs(20)).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let wait = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(1)
                            .clamp(1, 2);
                        let _ = r.bytes().await;
                        counts.add(status.to_string());
                        // 503 is the hashing and schema pools' "full, retry after": a polite
                        // caller waits it out like a 429.
                        if polite && (status == 429 || status == 503) {
                            tokio::time::sleep(Duration::from_secs(wait)).await;
                        }
                    }
                    Err(_) => {
                        counts.add("error");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            counts
        }));
    }
    let mut all = Counts::default();
    for h in handles {
        all.merge(&h.await.unwrap());
    }
    all
}

/// A fresh client address for request `n` of one attack (`space` keeps attacks apart), sent
/// in `X-Forwarded-For` only: nothing ever connects to it.
fn fresh_address(space: u8, n: u64) -> String {
    format!("{space}.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// Slow-loris: `connections` connections spread over `addresses` loopback source addresses
/// (127.0.0.2 …), each sending half a request head and one more header line a second; a
/// connection the server closes is reopened after 200 ms. Returns (connections opened, closed
/// by the server, the most held at once).
async fn slow_loris(
    port: u16,
    connections: usize,
    addresses: usize,
    seconds: u64,
) -> (u64, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let opened = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for i in 0..connections {
        let source = Ipv4Addr::new(127, 0, 0, (2 + i % addresses) as u8);
        let (opened, closed, held, peak) =
            (opened.clone(), closed.clone(), held.clone(), peak.clone());
        handles.push(tokio::spawn(async move {
            // Spread the opening over the first second.
            tokio::time::sleep(Duration::from_micros((i as u64 * 250) % 1_000_000)).await;
            while Instant::now() < deadline {
                let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                if socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                let connect = socket.connect(SocketAddr::from(([127, 0, 0, 1], port)));
                let Ok(Ok(mut stream)) =
                    tokio::time::timeout(Duration::from_secs(2), connect).await
                else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let now = held.fetch_add(1, Ordering::Relaxed) + 1;
                peak.fetch_max(now, Ordering::Relaxed);
                let mut ok = stream
                    .write_all(b"GET /v1/sessions HTTP/1.1\r\nHost: noisy-a.bulkhead.test\r\n")
                    .await
                    .is_ok();
                while ok && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    ok = stream.write_all(b"X-Slow: 1\r\n").await.is_ok();
                    if ok {
                        // A closed connection shows on a read of 0 bytes.
                        let mut buf = [0u8; 256];
                        if let Ok(Ok(0)) = tokio::time::timeout(
                            Duration::from_millis(1),
                            tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
                        )
                        .await
                        {
                            ok = false;
                        }
                    }
                }
                held.fetch_sub(1, Ordering::Relaxed);
                if !ok {
                    closed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    (
        opened.load(Ordering::Relaxed),
        closed.load(Ordering::Relaxed),
        peak.load(Ordering::Relaxed),
    )
}

struct Bench {
    client: reqwest::Client,
    port: u16,
    b: TestTenant,
    seconds: u64,
    /// The cluster's superuser, for the vacuum before every baseline window.
    superuser: sqlx::PgPool,
    /// B's p99 in every window it ran alone, in order: the baseline is their median, so one
    /// unusually quiet or noisy window does not move every ratio (stop 35's runs 6 and 7 had
    /// baselines of 1.4 and 4.1 ms from the same binary).
    alone_p99s: Mutex<Vec<f64>>,
    /// Each attack phase, in order.
    results: Mutex<Vec<PhaseResult>>,
}

/// One attack phase: its name, B's p99, B's p99 in the alone window right before it, and the
/// target ratio.
struct PhaseResult {
    name: String,
    p99: f64,
    before: f64,
    target: Option<f64>,
}

/// The median of `values` (NaN when empty).
fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

impl Bench {
    fn url(&self, tenant: &TestTenant, path: &str) -> String {
        format!("http://{}.{BASE_DOMAIN}:{}{path}", tenant.slug, self.port)
    }

    fn b_victim(&self) -> impl std::future::Future<Output = Victim> {
        victim(
            self.client.clone(),
            self.url(&self.b, "/v1/sessions"),
            self.b.key.clone(),
            self.seconds,
            Duration::from_millis(20),
        )
    }

    /// A baseline window: the database vacuumed (the floods leave dead rows that slow B's reads
    /// after them), then B alone for the phase's length. Returns B's p99.
    async fn alone_window(&self, label: &str) -> f64 {
        sqlx::raw_sql("VACUUM (ANALYZE)")
            .execute(&self.superuser)
            .await
            .unwrap();
        let alone = self.b_victim().await;
        let p99 = alone.pick(0.99);
        self.alone_p99s.lock().unwrap().push(p99);
        println!(
            "{:<44} B p50 {:>7.2} ms  p99 {:>8.2} ms; B answers: {}",
            format!("B alone ({label})"),
            alone.pick(0.5),
            p99,
            alone.counts,
        );
        p99
    }

    /// Reports an attack phase against the alone window right before it and against the
    /// median of the alone windows so far (the final summary uses the median of all of them).
    fn report(&self, name: &str, b: &Victim, a: &Counts, target: Option<f64>, before: f64) {
        let median_so_far = median(&self.alone_p99s.lock().unwrap());
        let p99 = b.pick(0.99);
        println!(
            "{name:<44} B p50 {:>7.2} ms  p99 {:>8.2} ms  p99/alone before {:>5.2}x, /median so far {:>5.2}x{}; B answers: {}; A: {} requests ({})",
            b.pick(0.5),
            p99,
            p99 / before,
            p99 / median_so_far,
            target.map_or(String::new(), |t| format!(" (target ≤ {t}x)")),
            b.counts,
            a.total(),
            a,
        );
        self.results.lock().unwrap().push(PhaseResult {
            name: name.to_owned(),
            p99,
            before,
            target,
        });
    }

    /// A baseline window, then `attack` and B's probe at the same time, and the report.
    async fn phase<Fut>(&self, name: &str, target: Option<f64>, attack: Fut)
    where
        Fut: std::future::Future<Output = Counts> + Send + 'static,
    {
        let before = self.alone_window("before the next attack").await;
        let a = tokio::spawn(attack);
        let b = self.b_victim().await;
        let a = a.await.unwrap();
        self.report(name, &b, &a, target, before);
    }

    /// Every phase against the median of every alone window of the run, and the windows'
    /// spread: the verdicts are read from this table, not from the per-phase lines.
    fn summary(&self) {
        let alones = self.alone_p99s.lock().unwrap().clone();
        let baseline = median(&alones);
        let (low, high) = alones.iter().fold((f64::INFINITY, 0f64), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
        println!(
            "\nsummary: B alone in {} windows, p99 median {baseline:.2} ms (from {low:.2} to {high:.2} ms)",
            alones.len()
        );
        for PhaseResult {
            name,
            p99,
            before,
            target,
        } in self.results.lock().unwrap().iter()
        {
            let ratio = p99 / baseline;
            let verdict = match target {
                Some(t) if ratio <= *t => format!("target ≤ {t}x: met"),
                Some(t) => format!("target ≤ {t}x: MISSED"),
                None => "no target".to_owned(),
            };
            println!(
                "  {name:<44} p99 {p99:>8.2} ms  {ratio:>5.2}x the median ({:>5.2}x the window before): {verdict}",
                p99 / before
            );
        }
    }
}

fn main() {
    // What users run: the cluster writes as `serve`'s embedded one does (fsync and synchronous
    // commit on), not as the test suites' does.
    bulkhead_test_support::use_served_durability();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let pinned = taskset_available();
    if pinned {
        // Every thread this process makes from here on (the runtime's) runs on CPU 1.
        pin(std::process::id(), "1");
    }
    // Thousands of slow-loris sockets: raise the soft descriptor limit to the hard one.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(pinned, cores));
}

async fn run(pinned: bool, cores: usize) {
    let seconds = env_or("NOISY_SECONDS", 10);
    let sessions = env_or("NOISY_SESSIONS", 1_000_000);
    let loris = env_or("NOISY_LORIS", 4_000) as usize;
    let db = TestDb::new().await;
    bulkhead_test_support::ensure_signing_keys(&db).await;
    let superuser = db.superuser_pool().await;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&superuser)
        .await
        .unwrap();
    let postmaster = parent_of(backend as u32).expect("postmaster pid");
    if pinned {
        pin_tree(postmaster, "0");
    }
    println!(
        "settings changed from serve's defaults: --trusted-proxies 127.0.0.1/32 (fresh X-Forwarded-For \
         addresses), --base-domain {BASE_DOMAIN} (the loopback resolver's domain), --metrics-listen \
         127.0.0.1:0, --heavy-read-priority {} (the harness's PostgreSQL is a cluster on this host like \
         the embedded default, where `auto` lowers it; given by DATABASE_URL, `auto` would not); \
         everything else shipped defaults (hash pool, connection caps, timeouts, limits)",
        heavy_read_priority()
    );
    println!(
        "CPUs: {}; serve and PostgreSQL pinned to CPU 0 and this load generator to CPU 1 with taskset: {pinned}; \
         B sends GET /v1/sessions every 20 ms; each phase {seconds} s",
        cores
    );

    let a = create_tenant(&db, "noisy-a").await;
    let b = create_tenant(&db, "quiet-b").await;
    // (b) A's sessions, seeded straight into the database (the cluster's superuser, one
    // statement): the API's limits would take hours to write a million rows.
    // A million sessions is ten times the standard plan's session quota (a tenant that big has an
    // operator override): the seed is written as a replay, the marker tenant moves use, which the
    // quota triggers neither count nor refuse.
    let seeded = Instant::now();
    let mut seed = superuser.begin().await.unwrap();
    sqlx::query("SELECT set_config('bulkhead.quota_replay', 'on', true)")
        .execute(&mut *seed)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO bulkhead.agent_sessions (tenant_id, id, agent_id, title, state, metadata) \
         SELECT $1, gen_random_uuid(), 'agent-' || (g % 100), 'seeded ' || g, \
                (ARRAY['active', 'paused', 'closed'])[1 + g % 3], '{}'::jsonb \
         FROM generate_series(1, $2) AS g",
    )
    .bind(a.id.uuid())
    .bind(sessions as i64)
    .execute(&mut *seed)
    .await
    .unwrap();
    seed.commit().await.unwrap();
    // A tenant this big has operator overrides (`bulkhead tenant quota set`); A's user quota is
    // raised too, so that the hashing attack keeps costing hashes instead of meeting a 403.
    sqlx::query(
        "INSERT INTO bulkhead.tenant_quotas (tenant_id, kind, override_limit) \
         SELECT $1, kind, 10000000 FROM unnest(ARRAY['sessions', 'users']) AS kind \
         ON CONFLICT (tenant_id, kind) DO UPDATE SET override_limit = EXCLUDED.override_limit",
    )
    .bind(a.id.uuid())
    .execute(&superuser)
    .await
    .unwrap();
    println!("operator overrides for A: sessions and users quotas 10,000,000 (as `bulkhead tenant quota set`)");
    sqlx::query("ANALYZE bulkhead.agent_sessions")
        .execute(&superuser)
        .await
        .unwrap();
    println!(
        "seeded {sessions} sessions of A with SQL straight into the database (INSERT … SELECT generate_series, \
         as the superuser, outside the quota counters) in {:.1} s, then ANALYZE",
        seeded.elapsed().as_secs_f64()
    );

    let serve = start_serve(&db, pinned).await;
    let port = serve.port;
    let client = loopback_client();
    let bench = Arc::new(Bench {
        client: client.clone(),
        port,
        b: b.clone(),
        seconds,
        superuser: superuser.clone(),
        alone_p99s: Mutex::new(Vec::new()),
        results: Mutex::new(Vec::new()),
    });
    for i in 0..5 {
        let r = client
            .post(bench.url(&b, "/v1/sessions"))
            .bearer_auth(&b.key)
            .json(&json!({ "agent_id": "agent-1", "title": format!("b{i}") }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "B's session: {}", r.status());
    }
    // A's users for the wrong-password logins, made through the API (one at a time: the
    // hashing pool answers 503 to more).
    let users = 64;
    let mut made = 0;
    let until = Instant::now() + Duration::from_secs(120);
    while made < users && Instant::now() < until {
        let r = client
            .post(bench.url(&a, "/v1/users"))
            .bearer_auth(&a.key)
            .json(&json!({ "email": format!("user{made}@a.example"), "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 | 409 => made += 1,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    // Warm up B's connection and the server's caches.
    let _ = victim(
        client.clone(),
        bench.url(&b, "/v1/sessions"),
        b.key.clone(),
        2,
        Duration::from_millis(20),
    )
    .await;

    bench.alone_window("first").await;

    // (a) Hashing.
    if phase_wanted('a') {
        let (c, url, key) = (client.clone(), bench.url(&a, "/v1/users"), a.key.clone());
        bench
            .phase(
                "(a) A creates users, fresh emails, 8 tasks, polite",
                Some(3.0),
                attack_with(8, seconds, true, move |n| {
                    c.post(&url).bearer_auth(&key).json(
                        &json!({ "email": format!("fresh{n}-{}@a.example", std::process::id()), "password": PASSWORD }),
                    )
                }),
            )
            .await;
        let (c, url) = (client.clone(), bench.url(&a, "/v1/auth/login"));
        bench
            .phase(
                "(a) wrong-password logins, A's users, 8 tasks, polite",
                Some(3.0),
                attack_with(8, seconds, true, move |n| {
                    c.post(&url)
                        .header("X-Forwarded-For", fresh_address(11, n))
                        .json(&json!({ "email": format!("user{}@a.example", n % users), "password": "not the password at all" }))
                }),
            )
            .await;
        let (c, url) = (client.clone(), bench.url(&a, "/v1/auth/login"));
        bench
            .phase(
                "(a) anonymous logins, fresh emails+addresses, polite",
                Some(3.0),
                attack_with(8, seconds, true, move |n| {
                    c.post(&url)
                        .header("X-Forwarded-For", fresh_address(12, n))
                        .json(&json!({ "email": format!("nobody{n}@a.example"), "password": "not the password at all" }))
                }),
            )
            .await;
    }

    // (b) Heavy lists with 1M rows.
    for (tasks, polite) in [(24usize, true), (64, true), (64, false)] {
        if !phase_wanted('b') {
            break;
        }
        let (c, url, key) = (
            client.clone(),
            bench.url(&a, "/v1/sessions?state=closed&limit=200"),
            a.key.clone(),
        );
        let (c2, audit, key2) = (
            client.clone(),
            bench.url(&a, "/v1/audit/events"),
            a.key.clone(),
        );
        let lists = async move {
            let filters = [
                "?limit=200",
                "?action=session.create&limit=200",
                "?outcome=failure&limit=200",
                "?actor_id=nobody&action=user.create&outcome=success&limit=200",
                "?resource_id=nothing&limit=200",
                "?since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z&limit=200",
            ];
            let audits = tokio::spawn(attack_with(4, seconds, polite, move |n| {
                c2.get(format!("{audit}{}", filters[n as usize % filters.len()]))
                    .bearer_auth(&key2)
            }));
            let mut counts = attack_with(tasks, seconds, polite, move |_| {
                c.get(&url).bearer_auth(&key)
            })
            .await;
            counts.merge(&audits.await.unwrap());
            counts
        };
        bench
            .phase(
                &format!(
                    "(b) {tasks} lists ?state=closed + 4 audit{}",
                    if polite { ", polite" } else { ", flood" }
                ),
                polite.then_some(2.0),
                lists,
            )
            .await;
    }

    // (d) Hostile schemas.
    if phase_wanted('d') {
        let cases = corpus::all();
        let mut calls = Vec::new();
        let mut refused = Vec::new();
        for case in &cases {
            let name: String = format!("bench-{}", case.name.replace('_', "-"))
                .chars()
                .take(64)
                .collect();
            let body = json!({
                "name": name,
                "description": "Bench: hostile input schema.",
                "input_schema": case.schema,
                "endpoint_url": "https://tool.bench.example/run",
            });
            if case.expect == Expect::Refused {
                refused.push(body);
                continue;
            }
            // The floods before this phase may have emptied A's buckets: wait them out.
            let mut r;
            let until = Instant::now() + Duration::from_secs(60);
            loop {
                r = client
                    .post(bench.url(&a, "/v1/tools"))
                    .bearer_auth(&a.key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                if r.status().as_u16() != 429 || Instant::now() > until {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if r.status().as_u16() != 201 {
                println!(
                    "(d) registering {} ({:?}) answered {}: {}",
                    case.name,
                    case.expect,
                    r.status(),
                    r.text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect::<String>()
                );
                continue;
            }
            // Accepted inputs would be sent to the tool's endpoint: only the refused ones are called.
            if case.expect == Expect::InputRefused {
                calls.push((
                    name,
                    serde_json::to_vec(&json!({ "input": case.input })).unwrap(),
                ));
            }
        }
        println!(
            "(d) corpus: {} cases; {} registered and called with their hostile inputs, {} refused at registration (re-sent)",
            cases.len(),
            calls.len(),
            refused.len()
        );
        assert!(
            !(calls.is_empty() && refused.is_empty()),
            "(d) nothing to send: every registration failed"
        );
        let calls = Arc::new(calls);
        let refused = Arc::new(refused);
        // Polite first (A inside its limits, the target), then the same ignoring every 429 (a
        // flood of ~900 KB bodies the limiter refuses: bandwidth, not schema work; no target).
        for polite in [true, false] {
            let (c, base, key) = (client.clone(), bench.url(&a, ""), a.key.clone());
            let (calls, refused) = (calls.clone(), refused.clone());
            bench
                .phase(
                    &format!(
                        "(d) hostile schemas, 8 tasks{}",
                        if polite { ", polite" } else { ", flood" }
                    ),
                    polite.then_some(2.0),
                    attack_with(8, seconds, polite, move |n| {
                        if (n % 4 == 3 && !refused.is_empty()) || calls.is_empty() {
                            let body = &refused[(n / 4) as usize % refused.len().max(1)];
                            c.post(format!("{base}/v1/tools"))
                                .bearer_auth(&key)
                                .json(body)
                        } else {
                            let (name, body) = &calls[n as usize % calls.len()];
                            c.post(format!("{base}/v1/tools/{name}/calls"))
                                .bearer_auth(&key)
                                .header("Content-Type", "application/json")
                                .body(body.clone())
                        }
                    }),
                )
                .await;
        }
    }

    // (c) Slow-loris, within and past the total connection cap.
    for (connections, addresses) in [(loris, 16usize), (11_000, 44)] {
        if !phase_wanted('c') {
            break;
        }
        let before = bench.alone_window("before the next attack").await;
        let fresh = tokio::spawn(victim(
            reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .resolve(
                    &format!("{}.{BASE_DOMAIN}", b.slug),
                    SocketAddr::from(([127, 0, 0, 1], port)),
                )
                .build()
                .unwrap(),
            bench.url(&b, "/v1/sessions"),
            b.key.clone(),
            seconds,
            Duration::from_millis(500),
        ));
        let lorises = tokio::spawn(slow_loris(port, connections, addresses, seconds));
        let kept = bench.b_victim().await;
        let (opened, closed, peak) = lorises.await.unwrap();
        let fresh = fresh.await.unwrap();
        let a = Counts::default();
        bench.report(
            &format!("(c) slow-loris {connections} conns / {addresses} addrs"),
            &kept,
            &a,
            None,
            before,
        );
        println!(
            "    lorises: {opened} connections opened, {closed} closed by the server, at most {peak} held at once; \
             B on fresh connections every 500 ms: p99 {:.2} ms, answers: {} ({} not 2xx)",
            fresh.pick(0.99),
            fresh.counts,
            fresh.counts.not_ok()
        );
    }

    bench.alone_window("again, after every attack").await;
    bench.summary();
    drop(serve);
}
