//! Connections: the listening socket (with a configurable backlog, so a burst of connections queues
//! in the kernel instead of overflowing it), the limit on open connections (by default the process's
//! open-file limit less a reserve, so the server never runs out of descriptors to answer with), and
//! the per-connection handle that closes a connection after its response (`--close-after-stream`)
//! and lets a streamed body write its chunks to the socket without going through hyper.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept free for everything but client connections (files, the log, the listeners).
const RESERVED_FDS: usize = 64;

/// Binds `addr` with a listen backlog of `backlog` (the kernel caps it at net.core.somaxconn).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Open connections allowed: `configured`, or with 0 the open-file limit less a reserve.
pub fn connection_limit(configured: usize) -> usize {
    if configured > 0 {
        return configured.min(Semaphore::MAX_PERMITS);
    }
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    (soft.min(Semaphore::MAX_PERMITS as u64) as usize)
        .saturating_sub(RESERVED_FDS)
        .max(1)
}

/// How many times the kernel dropped a connection because a listen queue was full, on the whole
/// host (`TcpExt: ListenOverflows` in /proc/net/netstat); `None` where that file is not there.
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// What a connection's handlers share with its I/O: the socket itself, the close request, and
/// whether hyper has bytes on it that it has not finished writing.
#[derive(Debug)]
struct Shared {
    stream: TcpStream,
    close: AtomicBool,
    /// hyper wrote since it last flushed: its buffer may still hold part of a response.
    unflushed: AtomicBool,
    /// hyper let the connection go: nothing more may be written to it.
    gone: AtomicBool,
    /// Flushes after writes: a response body knows its head is out once this has moved on.
    flushes: AtomicU64,
    /// The server's count of writes tried on client sockets, by hyper or by a [`RawWriter`]: system
    /// calls, but for the few that tokio turns away from a socket it knows is full.
    writes: Arc<AtomicU64>,
    /// When the last read that brought bytes got them, in nanoseconds from [`epoch`] (0: none
    /// yet): the kernel's receive stamp of their last packet where the socket has them, else when
    /// the read returned.
    last_read_ns: AtomicU64,
    /// Whether the kernel stamps what the socket receives ([`tokenperf_core::rxstamp`]).
    stamped: bool,
}

/// The instant `last_read_ns` counts from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Lets a handler close its connection once the response in flight is done, and write a streamed
/// body's chunks to the socket itself (see [`RawWriter`]).
#[derive(Debug, Clone)]
pub struct ConnHandle(Arc<Shared>);

impl ConnHandle {
    /// After the current response, the connection reads as closed, so the server closes it.
    pub fn close_after_response(&self) {
        self.0.close.store(true, Ordering::Relaxed);
    }

    /// The time of the last read that brought bytes from the client (their kernel receive stamp,
    /// else when the read returned): for a request handler, when its request reached the host (the
    /// read that completed it). None before any.
    pub fn last_read(&self) -> Option<Instant> {
        match self.0.last_read_ns.load(Ordering::Acquire) {
            0 => None,
            ns => Some(epoch() + Duration::from_nanos(ns)),
        }
    }

    /// A writer for the body of the response being sent. Call it on that body's first poll:
    /// hyper polls a body only once the response's head is in its buffer, so any flush after this
    /// call has sent the head, and the writer writes nothing before one. (Called earlier, in the
    /// handler, a flush of an interim `100 Continue` could open it before the head is out.)
    pub fn raw_writer(&self) -> RawWriter {
        RawWriter {
            shared: self.0.clone(),
            flushes_before_head: self.0.flushes.load(Ordering::Acquire),
        }
    }
}

/// Writes chunks of a chunked HTTP/1.1 body straight to the socket, past hyper's dispatcher and
/// encoder: one `write` per chunk from wherever the chunk is made (the pacer), with no task wake-up.
/// hyper keeps the connection: it wrote the head and writes the body's last chunk and terminator.
/// That is sound only while hyper has nothing of its own unwritten, which the writer checks before
/// every write: hyper writes only when the body hands it a chunk, and between a response's chunks it
/// has flushed everything (its buffer is empty when it calls `poll_flush`).
#[derive(Debug, Clone)]
pub struct RawWriter {
    shared: Arc<Shared>,
    flushes_before_head: u64,
}

/// How a [`RawWriter::try_write`] went.
#[derive(Debug)]
pub enum RawWrite {
    /// All of it is on the socket.
    Done,
    /// Only the first `n` bytes went: the rest must follow before anything else.
    Partial(usize),
    /// Nothing was written: hyper still has bytes to write, or the socket's buffer is full.
    NotNow,
    /// The connection is broken.
    Failed(io::Error),
}

impl RawWriter {
    /// hyper has sent this response's head and has nothing unwritten.
    fn hyper_is_idle(&self) -> bool {
        // These flags share a cache line that every write touches anyway, unlike anything of the
        // response body's own.
        // Acquire: hyper's last write happened before the flush that stored these.
        !self.shared.unflushed.load(Ordering::Acquire)
            && self.shared.flushes.load(Ordering::Acquire) > self.flushes_before_head
    }

    /// One non-blocking write of `buf` (a whole framed chunk), if hyper is idle.
    pub fn try_write(&self, buf: &[u8]) -> RawWrite {
        if self.shared.gone.load(Ordering::Acquire) {
            return RawWrite::Failed(io::ErrorKind::ConnectionAborted.into());
        }
        if !self.hyper_is_idle() {
            return RawWrite::NotNow;
        }
        let r = self.shared.stream.try_write(buf);
        self.shared.writes.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(n) if n == buf.len() => RawWrite::Done,
            Ok(0) => RawWrite::NotNow,
            Ok(n) => RawWrite::Partial(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => RawWrite::NotNow,
            Err(e) => RawWrite::Failed(e),
        }
    }

    /// Writes all of `buf`, waiting for room; for the rest of a chunk a [`RawWrite::Partial`] left.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            self.shared.stream.writable().await?;
            self.shared.writes.fetch_add(1, Ordering::Relaxed);
            match self.shared.stream.try_write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A client connection as hyper sees it: holds its slot under the connection limit until dropped,
/// reads as closed once its [`ConnHandle`] asked for it, and tells [`RawWriter`]s whether hyper has
/// anything unwritten. The socket is shared with them, so it reads and writes through `&TcpStream`.
pub struct ConnIo {
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
}

impl ConnIo {
    /// `writes` counts every write system call on the socket.
    pub fn new(
        io: TcpStream,
        slot: OwnedSemaphorePermit,
        writes: Arc<AtomicU64>,
    ) -> (Self, ConnHandle) {
        // The epoch is fixed before this connection's first read. A kernel stamp from before it
        // (a request queued before the first accept) counts as the epoch, never as "none yet".
        epoch();
        // A request's clock starts when it reached the host, not when this server got round to
        // reading it (its own wake-up, about 0.1 ms on a VM), where the kernel stamps it.
        let stamped = tokenperf_core::rxstamp::enable(&io).is_ok();
        let shared = Arc::new(Shared {
            stamped,
            stream: io,
            close: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
            writes,
            last_read_ns: AtomicU64::new(0),
        });
        (
            Self {
                shared: shared.clone(),
                _slot: slot,
            },
            ConnHandle(shared),
        )
    }

    fn wrote(&self, n: usize) {
        if n > 0 {
            self.shared.unflushed.store(true, Ordering::Release);
        }
    }

    /// Retries `op` until the socket takes it or says why not (tokio clears a readiness that
    /// turned out stale, so the next poll waits for the real one).
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        op: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.shared.stream.poll_write_ready(cx))?;
            let r = op(&self.shared.stream);
            self.shared.writes.fetch_add(1, Ordering::Relaxed);
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(n) => {
                    self.wrote(n);
                    return Poll::Ready(Ok(n));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        // The socket stays open while a writer holds it, but hyper is done with the connection
        // (its client left, or it failed): a response body it dropped must not be written on.
        self.shared.gone.store(true, Ordering::Release);
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.shared.close.load(Ordering::Relaxed) {
            // End of input: an idle HTTP/1 connection then closes (after flushing what it wrote).
            return Poll::Ready(Ok(()));
        }
        loop {
            let shared = &*self.shared;
            std::task::ready!(shared.stream.poll_read_ready(cx))?;
            // hyper reuses its read buffer, so there is rarely anything left to zero here.
            let dst = buf.initialize_unfilled();
            let got = if shared.stamped {
                shared.stream.try_io(Interest::READABLE, || {
                    tokenperf_core::rxstamp::recv(&shared.stream, dst)
                })
            } else {
                shared.stream.try_read(dst).map(|n| (n, None))
            };
            match got {
                Ok((n, stamp)) => {
                    if n > 0 {
                        let at =
                            stamp.map_or_else(Instant::now, tokenperf_core::rxstamp::instant_of);
                        let ns = at.saturating_duration_since(epoch()).as_nanos().max(1) as u64;
                        shared.last_read_ns.store(ns, Ordering::Release);
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |s| s.try_write(buf))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TCP socket has no buffer of ours to flush; hyper calls this once its own is empty.
        if self.shared.unflushed.swap(false, Ordering::AcqRel) {
            self.shared.flushes.fetch_add(1, Ordering::Release);
        }
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = rustix::net::shutdown(&self.shared.stream, rustix::net::Shutdown::Write);
        Poll::Ready(match r {
            Ok(()) | Err(rustix::io::Errno::NOTCONN) => Ok(()),
            Err(e) => Err(e.into()),
        })
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |s| s.try_write_vectored(bufs))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_leaves_descriptors_to_answer_with() {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap();
        let n = connection_limit(0) as u64;
        assert!(n < soft && n >= 1, "{n} of {soft}");
        assert_eq!(connection_limit(7), 7);
    }

    /// A connected loopback pair: the server's side wrapped as hyper sees it, and the client's.
    async fn pair() -> (ConnIo, ConnHandle, TcpStream, Arc<AtomicU64>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let slot = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let writes = Arc::new(AtomicU64::new(0));
        let (io, handle) = ConnIo::new(server, slot, writes.clone());
        (io, handle, client, writes)
    }

    #[tokio::test]
    async fn a_raw_writer_writes_only_after_hyper_has_flushed_the_head() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut io, handle, mut client, writes) = pair().await;
        // The body's first poll: hyper holds the head, unwritten.
        let raw = handle.raw_writer();
        assert!(matches!(raw.try_write(b"early"), RawWrite::NotNow));
        io.write_all(b"HEAD|").await.unwrap();
        assert!(
            matches!(raw.try_write(b"early"), RawWrite::NotNow),
            "written but not flushed: hyper may hold more"
        );
        io.flush().await.unwrap();
        assert!(matches!(raw.try_write(b"chunk|"), RawWrite::Done));
        // hyper writes again (a chunk handed back): closed until its flush.
        io.write_all(b"more|").await.unwrap();
        assert!(matches!(raw.try_write(b"x"), RawWrite::NotNow));
        io.flush().await.unwrap();
        assert!(matches!(raw.try_write(b"end"), RawWrite::Done));
        // A writer for the next response waits for that response's own flush.
        assert!(matches!(
            handle.raw_writer().try_write(b"x"),
            RawWrite::NotNow
        ));
        drop(io);
        assert!(
            matches!(raw.try_write(b"x"), RawWrite::Failed(_)),
            "written on after hyper let the connection go"
        );
        drop((raw, handle));
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "HEAD|chunk|more|end");
        assert_eq!(
            writes.load(Ordering::Relaxed),
            4,
            "every write on the socket counted"
        );
    }

    /// A request's bytes are timed when they reached the host (the kernel's receive stamp), so a
    /// read 100 ms late still gives the client's write.
    #[tokio::test]
    async fn the_last_read_is_when_bytes_reached_the_host() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _on = tokenperf_core::rxstamp::StampingOn::wait(Duration::from_secs(10)).unwrap();
        let (mut io, handle, mut client, _) = pair().await;
        assert_eq!(handle.last_read(), None);
        let before = Instant::now();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let written = Instant::now();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 64];
        let n = io.read(&mut buf).await.unwrap();
        let after = Instant::now();
        assert!(n > 0);
        let read = handle.last_read().expect("a read was stamped");
        // Within the client's write, give or take the clocks' mapping (microseconds; 1 ms allowed).
        let slack = Duration::from_millis(1);
        assert!(
            before <= read + slack && read <= written + slack && read <= after,
            "{read:?} outside {before:?}..{written:?}"
        );
    }

    #[tokio::test]
    async fn a_broken_connection_is_reported_not_retried() {
        use tokio::io::AsyncWriteExt;
        let (mut io, handle, client, _) = pair().await;
        let raw = handle.raw_writer();
        io.write_all(b"HEAD").await.unwrap();
        io.flush().await.unwrap();
        drop(client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // The first write after the peer's close may still be taken; one after its reset is not.
        loop {
            match raw.try_write(b"chunk") {
                RawWrite::Failed(_) => break,
                other => assert!(std::time::Instant::now() < deadline, "still {other:?}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn listen_overflows_are_read_from_the_kernel() {
        if std::path::Path::new("/proc/net/netstat").exists() {
            assert!(listen_overflows().is_some());
        }
    }
}
