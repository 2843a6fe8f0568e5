//! Moving tenants from the operator API (issue 19): a move started over the API runs in this
//! process's background, one run per tenant in any process (the store's move-run lock), and is
//! followed by asking for its state. The move itself, its steps and its guarantees are
//! `bulkhead_store::lifecycle::moves`; docs/operator-api.md says how the API uses it.
//!
//! Every run is an operator action (`tenant.move`: `started`, committed before anything moves,
//! then `success` or `failure`), as for `bulkhead tenant move`. A run stopped by the process
//! ending leaves the move recorded, to be resumed by starting it again or abandoned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bulkhead_core::TenantId;
use bulkhead_store::lifecycle::moves::{self, MoveOptions, MoveProgress, MoveReport};
use bulkhead_store::placement::location::Placement;
use bulkhead_store::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;

use crate::service::operators;

/// What this process knows of a tenant's latest move run.
#[derive(Debug, Clone, Serialize)]
pub struct MoveRun {
    /// When the run began.
    pub started_at: DateTime<Utc>,
    /// When it ended (`None`: running).
    pub finished_at: Option<DateTime<Utc>>,
    /// The step running (or last run).
    pub step: Option<&'static str>,
    /// The table last copied or verified in that step.
    pub table: Option<&'static str>,
    /// The report of a run that finished the move.
    pub report: Option<MoveReport>,
    /// Why a run stopped without finishing.
    pub error: Option<String>,
}

impl MoveRun {
    /// Whether the run is still going.
    pub fn running(&self) -> bool {
        self.finished_at.is_none()
    }
}

/// The move runs started in this process, by tenant: the latest one each (a bounded map: one
/// entry per tenant ever moved through this process, replaced by its next run).
#[derive(Debug, Default)]
pub struct MoveRuns {
    runs: Mutex<HashMap<TenantId, MoveRun>>,
}

impl MoveRuns {
    /// The latest run of `tenant`'s move in this process, if any.
    pub fn get(&self, tenant: TenantId) -> Option<MoveRun> {
        self.lock().get(&tenant).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, MoveRun>> {
        // A panic while holding the lock leaves plain data behind: still usable.
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a new run of `tenant`'s move, unless one runs here already (this tenant's or,
    /// one at a time, another's).
    fn reserve(&self, tenant: TenantId) -> Result<(), StoreError> {
        let mut runs = self.lock();
        if runs.get(&tenant).is_some_and(MoveRun::running) {
            return Err(StoreError::Conflict {
                constraint: "a run of this tenant's move is in progress here; follow it with \
                             GET …/move"
                    .into(),
            });
        }
        // One background move per process: a run holds two of the operator plane's few
        // owner connections for whole steps, and the plane's other work needs the rest.
        if let Some((other, _)) = runs.iter().find(|(_, run)| run.running()) {
            return Err(StoreError::Conflict {
                constraint: format!(
                    "this process is moving another tenant ({other}); one move at a time: \
                     try again when it has ended"
                ),
            });
        }
        runs.insert(
            tenant,
            MoveRun {
                started_at: Utc::now(),
                finished_at: None,
                step: None,
                table: None,
                report: None,
                error: None,
            },
        );
        Ok(())
    }

    fn update(&self, tenant: TenantId, change: impl FnOnce(&mut MoveRun)) {
        if let Some(run) = self.lock().get_mut(&tenant) {
            change(run);
        }
    }

    /// Starts (or resumes) the move of `tenant` to `to` (`to_region`: another region) in the
    /// background and answers once it has begun moving: `Ok` with its state, or the refusal of
    /// a move that could not begin (another move recorded, a deletion, the same location, a
    /// run elsewhere, the operator log unwritable). `operator` names who asked.
    ///
    /// `on_end` runs when the run ends, however it ends (dropping what this process cached of
    /// the tenant's place).
    pub async fn start(
        self: &Arc<Self>,
        owner: &Store,
        tenant: TenantId,
        to: Placement,
        to_region: Option<String>,
        operator: &str,
        on_end: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<MoveRun, StoreError> {
        let meta = json!({ "to": to.to_string(), "to_region": to_region });
        if let Err(busy) = self.reserve(tenant) {
            // Refused here as a run elsewhere is refused by the store's lock: in the log.
            return operators::audited(
                owner,
                operator,
                "tenant.move",
                Some(tenant.to_string()),
                meta,
                |_: &MoveRun| tenant.to_string(),
                async { Err(busy) },
            )
            .await;
        }
        let (began, begun) = oneshot::channel::<Result<(), StoreError>>();
        let began = Mutex::new(Some(began));
        let runs = Arc::clone(self);
        let owner = owner.clone();
        let operator = operator.to_owned();
        tokio::spawn(async move {
            // Should the run panic, its entry still ends (else it would refuse every later run).
            let _ended = EndOnDrop {
                runs: Arc::clone(&runs),
                tenant,
            };
            let progress = |p: MoveProgress| {
                let (step, table) = match p {
                    MoveProgress::Step(step) => (step, None),
                    MoveProgress::Table { step, table, .. } => (step, Some(table)),
                };
                runs.update(tenant, |run| {
                    run.step = Some(step.as_str());
                    run.table = table;
                });
                if let Some(began) = began
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                {
                    let _ = began.send(Ok(()));
                }
            };
            let result = operators::audited(
                &owner,
                &operator,
                "tenant.move",
                Some(tenant.to_string()),
                meta,
                |_: &MoveReport| tenant.to_string(),
                moves::move_tenant(
                    &owner,
                    tenant,
                    to,
                    MoveOptions {
                        to_region,
                        progress: Some(&progress),
                        ..MoveOptions::default()
                    },
                ),
            )
            .await;
            let waiting = began
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            match result {
                Ok(report) => {
                    runs.update(tenant, |run| {
                        run.finished_at = Some(Utc::now());
                        run.report = Some(report);
                    });
                    if let Some(waiting) = waiting {
                        let _ = waiting.send(Ok(()));
                    }
                }
                Err(err) => {
                    tracing::warn!(tenant_id = %tenant, error = %err, "tenant move stopped");
                    runs.update(tenant, |run| {
                        run.finished_at = Some(Utc::now());
                        run.error = Some(err.to_string().chars().take(500).collect());
                    });
                    if let Some(waiting) = waiting {
                        let _ = waiting.send(Err(err));
                    }
                }
            }
            on_end.await;
        });
        match begun.await {
            // Inserted above and never removed: present.
            Ok(Ok(())) => self
                .get(tenant)
                .ok_or_else(|| StoreError::Invalid("the move's run is not recorded".into())),
            Ok(Err(err)) => Err(err),
            // The task ended without a word (it panicked): the move is as its record says.
            Err(_) => Err(StoreError::Invalid(
                "the move's run ended unexpectedly; see GET …/move".into(),
            )),
        }
    }
}

/// Marks a tenant's run ended, if it is not already, when dropped.
struct EndOnDrop {
    runs: Arc<MoveRuns>,
    tenant: TenantId,
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.runs.update(self.tenant, |run| {
            if run.finished_at.is_none() {
                run.finished_at = Some(Utc::now());
                run.error =
                    Some("the run ended unexpectedly; the move is as it is recorded".into());
            }
        });
    }
}
