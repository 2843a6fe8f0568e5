//! Bulkhead's tamper-evident audit log, as pure functions: no I/O happens in this crate.
//!
//! # Invariants
//! - A tenant's log is an RFC 9162 Merkle tree over SHA-256: a leaf is `H(0x00 ‖ entry)`, an
//!   interior node `H(0x01 ‖ left ‖ right)`, the empty tree `SHA-256("")` ([`tree`]). Proof
//!   generation and verification follow RFC 9162 §2.1.3 and §2.1.4 exactly, and are checked
//!   against a naive recursive implementation of the RFC's definitions by property tests.
//! - The entry of a leaf is the [canonical encoding](event::SequencedEvent::canonical_bytes) of the
//!   event *and its leaf index*: one byte string per event, whatever the order of fields or
//!   whitespace of the JSON it came from. Binding the index into the leaf makes a reordered log
//!   fail at the first moved event, not only at the root.
//! - A [`checkpoint::SignedCheckpoint`] is an Ed25519 signature over a fixed text form naming the
//!   tenant, tree size, root hash and time ([`checkpoint::Checkpoint::signed_text`]). Nothing else
//!   is signed, so nothing else can be trusted from a checkpoint.
//! - Verification fails closed: every parse error, unknown field, out-of-order index, foreign
//!   tenant or size mismatch is an error, never a skipped line.
//! - Secrets never reach this crate: events carry ids and labels; the log signing key's `Debug`
//!   prints only its public key id.
#![forbid(unsafe_code, unused_must_use)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod event;
pub mod export;
pub mod hex;
pub mod tree;

pub use checkpoint::{Checkpoint, LogPublicKey, LogSigningKey, SignedCheckpoint};
pub use event::{AuditEvent, SequencedEvent};
pub use tree::Hash;

/// Why an audit log operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A leaf index at or beyond the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof between sizes that do not make sense (`0 < old <= new`).
    #[error("no consistency proof from size {old} to size {new}")]
    BadConsistencyRange {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
    },
    /// A node hash needed for a proof was not supplied.
    #[error("node (level {level}, index {index}) is missing")]
    MissingNode {
        /// Its level.
        level: u8,
        /// Its index.
        index: u64,
    },
    /// A proof of an empty range was asked for.
    #[error("empty range")]
    EmptyRange,
    /// A proof does not prove what it claims.
    #[error("the proof does not verify")]
    ProofMismatch,
    /// A checkpoint signature does not verify under the log key, or names another key.
    #[error("the checkpoint signature does not verify: {0}")]
    BadSignature(&'static str),
    /// A key, hash or signature text is malformed.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it failed.
        why: String,
    },
    /// An event is not valid (field limits, metadata shape).
    #[error("invalid event: {0}")]
    InvalidEvent(String),
}

impl AuditError {
    pub(crate) fn malformed(what: &'static str, why: impl std::fmt::Display) -> Self {
        AuditError::Malformed {
            what,
            why: why.to_string(),
        }
    }
}
