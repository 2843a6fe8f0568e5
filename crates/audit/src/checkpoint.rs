//! Signed checkpoints: (tenant, tree size, root hash, time) under the log's Ed25519 key.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tree::Hash;
use crate::AuditError;

/// First line of the signed text of a tenant's checkpoint; names the format and its version.
pub const CHECKPOINT_HEADER: &str = "bulkhead-audit-checkpoint/v1";

/// First line of the signed text of a checkpoint of the operator plane's log. A different first
/// line (and `log` in place of `tenant` on the second) is domain separation: no signature over a
/// tenant's checkpoint text is a signature over an operator checkpoint text, or the reverse,
/// whatever the fields hold.
pub const OPERATOR_CHECKPOINT_HEADER: &str = "bulkhead-operator-audit-checkpoint/v1";

/// The `tenant_id` of the operator plane's log, in its checkpoints and events. Never a tenant's
/// id (those are `tnt_…`), and [`Checkpoint::signed_text`] signs it under
/// [`OPERATOR_CHECKPOINT_HEADER`].
pub const OPERATOR_LOG_ID: &str = "operator";

/// What a checkpoint states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// `tnt_…` id: whose log; [`OPERATOR_LOG_ID`] for the operator plane's log.
    pub tenant_id: String,
    /// Number of leaves.
    pub tree_size: u64,
    /// RFC 9162 root of those leaves (hex).
    #[serde(with = "crate::hex::serde_hash")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9a-f]{64}$"))]
    pub root_hash: Hash,
    /// When it was signed: RFC 3339, UTC.
    pub timestamp: String,
}

impl Checkpoint {
    /// Whether this is a checkpoint of the operator plane's log.
    pub fn is_operator(&self) -> bool {
        self.tenant_id == OPERATOR_LOG_ID
    }

    /// The exact bytes signed: five `\n`-terminated lines,
    /// `bulkhead-audit-checkpoint/v1`, `tenant <id>`, `size <n>`, `root <hex>`, `time <rfc3339>`;
    /// for the operator log ([`Checkpoint::is_operator`]) the first two are
    /// `bulkhead-operator-audit-checkpoint/v1` and `log operator`.
    /// Fields that could hold a newline are refused, so the text has one reading.
    pub fn signed_text(&self) -> Result<String, AuditError> {
        for (what, field) in [
            ("tenant_id", &self.tenant_id),
            ("timestamp", &self.timestamp),
        ] {
            if field.is_empty() || field.chars().any(|c| c.is_control() || c == ' ') {
                return Err(AuditError::malformed("checkpoint", format!("bad {what}")));
            }
        }
        let (header, subject) = if self.is_operator() {
            (OPERATOR_CHECKPOINT_HEADER, "log")
        } else {
            (CHECKPOINT_HEADER, "tenant")
        };
        Ok(format!(
            "{header}\n{subject} {}\nsize {}\nroot {}\ntime {}\n",
            self.tenant_id,
            self.tree_size,
            crate::hex::encode(&self.root_hash),
            self.timestamp
        ))
    }
}

/// A checkpoint with its signature, as served and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// What is signed.
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    /// [`LogPublicKey::key_id`] of the signing key.
    pub key_id: String,
    /// Ed25519 signature over [`Checkpoint::signed_text`], base64.
    pub signature: String,
}

/// The log's signing key. `Debug` shows only the key id.
#[derive(Clone)]
pub struct LogSigningKey {
    key: SigningKey,
    public: LogPublicKey,
}

impl std::fmt::Debug for LogSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSigningKey")
            .field("key_id", &self.public.key_id)
            .finish_non_exhaustive()
    }
}

impl LogSigningKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        Self::from_signing_key(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let public = LogPublicKey::from_verifying_key(key.verifying_key());
        Self { key, public }
    }

    /// From its configuration text: `base64:` followed by the 32-byte Ed25519 seed.
    pub fn from_config_str(text: &str) -> Result<Self, AuditError> {
        let seed = decode_32(text.trim(), "log signing key")?;
        Ok(Self::from_signing_key(SigningKey::from_bytes(&seed)))
    }

    /// The configuration text ([`LogSigningKey::from_config_str`]). Secret: write it only to a
    /// 0600 file.
    pub fn to_config_string(&self) -> String {
        format!("base64:{}", B64.encode(self.key.to_bytes()))
    }

    /// The public half.
    pub fn public(&self) -> &LogPublicKey {
        &self.public
    }

    /// Signs `checkpoint`.
    pub fn sign(&self, checkpoint: Checkpoint) -> Result<SignedCheckpoint, AuditError> {
        let text = checkpoint.signed_text()?;
        let signature = self.key.sign(text.as_bytes());
        Ok(SignedCheckpoint {
            checkpoint,
            key_id: self.public.key_id.clone(),
            signature: B64.encode(signature.to_bytes()),
        })
    }
}

/// The log's public key, as published at `/.well-known/bulkhead-audit-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPublicKey {
    key: VerifyingKey,
    key_id: String,
}

impl LogPublicKey {
    fn from_verifying_key(key: VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        Self {
            key,
            key_id: crate::hex::encode(&digest[..8]),
        }
    }

    /// From `base64:<32 bytes>` or plain base64 of the 32-byte public key.
    pub fn from_config_str(text: &str) -> Result<Self, AuditError> {
        let bytes = decode_32(text.trim(), "log public key")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| AuditError::malformed("log public key", e))?;
        Ok(Self::from_verifying_key(key))
    }

    /// `base64:<32 bytes>`.
    pub fn to_config_string(&self) -> String {
        format!("base64:{}", B64.encode(self.key.as_bytes()))
    }

    /// Hex of the first 8 bytes of SHA-256 of the public key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Checks the signature (strictly: no malleable or small-order signatures) and returns the
    /// checkpoint it covers.
    pub fn verify<'a>(&self, signed: &'a SignedCheckpoint) -> Result<&'a Checkpoint, AuditError> {
        if signed.key_id != self.key_id {
            return Err(AuditError::BadSignature("signed by another key"));
        }
        let bytes = B64
            .decode(signed.signature.as_bytes())
            .map_err(|_| AuditError::BadSignature("signature is not base64"))?;
        let signature = Signature::from_slice(&bytes)
            .map_err(|_| AuditError::BadSignature("signature has the wrong length"))?;
        let text = signed.checkpoint.signed_text()?;
        self.key
            .verify_strict(text.as_bytes(), &signature)
            .map_err(|_| AuditError::BadSignature("signature mismatch"))?;
        Ok(&signed.checkpoint)
    }
}

fn decode_32(text: &str, what: &'static str) -> Result<[u8; 32], AuditError> {
    let body = text.strip_prefix("base64:").unwrap_or(text);
    let bytes = B64
        .decode(body.as_bytes())
        .map_err(|e| AuditError::malformed(what, e))?;
    bytes
        .try_into()
        .map_err(|_| AuditError::malformed(what, "expected 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            tenant_id: "tnt_x".into(),
            tree_size: 5,
            root_hash: [7; 32],
            timestamp: "2026-12-01T08:00:00Z".into(),
        }
    }

    #[test]
    fn sign_then_verify_and_every_change_breaks_it() {
        let key = LogSigningKey::generate();
        let signed = key.sign(checkpoint()).unwrap();
        assert_eq!(key.public().verify(&signed).unwrap(), &checkpoint());
        let mut bigger = signed.clone();
        bigger.checkpoint.tree_size = 6;
        assert!(key.public().verify(&bigger).is_err());
        let mut other_root = signed.clone();
        other_root.checkpoint.root_hash = [8; 32];
        assert!(key.public().verify(&other_root).is_err());
        let other = LogSigningKey::generate();
        assert!(other.public().verify(&signed).is_err());
        let mut forged_id = signed;
        forged_id.key_id = other.public().key_id().to_owned();
        assert!(other.public().verify(&forged_id).is_err());
    }

    #[test]
    fn keys_round_trip_through_config_text() {
        let key = LogSigningKey::generate();
        let again = LogSigningKey::from_config_str(&key.to_config_string()).unwrap();
        assert_eq!(again.public(), key.public());
        let public = LogPublicKey::from_config_str(&key.public().to_config_string()).unwrap();
        assert_eq!(&public, key.public());
        assert!(!format!("{key:?}").contains(&key.to_config_string()[7..]));
        assert!(LogSigningKey::from_config_str("base64:AAAA").is_err());
    }

    #[test]
    fn operator_checkpoints_are_signed_under_their_own_header() {
        let mut c = checkpoint();
        c.tenant_id = OPERATOR_LOG_ID.into();
        let text = c.signed_text().unwrap();
        assert!(text.starts_with("bulkhead-operator-audit-checkpoint/v1\nlog operator\n"));
        assert!(!checkpoint().signed_text().unwrap().contains("operator"));
        // A signature over the operator text does not verify as a tenant's, nor the reverse.
        let key = LogSigningKey::generate();
        let signed = key.sign(c).unwrap();
        let mut as_tenant = signed.clone();
        as_tenant.checkpoint.tenant_id = "tnt_x".into();
        assert!(key.public().verify(&signed).is_ok());
        assert!(key.public().verify(&as_tenant).is_err());
        let tenant = key.sign(checkpoint()).unwrap();
        let mut as_operator = tenant;
        as_operator.checkpoint.tenant_id = OPERATOR_LOG_ID.into();
        assert!(key.public().verify(&as_operator).is_err());
    }

    #[test]
    fn fields_with_newlines_are_refused() {
        let mut c = checkpoint();
        c.timestamp = "x\nsize 9".into();
        assert!(c.signed_text().is_err());
    }
}
