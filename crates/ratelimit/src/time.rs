//! Where the limiter's "now" comes from: microseconds since the Unix epoch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bulkhead_core::Clock;

/// How often the fast system time is re-anchored to the wall clock.
const ANCHOR_EVERY_US: u64 = 1_000_000;

#[derive(Debug)]
pub(crate) enum Now {
    /// The system clock, read fast (see [`SystemNow`]).
    System(SystemNow),
    /// Any other clock (a manual one, in tests), through its `DateTime`.
    Clock(Clock),
}

impl Now {
    pub(crate) fn new(clock: Clock) -> Self {
        if clock.is_system() {
            Self::System(SystemNow::new())
        } else {
            Self::Clock(clock)
        }
    }

    pub(crate) fn micros(&self) -> u64 {
        match self {
            Self::System(system) => system.micros(),
            Self::Clock(clock) => u64::try_from(clock.now().timestamp_micros()).unwrap_or(0),
        }
    }
}

/// The wall clock at a fraction of the cost of reading it: a monotonic CPU counter (`quanta`,
/// the TSC where usable, else the OS monotonic clock) plus an offset to the wall clock, re-read
/// from the OS once a second. Between re-anchorings it follows the counter, so it is off the wall
/// clock by at most the counter's drift over one second (microseconds), and a step of the wall
/// clock is picked up within a second. The saving (a `clock_gettime` and the `DateTime`
/// conversions) is a sizeable part of an in-process decision.
#[derive(Debug)]
pub(crate) struct SystemNow {
    counter: quanta::Clock,
    start: u64,
    /// Wall-clock µs minus counter µs, as of the last anchoring (wrapping arithmetic).
    offset: AtomicU64,
    /// Counter µs at which to anchor again.
    next_anchor: AtomicU64,
}

impl SystemNow {
    pub(crate) fn new() -> Self {
        let counter = quanta::Clock::new();
        let start = counter.raw();
        let now = Self {
            counter,
            start,
            offset: AtomicU64::new(0),
            next_anchor: AtomicU64::new(0),
        };
        now.anchor(0);
        now
    }

    pub(crate) fn micros(&self) -> u64 {
        let elapsed = self.counter.delta_as_nanos(self.start, self.counter.raw()) / 1_000;
        if elapsed >= self.next_anchor.load(Ordering::Relaxed) {
            self.anchor(elapsed);
        }
        elapsed.wrapping_add(self.offset.load(Ordering::Relaxed))
    }

    #[cold]
    fn anchor(&self, elapsed: u64) {
        self.offset
            .store(wall_micros().wrapping_sub(elapsed), Ordering::Relaxed);
        self.next_anchor
            .store(elapsed + ANCHOR_EVERY_US, Ordering::Relaxed);
    }
}

fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            since
                .as_secs()
                .saturating_mul(1_000_000)
                .saturating_add(u64::from(since.subsec_micros()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_recognised_and_follows_the_wall_clock() {
        let system = Now::new(Clock::system());
        assert!(matches!(system, Now::System(_)));
        let mut last = 0;
        for _ in 0..1_000 {
            let fast = system.micros();
            let wall = wall_micros();
            assert!(fast.abs_diff(wall) < 50_000, "{fast} vs {wall}");
            assert!(fast >= last);
            last = fast;
        }
        let manual = Now::new(Clock::manual(chrono::DateTime::UNIX_EPOCH));
        assert!(matches!(manual, Now::Clock(_)));
        assert_eq!(manual.micros(), 0);
    }
}
