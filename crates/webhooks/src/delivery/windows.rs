//! Earned windows: slots an endpoint earns by answering fast, on top of its share.

use bulkhead_core::{EndpointId, TenantId};

/// Endpoints whose earned windows are remembered; beyond that the least recently earning one
/// falls back to its share (and earns again from there).
pub(super) const WINDOW_ENTRIES: usize = 10_000;

/// Earned windows per endpoint, bounded by evicting the endpoint that earned least recently:
/// an endpoint that keeps answering fast keeps its window however many other endpoints come and
/// go (clearing everything at the bound let any tenant with many endpoints reset every other
/// tenant's windows; review 2, L8), and entries of deleted endpoints age out.
pub(super) struct Windows {
    earned: hashlink::LruCache<(TenantId, EndpointId), i32>,
}

impl Windows {
    pub(super) fn new(entries: usize) -> Self {
        Self {
            earned: hashlink::LruCache::new(entries.max(1)),
        }
    }

    /// One more slot (up to `max`) after a fast success; back to the share `base` otherwise.
    pub(super) fn learn(&mut self, key: (TenantId, EndpointId), fast: bool, base: i32, max: i32) {
        if !fast {
            self.earned.remove(&key);
            return;
        }
        match self.earned.get_mut(&key) {
            Some(w) => *w = (*w + 1).min(max),
            // Inserting past the bound evicts the least recently used entry only.
            None => {
                self.earned.insert(key, (base + 1).min(max));
            }
        }
    }

    /// The windows wider than the share `base`, for the claim.
    pub(super) fn earned_above(&self, base: i32) -> Vec<(TenantId, EndpointId, i32)> {
        self.earned
            .iter()
            .filter(|(_, w)| **w > base)
            .map(|((t, e), w)| (*t, *e, *w))
            .collect()
    }

    #[cfg(test)]
    fn get(&self, key: &(TenantId, EndpointId)) -> Option<i32> {
        self.earned.peek(key).copied()
    }
}

/// The part of a tenant's guaranteed share one endpoint may hold without an earned window: half,
/// rounded up (as the claim computes it, migration 0021), so a hanging endpoint leaves the rest
/// to its siblings.
pub(super) fn endpoint_share(per_tenant: i32) -> i32 {
    (per_tenant.clamp(1, 1000) + 1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u128) -> (TenantId, EndpointId) {
        (
            TenantId::from_uuid(uuid::Uuid::from_u128(n)),
            EndpointId::from_uuid(uuid::Uuid::from_u128(n)),
        )
    }

    #[test]
    fn many_new_endpoints_evict_only_the_least_recently_earning_windows() {
        let mut w = Windows::new(100);
        let victim = key(1_000_000);
        for _ in 0..10 {
            w.learn(victim, true, 2, 64);
        }
        let idle = key(2_000_000);
        w.learn(idle, true, 2, 64);
        // Another tenant's many endpoints, one fast answer each, while the victim keeps earning.
        for n in 0..1_000 {
            w.learn(key(n), true, 2, 64);
            if n % 50 == 0 {
                w.learn(victim, true, 2, 64);
            }
        }
        assert_eq!(w.get(&victim), Some(12 + 20));
        assert_eq!(w.get(&idle), None, "a window not earned lately ages out");
        assert_eq!(w.earned.len(), 100);
        // A slow answer still drops the window at once.
        w.learn(victim, false, 2, 64);
        assert_eq!(w.get(&victim), None);
        assert!(w.earned_above(2).iter().all(|(t, e, _)| (*t, *e) != victim));
    }
}
