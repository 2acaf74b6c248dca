//! The statistics engine: core's one percentile definition written as polars expressions, and the
//! group-bys (per run, per shard, per time window) that the report's breakdowns are made of.
//!
//! Every statistic here means what `tokenperf_core::stats::Stats` means: values of successful requests
//! only, non-finite ones left out, quantiles linearly interpolated between closest ranks (polars'
//! `QuantileMethod::Linear` is that definition), sample standard deviation (ddof = 1), and each
//! quantile's 95 % interval taken at the order-statistic ranks core computes. The tests pin the two
//! implementations to each other (relative error ≤ 1e-9) on fixtures, so loadgen and analyze cannot
//! disagree.

use polars::prelude::*;
use tokenperf_core::stats::{QUANTILES, Stats, quantile_interval_ranks};

/// The frame's columns whose statistics the summary carries, with the summary field each one fills.
pub const SUMMARY_COLUMNS: [&str; 6] = [
    "inter_token_latency_s",
    "ttft_s",
    "end_to_end_latency_s",
    "request_output_throughput_token_per_s",
    "number_input_tokens",
    "number_output_tokens",
];

/// The values the statistics of `column` are computed from: successful requests, finite values.
pub fn values(column: &str) -> Expr {
    col(column).filter(
        col("ok")
            .and(col(column).is_not_null())
            .and(col(column).is_finite()),
    )
}

/// Name of the aggregate `stat` (`count`, `mean`, `p99` …) of `column` in a stats frame.
pub fn stat_name(column: &str, stat: &str) -> String {
    format!("{column}:{stat}")
}

/// count, mean, sample standard deviation, min, max and the six quantiles of `column`, as polars
/// expressions that aggregate (over a whole frame, or per group in a group-by).
pub fn stats_exprs(column: &str) -> Vec<Expr> {
    aggregates(values(column), column)
}

/// [`stats_exprs`] over the values `v` yields, named after `column`.
fn aggregates(v: Expr, column: &str) -> Vec<Expr> {
    let mut exprs = vec![
        v.clone().count().alias(stat_name(column, "count")),
        v.clone().mean().alias(stat_name(column, "mean")),
        v.clone().std(1).alias(stat_name(column, "stddev")),
        v.clone().min().alias(stat_name(column, "min")),
        v.clone().max().alias(stat_name(column, "max")),
    ];
    for (q, name) in QUANTILES {
        exprs.push(
            v.clone()
                .quantile(lit(q), QuantileMethod::Linear)
                .alias(stat_name(column, name)),
        );
    }
    exprs
}

fn f64_at(df: &DataFrame, name: &str, row: usize) -> PolarsResult<Option<f64>> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    Ok(c.f64()?.get(row))
}

/// Reads the [`stats_exprs`] of `column` at `row` of an aggregated frame back into core's [`Stats`],
/// without the intervals ([`with_intervals`] adds them).
pub fn stats_at(df: &DataFrame, column: &str, row: usize) -> PolarsResult<Stats> {
    let get = |stat: &str| f64_at(df, &stat_name(column, stat), row);
    let count = get("count")?.unwrap_or(0.0) as usize;
    if count == 0 {
        return Ok(Stats::default());
    }
    Ok(Stats {
        count,
        p25: get("p25")?,
        p50: get("p50")?,
        p75: get("p75")?,
        p90: get("p90")?,
        p95: get("p95")?,
        p99: get("p99")?,
        mean: get("mean")?,
        min: get("min")?,
        max: get("max")?,
        stddev: if count >= 2 { get("stddev")? } else { None },
        ci95: [None; 6],
    })
}

/// Fills `stats.ci95` from `sorted` (the values, ascending): the values at core's order-statistic
/// ranks.
fn with_intervals(sorted: &Float64Chunked, mut stats: Stats) -> Stats {
    for (slot, (q, _)) in stats.ci95.iter_mut().zip(QUANTILES) {
        *slot = quantile_interval_ranks(stats.count, q)
            .and_then(|(lo, hi)| Some((sorted.get(lo)?, sorted.get(hi)?)));
    }
    stats
}

/// Core's [`Stats`] of `column` over `frame`, computed by polars: the values are sorted once, and
/// the aggregates read the sorted column (polars' quantile takes the sorted path when it is flagged
/// so), as the intervals do.
pub fn stats(frame: &DataFrame, column: &str) -> PolarsResult<Stats> {
    let sorted = frame
        .clone()
        .lazy()
        .select([values(column)
            .cast(DataType::Float64)
            .sort(SortOptions::default())
            .alias(column)])
        .collect()?;
    let agg = sorted
        .clone()
        .lazy()
        .select(aggregates(col(column), column))
        .collect()?;
    let values = sorted.column(column)?.f64()?.rechunk();
    Ok(with_intervals(&values, stats_at(&agg, column, 0)?))
}

/// The summary's six LLMPerf-metric statistics of `frame`, in [`SUMMARY_COLUMNS`] order.
pub fn summary_stats(frame: &DataFrame) -> PolarsResult<[Stats; 6]> {
    let mut out: [Stats; 6] = Default::default();
    for (slot, c) in out.iter_mut().zip(SUMMARY_COLUMNS) {
        *slot = stats(frame, c)?;
    }
    Ok(out)
}

/// One row per group of `keys` (sorted by them): `requests` (sent), `failed`, and for each of
/// `columns` its [`stats_exprs`].
pub fn stats_by(frame: LazyFrame, keys: &[&str], columns: &[&str]) -> PolarsResult<DataFrame> {
    let mut aggs = vec![
        col("sent").sum().alias("requests"),
        col("sent").and(col("ok").not()).sum().alias("failed"),
    ];
    for c in columns {
        aggs.extend(stats_exprs(c));
    }
    let by: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
    frame
        .group_by(by)
        .agg(aggs)
        .sort(keys.to_vec(), SortMultipleOptions::default())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn frame(values: &[Option<f64>], ok: &[bool]) -> DataFrame {
        DataFrame::new_infer_height(vec![
            Column::new("ok".into(), ok.to_vec()),
            Column::new("sent".into(), vec![true; ok.len()]),
            Column::new("ttft_s".into(), values.to_vec()),
        ])
        .unwrap()
    }

    fn rel(a: Option<f64>, b: Option<f64>, what: &str) {
        match (a, b) {
            (Some(a), Some(b)) => {
                let scale = a.abs().max(b.abs()).max(f64::MIN_POSITIVE);
                assert!((a - b).abs() / scale <= 1e-9, "{what}: {a} vs {b}");
            }
            (a, b) => assert_eq!(a.is_some(), b.is_some(), "{what}: {a:?} vs {b:?}"),
        }
    }

    /// polars' statistics against core's on the same values, for every size that changes which
    /// branch runs (empty, one, two, small, past the exact-interval limit of 20,000).
    pub(crate) fn assert_same(a: &Stats, b: &Stats, what: &str) {
        assert_eq!(a.count, b.count, "{what}: count");
        for (name, x, y) in [
            ("p25", a.p25, b.p25),
            ("p50", a.p50, b.p50),
            ("p75", a.p75, b.p75),
            ("p90", a.p90, b.p90),
            ("p95", a.p95, b.p95),
            ("p99", a.p99, b.p99),
            ("mean", a.mean, b.mean),
            ("min", a.min, b.min),
            ("max", a.max, b.max),
            ("stddev", a.stddev, b.stddev),
        ] {
            rel(x, y, &format!("{what} {name}"));
        }
        for (k, (x, y)) in a.ci95.iter().zip(&b.ci95).enumerate() {
            rel(
                x.map(|p| p.0),
                y.map(|p| p.0),
                &format!("{what} ci95[{k}].lo"),
            );
            rel(
                x.map(|p| p.1),
                y.map(|p| p.1),
                &format!("{what} ci95[{k}].hi"),
            );
        }
    }

    #[test]
    fn polars_statistics_equal_cores() {
        let mut rng = tokenperf_core::rng::Rng::new(7);
        for n in [0usize, 1, 2, 3, 10, 367, 1_000, 25_000] {
            // Skewed, heavy-tailed latencies in seconds with a large offset (cancellation-prone),
            // some failures and some missing values, which both must leave out.
            let values: Vec<Option<f64>> = (0..n)
                .map(|i| {
                    let u = rng.next_f64();
                    (i % 17 != 5).then(|| 1_000.0 + 0.05 / (1.0 - u).max(1e-6))
                })
                .collect();
            let ok: Vec<bool> = (0..n).map(|i| i % 13 != 4).collect();
            let df = frame(&values, &ok);
            let want = Stats::from_values(
                values
                    .iter()
                    .zip(&ok)
                    .filter(|(_, ok)| **ok)
                    .filter_map(|(v, _)| *v),
            );
            assert_same(&stats(&df, "ttft_s").unwrap(), &want, &format!("n={n}"));
        }
    }

    #[test]
    fn non_finite_values_are_left_out_as_core_leaves_them() {
        let df = frame(
            &[Some(1.0), Some(f64::NAN), Some(f64::INFINITY), Some(3.0)],
            &[true; 4],
        );
        assert_same(
            &stats(&df, "ttft_s").unwrap(),
            &Stats::from_values([1.0, f64::NAN, f64::INFINITY, 3.0]),
            "non-finite",
        );
    }

    #[test]
    fn group_by_gives_each_group_cores_statistics() {
        let v: Vec<Option<f64>> = (0..200).map(|i| Some((i * 37 % 101) as f64)).collect();
        let ok: Vec<bool> = (0..200).map(|i| i % 9 != 0).collect();
        let mut df = frame(&v, &ok);
        let g: Vec<u32> = (0..200).map(|i| i % 3).collect();
        df.with_column(Column::new("g".into(), g)).unwrap();
        let by = stats_by(df.clone().lazy(), &["g"], &["ttft_s"]).unwrap();
        assert_eq!(by.height(), 3);
        for row in 0..3 {
            let want = Stats::from_values(
                (0..200)
                    .filter(|i| i % 3 == row && ok[*i])
                    .filter_map(|i| v[i]),
            );
            let mut want = want;
            want.ci95 = [None; 6];
            assert_same(
                &stats_at(&by, "ttft_s", row).unwrap(),
                &want,
                &format!("group {row}"),
            );
            let failed = by
                .column("failed")
                .unwrap()
                .cast(&DataType::UInt64)
                .unwrap();
            let expect = (0..200).filter(|i| i % 3 == row && !ok[*i]).count() as u64;
            assert_eq!(failed.u64().unwrap().get(row), Some(expect));
        }
    }
}
