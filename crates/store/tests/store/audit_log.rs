//! The tenant audit log in PostgreSQL: sequencing is gap-free and loses nothing, the tables are
//! append-only, and retention keeps the tree verifiable.

use bulkhead_audit::export::{ExportLine, ExportVerifier};
use bulkhead_audit::tree;
use bulkhead_audit::LogSigningKey;
use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use bulkhead_store::audit::log::{self as audit_log, Sweep};
use bulkhead_store::audit::pages::{self as audit_pages, ExportItem};
use bulkhead_store::audit::retention as audit_retention;
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::{Access, Store};
use bulkhead_test_support::{create_tenant, TestDb};
use serde_json::json;

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::for_test(
        tenant,
        Actor::System { component: "test" },
        RequestId::new(),
    )
}

async fn write_events(store: &Store, tenant: TenantId, n: usize) {
    let mut tx = store.begin(&ctx(tenant), Access::ReadWrite).await.unwrap();
    for i in 0..n {
        audit::record(
            &mut tx,
            "test.event",
            Some(&format!("r{i}")),
            Outcome::Success,
            json!({ "i": i }),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn sequence(store: &Store, tenant: TenantId) -> u64 {
    let mut tx = store.begin(&ctx(tenant), Access::ReadWrite).await.unwrap();
    let n = audit_log::sequence(&mut tx, Sweep::Full).await.unwrap();
    tx.commit().await.unwrap();
    n
}

/// Builds an export from the store the way the server does, and verifies it offline.
async fn export_verifies(
    store: &Store,
    tenant: TenantId,
    key: &LogSigningKey,
) -> bulkhead_audit::export::VerifyReport {
    let mut tx = store.begin(&ctx(tenant), Access::ReadWrite).await.unwrap();
    let checkpoint = audit_log::sign_checkpoint(&mut tx, key, chrono::Utc::now())
        .await
        .unwrap();
    let items = audit_pages::export_page(&mut tx, 0, checkpoint.checkpoint.tree_size)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut verifier = ExportVerifier::new(key.public().clone());
    verifier
        .push_line(&serde_json::to_string(&ExportLine::Checkpoint { checkpoint }).unwrap())
        .unwrap();
    for item in items {
        let line = match item {
            ExportItem::Event {
                leaf_index,
                leaf_hash,
                event,
            } => ExportLine::Event {
                leaf_index,
                leaf_hash,
                event,
            },
            ExportItem::Purged {
                leaf_index,
                leaf_hash,
                event_id,
            } => ExportLine::Purged {
                leaf_index,
                leaf_hash,
                event_id: event_id.to_string(),
            },
        };
        verifier
            .push_line(&serde_json::to_string(&line).unwrap())
            .unwrap();
    }
    verifier.finish()
}

#[tokio::test]
async fn events_committed_before_sequencing_are_all_sequenced_gap_free() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha-co").await;
    let store = db.app_store().await;
    // Committed, sequencer not run (as after a crash between commit and sequencing).
    write_events(&store, a.id, 30).await;
    write_events(&store, a.id, 2100).await;
    let onboarding: i64 = {
        let mut tx = store.begin(&ctx(a.id), Access::ReadOnly).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM bulkhead.audit_events WHERE tenant_id = $1")
            .bind(a.id.uuid())
            .fetch_one(tx.conn())
            .await
            .unwrap()
    };
    assert_eq!(sequence(&store, a.id).await, onboarding as u64);
    assert_eq!(sequence(&store, a.id).await, 0, "nothing twice");
    let mut tx = store.begin(&ctx(a.id), Access::ReadOnly).await.unwrap();
    let (count, max, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), max(leaf_index), count(DISTINCT event_id) FROM bulkhead.audit_leaves WHERE tenant_id = $1",
    )
    .bind(a.id.uuid())
    .fetch_one(tx.conn())
    .await
    .unwrap();
    assert_eq!(
        (count, max + 1, distinct),
        (onboarding, onboarding, onboarding)
    );
    // Every complete subtree is cached: the stored root equals one recomputed from the leaves.
    let leaves: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT leaf_hash FROM bulkhead.audit_leaves WHERE tenant_id = $1 ORDER BY leaf_index",
    )
    .bind(a.id.uuid())
    .fetch_all(tx.conn())
    .await
    .unwrap();
    let mut builder = tree::RootBuilder::new();
    for leaf in leaves {
        builder.push(leaf.try_into().unwrap());
    }
    assert_eq!(
        audit_log::root_at(&mut tx, count as u64).await.unwrap(),
        builder.root()
    );
    drop(tx);
    let key = LogSigningKey::generate();
    let report = export_verifies(&store, a.id, &key).await;
    assert!(report.verified, "{report:?}");
}

#[tokio::test]
async fn concurrent_sequencers_never_assign_an_index_twice() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha-co").await;
    let store = db.app_store().await;
    let mut handles = Vec::new();
    for round in 0..6 {
        let store = store.clone();
        let tenant = a.id;
        handles.push(tokio::spawn(async move {
            write_events(&store, tenant, 50 + round).await;
            sequence(&store, tenant).await
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total += sequence(&store, a.id).await;
    let mut tx = store.begin(&ctx(a.id), Access::ReadOnly).await.unwrap();
    let (count, max, events): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bulkhead.audit_leaves WHERE tenant_id = $1), \
                (SELECT max(leaf_index) FROM bulkhead.audit_leaves WHERE tenant_id = $1), \
                (SELECT count(*) FROM bulkhead.audit_events WHERE tenant_id = $1)",
    )
    .bind(a.id.uuid())
    .fetch_one(tx.conn())
    .await
    .unwrap();
    assert_eq!(total as i64, events);
    assert_eq!((count, max + 1), (events, events));
}

#[tokio::test]
async fn audit_tables_refuse_update_delete_and_truncate() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha-co").await;
    let store = db.app_store().await;
    sequence(&store, a.id).await;
    let mut tx = store.begin(&ctx(a.id), Access::ReadWrite).await.unwrap();
    audit_log::sign_checkpoint(&mut tx, &LogSigningKey::generate(), chrono::Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let app = db.app_pool(1).await;
    let owner = db.owner_pool().await;
    let tenant = a.id.uuid().to_string();
    for table in [
        "audit_events",
        "audit_leaves",
        "audit_nodes",
        "audit_checkpoints",
    ] {
        let set = match table {
            "audit_events" => "outcome = 'failure'",
            "audit_leaves" => "leaf_index = leaf_index + 100",
            "audit_nodes" => "node_index = node_index + 100",
            _ => "tree_size = tree_size + 1",
        };
        for (who, pool) in [("app", &app), ("owner", &owner)] {
            for statement in [
                format!("UPDATE bulkhead.{table} SET {set}"),
                format!("DELETE FROM bulkhead.{table}"),
                format!("TRUNCATE bulkhead.{table}"),
            ] {
                let mut conn = pool.begin().await.unwrap();
                sqlx::query("SELECT set_config('bulkhead.tenant_id', $1, true)")
                    .bind(&tenant)
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                let err = sqlx::query(&statement).execute(&mut *conn).await;
                let code = err
                    .as_ref()
                    .err()
                    .and_then(|e| e.as_database_error())
                    .and_then(|e| e.code().map(|c| c.into_owned()));
                assert_eq!(
                    code.as_deref(),
                    Some("42501"),
                    "{who}: {statement} was not refused: {err:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn retention_purges_bodies_and_keeps_the_tree_verifiable() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha-co").await;
    let b = create_tenant(&db, "beta-co").await;
    let store = db.app_store().await;
    write_events(&store, a.id, 5).await;
    write_events(&store, b.id, 5).await;
    sequence(&store, a.id).await;
    sequence(&store, b.id).await;
    // An event written after sequencing is never purged (it has no leaf yet).
    write_events(&store, a.id, 1).await;
    let key = LogSigningKey::generate();
    let before = export_verifies(&store, a.id, &key).await;
    assert!(before.verified);
    let mut tx = store.begin(&ctx(a.id), Access::ReadWrite).await.unwrap();
    let old_size = audit_log::tree_size(&mut tx).await.unwrap();
    let old_root = audit_log::root_at(&mut tx, old_size).await.unwrap();
    audit_retention::set_retention_days(&mut tx, 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let owner = db.owner_store().await;
    let later = chrono::Utc::now() + chrono::Duration::days(2);
    let purged = audit_retention::purge(&owner, &ctx(a.id), later)
        .await
        .unwrap();
    assert_eq!(purged, old_size, "every sequenced body of A is purged");
    let members: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
         WHERE r.rolname = 'bulkhead_audit_maintenance'",
    )
    .fetch_one(&db.owner_pool().await)
    .await
    .unwrap();
    assert_eq!(members, 0, "the purge's membership is not left behind");
    // B (default 365 days) keeps everything.
    assert_eq!(
        audit_retention::purge(&owner, &ctx(b.id), later)
            .await
            .unwrap(),
        0
    );

    sequence(&store, a.id).await;
    let mut tx = store.begin(&ctx(a.id), Access::ReadOnly).await.unwrap();
    assert_eq!(
        audit_log::root_at(&mut tx, old_size).await.unwrap(),
        old_root
    );
    let new_size = audit_log::tree_size(&mut tx).await.unwrap();
    let proof = audit_log::consistency_proof(&mut tx, old_size, new_size)
        .await
        .unwrap()
        .unwrap();
    let new_root = audit_log::root_at(&mut tx, new_size).await.unwrap();
    tree::verify_consistency(old_size, new_size, &old_root, &new_root, &proof.proof).unwrap();
    drop(tx);
    let after = export_verifies(&store, a.id, &key).await;
    assert!(after.verified, "{after:?}");
    assert_eq!(after.purged, old_size);
    let purge_events: i64 = {
        let mut tx = store.begin(&ctx(a.id), Access::ReadOnly).await.unwrap();
        sqlx::query_scalar(
            "SELECT count(*) FROM bulkhead.audit_events e JOIN bulkhead.audit_leaves l \
             ON l.tenant_id = e.tenant_id AND l.event_id = e.id \
             WHERE e.tenant_id = $1 AND e.action = 'audit.purge' \
               AND (e.metadata->>'through_leaf')::bigint = $2",
        )
        .bind(a.id.uuid())
        .bind(old_size as i64 - 1)
        .fetch_one(tx.conn())
        .await
        .unwrap()
    };
    assert_eq!(
        purge_events, 1,
        "the purge is in the log, naming the last leaf it purged"
    );

    // The app role cannot purge: it is a member of no role.
    let app = db.app_pool(1).await;
    let err = sqlx::query("SET ROLE bulkhead_audit_maintenance")
        .execute(&app)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501")
    );
}
