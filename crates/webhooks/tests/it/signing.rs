//! Signatures: the specification's published vector, our own verifier, rotation.

use bulkhead_webhooks::signing::{signed_headers, HEADER_SIGNATURE, TOLERANCE_SECONDS};
use bulkhead_webhooks::{verify, Secret, SignatureError};
use chrono::{TimeZone, Utc};
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let text = include_str!("../vectors/standard_webhooks.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    doc["vectors"].as_array().unwrap().clone()
}

#[test]
fn the_specification_vector_signs_byte_for_byte() {
    for v in vectors() {
        let secret = Secret::parse(v["secret"].as_str().unwrap()).unwrap();
        let signature = secret.sign(
            v["msg_id"].as_str().unwrap(),
            v["timestamp"].as_i64().unwrap(),
            v["payload"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(signature, v["signature"].as_str().unwrap());
    }
}

#[test]
fn the_specification_vector_verifies_within_tolerance_only() {
    for v in vectors() {
        let secret = Secret::parse(v["secret"].as_str().unwrap()).unwrap();
        let ts = v["timestamp"].as_i64().unwrap();
        let body = v["payload"].as_str().unwrap().as_bytes();
        let headers = signed_headers(&[&secret], v["msg_id"].as_str().unwrap(), ts, body);
        assert_eq!(
            headers[HEADER_SIGNATURE].to_str().unwrap(),
            v["signature"].as_str().unwrap()
        );
        let at = Utc.timestamp_opt(ts, 0).unwrap();
        verify(&secret, &headers, body, at).unwrap();
        verify(
            &secret,
            &headers,
            body,
            at + chrono::Duration::seconds(TOLERANCE_SECONDS),
        )
        .unwrap();
        verify(
            &secret,
            &headers,
            body,
            at - chrono::Duration::seconds(TOLERANCE_SECONDS),
        )
        .unwrap();
        for off in [TOLERANCE_SECONDS + 1, -(TOLERANCE_SECONDS + 1)] {
            assert_eq!(
                verify(&secret, &headers, body, at + chrono::Duration::seconds(off)),
                Err(SignatureError::Timestamp)
            );
        }
        let mut tampered = body.to_vec();
        tampered[2] ^= 1;
        assert_eq!(
            verify(&secret, &headers, &tampered, at),
            Err(SignatureError::Mismatch)
        );
        let other = Secret::generate();
        assert_eq!(
            verify(&other, &headers, body, at),
            Err(SignatureError::Mismatch)
        );
    }
}

#[test]
fn during_rotation_both_secrets_sign_and_either_verifies() {
    let old = Secret::generate();
    let new = Secret::generate();
    let now = Utc::now();
    let body = br#"{"type":"x"}"#;
    let headers = signed_headers(&[&new, &old], "msg_1", now.timestamp(), body);
    let sigs: Vec<&str> = headers[HEADER_SIGNATURE]
        .to_str()
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(sigs.len(), 2);
    assert!(sigs.iter().all(|s| s.starts_with("v1,")));
    verify(&old, &headers, body, now).unwrap();
    verify(&new, &headers, body, now).unwrap();
    assert!(verify(&Secret::generate(), &headers, body, now).is_err());
}

#[test]
fn missing_or_garbled_headers_are_refused() {
    let secret = Secret::generate();
    let now = Utc::now();
    let headers = signed_headers(&[&secret], "msg_1", now.timestamp(), b"{}");
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut h = headers.clone();
        h.remove(name);
        assert_eq!(
            verify(&secret, &h, b"{}", now),
            Err(SignatureError::Header(name))
        );
    }
    let mut h = headers.clone();
    h.insert(
        "webhook-signature",
        "v2,abc v1,!!! garbage".parse().unwrap(),
    );
    assert_eq!(
        verify(&secret, &h, b"{}", now),
        Err(SignatureError::Mismatch)
    );
    let mut h = headers;
    h.insert("webhook-timestamp", "12abc".parse().unwrap());
    assert!(verify(&secret, &h, b"{}", now).is_err());
}
