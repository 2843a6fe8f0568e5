//! The tenant's OAuth settings (migration 0032, columns of `tenant_settings`): whether clients
//! may register themselves (RFC 7591 dynamic registration, client ID metadata documents) and the
//! most such a client may be granted.

use bulkhead_core::ScopeSet;
use serde::Serialize;

use crate::{StoreError, TenantTx};

/// The tenant's OAuth settings; a tenant that never set them has registration off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthSettings {
    /// Whether `POST /oauth/register` registers clients (off by default).
    pub dynamic_registration: bool,
    /// Whether a `client_id` that is an `https` URL is accepted, its client ID metadata
    /// document fetched (off by default).
    pub client_id_metadata_documents: bool,
    /// The most a self-registered client (either way) may be granted (it asks for a subset, or
    /// gets all of them). At least one when either way is on.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub dynamic_client_scopes: Vec<String>,
}

impl OAuthSettings {
    /// The self-registered clients' ceiling as a set; a name this binary does not know empties
    /// it (fail closed).
    pub fn dynamic_scope_set(&self) -> ScopeSet {
        ScopeSet::parse_all(&self.dynamic_client_scopes).unwrap_or_default()
    }
}

/// The tenant's OAuth settings.
pub async fn get(tx: &mut TenantTx) -> Result<OAuthSettings, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<(bool, bool, Vec<String>)> = sqlx::query_as(
        "SELECT oauth_dynamic_registration, oauth_client_metadata_documents, \
         oauth_dynamic_client_scopes FROM tenant_settings WHERE tenant_id = $1",
    )
    .bind(tenant.uuid())
    .fetch_optional(tx.conn())
    .await?;
    Ok(
        row.map_or_else(OAuthSettings::default, |(on, documents, scopes)| {
            OAuthSettings {
                dynamic_registration: on,
                client_id_metadata_documents: documents,
                dynamic_client_scopes: scopes,
            }
        }),
    )
}

/// Replaces the tenant's OAuth settings (the database checks that enabled self-registration
/// has scopes).
pub async fn set(tx: &mut TenantTx, settings: &OAuthSettings) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "INSERT INTO tenant_settings (tenant_id, oauth_dynamic_registration, \
         oauth_client_metadata_documents, oauth_dynamic_client_scopes) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id) DO UPDATE SET \
         oauth_dynamic_registration = EXCLUDED.oauth_dynamic_registration, \
         oauth_client_metadata_documents = EXCLUDED.oauth_client_metadata_documents, \
         oauth_dynamic_client_scopes = EXCLUDED.oauth_dynamic_client_scopes, updated_at = now()",
    )
    .bind(tenant.uuid())
    .bind(settings.dynamic_registration)
    .bind(settings.client_id_metadata_documents)
    .bind(&settings.dynamic_client_scopes)
    .execute(tx.conn())
    .await?;
    Ok(())
}
