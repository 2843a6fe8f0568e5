//! The in-process backend: all-or-nothing, isolation under load, bounded memory, the GCRA bound.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bulkhead_core::{Clock, TenantId};
use bulkhead_ratelimit::{
    header_values, Decision, Level, LimitConfig, Limiter, MemoryOptions, Plan, Quota, Request,
    Source,
};
use proptest::prelude::*;

use crate::support::{advance, manual_clock};

/// The in-process backend never suspends: poll its future once.
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

fn check(limiter: &Limiter, request: &Request<'_>) -> Decision {
    now_or_never(limiter.check(request))
}

/// Tenant 10 (burst 10), agent 2 (burst 2), global 100 (burst 100), per minute, no time passing.
pub(crate) fn all_or_nothing_config() -> LimitConfig {
    let mut config = LimitConfig {
        global: Some(Quota::per_minute(100)),
        per_agent: Some(Quota::per_minute(2)),
        ..LimitConfig::default()
    };
    config.plans.insert(Plan::Standard, Quota::per_minute(10));
    config
}

/// Runs the all-or-nothing scenario against any limiter built from [`all_or_nothing_config`].
pub(crate) async fn all_or_nothing_scenario(limiter: &Limiter, expected_source: Source) {
    let tenant = TenantId::new();
    let other_tenant = TenantId::new();
    let a1 = Request::new(tenant, Plan::Standard, "default").with_agent("agent-1");
    let a2 = Request::new(tenant, Plan::Standard, "default").with_agent("agent-2");

    // agent-1: its 2, then 6 rejections at the agent level.
    for _ in 0..2 {
        let decision = limiter.check(&a1).await;
        assert!(decision.allowed);
        assert_eq!(decision.source, expected_source);
    }
    for _ in 0..6 {
        let decision = limiter.check(&a1).await;
        assert!(!decision.allowed);
        assert_eq!(decision.rejected_by, Some(Level::Agent));
        assert_eq!(decision.source, expected_source);
    }

    // agent-2 of the same tenant: the tenant lost only the 2 allowed requests, not the 6 rejected.
    let decision = limiter.check(&a2).await;
    assert!(decision.allowed, "{decision:?}");
    // Without an agent only global and tenant apply, so the tenant is the limiting level.
    let tenant_only = Request::new(tenant, Plan::Standard, "default");
    let decision = limiter.check(&tenant_only).await;
    let state = decision.limiting.unwrap();
    assert_eq!((state.level, state.remaining), (Level::Tenant, 10 - 4));
    // The rest of the tenant budget, exactly.
    for _ in 0..6 {
        assert!(limiter.check(&tenant_only).await.allowed);
    }
    let decision = limiter.check(&tenant_only).await;
    assert_eq!(decision.rejected_by, Some(Level::Tenant));

    // And the global level was charged only for the 10 allowed requests.
    let other = Request::new(other_tenant, Plan::Enterprise, "default");
    let decision = limiter.check(&other).await;
    let state = decision.limiting.unwrap();
    assert_eq!((state.level, state.remaining), (Level::Global, 100 - 11));
}

#[tokio::test]
async fn a_rejection_at_the_agent_level_charges_no_other_level_in_memory() {
    let limiter = Limiter::in_memory(all_or_nothing_config(), manual_clock());
    all_or_nothing_scenario(&limiter, Source::Backend).await;
}

#[test]
fn a_tenant_ten_times_over_budget_does_not_cost_another_tenant_one_request() {
    let clock = manual_clock();
    let mut config = LimitConfig {
        // Below tenant A's offered load: if A's rejected requests were charged globally, B would
        // be rejected at the global level.
        global: Some(Quota::per_second(30)),
        per_agent: Some(Quota::per_second(50)),
        ..LimitConfig::default()
    };
    config.plans.insert(Plan::Standard, Quota::per_second(10));
    let limiter = Limiter::in_memory(config, clock.clone());
    let a = TenantId::new();
    let b = TenantId::new();

    let (mut a_allowed, mut a_rejected, mut b_rejected) = (0u32, 0u32, 0u32);
    // 20 virtual seconds in 10 ms steps: A sends 100/s (10x its 10/s), B sends 5/s.
    for step in 0..2_000u32 {
        let agent = format!("a-agent-{}", step % 4);
        let decision = check(
            &limiter,
            &Request::new(a, Plan::Standard, "default").with_agent(&agent),
        );
        if decision.allowed {
            a_allowed += 1;
        } else {
            a_rejected += 1;
            assert_eq!(decision.rejected_by, Some(Level::Tenant));
        }
        if step % 20 == 0 {
            let decision = check(
                &limiter,
                &Request::new(b, Plan::Standard, "default").with_agent("b-agent"),
            );
            if !decision.allowed {
                b_rejected += 1;
            }
        }
        advance(&clock, 10_000);
    }
    assert_eq!(b_rejected, 0);
    // A got its burst plus its rate, and no more.
    assert!(a_allowed <= 10 + 10 * 20, "{a_allowed}");
    assert!(a_allowed >= 10 * 20, "{a_allowed}");
    assert!(a_rejected >= 1_700, "{a_rejected}");
}

#[test]
fn a_hundred_thousand_keys_never_exceed_the_cap_and_idle_keys_go() {
    let clock = manual_clock();
    let mut config = LimitConfig {
        per_agent: Some(Quota::per_minute(10)),
        ..LimitConfig::default()
    };
    config.plans.insert(Plan::Free, Quota::per_second(1_000));
    let options = MemoryOptions {
        shards: 16,
        max_entries: 10_000,
        sweep_interval: std::time::Duration::from_secs(1),
    };
    let limiter = Limiter::in_memory_with(config, clock.clone(), options);
    assert_eq!(limiter.local_capacity(), 10_000);
    let tenants: Vec<TenantId> = (0..100).map(|_| TenantId::new()).collect();

    // 100k distinct agent keys at one instant: nothing rests, the cap forces eviction.
    let mut peak = 0;
    for i in 0..100_000usize {
        let agent = format!("agent-{i}");
        let request = Request::new(tenants[i % 100], Plan::Free, "default").with_agent(&agent);
        assert!(check(&limiter, &request).allowed);
        if i % 97 == 0 {
            peak = peak.max(limiter.local_entries());
            assert!(limiter.local_entries() <= limiter.local_capacity());
        }
    }
    assert!(limiter.local_entries() <= limiter.local_capacity());
    assert!(peak > 5_000, "the store was used: {peak}");

    // An hour later everything is rested: the next sweep drops it all.
    advance(&clock, 3_600_000_000);
    limiter.evict_rested();
    assert_eq!(limiter.local_entries(), 0);

    // With time passing, idle keys go on their own (per-shard sweep every second) and the cap is
    // never approached: each agent key rests 6 s after its one request.
    let mut most = 0;
    for i in 0..100_000usize {
        let agent = format!("later-{i}");
        let request = Request::new(tenants[i % 100], Plan::Free, "default").with_agent(&agent);
        assert!(check(&limiter, &request).allowed);
        advance(&clock, 1_000); // 1 ms per request: ~6 000 agent keys alive at once
        most = most.max(limiter.local_entries());
    }
    assert!(most < 8_000, "idle keys were not swept: {most}");
}

#[test]
fn the_in_process_future_is_send_and_ready_at_once() {
    fn assert_send<T: Send>(_: &T) {}
    let limiter = Limiter::in_memory(all_or_nothing_config(), Clock::system());
    let request = Request::new(TenantId::new(), Plan::Standard, "default");
    let future = limiter.check(&request);
    assert_send(&future);
    let decision = now_or_never(future);
    assert!(decision.allowed);
    let headers = header_values(&decision);
    assert_eq!(
        headers[0],
        ("ratelimit-policy", "\"tenant\";q=10;w=60".to_owned())
    );
    assert_eq!(headers[1], ("ratelimit", "\"tenant\";r=9;t=6".to_owned()));
}

#[test]
fn a_cost_override_and_an_unknown_class_use_the_default_class() {
    let mut config = all_or_nothing_config();
    config
        .classes
        .insert("default".into(), bulkhead_ratelimit::ClassQuota::cost(3));
    let limiter = Limiter::in_memory(config, manual_clock());
    let tenant = TenantId::new();
    let unknown = Request::new(tenant, Plan::Standard, "no-such-class");
    let state = check(&limiter, &unknown).limiting.unwrap();
    assert_eq!((state.level, state.remaining), (Level::Tenant, 7));
    let heavy = unknown.with_cost(7);
    assert!(check(&limiter, &heavy).allowed);
    let over = unknown.with_cost(11);
    let decision = check(&limiter, &over);
    assert!(!decision.allowed);
    assert_eq!(decision.retry_after, None, "cost above burst never fits");
}

#[test]
fn a_tenants_own_quota_replaces_its_plans_but_not_a_configured_override() {
    let mut config = all_or_nothing_config();
    let configured = TenantId::new();
    config
        .tenant_overrides
        .insert(configured, Quota::per_minute(20));
    let limiter = Limiter::in_memory(config, manual_clock());
    let own = Quota::per_minute(60).with_burst(3);
    // Its own budget of 3 replaces the plan's 10 …
    let tenant = TenantId::new();
    let request = Request::new(tenant, Plan::Standard, "default").with_tenant_quota(own);
    for _ in 0..3 {
        assert!(check(&limiter, &request).allowed);
    }
    let refused = check(&limiter, &request);
    assert_eq!(
        (refused.allowed, refused.rejected_by),
        (false, Some(Level::Tenant))
    );
    // … a larger one lets more through than the plan would …
    let generous = Request::new(TenantId::new(), Plan::Standard, "default")
        .with_tenant_quota(Quota::per_minute(40));
    for _ in 0..40 {
        assert!(check(&limiter, &generous).allowed);
    }
    assert!(!check(&limiter, &generous).allowed);
    // … and the deployment's configured override of 20 wins over it.
    let overridden = Request::new(configured, Plan::Standard, "default").with_tenant_quota(own);
    for _ in 0..20 {
        assert!(check(&limiter, &overridden).allowed);
    }
    assert!(!check(&limiter, &overridden).allowed);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// For any schedule, the allowed cost in any interval [t_i, t_j] is at most
    /// burst + (t_j − t_i) / T: the GCRA bound.
    #[test]
    fn never_more_than_burst_plus_rate_times_elapsed(
        count in 1u32..50,
        burst in 1u32..20,
        schedule in proptest::collection::vec((0i64..400_000, 1u32..6), 1..150),
    ) {
        let clock = manual_clock();
        let quota = Quota::per_second(count).with_burst(burst);
        let mut config = LimitConfig::default();
        config.plans.insert(Plan::Free, quota);
        let limiter = Limiter::in_memory(config, clock.clone());
        let tenant = TenantId::new();
        let emission = i128::try_from(quota.emission_interval().as_micros()).unwrap();

        let mut now = 0i64;
        let mut allowed: Vec<(i64, u32)> = Vec::new();
        for (step, cost) in schedule {
            advance(&clock, step);
            now += step;
            let decision = check(&limiter, &Request::new(tenant, Plan::Free, "default").with_cost(cost));
            if decision.allowed {
                allowed.push((now, cost));
            } else {
                prop_assert_eq!(decision.rejected_by, Some(Level::Tenant));
            }
        }
        for i in 0..allowed.len() {
            let mut spent = 0i128;
            for j in i..allowed.len() {
                spent += i128::from(allowed[j].1);
                let elapsed = i128::from(allowed[j].0 - allowed[i].0);
                prop_assert!(
                    spent * emission <= i128::from(burst) * emission + elapsed,
                    "{} units in {} µs with burst {} and T {}", spent, elapsed, burst, emission
                );
            }
        }
    }
}
