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
    rate_limits: Option<crate::service::rate_limits::SharedLimits>,
    config: AppConfig,
    directory: TenantDirectory,
    ceilings: Arc<crate::service::ceilings::RoleCeilings>,
    audit: Arc<crate::service::audit_log::AuditService>,
    tool_client: bulkhead_webhooks::EgressClient,
    document_client: bulkhead_webhooks::EgressClient,
    schema_pool: bulkhead_schema::Evaluator,
    schema_cache: crate::service::tool_schemas::SchemaCache,
    screener: Arc<bulkhead_screening::Screener>,
    hashing: crate::service::hashing::HashPool,
    metadata_documents: crate::service::oauth::metadata_document::DocumentCache,
}

/// Everything the application is made of. Every part is required: nothing falls back to a
/// default behind the caller's back (a random audit key, the system resolver for tool calls).
/// `bulkhead serve` builds it from the settings (`cli/serve.rs`), the test harness and the
/// benchmarks from theirs (`bulkhead_test_support::app_parts`), and both build the state with
/// [`AppState::from_parts`].
pub struct AppParts {
    /// The store door (the serving pool).
    pub store: Store,
    /// The key peppers: the current one hashes new keys, earlier ones still verify.
    pub peppers: Peppers,
    /// Seals signing keys and secrets at rest.
    pub master_key: Arc<MasterKey>,
    /// Validated settings.
    pub config: AppConfig,
    /// Where "now" comes from.
    pub clock: Clock,
    /// The rate limiters (`None`: no limiting, for benchmarks of the rest of the pipeline).
    pub rate_limits: Option<crate::service::rate_limits::SharedLimits>,
    /// The audit log's signing key and authentication-failure queue.
    pub audit: Arc<crate::service::audit_log::AuditService>,
    /// The guarded client tool calls leave through.
    pub tool_client: bulkhead_webhooks::EgressClient,
    /// The guarded client client ID metadata documents are fetched through: the guard's own
    /// policy ([`crate::service::oauth::metadata_document::egress_policy`]), never the
    /// operator's webhook exceptions (allow-list, ports, proxy), since anyone may name a URL.
    pub document_client: bulkhead_webhooks::EgressClient,
    /// The bounded pool tenant JSON Schemas are evaluated on.
    pub schema_pool: bulkhead_schema::Evaluator,
    /// The screening rules.
    pub screener: Arc<bulkhead_screening::Screener>,
}

impl std::fmt::Debug for AppParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppParts").finish_non_exhaustive()
    }
}

impl AppState {
    /// The application's state, from all of its parts.
    pub fn from_parts(parts: AppParts) -> Self {
        let AppParts {
            store,
            peppers,
            master_key,
            config,
            clock,
            rate_limits,
            audit,
            tool_client,
            document_client,
            schema_pool,
            screener,
        } = parts;
        let directory = TenantDirectory::new(config.caches.registry_ttl);
        let verifier = Arc::new(KeyVerifier::new(
            store.clone(),
            peppers,
            config.key_environment,
            clock.clone(),
            config.caches.key_ttl,
        ));
        let tokens = Arc::new(TokenService::new(
            store.clone(),
            master_key.clone(),
            clock.clone(),
            config.tokens.clone(),
            config.caches.tokens,
        ));
        let hashing = crate::service::hashing::HashPool::new(&config.hashing);
        let ceilings = Arc::new(crate::service::ceilings::RoleCeilings::new(
            config.caches.ceiling_ttl,
        ));
        let schema_cache =
            crate::service::tool_schemas::new_schema_cache(config.caches.schema_idle);
        Self {
            inner: Arc::new(Inner {
                hashing,
                metadata_documents: Default::default(),
                store,
                verifier,
                tokens,
                master_key,
                login_ips: crate::service::login_throttle::IpThrottle::new(
                    &config.rate_limits.login,
                ),
                clock,
                rate_limits,
                config,
                directory,
                audit,
                ceilings,
                tool_client,
                document_client,
                schema_pool,
                schema_cache,
                screener,
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
    pub fn rate_limits(&self) -> Option<&crate::service::rate_limits::SharedLimits> {
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

    /// The audit log key and authentication-failure queue.
    pub fn audit(&self) -> &Arc<crate::service::audit_log::AuditService> {
        &self.inner.audit
    }

    /// Role ceilings of credentials, briefly cached.
    pub fn ceilings(&self) -> &crate::service::ceilings::RoleCeilings {
        &self.inner.ceilings
    }

    /// The same cache, shared (for its change listener).
    pub fn ceilings_handle(&self) -> Arc<crate::service::ceilings::RoleCeilings> {
        self.inner.ceilings.clone()
    }

    /// The client ID metadata documents fetched, per tenant and URL.
    pub fn metadata_documents(&self) -> &crate::service::oauth::metadata_document::DocumentCache {
        &self.inner.metadata_documents
    }

    /// The guarded client tool calls leave through.
    pub fn tool_client(&self) -> &bulkhead_webhooks::EgressClient {
        &self.inner.tool_client
    }

    /// The guarded client client ID metadata documents are fetched through (the guard's own
    /// policy, none of the operator's webhook exceptions).
    pub fn document_client(&self) -> &bulkhead_webhooks::EgressClient {
        &self.inner.document_client
    }

    /// The bounded pool that compiles and evaluates tenant JSON Schemas off the async runtime.
    pub fn schema_pool(&self) -> &bulkhead_schema::Evaluator {
        &self.inner.schema_pool
    }

    /// Compiled tool input schemas keyed by (tenant, tool id, version), so a call does not
    /// recompile (and re-check every pattern of) the stored schema each time.
    pub(crate) fn schema_cache(&self) -> &crate::service::tool_schemas::SchemaCache {
        &self.inner.schema_cache
    }

    /// The screening rules compiled into this build.
    pub fn screener(&self) -> &Arc<bulkhead_screening::Screener> {
        &self.inner.screener
    }

    /// Registry reads, briefly cached.
    pub fn directory(&self) -> &TenantDirectory {
        &self.inner.directory
    }
}

/// Registry lookups with a short time-to-live, so resolution does not cost a query per request
/// while suspension still takes effect within the registry cache lifetime
/// ([`crate::config::CacheSettings::registry_ttl`]). This is control-plane
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

    /// Drops what this process cached of a tenant, so a change an operator just made (a
    /// suspension for deletion, its cancellation, a purge) holds here on the next request;
    /// other processes see it within the cache's lifetime.
    pub async fn forget(&self, id: TenantId, slug: Option<&TenantSlug>) {
        self.by_id.invalidate(&id).await;
        if let Some(slug) = slug {
            self.by_slug.invalidate(slug).await;
        }
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
