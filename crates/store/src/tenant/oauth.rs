//! OAuth clients registered by a tenant's admins, the browser sessions of the login and consent
//! pages, and authorization codes (migration 0028).
//!
//! Secrets, cookie values and codes are never stored: a client secret as its HMAC (made by the
//! caller, keyed from the master key), cookie values and codes as their SHA-256 (each is 256
//! random bits, so a plain hash is enough). Every lookup runs in the tenant's transaction, under
//! its row-level security.

use bulkhead_core::{AuthSessionId, OAuthClientId, ScopeSet, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{StoreError, TenantTx};

/// How a client authenticates at the token endpoint (RFC 7591 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// A public client (a native or browser app): no secret; PKCE alone binds the code.
    None,
    /// HTTP Basic with the client id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl ClientAuthMethod {
    /// Stored text (the RFC 7591 name).
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::None => "none",
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "client_secret_basic" => ClientAuthMethod::ClientSecretBasic,
            "client_secret_post" => ClientAuthMethod::ClientSecretPost,
            _ => ClientAuthMethod::None,
        }
    }

    /// Whether clients of this method hold a secret.
    pub const fn is_confidential(self) -> bool {
        !matches!(self, ClientAuthMethod::None)
    }
}

/// Who registered a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RegisteredBy {
    /// An admin, through `/v1/oauth-clients`.
    Admin,
    /// The client itself, through dynamic registration (RFC 7591, `/oauth/register`); deleted
    /// when unused for [`DYNAMIC_CLIENT_IDLE_DAYS`].
    Dynamic,
    /// Named by the URL of its client ID metadata document; stored when a user first consents
    /// to it, deleted when unused like a dynamic one.
    MetadataDocument,
}

impl RegisteredBy {
    /// Stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            RegisteredBy::Admin => "admin",
            RegisteredBy::Dynamic => "dynamic",
            RegisteredBy::MetadataDocument => "metadata_document",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "dynamic" => RegisteredBy::Dynamic,
            "metadata_document" => RegisteredBy::MetadataDocument,
            _ => RegisteredBy::Admin,
        }
    }
}

/// Most OAuth clients a tenant's admins may register (decision: a fixed cap, well above what an
/// organisation's admins register by hand; each client is shown on consent pages and checked
/// on every authorization request, so an unbounded list is a way to grow the database). One
/// more is refused (409). Self-registered clients are counted apart
/// ([`MAX_SELF_REGISTERED_CLIENTS`]): strangers never take an admin's place.
pub const MAX_CLIENTS_PER_TENANT: i64 = 100;

/// Most self-registered clients (dynamic registration and metadata documents together) a tenant
/// may have, counted apart from the admins' (decision: the same 100).
pub const MAX_SELF_REGISTERED_CLIENTS: i64 = 100;

/// Days a dynamically registered client may go unused (no code issued or exchanged, no refresh)
/// before it is deleted (decision: 30, long enough for a monthly task, short enough that
/// abandoned registrations do not hold the tenant's places for long).
pub const DYNAMIC_CLIENT_IDLE_DAYS: i64 = 30;

/// A registered client as shown (never its secret, nor the secret's hash).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthClient {
    /// The `client_id`.
    pub id: OAuthClientId,
    /// Shown on the consent page.
    pub name: String,
    /// The exact redirect URIs (loopback ones match any port).
    pub redirect_uris: Vec<String>,
    /// How it authenticates at the token endpoint.
    pub token_endpoint_auth_method: ClientAuthMethod,
    /// The most it may ever be granted.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub scopes: Vec<String>,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
    /// Who registered it.
    pub registered_by: RegisteredBy,
    /// When it last obtained or exchanged a code, or refreshed.
    pub last_used_at: DateTime<Utc>,
    /// The URL of its client ID metadata document (its `client_id` to the outside), for a
    /// client registered that way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_url: Option<String>,
}

impl OAuthClient {
    /// The allowed scopes as a set; a name this binary does not know empties it (fail closed).
    pub fn scope_set(&self) -> ScopeSet {
        ScopeSet::parse_all(&self.scopes).unwrap_or_default()
    }
}

type ClientRow = (
    Uuid,
    String,
    Vec<String>,
    String,
    Vec<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    DateTime<Utc>,
    Option<String>,
);

/// A client row with its secret's HMAC.
type SecretRow = (
    Uuid,
    String,
    Vec<String>,
    String,
    Vec<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    DateTime<Utc>,
    Option<String>,
    Option<Vec<u8>>,
);

const CLIENT_COLUMNS: &str = "id, name, redirect_uris, token_endpoint_auth_method, scopes, \
     created_at, updated_at, registered_by, last_used_at, metadata_url";

fn client_from_row(
    (id, name, uris, method, scopes, created, updated, by, used, url): ClientRow,
) -> OAuthClient {
    OAuthClient {
        id: OAuthClientId::from_uuid(id),
        name,
        redirect_uris: uris,
        token_endpoint_auth_method: ClientAuthMethod::parse(&method),
        scopes,
        created_at: created,
        updated_at: updated,
        registered_by: RegisteredBy::parse(&by),
        last_used_at: used,
        metadata_url: url,
    }
}

/// A client to register.
#[derive(Debug)]
pub struct NewClient<'a> {
    /// Its id, chosen by the caller (the secret's HMAC is bound to it).
    pub id: OAuthClientId,
    /// Name.
    pub name: &'a str,
    /// Redirect URIs, already validated.
    pub redirect_uris: &'a [String],
    /// Method.
    pub method: ClientAuthMethod,
    /// HMAC of the secret, for a confidential client.
    pub secret_hash: Option<[u8; 32]>,
    /// Allowed scopes.
    pub scopes: &'a ScopeSet,
    /// Who registers it.
    pub registered_by: RegisteredBy,
}

/// Registers a client.
pub async fn create_client(
    tx: &mut TenantTx,
    new: &NewClient<'_>,
) -> Result<OAuthClient, StoreError> {
    let tenant = tx.tenant_id();
    let row: ClientRow = sqlx::query_as(&format!(
        "INSERT INTO oauth_clients (tenant_id, id, name, redirect_uris, \
         token_endpoint_auth_method, secret_hash, scopes, registered_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {CLIENT_COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(new.id.uuid())
    .bind(new.name)
    .bind(new.redirect_uris)
    .bind(new.method.as_str())
    .bind(new.secret_hash.map(|h| h.to_vec()))
    .bind(new.scopes.to_strings())
    .bind(new.registered_by.as_str())
    .fetch_one(tx.conn())
    .await?;
    Ok(client_from_row(row))
}

/// One client; another tenant's id is [`StoreError::NotFound`].
pub async fn get_client(tx: &mut TenantTx, id: OAuthClientId) -> Result<OAuthClient, StoreError> {
    let tenant = tx.tenant_id();
    let row: ClientRow = sqlx::query_as(&format!(
        "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_one(tx.conn())
    .await?;
    Ok(client_from_row(row))
}

/// One client, its row locked until the transaction ends (a change checked against its
/// current scopes cannot race another change of them).
pub async fn get_client_for_update(
    tx: &mut TenantTx,
    id: OAuthClientId,
) -> Result<OAuthClient, StoreError> {
    let tenant = tx.tenant_id();
    let row: ClientRow = sqlx::query_as(&format!(
        "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_one(tx.conn())
    .await?;
    Ok(client_from_row(row))
}

/// One client with its secret's HMAC (for client authentication only).
pub async fn client_with_secret(
    tx: &mut TenantTx,
    id: OAuthClientId,
) -> Result<(OAuthClient, Option<Vec<u8>>), StoreError> {
    let tenant = tx.tenant_id();
    let (id, name, uris, method, scopes, created, updated, by, used, url, secret): SecretRow =
        sqlx::query_as(&format!(
        "SELECT {CLIENT_COLUMNS}, secret_hash FROM oauth_clients WHERE tenant_id = $1 AND id = $2"
    ))
        .bind(tenant.uuid())
        .bind(id.uuid())
        .fetch_one(tx.conn())
        .await?;
    Ok((
        client_from_row((
            id, name, uris, method, scopes, created, updated, by, used, url,
        )),
        secret,
    ))
}

/// How many clients of one kind the tenant has (`self_registered`: dynamic and metadata
/// document ones, else the admins'), under a lock of its client list that holds to the end of
/// the transaction (so a cap checked with it holds; [`super::count_locked`]).
pub async fn count_clients_locked(
    tx: &mut TenantTx,
    self_registered: bool,
) -> Result<i64, StoreError> {
    super::count_locked(tx, super::CappedList::OAuthClients).await?;
    let tenant = tx.tenant_id();
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM oauth_clients WHERE tenant_id = $1 \
         AND (registered_by <> 'admin') = $2",
    )
    .bind(tenant.uuid())
    .bind(self_registered)
    .fetch_one(tx.conn())
    .await?;
    Ok(count)
}

/// Records that a client was used at `now` (a code issued or exchanged, a refresh): what keeps
/// a dynamically registered client alive. Written at most once an hour per client.
pub async fn touch_client(
    tx: &mut TenantTx,
    id: OAuthClientId,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "UPDATE oauth_clients SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2 \
         AND last_used_at < $3 - interval '1 hour'",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Stores (or refreshes) a client named by its metadata document, under `client.id` (derived
/// from the tenant and the URL by the caller), with the document's name, redirect URIs and
/// scopes; marks it used at `now`. Returns whether the row is new.
pub async fn upsert_metadata_client(
    tx: &mut TenantTx,
    client: &OAuthClient,
    url: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let tenant = tx.tenant_id();
    let inserted: bool = sqlx::query_scalar(
        "INSERT INTO oauth_clients (tenant_id, id, name, redirect_uris, \
         token_endpoint_auth_method, scopes, registered_by, metadata_url, last_used_at) \
         VALUES ($1, $2, $3, $4, 'none', $5, 'metadata_document', $6, $7) \
         ON CONFLICT (tenant_id, id) DO UPDATE SET name = EXCLUDED.name, \
         redirect_uris = EXCLUDED.redirect_uris, scopes = EXCLUDED.scopes, \
         last_used_at = EXCLUDED.last_used_at, updated_at = now() \
         WHERE oauth_clients.metadata_url = EXCLUDED.metadata_url \
         RETURNING (xmax = 0)",
    )
    .bind(tenant.uuid())
    .bind(client.id.uuid())
    .bind(&client.name)
    .bind(&client.redirect_uris)
    .bind(&client.scopes)
    .bind(url)
    .bind(now)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(inserted)
}

/// Before this instant, an unused self-registered client has expired.
pub fn idle_cutoff(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::days(DYNAMIC_CLIENT_IDLE_DAYS)
}

/// Whether a client is a self-registered one (dynamic or metadata document) unused since before
/// `cutoff` (expired: the endpoints treat it as unknown until a registration sweeps it).
pub fn is_expired(client: &OAuthClient, cutoff: DateTime<Utc>) -> bool {
    client.registered_by != RegisteredBy::Admin && client.last_used_at < cutoff
}

/// Up to `limit` self-registered clients unused since before `cutoff`, locked: the ones a
/// registration deletes (with their sessions) before counting the tenant's clients.
pub async fn expired_dynamic_clients(
    tx: &mut TenantTx,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<OAuthClientId>, StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM oauth_clients WHERE tenant_id = $1 AND registered_by <> 'admin' \
         AND last_used_at < $2 ORDER BY last_used_at LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind(tenant.uuid())
    .bind(cutoff)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?;
    Ok(ids.into_iter().map(OAuthClientId::from_uuid).collect())
}

/// A page of clients in id order, after `after`.
pub async fn list_clients(
    tx: &mut TenantTx,
    after: Option<OAuthClientId>,
    limit: u32,
) -> Result<Vec<OAuthClient>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<ClientRow> = sqlx::query_as(&format!(
        "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE tenant_id = $1 \
         AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant.uuid())
    .bind(after.map(|a| a.uuid()))
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(client_from_row).collect())
}

/// Changes a client's name, redirect URIs and/or scopes.
pub async fn update_client(
    tx: &mut TenantTx,
    id: OAuthClientId,
    name: Option<&str>,
    redirect_uris: Option<&[String]>,
    scopes: Option<&ScopeSet>,
) -> Result<OAuthClient, StoreError> {
    let tenant = tx.tenant_id();
    let row: ClientRow = sqlx::query_as(&format!(
        "UPDATE oauth_clients SET name = coalesce($3, name), \
         redirect_uris = coalesce($4, redirect_uris), scopes = coalesce($5, scopes), \
         updated_at = now() WHERE tenant_id = $1 AND id = $2 RETURNING {CLIENT_COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(name)
    .bind(redirect_uris)
    .bind(scopes.map(ScopeSet::to_strings))
    .fetch_one(tx.conn())
    .await?;
    Ok(client_from_row(row))
}

/// Deletes a client and its codes. Sessions it started are ended by the caller.
pub async fn delete_client(tx: &mut TenantTx, id: OAuthClientId) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query("DELETE FROM oauth_clients WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(id.uuid())
        .execute(tx.conn())
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The live auth sessions a client's grants started (what deleting the client ends).
pub async fn live_sessions_of_client(
    tx: &mut TenantTx,
    id: OAuthClientId,
) -> Result<Vec<AuthSessionId>, StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM auth_sessions WHERE tenant_id = $1 AND client_id = $2 \
         AND revoked_at IS NULL",
    )
    .bind(tenant.uuid())
    .bind(id.to_string())
    .fetch_all(tx.conn())
    .await?;
    Ok(ids.into_iter().map(AuthSessionId::from_uuid).collect())
}

/// A browser session of the login and consent pages.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    /// Row id.
    pub id: Uuid,
    /// The user who logged in through it, if anyone has.
    pub user_id: Option<UserId>,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
    /// When it began: the user's sign-in (a session is stored only at a login).
    pub created_at: DateTime<Utc>,
}

/// Stores a browser session under the hash of its cookie value.
pub async fn create_browser_session(
    tx: &mut TenantTx,
    token_hash: &[u8; 32],
    user: Option<UserId>,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "INSERT INTO oauth_browser_sessions (tenant_id, id, token_hash, user_id, created_at, \
         expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.uuid())
    .bind(Uuid::now_v7())
    .bind(&token_hash[..])
    .bind(user.map(|u| u.uuid()))
    .bind(now)
    .bind(expires_at)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The live browser session whose cookie hashes to `token_hash`, if any.
pub async fn find_browser_session(
    tx: &mut TenantTx,
    token_hash: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<Option<BrowserSession>, StoreError> {
    let tenant = tx.tenant_id();
    type Row = (Uuid, Option<Uuid>, DateTime<Utc>, DateTime<Utc>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, user_id, expires_at, created_at FROM oauth_browser_sessions \
         WHERE tenant_id = $1 AND token_hash = $2 AND expires_at > $3",
    )
    .bind(tenant.uuid())
    .bind(&token_hash[..])
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    Ok(
        row.map(|(id, user, expires_at, created_at)| BrowserSession {
            id,
            user_id: user.map(UserId::from_uuid),
            expires_at,
            created_at,
        }),
    )
}

/// Deletes a browser session (replaced at login) and up to `sweep` expired ones.
pub async fn delete_browser_session(
    tx: &mut TenantTx,
    id: Uuid,
    now: DateTime<Utc>,
    sweep: i64,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "DELETE FROM oauth_browser_sessions WHERE tenant_id = $1 AND (id = $2 OR id IN \
         (SELECT id FROM oauth_browser_sessions WHERE tenant_id = $1 AND expires_at <= $3 LIMIT $4))",
    )
    .bind(tenant.uuid())
    .bind(id)
    .bind(now)
    .bind(sweep)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// An authorization code to store.
#[derive(Debug)]
pub struct NewCode<'a> {
    /// SHA-256 of the code.
    pub code_hash: [u8; 32],
    /// The client it was issued to.
    pub client_id: OAuthClientId,
    /// The redirect URI it was sent to (the token request must repeat it exactly).
    pub redirect_uri: &'a str,
    /// The PKCE S256 challenge.
    pub code_challenge: &'a str,
    /// The user who consented.
    pub user_id: UserId,
    /// The granted scopes.
    pub scopes: &'a ScopeSet,
    /// The protected resource it is for (`""`: Bulkhead's own API).
    pub resource: &'a str,
    /// The OpenID Connect identity scopes granted (migration 0034).
    pub identity_scopes: &'a [String],
    /// The authorization request's `nonce`, for the ID token.
    pub nonce: Option<&'a str>,
    /// When the user signed in.
    pub auth_time: DateTime<Utc>,
    /// Now.
    pub now: DateTime<Utc>,
    /// When it stops being good.
    pub expires_at: DateTime<Utc>,
}

/// Stores a code, and sweeps up to 64 codes whose expiry passed (their reuse can no longer be
/// told from a stranger's guess, and their tokens' sessions are the sessions' business).
pub async fn insert_code(tx: &mut TenantTx, new: &NewCode<'_>) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "DELETE FROM oauth_codes WHERE tenant_id = $1 AND id IN (SELECT id FROM oauth_codes \
         WHERE tenant_id = $1 AND expires_at <= $2 LIMIT 64)",
    )
    .bind(tenant.uuid())
    .bind(new.now - chrono::Duration::hours(1))
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "INSERT INTO oauth_codes (tenant_id, id, code_hash, client_id, redirect_uri, \
         code_challenge, user_id, scopes, created_at, expires_at, resource, identity_scopes, \
         nonce, auth_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(tenant.uuid())
    .bind(Uuid::now_v7())
    .bind(&new.code_hash[..])
    .bind(new.client_id.uuid())
    .bind(new.redirect_uri)
    .bind(new.code_challenge)
    .bind(new.user_id.uuid())
    .bind(new.scopes.to_strings())
    .bind(new.now)
    .bind(new.expires_at)
    .bind(new.resource)
    .bind(new.identity_scopes)
    .bind(new.nonce)
    .bind(new.auth_time)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A stored code, locked for the exchange.
#[derive(Debug, Clone)]
pub struct StoredCode {
    /// Row id.
    pub id: Uuid,
    /// Client.
    pub client_id: OAuthClientId,
    /// Redirect URI.
    pub redirect_uri: String,
    /// PKCE challenge.
    pub code_challenge: String,
    /// User.
    pub user_id: UserId,
    /// Granted scopes (unreadable names fail closed: `None`).
    pub scopes: Option<ScopeSet>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// When it was exchanged, if it was.
    pub used_at: Option<DateTime<Utc>>,
    /// The session its exchange started.
    pub session_id: Option<AuthSessionId>,
    /// The protected resource it is for (`""`: Bulkhead's own API).
    pub resource: String,
    /// The identity scopes granted, its `nonce` and the user's sign-in time (migration 0034).
    pub oidc: CodeOidc,
}

/// What a code keeps for its ID token (migration 0034).
#[derive(Debug, Clone, Default)]
pub struct CodeOidc {
    /// The OpenID Connect identity scopes granted.
    pub identity_scopes: Vec<String>,
    /// The authorization request's `nonce`.
    pub nonce: Option<String>,
    /// When the user signed in (`None` for codes stored before 0034).
    pub auth_time: Option<DateTime<Utc>>,
}

/// The code whose hash is `code_hash`, its row locked until the transaction ends (two
/// concurrent exchanges of one code are serialised: the second sees it used).
pub async fn find_code_for_update(
    tx: &mut TenantTx,
    code_hash: &[u8; 32],
) -> Result<Option<StoredCode>, StoreError> {
    let tenant = tx.tenant_id();
    type Row = (
        Uuid,
        Uuid,
        String,
        String,
        Uuid,
        Vec<String>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<Uuid>,
        String,
        Vec<String>,
        Option<String>,
        Option<DateTime<Utc>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, client_id, redirect_uri, code_challenge, user_id, scopes, expires_at, \
         used_at, session_id, resource, identity_scopes, nonce, auth_time FROM oauth_codes \
         WHERE tenant_id = $1 AND code_hash = $2 FOR UPDATE",
    )
    .bind(tenant.uuid())
    .bind(&code_hash[..])
    .fetch_optional(tx.conn())
    .await?;
    Ok(row.map(
        |(
            id,
            client,
            redirect_uri,
            challenge,
            user,
            scopes,
            expires_at,
            used_at,
            session,
            resource,
            identity_scopes,
            nonce,
            auth_time,
        )| {
            StoredCode {
                id,
                client_id: OAuthClientId::from_uuid(client),
                redirect_uri,
                code_challenge: challenge,
                user_id: UserId::from_uuid(user),
                scopes: ScopeSet::parse_all(&scopes).ok(),
                expires_at,
                used_at,
                session_id: session.map(AuthSessionId::from_uuid),
                resource,
                oidc: CodeOidc {
                    identity_scopes,
                    nonce,
                    auth_time,
                },
            }
        },
    ))
}

/// Marks a code used by the exchange that started `session`.
pub async fn mark_code_used(
    tx: &mut TenantTx,
    id: Uuid,
    now: DateTime<Utc>,
    session: AuthSessionId,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "UPDATE oauth_codes SET used_at = $3, session_id = $4 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id)
    .bind(now)
    .bind(session.uuid())
    .execute(tx.conn())
    .await?;
    Ok(())
}
