//! Lookups every command group shares: a tenant by slug or id, the operator's context in it,
//! and the owner store for a command's database.

use anyhow::Context;
use bulkhead_core::{TenantContext, TenantId, TenantSlug};
use bulkhead_store::placement::registry::Tenant;
use bulkhead_store::Store;

use crate::config::DatabaseArgs;
use crate::service::database::{load_master_key, Database};

pub(super) async fn find_tenant(owner: &Store, text: &str) -> anyhow::Result<Tenant> {
    let found = if text.starts_with("tnt_") {
        owner.tenant_by_id(TenantId::parse(text)?).await?
    } else {
        owner.tenant_by_slug(&TenantSlug::parse(text)?).await?
    };
    found.with_context(|| format!("no tenant `{text}`"))
}

/// The context an operator command acts in on a tenant's rows (actor `system:cli`).
pub(super) fn operator_ctx(tenant: TenantId) -> TenantContext {
    TenantContext::for_system(tenant, "cli")
}

/// A tenant by slug or id ([`find_tenant`]) and the operator's context in it.
pub(super) async fn find_tenant_ctx(
    owner: &Store,
    text: &str,
) -> anyhow::Result<(Tenant, TenantContext)> {
    let tenant = find_tenant(owner, text).await?;
    let ctx = operator_ctx(tenant.id);
    Ok((tenant, ctx))
}

/// Opens the database, migrates, runs `work` with a store on the owner role, and shuts down.
pub(super) async fn with_owner<F, Fut>(database: &DatabaseArgs, work: F) -> anyhow::Result<()>
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let db = Database::open(database).await?;
    let result = async {
        db.migrate().await?;
        let master = load_master_key(database).ok().map(std::sync::Arc::new);
        let owner = db.owner_store(master).await?;
        let result = work(owner.clone()).await;
        owner.close().await;
        result
    }
    .await;
    db.shutdown().await?;
    result
}
