//! loadgen's choice of clock for its reads (`--rx-timestamps`): the kernel's receive stamps
//! ([`tokenperf_core::rxstamp`]) where a connection allows them, else when the read returned.

use std::io;
use std::os::fd::AsFd;

pub use tokenperf_core::rxstamp::{enable, instant_of, recv};

/// Which clock times a read (`--rx-timestamps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RxTimestamps {
    /// `kernel` where the connection allows it (plain http:// on Linux), else `read`.
    Auto,
    /// When the read's last byte reached this host, as the kernel stamped it.
    Kernel,
    /// When loadgen's read returned (its own wake-up and queueing included).
    Read,
}

/// Whether a plain socket's reads carry kernel stamps under `how`, asking the kernel for them
/// where `how` wants them. Where the kernel refuses, `kernel` is an error naming the flag and
/// `auto` falls back to `read`, saying so once.
pub fn enable_for(socket: &impl AsFd, how: RxTimestamps) -> io::Result<bool> {
    if how == RxTimestamps::Read {
        return Ok(false);
    }
    match enable(socket) {
        Ok(()) => Ok(true),
        Err(e) if how == RxTimestamps::Kernel => Err(io::Error::new(
            e.kind(),
            format!("--rx-timestamps kernel (SO_TIMESTAMPNS): {e}"),
        )),
        Err(e) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "loadgen: warning: the kernel gives no receive stamps ({e}), so reads are \
                     timed when they return (--rx-timestamps read)"
                );
            });
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[test]
    fn each_mode_asks_for_stamps_or_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!enable_for(&s, RxTimestamps::Read).unwrap());
        assert!(enable_for(&s, RxTimestamps::Auto).unwrap());
        assert!(enable_for(&s, RxTimestamps::Kernel).unwrap());
        // Not a socket: `kernel` names its flag, `auto` falls back to read times.
        let file = std::fs::File::open("/dev/null").unwrap();
        let e = enable_for(&file, RxTimestamps::Kernel).unwrap_err();
        assert!(e.to_string().contains("--rx-timestamps kernel"), "{e}");
        assert!(!enable_for(&file, RxTimestamps::Auto).unwrap());
    }
}
