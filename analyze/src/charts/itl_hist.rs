//! "Inter-token Latencies (ms)" (the seed's chart and file name): a histogram of one value per
//! successful request, its `inter_token_latency_s` in milliseconds, 30 bins. That value is the
//! request's time per output token (TPOT) unless the run used `--metrics llmperf`, and the title
//! says which; the gaps between chunks, pooled over requests, are `chunk_gaps`.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Chart, Format, draw_histogram, with_backend};
use tokenperf_core::llmperf::MetricDefinitions;

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
    let llmperf = runs
        .iter()
        .any(|r| r.summary.metric_definitions == MetricDefinitions::Llmperf);
    let (title, x_desc) = if llmperf {
        (
            "Inter-token Latencies (ms), LLMPerf's definition, one per request",
            "(last content - send) / data events (ms)",
        )
    } else {
        (
            "Inter-token Latencies (ms): time per output token, one per request",
            "TPOT = (e2e - TTFT) / (output tokens - 1) (ms)",
        )
    };
    draw_histogram(root, (title, x_desc, "ms"), runs, &series, "Requests")
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
