//! Tenant export and import (issue 19, data portability): an archive from the operator API,
//! read back into a fresh deployment by `bulkhead tenant import`, compared row by row.

use std::process::Command;

use bulkhead_core::TenantId;
use bulkhead_store::placement::location::TENANT_TABLES;
use bulkhead_test_support::{spawn_app, TestApp, TestOperator, TestTier};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::webhooks::create_endpoint;
use crate::helpers::{call_as, create_session, get_ok_json};

/// `bulkhead tenant import` (or any tenant command) against `app`'s database, directly.
fn bulkhead(app: &TestApp, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .env("DATABASE_URL", app.db.owner_url())
        .env_remove("BULKHEAD_APP_DATABASE_URL")
        .env(
            "BULKHEAD_MASTER_KEY",
            "base64:YnVsa2hlYWQtdGVzdC1tYXN0ZXIta2V5LTAxMjM0NTY3ODk=",
        )
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .unwrap()
}

/// acme's archive from the operator API (over the socket, as the socket's owner).
async fn export_acme(operator: &TestOperator) -> bytes::Bytes {
    let (status, headers, archive) = operator
        .request_raw(Method::GET, "/operator/v1/tenants/acme/export", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-tar");
    archive
}

/// `archive` written as `acme.tar` in `dir`.
fn archive_file(dir: &tempfile::TempDir, archive: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join("acme.tar");
    std::fs::write(&path, archive).unwrap();
    path
}

/// Sessions of `tenant` in the registry's database (a superuser's count: RLS hides nothing).
async fn sessions_in_registry_database(app: &TestApp, tenant: TenantId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM bulkhead.agent_sessions WHERE tenant_id = $1")
        .bind(tenant.uuid())
        .fetch_one(&app.db.superuser_pool().await)
        .await
        .unwrap()
}

/// Each row of every tenant table of `tenant` at `schema`, as the MD5 of its text form (the
/// columns in one fixed order), sorted: equal lists mean equal rows.
async fn rows(pool: &PgPool, schema: &str, tenant: uuid::Uuid) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for table in TENANT_TABLES {
        let cols: String = sqlx::query_scalar(
            "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attname) FROM pg_attribute \
             WHERE attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass \
             AND attnum > 0 AND NOT attisdropped",
        )
        .bind(schema)
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap();
        let mut hashes: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT md5(ROW({cols})::text) FROM \"{schema}\".{table} WHERE tenant_id = $1"
        ))
        .bind(tenant)
        .fetch_all(pool)
        .await
        .unwrap();
        hashes.sort();
        out.push(((*table).to_owned(), hashes));
    }
    out
}

/// A key with `tenants:read` only, made over the socket as its owner.
async fn reader_key(operator: &TestOperator) -> String {
    let (_, made) = operator
        .request(
            Method::POST,
            "/operator/v1/operator-keys",
            None,
            Some(json!({ "name": "reader", "scopes": ["tenants:read"] })),
        )
        .await;
    made["key"].as_str().unwrap().to_owned()
}

/// An app whose request timeout is 2 s: the stall limit and the transfer floor's grace, so a
/// stalled or trickling transfer is cut within a test.
async fn spawn_app_with_short_timeout() -> TestApp {
    bulkhead_test_support::spawn_app_with(bulkhead_test_support::AppOptions {
        configure: Some(|config| {
            config.connections.request_timeout = std::time::Duration::from_secs(2);
        }),
        ..Default::default()
    })
    .await
}

/// `count` sessions of `tenant` (shared tier) of about 250 bytes each, straight into the table.
async fn seed_sessions(app: &TestApp, tenant: TenantId, count: i32) {
    sqlx::query(
        "INSERT INTO bulkhead.agent_sessions (tenant_id, id, agent_id, title, metadata) \
         SELECT $1, gen_random_uuid(), 'agent-' || (g % 7), 'seeded ' || g, \
                jsonb_build_object('n', g, 'text', repeat('x', 200)) \
         FROM generate_series(1, $2) g",
    )
    .bind(tenant.uuid())
    .bind(count)
    .execute(&app.db.superuser_pool().await)
    .await
    .unwrap();
}

/// The operator log's latest `limit` events, asked again while the server answers otherwise
/// than 200 (a loaded machine may answer a poll after a short request timeout: 408).
async fn operator_events(operator: &TestOperator, limit: u32) -> Value {
    let path = format!("/operator/v1/audit-events?limit={limit}");
    for _ in 0..50 {
        let (status, events) = operator.request(Method::GET, &path, None, None).await;
        if status == StatusCode::OK {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the operator log never answered 200");
}

/// The entry `name` of an archive this build wrote (ustar, regular files only).
fn entry(archive: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut at = 0;
    while at + 512 <= archive.len() {
        let header = tar::Header::from_byte_slice(&archive[at..at + 512]);
        if archive[at..at + 512].iter().all(|b| *b == 0) {
            return None;
        }
        let size = header.entry_size().unwrap() as usize;
        let path = header.path().unwrap().to_string_lossy().into_owned();
        let data = &archive[at + 512..at + 512 + size];
        if path == format!("bulkhead-export/{name}") {
            return Some(data.to_vec());
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    None
}

#[tokio::test]
async fn an_exported_tenant_imports_into_a_fresh_deployment_row_for_row() {
    let source = spawn_app().await;
    let acme = source.create_tenant_in("acme", TestTier::Schema).await;
    let globex = source.create_tenant("globex").await;
    for n in 0..100 {
        create_session(&source, &acme, &format!("session {n}")).await;
    }
    // More rows than one fetch of the export's cursor, straight into the tenant's schema.
    let schema = format!("tenant_{}", acme.id.uuid().simple());
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".agent_sessions (tenant_id, id, agent_id, title, metadata) \
         SELECT $1, gen_random_uuid(), 'agent-' || (g % 7), 'seeded ' || g, \
                jsonb_build_object('n', g, 'text', repeat('x', g % 50)) \
         FROM generate_series(1, 700) g"
    ))
    .bind(acme.id.uuid())
    .execute(&source.db.superuser_pool().await)
    .await
    .unwrap();
    create_session(&source, &globex, "globex only").await;
    create_endpoint(
        &source,
        &acme,
        json!({ "url": "https://hooks.acme.example/in", "event_types": ["session.created"] }),
    )
    .await;
    let sessions_before = get_ok_json(&source, &acme, "/v1/sessions?limit=200").await;

    let operator = source.spawn_operator().await;
    let archive = export_acme(&operator).await;
    // Nothing of another tenant, and no webhook secret in the clear.
    let globex_id = globex.id.uuid().to_string();
    assert!(
        !archive
            .windows(globex_id.len())
            .any(|w| w == globex_id.as_bytes()),
        "the archive names another tenant"
    );
    assert!(
        !String::from_utf8_lossy(&archive).contains("whsec_"),
        "a webhook secret left in the clear"
    );
    let manifest: Value =
        serde_json::from_slice(&entry(&archive, "manifest.json").unwrap()).unwrap();
    assert_eq!(manifest["tables"]["agent_sessions"], 800);
    assert_eq!(manifest["tables"]["webhook_endpoints"], 1);
    // Its audit log verifies offline with the key the archive names.
    let header: Value = serde_json::from_slice(&entry(&archive, "tenant.json").unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.ndjson");
    std::fs::write(&audit, entry(&archive, "audit.ndjson").unwrap()).unwrap();
    let verified = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["audit", "verify"])
        .arg(&audit)
        .args(["--log-key", header["audit_log_key"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    // The operator log names the export, before and after.
    let events = operator_events(&operator, 10).await;
    let exports: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tenant.export")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(exports, ["success", "started"], "{events}");

    let path = archive_file(&dir, &archive);
    let target = spawn_app().await;
    let imported = bulkhead(
        &target,
        &[
            "tenant",
            "import",
            path.to_str().unwrap(),
            "--tier",
            "shared",
        ],
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let report: Value = serde_json::from_slice(&imported.stdout).unwrap();
    assert_eq!(report["tenant"]["id"], acme.id.to_string());
    assert_eq!(report["tenant"]["isolation_tier"], "shared");

    // Row for row the same, from the schema tier into the shared tables.
    let at_source = rows(&source.db.superuser_pool().await, &schema, acme.id.uuid()).await;
    let at_target = rows(
        &target.db.superuser_pool().await,
        "bulkhead",
        acme.id.uuid(),
    )
    .await;
    for ((table, a), (_, b)) in at_source.iter().zip(&at_target) {
        assert_eq!(a.len(), b.len(), "{table}: row counts differ");
        assert_eq!(a, b, "{table}: rows differ");
    }
    // The tenant's own key works there, and sees its own sessions.
    let sessions_after = get_ok_json(&target, &acme, "/v1/sessions?limit=200").await;
    assert_eq!(sessions_after, sessions_before);
    // …and it keeps working: a new session and its audit event land after the imported log.
    create_session(&target, &acme, "after the import").await;
    let checkpoint = call_as(&target, &acme, Method::POST, "/v1/audit/checkpoints", None).await;
    assert!(checkpoint.status().is_success());

    // The same archive again: a conflict, nothing changed.
    let again = bulkhead(&target, &["tenant", "import", path.to_str().unwrap()]);
    assert!(!again.status.success());
    assert_eq!(
        call_as(&target, &acme, Method::GET, "/v1/sessions?limit=1", None)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_tampered_or_truncated_archive_imports_nothing() {
    let source = spawn_app().await;
    let acme = source.create_tenant("acme").await;
    for n in 0..5 {
        create_session(&source, &acme, &format!("session {n}")).await;
    }
    let operator = source.spawn_operator().await;
    let archive = export_acme(&operator).await;
    let target = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();

    // One title changed inside a table part: its SHA-256 no longer matches the manifest.
    let text = archive.to_vec();
    let at = text
        .windows(b"session 3".len())
        .position(|w| w == b"session 3")
        .unwrap();
    let mut tampered = text.clone();
    tampered[at + 8] = b'4';
    // Truncated before the manifest.
    let cut = text.len() - 2048;
    for (name, bytes) in [("tampered", &tampered[..]), ("truncated", &text[..cut])] {
        let path = dir.path().join(format!("{name}.tar"));
        std::fs::write(&path, bytes).unwrap();
        let outcome = bulkhead(&target, &["tenant", "import", path.to_str().unwrap()]);
        assert!(!outcome.status.success(), "{name} was imported");
        let registered: Option<String> =
            sqlx::query_scalar("SELECT slug FROM bulkhead.tenants WHERE id = $1")
                .bind(acme.id.uuid())
                .fetch_optional(&target.db.superuser_pool().await)
                .await
                .unwrap();
        assert_eq!(registered, None, "{name}: a registry row was left");
        assert_eq!(
            sessions_in_registry_database(&target, acme.id).await,
            0,
            "{name}: rows were left"
        );
    }
}

#[tokio::test]
async fn export_needs_tenants_write_and_names_no_unknown_tenant() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let operator = app.spawn_operator().await;
    let reader = reader_key(&operator).await;
    let reader = reader.as_str();
    let (status, _) = operator
        .request(
            Method::GET,
            "/operator/v1/tenants/acme/export",
            Some(reader),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = operator
        .request_raw(Method::GET, "/operator/v1/tenants/no-such-co/export", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_shared_tenant_imports_into_a_dedicated_database_and_is_served_there() {
    let source = spawn_app().await;
    let acme = source.create_tenant("acme").await;
    for n in 0..20 {
        create_session(&source, &acme, &format!("session {n}")).await;
    }
    let before = get_ok_json(&source, &acme, "/v1/sessions?limit=200").await;
    let operator = source.spawn_operator().await;
    let archive = export_acme(&operator).await;
    let dir = tempfile::tempdir().unwrap();
    let path = archive_file(&dir, &archive);

    let target = spawn_app().await;
    let (database, owner_url, _) = target.db.dedicated_database().await;
    let imported = bulkhead(
        &target,
        &[
            "tenant",
            "import",
            path.to_str().unwrap(),
            "--tier",
            "dedicated",
            "--tenant-database-url",
            &owner_url,
            "--tenant-database-name",
            &database,
        ],
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let report: Value = serde_json::from_slice(&imported.stdout).unwrap();
    assert_eq!(report["tenant"]["isolation_tier"], "dedicated");
    // Registered suspended until its rows were in, then given its exported status.
    assert_eq!(report["tenant"]["status"], "active");
    assert_eq!(report["tables"]["agent_sessions"], 20);
    let rows_there: i64 =
        sqlx::query_scalar("SELECT count(*) FROM bulkhead.agent_sessions WHERE tenant_id = $1")
            .bind(acme.id.uuid())
            .fetch_one(
                &PgPool::connect_with(target.db.superuser_options_for(&database))
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
    assert_eq!(rows_there, 20);
    assert_eq!(sessions_in_registry_database(&target, acme.id).await, 0);
    // Its key is routed to the dedicated database and serves the same sessions.
    assert_eq!(
        get_ok_json(&target, &acme, "/v1/sessions?limit=200").await,
        before
    );
}

#[tokio::test]
async fn an_archive_does_not_bring_back_a_tenant_this_deployment_erased() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_session(&app, &acme, "before the erasure").await;
    let operator = app.spawn_operator().await;
    let archive = export_acme(&operator).await;
    let (status, _) = operator
        .request(
            Method::POST,
            "/operator/v1/tenants/acme/deletion",
            None,
            Some(json!({ "grace_period": 0 })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = operator
        .request(
            Method::POST,
            "/operator/v1/tenants/acme/deletion/purge",
            None,
            None,
        )
        .await;
    assert!(status.is_success(), "{body}");
    let dir = tempfile::tempdir().unwrap();
    let path = archive_file(&dir, &archive);
    let again = bulkhead(&app, &["tenant", "import", path.to_str().unwrap()]);
    assert!(!again.status.success(), "an erased tenant was imported");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("erased tenant"), "{stderr}");
    assert_eq!(sessions_in_registry_database(&app, acme.id).await, 0);
    // Its subdomain names no tenant any more.
    assert_eq!(
        call_as(&app, &acme, Method::GET, "/v1/sessions", None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

/// `POST /operator/v1/tenant-imports` of `archive` (as the socket's owner, or with `key`).
async fn upload(
    operator: &TestOperator,
    query: &str,
    key: Option<&str>,
    content_type: &str,
    archive: &[u8],
) -> (StatusCode, Value) {
    bulkhead_test_support::operator_upload(
        &operator.socket,
        &format!("/operator/v1/tenant-imports{query}"),
        key,
        content_type,
        http_body_util::Full::new(bytes::Bytes::copy_from_slice(archive)),
    )
    .await
}

/// Whether `app` has a registry row for `tenant`.
async fn registered(app: &TestApp, tenant: TenantId) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM bulkhead.tenants WHERE id = $1")
        .bind(tenant.uuid())
        .fetch_one(&app.db.superuser_pool().await)
        .await
        .unwrap()
        > 0
}

/// The operator API imports an archive streamed as the request body (what `bulkhead tenant
/// import` sends through a running server's socket): into the tier asked, row for row, served at
/// once; a refused, tampered or stalled upload keeps nothing and is in the operator log.
#[tokio::test]
async fn an_archive_uploaded_to_the_operator_api_imports_all_or_nothing() {
    let source = spawn_app().await;
    let acme = source.create_tenant("acme").await;
    for n in 0..30 {
        create_session(&source, &acme, &format!("session {n}")).await;
    }
    let sessions_before = get_ok_json(&source, &acme, "/v1/sessions?limit=200").await;
    let archive = export_acme(&source.spawn_operator().await).await;

    // A short request timeout, so that a stalled upload is cut within the test.
    let target = spawn_app_with_short_timeout().await;
    let operator = target.spawn_operator().await;
    let reader = reader_key(&operator).await;
    let reader = reader.as_str();
    let tar = "application/x-tar";
    let (status, _) = upload(&operator, "", Some(reader), tar, &archive).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "tenants:write is needed");
    let (status, _) = upload(&operator, "", None, "application/json", &archive).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, body) = upload(&operator, "?tier=dedicated", None, tar, &archive).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = upload(&operator, "?tier=shared&color=red", None, tar, &archive).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A tampered part: the manifest's hash does not match; nothing registered.
    let mut tampered = archive.to_vec();
    let at = tampered
        .windows(b"session 3".len())
        .position(|w| w == b"session 3")
        .unwrap();
    tampered[at + 8] = b'4';
    let (status, body) = upload(&operator, "", None, tar, &tampered).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("manifest"),
        "{body}"
    );
    assert!(
        !registered(&target, acme.id).await,
        "a tampered archive left a tenant"
    );
    // Half the archive, then nothing: cut after the request timeout, nothing kept.
    let half = bytes::Bytes::copy_from_slice(&archive[..archive.len() / 2]);
    let stalled = futures::StreamExt::chain(
        futures::stream::iter([Ok::<_, std::io::Error>(hyper::body::Frame::data(half))]),
        futures::stream::pending(),
    );
    let (status, body) = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        bulkhead_test_support::operator_upload(
            &operator.socket,
            "/operator/v1/tenant-imports",
            None,
            tar,
            http_body_util::StreamBody::new(stalled),
        ),
    )
    .await
    .expect("a stalled upload is answered");
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert!(
        !registered(&target, acme.id).await,
        "a stalled upload left a tenant"
    );
    assert_eq!(sessions_in_registry_database(&target, acme.id).await, 0);

    // The whole archive, into a schema of its own.
    let (status, report) = upload(&operator, "?tier=schema", None, tar, &archive).await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    assert_eq!(report["tenant"]["id"], acme.id.to_string());
    assert_eq!(report["tenant"]["isolation_tier"], "schema");
    assert_eq!(report["tables"]["agent_sessions"], 30, "{report}");
    let at_source = rows(
        &source.db.superuser_pool().await,
        "bulkhead",
        acme.id.uuid(),
    )
    .await;
    let schema = format!("tenant_{}", acme.id.uuid().simple());
    let at_target = rows(&target.db.superuser_pool().await, &schema, acme.id.uuid()).await;
    assert_eq!(at_source, at_target, "the rows differ");
    // Served at once, with the tenant's own key (the peppers are the tests' on both).
    let sessions_after = get_ok_json(&target, &acme, "/v1/sessions?limit=200").await;
    assert_eq!(sessions_after, sessions_before);
    // Again: a conflict, and the tenant still served.
    let (status, body) = upload(&operator, "", None, tar, &archive).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        call_as(&target, &acme, Method::GET, "/v1/sessions?limit=1", None)
            .await
            .status(),
        StatusCode::OK
    );
    // The operator log: each attempt that began, with its outcome; the stall's failure says so.
    let events = operator_events(&operator, 50).await;
    let imports: Vec<(&str, &str)> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tenant.import")
        .map(|e| {
            (
                e["outcome"].as_str().unwrap(),
                e["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let outcomes: Vec<&str> = imports.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        outcomes,
        ["failure", "started", "success", "started", "failure", "started", "failure", "started"],
        "{events}"
    );
    assert!(imports[4].1.contains("stalled"), "{imports:?}");
}

/// A client that sends the whole archive and goes away before the answer (Ctrl-C after the last
/// byte) does not cut the import off half-way: it ends committed or abandoned, with its closing
/// event in the operator log, and the next import may run.
#[tokio::test]
async fn an_import_whose_client_goes_away_ends_whole_and_logged() {
    use tokio::io::AsyncWriteExt as _;
    let source = spawn_app().await;
    let acme = source.create_tenant("acme").await;
    // Enough rows that the import is still being written when the client has gone.
    seed_sessions(&source, acme.id, 20_000).await;
    let archive = export_acme(&source.spawn_operator().await).await;
    let target = spawn_app().await;
    let operator = target.spawn_operator().await;

    let mut stream = tokio::net::UnixStream::connect(&operator.socket)
        .await
        .unwrap();
    let head = format!(
        "POST /operator/v1/tenant-imports HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        archive.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&archive).await.unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);

    let closing = |events: &Value| -> Vec<String> {
        events["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "tenant.import" && e["outcome"] != "started")
            .map(|e| e["outcome"].as_str().unwrap().to_owned())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let outcome = loop {
        let events = operator_events(&operator, 20).await;
        if let [outcome] = closing(&events).as_slice() {
            break outcome.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the import never ended in the operator log: {events}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    // Whole either way: every row, or no tenant.
    if outcome == "success" {
        assert_eq!(
            sessions_in_registry_database(&target, acme.id).await,
            20_000
        );
    } else {
        assert_eq!(outcome, "failure");
        assert!(!registered(&target, acme.id).await);
        assert_eq!(sessions_in_registry_database(&target, acme.id).await, 0);
    }
    // The import's permit is free again.
    let (status, body) = upload(&operator, "", None, "application/x-tar", &archive).await;
    let expected = if outcome == "success" {
        StatusCode::CONFLICT
    } else {
        StatusCode::CREATED
    };
    assert_eq!(status, expected, "{body}");
    if outcome == "success" {
        // The tenant's own conflict, not another import still holding the permit.
        assert!(
            body["detail"].as_str().unwrap().contains("exists here"),
            "{body}"
        );
    }
}

/// A client that takes an export slower than the operator API's transfer floor (64 KiB/s after
/// the request timeout) ends the export — its snapshot and transaction, which hold VACUUM back —
/// while it is still reading, and the operator log says why.
#[tokio::test]
async fn an_export_read_slower_than_the_floor_is_ended() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app_with_short_timeout().await;
    let acme = app.create_tenant("acme").await;
    // An archive of some megabytes: far more than the pipe's, the server's and the socket's
    // buffers hold.
    seed_sessions(&app, acme.id, 20_000).await;
    let operator = app.spawn_operator().await;
    let mut stream = tokio::net::UnixStream::connect(&operator.socket)
        .await
        .unwrap();
    stream
        .write_all(b"GET /operator/v1/tenants/acme/export HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // 1 KiB every 100 ms: about 10 KiB/s, for as long as the test lasts.
    let reader = tokio::spawn(async move {
        let mut received = 0usize;
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received += n,
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ended = loop {
        let events = operator_events(&operator, 10).await;
        let latest = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "tenant.export")
            .cloned();
        if let Some(latest) = latest.filter(|e| e["outcome"] != "started") {
            break latest;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a 10 KiB/s reader still held the export after 60 s: {events}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(ended["outcome"], "failure", "{ended}");
    assert!(
        ended["reason"]
            .as_str()
            .unwrap()
            .contains("slower than 64 KiB/s"),
        "{ended}"
    );
    // Ended while the client was still reading, not because it stopped.
    assert!(!reader.is_finished(), "the reader had already stopped");
    reader.abort();
}
