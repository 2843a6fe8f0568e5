//! Refresh tokens: opaque, 256 random bits, stored only as their SHA-256.
//!
//! Format: `bkrt_` followed by unpadded base64url of 48 bytes: the tenant's 16-byte id, then 32
//! random bytes. The tenant part is not a secret (ids are public); it lets the server open the
//! right tenant's transaction before looking the token up, so the lookup itself runs under that
//! tenant's row-level security and no cross-tenant lookup function is needed. Only the random
//! part makes the token unguessable; the stored SHA-256 covers the whole text.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const PREFIX: &str = "bkrt_";
/// Length of a refresh token in characters.
pub const REFRESH_TOKEN_LEN: usize = PREFIX.len() + 64;

/// The presented text is not a refresh token. Never echoes the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a Bulkhead refresh token")]
pub struct RefreshTokenFormatError;

/// A refresh token. `Debug` is redacted; the text is zeroized on drop.
pub struct RefreshToken {
    text: Zeroizing<String>,
    tenant: [u8; 16],
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

impl RefreshToken {
    /// A new token for the tenant with this 16-byte id.
    pub fn generate(tenant: [u8; 16]) -> RefreshToken {
        RefreshToken {
            text: generate_tenant_secret(PREFIX, tenant),
            tenant,
        }
    }

    /// Strict parse: exact prefix, exact length (checked first), canonical base64url.
    pub fn parse(text: &str) -> Result<RefreshToken, RefreshTokenFormatError> {
        let tenant = parse_tenant_secret(PREFIX, text)?;
        Ok(RefreshToken {
            text: Zeroizing::new(text.to_owned()),
            tenant,
        })
    }

    /// The tenant the token was issued for (unauthenticated until the hash is found).
    pub fn tenant(&self) -> [u8; 16] {
        self.tenant
    }

    /// SHA-256 of the token text: the only form stored.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }

    /// The token text, to hand to the client once.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }
}

/// `prefix` ‖ base64url(tenant ‖ 32 random bytes): the shape of refresh tokens and
/// authorization codes.
pub(crate) fn generate_tenant_secret(prefix: &str, tenant: [u8; 16]) -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 48]);
    raw[..16].copy_from_slice(&tenant);
    OsRng.fill_bytes(&mut raw[16..]);
    let mut text = Zeroizing::new(String::with_capacity(prefix.len() + 64));
    text.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(&raw[..], &mut text);
    text
}

/// The tenant part of what [`generate_tenant_secret`] made with `prefix`. Strict: exact prefix,
/// exact length (checked first), canonical base64url.
pub(crate) fn parse_tenant_secret(
    prefix: &str,
    text: &str,
) -> Result<[u8; 16], RefreshTokenFormatError> {
    if text.len() != prefix.len() + 64 || !text.starts_with(prefix) {
        return Err(RefreshTokenFormatError);
    }
    let mut raw = Zeroizing::new([0u8; 48]);
    let n = URL_SAFE_NO_PAD
        .decode_slice(&text.as_bytes()[prefix.len()..], &mut *raw)
        .map_err(|_| RefreshTokenFormatError)?;
    if n != 48 {
        return Err(RefreshTokenFormatError);
    }
    let mut tenant = [0u8; 16];
    tenant.copy_from_slice(&raw[..16]);
    Ok(tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_anything_else() {
        let token = RefreshToken::generate([7; 16]);
        assert_eq!(token.expose_secret().len(), REFRESH_TOKEN_LEN);
        let parsed = RefreshToken::parse(token.expose_secret()).unwrap();
        assert_eq!(parsed.tenant(), [7; 16]);
        assert_eq!(parsed.hash(), token.hash());
        assert_ne!(RefreshToken::generate([7; 16]).hash(), token.hash());
        assert!(!format!("{token:?}").contains(&token.expose_secret()[5..]));
        let text = token.expose_secret();
        for bad in [
            "",
            &text[1..],
            &format!("{text}A"),
            &text.replacen("bkrt_", "bkRT_", 1),
            &format!("{}=", &text[..text.len() - 1]),
            &format!("{}+", &text[..text.len() - 1]),
        ] {
            assert!(RefreshToken::parse(bad).is_err(), "{bad}");
        }
    }
}
