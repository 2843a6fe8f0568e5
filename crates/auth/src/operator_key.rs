//! The operator key (`bk_op_…`): the control plane's credential. The same random part, checksum
//! and storage (a peppered HMAC) as an [`crate::ApiKey`], after a prefix of its own, so that no
//! string is both a tenant key and an operator key and each side's parser refuses the other's.

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::base62::{self, CHECKSUM_WIDTH, RANDOM_WIDTH};
use crate::key::KeyFormatError;

const PREFIX: &[u8] = b"bk_op_";
const RANDOM_START: usize = PREFIX.len();
const CHECKSUM_START: usize = RANDOM_START + RANDOM_WIDTH;

/// Length of every operator key: 6 (prefix) + 43 (random part) + 6 (checksum).
pub const OPERATOR_KEY_LEN: usize = CHECKSUM_START + CHECKSUM_WIDTH;

/// A syntactically valid operator key. Holds the secret: `Debug` shows only the display prefix,
/// there is no `Display`, the text is zeroized on drop, and [`OperatorKey::expose_secret`] is
/// the only way to read it.
pub struct OperatorKey {
    /// Always exactly `OPERATOR_KEY_LEN` ASCII bytes, allocated once with that capacity.
    text: String,
}

impl Drop for OperatorKey {
    fn drop(&mut self) {
        self.text.zeroize();
    }
}

impl fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorKey")
            .field("prefix", &format_args!("{}…", self.display_prefix()))
            .finish()
    }
}

impl OperatorKey {
    /// A new random key: 32 bytes from the operating system's CSPRNG.
    pub fn generate() -> OperatorKey {
        let mut raw = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(raw.as_mut());
        let mut random = Zeroizing::new([0u8; RANDOM_WIDTH]);
        base62::encode_256(&raw, &mut random);
        let mut checksum = [0u8; CHECKSUM_WIDTH];
        base62::encode_u32(crc32fast::hash(random.as_ref()), &mut checksum);
        let mut text = String::with_capacity(OPERATOR_KEY_LEN);
        text.extend(PREFIX.iter().map(|&b| char::from(b)));
        text.extend(random.iter().map(|&b| char::from(b)));
        text.extend(checksum.iter().map(|&b| char::from(b)));
        OperatorKey { text }
    }

    /// Strictly parses a presented key: exact length first (a huge input costs O(1)), exact
    /// prefix, alphabet, checksum. No trimming. Never panics; errors never echo the input. The
    /// checksum is public (see the crate docs), so the early return on it tells nothing.
    pub fn parse(presented: &str) -> Result<OperatorKey, KeyFormatError> {
        let bytes = presented.as_bytes();
        if bytes.len() != OPERATOR_KEY_LEN {
            return Err(KeyFormatError::Length);
        }
        let (prefix, rest) = bytes.split_at(PREFIX.len());
        if prefix != PREFIX {
            return Err(KeyFormatError::Prefix);
        }
        if !rest.iter().all(|&b| base62::is_alphabet(b)) {
            return Err(KeyFormatError::Alphabet);
        }
        let (random, presented_checksum) = rest.split_at(RANDOM_WIDTH);
        let mut expected = [0u8; CHECKSUM_WIDTH];
        base62::encode_u32(crc32fast::hash(random), &mut expected);
        if presented_checksum != expected {
            return Err(KeyFormatError::Checksum);
        }
        let mut text = String::with_capacity(OPERATOR_KEY_LEN);
        text.extend(bytes.iter().map(|&b| char::from(b)));
        Ok(OperatorKey { text })
    }

    /// The full key text: show it once to its owner or hash it; never log it.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    /// The prefix plus the first 4 characters of the random part (`bk_op_AbC1`): safe to log
    /// and to list.
    pub fn display_prefix(&self) -> String {
        self.text
            .get(..RANDOM_START + 4)
            .unwrap_or_default()
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApiKey, KeyEnvironment};

    #[test]
    fn round_trip_and_strict_parse() {
        let key = OperatorKey::generate();
        assert_eq!(key.expose_secret().len(), OPERATOR_KEY_LEN);
        assert!(key.expose_secret().starts_with("bk_op_"));
        let parsed = OperatorKey::parse(key.expose_secret()).expect("parses");
        assert_eq!(parsed.expose_secret(), key.expose_secret());
        assert_eq!(key.display_prefix().len(), 10);
        assert!(!format!("{key:?}").contains(&key.expose_secret()[10..]));
        // One substituted character anywhere after the prefix breaks the checksum.
        for pos in RANDOM_START..OPERATOR_KEY_LEN {
            let mut bytes = key.expose_secret().as_bytes().to_vec();
            bytes[pos] = if bytes[pos] == b'a' { b'b' } else { b'a' };
            let text = String::from_utf8(bytes).expect("ascii");
            assert!(OperatorKey::parse(&text).is_err(), "position {pos}");
        }
        for bad in [
            format!(" {}", &key.expose_secret()[1..]),
            format!("BK_OP_{}", &key.expose_secret()[6..]),
            key.expose_secret()[..OPERATOR_KEY_LEN - 1].to_owned(),
            String::new(),
        ] {
            assert!(OperatorKey::parse(&bad).is_err());
        }
    }

    #[test]
    fn tenant_keys_and_operator_keys_never_parse_as_each_other() {
        let tenant = ApiKey::generate(KeyEnvironment::Live);
        assert!(OperatorKey::parse(tenant.expose_secret()).is_err());
        let operator = OperatorKey::generate();
        assert!(ApiKey::parse(operator.expose_secret()).is_err());
    }
}
