//! The decision on one presented token: every check of the crate's invariants, in order.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bulkhead_auth::token::{verify_access_token_with_kid, MAX_TOKEN_BYTES};
use bulkhead_auth::{Expectations, ExpectedIssuer};

use crate::introspection::{Expect, Standing};
use crate::jwks::KeyLookup;
use crate::Shared;

/// What a verified token says, put in the request's extensions for handlers
/// (`axum::Extension<VerifiedAccess>`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedAccess {
    /// The tenant (`tnt_…`): always the configured one.
    pub tenant_id: String,
    /// The subject: a user (`user_…`) or an agent's principal.
    pub subject: String,
    /// `user` or `agent`.
    pub subject_type: String,
    /// The OAuth client (`oac_…`) or API key (`key_…`) the token was issued to.
    pub client_id: String,
    /// The scopes the token may use here: with introspection, the effective ones Bulkhead
    /// reports (cut to the user's roles and the resource's scopes now); otherwise the claim's.
    pub scopes: Vec<String>,
    /// The token's id (`at_…`).
    pub token_id: String,
    /// The delegation chain (`act`), outermost actor first; empty when not delegated.
    pub actors: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
}

impl VerifiedAccess {
    /// Whether the token holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a token was not accepted (logged, never answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// 401 `invalid_token`, with the reason for the log.
    Invalid(&'static str),
    /// 503: keys never fetched, or introspection unavailable.
    Unavailable(&'static str),
}

/// The `kid` of a token's header, if it has the shape of one (the verifier checks the rest).
fn header_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if value.get("alg")?.as_str()? != "EdDSA" {
        return None;
    }
    Some(value.get("kid")?.as_str()?.to_owned())
}

/// Whether a caller at `peer` lies in a network of every list (Bulkhead's own rule for the
/// `allowed_networks` of its tokens): always without lists; with some, only from a known
/// address, and never when a list is empty or holds what is not a network.
pub(crate) fn admits(networks: &[Vec<String>], peer: Option<IpAddr>) -> bool {
    if networks.is_empty() {
        return true;
    }
    let Some(peer) = peer else {
        return false;
    };
    // An IPv4 caller on a dual-stack listener arrives as `::ffff:a.b.c.d`: judged as IPv4, as
    // Bulkhead judges it.
    let peer = peer.to_canonical();
    networks.iter().all(|list| {
        !list.is_empty()
            && list.iter().all(|net| net.parse::<ipnet::IpNet>().is_ok())
            && list
                .iter()
                .any(|net| net.parse::<ipnet::IpNet>().is_ok_and(|n| n.contains(&peer)))
    })
}

impl Shared {
    /// Every check, in order; the verified access on success. `peer` is the caller's address
    /// as the configured [`crate::Builder::peer_address`] reads it (`None`: unknown).
    pub(crate) async fn verify(
        &self,
        token: &str,
        peer: Option<IpAddr>,
    ) -> Result<VerifiedAccess, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Invalid("TooLarge"));
        }
        // Only a token shaped like an access token may cause a JWKS fetch.
        let kid = header_kid(token).ok_or(Rejection::Invalid("Malformed"))?;
        let keys = match self.jwks.lookup(&kid).await {
            KeyLookup::Known(keys) => keys,
            KeyLookup::Unknown => return Err(Rejection::Invalid("UnknownKey")),
            KeyLookup::Unavailable => return Err(Rejection::Unavailable("NoKeys")),
        };
        let expect = Expectations {
            issuer: ExpectedIssuer::Exact(&self.issuer),
            audience: &self.resource,
            now: (self.clock)(),
        };
        let (claims, _) = verify_access_token_with_kid(token, &keys, &expect).map_err(|e| {
            Rejection::Invalid(match e {
                bulkhead_auth::TokenError::Audience => "Audience",
                bulkhead_auth::TokenError::Issuer => "Issuer",
                bulkhead_auth::TokenError::Expired => "Expired",
                bulkhead_auth::TokenError::NotYetValid => "NotYetValid",
                bulkhead_auth::TokenError::Signature => "Signature",
                _ => "Invalid",
            })
        })?;
        if claims.tenant_id != self.tenant_id {
            return Err(Rejection::Invalid("Tenant"));
        }
        // The token's own restrictions, and with introspection also its keys' allowlists now.
        let mut networks = claims.allowed_networks.clone();
        let scopes = match &self.introspection {
            None => claims
                .scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(introspection) => {
                let expect = Expect {
                    resource: &self.resource,
                    tenant_id: &self.tenant_id,
                    jti: &claims.jti,
                };
                match introspection.standing(token, &expect).await {
                    Ok(Standing::Active {
                        scopes,
                        networks: current,
                    }) => {
                        networks.extend(current);
                        scopes
                    }
                    Ok(Standing::Inactive) => return Err(Rejection::Invalid("Inactive")),
                    Err(_) => return Err(Rejection::Unavailable("Introspection")),
                }
            }
        };
        if !admits(&networks, peer) {
            return Err(Rejection::Invalid(if peer.is_some() {
                "Network"
            } else {
                "NetworkUnknownCaller"
            }));
        }
        Ok(VerifiedAccess {
            tenant_id: claims.tenant_id,
            subject: claims.sub,
            subject_type: claims.sub_type,
            client_id: claims.client_id,
            scopes,
            token_id: claims.jti,
            actors: claims.act.map(|act| act.actors()).unwrap_or_default(),
            expires_at: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restricted_token_is_admitted_only_from_a_known_address_in_every_list() {
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let there: IpAddr = "10.1.2.3".parse().unwrap();
        let lists = |l: &[&[&str]]| -> Vec<Vec<String>> {
            l.iter()
                .map(|list| list.iter().map(|n| (*n).to_owned()).collect())
                .collect()
        };
        assert!(admits(&[], None));
        assert!(admits(&[], Some(there)));
        let one = lists(&[&["127.0.0.0/8", "::1/128"]]);
        assert!(admits(&one, Some(here)));
        assert!(!admits(&one, Some(there)));
        assert!(!admits(&one, None));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(admits(&one, Some(mapped)));
        assert!(!admits(&lists(&[&["::/0"]]), Some(mapped)));
        // Every list must admit the caller, not just one.
        let two = lists(&[&["127.0.0.0/8"], &["10.0.0.0/8"]]);
        assert!(!admits(&two, Some(here)));
        assert!(!admits(&two, Some(there)));
        // An empty list, or text that is not a network, admits nobody.
        assert!(!admits(&lists(&[&[]]), Some(here)));
        assert!(!admits(&lists(&[&["127.0.0.0/8", "nonsense"]]), Some(here)));
    }
}
