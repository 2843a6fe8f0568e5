//! Loopback webhook receivers and canaries, with real TLS from a CA made at test time.
//!
//! A [`Receiver`] listens on a loopback address only, counts every TCP connection it accepts
//! (before any TLS), records the requests it reads and answers from a script of [`Reply`]s. A
//! canary is a receiver that should never be reached: tests assert its connection count stays 0.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bulkhead_webhooks::{EgressClient, EgressConfig, StaticResolver};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A certificate authority made for one test run.
pub struct TestCa {
    /// The CA certificate, DER: what the client under test trusts.
    pub cert_der: Vec<u8>,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Bulkhead test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            cert_der: cert.der().to_vec(),
            cert,
            key,
        }
    }

    /// A TLS server configuration for the given DNS names, signed by this CA.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names).expect("leaf params");
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        Arc::new(config)
    }

    /// Like [`TestCa::server_config`], offering HTTP/2 through ALPN (`h2`, then `http/1.1`):
    /// a receiver started with it speaks HTTP/2 to every client that asks for it.
    pub fn server_config_h2(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let mut config = Arc::unwrap_or_clone(self.server_config(names));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// How a receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, with these extra headers and this body.
    Status(u16, Vec<(String, String)>, String),
    /// Never answer (the connection stays open until the client gives up).
    Hang,
    /// Wait this long, then answer like the inner reply (a slow endpoint that does answer).
    After(std::time::Duration, Box<Reply>),
}

impl Reply {
    /// A bare status.
    pub fn status(code: u16) -> Self {
        Reply::Status(code, Vec::new(), String::new())
    }
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request line method.
    pub method: String,
    /// Request target.
    pub path: String,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Vec<u8>,
    /// When the whole request had arrived.
    pub at: std::time::Instant,
    /// The protocol it came in (HTTP/1.1, or HTTP/2 when ALPN chose `h2`).
    pub version: http::Version,
}

#[derive(Debug, Default)]
struct Shared {
    connections: AtomicUsize,
    requests: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    keep_alive: std::sync::atomic::AtomicBool,
    /// Replies by request path, before the script (one route of a shared receiver host).
    routes: Mutex<Vec<(String, Reply)>>,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` it announces (0: the h2 default).
    max_streams: std::sync::atomic::AtomicU32,
}

impl Shared {
    /// The answer to a request for `path`: its route's, else the script's next, else the default.
    fn reply_for(&self, path: &str) -> Reply {
        if let Some((_, reply)) = self
            .routes
            .lock()
            .expect("routes")
            .iter()
            .find(|(p, _)| p == path)
        {
            return reply.clone();
        }
        let reply = self.script.lock().expect("script").pop_front();
        reply
            .or_else(|| self.default.lock().expect("default").clone())
            .unwrap_or(Reply::status(200))
    }
}

/// TLS receivers reached by name, as real webhook and tool endpoints are: each serves a
/// certificate of [`NamedReceivers::ca`] for its name, and [`NamedReceivers::resolver`] answers
/// the name with the receiver's loopback address. A client from
/// [`NamedReceivers::egress_client`] trusts the CA and resolves through the resolver; a test may
/// start canaries with the CA and point names at them through the resolver itself.
#[derive(Debug, Default)]
pub struct NamedReceivers {
    /// Signs every receiver's certificate.
    pub ca: TestCa,
    /// Names receivers (and canaries) for the egress client.
    pub resolver: StaticResolver,
}

impl NamedReceivers {
    /// A fresh CA and an empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// A TLS receiver on `ip` for `name`, which resolves to `ip` from now on.
    pub async fn start(&self, name: &str, ip: IpAddr) -> Receiver {
        let receiver = Receiver::start(ip, 0, Some(self.ca.server_config(&[name]))).await;
        self.resolver.insert(name, vec![ip]);
        receiver
    }

    /// Egress settings trusting the CA, with a short connect timeout (a receiver is local; a
    /// connection that does not open at once will not).
    pub fn egress_config(&self) -> EgressConfig {
        EgressConfig {
            extra_roots_der: vec![self.ca.cert_der.clone()],
            connect_timeout: std::time::Duration::from_secs(2),
            ..EgressConfig::default()
        }
    }

    /// An egress client under [`crate::test_egress_policy`] with `config`, resolving through
    /// the resolver.
    pub fn egress_client(&self, config: &EgressConfig) -> EgressClient {
        EgressClient::new(
            crate::test_egress_policy(),
            Arc::new(self.resolver.clone()),
            config,
        )
        .expect("egress client")
    }
}

/// A loopback receiver (or canary).
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Listens on `ip:port` (`port` 0: any). Panics unless `ip` is loopback: tests reach
    /// loopback only.
    pub async fn start(ip: IpAddr, port: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        assert!(ip.is_loopback(), "test receivers listen on loopback only");
        let listener = TcpListener::bind(SocketAddr::new(ip, port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Shared::default());
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let state = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                if tls.get_ref().1.alpn_protocol() == Some(&b"h2"[..]) {
                                    serve_h2(tls, state).await;
                                } else {
                                    serve(tls, state).await;
                                }
                            }
                        }
                        None => serve(stream, state).await,
                    }
                });
            }
        });
        Receiver { addr, shared }
    }

    /// Answers with `replies` in order, then with the default (200 unless set).
    pub fn script(&self, replies: Vec<Reply>) {
        self.shared.script.lock().expect("script").extend(replies);
    }

    /// The answer once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        *self.shared.default.lock().expect("default") = Some(reply);
    }

    /// Answers every request for `path` with `reply` (a multi-tenant relay host: one route
    /// per customer).
    pub fn set_route(&self, path: &str, reply: Reply) {
        self.shared
            .routes
            .lock()
            .expect("routes")
            .push((path.to_owned(), reply));
    }

    /// Announces at most `n` concurrent streams per HTTP/2 connection (for connections accepted
    /// after the call), as busy production receivers do.
    pub fn set_max_concurrent_streams(&self, n: u32) {
        self.shared.max_streams.store(n, Ordering::SeqCst);
    }

    /// Keeps connections open for further requests (HTTP/1.1 keep-alive) instead of answering
    /// `connection: close`: what a production receiver does, for benchmarks of pooled clients.
    pub fn set_keep_alive(&self, on: bool) {
        self.shared.keep_alive.store(on, Ordering::SeqCst);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests read so far.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// How many requests were read so far, without copying them: waiting loops poll this, and
    /// copying tens of thousands of requests every few milliseconds held the list's lock (and
    /// the load generator's CPU) for most of a benchmark's wait.
    pub fn count(&self) -> usize {
        self.shared.requests.lock().expect("requests").len()
    }

    /// Waits until at least `n` requests arrived, up to `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.count() >= n {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.count() >= n
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, state: Arc<Shared>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
            if buf.len() > 64 * 1024 {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let path = request_line.next().unwrap_or_default().to_owned();
        let mut headers = http::HeaderMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name.trim().as_bytes()),
                    http::HeaderValue::from_str(value.trim()),
                ) {
                    headers.append(n, v);
                }
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        // Whatever came after this request's body is the start of the next one.
        buf = body.split_off(length.min(body.len()));
        // Stamped before the lock: a reader copying the list must not delay the arrival time.
        let at = std::time::Instant::now();
        state.requests.lock().expect("requests").push(Received {
            method,
            path: path.clone(),
            headers,
            body,
            at,
            version: http::Version::HTTP_11,
        });
        let mut reply = state.reply_for(&path);
        while let Reply::After(delay, inner) = reply {
            tokio::time::sleep(delay).await;
            reply = *inner;
        }
        let keep_alive = state.keep_alive.load(Ordering::SeqCst);
        match reply {
            Reply::Hang => {
                // Hold the connection until the client closes it.
                let _ = stream.read(&mut chunk).await;
                return;
            }
            Reply::Status(code, extra, body) => {
                let connection = if keep_alive { "keep-alive" } else { "close" };
                let mut out = format!(
                    "HTTP/1.1 {code} Test\r\ncontent-length: {}\r\nconnection: {connection}\r\n",
                    body.len()
                );
                for (name, value) in extra {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                let _ = stream.write_all(out.as_bytes()).await;
                if !keep_alive {
                    let _ = stream.shutdown().await;
                    return;
                }
            }
            Reply::After(..) => unreachable!("unwrapped above"),
        }
    }
}

/// HTTP/2 (after ALPN chose `h2`): every stream is one request, answered from the same script.
async fn serve_h2<S>(stream: S, state: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = h2::server::Builder::new();
    let max_streams = state.max_streams.load(Ordering::SeqCst);
    if max_streams > 0 {
        builder.max_concurrent_streams(max_streams);
    }
    let Ok(mut connection) = builder.handshake::<_, bytes::Bytes>(stream).await else {
        return;
    };
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let (parts, mut body) = request.into_parts();
            let mut bytes = Vec::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            let at = std::time::Instant::now();
            state.requests.lock().expect("requests").push(Received {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                headers: parts.headers,
                body: bytes,
                at,
                version: http::Version::HTTP_2,
            });
            let mut reply = state.reply_for(parts.uri.path());
            while let Reply::After(delay, inner) = reply {
                tokio::time::sleep(delay).await;
                reply = *inner;
            }
            match reply {
                // Keep the stream open, unanswered, until the client gives up.
                Reply::Hang => std::future::pending::<()>().await,
                Reply::Status(code, extra, text) => {
                    let mut response = http::Response::builder().status(code);
                    for (name, value) in extra {
                        response = response.header(name, value);
                    }
                    let Ok(response) = response.body(()) else {
                        return;
                    };
                    let Ok(mut send) = respond.send_response(response, text.is_empty()) else {
                        return;
                    };
                    if !text.is_empty() {
                        let _ = send.send_data(bytes::Bytes::from(text), true);
                    }
                }
                Reply::After(..) => unreachable!("unwrapped above"),
            }
        });
    }
}
