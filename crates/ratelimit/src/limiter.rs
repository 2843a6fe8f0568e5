//! The limiter the HTTP pipeline calls: configuration, backend and fallback policy together.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_core::{Clock, TenantId};

use crate::config::{ClassQuota, Level, LimitConfig, Plan, Quota, DEFAULT_CLASS};
use crate::decision::{Decision, Source};
use crate::gcra::{Cell, Cells};
use crate::memory::{Keys, MemoryOptions, MemoryStore};
use crate::redis_store::{GlobalMode, RedisSettings, RedisStore};
use crate::time::Now;

/// One request to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The authenticated tenant.
    pub tenant: TenantId,
    /// The tenant's plan (picks its budget unless the tenant has an override).
    pub plan: Plan,
    /// The agent or API key id inside the tenant, if any (`None` skips the agent level).
    pub agent: Option<&'a str>,
    /// The endpoint class (`default`, `token`, `login`, …).
    pub class: &'a str,
    /// Overrides the class's cost (e.g. a batch of 20 items costs 20); 0 counts as 1.
    pub cost: Option<u32>,
    /// The tenant's own budget, set where the tenant's record is (an operator's override kept
    /// with it): replaces the plan's budget, but not an override in the configuration.
    pub tenant_quota: Option<Quota>,
}

impl<'a> Request<'a> {
    /// A request of `class` for `tenant`, with no agent and the class's cost.
    pub fn new(tenant: TenantId, plan: Plan, class: &'a str) -> Self {
        Self {
            tenant,
            plan,
            agent: None,
            class,
            cost: None,
            tenant_quota: None,
        }
    }

    /// The same request made by an agent or API key.
    #[must_use]
    pub fn with_agent(mut self, agent: &'a str) -> Self {
        self.agent = Some(agent);
        self
    }

    /// The same request with an explicit cost.
    #[must_use]
    pub fn with_cost(mut self, cost: u32) -> Self {
        self.cost = Some(cost);
        self
    }

    /// The same request under the tenant's own budget ([`Request::tenant_quota`]).
    #[must_use]
    pub fn with_tenant_quota(mut self, quota: Quota) -> Self {
        self.tenant_quota = Some(quota);
        self
    }
}

/// What to do while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Decide in process with the same configuration, starting from empty state (so during an
    /// outage each process allows each tenant its full budget: N processes, N budgets).
    #[default]
    Local,
    /// Refuse every request ([`Source::Unavailable`], `retry_after` = the reconnect interval).
    Deny,
}

/// How to reach Redis and what to do without it.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://[:password@]host:port[/db]` (the server reads it from `REDIS_URL`).
    pub url: String,
    /// Prefix of every key; must not contain `{`. Default `bulkhead:rl`.
    pub key_prefix: String,
    /// Limit on each decision's round trip. Default 50 ms.
    pub timeout: Duration,
    /// Limit on establishing a connection. Default 250 ms.
    pub connect_timeout: Duration,
    /// After a failure, how long decisions go straight to the fallback before one of them tries
    /// to reconnect. Default 1 s.
    pub retry_interval: Duration,
    /// The policy while Redis is unreachable. Default [`Fallback::Local`].
    pub fallback: Fallback,
    /// Where the global level is decided. Default [`GlobalMode::InScript`].
    pub global: GlobalMode,
    /// Sizing of the in-process store used by [`Fallback::Local`].
    pub local: MemoryOptions,
}

impl RedisOptions {
    /// Options for `url` with the defaults above.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "bulkhead:rl".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(250),
            retry_interval: Duration::from_secs(1),
            fallback: Fallback::Local,
            global: GlobalMode::InScript,
            local: MemoryOptions::default(),
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("RedisOptions")
            .field("url", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry_interval", &self.retry_interval)
            .field("fallback", &self.fallback)
            .field("global", &self.global)
            .field("local", &self.local)
            .finish()
    }
}

/// The configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `REDIS_URL` did not parse (the URL itself is not repeated: it may hold a password).
    #[error("the Redis URL is not valid ({0})")]
    RedisUrl(String),
    /// The key prefix contains `{`, which would change the Cluster hash tag.
    #[error("the Redis key prefix must not contain '{{'")]
    KeyPrefix,
}

#[derive(Debug)]
enum Backend {
    Memory(MemoryStore),
    Redis {
        store: Box<RedisStore>,
        fallback: Fallback,
        local: MemoryStore,
    },
}

#[derive(Debug)]
struct Inner {
    config: LimitConfig,
    compiled: Compiled,
    now: Now,
    backend: Backend,
}

/// The configuration in the shape the hot path wants.
#[derive(Debug)]
struct Compiled {
    plans: [Option<Quota>; 3],
    /// Every class; its position is its index in the in-process store.
    classes: Vec<(String, ClassQuota)>,
    /// Name → position, only when there are too many classes to scan.
    class_index: Option<HashMap<String, usize>>,
}

/// Up to this many classes are scanned rather than hashed.
const SCANNED_CLASSES: usize = 16;

fn plan_index(plan: Plan) -> usize {
    match plan {
        Plan::Free => 0,
        Plan::Standard => 1,
        Plan::Enterprise => 2,
    }
}

impl Compiled {
    fn new(config: &LimitConfig) -> Self {
        let mut plans = [None; 3];
        for (plan, quota) in &config.plans {
            plans[plan_index(*plan)] = Some(*quota);
        }
        let classes: Vec<(String, ClassQuota)> = config
            .classes
            .iter()
            .map(|(name, class)| (name.clone(), *class))
            .collect();
        let class_index = (classes.len() > SCANNED_CLASSES).then(|| {
            classes
                .iter()
                .enumerate()
                .map(|(i, (name, _))| (name.clone(), i))
                .collect()
        });
        Self {
            plans,
            classes,
            class_index,
        }
    }

    /// A class by name: its name, index and quota.
    fn class(&self, name: &str) -> Option<(&str, u32, &ClassQuota)> {
        let index = match &self.class_index {
            None => self.classes.iter().position(|(known, _)| known == name)?,
            Some(index) => *index.get(name)?,
        };
        let (known, class) = self.classes.get(index)?;
        Some((known.as_str(), u32::try_from(index).ok()?, class))
    }
}

impl Inner {
    fn new(config: LimitConfig, clock: Clock, backend: Backend) -> Self {
        Self {
            compiled: Compiled::new(&config),
            config,
            now: Now::new(clock),
            backend,
        }
    }
}

/// Checks requests against every configured level, all or nothing. Cheap to clone (one `Arc`);
/// share one per process.
#[derive(Debug, Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

impl Limiter {
    /// An in-process limiter with the default [`MemoryOptions`].
    pub fn in_memory(config: LimitConfig, clock: Clock) -> Self {
        Self::in_memory_with(config, clock, MemoryOptions::default())
    }

    /// An in-process limiter with explicit sizing.
    pub fn in_memory_with(config: LimitConfig, clock: Clock, options: MemoryOptions) -> Self {
        Self {
            inner: Arc::new(Inner::new(
                config,
                clock,
                Backend::Memory(MemoryStore::new(options)),
            )),
        }
    }

    /// A limiter deciding in Redis. Does not connect: the first check does, and until Redis
    /// answers the fallback policy applies.
    pub fn redis(
        config: LimitConfig,
        clock: Clock,
        options: RedisOptions,
    ) -> Result<Self, ConfigError> {
        if options.key_prefix.contains('{') {
            return Err(ConfigError::KeyPrefix);
        }
        let client = redis::Client::open(options.url.as_str())
            .map_err(|error| ConfigError::RedisUrl(format!("{:?}", error.kind())))?;
        let store = Box::new(RedisStore::new(RedisSettings {
            client,
            prefix: options.key_prefix,
            timeout: options.timeout,
            connect_timeout: options.connect_timeout,
            retry_interval: options.retry_interval,
            global: options.global,
            global_quota: config.global,
        }));
        Ok(Self {
            inner: Arc::new(Inner::new(
                config,
                clock,
                Backend::Redis {
                    store,
                    fallback: options.fallback,
                    local: MemoryStore::new(options.local),
                },
            )),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &LimitConfig {
        &self.inner.config
    }

    /// Checks a request at every level that applies and charges all of them, or none.
    /// Never fails: backend trouble is handled by the [`Fallback`] policy. With the in-process
    /// backend the future is ready on its first poll (the Redis round trip is boxed, so this future
    /// stays small to move).
    pub async fn check(&self, request: &Request<'_>) -> Decision {
        let now = self.inner.now.micros();
        let mut cells = Cells::new();
        let keys = self.resolve(request, &mut cells);
        if cells.is_empty() {
            return Decision::unlimited(Source::Backend);
        }
        match &self.inner.backend {
            Backend::Memory(store) => store
                .check(&cells, keys, now)
                .decision(&cells, Source::Backend),
            Backend::Redis {
                store,
                fallback,
                local,
            } => match Box::pin(store.check(&cells, keys, now)).await {
                Ok(decision) => decision,
                Err(_) => match fallback {
                    Fallback::Local => {
                        metrics::counter!("bulkhead_ratelimit_fallback_decisions_total", "policy" => "local")
                            .increment(1);
                        local
                            .check(&cells, keys, now)
                            .decision(&cells, Source::LocalFallback)
                    }
                    Fallback::Deny => {
                        metrics::counter!("bulkhead_ratelimit_fallback_decisions_total", "policy" => "deny")
                            .increment(1);
                        Decision {
                            allowed: false,
                            rejected_by: None,
                            retry_after: Some(store.retry_interval()),
                            limiting: None,
                            source: Source::Unavailable,
                        }
                    }
                },
            },
        }
    }

    /// Entries held by the in-process store (the primary store, or the fallback store of a Redis
    /// limiter). Never above [`Limiter::local_capacity`].
    pub fn local_entries(&self) -> usize {
        self.local_store().len()
    }

    /// The hard cap on [`Limiter::local_entries`].
    pub fn local_capacity(&self) -> usize {
        self.local_store().capacity()
    }

    /// Drops every fully rested entry of the in-process store now (this also happens on its own,
    /// every `sweep_interval` per shard and whenever a shard fills up).
    pub fn evict_rested(&self) {
        self.local_store().evict_rested(self.inner.now.micros());
    }

    fn local_store(&self) -> &MemoryStore {
        match &self.inner.backend {
            Backend::Memory(store) | Backend::Redis { local: store, .. } => store,
        }
    }

    /// The levels that apply to a request, widest first, into `cells` (filled in place: a
    /// returned array would be re-read right after its field-by-field writes, a store-forwarding
    /// stall on the hot path), and its keys.
    fn resolve<'a>(&'a self, request: &Request<'a>, cells: &mut Cells) -> Keys<'a> {
        let inner = &*self.inner;
        let config = &inner.config;
        let class = inner
            .compiled
            .class(request.class)
            .or_else(|| inner.compiled.class(DEFAULT_CLASS));
        let cost = request
            .cost
            .or(class.map(|(_, _, class)| class.cost))
            .unwrap_or(1)
            .max(1);
        let mut keys = Keys {
            tenant: request.tenant,
            agent: None,
            class: None,
        };
        if let Some(quota) = config.global {
            cells.push(Cell {
                level: Level::Global,
                quota,
                cost,
            });
        }
        // The configured override is the deployment's own decision and wins over the one the
        // request carries (an operator's, kept with the tenant's record).
        let tenant_quota = if config.tenant_overrides.is_empty() {
            None
        } else {
            config.tenant_overrides.get(&request.tenant).copied()
        }
        .or(request.tenant_quota)
        .or(inner.compiled.plans[plan_index(request.plan)]);
        if let Some(quota) = tenant_quota {
            cells.push(Cell {
                level: Level::Tenant,
                quota,
                cost,
            });
        }
        if let (Some(quota), Some(agent)) = (config.per_agent, request.agent) {
            cells.push(Cell {
                level: Level::Agent,
                quota,
                cost,
            });
            keys.agent = Some(agent);
        }
        if let Some((name, index, class)) = class {
            if let Some(quota) = class.quota {
                cells.push(Cell {
                    level: Level::Endpoint,
                    quota,
                    cost: 1,
                });
                keys.class = Some((name, index));
            }
        }
        keys
    }
}
