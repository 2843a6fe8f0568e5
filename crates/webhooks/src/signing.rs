//! Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! The signed content is `{id}.{timestamp}.{body}`; the key is the base64-decoded part of a
//! `whsec_` secret; a signature is `v1,<base64 HMAC-SHA256>`, and several are sent
//! space-separated while a rotated secret is still valid.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Header carrying the message id (stable across retries).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the attempt's Unix time, in seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// How far a receiver accepts a timestamp from its own clock, both ways.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;
const PREFIX: &str = "whsec_";
/// Random bytes in a new secret.
pub const SECRET_BYTES: usize = 32;

/// A signing secret. Its `Debug` is redacted and its bytes are wiped on drop.
#[derive(Clone)]
pub struct Secret {
    key: Zeroizing<Vec<u8>>,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.key.as_slice().ct_eq(other.key.as_slice()).into()
    }
}
impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret or a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Not `whsec_<base64>` of 24 to 64 bytes.
    #[error("the secret is not a whsec_ secret")]
    MalformedSecret,
    /// A required header is missing or not text.
    #[error("missing or malformed {0} header")]
    Header(&'static str),
    /// The timestamp is outside the tolerance.
    #[error("the timestamp is outside the tolerance")]
    Timestamp,
    /// No signature matches.
    #[error("no signature matches")]
    Mismatch,
}

impl Secret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self { key }
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or(SignatureError::MalformedSecret)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SignatureError::MalformedSecret)?;
        if !(16..=64).contains(&key.len()) {
            return Err(SignatureError::MalformedSecret);
        }
        Ok(Self {
            key: Zeroizing::new(key),
        })
    }

    /// From stored key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        if !(16..=64).contains(&bytes.len()) {
            return Err(SignatureError::MalformedSecret);
        }
        Ok(Self {
            key: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// The key bytes, for storage.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.key
    }

    /// The `whsec_…` text, to show once.
    pub fn expose_text(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&*self.key))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// `v1,<base64>` over `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }
}

/// The three headers for one attempt, signed with every secret in `secrets` (current first).
pub fn signed_headers(secrets: &[&Secret], id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let signatures: Vec<String> = secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect();
    let mut headers = HeaderMap::new();
    // Ids are prefixed base-32, timestamps digits, signatures base64: always valid header text.
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert(HEADER_ID, v);
    }
    headers.insert(HEADER_TIMESTAMP, HeaderValue::from(timestamp));
    if let Ok(v) = HeaderValue::from_str(&signatures.join(" ")) {
        headers.insert(HEADER_SIGNATURE, v);
    }
    headers
}

/// For receivers: checks the headers and body against `secret` at `now`. Accepts if the
/// timestamp is within [`TOLERANCE_SECONDS`] and any `v1` signature matches (constant-time).
pub fn verify(
    secret: &Secret,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let text = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(SignatureError::Header(name))
    };
    let id = text(HEADER_ID)?;
    let timestamp: i64 = text(HEADER_TIMESTAMP)?
        .parse()
        .map_err(|_| SignatureError::Header(HEADER_TIMESTAMP))?;
    let signatures = text(HEADER_SIGNATURE)?;
    // abs_diff: a timestamp near i64::MIN or MAX must not overflow the subtraction (a panic in a
    // debug build of a receiver; seen writing the `webhook_signature` fuzz target, whose seed
    // `min_timestamp` carries one).
    if now.timestamp().abs_diff(timestamp) > TOLERANCE_SECONDS.unsigned_abs() {
        return Err(SignatureError::Timestamp);
    }
    let mut matched = false;
    for candidate in signatures.split(' ') {
        let Some(("v1", encoded)) = candidate.split_once(',') else {
            continue;
        };
        let Ok(tag) = STANDARD.decode(encoded) else {
            continue;
        };
        // verify_slice compares in constant time.
        if secret.mac(id, timestamp, body).verify_slice(&tag).is_ok() {
            matched = true;
        }
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_text_round_trips() {
        let secret = Secret::generate();
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(Secret::parse(&secret.expose_text()), Ok(secret));
        assert!(Secret::parse("whsec_").is_err());
        assert!(Secret::parse("nope").is_err());
    }

    #[test]
    fn extreme_timestamps_are_refused_not_overflowed() {
        let secret = Secret::generate();
        let now = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        for timestamp in [i64::MIN, i64::MIN + 1, i64::MAX, -1] {
            let mut headers = signed_headers(&[&secret], "msg_x", timestamp, b"{}");
            headers.insert(HEADER_TIMESTAMP, HeaderValue::from(timestamp));
            assert_eq!(
                verify(&secret, &headers, b"{}", now),
                Err(SignatureError::Timestamp)
            );
        }
    }
}
