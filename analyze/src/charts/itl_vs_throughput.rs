//! "Inter-token Latency vs. Output Throughput": one point per successful request.

use std::path::Path;

use super::{Chart, draw_scatter};
use crate::input::Run;

pub struct ItlVsThroughput;

impl Chart for ItlVsThroughput {
    fn file_stem(&self) -> &'static str {
        "inter_token_vs_throughput"
    }
    fn render(&self, run: &Run, path: &Path) -> anyhow::Result<()> {
        let p = run.ok_pairs(
            "inter_token_latency_s",
            "request_output_throughput_token_per_s",
        )?;
        draw_scatter(
            path,
            "Inter-token Latency vs. Output Throughput",
            run,
            ("Inter-token latency (s)", "Output throughput (tokens/s)"),
            &p,
        )
    }
}
