//! The lines of the `bulkhead::audit` log target: what the operator's log says of a security
//! decision that has no tenant transaction to be recorded in (a refused credential, a refused
//! request, a limit reached) or that an operator's command made.
//!
//! Every line names its action and outcome first, then whose it is (tenant, actor) and what
//! else the decision names; [`AuditLine`] writes them with one set of field names, so that a
//! log query for `tenant_id` or `reason` finds every line. A field left unset is not written.
//! Only ids, names and counts go in: never a key, a token or a password.

use std::fmt::Display;

use bulkhead_core::TenantContext;

/// One `bulkhead::audit` line, written by [`AuditLine::info`], [`warn`](AuditLine::warn) or
/// [`error`](AuditLine::error).
#[derive(Debug, Default)]
#[must_use = "an audit line is written by info, warn or error"]
pub struct AuditLine {
    action: &'static str,
    outcome: &'static str,
    tenant_id: Option<String>,
    actor_id: Option<String>,
    /// By [`Detail`].
    details: [Option<String>; 6],
    missing_scope: Option<String>,
    check: Option<&'static str>,
    level: Option<&'static str>,
    class: Option<&'static str>,
    limit: Option<i64>,
    usage: Option<i64>,
}

/// What else a line names, each in its own field.
#[derive(Debug, Clone, Copy)]
pub enum Detail {
    /// `reason`: why it was refused or failed.
    Reason,
    /// `resource_id`: what it acted on.
    Resource,
    /// `key_id`: the API key it made or used (its id, never the key).
    Key,
    /// `kind`: the kind of quota.
    Kind,
    /// `region`: the region.
    Region,
    /// `error`: the error that made it fail.
    Error,
}

impl AuditLine {
    /// `action` was done.
    pub fn success(action: &'static str) -> Self {
        Self::new(action, "success")
    }

    /// `action` was refused by a rule (a suspension, a limit, a quota).
    pub fn blocked(action: &'static str) -> Self {
        Self::new(action, "blocked")
    }

    /// `action` failed (a credential refused, a lookup that did not answer).
    pub fn failure(action: &'static str) -> Self {
        Self::new(action, "failure")
    }

    fn new(action: &'static str, outcome: &'static str) -> Self {
        Self {
            action,
            outcome,
            ..Self::default()
        }
    }

    /// The tenant and the actor of a request's context.
    pub fn by(self, ctx: &TenantContext) -> Self {
        self.tenant(ctx.tenant_id()).actor(ctx.actor().audit_id())
    }

    /// The tenant.
    pub fn tenant(self, tenant: impl Display) -> Self {
        self.tenant_if(Some(tenant))
    }

    /// The tenant, when it is known.
    pub fn tenant_if(mut self, tenant: Option<impl Display>) -> Self {
        self.tenant_id = tenant.map(|t| t.to_string());
        self
    }

    /// Who acted: a key id, a user, an agent, or `system:…` for the operator and the jobs.
    pub fn actor(self, actor: impl Display) -> Self {
        self.actor_if(Some(actor))
    }

    /// Who acted, when it is known.
    pub fn actor_if(mut self, actor: Option<impl Display>) -> Self {
        self.actor_id = actor.map(|a| a.to_string());
        self
    }

    /// The `detail` it names.
    pub fn with(mut self, detail: Detail, value: impl Display) -> Self {
        self.details[detail as usize] = Some(value.to_string());
        self
    }

    /// The permission it lacked, and which check found that (`route`, `resource-prefix`, …).
    pub fn missing(mut self, scope: impl Display, check: &'static str) -> Self {
        self.missing_scope = Some(scope.to_string());
        self.check = Some(check);
        self
    }

    /// The rate limit level that refused it (when one did) and the route's class.
    pub fn rate(mut self, level: Option<&'static str>, class: &'static str) -> Self {
        self.level = level;
        self.class = Some(class);
        self
    }

    /// The quota's limit and the usage before the refused write.
    pub fn quota(mut self, limit: i64, usage: i64) -> Self {
        self.limit = Some(limit);
        self.usage = Some(usage);
        self
    }

    /// Writes the line at level INFO (an operator's change, a success).
    pub fn info(self, message: &str) {
        self.write(tracing::Level::INFO, message);
    }

    /// Writes the line at level WARN (a refusal).
    pub fn warn(self, message: &str) {
        self.write(tracing::Level::WARN, message);
    }

    /// Writes the line at level ERROR (the server could not decide: it denied).
    pub fn error(self, message: &str) {
        self.write(tracing::Level::ERROR, message);
    }

    fn write(self, level: tracing::Level, message: &str) {
        let [reason, resource_id, key_id, kind, region, error] = self.details;
        // A tracing event's level is part of its call site, so each level has its own.
        macro_rules! audit_event {
            ($level:expr) => {
                tracing::event!(
                    target: "bulkhead::audit",
                    $level,
                    action = self.action,
                    outcome = self.outcome,
                    reason,
                    tenant_id = self.tenant_id,
                    actor_id = self.actor_id,
                    resource_id,
                    key_id,
                    kind,
                    region,
                    missing_scope = self.missing_scope,
                    check = self.check,
                    level = self.level,
                    class = self.class,
                    limit = self.limit,
                    usage = self.usage,
                    error,
                    "{message}"
                )
            };
        }
        if level == tracing::Level::ERROR {
            audit_event!(tracing::Level::ERROR);
        } else if level == tracing::Level::WARN {
            audit_event!(tracing::Level::WARN);
        } else {
            audit_event!(tracing::Level::INFO);
        }
    }
}
