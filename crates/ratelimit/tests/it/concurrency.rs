//! The per-process concurrency limiter.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};

use bulkhead_core::TenantId;
use bulkhead_ratelimit::ConcurrencyLimiter;

#[test]
fn at_most_n_permits_and_a_dropped_permit_frees_its_slot() {
    let limiter = ConcurrencyLimiter::new(2).with_class("export", 1);
    let tenant = TenantId::new();
    let other = TenantId::new();

    let first = limiter.acquire(tenant, "report").unwrap();
    let second = limiter.acquire(tenant, "report").unwrap();
    assert!(limiter.acquire(tenant, "report").is_none());
    assert_eq!(limiter.in_flight(tenant, "report"), 2);
    // Another tenant, and another class of the same tenant, are counted apart.
    let _theirs = limiter.acquire(other, "report").unwrap();
    let export = limiter.acquire(tenant, "export").unwrap();
    assert!(limiter.acquire(tenant, "export").is_none());

    drop(first);
    assert_eq!(limiter.in_flight(tenant, "report"), 1);
    let third = limiter.acquire(tenant, "report").unwrap();
    assert!(limiter.acquire(tenant, "report").is_none());

    drop((second, third, export));
    assert_eq!(limiter.in_flight(tenant, "report"), 0);
    assert_eq!(limiter.in_flight(tenant, "export"), 0);
    assert!(limiter.acquire(tenant, "export").is_some());
    assert!(ConcurrencyLimiter::new(0).acquire(tenant, "x").is_none());

    // A permit can be held by a response body or a spawned task.
    fn assert_send_static<T: Send + Sync + 'static>(_: &T) {}
    assert_send_static(&limiter.acquire(tenant, "report").unwrap());
}

#[test]
fn threads_racing_for_permits_never_exceed_the_maximum() {
    const MAX: u32 = 3;
    const THREADS: usize = 8;
    let limiter = ConcurrencyLimiter::new(MAX);
    let tenant = TenantId::new();
    let inside = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let granted = Arc::new(AtomicU32::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (limiter, inside, peak, granted, barrier) = (
                limiter.clone(),
                Arc::clone(&inside),
                Arc::clone(&peak),
                Arc::clone(&granted),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..2_000 {
                    if let Some(permit) = limiter.acquire(tenant, "long") {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        granted.fetch_add(1, Ordering::Relaxed);
                        std::hint::spin_loop();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= MAX);
    assert!(granted.load(Ordering::Relaxed) > 0);
    assert_eq!(limiter.in_flight(tenant, "long"), 0);
}
