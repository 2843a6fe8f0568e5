//! Jobs run inside their own tenant's context.

use bulkhead_core::{Actor, SessionId, TenantContext};
use bulkhead_server::service::worker::{enqueue_close_session, Worker};
use bulkhead_store::{tenant::jobs, Access};
use bulkhead_test_support::spawn_app;
use serde_json::Value;

use crate::helpers::{create_session, get_json};

#[tokio::test]
async fn a_job_of_tenant_a_cannot_touch_tenant_bs_rows() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("bravo").await;
    let a_session = create_session(&app, &a, "alpha").await;
    let b_session = create_session(&app, &b, "bravo").await;
    let a_id = SessionId::parse(a_session["id"].as_str().unwrap()).unwrap();
    let b_id = SessionId::parse(b_session["id"].as_str().unwrap()).unwrap();

    let store = app.db.app_store().await;
    let ctx_a = TenantContext::for_test(
        a.id,
        Actor::System { component: "test" },
        Default::default(),
    );
    let mut tx = store.begin(&ctx_a, Access::ReadWrite).await.unwrap();
    let hostile = enqueue_close_session(&mut tx, b_id).await.unwrap();
    let honest = enqueue_close_session(&mut tx, a_id).await.unwrap();
    tx.commit().await.unwrap();

    let worker = Worker::new(store.clone());
    assert_eq!(worker.run_once().await.unwrap(), 2);

    let mut tx = store.begin(&ctx_a, Access::ReadOnly).await.unwrap();
    let (hostile_status, hostile_error) = jobs::status(&mut tx, hostile).await.unwrap();
    let (honest_status, _) = jobs::status(&mut tx, honest).await.unwrap();
    drop(tx);
    assert_eq!(hostile_status, "failed", "{hostile_error:?}");
    assert_eq!(honest_status, "succeeded");
    let b_now: Value = get_json(&app, &b, &format!("/v1/sessions/{b_id}")).await;
    assert_eq!(
        b_now["state"], "active",
        "B's session was touched by A's job"
    );
    let a_now: Value = get_json(&app, &a, &format!("/v1/sessions/{a_id}")).await;
    assert_eq!(a_now["state"], "closed");
}
