//! What may be reached: the URL, host-name and address rules of the egress guard.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Bytes of a response body kept as the attempt's sample; the rest is never read.
pub const RESPONSE_SAMPLE_BYTES: usize = 4096;

/// Why an outbound request was refused. Every variant names the rule, for the 422 at registration
/// and the attempt log at delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The URL is longer than [`MAX_URL_LEN`].
    #[error("the URL is longer than {MAX_URL_LEN} bytes")]
    TooLong,
    /// Control characters, whitespace or backslashes in the raw text.
    #[error("the URL contains a control character, whitespace or a backslash")]
    ForbiddenCharacter,
    /// The parser refused it.
    #[error("the URL does not parse")]
    Unparsable,
    /// Not `https` (or `http` where the operator allows it).
    #[error("the scheme must be https")]
    Scheme,
    /// A user name or password in the URL.
    #[error("the URL may not carry a user name or password")]
    Userinfo,
    /// No host.
    #[error("the URL has no host")]
    NoHost,
    /// A port outside the operator's list.
    #[error("port {0} is not allowed")]
    Port(u16),
    /// A name of the platform itself, a special-use name, or a single-label name.
    #[error("the host name {0} is not allowed: {1}")]
    HostName(String, &'static str),
    /// An IPv4 host not written as canonical dotted decimal (`010.0.0.1`, `0x7f.1`, `127.1`,
    /// `2130706433`): parsers disagree on what such a spelling means.
    #[error("an IPv4 host must be written in canonical dotted decimal: four decimal parts of 0 to 255, without leading zeros")]
    NonCanonicalIpv4,
    /// An IP-literal host outside global unicast, or denied by the operator. The tenant wrote
    /// the address, so the message names the range (never the address: refusals are shown as
    /// written here, and the address goes to operator logs only, see [`EgressError::operator_detail`]).
    #[error("the address is not allowed: {1}")]
    Address(IpAddr, &'static str),
    /// A host name that resolved to an address outside global unicast or denied by the operator.
    /// Tenants learn only the class: naming the address or its range would map the deployment's
    /// internal DNS view one name at a time.
    #[error("the host name resolves to an address that is not allowed")]
    ResolvedAddress(IpAddr, &'static str),
    /// The name did not resolve, or resolved to nothing.
    #[error("the host name did not resolve")]
    Unresolved,
}

impl EgressError {
    /// A short stable class for attempt logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            EgressError::Unresolved => "dns",
            EgressError::Address(..) | EgressError::ResolvedAddress(..) => "blocked_address",
            _ => "blocked_url",
        }
    }

    /// The full reason with the address, for operator logs only (never a tenant's answer, an
    /// attempt log or an audit event, which get `Display` and [`EgressError::class`]).
    pub fn operator_detail(&self) -> String {
        match self {
            EgressError::Address(ip, why) | EgressError::ResolvedAddress(ip, why) => {
                format!("{self} (address {ip}: {why})")
            }
            other => other.to_string(),
        }
    }
}

/// The operator's egress settings. Defaults: https only, port 443, no allow or deny lists.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    /// Allow `http` too (development only).
    pub allow_http: bool,
    /// Ports a URL may name.
    pub allowed_ports: Vec<RangeInclusive<u16>>,
    /// Platform-owned domains: each and every subdomain are refused.
    pub platform_domains: Vec<String>,
    /// Addresses allowed although special-purpose (how tests reach loopback receivers).
    pub allow: Vec<IpNet>,
    /// Addresses always refused; wins over `allow`.
    pub deny: Vec<IpNet>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        Self {
            allow_http: false,
            allowed_ports: vec![443..=443],
            platform_domains: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// A URL that passed [`EgressPolicy::check_url`]: the parsed value, which is what is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUrl {
    url: Url,
}

impl CheckedUrl {
    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Its canonical text form.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }
}

/// Special-use names (RFC 6761 and friends) and suffixes that name internal infrastructure.
const DENIED_SUFFIXES: &[&str] = &[
    "localhost",
    "local",
    "localdomain",
    "internal",
    "intranet",
    "lan",
    "home.arpa",
    "in-addr.arpa",
    "ip6.arpa",
    "invalid",
    "onion",
];

impl EgressPolicy {
    /// Parses a port list such as `443,8443,9000-9100`.
    pub fn parse_ports(text: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|part| {
                let bad = || format!("{part:?} is not a port or port range");
                match part.split_once('-') {
                    Some((lo, hi)) => {
                        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
                        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
                        if lo == 0 || lo > hi {
                            return Err(bad());
                        }
                        Ok(lo..=hi)
                    }
                    None => {
                        let port: u16 = part.parse().map_err(|_| bad())?;
                        if port == 0 {
                            return Err(bad());
                        }
                        Ok(port..=port)
                    }
                }
            })
            .collect()
    }

    /// Judges a URL as the tenant wrote it. The raw text is checked first, then the parsed
    /// value; an IP-literal host is judged by [`EgressPolicy::check_ip`] here.
    pub fn check_url(&self, raw: &str) -> Result<CheckedUrl, EgressError> {
        if raw.len() > MAX_URL_LEN {
            return Err(EgressError::TooLong);
        }
        if raw
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\' || is_invisible(c))
        {
            return Err(EgressError::ForbiddenCharacter);
        }
        // Any `@` in the authority is userinfo, even where the parser would drop an empty one.
        if let Some((_, rest)) = raw.split_once("://") {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            if authority.contains('@') {
                return Err(EgressError::Userinfo);
            }
        }
        let url = Url::parse(raw).map_err(|_| EgressError::Unparsable)?;
        // The parser reads `010.0.0.1` as octal (8.0.0.1) where other parsers read 10.0.0.1: an
        // IPv4 host must be spelled exactly as its canonical form, so every reader agrees.
        if let Some(Host::Ipv4(ip)) = url.host() {
            if raw_host(raw) != Some(ip.to_string().as_str()) {
                return Err(EgressError::NonCanonicalIpv4);
            }
        }
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(EgressError::Scheme),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressError::Userinfo);
        }
        let port = url.port_or_known_default().ok_or(EgressError::Scheme)?;
        if !self.allowed_ports.iter().any(|r| r.contains(&port)) {
            return Err(EgressError::Port(port));
        }
        match url.host() {
            None => return Err(EgressError::NoHost),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(Host::Domain(name)) => self.check_name(name)?,
        }
        Ok(CheckedUrl { url })
    }

    /// Judges a (parsed, lowercase, punycode) host name.
    pub fn check_name(&self, name: &str) -> Result<(), EgressError> {
        let refuse = |why| Err(EgressError::HostName(name.to_owned(), why));
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return refuse("empty");
        }
        // A name that parses as a number is an address spelling the parser did not take as one
        // (it would be resolved by someone else's rules): refuse it.
        let last = name.rsplit('.').next().unwrap_or(name);
        if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
            return refuse("numeric host names are not allowed");
        }
        if !name.contains('.') {
            return refuse("single-label names are not allowed");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return refuse("not a DNS name");
        }
        for platform in &self.platform_domains {
            let platform = platform.trim_end_matches('.');
            if name == platform || name.ends_with(&format!(".{platform}")) {
                return refuse("platform-owned domain");
            }
        }
        for suffix in DENIED_SUFFIXES {
            if name == *suffix || name.ends_with(&format!(".{suffix}")) {
                return refuse("special-use or internal domain");
            }
        }
        Ok(())
    }

    /// Judges one address: the operator's deny list (on the address and any IPv4 it embeds)
    /// wins; then the operator's allow list; then only global unicast passes.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressError> {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6),
            IpAddr::V4(_) => None,
        };
        let denied_by_operator = self.deny.iter().any(|net| {
            net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&IpAddr::V4(v4)))
        });
        if denied_by_operator {
            return Err(EgressError::Address(ip, "denied by the operator"));
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match special_purpose(ip) {
            Some(why) => Err(EgressError::Address(ip, why)),
            None => Ok(()),
        }
    }
}

/// The host as written in the raw URL text (after the scheme, before any port, path, query or
/// fragment); `None` for an IPv6 literal or text without an authority. Userinfo was refused
/// before this is read.
fn raw_host(raw: &str) -> Option<&str> {
    let (_, rest) = raw.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    if authority.starts_with('[') {
        return None;
    }
    Some(
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    )
}

/// Zero-width and bidirectional formatting characters: invisible in a UI, so refused like
/// whitespace.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{00ad}')
}

const V4_SPECIAL: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
    ("10.0.0.0/8", "private (10.0.0.0/8)"),
    ("100.64.0.0/10", "shared address space (100.64.0.0/10)"),
    ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
    ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
    ("172.16.0.0/12", "private (172.16.0.0/12)"),
    ("192.0.0.0/24", "IETF protocol assignments (192.0.0.0/24)"),
    ("192.0.2.0/24", "documentation (192.0.2.0/24)"),
    ("192.88.99.0/24", "6to4 relay anycast (192.88.99.0/24)"),
    ("192.168.0.0/16", "private (192.168.0.0/16)"),
    ("198.18.0.0/15", "benchmarking (198.18.0.0/15)"),
    ("198.51.100.0/24", "documentation (198.51.100.0/24)"),
    ("203.0.113.0/24", "documentation (203.0.113.0/24)"),
    ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4) or broadcast"),
];

const V6_SPECIAL: &[(&str, &str)] = &[
    ("::/128", "unspecified (::)"),
    ("::1/128", "loopback (::1)"),
    ("::ffff:0:0/96", "IPv4-mapped (::ffff:0:0/96)"),
    ("::/96", "IPv4-compatible (::/96)"),
    ("64:ff9b::/96", "NAT64 (64:ff9b::/96)"),
    ("64:ff9b:1::/48", "local-use NAT64 (64:ff9b:1::/48)"),
    ("100::/64", "discard-only (100::/64)"),
    ("2001::/32", "Teredo (2001::/32)"),
    ("2001::/23", "IETF protocol assignments (2001::/23)"),
    ("2001:db8::/32", "documentation (2001:db8::/32)"),
    ("2002::/16", "6to4 (2002::/16)"),
    ("3fff::/20", "documentation (3fff::/20)"),
    ("fc00::/7", "unique local (fc00::/7)"),
    ("fe80::/10", "link-local (fe80::/10)"),
    ("ff00::/8", "multicast (ff00::/8)"),
];

fn v4_table() -> &'static [(Ipv4Net, &'static str)] {
    static TABLE: std::sync::OnceLock<Vec<(Ipv4Net, &'static str)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        V4_SPECIAL
            .iter()
            .filter_map(|(net, why)| net.parse().ok().map(|n| (n, *why)))
            .collect()
    })
}

fn v6_table() -> &'static [(Ipv6Net, &'static str)] {
    static TABLE: std::sync::OnceLock<Vec<(Ipv6Net, &'static str)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        V6_SPECIAL
            .iter()
            .filter_map(|(net, why)| net.parse().ok().map(|n| (n, *why)))
            .collect()
    })
}

/// The IPv4 address an IPv6 address carries, for the forms that embed one: IPv4-mapped,
/// IPv4-compatible, NAT64 (well-known prefix), 6to4 and Teredo (client address, bitwise NOT of
/// the last 32 bits).
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    let seg = v6.segments();
    let low32 = (bits & 0xffff_ffff) as u32;
    if bits >> 32 == 0xffff {
        return Some(Ipv4Addr::from(low32)); // ::ffff:a.b.c.d
    }
    if bits >> 32 == 0 && bits > 1 {
        return Some(Ipv4Addr::from(low32)); // ::a.b.c.d
    }
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some(Ipv4Addr::from(low32)); // 64:ff9b::a.b.c.d
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32)); // 2002:AABB:CCDD::
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        return Some(Ipv4Addr::from(!low32)); // Teredo client
    }
    None
}

/// Why `ip` is not global unicast, naming the range; `None` if it is.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_table()
            .iter()
            .find(|(net, _)| net.contains(&v4))
            .map(|(_, why)| *why),
        IpAddr::V6(v6) => {
            // Embedded IPv4 first, so the reason names the address that would really be reached.
            if let Some(why) = embedded_ipv4(v6).and_then(|v4| special_purpose(IpAddr::V4(v4))) {
                return Some(why);
            }
            if let Some((_, why)) = v6_table().iter().find(|(net, _)| net.contains(&v6)) {
                return Some(why);
            }
            if v6.segments()[0] & 0xe000 != 0x2000 {
                return Some("outside global unicast (2000::/3)");
            }
            None
        }
    }
}
