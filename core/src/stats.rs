//! Descriptive statistics: the one percentile definition every tokenperf number uses.
//!
//! Percentiles interpolate linearly between closest ranks, which is numpy's `np.percentile` default and
//! pandas' `Series.quantile` default, so our numbers match LLMPerf's (which calls pandas) on the same
//! data. The standard deviation is the sample one (ddof = 1), as pandas computes it. Nothing here returns
//! NaN: empty input (or fewer than two values for the standard deviation) gives `None`, which serializes
//! as JSON `null`.
//!
//! Every percentile comes with a 95 % confidence interval from order statistics
//! ([`quantile_interval_ranks`]): distribution-free and exact (conservative), with no resampling. The
//! number of values below the true q-quantile of n independent draws is Binomial(n, q), so the sorted
//! values at the ranks where that binomial's CDF crosses 2.5 % and 97.5 % bound the quantile with at
//! least 95 % probability. It treats requests as independent draws from one steady state; a run whose
//! load drifted has wider true uncertainty than this says.

use serde::{Deserialize, Serialize};

/// The quantiles reported everywhere, as fractions, in the order LLMPerf writes them.
pub const QUANTILES: [(f64, &str); 6] = [
    (0.25, "p25"),
    (0.50, "p50"),
    (0.75, "p75"),
    (0.90, "p90"),
    (0.95, "p95"),
    (0.99, "p99"),
];

/// Quantile `q` (0 ≤ q ≤ 1) of an ascending-sorted slice, by linear interpolation between closest ranks:
/// with `h = (n − 1)·q`, the result is `x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋])`.
///
/// Returns `None` for an empty slice. The slice must be sorted and free of NaN; [`Stats::from_values`]
/// guarantees both.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let h = (n - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let frac = h - lo as f64;
    Some(sorted[lo] + frac * (sorted[hi] - sorted[lo]))
}

/// 0-based ranks `(lo, hi)` into a sorted sample of `n` such that `[x[lo], x[hi]]` covers the true
/// `q`-quantile with probability ≥ 95 %: `lo` is the largest `k` with P(B ≤ k) ≤ 0.025 and `hi` the
/// smallest with P(B ≤ k) ≥ 0.975, B ~ Binomial(n, q). `None` when the sample is too small to bound
/// it on one side (e.g. p99 of fewer than 367 values has no 95 % upper bound inside the sample).
/// Exact up to n = 20,000; above, the normal approximation with continuity correction.
pub fn quantile_interval_ranks(n: usize, q: f64) -> Option<(usize, usize)> {
    if n == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    if q <= 0.0 || q >= 1.0 {
        let k = if q <= 0.0 { 0 } else { n - 1 };
        return Some((k, k));
    }
    let (lo_p, hi_p) = (0.025, 0.975);
    if n > 20_000 {
        let (mu, sd) = (n as f64 * q, (n as f64 * q * (1.0 - q)).sqrt());
        let lo = (mu - 1.959_964 * sd - 0.5).floor();
        let hi = (mu + 1.959_964 * sd - 0.5).ceil();
        if lo < 0.0 || hi > (n - 1) as f64 {
            return None;
        }
        return Some((lo as usize, hi as usize));
    }
    // Binomial pmf by its recurrence in log space (pmf(0) = (1-q)^n underflows for large n).
    let (ln_q, ln_1q) = (q.ln(), (1.0 - q).ln());
    let mut ln_pmf = n as f64 * ln_1q;
    let mut cdf = 0.0;
    let (mut lo, mut hi) = (None, None);
    for k in 0..n {
        cdf += ln_pmf.exp();
        if cdf <= lo_p {
            lo = Some(k);
        }
        if cdf >= hi_p {
            hi = Some(k);
            break;
        }
        ln_pmf += ((n - k) as f64 / (k + 1) as f64).ln() + ln_q - ln_1q;
    }
    Some((lo?, hi?))
}

/// Summary statistics of one metric over a set of requests.
///
/// Every field is `None` when there was no value; `stddev` is also `None` for a single value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of values the statistics were computed from.
    pub count: usize,
    pub p25: Option<f64>,
    pub p50: Option<f64>,
    pub p75: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Sample standard deviation (ddof = 1).
    pub stddev: Option<f64>,
    /// 95 % confidence interval of each quantile, in [`QUANTILES`] order (see
    /// [`quantile_interval_ranks`]); `None` where the sample cannot bound it.
    #[serde(default, skip_serializing_if = "no_intervals")]
    pub ci95: [Option<(f64, f64)>; 6],
}

fn no_intervals(ci: &[Option<(f64, f64)>; 6]) -> bool {
    ci.iter().all(Option::is_none)
}

impl Stats {
    /// Statistics of `values`; non-finite values (NaN, ±∞) are left out, as pandas drops NaN.
    pub fn from_values(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        v.sort_unstable_by(f64::total_cmp);
        Self::from_sorted(&v)
    }

    /// Statistics of an ascending-sorted, finite slice.
    pub fn from_sorted(v: &[f64]) -> Self {
        let n = v.len();
        if n == 0 {
            return Self::default();
        }
        // Two-pass mean and variance: exact enough for latencies and immune to the cancellation a
        // running sum of squares suffers when the mean is large against the spread.
        let mean = v.iter().sum::<f64>() / n as f64;
        let stddev = (n >= 2).then(|| {
            let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        Self {
            count: n,
            p25: quantile(v, 0.25),
            p50: quantile(v, 0.50),
            p75: quantile(v, 0.75),
            p90: quantile(v, 0.90),
            p95: quantile(v, 0.95),
            p99: quantile(v, 0.99),
            mean: Some(mean),
            min: Some(v[0]),
            max: Some(v[n - 1]),
            stddev,
            ci95: QUANTILES
                .map(|(q, _)| quantile_interval_ranks(n, q).map(|(lo, hi)| (v[lo], v[hi]))),
        }
    }

    /// Statistics of values given as `(value, count)` pairs, ascending by value, finite, counts > 0:
    /// the same definitions as [`Stats::from_values`] over the values each repeated `count` times.
    /// Histograms and exact tallies go through here, so every percentile still means one thing.
    pub fn from_counts(pairs: &[(f64, u64)]) -> Self {
        let n: u64 = pairs.iter().map(|p| p.1).sum();
        if n == 0 {
            return Self::default();
        }
        let mean = pairs.iter().map(|(v, c)| v * *c as f64).sum::<f64>() / n as f64;
        let stddev = (n >= 2).then(|| {
            let ss: f64 = pairs
                .iter()
                .map(|(v, c)| (v - mean) * (v - mean) * *c as f64)
                .sum();
            (ss / (n - 1) as f64).sqrt()
        });
        // Cumulative counts: the value at 0-based rank k is the first pair whose running count
        // exceeds k.
        let mut cumulative = Vec::with_capacity(pairs.len());
        let mut run = 0u64;
        for (_, c) in pairs {
            run += c;
            cumulative.push(run);
        }
        let at_rank = |k: u64| pairs[cumulative.partition_point(|&c| c <= k)].0;
        let q = |q: f64| {
            let h = (n - 1) as f64 * q;
            let lo = h.floor() as u64;
            let hi = (lo + 1).min(n - 1);
            let (a, b) = (at_rank(lo), at_rank(hi));
            Some(a + (h - lo as f64) * (b - a))
        };
        Self {
            count: n as usize,
            p25: q(0.25),
            p50: q(0.50),
            p75: q(0.75),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            mean: Some(mean),
            min: Some(pairs[0].0),
            max: Some(pairs[pairs.len() - 1].0),
            stddev,
            ci95: QUANTILES.map(|(q, _)| {
                quantile_interval_ranks(n as usize, q)
                    .map(|(lo, hi)| (at_rank(lo as u64), at_rank(hi as u64)))
            }),
        }
    }

    /// The six quantiles with their LLMPerf key names (`p25` … `p99`).
    pub fn quantiles(&self) -> [(&'static str, Option<f64>); 6] {
        [
            ("p25", self.p25),
            ("p50", self.p50),
            ("p75", self.p75),
            ("p90", self.p90),
            ("p95", self.p95),
            ("p99", self.p99),
        ]
    }

    /// The 95 % interval of a quantile this struct holds (`0.5` → p50's).
    pub fn interval(&self, q: f64) -> Option<(f64, f64)> {
        let i = QUANTILES.iter().position(|(f, _)| (*f - q).abs() < 1e-12)?;
        self.ci95[i]
    }

    /// Whether two runs' intervals for quantile `q` are apart (neither overlaps the other): the
    /// difference is then unlikely to be noise. `false` when either has no interval.
    pub fn differs_at(&self, other: &Stats, q: f64) -> bool {
        match (self.interval(q), other.interval(q)) {
            (Some((a_lo, a_hi)), Some((b_lo, b_hi))) => a_hi < b_lo || b_hi < a_lo,
            _ => false,
        }
    }

    /// Quantile by fraction, for the ones this struct holds (`0.5` → `p50`).
    pub fn at(&self, q: f64) -> Option<f64> {
        QUANTILES
            .iter()
            .zip(self.quantiles())
            .find(|((f, _), _)| (*f - q).abs() < 1e-12)
            .and_then(|(_, (_, v))| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("value");
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn quantile_matches_numpy_linear() {
        // np.percentile([1, 2, 3, 4, 10], [25, 50, 90, 99]) = [2.0, 3.0, 7.6, 9.76]
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        close(quantile(&v, 0.25), 2.0);
        close(quantile(&v, 0.5), 3.0);
        close(quantile(&v, 0.9), 7.6);
        close(quantile(&v, 0.99), 9.76);
        close(quantile(&v, 0.0), 1.0);
        close(quantile(&v, 1.0), 10.0);
    }

    #[test]
    fn quantile_of_even_count_interpolates() {
        // h = 3·0.5 = 1.5 → 2 + 0.5·(3 − 2)
        close(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        // h = 3·0.95 = 2.85 → 3 + 0.85·(4 − 3)
        close(quantile(&[1.0, 2.0, 3.0, 4.0], 0.95), 3.85);
    }

    #[test]
    fn stats_by_hand() {
        // Unsorted input with a NaN that must be dropped.
        let s = Stats::from_values([4.0, f64::NAN, 1.0, 3.0, 2.0]);
        assert_eq!(s.count, 4);
        close(s.mean, 2.5);
        close(s.min, 1.0);
        close(s.max, 4.0);
        // sample variance: ((1.5² + 0.5²)·2)/3 = 5/3
        close(s.stddev, (5.0f64 / 3.0).sqrt());
        close(s.p25, 1.75);
        close(s.p75, 3.25);
        close(s.p90, 3.7);
        close(s.p99, 3.97);
        close(s.at(0.9), 3.7);
    }

    #[test]
    fn empty_and_single_give_none_not_nan() {
        let e = Stats::from_values([]);
        assert_eq!(e, Stats::default());
        assert!(e.p50.is_none() && e.mean.is_none() && e.stddev.is_none());
        let one = Stats::from_values([7.0]);
        close(one.p50, 7.0);
        close(one.p99, 7.0);
        close(one.mean, 7.0);
        assert!(one.stddev.is_none());
        let json = serde_json::to_string(&one).unwrap();
        assert!(json.contains("\"stddev\":null"), "{json}");
        assert!(!json.contains("NaN"));
    }

    #[test]
    fn quantile_intervals_from_order_statistics() {
        // n = 10, median: B ~ Bin(10, 0.5); P(B ≤ 1) = 11/1024 ≤ 0.025 < P(B ≤ 2) = 56/1024, and
        // P(B ≤ 7) = 968/1024 < 0.975 ≤ P(B ≤ 8) = 1013/1024: ranks 1 and 8 (0-based).
        assert_eq!(quantile_interval_ranks(10, 0.5), Some((1, 8)));
        // Too few values to bound p99 from above, or the median of 5 from either side.
        assert_eq!(quantile_interval_ranks(100, 0.99), None);
        assert_eq!(quantile_interval_ranks(5, 0.5), None);
        assert!(quantile_interval_ranks(400, 0.99).is_some());
        // Exact and normal branches agree near their border.
        let (a, b) = quantile_interval_ranks(20_000, 0.9).unwrap();
        let (c, d) = quantile_interval_ranks(20_001, 0.9).unwrap();
        assert!(a.abs_diff(c) <= 2 && b.abs_diff(d) <= 2, "{a} {b} {c} {d}");
        // Coverage, simulated: uniform draws, whose true median is 0.5.
        let mut rng = crate::rng::Rng::new(7);
        let trials = 2_000;
        let covered = (0..trials)
            .filter(|_| {
                let s = Stats::from_values((0..50).map(|_| rng.next_f64()));
                let (lo, hi) = s.interval(0.5).unwrap();
                lo <= 0.5 && 0.5 <= hi
            })
            .count();
        let rate = covered as f64 / trials as f64;
        assert!((0.94..=0.995).contains(&rate), "coverage {rate}");
        // Two samples a shift apart are told apart; one against itself is not.
        let a = Stats::from_values((0..200).map(|i| i as f64));
        let b = Stats::from_values((0..200).map(|i| i as f64 + 60.0));
        assert!(a.differs_at(&b, 0.5) && !a.differs_at(&a, 0.5));
    }

    #[test]
    fn counts_give_the_same_statistics_as_the_values_repeated() {
        let pairs = [(1.0, 3), (2.5, 1), (4.0, 5), (10.0, 2)];
        let values: Vec<f64> = pairs
            .iter()
            .flat_map(|(v, c)| std::iter::repeat_n(*v, *c as usize))
            .collect();
        let (a, b) = (Stats::from_counts(&pairs), Stats::from_values(values));
        assert_eq!(a.count, b.count);
        for (x, y) in a.quantiles().iter().zip(b.quantiles()) {
            close(x.1, y.1.unwrap());
        }
        close(a.mean, b.mean.unwrap());
        close(a.stddev, b.stddev.unwrap());
        assert_eq!((a.min, a.max), (b.min, b.max));
        assert_eq!(Stats::from_counts(&[]), Stats::default());
        assert!(Stats::from_counts(&[(3.0, 1)]).stddev.is_none());
    }

    #[test]
    fn seed_number_output_tokens_quantile_shape() {
        // pandas: pd.Series([15, 82, 83, 108, 109, 144, 163, 178]).quantile(0.9) = 167.5
        let s = Stats::from_values([15.0, 82.0, 83.0, 108.0, 109.0, 144.0, 163.0, 178.0]);
        close(s.p90, 167.5);
        close(s.p50, 108.5);
    }
}
