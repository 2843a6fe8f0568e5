//! OAuth authorization codes and client secrets.
//!
//! A code is `bkac_` followed by unpadded base64url of the tenant's 16-byte id and 32 random
//! bytes, exactly like a refresh token ([`crate::refresh`]): the token endpoint opens the tenant
//! the code names and looks its SHA-256 up under that tenant's row-level security. A client
//! secret is `bkcs_` and 32 random bytes; only its HMAC ([`crate::MasterKey::client_secret_mac`])
//! is stored.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::refresh::{generate_tenant_secret, parse_tenant_secret, RefreshTokenFormatError};

const CODE_PREFIX: &str = "bkac_";
const SECRET_PREFIX: &str = "bkcs_";

/// An authorization code. `Debug` is redacted; the text is zeroized on drop.
pub struct AuthorizationCode {
    text: Zeroizing<String>,
    tenant: [u8; 16],
}

impl fmt::Debug for AuthorizationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthorizationCode(<redacted>)")
    }
}

impl AuthorizationCode {
    /// A new code for the tenant with this 16-byte id.
    pub fn generate(tenant: [u8; 16]) -> Self {
        Self {
            text: generate_tenant_secret(CODE_PREFIX, tenant),
            tenant,
        }
    }

    /// Strict parse; never echoes the input.
    pub fn parse(text: &str) -> Result<Self, RefreshTokenFormatError> {
        let tenant = parse_tenant_secret(CODE_PREFIX, text)?;
        Ok(Self {
            text: Zeroizing::new(text.to_owned()),
            tenant,
        })
    }

    /// The tenant it names (unauthenticated until the hash is found).
    pub fn tenant(&self) -> [u8; 16] {
        self.tenant
    }

    /// SHA-256 of the text: the only form stored.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }

    /// The text, to hand to the client once.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }
}

/// A new client secret (`bkcs_` and 43 base64url characters), shown once.
pub fn generate_client_secret() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut raw[..]);
    let mut text = Zeroizing::new(String::from(SECRET_PREFIX));
    URL_SAFE_NO_PAD.encode_string(&raw[..], &mut text);
    text
}

/// Whether `verifier` (RFC 7636 §4.1: 43 to 128 characters of `[A-Za-z0-9-._~]`) hashes to
/// `challenge` under `S256`, compared in constant time.
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let valid = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !valid {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.len() == challenge.len() && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// Whether `challenge` has the shape of an S256 challenge: 43 base64url characters.
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_not_refresh_tokens() {
        let code = AuthorizationCode::generate([3; 16]);
        let parsed = AuthorizationCode::parse(code.expose_secret()).unwrap();
        assert_eq!(parsed.tenant(), [3; 16]);
        assert_eq!(parsed.hash(), code.hash());
        assert!(crate::RefreshToken::parse(code.expose_secret()).is_err());
        assert!(!format!("{code:?}").contains(&code.expose_secret()[5..]));
    }

    #[test]
    fn pkce_s256_follows_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_s256_challenge(challenge));
        assert!(pkce_s256_matches(verifier, challenge));
        assert!(!pkce_s256_matches(challenge, challenge));
        assert!(!pkce_s256_matches(&verifier[1..], challenge));
        assert!(!pkce_s256_matches(verifier, &challenge[1..]));
    }
}
