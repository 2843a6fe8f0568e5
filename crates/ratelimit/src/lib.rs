//! Tenant-aware, multi-level, all-or-nothing rate limiting (GCRA), in process or in Redis, and a
//! per-tenant concurrency limiter.
//!
//! A [`Limiter`] checks each [`Request`] at up to four [`Level`]s, all configured in one
//! [`LimitConfig`]: **global** (the deployment), **tenant** (the plan's budget or a per-tenant
//! override), **agent** (an agent or API key inside the tenant) and **endpoint** (a class such as
//! `login` or `token` with its own per-tenant quota). Classes also carry a **cost**: how many units
//! one request takes from the global, tenant and agent budgets. Each level is a GCRA cell (rate +
//! burst, see [`Quota`]); the [`Decision`] names the level that rejected and carries what
//! [`header_values`] needs to render `RateLimit-Policy`, `RateLimit` and `Retry-After`.
//!
//! ```no_run
//! # async fn example(tenant: bulkhead_core::TenantId) {
//! use bulkhead_ratelimit::{header_values, ClassQuota, LimitConfig, Limiter, Plan, Quota, Request};
//! let mut config = LimitConfig::default();
//! config.plans.insert(Plan::Free, Quota::per_minute(60).with_burst(20));
//! config.per_agent = Some(Quota::per_second(5));
//! config.classes.insert("login".into(), ClassQuota::limited(5, Quota::per_minute(10)));
//! let limiter = Limiter::in_memory(config, bulkhead_core::Clock::system());
//!
//! let request = Request::new(tenant, Plan::Free, "login").with_agent("key_123");
//! let decision = limiter.check(&request).await;
//! for (name, value) in header_values(&decision) { /* add to the response */ }
//! if !decision.allowed { /* 429 naming decision.rejected_by */ }
//! # }
//! ```
//!
//! # Invariants
//!
//! - **All or nothing.** A request is charged at every level that applies or at none. Every
//!   level's next state is computed first and committed only if all allow, so a request rejected
//!   at one level consumes no quota at the others: a tenant whose agent is over its limit keeps its
//!   whole tenant budget, and a tenant hammering past its budget does not eat the global budget
//!   with its rejected requests. In process this holds under one shard lock plus a
//!   compare-and-swap on the global cell; in Redis, inside one Lua script.
//! - **Same arithmetic everywhere.** Both backends use integer microseconds and the same
//!   evaluation, and the Redis script takes the caller's clock as an argument: with the same
//!   injected [`bulkhead_core::Clock`] they return the same decisions.
//! - **Global level on Redis Cluster is approximate.** Tenant-scoped keys share the `{tnt_…}` hash
//!   tag (one slot, one script); the global key lives in its own slot. With
//!   [`GlobalMode::InScript`] (the default, for a single Redis endpoint) it is one more key of the
//!   same script and exact. On Cluster use [`GlobalMode::LocalShare`]: each of N processes enforces
//!   `1/N` of the global quota in memory, checked before the script without charging and charged
//!   only after the script allowed. A request rejected by the global share touches nothing; the
//!   approximation is the even split across processes plus, per process, at most the number of
//!   requests in flight at once. Tenant, agent and endpoint stay exact.
//! - **Fallback policy.** If Redis fails or exceeds its timeout (50 ms by default), the decision
//!   follows [`Fallback`]: [`Fallback::Local`] (default) decides with an in-process store and marks
//!   it [`Source::LocalFallback`]; [`Fallback::Deny`] refuses ([`Source::Unavailable`]). Each failure
//!   increments `bulkhead_ratelimit_backend_errors_total`; the first of an outage logs one warning.
//!   For `retry_interval` (1 s) after a failure decisions go straight to the fallback, then one
//!   decision tries to reconnect; the first success logs the recovery. Nothing here panics on
//!   backend errors, and [`Limiter::check`] has no error path.
//! - **Bounded memory.** The in-process store holds at most [`MemoryOptions::max_entries`] entries
//!   (one per live tenant, agent or endpoint key). A key whose state has passed "fully rested" is
//!   indistinguishable from an absent one and is dropped: every `sweep_interval` per shard, when a
//!   shard fills, or on [`Limiter::evict_rested`]. Only when a shard is full of keys that are all
//!   still recovering does it drop the eighth closest to rest (lossy: those keys regain part of
//!   their burst early; counted in `bulkhead_ratelimit_evictions_total`). Redis keys expire
//!   (`PX`) exactly when they would be fully rested.
//! - **Time is injected.** Every decision reads the [`bulkhead_core::Clock`] given to the limiter,
//!   in whole microseconds. For `Clock::system()` the limiter reads a CPU counter re-anchored to
//!   the wall clock every second (a `clock_gettime` plus `DateTime` conversions cost about a fifth
//!   of an in-process decision); it stays within microseconds of the wall clock. The Redis
//!   backend's reconnect timer uses real (monotonic) time, never the injected clock.
//! - **Concurrency limits are per process.** [`ConcurrencyLimiter`] counts permits in this process;
//!   a [`Permit`] gives its slot back when dropped.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod concurrency;
mod config;
mod decision;
mod gcra;
mod limiter;
mod memory;
mod redis_store;
mod time;

pub use concurrency::{ConcurrencyLimiter, Permit};
pub use config::{ClassQuota, Level, LimitConfig, Plan, Quota, UnknownPlan, DEFAULT_CLASS};
pub use decision::{header_values, Decision, LevelState, Source};
pub use limiter::{ConfigError, Fallback, Limiter, RedisOptions, Request};
pub use memory::MemoryOptions;
pub use redis_store::GlobalMode;
