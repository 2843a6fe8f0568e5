//! The NDJSON export format and its offline verification.
//!
//! An export is one JSON object per line:
//! 1. `{"type":"checkpoint","checkpoint":{…SignedCheckpoint…}}`, exactly once, first;
//! 2. then, for every leaf `0..tree_size` in order, either
//!    `{"type":"event","leaf_index":i,"leaf_hash":"…","event":{…AuditEvent…}}` or, for an event
//!    whose body retention has purged, `{"type":"purged","leaf_index":i,"leaf_hash":"…",
//!    "event_id":"evt_…"}`.
//!
//! [`ExportVerifier`] recomputes each event's leaf hash from its body (a mismatch with the stored
//! `leaf_hash` names the first edited event), folds the leaves into the root in `O(log n)`
//! memory, and accepts only if the root and size equal the checkpoint's and its signature
//! verifies under the log key.
//!
//! A `purged` line has no body to check, so a body deleted outside retention would go unseen.
//! Retention therefore records each purge as an `audit.purge` event whose metadata names
//! `through_leaf`, the highest leaf it purged; that event is itself in the signed log. The
//! verifier accepts a purged leaf only at or below the highest `through_leaf` of the
//! `audit.purge` events in the export.
//!
//! With [`ExportVerifier::since`], the export must also extend an older checkpoint kept by the
//! verifier: its signature verifies, it is of the same log, and the export's first
//! `tree_size` leaves hash to its root. A log truncated and regrown under a fresh signature
//! verifies on its own; it fails this.
//!
//! The operator plane's log exports in the same format; its checkpoint names
//! [`crate::checkpoint::OPERATOR_LOG_ID`] (signed under its own header), so does every event, and
//! since that log has no retention, no `purged` line ever verifies in it.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, LogPublicKey, SignedCheckpoint};
use crate::event::{AuditEvent, SequencedEvent};
use crate::tree::{Hash, RootBuilder};
use crate::AuditError;

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExportLine {
    /// The checkpoint the export verifies against.
    Checkpoint {
        /// It.
        checkpoint: SignedCheckpoint,
    },
    /// A leaf with its event.
    Event {
        /// Position.
        leaf_index: u64,
        /// The leaf hash the log stores.
        #[serde(with = "crate::hex::serde_hash")]
        leaf_hash: Hash,
        /// The event.
        event: Box<AuditEvent>,
    },
    /// A leaf whose event body retention removed.
    Purged {
        /// Position.
        leaf_index: u64,
        /// The leaf hash the log keeps.
        #[serde(with = "crate::hex::serde_hash")]
        leaf_hash: Hash,
        /// The event it was.
        event_id: String,
    },
}

/// Parses one export line (strict: unknown fields and trailing data are errors).
pub fn parse_line(line: &str) -> Result<ExportLine, AuditError> {
    serde_json::from_str(line).map_err(|e| AuditError::malformed("export line", e))
}

/// The first event found not to match the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadEvent {
    /// Its position.
    pub leaf_index: u64,
    /// Its id.
    pub event_id: String,
    /// What is wrong.
    pub reason: String,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Which kind of log the checkpoint is of: `tenant`, or `operator` for the operator plane's
    /// log (whose checkpoints are signed under their own header); empty without a checkpoint.
    pub log: &'static str,
    /// Tenant of the log ([`crate::checkpoint::OPERATOR_LOG_ID`] for the operator log).
    pub tenant_id: String,
    /// Leaves read.
    pub tree_size: u64,
    /// Of which with a body checked against its leaf.
    pub events: u64,
    /// Of which purged by retention (only the leaf hash is left).
    pub purged: u64,
    /// Whether the signature, size and root all matched and no event was bad.
    pub verified: bool,
    /// The first event whose body does not match its leaf, if any.
    pub first_bad_event: Option<BadEvent>,
    /// Why verification failed, if it did.
    pub failure: Option<String>,
    /// The size of the older checkpoint the export was checked to extend
    /// ([`ExportVerifier::since`]), if any.
    pub extends_tree_size: Option<u64>,
}

/// Streaming verifier: feed it every line with [`ExportVerifier::push_line`], then
/// [`ExportVerifier::finish`].
#[derive(Debug)]
pub struct ExportVerifier {
    key: LogPublicKey,
    checkpoint: Option<SignedCheckpoint>,
    builder: RootBuilder,
    events: u64,
    purged: u64,
    first_bad: Option<BadEvent>,
    /// Runs `[start, end)` of purged leaves, with the first one's event id.
    purged_runs: Vec<(u64, u64, String)>,
    /// Highest `through_leaf` of the `audit.purge` events seen.
    purge_cover: Option<u64>,
    /// The older checkpoint the export must extend, and the root of the export's first
    /// `tree_size` leaves once read.
    since: Option<(Checkpoint, Option<Hash>)>,
}

/// Action of the event that records a retention purge.
pub const PURGE_ACTION: &str = "audit.purge";

impl ExportVerifier {
    /// A verifier trusting `key`.
    pub fn new(key: LogPublicKey) -> Self {
        Self {
            key,
            checkpoint: None,
            builder: RootBuilder::new(),
            events: 0,
            purged: 0,
            first_bad: None,
            purged_runs: Vec::new(),
            purge_cover: None,
            since: None,
        }
    }

    /// Also requires the export to extend `old` (an older checkpoint of the same log): its
    /// signature must verify under the key, and the export's first `old.tree_size` leaves must
    /// hash to its root.
    pub fn since(mut self, old: &SignedCheckpoint) -> Result<Self, AuditError> {
        let old = self.key.verify(old)?.clone();
        let root = (old.tree_size == 0).then(|| self.builder.root());
        self.since = Some((old, root));
        Ok(self)
    }

    fn push_leaf(&mut self, leaf: Hash) {
        self.builder.push(leaf);
        if let Some((old, root @ None)) = &mut self.since {
            if old.tree_size == self.builder.size() {
                *root = Some(self.builder.root());
            }
        }
    }

    /// The checkpoint's tree size once the first line is read.
    pub fn expected_size(&self) -> Option<u64> {
        self.checkpoint.as_ref().map(|c| c.checkpoint.tree_size)
    }

    /// Reads one line. A structural error (bad JSON, missing or repeated checkpoint, index out of
    /// order, foreign tenant) ends verification: the caller reports it with its line number.
    pub fn push_line(&mut self, line: &str) -> Result<(), AuditError> {
        let parsed = parse_line(line)?;
        match (parsed, &self.checkpoint) {
            (ExportLine::Checkpoint { checkpoint }, None) => {
                self.key.verify(&checkpoint)?;
                if let Some((old, _)) = &self.since {
                    if old.tenant_id != checkpoint.checkpoint.tenant_id {
                        return Err(AuditError::malformed(
                            "export",
                            "the older checkpoint (--since) is of another log",
                        ));
                    }
                }
                self.checkpoint = Some(checkpoint);
                Ok(())
            }
            (ExportLine::Checkpoint { .. }, Some(_)) => {
                Err(AuditError::malformed("export", "a second checkpoint line"))
            }
            (_, None) => Err(AuditError::malformed(
                "export",
                "the first line must be the checkpoint",
            )),
            (
                ExportLine::Event {
                    leaf_index,
                    leaf_hash,
                    event,
                },
                Some(cp),
            ) => {
                self.check_index(leaf_index, cp.checkpoint.tree_size)?;
                if event.tenant_id != cp.checkpoint.tenant_id {
                    return Err(AuditError::malformed(
                        "export",
                        format!("leaf {leaf_index} belongs to another tenant"),
                    ));
                }
                let computed = SequencedEvent {
                    leaf_index,
                    event: &event,
                }
                .leaf_hash()?;
                if computed != leaf_hash && self.first_bad.is_none() {
                    self.first_bad = Some(BadEvent {
                        leaf_index,
                        event_id: event.event_id.clone(),
                        reason: "the event body does not hash to its leaf".into(),
                    });
                }
                if event.action == PURGE_ACTION {
                    if let Some(through) =
                        event.metadata.get("through_leaf").and_then(|v| v.as_u64())
                    {
                        self.purge_cover =
                            Some(self.purge_cover.map_or(through, |c| c.max(through)));
                    }
                }
                // The body is what is claimed, so the tree is built from it: an edited body with
                // a forged leaf hash still changes the root.
                self.push_leaf(computed);
                self.events += 1;
                Ok(())
            }
            (
                ExportLine::Purged {
                    leaf_index,
                    leaf_hash,
                    event_id,
                },
                Some(cp),
            ) => {
                self.check_index(leaf_index, cp.checkpoint.tree_size)?;
                match self.purged_runs.last_mut() {
                    Some((_, end, _)) if *end == leaf_index => *end += 1,
                    _ => self
                        .purged_runs
                        .push((leaf_index, leaf_index + 1, event_id)),
                }
                self.push_leaf(leaf_hash);
                self.purged += 1;
                Ok(())
            }
        }
    }

    fn check_index(&self, leaf_index: u64, size: u64) -> Result<(), AuditError> {
        let expected = self.builder.size();
        if leaf_index != expected {
            return Err(AuditError::malformed(
                "export",
                format!("leaf {leaf_index} where leaf {expected} was expected"),
            ));
        }
        if leaf_index >= size {
            return Err(AuditError::malformed(
                "export",
                format!("leaf {leaf_index} beyond the checkpoint's size {size}"),
            ));
        }
        Ok(())
    }

    /// The verdict.
    pub fn finish(self) -> VerifyReport {
        let Some(cp) = self.checkpoint else {
            return VerifyReport {
                log: "",
                tenant_id: String::new(),
                tree_size: 0,
                events: 0,
                purged: 0,
                verified: false,
                first_bad_event: None,
                failure: Some("the export is empty: no checkpoint".into()),
                extends_tree_size: None,
            };
        };
        let cp = cp.checkpoint;
        let operator = cp.is_operator();
        // The operator log has no retention: no purge covers a missing body there.
        let purge_cover = if operator { None } else { self.purge_cover };
        let size = self.builder.size();
        let mut first_bad = self.first_bad;
        // The first purged leaf that no recorded purge covers.
        let uncovered = self.purged_runs.iter().find_map(|(start, end, first_id)| {
            let from = purge_cover.map_or(*start, |c| (*start).max(c + 1));
            (from < *end).then(|| (from, from == *start, first_id.clone()))
        });
        if let Some((leaf_index, known_id, event_id)) = &uncovered {
            let candidate = BadEvent {
                leaf_index: *leaf_index,
                event_id: if *known_id {
                    event_id.clone()
                } else {
                    String::new()
                },
                reason: "the event body is missing and no recorded purge covers it".into(),
            };
            if first_bad
                .as_ref()
                .is_none_or(|b| b.leaf_index > *leaf_index)
            {
                first_bad = Some(candidate);
            }
        }
        let failure = if size != cp.tree_size {
            Some(format!(
                "the export has {size} leaves; the checkpoint covers {}",
                cp.tree_size
            ))
        } else if self.builder.root() != cp.root_hash {
            Some("the recomputed root does not match the signed checkpoint".into())
        } else if uncovered.is_some() {
            Some("an event body was removed outside retention".into())
        } else if first_bad.is_some() {
            Some("an event does not match its leaf".into())
        } else {
            match &self.since {
                Some((old, _)) if size < old.tree_size => Some(format!(
                    "the export has {size} leaves, fewer than the older checkpoint's {}: the log \
                     was truncated",
                    old.tree_size
                )),
                Some((old, root)) if *root != Some(old.root_hash) => Some(format!(
                    "the export's first {} leaves do not hash to the older checkpoint's root: \
                     the log was rewritten",
                    old.tree_size
                )),
                _ => None,
            }
        };
        VerifyReport {
            log: if operator { "operator" } else { "tenant" },
            tenant_id: cp.tenant_id,
            tree_size: size,
            events: self.events,
            purged: self.purged,
            verified: failure.is_none(),
            first_bad_event: first_bad,
            failure,
            extends_tree_size: self.since.map(|(old, _)| old.tree_size),
        }
    }
}
