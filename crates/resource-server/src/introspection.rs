//! Revocation and effective scopes through Bulkhead's introspection endpoint (RFC 7662).
//!
//! Invariants:
//! - an answer is reused for at most the configured time (10 s by default, 60 s at most),
//!   keyed by SHA-256 of the token: a revocation is seen at most that late;
//! - concurrent requests with one token share one introspection call;
//! - a failed call (unreachable, not 200, not the JSON expected) is never cached and never
//!   accepts: the request is refused as unavailable;
//! - an `active` answer counts only if it names this resource (`aud`), this tenant and the
//!   token's own `jti`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Client credentials for Bulkhead's introspection endpoint: an API key of the resource's
/// tenant (Basic authentication with its id, or the key alone in the body).
#[derive(Clone)]
pub(crate) struct IntrospectionClient {
    pub(crate) url: String,
    pub(crate) client_id: Option<String>,
    pub(crate) secret: String,
}

impl std::fmt::Debug for IntrospectionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionClient")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Largest introspection answer read, in bytes.
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// Most answers remembered.
const MAX_ENTRIES: u64 = 10_000;

/// What Bulkhead says of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// It stands, with these effective scopes (its scopes cut to its principal's roles and the
    /// resource's scopes now) and the network restrictions Bulkhead reports for it (those it
    /// carries and its keys' allowlists now: the caller must lie in a network of every list).
    Active {
        scopes: Vec<String>,
        networks: Vec<Vec<String>>,
    },
    /// Revoked, expired, its principal disabled, or not this resource's.
    Inactive,
}

/// The introspection endpoint could not answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unavailable;

#[derive(Deserialize)]
struct Answer {
    active: bool,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    aud: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    allowed_networks: Vec<Vec<String>>,
}

pub(crate) struct Introspection {
    http: reqwest::Client,
    client: IntrospectionClient,
    cache: moka::future::Cache<[u8; 32], Standing>,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// What an answer must name to count.
pub(crate) struct Expect<'a> {
    pub(crate) resource: &'a str,
    pub(crate) tenant_id: &'a str,
    pub(crate) jti: &'a str,
}

impl Introspection {
    pub(crate) fn new(http: reqwest::Client, client: IntrospectionClient, ttl: Duration) -> Self {
        Introspection {
            http,
            client,
            cache: moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The token's standing: remembered, or asked of Bulkhead.
    pub(crate) async fn standing(
        &self,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<Standing, Unavailable> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.cache
            .try_get_with(digest, self.ask(token, expect))
            .await
            .map_err(|_: Arc<Unavailable>| Unavailable)
    }

    async fn ask(&self, token: &str, expect: &Expect<'_>) -> Result<Standing, Unavailable> {
        let mut form = vec![("token", token)];
        let mut request = self.http.post(&self.client.url);
        match &self.client.client_id {
            Some(id) => request = request.basic_auth(id, Some(&self.client.secret)),
            None => form.push(("client_secret", self.client.secret.as_str())),
        }
        let mut response = request.form(&form).send().await.map_err(|_| {
            tracing::warn!(target: "bulkhead_resource_server", "introspection unreachable");
            Unavailable
        })?;
        if response.status() != reqwest::StatusCode::OK {
            tracing::warn!(
                target: "bulkhead_resource_server",
                status = response.status().as_u16(),
                "introspection refused the request"
            );
            return Err(Unavailable);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|_| Unavailable)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Unavailable);
            }
            body.extend_from_slice(&chunk);
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| Unavailable)?;
        Ok(judge(&answer, expect))
    }
}

fn judge(answer: &Answer, expect: &Expect<'_>) -> Standing {
    let names_this = answer.aud.as_deref() == Some(expect.resource)
        && answer.tenant_id.as_deref() == Some(expect.tenant_id)
        && answer.jti.as_deref() == Some(expect.jti);
    if !answer.active || !names_this {
        return Standing::Inactive;
    }
    Standing::Active {
        scopes: answer
            .scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        networks: answer.allowed_networks.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_active_answer_counts_only_for_this_resource_tenant_and_token() {
        let expect = Expect {
            resource: "https://acme.example/mcp",
            tenant_id: "tnt_a",
            jti: "at_1",
        };
        let answer = |aud: &str, tenant: &str, jti: &str| Answer {
            active: true,
            scope: Some("a:read b:write".into()),
            aud: Some(aud.into()),
            tenant_id: Some(tenant.into()),
            jti: Some(jti.into()),
            allowed_networks: vec![vec!["127.0.0.1/32".into()]],
        };
        assert_eq!(
            judge(
                &answer("https://acme.example/mcp", "tnt_a", "at_1"),
                &expect
            ),
            Standing::Active {
                scopes: vec!["a:read".into(), "b:write".into()],
                networks: vec![vec!["127.0.0.1/32".into()]],
            }
        );
        for wrong in [
            answer("https://acme.example/other", "tnt_a", "at_1"),
            answer("https://acme.example/mcp", "tnt_b", "at_1"),
            answer("https://acme.example/mcp", "tnt_a", "at_2"),
            Answer {
                active: false,
                ..answer("https://acme.example/mcp", "tnt_a", "at_1")
            },
        ] {
            assert_eq!(judge(&wrong, &expect), Standing::Inactive);
        }
    }
}
