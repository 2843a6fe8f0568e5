//! The concurrency limiter: at most N requests of a class in flight per tenant, in this process.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use bulkhead_core::TenantId;

const SHARDS: usize = 16;

type Counts = HashMap<(TenantId, Box<str>), u32>;

struct Inner {
    default_max: u32,
    classes: HashMap<String, u32>,
    shards: [Mutex<Counts>; SHARDS],
    hasher: RandomState,
}

impl Inner {
    fn shard(&self, tenant: TenantId) -> MutexGuard<'_, Counts> {
        let index = (self.hasher.hash_one(tenant) as usize) % SHARDS;
        // Counts stay consistent even if a holder panicked: each change is one statement.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Limits requests in flight per tenant and class (Stripe's "concurrent requests limiter"), for
/// long or expensive endpoints. The count is kept in this process only: with N processes a tenant
/// can have N × max in flight. Memory holds one entry per (tenant, class) with a permit out, and
/// none once all its permits are dropped.
#[derive(Clone)]
pub struct ConcurrencyLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for ConcurrencyLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimiter")
            .field("default_max", &self.inner.default_max)
            .field("classes", &self.inner.classes)
            .finish_non_exhaustive()
    }
}

impl ConcurrencyLimiter {
    /// At most `default_max` in flight per tenant for each class (0 refuses every request).
    pub fn new(default_max: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                default_max,
                classes: HashMap::new(),
                shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
                hasher: RandomState::new(),
            }),
        }
    }

    /// A different maximum for one class. Call before sharing the limiter (it has no effect on a
    /// clone made earlier).
    #[must_use]
    pub fn with_class(mut self, class: &str, max: u32) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.classes.insert(class.to_owned(), max);
        } else {
            let mut classes = self.inner.classes.clone();
            classes.insert(class.to_owned(), max);
            self.inner = Arc::new(Inner {
                default_max: self.inner.default_max,
                classes,
                shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
                hasher: RandomState::new(),
            });
        }
        self
    }

    /// The maximum for a class.
    pub fn max_for(&self, class: &str) -> u32 {
        self.inner
            .classes
            .get(class)
            .copied()
            .unwrap_or(self.inner.default_max)
    }

    /// A permit if the tenant has fewer than the class's maximum in flight; it is given back when
    /// dropped. `None` means "too many in flight": answer 429 without waiting.
    pub fn acquire(&self, tenant: TenantId, class: &str) -> Option<Permit> {
        let max = self.max_for(class);
        if max == 0 {
            return None;
        }
        let key = (tenant, Box::<str>::from(class));
        let mut counts = self.inner.shard(tenant);
        match counts.get_mut(&key) {
            Some(count) if *count >= max => return None,
            Some(count) => *count += 1,
            None => {
                counts.insert(key, 1);
            }
        }
        drop(counts);
        Some(Permit {
            inner: Arc::clone(&self.inner),
            tenant,
            class: class.into(),
        })
    }

    /// Permits of the class currently out for the tenant.
    pub fn in_flight(&self, tenant: TenantId, class: &str) -> u32 {
        self.inner
            .shard(tenant)
            .get(&(tenant, Box::<str>::from(class)))
            .copied()
            .unwrap_or(0)
    }
}

/// One request in flight; dropping it frees the slot. `Send + 'static`: it can live in a
/// response body or a spawned task.
pub struct Permit {
    inner: Arc<Inner>,
    tenant: TenantId,
    class: Box<str>,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("tenant", &self.tenant)
            .field("class", &self.class)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.inner.shard(self.tenant);
        let key = (self.tenant, std::mem::take(&mut self.class));
        if let Some(count) = counts.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&key);
            }
        }
    }
}
