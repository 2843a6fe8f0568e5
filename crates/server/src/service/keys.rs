//! Minting and rotating API keys: the one place a key's plaintext is made. Used by the REST API,
//! the CLI and tenant onboarding, so all three store keys the same way.

use bulkhead_auth::{ApiKey, KeyEnvironment};
use bulkhead_core::{AgentId, ApiKeyId, ScopeSet};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::api_keys::{self, ApiKeyRecord, NewApiKey};
use bulkhead_store::{tenant::webhooks, StoreError, TenantTx};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde_json::json;

use crate::service::audit_log::record_success;
use crate::service::credentials::Peppers;

/// What a new key is.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Who it acts for.
    pub principal: String,
    /// What it may do.
    pub scopes: ScopeSet,
    /// The agent it belongs to, if any.
    pub agent: Option<AgentId>,
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
        agent: spec.agent,
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
    webhooks::enqueue_platform_event(tx, "api_key.created", json!({ "key_id": id })).await?;
    Ok((id, key))
}

/// The key's allowlist; a stored network that does not parse is an error, never "anywhere".
pub fn stored_networks(record: &ApiKeyRecord) -> Result<Vec<IpNet>, StoreError> {
    record
        .allowed_ips
        .iter()
        .map(|n| n.parse::<IpNet>())
        .collect::<Result<_, _>>()
        .map_err(|_| StoreError::Invalid("stored allowed_ips".into()))
}

/// Revokes `id` and every successor that was minted by the key before it (a self-rotation): a
/// thief who rotated a stolen key must not keep the successor once the key is revoked. A
/// successor minted by someone else (an operator rotating the key) is left alone, so revoking an
/// old key ends its grace early without touching its replacement. Audited per key.
pub async fn revoke_with_self_made_successors(
    tx: &mut TenantTx,
    id: ApiKeyId,
    now: DateTime<Utc>,
) -> Result<(ApiKeyRecord, Vec<ApiKeyId>), StoreError> {
    let record = api_keys::revoke(tx, id, now).await?;
    record_success(tx, "api_key.revoke", id).await?;
    webhooks::enqueue_platform_event(tx, "api_key.revoked", json!({ "key_id": id })).await?;
    let mut also = Vec::new();
    let mut current = record.clone();
    // Chains are short (one rotation per grace period); the bound guards against a cycle.
    while let (Some(next), true) = (current.successor_id, also.len() < 64) {
        let successor = api_keys::get(tx, next, now).await?;
        if successor.created_by != current.id.to_string() {
            break;
        }
        current = api_keys::revoke(tx, next, now).await?;
        let meta = json!({ "cascade_from": id.to_string(), "reason": "self-made successor of a revoked key" });
        audit::record(
            tx,
            "api_key.revoke",
            Some(&next.to_string()),
            Outcome::Success,
            meta,
        )
        .await?;
        webhooks::enqueue_platform_event(tx, "api_key.revoked", json!({ "key_id": next })).await?;
        also.push(next);
    }
    Ok((record, also))
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
    // From the locked row, so a concurrent narrowing cannot be undone by the successor.
    let current = api_keys::get_for_update(tx, old, now).await?;
    let spec = KeySpec {
        principal: current.principal.clone(),
        scopes: ScopeSet::parse_all(&current.scopes)
            .map_err(|_| StoreError::Invalid("stored scopes".into()))?,
        agent: current.agent_id,
        allowed_ips: stored_networks(&current)?,
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
    let event = json!({ "key_id": old, "successor": new_id });
    webhooks::enqueue_platform_event(tx, "api_key.rotated", event).await?;
    Ok((old_record, new_id, key))
}
