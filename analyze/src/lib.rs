//! analyze: reads tokenperf and LLMPerf run records with polars and draws charts with plotters.
//!
//! # Layout
//! * [`input`]: reading runs (our JSONL, LLMPerf JSON, results folders) into frames and summaries.
//! * [`charts`]: one file per chart, behind the [`charts::Chart`] trait.
//!
//! [`run`] is the whole command as a library call; `main.rs` only parses flags and maps errors.

pub mod charts;
pub mod input;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;

use crate::input::Run;

/// Reads run records (tokenperf's or LLMPerf's) and writes the summary and charts.
///
/// Exit codes: 0 success, 2 bad input or a failed write.
#[derive(Debug, Clone, Parser)]
#[command(name = "analyze", version)]
pub struct Args {
    /// Runs to read: *_requests.jsonl, *_individual_responses.json, or results folders.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Folder for charts and the summary (created).
    #[arg(long, default_value = "analysis")]
    pub out: PathBuf,
    /// Allow --out to be one of the input folders.
    #[arg(long)]
    pub into_input: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What an analysis wrote.
#[derive(Debug)]
pub struct Analysis {
    pub runs: Vec<Run>,
    /// Every chart file written, per run.
    pub charts: Vec<PathBuf>,
    /// The summary files written (one JSON per run).
    pub summaries: Vec<PathBuf>,
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Reads the runs and writes `out/<run>/{chart}.png` and `out/<run>/summary.json`.
pub fn analyze(args: &Args) -> anyhow::Result<Analysis> {
    let mut runs = Vec::new();
    for p in &args.runs {
        runs.extend(input::load(p)?);
    }
    if !args.into_input {
        for p in &args.runs {
            let dir = if p.is_dir() {
                p.clone()
            } else {
                p.parent().map(PathBuf::from).unwrap_or_default()
            };
            if same_dir(&dir, &args.out) {
                bail!(
                    "--out '{}' is an input folder; choose another folder or pass --into-input",
                    args.out.display()
                );
            }
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output folder '{}'", args.out.display()))?;
    let mut charts = Vec::new();
    let mut summaries = Vec::new();
    for run in &runs {
        let (n, failed) = run.counts();
        if n == 0 {
            bail!("'{}' holds no requests", run.source.display());
        }
        let dir = if runs.len() == 1 {
            args.out.clone()
        } else {
            args.out.join(&run.name)
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating '{}'", dir.display()))?;
        let summary_path = dir.join("summary.json");
        let doc = serde_json::json!({
            "schema_version": tokenperf_core::SCHEMA_VERSION,
            "run": run.name,
            "source": run.source,
            "summary": run.summary,
        });
        std::fs::write(&summary_path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing '{}'", summary_path.display()))?;
        summaries.push(summary_path);
        if failed == n {
            // Nothing to draw: every request failed. The summary still says why.
            continue;
        }
        for chart in charts::seed_charts() {
            let path = dir.join(format!("{}.png", chart.file_stem()));
            chart
                .render(run, &path)
                .with_context(|| format!("drawing '{}'", path.display()))?;
            charts.push(path);
        }
    }
    Ok(Analysis {
        runs,
        charts,
        summaries,
    })
}

/// The command: analysis, then the summary block per run and where the files are.
pub fn run(args: Args) -> anyhow::Result<()> {
    let a = analyze(&args)?;
    if args.quiet {
        return Ok(());
    }
    for run in &a.runs {
        let (model, api) = run
            .info
            .as_ref()
            .map_or((run.name.clone(), "openai".to_string()), |i| {
                (i.model.clone(), i.llm_api.clone())
            });
        println!("{}", run.summary.console_block(&model, &api));
        if run.records.is_some() {
            println!("{}", run.summary.tokenperf_block());
        }
        let (n, failed) = run.counts();
        if failed == n {
            println!(
                "analyze: every one of the {n} requests in '{}' failed; no charts drawn",
                run.source.display()
            );
        }
    }
    println!(
        "analyze: {} charts and {} summaries written to {}",
        a.charts.len(),
        a.summaries.len(),
        args.out.display()
    );
    for c in &a.charts {
        println!("  {}", c.display());
    }
    Ok(())
}
