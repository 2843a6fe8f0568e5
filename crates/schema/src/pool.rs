//! A small dedicated pool for schema work, outside the async runtime.
//!
//! Why not `spawn_blocking`: its pool grows to 512 threads and queues without bound, so a
//! tenant sending many costly validations would still take every core and unbounded memory.
//! Here a fixed number of threads (with large stacks: validators recurse) takes jobs from a
//! bounded queue; each owner (a tenant) may hold at most a share of the queue, so one tenant
//! filling it leaves room for the others; a caller waits at most the deadline.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a job did not run or did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The queue is full, or this owner already holds its share of it: retry later (503).
    #[error("schema evaluation is busy; retry shortly")]
    Busy,
    /// The job did not finish within the deadline (it may still run to its bounded end).
    #[error("schema evaluation did not finish in time")]
    Deadline,
    /// The job panicked (caught: the pool's thread lives on).
    #[error("schema evaluation failed")]
    Failed,
}

type Job = Box<dyn FnOnce() + Send>;

/// The pool. Cloning shares it.
#[derive(Clone)]
pub struct Evaluator {
    inner: Arc<Inner>,
}

struct Inner {
    queue: SyncSender<Job>,
    deadline: Duration,
    per_owner: usize,
    in_flight: Mutex<HashMap<String, usize>>,
    threads: usize,
    capacity: usize,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("threads", &self.inner.threads)
            .field("queue", &self.inner.capacity)
            .field("per_owner", &self.inner.per_owner)
            .field("deadline", &self.inner.deadline)
            .finish()
    }
}

/// Releases an owner's slot when its job is answered or abandoned.
struct Slot {
    inner: Arc<Inner>,
    owner: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.owner) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.owner);
            }
        }
    }
}

/// Stack of each pool thread: the validator and the cost walk recurse per nesting level.
const STACK_BYTES: usize = 64 * 1024 * 1024;

impl Evaluator {
    /// `threads` workers, a queue of `queue` waiting jobs, one owner holding at most
    /// `per_owner` jobs (waiting or running), and callers wait at most `deadline`.
    pub fn new(threads: usize, queue: usize, per_owner: usize, deadline: Duration) -> Self {
        let threads = threads.max(1);
        let capacity = queue.max(1);
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("schema-eval-{i}"))
                .stack_size(STACK_BYTES)
                .spawn(move || loop {
                    let job = {
                        let rx = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        rx.recv()
                    };
                    match job {
                        Ok(job) => job(),
                        // Every sender is gone: the pool was dropped.
                        Err(_) => break,
                    }
                });
            // Without a thread the jobs queue and every caller gets `Deadline`: refused, not
            // crashed.
            drop(spawned);
        }
        Self {
            inner: Arc::new(Inner {
                queue: tx,
                deadline,
                per_owner: per_owner.max(1),
                in_flight: Mutex::new(HashMap::new()),
                threads,
                capacity,
            }),
        }
    }

    /// The shipped pool: half the cores (at least one) so that tenants' schemas never take
    /// every core from the runtime, a queue of 8 jobs per thread, a quarter of it per tenant,
    /// 2 s deadline.
    pub fn with_defaults() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = (cores / 2).max(1);
        let queue = 8 * threads;
        Self::new(threads, queue, (queue / 4).max(1), Duration::from_secs(2))
    }

    /// The deadline a caller waits.
    pub fn deadline(&self) -> Duration {
        self.inner.deadline
    }

    /// Runs `job` on the pool for `owner`; waits at most the deadline.
    pub async fn run<T, F>(&self, owner: &str, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = {
            let mut map = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = map.entry(owner.to_owned()).or_insert(0);
            if *count >= self.inner.per_owner {
                return Err(PoolError::Busy);
            }
            *count += 1;
            Slot {
                inner: Arc::clone(&self.inner),
                owner: owner.to_owned(),
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let expires = Instant::now() + self.inner.deadline;
        let wrapped: Job = Box::new(move || {
            // Nobody waits for a job that queued past its deadline: skip it.
            if Instant::now() >= expires {
                drop(slot);
                return;
            }
            let result = std::panic::catch_unwind(AssertUnwindSafe(job));
            // The slot is held until the work is done, not just until the caller gave up:
            // an owner's share counts the threads it occupies.
            drop(slot);
            let _ = tx.send(result.map_err(|_| PoolError::Failed));
        });
        match self.inner.queue.try_send(wrapped) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                return Err(PoolError::Busy);
            }
        }
        match tokio::time::timeout(self.inner.deadline, rx).await {
            Ok(Ok(result)) => result,
            // The job was skipped (expired in the queue) or its thread is gone.
            Ok(Err(_)) | Err(_) => Err(PoolError::Deadline),
        }
    }
}
