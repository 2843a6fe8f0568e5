//! The plans the recorder's statements keep for a session stay right as a tenant grows (issue
//! 25, migration 0041), and a publish takes the quota counters in the tenants' lock order
//! (migration 0043).
//!
//! The attempt log's quota trigger keeps its plans for the session. One made while the tenant had
//! a few messages read every message of the tenant for each attempt recorded once it had
//! thousands: a plan that looks fine in every fresh `EXPLAIN` and is wrong only on a connection
//! that lived through the tenant's growth, which every pooled serving connection does.

use std::time::Duration;

use bulkhead_core::{Clock, TenantContext};
use bulkhead_store::tenant::webhooks::{self as store, Success};
use bulkhead_store::{Access, Store};
use chrono::Utc;
use sqlx::PgPool;

use bulkhead_test_support::counters::BytesCounterHeld;

use crate::delivery::Rig;

/// Index entries read so far from `index`, as the statistics have them once every backend has
/// reported (a backend reports at most once a second, when idle).
async fn entries_read(su: &PgPool, index: &str) -> i64 {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(su)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_stat_all_indexes \
         WHERE indexrelname = $1",
    )
    .bind(index)
    .fetch_one(su)
    .await
    .unwrap()
}

#[tokio::test]
async fn recording_an_attempt_does_not_read_the_tenants_other_messages() {
    let rig = Rig::new(Clock::system()).await;
    let db = &rig.db;
    // No autovacuum: an ANALYZE during the test would make the connection plan again, and the
    // test would pass without the fix it guards (so this comes before any plan is made).
    let su = db.superuser_pool().await;
    sqlx::query("ALTER TABLE bulkhead.webhook_messages SET (autovacuum_enabled = false)")
        .execute(&su)
        .await
        .unwrap();
    let ctx = rig.tenant("acme").await;
    let (endpoint, _) = rig
        .endpoint(&ctx, "https://hooks.receiver.example/in")
        .await;
    let message = rig.publish(&ctx, 1).await;
    let mut tx = rig.store.begin(&ctx, Access::ReadOnly).await.unwrap();
    let delivery = store::deliveries_of(&mut tx, message).await.unwrap()[0].id;
    drop(tx);
    // One connection records every time: the plans kept are that connection's.
    let store = Store::connect_app(db.app_options.clone(), 1).await.unwrap();
    let success = Success {
        delivery,
        message,
        endpoint,
        attempted_at: Utc::now(),
        status_code: 200,
        latency_ms: 1,
        response_sample: String::new(),
    };
    let record = || async {
        let mut tx = store.begin(&ctx, Access::ReadWrite).await.unwrap();
        store::record_successes(&mut tx, std::slice::from_ref(&success))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    };
    // More than the five runs after which PostgreSQL settles on a plan it keeps.
    for _ in 0..8 {
        record().await;
    }
    // The tenant grows by 5,000 messages (written as the superuser; counted, and well inside
    // the free plan's 10,000).
    sqlx::query(
        "INSERT INTO bulkhead.webhook_messages (tenant_id, id, event_type, source, payload) \
         SELECT $1, gen_random_uuid(), 'invoice.paid', 'tenant', '{}' \
         FROM generate_series(1, 5000)",
    )
    .bind(ctx.tenant_id().uuid())
    .execute(&su)
    .await
    .unwrap();
    let before = entries_read(&su, "webhook_messages_by_age").await;
    record().await;
    let after = entries_read(&su, "webhook_messages_by_age").await;
    assert!(
        after - before < 100,
        "recording one attempt read {} entries of the tenant's messages by age",
        after - before
    );
}

/// A tenant with one endpoint and one published message, so that its counter rows exist (a
/// row made by a waiting transaction would be invisible to the probes); and a superuser pool.
async fn a_tenant_that_has_published() -> (Rig, PgPool, TenantContext) {
    let rig = Rig::new(Clock::system()).await;
    let su = rig.db.superuser_pool().await;
    let ctx = rig.tenant("acme").await;
    rig.endpoint(&ctx, "https://hooks.receiver.example/in")
        .await;
    rig.publish(&ctx, 0).await;
    (rig, su, ctx)
}

/// Publishes one message of the tenant in a task of its own; `statements_done` is told when the
/// publish's statements have run, before its COMMIT.
fn publish_in_background(
    rig: &Rig,
    ctx: &TenantContext,
    statements_done: Option<tokio::sync::oneshot::Sender<()>>,
) -> tokio::task::JoinHandle<()> {
    let store = rig.store.clone();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut tx = store.begin(&ctx, Access::ReadWrite).await.unwrap();
        store::publish(
            &mut tx,
            "invoice.paid",
            &serde_json::json!({ "n": 1 }),
            bulkhead_store::tenant::webhooks::MessageSource::Tenant,
            None,
            Utc::now(),
        )
        .await
        .unwrap();
        if let Some(done) = statements_done {
            let _ = done.send(());
        }
        tx.commit().await.unwrap();
    })
}

/// Migration 0043: a publish charges its counters in one statement. Its lock order is the one
/// every writer of a tenant follows (docs/quotas.md): the `stored_bytes` counter first. A
/// publish that waits for `stored_bytes` must hold no other counter meanwhile, or a writer
/// holding `stored_bytes` and wanting that counter would deadlock with it.
#[tokio::test]
async fn a_publish_waiting_for_the_bytes_counter_holds_no_other_counter() {
    let (rig, su, ctx) = a_tenant_that_has_published().await;
    let blocker = BytesCounterHeld::take(&su, ctx.tenant_id().uuid()).await;
    let publishing = publish_in_background(&rig, &ctx, None);
    blocker.wait_for_a_waiter("the publish").await;
    // Every other counter of the tenant is free while it waits.
    let free = blocker.others_free("kind <> 'stored_bytes'").await;
    assert!(
        free.is_ok(),
        "a publish waiting for stored_bytes held another counter: {free:?}"
    );
    blocker.release().await;
    publishing.await.unwrap();
}

/// A publish takes the tenant's counters only at its commit (migration 0045): its statements
/// run while another transaction holds `stored_bytes`, and only the COMMIT waits for it. Held
/// from the insert, the counter queued one tenant's publishes behind each other's client round
/// trips and WAL flushes.
#[tokio::test]
async fn a_publish_takes_the_counters_only_at_its_commit() {
    let (rig, su, ctx) = a_tenant_that_has_published().await;
    let tenant = ctx.tenant_id().uuid();
    let messages_used = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT used FROM bulkhead.tenant_quotas WHERE tenant_id = $1 AND kind = 'webhook_messages'",
        )
        .bind(tenant)
        .fetch_one(&su)
        .await
        .unwrap()
    };
    let before = messages_used().await;
    let blocker = BytesCounterHeld::take(&su, tenant).await;
    let (statements_done, statements_done_rx) = tokio::sync::oneshot::channel();
    let publishing = publish_in_background(&rig, &ctx, Some(statements_done));
    // The publish's statements finish while the counter is held; then its commit waits for it.
    // Whichever the server reports first decides (no sleep decides anything).
    let mut statements_done_rx = statements_done_rx;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if statements_done_rx.try_recv().is_ok() {
            break;
        }
        if blocker.someone_waits().await {
            // Blocked in its commit only if its statements had finished (they signal first).
            assert!(
                statements_done_rx.try_recv().is_ok(),
                "the publish waited for the bytes counter before its commit"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the publish neither finished its statements nor waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    blocker.wait_for_a_waiter("the commit").await;
    assert_eq!(messages_used().await, before, "charged before the commit");
    blocker.release().await;
    publishing.await.unwrap();
    assert_eq!(messages_used().await, before + 1, "charged at the commit");
}
