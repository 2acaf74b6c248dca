//! Open-loop arrival schedules: when each request is meant to be sent, fixed before the run starts so
//! that the load does not depend on how fast the server answers (the point of an open loop).
//!
//! Inter-arrival gaps have mean `1 / rate`: exponential for `poisson`, fixed for `constant`, and
//! gamma-distributed with shape `burstiness` for `gamma` (shape 1 is Poisson; below 1 is burstier,
//! above 1 smoother; vLLM's `--burstiness` has the same meaning). The first request is due at 0.

use clap::ValueEnum;
use serde::Serialize;
use tokenperf_core::rng::Rng;

/// The arrival process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Exponential gaps (memoryless arrivals).
    Poisson,
    /// Equal gaps of 1/rate.
    Constant,
    /// Gamma gaps with shape --burstiness.
    Gamma,
}

/// Intended send times in µs from the run start: at most `max` of them, none later than
/// `duration_s` (when given). At least one bound must be given.
pub fn schedule(
    rng: &mut Rng,
    rate: f64,
    arrival: Arrival,
    burstiness: f64,
    max: Option<u64>,
    duration_s: Option<f64>,
) -> Vec<u64> {
    debug_assert!(
        max.is_some() || duration_s.is_some(),
        "an unbounded schedule"
    );
    let mean = 1.0 / rate;
    let limit_us = duration_s.map(|d| d * 1e6);
    let mut out = Vec::new();
    let mut t = 0.0f64;
    while max.is_none_or(|m| (out.len() as u64) < m) {
        if limit_us.is_some_and(|l| t * 1e6 > l + 0.5) {
            break;
        }
        out.push((t * 1e6).round() as u64);
        t = match arrival {
            Arrival::Poisson => t + rng.exponential(mean),
            // From the index, so that no rounding accumulates.
            Arrival::Constant => out.len() as f64 * mean,
            Arrival::Gamma => t + rng.gamma(burstiness, mean / burstiness),
        };
    }
    out
}

/// Applies a linear rate ramp to a schedule made at the full rate: the rate grows from 0 to full over
/// `ramp_s`, then stays. Arrival `u` of the full-rate schedule (in µs) moves to the time `t` at which
/// the ramped process has had as many arrivals: `t = sqrt(2·ramp·u)` during the ramp, `u + ramp/2`
/// after it. The arrival count over a time span ending after the ramp drops by `rate · ramp / 2`.
pub fn ramp(schedule: &mut [u64], ramp_s: f64) {
    if ramp_s <= 0.0 {
        return;
    }
    let r = ramp_s * 1e6;
    for t in schedule.iter_mut() {
        let u = *t as f64;
        let warped = if u < r / 2.0 {
            (2.0 * r * u).sqrt()
        } else {
            u + r / 2.0
        };
        *t = warped.round() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_rate(s: &[u64]) -> f64 {
        (s.len() - 1) as f64 / (*s.last().unwrap() as f64 / 1e6)
    }

    #[test]
    fn counts_and_mean_rates_within_tolerance() {
        let mut rng = Rng::new(11111);
        let c = schedule(&mut rng, 20.0, Arrival::Constant, 1.0, Some(101), None);
        assert_eq!(c.len(), 101);
        assert_eq!(c[1] - c[0], 50_000);
        assert_eq!(*c.last().unwrap(), 5_000_000);
        for arrival in [Arrival::Poisson, Arrival::Gamma] {
            for burst in [0.5, 1.0, 4.0] {
                let s = schedule(&mut rng, 50.0, arrival, burst, Some(5000), None);
                assert_eq!(s.len(), 5000);
                assert!(s.windows(2).all(|w| w[1] >= w[0]), "sorted");
                let r = mean_rate(&s);
                assert!(
                    (r - 50.0).abs() < 50.0 * 0.06,
                    "{arrival:?} {burst}: rate {r}"
                );
            }
        }
    }

    #[test]
    fn burstiness_changes_the_spread_not_the_mean() {
        let mut rng = Rng::new(5);
        let cv = |s: &[u64]| {
            let g: Vec<f64> = s.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
            let m = g.iter().sum::<f64>() / g.len() as f64;
            (g.iter().map(|x| (x - m).powi(2)).sum::<f64>() / g.len() as f64).sqrt() / m
        };
        let bursty = schedule(&mut rng, 10.0, Arrival::Gamma, 0.25, Some(4000), None);
        let smooth = schedule(&mut rng, 10.0, Arrival::Gamma, 16.0, Some(4000), None);
        // Gamma gaps have CV = 1/sqrt(shape): 2 and 0.25.
        assert!((cv(&bursty) - 2.0).abs() < 0.3, "{}", cv(&bursty));
        assert!((cv(&smooth) - 0.25).abs() < 0.05, "{}", cv(&smooth));
    }

    #[test]
    fn ramp_grows_the_rate_linearly_then_holds_it() {
        let mut rng = Rng::new(1);
        let mut s = schedule(&mut rng, 100.0, Arrival::Constant, 1.0, Some(1000), None);
        ramp(&mut s, 2.0);
        assert!(s.windows(2).all(|w| w[1] >= w[0]));
        // During the ramp, arrivals in the first second ≈ ∫0..1 50·t dt = 25; in the second ≈ 75.
        let in_first = s.iter().filter(|&&t| t < 1_000_000).count();
        let in_second = s
            .iter()
            .filter(|&&t| (1_000_000..2_000_000).contains(&t))
            .count();
        assert!((in_first as i64 - 25).abs() <= 2, "{in_first}");
        assert!((in_second as i64 - 75).abs() <= 2, "{in_second}");
        // After it, the full rate: gaps of 10 ms.
        let late: Vec<u64> = s
            .iter()
            .copied()
            .filter(|&t| t > 3_000_000)
            .take(3)
            .collect();
        assert_eq!(late[1] - late[0], 10_000);
    }

    #[test]
    fn duration_bounds_the_schedule() {
        let mut rng = Rng::new(1);
        let s = schedule(&mut rng, 100.0, Arrival::Constant, 1.0, None, Some(2.0));
        assert_eq!(s.len(), 201, "0, 10 ms, …, 2000 ms");
        assert!(*s.last().unwrap() <= 2_000_000);
    }
}
