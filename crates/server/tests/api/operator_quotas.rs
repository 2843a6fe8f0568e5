//! A tenant's quotas over the operator API (issue 19: every tenant command reaches a running
//! server): read them, give the tenant its own limit of a kind and take it back, each change in
//! both logs; malformed requests refused before anything is looked up.

use bulkhead_store::lifecycle::moves::{self, MoveOptions, MoveStep};
use bulkhead_store::placement::location::SchemaName;
use bulkhead_store::Placement;
use bulkhead_test_support::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{call, create_session};
use crate::operator::{operator_key, operator_log, ALL};

fn kind<'a>(quotas: &'a Value, kind: &str) -> &'a Value {
    quotas["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {quotas}"))
}

#[tokio::test]
async fn an_operator_reads_and_sets_a_tenants_own_limits() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, ALL).await;
    let acme = app.create_tenant("acme").await;
    let path = "/operator/v1/tenants/acme/quotas";

    let (status, quotas) = op.request(Method::GET, path, Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{quotas}");
    assert_eq!(quotas["tenant"], acme.id.to_string());
    assert_eq!(quotas["plan"], "standard");
    let plan_limit = kind(&quotas, "sessions")["plan_limit"].clone();
    assert_eq!(kind(&quotas, "sessions")["overridden"], false);

    // Its own limit of one session: the first is made, the second refused.
    let (status, set) = op
        .request(
            Method::PUT,
            &format!("{path}/sessions"),
            Some(&key),
            Some(json!({ "limit": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["limit"], 1);
    assert_eq!(set["overridden"], true);
    create_session(&app, &acme, "the one").await;
    let refused = call(
        &app,
        "acme",
        &acme.key,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "agent-1", "title": "one too many" })),
    )
    .await;
    assert_ne!(refused.status(), StatusCode::CREATED);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["type"].as_str().unwrap().contains("quota"),
        "{problem}"
    );

    // Back to the plan's.
    let (status, reset) = op
        .request(
            Method::PUT,
            &format!("{path}/sessions"),
            Some(&key),
            Some(json!({ "limit": null })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    assert_eq!(reset["overridden"], false);
    assert_eq!(reset["limit"], plan_limit);

    // In the tenant's log and in the operator log.
    let events = call(
        &app,
        "acme",
        &acme.key,
        Method::GET,
        "/v1/audit/events?action=quota.override&limit=10",
        None,
    )
    .await;
    let events: Value = events.json().await.unwrap();
    assert_eq!(events["data"].as_array().unwrap().len(), 2, "{events}");
    let log = operator_log(&op, &key).await;
    let changes = log
        .iter()
        .filter(|e| e["action"] == "tenant.quota" && e["outcome"] == "success")
        .count();
    assert_eq!(changes, 2, "{log:#?}");

    // Refused before anything is looked up: kinds an operator may not limit, limits that are
    // not whole numbers of 0 or more, a body without one; and a tenant key is no operator's.
    for (kind, body) in [
        ("audit_events", json!({ "limit": 5 })),
        ("webhook_attempts", json!({ "limit": 5 })),
        ("nonsense", json!({ "limit": 5 })),
        ("sessions", json!({ "limit": -1 })),
        ("sessions", json!({ "limit": "ten" })),
        ("sessions", json!({ "limit": 1.5 })),
        ("sessions", json!({})),
        ("sessions", json!({ "limit": 1, "other": true })),
    ] {
        let (status, problem) = op
            .request(
                Method::PUT,
                &format!("/operator/v1/tenants/nobody/quotas/{kind}"),
                Some(&key),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{kind} {body}: {problem}"
        );
    }
    let (status, _) = op
        .request(
            Method::GET,
            "/operator/v1/tenants/nobody/quotas",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = op.request(Method::GET, path, Some(&acme.key), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A move recorded (stopped after its copy): no change, and the refusal is in the log.
    let schema = Placement::Schema(SchemaName::for_tenant(acme.id));
    let stopped = MoveOptions {
        stop_after: Some(MoveStep::Copy),
        ..MoveOptions::default()
    };
    moves::move_tenant(&op.owner, acme.id, schema, stopped)
        .await
        .unwrap_err();
    let (status, problem) = op
        .request(
            Method::PUT,
            &format!("{path}/sessions"),
            Some(&key),
            Some(json!({ "limit": 3 })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let log = operator_log(&op, &key).await;
    assert!(
        log.iter()
            .any(|e| e["action"] == "tenant.quota" && e["outcome"] == "failure"),
        "{log:#?}"
    );
    let (status, quotas) = op.request(Method::GET, path, Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{quotas}");
    assert_eq!(kind(&quotas, "sessions")["overridden"], false);
}

/// An override waits for the tenant's `stored_bytes` counter before it holds any other. Its
/// audit event takes `stored_bytes` at commit, and a publish takes `stored_bytes` and then
/// `webhook_messages`: an override of `webhook_messages` that held its row while it waited at
/// commit deadlocked against a publish holding `stored_bytes`.
#[tokio::test]
async fn an_override_waiting_for_the_bytes_counter_holds_no_other_counter() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, ALL).await;
    let acme = app.create_tenant("acme").await;
    // Both counter rows exist (a row made by the waiting transaction would be invisible to the
    // probe below, which could then not tell).
    let published = call(
        &app,
        "acme",
        &acme.key,
        Method::POST,
        "/v1/webhooks/messages",
        Some(json!({ "event_type": "invoice.paid", "payload": { "n": 1 } })),
    )
    .await;
    assert_eq!(published.status(), StatusCode::ACCEPTED);
    let su = sqlx::PgPool::connect_with(app.db.superuser_options.clone())
        .await
        .unwrap();
    let mut blocker = su.begin().await.unwrap();
    let blocker_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *blocker)
        .await
        .unwrap();
    sqlx::query(
        "SELECT 1 FROM bulkhead.tenant_quotas \
         WHERE tenant_id = $1 AND kind = 'stored_bytes' FOR UPDATE",
    )
    .bind(acme.id.uuid())
    .execute(&mut *blocker)
    .await
    .unwrap();
    let overriding = {
        let socket = op.socket.clone();
        tokio::spawn(async move {
            bulkhead_test_support::operator_request(
                &socket,
                Method::PUT,
                "/operator/v1/tenants/acme/quotas/webhook_messages",
                Some(&key),
                Some(json!({ "limit": 10 })),
            )
            .await
        })
    };
    // Until the override is blocked by the blocker (the server says so; not a sleep).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))",
        )
        .bind(blocker_pid)
        .fetch_one(&su)
        .await
        .unwrap();
        if waiting {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the override never waited for the bytes counter"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut probe = su.begin().await.unwrap();
    let free = sqlx::query(
        "SELECT 1 FROM bulkhead.tenant_quotas \
         WHERE tenant_id = $1 AND kind <> 'stored_bytes' FOR UPDATE NOWAIT",
    )
    .bind(acme.id.uuid())
    .execute(&mut *probe)
    .await;
    assert!(
        free.is_ok(),
        "an override waiting for stored_bytes held another counter: {free:?}"
    );
    probe.rollback().await.unwrap();
    blocker.rollback().await.unwrap();
    let (status, set) = overriding.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["limit"], 10);
}
