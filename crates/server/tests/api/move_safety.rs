//! Moves killed at bad moments (issue 29): each move event is written exactly once however often
//! the move is re-run, and a switch interrupted before its registry commit leaves the source
//! serving reads and the target dark, so abandoning it is safe.

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use bulkhead_store::hooks::{self, HookPoint, HOOK_INTERRUPTED};
use bulkhead_store::lifecycle::moves::{self, MoveOptions, MoveStep};
use bulkhead_store::{Access, Placement, Store, StoreError};
use bulkhead_test_support::{create_tenant, create_tenant_in, TestDb, TestTier};
use sqlx::PgPool;

fn system(tenant: TenantId) -> TenantContext {
    TenantContext::for_test(
        tenant,
        Actor::System { component: "test" },
        RequestId::new(),
    )
}

fn interrupted(result: Result<impl std::fmt::Debug, StoreError>) {
    let err = result.expect_err("the hook did not stop the operation");
    assert!(
        matches!(&err, StoreError::Invalid(m) if m == HOOK_INTERRUPTED),
        "{err:?}"
    );
}

/// The move events in the tenant's log, oldest first: (action, move_id).
async fn move_events(store: &Store, tenant: TenantId) -> Vec<(String, Option<String>)> {
    let mut tx = store
        .begin(&system(tenant), Access::ReadOnly)
        .await
        .unwrap();
    sqlx::query_as(
        "SELECT action, metadata->>'move_id' FROM audit_events \
         WHERE tenant_id = $1 AND action LIKE 'tenant.move%' ORDER BY id",
    )
    .bind(tenant.uuid())
    .fetch_all(tx.conn())
    .await
    .unwrap()
}

#[tokio::test]
async fn move_events_are_written_exactly_once_across_kills_between_steps() {
    let db = TestDb::new().await;
    let owner = db.owner_store().await;
    let store = db.app_store().await;
    let t = create_tenant(&db, "once-co").await;
    let to = TestTier::Dedicated.placement(&db, &owner).await;

    // Killed after the move was recorded, before its start event: the re-run writes it.
    hooks::fail_once(t.id, HookPoint::MoveRecorded);
    interrupted(moves::move_tenant(&owner, t.id, to.clone(), MoveOptions::default()).await);
    // Killed after `tenant.move` was written, before the record went: the re-run does not
    // write it again.
    hooks::fail_once(t.id, HookPoint::MoveEventWritten);
    interrupted(moves::move_tenant(&owner, t.id, to.clone(), MoveOptions::default()).await);
    moves::move_tenant(&owner, t.id, to.clone(), MoveOptions::default())
        .await
        .unwrap();
    let events = move_events(&store, t.id).await;
    let actions: Vec<&str> = events.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["tenant.move.start", "tenant.move"], "{events:?}");
    let first_move = events[0].1.clone();
    assert!(first_move.is_some());
    assert!(events.iter().all(|(_, id)| *id == first_move), "{events:?}");

    // Abandoned, killed after `tenant.move.abandon` was written: abandoning again finishes the
    // abandonment without a second event.
    moves::move_tenant(
        &owner,
        t.id,
        Placement::Shared,
        MoveOptions {
            stop_after: Some(MoveStep::Copy),
            ..MoveOptions::default()
        },
    )
    .await
    .unwrap_err();
    hooks::fail_once(t.id, HookPoint::AbandonEventWritten);
    interrupted(moves::abandon_move(&owner, t.id).await);
    moves::abandon_move(&owner, t.id).await.unwrap();
    assert!(matches!(
        moves::abandon_move(&owner, t.id).await,
        Err(StoreError::NotFound)
    ));
    let events = move_events(&store, t.id).await;
    let actions: Vec<&str> = events.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "tenant.move.start",
            "tenant.move",
            "tenant.move.start",
            "tenant.move.abandon"
        ],
        "{events:?}"
    );
    assert_eq!(events[2].1, events[3].1);
    assert_ne!(events[2].1, first_move, "each move has its own id");
    assert_eq!(store.location_of(t.id).await.unwrap().placement, to);
}

async fn target_anchor_live(db: &TestDb, to: &Placement, tenant: TenantId) -> Option<bool> {
    let Placement::Dedicated(name) = to else {
        unreachable!()
    };
    let pool = PgPool::connect_with(db.superuser_options_for(name.as_str()))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT live FROM bulkhead.tenants WHERE id = $1")
        .bind(tenant.uuid())
        .fetch_optional(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_interrupted_switch_serves_reads_from_the_source_and_the_target_goes_live_only_after_the_commit(
) {
    let db = TestDb::new().await;
    let owner = db.owner_store().await;
    let store = db.app_store().await;
    // From a tenant schema: its anchor is not the registry row (the case where the old switch
    // retired the source before its commit, refusing reads).
    let t = create_tenant_in(&db, "switch-co", TestTier::Schema).await;
    let source = store.location_of(t.id).await.unwrap().placement;
    assert!(matches!(source, Placement::Schema(_)));
    let mut tx = store.begin(&system(t.id), Access::ReadWrite).await.unwrap();
    sqlx::query(
        "INSERT INTO agent_sessions (tenant_id, id, agent_id, title) VALUES ($1, gen_random_uuid(), 'a', 'kept')",
    )
    .bind(t.id.uuid())
    .execute(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let to = TestTier::Dedicated.placement(&db, &owner).await;

    // Killed inside the switch, before the registry commit.
    hooks::fail_once(t.id, HookPoint::SwitchBeforeCommit);
    interrupted(moves::move_tenant(&owner, t.id, to.clone(), MoveOptions::default()).await);
    // Reads are served from the source; only writes wait.
    let mut read = store
        .begin(&system(t.id), Access::ReadOnly)
        .await
        .expect("reads are served during an interrupted switch");
    let titles: Vec<String> =
        sqlx::query_scalar("SELECT title FROM agent_sessions WHERE tenant_id = $1")
            .bind(t.id.uuid())
            .fetch_all(read.conn())
            .await
            .unwrap();
    assert_eq!(titles, ["kept"]);
    assert_eq!(read.location().placement, source);
    drop(read);
    assert!(matches!(
        store.begin(&system(t.id), Access::ReadWrite).await,
        Err(StoreError::TenantMoving)
    ));
    // The target has not gone live: nothing can have been claimed or served there.
    assert_eq!(target_anchor_live(&db, &to, t.id).await, Some(false));
    // So abandoning is safe, and the tenant is whole at the source again.
    moves::abandon_move(&owner, t.id).await.unwrap();
    assert_eq!(store.location_of(t.id).await.unwrap().placement, source);
    assert!(store.begin(&system(t.id), Access::ReadWrite).await.is_ok());
    assert_eq!(target_anchor_live(&db, &to, t.id).await, None);

    // Killed right after the registry commit: the move can no longer be abandoned, and the
    // re-run makes the target live and finishes.
    let to = TestTier::Dedicated.placement(&db, &owner).await;
    hooks::fail_once(t.id, HookPoint::SwitchCommitted);
    interrupted(moves::move_tenant(&owner, t.id, to.clone(), MoveOptions::default()).await);
    assert_eq!(store.location_of(t.id).await.unwrap().placement, to);
    assert_eq!(target_anchor_live(&db, &to, t.id).await, Some(false));
    let refused = moves::abandon_move(&owner, t.id).await.unwrap_err();
    assert!(matches!(refused, StoreError::Invalid(_)), "{refused:?}");
    moves::move_tenant(&owner, t.id, to.clone(), MoveOptions::default())
        .await
        .unwrap();
    assert_eq!(target_anchor_live(&db, &to, t.id).await, Some(true));
    let mut tx = store.begin(&system(t.id), Access::ReadWrite).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_sessions WHERE tenant_id = $1")
        .bind(t.id.uuid())
        .fetch_one(tx.conn())
        .await
        .unwrap();
    assert_eq!(n, 1);
}
