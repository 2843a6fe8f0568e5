//! Issue 28.3: a tenant's heavy reads run on backends the scheduler serves after everyone
//! else's, when the topology has a heavy-read pool (the embedded cluster's default).

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use bulkhead_store::cluster::niced::{self, BACKEND_NICE};
use bulkhead_store::placement::gate::HEAVY_READ;
use bulkhead_store::{Access, Store};
use bulkhead_test_support::{create_tenant, TestDb};

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::for_test(
        tenant,
        Actor::System { component: "test" },
        RequestId::new(),
    )
}

/// The nice value of the backend serving one read-only transaction of `tenant`.
async fn backend_nice(store: &Store, tenant: TenantId) -> i32 {
    let mut tx = store.begin(&ctx(tenant), Access::ReadOnly).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(tx.conn())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    nice_of(pid)
}

/// Field 19 of `/proc/<pid>/stat` (after the command name, which may hold spaces).
fn nice_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    after_name
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn heavy_reads_run_on_reniced_backends_and_light_ones_do_not() {
    let db = TestDb::new().await;
    let tenant = create_tenant(&db, "acme").await.id;
    let heavy_pool = niced::connect_niced(db.app_options.clone(), 2)
        .await
        .unwrap();
    let store = db
        .app_store()
        .await
        .reconfigured(|t| t.heavy_reads = Some(heavy_pool));

    let light = backend_nice(&store, tenant).await;
    let heavy = HEAVY_READ.scope(true, backend_nice(&store, tenant)).await;
    assert_eq!(
        heavy,
        (light + BACKEND_NICE).min(19),
        "the heavy read's backend was not reniced"
    );
    // The serving pool's backends are untouched by the heavy ones.
    assert_eq!(backend_nice(&store, tenant).await, light);
}

#[tokio::test]
async fn without_a_heavy_read_pool_heavy_reads_use_the_serving_pool() {
    let db = TestDb::new().await;
    let tenant = create_tenant(&db, "acme").await.id;
    let store = db.app_store().await;
    let light = backend_nice(&store, tenant).await;
    let heavy = HEAVY_READ.scope(true, backend_nice(&store, tenant)).await;
    assert_eq!(heavy, light);
}
