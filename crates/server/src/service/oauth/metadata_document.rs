//! Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document; the MCP
//! 2025-11-25 authorization specification): a `client_id` that is an `https` URL with a path
//! names a JSON document, served there by the client, that describes it.
//!
//! - The URL must be `https`, have a path below the root, no query, fragment or user
//!   information, and be written as the URL parser writes it (no dot segments, lowercase host);
//!   anything else is refused before any connection.
//! - The document is fetched through the egress guard under [`egress_policy`] (its own client,
//!   not the tool client: none of the operator's webhook allow-list, ports or proxy; the
//!   tenant's own connection pool, every resolved address judged; a private address is refused
//!   and never connected to), at most
//!   [`MAX_DOCUMENT_BYTES`] within [`FETCH_TIMEOUT`], redirects not followed (a 3xx is refused).
//! - It must be a JSON object whose `client_id` is the URL exactly, with `client_name` (1 to
//!   100 characters) and 1 to 10 `redirect_uris`, each registrable as an admin's would be.
//!   The client is public (`token_endpoint_auth_method` absent or `none`); `private_key_jwt`
//!   and every other method are refused (decision: no client assertions yet). Its `scope`, if
//!   any, is cut to the tenant's ceiling for self-registered clients.
//! - Good documents are cached per tenant and URL for what their `Cache-Control: max-age`
//!   says, within [`MIN_TTL`] and [`MAX_TTL`] ([`DEFAULT_TTL`] without one; `no-store` or
//!   `no-cache` is the minimum), at most [`CACHE_CAPACITY`] documents in a process. Refusals
//!   are not cached.
//!
//! Every refusal has a [`Refusal::class`] for the audit event; none names an address.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_core::{OAuthClientId, ScopeSet, TenantId};
use bulkhead_webhooks::{CappedOutcome, EgressClient, EgressError};
use serde_json::Value;

use super::redirect_uri;

/// Largest document read (decision: 5 KiB; ten redirect URIs and a name fit many times over).
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// Longest a fetch may take, body included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest a good document is kept.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest a good document is kept, whatever its headers say.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a document without `max-age` is kept.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Documents a process keeps at most (all tenants; the key carries the tenant).
pub const CACHE_CAPACITY: u64 = 10_000;

/// The egress policy documents are fetched under: the guard's default (https, port 443, no
/// special-purpose address allowed) with the deployment's own domain refused. Deliberately none
/// of the operator's webhook exceptions (`webhook_allow_cidrs`, `webhook_ports`,
/// `webhook_proxy`): an anonymous caller names the URL.
pub fn egress_policy(base_domain: &str) -> bulkhead_webhooks::EgressPolicy {
    bulkhead_webhooks::EgressPolicy {
        platform_domains: vec![base_domain.to_owned()],
        ..bulkhead_webhooks::EgressPolicy::default()
    }
}

/// Why a metadata document is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The URL is `http` (or another scheme).
    HttpScheme,
    /// The URL has no path below the root.
    NoPath,
    /// Query, fragment, user information, or a spelling the parser would change.
    NotCanonical,
    /// The egress guard refused the host or its address (class `blocked_address`,
    /// `blocked_url` or `dns`).
    Blocked(&'static str),
    /// The document is larger than [`MAX_DOCUMENT_BYTES`].
    TooLarge,
    /// Not answered within [`FETCH_TIMEOUT`].
    Timeout,
    /// Connection or TLS failure.
    Transport,
    /// A 3xx answer (redirects are not followed).
    Redirect,
    /// Any other answer than 200.
    Status,
    /// Not a JSON object.
    NotJson,
    /// Its `client_id` is not the URL exactly.
    ClientIdMismatch,
    /// `client_name` or `redirect_uris` missing or wrong.
    InvalidMetadata,
    /// A `token_endpoint_auth_method` other than `none`.
    AuthMethod,
    /// Nothing of its `scope` is open to self-registered clients.
    Scope,
    /// The tenant does not accept metadata documents.
    Disabled,
    /// Too many fetches from this address or for this tenant.
    RateLimited,
}

impl Refusal {
    /// A short stable class for the audit event (never an address).
    pub fn class(self) -> &'static str {
        match self {
            Refusal::HttpScheme => "http_scheme",
            Refusal::NoPath => "no_path",
            Refusal::NotCanonical => "not_canonical",
            Refusal::Blocked(class) => class,
            Refusal::TooLarge => "too_large",
            Refusal::Timeout => "timeout",
            Refusal::Transport => "transport",
            Refusal::Redirect => "redirect",
            Refusal::Status => "status",
            Refusal::NotJson => "not_json",
            Refusal::ClientIdMismatch => "client_id_mismatch",
            Refusal::InvalidMetadata => "invalid_metadata",
            Refusal::AuthMethod => "auth_method",
            Refusal::Scope => "scope",
            Refusal::Disabled => "disabled",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

/// Whether a `client_id` is meant as a metadata document's URL (rather than an `oac_…` id).
pub fn is_url(client_id: &str) -> bool {
    client_id.contains("://")
}

/// Checks the URL itself, before any connection.
pub fn check_url(client_id: &str) -> Result<url::Url, Refusal> {
    let url = url::Url::parse(client_id).map_err(|_| Refusal::NotCanonical)?;
    if url.scheme() != "https" {
        return Err(Refusal::HttpScheme);
    }
    if url.path().is_empty() || url.path() == "/" {
        return Err(Refusal::NoPath);
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.as_str() != client_id
    {
        return Err(Refusal::NotCanonical);
    }
    Ok(url)
}

/// The id a metadata-document client's row has in `tenant`: derived from the tenant and the
/// URL (UUIDv5), so the same URL is the same client in one tenant and another in the next.
pub fn client_id_for(tenant: TenantId, url: &str) -> OAuthClientId {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x3f0c_5a41_8d2e_4b7a_9c61_2e5d_7f80_a1b3);
    let mut name = tenant.uuid().as_bytes().to_vec();
    name.extend_from_slice(url.as_bytes());
    OAuthClientId::from_uuid(uuid::Uuid::new_v5(&NAMESPACE, &name))
}

/// A document that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Its URL (the `client_id`).
    pub url: String,
    /// `client_name`.
    pub name: String,
    /// `redirect_uris`.
    pub redirect_uris: Vec<String>,
    /// `scope` cut to the ceiling, or the ceiling when absent.
    pub scopes: ScopeSet,
}

/// Checks a fetched document against its URL and the tenant's ceiling.
pub fn parse_document(url: &str, body: &[u8], ceiling: &ScopeSet) -> Result<Document, Refusal> {
    let value: Value = serde_json::from_slice(body).map_err(|_| Refusal::NotJson)?;
    if !value.is_object() {
        return Err(Refusal::NotJson);
    }
    if value.get("client_id").and_then(Value::as_str) != Some(url) {
        return Err(Refusal::ClientIdMismatch);
    }
    match value.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => {}
        Some(Value::String(method)) if method == "none" => {}
        Some(_) => return Err(Refusal::AuthMethod),
    }
    let name = value
        .get("client_name")
        .and_then(Value::as_str)
        .and_then(super::display_name)
        .ok_or(Refusal::InvalidMetadata)?;
    let redirect_uris: Vec<String> = value
        .get("redirect_uris")
        .and_then(Value::as_array)
        .and_then(|items| {
            items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .filter(|uris| (1..=10).contains(&uris.len()))
        .ok_or(Refusal::InvalidMetadata)?;
    if redirect_uris
        .iter()
        .any(|uri| redirect_uri::check_registrable(uri).is_err())
    {
        return Err(Refusal::InvalidMetadata);
    }
    let scopes = match value.get("scope") {
        None | Some(Value::Null) => ceiling.clone(),
        Some(Value::String(text)) => {
            // Unknown names are dropped: the document may serve other servers too.
            let asked = text
                .split(' ')
                .filter_map(|s| ScopeSet::parse_all([s]).ok())
                .fold(ScopeSet::default(), |all, one| all.union(&one));
            asked.intersection(ceiling)
        }
        Some(_) => return Err(Refusal::InvalidMetadata),
    };
    if scopes.is_empty() {
        return Err(Refusal::Scope);
    }
    Ok(Document {
        url: url.to_owned(),
        name: name.to_owned(),
        redirect_uris,
        scopes,
    })
}

/// How long a good document is kept, from its `Cache-Control`.
pub fn ttl(cache_control: Option<&str>) -> Duration {
    let Some(header) = cache_control else {
        return DEFAULT_TTL;
    };
    let mut max_age = None;
    for directive in header.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-store" || directive == "no-cache" {
            return MIN_TTL;
        }
        if let Some(seconds) = directive.strip_prefix("max-age=") {
            max_age = seconds.trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TTL)
        .clamp(MIN_TTL, MAX_TTL)
}

struct Cached {
    document: Document,
    ttl: Duration,
}

struct DocumentExpiry;

impl moka::Expiry<(TenantId, String), Arc<Cached>> for DocumentExpiry {
    fn expire_after_create(
        &self,
        _key: &(TenantId, String),
        value: &Arc<Cached>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The documents a process has fetched, per tenant and URL.
#[derive(Clone)]
pub struct DocumentCache {
    cache: moka::sync::Cache<(TenantId, String), Arc<Cached>>,
}

impl std::fmt::Debug for DocumentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentCache")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl Default for DocumentCache {
    fn default() -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .expire_after(DocumentExpiry)
                .build(),
        }
    }
}

impl DocumentCache {
    /// The tenant's cached document for `url`, if it is still fresh. The scopes are cut again
    /// to the ceiling in force.
    pub fn get(&self, tenant: TenantId, url: &str, ceiling: &ScopeSet) -> Option<Document> {
        let cached = self.cache.get(&(tenant, url.to_owned()))?;
        let mut document = cached.document.clone();
        document.scopes = document.scopes.intersection(ceiling);
        Some(document)
    }

    fn insert(&self, tenant: TenantId, document: Document, ttl: Duration) {
        let key = (tenant, document.url.clone());
        self.cache.insert(key, Arc::new(Cached { document, ttl }));
    }
}

/// Fetches and checks the document at `url` (already through [`check_url`]) for `tenant`, and
/// caches it.
pub async fn fetch(
    egress: &EgressClient,
    cache: &DocumentCache,
    tenant: TenantId,
    url: &str,
    ceiling: &ScopeSet,
) -> Result<Document, Refusal> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    let outcome = egress
        .get_capped(tenant, url, headers, MAX_DOCUMENT_BYTES, FETCH_TIMEOUT)
        .await;
    let (body, cache_control) = match outcome {
        CappedOutcome::Response {
            status: 200,
            body,
            cache_control,
            ..
        } => (body, cache_control),
        CappedOutcome::Response { status, .. } if (300..400).contains(&status) => {
            return Err(Refusal::Redirect)
        }
        CappedOutcome::Response { .. } => return Err(Refusal::Status),
        CappedOutcome::TooLarge { .. } => return Err(Refusal::TooLarge),
        CappedOutcome::Blocked(err) => return Err(blocked(&err)),
        CappedOutcome::Transport {
            class: "timeout", ..
        } => return Err(Refusal::Timeout),
        CappedOutcome::Transport { .. } => return Err(Refusal::Transport),
    };
    let document = parse_document(url, &body, ceiling)?;
    cache.insert(tenant, document.clone(), ttl(cache_control.as_deref()));
    Ok(document)
}

fn blocked(err: &EgressError) -> Refusal {
    match err.class() {
        "blocked_address" => Refusal::Blocked("private_address"),
        "dns" => Refusal::Blocked("dns"),
        _ => Refusal::Blocked("blocked_url"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_https_urls_with_a_path_name_documents() {
        assert!(check_url("https://app.example/client.json").is_ok());
        assert!(check_url("https://app.example:8443/a/b").is_ok());
        for (url, refusal) in [
            ("http://app.example/client.json", Refusal::HttpScheme),
            ("https://app.example", Refusal::NoPath),
            ("https://app.example/", Refusal::NoPath),
            ("https://app.example/a?b=c", Refusal::NotCanonical),
            ("https://app.example/a#b", Refusal::NotCanonical),
            ("https://u@app.example/a", Refusal::NotCanonical),
            ("https://APP.example/a", Refusal::NotCanonical),
            ("https://app.example/a/../b", Refusal::NotCanonical),
            ("https://app.example:443/a", Refusal::NotCanonical),
        ] {
            assert_eq!(check_url(url).unwrap_err(), refusal, "{url}");
        }
    }

    #[test]
    fn cache_lifetimes_follow_the_headers_within_bounds() {
        assert_eq!(ttl(None), DEFAULT_TTL);
        assert_eq!(ttl(Some("public, max-age=3600")), Duration::from_secs(3600));
        assert_eq!(ttl(Some("max-age=1")), MIN_TTL);
        assert_eq!(ttl(Some("max-age=99999999")), MAX_TTL);
        assert_eq!(ttl(Some("no-store")), MIN_TTL);
    }

    #[test]
    fn a_document_must_name_its_own_url_and_be_public() {
        let ceiling = ScopeSet::parse_all(["sessions:read"]).unwrap();
        let url = "https://app.example/client.json";
        let good = serde_json::json!({
            "client_id": url, "client_name": "App",
            "redirect_uris": ["http://127.0.0.1/cb"], "scope": "sessions:read other:thing",
        });
        let document = parse_document(url, good.to_string().as_bytes(), &ceiling).unwrap();
        assert_eq!(document.scopes, ceiling);
        let mut other = good.clone();
        other["client_id"] = "https://app.example/client.json/".into();
        assert_eq!(
            parse_document(url, other.to_string().as_bytes(), &ceiling),
            Err(Refusal::ClientIdMismatch)
        );
        let mut jwt = good.clone();
        jwt["token_endpoint_auth_method"] = "private_key_jwt".into();
        assert_eq!(
            parse_document(url, jwt.to_string().as_bytes(), &ceiling),
            Err(Refusal::AuthMethod)
        );
        let mut bad_uri = good;
        bad_uri["redirect_uris"] = serde_json::json!(["http://evil.example/cb"]);
        assert_eq!(
            parse_document(url, bad_uri.to_string().as_bytes(), &ceiling),
            Err(Refusal::InvalidMetadata)
        );
    }
}
