//! The one password check of a human login, shared by `POST /v1/auth/login` and the OAuth
//! login page (`routes/oauth/authorize.rs`): the throttles, the argon2id check and the failure's
//! audit event. The login throttling rules are documented on [`crate::http::routes::auth`].

use bulkhead_core::UserId;
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::placement::registry::{Tenant, TenantStatus};
use bulkhead_store::tenant::tokens;
use bulkhead_store::tenant::users::{self, UserStatus};
use bulkhead_store::{Access, TenantTx};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// Consecutive failures per account name before locking starts.
pub const FREE_FAILURES: i32 = 5;
/// Longest lock of an account name.
pub const MAX_LOCK_SECS: i64 = 15 * 60;
/// Stale login-throttle rows deleted by each login attempt, at most.
pub const SWEEP_BATCH: i64 = 64;
const THROTTLE_NAMESPACE: Uuid = Uuid::from_u128(0x6b75_6c6b_6865_6164_2d6c_6f67_696e_0001);

/// Trims and lowercases an email; `None` if it cannot be one.
pub fn normalise_email(text: &str) -> Option<String> {
    let email = text.trim().to_lowercase();
    let valid = (3..=254).contains(&email.len())
        && email.contains('@')
        && !email.starts_with('@')
        && !email.ends_with('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then_some(email)
}

fn throttle_id(email: &str) -> Uuid {
    Uuid::new_v5(&THROTTLE_NAMESPACE, email.as_bytes())
}

fn lock_for(failures: i32) -> Option<i64> {
    (failures >= FREE_FAILURES).then(|| {
        let exponent = u32::try_from(failures - FREE_FAILURES)
            .unwrap_or(u32::MAX)
            .min(20);
        (1i64 << exponent).min(MAX_LOCK_SECS)
    })
}

/// Whole seconds until `until`, rounded up (the database keeps microseconds, so a lock of 2 s
/// may be 1.999999 s away), at least 1.
fn retry_secs(until: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let millis = u64::try_from((until - now).num_milliseconds()).unwrap_or(0);
    millis.div_ceil(1000).max(1)
}

/// A password that verified: the user, what their roles let a login carry now, and the open
/// transaction (in the login context of the tenant) the caller continues in and commits.
pub(crate) struct PasswordLogin {
    /// The user, active.
    pub(crate) user: users::UserRecord,
    /// The user's stored scopes ∩ its roles' permissions.
    pub(crate) scopes: bulkhead_core::ScopeSet,
    /// The transaction the throttle was cleared in; the caller records its outcome and commits.
    pub(crate) tx: TenantTx,
}

/// The one password check of a human login (`POST /v1/auth/login` and the OAuth login page):
/// the tenant's status, both throttles, the argon2id check on the hashing pool outside any
/// transaction, the failure's audit event, and the user's current permissions. Unknown email,
/// wrong password and disabled user are one [`ApiError::InvalidLogin`] after the same work.
pub(crate) async fn check_password(
    state: &AppState,
    tenant: &Tenant,
    email: &str,
    password: String,
    client_ip: Option<std::net::IpAddr>,
) -> Result<PasswordLogin, ApiError> {
    let clock = state.clock().clone();
    let now = clock.now();
    // A suspended tenant refuses every login before any password work, with the answer a wrong
    // password gets: whether a password is right must not be learnable from the status code.
    if tenant.status != TenantStatus::Active {
        audit_login(tenant, "blocked", "tenant_suspended", None);
        return Err(ApiError::InvalidLogin);
    }
    // Each attempt is counted against the address before the password is checked (and given
    // back if it succeeds), so concurrent guesses cannot all slip under the budget.
    if let Some(ip) = client_ip {
        if let Some(wait) = state.login_ips().take_attempt(ip, now.timestamp()).await {
            audit_login(tenant, "blocked", "address_throttled", None);
            return Err(ApiError::LoginThrottled(wait));
        }
    }
    let email = normalise_email(email).unwrap_or_else(|| email.trim().to_lowercase());
    let name_id = throttle_id(&email);
    let ctx = crate::http::resolve::login_context(tenant);

    // The attempt is counted as a failure, under the row lock, before the password is checked
    // (a success clears it): N concurrent guesses are serialised here, so at most
    // FREE_FAILURES of them reach the password check before the lock applies. The check itself
    // runs outside any transaction: argon2id takes tens of milliseconds and must not hold a
    // connection or a row lock.
    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    let counted = tokens::count_login_attempt(&mut tx, name_id, now).await?;
    if let Some(until) = counted.locked_until.filter(|until| *until > now) {
        // Locked: this attempt is not counted and no password is checked.
        tx.rollback().await?;
        audit_login(tenant, "blocked", "account_throttled", None);
        return Err(ApiError::LoginThrottled(retry_secs(until, now)));
    }
    let failures = counted.failures;
    // Each attempt sweeps a few rows whose failures and lock ended a whole lock window ago,
    // so the table holds only names attempted recently (issue 28, item 5).
    tokens::sweep_login_throttle(
        &mut tx,
        now - chrono::Duration::seconds(MAX_LOCK_SECS),
        SWEEP_BATCH,
    )
    .await?;
    if let Some(secs) = lock_for(failures) {
        tokens::set_login_lock(&mut tx, name_id, now + chrono::Duration::seconds(secs)).await?;
    }
    let user = users::by_email(&mut tx, &email).await?;
    tx.commit().await?;
    let usable = user.as_ref().filter(|u| u.status == UserStatus::Active);
    // On the bounded hashing pool, as an anonymous caller (crate::service::hashing): a full pool answers
    // 503 before any work; the attempt stays counted against the name.
    let matched = state
        .hashing()
        .verify_password(
            crate::service::hashing::Caller::Anonymous(tenant.id),
            usable.map(|u| u.password_hash.clone()),
            password,
        )
        .await?;

    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    let (Some(user), true) = (usable, matched) else {
        audit::record(
            &mut tx,
            "auth.login",
            None,
            Outcome::Failure,
            json!({ "reason": "invalid_credentials", "consecutive_failures": failures }),
        )
        .await?;
        tx.commit().await?;
        audit_login(tenant, "failure", "invalid_credentials", None);
        return Err(ApiError::InvalidLogin);
    };
    if let Some(ip) = client_ip {
        state.login_ips().give_back(ip).await;
    }
    let Some(scopes) = user.scopes.clone() else {
        // A stored scope this binary cannot read grants nothing; refuse rather than guess.
        return Err(ApiError::Internal(anyhow::anyhow!(
            "user {} has unreadable scopes",
            user.id
        )));
    };
    // The session and its tokens carry only what the user's roles grant now, never the stored
    // scopes' superset for the resolver to cut later: a token's `scope` is what it may do.
    let Some(held) = bulkhead_store::tenant::rbac::permissions_of(
        &mut tx,
        bulkhead_store::tenant::rbac::Principal::User(user.id),
    )
    .await?
    else {
        // Disabled since the password check.
        tx.rollback().await?;
        audit_login(tenant, "failure", "invalid_credentials", None);
        return Err(ApiError::InvalidLogin);
    };
    let scopes = scopes.intersection(&held);
    tokens::clear_login_failures(&mut tx, name_id).await?;
    Ok(PasswordLogin {
        user: user.clone(),
        scopes,
        tx,
    })
}

pub(crate) fn audit_login(
    tenant: &Tenant,
    outcome: &'static str,
    reason: &'static str,
    user: Option<UserId>,
) {
    tracing::warn!(
        target: "bulkhead::audit",
        action = "auth.login",
        outcome,
        reason,
        tenant_id = %tenant.id,
        actor_id = user.map(|u| u.to_string()),
        "login"
    );
}
