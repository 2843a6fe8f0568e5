//! Named points between the steps of long operations (moves, audit exports) where a test can stop
//! the operation as a kill would, or pause it while something else runs.
//!
//! Without the `test-hooks` feature [`reached`] is an empty function: nothing in a release build
//! can arm a point. With it (enabled only by the test harness, `bulkhead-test-support`, a
//! dev-dependency), a test arms a point for one tenant with [`fail_once`] or [`pause_once`]; the
//! point fires once, for that tenant only, so tests running in parallel do not disturb each other.

use bulkhead_core::TenantId;

use crate::StoreError;

/// A point between two steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HookPoint {
    /// A move's record was created; its `tenant.move.start` event is not written yet.
    MoveRecorded,
    /// Inside a move's switch, everything before the registry commit done.
    SwitchBeforeCommit,
    /// A move's registry commit is done; the target is not live yet.
    SwitchCommitted,
    /// A finished move's `tenant.move` event is written; its record is not deleted yet.
    MoveEventWritten,
    /// An abandoned move's `tenant.move.abandon` event is written; its record is not deleted yet.
    AbandonEventWritten,
    /// An audit export has fixed its checkpoint; no page is read yet.
    ExportCheckpointed,
    /// A purge has removed the tenant's rows in every location; its registry row, the
    /// tombstone and the receipt are not written yet.
    PurgeScrubbed,
}

/// What an armed point returns when set to fail: the operation stops there as a kill would.
pub const HOOK_INTERRUPTED: &str = "stopped at a test hook";

/// Called by the operation at `point` for `tenant`: a no-op unless a test armed the point.
#[cfg(not(feature = "test-hooks"))]
pub async fn reached(_tenant: TenantId, _point: HookPoint) -> Result<(), StoreError> {
    Ok(())
}

/// Called by the operation at `point` for `tenant`: fails or pauses once if a test armed it.
#[cfg(feature = "test-hooks")]
pub async fn reached(tenant: TenantId, point: HookPoint) -> Result<(), StoreError> {
    let armed = armed()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(tenant, point));
    match armed {
        None => Ok(()),
        Some(Armed::Fail) => Err(StoreError::Invalid(HOOK_INTERRUPTED.into())),
        Some(Armed::Pause { reached, release }) => {
            let _ = reached.send(());
            let _ = release.await;
            Ok(())
        }
    }
}

#[cfg(feature = "test-hooks")]
enum Armed {
    Fail,
    Pause {
        reached: tokio::sync::oneshot::Sender<()>,
        release: tokio::sync::oneshot::Receiver<()>,
    },
}

#[cfg(feature = "test-hooks")]
type ArmedPoints = std::collections::HashMap<(TenantId, HookPoint), Armed>;

#[cfg(feature = "test-hooks")]
fn armed() -> &'static std::sync::Mutex<ArmedPoints> {
    static ARMED: std::sync::OnceLock<std::sync::Mutex<ArmedPoints>> = std::sync::OnceLock::new();
    ARMED.get_or_init(Default::default)
}

/// Arms `point` for `tenant`: the next time it is reached, the operation fails there with
/// [`HOOK_INTERRUPTED`] (as if killed; everything committed before stays).
#[cfg(feature = "test-hooks")]
pub fn fail_once(tenant: TenantId, point: HookPoint) {
    armed()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((tenant, point), Armed::Fail);
}

/// A paused point: wait for the operation to arrive, do something, then let it go on.
#[cfg(feature = "test-hooks")]
#[derive(Debug)]
pub struct Pause {
    reached: tokio::sync::oneshot::Receiver<()>,
    release: tokio::sync::oneshot::Sender<()>,
}

#[cfg(feature = "test-hooks")]
impl Pause {
    /// Waits until the operation is at the point (and held there).
    pub async fn reached(&mut self) {
        let _ = (&mut self.reached).await;
    }

    /// Lets the operation go on.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

/// Arms `point` for `tenant`: the next time it is reached, the operation waits there until the
/// returned [`Pause`] is released (or dropped).
#[cfg(feature = "test-hooks")]
pub fn pause_once(tenant: TenantId, point: HookPoint) -> Pause {
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel();
    armed().lock().unwrap_or_else(|e| e.into_inner()).insert(
        (tenant, point),
        Armed::Pause {
            reached: reached_tx,
            release: release_rx,
        },
    );
    Pause {
        reached: reached_rx,
        release: release_tx,
    }
}
