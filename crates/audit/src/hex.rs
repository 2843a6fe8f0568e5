//! Lowercase hexadecimal for hashes, and its serde adapter.

use crate::{AuditError, Hash};

/// Lowercase hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// A 32-byte hash from exactly 64 lowercase hex digits.
pub fn decode_hash(text: &str) -> Result<Hash, AuditError> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err(AuditError::malformed("hash", "expected 64 hex digits"));
    }
    let digit = |c: u8| -> Result<u8, AuditError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(AuditError::malformed("hash", "not lowercase hex")),
        }
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Ok(out)
}

/// `#[serde(with = "crate::hex::serde_hash")]` for a [`Hash`] field.
pub mod serde_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Hash;

    /// Serializes as lowercase hex.
    pub fn serialize<S: Serializer>(hash: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(hash))
    }

    /// Deserializes from 64 lowercase hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::decode_hash(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "crate::hex::serde_hashes")]` for a list of hashes.
pub mod serde_hashes {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Hash;

    /// Serializes as a list of lowercase hex strings.
    pub fn serialize<S: Serializer>(hashes: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(hashes.iter().map(|h| super::encode(h)))
    }

    /// Deserializes a list of 64-digit lowercase hex strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| super::decode_hash(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_refuses_bad_text() {
        let h = [0xabu8; 32];
        assert_eq!(super::decode_hash(&super::encode(&h)), Ok(h));
        assert!(super::decode_hash(&"AB".repeat(32)).is_err());
        assert!(super::decode_hash("00").is_err());
    }
}
