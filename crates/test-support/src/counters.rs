//! Tests of lock order on the quota counters (docs/quotas.md): hold a tenant's `stored_bytes`
//! counter from another transaction, learn from the server (never from a sleep) when some
//! transaction waits for it, and ask which other counters the waiter holds meanwhile.

use std::time::{Duration, Instant};

use sqlx::{PgPool, Postgres, Transaction};

/// The tenant's `stored_bytes` counter row, locked `FOR UPDATE` by a superuser transaction
/// until [`BytesCounterHeld::release`] (or drop, which rolls back).
#[derive(Debug)]
pub struct BytesCounterHeld {
    tx: Transaction<'static, Postgres>,
    pid: i32,
    su: PgPool,
    tenant: uuid::Uuid,
}

impl BytesCounterHeld {
    /// Locks the row (which must exist: make it with a first counted write).
    pub async fn take(su: &PgPool, tenant: uuid::Uuid) -> Self {
        let mut tx = su.begin().await.expect("begin");
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *tx)
            .await
            .expect("backend pid");
        let locked = sqlx::query(
            "SELECT 1 FROM bulkhead.tenant_quotas \
             WHERE tenant_id = $1 AND kind = 'stored_bytes' FOR UPDATE",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .expect("lock stored_bytes");
        assert_eq!(
            locked.rows_affected(),
            1,
            "the tenant has no stored_bytes row yet"
        );
        Self {
            tx,
            pid,
            su: su.clone(),
            tenant,
        }
    }

    /// Whether some backend is waiting for this one now (`pg_blocking_pids`).
    pub async fn someone_waits(&self) -> bool {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))",
        )
        .bind(self.pid)
        .fetch_one(&self.su)
        .await
        .expect("pg_blocking_pids")
    }

    /// Waits until some backend waits for this one; fails the test naming `who` after 10 s.
    pub async fn wait_for_a_waiter(&self, who: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.someone_waits().await {
            assert!(
                Instant::now() < deadline,
                "{who} never waited for the bytes counter"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Tries to lock, without waiting, the tenant's counters of `kinds` (a SQL condition on
    /// `kind`, such as `kind <> 'stored_bytes'`): `Err` (55P03) when another transaction holds
    /// one of them.
    pub async fn others_free(&self, kinds: &str) -> Result<(), sqlx::Error> {
        let mut probe = self.su.begin().await?;
        // `kinds` is the test's own constant, never input.
        let result = sqlx::query(&format!(
            "SELECT 1 FROM bulkhead.tenant_quotas WHERE tenant_id = $1 AND ({kinds}) FOR UPDATE NOWAIT"
        ))
        .bind(self.tenant)
        .execute(&mut *probe)
        .await;
        probe.rollback().await?;
        result.map(|_| ())
    }

    /// Lets the waiters go.
    pub async fn release(self) {
        self.tx.rollback().await.expect("rollback");
    }
}
