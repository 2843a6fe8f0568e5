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

mod postmaster;

pub use postmaster::EmbeddedPostgres;

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
    /// Test clusters: stopped immediately (and deleted if this run created them) when the
    /// process that started them exits, even by SIGKILL. A durable cluster is stopped cleanly
    /// then, and kept.
    pub ephemeral: bool,
    /// Writes as PostgreSQL's defaults make them, which is how `serve` runs its cluster:
    /// `fsync`, `synchronous_commit` and `full_page_writes` on. `false` turns all three off, for
    /// test clusters only (nothing in them is worth a flush); benchmarks keep them on, so that
    /// they measure what users run.
    pub durable_writes: bool,
    /// Where to look for the server binaries first, in `PATH` syntax (the caller's settings read
    /// it from `PATH`); then `/usr/lib/postgresql/<major>/bin`, highest major first. Relative
    /// entries are skipped.
    pub search_path: Option<std::ffi::OsString>,
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

#[cfg(test)]
mod tests;
