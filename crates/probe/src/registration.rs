//! Dynamic client registration (RFC 7591, `POST /oauth/register`) across tenants: A never
//! enabled it, so nobody registers a client in A; a client B registers itself is unknown on A's
//! subdomain, at the authorization endpoint and at the token endpoint.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::operations::random_marker;
use crate::probe::Probe;
use crate::report::{Attack, Verdict};
use crate::tenants::Host;

const REGISTER: &str = "POST /oauth/register";

impl Probe {
    pub(crate) async fn client_registration(&mut self) -> anyhow::Result<()> {
        let marker = random_marker();
        let tag = &marker[marker.len() - 8..];
        let metadata = json!({
            "client_name": format!("probe-{tag}"),
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
        });
        // A has registration off (the default): refused, nothing made.
        let response = self
            .client
            .post(self.url(Host::A, "/oauth/register"))
            .json(&metadata)
            .send()
            .await?;
        let status = response.status();
        let verdict = match status {
            StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => Verdict::Refused,
            s if s.is_success() => Verdict::Leak,
            _ => Verdict::Unexpected,
        };
        self.record(
            &format!("{REGISTER} (A, off)"),
            Attack::ClientRegistration,
            verdict,
            format!("{status}"),
        );

        // B turns it on for itself, registers, and tries its client on A's subdomain.
        let before = self.as_b(Method::GET, "/v1/oauth-settings", None).await?;
        let on =
            json!({ "dynamic_registration": true, "dynamic_client_scopes": ["sessions:read"] });
        self.as_b(Method::PUT, "/v1/oauth-settings", Some(on))
            .await?;
        let response = self
            .client
            .post(self.url(Host::B, "/oauth/register"))
            .json(&metadata)
            .send()
            .await?;
        let status = response.status();
        let client_id = response
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["client_id"].as_str().map(str::to_owned));
        match client_id {
            Some(client_id) if status == StatusCode::CREATED => {
                self.foreign_client_on_a(&client_id).await?;
                let _ = self
                    .as_b(
                        Method::DELETE,
                        &format!("/v1/oauth-clients/{client_id}"),
                        None,
                    )
                    .await;
            }
            _ => self.record(
                &format!("{REGISTER} (B, on)"),
                Attack::ClientRegistration,
                Verdict::Unexpected,
                format!("B could not register its own client: {status}"),
            ),
        }
        let restore = json!({
            "dynamic_registration": before["dynamic_registration"],
            "client_id_metadata_documents": before["client_id_metadata_documents"],
            "dynamic_client_scopes": before["dynamic_client_scopes"],
        });
        self.as_b(Method::PUT, "/v1/oauth-settings", Some(restore))
            .await?;
        Ok(())
    }

    /// B's self-registered client on A's subdomain: the authorization endpoint shows the error
    /// page of a client that exists nowhere (400). (Its token endpoint is tried with a real
    /// code of A's in column `pages`: a made-up code is refused whoever the client is.)
    async fn foreign_client_on_a(&mut self, client_id: &str) -> anyhow::Result<()> {
        let (status, _, unknown) = self.authorize_as_unknown(Host::A, client_id).await?;
        let verdict = match status {
            StatusCode::BAD_REQUEST if unknown => Verdict::Refused,
            s if s.is_success() || s.is_redirection() => Verdict::Leak,
            _ => Verdict::Unexpected,
        };
        self.record(
            "GET /oauth/authorize (B's registered client on A)",
            Attack::ClientRegistration,
            verdict,
            format!(
                "{status}{}",
                if unknown {
                    ""
                } else {
                    ", not the unknown client's page"
                }
            ),
        );
        Ok(())
    }
}
