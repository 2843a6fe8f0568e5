//! Name resolution: the guarded resolver is the only one the egress client has.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::policy::EgressPolicy;
use super::EgressError;

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
pub(super) struct Blocked(pub(super) EgressError);

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
