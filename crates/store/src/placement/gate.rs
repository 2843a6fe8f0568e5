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
//! - **Heavy reads per tenant**: a transaction opened while [`HEAVY_READ`] is set (the server
//!   sets it for list routes: the reads whose cost grows with the tenant's data) also holds one
//!   of the tenant's heavy places, [`HEAVY_READ_CAP`] per process. The connection cap bounds how
//!   many of a tenant's queries hold connections, not how much CPU they take; on a small
//!   machine five concurrent scans of a million-row tenant, each runnable beside the victim's
//!   backend, multiplied another tenant's p99 eight-fold. One at a time, queued in arrival order
//!   behind the tenant's own, leaves the others' requests one competitor (issue 28.3).
//! - **Statement timeout**: the server sets one per route class ([`STATEMENT_TIMEOUT`]), applied
//!   transaction-locally by the door's first statement (no extra round trip). Tasks that set none
//!   (the worker, operator commands) keep the database's setting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_core::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::StoreError;

tokio::task_local! {
    /// The `statement_timeout` of every tenant transaction this task opens (a request's route
    /// class). Unset: the database's own setting.
    pub static STATEMENT_TIMEOUT: Duration;
    /// Set (to `true`) while a task serves a heavy read: its tenant transactions also take one
    /// of the tenant's [`HEAVY_READ_CAP`] places.
    pub static HEAVY_READ: bool;
}

/// Heavy reads ([`HEAVY_READ`]) one tenant runs at once in this process.
pub const HEAVY_READ_CAP: usize = 1;

/// The timeout [`STATEMENT_TIMEOUT`] asks for, as `statement_timeout` text (milliseconds).
pub(crate) fn statement_timeout() -> Option<String> {
    STATEMENT_TIMEOUT
        .try_with(|timeout| timeout.as_millis().max(1).to_string())
        .ok()
}

fn heavy_read() -> bool {
    HEAVY_READ.try_with(|heavy| *heavy).unwrap_or(false)
}

type Lanes = Arc<Mutex<HashMap<TenantId, Arc<Semaphore>>>>;

/// Places of one kind, per tenant; a tenant's entry exists only while someone holds or waits.
#[derive(Debug)]
struct Lane {
    cap: usize,
    tenants: Lanes,
}

/// One place in a lane; dropping it frees the place.
#[derive(Debug)]
struct LanePermit {
    permit: Option<OwnedSemaphorePermit>,
    semaphore: Arc<Semaphore>,
    tenant: TenantId,
    tenants: Lanes,
}

impl Drop for LanePermit {
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

impl Lane {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            tenants: Arc::default(),
        }
    }

    /// Waits (in arrival order) until `deadline` for one of the tenant's places.
    async fn enter(&self, tenant: TenantId, deadline: Instant) -> Option<LanePermit> {
        let semaphore = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            tenants
                .entry(tenant)
                .or_insert_with(|| Arc::new(Semaphore::new(self.cap)))
                .clone()
        };
        // Built before the wait: if this future is dropped while waiting (the client went
        // away), its drop still removes the tenant's entry when nobody else holds or waits.
        let mut held = LanePermit {
            permit: None,
            semaphore,
            tenant,
            tenants: self.tenants.clone(),
        };
        let acquire = held.semaphore.clone().acquire_owned();
        if let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, acquire).await {
            held.permit = Some(permit);
        }
        held.permit.is_some().then_some(held)
    }

    fn in_use(&self, tenant: TenantId) -> usize {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants
            .get(&tenant)
            .map_or(0, |s| self.cap - s.available_permits())
    }
}

/// Per-tenant connection permits, and heavy-read permits.
#[derive(Debug)]
pub(crate) struct TenantGate {
    wait: Duration,
    connections: Lane,
    heavy: Lane,
}

/// One transaction's places under its tenant's caps; dropping it frees them.
#[derive(Debug)]
pub(crate) struct GatePermit {
    // Field order is drop order: the connection place goes first, so a heavy read queued
    // behind this one never finds the tenant's connections still counted as taken.
    _connection: LanePermit,
    _heavy: Option<LanePermit>,
}

impl GatePermit {
    /// Whether this transaction holds a heavy place (it serves a heavy read).
    pub(crate) fn is_heavy(&self) -> bool {
        self._heavy.is_some()
    }
}

impl TenantGate {
    /// A gate letting each tenant hold `cap` transactions, waiting at most `wait` for one.
    pub(crate) fn new(cap: usize, wait: Duration) -> Self {
        Self {
            wait,
            connections: Lane::new(cap),
            heavy: Lane::new(HEAVY_READ_CAP),
        }
    }

    /// The default cap for a pool of `pool_size`: a quarter, at least 1.
    pub(crate) fn default_cap(pool_size: u32) -> usize {
        usize::try_from(pool_size / 4).unwrap_or(1).max(1)
    }

    pub(crate) fn cap(&self) -> usize {
        self.connections.cap
    }

    /// Waits (in arrival order, at most the pool's acquire timeout in all) for one of the
    /// tenant's places, and first for a heavy place when the task serves a heavy read.
    pub(crate) async fn enter(&self, tenant: TenantId) -> Result<GatePermit, StoreError> {
        let deadline = Instant::now() + self.wait;
        let heavy = if heavy_read() {
            match self.heavy.enter(tenant, deadline).await {
                Some(permit) => Some(permit),
                None => return Err(self.gave_up(tenant, "heavy read")),
            }
        } else {
            None
        };
        match self.connections.enter(tenant, deadline).await {
            Some(connection) => Ok(GatePermit {
                _connection: connection,
                _heavy: heavy,
            }),
            None => Err(self.gave_up(tenant, "database connection")),
        }
    }

    fn gave_up(&self, tenant: TenantId, what: &'static str) -> StoreError {
        tracing::warn!(tenant_id = %tenant, cap = self.connections.cap, heavy_cap = self.heavy.cap, what, "tenant at its {what} cap for too long");
        StoreError::Database(sqlx::Error::PoolTimedOut)
    }

    /// Transactions the tenant holds now.
    pub(crate) fn in_use(&self, tenant: TenantId) -> usize {
        self.connections.in_use(tenant)
    }

    /// Heavy reads the tenant runs now.
    #[cfg(test)]
    pub(crate) fn heavy_in_use(&self, tenant: TenantId) -> usize {
        self.heavy.in_use(tenant)
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
            gate.connections.tenants.lock().unwrap().len(),
            1,
            "tenant a not forgotten"
        );
    }

    #[tokio::test]
    async fn a_tenant_runs_one_heavy_read_at_a_time_and_others_theirs() {
        let gate = TenantGate::new(4, Duration::from_millis(50));
        let a = TenantId::from_uuid(uuid::Uuid::from_u128(1));
        let b = TenantId::from_uuid(uuid::Uuid::from_u128(2));
        let first = HEAVY_READ.scope(true, gate.enter(a)).await.unwrap();
        assert_eq!(gate.heavy_in_use(a), HEAVY_READ_CAP);
        assert!(
            HEAVY_READ.scope(true, gate.enter(a)).await.is_err(),
            "a second heavy read ran beside the first"
        );
        // Light transactions of the same tenant, and other tenants' heavy reads, still run.
        let _light = gate.enter(a).await.unwrap();
        let _other = HEAVY_READ.scope(true, gate.enter(b)).await.unwrap();
        assert_eq!(gate.in_use(a), 2);
        // A waiter gets the place when the first read ends.
        let waiter = tokio::spawn({
            let gate = Arc::new(gate);
            let g = gate.clone();
            async move {
                let permit = HEAVY_READ.scope(true, g.enter(a)).await;
                (permit.is_ok(), gate)
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        let (admitted, gate) = waiter.await.unwrap();
        assert!(admitted, "the queued heavy read was not admitted");
        assert_eq!(gate.heavy_in_use(a), 0, "the waiter's permit was dropped");
    }

    /// A wait dropped halfway (the client went away) leaves no entry behind.
    #[tokio::test]
    async fn a_cancelled_wait_leaves_no_entry() {
        let gate = Arc::new(TenantGate::new(1, Duration::from_secs(30)));
        let a = TenantId::from_uuid(uuid::Uuid::from_u128(1));
        let held = gate.enter(a).await.unwrap();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter(a).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The holder leaves while the waiter waits (so it keeps the entry for the waiter), and
        // the waiter is cancelled before it runs again: only the waiter can clean up now.
        drop(held);
        waiter.abort();
        assert!(
            waiter.await.is_err(),
            "the waiter was cancelled, not served"
        );
        assert!(
            gate.connections.tenants.lock().unwrap().is_empty(),
            "the tenant's entry outlived every holder and waiter"
        );
    }
}
