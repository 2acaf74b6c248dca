//! The one clock that a client and a server on the same host can both read: CLOCK_MONOTONIC, in
//! microseconds. `std::time::Instant` reads the same clock on Linux, so an anchor taken once maps
//! instants to it exactly (up to the ~100 ns between the two reads).

use std::time::Instant;

/// CLOCK_MONOTONIC now, in microseconds.
pub fn monotonic_us() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

/// Maps instants to CLOCK_MONOTONIC microseconds through one anchor.
#[derive(Debug, Clone, Copy)]
pub struct MonoAnchor {
    instant: Instant,
    mono_us: u64,
}

impl MonoAnchor {
    /// An anchor taken now. `Instant::now()` and the CLOCK_MONOTONIC read are two calls, and a
    /// pre-emption between them would shift every time mapped through the anchor (receive delays
    /// came out 10 µs negative on a busy machine). So the instant is bracketed by two monotonic
    /// reads, the tightest of a few brackets is kept, and its midpoint is the anchor.
    pub fn now() -> Self {
        let mut best: Option<(u64, Instant, u64)> = None;
        for _ in 0..5 {
            let before = monotonic_us();
            let instant = Instant::now();
            let after = monotonic_us();
            if best.is_none_or(|(b, _, a)| after - before < a - b) {
                best = Some((before, instant, after));
            }
            if after - before == 0 {
                break;
            }
        }
        let (before, instant, after) = best.expect("at least one bracket");
        Self {
            instant,
            mono_us: before + (after - before) / 2,
        }
    }

    /// An anchor for a given instant (taken now, so `at` should be recent).
    pub fn at(at: Instant) -> Self {
        let now = Self::now();
        Self {
            instant: at,
            mono_us: now.mono_us(at),
        }
    }

    /// CLOCK_MONOTONIC microseconds of `t`.
    pub fn mono_us(&self, t: Instant) -> u64 {
        if t >= self.instant {
            self.mono_us + (t - self.instant).as_micros() as u64
        } else {
            self.mono_us
                .saturating_sub((self.instant - t).as_micros() as u64)
        }
    }

    /// The instant the anchor was taken at.
    pub fn instant(&self) -> Instant {
        self.instant
    }

    /// CLOCK_MONOTONIC microseconds of the anchor itself.
    pub fn anchor_us(&self) -> u64 {
        self.mono_us
    }
}

/// CPU time (user + system) and peak resident memory of this process so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    pub cpu_s: f64,
    pub peak_rss_bytes: u64,
}

/// This process's resource usage, from /proc/self (Linux); zeros where it cannot be read.
pub fn process_usage() -> ProcessUsage {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let cpu_s = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_cpu_ticks(&stat))
        .map_or(0.0, |t| t as f64 / ticks);
    // VmHWM: the peak resident set size, in kB.
    let peak_rss_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    ProcessUsage {
        cpu_s,
        peak_rss_bytes,
    }
}

/// utime + stime (fields 14 and 15) of a /proc `stat` line, in clock ticks.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses, so fields are counted after the last ')'.
    let rest: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
}

/// The command name of a /proc `stat` line.
fn stat_comm(stat: &str) -> Option<&str> {
    Some(&stat[stat.find('(')? + 1..stat.rfind(')')?])
}

/// CPU seconds used so far by this process's threads whose name starts with `prefix`
/// (Linux, from /proc/self/task/*/stat). Lets an in-process mock's threads be told apart.
pub fn thread_cpu_s(prefix: &str) -> f64 {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let total: u64 = dir
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat_comm(stat).is_some_and(|c| c.starts_with(prefix)))
        .filter_map(|stat| stat_cpu_ticks(&stat))
        .sum();
    total as f64 / ticks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn anchor_agrees_with_the_clock() {
        let a = MonoAnchor::now();
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        let direct = monotonic_us();
        let mapped = a.mono_us(t);
        assert!(direct.abs_diff(mapped) < 2_000, "{direct} vs {mapped}");
        assert!(mapped >= a.anchor_us() + 20_000);
        let u = process_usage();
        assert!(u.peak_rss_bytes > 0);
        assert_eq!(
            stat_cpu_ticks("12 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 13 17 0 0"),
            Some(30)
        );
        assert_eq!(stat_comm("12 (a (b) c) S 1"), Some("a (b) c"));
        let spin = std::thread::Builder::new()
            .name("cpu-probe".into())
            .spawn(|| {
                // Spins until the kernel has charged the thread a tick: at load 10, 60 ms of wall
                // time held less than one tick of CPU and read 0.
                let t = Instant::now();
                let mut used = 0.0;
                while used == 0.0 && t.elapsed() < Duration::from_secs(20) {
                    let burst = Instant::now();
                    while burst.elapsed() < Duration::from_millis(20) {
                        std::hint::spin_loop();
                    }
                    used = thread_cpu_s("cpu-probe");
                }
                used
            })
            .unwrap();
        assert!(spin.join().unwrap() > 0.0);
    }
}
