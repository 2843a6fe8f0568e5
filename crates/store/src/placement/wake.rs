//! Wake-ups for webhook deliveries made due by this process's transactions.
//!
//! A `NOTIFY` sent inside a writing transaction makes PostgreSQL take one cluster-wide lock from
//! that transaction's pre-commit to the end of its commit, so every notifying transaction of the
//! cluster commits one at a time: with `synchronous_commit = on`, one WAL flush at a time, which
//! defeats group commit (pgbench, eight clients, one insert per transaction on this machine's
//! PostgreSQL 15: 10,700–12,200 commits/s without the `NOTIFY`, 4,830–4,950 with it;
//! docs/webhooks.md).
//! Every publish used to notify that way (the due trigger of migration 0012).
//!
//! Now a transaction opened by [`crate::Store::begin`] for writing asks the due trigger not to
//! notify (`bulkhead.webhook_wake = after_commit`, set by the door; migration 0030), and the
//! repository functions that make deliveries due mark it ([`crate::TenantTx`]); after its commit
//! the store wakes this process's dispatchers in memory and a background task tells every other
//! process with one `NOTIFY` of its own, outside every writer's transaction, folding the wake-ups
//! that arrive while one is being sent into the next.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::{watch, Notify};

/// The NOTIFY channel of due webhook deliveries, on the registry's database where every process
/// listens. The door sends it after commits ([`crate::TenantTx`]); the due trigger sends it from
/// writers outside the door; the webhook repository ([`crate::tenant::webhooks`]) listens.
pub const WEBHOOK_DUE_CHANNEL: &str = "bulkhead_webhooks";

/// One store's wake-ups (shared by its clones).
pub(crate) struct DueWakeups {
    // Bumped once per announcing commit; every dispatcher of the process watches it. A watch
    // channel, not a `Notify`: several dispatchers may share a store, and none may miss one.
    local: watch::Sender<u64>,
    remote: Arc<RemoteWake>,
    // Where every process listens (the registry's database).
    registry: PgPool,
    // The sending task, started by the first announcement on the runtime it came from, and
    // started again if that runtime has gone (a store may outlive one runtime in tests and
    // embedders).
    sender: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct RemoteWake {
    pending: AtomicBool,
    // Set when the store is dropped: the task ends instead of holding the pool.
    closed: AtomicBool,
    kick: Notify,
}

impl DueWakeups {
    pub(crate) fn new(registry: PgPool) -> Self {
        Self {
            local: watch::Sender::new(0),
            remote: Arc::new(RemoteWake {
                pending: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                kick: Notify::new(),
            }),
            registry,
            sender: Mutex::new(None),
        }
    }

    /// A receiver that changes after every commit that made deliveries due.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.local.subscribe()
    }

    /// Called after a commit that made deliveries due.
    pub(crate) fn announce(&self) {
        self.local.send_modify(|n| *n = n.wrapping_add(1));
        if !self.remote.pending.swap(true, Ordering::AcqRel) {
            self.remote.kick.notify_one();
        }
        let mut sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if sender.as_ref().is_none_or(|task| task.is_finished()) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    *sender = Some(
                        runtime.spawn(send_remote(self.registry.clone(), self.remote.clone())),
                    );
                }
                Err(_) => tracing::warn!(
                    "no async runtime: other processes learn of due webhook deliveries by polling"
                ),
            }
        }
    }
}

impl Drop for DueWakeups {
    fn drop(&mut self) {
        self.remote.closed.store(true, Ordering::Release);
        self.remote.kick.notify_one();
    }
}

/// Sends `NOTIFY bulkhead_webhooks` to the registry's database whenever announcements are
/// pending: one at a time, so a burst of commits costs one or two notifications. Ends with the
/// store or the pool. A failed send is logged and dropped: other processes still poll.
async fn send_remote(registry: PgPool, remote: Arc<RemoteWake>) {
    loop {
        remote.kick.notified().await;
        if remote.closed.load(Ordering::Acquire) {
            return;
        }
        while remote.pending.swap(false, Ordering::AcqRel) {
            if registry.is_closed() {
                return;
            }
            if let Err(err) = sqlx::query("SELECT pg_notify($1, '')")
                .bind(WEBHOOK_DUE_CHANNEL)
                .execute(&registry)
                .await
            {
                tracing::warn!(error = %err, "webhook wake-up not sent to other processes");
            }
        }
    }
}
