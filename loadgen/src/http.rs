//! loadgen's HTTP/1.1 client: one origin, a connection pool we can see into, and no redirects.
//!
//! We keep our own pool over hyper's connection API instead of reqwest's because a measurement needs
//! three facts reqwest hides:
//! * whether a request went out on a new or a reused connection (recorded; a reused connection that a
//!   server closed after its last response is the commonest spurious failure in the field: llama.cpp's
//!   server advertises keep-alive and closes after every stream);
//! * whether any response byte came back before a failure: only a request that failed on a *reused*
//!   connection with nothing read can be retried honestly (the server never saw it), and it is retried
//!   once, on a fresh connection;
//! * that a 3xx is an answer to record, not a hop to follow.
//!
//! Every connection counts the bytes it reads, which is how "nothing read" is known exactly, and
//! keeps a [`WireClock`]: when its last read returned bytes and when the current request's first byte
//! was written. The request's send and every event's arrival are stamped from it, at the socket,
//! not when hyper's connection task hands the data on (a cross-task wake-up: about 0.1 ms each way
//! on an idle machine, which the self-check measured as client error).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Longest wait for a pooled connection to become ready before it is given up for a new one.
const IDLE_READY_WAIT: Duration = Duration::from_millis(100);

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (DNS, refused, TLS handshake …).
    #[error("{0}")]
    Connect(String),
    /// The connection failed before a response head arrived.
    #[error("{0}")]
    Request(String),
}

/// Where the API lives: scheme, host and port, and the path prefix requests are appended to.
#[derive(Debug, Clone)]
pub struct Origin {
    pub tls: bool,
    /// `host:port` for connecting (IPv6 literals keep their brackets).
    pub addr: String,
    /// Host name for TLS (no brackets, no port).
    pub host: String,
    /// The `Host` header.
    pub authority: String,
    /// Path prefix without its trailing slash, e.g. `/v1`.
    pub base_path: String,
}

impl Origin {
    /// Parses `http(s)://host[:port][/path]`.
    pub fn parse(base: &str) -> Result<Self, String> {
        let uri: hyper::Uri = base
            .parse()
            .map_err(|e| format!("'{base}' is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("'{base}' must start with http:// or https://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("'{base}' has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "'{base}': credentials in the URL are not supported; use --api-key"
            ));
        }
        let host = authority.host().to_string();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(Self {
            tls,
            addr: format!("{host}:{port}"),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            authority: authority.as_str().to_string(),
            base_path,
        })
    }
}

/// When a connection last read bytes and first wrote the current request, as nanoseconds after a
/// process-wide anchor, plus one (0: not yet).
#[derive(Debug, Default)]
pub struct WireClock {
    read_bytes: AtomicU64,
    last_read_ns: AtomicU64,
    first_write_ns: AtomicU64,
}

/// The instant wire times are counted from.
fn anchor() -> Instant {
    static ANCHOR: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

fn stamp() -> u64 {
    anchor().elapsed().as_nanos() as u64 + 1
}

fn instant(ns: u64) -> Option<Instant> {
    (ns > 0).then(|| anchor() + Duration::from_nanos(ns - 1))
}

impl WireClock {
    /// When the last read that returned bytes returned (None before any).
    pub fn last_read(&self) -> Option<Instant> {
        instant(self.last_read_ns.load(Ordering::Acquire))
    }

    /// When the current request's first byte was written (None before it is).
    pub fn first_write(&self) -> Option<Instant> {
        instant(self.first_write_ns.load(Ordering::Acquire))
    }

    fn read(&self, n: usize) {
        self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.last_read_ns.store(stamp(), Ordering::Release);
    }

    /// Keeps `before` (taken just before a write that then wrote bytes) as the request's first write.
    /// Taken before the system call, never after: the write wakes the server, which on a shared
    /// core may run (and stamp the request's arrival) before the writer is back.
    fn wrote(&self, before: u64) {
        let _ =
            self.first_write_ns
                .compare_exchange(0, before, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// A live connection: its request sender and its wire clock.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    clock: Arc<WireClock>,
}

/// What a successful send produced.
pub struct Sent {
    pub response: Response<Incoming>,
    /// Hand back with [`Lease::release`] once the body has been read to its end.
    pub lease: Lease,
    /// Whether the request went out on a connection opened for it.
    pub new_connection: bool,
    /// µs spent opening that connection (TCP, and TLS for https), outside the request's timing.
    pub connect_us: Option<u64>,
    /// When the request went out a second time: why the first try failed.
    pub retried_after: Option<String>,
    /// When the request's first byte was written to the connection that answered (when it was
    /// handed to it, if the write was not seen).
    pub sent_at: Instant,
    /// The answering connection's clock: when each read of the response returned.
    pub clock: Arc<WireClock>,
}

/// A connection lent to one request; back in the pool only when released after a clean end.
pub struct Lease {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    reusable: bool,
}

impl Lease {
    /// Returns the connection for reuse (when the server did not ask to close it).
    pub fn release(mut self) {
        if let Some(c) = self.conn.take()
            && self.reusable
            && !c.sender.is_closed()
        {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.pool.max_idle {
                idle.push(c);
            }
        }
    }
}

struct Pool {
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

/// The client: one origin, a pool of up to `max_idle` idle connections.
#[derive(Clone)]
pub struct HttpClient {
    origin: Arc<Origin>,
    tls: Option<tokio_rustls::TlsConnector>,
    pool: Arc<Pool>,
    connect_timeout: Duration,
}

/// Counts the bytes read through it, so a failure can tell whether any response byte arrived, and
/// stamps reads and the first write on the connection's [`WireClock`].
struct Counted<T> {
    inner: T,
    clock: Arc<WireClock>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.clock.read(n);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let before = stamp();
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.wrote(before);
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let before = stamp();
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.wrote(before);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The whole error chain on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let next = inner.to_string();
        if !s.ends_with(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        src = inner.source();
    }
    s
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    crate::client::install_crypto_provider();
    let mut cfg = rustls::ClientConfig::builder()
        .with_platform_verifier()
        .map_err(|e| format!("setting up TLS certificate verification: {e}"))?
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

impl HttpClient {
    /// A client for `base` (e.g. `http://localhost:5543/v1`) keeping up to `max_idle` connections.
    pub fn new(base: &str, max_idle: usize, connect_timeout: Duration) -> Result<Self, String> {
        let origin = Origin::parse(base)?;
        let tls = if origin.tls {
            Some(tls_connector()?)
        } else {
            None
        };
        Ok(Self {
            origin: Arc::new(origin),
            tls,
            pool: Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                max_idle: max_idle.max(1),
            }),
            connect_timeout,
        })
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Opens up to `n` connections ahead of the measured requests, so their set-up stays out of the
    /// first requests' timing. Failures are ignored here: each request then reports its own.
    pub async fn warm(&self, n: usize) {
        let n = n.min(self.pool.max_idle);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let me = self.clone();
            set.spawn(async move { me.connect().await.ok() });
        }
        while let Some(r) = set.join_next().await {
            if let Ok(Some(c)) = r {
                let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < self.pool.max_idle {
                    idle.push(c);
                }
            }
        }
    }

    /// Idle connections in the pool (for tests and diagnostics).
    pub fn idle_connections(&self) -> usize {
        self.pool.idle.lock().map_or(0, |i| i.len())
    }

    fn pop_idle(&self) -> Option<Conn> {
        self.pool
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
    }

    /// An idle connection that is open and ready for a request. A connection released a moment ago
    /// may still be finishing its last response in its task: wait for it (briefly) rather than drop
    /// a good connection.
    async fn take_idle(&self) -> Option<Conn> {
        while let Some(mut c) = self.pop_idle() {
            if c.sender.is_closed() {
                continue;
            }
            if let Ok(Ok(())) = tokio::time::timeout(IDLE_READY_WAIT, c.sender.ready()).await {
                return Some(c);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let fut = async {
            let tcp = TcpStream::connect(&self.origin.addr)
                .await
                .map_err(|e| format!("connecting to {}: {}", self.origin.addr, error_chain(&e)))?;
            let _ = tcp.set_nodelay(true);
            let clock = Arc::new(WireClock::default());
            let sender = match &self.tls {
                None => handshake(tcp, clock.clone()).await?,
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::try_from(self.origin.host.clone())
                        .map_err(|e| format!("'{}' as a TLS name: {e}", self.origin.host))?;
                    let stream = tls.connect(name, tcp).await.map_err(|e| {
                        format!(
                            "TLS handshake with {}: {}",
                            self.origin.addr,
                            error_chain(&e)
                        )
                    })?;
                    handshake(stream, clock.clone()).await?
                }
            };
            Ok::<_, String>(Conn { sender, clock })
        };
        match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(r) => r.map_err(SendError::Connect),
            Err(_) => Err(SendError::Connect(format!(
                "connecting to {}: no connection within {:?}",
                self.origin.addr, self.connect_timeout
            ))),
        }
    }

    /// The request for `path` (appended to the base path) with `body` and extra `headers`.
    fn request(&self, path: &str, body: &Bytes, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
        let mut b = Request::post(format!("{}{path}", self.origin.base_path))
            .header(hyper::header::HOST, &self.origin.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "text/event-stream, application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("tokenperf-loadgen/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Full::new(body.clone()))
            .expect("method, path and headers are valid")
    }

    /// A connection: an idle one if any, else a new one (with the µs it took to open).
    async fn checkout(&self) -> Result<(Conn, Option<u64>), SendError> {
        if let Some(c) = self.take_idle().await {
            return Ok((c, None));
        }
        let t = Instant::now();
        let c = self.connect().await?;
        Ok((c, Some(t.elapsed().as_micros() as u64)))
    }

    /// POSTs `body` to `path` and returns once the response head is in. A request that fails on a
    /// reused connection before any response byte is retried once on a new connection. `on_send`
    /// is called each time the request is handed to a connection, with whether it is a new one (the
    /// caller stamps its send time).
    pub async fn post(
        &self,
        path: &str,
        body: &Bytes,
        headers: &[(&str, &str)],
        on_send: &mut (dyn FnMut(bool) + Send),
    ) -> Result<Sent, SendError> {
        let (mut conn, mut connect_us) = self.checkout().await?;
        let mut retried_after = None;
        loop {
            let new_connection = connect_us.is_some();
            let read_before = conn.clock.read_bytes.load(Ordering::Relaxed);
            conn.clock.first_write_ns.store(0, Ordering::Release);
            let handed_at = Instant::now();
            on_send(new_connection);
            let result = conn
                .sender
                .send_request(self.request(path, body, headers))
                .await;
            match result {
                Ok(response) => {
                    let reusable = !closes(&response);
                    let clock = conn.clock.clone();
                    return Ok(Sent {
                        sent_at: clock.first_write().unwrap_or(handed_at),
                        clock,
                        response,
                        lease: Lease {
                            conn: Some(conn),
                            pool: self.pool.clone(),
                            reusable,
                        },
                        new_connection,
                        connect_us,
                        retried_after,
                    });
                }
                Err(e) => {
                    let nothing_read = conn.clock.read_bytes.load(Ordering::Relaxed) == read_before;
                    let why = error_chain(&e);
                    if !new_connection && nothing_read && retried_after.is_none() {
                        // The server closed this connection after its last response; it never saw
                        // this request. One more try, on a connection opened for it.
                        retried_after = Some(format!("on a reused connection: {why}"));
                        let t = Instant::now();
                        conn = self.connect().await?;
                        connect_us = Some(t.elapsed().as_micros() as u64);
                        continue;
                    }
                    let place = if new_connection { "new" } else { "reused" };
                    let read = if nothing_read {
                        "before any response byte"
                    } else {
                        "during the response head"
                    };
                    return Err(SendError::Request(format!(
                        "the {place} connection failed {read}: {why}"
                    )));
                }
            }
        }
    }
}

/// Most bytes a connection's read buffer may hold.
pub const READ_BUFFER_BYTES: usize = 32 * 1024;

/// HTTP/1.1 over `io`, its reads and writes stamped on `clock`; the connection runs on its own task.
async fn handshake<T>(io: T, clock: Arc<WireClock>) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let io = TokioIo::new(Counted { inner: io, clock });
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        // hyper's read buffer grows while reads fill it, up to ~400 KiB by default: a server that
        // bursts whole responses would make every one of 1,000 connections hold that much. 32 KiB
        // is many SSE events per read and bounds a stream's buffer (BENCHMARKS.md, memory).
        .max_buf_size(READ_BUFFER_BYTES)
        .handshake(io)
        .await
        .map_err(|e| error_chain(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Whether the response asks to close the connection after it (or is HTTP/1.0 without keep-alive).
fn closes(r: &Response<Incoming>) -> bool {
    let conn = r
        .headers()
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    if conn.iter().any(|t| t == "close") {
        return true;
    }
    r.version() == hyper::Version::HTTP_10 && !conn.iter().any(|t| t == "keep-alive")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock keeps a request's first write (until reset for the next request) and every read
    /// that returned bytes, in order.
    #[tokio::test]
    async fn the_wire_clock_stamps_the_first_write_and_the_last_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(64);
        let clock = Arc::new(WireClock::default());
        let mut io = Counted {
            inner: a,
            clock: clock.clone(),
        };
        assert!(clock.first_write().is_none() && clock.last_read().is_none());
        let before = Instant::now();
        io.write_all(b"POST").await.unwrap();
        let first = clock.first_write().unwrap();
        io.write_all(b" /v1").await.unwrap();
        assert_eq!(
            clock.first_write(),
            Some(first),
            "later writes keep the first"
        );
        assert!(first >= before && first <= Instant::now());
        clock.first_write_ns.store(0, Ordering::Release);
        io.write_all(b"next").await.unwrap();
        assert!(
            clock.first_write().unwrap() >= first,
            "a reset clock takes the next request's"
        );

        b.write_all(b"data").await.unwrap();
        let mut buf = [0u8; 8];
        let n = io.read(&mut buf).await.unwrap();
        let r1 = clock.last_read().unwrap();
        assert_eq!(n, 4);
        b.write_all(b"more").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 4);
        assert!(clock.last_read().unwrap() >= r1);
        assert_eq!(clock.read_bytes.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn origins() {
        let o = Origin::parse("http://localhost:5543/v1/").unwrap();
        assert_eq!(
            (o.tls, o.addr.as_str(), o.base_path.as_str()),
            (false, "localhost:5543", "/v1")
        );
        let o = Origin::parse("https://api.example.com").unwrap();
        assert_eq!(
            (o.tls, o.addr.as_str(), o.base_path.as_str()),
            (true, "api.example.com:443", "")
        );
        let o = Origin::parse("http://[::1]:8000/v1").unwrap();
        assert_eq!((o.addr.as_str(), o.host.as_str()), ("[::1]:8000", "::1"));
        assert!(Origin::parse("ftp://x/v1").is_err());
        assert!(Origin::parse("http://u:p@x/v1").is_err());
    }
}
