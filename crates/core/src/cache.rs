//! A cache whose keys carry the tenant by construction.

use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use crate::context::TenantContext;
use crate::id::TenantId;

/// An in-memory, bounded, expiring cache of tenant data.
///
/// Every entry is keyed by `(TenantId, K)`, where the tenant comes from the [`TenantContext`] the
/// caller holds. There is no way to read or write an entry without a context, so two tenants can
/// never share an entry, even when their own keys (`K`) are equal.
pub struct TenantCache<K, V> {
    inner: moka::future::Cache<(TenantId, K), V>,
}

impl<K, V> TenantCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache holding at most `capacity` entries, each for at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            inner: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                // Invalidate-by-tenant needs predicate support.
                .support_invalidation_closures()
                .build(),
        }
    }

    /// The entry for `key` under the context's tenant.
    pub async fn get(&self, ctx: &TenantContext, key: &K) -> Option<V>
    where
        K: Clone,
    {
        self.inner.get(&(ctx.tenant_id(), key.clone())).await
    }

    /// Stores `value` for `key` under the context's tenant.
    pub async fn insert(&self, ctx: &TenantContext, key: K, value: V) {
        self.inner.insert((ctx.tenant_id(), key), value).await;
    }

    /// Drops the entry for `key` under the context's tenant.
    pub async fn invalidate(&self, ctx: &TenantContext, key: &K)
    where
        K: Clone,
    {
        self.inner.invalidate(&(ctx.tenant_id(), key.clone())).await;
    }

    /// Drops every entry of every tenant (a change listener that may have missed changes).
    pub fn invalidate_all(&self) {
        self.inner.invalidate_all();
    }

    /// Drops every entry of one tenant (for example when it is suspended or moved).
    pub fn invalidate_tenant(&self, tenant: TenantId) {
        // Only fails when closures are not enabled, which `new` always does.
        let _ = self
            .inner
            .invalidate_entries_if(move |(entry_tenant, _), _| *entry_tenant == tenant);
    }
}

impl<K, V> fmt::Debug for TenantCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCache")
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(tenant: TenantId) -> TenantContext {
        TenantContext::for_system(tenant, "test")
    }

    #[tokio::test]
    async fn equal_keys_of_two_tenants_never_share_an_entry() {
        let cache: TenantCache<&'static str, u32> = TenantCache::new(100, Duration::from_secs(60));
        let (a, b) = (ctx(TenantId::new()), ctx(TenantId::new()));
        cache.insert(&a, "settings", 1).await;
        assert_eq!(cache.get(&a, &"settings").await, Some(1));
        assert_eq!(cache.get(&b, &"settings").await, None);
        cache.insert(&b, "settings", 2).await;
        cache.invalidate_tenant(a.tenant_id());
        cache.inner.run_pending_tasks().await;
        assert_eq!(cache.get(&a, &"settings").await, None);
        assert_eq!(cache.get(&b, &"settings").await, Some(2));
    }
}
