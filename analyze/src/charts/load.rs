//! Load over time (needs our records): requests in flight (time-weighted per bucket) and output tokens
//! per second, in 100 buckets from the first send to the last end. Shows ramp-up, saturation and
//! drain.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Chart, FONT, Format, color, draw_err, framed, with_backend};
use crate::input::Run;

pub struct LoadOverTime;

const BUCKETS: usize = 100;

/// (bucket start s, mean in flight, output tokens/s) per bucket.
pub fn load_series(records: &[tokenperf_core::record::RequestRecord]) -> Vec<(f64, f64, f64)> {
    let spans: Vec<(u64, u64)> = records
        .iter()
        .filter_map(|r| Some((r.sent_at_us?, r.done_at_us?)))
        .collect();
    let (Some(start), Some(end)) = (
        spans.iter().map(|s| s.0).min(),
        spans.iter().map(|s| s.1).max(),
    ) else {
        return Vec::new();
    };
    if end <= start {
        return Vec::new();
    }
    let width = (end - start) as f64 / BUCKETS as f64;
    let mut busy = vec![0.0f64; BUCKETS];
    let mut tokens = vec![0u64; BUCKETS];
    let bucket = |t: f64| (((t - start as f64) / width) as usize).min(BUCKETS - 1);
    for (a, b) in &spans {
        let (a, b) = (*a as f64, *b as f64);
        for (k, slot) in busy
            .iter_mut()
            .enumerate()
            .take(bucket(b) + 1)
            .skip(bucket(a))
        {
            let lo = start as f64 + k as f64 * width;
            let overlap = b.min(lo + width) - a.max(lo);
            if overlap > 0.0 {
                *slot += overlap;
            }
        }
    }
    for r in records.iter().filter(|r| r.outcome.is_ok()) {
        for e in r.events.iter().filter(|e| e.tokens() > 0) {
            if (start..=end).contains(&e.at_us()) {
                tokens[bucket(e.at_us() as f64)] += u64::from(e.tokens());
            }
        }
    }
    (0..BUCKETS)
        .map(|k| {
            (
                (start as f64 + k as f64 * width) * 1e-6,
                busy[k] / width,
                tokens[k] as f64 / (width * 1e-6),
            )
        })
        .collect()
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[&Run]) -> anyhow::Result<()> {
    let run = runs[0];
    let series = load_series(run.records.as_deref().unwrap_or_default());
    let area = framed(
        root,
        "Load over Time",
        &format!(
            "{} · {} buckets of {} s each",
            run.name,
            BUCKETS,
            super::tick(
                &series
                    .get(1)
                    .zip(series.first())
                    .map_or(0.0, |(b, a)| b.0 - a.0)
            )
        ),
    )?;
    let (top, bottom) = area.split_vertically(area.dim_in_pixel().1 / 2);
    let x1 = series.last().map_or(1.0, |s| s.0) * 1.02 + 1e-3;
    let x0 = series.first().map_or(0.0, |s| s.0);
    for (panel, desc, pick, c) in [
        (&top, "Requests in flight", 1usize, color(0)),
        (&bottom, "Output tokens/s", 2usize, color(2)),
    ] {
        let val = |s: &(f64, f64, f64)| if pick == 1 { s.1 } else { s.2 };
        let ymax = series.iter().map(val).fold(0.0f64, f64::max).max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(75)
            .build_cartesian_2d(x0..x1, 0.0..ymax)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("Time since run start (s)")
            .y_desc(desc)
            .axis_desc_style((FONT, 17))
            .label_style((FONT, 14))
            .x_label_formatter(&super::tick)
            .y_label_formatter(&super::tick)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(LineSeries::new(
                series.iter().map(|s| (s.0, val(s))),
                c.stroke_width(2),
            ))
            .map_err(draw_err)?;
    }
    Ok(())
}

impl Chart for LoadOverTime {
    fn file_stem(&self) -> &'static str {
        "load_over_time"
    }
    fn applies(&self, runs: &[&Run]) -> bool {
        runs.len() == 1 && runs[0].records.as_ref().is_some_and(|r| !r.is_empty())
    }
    fn render(&self, runs: &[&Run], path: &Path, format: Format) -> anyhow::Result<()> {
        with_backend!(path, format, |root: &DrawingArea<_, Shift>| draw(
            root, runs
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenperf_core::record::{Event, RequestRecord, TokenCount};

    #[test]
    fn two_overlapping_requests() {
        // One request over the whole second, one over its second half: 1 then 2 in flight.
        let mut a = RequestRecord::new(0, 0);
        a.sent_at_us = Some(0);
        a.done_at_us = Some(1_000_000);
        a.events = vec![Event(100_000, 5)];
        a.output_tokens = TokenCount::new(Some(5), None);
        let mut b = RequestRecord::new(1, 0);
        b.sent_at_us = Some(500_000);
        b.done_at_us = Some(1_000_000);
        let s = load_series(&[a, b]);
        assert_eq!(s.len(), BUCKETS);
        assert!(
            (s[10].1 - 1.0).abs() < 1e-9 && (s[90].1 - 2.0).abs() < 1e-9,
            "{:?} {:?}",
            s[10],
            s[90]
        );
        // 5 tokens in the bucket of 100–110 ms: 500 tokens/s there.
        assert!((s[10].2 - 500.0).abs() < 1e-6);
    }
}
