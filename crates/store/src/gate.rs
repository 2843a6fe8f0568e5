//! What one tenant may hold of the shared database: connections in use, and how long a
//! statement may run.
//!
//! The serving pool is shared by every tenant. Without a cap one tenant's heavy queries (24
//! concurrent lists of a million rows) take every connection and the others wait behind them
//! (p99 1.2 s). So:
//!
//! - **Connections in use per tenant**: a [`TenantTx`](crate::TenantTx) holds one of its tenant's
//!   permits from before it takes a connection until it ends. The cap defaults to a quarter of
//!   the pool (at least 1); a tenant at its cap queues behind its own transactions in arrival
//!   order (tokio's semaphore is fair), never in front of other tenants, and gives up after the
//!   pool's acquire timeout (503).
//! - **Statement timeout**: the server sets one per route class ([`STATEMENT_TIMEOUT`]), applied
//!   transaction-locally by the door's first statement (no extra round trip). Tasks that set none
//!   (the worker, operator commands) keep the database's setting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_core::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::StoreError;

tokio::task_local! {
    /// The `statement_timeout` of every tenant transaction this task opens (a request's route
    /// class). Unset: the database's own setting.
    pub static STATEMENT_TIMEOUT: Duration;
}

/// The timeout [`STATEMENT_TIMEOUT`] asks for, as `statement_timeout` text (milliseconds).
pub(crate) fn statement_timeout() -> Option<String> {
    STATEMENT_TIMEOUT
        .try_with(|timeout| timeout.as_millis().max(1).to_string())
        .ok()
}

/// Per-tenant connection permits.
#[derive(Debug)]
pub(crate) struct TenantGate {
    cap: usize,
    wait: Duration,
    tenants: Arc<Mutex<HashMap<TenantId, Arc<Semaphore>>>>,
}

/// One transaction's place under its tenant's cap; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct GatePermit {
    permit: Option<OwnedSemaphorePermit>,
    semaphore: Arc<Semaphore>,
    tenant: TenantId,
    tenants: Arc<Mutex<HashMap<TenantId, Arc<Semaphore>>>>,
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.permit.take());
        // The map's reference and ours alone: nobody holds or waits; forget the tenant so the
        // map stays as small as the set of tenants with open transactions.
        if Arc::strong_count(&self.semaphore) == 2 {
            tenants.remove(&self.tenant);
        }
    }
}

impl TenantGate {
    /// A gate letting each tenant hold `cap` transactions, waiting at most `wait` for one.
    pub(crate) fn new(cap: usize, wait: Duration) -> Self {
        Self {
            cap: cap.max(1),
            wait,
            tenants: Arc::default(),
        }
    }

    /// The default cap for a pool of `pool_size`: a quarter, at least 1.
    pub(crate) fn default_cap(pool_size: u32) -> usize {
        usize::try_from(pool_size / 4).unwrap_or(1).max(1)
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Waits (in arrival order) for one of the tenant's places.
    pub(crate) async fn enter(&self, tenant: TenantId) -> Result<GatePermit, StoreError> {
        let semaphore = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            tenants
                .entry(tenant)
                .or_insert_with(|| Arc::new(Semaphore::new(self.cap)))
                .clone()
        };
        let permit = match tokio::time::timeout(self.wait, semaphore.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                tracing::warn!(tenant_id = %tenant, cap = self.cap, "tenant at its database connection cap for too long");
                // Remove the entry if we were the last user of it.
                let holder = GatePermit {
                    permit: None,
                    semaphore,
                    tenant,
                    tenants: self.tenants.clone(),
                };
                drop(holder);
                return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
            }
        };
        Ok(GatePermit {
            permit: Some(permit),
            semaphore,
            tenant,
            tenants: self.tenants.clone(),
        })
    }

    /// Transactions the tenant holds now.
    pub(crate) fn in_use(&self, tenant: TenantId) -> usize {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants
            .get(&tenant)
            .map_or(0, |s| self.cap - s.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_at_its_cap_waits_and_others_do_not() {
        let gate = TenantGate::new(2, Duration::from_millis(50));
        let a = TenantId::from_uuid(uuid::Uuid::from_u128(1));
        let b = TenantId::from_uuid(uuid::Uuid::from_u128(2));
        let first = gate.enter(a).await.unwrap();
        let _second = gate.enter(a).await.unwrap();
        assert_eq!(gate.in_use(a), 2);
        assert!(gate.enter(a).await.is_err(), "a third place was given");
        let _other = gate.enter(b).await.unwrap();
        drop(first);
        let _third = gate.enter(a).await.unwrap();
        drop(_third);
        drop(_second);
        assert_eq!(
            gate.tenants.lock().unwrap().len(),
            1,
            "tenant a not forgotten"
        );
    }
}
