//! The slow neighbour (a slow-loris burst and a hashing burst as tenant A while B's answers
//! are checked), hostile schemas, and A's data unchanged at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::operations::random_marker;
use crate::probe::Probe;
use crate::report::{Attack, Verdict};
use crate::tenants::{Attacker, Host, Victim};

impl Probe {
    /// Issue 28: B is a slow neighbour. First a slow-loris burst ([`SLOW_LORIS_CONNECTIONS`]
    /// connections to the base URL's address that send half a request head and stop), then a
    /// hashing burst (B creates users with fresh emails from [`HASHING_TASKS`] tasks at once,
    /// each costing an argon2id hash), each for [`SLOW_NEIGHBOUR_SECONDS`]. Meanwhile A lists
    /// its sessions every 50 ms: every answer must be a 200 naming A's session, within
    /// [`SLOW_NEIGHBOUR_BOUND`]. B's own answers may be refusals (429, 503 with `Retry-After`)
    /// but never another 5xx. The users B made are disabled after.
    pub(crate) async fn slow_neighbour(&mut self, victim: &Victim) -> anyhow::Result<()> {
        let addr = self
            .config
            .base_url
            .socket_addrs(|| {
                Some(if self.config.base_url.scheme() == "https" {
                    443
                } else {
                    80
                })
            })?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("base URL has no address"))?;
        let session = victim.ids.get("sessions").cloned().unwrap_or_default();
        let b_host = format!("{}.{}", self.config.tenant_b.slug, self.config.base_domain);

        // Slow-loris burst: the connections are held until the burst ends (dropped then).
        let loris = async {
            let mut held = Vec::new();
            let head = format!("GET /v1/sessions HTTP/1.1\r\nHost: {b_host}\r\n");
            for _ in 0..SLOW_LORIS_CONNECTIONS {
                let connect = tokio::net::TcpStream::connect(addr);
                if let Ok(Ok(mut stream)) =
                    tokio::time::timeout(Duration::from_secs(2), connect).await
                {
                    use tokio::io::AsyncWriteExt;
                    if self.config.base_url.scheme() == "http" {
                        let _ = stream.write_all(head.as_bytes()).await;
                    }
                    held.push(stream);
                }
            }
            let opened = held.len();
            tokio::time::sleep(SLOW_NEIGHBOUR_SECONDS).await;
            drop(held);
            format!("{opened} of {SLOW_LORIS_CONNECTIONS} half-sent connections held")
        };
        let (checked, held) = tokio::join!(self.victim_checks(&session), loris);
        self.record_neighbour(
            &format!("slow neighbour: slow-loris burst ({SLOW_LORIS_CONNECTIONS} connections)"),
            checked?,
            held,
            true,
        );

        // Hashing burst: B creates users with fresh emails, each a full argon2id hash.
        let marker = random_marker();
        let tag = &marker[marker.len() - 8..];
        let b_key = self.config.tenant_b.admin_key.clone();
        let password = format!("probe password {marker}");
        let this = &*self;
        let hashing = async {
            let deadline = tokio::time::Instant::now() + SLOW_NEIGHBOUR_SECONDS;
            let tasks = (0..HASHING_TASKS).map(|t| {
                let (b_key, password) = (b_key.clone(), password.clone());
                async move {
                    let mut seen = Vec::new();
                    let mut n = 0;
                    while tokio::time::Instant::now() < deadline {
                        let body = json!({
                            "email": format!("probe-hash-{tag}-{t}-{n}@probe.invalid"),
                            "password": password,
                        });
                        n += 1;
                        match this
                            .send(
                                Host::B,
                                Some(&b_key),
                                Method::POST,
                                "/v1/users",
                                Some(&body),
                            )
                            .await
                        {
                            Ok((status, text)) => {
                                let id = serde_json::from_str::<Value>(&text)
                                    .ok()
                                    .and_then(|v| v["id"].as_str().map(str::to_owned));
                                seen.push((status, id));
                                if status == StatusCode::SERVICE_UNAVAILABLE
                                    || status == StatusCode::TOO_MANY_REQUESTS
                                {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            }
                            Err(_) => seen.push((StatusCode::BAD_GATEWAY, None)),
                        }
                    }
                    seen
                }
            });
            futures::future::join_all(tasks).await.concat()
        };
        let (checked, seen) = tokio::join!(this.victim_checks(&session), hashing);
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        for (status, _) in &seen {
            *statuses.entry(status.as_u16()).or_default() += 1;
        }
        let b_ok = seen.iter().all(|(status, _)| {
            !status.is_server_error() || *status == StatusCode::SERVICE_UNAVAILABLE
        });
        self.record_neighbour(
            &format!("slow neighbour: hashing burst (B creates users, {HASHING_TASKS} at once)"),
            checked?,
            format!("B's answers {statuses:?}"),
            b_ok,
        );
        for id in seen.iter().filter_map(|(_, id)| id.as_deref()) {
            let _ = self
                .send(
                    Host::B,
                    Some(&b_key),
                    Method::PATCH,
                    &format!("/v1/users/{id}"),
                    Some(&json!({ "status": "disabled" })),
                )
                .await;
        }
        Ok(())
    }

    /// A lists its sessions every 50 ms for [`SLOW_NEIGHBOUR_SECONDS`]: how many answers, how many
    /// were a 200 naming `session` within the bound, and the slowest.
    pub(crate) async fn victim_checks(&self, session: &str) -> anyhow::Result<NeighbourChecks> {
        let a_key = self.config.tenant_a.admin_key.clone();
        let deadline = tokio::time::Instant::now() + SLOW_NEIGHBOUR_SECONDS;
        let mut out = NeighbourChecks::default();
        while tokio::time::Instant::now() < deadline {
            let started = tokio::time::Instant::now();
            let answer = tokio::time::timeout(
                SLOW_NEIGHBOUR_BOUND,
                self.send(Host::A, Some(&a_key), Method::GET, "/v1/sessions", None),
            )
            .await;
            let took = started.elapsed();
            out.answers += 1;
            out.slowest = out.slowest.max(took);
            match answer {
                Ok(Ok((StatusCode::OK, text))) if text.contains(session) => out.good += 1,
                Ok(Ok((status, _))) => out.wrong.push(status.to_string()),
                Ok(Err(e)) => out.wrong.push(format!("error: {e}")),
                Err(_) => out
                    .wrong
                    .push(format!("no answer within {SLOW_NEIGHBOUR_BOUND:?}")),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(out)
    }

    pub(crate) fn record_neighbour(
        &mut self,
        op: &str,
        checks: NeighbourChecks,
        attacker: String,
        b_ok: bool,
    ) {
        let passed = checks.answers > 0 && checks.good == checks.answers && b_ok;
        let detail = format!(
            "A: {} of {} answers a correct 200 within {SLOW_NEIGHBOUR_BOUND:?} (slowest {} ms){}; {attacker}",
            checks.good,
            checks.answers,
            checks.slowest.as_millis(),
            if checks.wrong.is_empty() {
                String::new()
            } else {
                format!(", others: {:?}", &checks.wrong[..checks.wrong.len().min(5)])
            },
        );
        let verdict = if passed {
            Verdict::Refused
        } else {
            Verdict::Unexpected
        };
        self.record(op, Attack::SlowNeighbour, verdict, detail);
    }

    /// A's resources must be exactly as they were.
    /// Issues 26 and 27: B registers each hostile case of the schema corpus (cycles, fan-out,
    /// deep nesting, huge enums, slow patterns with ~900 KB inputs, remote refs) and, where
    /// registration accepts it, calls it, while A lists its tools at the same time. B must be
    /// refused (422) at registration or at the call, and A answered (200), every time. The
    /// endpoint URL is never reached: a refused input sends nothing.
    pub(crate) async fn hostile_schemas(&mut self) -> anyhow::Result<()> {
        use bulkhead_schema::corpus::{self, Expect};
        let b_key = self.config.tenant_b.admin_key.clone();
        let a_key = self.config.tenant_a.admin_key.clone();
        for case in corpus::all() {
            if case.expect == Expect::Accepted {
                continue;
            }
            let name: String = format!("probe-{}", case.name.replace('_', "-"))
                .chars()
                .take(64)
                .collect();
            let create = json!({
                "name": name,
                "description": "Probe: hostile input schema.",
                "input_schema": case.schema,
                "endpoint_url": "https://tool.probe.example/run",
            });
            let call = json!({ "input": case.input });
            let b = async {
                let (status, text) = self
                    .send(
                        Host::B,
                        Some(&b_key),
                        Method::POST,
                        "/v1/tools",
                        Some(&create),
                    )
                    .await?;
                if status != StatusCode::CREATED {
                    return anyhow::Ok((status, None, text));
                }
                let path = format!("/v1/tools/{name}/calls");
                let called = self
                    .send(Host::B, Some(&b_key), Method::POST, &path, Some(&call))
                    .await;
                let _ = self
                    .send(
                        Host::B,
                        Some(&b_key),
                        Method::DELETE,
                        &format!("/v1/tools/{name}"),
                        None,
                    )
                    .await;
                let (called, text) = called?;
                Ok((status, Some(called), text))
            };
            let a = self.send(Host::A, Some(&a_key), Method::GET, "/v1/tools", None);
            let (b, a) = tokio::join!(b, a);
            let (a_status, _) = a?;
            let (created, called, text) = b?;
            let refused = match called {
                None => created == StatusCode::UNPROCESSABLE_ENTITY,
                Some(called) => called == StatusCode::UNPROCESSABLE_ENTITY,
            };
            let verdict = if refused && a_status == StatusCode::OK {
                Verdict::Refused
            } else {
                Verdict::Unexpected
            };
            let detail = format!(
                "B registration {created}, B call {}, A {a_status}: {}",
                called.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                text.chars().take(200).collect::<String>()
            );
            self.record(
                &format!("POST /v1/tools (schema {})", case.name),
                Attack::HostileSchema,
                verdict,
                detail,
            );
        }
        Ok(())
    }

    pub(crate) async fn check_unchanged(&mut self, victim: &Victim) -> anyhow::Result<()> {
        for (what, before) in &victim.snapshots {
            let path = what.split_once(' ').map_or(what.as_str(), |(_, p)| p);
            let key = self.config.tenant_a.admin_key.clone();
            let (status, text) = self
                .send(Host::A, Some(&key), Method::GET, path, None)
                .await?;
            let now: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let (verdict, detail) = if !status.is_success() {
                (Verdict::Leak, format!("gone: {status}"))
            } else if &now != before {
                (
                    Verdict::Leak,
                    format!("changed: before {before}, after {now}"),
                )
            } else {
                (Verdict::Refused, "unchanged".to_owned())
            };
            self.record(
                &format!("A's data: {what}"),
                Attack::ForeignIds,
                verdict,
                detail,
            );
        }
        Ok(())
    }

    pub(crate) async fn clean_up(&mut self, victim: &mut Victim, attacker: &Attacker) {
        let a = |path: String| (Method::DELETE, path);
        let ids = &victim.ids;
        let mut steps = Vec::new();
        if let Some(id) = ids.get("grants") {
            steps.push(a(format!("/v1/auth/grants/{id}")));
        }
        if let Some(id) = &victim.browser.assignment {
            steps.push(a(format!("/v1/role-assignments/{id}")));
        }
        if let Some(id) = ids.get("role-assignments") {
            steps.push(a(format!("/v1/role-assignments/{id}")));
        }
        if let Some(id) = ids.get("roles") {
            steps.push(a(format!("/v1/roles/{id}")));
        }
        if let Some(id) = ids.get("sessions") {
            steps.push(a(format!("/v1/sessions/{id}")));
        }
        if let Some(id) = ids.get("endpoints") {
            steps.push(a(format!("/v1/webhooks/endpoints/{id}")));
        }
        if let Some(name) = ids.get("tools") {
            steps.push(a(format!("/v1/tools/{name}")));
        }
        if let Some(id) = ids.get("oauth-resources") {
            steps.push(a(format!("/v1/oauth-resources/{id}")));
        }
        if let Some(id) = ids.get("oauth-clients") {
            steps.push(a(format!("/v1/oauth-clients/{id}")));
        }
        for (method, path) in steps {
            let _ = self.as_a(method, &path, None).await;
        }
        if let Some(id) = ids.get("api-keys") {
            let _ = self
                .as_a(
                    Method::POST,
                    &format!("/v1/api-keys/{id}/revoke"),
                    Some(json!({})),
                )
                .await;
        }
        if let Some(id) = ids.get("agents") {
            let _ = self
                .as_a(
                    Method::PATCH,
                    &format!("/v1/agents/{id}"),
                    Some(json!({ "status": "disabled" })),
                )
                .await;
        }
        if let Some(id) = ids.get("users") {
            let _ = self
                .as_a(
                    Method::PATCH,
                    &format!("/v1/users/{id}"),
                    Some(json!({ "status": "disabled" })),
                )
                .await;
        }
        if let Some(policy) = victim.token_policy.take() {
            let _ = self
                .as_a(Method::PUT, "/v1/token-policy", Some(policy))
                .await;
        }
        for id in &attacker.made_keys {
            let _ = self
                .as_b(
                    Method::POST,
                    &format!("/v1/api-keys/{id}/revoke"),
                    Some(json!({})),
                )
                .await;
        }
    }
}

/// Half-sent connections of the slow-loris burst: well below the server's default cap per
/// address (256), so that the probe's own requests from the same address still connect.
pub(crate) const SLOW_LORIS_CONNECTIONS: usize = 200;
/// Tasks of the hashing burst.
pub(crate) const HASHING_TASKS: usize = 8;
/// Length of each slow-neighbour burst.
pub(crate) const SLOW_NEIGHBOUR_SECONDS: Duration = Duration::from_secs(3);
/// Each of A's answers during a burst must arrive within this (generous: CI runs a debug build
/// on shared runners; an unprotected server takes the 10 s header timeout or never answers).
pub(crate) const SLOW_NEIGHBOUR_BOUND: Duration = Duration::from_secs(2);

/// What A saw during one slow-neighbour burst.
#[derive(Debug, Default)]
pub(crate) struct NeighbourChecks {
    pub(crate) answers: usize,
    pub(crate) good: usize,
    pub(crate) slowest: Duration,
    pub(crate) wrong: Vec<String>,
}

/// One HTTP/1.1 exchange on a fresh connection to `addr` (the base URL's own address): the
/// status code and the whole answer, read until the server closes (at most 64 KiB, 10 s).
pub(crate) async fn raw_exchange(addr: SocketAddr, request: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("raw request timed out")??;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}
