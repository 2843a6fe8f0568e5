//! The postmaster of an embedded cluster: starting it (initdb on first use, a watchdog that
//! stops it with its parent), connecting to it, and stopping it.

use super::*;

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
    durable_writes: bool,
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
        let binaries =
            find_server_binaries(opts.search_path.as_deref(), Path::new(DEBIAN_SERVER_ROOT))
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
            durable_writes: opts.durable_writes,
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
        let options = server_options(self.socket_dir.path(), self.port, self.durable_writes)?;
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
pub(super) fn server_options(
    socket_dir: &Path,
    port: u16,
    durable_writes: bool,
) -> Result<String, EmbeddedError> {
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
    if !durable_writes {
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

pub(super) fn log_tail_section(data_dir: &Path) -> String {
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

pub(super) fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}
