//! Fuzz harnesses, one function per target in `fuzz_targets/`.
//!
//! Each target's body is a single call into this file, so a harness can also be
//! run from an ordinary test (e.g. over the seed corpus) without libFuzzer.

#![forbid(unsafe_code)]

use bulkhead_auth::{find_keys, ApiKey};

/// `ApiKey::parse` and `find_keys` on arbitrary input: no panic; whatever parses
/// re-parses to the same key; whatever `find_keys` reports is a valid key at that
/// offset.
pub fn api_key(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(key) = ApiKey::parse(s) {
            assert_eq!(key.expose_secret(), s, "parse must not normalise");
            let again = ApiKey::parse(key.expose_secret()).expect("a parsed key re-parses");
            assert_eq!(again.expose_secret(), key.expose_secret());
            assert_eq!(again.environment(), key.environment());
        }
    }
    let lossy = String::from_utf8_lossy(data);
    let mut previous_end = 0;
    for (offset, key) in find_keys(&lossy) {
        let secret = key.expose_secret();
        assert!(
            offset >= previous_end,
            "keys are reported in order, without overlap"
        );
        assert_eq!(lossy.get(offset..offset + secret.len()), Some(secret));
        assert!(ApiKey::parse(secret).is_ok());
        previous_end = offset + secret.len();
    }
}

#[cfg(test)]
mod tests {
    /// Runs every harness over its seed corpus, so `cargo test` here (on stable)
    /// catches a harness that panics on its own seeds.
    #[test]
    fn seed_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/api_key");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("corpus dir") {
            let path = entry.expect("entry").path();
            let data = std::fs::read(&path).expect("read seed");
            super::api_key(&data);
            seen += 1;
        }
        assert!(seen >= 3);
    }

    #[test]
    fn seeds_are_what_their_names_say() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/api_key");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("seed");
        assert!(bulkhead_auth::ApiKey::parse(&read("valid_test_key")).is_ok());
        assert_eq!(
            bulkhead_auth::ApiKey::parse(&read("bad_checksum_key")).map(|_| ()),
            Err(bulkhead_auth::KeyFormatError::Checksum)
        );
        assert!(read("empty").is_empty());
    }
}
