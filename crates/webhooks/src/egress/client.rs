//! The egress client: one reqwest client (one connection pool) per tenant, no redirects, no
//! environment proxy, timeouts, and response bodies read at most a sample deep.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_core::TenantId;
use url::Url;

use super::policy::{EgressError, EgressPolicy, RESPONSE_SAMPLE_BYTES};
use super::resolve::{Blocked, GuardedResolver, HostResolver};

/// Client settings besides the policy.
#[derive(Clone)]
pub struct EgressConfig {
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout, body included.
    pub total_timeout: Duration,
    /// An explicitly configured egress proxy (the environment's are ignored).
    pub proxy: Option<Url>,
    /// Extra trusted roots (tests: a CA made at test time), DER.
    pub extra_roots_der: Vec<Vec<u8>>,
    /// `User-Agent`.
    pub user_agent: String,
}

impl fmt::Debug for EgressConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("total_timeout", &self.total_timeout)
            .field(
                "proxy",
                &self
                    .proxy
                    .as_ref()
                    .map(|p| p.host_str().unwrap_or("").to_owned()),
            )
            .field("extra_roots", &self.extra_roots_der.len())
            .finish()
    }
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(15),
            proxy: None,
            extra_roots_der: Vec::new(),
            user_agent: "Bulkhead-Webhooks/1".into(),
        }
    }
}

/// How an outbound request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The receiver answered (any status; redirects are not followed).
    Response {
        /// Status code.
        status: u16,
        /// `Retry-After`, if any, as sent.
        retry_after: Option<String>,
        /// Up to [`RESPONSE_SAMPLE_BYTES`] of the body, lossily decoded.
        sample: String,
        /// Time to the end of the sample.
        latency: Duration,
    },
    /// The guard refused it; nothing was sent.
    Blocked(EgressError),
    /// A transport failure (connect, TLS, timeout).
    Transport {
        /// Short class: `timeout`, `connect`, `tls`, `io`.
        class: &'static str,
        /// Description (no secrets: URLs are the tenant's own).
        detail: String,
        /// Time until the failure.
        latency: Duration,
    },
}

/// Tenants whose HTTP clients (connection pools) an [`EgressClient`] keeps; the least recently
/// used is dropped beyond that (its connections close once their requests end).
pub const TENANT_POOLS: usize = 256;

/// The guarded client. Cheap to clone (clones share the pools).
///
/// Connections are pooled per tenant: every tenant sends through its own reqwest client, so
/// its own pool. With HTTP/2 all requests to one host share a connection, and a receiver caps
/// the streams of a connection (`SETTINGS_MAX_CONCURRENT_STREAMS`) while the pool does not open
/// a second connection when they are used up; one shared pool would let a tenant whose route on
/// a multi-tenant relay host hangs fill those streams and stall every other tenant's requests to
/// that host. Every client resolves through the same guard, so every address any of them
/// connects to is judged, and each connection stays on the address judged when it was opened.
#[derive(Clone)]
pub struct EgressClient {
    policy: Arc<EgressPolicy>,
    resolver: Arc<GuardedResolver>,
    config: Arc<EgressConfig>,
    pools: Arc<Mutex<hashlink::LruCache<TenantId, reqwest::Client>>>,
}

impl fmt::Debug for EgressClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Building the client failed (bad root certificate or proxy).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the egress client: {0}")]
pub struct BuildError(String);

impl EgressClient {
    /// The guarded client under `policy`, resolving through `resolver`.
    pub fn new(
        policy: EgressPolicy,
        resolver: Arc<dyn HostResolver>,
        config: &EgressConfig,
    ) -> Result<Self, BuildError> {
        let policy = Arc::new(policy);
        let proxy_host = config
            .proxy
            .as_ref()
            .and_then(|p| p.host_str())
            .map(str::to_owned);
        let guarded = GuardedResolver::new(policy.clone(), resolver).exempting(proxy_host);
        let client = Self {
            policy,
            resolver: Arc::new(guarded),
            config: Arc::new(config.clone()),
            pools: Arc::new(Mutex::new(hashlink::LruCache::new(TENANT_POOLS))),
        };
        // Fail at start, not at the first request, on a bad root or proxy.
        client.build()?;
        Ok(client)
    }

    fn build(&self) -> Result<reqwest::Client, BuildError> {
        base_builder(&self.config)?
            .dns_resolver(self.resolver.clone())
            .build()
            .map_err(|e| BuildError(e.to_string()))
    }

    /// `tenant`'s client: its own connection pool, never another tenant's.
    fn client_for(&self, tenant: TenantId) -> Result<reqwest::Client, BuildError> {
        if let Some(client) = lock_pools(&self.pools).get(&tenant) {
            return Ok(client.clone());
        }
        // Built outside the lock; a concurrent first request of the same tenant may build one
        // too, and the later insert wins (the other's pool closes with its last request).
        let client = self.build()?;
        lock_pools(&self.pools).insert(tenant, client.clone());
        Ok(client)
    }

    /// Tenants with a client kept now (tests).
    #[doc(hidden)]
    pub fn pooled_tenants(&self) -> usize {
        lock_pools(&self.pools).len()
    }

    /// The policy it enforces.
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// Sends a POST of `body` with `headers` to `url` for `tenant` (over its own connections),
    /// after judging the URL again. The response body is read only up to
    /// [`RESPONSE_SAMPLE_BYTES`].
    pub async fn post(
        &self,
        tenant: TenantId,
        url: &str,
        headers: http::HeaderMap,
        body: bytes::Bytes,
    ) -> SendOutcome {
        let checked = match self.policy.check_url(url) {
            Ok(checked) => checked,
            Err(err) => return SendOutcome::Blocked(err),
        };
        let client = match self.client_for(tenant) {
            Ok(client) => client,
            Err(err) => {
                return SendOutcome::Transport {
                    class: "config",
                    detail: err.to_string(),
                    latency: Duration::ZERO,
                }
            }
        };
        send_post(&client, checked.url().clone(), headers, body).await
    }
}

fn lock_pools(
    pools: &Mutex<hashlink::LruCache<TenantId, reqwest::Client>>,
) -> std::sync::MutexGuard<'_, hashlink::LruCache<TenantId, reqwest::Client>> {
    pools.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a request with a response cap ended ([`EgressClient::post_capped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CappedOutcome {
    /// The receiver answered with a body within the cap.
    Response {
        /// Status code.
        status: u16,
        /// `Content-Type`, if any, as sent (at most 128 characters).
        content_type: Option<String>,
        /// `Cache-Control`, if any, as sent (at most 256 characters).
        cache_control: Option<String>,
        /// The whole body.
        body: bytes::Bytes,
        /// Time to the end of the body.
        latency: Duration,
    },
    /// The body was longer than the cap; the rest was not read.
    TooLarge {
        /// Status code.
        status: u16,
        /// Time until the cap was passed.
        latency: Duration,
    },
    /// The guard refused it; nothing was sent.
    Blocked(EgressError),
    /// A transport failure (connect, TLS, timeout), also while reading the body.
    Transport {
        /// Short class: `timeout`, `connect`, `io`.
        class: &'static str,
        /// Description.
        detail: String,
        /// Time until the failure.
        latency: Duration,
    },
}

impl EgressClient {
    /// Sends a POST like [`EgressClient::post`], but reads the whole response body up to
    /// `max_bytes` (longer is [`CappedOutcome::TooLarge`]) and gives up after `timeout` (at most
    /// the client's total timeout). For synchronous calls whose answer is the result.
    pub async fn post_capped(
        &self,
        tenant: TenantId,
        url: &str,
        headers: http::HeaderMap,
        body: bytes::Bytes,
        max_bytes: usize,
        timeout: Duration,
    ) -> CappedOutcome {
        let request = CappedRequest {
            method: http::Method::POST,
            headers,
            body,
            max_bytes,
            timeout,
        };
        self.send_capped(tenant, url, request).await
    }

    /// A GET of `url` for `tenant`, read like [`EgressClient::post_capped`] (no redirects
    /// followed: a 3xx is an answer like any other).
    pub async fn get_capped(
        &self,
        tenant: TenantId,
        url: &str,
        headers: http::HeaderMap,
        max_bytes: usize,
        timeout: Duration,
    ) -> CappedOutcome {
        let request = CappedRequest {
            method: http::Method::GET,
            headers,
            body: bytes::Bytes::new(),
            max_bytes,
            timeout,
        };
        self.send_capped(tenant, url, request).await
    }

    async fn send_capped(
        &self,
        tenant: TenantId,
        url: &str,
        request: CappedRequest,
    ) -> CappedOutcome {
        let CappedRequest {
            method,
            headers,
            body,
            max_bytes,
            timeout,
        } = request;
        let checked = match self.policy.check_url(url) {
            Ok(checked) => checked,
            Err(err) => return CappedOutcome::Blocked(err),
        };
        let started = Instant::now();
        let client = match self.client_for(tenant) {
            Ok(client) => client,
            Err(err) => {
                return CappedOutcome::Transport {
                    class: "config",
                    detail: err.to_string(),
                    latency: Duration::ZERO,
                }
            }
        };
        let mut builder = client
            .request(method.clone(), checked.url().clone())
            .headers(headers)
            .timeout(timeout);
        if method != http::Method::GET {
            builder = builder.body(body);
        }
        let result = builder.send().await;
        let mut response = match result {
            Ok(response) => response,
            Err(err) => return capped_failure(&err, started),
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(128).collect());
        let cache_control = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        if response
            .content_length()
            .is_some_and(|n| n > max_bytes as u64)
        {
            return CappedOutcome::TooLarge {
                status,
                latency: started.elapsed(),
            };
        }
        let mut collected = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if collected.len() + chunk.len() > max_bytes {
                        return CappedOutcome::TooLarge {
                            status,
                            latency: started.elapsed(),
                        };
                    }
                    collected.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(err) => return capped_failure(&err, started),
            }
        }
        CappedOutcome::Response {
            status,
            content_type,
            cache_control,
            body: bytes::Bytes::from(collected),
            latency: started.elapsed(),
        }
    }
}

/// What a capped request sends and how much of the answer it reads.
struct CappedRequest {
    method: http::Method,
    headers: http::HeaderMap,
    body: bytes::Bytes,
    max_bytes: usize,
    timeout: Duration,
}

fn capped_failure(err: &reqwest::Error, started: Instant) -> CappedOutcome {
    match transport_failure(err, started) {
        SendOutcome::Blocked(refusal) => CappedOutcome::Blocked(refusal),
        SendOutcome::Transport {
            class,
            detail,
            latency,
        } => CappedOutcome::Transport {
            class,
            detail,
            latency,
        },
        SendOutcome::Response { latency, .. } => CappedOutcome::Transport {
            class: "io",
            detail: "unexpected response state".into(),
            latency,
        },
    }
}

/// The same client without the guard (benchmarks only: measures the guard's cost).
#[doc(hidden)]
pub fn unguarded_client<R: reqwest::dns::Resolve + 'static>(
    config: &EgressConfig,
    resolver: Arc<R>,
) -> Result<reqwest::Client, BuildError> {
    base_builder(config)?
        .dns_resolver(resolver)
        .build()
        .map_err(|e| BuildError(e.to_string()))
}

fn base_builder(config: &EgressConfig) -> Result<reqwest::ClientBuilder, BuildError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(config.connect_timeout)
        .timeout(config.total_timeout)
        .user_agent(config.user_agent.clone())
        // Keep-alive: a pooled connection is reused only for the same scheme, host and port,
        // and it stays connected to the one address the guard judged when it was opened (the
        // resolver runs, and judges every answer, for each new connection). Enough idle
        // connections per host for the dispatcher's slots to one busy endpoint.
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .https_only(false);
    for der in &config.extra_roots_der {
        let cert = reqwest::Certificate::from_der(der).map_err(|e| BuildError(e.to_string()))?;
        builder = builder.add_root_certificate(cert);
    }
    if let Some(proxy) = &config.proxy {
        let proxy = reqwest::Proxy::all(proxy.as_str()).map_err(|e| BuildError(e.to_string()))?;
        builder = builder.proxy(proxy);
    }
    Ok(builder)
}

/// Sends a POST with any reqwest client, reading at most the sample cap of the response.
#[doc(hidden)]
pub async fn send_post(
    client: &reqwest::Client,
    url: Url,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> SendOutcome {
    let started = Instant::now();
    let result = client.post(url).headers(headers).body(body).send().await;
    let mut response = match result {
        Ok(response) => response,
        Err(err) => return transport_failure(&err, started),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(64).collect());
    let mut sample = Vec::new();
    while sample.len() < RESPONSE_SAMPLE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = RESPONSE_SAMPLE_BYTES - sample.len();
                sample.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Dropping the response here discards the rest without reading it.
    drop(response);
    SendOutcome::Response {
        status,
        retry_after,
        sample: String::from_utf8_lossy(&sample).into_owned(),
        latency: started.elapsed(),
    }
}

fn transport_failure(err: &reqwest::Error, started: Instant) -> SendOutcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(Blocked(refusal)) = cause.downcast_ref::<Blocked>() {
            return SendOutcome::Blocked(refusal.clone());
        }
        source = cause.source();
    }
    let class = transport_class(err);
    // The error chain can name the address connected to (hyper's connect errors do): operators
    // get it in the log, tenants (attempt log, tool-call answers) a fixed text per class.
    tracing::info!(target: "bulkhead::egress", class, error = %error_chain(err), "outbound request failed");
    SendOutcome::Transport {
        class,
        detail: transport_detail(class).to_owned(),
        latency: started.elapsed(),
    }
}

/// The class of a transport failure: `timeout`, `tls`, `connect` or `io`.
fn transport_class(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        return "timeout";
    }
    // rustls reports a failed handshake as an `InvalidData` I/O error inside the connect error
    // (matched on the kind, so this crate needs no TLS dependency of its own).
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
        {
            return "tls";
        }
        source = cause.source();
    }
    if err.is_connect() {
        "connect"
    } else {
        "io"
    }
}

/// What a tenant is told about a transport failure of `class`.
fn transport_detail(class: &str) -> &'static str {
    match class {
        "timeout" => "the receiver did not answer in time",
        "tls" => "the TLS handshake with the receiver failed",
        "connect" => "could not connect to the receiver",
        _ => "the connection to the receiver failed",
    }
}

/// An error with its causes, for operator logs.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
