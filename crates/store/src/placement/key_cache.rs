//! Tenants' opened data keys, remembered by a store and its clones (the keys themselves and
//! sealing under them: [`crate::tenant::data_key`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bulkhead_auth::TenantDataKey;
use bulkhead_core::TenantId;

/// How long an opened data key is remembered by a process. A purge drops it at once in every
/// process that follows the registry's notifications (`serve` does: the role-ceiling channel the
/// purge announces on); this bounds the rest.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most keys remembered; past it the memory is emptied (every tenant is fetched again once).
const CACHE_MAX: usize = 10_000;

/// Opened data keys by tenant, shared by a store and its clones.
#[derive(Default)]
pub(crate) struct DataKeyCache {
    entries: Mutex<HashMap<TenantId, (Instant, Arc<TenantDataKey>)>>,
}

impl DataKeyCache {
    pub(crate) fn get(&self, tenant: TenantId) -> Option<Arc<TenantDataKey>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&tenant) {
            Some((at, key)) if at.elapsed() < CACHE_TTL => Some(key.clone()),
            Some(_) => {
                // Expired: out of memory now, not merely skipped.
                entries.remove(&tenant);
                None
            }
            None => None,
        }
    }

    pub(crate) fn put(&self, tenant: TenantId, key: Arc<TenantDataKey>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        if entries.len() >= CACHE_MAX {
            entries.clear();
        }
        entries.insert(tenant, (Instant::now(), key));
    }

    /// Drops every key (a listener that may have missed a purge).
    pub(crate) fn forget_all(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Drops the tenant's key from this process's memory (its purge).
    pub(crate) fn forget(&self, tenant: TenantId) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tenant);
    }
}
