//! A small dedicated pool for schema work, outside the async runtime.
//!
//! Why not `spawn_blocking`: its pool grows to 512 threads and queues without bound, so a
//! tenant sending many costly validations would still take every core and unbounded memory.
//! Here a fixed number of threads (with large stacks: validators recurse) takes jobs from a
//! bounded queue; each owner (a tenant) may hold at most a share of the queue, so one tenant
//! filling it leaves room for the others; a caller waits at most the deadline.
//!
//! A job cannot be interrupted (the validator takes no budget), so who runs next is decided by
//! owner, not by arrival: the threads take owners round-robin, and one owner runs on at most
//! all threads but one, so a tenant's long jobs never hold every thread while others wait.
//! The threads run at a lower CPU priority ([`NICE`]): a tenant's schema work is the kind of
//! CPU one request can ask for without bound in wall time (up to the deadline), and on a small
//! machine one such job beside another tenant's requests tripled that tenant's p99 at equal
//! priority; niced, the scheduler serves requests first and the job takes what is left.
//! Own code rather than a crate: no well-kept pool offers per-owner round-robin with a cap on
//! an owner's running jobs.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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
    queue: Arc<Queue>,
    deadline: Duration,
    per_owner: usize,
    in_flight: Mutex<HashMap<String, usize>>,
    threads: usize,
    capacity: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every handle (and every queued job's slot) is gone: let the threads end.
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

/// Waiting jobs by owner, and the order owners are served in.
#[derive(Default)]
struct Waiting {
    jobs: HashMap<String, VecDeque<Job>>,
    /// Owners with waiting jobs, next to serve first.
    order: VecDeque<String>,
    /// Jobs running, by owner.
    running: HashMap<String, usize>,
    len: usize,
    closed: bool,
}

struct Queue {
    state: Mutex<Waiting>,
    ready: Condvar,
    capacity: usize,
    /// Most jobs of one owner running at once.
    max_running: usize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, owner: &str, job: Job) -> bool {
        let mut w = self.lock();
        if w.len >= self.capacity {
            return false;
        }
        w.len += 1;
        let jobs = w.jobs.entry(owner.to_owned()).or_default();
        jobs.push_back(job);
        if jobs.len() == 1 {
            w.order.push_back(owner.to_owned());
        }
        drop(w);
        self.ready.notify_one();
        true
    }

    /// The next job: the first owner in round-robin order not already at its running cap.
    /// `None` once the pool is closed and drained.
    fn take(&self) -> Option<(String, Job)> {
        let mut w = self.lock();
        loop {
            let eligible = w
                .order
                .iter()
                .position(|o| w.running.get(o).copied().unwrap_or(0) < self.max_running);
            if let Some(at) = eligible {
                let owner = w.order.remove(at)?;
                let jobs = w.jobs.get_mut(&owner)?;
                let job = jobs.pop_front()?;
                if jobs.is_empty() {
                    w.jobs.remove(&owner);
                } else {
                    w.order.push_back(owner.clone());
                }
                w.len -= 1;
                *w.running.entry(owner.clone()).or_insert(0) += 1;
                return Some((owner, job));
            }
            if w.closed && w.len == 0 {
                return None;
            }
            w = self
                .ready
                .wait(w)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn done(&self, owner: &str) {
        let mut w = self.lock();
        if let Some(count) = w.running.get_mut(owner) {
            *count -= 1;
            if *count == 0 {
                w.running.remove(owner);
            }
        }
        drop(w);
        // An owner that was at its cap may be eligible again.
        self.ready.notify_all();
    }
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

/// How much nicer than the process the pool threads run (Linux: a per-thread setting): weight 110 against a request
/// thread's 1024, so under contention a job gets about a tenth of a core.
pub(crate) const NICE: i32 = 10;

/// Lowers the calling thread's priority by [`NICE`]. Linux only: there the nice value is a
/// per-thread attribute; elsewhere `setpriority` would renice the whole process.
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    {
        let now = rustix::process::getpriority_process(None).unwrap_or(0);
        let _ = rustix::process::setpriority_process(None, (now + NICE).min(19));
    }
}

/// Stack of each pool thread: the validator and the cost walk recurse per nesting level.
const STACK_BYTES: usize = 64 * 1024 * 1024;

impl Evaluator {
    /// `threads` workers, a queue of `queue` waiting jobs, one owner holding at most
    /// `per_owner` jobs (waiting or running) and running on at most `threads - 1` threads
    /// (1 with a single thread), and callers wait at most `deadline`.
    pub fn new(threads: usize, queue: usize, per_owner: usize, deadline: Duration) -> Self {
        let threads = threads.max(1);
        let capacity = queue.max(1);
        let shared = Arc::new(Queue {
            state: Mutex::new(Waiting::default()),
            ready: Condvar::new(),
            capacity,
            max_running: (threads - 1).max(1),
        });
        for i in 0..threads {
            let queue = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("schema-eval-{i}"))
                .stack_size(STACK_BYTES)
                .spawn(move || {
                    // Best effort: where the system refuses, the thread runs at the normal
                    // priority, as before.
                    lower_own_priority();
                    while let Some((owner, job)) = queue.take() {
                        job();
                        queue.done(&owner);
                    }
                });
            // Without a thread the jobs queue and every caller gets `Deadline`: refused, not
            // crashed.
            drop(spawned);
        }
        Self {
            inner: Arc::new(Inner {
                queue: shared,
                deadline,
                per_owner: per_owner.max(1),
                in_flight: Mutex::new(HashMap::new()),
                threads,
                capacity,
            }),
        }
    }

    /// The shipped pool: half the cores but at least two threads (so one tenant's long job,
    /// capped at all threads but one, never holds the whole pool), a queue of 8 jobs per
    /// thread, a quarter of it per tenant, 2 s deadline.
    pub fn with_defaults() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = (cores / 2).max(2);
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
        if !self.inner.queue.push(owner, wrapped) {
            return Err(PoolError::Busy);
        }
        match tokio::time::timeout(self.inner.deadline, rx).await {
            Ok(Ok(result)) => result,
            // The job was skipped (expired in the queue) or its thread is gone.
            Ok(Err(_)) | Err(_) => Err(PoolError::Deadline),
        }
    }
}
