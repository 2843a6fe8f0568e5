//! The tower layer: reads the bearer token, asks [`crate::Shared::verify`], checks the route's
//! scopes and answers refusals with their challenge.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};

use crate::challenge::{challenge_for, Refusal};
use crate::verify::Rejection;
use crate::Shared;

/// Seconds a client is asked to wait after a `503` (keys or introspection unavailable).
const RETRY_AFTER_SECS: &str = "5";

/// Admits requests carrying a valid token for the resource with the scopes it names; made by
/// [`crate::ResourceServer::require`].
#[derive(Clone)]
pub struct RequireToken {
    shared: Arc<Shared>,
    /// Invariant: RFC 6749 scope tokens (checked by `require`).
    scopes: Arc<[String]>,
}

impl std::fmt::Debug for RequireToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireToken")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl RequireToken {
    pub(crate) fn new(shared: Arc<Shared>, scopes: Vec<String>) -> Self {
        RequireToken {
            shared,
            scopes: scopes.into(),
        }
    }
}

impl<S> tower::Layer<S> for RequireToken {
    type Service = RequireTokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireTokenService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RequireToken`].
#[derive(Clone)]
pub struct RequireTokenService<S> {
    inner: S,
    layer: RequireToken,
}

impl<S> std::fmt::Debug for RequireTokenService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireTokenService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

/// The bearer token, if exactly one `Authorization: Bearer …` header is present (RFC 6750
/// §2.1; a second header or another scheme is no token).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    bulkhead_auth::bearer_token(
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(HeaderValue::as_bytes),
    )
}

fn refuse<B: Default>(status: StatusCode, challenge: Option<HeaderValue>) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(challenge) = challenge {
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    response
}

impl RequireToken {
    fn challenge<B: Default>(&self, refusal: Refusal) -> Response<B> {
        let status = match refusal {
            Refusal::InsufficientScope => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        // The metadata URL and the scopes were checked writable when configured.
        let header = challenge_for(refusal, &self.shared.metadata, &self.scopes.join(" ")).ok();
        refuse(status, header)
    }
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RequireTokenService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The service polled ready is the one that is called (tower's clone-and-swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let Some(token) = bearer_token(request.headers()).map(str::to_owned) else {
                return Ok(layer.challenge(Refusal::NoToken));
            };
            let peer = layer
                .shared
                .peer_address
                .as_ref()
                .and_then(|read| read(request.extensions()));
            let access = match layer.shared.verify(&token, peer).await {
                Ok(access) => access,
                Err(Rejection::Invalid(reason)) => {
                    tracing::info!(target: "bulkhead_resource_server", reason, "token refused");
                    return Ok(layer.challenge(Refusal::InvalidToken));
                }
                Err(Rejection::Unavailable(reason)) => {
                    tracing::warn!(
                        target: "bulkhead_resource_server",
                        reason,
                        "token cannot be checked; refused with 503"
                    );
                    return Ok(refuse(StatusCode::SERVICE_UNAVAILABLE, None));
                }
            };
            if !layer.scopes.iter().all(|needed| access.has_scope(needed)) {
                tracing::info!(
                    target: "bulkhead_resource_server",
                    token_id = %access.token_id,
                    "token lacks a required scope"
                );
                return Ok(layer.challenge(Refusal::InsufficientScope));
            }
            request.extensions_mut().insert(access);
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_every_authorization_header() {
        // The rule itself is `bulkhead_auth::bearer_token`'s (tested there); this checks that
        // every header reaches it, so a second one is refused.
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        assert_eq!(bearer_token(&headers), Some("a"));
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer_token(&headers), None);
    }
}
