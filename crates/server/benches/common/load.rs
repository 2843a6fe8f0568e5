//! Closed-loop HTTP load on loopback, shared by the benches: N connections for a fixed time,
//! each request's latency recorded, and a one-line summary per endpoint.
// Each bench uses only part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bulkhead_test_support::loopback_client;

pub(crate) struct Round {
    pub(crate) requests: u64,
    pub(crate) latencies_us: Vec<u32>,
    pub(crate) elapsed: Duration,
}

pub(crate) async fn run_round(
    url: String,
    key: Option<String>,
    seconds: u64,
    concurrency: u64,
) -> Round {
    run_paced(url, key, seconds, concurrency, None, false).await
}

/// Like `run_round`, each connection waiting `pace` between requests (a steady, normal load).
/// Every response must succeed, except 429s when `expect_429` (a flood past its budget).
pub(crate) async fn run_paced(
    url: String,
    key: Option<String>,
    seconds: u64,
    concurrency: u64,
    pace: Option<Duration>,
    expect_429: bool,
) -> Round {
    let client = loopback_client();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut request = client.get(&url);
                if let Some(k) = &key {
                    request = request.bearer_auth(k);
                }
                let response = request.send().await.expect("request");
                let status = response.status();
                let body = response.bytes().await.expect("body");
                assert!(
                    status.is_success() || (expect_429 && status.as_u16() == 429),
                    "status {status} after {:?}: {}",
                    t.elapsed(),
                    String::from_utf8_lossy(&body)
                );
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
    Round {
        requests: latencies_us.len() as u64,
        latencies_us,
        elapsed: started.elapsed(),
    }
}

pub(crate) fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

pub(crate) fn summarize(name: &str, rounds: &[Round]) -> f64 {
    let requests: u64 = rounds.iter().map(|r| r.requests).sum();
    let seconds: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let mut all: Vec<u32> = rounds
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    all.sort_unstable();
    let rps = requests as f64 / seconds;
    println!(
        "{name:<10} {requests:>8} requests  {rps:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
        percentile(&all, 0.50),
        percentile(&all, 0.99)
    );
    rps
}
