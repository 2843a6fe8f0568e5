//! The operator door (issue 19): no tenant credential opens an operator route, and no operator
//! key (`bk_op_…`) opens a tenant route.
//!
//! Runs only when the probe is given the operator listener (loopback TCP) and an operator key.
//! The operator operations come from the operator API's own document
//! (`/operator/v1/openapi.json` on that listener); the tenant operations from the tenant document
//! the rest of the probe attacks. Every attempt must be 401, and no answer may hold anything of
//! tenant A's.

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::operations::{fill, operations, param_kind, Operation};
use crate::probe::Probe;
use crate::report::{Attack, Verdict};
use crate::tenants::{Host, Victim};

/// Where the operator API's document is served.
pub(crate) const OPERATOR_DOCUMENT: &str = "/operator/v1/openapi.json";

impl Probe {
    /// Both directions of the operator door (see the module doc); nothing without an operator
    /// target.
    pub(crate) async fn operator_door(
        &mut self,
        tenant_operations: &[Operation],
        victim: &Victim,
    ) -> anyhow::Result<()> {
        let Some(target) = self.config.operator.clone() else {
            return Ok(());
        };
        // An operator key on every tenant operation, on A's subdomain with A's ids.
        for op in tenant_operations.iter().filter(|op| op.tenant_api()) {
            let id = param_kind(&op.path)
                .and_then(|kind| victim.ids.get(kind).cloned())
                .unwrap_or_else(|| "probe-missing".to_owned());
            let path = fill(&op.path, &id);
            let body = body_for(&op.method);
            let (status, text) = self
                .send(
                    Host::A,
                    Some(&target.operator_key),
                    op.method.clone(),
                    &path,
                    body.as_ref(),
                )
                .await?;
            self.judge_door(op, Attack::OperatorKeyOnTenant, victim, status, &text);
        }
        // Every tenant credential on every operator operation.
        let base = target.base_url.as_str().trim_end_matches('/').to_owned();
        let document = self.operator_document(&base).await?;
        let operator_operations = operations(&document)?;
        if operator_operations.iter().all(|op| op.public) {
            bail!("the operator document lists no authenticated operation");
        }
        let credentials = [
            self.config.tenant_a.admin_key.clone(),
            victim.access_token.clone(),
            victim.delegated_token.clone(),
            victim.agent_key.clone(),
            self.config.tenant_b.admin_key.clone(),
        ];
        for op in operator_operations.iter().filter(|op| !op.public) {
            let path = fill(&op.path, &self.config.tenant_a.slug);
            let body = body_for(&op.method);
            for credential in credentials.iter().filter(|c| !c.is_empty()) {
                let mut request = self
                    .client
                    .request(op.method.clone(), format!("{base}{path}"))
                    .bearer_auth(credential);
                if let Some(body) = &body {
                    request = request.json(body);
                }
                let response = request
                    .send()
                    .await
                    .with_context(|| format!("operator request to {path}"))?;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                self.judge_door(
                    op,
                    Attack::TenantCredentialOnOperator,
                    victim,
                    status,
                    &text,
                );
            }
        }
        Ok(())
    }

    /// A credential of the other door: 401 is refused; anything of A's in the answer, or any
    /// success (the credential opened a door it has no business with), is a leak; any other
    /// status is unexpected.
    fn judge_door(
        &mut self,
        op: &Operation,
        attack: Attack,
        victim: &Victim,
        status: StatusCode,
        text: &str,
    ) {
        let held = victim
            .secrets
            .iter()
            .find(|s| !s.is_empty() && text.contains(s.as_str()));
        let (verdict, detail) = if let Some(secret) = held {
            let shown: String = secret.chars().take(12).collect();
            (
                Verdict::Leak,
                format!("{status}; the answer holds A's {shown}…"),
            )
        } else if status == StatusCode::UNAUTHORIZED {
            (Verdict::Refused, status.to_string())
        } else if status.is_success() {
            (
                Verdict::Leak,
                format!("{status}: the credential opened the route"),
            )
        } else {
            (Verdict::Unexpected, format!("{status} (expected 401)"))
        };
        self.record(&op.name(), attack, verdict, detail);
    }

    async fn operator_document(&self, base: &str) -> anyhow::Result<Value> {
        let response = self
            .client
            .get(format!("{base}{OPERATOR_DOCUMENT}"))
            .send()
            .await
            .context("GET /operator/v1/openapi.json")?;
        if !response.status().is_success() {
            bail!(
                "GET /operator/v1/openapi.json answered {}",
                response.status()
            );
        }
        Ok(response.json().await?)
    }
}

/// An empty JSON object for the methods that take a body.
fn body_for(method: &Method) -> Option<Value> {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH).then(|| json!({}))
}
