//! Fixed-width base62 (`0-9A-Za-z`) encoding of a 256-bit value and of a `u32`.
//!
//! Written by hand on purpose: the key format needs a *fixed-width*, left-padded
//! encoding of a 256-bit big-endian number, and no well-kept crate does that (the
//! base62 crates on crates.io encode `u128` at most, or are variable-width, or are
//! unmaintained). It is thirty lines of schoolbook long division, easy to review and
//! pinned by known-answer tests, and it touches the secret only in stack buffers that
//! are zeroized afterwards.

use zeroize::Zeroize;

/// The alphabet, in digit order: `0..=9` are 0..=9, `A..=Z` are 10..=35, `a..=z` are 36..=61.
pub(crate) const ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Number of base62 digits needed for any 256-bit value: 62^42 < 2^256 <= 62^43
/// (43 * log2(62) = 256.03). Checked by a test.
pub(crate) const RANDOM_WIDTH: usize = 43;

/// Number of base62 digits needed for any `u32`: 62^5 < 2^32 <= 62^6.
pub(crate) const CHECKSUM_WIDTH: usize = 6;

/// Is `b` one of the 62 alphabet bytes? (ASCII only, so a multi-byte UTF-8 sequence never is.)
pub(crate) fn is_alphabet(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Writes the 43-digit, left-padded base62 form of the big-endian number `bytes`
/// into `out` by repeated division of the byte array by 62.
pub(crate) fn encode_256(bytes: &[u8; 32], out: &mut [u8; RANDOM_WIDTH]) {
    let mut n = *bytes;
    for slot in out.iter_mut().rev() {
        // One step of long division of the whole 256-bit number by 62, most
        // significant byte first; the final remainder is the next digit.
        let mut rem: u32 = 0;
        for byte in n.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            // acc < 62 * 256, so the quotient fits in a byte.
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        *slot = ALPHABET[rem as usize];
    }
    // After 43 divisions the quotient is zero for every input, because 62^43 > 2^256.
    debug_assert!(n.iter().all(|&b| b == 0));
    n.zeroize();
}

/// Writes the 6-digit, left-padded base62 form of `value` into `out`.
pub(crate) fn encode_u32(value: u32, out: &mut [u8; CHECKSUM_WIDTH]) {
    let mut v = value;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    debug_assert_eq!(v, 0);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Digit value of an alphabet byte (test-only inverse).
    fn digit(b: u8) -> u32 {
        match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            b'a'..=b'z' => u32::from(b - b'a') + 36,
            _ => panic!("not a base62 digit"),
        }
    }

    /// `n = n * mul + add` on a big-endian byte array; returns the carry out of the top.
    fn mul_add(n: &mut [u8], mul: u32, add: u32) -> u32 {
        let mut carry = add;
        for byte in n.iter_mut().rev() {
            let acc = u32::from(*byte) * mul + carry;
            *byte = (acc & 0xff) as u8;
            carry = acc >> 8;
        }
        carry
    }

    /// Test-only decoder of the 43-digit form; `None` if the value does not fit in 256 bits.
    pub(crate) fn decode_256(digits: &[u8]) -> Option<[u8; 32]> {
        let mut n = [0u8; 32];
        for &d in digits {
            if mul_add(&mut n, 62, digit(d)) != 0 {
                return None;
            }
        }
        Some(n)
    }

    #[test]
    fn sixty_two_to_the_43_exceeds_two_to_the_256() {
        // Compute 62^43 and 62^42 in 34 bytes: 2^256 is exactly 1 followed by 32 zero bytes,
        // so a value > 2^256 - 1 has a non-zero byte above the low 32.
        let pow = |e: u32| {
            let mut n = [0u8; 34];
            n[33] = 1;
            for _ in 0..e {
                assert_eq!(mul_add(&mut n, 62, 0), 0);
            }
            n
        };
        let p43 = pow(43);
        assert!(p43[..2].iter().any(|&b| b != 0), "62^43 must be > 2^256");
        let p42 = pow(42);
        assert!(p42[..2].iter().all(|&b| b == 0), "62^42 must be < 2^256");
        assert_eq!(RANDOM_WIDTH, 43);
        // And 62^6 > 2^32 > 62^5 for the checksum width.
        assert!(62u64.pow(6) > 1u64 << 32);
        assert!(62u64.pow(5) < 1u64 << 32);
    }

    #[test]
    fn alphabet_order() {
        assert_eq!(ALPHABET[0], b'0');
        assert_eq!(ALPHABET[9], b'9');
        assert_eq!(ALPHABET[10], b'A');
        assert_eq!(ALPHABET[35], b'Z');
        assert_eq!(ALPHABET[36], b'a');
        assert_eq!(ALPHABET[61], b'z');
        for (i, &b) in ALPHABET.iter().enumerate() {
            assert!(is_alphabet(b));
            assert_eq!(digit(b) as usize, i);
        }
        assert_eq!((0u8..=255).filter(|&b| is_alphabet(b)).count(), 62);
    }

    #[test]
    fn small_values() {
        let mut out = [0u8; RANDOM_WIDTH];
        let mut n = [0u8; 32];
        n[31] = 61;
        encode_256(&n, &mut out);
        assert_eq!(&out[..42], &[b'0'; 42][..]);
        assert_eq!(out[42], b'z');
        n[31] = 62;
        encode_256(&n, &mut out);
        assert_eq!(&out[41..], b"10");

        let mut c = [0u8; CHECKSUM_WIDTH];
        encode_u32(0, &mut c);
        assert_eq!(&c, b"000000");
        encode_u32(62, &mut c);
        assert_eq!(&c, b"000010");
        encode_u32(u32::MAX, &mut c);
        // 4294967295 = 4 * 62^5 + 42 * 62^4 + 41 * 62^3 + 41 * 62^2 + 12 * 62 + 51
        assert_eq!(&c, b"4gfFC3");
    }

    proptest::proptest! {
        #[test]
        fn encode_256_round_trips(bytes in proptest::array::uniform32(proptest::prelude::any::<u8>())) {
            let mut out = [0u8; RANDOM_WIDTH];
            encode_256(&bytes, &mut out);
            proptest::prop_assert!(out.iter().all(|&b| is_alphabet(b)));
            proptest::prop_assert_eq!(decode_256(&out), Some(bytes));
        }

        #[test]
        fn encode_u32_round_trips(v in proptest::prelude::any::<u32>()) {
            let mut out = [0u8; CHECKSUM_WIDTH];
            encode_u32(v, &mut out);
            let back = out.iter().fold(0u64, |acc, &d| acc * 62 + u64::from(digit(d)));
            proptest::prop_assert_eq!(back, u64::from(v));
        }
    }
}
