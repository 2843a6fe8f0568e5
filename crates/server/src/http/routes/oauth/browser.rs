//! The browser session of the authorization endpoint's pages: a `__Host-` cookie whose SHA-256
//! is stored, and the CSRF token derived from it.

use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bulkhead_store::placement::registry::Tenant;
use bulkhead_store::tenant::oauth as store_oauth;
use bulkhead_store::{Access, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::http::state::AppState;

/// The browser session cookie.
pub(crate) const SESSION_COOKIE: &str = "__Host-bulkhead-oauth";
/// How long a browser session lasts.
pub(crate) const SESSION_SECS: i64 = 60 * 60;

pub(super) fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 43)
}

pub(super) fn cookie_hash(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// The CSRF token of a session: derived from the (HttpOnly) cookie value, so a page of another
/// origin can neither read nor compute it, and it changes with the session at login.
pub(super) fn csrf_token(cookie: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"bulkhead oauth csrf\0");
    hasher.update(cookie.as_bytes());
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

pub(super) fn csrf_matches(cookie: &str, presented: Option<&str>) -> bool {
    let expected = csrf_token(cookie);
    presented.is_some_and(|p| {
        p.len() == expected.len() && bool::from(p.as_bytes().ct_eq(expected.as_bytes()))
    })
}

pub(super) fn set_cookie(value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={SESSION_SECS}; Secure; HttpOnly; SameSite=Lax"
    ))
    .expect("a base64url cookie value is a valid header")
}

pub(super) fn new_cookie_value() -> String {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut raw[..]);
    URL_SAFE_NO_PAD.encode(&raw[..])
}

/// The live session the cookie names: its row and whose it is.
pub(super) async fn find_session(
    state: &AppState,
    tenant: &Tenant,
    cookie: &str,
) -> Result<Option<store_oauth::BrowserSession>, StoreError> {
    let ctx = crate::http::resolve::login_context(tenant);
    let mut tx = state.store().begin(&ctx, Access::ReadOnly).await?;
    let found =
        store_oauth::find_browser_session(&mut tx, &cookie_hash(cookie), state.clock().now())
            .await?;
    tx.commit().await?;
    Ok(found)
}

/// A new session without a user (for the login form's CSRF token).
pub(super) async fn anonymous_session(
    state: &AppState,
    tenant: &Tenant,
) -> Result<String, StoreError> {
    let value = new_cookie_value();
    let now = state.clock().now();
    let ctx = crate::http::resolve::login_context(tenant);
    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    store_oauth::create_browser_session(
        &mut tx,
        &cookie_hash(&value),
        None,
        now,
        now + chrono::Duration::seconds(SESSION_SECS),
    )
    .await?;
    tx.commit().await?;
    Ok(value)
}
