//! A private PostgreSQL cluster started from the locally installed server binaries.
//!
//! [`EmbeddedPostgres::start`] finds `initdb`, `pg_ctl` and `postgres` (>= 15) on `PATH` or
//! under `/usr/lib/postgresql/*/bin`, creates a cluster in the data directory if there is none
//! yet, and starts a postmaster that only Bulkhead can reach.
//!
//! Invariants this module keeps:
//!
//! - **No TCP listener.** The server runs with `listen_addresses=''`: the only way in is the
//!   Unix socket. The "port" is only the number in the socket file's name (`.s.PGSQL.<port>`).
//! - **The socket directory is private.** It is mode 0700 and owned by the OS user that runs the
//!   cluster (the socket itself is 0700 too), so only that user and root can connect.
//! - **Trust authentication is safe only because of the two points above.** The cluster is
//!   created with `--auth=trust`: whoever can open the socket can log in as any role, including
//!   the superuser. Never add a TCP listener or loosen the socket directory's mode.
//! - **Root drops to an unprivileged user.** PostgreSQL refuses to run as root, so when the
//!   process is root, `initdb`, `pg_ctl` and the postmaster run as the OS user `postgres`
//!   (never a shared account such as `nobody`), and the data and socket directories are given
//!   to it. A symlinked data directory, or an existing one owned by another user, is refused.
//!   That user must be able to traverse every ancestor of the data directory.
//! - **Clusters die with their parent.** Every cluster is watched by a detached shell that stops
//!   the postmaster as soon as the process that started it is gone, even after SIGKILL (an OOM
//!   kill of `serve`, say), so no orphan holds memory and the data directory. A durable cluster
//!   gets a fast (clean) shutdown, and only while its `postmaster.pid` still names the postmaster
//!   that was watched: a server started on the directory meanwhile is left alone. An ephemeral
//!   cluster (a test cluster: no fsync, no durability) gets an immediate one, and the cluster it
//!   created is deleted. Should a postmaster still be left over (the watchdog killed too), the
//!   next start stops it and logs so.
//! - **A handle dropped without [`EmbeddedPostgres::stop`] still shuts its postmaster down**
//!   (a signal, without waiting), so a cluster never outlives the value that owns it by design.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{self, Signal};
use nix::unistd::{Gid, Pid, Uid, User};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::Connection as _;
use tokio::process::{Child, Command};

/// The bootstrap superuser that `initdb -U` creates.
const SUPERUSER: &str = "postgres";
/// Oldest major version the rest of Bulkhead is written against.
const MIN_MAJOR_VERSION: u32 = 15;
/// Where Debian and Ubuntu install the server binaries, one directory per major version.
const DEBIAN_SERVER_ROOT: &str = "/usr/lib/postgresql";
/// Where a socket directory goes when the one inside the data directory would make the
/// socket path too long.
const SHORT_SOCKET_ROOT: &str = "/tmp";
/// A socket path must be shorter than this: `sun_path` holds 108 bytes, keep a margin.
const MAX_SOCKET_PATH_LEN: usize = 100;
/// Candidate users to run PostgreSQL as when we are root, in order of preference.
/// Only a dedicated account: `nobody` is shared with other daemons, and whoever runs as the
/// cluster's user can open its socket and log in as the superuser (trust authentication).
const UNPRIVILEGED_USERS: [&str; 1] = ["postgres"];
/// Name of the server log inside the data directory.
const LOG_FILE: &str = "postgres.log";
/// Lines of a log or of a command's stderr quoted in an error.
const TAIL_LINES: usize = 20;
/// How long pg_ctl may wait for the server to start or stop, in seconds.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// How long the server has to answer `SELECT 1` after pg_ctl says it started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one connection attempt while polling, so a stuck attempt can't eat the budget.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// `pg_ctl status` exit code meaning "no server running" (4 means no accessible data directory).
const PG_CTL_STATUS_NOT_RUNNING: i32 = 3;

/// How the cluster is used.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Directory of the cluster's data (PGDATA). Created if missing; kept across runs.
    pub data_dir: PathBuf,
    /// Test clusters: fsync off, no durability, stopped immediately (and deleted if this run
    /// created them) when the process that started them exits, even by SIGKILL. A durable
    /// cluster is stopped cleanly then, and kept.
    pub ephemeral: bool,
}

/// Why the embedded cluster could not be started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// No directory holds `initdb`, `pg_ctl` and `postgres` together.
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres >= {MIN_MAJOR_VERSION}) found {searched}: \
         install the `postgresql` package (Debian/Ubuntu: apt-get install postgresql) \
         or set DATABASE_URL to use an existing server"
    )]
    NoBinaries {
        /// Where we looked, e.g. "on PATH or under /usr/lib/postgresql/*/bin".
        searched: String,
    },
    /// Server binaries were found, but none is recent enough.
    #[error(
        "the PostgreSQL server at {} is too old ({found}; need >= {MIN_MAJOR_VERSION}): \
         install the `postgresql` package >= {MIN_MAJOR_VERSION} or set DATABASE_URL to use an existing server",
        bin_dir.display()
    )]
    VersionTooOld {
        /// Output of `postgres --version` for the newest server found.
        found: String,
        /// Directory holding that server's binaries.
        bin_dir: PathBuf,
    },
    /// The data directory holds a cluster of another major version than the server found.
    #[error(
        "the data directory {} holds a PostgreSQL {data_version} cluster, but the server found is {server_version}: \
         upgrade it (pg_upgrade) or use another data directory",
        path.display()
    )]
    IncompatibleDataDir {
        /// The data directory.
        path: PathBuf,
        /// Content of its `PG_VERSION`.
        data_version: String,
        /// Output of `postgres --version`.
        server_version: String,
    },
    /// A filesystem or process-spawning operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A PostgreSQL command ran but failed.
    #[error("{step} failed ({status}):\n{detail}")]
    Command {
        /// The command, e.g. "initdb" or "pg_ctl start".
        step: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// The tail of its output, and of the server log where relevant.
        detail: String,
    },
    /// Running as root, and the unprivileged user cannot reach the data directory.
    #[error(
        "PostgreSQL must run as the unprivileged user `{user}` (it refuses to run as root), \
         but {user} cannot traverse {}: choose a --data-dir under a path it can reach \
         (e.g. under /var/lib) or make that directory searchable by others (chmod o+x)",
        path.display()
    )]
    Unreachable {
        /// The first ancestor of the data directory that the user cannot traverse.
        path: PathBuf,
        /// The user PostgreSQL would run as.
        user: String,
    },
    /// Running as root, and there is no unprivileged user to run PostgreSQL as.
    #[error(
        "PostgreSQL refuses to run as root and no `postgres` OS user exists to run it as: create \
         one (`useradd --system postgres`; installing the `postgresql` package creates it), run \
         Bulkhead as an unprivileged user, or set DATABASE_URL to use an existing server"
    )]
    NoUnprivilegedUser,
    /// The data directory's path cannot be handed to pg_ctl safely.
    #[error("unsupported data directory path {}: {reason}", path.display())]
    UnsupportedPath {
        /// The offending path.
        path: PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A socket directory under /tmp exists but is not ours (someone may be trying to intercept
    /// connections).
    #[error("refusing to use the socket directory {}: {reason}", path.display())]
    UnsafeSocketDir {
        /// The socket directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another live process owns this (persistent) cluster.
    #[error(
        "another Bulkhead process is using the embedded PostgreSQL in {}: stop it first (one process \
         per data directory), or point every process at one server with DATABASE_URL",
        path.display()
    )]
    InUse {
        /// The data directory.
        path: PathBuf,
    },
    /// The server started but did not answer in time.
    #[error("PostgreSQL did not answer `SELECT 1` within {waited:?}: {detail}")]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// The last connection error and the tail of the server log.
        detail: String,
    },
}

/// Takes the exclusive, non-blocking lock that makes this process the cluster's only owner. The
/// kernel releases it when the process dies, so a crashed owner never blocks the next start.
fn lock_cluster(data_dir: &Path) -> Result<nix::fcntl::Flock<File>, EmbeddedError> {
    let mut lock_path = data_dir.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&lock_path)
        .map_err(io_error(format!("cannot open {}", lock_path.display())))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                EmbeddedError::InUse {
                    path: data_dir.to_owned(),
                }
            } else {
                EmbeddedError::Io {
                    context: format!("cannot lock {}", lock_path.display()),
                    source: io::Error::from(errno),
                }
            }
        },
    )
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io { context, source }
}

/// A running private PostgreSQL cluster. Stop it with [`EmbeddedPostgres::stop`].
#[derive(Debug)]
pub struct EmbeddedPostgres {
    binaries: ServerBinaries,
    cluster_user: ClusterUser,
    /// Canonical (absolute, symlink-free) path of the data directory.
    data_dir: PathBuf,
    socket_dir: SocketDir,
    port: u16,
    ephemeral: bool,
    /// The postmaster we started, read from `postmaster.pid` once it was up.
    postmaster_pid: Option<i32>,
    /// The shell that stops an ephemeral cluster once this process is gone.
    watchdog: Option<Child>,
    /// Set once `stop` has succeeded, so `Drop` has nothing left to do.
    stopped: bool,
    /// Exclusive lock on `<data_dir>.lock`, held for as long as this value lives (persistent
    /// clusters only). Without it a second process would take the first one's live postmaster
    /// for a leftover and stop it.
    _owner_lock: Option<nix::fcntl::Flock<File>>,
}

impl EmbeddedPostgres {
    /// Finds the server binaries, creates the cluster if needed, starts it and waits until it
    /// answers `SELECT 1`.
    pub async fn start(opts: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let started_at = Instant::now();
        let binaries = find_server_binaries(
            std::env::var_os("PATH").as_deref(),
            Path::new(DEBIAN_SERVER_ROOT),
        )
        .await?;
        tracing::debug!(bin_dir = %binaries.bin_dir.display(), version = %binaries.version, "found PostgreSQL server binaries");

        let cluster_user = ClusterUser::for_this_process()?;
        let data_dir = prepare_data_dir(&opts.data_dir, &cluster_user)?;
        let owner_lock = if opts.ephemeral {
            None
        } else {
            Some(lock_cluster(&data_dir)?)
        };

        let created_now = match read_pg_version(&data_dir)? {
            Some(data_version) => {
                if data_version.parse::<u32>().ok() != Some(binaries.major) {
                    return Err(EmbeddedError::IncompatibleDataDir {
                        path: data_dir,
                        data_version,
                        server_version: binaries.version,
                    });
                }
                false
            }
            None => {
                run_initdb(&binaries, &cluster_user, &data_dir, opts.ephemeral).await?;
                true
            }
        };

        let port = free_port_number()?;
        let socket_dir = choose_socket_dir(&data_dir, port, Path::new(SHORT_SOCKET_ROOT));
        prepare_socket_dir(&socket_dir, &cluster_user)?;

        let mut cluster = EmbeddedPostgres {
            binaries,
            cluster_user,
            data_dir,
            socket_dir,
            port,
            ephemeral: opts.ephemeral,
            postmaster_pid: None,
            watchdog: None,
            // Nothing runs yet: if we fail before the postmaster is up, Drop has nothing to stop.
            stopped: true,
            _owner_lock: owner_lock,
        };
        cluster.stop_leftover_postmaster().await?;
        let started = cluster.start_postmaster().await;
        // Even a failed `pg_ctl start` (a timeout, say) may leave a postmaster behind: from here
        // on an error drops `cluster`, whose Drop signals whatever postmaster we started.
        cluster.stopped = false;
        cluster.postmaster_pid = read_postmaster_pid(&cluster.data_dir);
        started?;

        cluster.watchdog = Some(cluster.spawn_watchdog(cluster.ephemeral && created_now)?);
        cluster.wait_until_ready().await?;

        tracing::info!(
            data_dir = %cluster.data_dir.display(),
            socket_dir = %cluster.socket_dir.path().display(),
            port = cluster.port,
            version = %cluster.binaries.version,
            ephemeral = cluster.ephemeral,
            elapsed_ms = started_at.elapsed().as_millis() as u64,
            "embedded PostgreSQL is ready"
        );
        Ok(cluster)
    }

    /// Connection options over the Unix socket for `user` and `database` (no password: trust
    /// over a 0700 socket dir).
    pub fn connect_options(&self, user: &str, database: &str) -> PgConnectOptions {
        // Every field that matters is set explicitly so PG* variables in the environment
        // (PGHOST, PGSSLMODE, ...) cannot point us elsewhere; pgpass is not read.
        PgConnectOptions::new_without_pgpass()
            .socket(self.socket_dir.path())
            .port(self.port)
            .username(user)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
    }

    /// The same target as [`EmbeddedPostgres::connect_options`], as a URL (for configuration that
    /// takes URLs, such as registering a dedicated tenant database). No password: the cluster's
    /// socket is private to this user.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!(
            "postgres://{user}@localhost:{port}/{database}?host={host}&sslmode=disable",
            port = self.port,
            host = self.socket_dir.path().display()
        )
    }

    /// Name of the bootstrap superuser created by initdb.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The data directory (canonical: absolute, symlinks resolved).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.socket_dir.path()
    }

    /// The number in the socket file's name (there is no TCP listener).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the postmaster (pg_ctl stop -m fast) and waits for it. A server that is already
    /// gone counts as stopped.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        // On error `self` is dropped with `stopped == false`, so Drop still signals the
        // postmaster; if even that fails, an ephemeral cluster's watchdog is left running as a
        // last resort.
        self.stop_postmaster().await?;
        self.stopped = true;
        if let Some(mut watchdog) = self.watchdog.take() {
            // Kills and reaps the shell; its `sleep` child ends by itself within a second.
            if let Err(error) = watchdog.kill().await {
                tracing::warn!(%error, "could not end the embedded PostgreSQL watchdog");
            }
        }
        self.socket_dir.remove_if_private_tmp();
        tracing::info!(data_dir = %self.data_dir.display(), "embedded PostgreSQL stopped");
        Ok(())
    }

    /// A `pg_ctl` command run as the cluster user.
    fn pg_ctl(&self) -> Command {
        self.cluster_user.command(&self.binaries.pg_ctl)
    }

    /// A postmaster from an earlier run may still hold the data directory (its parent was
    /// SIGKILLed, say): stop it so we start fresh with our own settings. A stale pid file
    /// needs nothing: pg_ctl start deals with it.
    async fn stop_leftover_postmaster(&self) -> Result<(), EmbeddedError> {
        if !self.data_dir.join("postmaster.pid").exists() {
            return Ok(());
        }
        let mut status_cmd = self.pg_ctl();
        status_cmd.arg("status").arg("-D").arg(&self.data_dir);
        let status = run_command("pg_ctl status", status_cmd).await?;
        if !status.status.success() {
            return Ok(());
        }
        tracing::warn!(data_dir = %self.data_dir.display(), "stopping a PostgreSQL server left running by an earlier run (its parent was killed)");
        let mut stop_cmd = self.pg_ctl();
        stop_cmd
            .args(["stop", "-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(&self.data_dir);
        let output = run_command("pg_ctl stop (leftover server)", stop_cmd).await?;
        ensure_success("pg_ctl stop (leftover server)", &output, None)
    }

    async fn start_postmaster(&self) -> Result<(), EmbeddedError> {
        let options = server_options(self.socket_dir.path(), self.port, self.ephemeral)?;
        let mut cmd = self.pg_ctl();
        cmd.args(["start", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.data_dir.join(LOG_FILE))
            .arg("-o")
            .arg(options);
        tracing::info!(
            data_dir = %self.data_dir.display(),
            version = %self.binaries.version,
            user = %self.cluster_user.name,
            "starting embedded PostgreSQL"
        );
        let output = run_command("pg_ctl start", cmd).await?;
        ensure_success("pg_ctl start", &output, Some(&self.data_dir))
    }

    async fn wait_until_ready(&self) -> Result<(), EmbeddedError> {
        let options = self.connect_options(SUPERUSER, SUPERUSER);
        let started = Instant::now();
        let mut last_error;
        loop {
            last_error = match tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, select_one(&options))
                .await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("connection attempt timed out after {CONNECT_ATTEMPT_TIMEOUT:?}"),
            };
            if started.elapsed() >= READY_TIMEOUT {
                break;
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
        Err(EmbeddedError::NotReady {
            waited: started.elapsed(),
            detail: format!("{last_error}\n{}", log_tail_section(&self.data_dir)),
        })
    }

    /// Spawns the detached shell that stops the cluster once this process is gone.
    fn spawn_watchdog(&self, delete_cluster: bool) -> Result<Child, EmbeddedError> {
        // A durable cluster is stopped with SIGINT (pg_ctl's "fast": a clean shutdown), and only
        // the postmaster watched, while postmaster.pid still names it: once this process is gone
        // its lock on the data directory is free, and a new `serve` may already have stopped the
        // orphan itself and started its own postmaster there.
        // Liveness goes through /proc rather than `kill -0`: an unprivileged watchdog gets EPERM
        // from `kill -0` on a root parent even while it lives, and `kill -0` also succeeds on a
        // killed parent that is not reaped yet (a zombie). Where /proc is missing (not Linux),
        // `kill -0` is the fallback. If the test fails right away (/proc mounted with hidepid),
        // the watchdog gives up rather than stop a cluster whose parent is alive.
        // pg_ctl cannot stop a postmaster whose data directory was deleted under it (a test's
        // temp dir removed early, say), so the postmaster is then signalled directly, but only
        // while that pid is still a postmaster of this data directory.
        const SCRIPT: &str = r#"
trap '' HUP INT
parent=$1 pg_ctl=$2 data_dir=$3 postmaster=$4 mode=$5
shift 5
alive() {
    if [ -d /proc/self ]; then
        [ -d "/proc/$parent" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$parent/status" 2>/dev/null
    else
        kill -0 "$parent" 2>/dev/null
    fi
}
alive || exit 1
while alive; do sleep 1; done
ours() {
    [ "$postmaster" -gt 0 ] && tr '\0' '\n' < "/proc/$postmaster/cmdline" 2>/dev/null | grep -qxF -- "$data_dir"
}
if [ "$mode" = durable ]; then
    if [ "$(head -n 1 "$data_dir/postmaster.pid" 2>/dev/null)" = "$postmaster" ] && ours; then
        kill -INT "$postmaster" 2>/dev/null
    fi
    exit 0
fi
"$pg_ctl" stop -D "$data_dir" -m immediate -w -t 30 >/dev/null 2>&1
if ours; then
    kill -QUIT "$postmaster" 2>/dev/null
fi
if [ $# -gt 0 ]; then rm -rf -- "$@"; fi
"#;
        let mut to_delete: Vec<&Path> = Vec::new();
        // Only a cluster this run created is ours to delete: an ephemeral start on an existing
        // cluster must not destroy it.
        if delete_cluster {
            to_delete.push(&self.data_dir);
        }
        if let SocketDir::PrivateTmp(dir) = &self.socket_dir {
            to_delete.push(dir);
        }
        let mut cmd = self.cluster_user.command(Path::new("/bin/sh"));
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("bulkhead-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.binaries.pg_ctl)
            .arg(&self.data_dir)
            .arg(self.postmaster_pid.unwrap_or(0).to_string())
            .arg(if self.ephemeral {
                "ephemeral"
            } else {
                "durable"
            })
            .args(to_delete)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C aimed at the test run must not kill the watchdog
            // before it has stopped the cluster.
            .process_group(0);
        cmd.spawn()
            .map_err(io_error("could not spawn the embedded PostgreSQL watchdog"))
    }

    async fn stop_postmaster(&self) -> Result<(), EmbeddedError> {
        if !self.data_dir.join("postmaster.pid").exists() {
            return Ok(());
        }
        let mut cmd = self.pg_ctl();
        cmd.args(["stop", "-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(&self.data_dir);
        let output = run_command("pg_ctl stop", cmd).await?;
        if output.status.success() {
            return Ok(());
        }
        // Already gone (crashed, stopped by hand, stale pid file) counts as stopped.
        let mut status_cmd = self.pg_ctl();
        status_cmd.arg("status").arg("-D").arg(&self.data_dir);
        let status = run_command("pg_ctl status", status_cmd).await?;
        if status.status.code() == Some(PG_CTL_STATUS_NOT_RUNNING) {
            return Ok(());
        }
        ensure_success("pg_ctl stop", &output, Some(&self.data_dir))
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // Dropped without a successful `stop`: ask the postmaster to shut down without waiting
        // (Drop cannot await). Only signal the pid we started, and only while postmaster.pid
        // still names it, so a recycled pid is never hit.
        let Some(pid) = self.postmaster_pid else {
            return;
        };
        if read_postmaster_pid(&self.data_dir) != Some(pid) {
            return;
        }
        // SIGINT is pg_ctl's "fast" shutdown, SIGQUIT its "immediate" one.
        let shutdown = if self.ephemeral {
            Signal::SIGQUIT
        } else {
            Signal::SIGINT
        };
        match signal::kill(Pid::from_raw(pid), shutdown) {
            Ok(()) => {
                tracing::info!(data_dir = %self.data_dir.display(), "embedded PostgreSQL dropped without stop(): signalled shutdown");
                if let Some(watchdog) = self.watchdog.as_mut() {
                    let _ = watchdog.start_kill();
                }
            }
            Err(error) => {
                tracing::warn!(%error, data_dir = %self.data_dir.display(), "could not signal the embedded PostgreSQL postmaster");
            }
        }
    }
}

async fn select_one(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    let answer: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    conn.close().await?;
    debug_assert_eq!(answer, 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server binaries

#[derive(Debug, Clone)]
struct ServerBinaries {
    bin_dir: PathBuf,
    initdb: PathBuf,
    pg_ctl: PathBuf,
    /// `postgres --version`, e.g. "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)".
    version: String,
    major: u32,
}

/// Directories holding all of initdb, pg_ctl and postgres: those on `path_var` in order, then
/// `<fallback_root>/<major>/bin`, highest major first. Taking all three from one directory
/// keeps initdb and the server of the same version.
fn candidate_bin_dirs(path_var: Option<&OsStr>, fallback_root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(path_var) = path_var {
        // Relative entries (including the empty one, meaning ".") are skipped: we are about to
        // run these binaries, possibly as root.
        for dir in std::env::split_paths(path_var) {
            if dir.is_absolute() && holds_server_binaries(&dir) && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir(fallback_root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            // Debian names them "15", "16"; old ones "9.6".
            let name = entry.file_name();
            let major = name.to_str()?.split('.').next()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            holds_server_binaries(&bin).then_some((major, bin))
        })
        .collect();
    versioned.sort_by(|a, b| b.cmp(a));
    for (_, dir) in versioned {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

fn holds_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|name| is_executable_file(&dir.join(name)))
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
}

/// The first candidate directory whose server is at least version 15.
async fn find_server_binaries(
    path_var: Option<&OsStr>,
    fallback_root: &Path,
) -> Result<ServerBinaries, EmbeddedError> {
    let mut newest_too_old: Option<(u32, String, PathBuf)> = None;
    for bin_dir in candidate_bin_dirs(path_var, fallback_root) {
        let postgres = bin_dir.join("postgres");
        // `--version` is answered before PostgreSQL's refusal to run as root.
        let mut cmd = Command::new(&postgres);
        cmd.arg("--version").env("LC_ALL", "C").stdin(Stdio::null());
        let version = match cmd.output().await {
            Ok(output) if output.status.success() => {
                String::from_utf8_lossy(&output.stdout).trim().to_owned()
            }
            Ok(output) => {
                tracing::debug!(path = %postgres.display(), status = %output.status, "postgres --version failed; skipping");
                continue;
            }
            Err(error) => {
                tracing::debug!(path = %postgres.display(), %error, "could not run postgres --version; skipping");
                continue;
            }
        };
        let Some(major) = parse_major_version(&version) else {
            tracing::debug!(path = %postgres.display(), %version, "unrecognised postgres --version output; skipping");
            continue;
        };
        if major >= MIN_MAJOR_VERSION {
            return Ok(ServerBinaries {
                initdb: bin_dir.join("initdb"),
                pg_ctl: bin_dir.join("pg_ctl"),
                bin_dir,
                version,
                major,
            });
        }
        if newest_too_old
            .as_ref()
            .is_none_or(|(newest, _, _)| major > *newest)
        {
            newest_too_old = Some((major, version, bin_dir));
        }
    }
    match newest_too_old {
        Some((_, found, bin_dir)) => Err(EmbeddedError::VersionTooOld { found, bin_dir }),
        None => Err(EmbeddedError::NoBinaries {
            searched: format!("on PATH or under {}/*/bin", fallback_root.display()),
        }),
    }
}

/// The major version in `postgres --version` output: "postgres (PostgreSQL) 15.20 (Debian …)"
/// gives 15, "postgres (PostgreSQL) 17beta1" gives 17.
fn parse_major_version(version_output: &str) -> Option<u32> {
    let after_name = match version_output.find("(PostgreSQL)") {
        Some(at) => &version_output[at + "(PostgreSQL)".len()..],
        None => version_output,
    };
    let number = after_name
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = number.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The OS user that runs the cluster

#[derive(Debug, Clone)]
struct ClusterUser {
    name: String,
    uid: Uid,
    gid: Gid,
    /// True when we are root and child processes must switch to `uid`/`gid`.
    switch_from_root: bool,
}

impl ClusterUser {
    fn for_this_process() -> Result<Self, EmbeddedError> {
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            let name = User::from_uid(euid)
                .ok()
                .flatten()
                .map_or_else(|| euid.to_string(), |user| user.name);
            return Ok(ClusterUser {
                name,
                uid: euid,
                gid: nix::unistd::getegid(),
                switch_from_root: false,
            });
        }
        for name in UNPRIVILEGED_USERS {
            match User::from_name(name) {
                Ok(Some(user)) if !user.uid.is_root() => {
                    return Ok(ClusterUser {
                        name: user.name,
                        uid: user.uid,
                        gid: user.gid,
                        switch_from_root: true,
                    });
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(user = name, %error, "could not look up user"),
            }
        }
        Err(EmbeddedError::NoUnprivilegedUser)
    }

    /// A command run as this user, with `LC_ALL=C`, from `/` (root's cwd may be unreadable to
    /// the cluster user), stdin closed.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("LC_ALL", "C").current_dir("/").stdin(Stdio::null());
        if self.switch_from_root {
            // std drops root's supplementary groups (setgroups(0)) before setuid.
            cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
        cmd
    }

    /// Whether this user may search (traverse) a directory with these metadata. Only the
    /// primary group counts: children are started without supplementary groups.
    fn can_traverse(&self, meta: &std::fs::Metadata) -> bool {
        let mode = meta.mode();
        if meta.uid() == self.uid.as_raw() {
            mode & 0o100 != 0
        } else if meta.gid() == self.gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Directories

/// Creates the data directory, hands it to the cluster user with mode 0700 and returns its
/// canonical path.
fn prepare_data_dir(requested: &Path, user: &ClusterUser) -> Result<PathBuf, EmbeddedError> {
    // As root we are about to chown the directory to the cluster's user: refuse a symlink at the
    // data directory or its parent (canonicalize would follow it, and a planted link would hand
    // an arbitrary directory to that user), and refuse an existing data directory that belongs
    // to anyone but root or that user (its files would be the other owner's to rewrite).
    if user.switch_from_root {
        for path in [Some(requested), requested.parent()].into_iter().flatten() {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if meta.file_type().is_symlink() {
                    return Err(EmbeddedError::UnsupportedPath {
                        path: path.to_owned(),
                        reason: "is a symbolic link (refused when running as root)",
                    });
                }
            }
        }
        if let Ok(meta) = std::fs::symlink_metadata(requested) {
            if meta.uid() != 0 && meta.uid() != user.uid.as_raw() {
                return Err(EmbeddedError::UnsupportedPath {
                    path: requested.to_owned(),
                    reason: "exists and belongs to another user (refused when running as root)",
                });
            }
        }
    }
    std::fs::create_dir_all(requested).map_err(io_error(format!(
        "could not create the data directory {}",
        requested.display()
    )))?;
    let data_dir = requested.canonicalize().map_err(io_error(format!(
        "could not resolve the data directory {}",
        requested.display()
    )))?;
    check_path_is_supported(&data_dir)?;
    if user.switch_from_root {
        if let Some(blocked) = first_untraversable_ancestor(&data_dir, user)? {
            return Err(EmbeddedError::Unreachable {
                path: blocked,
                user: user.name.clone(),
            });
        }
    }
    give_dir_to(&data_dir, user)?;
    Ok(data_dir)
}

/// pg_ctl hands `-D` and `-l` to /bin/sh inside double quotes, so characters that are special
/// there cannot be passed through; our own arguments are quoted separately.
fn check_path_is_supported(path: &Path) -> Result<(), EmbeddedError> {
    let unsupported = |reason| EmbeddedError::UnsupportedPath {
        path: path.to_owned(),
        reason,
    };
    let text = path
        .to_str()
        .ok_or_else(|| unsupported("it is not valid UTF-8"))?;
    if text
        .chars()
        .any(|c| matches!(c, '"' | '\\' | '$' | '`') || c.is_control())
    {
        return Err(unsupported(
            "pg_ctl passes it through the shell, so it must not contain \", \\, $, ` or control characters",
        ));
    }
    Ok(())
}

/// The first proper ancestor of `dir` (an absolute path) that `user` cannot traverse.
fn first_untraversable_ancestor(
    dir: &Path,
    user: &ClusterUser,
) -> Result<Option<PathBuf>, EmbeddedError> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor).map_err(io_error(format!(
            "could not inspect {}",
            ancestor.display()
        )))?;
        if !user.can_traverse(&meta) {
            return Ok(Some(ancestor.to_owned()));
        }
    }
    Ok(None)
}

/// Makes an existing directory owned by `user` with mode 0700. Works on an open handle with
/// O_NOFOLLOW so a symlink planted by a less privileged user cannot redirect a root chown.
fn give_dir_to(dir: &Path, user: &ClusterUser) -> Result<File, EmbeddedError> {
    let handle = open_dir_nofollow(dir)?;
    if user.switch_from_root {
        std::os::unix::fs::fchown(&handle, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .map_err(io_error(format!(
                "could not give {} to user {}",
                dir.display(),
                user.name
            )))?;
    }
    handle
        .set_permissions(Permissions::from_mode(0o700))
        .map_err(io_error(format!(
            "could not set mode 0700 on {}",
            dir.display()
        )))?;
    Ok(handle)
}

fn open_dir_nofollow(dir: &Path) -> Result<File, EmbeddedError> {
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(dir)
        .map_err(io_error(format!(
            "could not open the directory {} (it must be a real directory, not a symlink)",
            dir.display()
        )))
}

/// Reads `PG_VERSION` ("15"), or `None` when the directory holds no cluster yet.
fn read_pg_version(data_dir: &Path) -> Result<Option<String>, EmbeddedError> {
    let path = data_dir.join("PG_VERSION");
    match read_start_nofollow(&path, SMALL_FILE_LIMIT) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error(format!("could not read {}", path.display()))(
            error,
        )),
    }
}

/// The postmaster's pid: the first line of `postmaster.pid`.
fn read_postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = read_start_nofollow(&data_dir.join("postmaster.pid"), SMALL_FILE_LIMIT).ok()?;
    text.lines()
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
}

/// Bytes read from the start of PG_VERSION or postmaster.pid: far more than they ever hold.
const SMALL_FILE_LIMIT: u64 = 4096;
/// Bytes read from the end of the server log to quote its last lines.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// Opens a file without following a symlink: the cluster user owns the files in the data
/// directory, and we may be root.
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
}

/// The first `max_bytes` of a file, not following a symlink.
fn read_start_nofollow(path: &Path, max_bytes: u64) -> io::Result<String> {
    let mut bytes = Vec::new();
    open_nofollow(path)?
        .take(max_bytes)
        .read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last `max_bytes` of a file, not following a symlink.
fn read_end_nofollow(path: &Path, max_bytes: u64) -> io::Result<String> {
    let mut file = open_nofollow(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
    let mut bytes = Vec::new();
    file.take(max_bytes).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Where the server's socket lives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SocketDir {
    /// `<data_dir>/run`: kept with the cluster.
    InDataDir(PathBuf),
    /// `/tmp/bulkhead-pg-<hash of data_dir>`, for data directories whose socket path would be
    /// too long; removed on stop.
    PrivateTmp(PathBuf),
}

impl SocketDir {
    fn path(&self) -> &Path {
        match self {
            SocketDir::InDataDir(path) | SocketDir::PrivateTmp(path) => path,
        }
    }

    fn remove_if_private_tmp(&self) {
        if let SocketDir::PrivateTmp(dir) = self {
            if let Err(error) = std::fs::remove_dir_all(dir) {
                if error.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(%error, dir = %dir.display(), "could not remove the socket directory");
                }
            }
        }
    }
}

/// `<data_dir>/run` when the socket path `<dir>/.s.PGSQL.<port>` stays under the Unix limit,
/// else a directory under `short_root` named after a hash of the data directory.
fn choose_socket_dir(data_dir: &Path, port: u16, short_root: &Path) -> SocketDir {
    let in_data_dir = data_dir.join("run");
    if socket_path_len(&in_data_dir, port) < MAX_SOCKET_PATH_LEN {
        return SocketDir::InDataDir(in_data_dir);
    }
    let hash = fnv1a_64(data_dir.as_os_str().as_encoded_bytes());
    SocketDir::PrivateTmp(short_root.join(format!("bulkhead-pg-{hash:016x}")))
}

fn socket_path_len(dir: &Path, port: u16) -> usize {
    dir.as_os_str().len() + format!("/.s.PGSQL.{port}").len()
}

/// FNV-1a: a stable hash (unlike std's `DefaultHasher`, which may change between Rust releases),
/// so a data directory keeps its socket directory name across builds.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Creates the socket directory if needed and makes it the cluster user's, mode 0700.
fn prepare_socket_dir(socket_dir: &SocketDir, user: &ClusterUser) -> Result<(), EmbeddedError> {
    let dir = socket_dir.path();
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => {
            return Err(io_error(format!(
                "could not create the socket directory {}",
                dir.display()
            ))(error))
        }
    }
    if let SocketDir::PrivateTmp(_) = socket_dir {
        // /tmp is shared: a directory under a predictable name there could have been planted
        // by another user to intercept connections. Accept only one that is ours or the
        // cluster user's (the sticky bit then keeps others from replacing it).
        let handle = open_dir_nofollow(dir).map_err(|_| EmbeddedError::UnsafeSocketDir {
            path: dir.to_owned(),
            reason: "it is not a directory (a symlink?)".to_owned(),
        })?;
        let meta = handle
            .metadata()
            .map_err(io_error(format!("could not inspect {}", dir.display())))?;
        let owner = meta.uid();
        if owner != user.uid.as_raw() && owner != nix::unistd::geteuid().as_raw() {
            return Err(EmbeddedError::UnsafeSocketDir {
                path: dir.to_owned(),
                reason: format!(
                    "it belongs to uid {owner}, not to {} or to us; remove it",
                    user.name
                ),
            });
        }
    }
    give_dir_to(dir, user)?;
    Ok(())
}

/// A port number that no loopback listener uses right now. The server never listens on it:
/// it only names the socket file, and a fresh number keeps two clusters' sockets apart.
fn free_port_number() -> Result<u16, EmbeddedError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(io_error(
        "could not pick a free port number (bind 127.0.0.1:0)",
    ))?;
    let port = listener
        .local_addr()
        .map_err(io_error("could not read the picked port number"))?
        .port();
    Ok(port)
}

// ---------------------------------------------------------------------------------------------
// Commands

async fn run_initdb(
    binaries: &ServerBinaries,
    user: &ClusterUser,
    data_dir: &Path,
    ephemeral: bool,
) -> Result<(), EmbeddedError> {
    tracing::info!(data_dir = %data_dir.display(), version = %binaries.version, user = %user.name, "creating a PostgreSQL cluster (initdb)");
    let mut cmd = user.command(&binaries.initdb);
    cmd.arg("-D").arg(data_dir).args([
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-instructions",
    ]);
    if ephemeral {
        cmd.arg("--no-sync");
    }
    let output = run_command("initdb", cmd).await?;
    ensure_success("initdb", &output, None)
}

/// The `-o` argument of `pg_ctl start`. pg_ctl pastes it into a /bin/sh command line, so the
/// socket directory is single-quoted for the shell, and double-quoted inside for PostgreSQL,
/// which reads `unix_socket_directories` as a comma-separated list.
fn server_options(socket_dir: &Path, port: u16, ephemeral: bool) -> Result<String, EmbeddedError> {
    let socket_dir = socket_dir
        .to_str()
        .ok_or_else(|| EmbeddedError::UnsupportedPath {
            path: socket_dir.to_owned(),
            reason: "it is not valid UTF-8",
        })?;
    let socket_dir_list = format!("\"{}\"", socket_dir.replace('"', "\"\""));
    let mut options = vec![
        "-c listen_addresses=''".to_owned(),
        format!(
            "-c unix_socket_directories={}",
            shell_single_quote(&socket_dir_list)
        ),
        format!("-c port={port}"),
        "-c unix_socket_permissions=0700".to_owned(),
        "-c max_connections=200".to_owned(),
    ];
    if ephemeral {
        options.extend(
            [
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
            .map(str::to_owned),
        );
    }
    Ok(options.join(" "))
}

/// Quotes `text` as one /bin/sh word.
fn shell_single_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

async fn run_command(step: &'static str, mut cmd: Command) -> Result<Output, EmbeddedError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.output()
        .await
        .map_err(io_error(format!("could not run {step}")))
}

/// Turns a failed command into `EmbeddedError::Command` with the tail of its output and, when
/// `data_dir` is given, of the server log.
fn ensure_success(
    step: &'static str,
    output: &Output,
    data_dir: Option<&Path>,
) -> Result<(), EmbeddedError> {
    if output.status.success() {
        return Ok(());
    }
    let mut detail = String::new();
    for stream in [&output.stderr, &output.stdout] {
        let text = String::from_utf8_lossy(stream);
        let text = text.trim();
        if !text.is_empty() {
            detail.push_str(&tail_lines(text, TAIL_LINES));
            detail.push('\n');
        }
    }
    if let Some(data_dir) = data_dir {
        detail.push_str(&log_tail_section(data_dir));
    }
    Err(EmbeddedError::Command {
        step,
        status: output.status,
        detail: detail.trim_end().to_owned(),
    })
}

fn log_tail_section(data_dir: &Path) -> String {
    let path = data_dir.join(LOG_FILE);
    match read_end_nofollow(&path, LOG_TAIL_BYTES) {
        Ok(text) => format!(
            "last lines of {}:\n{}",
            path.display(),
            tail_lines(&text, TAIL_LINES)
        ),
        Err(error) => format!("(could not read {}: {error})", path.display()),
    }
}

fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system temp dir, removed on drop (the store crate has no
    /// `tempfile` dependency).
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new(label: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "bulkhead-embedded-test-{label}-{:016x}",
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            ScratchDir(dir)
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Held by tests that write executables or spawn processes: a process forked while another
    /// test still has a script open for writing would make executing that script fail with
    /// ETXTBSY ("text file busy").
    static SPAWN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Writes fake initdb, pg_ctl and postgres scripts into `dir`; `postgres --version` prints
    /// `version_line`.
    fn fake_server(dir: &Path, version_line: &str) {
        std::fs::create_dir_all(dir).expect("create fake bin dir");
        for name in ["initdb", "pg_ctl"] {
            write_script(&dir.join(name), "#!/bin/sh\nexit 0\n");
        }
        write_script(
            &dir.join("postgres"),
            &format!("#!/bin/sh\necho '{version_line}'\n"),
        );
    }

    fn write_script(path: &Path, body: &str) {
        std::fs::write(path, body).expect("write script");
        std::fs::set_permissions(path, Permissions::from_mode(0o755)).expect("chmod script");
    }

    fn other_user() -> ClusterUser {
        // An identity that owns nothing here: not us, not our group.
        ClusterUser {
            name: "someone-else".to_owned(),
            uid: Uid::from_raw(54_321),
            gid: Gid::from_raw(54_321),
            switch_from_root: true,
        }
    }

    #[test]
    fn parses_major_versions() {
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major_version("postgres (PostgreSQL) 16.4"), Some(16));
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 17beta1"),
            Some(17)
        );
        assert_eq!(parse_major_version("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major_version("something else entirely"), None);
    }

    #[tokio::test]
    async fn no_binaries_names_the_package_and_database_url() {
        let empty = ScratchDir::new("empty");
        let error = find_server_binaries(Some(OsStr::new("")), &empty.0.join("missing"))
            .await
            .expect_err("nothing to find");
        assert!(
            matches!(error, EmbeddedError::NoBinaries { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("initdb, pg_ctl, postgres >= 15"),
            "{message}"
        );
        assert!(message.contains("on PATH or under"), "{message}");
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
        assert!(!message.contains('\n'), "one sentence: {message}");
    }

    #[tokio::test]
    async fn incomplete_bin_dirs_are_ignored() {
        let _spawning = SPAWN_LOCK.lock().await;
        let root = ScratchDir::new("incomplete");
        let bin = root.0.join("bin");
        fake_server(&bin, "postgres (PostgreSQL) 16.1");
        std::fs::remove_file(bin.join("initdb")).expect("remove initdb");
        let error = find_server_binaries(Some(bin.as_os_str()), &root.0.join("missing"))
            .await
            .expect_err("no initdb");
        assert!(
            matches!(error, EmbeddedError::NoBinaries { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn too_old_servers_are_skipped_then_reported() {
        let _spawning = SPAWN_LOCK.lock().await;
        let root = ScratchDir::new("versions");
        let on_path = root.0.join("path-bin");
        fake_server(&on_path, "postgres (PostgreSQL) 14.9");
        let debian_root = root.0.join("lib-postgresql");
        fake_server(&debian_root.join("9.6/bin"), "postgres (PostgreSQL) 9.6.24");
        fake_server(&debian_root.join("15/bin"), "postgres (PostgreSQL) 15.2");
        fake_server(&debian_root.join("16/bin"), "postgres (PostgreSQL) 16.3");

        // PATH's 14 is too old: the highest Debian major wins.
        let found = find_server_binaries(Some(on_path.as_os_str()), &debian_root)
            .await
            .expect("16 is found");
        assert_eq!(found.major, 16);
        assert_eq!(found.bin_dir, debian_root.join("16/bin"));
        assert_eq!(found.pg_ctl, debian_root.join("16/bin/pg_ctl"));

        // Only old servers: the newest of them is named.
        let error = find_server_binaries(Some(on_path.as_os_str()), &root.0.join("missing"))
            .await
            .expect_err("14 is too old");
        match error {
            EmbeddedError::VersionTooOld {
                ref found,
                ref bin_dir,
            } => {
                assert!(found.contains("14.9"), "{found}");
                assert_eq!(bin_dir, &on_path);
            }
            other => panic!("expected VersionTooOld, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn path_comes_before_the_debian_root() {
        let _spawning = SPAWN_LOCK.lock().await;
        let root = ScratchDir::new("order");
        let on_path = root.0.join("path-bin");
        fake_server(&on_path, "postgres (PostgreSQL) 15.1");
        let debian_root = root.0.join("lib-postgresql");
        fake_server(&debian_root.join("17/bin"), "postgres (PostgreSQL) 17.0");
        let path_var =
            std::env::join_paths([Path::new("relative/ignored"), &on_path]).expect("join PATH");
        let found = find_server_binaries(Some(&path_var), &debian_root)
            .await
            .expect("found");
        assert_eq!(found.bin_dir, on_path);
        assert_eq!(found.major, 15);
    }

    #[test]
    fn socket_dir_is_in_the_data_dir_when_short_enough() {
        let data_dir = Path::new("/var/lib/bulkhead/pg");
        assert_eq!(
            choose_socket_dir(data_dir, 54_321, Path::new("/tmp")),
            SocketDir::InDataDir(PathBuf::from("/var/lib/bulkhead/pg/run"))
        );
    }

    #[test]
    fn socket_dir_moves_to_tmp_when_the_path_would_be_too_long() {
        let data_dir = PathBuf::from(format!("/srv/{}/pg", "deep/".repeat(20)));
        let chosen = choose_socket_dir(&data_dir, 65_535, Path::new("/tmp"));
        let SocketDir::PrivateTmp(dir) = &chosen else {
            panic!("expected /tmp, got {chosen:?}")
        };
        assert!(dir.starts_with("/tmp"));
        let name = dir.file_name().and_then(OsStr::to_str).expect("utf-8 name");
        assert!(
            name.starts_with("bulkhead-pg-") && name.len() == "bulkhead-pg-".len() + 16,
            "{name}"
        );
        assert!(socket_path_len(dir, 65_535) < MAX_SOCKET_PATH_LEN);
        // Stable for one data dir, distinct for another.
        assert_eq!(choose_socket_dir(&data_dir, 1, Path::new("/tmp")), chosen);
        let other = data_dir.join("x");
        assert_ne!(
            choose_socket_dir(&other, 1, Path::new("/tmp")).path(),
            chosen.path()
        );
    }

    #[test]
    fn socket_path_length_counts_the_socket_file_name() {
        // "/a" + "/.s.PGSQL.5432"
        assert_eq!(socket_path_len(Path::new("/a"), 5432), 2 + 14);
        // The boundary: a path of exactly MAX_SOCKET_PATH_LEN bytes is refused.
        let long = format!(
            "/{}",
            "d".repeat(MAX_SOCKET_PATH_LEN - 1 - "/run/.s.PGSQL.5432".len())
        );
        assert_eq!(
            socket_path_len(&Path::new(&long).join("run"), 5432),
            MAX_SOCKET_PATH_LEN
        );
        assert!(matches!(
            choose_socket_dir(Path::new(&long), 5432, Path::new("/tmp")),
            SocketDir::PrivateTmp(_)
        ));
        let shorter = &long[..long.len() - 1];
        assert!(matches!(
            choose_socket_dir(Path::new(shorter), 5432, Path::new("/tmp")),
            SocketDir::InDataDir(_)
        ));
    }

    #[test]
    fn fnv1a_matches_reference_values() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn untraversable_ancestors_are_found() {
        let root = ScratchDir::new("traverse");
        let private = root.0.join("private");
        let data_dir = private.join("data");
        std::fs::create_dir_all(&data_dir).expect("create dirs");
        std::fs::set_permissions(&root.0, Permissions::from_mode(0o711)).expect("chmod root");

        std::fs::set_permissions(&private, Permissions::from_mode(0o700)).expect("chmod private");
        let blocked = first_untraversable_ancestor(&data_dir, &other_user()).expect("inspect");
        assert_eq!(blocked.as_deref(), Some(private.as_path()));

        // Search permission for others is enough; read permission is not needed.
        std::fs::set_permissions(&private, Permissions::from_mode(0o701)).expect("chmod private");
        assert_eq!(
            first_untraversable_ancestor(&data_dir, &other_user()).expect("inspect"),
            None
        );

        // The owner's own bits count for the owner (here: us).
        std::fs::set_permissions(&private, Permissions::from_mode(0o700)).expect("chmod private");
        let me = ClusterUser {
            name: "me".to_owned(),
            uid: nix::unistd::geteuid(),
            gid: nix::unistd::getegid(),
            switch_from_root: false,
        };
        assert_eq!(
            first_untraversable_ancestor(&data_dir, &me).expect("inspect"),
            None
        );
    }

    #[test]
    fn unreachable_message_suggests_another_data_dir() {
        let error = EmbeddedError::Unreachable {
            path: PathBuf::from("/root"),
            user: "postgres".to_owned(),
        };
        let message = error.to_string();
        assert!(
            message.contains("/root")
                && message.contains("--data-dir")
                && message.contains("postgres"),
            "{message}"
        );
    }

    #[test]
    fn paths_pg_ctl_cannot_quote_are_refused() {
        assert!(check_path_is_supported(Path::new("/var/lib/bulk head/it's")).is_ok());
        for bad in [
            "/tmp/a\"b",
            "/tmp/a$b",
            "/tmp/a`b`",
            "/tmp/a\\b",
            "/tmp/a\nb",
        ] {
            assert!(
                matches!(
                    check_path_is_supported(Path::new(bad)),
                    Err(EmbeddedError::UnsupportedPath { .. })
                ),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn server_options_survive_the_shell() {
        let _spawning = SPAWN_LOCK.blocking_lock();
        // pg_ctl runs `exec postgres <options>` through /bin/sh: the socket directory must come
        // out as one argument, double-quoted for PostgreSQL's list parser.
        let socket_dir = Path::new("/tmp/with space/it's,here");
        let options = server_options(socket_dir, 5433, true).expect("options");
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf '%s\\n' {options}"))
            .output()
            .expect("run sh");
        let words = String::from_utf8(output.stdout).expect("utf-8");
        let words: Vec<&str> = words.lines().collect();
        assert!(words.contains(&"listen_addresses="), "{words:?}");
        assert!(
            words.contains(&"unix_socket_directories=\"/tmp/with space/it's,here\""),
            "{words:?}"
        );
        assert!(words.contains(&"port=5433"), "{words:?}");
        assert!(words.contains(&"unix_socket_permissions=0700"), "{words:?}");
        assert!(words.contains(&"fsync=off"), "{words:?}");
        assert!(words.contains(&"full_page_writes=off"), "{words:?}");

        let durable = server_options(socket_dir, 5433, false).expect("options");
        assert!(!durable.contains("fsync"), "{durable}");
    }

    #[test]
    fn log_tails_read_the_end_of_the_file() {
        let dir = ScratchDir::new("log");
        let log: String = (1..=5000).map(|n| format!("line {n}\n")).collect();
        std::fs::write(dir.0.join(LOG_FILE), &log).expect("write");
        let section = log_tail_section(&dir.0);
        assert!(section.ends_with("line 5000"), "{section}");
        assert!(
            section.contains("line 4981\n") && !section.contains("line 4980\n"),
            "{section}"
        );
    }

    #[test]
    fn tails_keep_the_last_lines() {
        let text = (1..=30)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        let tail = tail_lines(&text, 3);
        assert_eq!(tail, "28\n29\n30");
        assert_eq!(tail_lines("one", 20), "one");
    }

    #[test]
    fn reads_pg_version_and_postmaster_pid() {
        let dir = ScratchDir::new("files");
        assert_eq!(read_pg_version(&dir.0).expect("read"), None);
        std::fs::write(dir.0.join("PG_VERSION"), "15\n").expect("write");
        assert_eq!(
            read_pg_version(&dir.0).expect("read").as_deref(),
            Some("15")
        );
        assert_eq!(read_postmaster_pid(&dir.0), None);
        // A real postmaster.pid is longer than one might guess: only its first line is the pid.
        let pid_file = "4242\n/var/lib/bulkhead/a-long-data-directory-name/pg\n1795514602\n32793\n/var/lib/bulkhead/pg/run\n\n  1234567   98304\nready   \n";
        std::fs::write(dir.0.join("postmaster.pid"), pid_file).expect("write");
        assert_eq!(read_postmaster_pid(&dir.0), Some(4242));
    }

    #[test]
    fn symlinked_files_are_not_followed() {
        let dir = ScratchDir::new("symlink");
        std::fs::write(dir.0.join("target"), "secret\n").expect("write");
        std::os::unix::fs::symlink(dir.0.join("target"), dir.0.join(LOG_FILE)).expect("symlink");
        assert!(read_end_nofollow(&dir.0.join(LOG_FILE), 1024).is_err());
        assert!(read_start_nofollow(&dir.0.join(LOG_FILE), 1024).is_err());
        std::os::unix::fs::symlink(&dir.0, dir.0.join("linked-dir")).expect("symlink");
        assert!(open_dir_nofollow(&dir.0.join("linked-dir")).is_err());
    }

    #[test]
    fn planted_tmp_socket_dirs_are_refused() {
        let root = ScratchDir::new("planted");
        let planted = root.0.join("bulkhead-pg-0000000000000000");
        std::os::unix::fs::symlink(&root.0, &planted).expect("symlink");
        let me = ClusterUser {
            name: "me".to_owned(),
            uid: nix::unistd::geteuid(),
            gid: nix::unistd::getegid(),
            switch_from_root: false,
        };
        let error = prepare_socket_dir(&SocketDir::PrivateTmp(planted), &me)
            .expect_err("a symlink is refused");
        assert!(
            matches!(error, EmbeddedError::UnsafeSocketDir { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn root_runs_the_cluster_as_an_unprivileged_user() {
        let user = ClusterUser::for_this_process().expect("a user to run PostgreSQL as");
        assert!(!user.uid.is_root());
        assert_eq!(user.switch_from_root, nix::unistd::geteuid().is_root());
    }
}
