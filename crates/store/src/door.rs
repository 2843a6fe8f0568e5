//! The tenant transaction door: the only way to reach tenant tables.

use std::fmt;

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tracing::Instrument;

use crate::{roles, StoreError};

/// Whether a tenant transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `READ ONLY`: used for GET requests; the database refuses any write.
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

/// A pool of connections plus the door through which tenant data is reached. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("connections", &self.pool.size())
            .finish()
    }
}

// The context is set and any session-level leftover cleared in one round trip. Left-to-right
// evaluation of the select list makes the session-level reset happen before the local value is set.
const SET_CONTEXT_RW: &str = "SELECT set_config('bulkhead.tenant_id', '', false), \
     set_config('bulkhead.tenant_id', $1, true)";
const SET_CONTEXT_RO: &str = "SELECT set_config('bulkhead.tenant_id', '', false), \
     set_config('bulkhead.tenant_id', $1, true), set_config('transaction_read_only', 'on', true)";

impl Store {
    /// Connects the serving pool and checks that the connected role really is subject to RLS
    /// (not superuser, no BYPASSRLS, owns nothing). Refuses to return a store otherwise.
    pub async fn connect_app(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await?;
        roles::verify_app_role(&pool).await?;
        Ok(Self { pool })
    }

    /// Wraps a pool without checking its role. For the owner role (operator commands, which also
    /// go through the door and are also subject to FORCE RLS) and for tests that need a pool of
    /// a particular size.
    pub fn from_pool_unchecked(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Opens one transaction for the context's tenant. Every statement run through the returned
    /// handle sees only that tenant's rows, and can write only that tenant's rows.
    pub async fn begin(&self, ctx: &TenantContext, access: Access) -> Result<TenantTx, StoreError> {
        let span = tracing::debug_span!("tenant_tx", tenant_id = %ctx.tenant_id(), ?access);
        async {
            let tx = self.pool.begin().await?;
            TenantTx::enter(tx, ctx, access).await
        }
        .instrument(span)
        .await
    }

    /// Readiness: the database answers and every compiled-in migration has been applied.
    pub async fn ready(&self) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        crate::migrate::is_current(&mut conn).await
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool, for control-plane statements inside this crate. Tenant tables are invisible to
    /// it without a context (RLS), but nothing outside this crate should need it.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// One open transaction for one tenant. Dropping it without [`TenantTx::commit`] rolls back.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    actor: Actor,
    request_id: RequestId,
}

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl TenantTx {
    /// Sets the tenant context inside an already open transaction. Crate-private: the only
    /// callers are [`Store::begin`] and tenant onboarding, which must write the registry row and
    /// the tenant's first rows in one transaction.
    pub(crate) async fn enter(
        mut tx: Transaction<'static, Postgres>,
        ctx: &TenantContext,
        access: Access,
    ) -> Result<TenantTx, StoreError> {
        let statement = match access {
            Access::ReadOnly => SET_CONTEXT_RO,
            Access::ReadWrite => SET_CONTEXT_RW,
        };
        sqlx::query(statement)
            .bind(ctx.tenant_id().uuid().to_string())
            .execute(&mut *tx)
            .await?;
        Ok(TenantTx {
            tx,
            tenant: ctx.tenant_id(),
            actor: ctx.actor().clone(),
            request_id: ctx.request_id(),
        })
    }

    /// The tenant this transaction is for; queries also filter on it explicitly.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant
    }

    /// Who acts in this transaction (for audit events).
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The request or job run this transaction belongs to.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The connection, already inside the tenant's context. Statements run here are subject to
    /// RLS for this tenant; still filter on [`TenantTx::tenant_id`] explicitly in every query.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Rolls back explicitly (dropping does too, asynchronously).
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}
