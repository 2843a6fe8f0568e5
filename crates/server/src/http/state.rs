//! Shared application state.

use std::sync::Arc;

use bulkhead_core::{Clock, TenantId, TenantSlug};
use bulkhead_store::placement::registry::Tenant;
use bulkhead_store::{Store, StoreError};

use bulkhead_auth::MasterKey;

use crate::config::AppConfig;
use crate::service::credentials::{KeyVerifier, Peppers};
use crate::service::tokens::TokenService;

/// What every handler and middleware can reach. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    verifier: Arc<KeyVerifier>,
    tokens: Arc<TokenService>,
    master_key: Arc<MasterKey>,
    login_ips: crate::service::login_throttle::IpThrottle,
    clock: Clock,
    rate_limits: Option<crate::http::limits::SharedLimits>,
    config: AppConfig,
    directory: TenantDirectory,
    ceilings: Arc<crate::service::ceilings::RoleCeilings>,
    audit: std::sync::OnceLock<Arc<crate::service::audit_log::AuditService>>,
    tool_client: std::sync::OnceLock<bulkhead_webhooks::EgressClient>,
    schema_pool: std::sync::OnceLock<bulkhead_schema::Evaluator>,
    schema_cache: std::sync::OnceLock<crate::http::routes::tools::SchemaCache>,
    screener: std::sync::OnceLock<
        Result<Arc<bulkhead_screening::Screener>, bulkhead_screening::RuleError>,
    >,
    hashing: crate::service::hashing::HashPool,
}

impl AppState {
    /// Assembles the state, with the default rate limits kept in process.
    pub fn new(
        store: Store,
        peppers: Peppers,
        master_key: impl Into<Arc<MasterKey>>,
        config: AppConfig,
        clock: Clock,
    ) -> Self {
        let limits = crate::http::limits::RateLimits::in_memory(
            crate::http::limits::default_limits(),
            crate::http::limits::default_preauth_limits(),
            clock.clone(),
        );
        Self::with_rate_limits(
            store,
            peppers,
            master_key,
            config,
            clock,
            Some(Arc::new(limits)),
        )
    }

    /// Assembles the state with the given rate limits (`None`: no limiting, for benchmarks
    /// that measure the rest of the pipeline).
    pub fn with_rate_limits(
        store: Store,
        peppers: Peppers,
        master_key: impl Into<Arc<MasterKey>>,
        config: AppConfig,
        clock: Clock,
        rate_limits: Option<crate::http::limits::SharedLimits>,
    ) -> Self {
        let directory = TenantDirectory::new(config.registry_ttl);
        let verifier = Arc::new(KeyVerifier::new(
            store.clone(),
            peppers,
            config.key_environment,
            clock.clone(),
        ));
        let master_key: Arc<MasterKey> = master_key.into();
        let tokens = Arc::new(TokenService::new(
            store.clone(),
            master_key.clone(),
            clock.clone(),
            config.tokens.clone(),
        ));
        let hashing = crate::service::hashing::HashPool::new(&config.hashing);
        Self {
            inner: Arc::new(Inner {
                hashing,
                store,
                verifier,
                tokens,
                master_key,
                login_ips: Default::default(),
                clock,
                rate_limits,
                config,
                directory,
                audit: std::sync::OnceLock::new(),
                ceilings: Default::default(),
                tool_client: std::sync::OnceLock::new(),
                schema_pool: std::sync::OnceLock::new(),
                schema_cache: std::sync::OnceLock::new(),
                screener: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The password-hashing pool.
    pub fn hashing(&self) -> &crate::service::hashing::HashPool {
        &self.inner.hashing
    }

    /// The store door.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// API-key verification (and the peppers new keys are hashed with).
    pub fn verifier(&self) -> &Arc<KeyVerifier> {
        &self.inner.verifier
    }

    /// Access tokens: keys, issuing, verification, denylist.
    pub fn tokens(&self) -> &Arc<TokenService> {
        &self.inner.tokens
    }

    /// The master key: seals signing keys and webhook secrets at rest.
    pub fn master_key(&self) -> &Arc<MasterKey> {
        &self.inner.master_key
    }

    /// Failed logins per client address.
    pub fn login_ips(&self) -> &crate::service::login_throttle::IpThrottle {
        &self.inner.login_ips
    }

    /// The rate limiters, if limiting is on.
    pub fn rate_limits(&self) -> Option<&crate::http::limits::SharedLimits> {
        self.inner.rate_limits.as_ref()
    }

    /// Where "now" comes from.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Settings.
    pub fn config(&self) -> &AppConfig {
        &self.inner.config
    }

    /// The audit log key and authentication-failure queue. Without [`AppState::set_audit`]
    /// before first use, a process-local random key (tests and benchmarks).
    pub fn audit(&self) -> &Arc<crate::service::audit_log::AuditService> {
        self.inner.audit.get_or_init(|| {
            Arc::new(crate::service::audit_log::AuditService::new(
                bulkhead_audit::LogSigningKey::generate(),
            ))
        })
    }

    /// Installs the audit service (the configured log key). Returns false, changing nothing, if
    /// one is already in use.
    pub fn set_audit(&self, service: Arc<crate::service::audit_log::AuditService>) -> bool {
        self.inner.audit.set(service).is_ok()
    }

    /// Role ceilings of credentials, briefly cached.
    pub fn ceilings(&self) -> &crate::service::ceilings::RoleCeilings {
        &self.inner.ceilings
    }

    /// The same cache, shared (for its change listener).
    pub fn ceilings_handle(&self) -> Arc<crate::service::ceilings::RoleCeilings> {
        self.inner.ceilings.clone()
    }

    /// The guarded client tool calls go through. Without [`AppState::set_tool_client`] before
    /// first use: the operator's egress policy with the system resolver.
    pub fn tool_client(
        &self,
    ) -> Result<&bulkhead_webhooks::EgressClient, bulkhead_webhooks::egress::BuildError> {
        if let Some(client) = self.inner.tool_client.get() {
            return Ok(client);
        }
        let client = bulkhead_webhooks::EgressClient::new(
            self.inner.config.webhook_egress.clone(),
            Arc::new(bulkhead_webhooks::HickoryResolver::from_system()),
            &bulkhead_webhooks::EgressConfig {
                user_agent: "Bulkhead-Tools/1".into(),
                ..Default::default()
            },
        )?;
        Ok(self.inner.tool_client.get_or_init(|| client))
    }

    /// The bounded pool that compiles and evaluates tenant JSON Schemas off the async runtime
    /// (`bulkhead_schema::Evaluator::with_defaults`), started on first use.
    pub fn schema_pool(&self) -> &bulkhead_schema::Evaluator {
        self.inner
            .schema_pool
            .get_or_init(bulkhead_schema::Evaluator::with_defaults)
    }

    /// Compiled tool input schemas keyed by (tenant, tool id, version), so a call does not
    /// recompile (and re-check every pattern of) the stored schema each time.
    pub(crate) fn schema_cache(&self) -> &crate::http::routes::tools::SchemaCache {
        self.inner
            .schema_cache
            .get_or_init(crate::http::routes::tools::new_schema_cache)
    }

    /// Installs the tool-call client (the operator's proxy; in tests a loopback resolver and a
    /// test CA). Returns false, changing nothing, if one is already in use.
    pub fn set_tool_client(&self, client: bulkhead_webhooks::EgressClient) -> bool {
        self.inner.tool_client.set(client).is_ok()
    }

    /// The screening rules compiled into this build, parsed once. A broken rule file is an
    /// error here for every request that screens (fail closed) and a start-up error for
    /// `bulkhead serve`, which calls this before it listens.
    pub fn screener(
        &self,
    ) -> Result<&Arc<bulkhead_screening::Screener>, &bulkhead_screening::RuleError> {
        self.inner
            .screener
            .get_or_init(|| bulkhead_screening::Screener::builtin().map(Arc::new))
            .as_ref()
    }

    /// Registry reads, briefly cached.
    pub fn directory(&self) -> &TenantDirectory {
        &self.inner.directory
    }
}

/// Registry lookups with a short time-to-live, so resolution does not cost a query per request
/// while suspension still takes effect within [`AppConfig::registry_ttl`]. This is control-plane
/// data keyed by slug or id, not tenant data, so it is not a [`bulkhead_core::TenantCache`].
#[derive(Debug)]
pub struct TenantDirectory {
    by_slug: moka::future::Cache<TenantSlug, Option<Tenant>>,
    by_id: moka::future::Cache<TenantId, Option<Tenant>>,
}

impl TenantDirectory {
    fn new(ttl: std::time::Duration) -> Self {
        Self {
            by_slug: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            by_id: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The tenant served under `slug`, if any.
    pub async fn by_slug(
        &self,
        store: &Store,
        slug: &TenantSlug,
    ) -> Result<Option<Tenant>, StoreError> {
        if let Some(hit) = self.by_slug.get(slug).await {
            return Ok(hit);
        }
        let found = store.tenant_by_slug(slug).await?;
        self.by_slug.insert(slug.clone(), found.clone()).await;
        Ok(found)
    }

    /// The tenant with `id`, if any.
    pub async fn by_id(&self, store: &Store, id: TenantId) -> Result<Option<Tenant>, StoreError> {
        if let Some(hit) = self.by_id.get(&id).await {
            return Ok(hit);
        }
        let found = store.tenant_by_id(id).await?;
        self.by_id.insert(id, found.clone()).await;
        Ok(found)
    }
}
