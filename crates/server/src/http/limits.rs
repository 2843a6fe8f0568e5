//! Rate limiting in the request pipeline: where the limits are configured (one place, here),
//! and the two middlewares that apply them.
//!
//! - [`preauth_limit`] runs before authentication, keyed by the client address: it bounds the
//!   work (one key lookup each) that unauthenticated traffic can cause, such as a flood of
//!   checksum-valid random keys. It is charged only for requests that do not authenticate
//!   (missing or failed credentials: a 4xx answer with no authenticated tenant), because many
//!   tenants share egress addresses (NAT, corporate proxies, an agent runtime): one tenant's
//!   authenticated flood is that tenant's budget, never its neighbours' on the same address.
//!   Once an address has spent the budget, every request from it is refused before any lookup
//!   (429 naming the level `address`) until the budget has room again.
//! - [`tenant_limit`] runs after authentication and before any database work, with all four
//!   levels (global, tenant by plan, agent/key, endpoint class with its cost), all or nothing.
//!
//! Every response under `/v1` carries `RateLimit-Policy` and `RateLimit` headers (IETF httpapi
//! draft) for the most constraining level; a rejection is a 429 problem naming the level, with
//! `Retry-After`. With Redis configured (`REDIS_URL`) several processes share the budgets; if
//! Redis is unreachable the configured fallback applies (local by default, or deny: then 503).

use std::net::IpAddr;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bulkhead_core::{Actor, TenantContext, TenantId};
use bulkhead_ratelimit::{header_values, Decision, Level, LevelState, Plan, Source};
use bulkhead_store::placement::registry;

use crate::config::limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::http::error::ApiError;
use crate::http::state::AppState;

use crate::service::audit_line::AuditLine;
use crate::service::rate_limits::RateLimits;

/// What sets a tenant's budget, read with its registry record and put beside the context by
/// resolution: its plan and its own override (migration 0038), if an operator gave it one.
#[derive(Debug, Clone, Copy)]
pub struct TenantPlan {
    /// Its plan.
    pub plan: registry::Plan,
    /// Its own request budget, replacing the plan's at the tenant level.
    pub rate_limit: Option<registry::RateLimitOverride>,
}

impl TenantPlan {
    /// `tenant`'s.
    pub fn of(tenant: &registry::Tenant) -> Self {
        Self {
            plan: tenant.plan,
            rate_limit: tenant.rate_limit,
        }
    }

    /// A request of `class` by `tenant` to the limiter, under this budget.
    pub(crate) fn request(self, tenant: TenantId, class: &str) -> bulkhead_ratelimit::Request<'_> {
        let request = bulkhead_ratelimit::Request::new(tenant, limiter_plan(self.plan), class);
        match self.rate_limit {
            // Both values are at least 1 (checked by `RateLimitOverride::new` and the column).
            Some(own) => request.with_tenant_quota(
                bulkhead_ratelimit::Quota::per_minute(own.requests_per_minute)
                    .with_burst(own.burst),
            ),
            None => request,
        }
    }
}

pub(crate) fn limiter_plan(plan: registry::Plan) -> Plan {
    match plan {
        registry::Plan::Free => Plan::Free,
        registry::Plan::Standard => Plan::Standard,
        registry::Plan::Enterprise => Plan::Enterprise,
    }
}

/// Which endpoint class a route belongs to (its cost and own budget).
fn endpoint_class(method: &http::Method, route: &str) -> &'static str {
    match (method.as_str(), route) {
        ("POST", "/v1/api-keys") | ("POST", "/v1/api-keys/{id}/rotate") => "key_create",
        _ => bulkhead_ratelimit::DEFAULT_CLASS,
    }
}

/// The pre-authentication limiter keys on the client address's bucket (IPv6 per /64, see
/// `bulkhead_core::net::address_bucket`). The GCRA engine is keyed by tenant id, so the bucket is
/// mapped to a stable, non-tenant id (UUIDv5 in a namespace of its own); these ids never reach
/// the database.
pub(crate) fn address_key(ip: IpAddr) -> TenantId {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6b5e_0f5c_9d1e_4c3b_8a7e_1f2d_3c4b_5a69);
    let octets = match bulkhead_core::net::address_bucket(ip) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    TenantId::from_uuid(uuid::Uuid::new_v5(&NAMESPACE, &octets))
}

fn rejection(decision: &Decision) -> Response {
    let mut response = match (decision.source, decision.rejected_by) {
        (Source::Unavailable, _) => ApiError::Unavailable.into_response(),
        (_, level) => {
            ApiError::RateLimited(level.map_or("deployment", |l| l.as_str())).into_response()
        }
    };
    add_headers(&mut response, decision);
    response
}

fn add_headers(response: &mut Response, decision: &Decision) {
    for (name, value) in header_values(decision) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
}

/// Put on the response of a request that authenticated ([`tenant_limit`] runs only after
/// resolution succeeded): such requests are not charged to the per-address budget.
#[derive(Debug, Clone, Copy)]
struct Authenticated;

/// How long until a level with `state` after an allowed charge has room for one more unit.
fn until_one_unit(state: &LevelState) -> std::time::Duration {
    let rested_after_one = state
        .quota
        .emission_interval()
        .saturating_mul(state.quota.burst().saturating_sub(1));
    state
        .reset
        .saturating_sub(rested_after_one)
        .max(std::time::Duration::from_millis(1))
}

/// The 429 for an address whose budget is spent, for `wait` more.
fn address_refusal(limits: &RateLimits, wait: std::time::Duration) -> Response {
    let quota = limits.preauth.config().plans.get(&Plan::Standard).copied();
    let decision = Decision {
        allowed: false,
        rejected_by: Some(Level::Address),
        retry_after: Some(wait),
        limiting: quota.map(|quota| LevelState {
            level: Level::Address,
            quota,
            remaining: 0,
            reset: wait,
        }),
        source: Source::Backend,
    };
    rejection(&decision)
}

/// Before authentication: one budget per client address, charged only for requests that end
/// without authenticating (see the module documentation).
pub async fn preauth_limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(limits) = state.rate_limits() else {
        return next.run(request).await;
    };
    // An unknown address (malformed chain) shares one budget rather than escaping limits.
    let ip =
        crate::service::credentials::request_client_ip(&request, &state.config().trusted_proxies)
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let key = address_key(ip);
    let now = limits.clock.now();
    if let Some(until) = limits.blocked.get(&key) {
        match (until - now).to_std() {
            Ok(wait) if !wait.is_zero() => {
                tracing::warn!(target: "bulkhead::audit", action = "ratelimit.preauth", outcome = "blocked", client_ip = %ip, level = "address", "pre-authentication limit reached");
                metrics::counter!("bulkhead_ratelimit_rejections_total", "level" => "address")
                    .increment(1);
                return address_refusal(limits, wait);
            }
            _ => limits.blocked.invalidate(&key),
        }
    }
    let response = next.run(request).await;
    if response.extensions().get::<Authenticated>().is_some()
        || !response.status().is_client_error()
    {
        return response;
    }
    // Missing or failed authentication (or a request refused before it): charged. Once the
    // budget has no room, the address is refused before any lookup until it has.
    let decision = limits
        .preauth
        .check(&bulkhead_ratelimit::Request::new(
            key,
            Plan::Standard,
            bulkhead_ratelimit::DEFAULT_CLASS,
        ))
        .await
        .relabel(Level::Tenant, Level::Address);
    let wait = match (decision.allowed, &decision.limiting) {
        (false, _) => Some(
            decision
                .retry_after
                .unwrap_or(std::time::Duration::from_secs(1)),
        ),
        (true, Some(state)) if state.remaining == 0 => Some(until_one_unit(state)),
        _ => None,
    };
    if let Some(wait) = wait {
        let until =
            now + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::seconds(1));
        limits.blocked.insert(key, until);
    }
    response
}

/// After authentication, before the handler: all four levels, all or nothing.
pub async fn tenant_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let authenticated = request.extensions().get::<TenantContext>().is_some();
    let mut response = tenant_limits(state, request, next).await;
    if authenticated {
        response.extensions_mut().insert(Authenticated);
    }
    response
}

async fn tenant_limits(state: AppState, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let Some(limits) = state.rate_limits() else {
        // No limiting (a benchmark of the rest of the pipeline): the database bounds still hold.
        return run_bounded(request, next, &route).await;
    };
    let (Some(ctx), Some(budget)) = (
        request.extensions().get::<TenantContext>().cloned(),
        request.extensions().get::<TenantPlan>().copied(),
    ) else {
        // Mounted outside resolution: fail closed.
        return ApiError::Unauthorized.into_response();
    };
    let class = endpoint_class(request.method(), &route);
    let agent = match ctx.actor() {
        Actor::ApiKey { key_id, .. } => Some(key_id.to_string()),
        // A human's tokens share that user's budget; an agent's tokens share their key's.
        Actor::Token {
            human: true,
            subject,
            ..
        } => Some(subject.clone()),
        Actor::Token { client_id, .. } => Some(client_id.clone()),
        _ => None,
    };
    let mut limited = budget.request(ctx.tenant_id(), class);
    if let Some(agent) = agent.as_deref() {
        limited = limited.with_agent(agent);
    }
    if let Some(cost) = page_cost(request.method(), &route, request.uri().query()) {
        limited = limited.with_cost(cost);
    }
    // Taken before the rate decision, so a request refused here charges no budget; held until
    // the handler has answered (dropping it frees the slot).
    let Some(_permit) = limits.concurrency.acquire(ctx.tenant_id(), class) else {
        tracing::warn!(target: "bulkhead::audit", action = "ratelimit.reject", outcome = "blocked", tenant_id = %ctx.tenant_id(), level = "concurrency", class, "too many requests in flight");
        let mut response = ApiError::RateLimited("concurrency").into_response();
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        return response;
    };
    let decision = limits.tenant.check(&limited).await;
    if !decision.allowed {
        AuditLine::blocked("ratelimit.reject")
            .by(&ctx)
            .rate(decision.rejected_by.map(|l| l.as_str()), class)
            .warn("rate limit reached");
        metrics::counter!("bulkhead_ratelimit_rejections_total", "level" => decision.rejected_by.map_or("unavailable", |l| l.as_str())).increment(1);
        return rejection(&decision);
    }
    let mut response = run_bounded(request, next, &route).await;
    add_headers(&mut response, &decision);
    response
}

/// Runs the rest of the request under its route class's database bounds: the statement timeout
/// and, for a heavy read, the tenant's heavy-read lane.
async fn run_bounded(request: Request, next: Next, route: &str) -> Response {
    let timeout = statement_timeout(request.method(), route);
    let heavy = is_heavy_read(request.method(), route);
    bulkhead_store::placement::gate::STATEMENT_TIMEOUT
        .scope(
            timeout,
            bulkhead_store::placement::gate::HEAVY_READ.scope(heavy, next.run(request)),
        )
        .await
}

/// `statement_timeout` of reads (every GET: single resources and lists with their filters).
pub const READ_STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// `statement_timeout` of writes.
pub const WRITE_STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The statement timeout of a route class: a tenant's heaviest allowed query gives up (503)
/// instead of holding a shared connection for as long as it likes.
fn statement_timeout(method: &http::Method, _route: &str) -> std::time::Duration {
    if method == http::Method::GET || method == http::Method::HEAD {
        READ_STATEMENT_TIMEOUT
    } else {
        WRITE_STATEMENT_TIMEOUT
    }
}

/// Reads whose cost grows with the tenant's data: every `GET` of a collection (a path ending in
/// a literal segment: the lists with their filters, the audit-event reads, the audit proofs).
/// Their transactions run one at a time per tenant
/// (`bulkhead_store::placement::gate::HEAVY_READ_CAP`), so a tenant with a million rows cannot
/// fill the machine with scans beside everyone else's requests. A single resource (`…/{id}`) is
/// an index lookup and is not held back, nor are the [`LIGHT_READS`].
fn is_heavy_read(method: &http::Method, route: &str) -> bool {
    (method == http::Method::GET || method == http::Method::HEAD)
        && !route.ends_with('}')
        && !LIGHT_READS.contains(&route)
}

/// Units a collection read takes from every budget: one per [`DEFAULT_PAGE_SIZE`] rows it may
/// return (its `limit`, default and at most [`MAX_PAGE_SIZE`]), so a budget bounds the rows a
/// tenant reads, not its pages (issue 28.3: 24–64 concurrent `limit=200` lists of a
/// million-row tenant within the per-page budget moved another tenant's p99 past 2×). A page of
/// the default size costs what any request costs; `limit=200` costs 4, as GraphQL APIs charge
/// a query by the `first:` it asks for, before running it. `None` for every other request (its
/// class's cost). A `limit` that is not a number is left to the handler's 422 at cost 1.
fn page_cost(method: &http::Method, route: &str, query: Option<&str>) -> Option<u32> {
    if !is_heavy_read(method, route) {
        return None;
    }
    // Decoded as the list handler decodes it (`kit::page::ListQuery`: form encoding, so
    // `%32%30%30` and `li%6Dit` are `limit=200`); of several `limit`s (the handler refuses
    // them) the largest counts.
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or_default()).unwrap_or_default();
    let limit = pairs
        .iter()
        .filter(|(name, _)| name == "limit")
        .filter_map(|(_, value)| value.parse::<u32>().ok())
        .max()
        .unwrap_or(DEFAULT_PAGE_SIZE)
        .clamp(1, MAX_PAGE_SIZE);
    Some(limit.div_ceil(DEFAULT_PAGE_SIZE))
}

/// Reads that end in a literal segment but are not scans of a collection, so the heavy-read
/// lane would only queue them: a session's context (an agent's per-turn call), the tenant-wide
/// policies, usage counters and the latest checkpoint (one row each), and the audit export,
/// which streams from one snapshot for up to five minutes: holding the tenant's only heavy
/// place that long would turn every list of the tenant into a 503 while a SIEM pulls its log
/// (its own deadline and the connection cap bound it).
const LIGHT_READS: &[&str] = &[
    "/v1/sessions/{id}/context",
    "/v1/token-policy",
    "/v1/key-policy",
    "/v1/screening-policy",
    "/v1/usage",
    "/v1/audit/checkpoints/latest",
    "/v1/audit/export",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_keys_are_stable_and_canonical() {
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(address_key(v4), address_key(mapped));
        // Issue 17, item 5: IPv6 is one budget per /64, not per /128.
        assert_eq!(
            address_key("2001:db8:7:7::1".parse().unwrap()),
            address_key("2001:db8:7:7:dead:beef:0:1".parse().unwrap())
        );
        assert_ne!(
            address_key("2001:db8:7:7::1".parse().unwrap()),
            address_key("2001:db8:7:8::1".parse().unwrap())
        );
        assert_ne!(
            address_key(v4),
            address_key("203.0.113.10".parse().unwrap())
        );
    }

    #[test]
    fn a_collection_read_costs_one_unit_per_default_page_of_rows() {
        let get = http::Method::GET;
        let cost = |query| page_cost(&get, "/v1/sessions", query);
        assert_eq!(cost(None), Some(1));
        assert_eq!(cost(Some("state=closed")), Some(1));
        assert_eq!(cost(Some("limit=50")), Some(1));
        assert_eq!(cost(Some("limit=51")), Some(2));
        assert_eq!(cost(Some("state=closed&limit=200")), Some(4));
        assert_eq!(
            page_cost(&get, "/v1/audit/events", Some("limit=200")),
            Some(4)
        );
        // Past the maximum the handler refuses it; the cost stays bounded either way.
        assert_eq!(cost(Some("limit=100000")), Some(4));
        assert_eq!(cost(Some("limit=x")), Some(1));
        // Encoded as the handler decodes it (review L1).
        assert_eq!(cost(Some("limit=%32%30%30")), Some(4));
        assert_eq!(cost(Some("li%6Dit=200")), Some(4));
        assert_eq!(cost(Some("limit=%2B200")), Some(4));
        assert_eq!(cost(Some("limit=1&limit=200")), Some(4));
        // Single resources, light reads and writes keep their class's cost.
        assert_eq!(
            page_cost(&get, "/v1/sessions/{id}", Some("limit=200")),
            None
        );
        assert_eq!(page_cost(&get, "/v1/usage", Some("limit=200")), None);
        assert_eq!(
            page_cost(&http::Method::POST, "/v1/sessions", Some("limit=200")),
            None
        );
    }

    #[test]
    fn key_minting_is_its_own_class() {
        let post = http::Method::POST;
        assert_eq!(endpoint_class(&post, "/v1/api-keys"), "key_create");
        assert_eq!(
            endpoint_class(&post, "/v1/api-keys/{id}/rotate"),
            "key_create"
        );
        assert_eq!(
            endpoint_class(&http::Method::GET, "/v1/api-keys"),
            "default"
        );
        assert_eq!(endpoint_class(&post, "/v1/sessions"), "default");
    }

    /// Every list and audit read of the route table is heavy; no single resource and no write
    /// is (issue 28.3: a tenant's scans run one at a time).
    #[test]
    fn every_collection_read_of_the_table_is_heavy() {
        let mut heavy = Vec::new();
        for spec in crate::http::app::route_table().specs() {
            if is_heavy_read(&spec.method, spec.path) {
                assert_eq!(
                    spec.method,
                    http::Method::GET,
                    "{}: a write is not a read",
                    spec.path
                );
                heavy.push(spec.path.to_string());
            }
        }
        for list in [
            "/v1/sessions",
            "/v1/audit/events",
            "/v1/api-keys",
            "/v1/users",
            "/v1/tools",
        ] {
            assert!(
                heavy.iter().any(|p| p == list),
                "{list} is not heavy: {heavy:?}"
            );
        }
        assert!(!is_heavy_read(&http::Method::GET, "/v1/sessions/{id}"));
        // Every light read names a GET of the table (the list cannot rot), and none is heavy.
        let table: Vec<_> = crate::http::app::route_table().specs().cloned().collect();
        for light in LIGHT_READS {
            assert!(
                table
                    .iter()
                    .any(|s| s.method == http::Method::GET && s.path == *light),
                "{light} is not a GET route of the table"
            );
            assert!(!is_heavy_read(&http::Method::GET, light), "{light}");
        }
        assert!(!is_heavy_read(&http::Method::POST, "/v1/sessions"));
    }
}
