//! `bulkhead serve` with no DATABASE_URL: the embedded default, end to end, through the binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_test_support::loopback_client;
use serde_json::{json, Value};

fn bulkhead(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("BULKHEAD_APP_DATABASE_URL")
        .env_remove("BULKHEAD_KEY_PEPPER")
        .env_remove("BULKHEAD_MASTER_KEY")
        .env("BULKHEAD_DATA_DIR", data_dir)
        // The default issuer is the listen address, and every start here picks a new port.
        .env("BULKHEAD_ISSUER", "http://bulkhead.embedded.test")
        .env("RUST_LOG", "warn");
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Server {
    async fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[]).await
    }

    /// `serve` with extra environment variables.
    async fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let log = data_dir.with_file_name(format!("serve-{port}.log"));
        let child = bulkhead(data_dir)
            .envs(env.iter().copied())
            // Metrics on a free loopback port: servers of parallel tests must not share 9090.
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let client = loopback_client();
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "server never became ready: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                assert!(
                    exit.success(),
                    "unclean exit {exit}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
                return;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test]
async fn serve_without_database_url_starts_serves_and_restarts_on_the_same_data_dir() {
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-embedded-")
        .tempdir()
        .unwrap();
    // The cluster may run as an unprivileged user (when tests run as root): let it traverse.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("state");

    // 1. First start on an empty directory: initdb, migrations, ready.
    let server = Server::start(&data_dir).await;
    let health = loopback_client()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    server.stop();
    assert!(
        !data_dir.join("pg/postmaster.pid").exists(),
        "PostgreSQL was not stopped cleanly"
    );
    let pepper_mode = std::fs::metadata(data_dir.join("key-pepper"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        pepper_mode & 0o777,
        0o600,
        "the pepper file must be private"
    );

    // 2. Onboard a tenant with the CLI on the same data directory.
    let output = bulkhead(&data_dir)
        .args(["tenant", "create", "--slug", "acme", "--name", "Acme Corp"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = created["admin_api_key"].as_str().unwrap().to_owned();
    assert!(created["tenant"]["id"]
        .as_str()
        .unwrap()
        .starts_with("tnt_"));
    assert!(key.starts_with("bk_live_") && key.len() == 57);
    // A reserved slug is refused with a clear message, before any database work.
    let refused = bulkhead(&data_dir)
        .args(["tenant", "create", "--slug", "admin", "--name", "X"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("reserved"));

    // 3. Restart: the key works, data written now must survive the next restart.
    let server = Server::start(&data_dir).await;
    let client = loopback_client();
    let created: Value = client
        .post(format!("{}/v1/sessions", server.base))
        .bearer_auth(&key)
        .json(&json!({ "agent_id": "agent-1", "title": "survives restarts" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    server.stop();

    let server = Server::start(&data_dir).await;
    let got: Value = client
        .get(format!("{}/v1/sessions/{id}", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["title"], "survives restarts");
    server.stop();
}

/// Issue 19: `serve`, then, in another terminal, `tenant create`: the command reaches the
/// running server through its operator socket (authenticated by its account), prints what it
/// prints on the data directory, the tenant works at once, and the operator log names the
/// command's account. A command with no operator route still may not open the cluster.
#[tokio::test]
async fn tenant_commands_reach_a_running_server_through_its_socket_and_others_are_refused() {
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-embedded-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("state");
    let server = Server::start(&data_dir).await;
    // The start banner says where everything is and what to do next.
    let banner = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        banner.contains(&format!("API        {}", server.base)),
        "{banner}"
    );
    assert!(banner.contains("/openapi.json"), "{banner}");
    assert!(banner.contains("operator.sock"), "{banner}");
    assert!(banner.contains("bulkhead tenant create"), "{banner}");

    let output = bulkhead(&data_dir)
        .args(["tenant", "create", "--slug", "acme", "--name", "Acme Corp"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = created["admin_api_key"].as_str().unwrap();
    assert!(key.starts_with("bk_live_"), "{created}");
    assert_eq!(created["tenant"]["slug"], "acme");
    assert!(created["admin_api_key_id"]
        .as_str()
        .unwrap()
        .starts_with("key_"));
    // Usable at once, on the running server.
    let session = loopback_client()
        .post(format!("{}/v1/sessions", server.base))
        .bearer_auth(key)
        .json(&json!({ "agent_id": "agent-1", "title": "first" }))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), reqwest::StatusCode::CREATED);
    // The other tenant commands go the same way; a missing tenant reads as in direct mode.
    let suspended = bulkhead(&data_dir)
        .args(["tenant", "suspend", "acme"])
        .output()
        .unwrap();
    assert!(suspended.status.success());
    let suspended: Value = serde_json::from_slice(&suspended.stdout).unwrap();
    assert_eq!(suspended["status"], "suspended");
    let missing = bulkhead(&data_dir)
        .args(["tenant", "show", "nobody"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no tenant `nobody`"));
    // Audited as the operator log has it for the command line: the account, started, success.
    let socket = data_dir.join("operator.sock");
    let (status, events) = bulkhead_test_support::operator_request(
        &socket,
        reqwest::Method::GET,
        "/operator/v1/audit-events?limit=50",
        None,
        None,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{events}");
    let of = |action: &str, outcome: &str| {
        events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action && e["outcome"] == outcome)
            .cloned()
            .unwrap_or_else(|| panic!("no {action} {outcome} in {events}"))
    };
    let done = of("tenant.create", "success");
    assert!(
        done["actor"].as_str().unwrap().starts_with("cli:"),
        "{done}"
    );
    assert_eq!(done["resource_id"], created["tenant"]["id"]);
    of("tenant.create", "started");
    of("tenant.suspend", "success");
    // A bearer header that is not a key is still refused on the socket: only the absence of
    // any credential means "the socket's own account".
    let (status, _) = bulkhead_test_support::operator_request(
        &socket,
        reqwest::Method::GET,
        "/operator/v1/tenants",
        Some("bk_live_not_an_operator_key"),
        None,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    // A move through the socket: the server runs it, the command follows it to its report.
    let moved = bulkhead(&data_dir)
        .args(["tenant", "move", "acme", "--to", "schema"])
        .output()
        .unwrap();
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    let report: Value = serde_json::from_slice(&moved.stdout).unwrap();
    assert_eq!(report["tables"]["agent_sessions"]["rows"], 1, "{report}");
    let shown = bulkhead(&data_dir)
        .args(["tenant", "show", "acme"])
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["isolation_tier"], "schema", "{shown}");
    // Quotas through the socket.
    let set = bulkhead(&data_dir)
        .args(["tenant", "quota", "set", "acme", "sessions", "5"])
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let set: Value = serde_json::from_slice(&set.stdout).unwrap();
    assert_eq!(set["limit"], 5, "{set}");
    let quotas = bulkhead(&data_dir)
        .args(["tenant", "quota", "show", "acme"])
        .output()
        .unwrap();
    let quotas: Value = serde_json::from_slice(&quotas.stdout).unwrap();
    assert_eq!(quotas["tenant"], created["tenant"]["id"], "{quotas}");
    // A dedicated database's URL never goes through the operator API.
    let refused = bulkhead(&data_dir)
        .args(["tenant", "move", "acme", "--to", "dedicated"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stop the server"));
    let listed_live = bulkhead(&data_dir)
        .args(["tenant", "list"])
        .output()
        .unwrap();
    assert!(listed_live.status.success());
    // An export through the socket (the running server writes it), checked and renamed.
    let export = |name: &str| {
        let path = dir.path().join(name);
        let output = bulkhead(&data_dir)
            .args(["tenant", "export", "acme", "-o"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(path.exists() && !path.with_extension("partial").exists());
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let exported_live = export("acme-live.tar");
    assert_eq!(
        exported_live["tables"]["agent_sessions"], 1,
        "{exported_live}"
    );

    // The archive into another deployment while that one runs: `tenant import` streams it
    // through that server's socket, and the tenant is there at once; a second import is refused.
    let other_dir = dir.path().join("other");
    let other = Server::start(&other_dir).await;
    let import = || {
        bulkhead(&other_dir)
            .args(["tenant", "import", "--tier", "schema"])
            .arg(dir.path().join("acme-live.tar"))
            .output()
            .unwrap()
    };
    let imported = import();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let report: Value = serde_json::from_slice(&imported.stdout).unwrap();
    assert_eq!(report["tenant"]["id"], created["tenant"]["id"], "{report}");
    assert_eq!(report["tenant"]["isolation_tier"], "schema", "{report}");
    assert_eq!(report["tables"]["agent_sessions"], 1, "{report}");
    let shown = bulkhead(&other_dir)
        .args(["tenant", "show", "acme"])
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["id"], created["tenant"]["id"], "{shown}");
    let again = import();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("exists here"), "{stderr}");
    other.stop();

    // `migrate` has no operator route: it still may not open the cluster the server holds.
    let output = bulkhead(&data_dir).args(["migrate"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another Bulkhead process is using"),
        "{stderr}"
    );
    // The first server is still serving.
    let ready = loopback_client()
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert!(ready.status().is_success());
    server.stop();

    // Stopped: the same command on the data directory prints the same text.
    let listed_direct = bulkhead(&data_dir)
        .args(["tenant", "list"])
        .output()
        .unwrap();
    assert!(
        listed_direct.status.success(),
        "{}",
        String::from_utf8_lossy(&listed_direct.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&listed_live.stdout),
        String::from_utf8_lossy(&listed_direct.stdout)
    );
    // The same export from the data directory: the same rows.
    let exported_direct = export("acme-direct.tar");
    assert_eq!(exported_direct["tables"], exported_live["tables"]);
    assert_eq!(
        exported_direct["audit_log_key"],
        exported_live["audit_log_key"]
    );
}

/// Whether `pid` is still a live process whose command line names `data_dir` (a recycled pid or
/// a zombie is not).
fn postmaster_running(pid: i32, data_dir: &Path) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    if status.is_empty()
        || status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let want = data_dir.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == want)
}

/// Issue 26.6: `serve` killed with SIGKILL (as by the OOM killer) must not leave its embedded
/// PostgreSQL running: the watchdog stops it cleanly once the parent is gone, and the next
/// start on the same directory works.
#[tokio::test]
async fn a_killed_serve_does_not_leave_its_postgres_running() {
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-embedded-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("state");
    let mut server = Server::start(&data_dir).await;
    let pg_dir = std::fs::canonicalize(data_dir.join("pg")).unwrap();
    let pid: i32 = std::fs::read_to_string(pg_dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        postmaster_running(pid, &pg_dir),
        "postmaster {pid} not found"
    );
    server.child.kill().unwrap(); // SIGKILL: no shutdown code runs
    server.child.wait().unwrap();
    // Its operator socket stays behind, stale.
    let socket = data_dir.join("operator.sock");
    assert!(
        std::fs::symlink_metadata(&socket).is_ok(),
        "no stale socket"
    );
    // Polled against a generous bound (the watchdog looks every second; a clean shutdown
    // writes a checkpoint): this checks that it stops, not how fast.
    let deadline = Instant::now() + Duration::from_secs(60);
    while postmaster_running(pid, &pg_dir) {
        assert!(
            Instant::now() < deadline,
            "the embedded PostgreSQL (pid {pid}) outlived its killed parent"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nobody answers on the stale socket: a tenant command works on the data directory.
    let output = bulkhead(&data_dir)
        .args(["tenant", "create", "--slug", "acme", "--name", "Acme"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Stopped cleanly, so the next start finds no server to stop and serves (and replaces the
    // stale socket).
    let server = Server::start(&data_dir).await;
    server.stop();
}

#[tokio::test]
async fn signing_keys_are_sealed_rotated_by_the_cli_and_old_tokens_outlive_the_rotation() {
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-embedded-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("state");

    // First start creates the master key (private) and the signing keys.
    Server::start(&data_dir).await.stop();
    let mode = std::fs::metadata(data_dir.join("master-key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the master key file must be private");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = bulkhead(&data_dir);
        command.args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let listed = run(&["signing-key", "list"], &[]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    run(
        &["tenant", "create", "--slug", "acme", "--name", "Acme"],
        &[],
    );
    run(
        &[
            "user",
            "create",
            "--tenant",
            "acme",
            "--email",
            "Ann@Acme.test",
            "--scopes",
            "sessions:read",
        ],
        &[("BULKHEAD_USER_PASSWORD", "correct horse battery staple")],
    );

    let login = |base: String| async move {
        let response = loopback_client()
            .post(format!("{base}/v1/auth/login"))
            .json(&json!({ "email": "ann@acme.test", "password": "correct horse battery staple", "tenant": "acme" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    };
    let kid = |token: &str| {
        use base64::Engine as _;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        serde_json::from_slice::<Value>(&header).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let server = Server::start(&data_dir).await;
    let old = login(server.base.clone()).await;
    server.stop();

    let rotation = run(&["signing-key", "rotate"], &[]);
    assert_eq!(rotation["retired"]["kid"], kid(&old).as_str());

    let server = Server::start(&data_dir).await;
    let still = loopback_client()
        .get(format!("{}/v1/sessions", server.base))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(
        still.status(),
        200,
        "a token of the retired key verifies until it expires"
    );
    let new = login(server.base.clone()).await;
    assert_eq!(kid(&new), rotation["current"].as_str().unwrap());
    server.stop();
}

#[tokio::test]
async fn the_cli_places_migrates_and_moves_tenants_across_tiers_and_embedded_regions() {
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-tiers-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("state");
    // One private cluster per region: `default` in the data directory, `eu` beside it.
    let cli = |args: &[&str]| {
        let output = bulkhead(&data_dir)
            .env("BULKHEAD_REGIONS", "eu=embedded")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "bulkhead {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let acme = cli(&[
        "tenant", "create", "--slug", "acme", "--name", "Acme", "--tier", "schema",
    ]);
    assert_eq!(acme["tenant"]["isolation_tier"], "schema");
    let euco = cli(&[
        "tenant", "create", "--slug", "eu-co", "--name", "EU Co", "--region", "eu",
    ]);
    assert_eq!(euco["tenant"]["region"], "eu");

    let migrated = cli(&["migrate", "--parallel", "2"]);
    assert_eq!(migrated["failed"], 0);
    let labels: Vec<&str> = migrated["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert!(
        labels.contains(&"shared (default)") && labels.contains(&"shared (eu)"),
        "{labels:?}"
    );
    assert!(
        labels.iter().any(|l| l.starts_with("schema tenant_")),
        "{labels:?}"
    );

    let moved = cli(&["tenant", "move", "acme", "--to", "shared"]);
    assert!(moved["rows"].as_i64().unwrap() > 0);
    assert_eq!(moved["to"], "shared in region default");
    let moved = cli(&["tenant", "move", "eu-co", "--to", "schema"]);
    assert!(moved["to"].as_str().unwrap().ends_with("in region eu"));
    // A second move of the same tenant to where it is: refused, clearly.
    let again = bulkhead(&data_dir)
        .env("BULKHEAD_REGIONS", "eu=embedded")
        .args(["tenant", "move", "acme", "--to", "shared"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));

    // Served from both regions' clusters by one process.
    let server = Server::start_with(&data_dir, &[("BULKHEAD_REGIONS", "eu=embedded")]).await;
    for tenant in [&acme, &euco] {
        let listed = loopback_client()
            .get(format!("{}/v1/sessions", server.base))
            .bearer_auth(tenant["admin_api_key"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            listed.status(),
            reqwest::StatusCode::OK,
            "{}",
            tenant["tenant"]["slug"]
        );
    }
    server.stop();
}

/// `bulkhead tenant delete` through a running server's socket (schedule, cancel, purge now) and,
/// with the server stopped, on the data directory: the same record and receipt either way.
#[tokio::test]
async fn tenant_delete_schedules_cancels_and_purges_through_the_socket_and_directly() {
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-embedded-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("state");
    let run = |args: &[&str]| {
        let output = bulkhead(&data_dir).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let server = Server::start(&data_dir).await;
    for slug in ["acme", "beta"] {
        run(&["tenant", "create", "--slug", slug, "--name", slug]);
    }
    let scheduled = run(&["tenant", "delete", "acme", "--grace-period", "60"]);
    assert_eq!(scheduled["state"], "scheduled", "{scheduled}");
    assert_eq!(scheduled["grace_period"], 60);
    assert_eq!(run(&["tenant", "show", "acme"])["status"], "suspended");
    run(&["tenant", "delete", "acme", "--cancel"]);
    assert_eq!(run(&["tenant", "show", "acme"])["status"], "active");
    let purged = run(&["tenant", "delete", "acme", "--now"]);
    assert_eq!(purged["deletion"]["state"], "purged", "{purged}");
    assert!(purged["receipt"]["rows"].as_u64().unwrap() > 0, "{purged}");
    let gone = bulkhead(&data_dir)
        .args(["tenant", "show", "acme"])
        .output()
        .unwrap();
    assert!(!gone.status.success());
    server.stop();

    // On the data directory, with the server stopped.
    let purged = run(&["tenant", "delete", "beta", "--now"]);
    assert_eq!(purged["deletion"]["state"], "purged", "{purged}");
    assert_eq!(purged["receipt"]["tables"]["api_keys"], 1, "{purged}");
    let listed = run(&["tenant", "list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
}
