//! "Inter-token Latency vs. Output Throughput": one point per successful request.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Chart, Format, draw_scatter, with_backend};
use crate::input::Run;

pub struct ItlVsThroughput;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[&Run]) -> anyhow::Result<()> {
    let series = runs
        .iter()
        .map(|r| {
            // Milliseconds, as every inter-token axis (the histogram, the CDF).
            let pairs = r.ok_pairs(
                "inter_token_latency_s",
                "request_output_throughput_token_per_s",
            )?;
            Ok(pairs.into_iter().map(|(l, t)| (l * 1e3, t)).collect())
        })
        .collect::<anyhow::Result<Vec<Vec<(f64, f64)>>>>()?;
    draw_scatter(
        root,
        "Inter-token Latency vs. Output Throughput",
        runs,
        ("Inter-token latency (ms)", "Output throughput (tokens/s)"),
        &series,
    )
}

impl Chart for ItlVsThroughput {
    fn file_stem(&self) -> &'static str {
        "inter_token_vs_throughput"
    }
    fn render(&self, runs: &[&Run], path: &Path, format: Format) -> anyhow::Result<()> {
        with_backend!(path, format, |root: &DrawingArea<_, Shift>| draw(
            root, runs
        ))
    }
}
