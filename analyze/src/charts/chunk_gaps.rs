//! "Gaps Between Token Chunks (ms)": every gap between consecutive token-carrying SSE events of
//! successful requests, pooled over requests, in milliseconds, 30 bins (needs our records). This is
//! what a user sees as the stream's rhythm; `inter_token_latencies` is one averaged value per request.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use polars::prelude::*;

use super::{Chart, Format, draw_histogram, with_backend};
use crate::input::Run;

pub struct ChunkGaps;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[&Run]) -> anyhow::Result<()> {
    let series: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| gaps_ms(&r.token_events()?))
        .collect::<anyhow::Result<_>>()?;
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

/// Gaps between consecutive token-carrying events of each request, in ms, from
/// [`Run::token_events`]'s rows (in arrival order within each request).
pub fn gaps_ms(events: &DataFrame) -> anyhow::Result<Vec<f64>> {
    if events.height() == 0 {
        return Ok(Vec::new());
    }
    let at = col("at_us").cast(DataType::Int64);
    let gaps = events
        .clone()
        .lazy()
        .select([
            ((at.clone() - at.shift(lit(1)).over([col("id")])?).cast(DataType::Float64) / lit(1e3))
                .alias("gap_ms"),
        ])
        .drop_nulls(None)
        .collect()?;
    Ok(gaps.column("gap_ms")?.f64()?.into_no_null_iter().collect())
}

impl Chart for ChunkGaps {
    fn file_stem(&self) -> &'static str {
        "chunk_gaps"
    }
    fn applies(&self, runs: &[&Run]) -> bool {
        runs.iter().all(|r| r.ours())
    }
    fn render(&self, runs: &[&Run], path: &Path, format: Format) -> anyhow::Result<()> {
        with_backend!(path, format, |root: &DrawingArea<_, Shift>| draw(
            root, runs
        ))
    }
}
