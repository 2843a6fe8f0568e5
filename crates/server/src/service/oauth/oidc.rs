//! OpenID Connect for the authorization-code flow: the identity scopes, ID tokens and the
//! `userinfo` claims.
//!
//! The identity scopes (`openid`, `profile`, `email`) are not permissions: no role holds them,
//! any client may ask for them, and the user consents to them on the consent page (and may
//! untick them) like any scope. `profile` and `email` mean nothing without `openid` and are
//! dropped without it. They travel beside the permission scopes: on the code and on the
//! remembered consent (migration 0034); a remembered consent covers a request only when it holds
//! the identity scopes asked too.
//!
//! An ID token is issued by the code grant when `openid` was granted (not by a refresh:
//! OpenID Connect Core §12.2 lets the refresh answer omit it, and the client has the user's
//! identity already). `userinfo` answers what the access token's session was granted, as far as
//! its remembered consent still allows it **now** ([`granted_now`]): unticking `email` on the
//! consent hides the email at once, and a wider consent given later (another sign-in that
//! ticked `email`) does not reach a session that was not granted it (review L9).

use bulkhead_auth::id_token::IdClaims;
use bulkhead_core::{TenantId, UserId};
use bulkhead_store::tenant::users::UserRecord;
use serde_json::{json, Map, Value};

use crate::service::tokens::{IssueError, TokenService};

/// The identity scopes a session's tokens hold now: those its code granted (`session`; `None`
/// for a session started before migration 0037, which keeps the earlier rule) that its
/// remembered consent (`consent`) still holds.
pub fn granted_now(consent: &[String], session: Option<&[String]>) -> Identity {
    let consent = Identity::from_names(consent);
    match session {
        Some(granted) => consent.intersection(&Identity::from_names(granted)),
        None => consent,
    }
}

/// `openid`: asks for an ID token and `userinfo`.
pub const OPENID: &str = "openid";
/// Every identity scope, in the order they are stored and shown.
pub const IDENTITY_SCOPES: [&str; 3] = [OPENID, "profile", "email"];
/// Every claim an ID token or `userinfo` may carry.
pub const CLAIMS_SUPPORTED: [&str; 11] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "azp",
    "tenant_id",
    "email",
    "email_verified",
];
/// Longest `nonce` accepted at the authorization endpoint.
pub const MAX_NONCE_LEN: usize = 512;

/// A set of identity scopes. Invariant: without `openid` it is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity(Vec<&'static str>);

impl Identity {
    /// The identity scopes among `names` (others are ignored: they are the caller's business).
    pub fn from_names<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Identity {
        let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_owned()).collect();
        let held: Vec<&'static str> = IDENTITY_SCOPES
            .into_iter()
            .filter(|s| names.iter().any(|n| n == s))
            .collect();
        if held.contains(&OPENID) {
            Identity(held)
        } else {
            Identity::default()
        }
    }

    /// Whether `name` is an identity scope.
    pub fn is_identity_scope(name: &str) -> bool {
        IDENTITY_SCOPES.contains(&name)
    }

    /// Whether `openid` is held (an ID token is due).
    pub fn openid(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `scope` is held.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(&scope)
    }

    /// What both hold.
    pub fn intersection(&self, other: &Identity) -> Identity {
        Identity::from_names(self.0.iter().filter(|s| other.0.contains(*s)))
    }

    /// Whether every scope of `other` is held.
    pub fn is_superset(&self, other: &Identity) -> bool {
        other.0.iter().all(|s| self.0.contains(s))
    }

    /// The text forms, as stored.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The scopes held, in order.
    pub fn names(&self) -> &[&'static str] {
        &self.0
    }
}

/// What an ID token is minted from.
#[derive(Debug)]
pub struct IdTokenFor<'a> {
    /// The tenant.
    pub tenant: TenantId,
    /// Its issuer (`iss`, the same as its access tokens').
    pub issuer: &'a str,
    /// The user (active: the exchange checked).
    pub user: &'a UserRecord,
    /// The client (`aud` and `azp`).
    pub client_id: &'a str,
    /// The identity scopes granted.
    pub identity: &'a Identity,
    /// The authorization request's `nonce`.
    pub nonce: Option<&'a str>,
    /// When the user signed in (seconds since the epoch).
    pub auth_time: i64,
    /// The access token's lifetime, which the ID token shares.
    pub expires_in: i64,
}

/// Signs the ID token of a code exchange.
pub fn id_token(
    tokens: &TokenService,
    now: i64,
    of: &IdTokenFor<'_>,
) -> Result<String, IssueError> {
    let email = of.identity.contains("email");
    let claims = IdClaims {
        iss: of.issuer.to_owned(),
        sub: of.user.id.to_string(),
        aud: of.client_id.to_owned(),
        exp: now + of.expires_in,
        iat: now,
        auth_time: of.auth_time,
        nonce: of.nonce.map(str::to_owned),
        azp: of.client_id.to_owned(),
        tenant_id: of.tenant.to_string(),
        email: email.then(|| of.user.email.clone()),
        // Bulkhead never verifies an address: admins type them in.
        email_verified: email.then_some(false),
    };
    tokens.issue_id_token(&claims)
}

/// The `userinfo` answer for `user` under the identity scopes `identity` (which hold `openid`).
pub fn userinfo(tenant: TenantId, user: &UserRecord, identity: &Identity) -> Value {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user.id));
    claims.insert("tenant_id".into(), json!(tenant));
    if identity.contains("email") {
        claims.insert("email".into(), json!(user.email));
        claims.insert("email_verified".into(), json!(false));
    }
    Value::Object(claims)
}

/// The user a `userinfo` request is about, if its id is a user's.
pub fn user_of(subject: &str) -> Option<UserId> {
    UserId::parse(subject).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_scopes_need_openid() {
        assert!(!Identity::from_names(["email", "profile"]).openid());
        let all = Identity::from_names(["email", "openid", "sessions:read"]);
        assert_eq!(all.to_strings(), ["openid", "email"]);
        let less = all.intersection(&Identity::from_names(["email"]));
        assert!(!less.openid() && less.names().is_empty());
        assert!(all.is_superset(&Identity::from_names(["openid"])));
        assert!(!Identity::from_names(["openid"]).is_superset(&all));
    }
}
