//! The timeline of a run: for each request, its intended send, actual send, first token and end, on a
//! shared time axis (needs our records). The grey part is the client's own lag behind the schedule,
//! orange is the time to first token, blue the streaming; a failed request is red from its send to
//! its failure, and one never sent is a red cross at its intended time, so a server that died
//! mid-run shows. Bars are at least 2 px thick. Above 2,000 requests, an even sample.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{Chart, FONT, Format, color, draw_err, framed, legend_at, sample, with_backend};
use crate::input::Run;

pub struct Timeline;

const MAX_ROWS: usize = 2_000;

/// Seconds since run start: intended send, actual send, first token, end; and whether it failed.
type Row = (f64, Option<f64>, Option<f64>, Option<f64>, bool);

/// One row per request, by intended send time.
fn rows_of(frame: &polars::prelude::DataFrame) -> anyhow::Result<Vec<Row>> {
    let s = |t: Option<u64>| t.map(|t| t as f64 * 1e-6);
    let times = ["intended_us", "sent_us", "first_token_us", "done_us"]
        .map(|c| frame.column(c).and_then(|c| c.u64().cloned()));
    let [intended, sent, first, done] = times;
    let (intended, sent, first, done) = (intended?, sent?, first?, done?);
    let ok = frame.column("ok")?.bool()?;
    let mut rows: Vec<Row> = (0..frame.height())
        .map(|i| {
            (
                s(intended.get(i)).unwrap_or(0.0),
                s(sent.get(i)),
                s(first.get(i)),
                s(done.get(i)),
                ok.get(i) != Some(true),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(rows)
}

/// The caption: how many requests, failed and never sent, and whether it is a sample.
fn caption(run: &Run, rows: &[Row], from: Option<usize>) -> String {
    let dropped = rows.iter().filter(|r| r.1.is_none()).count();
    let failed = rows.iter().filter(|r| r.1.is_some() && r.4).count();
    let mut sub = format!(
        "{} · {} requests · {failed} failed (red)",
        run.name,
        rows.len()
    );
    if dropped > 0 {
        sub.push_str(&format!(" · {dropped} never sent (red crosses)"));
    }
    if let Some(n) = from {
        sub.push_str(&format!(" · even sample of {n}"));
    }
    sub
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[&Run]) -> anyhow::Result<()> {
    let run = runs[0];
    let all = rows_of(&run.frame)?;
    let (rows, from) = sample(&all, MAX_ROWS);
    let end = rows
        .iter()
        .filter_map(|r| r.3)
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let area = framed(root, "Request Timeline", &caption(run, &all, from))?;
    let mut chart = ChartBuilder::on(&area)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(0.0..end * 1.02, 0.0..rows.len().max(1) as f64)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("Time since run start (s)")
        .y_desc("Request (by intended send time)")
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 15))
        .x_label_formatter(&super::tick)
        .y_label_formatter(&super::tick)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_err)?;
    draw_rows(&mut chart, &rows)?;
    // Rows rise to the upper right, so the legend goes where the chart is empty.
    legend_at(&mut chart, SeriesLabelPosition::LowerRight)
}

/// Each row as its phases: lag grey, TTFT orange, streaming blue; a failure red from send to
/// failure, a request never sent a red cross at its intended time.
fn draw_rows<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    rows: &[Row],
) -> anyhow::Result<()> {
    let grey = RGBColor(150, 150, 150);
    let (orange, blue, red) = (color(1), color(0), color(3));
    // One row's share of the plot's height, at least 2 px, so bars stay visible at any count.
    let thick = (chart.plotting_area().dim_in_pixel().1 / rows.len().max(1) as u32).clamp(2, 12);
    let seg = |y: f64, a: Option<f64>, b: Option<f64>, c: RGBColor| {
        a.zip(b)
            .map(|(a, b)| PathElement::new([(a, y), (b, y)], c.stroke_width(thick)))
    };
    let ok = |r: &&Row| !r.4;
    let lag: Vec<_> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| seg(i as f64, Some(r.0), r.1, grey))
        .collect();
    let ttft: Vec<_> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| ok(r))
        .filter_map(|(i, r)| seg(i as f64, r.1, r.2, orange))
        .collect();
    let stream: Vec<_> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| ok(r))
        .filter_map(|(i, r)| seg(i as f64, r.2.or(r.1), r.3, blue))
        .collect();
    let failures: Vec<_> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.4 && r.1.is_some())
        .filter_map(|(i, r)| seg(i as f64, r.1, r.3.or(r.1), red))
        .collect();
    let unsent: Vec<_> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.1.is_none())
        .map(|(i, r)| Cross::new((r.0, i as f64), 4, red.stroke_width(2)))
        .collect();
    chart
        .draw_series(lag)
        .map_err(draw_err)?
        .label("intended → sent (schedule lag)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey.stroke_width(3)));
    chart
        .draw_series(ttft)
        .map_err(draw_err)?
        .label("sent → first token")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], orange.stroke_width(3)));
    chart
        .draw_series(stream)
        .map_err(draw_err)?
        .label("first token → end")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(3)));
    chart
        .draw_series(failures)
        .map_err(draw_err)?
        .label("failed: sent → failure")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], red.stroke_width(3)));
    chart
        .draw_series(unsent)
        .map_err(draw_err)?
        .label("never sent (dropped)")
        .legend(move |(x, y)| Cross::new((x + 10, y), 4, red.stroke_width(2)));
    Ok(())
}

impl Chart for Timeline {
    fn file_stem(&self) -> &'static str {
        "timeline"
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
