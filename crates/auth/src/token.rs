//! JWT access tokens (RFC 9068): issuing and the one verification every route relies on.
//!
//! # What verification accepts
//! Exactly one shape, checked in this order, each failure a distinct [`TokenError`] that the
//! server logs and reduces to one `invalid_token` answer:
//! 1. at most [`MAX_TOKEN_BYTES`], three dot-separated parts of canonical unpadded base64url;
//! 2. a header that is a JSON object with only `alg`, `typ` and `kid` (each once): `jku`, `x5u`,
//!    `jwk`, `x5c`, `crit` or anything else refuses the token, so no header can point
//!    verification at a key of the presenter's choosing;
//! 3. `alg` exactly `EdDSA` (so never `none` in any casing, never an HMAC algorithm keyed with a
//!    public key, never ECDSA), `typ` `at+jwt` (RFC 9068; a refresh token or an ID token is not an
//!    access token), a `kid` of a key in the [`KeySet`] (looked up by exact string, never used as
//!    a path or in a query);
//! 4. an Ed25519 signature that verifies under that key;
//! 5. claims that deserialize into [`AccessClaims`] with no unknown and no duplicate member,
//!    `iss` accepted by [`ExpectedIssuer`] and `aud` equal to the expected value, `exp` not passed, `nbf` and `iat` not in the
//!    future (each with at most [`LEEWAY_SECS`]), and a lifetime of at most
//!    [`MAX_ACCESS_TOKEN_SECS`].
//!
//! What the crate cannot know is left to the caller, and the server does it in one place: the
//! tenant claim must equal the tenant the request resolved to, `iss` must be exactly that
//! tenant's issuer, and neither the `jti` nor the `sid`
//! may be revoked.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use crate::signing::{SigningKey, VerifyingKey};

/// Largest token accepted, in bytes; larger ones are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: i64 = 30;
/// Shortest configurable access-token lifetime.
pub const MIN_ACCESS_TOKEN_SECS: i64 = 5 * 60;
/// Longest access-token lifetime: configuration cannot exceed it and verification refuses
/// tokens that claim more.
pub const MAX_ACCESS_TOKEN_SECS: i64 = 60 * 60;
/// The JOSE `typ` of an access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The delegation chain (RFC 8693 §4.1): who acts, and for whom they in turn act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActClaim {
    /// The acting party.
    pub sub: String,
    /// The party on whose behalf `sub` acts, when the chain is longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<ActClaim>>,
}

impl ActClaim {
    /// How many actors the chain names.
    pub fn depth(&self) -> usize {
        1 + self.act.as_ref().map_or(0, |inner| inner.depth())
    }

    /// The actors, outermost (the current one) first.
    pub fn actors(&self) -> Vec<String> {
        let mut out = vec![self.sub.clone()];
        if let Some(inner) = &self.act {
            out.extend(inner.actors());
        }
        out
    }
}

/// The claims of a Bulkhead access token (RFC 9068 §2.2 plus Bulkhead's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    /// Issuer: the issuer of the tenant the token is for (its own origin,
    /// `https://<slug>.<base-domain>`).
    pub iss: String,
    /// Subject: a user id (`user_…`) or an agent's principal.
    pub sub: String,
    /// Audience: the deployment's configured API audience.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Token id (`at_…`): what a revocation names.
    pub jti: String,
    /// The client the token was issued to: an API key id, or `bulkhead-login` for human login.
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The one tenant the token is good for (`tnt_…`).
    pub tenant_id: String,
    /// `user` or `agent`.
    pub sub_type: String,
    /// Optional organisation inside the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// Optional resource prefix the token is confined to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_prefix: Option<String>,
    /// The auth session (refresh-token family) the token was minted from, if any: revoking the
    /// session revokes every access token that carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The delegation chain, when delegated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<ActClaim>,
    /// What this token was derived from by delegation, root first: the `jti`s of tokens and the
    /// ids of auth sessions (an actor's own session). Revoking any of them revokes this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegated_from: Vec<String>,
    /// Network restrictions inherited from the API keys the token was minted or derived from:
    /// each inner list is one key's IP allowlist (CIDR text), and the caller's address must lie
    /// in a network of every list. Empty: no restriction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<Vec<String>>,
    /// The other API keys (ids, besides `client_id`) a delegated token derives from: the
    /// clients of its subject token and of its actor's token, and theirs in turn. Each binds
    /// it as `client_id` does: revoking one, or narrowing its allowlist, binds this token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived_keys: Vec<String>,
}

/// Why a token was refused. Never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Over [`MAX_TOKEN_BYTES`].
    #[error("token too large")]
    TooLarge,
    /// Not three parts of canonical base64url, or a part is not the JSON it must be.
    #[error("token malformed")]
    Malformed,
    /// A header member other than `alg`, `typ` and `kid`, or one of them twice.
    #[error("token header has a forbidden or duplicate member")]
    ForbiddenHeader,
    /// `alg` is not `EdDSA`.
    #[error("token algorithm not accepted")]
    Algorithm,
    /// `typ` is not `at+jwt`.
    #[error("not an access token")]
    Type,
    /// No `kid`, or one no published key has.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature invalid")]
    Signature,
    /// The claims are not exactly Bulkhead's access-token claims.
    #[error("token claims malformed")]
    Claims,
    /// `iss` differs.
    #[error("token issuer mismatch")]
    Issuer,
    /// `aud` differs.
    #[error("token audience mismatch")]
    Audience,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The token claims a lifetime over [`MAX_ACCESS_TOKEN_SECS`].
    #[error("token lifetime too long")]
    Lifetime,
}

/// The header exactly as accepted: nothing else may be present.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// The published public keys, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

impl KeySet {
    /// A set of keys; later duplicates of a kid replace earlier ones.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> KeySet {
        KeySet {
            keys: keys.into_iter().map(|k| (k.kid.clone(), k)).collect(),
        }
    }

    /// The JWKS document (RFC 7517 §5), keys ordered by kid.
    pub fn jwks(&self) -> serde_json::Value {
        let mut keys: Vec<&VerifyingKey> = self.keys.values().collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        serde_json::json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
    }

    /// Whether no key is published (nothing loaded yet).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key with this kid is published.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }
}

/// The `iss` a verifier accepts.
#[derive(Clone, Copy)]
pub enum ExpectedIssuer<'a> {
    /// Exactly this issuer (a resource server knows its tenant's).
    Exact(&'a str),
    /// An issuer the function accepts. For Bulkhead itself, where each tenant is its own issuer:
    /// it accepts only the form of a tenant's issuer, and the caller must then check that `iss`
    /// is exactly the issuer of the tenant the `tenant_id` claim names.
    OneOf(&'a (dyn Fn(&str) -> bool + Sync)),
}

impl ExpectedIssuer<'_> {
    /// Whether `iss` is accepted.
    pub fn accepts(&self, iss: &str) -> bool {
        match self {
            Self::Exact(expected) => iss == *expected,
            Self::OneOf(accepts) => accepts(iss),
        }
    }
}

impl std::fmt::Debug for ExpectedIssuer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(issuer) => f.debug_tuple("Exact").field(issuer).finish(),
            Self::OneOf(_) => f.write_str("OneOf(..)"),
        }
    }
}

/// What the verifier expects of every token.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// The accepted `iss`.
    pub issuer: ExpectedIssuer<'a>,
    /// Exact `aud`.
    pub audience: &'a str,
    /// Now, in seconds since the epoch (injectable for tests).
    pub now: i64,
}

/// Signs `claims` as an `at+jwt` with `key`.
pub fn sign_access_token(key: &SigningKey, claims: &AccessClaims) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding)
        .expect("serializing fixed claims and signing with a loaded Ed25519 key cannot fail")
}

fn decode_part(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)
}

/// Verifies an access token. See the module doc for exactly what is accepted.
pub fn verify_access_token(
    token: &str,
    keys: &KeySet,
    expect: &Expectations<'_>,
) -> Result<AccessClaims, TokenError> {
    verify_access_token_with_kid(token, keys, expect).map(|(claims, _)| claims)
}

/// [`verify_access_token`], also returning the `kid` of the key that verified it.
pub fn verify_access_token_with_kid(
    token: &str,
    keys: &KeySet,
    expect: &Expectations<'_>,
) -> Result<(AccessClaims, String), TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if signature_b64.is_empty() {
        return Err(TokenError::Signature);
    }
    let header_json = decode_part(header_b64)?;
    let header: StrictHeader = serde_json::from_slice(&header_json).map_err(|e| {
        if e.is_data() {
            TokenError::ForbiddenHeader
        } else {
            TokenError::Malformed
        }
    })?;
    if header.alg != "EdDSA" {
        return Err(TokenError::Algorithm);
    }
    // JOSE `typ` values compare case-insensitively, and `application/` may be omitted (RFC 7515
    // §4.1.9).
    let typ_ok = header.typ.as_deref().is_some_and(|typ| {
        let typ = typ.to_ascii_lowercase();
        typ == ACCESS_TOKEN_TYPE || typ == "application/at+jwt"
    });
    if !typ_ok {
        return Err(TokenError::Type);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.keys.get(kid))
        .ok_or(TokenError::UnknownKey)?;
    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    let verified = jsonwebtoken::crypto::verify(
        signature_b64,
        &token.as_bytes()[..signing_input_len],
        &key.decoding,
        Algorithm::EdDSA,
    )
    .unwrap_or(false);
    if !verified {
        return Err(TokenError::Signature);
    }
    let payload = decode_part(payload_b64)?;
    let claims: AccessClaims = serde_json::from_slice(&payload).map_err(|_| TokenError::Claims)?;
    if !expect.issuer.accepts(&claims.iss) {
        return Err(TokenError::Issuer);
    }
    if claims.aud != expect.audience {
        return Err(TokenError::Audience);
    }
    check_time_bounds(&claims, expect.now)?;
    if claims.exp.saturating_sub(claims.iat) > MAX_ACCESS_TOKEN_SECS || claims.nbf < claims.iat {
        return Err(TokenError::Lifetime);
    }
    Ok((claims, key.kid.clone()))
}

/// The time checks of verification, alone: `exp` not passed and `nbf`/`iat` not in the future,
/// each with [`LEEWAY_SECS`]. For claims verified earlier and used again at a later `now`.
pub fn check_time_bounds(claims: &AccessClaims, now: i64) -> Result<(), TokenError> {
    if claims.exp <= now - LEEWAY_SECS {
        return Err(TokenError::Expired);
    }
    if claims.nbf > now + LEEWAY_SECS || claims.iat > now + LEEWAY_SECS {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// Reads the claims of a token without verifying anything. For introspection of a token that
/// already failed verification (to log which tenant it named) and for tests; never for deciding.
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&decode_part(payload).ok()?).ok()
}
