//! Breakdowns of one run by polars group-bys: over time (equal windows of send time: did the
//! server slow down as the run went on?) and by shard (was one machine of a sharded run different?).
//! Each row is a group's requests, failures and core's statistics of TTFT, inter-token latency and
//! end-to-end latency, computed by the engine's expressions.

use std::fmt::Write as _;

use polars::prelude::*;
use serde::Serialize;
use tokenperf_core::stats::Stats;

use crate::engine::{stats_at, stats_by};
use crate::input::Run;

/// Windows of send time in the over-time breakdown.
pub const WINDOWS: u64 = 10;

/// The metrics every breakdown row carries, with their names in tables.
const COLUMNS: [(&str, &str); 3] = [
    ("ttft_s", "TTFT"),
    ("inter_token_latency_s", "inter-token"),
    ("end_to_end_latency_s", "e2e"),
];

/// One group of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// What the group is: `12.0–24.0 s`, `shard 3` …
    pub group: String,
    /// Requests sent in the group, and how many of them failed.
    pub requests: u64,
    pub failed: u64,
    pub ttft_s: Stats,
    pub inter_token_latency_s: Stats,
    pub end_to_end_latency_s: Stats,
}

/// A run's requests split into groups.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breakdown {
    pub title: String,
    pub rows: Vec<Row>,
}

/// The groups of `frame` (with a `key` column) as rows, labelled by `label(key value)`.
fn rows(frame: LazyFrame, key: &str, label: impl Fn(u64) -> String) -> anyhow::Result<Vec<Row>> {
    let names: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
    let by = stats_by(frame, &[key], &names)?;
    let keys = by.column(key)?.cast(&DataType::UInt64)?;
    let count = |name: &str, row: usize| -> anyhow::Result<u64> {
        let c = by.column(name)?.cast(&DataType::UInt64)?;
        Ok(c.u64()?.get(row).unwrap_or(0))
    };
    (0..by.height())
        .map(|row| {
            Ok(Row {
                group: label(keys.u64()?.get(row).unwrap_or(0)),
                requests: count("requests", row)?,
                failed: count("failed", row)?,
                ttft_s: stats_at(&by, "ttft_s", row)?,
                inter_token_latency_s: stats_at(&by, "inter_token_latency_s", row)?,
                end_to_end_latency_s: stats_at(&by, "end_to_end_latency_s", row)?,
            })
        })
        .collect()
}

/// The run in [`WINDOWS`] equal windows of send time, from its first send to its last (our records
/// only: LLMPerf's files have no times). A request belongs to the window it was sent in.
pub fn over_time(run: &Run) -> anyhow::Result<Option<Breakdown>> {
    if !run.ours() {
        return Ok(None);
    }
    let sent = run.frame.column("sent_us")?.u64()?;
    let (Some(first), Some(last)) = (sent.min(), sent.max()) else {
        return Ok(None);
    };
    let span = (last - first).max(1);
    // The last send lands on WINDOWS exactly: it belongs to the last window.
    let raw = (col("sent_us") - lit(first)) * lit(WINDOWS) / lit(span);
    let index = when(raw.clone().gt_eq(lit(WINDOWS)))
        .then(lit(WINDOWS - 1))
        .otherwise(raw)
        .alias("window");
    let frame = run
        .frame
        .clone()
        .lazy()
        .filter(col("sent"))
        .with_columns([index]);
    let width_s = span as f64 * 1e-6 / WINDOWS as f64;
    let label = |k: u64| {
        let from = (first as f64 * 1e-6) + k as f64 * width_s;
        format!("{:.1}–{:.1} s", from, from + width_s)
    };
    Ok(Some(Breakdown {
        title: format!("Over the run: {WINDOWS} windows of {width_s:.2} s by send time"),
        rows: rows(frame, "window", label)?,
    }))
}

/// The run by shard, when it was merged from shards.
pub fn by_shard(run: &Run) -> anyhow::Result<Option<Breakdown>> {
    if !run.ours() || run.frame.column("shard")?.null_count() == run.frame.height() {
        return Ok(None);
    }
    let frame = run.frame.clone().lazy().filter(col("sent"));
    Ok(Some(Breakdown {
        title: "By shard".into(),
        rows: rows(frame, "shard", |k| format!("shard {k}"))?,
    }))
}

/// Every breakdown that applies to `run`.
pub fn all(run: &Run) -> anyhow::Result<Vec<Breakdown>> {
    Ok([over_time(run)?, by_shard(run)?]
        .into_iter()
        .flatten()
        .collect())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{:.1}", v * 1e3))
}

/// A breakdown as an HTML table: requests, failures, and p50 / p99 of each metric in ms.
pub fn html(b: &Breakdown) -> String {
    let mut h = format!(
        "<h3>{}</h3>\n<table><tr><th>group</th><th>requests</th><th>failed</th>",
        b.title
    );
    for (_, name) in COLUMNS {
        let _ = write!(h, "<th>{name} p50 ms</th><th>{name} p99 ms</th>");
    }
    h.push_str("</tr>\n");
    for r in &b.rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td>",
            r.group, r.requests, r.failed
        );
        for s in [&r.ttft_s, &r.inter_token_latency_s, &r.end_to_end_latency_s] {
            let _ = write!(h, "<td>{}</td><td>{}</td>", ms(s.p50), ms(s.p99));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenperf_core::record::{Event, Outcome, RequestRecord, TokenCount};

    /// 101 requests sent 10 ms apart, TTFT growing with each, every 7th failed.
    fn run() -> (tempfile::TempDir, Vec<RequestRecord>) {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<RequestRecord> = (0..=100u64)
            .map(|i| {
                let sent = i * 10_000;
                let mut r = RequestRecord::new(i, sent);
                r.sent_at_us = Some(sent);
                let ttft = 20_000 + i * i * 7;
                r.events = vec![Event(sent + ttft, 1), Event(sent + ttft + 5_000 + i, 1)];
                r.done_at_us = Some(sent + ttft + 6_000 + i);
                r.output_tokens = TokenCount::new(Some(2), None);
                if i % 7 == 3 {
                    r.outcome = Outcome::Timeout {
                        message: "late".into(),
                    };
                }
                r
            })
            .collect();
        let text: String = records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        std::fs::write(dir.path().join("b_requests.jsonl"), text).unwrap();
        (dir, records)
    }

    #[test]
    fn windows_split_by_send_time_with_cores_statistics() {
        let (dir, records) = run();
        let runs = crate::input::load(&dir.path().join("b_requests.jsonl")).unwrap();
        let b = over_time(&runs[0]).unwrap().unwrap();
        assert_eq!(b.rows.len(), WINDOWS as usize);
        // 0–1 s in ten windows of 100 ms; the last send (1.0 s) closes the last window.
        for (k, row) in b.rows.iter().enumerate() {
            let mine: Vec<&RequestRecord> = records
                .iter()
                .filter(|r| (r.id as usize / 10).min(9) == k)
                .collect();
            assert_eq!(row.requests as usize, mine.len(), "window {k}");
            let failed = mine.iter().filter(|r| !r.outcome.is_ok()).count();
            assert_eq!(row.failed as usize, failed, "window {k}");
            let want = Stats::from_values(
                mine.iter()
                    .filter(|r| r.outcome.is_ok())
                    .filter_map(|r| r.ttft_s()),
            );
            let (a, b) = (row.ttft_s.p50.unwrap(), want.p50.unwrap());
            assert!((a - b).abs() <= 1e-9 * b, "window {k}: {a} vs {b}");
            assert_eq!(row.ttft_s.count, want.count);
        }
        assert!(
            b.rows[0].group.starts_with("0.0–0.1 s"),
            "{}",
            b.rows[0].group
        );
        assert!(html(&b).contains("<th>TTFT p99 ms</th>"));
        assert!(
            by_shard(&runs[0]).unwrap().is_none(),
            "one file is no shard set"
        );
    }
}
