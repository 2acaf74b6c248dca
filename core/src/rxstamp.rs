//! Kernel receive timestamps for TCP reads: when the bytes a read returns reached this host, rather
//! than when the reader got round to reading them. loadgen times a response's events by them
//! (`--rx-timestamps`), and mock-server a request's arrival.
//!
//! A read's own time carries the reader's wake-up and queueing (about 0.1 ms on an idle VM, more
//! under load) into every time it takes. Linux stamps each packet as it enters the network stack
//! once a socket asks for it (`SO_TIMESTAMPNS`), and a TCP `recvmsg` hands back the stamp of the
//! last packet it took bytes from. Our own code, because neither tokio nor rustix reads that
//! control message: two `libc` calls, reviewed below.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime};

/// Asks the kernel to stamp what this socket receives. An error where it cannot (not Linux).
pub fn enable(socket: &impl AsFd) -> io::Result<()> {
    imp::enable(socket.as_fd().as_raw_fd())
}

/// One `recvmsg` into `buf`: the bytes read and, when the kernel stamped them, when the last of
/// them reached the host, in ns since the epoch on the wall clock (CLOCK_REALTIME, as the kernel
/// stamps). Plain nanoseconds rather than `SystemTime`, whose arithmetic cost more than the rest
/// of the stamp's handling (counted, BENCHMARKS.md).
pub fn recv(socket: &impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    imp::recv(socket.as_fd().as_raw_fd(), buf)
}

/// Keeps the kernel stamping received packets for as long as it lives. Linux turns stamping on
/// for the whole host a moment after the first socket asks (in deferred work), and off again a
/// moment after the last one that asked closes, so packets in between carry no stamp and their
/// reads fall back to the read's own time. A test that needs stamps from its first packet holds
/// one of these: a loopback pair whose receiver asks for stamps, returned once a probe byte came
/// back stamped.
pub struct StampingOn {
    _rx: std::net::TcpStream,
}

impl StampingOn {
    /// Waits up to `within` for stamping to be on; an error where it does not come on.
    pub fn wait(within: Duration) -> io::Result<Self> {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let mut tx = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (rx, _) = listener.accept()?;
        enable(&rx)?;
        rx.set_read_timeout(Some(Duration::from_millis(100)))?;
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            tx.write_all(b"x")?;
            if let Ok((_, Some(_))) = recv(&rx, &mut buf) {
                return Ok(Self { _rx: rx });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(io::Error::other(format!(
            "no stamped packet within {within:?}"
        )))
    }
}

/// A wall-clock stamp (ns since the epoch) on the monotonic clock loadgen measures with, through
/// the two clocks read together ([`Pair`]) and kept per thread for stamps within [`PAIR_SPAN_NS`]
/// of that reading: a read then costs no clock read at all, and the wall clock's slewing (at most
/// 500 ppm under NTP) moves the mapping by no more than 50 µs before the clocks are read again. A
/// stamp farther from the last reading (time went on, or the wall clock stepped) has them read
/// again first.
pub fn instant_of(stamp_ns: u64) -> Instant {
    thread_local! {
        static PAIR: std::cell::Cell<Option<Pair>> = const { std::cell::Cell::new(None) };
    }
    PAIR.with(|cell| {
        let pair = match cell.get() {
            Some(p) if p.wall_ns.abs_diff(stamp_ns) < PAIR_SPAN_NS => p,
            _ => {
                let p = Pair::read();
                cell.set(Some(p));
                p
            }
        };
        pair.map(stamp_ns)
    })
}

/// How far (ns) a stamp may be from the clocks' last reading before they are read again.
const PAIR_SPAN_NS: u64 = 100_000_000;

/// The wall clock (ns since the epoch) and the monotonic clock at one moment.
#[derive(Clone, Copy)]
struct Pair {
    wall_ns: u64,
    mono: Instant,
}

/// The wall clock now, ns since the epoch (0 before it).
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Pair {
    /// The monotonic clock read between two wall-clock reads, the wall's midpoint taken as its
    /// moment; of up to five tries, the one whose wall reads were closest (a thread preempted
    /// between two reads would otherwise misplace every stamp it maps).
    fn read() -> Self {
        let mut best: Option<(u64, Self)> = None;
        for _ in 0..5 {
            let w1 = wall_ns();
            let mono = Instant::now();
            let spread = wall_ns().saturating_sub(w1);
            let pair = Self {
                wall_ns: w1 + spread / 2,
                mono,
            };
            if best.is_none_or(|(s, _)| spread < s) {
                best = Some((spread, pair));
            }
            if spread < 5_000 {
                break;
            }
        }
        best.expect("five tries").1
    }

    /// `stamp_ns` on the monotonic clock. A stamp at least [`PAIR_SPAN_NS`] ahead of this reading
    /// (only a fresh one is asked, since a stamp is in the past: the wall clock stepped back)
    /// counts as the reading's moment.
    fn map(&self, stamp_ns: u64) -> Instant {
        match stamp_ns.checked_sub(self.wall_ns) {
            Some(after) if after < PAIR_SPAN_NS => self.mono + Duration::from_nanos(after),
            Some(_) => self.mono,
            None => {
                let before = Duration::from_nanos(self.wall_ns - stamp_ns);
                self.mono.checked_sub(before).unwrap_or(self.mono)
            }
        }
    }
}

/// The stamp in a control buffer as `recvmsg` filled it: the first `SCM_TIMESTAMPNS` message's
/// timespec as ns since the epoch, if any. Read field by field from the bytes, at the offsets of
/// 64-bit Linux's `cmsghdr` (length, level, type, then the data at 16).
fn stamp_in(control: &[u8]) -> Option<u64> {
    const HEADER: usize = 16;
    let word = |at: usize| -> Option<[u8; 8]> { control.get(at..at + 8)?.try_into().ok() };
    let int = |at: usize| -> Option<i32> {
        Some(i32::from_ne_bytes(
            control.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let mut at = 0;
    while at + HEADER <= control.len() {
        let len = usize::from_ne_bytes(word(at)?);
        if len < HEADER {
            return None;
        }
        if int(at + 8)? == imp::SOL_SOCKET && int(at + 12)? == imp::SCM_TIMESTAMPNS {
            let sec = u64::try_from(i64::from_ne_bytes(word(at + HEADER)?)).ok()?;
            let nsec = u64::try_from(i64::from_ne_bytes(word(at + HEADER + 8)?)).ok()?;
            if (sec, nsec) == (0, 0) || nsec >= 1_000_000_000 {
                return None;
            }
            return sec.checked_mul(1_000_000_000)?.checked_add(nsec);
        }
        at += len.next_multiple_of(8);
    }
    None
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod imp {
    use std::io;
    use std::os::fd::RawFd;

    pub const SOL_SOCKET: i32 = libc::SOL_SOCKET;
    pub const SCM_TIMESTAMPNS: i32 = libc::SCM_TIMESTAMPNS;

    pub fn enable(fd: RawFd) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY (reviewed, one of the workspace's `unsafe` exceptions listed in Cargo.toml): the
        // option value points to a live local int of the length given; the call reads it and
        // changes only the socket's own flag.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        // Room for two control messages of a timespec each (32 bytes apiece), aligned as a
        // `cmsghdr` must be.
        #[repr(C, align(8))]
        struct Control([u8; 64]);
        let mut control = Control([0; 64]);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY (reviewed, another listed exception): `msghdr` is plain data for which zeroes are
        // valid; its iovec points to `buf` and its control buffer to `control`, both live and
        // writable for the lengths given, and the kernel writes no more than those lengths.
        #[allow(unsafe_code)]
        let (n, control_len) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = control.0.len() as _;
            let n = libc::recvmsg(fd, &raw mut msg, 0);
            (n, msg.msg_controllen as usize)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let control = &control.0[..control_len.min(control.0.len())];
        Ok((n as usize, super::stamp_in(control)))
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
mod imp {
    use std::io;
    use std::os::fd::RawFd;

    pub const SOL_SOCKET: i32 = -1;
    pub const SCM_TIMESTAMPNS: i32 = -1;

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel receive timestamps are read on 64-bit Linux only",
        )
    }

    pub fn enable(_fd: RawFd) -> io::Result<()> {
        Err(unsupported())
    }

    /// Never reached: no socket is read stamped where `enable` fails.
    pub fn recv(_fd: RawFd, _buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        Err(unsupported())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control message as 64-bit Linux lays it out: length, level, type, then the data.
    fn message(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + data.len()).to_ne_bytes());
        m.extend_from_slice(&level.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(data);
        m.resize(m.len().next_multiple_of(8), 0);
        m
    }

    fn timespec(sec: i64, nsec: i64) -> Vec<u8> {
        [sec.to_ne_bytes(), nsec.to_ne_bytes()].concat()
    }

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[test]
    fn the_stamp_is_read_from_its_control_message_and_nothing_else() {
        let (sol, ts) = (imp::SOL_SOCKET, imp::SCM_TIMESTAMPNS);
        let at = 1_796_223_577_123_456_789;
        assert_eq!(
            stamp_in(&message(sol, ts, &timespec(1_796_223_577, 123_456_789))),
            Some(at)
        );
        // After another message, which is passed over.
        let both = [
            message(sol, ts + 1, &[7; 4]),
            message(sol, ts, &timespec(1_796_223_577, 123_456_789)),
        ];
        assert_eq!(stamp_in(&both.concat()), Some(at));
        // No message, a zero stamp (the packet came before stamping was on), a nanosecond field
        // out of range, a negative second, a truncated message, a length below the header.
        assert_eq!(stamp_in(&[]), None);
        assert_eq!(stamp_in(&message(sol, ts, &timespec(0, 0))), None);
        assert_eq!(
            stamp_in(&message(sol, ts, &timespec(1, 1_000_000_000))),
            None
        );
        assert_eq!(stamp_in(&message(sol, ts, &timespec(-1, 0))), None);
        assert_eq!(stamp_in(&message(sol, ts, &timespec(1, 0))[..24]), None);
        let mut short = message(sol, ts, &timespec(1, 0));
        short[..8].copy_from_slice(&8usize.to_ne_bytes());
        assert_eq!(stamp_in(&short), None);
    }

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[test]
    fn stamping_comes_on_and_a_packet_is_stamped_at_its_arrival() {
        use std::io::Write;
        let _on = StampingOn::wait(Duration::from_secs(10)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (rx, _) = listener.accept().unwrap();
        enable(&rx).unwrap();
        let before = Instant::now();
        tx.write_all(b"hello").unwrap();
        let written = Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = [0u8; 16];
        let (n, stamp) = recv(&rx, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let at = instant_of(stamp.expect("stamped"));
        let slack = Duration::from_millis(1);
        assert!(
            before <= at + slack && at <= written + slack,
            "{:?}",
            at - before
        );
    }

    #[test]
    fn a_stamp_moves_to_the_monotonic_clock_by_its_age() {
        const MS: u64 = 1_000_000;
        let before = Instant::now();
        let t = instant_of(wall_ns() - 200 * MS);
        assert!(t <= before - Duration::from_millis(199), "{:?}", before - t);
        // Stamps near the last reading keep their distances exactly.
        let w = wall_ns() - 30 * MS;
        let (a, b) = (instant_of(w), instant_of(w + 10 * MS));
        assert_eq!(b - a, Duration::from_millis(10));
        // One from the future (the wall clock stepped back) is the moment of a fresh reading.
        let t = instant_of(wall_ns() + 5_000 * MS);
        assert!(t >= before && t <= Instant::now());
    }
}
