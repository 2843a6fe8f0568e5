//! Dynamic client registration (RFC 7591): what a registration request's metadata must be.
//!
//! Pure checks, no I/O: the route (`http::routes::oauth::register`) reads the tenant's settings,
//! applies the caps and stores the client. Redirect URIs are held to exactly the rules of
//! admin-registered ones ([`super::redirect_uri::check_registrable`]: `https`, or `http` on a
//! loopback address for native apps, RFC 8252), and metadata this server does not understand is
//! ignored, as RFC 7591 §2 requires.

use bulkhead_core::ScopeSet;
use bulkhead_store::tenant::oauth::ClientAuthMethod;
use serde_json::Value;

use super::redirect_uri;

/// Largest registration request body (decision: 16 KiB, far above ten redirect URIs and a name).
pub const MAX_BODY: usize = 16 * 1024;

/// The checked metadata of a client to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMetadata {
    /// `client_name`, shown on the consent page.
    pub name: String,
    /// `redirect_uris`, each registrable.
    pub redirect_uris: Vec<String>,
    /// `token_endpoint_auth_method` (default `client_secret_basic`, RFC 7591 §2).
    pub method: ClientAuthMethod,
    /// `grant_types` (default `authorization_code`).
    pub grant_types: Vec<String>,
    /// The scopes asked for, or the tenant's whole ceiling when `scope` is absent.
    pub scopes: ScopeSet,
}

/// A refusal in RFC 7591 §3.2.2 terms, with the reason the audit event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `invalid_redirect_uri` or `invalid_client_metadata`.
    pub error: &'static str,
    /// Said to the client.
    pub description: String,
    /// The class of the refusal, for the audit event.
    pub reason: &'static str,
}

fn metadata_error(reason: &'static str, description: impl Into<String>) -> Refused {
    Refused {
        error: "invalid_client_metadata",
        description: description.into(),
        reason,
    }
}

fn strings(value: &Value, field: &'static str) -> Result<Option<Vec<String>>, Refused> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| metadata_error("malformed", format!("{field} is an array of strings"))),
        Some(_) => Err(metadata_error(
            "malformed",
            format!("{field} is an array of strings"),
        )),
    }
}

fn string<'a>(value: &'a Value, field: &'static str) -> Result<Option<&'a str>, Refused> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(metadata_error("malformed", format!("{field} is a string"))),
    }
}

/// Checks a registration request's body against the tenant's ceiling for self-registered
/// clients.
pub fn check(body: &[u8], ceiling: &ScopeSet) -> Result<ClientMetadata, Refused> {
    if body.len() > MAX_BODY {
        return Err(metadata_error("too_large", "the request is too large"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| metadata_error("malformed", "the body is not a JSON object"))?;
    if !value.is_object() {
        return Err(metadata_error("malformed", "the body is not a JSON object"));
    }
    let redirect_uris = strings(&value, "redirect_uris")?.unwrap_or_default();
    if redirect_uris.is_empty() || redirect_uris.len() > 10 {
        return Err(Refused {
            error: "invalid_redirect_uri",
            description: "give 1 to 10 redirect_uris".into(),
            reason: "redirect_uri_count",
        });
    }
    for uri in &redirect_uris {
        redirect_uri::check_registrable(uri).map_err(|why| Refused {
            error: "invalid_redirect_uri",
            description: why.into(),
            reason: "redirect_uri",
        })?;
    }
    let Some(name) = super::display_name(string(&value, "client_name")?.unwrap_or("")) else {
        return Err(metadata_error(
            "client_name",
            "client_name is required: 1 to 100 characters, none a control or invisible \
             formatting character",
        ));
    };
    let method = match string(&value, "token_endpoint_auth_method")? {
        None | Some("client_secret_basic") => ClientAuthMethod::ClientSecretBasic,
        Some("client_secret_post") => ClientAuthMethod::ClientSecretPost,
        Some("none") => ClientAuthMethod::None,
        Some(_) => {
            return Err(metadata_error(
                "auth_method",
                "token_endpoint_auth_method is none, client_secret_basic or client_secret_post",
            ))
        }
    };
    let grant_types =
        strings(&value, "grant_types")?.unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    if !grant_types.iter().any(|g| g == "authorization_code")
        || grant_types
            .iter()
            .any(|g| g != "authorization_code" && g != "refresh_token")
    {
        return Err(metadata_error(
            "grant_types",
            "grant_types is authorization_code, optionally with refresh_token",
        ));
    }
    let response_types = strings(&value, "response_types")?.unwrap_or_else(|| vec!["code".into()]);
    if response_types.is_empty() || response_types.iter().any(|r| r != "code") {
        return Err(metadata_error("response_types", "response_types is code"));
    }
    let scopes = match string(&value, "scope")? {
        None => ceiling.clone(),
        Some(text) => match crate::service::tokens::parse_scope_param(text) {
            Ok(asked) if !asked.is_empty() && ceiling.is_superset(&asked) => asked,
            _ => {
                return Err(metadata_error(
                    "scope",
                    "a scope is unknown or not open to self-registered clients",
                ))
            }
        },
    };
    Ok(ClientMetadata {
        name: name.to_owned(),
        redirect_uris,
        method,
        grant_types,
        scopes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceiling() -> ScopeSet {
        ScopeSet::parse_all(["sessions:read", "sessions:write"]).unwrap()
    }

    fn refused(body: Value) -> Refused {
        check(body.to_string().as_bytes(), &ceiling()).unwrap_err()
    }

    #[test]
    fn a_public_native_client_registers_with_defaults() {
        let body = serde_json::json!({
            "client_name": "Desktop assistant",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "logo_uri": "https://ignored.example/logo.png",
        });
        let checked = check(body.to_string().as_bytes(), &ceiling()).unwrap();
        assert_eq!(checked.method, ClientAuthMethod::None);
        assert_eq!(checked.scopes, ceiling());
        assert_eq!(checked.grant_types, ["authorization_code"]);
    }

    #[test]
    fn metadata_outside_the_rules_is_refused_with_its_rfc_7591_error() {
        let base = |extra: Value| {
            let mut body = serde_json::json!({
                "client_name": "App", "redirect_uris": ["https://app.example/cb"],
            });
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            body
        };
        for uri in [
            "http://app.example/cb",
            "http://localhost/cb",
            "https://user@app.example/cb",
            "https://app.example/cb#frag",
            "HTTPS://APP.example/cb",
        ] {
            let r = refused(base(serde_json::json!({ "redirect_uris": [uri] })));
            assert_eq!(r.error, "invalid_redirect_uri", "{uri}");
        }
        for extra in [
            serde_json::json!({ "client_name": "" }),
            serde_json::json!({ "client_name": 7 }),
            serde_json::json!({ "token_endpoint_auth_method": "private_key_jwt" }),
            serde_json::json!({ "grant_types": ["client_credentials"] }),
            serde_json::json!({ "response_types": ["token"] }),
            serde_json::json!({ "scope": "keys:manage" }),
            serde_json::json!({ "scope": "no:such" }),
        ] {
            let r = refused(base(extra.clone()));
            assert_eq!(r.error, "invalid_client_metadata", "{extra}");
        }
        let r = check(b"[1]", &ceiling()).unwrap_err();
        assert_eq!(r.error, "invalid_client_metadata");
    }
}
