//! Job claiming across tenants: only ids leave the claim, refused tenants' jobs are refused.

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use bulkhead_store::placement::registry::TenantStatus;
use bulkhead_store::tenant::jobs::{self, ClaimVerdict};
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

async fn enqueue(store: &Store, tenant: TenantId) -> bulkhead_core::JobId {
    let mut tx = store.begin(&ctx(tenant), Access::ReadWrite).await.unwrap();
    let id = jobs::enqueue(&mut tx, "session.close", &json!({}), None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn claims_are_exclusive_and_refuse_inactive_or_missing_tenants() {
    let db = TestDb::new().await;
    let active = create_tenant(&db, "active-co").await;
    let suspended = create_tenant(&db, "suspended-co").await;
    let store = db.app_store().await;
    let run_job = enqueue(&store, active.id).await;
    let suspended_job = enqueue(&store, suspended.id).await;
    // A job whose tenant is no longer in the registry (deleted by hand, or written by a bug).
    let ghost = create_tenant(&db, "ghost-co").await;
    let ghost_job = enqueue(&store, ghost.id).await;
    sqlx::query("DELETE FROM bulkhead.tenants WHERE id = $1")
        .bind(ghost.id.uuid())
        .execute(&db.owner_pool().await)
        .await
        .unwrap();
    // The door itself refuses a tenant the registry does not know: never "all rows", never a
    // write under an unknown tenant id.
    for access in [Access::ReadOnly, Access::ReadWrite] {
        let refused = store.begin(&ctx(ghost.id), access).await.unwrap_err();
        assert!(
            matches!(refused, bulkhead_store::StoreError::NotFound),
            "{refused:?}"
        );
        let refused = store
            .begin(&ctx(TenantId::new()), access)
            .await
            .unwrap_err();
        assert!(
            matches!(refused, bulkhead_store::StoreError::NotFound),
            "{refused:?}"
        );
    }
    db.owner_store()
        .await
        .set_tenant_status(suspended.id, TenantStatus::Suspended)
        .await
        .unwrap();

    let claimed = store.claim_jobs(10, 60).await.unwrap();
    let verdict = |id| claimed.iter().find(|j| j.id == id).map(|j| j.verdict);
    assert_eq!(claimed.len(), 3);
    assert_eq!(verdict(run_job), Some(ClaimVerdict::Run));
    assert_eq!(verdict(suspended_job), Some(ClaimVerdict::TenantSuspended));
    assert_eq!(verdict(ghost_job), Some(ClaimVerdict::TenantMissing));
    // A second claim finds nothing: the running one is leased, the others are refused for good.
    assert!(store.claim_jobs(10, 60).await.unwrap().is_empty());

    let mut tx = store
        .begin(&ctx(suspended.id), Access::ReadOnly)
        .await
        .unwrap();
    let (status, error) = jobs::status(&mut tx, suspended_job).await.unwrap();
    assert_eq!(status, "refused");
    assert_eq!(error.as_deref(), Some("refused: tenant_suspended"));
}

#[tokio::test]
async fn the_claim_function_confers_no_read_access_to_the_app_role() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let store = db.app_store().await;
    enqueue(&store, a.id).await;
    let app = db.app_pool(1).await;
    // Setting the definer marker by hand gives the app role nothing: that policy is the owner's.
    let mut tx = sqlx::Acquire::begin(&app).await.unwrap();
    sqlx::query("SELECT set_config('bulkhead.definer', 'job_claim', true), set_config('bulkhead.definer', 'api_key_lookup', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM bulkhead.jobs")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM bulkhead.api_keys")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn hostile_claim_arguments_claim_nothing() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let store = db.app_store().await;
    enqueue(&store, a.id).await;
    let app = db.app_pool(1).await;
    let claimed: Vec<(uuid::Uuid,)> =
        sqlx::query_as("SELECT job_id FROM bulkhead.claim_jobs(NULL, NULL)")
            .fetch_all(&app)
            .await
            .unwrap();
    assert!(claimed.is_empty(), "NULL arguments must claim nothing");
    for (limit, lease) in [(-1, 60), (10, 0), (10, -5), (100_000, 60), (10, 86_400)] {
        let result = sqlx::query("SELECT * FROM bulkhead.claim_jobs($1, $2)")
            .bind(limit)
            .bind(lease)
            .execute(&app)
            .await;
        assert!(result.is_err(), "({limit}, {lease}) must be refused");
    }
    assert_eq!(
        store.claim_jobs(10, 60).await.unwrap().len(),
        1,
        "the job is still claimable"
    );
}
