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
//! security) and holds no state between transactions; only the priority differs. A backend that
//! cannot be reniced is still used, with a warning: the priority is a scheduling preference,
//! not a security property.

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
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut *conn)
                    .await?;
                lower_backend_priority(pid);
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    pg_roles::verify_app_role(&pool).await?;
    Ok(pool)
}

fn lower_backend_priority(pid: i32) {
    // The id is the backend's in the cluster's PID namespace. Renice only a process here that is
    // a PostgreSQL server, so that a cluster in another namespace (a container) never gets an
    // unrelated process of this host reniced in its place.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let process = rustix::process::Pid::from_raw(pid).filter(|_| {
        comm.trim_end() == "postgres" && u32::try_from(pid).ok() != Some(std::process::id())
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
