//! The repositories of tenant data, one module per family of tables. Every function takes the
//! tenant transaction ([`crate::TenantTx`]) and filters on its tenant explicitly, beside
//! row-level security; work across tenants takes the [`crate::Store`] and enters each tenant
//! through the door. Repositories use placement types and never the other way round.

pub mod agents;
pub mod api_keys;
pub(crate) mod data_key;
pub mod jobs;
pub mod oauth;
pub mod oauth_grants;
pub mod oauth_resources;
pub mod oauth_settings;
pub mod quotas;
pub mod rbac;
pub mod sessions;
pub mod tokens;
pub mod tools;
pub mod users;
pub mod webhooks;

/// A tenant list whose length has a cap the routes check before adding to it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CappedList {
    OAuthClients,
    OAuthResources,
}

impl CappedList {
    fn table(self) -> &'static str {
        match self {
            CappedList::OAuthClients => "oauth_clients",
            CappedList::OAuthResources => "oauth_resources",
        }
    }
}

/// How many rows the tenant has in `list`, counted under a transaction-scoped advisory lock of
/// that list: two creations racing for the last place queue behind each other, so a cap checked
/// with this count holds (the lock ends with the transaction). Two statements, not one: a count
/// in the locking statement would read a snapshot taken before the lock was granted.
pub(crate) async fn count_locked(
    tx: &mut crate::TenantTx,
    list: CappedList,
) -> Result<i64, crate::StoreError> {
    let tenant = tx.tenant_id();
    let table = list.table();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($2 || ':' || $1::text, 0))")
        .bind(tenant.uuid())
        .bind(table)
        .execute(tx.conn())
        .await?;
    let (count,): (i64,) = sqlx::query_as(&format!(
        "SELECT count(*) FROM {table} WHERE tenant_id = $1"
    ))
    .bind(tenant.uuid())
    .fetch_one(tx.conn())
    .await?;
    Ok(count)
}
