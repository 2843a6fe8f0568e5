//! The operations the probe attacks, read from the OpenAPI document, and how their paths
//! and bodies are filled.

use anyhow::anyhow;
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};

use crate::tenants::Victim;

/// One operation of the OpenAPI document.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub(crate) method: Method,
    pub(crate) path: String,
    /// `security: []`: callable without a credential.
    pub(crate) public: bool,
    pub(crate) query_params: Vec<String>,
}

/// OpenID Connect's userinfo endpoint: a credential route outside `/v1`.
pub(crate) const USERINFO: &str = "/oauth/userinfo";

impl Operation {
    pub(crate) fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Behind tenant resolution: under `/v1` (login is the one self-authenticating route there),
    /// and OpenID Connect's `userinfo`, the one credential route outside it.
    pub(crate) fn tenant_api(&self) -> bool {
        let under_v1 = self.path.starts_with("/v1/") && self.path != "/v1/auth/login";
        (under_v1 || self.path == USERINFO) && !self.public
    }
}

/// Reads every operation of an OpenAPI 3.x document.
pub(crate) fn operations(document: &Value) -> anyhow::Result<Vec<Operation>> {
    let paths = document["paths"]
        .as_object()
        .ok_or_else(|| anyhow!("the OpenAPI document has no `paths` object"))?;
    let mut out = Vec::new();
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                continue;
            };
            if !matches!(
                method,
                Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            ) {
                continue;
            }
            let public = op["security"].as_array().is_some_and(Vec::is_empty);
            let query_params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            out.push(Operation {
                method,
                path: path.clone(),
                public,
                query_params,
            });
        }
    }
    out.sort_by(|a, b| (&a.path, a.method.as_str()).cmp(&(&b.path, b.method.as_str())));
    Ok(out)
}

pub(crate) fn random_marker() -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("probe-marker-{n:016x}")
}

/// A fresh, well-formed id of the kind this collection holds: "does not exist" for comparison.
pub(crate) fn fresh_id(kind: &str) -> Option<String> {
    use bulkhead_core::*;
    Some(match kind {
        "sessions" => SessionId::new().to_string(),
        "agents" => AgentId::new().to_string(),
        "users" => UserId::new().to_string(),
        "roles" => RoleId::new().to_string(),
        "role-assignments" => RoleAssignmentId::new().to_string(),
        "api-keys" => ApiKeyId::new().to_string(),
        "endpoints" => EndpointId::new().to_string(),
        "messages" => MessageId::new().to_string(),
        "auth-sessions" => AuthSessionId::new().to_string(),
        "oauth-resources" => OAuthResourceId::new().to_string(),
        "oauth-clients" => OAuthClientId::new().to_string(),
        "grants" => OAuthGrantId::new().to_string(),
        "tools" => format!("probe_missing_{:08x}", rand::thread_rng().gen::<u32>()),
        _ => return None,
    })
}

/// The resource kind a `{param}` of `path` names: the segment before it.
pub(crate) fn param_kind(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    let at = segments.iter().position(|s| s.starts_with('{'))?;
    let before = segments.get(at.checked_sub(1)?)?;
    let kind = match *before {
        "sessions" if segments.get(at.wrapping_sub(2)) == Some(&"auth") => "auth-sessions",
        "sessions" => "sessions",
        "agents" => "agents",
        "users" => "users",
        "roles" => "roles",
        "role-assignments" => "role-assignments",
        "api-keys" => "api-keys",
        "endpoints" => "endpoints",
        "messages" => "messages",
        "tools" => "tools",
        "oauth-resources" => "oauth-resources",
        "oauth-clients" => "oauth-clients",
        "grants" => "grants",
        _ => return None,
    };
    Some(kind)
}

pub(crate) fn fill(path: &str, id: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |e| start + e + 1);
        out.push_str(id);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A problem body without the fields that differ per request.
pub(crate) fn comparable(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("instance");
        map.remove("request_id");
    }
    body
}

/// Addresses a webhook endpoint must never be allowed to point at.
pub(crate) const INTERNAL_URLS: [&str; 8] = [
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/hook",
    "https://localhost/hook",
    "https://2130706433/hook",
    "https://0x7f.0.0.1/hook",
    "http://hooks.example/plain-http",
];

/// A body the creating operation would accept from an unconfined credential, so that only the
/// confinement can refuse it (B's own tenant; `tag` keeps names unique).
pub(crate) fn confined_body(op: &Operation, tag: &str) -> Value {
    match op.path.as_str() {
        "/v1/sessions" => json!({ "agent_id": "probe-confined", "namespace": "probe-out" }),
        "/v1/webhooks/endpoints" => {
            json!({ "url": format!("https://hooks-{tag}.example/confined"), "event_types": ["session.*"] })
        }
        "/v1/webhooks/messages" => json!({ "event_type": "probe.check", "payload": {} }),
        "/v1/tools" => json!({
            "name": format!("probe_confined_{tag}"),
            "description": "bulkhead probe",
            "input_schema": { "type": "object" },
            "endpoint_url": format!("https://tools-{tag}.example/run"),
        }),
        "/v1/users" => json!({
            "email": format!("probe-confined-{tag}@probe.invalid"),
            "password": random_marker(),
        }),
        "/v1/agents" => json!({ "name": format!("probe-confined-{tag}") }),
        "/v1/roles" => {
            json!({ "name": format!("probe-confined-{tag}"), "permissions": ["sessions:read"] })
        }
        "/v1/api-keys" => json!({ "scopes": ["sessions:read"], "description": "bulkhead probe" }),
        _ => json!({}),
    }
}

/// Bodies that name A's resources, for operations whose body references other resources.
pub(crate) fn foreign_bodies(op: &Operation, v: &Victim) -> Vec<Value> {
    let id = |kind: &str| v.ids.get(kind).cloned().unwrap_or_default();
    match (op.method.as_str(), op.path.as_str()) {
        ("POST", "/v1/role-assignments") => vec![
            json!({ "role_id": id("roles"), "agent_id": id("agents") }),
            json!({ "role": "viewer", "agent_id": id("agents") }),
            json!({ "role": "viewer", "user_id": id("users") }),
        ],
        ("POST", "/v1/api-keys") => {
            vec![json!({ "scopes": ["sessions:read"], "agent_id": id("agents") })]
        }
        ("POST", "/v1/agents") => {
            vec![json!({ "name": "probe-stray", "owner_user_id": id("users") })]
        }
        _ => Vec::new(),
    }
}

/// The value of A's to put in a list filter of this name.
pub(crate) fn filter_value(name: &str, v: &Victim) -> Option<String> {
    let id = |kind: &str| v.ids.get(kind).cloned();
    match name {
        "agent_id" => id("agents"),
        "user_id" => id("users"),
        "role_id" => id("roles"),
        "resource_id" | "event_id" => id("sessions"),
        "actor_id" => Some(v.agent_key_id.clone()),
        "principal" => id("agents").map(|_| "tenant-admin".to_owned()),
        _ => None,
    }
}
