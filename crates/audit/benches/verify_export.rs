//! Offline verification speed: generates an export of AUDIT_BENCH_EVENTS (default 1,000,000)
//! events to a temporary file, then verifies it line by line as `bulkhead audit verify` does.
//! A bench binary, not a timed test: it prints figures.
//!
//! `cargo bench -p bulkhead-audit --bench verify_export`
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufWriter, Write};
use std::time::Instant;

use bulkhead_audit::export::{ExportLine, ExportVerifier};
use bulkhead_audit::tree::RootBuilder;
use bulkhead_audit::{AuditEvent, Checkpoint, LogSigningKey, SequencedEvent};

fn main() {
    let n: u64 = std::env::var("AUDIT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let key = LogSigningKey::generate();
    let dir = std::env::temp_dir().join(format!("bulkhead-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events_path = dir.join("events.tmp");
    let export_path = dir.join("export.ndjson");

    let t = Instant::now();
    let mut builder = RootBuilder::new();
    let mut body = BufWriter::new(std::fs::File::create(&events_path).unwrap());
    for i in 0..n {
        let event = AuditEvent {
            event_id: format!("evt_{i:026}"),
            timestamp: "2026-12-01T08:00:00.123456Z".into(),
            tenant_id: "tnt_01jbench000000000000000000".into(),
            actor_id: "key_01jbench000000000000000000".into(),
            actor_type: "api_key".into(),
            action: "session.update".into(),
            resource_id: Some(format!("sess_{i:026}")),
            outcome: "success".into(),
            ip_address: Some("203.0.113.7".into()),
            user_agent: Some("agent-sdk/1.4 (linux)".into()),
            request_id: Some(format!("req_{i:026}")),
            delegation: None,
            metadata: serde_json::json!({ "fields": ["title", "state"], "n": i }),
        };
        let leaf_hash = SequencedEvent {
            leaf_index: i,
            event: &event,
        }
        .leaf_hash()
        .unwrap();
        builder.push(leaf_hash);
        serde_json::to_writer(
            &mut body,
            &ExportLine::Event {
                leaf_index: i,
                leaf_hash,
                event: Box::new(event),
            },
        )
        .unwrap();
        body.write_all(b"\n").unwrap();
    }
    body.flush().unwrap();
    drop(body);
    let checkpoint = key
        .sign(Checkpoint {
            tenant_id: "tnt_01jbench000000000000000000".into(),
            tree_size: n,
            root_hash: builder.root(),
            timestamp: "2026-12-01T09:00:00.000000Z".into(),
        })
        .unwrap();
    let mut out = BufWriter::new(std::fs::File::create(&export_path).unwrap());
    serde_json::to_writer(&mut out, &ExportLine::Checkpoint { checkpoint }).unwrap();
    out.write_all(b"\n").unwrap();
    std::io::copy(&mut std::fs::File::open(&events_path).unwrap(), &mut out).unwrap();
    out.flush().unwrap();
    drop(out);
    std::fs::remove_file(&events_path).ok();
    let bytes = std::fs::metadata(&export_path).unwrap().len();
    println!(
        "generated {n} events ({:.0} MB) in {:.1} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let mut verifier = ExportVerifier::new(key.public().clone());
    let reader =
        std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&export_path).unwrap());
    for line in reader.lines() {
        verifier.push_line(&line.unwrap()).unwrap();
    }
    let report = verifier.finish();
    let secs = t.elapsed().as_secs_f64();
    assert!(report.verified, "{report:?}");
    println!(
        "verified {} events in {secs:.2} s = {:.0} events/s ({:.0} MB/s)",
        report.tree_size,
        report.tree_size as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
    std::fs::remove_dir_all(&dir).ok();
}
