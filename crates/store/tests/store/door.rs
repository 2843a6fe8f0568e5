//! The door's one-round-trip entry (migration 0047): what it refuses, and that a refusal leaves
//! the pooled connection usable.

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use bulkhead_store::placement::entry::sql_literal;
use bulkhead_store::tenant::sessions::{self, NewSession, SessionState};
use bulkhead_store::{Access, Store, StoreError};
use bulkhead_test_support::{create_tenant, TestDb};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::json;

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::for_test(
        tenant,
        Actor::System { component: "test" },
        RequestId::new(),
    )
}

async fn create_session(store: &Store, tenant: TenantId) -> Result<(), StoreError> {
    let mut tx = store.begin(&ctx(tenant), Access::ReadWrite).await?;
    sessions::create(
        &mut tx,
        &NewSession {
            agent_id: "agent-1".into(),
            title: "t".into(),
            state: SessionState::Active,
            metadata: json!({}),
            namespace: None,
        },
    )
    .await?;
    tx.commit().await
}

async fn count_sessions(store: &Store, tenant: TenantId) -> usize {
    let mut tx = store.begin(&ctx(tenant), Access::ReadOnly).await.unwrap();
    let n = sessions::list(
        &mut tx,
        &sessions::ListSessions {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .len();
    tx.commit().await.unwrap();
    n
}

#[tokio::test]
async fn a_refused_entry_leaves_the_pooled_connection_usable() {
    let db = TestDb::new().await;
    let frozen = create_tenant(&db, "frozen").await;
    let other = create_tenant(&db, "other").await;
    // One connection: every transaction below runs on the session the refusal ran on.
    let store = Store::from_pool_unchecked(db.app_pool(1).await);
    create_session(&store, frozen.id).await.unwrap();
    let owner = db.owner_pool().await;
    sqlx::query("UPDATE bulkhead.tenants SET frozen_since = now() WHERE id = $1")
        .bind(frozen.id.uuid())
        .execute(&owner)
        .await
        .unwrap();

    for _ in 0..3 {
        let refused = create_session(&store, frozen.id).await;
        assert!(
            matches!(refused, Err(StoreError::TenantMoving)),
            "a frozen tenant's write must be refused as moving, got {refused:?}"
        );
        // Reads of the frozen tenant go on, and another tenant's writes commit.
        assert_eq!(count_sessions(&store, frozen.id).await, 1);
        create_session(&store, other.id).await.unwrap();
    }
    assert_eq!(count_sessions(&store, other.id).await, 3);

    // A stale route (the anchor no longer live here) is refused as a move in progress, and
    // the connection is still usable afterwards too.
    sqlx::query("UPDATE bulkhead.tenants SET frozen_since = NULL, live = false WHERE id = $1")
        .bind(frozen.id.uuid())
        .execute(&owner)
        .await
        .unwrap();
    let refused = store.begin(&ctx(frozen.id), Access::ReadOnly).await;
    assert!(
        matches!(refused, Err(StoreError::TenantMoving)),
        "a location that is not live must be refused, got {refused:?}"
    );
    create_session(&store, other.id).await.unwrap();
    assert_eq!(count_sessions(&store, other.id).await, 4);
}

#[tokio::test]
async fn an_entered_transaction_has_the_context_and_access_it_asked_for() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let store = Store::from_pool_unchecked(db.app_pool(1).await);
    let mut tx = store.begin(&ctx(a.id), Access::ReadOnly).await.unwrap();
    let (tenant, read_only, plans): (String, String, String) = sqlx::query_as(
        "SELECT current_setting('bulkhead.tenant_id'), current_setting('transaction_read_only'), \
         current_setting('plan_cache_mode')",
    )
    .fetch_one(tx.conn())
    .await
    .unwrap();
    assert_eq!(tenant, a.id.uuid().to_string());
    assert_eq!(
        (read_only.as_str(), plans.as_str()),
        ("on", "force_custom_plan")
    );
    tx.commit().await.unwrap();

    let mut tx = store.begin_snapshot(&ctx(a.id)).await.unwrap();
    let (isolation, read_only): (String, String) = sqlx::query_as(
        "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')",
    )
    .fetch_one(tx.conn())
    .await
    .unwrap();
    assert_eq!(
        (isolation.as_str(), read_only.as_str()),
        ("repeatable read", "on")
    );
    tx.commit().await.unwrap();

    let mut tx = store.begin(&ctx(a.id), Access::ReadWrite).await.unwrap();
    let (tenant, wake, path): (String, String, String) = sqlx::query_as(
        "SELECT current_setting('bulkhead.tenant_id'), \
         current_setting('bulkhead.webhook_wake', true), current_setting('search_path')",
    )
    .fetch_one(tx.conn())
    .await
    .unwrap();
    assert_eq!(tenant, a.id.uuid().to_string());
    assert_eq!(wake, "after_commit");
    assert_eq!(path, "\"bulkhead\", pg_temp");
    drop(tx);

    // Everything was transaction-local: the connection carries no context after it.
    let pool = db.app_pool(1).await;
    let store = Store::from_pool_unchecked(pool.clone());
    store
        .begin(&ctx(a.id), Access::ReadWrite)
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let left: Option<String> =
        sqlx::query_scalar("SELECT current_setting('bulkhead.tenant_id', true)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(left.as_deref().unwrap_or(""), "");
}

/// Any text written by `sql_literal` reads back as itself, with either setting of
/// `standard_conforming_strings`: edge cases, then random text (proptest's generator; the
/// database is async, so the cases are drawn here rather than by the `proptest!` macro).
#[tokio::test]
async fn a_literal_reads_back_as_its_value() {
    let db = TestDb::new().await;
    let pool = db.owner_pool().await;
    let mut values: Vec<String> = [
        "",
        "'",
        "''",
        "\\",
        "\\'",
        "'\\",
        "E'x'",
        "$$",
        "x'; SELECT 1; --",
        "tenant_0a",
        "é€😀",
    ]
    .map(str::to_owned)
    .to_vec();
    let strategy = proptest::string::string_regex("\\PC{0,40}|[\\\\'\"E$; ]{0,12}").unwrap();
    let mut runner = TestRunner::default();
    for _ in 0..200 {
        values.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    let mut conn = pool.acquire().await.unwrap();
    for conforming in ["on", "off"] {
        sqlx::query(&format!("SET standard_conforming_strings = {conforming}"))
            .execute(&mut *conn)
            .await
            .unwrap();
        for value in &values {
            let back: String = sqlx::query_scalar(&format!("SELECT {}", sql_literal(value)))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(&back, value, "standard_conforming_strings = {conforming}");
        }
    }
}

/// An entry cancelled while the database works on it (the request dropped) leaves nothing for
/// the connection's next user: no transaction of its own that the next one would run inside.
#[tokio::test]
async fn a_cancelled_entry_leaves_no_transaction_behind() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let store = Store::from_pool_unchecked(db.app_pool(1).await);
    let owner = db.owner_pool().await;
    // A move's freeze holding the anchor row: a writing entry waits for it (FOR SHARE).
    let mut freeze = owner.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM bulkhead.tenants WHERE id = $1 FOR UPDATE")
        .bind(a.id.uuid())
        .execute(&mut *freeze)
        .await
        .unwrap();
    let waited = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        store.begin(&ctx(a.id), Access::ReadWrite),
    )
    .await;
    assert!(waited.is_err(), "the entry should have been waiting");
    let cancelled_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&owner)
            .await
            .unwrap();
    freeze.rollback().await.unwrap();

    let mut tx = store.begin(&ctx(a.id), Access::ReadWrite).await.unwrap();
    let started: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT xact_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            .fetch_one(tx.conn())
            .await
            .unwrap();
    assert!(
        started > cancelled_at,
        "the next transaction ran inside the cancelled entry's (began {started}, cancelled {cancelled_at})"
    );
    tx.commit().await.unwrap();
}

/// A location whose `tenant_enter` is missing (a schema or database `bulkhead migrate` has not
/// brought up to date, or one an older binary made during a rolling deploy) is still entered,
/// the older way, with the same context and refusals.
#[tokio::test]
async fn a_location_without_the_entry_function_is_entered_the_older_way() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let b = create_tenant(&db, "bravo").await;
    let store = Store::from_pool_unchecked(db.app_pool(1).await);
    create_session(&store, a.id).await.unwrap();
    let owner = db.owner_pool().await;
    sqlx::query(
        "DROP FUNCTION bulkhead.tenant_enter(text, text, text, boolean, boolean, text, text, text, text)",
    )
    .execute(&owner)
    .await
    .unwrap();
    create_session(&store, a.id).await.unwrap();
    create_session(&store, b.id).await.unwrap();
    assert_eq!(count_sessions(&store, a.id).await, 2);
    assert_eq!(count_sessions(&store, b.id).await, 1);
    let mut tx = store.begin_snapshot(&ctx(b.id)).await.unwrap();
    let isolation: String = sqlx::query_scalar("SELECT current_setting('transaction_isolation')")
        .fetch_one(tx.conn())
        .await
        .unwrap();
    assert_eq!(isolation, "repeatable read");
    drop(tx);
    sqlx::query("UPDATE bulkhead.tenants SET frozen_since = now() WHERE id = $1")
        .bind(a.id.uuid())
        .execute(&owner)
        .await
        .unwrap();
    let refused = create_session(&store, a.id).await;
    assert!(
        matches!(refused, Err(StoreError::TenantMoving)),
        "got {refused:?}"
    );
}
