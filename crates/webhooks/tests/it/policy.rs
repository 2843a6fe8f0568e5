//! The URL and address policy on hostile input. Pure: nothing here opens a connection; names
//! resolve through a fixed map.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use bulkhead_webhooks::egress::{embedded_ipv4, special_purpose};

#[test]
fn embedded_addresses_are_extracted() {
    let v4: Ipv4Addr = "169.254.169.254".parse().unwrap();
    for v6 in embeddings(v4) {
        assert_eq!(embedded_ipv4(v6), Some(v4), "{v6}");
    }
}
use bulkhead_webhooks::{EgressError, EgressPolicy, GuardedResolver, StaticResolver};
use proptest::prelude::*;

fn policy() -> EgressPolicy {
    EgressPolicy {
        // http allowed here so each URL is judged on its host and address, not its scheme.
        allow_http: true,
        allowed_ports: vec![80..=80, 443..=443],
        platform_domains: vec!["bulkhead.example.com".into()],
        allow: Vec::new(),
        deny: Vec::new(),
    }
}

fn resolver() -> StaticResolver {
    let r = StaticResolver::new();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    r.insert("example.com", vec![ip("93.184.215.14")]);
    r.insert("hooks.partner.example", vec![ip("2606:4700::1111")]);
    r.insert("169.254.169.254.nip.io", vec![ip("169.254.169.254")]);
    r.insert("metadata.attacker.example", vec![ip("169.254.169.254")]);
    r.insert(
        "mixed.attacker.example",
        vec![ip("93.184.215.14"), ip("10.0.0.1")],
    );
    r.insert("mapped.attacker.example", vec![ip("::ffff:127.0.0.1")]);
    r.insert("nat64.attacker.example", vec![ip("64:ff9b::a9fe:a9fe")]);
    r.insert("ula.attacker.example", vec![ip("fd00::1")]);
    r.insert("zero.attacker.example", vec![ip("0.0.0.0")]);
    r.insert("empty.attacker.example", vec![]);
    r
}

/// The whole verdict a delivery would get: URL, then (for names) every resolved address.
async fn judge(policy: &EgressPolicy, url: &str) -> Result<(), EgressError> {
    let checked = policy.check_url(url)?;
    if let Some(url::Host::Domain(name)) = checked.url().host() {
        let guard = GuardedResolver::new(Arc::new(policy.clone()), Arc::new(resolver()));
        guard.resolve_checked(name).await?;
    }
    Ok(())
}

const HOSTILE: &[&str] = &[
    // Alternate IPv4 spellings of loopback.
    "http://0x7f.1/",
    "https://0x7f.1/",
    "https://0x7f000001/",
    "https://2130706433/",
    "https://0177.0.0.1/",
    "https://0177.1/",
    "https://017700000001/",
    "https://127.1/",
    "https://127.0.1/",
    "https://127.000.000.001/",
    "https://0x7f.0x0.0x0.0x1/",
    "https://127.0.0.1/",
    "https://127.0.0.1./",
    "https://127.255.255.254/",
    "https://0/",
    "https://0.0.0.0/",
    // IPv6 forms, and IPv4 embedded in IPv6.
    "https://[::]/",
    "https://[::1]/",
    "https://[0:0:0:0:0:0:0:1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[::ffff:169.254.169.254]/",
    "https://[::ffff:a9fe:a9fe]/",
    "https://[::127.0.0.1]/",
    "https://[::ffff:8.8.8.8]/",
    "https://[64:ff9b::a9fe:a9fe]/",
    "https://[64:ff9b::127.0.0.1]/",
    "https://[64:ff9b::808:808]/",
    "https://[64:ff9b:1::a9fe:a9fe]/",
    "https://[2002:a9fe:a9fe::]/",
    "https://[2002:7f00:1::1]/",
    "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    "https://[2001:db8::1]/",
    "https://[2001:2::1]/",
    "https://[fc00::1]/",
    "https://[fd12:3456::1]/",
    "https://[fe80::1]/",
    "https://[fe80::1%25eth0]/",
    "https://[ff02::1]/",
    "https://[100::1]/",
    "https://[4000::1]/",
    // Private, shared, link-local and other special IPv4 ranges.
    "https://169.254.169.254/",
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.1/",
    "https://172.16.0.1/",
    "https://172.31.255.255/",
    "https://192.168.1.1/",
    "https://100.64.0.1/",
    "https://192.0.0.1/",
    "https://192.0.2.1/",
    "https://192.88.99.1/",
    "https://198.18.0.1/",
    "https://198.51.100.1/",
    "https://203.0.113.1/",
    "https://224.0.0.1/",
    "https://240.0.0.1/",
    "https://255.255.255.255/",
    // Names that mean internal infrastructure, or resolve to it.
    "https://metadata.google.internal/",
    "https://metadata.google.internal./computeMetadata/v1/",
    "https://metadata/",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://foo.localhost/",
    "https://printer.local/",
    "https://router.home.arpa/",
    "https://intranet/",
    "https:///path-only",
    "https://169.254.169.254.nip.io/",
    "https://metadata.attacker.example/",
    "https://mixed.attacker.example/",
    "https://mapped.attacker.example/",
    "https://nat64.attacker.example/",
    "https://ula.attacker.example/",
    "https://zero.attacker.example/",
    "https://empty.attacker.example/",
    "https://does-not-resolve.attacker.example/",
    // The platform's own domains.
    "https://bulkhead.example.com/",
    "https://acme.bulkhead.example.com/",
    "https://ACME.Bulkhead.Example.com./hook",
    // Userinfo tricks.
    "https://allowed.example@127.0.0.1/",
    "https://user:pass@example.com/",
    "https://example.com@169.254.169.254/",
    "https://127.0.0.1:443@example.com/",
    "https://:@example.com/",
    // Unicode digits, fullwidth and ideographic dots.
    "https://１２７.０.０.１/",
    "https://127。0。0。1/",
    "https://127．0．0．1/",
    "https://①②⑦.0.0.1/",
    // Ports.
    "https://example.com:22/",
    "https://example.com:8080/",
    "https://example.com:0/",
    "https://example.com:65536/",
    "https://example.com:-1/",
    // Backslashes, whitespace, control and invisible characters.
    "https://example.com\\@127.0.0.1/",
    "https:\\\\127.0.0.1\\",
    " https://example.com/",
    "https://example.com/ ",
    "https://exa mple.com/",
    "https://example.com/\t",
    "https://example.com/\n",
    "https://example.com/\r\nHost: 127.0.0.1",
    "https://example.com/\u{0}",
    "https://exam\u{7f}ple.com/",
    "https://exa\u{200b}mple.com/",
    "https://example.com/\u{202e}",
    "https://example.com/\u{a0}",
    // Schemes.
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/",
    "javascript:alert(1)",
    "data:text/plain,hi",
    "ws://example.com/",
    "//example.com/",
    "example.com",
    "",
];

#[tokio::test]
async fn every_hostile_url_is_refused() {
    let policy = policy();
    assert!(
        HOSTILE.len() >= 60,
        "the battery has {} URLs",
        HOSTILE.len()
    );
    let mut passed = Vec::new();
    for url in HOSTILE {
        if judge(&policy, url).await.is_ok() {
            passed.push(*url);
        }
    }
    assert!(passed.is_empty(), "hostile URLs passed: {passed:?}");
    let too_long = format!("https://example.com/{}", "a".repeat(2100));
    assert_eq!(policy.check_url(&too_long), Err(EgressError::TooLong));
}

#[tokio::test]
async fn ordinary_public_urls_pass() {
    let policy = policy();
    for url in [
        "https://example.com/hook",
        "https://EXAMPLE.com./hook?x=1#frag",
        "https://hooks.partner.example/v1",
        "https://8.8.8.8/",
        "https://[2606:4700::1111]/",
        "http://example.com/",
    ] {
        judge(&policy, url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn refusals_name_the_rule() {
    let strict = EgressPolicy::default();
    assert_eq!(
        strict.check_url("http://example.com/"),
        Err(EgressError::Scheme)
    );
    assert_eq!(
        strict.check_url("https://example.com:8443/"),
        Err(EgressError::Port(8443))
    );
    assert_eq!(
        strict.check_url("https://u@example.com/"),
        Err(EgressError::Userinfo)
    );
    let err = strict
        .check_url("https://[::ffff:169.254.169.254]/")
        .unwrap_err();
    assert!(err.to_string().contains("link-local"), "{err}");
    let err = strict.check_url("https://127.0.0.1/").unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    // The range is named; the address never is (it goes to operator logs only).
    assert!(!err.to_string().contains("127.0.0.1"), "{err}");
    assert_eq!(
        strict.check_url("https://2130706433/"),
        Err(EgressError::NonCanonicalIpv4)
    );
}

/// Issue 17, item 11: `https://010.0.0.1/` registered: the WHATWG parser reads it as octal
/// (8.0.0.1, a public address), other parsers as 10.0.0.1. Every IPv4 spelling but canonical
/// dotted decimal is refused, public addresses included.
#[test]
fn only_canonical_dotted_decimal_ipv4_hosts_pass() {
    let strict = EgressPolicy::default();
    for url in [
        "https://010.0.0.1/",
        "https://8.8.8.010/",
        "https://08.8.8.8/",
        "https://0x8.8.8.8/",
        "https://0x08080808/",
        "https://134744072/",
        "https://8.8.2056/",
        "https://8.526344/",
        "https://8.8.8.8./",
        "https://\u{ff18}.\u{ff18}.\u{ff18}.\u{ff18}/",
        "https://8%2e8.8.8/",
        "https://8.8.8.8:443@/",
    ] {
        let refusal = strict.check_url(url).unwrap_err();
        assert!(
            matches!(
                refusal,
                EgressError::NonCanonicalIpv4
                    | EgressError::Userinfo
                    | EgressError::ForbiddenCharacter
                    | EgressError::Unparsable
            ),
            "{url}: {refusal:?}"
        );
    }
    assert_eq!(
        strict.check_url("https://010.0.0.1/"),
        Err(EgressError::NonCanonicalIpv4)
    );
    assert_eq!(
        strict.check_url("https://8.8.8.010/"),
        Err(EgressError::NonCanonicalIpv4)
    );
    for url in [
        "https://8.8.8.8/",
        "https://8.8.8.8:443/x",
        "https://1.0.0.255?q",
    ] {
        strict
            .check_url(url)
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

/// Issue 17, item 4: a name resolving to a private address was refused with `the address
/// 10.x.y.z is not allowed: private (10.0.0.0/8)`, mapping the deployment's internal DNS for any
/// tenant. What a tenant sees (`Display`, the class) names neither address nor range.
#[tokio::test]
async fn refusals_of_resolved_names_reveal_only_the_class() {
    let policy = policy();
    for (url, address, range) in [
        (
            "https://metadata.attacker.example/",
            "169.254.169.254",
            "169.254.0.0/16",
        ),
        ("https://mixed.attacker.example/", "10.0.0.1", "10.0.0.0/8"),
        (
            "https://mapped.attacker.example/",
            "127.0.0.1",
            "127.0.0.0/8",
        ),
        ("https://ula.attacker.example/", "fd00::1", "fc00::/7"),
    ] {
        let refusal = judge(&policy, url).await.unwrap_err();
        let shown = refusal.to_string();
        assert_eq!(refusal.class(), "blocked_address", "{url}");
        for secret in [
            address,
            range,
            "private",
            "loopback",
            "link-local",
            "unique local",
        ] {
            assert!(!shown.contains(secret), "{url}: {shown}");
        }
        // The operator's log line has it.
        assert!(refusal.operator_detail().contains(address), "{url}");
    }
    let missing = judge(&policy, "https://nowhere.attacker.example/")
        .await
        .unwrap_err();
    assert_eq!(missing.class(), "dns");
}

#[test]
fn operator_deny_wins_over_allow_and_reaches_embedded_ipv4() {
    let p = EgressPolicy {
        allow: vec![
            "127.0.0.0/8".parse().unwrap(),
            "93.184.0.0/16".parse().unwrap(),
        ],
        deny: vec![
            "127.0.0.2/32".parse().unwrap(),
            "93.184.215.14/32".parse().unwrap(),
        ],
        ..EgressPolicy::default()
    };
    assert!(p.check_ip("127.0.0.1".parse().unwrap()).is_ok());
    assert!(p.check_ip("127.0.0.2".parse().unwrap()).is_err());
    assert!(p.check_ip("93.184.215.14".parse().unwrap()).is_err());
    assert!(p.check_ip("64:ff9b::5db8:d70e".parse().unwrap()).is_err());
    // Allowing 127/8 does not allow its IPv6 embeddings.
    assert!(p.check_ip("::ffff:127.0.0.1".parse().unwrap()).is_err());
}

/// A random address from one of the denied IPv4 ranges.
fn denied_v4() -> impl Strategy<Value = Ipv4Addr> {
    let ranges: Vec<(u32, u32)> = [
        ("0.0.0.0", 8),
        ("10.0.0.0", 8),
        ("100.64.0.0", 10),
        ("127.0.0.0", 8),
        ("169.254.0.0", 16),
        ("172.16.0.0", 12),
        ("192.0.0.0", 24),
        ("192.0.2.0", 24),
        ("192.88.99.0", 24),
        ("192.168.0.0", 16),
        ("198.18.0.0", 15),
        ("198.51.100.0", 24),
        ("203.0.113.0", 24),
        ("224.0.0.0", 4),
        ("240.0.0.0", 4),
    ]
    .iter()
    .map(|(base, len)| (u32::from(base.parse::<Ipv4Addr>().unwrap()), *len))
    .collect();
    (0..ranges.len(), any::<u32>()).prop_map(move |(i, r)| {
        let (base, len) = ranges[i];
        let host_bits = 32 - len;
        let mask = if host_bits == 32 {
            u32::MAX
        } else {
            (1u32 << host_bits) - 1
        };
        Ipv4Addr::from(base | (r & mask))
    })
}

fn embeddings(v4: Ipv4Addr) -> Vec<Ipv6Addr> {
    let n = u128::from(u32::from(v4));
    vec![
        Ipv6Addr::from(0xffff_0000_0000 | n),             // mapped
        Ipv6Addr::from(n),                                // compatible
        Ipv6Addr::from((0x0064_ff9b_u128 << 96) | n),     // NAT64
        Ipv6Addr::from((0x2002_u128 << 112) | (n << 80)), // 6to4
        Ipv6Addr::from((0x2001_0000_u128 << 96) | u128::from(!u32::from(v4))), // Teredo
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_denied_ipv4_is_denied_in_every_embedding(v4 in denied_v4()) {
        let p = EgressPolicy::default();
        prop_assert!(p.check_ip(IpAddr::V4(v4)).is_err());
        for v6 in embeddings(v4) {
            prop_assert!(p.check_ip(IpAddr::V6(v6)).is_err(), "{} ({})", v6, v4);
            let u = format!("https://[{v6}]/");
            prop_assert!(p.check_url(&u).is_err());
        }
    }

    #[test]
    fn any_denied_ipv4_is_denied_in_any_spelling(v4 in denied_v4()) {
        let p = EgressPolicy::default();
        let n = u32::from(v4);
        let o = v4.octets();
        for url in [
            format!("https://{v4}/"),
            format!("https://{n}/"),
            format!("https://0x{n:x}/"),
            format!("https://0{:o}.0{:o}.0{:o}.0{:o}/", o[0], o[1], o[2], o[3]),
            format!("https://0x{:x}.0x{:x}.0x{:x}.0x{:x}/", o[0], o[1], o[2], o[3]),
            format!("https://{}.{}/", o[0], (u32::from(o[1]) << 16) | (u32::from(o[2]) << 8) | u32::from(o[3])),
            format!("https://{v4}./"),
        ] {
            prop_assert!(p.check_url(&url).is_err(), "{}", url);
        }
    }

    #[test]
    fn embeddings_of_public_ipv4_are_still_refused(r in any::<u32>()) {
        let v4 = Ipv4Addr::from(r);
        prop_assume!(special_purpose(IpAddr::V4(v4)).is_none());
        let p = EgressPolicy::default();
        prop_assert!(p.check_ip(IpAddr::V4(v4)).is_ok());
        for v6 in embeddings(v4) {
            prop_assert!(p.check_ip(IpAddr::V6(v6)).is_err(), "{}", v6);
        }
    }

    #[test]
    fn ipv6_outside_2000_3_is_refused(bits in any::<u128>()) {
        let v6 = Ipv6Addr::from(bits);
        prop_assume!(v6.segments()[0] & 0xe000 != 0x2000);
        prop_assert!(EgressPolicy::default().check_ip(IpAddr::V6(v6)).is_err());
    }

    #[test]
    fn check_url_never_panics_and_passes_only_https_443(s in "\\PC{0,80}") {
        if let Ok(checked) = EgressPolicy::default().check_url(&s) {
            prop_assert_eq!(checked.url().scheme(), "https");
            prop_assert_eq!(checked.url().port_or_known_default(), Some(443));
            prop_assert!(checked.url().username().is_empty());
        }
    }
}
