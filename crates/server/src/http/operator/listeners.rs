//! The operator API's listeners: binding every endpoint of `--operator-listen`, serving the
//! router on each, and a stop that waits for their connections and for the imports and exports
//! still running before the pools they write through close.

use std::future::Future;

use super::{router, socket, OperatorState};

/// Serves the operator router on `listener` (the Unix socket or a loopback TCP listener) until
/// `shutdown`, with the API's timeouts and caps of its own
/// ([`crate::config::ConnectionSettings::for_metrics`]: a small total, so the operator door
/// cannot take the descriptors the tenant API may use).
pub async fn serve<L: crate::http::listener::Incoming>(
    listener: L,
    state: OperatorState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = state.app.config().connections.for_metrics();
    crate::http::listener::serve(listener, router(state), settings, Vec::new(), shutdown).await
}

/// How long a stopping server waits for the imports and exports still running.
const TRANSFERS_AT_STOP: std::time::Duration = std::time::Duration::from_secs(60);

/// The running operator listeners of a process.
#[derive(Debug)]
pub struct OperatorListeners {
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    sockets: Vec<socket::OperatorSocket>,
    transfers: tokio_util::task::TaskTracker,
    /// Where they listen (`unix:PATH`, `http://ADDRESS`), for the start banner and tests.
    pub endpoints: Vec<String>,
}

impl OperatorListeners {
    /// Waits for every listener to finish its connections (after the stop signal) and for the
    /// imports and exports still running (a client may have left them: they end committed or
    /// abandoned, and logged, before the pools close; at most [`TRANSFERS_AT_STOP`]), then
    /// removes the socket files.
    pub async fn finish(self) {
        for task in self.tasks {
            task.await.ok();
        }
        self.transfers.close();
        if tokio::time::timeout(TRANSFERS_AT_STOP, self.transfers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "an import or export was still running when the server stopped; it is cut off \
                 (an import is not committed; its operator log has no closing event)"
            );
        }
        drop(self.sockets);
    }
}

/// Binds every endpoint of `--operator-listen` (a bind failure is a start-up error) and serves
/// the operator API on each until `stopped` turns true. `data_dir` holds the default socket.
pub async fn start(
    endpoints: &[crate::config::operator::OperatorEndpoint],
    data_dir: &std::path::Path,
    state: OperatorState,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<OperatorListeners> {
    use anyhow::Context;
    let mut listeners = OperatorListeners {
        tasks: Vec::new(),
        sockets: Vec::new(),
        transfers: state.transfers.clone(),
        endpoints: Vec::new(),
    };
    for endpoint in endpoints {
        let mut stopped = stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        match endpoint.socket_path(data_dir) {
            Some(path) => {
                let (listener, guard) = socket::bind(&path)?;
                listeners.sockets.push(guard);
                listeners.endpoints.push(format!("unix:{}", path.display()));
                listeners
                    .tasks
                    .push(tokio::spawn(serve(listener, state.clone(), shutdown)));
            }
            None => {
                let crate::config::operator::OperatorEndpoint::Tcp(addr) = endpoint else {
                    continue;
                };
                let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen for the operator API on {addr} (--operator-listen)")
                })?;
                listeners
                    .endpoints
                    .push(format!("http://{}", listener.local_addr()?));
                listeners
                    .tasks
                    .push(tokio::spawn(serve(listener, state.clone(), shutdown)));
            }
        }
    }
    Ok(listeners)
}
