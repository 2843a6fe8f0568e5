//! Ed25519 token-signing keys: generation, the `kid`, and the JWK form published in the JWKS.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A signing key could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningKeyError {
    /// The private key is not a valid Ed25519 PKCS#8 document.
    #[error("the private key is not a valid Ed25519 PKCS#8 document")]
    PrivateKey,
    /// The private key does not belong to the stored public key.
    #[error("the private key does not match its public key")]
    Mismatch,
    /// The public key is not 32 bytes.
    #[error("the public key is not a 32-byte Ed25519 key")]
    PublicKey,
}

/// A freshly generated key pair, before it is sealed and stored.
pub struct GeneratedKey {
    /// Identifier published as the JWK `kid` and put in every token header it signs.
    pub kid: String,
    /// The raw 32-byte Ed25519 public key.
    pub public_key: [u8; 32],
    /// The PKCS#8 v2 document holding the private key; zeroized on drop.
    pub pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Generates a new Ed25519 key pair from the operating system's CSPRNG.
pub fn generate_signing_key() -> GeneratedKey {
    let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .expect("the system CSPRNG is available");
    let pair = Ed25519KeyPair::from_pkcs8(document.as_ref()).expect("ring parses its own output");
    let mut public_key = [0u8; 32];
    public_key.copy_from_slice(pair.public_key().as_ref());
    GeneratedKey {
        kid: kid_for(&public_key),
        public_key,
        pkcs8: Zeroizing::new(document.as_ref().to_vec()),
    }
}

/// The `kid` of a public key: `ed-` and the first 16 bytes of its SHA-256, base64url. Derived,
/// so two deployments never mint the same kid for different keys by accident.
pub fn kid_for(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    format!("ed-{}", URL_SAFE_NO_PAD.encode(&digest[..16]))
}

/// The private half, ready to sign. `Debug` shows only the kid.
#[derive(Clone)]
pub struct SigningKey {
    pub(crate) kid: String,
    pub(crate) encoding: EncodingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads an opened PKCS#8 document, checking it belongs to `public_key`.
    pub fn from_pkcs8(
        kid: &str,
        pkcs8: &[u8],
        public_key: &[u8; 32],
    ) -> Result<SigningKey, SigningKeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|_| SigningKeyError::PrivateKey)?;
        if pair.public_key().as_ref() != public_key {
            return Err(SigningKeyError::Mismatch);
        }
        Ok(SigningKey {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_der(pkcs8),
        })
    }

    /// The key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// A public key that verifies tokens carrying its `kid`.
#[derive(Clone)]
pub struct VerifyingKey {
    pub(crate) kid: String,
    pub(crate) public_key: [u8; 32],
    pub(crate) decoding: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// From the raw 32-byte public key.
    pub fn new(kid: &str, public_key: &[u8]) -> Result<VerifyingKey, SigningKeyError> {
        let public_key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| SigningKeyError::PublicKey)?;
        let decoding = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public_key))
            .map_err(|_| SigningKeyError::PublicKey)?;
        Ok(VerifyingKey {
            kid: kid.to_owned(),
            public_key,
            decoding,
        })
    }

    /// The key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The RFC 8037 JWK: `{"kty":"OKP","crv":"Ed25519","x":…,"kid":…,"alg":"EdDSA","use":"sig"}`.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public_key),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }
}
