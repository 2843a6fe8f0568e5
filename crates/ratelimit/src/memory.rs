//! The in-process store: sharded by tenant, bounded, and all-or-nothing across the four levels.
//!
//! A tenant's tenant, agent and endpoint TATs live in one shard (chosen by hashing the tenant
//! id), under one mutex. The global TAT is a single atomic. A decision locks the tenant's shard,
//! reads every TAT, evaluates, and only if every level allows does it compare-and-swap the global
//! TAT (retrying the evaluation if another thread moved it) and then write the tenant's TATs before
//! unlocking. No other lock is ever held at the same time, so there is no lock ordering to get
//! wrong, and a rejected request writes nothing anywhere.
//!
//! Memory: each stored TAT is one entry; a shard holds at most `max_entries / shards` of them.
//! Entries whose TAT has passed are fully rested and are dropped without any effect on decisions:
//! every `sweep_interval` per shard, and whenever a shard is about to fill up. If a shard is still
//! full after that, the eighth of its entries closest to rest is dropped (a lossy eviction, counted
//! in `bulkhead_ratelimit_evictions_total`): those keys get back part of their burst early.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bulkhead_core::TenantId;

use crate::config::Level;
use crate::gcra::{evaluate, Cells, Evaluation, MAX_LEVELS};

/// Sizing of the in-process store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Number of shards (rounded up to a power of two, at least 1).
    pub shards: usize,
    /// The hard cap on stored entries (one per tenant, agent or endpoint key with live state).
    pub max_entries: usize,
    /// How often each shard drops its fully rested entries.
    pub sweep_interval: Duration,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            shards: 64,
            max_entries: 1_000_000,
            sweep_interval: Duration::from_secs(10),
        }
    }
}

/// The keys of one request inside its tenant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keys<'a> {
    pub(crate) tenant: TenantId,
    pub(crate) agent: Option<&'a str>,
    /// The endpoint class: its name (for Redis keys) and its index in the configuration (for
    /// the in-process store, which compares numbers rather than strings).
    pub(crate) class: Option<(&'a str, u32)>,
}

#[derive(Debug, Default)]
struct TenantCells {
    tenant: Option<u64>,
    agents: HashMap<Box<str>, u64>,
    /// By class index. Classes come from the configuration and are few: a short list beats
    /// hashing.
    endpoints: Vec<(u32, u64)>,
}

impl TenantCells {
    fn entries(&self) -> usize {
        usize::from(self.tenant.is_some()) + self.agents.len() + self.endpoints.len()
    }

    /// Drops every TAT at or below `threshold`; returns how many were dropped.
    fn drop_at_or_below(&mut self, threshold: u64) -> usize {
        let before = self.entries();
        if self.tenant.is_some_and(|tat| tat <= threshold) {
            self.tenant = None;
        }
        self.agents.retain(|_, tat| *tat > threshold);
        self.endpoints.retain(|(_, tat)| *tat > threshold);
        before - self.entries()
    }
}

#[derive(Debug, Default)]
struct Shard {
    tenants: HashMap<TenantId, TenantCells, IdHasher>,
    entries: usize,
    last_sweep: u64,
}

impl Shard {
    fn drop_at_or_below(&mut self, threshold: u64) -> usize {
        let mut dropped = 0;
        self.tenants.retain(|_, cells| {
            dropped += cells.drop_at_or_below(threshold);
            cells.entries() > 0
        });
        self.entries -= dropped;
        dropped
    }

    /// Makes room for `incoming` new entries under `cap`, and sweeps rested entries on schedule.
    fn maintain(&mut self, now: u64, incoming: usize, cap: usize, sweep_interval: u64) {
        if now.saturating_sub(self.last_sweep) >= sweep_interval {
            self.drop_at_or_below(now);
            self.last_sweep = now;
        }
        if self.entries + incoming <= cap {
            return;
        }
        // Nearly full: rested entries first (lossless), then, if that did not free an eighth of
        // the shard, the entries closest to rest (lossy) so the next inserts do not sweep again.
        self.drop_at_or_below(now);
        let target = cap - (cap / 8).max(incoming);
        if self.entries <= target {
            return;
        }
        let excess = self.entries - target;
        let mut tats: Vec<u64> = Vec::with_capacity(self.entries);
        for cells in self.tenants.values() {
            tats.extend(cells.tenant);
            tats.extend(cells.agents.values());
            tats.extend(cells.endpoints.iter().map(|(_, tat)| *tat));
        }
        let (_, threshold, _) = tats.select_nth_unstable(excess - 1);
        let threshold = *threshold;
        let dropped = self.drop_at_or_below(threshold);
        metrics::counter!("bulkhead_ratelimit_evictions_total").increment(dropped as u64);
    }
}

/// The sharded in-process store.
pub(crate) struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    mask: usize,
    shard_cap: usize,
    sweep_interval_us: u64,
    global: AtomicU64,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock leaves only TATs behind, each valid on its own.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The smallest cap a shard is allowed: room for one request's three tenant-scoped entries and
/// then some.
const MIN_SHARD_CAP: usize = 16;

impl MemoryStore {
    pub(crate) fn new(options: MemoryOptions) -> Self {
        let max_entries = options.max_entries.max(MIN_SHARD_CAP);
        let mut shards = options.shards.max(1).next_power_of_two();
        while shards > 1 && max_entries / shards < MIN_SHARD_CAP {
            shards /= 2;
        }
        let sweep_interval_us =
            u64::try_from(options.sweep_interval.as_micros()).unwrap_or(u64::MAX);
        Self {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            mask: shards - 1,
            shard_cap: max_entries / shards,
            sweep_interval_us,
            global: AtomicU64::new(0),
        }
    }

    /// Entries currently stored (the global TAT is not counted: it is one fixed atomic).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).entries).sum()
    }

    /// The cap [`MemoryStore::len`] never exceeds.
    pub(crate) fn capacity(&self) -> usize {
        self.shard_cap * self.shards.len()
    }

    /// Drops every fully rested entry now.
    pub(crate) fn evict_rested(&self, now: u64) {
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.drop_at_or_below(now);
            shard.last_sweep = now;
        }
    }

    /// The shard of a tenant: its id's UUID bits, mixed (ids are server-generated, not chosen by
    /// callers, so no keyed hash is needed to spread them).
    fn shard_of(&self, tenant: TenantId) -> usize {
        (mix(tenant.uuid().as_u128()) as usize) & self.mask
    }

    /// Decides and, when allowed, commits every level at once.
    pub(crate) fn check(&self, cells: &Cells, keys: Keys<'_>, now: u64) -> Evaluation {
        let mut guard = lock(&self.shards[self.shard_of(keys.tenant)]);
        let shard = &mut *guard;
        let scoped = cells.iter().filter(|c| c.level != Level::Global).count();
        shard.maintain(now, scoped, self.shard_cap, self.sweep_interval_us);

        loop {
            let mut tats = [None; MAX_LEVELS];
            let mut global_seen = None;
            // One lookup per map: the slots found here are read now and written below.
            let (mut tenant_slot, mut agent_slot, mut endpoint_slot) =
                match shard.tenants.get_mut(&keys.tenant) {
                    Some(state) => (
                        Some(&mut state.tenant),
                        keys.agent.and_then(|agent| state.agents.get_mut(agent)),
                        keys.class.and_then(|(_, class)| {
                            state
                                .endpoints
                                .iter_mut()
                                .find(|(index, _)| *index == class)
                                .map(|(_, tat)| tat)
                        }),
                    ),
                    None => (None, None, None),
                };
            for (i, cell) in cells.iter().enumerate() {
                tats[i] = match cell.level {
                    Level::Global => {
                        let tat = self.global.load(Ordering::Acquire);
                        global_seen = Some((i, tat));
                        Some(tat)
                    }
                    Level::Tenant => tenant_slot.as_deref().copied().flatten(),
                    Level::Agent => agent_slot.as_deref().copied(),
                    Level::Endpoint => endpoint_slot.as_deref().copied(),
                    // Never a cell: only a label (Decision::relabel).
                    Level::Address => None,
                };
            }
            let evaluation = evaluate(cells, &tats, now);
            if !evaluation.allowed {
                return evaluation;
            }
            if let Some((i, seen)) = global_seen {
                if self
                    .global
                    .compare_exchange(
                        seen,
                        evaluation.next[i],
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_err()
                {
                    // Another tenant's request moved the global TAT: evaluate again.
                    continue;
                }
            }
            let mut missing = [false; MAX_LEVELS];
            let mut any_missing = false;
            for (i, cell) in cells.iter().enumerate() {
                let next = evaluation.next[i];
                let slot = match cell.level {
                    Level::Global => continue,
                    Level::Tenant => match tenant_slot.as_deref_mut() {
                        Some(Some(tat)) => Some(tat),
                        _ => None,
                    },
                    Level::Agent => agent_slot.as_deref_mut(),
                    Level::Endpoint => endpoint_slot.as_deref_mut(),
                    Level::Address => None,
                };
                match slot {
                    Some(tat) => *tat = next,
                    None => {
                        missing[i] = true;
                        any_missing = true;
                    }
                }
            }
            if any_missing {
                let state = shard.tenants.entry(keys.tenant).or_default();
                for (i, cell) in cells.iter().enumerate() {
                    if !missing[i] {
                        continue;
                    }
                    let next = evaluation.next[i];
                    match (cell.level, keys.agent, keys.class) {
                        (Level::Tenant, _, _) => state.tenant = Some(next),
                        (Level::Agent, Some(agent), _) => {
                            state.agents.insert(agent.into(), next);
                        }
                        (Level::Endpoint, _, Some((_, class))) => {
                            state.endpoints.push((class, next))
                        }
                        _ => continue,
                    }
                    shard.entries += 1;
                }
            }
            return evaluation;
        }
    }
}

/// A 128-bit id folded and mixed to 64 bits (the murmur3 finalizer).
fn mix(value: u128) -> u64 {
    let mut x = (value as u64) ^ ((value >> 64) as u64);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Hashes tenant ids for the shard maps: their UUID bits through [`mix`], salted per process.
#[derive(Debug, Clone, Copy)]
struct IdHasher {
    salt: u64,
}

impl Default for IdHasher {
    fn default() -> Self {
        use std::hash::Hasher;
        // Salted with std's per-process random keys.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u8(0);
        Self {
            salt: hasher.finish(),
        }
    }
}

impl BuildHasher for IdHasher {
    type Hasher = IdHasherState;

    fn build_hasher(&self) -> IdHasherState {
        IdHasherState { state: self.salt }
    }
}

/// Folds the bytes written (a UUID's 16, plus its length) into one word, mixed on `finish`.
#[derive(Debug)]
struct IdHasherState {
    state: u64,
}

impl std::hash::Hasher for IdHasherState {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.state = (self.state ^ u64::from_le_bytes(word))
                .rotate_left(29)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, value: usize) {
        self.state = (self.state ^ value as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        mix(u128::from(self.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Quota;
    use crate::gcra::Cell;

    fn tenant_cells(quota: Quota) -> Cells {
        let mut cells = Cells::new();
        cells.push(Cell {
            level: Level::Tenant,
            quota,
            cost: 1,
        });
        cells.push(Cell {
            level: Level::Agent,
            quota,
            cost: 1,
        });
        cells
    }

    #[test]
    fn the_cap_holds_and_rested_entries_go_first() {
        let store = MemoryStore::new(MemoryOptions {
            shards: 4,
            max_entries: 400,
            sweep_interval: Duration::from_secs(3600),
        });
        assert_eq!(store.capacity(), 400);
        let cells = tenant_cells(Quota::per_second(1));
        let agents: Vec<String> = (0..2_000).map(|i| format!("agent-{i}")).collect();
        let tenant = TenantId::new();
        for (i, agent) in agents.iter().enumerate() {
            let keys = Keys {
                tenant,
                agent: Some(agent),
                class: None,
            };
            store.check(&cells, keys, 1_000_000 + i as u64);
            assert!(store.len() <= store.capacity());
        }
        store.evict_rested(u64::MAX);
        assert_eq!(store.len(), 0);
    }
}
