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
