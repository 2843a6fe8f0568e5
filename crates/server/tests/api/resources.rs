//! Shared resources one tenant (or an anonymous caller) must not exhaust for the others:
//! connections (slow-loris) and password hashing (issue 28).

use std::net::SocketAddr;
use std::time::Duration;

use bulkhead_server::config::AppConfig;
use bulkhead_server::service::hashing::Caller;
use bulkhead_test_support::{spawn_app, spawn_app_with, AppOptions, TestApp, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{as_tenant, call_as, problem};

const PARTIAL_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";

/// A connection from `source` (another loopback address) that sends half a request head.
async fn partial_connection(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    // Writing may fail if the server already closed it (over a cap): that is an answer too.
    let _ = stream.write_all(PARTIAL_HEAD).await;
    stream
}

/// Whether the server closed `stream` within `within` (EOF or reset), reading nothing.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn short_header_timeout(config: &mut AppConfig) {
    config.connections.header_read_timeout = Duration::from_secs(1);
}

/// A total cap of 150 of which one address may take 100, and long enough a header timeout
/// that the flood is still in place while the victim is served.
fn small_caps(config: &mut AppConfig) {
    config.connections.header_read_timeout = Duration::from_secs(3);
    config.connections.max_connections = 150;
    config.connections.max_connections_per_address = 100;
}

#[tokio::test]
async fn a_partial_request_head_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(AppOptions {
        configure: Some(short_header_timeout),
        ..Default::default()
    })
    .await;
    let mut stream = partial_connection([127, 0, 0, 2], app.addr).await;
    // The old listener kept such a connection open indefinitely (still open after 25 s).
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)).await,
        "a connection that never finished its request head was not closed"
    );
    // A client that connects and sends nothing at all is closed too.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
    let mut silent = socket.connect(app.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn a_slowloris_flood_leaves_another_tenant_served() {
    let app = spawn_app_with(AppOptions {
        configure: Some(small_caps),
        ..Default::default()
    })
    .await;
    let bravo = app.create_tenant("bravo").await;
    // 300 half-sent requests from one address (127.0.0.2); the victim comes from 127.0.0.1.
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(partial_connection([127, 0, 0, 2], app.addr).await);
    }
    // While the 100 admitted ones hold two thirds of the total cap, the other tenant is served.
    for _ in 0..5 {
        let response = as_tenant(&app, &bravo, Method::GET, "/v1/sessions")
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("tenant B was not served during the flood");
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Over the per-address cap (100), the rest were closed as soon as they were accepted.
    let mut closed_at_once = 0;
    for stream in flood.iter_mut().skip(100) {
        if closed_within(stream, Duration::from_millis(500)).await {
            closed_at_once += 1;
        }
    }
    assert_eq!(
        closed_at_once, 200,
        "connections over the per-address cap were kept open"
    );
    // And the admitted ones are closed by the header timeout.
    for stream in flood.iter_mut().take(100) {
        assert!(closed_within(stream, Duration::from_secs(10)).await);
    }
}

/// Review finding (noisy-neighbour bench, issue 28.1): half-sent requests from many addresses,
/// each under the per-address cap, filled the total cap, and every new client's connection was
/// closed at accept until the header timeout. At the total cap the oldest connection that has
/// not sent a request head is now evicted for the newcomer.
#[tokio::test]
async fn a_slowloris_from_many_addresses_at_the_total_cap_leaves_new_clients_served() {
    let app = spawn_app_with(AppOptions {
        configure: Some(small_caps),
        ..Default::default()
    })
    .await;
    let bravo = app.create_tenant("bravo").await;
    // 100 from 127.0.0.2 and 50 from 127.0.0.3: the total cap (150) is full.
    let mut flood = Vec::new();
    for source in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        let count = if source[3] == 2 { 100 } else { 50 };
        for _ in 0..count {
            flood.push(partial_connection(source, app.addr).await);
        }
    }
    // Each request of the victim opens a fresh connection (a client new to the server), kept
    // open (kept alive in its client) so that each needs a place of its own.
    let mut clients = Vec::new();
    for _ in 0..5 {
        let client = bulkhead_test_support::loopback_client();
        clients.push(client.clone());
        let response = client
            .get(app.tenant_url(&bravo.slug, "/v1/sessions"))
            .bearer_auth(&bravo.key)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("a new client was locked out while the total cap was full");
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The places came from the oldest half-sent connections.
    let mut closed = Vec::new();
    for (i, stream) in flood.iter_mut().enumerate().take(20) {
        if closed_within(stream, Duration::from_millis(100)).await {
            closed.push(i);
        }
    }
    assert_eq!(
        closed,
        vec![0, 1, 2, 3, 4],
        "the oldest unproven connections were evicted"
    );
}

#[tokio::test]
async fn a_slow_body_is_cut_off_by_the_request_timeout() {
    fn short_request_timeout(config: &mut AppConfig) {
        config.connections.request_timeout = Duration::from_secs(1);
    }
    let app = spawn_app_with(AppOptions {
        configure: Some(short_request_timeout),
        ..Default::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: acme.bulkhead.test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        acme.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("a request whose body never arrives was not cut off")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// Descriptors this process holds for connections accepted on `port` (server side: the local
/// port is `port`; the listening socket itself left out). Other tests running in this process
/// at the same time do not count.
fn accepted_descriptors(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    // Fields: sl local rem st tx:rx tr:when retrnsmt uid timeout inode …
    let inodes: std::collections::HashSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let listening = *fields.get(3)? == "0A";
            let inode = fields.get(9)?;
            (u16::from_str_radix(local_port, 16).ok()? == port && !listening)
                .then(|| format!("socket:[{inode}]"))
        })
        .collect();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| inodes.contains(&target.to_string_lossy().into_owned()))
        .count()
}

/// Review finding (issue 28.1): the metrics listener (`--metrics-listen`) ran plain
/// `axum::serve`, with no header timeout and no connection cap, so half-sent requests to the
/// metrics port were never closed and could take every descriptor of the process. It now runs
/// the API's bounded accept loop with its own small caps.
#[tokio::test]
async fn a_slowloris_against_the_metrics_port_is_cut_off() {
    use bulkhead_server::config::{ConnectionSettings, METRICS_MAX_CONNECTIONS};
    let settings = ConnectionSettings {
        header_read_timeout: Duration::from_secs(2),
        ..ConnectionSettings::default()
    };
    let per_address = settings.for_metrics().max_connections_per_address;
    assert!(per_address <= METRICS_MAX_CONNECTIONS);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bulkhead_server::http::app::serve_metrics(
        listener,
        settings,
        async move {
            let _ = stopped.await;
        },
    ));
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(partial_connection([127, 0, 0, 2], addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The server side holds at most the per-address cap of them (the old listener held all 100).
    let held_by_server = accepted_descriptors(addr.port());
    assert!(
        held_by_server <= per_address,
        "the metrics listener holds {held_by_server} descriptors for one address's flood"
    );
    // A scrape from another address is served meanwhile.
    let scraper = reqwest::Client::builder().no_proxy().build().unwrap();
    let scraped = scraper
        .get(format!("http://{addr}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("the metrics listener did not answer during the flood");
    assert_eq!(scraped.status(), StatusCode::OK);
    // Over the per-address cap: closed as soon as accepted.
    let mut closed_at_once = 0;
    for stream in flood.iter_mut().skip(per_address) {
        if closed_within(stream, Duration::from_millis(500)).await {
            closed_at_once += 1;
        }
    }
    assert_eq!(closed_at_once, 100 - per_address);
    // The admitted ones: closed by the header timeout.
    for stream in flood.iter_mut().take(per_address) {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "a half-sent request to the metrics port was kept open"
        );
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

async fn create_user(app: &TestApp, tenant: &TestTenant, email: &str) -> reqwest::Response {
    call_as(
        app,
        tenant,
        Method::POST,
        "/v1/users",
        Some(json!({ "email": email, "password": "a long enough password" })),
    )
    .await
}

#[tokio::test]
async fn a_taken_email_is_refused_before_any_hashing() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    assert_eq!(
        create_user(&app, &acme, "ada@example.com").await.status(),
        StatusCode::CREATED
    );
    let hashes = app.state.hashing().hashes_started();
    for _ in 0..3 {
        let (status, _) = problem(create_user(&app, &acme, "Ada@Example.com").await).await;
        assert_eq!(status, StatusCode::CONFLICT);
    }
    assert_eq!(
        app.state.hashing().hashes_started(),
        hashes,
        "a taken email still cost a password hash"
    );
    // Even with the tenant's whole hashing share taken, the duplicate answers 409 (it needs no
    // place), while a new email is refused with 503.
    let held: Vec<_> = (0..app.state.hashing().tenant_share())
        .map(|_| app.state.hashing().admit(Caller::Tenant(acme.id)).unwrap())
        .collect();
    assert_eq!(
        create_user(&app, &acme, "ada@example.com").await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        create_user(&app, &acme, "grace@example.com").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    drop(held);
}

#[tokio::test]
async fn a_full_hashing_share_answers_503_and_spares_other_tenants() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let bravo = app.create_tenant("bravo").await;
    let pool = app.state.hashing();
    let held: Vec<_> = (0..pool.tenant_share())
        .map(|_| pool.admit(Caller::Tenant(acme.id)).unwrap())
        .collect();
    let response = create_user(&app, &acme, "ada@example.com").await;
    let retry_after = response
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(retry_after.parse::<u64>().unwrap() >= 1);
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["type"], "https://bulkhead.dev/problems/busy");
    // The other tenant still has its share.
    assert_eq!(
        create_user(&app, &bravo, "ada@example.com").await.status(),
        StatusCode::CREATED
    );
    drop(held);
    assert_eq!(
        create_user(&app, &acme, "ada@example.com").await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn anonymous_logins_have_a_global_hashing_budget() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let bravo = app.create_tenant("bravo").await;
    let pool = app.state.hashing();
    // Anonymous hashing for other tenants fills the anonymous budget (spread so that no one
    // tenant's share is what refuses).
    let held: Vec<_> = (0..pool.anonymous_share())
        .map(|i| {
            let tenant = if i % 2 == 0 { acme.id } else { bravo.id };
            pool.admit(Caller::Anonymous(tenant)).unwrap()
        })
        .collect();
    let charlie = app.create_tenant("charlie").await;
    let login = app
        .client
        .post(app.tenant_url(&charlie.slug, "/v1/auth/login"))
        .json(&json!({ "email": "nobody@example.com", "password": "a long enough password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(login.headers().get("retry-after").is_some());
    // Authenticated hashing (creating a user) still has room.
    assert_eq!(
        create_user(&app, &charlie, "ada@example.com")
            .await
            .status(),
        StatusCode::CREATED
    );
    drop(held);
    let login = app
        .client
        .post(app.tenant_url(&charlie.slug, "/v1/auth/login"))
        .json(&json!({ "email": "nobody@example.com", "password": "a long enough password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
}

async fn login(app: &TestApp, tenant: &TestTenant) -> StatusCode {
    app.client
        .post(app.tenant_url(&tenant.slug, "/v1/auth/login"))
        .json(&json!({ "email": "nobody@example.com", "password": "a long enough password" }))
        .send()
        .await
        .unwrap()
        .status()
}

/// Review finding (issue 28.2): anonymous logins together had half the hashing pool, but one
/// tenant's login flood could take all of that half and every other tenant's logins got 503.
/// A tenant's anonymous operations now have half the anonymous budget.
#[tokio::test]
async fn one_tenants_login_flood_leaves_other_tenants_logins_admitted() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let bravo = app.create_tenant("bravo").await;
    let pool = app.state.hashing();
    // The flood against acme's login: every anonymous place the pool gives acme, held.
    let mut flood = Vec::new();
    while let Ok(ticket) = pool.admit(Caller::Anonymous(acme.id)) {
        flood.push(ticket);
        assert!(flood.len() <= pool.capacity());
    }
    assert!(!flood.is_empty());
    assert_eq!(login(&app, &acme).await, StatusCode::SERVICE_UNAVAILABLE);
    // Bravo's login is admitted and checked (401: no such user, after a dummy verification).
    let hashes = pool.hashes_started();
    assert_eq!(login(&app, &bravo).await, StatusCode::UNAUTHORIZED);
    assert_eq!(pool.hashes_started(), hashes + 1);
    drop(flood);
    assert_eq!(login(&app, &acme).await, StatusCode::UNAUTHORIZED);
}

/// Issue 28 item 5: every anonymous login with a fresh email left a permanent row.
#[tokio::test]
async fn login_throttle_rows_past_their_lock_window_are_swept() {
    let clock = bulkhead_core::Clock::manual(chrono::Utc::now());
    let app = spawn_app_with(AppOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let su = app.db.superuser_pool().await;
    let rows = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM bulkhead.login_throttle WHERE tenant_id = $1",
        )
        .bind(acme.id.uuid())
        .fetch_one(&su)
        .await
        .unwrap()
    };
    let login = |email: String| {
        app.client
            .post(app.tenant_url(&acme.slug, "/v1/auth/login"))
            .json(&json!({ "email": email, "password": "a long enough password" }))
            .send()
    };
    for i in 0..5 {
        let response = login(format!("fresh{i}@example.com")).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(rows().await, 5);
    // A whole lock window (15 min) later, the next attempt sweeps them: only its own row stays.
    clock.advance(chrono::Duration::minutes(16));
    let response = login("later@example.com".into()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        rows().await,
        1,
        "stale login_throttle rows were left behind"
    );
}
