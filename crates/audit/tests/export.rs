//! Offline verification of an export: accepts the real log, names the first tampered event.
#![allow(clippy::unwrap_used)]

use bulkhead_audit::export::{ExportLine, ExportVerifier};
use bulkhead_audit::tree::{self, RootBuilder};
use bulkhead_audit::{AuditEvent, Checkpoint, LogSigningKey, SequencedEvent, SignedCheckpoint};

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        event_id: format!("evt_{i:026}"),
        timestamp: "2026-12-01T08:00:00.000001Z".into(),
        tenant_id: "tnt_a".into(),
        actor_id: "key_x".into(),
        actor_type: "api_key".into(),
        action: "session.create".into(),
        resource_id: Some(format!("sess_{i}")),
        outcome: "success".into(),
        ip_address: Some("127.0.0.1".into()),
        user_agent: None,
        request_id: Some("req_x".into()),
        delegation: None,
        metadata: serde_json::json!({ "i": i }),
    }
}

fn export(key: &LogSigningKey, n: u64) -> Vec<String> {
    export_with(key, n, true)
}

/// `n` leaves, leaf 1 purged; the last event records the purge when `record_purge`.
fn export_with(key: &LogSigningKey, n: u64, record_purge: bool) -> Vec<String> {
    let mut builder = RootBuilder::new();
    let mut lines = Vec::new();
    for i in 0..n {
        let mut e = event(i);
        if record_purge && i == n - 1 {
            e.action = "audit.purge".into();
            e.metadata = serde_json::json!({ "purged": 1, "through_leaf": 1 });
        }
        let leaf = SequencedEvent {
            leaf_index: i,
            event: &e,
        }
        .leaf_hash()
        .unwrap();
        builder.push(leaf);
        let line = if i == 1 {
            ExportLine::Purged {
                leaf_index: i,
                leaf_hash: leaf,
                event_id: e.event_id,
            }
        } else {
            ExportLine::Event {
                leaf_index: i,
                leaf_hash: leaf,
                event: Box::new(e),
            }
        };
        lines.push(serde_json::to_string(&line).unwrap());
    }
    let checkpoint = key
        .sign(Checkpoint {
            tenant_id: "tnt_a".into(),
            tree_size: n,
            root_hash: builder.root(),
            timestamp: "2026-12-01T09:00:00Z".into(),
        })
        .unwrap();
    lines.insert(
        0,
        serde_json::to_string(&ExportLine::Checkpoint { checkpoint }).unwrap(),
    );
    lines
}

fn verify(
    key: &LogSigningKey,
    lines: &[String],
) -> Result<bulkhead_audit::export::VerifyReport, String> {
    let mut v = ExportVerifier::new(key.public().clone());
    for (n, line) in lines.iter().enumerate() {
        v.push_line(line)
            .map_err(|e| format!("line {}: {e}", n + 1))?;
    }
    Ok(v.finish())
}

#[test]
fn an_untouched_export_verifies() {
    let key = LogSigningKey::generate();
    let report = verify(&key, &export(&key, 37)).unwrap();
    assert!(report.verified, "{report:?}");
    assert_eq!(
        (report.tree_size, report.events, report.purged),
        (37, 36, 1)
    );
}

#[test]
fn a_body_removed_without_a_recorded_purge_is_named() {
    let key = LogSigningKey::generate();
    let report = verify(&key, &export_with(&key, 12, false)).unwrap();
    assert!(!report.verified);
    assert_eq!(report.first_bad_event.unwrap().leaf_index, 1);
}

#[test]
fn an_edited_body_is_named() {
    let key = LogSigningKey::generate();
    let mut lines = export(&key, 10);
    lines[6] = lines[6].replace("\"success\"", "\"failure\"");
    let report = verify(&key, &lines).unwrap();
    assert!(!report.verified);
    let bad = report.first_bad_event.unwrap();
    assert_eq!(bad.leaf_index, 5);
}

#[test]
fn an_edited_body_with_a_matching_leaf_hash_still_fails_the_root() {
    let key = LogSigningKey::generate();
    let mut lines = export(&key, 10);
    let ExportLine::Event {
        leaf_index,
        mut event,
        ..
    } = bulkhead_audit::export::parse_line(&lines[4]).unwrap()
    else {
        panic!()
    };
    event.outcome = "failure".into();
    let leaf_hash = SequencedEvent {
        leaf_index,
        event: &event,
    }
    .leaf_hash()
    .unwrap();
    lines[4] = serde_json::to_string(&ExportLine::Event {
        leaf_index,
        leaf_hash,
        event,
    })
    .unwrap();
    let report = verify(&key, &lines).unwrap();
    assert!(!report.verified);
    assert!(report.failure.unwrap().contains("root"));
}

#[test]
fn reordered_dropped_and_foreign_lines_are_refused() {
    let key = LogSigningKey::generate();
    let lines = export(&key, 10);
    let mut swapped = lines.clone();
    swapped.swap(3, 4);
    assert!(verify(&key, &swapped).is_err());
    let mut dropped = lines.clone();
    dropped.remove(5);
    assert!(verify(&key, &dropped).is_err());
    let truncated = &lines[..8];
    assert!(!verify(&key, truncated).unwrap().verified);
    let foreign = lines
        .iter()
        .map(|l| {
            l.replace(
                "\"tenant_id\":\"tnt_a\",\"actor",
                "\"tenant_id\":\"tnt_b\",\"actor",
            )
        })
        .collect::<Vec<_>>();
    assert!(verify(&key, &foreign).is_err());
    assert!(
        verify(&LogSigningKey::generate(), &lines).is_err(),
        "another key"
    );
    assert!(verify(&key, &lines[1..]).is_err(), "no checkpoint first");
    assert!(!verify(&key, &[]).unwrap().verified);
    let mut unknown = lines.clone();
    unknown[2] = unknown[2].replacen('{', "{\"extra\":1,", 1);
    assert!(verify(&key, &unknown).is_err());
    let _ = tree::empty_root();
}

/// An export of exactly `events` (every body present) and its checkpoint.
fn plain(key: &LogSigningKey, events: &[AuditEvent]) -> (Vec<String>, SignedCheckpoint) {
    let mut builder = RootBuilder::new();
    let mut lines = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let leaf_index = i as u64;
        let leaf_hash = SequencedEvent {
            leaf_index,
            event: e,
        }
        .leaf_hash()
        .unwrap();
        builder.push(leaf_hash);
        let line = ExportLine::Event {
            leaf_index,
            leaf_hash,
            event: Box::new(e.clone()),
        };
        lines.push(serde_json::to_string(&line).unwrap());
    }
    let checkpoint = key
        .sign(Checkpoint {
            tenant_id: "tnt_a".into(),
            tree_size: events.len() as u64,
            root_hash: builder.root(),
            timestamp: "2026-12-01T09:00:00Z".into(),
        })
        .unwrap();
    lines.insert(
        0,
        serde_json::to_string(&ExportLine::Checkpoint {
            checkpoint: checkpoint.clone(),
        })
        .unwrap(),
    );
    (lines, checkpoint)
}

fn verify_since(
    key: &LogSigningKey,
    old: &SignedCheckpoint,
    lines: &[String],
) -> bulkhead_audit::export::VerifyReport {
    let mut verifier = ExportVerifier::new(key.public().clone())
        .since(old)
        .unwrap();
    for line in lines {
        verifier.push_line(line).unwrap();
    }
    verifier.finish()
}

#[test]
fn an_export_must_extend_the_older_checkpoint_it_is_checked_against() {
    let key = LogSigningKey::generate();
    let events: Vec<AuditEvent> = (0..5).map(event).collect();
    let (_, old) = plain(&key, &events[..3]);
    let (_, empty) = plain(&key, &[]);

    // Honest growth: extends both the old checkpoint and the empty one.
    let (grown, _) = plain(&key, &events);
    let report = verify_since(&key, &old, &grown);
    assert!(report.verified, "{report:?}");
    assert_eq!(report.extends_tree_size, Some(3));
    assert!(verify_since(&key, &empty, &grown).verified);
    // The same size is an extension of itself.
    let (same, _) = plain(&key, &events[..3]);
    assert!(verify_since(&key, &old, &same).verified);

    // Leaf 2 replaced and the log regrown under a fresh signature: fine alone, not since old.
    let mut rewritten = events.clone();
    rewritten[2] = event(99);
    let (regrown, _) = plain(&key, &rewritten);
    assert!(verify(&key, &regrown).unwrap().verified);
    let report = verify_since(&key, &old, &regrown);
    assert!(!report.verified);
    assert!(
        report.failure.as_deref().unwrap().contains("was rewritten"),
        "{report:?}"
    );

    // Truncated below the old size.
    let (short, _) = plain(&key, &events[..2]);
    let report = verify_since(&key, &old, &short);
    assert!(!report.verified);
    assert!(
        report.failure.as_deref().unwrap().contains("truncated"),
        "{report:?}"
    );

    // An old checkpoint that does not verify is refused up front; one of another log at the
    // checkpoint line.
    let mut forged = old.clone();
    forged.checkpoint.tree_size = 2;
    assert!(ExportVerifier::new(key.public().clone())
        .since(&forged)
        .is_err());
    let other = key
        .sign(Checkpoint {
            tenant_id: "tnt_b".into(),
            ..old.checkpoint
        })
        .unwrap();
    let mut verifier = ExportVerifier::new(key.public().clone())
        .since(&other)
        .unwrap();
    assert!(verifier.push_line(&grown[0]).is_err());
}
