//! The operator audit log is tamper-evident like a tenant's (issue 19): every operator event is
//! a leaf of a Merkle tree, checkpoints are signed under the operator header, the export
//! verifies offline with `bulkhead audit verify`, and an event edited by the owner role fails it.

use std::process::Command;

use bulkhead_audit::checkpoint::{OPERATOR_CHECKPOINT_HEADER, OPERATOR_LOG_ID};
use bulkhead_audit::export::{ExportLine, ExportVerifier, VerifyReport};
use bulkhead_audit::{LogPublicKey, SignedCheckpoint};
use bulkhead_test_support::{spawn_app, TestApp, TestOperator};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::operator::{operator_key, ALL};

async fn log_key(app: &TestApp) -> LogPublicKey {
    let published: Value = app
        .client
        .get(app.url("/.well-known/bulkhead-audit-key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    LogPublicKey::from_config_str(published["public_key"].as_str().unwrap()).unwrap()
}

async fn export_text(op: &TestOperator, key: &str) -> String {
    let (status, headers, body) = op
        .request_raw(Method::GET, "/operator/v1/audit/export", Some(key))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    String::from_utf8(body.to_vec()).unwrap()
}

fn verify_text(key: &LogPublicKey, text: &str) -> Result<VerifyReport, String> {
    let mut verifier = ExportVerifier::new(key.clone());
    for (n, line) in text.lines().enumerate() {
        verifier
            .push_line(line)
            .map_err(|e| format!("line {}: {e}", n + 1))?;
    }
    Ok(verifier.finish())
}

/// `bulkhead audit verify` on `text`: exit status and output.
fn cli_verify(key: &LogPublicKey, text: &str) -> (bool, String) {
    cli_verify_since(key, text, None)
}

/// `bulkhead audit verify` on `text`, with `--since` a file holding `since` (pretty JSON, as
/// `bulkhead operator audit checkpoint` prints it).
fn cli_verify_since(
    key: &LogPublicKey,
    text: &str,
    since: Option<&SignedCheckpoint>,
) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("operator.ndjson");
    std::fs::write(&path, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
    command
        .args(["audit", "verify"])
        .arg(&path)
        .args(["--log-key", &key.to_config_string()]);
    if let Some(since) = since {
        let old = dir.path().join("old-checkpoint.json");
        std::fs::write(&old, serde_json::to_string_pretty(since).unwrap()).unwrap();
        command.arg("--since").arg(&old);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A few operator actions: a tenant made, a refused credential, a refused scope.
async fn some_actions(op: &TestOperator, key: &str) {
    let (status, body) = op
        .request(
            Method::POST,
            "/operator/v1/tenants",
            Some(key),
            Some(json!({ "slug": "logged", "name": "Logged" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = op
        .request(
            Method::GET,
            "/operator/v1/tenants",
            Some("bk_op_nope"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, reader) = operator_key(op, &["tenants:read"]).await;
    let (status, _) = op
        .request(
            Method::GET,
            "/operator/v1/audit/export",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn operator_checkpoints_are_signed_under_their_own_header_and_only_grow() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let key_text = log_key(&app).await;
    let (_, key) = operator_key(&op, ALL).await;
    let (status, _) = op
        .request(
            Method::GET,
            "/operator/v1/audit/checkpoints/latest",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no checkpoint yet");
    some_actions(&op, &key).await;

    let (status, first) = op
        .request(
            Method::POST,
            "/operator/v1/audit/checkpoints",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first: SignedCheckpoint = serde_json::from_value(first).unwrap();
    let checkpoint = key_text.verify(&first).unwrap();
    assert_eq!(checkpoint.tenant_id, OPERATOR_LOG_ID);
    assert!(checkpoint
        .signed_text()
        .unwrap()
        .starts_with(&format!("{OPERATOR_CHECKPOINT_HEADER}\nlog operator\n")));
    // Every event so far is in it: key made, tenant.create started and success, the refusals.
    let owner = app.db.owner_pool().await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM bulkhead.operator_audit_events")
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(checkpoint.tree_size, events as u64);
    // The signature does not verify as a tenant's checkpoint of the same tree.
    let mut as_tenant = first.clone();
    as_tenant.checkpoint.tenant_id = "tnt_01jd7x5q9r8m3k2h1g0f9e8d7c".into();
    assert!(key_text.verify(&as_tenant).is_err());

    // Nothing new: the same checkpoint (200), which `latest` answers too.
    let (status, again) = op
        .request(
            Method::POST,
            "/operator/v1/audit/checkpoints",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_value::<SignedCheckpoint>(again).unwrap(),
        first
    );
    let (status, latest) = op
        .request(
            Method::GET,
            "/operator/v1/audit/checkpoints/latest",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_value::<SignedCheckpoint>(latest).unwrap(),
        first
    );

    // One more action: a larger checkpoint.
    operator_key(&op, &["tenants:read"]).await;
    let (status, second) = op
        .request(
            Method::POST,
            "/operator/v1/audit/checkpoints",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let second: SignedCheckpoint = serde_json::from_value(second).unwrap();
    assert_eq!(second.checkpoint.tree_size, first.checkpoint.tree_size + 1);
    key_text.verify(&second).unwrap();
    op.stop().await;
}

#[tokio::test]
async fn the_operator_export_verifies_and_an_event_edited_by_the_owner_fails_it() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let log_key = log_key(&app).await;
    let (_, key) = operator_key(&op, ALL).await;
    some_actions(&op, &key).await;

    let good = export_text(&op, &key).await;
    let report = verify_text(&log_key, &good).unwrap();
    assert!(report.verified, "{report:?}");
    assert_eq!(report.log, "operator");
    assert_eq!(report.tenant_id, OPERATOR_LOG_ID);
    assert!(report.events >= 5, "{report:?}");
    assert!(good.contains("\"action\":\"tenant.create\""));
    assert!(good.contains("\"action\":\"operator.auth\""));
    let (ok, out) = cli_verify(&log_key, &good);
    assert!(ok, "{out}");
    assert!(out.contains("\"log\": \"operator\""), "{out}");

    let owner = app.db.owner_pool().await;
    // The log is append-only even for the owner...
    let err = sqlx::query("UPDATE bulkhead.operator_audit_events SET reason = 'x'")
        .execute(&owner)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501")
    );
    // ...until the owner switches the trigger off and rewrites who made the tenant.
    let target: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM bulkhead.operator_audit_events \
         WHERE action = 'tenant.create' AND outcome = 'success'",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    let mut conn = owner.acquire().await.unwrap();
    for statement in [
        "ALTER TABLE bulkhead.operator_audit_events \
         DISABLE TRIGGER operator_audit_events_append_only",
        "UPDATE bulkhead.operator_audit_events SET actor = 'cli:someone-else' WHERE id = $1",
        "ALTER TABLE bulkhead.operator_audit_events \
         ENABLE TRIGGER operator_audit_events_append_only",
    ] {
        let query = sqlx::query(statement);
        let query = if statement.contains("$1") {
            query.bind(target)
        } else {
            query
        };
        query.execute(&mut *conn).await.unwrap();
    }
    drop(conn);
    let edited = export_text(&op, &key).await;
    let report = verify_text(&log_key, &edited).unwrap();
    assert!(!report.verified, "{report:?}");
    let bad = report.first_bad_event.expect("the edited event is named");
    assert_eq!(
        bad.event_id,
        bulkhead_core::OperatorEventId::from_uuid(target).to_string()
    );
    let (ok, out) = cli_verify(&log_key, &edited);
    assert!(!ok, "{out}");
    assert!(out.contains("does not verify"), "{out}");
    // The good export still verifies against the checkpoint it carries, and a forged leaf hash
    // in the edited one changes the root instead.
    assert!(verify_text(&log_key, &good).unwrap().verified);

    // A deleted event (its leaf kept): events and leaves disagree, so nothing is signed or
    // exported.
    owner_sql(
        &owner,
        &[
            "ALTER TABLE bulkhead.operator_audit_events \
             DISABLE TRIGGER operator_audit_events_append_only",
            "DELETE FROM bulkhead.operator_audit_events WHERE id = $1",
            "ALTER TABLE bulkhead.operator_audit_events \
             ENABLE TRIGGER operator_audit_events_append_only",
        ],
        target,
    )
    .await;
    assert_refused(&op, &key, Method::GET, "/operator/v1/audit/export").await;
    op.stop().await;
}

/// Runs `statements` in order on one owner connection, binding `id` where one says `$1`.
async fn owner_sql(owner: &sqlx::PgPool, statements: &[&str], id: uuid::Uuid) {
    let mut conn = owner.acquire().await.unwrap();
    for statement in statements {
        let query = sqlx::query(statement);
        let query = if statement.contains("$1") {
            query.bind(id)
        } else {
            query
        };
        query.execute(&mut *conn).await.unwrap();
    }
}

/// The refusal of a log that fails its consistency check: a 503 problem that says so.
async fn assert_refused(op: &TestOperator, key: &str, method: Method, path: &str) {
    let (status, body) = op.request(method, path, Some(key), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["type"], "https://bulkhead.dev/problems/audit-log-inconsistent",
        "{body}"
    );
    assert_eq!(body["title"], "Audit log failed its consistency check");
}

/// The owner, triggers off, deletes every leaf from `from` on with its event (and, with
/// `checkpoints`, every stored checkpoint).
async fn truncate(owner: &sqlx::PgPool, from: i64, checkpoints: bool) {
    let mut statements = vec![
        "ALTER TABLE bulkhead.operator_audit_events \
         DISABLE TRIGGER operator_audit_events_append_only",
        "ALTER TABLE bulkhead.operator_audit_leaves \
         DISABLE TRIGGER operator_audit_leaves_append_only",
        "ALTER TABLE bulkhead.operator_audit_checkpoints \
         DISABLE TRIGGER operator_audit_checkpoints_append_only",
        "CREATE TEMP TABLE doomed AS SELECT event_id FROM bulkhead.operator_audit_leaves \
         WHERE leaf_index >= $1",
        "DELETE FROM bulkhead.operator_audit_leaves WHERE event_id IN (SELECT event_id FROM doomed)",
        "DELETE FROM bulkhead.operator_audit_events WHERE id IN (SELECT event_id FROM doomed)",
    ];
    if checkpoints {
        statements.push("DELETE FROM bulkhead.operator_audit_checkpoints");
    }
    statements.extend([
        "DROP TABLE doomed",
        "ALTER TABLE bulkhead.operator_audit_events \
         ENABLE TRIGGER operator_audit_events_append_only",
        "ALTER TABLE bulkhead.operator_audit_leaves \
         ENABLE TRIGGER operator_audit_leaves_append_only",
        "ALTER TABLE bulkhead.operator_audit_checkpoints \
         ENABLE TRIGGER operator_audit_checkpoints_append_only",
    ]);
    let mut conn = owner.acquire().await.unwrap();
    for statement in statements {
        let query = sqlx::query(statement);
        let query = if statement.contains("$1") {
            query.bind(from)
        } else {
            query
        };
        query.execute(&mut *conn).await.unwrap();
    }
}

async fn checkpoint_count(owner: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM bulkhead.operator_audit_checkpoints")
        .fetch_one(owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_log_truncated_and_regrown_by_the_owner_gets_no_new_checkpoint() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, ALL).await;
    some_actions(&op, &key).await;
    let (status, first) = op
        .request(
            Method::POST,
            "/operator/v1/audit/checkpoints",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first: SignedCheckpoint = serde_json::from_value(first).unwrap();
    let size = first.checkpoint.tree_size as i64;
    let owner = app.db.owner_pool().await;
    let stored = checkpoint_count(&owner).await;

    // The owner deletes the tail event (the last key made) and its leaf; a new event takes the
    // freed index: the same size, another root.
    truncate(&owner, size - 1, false).await;
    operator_key(&op, &["tenants:read"]).await;
    assert_refused(&op, &key, Method::POST, "/operator/v1/audit/checkpoints").await;
    assert_refused(&op, &key, Method::GET, "/operator/v1/audit/export").await;
    // Grown past the signed size: still refused.
    operator_key(&op, &["tenants:read"]).await;
    assert_refused(&op, &key, Method::POST, "/operator/v1/audit/checkpoints").await;
    assert_refused(&op, &key, Method::GET, "/operator/v1/audit/export").await;
    assert_eq!(checkpoint_count(&owner).await, stored, "nothing was signed");
    op.stop().await;
}

#[tokio::test]
async fn audit_verify_since_an_old_checkpoint_catches_a_log_truncated_and_regrown() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let log_key = log_key(&app).await;
    let (_, key) = operator_key(&op, ALL).await;
    some_actions(&op, &key).await;
    let old_export = export_text(&op, &key).await;
    let Ok(ExportLine::Checkpoint { checkpoint: old }) =
        bulkhead_audit::export::parse_line(old_export.lines().next().unwrap())
    else {
        panic!("the export begins with its checkpoint");
    };
    let old_size = old.checkpoint.tree_size as i64;

    // Honest growth extends the old checkpoint.
    operator_key(&op, &["tenants:read"]).await;
    let grown = export_text(&op, &key).await;
    let (ok, out) = cli_verify_since(&log_key, &grown, Some(&old));
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("\"extends_tree_size\": {old_size}")),
        "{out}"
    );

    // The owner truncates into what the old checkpoint covers, deletes the checkpoints the
    // server kept (so it has nothing to compare with), and the log regrows.
    let owner = app.db.owner_pool().await;
    truncate(&owner, old_size - 1, true).await;
    operator_key(&op, &["tenants:read"]).await;
    operator_key(&op, &["tenants:read"]).await;
    let forged = export_text(&op, &key).await;
    // Alone, the forged export verifies: it carries a fresh signature.
    assert!(verify_text(&log_key, &forged).unwrap().verified);
    let (ok, out) = cli_verify_since(&log_key, &forged, Some(&old));
    assert!(!ok, "{out}");
    assert!(out.contains("does not verify"), "{out}");
    assert!(out.contains("the log was"), "{out}");
    // An old checkpoint that does not verify is refused.
    let mut bad = old.clone();
    bad.checkpoint.tree_size += 1;
    let (ok, out) = cli_verify_since(&log_key, &grown, Some(&bad));
    assert!(!ok, "{out}");
    assert!(out.contains("--since"), "{out}");
    op.stop().await;
}

#[tokio::test]
async fn the_export_the_cli_writes_verifies() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, ALL).await;
    some_actions(&op, &key).await;
    // Through the store functions the CLI calls (the CLI itself needs the database flags of a
    // deployment): the same lines as the route.
    let (checkpoint, _) = op
        .owner
        .operator_checkpoint(app.state.audit().key(), chrono::Utc::now())
        .await
        .unwrap();
    let size = checkpoint.checkpoint.tree_size;
    let mut text = serde_json::to_string(&ExportLine::Checkpoint { checkpoint }).unwrap();
    text.push('\n');
    text.push_str(
        &String::from_utf8(
            bulkhead_server::service::operators::export_lines(&op.owner, 0, size)
                .await
                .unwrap(),
        )
        .unwrap(),
    );
    let report = verify_text(&log_key(&app).await, &text).unwrap();
    assert!(report.verified, "{report:?}");
    assert_eq!(report.tree_size, size);
    op.stop().await;
}
