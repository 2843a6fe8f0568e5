//! The one tail of a write: after the store call, in the transaction that made the change, the
//! audit events, then the platform events (webhooks), then the ceiling-change notice, then the
//! commit, and only after the commit this process's own ceiling cache is dropped.
//!
//! The order is the guarantee: the audit event commits with the change or not at all (no
//! change without its record, no record of a change that did not happen), a platform event is
//! queued only with the change it announces, and no side effect outside the transaction (the
//! local cache) happens before the commit made the change real.

use bulkhead_core::TenantContext;
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::{tenant::webhooks, TenantTx};
use serde_json::Value;

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// One step inside the transaction, kept in the order the handler named it.
enum Step {
    Audit {
        action: &'static str,
        resource: Option<String>,
        meta: Value,
    },
    Event {
        event_type: &'static str,
        payload: Value,
    },
}

/// What a successful write leaves behind; [`Tail::commit`] writes it and commits.
#[must_use = "a tail does nothing until it is committed"]
#[derive(Default)]
pub(crate) struct Tail {
    steps: Vec<Step>,
    ceilings_changed: bool,
}

impl Tail {
    /// An empty tail.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The audit event of a write to one resource (success).
    pub(crate) fn audit(
        mut self,
        action: &'static str,
        resource: impl std::fmt::Display,
        meta: Value,
    ) -> Self {
        self.steps.push(Step::Audit {
            action,
            resource: Some(resource.to_string()),
            meta,
        });
        self
    }

    /// The audit event of a tenant-wide write (a policy), which names no resource.
    pub(crate) fn audit_tenant_wide(mut self, action: &'static str, meta: Value) -> Self {
        self.steps.push(Step::Audit {
            action,
            resource: None,
            meta,
        });
        self
    }

    /// A platform event for the tenant's webhook subscribers, queued with the change.
    pub(crate) fn event(mut self, event_type: &'static str, payload: Value) -> Self {
        self.steps.push(Step::Event {
            event_type,
            payload,
        });
        self
    }

    /// The write changed what credentials may do (roles, assignments, principal status): other
    /// processes drop the tenant's ceilings at commit (NOTIFY), this one right after it.
    pub(crate) fn ceilings_changed(mut self) -> Self {
        self.ceilings_changed = true;
        self
    }

    /// Writes the steps in order, announces a ceiling change, commits, then drops this process's
    /// cached ceilings of the tenant if they changed.
    pub(crate) async fn commit(
        self,
        mut tx: TenantTx,
        state: &AppState,
        ctx: &TenantContext,
    ) -> Result<(), ApiError> {
        for step in self.steps {
            match step {
                Step::Audit {
                    action,
                    resource,
                    meta,
                } => {
                    audit::record(&mut tx, action, resource.as_deref(), Outcome::Success, meta)
                        .await?;
                }
                Step::Event {
                    event_type,
                    payload,
                } => {
                    webhooks::enqueue_platform_event(&mut tx, event_type, payload).await?;
                }
            }
        }
        if self.ceilings_changed {
            crate::service::ceilings::announce_change(&mut tx).await?;
        }
        tx.commit().await?;
        if self.ceilings_changed {
            state.ceilings().invalidate_tenant(ctx.tenant_id());
        }
        Ok(())
    }
}

/// A write refused by a unique constraint is a 409 saying what exists; any other store error
/// maps as usual.
pub(crate) fn conflict_as(err: bulkhead_store::StoreError, message: &'static str) -> ApiError {
    match err {
        bulkhead_store::StoreError::Conflict { .. } => ApiError::Conflict(message.into()),
        other => other.into(),
    }
}

/// The audit event of a refused request (`outcome` blocked or failure), in a transaction of its
/// own: the refusal changed nothing, and its record must not depend on a write that never began
/// (or was rolled back).
pub(crate) async fn record_refusal(
    state: &AppState,
    ctx: &TenantContext,
    action: &str,
    resource: Option<&str>,
    outcome: Outcome,
    meta: Value,
) -> Result<(), ApiError> {
    let mut tx = state
        .store()
        .begin(ctx, bulkhead_store::Access::ReadWrite)
        .await?;
    audit::record(&mut tx, action, resource, outcome, meta).await?;
    tx.commit().await?;
    Ok(())
}
