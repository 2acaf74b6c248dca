//! "Number of Input Tokens vs. TTFT": one point per successful request.

use std::path::Path;

use super::{Chart, draw_scatter};
use crate::input::Run;

pub struct TtftVsInput;

impl Chart for TtftVsInput {
    fn file_stem(&self) -> &'static str {
        "time_to_first_token"
    }
    fn render(&self, run: &Run, path: &Path) -> anyhow::Result<()> {
        let p = run.ok_pairs("number_input_tokens", "ttft_s")?;
        draw_scatter(
            path,
            "Number of Input Tokens vs. TTFT",
            run,
            ("Number of input tokens", "TTFT (s)"),
            &p,
        )
    }
}
