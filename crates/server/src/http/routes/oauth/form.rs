//! The form body of the OAuth endpoints (`application/x-www-form-urlencoded`), parsed to the
//! letter: a parameter sent twice is `invalid_request` (RFC 6749 §3.2).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use zeroize::Zeroizing;

use crate::http::error::OAuthError;

/// Most parameters a form may carry.
const MAX_PARAMS: usize = 16;

/// What every OAuth endpoint reads of a request, unparsed: the caller's address, the headers
/// (the host, client authentication, the body's type) and the form body. Each part is refused
/// as its own extractor refuses it, in the same order.
pub(crate) struct FormRequest {
    pub(crate) peer: SocketAddr,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for FormRequest {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self {
            peer,
            headers,
            body,
        })
    }
}

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
