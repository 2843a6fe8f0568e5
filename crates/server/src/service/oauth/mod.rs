//! The OAuth 2.0 grants of `POST /oauth/token`, without HTTP: what each one checks, mints and
//! audits. The HTTP side (`http/routes/oauth/`) parses the form, authenticates the
//! client and the presented tokens, calls one function here and renders the answer.
//!
//! One module per grant:
//! - [`client_credentials`]: an API key gets an access token (and a refresh token when the
//!   tenant's policy gives agents sessions);
//! - [`refresh_token`]: a refresh token is rotated, reuse ends its session;
//! - [`token_exchange`]: RFC 8693 delegation, where every hop only narrows;
//!
//! and what revocation ([`revocation`]) and refresh-token introspection ([`introspection`])
//! do to the store.
//!
//! A new grant (the authorization-code grant is next) is a new module here taking the verified
//! inputs it needs and returning [`IssuedTokens`] or a [`GrantError`], beside its HTTP half in
//! `http/routes/oauth/`.

pub mod authorization_code;
pub mod client_credentials;
pub mod introspection;
pub mod metadata_document;
pub mod oidc;
pub mod redirect_uri;
pub mod refresh_token;
pub mod registration;
pub mod revocation;
pub mod token_exchange;

use std::borrow::Cow;

use bulkhead_auth::RefreshToken;
use bulkhead_core::{AuthSessionId, Clock, ScopeSet};
use bulkhead_store::{Store, StoreError};

use crate::service::ceilings::RoleCeilings;
use crate::service::tokens::{parse_scope_param, IssuedToken, TokenService};

/// Whether an RFC 8707 `resource` names Bulkhead's own API: the tenant's issuer (its origin,
/// what the own API's protected-resource metadata publishes on the tenant's host), or the
/// deployment's `--issuer` (what it publishes on the deployment's host), each as written or in
/// the canonical form of its URL.
pub fn is_own_api(deployment_issuer: &str, tenant_issuer: &str, resource: &str) -> bool {
    [deployment_issuer, tenant_issuer].iter().any(|issuer| {
        resource == *issuer || url::Url::parse(issuer).is_ok_and(|url| url.as_str() == resource)
    })
}

/// Whether a `resource` value can name nothing: a control character (a NUL would reach the
/// database), or longer than any stored identifier. Refused as `invalid_target` before any
/// lookup.
pub fn is_malformed_resource(resource: &str) -> bool {
    resource.len() > 2048 || resource.chars().any(char::is_control)
}

/// A name shown to a person deciding on consent (a client's, a resource's), trimmed, if it is
/// one: 1 to 100 characters, none a control character or a Unicode format character (general
/// category Cf: the bidirectional overrides and isolates, zero-width spaces and joiners, soft
/// hyphens). Format characters render invisibly or reorder what follows, so a name could show
/// as another's, or hide part of itself, on the consent page (review L8). Decision: refused,
/// not stripped, so what is stored is what was sent; emoji sequences joined by U+200D are
/// refused with them.
pub fn display_name(name: &str) -> Option<&str> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
    let name = name.trim();
    let plain = name
        .chars()
        .all(|c| !c.is_control() && c.general_category() != GeneralCategory::Format);
    (plain && !name.is_empty() && name.chars().count() <= 100).then_some(name)
}

/// What [`display_name`] refuses, said once for every API that takes such a name.
pub const DISPLAY_NAME_RULE: &str =
    "1 to 100 characters, none a control or invisible formatting character";

/// The parts of the application a grant uses.
#[derive(Clone, Copy)]
pub struct Issuer<'a> {
    /// The store door.
    pub store: &'a Store,
    /// The clock.
    pub clock: &'a Clock,
    /// Signing, and the local denylist.
    pub tokens: &'a TokenService,
    /// The role ceilings that bound a key's scopes.
    pub ceilings: &'a RoleCeilings,
}

impl std::fmt::Debug for Issuer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").finish_non_exhaustive()
    }
}

/// What a grant issued.
#[derive(Debug)]
pub struct IssuedTokens {
    /// The access token.
    pub access: IssuedToken,
    /// The refresh token, when one was issued.
    pub refresh: Option<RefreshToken>,
    /// The granted scopes.
    pub scopes: ScopeSet,
    /// The auth session created or used, when the answer names one.
    pub session_id: Option<AuthSessionId>,
}

/// Why a grant refused, in RFC 6749 §5.2 terms; the HTTP side maps it once
/// (`http/routes/oauth/mod.rs`). Descriptions never echo a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// `invalid_grant`: the refresh or subject token is invalid, expired or revoked, or the
    /// delegation would be too deep.
    #[error("invalid grant: {0}")]
    InvalidGrant(Cow<'static, str>),
    /// `invalid_scope`: a requested scope is unknown or exceeds what may be granted.
    #[error("invalid scope: {0}")]
    InvalidScope(Cow<'static, str>),
    /// `invalid_target`: the requested resource prefix is not acceptable.
    #[error("invalid target: {0}")]
    InvalidTarget(Cow<'static, str>),
    /// `invalid_client`: the client may not use this credential (an inactive principal, a
    /// refresh token of another client).
    #[error("client authentication failed")]
    InvalidClient,
    /// `temporarily_unavailable`: signing or the role ceilings cannot answer now.
    #[error("temporarily unavailable")]
    Unavailable,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The scopes to grant: the requested ones (the `scope` parameter), which must all be held; all
/// held when none are asked.
pub(crate) fn granted_scopes(
    requested: Option<&str>,
    held: &ScopeSet,
) -> Result<ScopeSet, GrantError> {
    match requested {
        None => Ok(held.clone()),
        Some(text) => {
            let requested = parse_scope_param(text)
                .map_err(|_| GrantError::InvalidScope("a requested scope does not exist".into()))?;
            if !held.is_superset(&requested) {
                return Err(GrantError::InvalidScope(
                    "the requested scope exceeds what the client holds".into(),
                ));
            }
            Ok(requested)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_display_name_has_no_invisible_or_reordering_characters() {
        for plain in [
            "Desktop assistant",
            "Équipe Käse",
            "東京エージェント",
            "🤖 Helper",
            "  padded  ",
        ] {
            assert_eq!(display_name(plain), Some(plain.trim()), "{plain:?}");
        }
        for hidden in [
            "",
            "   ",
            "Trusted \u{202E}nimdA",
            "a\u{2066}b\u{2069}",
            "Pay\u{200B}Pal",
            "soft\u{00AD}hyphen",
            "bom\u{FEFF}",
            "tag\u{E0041}",
            "line\nbreak",
            "nul\u{0}",
        ] {
            assert_eq!(display_name(hidden), None, "{hidden:?}");
        }
        assert!(display_name(&"x".repeat(100)).is_some());
        assert!(display_name(&"x".repeat(101)).is_none());
    }
}
