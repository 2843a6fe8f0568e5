//! Minting and rotating API keys: the one place a key's plaintext is made. Used by the REST API,
//! the CLI and tenant onboarding, so all three store keys the same way.

use bulkhead_auth::{ApiKey, KeyEnvironment};
use bulkhead_core::{ApiKeyId, ScopeSet};
use bulkhead_store::api_keys::{self, ApiKeyRecord, NewApiKey};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::{StoreError, TenantTx};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde_json::json;

use crate::credentials::Peppers;

/// What a new key is.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Who it acts for.
    pub principal: String,
    /// What it may do.
    pub scopes: ScopeSet,
    /// Where it may be used from; empty: anywhere.
    pub allowed_ips: Vec<IpNet>,
    /// Free text.
    pub description: String,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The storage form of a fresh key under the current pepper.
pub fn new_record(
    peppers: &Peppers,
    environment: KeyEnvironment,
    key: &ApiKey,
    spec: &KeySpec,
    created_by: String,
) -> NewApiKey {
    NewApiKey {
        hash: peppers.current().key_hash(key),
        pepper_version: peppers.current().version(),
        environment,
        display_prefix: key.display_prefix(),
        principal: spec.principal.clone(),
        scopes: spec.scopes.clone(),
        allowed_ips: spec.allowed_ips.clone(),
        description: spec.description.clone(),
        created_by,
        expires_at: spec.expires_at,
        predecessor: None,
    }
}

/// Creates a key in the transaction's tenant, with its audit event. The caller checks that the
/// actor may grant `spec.scopes`.
pub async fn mint(
    tx: &mut TenantTx,
    peppers: &Peppers,
    environment: KeyEnvironment,
    spec: &KeySpec,
) -> Result<(ApiKeyId, ApiKey), StoreError> {
    let key = ApiKey::generate(environment);
    let created_by = tx.actor().audit_id();
    let id = api_keys::insert(
        tx,
        &new_record(peppers, environment, &key, spec, created_by),
    )
    .await?;
    let meta = json!({ "scopes": spec.scopes.to_strings(), "principal": spec.principal, "allowed_ips": spec.allowed_ips.len() });
    audit::record(
        tx,
        "api_key.create",
        Some(&id.to_string()),
        Outcome::Success,
        meta,
    )
    .await?;
    Ok((id, key))
}

/// Rotates `old`: a successor with the same scopes, principal, allowlist and expiry, and the old
/// key kept working until `now + grace`. Audited.
pub async fn rotate(
    tx: &mut TenantTx,
    peppers: &Peppers,
    environment: KeyEnvironment,
    old: ApiKeyId,
    grace: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<(ApiKeyRecord, ApiKeyId, ApiKey), StoreError> {
    let current = api_keys::get(tx, old, now).await?;
    let spec = KeySpec {
        principal: current.principal.clone(),
        scopes: ScopeSet::parse_all(&current.scopes)
            .map_err(|_| StoreError::Invalid("stored scopes".into()))?,
        allowed_ips: current
            .allowed_ips
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect(),
        description: current.description.clone(),
        expires_at: current.expires_at,
    };
    let key = ApiKey::generate(environment);
    let mut record = new_record(peppers, environment, &key, &spec, tx.actor().audit_id());
    record.predecessor = Some(old);
    let (old_record, new_id) = api_keys::rotate(tx, old, &record, now + grace, now).await?;
    let meta = json!({ "successor": new_id.to_string(), "grace_until": old_record.grace_until });
    audit::record(
        tx,
        "api_key.rotate",
        Some(&old.to_string()),
        Outcome::Success,
        meta,
    )
    .await?;
    Ok((old_record, new_id, key))
}
