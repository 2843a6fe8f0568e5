//! What a resource server tells the layer about itself, checked once by [`Builder::build`].

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::challenge::quoted;
use crate::introspection::{Introspection, IntrospectionClient};
use crate::jwks::Jwks;
use crate::{Clock, PeerAddress, ResourceServer, Shared};

/// Longest an introspection answer may be reused: the bound on how late a revocation is seen.
pub const MAX_INTROSPECTION_CACHE: Duration = Duration::from_secs(60);
/// Default reuse of an introspection answer.
pub const DEFAULT_INTROSPECTION_CACHE: Duration = Duration::from_secs(10);
/// Default least time between two JWKS fetches (an unknown `kid` waits for the next one).
pub const DEFAULT_JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);
/// Default age after which a JWKS is fetched again before use.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Time allowed for one request to the issuer (connect and read).
pub const ISSUER_TIMEOUT: Duration = Duration::from_secs(5);

/// A configuration the layer refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is missing.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A URL is not an absolute URL.
    #[error("{0} is not a URL")]
    NotAUrl(&'static str),
    /// A URL the layer fetches is not `https` (nor `http` to a loopback address with
    /// [`Builder::allow_loopback_http`]), or carries user information or a fragment.
    #[error("{0} must be an https URL without user information or fragment")]
    Insecure(&'static str),
    /// A value cannot be written into a challenge header.
    #[error("{0} holds a character a header cannot carry")]
    Unprintable(&'static str),
    /// A scope name is not an RFC 6749 scope token.
    #[error("a scope name is empty or holds a character RFC 6749 does not allow")]
    Scope,
    /// Neither introspection nor an explicit opt-out of revocation checks was configured, or
    /// both were.
    #[error("configure introspection, or opt out of revocation checks explicitly (not both)")]
    Revocation,
    /// A duration outside its bounds.
    #[error("{0} is out of bounds")]
    Duration(&'static str),
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built")]
    Client,
}

/// Builds a [`ResourceServer`]. Every setting without a default is required.
#[derive(Default)]
pub struct Builder {
    issuer: Option<String>,
    resource: Option<String>,
    tenant_id: Option<String>,
    jwks_url: Option<String>,
    resource_metadata: Option<String>,
    introspection: Option<IntrospectionClient>,
    no_revocation_checks: bool,
    introspection_cache: Option<Duration>,
    jwks_min_refresh: Option<Duration>,
    jwks_max_age: Option<Duration>,
    allow_loopback_http: bool,
    clock: Option<Clock>,
    peer_address: Option<PeerAddress>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("issuer", &self.issuer)
            .field("resource", &self.resource)
            .field("tenant_id", &self.tenant_id)
            .field("jwks_url", &self.jwks_url)
            .field("introspection", &self.introspection)
            .finish_non_exhaustive()
    }
}

fn parse_url(text: &str, what: &'static str) -> Result<Url, ConfigError> {
    Url::parse(text).map_err(|_| ConfigError::NotAUrl(what))
}

/// A URL the layer connects to: https, or http to a loopback IP literal when allowed (never a
/// name such as `localhost`, which a resolver could point anywhere).
fn fetched_url(text: &str, what: &'static str, loopback_http: bool) -> Result<Url, ConfigError> {
    let url = parse_url(text, what)?;
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(ConfigError::Insecure(what));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback_http && loopback => Ok(url),
        _ => Err(ConfigError::Insecure(what)),
    }
}

/// RFC 6749 §3.3 `scope-token`: `%x21 / %x23-5B / %x5D-7E`, so it never needs escaping.
pub(crate) fn valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

impl Builder {
    /// The issuer of the resource's tenant, exactly as Bulkhead writes `iss`: the tenant's own
    /// origin, `https://<slug>.<base-domain>` (the `issuer` of the tenant's RFC 8414 metadata,
    /// and of the `authorization_servers` of the resource's RFC 9728 metadata). Another
    /// tenant's tokens carry another issuer.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// This resource's identifier as registered in Bulkhead (`/v1/oauth-resources`): tokens
    /// must carry exactly it as `aud`.
    pub fn resource(mut self, identifier: impl Into<String>) -> Self {
        self.resource = Some(identifier.into());
        self
    }

    /// The tenant (`tnt_…`) that registered the resource: tokens must carry it as `tenant_id`.
    pub fn tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// Where the issuer publishes its keys. Default: `<issuer>/.well-known/jwks.json`, the
    /// `jwks_uri` the tenant's metadata names (the keys are the deployment's, served on every
    /// host of it).
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// The resource's RFC 9728 metadata URL, named in every challenge (Bulkhead serves it at
    /// `https://<tenant>.<base-domain>/.well-known/oauth-protected-resource/<ores_…>`).
    pub fn resource_metadata(mut self, url: impl Into<String>) -> Self {
        self.resource_metadata = Some(url.into());
        self
    }

    /// Checks every token against Bulkhead's introspection endpoint (`<issuer>/oauth/introspect`,
    /// on the tenant's subdomain or the bare issuer), authenticating with an API key of the
    /// resource's tenant: `client_id` its `key_…` id (HTTP Basic) or `None` (the key alone, in
    /// the body). Answers are reused for [`Builder::introspection_cache`].
    pub fn introspection(
        mut self,
        url: impl Into<String>,
        client_id: Option<String>,
        api_key: impl Into<String>,
    ) -> Self {
        self.introspection = Some(IntrospectionClient {
            url: url.into(),
            client_id,
            secret: api_key.into(),
        });
        self
    }

    /// Opts out of revocation checks: a revoked token is then accepted until it expires (at
    /// most 60 minutes). Only for resources that accept that.
    pub fn without_revocation_checks(mut self) -> Self {
        self.no_revocation_checks = true;
        self
    }

    /// How long an introspection answer is reused (default 10 s, at most 60 s, at least 1 s):
    /// a revocation is seen at most this late.
    pub fn introspection_cache(mut self, ttl: Duration) -> Self {
        self.introspection_cache = Some(ttl);
        self
    }

    /// Least time between two JWKS fetches (default 30 s, at least 1 s): however many unknown
    /// `kid`s arrive, the issuer is asked at most once per interval.
    pub fn jwks_min_refresh(mut self, interval: Duration) -> Self {
        self.jwks_min_refresh = Some(interval);
        self
    }

    /// Age after which the JWKS is fetched again before use (default 5 minutes).
    pub fn jwks_max_age(mut self, age: Duration) -> Self {
        self.jwks_max_age = Some(age);
        self
    }

    /// Allows `http` for the JWKS and introspection URLs when they name a loopback IP address
    /// (tests, or a Bulkhead on the same host). Off by default.
    pub fn allow_loopback_http(mut self, allow: bool) -> Self {
        self.allow_loopback_http = allow;
        self
    }

    /// How the layer learns the caller's IP address from a request's extensions, for tokens
    /// bound to networks (minted from an API key with an IP allowlist): with axum,
    /// `|ext| ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())`
    /// and a server made with `into_make_service_with_connect_info`; behind a proxy, the
    /// address your proxy vouches for. Without it such tokens are refused.
    pub fn peer_address(
        mut self,
        read: impl Fn(&http::Extensions) -> Option<std::net::IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.peer_address = Some(Arc::new(read));
        self
    }

    /// The time source, in seconds since the epoch (default: the system clock).
    pub fn clock(mut self, now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(now));
        self
    }

    /// Checks the settings and builds the shared verifier.
    pub fn build(self) -> Result<ResourceServer, ConfigError> {
        let issuer = self.issuer.ok_or(ConfigError::Missing("issuer"))?;
        let resource = self.resource.ok_or(ConfigError::Missing("resource"))?;
        let tenant_id = self.tenant_id.ok_or(ConfigError::Missing("tenant_id"))?;
        let issuer_url = parse_url(&issuer, "issuer")?;
        // The tenant's metadata names its keys under its issuer (RFC 8414 `jwks_uri`).
        let jwks_url = self
            .jwks_url
            .unwrap_or_else(|| format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')));
        if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
            return Err(ConfigError::NotAUrl("issuer"));
        }
        let metadata = self
            .resource_metadata
            .ok_or(ConfigError::Missing("resource_metadata"))?;
        parse_url(&resource, "resource")?;
        parse_url(&metadata, "resource_metadata")?;
        quoted(&metadata).map_err(|_| ConfigError::Unprintable("resource_metadata"))?;
        let jwks_url = fetched_url(&jwks_url, "jwks_url", self.allow_loopback_http)?;
        let introspection = match (self.introspection, self.no_revocation_checks) {
            (Some(client), false) => {
                fetched_url(&client.url, "introspection", self.allow_loopback_http)?;
                Some(client)
            }
            (None, true) => None,
            _ => return Err(ConfigError::Revocation),
        };
        let cache = self
            .introspection_cache
            .unwrap_or(DEFAULT_INTROSPECTION_CACHE);
        if cache < Duration::from_secs(1) || cache > MAX_INTROSPECTION_CACHE {
            return Err(ConfigError::Duration("introspection_cache"));
        }
        let min_refresh = self.jwks_min_refresh.unwrap_or(DEFAULT_JWKS_MIN_REFRESH);
        let max_age = self.jwks_max_age.unwrap_or(DEFAULT_JWKS_MAX_AGE);
        if min_refresh < Duration::from_secs(1) || max_age < min_refresh {
            return Err(ConfigError::Duration("jwks_min_refresh"));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ISSUER_TIMEOUT)
            .connect_timeout(ISSUER_TIMEOUT)
            .https_only(!self.allow_loopback_http)
            .build()
            .map_err(|_| ConfigError::Client)?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(system_now));
        Ok(ResourceServer {
            shared: Arc::new(Shared {
                issuer,
                resource,
                tenant_id,
                metadata,
                jwks: Jwks::new(http.clone(), jwks_url, min_refresh, max_age),
                introspection: introspection.map(|c| Introspection::new(http, c, cache)),
                clock,
                peer_address: self.peer_address,
            }),
        })
    }
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Builder {
        ResourceServer::builder()
            .issuer("https://acme.bulkhead.example")
            .resource("https://acme.bulkhead.example/mcp")
            .tenant_id("tnt_x")
            .jwks_url("https://bulkhead.example/.well-known/jwks.json")
            .resource_metadata(
                "https://acme.bulkhead.example/.well-known/oauth-protected-resource/ores_x",
            )
    }

    #[test]
    fn fetched_urls_are_https_unless_loopback_http_is_allowed() {
        assert!(base().without_revocation_checks().build().is_ok());
        assert_eq!(
            base().build().err(),
            Some(ConfigError::Revocation),
            "revocation is a decision"
        );
        for bad in [
            "http://bulkhead.example/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "https://u:p@bulkhead.example/jwks",
            "https://bulkhead.example/jwks#x",
        ] {
            assert_eq!(
                base()
                    .jwks_url(bad)
                    .without_revocation_checks()
                    .build()
                    .err(),
                Some(ConfigError::Insecure("jwks_url")),
                "{bad}"
            );
        }
        let loopback = |url: &str| {
            base()
                .jwks_url(url)
                .allow_loopback_http(true)
                .without_revocation_checks()
                .build()
                .err()
        };
        assert_eq!(loopback("http://127.0.0.1:8080/jwks"), None);
        assert_eq!(loopback("http://[::1]:8080/jwks"), None);
        assert_eq!(
            loopback("http://localhost:8080/jwks"),
            Some(ConfigError::Insecure("jwks_url"))
        );
        assert_eq!(
            loopback("http://10.0.0.1/jwks"),
            Some(ConfigError::Insecure("jwks_url"))
        );
    }

    #[test]
    fn the_keys_default_to_the_tenant_issuers_jwks_uri() {
        let server = ResourceServer::builder()
            .issuer("https://acme.bulkhead.example")
            .resource("https://acme.bulkhead.example/mcp")
            .tenant_id("tnt_x")
            .resource_metadata(
                "https://acme.bulkhead.example/.well-known/oauth-protected-resource/x",
            )
            .without_revocation_checks()
            .build()
            .expect("the JWKS URL is derived from the issuer");
        assert_eq!(
            server.shared.jwks.url().as_str(),
            "https://acme.bulkhead.example/.well-known/jwks.json"
        );
        let no_issuer = ResourceServer::builder()
            .resource("https://acme.bulkhead.example/mcp")
            .tenant_id("tnt_x")
            .resource_metadata("https://acme.bulkhead.example/x")
            .without_revocation_checks()
            .build();
        assert_eq!(no_issuer.err(), Some(ConfigError::Missing("issuer")));
        let not_a_url = base().issuer("acme").without_revocation_checks().build();
        assert_eq!(not_a_url.err(), Some(ConfigError::NotAUrl("issuer")));
    }

    #[test]
    fn scope_tokens_never_need_escaping() {
        assert!(valid_scope("sessions:read"));
        assert!(valid_scope("tools:call:search"));
        for bad in ["", "a b", "a\"b", "a\\b", "é", "a\nb"] {
            assert!(!valid_scope(bad), "{bad:?}");
        }
    }
}
