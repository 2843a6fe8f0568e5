//! # Bulkhead credentials
//!
//! This crate defines Bulkhead's credentials and does no I/O:
//! - API keys: their text format, how they are generated and strictly parsed, how
//!   they are found in leaked text, and the only form in which the server keeps
//!   them, a peppered HMAC (below);
//! - access tokens ([`token`]): RFC 9068 JWTs signed with Ed25519 ([`signing`]),
//!   and the single strict verification every route relies on;
//! - refresh tokens ([`refresh`]): opaque 256-bit values stored as SHA-256;
//! - human passwords ([`password`]): argon2id;
//! - the master key ([`master`]) that seals signing keys at rest;
//! - the built-in roles and the role arithmetic ([`rbac`]);
//! - operator keys ([`OperatorKey`], `bk_op_…`): the control plane's credential, in the same
//!   format after its own prefix and stored the same way.
//!
//! ## The key format
//!
//! ```text
//! bk_live_<43 base62 chars: 32 random bytes><6 base62 chars: CRC32 of the 43>
//! bk_test_<...same...>
//! ```
//!
//! 57 ASCII characters, alphabet `0-9A-Za-z` (in that digit order). The random part
//! is 32 bytes from the operating system's CSPRNG, as a fixed-width, zero-padded
//! base62 number; the checksum is CRC32 (IEEE) of those 43 characters, also
//! fixed-width. As with GitHub's tokens, the distinctive prefix and the checksum
//! let a secret scanner recognise a real Bulkhead key offline, with about one
//! false positive in 2^32 candidates ([`find_keys`]).
//!
//! ## Invariants
//!
//! * **The plaintext key exists only inside [`ApiKey`].** It is produced by
//!   [`ApiKey::generate`] or [`ApiKey::parse`], read only through
//!   [`ApiKey::expose_secret`], never printed (`Debug` shows the environment and
//!   [`ApiKey::display_prefix`], which is the prefix plus 4 characters; there is no
//!   `Display`), and zeroized when the `ApiKey` is dropped.
//! * **Storage holds only a [`KeyHash`]**, HMAC-SHA256 keyed with the server's
//!   [`KeyPepper`] over the full key text, with the pepper's
//!   [`version`](KeyPepper::version) stored beside it so the pepper can be rotated.
//!   A database dump alone does not let anyone test a guessed key; the pepper lives
//!   outside the database, is redacted in `Debug`, and is zeroized on drop.
//! * **The checksum is a public function of the key**, not a secret. Parsing checks
//!   it before any database work and returns early on a mismatch. That early return
//!   is not a timing oracle: the checksum depends only on the presented string,
//!   which the attacker already has, so they can compute exactly what our timing
//!   would tell them without asking us, and it says nothing about any stored key.
//!   It only spares the database from lookups for typos and random guesses.
//! * **Comparisons of hashes are constant-time** ([`KeyHash::ct_eq`], via
//!   `subtle`). The derived `==` on `KeyHash` exists for maps and tests, not for
//!   deciding authentication.
//! * **Parsing never panics** and is strict: exact length (checked first, so huge
//!   inputs cost O(1)), exact case-sensitive prefix, alphabet, checksum; no
//!   trimming or normalisation. It works on bytes, so non-ASCII input is rejected,
//!   never sliced. Errors ([`KeyFormatError`], [`PepperError`]) never echo their
//!   input.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod base62;
mod bearer;
pub mod code;
pub mod id_token;
mod key;
pub mod master;
mod operator_key;
pub mod password;
mod pepper;
pub mod rbac;
pub mod refresh;
pub mod signing;
pub mod token;

pub use bearer::bearer_token;
pub use code::AuthorizationCode;
pub use key::{find_keys, ApiKey, KeyEnvironment, KeyFormatError, KEY_LEN};
pub use master::{MasterKey, TenantDataKey};
pub use operator_key::{OperatorKey, OPERATOR_KEY_LEN};
pub use pepper::{KeyHash, KeyPepper, PepperError, MIN_PEPPER_LEN};
pub use refresh::RefreshToken;
pub use signing::{generate_signing_key, SigningKey, VerifyingKey};
pub use token::{AccessClaims, ActClaim, Expectations, ExpectedIssuer, KeySet, TokenError};
