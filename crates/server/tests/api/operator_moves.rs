//! Moves through the operator API (issue 19): started in the background and followed, served
//! from the new tier with every row; refused while the tenant is being deleted, for a
//! dedicated database, or while a run holds the move; abandoned before the switch.

use bulkhead_store::lifecycle::moves::{self, MoveOptions, MoveStep};
use bulkhead_store::Placement;
use bulkhead_test_support::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{call, create_session};
use crate::operator::{operator_key, operator_log, ALL};
use crate::tiers::row_counts;

const MOVE: &str = "/operator/v1/tenants/acme/move";

/// Every table's rows of `tenant` but its audit log's, which the move itself adds to (its start
/// and end, or its abandonment, are events of the tenant's own log).
async fn data_rows(
    owner: &bulkhead_store::Store,
    tenant: bulkhead_core::TenantId,
) -> Vec<(String, i64)> {
    let mut counts = row_counts(owner, tenant).await;
    counts.retain(|(table, _)| table != "audit_events");
    counts
}

/// `POST …/move` with `body`; the status and the body.
async fn start_move(
    op: &bulkhead_test_support::TestOperator,
    key: &str,
    body: Value,
) -> (StatusCode, Value) {
    op.request(Method::POST, MOVE, Some(key), Some(body)).await
}

/// Polls `GET …/move` until this process's run has ended; its state.
async fn finished(op: &bulkhead_test_support::TestOperator, key: &str) -> Value {
    for _ in 0..600 {
        let (status, body) = op.request(Method::GET, MOVE, Some(key), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["running"] == false {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the move did not end within 30 s");
}

#[tokio::test]
async fn a_move_started_over_the_api_runs_in_the_background_and_keeps_every_row() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, ALL).await;
    let acme = app.create_tenant("acme").await;
    for title in ["one", "two", "three"] {
        create_session(&app, &acme, title).await;
    }
    let before = data_rows(&op.owner, acme.id).await;

    // Nothing to follow yet; a dedicated database or an unknown tier is not named here.
    let (status, _) = op.request(Method::GET, MOVE, Some(&key), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for tier in ["dedicated", "cold-storage"] {
        let (status, body) = start_move(&op, &key, json!({ "tier": tier })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{tier}: {body}");
    }
    // Where it is already: a conflict with its state, nothing recorded.
    let (status, body) = start_move(&op, &key, json!({ "tier": "shared" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, body) = start_move(&op, &key, json!({ "tier": "schema" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["tenant_id"], acme.id.to_string());
    let done = finished(&op, &key).await;
    assert_eq!(done["run"]["error"], Value::Null, "{done}");
    assert_eq!(done["recorded"], Value::Null, "{done}");
    assert!(
        done["run"]["report"]["rows"].as_i64().unwrap() >= 3,
        "{done}"
    );

    // Served from its schema with every row; its own API works as before.
    let location = app.state.store().location_of(acme.id).await.unwrap();
    assert!(
        matches!(location.placement, Placement::Schema(_)),
        "{location:?}"
    );
    assert_eq!(data_rows(&op.owner, acme.id).await, before);
    let listed = call(&app, "acme", &acme.key, Method::GET, "/v1/sessions", None).await;
    assert_eq!(listed.status(), StatusCode::OK);

    // The run is in the operator log, started before it moved anything, then its success.
    let log = operator_log(&op, &key).await;
    let outcomes: Vec<&str> = log
        .iter()
        .filter(|e| e["action"] == "tenant.move")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.contains(&"started") && outcomes.contains(&"success"),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn a_move_stopped_before_its_switch_is_abandoned_over_the_api_and_a_deleted_tenant_is_not_moved(
) {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, ALL).await;
    let acme = app.create_tenant("acme").await;
    create_session(&app, &acme, "kept").await;
    let before = data_rows(&op.owner, acme.id).await;
    // A move stopped after its copy (as a crash would), as `bulkhead tenant move` leaves it.
    let schema = Placement::Schema(bulkhead_store::placement::location::SchemaName::for_tenant(
        acme.id,
    ));
    moves::move_tenant(
        &op.owner,
        acme.id,
        schema,
        MoveOptions {
            stop_after: Some(MoveStep::Copy),
            ..MoveOptions::default()
        },
    )
    .await
    .unwrap_err();
    let (status, body) = op.request(Method::GET, MOVE, Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["running"], false);
    assert_eq!(body["recorded"]["to_tier"], "schema", "{body}");
    // Another destination is refused while this move is recorded, and so is a plan (the move
    // copied it already); a rate limit, kept in the registry row only, is taken.
    let (status, _) = start_move(&op, &key, json!({ "tier": "shared" })).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let tenant_path = "/operator/v1/tenants/acme";
    let (status, body) = op
        .request(
            Method::PATCH,
            tenant_path,
            Some(&key),
            Some(json!({ "plan": "free" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("being moved"),
        "{body}"
    );
    let (status, body) = op
        .request(
            Method::PATCH,
            tenant_path,
            Some(&key),
            Some(json!({ "rate_limit": { "requests_per_minute": 600 } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A region this server does not serve is refused before anything begins.
    let (status, _) = start_move(&op, &key, json!({ "tier": "schema", "region": "mars-1" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, body) = op.request(Method::DELETE, MOVE, Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"], Value::Null);
    let location = app.state.store().location_of(acme.id).await.unwrap();
    assert_eq!(location.placement, Placement::Shared);
    assert_eq!(data_rows(&op.owner, acme.id).await, before);
    // Writable again where it was.
    create_session(&app, &acme, "after").await;
    // Nothing left to abandon.
    let (status, _) = op.request(Method::DELETE, MOVE, Some(&key), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A tenant whose deletion is scheduled is not moved.
    let (status, _) = op
        .request(
            Method::POST,
            "/operator/v1/tenants/acme/deletion",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = start_move(&op, &key, json!({ "tier": "schema" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("deletion"),
        "{body}"
    );

    // A tenant key opens none of it.
    let on_v1 = call(&app, "acme", &acme.key, Method::GET, "/v1/sessions", None).await;
    assert_eq!(
        on_v1.status(),
        StatusCode::FORBIDDEN,
        "suspended for deletion"
    );
    let (status, _) = op.request(Method::GET, MOVE, Some(&acme.key), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
