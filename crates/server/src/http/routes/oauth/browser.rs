//! The browser session of the authorization endpoint's pages: a `__Host-` cookie, and the CSRF
//! token derived from it.
//!
//! Signed out is stateless: the first visit gets a random cookie value that is stored nowhere,
//! and the login form's CSRF token is an HMAC of it under a key derived from the master key and
//! bound to the tenant, so an anonymous caller cannot make the server write a row. A login makes
//! a **new** cookie value whose SHA-256 is stored with the user (`oauth_browser_sessions`): a
//! cookie that names no live row is simply signed out.

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

/// The CSRF token of a session: an HMAC of the (HttpOnly) cookie value under a server key bound
/// to the tenant, so a page of another origin can neither read nor compute it, and it changes
/// with the session at login.
pub(super) fn csrf_token(state: &AppState, tenant: &Tenant, cookie: &str) -> String {
    let tag = state
        .master_key()
        .page_csrf_mac(tenant.id.uuid().as_bytes(), cookie.as_bytes());
    URL_SAFE_NO_PAD.encode(tag)
}

pub(super) fn csrf_matches(
    state: &AppState,
    tenant: &Tenant,
    cookie: &str,
    presented: Option<&str>,
) -> bool {
    let expected = csrf_token(state, tenant, cookie);
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
