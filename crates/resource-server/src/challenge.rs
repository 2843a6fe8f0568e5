//! `WWW-Authenticate: Bearer …` challenges (RFC 6750 §3, RFC 9728 §5.1), built from
//! parameters whose values are written as quoted strings (RFC 9110 §5.6.4).
//!
//! Public so that other Rust code answering for a Bulkhead-protected resource (or Bulkhead's own
//! API) can build the same header: [`bearer_challenge`] is the one place values are quoted.

use http::HeaderValue;

/// A challenge value that a header cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeError {
    /// A parameter name is not an RFC 9110 token.
    #[error("a challenge parameter name is not a token")]
    Name,
    /// A value holds a control character or a non-ASCII character, which a quoted string
    /// cannot carry portably (RFC 9110 §5.6.4 allows obs-text, RFC 6750 §3 does not).
    #[error("a challenge parameter value holds a character a header cannot carry")]
    Value,
}

/// RFC 9110 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// `value` as an RFC 9110 quoted string: `"` and `\` are escaped with a backslash, every other
/// visible ASCII character and the space are written as they are; anything else is refused.
pub fn quoted(value: &str) -> Result<String, ChallengeError> {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => return Err(ChallengeError::Value),
        }
    }
    out.push('"');
    Ok(out)
}

/// `Bearer name="value", …` with the parameters in the order given (an empty list gives
/// `Bearer`).
pub fn bearer_challenge(params: &[(&str, &str)]) -> Result<HeaderValue, ChallengeError> {
    let mut out = String::from("Bearer");
    for (i, (name, value)) in params.iter().enumerate() {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(ChallengeError::Name);
        }
        out.push_str(if i == 0 { " " } else { ", " });
        out.push_str(name);
        out.push('=');
        out.push_str(&quoted(value)?);
    }
    HeaderValue::from_str(&out).map_err(|_| ChallengeError::Value)
}

/// The challenges this crate answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No bearer token (401, no `error`, RFC 6750 §3.1).
    NoToken,
    /// A token was presented and is not good for this resource (401 `invalid_token`).
    InvalidToken,
    /// The token lacks a scope the route needs (403 `insufficient_scope`).
    InsufficientScope,
}

/// The header for `refusal`: `resource_metadata` always (RFC 9728 §5.1), `scope` when the route
/// names scopes (the ones it needs, space-separated).
pub(crate) fn challenge_for(
    refusal: Refusal,
    resource_metadata: &str,
    scope: &str,
) -> Result<HeaderValue, ChallengeError> {
    let mut params: Vec<(&str, &str)> = Vec::with_capacity(3);
    match refusal {
        Refusal::NoToken => {}
        Refusal::InvalidToken => params.push(("error", "invalid_token")),
        Refusal::InsufficientScope => params.push(("error", "insufficient_scope")),
    }
    if !scope.is_empty() {
        params.push(("scope", scope));
    }
    params.push(("resource_metadata", resource_metadata));
    bearer_challenge(&params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads a challenge back as a client would (RFC 9110 §11.2 auth-params with quoted-string
    /// values), independently of the builder.
    fn parse(header: &str) -> Option<Vec<(String, String)>> {
        let rest = header.strip_prefix("Bearer")?;
        let mut params = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ' ' || *c == ',') {
                chars.next();
            }
            if chars.peek().is_none() {
                return Some(params);
            }
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' {
                    break;
                }
                name.push(c);
                chars.next();
            }
            if chars.next() != Some('=') || chars.next() != Some('"') {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '"' => break,
                    c => value.push(c),
                }
            }
            params.push((name, value));
        }
    }

    #[test]
    fn the_three_challenges_have_their_standard_form() {
        let meta = "https://bulkhead.example/.well-known/oauth-protected-resource/ores_1";
        assert_eq!(
            challenge_for(Refusal::NoToken, meta, "").unwrap(),
            "Bearer resource_metadata=\"https://bulkhead.example/.well-known/oauth-protected-resource/ores_1\""
        );
        assert_eq!(
            challenge_for(Refusal::InvalidToken, meta, "a:read").unwrap(),
            format!(
                "Bearer error=\"invalid_token\", scope=\"a:read\", resource_metadata=\"{meta}\""
            )
        );
        assert_eq!(
            challenge_for(Refusal::InsufficientScope, meta, "a:read b:write").unwrap(),
            format!(
                "Bearer error=\"insufficient_scope\", scope=\"a:read b:write\", resource_metadata=\"{meta}\""
            )
        );
    }

    #[test]
    fn quotes_and_backslashes_are_escaped_and_controls_refused() {
        assert_eq!(quoted(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert_eq!(quoted("").unwrap(), "\"\"");
        for bad in ["a\r\nSet-Cookie: x=1", "tab\there", "nul\0", "é", "\u{7f}"] {
            assert_eq!(quoted(bad), Err(ChallengeError::Value), "{bad:?}");
        }
        assert_eq!(
            bearer_challenge(&[("bad name", "x")]),
            Err(ChallengeError::Name)
        );
        assert_eq!(bearer_challenge(&[("", "x")]), Err(ChallengeError::Name));
        assert_eq!(bearer_challenge(&[]).unwrap(), "Bearer");
    }

    proptest! {
        /// Any printable ASCII value comes back unchanged from a client's reading of the header,
        /// and no value can end its quoted string early or add a parameter.
        #[test]
        fn printable_values_round_trip(
            values in proptest::collection::vec("[ -~]{0,40}", 1..4)
        ) {
            let names = ["error", "scope", "resource_metadata", "realm"];
            let params: Vec<(&str, &str)> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (names[i], v.as_str()))
                .collect();
            let header = bearer_challenge(&params).unwrap();
            let parsed = parse(header.to_str().unwrap()).unwrap();
            let expected: Vec<(String, String)> = params
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            prop_assert_eq!(parsed, expected);
        }

        /// A value with any character outside printable ASCII is refused, never written.
        #[test]
        fn other_characters_are_refused(
            prefix in "[ -~]{0,10}",
            bad in proptest::char::any().prop_filter("not printable ASCII", |c| !(' '..='~').contains(c)),
        ) {
            let value = format!("{prefix}{bad}");
            prop_assert_eq!(bearer_challenge(&[("scope", &value)]), Err(ChallengeError::Value));
        }
    }
}
