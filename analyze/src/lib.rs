//! analyze: reads tokenperf and LLMPerf run records with polars and draws charts with plotters.
//!
//! # Layout
//! * [`input`]: finding runs (files, results, sweep and shard folders) and the filters;
//!   [`jsonl`] and [`llmperf_file`] read the two record formats into [`frame`]s; [`engine`] is
//!   the statistics, as polars expressions and group-bys.
//! * [`charts`]: one file per chart, behind the [`charts::Chart`] trait.
//! * [`report`]: the comparison table and `report.html`.
//!
//! [`analyze`] is the whole command as a library call; `main.rs` only parses flags and maps errors.

pub mod breakdown;
pub mod charts;
pub mod engine;
pub mod frame;
pub mod input;
pub mod jsonl;
pub mod llmperf_file;
pub mod report;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;

use crate::charts::Format;
use crate::input::{Filter, Run};

/// Reads run records (tokenperf's or LLMPerf's) and writes the summary, charts and an HTML report.
///
/// With several runs (`analyze runA runB …`), the charts overlay them and a comparison table has one
/// column per run. Exit codes: 0 success, 2 bad input or a failed write.
#[derive(Debug, Clone, Parser)]
#[command(name = "analyze", version)]
pub struct Args {
    /// Runs to read: *_requests.jsonl, *_individual_responses.json, or results folders.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Folder for charts, summaries and report.html (created).
    #[arg(long, default_value = "analysis")]
    pub out: PathBuf,
    /// Allow --out to be one of the input folders.
    #[arg(long)]
    pub into_input: bool,
    /// Chart file format.
    #[arg(long, value_enum, default_value = "png")]
    pub format: Format,
    /// Keep only requests sent in this window, `START:END` in seconds since the run start (drops warm-up
    /// and cool-down; needs our records).
    #[arg(long, value_parser = parse_window)]
    pub window: Option<(f64, f64)>,
    /// Keep only requests with this outcome kind (repeatable): ok, http_status, timeout, connect,
    /// stream, server_error, malformed, truncated, dropped, cancelled; `error` for LLMPerf's files.
    #[arg(long = "outcome")]
    pub outcomes: Vec<String>,
    /// Draw only these charts (repeatable, by file name without extension, e.g. `cdf_ttft`).
    #[arg(long = "chart")]
    pub charts: Vec<String>,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also print LLMPerf's result block per run (as `token_benchmark_ray.py` printed it), first,
    /// for scripts that parse it; report.html always ends with it.
    #[arg(long)]
    pub llmperf_block: bool,
    /// A folder of shard results (the shard-I-of-N folders loadgen --shard writes) is one run,
    /// merged on the shared wall clock; with this flag each shard is its own run, so every chart
    /// and the table show the shards side by side.
    #[arg(long)]
    pub shards_apart: bool,
}

fn parse_window(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not START:END (seconds), e.g. 10:70"))?;
    let num = |x: &str| {
        if x.trim().is_empty() {
            return Ok(None);
        }
        x.trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("'{x}' is not a number of seconds"))
    };
    let (a, b) = (num(a)?.unwrap_or(0.0), num(b)?.unwrap_or(f64::INFINITY));
    if a >= b {
        return Err(format!(
            "the window's start ({a}) must come before its end ({b})"
        ));
    }
    Ok((a, b))
}

impl Args {
    /// The analysis of `runs` into `out`, with defaults for everything else.
    pub fn new(runs: Vec<PathBuf>, out: PathBuf) -> Self {
        Self {
            runs,
            out,
            into_input: false,
            format: Format::Png,
            window: None,
            outcomes: Vec::new(),
            charts: Vec::new(),
            quiet: true,
            llmperf_block: false,
            shards_apart: false,
        }
    }
}

/// What an analysis wrote.
#[derive(Debug)]
pub struct Analysis {
    pub runs: Vec<Run>,
    /// Every chart file written.
    pub charts: Vec<PathBuf>,
    /// The summary files written (one JSON per run).
    pub summaries: Vec<PathBuf>,
    /// `comparison.json`, when several runs were given.
    pub comparison: Option<PathBuf>,
    pub report: PathBuf,
    /// Each run's breakdowns (over time, by shard), in run order.
    pub breakdowns: Vec<Vec<breakdown::Breakdown>>,
}

/// Runs that share a name (two inputs with the same file stem) get `-2`, `-3` … in input order, so
/// each has its own folder under `--out` and its own column in the comparison.
fn unique_names(runs: &mut [Run]) {
    let mut taken = std::collections::HashSet::new();
    for run in runs.iter_mut() {
        let base = run.name.clone();
        let mut k = 1;
        while !taken.insert(run.name.clone()) {
            k += 1;
            run.name = format!("{base}-{k}");
        }
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `summary.json` per run (in `out`, or `out/<run>` with several runs), breakdowns included.
fn write_summaries(
    runs: &[Run],
    breakdowns: &[Vec<breakdown::Breakdown>],
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut summaries = Vec::new();
    for (run, breakdowns) in runs.iter().zip(breakdowns) {
        let dir = if runs.len() == 1 {
            out.to_path_buf()
        } else {
            out.join(&run.name)
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating '{}'", dir.display()))?;
        let summary_path = dir.join("summary.json");
        let doc = serde_json::json!({
            "schema_version": tokenperf_core::SCHEMA_VERSION,
            "run": run.name,
            "source": run.source,
            "summary": run.summary,
            "breakdowns": breakdowns,
        });
        std::fs::write(&summary_path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing '{}'", summary_path.display()))?;
        summaries.push(summary_path);
    }
    Ok(summaries)
}

/// Every chart that applies (or that `--chart` names) over the runs with a successful request; runs
/// where every request failed are named in the report instead.
fn draw_charts(args: &Args, runs: &[Run]) -> anyhow::Result<Vec<PathBuf>> {
    let mut charts = Vec::new();
    let drawable: Vec<&Run> = runs
        .iter()
        .filter(|r| r.counts().1 < r.counts().0)
        .collect();
    if !drawable.is_empty() {
        let known: Vec<&str> = charts::all_charts().iter().map(|c| c.file_stem()).collect();
        if let Some(bad) = args.charts.iter().find(|c| !known.contains(&c.as_str())) {
            bail!(
                "--chart '{bad}' is not a chart; choose from {}",
                known.join(", ")
            );
        }
        for chart in charts::all_charts() {
            let wanted =
                args.charts.is_empty() || args.charts.iter().any(|c| c == chart.file_stem());
            if !wanted || !chart.applies(&drawable) {
                continue;
            }
            let path = args
                .out
                .join(format!("{}.{}", chart.file_stem(), args.format.extension()));
            chart
                .render(&drawable, &path, args.format)
                .with_context(|| format!("drawing '{}'", path.display()))?;
            charts.push(path);
        }
    }
    Ok(charts)
}

/// Reads the runs and writes summaries, charts and report.html into `args.out`.
pub fn analyze(args: &Args) -> anyhow::Result<Analysis> {
    let filter = Filter {
        window_s: args.window,
        outcomes: args.outcomes.clone(),
    };
    let mut runs = Vec::new();
    for p in &args.runs {
        runs.extend(input::load_filtered(p, args.shards_apart, &filter)?);
    }
    unique_names(&mut runs);
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
    for run in &runs {
        if run.counts().0 == 0 {
            bail!(
                "'{}' holds no requests{}",
                run.source.display(),
                if filter.is_empty() {
                    ""
                } else {
                    " (after --window/--outcome)"
                }
            );
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output folder '{}'", args.out.display()))?;
    let breakdowns = runs
        .iter()
        .map(breakdown::all)
        .collect::<anyhow::Result<Vec<_>>>()?;

    let summaries = write_summaries(&runs, &breakdowns, &args.out)?;

    let charts = draw_charts(args, &runs)?;
    let comparison = if runs.len() > 1 {
        let path = args.out.join("comparison.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&report::comparison_json(&runs))? + "\n",
        )
        .with_context(|| format!("writing '{}'", path.display()))?;
        Some(path)
    } else {
        None
    };
    let report = args.out.join("report.html");
    std::fs::write(
        &report,
        report::html(&runs, &breakdowns, &charts, &args.out),
    )
    .with_context(|| format!("writing '{}'", report.display()))?;
    Ok(Analysis {
        runs,
        charts,
        summaries,
        comparison,
        report,
        breakdowns,
    })
}

/// The command: analysis, then the summary per run (or the comparison table) and where files are.
pub fn run(args: Args) -> anyhow::Result<()> {
    let a = analyze(&args)?;
    // What had to be left out is said even with --quiet: a run must never look whole when it is not.
    for w in a.runs.iter().flat_map(|r| &r.warnings) {
        eprintln!("analyze: warning: {w}");
    }
    if args.quiet {
        return Ok(());
    }
    if args.llmperf_block {
        for run in &a.runs {
            println!("{}", report::llmperf_block(run));
        }
    }
    for run in &a.runs {
        println!("{}", report::console(run));
    }
    if a.runs.len() > 1 {
        println!("{}", report::comparison_table(&a.runs));
        println!("{}\n", report::TABLE_NOTE);
    }
    for run in &a.runs {
        let (n, failed) = run.counts();
        if failed == n {
            println!(
                "analyze: every one of the {n} requests in '{}' failed; no charts drawn for it",
                run.source.display()
            );
        }
    }
    println!(
        "analyze: {} charts, {} summaries and {} written to {}",
        a.charts.len(),
        a.summaries.len(),
        a.report.display(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_parsing() {
        assert_eq!(parse_window("10:70").unwrap(), (10.0, 70.0));
        assert_eq!(parse_window(":5").unwrap(), (0.0, 5.0));
        assert_eq!(parse_window("5:").unwrap(), (5.0, f64::INFINITY));
        assert!(parse_window("7").unwrap_err().contains("START:END"));
        assert!(parse_window("9:3").unwrap_err().contains("before"));
        assert!(parse_window("a:3").unwrap_err().contains("not a number"));
    }
}
