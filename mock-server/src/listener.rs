//! Connections: the listening socket (with a configurable backlog, so a burst of connections queues
//! in the kernel instead of overflowing it), the limit on open connections (by default the process's
//! open-file limit less a reserve, so the server never runs out of descriptors to answer with), and
//! the per-connection handle that closes a connection after its response (`--close-after-stream`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// Lets a handler close its connection once the response in flight is done.
#[derive(Debug, Clone, Default)]
pub struct ConnHandle(Arc<AtomicBool>);

impl ConnHandle {
    /// After the current response, the connection reads as closed, so the server closes it.
    pub fn close_after_response(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A client connection: holds its slot under the connection limit until dropped, and reads as
/// closed once its [`ConnHandle`] asked for it.
pub struct ConnIo {
    io: TcpStream,
    close: ConnHandle,
    _slot: OwnedSemaphorePermit,
}

impl ConnIo {
    pub fn new(io: TcpStream, slot: OwnedSemaphorePermit) -> (Self, ConnHandle) {
        let close = ConnHandle::default();
        (
            Self {
                io,
                close: close.clone(),
                _slot: slot,
            },
            close,
        )
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.close.0.load(Ordering::Relaxed) {
            // End of input: an idle HTTP/1 connection then closes (after flushing what it wrote).
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
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

    #[test]
    fn listen_overflows_are_read_from_the_kernel() {
        if std::path::Path::new("/proc/net/netstat").exists() {
            assert!(listen_overflows().is_some());
        }
    }
}
