//! The issuer's keys (RFC 7517 JWKS), fetched and cached.
//!
//! Invariants:
//! - at most one fetch is in flight, and two fetch attempts are at least `min_refresh` apart,
//!   whatever the tokens presented: a flood of made-up `kid`s costs the issuer one request per
//!   interval;
//! - a fetch that fails (unreachable, not 200, too large, not a JWKS, no usable key) keeps the
//!   last good set, however old;
//! - with no good set ever fetched, nothing verifies ([`KeyLookup::Unavailable`]);
//! - a set older than `max_age` is fetched again by the request that finds it so; requests
//!   whose `kid` it holds meanwhile verify with it rather than wait.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bulkhead_auth::{KeySet, VerifyingKey};
use serde::Deserialize;
use url::Url;

/// Largest JWKS document read, in bytes.
pub(crate) const MAX_JWKS_BYTES: usize = 64 * 1024;

/// What the cache can say about a `kid`.
#[derive(Debug, Clone)]
pub(crate) enum KeyLookup {
    /// The current set, which holds the `kid`.
    Known(Arc<KeySet>),
    /// A set is known, and does not hold the `kid` even after the refresh allowed now.
    Unknown,
    /// No set has ever been fetched: nothing can be verified.
    Unavailable,
}

#[derive(Debug)]
struct Loaded {
    keys: Arc<KeySet>,
    fetched_at: Instant,
}

/// The JWKS cache of one [`crate::ResourceServer`].
#[derive(Debug)]
pub(crate) struct Jwks {
    http: reqwest::Client,
    url: Url,
    min_refresh: Duration,
    max_age: Duration,
    loaded: RwLock<Option<Loaded>>,
    /// When the last fetch was attempted; held across the fetch, so fetches are serialised.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// One published Ed25519 key; entries of another type, curve or use are skipped.
#[derive(Deserialize)]
struct OkpKey {
    kty: String,
    crv: String,
    x: String,
    kid: String,
    #[serde(default)]
    alg: Option<String>,
    #[serde(rename = "use", default)]
    key_use: Option<String>,
}

/// The Ed25519 signing keys of a JWKS document; `None` when it is not one or has none.
pub(crate) fn parse_jwks(body: &[u8]) -> Option<KeySet> {
    let document: Document = serde_json::from_slice(body).ok()?;
    let keys: Vec<VerifyingKey> = document
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<OkpKey>(value).ok())
        .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
        .filter(|k| k.alg.as_deref().is_none_or(|alg| alg == "EdDSA"))
        .filter(|k| k.key_use.as_deref().is_none_or(|u| u == "sig"))
        .filter_map(|k| {
            let x = URL_SAFE_NO_PAD.decode(&k.x).ok()?;
            VerifyingKey::new(&k.kid, &x).ok()
        })
        .collect();
    (!keys.is_empty()).then(|| KeySet::new(keys))
}

impl Jwks {
    /// Where the keys are fetched from.
    #[cfg(test)]
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    pub(crate) fn new(
        http: reqwest::Client,
        url: Url,
        min_refresh: Duration,
        max_age: Duration,
    ) -> Jwks {
        Jwks {
            http,
            url,
            min_refresh,
            max_age,
            loaded: RwLock::new(None),
            last_attempt: tokio::sync::Mutex::new(None),
        }
    }

    fn current(&self) -> Option<(Arc<KeySet>, Instant)> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| (l.keys.clone(), l.fetched_at))
    }

    /// The key set to verify a token signed with `kid`: the cached one while it is younger than
    /// `max_age` and holds the `kid`; otherwise a fetch first, if the last attempt is at least
    /// `min_refresh` old.
    pub(crate) async fn lookup(&self, kid: &str) -> KeyLookup {
        let usable = |now: Instant, current: &Option<(Arc<KeySet>, Instant)>| {
            current.as_ref().is_some_and(|(keys, fetched_at)| {
                keys.contains(kid) && now.duration_since(*fetched_at) < self.max_age
            })
        };
        let current = self.current();
        if usable(Instant::now(), &current) {
            return classify(current, kid);
        }
        let known = current.as_ref().is_some_and(|(keys, _)| keys.contains(kid));
        let mut last_attempt = if known {
            // A stale set that holds the kid still verifies: while another request fetches,
            // this one does not wait for it (nor for a slow or unreachable issuer).
            match self.last_attempt.try_lock() {
                Ok(guard) => guard,
                Err(_) => return classify(current, kid),
            }
        } else {
            self.last_attempt.lock().await
        };
        // Another request may have fetched while this one waited.
        let current = self.current();
        let now = Instant::now();
        if usable(now, &current) {
            return classify(current, kid);
        }
        if last_attempt.is_some_and(|at| now.duration_since(at) < self.min_refresh) {
            return classify(current, kid);
        }
        *last_attempt = Some(now);
        match self.fetch().await {
            Some(keys) => {
                *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(Loaded {
                    keys: Arc::new(keys),
                    fetched_at: Instant::now(),
                });
            }
            None => tracing::warn!(
                target: "bulkhead_resource_server",
                "the issuer's JWKS could not be fetched; keeping the last good set"
            ),
        }
        drop(last_attempt);
        classify(self.current(), kid)
    }

    async fn fetch(&self) -> Option<KeySet> {
        let mut response = self.http.get(self.url.clone()).send().await.ok()?;
        if response.status() != reqwest::StatusCode::OK {
            return None;
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.ok()? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

fn classify(current: Option<(Arc<KeySet>, Instant)>, kid: &str) -> KeyLookup {
    match current {
        None => KeyLookup::Unavailable,
        Some((keys, _)) if keys.contains(kid) => KeyLookup::Known(keys),
        Some(_) => KeyLookup::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ed25519_signing_keys_are_taken() {
        let x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let body = serde_json::json!({ "keys": [
            { "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "good", "alg": "EdDSA", "use": "sig" },
            { "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "enc", "use": "enc" },
            { "kty": "OKP", "crv": "X25519", "x": x, "kid": "x25519" },
            { "kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa" },
            { "kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short" },
            { "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "hs", "alg": "HS256" },
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).unwrap();
        assert!(keys.contains("good"));
        for other in ["enc", "x25519", "rsa", "short", "hs"] {
            assert!(!keys.contains(other), "{other}");
        }
        assert!(parse_jwks(b"{\"keys\":[]}").is_none());
        assert!(parse_jwks(b"not json").is_none());
    }
}
