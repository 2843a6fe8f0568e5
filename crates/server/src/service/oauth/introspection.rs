//! Token introspection (RFC 7662) of refresh tokens: what a refresh would grant now. Access
//! tokens are introspected by the request pipeline's own decision (`http::resolve`), so that a
//! token the API would refuse is inactive here too; a token for a protected resource is judged
//! against that resource, which must be registered in the introspecting client's tenant
//! ([`registered_resource`]).

use bulkhead_auth::RefreshToken;
use bulkhead_core::{Credential, RequestId, ScopeSet, TenantContext, TenantId};
use bulkhead_store::tenant::oauth_resources::{self, OAuthResource};
use bulkhead_store::tenant::tokens::{self, AuthSession, RefreshStatus};
use bulkhead_store::{Access, StoreError};

use super::Issuer;
use crate::service::credentials::VerifiedKey;

fn client_context(tenant: TenantId, key: &VerifiedKey) -> TenantContext {
    TenantContext::for_credential(
        tenant,
        Credential::ApiKey {
            key_id: key.key_id,
            scopes: key.scopes.clone(),
        },
        RequestId::new(),
    )
}

/// The protected resource of `tenant` whose identifier is exactly `identifier` (a token's
/// `aud`), read as the introspecting client `key`; `None` when the tenant registered none such.
/// Any API key of the tenant may introspect its resources' tokens, as it may introspect the
/// tokens for Bulkhead's own API: the claims are readable by whoever holds the token, and the
/// answer adds only whether it stands and what it may do now.
pub async fn registered_resource(
    issuer: Issuer<'_>,
    tenant: TenantId,
    key: &VerifiedKey,
    identifier: &str,
) -> Result<Option<OAuthResource>, StoreError> {
    let ctx = client_context(tenant, key);
    let mut tx = issuer.store.begin(&ctx, Access::ReadOnly).await?;
    let found = oauth_resources::by_identifier(&mut tx, identifier).await?;
    tx.commit().await?;
    Ok(found)
}

/// A live refresh token of `tenant`'s session and its effective scopes (its scopes cut to its
/// principal's roles), read as the introspecting client `key`; `None` when the token is
/// unknown, rotated, revoked, its session ended or its principal disabled.
pub async fn refresh_token_standing(
    issuer: Issuer<'_>,
    tenant: TenantId,
    key: &VerifiedKey,
    presented: &RefreshToken,
) -> Result<Option<(AuthSession, ScopeSet)>, StoreError> {
    let ctx = client_context(tenant, key);
    let mut tx = issuer.store.begin(&ctx, Access::ReadWrite).await?;
    let found = tokens::find_refresh_for_update(&mut tx, &presented.hash()).await?;
    let now = issuer.clock.now();
    let found = found.filter(|f| f.status == RefreshStatus::Active && f.session.is_live(now));
    let Some(found) = found else {
        tx.commit().await?;
        return Ok(None);
    };
    // What a refresh would grant now: the session's scopes cut to its principal's roles; a
    // disabled principal's refresh token is inactive.
    let effective =
        crate::service::ceilings::session_scopes(&mut tx, &found.session, issuer.clock.now())
            .await?;
    tx.commit().await?;
    Ok(effective.map(|scopes| (found.session, scopes)))
}
