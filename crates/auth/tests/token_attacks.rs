//! The access-token attack battery at the verifier (issue 4): every hostile shape is refused
//! with the expected reason, and the genuine token is accepted.
#![allow(clippy::unwrap_used)] // test helpers: a failing unwrap is the failure report

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bulkhead_auth::signing::kid_for;
use bulkhead_auth::token::{sign_access_token, verify_access_token, TokenError, MAX_TOKEN_BYTES};
use bulkhead_auth::{
    generate_signing_key, AccessClaims, Expectations, ExpectedIssuer, KeySet, SigningKey,
    VerifyingKey,
};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use serde_json::json;
use sha2::Sha256;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://bulkhead.test";
const AUD: &str = "bulkhead-api";

struct Fixture {
    key: SigningKey,
    keys: KeySet,
    public: [u8; 32],
}

fn fixture() -> Fixture {
    let generated = generate_signing_key();
    let key =
        SigningKey::from_pkcs8(&generated.kid, &generated.pkcs8, &generated.public_key).unwrap();
    let keys = KeySet::new([VerifyingKey::new(&generated.kid, &generated.public_key).unwrap()]);
    Fixture {
        key,
        keys,
        public: generated.public_key,
    }
}

fn claims() -> AccessClaims {
    AccessClaims {
        iss: ISS.into(),
        sub: "agent-1".into(),
        aud: AUD.into(),
        exp: NOW + 900,
        iat: NOW,
        nbf: NOW,
        jti: "at_01h0000000000000000000000".into(),
        client_id: "key_01h0000000000000000000000".into(),
        scope: "sessions:read".into(),
        tenant_id: "tnt_01h0000000000000000000000".into(),
        sub_type: "agent".into(),
        org_id: None,
        resource_prefix: None,
        sid: None,
        act: None,
        delegated_from: Vec::new(),
        allowed_networks: Vec::new(),
        derived_keys: Vec::new(),
    }
}

fn expect() -> Expectations<'static> {
    Expectations {
        issuer: ExpectedIssuer::Exact(ISS),
        audience: AUD,
        now: NOW,
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with a hand-written header and payload and the given signature part.
fn forge(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64(header.as_bytes()),
        b64(payload.as_bytes()),
        signature
    )
}

fn parts(token: &str) -> (String, String, String) {
    let mut it = token.split('.');
    (
        it.next().unwrap().into(),
        it.next().unwrap().into(),
        it.next().unwrap().into(),
    )
}

fn verify(f: &Fixture, token: &str) -> Result<AccessClaims, TokenError> {
    verify_access_token(token, &f.keys, &expect())
}

#[test]
fn the_genuine_token_verifies() {
    let f = fixture();
    let token = sign_access_token(&f.key, &claims());
    assert_eq!(verify(&f, &token).unwrap(), claims());
}

#[test]
fn alg_none_in_every_casing_is_refused() {
    let f = fixture();
    let payload = serde_json::to_string(&claims()).unwrap();
    let kid = f.key.kid();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}"}}"#);
        for sig in ["", "AAAA"] {
            let err = verify(&f, &forge(&header, &payload, sig)).unwrap_err();
            assert!(
                matches!(err, TokenError::Algorithm | TokenError::Signature),
                "{alg}: {err:?}"
            );
        }
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let f = fixture();
    let header = format!(
        r#"{{"alg":"HS256","typ":"at+jwt","kid":"{}"}}"#,
        f.key.kid()
    );
    let payload = serde_json::to_string(&claims()).unwrap();
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    // Both the raw key and its JWK text as the HMAC secret.
    for secret in [f.public.to_vec(), b64(&f.public).into_bytes()] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
        mac.update(input.as_bytes());
        let token = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
        assert_eq!(verify(&f, &token), Err(TokenError::Algorithm));
    }
}

#[test]
fn es256_psychic_zero_signature_is_refused() {
    let f = fixture();
    let header = format!(
        r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#,
        f.key.kid()
    );
    let payload = serde_json::to_string(&claims()).unwrap();
    let token = forge(&header, &payload, &b64(&[0u8; 64]));
    assert_eq!(verify(&f, &token), Err(TokenError::Algorithm));
    // And an all-zero EdDSA signature under the right header.
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#,
        f.key.kid()
    );
    assert_eq!(
        verify(&f, &forge(&header, &payload, &b64(&[0u8; 64]))),
        Err(TokenError::Signature)
    );
}

#[test]
fn unknown_and_injected_kids_are_refused() {
    let f = fixture();
    let payload = serde_json::to_string(&claims()).unwrap();
    let other = generate_signing_key();
    for kid in [
        "".to_owned(),
        "../../../../etc/passwd".to_owned(),
        "' OR '1'='1".to_owned(),
        "x'; DROP TABLE bulkhead.signing_keys; --".to_owned(),
        "/dev/null".to_owned(),
        kid_for(&other.public_key),
        format!("{} ", f.key.kid()),
        f.key.kid().to_uppercase(),
    ] {
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}).to_string();
        assert_eq!(
            verify(&f, &forge(&header, &payload, &b64(&[1u8; 64]))),
            Err(TokenError::UnknownKey),
            "{kid}"
        );
    }
    let header = r#"{"alg":"EdDSA","typ":"at+jwt"}"#;
    assert_eq!(
        verify(&f, &forge(header, &payload, &b64(&[1u8; 64]))),
        Err(TokenError::UnknownKey)
    );
    // Signed with a real key that is simply not published.
    let unpublished = SigningKey::from_pkcs8(&other.kid, &other.pkcs8, &other.public_key).unwrap();
    assert_eq!(
        verify(&f, &sign_access_token(&unpublished, &claims())),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn key_carrying_headers_are_refused() {
    let f = fixture();
    let payload = serde_json::to_string(&claims()).unwrap();
    let kid = f.key.kid();
    let attacker = generate_signing_key();
    let jwk = VerifyingKey::new("evil", &attacker.public_key)
        .unwrap()
        .jwk();
    for extra in [
        json!({"jwk": jwk}),
        json!({"jku": "https://evil.example/jwks.json"}),
        json!({"x5u": "https://evil.example/cert.pem"}),
        json!({"x5c": ["MIIB"]}),
        json!({"crit": ["exp"]}),
        json!({"b64": false}),
    ] {
        let mut header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
        header
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let token = forge(&header.to_string(), &payload, &b64(&[1u8; 64]));
        assert_eq!(
            verify(&f, &token),
            Err(TokenError::ForbiddenHeader),
            "{header}"
        );
    }
    // A token the attacker signed with the key it embedded.
    let attacker_key = SigningKey::from_pkcs8(kid, &attacker.pkcs8, &attacker.public_key).unwrap();
    let (_, _, s) = parts(&sign_access_token(&attacker_key, &claims()));
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jwk": jwk}).to_string();
    assert_eq!(
        verify(&f, &forge(&header, &payload, &s)),
        Err(TokenError::ForbiddenHeader)
    );
}

#[test]
fn stripped_and_altered_tokens_are_refused() {
    let f = fixture();
    let token = sign_access_token(&f.key, &claims());
    let (h, p, s) = parts(&token);
    assert_eq!(verify(&f, &format!("{h}.{p}.")), Err(TokenError::Signature));
    assert_eq!(verify(&f, &format!("{h}.{p}")), Err(TokenError::Malformed));
    assert_eq!(
        verify(&f, &format!("{h}.{p}.{s}.{s}")),
        Err(TokenError::Malformed)
    );
    // Altered payload: more scope, another tenant.
    let mut altered = claims();
    altered.scope = "sessions:read keys:manage".into();
    let forged_payload = b64(serde_json::to_string(&altered).unwrap().as_bytes());
    assert_eq!(
        verify(&f, &format!("{h}.{forged_payload}.{s}")),
        Err(TokenError::Signature)
    );
    // Padding or a non-canonical final character.
    assert_eq!(
        verify(&f, &format!("{h}=.{p}.{s}")),
        Err(TokenError::Malformed)
    );
    let mut flipped = s;
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    assert!(verify(&f, &format!("{h}.{p}.{flipped}")).is_err());
}

#[test]
fn time_issuer_audience_and_type_are_enforced() {
    let f = fixture();
    let check = |change: &dyn Fn(&mut AccessClaims), want: TokenError| {
        let mut c = claims();
        change(&mut c);
        assert_eq!(verify(&f, &sign_access_token(&f.key, &c)), Err(want));
    };
    check(&|c| c.exp = NOW - 31, TokenError::Expired);
    check(
        &|c| {
            c.nbf = NOW + 31;
            c.iat = NOW + 31;
            c.exp = NOW + 900
        },
        TokenError::NotYetValid,
    );
    check(&|c| c.iat = NOW + 31, TokenError::NotYetValid);
    check(&|c| c.aud = "someone-else".into(), TokenError::Audience);
    check(
        &|c| c.iss = "https://evil.example".into(),
        TokenError::Issuer,
    );
    check(&|c| c.exp = NOW + 3 * 3600, TokenError::Lifetime);
    // Within the 30 s leeway both ways.
    let mut c = claims();
    c.exp = NOW - 29;
    c.iat = NOW - 600;
    c.nbf = NOW - 600;
    assert!(verify(&f, &sign_access_token(&f.key, &c)).is_ok());

    // typ: missing, plain JWT, or a refresh-token type.
    let payload = serde_json::to_string(&claims()).unwrap();
    for header in [
        json!({"alg": "EdDSA", "kid": f.key.kid()}),
        json!({"alg": "EdDSA", "typ": "JWT", "kid": f.key.kid()}),
        json!({"alg": "EdDSA", "typ": "rt+jwt", "kid": f.key.kid()}),
    ] {
        assert_eq!(
            verify(&f, &forge(&header.to_string(), &payload, &b64(&[1u8; 64]))),
            Err(TokenError::Type)
        );
    }
}

#[test]
fn missing_exp_duplicates_and_unknown_claims_are_refused() {
    // A key whose PKCS#8 the test keeps, so it can sign arbitrary payload text.
    let generated = generate_signing_key();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&generated.pkcs8).unwrap();
    let keys = KeySet::new([VerifyingKey::new(&generated.kid, &generated.public_key).unwrap()]);
    let header = b64(
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": generated.kid})
            .to_string()
            .as_bytes(),
    );
    let sign = |payload: &str| {
        let input = format!("{header}.{}", b64(payload.as_bytes()));
        let sig = pair.sign(input.as_bytes());
        format!("{input}.{}", b64(sig.as_ref()))
    };
    let good = serde_json::to_value(claims()).unwrap();
    assert!(verify_access_token(&sign(&good.to_string()), &keys, &expect()).is_ok());

    let mut missing_exp = good.clone();
    missing_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        verify_access_token(&sign(&missing_exp.to_string()), &keys, &expect()),
        Err(TokenError::Claims)
    );

    // Duplicate keys: a second, wider scope or another tenant after the signed one.
    let text = good.to_string();
    let dup_scope = format!("{},\"scope\":\"keys:manage\"}}", &text[..text.len() - 1]);
    assert_eq!(
        verify_access_token(&sign(&dup_scope), &keys, &expect()),
        Err(TokenError::Claims)
    );
    let dup_tenant = format!("{},\"tenant_id\":\"tnt_other\"}}", &text[..text.len() - 1]);
    assert_eq!(
        verify_access_token(&sign(&dup_tenant), &keys, &expect()),
        Err(TokenError::Claims)
    );
    let unknown = format!("{},\"admin\":true}}", &text[..text.len() - 1]);
    assert_eq!(
        verify_access_token(&sign(&unknown), &keys, &expect()),
        Err(TokenError::Claims)
    );
    assert_eq!(
        verify_access_token(&sign("[1,2]"), &keys, &expect()),
        Err(TokenError::Claims)
    );

    // Duplicate header members.
    let dup_header = format!(
        r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}","alg":"none"}}"#,
        generated.kid
    );
    let token = format!(
        "{}.{}.{}",
        b64(dup_header.as_bytes()),
        b64(text.as_bytes()),
        b64(&[1; 64])
    );
    assert_eq!(
        verify_access_token(&token, &keys, &expect()),
        Err(TokenError::ForbiddenHeader)
    );
}

#[test]
fn oversize_tokens_are_refused_before_decoding() {
    let f = fixture();
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(verify(&f, &huge), Err(TokenError::TooLarge));
    let mut c = claims();
    c.sub = "x".repeat(MAX_TOKEN_BYTES);
    assert_eq!(
        verify(&f, &sign_access_token(&f.key, &c)),
        Err(TokenError::TooLarge)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_input_never_panics_and_never_verifies(input in ".{0,600}") {
        let f = fixture();
        prop_assert!(verify(&f, &input).is_err());
    }

    #[test]
    fn any_single_byte_change_breaks_the_token(position in 0usize..400, replacement in 0u8..128) {
        let f = fixture();
        let token = sign_access_token(&f.key, &claims());
        let mut bytes = token.into_bytes();
        let position = position % bytes.len();
        prop_assume!(bytes[position] != replacement);
        bytes[position] = replacement;
        if let Ok(mutated) = String::from_utf8(bytes) {
            // Base64url's last character can carry unused bits; canonical decoding refuses
            // those, so every change is refused.
            prop_assert!(verify(&f, &mutated).is_err(), "accepted {mutated}");
        }
    }
}
