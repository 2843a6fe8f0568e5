//! The server-side pepper and the stored form of a key, [`KeyHash`].

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::key::ApiKey;
use crate::operator_key::OperatorKey;

/// Minimum pepper length in bytes (the HMAC-SHA256 output size).
pub const MIN_PEPPER_LEN: usize = 32;

/// Standard alphabet; accepts input with or without `=` padding (operators paste
/// both), always writes it padded.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a pepper was refused. The messages never contain the pepper text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PepperError {
    /// Fewer than [`MIN_PEPPER_LEN`] bytes.
    #[error("key pepper is shorter than 32 bytes")]
    TooShort,
    /// Not `base64:<standard base64>`, `hex:<hex>` or bare standard base64.
    #[error("key pepper is not valid base64 or hex")]
    Encoding,
    /// The version is below 1, or the `v<N>:` prefix is not a number in 1..=32767.
    #[error("key pepper version must be a number from 1 to 32767")]
    Version,
}

/// Server-side secret mixed into every stored key hash.
///
/// `Debug` is redacted (shows the version only). Zeroized on drop.
pub struct KeyPepper {
    version: i16,
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for KeyPepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPepper")
            .field("version", &self.version)
            .field("bytes", &format_args!("<redacted>"))
            .finish()
    }
}

impl KeyPepper {
    /// A pepper from raw bytes: at least 32 of them, version at least 1.
    /// On error the bytes are zeroized too.
    pub fn new(version: i16, bytes: Vec<u8>) -> Result<KeyPepper, PepperError> {
        let bytes = Zeroizing::new(bytes);
        Self::from_zeroizing(version, bytes)
    }

    fn from_zeroizing(version: i16, bytes: Zeroizing<Vec<u8>>) -> Result<KeyPepper, PepperError> {
        if version < 1 {
            return Err(PepperError::Version);
        }
        if bytes.len() < MIN_PEPPER_LEN {
            return Err(PepperError::TooShort);
        }
        Ok(KeyPepper { version, bytes })
    }

    /// Parses the textual forms an operator may give in `BULKHEAD_KEY_PEPPER` (or
    /// the pepper file): `base64:<standard base64>`, `hex:<hex>`, or bare standard
    /// base64; optionally preceded by `v<N>:` for the version (default 1).
    /// Decoded length at least 32 bytes.
    ///
    /// Leading and trailing ASCII whitespace is ignored (a pepper file usually ends
    /// in a newline); base64 padding is optional; hex digits may be either case.
    /// The forms cannot be confused: `:` is in neither base64 nor hex.
    pub fn from_config_str(s: &str) -> Result<KeyPepper, PepperError> {
        let (version, bytes) = decode_config_secret(s)?;
        Self::from_zeroizing(version, bytes)
    }

    /// A new pepper of 32 bytes from the operating system's CSPRNG.
    ///
    /// # Panics
    /// If `version < 1` (a programming error: versions start at 1).
    pub fn generate(version: i16) -> KeyPepper {
        assert!(version >= 1, "key pepper versions start at 1");
        let mut bytes = Zeroizing::new(vec![0u8; MIN_PEPPER_LEN]);
        OsRng.fill_bytes(&mut bytes);
        KeyPepper { version, bytes }
    }

    /// The form written to the pepper file: `v<N>:base64:<standard base64>`.
    /// Round-trips through [`KeyPepper::from_config_str`].
    ///
    /// The returned string is the secret: write it, then drop it.
    pub fn to_config_string(&self) -> String {
        format!("v{}:base64:{}", self.version, STANDARD.encode(&*self.bytes))
    }

    /// The version, stored beside every [`KeyHash`] made with this pepper so
    /// peppers can be rotated.
    pub fn version(&self) -> i16 {
        self.version
    }

    /// HMAC-SHA256(pepper, key text). What is stored and looked up; never the key.
    pub fn key_hash(&self, key: &ApiKey) -> KeyHash {
        self.hash_text(key.expose_secret())
    }

    /// HMAC-SHA256(pepper, key text) of an operator key: the same construction as
    /// [`KeyPepper::key_hash`]. The two never collide by construction: the hashed text includes
    /// the prefix, and `bk_op_` is neither `bk_live_` nor `bk_test_`.
    pub fn operator_key_hash(&self, key: &OperatorKey) -> KeyHash {
        self.hash_text(key.expose_secret())
    }

    fn hash_text(&self, text: &str) -> KeyHash {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes)
            .expect("HMAC accepts keys of any length");
        mac.update(text.as_bytes());
        KeyHash(mac.finalize().into_bytes().into())
    }
}

/// Decodes the operator-facing forms of a server secret (see [`KeyPepper::from_config_str`]):
/// the version (1 when absent) and the bytes, zeroized on drop. Shared with the master key.
pub(crate) fn decode_config_secret(s: &str) -> Result<(i16, Zeroizing<Vec<u8>>), PepperError> {
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let (version, rest) = split_version(s)?;
    let bytes = if let Some(b64) = rest.strip_prefix("base64:") {
        decode_base64(b64)?
    } else if let Some(hex) = rest.strip_prefix("hex:") {
        decode_hex(hex)?
    } else if rest.contains(':') {
        return Err(PepperError::Encoding);
    } else {
        decode_base64(rest)?
    };
    Ok((version, bytes))
}

/// Splits an optional `v<N>:` off the front. A string starting with `v` and
/// containing `:` must be a version prefix (bare base64 never contains `:`).
fn split_version(s: &str) -> Result<(i16, &str), PepperError> {
    let Some((head, rest)) = s.split_once(':') else {
        return Ok((1, s));
    };
    let Some(digits) = head.strip_prefix('v') else {
        return Ok((1, s));
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PepperError::Version);
    }
    let version: i16 = digits.parse().map_err(|_| PepperError::Version)?;
    if version < 1 {
        return Err(PepperError::Version);
    }
    Ok((version, rest))
}

/// Decodes into a buffer allocated once and zeroized on drop.
fn decode_base64(s: &str) -> Result<Zeroizing<Vec<u8>>, PepperError> {
    let mut buf = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(s.len())]);
    let n = LENIENT_STANDARD
        .decode_slice(s, &mut buf)
        .map_err(|_| PepperError::Encoding)?;
    buf.truncate(n);
    Ok(buf)
}

fn decode_hex(s: &str) -> Result<Zeroizing<Vec<u8>>, PepperError> {
    fn nibble(c: u8) -> Result<u8, PepperError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(PepperError::Encoding),
        }
    }
    let digits = s.as_bytes();
    if digits.len() % 2 != 0 {
        return Err(PepperError::Encoding);
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(digits.len() / 2));
    for pair in digits.chunks_exact(2) {
        buf.push((nibble(pair[0])? << 4) | nibble(pair[1])?);
    }
    Ok(buf)
}

/// The stored form of a key: HMAC-SHA256(pepper, key text).
///
/// `==` (derived, for maps and tests) is not constant-time; when a hash decides
/// authentication compare with [`KeyHash::ct_eq`]. `Debug` shows 4 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The 32 hash bytes, as stored.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison ([`subtle`]).
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, ..] = self.0;
        write!(f, "KeyHash({a:02x}{b:02x}{c:02x}{d:02x}…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyEnvironment;

    const B64_32: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..32
    const HEX_32: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn seq() -> Vec<u8> {
        (0u8..32).collect()
    }

    fn same(a: &KeyPepper, b: &KeyPepper) -> bool {
        a.version == b.version && *a.bytes == *b.bytes
    }

    fn perr(s: &str) -> PepperError {
        match KeyPepper::from_config_str(s) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn new_checks_length_and_version() {
        assert!(KeyPepper::new(1, seq()).is_ok());
        assert_eq!(
            KeyPepper::new(1, vec![7; 31]).map(|_| ()),
            Err(PepperError::TooShort)
        );
        assert_eq!(
            KeyPepper::new(0, seq()).map(|_| ()),
            Err(PepperError::Version)
        );
        assert_eq!(
            KeyPepper::new(-3, seq()).map(|_| ()),
            Err(PepperError::Version)
        );
        assert_eq!(KeyPepper::new(7, vec![1; 64]).map(|p| p.version()), Ok(7));
    }

    #[test]
    fn config_forms() {
        let expected = KeyPepper::new(1, seq()).expect("valid");
        for s in [
            B64_32.to_owned(),
            format!("base64:{B64_32}"),
            format!("hex:{HEX_32}"),
            format!("hex:{}", HEX_32.to_uppercase()),
            format!("v1:{B64_32}"),
            format!("v1:base64:{B64_32}"),
            format!("v1:hex:{HEX_32}"),
            B64_32.trim_end_matches('=').to_owned(),
            format!("{B64_32}\n"),
            format!("  base64:{B64_32}\r\n"),
        ] {
            let p = KeyPepper::from_config_str(&s).expect("parses");
            assert!(same(&p, &expected));
        }
        let v9 = KeyPepper::from_config_str(&format!("v9:hex:{HEX_32}")).expect("parses");
        assert_eq!(v9.version(), 9);
        let v_max = KeyPepper::from_config_str(&format!("v32767:{B64_32}")).expect("parses");
        assert_eq!(v_max.version(), i16::MAX);
        let v_lead = KeyPepper::from_config_str(&format!("v007:{B64_32}")).expect("parses");
        assert_eq!(v_lead.version(), 7);
    }

    #[test]
    fn config_errors() {
        // Too short, in each form.
        let b64_31 = STANDARD.encode([5u8; 31]);
        assert_eq!(perr(&b64_31), PepperError::TooShort);
        assert_eq!(perr(&format!("base64:{b64_31}")), PepperError::TooShort);
        assert_eq!(
            perr(&format!("hex:{}", &HEX_32[..62])),
            PepperError::TooShort
        );
        assert_eq!(perr(&format!("v2:{b64_31}")), PepperError::TooShort);
        assert_eq!(perr(""), PepperError::TooShort);
        assert_eq!(perr("base64:"), PepperError::TooShort);
        // Bad encodings.
        assert_eq!(
            perr(&format!("hex:{}", &HEX_32[..63])),
            PepperError::Encoding
        );
        assert_eq!(perr(&format!("hex:{}zz", HEX_32)), PepperError::Encoding);
        assert_eq!(perr(&format!("hex:{B64_32}")), PepperError::Encoding);
        assert_eq!(perr(&format!("base64:{HEX_32}!")), PepperError::Encoding);
        assert_eq!(perr(&format!("b64:{B64_32}")), PepperError::Encoding);
        assert_eq!(perr(&format!("base64url:{B64_32}")), PepperError::Encoding);
        assert_eq!(perr(&B64_32[..21]), PepperError::Encoding); // truncated mid-quantum
        assert_eq!(perr("AAEC AwQF"), PepperError::Encoding);
        assert_eq!(perr("__--"), PepperError::Encoding); // URL-safe alphabet refused
                                                         // Bad versions.
        for v in [
            "v0",
            "v-1",
            "v",
            "vx",
            "v1.5",
            "v+1",
            "v32768",
            "v99999999999",
            "V1x",
        ] {
            let e = perr(&format!("{v}:{B64_32}"));
            if v == "V1x" {
                // Not a version prefix ('V' is uppercase): unknown form.
                assert_eq!(e, PepperError::Encoding);
            } else {
                assert_eq!(e, PepperError::Version, "{v}");
            }
        }
    }

    #[test]
    fn bare_base64_starting_with_v_is_not_a_version() {
        let mut bytes = seq();
        bytes[0] = 0xbd; // base64 of 0xbd.. starts with 'v'
        let b64 = STANDARD.encode(&bytes);
        assert!(b64.starts_with('v'));
        let p = KeyPepper::from_config_str(&b64).expect("parses");
        assert_eq!(p.version(), 1);
        assert_eq!(*p.bytes, bytes);
    }

    #[test]
    fn config_string_round_trips() {
        for version in [1, 2, 300, i16::MAX] {
            let p = KeyPepper::generate(version);
            assert_eq!(p.bytes.len(), 32);
            let s = p.to_config_string();
            assert!(s.starts_with(&format!("v{version}:base64:")));
            let back = KeyPepper::from_config_str(&s).expect("round trip");
            assert!(same(&p, &back));
        }
        let long = KeyPepper::new(4, vec![0xab; 100]).expect("valid");
        assert!(same(
            &long,
            &KeyPepper::from_config_str(&long.to_config_string()).expect("round trip")
        ));
    }

    #[test]
    #[should_panic(expected = "versions start at 1")]
    fn generate_rejects_version_zero() {
        let _ = KeyPepper::generate(0);
    }

    #[test]
    fn debug_is_redacted() {
        let p = KeyPepper::new(3, vec![0x41; 32]).expect("valid");
        let d = format!("{p:?} {p:#?}");
        assert!(d.contains("redacted"));
        assert!(d.contains('3'));
        assert!(!d.contains("41"));
        assert!(!d.contains("65")); // 0x41 as decimal
        assert!(!d.contains("QUFB")); // base64 of 'AAA'
        assert!(!d.contains("AAAA"));
    }

    #[test]
    fn error_messages_do_not_echo_input() {
        for s in ["v0:c2VjcmV0c2VjcmV0", "hex:zzsecret", "c2VjcmV0"] {
            let e = perr(s);
            let all = format!("{e} {e:?}");
            assert!(!all.contains("secret") && !all.contains("c2Vj") && !all.contains("zz"));
        }
    }

    #[test]
    fn key_hash_depends_on_pepper_and_key() {
        let key = ApiKey::generate(KeyEnvironment::Live);
        let other = ApiKey::generate(KeyEnvironment::Live);
        let p1 = KeyPepper::generate(1);
        let p1_again = KeyPepper::from_config_str(&p1.to_config_string()).expect("round trip");
        let p2 = KeyPepper::generate(2);

        let h = p1.key_hash(&key);
        assert_eq!(h, p1.key_hash(&key));
        assert!(h.ct_eq(&p1_again.key_hash(&key)));
        assert_ne!(h, p2.key_hash(&key));
        assert!(!h.ct_eq(&p2.key_hash(&key)));
        assert_ne!(h, p1.key_hash(&other));
        assert!(!h.ct_eq(&p1.key_hash(&other)));
        // Same bytes, different version: the hash is the same (the version is stored
        // beside it, not mixed in).
        let p1_as_v5 = KeyPepper::new(5, p1.bytes.to_vec()).expect("valid");
        assert_eq!(h, p1_as_v5.key_hash(&key));
        assert_eq!(h.as_bytes(), &h.0);
    }

    #[test]
    fn key_hash_known_answer() {
        // HMAC-SHA256(key = bytes 0..32, msg = the all-zeros live key), computed
        // independently; pins the construction (key = pepper, message = key text).
        let pepper = KeyPepper::new(1, seq()).expect("valid");
        let text = format!("bk_live_{}2CZclj", "0".repeat(43));
        let key = ApiKey::parse(&text).expect("known key");
        let h = pepper.key_hash(&key);
        assert_eq!(hex(h.as_bytes()), KNOWN_HASH);
    }

    const KNOWN_HASH: &str = "48409d0ba9fc5a0ffe4380727294cf390dabd463ef45e634f63be7dcdda1b8cb";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn key_hash_debug_shows_four_bytes() {
        let mut bytes = [0u8; 32];
        bytes[..6].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x12, 0x34]);
        let h = KeyHash(bytes);
        assert_eq!(format!("{h:?}"), "KeyHash(deadbeef…)");
    }
}
