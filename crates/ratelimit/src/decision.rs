//! What a check returns, and the response header values rendered from it.

use std::time::Duration;

use crate::config::{Level, Quota};

/// The state of one level after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelState {
    /// Which level.
    pub level: Level,
    /// Its quota.
    pub quota: Quota,
    /// Units that could be spent at this level right now, after this decision.
    pub remaining: u64,
    /// For an allowed decision: how long until this level is fully rested (`remaining` back to
    /// the burst). For the level that rejected a request: how long until the request would fit
    /// (the same instant as [`Decision::retry_after`], as the RateLimit draft asks).
    pub reset: Duration,
}

/// Who made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The configured backend (in-process or Redis).
    Backend,
    /// Redis was unreachable and [`Fallback::Local`](crate::Fallback::Local) decided in process.
    LocalFallback,
    /// Redis was unreachable and [`Fallback::Deny`](crate::Fallback::Deny) refused the request;
    /// no level was checked ([`Decision::rejected_by`] is `None`). Typically answered with 503.
    Unavailable,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed. When `true`, every level was charged; when `false`, none
    /// was.
    pub allowed: bool,
    /// The level that rejected the request: of the levels that had no room, the one with the
    /// longest wait (ties go to the narrower level). `None` when allowed or when
    /// [`Source::Unavailable`].
    pub rejected_by: Option<Level>,
    /// When a rejected request could be retried. `None` when allowed, and also when the request
    /// costs more than the rejecting level's burst: it will never fit.
    pub retry_after: Option<Duration>,
    /// The most constraining level: the rejecting level, or for an allowed request the level with
    /// the fewest requests of this kind left. `None` when no level applies (nothing configured)
    /// or when [`Source::Unavailable`].
    pub limiting: Option<LevelState>,
    /// Who decided.
    pub source: Source,
}

impl Decision {
    /// The same decision with level `from` reported as `to`: a limiter keyed by something other
    /// than a tenant (a client address) names its level for what it keys.
    pub fn relabel(mut self, from: Level, to: Level) -> Self {
        if self.rejected_by == Some(from) {
            self.rejected_by = Some(to);
        }
        if let Some(state) = &mut self.limiting {
            if state.level == from {
                state.level = to;
            }
        }
        self
    }

    /// An allowed decision with no level to report.
    pub(crate) fn unlimited(source: Source) -> Self {
        Self {
            allowed: true,
            rejected_by: None,
            retry_after: None,
            limiting: None,
            source,
        }
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// The response header values for a decision, per the IETF httpapi RateLimit header fields
/// draft (draft-ietf-httpapi-ratelimit-headers-10), for the most constraining level:
///
/// - `ratelimit-policy: "tenant";q=100;w=60`: the level's quota (`q` units per `w` seconds; the
///   policy name is a Structured Fields String naming the [`Level`]);
/// - `ratelimit: "tenant";r=42;t=3`: `r` units left, `t` seconds until the level is fully rested,
///   or, on a rejection, until the request would fit;
/// - `retry-after: 3`, only on a rejection that can succeed later (delay-seconds, rounded up, the
///   same instant as `t`).
///
/// Names are lowercase so they can go straight into `http::HeaderName::from_static`. Nothing is
/// returned for a decision that names no level except its `retry-after`.
pub fn header_values(decision: &Decision) -> Vec<(&'static str, String)> {
    let mut headers = Vec::with_capacity(3);
    if let Some(state) = &decision.limiting {
        let name = state.level.as_str();
        let window = ceil_secs(state.quota.period()).max(1);
        headers.push((
            "ratelimit-policy",
            format!("\"{name}\";q={};w={window}", state.quota.count()),
        ));
        headers.push((
            "ratelimit",
            format!(
                "\"{name}\";r={};t={}",
                state.remaining,
                ceil_secs(state.reset)
            ),
        ));
    }
    if !decision.allowed {
        if let Some(wait) = decision.retry_after {
            headers.push(("retry-after", ceil_secs(wait).max(1).to_string()));
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_draft_syntax() {
        let quota = Quota::per_minute(100).with_burst(50);
        let allowed = Decision {
            allowed: true,
            rejected_by: None,
            retry_after: None,
            limiting: Some(LevelState {
                level: Level::Tenant,
                quota,
                remaining: 42,
                reset: Duration::from_millis(2_100),
            }),
            source: Source::Backend,
        };
        assert_eq!(
            header_values(&allowed),
            vec![
                ("ratelimit-policy", "\"tenant\";q=100;w=60".to_owned()),
                ("ratelimit", "\"tenant\";r=42;t=3".to_owned()),
            ]
        );
        let rejected = Decision {
            allowed: false,
            rejected_by: Some(Level::Agent),
            retry_after: Some(Duration::from_micros(1_500_000)),
            limiting: Some(LevelState {
                level: Level::Agent,
                quota: Quota::per_second(5),
                remaining: 0,
                reset: Duration::from_micros(1_500_000),
            }),
            source: Source::Backend,
        };
        assert_eq!(
            header_values(&rejected),
            vec![
                ("ratelimit-policy", "\"agent\";q=5;w=1".to_owned()),
                ("ratelimit", "\"agent\";r=0;t=2".to_owned()),
                ("retry-after", "2".to_owned()),
            ]
        );
        assert!(header_values(&Decision::unlimited(Source::Backend)).is_empty());
    }
}
