//! When to try again.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;

/// Delays before retry 1, 2, … (after the first attempt fails): at least as patient as Svix.
/// After the last one the delivery fails for good.
pub const RETRY_DELAYS_SECONDS: &[i64] = &[5, 300, 1800, 7200, 18_000, 36_000, 36_000];

/// Attempts a delivery gets in all: the first plus one per delay.
pub fn max_attempts() -> i32 {
    RETRY_DELAYS_SECONDS.len() as i32 + 1
}

/// The longest `Retry-After` honoured; beyond it the schedule's own delay applies.
pub const MAX_RETRY_AFTER_SECONDS: i64 = 36_000;

/// When to retry after attempt number `attempts` (1-based) failed, or `None` if it was the
/// last. The schedule's delay gets ±10% jitter; a `Retry-After` within bounds replaces it
/// when it asks for longer (never shorter than the schedule: a receiver cannot make us hammer it).
pub fn next_attempt(
    now: DateTime<Utc>,
    attempts: i32,
    retry_after: Option<&str>,
) -> Option<DateTime<Utc>> {
    let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
    let base = *RETRY_DELAYS_SECONDS.get(index)?;
    let jitter = (base as f64 * 0.1) as i64;
    let mut delay = base
        + if jitter > 0 {
            rand::thread_rng().gen_range(-jitter..=jitter)
        } else {
            0
        };
    if let Some(asked) = retry_after.and_then(|v| parse_retry_after(v, now)) {
        if asked > delay && asked <= MAX_RETRY_AFTER_SECONDS {
            delay = asked;
        }
    }
    Some(now + Duration::seconds(delay.max(1)))
}

/// `Retry-After` as seconds from `now`: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<i64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        return (seconds >= 0).then_some(seconds);
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&Utc) - now).num_seconds().max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_schedule_with_bounded_jitter_and_stops() {
        let now = Utc::now();
        for (i, base) in RETRY_DELAYS_SECONDS.iter().enumerate() {
            let at = next_attempt(now, i as i32 + 1, None).unwrap_or(now);
            let delay = (at - now).num_seconds();
            assert!(
                (delay - base).abs() <= base / 10 + 1,
                "attempt {i}: {delay} vs {base}"
            );
        }
        assert_eq!(next_attempt(now, max_attempts(), None), None);
        assert_eq!(next_attempt(now, 0, None), None);
    }

    #[test]
    fn retry_after_can_lengthen_within_bounds_only() {
        let now = Utc::now();
        let at = next_attempt(now, 1, Some("120")).unwrap_or(now);
        assert_eq!((at - now).num_seconds(), 120);
        let at = next_attempt(now, 1, Some("999999")).unwrap_or(now);
        assert!((at - now).num_seconds() <= 6);
        let at = next_attempt(now, 2, Some("1")).unwrap_or(now);
        assert!((at - now).num_seconds() >= 270);
    }
}
