//! What analyze prints and writes besides charts: the summary per run (LLMPerf's console block, the
//! same text loadgen printed), a compact comparison table with one column per run, and `report.html`,
//! which shows the tables and embeds every chart by relative link, so it works offline.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use tokenperf_core::stats::Stats;
use tokenperf_core::summary::RunSummary;

use crate::input::Run;

/// LLMPerf's console block for a run, as `token_benchmark_ray.py` printed it (`--llmperf-block`).
pub fn llmperf_block(run: &Run) -> String {
    // The model the run measured, as its metadata or LLMPerf's summary names it; the file's stem
    // only when neither is there.
    let model = run.model.clone().unwrap_or_else(|| run.name.clone());
    let api = run
        .info
        .as_ref()
        .map_or_else(|| "openai".to_string(), |i| i.llm_api.clone());
    run.summary.console_block(&model, &api)
}

/// The readable summary of a run: what it was, the headline figures with their intervals, and
/// (with our records) the details.
pub fn console(run: &Run) -> String {
    let mut s = format!("{}: {}\n", run.name, describe(run).join(", "));
    s.push_str(&run.summary.headline());
    if run.ours() {
        s.push_str(&run.summary.tokenperf_block());
    }
    s
}

/// What a run was, as far as its files say: model, server, load, tokenizer, seed, tool and date.
pub fn describe(run: &Run) -> Vec<String> {
    let mut d = Vec::new();
    if let Some(m) = &run.model {
        d.push(format!("model {m}"));
    }
    let Some(info) = &run.info else {
        d.push(if run.ours() {
            "no *_run.json beside the records, so no more is known".into()
        } else {
            "LLMPerf-format records (no run metadata)".into()
        });
        return d;
    };
    let plan = &info.plan;
    if let Some(url) = plan.get("api_base").and_then(Value::as_str) {
        d.push(format!("server {url}"));
    }
    d.push(load_shape(plan));
    d.push(format!(
        "prompts {}±{} tokens, outputs {}±{}",
        info.mean_input_tokens,
        info.stddev_input_tokens,
        info.mean_output_tokens,
        info.stddev_output_tokens
    ));
    if !info.tokenizer.is_empty() {
        d.push(format!("tokenizer {}", info.tokenizer));
    }
    if let Some(seed) = plan.get("seed").and_then(Value::as_u64) {
        d.push(format!("seed {seed}"));
    }
    let started =
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(info.run_started_unix_us);
    d.push(format!(
        "{} at {}",
        info.tool,
        humantime::format_rfc3339_seconds(started)
    ));
    d
}

/// The load as the plan states it: a closed loop's streams, an open loop's rate, or a trace.
fn load_shape(plan: &Value) -> String {
    let load = &plan["load"];
    let num = |k: &str| load.get(k).and_then(Value::as_f64);
    match load.get("kind").and_then(Value::as_str) {
        Some("closed") => format!(
            "closed loop, {} streams",
            num("concurrency").map_or("?".into(), |c| c.to_string())
        ),
        Some("open") => format!(
            "open loop, {} req/s{}",
            num("rate").map_or("?".into(), |r| r.to_string()),
            num("max_concurrency").map_or(String::new(), |c| format!(", at most {c} in flight"))
        ),
        Some("trace") => "trace replay".into(),
        _ => "load not recorded".into(),
    }
}

type Cell = fn(&Run) -> Option<f64>;
type Metric = fn(&RunSummary) -> &Stats;

/// A row of the comparison table: a plain value, or a percentile with its 95 % interval.
enum Row {
    Value(&'static str, Cell),
    /// Label, the metric, the quantile, and the factor to the row's unit.
    Pct(&'static str, Metric, f64, f64),
}

impl Row {
    fn label(&self) -> &'static str {
        match self {
            Row::Value(l, _) | Row::Pct(l, ..) => l,
        }
    }

    fn value(&self, r: &Run) -> Option<f64> {
        match self {
            Row::Value(_, f) => f(r),
            Row::Pct(_, m, q, k) => m(&r.summary).at(*q).map(|v| v * k),
        }
    }

    fn interval(&self, r: &Run) -> Option<(f64, f64)> {
        match self {
            Row::Value(..) => None,
            Row::Pct(_, m, q, k) => m(&r.summary).interval(*q).map(|(a, b)| (a * k, b * k)),
        }
    }

    /// Whether `r`'s interval lies apart from `base`'s (the first run's): a difference that is
    /// unlikely to be noise.
    fn differs(&self, r: &Run, base: &Run) -> bool {
        match self {
            Row::Value(..) => false,
            Row::Pct(_, m, q, _) => m(&r.summary).differs_at(m(&base.summary), *q),
        }
    }

    /// The cell's text: the value, its interval, and `*` when it differs from the first run.
    fn cell(&self, r: &Run, base: Option<&Run>) -> String {
        let mut s = fmt(self.value(r));
        if let Some((a, b)) = self.interval(r) {
            s = format!("{s} ({}–{})", fmt(Some(a)), fmt(Some(b)));
        }
        if base.is_some_and(|b| self.differs(r, b)) {
            s.push_str(" *");
        }
        s
    }
}

/// The rows of the comparison table.
fn rows() -> Vec<Row> {
    vec![
        Row::Value("requests sent", |r| {
            Some(r.summary.num_requests_started as f64)
        }),
        Row::Value("completed", |r| {
            Some(r.summary.num_completed_requests as f64)
        }),
        Row::Value("errors", |r| Some(r.summary.number_errors as f64)),
        Row::Value("error rate", |r| Some(r.summary.error_rate)),
        Row::Value("output tok/s (overall)", |r| {
            r.summary.mean_output_throughput_token_per_s
        }),
        Row::Value("requests/min", |r| r.summary.num_completed_requests_per_min),
        Row::Pct("TTFT p50 (ms)", |s| &s.ttft_s, 0.5, 1e3),
        Row::Pct("TTFT p90 (ms)", |s| &s.ttft_s, 0.9, 1e3),
        Row::Pct("TTFT p99 (ms)", |s| &s.ttft_s, 0.99, 1e3),
        Row::Pct(
            "inter-token p50 (ms)",
            |s| &s.inter_token_latency_s,
            0.5,
            1e3,
        ),
        Row::Pct(
            "inter-token p99 (ms)",
            |s| &s.inter_token_latency_s,
            0.99,
            1e3,
        ),
        Row::Pct("e2e p50 (s)", |s| &s.end_to_end_latency_s, 0.5, 1.0),
        Row::Pct("e2e p99 (s)", |s| &s.end_to_end_latency_s, 0.99, 1.0),
        Row::Pct(
            "request tok/s p50",
            |s| &s.request_output_throughput_token_per_s,
            0.5,
            1.0,
        ),
        Row::Value("output tokens mean", |r| {
            r.summary.number_output_tokens.mean
        }),
    ]
}

/// What the table's parentheses and stars mean.
pub const TABLE_NOTE: &str = "Percentiles carry their 95 % interval in parentheses (from order \
statistics; a percentile without one had too few requests to bound it). * marks a percentile whose \
interval lies apart from the first run's: a difference unlikely to be noise.";

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e12 => format!("{}", x as i64),
        Some(x) if x.abs() >= 100.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

/// A text table, one column per run; with several runs, `*` marks percentiles apart from the
/// first run's.
pub fn comparison_table(runs: &[Run]) -> String {
    let base = (runs.len() > 1).then(|| &runs[0]);
    let cells: Vec<Vec<String>> = rows()
        .iter()
        .map(|row| runs.iter().map(|r| row.cell(r, base)).collect())
        .collect();
    let width = runs
        .iter()
        .map(|r| r.name.chars().count())
        .chain(cells.iter().flatten().map(|c| c.chars().count()))
        .max()
        .unwrap_or(8)
        .clamp(10, 40);
    let mut s = format!("{:<24}", "");
    for r in runs {
        let _ = write!(s, " {:>width$}", r.name);
    }
    s.push('\n');
    for (row, cells) in rows().iter().zip(&cells) {
        let _ = write!(s, "{:<24}", row.label());
        for c in cells {
            let _ = write!(s, " {c:>width$}");
        }
        s.push('\n');
    }
    s
}

/// The comparison as JSON: one object per run with the same rows; a percentile row is
/// `{"value", "ci95", "differs_from_first"}`.
pub fn comparison_json(runs: &[Run]) -> Value {
    let base = &runs[0];
    json!({
        "schema_version": tokenperf_core::SCHEMA_VERSION,
        "note": TABLE_NOTE,
        "runs": runs.iter().map(|r| {
            let mut o = serde_json::Map::new();
            o.insert("run".into(), json!(r.name));
            o.insert("source".into(), json!(r.source));
            for row in rows() {
                let v = match &row {
                    Row::Value(..) => json!(row.value(r)),
                    Row::Pct(..) => json!({
                        "value": row.value(r),
                        "ci95": row.interval(r),
                        "differs_from_first": row.differs(r, base),
                    }),
                };
                o.insert(row.label().into(), v);
            }
            Value::Object(o)
        }).collect::<Vec<_>>(),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `report.html`, answering first: what was run (per run: model, server, load, tokenizer, seed,
/// tool, date), the headline figures with their intervals and the warnings, the comparison table
/// when there are several runs, then the charts (a sweep's chart first), and LLMPerf's blocks last.
/// Charts are linked relative to `out`, so the page works offline.
pub fn html(
    runs: &[Run],
    breakdowns: &[Vec<crate::breakdown::Breakdown>],
    charts: &[PathBuf],
    out: &Path,
) -> String {
    let mut h = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tokenperf report</title>\n\
         <style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
         th:first-child,td:first-child{text-align:left}pre{background:#f6f6f6;padding:1em;overflow:auto}\
         .warn{color:#8a4b00}.apart{font-weight:bold}\
         img{max-width:100%;border:1px solid #ddd}figure{margin:2em 0}</style></head><body>\n<h1>tokenperf report</h1>\n",
    );
    for (r, tables) in runs.iter().zip(breakdowns) {
        let _ = writeln!(h, "<section><h2>{}</h2>", esc(&r.name));
        let _ = writeln!(h, "<p>{}</p>", esc(&describe(r).join(" · ")));
        let _ = writeln!(h, "<pre>{}</pre>", esc(&r.summary.headline()));
        let mut warnings: Vec<String> = r.warnings.clone();
        warnings.extend(r.summary.health_warnings(r.model.as_deref()));
        let breakdown = r.summary.error_breakdown_text();
        if !breakdown.is_empty() {
            warnings.push(breakdown.trim_end().to_string());
        }
        let (n, failed) = r.counts();
        if failed == n {
            warnings.push(format!(
                "Every one of the {n} requests failed: no charts for this run"
            ));
        }
        if !warnings.is_empty() {
            h.push_str("<ul class=\"warn\">");
            for w in &warnings {
                let _ = write!(h, "<li>{}</li>", esc(w));
            }
            h.push_str("</ul>\n");
        }
        for t in tables {
            h.push_str(&crate::breakdown::html(t));
        }
        h.push_str("</section>\n");
    }
    if runs.len() > 1 {
        comparison_html(&mut h, runs);
    }
    h.push_str("<h2>Charts</h2>\n");
    // A sweep answers with its curve: that chart leads.
    let (lead, rest): (Vec<&PathBuf>, Vec<&PathBuf>) = charts
        .iter()
        .partition(|c| c.file_stem().is_some_and(|s| s == "sweep"));
    for c in lead.into_iter().chain(rest) {
        let rel = c.strip_prefix(out).unwrap_or(c);
        let name = rel.to_string_lossy();
        let _ = writeln!(
            h,
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
            esc(&name),
            esc(&name),
            esc(&name)
        );
    }
    h.push_str("<h2>LLMPerf's result blocks</h2>\n<p>As <code>token_benchmark_ray.py</code> prints them, for comparison with LLMPerf runs.</p>\n");
    for r in runs {
        let _ = writeln!(
            h,
            "<h3>{}</h3>\n<pre>{}</pre>",
            esc(&r.name),
            esc(&llmperf_block(r))
        );
    }
    h.push_str("</body></html>\n");
    h
}

/// The comparison table, `*` cells in bold.
fn comparison_html(h: &mut String, runs: &[Run]) {
    h.push_str("<h2>Comparison</h2>\n<table><tr><th></th>");
    for r in runs {
        let _ = write!(h, "<th>{}</th>", esc(&r.name));
    }
    h.push_str("</tr>\n");
    for row in rows() {
        let _ = write!(h, "<tr><td>{}</td>", esc(row.label()));
        for r in runs {
            let apart = row.differs(r, &runs[0]);
            let _ = write!(
                h,
                "<td{}>{}</td>",
                if apart { " class=\"apart\"" } else { "" },
                esc(&row.cell(r, Some(&runs[0])))
            );
        }
        h.push_str("</tr>\n");
    }
    let _ = writeln!(h, "</table>\n<p>{}</p>", esc(TABLE_NOTE));
}
