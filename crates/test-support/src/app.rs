//! The application harness (feature `app`): the real server on a loopback port, built from the
//! server crate, so only application-level tests build it.

use bulkhead_core::Clock;
use bulkhead_server::config::AppConfig;
use bulkhead_server::http::state::AppState;
use bulkhead_server::service::credentials::Peppers;

use super::*;

/// [`test_pepper`] as the only pepper.
pub fn test_peppers() -> Peppers {
    Peppers::new(test_pepper(), Vec::new()).expect("peppers")
}

/// The application serving on a loopback port, with its own database.
#[derive(Debug)]
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database.
    pub db: TestDb,
    /// Its state (for tests that call the store or worker directly).
    pub state: AppState,
    /// HTTP client resolving `*.bulkhead.test` to loopback only.
    pub client: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Starts the app on `127.0.0.1:0` with a fresh database and the system clock. No job worker
/// runs: tests drive it.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// Knobs for [`spawn_app_with`].
#[derive(Debug, Default)]
pub struct AppOptions {
    /// Serve this database instead of a fresh one (a second process of the same deployment).
    pub db: Option<TestDb>,
    /// Clock; default the system clock.
    pub clock: Option<Clock>,
    /// Peppers; default [`test_peppers`].
    pub peppers: Option<Peppers>,
    /// Trusted proxy networks.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Rate limiters; default: the server's defaults, in process.
    pub rate_limits: Option<bulkhead_server::service::rate_limits::SharedLimits>,
    /// Webhook egress policy; default [`test_egress_policy`].
    pub webhook_egress: Option<bulkhead_webhooks::EgressPolicy>,
    /// Last changes to the configuration, after every other option.
    pub configure: Option<fn(&mut AppConfig)>,
    /// The client tool calls go through (a loopback resolver and a test CA); default: one
    /// under the egress policy whose resolver resolves nothing, so no test call leaves loopback.
    pub tool_client: Option<bulkhead_webhooks::EgressClient>,
    /// The client metadata documents are fetched through (tests only: a loopback resolver, a
    /// test CA, a policy reaching loopback receivers); default: one under the server's own
    /// document policy whose resolver resolves nothing.
    pub document_client: Option<bulkhead_webhooks::EgressClient>,
    /// Tool-call limits; default the server's.
    pub tool_settings: Option<bulkhead_server::config::ToolSettings>,
    /// Serve through this store (another topology: regions) instead of the database's own.
    pub store: Option<Store>,
}

/// The application's parts as the tests and benchmarks run it: the test peppers and master
/// key, a fresh audit log key, a tool client whose resolver knows no name (a tool call fails
/// closed unless a test installs its own), the shipped schema pool and screening rules. The one
/// place test code composes the application (`AppState::from_parts`), like `cli/serve.rs` does
/// for `bulkhead serve`.
pub fn app_parts(
    store: Store,
    config: AppConfig,
    clock: Clock,
    rate_limits: Option<bulkhead_server::service::rate_limits::SharedLimits>,
) -> bulkhead_server::http::state::AppParts {
    let tool_client = bulkhead_webhooks::EgressClient::new(
        config.webhook_egress.clone(),
        Arc::new(bulkhead_webhooks::StaticResolver::new()),
        &bulkhead_webhooks::EgressConfig::default(),
    )
    .expect("tool client");
    let document_client = bulkhead_webhooks::EgressClient::new(
        bulkhead_server::service::oauth::metadata_document::egress_policy(&config.base_domain),
        Arc::new(bulkhead_webhooks::StaticResolver::new()),
        &bulkhead_webhooks::EgressConfig::default(),
    )
    .expect("document client");
    bulkhead_server::http::state::AppParts {
        store,
        peppers: test_peppers(),
        master_key: Arc::new(test_master_key()),
        config,
        clock,
        rate_limits,
        audit: Arc::new(bulkhead_server::service::audit_log::AuditService::new(
            bulkhead_audit::LogSigningKey::generate(),
        )),
        tool_client,
        document_client,
        schema_pool: bulkhead_schema::Evaluator::with_defaults(),
        screener: Arc::new(bulkhead_screening::Screener::builtin().expect("screening rules")),
    }
}

/// Starts the app with the given options.
pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let db = match options.db {
        Some(db) => db,
        None => TestDb::new().await,
    };
    ensure_signing_keys(&db).await;
    let store = match options.store {
        Some(store) => store,
        None => db.app_store().await,
    };
    let mut config = AppConfig::new(BASE_DOMAIN, KeyEnvironment::Live).expect("config");
    config.trusted_proxies = options.trusted_proxies;
    config.webhook_egress = options.webhook_egress.unwrap_or_else(test_egress_policy);
    if let Some(configure) = options.configure {
        configure(&mut config);
    }
    if let Some(tools) = options.tool_settings {
        config.tools = tools;
    }
    let clock = options.clock.unwrap_or_default();
    let rate_limits = options.rate_limits.unwrap_or_else(|| {
        // Built from the settings as `serve` builds them, in process (no Redis here).
        Arc::new(
            bulkhead_server::service::rate_limits::RateLimits::new(
                &config.rate_limits,
                None,
                clock.clone(),
            )
            .expect("in-process limiters need nothing that can fail"),
        )
    });
    let mut parts = app_parts(store, config, clock, Some(rate_limits));
    if let Some(peppers) = options.peppers {
        parts.peppers = peppers;
    }
    if let Some(client) = options.tool_client {
        parts.tool_client = client;
    }
    if let Some(client) = options.document_client {
        parts.document_client = client;
    }
    let state = AppState::from_parts(parts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bulkhead_server::http::app::serve(
        listener,
        state.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    TestApp {
        addr,
        db,
        state,
        client: loopback_client(),
        _shutdown: shutdown,
    }
}

impl TestApp {
    /// URL on the bare loopback address (no subdomain signal).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    /// URL under a tenant's subdomain (`<slug>.bulkhead.test`), resolved to loopback.
    pub fn tenant_url(&self, slug: &str, path: &str) -> String {
        format!("http://{slug}.{BASE_DOMAIN}:{}{path}", self.addr.port())
    }

    /// Onboards a tenant in `tier`, in this app's database.
    pub async fn create_tenant_in(&self, slug: &str, tier: TestTier) -> TestTenant {
        create_tenant_in(&self.db, slug, tier).await
    }

    /// Onboards a tenant in this app's database.
    pub async fn create_tenant(&self, slug: &str) -> TestTenant {
        create_tenant(&self.db, slug).await
    }
}

/// The operator API of a [`TestApp`], served on a Unix socket in a private temporary directory
/// by the same code as `bulkhead serve --operator-listen` (`http::operator::start`).
#[derive(Debug)]
pub struct TestOperator {
    /// The socket.
    pub socket: std::path::PathBuf,
    /// `http://127.0.0.1:PORT` when also served on loopback TCP.
    pub tcp: Option<String>,
    /// The owner-role store the operator plane writes through.
    pub owner: Store,
    listeners: Option<bulkhead_server::http::operator::OperatorListeners>,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl TestOperator {
    /// Sends one request over the socket (`key`: the bearer credential) and returns the status
    /// and the JSON body (`Null` when empty).
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (http::StatusCode, serde_json::Value) {
        operator_request(&self.socket, method, path, key, body).await
    }

    /// [`TestOperator::request`] answering the status, headers and raw body.
    pub async fn request_raw(
        &self,
        method: http::Method,
        path: &str,
        key: Option<&str>,
    ) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
        operator_request_raw(&self.socket, method, path, key, None).await
    }

    /// Stops the listeners and waits for them (the socket file is removed).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(listeners) = self.listeners.take() {
            listeners.finish().await;
        }
    }
}

/// One HTTP/1.1 request over a Unix socket with hyper's client (no reqwest: its version here
/// has no Unix-socket transport).
pub async fn operator_request(
    socket: &std::path::Path,
    method: http::Method,
    path: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> (http::StatusCode, serde_json::Value) {
    let (status, _, bytes) = operator_request_raw(socket, method, path, key, body).await;
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    (status, json)
}

/// [`operator_request`], answering the status, headers and raw body (NDJSON exports).
pub async fn operator_request_raw(
    socket: &std::path::Path,
    method: http::Method,
    path: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    let (content_type, body) = match body {
        Some(json) => (
            Some("application/json"),
            http_body_util::Full::new(bytes::Bytes::from(json.to_string())),
        ),
        None => (None, http_body_util::Full::new(bytes::Bytes::new())),
    };
    operator_send(socket, method, path, key, content_type, body).await
}

/// A `POST` of `body` (sent as it yields, so a test can pause or break it off) as
/// `content_type` over the operator socket, as the socket's owner or with `key`; the status and
/// the JSON answer.
pub async fn operator_upload<B>(
    socket: &std::path::Path,
    path: &str,
    key: Option<&str>,
    content_type: &str,
    body: B,
) -> (http::StatusCode, serde_json::Value)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (status, _, bytes) = operator_send(
        socket,
        http::Method::POST,
        path,
        key,
        Some(content_type),
        body,
    )
    .await;
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    (status, json)
}

/// One HTTP/1.1 request on a fresh connection to the operator socket.
async fn operator_send<B>(
    socket: &std::path::Path,
    method: http::Method,
    path: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: B,
) -> (http::StatusCode, http::HeaderMap, bytes::Bytes)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect to the operator socket");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost");
    if let Some(key) = key {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
    }
    if let Some(content_type) = content_type {
        request = request.header(http::header::CONTENT_TYPE, content_type);
    }
    let response = sender
        .send_request(request.body(body).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, bytes)
}

impl TestApp {
    /// Serves this app's operator API on a Unix socket of its own.
    pub async fn spawn_operator(&self) -> TestOperator {
        self.spawn_operator_with(false).await
    }

    /// [`TestApp::spawn_operator`], and on a loopback TCP port too ([`TestOperator::tcp`]).
    pub async fn spawn_operator_tcp(&self) -> TestOperator {
        self.spawn_operator_with(true).await
    }

    async fn spawn_operator_with(&self, tcp: bool) -> TestOperator {
        use bulkhead_server::config::operator::OperatorEndpoint;
        let dir = tempfile::Builder::new()
            .prefix("bulkhead-operator-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("operator.sock");
        let owner = self.db.owner_store().await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut endpoints = vec![OperatorEndpoint::Unix(Some(socket.clone()))];
        if tcp {
            endpoints.push(OperatorEndpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))));
        }
        let listeners = bulkhead_server::http::operator::start(
            &endpoints,
            dir.path(),
            bulkhead_server::http::operator::OperatorState::new(self.state.clone(), owner.clone()),
            stopped,
        )
        .await
        .expect("operator listener");
        let tcp = listeners
            .endpoints
            .iter()
            .find(|e| e.starts_with("http://"))
            .cloned();
        TestOperator {
            socket,
            tcp,
            owner,
            listeners: Some(listeners),
            stop,
            _dir: dir,
        }
    }
}
