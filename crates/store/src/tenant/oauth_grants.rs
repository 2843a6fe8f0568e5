//! Remembered consents (migration 0031): one grant per (user, client, resource) with the scopes
//! the user consented to last, and the link from an auth session to the grant it was started
//! under, so revoking the grant ends the session. Every query runs in the tenant's transaction,
//! under its row-level security, with the tenant's id as a second predicate.

use bulkhead_core::{AuthSessionId, OAuthClientId, OAuthGrantId, ScopeSet, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{StoreError, TenantTx};

/// A remembered consent as shown.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthGrant {
    /// Its id.
    pub id: OAuthGrantId,
    /// The user who consented.
    pub user_id: UserId,
    /// The client the consent was given to.
    pub client_id: OAuthClientId,
    /// The client's name.
    pub client_name: String,
    /// The resource indicator (RFC 8707) it is for; absent: the tenant's own API.
    pub resource: Option<String>,
    /// The scopes consented to.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub scopes: Vec<String>,
    /// The OpenID Connect identity scopes consented to (`openid`, `profile`, `email`).
    pub identity_scopes: Vec<String>,
    /// When first given.
    pub created_at: DateTime<Utc>,
    /// When last given again (with these scopes).
    pub updated_at: DateTime<Utc>,
}

impl OAuthGrant {
    /// The consented scopes as a set; a name this binary does not know empties it (fail closed:
    /// the consent page is shown again).
    pub fn scope_set(&self) -> ScopeSet {
        ScopeSet::parse_all(&self.scopes).unwrap_or_default()
    }
}

type GrantRow = (
    Uuid,
    Uuid,
    Uuid,
    String,
    String,
    Vec<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Vec<String>,
);

const GRANT_SELECT: &str = "SELECT g.id, g.user_id, g.client_id, c.name, g.resource, g.scopes, \
     g.created_at, g.updated_at, g.identity_scopes FROM oauth_grants g JOIN oauth_clients c \
     ON c.tenant_id = g.tenant_id AND c.id = g.client_id WHERE g.tenant_id = $1";

fn grant_from_row(
    (id, user, client, client_name, resource, scopes, created, updated, identity): GrantRow,
) -> OAuthGrant {
    OAuthGrant {
        id: OAuthGrantId::from_uuid(id),
        user_id: UserId::from_uuid(user),
        client_id: OAuthClientId::from_uuid(client),
        client_name,
        resource: (!resource.is_empty()).then_some(resource),
        scopes,
        identity_scopes: identity,
        created_at: created,
        updated_at: updated,
    }
}

/// Remembers a consent: the (user, client, resource) grant now holds `scopes` and the identity
/// scopes `identity` (a new row, or the existing one's replaced). Returns the grant and whether
/// it is new.
pub async fn remember(
    tx: &mut TenantTx,
    (user, client, resource): (UserId, OAuthClientId, &str),
    scopes: &ScopeSet,
    identity: &[String],
    now: DateTime<Utc>,
) -> Result<(OAuthGrantId, bool), StoreError> {
    let tenant = tx.tenant_id();
    let (id, inserted): (Uuid, bool) = sqlx::query_as(
        "INSERT INTO oauth_grants (tenant_id, id, user_id, client_id, resource, scopes, \
         created_at, updated_at, identity_scopes) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) \
         ON CONFLICT (tenant_id, user_id, client_id, resource) \
         DO UPDATE SET scopes = EXCLUDED.scopes, updated_at = EXCLUDED.updated_at, \
         identity_scopes = EXCLUDED.identity_scopes \
         RETURNING id, (xmax = 0)",
    )
    .bind(tenant.uuid())
    .bind(Uuid::now_v7())
    .bind(user.uuid())
    .bind(client.uuid())
    .bind(resource)
    .bind(scopes.to_strings())
    .bind(now)
    .bind(identity)
    .fetch_one(tx.conn())
    .await?;
    Ok((OAuthGrantId::from_uuid(id), inserted))
}

/// The grant of (user, client, resource), if the user has consented.
pub async fn find(
    tx: &mut TenantTx,
    user: UserId,
    client: OAuthClientId,
    resource: &str,
) -> Result<Option<OAuthGrant>, StoreError> {
    find_with(tx, user, client, resource, "").await
}

/// [`find`], locking the grant `FOR KEY SHARE` until the transaction ends: a revocation (a
/// delete) waits for it, so a session started under the grant is linked before the revocation
/// lists the grant's sessions, or the grant is found gone.
pub async fn find_key_share(
    tx: &mut TenantTx,
    user: UserId,
    client: OAuthClientId,
    resource: &str,
) -> Result<Option<OAuthGrant>, StoreError> {
    find_with(tx, user, client, resource, " FOR KEY SHARE OF g").await
}

/// A grant by id, locked `FOR KEY SHARE` (see [`find_key_share`]); `None` if it is gone.
pub async fn get_key_share(
    tx: &mut TenantTx,
    id: OAuthGrantId,
) -> Result<Option<OAuthGrant>, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<GrantRow> =
        sqlx::query_as(&format!("{GRANT_SELECT} AND g.id = $2 FOR KEY SHARE OF g"))
            .bind(tenant.uuid())
            .bind(id.uuid())
            .fetch_optional(tx.conn())
            .await?;
    Ok(row.map(grant_from_row))
}

async fn find_with(
    tx: &mut TenantTx,
    user: UserId,
    client: OAuthClientId,
    resource: &str,
    lock: &str,
) -> Result<Option<OAuthGrant>, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<GrantRow> = sqlx::query_as(&format!(
        "{GRANT_SELECT} AND g.user_id = $2 AND g.client_id = $3 AND g.resource = $4{lock}"
    ))
    .bind(tenant.uuid())
    .bind(user.uuid())
    .bind(client.uuid())
    .bind(resource)
    .fetch_optional(tx.conn())
    .await?;
    Ok(row.map(grant_from_row))
}

/// One grant by id; another tenant's is [`StoreError::NotFound`] like a missing one.
pub async fn get(tx: &mut TenantTx, id: OAuthGrantId) -> Result<OAuthGrant, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<GrantRow> = sqlx::query_as(&format!("{GRANT_SELECT} AND g.id = $2"))
        .bind(tenant.uuid())
        .bind(id.uuid())
        .fetch_optional(tx.conn())
        .await?;
    row.map(grant_from_row).ok_or(StoreError::NotFound)
}

/// A page of grants in id order after `after`: one user's, or (`None`) the tenant's.
pub async fn list(
    tx: &mut TenantTx,
    user: Option<UserId>,
    after: Option<OAuthGrantId>,
    limit: u32,
) -> Result<Vec<OAuthGrant>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<GrantRow> = sqlx::query_as(&format!(
        "{GRANT_SELECT} AND ($2::uuid IS NULL OR g.user_id = $2) \
         AND ($3::uuid IS NULL OR g.id > $3) ORDER BY g.id LIMIT $4"
    ))
    .bind(tenant.uuid())
    .bind(user.map(|u| u.uuid()))
    .bind(after.map(|a| a.uuid()))
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(grant_from_row).collect())
}

/// Deletes a grant.
pub async fn delete(tx: &mut TenantTx, id: OAuthGrantId) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query("DELETE FROM oauth_grants WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(id.uuid())
        .execute(tx.conn())
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Records that `session` was started under `grant`, for `resource` (`""`: Bulkhead's own API),
/// with the identity scopes its code granted (migration 0037: what `userinfo` and its refreshes
/// may answer at most, whatever the consent grows to later).
pub async fn link_session(
    tx: &mut TenantTx,
    session: AuthSessionId,
    grant: OAuthGrantId,
    resource: &str,
    identity_scopes: &[String],
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "UPDATE auth_sessions SET grant_id = $3, resource = NULLIF($4, ''), identity_scopes = $5 \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(session.uuid())
    .bind(grant.uuid())
    .bind(resource)
    .bind(identity_scopes)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Records that `session`'s access tokens are for the protected resource `resource` (RFC 8707
/// `aud`), without a grant: an agent's session started by `client_credentials` with a
/// `resource`. Its refreshes keep that audience, and deleting the resource ends it.
pub async fn set_session_resource(
    tx: &mut TenantTx,
    session: AuthSessionId,
    resource: &str,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query("UPDATE auth_sessions SET resource = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(session.uuid())
        .bind(resource)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Fixes the identity scopes of a session started before migration 0037 (its column NULL) to
/// `identity_scopes`, the consent's at its first refresh since: from then on a wider consent
/// does not reach it. A session that has them already is left as it is.
pub async fn settle_session_identity_scopes(
    tx: &mut TenantTx,
    session: AuthSessionId,
    identity_scopes: &[String],
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "UPDATE auth_sessions SET identity_scopes = $3 \
         WHERE tenant_id = $1 AND id = $2 AND identity_scopes IS NULL",
    )
    .bind(tenant.uuid())
    .bind(session.uuid())
    .bind(identity_scopes)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// What a session was started under ([`session_link`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionLink {
    /// Its remembered consent (`None`: not an authorization code's session).
    pub grant: Option<OAuthGrantId>,
    /// The protected resource its tokens are for (`None`: Bulkhead's own API).
    pub resource: Option<String>,
    /// The identity scopes its code granted (`None`: not a code's session, or one started
    /// before migration 0037).
    pub identity_scopes: Option<Vec<String>>,
}

/// What `session` was started under; a session that is not there links to nothing.
pub async fn session_link(
    tx: &mut TenantTx,
    session: AuthSessionId,
) -> Result<SessionLink, StoreError> {
    let tenant = tx.tenant_id();
    type Row = (Option<Uuid>, Option<String>, Option<Vec<String>>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT grant_id, resource, identity_scopes FROM auth_sessions \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(session.uuid())
    .fetch_optional(tx.conn())
    .await?;
    let (grant, resource, identity_scopes) = row.unwrap_or_default();
    Ok(SessionLink {
        grant: grant.map(OAuthGrantId::from_uuid),
        resource,
        identity_scopes,
    })
}

/// The live auth sessions started under a grant (what revoking it ends).
pub async fn live_sessions(
    tx: &mut TenantTx,
    grant: OAuthGrantId,
) -> Result<Vec<AuthSessionId>, StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM auth_sessions WHERE tenant_id = $1 AND grant_id = $2 \
         AND revoked_at IS NULL",
    )
    .bind(tenant.uuid())
    .bind(grant.uuid())
    .fetch_all(tx.conn())
    .await?;
    Ok(ids.into_iter().map(AuthSessionId::from_uuid).collect())
}

/// Forgets every consent for a protected resource (its deletion); returns how many.
pub async fn delete_for_resource(tx: &mut TenantTx, resource: &str) -> Result<u64, StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query("DELETE FROM oauth_grants WHERE tenant_id = $1 AND resource = $2")
        .bind(tenant.uuid())
        .bind(resource)
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected())
}

/// The live auth sessions whose tokens are for a protected resource (what deleting it ends).
pub async fn live_sessions_for_resource(
    tx: &mut TenantTx,
    resource: &str,
) -> Result<Vec<AuthSessionId>, StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM auth_sessions WHERE tenant_id = $1 AND resource = $2 \
         AND revoked_at IS NULL",
    )
    .bind(tenant.uuid())
    .bind(resource)
    .fetch_all(tx.conn())
    .await?;
    Ok(ids.into_iter().map(AuthSessionId::from_uuid).collect())
}
