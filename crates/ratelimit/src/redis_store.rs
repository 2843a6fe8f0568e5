//! The Redis store: one Lua script per decision over every level's key.
//!
//! Keys (`P` is the configured prefix, which must not contain `{`):
//!
//! ```text
//! P:{tnt_…}:t            the tenant level
//! P:{tnt_…}:a:<agent>    an agent or key inside the tenant
//! P:{tnt_…}:e:<class>    an endpoint class inside the tenant
//! P:{global}:g           the global level
//! ```
//!
//! The `{tnt_…}` hash tag puts a tenant's keys in one Redis Cluster slot, so one script can read
//! and write them atomically; the global key is in another slot. With [`GlobalMode::InScript`]
//! (single Redis endpoint) the global key is one more key of the same script, and the decision is
//! exact. With [`GlobalMode::LocalShare`] (needed on Cluster, where a script may only touch one
//! slot) the global key is never sent: see [`GlobalMode`].
//!
//! The script receives the caller's clock (microseconds since the epoch), so an injected clock
//! gives the same decisions as the in-process store. It reads every TAT, and writes the new TATs
//! with `SET … PX <rest time>` only if every level allows, so a key expires exactly when it would be
//! fully rested. It returns the TATs it read; the Rust side recomputes the decision from them with
//! the same arithmetic as the in-process store.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::config::{Level, Quota};
use crate::decision::{Decision, Source};
use crate::gcra::{evaluate, Cell, Cells, MAX_LEVELS};
use crate::memory::Keys;

/// `KEYS` = the level keys; `ARGV[1]` = now (µs); then per key: its capacity (`burst × emission
/// interval`) and this request's increment (`cost × emission interval`), both in µs. Returns `{allowed, tat_1, …, tat_n}` where
/// `tat_i` is the key's TAT before the decision, raised to now.
const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local n = #KEYS
local base = {}
local nxt = {}
local ok = 1
for i = 1, n do
  local capacity = tonumber(ARGV[2 * i])
  local increment = tonumber(ARGV[2 * i + 1])
  local stored = redis.call('GET', KEYS[i])
  local tat = now
  if stored then
    tat = tonumber(stored)
    if tat < now then tat = now end
  end
  base[i] = tat
  nxt[i] = tat + increment
  if nxt[i] - now > capacity then ok = 0 end
end
if ok == 1 then
  for i = 1, n do
    local ttl = math.ceil((nxt[i] - now) / 1000)
    if ttl < 1 then ttl = 1 end
    redis.call('SET', KEYS[i], string.format('%d', nxt[i]), 'PX', ttl)
  end
end
local out = {ok}
for i = 1, n do out[i + 1] = base[i] end
return out
";

/// Where the global level is decided when the backend is Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalMode {
    /// The global key is one more key of the decision script: exact and all-or-nothing across
    /// the four levels. Only valid against a single Redis endpoint (standalone or a primary behind
    /// Sentinel): on Cluster the script would touch two slots and fail with `CROSSSLOT`.
    InScript,
    /// For Redis Cluster: each process enforces `1/processes` of the global quota in memory
    /// (`count / processes` per period, `burst / processes` burst, each at least 1), and the script
    /// only sees the tenant's own slot. The order is: check the local global share without
    /// charging it (a request it rejects touches nothing, in Redis or locally); run the script;
    /// charge the local share only if the script allowed. Approximate in two ways: the global
    /// budget is split evenly whatever the real traffic split between processes, and concurrent
    /// requests in one process that all passed the check are all charged, so the local share can
    /// be overrun by the number of requests in flight at that moment. Tenant, agent and endpoint
    /// stay exact and all-or-nothing.
    LocalShare {
        /// How many processes share the global budget.
        processes: u32,
    },
}

#[derive(Debug)]
pub(crate) enum BackendError {
    /// Not connected, and not yet time to try again (or another task is connecting).
    Down,
    Timeout,
    Redis(redis::RedisError),
    Reply(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Down => f.write_str("not connected"),
            Self::Timeout => f.write_str("timed out"),
            Self::Redis(error) => write!(f, "{error}"),
            Self::Reply(what) => write!(f, "unexpected reply: {what}"),
        }
    }
}

#[derive(Debug)]
struct Link {
    conn: Option<MultiplexedConnection>,
    next_attempt: Instant,
    connecting: bool,
}

pub(crate) struct RedisSettings {
    pub(crate) client: redis::Client,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retry_interval: Duration,
    pub(crate) global: GlobalMode,
    pub(crate) global_quota: Option<Quota>,
}

pub(crate) struct RedisStore {
    client: redis::Client,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    retry_interval: Duration,
    /// With [`GlobalMode::LocalShare`]: this process's share of the global quota and its TAT.
    local_global: Option<(Quota, AtomicU64)>,
    link: Mutex<Link>,
    down: AtomicBool,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's connection info may carry a password: only the address is shown.
        f.debug_struct("RedisStore")
            .field("addr", &self.client.get_connection_info().addr.to_string())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("local_global", &self.local_global.as_ref().map(|(q, _)| q))
            .field("down", &self.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock(link: &Mutex<Link>) -> MutexGuard<'_, Link> {
    link.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Clears `connecting` however the connecting future ends (finished or dropped).
struct Connecting<'a>(&'a Mutex<Link>);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        lock(self.0).connecting = false;
    }
}

impl RedisStore {
    pub(crate) fn new(settings: RedisSettings) -> Self {
        let local_global = match settings.global {
            GlobalMode::InScript => None,
            GlobalMode::LocalShare { processes } => settings
                .global_quota
                .map(|quota| (quota.share(processes), AtomicU64::new(0))),
        };
        Self {
            client: settings.client,
            script: redis::Script::new(SCRIPT),
            prefix: settings.prefix,
            timeout: settings.timeout,
            connect_timeout: settings.connect_timeout,
            retry_interval: settings.retry_interval,
            local_global,
            link: Mutex::new(Link {
                conn: None,
                next_attempt: Instant::now(),
                connecting: false,
            }),
            down: AtomicBool::new(false),
        }
    }

    /// How long a caller should wait before Redis is tried again.
    pub(crate) fn retry_interval(&self) -> Duration {
        self.retry_interval
    }

    fn key(&self, level: Level, keys: &Keys<'_>) -> Option<String> {
        let prefix = &self.prefix;
        let tenant = keys.tenant;
        match level {
            Level::Global => Some(format!("{prefix}:{{global}}:g")),
            Level::Tenant => Some(format!("{prefix}:{{{tenant}}}:t")),
            Level::Agent => keys.agent.map(|a| format!("{prefix}:{{{tenant}}}:a:{a}")),
            Level::Endpoint => keys
                .class
                .map(|(c, _)| format!("{prefix}:{{{tenant}}}:e:{c}")),
            // Never a cell: only a label (Decision::relabel).
            Level::Address => None,
        }
    }

    /// Decides in Redis. `Err` means Redis could not decide: the caller applies the fallback.
    pub(crate) async fn check(
        &self,
        cells: &Cells,
        keys: Keys<'_>,
        now: u64,
    ) -> Result<Decision, BackendError> {
        let mut cells = *cells;
        let mut tats = [None; MAX_LEVELS];
        // With a local global share: the share replaces the global quota, checked first without
        // charging it.
        let mut local = None;
        let global_index = cells.iter().position(|c| c.level == Level::Global);
        if let Some((share, tat)) = &self.local_global {
            if let Some(index) = global_index {
                let mut replaced = Cells::new();
                for (i, cell) in cells.iter().enumerate() {
                    replaced.push(if i == index {
                        Cell {
                            quota: *share,
                            ..*cell
                        }
                    } else {
                        *cell
                    });
                }
                cells = replaced;
                let mut alone = Cells::new();
                if let Some(cell) = cells.get(index) {
                    alone.push(*cell);
                }
                let seen = tat.load(Ordering::Acquire);
                let peek = evaluate(&alone, &[Some(seen)], now);
                if !peek.allowed {
                    return Ok(peek.decision(&alone, Source::Backend));
                }
                tats[index] = Some(seen);
                local = Some((index, tat));
            }
        }

        let mut invocation = self.script.prepare_invoke();
        invocation.arg(now);
        let mut sent = [usize::MAX; MAX_LEVELS];
        let mut count = 0;
        for (i, cell) in cells.iter().enumerate() {
            if local.is_some_and(|(index, _)| index == i) {
                continue;
            }
            let Some(key) = self.key(cell.level, &keys) else {
                continue;
            };
            invocation
                .key(key)
                .arg(cell.quota.capacity_us())
                .arg(cell.increment_us());
            sent[count] = i;
            count += 1;
        }

        let mut conn = self.connection().await?;
        let reply =
            tokio::time::timeout(self.timeout, invocation.invoke_async::<Vec<i64>>(&mut conn))
                .await;
        let reply = match reply {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                let broken = error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_connection_refusal()
                    || error.is_timeout()
                    || error.is_unrecoverable_error();
                let error = BackendError::Redis(error);
                self.failed(&error, broken);
                return Err(error);
            }
            Err(_elapsed) => {
                let error = BackendError::Timeout;
                self.failed(&error, true);
                return Err(error);
            }
        };
        if reply.len() != count + 1 {
            let error = BackendError::Reply(format!("{} values for {count} keys", reply.len()));
            self.failed(&error, false);
            return Err(error);
        }
        for (slot, value) in sent.iter().zip(&reply[1..]) {
            if let Some(tat) = tats.get_mut(*slot) {
                *tat = Some(u64::try_from(*value).unwrap_or(0));
            }
        }
        self.recovered();

        let evaluation = evaluate(&cells, &tats, now);
        debug_assert_eq!(evaluation.allowed, reply[0] == 1);
        if evaluation.allowed {
            if let Some((index, tat)) = local {
                let increment = cells.get(index).map_or(0, Cell::increment_us);
                // Charged whatever moved meanwhile: the documented overrun of LocalShare.
                let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                    Some(current.max(now).saturating_add(increment))
                });
            }
        }
        Ok(evaluation.decision(&cells, Source::Backend))
    }

    async fn connection(&self) -> Result<MultiplexedConnection, BackendError> {
        {
            let mut link = lock(&self.link);
            if let Some(conn) = &link.conn {
                return Ok(conn.clone());
            }
            if link.connecting || Instant::now() < link.next_attempt {
                return Err(BackendError::Down);
            }
            link.connecting = true;
        }
        let _connecting = Connecting(&self.link);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.timeout);
        let attempt = tokio::time::timeout(
            self.connect_timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        match attempt {
            Ok(Ok(conn)) => {
                lock(&self.link).conn = Some(conn.clone());
                Ok(conn)
            }
            Ok(Err(error)) => {
                let error = BackendError::Redis(error);
                self.failed(&error, true);
                Err(error)
            }
            Err(_elapsed) => {
                let error = BackendError::Timeout;
                self.failed(&error, true);
                Err(error)
            }
        }
    }

    /// Counts the error, logs the first of an outage, and with `broken` drops the connection and
    /// waits `retry_interval` before the next attempt.
    fn failed(&self, error: &BackendError, broken: bool) {
        metrics::counter!("bulkhead_ratelimit_backend_errors_total").increment(1);
        if broken {
            let mut link = lock(&self.link);
            link.conn = None;
            link.next_attempt = Instant::now() + self.retry_interval;
        }
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                %error,
                retry_in = ?self.retry_interval,
                "rate limit backend unreachable: applying the fallback policy until it answers again"
            );
        }
    }

    fn recovered(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("rate limit backend answering again: decisions are back in Redis");
        }
    }
}
