//! The one get/put of a tenant-wide policy (one row per tenant: the key policy, the token
//! policy, the screening policy): read in a read-only transaction; replaced with its audit event
//! in the same transaction, through [`super::write::Tail`].

use std::future::Future;

use bulkhead_core::TenantContext;
use bulkhead_store::{Access, TenantTx};
use serde_json::Value;

use super::write::Tail;
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// A tenant-wide policy: how it is read and stored, and how its change is audited.
pub(crate) trait TenantPolicy: Sized {
    /// The audit action of a replacement (`key_policy.update`, …).
    const AUDIT_ACTION: &'static str;

    /// Reads the tenant's policy (its defaults when never set).
    fn load(tx: &mut TenantTx) -> impl Future<Output = Result<Self, ApiError>> + Send;

    /// Stores the policy.
    fn store(&self, tx: &mut TenantTx) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// What the audit event of a replacement says.
    fn audit_meta(&self) -> Value;
}

/// The tenant's policy.
pub(crate) async fn read<P: TenantPolicy>(
    state: &AppState,
    ctx: &TenantContext,
) -> Result<P, ApiError> {
    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let policy = P::load(&mut tx).await?;
    tx.commit().await?;
    Ok(policy)
}

/// Replaces the tenant's policy (already validated by the caller) and audits the change.
pub(crate) async fn replace<P: TenantPolicy + Sync>(
    state: &AppState,
    ctx: &TenantContext,
    policy: &P,
) -> Result<(), ApiError> {
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    policy.store(&mut tx).await?;
    Tail::new()
        .audit_tenant_wide(P::AUDIT_ACTION, policy.audit_meta())
        .commit(tx, state, ctx)
        .await
}

impl TenantPolicy for bulkhead_store::tenant::api_keys::KeyPolicy {
    const AUDIT_ACTION: &'static str = "key_policy.update";

    async fn load(tx: &mut TenantTx) -> Result<Self, ApiError> {
        Ok(bulkhead_store::tenant::api_keys::policy(tx).await?)
    }

    async fn store(&self, tx: &mut TenantTx) -> Result<(), ApiError> {
        Ok(bulkhead_store::tenant::api_keys::set_policy(tx, self).await?)
    }

    fn audit_meta(&self) -> Value {
        serde_json::json!(self)
    }
}

impl TenantPolicy for bulkhead_store::tenant::tokens::TokenPolicy {
    const AUDIT_ACTION: &'static str = "token_policy.update";

    async fn load(tx: &mut TenantTx) -> Result<Self, ApiError> {
        Ok(bulkhead_store::tenant::tokens::token_policy(tx).await?)
    }

    async fn store(&self, tx: &mut TenantTx) -> Result<(), ApiError> {
        Ok(bulkhead_store::tenant::tokens::set_token_policy(tx, self).await?)
    }

    fn audit_meta(&self) -> Value {
        serde_json::json!(self)
    }
}

impl TenantPolicy for bulkhead_screening::Policy {
    const AUDIT_ACTION: &'static str = "tool.screening_policy";

    async fn load(tx: &mut TenantTx) -> Result<Self, ApiError> {
        Ok(crate::service::screen::policy(tx).await?)
    }

    async fn store(&self, tx: &mut TenantTx) -> Result<(), ApiError> {
        Ok(bulkhead_store::tenant::tools::set_screening_policy(tx, self.as_str()).await?)
    }

    fn audit_meta(&self) -> Value {
        serde_json::json!({ "policy": self.as_str() })
    }
}
