//! API-key verification: format, checksum, peppered lookup, status, expiry, grace, IP allowlist.
//!
//! # Caching and revocation
//! Verified records are cached in memory by the key's hash under the current pepper, for at most
//! the key cache lifetime (`--key-cache-secs`, 60 seconds unless set). Every change that can
//! stop a key (revoke, rotate, update, expiry sweep) sends a PostgreSQL `NOTIFY` in its
//! transaction; each process listens and drops the key's entry, so a revocation takes effect
//! everywhere within the notification latency (measured by the
//! `revocation_reaches_a_second_process` test). If the listening connection drops, the whole
//! cache is cleared on reconnect (notifications may have been missed), and entries expire after
//! that lifetime regardless: that is the bound even when notifications fail. Expiry and grace
//! deadlines are evaluated against the clock on every request, never cached.
//!
//! The cache is keyed by the credential's hash, not by tenant: it is consulted to find out which
//! tenant the caller belongs to, before any tenant context exists. It holds no tenant data.
//!
//! # Timing
//! Format and checksum are checked before any lookup: both are functions of the presented string
//! alone. Lookups are by HMAC(pepper, key); comparing such values (in the cache's hash map or
//! the database index) reveals nothing usable without the pepper.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_auth::{ApiKey, KeyEnvironment, KeyHash, KeyPepper};
use bulkhead_core::{ApiKeyId, Clock, ScopeSet, TenantContext, TenantId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::api_keys::{self, effective_status, KeyRecord, KeyStatus};
use bulkhead_store::{Access, Store, StoreError};
use serde_json::json;

/// A key's last use is written at most this often.
const TOUCH_INTERVAL_SECS: i64 = 60;

/// The current pepper and the ones before it (keys hashed with those still verify and are
/// re-hashed under the current one on first use).
#[derive(Debug)]
pub struct Peppers {
    current: KeyPepper,
    previous: Vec<KeyPepper>,
}

impl Peppers {
    /// `previous` in any order; versions must all differ from the current one.
    pub fn new(current: KeyPepper, previous: Vec<KeyPepper>) -> Result<Self, String> {
        if previous.iter().any(|p| p.version() == current.version()) {
            return Err("an old pepper has the same version as the current one".into());
        }
        if previous.len() > 7 {
            return Err("at most 7 old peppers".into());
        }
        Ok(Self { current, previous })
    }

    /// The pepper new hashes are made with.
    pub fn current(&self) -> &KeyPepper {
        &self.current
    }

    fn all_hashes(&self, key: &ApiKey) -> Vec<KeyHash> {
        self.all().map(|p| p.key_hash(key)).collect()
    }

    /// The current pepper, then the older ones.
    pub fn all(&self) -> impl Iterator<Item = &KeyPepper> {
        std::iter::once(&self.current).chain(&self.previous)
    }
}

/// Why a key was refused. Logged and audited; the client always sees one 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong length, prefix, alphabet or checksum.
    Malformed,
    /// A test key on a live deployment or the reverse.
    WrongEnvironment,
    /// No such key.
    UnknownKey,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
    /// A rotated key after its grace period.
    GraceEnded,
    /// The stored record names a scope or network this binary cannot read.
    Unreadable,
    /// The client address is outside the key's allowlist (or unknown).
    AddressNotAllowed,
    /// No credential was presented.
    NoCredential,
    /// A valid key of another tenant than the one the host names.
    TenantMismatch,
    /// The credential's principal (its user or agent) is disabled or gone.
    PrincipalInactive,
}

/// A key that passed every check.
#[derive(Clone)]
pub struct VerifiedKey {
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its record.
    pub key_id: ApiKeyId,
    /// Its scopes.
    pub scopes: ScopeSet,
    /// Who it acts for.
    pub principal: String,
    /// Whether it is a rotated key inside its grace period.
    pub in_grace: bool,
    /// Its IP allowlist (empty: any address). Tokens minted from it carry it.
    pub allowed_ips: Vec<ipnet::IpNet>,
    entry: Arc<Cached>,
}

impl std::fmt::Debug for VerifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedKey")
            .field("tenant_id", &self.tenant_id)
            .field("key_id", &self.key_id)
            .field("in_grace", &self.in_grace)
            .finish_non_exhaustive()
    }
}

/// A refusal with whatever ids were known when it was decided (for the audit event).
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// Why.
    pub reason: Refusal,
    /// The key's tenant, when the key was found.
    pub tenant_id: Option<TenantId>,
    /// The key's record, when found.
    pub key_id: Option<ApiKeyId>,
}

#[derive(Debug)]
struct Cached {
    record: KeyRecord,
    /// Set when the record was found under an old pepper: re-hash after a successful use.
    rehash_to: Option<KeyHash>,
    /// Unix seconds of the last recorded use by this process.
    last_touch: AtomicI64,
}

/// Verifies presented keys. One per process; cheap to share behind the app state.
pub struct KeyVerifier {
    store: Store,
    peppers: Peppers,
    environment: KeyEnvironment,
    clock: Clock,
    cache: moka::future::Cache<KeyHash, Arc<Cached>>,
    /// Bumped by every invalidation. A lookup that raced with one must not leave its (possibly
    /// stale) record in the cache: see [`KeyVerifier::verify`].
    invalidations: AtomicU64,
}

impl std::fmt::Debug for KeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the cache's contents: they are every tenant's key records.
        f.debug_struct("KeyVerifier")
            .field("environment", &self.environment)
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl KeyVerifier {
    /// A verifier for keys of `environment` that trusts a verification without a notification
    /// for at most `cache_ttl` (the settings' key cache lifetime).
    pub fn new(
        store: Store,
        peppers: Peppers,
        environment: KeyEnvironment,
        clock: Clock,
        cache_ttl: Duration,
    ) -> Self {
        Self {
            store,
            peppers,
            environment,
            clock,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cache_ttl)
                .support_invalidation_closures()
                .build(),
            invalidations: AtomicU64::new(0),
        }
    }

    /// The peppers (for minting keys).
    pub fn peppers(&self) -> &Peppers {
        &self.peppers
    }

    /// Checks a presented key for a request from `client_ip` (`None`: unknown address). Has no
    /// side effect beyond the cache: once the whole request is authenticated, call
    /// [`KeyVerifier::record_use`]; a check that is not a use (the leak scanner) does not.
    pub async fn verify(
        &self,
        presented: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<Result<VerifiedKey, Refused>, StoreError> {
        let refuse = |reason, record: Option<&KeyRecord>| Refused {
            reason,
            tenant_id: record.map(|r| r.tenant_id),
            key_id: record.map(|r| r.key_id),
        };
        let Ok(key) = ApiKey::parse(presented) else {
            return Ok(Err(refuse(Refusal::Malformed, None)));
        };
        if key.environment() != self.environment {
            return Ok(Err(refuse(Refusal::WrongEnvironment, None)));
        }
        let current_hash = self.peppers.current.key_hash(&key);
        let cached = match self.cache.get(&current_hash).await {
            Some(hit) => hit,
            None => {
                let epoch = self.invalidations.load(Ordering::SeqCst);
                let hashes = self.peppers.all_hashes(&key);
                let Some(record) = self.store.lookup_api_key(&hashes).await? else {
                    return Ok(Err(refuse(Refusal::UnknownKey, None)));
                };
                let rehash_to = (record.pepper_version != self.peppers.current.version())
                    .then_some(current_hash);
                let entry = Arc::new(Cached {
                    record,
                    rehash_to,
                    last_touch: AtomicI64::new(0),
                });
                self.cache.insert(current_hash, entry.clone()).await;
                // Insert first, then look: an invalidation registered after our insert applies
                // to our entry; one that happened during our lookup is seen here, and we drop
                // what we inserted. Either way a revoked key is never cached as active.
                if self.invalidations.load(Ordering::SeqCst) != epoch {
                    self.cache.invalidate(&current_hash).await;
                }
                entry
            }
        };
        drop(key);
        let record = &cached.record;
        let now = self.clock.now();
        match effective_status(record.status, record.expires_at, record.grace_until, now) {
            KeyStatus::Active | KeyStatus::Rotating => {}
            KeyStatus::Revoked => return Ok(Err(refuse(Refusal::Revoked, Some(record)))),
            KeyStatus::Expired if record.status == KeyStatus::Rotating => {
                return Ok(Err(refuse(Refusal::GraceEnded, Some(record))))
            }
            KeyStatus::Expired => return Ok(Err(refuse(Refusal::Expired, Some(record)))),
        }
        let (Some(scopes), Some(allowed)) = (&record.scopes, &record.allowed_ips) else {
            return Ok(Err(refuse(Refusal::Unreadable, Some(record))));
        };
        if !allowed.is_empty()
            && !client_ip.is_some_and(|ip| allowed.iter().any(|net| net.contains(&ip)))
        {
            return Ok(Err(refuse(Refusal::AddressNotAllowed, Some(record))));
        }
        let in_grace = record.status == KeyStatus::Rotating;
        Ok(Ok(VerifiedKey {
            tenant_id: record.tenant_id,
            key_id: record.key_id,
            scopes: scopes.clone(),
            principal: record.principal.clone(),
            in_grace,
            allowed_ips: allowed.clone(),
            entry: cached.clone(),
        }))
    }

    /// Records a successful, fully authenticated use: last use (at most once a minute per key and
    /// process), a grace-use audit event, and re-hashing under the current pepper when needed.
    pub fn record_use(&self, key: &VerifiedKey, client_ip: Option<IpAddr>) {
        if let Some(hash) = key.entry.rehash_to {
            self.spawn_rehash(&key.entry.record, hash);
        }
        self.maybe_touch(&key.entry, client_ip, key.in_grace);
    }

    /// Records the use in the background, at most once a minute per key and process, so the hot
    /// path stays in memory. A use during grace also writes an audit event.
    fn maybe_touch(&self, cached: &Arc<Cached>, ip: Option<IpAddr>, in_grace: bool) {
        let now = self.clock.now();
        let last = cached.last_touch.load(Ordering::Relaxed);
        if now.timestamp() - last < TOUCH_INTERVAL_SECS
            || cached
                .last_touch
                .compare_exchange(last, now.timestamp(), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let store = self.store.clone();
        let (tenant, key_id) = (cached.record.tenant_id, cached.record.key_id);
        tokio::spawn(async move {
            let ctx = TenantContext::for_system(tenant, "key-usage");
            let result = async {
                let mut tx = store.begin(&ctx, Access::ReadWrite).await?;
                api_keys::touch(&mut tx, key_id, now, ip).await?;
                if in_grace {
                    audit::record(&mut tx, "api_key.used_during_grace", Some(&key_id.to_string()), Outcome::Success, json!({})).await?;
                    tracing::warn!(target: "bulkhead::audit", action = "api_key.used_during_grace", tenant_id = %tenant, actor_id = %key_id, "rotated key still in use");
                }
                tx.commit().await
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(error = %err, key_id = %key_id, "could not record key use");
            }
        });
    }

    fn spawn_rehash(&self, record: &KeyRecord, current_hash: KeyHash) {
        // Once per cached entry is enough; the NOTIFY it sends drops the entry anyway.
        let store = self.store.clone();
        let (tenant, key_id, version) = (
            record.tenant_id,
            record.key_id,
            self.peppers.current.version(),
        );
        let old_version = record.pepper_version;
        tokio::spawn(async move {
            let ctx = TenantContext::for_system(tenant, "pepper-rotation");
            let result = async {
                let mut tx = store.begin(&ctx, Access::ReadWrite).await?;
                api_keys::rehash(&mut tx, key_id, &current_hash, version).await?;
                audit::record(
                    &mut tx,
                    "api_key.rehash",
                    Some(&key_id.to_string()),
                    Outcome::Success,
                    json!({ "from_pepper": old_version, "to_pepper": version }),
                )
                .await?;
                tx.commit().await
            }
            .await;
            match result {
                Ok(()) => {
                    tracing::info!(key_id = %key_id, from = old_version, to = version, "re-hashed key under the current pepper")
                }
                Err(err) => tracing::warn!(error = %err, key_id = %key_id, "could not re-hash key"),
            }
        });
    }

    /// Drops the cached verification of one key (on a change notification).
    pub fn forget_key(&self, key_id: ApiKeyId) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        let _ = self
            .cache
            .invalidate_entries_if(move |_, cached| cached.record.key_id == key_id);
    }

    /// Drops every cached verification (notifications may have been missed).
    pub fn forget_all(&self) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }

    /// Listens for key changes until the process ends, invalidating as they arrive. Reconnects
    /// on failure and clears the cache whenever notifications may have been lost.
    pub async fn listen_for_changes(self: Arc<Self>) {
        crate::service::invalidation::follow(
            "key",
            || self.store.listen_key_changes(),
            |id| self.forget_key(ApiKeyId::from_uuid(id)),
            || self.forget_all(),
        )
        .await;
    }
}

/// [`client_ip`] of a request: its TCP peer (from `ConnectInfo`) and its `X-Forwarded-For`
/// values.
pub fn request_client_ip(
    request: &axum::extract::Request,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    headers_client_ip(peer, request.headers(), trusted)
}

/// [`client_ip`] from a peer address and headers, where an `X-Forwarded-For` value that is not
/// text is kept as `None` (it makes the chain malformed).
pub fn headers_client_ip(
    peer: Option<IpAddr>,
    headers: &http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let forwarded: Vec<Option<&str>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .collect();
    client_ip(peer, &forwarded, trusted)
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most address
/// in `X-Forwarded-For` that is not itself a trusted proxy. `None` (unknown, so keys with an
/// allowlist are refused) when the chain is malformed in any way, or when a trusted proxy sent
/// none: a proxy that forwards must say for whom. IPv4-mapped IPv6 addresses (dual-stack
/// listeners) are read as IPv4.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: &[Option<&str>],
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = None;
    for header in forwarded_for.iter().rev() {
        for entry in (*header)?.rsplit(',') {
            let ip = entry.trim().parse::<IpAddr>().ok()?.to_canonical();
            client = Some(ip);
            if !is_trusted(&ip) {
                return client;
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_honoured_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let h = |list: &[&'static str]| list.iter().map(|s| Some(*s)).collect::<Vec<_>>();
        // An untrusted peer's header is ignored: it could say anything.
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h(&["198.51.100.1"]), &trusted),
            ip("203.0.113.9")
        );
        // A trusted proxy's header names the client; spoofed entries left of it are ignored.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h(&["1.1.1.1, 198.51.100.7"]), &trusted),
            ip("198.51.100.7")
        );
        // Chains of trusted proxies are walked from the right, across repeated headers.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h(&["198.51.100.7, 10.0.0.3"]), &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h(&["198.51.100.7", "10.0.0.3"]), &trusted),
            ip("198.51.100.7")
        );
        // A trusted proxy that names nobody, or only itself and its peers: unknown.
        assert_eq!(client_ip(ip("10.0.0.2"), &[], &trusted), None);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h(&["10.0.0.3"]), &trusted),
            ip("10.0.0.3")
        );
        // Malformed entries, or a header that is not text, make the client unknown.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h(&["198.51.100.7:443"]), &trusted),
            None
        );
        assert_eq!(client_ip(ip("10.0.0.2"), &h(&["garbage"]), &trusted), None);
        // The proxy's own (right-most) value is unreadable: unknown. Unreadable values left of the
        // client are the client's own and are never reached.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &[Some("203.0.113.9"), None], &trusted),
            None
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &[None, Some("203.0.113.9")], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(None, &h(&["198.51.100.7"]), &trusted), None);
        // Dual-stack: an IPv4-mapped peer matches IPv4 ranges.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), &h(&["198.51.100.7"]), &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(ip("::ffff:203.0.113.9"), &[], &trusted),
            ip("203.0.113.9")
        );
    }
}
