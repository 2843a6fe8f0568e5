//! The running server's operator socket, for the tenant commands in embedded mode: when a
//! `bulkhead serve` holds the data directory's cluster, a command asks it over
//! `<data-dir>/operator.sock` instead of opening the cluster itself (docs/operator-api.md).
//!
//! Authentication is the socket's: it is 0600, and the server takes a request that carries no
//! `Authorization` header from a peer running as its own account (`SO_PEERCRED`) as the owner,
//! audited as `cli:<account>`, the actor the command would have been on the database directly.

use std::path::{Path, PathBuf};

use anyhow::Context;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::config::operator::OPERATOR_SOCKET;
use crate::config::DatabaseArgs;

/// A server answering on the data directory's operator socket.
#[derive(Debug)]
pub(super) struct Running {
    socket: PathBuf,
}

/// Whether a server runs on `database`'s data directory: `Some` if its operator socket accepts
/// a connection; `None` with `DATABASE_URL` (every process may open that database), when there
/// is no socket, or when the socket is stale (a server that was killed left it: nobody
/// answers), so the command works on the data directory itself.
pub(super) async fn running(database: &DatabaseArgs) -> anyhow::Result<Option<Running>> {
    if database.database_url.is_some() {
        return Ok(None);
    }
    probe(&database.data_dir.join(OPERATOR_SOCKET)).await
}

/// [`running`] for a socket path.
pub(super) async fn probe(socket: &Path) -> anyhow::Result<Option<Running>> {
    match tokio::net::UnixStream::connect(socket).await {
        Ok(_) => Ok(Some(Running {
            socket: socket.to_owned(),
        })),
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(err) => Err(err).with_context(|| {
            format!(
                "cannot connect to the running server's operator socket {} (is it run by \
                 another account?)",
                socket.display()
            )
        }),
    }
}

/// A failed operator request: the server's problem document, said as an error.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) status: u16,
    pub(super) message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (the server answered {})", self.message, self.status)
    }
}

impl std::error::Error for Refused {}

impl Running {
    /// Sends one request (no `Authorization`: the socket's peer account is the credential)
    /// and returns the JSON answer of a 2xx, or [`Refused`].
    pub(super) async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost");
        let body = match body {
            Some(json) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                http_body_util::Full::new(bytes::Bytes::from(json.to_string()))
            }
            None => http_body_util::Full::new(bytes::Bytes::new()),
        };
        json_answer(self.send(request.body(body)?).await?).await
    }
}

/// The JSON of a 2xx answer (`null` when empty), or [`Refused`].
async fn json_answer(response: http::Response<hyper::body::Incoming>) -> anyhow::Result<Value> {
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if status.is_success() {
        return Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
    }
    Err(refused(status, &bytes).into())
}

impl Running {
    /// One request on a fresh connection to the socket.
    async fn send<B>(
        &self,
        request: http::Request<B>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("cannot connect to {}", self.socket.display()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender.send_request(request).await?)
    }

    /// Sends a `POST` whose body is `input`, streamed as read (reporting the bytes sent so far),
    /// and returns the JSON answer of a 2xx, or [`Refused`].
    pub(super) async fn upload<R>(
        &self,
        path: &str,
        content_type: &str,
        input: R,
        progress: &(dyn Fn(u64) + Sync),
    ) -> anyhow::Result<Value>
    where
        R: tokio::io::AsyncRead + Send + 'static,
    {
        use futures::StreamExt as _;
        let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(0u64);
        let mut sent = 0u64;
        let frames = tokio_util::io::ReaderStream::new(input).map(move |chunk| {
            let chunk = chunk?;
            sent += chunk.len() as u64;
            sent_tx.send_replace(sent);
            Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk))
        });
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, content_type)
            .body(http_body_util::StreamBody::new(frames))?;
        let answer = self.send(request);
        tokio::pin!(answer);
        let response = loop {
            tokio::select! {
                response = &mut answer => break response?,
                Ok(()) = sent_rx.changed() => progress(*sent_rx.borrow()),
            }
        };
        json_answer(response).await
    }

    /// Sends a `GET` and streams a 2xx answer's body into `out` (reporting the bytes written so
    /// far), or returns [`Refused`].
    pub(super) async fn download(
        &self,
        path: &str,
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        progress: &(dyn Fn(u64) + Sync),
    ) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let request = http::Request::builder()
            .method(http::Method::GET)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))?;
        let response = self.send(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            return Err(refused(status, &bytes).into());
        }
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data).await?;
                written += data.len() as u64;
                progress(written);
            }
        }
        Ok(())
    }
}

/// A non-2xx answer's problem document as [`Refused`].
fn refused(status: http::StatusCode, body: &[u8]) -> Refused {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    Refused {
        status: status.as_u16(),
        message: json["detail"]
            .as_str()
            .or(json["title"].as_str())
            .unwrap_or("the operator API refused the request")
            .to_owned(),
    }
}

/// `name` as one path segment (slugs and ids never need escaping; anything else is refused
/// here rather than sent).
pub(super) fn segment(name: &str) -> anyhow::Result<&str> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(name)
    } else {
        anyhow::bail!("no tenant `{name}`")
    }
}

/// The server's 404 said as the command says it in direct mode.
pub(super) fn not_found_as_cli(err: anyhow::Error, tenant: &str) -> anyhow::Error {
    match err.downcast_ref::<Refused>() {
        Some(refused) if refused.status == 404 => anyhow::anyhow!("no tenant `{tenant}`"),
        _ => err,
    }
}
