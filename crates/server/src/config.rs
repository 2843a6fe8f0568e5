//! Configuration: command-line flags, each with an environment variable, validated at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bulkhead_auth::KeyEnvironment;
use bulkhead_core::TenantSlug;

pub mod limits;
pub mod operator;

pub use limits::{
    CacheSettings, LimitArgs, LoginThrottleSettings, RateLimitSettings, TokenFreshness,
};

/// `serve`'s serving-pool size unless `--max-connections` says otherwise. A tenant may hold a
/// quarter of the pool at once (the store's per-tenant transaction cap).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 20;

/// Where the database is.
#[derive(Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL (>= 15) URL of the owner role, which runs migrations. Unset: start the embedded
    /// private cluster in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// URL for the application role that serves requests. Default: DATABASE_URL with the user
    /// replaced by `bulkhead_app` and the password from BULKHEAD_APP_DATABASE_PASSWORD.
    #[arg(long, env = "BULKHEAD_APP_DATABASE_URL", hide_env_values = true)]
    pub app_database_url: Option<String>,
    /// Bulkhead's own state: the embedded cluster (`pg/`) and the generated key pepper.
    #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
    pub data_dir: PathBuf,
    /// Largest number of connections in the serving pool.
    #[arg(long, env = "BULKHEAD_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: u32,
    /// The region whose data lives in DATABASE_URL's database (which also holds the registry).
    #[arg(long, env = "BULKHEAD_DEFAULT_REGION", default_value = "default")]
    pub default_region: String,
    /// A further region this process serves: `NAME=postgres://owner@host/db` (the serving role
    /// is derived as for DATABASE_URL), or `NAME=embedded` for a private cluster of its own in
    /// the data directory. Repeatable; tenants of regions not listed are refused (421).
    #[arg(
        long = "region-database",
        env = "BULKHEAD_REGIONS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub regions: Vec<String>,
    /// At which CPU priority heavy reads (lists, audit filters: reads whose cost grows with a
    /// tenant's data) run in the database: `auto` lowers it when the database is the embedded
    /// cluster; `lowered` also for a cluster on this host, in this process's PID namespace, whose
    /// backends this process may renice (one started beside it by the same supervisor); `normal`
    /// never lowers it.
    #[arg(long, env = "BULKHEAD_HEAVY_READ_PRIORITY", value_enum, default_value_t = HeavyReadPriority::Auto)]
    pub heavy_read_priority: HeavyReadPriority,
}

/// See [`DatabaseArgs::heavy_read_priority`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeavyReadPriority {
    /// Lowered on the embedded cluster, normal elsewhere.
    Auto,
    /// Lowered (the cluster's backends are processes this one may renice).
    Lowered,
    /// Normal: heavy reads share the serving pool.
    Normal,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry passwords.
        let redacted = |url: &Option<String>| url.as_ref().map(|_| "<redacted>");
        f.debug_struct("DatabaseArgs")
            .field("database_url", &redacted(&self.database_url))
            .field("app_database_url", &redacted(&self.app_database_url))
            .field("data_dir", &self.data_dir)
            .field("max_connections", &self.max_connections)
            .field("default_region", &self.default_region)
            .field("regions", &self.regions.len())
            .field("heavy_read_priority", &self.heavy_read_priority)
            .finish()
    }
}

/// How every command writes its logs (on stderr).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// `auto`: human-readable when stderr is a terminal, JSON otherwise; `pretty`; `json`.
    #[arg(long, global = true, env = "BULKHEAD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Whether logs are human-readable: `auto` is exactly when stderr is a terminal (a person
    /// reads it), so a log collector, a pipe or a file always gets JSON.
    pub fn is_pretty(self, stderr_is_terminal: bool) -> bool {
        match self {
            LogFormat::Auto => stderr_is_terminal,
            LogFormat::Pretty => true,
            LogFormat::Json => false,
        }
    }
}

/// `bulkhead serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BULKHEAD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served, or `off`. Never the API listener: metrics show every
    /// tenant's activity by route and status, so they stay on an operator-only address
    /// (loopback by default).
    #[arg(long, env = "BULKHEAD_METRICS_LISTEN", default_value = "127.0.0.1:9090", value_parser = parse_metrics_listen)]
    pub metrics_listen: MetricsListen,
    /// Where the operator API is served (docs/operator-api.md): `unix` (the socket
    /// `<data-dir>/operator.sock`, mode 0600), `unix:PATH`, loopback `ADDRESS:PORT`, several
    /// separated by commas, or `off`. Never on the tenant listener; never a non-loopback address.
    #[arg(long, env = "BULKHEAD_OPERATOR_LISTEN", default_value = "unix", value_parser = operator::parse_operator_listen)]
    pub operator_listen: operator::OperatorListen,
    /// Tenants are reached as `<slug>.<base-domain>`; requests to other hosts carry no
    /// subdomain signal and are resolved from the credential alone.
    #[arg(long, env = "BULKHEAD_BASE_DOMAIN", default_value = "localhost")]
    pub base_domain: String,
    /// Which API keys this deployment accepts: `live` refuses `bk_test_` keys and vice versa.
    #[arg(long, env = "BULKHEAD_KEY_ENVIRONMENT", default_value = "live", value_parser = parse_environment)]
    pub key_environment: KeyEnvironment,
    /// Comma-separated CIDRs of reverse proxies whose `X-Forwarded-For` is believed. From any
    /// other peer the header is ignored.
    #[arg(long, env = "BULKHEAD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where another region is served: `NAME=URL`, e.g. `eu=https://{tenant}.eu.example.com`
    /// (`{tenant}` becomes the tenant's slug). A request for a tenant of that region is
    /// redirected there (307, same method and body) instead of refused with 421. Repeatable.
    #[arg(
        long = "region-endpoint",
        env = "BULKHEAD_REGION_ENDPOINTS",
        value_delimiter = ','
    )]
    pub region_endpoints: Vec<String>,
    /// Do not run the job worker (nor webhook delivery) in this process.
    #[arg(long, env = "BULKHEAD_NO_WORKER")]
    pub no_worker: bool,
    /// The public base URL of this deployment. Each tenant's issuer (`iss` of its tokens, the
    /// issuer of its OAuth metadata) is its own origin: this URL's scheme and port, with the host
    /// `<slug>.<base-domain>`. Default: `http://<listen address>`.
    #[arg(long, env = "BULKHEAD_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` of access tokens.
    #[arg(long, env = "BULKHEAD_TOKEN_AUDIENCE", default_value = "bulkhead")]
    pub token_audience: String,
    /// Access-token lifetime in minutes (5 to 60).
    #[arg(long, env = "BULKHEAD_ACCESS_TOKEN_MINUTES", default_value_t = 15)]
    pub access_token_minutes: u64,
    /// Most actors a delegation chain may name (1 to 10).
    #[arg(long, env = "BULKHEAD_MAX_DELEGATION_DEPTH", default_value_t = 4,
          value_parser = clap::value_parser!(u8).range(1..=10))]
    pub max_delegation_depth: u8,
    /// Outbound webhook policy.
    #[command(flatten)]
    pub egress: EgressArgs,
    /// Database location.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Client connection timeouts and caps.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Rate-limit quotas and cache lifetimes.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Client connections: what a connection may cost before and while it sends a request.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Seconds a client has to send a whole request head (also closes idle keep-alive
    /// connections after this long).
    #[arg(long, env = "BULKHEAD_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub http_header_timeout_secs: u64,
    /// Seconds to read a request's body and answer it (408 beyond).
    #[arg(long, env = "BULKHEAD_HTTP_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub http_request_timeout_secs: u64,
    /// Seconds a connection may move no byte either way before it is closed.
    #[arg(long, env = "BULKHEAD_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub http_idle_timeout_secs: u64,
    /// Client connections open at once. Default: 10,000, or the descriptor limit less 288 if
    /// lower (256 kept for the database and outbound calls, 32 for the metrics listener); a
    /// value the descriptor limit cannot hold is refused at start.
    #[arg(long, env = "BULKHEAD_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Client connections open at once from one address (IPv6: one /64); trusted proxies are
    /// capped only by the total.
    #[arg(
        long,
        env = "BULKHEAD_HTTP_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub http_max_connections_per_address: usize,
    /// Password hashes computed at once (argon2id, one core each). Default: half the cores,
    /// at least 1, so hashing never takes every core.
    #[arg(long, env = "BULKHEAD_HASH_WORKERS")]
    pub hash_workers: Option<usize>,
    /// Password operations that may wait for a hashing worker; beyond, 503 with Retry-After.
    #[arg(long, env = "BULKHEAD_HASH_QUEUE", default_value_t = 4)]
    pub hash_queue: usize,
}

impl HttpArgs {
    /// The validated connection settings.
    pub fn connections(&self) -> Result<ConnectionSettings, String> {
        let defaults = ConnectionSettings::default();
        let settings = ConnectionSettings {
            header_read_timeout: Duration::from_secs(self.http_header_timeout_secs),
            request_timeout: Duration::from_secs(self.http_request_timeout_secs),
            idle_timeout: Duration::from_secs(self.http_idle_timeout_secs),
            max_connections: self
                .http_max_connections
                .unwrap_or(defaults.max_connections),
            max_connections_per_address: self.http_max_connections_per_address,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// The validated hashing settings.
    pub fn hashing(&self) -> Result<HashingSettings, String> {
        let defaults = HashingSettings::default();
        let settings = HashingSettings {
            workers: self.hash_workers.unwrap_or(defaults.workers),
            queue: self.hash_queue,
        };
        settings.validate()?;
        Ok(settings)
    }
}

/// The egress policy for outbound webhooks (registration checks and delivery).
#[derive(Debug, Clone, clap::Args)]
pub struct EgressArgs {
    /// Allow `http://` webhook URLs (development only).
    #[arg(long, env = "BULKHEAD_WEBHOOK_ALLOW_HTTP")]
    pub webhook_allow_http: bool,
    /// Ports webhook URLs may name: comma-separated ports or ranges.
    #[arg(long, env = "BULKHEAD_WEBHOOK_PORTS", default_value = "443", value_parser = parse_ports)]
    pub webhook_ports: PortList,
    /// CIDRs reachable although special-purpose (e.g. a partner's private link).
    #[arg(long, env = "BULKHEAD_WEBHOOK_ALLOW_CIDRS", value_delimiter = ',')]
    pub webhook_allow_cidrs: Vec<ipnet::IpNet>,
    /// CIDRs never reached; wins over the allow list.
    #[arg(long, env = "BULKHEAD_WEBHOOK_DENY_CIDRS", value_delimiter = ',')]
    pub webhook_deny_cidrs: Vec<ipnet::IpNet>,
    /// Send deliveries through this egress proxy (environment proxies are always ignored).
    #[arg(long, env = "BULKHEAD_WEBHOOK_PROXY")]
    pub webhook_proxy: Option<url::Url>,
}

/// A parsed `--webhook-ports` list.
#[derive(Debug, Clone)]
pub struct PortList(pub Vec<std::ops::RangeInclusive<u16>>);

fn parse_ports(text: &str) -> Result<PortList, String> {
    bulkhead_webhooks::EgressPolicy::parse_ports(text).map(PortList)
}

impl EgressArgs {
    /// The policy these flags describe, with the platform's own domain denied.
    pub fn policy(&self, base_domain: &str) -> bulkhead_webhooks::EgressPolicy {
        bulkhead_webhooks::EgressPolicy {
            allow_http: self.webhook_allow_http,
            allowed_ports: self.webhook_ports.0.clone(),
            platform_domains: vec![base_domain.trim_end_matches('.').to_ascii_lowercase()],
            allow: self.webhook_allow_cidrs.clone(),
            deny: self.webhook_deny_cidrs.clone(),
        }
    }
}

/// The metrics listener's address; `None` when turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

/// Parses `--metrics-listen`: an address, or `off`.
pub fn parse_metrics_listen(text: &str) -> Result<MetricsListen, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(MetricsListen(None));
    }
    text.parse()
        .map(|addr| MetricsListen(Some(addr)))
        .map_err(|_| "expected an address such as 127.0.0.1:9090, or `off`".into())
}

/// Parses `live` / `test`.
pub fn parse_environment(text: &str) -> Result<KeyEnvironment, String> {
    match text {
        "live" => Ok(KeyEnvironment::Live),
        "test" => Ok(KeyEnvironment::Test),
        _ => Err("expected `live` or `test`".into()),
    }
}

/// Settings of the HTTP application that are not about the database.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// See [`ServeArgs::base_domain`]; lowercase, no trailing dot.
    pub base_domain: String,
    /// See [`ServeArgs::key_environment`].
    pub key_environment: KeyEnvironment,
    /// See [`ServeArgs::trusted_proxies`].
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long registry answers, verified keys, role ceilings and tool schemas are reused.
    pub caches: CacheSettings,
    /// The rate limiters' quotas and concurrency (used when limiting is on).
    pub rate_limits: RateLimitSettings,
    /// Access-token issuer, audience and lifetime.
    pub tokens: TokenSettings,
    /// How webhook URLs are judged at registration (the delivery worker judges them again).
    /// Tool endpoints are judged by the same policy, at registration and on every call.
    pub webhook_egress: bulkhead_webhooks::EgressPolicy,
    /// A deliberately broken tenant check, so that a test can prove `bulkhead probe` catches a
    /// leak: a credential of one tenant is accepted on another tenant's subdomain. Exists only
    /// with the test-only `probe-weakness` feature, and is off unless a test turns it on.
    #[cfg(feature = "probe-weakness")]
    pub weaken_host_check: bool,
    /// Tool calls: timeout and response cap.
    pub tools: ToolSettings,
    /// Base URLs of regions this process does not serve (see [`ServeArgs::region_endpoints`]).
    pub region_endpoints: Vec<(String, String)>,
    /// Client connection timeouts and caps (see [`crate::http::listener`]).
    pub connections: ConnectionSettings,
    /// The password-hashing pool (see [`crate::service::hashing`]).
    pub hashing: HashingSettings,
}

impl AppConfig {
    /// Parses `NAME=URL` region endpoints: an absolute http(s) URL with no path, query or
    /// fragment, whose host may contain `{tenant}`.
    pub fn set_region_endpoints(&mut self, specs: &[String]) -> Result<(), String> {
        let mut out = Vec::new();
        for spec in specs {
            let (name, template) = spec
                .split_once('=')
                .ok_or_else(|| format!("--region-endpoint {spec:?}: expected NAME=URL"))?;
            let probe = template.replace("{tenant}", "tenant");
            let url = url::Url::parse(&probe)
                .map_err(|e| format!("--region-endpoint {name}: not a URL ({e})"))?;
            let plain = matches!(url.scheme(), "https" | "http")
                && url.host().is_some()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && !template.ends_with('/');
            if !plain {
                return Err(format!(
                    "--region-endpoint {name}: expected scheme://host[:port] with nothing after it"
                ));
            }
            out.push((name.to_owned(), template.to_owned()));
        }
        self.region_endpoints = out;
        Ok(())
    }

    /// Where to send a request for tenant `slug` of `region`, if that region has an endpoint.
    pub fn region_redirect(
        &self,
        region: &str,
        slug: &str,
        path_and_query: &str,
    ) -> Option<String> {
        self.region_endpoints
            .iter()
            .find(|(name, _)| name == region)
            .map(|(_, template)| format!("{}{path_and_query}", template.replace("{tenant}", slug)))
    }
}

/// Limits of a tool call.
#[derive(Debug, Clone)]
pub struct ToolSettings {
    /// Whole-call timeout (connect, send, read the answer).
    pub call_timeout: Duration,
    /// Largest answer read; longer is a failed call (502).
    pub max_response_bytes: usize,
}

impl Default for ToolSettings {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(10),
            max_response_bytes: 256 * 1024,
        }
    }
}

impl AppConfig {
    /// Validated settings.
    pub fn new(base_domain: &str, key_environment: KeyEnvironment) -> Result<Self, String> {
        let base_domain = base_domain.trim_end_matches('.').to_ascii_lowercase();
        let valid = !base_domain.is_empty()
            && base_domain.len() <= 253
            && base_domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!(
                "--base-domain {base_domain:?} is not a valid DNS name"
            ));
        }
        let tokens = TokenSettings::new(
            &format!("https://{base_domain}"),
            &base_domain,
            "bulkhead",
            Duration::from_secs(15 * 60),
        )?;
        Ok(Self {
            key_environment,
            trusted_proxies: Vec::new(),
            webhook_egress: bulkhead_webhooks::EgressPolicy {
                platform_domains: vec![base_domain.clone()],
                ..Default::default()
            },
            base_domain,
            caches: CacheSettings::default(),
            rate_limits: RateLimitSettings::default(),
            tokens,
            #[cfg(feature = "probe-weakness")]
            weaken_host_check: false,
            tools: ToolSettings::default(),
            region_endpoints: Vec::new(),
            connections: ConnectionSettings::default(),
            hashing: HashingSettings::default(),
        })
    }
}

/// Size of the hashing pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashingSettings {
    /// Hashes computed at once (one blocking thread each).
    pub workers: usize,
    /// Admitted operations that may wait for a worker.
    pub queue: usize,
}

impl Default for HashingSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            workers: (cores / 2).max(1),
            queue: 4,
        }
    }
}

impl HashingSettings {
    /// At least one worker.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("--hash-workers must be at least 1".into());
        }
        Ok(())
    }
}

/// Descriptors kept free for everything that is not a client connection: the database pools,
/// outbound webhook and tool connections, files, Redis.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// Connections the metrics listener holds at most (a scraper or two needs few); counted out of
/// the descriptor limit beside [`RESERVED_DESCRIPTORS`].
pub const METRICS_MAX_CONNECTIONS: usize = 32;

/// Descriptors the API listener may not use: [`RESERVED_DESCRIPTORS`] and the metrics
/// listener's cap.
const NOT_FOR_API: u64 = RESERVED_DESCRIPTORS + METRICS_MAX_CONNECTIONS as u64;

/// Limits of client connections (see the module documentation).
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// A request head (the first, or the next one on a keep-alive connection) must arrive
    /// whole within this time.
    pub header_read_timeout: Duration,
    /// Reading the body and answering must finish within this time (408 otherwise).
    pub request_timeout: Duration,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Client connections open at once; further ones are closed on accept.
    pub max_connections: usize,
    /// Client connections open at once from one address (IPv6: one /64).
    pub max_connections_per_address: usize,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
            max_connections_per_address: 256,
        }
    }
}

/// The process's soft limit on open descriptors, if it can be read.
pub fn descriptor_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

/// The default total cap: 10,000, or the descriptor limit minus [`RESERVED_DESCRIPTORS`] and
/// [`METRICS_MAX_CONNECTIONS`] if that is lower (at least 16).
pub fn default_max_connections() -> usize {
    let ceiling = descriptor_limit()
        .map(|limit| limit.saturating_sub(NOT_FOR_API))
        .unwrap_or(10_000);
    usize::try_from(ceiling.clamp(16, 10_000)).unwrap_or(10_000)
}

impl ConnectionSettings {
    /// Refuses settings that cannot protect the process: zero timeouts or caps, a per-address
    /// cap above the total, or a total cap the descriptor limit cannot hold.
    pub fn validate(&self) -> Result<(), String> {
        if self.header_read_timeout.is_zero()
            || self.request_timeout.is_zero()
            || self.idle_timeout.is_zero()
        {
            return Err("HTTP timeouts must be at least one second".into());
        }
        if self.idle_timeout < self.request_timeout {
            // A handler may be silent for up to the request timeout; the idle clock must not
            // cut it short.
            return Err(
                "--http-idle-timeout-secs must not be below --http-request-timeout-secs".into(),
            );
        }
        if self.max_connections == 0 || self.max_connections_per_address == 0 {
            return Err("HTTP connection caps must be at least 1".into());
        }
        if self.max_connections_per_address > self.max_connections {
            return Err(format!(
                "--http-max-connections-per-address ({}) is above --http-max-connections ({})",
                self.max_connections_per_address, self.max_connections
            ));
        }
        if let Some(limit) = descriptor_limit() {
            let usable = limit.saturating_sub(NOT_FOR_API);
            if u64::try_from(self.max_connections).unwrap_or(u64::MAX) > usable {
                return Err(format!(
                    "--http-max-connections ({}) does not fit the descriptor limit ({limit}, of which \
                     {RESERVED_DESCRIPTORS} are kept for the database and outbound calls and \
                     {METRICS_MAX_CONNECTIONS} for the metrics listener): lower it or raise `ulimit -n`",
                    self.max_connections
                ));
            }
        }
        Ok(())
    }

    /// The metrics listener's settings: the same timeouts, at most [`METRICS_MAX_CONNECTIONS`]
    /// open, and one address at most half of them (nor more than the API's per-address cap).
    pub fn for_metrics(&self) -> Self {
        let total = self.max_connections.min(METRICS_MAX_CONNECTIONS);
        Self {
            max_connections: total,
            max_connections_per_address: self
                .max_connections_per_address
                .min(total.div_ceil(2))
                .max(1),
            ..self.clone()
        }
    }
}

/// Token settings of the deployment.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The deployment's public base URL (`--issuer`). No token carries it: each tenant's issuer
    /// is its own origin ([`TokenSettings::tenant_issuer`]), built from this URL's scheme and
    /// port. It still names Bulkhead's own API on the deployment's host (its RFC 9728
    /// `resource`, and a `resource` parameter naming the own API).
    pub issuer: String,
    /// The base domain tenants are served under (`--base-domain`), for their issuers.
    pub base_domain: String,
    /// `aud` of every token.
    pub audience: String,
    /// Access-token lifetime: 5 to 60 minutes.
    pub access_token_ttl: Duration,
    /// Most actors a delegation chain may name (RFC 8693 `act` nesting): 1 to 10, default 4.
    pub max_delegation_depth: usize,
}

impl TokenSettings {
    /// Validated settings: the lifetime must be within 5–60 minutes; the issuer must be an
    /// absolute http(s) URL without a query or fragment (RFC 8414 §2).
    pub fn new(
        issuer: &str,
        base_domain: &str,
        audience: &str,
        access_token_ttl: Duration,
    ) -> Result<Self, String> {
        let secs = i64::try_from(access_token_ttl.as_secs()).unwrap_or(i64::MAX);
        if !(bulkhead_auth::token::MIN_ACCESS_TOKEN_SECS
            ..=bulkhead_auth::token::MAX_ACCESS_TOKEN_SECS)
            .contains(&secs)
        {
            return Err("the access-token lifetime must be between 5 and 60 minutes".into());
        }
        let issuer = issuer.trim_end_matches('/');
        let scheme_ok = issuer.starts_with("https://") || issuer.starts_with("http://");
        if !scheme_ok || issuer.contains(['?', '#', ' ']) || issuer.len() > 200 {
            return Err(format!(
                "the issuer {issuer:?} must be an http(s) URL without query or fragment"
            ));
        }
        if audience.is_empty() || audience.len() > 200 {
            return Err("the token audience must be 1 to 200 characters".into());
        }
        if url::Url::parse(issuer).map_or(true, |url| url.host().is_none()) {
            return Err(format!(
                "the issuer {issuer:?} must be an absolute URL with a host"
            ));
        }
        Ok(Self {
            issuer: issuer.to_owned(),
            base_domain: base_domain.trim_end_matches('.').to_ascii_lowercase(),
            audience: audience.to_owned(),
            access_token_ttl,
            max_delegation_depth: 4,
        })
    }

    /// The issuer of a tenant: its own origin, `<scheme>://<slug>.<base-domain>[:<port>]` with
    /// the scheme and port of `--issuer` (a default port left out). The one rule for a tenant's
    /// origin: its tokens' `iss`, its RFC 8414 and OpenID Connect metadata, the `iss` of its
    /// authorization responses, and where its protected resources' identifiers must be.
    pub fn tenant_issuer(&self, slug: &TenantSlug) -> String {
        let scheme = self.issuer.split_once("://").map_or("https", |(s, _)| s);
        let port = url::Url::parse(&self.issuer)
            .ok()
            .and_then(|url| url.port())
            .map_or_else(String::new, |port| format!(":{port}"));
        format!("{scheme}://{slug}.{}{port}", self.base_domain)
    }

    /// The tenant whose issuer `iss` is, exactly ([`TokenSettings::tenant_issuer`] of the slug
    /// read from it gives `iss` back, byte for byte); `None` for anything else, the deployment's
    /// own `--issuer` included.
    pub fn issuer_tenant(&self, iss: &str) -> Option<TenantSlug> {
        let (_, rest) = iss.split_once("://")?;
        let (label, _) = rest.split_once('.')?;
        let slug = TenantSlug::parse(label).ok()?;
        (self.tenant_issuer(&slug) == iss).then_some(slug)
    }
}

/// The environment variables read outside clap's flags, all here (`crates/architecture` checks
/// that nothing else reads the environment): server secrets, kept out of `ps` and `--help`;
/// the account running a CLI command, for its audit events; `PATH`, where the embedded cluster
/// finds the PostgreSQL binaries; and `REDIS_URL`. Each is read when
/// it is needed, never cached, and never logged.
pub mod environment {
    use zeroize::Zeroizing;

    /// A secret the process takes from its environment.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Secret {
        /// `BULKHEAD_KEY_PEPPER`: the API-key pepper (else, embedded, `<data-dir>/key-pepper`).
        KeyPepper,
        /// `BULKHEAD_KEY_PEPPER_PREVIOUS`: earlier peppers, comma-separated, during a rotation.
        PreviousKeyPeppers,
        /// `BULKHEAD_MASTER_KEY`: wraps signing keys and secrets at rest.
        MasterKey,
        /// `BULKHEAD_AUDIT_LOG_KEY`: signs the audit log's checkpoints.
        AuditLogKey,
        /// `BULKHEAD_APP_DATABASE_PASSWORD`: the serving role's password.
        AppDatabasePassword,
        /// `BULKHEAD_USER_PASSWORD`: the password of `bulkhead user create` (else prompted).
        UserPassword,
        /// `BULKHEAD_KEY_ENVIRONMENT` for the key commands of the CLI (`live` or `test`).
        KeyEnvironment,
    }

    impl Secret {
        /// The variable's name.
        pub fn name(self) -> &'static str {
            match self {
                Self::KeyPepper => "BULKHEAD_KEY_PEPPER",
                Self::PreviousKeyPeppers => "BULKHEAD_KEY_PEPPER_PREVIOUS",
                Self::MasterKey => "BULKHEAD_MASTER_KEY",
                Self::AuditLogKey => "BULKHEAD_AUDIT_LOG_KEY",
                Self::AppDatabasePassword => "BULKHEAD_APP_DATABASE_PASSWORD",
                Self::UserPassword => "BULKHEAD_USER_PASSWORD",
                Self::KeyEnvironment => "BULKHEAD_KEY_ENVIRONMENT",
            }
        }

        /// Its value, if set (and valid Unicode), wiped from memory when dropped.
        pub fn read(self) -> Option<Zeroizing<String>> {
            std::env::var(self.name()).ok().map(Zeroizing::new)
        }
    }

    /// The operating-system account running a CLI command, as its audit events name it
    /// (`cli:<account>`, at most 64 characters of it): `SUDO_USER`, else `USER`, else `LOGNAME`.
    pub fn operator_account() -> String {
        let name = ["SUDO_USER", "USER", "LOGNAME"]
            .into_iter()
            .find_map(|name| std::env::var(name).ok())
            .unwrap_or_else(|| "unknown".to_owned());
        format!("cli:{}", name.chars().take(64).collect::<String>())
    }

    /// `PATH`: where the embedded cluster looks for the PostgreSQL server binaries first.
    pub fn binary_search_path() -> Option<std::ffi::OsString> {
        std::env::var_os("PATH")
    }

    /// `REDIS_URL`, when set and not empty: the rate limiters' shared store.
    pub fn redis_url() -> Option<String> {
        std::env::var("REDIS_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(issuer: &str) -> TokenSettings {
        TokenSettings::new(
            issuer,
            "Bulkhead.Test.",
            "bulkhead",
            Duration::from_secs(900),
        )
        .expect("valid settings")
    }

    #[test]
    fn a_tenants_issuer_is_its_origin_with_the_scheme_and_port_of_the_issuer() {
        let acme = TenantSlug::parse("acme").unwrap();
        for (issuer, expected) in [
            ("https://bulkhead.test", "https://acme.bulkhead.test"),
            ("https://auth.example.com/", "https://acme.bulkhead.test"),
            ("https://bulkhead.test:443", "https://acme.bulkhead.test"),
            (
                "https://bulkhead.test:8443",
                "https://acme.bulkhead.test:8443",
            ),
            ("http://127.0.0.1:8080", "http://acme.bulkhead.test:8080"),
        ] {
            let settings = settings(issuer);
            assert_eq!(settings.tenant_issuer(&acme), expected, "{issuer}");
            assert_eq!(settings.issuer_tenant(expected), Some(acme.clone()));
        }
        let settings = settings("https://bulkhead.test");
        for not_a_tenants in [
            "https://bulkhead.test",
            "https://acme.bulkhead.test/",
            "https://ACME.bulkhead.test",
            "https://acme.bulkhead.test:443",
            "https://acme.bulkhead.test.",
            "http://acme.bulkhead.test",
            "https://a.acme.bulkhead.test",
            "https://acme.bulkhead.test.evil.example",
            "",
        ] {
            assert_eq!(
                settings.issuer_tenant(not_a_tenants),
                None,
                "{not_a_tenants}"
            );
        }
    }
}
