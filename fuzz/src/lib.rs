//! Fuzz harnesses, one function per target in `fuzz_targets/`.
//!
//! Each target's body is a single call into this file, so a harness can also be
//! run from an ordinary test (e.g. over the seed corpus) without libFuzzer.

#![forbid(unsafe_code)]

use bulkhead_auth::{find_keys, ApiKey};
use bulkhead_core::id::{
    ApiKeyKind, AuditEventKind, IdKind, JobKind, RequestKind, SessionKind, TenantKind,
};
use bulkhead_core::slug::RESERVED_SLUGS;
use bulkhead_core::{PrefixedId, SessionId, TenantSlug};
use bulkhead_server::http::resolve::{bearer_token, host_signal, HostSignal};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

/// `ApiKey::parse` and `find_keys` on arbitrary input: no panic; whatever parses
/// re-parses to the same key; whatever `find_keys` reports is a valid key at that
/// offset.
pub fn api_key(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(key) = ApiKey::parse(s) {
            assert_eq!(key.expose_secret(), s, "parse must not normalise");
            let again = ApiKey::parse(key.expose_secret()).expect("a parsed key re-parses");
            assert_eq!(again.expose_secret(), key.expose_secret());
            assert_eq!(again.environment(), key.environment());
        }
    }
    let lossy = String::from_utf8_lossy(data);
    let mut previous_end = 0;
    for (offset, key) in find_keys(&lossy) {
        let secret = key.expose_secret();
        assert!(
            offset >= previous_end,
            "keys are reported in order, without overlap"
        );
        assert_eq!(lossy.get(offset..offset + secret.len()), Some(secret));
        assert!(ApiKey::parse(secret).is_ok());
        previous_end = offset + secret.len();
    }
}

/// `PrefixedId::parse` (every id kind) and the `SessionId` serde form on arbitrary input: no
/// panic; whatever parses is canonical (its `Display` form is the input, byte for byte) and
/// parses as exactly one kind; deserialising from JSON agrees with `parse`.
pub fn ids(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let kinds_accepting = [
        parses_canonically::<SessionKind>(text),
        parses_canonically::<TenantKind>(text),
        parses_canonically::<ApiKeyKind>(text),
        parses_canonically::<JobKind>(text),
        parses_canonically::<AuditEventKind>(text),
        parses_canonically::<RequestKind>(text),
    ]
    .into_iter()
    .filter(|&ok| ok)
    .count();
    assert!(
        kinds_accepting <= 1,
        "an id of one kind never parses as another"
    );

    // The input as a JSON document: anything at all, must not panic.
    if let Ok(id) = serde_json::from_str::<SessionId>(text) {
        let json = serde_json::to_string(&id).expect("an id serialises");
        assert_eq!(serde_json::from_str::<SessionId>(&json).ok(), Some(id));
    }
    // The input as a JSON string: the serde form accepts exactly what `parse` accepts.
    let quoted = serde_json::to_string(text).expect("a str serialises");
    assert_eq!(
        serde_json::from_str::<SessionId>(&quoted).ok(),
        SessionId::parse(text).ok()
    );
}

/// Whether `text` parses as a `K` id; if it does, asserts the parse was canonical.
fn parses_canonically<K: IdKind>(text: &str) -> bool {
    match PrefixedId::<K>::parse(text) {
        Ok(id) => {
            assert_eq!(
                id.to_string(),
                text,
                "parse accepts only the canonical form"
            );
            assert_eq!(PrefixedId::<K>::from_uuid(id.uuid()), id);
            true
        }
        Err(_) => false,
    }
}

/// `TenantSlug::parse` on arbitrary input: no panic; whatever parses is the input unchanged and
/// satisfies the slug invariant; the serde form accepts exactly what `parse` accepts.
pub fn slug(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = TenantSlug::parse(text);
    if let Ok(slug) = &parsed {
        let t = slug.as_str();
        assert_eq!(t, text, "parse must not normalise");
        assert_eq!(slug.to_string(), text);
        assert_slug_invariant(t);
    }
    let quoted = serde_json::to_string(text).expect("a str serialises");
    assert_eq!(
        serde_json::from_str::<TenantSlug>(&quoted).ok(),
        parsed.ok()
    );
}

/// The documented `TenantSlug` invariant, written out independently of the parser.
fn assert_slug_invariant(t: &str) {
    let bytes = t.as_bytes();
    assert!((3..=48).contains(&bytes.len()), "length {}", bytes.len());
    assert!(
        bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "alphabet"
    );
    assert!(bytes[0].is_ascii_lowercase(), "starts with a letter");
    assert!(!t.ends_with('-'), "no trailing hyphen");
    assert!(!t.contains("--"), "no double hyphen");
    assert!(!RESERVED_SLUGS.contains(&t), "not reserved");
}

/// The base domain the `edge` harness resolves hosts under.
const BASE_DOMAIN: &str = "bulkhead.test";

/// The edge parsers, `host_signal` and `bearer_token`. The input is split at its first NUL:
/// before it a `Host` (lossily decoded), after it the bytes of an `Authorization` header (no NUL:
/// no header). No panic; a tenant slug is reported exactly for `<slug>.bulkhead.test` (any case,
/// optional `:port`, optional trailing dots); a token only from one `Bearer ` header.
pub fn edge(data: &[u8]) {
    let (host, authorization) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };

    let host = String::from_utf8_lossy(host);
    let signal = host_signal(&host, BASE_DOMAIN);
    let normalised = normalised_host(&host);
    let expected_label = normalised
        .strip_suffix(BASE_DOMAIN)
        .and_then(|rest| rest.strip_suffix('.'));
    match &signal {
        HostSignal::Slug(slug) => {
            assert_eq!(normalised, format!("{slug}.{BASE_DOMAIN}"));
            assert_slug_invariant(slug.as_str());
        }
        HostSignal::Invalid => {
            let label = expected_label.expect("Invalid only for hosts under the base domain");
            assert!(TenantSlug::parse(label).is_err(), "a valid label is a Slug");
        }
        HostSignal::None => assert_eq!(expected_label, None, "{normalised:?} is under the base"),
    }

    let mut headers = HeaderMap::new();
    let Some(value) = authorization.and_then(|bytes| HeaderValue::from_bytes(bytes).ok()) else {
        assert_eq!(bearer_token(&headers), None, "no header, no token");
        return;
    };
    headers.insert(AUTHORIZATION, value.clone());
    if let Some(token) = bearer_token(&headers) {
        assert!(!token.is_empty(), "an empty token is no token");
        assert!(
            !token.starts_with(' '),
            "separating spaces are not part of the token"
        );
        let header = value.as_bytes();
        assert!(
            header.len() > 7 && header[..7].eq_ignore_ascii_case(b"bearer "),
            "a token only from the Bearer scheme"
        );
        assert!(
            header.ends_with(token.as_bytes()),
            "the token is the end of the header"
        );
    }
    headers.append(AUTHORIZATION, value);
    assert_eq!(
        bearer_token(&headers),
        None,
        "two Authorization headers: no token"
    );
}

/// Reference for the host normalisation `host_signal` documents: ASCII-lowercased, a `:<digits>`
/// port removed (never from a `[` IPv6 literal), then trailing dots removed.
fn normalised_host(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    let without_port = match lower.rsplit_once(':') {
        Some((name, port))
            if !lower.starts_with('[') && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name
        }
        _ => lower.as_str(),
    };
    without_port.trim_end_matches('.').to_owned()
}

/// `Namespace::parse` (resource namespaces and the prefixes credentials are confined to) on
/// arbitrary input: no panic; whatever parses is the input unchanged and satisfies the module's
/// invariant, written out here independently; the serde form accepts exactly what `parse`
/// accepts; containment is by whole segments. The input is split at its first NUL into a
/// prefix and a namespace to check containment of.
pub fn namespace(data: &[u8]) {
    use bulkhead_core::Namespace;
    let (first, second) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };
    let parse = |bytes: &[u8]| -> Option<(String, Option<Namespace>)> {
        let text = std::str::from_utf8(bytes).ok()?;
        let parsed = Namespace::parse(text).ok();
        if let Some(ns) = &parsed {
            assert_eq!(ns.as_str(), text, "parse must not normalise");
            assert_namespace_invariant(text);
            assert!(ns.contains(ns), "a namespace contains itself");
        }
        let quoted = serde_json::to_string(text).expect("a str serialises");
        assert_eq!(
            serde_json::from_str::<Namespace>(&quoted).ok(),
            parsed,
            "serde accepts exactly what parse accepts"
        );
        Some((text.to_owned(), parsed))
    };
    let Some((_, prefix)) = parse(first) else {
        return;
    };
    let Some((_, Some(inner))) = second.and_then(parse) else {
        return;
    };
    let Some(prefix) = prefix else {
        return;
    };
    let (p, i) = (prefix.as_str(), inner.as_str());
    let by_segments = i == p || i.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'));
    assert_eq!(prefix.contains(&inner), by_segments, "{p:?} contains {i:?}");
    if prefix.contains(&inner) && inner.contains(&prefix) {
        assert_eq!(prefix, inner, "containment both ways is equality");
    }
}

/// The `Namespace` invariant of `core/src/prefix.rs`, written out independently of the parser.
fn assert_namespace_invariant(text: &str) {
    let segments: Vec<&str> = text.split('/').collect();
    assert!((1..=8).contains(&segments.len()), "1 to 8 segments");
    for segment in segments {
        let b = segment.as_bytes();
        assert!((1..=63).contains(&b.len()), "segment length {}", b.len());
        assert!(
            b[0].is_ascii_lowercase() || b[0].is_ascii_digit(),
            "segment start"
        );
        assert!(
            b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c)),
            "segment alphabet"
        );
        assert!(segment != "." && segment != "..", "no dot segments");
    }
}

/// Scope strings, as an OAuth `scope` parameter (`parse_scope_param`) and as a JSON list of
/// names (`ScopeSet::parse_all`, what `POST /v1/api-keys` takes): no panic; a parsed set holds
/// exactly the named grants (fixed scopes, `tools:call:<tool>`, `tools:call:*`), and round-trips
/// through its text form; one unknown name refuses the whole set.
pub fn scopes(data: &[u8]) {
    use bulkhead_core::{Scope, ScopeSet, ToolName};
    use bulkhead_server::service::tokens::parse_scope_param;

    /// What a name grants, decided here independently of the parser.
    enum Grant {
        Fixed(Scope),
        AllTools,
        Tool(ToolName),
    }
    fn grant(name: &str) -> Option<Grant> {
        if let Ok(scope) = Scope::parse(name) {
            return Some(Grant::Fixed(scope));
        }
        match name.strip_prefix("tools:call:") {
            Some("*") => Some(Grant::AllTools),
            Some(tool) => ToolName::parse(tool).ok().map(Grant::Tool),
            None => None,
        }
    }
    fn holds(set: &ScopeSet, grant: &Grant) -> bool {
        match grant {
            Grant::Fixed(scope) => set.contains(*scope),
            Grant::AllTools => set.calls_all_tools(),
            Grant::Tool(tool) => set.may_call_tool(tool),
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let names: Vec<&str> = text.split(' ').filter(|s| !s.is_empty()).collect();
    let grants: Option<Vec<Grant>> = names.iter().map(|n| grant(n)).collect();
    match parse_scope_param(text) {
        Ok(set) => {
            let grants = grants.expect("an unknown scope was accepted");
            for scope in set.iter() {
                assert!(names.contains(&scope.as_str()), "{scope} was not asked for");
            }
            if set.calls_all_tools() {
                assert!(names.contains(&"tools:call:*"), "tools:call:* was not asked for");
            }
            for tool in set.callable_tools() {
                let name = format!("tools:call:{}", tool.as_str());
                assert!(names.contains(&name.as_str()), "{name} was not asked for");
            }
            for g in &grants {
                assert!(holds(&set, g), "an asked-for grant is missing");
            }
            assert_eq!(ScopeSet::parse_all(set.to_strings()).ok(), Some(set));
        }
        Err(_) => assert!(grants.is_none(), "known scopes refused"),
    }
    if let Ok(list) = serde_json::from_str::<Vec<String>>(text) {
        let known = list.iter().all(|n| grant(n).is_some());
        assert_eq!(ScopeSet::parse_all(&list).is_ok(), known);
    }
}

/// Standard Webhooks verification (`bulkhead_webhooks::verify`), what a receiver runs on the
/// `webhook-id`, `webhook-timestamp` and `webhook-signature` headers of every request it gets,
/// and the `whsec_` secret parser. The input is split at NULs: secret text, id, timestamp,
/// signature header, body. No panic; a forged signature never verifies; the signature `sign`
/// makes for the same id, timestamp and body always does, among any other candidates.
pub fn webhook_signature(data: &[u8]) {
    use bulkhead_webhooks::signing::{verify, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
    use bulkhead_webhooks::Secret;
    use http::{HeaderMap, HeaderValue};
    use std::sync::OnceLock;

    static SECRET: OnceLock<Secret> = OnceLock::new();
    let fixed = SECRET.get_or_init(|| Secret::from_bytes(&[7u8; 32]).expect("32 bytes"));
    let mut parts = data.splitn(5, |&b| b == 0);
    let secret_text = parts.next().unwrap_or_default();
    let id = parts.next().unwrap_or_default();
    let timestamp = parts.next().unwrap_or_default();
    let signature = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();

    if let Ok(text) = std::str::from_utf8(secret_text) {
        if let Ok(secret) = Secret::parse(text) {
            let again = Secret::parse(&secret.expose_text()).expect("a parsed secret re-parses");
            assert_eq!(again.expose_bytes(), secret.expose_bytes());
        }
    }

    let now = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("a time");
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (HEADER_ID, id),
        (HEADER_TIMESTAMP, timestamp),
        (HEADER_SIGNATURE, signature),
    ] {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    }
    // The forger does not know the fixed secret: nothing it sends verifies.
    let forged = verify(fixed, &headers, body, now);
    assert!(forged.is_err(), "a signature verified without the secret");

    // The honest signature for the input's id and body, at `now`, verifies beside any others.
    let Ok(id_text) = std::str::from_utf8(id) else {
        return;
    };
    // Header text a receiver can read as a string: visible ASCII (verify refuses the rest, as
    // `to_str` does; Bulkhead's own ids are ASCII).
    if id_text.is_empty() || !id_text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return;
    }
    let honest = fixed.sign(id_text, now.timestamp(), body);
    let mut candidates = String::from_utf8_lossy(signature).into_owned();
    candidates.retain(|c| c.is_ascii_graphic() || c == ' ');
    let header = format!("{candidates} {honest}");
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_ID, HeaderValue::from_str(id_text).expect("checked"));
    headers.insert(HEADER_TIMESTAMP, HeaderValue::from(now.timestamp()));
    headers.insert(
        HEADER_SIGNATURE,
        HeaderValue::from_str(&header).expect("ascii"),
    );
    assert_eq!(verify(fixed, &headers, body, now), Ok(()));
}

/// The custom headers a tenant may put on its webhook endpoint (`check_custom_headers`, run on
/// the JSON `headers` object of `POST`/`PATCH /v1/webhooks/endpoints`): no panic; whatever is
/// accepted is a valid header map of at most 20 entries, none of them a name Bulkhead refuses.
pub fn webhook_headers(data: &[u8]) {
    use bulkhead_webhooks::headers::{check_custom_headers, MAX_HEADERS, MAX_VALUE_LEN};
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data)
    else {
        return;
    };
    if let Ok(headers) = check_custom_headers(&map) {
        assert!(headers.len() <= MAX_HEADERS);
        assert_eq!(
            headers.len(),
            map.len(),
            "names are unique after lowercasing"
        );
        for (name, value) in &headers {
            let name = name.as_str();
            assert!(!name.starts_with("webhook-"), "{name} is Bulkhead's");
            for refused in [
                "authorization",
                "host",
                "content-length",
                "transfer-encoding",
                "cookie",
            ] {
                assert_ne!(name, refused);
            }
            assert!(value.len() <= MAX_VALUE_LEN);
        }
    }
}

/// The JSON bodies of the main resources, deserialized with the very types the handlers use
/// (sessions, API keys, webhook endpoints and messages, the key and token policies, login): no
/// panic on any input, and the strict types refuse what they must: a body with an unknown
/// member is refused by every one of them, and so is every JSON value but an object or an
/// array.
pub fn api_bodies(data: &[u8]) {
    use bulkhead_server::http::routes::{api_keys, auth, sessions, webhooks};
    use bulkhead_store::tenant::tokens::TokenPolicy;

    fn accepts<T: serde::de::DeserializeOwned>(data: &[u8]) -> bool {
        serde_json::from_slice::<T>(data).is_ok()
    }
    let results = [
        accepts::<sessions::CreateSession>(data),
        accepts::<sessions::UpdateSession>(data),
        accepts::<api_keys::CreateKey>(data),
        accepts::<api_keys::UpdateKey>(data),
        accepts::<api_keys::RotateKey>(data),
        accepts::<api_keys::RevokeAll>(data),
        accepts::<api_keys::PutPolicy>(data),
        accepts::<webhooks::CreateEndpoint>(data),
        accepts::<webhooks::UpdateEndpoint>(data),
        accepts::<webhooks::RotateSecret>(data),
        accepts::<webhooks::deliveries::Recover>(data),
        accepts::<webhooks::deliveries::PublishMessage>(data),
        accepts::<auth::LoginRequest>(data),
        accepts::<TokenPolicy>(data),
    ];
    // Every body type is an object with `deny_unknown_fields`: a member none of them knows
    // makes every one refuse.
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data) {
        if map.contains_key("__unknown_member__") {
            assert!(
                results.iter().all(|ok| !ok),
                "an unknown member was accepted"
            );
        }
    } else if !matches!(
        serde_json::from_slice::<serde_json::Value>(data),
        Ok(serde_json::Value::Array(_))
    ) {
        // serde also reads a struct from a JSON array of its fields in order (known, see
        // docs/openapi.md); anything else that is not an object is refused.
        assert!(
            results.iter().all(|ok| !ok),
            "a body that is not a JSON object was accepted"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// A harness: what a fuzz target calls with each input.
    type Harness = fn(&[u8]);

    /// Every fuzz target, by name, with its harness.
    const TARGETS: &[(&str, Harness)] = &[
        ("api_key", super::api_key),
        ("ids", super::ids),
        ("slug", super::slug),
        ("edge", super::edge),
        ("egress_url", super::egress_url),
        ("audit_export", super::audit_export),
        ("access_token", super::access_token),
        ("screening", super::screening),
        ("namespace", super::namespace),
        ("scopes", super::scopes),
        ("webhook_signature", super::webhook_signature),
        ("webhook_headers", super::webhook_headers),
        ("api_bodies", super::api_bodies),
    ];

    fn corpus_dir(target: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target)
    }

    fn read_seed(target: &str, name: &str) -> Vec<u8> {
        std::fs::read(corpus_dir(target).join(name)).expect("seed")
    }

    /// Runs every harness over its seed corpus, so `cargo test` here (on stable)
    /// catches a harness that panics on its own seeds.
    #[test]
    fn seed_corpus() {
        for &(target, harness) in TARGETS {
            let mut seen = 0;
            for entry in std::fs::read_dir(corpus_dir(target)).expect("corpus dir") {
                let path = entry.expect("entry").path();
                let data = std::fs::read(&path).expect("read seed");
                harness(&data);
                seen += 1;
            }
            assert!(seen >= 3, "{target}: only {seen} seeds");
        }
    }

    /// Every `[[bin]]` in Cargo.toml is a target above, with a seed corpus.
    #[test]
    fn every_target_has_a_harness_and_a_corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .expect("fuzz_targets dir")
            .map(|entry| {
                let path = entry.expect("entry").path();
                path.file_stem()
                    .expect("stem")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        found.sort();
        let mut known: Vec<String> = TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect();
        known.sort();
        assert_eq!(found, known);
        for (target, _) in TARGETS {
            assert!(corpus_dir(target).is_dir(), "corpus/{target}");
        }
    }

    #[test]
    fn id_seeds_are_what_their_names_say() {
        let read = |name: &str| String::from_utf8(read_seed("ids", name)).expect("utf-8");
        assert!(bulkhead_core::SessionId::parse(&read("valid_session")).is_ok());
        assert!(bulkhead_core::TenantId::parse(&read("max_tenant")).is_ok());
        assert!(bulkhead_core::ApiKeyId::parse(&read("valid_api_key_id")).is_ok());
        assert!(bulkhead_core::TenantId::parse(&read("overflow_tenant")).is_err());
        assert!(bulkhead_core::SessionId::parse(&read("uppercase_session")).is_err());
        assert!(serde_json::from_str::<bulkhead_core::SessionId>(&read("json_session")).is_ok());
    }

    #[test]
    fn slug_seeds_are_what_their_names_say() {
        let parse = |name: &str| {
            let text = String::from_utf8(read_seed("slug", name)).expect("utf-8");
            bulkhead_core::TenantSlug::parse(&text).map(|_| ())
        };
        use bulkhead_core::SlugError;
        assert_eq!(parse("valid"), Ok(()));
        assert_eq!(parse("valid_max_len"), Ok(()));
        assert_eq!(parse("punycode"), Err(SlugError::Hyphen));
        assert_eq!(parse("trailing_hyphen"), Err(SlugError::Hyphen));
        assert_eq!(parse("leading_digit"), Err(SlugError::LeadingDigit));
        assert!(matches!(parse("reserved"), Err(SlugError::Reserved(_))));
    }

    #[test]
    fn edge_seeds_are_what_their_names_say() {
        use bulkhead_server::http::resolve::{host_signal, HostSignal};
        let split = |name: &str| {
            let data = read_seed("edge", name);
            let nul = data.iter().position(|&b| b == 0);
            let host = String::from_utf8_lossy(&data[..nul.unwrap_or(data.len())]).into_owned();
            let auth = nul.map(|i| data[i + 1..].to_vec());
            (host, auth)
        };
        let (host, auth) = split("valid");
        assert!(matches!(
            host_signal(&host, "bulkhead.test"),
            HostSignal::Slug(_)
        ));
        assert_eq!(auth.as_deref(), Some(&b"Bearer abc"[..]));
        let (host, _) = split("uppercase_trailing_dot");
        assert!(matches!(
            host_signal(&host, "bulkhead.test"),
            HostSignal::Slug(_)
        ));
        let (host, _) = split("reserved_basic");
        assert_eq!(host_signal(&host, "bulkhead.test"), HostSignal::Invalid);
        let (host, _) = split("ipv6_empty_bearer");
        assert_eq!(host_signal(&host, "bulkhead.test"), HostSignal::None);
        let (host, auth) = split("nested_no_header");
        assert_eq!(host_signal(&host, "bulkhead.test"), HostSignal::Invalid);
        assert_eq!(auth, None);
    }

    #[test]
    fn seeds_are_what_their_names_say() {
        let read = |name: &str| String::from_utf8(read_seed("api_key", name)).expect("utf-8");
        assert!(bulkhead_auth::ApiKey::parse(&read("valid_test_key")).is_ok());
        assert_eq!(
            bulkhead_auth::ApiKey::parse(&read("bad_checksum_key")).map(|_| ()),
            Err(bulkhead_auth::KeyFormatError::Checksum)
        );
        assert!(read("empty").is_empty());
    }
}

/// The access-token verifier, the refresh-token parser and the unverified claims reader on
/// arbitrary input: no panic, and nothing but the one genuine token verifies.
pub fn access_token(data: &[u8]) {
    use bulkhead_auth::token::{sign_access_token, unverified_claims, verify_access_token};
    use bulkhead_auth::{
        AccessClaims, Expectations, ExpectedIssuer, KeySet, RefreshToken, SigningKey, VerifyingKey,
    };
    use std::sync::OnceLock;

    static FIXTURE: OnceLock<(KeySet, String)> = OnceLock::new();
    let (keys, genuine) = FIXTURE.get_or_init(|| {
        let generated = bulkhead_auth::generate_signing_key();
        let signer = SigningKey::from_pkcs8(&generated.kid, &generated.pkcs8, &generated.public_key)
            .expect("fresh key loads");
        let keys = KeySet::new([
            VerifyingKey::new(&generated.kid, &generated.public_key).expect("public key")
        ]);
        let claims = AccessClaims {
            iss: "https://bulkhead.test".into(),
            sub: "agent".into(),
            aud: "bulkhead".into(),
            exp: 2_000_000_900,
            iat: 2_000_000_000,
            nbf: 2_000_000_000,
            jti: "at_01h0000000000000000000000".into(),
            client_id: "key".into(),
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
        };
        let token = sign_access_token(&signer, &claims);
        (keys, token)
    });
    let expect = Expectations {
        issuer: ExpectedIssuer::Exact("https://bulkhead.test"),
        audience: "bulkhead",
        now: 2_000_000_100,
    };
    let text = String::from_utf8_lossy(data);
    let verified = verify_access_token(&text, keys, &expect);
    assert_eq!(verified.is_ok(), text == genuine.as_str(), "only the genuine token verifies");
    let _ = unverified_claims(&text);
    if let Ok(token) = RefreshToken::parse(&text) {
        assert_eq!(token.expose_secret(), text, "parse must not normalise");
    }
}

/// The egress URL and address policy on arbitrary input: no panic; whatever is accepted has a
/// host that passes the host rules, no userinfo, an allowed scheme and port; the address rules
/// hold on any 4 or 16 bytes, and an address the policy accepts embeds no denied IPv4.
pub fn egress_url(data: &[u8]) {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use bulkhead_webhooks::egress::{embedded_ipv4, special_purpose};
    use bulkhead_webhooks::EgressPolicy;

    let policy = EgressPolicy {
        allow_http: true,
        allowed_ports: vec![443..=443, 8443..=8443],
        platform_domains: vec!["bulkhead.example".into()],
        ..EgressPolicy::default()
    };
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(checked) = policy.check_url(text) {
            let url = checked.url();
            assert!(matches!(url.scheme(), "https" | "http"));
            assert!(url.username().is_empty() && url.password().is_none());
            assert!(matches!(url.port_or_known_default(), Some(443 | 8443)));
            match url.host() {
                Some(url::Host::Ipv4(ip)) => assert!(special_purpose(IpAddr::V4(ip)).is_none()),
                Some(url::Host::Ipv6(ip)) => assert!(special_purpose(IpAddr::V6(ip)).is_none()),
                Some(url::Host::Domain(name)) => assert!(policy.check_name(name).is_ok()),
                None => panic!("accepted a URL without a host"),
            }
        }
    }
    if let Some(bytes) = data.get(..16) {
        let mut b = [0u8; 16];
        b.copy_from_slice(bytes);
        let v6 = Ipv6Addr::from(b);
        if policy.check_ip(IpAddr::V6(v6)).is_ok() {
            if let Some(v4) = embedded_ipv4(v6) {
                assert!(special_purpose(IpAddr::V4(v4)).is_none());
            }
        }
    }
    if let Some(bytes) = data.get(..4) {
        let v4 = Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
        let _ = policy.check_ip(IpAddr::V4(v4));
    }
}

/// An export line or checkpoint from arbitrary input: parsing and verifying never panic; a line
/// that parses serializes to a line that parses to the same value; the verifier takes any lines.
pub fn audit_export(data: &[u8]) {
    use bulkhead_audit::export::{parse_line, ExportVerifier};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(line) = parse_line(text) {
        let again = serde_json::to_string(&line).expect("a parsed line serializes");
        assert_eq!(parse_line(&again).expect("and parses again"), line);
    }
    if let Ok(checkpoint) = serde_json::from_str::<bulkhead_audit::SignedCheckpoint>(text) {
        let _ = checkpoint.checkpoint.signed_text();
    }
    let key = bulkhead_audit::LogSigningKey::from_config_str(
        "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    )
    .expect("fixed key");
    let mut verifier = ExportVerifier::new(key.public().clone());
    for line in text.lines() {
        if verifier.push_line(line).is_err() {
            return;
        }
    }
    let _ = verifier.finish();
}

/// Content screening on arbitrary text, every field kind and policy: no panic; rule ids sorted
/// and unique; a refusal keeps no text; kept text is within the field's limit and carries no
/// invisible character; clean text is a fixed point; sanitised text screens clean.
pub fn screening(data: &[u8]) {
    use bulkhead_screening::{FieldKind, Policy, Screener, Verdict};
    use std::sync::OnceLock;

    static SCREENER: OnceLock<Screener> = OnceLock::new();
    let screener = SCREENER.get_or_init(|| Screener::builtin().expect("built-in rules load"));
    let text = String::from_utf8_lossy(data);
    for field in [
        FieldKind::ToolName,
        FieldKind::ToolDescription,
        FieldKind::SchemaText,
        FieldKind::SessionTitle,
        FieldKind::SystemPrompt,
        FieldKind::ToolOutput,
    ] {
        for policy in Policy::ALL {
            let out = screener.screen(field, &text, policy);
            assert!(out.rules.windows(2).all(|w| w[0] < w[1]), "rules sorted, unique");
            assert_eq!(out.verdict == Verdict::Rejected, out.text.is_none());
            assert_eq!(out.verdict == Verdict::Clean, out.rules.is_empty(), "clean means no rule matched");
            let Some(kept) = out.text else { continue };
            assert!(kept.chars().count() <= screener.limit(field), "kept text within the limit");
            let again = screener.screen(field, &kept, Policy::Reject);
            assert!(
                !again.rules.iter().any(|r| r.starts_with("invisible.") && r != "invisible.selector-run"),
                "kept text has no invisible character: {:?}",
                again.rules
            );
            match out.verdict {
                Verdict::Clean => {
                    assert_eq!(again.verdict, Verdict::Clean, "clean text stays clean");
                    assert_eq!(again.text.as_deref(), Some(kept.as_str()), "NFKC is idempotent");
                }
                Verdict::Sanitized => assert_eq!(again.verdict, Verdict::Clean, "sanitised text is clean"),
                _ => {}
            }
        }
    }
}

/// Tenant JSON Schemas under the shipped bounds (`bulkhead_schema`): the bytes are a corpus case
/// (schema and input, as in `crates/schema/corpus/`) or a bare schema tried on a few inputs.
/// Compiling and evaluating must never panic, and each finishes within its budget: an accepted
/// schema's validation either answers or is refused as too costly, never loops (libFuzzer's
/// timeout catches a stall, its RSS limit a blow-up).
pub fn schema(data: &[u8]) {
    use bulkhead_schema::corpus::Case;
    use bulkhead_schema::{BoundedSchema, Limits};
    use serde_json::{json, Value};

    let (schema, inputs) = match Case::parse(data) {
        Some(case) => (case.schema, vec![case.input]),
        None => {
            let Ok(schema) = serde_json::from_slice::<Value>(data) else {
                return;
            };
            let mut nested = json!({ "x": "s" });
            for _ in 0..32 {
                nested = json!({ "x": nested, "a": [nested.clone()] });
                if nested.to_string().len() > 64 * 1024 {
                    break;
                }
            }
            let inputs = vec![
                json!({ "x": "s" }),
                json!({ "x": 1, "y": [1, 2, 3], "z": { "a": null } }),
                json!({ "x": "ab".repeat(20_000) }),
                nested,
            ];
            (schema, inputs)
        }
    };
    let limits = Limits::default();
    if let Ok(compiled) = BoundedSchema::compile(&schema, &limits) {
        for input in &inputs {
            if let Ok(errors) = compiled.validate(input, 5) {
                assert!(errors.len() <= 5);
            }
        }
    }
}
