//! Rate limiting in the request pipeline: where the limits are configured (one place, here),
//! and the two middlewares that apply them.
//!
//! - [`preauth_limit`] runs before authentication, keyed by the client address: it bounds the
//!   work (one key lookup each) that unauthenticated traffic can cause, such as a flood of
//!   checksum-valid random keys.
//! - [`tenant_limit`] runs after authentication and before any database work, with all four
//!   levels (global, tenant by plan, agent/key, endpoint class with its cost), all or nothing.
//!
//! Every response under `/v1` carries `RateLimit-Policy` and `RateLimit` headers (IETF httpapi
//! draft) for the most constraining level; a rejection is a 429 problem naming the level, with
//! `Retry-After`. With Redis configured (`REDIS_URL`) several processes share the budgets; if
//! Redis is unreachable the configured fallback applies (local by default, or deny: then 503).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bulkhead_core::{Actor, Clock, TenantContext, TenantId};
use bulkhead_ratelimit::{
    header_values, ClassQuota, ConcurrencyLimiter, Decision, LimitConfig, Limiter, Plan, Quota,
    Source,
};
use bulkhead_store::registry;

use crate::error::ApiError;
use crate::state::AppState;

/// The deployment's limits. Plans differ by tenant budget; every key (agent) gets a share
/// inside its tenant's budget; expensive endpoints cost more and have their own budget.
pub fn default_limits() -> LimitConfig {
    LimitConfig {
        global: Some(Quota::per_second(20_000).with_burst(40_000)),
        plans: [
            (Plan::Free, Quota::per_second(10).with_burst(20)),
            (Plan::Standard, Quota::per_second(200).with_burst(400)),
            (Plan::Enterprise, Quota::per_second(2_000).with_burst(4_000)),
        ]
        .into_iter()
        .collect(),
        per_agent: Some(Quota::per_second(100).with_burst(200)),
        // Minting keys is expensive and sensitive: each costs 10 units of the tenant's budget
        // and has its own budget of 30 a minute.
        classes: [(
            "key_create".to_owned(),
            ClassQuota::limited(10, Quota::per_minute(30).with_burst(10)),
        )]
        .into_iter()
        .collect(),
        ..LimitConfig::default()
    }
}

/// The per-address budget before authentication: generous for any real client, small enough
/// that one address cannot tie up the key lookup.
pub fn default_preauth_limits() -> LimitConfig {
    LimitConfig {
        plans: [Plan::Free, Plan::Standard, Plan::Enterprise]
            .into_iter()
            .map(|plan| (plan, Quota::per_second(500).with_burst(1_000)))
            .collect(),
        ..LimitConfig::default()
    }
}

/// Requests of one tenant in flight at once in this process (Stripe's concurrency limiter):
/// expensive classes get a small number, everything else a generous one.
pub fn default_concurrency() -> ConcurrencyLimiter {
    ConcurrencyLimiter::new(256).with_class("key_create", 4)
}

/// The limiters of a process.
#[derive(Debug)]
pub struct RateLimits {
    tenant: Limiter,
    preauth: Limiter,
    concurrency: ConcurrencyLimiter,
}

impl RateLimits {
    /// In-process limiters with the given configurations.
    pub fn in_memory(tenant: LimitConfig, preauth: LimitConfig, clock: Clock) -> Self {
        Self {
            tenant: Limiter::in_memory(tenant, clock.clone()),
            preauth: Limiter::in_memory(preauth, clock),
            concurrency: default_concurrency(),
        }
    }

    /// The defaults, shared through Redis when `REDIS_URL` is set, else in process.
    pub fn from_env(clock: Clock) -> anyhow::Result<Self> {
        match bulkhead_ratelimit::RedisOptions::from_env() {
            Some(options) => Ok(Self {
                tenant: Limiter::redis(default_limits(), clock.clone(), options.clone())?,
                preauth: Limiter::redis(default_preauth_limits(), clock, {
                    let mut options = options;
                    options.key_prefix = format!("{}:preauth", options.key_prefix);
                    options
                })?,
                concurrency: default_concurrency(),
            }),
            None => Ok(Self::in_memory(
                default_limits(),
                default_preauth_limits(),
                clock,
            )),
        }
    }
}

/// The tenant's plan, put beside the context by resolution.
#[derive(Debug, Clone, Copy)]
pub struct TenantPlan(pub registry::Plan);

fn limiter_plan(plan: registry::Plan) -> Plan {
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
fn address_key(ip: IpAddr) -> TenantId {
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

/// Before authentication: one budget per client address.
pub async fn preauth_limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(limits) = state.rate_limits() else {
        return next.run(request).await;
    };
    // An unknown address (malformed chain) shares one budget rather than escaping limits.
    let ip = crate::credentials::request_client_ip(&request, &state.config().trusted_proxies)
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let decision = limits
        .preauth
        .check(&bulkhead_ratelimit::Request::new(
            address_key(ip),
            Plan::Standard,
            bulkhead_ratelimit::DEFAULT_CLASS,
        ))
        .await;
    if !decision.allowed {
        tracing::warn!(target: "bulkhead::audit", action = "ratelimit.preauth", outcome = "blocked", client_ip = %ip, "pre-authentication limit reached");
        return rejection(&decision);
    }
    next.run(request).await
}

/// After authentication, before the handler: all four levels, all or nothing.
pub async fn tenant_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limits) = state.rate_limits() else {
        return next.run(request).await;
    };
    let (Some(ctx), Some(TenantPlan(plan))) = (
        request.extensions().get::<TenantContext>().cloned(),
        request.extensions().get::<TenantPlan>().copied(),
    ) else {
        // Mounted outside resolution: fail closed.
        return ApiError::Unauthorized.into_response();
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
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
    let mut limited = bulkhead_ratelimit::Request::new(ctx.tenant_id(), limiter_plan(plan), class);
    if let Some(agent) = agent.as_deref() {
        limited = limited.with_agent(agent);
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
        tracing::warn!(
            target: "bulkhead::audit",
            action = "ratelimit.reject",
            outcome = "blocked",
            tenant_id = %ctx.tenant_id(),
            actor_id = %ctx.actor().audit_id(),
            level = decision.rejected_by.map(|l| l.as_str()),
            class,
            "rate limit reached"
        );
        metrics::counter!("bulkhead_ratelimit_rejections_total", "level" => decision.rejected_by.map_or("unavailable", |l| l.as_str())).increment(1);
        return rejection(&decision);
    }
    let mut response = next.run(request).await;
    add_headers(&mut response, &decision);
    response
}

/// Shared handle in the app state.
pub type SharedLimits = Arc<RateLimits>;

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
}
