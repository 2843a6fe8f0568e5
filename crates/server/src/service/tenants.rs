//! Onboarding a tenant: registry row plus a bootstrap admin key, shown once.

use bulkhead_auth::{ApiKey, KeyEnvironment};
use bulkhead_core::ApiKeyId;
use bulkhead_store::placement::registry::{NewTenant, Tenant};
use bulkhead_store::tenant::api_keys::NewApiKey;
use bulkhead_store::{Store, StoreError};

use crate::service::audit_line::{AuditLine, Detail};
use crate::service::credentials::Peppers;

/// A new tenant and its first key. The key's plaintext exists only here, to be shown once.
#[derive(Debug)]
pub struct Onboarded {
    /// The registry row.
    pub tenant: Tenant,
    /// The key record's id.
    pub admin_key_id: ApiKeyId,
    /// The key itself (never stored).
    pub admin_key: ApiKey,
}

/// Creates the tenant and its admin key (every scope) in one transaction. `owner` must be a
/// store on the owner role.
pub async fn onboard(
    owner: &Store,
    peppers: &Peppers,
    environment: KeyEnvironment,
    new: &NewTenant,
) -> Result<Onboarded, StoreError> {
    let admin_key = ApiKey::generate(environment);
    let record = NewApiKey::bootstrap_admin(&admin_key, peppers.current(), environment);
    let (tenant, admin_key_id) = owner.onboard_tenant(new, &record).await?;
    AuditLine::success("tenant.create")
        .tenant(tenant.id)
        .actor("system:onboarding")
        .with(Detail::Key, admin_key_id)
        .info("tenant onboarded");
    Ok(Onboarded {
        tenant,
        admin_key_id,
        admin_key,
    })
}
