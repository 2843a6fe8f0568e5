//! The form body of the OAuth endpoints (`application/x-www-form-urlencoded`), parsed to the
//! letter: a parameter sent twice is `invalid_request` (RFC 6749 §3.2).

use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use zeroize::Zeroizing;

use crate::http::error::OAuthError;

/// Most parameters a form may carry.
const MAX_PARAMS: usize = 16;

/// A parsed form body: each parameter at most once.
pub(crate) struct Form(HashMap<String, Zeroizing<String>>);

impl Form {
    pub(crate) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form_type {
            return Err(OAuthError::invalid_request(
                "send parameters as application/x-www-form-urlencoded",
            ));
        }
        let mut params = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if params.len() >= MAX_PARAMS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            let name = name.into_owned();
            if params.contains_key(&name) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{}` is repeated",
                    truncate_name(&name)
                )));
            }
            params.insert(name, Zeroizing::new(value.into_owned()));
        }
        Ok(Form(params))
    }

    /// A parameter's value; an empty one counts as absent.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

fn truncate_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect()
}
