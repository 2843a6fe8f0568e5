//! Token revocation (RFC 7009). Possession of a token suffices to revoke it (revoking only ever
//! takes authority away); the HTTP side has already checked that the token verifies and is of
//! the host's tenant.

use bulkhead_auth::RefreshToken;
use bulkhead_core::{TenantContext, TenantId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::tokens::{self, EndReason};
use bulkhead_store::{Access, StoreError};
use serde_json::json;

use super::Issuer;
use crate::service::auth_sessions::{end_audited, Ending};
use crate::service::tokens::VerifiedToken;

fn oauth_context(tenant: TenantId) -> TenantContext {
    TenantContext::for_system(tenant, "oauth")
}

/// Denies a verified access token until it would have expired anyway, audited.
pub async fn revoke_access_token(
    issuer: Issuer<'_>,
    token: &VerifiedToken,
) -> Result<(), StoreError> {
    let ctx = oauth_context(token.tenant_id);
    let mut tx = issuer.store.begin(&ctx, Access::ReadWrite).await?;
    let until = token.expires_at + chrono::Duration::seconds(bulkhead_auth::token::LEEWAY_SECS);
    tokens::revoke_access_token(&mut tx, token.token_id, until).await?;
    audit::record(
        &mut tx,
        "auth.token_revoke",
        Some(&token.claims.jti),
        Outcome::Success,
        json!({ "token_type": "access_token", "sub": token.claims.sub }),
    )
    .await?;
    tx.commit().await?;
    issuer
        .tokens
        .deny_locally(token.tenant_id, token.token_id.uuid(), until);
    Ok(())
}

/// Ends the session of a refresh token of `tenant`, audited; an unknown token is no error.
pub async fn revoke_refresh_token(
    issuer: Issuer<'_>,
    tenant: TenantId,
    presented: &RefreshToken,
) -> Result<(), StoreError> {
    let ctx = oauth_context(tenant);
    let mut tx = issuer.store.begin(&ctx, Access::ReadWrite).await?;
    let Some(found) = tokens::find_refresh_for_update(&mut tx, &presented.hash()).await? else {
        return Ok(());
    };
    // RFC 7009 §2.1: revoking a refresh token also invalidates the access tokens of its grant.
    let session = found.session.id;
    let ending = Ending {
        reason: EndReason::Revoked,
        action: "auth.token_revoke",
        outcome: Outcome::Success,
        meta: json!({ "token_type": "refresh_token" }),
    };
    end_audited(issuer.tokens, issuer.clock, &mut tx, session, ending).await?;
    tx.commit().await?;
    issuer.tokens.deny_session_locally(tenant, session);
    Ok(())
}
