//! "End-to-end Latencies (s)": histogram of successful requests' end-to-end latency, 30 bins.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Chart, Format, draw_histogram, with_backend};
use crate::input::Run;

pub struct E2eHistogram;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[&Run]) -> anyhow::Result<()> {
    let series = runs
        .iter()
        .map(|r| r.ok_values("end_to_end_latency_s"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    draw_histogram(
        root,
        ("End-to-end Latencies (s)", "End-to-end latency (s)", "s"),
        runs,
        &series,
        "Requests",
    )
}

impl Chart for E2eHistogram {
    fn file_stem(&self) -> &'static str {
        "e2e_latencies"
    }
    fn render(&self, runs: &[&Run], path: &Path, format: Format) -> anyhow::Result<()> {
        with_backend!(path, format, |root: &DrawingArea<_, Shift>| draw(
            root, runs
        ))
    }
}
