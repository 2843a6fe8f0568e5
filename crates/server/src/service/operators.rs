//! Operator keys (`bk_op_…`): minting, revoking and verifying the control plane's credential, and
//! the operator audit log every operator action and refusal is written to. Used by the operator
//! API and by `bulkhead operator key …`, so both store keys and events the same way.
//!
//! Keys are stored like tenant keys: HMAC-SHA256 under the current pepper, with its version, and
//! verified under every pepper the server holds. Verification is not cached: operator traffic is
//! small, and a revocation then takes effect on the very next request, in every process.

use bulkhead_auth::OperatorKey;
use bulkhead_core::{OperatorKeyId, OperatorScope, OperatorScopes};
use bulkhead_store::operators::{NewOperatorEvent, NewOperatorKey, OperatorKeyRecord};
use bulkhead_store::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::service::audit_line::{AuditLine, Detail};
use crate::service::credentials::Peppers;

/// Who is acting on the operator plane, once authenticated.
#[derive(Debug, Clone)]
pub struct OperatorContext {
    /// The audit id of the actor: the key's `opkey_…` id, or `cli:<account>`.
    pub actor: String,
    /// The key, when a key authenticated the request.
    pub key_id: Option<OperatorKeyId>,
    /// What it may do.
    pub scopes: OperatorScopes,
}

impl OperatorContext {
    /// The command line run with owner access: every scope (it could do all of it through the
    /// database anyway), named by the operating-system account.
    pub fn cli(account: String) -> Self {
        let all: Vec<&str> = OperatorScope::ALL.iter().map(|s| s.as_str()).collect();
        Self {
            actor: account,
            key_id: None,
            scopes: OperatorScopes::parse_all(&all).unwrap_or_default(),
        }
    }
}

/// Why an operator credential was refused. Audited with the reason; the client sees one 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorRefusal {
    /// No `Authorization: Bearer` header.
    NoCredential,
    /// Not an operator key (a tenant key, a token, garbage, a bad checksum).
    Malformed,
    /// No such key.
    UnknownKey,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
    /// Its stored scopes hold a name this binary does not know.
    Unreadable,
}

impl OperatorRefusal {
    /// The reason as written to the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRefusal::NoCredential => "no_credential",
            OperatorRefusal::Malformed => "malformed",
            OperatorRefusal::UnknownKey => "unknown_key",
            OperatorRefusal::Revoked => "revoked",
            OperatorRefusal::Expired => "expired",
            OperatorRefusal::Unreadable => "unreadable",
        }
    }
}

/// What a new operator key is.
#[derive(Debug, Clone)]
pub struct OperatorKeySpec {
    /// Who or what it is for.
    pub name: String,
    /// What it may do.
    pub scopes: OperatorScopes,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// An event of the operator log, as services write it.
pub fn event(
    actor: &str,
    action: &'static str,
    outcome: &'static str,
    resource: Option<String>,
    metadata: serde_json::Value,
) -> NewOperatorEvent {
    NewOperatorEvent {
        actor: actor.to_owned(),
        action,
        outcome,
        resource_id: resource,
        reason: None,
        metadata,
    }
}

/// Writes `event` to the operator log and the same line to the `bulkhead::audit` target. The
/// log write is what counts: its error is returned, and callers do not go on without it.
pub async fn record(owner: &Store, event: NewOperatorEvent) -> Result<(), StoreError> {
    let line = match event.outcome {
        "success" => AuditLine::success(event.action),
        "blocked" => AuditLine::blocked(event.action),
        "started" => AuditLine::success(event.action),
        _ => AuditLine::failure(event.action),
    }
    .actor(&event.actor);
    let line = match &event.resource_id {
        Some(resource) => line.with(Detail::Resource, resource),
        None => line,
    };
    let line = match &event.reason {
        Some(reason) => line.with(Detail::Reason, reason),
        None => line,
    };
    let result = owner.record_operator_event(&event).await;
    match &result {
        Ok(_) if event.outcome == "success" || event.outcome == "started" => {
            line.info("operator action")
        }
        Ok(_) => line.warn("operator action refused"),
        Err(err) => line
            .with(Detail::Error, err)
            .error("operator audit event not recorded"),
    }
    result.map(|_| ())
}

/// Runs an operator action between two events of the operator log: `started` (committed before
/// anything is changed, so no change goes unrecorded: if it cannot be written, nothing runs),
/// then `success` (naming what `resource` says of the result) or `failure` (with the error). A
/// change that succeeded is returned even if its closing event cannot be written (the admin key
/// of a new tenant must not be lost); that is logged at ERROR level.
pub async fn audited<T, E, Fut>(
    owner: &Store,
    actor: &str,
    action: &'static str,
    target: Option<String>,
    metadata: serde_json::Value,
    resource: impl FnOnce(&T) -> String,
    work: Fut,
) -> Result<T, E>
where
    E: From<StoreError> + std::fmt::Display,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    record(
        owner,
        event(actor, action, "started", target.clone(), metadata.clone()),
    )
    .await?;
    let result = work.await;
    let closing = match &result {
        Ok(done) => event(actor, action, "success", Some(resource(done)), metadata),
        Err(err) => NewOperatorEvent {
            reason: Some(err.to_string().chars().take(500).collect()),
            ..event(actor, action, "failure", target, metadata)
        },
    };
    // `record` has already written the error line when this fails.
    let _ = record(owner, closing).await;
    result
}

/// Mints an operator key; its `operator_key.create` event is written in the same transaction.
/// The plaintext is returned once and never stored.
pub async fn mint(
    owner: &Store,
    peppers: &Peppers,
    spec: &OperatorKeySpec,
    actor: &str,
) -> Result<(OperatorKeyRecord, OperatorKey), StoreError> {
    let name = spec.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "name: 1 to 100 characters, no control characters".into(),
        ));
    }
    let key = OperatorKey::generate();
    let new = NewOperatorKey {
        hash: peppers.current().operator_key_hash(&key),
        pepper_version: peppers.current().version(),
        display_prefix: key.display_prefix(),
        name: name.to_owned(),
        scopes: spec.scopes.to_strings(),
        created_by: actor.to_owned(),
        expires_at: spec.expires_at,
    };
    let meta = json!({ "name": new.name, "scopes": new.scopes, "expires_at": new.expires_at });
    let record = owner
        .insert_operator_key(
            &new,
            event(actor, "operator_key.create", "success", None, meta),
        )
        .await?;
    AuditLine::success("operator_key.create")
        .actor(actor)
        .with(Detail::Key, record.id)
        .info("operator key created");
    Ok((record, key))
}

/// Revokes an operator key (at once, everywhere: verification is not cached); audited in the
/// same transaction.
pub async fn revoke(
    owner: &Store,
    id: OperatorKeyId,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<OperatorKeyRecord, StoreError> {
    let record = owner
        .revoke_operator_key(
            id,
            now,
            event(
                actor,
                "operator_key.revoke",
                "success",
                Some(id.to_string()),
                json!({}),
            ),
        )
        .await?;
    AuditLine::success("operator_key.revoke")
        .actor(actor)
        .with(Detail::Key, id)
        .info("operator key revoked");
    Ok(record)
}

/// Checks a presented operator key: format and checksum first (functions of the presented text
/// alone), then the peppered lookup, then revocation, expiry and scopes.
pub async fn verify(
    owner: &Store,
    peppers: &Peppers,
    presented: &str,
    now: DateTime<Utc>,
) -> Result<Result<OperatorContext, (OperatorRefusal, Option<OperatorKeyId>)>, StoreError> {
    let Ok(key) = OperatorKey::parse(presented) else {
        return Ok(Err((OperatorRefusal::Malformed, None)));
    };
    let hashes: Vec<_> = peppers.all().map(|p| p.operator_key_hash(&key)).collect();
    let Some(record) = owner.lookup_operator_key(&hashes).await? else {
        return Ok(Err((OperatorRefusal::UnknownKey, None)));
    };
    let refused = |reason| Ok(Err((reason, Some(record.id))));
    if record.revoked_at.is_some_and(|at| at <= now) {
        return refused(OperatorRefusal::Revoked);
    }
    if record.expires_at.is_some_and(|at| at <= now) {
        return refused(OperatorRefusal::Expired);
    }
    let Ok(scopes) = OperatorScopes::parse_all(&record.scopes) else {
        return refused(OperatorRefusal::Unreadable);
    };
    // A use is worth recording, not worth failing the request for.
    if let Err(err) = owner.touch_operator_key(record.id, now).await {
        tracing::warn!(key_id = %record.id, error = %err, "operator key use not recorded");
    }
    Ok(Ok(OperatorContext {
        actor: record.id.to_string(),
        key_id: Some(record.id),
        scopes,
    }))
}

/// Leaves of the operator log read per database round trip while exporting.
pub const EXPORT_PAGE: u64 = 2000;

/// Leaves `[from, to)` as NDJSON lines.
pub async fn export_lines(owner: &Store, from: u64, to: u64) -> anyhow::Result<Vec<u8>> {
    let lines = owner.operator_export_page(from, to).await?;
    if lines.len() as u64 != to - from {
        anyhow::bail!("leaves {from}..{to} are incomplete");
    }
    let mut out = Vec::with_capacity(lines.len() * 400);
    for line in lines {
        serde_json::to_writer(&mut out, &line)?;
        out.push(b'\n');
    }
    Ok(out)
}
