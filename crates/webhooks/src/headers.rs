//! Custom headers a tenant may add to its deliveries.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// Most custom headers per endpoint.
pub const MAX_HEADERS: usize = 20;
/// Longest header value.
pub const MAX_VALUE_LEN: usize = 1024;

/// Names a tenant may not set: hop-by-hop and framing headers (they would desynchronise the
/// connection), credentials of other schemes, and the headers Bulkhead itself sets.
const REFUSED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "expect",
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "www-authenticate",
    "cookie",
    "set-cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "user-agent",
];

/// Why a custom header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Too many.
    #[error("at most {MAX_HEADERS} custom headers")]
    TooMany,
    /// Not a valid header name.
    #[error("{0:?} is not a valid header name")]
    Name(String),
    /// A name Bulkhead does not let tenants set.
    #[error("the header {0} may not be set (hop-by-hop, authentication or set by Bulkhead)")]
    Refused(String),
    /// The same name twice, in any mix of case: only one value could be sent, and which one
    /// would depend on the JSON object's order.
    #[error("the header {0} is named more than once")]
    Duplicate(String),
    /// Not a string, too long, or not valid header text.
    #[error(
        "the value of header {0} must be a string of at most {MAX_VALUE_LEN} visible characters"
    )]
    Value(String),
}

/// Vets a JSON object of custom headers; returns the header map to send.
pub fn check_custom_headers(headers: &Map<String, Value>) -> Result<HeaderMap, HeaderError> {
    if headers.len() > MAX_HEADERS {
        return Err(HeaderError::TooMany);
    }
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let parsed = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| HeaderError::Name(name.clone()))?;
        if REFUSED.contains(&lower.as_str())
            || lower.starts_with("webhook-")
            || lower.starts_with("proxy-")
            || lower.starts_with("sec-")
        {
            return Err(HeaderError::Refused(lower));
        }
        let text = value
            .as_str()
            .ok_or_else(|| HeaderError::Value(lower.clone()))?;
        if text.len() > MAX_VALUE_LEN || text.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(HeaderError::Value(lower));
        }
        let value = HeaderValue::from_str(text).map_err(|_| HeaderError::Value(lower.clone()))?;
        if out.contains_key(&parsed) {
            return Err(HeaderError::Duplicate(lower));
        }
        out.insert(parsed, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<HeaderMap, HeaderError> {
        check_custom_headers(v.as_object().unwrap_or(&Map::new()))
    }

    #[test]
    fn refuses_hop_by_hop_auth_and_our_own() {
        for name in [
            "Connection",
            "Transfer-Encoding",
            "Host",
            "Authorization",
            "Cookie",
            "webhook-signature",
            "Proxy-Authorization",
        ] {
            assert!(
                matches!(check(json!({ name: "x" })), Err(HeaderError::Refused(_))),
                "{name}"
            );
        }
        assert!(check(json!({ "bad name": "x" })).is_err());
        assert!(check(json!({ "x-a": "line\r\nInjected: 1" })).is_err());
        assert!(check(json!({ "x-a": 5 })).is_err());
        // Found by the `webhook_headers` fuzz target: one of the two was silently dropped.
        assert_eq!(
            check(json!({ "X-A": "1", "x-a": "2" })).map(|h| h.len()),
            Err(HeaderError::Duplicate("x-a".into()))
        );
        assert_eq!(
            check(json!({ "X-Team": "payments" })).map(|h| h.len()),
            Ok(1)
        );
    }
}
