//! Load over time (needs our records): requests in flight (time-weighted per bucket) and output tokens
//! per second, in 100 buckets from the first send to the last end. Shows ramp-up, saturation and
//! drain.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use polars::prelude::*;

use super::{Chart, FONT, Format, color, draw_err, framed, with_backend};
use crate::input::Run;

pub struct LoadOverTime;

const BUCKETS: usize = 100;

/// (bucket start s, mean in flight, output tokens/s) per bucket, from each request's (send, end) in
/// µs and each token-carrying event's (arrival µs, tokens).
pub fn load_series(spans: &[(u64, u64)], events: &[(u64, u64)]) -> Vec<(f64, f64, f64)> {
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
    for (a, b) in spans {
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
    for (at, n) in events {
        if (start..=end).contains(at) {
            tokens[bucket(*at as f64)] += n;
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

/// Each sent request's (send, end) in µs.
fn spans(run: &Run) -> anyhow::Result<Vec<(u64, u64)>> {
    let f = &run.frame;
    let (sent, done) = (f.column("sent_us")?.u64()?, f.column("done_us")?.u64()?);
    Ok(sent
        .iter()
        .zip(done.iter())
        .filter_map(|(a, b)| Some((a?, b?)))
        .collect())
}

/// (arrival µs, tokens) of every token-carrying event.
fn token_pairs(events: &DataFrame) -> anyhow::Result<Vec<(u64, u64)>> {
    if events.height() == 0 {
        return Ok(Vec::new());
    }
    let (at, n) = (
        events.column("at_us")?.u64()?,
        events.column("tokens")?.u64()?,
    );
    Ok(at
        .iter()
        .zip(n.iter())
        .filter_map(|(a, b)| Some((a?, b?)))
        .collect())
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[&Run]) -> anyhow::Result<()> {
    let run = runs[0];
    let series = load_series(&spans(run)?, &token_pairs(&run.token_events()?)?);
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
        runs.len() == 1 && runs[0].ours() && runs[0].frame.height() > 0
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

    #[test]
    fn two_overlapping_requests() {
        // One request over the whole second, one over its second half: 1 then 2 in flight.
        let s = load_series(&[(0, 1_000_000), (500_000, 1_000_000)], &[(100_000, 5)]);
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
