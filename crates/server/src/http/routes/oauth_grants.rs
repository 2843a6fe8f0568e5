//! `/v1/auth/grants`: the remembered consents of the authorization-code flow
//! ([`bulkhead_store::tenant::oauth_grants`]).
//!
//! A user sees and revokes their own consents with a token from their own sign-in
//! (`POST /v1/auth/login`): a token an OAuth client got on the user's behalf does not show the
//! user's other clients. A caller holding `keys:manage` (unconfined, undelegated) sees and
//! revokes the tenant's. Revoking a consent ends every auth session (refresh family) its codes
//! started, in the same transaction as its `oauth.grant_revoke` audit event, so the client's
//! tokens stop at once and its next authorization request shows the consent page again.
//! Someone else's consent, and another tenant's, answer exactly like a missing one (404).

use axum::extract::State;
use axum::http::StatusCode;
use bulkhead_core::id::OAuthGrantKind;
use bulkhead_core::{Actor, OAuthGrantId, Scope, TenantContext, UserId};
use bulkhead_store::tenant::oauth_grants::{self, OAuthGrant};
use bulkhead_store::tenant::tokens::EndReason;
use serde_json::json;

use crate::http::apidoc::OpDoc;
use crate::http::authz::{refuse_confined, Confinement, RouteAccess, RouteTable};
use crate::http::error::ApiError;
use crate::http::extract::Tenant;
use crate::http::routes::auth::LOGIN_CLIENT_ID;
use crate::http::routes::kit::by_id::ById;
use crate::http::routes::kit::page::{page, ListQuery, NoFilters};
use crate::http::routes::kit::tx;
use crate::http::routes::kit::write::Tail;
use crate::http::state::AppState;

/// The routes and who may call them (the handlers decide whose consents).
pub fn routes() -> RouteTable {
    RouteTable::tagged("auth")
        .resource(
            "/v1/auth/grants/{id}",
            OpDoc::one::<OAuthGrantId>("Consent"),
        )
        .get("/v1/auth/grants", RouteAccess::Authenticated, list_grants)
        .confine(Confinement::Admitted(
            "the caller's own consents, from the user's own sign-in only; the tenant's with \
             keys:manage, refused to confined and delegated credentials",
        ))
        .doc(
            OpDoc::page::<OAuthGrantPage, NoFilters>("A page of consents")
                .summary(
                    "The caller's remembered OAuth consents (the tenant's with `keys:manage`).",
                )
                .invalid("Limit outside 1 to 200"),
        )
        .delete(
            "/v1/auth/grants/{id}",
            RouteAccess::Authenticated,
            revoke_grant,
        )
        .confine(Confinement::Admitted(
            "revokes one of the caller's own consents (from the user's own sign-in); another's \
             with keys:manage is refused to confined and delegated credentials",
        ))
        .doc(
            OpDoc::empty(204, "Revoked: the sessions it started are ended")
                .summary(
                    "Revokes a remembered consent and ends the refresh families issued under it.",
                )
                .id::<OAuthGrantId>("The consent")
                .answer(404, "No such consent of the caller's"),
        )
}

page!(
    /// A page of remembered consents.
    OAuthGrantPage, OAuthGrant, OAuthGrantId
);

/// The user whose consents the caller owns: a human's token from their own sign-in, not
/// delegated, not confined.
fn own_user(ctx: &TenantContext) -> Option<UserId> {
    let actor = ctx.actor();
    if actor.delegation().is_some() || actor.resource_prefix().is_some() {
        return None;
    }
    match actor {
        Actor::Token {
            human: true,
            subject,
            client_id,
            ..
        } if client_id == LOGIN_CLIENT_ID => UserId::parse(subject).ok(),
        _ => None,
    }
}

/// Whether the caller may act on the tenant's consents: `keys:manage`, unconfined and
/// undelegated (refused and audited otherwise).
fn tenant_wide(ctx: &TenantContext) -> Result<bool, ApiError> {
    if !ctx.has_scope(Scope::KeysManage) {
        return Ok(false);
    }
    refuse_confined(ctx, Scope::KeysManage)?;
    Ok(true)
}

/// Whether the caller may revoke another user's consent: `keys:manage`, unconfined and
/// undelegated. Unlike [`tenant_wide`] it refuses nothing: the caller gets a 404.
fn may_manage_others(ctx: &TenantContext) -> bool {
    let actor = ctx.actor();
    ctx.has_scope(Scope::KeysManage)
        && actor.resource_prefix().is_none()
        && actor.delegation().is_none()
}

async fn list_grants(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery,
) -> Result<axum::Json<OAuthGrantPage>, ApiError> {
    let ctx = &tenant.0;
    let user = if tenant_wide(ctx)? {
        None
    } else {
        Some(own_user(ctx).ok_or(ApiError::ConfinedCredential)?)
    };
    let (data, next_cursor) = query
        .page_of_ids()?
        .read(
            &state,
            ctx,
            async |tx, after, n| Ok(oauth_grants::list(tx, user, after, n).await?),
            |g| g.id,
        )
        .await?;
    Ok(axum::Json(OAuthGrantPage::new(data, next_cursor)))
}

async fn revoke_grant(at: ById<OAuthGrantKind>) -> Result<StatusCode, ApiError> {
    let ById { state, tenant, id } = at;
    let ctx = &tenant.0;
    let ended = tx::write(&state, ctx, async |tx| {
        let grant = oauth_grants::get(tx, id).await?;
        // Someone else's consent is a missing one, unless the caller manages the tenant's
        // (unconfined, undelegated): a confined caller holding `keys:manage` gets the unknown
        // id's 404 too, not a 403 that would tell it the consent exists.
        if own_user(ctx) != Some(grant.user_id) && !may_manage_others(ctx) {
            return Err(ApiError::NotFound);
        }
        // Delete first: the delete waits for an exchange holding the grant, so the sessions
        // listed after it include one that exchange started (none can start after it).
        oauth_grants::delete(tx, id).await?;
        let sessions = oauth_grants::live_sessions(tx, id).await?;
        for session in &sessions {
            crate::service::auth_sessions::end(
                state.tokens(),
                state.clock(),
                tx,
                *session,
                EndReason::Revoked,
            )
            .await?;
        }
        let meta = json!({
            "user_id": grant.user_id,
            "client_id": grant.client_id,
            "scopes": grant.scopes,
            "sessions_ended": sessions.len(),
        });
        Ok((sessions, Tail::new().audit("oauth.grant_revoke", id, meta)))
    })
    .await?;
    for session in ended {
        state
            .tokens()
            .deny_session_locally(ctx.tenant_id(), session);
    }
    Ok(StatusCode::NO_CONTENT)
}
