//! Prefixed, strictly parsed identifiers.
//!
//! The text form follows the TypeID layout: `<prefix>_<26 chars>` where the 26 characters are the
//! 128-bit UUID in Crockford base 32, lowercase, most significant bits first. Because 26 × 5 = 130,
//! the first character carries only three bits and is at most `7`; anything else is rejected, so
//! every UUID has exactly one text form and every accepted text maps back to the same UUID.
//!
//! We write this encoder ourselves (about forty lines) rather than pull a TypeID crate because the
//! parser is on the path of every request and must reject, not repair: no case folding, no
//! `i/l/o` aliases, no hyphens.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const ENCODED_LEN: usize = 26;

/// Why a presented id was refused. The message never echoes the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The prefix is missing or belongs to another kind of id.
    #[error("the id does not start with `{expected}_`")]
    Prefix {
        /// The prefix this kind of id carries.
        expected: &'static str,
    },
    /// The part after the prefix is not 26 lowercase base-32 characters.
    #[error("the id is not a well-formed {expected}_ id")]
    Malformed {
        /// The prefix this kind of id carries.
        expected: &'static str,
    },
}

/// The kind of thing an id names; fixes its prefix.
pub trait IdKind: Copy + Eq + Ord + std::hash::Hash + Send + Sync + 'static {
    /// The prefix, without the underscore.
    const PREFIX: &'static str;
}

/// A UUID tagged with the kind of thing it identifies. See the module doc for the text form.
pub struct PrefixedId<K: IdKind> {
    uuid: Uuid,
    kind: PhantomData<K>,
}

impl<K: IdKind> PrefixedId<K> {
    /// A fresh time-ordered id (UUIDv7): random enough to be unguessable across tenants, ordered
    /// enough that primary-key indexes stay compact and cursors sort by creation time.
    pub fn new() -> Self {
        Self::from_uuid(Uuid::now_v7())
    }

    /// Wraps a UUID read back from the database.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self {
            uuid,
            kind: PhantomData,
        }
    }

    /// The UUID stored in the database.
    pub const fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The prefix of this kind of id.
    pub const fn prefix() -> &'static str {
        K::PREFIX
    }

    /// Strict parse of the text form.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let bytes = text.as_bytes();
        let prefix = K::PREFIX.as_bytes();
        let prefix_ok = bytes.len() > prefix.len()
            && &bytes[..prefix.len()] == prefix
            && bytes[prefix.len()] == b'_';
        if !prefix_ok {
            return Err(IdError::Prefix {
                expected: K::PREFIX,
            });
        }
        let body = &bytes[prefix.len() + 1..];
        let malformed = IdError::Malformed {
            expected: K::PREFIX,
        };
        if body.len() != ENCODED_LEN || body[0] > b'7' {
            return Err(malformed);
        }
        let mut value: u128 = 0;
        for &c in body {
            let digit = decode_digit(c).ok_or(malformed)?;
            value = (value << 5) | u128::from(digit);
        }
        Ok(Self::from_uuid(Uuid::from_u128(value)))
    }
}

fn decode_digit(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

impl<K: IdKind> Default for PrefixedId<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: IdKind> Clone for PrefixedId<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: IdKind> Copy for PrefixedId<K> {}
impl<K: IdKind> PartialEq for PrefixedId<K> {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
    }
}
impl<K: IdKind> Eq for PrefixedId<K> {}
impl<K: IdKind> PartialOrd for PrefixedId<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: IdKind> Ord for PrefixedId<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.uuid.cmp(&other.uuid)
    }
}
impl<K: IdKind> std::hash::Hash for PrefixedId<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.uuid.hash(state);
    }
}

impl<K: IdKind> fmt::Display for PrefixedId<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.uuid.as_u128();
        let mut out = [0u8; ENCODED_LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (ENCODED_LEN - 1 - i);
            *slot = ALPHABET[((value >> shift) & 0x1f) as usize];
        }
        f.write_str(K::PREFIX)?;
        f.write_str("_")?;
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl<K: IdKind> fmt::Debug for PrefixedId<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<K: IdKind> FromStr for PrefixedId<K> {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<K: IdKind> Serialize for PrefixedId<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de, K: IdKind> Deserialize<'de> for PrefixedId<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// In the OpenAPI document every id kind is its own string schema, named `<prefix>_id`, with the
/// exact pattern `parse` accepts.
#[cfg(feature = "openapi")]
impl<K: IdKind> utoipa::PartialSchema for PrefixedId<K> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!(
                "^{}_[0-7][0-9a-hjkmnp-tv-z]{{{}}}$",
                K::PREFIX,
                ENCODED_LEN - 1
            )))
            .description(Some(format!(
                "`{}_` followed by the UUID in 26 lowercase Crockford base-32 characters",
                K::PREFIX
            )))
            .examples([format!("{}_{}", K::PREFIX, "01jd7x5q9r8m3k2h1g0f9e8d7c")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl<K: IdKind> utoipa::ToSchema for PrefixedId<K> {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Owned(format!("{}_id", K::PREFIX))
    }
}

macro_rules! id_kind {
    ($(#[$doc:meta])* $alias:ident, $kind:ident, $prefix:literal) => {
        #[doc = concat!("Marker for ids with the `", $prefix, "_` prefix.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $kind;
        impl IdKind for $kind {
            const PREFIX: &'static str = $prefix;
        }
        $(#[$doc])*
        pub type $alias = PrefixedId<$kind>;
    };
}

id_kind!(
    /// A tenant (an organisation): `tnt_…`.
    TenantId, TenantKind, "tnt"
);
id_kind!(
    /// An agent session, the first tenant-owned resource: `sess_…`.
    SessionId, SessionKind, "sess"
);
id_kind!(
    /// A background job: `job_…`.
    JobId, JobKind, "job"
);
id_kind!(
    /// An API key record (never the key itself): `key_…`.
    ApiKeyId, ApiKeyKind, "key"
);
id_kind!(
    /// An audit event: `evt_…`.
    AuditEventId, AuditEventKind, "evt"
);
id_kind!(
    /// A human user of a tenant: `user_…`.
    UserId, UserKind, "user"
);
id_kind!(
    /// An auth session: one refresh-token family (a login or a long-running agent session):
    /// `asess_…`.
    AuthSessionId, AuthSessionKind, "asess"
);
id_kind!(
    /// An access token (its `jti`): `at_…`.
    AccessTokenId, AccessTokenKind, "at"
);
id_kind!(
    /// One HTTP request or job run, for correlating logs: `req_…`.
    RequestId, RequestKind, "req"
);
id_kind!(
    /// A webhook endpoint of a tenant: `ep_…`.
    EndpointId, EndpointKind, "ep"
);
id_kind!(
    /// A webhook message; its text form is the `webhook-id` header, stable across retries: `msg_…`.
    MessageId, MessageKind, "msg"
);
id_kind!(
    /// One message's delivery to one endpoint: `dlv_…`.
    DeliveryId, DeliveryKind, "dlv"
);
id_kind!(
    /// One delivery attempt (the attempt log): `atmpt_…`.
    AttemptId, AttemptKind, "atmpt"
);
id_kind!(
    /// An agent: a tenant's machine identity: `agt_…`.
    AgentId, AgentKind, "agt"
);
id_kind!(
    /// A role (built-in or custom) of a tenant: `role_…`.
    RoleId, RoleKind, "role"
);
id_kind!(
    /// One principal holding one role: `rasg_…`.
    RoleAssignmentId, RoleAssignmentKind, "rasg"
);
id_kind!(
    /// A tool in a tenant's tool registry: `tool_…`.
    ToolId, ToolKind, "tool"
);
id_kind!(
    /// One call of a tool; its text form is the `webhook-id` of the signed request: `tcall_…`.
    ToolCallId, ToolCallKind, "tcall"
);
id_kind!(
    /// One recorded screening decision about tenant-supplied text: `scr_…`.
    ScreeningId, ScreeningKind, "scr"
);
id_kind!(
    /// An operator key record of the control plane (never the key itself): `opkey_…`.
    OperatorKeyId, OperatorKeyKind, "opkey"
);
id_kind!(
    /// One event of the operator audit log: `opevt_…`.
    OperatorEventId, OperatorEventKind, "opevt"
);

id_kind!(
    /// An OAuth client registered in a tenant; its text form is the `client_id`: `oac_…`.
    OAuthClientId, OAuthClientKind, "oac"
);
id_kind!(
    /// A remembered consent: a user's grant of scopes to an OAuth client: `ogr_…`.
    OAuthGrantId, OAuthGrantKind, "ogr"
);
id_kind!(
    /// A protected resource a tenant registered (RFC 8707, RFC 9728): `ores_…`.
    OAuthResourceId, OAuthResourceKind, "ores"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_has_the_typeid_shape() {
        let id = SessionId::new();
        let text = id.to_string();
        assert!(text.starts_with("sess_"));
        assert_eq!(text.len(), "sess_".len() + 26);
        assert_eq!(SessionId::parse(&text), Ok(id));
    }

    #[test]
    fn known_answer_matches_the_typeid_spec_vectors() {
        // From the TypeID specification's valid.yml: nil, one, and max.
        let nil = TenantId::from_uuid(Uuid::nil());
        assert_eq!(nil.to_string(), "tnt_00000000000000000000000000");
        let one = TenantId::from_uuid(Uuid::from_u128(1));
        assert_eq!(one.to_string(), "tnt_00000000000000000000000001");
        let max = TenantId::from_uuid(Uuid::from_u128(u128::MAX));
        assert_eq!(max.to_string(), "tnt_7zzzzzzzzzzzzzzzzzzzzzzzzz");
        let v7: Uuid = "01890a5d-ac96-774b-bcce-b302099a8057".parse().unwrap();
        assert_eq!(
            TenantId::from_uuid(v7).to_string(),
            "tnt_01h455vb4pex5vsknk084sn02q"
        );
    }

    #[test]
    fn refuses_other_kinds_and_sloppy_spellings() {
        let id = TenantId::new().to_string();
        assert!(matches!(SessionId::parse(&id), Err(IdError::Prefix { .. })));
        let body = &id[4..];
        for bad in [
            format!("TNT_{body}"),
            format!("tnt-{body}"),
            format!("tnt_{}", body.to_uppercase()),
            format!("tnt_{body}0"),
            format!("tnt_{}", &body[1..]),
            format!(" tnt_{body}"),
            format!("tnt_{body} "),
            "tnt_80000000000000000000000000".to_string(),
            "tnt_0000000000000000000000000i".to_string(),
            "tnt_".to_string(),
            "tnt".to_string(),
            String::new(),
        ] {
            assert!(TenantId::parse(&bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn serde_uses_the_text_form_and_rejects_bad_ids() {
        let id = JobId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<JobId>(&json).unwrap(), id);
        let as_session = json.replace("job_", "sess_");
        assert!(serde_json::from_str::<JobId>(&as_session).is_err());
        assert!(serde_json::from_str::<JobId>("42").is_err());
    }

    proptest! {
        #[test]
        fn any_uuid_round_trips(v in any::<u128>()) {
            let id = SessionId::from_uuid(Uuid::from_u128(v));
            prop_assert_eq!(SessionId::parse(&id.to_string()), Ok(id));
        }

        #[test]
        fn parse_never_panics_and_accepts_only_canonical_text(s in "\\PC{0,40}") {
            if let Ok(id) = SessionId::parse(&s) {
                prop_assert_eq!(id.to_string(), s);
            }
        }

        #[test]
        fn near_misses_with_valid_shape_are_canonical(body in "[0-7][0-9a-hjkmnp-tv-z]{25}") {
            let text = format!("sess_{body}");
            let id = SessionId::parse(&text).unwrap();
            prop_assert_eq!(id.to_string(), text);
        }
    }
}
