//! Kernel receive timestamps for plain TCP reads (`--rx-timestamps kernel`): when the bytes a read
//! returns reached this host, rather than when loadgen got round to reading them.
//!
//! A read's own time carries loadgen's wake-up and queueing (about 0.1 ms on an idle VM, more
//! under load) into every TTFT and inter-token time it measures. Linux stamps each packet as it
//! enters the network stack once a socket asks for it (`SO_TIMESTAMPNS`), and a TCP `recvmsg`
//! hands back the stamp of the last packet it took bytes from. Our own code, because neither tokio
//! nor rustix reads that control message: two `libc` calls, reviewed below.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime};

/// Asks the kernel to stamp what this socket receives. An error where it cannot (not Linux).
pub fn enable(socket: &impl AsFd) -> io::Result<()> {
    imp::enable(socket.as_fd().as_raw_fd())
}

/// One `recvmsg` into `buf`: the bytes read and, when the kernel stamped them, when the last of
/// them reached the host (CLOCK_REALTIME, as the kernel stamps).
pub fn recv(socket: &impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Option<SystemTime>)> {
    imp::recv(socket.as_fd().as_raw_fd(), buf)
}

/// A wall-clock stamp on the monotonic clock loadgen measures with, through the two clocks read
/// together ([`Pair`]) and kept per thread for stamps within [`REPAIR_AFTER`] of that reading: a
/// read then costs no clock read at all, and the wall clock's slewing (at most 500 ppm under NTP)
/// moves the mapping by no more than 50 µs before the clocks are read again. A stamp farther from
/// the last reading (time went on, or the wall clock stepped) has them read again first.
pub fn instant_of(stamp: SystemTime) -> Instant {
    thread_local! {
        static PAIR: std::cell::Cell<Option<Pair>> = const { std::cell::Cell::new(None) };
    }
    PAIR.with(|cell| {
        let pair = match cell.get() {
            Some(p) if p.near(stamp) => p,
            _ => {
                let p = Pair::read();
                cell.set(Some(p));
                p
            }
        };
        pair.map(stamp)
    })
}

/// How far a stamp may be from the clocks' last reading before they are read again.
const REPAIR_AFTER: Duration = Duration::from_millis(100);

/// The wall clock and the monotonic clock at one moment.
#[derive(Clone, Copy)]
struct Pair {
    wall: SystemTime,
    mono: Instant,
}

impl Pair {
    /// The monotonic clock read between two wall-clock reads, the wall's midpoint taken as its
    /// moment; of up to five tries, the one whose wall reads were closest (a thread preempted
    /// between two reads would otherwise misplace every stamp it maps).
    fn read() -> Self {
        let mut best: Option<(Duration, Self)> = None;
        for _ in 0..5 {
            let w1 = SystemTime::now();
            let mono = Instant::now();
            let w2 = SystemTime::now();
            let spread = w2.duration_since(w1).unwrap_or_default();
            let pair = Self {
                wall: w1 + spread / 2,
                mono,
            };
            if best.is_none_or(|(s, _)| spread < s) {
                best = Some((spread, pair));
            }
            if spread < Duration::from_micros(5) {
                break;
            }
        }
        best.expect("five tries").1
    }

    fn near(&self, stamp: SystemTime) -> bool {
        match stamp.duration_since(self.wall) {
            Ok(d) => d < REPAIR_AFTER,
            Err(e) => e.duration() < REPAIR_AFTER,
        }
    }

    /// `stamp` on the monotonic clock. A stamp at least [`REPAIR_AFTER`] ahead of this reading
    /// (only a fresh one is asked, since a stamp is in the past: the wall clock stepped back)
    /// counts as the reading's moment.
    fn map(&self, stamp: SystemTime) -> Instant {
        match stamp.duration_since(self.wall) {
            Ok(after) if after < REPAIR_AFTER => self.mono + after,
            Ok(_) => self.mono,
            Err(e) => self.mono.checked_sub(e.duration()).unwrap_or(self.mono),
        }
    }
}

/// The stamp in one control message buffer as `recvmsg` filled it (`len` bytes): the first
/// `SCM_TIMESTAMPNS` message's timespec, if any. Read field by field from the bytes, at the offsets
/// of 64-bit Linux's `cmsghdr` (length, level, type, then the data at 16).
fn stamp_in(control: &[u8]) -> Option<SystemTime> {
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
            let sec = i64::from_ne_bytes(word(at + HEADER)?);
            let nsec = i64::from_ne_bytes(word(at + HEADER + 8)?);
            let (sec, nsec) = (u64::try_from(sec).ok()?, u32::try_from(nsec).ok()?);
            if (sec, nsec) == (0, 0) || nsec >= 1_000_000_000 {
                return None;
            }
            return SystemTime::UNIX_EPOCH.checked_add(Duration::new(sec, nsec));
        }
        at += len.next_multiple_of(8);
    }
    None
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod imp {
    use std::io;
    use std::os::fd::RawFd;
    use std::time::SystemTime;

    pub const SOL_SOCKET: i32 = libc::SOL_SOCKET;
    pub const SCM_TIMESTAMPNS: i32 = libc::SCM_TIMESTAMPNS;

    pub fn enable(fd: RawFd) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY (reviewed, the fourth of the workspace's `unsafe` exceptions): the option value
        // points to a live local int of the length given; the call reads it and changes only the
        // socket's own flag.
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

    pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<SystemTime>)> {
        // Room for two control messages of a timespec each (32 bytes apiece), 8-byte aligned.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY (the same reviewed exception): `msghdr` is plain data for which zeroes are valid;
        // its iovec points to `buf` and its control buffer to `control`, both live and writable for
        // the lengths given, and the kernel writes no more than those lengths.
        #[allow(unsafe_code)]
        let (n, control_len) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control) as _;
            let n = libc::recvmsg(fd, &raw mut msg, 0);
            (n, msg.msg_controllen as usize)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let control = as_bytes(control);
        Ok((n as usize, super::stamp_in(&control[..control_len.min(64)])))
    }

    /// The control buffer's words as bytes, in memory order.
    fn as_bytes(words: [u64; 8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        out
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
mod imp {
    use std::io;
    use std::os::fd::RawFd;
    use std::time::SystemTime;

    pub const SOL_SOCKET: i32 = -1;
    pub const SCM_TIMESTAMPNS: i32 = -1;

    pub fn enable(_fd: RawFd) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel receive timestamps are read on 64-bit Linux only",
        ))
    }

    pub fn recv(_fd: RawFd, _buf: &mut [u8]) -> io::Result<(usize, Option<SystemTime>)> {
        enable(_fd).map(|()| (0, None))
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
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_796_223_577, 123_456_789);
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

    #[test]
    fn a_stamp_moves_to_the_monotonic_clock_by_its_age() {
        let before = Instant::now();
        let t = instant_of(SystemTime::now() - Duration::from_millis(200));
        assert!(t <= before - Duration::from_millis(199), "{:?}", before - t);
        // Stamps near the last reading keep their distances exactly.
        let w = SystemTime::now() - Duration::from_millis(30);
        let (a, b) = (instant_of(w), instant_of(w + Duration::from_millis(10)));
        assert_eq!(b - a, Duration::from_millis(10));
        // One from the future (the wall clock stepped back) is the moment of a fresh reading.
        let t = instant_of(SystemTime::now() + Duration::from_secs(5));
        assert!(t >= before && t <= Instant::now());
    }
}
