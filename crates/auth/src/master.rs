//! The master key, which seals secrets the server must keep in the database but never store in
//! the clear (the private halves of token signing keys, dedicated databases' URLs), and each
//! tenant's own data key ([`TenantDataKey`]), under which that tenant's secrets (webhook and
//! tool secrets) are sealed: destroying a tenant's sealed data key leaves every copy of its
//! secrets (a backup, an export) unopenable, even with the master key (crypto-shredding).
//!
//! Sealing is AES-256-GCM with a fresh random 96-bit nonce per seal, under a key derived from the
//! master key with HKDF-SHA256 for one purpose only (`info` names it), and with associated data
//! that binds the ciphertext to the record it belongs to (a signing key's `kid`): a sealed value
//! copied onto another record fails to open.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use zeroize::Zeroizing;

use crate::pepper::{decode_config_secret, PepperError};
use crate::MIN_PEPPER_LEN;

/// What a sealed value is for; each purpose gets its own derived key.
const SIGNING_KEY_INFO: &[u8] = b"bulkhead/v1/signing-key-seal";
const WEBHOOK_SECRET_INFO: &[u8] = b"bulkhead/v1/webhook-secret-seal";
const TOOL_SECRET_INFO: &[u8] = b"bulkhead/v1/tool-secret-seal";
const DATABASE_URL_INFO: &[u8] = b"bulkhead/v1/database-url-seal";
const CLIENT_SECRET_INFO: &[u8] = b"bulkhead/v1/oauth-client-secret-mac";
const PAGE_CSRF_INFO: &[u8] = b"bulkhead/v1/oauth-page-csrf-mac";
const TENANT_DATA_KEY_INFO: &[u8] = b"bulkhead/v1/tenant-data-key-seal";

/// HKDF salts: the master key's derived keys and a data key's never coincide.
const MASTER_SALT: &[u8] = b"bulkhead master key";
const DATA_KEY_SALT: &[u8] = b"bulkhead tenant data key";
/// Bytes of a tenant data key.
const DATA_KEY_LEN: usize = 32;

/// The operator's master key (`BULKHEAD_MASTER_KEY`, or generated into the embedded data
/// directory). `Debug` never shows it; zeroized on drop.
pub struct MasterKey {
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// A sealed value could not be opened: wrong master key, tampered, or moved to another record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed value cannot be opened with this master key")]
pub struct UnsealError;

impl MasterKey {
    /// Parses `base64:…`, `hex:…` or bare base64 (at least 32 bytes), as for the key pepper.
    pub fn from_config_str(text: &str) -> Result<MasterKey, PepperError> {
        let (_version, bytes) = decode_config_secret(text)?;
        if bytes.len() < MIN_PEPPER_LEN {
            return Err(PepperError::TooShort);
        }
        Ok(MasterKey { bytes })
    }

    /// 32 bytes from the operating system's CSPRNG.
    pub fn generate() -> MasterKey {
        let mut bytes = Zeroizing::new(vec![0u8; 32]);
        OsRng.fill_bytes(&mut bytes);
        MasterKey { bytes }
    }

    /// The form written to the key file (`base64:…`). The returned string is the secret.
    pub fn to_config_string(&self) -> String {
        format!("base64:{}", STANDARD.encode(&*self.bytes))
    }

    fn aead_key(&self, info: &'static [u8]) -> LessSafeKey {
        aead_key(MASTER_SALT, &self.bytes, info)
    }

    /// Seals a tenant's data key, bound to the tenant (`binding`: its id), so a sealed data key
    /// copied onto another tenant does not open.
    pub fn seal_tenant_data_key(&self, binding: &[u8], key: &TenantDataKey) -> Vec<u8> {
        self.seal(TENANT_DATA_KEY_INFO, binding, &key.bytes)
    }

    /// Opens what [`MasterKey::seal_tenant_data_key`] sealed with the same binding.
    pub fn open_tenant_data_key(
        &self,
        binding: &[u8],
        sealed: &[u8],
    ) -> Result<TenantDataKey, UnsealError> {
        let bytes = self.open(TENANT_DATA_KEY_INFO, binding, sealed)?;
        if bytes.len() != DATA_KEY_LEN {
            return Err(UnsealError);
        }
        Ok(TenantDataKey { bytes })
    }

    /// Seals a signing key's private half, bound to its `kid`. Output: nonce ‖ ciphertext ‖ tag.
    pub fn seal_signing_key(&self, kid: &str, plaintext: &[u8]) -> Vec<u8> {
        self.seal(SIGNING_KEY_INFO, kid.as_bytes(), plaintext)
    }

    /// Opens what [`MasterKey::seal_signing_key`] sealed for the same `kid`.
    pub fn open_signing_key(
        &self,
        kid: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        self.open(SIGNING_KEY_INFO, kid.as_bytes(), sealed)
    }

    /// Seals a webhook signing secret, bound to its record (`binding`: the tenant and endpoint
    /// ids), so a sealed secret copied onto another endpoint or tenant does not open.
    pub fn seal_webhook_secret(&self, binding: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal(WEBHOOK_SECRET_INFO, binding, plaintext)
    }

    /// Opens what [`MasterKey::seal_webhook_secret`] sealed with the same binding.
    pub fn open_webhook_secret(
        &self,
        binding: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        self.open(WEBHOOK_SECRET_INFO, binding, sealed)
    }

    /// Seals a tool's call-signing secret, bound to its record (`binding`: the tenant and tool
    /// ids). A key of its own purpose: a sealed webhook secret never opens as a tool's.
    pub fn seal_tool_secret(&self, binding: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal(TOOL_SECRET_INFO, binding, plaintext)
    }

    /// Opens what [`MasterKey::seal_tool_secret`] sealed with the same binding.
    pub fn open_tool_secret(
        &self,
        binding: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        self.open(TOOL_SECRET_INFO, binding, sealed)
    }

    /// Seals a dedicated tenant database's connection URL (it carries a password), bound to the
    /// database's registry name and the role it is for, so a sealed owner URL never opens as the
    /// serving role's, nor for another database.
    pub fn seal_database_url(&self, binding: &[u8], url: &str) -> Vec<u8> {
        self.seal(DATABASE_URL_INFO, binding, url.as_bytes())
    }

    /// Opens what [`MasterKey::seal_database_url`] sealed with the same binding.
    pub fn open_database_url(
        &self,
        binding: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<String>, UnsealError> {
        let bytes = self.open(DATABASE_URL_INFO, binding, sealed)?;
        std::str::from_utf8(&bytes)
            .map(|s| Zeroizing::new(s.to_owned()))
            .map_err(|_| UnsealError)
    }

    /// HMAC-SHA256 of an OAuth client secret under a key derived for that purpose only, bound
    /// to the client (`binding`: its tenant and id), so a stored value copied onto another
    /// client never verifies. What is stored; never the secret.
    pub fn client_secret_mac(&self, binding: &[u8], secret: &[u8]) -> [u8; 32] {
        let key = self.mac_key(CLIENT_SECRET_INFO);
        let mut input = Zeroizing::new(Vec::with_capacity(binding.len() + 1 + secret.len()));
        input.extend_from_slice(binding);
        input.push(0);
        input.extend_from_slice(secret);
        let tag = ring::hmac::sign(&key, &input);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// HMAC-SHA256 of a browser cookie value of the OAuth pages under a key derived for that
    /// purpose only, bound to `binding` (the tenant): the pages' CSRF token. Neither stored nor
    /// computable without the master key, so a cookie value that is in no table (the signed-out
    /// state) still carries a token only this server can make.
    pub fn page_csrf_mac(&self, binding: &[u8], cookie: &[u8]) -> [u8; 32] {
        let key = self.mac_key(PAGE_CSRF_INFO);
        let mut input = Zeroizing::new(Vec::with_capacity(binding.len() + 1 + cookie.len()));
        input.extend_from_slice(binding);
        input.push(0);
        input.extend_from_slice(cookie);
        let tag = ring::hmac::sign(&key, &input);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `secret` is the one whose [`MasterKey::client_secret_mac`] is `stored`
    /// (constant time).
    pub fn verify_client_secret(&self, binding: &[u8], secret: &[u8], stored: &[u8]) -> bool {
        let key = self.mac_key(CLIENT_SECRET_INFO);
        let mut input = Zeroizing::new(Vec::with_capacity(binding.len() + 1 + secret.len()));
        input.extend_from_slice(binding);
        input.push(0);
        input.extend_from_slice(secret);
        ring::hmac::verify(&key, &input, stored).is_ok()
    }

    fn mac_key(&self, info: &'static [u8]) -> ring::hmac::Key {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, MASTER_SALT).extract(&self.bytes);
        let infos = [info];
        let okm = prk
            .expand(&infos, ring::hmac::HMAC_SHA256)
            .expect("an HMAC-SHA256 key length is within HKDF-SHA256's output limit");
        ring::hmac::Key::from(okm)
    }

    fn seal(&self, info: &'static [u8], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal(&self.aead_key(info), aad, plaintext)
    }

    fn open(
        &self,
        info: &'static [u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        open(&self.aead_key(info), aad, sealed)
    }
}

/// One tenant's data key: 32 random bytes, kept only sealed under the master key
/// ([`MasterKey::seal_tenant_data_key`]), under which the tenant's secrets are sealed, each
/// purpose with a key of its own derived from it. `Debug` never shows it; zeroized on drop.
pub struct TenantDataKey {
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for TenantDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TenantDataKey(<redacted>)")
    }
}

impl TenantDataKey {
    /// 32 bytes from the operating system's CSPRNG.
    pub fn generate() -> TenantDataKey {
        let mut bytes = Zeroizing::new(vec![0u8; DATA_KEY_LEN]);
        OsRng.fill_bytes(&mut bytes);
        TenantDataKey { bytes }
    }

    /// Seals a webhook signing secret, bound to its record (`binding`: the tenant and endpoint
    /// ids), as [`MasterKey::seal_webhook_secret`] did before tenants had data keys.
    pub fn seal_webhook_secret(&self, binding: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal(
            &aead_key(DATA_KEY_SALT, &self.bytes, WEBHOOK_SECRET_INFO),
            binding,
            plaintext,
        )
    }

    /// Opens what [`TenantDataKey::seal_webhook_secret`] sealed with the same binding.
    pub fn open_webhook_secret(
        &self,
        binding: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        open(
            &aead_key(DATA_KEY_SALT, &self.bytes, WEBHOOK_SECRET_INFO),
            binding,
            sealed,
        )
    }

    /// Seals a tool's call-signing secret, bound to its record (the tenant and tool ids).
    pub fn seal_tool_secret(&self, binding: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal(
            &aead_key(DATA_KEY_SALT, &self.bytes, TOOL_SECRET_INFO),
            binding,
            plaintext,
        )
    }

    /// Opens what [`TenantDataKey::seal_tool_secret`] sealed with the same binding.
    pub fn open_tool_secret(
        &self,
        binding: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        open(
            &aead_key(DATA_KEY_SALT, &self.bytes, TOOL_SECRET_INFO),
            binding,
            sealed,
        )
    }
}

/// The AES-256-GCM key for `info`, derived from `root` with HKDF-SHA256 under `salt`.
fn aead_key(salt: &'static [u8], root: &[u8], info: &'static [u8]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(root);
    let infos = [info];
    let okm = prk
        .expand(&infos, &AES_256_GCM)
        .expect("AES-256 key length is within HKDF-SHA256's output limit");
    LessSafeKey::new(UnboundKey::from(okm))
}

/// nonce ‖ ciphertext ‖ tag, with a fresh random nonce.
fn seal(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let mut in_out = Zeroizing::new(plaintext.to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut *in_out,
    )
    .expect("AES-GCM seals any input shorter than 64 GiB");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&in_out);
    out
}

fn open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(UnsealError);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| UnsealError)?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| UnsealError)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// Bytes added by sealing: the nonce and the tag.
pub const SEAL_OVERHEAD: usize = 12 + 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_kid() {
        let master = MasterKey::generate();
        let sealed = master.seal_signing_key("kid-aaaaaaaa", b"secret material");
        assert!(!sealed
            .windows(b"secret material".len())
            .any(|w| w == b"secret material"));
        assert_eq!(
            &*master.open_signing_key("kid-aaaaaaaa", &sealed).unwrap(),
            b"secret material"
        );
        assert_eq!(
            master.open_signing_key("kid-bbbbbbbb", &sealed),
            Err(UnsealError)
        );
        assert_eq!(
            MasterKey::generate().open_signing_key("kid-aaaaaaaa", &sealed),
            Err(UnsealError)
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert_eq!(
            master.open_signing_key("kid-aaaaaaaa", &tampered),
            Err(UnsealError)
        );
        assert_eq!(
            master.open_signing_key("kid-aaaaaaaa", &[0; 5]),
            Err(UnsealError)
        );
        let round = MasterKey::from_config_str(&master.to_config_string()).unwrap();
        assert!(round.open_signing_key("kid-aaaaaaaa", &sealed).is_ok());
        assert!(format!("{master:?}").contains("redacted"));
        assert_eq!(
            MasterKey::from_config_str("base64:AAAA").unwrap_err(),
            PepperError::TooShort
        );
    }

    #[test]
    fn a_tenants_secrets_open_only_with_its_own_data_key() {
        let master = MasterKey::generate();
        let key = TenantDataKey::generate();
        let sealed_key = master.seal_tenant_data_key(b"tenant-a", &key);
        assert!(master
            .open_tenant_data_key(b"tenant-b", &sealed_key)
            .is_err());
        assert!(MasterKey::generate()
            .open_tenant_data_key(b"tenant-a", &sealed_key)
            .is_err());
        let opened = master
            .open_tenant_data_key(b"tenant-a", &sealed_key)
            .unwrap();
        let secret = key.seal_webhook_secret(b"endpoint", b"whsec material");
        assert_eq!(
            &*opened.open_webhook_secret(b"endpoint", &secret).unwrap(),
            b"whsec material"
        );
        // Neither another tenant's key, nor the master key, nor another purpose opens it.
        assert!(TenantDataKey::generate()
            .open_webhook_secret(b"endpoint", &secret)
            .is_err());
        assert!(master.open_webhook_secret(b"endpoint", &secret).is_err());
        assert!(opened.open_tool_secret(b"endpoint", &secret).is_err());
        let tool = opened.seal_tool_secret(b"tool", b"tool material");
        assert_eq!(
            &*key.open_tool_secret(b"tool", &tool).unwrap(),
            b"tool material"
        );
        assert!(format!("{key:?}").contains("redacted"));
    }
}
