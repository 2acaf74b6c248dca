//! "Gaps Between Token Chunks (ms)": every gap between consecutive token-carrying SSE events of
//! successful requests, pooled over requests, in milliseconds, 30 bins (needs our records). This is
//! what a user sees as the stream's rhythm; `inter_token_latencies` is one averaged value per request.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Chart, Format, draw_histogram, with_backend};
use crate::input::Run;

pub struct ChunkGaps;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[&Run]) -> anyhow::Result<()> {
    let series: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            r.records
                .iter()
                .flatten()
                .filter(|r| r.outcome.is_ok())
                .flat_map(|r| r.token_gaps_us().map(|(g, _)| g as f64 / 1e3))
                .collect()
        })
        .collect();
    draw_histogram(
        root,
        (
            "Gaps Between Token Chunks (ms), every request pooled",
            "Gap between consecutive token-carrying events (ms)",
            "ms",
        ),
        runs,
        &series,
        "Gaps",
    )
}

impl Chart for ChunkGaps {
    fn file_stem(&self) -> &'static str {
        "chunk_gaps"
    }
    fn applies(&self, runs: &[&Run]) -> bool {
        runs.iter().all(|r| r.records.is_some())
    }
    fn render(&self, runs: &[&Run], path: &Path, format: Format) -> anyhow::Result<()> {
        with_backend!(path, format, |root: &DrawingArea<_, Shift>| draw(
            root, runs
        ))
    }
}
