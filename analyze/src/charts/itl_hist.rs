//! "Inter-token Latencies (ms)": histogram of successful requests' `inter_token_latency_s` in
//! milliseconds, 30 bins (the definition the run used is TPOT unless it ran with `--metrics llmperf`).

use std::path::Path;

use super::{Chart, draw_histogram, subtitle};
use crate::input::Run;

pub struct ItlHistogram;

impl Chart for ItlHistogram {
    fn file_stem(&self) -> &'static str {
        "inter_token_latencies"
    }
    fn render(&self, run: &Run, path: &Path) -> anyhow::Result<()> {
        let v: Vec<f64> = run
            .ok_values("inter_token_latency_s")?
            .into_iter()
            .map(|s| s * 1e3)
            .collect();
        draw_histogram(
            path,
            "Inter-token Latencies (ms)",
            &subtitle(run, v.len(), None),
            "Inter-token latency (ms)",
            &v,
        )
    }
}
