//! The sweep chart, for several runs (a concurrency or rate sweep): overall output throughput against
//! latency percentiles, one point per run, joined in order of offered load, so a line never runs out
//! and back (an auto sweep's folders hold its two ends first). Runs without a throughput window
//! (LLMPerf's own files) are left out, and the caption says how many.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Chart, FONT, Format, color, draw_err, framed, legend, padded, with_backend};
use crate::input::Run;

pub struct Sweep;

/// Requests per second a run offered: an open loop's rate; a closed loop offers what it achieves.
pub fn offered_rps(r: &Run) -> Option<f64> {
    let planned = r
        .info
        .as_ref()
        .and_then(|i| i.plan.get("load"))
        .filter(|l| l.get("kind").and_then(|k| k.as_str()) == Some("open"))
        .and_then(|l| l.get("rate")?.as_f64());
    planned.or_else(|| r.summary.num_completed_requests_per_min.map(|m| m / 60.0))
}

/// The runs that can be drawn, as (overall output throughput, run), in order of offered load.
pub fn ordered_points<'a>(runs: &[&'a Run]) -> Vec<(f64, &'a Run)> {
    let mut points: Vec<(f64, &Run)> = runs
        .iter()
        .filter_map(|r| Some((r.summary.mean_output_throughput_token_per_s?, *r)))
        .collect();
    points.sort_by(|a, b| {
        let key = |p: &(f64, &Run)| offered_rps(p.1).unwrap_or(p.0);
        key(a).total_cmp(&key(b))
    });
    points
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[&Run]) -> anyhow::Result<()> {
    let points = ordered_points(runs);
    let left_out = runs.len() - points.len();
    let mut sub = format!("{} runs, joined in order of offered load", points.len());
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
        .x_label_formatter(&super::tick)
        .y_label_formatter(&super::tick)
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
            // Names of points in the right half run leftwards, so none is cut at the edge.
            let h = if *x > x0 + (x1 - x0) * 0.5 {
                HPos::Right
            } else {
                HPos::Left
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    r.name.clone(),
                    (*x, y * 1e3),
                    (FONT, 13)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(h, VPos::Bottom)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokenperf_core::summary::RunInfo;

    /// A run from the committed fixture, with the load and figures of a sweep point.
    fn point(name: &str, rpm: f64, tput: f64, open_rate: Option<f64>) -> Run {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/requests-v1.jsonl");
        let mut r = crate::input::load(&fixture).unwrap().remove(0);
        r.name = name.to_string();
        r.summary.num_completed_requests_per_min = Some(rpm);
        r.summary.mean_output_throughput_token_per_s = Some(tput);
        let load = match open_rate {
            Some(rate) => serde_json::json!({"kind": "open", "rate": rate}),
            None => serde_json::json!({"kind": "closed", "concurrency": 1}),
        };
        r.info = Some(
            serde_json::from_value::<RunInfo>(serde_json::json!({
                "schema_version": 1, "tool": "t", "model": "m", "llm_api": "openai",
                "mean_input_tokens": 1, "stddev_input_tokens": 0, "mean_output_tokens": 1,
                "stddev_output_tokens": 0, "num_concurrent_requests": 1,
                "run_started_unix_us": 0, "plan": {"load": load}
            }))
            .unwrap(),
        );
        r
    }

    #[test]
    fn an_auto_sweep_is_joined_in_order_of_offered_load_not_folder_order() {
        // Folder order of `--sweep auto`: the two ends first, then the rates between them.
        let runs = [
            point("01-synchronous", 60.0, 300.0, None),
            point("02-throughput", 600.0, 2500.0, None),
            point("03-rate-4", 230.0, 1150.0, Some(4.0)),
            point("04-rate-7", 410.0, 1900.0, Some(7.0)),
        ];
        let refs: Vec<&Run> = runs.iter().collect();
        let order: Vec<&str> = ordered_points(&refs)
            .iter()
            .map(|(_, r)| r.name.as_str())
            .collect();
        assert_eq!(
            order,
            vec!["01-synchronous", "03-rate-4", "04-rate-7", "02-throughput"]
        );
        assert_eq!(
            offered_rps(&runs[2]),
            Some(4.0),
            "an open loop offers its rate"
        );
        assert_eq!(
            offered_rps(&runs[1]),
            Some(10.0),
            "a closed loop what it achieved"
        );
    }
}
