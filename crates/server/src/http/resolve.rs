//! Tenant resolution and authentication at the edge: the only place a request gets a
//! [`TenantContext`].
//!
//! Two signals name a tenant: the subdomain (`acme.<base-domain>`) and the credential. The rules:
//! - a subdomain that names no tenant answers 404 before anything else (slugs are public: they are
//!   DNS names);
//! - no credential, a malformed one, a bad checksum, a key of the other environment, an unknown,
//!   revoked or expired key, or a key of another tenant than the subdomain's: one 401, with the
//!   same body and `WWW-Authenticate` header whichever it was;
//! - a suspended tenant answers 403, but only to a caller that authenticated as that tenant.
//!
//! Timing: format and checksum failures return before the database lookup. Both are functions of
//! the presented string alone, which the caller already holds, so their timing tells it nothing
//! it could not compute. The lookup itself is by HMAC(pepper, key): its timing depends on a value
//! the caller cannot predict without the pepper.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bulkhead_core::{Credential, RequestId, TenantContext, TenantId, TenantSlug};
use bulkhead_store::placement::registry::{Tenant, TenantStatus};

use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::service::audit_line::{AuditLine, Detail};
use crate::service::credentials::{request_client_ip, Refusal, Refused};
use crate::service::tokens::TokenRefusal;

/// Ending one's own session; the resolver admits a suspended tenant's token here (and only
/// here), since logging out only takes authority away.
pub(crate) const LOGOUT_PATH: &str = "/v1/auth/logout";

/// What the host name says about the tenant.
#[derive(Debug, PartialEq, Eq)]
pub enum HostSignal {
    /// Not a subdomain of the base domain: no tenant signal.
    None,
    /// `<slug>.<base-domain>`.
    Slug(TenantSlug),
    /// Under the base domain but not a valid tenant label: treated as an unknown tenant.
    Invalid,
}

/// The host a request names: the one reading of it, for tenant resolution, OAuth, login and
/// region redirects alike. [`single_host`] runs in front of every route and has already refused
/// (400) a request whose absolute-form URI authority disagrees with its `Host` header, or that
/// carries several `Host` headers, and copied the URI authority into `Host` when only the URI
/// named one (HTTP/2 `:authority`); so the `Host` header is the whole answer here.
pub fn request_host(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
}

/// Whether two spellings of an authority name the same host and port (DNS is case-insensitive,
/// and a trailing dot names the same host).
fn same_authority(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.to_ascii_lowercase();
        // `[::1]` has colons but no port: a port is digits after the last colon.
        match s
            .rsplit_once(':')
            .filter(|(_, port)| !port.is_empty() && port.bytes().all(|c| c.is_ascii_digit()))
        {
            Some((host, port)) => format!("{}:{port}", host.trim_end_matches('.')),
            None => s.trim_end_matches('.').to_owned(),
        }
    };
    norm(a) == norm(b)
}

/// Middleware in front of every route: one host per request. A request whose absolute-form
/// target (`GET http://acme.example/…`) names one host while `Host` names another was served as
/// the URI's tenant while OAuth and login read `Host`: two readings of one request. Such a
/// request, or one with several `Host` headers, is refused with 400 before anything reads it.
pub async fn single_host(mut request: Request, next: Next) -> Response {
    let hosts = request.headers().get_all(header::HOST).iter().count();
    if hosts > 1 {
        return ApiError::BadRequest("the request carries more than one Host header".into())
            .into_response();
    }
    if let Some(authority) = request.uri().authority().map(|a| a.as_str().to_owned()) {
        // Userinfo in a request target is never legitimate; compare the host and port only.
        if authority.contains('@') {
            return ApiError::BadRequest("the request target may not carry userinfo".into())
                .into_response();
        }
        match request.headers().get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(host)) if same_authority(host, &authority) => {}
            Some(_) => {
                return ApiError::BadRequest(
                    "the request target's authority and the Host header name different hosts"
                        .into(),
                )
                .into_response();
            }
            None => match HeaderValue::from_str(&authority) {
                Ok(value) => {
                    request.headers_mut().insert(header::HOST, value);
                }
                Err(_) => {
                    return ApiError::BadRequest(
                        "the request target's authority is invalid".into(),
                    )
                    .into_response();
                }
            },
        }
    }
    next.run(request).await
}

/// Reads the tenant label from a host (with or without port). Case-insensitive, as DNS is.
pub fn host_signal(host: &str, base_domain: &str) -> HostSignal {
    let host = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
    let Some(label) = host
        .strip_suffix(base_domain)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return HostSignal::None;
    };
    match TenantSlug::parse(label) {
        Ok(slug) => HostSignal::Slug(slug),
        Err(_) => HostSignal::Invalid,
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: never a tenant host.
        return host;
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The bearer token, if exactly one well-formed `Authorization: Bearer …` header is present.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    bulkhead_auth::bearer_token(
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(HeaderValue::as_bytes),
    )
}

fn audit_refusal(refused: Refused, host_tenant: Option<TenantId>) -> ApiError {
    let tenant = refused.tenant_id.or(host_tenant);
    AuditLine::failure("auth.failure")
        .tenant_if(tenant)
        .actor_if(refused.key_id)
        .with(Detail::Reason, format_args!("{:?}", refused.reason))
        .warn("authentication refused");
    crate::service::audit_log::auth_failure_in_scope(
        tenant,
        refused.key_id,
        format!("{:?}", refused.reason),
        bulkhead_store::audit::Outcome::Failure,
    );
    // No reason label: /metrics must not tell a caller which check its credential failed.
    metrics::counter!("bulkhead_auth_failures_total").increment(1);
    ApiError::Unauthorized
}

/// The registry or key lookup failed: deny with a retryable 503 (never a 500, never a pass) and
/// leave an audit event.
fn resolver_failure(err: bulkhead_store::StoreError, tenant: Option<TenantId>) -> ApiError {
    AuditLine::failure("auth.failure")
        .tenant_if(tenant)
        .with(Detail::Reason, "ResolverError")
        .with(Detail::Error, err)
        .error("tenant resolution failed; request denied");
    crate::service::audit_log::auth_failure_in_scope(
        tenant,
        None,
        "ResolverError".into(),
        bulkhead_store::audit::Outcome::Failure,
    );
    ApiError::Unavailable
}

fn refused(reason: Refusal) -> Refused {
    Refused {
        reason,
        tenant_id: None,
        key_id: None,
    }
}

/// Middleware for every `/v1` route. See the module doc for the rules.
pub async fn resolve_tenant(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let signals = Signals::read(&request, &state.config().trusted_proxies);
    // Failures recorded during resolution carry the client's details (crate::service::audit_log).
    let audit_scope = crate::service::audit_log::AuthAuditScope {
        service: state.audit().clone(),
        ip_address: signals.client_ip,
        user_agent: request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        request_id: signals.request_id,
    };
    // The scope spans the handler too: its authorization refusals are audited with the
    // request's client details.
    crate::service::audit_log::AUTH_AUDIT
        .scope(audit_scope, async move {
            match authenticate(&state, signals, ends_own_session(&request)).await {
                Ok((ctx, plan)) => {
                    request.extensions_mut().insert(plan);
                    let span = tracing::Span::current();
                    span.record("tenant_id", tracing::field::display(ctx.tenant_id()));
                    // With the route and the final status, the request's log line records the
                    // decision.
                    span.record("actor_id", tracing::field::display(ctx.actor().audit_id()));
                    request.extensions_mut().insert(ctx);
                    next.run(request).await
                }
                Err(ApiError::WrongRegion(region)) => {
                    region_refusal(&state, &request, region).into_response()
                }
                Err(err) => err.into_response(),
            }
        })
        .await
}

/// A tenant of a region this process does not serve: redirected to that region's endpoint when
/// one is configured, refused with 421 otherwise.
fn region_refusal(state: &AppState, request: &Request, region: String) -> ApiError {
    let host = request_host(request.headers());
    let slug = match host_signal(host, &state.config().base_domain) {
        HostSignal::Slug(slug) => Some(slug),
        _ => None,
    };
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    match slug.and_then(|slug| state.config().region_redirect(&region, slug.as_str(), path)) {
        Some(location) => ApiError::RegionRedirect(location),
        None => ApiError::WrongRegion(region),
    }
}

/// What resolution reads from a request, copied out so no borrow of the request crosses an await.
struct Signals {
    request_id: RequestId,
    host: String,
    bearer: Option<String>,
    client_ip: Option<IpAddr>,
}

impl Signals {
    fn read(request: &Request, trusted_proxies: &[ipnet::IpNet]) -> Self {
        let host = request_host(request.headers()).to_owned();
        Self {
            request_id: request
                .extensions()
                .get::<RequestId>()
                .copied()
                .unwrap_or_default(),
            host,
            bearer: bearer_token(request.headers()).map(str::to_owned),
            client_ip: request_client_ip(request, trusted_proxies),
        }
    }
}

/// `POST /v1/auth/logout`: ending one's own session must stay possible while the tenant is
/// suspended (it only takes authority away), so that one route accepts a suspended tenant's
/// access token. Everything else about the token is checked as always.
fn ends_own_session(request: &Request) -> bool {
    request.method() == Method::POST && request.uri().path() == LOGOUT_PATH
}

async fn authenticate(
    state: &AppState,
    signals: Signals,
    ends_own_session: bool,
) -> Result<(TenantContext, crate::http::limits::TenantPlan), ApiError> {
    let Signals {
        request_id,
        host,
        bearer,
        client_ip,
    } = signals;
    let host_tenant = host_tenant(state, &host).await?;
    let Some(presented) = bearer.as_deref() else {
        return Err(audit_refusal(
            refused(Refusal::NoCredential),
            host_tenant.as_ref().map(|t| t.id),
        ));
    };
    if presented.starts_with("bkrt_") {
        // A refresh token is never a bearer credential.
        return Err(audit_token_refusal(
            TokenRefusal::Invalid(bulkhead_auth::TokenError::Type),
            host_tenant.as_ref().map(|t| t.id),
            None,
        ));
    }
    if is_access_token(presented) {
        let standing = authorize_access_token(
            state,
            presented,
            host_tenant,
            if ends_own_session {
                TokenUse::EndOwnSession(client_ip)
            } else {
                TokenUse::Request(client_ip)
            },
            request_id,
        )
        .await?;
        let budget = crate::http::limits::TenantPlan::of(&standing.tenant);
        return Ok((standing.ctx, budget));
    }
    let (key, tenant) = authenticate_api_key(state, presented, host_tenant, client_ip).await?;
    // Only now is this a use of the key.
    state.verifier().record_use(&key, client_ip);
    let ctx = TenantContext::for_credential(
        tenant.id,
        Credential::ApiKey {
            key_id: key.key_id,
            scopes: key.scopes,
        },
        request_id,
    );
    let ctx = apply_ceiling(state, ctx, Some(key.key_id)).await?;
    Ok((ctx, crate::http::limits::TenantPlan::of(&tenant)))
}

/// Where an access token is being judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenUse<'a> {
    /// Presented by a caller at this address (unknown: `None`): the token's network restrictions
    /// must admit it.
    Request(Option<IpAddr>),
    /// `POST /v1/auth/logout` by a caller at this address: as [`TokenUse::Request`], but a
    /// suspended tenant's token may still end its own session.
    EndOwnSession(Option<IpAddr>),
    /// Introspection: the client asking is not the token's user, so there is no address to
    /// check; the answer reports the restrictions instead (`allowed_networks`). With the
    /// identifier of a protected resource registered in the introspecting client's tenant, the
    /// token must be for that resource (`aud`); without, for Bulkhead's own API.
    Introspection(Option<&'a str>),
    /// Presented by a caller at this address as the subject token of a token exchange, for the
    /// protected resource named (its `aud`): as [`TokenUse::Request`], with that audience. The
    /// caller checks afterwards that the resource is registered in the token's tenant.
    ResourceSubject(Option<IpAddr>, &'a str),
}

/// An access token that passed every check, and what it may do.
#[derive(Debug)]
pub(crate) struct TokenStanding {
    /// The token as verified (claims as signed: `scope` there may exceed what it may do).
    pub token: crate::service::tokens::VerifiedToken,
    /// The token's tenant: it agrees with the host's, is active and served here.
    pub tenant: Tenant,
    /// The context of a request made with it: its scopes are the *effective* ones (the token's
    /// ∩ every role ceiling of the principals it acts for).
    pub ctx: TenantContext,
    /// The current allowlists of the keys it comes from (`client_id` and `derived_keys`), each
    /// binding it beside the ones copied into its claims.
    pub networks: Vec<Vec<ipnet::IpNet>>,
}

/// The one decision "is this access token valid, and what may it do", for every place that
/// accepts one: the resolver (`/v1`), introspection (`POST /oauth/introspect`), and both tokens
/// of a token exchange. In order: signature, claims and the denylist
/// ([`crate::service::tokens::TokenService::verify`]); the token's tenant agreeing with the host's (when
/// the host names one), active and served here; every principal it acts for (subject, and the
/// actor's key of a delegated token) active; its scopes cut to their role ceilings (a delegated
/// token's scopes already hold every hop's bound); the key it was issued to (`client_id`), and
/// every other key a delegated token derives from (`derived_keys`), still usable (not revoked,
/// expired or past its rotation grace); the caller's address inside every network restriction it
/// carries (the IP allowlists of the keys it comes from, as minted) and inside each of those
/// keys' allowlists as they are now. Every refusal is audited and answers one 401
/// `invalid_token` (503 when revocations cannot be checked; 403 for a suspended tenant).
pub(crate) async fn authorize_access_token(
    state: &AppState,
    presented: &str,
    host_tenant: Option<Tenant>,
    used: TokenUse<'_>,
    request_id: RequestId,
) -> Result<TokenStanding, ApiError> {
    let suspended_ok = matches!(used, TokenUse::EndOwnSession(_));
    let audience = match used {
        TokenUse::Introspection(resource) => resource,
        TokenUse::ResourceSubject(_, resource) => Some(resource),
        _ => None,
    };
    let (token, tenant) =
        authenticate_access_token_in(state, presented, audience, host_tenant, suspended_ok).await?;
    if let TokenUse::Request(client_ip)
    | TokenUse::EndOwnSession(client_ip)
    | TokenUse::ResourceSubject(client_ip, _) = used
    {
        // A token minted from an allowlisted key (or derived from one) is bound by its allowlist
        // on every use, exactly like the key.
        if !token.admits_address(client_ip) {
            return Err(audit_token_refusal(
                TokenRefusal::AddressNotAllowed,
                Some(tenant.id),
                None,
            ));
        }
    }
    let ctx = TenantContext::for_credential(
        tenant.id,
        Credential::Token {
            subject: token.claims.sub.clone(),
            human: token.claims.sub_type == "user",
            client_id: token.claims.client_id.clone(),
            token_id: token.token_id,
            session_id: token.session_id,
            scopes: token.scopes.clone(),
            resource_prefix: token.resource_prefix.clone(),
            delegation: token
                .claims
                .act
                .as_ref()
                .map(|act| act.actors())
                .unwrap_or_default(),
            derived_keys: token.derived_keys.clone(),
        },
        request_id,
    );
    let standing = state
        .ceilings()
        .standing(
            state.store(),
            &ctx,
            &token.derived_keys,
            state.clock().now(),
        )
        .await
        .map_err(|e| resolver_failure(e, Some(tenant.id)))?;
    if let TokenUse::Request(client_ip)
    | TokenUse::EndOwnSession(client_ip)
    | TokenUse::ResourceSubject(client_ip, _) = used
    {
        // The claim holds the allowlist as it was at mint; the key's allowlist *now* binds too,
        // so narrowing a key binds the tokens already minted from it.
        let admitted = standing
            .networks
            .iter()
            .all(|list| client_ip.is_some_and(|ip| list.iter().any(|net| net.contains(&ip))));
        if !admitted {
            return Err(audit_token_refusal(
                TokenRefusal::AddressNotAllowed,
                Some(tenant.id),
                None,
            ));
        }
    }
    let ctx = narrow_to(ctx, &standing.ceiling, None)?;
    Ok(TokenStanding {
        token,
        tenant,
        ctx,
        networks: standing.networks,
    })
}

/// Cuts the credential's scopes to its principal's roles ([`crate::service::ceilings`]); a disabled or
/// missing principal refuses the credential (401, audited).
pub(crate) async fn apply_ceiling(
    state: &AppState,
    ctx: TenantContext,
    key_id: Option<bulkhead_core::ApiKeyId>,
) -> Result<TenantContext, ApiError> {
    let tenant = ctx.tenant_id();
    let ceiling = state
        .ceilings()
        .of(state.store(), &ctx, state.clock().now())
        .await
        .map_err(|e| resolver_failure(e, Some(tenant)))?;
    narrow_to(ctx, &ceiling, key_id)
}

/// The context with its scopes cut to `ceiling`; a refusing ceiling is a 401 (audited).
fn narrow_to(
    ctx: TenantContext,
    ceiling: &crate::service::ceilings::Ceiling,
    key_id: Option<bulkhead_core::ApiKeyId>,
) -> Result<TenantContext, ApiError> {
    use crate::service::ceilings::Ceiling;
    let tenant = ctx.tenant_id();
    match ceiling {
        Ceiling::Unbounded => Ok(ctx),
        Ceiling::Bounded(bound) => Ok(ctx.narrowed(bound)),
        Ceiling::Refused => Err(audit_refusal(
            Refused {
                reason: Refusal::PrincipalInactive,
                tenant_id: Some(tenant),
                key_id,
            },
            Some(tenant),
        )),
    }
}

/// Whether a bearer credential is a JWT rather than an API key. API keys and refresh tokens are
/// base62/base64url and never contain a dot; every JWS compact serialisation does.
pub fn is_access_token(presented: &str) -> bool {
    presented.contains('.')
}

/// The context a login works in before any credential exists: Bulkhead's login component acting
/// in `tenant`, which the host or the body named and which the caller found active. Made here,
/// with the other contexts resolution decides, so that no route handler mints a system context.
pub(crate) fn login_context(tenant: &Tenant) -> TenantContext {
    debug_assert_eq!(tenant.status, TenantStatus::Active);
    TenantContext::for_system(tenant.id, "login")
}

/// The context of the OAuth endpoints' own reads in a tenant (a client's registration, the
/// authorization request's checks): the client or the user authenticates inside the request, so
/// no resolved credential exists to take it from.
pub(crate) fn oauth_context(tenant: TenantId) -> TenantContext {
    TenantContext::for_system(tenant, "oauth")
}

/// The tenant the host names: `None` without a subdomain signal, 404 for a name that is no
/// tenant, 503 (audited) when the registry cannot answer.
pub(crate) async fn host_tenant(state: &AppState, host: &str) -> Result<Option<Tenant>, ApiError> {
    match host_signal(host, &state.config().base_domain) {
        HostSignal::None => Ok(None),
        HostSignal::Invalid => Err(ApiError::UnknownTenant),
        HostSignal::Slug(slug) => match state
            .directory()
            .by_slug(state.store(), &slug)
            .await
            .map_err(|e| resolver_failure(e, None))?
        {
            Some(tenant) => {
                served_here(state, &tenant)?;
                Ok(Some(tenant))
            }
            None => Err(ApiError::UnknownTenant),
        },
    }
}

/// A tenant whose region this process does not serve is refused before anything of it is read
/// (its rows are not in any database this process can reach; the registry holds only routing).
fn served_here(state: &AppState, tenant: &Tenant) -> Result<(), ApiError> {
    if state.store().serves_region(&tenant.region) {
        return Ok(());
    }
    AuditLine::blocked("request.refused")
        .tenant(tenant.id)
        .with(Detail::Reason, "WrongRegion")
        .with(Detail::Region, &tenant.region)
        .warn("the tenant's region is not served here");
    Err(ApiError::WrongRegion(tenant.region.clone()))
}

/// The credential's tenant, which must agree with the host's (when the host names one) and be
/// active. `mismatch` is the refusal to answer when they disagree or the tenant is gone.
async fn credential_tenant(
    state: &AppState,
    host_tenant: Option<Tenant>,
    claimed: TenantId,
    actor_id: &str,
    actor_key: Option<bulkhead_core::ApiKeyId>,
    suspended_ok: bool,
    mismatch: impl Fn() -> ApiError,
) -> Result<Tenant, ApiError> {
    #[cfg(feature = "probe-weakness")]
    let host_tenant = host_tenant.filter(|_| !state.config().weaken_host_check);
    let tenant = match host_tenant {
        Some(tenant) if tenant.id == claimed => tenant,
        Some(_) => return Err(mismatch()),
        None => match state
            .directory()
            .by_id(state.store(), claimed)
            .await
            .map_err(|e| resolver_failure(e, Some(claimed)))?
        {
            Some(tenant) => tenant,
            None => return Err(mismatch()),
        },
    };
    served_here(state, &tenant)?;
    if tenant.status != TenantStatus::Active && !suspended_ok {
        AuditLine::blocked("auth.failure")
            .tenant(tenant.id)
            .actor(actor_id)
            .with(Detail::Reason, "TenantSuspended")
            .warn("tenant suspended");
        crate::service::audit_log::auth_failure_in_scope(
            Some(tenant.id),
            actor_key,
            "TenantSuspended".into(),
            bulkhead_store::audit::Outcome::Blocked,
        );
        return Err(ApiError::TenantSuspended);
    }
    Ok(tenant)
}

/// Verifies an API key and its tenant. Every refusal is audited and answers one 401; the
/// caller records the use once the request is fully authenticated.
pub(crate) async fn authenticate_api_key(
    state: &AppState,
    presented: &str,
    host_tenant: Option<Tenant>,
    client_ip: Option<IpAddr>,
) -> Result<(crate::service::credentials::VerifiedKey, Tenant), ApiError> {
    let host_tenant_id = host_tenant.as_ref().map(|t| t.id);
    let verified = state
        .verifier()
        .verify(presented, client_ip)
        .await
        .map_err(|e| resolver_failure(e, host_tenant_id))?;
    let key = match verified {
        Ok(key) => key,
        Err(refusal) => return Err(audit_refusal(refusal, host_tenant_id)),
    };
    let (tenant_id, key_id) = (key.tenant_id, key.key_id);
    let mismatch = || {
        let reason = if host_tenant_id.is_some_and(|id| id != tenant_id) {
            Refusal::TenantMismatch
        } else {
            Refusal::UnknownKey
        };
        audit_refusal(
            Refused {
                reason,
                tenant_id: Some(tenant_id),
                key_id: Some(key_id),
            },
            host_tenant_id,
        )
    };
    let tenant = credential_tenant(
        state,
        host_tenant,
        tenant_id,
        &key_id.to_string(),
        Some(key_id),
        false,
        mismatch,
    )
    .await?;
    Ok((key, tenant))
}

/// Verifies an access token ([`crate::service::tokens::TokenService::verify`]) and its tenant (active
/// unless `suspended_ok`). Every refusal is audited and answers one 401 `invalid_token`; a server
/// that cannot check revocations answers 503. Callers go through [`authorize_access_token`].
async fn authenticate_access_token_in(
    state: &AppState,
    presented: &str,
    audience: Option<&str>,
    host_tenant: Option<Tenant>,
    suspended_ok: bool,
) -> Result<(crate::service::tokens::VerifiedToken, Tenant), ApiError> {
    let host_tenant_id = host_tenant.as_ref().map(|t| t.id);
    let token = match state.tokens().verify_for(presented, audience) {
        Ok(token) => token,
        Err(TokenRefusal::Unavailable) => {
            AuditLine::failure("auth.failure")
                .tenant_if(host_tenant_id)
                .with(Detail::Reason, "TokenStateUnavailable")
                .error("signing keys or revocations not loaded; token refused");
            return Err(ApiError::Unavailable);
        }
        Err(refusal) => return Err(audit_token_refusal(refusal, host_tenant_id, None)),
    };
    let (tenant_id, token_id) = (token.tenant_id, token.token_id);
    let mismatch = || {
        audit_token_refusal(
            TokenRefusal::Invalid(bulkhead_auth::TokenError::Audience),
            host_tenant_id,
            Some((tenant_id, token_id)),
        )
    };
    let tenant = credential_tenant(
        state,
        host_tenant,
        tenant_id,
        &token.claims.sub,
        None,
        suspended_ok,
        mismatch,
    )
    .await?;
    // Each tenant is its own issuer: any other `iss` is refused like another tenant's token.
    if token.claims.iss != state.config().tokens.tenant_issuer(&tenant.slug) {
        return Err(mismatch());
    }
    Ok((token, tenant))
}

fn audit_token_refusal(
    refusal: TokenRefusal,
    host_tenant: Option<TenantId>,
    known: Option<(TenantId, bulkhead_core::AccessTokenId)>,
) -> ApiError {
    let reason = match refusal {
        TokenRefusal::Invalid(err) => format!("{err:?}"),
        TokenRefusal::Revoked => "Revoked".to_owned(),
        TokenRefusal::UnreadableClaims => "UnreadableClaims".to_owned(),
        TokenRefusal::AddressNotAllowed => "AddressNotAllowed".to_owned(),
        TokenRefusal::Unavailable => "Unavailable".to_owned(),
    };
    let reason = if known.is_some() {
        "TenantMismatch".to_owned()
    } else {
        reason
    };
    tracing::warn!(
        target: "bulkhead::audit",
        action = "auth.failure",
        outcome = "failure",
        credential = "access_token",
        reason = %reason,
        tenant_id = known.map(|k| k.0).or(host_tenant).map(|t| t.to_string()),
        token_id = known.map(|k| k.1.to_string()),
        "access token refused"
    );
    crate::service::audit_log::auth_failure_in_scope(
        known.map(|k| k.0).or(host_tenant),
        None,
        format!("AccessToken{reason}"),
        bulkhead_store::audit::Outcome::Failure,
    );
    metrics::counter!("bulkhead_auth_failures_total").increment(1);
    ApiError::InvalidToken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_signal_reads_one_label_under_the_base_domain() {
        let base = "bulkhead.test";
        let slug = |s: &str| HostSignal::Slug(TenantSlug::parse(s).unwrap());
        assert_eq!(host_signal("acme.bulkhead.test", base), slug("acme"));
        assert_eq!(host_signal("ACME.Bulkhead.Test:8080", base), slug("acme"));
        assert_eq!(host_signal("acme.bulkhead.test.", base), slug("acme"));
        assert_eq!(host_signal("bulkhead.test", base), HostSignal::None);
        assert_eq!(host_signal("127.0.0.1:8080", base), HostSignal::None);
        assert_eq!(host_signal("[::1]:8080", base), HostSignal::None);
        assert_eq!(host_signal("acmebulkhead.test", base), HostSignal::None);
        assert_eq!(
            host_signal("a.acme.bulkhead.test", base),
            HostSignal::Invalid
        );
        assert_eq!(host_signal("www.bulkhead.test", base), HostSignal::Invalid);
        assert_eq!(host_signal("-x-.bulkhead.test", base), HostSignal::Invalid);
    }
}
