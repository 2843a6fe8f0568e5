//! # Bulkhead resource server
//!
//! A tower [`Layer`](tower::Layer) for the servers a tenant runs as protected resources (an
//! API, an MCP server) registered in Bulkhead (`/v1/oauth-resources`). It lets a request through
//! only with a Bulkhead access token issued for this resource, carrying the scopes the route
//! needs, and puts the verified [`VerifiedAccess`] in the request's extensions.
//!
//! ```no_run
//! # async fn handler() {}
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::routing::get;
//! let server = bulkhead_resource_server::ResourceServer::builder()
//!     .issuer("https://acme.bulkhead.example")    // the tenant's issuer: its own origin
//!     .resource("https://acme.bulkhead.example/mcp/search")
//!     .tenant_id("tnt_…")
//!     // keys: `<issuer>/.well-known/jwks.json` unless `.jwks_url(…)` says otherwise
//!     .resource_metadata("https://acme.bulkhead.example/.well-known/oauth-protected-resource/ores_…")
//!     .introspection("https://acme.bulkhead.example/oauth/introspect", Some("key_…".into()), "bk_live_…")
//!     .build()?;
//! let app: axum::Router = axum::Router::new()
//!     .route("/search", get(handler).layer(server.require(["tools:call:search"])?))
//!     .route("/sessions", get(handler).layer(server.require(["sessions:read"])?));
//! # Ok(()) }
//! ```
//!
//! ## Invariants
//!
//! * **Fail closed.** A request passes only after every check below succeeded; any doubt is a
//!   refusal. With no key set ever fetched, or an introspection answer neither remembered nor
//!   obtainable, the answer is `503` with `Retry-After` (the token may be good; the server
//!   cannot tell), never a pass.
//! * **The token** is verified exactly as Bulkhead verifies its own (one function,
//!   `bulkhead_auth::token::verify_access_token_with_kid`): at most 8 KiB; header members only
//!   `alg`/`typ`/`kid`; `alg` `EdDSA`; `typ` `at+jwt`; a `kid` of the issuer's JWKS; the
//!   Ed25519 signature; claims without unknown or duplicate members; `iss` exactly the
//!   tenant's issuer (each Bulkhead tenant is its own issuer, `https://<slug>.<base-domain>`);
//!   **`aud` exactly this resource's identifier**; `exp`, `nbf`, `iat` within 30 s of the
//!   clock; a lifetime of at most 60 minutes. Then **`tenant_id` exactly the configured
//!   tenant**.
//! * **Keys** come from the configured JWKS URL only (by default the issuer's, the `jwks_uri` of
//!   the tenant's metadata) (never from a token header), over https
//!   (http only to a loopback IP literal, when allowed), without redirects or proxies, at most
//!   64 KiB. Fetched when unknown or older than the maximum age, **at most once per minimum
//!   refresh interval** whatever is presented; the last good set is kept when the issuer is
//!   down.
//! * **Revocation**: with introspection configured, every token is asked of Bulkhead
//!   (`POST /oauth/introspect` with an API key of the tenant) and the answer reused for at most
//!   the introspection cache time (10 s by default, 60 s at most): a revoked token, a disabled
//!   user's, a deleted resource's, is refused at most that late. The answer must be `active`
//!   and name this resource, tenant and `jti`; its `scope` (the effective scopes, cut to the
//!   user's roles now) is what the route checks. Without introspection, the builder requires an
//!   explicit opt-out and revocation is not seen before the token expires.
//! * **Networks**: a token minted from an API key with an IP allowlist carries it
//!   (`allowed_networks`), and introspection reports the keys' allowlists as they are now; the
//!   caller's address must lie in a network of every list, as at Bulkhead's own API. The
//!   address is what [`Builder::peer_address`] reads from the request; without it, or when it
//!   reads none, such a token is refused (`401`), never admitted unchecked.
//! * **Scopes**: each layer names the scopes its routes need; all must be held, else `403`.
//! * **Answers** (RFC 6750 §3, RFC 9728 §5.1): no token: `401` with
//!   `WWW-Authenticate: Bearer [scope="…", ]resource_metadata="…"`; a token that fails any
//!   check: the same with `error="invalid_token"`; a missing scope: `403` with
//!   `error="insufficient_scope", scope="<every scope the route needs>"`. Which check failed is
//!   logged (target `bulkhead_resource_server`), never answered; the token is never logged.
//!
//! The non-Rust equivalent of these checks is in `docs/resource-servers.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod challenge;
mod config;
mod introspection;
mod jwks;
mod layer;
mod verify;

use std::sync::Arc;

pub use config::{
    Builder, ConfigError, DEFAULT_INTROSPECTION_CACHE, DEFAULT_JWKS_MAX_AGE,
    DEFAULT_JWKS_MIN_REFRESH, ISSUER_TIMEOUT, MAX_INTROSPECTION_CACHE,
};
pub use layer::{RequireToken, RequireTokenService};
pub use verify::VerifiedAccess;

/// Seconds since the epoch.
type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The verifier of one protected resource: its settings, the JWKS cache and the introspection
/// cache. Cheap to clone; every layer made from it shares the caches.
#[derive(Clone)]
pub struct ResourceServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ResourceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceServer")
            .field("resource", &self.shared.resource)
            .field("tenant_id", &self.shared.tenant_id)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) issuer: String,
    /// Invariant: tokens pass only with exactly this `aud`.
    pub(crate) resource: String,
    /// Invariant: tokens pass only with exactly this `tenant_id`.
    pub(crate) tenant_id: String,
    /// Invariant: writable in a quoted string (checked by the builder).
    pub(crate) metadata: String,
    pub(crate) jwks: jwks::Jwks,
    /// `None` only after an explicit opt-out of revocation checks.
    pub(crate) introspection: Option<introspection::Introspection>,
    pub(crate) clock: Clock,
    /// Reads the caller's address from a request; `None`: tokens with network restrictions
    /// are refused.
    pub(crate) peer_address: Option<PeerAddress>,
}

/// Reads the caller's IP address from a request's extensions.
type PeerAddress = Arc<dyn Fn(&http::Extensions) -> Option<std::net::IpAddr> + Send + Sync>;

impl ResourceServer {
    /// Starts a configuration.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A layer admitting requests with a token for this resource that holds every one of
    /// `scopes` (none: any valid token). Each scope must be an RFC 6749 scope token.
    pub fn require<I, S>(&self, scopes: I) -> Result<RequireToken, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        if !scopes.iter().all(|s| config::valid_scope(s)) {
            return Err(ConfigError::Scope);
        }
        Ok(RequireToken::new(self.shared.clone(), scopes))
    }
}
