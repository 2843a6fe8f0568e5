//! Row-level security at the SQL level, as the application role, with and without the door.

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use bulkhead_store::tenant::sessions::{self, NewSession, SessionState};
use bulkhead_store::{Access, Store};
use bulkhead_test_support::{create_tenant, TestDb};
use serde_json::json;
use sqlx::{Connection, PgPool};

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::for_test(
        tenant,
        Actor::System { component: "test" },
        RequestId::new(),
    )
}

async fn seed_session(store: &Store, tenant: TenantId, title: &str) {
    let mut tx = store.begin(&ctx(tenant), Access::ReadWrite).await.unwrap();
    sessions::create(
        &mut tx,
        &NewSession {
            agent_id: "agent-1".into(),
            title: title.into(),
            state: SessionState::Active,
            metadata: json!({}),
            namespace: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn titles_visible(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT title FROM bulkhead.agent_sessions ORDER BY title")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

#[tokio::test]
async fn without_a_context_the_app_role_sees_and_writes_nothing() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let store = db.app_store().await;
    seed_session(&store, a.id, "a-1").await;

    let app = db.app_pool(2).await;
    assert!(
        titles_visible(&app).await.is_empty(),
        "no context must mean no rows"
    );
    for table in ["agent_sessions", "api_keys", "jobs", "audit_events"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM bulkhead.{table}"))
            .fetch_one(&app)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} visible without a context");
    }
    let err = sqlx::query(
        "INSERT INTO bulkhead.agent_sessions (tenant_id, id, agent_id, title) VALUES ($1, gen_random_uuid(), 'x', 'sneaky')",
    )
    .bind(a.id.uuid())
    .execute(&app)
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{err}");
    // An empty setting is "no context" too.
    let mut conn = app.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('bulkhead.tenant_id', '', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM bulkhead.agent_sessions")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_garbage_context_fails_closed() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    seed_session(&db.app_store().await, a.id, "a-1").await;
    let app = db.app_pool(1).await;
    let mut conn = app.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('bulkhead.tenant_id', $1, true)")
        .bind("' OR true --")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM bulkhead.agent_sessions")
        .fetch_one(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("22P02"),
        "a malformed context must be an error, not all rows"
    );
}

#[tokio::test]
async fn one_tenants_context_never_reaches_anothers_rows() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let b = create_tenant(&db, "bravo").await;
    let store = db.app_store().await;
    seed_session(&store, a.id, "a-1").await;
    seed_session(&store, b.id, "b-1").await;

    let app = db.app_pool(1).await;
    let mut conn = app.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('bulkhead.tenant_id', $1, true)")
        .bind(a.id.uuid().to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let titles: Vec<String> = sqlx::query_scalar("SELECT title FROM bulkhead.agent_sessions")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(titles, ["a-1"]);
    // Even naming B explicitly finds nothing, and writes to B's rows touch nothing.
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM bulkhead.agent_sessions WHERE tenant_id = $1")
            .bind(b.id.uuid())
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(n, 0);
    let updated =
        sqlx::query("UPDATE bulkhead.agent_sessions SET title = 'pwned' WHERE tenant_id = $1")
            .bind(b.id.uuid())
            .execute(&mut *tx)
            .await
            .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    let deleted = sqlx::query("DELETE FROM bulkhead.agent_sessions WHERE title = 'b-1'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    // Moving A's row to B, or inserting as B, violates WITH CHECK.
    let err = sqlx::query("UPDATE bulkhead.agent_sessions SET tenant_id = $1")
        .bind(b.id.uuid())
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    drop(tx);
    drop(conn);

    let su = db.superuser_pool().await;
    assert_eq!(
        titles_visible(&su).await,
        ["a-1", "b-1"],
        "B's data must be unchanged"
    );
}

#[tokio::test]
async fn a_session_level_leftover_on_a_pooled_connection_does_not_leak() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let b = create_tenant(&db, "bravo").await;
    let seed = db.app_store().await;
    seed_session(&seed, a.id, "a-1").await;
    seed_session(&seed, b.id, "b-1").await;

    // One connection, so every use below is the same PostgreSQL session.
    let pool = db.app_pool(1).await;
    // A buggy caller sets A's context at session level (is_local = false) and returns the
    // connection to the pool.
    sqlx::query("SELECT set_config('bulkhead.tenant_id', $1, false)")
        .bind(a.id.uuid().to_string())
        .execute(&pool)
        .await
        .unwrap();
    let store = Store::from_pool_unchecked(pool.clone());
    // The next request, for B, sees only B.
    let mut tx = store.begin(&ctx(b.id), Access::ReadOnly).await.unwrap();
    let seen: Vec<String> = sessions::list(
        &mut tx,
        &sessions::ListSessions {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .into_iter()
    .map(|s| s.title)
    .collect();
    assert_eq!(seen, ["b-1"]);
    tx.commit().await.unwrap();
    // And after it, the connection carries no context at all: the door cleared the leftover.
    assert!(
        titles_visible(&pool).await.is_empty(),
        "the leftover survived the door"
    );
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('bulkhead.tenant_id', true)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(setting.as_deref().unwrap_or(""), "");
}

#[tokio::test]
async fn read_only_transactions_refuse_writes() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let store = db.app_store().await;
    let mut tx = store.begin(&ctx(a.id), Access::ReadOnly).await.unwrap();
    let err = sessions::create(
        &mut tx,
        &NewSession {
            agent_id: "x".into(),
            title: "t".into(),
            state: SessionState::Active,
            metadata: json!({}),
            namespace: None,
        },
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:?}").contains("25006"),
        "expected read_only_sql_transaction, got {err:?}"
    );
}

#[tokio::test]
async fn the_server_refuses_to_serve_through_a_role_that_bypasses_rls() {
    let db = TestDb::new().await;
    // The owner owns the tables: serving through it must be refused.
    let err = Store::connect_app(db.owner_options.clone(), 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("owns"), "{err}");
    // A superuser bypasses RLS entirely.
    let err = Store::connect_app(db.superuser_options.clone(), 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("superuser"), "{err}");
    // The real app role is accepted.
    Store::connect_app(db.app_options.clone(), 1).await.unwrap();
}
