//! The request of one attempt: body, vetted custom headers, and the signature headers.

use std::time::Duration;

use bulkhead_store::tenant::webhooks::{self as store, DeliveryWork};
use http::{HeaderMap, HeaderValue};

use crate::headers::check_custom_headers;
use crate::signing::{signed_headers, Secret};

pub(super) fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// Headers and body of one attempt: content type, the tenant's vetted headers, then the
/// signature headers (which custom headers can never replace).
pub(super) fn build_request(
    work: &DeliveryWork,
    keys: &store::EndpointKeys,
    timestamp: i64,
) -> Result<(HeaderMap, bytes::Bytes), String> {
    let body = serde_json::to_vec(&work.message.payload).map_err(|e| e.to_string())?;
    let custom = work
        .endpoint
        .headers
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut headers = check_custom_headers(&custom).map_err(|e| e.to_string())?;
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let current = Secret::from_bytes(&keys.current).map_err(|e| e.to_string())?;
    let previous = keys
        .previous
        .as_deref()
        .map(Secret::from_bytes)
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut secrets = vec![&current];
    if let Some(previous) = &previous {
        secrets.push(previous);
    }
    let signed = signed_headers(&secrets, &work.message.id.to_string(), timestamp, &body);
    headers.extend(signed);
    Ok((headers, bytes::Bytes::from(body)))
}
