//! "End-to-end Latencies (s)": histogram of successful requests' end-to-end latency, 30 bins.

use std::path::Path;

use super::{Chart, draw_histogram, subtitle};
use crate::input::Run;

pub struct E2eHistogram;

impl Chart for E2eHistogram {
    fn file_stem(&self) -> &'static str {
        "e2e_latencies"
    }
    fn render(&self, run: &Run, path: &Path) -> anyhow::Result<()> {
        let v = run.ok_values("end_to_end_latency_s")?;
        draw_histogram(
            path,
            "End-to-end Latencies (s)",
            &subtitle(run, v.len(), None),
            "End-to-end latency (s)",
            &v,
        )
    }
}
