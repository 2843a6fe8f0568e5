//! Rate-limit quotas and cache lifetimes: the `serve` flags (each with an environment variable),
//! their checked-in defaults and their validation. docs/deployment.md lists them in a table;
//! docs/rate-limits.md explains the levels.

use std::time::Duration;

use bulkhead_ratelimit::{ClassQuota, ConcurrencyLimiter, LimitConfig, Plan, Quota};

/// Page size of a list request that names none (the one page-size rule of every list route is
/// `http::routes::kit::page`; a page's rate cost is counted in these, `http::limits`).
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size a list request may ask for.
pub const MAX_PAGE_SIZE: u32 = 200;

/// The endpoint class of `POST /v1/api-keys` (see `http::authz`): its own quota, cost and
/// concurrency.
pub const KEY_CREATE_CLASS: &str = "key_create";

/// The endpoint class of `POST /oauth/register` (RFC 7591 dynamic registration): its own
/// budget per tenant in the tenant limiter, and per source address in the per-address one.
pub const OAUTH_REGISTER_CLASS: &str = "oauth_register";

/// Registrations a tenant accepts (decision: fixed, not a flag; a tenant registers at most 100
/// clients anyway): 60 an hour, 30 at once.
pub fn oauth_register_per_tenant() -> Quota {
    Quota::per_hour(60).with_burst(30)
}

/// Registration attempts one source address may make, whatever the tenant (decision: fixed):
/// 20 an hour, 10 at once.
pub fn oauth_register_per_address() -> Quota {
    Quota::per_hour(20).with_burst(10)
}

/// `serve`'s rate-limit and cache flags. A quota is written `COUNT/PERIOD:BURST`, the period one
/// of `s`, `m` or `h` (e.g. `200/s:400`: 200 a second on average, 400 at once).
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// The whole deployment's budget, in request units.
    #[arg(long, env = "BULKHEAD_RATE_LIMIT_GLOBAL", default_value = "20000/s:40000", value_parser = parse_quota)]
    pub rate_limit_global: Quota,
    /// A tenant's budget on the free plan.
    #[arg(long, env = "BULKHEAD_RATE_LIMIT_FREE", default_value = "10/s:20", value_parser = parse_quota)]
    pub rate_limit_free: Quota,
    /// A tenant's budget on the standard plan.
    #[arg(long, env = "BULKHEAD_RATE_LIMIT_STANDARD", default_value = "200/s:400", value_parser = parse_quota)]
    pub rate_limit_standard: Quota,
    /// A tenant's budget on the enterprise plan.
    #[arg(long, env = "BULKHEAD_RATE_LIMIT_ENTERPRISE", default_value = "2000/s:4000", value_parser = parse_quota)]
    pub rate_limit_enterprise: Quota,
    /// Each API key's or agent's share inside its tenant's budget.
    #[arg(long, env = "BULKHEAD_RATE_LIMIT_PER_KEY", default_value = "100/s:200", value_parser = parse_quota)]
    pub rate_limit_per_key: Quota,
    /// Key creation's own per-tenant budget, in requests.
    #[arg(long, env = "BULKHEAD_RATE_LIMIT_KEY_CREATE", default_value = "30/m:10", value_parser = parse_quota)]
    pub rate_limit_key_create: Quota,
    /// Units one key creation takes from the global, tenant and per-key budgets.
    #[arg(long, env = "BULKHEAD_KEY_CREATE_COST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub key_create_cost: u32,
    /// One client address's budget before authentication.
    #[arg(long, env = "BULKHEAD_RATE_LIMIT_PREAUTH", default_value = "500/s:1000", value_parser = parse_quota)]
    pub rate_limit_preauth: Quota,
    /// Requests of one tenant in flight at once in this process.
    #[arg(long, env = "BULKHEAD_CONCURRENCY_PER_TENANT", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency_per_tenant: u32,
    /// Key creations of one tenant in flight at once in this process.
    #[arg(long, env = "BULKHEAD_CONCURRENCY_KEY_CREATE", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency_key_create: u32,
    /// Seconds a registry answer (slug or id → tenant) is reused: a suspension takes effect on
    /// every process within this time.
    #[arg(long, env = "BULKHEAD_REGISTRY_CACHE_SECS", default_value_t = 2)]
    pub registry_cache_secs: u64,
    /// Seconds a verified API key is reused without the database: the bound on a revocation
    /// reaching a process whose change notification was lost.
    #[arg(long, env = "BULKHEAD_KEY_CACHE_SECS", default_value_t = 60)]
    pub key_cache_secs: u64,
    /// Seconds a credential's role ceiling is reused: the bound on a role change taking effect.
    #[arg(long, env = "BULKHEAD_CEILING_CACHE_SECS", default_value_t = 5)]
    pub ceiling_cache_secs: u64,
    /// Seconds a compiled tool schema is kept after its last use.
    #[arg(long, env = "BULKHEAD_SCHEMA_CACHE_IDLE_SECS", default_value_t = 600)]
    pub schema_cache_idle_secs: u64,
    /// Failed logins one client address (IPv6: its /64) may have per window, across accounts.
    #[arg(long, env = "BULKHEAD_LOGIN_FAILURES_PER_ADDRESS", default_value_t = DEFAULT_LOGIN_FAILURES_PER_ADDRESS,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub login_failures_per_address: u32,
    /// Seconds of the per-address login window.
    #[arg(
        long,
        env = "BULKHEAD_LOGIN_ADDRESS_WINDOW_SECS",
        default_value_t = 900
    )]
    pub login_address_window_secs: u64,
    /// Seconds between whole reloads of the token denylist and signing keys: the backstop for
    /// a missed change notification.
    #[arg(long, env = "BULKHEAD_TOKEN_RELOAD_SECS", default_value_t = 30)]
    pub token_reload_secs: u64,
    /// Seconds the token denylist may go without a live listener or a successful reload before
    /// every access token is refused.
    #[arg(
        long,
        env = "BULKHEAD_TOKEN_DENYLIST_STALENESS_SECS",
        default_value_t = 60
    )]
    pub token_denylist_staleness_secs: u64,
}

/// Failed logins per client address per window unless `--login-failures-per-address` says
/// otherwise.
pub const DEFAULT_LOGIN_FAILURES_PER_ADDRESS: u32 = 30;

impl LimitArgs {
    /// The validated rate limits.
    pub fn rate_limits(&self) -> Result<RateLimitSettings, String> {
        let settings = RateLimitSettings {
            global: self.rate_limit_global,
            free: self.rate_limit_free,
            standard: self.rate_limit_standard,
            enterprise: self.rate_limit_enterprise,
            per_key: self.rate_limit_per_key,
            key_create: self.rate_limit_key_create,
            key_create_cost: self.key_create_cost,
            preauth: self.rate_limit_preauth,
            concurrency_per_tenant: self.concurrency_per_tenant,
            concurrency_key_create: self.concurrency_key_create,
            login: LoginThrottleSettings {
                failures: self.login_failures_per_address,
                window: Duration::from_secs(self.login_address_window_secs),
            },
        };
        settings.validate()?;
        Ok(settings)
    }

    /// The validated cache lifetimes.
    pub fn caches(&self) -> Result<CacheSettings, String> {
        let settings = CacheSettings {
            registry_ttl: Duration::from_secs(self.registry_cache_secs),
            key_ttl: Duration::from_secs(self.key_cache_secs),
            ceiling_ttl: Duration::from_secs(self.ceiling_cache_secs),
            schema_idle: Duration::from_secs(self.schema_cache_idle_secs),
            tokens: TokenFreshness {
                reload: Duration::from_secs(self.token_reload_secs),
                max_staleness: Duration::from_secs(self.token_denylist_staleness_secs),
            },
        };
        settings.validate()?;
        Ok(settings)
    }
}

/// Parses a quota written `COUNT/PERIOD:BURST` (`PERIOD` one of `s`, `m`, `h`; both numbers at
/// least 1).
pub fn parse_quota(text: &str) -> Result<Quota, String> {
    let invalid =
        || format!("{text:?}: expected COUNT/PERIOD:BURST, e.g. 200/s:400 (PERIOD s, m or h)");
    let (count, rest) = text.trim().split_once('/').ok_or_else(invalid)?;
    let (period, burst) = rest.split_once(':').ok_or_else(invalid)?;
    let count: u32 = count.trim().parse().map_err(|_| invalid())?;
    let burst: u32 = burst.trim().parse().map_err(|_| invalid())?;
    let period = match period.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(invalid()),
    };
    if count == 0 || burst == 0 {
        return Err(format!(
            "{text:?}: the count and the burst must be at least 1"
        ));
    }
    Ok(Quota::new(count, period).with_burst(burst))
}

/// The deployment's rate limits (docs/rate-limits.md). Plans differ by tenant budget; every key
/// (agent) gets a share inside its tenant's budget; key creation costs more and has its own
/// budget and concurrency.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSettings {
    /// The whole deployment's budget.
    pub global: Quota,
    /// The free plan's tenant budget.
    pub free: Quota,
    /// The standard plan's tenant budget.
    pub standard: Quota,
    /// The enterprise plan's tenant budget.
    pub enterprise: Quota,
    /// Each key's or agent's budget inside its tenant.
    pub per_key: Quota,
    /// Key creation's own per-tenant budget, in requests.
    pub key_create: Quota,
    /// Units one key creation takes from the other budgets.
    pub key_create_cost: u32,
    /// One client address's budget before authentication.
    pub preauth: Quota,
    /// A tenant's requests in flight at once in this process.
    pub concurrency_per_tenant: u32,
    /// A tenant's key creations in flight at once in this process.
    pub concurrency_key_create: u32,
    /// The per-address login throttle.
    pub login: LoginThrottleSettings,
}

/// The login throttle per client address (`service::login_throttle`): in process, across the
/// accounts of every tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottleSettings {
    /// Failures one address may have per window.
    pub failures: u32,
    /// The window.
    pub window: Duration,
}

impl Default for LoginThrottleSettings {
    fn default() -> Self {
        Self {
            failures: DEFAULT_LOGIN_FAILURES_PER_ADDRESS,
            window: Duration::from_secs(15 * 60),
        }
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            global: Quota::per_second(20_000).with_burst(40_000),
            free: Quota::per_second(10).with_burst(20),
            standard: Quota::per_second(200).with_burst(400),
            enterprise: Quota::per_second(2_000).with_burst(4_000),
            per_key: Quota::per_second(100).with_burst(200),
            // Minting keys is expensive and sensitive: each costs 10 units of the tenant's
            // budget and has its own budget of 30 a minute.
            key_create: Quota::per_minute(30).with_burst(10),
            key_create_cost: 10,
            // Generous for any real client, small enough that one address cannot tie up the
            // key lookup.
            preauth: Quota::per_second(500).with_burst(1_000),
            concurrency_per_tenant: 256,
            concurrency_key_create: 4,
            login: LoginThrottleSettings::default(),
        }
    }
}

impl RateLimitSettings {
    /// Refuses limits that cannot work: a key creation costing more than a budget can ever
    /// hold, or zero concurrency.
    pub fn validate(&self) -> Result<(), String> {
        if self.key_create_cost == 0 {
            return Err("--key-create-cost must be at least 1".into());
        }
        if self.concurrency_per_tenant == 0 || self.concurrency_key_create == 0 {
            return Err("concurrency limits must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.login.failures) {
            return Err("--login-failures-per-address must be between 1 and 10000".into());
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&self.login.window) {
            return Err("--login-address-window-secs must be between 60 and 86400".into());
        }
        let budgets = [
            ("--rate-limit-global", &self.global),
            ("--rate-limit-free", &self.free),
            ("--rate-limit-standard", &self.standard),
            ("--rate-limit-enterprise", &self.enterprise),
            ("--rate-limit-per-key", &self.per_key),
        ];
        for (flag, quota) in budgets {
            if quota.burst() < self.key_create_cost {
                return Err(format!(
                    "{flag}: a burst of {} can never pay for a key creation (--key-create-cost {})",
                    quota.burst(),
                    self.key_create_cost
                ));
            }
        }
        Ok(())
    }

    /// The tenant limiter's four levels.
    pub fn tenant_limits(&self) -> LimitConfig {
        LimitConfig {
            global: Some(self.global),
            plans: [
                (Plan::Free, self.free),
                (Plan::Standard, self.standard),
                (Plan::Enterprise, self.enterprise),
            ]
            .into_iter()
            .collect(),
            per_agent: Some(self.per_key),
            classes: [
                (
                    KEY_CREATE_CLASS.to_owned(),
                    ClassQuota::limited(self.key_create_cost, self.key_create),
                ),
                (
                    OAUTH_REGISTER_CLASS.to_owned(),
                    ClassQuota::limited(1, oauth_register_per_tenant()),
                ),
            ]
            .into_iter()
            .collect(),
            ..LimitConfig::default()
        }
    }

    /// The per-address limiter before authentication: one budget whatever the plan.
    pub fn preauth_limits(&self) -> LimitConfig {
        LimitConfig {
            plans: [Plan::Free, Plan::Standard, Plan::Enterprise]
                .into_iter()
                .map(|plan| (plan, self.preauth))
                .collect(),
            classes: [(
                OAUTH_REGISTER_CLASS.to_owned(),
                ClassQuota::limited(1, oauth_register_per_address()),
            )]
            .into_iter()
            .collect(),
            ..LimitConfig::default()
        }
    }

    /// The per-tenant concurrency limiter.
    pub fn concurrency(&self) -> ConcurrencyLimiter {
        ConcurrencyLimiter::new(self.concurrency_per_tenant)
            .with_class(KEY_CREATE_CLASS, self.concurrency_key_create)
    }
}

/// How long the process reuses what it looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// A registry answer (slug or id → tenant): suspending a tenant takes effect on every
    /// process within this time.
    pub registry_ttl: Duration,
    /// A verified API key (see `service::credentials`): the bound on a revocation whose change
    /// notification was lost.
    pub key_ttl: Duration,
    /// A credential's role ceiling (see `service::ceilings`): the bound on a role change.
    pub ceiling_ttl: Duration,
    /// A compiled tool schema, after its last use.
    pub schema_idle: Duration,
    /// The token denylist and signing keys.
    pub tokens: TokenFreshness,
}

/// How fresh the token service keeps its denylist and keys (`service::tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenFreshness {
    /// Between whole reloads, the backstop for missed notifications.
    pub reload: Duration,
    /// Longest the denylist may go without a live listener or a successful reload before
    /// tokens are refused (fail closed); longer than `reload`.
    pub max_staleness: Duration,
}

impl Default for TokenFreshness {
    fn default() -> Self {
        Self {
            reload: Duration::from_secs(30),
            max_staleness: Duration::from_secs(60),
        }
    }
}

/// The ceiling cache lifetime unless `--ceiling-cache-secs` says otherwise.
pub const DEFAULT_CEILING_TTL: Duration = Duration::from_secs(5);

/// The longest a security bound (registry, key, ceiling) may be cached: a revocation or a
/// suspension must not wait longer than this on a process that missed its notification.
pub const MAX_SECURITY_CACHE: Duration = Duration::from_secs(300);

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            registry_ttl: Duration::from_secs(2),
            key_ttl: Duration::from_secs(60),
            ceiling_ttl: DEFAULT_CEILING_TTL,
            schema_idle: Duration::from_secs(600),
            tokens: TokenFreshness::default(),
        }
    }
}

impl CacheSettings {
    /// Every lifetime at least one second; the security bounds at most [`MAX_SECURITY_CACHE`].
    pub fn validate(&self) -> Result<(), String> {
        let bounds = [
            ("--registry-cache-secs", self.registry_ttl),
            ("--key-cache-secs", self.key_ttl),
            ("--ceiling-cache-secs", self.ceiling_ttl),
        ];
        for (flag, ttl) in bounds {
            if ttl.is_zero() || ttl > MAX_SECURITY_CACHE {
                return Err(format!(
                    "{flag} must be between 1 and {} seconds",
                    MAX_SECURITY_CACHE.as_secs()
                ));
            }
        }
        if self.schema_idle.is_zero() {
            return Err("--schema-cache-idle-secs must be at least 1".into());
        }
        let TokenFreshness {
            reload,
            max_staleness,
        } = self.tokens;
        if reload.is_zero() || reload >= max_staleness || max_staleness > MAX_SECURITY_CACHE {
            return Err(format!(
                "--token-reload-secs must be at least 1 and below --token-denylist-staleness-secs, \
                 which may be at most {} seconds",
                MAX_SECURITY_CACHE.as_secs()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn the_flag_defaults_are_the_checked_in_defaults() {
        let flags = Flags::try_parse_from(["serve"]).expect("defaults parse");
        assert_eq!(flags.limits.rate_limits(), Ok(RateLimitSettings::default()));
        assert_eq!(flags.limits.caches(), Ok(CacheSettings::default()));
    }

    #[test]
    fn quotas_parse_and_refuse_nonsense() {
        assert_eq!(
            parse_quota("30/m:10"),
            Ok(Quota::per_minute(30).with_burst(10))
        );
        assert_eq!(parse_quota("7/h:1"), Ok(Quota::per_hour(7).with_burst(1)));
        for bad in [
            "", "10", "10/s", "0/s:1", "1/s:0", "1/d:1", "-1/s:2", "x/s:1",
        ] {
            assert!(parse_quota(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn unusable_limits_and_lifetimes_are_refused() {
        let refused_limits = [
            RateLimitSettings {
                free: Quota::per_second(5).with_burst(5),
                ..RateLimitSettings::default()
            },
            RateLimitSettings {
                login: LoginThrottleSettings {
                    failures: 0,
                    ..LoginThrottleSettings::default()
                },
                ..RateLimitSettings::default()
            },
        ];
        for limits in refused_limits {
            assert!(limits.validate().is_err(), "{limits:?} accepted");
        }
        let tokens = |reload, max_staleness| TokenFreshness {
            reload: Duration::from_secs(reload),
            max_staleness: Duration::from_secs(max_staleness),
        };
        let refused_caches = [
            CacheSettings {
                key_ttl: Duration::from_secs(3600),
                ..CacheSettings::default()
            },
            CacheSettings {
                registry_ttl: Duration::ZERO,
                ..CacheSettings::default()
            },
            // A denylist allowed to be staler than the reload that refreshes it never goes
            // stale between reloads: the staleness bound must exceed the reload interval.
            CacheSettings {
                tokens: tokens(60, 60),
                ..CacheSettings::default()
            },
            CacheSettings {
                tokens: tokens(30, 3600),
                ..CacheSettings::default()
            },
        ];
        for caches in refused_caches {
            assert!(caches.validate().is_err(), "{caches:?} accepted");
        }
    }
}
