//! API key records. Only the peppered HMAC of a key is ever stored.

use bulkhead_auth::{KeyEnvironment, KeyHash};
use bulkhead_core::{ApiKeyId, ScopeSet, TenantId};
use chrono::{DateTime, Utc};

use crate::{Store, StoreError, TenantTx};

/// What is stored for a new key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// HMAC of the key under the current pepper.
    pub hash: KeyHash,
    /// Version of that pepper.
    pub pepper_version: i16,
    /// Live or test key.
    pub environment: KeyEnvironment,
    /// Non-secret prefix for humans (`bk_live_AbC1`).
    pub display_prefix: String,
    /// What the key may do.
    pub scopes: ScopeSet,
    /// Free text.
    pub description: String,
    /// Who made it (audit id of the actor).
    pub created_by: String,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Stores a key record for the transaction's tenant and returns its id.
pub async fn insert(tx: &mut TenantTx, key: &NewApiKey) -> Result<ApiKeyId, StoreError> {
    let id = ApiKeyId::new();
    let tenant = tx.tenant_id();
    sqlx::query(
        "INSERT INTO bulkhead.api_keys (tenant_id, id, key_hash, pepper_version, environment, \
         display_prefix, scopes, description, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(&key.hash.as_bytes()[..])
    .bind(key.pepper_version)
    .bind(environment_text(key.environment))
    .bind(&key.display_prefix)
    .bind(key.scopes.to_strings())
    .bind(&key.description)
    .bind(&key.created_by)
    .bind(key.expires_at)
    .execute(tx.conn())
    .await?;
    Ok(id)
}

fn environment_text(env: KeyEnvironment) -> &'static str {
    match env {
        KeyEnvironment::Live => "live",
        KeyEnvironment::Test => "test",
    }
}

/// The authentication-relevant part of a key record, found by hash before the tenant is known.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Record id.
    pub key_id: ApiKeyId,
    /// Pepper version the stored hash was made with.
    pub pepper_version: i16,
    /// Whether it is a live key.
    pub environment: KeyEnvironment,
    /// Scopes; `None` if the stored set holds a name this binary does not know (refuse the key).
    pub scopes: Option<ScopeSet>,
    /// `active`, `rotating`, `revoked` or `expired`.
    pub status: String,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
}

type LookupRow = (
    uuid::Uuid,
    uuid::Uuid,
    i16,
    String,
    Vec<String>,
    String,
    Option<DateTime<Utc>>,
);

impl Store {
    /// Finds the key record whose stored hash equals `hash`, across tenants, through the
    /// narrowly privileged `bulkhead.api_key_lookup` function. An ambiguous match is refused.
    pub async fn lookup_api_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let rows: Vec<LookupRow> = sqlx::query_as(
            "SELECT key_tenant_id, key_id, key_pepper_version, key_environment, key_scopes, key_status, \
             key_expires_at FROM bulkhead.api_key_lookup($1)",
        )
        .bind(&hash.as_bytes()[..])
        .fetch_all(self.pool())
        .await?;
        let mut rows = rows.into_iter();
        let (Some(row), None) = (rows.next(), rows.next()) else {
            return Ok(None);
        };
        let (tenant, id, pepper_version, environment, scopes, status, expires_at) = row;
        Ok(Some(KeyRecord {
            tenant_id: TenantId::from_uuid(tenant),
            key_id: ApiKeyId::from_uuid(id),
            pepper_version,
            environment: if environment == "live" {
                KeyEnvironment::Live
            } else {
                KeyEnvironment::Test
            },
            scopes: ScopeSet::parse_all(&scopes).ok(),
            status,
            expires_at,
        }))
    }
}
