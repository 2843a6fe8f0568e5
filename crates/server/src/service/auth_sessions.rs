//! Auth sessions (refresh-token families): started by a human login or a client-credentials
//! grant, rotated by the refresh grant, ended by logout, by revocation or by refresh-token reuse.
//! Each step is written once here, whichever route takes it.

use bulkhead_auth::RefreshToken;
use bulkhead_core::{AuthSessionId, Clock};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::tokens::{self, AuthSession, EndReason, NewAuthSession};
use bulkhead_store::{StoreError, TenantTx};
use serde_json::Value;

use crate::service::tokens::TokenService;

/// Creates an auth session in `tx`'s tenant and its first refresh token.
pub(crate) async fn start(
    tx: &mut TenantTx,
    new: &NewAuthSession<'_>,
) -> Result<(AuthSession, RefreshToken), StoreError> {
    let session = tokens::create_session(tx, new).await?;
    let refresh = RefreshToken::generate(*tx.tenant_id().uuid().as_bytes());
    tokens::insert_refresh_token(tx, session.id, &refresh.hash(), new.now).await?;
    Ok((session, refresh))
}

/// Ends an auth session and denies its access tokens until the longest of them expires. The
/// caller commits, then denies the session in this process at once
/// ([`TokenService::deny_session_locally`]); other processes hear the notification. Returns
/// whether the session was live.
pub(crate) async fn end(
    tokens: &TokenService,
    clock: &Clock,
    tx: &mut TenantTx,
    session: AuthSessionId,
    reason: EndReason,
) -> Result<bool, StoreError> {
    let until = tokens.session_deny_until();
    tokens::revoke_session(tx, session, reason, clock.now(), until).await
}

/// Why a session ends and the audit event that says so.
pub(crate) struct Ending {
    /// Stored with the session.
    pub(crate) reason: EndReason,
    /// The audit action (`auth.logout`, `auth.token_revoke`, …).
    pub(crate) action: &'static str,
    /// The audit outcome: a reuse is a blocked attack, the rest succeed.
    pub(crate) outcome: Outcome,
    /// The audit event's metadata.
    pub(crate) meta: Value,
}

/// Ends an auth session ([`end`]) and records its audit event in the same transaction: no
/// session ends unrecorded. The caller commits, then denies the session locally.
pub(crate) async fn end_audited(
    tokens: &TokenService,
    clock: &Clock,
    tx: &mut TenantTx,
    session: AuthSessionId,
    ending: Ending,
) -> Result<(), StoreError> {
    end(tokens, clock, tx, session, ending.reason).await?;
    let resource = session.to_string();
    audit::record(
        tx,
        ending.action,
        Some(&resource),
        ending.outcome,
        ending.meta,
    )
    .await?;
    Ok(())
}
