//! loadgen's HTTP/1.1 client: one origin, a connection pool we can see into, and no redirects.
//!
//! We keep our own client instead of reqwest's because a measurement needs three facts reqwest
//! hides:
//! * whether a request went out on a new or a reused connection (recorded; a reused connection that a
//!   server closed after its last response is the commonest spurious failure in the field: llama.cpp's
//!   server advertises keep-alive and closes after every stream);
//! * whether any response byte came back before a failure: only a request that failed on a *reused*
//!   connection with nothing read can be retried honestly (the server never saw it), and it is retried
//!   once, on a fresh connection;
//! * that a 3xx is an answer to record, not a hop to follow.
//!
//! A connection is owned by the request using it: the request's task writes the request, reads
//! the response and decodes its framing ([`crate::h1`]) itself, with no connection task between it
//! and the socket. So the request's send is stamped just before the system call that wrote its first
//! byte, and every piece of the body carries the time of the read that brought it: when its last
//! byte reached the host, by the kernel's receive stamp (plain connections, `--rx-timestamps`),
//! or else when the read returned.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::h1::{self, Decoded, Decoder, FramingError, Head};
use crate::rxstamp::RxTimestamps;

/// Bytes a connection's read buffer starts with; it doubles while reads fill it, up to
/// [`READ_BUFFER_BYTES`].
const FIRST_READ_BYTES: usize = 8 * 1024;

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

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the response: {0}")]
    Io(#[from] io::Error),
    #[error("the connection closed before the body's end")]
    Closed,
    #[error(transparent)]
    Framing(#[from] FramingError),
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

/// What a connection has read: how many bytes in all (so a failure knows whether any response byte
/// came) and when the last read that returned bytes returned.
#[derive(Debug, Default)]
struct WireClock {
    read_bytes: u64,
    last_read: Option<Instant>,
}

impl WireClock {
    /// A read of `n` bytes, at the kernel's receive stamp where there is one, else now.
    fn read(&mut self, n: usize, stamp: Option<Instant>) {
        self.read_bytes += n as u64;
        self.last_read = Some(stamp.unwrap_or_else(Instant::now));
    }
}

/// A connection's byte stream: plain, read and written through the socket's readiness by our own
/// calls (so that a read can carry the kernel's receive stamp, which tokio's reads do not ask
/// for), or TLS.
enum Io {
    Plain {
        fd: AsyncFd<std::net::TcpStream>,
        /// Whether the kernel stamps what the socket receives ([`crate::rxstamp`]).
        stamped: bool,
    },
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Io {
    /// A plain connection over `tcp`, asking the kernel for receive stamps as `how` says.
    fn plain(tcp: TcpStream, how: RxTimestamps) -> io::Result<Self> {
        let tcp = tcp.into_std()?;
        let stamps = crate::rxstamp::enable_for(&tcp, how)?;
        // SAFETY (reviewed, one of the workspace's `unsafe` exceptions): the descriptor is owned
        // by the `TcpStream` the `AsyncFd` owns, so it stays open and the same for the AsyncFd's
        // whole life, and `as_raw_fd` always returns it.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(tcp) }.map_err(io::Error::from)?;
        Ok(Io::Plain {
            fd,
            stamped: stamps,
        })
    }

    /// One read, polled: the bytes read and, with kernel stamps, when the last of them reached the
    /// host. Polled rather than awaited, and waiting through `poll_read_ready` (the socket's one
    /// reader slot) rather than `readable()` (a waiter list behind a lock): an event of one of a
    /// thousand streams then touches one small state instead of a future per level
    /// (BENCHMARKS.md, issue 17). The connection has one reader, its request's task.
    fn poll_read(
        &mut self,
        cx: &mut TaskContext<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, Option<Instant>)>> {
        let (fd, stamped) = match self {
            Io::Plain { fd, stamped } => (fd, *stamped),
            Io::Tls(s) => {
                let mut b = tokio::io::ReadBuf::new(buf);
                return Pin::new(&mut **s)
                    .poll_read(cx, &mut b)
                    .map_ok(|()| (b.filled().len(), None));
            }
        };
        loop {
            let mut ready = ready!(fd.poll_read_ready(cx))?;
            let got = ready.try_io(|s| match stamped {
                true => crate::rxstamp::recv(s.get_ref(), buf),
                false => s.get_ref().read(buf).map(|n| (n, None)),
            });
            match got {
                Ok(Ok((n, stamp))) => {
                    // A read that leaves room in the buffer emptied the socket (as tokio's own
                    // reads judge it), so readiness is cleared now, not by one more system call.
                    if n > 0 && n < buf.len() {
                        ready.clear_ready();
                    }
                    return Poll::Ready(Ok((n, stamp.map(crate::rxstamp::instant_of))));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }

    /// Writes all of `bytes`; returns when the system call that wrote the first of them began.
    /// Stamped before the call, never after: the write wakes the server, which on a shared core may
    /// run (and stamp the request's arrival) before the writer is back.
    async fn write_all_stamped(&mut self, bytes: &[u8]) -> io::Result<Instant> {
        match self {
            Io::Plain { fd, .. } => {
                let (mut first, mut done) = (None, 0);
                while done < bytes.len() {
                    let mut ready = fd.writable().await?;
                    let before = Instant::now();
                    match ready.try_io(|s| s.get_ref().write(&bytes[done..])) {
                        Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(Ok(n)) => {
                            first.get_or_insert(before);
                            done += n;
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => {}
                    }
                }
                Ok(first.unwrap_or_else(Instant::now))
            }
            Io::Tls(s) => {
                let before = Instant::now();
                s.write_all(bytes).await?;
                s.flush().await?;
                Ok(before)
            }
        }
    }

    /// Whether an idle plain connection has been closed by the server (or has bytes nobody asked
    /// for): either way it cannot carry a request. Asked of the kernel (a peek that does not wait),
    /// not of tokio's readiness, which only knows what its last poll saw. TLS connections are not
    /// checked (a TLS 1.3 server sends session tickets after the handshake); a request that fails on
    /// one is retried instead.
    fn is_stale(&self) -> bool {
        use rustix::net::RecvFlags;
        match self {
            Io::Plain { fd, .. } => {
                let mut b = [0u8; 1];
                let peek =
                    rustix::net::recv(fd.get_ref(), &mut b, RecvFlags::PEEK | RecvFlags::DONTWAIT);
                !matches!(peek, Err(e) if e == rustix::io::Errno::AGAIN)
            }
            Io::Tls(_) => false,
        }
    }
}

/// A connection's read buffer: unread bytes at `start..end`, growing only while reads fill it.
struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    fn new() -> Self {
        Self {
            data: vec![0; FIRST_READ_BYTES],
            start: 0,
            end: 0,
        }
    }

    fn unread(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Space for the next read: unread bytes moved to the front when the end is reached, and the
    /// buffer doubled (up to [`READ_BUFFER_BYTES`]) when it is full. Empty when it cannot grow.
    fn room(&mut self) -> &mut [u8] {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.data.len() && self.data.len() < READ_BUFFER_BYTES {
            self.data
                .resize((self.data.len() * 2).min(READ_BUFFER_BYTES), 0);
        }
        &mut self.data[self.end..]
    }
}

/// A live connection: its stream, its read buffer and its clock.
struct Conn {
    io: Io,
    buf: ReadBuffer,
    clock: WireClock,
}

impl Conn {
    fn new(io: Io) -> Self {
        Self {
            io,
            buf: ReadBuffer::new(),
            clock: WireClock::default(),
        }
    }

    /// One read into the buffer: the bytes read, 0 when the server closed the connection.
    fn poll_fill(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<usize>> {
        let room = self.buf.room();
        if room.is_empty() {
            return Poll::Ready(Err(io::Error::other(format!(
                "more than {READ_BUFFER_BYTES} bytes without a complete response head"
            ))));
        }
        let (n, stamp) = ready!(self.io.poll_read(cx, room))?;
        if n > 0 {
            self.buf.end += n;
            self.clock.read(n, stamp);
        }
        Poll::Ready(Ok(n))
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Writes `request` and reads the final response head (interim 1xx heads are skipped): the
    /// head and when the request's first byte was written.
    async fn exchange_head(&mut self, request: &[u8]) -> Result<(Head, Instant), String> {
        let sent_at = self
            .io
            .write_all_stamped(request)
            .await
            .map_err(|e| format!("writing the request: {}", error_chain(&e)))?;
        loop {
            match h1::parse_head(self.buf.unread()).map_err(|e| e.to_string())? {
                Some((head, len)) => {
                    self.buf.consume(len);
                    if (100..200).contains(&head.status) && head.status != 101 {
                        continue;
                    }
                    return Ok((head, sent_at));
                }
                None => match self.fill().await {
                    Ok(0) => return Err("the connection closed before a response head".into()),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(format!("reading the response head: {}", error_chain(&e)));
                    }
                },
            }
        }
    }
}

/// What a successful send produced.
pub struct Sent {
    pub head: Head,
    /// Read to its end, then hand back with [`Body::release`].
    pub body: Body,
    /// Whether the request went out on a connection opened for it.
    pub new_connection: bool,
    /// µs spent opening that connection (TCP, and TLS for https), outside the request's timing.
    pub connect_us: Option<u64>,
    /// When the request went out a second time: why the first try failed.
    pub retried_after: Option<String>,
    /// When the system call that wrote the request's first byte began.
    pub sent_at: Instant,
    /// The time of the read that completed the response head (as [`Data::read_at`]).
    pub head_at: Instant,
}

/// A piece of a response body and the time of the read that brought it: its kernel receive stamp
/// where the connection has them, else when the read returned.
pub struct Data<'a> {
    pub bytes: &'a [u8],
    pub read_at: Instant,
}

/// A response body, read by the request's own task from the connection it owns; the connection
/// goes back to the pool only when the body was read to its clean end and then released.
pub struct Body {
    conn: Option<Conn>,
    decoder: Decoder,
    reusable: bool,
    pool: Arc<Pool>,
    /// Buffer bytes handed out by the last [`Body::data`], consumed at the next call.
    handed: usize,
}

impl Body {
    /// The next piece of the body; `None` at its end. After an error the connection is closed and
    /// every later call returns `None`.
    pub async fn data(&mut self) -> Option<Result<Data<'_>, BodyError>> {
        match std::future::poll_fn(|cx| self.poll_piece(cx)).await {
            Ok(Some(len)) => self.piece(len).map(Ok),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The piece [`Self::poll_piece`] announced: its first `len` unread bytes and their read's time.
    pub fn piece(&self, len: usize) -> Option<Data<'_>> {
        let conn = self.conn.as_ref()?;
        let read_at = conn.clock.last_read.unwrap_or_else(Instant::now);
        let bytes = &conn.buf.unread()[..len];
        Some(Data { bytes, read_at })
    }

    /// Decodes (reading as needed) up to the next piece of body data, which is then the first
    /// `len` unread bytes: `Some(len)`, or `None` at the body's end. Polled by hand, like
    /// [`Io::poll_read`], so that the body's whole read path is one function's state.
    pub fn poll_piece(
        &mut self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<Option<usize>, BodyError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        conn.buf.consume(std::mem::take(&mut self.handed));
        let failure = loop {
            match self.decoder.decode(conn.buf.unread()) {
                Err(e) => break BodyError::Framing(e),
                Ok(Decoded::End { skip }) => {
                    conn.buf.consume(skip);
                    return Poll::Ready(Ok(None));
                }
                Ok(Decoded::Data { skip, len }) => {
                    conn.buf.consume(skip);
                    self.handed = len;
                    return Poll::Ready(Ok(Some(len)));
                }
                Ok(Decoded::More { skip }) => {
                    conn.buf.consume(skip);
                    match ready!(conn.poll_fill(cx)) {
                        Ok(0) => break BodyError::Closed,
                        Ok(_) => {}
                        Err(e) => break BodyError::Io(e),
                    }
                }
            }
        };
        // The connection cannot carry another request after a failure or a close.
        self.conn = None;
        if matches!(failure, BodyError::Closed) && self.decoder.ends_at_close() {
            return Poll::Ready(Ok(None));
        }
        Poll::Ready(Err(failure))
    }

    /// When the connection's last read returned.
    pub fn last_read(&self) -> Option<Instant> {
        self.conn.as_ref().and_then(|c| c.clock.last_read)
    }

    /// Returns the connection for reuse when the body was read to its end, the server did not ask
    /// to close it, and nothing followed the body.
    pub fn release(mut self) {
        if let Some(mut c) = self.conn.take()
            && self.reusable
            && self.decoder.is_done()
        {
            c.buf.consume(std::mem::take(&mut self.handed));
            if c.buf.unread().is_empty() {
                self.pool.put(c);
            }
        }
    }
}

struct Pool {
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

impl Pool {
    fn put(&self, c: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(c);
        }
    }

    fn take(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }
}

/// The client: one origin, a pool of up to `max_idle` idle connections.
#[derive(Clone)]
pub struct HttpClient {
    origin: Arc<Origin>,
    tls: Option<tokio_rustls::TlsConnector>,
    pool: Arc<Pool>,
    connect_timeout: Duration,
    /// Whether plain connections read the kernel's receive stamps (`--rx-timestamps`).
    rx_timestamps: RxTimestamps,
    /// Every connection a tunnel through this proxy (`--proxy`).
    proxy: Option<Arc<crate::proxy::Proxy>>,
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

/// Most bytes a `--ca-cert` file may have: a whole system bundle is about 200 KiB, and a path
/// such as `/dev/zero` must not be read into memory without end.
const MAX_CA_FILE_BYTES: u64 = 16 << 20;

/// Certificates to trust for `https://` on top of the platform's (`--ca-cert`): every
/// `CERTIFICATE` block of a PEM file. A file that cannot be read, is too large, or holds none is an
/// error naming it.
pub fn read_ca_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut pem))
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(format!(
            "{}: larger than {} MiB, not a certificate file",
            path.display(),
            MAX_CA_FILE_BYTES >> 20
        ));
    }
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in it (a block starting -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The TLS settings of every `https://` request, measured or not: the server's certificate is
/// checked against the platform's roots plus `extra_roots`.
fn tls_settings(extra_roots: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, String> {
    crate::client::install_crypto_provider();
    let builder = rustls::ClientConfig::builder();
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
        extra_roots.iter().cloned(),
        builder.crypto_provider().clone(),
    )
    .map_err(|e| format!("setting up TLS certificate verification: {e}"))?;
    let mut cfg = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Whether a header name is an HTTP token and its value holds no line break or NUL (which would
/// end the header early and let the rest pass for another).
fn valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

impl HttpClient {
    /// A client for `base` (e.g. `http://localhost:5543/v1`) keeping up to `max_idle` connections;
    /// `https://` trusts the platform's roots and `extra_roots`.
    pub fn new(
        base: &str,
        max_idle: usize,
        connect_timeout: Duration,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, String> {
        let origin = Origin::parse(base)?;
        let tls = if origin.tls {
            let cfg = tls_settings(extra_roots)?;
            Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
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
            rx_timestamps: RxTimestamps::Read,
            proxy: None,
        })
    }

    /// Makes every connection a tunnel through `proxy` (`--proxy`).
    pub fn with_proxy(mut self, proxy: Option<crate::proxy::Proxy>) -> Self {
        self.proxy = proxy.map(Arc::new);
        self
    }

    /// The TLS settings of this client's `https://` connections (`None` for plain http://), for
    /// other requests to the same server: its roots are read once.
    pub fn tls_config(&self) -> Option<rustls::ClientConfig> {
        self.tls.as_ref().map(|c| (**c.config()).clone())
    }

    /// How reads are timed on plain connections (`--rx-timestamps`; [`RxTimestamps::Read`] until
    /// this is called): with the kernel's receive stamps, each read's time is when its last byte
    /// reached the host.
    pub fn with_rx_timestamps(mut self, how: RxTimestamps) -> Self {
        self.rx_timestamps = how;
        self
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Opens connections ahead of the measured requests until `n` are idle, so their set-up stays
    /// out of the first requests' timing. Failures are ignored here: each request then reports its
    /// own.
    pub async fn warm(&self, n: usize) {
        let n = n
            .min(self.pool.max_idle)
            .saturating_sub(self.idle_connections());
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let me = self.clone();
            set.spawn(async move { me.connect().await.ok() });
        }
        while let Some(r) = set.join_next().await {
            if let Ok(Some(c)) = r {
                self.pool.put(c);
            }
        }
    }

    /// Idle connections in the pool (for tests and diagnostics).
    pub fn idle_connections(&self) -> usize {
        self.pool.idle.lock().map_or(0, |i| i.len())
    }

    /// An idle connection the server has not closed.
    fn take_idle(&self) -> Option<Conn> {
        std::iter::from_fn(|| self.pool.take()).find(|c| !c.io.is_stale())
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let fut = async {
            let tcp = self.open_tcp().await?;
            let Some(tls) = &self.tls else {
                let io = Io::plain(tcp, self.rx_timestamps).map_err(|e| error_chain(&e))?;
                return Ok(Conn::new(io));
            };
            let name = rustls::pki_types::ServerName::try_from(self.origin.host.clone())
                .map_err(|e| format!("'{}' as a TLS name: {e}", self.origin.host))?;
            let stream = tls.connect(name, tcp).await.map_err(|e| {
                format!(
                    "TLS handshake with {}: {}",
                    self.origin.addr,
                    error_chain(&e)
                )
            })?;
            Ok::<_, String>(Conn::new(Io::Tls(Box::new(stream))))
        };
        match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(r) => r.map_err(SendError::Connect),
            Err(_) => Err(SendError::Connect(format!(
                "connecting to {}{}: no connection within {:?}",
                self.origin.addr,
                self.proxy
                    .as_ref()
                    .map_or(String::new(), |p| format!(" through the proxy {}", p.addr)),
                self.connect_timeout
            ))),
        }
    }

    /// A TCP connection to the server, or to the proxy with a tunnel to the server through it.
    async fn open_tcp(&self) -> Result<TcpStream, String> {
        let addr = self.proxy.as_ref().map_or(&self.origin.addr, |p| &p.addr);
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| {
            let via = if self.proxy.is_some() {
                "the proxy "
            } else {
                ""
            };
            format!("connecting to {via}{addr}: {}", error_chain(&e))
        })?;
        let _ = tcp.set_nodelay(true);
        if let Some(proxy) = &self.proxy {
            proxy.tunnel(&mut tcp, &self.origin.addr).await?;
        }
        Ok(tcp)
    }

    /// The request's bytes: a POST of `body` to `path` (appended to the base path) with extra
    /// `headers`.
    fn request(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<Vec<u8>, SendError> {
        use std::io::Write;
        let mut out = Vec::with_capacity(320 + body.len());
        let _ = write!(
            out,
            "POST {}{path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             accept: text/event-stream, application/json\r\nuser-agent: tokenperf-loadgen/{}\r\n",
            self.origin.base_path,
            self.origin.authority,
            env!("CARGO_PKG_VERSION")
        );
        for (k, v) in headers {
            if !valid_header(k, v) {
                return Err(SendError::Request(format!(
                    "the request header '{k}' is not valid HTTP (a line break or NUL in its value?)"
                )));
            }
            let _ = write!(out, "{k}: {v}\r\n");
        }
        let _ = write!(out, "content-length: {}\r\n\r\n", body.len());
        out.extend_from_slice(body);
        Ok(out)
    }

    /// A connection: an idle one if any, else a new one (with the µs it took to open).
    async fn checkout(&self) -> Result<(Conn, Option<u64>), SendError> {
        if let Some(c) = self.take_idle() {
            return Ok((c, None));
        }
        let t = Instant::now();
        let c = self.connect().await?;
        Ok((c, Some(t.elapsed().as_micros() as u64)))
    }

    /// POSTs `body` to `path` and returns once the response head is in. A request that fails on a
    /// reused connection before any response byte is retried once on a new connection. `on_send`
    /// is called each time the request is handed to a connection, with whether it is a new one.
    pub async fn post(
        &self,
        path: &str,
        body: &Bytes,
        headers: &[(&str, &str)],
        on_send: &mut (dyn FnMut(bool) + Send),
    ) -> Result<Sent, SendError> {
        let request = self.request(path, body, headers)?;
        let (mut conn, mut connect_us) = self.checkout().await?;
        let mut retried_after = None;
        loop {
            let new_connection = connect_us.is_some();
            let read_before = conn.clock.read_bytes;
            on_send(new_connection);
            match conn.exchange_head(&request).await {
                Ok((head, sent_at)) => {
                    let head_at = conn.clock.last_read.unwrap_or_else(Instant::now);
                    return Ok(Sent {
                        body: Body {
                            conn: Some(conn),
                            decoder: Decoder::new(head.framing),
                            reusable: head.reusable,
                            pool: self.pool.clone(),
                            handed: 0,
                        },
                        head,
                        new_connection,
                        connect_us,
                        retried_after,
                        sent_at,
                        head_at,
                    });
                }
                Err(why) => {
                    let nothing_read = conn.clock.read_bytes == read_before;
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

/// Most bytes a connection's read buffer may hold (and so the longest response head): many SSE
/// events per read at saturation, and a bound on a stream's memory (BENCHMARKS.md, memory).
pub const READ_BUFFER_BYTES: usize = 32 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one request (head and Content-Length body) from `s`; its head.
    async fn read_request(s: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            let n = s.read(&mut b).await.unwrap();
            assert!(n > 0, "the client closed mid-request");
            got.extend_from_slice(&b[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..i]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if got.len() >= i + 4 + len {
                    return head;
                }
            }
        }
    }

    /// A server that answers three requests: two on one connection, the second with a close right
    /// after its body (while advertising keep-alive, as llama.cpp's does), and one on a new one.
    /// The rest of the first body is written only once `go` fires.
    async fn serve(
        listener: tokio::net::TcpListener,
        go: tokio::sync::oneshot::Receiver<()>,
        closed: tokio::sync::oneshot::Sender<()>,
    ) -> Vec<String> {
        let mut heads = Vec::new();
        let (mut s, _) = listener.accept().await.unwrap();
        heads.push(read_request(&mut s).await);
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n")
            .await
            .unwrap();
        go.await.unwrap();
        s.write_all(b"2\r\nok\r\n0\r\n").await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
        heads.push(read_request(&mut s).await);
        s.write_all(b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nhi")
            .await
            .unwrap();
        drop(s);
        closed.send(()).unwrap();
        let (mut s, _) = listener.accept().await.unwrap();
        heads.push(read_request(&mut s).await);
        s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        heads
    }

    /// Reads a body to its end: its bytes and each piece's read time.
    async fn read_all(body: &mut Body) -> (Vec<u8>, Vec<Instant>) {
        let (mut bytes, mut times) = (Vec::new(), Vec::new());
        while let Some(d) = body.data().await {
            let d = d.unwrap();
            bytes.extend_from_slice(d.bytes);
            times.push(d.read_at);
        }
        (bytes, times)
    }

    /// With kernel stamps, a piece read late is timed when it reached the host, not when it was
    /// read: the read here starts 100 ms after the server's write returned.
    #[tokio::test]
    async fn kernel_stamps_time_a_late_read_by_its_arrival() {
        let _on = tokenperf_core::rxstamp::StampingOn::wait(Duration::from_secs(10)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let (written_tx, written) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let before = Instant::now();
            s.write_all(b"2\r\nok\r\n0\r\n\r\n").await.unwrap();
            written_tx.send((before, Instant::now())).unwrap();
            // Held open until the client has read.
            let _ = s.read(&mut [0u8; 1]).await;
        });
        let client = HttpClient::new(&base, 1, Duration::from_secs(5), &[])
            .unwrap()
            .with_rx_timestamps(RxTimestamps::Kernel);
        let body = Bytes::from_static(b"{}");
        let mut sent = client
            .post("/completions", &body, &[], &mut |_| {})
            .await
            .unwrap();
        let (write_began, write_returned) = written.await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let read_began = Instant::now();
        let piece = sent.body.data().await.unwrap().unwrap();
        assert_eq!(piece.bytes, b"ok");
        // Within the write (on loopback the kernel stamps the packet inside the sender's system
        // call), give or take the clocks' mapping (microseconds; 1 ms allowed).
        let slack = Duration::from_millis(1);
        assert!(
            piece.read_at + slack >= write_began && piece.read_at <= write_returned + slack,
            "stamped {:?} after the write began, which took {:?}",
            piece.read_at.saturating_duration_since(write_began),
            write_returned - write_began
        );
        assert!(piece.read_at + Duration::from_millis(100) <= read_began);
        assert!(sent.body.data().await.is_none());
        drop(sent);
        server.abort();
    }

    /// Requests go out whole, bodies come back decoded with the time of the read that brought each
    /// piece, a clean end returns the connection, and one the server closed is not reused.
    #[tokio::test]
    async fn requests_bodies_reuse_and_a_closed_idle_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let (go, wait) = tokio::sync::oneshot::channel();
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(listener, wait, closed_tx));
        let client = HttpClient::new(&base, 4, Duration::from_secs(5), &[]).unwrap();
        let body = Bytes::from_static(b"{\"x\":1}");
        let mut news = Vec::new();
        let mut on_send = |new: bool| news.push(new);
        let headers = [("authorization", "Bearer k")];

        let before = Instant::now();
        let mut sent = client
            .post("/chat/completions", &body, &headers, &mut on_send)
            .await
            .unwrap();
        assert!(before <= sent.sent_at && sent.sent_at <= sent.head_at);
        assert_eq!(
            (sent.head.status, sent.head.framing),
            (200, h1::Framing::Chunked)
        );
        let first = sent.body.data().await.unwrap().unwrap();
        assert_eq!(first.bytes, b"data: ");
        assert!(first.read_at >= sent.head_at);
        // The rest is written after this instant, so its read cannot be stamped before it.
        let released = Instant::now();
        go.send(()).unwrap();
        let (bytes, times) = read_all(&mut sent.body).await;
        assert_eq!(bytes, b"ok");
        assert!(times[0] >= released, "{times:?}");
        sent.body.release();
        assert_eq!(client.idle_connections(), 1);

        let mut sent = client
            .post("/chat/completions", &body, &headers, &mut on_send)
            .await
            .unwrap();
        assert!(!sent.new_connection);
        assert_eq!(read_all(&mut sent.body).await.0, b"hi");
        sent.body.release();
        // Once the server has closed it (a loopback FIN is in the socket when close returns), the
        // pool must skip it rather than send on it and retry.
        closed.await.unwrap();
        let sent = client
            .post("/chat/completions", &body, &headers, &mut on_send)
            .await
            .unwrap();
        assert_eq!(sent.head.status, 404);
        assert!(sent.new_connection && sent.retried_after.is_none());
        assert_eq!(
            news,
            [true, false, true],
            "no warm pool: the first connection is opened for it"
        );

        let heads = server.await.unwrap();
        assert!(
            heads[0].starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(
            heads[0].contains("\r\nauthorization: Bearer k")
                && heads[0].contains("content-length: 7")
        );
    }

    #[tokio::test]
    async fn a_header_value_with_a_line_break_is_refused_before_sending() {
        let client =
            HttpClient::new("http://127.0.0.1:9/v1", 1, Duration::from_secs(1), &[]).unwrap();
        let body = Bytes::from_static(b"{}");
        let bad = [("authorization", "Bearer k\r\nx-injected: 1")];
        let err = client
            .post("/completions", &body, &bad, &mut |_| {})
            .await
            .err()
            .unwrap();
        assert!(matches!(err, SendError::Request(m) if m.contains("authorization")));
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
