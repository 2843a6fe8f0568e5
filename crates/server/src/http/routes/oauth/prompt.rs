//! `prompt` and `max_age` at the authorization endpoint (OpenID Connect Core 1.0 §3.1.2.1).
//!
//! - `login` (and `select_account`: one account per browser session, so choosing one is signing
//!   in) shows the login page even to a signed-in browser; the login replaces its session.
//! - `consent` shows the consent page even when a remembered consent covers the request.
//! - `none` shows no page: a browser that would see the login page gets `login_required`, one
//!   that would see the consent page `consent_required`, back at the (trusted) redirect URI.
//!   `none` with another value is `invalid_request` (§3.1.2.1).
//! - `max_age=N`: a session signed in more than N seconds ago signs in again (with `none`:
//!   `login_required`).
//!
//! An unknown value is `invalid_request` (decision: a client asking for an interaction Bulkhead
//! does not offer learns it at once rather than getting another).

use chrono::{DateTime, Duration, Utc};

/// Longest `max_age` read (a session lasts an hour; more is the same as none).
const MAX_AGE_CAP: i64 = 365 * 24 * 3600;

/// The interactions the client asked for.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Prompt {
    pub(super) none: bool,
    pub(super) login: bool,
    pub(super) consent: bool,
    max_age: Option<i64>,
}

impl Prompt {
    /// Reads `prompt` and `max_age`; the error is the `error_description` of `invalid_request`.
    pub(super) fn parse(
        prompt: Option<&str>,
        max_age: Option<&str>,
    ) -> Result<Prompt, &'static str> {
        let mut out = Prompt::default();
        for value in prompt
            .unwrap_or_default()
            .split(' ')
            .filter(|v| !v.is_empty())
        {
            match value {
                "none" => out.none = true,
                "login" | "select_account" => out.login = true,
                "consent" => out.consent = true,
                _ => return Err("prompt has an unsupported value"),
            }
        }
        if out.none && (out.login || out.consent) {
            return Err("prompt=none cannot be combined with another value");
        }
        if let Some(text) = max_age {
            let valid =
                text.len() <= 12 && !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
            let seconds: i64 = valid
                .then(|| text.parse().ok())
                .flatten()
                .ok_or("max_age is not a number of seconds")?;
            out.max_age = Some(seconds.min(MAX_AGE_CAP));
        }
        Ok(out)
    }

    /// Whether a browser signed in at `auth_time` must sign in again before going on.
    pub(super) fn needs_login(&self, auth_time: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.login
            || self
                .max_age
                .is_some_and(|max| now - auth_time > Duration::seconds(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_strictly() {
        assert!(Prompt::parse(Some("none"), None).unwrap().none);
        let both = Prompt::parse(Some("login consent"), None).unwrap();
        assert!(both.login && both.consent && !both.none);
        assert!(Prompt::parse(Some("none login"), None).is_err());
        assert!(Prompt::parse(Some("create"), None).is_err());
        assert!(Prompt::parse(None, Some("-1")).is_err());
        assert!(Prompt::parse(None, Some("ten")).is_err());
        let now = Utc::now();
        let aged = Prompt::parse(None, Some("60")).unwrap();
        assert!(aged.needs_login(now - Duration::seconds(61), now));
        assert!(!aged.needs_login(now - Duration::seconds(59), now));
        assert!(Prompt::parse(None, Some("0"))
            .unwrap()
            .needs_login(now - Duration::seconds(1), now));
        assert!(!Prompt::default().needs_login(now - Duration::days(1), now));
    }
}
