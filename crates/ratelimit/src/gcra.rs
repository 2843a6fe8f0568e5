//! The GCRA arithmetic, shared by every backend so they reach the same decisions.
//!
//! Each key stores one number, its theoretical arrival time (TAT) in microseconds since the Unix
//! epoch. With emission interval `T` and burst `b`, a request of cost `c` at time `now` is:
//!
//! ```text
//! base     = max(tat, now)            (an absent key is fully rested: tat = now)
//! next     = base + c·T
//! allowed  ⇔ next − now ≤ b·T
//! wait     = next − now − b·T          (when not allowed; never, when c·T > b·T)
//! remaining = ⌊(b·T − (tat' − now)) / T⌋  with tat' = next if committed, else base
//! ```
//!
//! A key whose TAT is at or before `now` is fully rested: forgetting it changes nothing, which is
//! what lets the in-process store evict idle keys and Redis expire them.
//!
//! The Redis script implements the same inequality in Lua over integers below 2^53 (exact in
//! doubles); everything else (remaining, waits, the rejecting level) is computed here from the
//! TATs the script returns.

use std::time::Duration;

use crate::config::{Level, Quota};
use crate::decision::{Decision, LevelState, Source};

/// The most levels one request is checked at.
pub(crate) const MAX_LEVELS: usize = 4;

/// One level of one request: which level, its quota and what this request costs there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cell {
    pub(crate) level: Level,
    pub(crate) quota: Quota,
    pub(crate) cost: u32,
}

impl Cell {
    /// `c·T`, the time this request adds to the TAT.
    pub(crate) fn increment_us(&self) -> u64 {
        u64::from(self.cost).saturating_mul(self.quota.emission_us())
    }
}

/// The levels of one request, widest first, without allocating (the first `None` ends the list;
/// 128 bytes, so it moves without a `memcpy` call).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cells {
    items: [Option<Cell>; MAX_LEVELS],
}

impl Cells {
    pub(crate) fn new() -> Self {
        Self {
            items: [None; MAX_LEVELS],
        }
    }

    pub(crate) fn push(&mut self, cell: Cell) {
        if let Some(slot) = self.items.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(cell);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items[0].is_none()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Cell> + '_ {
        self.items.iter().map_while(Option::as_ref)
    }

    pub(crate) fn get(&self, index: usize) -> Option<&Cell> {
        self.items.get(index).and_then(Option::as_ref)
    }
}

/// The result of evaluating one request against the current TATs: compact, so the hot path
/// builds the public [`Decision`] once, at the end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Evaluation {
    pub(crate) allowed: bool,
    /// The TATs to store when allowed (index-aligned with the cells).
    pub(crate) next: [u64; MAX_LEVELS],
    /// The limiting cell (the rejecting one on a rejection); `None` when no cell applies.
    limiting: Option<usize>,
    /// That cell's TAT after the decision.
    limiting_tat: u64,
    /// On a rejection, the wait (`None`: the request never fits).
    wait: Option<u64>,
    now: u64,
}

impl Evaluation {
    /// The public decision (`cells` must be the ones evaluated).
    pub(crate) fn decision(&self, cells: &Cells, source: Source) -> Decision {
        let Some(cell) = self.limiting.and_then(|index| cells.get(index)) else {
            return Decision::unlimited(source);
        };
        let mut state = state_after(cell, self.limiting_tat, self.now);
        if self.allowed {
            return Decision {
                allowed: true,
                rejected_by: None,
                retry_after: None,
                limiting: Some(state),
                source,
            };
        }
        let retry_after = self.wait.map(Duration::from_micros);
        if let Some(wait) = retry_after {
            state.reset = wait;
        }
        Decision {
            allowed: false,
            rejected_by: Some(cell.level),
            retry_after,
            limiting: Some(state),
            source,
        }
    }
}

/// Evaluates a request: `tats[i]` is the stored TAT of `cells[i]` (`None` for an absent key).
/// Nothing is stored here; the caller commits `next` only when the decision allows.
#[inline]
pub(crate) fn evaluate(cells: &Cells, tats: &[Option<u64>], now: u64) -> Evaluation {
    let mut base = [0u64; MAX_LEVELS];
    let mut next = [0u64; MAX_LEVELS];
    let mut allowed = true;
    // Tracked in the same pass, used if every level allows: the most constraining level, the one
    // with the least room left relative to what this request costs there (room / (cost·T), the
    // requests of this kind left), ties to the narrower level. Compared by cross-multiplication
    // in 128 bits: no division.
    let mut best = 0;
    let mut best_ratio = (u64::MAX, 1u64);
    for (i, cell) in cells.iter().enumerate() {
        let tat = tats.get(i).copied().flatten().unwrap_or(now);
        let increment = cell.increment_us();
        let capacity = cell.quota.capacity_us();
        base[i] = tat.max(now);
        next[i] = base[i].saturating_add(increment);
        let ahead = next[i] - now;
        if ahead > capacity {
            allowed = false;
            continue;
        }
        let room = capacity - ahead;
        let increment = increment.max(1);
        let (best_room, best_increment) = best_ratio;
        if u128::from(room) * u128::from(best_increment)
            <= u128::from(best_room) * u128::from(increment)
        {
            best = i;
            best_ratio = (room, increment);
        }
    }

    if allowed {
        return Evaluation {
            allowed,
            next,
            limiting: (!cells.is_empty()).then_some(best),
            limiting_tat: next[best],
            wait: None,
            now,
        };
    }

    // Rejected: of the levels without room, the longest wait (never > any finite wait), ties to
    // the narrower level.
    let mut worst: Option<(usize, Option<u64>)> = None;
    for (i, cell) in cells.iter().enumerate() {
        let capacity = cell.quota.capacity_us();
        if next[i] - now <= capacity {
            continue;
        }
        let wait = if cell.increment_us() > capacity {
            None
        } else {
            Some(next[i] - now - capacity)
        };
        let longer = match &worst {
            None => true,
            Some((_, None)) => wait.is_none(),
            Some((_, Some(current))) => wait.is_none_or(|wait| wait >= *current),
        };
        if longer {
            worst = Some((i, wait));
        }
    }
    let (index, wait) = match worst {
        Some(found) => found,
        None => unreachable_rejection(),
    };
    Evaluation {
        allowed,
        next,
        limiting: Some(index),
        limiting_tat: base[index],
        wait,
        now,
    }
}

/// `allowed == false` implies one level without room; kept out of line so the loop stays simple.
#[cold]
fn unreachable_rejection() -> ! {
    unreachable!("a rejection always has a level without room")
}

/// The state of a level whose TAT is `tat` at `now`.
fn state_after(cell: &Cell, tat: u64, now: u64) -> LevelState {
    let ahead = tat.saturating_sub(now);
    let room = cell.quota.capacity_us().saturating_sub(ahead);
    LevelState {
        level: cell.level,
        quota: cell.quota,
        remaining: room / cell.quota.emission_us(),
        reset: Duration::from_micros(ahead),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    fn cells(list: &[(Level, Quota, u32)]) -> Cells {
        let mut cells = Cells::new();
        for &(level, quota, cost) in list {
            cells.push(Cell { level, quota, cost });
        }
        cells
    }

    /// One key, driven like a backend would: commit only when allowed.
    struct Key {
        cells: Cells,
        tat: Option<u64>,
    }

    impl Key {
        fn new(quota: Quota, cost: u32) -> Self {
            Self {
                cells: cells(&[(Level::Tenant, quota, cost)]),
                tat: None,
            }
        }

        fn hit(&mut self, now: u64) -> Decision {
            let evaluation = evaluate(&self.cells, &[self.tat], now);
            if evaluation.allowed {
                self.tat = Some(evaluation.next[0]);
            }
            evaluation.decision(&self.cells, Source::Backend)
        }
    }

    #[test]
    fn a_rested_key_allows_exactly_its_burst_at_once() {
        let mut key = Key::new(Quota::per_second(10).with_burst(5), 1);
        let t0 = 1_700_000_000 * SECOND;
        for left in (0..5).rev() {
            let decision = key.hit(t0);
            assert!(decision.allowed);
            assert_eq!(decision.limiting.unwrap().remaining, left);
        }
        let rejected = key.hit(t0);
        assert!(!rejected.allowed);
        assert_eq!(rejected.rejected_by, Some(Level::Tenant));
        // One unit comes back after one emission interval (100 ms), exactly.
        assert_eq!(rejected.retry_after, Some(Duration::from_millis(100)));
        assert!(!key.hit(t0 + 100_000 - 1).allowed);
        assert!(key.hit(t0 + 100_000).allowed);
    }

    #[test]
    fn the_steady_rate_is_one_unit_per_emission_interval() {
        let mut key = Key::new(Quota::per_second(4).with_burst(1), 1);
        let t0 = 10 * SECOND;
        let mut allowed = 0;
        // Every 50 ms for 10 s: twice the rate; exactly one in two gets through.
        for step in 0..200u64 {
            if key.hit(t0 + step * 50_000).allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 40);
    }

    #[test]
    fn a_cost_above_one_takes_that_many_units_and_waits_accordingly() {
        let mut key = Key::new(Quota::per_second(10).with_burst(10), 3);
        let t0 = 5 * SECOND;
        for left in [7, 4, 1] {
            let decision = key.hit(t0);
            assert!(decision.allowed);
            assert_eq!(decision.limiting.unwrap().remaining, left);
            assert_eq!(
                decision.limiting.unwrap().reset.as_micros(),
                u128::from((10 - left) * 100_000)
            );
        }
        let rejected = key.hit(t0);
        assert!(!rejected.allowed);
        // 1 unit left, 3 needed: 2 more units, 200 ms.
        assert_eq!(rejected.retry_after, Some(Duration::from_millis(200)));
        assert_eq!(rejected.limiting.unwrap().remaining, 1);
        assert_eq!(rejected.limiting.unwrap().reset, Duration::from_millis(200));
        assert!(key.hit(t0 + 200_000).allowed);
    }

    #[test]
    fn a_cost_above_the_burst_is_always_rejected_with_no_retry_time() {
        let mut key = Key::new(Quota::per_second(10).with_burst(4), 5);
        for now in [SECOND, 100 * SECOND, 10_000 * SECOND] {
            let decision = key.hit(now);
            assert!(!decision.allowed);
            assert_eq!(decision.retry_after, None);
            assert_eq!(decision.limiting.unwrap().remaining, 4);
        }
    }

    #[test]
    fn rejection_commits_nothing_and_names_the_longest_wait() {
        let tenant = Quota::per_second(10).with_burst(10);
        let agent = Quota::per_second(1).with_burst(1);
        let both = cells(&[(Level::Tenant, tenant, 1), (Level::Agent, agent, 1)]);
        let now = 3 * SECOND;
        let first = evaluate(&both, &[None, None], now);
        assert!(first.allowed);
        // Agent exhausted, tenant fine: the agent rejects, with the agent's wait.
        let tats = [Some(first.next[0]), Some(first.next[1])];
        let second = evaluate(&both, &tats, now).decision(&both, Source::Backend);
        assert!(!second.allowed);
        assert_eq!(second.rejected_by, Some(Level::Agent));
        assert_eq!(second.retry_after, Some(Duration::from_secs(1)));
        // Both full: the longer wait (the agent's 1 s beats the tenant's 100 ms) names the level.
        let tats = [Some(now + 10 * 100_000), Some(now + SECOND)];
        let both_full = evaluate(&both, &tats, now).decision(&both, Source::Backend);
        assert_eq!(both_full.rejected_by, Some(Level::Agent));
        // Equal waits go to the narrower level.
        let same = cells(&[(Level::Tenant, agent, 1), (Level::Agent, agent, 1)]);
        let tied = evaluate(&same, &[Some(now + SECOND), Some(now + SECOND)], now)
            .decision(&same, Source::Backend);
        assert_eq!(tied.rejected_by, Some(Level::Agent));
    }

    #[test]
    fn the_limiting_level_is_the_one_with_fewest_requests_left() {
        let tenant = Quota::per_minute(100);
        let endpoint = Quota::per_minute(5);
        let both = cells(&[(Level::Tenant, tenant, 10), (Level::Endpoint, endpoint, 1)]);
        let now = SECOND;
        let decision = evaluate(&both, &[None, None], now).decision(&both, Source::Backend);
        // Tenant: 90 units left = 9 requests of cost 10; endpoint: 4 requests. Endpoint limits.
        let limiting = decision.limiting.unwrap();
        assert_eq!(limiting.level, Level::Endpoint);
        assert_eq!(limiting.remaining, 4);
    }

    #[test]
    fn no_levels_means_allowed_without_state() {
        let cells = Cells::new();
        let decision = evaluate(&cells, &[], SECOND).decision(&cells, Source::Backend);
        assert!(decision.allowed);
        assert!(decision.limiting.is_none());
    }
}
