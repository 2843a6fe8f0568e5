//! Issue 28 item 3: every documented list filter is served by an index led by `tenant_id`.
//!
//! The real store functions run through the door; the plan checked is the one PostgreSQL makes
//! for the very statement they prepared (`EXPLAIN EXECUTE` of it, from
//! `pg_prepared_statements` on the same connection), with the door's session settings.

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use bulkhead_store::audit_log::{self, EventFilter};
use bulkhead_store::sessions::{self, ListSessions, SessionState};
use bulkhead_store::{Access, Store, TenantTx};
use bulkhead_test_support::{create_tenant, TestDb};
use serde_json::Value;

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::new(
        tenant,
        Actor::System { component: "test" },
        RequestId::new(),
    )
}

/// 20,000 sessions and audit events for `tenant`, the filtered values rare, as a superuser.
async fn seed(db: &TestDb, tenant: TenantId) {
    let su = db.superuser_pool().await;
    sqlx::query(
        "INSERT INTO bulkhead.agent_sessions (tenant_id, id, agent_id, title, state) \
         SELECT $1, gen_random_uuid(), 'agent-' || (i % 500), 't', \
                CASE WHEN i % 1000 = 0 THEN 'closed' ELSE 'active' END \
         FROM generate_series(1, 20000) i",
    )
    .bind(tenant.uuid())
    .execute(&su)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO bulkhead.audit_events (tenant_id, id, occurred_at, actor_id, actor_type, \
           action, resource_id, outcome) \
         SELECT $1, gen_random_uuid(), now() - (i || ' seconds')::interval, 'actor-' || (i % 500), \
                'system', 'action.n' || (i % 500), 'res-' || (i % 5000), \
                CASE WHEN i % 1000 = 0 THEN 'blocked' ELSE 'success' END \
         FROM generate_series(1, 20000) i",
    )
    .bind(tenant.uuid())
    .execute(&su)
    .await
    .unwrap();
    for table in ["agent_sessions", "audit_events"] {
        sqlx::query(&format!("ANALYZE bulkhead.{table}"))
            .execute(&su)
            .await
            .unwrap();
    }
}

/// The first column of every index in `plan`, and whether any node scans a table whole.
fn scans(plan: &Value, indexes: &mut Vec<String>, seq: &mut Vec<String>) {
    if let Some(kind) = plan["Node Type"].as_str() {
        if kind == "Seq Scan" {
            seq.push(plan["Relation Name"].as_str().unwrap_or("?").to_owned());
        }
        if let Some(index) = plan["Index Name"].as_str() {
            indexes.push(index.to_owned());
        }
    }
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            scans(child, indexes, seq);
        }
    }
}

/// Plans the statement the last list call prepared (`marker` identifies it) with `args`, and
/// checks that it scans nothing whole and that every index it uses is led by `tenant_id`
/// and covers `column`.
async fn check_plan(tx: &mut TenantTx, marker: &str, args: &str, column: &str) {
    let name: String = sqlx::query_scalar(
        "SELECT name FROM pg_prepared_statements WHERE statement LIKE $1 \
         ORDER BY prepare_time DESC LIMIT 1",
    )
    .bind(format!("%{marker}%"))
    .fetch_one(tx.conn())
    .await
    .unwrap();
    let plan: Value = sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) EXECUTE {name}({args})"))
        .fetch_one(tx.conn())
        .await
        .unwrap();
    let mut indexes = Vec::new();
    let mut seq = Vec::new();
    scans(&plan[0]["Plan"], &mut indexes, &mut seq);
    assert!(
        seq.is_empty(),
        "{marker} {args}: scans {seq:?} whole: {plan}"
    );
    assert!(!indexes.is_empty(), "{marker} {args}: no index: {plan}");
    let mut covered = false;
    for index in &indexes {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE c.relname = $1 ORDER BY k.n",
        )
        .bind(index)
        .fetch_all(tx.conn())
        .await
        .unwrap();
        assert_eq!(
            columns.first().map(String::as_str),
            Some("tenant_id"),
            "{marker} {args}: index {index} is not led by tenant_id"
        );
        covered |= columns.iter().any(|c| c == column);
    }
    assert!(
        covered,
        "{marker} {args}: no index on {column} serves the filter: {plan}"
    );
}

#[tokio::test]
async fn every_list_filter_uses_an_index_led_by_tenant_id() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let b = create_tenant(&db, "bravo").await;
    seed(&db, a.id).await;
    seed(&db, b.id).await;
    let store: Store = db.app_store().await;
    let mut tx = store.begin(&ctx(a.id), Access::ReadOnly).await.unwrap();
    let tenant = format!("'{}'", a.id.uuid());

    // GET /v1/sessions?state= and ?agent_id=
    sessions::list(
        &mut tx,
        &ListSessions {
            after: None,
            limit: 51,
            agent_id: None,
            state: Some(SessionState::Closed),
        },
    )
    .await
    .unwrap();
    let marker = "FROM agent_sessions";
    check_plan(
        &mut tx,
        marker,
        &format!("{tenant}, NULL, NULL, 'closed', 51, NULL"),
        "state",
    )
    .await;
    check_plan(
        &mut tx,
        marker,
        &format!("{tenant}, NULL, 'agent-7', NULL, 51, NULL"),
        "agent_id",
    )
    .await;

    // GET /v1/audit/events with each filter.
    audit_log::list_events(
        &mut tx,
        &EventFilter {
            limit: 51,
            ..EventFilter::default()
        },
    )
    .await
    .unwrap();
    let marker = "FROM audit_events e";
    let cases = [
        (
            "NULL, now() - interval '10 seconds', NULL, NULL, NULL, NULL, NULL",
            "occurred_at",
        ),
        (
            "NULL, NULL, now() - interval '19990 seconds', NULL, NULL, NULL, NULL",
            "occurred_at",
        ),
        ("NULL, NULL, NULL, 'actor-7', NULL, NULL, NULL", "actor_id"),
        ("NULL, NULL, NULL, NULL, 'action.n7', NULL, NULL", "action"),
        ("NULL, NULL, NULL, NULL, NULL, 'blocked', NULL", "outcome"),
        ("NULL, NULL, NULL, NULL, NULL, NULL, 'res-7'", "resource_id"),
    ];
    for (filters, column) in cases {
        check_plan(&mut tx, marker, &format!("{tenant}, {filters}, 51"), column).await;
    }
    tx.commit().await.unwrap();
}
