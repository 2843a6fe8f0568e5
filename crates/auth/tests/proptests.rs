//! Property tests of the API key format through the public API.
// Test helpers outside #[test] functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use bulkhead_auth::{find_keys, ApiKey, KeyEnvironment, KeyFormatError, KEY_LEN};
use proptest::prelude::*;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn env() -> impl Strategy<Value = KeyEnvironment> {
    prop_oneof![Just(KeyEnvironment::Live), Just(KeyEnvironment::Test)]
}

/// Replaces byte `pos` of an ASCII key by `new` (ASCII).
fn substitute(key: &str, pos: usize, new: u8) -> String {
    let mut bytes = key.as_bytes().to_vec();
    bytes[pos] = new;
    String::from_utf8(bytes).expect("ASCII stays UTF-8")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    // (a) Never panics, on anything.
    #[test]
    fn parse_never_panics_on_strings(s in any::<String>()) {
        let _ = ApiKey::parse(&s);
        let _ = find_keys(&s);
    }

    #[test]
    fn parse_never_panics_on_lossy_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let s = String::from_utf8_lossy(&bytes);
        let _ = ApiKey::parse(&s);
        let _ = find_keys(&s);
    }

    /// Inputs near the valid shape, so the later checks (alphabet, checksum) are reached.
    #[test]
    fn parse_never_panics_near_valid(s in "(bk_live_|bk_test_|bk_|BK_LIVE_|)[0-9A-Za-z_é€ \n]{40,60}") {
        match ApiKey::parse(&s) {
            Ok(key) => prop_assert_eq!(key.expose_secret(), s.as_str()),
            Err(KeyFormatError::Length) => prop_assert_ne!(s.len(), KEY_LEN),
            Err(_) => prop_assert_eq!(s.len(), KEY_LEN),
        }
    }

    // (b) Every generated key round-trips.
    #[test]
    fn generated_keys_round_trip(env in env()) {
        let key = ApiKey::generate(env);
        prop_assert_eq!(key.expose_secret().len(), KEY_LEN);
        let parsed = ApiKey::parse(key.expose_secret()).expect("generated key parses");
        prop_assert_eq!(parsed.expose_secret(), key.expose_secret());
        prop_assert_eq!(parsed.environment(), env);
        prop_assert_eq!(parsed.display_prefix(), key.display_prefix());
    }

    // (c) Any single-character change to another alphabet character is rejected.
    #[test]
    fn single_substitution_rejected(env in env(), pos in 0..KEY_LEN, pick in 0usize..61) {
        let key = ApiKey::generate(env);
        let old = key.expose_secret().as_bytes()[pos];
        let others: Vec<u8> = ALPHABET.iter().copied().filter(|&c| c != old).collect();
        let changed = substitute(key.expose_secret(), pos, others[pick % others.len()]);
        let result = ApiKey::parse(&changed).map(|_| ());
        if pos < 8 {
            prop_assert_eq!(result, Err(KeyFormatError::Prefix));
        } else {
            prop_assert_eq!(result, Err(KeyFormatError::Checksum));
        }
    }

    // (d) find_keys finds an embedded key at the right byte offset...
    #[test]
    fn find_keys_finds_embedded_key(
        env in env(),
        before in "[^0-9A-Za-z]{0,50}",
        after in "[^0-9A-Za-z]{0,50}",
    ) {
        let key = ApiKey::generate(env);
        let text = format!("{before}{}{after}", key.expose_secret());
        let found = find_keys(&text);
        prop_assert_eq!(found.len(), 1);
        prop_assert_eq!(found[0].0, before.len());
        prop_assert_eq!(found[0].1.expose_secret(), key.expose_secret());
    }

    /// ...and several, in order.
    #[test]
    fn find_keys_finds_several(n in 0usize..5, sep in "[^0-9A-Za-z]{1,20}") {
        let keys: Vec<ApiKey> = (0..n).map(|_| ApiKey::generate(KeyEnvironment::Live)).collect();
        let text = keys.iter().map(|k| k.expose_secret()).collect::<Vec<_>>().join(&sep);
        let found = find_keys(&text);
        prop_assert_eq!(found.len(), n);
        for (i, ((off, k), orig)) in found.iter().zip(&keys).enumerate() {
            prop_assert_eq!(*off, i * (KEY_LEN + sep.len()));
            prop_assert_eq!(k.expose_secret(), orig.expose_secret());
        }
    }

    // (d) ...and nothing in random alphanumeric noise (which cannot contain a prefix)...
    #[test]
    fn find_keys_nothing_in_alphanumeric_noise(noise in "[0-9A-Za-z]{0,500}") {
        prop_assert!(find_keys(&noise).is_empty());
    }

    /// ...nor, with overwhelming probability (2^-32 per candidate), in noise full of
    /// prefixes followed by random alphanumerics: the checksum does the work here.
    #[test]
    fn find_keys_nothing_in_prefix_rich_noise(
        noise in "(bk_live_|bk_test_|[0-9A-Za-z_]){0,500}",
        body in "[0-9A-Za-z]{49}",
    ) {
        prop_assert!(find_keys(&noise).is_empty());
        let candidate = format!("bk_live_{body}");
        prop_assert_eq!(ApiKey::parse(&candidate).map(|_| ()), Err(KeyFormatError::Checksum));
        prop_assert!(find_keys(&candidate).is_empty());
    }
}

/// (c), exhaustively for a few keys: every position, every other alphabet character.
/// CRC32 detects every error burst of at most 32 bits, and a single changed
/// character is a burst of at most 8 bits, so no substitution in the random part
/// can keep the checksum; a change inside the checksum changes the number it
/// encodes (the fixed-width encoding is injective).
#[test]
fn every_single_substitution_rejected_exhaustively() {
    for env in [KeyEnvironment::Live, KeyEnvironment::Test] {
        for _ in 0..10 {
            let key = ApiKey::generate(env);
            let text = key.expose_secret();
            for pos in 0..KEY_LEN {
                for &c in ALPHABET {
                    if c == text.as_bytes()[pos] {
                        continue;
                    }
                    let changed = substitute(text, pos, c);
                    let expected = if pos < 8 {
                        KeyFormatError::Prefix
                    } else {
                        KeyFormatError::Checksum
                    };
                    assert_eq!(ApiKey::parse(&changed).map(|_| ()), Err(expected));
                }
            }
        }
    }
}
