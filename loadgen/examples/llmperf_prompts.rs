//! Prints the requests `--prompt-sampling llmperf` builds, one JSON line each (`max_tokens`, the
//! sampled prompt length, the prompt), for comparing with LLMPerf's own algorithm
//! (`scripts/llmperf-parity.sh`).
//!
//! Usage: llmperf_prompts TOKENIZER.json CORPUS N MEAN_IN STD_IN MEAN_OUT STD_OUT SEED

use std::path::Path;

use anyhow::Context;
use loadgen::prompt::LlmperfSampler;
use tokenperf_core::tokenizer::TokenCounter;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() == 8,
        "usage: llmperf_prompts TOKENIZER.json CORPUS N MEAN_IN STD_IN MEAN_OUT STD_OUT SEED"
    );
    let t = TokenCounter::from_path(Path::new(&args[0]))?;
    let corpus =
        std::fs::read_to_string(&args[1]).with_context(|| format!("reading '{}'", args[1]))?;
    let n: Vec<u64> = args[2..]
        .iter()
        .map(|a| {
            a.parse()
                .with_context(|| format!("'{a}' is not a whole number"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut sampler = LlmperfSampler::new(&corpus, &t, n[5])?;
    for _ in 0..n[0] {
        let p = sampler.next((n[1] as f64, n[2] as f64), (n[3] as f64, n[4] as f64))?;
        let line = serde_json::json!({
            "max_tokens": p.max_tokens,
            "target": p.target_tokens,
            "prompt": p.prompt,
        });
        println!("{line}");
    }
    Ok(())
}
