//! The rate limiters of a process and their checked-in defaults (docs/rate-limits.md): the
//! tenant limiter (four levels: global, tenant by plan, agent/key, endpoint class with its
//! cost), the per-address limiter before authentication, the per-tenant concurrency limiter and
//! the addresses whose pre-authentication budget is spent. The request pipeline applies them
//! (`http::limits`).

use std::sync::Arc;

use bulkhead_core::{Clock, TenantId};
use bulkhead_ratelimit::{ClassQuota, ConcurrencyLimiter, LimitConfig, Limiter, Plan, Quota};

/// The deployment's limits. Plans differ by tenant budget; every key (agent) gets a share
/// inside its tenant's budget; expensive endpoints cost more and have their own budget.
pub fn default_limits() -> LimitConfig {
    LimitConfig {
        global: Some(Quota::per_second(20_000).with_burst(40_000)),
        plans: [
            (Plan::Free, Quota::per_second(10).with_burst(20)),
            (Plan::Standard, Quota::per_second(200).with_burst(400)),
            (Plan::Enterprise, Quota::per_second(2_000).with_burst(4_000)),
        ]
        .into_iter()
        .collect(),
        per_agent: Some(Quota::per_second(100).with_burst(200)),
        // Minting keys is expensive and sensitive: each costs 10 units of the tenant's budget
        // and has its own budget of 30 a minute.
        classes: [(
            "key_create".to_owned(),
            ClassQuota::limited(10, Quota::per_minute(30).with_burst(10)),
        )]
        .into_iter()
        .collect(),
        ..LimitConfig::default()
    }
}

/// The per-address budget before authentication: generous for any real client, small enough
/// that one address cannot tie up the key lookup.
pub fn default_preauth_limits() -> LimitConfig {
    LimitConfig {
        plans: [Plan::Free, Plan::Standard, Plan::Enterprise]
            .into_iter()
            .map(|plan| (plan, Quota::per_second(500).with_burst(1_000)))
            .collect(),
        ..LimitConfig::default()
    }
}

/// Requests of one tenant in flight at once in this process (Stripe's concurrency limiter):
/// expensive classes get a small number, everything else a generous one.
pub fn default_concurrency() -> ConcurrencyLimiter {
    ConcurrencyLimiter::new(256).with_class("key_create", 4)
}

/// Addresses whose pre-authentication budget is spent, with when it has room again. Bounded:
/// an entry lives at most as long as the longest wait.
pub(crate) type Blocked = moka::sync::Cache<TenantId, chrono::DateTime<chrono::Utc>>;

fn blocked_addresses() -> Blocked {
    moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(std::time::Duration::from_secs(15 * 60))
        .build()
}

/// The limiters of a process.
#[derive(Debug)]
pub struct RateLimits {
    pub(crate) tenant: Limiter,
    pub(crate) preauth: Limiter,
    pub(crate) concurrency: ConcurrencyLimiter,
    pub(crate) blocked: Blocked,
    pub(crate) clock: Clock,
}

impl RateLimits {
    /// In-process limiters with the given configurations.
    pub fn in_memory(tenant: LimitConfig, preauth: LimitConfig, clock: Clock) -> Self {
        Self {
            tenant: Limiter::in_memory(tenant, clock.clone()),
            preauth: Limiter::in_memory(preauth, clock.clone()),
            concurrency: default_concurrency(),
            blocked: blocked_addresses(),
            clock,
        }
    }

    /// The defaults, shared through Redis at `redis_url` (the settings' `REDIS_URL`), else in
    /// process.
    pub fn new(redis_url: Option<String>, clock: Clock) -> anyhow::Result<Self> {
        match redis_url.map(bulkhead_ratelimit::RedisOptions::new) {
            Some(options) => Ok(Self {
                tenant: Limiter::redis(default_limits(), clock.clone(), options.clone())?,
                preauth: Limiter::redis(default_preauth_limits(), clock.clone(), {
                    let mut options = options;
                    options.key_prefix = format!("{}:preauth", options.key_prefix);
                    options
                })?,
                concurrency: default_concurrency(),
                blocked: blocked_addresses(),
                clock,
            }),
            None => Ok(Self::in_memory(
                default_limits(),
                default_preauth_limits(),
                clock,
            )),
        }
    }
}

/// Shared handle in the app state.
pub type SharedLimits = Arc<RateLimits>;
