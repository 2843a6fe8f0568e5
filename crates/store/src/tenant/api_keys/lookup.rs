//! Finding a key by its hash before the tenant is known (authentication's first step), across
//! every served shared tier and the routing index of the other tiers.

use bulkhead_auth::{KeyEnvironment, KeyHash};
use bulkhead_core::{ApiKeyId, ScopeSet, TenantId};
use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::{KeyStatus, KEY_CHANGES_CHANNEL};
use crate::{Location, Placement, Store, StoreError};

/// The authentication-relevant part of a key record, found by hash before the tenant is known.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Record id.
    pub key_id: ApiKeyId,
    /// The stored hash that matched (tells which pepper version it was made with).
    pub matched_hash: KeyHash,
    /// Pepper version the stored hash was made with.
    pub pepper_version: i16,
    /// Whether it is a live key.
    pub environment: KeyEnvironment,
    /// Scopes; `None` if the stored set holds a name this binary does not know (refuse the key).
    pub scopes: Option<ScopeSet>,
    /// Stored status.
    pub status: KeyStatus,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// End of the rotation grace period, if rotating.
    pub grace_until: Option<DateTime<Utc>>,
    /// Allowed networks; `None` if a stored network does not parse (refuse the key).
    pub allowed_ips: Option<Vec<IpNet>>,
    /// Who the key acts for.
    pub principal: String,
}

#[derive(sqlx::FromRow)]
struct LookupRow {
    key_tenant_id: uuid::Uuid,
    key_id: uuid::Uuid,
    key_hash: Vec<u8>,
    key_pepper_version: i16,
    key_environment: String,
    key_scopes: Vec<String>,
    key_status: String,
    key_expires_at: Option<DateTime<Utc>>,
    key_grace_until: Option<DateTime<Utc>>,
    key_allowed_ips: Vec<String>,
    key_principal: String,
}

impl Store {
    /// A listener subscribed to [`KEY_CHANGES_CHANNEL`], for cache invalidation.
    pub async fn listen_key_changes(&self) -> Result<sqlx::postgres::PgListener, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(self.pool()).await?;
        listener.listen(KEY_CHANGES_CHANNEL).await?;
        Ok(listener)
    }

    /// Finds the key record whose stored hash is one of `hashes` (the presented key under each
    /// pepper version), across tenants, through the narrowly privileged
    /// `bulkhead.api_key_lookup` function. An ambiguous match is refused.
    pub async fn lookup_api_key(
        &self,
        hashes: &[KeyHash],
    ) -> Result<Option<KeyRecord>, StoreError> {
        let hashes: Vec<Vec<u8>> = hashes.iter().map(|h| h.as_bytes().to_vec()).collect();
        // The shared tier of every served region first (one indexed probe each), then the
        // routing index for keys of schema-tier and dedicated tenants.
        let mut rows: Vec<LookupRow> = Vec::new();
        let router = self.router();
        let mut shared = vec![router.topology.registry.clone()];
        shared.extend(router.topology.regions.iter().map(|(_, p)| p.clone()));
        let mut regions = vec![router.topology.default_region.clone()];
        regions.extend(router.topology.regions.iter().map(|(r, _)| r.clone()));
        for (pool, region) in shared.iter().zip(regions) {
            let found: Vec<LookupRow> = sqlx::query_as("SELECT * FROM bulkhead.api_key_lookup($1)")
                .bind(&hashes)
                .fetch_all(pool)
                .await?;
            for row in found {
                // A copy a move has not yet removed is not the tenant's key: only a tenant whose
                // registry location is this shared tier answers from it.
                let here = Location {
                    region: region.clone(),
                    placement: Placement::Shared,
                };
                match router
                    .location(TenantId::from_uuid(row.key_tenant_id))
                    .await
                {
                    Ok(location) if location == here => rows.push(row),
                    Ok(_) | Err(StoreError::NotFound) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        if rows.is_empty() {
            let routed: Vec<uuid::Uuid> = sqlx::query_scalar(
                "SELECT DISTINCT tenant_id FROM bulkhead.key_routes WHERE key_hash = ANY($1)",
            )
            .bind(&hashes)
            .fetch_all(self.pool())
            .await?;
            for tenant in routed {
                let tenant = TenantId::from_uuid(tenant);
                let location = match router.location(tenant).await {
                    Ok(location) => location,
                    Err(StoreError::NotFound) => continue,
                    Err(err) => return Err(err),
                };
                if location.placement == Placement::Shared || !router.serves(&location.region) {
                    continue;
                }
                let pool = router.pool_for(&location).await?;
                let found: Vec<LookupRow> = sqlx::query_as(&format!(
                    "SELECT * FROM \"{}\".api_key_lookup($1)",
                    location.placement.schema()
                ))
                .bind(&hashes)
                .fetch_all(&pool)
                .await?;
                // A route is only where to look: the key must be that tenant's.
                rows.extend(
                    found
                        .into_iter()
                        .filter(|r| r.key_tenant_id == tenant.uuid()),
                );
            }
        }
        let mut rows = rows.into_iter();
        let (Some(row), None) = (rows.next(), rows.next()) else {
            return Ok(None);
        };
        let matched: [u8; 32] = row.key_hash.as_slice().try_into().map_err(|_| {
            StoreError::UnsafeConfiguration("stored key hash has the wrong length".into())
        })?;
        Ok(Some(KeyRecord {
            tenant_id: TenantId::from_uuid(row.key_tenant_id),
            key_id: ApiKeyId::from_uuid(row.key_id),
            matched_hash: KeyHash(matched),
            pepper_version: row.key_pepper_version,
            environment: if row.key_environment == "live" {
                KeyEnvironment::Live
            } else {
                KeyEnvironment::Test
            },
            scopes: ScopeSet::parse_all(&row.key_scopes).ok(),
            status: KeyStatus::parse(&row.key_status)?,
            expires_at: row.key_expires_at,
            grace_until: row.key_grace_until,
            allowed_ips: row
                .key_allowed_ips
                .iter()
                .map(|s| s.parse::<IpNet>())
                .collect::<Result<_, _>>()
                .ok(),
            principal: row.key_principal,
        }))
    }
}
