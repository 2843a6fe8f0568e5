//! Time as a dependency, so expiry, grace periods and deadlines can be tested without waiting.

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// Where "now" comes from. Every time-based security decision (key expiry, rotation grace,
/// deadlines) asks a `Clock` rather than the system directly.
#[derive(Clone)]
pub struct Clock {
    source: Source,
}

#[derive(Clone)]
enum Source {
    System,
    Manual(Arc<Mutex<DateTime<Utc>>>),
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self {
            source: Source::System,
        }
    }

    /// A clock that stands still until [`Clock::advance`] or [`Clock::set`] (tests).
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self {
            source: Source::Manual(Arc::new(Mutex::new(start))),
        }
    }

    /// Whether this is the system clock (so a caller may use a faster source of the same time).
    pub fn is_system(&self) -> bool {
        matches!(self.source, Source::System)
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.source {
            Source::System => Utc::now(),
            Source::Manual(at) => *at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance(&self, by: chrono::Duration) {
        if let Source::Manual(at) = &self.source {
            let mut at = at.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            *at += by;
        }
    }

    /// Sets a manual clock; no effect on the system clock.
    pub fn set(&self, to: DateTime<Utc>) {
        if let Source::Manual(at) = &self.source {
            *at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = to;
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::System => f.write_str("Clock::System"),
            Source::Manual(_) => write!(f, "Clock::Manual({})", self.now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let start = Utc::now();
        let clock = Clock::manual(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        shared.advance(chrono::Duration::days(8));
        assert_eq!(clock.now(), start + chrono::Duration::days(8));
        let system = Clock::system();
        system.advance(chrono::Duration::days(1));
        assert!((system.now() - Utc::now()).num_seconds().abs() < 5);
    }
}
