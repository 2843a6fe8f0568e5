//! The slowest a streamed transfer of the operator API may go, an archive upload or download: a
//! transfer holds an owner connection and a database transaction — and with it the VACUUM
//! horizon of its database — for as long as it lasts, so a trickle must end, not only a stall.
//!
//! Only the time spent waiting on the client counts: the server's own work between two chunks
//! (a table part read from the database, an import's migrations and row writes) is never
//! charged to it.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

/// The slowest average a transfer may keep once its grace has passed.
pub(super) const MIN_BYTES_PER_SECOND: u64 = 64 * 1024;

/// A transfer's floor: `grace` of waiting on the client (the request timeout: long enough for a
/// first part), then [`MIN_BYTES_PER_SECOND`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Floor {
    grace: Duration,
}

impl Floor {
    pub(super) fn new(grace: Duration) -> Self {
        Self { grace }
    }

    /// How long a transfer that has moved `bytes` may have waited on its client in all.
    pub(super) fn allowance(&self, bytes: u64) -> Duration {
        self.grace + Duration::from_millis(bytes.saturating_mul(1000) / MIN_BYTES_PER_SECOND)
    }
}

/// A writer that fails with `TimedOut` once the time its writes have waited (the client not
/// reading) passes the floor's allowance for what was written: an export's writer, so that a
/// client taking the archive slower than the floor ends the export (and its snapshot) even while
/// nothing polls the response body — the server's and the kernel's buffers are full and the
/// client drains them a kilobyte at a time.
pub(super) struct FlooredWriter<W> {
    inner: W,
    floor: Floor,
    written: u64,
    /// Time spent waiting on `inner` before the current wait.
    waited: Duration,
    /// When the current wait began.
    waiting_since: Option<Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<W> FlooredWriter<W> {
    pub(super) fn new(inner: W, floor: Floor) -> Self {
        Self {
            inner,
            floor,
            written: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// What `inner` answered, with the floor applied: a wait that ended is added to the time
    /// waited; a pending one waits for `inner` or for the end of the allowance, and fails at the
    /// latter.
    fn floored<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_pending() {
            return self.pending(cx);
        }
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
        polled
    }

    /// `inner` is pending: wait for it or for the end of the allowance, and fail at the latter.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let left = self
            .floor
            .allowance(self.written)
            .saturating_sub(self.waited);
        self.timer.as_mut().reset(since + left);
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the transfer is slower than 64 KiB/s",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FlooredWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        let answer = this.floored(cx, polled);
        if let Poll::Ready(Ok(n)) = &answer {
            this.written += *n as u64;
        }
        answer
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.floored(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.floored(cx, polled)
    }
}

/// Whether a transfer failed on its floor or stall limit (a `TimedOut` anywhere in the chain:
/// only these limits raise it on a transfer).
pub(super) fn timed_out(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}
