//! The egress guard: the one way Bulkhead makes an outbound HTTP request.
//!
//! Three layers, each failing closed:
//! 1. [`EgressPolicy::check_url`] judges the raw text, then the value the WHATWG parser (`url`
//!    crate) made of it: scheme, userinfo, port, host. IP-literal hosts are judged by the address
//!    rules right there (reqwest does not resolve literals).
//! 2. [`GuardedResolver`] is the only resolver the client has. It resolves a name once, judges
//!    every A and AAAA answer, refuses the whole answer if any address is denied, and hands
//!    reqwest only the vetted addresses, which are the ones it connects to: there is no second
//!    lookup between the check and the connection, so DNS rebinding cannot move it.
//! 3. [`EgressClient`] builds the reqwest client: no redirects, no proxy from the environment
//!    (only an explicitly configured one), connect and total timeouts, response bodies read up to
//!    a small cap, and one client (so one connection pool) per tenant.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_core::TenantId;
use futures::future::BoxFuture;
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

/// Where names are looked up: hickory in production, a fixed map in tests.
pub trait HostResolver: Send + Sync + 'static {
    /// Every address `name` resolves to (A and AAAA).
    fn lookup(&self, name: &str) -> BoxFuture<'static, Result<Vec<IpAddr>, EgressError>>;
}

/// The production resolver (hickory, system configuration).
pub struct HickoryResolver {
    inner: hickory_resolver::TokioResolver,
}

impl fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HickoryResolver")
    }
}

impl HickoryResolver {
    /// From `/etc/resolv.conf`, falling back to hickory's defaults.
    pub fn from_system() -> Self {
        let builder = hickory_resolver::TokioResolver::builder_tokio().unwrap_or_else(|_| {
            hickory_resolver::TokioResolver::builder_with_config(
                hickory_resolver::config::ResolverConfig::default(),
                hickory_resolver::name_server::TokioConnectionProvider::default(),
            )
        });
        Self {
            inner: builder.build(),
        }
    }
}

impl HostResolver for HickoryResolver {
    fn lookup(&self, name: &str) -> BoxFuture<'static, Result<Vec<IpAddr>, EgressError>> {
        let resolver = self.inner.clone();
        // Fully qualified: no search-domain expansion.
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        Box::pin(async move {
            let answer = resolver
                .lookup_ip(fqdn)
                .await
                .map_err(|_| EgressError::Unresolved)?;
            Ok(answer.iter().collect())
        })
    }
}

/// Lookups so far, and the successive answers of one name.
type Answers = (usize, Vec<Vec<IpAddr>>);

/// A resolver answering from a fixed map; names not in it do not resolve. Each entry may hold
/// several successive answers (for rebinding tests): lookup `n` gets answer `min(n, last)`.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    answers: Arc<Mutex<HashMap<String, Answers>>>,
}

impl StaticResolver {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// `name` always answers `addrs`.
    pub fn insert(&self, name: &str, addrs: Vec<IpAddr>) -> &Self {
        self.insert_sequence(name, vec![addrs])
    }

    /// `name` answers each of `answers` in turn, then the last one forever.
    pub fn insert_sequence(&self, name: &str, answers: Vec<Vec<IpAddr>>) -> &Self {
        let mut map = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(name.to_ascii_lowercase(), (0, answers));
        self
    }

    /// How many times `name` was looked up.
    pub fn lookups(&self, name: &str) -> usize {
        let map = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&name.to_ascii_lowercase()).map_or(0, |(n, _)| *n)
    }
}

impl HostResolver for StaticResolver {
    fn lookup(&self, name: &str) -> BoxFuture<'static, Result<Vec<IpAddr>, EgressError>> {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let found = {
            let mut map = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            map.get_mut(&key).and_then(|(count, answers)| {
                let pick = answers
                    .get((*count).min(answers.len().saturating_sub(1)))
                    .cloned();
                *count += 1;
                pick
            })
        };
        Box::pin(async move { found.ok_or(EgressError::Unresolved) })
    }
}

/// The client's only resolver: one lookup, every answer judged, only vetted addresses returned.
pub struct GuardedResolver {
    policy: Arc<EgressPolicy>,
    inner: Arc<dyn HostResolver>,
    /// The operator's egress proxy, named by the operator, resolves without the address rules
    /// (it usually lives on a private address). Tenants' URLs are never exempt: through a proxy
    /// the URL rules still apply here and the proxy resolves and judges the target.
    exempt: Option<String>,
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl GuardedResolver {
    /// Wraps `inner` under `policy`.
    pub fn new(policy: Arc<EgressPolicy>, inner: Arc<dyn HostResolver>) -> Self {
        Self {
            policy,
            inner,
            exempt: None,
        }
    }

    /// Exempts the operator's proxy host from the address rules.
    pub fn exempting(mut self, proxy_host: Option<String>) -> Self {
        self.exempt = proxy_host.map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        self
    }

    /// Resolves and judges: `Ok` only if there is at least one answer and every answer passes.
    pub async fn resolve_checked(&self, name: &str) -> Result<Vec<IpAddr>, EgressError> {
        self.policy.check_name(name)?;
        let addrs = self.inner.lookup(name).await?;
        if addrs.is_empty() {
            return Err(EgressError::Unresolved);
        }
        for ip in &addrs {
            if let Err(refusal) = self.policy.check_ip(*ip) {
                let refusal = match refusal {
                    EgressError::Address(ip, why) => EgressError::ResolvedAddress(ip, why),
                    other => other,
                };
                // The address is for the operator only: tenants see the class.
                tracing::warn!(target: "bulkhead::egress", host = %name, detail = %refusal.operator_detail(), "egress refused a resolved address");
                return Err(refusal);
            }
        }
        Ok(addrs)
    }
}

/// The refusal reqwest sees as the cause of a connect error; [`EgressClient::send`] finds it
/// in the error chain to record the attempt as blocked, not failed.
#[derive(Debug)]
struct Blocked(EgressError);

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "egress guard: {}", self.0)
    }
}
impl std::error::Error for Blocked {}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let inner = self.inner.clone();
        let exempt = self.exempt.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let proxy =
                exempt.as_deref() == Some(name.trim_end_matches('.').to_ascii_lowercase().as_str());
            let guard = GuardedResolver {
                policy,
                inner,
                exempt,
            };
            let answer = if proxy {
                guard.inner.lookup(&name).await
            } else {
                guard.resolve_checked(&name).await
            };
            match answer {
                Ok(addrs) => {
                    // Port 0: hyper puts the URL's port on each address.
                    let addrs: reqwest::dns::Addrs =
                        Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(addrs)
                }
                Err(err) => Err(Box::new(Blocked(err)) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

/// Client settings besides the policy.
#[derive(Clone)]
pub struct EgressConfig {
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout, body included.
    pub total_timeout: Duration,
    /// An explicitly configured egress proxy (the environment's are ignored).
    pub proxy: Option<Url>,
    /// Extra trusted roots (tests: a CA made at test time), DER.
    pub extra_roots_der: Vec<Vec<u8>>,
    /// `User-Agent`.
    pub user_agent: String,
}

impl fmt::Debug for EgressConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("total_timeout", &self.total_timeout)
            .field(
                "proxy",
                &self
                    .proxy
                    .as_ref()
                    .map(|p| p.host_str().unwrap_or("").to_owned()),
            )
            .field("extra_roots", &self.extra_roots_der.len())
            .finish()
    }
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(15),
            proxy: None,
            extra_roots_der: Vec::new(),
            user_agent: "Bulkhead-Webhooks/1".into(),
        }
    }
}

/// How an outbound request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The receiver answered (any status; redirects are not followed).
    Response {
        /// Status code.
        status: u16,
        /// `Retry-After`, if any, as sent.
        retry_after: Option<String>,
        /// Up to [`RESPONSE_SAMPLE_BYTES`] of the body, lossily decoded.
        sample: String,
        /// Time to the end of the sample.
        latency: Duration,
    },
    /// The guard refused it; nothing was sent.
    Blocked(EgressError),
    /// A transport failure (connect, TLS, timeout).
    Transport {
        /// Short class: `timeout`, `connect`, `tls`, `io`.
        class: &'static str,
        /// Description (no secrets: URLs are the tenant's own).
        detail: String,
        /// Time until the failure.
        latency: Duration,
    },
}

/// Tenants whose HTTP clients (connection pools) an [`EgressClient`] keeps; the least recently
/// used is dropped beyond that (its connections close once their requests end).
pub const TENANT_POOLS: usize = 256;

/// The guarded client. Cheap to clone (clones share the pools).
///
/// Connections are pooled per tenant: every tenant sends through its own reqwest client, so
/// its own pool. With HTTP/2 all requests to one host share a connection, and a receiver caps
/// the streams of a connection (`SETTINGS_MAX_CONCURRENT_STREAMS`) while the pool does not open
/// a second connection when they are used up; one shared pool would let a tenant whose route on
/// a multi-tenant relay host hangs fill those streams and stall every other tenant's requests to
/// that host. Every client resolves through the same guard, so every address any of them
/// connects to is judged, and each connection stays on the address judged when it was opened.
#[derive(Clone)]
pub struct EgressClient {
    policy: Arc<EgressPolicy>,
    resolver: Arc<GuardedResolver>,
    config: Arc<EgressConfig>,
    pools: Arc<Mutex<hashlink::LruCache<TenantId, reqwest::Client>>>,
}

impl fmt::Debug for EgressClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Building the client failed (bad root certificate or proxy).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the egress client: {0}")]
pub struct BuildError(String);

impl EgressClient {
    /// The guarded client under `policy`, resolving through `resolver`.
    pub fn new(
        policy: EgressPolicy,
        resolver: Arc<dyn HostResolver>,
        config: &EgressConfig,
    ) -> Result<Self, BuildError> {
        let policy = Arc::new(policy);
        let proxy_host = config
            .proxy
            .as_ref()
            .and_then(|p| p.host_str())
            .map(str::to_owned);
        let guarded = GuardedResolver::new(policy.clone(), resolver).exempting(proxy_host);
        let client = Self {
            policy,
            resolver: Arc::new(guarded),
            config: Arc::new(config.clone()),
            pools: Arc::new(Mutex::new(hashlink::LruCache::new(TENANT_POOLS))),
        };
        // Fail at start, not at the first request, on a bad root or proxy.
        client.build()?;
        Ok(client)
    }

    fn build(&self) -> Result<reqwest::Client, BuildError> {
        base_builder(&self.config)?
            .dns_resolver(self.resolver.clone())
            .build()
            .map_err(|e| BuildError(e.to_string()))
    }

    /// `tenant`'s client: its own connection pool, never another tenant's.
    fn client_for(&self, tenant: TenantId) -> Result<reqwest::Client, BuildError> {
        if let Some(client) = lock_pools(&self.pools).get(&tenant) {
            return Ok(client.clone());
        }
        // Built outside the lock; a concurrent first request of the same tenant may build one
        // too, and the later insert wins (the other's pool closes with its last request).
        let client = self.build()?;
        lock_pools(&self.pools).insert(tenant, client.clone());
        Ok(client)
    }

    /// Tenants with a client kept now (tests).
    #[doc(hidden)]
    pub fn pooled_tenants(&self) -> usize {
        lock_pools(&self.pools).len()
    }

    /// The policy it enforces.
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// Sends a POST of `body` with `headers` to `url` for `tenant` (over its own connections),
    /// after judging the URL again. The response body is read only up to
    /// [`RESPONSE_SAMPLE_BYTES`].
    pub async fn post(
        &self,
        tenant: TenantId,
        url: &str,
        headers: http::HeaderMap,
        body: bytes::Bytes,
    ) -> SendOutcome {
        let checked = match self.policy.check_url(url) {
            Ok(checked) => checked,
            Err(err) => return SendOutcome::Blocked(err),
        };
        let client = match self.client_for(tenant) {
            Ok(client) => client,
            Err(err) => {
                return SendOutcome::Transport {
                    class: "config",
                    detail: err.to_string(),
                    latency: Duration::ZERO,
                }
            }
        };
        send_post(&client, checked.url().clone(), headers, body).await
    }
}

fn lock_pools(
    pools: &Mutex<hashlink::LruCache<TenantId, reqwest::Client>>,
) -> std::sync::MutexGuard<'_, hashlink::LruCache<TenantId, reqwest::Client>> {
    pools.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a request with a response cap ended ([`EgressClient::post_capped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CappedOutcome {
    /// The receiver answered with a body within the cap.
    Response {
        /// Status code.
        status: u16,
        /// `Content-Type`, if any, as sent (at most 128 characters).
        content_type: Option<String>,
        /// The whole body.
        body: bytes::Bytes,
        /// Time to the end of the body.
        latency: Duration,
    },
    /// The body was longer than the cap; the rest was not read.
    TooLarge {
        /// Status code.
        status: u16,
        /// Time until the cap was passed.
        latency: Duration,
    },
    /// The guard refused it; nothing was sent.
    Blocked(EgressError),
    /// A transport failure (connect, TLS, timeout), also while reading the body.
    Transport {
        /// Short class: `timeout`, `connect`, `io`.
        class: &'static str,
        /// Description.
        detail: String,
        /// Time until the failure.
        latency: Duration,
    },
}

impl EgressClient {
    /// Sends a POST like [`EgressClient::post`], but reads the whole response body up to
    /// `max_bytes` (longer is [`CappedOutcome::TooLarge`]) and gives up after `timeout` (at most
    /// the client's total timeout). For synchronous calls whose answer is the result.
    pub async fn post_capped(
        &self,
        tenant: TenantId,
        url: &str,
        headers: http::HeaderMap,
        body: bytes::Bytes,
        max_bytes: usize,
        timeout: Duration,
    ) -> CappedOutcome {
        let checked = match self.policy.check_url(url) {
            Ok(checked) => checked,
            Err(err) => return CappedOutcome::Blocked(err),
        };
        let started = Instant::now();
        let client = match self.client_for(tenant) {
            Ok(client) => client,
            Err(err) => {
                return CappedOutcome::Transport {
                    class: "config",
                    detail: err.to_string(),
                    latency: Duration::ZERO,
                }
            }
        };
        let result = client
            .post(checked.url().clone())
            .headers(headers)
            .body(body)
            .timeout(timeout)
            .send()
            .await;
        let mut response = match result {
            Ok(response) => response,
            Err(err) => return capped_failure(&err, started),
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(128).collect());
        if response
            .content_length()
            .is_some_and(|n| n > max_bytes as u64)
        {
            return CappedOutcome::TooLarge {
                status,
                latency: started.elapsed(),
            };
        }
        let mut collected = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if collected.len() + chunk.len() > max_bytes {
                        return CappedOutcome::TooLarge {
                            status,
                            latency: started.elapsed(),
                        };
                    }
                    collected.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(err) => return capped_failure(&err, started),
            }
        }
        CappedOutcome::Response {
            status,
            content_type,
            body: bytes::Bytes::from(collected),
            latency: started.elapsed(),
        }
    }
}

fn capped_failure(err: &reqwest::Error, started: Instant) -> CappedOutcome {
    match transport_failure(err, started) {
        SendOutcome::Blocked(refusal) => CappedOutcome::Blocked(refusal),
        SendOutcome::Transport {
            class,
            detail,
            latency,
        } => CappedOutcome::Transport {
            class,
            detail,
            latency,
        },
        SendOutcome::Response { latency, .. } => CappedOutcome::Transport {
            class: "io",
            detail: "unexpected response state".into(),
            latency,
        },
    }
}

/// The same client without the guard (benchmarks only: measures the guard's cost).
#[doc(hidden)]
pub fn unguarded_client<R: reqwest::dns::Resolve + 'static>(
    config: &EgressConfig,
    resolver: Arc<R>,
) -> Result<reqwest::Client, BuildError> {
    base_builder(config)?
        .dns_resolver(resolver)
        .build()
        .map_err(|e| BuildError(e.to_string()))
}

fn base_builder(config: &EgressConfig) -> Result<reqwest::ClientBuilder, BuildError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(config.connect_timeout)
        .timeout(config.total_timeout)
        .user_agent(config.user_agent.clone())
        // Keep-alive: a pooled connection is reused only for the same scheme, host and port,
        // and it stays connected to the one address the guard judged when it was opened (the
        // resolver runs, and judges every answer, for each new connection). Enough idle
        // connections per host for the dispatcher's slots to one busy endpoint.
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .https_only(false);
    for der in &config.extra_roots_der {
        let cert = reqwest::Certificate::from_der(der).map_err(|e| BuildError(e.to_string()))?;
        builder = builder.add_root_certificate(cert);
    }
    if let Some(proxy) = &config.proxy {
        let proxy = reqwest::Proxy::all(proxy.as_str()).map_err(|e| BuildError(e.to_string()))?;
        builder = builder.proxy(proxy);
    }
    Ok(builder)
}

/// Sends a POST with any reqwest client, reading at most the sample cap of the response.
#[doc(hidden)]
pub async fn send_post(
    client: &reqwest::Client,
    url: Url,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> SendOutcome {
    let started = Instant::now();
    let result = client.post(url).headers(headers).body(body).send().await;
    let mut response = match result {
        Ok(response) => response,
        Err(err) => return transport_failure(&err, started),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(64).collect());
    let mut sample = Vec::new();
    while sample.len() < RESPONSE_SAMPLE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = RESPONSE_SAMPLE_BYTES - sample.len();
                sample.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Dropping the response here discards the rest without reading it.
    drop(response);
    SendOutcome::Response {
        status,
        retry_after,
        sample: String::from_utf8_lossy(&sample).into_owned(),
        latency: started.elapsed(),
    }
}

fn transport_failure(err: &reqwest::Error, started: Instant) -> SendOutcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(Blocked(refusal)) = cause.downcast_ref::<Blocked>() {
            return SendOutcome::Blocked(refusal.clone());
        }
        source = cause.source();
    }
    let class = transport_class(err);
    // The error chain can name the address connected to (hyper's connect errors do): operators
    // get it in the log, tenants (attempt log, tool-call answers) a fixed text per class.
    tracing::info!(target: "bulkhead::egress", class, error = %error_chain(err), "outbound request failed");
    SendOutcome::Transport {
        class,
        detail: transport_detail(class).to_owned(),
        latency: started.elapsed(),
    }
}

/// The class of a transport failure: `timeout`, `tls`, `connect` or `io`.
fn transport_class(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        return "timeout";
    }
    // rustls reports a failed handshake as an `InvalidData` I/O error inside the connect error
    // (matched on the kind, so this crate needs no TLS dependency of its own).
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
        {
            return "tls";
        }
        source = cause.source();
    }
    if err.is_connect() {
        "connect"
    } else {
        "io"
    }
}

/// What a tenant is told about a transport failure of `class`.
fn transport_detail(class: &str) -> &'static str {
    match class {
        "timeout" => "the receiver did not answer in time",
        "tls" => "the TLS handshake with the receiver failed",
        "connect" => "could not connect to the receiver",
        _ => "the connection to the receiver failed",
    }
}

/// An error with its causes, for operator logs.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teredo_client_is_the_inverse_of_the_last_32_bits() {
        // 2001:0:4136:e378:8000:63bf:3fff:fdd2 carries client 192.0.2.45.
        let v6: Ipv6Addr = "2001:0:4136:e378:8000:63bf:3fff:fdd2"
            .parse()
            .unwrap_or(Ipv6Addr::UNSPECIFIED);
        assert_eq!(embedded_ipv4(v6), Some(Ipv4Addr::new(192, 0, 2, 45)));
    }

    #[test]
    fn six_to_four_carries_bits_16_to_48() {
        let v6: Ipv6Addr = "2002:a9fe:a9fe::".parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
        assert_eq!(embedded_ipv4(v6), Some(Ipv4Addr::new(169, 254, 169, 254)));
    }

    #[test]
    fn ports_parse() {
        assert_eq!(
            EgressPolicy::parse_ports("443, 8000-8010"),
            Ok(vec![443..=443, 8000..=8010])
        );
        assert!(EgressPolicy::parse_ports("0").is_err());
        assert!(EgressPolicy::parse_ports("9-3").is_err());
    }
}
