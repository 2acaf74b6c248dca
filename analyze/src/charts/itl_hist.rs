//! "Inter-token Latencies (ms)": histogram of successful requests' `inter_token_latency_s` in
//! milliseconds, 30 bins (TPOT, unless the run used `--metrics llmperf`).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Chart, Format, draw_histogram, with_backend};
use crate::input::Run;

pub struct ItlHistogram;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[&Run]) -> anyhow::Result<()> {
    let series = runs
        .iter()
        .map(|r| {
            Ok(r.ok_values("inter_token_latency_s")?
                .into_iter()
                .map(|s| s * 1e3)
                .collect())
        })
        .collect::<anyhow::Result<Vec<Vec<f64>>>>()?;
    draw_histogram(
        root,
        "Inter-token Latencies (ms)",
        "Inter-token latency (ms)",
        runs,
        &series,
    )
}

impl Chart for ItlHistogram {
    fn file_stem(&self) -> &'static str {
        "inter_token_latencies"
    }
    fn render(&self, runs: &[&Run], path: &Path, format: Format) -> anyhow::Result<()> {
        with_backend!(path, format, |root: &DrawingArea<_, Shift>| draw(
            root, runs
        ))
    }
}
