//! Human passwords: argon2id with OWASP's recommended parameters, stored as PHC strings.
//!
//! An unknown account costs the same work as a wrong password ([`verify_password`] with `None`
//! verifies against a fixed dummy hash), so the login endpoint's timing does not reveal which
//! accounts exist.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (bounds the hashing work an anonymous caller can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a password was not accepted for storage. Never contains the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("passwords need at least 12 characters")]
    TooShort,
    /// More than [`MAX_PASSWORD_BYTES`] bytes.
    #[error("passwords are limited to 1024 bytes")]
    TooLong,
}

/// OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a new password (after the length policy) into a PHC string.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    let salt = SaltString::generate(&mut OsRng);
    Ok(hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2id hashes any password within the length bounds")
        .to_string())
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password("bulkhead dummy password for unknown accounts")
            .expect("the dummy password satisfies the policy")
    })
}

/// Whether `password` matches the stored PHC string. `None` (no such account, or a disabled
/// one) does the same work against a dummy hash and returns false. A stored hash that does not
/// parse never matches.
pub fn verify_password(stored: Option<&str>, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let (phc, real) = match stored {
        Some(phc) => (phc, true),
        None => (dummy_hash(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // The parameters come from the stored string, so old hashes keep verifying if the policy
    // changes; the comparison inside is constant-time.
    let matched = hasher()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    matched && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_reveal_nothing() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!phc.contains("correct horse"));
        assert!(verify_password(Some(&phc), "correct horse battery"));
        assert!(!verify_password(Some(&phc), "correct horse batterY"));
        assert!(!verify_password(
            None,
            "bulkhead dummy password for unknown accounts"
        ));
        assert!(!verify_password(Some("not a phc string"), "x"));
        assert_eq!(hash_password("short"), Err(PasswordError::TooShort));
        assert_eq!(
            hash_password(&"x".repeat(2000)),
            Err(PasswordError::TooLong)
        );
    }
}
