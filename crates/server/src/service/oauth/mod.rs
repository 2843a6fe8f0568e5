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
/// one: 1 to 100 characters, none of them
/// - a control character or a Unicode format character (general category Cf: the bidirectional
///   overrides and isolates, zero-width spaces and joiners, soft hyphens), which render
///   invisibly or reorder what follows (review L8);
/// - a line or paragraph separator (U+2028, U+2029), which break the line the name stands on;
/// - a letter or symbol that renders as blank space without being one (the Hangul fillers
///   U+115F, U+1160, U+3164, U+FFA0; the blank Braille pattern U+2800), so a name cannot look
///   empty or padded to push its real part out of view (review L5);
/// - an unassigned or private-use code point (no font promises what it shows);
/// - a second wide or non-breaking space in a row (U+00A0, U+3000, U+2003, …: browsers do not
///   collapse them);
///
/// and no combining mark (Mn, Mc, Me) first or more than [`MAX_COMBINING_RUN`] in a row, which
/// stack over neighbouring text and can cover the consent page's wording. Decision: refused,
/// not stripped, so what is stored is what was sent; emoji sequences joined by U+200D are
/// refused with them.
pub fn display_name(name: &str) -> Option<&str> {
    use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory as _};
    let name = name.trim();
    let mut marks_in_a_row = 0usize;
    let mut previous_wide_space = false;
    for (index, c) in name.chars().enumerate() {
        let category = c.general_category();
        let refused = c.is_control()
            || matches!(
                category,
                GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
                    | GeneralCategory::Unassigned
                    | GeneralCategory::PrivateUse
            )
            || matches!(
                c,
                '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{2800}'
            );
        // Two wide or non-breaking spaces in a row are not collapsed by a browser: padding.
        let wide_space = category == GeneralCategory::SpaceSeparator && c != ' ';
        if refused || wide_space && previous_wide_space {
            return None;
        }
        previous_wide_space = wide_space;
        if c.general_category_group() == GeneralCategoryGroup::Mark {
            marks_in_a_row += 1;
            // A mark with nothing before it to sit on is refused like a run too long.
            if index == 0 || marks_in_a_row > MAX_COMBINING_RUN {
                return None;
            }
        } else {
            marks_in_a_row = 0;
        }
    }
    (!name.is_empty() && name.chars().count() <= 100).then_some(name)
}

/// What a page shows for a stored name: the name if it keeps [`display_name`]'s rule, or
/// `instead` (an id the page can name the thing by). Names stored before the rule tightened
/// (review L5) are checked again when shown, so no page renders one the rule now refuses.
pub fn shown_name(name: &str, instead: impl FnOnce() -> String) -> String {
    display_name(name).map_or_else(instead, str::to_owned)
}

/// [`shown_name`] for a client: its name, or its `client_id`.
pub fn shown_client_name(client: &bulkhead_store::tenant::oauth::OAuthClient) -> String {
    shown_name(&client.name, || format!("client {}", client.id))
}

/// [`shown_name`] for a protected resource: its name, or its identifier.
pub fn shown_resource_name(
    resource: &bulkhead_store::tenant::oauth_resources::OAuthResource,
) -> String {
    shown_name(&resource.name, || {
        format!("resource {}", resource.identifier)
    })
}

/// The most combining marks [`display_name`] takes on one base character: enough for any
/// script's decomposed letters (Vietnamese stacks two, Thai and Devanagari clusters three),
/// too few to build a tower over the surrounding text.
pub const MAX_COMBINING_RUN: usize = 3;

/// What [`display_name`] refuses, said once for every API that takes such a name.
pub const DISPLAY_NAME_RULE: &str =
    "1 to 100 characters, none a control, separator, invisible formatting, blank-rendering, \
     unassigned or private-use character, no two wide spaces in a row, and no combining mark \
     first or more than three in a row";

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
            "E\u{301}quipe",
            "Vie\u{323}\u{302}t",
            "नमस्ते",
            "ไม้ตรี",
            "東京エージェント",
            "東京\u{3000}エージェント",
            "Caf\u{E9}\u{A0}Noir",
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
            "line\u{2028}separator",
            "para\u{2029}graph",
            "\u{3164}",
            "\u{3164}\u{3164} Admin",
            "filler\u{FFA0}",
            "\u{115F}\u{1160}",
            "\u{2800}\u{2800}",
            "\u{301}starts with a mark",
            "unassigned\u{2065}",
            "private\u{E000}use",
            "wide\u{3000}\u{3000}\u{3000}gap",
            "nbsp\u{A0}\u{A0}pad",
            "Z\u{300}\u{301}\u{302}\u{303}algo",
        ] {
            assert_eq!(display_name(hidden), None, "{hidden:?}");
        }
        assert!(display_name(&"x".repeat(100)).is_some());
        assert!(display_name(&"x".repeat(101)).is_none());
    }
}
