//! Access tokens in the server: the signing keys in memory, issuing, the one verification every
//! route relies on, and the denylist.
//!
//! # Keys
//! The published keys (next, current, retired-but-published) are loaded from the database at
//! start and whenever the owner rotates them (`NOTIFY bulkhead_signing_keys`); the current key's
//! private half is opened with the master key only in memory.
//!
//! # Revocation bound
//! Revoked `jti`s and ended auth sessions (`sid`) are held in memory in every process. A
//! revocation made here is applied to this process's denylist before the response is sent;
//! other processes hear it through `NOTIFY` (the measured bound: see
//! `token_revocation_reaches_a_second_process`). If the listener connection is down, the whole
//! denylist is reloaded every [`TokenFreshness::reload`]; if neither the listener nor a reload has
//! succeeded for [`TokenFreshness::max_staleness`], tokens are refused with a retryable 503: a process
//! that cannot know about revocations does not accept tokens (fail closed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bulkhead_auth::token::{
    check_time_bounds, sign_access_token, verify_access_token_with_kid, TokenError, LEEWAY_SECS,
    MAX_ACCESS_TOKEN_SECS,
};
use bulkhead_auth::{
    AccessClaims, ActClaim, Expectations, ExpectedIssuer, KeySet, MasterKey, SigningKey,
    VerifyingKey,
};
use bulkhead_core::{AccessTokenId, ApiKeyId, AuthSessionId, Clock, Namespace, ScopeSet, TenantId};
use bulkhead_store::signing_keys::{SigningKeyState, SIGNING_KEYS_CHANNEL};
use bulkhead_store::tenant::tokens::parse_revocation_payload;
use bulkhead_store::{Store, StoreError};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Most verified tokens remembered (each well under 1 KiB).
const VERIFIED_CACHE_ENTRIES: u64 = 50_000;

/// Token settings of the deployment (defined with the other settings).
pub use crate::config::{TokenFreshness, TokenSettings};

/// Why a presented access token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Refused by the verifier.
    Invalid(TokenError),
    /// The `jti` or the `sid` is revoked.
    Revoked,
    /// The claims verified but do not name a tenant, token id or scopes this server knows.
    UnreadableClaims,
    /// Keys not loaded, or the denylist is stale: retry later.
    Unavailable,
    /// The caller's address is outside a network restriction the token carries.
    AddressNotAllowed,
}

/// A verified access token.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// All claims.
    pub claims: AccessClaims,
    /// The tenant it is good for.
    pub tenant_id: TenantId,
    /// Its id.
    pub token_id: AccessTokenId,
    /// Its auth session.
    pub session_id: Option<AuthSessionId>,
    /// Its scopes.
    pub scopes: ScopeSet,
    /// The namespace it is confined to.
    pub resource_prefix: Option<Namespace>,
    /// The tokens and sessions it was derived from (`delegated_from`), as UUIDs.
    pub ancestors: Vec<Uuid>,
    /// The signing key's id.
    pub kid: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// The network restrictions it carries (`allowed_networks`): its caller's address must lie in
    /// a network of every list.
    pub allowed_networks: Vec<Vec<ipnet::IpNet>>,
    /// The other API keys it derives from (`derived_keys`): each must still be usable, and its
    /// current allowlist binds the token.
    pub derived_keys: Vec<ApiKeyId>,
}

impl VerifiedToken {
    /// Whether a caller at `ip` may use the token: always without restrictions; with some, only
    /// from an address known to lie inside every one of them (an unknown address never does).
    pub fn admits_address(&self, ip: Option<std::net::IpAddr>) -> bool {
        self.allowed_networks.is_empty()
            || ip.is_some_and(|ip| {
                self.allowed_networks
                    .iter()
                    .all(|list| list.iter().any(|net| net.contains(&ip)))
            })
    }
}

/// What an access token is issued for.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The tenant's issuer ([`TokenSettings::tenant_issuer`]): the token's `iss`.
    pub issuer: &'a str,
    /// `sub`.
    pub subject: &'a str,
    /// A human user (else an agent).
    pub human: bool,
    /// `client_id`.
    pub client_id: &'a str,
    /// Granted scopes.
    pub scopes: &'a ScopeSet,
    /// The auth session, when the token is minted from one.
    pub session_id: Option<AuthSessionId>,
    /// The delegation chain.
    pub act: Option<ActClaim>,
    /// Resource prefix.
    pub resource_prefix: Option<String>,
    /// The token may not outlive this (a delegated token never outlives its subject token).
    pub not_after: Option<DateTime<Utc>>,
    /// The jtis of the tokens it is derived from (delegation), root first.
    pub delegated_from: Vec<String>,
    /// The IP allowlists of the keys it is minted or derived from (each one binds it); empty
    /// lists are left out.
    pub allowed_networks: Vec<Vec<ipnet::IpNet>>,
    /// The other API keys it derives from by delegation (see [`AccessClaims::derived_keys`]).
    pub derived_keys: Vec<ApiKeyId>,
}

/// An issued access token. `Debug` leaves the token out.
pub struct IssuedToken {
    /// The JWT (the secret: hand it out once).
    pub token: String,
    /// Its claims.
    pub claims: AccessClaims,
    /// Seconds until it expires.
    pub expires_in: i64,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("jti", &self.claims.jti)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

struct LoadedKeys {
    signer: Option<SigningKey>,
    keys: KeySet,
}

/// Keys, issuing, verification and the denylist. One per process.
pub struct TokenService {
    store: Store,
    master: Arc<MasterKey>,
    clock: Clock,
    settings: TokenSettings,
    freshness: TokenFreshness,
    keys: RwLock<Arc<LoadedKeys>>,
    /// Revoked jti or sid → (tenant, refuse until).
    denylist: RwLock<HashMap<Uuid, (TenantId, DateTime<Utc>)>>,
    listening: AtomicBool,
    /// Unix seconds of the last successful whole reload (0: never).
    last_reload: AtomicI64,
    /// Tokens whose signature and claims verified, by SHA-256 of their exact text. A hit skips
    /// only the signature and the parsing: time bounds and the denylist are checked on every
    /// use. Emptied whenever the published keys change.
    verified: moka::sync::Cache<[u8; 32], Arc<VerifiedToken>>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The service could not issue a token.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// No current signing key is loaded (the database has none, or the master key cannot open
    /// it).
    #[error("no usable signing key")]
    NoSigningKey,
    /// The grant names an `iss` that is no tenant's issuer (a bug in the caller): nothing is
    /// signed.
    #[error("not a tenant's issuer")]
    NotATenantIssuer,
}

impl TokenService {
    /// A service with nothing loaded yet: it refuses every token until [`TokenService::reload`]
    /// succeeds.
    pub fn new(
        store: Store,
        master: Arc<MasterKey>,
        clock: Clock,
        settings: TokenSettings,
        freshness: TokenFreshness,
    ) -> Self {
        Self {
            store,
            master,
            clock,
            settings,
            freshness,
            keys: RwLock::new(Arc::new(LoadedKeys {
                signer: None,
                keys: KeySet::default(),
            })),
            denylist: RwLock::new(HashMap::new()),
            listening: AtomicBool::new(false),
            last_reload: AtomicI64::new(0),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CACHE_ENTRIES)
                .time_to_live(Duration::from_secs(
                    MAX_ACCESS_TOKEN_SECS as u64 + LEEWAY_SECS as u64,
                ))
                .build(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Reloads the published keys and the whole denylist.
    pub async fn reload(&self) -> Result<(), StoreError> {
        self.reload_keys().await?;
        let now = self.clock.now();
        let revocations = self.store.active_revocations(now).await?;
        let fresh: HashMap<Uuid, (TenantId, DateTime<Utc>)> = revocations
            .into_iter()
            .map(|r| (r.id, (r.tenant_id, r.expires_at)))
            .collect();
        *self.denylist.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        self.last_reload.store(now.timestamp(), Ordering::SeqCst);
        Ok(())
    }

    async fn reload_keys(&self) -> Result<(), StoreError> {
        let stored = self.store.published_signing_keys(self.clock.now()).await?;
        let mut verifying = Vec::new();
        let mut signer = None;
        for key in &stored {
            match VerifyingKey::new(&key.kid, &key.public_key) {
                Ok(v) => verifying.push(v),
                Err(err) => {
                    tracing::error!(kid = %key.kid, error = %err, "unusable stored public key")
                }
            }
            if key.state == SigningKeyState::Current {
                let public: Option<[u8; 32]> = key.public_key.as_slice().try_into().ok();
                let opened = self
                    .master
                    .open_signing_key(&key.kid, &key.sealed_private_key)
                    .ok()
                    .zip(public)
                    .and_then(|(pkcs8, public)| {
                        SigningKey::from_pkcs8(&key.kid, &pkcs8, &public).ok()
                    });
                if opened.is_none() {
                    // Refuse to sign rather than sign with something else.
                    tracing::error!(kid = %key.kid, "the current signing key cannot be opened with this master key; no tokens can be issued");
                }
                signer = opened;
            }
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(LoadedKeys {
            signer,
            keys: KeySet::new(verifying),
        });
        // A key that left the JWKS must stop verifying at once, cached or not.
        self.verified.invalidate_all();
        Ok(())
    }

    /// The JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        self.loaded().keys.jwks()
    }

    fn loaded(&self) -> Arc<LoadedKeys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Issues an access token for Bulkhead's own API (`aud` is `--token-audience`).
    pub fn issue(&self, grant: &Grant<'_>) -> Result<IssuedToken, IssueError> {
        self.issue_for(grant, None)
    }

    /// Issues an access token whose `aud` is `resource` (a registered protected resource's
    /// identifier, RFC 8707), or Bulkhead's own API when `None`. Bulkhead's own verifier accepts
    /// only the latter, so a token for a resource is refused by Bulkhead's API.
    pub fn issue_for(
        &self,
        grant: &Grant<'_>,
        resource: Option<&str>,
    ) -> Result<IssuedToken, IssueError> {
        if self.settings.issuer_tenant(grant.issuer).is_none() {
            return Err(IssueError::NotATenantIssuer);
        }
        let loaded = self.loaded();
        let signer = loaded.signer.as_ref().ok_or(IssueError::NoSigningKey)?;
        let now = self.clock.now().timestamp();
        let ttl = i64::try_from(self.settings.access_token_ttl.as_secs())
            .unwrap_or(MAX_ACCESS_TOKEN_SECS);
        let mut exp = now + ttl.min(MAX_ACCESS_TOKEN_SECS);
        if let Some(limit) = grant.not_after {
            exp = exp.min(limit.timestamp());
        }
        let claims = AccessClaims {
            iss: grant.issuer.to_owned(),
            sub: grant.subject.to_owned(),
            aud: resource.map_or_else(|| self.settings.audience.clone(), str::to_owned),
            exp,
            iat: now,
            nbf: now,
            jti: AccessTokenId::new().to_string(),
            client_id: grant.client_id.to_owned(),
            scope: scope_text(grant.scopes),
            tenant_id: grant.tenant_id.to_string(),
            sub_type: if grant.human { "user" } else { "agent" }.to_owned(),
            org_id: None,
            resource_prefix: grant.resource_prefix.clone(),
            sid: grant.session_id.map(|s| s.to_string()),
            act: grant.act.clone(),
            delegated_from: grant.delegated_from.clone(),
            allowed_networks: grant
                .allowed_networks
                .iter()
                .filter(|list| !list.is_empty())
                .map(|list| list.iter().map(ToString::to_string).collect())
                .collect(),
            derived_keys: grant.derived_keys.iter().map(ToString::to_string).collect(),
        };
        Ok(IssuedToken {
            token: sign_access_token(signer, &claims),
            expires_in: exp - now,
            claims,
        })
    }

    /// Signs an ID token (OpenID Connect) with the current key.
    pub fn issue_id_token(
        &self,
        claims: &bulkhead_auth::id_token::IdClaims,
    ) -> Result<String, IssueError> {
        let loaded = self.loaded();
        let signer = loaded.signer.as_ref().ok_or(IssueError::NoSigningKey)?;
        Ok(bulkhead_auth::id_token::sign_id_token(signer, claims))
    }

    /// The one verification of a presented access token: signature and claims (see
    /// [`bulkhead_auth::token`]), then the claims this server reads, then the denylist. `iss`
    /// must have the form of a tenant's issuer ([`TokenSettings::issuer_tenant`]); that it is the
    /// issuer of the tenant `tenant_id` names, and the tenant agreement with the request's host,
    /// are the caller's (the resolver's) checks.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenRefusal> {
        self.verify_for(token, None)
    }

    /// [`TokenService::verify`] of a token whose `aud` must be `audience`: a registered protected
    /// resource's identifier (the caller has found it registered in the token's tenant), or
    /// Bulkhead's own API (`--token-audience`) when `None`. Every other check is the same.
    pub fn verify_for(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<VerifiedToken, TokenRefusal> {
        let audience = audience.unwrap_or(&self.settings.audience);
        if token.len() > bulkhead_auth::token::MAX_TOKEN_BYTES {
            return Err(TokenRefusal::Invalid(TokenError::TooLarge));
        }
        let now = self.clock.now();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let verified = match self.verified.get(&digest) {
            // A key that left the JWKS since (even mid-verification, racing the cache flush)
            // verifies nothing.
            Some(hit) if !self.loaded().keys.contains(&hit.kid) => {
                self.verified.invalidate(&digest);
                return Err(TokenRefusal::Invalid(TokenError::UnknownKey));
            }
            // One cache for every audience: a token verified for a resource is not thereby
            // good for another, nor for Bulkhead's own API.
            Some(hit) if hit.claims.aud != audience => {
                return Err(TokenRefusal::Invalid(TokenError::Audience));
            }
            Some(hit) => {
                // The verifier's own time checks, against this request's now.
                check_time_bounds(&hit.claims, now.timestamp()).map_err(TokenRefusal::Invalid)?;
                hit
            }
            None => {
                let fresh = Arc::new(self.verify_uncached(token, audience, now)?);
                self.verified.insert(digest, fresh.clone());
                fresh
            }
        };
        if !self.denylist_is_fresh(now) {
            return Err(TokenRefusal::Unavailable);
        }
        // A delegated token dies with any token it was derived from.
        let tenant = verified.tenant_id;
        if self.is_denied(tenant, verified.token_id.uuid(), now)
            || verified
                .session_id
                .is_some_and(|s| self.is_denied(tenant, s.uuid(), now))
            || verified
                .ancestors
                .iter()
                .any(|id| self.is_denied(tenant, *id, now))
        {
            return Err(TokenRefusal::Revoked);
        }
        Ok((*verified).clone())
    }

    /// Signature, claims and the claims this server reads; no denylist.
    fn verify_uncached(
        &self,
        token: &str,
        audience: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedToken, TokenRefusal> {
        let loaded = self.loaded();
        if loaded.keys.is_empty() {
            return Err(TokenRefusal::Unavailable);
        }
        // Any tenant's issuer here; the resolver checks it is the one of the token's tenant. The
        // deployment's own `--issuer` is refused: no token carries it any more.
        let settings = &self.settings;
        let tenant_issuer = |iss: &str| settings.issuer_tenant(iss).is_some();
        let expect = Expectations {
            issuer: ExpectedIssuer::OneOf(&tenant_issuer),
            audience,
            now: now.timestamp(),
        };
        let (claims, kid) = verify_access_token_with_kid(token, &loaded.keys, &expect)
            .map_err(TokenRefusal::Invalid)?;
        let tenant_id =
            TenantId::parse(&claims.tenant_id).map_err(|_| TokenRefusal::UnreadableClaims)?;
        let token_id =
            AccessTokenId::parse(&claims.jti).map_err(|_| TokenRefusal::UnreadableClaims)?;
        let session_id = match &claims.sid {
            Some(sid) => {
                Some(AuthSessionId::parse(sid).map_err(|_| TokenRefusal::UnreadableClaims)?)
            }
            None => None,
        };
        let scopes = ScopeSet::parse_all(claims.scope.split(' ').filter(|s| !s.is_empty()))
            .map_err(|_| TokenRefusal::UnreadableClaims)?;
        let resource_prefix = match &claims.resource_prefix {
            Some(text) => Some(Namespace::parse(text).map_err(|_| TokenRefusal::UnreadableClaims)?),
            None => None,
        };
        // Tokens (`at_…`) and auth sessions (`asess_…`) it derives from; both are denylist keys.
        let ancestors = claims
            .delegated_from
            .iter()
            .map(|id| {
                AccessTokenId::parse(id)
                    .map(|t| t.uuid())
                    .or_else(|_| AuthSessionId::parse(id).map(|s| s.uuid()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TokenRefusal::UnreadableClaims)?;
        let allowed_networks = claims
            .allowed_networks
            .iter()
            .map(|list| {
                list.iter()
                    .map(|net| net.parse::<ipnet::IpNet>())
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TokenRefusal::UnreadableClaims)?;
        // An empty list would admit no address at all: only the issuer leaves them out.
        if allowed_networks.iter().any(Vec::is_empty) {
            return Err(TokenRefusal::UnreadableClaims);
        }
        let derived_keys = claims
            .derived_keys
            .iter()
            .map(|id| ApiKeyId::parse(id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TokenRefusal::UnreadableClaims)?;
        let expires_at = DateTime::from_timestamp(claims.exp, 0).unwrap_or(now);
        Ok(VerifiedToken {
            claims,
            tenant_id,
            token_id,
            session_id,
            scopes,
            resource_prefix,
            ancestors,
            kid,
            expires_at,
            allowed_networks,
            derived_keys,
        })
    }

    /// Whether the change listener is connected (then the denylist is fresh whatever the clock
    /// says); until it is, freshness is the time since the last reload. Tests that move a
    /// manual clock wait for it.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Forgets every cached verification (benchmarks measure the uncached path with it).
    pub fn forget_verified(&self) {
        self.verified.invalidate_all();
    }

    fn denylist_is_fresh(&self, now: DateTime<Utc>) -> bool {
        let last = self.last_reload.load(Ordering::SeqCst);
        if last == 0 {
            return false;
        }
        self.listening.load(Ordering::SeqCst)
            || now.timestamp() - last
                <= i64::try_from(self.freshness.max_staleness.as_secs()).unwrap_or(i64::MAX)
    }

    fn is_denied(&self, tenant: TenantId, id: Uuid, now: DateTime<Utc>) -> bool {
        self.denylist
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .is_some_and(|(t, until)| *t == tenant && *until > now)
    }

    /// Applies a revocation this process just committed, without waiting for the notification.
    pub fn deny_locally(&self, tenant: TenantId, id: Uuid, until: DateTime<Utc>) {
        self.denylist
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (tenant, until));
    }

    /// Applies the end of an auth session this process just committed: every access token
    /// minted from it is refused here at once (other processes hear the notification).
    pub fn deny_session_locally(&self, tenant: TenantId, session: AuthSessionId) {
        self.deny_locally(tenant, session.uuid(), self.session_deny_until());
    }

    /// Until when an ended session's access tokens must be refused: the longest any of them can
    /// still live, plus the verification leeway.
    pub fn session_deny_until(&self) -> DateTime<Utc> {
        self.clock.now() + chrono::Duration::seconds(MAX_ACCESS_TOKEN_SECS + LEEWAY_SECS)
    }

    /// Listens for key rotations and revocations until the process ends; reloads everything on
    /// every (re)connection and every [`TokenFreshness::reload`].
    pub async fn listen_for_changes(self: Arc<Self>) {
        loop {
            let mut listener = match self.store.listen_token_revocations().await {
                Ok(mut listener) => match listener.listen(SIGNING_KEYS_CHANNEL).await {
                    Ok(()) => listener,
                    Err(err) => {
                        tracing::warn!(error = %err, "token change listener cannot subscribe; retrying");
                        self.backoff_after_failure().await;
                        continue;
                    }
                },
                Err(err) => {
                    tracing::warn!(error = %err, "token change listener cannot connect; retrying");
                    self.backoff_after_failure().await;
                    continue;
                }
            };
            // Anything before we were listening may have been missed.
            if let Err(err) = self.reload().await {
                tracing::warn!(error = %err, "cannot reload the token denylist");
                self.backoff_after_failure().await;
                continue;
            }
            self.listening.store(true, Ordering::SeqCst);
            loop {
                let next = tokio::time::timeout(self.freshness.reload, listener.try_recv()).await;
                match next {
                    Err(_elapsed) => {
                        if let Err(err) = self.reload().await {
                            tracing::warn!(error = %err, "periodic token reload failed");
                        }
                    }
                    Ok(Ok(Some(notification)))
                        if notification.channel() == SIGNING_KEYS_CHANNEL =>
                    {
                        if let Err(err) = self.reload_keys().await {
                            tracing::warn!(error = %err, "cannot reload signing keys");
                        }
                    }
                    Ok(Ok(Some(notification))) => {
                        match parse_revocation_payload(notification.payload()) {
                            Some((tenant, id)) => {
                                // Until the longest a token can live: the exact expiry is in the
                                // table and arrives with the next whole reload.
                                let until = self.session_deny_until();
                                self.deny_locally(tenant, id, until);
                            }
                            None => {
                                let _ = self.reload().await;
                            }
                        }
                    }
                    // Reconnected underneath: notifications may have been lost.
                    Ok(Ok(None)) => {
                        let _ = self.reload().await;
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "token change listener failed; reconnecting");
                        self.listening.store(false, Ordering::SeqCst);
                        break;
                    }
                }
            }
        }
    }

    async fn backoff_after_failure(&self) {
        self.listening.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = self.reload().await;
    }
}

/// Space-separated scope text (RFC 6749 §3.3).
pub fn scope_text(scopes: &ScopeSet) -> String {
    scopes.to_strings().join(" ")
}

/// Parses a space-separated scope parameter; any unknown name fails the whole set.
pub fn parse_scope_param(text: &str) -> Result<ScopeSet, bulkhead_core::UnknownScope> {
    ScopeSet::parse_all(text.split(' ').filter(|s| !s.is_empty()))
}
