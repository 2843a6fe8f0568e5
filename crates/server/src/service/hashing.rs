//! Password hashing off the async workers, on a bounded pool with per-tenant shares.
//!
//! argon2id (19 MiB, 2 passes) takes 24–40 ms of one core. Run inline on the async workers, a
//! tenant repeating `POST /v1/users` (or anyone posting logins) stalls every other tenant's
//! requests on those workers. Here every hash or verification:
//!
//! 1. is **admitted** first, without waiting: at most `workers + queue` operations are admitted
//!    at once; one tenant may hold at most half of them ([`HashPool::tenant_share`]), and
//!    anonymous operations (logins, which anyone can send) together at most half
//!    ([`HashPool::anonymous_share`]), and those aimed at one tenant at most half of that
//!    ([`HashPool::anonymous_tenant_share`]): a login flood against one tenant cannot take the
//!    whole anonymous budget, and other tenants' logins are still admitted (a login names its
//!    tenant, and is counted under it). An operation that does not fit is refused at once
//!    with 503 and `Retry-After` ([`HashError::Busy`]): a queue that grows without bound
//!    only turns overload into timeouts.
//! 2. then **waits** for one of `workers` threads of its own (default: half the cores, at least
//!    one), so hashing can never take every core from the rest of the server. The threads run
//!    at a lowered priority (nice +10, Linux), like the schema pool's: a hash takes 24–40 ms of
//!    CPU, and at normal priority a request on the same core waited behind it (issue 28's
//!    hashing benchmark: another tenant's p99 up to 3×); niced, the request runs first.
//!
//! The admission and the worker are held by the blocking task itself, so a client that hangs
//! up while its hash runs does not free a place the hash still uses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bulkhead_core::TenantId;
use tokio::sync::Semaphore;

use crate::config::HashingSettings;

/// Why a hash or a verification was not done.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The pool (or the caller's share of it) is full: try again shortly (503, `Retry-After`).
    #[error("password hashing is busy")]
    Busy,
    /// The pool is shut down.
    #[error("password hashing is unavailable")]
    Unavailable,
    /// The password does not meet the policy.
    #[error("{0}")]
    Invalid(String),
    /// The hashing task failed.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// Who asks for a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// An authenticated request of this tenant (creating a user).
    Tenant(TenantId),
    /// An unauthenticated request aimed at this tenant (a login).
    Anonymous(TenantId),
}

impl Caller {
    fn tenant(self) -> TenantId {
        match self {
            Self::Tenant(t) | Self::Anonymous(t) => t,
        }
    }
}

#[derive(Debug, Default)]
struct Admitted {
    total: usize,
    anonymous: usize,
    per_tenant: HashMap<TenantId, usize>,
    /// Anonymous operations per tenant they are aimed at (a subset of `per_tenant`).
    anonymous_per_tenant: HashMap<TenantId, usize>,
}

/// One less under `key`, forgetting keys that reach zero.
fn release(counts: &mut HashMap<TenantId, usize>, key: TenantId) {
    if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

/// The pool. One per process, in the application state.
#[derive(Debug)]
pub struct HashPool {
    workers: Arc<Semaphore>,
    threads: HashThreads,
    admitted: Arc<Mutex<Admitted>>,
    capacity: usize,
    tenant_share: usize,
    anonymous_share: usize,
    anonymous_tenant_share: usize,
    started: AtomicU64,
}

type HashJob = Box<dyn FnOnce() + Send>;

/// The hashing threads: `workers` of them, at a lowered priority, taking jobs from one channel
/// (the pool's semaphore lets at most `workers` jobs in at once, so nothing waits in it). They
/// end when the pool is dropped (the channel closes). Our own threads rather than tokio's
/// blocking pool: a blocking-pool thread serves other work after the hash, and a process may
/// lower its threads' priority but not raise it back.
#[derive(Debug)]
struct HashThreads {
    jobs: std::sync::mpsc::Sender<HashJob>,
}

impl HashThreads {
    fn start(count: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..count {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("bulkhead-hash-{i}"))
                .spawn(move || {
                    lower_own_priority();
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match next {
                            Ok(job) => job(),
                            Err(_closed) => return,
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(%err, "cannot start a password hashing thread");
            }
        }
        Self { jobs }
    }

    fn send(&self, job: HashJob) -> Result<(), HashError> {
        self.jobs.send(job).map_err(|_| HashError::Unavailable)
    }
}

/// How much nicer than the process the hashing threads run: weight 110 against a request
/// thread's 1024.
const HASH_NICE: i32 = 10;

/// Lowers the calling thread's priority by [`HASH_NICE`]. Linux only: there the nice value is
/// a per-thread attribute; elsewhere `setpriority` would renice the whole process.
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    {
        let now = rustix::process::getpriority_process(None).unwrap_or(0);
        let _ = rustix::process::setpriority_process(None, (now + HASH_NICE).min(19));
    }
}

/// An admitted operation's place; dropping it gives the place back.
#[derive(Debug)]
pub struct Ticket {
    admitted: Arc<Mutex<Admitted>>,
    caller: Caller,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        admitted.total -= 1;
        let tenant = self.caller.tenant();
        if matches!(self.caller, Caller::Anonymous(_)) {
            admitted.anonymous -= 1;
            release(&mut admitted.anonymous_per_tenant, tenant);
        }
        release(&mut admitted.per_tenant, tenant);
    }
}

impl HashPool {
    /// A pool of the given size.
    pub fn new(settings: &HashingSettings) -> Self {
        let workers = settings.workers.max(1);
        let capacity = workers + settings.queue;
        let half = capacity.div_ceil(2);
        let anonymous_share = half.max(1);
        Self {
            workers: Arc::new(Semaphore::new(workers)),
            threads: HashThreads::start(workers),
            admitted: Arc::default(),
            capacity,
            // With a single place (one worker, no queue) a share of half would be zero: one
            // place each, first come.
            tenant_share: half.max(1),
            anonymous_share,
            // Half the anonymous budget, so a flood against one tenant leaves the rest to the
            // others (with a budget of one there is nothing to split).
            anonymous_tenant_share: anonymous_share.div_ceil(2),
            started: AtomicU64::new(0),
        }
    }

    /// Operations admitted at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Operations one tenant may hold at once.
    pub fn tenant_share(&self) -> usize {
        self.tenant_share
    }

    /// Anonymous operations admitted at once, all tenants together.
    pub fn anonymous_share(&self) -> usize {
        self.anonymous_share
    }

    /// Anonymous operations aimed at one tenant admitted at once.
    pub fn anonymous_tenant_share(&self) -> usize {
        self.anonymous_tenant_share
    }

    /// Hashes and verifications started since the process began (a test observes which
    /// requests cost a hash).
    pub fn hashes_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// A place for one operation, or 503 at once if the pool, the caller's tenant share, the
    /// anonymous budget or the tenant's part of it is full.
    pub fn admit(&self, caller: Caller) -> Result<Ticket, HashError> {
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        let tenant = caller.tenant();
        let held = admitted.per_tenant.get(&tenant).copied().unwrap_or(0);
        let anonymous = matches!(caller, Caller::Anonymous(_));
        let held_anonymously = admitted
            .anonymous_per_tenant
            .get(&tenant)
            .copied()
            .unwrap_or(0);
        let refused = if admitted.total >= self.capacity {
            Some("pool")
        } else if held >= self.tenant_share {
            Some("tenant")
        } else if anonymous && admitted.anonymous >= self.anonymous_share {
            Some("anonymous")
        } else if anonymous && held_anonymously >= self.anonymous_tenant_share {
            Some("anonymous_tenant")
        } else {
            None
        };
        if let Some(share) = refused {
            drop(admitted);
            metrics::counter!("bulkhead_password_hash_refusals_total", "share" => share)
                .increment(1);
            tracing::warn!(tenant_id = %tenant, share, "password hashing is full; refused with 503");
            return Err(HashError::Busy);
        }
        admitted.total += 1;
        if anonymous {
            admitted.anonymous += 1;
            *admitted.anonymous_per_tenant.entry(tenant).or_insert(0) += 1;
        }
        *admitted.per_tenant.entry(tenant).or_insert(0) += 1;
        Ok(Ticket {
            admitted: self.admitted.clone(),
            caller,
        })
    }

    /// Runs `work` on a hashing worker once one is free, holding `ticket` until it ends.
    pub async fn run<T: Send + 'static>(
        &self,
        ticket: Ticket,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let worker = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Unavailable)?;
        self.started.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("bulkhead_password_hashes_total").increment(1);
        let (done, result) = tokio::sync::oneshot::channel();
        self.threads.send(Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            drop(worker);
            drop(ticket);
            let _ = done.send(outcome);
        }))?;
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_panic)) => Err(HashError::Internal(anyhow::anyhow!(
                "password hashing task panicked"
            ))),
            Err(_gone) => Err(HashError::Unavailable),
        }
    }

    /// Hashes a new password for `caller` (after the length policy, which costs nothing).
    pub async fn hash_password(
        &self,
        caller: Caller,
        password: String,
    ) -> Result<String, HashError> {
        check_policy(&password)?;
        let ticket = self.admit(caller)?;
        self.run(ticket, move || {
            bulkhead_auth::password::hash_password(&password)
                .map_err(|e| HashError::Invalid(e.to_string()))
        })
        .await?
    }

    /// Verifies a password (see [`bulkhead_auth::password::verify_password`]; `None` does the
    /// same work against a dummy hash).
    pub async fn verify_password(
        &self,
        caller: Caller,
        stored: Option<String>,
        password: String,
    ) -> Result<bool, HashError> {
        let ticket = self.admit(caller)?;
        self.run(ticket, move || {
            bulkhead_auth::password::verify_password(stored.as_deref(), &password)
        })
        .await
    }
}

/// The length policy alone, so a refused password never takes a place in the pool.
fn check_policy(password: &str) -> Result<(), HashError> {
    use bulkhead_auth::password::{PasswordError, MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS};
    let error = if password.chars().count() < MIN_PASSWORD_CHARS {
        Some(PasswordError::TooShort)
    } else if password.len() > MAX_PASSWORD_BYTES {
        Some(PasswordError::TooLong)
    } else {
        None
    };
    match error {
        Some(e) => Err(HashError::Invalid(e.to_string())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of one worker and `queue` places to wait in.
    fn one_worker_pool(queue: usize) -> HashPool {
        HashPool::new(&HashingSettings { workers: 1, queue })
    }

    fn tenant(n: u128) -> TenantId {
        TenantId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn the_pool_refuses_when_full_and_keeps_shares() {
        let pool = one_worker_pool(3);
        assert_eq!(pool.capacity(), 4);
        assert_eq!(pool.tenant_share(), 2);
        let a1 = pool.admit(Caller::Tenant(tenant(1))).unwrap();
        let _a2 = pool.admit(Caller::Tenant(tenant(1))).unwrap();
        // Tenant 1 holds its share; tenant 2 is still admitted.
        assert!(matches!(
            pool.admit(Caller::Tenant(tenant(1))),
            Err(HashError::Busy)
        ));
        let _b1 = pool.admit(Caller::Anonymous(tenant(2))).unwrap();
        let _c1 = pool.admit(Caller::Anonymous(tenant(3))).unwrap();
        // Full.
        assert!(matches!(
            pool.admit(Caller::Tenant(tenant(4))),
            Err(HashError::Busy)
        ));
        drop(a1);
        // Anonymous callers together hold their half already (tenants 2 and 3 one each: a
        // tenant's part of that half is one).
        assert_eq!(pool.anonymous_tenant_share(), 1);
        assert!(matches!(
            pool.admit(Caller::Anonymous(tenant(4))),
            Err(HashError::Busy)
        ));
        let _d1 = pool.admit(Caller::Tenant(tenant(4))).unwrap();
    }

    #[test]
    fn one_tenants_anonymous_operations_leave_room_for_others() {
        let pool = one_worker_pool(4);
        assert_eq!(pool.anonymous_share(), 3);
        assert_eq!(pool.anonymous_tenant_share(), 2);
        let flood: Vec<_> = (0..2)
            .map(|_| pool.admit(Caller::Anonymous(tenant(1))).unwrap())
            .collect();
        assert!(matches!(
            pool.admit(Caller::Anonymous(tenant(1))),
            Err(HashError::Busy)
        ));
        // Tenant 1 may still hash for an authenticated request (its tenant share is 3).
        let own = pool.admit(Caller::Tenant(tenant(1))).unwrap();
        let other = pool.admit(Caller::Anonymous(tenant(2))).unwrap();
        drop(flood);
        drop((own, other));
        let admitted = pool.admitted.lock().unwrap();
        assert_eq!(admitted.total, 0);
        assert!(admitted.anonymous_per_tenant.is_empty());
    }

    #[tokio::test]
    async fn a_refused_policy_costs_no_hash() {
        let pool = HashPool::new(&HashingSettings::default());
        let refused = pool
            .hash_password(Caller::Tenant(tenant(1)), "short".into())
            .await;
        assert!(matches!(refused, Err(HashError::Invalid(_))));
        assert_eq!(pool.hashes_started(), 0);
        let phc = pool
            .hash_password(Caller::Tenant(tenant(1)), "long enough password".into())
            .await
            .unwrap();
        assert_eq!(pool.hashes_started(), 1);
        assert!(pool
            .verify_password(
                Caller::Anonymous(tenant(1)),
                Some(phc),
                "long enough password".into()
            )
            .await
            .unwrap());
        assert_eq!(pool.admitted.lock().unwrap().total, 0);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_on_threads_at_a_lower_priority_than_the_caller() {
        let pool = HashPool::new(&HashingSettings {
            workers: 1,
            queue: 1,
        });
        let caller = rustix::process::getpriority_process(None).expect("own priority");
        let ticket = pool.admit(Caller::Tenant(tenant(1))).unwrap();
        let worker = pool
            .run(ticket, || {
                rustix::process::getpriority_process(None).expect("priority")
            })
            .await
            .expect("runs");
        assert_eq!(worker, (caller + HASH_NICE).min(19));
        // The caller's own thread is untouched.
        assert_eq!(
            rustix::process::getpriority_process(None).expect("own priority"),
            caller
        );
    }
}
