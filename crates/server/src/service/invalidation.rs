//! Keeping this process's caches in step with the others: a writer announces a change with a
//! NOTIFY whose payload names what changed, and every process drops its cached copy.

use std::future::Future;
use std::time::Duration;

use bulkhead_store::StoreError;
use sqlx::postgres::PgListener;
use uuid::Uuid;

/// Follows a channel of invalidations for the life of the process, reconnecting on failure.
/// A notification naming an entry (a UUID) drops that entry; one it cannot read drops
/// everything, and so does every (re)connection and lost connection, since a notification may
/// have been missed while nothing was listening. `what` names the cache in the log.
pub(crate) async fn follow<C>(
    what: &str,
    connect: impl Fn() -> C,
    forget: impl Fn(Uuid),
    forget_all: impl Fn(),
) where
    C: Future<Output = Result<PgListener, StoreError>>,
{
    loop {
        let mut listener = match connect().await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "{what} change listener cannot connect; retrying");
                forget_all();
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Anything cached before we were listening may be stale.
        forget_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => match Uuid::parse_str(notification.payload()) {
                    Ok(id) => forget(id),
                    Err(_) => forget_all(),
                },
                // The connection was lost and re-established: changes may have been missed.
                Ok(None) => forget_all(),
                Err(err) => {
                    tracing::warn!(error = %err, "{what} change listener failed; reconnecting");
                    forget_all();
                    break;
                }
            }
        }
    }
}
