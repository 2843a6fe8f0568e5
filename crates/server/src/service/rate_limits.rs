//! The rate limiters of a process, built from the settings' [`RateLimitSettings`]
//! (`crate::config::limits`, docs/rate-limits.md): the tenant limiter (four levels: global,
//! tenant by plan, agent/key, endpoint class with its cost), the per-address limiter before
//! authentication, the per-tenant concurrency limiter and the addresses whose
//! pre-authentication budget is spent. The request pipeline applies them (`http::limits`).

use std::sync::Arc;

use bulkhead_core::{Clock, TenantId};
use bulkhead_ratelimit::{ConcurrencyLimiter, LimitConfig, Limiter};

use crate::config::RateLimitSettings;

/// The checked-in tenant limits ([`RateLimitSettings::default`], which the `serve` flags
/// override).
pub fn default_limits() -> LimitConfig {
    RateLimitSettings::default().tenant_limits()
}

/// The checked-in per-address limits before authentication.
pub fn default_preauth_limits() -> LimitConfig {
    RateLimitSettings::default().preauth_limits()
}

/// The checked-in per-tenant concurrency limits.
pub fn default_concurrency() -> ConcurrencyLimiter {
    RateLimitSettings::default().concurrency()
}

/// Addresses whose pre-authentication budget is spent, with when it has room again. Bounded:
/// an entry lives at most as long as the longest wait the per-address limits can answer.
pub(crate) type Blocked = moka::sync::Cache<TenantId, chrono::DateTime<chrono::Utc>>;

/// The map of blocked addresses for per-address limits `preauth`. A request costs one unit, and
/// one unit comes back within one period of the slowest quota, so no wait is longer: entries
/// live that long (at least a second) and the map holds no address longer than it is blocked.
fn blocked_addresses(preauth: &LimitConfig) -> Blocked {
    let longest_wait = preauth
        .plans
        .values()
        .map(bulkhead_ratelimit::Quota::period)
        .max()
        .unwrap_or_default()
        .max(std::time::Duration::from_secs(1));
    moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(longest_wait)
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
            blocked: blocked_addresses(&preauth),
            preauth: Limiter::in_memory(preauth, clock.clone()),
            concurrency: default_concurrency(),
            clock,
        }
    }

    /// The limiters `settings` describe, shared through Redis at `redis_url` (the settings'
    /// `REDIS_URL`), else in process.
    pub fn new(
        settings: &RateLimitSettings,
        redis_url: Option<String>,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let (tenant, preauth) = (settings.tenant_limits(), settings.preauth_limits());
        let blocked = blocked_addresses(&preauth);
        let (tenant, preauth) = match redis_url.map(bulkhead_ratelimit::RedisOptions::new) {
            Some(options) => (
                Limiter::redis(tenant, clock.clone(), options.clone())?,
                Limiter::redis(preauth, clock.clone(), {
                    let mut options = options;
                    options.key_prefix = format!("{}:preauth", options.key_prefix);
                    options
                })?,
            ),
            None => (
                Limiter::in_memory(tenant, clock.clone()),
                Limiter::in_memory(preauth, clock.clone()),
            ),
        };
        Ok(Self {
            tenant,
            preauth,
            concurrency: settings.concurrency(),
            blocked,
            clock,
        })
    }
}

/// Shared handle in the app state.
pub type SharedLimits = Arc<RateLimits>;
