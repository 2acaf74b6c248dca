//! Tallies of many integer-µs values in bounded memory: [`GapHistogram`] for the pooled per-chunk
//! gaps of a run (one value per SSE event, so a long run cannot keep them all), and [`ExactCounts`]
//! for small-range values whose count per distinct µs is kept exactly (ground-truth errors).
//!
//! Precision of [`GapHistogram`]: values are bucketed with 3 significant digits (HdrHistogram's
//! scheme, the `hdrhistogram` crate): every value below 2,048 µs is exact, and above that a bucket
//! spans at most 1/2,048 of its value. Quantiles and the standard deviation use each bucket's
//! middle value, so they are within 0.05 % of the exact figure (0.1 % at worst, at a bucket's edge);
//! the count, mean, minimum and maximum are exact. Memory is a few hundred KiB however many values
//! are recorded. Histograms merge exactly (shards, sweep points).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::stats::Stats;

/// Significant decimal digits kept per value.
pub const GAP_HISTOGRAM_DIGITS: u8 = 3;

/// A mergeable histogram of µs values with exact count, sum, minimum and maximum.
#[derive(Debug, Clone)]
pub struct GapHistogram {
    h: Histogram<u64>,
    sum_us: u128,
    min_us: u64,
    max_us: u64,
}

impl Default for GapHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl GapHistogram {
    pub fn new() -> Self {
        Self {
            // Auto-resizing: the range grows with the largest value seen, never past it.
            h: Histogram::new(GAP_HISTOGRAM_DIGITS)
                .expect("3 significant digits is a valid setting"),
            sum_us: 0,
            min_us: u64::MAX,
            max_us: 0,
        }
    }

    /// Records one value. Values past 2^62 µs (146,000 years) are clamped, never refused.
    pub fn record(&mut self, us: u64) {
        let us = us.min(1 << 62);
        // `record` grows the range; `saturating_record` would clamp to the current one instead.
        if self.h.record(us).is_err() {
            self.h.saturating_record(us);
        }
        self.sum_us += u128::from(us);
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        if other.is_empty() {
            return;
        }
        // Both auto-resize, so adding cannot run out of range.
        let _ = self.h.add(&other.h);
        self.sum_us += other.sum_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn len(&self) -> u64 {
        self.h.len()
    }

    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// Statistics in units of `scale` per µs (1e-6 for seconds): see the module docs for precision.
    pub fn stats(&self, scale: f64) -> Stats {
        if self.is_empty() {
            return Stats::default();
        }
        let pairs: Vec<(f64, u64)> = self
            .h
            .iter_recorded()
            .map(|v| {
                let mid = self
                    .h
                    .median_equivalent(v.value_iterated_to())
                    .clamp(self.min_us, self.max_us);
                (mid as f64 * scale, v.count_at_value())
            })
            .collect();
        let mut s = Stats::from_counts(&pairs);
        let n = self.len();
        s.mean = Some(self.sum_us as f64 / n as f64 * scale);
        s.min = Some(self.min_us as f64 * scale);
        s.max = Some(self.max_us as f64 * scale);
        s
    }
}

/// Exact counts per distinct integer value: memory grows with the number of distinct values, not
/// with the number recorded, so it suits values with a small spread (a client's error against
/// ground truth is a few hundred distinct µs). Statistics are exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExactCounts {
    counts: BTreeMap<i64, u64>,
}

impl ExactCounts {
    pub fn record(&mut self, v: i64) {
        *self.counts.entry(v).or_insert(0) += 1;
    }

    pub fn len(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Statistics in units of `scale` per recorded unit.
    pub fn stats(&self, scale: f64) -> Stats {
        let pairs: Vec<(f64, u64)> = self
            .counts
            .iter()
            .map(|(v, c)| (*v as f64 * scale, *c))
            .collect();
        Stats::from_counts(&pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact_and_large_ones_within_the_stated_precision() {
        let values: Vec<u64> = (0..10_000u64).map(|i| (i * 7919) % 1_900 + 1).collect();
        let mut h = GapHistogram::new();
        values.iter().for_each(|&v| h.record(v));
        let exact = Stats::from_values(values.iter().map(|&v| v as f64 * 1e-6));
        let got = h.stats(1e-6);
        assert_eq!(got.count, exact.count);
        for (a, b) in got.quantiles().iter().zip(exact.quantiles()) {
            assert!((a.1.unwrap() - b.1.unwrap()).abs() < 1e-15, "{a:?} {b:?}");
        }

        // 50 ms … 5 s: every quantile within 0.1 %, mean/min/max exact.
        let big: Vec<u64> = (0..20_000u64)
            .map(|i| 50_000 + (i * 104_729) % 4_950_000)
            .collect();
        let mut h = GapHistogram::new();
        big.iter().for_each(|&v| h.record(v));
        let exact = Stats::from_values(big.iter().map(|&v| v as f64));
        let got = h.stats(1.0);
        for (a, b) in got.quantiles().iter().zip(exact.quantiles()) {
            let (a, b) = (a.1.unwrap(), b.1.unwrap());
            assert!((a - b).abs() / b < 1e-3, "{a} vs {b}");
        }
        assert!((got.mean.unwrap() - exact.mean.unwrap()).abs() < 1e-6);
        assert_eq!((got.min, got.max), (exact.min, exact.max));
        assert!((got.stddev.unwrap() - exact.stddev.unwrap()).abs() / exact.stddev.unwrap() < 1e-3);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (
            GapHistogram::new(),
            GapHistogram::new(),
            GapHistogram::new(),
        );
        for i in 0..5_000u64 {
            let v = (i * 31) % 70_000;
            if i % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a.stats(1e-6), all.stats(1e-6));
        a.merge(&GapHistogram::new());
        assert_eq!(a.len(), 5_000);
        assert_eq!(GapHistogram::new().stats(1.0), Stats::default());
    }

    #[test]
    fn exact_counts_match_the_values() {
        let mut c = ExactCounts::default();
        let values = [-10i64, 3, 3, 250, 7, 3, -10];
        values.iter().for_each(|&v| c.record(v));
        assert_eq!(c.len(), 7);
        let want = Stats::from_values(values.iter().map(|&v| v as f64 / 1e3));
        let got = c.stats(1e-3);
        for (a, b) in got.quantiles().iter().zip(want.quantiles()) {
            assert!((a.1.unwrap() - b.1.unwrap()).abs() < 1e-12);
        }
        assert!((got.mean.unwrap() - want.mean.unwrap()).abs() < 1e-12);
    }
}
