//! Each tenant's own data key (crypto-shredding, migration 0039), and sealing the tenant's
//! secrets under it.
//!
//! Invariants:
//! - a tenant's webhook and tool secrets are sealed under its data key, never under the master
//!   key directly, and each is bound to its record (tenant and endpoint or tool ids);
//! - the data key exists only sealed under the master key, bound to the tenant, in the
//!   registry's `bulkhead.tenant_keys` (one per tenant, never replaced); the purge deletes it,
//!   after which no copy of the tenant's secrets opens;
//! - a key is made on the first seal (whichever process inserts first wins; every process then
//!   reads the one stored), and remembered opened in this process for at most [`crate::placement::key_cache::CACHE_TTL`];
//! - secrets sealed before migration 0039 (under the master key) still open, and are sealed
//!   under the data key the next time they are written (a rotation).

use std::sync::Arc;

use bulkhead_auth::{MasterKey, TenantDataKey};
use bulkhead_core::TenantId;
use zeroize::Zeroizing;

use crate::placement::door::TenantTx;
use crate::StoreError;

/// What a secret is: each purpose has a key of its own under the data key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Secret {
    Webhook,
    Tool,
}

fn binding(tenant: TenantId) -> [u8; 16] {
    *tenant.uuid().as_bytes()
}

const SELECT_KEY: &str = "SELECT sealed FROM bulkhead.tenant_keys WHERE id = $1";

/// The tenant's data key; made and stored first when it has none and `create` holds.
async fn data_key(
    tx: &mut TenantTx,
    master: &MasterKey,
    create: bool,
) -> Result<Option<Arc<TenantDataKey>>, StoreError> {
    let tenant = tx.tenant_id();
    if let Some(key) = tx.data_keys.as_ref().and_then(|c| c.get(tenant)) {
        return Ok(Some(key));
    }
    // Read on the transaction's own connection when its database holds the registry (no second
    // connection for the common case), else on the registry's pool.
    let elsewhere = tx.registry_elsewhere();
    let stored: Option<Vec<u8>> = match &elsewhere {
        Some(pool) => {
            sqlx::query_scalar(SELECT_KEY)
                .bind(tenant.uuid())
                .fetch_optional(pool)
                .await?
        }
        None => {
            sqlx::query_scalar(SELECT_KEY)
                .bind(tenant.uuid())
                .fetch_optional(tx.conn())
                .await?
        }
    };
    let sealed = match stored {
        Some(sealed) => sealed,
        None if !create => return Ok(None),
        None => {
            let fresh = master.seal_tenant_data_key(&binding(tenant), &TenantDataKey::generate());
            let insert = "INSERT INTO bulkhead.tenant_keys (id, sealed) VALUES ($1, $2) \
                          ON CONFLICT (id) DO NOTHING";
            // Committed on its own, on the registry's pool, before anything is sealed under
            // it: a key made inside the tenant's transaction would vanish with a rollback while
            // this process remembered it, and what it sealed later could never be opened. Once
            // per tenant, on one connection. A transaction without the registry's pool (none
            // seals today) is refused rather than keeping the key beside the secrets.
            let pool = tx.registry.clone().ok_or_else(|| {
                StoreError::UnsafeConfiguration(
                    "a tenant's data key is made only through the registry".into(),
                )
            })?;
            let mut conn = pool.acquire().await?;
            sqlx::query(insert)
                .bind(tenant.uuid())
                .bind(&fresh)
                .execute(&mut *conn)
                .await?;
            // Whoever inserted first, this reads the one key every process will use.
            sqlx::query_scalar(SELECT_KEY)
                .bind(tenant.uuid())
                .fetch_one(&mut *conn)
                .await?
        }
    };
    let key = Arc::new(
        master
            .open_tenant_data_key(&binding(tenant), &sealed)
            .map_err(|_| {
                StoreError::UnsafeConfiguration(
                    "the tenant's data key cannot be opened with this master key".into(),
                )
            })?,
    );
    // Only a key known to be committed is remembered: read committed, or made through the
    // registry's pool (a transaction without one has no memory either).
    if let (Some(cache), Some(_)) = (&tx.data_keys, &tx.registry) {
        cache.put(tenant, key.clone());
    }
    Ok(Some(key))
}

/// Seals one of the tenant's secrets under its data key (made on first use), bound to
/// `binding`.
pub(crate) async fn seal(
    tx: &mut TenantTx,
    master: &MasterKey,
    secret: Secret,
    binding: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let key = data_key(tx, master, true)
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(match secret {
        Secret::Webhook => key.seal_webhook_secret(binding, plaintext),
        Secret::Tool => key.seal_tool_secret(binding, plaintext),
    })
}

/// Opens one of the tenant's secrets: under its data key, or, sealed before tenants had data
/// keys, under the master key. Neither: [`StoreError::SecretUnopenable`] (sealed under another
/// deployment's data key or a destroyed one), or [`StoreError::UnsafeConfiguration`] when the
/// tenant's data key itself does not open (another master key).
pub(crate) async fn open(
    tx: &mut TenantTx,
    master: &MasterKey,
    secret: Secret,
    binding: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    // A data key that does not open still leaves secrets sealed before it to the master key.
    let (key, key_refused) = match data_key(tx, master, false).await {
        Ok(key) => (key, None),
        Err(err @ StoreError::UnsafeConfiguration(_)) => (None, Some(err)),
        Err(err) => return Err(err),
    };
    let under_data_key = key.and_then(|key| match secret {
        Secret::Webhook => key.open_webhook_secret(binding, sealed).ok(),
        Secret::Tool => key.open_tool_secret(binding, sealed).ok(),
    });
    if let Some(opened) = under_data_key {
        return Ok(opened);
    }
    let legacy = match secret {
        Secret::Webhook => master.open_webhook_secret(binding, sealed),
        Secret::Tool => master.open_tool_secret(binding, sealed),
    };
    legacy.map_err(|_| {
        key_refused.unwrap_or(StoreError::SecretUnopenable(match secret {
            Secret::Webhook => "webhook",
            Secret::Tool => "tool",
        }))
    })
}
