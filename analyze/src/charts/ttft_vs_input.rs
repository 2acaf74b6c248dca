//! "Number of Input Tokens vs. TTFT": one point per successful request.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Chart, Format, draw_scatter, with_backend};
use crate::input::Run;

pub struct TtftVsInput;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[&Run]) -> anyhow::Result<()> {
    let series = runs
        .iter()
        .map(|r| {
            // Milliseconds, as every TTFT axis (the CDF, the sweep).
            let pairs = r.ok_pairs("number_input_tokens", "ttft_s")?;
            Ok(pairs.into_iter().map(|(n, t)| (n, t * 1e3)).collect())
        })
        .collect::<anyhow::Result<Vec<Vec<(f64, f64)>>>>()?;
    draw_scatter(
        root,
        "Number of Input Tokens vs. TTFT",
        runs,
        ("Number of input tokens", "TTFT (ms)"),
        &series,
    )
}

impl Chart for TtftVsInput {
    fn file_stem(&self) -> &'static str {
        "time_to_first_token"
    }
    fn render(&self, runs: &[&Run], path: &Path, format: Format) -> anyhow::Result<()> {
        with_backend!(path, format, |root: &DrawingArea<_, Shift>| draw(
            root, runs
        ))
    }
}
