//! The limits, configured in one place: quotas, plans, classes and the four levels.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bulkhead_core::TenantId;

/// A GCRA quota: `count` units per `period` on average, at most `burst` units at once.
///
/// The emission interval (the time one unit takes to come back) is `period / count`, kept in whole
/// microseconds, the resolution every backend works in. A key that has been idle long enough is
/// "fully rested" and can spend `burst` units at once; a request costing more than `burst` is
/// never allowed at that level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u32,
    burst: u32,
    period_us: u64,
    emission_us: u64,
}

impl Quota {
    /// `count` units per `period`, with a burst of `count` (change it with [`Quota::with_burst`]).
    ///
    /// # Panics
    /// If `count` is 0 or `period` is shorter than one microsecond: a configuration error, found
    /// at start-up.
    pub fn new(count: u32, period: Duration) -> Self {
        assert!(count > 0, "a quota needs a count of at least 1");
        let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
        assert!(period_us > 0, "a quota needs a period of at least 1 µs");
        Self {
            count,
            burst: count,
            period_us,
            emission_us: (period_us / u64::from(count)).max(1),
        }
    }

    /// `count` units per second (burst `count`). Panics as [`Quota::new`].
    pub fn per_second(count: u32) -> Self {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` units per minute (burst `count`). Panics as [`Quota::new`].
    pub fn per_minute(count: u32) -> Self {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` units per hour (burst `count`). Panics as [`Quota::new`].
    pub fn per_hour(count: u32) -> Self {
        Self::new(count, Duration::from_secs(3600))
    }

    /// The same rate with another burst.
    ///
    /// # Panics
    /// If `burst` is 0.
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        assert!(burst > 0, "a quota needs a burst of at least 1");
        self.burst = burst;
        self
    }

    /// Units per period (the `q` of the `RateLimit-Policy` header).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period (the `w` of the `RateLimit-Policy` header, in whole seconds rounded up), to the
    /// microsecond.
    pub fn period(&self) -> Duration {
        Duration::from_micros(self.period_us)
    }

    /// The most units that can be spent at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The emission interval: how long one unit takes to come back.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_micros(self.emission_us)
    }

    pub(crate) fn emission_us(&self) -> u64 {
        self.emission_us
    }

    /// `burst × emission interval`: how far ahead of now the theoretical arrival time may run.
    pub(crate) fn capacity_us(&self) -> u64 {
        self.emission_us.saturating_mul(u64::from(self.burst))
    }

    /// This quota split evenly over `parts` processes (each at least 1 per period, burst 1).
    pub(crate) fn share(&self, parts: u32) -> Self {
        let parts = parts.max(1);
        Self::new((self.count / parts).max(1), self.period())
            .with_burst((self.burst / parts).max(1))
    }
}

/// A tenant's plan, which picks its default budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Plan {
    /// The free plan.
    Free,
    /// The standard (paid) plan.
    Standard,
    /// The enterprise plan.
    Enterprise,
}

impl Plan {
    /// The lowercase name (`free`, `standard`, `enterprise`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Standard => "standard",
            Self::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of `free`, `standard`, `enterprise`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plan {0:?}: expected free, standard or enterprise")]
pub struct UnknownPlan(pub String);

impl FromStr for Plan {
    type Err = UnknownPlan;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "free" => Ok(Self::Free),
            "standard" => Ok(Self::Standard),
            "enterprise" => Ok(Self::Enterprise),
            other => Err(UnknownPlan(other.to_owned())),
        }
    }
}

/// One of the four levels a request is checked at, from the widest to the narrowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// The whole deployment.
    Global,
    /// One tenant (its plan's budget or its override).
    Tenant,
    /// One agent or API key inside a tenant.
    Agent,
    /// One endpoint class inside a tenant (`login`, `token`, …), when the class has its own quota.
    Endpoint,
    /// One client address before authentication: a limiter keyed by address reports its
    /// budget under this name (the caller relabels the tenant level, see
    /// [`Decision::relabel`](crate::Decision::relabel)).
    Address,
}

impl Level {
    /// The lowercase name, also the policy name in the RateLimit headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Tenant => "tenant",
            Self::Agent => "agent",
            Self::Endpoint => "endpoint",
            Self::Address => "address",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an endpoint class is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassQuota {
    /// Units one request of this class takes from the global, tenant and agent budgets
    /// (at least 1; a request may override it with [`Request::cost`](crate::Request::cost)).
    pub cost: u32,
    /// The class's own per-tenant limit, counted in requests (each request is 1 unit here,
    /// whatever its cost), or `None` for no endpoint level.
    pub quota: Option<Quota>,
}

impl ClassQuota {
    /// A class that only costs more: no endpoint level of its own.
    pub fn cost(cost: u32) -> Self {
        Self { cost, quota: None }
    }

    /// A class with its own per-tenant limit and a cost.
    pub fn limited(cost: u32, quota: Quota) -> Self {
        Self {
            cost,
            quota: Some(quota),
        }
    }
}

/// The name of the class used for requests whose class is not configured.
pub const DEFAULT_CLASS: &str = "default";

/// Every limit of the deployment. A level whose quota is absent is not checked.
///
/// - Global: `global`, one budget for the whole deployment.
/// - Tenant: `tenant_overrides[tenant]` if present, else the request's own
///   [`crate::Request::tenant_quota`] if it has one, else `plans[plan]`.
/// - Agent: `per_agent`, for each agent or key id inside a tenant, when the request names one.
/// - Endpoint: `classes[class].quota`, per tenant and class. A class that is not configured is
///   charged as the [`DEFAULT_CLASS`] entry, or cost 1 with no endpoint level if there is none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitConfig {
    /// The budget of the whole deployment.
    pub global: Option<Quota>,
    /// The tenant budget of each plan.
    pub plans: HashMap<Plan, Quota>,
    /// Per-tenant budgets that replace the plan's.
    pub tenant_overrides: HashMap<TenantId, Quota>,
    /// The budget of each agent or key inside a tenant.
    pub per_agent: Option<Quota>,
    /// Endpoint classes by name.
    pub classes: HashMap<String, ClassQuota>,
}
