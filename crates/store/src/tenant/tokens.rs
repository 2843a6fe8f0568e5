//! Auth sessions (refresh-token families), refresh tokens, the token denylist, login throttling
//! and the tenant's token policy.
//!
//! # Rotation and reuse
//! [`find_refresh_for_update`] locks the presented token's row, so two concurrent refreshes with
//! one token are serialised by the database: the first rotates it, the second finds it already
//! rotated, which is exactly what a replayed stolen token looks like. Revoking a session
//! ([`revoke_session`]) marks it, revokes its live refresh tokens and puts the session id on the
//! denylist (every access token minted from it carries the id as `sid`), in the caller's
//! transaction, with a `NOTIFY` delivered at commit.

use std::net::IpAddr;

use bulkhead_core::{AccessTokenId, AuthSessionId, ScopeSet, TenantId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Store, StoreError, TenantTx};

/// Channel on which every revocation is announced: payload `<tenant uuid>:<kind>:<uuid>`.
pub const TOKEN_REVOCATIONS_CHANNEL: &str = "bulkhead_token_revocations";

/// What an auth session acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PrincipalType {
    /// A human who logged in.
    User,
    /// An agent (an API-key principal) with a long-running session.
    Agent,
}

impl PrincipalType {
    /// Stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            PrincipalType::User => "user",
            PrincipalType::Agent => "agent",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "user" {
            PrincipalType::User
        } else {
            PrincipalType::Agent
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The user logged out.
    Logout,
    /// A rotated refresh token was presented again.
    ReuseDetected,
    /// Revoked through `/oauth/revoke`.
    Revoked,
    /// Ended through `DELETE /v1/auth/sessions/{id}`.
    Ended,
}

impl EndReason {
    /// Stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::ReuseDetected => "reuse_detected",
            EndReason::Revoked => "revoked",
            EndReason::Ended => "ended",
        }
    }
}

/// A new auth session.
#[derive(Debug, Clone)]
pub struct NewAuthSession<'a> {
    /// Whom it acts for.
    pub principal_type: PrincipalType,
    /// A `user_…` id or an agent principal.
    pub principal_id: &'a str,
    /// The client it was issued to.
    pub client_id: &'a str,
    /// What its tokens may carry at most.
    pub scopes: &'a ScopeSet,
    /// Now.
    pub now: DateTime<Utc>,
    /// Absolute lifetime.
    pub absolute: chrono::Duration,
    /// Idle timeout.
    pub idle: chrono::Duration,
    /// Client address at creation.
    pub client_ip: Option<IpAddr>,
    /// Client user agent at creation (truncated to 512 bytes).
    pub user_agent: Option<&'a str>,
}

/// An auth session as stored.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthSession {
    /// Id.
    pub id: AuthSessionId,
    /// Whom it acts for.
    pub principal_type: PrincipalType,
    /// The principal.
    pub principal_id: String,
    /// The client.
    pub client_id: String,
    /// Scopes (`None` if the stored set is unreadable: then nothing is granted).
    #[serde(skip)]
    pub scopes: Option<ScopeSet>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last refreshed.
    pub last_used_at: DateTime<Utc>,
    /// Absolute end.
    pub expires_at: DateTime<Utc>,
    /// Idle end: `last_used_at` plus the idle timeout.
    pub idle_expires_at: DateTime<Utc>,
    /// When it was ended, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why.
    pub revoked_reason: Option<String>,
    /// The address it was created from.
    pub client_ip: Option<String>,
    /// The user agent it was created with.
    pub user_agent: Option<String>,
}

impl AuthSession {
    /// Whether refreshes are still allowed at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at && now < self.idle_expires_at
    }
}

type SessionRow = (
    Uuid,
    String,
    String,
    String,
    Vec<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
    i32,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    Option<String>,
);

const SESSION_COLUMNS: &str = "s.id, s.principal_type, s.principal_id, s.client_id, s.scopes, \
     s.created_at, s.last_used_at, s.expires_at, s.idle_timeout_seconds, s.revoked_at, \
     s.revoked_reason, host(s.client_ip), s.user_agent";

fn session_from_row(row: SessionRow) -> AuthSession {
    let (id, ptype, pid, client, scopes, created, last, expires, idle, revoked, reason, ip, ua) =
        row;
    AuthSession {
        id: AuthSessionId::from_uuid(id),
        principal_type: PrincipalType::parse(&ptype),
        principal_id: pid,
        client_id: client,
        scopes: ScopeSet::parse_all(&scopes).ok(),
        created_at: created,
        last_used_at: last,
        expires_at: expires,
        idle_expires_at: last + chrono::Duration::seconds(i64::from(idle)),
        revoked_at: revoked,
        revoked_reason: reason,
        client_ip: ip,
        user_agent: ua,
    }
}

/// Creates an auth session and returns it.
pub async fn create_session(
    tx: &mut TenantTx,
    new: &NewAuthSession<'_>,
) -> Result<AuthSession, StoreError> {
    let tenant = tx.tenant_id();
    let user_agent = new.user_agent.map(|ua| truncate(ua, 512));
    let idle = i32::try_from(new.idle.num_seconds()).unwrap_or(i32::MAX);
    let row: SessionRow = sqlx::query_as(&format!(
        "INSERT INTO auth_sessions AS s (tenant_id, id, principal_type, principal_id, \
         client_id, scopes, created_at, last_used_at, expires_at, idle_timeout_seconds, client_ip, \
         user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10::text::inet, $11) \
         RETURNING {SESSION_COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(AuthSessionId::new().uuid())
    .bind(new.principal_type.as_str())
    .bind(new.principal_id)
    .bind(new.client_id)
    .bind(new.scopes.to_strings())
    .bind(new.now)
    .bind(new.now + new.absolute)
    .bind(idle)
    .bind(new.client_ip.map(|ip| ip.to_string()))
    .bind(user_agent)
    .fetch_one(tx.conn())
    .await?;
    Ok(session_from_row(row))
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One session of the tenant; another tenant's id is [`StoreError::NotFound`].
pub async fn get_session(tx: &mut TenantTx, id: AuthSessionId) -> Result<AuthSession, StoreError> {
    let tenant = tx.tenant_id();
    let row: SessionRow = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS} FROM auth_sessions s WHERE s.tenant_id = $1 AND s.id = $2"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_one(tx.conn())
    .await?;
    Ok(session_from_row(row))
}

/// Whose sessions to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOwner {
    /// A human's sessions: principal type `user` with this `user_…` id.
    User(String),
    /// The sessions issued to this client (an API key id): an agent's.
    Client(String),
}

/// An owner's sessions that can still be refreshed at `now`, newest first (at most 200).
pub async fn live_sessions_of(
    tx: &mut TenantTx,
    owner: &SessionOwner,
    now: DateTime<Utc>,
) -> Result<Vec<AuthSession>, StoreError> {
    let tenant = tx.tenant_id();
    let (predicate, value) = match owner {
        SessionOwner::User(p) => ("s.principal_type = 'user' AND s.principal_id", p),
        SessionOwner::Client(c) => ("s.client_id", c),
    };
    let rows: Vec<SessionRow> = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS} FROM auth_sessions s \
         WHERE s.tenant_id = $1 AND {predicate} = $2 AND s.revoked_at IS NULL \
           AND s.expires_at > $3 \
           AND s.last_used_at + make_interval(secs => s.idle_timeout_seconds) > $3 \
         ORDER BY s.id DESC LIMIT 200"
    ))
    .bind(tenant.uuid())
    .bind(value)
    .bind(now)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(session_from_row).collect())
}

/// Stores a new active refresh token of a session.
pub async fn insert_refresh_token(
    tx: &mut TenantTx,
    session: AuthSessionId,
    hash: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "INSERT INTO refresh_tokens (tenant_id, id, session_id, token_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.uuid())
    .bind(Uuid::now_v7())
    .bind(session.uuid())
    .bind(&hash[..])
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The state of a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshStatus {
    /// Never used: may be rotated once.
    Active,
    /// Already rotated (at the time given): presenting it again is reuse.
    Rotated(DateTime<Utc>),
    /// Revoked with its session.
    Revoked,
}

/// A presented refresh token, locked for the rest of the transaction, with its session.
#[derive(Debug, Clone)]
pub struct PresentedRefresh {
    /// The token row.
    pub id: Uuid,
    /// Its state.
    pub status: RefreshStatus,
    /// Its session.
    pub session: AuthSession,
}

/// Finds the token with this hash and locks it (and its session) `FOR UPDATE`.
pub async fn find_refresh_for_update(
    tx: &mut TenantTx,
    hash: &[u8; 32],
) -> Result<Option<PresentedRefresh>, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<(Uuid, String, Option<DateTime<Utc>>, Uuid)> = sqlx::query_as(
        "SELECT id, status, rotated_at, session_id FROM refresh_tokens \
         WHERE tenant_id = $1 AND token_hash = $2 FOR UPDATE",
    )
    .bind(tenant.uuid())
    .bind(&hash[..])
    .fetch_optional(tx.conn())
    .await?;
    let Some((id, status, rotated_at, session_id)) = row else {
        return Ok(None);
    };
    let session_row: SessionRow = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS} FROM auth_sessions s \
         WHERE s.tenant_id = $1 AND s.id = $2 FOR UPDATE"
    ))
    .bind(tenant.uuid())
    .bind(session_id)
    .fetch_one(tx.conn())
    .await?;
    let status = match (status.as_str(), rotated_at) {
        ("active", _) => RefreshStatus::Active,
        ("rotated", Some(at)) => RefreshStatus::Rotated(at),
        _ => RefreshStatus::Revoked,
    };
    Ok(Some(PresentedRefresh {
        id,
        status,
        session: session_from_row(session_row),
    }))
}

/// Marks a presented token rotated and the session used.
pub async fn mark_rotated(
    tx: &mut TenantTx,
    presented: &PresentedRefresh,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "UPDATE refresh_tokens SET status = 'rotated', rotated_at = $3 \
         WHERE tenant_id = $1 AND id = $2 AND status = 'active'",
    )
    .bind(tenant.uuid())
    .bind(presented.id)
    .bind(now)
    .execute(tx.conn())
    .await?;
    sqlx::query("UPDATE auth_sessions SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(presented.session.id.uuid())
        .bind(now)
        .execute(tx.conn())
        .await?;
    Ok(())
}

async fn deny(
    tx: &mut TenantTx,
    id: Uuid,
    kind: &'static str,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "INSERT INTO revoked_tokens (tenant_id, id, kind, expires_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, id) DO NOTHING",
    )
    .bind(tenant.uuid())
    .bind(id)
    .bind(kind)
    .bind(expires_at)
    .execute(tx.conn())
    .await?;
    tx.notify(
        TOKEN_REVOCATIONS_CHANNEL,
        format!("{}:{kind}:{id}", tenant.uuid()),
    )
    .await
}

/// Ends a session: no more refreshes, and every access token minted from it is refused until
/// `deny_until` (by then they have all expired). Returns false if it had already ended.
pub async fn revoke_session(
    tx: &mut TenantTx,
    id: AuthSessionId,
    reason: EndReason,
    now: DateTime<Utc>,
    deny_until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let tenant = tx.tenant_id();
    let ended = sqlx::query(
        "UPDATE auth_sessions SET revoked_at = $3, revoked_reason = $4 \
         WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(now)
    .bind(reason.as_str())
    .execute(tx.conn())
    .await?
    .rows_affected()
        > 0;
    sqlx::query(
        "UPDATE refresh_tokens SET status = 'revoked' \
         WHERE tenant_id = $1 AND session_id = $2 AND status = 'active'",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .execute(tx.conn())
    .await?;
    deny(tx, id.uuid(), "session", deny_until).await?;
    Ok(ended)
}

/// Puts one access token on the denylist until it expires.
pub async fn revoke_access_token(
    tx: &mut TenantTx,
    jti: AccessTokenId,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    deny(tx, jti.uuid(), "access_token", expires_at).await
}

/// One denylist entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// Whose token.
    pub tenant_id: TenantId,
    /// A jti or a session id (both UUIDs; they never collide).
    pub id: Uuid,
    /// Until when it must be refused.
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Every revocation still in force at `now`, across tenants, through the narrowly
    /// privileged `bulkhead.revoked_tokens_active` function.
    pub async fn active_revocations(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<Revocation>, StoreError> {
        let mut rows: Vec<(Uuid, Uuid, String, DateTime<Utc>)> = Vec::new();
        for (i, (pool, schema)) in self.router().all_locations().await?.into_iter().enumerate() {
            rows.extend(
                sqlx::query_as::<_, (Uuid, Uuid, String, DateTime<Utc>)>(&format!(
                    "SELECT * FROM \"{schema}\".revoked_tokens_active($1)"
                ))
                .bind(now)
                .fetch_all(&pool)
                .await
                .or_else(|err| crate::placement::location::skip_unreachable(i, err))?,
            );
        }
        Ok(rows
            .into_iter()
            .map(|(tenant, id, _kind, expires_at)| Revocation {
                tenant_id: TenantId::from_uuid(tenant),
                id,
                expires_at,
            })
            .collect())
    }

    /// A listener for [`TOKEN_REVOCATIONS_CHANNEL`].
    pub async fn listen_token_revocations(&self) -> Result<sqlx::postgres::PgListener, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(self.pool()).await?;
        listener.listen(TOKEN_REVOCATIONS_CHANNEL).await?;
        Ok(listener)
    }
}

/// Parses a [`TOKEN_REVOCATIONS_CHANNEL`] payload into `(tenant, id)`.
pub fn parse_revocation_payload(payload: &str) -> Option<(TenantId, Uuid)> {
    let mut parts = payload.splitn(3, ':');
    let tenant = Uuid::parse_str(parts.next()?).ok()?;
    let _kind = parts.next()?;
    let id = Uuid::parse_str(parts.next()?).ok()?;
    Some((TenantId::from_uuid(tenant), id))
}

/// The tenant's token policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenPolicy {
    /// Whether `client_credentials` grants also return a refresh token.
    pub agent_refresh_tokens: bool,
    /// Seconds within which a rotated refresh token presented again counts as a network race
    /// (refused, session kept) instead of theft (session revoked). 0–60.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 60))]
    pub refresh_reuse_interval_seconds: i32,
    /// Absolute session lifetime, seconds (300 to 31536000).
    #[cfg_attr(feature = "openapi", schema(minimum = 300, maximum = 31_536_000))]
    pub session_absolute_seconds: i32,
    /// Idle timeout, seconds (300 to 31536000).
    #[cfg_attr(feature = "openapi", schema(minimum = 300, maximum = 31_536_000))]
    pub session_idle_seconds: i32,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            agent_refresh_tokens: false,
            refresh_reuse_interval_seconds: 0,
            session_absolute_seconds: 30 * 86_400,
            session_idle_seconds: 7 * 86_400,
        }
    }
}

/// The tenant's token policy (defaults when it never set one).
pub async fn token_policy(tx: &mut TenantTx) -> Result<TokenPolicy, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<(bool, i32, i32, i32)> = sqlx::query_as(
        "SELECT agent_refresh_tokens, refresh_reuse_interval_seconds, session_absolute_seconds, \
         session_idle_seconds FROM tenant_settings WHERE tenant_id = $1",
    )
    .bind(tenant.uuid())
    .fetch_optional(tx.conn())
    .await?;
    Ok(
        row.map_or_else(TokenPolicy::default, |(a, r, abs, idle)| TokenPolicy {
            agent_refresh_tokens: a,
            refresh_reuse_interval_seconds: r,
            session_absolute_seconds: abs,
            session_idle_seconds: idle,
        }),
    )
}

/// Sets the tenant's token policy (the database checks the bounds).
pub async fn set_token_policy(tx: &mut TenantTx, policy: &TokenPolicy) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "INSERT INTO tenant_settings (tenant_id, agent_refresh_tokens, \
         refresh_reuse_interval_seconds, session_absolute_seconds, session_idle_seconds) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO UPDATE SET \
         agent_refresh_tokens = EXCLUDED.agent_refresh_tokens, \
         refresh_reuse_interval_seconds = EXCLUDED.refresh_reuse_interval_seconds, \
         session_absolute_seconds = EXCLUDED.session_absolute_seconds, \
         session_idle_seconds = EXCLUDED.session_idle_seconds, updated_at = now()",
    )
    .bind(tenant.uuid())
    .bind(policy.agent_refresh_tokens)
    .bind(policy.refresh_reuse_interval_seconds)
    .bind(policy.session_absolute_seconds)
    .bind(policy.session_idle_seconds)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The login throttle of one account name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Throttle {
    /// Consecutive failures.
    pub failures: i32,
    /// No attempt is checked before this time.
    pub locked_until: Option<DateTime<Utc>>,
}

/// Counts one login attempt against an account name, atomically (an upsert that increments
/// under the row lock, so concurrent attempts are serialised and each sees the count before
/// it). Returns the count including this attempt and the lock that was in force before it.
/// The caller refuses (and rolls back) when that lock has not expired, and otherwise records the
/// lock the new count earns with [`set_login_lock`].
pub async fn count_login_attempt(
    tx: &mut TenantTx,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Throttle, StoreError> {
    let tenant = tx.tenant_id();
    let (failures, locked_until): (i32, Option<DateTime<Utc>>) = sqlx::query_as(
        "INSERT INTO login_throttle AS t (tenant_id, id, failures, last_failure_at) \
         VALUES ($1, $2, 1, $3) ON CONFLICT (tenant_id, id) DO UPDATE SET \
         failures = t.failures + 1, last_failure_at = EXCLUDED.last_failure_at \
         RETURNING t.failures, t.locked_until",
    )
    .bind(tenant.uuid())
    .bind(id)
    .bind(now)
    .fetch_one(tx.conn())
    .await?;
    Ok(Throttle {
        failures,
        locked_until,
    })
}

/// Deletes up to `batch` of the tenant's login-throttle rows whose last failure and lock both
/// ended before `before` (anonymous attempts with fresh emails would otherwise leave one
/// permanent row each). Rows another transaction holds are skipped, never waited for.
pub async fn sweep_login_throttle(
    tx: &mut TenantTx,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query(
        "DELETE FROM login_throttle WHERE tenant_id = $1 AND id IN ( \
           SELECT id FROM login_throttle WHERE tenant_id = $1 \
             AND last_failure_at < $2 AND (locked_until IS NULL OR locked_until < $2) \
           LIMIT $3 FOR UPDATE SKIP LOCKED)",
    )
    .bind(tenant.uuid())
    .bind(before)
    .bind(batch)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected())
}

/// Sets the lock of an account name (after [`count_login_attempt`]).
pub async fn set_login_lock(
    tx: &mut TenantTx,
    id: Uuid,
    locked_until: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query("UPDATE login_throttle SET locked_until = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(id)
        .bind(locked_until)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Clears an account name's failures after a successful login.
pub async fn clear_login_failures(tx: &mut TenantTx, id: Uuid) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query("DELETE FROM login_throttle WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(id)
        .execute(tx.conn())
        .await?;
    Ok(())
}
