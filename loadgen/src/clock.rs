//! What the kernel says of this host's clock synchronization, recorded with every run so that
//! shards on different hosts, merged on their wall clocks, state how far those clocks may be apart.

use tokenperf_core::summary::ClockSync;

/// The clock's discipline state from `adjtimex(2)` in read-only mode (no privilege needed), or
/// `None` where the call is not available.
#[cfg(target_os = "linux")]
pub fn clock_sync() -> Option<ClockSync> {
    // SAFETY (reviewed, the third of the workspace's `unsafe` exceptions): `timex` is plain data for
    // which all-zero bytes are valid, and with `modes == 0` adjtimex only fills it in, changing
    // nothing; the pointer is to a live local for the duration of the call.
    #[allow(unsafe_code)]
    let (state, t) = unsafe {
        let mut t: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut t);
        (state, t)
    };
    if state < 0 {
        return None;
    }
    let nano = t.status & libc::STA_NANO != 0;
    let offset_us = if nano {
        t.offset as f64 / 1e3
    } else {
        t.offset as f64
    };
    Some(ClockSync {
        synchronized: state != libc::TIME_ERROR && t.status & libc::STA_UNSYNC == 0,
        offset_us,
        est_error_us: t.esterror.max(0) as u64,
        max_error_us: t.maxerror.max(0) as u64,
    })
}

#[cfg(not(target_os = "linux"))]
pub fn clock_sync() -> Option<ClockSync> {
    None
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_answers_without_privilege() {
        let c = super::clock_sync().expect("adjtimex in read-only mode");
        assert!(c.offset_us.is_finite());
        // An unsynchronized clock reports the kernel's ceiling of 16 s as its maximum error.
        assert!(c.synchronized || c.max_error_us > 0, "{c:?}");
    }
}
