//! What the probe is given (the deployment and two tenants) and what it reports: every
//! attempt, judged.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// What the probe needs to know about the deployment.
#[derive(Clone)]
pub struct ProbeConfig {
    /// Where the API listens (`http://127.0.0.1:8080`, `https://api.example.com`).
    pub base_url: url::Url,
    /// The tenants' base domain: tenant `acme` is `acme.<base_domain>`.
    pub base_domain: String,
    /// Tenant A (the victim): slug and admin key.
    pub tenant_a: TenantCredentials,
    /// Tenant B (the attacker): slug and admin key.
    pub tenant_b: TenantCredentials,
    /// Read operations from this file instead of `GET /openapi.json`.
    pub openapi_file: Option<std::path::PathBuf>,
    /// The operator listener and an operator key: the operator door is attacked too.
    pub operator: Option<OperatorTarget>,
}

/// The operator API (loopback TCP) and an operator key. `Debug` leaves the key out.
#[derive(Clone)]
pub struct OperatorTarget {
    /// Where the operator API listens (`http://127.0.0.1:9091`).
    pub base_url: url::Url,
    /// An operator key (`bk_op_…`).
    pub operator_key: String,
}

impl fmt::Debug for OperatorTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorTarget")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ProbeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeConfig")
            .field("base_url", &self.base_url.as_str())
            .field("base_domain", &self.base_domain)
            .field("tenant_a", &self.tenant_a.slug)
            .field("tenant_b", &self.tenant_b.slug)
            .field("operator", &self.operator)
            .finish_non_exhaustive()
    }
}

/// A tenant's slug and admin key. `Debug` leaves the key out.
#[derive(Clone)]
pub struct TenantCredentials {
    /// Subdomain label.
    pub slug: String,
    /// An admin key (every permission).
    pub admin_key: String,
}

impl fmt::Debug for TenantCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCredentials")
            .field("slug", &self.slug)
            .finish_non_exhaustive()
    }
}

/// The attacks, in the order the table shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// No credential on B's subdomain.
    NoCredential,
    /// A's admin key on B's subdomain.
    AKeyOnB,
    /// A's access token on B's subdomain.
    ATokenOnB,
    /// A's delegated token on B's subdomain.
    ADelegatedOnB,
    /// A's refresh token presented as a bearer on B's subdomain.
    ARefreshOnB,
    /// B's key on A's subdomain.
    BKeyOnA,
    /// A revoked key of B.
    RevokedKey,
    /// A revoked access token of B.
    RevokedToken,
    /// A key of B past its expiry.
    ExpiredKey,
    /// A rotated key of B past its grace period.
    AfterGraceKey,
    /// A key of B holding no permission any route needs.
    OutOfScope,
    /// B's admin key with A's ids in the path and body.
    ForeignIds,
    /// "Not yours" and "does not exist" answer alike.
    Indistinguishable,
    /// List and search filters aimed at A's data.
    ListFilters,
    /// Webhook endpoints aimed at internal addresses.
    InternalUrls,
    /// B's client introspects, revokes, refreshes or exchanges A's tokens.
    ForeignTokens,
    /// A token of B confined to a resource prefix (and delegated) tries every creating route
    /// and every list: it creates nothing and lists nothing outside its prefix.
    ConfinedToken,
    /// B registers and calls hostile JSON Schemas while A keeps being served.
    HostileSchema,
    /// A key holding `webhooks:manage` but not `audit:read` subscribes to the audit stream.
    AuditStream,
    /// B publishes messages in the platform's namespaces, or dressed as platform events.
    ForgedEvents,
    /// An absolute-form target naming one tenant with a `Host` naming another.
    HostMismatch,
    /// B holds half-sent connections, then forces password hashing, while A's requests must
    /// still be answered correctly within a bound.
    SlowNeighbour,
    /// An operator key (`bk_op_…`) on a tenant route, on A's subdomain with A's ids.
    OperatorKeyOnTenant,
    /// A tenant credential (A's key and tokens, B's key) on an operator route.
    TenantCredentialOnOperator,
    /// Dynamic client registration: in A (off), and B's self-registered client on A's host.
    ClientRegistration,
    /// The OAuth grants and browser routes with A's resource, client and resource token, from
    /// B's side.
    OAuthAcrossTenants,
    /// A's signed-in browser session, consent form, password and code on B's authorization
    /// pages and token endpoint.
    BrowserPages,
}

impl Attack {
    const ALL: [Attack; 27] = [
        Attack::NoCredential,
        Attack::AKeyOnB,
        Attack::ATokenOnB,
        Attack::ADelegatedOnB,
        Attack::ARefreshOnB,
        Attack::BKeyOnA,
        Attack::RevokedKey,
        Attack::RevokedToken,
        Attack::ExpiredKey,
        Attack::AfterGraceKey,
        Attack::OutOfScope,
        Attack::ForeignIds,
        Attack::Indistinguishable,
        Attack::ListFilters,
        Attack::InternalUrls,
        Attack::ForeignTokens,
        Attack::ConfinedToken,
        Attack::HostileSchema,
        Attack::AuditStream,
        Attack::ForgedEvents,
        Attack::HostMismatch,
        Attack::SlowNeighbour,
        Attack::OperatorKeyOnTenant,
        Attack::TenantCredentialOnOperator,
        Attack::ClientRegistration,
        Attack::OAuthAcrossTenants,
        Attack::BrowserPages,
    ];

    pub(crate) fn short(self) -> &'static str {
        match self {
            Attack::NoCredential => "anon",
            Attack::AKeyOnB => "akey@b",
            Attack::ATokenOnB => "atok@b",
            Attack::ADelegatedOnB => "adlg@b",
            Attack::ARefreshOnB => "arft@b",
            Attack::BKeyOnA => "bkey@a",
            Attack::RevokedKey => "rvkey",
            Attack::RevokedToken => "rvtok",
            Attack::ExpiredKey => "expkey",
            Attack::AfterGraceKey => "grace",
            Attack::OutOfScope => "scope",
            Attack::ForeignIds => "ids",
            Attack::Indistinguishable => "same404",
            Attack::ListFilters => "filters",
            Attack::InternalUrls => "ssrf",
            Attack::ForeignTokens => "tokens",
            Attack::ConfinedToken => "confin",
            Attack::HostileSchema => "schema",
            Attack::AuditStream => "audstrm",
            Attack::ForgedEvents => "forge",
            Attack::HostMismatch => "host",
            Attack::SlowNeighbour => "slownb",
            Attack::OperatorKeyOnTenant => "opk@v1",
            Attack::TenantCredentialOnOperator => "tnt@op",
            Attack::ClientRegistration => "dcr",
            Attack::OAuthAcrossTenants => "oauthx",
            Attack::BrowserPages => "pages",
        }
    }
}

/// What one attack on one operation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Refused as documented, nothing of A's in the answer.
    Refused,
    /// Answered, with nothing of A's in it (the caller's own data).
    AllowedOwn,
    /// Something of A's reached B, or B changed something of A's.
    Leak,
    /// Not refused the way the documentation says (a wrong status), nothing leaked.
    Unexpected,
}

/// One cell of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `GET /v1/sessions/{id}`, or `A's data` for the final comparison.
    pub operation: String,
    /// The attack.
    pub attack: Attack,
    /// The verdict.
    pub verdict: Verdict,
    /// The status seen, and why the verdict (for anything but `refused`).
    pub detail: String,
}

/// Everything the probe found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Operations read from the document.
    pub operations: usize,
    /// Every attempt.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Attempts that leaked something of A's.
    pub fn leaks(&self) -> usize {
        self.count(Verdict::Leak)
    }

    /// Attempts answered otherwise than documented, without a leak.
    pub fn unexpected(&self) -> usize {
        self.count(Verdict::Unexpected)
    }

    pub(crate) fn count(&self, verdict: Verdict) -> usize {
        self.findings
            .iter()
            .filter(|f| f.verdict == verdict)
            .count()
    }

    /// Whether the deployment passed: no leak and nothing unexpected.
    pub fn passed(&self) -> bool {
        self.leaks() == 0 && self.unexpected() == 0
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "probe: {} operations, {} attempts: {} refused, {} allowed on own data, {} unexpected, {} leaks",
            self.operations,
            self.findings.len(),
            self.count(Verdict::Refused),
            self.count(Verdict::AllowedOwn),
            self.unexpected(),
            self.leaks(),
        )
    }

    /// The operation × attack table, one row per operation.
    pub fn table(&self) -> String {
        let mut rows: BTreeMap<&str, BTreeMap<Attack, Verdict>> = BTreeMap::new();
        for f in &self.findings {
            let cell = rows
                .entry(&f.operation)
                .or_default()
                .entry(f.attack)
                .or_insert(f.verdict);
            // A cell shows its worst attempt.
            if rank(f.verdict) > rank(*cell) {
                *cell = f.verdict;
            }
        }
        let width = rows.keys().map(|k| k.len()).max().unwrap_or(9).max(9);
        let mut out = format!("{:width$}", "operation");
        for attack in Attack::ALL {
            out.push_str(&format!(" {:>7}", attack.short()));
        }
        out.push('\n');
        for (operation, cells) in &rows {
            out.push_str(&format!("{operation:width$}"));
            for attack in Attack::ALL {
                let text = match cells.get(&attack) {
                    None => "-",
                    Some(Verdict::Refused) => "ok",
                    Some(Verdict::AllowedOwn) => "own",
                    Some(Verdict::Unexpected) => "UNEXP",
                    Some(Verdict::Leak) => "LEAK",
                };
                out.push_str(&format!(" {text:>7}"));
            }
            out.push('\n');
        }
        for f in self
            .findings
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::Leak | Verdict::Unexpected))
        {
            out.push_str(&format!(
                "{:?} {} [{}]: {}\n",
                f.verdict,
                f.operation,
                f.attack.short(),
                f.detail
            ));
        }
        out.push_str("legend: ok refused as documented; own answered with the caller's own data; - not applicable\n");
        out
    }
}

pub(crate) fn rank(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Refused => 0,
        Verdict::AllowedOwn => 1,
        Verdict::Unexpected => 2,
        Verdict::Leak => 3,
    }
}
