//! `bulkhead probe`: an adversarial check of a running deployment's tenant isolation.
//!
//! Given two tenants' admin keys, the probe gives tenant A one resource of every kind (each
//! carrying a random marker), reads the deployment's OpenAPI document, and attacks every
//! operation as tenant B: A's ids in the path, body and query; A's credentials on B's subdomain
//! and B's on A's; no credential; revoked credentials; a credential whose scope excludes the
//! operation; list filters aimed at A's data; webhook endpoints aimed at internal addresses;
//! introspection, revocation and refresh of A's tokens by B. Every attempt must be refused in the
//! documented way, no response to B may contain any of A's ids or markers, "not yours" must
//! answer exactly like "does not exist", and A's data must be unchanged afterwards.
//!
//! The probe talks only to the base URL it is given: tenant subdomains are resolved to the base
//! URL's address by the probe's own resolver when the base URL is an IP literal, so a probe of a
//! loopback deployment never looks anything up or connects anywhere else.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

/// What the probe needs to know about the deployment.
#[derive(Clone)]
pub struct ProbeConfig {
    /// Where the API listens (`http://127.0.0.1:8080`, `https://api.example.com`).
    pub base_url: url::Url,
    /// The tenants' base domain: tenant `acme` is `acme.<base_domain>`.
    pub base_domain: String,
    /// Tenant A (the victim): slug and admin key.
    pub tenant_a: TenantCredentials,
    /// Tenant B (the attacker): slug and admin key.
    pub tenant_b: TenantCredentials,
    /// Read operations from this file instead of `GET /openapi.json`.
    pub openapi_file: Option<std::path::PathBuf>,
}

impl fmt::Debug for ProbeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeConfig")
            .field("base_url", &self.base_url.as_str())
            .field("base_domain", &self.base_domain)
            .field("tenant_a", &self.tenant_a.slug)
            .field("tenant_b", &self.tenant_b.slug)
            .finish_non_exhaustive()
    }
}

/// A tenant's slug and admin key. `Debug` leaves the key out.
#[derive(Clone)]
pub struct TenantCredentials {
    /// Subdomain label.
    pub slug: String,
    /// An admin key (every permission).
    pub admin_key: String,
}

impl fmt::Debug for TenantCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCredentials")
            .field("slug", &self.slug)
            .finish_non_exhaustive()
    }
}

/// The attacks, in the order the table shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// No credential on B's subdomain.
    NoCredential,
    /// A's admin key on B's subdomain.
    AKeyOnB,
    /// A's access token on B's subdomain.
    ATokenOnB,
    /// A's delegated token on B's subdomain.
    ADelegatedOnB,
    /// A's refresh token presented as a bearer on B's subdomain.
    ARefreshOnB,
    /// B's key on A's subdomain.
    BKeyOnA,
    /// A revoked key of B.
    RevokedKey,
    /// A revoked access token of B.
    RevokedToken,
    /// A key of B past its expiry.
    ExpiredKey,
    /// A rotated key of B past its grace period.
    AfterGraceKey,
    /// A key of B holding no permission any route needs.
    OutOfScope,
    /// B's admin key with A's ids in the path and body.
    ForeignIds,
    /// "Not yours" and "does not exist" answer alike.
    Indistinguishable,
    /// List and search filters aimed at A's data.
    ListFilters,
    /// Webhook endpoints aimed at internal addresses.
    InternalUrls,
    /// B's client introspects, revokes, refreshes or exchanges A's tokens.
    ForeignTokens,
    /// A token of B confined to a resource prefix (and delegated) tries every creating route
    /// and every list: it creates nothing and lists nothing outside its prefix.
    ConfinedToken,
    /// B registers and calls hostile JSON Schemas while A keeps being served.
    HostileSchema,
    /// A key holding `webhooks:manage` but not `audit:read` subscribes to the audit stream.
    AuditStream,
    /// B publishes messages in the platform's namespaces, or dressed as platform events.
    ForgedEvents,
    /// An absolute-form target naming one tenant with a `Host` naming another.
    HostMismatch,
    /// B holds half-sent connections, then forces password hashing, while A's requests must
    /// still be answered correctly within a bound.
    SlowNeighbour,
}

impl Attack {
    const ALL: [Attack; 22] = [
        Attack::NoCredential,
        Attack::AKeyOnB,
        Attack::ATokenOnB,
        Attack::ADelegatedOnB,
        Attack::ARefreshOnB,
        Attack::BKeyOnA,
        Attack::RevokedKey,
        Attack::RevokedToken,
        Attack::ExpiredKey,
        Attack::AfterGraceKey,
        Attack::OutOfScope,
        Attack::ForeignIds,
        Attack::Indistinguishable,
        Attack::ListFilters,
        Attack::InternalUrls,
        Attack::ForeignTokens,
        Attack::ConfinedToken,
        Attack::HostileSchema,
        Attack::AuditStream,
        Attack::ForgedEvents,
        Attack::HostMismatch,
        Attack::SlowNeighbour,
    ];

    fn short(self) -> &'static str {
        match self {
            Attack::NoCredential => "anon",
            Attack::AKeyOnB => "akey@b",
            Attack::ATokenOnB => "atok@b",
            Attack::ADelegatedOnB => "adlg@b",
            Attack::ARefreshOnB => "arft@b",
            Attack::BKeyOnA => "bkey@a",
            Attack::RevokedKey => "rvkey",
            Attack::RevokedToken => "rvtok",
            Attack::ExpiredKey => "expkey",
            Attack::AfterGraceKey => "grace",
            Attack::OutOfScope => "scope",
            Attack::ForeignIds => "ids",
            Attack::Indistinguishable => "same404",
            Attack::ListFilters => "filters",
            Attack::InternalUrls => "ssrf",
            Attack::ForeignTokens => "tokens",
            Attack::ConfinedToken => "confin",
            Attack::HostileSchema => "schema",
            Attack::AuditStream => "audstrm",
            Attack::ForgedEvents => "forge",
            Attack::HostMismatch => "host",
            Attack::SlowNeighbour => "slownb",
        }
    }
}

/// What one attack on one operation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Refused as documented, nothing of A's in the answer.
    Refused,
    /// Answered, with nothing of A's in it (the caller's own data).
    AllowedOwn,
    /// Something of A's reached B, or B changed something of A's.
    Leak,
    /// Not refused the way the documentation says (a wrong status), nothing leaked.
    Unexpected,
}

/// One cell of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `GET /v1/sessions/{id}`, or `A's data` for the final comparison.
    pub operation: String,
    /// The attack.
    pub attack: Attack,
    /// The verdict.
    pub verdict: Verdict,
    /// The status seen, and why the verdict (for anything but `refused`).
    pub detail: String,
}

/// Everything the probe found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Operations read from the document.
    pub operations: usize,
    /// Every attempt.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Attempts that leaked something of A's.
    pub fn leaks(&self) -> usize {
        self.count(Verdict::Leak)
    }

    /// Attempts answered otherwise than documented, without a leak.
    pub fn unexpected(&self) -> usize {
        self.count(Verdict::Unexpected)
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.findings
            .iter()
            .filter(|f| f.verdict == verdict)
            .count()
    }

    /// Whether the deployment passed: no leak and nothing unexpected.
    pub fn passed(&self) -> bool {
        self.leaks() == 0 && self.unexpected() == 0
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "probe: {} operations, {} attempts: {} refused, {} allowed on own data, {} unexpected, {} leaks",
            self.operations,
            self.findings.len(),
            self.count(Verdict::Refused),
            self.count(Verdict::AllowedOwn),
            self.unexpected(),
            self.leaks(),
        )
    }

    /// The operation × attack table, one row per operation.
    pub fn table(&self) -> String {
        let mut rows: BTreeMap<&str, BTreeMap<Attack, Verdict>> = BTreeMap::new();
        for f in &self.findings {
            let cell = rows
                .entry(&f.operation)
                .or_default()
                .entry(f.attack)
                .or_insert(f.verdict);
            // A cell shows its worst attempt.
            if rank(f.verdict) > rank(*cell) {
                *cell = f.verdict;
            }
        }
        let width = rows.keys().map(|k| k.len()).max().unwrap_or(9).max(9);
        let mut out = format!("{:width$}", "operation");
        for attack in Attack::ALL {
            out.push_str(&format!(" {:>7}", attack.short()));
        }
        out.push('\n');
        for (operation, cells) in &rows {
            out.push_str(&format!("{operation:width$}"));
            for attack in Attack::ALL {
                let text = match cells.get(&attack) {
                    None => "-",
                    Some(Verdict::Refused) => "ok",
                    Some(Verdict::AllowedOwn) => "own",
                    Some(Verdict::Unexpected) => "UNEXP",
                    Some(Verdict::Leak) => "LEAK",
                };
                out.push_str(&format!(" {text:>7}"));
            }
            out.push('\n');
        }
        for f in self
            .findings
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::Leak | Verdict::Unexpected))
        {
            out.push_str(&format!(
                "{:?} {} [{}]: {}\n",
                f.verdict,
                f.operation,
                f.attack.short(),
                f.detail
            ));
        }
        out.push_str("legend: ok refused as documented; own answered with the caller's own data; - not applicable\n");
        out
    }
}

fn rank(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Refused => 0,
        Verdict::AllowedOwn => 1,
        Verdict::Unexpected => 2,
        Verdict::Leak => 3,
    }
}

/// One operation of the OpenAPI document.
#[derive(Debug, Clone)]
struct Operation {
    method: Method,
    path: String,
    /// `security: []`: callable without a credential.
    public: bool,
    query_params: Vec<String>,
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Under `/v1` and behind tenant resolution (login is the one self-authenticating route).
    fn tenant_api(&self) -> bool {
        self.path.starts_with("/v1/") && self.path != "/v1/auth/login" && !self.public
    }
}

/// Reads every operation of an OpenAPI 3.x document.
fn operations(document: &Value) -> anyhow::Result<Vec<Operation>> {
    let paths = document["paths"]
        .as_object()
        .ok_or_else(|| anyhow!("the OpenAPI document has no `paths` object"))?;
    let mut out = Vec::new();
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                continue;
            };
            if !matches!(
                method,
                Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            ) {
                continue;
            }
            let public = op["security"].as_array().is_some_and(Vec::is_empty);
            let query_params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            out.push(Operation {
                method,
                path: path.clone(),
                public,
                query_params,
            });
        }
    }
    out.sort_by(|a, b| (&a.path, a.method.as_str()).cmp(&(&b.path, b.method.as_str())));
    Ok(out)
}

/// Which tenant's host a request goes to.
#[derive(Debug, Clone, Copy)]
enum Host {
    A,
    B,
}

/// A's resources, their ids and markers (and A's tokens: no `Debug`).
#[derive(Default)]
struct Victim {
    /// Resource kind (the collection's path segment) → A's id of it.
    ids: BTreeMap<&'static str, String>,
    /// Every id and marker of A's: none may appear in a response to B.
    secrets: Vec<String>,
    access_token: String,
    refresh_token: Option<String>,
    delegated_token: String,
    agent_key: String,
    agent_key_id: String,
    /// The JSON of each resource after setup, to compare at the end.
    snapshots: Vec<(String, Value)>,
    token_policy: Option<Value>,
}

/// B's extra credentials (no `Debug`: they are secrets).
#[derive(Default)]
struct Attacker {
    out_of_scope_key: String,
    revoked_key: String,
    revoked_token: String,
    expired_key: String,
    after_grace_key: String,
    client_key: String,
    client_key_id: String,
    made_keys: Vec<String>,
}

struct Probe {
    config: ProbeConfig,
    client: reqwest::Client,
    findings: Vec<Finding>,
}

/// Runs the probe. Errors are failures to set up or talk to the deployment, not findings.
pub async fn run(config: ProbeConfig) -> anyhow::Result<Report> {
    let client = client(&config)?;
    let mut probe = Probe {
        config,
        client,
        findings: Vec::new(),
    };
    let document = probe.document().await?;
    let operations = operations(&document)?;
    if operations.is_empty() {
        bail!("the OpenAPI document lists no operations");
    }
    let mut victim = probe.set_up_victim().await.context("setting up tenant A")?;
    let attacker = probe
        .set_up_attacker()
        .await
        .context("setting up tenant B")?;
    for op in &operations {
        probe.attack(op, &victim, &attacker).await?;
    }
    probe.foreign_tokens(&victim, &attacker).await?;
    probe.confined_token(&operations).await?;
    probe.hostile_schemas().await?;
    probe.audit_stream_scope(&attacker).await?;
    probe.forged_platform_events().await?;
    probe.host_mismatch(&victim).await?;
    probe.slow_neighbour(&victim).await?;
    probe.check_unchanged(&victim).await?;
    probe.clean_up(&mut victim, &attacker).await;
    Ok(Report {
        operations: operations.len(),
        findings: probe.findings,
    })
}

fn client(config: &ProbeConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20));
    // Tenant hosts go to the base URL's address: no name lookup, no other destination.
    if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = config.base_url.host() {
        let addr: SocketAddr = config
            .base_url
            .socket_addrs(|| None)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("base URL has no address"))?;
        for slug in [&config.tenant_a.slug, &config.tenant_b.slug] {
            builder = builder.resolve(&format!("{slug}.{}", config.base_domain), addr);
        }
    }
    Ok(builder.build()?)
}

fn random_marker() -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("probe-marker-{n:016x}")
}

/// A fresh, well-formed id of the kind this collection holds: "does not exist" for comparison.
fn fresh_id(kind: &str) -> Option<String> {
    use bulkhead_core::*;
    Some(match kind {
        "sessions" => SessionId::new().to_string(),
        "agents" => AgentId::new().to_string(),
        "users" => UserId::new().to_string(),
        "roles" => RoleId::new().to_string(),
        "role-assignments" => RoleAssignmentId::new().to_string(),
        "api-keys" => ApiKeyId::new().to_string(),
        "endpoints" => EndpointId::new().to_string(),
        "messages" => MessageId::new().to_string(),
        "auth-sessions" => AuthSessionId::new().to_string(),
        "tools" => format!("probe_missing_{:08x}", rand::thread_rng().gen::<u32>()),
        _ => return None,
    })
}

/// The resource kind a `{param}` of `path` names: the segment before it.
fn param_kind(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    let at = segments.iter().position(|s| s.starts_with('{'))?;
    let before = segments.get(at.checked_sub(1)?)?;
    let kind = match *before {
        "sessions" if segments.get(at.wrapping_sub(2)) == Some(&"auth") => "auth-sessions",
        "sessions" => "sessions",
        "agents" => "agents",
        "users" => "users",
        "roles" => "roles",
        "role-assignments" => "role-assignments",
        "api-keys" => "api-keys",
        "endpoints" => "endpoints",
        "messages" => "messages",
        "tools" => "tools",
        _ => return None,
    };
    Some(kind)
}

fn fill(path: &str, id: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |e| start + e + 1);
        out.push_str(id);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A problem body without the fields that differ per request.
fn comparable(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("instance");
        map.remove("request_id");
    }
    body
}

impl Probe {
    fn url(&self, host: Host, path: &str) -> String {
        let slug = match host {
            Host::A => &self.config.tenant_a.slug,
            Host::B => &self.config.tenant_b.slug,
        };
        let mut url = self.config.base_url.clone();
        let _ = url.set_host(Some(&format!("{slug}.{}", self.config.base_domain)));
        let base = url.as_str().trim_end_matches('/').to_owned();
        format!("{base}{path}")
    }

    async fn send(
        &self,
        host: Host,
        bearer: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let mut request = self.client.request(method, self.url(host, path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("request to {path}"))?;
        let status = response.status();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    async fn as_a(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let key = self.config.tenant_a.admin_key.clone();
        self.expect_ok(Host::A, &key, method, path, body).await
    }

    async fn as_b(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let key = self.config.tenant_b.admin_key.clone();
        self.expect_ok(Host::B, &key, method, path, body).await
    }

    async fn expect_ok(
        &self,
        host: Host,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, text) = self
            .send(host, Some(key), method.clone(), path, body.as_ref())
            .await?;
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        })
    }

    async fn form(
        &self,
        host: Host,
        basic: Option<(&str, &str)>,
        pairs: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, String)> {
        let mut request = self.client.post(self.url(host, "/oauth/token")).form(pairs);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        let response = request.send().await?;
        let status = response.status();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    async fn document(&self) -> anyhow::Result<Value> {
        if let Some(file) = &self.config.openapi_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            return Ok(serde_json::from_str(&text)?);
        }
        let url = format!(
            "{}/openapi.json",
            self.config.base_url.as_str().trim_end_matches('/')
        );
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .context("GET /openapi.json")?;
        if !response.status().is_success() {
            bail!("GET /openapi.json answered {}", response.status());
        }
        Ok(response.json().await?)
    }

    async fn set_up_victim(&self) -> anyhow::Result<Victim> {
        let mut v = Victim::default();
        let marker = random_marker();
        let tag = &marker[marker.len() - 8..];
        v.secrets.push(marker.clone());
        let keep = |v: &mut Victim, kind: &'static str, value: &Value| -> anyhow::Result<String> {
            let id = value["id"]
                .as_str()
                .or_else(|| value["api_key"]["id"].as_str())
                .ok_or_else(|| anyhow!("no id in the {kind} answer"))?
                .to_owned();
            v.secrets.push(id.clone());
            v.ids.insert(kind, id.clone());
            Ok(id)
        };
        let session = self
            .as_a(
                Method::POST,
                "/v1/sessions",
                Some(json!({ "agent_id": format!("probe-{tag}"), "title": marker, "metadata": { "marker": marker } })),
            )
            .await?;
        let session_id = keep(&mut v, "sessions", &session)?;
        let agent = self
            .as_a(
                Method::POST,
                "/v1/agents",
                Some(json!({ "name": format!("probe-{tag}"), "description": marker })),
            )
            .await?;
        let agent_id = keep(&mut v, "agents", &agent)?;
        let user = self
            .as_a(
                Method::POST,
                "/v1/users",
                Some(json!({ "email": format!("probe-{tag}@probe.invalid"), "password": random_marker() })),
            )
            .await?;
        let user_id = keep(&mut v, "users", &user)?;
        v.secrets.push(format!("probe-{tag}@probe.invalid"));
        let role = self
            .as_a(
                Method::POST,
                "/v1/roles",
                Some(json!({ "name": format!("probe-{tag}"), "description": marker, "permissions": ["sessions:read", "sessions:write"] })),
            )
            .await?;
        let role_id = keep(&mut v, "roles", &role)?;
        let assignment = self
            .as_a(
                Method::POST,
                "/v1/role-assignments",
                Some(json!({ "role_id": role_id, "agent_id": agent_id })),
            )
            .await?;
        keep(&mut v, "role-assignments", &assignment)?;
        let key = self
            .as_a(
                Method::POST,
                "/v1/api-keys",
                Some(json!({ "scopes": ["sessions:read", "sessions:write"], "agent_id": agent_id, "description": marker })),
            )
            .await?;
        v.agent_key_id = keep(&mut v, "api-keys", &key)?;
        v.agent_key = key["key"].as_str().unwrap_or_default().to_owned();
        v.secrets.push(v.agent_key.clone());
        let endpoint = self
            .as_a(
                Method::POST,
                "/v1/webhooks/endpoints",
                Some(json!({ "url": format!("https://hooks-{tag}.example/probe"), "description": marker })),
            )
            .await?;
        keep(&mut v, "endpoints", &endpoint)?;
        let message = self
            .as_a(
                Method::POST,
                "/v1/webhooks/messages",
                Some(json!({ "event_type": "probe.check", "payload": { "marker": marker } })),
            )
            .await?;
        keep(&mut v, "messages", &message)?;
        let tool_name = format!("probe_{tag}");
        self.as_a(
            Method::POST,
            "/v1/tools",
            Some(json!({
                "name": tool_name,
                "description": format!("Looks up the weather. {marker}"),
                "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } },
                "endpoint_url": format!("https://tools-{tag}.example/run"),
            })),
        )
        .await?;
        v.ids.insert("tools", tool_name.clone());
        v.secrets.push(tool_name.clone());
        // Agent refresh tokens on, for a refresh token to attack with (restored at clean-up).
        let policy = self.as_a(Method::GET, "/v1/token-policy", None).await?;
        let mut wanted = policy.clone();
        wanted["agent_refresh_tokens"] = json!(true);
        if self
            .as_a(Method::PUT, "/v1/token-policy", Some(wanted))
            .await
            .is_ok()
        {
            v.token_policy = Some(policy);
        }
        let (status, text) = self
            .form(
                Host::A,
                Some((&v.agent_key_id, &v.agent_key)),
                &[("grant_type", "client_credentials")],
            )
            .await?;
        if !status.is_success() {
            bail!("tenant A's client_credentials grant answered {status}: {text}");
        }
        let issued: Value = serde_json::from_str(&text)?;
        v.access_token = issued["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        v.refresh_token = issued["refresh_token"].as_str().map(str::to_owned);
        if let Some(sid) = issued["session_id"].as_str() {
            v.ids.insert("auth-sessions", sid.to_owned());
            v.secrets.push(sid.to_owned());
        }
        v.secrets.push(v.access_token.clone());
        v.secrets.extend(v.refresh_token.clone());
        let (status, text) = self
            .form(
                Host::A,
                None,
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", &v.access_token),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                    ("audience", "probe-sub-agent"),
                    ("scope", "sessions:read"),
                ],
            )
            .await?;
        if !status.is_success() {
            bail!("tenant A's token exchange answered {status}: {text}");
        }
        let delegated: Value = serde_json::from_str(&text)?;
        v.delegated_token = delegated["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        v.secrets.push(v.delegated_token.clone());
        // Snapshots of what B must not be able to change.
        for (kind, path) in [
            ("sessions", format!("/v1/sessions/{session_id}")),
            ("agents", format!("/v1/agents/{agent_id}")),
            ("users", format!("/v1/users/{user_id}")),
            ("roles", format!("/v1/roles/{role_id}")),
            (
                "endpoints",
                format!("/v1/webhooks/endpoints/{}", v.ids["endpoints"]),
            ),
            ("tools", format!("/v1/tools/{tool_name}")),
            (
                "role-assignments",
                format!("/v1/role-assignments?agent_id={agent_id}"),
            ),
        ] {
            let value = self.as_a(Method::GET, &path, None).await?;
            v.snapshots.push((format!("{kind} {path}"), value));
        }
        Ok(v)
    }

    async fn set_up_attacker(&self) -> anyhow::Result<Attacker> {
        let mut b = Attacker::default();
        let mint = |scopes: Value| json!({ "scopes": scopes, "description": "bulkhead probe" });
        let scopeless = self
            .as_b(
                Method::POST,
                "/v1/api-keys",
                Some(mint(json!(["billing:manage"]))),
            )
            .await?;
        b.out_of_scope_key = scopeless["key"].as_str().unwrap_or_default().to_owned();
        b.made_keys
            .extend(scopeless["api_key"]["id"].as_str().map(str::to_owned));
        let revoked = self
            .as_b(
                Method::POST,
                "/v1/api-keys",
                Some(mint(json!(["sessions:read"]))),
            )
            .await?;
        b.revoked_key = revoked["key"].as_str().unwrap_or_default().to_owned();
        let revoked_id = revoked["api_key"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.as_b(
            Method::POST,
            &format!("/v1/api-keys/{revoked_id}/revoke"),
            Some(json!({})),
        )
        .await?;
        // A key that expires in a second, and one rotated with no grace: both dead by the
        // time the attacks start (the wait below).
        let expiring = self
            .as_b(
                Method::POST,
                "/v1/api-keys",
                Some(json!({
                    "scopes": ["sessions:read"],
                    "description": "bulkhead probe",
                    "expires_at": chrono::Utc::now() + chrono::Duration::seconds(1),
                })),
            )
            .await?;
        b.expired_key = expiring["key"].as_str().unwrap_or_default().to_owned();
        b.made_keys
            .extend(expiring["api_key"]["id"].as_str().map(str::to_owned));
        let rotated = self
            .as_b(
                Method::POST,
                "/v1/api-keys",
                Some(mint(json!(["sessions:read"]))),
            )
            .await?;
        b.after_grace_key = rotated["key"].as_str().unwrap_or_default().to_owned();
        let rotated_id = rotated["api_key"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let successor = self
            .as_b(
                Method::POST,
                &format!("/v1/api-keys/{rotated_id}/rotate"),
                Some(json!({ "grace_seconds": 0 })),
            )
            .await?;
        b.made_keys
            .extend(successor["api_key"]["id"].as_str().map(str::to_owned));
        // `webhooks:manage` without `audit:read` also makes it the key of the `audstrm` attack
        // (minting one more key per run would run into the key-minting budget).
        let client = self
            .as_b(
                Method::POST,
                "/v1/api-keys",
                Some(mint(json!(["sessions:read", "webhooks:manage"]))),
            )
            .await?;
        b.client_key = client["key"].as_str().unwrap_or_default().to_owned();
        b.client_key_id = client["api_key"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        b.made_keys.push(b.client_key_id.clone());
        let (status, text) = self
            .form(
                Host::B,
                Some((&b.client_key_id, &b.client_key)),
                &[("grant_type", "client_credentials")],
            )
            .await?;
        if !status.is_success() {
            bail!("tenant B's client_credentials grant answered {status}: {text}");
        }
        let issued: Value = serde_json::from_str(&text)?;
        b.revoked_token = issued["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let response = self
            .client
            .post(self.url(Host::B, "/oauth/revoke"))
            .basic_auth(&b.client_key_id, Some(&b.client_key))
            .form(&[("token", b.revoked_token.as_str())])
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "tenant B could not revoke its own token: {}",
                response.status()
            );
        }
        // Past the expiring key's expiry (whole seconds, and leeway for clock steps).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        Ok(b)
    }

    fn record(&mut self, op: &str, attack: Attack, verdict: Verdict, detail: String) {
        self.findings.push(Finding {
            operation: op.to_owned(),
            attack,
            verdict,
            detail,
        });
    }

    /// Judges one answer to B: a leak if anything of A's is in it, else refused if the status is
    /// one of `refusals`, else allowed-own for a successful read, else unexpected.
    fn judge(
        &mut self,
        op: &Operation,
        attack: Attack,
        victim: &Victim,
        status: StatusCode,
        text: &str,
        refusals: &[StatusCode],
    ) {
        if let Some(secret) = victim
            .secrets
            .iter()
            .find(|s| !s.is_empty() && text.contains(s.as_str()))
        {
            let shown: String = secret.chars().take(12).collect();
            let detail = format!("{status}; the answer holds A's {shown}…");
            return self.record(&op.name(), attack, Verdict::Leak, detail);
        }
        let verdict = if refusals.contains(&status) {
            Verdict::Refused
        } else if status.is_success() && op.method == Method::GET {
            Verdict::AllowedOwn
        } else if status.is_success() {
            // A write of B's succeeded: B's own data, unless the final comparison finds A's
            // changed; still not what the attack expected.
            Verdict::Unexpected
        } else {
            Verdict::Unexpected
        };
        let detail = format!("{status} (expected one of {refusals:?})");
        self.record(&op.name(), attack, verdict, detail);
    }

    async fn attack(
        &mut self,
        op: &Operation,
        victim: &Victim,
        attacker: &Attacker,
    ) -> anyhow::Result<()> {
        if !op.tenant_api() {
            return Ok(());
        }
        let kind = param_kind(&op.path);
        let a_id = kind.and_then(|k| victim.ids.get(k)).cloned();
        // Credentials that must never authenticate on B's host (or A's).
        let path_any = fill(&op.path, a_id.as_deref().unwrap_or("x"));
        let body = json!({});
        let unauthorized = [StatusCode::UNAUTHORIZED];
        let bad_credentials: Vec<(Attack, Host, Option<String>)> = vec![
            (Attack::NoCredential, Host::B, None),
            (
                Attack::AKeyOnB,
                Host::B,
                Some(self.config.tenant_a.admin_key.clone()),
            ),
            (
                Attack::ATokenOnB,
                Host::B,
                Some(victim.access_token.clone()),
            ),
            (
                Attack::ADelegatedOnB,
                Host::B,
                Some(victim.delegated_token.clone()),
            ),
            (Attack::ARefreshOnB, Host::B, victim.refresh_token.clone()),
            (
                Attack::BKeyOnA,
                Host::A,
                Some(self.config.tenant_b.admin_key.clone()),
            ),
            (
                Attack::RevokedKey,
                Host::B,
                Some(attacker.revoked_key.clone()),
            ),
            (
                Attack::RevokedToken,
                Host::B,
                Some(attacker.revoked_token.clone()),
            ),
            (
                Attack::ExpiredKey,
                Host::B,
                Some(attacker.expired_key.clone()),
            ),
            (
                Attack::AfterGraceKey,
                Host::B,
                Some(attacker.after_grace_key.clone()),
            ),
        ];
        for (attack, host, bearer) in bad_credentials {
            if attack == Attack::ARefreshOnB && bearer.is_none() {
                continue;
            }
            let (status, text) = self
                .send(
                    host,
                    bearer.as_deref(),
                    op.method.clone(),
                    &path_any,
                    Some(&body),
                )
                .await?;
            // B's key on A's host: the answer is about A's tenant, but must say nothing.
            self.judge(op, attack, victim, status, &text, &unauthorized);
        }
        // A credential of B that holds no permission any route needs.
        let (status, text) = self
            .send(
                Host::B,
                Some(&attacker.out_of_scope_key),
                op.method.clone(),
                &path_any,
                Some(&body),
            )
            .await?;
        // 403; 404 for another's resource; 400/422 where the route acts on the caller itself
        // and the credential is not the kind it needs (logout with a key).
        let refusals = [
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::BAD_REQUEST,
            StatusCode::UNPROCESSABLE_ENTITY,
        ];
        self.judge(op, Attack::OutOfScope, victim, status, &text, &refusals);

        let b_key = self.config.tenant_b.admin_key.clone();
        // A's ids in the path: 404, exactly like an id that does not exist.
        if let (Some(kind), Some(a_id)) = (kind, &a_id) {
            let path = fill(&op.path, a_id);
            let (status, text) = self
                .send(Host::B, Some(&b_key), op.method.clone(), &path, Some(&body))
                .await?;
            // 404; or the body's own validation failing first, which says nothing about the id
            // (the comparison with a missing id below checks that).
            let refusals = [
                StatusCode::NOT_FOUND,
                StatusCode::BAD_REQUEST,
                StatusCode::UNPROCESSABLE_ENTITY,
            ];
            self.judge(op, Attack::ForeignIds, victim, status, &text, &refusals);
            if let Some(missing) = fresh_id(kind) {
                let other = fill(&op.path, &missing);
                let (missing_status, missing_text) = self
                    .send(
                        Host::B,
                        Some(&b_key),
                        op.method.clone(),
                        &other,
                        Some(&body),
                    )
                    .await?;
                let same = status == missing_status
                    && comparable(&serde_json::from_str(&text).unwrap_or(Value::Null))
                        == comparable(&serde_json::from_str(&missing_text).unwrap_or(Value::Null));
                let verdict = if same {
                    Verdict::Refused
                } else {
                    Verdict::Leak
                };
                let detail = format!("A's id: {status}, a missing id: {missing_status}");
                self.record(&op.name(), Attack::Indistinguishable, verdict, detail);
            }
        }
        // A's ids in the body, where a body names other resources.
        for body in foreign_bodies(op, victim) {
            let (status, text) = self
                .send(
                    Host::B,
                    Some(&b_key),
                    op.method.clone(),
                    &path_any,
                    Some(&body),
                )
                .await?;
            self.judge(
                op,
                Attack::ForeignIds,
                victim,
                status,
                &text,
                &[StatusCode::NOT_FOUND],
            );
        }
        // List and search filters aimed at A's data.
        if op.method == Method::GET && kind.is_none() && !op.query_params.is_empty() {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for name in &op.query_params {
                if let Some(value) = filter_value(name, victim) {
                    query.append_pair(name, &value);
                }
            }
            let query = query.finish();
            if !query.is_empty() {
                let path = format!("{}?{query}", op.path);
                let (status, text) = self
                    .send(Host::B, Some(&b_key), Method::GET, &path, None)
                    .await?;
                let ok = [
                    StatusCode::OK,
                    StatusCode::BAD_REQUEST,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    StatusCode::NOT_FOUND,
                ];
                self.judge(op, Attack::ListFilters, victim, status, &text, &ok);
            }
        }
        // Webhook endpoints aimed at internal addresses.
        if op.path == "/v1/webhooks/endpoints" && op.method == Method::POST {
            for url in INTERNAL_URLS {
                let body = json!({ "url": url, "description": "bulkhead probe" });
                let (status, text) = self
                    .send(Host::B, Some(&b_key), Method::POST, &op.path, Some(&body))
                    .await?;
                if status.is_success() {
                    // Do not leave it behind.
                    if let Some(id) = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                    {
                        let _ = self
                            .send(
                                Host::B,
                                Some(&b_key),
                                Method::DELETE,
                                &format!("/v1/webhooks/endpoints/{id}"),
                                None,
                            )
                            .await;
                    }
                }
                let before = self.findings.len();
                self.judge(
                    op,
                    Attack::InternalUrls,
                    victim,
                    status,
                    &text,
                    &[StatusCode::UNPROCESSABLE_ENTITY],
                );
                if let Some(f) = self.findings.get_mut(before) {
                    f.detail = format!("{url}: {}", f.detail);
                }
            }
        }
        Ok(())
    }

    /// Introspection, revocation, refresh and exchange of A's tokens by B's client.
    async fn foreign_tokens(&mut self, victim: &Victim, attacker: &Attacker) -> anyhow::Result<()> {
        let b_client = (
            attacker.client_key_id.as_str(),
            attacker.client_key.as_str(),
        );
        let op = Operation {
            method: Method::POST,
            path: "/oauth/introspect".into(),
            public: true,
            query_params: Vec::new(),
        };
        let response = self
            .client
            .post(self.url(Host::B, "/oauth/introspect"))
            .basic_auth(b_client.0, Some(b_client.1))
            .form(&[("token", victim.access_token.as_str())])
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let inactive = serde_json::from_str::<Value>(&text)
            .ok()
            .is_some_and(|v| v == json!({ "active": false }));
        if inactive {
            self.judge(
                &op,
                Attack::ForeignTokens,
                victim,
                status,
                &text,
                &[StatusCode::OK],
            );
        } else {
            self.record(
                &op.name(),
                Attack::ForeignTokens,
                Verdict::Leak,
                format!("{status}: {text}"),
            );
        }

        // Revocation by B must not touch A's token (RFC 7009 answers 200 either way).
        let response = self
            .client
            .post(self.url(Host::B, "/oauth/revoke"))
            .basic_auth(b_client.0, Some(b_client.1))
            .form(&[("token", victim.access_token.as_str())])
            .send()
            .await?;
        let revoke_status = response.status();
        let (still, _) = self
            .send(
                Host::A,
                Some(&victim.access_token),
                Method::GET,
                "/v1/sessions",
                None,
            )
            .await?;
        let verdict = if still == StatusCode::OK {
            Verdict::Refused
        } else {
            Verdict::Leak
        };
        self.record(
            "POST /oauth/revoke",
            Attack::ForeignTokens,
            verdict,
            format!("revoke {revoke_status}; A's token afterwards {still}"),
        );

        let token_op = Operation {
            method: Method::POST,
            path: "/oauth/token".into(),
            public: true,
            query_params: Vec::new(),
        };
        if let Some(refresh) = &victim.refresh_token {
            let (status, text) = self
                .form(
                    Host::B,
                    Some(b_client),
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh.as_str()),
                    ],
                )
                .await?;
            self.judge(
                &token_op,
                Attack::ForeignTokens,
                victim,
                status,
                &text,
                &[StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED],
            );
        }
        let (status, text) = self
            .form(
                Host::B,
                Some(b_client),
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", &victim.access_token),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                ],
            )
            .await?;
        self.judge(
            &token_op,
            Attack::ForeignTokens,
            victim,
            status,
            &text,
            &[StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED],
        );
        Ok(())
    }

    /// A token of B's own, delegated and confined to `probe-in`, holding every permission (issue
    /// 27 item 4): every creating or changing operation is refused (403), or at least not done;
    /// every list either refuses (403) or shows nothing outside the prefix (B's session in
    /// `probe-out`, whose creation the audit log also names).
    async fn confined_token(&mut self, operations: &[Operation]) -> anyhow::Result<()> {
        let admin_key = self.config.tenant_b.admin_key.clone();
        let (status, text) = self
            .form(
                Host::B,
                None,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_secret", &admin_key),
                ],
            )
            .await?;
        if !status.is_success() {
            bail!("tenant B's client_credentials grant answered {status}: {text}");
        }
        let root: Value = serde_json::from_str(&text)?;
        let root = root["access_token"].as_str().unwrap_or_default().to_owned();
        let (status, text) = self
            .form(
                Host::B,
                None,
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", &root),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                    ("audience", "probe-confined"),
                    ("resource_prefix", "probe-in"),
                ],
            )
            .await?;
        if !status.is_success() {
            bail!("tenant B's confined token exchange answered {status}: {text}");
        }
        let confined: Value = serde_json::from_str(&text)?;
        let confined = confined["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // What the confined token must never see: a session of B outside its prefix.
        let marker = random_marker();
        let outside = self
            .as_b(
                Method::POST,
                "/v1/sessions",
                Some(json!({ "agent_id": "probe-outside", "namespace": "probe-out", "title": marker })),
            )
            .await?;
        let outside_id = outside["id"].as_str().unwrap_or_default().to_owned();
        let fence = Victim {
            secrets: vec![outside_id.clone(), marker],
            ..Victim::default()
        };
        let tag = &random_marker()[13..21];
        for op in operations.iter().filter(|op| op.tenant_api()) {
            let listing = op.method == Method::GET && !op.path.contains('{');
            if op.method == Method::GET && !listing {
                continue;
            }
            // Ending its own session is always allowed (and would end the subject's).
            if op.path == "/v1/auth/logout" {
                continue;
            }
            let path = fill(&op.path, "x");
            let body = if listing {
                None
            } else if op.method == Method::PUT {
                // The current value: refusing it is the route's declaration, not validation.
                Some(
                    self.as_b(Method::GET, &op.path, None)
                        .await
                        .unwrap_or_else(|_| json!({})),
                )
            } else {
                Some(confined_body(op, tag))
            };
            let (status, text) = self
                .send(
                    Host::B,
                    Some(&confined),
                    op.method.clone(),
                    &path,
                    body.as_ref(),
                )
                .await?;
            // A write answered 429 (the tenant's key-minting budget, spent by the probe's own
            // set-up) did nothing either.
            let refusals: &[StatusCode] = if listing {
                &[StatusCode::FORBIDDEN]
            } else {
                &[
                    StatusCode::FORBIDDEN,
                    StatusCode::NOT_FOUND,
                    StatusCode::BAD_REQUEST,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    StatusCode::TOO_MANY_REQUESTS,
                ]
            };
            self.judge(op, Attack::ConfinedToken, &fence, status, &text, refusals);
        }
        let _ = self
            .as_b(Method::DELETE, &format!("/v1/sessions/{outside_id}"), None)
            .await;
        Ok(())
    }

    /// Issue 17, item 2: the audit stream is the audit log, so a key holding `webhooks:manage`
    /// without `audit:read` must not subscribe an endpoint to `audit.event`, neither at creation
    /// nor by a patch. It uses B's client key (`sessions:read`, `webhooks:manage`) and removes
    /// the endpoints it made.
    async fn audit_stream_scope(&mut self, attacker: &Attacker) -> anyhow::Result<()> {
        let key = attacker.client_key.clone();
        let marker = random_marker();
        let tag = &marker[marker.len() - 8..];
        let url = format!("https://siem-{tag}.example/in");
        let mut made = Vec::new();
        // Create with the stream: refused.
        let op = "POST /v1/webhooks/endpoints (audit.event)";
        let body = json!({ "url": url, "event_types": ["audit.event"] });
        let (status, text) = self
            .send(
                Host::B,
                Some(&key),
                Method::POST,
                "/v1/webhooks/endpoints",
                Some(&body),
            )
            .await?;
        if status.is_success() {
            made.extend(
                serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned)),
            );
        }
        self.record_stream(op, status);
        // Create without it, then patch it in: refused.
        let body = json!({ "url": url, "event_types": ["probe.plain"] });
        let (status, text) = self
            .send(
                Host::B,
                Some(&key),
                Method::POST,
                "/v1/webhooks/endpoints",
                Some(&body),
            )
            .await?;
        let plain = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned));
        match (status.is_success(), plain) {
            (true, Some(id)) => {
                let path = format!("/v1/webhooks/endpoints/{id}");
                let patch = json!({ "event_types": ["probe.plain", "audit.event"] });
                let (status, _) = self
                    .send(Host::B, Some(&key), Method::PATCH, &path, Some(&patch))
                    .await?;
                self.record_stream("PATCH /v1/webhooks/endpoints/{id} (audit.event)", status);
                made.push(id);
            }
            _ => self.record(
                "PATCH /v1/webhooks/endpoints/{id} (audit.event)",
                Attack::AuditStream,
                Verdict::Unexpected,
                format!("could not create a plain endpoint to patch: {status}"),
            ),
        }
        for id in made {
            let _ = self
                .as_b(
                    Method::DELETE,
                    &format!("/v1/webhooks/endpoints/{id}"),
                    None,
                )
                .await;
        }
        Ok(())
    }

    fn record_stream(&mut self, op: &str, status: StatusCode) {
        let verdict = if status == StatusCode::FORBIDDEN {
            Verdict::Refused
        } else if status.is_success() {
            // The key could now read the whole audit log through its endpoint.
            Verdict::Leak
        } else {
            Verdict::Unexpected
        };
        self.record(
            op,
            Attack::AuditStream,
            verdict,
            format!("{status} (expected 403)"),
        );
    }

    /// Issue 17, item 3: a tenant must not publish in a platform namespace, and a message it
    /// publishes must say `"source": "tenant"` in its body whatever its payload claims.
    async fn forged_platform_events(&mut self) -> anyhow::Result<()> {
        let key = self.config.tenant_b.admin_key.clone();
        let op = "POST /v1/webhooks/messages (platform namespace)";
        for event_type in [
            "audit.event",
            "audit",
            "tool.call",
            "security.refresh_token_reuse",
            "endpoint.disabled",
            "webhook.test",
        ] {
            let body =
                json!({ "event_type": event_type, "payload": { "actor_id": "user_forged" } });
            let (status, _) = self
                .send(
                    Host::B,
                    Some(&key),
                    Method::POST,
                    "/v1/webhooks/messages",
                    Some(&body),
                )
                .await?;
            let verdict = if status == StatusCode::UNPROCESSABLE_ENTITY {
                Verdict::Refused
            } else if status.is_success() {
                Verdict::Leak
            } else {
                Verdict::Unexpected
            };
            self.record(
                op,
                Attack::ForgedEvents,
                verdict,
                format!("{event_type}: {status} (expected 422)"),
            );
        }
        // A payload dressed as a platform body stays the tenant's data.
        let op = "POST /v1/webhooks/messages (dressed as platform)";
        let forged = json!({ "type": "audit.event", "source": "platform", "data": {} });
        let body = json!({ "event_type": "probe.forge", "payload": forged });
        let (status, text) = self
            .send(
                Host::B,
                Some(&key),
                Method::POST,
                "/v1/webhooks/messages",
                Some(&body),
            )
            .await?;
        let id = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned));
        let Some(id) = id.filter(|_| status.is_success()) else {
            self.record(
                op,
                Attack::ForgedEvents,
                Verdict::Unexpected,
                format!("publishing an ordinary type answered {status}"),
            );
            return Ok(());
        };
        let message = self
            .as_b(Method::GET, &format!("/v1/webhooks/messages/{id}"), None)
            .await?;
        let sent = &message["message"]["payload"];
        let (verdict, detail) = if sent["type"] == "probe.forge"
            && sent["source"] == "tenant"
            && sent["data"] == forged
        {
            (Verdict::Refused, "the body says source tenant".to_owned())
        } else {
            (Verdict::Leak, format!("the body sent is {sent}"))
        };
        self.record(op, Attack::ForgedEvents, verdict, detail);
        Ok(())
    }

    /// Issue 17, item 7: a request whose absolute-form target names one tenant while `Host` names
    /// the other must be refused (400) on the API, OAuth and login paths alike. Written on a raw
    /// connection to the base URL's address (an HTTP client writes the target itself); an
    /// `https` base URL is not attacked this way (recorded as unexpected, so it is seen).
    async fn host_mismatch(&mut self, victim: &Victim) -> anyhow::Result<()> {
        if self.config.base_url.scheme() != "http" {
            self.record(
                "absolute-form targets",
                Attack::HostMismatch,
                Verdict::Unexpected,
                "not attacked: the base URL is not http".into(),
            );
            return Ok(());
        }
        let addr = self
            .config
            .base_url
            .socket_addrs(|| Some(80))?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("base URL has no address"))?;
        let port = addr.port();
        let host_of = |slug: &str| format!("{slug}.{}:{port}", self.config.base_domain);
        let (a_host, b_host) = (
            host_of(&self.config.tenant_a.slug),
            host_of(&self.config.tenant_b.slug),
        );
        let b_key = self.config.tenant_b.admin_key.clone();
        let cases = [
            ("GET", "/v1/sessions", a_host.clone(), b_host.clone(), ""),
            ("GET", "/v1/sessions", b_host.clone(), a_host.clone(), ""),
            (
                "POST",
                "/oauth/token",
                a_host.clone(),
                b_host.clone(),
                "grant_type=client_credentials",
            ),
            (
                "POST",
                "/v1/auth/login",
                a_host.clone(),
                b_host.clone(),
                r#"{"email":"probe@probe.invalid","password":"probe"}"#,
            ),
        ];
        for (method, path, target_host, header_host, body) in cases {
            let content_type = if path.starts_with("/oauth") {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            };
            let request = format!(
                "{method} http://{target_host}{path} HTTP/1.1\r\nHost: {header_host}\r\nAuthorization: Bearer {b_key}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let (status, text) = raw_exchange(addr, &request).await?;
            let op = format!("{method} {path} (target {target_host}, Host {header_host})");
            let leaked = victim
                .secrets
                .iter()
                .any(|s| !s.is_empty() && text.contains(s.as_str()));
            let verdict = if leaked || (200..300).contains(&status) {
                Verdict::Leak
            } else if status == 400 {
                Verdict::Refused
            } else {
                Verdict::Unexpected
            };
            self.record(
                &op,
                Attack::HostMismatch,
                verdict,
                format!("{status} (expected 400)"),
            );
        }
        Ok(())
    }

    /// Issue 28: B is a slow neighbour. First a slow-loris burst ([`SLOW_LORIS_CONNECTIONS`]
    /// connections to the base URL's address that send half a request head and stop), then a
    /// hashing burst (B creates users with fresh emails from [`HASHING_TASKS`] tasks at once,
    /// each costing an argon2id hash), each for [`SLOW_NEIGHBOUR_SECONDS`]. Meanwhile A lists
    /// its sessions every 50 ms: every answer must be a 200 naming A's session, within
    /// [`SLOW_NEIGHBOUR_BOUND`]. B's own answers may be refusals (429, 503 with `Retry-After`)
    /// but never another 5xx. The users B made are disabled after.
    async fn slow_neighbour(&mut self, victim: &Victim) -> anyhow::Result<()> {
        let addr = self
            .config
            .base_url
            .socket_addrs(|| {
                Some(if self.config.base_url.scheme() == "https" {
                    443
                } else {
                    80
                })
            })?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("base URL has no address"))?;
        let session = victim.ids.get("sessions").cloned().unwrap_or_default();
        let b_host = format!("{}.{}", self.config.tenant_b.slug, self.config.base_domain);

        // Slow-loris burst: the connections are held until the burst ends (dropped then).
        let loris = async {
            let mut held = Vec::new();
            let head = format!("GET /v1/sessions HTTP/1.1\r\nHost: {b_host}\r\n");
            for _ in 0..SLOW_LORIS_CONNECTIONS {
                let connect = tokio::net::TcpStream::connect(addr);
                if let Ok(Ok(mut stream)) =
                    tokio::time::timeout(Duration::from_secs(2), connect).await
                {
                    use tokio::io::AsyncWriteExt;
                    if self.config.base_url.scheme() == "http" {
                        let _ = stream.write_all(head.as_bytes()).await;
                    }
                    held.push(stream);
                }
            }
            let opened = held.len();
            tokio::time::sleep(SLOW_NEIGHBOUR_SECONDS).await;
            drop(held);
            format!("{opened} of {SLOW_LORIS_CONNECTIONS} half-sent connections held")
        };
        let (checked, held) = tokio::join!(self.victim_checks(&session), loris);
        self.record_neighbour(
            &format!("slow neighbour: slow-loris burst ({SLOW_LORIS_CONNECTIONS} connections)"),
            checked?,
            held,
            true,
        );

        // Hashing burst: B creates users with fresh emails, each a full argon2id hash.
        let marker = random_marker();
        let tag = &marker[marker.len() - 8..];
        let b_key = self.config.tenant_b.admin_key.clone();
        let password = format!("probe password {marker}");
        let this = &*self;
        let hashing = async {
            let deadline = tokio::time::Instant::now() + SLOW_NEIGHBOUR_SECONDS;
            let tasks = (0..HASHING_TASKS).map(|t| {
                let (b_key, password) = (b_key.clone(), password.clone());
                async move {
                    let mut seen = Vec::new();
                    let mut n = 0;
                    while tokio::time::Instant::now() < deadline {
                        let body = json!({
                            "email": format!("probe-hash-{tag}-{t}-{n}@probe.invalid"),
                            "password": password,
                        });
                        n += 1;
                        match this
                            .send(
                                Host::B,
                                Some(&b_key),
                                Method::POST,
                                "/v1/users",
                                Some(&body),
                            )
                            .await
                        {
                            Ok((status, text)) => {
                                let id = serde_json::from_str::<Value>(&text)
                                    .ok()
                                    .and_then(|v| v["id"].as_str().map(str::to_owned));
                                seen.push((status, id));
                                if status == StatusCode::SERVICE_UNAVAILABLE
                                    || status == StatusCode::TOO_MANY_REQUESTS
                                {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            }
                            Err(_) => seen.push((StatusCode::BAD_GATEWAY, None)),
                        }
                    }
                    seen
                }
            });
            futures::future::join_all(tasks).await.concat()
        };
        let (checked, seen) = tokio::join!(this.victim_checks(&session), hashing);
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        for (status, _) in &seen {
            *statuses.entry(status.as_u16()).or_default() += 1;
        }
        let b_ok = seen.iter().all(|(status, _)| {
            !status.is_server_error() || *status == StatusCode::SERVICE_UNAVAILABLE
        });
        self.record_neighbour(
            &format!("slow neighbour: hashing burst (B creates users, {HASHING_TASKS} at once)"),
            checked?,
            format!("B's answers {statuses:?}"),
            b_ok,
        );
        for id in seen.iter().filter_map(|(_, id)| id.as_deref()) {
            let _ = self
                .send(
                    Host::B,
                    Some(&b_key),
                    Method::PATCH,
                    &format!("/v1/users/{id}"),
                    Some(&json!({ "status": "disabled" })),
                )
                .await;
        }
        Ok(())
    }

    /// A lists its sessions every 50 ms for [`SLOW_NEIGHBOUR_SECONDS`]: how many answers, how many
    /// were a 200 naming `session` within the bound, and the slowest.
    async fn victim_checks(&self, session: &str) -> anyhow::Result<NeighbourChecks> {
        let a_key = self.config.tenant_a.admin_key.clone();
        let deadline = tokio::time::Instant::now() + SLOW_NEIGHBOUR_SECONDS;
        let mut out = NeighbourChecks::default();
        while tokio::time::Instant::now() < deadline {
            let started = tokio::time::Instant::now();
            let answer = tokio::time::timeout(
                SLOW_NEIGHBOUR_BOUND,
                self.send(Host::A, Some(&a_key), Method::GET, "/v1/sessions", None),
            )
            .await;
            let took = started.elapsed();
            out.answers += 1;
            out.slowest = out.slowest.max(took);
            match answer {
                Ok(Ok((StatusCode::OK, text))) if text.contains(session) => out.good += 1,
                Ok(Ok((status, _))) => out.wrong.push(status.to_string()),
                Ok(Err(e)) => out.wrong.push(format!("error: {e}")),
                Err(_) => out
                    .wrong
                    .push(format!("no answer within {SLOW_NEIGHBOUR_BOUND:?}")),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(out)
    }

    fn record_neighbour(
        &mut self,
        op: &str,
        checks: NeighbourChecks,
        attacker: String,
        b_ok: bool,
    ) {
        let passed = checks.answers > 0 && checks.good == checks.answers && b_ok;
        let detail = format!(
            "A: {} of {} answers a correct 200 within {SLOW_NEIGHBOUR_BOUND:?} (slowest {} ms){}; {attacker}",
            checks.good,
            checks.answers,
            checks.slowest.as_millis(),
            if checks.wrong.is_empty() {
                String::new()
            } else {
                format!(", others: {:?}", &checks.wrong[..checks.wrong.len().min(5)])
            },
        );
        let verdict = if passed {
            Verdict::Refused
        } else {
            Verdict::Unexpected
        };
        self.record(op, Attack::SlowNeighbour, verdict, detail);
    }

    /// A's resources must be exactly as they were.
    /// Issues 26 and 27: B registers each hostile case of the schema corpus (cycles, fan-out,
    /// deep nesting, huge enums, slow patterns with ~900 KB inputs, remote refs) and, where
    /// registration accepts it, calls it, while A lists its tools at the same time. B must be
    /// refused (422) at registration or at the call, and A answered (200), every time. The
    /// endpoint URL is never reached: a refused input sends nothing.
    async fn hostile_schemas(&mut self) -> anyhow::Result<()> {
        use bulkhead_schema::corpus::{self, Expect};
        let b_key = self.config.tenant_b.admin_key.clone();
        let a_key = self.config.tenant_a.admin_key.clone();
        for case in corpus::all() {
            if case.expect == Expect::Accepted {
                continue;
            }
            let name: String = format!("probe-{}", case.name.replace('_', "-"))
                .chars()
                .take(64)
                .collect();
            let create = json!({
                "name": name,
                "description": "Probe: hostile input schema.",
                "input_schema": case.schema,
                "endpoint_url": "https://tool.probe.example/run",
            });
            let call = json!({ "input": case.input });
            let b = async {
                let (status, text) = self
                    .send(
                        Host::B,
                        Some(&b_key),
                        Method::POST,
                        "/v1/tools",
                        Some(&create),
                    )
                    .await?;
                if status != StatusCode::CREATED {
                    return anyhow::Ok((status, None, text));
                }
                let path = format!("/v1/tools/{name}/calls");
                let called = self
                    .send(Host::B, Some(&b_key), Method::POST, &path, Some(&call))
                    .await;
                let _ = self
                    .send(
                        Host::B,
                        Some(&b_key),
                        Method::DELETE,
                        &format!("/v1/tools/{name}"),
                        None,
                    )
                    .await;
                let (called, text) = called?;
                Ok((status, Some(called), text))
            };
            let a = self.send(Host::A, Some(&a_key), Method::GET, "/v1/tools", None);
            let (b, a) = tokio::join!(b, a);
            let (a_status, _) = a?;
            let (created, called, text) = b?;
            let refused = match called {
                None => created == StatusCode::UNPROCESSABLE_ENTITY,
                Some(called) => called == StatusCode::UNPROCESSABLE_ENTITY,
            };
            let verdict = if refused && a_status == StatusCode::OK {
                Verdict::Refused
            } else {
                Verdict::Unexpected
            };
            let detail = format!(
                "B registration {created}, B call {}, A {a_status}: {}",
                called.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                text.chars().take(200).collect::<String>()
            );
            self.record(
                &format!("POST /v1/tools (schema {})", case.name),
                Attack::HostileSchema,
                verdict,
                detail,
            );
        }
        Ok(())
    }

    async fn check_unchanged(&mut self, victim: &Victim) -> anyhow::Result<()> {
        for (what, before) in &victim.snapshots {
            let path = what.split_once(' ').map_or(what.as_str(), |(_, p)| p);
            let key = self.config.tenant_a.admin_key.clone();
            let (status, text) = self
                .send(Host::A, Some(&key), Method::GET, path, None)
                .await?;
            let now: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let (verdict, detail) = if !status.is_success() {
                (Verdict::Leak, format!("gone: {status}"))
            } else if &now != before {
                (
                    Verdict::Leak,
                    format!("changed: before {before}, after {now}"),
                )
            } else {
                (Verdict::Refused, "unchanged".to_owned())
            };
            self.record(
                &format!("A's data: {what}"),
                Attack::ForeignIds,
                verdict,
                detail,
            );
        }
        Ok(())
    }

    async fn clean_up(&mut self, victim: &mut Victim, attacker: &Attacker) {
        let a = |path: String| (Method::DELETE, path);
        let ids = &victim.ids;
        let mut steps = Vec::new();
        if let Some(id) = ids.get("role-assignments") {
            steps.push(a(format!("/v1/role-assignments/{id}")));
        }
        if let Some(id) = ids.get("roles") {
            steps.push(a(format!("/v1/roles/{id}")));
        }
        if let Some(id) = ids.get("sessions") {
            steps.push(a(format!("/v1/sessions/{id}")));
        }
        if let Some(id) = ids.get("endpoints") {
            steps.push(a(format!("/v1/webhooks/endpoints/{id}")));
        }
        if let Some(name) = ids.get("tools") {
            steps.push(a(format!("/v1/tools/{name}")));
        }
        for (method, path) in steps {
            let _ = self.as_a(method, &path, None).await;
        }
        if let Some(id) = ids.get("api-keys") {
            let _ = self
                .as_a(
                    Method::POST,
                    &format!("/v1/api-keys/{id}/revoke"),
                    Some(json!({})),
                )
                .await;
        }
        if let Some(id) = ids.get("agents") {
            let _ = self
                .as_a(
                    Method::PATCH,
                    &format!("/v1/agents/{id}"),
                    Some(json!({ "status": "disabled" })),
                )
                .await;
        }
        if let Some(id) = ids.get("users") {
            let _ = self
                .as_a(
                    Method::PATCH,
                    &format!("/v1/users/{id}"),
                    Some(json!({ "status": "disabled" })),
                )
                .await;
        }
        if let Some(policy) = victim.token_policy.take() {
            let _ = self
                .as_a(Method::PUT, "/v1/token-policy", Some(policy))
                .await;
        }
        for id in &attacker.made_keys {
            let _ = self
                .as_b(
                    Method::POST,
                    &format!("/v1/api-keys/{id}/revoke"),
                    Some(json!({})),
                )
                .await;
        }
    }
}

/// Half-sent connections of the slow-loris burst: well below the server's default cap per
/// address (256), so that the probe's own requests from the same address still connect.
const SLOW_LORIS_CONNECTIONS: usize = 200;
/// Tasks of the hashing burst.
const HASHING_TASKS: usize = 8;
/// Length of each slow-neighbour burst.
const SLOW_NEIGHBOUR_SECONDS: Duration = Duration::from_secs(3);
/// Each of A's answers during a burst must arrive within this (generous: CI runs a debug build
/// on shared runners; an unprotected server takes the 10 s header timeout or never answers).
const SLOW_NEIGHBOUR_BOUND: Duration = Duration::from_secs(2);

/// What A saw during one slow-neighbour burst.
#[derive(Debug, Default)]
struct NeighbourChecks {
    answers: usize,
    good: usize,
    slowest: Duration,
    wrong: Vec<String>,
}

/// One HTTP/1.1 exchange on a fresh connection to `addr` (the base URL's own address): the
/// status code and the whole answer, read until the server closes (at most 64 KiB, 10 s).
async fn raw_exchange(addr: SocketAddr, request: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("raw request timed out")??;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

/// Addresses a webhook endpoint must never be allowed to point at.
const INTERNAL_URLS: [&str; 8] = [
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/hook",
    "https://localhost/hook",
    "https://2130706433/hook",
    "https://0x7f.0.0.1/hook",
    "http://hooks.example/plain-http",
];

/// A body the creating operation would accept from an unconfined credential, so that only the
/// confinement can refuse it (B's own tenant; `tag` keeps names unique).
fn confined_body(op: &Operation, tag: &str) -> Value {
    match op.path.as_str() {
        "/v1/sessions" => json!({ "agent_id": "probe-confined", "namespace": "probe-out" }),
        "/v1/webhooks/endpoints" => {
            json!({ "url": format!("https://hooks-{tag}.example/confined"), "event_types": ["session.*"] })
        }
        "/v1/webhooks/messages" => json!({ "event_type": "probe.check", "payload": {} }),
        "/v1/tools" => json!({
            "name": format!("probe_confined_{tag}"),
            "description": "bulkhead probe",
            "input_schema": { "type": "object" },
            "endpoint_url": format!("https://tools-{tag}.example/run"),
        }),
        "/v1/users" => json!({
            "email": format!("probe-confined-{tag}@probe.invalid"),
            "password": random_marker(),
        }),
        "/v1/agents" => json!({ "name": format!("probe-confined-{tag}") }),
        "/v1/roles" => {
            json!({ "name": format!("probe-confined-{tag}"), "permissions": ["sessions:read"] })
        }
        "/v1/api-keys" => json!({ "scopes": ["sessions:read"], "description": "bulkhead probe" }),
        _ => json!({}),
    }
}

/// Bodies that name A's resources, for operations whose body references other resources.
fn foreign_bodies(op: &Operation, v: &Victim) -> Vec<Value> {
    let id = |kind: &str| v.ids.get(kind).cloned().unwrap_or_default();
    match (op.method.as_str(), op.path.as_str()) {
        ("POST", "/v1/role-assignments") => vec![
            json!({ "role_id": id("roles"), "agent_id": id("agents") }),
            json!({ "role": "viewer", "agent_id": id("agents") }),
            json!({ "role": "viewer", "user_id": id("users") }),
        ],
        ("POST", "/v1/api-keys") => {
            vec![json!({ "scopes": ["sessions:read"], "agent_id": id("agents") })]
        }
        ("POST", "/v1/agents") => {
            vec![json!({ "name": "probe-stray", "owner_user_id": id("users") })]
        }
        _ => Vec::new(),
    }
}

/// The value of A's to put in a list filter of this name.
fn filter_value(name: &str, v: &Victim) -> Option<String> {
    let id = |kind: &str| v.ids.get(kind).cloned();
    match name {
        "agent_id" => id("agents"),
        "user_id" => id("users"),
        "role_id" => id("roles"),
        "resource_id" | "event_id" => id("sessions"),
        "actor_id" => Some(v.agent_key_id.clone()),
        "principal" => id("agents").map(|_| "tenant-admin".to_owned()),
        _ => None,
    }
}
