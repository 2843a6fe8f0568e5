//! The tenant's verifiable audit log over HTTP: every action leaves exactly one event, the log
//! is the tenant's own, tampering is detected by export verification and by proofs, and bad
//! parameters are problems, never 500s.

use std::process::Command;

use bulkhead_audit::export::{ExportVerifier, VerifyReport};
use bulkhead_audit::tree;
use bulkhead_audit::{AuditEvent, LogPublicKey, SequencedEvent, SignedCheckpoint};
use bulkhead_server::service::audit_log::{AuditService, AuthFailure};
use bulkhead_store::audit::Outcome;
use bulkhead_test_support::{spawn_app, TestApp, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::keys::{agent, mint_key};
use crate::helpers::webhooks::create_endpoint;
use crate::helpers::{as_tenant, call_as, create_session, get_ok_json, problem};

/// Every event of the tenant, through the API (pages of 200).
async fn all_events(app: &TestApp, tenant: &TestTenant) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit/events?limit=200&cursor={c}"),
            None => "/v1/audit/events?limit=200".to_owned(),
        };
        let page = get_ok_json(app, tenant, &path).await;
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

async fn checkpoint_now(app: &TestApp, tenant: &TestTenant) -> SignedCheckpoint {
    let response = call_as(app, tenant, Method::POST, "/v1/audit/checkpoints", None).await;
    // 201 for a new checkpoint, 200 for the latest when the tree has not grown.
    assert!(
        [StatusCode::CREATED, StatusCode::OK].contains(&response.status()),
        "{}",
        response.status()
    );
    response.json().await.unwrap()
}

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
    assert_eq!(published["algorithm"], "ed25519");
    LogPublicKey::from_config_str(published["public_key"].as_str().unwrap()).unwrap()
}

async fn export_text(app: &TestApp, tenant: &TestTenant) -> String {
    let response = call_as(app, tenant, Method::GET, "/v1/audit/export", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    response.text().await.unwrap()
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

/// Runs `bulkhead audit verify` on `text`; its exit status and output.
fn cli_verify(key: &LogPublicKey, text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.ndjson");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["audit", "verify"])
        .arg(&path)
        .args(["--log-key", &key.to_config_string()])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn event_of(listed: &Value) -> (u64, AuditEvent) {
    let mut v = listed.clone();
    let index = v["leaf_index"].as_u64().expect("sequenced");
    v.as_object_mut().unwrap().remove("leaf_index");
    (index, serde_json::from_value(v).unwrap())
}

async fn inclusion_holds(
    app: &TestApp,
    tenant: &TestTenant,
    listed: &Value,
    cp: &SignedCheckpoint,
) -> bool {
    let (index, event) = event_of(listed);
    let size = cp.checkpoint.tree_size;
    let proof = get_ok_json(
        app,
        tenant,
        &format!(
            "/v1/audit/proofs/inclusion?event_id={}&tree_size={size}",
            event.event_id
        ),
    )
    .await;
    assert_eq!(proof["leaf_index"].as_u64(), Some(index));
    let path: Vec<tree::Hash> = proof["audit_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| bulkhead_audit::hex::decode_hash(h.as_str().unwrap()).unwrap())
        .collect();
    // The client hashes the event it was shown; the server's stored leaf hash is not trusted.
    let leaf = SequencedEvent {
        leaf_index: index,
        event: &event,
    }
    .leaf_hash()
    .unwrap();
    tree::verify_inclusion(index, size, &leaf, &path, &cp.checkpoint.root_hash).is_ok()
}

/// Waits for the events written since `before` (the auth-failure flusher runs in the background).
async fn new_events(
    app: &TestApp,
    tenant: &TestTenant,
    before: usize,
    expect: usize,
) -> Vec<Value> {
    // Queued events are written by the flusher every 500 ms; under a loaded CI machine a write
    // can take seconds, so wait up to 10 s before declaring an event missing.
    for _ in 0..200 {
        app.state
            .audit()
            .flush_auth_failures(app.state.store())
            .await;
        let all = all_events(app, tenant).await;
        if all.len() >= before + expect {
            return all[before..].to_vec();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    all_events(app, tenant).await[before..].to_vec()
}

#[tokio::test]
async fn every_action_emits_exactly_one_event_with_the_right_fields() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let session = create_session(&app, &acme, "s").await;
    let session_id = session["id"].as_str().unwrap().to_owned();
    let key_id = agent(&app, &acme, "bot-1", &["sessions:read"]).await.id;
    let other_id = agent(&app, &acme, "bot-2", &["sessions:read"]).await.id;

    // (name, request, action, outcome, resource)
    type Step = (
        &'static str,
        reqwest::RequestBuilder,
        &'static str,
        &'static str,
        Option<String>,
    );
    // The key with its last checksum character changed (to one it is not: a fixed `x` would
    // leave one key in 62 unchanged, and valid).
    let last = if acme.key.ends_with('x') { "y" } else { "x" };
    let bad_key = format!("{}{last}", &acme.key[..acme.key.len() - 1]);
    let steps: Vec<Step> = vec![
        (
            "session create",
            as_tenant(&app, &acme, Method::POST, "/v1/sessions")
                .json(&json!({ "agent_id": "a", "title": "t" })),
            "session.create",
            "success",
            None,
        ),
        (
            "session update",
            as_tenant(
                &app,
                &acme,
                Method::PATCH,
                &format!("/v1/sessions/{session_id}"),
            )
            .json(&json!({ "title": "u" })),
            "session.update",
            "success",
            Some(session_id.clone()),
        ),
        (
            "session delete",
            as_tenant(
                &app,
                &acme,
                Method::DELETE,
                &format!("/v1/sessions/{session_id}"),
            ),
            "session.delete",
            "success",
            Some(session_id.clone()),
        ),
        (
            "api key create",
            as_tenant(&app, &acme, Method::POST, "/v1/api-keys")
                .json(&json!({ "scopes": ["sessions:read"], "principal": "bot-3" })),
            "api_key.create",
            "success",
            None,
        ),
        (
            "api key update",
            as_tenant(
                &app,
                &acme,
                Method::PATCH,
                &format!("/v1/api-keys/{key_id}"),
            )
            .json(&json!({ "description": "d" })),
            "api_key.update",
            "success",
            Some(key_id.clone()),
        ),
        (
            "api key rotate",
            as_tenant(
                &app,
                &acme,
                Method::POST,
                &format!("/v1/api-keys/{key_id}/rotate"),
            ),
            "api_key.rotate",
            "success",
            Some(key_id.clone()),
        ),
        (
            "api key revoke",
            as_tenant(
                &app,
                &acme,
                Method::POST,
                &format!("/v1/api-keys/{other_id}/revoke"),
            ),
            "api_key.revoke",
            "success",
            Some(other_id.clone()),
        ),
        (
            "api key revoke-all",
            as_tenant(&app, &acme, Method::POST, "/v1/api-keys/revoke-all")
                .json(&json!({ "principal": "bot-3" })),
            "api_key.revoke",
            "success",
            None,
        ),
        (
            "key policy put",
            as_tenant(&app, &acme, Method::PUT, "/v1/key-policy").json(&json!({
                "grace_seconds": 3600, "max_age_days": 30, "deadline_warning_seconds": 600
            })),
            "key_policy.update",
            "success",
            None,
        ),
        (
            "auth failure",
            app.client
                .get(app.tenant_url("acme", "/v1/sessions"))
                .bearer_auth(&bad_key)
                .header("user-agent", "audit-test/1"),
            "auth.failure",
            "failure",
            None,
        ),
    ];
    for (name, request, action, outcome, resource) in steps {
        let before = all_events(&app, &acme).await.len();
        let status = request.send().await.unwrap().status();
        assert!(
            status.is_success() || (action == "auth.failure" && status == StatusCode::UNAUTHORIZED),
            "{name}: {status}"
        );
        let new = new_events(&app, &acme, before, 1).await;
        assert_eq!(new.len(), 1, "{name}: exactly one event, got {new:?}");
        let e = &new[0];
        assert_eq!(e["action"], action, "{name}");
        assert_eq!(e["outcome"], outcome, "{name}");
        assert_eq!(e["tenant_id"], acme.id.to_string(), "{name}");
        assert!(
            e["event_id"].as_str().unwrap().starts_with("evt_"),
            "{name}"
        );
        assert!(
            e["request_id"].as_str().unwrap().starts_with("req_"),
            "{name}"
        );
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'), "{name}");
        if let Some(resource) = resource {
            assert_eq!(e["resource_id"], resource, "{name}");
        }
        if action == "auth.failure" {
            assert_eq!(e["actor_type"], "anonymous");
            assert_eq!(e["actor_id"], "anonymous");
            assert!(e["metadata"]["reason"].is_string(), "{e}");
            assert_eq!(e["ip_address"], "127.0.0.1");
            assert_eq!(e["user_agent"], "audit-test/1");
        } else {
            assert_eq!(e["actor_type"], "api_key", "{name}");
            assert!(
                e["actor_id"].as_str().unwrap().starts_with("key_"),
                "{name}"
            );
        }
        // No secret reaches the log.
        assert!(!e.to_string().contains(&acme.key), "{name}");
        assert!(!e.to_string().contains("bk_live_"), "{name}: {e}");
    }
}

#[tokio::test]
async fn a_full_auth_failure_queue_counts_what_it_dropped() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let service = AuditService::with_capacity(bulkhead_audit::LogSigningKey::generate(), 2);
    // Five addresses: five entries (one address would be one counted entry).
    for i in 0..5u8 {
        service.record_auth_failure(AuthFailure {
            action: "auth.failure",
            actor: None,
            tenant: acme.id,
            key_id: None,
            reason: "UnknownKey".into(),
            outcome: Outcome::Failure,
            ip_address: Some(std::net::IpAddr::from([192, 0, 2, i])),
            user_agent: None,
            request_id: Default::default(),
        });
    }
    assert_eq!(service.flush_auth_failures(app.state.store()).await, 3);
    let events = all_events(&app, &acme).await;
    let count = |action: &str| events.iter().filter(|e| e["action"] == action).count();
    assert_eq!(count("auth.failure"), 2);
    let dropped: Vec<_> = events
        .iter()
        .filter(|e| e["action"] == "audit.auth_failures_dropped")
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0]["metadata"]["dropped"], 3);
    assert_eq!(service.flush_auth_failures(app.state.store()).await, 0);
}

#[tokio::test]
async fn committed_events_are_all_in_the_export_and_it_verifies() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    // Committed, no sequencer has run (as after a crash between commit and sequencing).
    for i in 0..12 {
        create_session(&app, &acme, &format!("s{i}")).await;
    }
    let events = all_events(&app, &acme).await;
    assert!(events.iter().all(|e| e["leaf_index"].is_null()));
    let cp = checkpoint_now(&app, &acme).await;
    assert_eq!(cp.checkpoint.tree_size, events.len() as u64);
    let key = log_key(&app).await;
    assert_eq!(key.key_id(), cp.key_id);
    key.verify(&cp).unwrap();
    let latest: SignedCheckpoint =
        serde_json::from_value(get_ok_json(&app, &acme, "/v1/audit/checkpoints/latest").await)
            .unwrap();
    assert_eq!(latest, cp);

    let text = export_text(&app, &acme).await;
    let report = verify_text(&key, &text).unwrap();
    assert!(report.verified, "{report:?}");
    assert_eq!(report.events, events.len() as u64);
    let (ok, out) = cli_verify(&key, &text);
    assert!(ok, "{out}");
    for listed in all_events(&app, &acme).await {
        assert!(inclusion_holds(&app, &acme, &listed, &cp).await);
    }
}

#[tokio::test]
async fn edits_reorders_and_deletions_are_detected() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    for i in 0..8 {
        create_session(&app, &acme, &format!("s{i}")).await;
    }
    let cp1 = checkpoint_now(&app, &acme).await;
    let key = log_key(&app).await;
    let events = all_events(&app, &acme).await;
    let victim = events[5].clone();
    assert!(inclusion_holds(&app, &acme, &victim, &cp1).await);
    let su = app.db.superuser_pool().await;
    let mut conn = su.acquire().await.unwrap();
    // Bypass the append-only triggers, as a superuser can.
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    let (victim_index, victim_event) = event_of(&victim);
    let victim_uuid = bulkhead_core::AuditEventId::parse(&victim_event.event_id)
        .unwrap()
        .uuid();

    // 1. Edit a stored event's body.
    sqlx::query("UPDATE bulkhead.audit_events SET outcome = 'failure' WHERE id = $1")
        .bind(victim_uuid)
        .execute(&mut *conn)
        .await
        .unwrap();
    let report = verify_text(&key, &export_text(&app, &acme).await).unwrap();
    assert!(!report.verified);
    assert_eq!(
        report.first_bad_event.as_ref().unwrap().leaf_index,
        victim_index
    );
    let (ok, out) = cli_verify(&key, &export_text(&app, &acme).await);
    assert!(!ok && out.contains(&victim_event.event_id), "{out}");
    let edited = all_events(&app, &acme)
        .await
        .into_iter()
        .find(|e| e["event_id"] == victim["event_id"])
        .unwrap();
    assert!(
        !inclusion_holds(&app, &acme, &edited, &cp1).await,
        "inclusion proof catches the edit"
    );
    sqlx::query("UPDATE bulkhead.audit_events SET outcome = 'success' WHERE id = $1")
        .bind(victim_uuid)
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(
        verify_text(&key, &export_text(&app, &acme).await)
            .unwrap()
            .verified
    );

    // 2. Reorder two leaves (their hashes and events travel together).
    let tenant = acme.id.uuid();
    // Swap leaves 2 and 3 through a free index.
    for (from, to) in [(2i64, 1_000_000i64), (3, 2), (1_000_000, 3)] {
        sqlx::query("UPDATE bulkhead.audit_leaves SET leaf_index = $3 WHERE tenant_id = $1 AND leaf_index = $2")
            .bind(tenant)
            .bind(from)
            .bind(to)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let reordered = verify_text(&key, &export_text(&app, &acme).await).unwrap();
    assert!(!reordered.verified);
    assert_eq!(reordered.first_bad_event.unwrap().leaf_index, 2);
    let moved = all_events(&app, &acme)
        .await
        .into_iter()
        .find(|e| e["leaf_index"] == 2)
        .unwrap();
    assert!(
        !inclusion_holds(&app, &acme, &moved, &cp1).await,
        "inclusion proof catches the move"
    );
    for (from, to) in [(2i64, 1_000_000i64), (3, 2), (1_000_000, 3)] {
        sqlx::query("UPDATE bulkhead.audit_leaves SET leaf_index = $3 WHERE tenant_id = $1 AND leaf_index = $2")
            .bind(tenant)
            .bind(from)
            .bind(to)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    assert!(
        verify_text(&key, &export_text(&app, &acme).await)
            .unwrap()
            .verified
    );

    // 3. Delete an event's body only, as if retention had removed it: no recorded purge covers
    //    it, so the export no longer verifies.
    let (body_index, body_event) = event_of(&events[6]);
    let body_uuid = bulkhead_core::AuditEventId::parse(&body_event.event_id)
        .unwrap()
        .uuid();
    sqlx::query("DELETE FROM bulkhead.audit_events WHERE id = $1")
        .bind(body_uuid)
        .execute(&mut *conn)
        .await
        .unwrap();
    let report = verify_text(&key, &export_text(&app, &acme).await).unwrap();
    assert!(!report.verified);
    assert_eq!(report.first_bad_event.unwrap().leaf_index, body_index);

    // 4. Delete an event and rebuild the tree without it (a rewritten history), then keep
    //    appending: the new checkpoint is signed and its export verifies on its own, but it is
    //    not consistent with the old checkpoint.
    sqlx::query("DELETE FROM bulkhead.audit_events WHERE id = $1")
        .bind(victim_uuid)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM bulkhead.audit_leaves WHERE tenant_id = $1 AND leaf_index >= $2")
        .bind(tenant)
        .bind(victim_index as i64)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "DELETE FROM bulkhead.audit_nodes WHERE tenant_id = $1 \
         AND (node_index + 1) * (1::bigint << level) > $2",
    )
    .bind(tenant)
    .bind(victim_index as i64)
    .execute(&mut *conn)
    .await
    .unwrap();
    create_session(&app, &acme, "after-1").await;
    create_session(&app, &acme, "after-2").await;
    create_session(&app, &acme, "after-3").await;
    let cp2 = checkpoint_now(&app, &acme).await;
    assert!(cp2.checkpoint.tree_size > cp1.checkpoint.tree_size);
    assert!(
        verify_text(&key, &export_text(&app, &acme).await)
            .unwrap()
            .verified
    );
    let proof = get_ok_json(
        &app,
        &acme,
        &format!(
            "/v1/audit/proofs/consistency?from={}&to={}",
            cp1.checkpoint.tree_size, cp2.checkpoint.tree_size
        ),
    )
    .await;
    let hashes: Vec<tree::Hash> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| bulkhead_audit::hex::decode_hash(h.as_str().unwrap()).unwrap())
        .collect();
    assert!(tree::verify_consistency(
        cp1.checkpoint.tree_size,
        cp2.checkpoint.tree_size,
        &cp1.checkpoint.root_hash,
        &cp2.checkpoint.root_hash,
        &hashes
    )
    .is_err());
    // The same through the CLI.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, v: &Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let old = write("old.json", &serde_json::to_value(&cp1).unwrap());
    let new = write("new.json", &serde_json::to_value(&cp2).unwrap());
    let proof_file = write("proof.json", &proof);
    let run = |old: &std::path::Path, new: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(["audit", "check-consistency"])
            .arg(old)
            .arg(new)
            .arg("--proof")
            .arg(&proof_file)
            .args(["--log-key", &key.to_config_string()])
            .output()
            .unwrap()
    };
    assert!(!run(&old, &new).status.success());
}

#[tokio::test]
async fn an_honest_log_is_consistent_across_checkpoints() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let mut checkpoints = vec![checkpoint_now(&app, &acme).await];
    for round in 0..4 {
        for i in 0..=round {
            create_session(&app, &acme, &format!("r{round}-{i}")).await;
        }
        checkpoints.push(checkpoint_now(&app, &acme).await);
    }
    for pair in checkpoints.windows(2) {
        let (a, b) = (&pair[0].checkpoint, &pair[1].checkpoint);
        let proof = get_ok_json(
            &app,
            &acme,
            &format!(
                "/v1/audit/proofs/consistency?from={}&to={}",
                a.tree_size, b.tree_size
            ),
        )
        .await;
        let hashes: Vec<tree::Hash> = serde_json::from_value::<Vec<String>>(proof["proof"].clone())
            .unwrap()
            .iter()
            .map(|h| bulkhead_audit::hex::decode_hash(h).unwrap())
            .collect();
        tree::verify_consistency(
            a.tree_size,
            b.tree_size,
            &a.root_hash,
            &b.root_hash,
            &hashes,
        )
        .unwrap();
    }
    // The CLI agrees, given the checkpoints, the proof and the published key document.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (first, last) = (&checkpoints[1], checkpoints.last().unwrap());
    let proof = get_ok_json(
        &app,
        &acme,
        &format!(
            "/v1/audit/proofs/consistency?from={}&to={}",
            first.checkpoint.tree_size, last.checkpoint.tree_size
        ),
    )
    .await;
    let published = app
        .client
        .get(app.url("/.well-known/bulkhead-audit-key"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["audit", "check-consistency"])
        .arg(write("old.json", serde_json::to_string(first).unwrap()))
        .arg(write("new.json", serde_json::to_string(last).unwrap()))
        .arg("--proof")
        .arg(write("proof.json", proof.to_string()))
        .arg("--log-key")
        .arg(write("key.json", published))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_log() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    create_session(&app, &acme, "a").await;
    create_session(&app, &globex, "b").await;
    checkpoint_now(&app, &acme).await;
    checkpoint_now(&app, &globex).await;
    let theirs = all_events(&app, &globex).await;
    let their_event = theirs[0]["event_id"].as_str().unwrap().to_owned();

    let export = export_text(&app, &acme).await;
    assert!(!export.contains(&globex.id.to_string()));
    for e in &theirs {
        assert!(!export.contains(e["event_id"].as_str().unwrap()));
    }
    let ours = all_events(&app, &acme).await;
    assert!(ours.iter().all(|e| e["tenant_id"] == acme.id.to_string()));

    // Another tenant's event answers exactly like a missing one.
    let missing = bulkhead_core::AuditEventId::new().to_string();
    let fetch = |id: String| {
        as_tenant(
            &app,
            &acme,
            Method::GET,
            &format!("/v1/audit/proofs/inclusion?event_id={id}&tree_size=1"),
        )
        .send()
    };
    let (theirs_status, theirs_body) = problem(fetch(their_event.clone()).await.unwrap()).await;
    let (missing_status, missing_body) = problem(fetch(missing).await.unwrap()).await;
    assert_eq!(theirs_status, StatusCode::NOT_FOUND);
    assert_eq!(
        (theirs_status, &theirs_body),
        (missing_status, &missing_body)
    );
    // Filtering by their resources finds nothing.
    let filtered = get_ok_json(
        &app,
        &acme,
        &format!(
            "/v1/audit/events?resource_id={}",
            theirs[0]["resource_id"].as_str().unwrap_or("x")
        ),
    )
    .await;
    assert_eq!(filtered["data"], json!([]));
}

#[tokio::test]
async fn filters_and_paging() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let s = create_session(&app, &acme, "one").await;
    for i in 0..4 {
        create_session(&app, &acme, &format!("s{i}")).await;
    }
    let id = s["id"].as_str().unwrap();
    let by_resource = get_ok_json(&app, &acme, &format!("/v1/audit/events?resource_id={id}")).await;
    assert_eq!(by_resource["data"].as_array().unwrap().len(), 1);
    let by_action = get_ok_json(
        &app,
        &acme,
        "/v1/audit/events?action=session.create&outcome=success",
    )
    .await;
    assert_eq!(by_action["data"].as_array().unwrap().len(), 5);
    let page = get_ok_json(
        &app,
        &acme,
        "/v1/audit/events?action=session.create&limit=2",
    )
    .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string());
    let future = get_ok_json(&app, &acme, "/v1/audit/events?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future["data"], json!([]));
    let past = get_ok_json(&app, &acme, "/v1/audit/events?until=2000-01-01T00:00:00Z").await;
    assert_eq!(past["data"], json!([]));
}

#[tokio::test]
async fn bad_parameters_are_problems_and_the_scope_is_required() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_session(&app, &acme, "x").await;
    checkpoint_now(&app, &acme).await;
    for (path, expected) in [
        (
            "/v1/audit/proofs/inclusion?event_id=nope&tree_size=1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/audit/proofs/inclusion?tree_size=1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/audit/proofs/inclusion?event_id=evt_01&tree_size=-1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/audit/proofs/consistency?from=2&to=1",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/audit/proofs/consistency?from=0&to=1",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/audit/proofs/consistency?from=1&to=999999",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/audit/proofs/consistency?from=1&to=18446744073709551615",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/audit/proofs/consistency?from=x&to=1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/audit/events?outcome=maybe",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("/v1/audit/events?limit=0", StatusCode::UNPROCESSABLE_ENTITY),
        (
            "/v1/audit/events?limit=201",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("/v1/audit/events?since=yesterday", StatusCode::BAD_REQUEST),
        (
            "/v1/audit/events?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("/v1/audit/events?cursor=sess_x", StatusCode::BAD_REQUEST),
        ("/v1/audit/events?what=1", StatusCode::BAD_REQUEST),
    ] {
        let response = call_as(&app, &acme, Method::GET, path, None).await;
        let (status, _) = problem(response).await;
        assert_eq!(status, expected, "{path}");
    }
    // An event in the tree but beyond the asked size, and an event not yet sequenced.
    let events = all_events(&app, &acme).await;
    let last = events.last().unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = problem(
        call_as(
            &app,
            &acme,
            Method::GET,
            &format!("/v1/audit/proofs/inclusion?event_id={last}&tree_size=1"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    create_session(&app, &acme, "late").await;
    let late = all_events(&app, &acme).await.last().unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = problem(
        call_as(
            &app,
            &acme,
            Method::GET,
            &format!("/v1/audit/proofs/inclusion?event_id={late}&tree_size=1"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A key without audit:read.
    let (reader, _) = mint_key(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    for path in [
        "/v1/audit/events",
        "/v1/audit/export",
        "/v1/audit/checkpoints/latest",
    ] {
        let (status, _) = problem(call_as(&app, &reader, Method::GET, path, None).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    // A tenant with no checkpoint yet.
    let fresh = app.create_tenant("fresh").await;
    let (status, _) = problem(
        call_as(
            &app,
            &fresh,
            Method::GET,
            "/v1/audit/checkpoints/latest",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // ... but an export signs one.
    let key = log_key(&app).await;
    assert!(
        verify_text(&key, &export_text(&app, &fresh).await)
            .unwrap()
            .verified
    );
}

#[tokio::test]
async fn audit_events_stream_to_endpoints_that_subscribe_by_name() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let endpoint = |event_types: Value| {
        let app = &app;
        let acme = &acme;
        async move {
            let body = create_endpoint(
                app,
                acme,
                json!({ "url": "https://siem.acme.example/in", "event_types": event_types }),
            )
            .await;
            bulkhead_core::EndpointId::parse(body["id"].as_str().unwrap()).unwrap()
        }
    };
    let siem = endpoint(json!(["audit.event"])).await;
    let catch_all = endpoint(json!([])).await;
    create_session(&app, &acme, "streamed").await;
    checkpoint_now(&app, &acme).await;

    let su = app.db.superuser_pool().await;
    let streamed: Vec<(Value,)> = sqlx::query_as(
        "SELECT payload FROM bulkhead.webhook_messages WHERE tenant_id = $1 AND event_type = 'audit.event' ORDER BY id",
    )
    .bind(acme.id.uuid())
    .fetch_all(&su)
    .await
    .unwrap();
    let sequenced: i64 =
        sqlx::query_scalar("SELECT count(*) FROM bulkhead.audit_leaves WHERE tenant_id = $1")
            .bind(acme.id.uuid())
            .fetch_one(&su)
            .await
            .unwrap();
    assert_eq!(
        streamed.len() as i64,
        sequenced,
        "every sequenced event is streamed once"
    );
    let actions: Vec<&str> = streamed
        .iter()
        .map(|(p,)| p["data"]["event"]["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"session.create"), "{actions:?}");
    for (i, (payload,)) in streamed.iter().enumerate() {
        assert_eq!(payload["data"]["leaf_index"], i as u64);
        assert_eq!(payload["data"]["event"]["tenant_id"], acme.id.to_string());
    }
    // Delivered to the endpoint that asked for the stream by name, not to the catch-all.
    let targets: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "SELECT DISTINCT d.endpoint_id FROM bulkhead.webhook_deliveries d \
         JOIN bulkhead.webhook_messages m ON m.tenant_id = d.tenant_id AND m.id = d.message_id \
         WHERE m.tenant_id = $1 AND m.event_type = 'audit.event'",
    )
    .bind(acme.id.uuid())
    .fetch_all(&su)
    .await
    .unwrap();
    assert_eq!(targets, vec![(siem.uuid(),)]);
    assert_ne!(siem, catch_all);
}

/// Issue 29.1: `bulkhead audit purge` runs while an export streams (after the export fixed its
/// checkpoint, before it read a page). The export must still verify: checkpoint and pages come
/// from one snapshot, so the purge is either wholly before it (and its `audit.purge` event inside
/// the checkpoint) or invisible to it. Pages read in separate transactions showed the purged
/// bodies without the event that accounts for them: "removed outside retention".
#[tokio::test]
async fn an_export_overlapping_a_purge_still_verifies() {
    use bulkhead_store::hooks::{self, HookPoint};
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    for i in 0..6 {
        create_session(&app, &acme, &format!("s{i}")).await;
    }
    // Everything so far is sequenced and checkpointed: the export will sign nothing new.
    checkpoint_now(&app, &acme).await;
    let key = log_key(&app).await;
    let owner = app.db.owner_store().await;
    let ctx = bulkhead_core::TenantContext::for_test(
        acme.id,
        bulkhead_core::Actor::System { component: "test" },
        bulkhead_core::RequestId::new(),
    );
    // Past the default retention: every sequenced body goes.
    let later = chrono::Utc::now() + chrono::Duration::days(400);

    let mut paused = hooks::pause_once(acme.id, HookPoint::ExportCheckpointed);
    let (text, purged) = tokio::join!(export_text(&app, &acme), async {
        paused.reached().await;
        let purged = bulkhead_store::audit::retention::purge(&owner, &ctx, later)
            .await
            .unwrap();
        paused.release();
        purged
    });
    assert!(
        purged > 0,
        "the purge removed nothing: the race was not run"
    );
    let report = verify_text(&key, &text).unwrap();
    assert!(report.verified, "{report:?}");
    let (ok, out) = cli_verify(&key, &text);
    assert!(ok, "{out}");
    // And an export after the purge shows the purged leaves, accounted for.
    let after = verify_text(&key, &export_text(&app, &acme).await).unwrap();
    assert!(after.verified, "{after:?}");
    assert_eq!(after.purged, purged);
}

/// Review finding 8/3: an export once signed and stored its checkpoint in a second tenant
/// transaction while its snapshot held the tenant's gate permit, so exports of one tenant
/// beyond the per-tenant connection cap waited on themselves until the acquire timeout (503).
/// With a cap of 1 even a single export needing a new checkpoint deadlocked. More concurrent
/// exports than the cap, each with a grown tree to checkpoint, must all complete and verify.
#[tokio::test]
async fn more_concurrent_exports_than_the_tenant_cap_all_complete() {
    let db = bulkhead_test_support::TestDb::new().await;
    let store = db.app_store().await.with_tenant_connection_cap(1);
    let app = bulkhead_test_support::spawn_app_with(bulkhead_test_support::AppOptions {
        db: Some(db),
        store: Some(store),
        ..Default::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let key = log_key(&app).await;
    for round in 0..2 {
        // The tree grows before every round: each export has a new checkpoint to sign.
        create_session(&app, &acme, &format!("s{round}")).await;
        let exports = (0..3).map(|_| export_text(&app, &acme));
        for text in futures::future::join_all(exports).await {
            let report = verify_text(&key, &text).unwrap();
            assert!(report.verified, "{report:?}");
        }
    }
    assert_eq!(app.state.store().tenant_connections_in_use(acme.id), 0);
}

/// Issue 29.2: an event whose id carries a clock two days ahead (a CLI on a skewed host) is
/// sequenced by a full sweep; the ordinary events written after it must still be taken by the
/// next recent sweep, not left out of checkpoints and exports until the next full one.
#[tokio::test]
async fn a_future_dated_event_does_not_stall_sequencing() {
    use bulkhead_store::audit::log::{self as audit_log, Sweep};
    use bulkhead_store::Access;
    let db = bulkhead_test_support::TestDb::new().await;
    let a = bulkhead_test_support::create_tenant(&db, "skewed-co").await;
    let store = db.app_store().await;
    let ctx = || {
        bulkhead_core::TenantContext::for_test(
            a.id,
            bulkhead_core::Actor::System { component: "test" },
            bulkhead_core::RequestId::new(),
        )
    };
    let write_events = |n: usize| {
        let store = store.clone();
        let ctx = ctx();
        async move {
            let mut tx = store.begin(&ctx, Access::ReadWrite).await.unwrap();
            for i in 0..n {
                bulkhead_store::audit::record(
                    &mut tx,
                    "test.event",
                    None,
                    Outcome::Success,
                    json!({ "i": i }),
                )
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
        }
    };
    let sequence = |sweep: Sweep| {
        let store = store.clone();
        let ctx = ctx();
        async move {
            let mut tx = store.begin(&ctx, Access::ReadWrite).await.unwrap();
            let n = audit_log::sequence(&mut tx, sweep).await.unwrap();
            tx.commit().await.unwrap();
            n
        }
    };
    write_events(3).await;
    // A UUIDv7 two days ahead, as `Uuid::now_v7()` gives on a host whose clock runs ahead.
    let ahead = chrono::Utc::now() + chrono::Duration::days(2);
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        ahead.timestamp() as u64,
        ahead.timestamp_subsec_nanos(),
    );
    let mut tx = store.begin(&ctx(), Access::ReadWrite).await.unwrap();
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, id, actor_id, actor_type, action, outcome, \
         request_id, metadata) VALUES ($1, $2, 'system:cli', 'system', 'tenant.skewed', \
         'success', 'req', '{}'::jsonb)",
    )
    .bind(a.id.uuid())
    .bind(uuid::Uuid::new_v7(ts))
    .execute(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // Onboarding's events, the three above and the future-dated one.
    assert!(sequence(Sweep::Full).await >= 4, "the full sweep takes all");

    write_events(5).await;
    assert_eq!(
        sequence(Sweep::Recent).await,
        5,
        "ordinary events after a future-dated one wait for a full sweep"
    );
}
/// Issue 17, item 2: `webhooks:manage` alone subscribed an endpoint to `audit.event` and so read
/// the whole audit log, which the same key could not read through `GET /v1/audit/events`; and an
/// endpoint kept streaming after its creator lost `audit:read`.
#[tokio::test]
async fn the_audit_stream_needs_audit_read_and_stops_when_its_grantor_loses_it() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let post = |tenant: &TestTenant, path: &str, body: Value| {
        as_tenant(&app, tenant, Method::POST, path)
            .json(&body)
            .send()
    };
    // A manager without audit:read: refused on create and on patch, with an audit event.
    let (manager, _) = mint_key(&app, &acme, json!({ "scopes": ["webhooks:manage"] })).await;
    let siem = json!({ "url": "https://siem.acme.example/in", "event_types": ["audit.event"] });
    let (status, body) = problem(
        post(&manager, "/v1/webhooks/endpoints", siem.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("audit:read"));
    let plain: Value = post(
        &manager,
        "/v1/webhooks/endpoints",
        json!({ "url": "https://plain.acme.example/in", "event_types": ["invoice.paid"] }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let plain_id = plain["id"].as_str().unwrap();
    let response = call_as(
        &app,
        &manager,
        Method::PATCH,
        &format!("/v1/webhooks/endpoints/{plain_id}"),
        Some(json!({ "event_types": ["invoice.paid", "audit.event"] })),
    )
    .await;
    assert_eq!(problem(response).await.0, StatusCode::FORBIDDEN);

    // An agent whose role holds both subscribes; the stream flows while the role does.
    let agent: Value = post(&acme, "/v1/agents", json!({ "name": "siem-admin" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let role: Value = post(
        &acme,
        "/v1/roles",
        json!({ "name": "siem", "permissions": ["webhooks:manage", "audit:read"] }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let assignment: Value = post(
        &acme,
        "/v1/role-assignments",
        json!({ "role_id": role["id"], "agent_id": agent["id"] }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let (agent_key, _) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["webhooks:manage", "audit:read"], "agent_id": agent["id"] }),
    )
    .await;
    let response = post(&agent_key, "/v1/webhooks/endpoints", siem)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let endpoint: Value = response.json().await.unwrap();
    let endpoint = bulkhead_core::EndpointId::parse(endpoint["id"].as_str().unwrap())
        .unwrap()
        .uuid();
    let su = app.db.superuser_pool().await;
    let streamed = || {
        let su = su.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM bulkhead.webhook_deliveries d \
                 JOIN bulkhead.webhook_messages m ON m.tenant_id = d.tenant_id AND m.id = d.message_id \
                 WHERE d.endpoint_id = $1 AND m.event_type = 'audit.event'",
            )
            .bind(endpoint)
            .fetch_one(&su)
            .await
            .unwrap()
        }
    };
    create_session(&app, &acme, "while granted").await;
    checkpoint_now(&app, &acme).await;
    let before = streamed().await;
    assert!(
        before > 0,
        "the stream flows while the grantor holds audit:read"
    );

    // The role goes: the grantor no longer holds audit:read, and the stream stops at once.
    let response = call_as(
        &app,
        &acme,
        Method::DELETE,
        &format!(
            "/v1/role-assignments/{}",
            assignment["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert!(response.status().is_success());
    create_session(&app, &acme, "after the role is gone").await;
    checkpoint_now(&app, &acme).await;
    assert_eq!(
        streamed().await,
        before,
        "nothing more reaches the endpoint"
    );
}

/// Issue 17, item 9: `POST /v1/audit/checkpoints` needs only `audit:read` (viewers hold it) and
/// signed and appended a new checkpoint on every call, even when the tree had not grown. Now the
/// latest one is answered (200) until the tree grows.
#[tokio::test]
async fn a_checkpoint_is_signed_only_when_the_tree_grew() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_session(&app, &acme, "one").await;
    let post = || as_tenant(&app, &acme, Method::POST, "/v1/audit/checkpoints").send();
    let first = post().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: SignedCheckpoint = first.json().await.unwrap();
    let su = app.db.superuser_pool().await;
    let count = || {
        let su = su.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM bulkhead.audit_checkpoints WHERE tenant_id = $1",
            )
            .bind(acme.id.uuid())
            .fetch_one(&su)
            .await
            .unwrap()
        }
    };
    let stored = count().await;
    for _ in 0..5 {
        let again = post().await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        let again: SignedCheckpoint = again.json().await.unwrap();
        assert_eq!(again, first, "the latest checkpoint, unchanged");
    }
    assert_eq!(
        count().await,
        stored,
        "no row appended while the tree did not grow"
    );
    // The tree grows: a new checkpoint.
    create_session(&app, &acme, "two").await;
    let grown = post().await.unwrap();
    assert_eq!(grown.status(), StatusCode::CREATED);
    let grown: SignedCheckpoint = grown.json().await.unwrap();
    assert!(grown.checkpoint.tree_size > first.checkpoint.tree_size);
    assert_eq!(count().await, stored + 1);
}

fn failure(tenant: bulkhead_core::TenantId, ip: &str, user_agent: Option<&str>) -> AuthFailure {
    AuthFailure {
        action: "auth.failure",
        actor: None,
        tenant,
        key_id: None,
        reason: "UnknownKey".into(),
        outcome: Outcome::Failure,
        ip_address: Some(ip.parse().unwrap()),
        user_agent: user_agent.map(str::to_owned),
        request_id: Default::default(),
    }
}

/// Issue 17, item 5: anyone could write one `auth.failure` per request, with a user agent of
/// their choice, into any tenant's log, and one flood filled the queue every tenant shares. Now
/// failures are counted per address bucket (IPv6 /64) and window, free text is cleaned and
/// bounded, and a tenant keeps its fair share of the queue.
#[tokio::test]
async fn auth_failures_are_aggregated_cleaned_and_fairly_queued() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let beta = app.create_tenant("beta").await;
    let service = AuditService::with_capacity(bulkhead_audit::LogSigningKey::generate(), 8);
    // 500 failures from one address and 20 from one /64: two entries, two counted events.
    let hostile_ua = format!(
        "evil\u{202e}\u{200b}\r\nFAKE: line\u{0007}{}",
        "x".repeat(2000)
    );
    for _ in 0..500 {
        service.record_auth_failure(failure(acme.id, "198.51.100.7", Some(&hostile_ua)));
    }
    for i in 0..20 {
        let ip = format!("2001:db8:5:6::{i:x}");
        service.record_auth_failure(failure(acme.id, &ip, None));
    }
    assert_eq!(service.flush_auth_failures(app.state.store()).await, 2);
    let events = all_events(&app, &acme).await;
    let failures: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "auth.failure")
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    let mut counts: Vec<u64> = failures
        .iter()
        .map(|e| e["metadata"]["count"].as_u64().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, vec![20, 500]);
    let su = app.db.superuser_pool().await;
    let agents: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT user_agent FROM bulkhead.audit_events WHERE tenant_id = $1 AND action = 'auth.failure'",
    )
    .bind(acme.id.uuid())
    .fetch_all(&su)
    .await
    .unwrap();
    let ua = agents.into_iter().flatten().next().unwrap();
    assert!(ua.starts_with("evilFAKE: line"), "{ua:?}");
    assert!(ua.len() <= bulkhead_store::audit::MAX_USER_AGENT_BYTES);
    assert!(!ua
        .chars()
        .any(|c| c.is_control() || ('\u{200b}'..='\u{202e}').contains(&c)));

    // Fair share: acme floods from many addresses and fills the queue; beta's failure still
    // gets in (one of acme's entries is evicted and counted as dropped).
    for i in 0..100u8 {
        service.record_auth_failure(failure(acme.id, &format!("203.0.113.{i}"), None));
    }
    service.record_auth_failure(failure(beta.id, "192.0.2.1", None));
    service.flush_auth_failures(app.state.store()).await;
    let beta_events = all_events(&app, &beta).await;
    assert_eq!(
        beta_events
            .iter()
            .filter(|e| e["action"] == "auth.failure")
            .count(),
        1,
        "the victim's failure is kept"
    );
    let acme_events = all_events(&app, &acme).await;
    let dropped: u64 = acme_events
        .iter()
        .filter(|e| e["action"] == "audit.auth_failures_dropped")
        .map(|e| e["metadata"]["dropped"].as_u64().unwrap())
        .sum();
    assert_eq!(
        dropped,
        100 - 7,
        "acme kept 7 of the 8 entries, the rest counted"
    );
}

/// Issue 17, item 12: events other than authentication failures had no address or user agent.
/// Every event produced while serving a request now carries both.
#[tokio::test]
async fn every_event_of_a_request_carries_its_address_and_user_agent() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let response = as_tenant(&app, &acme, Method::POST, "/v1/sessions")
        .header("user-agent", "audit-test/1.0\t")
        .json(&json!({ "agent_id": "agent-7", "title": "t" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let su = app.db.superuser_pool().await;
    let (ip, ua): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT host(ip_address), user_agent FROM bulkhead.audit_events \
         WHERE tenant_id = $1 AND action = 'session.create'",
    )
    .bind(acme.id.uuid())
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(ua.as_deref(), Some("audit-test/1.0"));
}

/// Review finding 5 (issue 17.2/17.3): a `webhooks:manage` key without `audit:read` could rotate
/// the audit stream's signing secret (and so sign forged audit events a receiver trusts), and
/// read or resend a stored `audit.event` message. Each now needs `audit:read`, and every refusal
/// is an audit event.
#[tokio::test]
async fn the_audit_streams_secret_and_messages_need_audit_read() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    // The admin key (audit:read included) subscribes an endpoint to the stream.
    let siem = create_endpoint(
        &app,
        &acme,
        json!({ "url": "https://siem.acme.example/in", "event_types": ["audit.event"] }),
    )
    .await;
    let siem_id = siem["id"].as_str().unwrap().to_owned();
    create_session(&app, &acme, "streamed").await;
    checkpoint_now(&app, &acme).await;
    let su = app.db.superuser_pool().await;
    let message: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM bulkhead.webhook_messages \
         WHERE tenant_id = $1 AND event_type = 'audit.event' LIMIT 1",
    )
    .bind(acme.id.uuid())
    .fetch_one(&su)
    .await
    .unwrap();
    let message = bulkhead_core::MessageId::from_uuid(message).to_string();

    let (manager, _) = mint_key(&app, &acme, json!({ "scopes": ["webhooks:manage"] })).await;
    let attempts: [(Method, String, Option<Value>); 4] = [
        (
            Method::POST,
            format!("/v1/webhooks/endpoints/{siem_id}/rotate-secret"),
            Some(json!({ "grace_seconds": 0 })),
        ),
        (
            Method::GET,
            format!("/v1/webhooks/messages/{message}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/webhooks/messages/{message}/attempts"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/webhooks/messages/{message}/resend"),
            None,
        ),
    ];
    for (method, path, body) in &attempts {
        let mut request = as_tenant(&app, &manager, method.clone(), path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, problem_body) = problem(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {problem_body}");
        assert!(
            problem_body["detail"]
                .as_str()
                .unwrap()
                .contains("audit:read"),
            "{path}: {problem_body}"
        );
    }
    // The secret did not change hands: the old one is still the only one.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bulkhead.webhook_endpoints \
         WHERE tenant_id = $1 AND previous_secret IS NOT NULL",
    )
    .bind(acme.id.uuid())
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!(stored, 0, "no rotation happened");

    // Each refusal is an audit event (recorded off the request path: wait for them).
    let mut refused = Vec::new();
    for _ in 0..50 {
        refused = all_events(&app, &acme)
            .await
            .into_iter()
            .filter(|e| e["action"] == "auth.forbidden" && e.to_string().contains("audit-stream-"))
            .collect();
        // Repeated refusals are folded into one event with a `count`.
        let total: u64 = refused
            .iter()
            .map(|e| e["metadata"]["count"].as_u64().unwrap_or(1))
            .sum();
        if total >= attempts.len() as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let total: u64 = refused
        .iter()
        .map(|e| e["metadata"]["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(total, attempts.len() as u64, "{refused:?}");
    assert!(refused
        .iter()
        .any(|e| e["metadata"]["reason"] == "missing audit:read (audit-stream-secret)"));

    // The admin, who holds audit:read, may do all of it.
    for (method, path, body) in &attempts {
        let mut request = as_tenant(&app, &acme, method.clone(), path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
}

/// Issue 25 (found measuring 100 tenants at once): the sequencer visited every tenant every
/// second, written or not. It now visits the tenants whose transactions through its store
/// committed audit events, in every tier. With the full sweep an hour away and the pass over
/// every tenant a minute away, an event is sequenced within seconds only if its commit told the
/// sequencer.
#[tokio::test]
async fn the_sequencer_takes_announced_events_promptly_in_every_tier() {
    use bulkhead_server::service::audit_log::Sequencer;
    use bulkhead_store::audit::log as audit_log;
    use bulkhead_store::Access;
    use bulkhead_test_support::TestTier;
    use std::time::{Duration, Instant};

    let app = spawn_app().await;
    let mut tenants = Vec::new();
    for tier in TestTier::ALL {
        let slug = format!("seq-{tier:?}").to_lowercase();
        tenants.push(app.create_tenant_in(&slug, tier).await);
    }
    let store = app.state.store().clone();
    let ctx = |tenant: &TestTenant| {
        bulkhead_core::TenantContext::for_test(
            tenant.id,
            bulkhead_core::Actor::System { component: "test" },
            bulkhead_core::RequestId::new(),
        )
    };
    // (events, leaves) of a tenant.
    let counts = |tenant: TestTenant| {
        let (store, ctx) = (store.clone(), ctx(&tenant));
        async move {
            let mut tx = store.begin(&ctx, Access::ReadOnly).await.unwrap();
            let events: i64 =
                sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE tenant_id = $1")
                    .bind(tenant.id.uuid())
                    .fetch_one(tx.conn())
                    .await
                    .unwrap();
            let leaves = audit_log::tree_size(&mut tx).await.unwrap();
            (events as u64, leaves)
        }
    };
    let all_sequenced = |deadline: Duration| {
        let tenants = tenants.clone();
        async move {
            let until = Instant::now() + deadline;
            loop {
                let mut behind = Vec::new();
                for t in &tenants {
                    let (events, leaves) = counts(t.clone()).await;
                    if events != leaves {
                        behind.push((t.slug.clone(), events, leaves));
                    }
                }
                if behind.is_empty() {
                    return Ok(());
                }
                if Instant::now() > until {
                    return Err(behind);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    let mut sequencer = Sequencer::new(store.clone(), bulkhead_audit::LogSigningKey::generate());
    sequencer.interval = Duration::from_millis(200);
    sequencer.full_sweep_every = Duration::from_secs(3600);
    sequencer.checkpoint_every = Duration::from_secs(60);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(sequencer.run(stopped));
    // The start-up pass (a full sweep) takes the onboarding events.
    all_sequenced(Duration::from_secs(20))
        .await
        .expect("onboarding events sequenced at start");
    tokio::time::sleep(Duration::from_secs(1)).await;

    for round in 0..2 {
        for t in &tenants {
            let mut tx = store.begin(&ctx(t), Access::ReadWrite).await.unwrap();
            bulkhead_store::audit::record(
                &mut tx,
                "test.event",
                None,
                Outcome::Success,
                json!({ "round": round }),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        all_sequenced(Duration::from_secs(10))
            .await
            .unwrap_or_else(|behind| {
                panic!("round {round}: not sequenced (slug, events, leaves): {behind:?}")
            });
    }
    stop.send(true).unwrap();
    running.await.unwrap();
}
