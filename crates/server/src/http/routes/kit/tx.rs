//! The one shape of a handler's transaction: begin in the tenant's context, the store calls,
//! then the commit (a read) or the [`Tail`] of the write (audit, platform events, commit).
//!
//! An error anywhere drops the transaction uncommitted, which rolls it back: a handler cannot
//! forget the commit, nor commit a write without the tail its closure names.

use bulkhead_core::TenantContext;
use bulkhead_store::{Access, TenantTx};

use super::write::Tail;
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// Runs `reads` in one read-only transaction of the tenant and commits it.
pub(crate) async fn read<T>(
    state: &AppState,
    ctx: &TenantContext,
    reads: impl AsyncFnOnce(&mut TenantTx) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let value = reads(&mut tx).await?;
    tx.commit().await?;
    Ok(value)
}

/// Runs `writes` in one read-write transaction of the tenant, then commits it through the
/// [`Tail`] the writes leave (their audit event and platform events land with the change).
pub(crate) async fn write<T>(
    state: &AppState,
    ctx: &TenantContext,
    writes: impl AsyncFnOnce(&mut TenantTx) -> Result<(T, Tail), ApiError>,
) -> Result<T, ApiError> {
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let (value, tail) = writes(&mut tx).await?;
    tail.commit(tx, state, ctx).await?;
    Ok(value)
}
