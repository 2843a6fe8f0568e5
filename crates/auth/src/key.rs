//! The API key: format, generation, strict parsing, and scanning text for keys.

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::base62::{self, CHECKSUM_WIDTH, RANDOM_WIDTH};

const PREFIX_LEN: usize = 8;
const LIVE_PREFIX: &[u8; PREFIX_LEN] = b"bk_live_";
const TEST_PREFIX: &[u8; PREFIX_LEN] = b"bk_test_";
const RANDOM_START: usize = PREFIX_LEN;
const CHECKSUM_START: usize = RANDOM_START + RANDOM_WIDTH;

/// Length in bytes (and characters: a valid key is ASCII) of every API key:
/// 8 (prefix) + 43 (random part) + 6 (checksum).
pub const KEY_LEN: usize = CHECKSUM_START + CHECKSUM_WIDTH;

/// How many characters of the random part [`ApiKey::display_prefix`] reveals.
const DISPLAY_RANDOM_CHARS: usize = 4;

/// Which environment a key belongs to; the first thing in the key text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyEnvironment {
    /// Production: prefix `bk_live_`.
    Live,
    /// Testing / sandbox: prefix `bk_test_`.
    Test,
}

impl KeyEnvironment {
    /// The key prefix of this environment, `"bk_live_"` or `"bk_test_"`.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyEnvironment::Live => "bk_live_",
            KeyEnvironment::Test => "bk_test_",
        }
    }
}

/// Why a presented string is not a syntactically valid API key.
///
/// The messages never contain the presented text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFormatError {
    /// The key is not exactly [`KEY_LEN`] bytes long.
    #[error("API key has the wrong length")]
    Length,
    /// The key does not start with `bk_live_` or `bk_test_`.
    #[error("API key has an unknown prefix")]
    Prefix,
    /// The random part or checksum contains a character outside `0-9A-Za-z`.
    #[error("API key contains a character outside its alphabet")]
    Alphabet,
    /// The checksum does not match the random part.
    #[error("API key checksum does not match")]
    Checksum,
}

/// A syntactically valid key: prefix, 43-char random part, checksum verified.
///
/// Holds the secret. `Debug` prints only the environment and a short non-secret
/// prefix (`bk_live_AbC1…`); there is no `Display`; the text is zeroized on drop.
/// [`ApiKey::expose_secret`] is the only way to get the key text.
pub struct ApiKey {
    env: KeyEnvironment,
    /// Always exactly `KEY_LEN` ASCII bytes, allocated once with that capacity
    /// (so no reallocation leaves a stray copy behind).
    text: String,
}

impl Drop for ApiKey {
    fn drop(&mut self) {
        self.text.zeroize();
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("environment", &self.env)
            .field("prefix", &format_args!("{}…", self.display_prefix()))
            .finish()
    }
}

impl ApiKey {
    /// A new random key: 32 bytes from the operating system's CSPRNG ([`OsRng`]).
    pub fn generate(env: KeyEnvironment) -> ApiKey {
        let mut raw = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(raw.as_mut());
        Self::from_random_bytes(env, &raw)
    }

    /// Builds the key text for the given 32 random bytes. Deterministic; used by
    /// [`ApiKey::generate`] and by the known-answer tests.
    pub(crate) fn from_random_bytes(env: KeyEnvironment, raw: &[u8; 32]) -> ApiKey {
        let mut random = Zeroizing::new([0u8; RANDOM_WIDTH]);
        base62::encode_256(raw, &mut random);
        let mut checksum = [0u8; CHECKSUM_WIDTH];
        base62::encode_u32(crc32fast::hash(random.as_ref()), &mut checksum);

        let mut text = String::with_capacity(KEY_LEN);
        text.push_str(env.prefix());
        text.extend(random.iter().map(|&b| char::from(b)));
        text.extend(checksum.iter().map(|&b| char::from(b)));
        debug_assert_eq!(text.len(), KEY_LEN);
        ApiKey { env, text }
    }

    /// Strictly parses a presented key.
    ///
    /// Exact length [`KEY_LEN`] (checked first, so a huge input costs O(1)); prefix
    /// exactly `bk_live_` or `bk_test_` (case-sensitive); every later character in
    /// `0-9A-Za-z`; checksum equal. No trimming, no normalisation. Never panics.
    ///
    /// The checksum check is not a secret comparison (see the crate docs), so it
    /// returns early.
    pub fn parse(presented: &str) -> Result<ApiKey, KeyFormatError> {
        parse_bytes(presented.as_bytes())
    }

    /// The environment named by the key's prefix.
    pub fn environment(&self) -> KeyEnvironment {
        self.env
    }

    /// The full key text. The only way to get it: show it once to its owner, or
    /// hash it with [`crate::KeyPepper::key_hash`]; never log it.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    /// The prefix plus the first 4 characters of the random part, e.g. `bk_live_AbC1`.
    ///
    /// Safe to log and to show in a UI to tell keys apart (reveals about 24 of
    /// the 256 random bits).
    pub fn display_prefix(&self) -> String {
        // The text is ASCII, so every byte index is a char boundary.
        self.text
            .get(..RANDOM_START + DISPLAY_RANDOM_CHARS)
            .unwrap_or_default()
            .to_owned()
    }
}

/// Parses exactly `KEY_LEN` bytes or fails; works on bytes so that no `&str` is
/// ever sliced inside a multi-byte character.
fn parse_bytes(bytes: &[u8]) -> Result<ApiKey, KeyFormatError> {
    if bytes.len() != KEY_LEN {
        return Err(KeyFormatError::Length);
    }
    let (prefix, rest) = bytes.split_at(PREFIX_LEN);
    let env = if prefix == LIVE_PREFIX {
        KeyEnvironment::Live
    } else if prefix == TEST_PREFIX {
        KeyEnvironment::Test
    } else {
        return Err(KeyFormatError::Prefix);
    };
    if !rest.iter().all(|&b| base62::is_alphabet(b)) {
        return Err(KeyFormatError::Alphabet);
    }
    let (random, presented_checksum) = rest.split_at(RANDOM_WIDTH);
    let mut expected = [0u8; CHECKSUM_WIDTH];
    base62::encode_u32(crc32fast::hash(random), &mut expected);
    // The fixed-width encoding is a bijection on u32, so comparing digits is
    // comparing values (a 6-digit string above u32::MAX never matches).
    // Not constant-time on purpose: the checksum is public.
    if presented_checksum != expected {
        return Err(KeyFormatError::Checksum);
    }
    let mut text = String::with_capacity(KEY_LEN);
    text.push_str(env.prefix());
    text.extend(rest.iter().map(|&b| char::from(b)));
    debug_assert_eq!(text.as_bytes(), bytes);
    Ok(ApiKey { env, text })
}

/// Finds every checksum-valid key in arbitrary text, for the leak scanner.
///
/// Returns the byte offset of each key's first character and the key, in order
/// of offset. A key is recognised wherever its 57 bytes appear, whatever
/// surrounds them (`xbk_live_…` and a key followed by more letters still count:
/// a leaked key glued to other text is still leaked); the checksum keeps false
/// positives at about 2^-32 per candidate `bk_live_`/`bk_test_` occurrence.
/// Valid keys cannot overlap (the prefix contains `_`, the rest of a key does not).
pub fn find_keys(text: &str) -> Vec<(usize, ApiKey)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(window) = bytes.get(i..i + KEY_LEN) {
        let candidate = window.starts_with(LIVE_PREFIX) || window.starts_with(TEST_PREFIX);
        if candidate {
            if let Ok(key) = parse_bytes(window) {
                found.push((i, key));
                i += KEY_LEN;
                continue;
            }
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers, computed once (and cross-checked with an independent
    /// implementation); a change of encoding or checksum must break these.
    const ZEROS_RANDOM: &str = "0000000000000000000000000000000000000000000";
    const ZEROS_CHECKSUM: &str = "2CZclj";
    const ONES_RANDOM: &str = "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1";
    const ONES_CHECKSUM: &str = "3sRzl1";

    fn envs() -> [KeyEnvironment; 2] {
        [KeyEnvironment::Live, KeyEnvironment::Test]
    }

    #[test]
    fn known_answers() {
        for env in envs() {
            let zeros = ApiKey::from_random_bytes(env, &[0u8; 32]);
            assert_eq!(
                zeros.expose_secret(),
                format!("{}{ZEROS_RANDOM}{ZEROS_CHECKSUM}", env.prefix())
            );
            let ones = ApiKey::from_random_bytes(env, &[0xffu8; 32]);
            assert_eq!(
                ones.expose_secret(),
                format!("{}{ONES_RANDOM}{ONES_CHECKSUM}", env.prefix())
            );
            // And both parse.
            assert!(ApiKey::parse(zeros.expose_secret()).is_ok());
            assert!(ApiKey::parse(ones.expose_secret()).is_ok());
        }
        assert_eq!(
            base62::tests::decode_256(ONES_RANDOM.as_bytes()),
            Some([0xff; 32])
        );
        assert_eq!(
            base62::tests::decode_256(ZEROS_RANDOM.as_bytes()),
            Some([0; 32])
        );
    }

    #[test]
    fn generate_parse_round_trip() {
        for env in envs() {
            for _ in 0..50 {
                let key = ApiKey::generate(env);
                assert_eq!(key.expose_secret().len(), KEY_LEN);
                assert_eq!(KEY_LEN, 57);
                assert!(key.expose_secret().starts_with(env.prefix()));
                assert_eq!(key.environment(), env);
                let parsed = ApiKey::parse(key.expose_secret()).expect("generated key parses");
                assert_eq!(parsed.expose_secret(), key.expose_secret());
                assert_eq!(parsed.environment(), env);
            }
        }
    }

    #[test]
    fn generated_keys_differ() {
        let a = ApiKey::generate(KeyEnvironment::Live);
        let b = ApiKey::generate(KeyEnvironment::Live);
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn every_random_position_substitution_fails_checksum() {
        let key = ApiKey::generate(KeyEnvironment::Live);
        for pos in RANDOM_START..CHECKSUM_START {
            let mut bytes = key.expose_secret().as_bytes().to_vec();
            bytes[pos] = if bytes[pos] == b'a' { b'b' } else { b'a' };
            let s = String::from_utf8(bytes).expect("ascii");
            assert_eq!(
                ApiKey::parse(&s).map(|_| ()),
                Err(KeyFormatError::Checksum),
                "position {pos}"
            );
        }
    }

    #[test]
    fn checksum_position_substitution_fails_checksum() {
        let key = ApiKey::generate(KeyEnvironment::Test);
        for pos in CHECKSUM_START..KEY_LEN {
            let mut bytes = key.expose_secret().as_bytes().to_vec();
            bytes[pos] = if bytes[pos] == b'Z' { b'Y' } else { b'Z' };
            let s = String::from_utf8(bytes).expect("ascii");
            assert_eq!(ApiKey::parse(&s).map(|_| ()), Err(KeyFormatError::Checksum));
        }
    }

    fn err(s: &str) -> KeyFormatError {
        match ApiKey::parse(s) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn prefix_variants_rejected() {
        let key = ApiKey::generate(KeyEnvironment::Live);
        let body = &key.expose_secret()[PREFIX_LEN..];
        for prefix in [
            "BK_LIVE_", "Bk_live_", "bk_Live_", "bk_LIVE_", "BK_TEST_", "bk_Test_", "bk-live_",
            "bk_live-", "bk_prod_", "sk_live_", "bk_livee", "xbk_live",
        ] {
            assert_eq!(
                err(&format!("{prefix}{body}")),
                KeyFormatError::Prefix,
                "{prefix}"
            );
        }
        // Valid prefix of the other environment: the checksum covers only the random
        // part, so swapping the prefix yields another *syntactically* valid key.
        let swapped = format!("bk_test_{body}");
        assert_eq!(
            ApiKey::parse(&swapped).map(|k| k.environment()),
            Ok(KeyEnvironment::Test)
        );
    }

    #[test]
    fn whitespace_and_length_rejected() {
        let key = ApiKey::generate(KeyEnvironment::Live);
        let s = key.expose_secret();
        for bad in [
            format!(" {s}"),
            format!("{s} "),
            format!("{s}\n"),
            format!("\t{s}"),
            format!("Bearer {s}"),
            s[..KEY_LEN - 1].to_owned(),
            String::new(),
            "bk_live_".to_owned(),
            "x".repeat(10_000_000),
        ] {
            assert_eq!(err(&bad), KeyFormatError::Length);
        }
        // Right length, whitespace inside.
        let mut inner = s.as_bytes().to_vec();
        inner[RANDOM_START] = b' ';
        assert_eq!(
            err(&String::from_utf8(inner).expect("ascii")),
            KeyFormatError::Alphabet
        );
        let mut last = s.as_bytes().to_vec();
        last[KEY_LEN - 1] = b'\n';
        assert_eq!(
            err(&String::from_utf8(last).expect("ascii")),
            KeyFormatError::Alphabet
        );
        let mut underscore = s.as_bytes().to_vec();
        underscore[30] = b'_';
        assert_eq!(
            err(&String::from_utf8(underscore).expect("ascii")),
            KeyFormatError::Alphabet
        );
    }

    #[test]
    fn multibyte_utf8_of_right_byte_length_rejected() {
        let key = ApiKey::generate(KeyEnvironment::Live);
        let s = key.expose_secret();
        // Replace 2 / 3 / 4 ASCII chars by one 2- / 3- / 4-byte char, keeping 57 bytes,
        // at every position, including straddling the prefix boundary and at the end.
        for replacement in ["é", "€", "𝔅"] {
            let w = replacement.len();
            for pos in 0..=KEY_LEN - w {
                let candidate = format!("{}{}{}", &s[..pos], replacement, &s[pos + w..]);
                assert_eq!(candidate.len(), KEY_LEN);
                let e = err(&candidate);
                if pos < PREFIX_LEN {
                    assert_eq!(e, KeyFormatError::Prefix);
                } else {
                    assert_eq!(e, KeyFormatError::Alphabet);
                }
            }
        }
        // All multi-byte: 19 three-byte chars = 57 bytes.
        assert_eq!(err(&"€".repeat(19)), KeyFormatError::Prefix);
        // Fullwidth digits look alphanumeric but are not in the alphabet.
        let fullwidth = format!("bk_live_{}", "０".repeat(16)); // 8 + 48 = 56 bytes
        assert_eq!(err(&format!("{fullwidth}0")), KeyFormatError::Alphabet);
    }

    #[test]
    fn display_prefix_and_debug_reveal_at_most_four_chars() {
        for env in envs() {
            let key = ApiKey::generate(env);
            let secret = key.expose_secret();
            let shown = key.display_prefix();
            assert_eq!(shown, &secret[..PREFIX_LEN + 4]);
            let debug = format!("{key:?}");
            let pretty = format!("{key:#?}");
            assert!(debug.contains(&shown));
            assert!(debug.contains(&format!("{env:?}")));
            // No window of 5 consecutive random-part chars appears anywhere.
            let random = &secret[RANDOM_START..];
            for start in 0..=random.len() - 5 {
                let w = &random[start..start + 5];
                assert!(!debug.contains(w), "Debug leaks {w}");
                assert!(!pretty.contains(w), "Debug leaks {w}");
                assert!(!shown.contains(w));
            }
            assert!(!debug.contains(&secret[CHECKSUM_START..]));
        }
    }

    #[test]
    fn error_messages_do_not_echo_input() {
        let key = ApiKey::generate(KeyEnvironment::Live);
        let mut bytes = key.expose_secret().as_bytes().to_vec();
        bytes[20] = if bytes[20] == b'q' { b'r' } else { b'q' };
        let near = String::from_utf8(bytes).expect("ascii");
        for input in [
            near.as_str(),
            "bk_live_short",
            "Bk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let e = err(input);
            let msg = e.to_string();
            let dbg = format!("{e:?}");
            assert!(!msg.contains(&input[8..12]) && !dbg.contains(&input[8..12]));
        }
    }

    #[test]
    fn find_keys_basic() {
        let a = ApiKey::generate(KeyEnvironment::Live);
        let b = ApiKey::generate(KeyEnvironment::Test);
        let text = format!(
            "export KEY={}\n# ünïcödé → {} bk_live_nope bk_test_",
            a.expose_secret(),
            b.expose_secret()
        );
        let found = find_keys(&text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, "export KEY=".len());
        assert_eq!(found[0].1.expose_secret(), a.expose_secret());
        let off_b = text.find(b.expose_secret()).expect("present");
        assert_eq!(found[1].0, off_b);
        assert_eq!(found[1].1.environment(), KeyEnvironment::Test);

        // Back to back, glued to alphanumerics.
        let glued = format!("x{}{}y", a.expose_secret(), b.expose_secret());
        let found = find_keys(&glued);
        assert_eq!(
            found.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![1, 1 + KEY_LEN]
        );
        assert!(find_keys("").is_empty());
        assert!(find_keys(&a.expose_secret()[1..]).is_empty());
    }
}
