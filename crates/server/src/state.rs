//! Shared application state.

use std::sync::Arc;

use bulkhead_auth::KeyPepper;
use bulkhead_core::{TenantId, TenantSlug};
use bulkhead_store::registry::Tenant;
use bulkhead_store::{Store, StoreError};

use crate::config::AppConfig;

/// What every handler and middleware can reach. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    pepper: KeyPepper,
    config: AppConfig,
    directory: TenantDirectory,
}

impl AppState {
    /// Assembles the state.
    pub fn new(store: Store, pepper: KeyPepper, config: AppConfig) -> Self {
        let directory = TenantDirectory::new(config.registry_ttl);
        Self {
            inner: Arc::new(Inner {
                store,
                pepper,
                config,
                directory,
            }),
        }
    }

    /// The store door.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The key pepper.
    pub fn pepper(&self) -> &KeyPepper {
        &self.inner.pepper
    }

    /// Settings.
    pub fn config(&self) -> &AppConfig {
        &self.inner.config
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
