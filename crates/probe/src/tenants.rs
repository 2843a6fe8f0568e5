//! The two tenants of a run: which host a request goes to, what the victim (A) holds and
//! what the attacker (B) holds.

use std::collections::BTreeMap;

use serde_json::Value;

/// Which tenant's host a request goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Host {
    A,
    B,
}

/// A's resources, their ids and markers (and A's tokens: no `Debug`).
#[derive(Default)]
pub(crate) struct Victim {
    /// Resource kind (the collection's path segment) → A's id of it.
    pub(crate) ids: BTreeMap<&'static str, String>,
    /// Every id and marker of A's: none may appear in a response to B.
    pub(crate) secrets: Vec<String>,
    pub(crate) access_token: String,
    pub(crate) refresh_token: Option<String>,
    pub(crate) delegated_token: String,
    pub(crate) agent_key: String,
    pub(crate) agent_key_id: String,
    /// A's protected resource's identifier, and a `client_credentials` token for it.
    pub(crate) resource_identifier: String,
    pub(crate) resource_token: String,
    /// The JSON of each resource after setup, to compare at the end.
    pub(crate) snapshots: Vec<(String, Value)>,
    pub(crate) token_policy: Option<Value>,
    /// What A's browser holds after A's user signed in and consented.
    pub(crate) browser: SignedIn,
}

/// B's extra credentials (no `Debug`: they are secrets).
#[derive(Default)]
pub(crate) struct Attacker {
    pub(crate) out_of_scope_key: String,
    pub(crate) revoked_key: String,
    pub(crate) revoked_token: String,
    pub(crate) expired_key: String,
    pub(crate) after_grace_key: String,
    pub(crate) client_key: String,
    pub(crate) client_key_id: String,
    pub(crate) made_keys: Vec<String>,
}

/// What a browser of A's holds after signing in and consenting (no `Debug`: secrets).
#[derive(Default)]
pub(crate) struct SignedIn {
    pub(crate) email: String,
    pub(crate) password: String,
    /// The signed-in session's cookie value.
    pub(crate) cookie: String,
    /// The consent form's fields as shown (CSRF token, request, ticked scopes).
    pub(crate) consent_form: Vec<(String, String)>,
    /// A code issued to A's client, never exchanged.
    pub(crate) code: String,
    /// The user's role assignment, removed at clean-up.
    pub(crate) assignment: Option<String>,
}
