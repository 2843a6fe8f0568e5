//! The one validation of the text and ids every resource takes, and the path id extractor.
//!
//! **Descriptions** (API keys, webhook endpoints, agents, roles) follow one rule, written in
//! `docs/openapi.md` too:
//! - surrounding white space is trimmed before anything else (what is stored is what a reader
//!   sees; `"  x "` and `"x"` are one description);
//! - at most [`MAX_DESCRIPTION_CHARS`] characters (Unicode scalar values) after trimming: the
//!   bound the database enforces on three of the four columns, so that no description is accepted
//!   by one resource and refused by another;
//! - no control characters except newline and tab (a description may be a short paragraph or a
//!   list), and no Unicode bidirectional overrides or isolates: a description is shown in
//!   consoles, logs and terminals, where a carriage return, an escape sequence or a right-to-left
//!   override can disguise what the text says.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bulkhead_core::id::IdKind;
use bulkhead_core::{PrefixedId, TenantContext};
use bulkhead_store::audit::Outcome;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::write::record_refusal;

use crate::http::error::ApiError;
use crate::http::extract::{Json, Path};
use crate::http::state::AppState;

/// Longest description, in characters, after trimming.
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 500;

/// Whether a character may stand in a description: not a control character (newline and tab
/// excepted), not a bidirectional embedding, override or isolate.
fn allowed_in_description(c: char) -> bool {
    let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    !bidi && (!c.is_control() || matches!(c, '\n' | '\t'))
}

/// A name a person reads on the consent page (an OAuth client's, a resource's), trimmed:
/// [`crate::service::oauth::display_name`]'s rule, or 422 saying it.
pub(crate) fn display_name(name: &str) -> Result<&str, ApiError> {
    crate::service::oauth::display_name(name).ok_or_else(|| {
        ApiError::Invalid(format!("name has {}", crate::service::oauth::DISPLAY_NAME_RULE).into())
    })
}

/// A description as it is stored: trimmed, then held to the rule of the module doc (422).
pub(crate) fn description(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.chars().count() > MAX_DESCRIPTION_CHARS || !text.chars().all(allowed_in_description) {
        return Err(ApiError::Invalid(
            format!(
                "description has at most {MAX_DESCRIPTION_CHARS} characters, and no control \
                 characters but newline and tab"
            )
            .into(),
        ));
    }
    Ok(text.to_owned())
}

/// An optional description (a patch's): [`description`] when present.
pub(crate) fn optional_description(text: Option<&str>) -> Result<Option<String>, ApiError> {
    text.map(description).transpose()
}

/// A URL the server will call (a webhook or a tool endpoint), judged by the egress policy. A
/// refusal is audited (`action`, stage `registration`, the rule, in a transaction of its own)
/// and answered 422 naming `field` and the rule; `what` names the URL in the log.
pub(crate) async fn egress_url(
    state: &AppState,
    ctx: &TenantContext,
    url: &str,
    action: &'static str,
    field: &str,
    what: &str,
) -> Result<String, ApiError> {
    match state.config().webhook_egress.check_url(url) {
        Ok(checked) => Ok(checked.as_str().to_owned()),
        Err(refusal) => {
            let rule = refusal.to_string();
            let meta = json!({ "stage": "registration", "rule": rule });
            record_refusal(state, ctx, action, None, Outcome::Blocked, meta).await?;
            tracing::warn!(target: "bulkhead::audit", action, tenant_id = %ctx.tenant_id(), rule = %rule, "{what} refused");
            Err(ApiError::Invalid(format!("{field}: {rule}").into()))
        }
    }
}

/// An id from a path, a query or a body: its prefix and form are checked, and a malformed one
/// is a malformed request (400), never a lookup.
pub(crate) fn id<K: IdKind>(text: &str) -> Result<PrefixedId<K>, ApiError> {
    PrefixedId::<K>::parse(text).map_err(|e| ApiError::BadRequest(e.to_string().into()))
}

/// The one `{id}` segment of a route's path as the typed id it names, parsed by [`id`] (a
/// malformed one is refused 400), for a handler without a body.
#[derive(Debug)]
pub(crate) struct PathId<K: IdKind>(pub(crate) PrefixedId<K>);

impl<S: Send + Sync, K: IdKind> FromRequestParts<S> for PathId<K> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(text) = Path::<String>::from_request_parts(parts, state).await?;
        id(&text).map(PathId)
    }
}

/// The `{id}` of a route's path and its JSON body, for a write to one resource. The body is
/// read first and its refusal (400/413/415/422) answers before a malformed id's 400: the order
/// every such handler kept when it parsed its id itself, after axum had read the body.
#[derive(Debug)]
pub(crate) struct PathIdJson<K: IdKind, T>(pub(crate) PrefixedId<K>, pub(crate) T);

impl<S: Send + Sync, K: IdKind, T: DeserializeOwned> FromRequest<S> for PathIdJson<K, T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let Path(text) = Path::<String>::from_request_parts(&mut parts, state).await?;
        let Json(body) = Json::<T>::from_request(Request::from_parts(parts, body), state).await?;
        Ok(PathIdJson(id(&text)?, body))
    }
}

/// An optional id (a cursor, a filter): [`id`] when present.
pub(crate) fn optional_id<K: IdKind>(
    text: Option<&str>,
) -> Result<Option<PrefixedId<K>>, ApiError> {
    text.map(id).transpose()
}

/// Whether a JSON value holds a NUL character anywhere, in a key or a string (PostgreSQL's
/// `text` and `jsonb` cannot store one).
pub(crate) fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Refuses (422) a JSON value holding a NUL character; `what` names the field.
pub(crate) fn refuse_nul(what: &str, value: &Value) -> Result<(), ApiError> {
    if holds_nul(value) {
        return Err(ApiError::Invalid(
            format!("{what} may not contain NUL characters").into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_core::ApiKeyId;

    #[test]
    fn a_description_is_trimmed_and_bounded() {
        assert_eq!(description("  ci agent \n").unwrap(), "ci agent");
        assert_eq!(description("").unwrap(), "");
        let longest = "é".repeat(MAX_DESCRIPTION_CHARS);
        assert_eq!(description(&longest).unwrap(), longest);
        assert!(description(&"x".repeat(MAX_DESCRIPTION_CHARS + 1)).is_err());
        assert!(description(&format!("  {}  ", "x".repeat(MAX_DESCRIPTION_CHARS))).is_ok());
    }

    #[test]
    fn a_description_may_hold_newlines_and_tabs_but_no_other_control() {
        assert!(description("line one\nline two\tcolumn").is_ok());
        for hostile in [
            "a\rb",
            "a\u{1b}[2Jb",
            "a\0b",
            "a\u{7f}b",
            "a\u{85}b",
            "a\u{202e}b",
            "a\u{2066}b",
        ] {
            assert!(description(hostile).is_err(), "{hostile:?}");
        }
    }

    #[test]
    fn ids_are_checked_and_a_bad_one_is_a_bad_request() {
        let key = ApiKeyId::new();
        assert_eq!(
            id::<bulkhead_core::id::ApiKeyKind>(&key.to_string()).unwrap(),
            key
        );
        assert!(matches!(
            id::<bulkhead_core::id::ApiKeyKind>("sess_nope"),
            Err(ApiError::BadRequest(_))
        ));
        assert_eq!(
            optional_id::<bulkhead_core::id::ApiKeyKind>(None).unwrap(),
            None
        );
    }

    #[test]
    fn nul_is_found_in_keys_and_nested_strings() {
        assert!(holds_nul(
            &serde_json::json!({ "a": [1, { "b": "x\u{0}" }] })
        ));
        assert!(holds_nul(&serde_json::json!({ "k\u{0}": 1 })));
        assert!(!holds_nul(&serde_json::json!({ "a": ["x", 1, null] })));
        assert!(refuse_nul("payload", &serde_json::json!("\u{0}")).is_err());
    }
}
