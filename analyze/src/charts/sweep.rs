//! The sweep chart, for several runs (a concurrency or rate sweep): overall output throughput against
//! latency percentiles, one point per run, joined in the order the runs were given. Runs without a
//! throughput window (LLMPerf's own files) are left out, and the caption says how many.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Chart, FONT, Format, color, draw_err, framed, legend, padded, with_backend};
use crate::input::Run;

pub struct Sweep;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[&Run]) -> anyhow::Result<()> {
    let points: Vec<(f64, &Run)> = runs
        .iter()
        .filter_map(|r| Some((r.summary.mean_output_throughput_token_per_s?, *r)))
        .collect();
    let left_out = runs.len() - points.len();
    let mut sub = format!("{} runs, in the order given", points.len());
    if left_out > 0 {
        sub.push_str(&format!(
            " · {left_out} without a throughput window left out"
        ));
    }
    let area = framed(root, "Sweep: Output Throughput vs. Latency", &sub)?;
    type Pick = fn(&Run) -> Option<f64>;
    let series: [(&str, Pick); 4] = [
        ("TTFT p50", |r| r.summary.ttft_s.p50),
        ("TTFT p99", |r| r.summary.ttft_s.p99),
        ("E2E p50", |r| r.summary.end_to_end_latency_s.p50),
        ("E2E p99", |r| r.summary.end_to_end_latency_s.p99),
    ];
    let ys = points
        .iter()
        .flat_map(|(_, r)| series.iter().filter_map(|(_, f)| f(r).map(|v| v * 1e3)));
    let (y0, y1) = padded(ys);
    let (x0, x1) = padded(points.iter().map(|p| p.0));
    let mut chart = ChartBuilder::on(&area)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d(x0..x1, y0.max(0.0)..y1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("Overall output throughput (tokens/s)")
        .y_desc("Latency (ms)")
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_err)?;
    for (i, (name, f)) in series.iter().enumerate() {
        let c = color(i);
        let line: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|(x, r)| Some((*x, f(r)? * 1e3)))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
            .map_err(draw_err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3)));
        chart
            .draw_series(
                line.iter()
                    .map(|&(x, y)| Circle::new((x, y), 5, c.filled())),
            )
            .map_err(draw_err)?;
    }
    for (x, r) in &points {
        if let Some(y) = r.summary.ttft_s.p50 {
            chart
                .draw_series(std::iter::once(Text::new(
                    r.name.clone(),
                    (*x, y * 1e3),
                    (FONT, 13).into_font(),
                )))
                .map_err(draw_err)?;
        }
    }
    legend(&mut chart)
}

impl Chart for Sweep {
    fn file_stem(&self) -> &'static str {
        "sweep"
    }
    fn applies(&self, runs: &[&Run]) -> bool {
        runs.len() >= 2
    }
    fn render(&self, runs: &[&Run], path: &Path, format: Format) -> anyhow::Result<()> {
        with_backend!(path, format, |root: &DrawingArea<_, Shift>| draw(
            root, runs
        ))
    }
}
