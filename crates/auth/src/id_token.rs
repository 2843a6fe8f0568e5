//! OpenID Connect ID tokens (OpenID Connect Core 1.0 §2), signed with the same Ed25519 keys as
//! access tokens and published in the same JWKS.
//!
//! The header is `{"alg":"EdDSA","typ":"JWT","kid":…}`: its `typ` is not `at+jwt`, so the access
//! token verifier ([`crate::token`]) refuses an ID token presented as a bearer credential.

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use crate::signing::SigningKey;

/// The JOSE `typ` of an ID token.
pub const ID_TOKEN_TYPE: &str = "JWT";

/// The claims of an ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaims {
    /// The issuer (the same as the access tokens' and the discovery documents').
    pub iss: String,
    /// The user's id (`user_…`): stable, never reassigned.
    pub sub: String,
    /// The client the token is for (its `client_id`).
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// When the user signed in.
    pub auth_time: i64,
    /// The authorization request's `nonce`, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The authorized party: the client (OpenID Connect Core §2, for one-audience tokens too).
    pub azp: String,
    /// The tenant the user belongs to (`tnt_…`).
    pub tenant_id: String,
    /// The user's email (with the `email` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the email was verified (with the `email` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

/// Signs `claims` as an ID token with `key`.
pub fn sign_id_token(key: &SigningKey, claims: &IdClaims) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ID_TOKEN_TYPE.to_owned());
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding)
        .expect("serializing fixed claims and signing with a loaded Ed25519 key cannot fail")
}
