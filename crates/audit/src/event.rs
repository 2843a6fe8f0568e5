//! The audit event and its canonical encoding (the bytes a leaf hashes).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tree::{leaf_hash, Hash};
use crate::AuditError;

/// Version tag of the canonical encoding; part of every leaf.
pub const ENCODING_VERSION: u64 = 1;

/// Largest serialized `metadata` object, in bytes (the database enforces the same bound).
pub const MAX_METADATA_BYTES: usize = 8192;

/// One audit event, as stored, served and exported.
///
/// Invariant: the text fields hold ids and labels only; `metadata` is a JSON object of at most
/// [`MAX_METADATA_BYTES`] whose writers put no secret in it (the store's constructors take typed
/// values, never a credential).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// `evt_…` id (UUIDv7: time-ordered).
    pub event_id: String,
    /// When it happened: RFC 3339, UTC, microseconds (`2026-12-01T08:00:00.123456Z`).
    pub timestamp: String,
    /// `tnt_…` id of the tenant whose log holds it.
    pub tenant_id: String,
    /// Who acted: a `key_…` id, `system:<component>`, or `anonymous` for failed authentication.
    pub actor_id: String,
    /// `api_key`, `human`, `agent` or `system`.
    pub actor_type: String,
    /// What was done (`session.create`, `auth.failure`, …).
    pub action: String,
    /// What it was done to.
    pub resource_id: Option<String>,
    /// `success`, `failure` or `blocked`.
    pub outcome: String,
    /// The client address, when there was a client.
    pub ip_address: Option<String>,
    /// The client's `User-Agent`, truncated.
    pub user_agent: Option<String>,
    /// The `req_…` id of the request or job run.
    pub request_id: Option<String>,
    /// Who delegated to whom, outermost first, when the actor acted on behalf of another.
    pub delegation: Option<Vec<String>>,
    /// Details (a JSON object, bounded, no secrets).
    pub metadata: Value,
}

/// An event at its place in the tenant's log: what a leaf commits to.
#[derive(Debug, Clone, PartialEq)]
pub struct SequencedEvent<'a> {
    /// Position in the tenant's tree, from 0.
    pub leaf_index: u64,
    /// The event.
    pub event: &'a AuditEvent,
}

impl SequencedEvent<'_> {
    /// The canonical encoding: a JSON object with every field of the event (absent values as
    /// `null`), plus `leaf_index` and `v` ([`ENCODING_VERSION`]); object keys sorted by their
    /// UTF-8 bytes at every depth; no whitespace; strings escaped as serde_json does (`\"`, `\\`,
    /// `\b \f \n \r \t`, other control characters `\u00xx`, everything else literal UTF-8);
    /// integers in decimal; other numbers in serde_json's shortest round-trip form.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, AuditError> {
        let e = self.event;
        if !e.metadata.is_object() {
            return Err(AuditError::InvalidEvent("metadata is not an object".into()));
        }
        let value = serde_json::json!({
            "v": ENCODING_VERSION,
            "leaf_index": self.leaf_index,
            "event_id": e.event_id,
            "timestamp": e.timestamp,
            "tenant_id": e.tenant_id,
            "actor_id": e.actor_id,
            "actor_type": e.actor_type,
            "action": e.action,
            "resource_id": e.resource_id,
            "outcome": e.outcome,
            "ip_address": e.ip_address,
            "user_agent": e.user_agent,
            "request_id": e.request_id,
            "delegation": e.delegation,
            "metadata": e.metadata,
        });
        let mut out = Vec::with_capacity(512);
        write_canonical(&value, &mut out);
        Ok(out)
    }

    /// `H(0x00 ‖ canonical_bytes)`.
    pub fn leaf_hash(&self) -> Result<Hash, AuditError> {
        Ok(leaf_hash(&self.canonical_bytes()?))
    }
}

/// Writes `value` canonically (see [`SequencedEvent::canonical_bytes`]).
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted here, whatever order the map keeps (serde_json's preserve_order feature
            // could be switched on by any crate in the build).
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent {
            event_id: "evt_01".into(),
            timestamp: "2026-12-01T08:00:00.000000Z".into(),
            tenant_id: "tnt_01".into(),
            actor_id: "key_01".into(),
            actor_type: "api_key".into(),
            action: "session.create".into(),
            resource_id: Some("sess_01".into()),
            outcome: "success".into(),
            ip_address: None,
            user_agent: Some("curl/8 \"x\"\n".into()),
            request_id: Some("req_01".into()),
            delegation: None,
            metadata: serde_json::json!({ "b": 1, "a": [true, null, "é"] }),
        }
    }

    #[test]
    fn canonical_bytes_sort_keys_and_bind_the_index() {
        let e = event();
        let bytes = SequencedEvent {
            leaf_index: 3,
            event: &e,
        }
        .canonical_bytes()
        .unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("{\"action\":\"session.create\",\"actor_id\":\"key_01\""));
        assert!(text.contains("\"metadata\":{\"a\":[true,null,\"é\"],\"b\":1}"));
        assert!(text.contains("\"user_agent\":\"curl/8 \\\"x\\\"\\n\""));
        assert!(text.ends_with("\"leaf_index\":3,\"metadata\":{\"a\":[true,null,\"é\"],\"b\":1},\"outcome\":\"success\",\"request_id\":\"req_01\",\"resource_id\":\"sess_01\",\"tenant_id\":\"tnt_01\",\"timestamp\":\"2026-12-01T08:00:00.000000Z\",\"user_agent\":\"curl/8 \\\"x\\\"\\n\",\"v\":1}"));
        // The same event parsed back from JSON with other whitespace hashes the same.
        let reparsed: AuditEvent =
            serde_json::from_str(&serde_json::to_string_pretty(&e).unwrap()).unwrap();
        let at = |e: &AuditEvent, i| {
            SequencedEvent {
                leaf_index: i,
                event: e,
            }
            .leaf_hash()
            .unwrap()
        };
        assert_eq!(at(&e, 3), at(&reparsed, 3));
        assert_ne!(at(&e, 3), at(&e, 4), "the index is part of the leaf");
    }

    #[test]
    fn metadata_must_be_an_object() {
        let mut e = event();
        e.metadata = serde_json::json!([1]);
        assert!(SequencedEvent {
            leaf_index: 0,
            event: &e
        }
        .canonical_bytes()
        .is_err());
    }
}
