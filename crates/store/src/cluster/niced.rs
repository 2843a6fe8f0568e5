//! A serving pool whose backends run at a lower CPU priority: where heavy reads go.
//!
//! A tenant's heavy reads (lists over a million rows) run one at a time per tenant, but each
//! still takes CPU beside other tenants' backends; on a small machine another tenant's requests
//! waited behind them in the run queue (issue 28.3: its p99 rose 2.5–3× although few of the
//! heavy reads ran at once). PostgreSQL has no per-session priority, but a backend is a process:
//! reniced, the scheduler serves the other tenants' backends first, and the heavy read takes
//! what they leave. This needs a cluster whose backends this process may renice — the embedded
//! cluster, which runs on this host as this process's user (or, under root, as `postgres`).
//!
//! Invariants: the pool is the same role as the serving pool (checked to be subject to row-level
//! security) and holds no state between transactions; only the priority differs, and its
//! sessions run no parallel workers (the postmaster forks those at its own priority). A process
//! is reniced only if it is a `postgres` process of this host that started when PostgreSQL says
//! the backend did, so a cluster in another PID namespace never gets an unrelated process
//! reniced. A backend that cannot be reniced is still used, with a warning: the priority is a
//! scheduling preference, not a security property.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::cluster::pg_roles;
use crate::StoreError;

/// How much nicer than the postmaster the pool's backends run: weight 110 against another
/// backend's 1024, so under contention a heavy read gets about a tenth of a core.
pub const BACKEND_NICE: i32 = 10;

/// Opens a pool of up to `max_connections` serving-role connections to a cluster on this host
/// whose backends this process may renice, each backend reniced by [`BACKEND_NICE`] when it
/// connects. Refused, like the serving pool, when the role is not subject to row-level security.
pub async fn connect_niced(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // Parallel workers are forked by the postmaster at its own priority: they would
                // run a heavy read's scan at the normal one.
                sqlx::query("SET max_parallel_workers_per_gather = 0")
                    .execute(&mut *conn)
                    .await?;
                let (pid, started): (i32, f64) = sqlx::query_as(
                    "SELECT pid, extract(epoch FROM backend_start)::float8 \
                     FROM pg_stat_activity WHERE pid = pg_backend_pid()",
                )
                .fetch_one(&mut *conn)
                .await?;
                lower_backend_priority(pid, started);
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    pg_roles::verify_app_role(&pool).await?;
    Ok(pool)
}

/// Renices `pid` if it is this connection's backend as seen from here: a `postgres` process,
/// not this one, started when PostgreSQL says the backend started (`started`, Unix seconds).
fn lower_backend_priority(pid: i32, started: f64) {
    // The id is the backend's in the cluster's PID namespace. A cluster in another namespace (a
    // container) would name some unrelated process of this host, possibly another PostgreSQL's:
    // the start time tells them apart.
    let process = rustix::process::Pid::from_raw(pid).filter(|_| {
        u32::try_from(pid).ok() != Some(std::process::id())
            && process_name(pid).as_deref() == Some("postgres")
            && process_start(pid).is_some_and(|start| (start - started).abs() < 2.0)
    });
    let Some(process) = process else {
        tracing::warn!(
            pid,
            "the backend is not a PostgreSQL process of this host; not reniced"
        );
        return;
    };
    let now = rustix::process::getpriority_process(Some(process)).unwrap_or(0);
    if let Err(err) =
        rustix::process::setpriority_process(Some(process), (now + BACKEND_NICE).min(19))
    {
        tracing::warn!(pid, %err, "cannot lower a heavy-read backend's priority; it runs at the normal one");
    }
}

fn process_name(pid: i32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_owned())
}

/// When `pid` started, in Unix seconds: boot time plus its start in clock ticks (field 22 of
/// `/proc/<pid>/stat`; Linux reports them at USER_HZ, 100 a second, on every architecture).
fn process_start(pid: i32) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): field 3 is the first.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + ticks / USER_HZ)
}
