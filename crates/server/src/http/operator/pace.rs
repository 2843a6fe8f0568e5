//! The slowest a streamed transfer of the operator API may go, an archive upload or download: a
//! transfer holds an owner connection and a database transaction — and with it the VACUUM
//! horizon of its database — for as long as it lasts, so a trickle must end, not only a stall.

use std::time::Duration;

use tokio::time::Instant;

/// The slowest average a transfer may keep once its grace has passed.
pub(super) const MIN_BYTES_PER_SECOND: u64 = 64 * 1024;

/// A transfer's floor: started now, with `grace` before the rate counts (the request timeout:
/// a first part may take that long to produce or to send).
#[derive(Debug, Clone, Copy)]
pub(super) struct Floor {
    started: Instant,
    grace: Duration,
}

impl Floor {
    pub(super) fn new(grace: Duration) -> Self {
        Self {
            started: Instant::now(),
            grace,
        }
    }

    /// When a transfer that has moved `bytes` so far falls below the floor.
    pub(super) fn deadline(&self, bytes: u64) -> Instant {
        self.started
            + self.grace
            + Duration::from_millis(bytes.saturating_mul(1000) / MIN_BYTES_PER_SECOND)
    }
}

/// A writer that fails with `TimedOut` when a write waits past the floor for what was written
/// so far: an export's writer, so that a client taking the archive slower than the floor ends
/// the export (and its snapshot) even while nothing polls the response body — the server's
/// and the kernel's buffers are full and the client drains them a kilobyte at a time.
pub(super) struct FlooredWriter<W> {
    inner: W,
    floor: Floor,
    written: u64,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<W> FlooredWriter<W> {
    pub(super) fn new(inner: W, floor: Floor) -> Self {
        Self {
            inner,
            floor,
            written: 0,
            timer: Box::pin(tokio::time::sleep_until(floor.deadline(0))),
        }
    }

    /// Pending on `inner`: waits for the floor's deadline too, and fails once it has passed.
    fn waited<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future as _;
        self.timer.as_mut().reset(self.floor.deadline(self.written));
        match self.timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the transfer is slower than 64 KiB/s",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FlooredWriter<W> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(Ok(n)) => {
                this.written += n as u64;
                std::task::Poll::Ready(Ok(n))
            }
            std::task::Poll::Pending => this.waited(cx),
            other => other,
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_flush(cx) {
            std::task::Poll::Pending => this.waited(cx),
            other => other,
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_shutdown(cx) {
            std::task::Poll::Pending => this.waited(cx),
            other => other,
        }
    }
}
