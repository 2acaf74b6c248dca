//! What analyze prints and writes besides charts: the summary per run (LLMPerf's console block, the
//! same text loadgen printed), a compact comparison table with one column per run, and `report.html`,
//! which shows the tables and embeds every chart by relative link, so it works offline.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::input::Run;

/// LLMPerf's console block for a run (and ours, when the run has our records).
pub fn console(run: &Run) -> String {
    // The model the run measured, as its metadata or LLMPerf's summary names it; the file's stem
    // only when neither is there.
    let model = run.model.clone().unwrap_or_else(|| run.name.clone());
    let api = run
        .info
        .as_ref()
        .map_or_else(|| "openai".to_string(), |i| i.llm_api.clone());
    let mut s = run.summary.console_block(&model, &api);
    if run.records.is_some() {
        s.push_str(&run.summary.tokenperf_block());
    }
    s
}

type Cell = fn(&Run) -> Option<f64>;

/// The rows of the comparison table: label, unit scale, and how to read the value.
fn rows() -> Vec<(&'static str, Cell)> {
    vec![
        ("requests sent", |r| {
            Some(r.summary.num_requests_started as f64)
        }),
        ("completed", |r| {
            Some(r.summary.num_completed_requests as f64)
        }),
        ("errors", |r| Some(r.summary.number_errors as f64)),
        ("error rate", |r| Some(r.summary.error_rate)),
        ("output tok/s (overall)", |r| {
            r.summary.mean_output_throughput_token_per_s
        }),
        ("requests/min", |r| r.summary.num_completed_requests_per_min),
        ("TTFT p50 (ms)", |r| r.summary.ttft_s.p50.map(|v| v * 1e3)),
        ("TTFT p90 (ms)", |r| r.summary.ttft_s.p90.map(|v| v * 1e3)),
        ("TTFT p99 (ms)", |r| r.summary.ttft_s.p99.map(|v| v * 1e3)),
        ("inter-token p50 (ms)", |r| {
            r.summary.inter_token_latency_s.p50.map(|v| v * 1e3)
        }),
        ("inter-token p99 (ms)", |r| {
            r.summary.inter_token_latency_s.p99.map(|v| v * 1e3)
        }),
        ("e2e p50 (s)", |r| r.summary.end_to_end_latency_s.p50),
        ("e2e p99 (s)", |r| r.summary.end_to_end_latency_s.p99),
        ("request tok/s p50", |r| {
            r.summary.request_output_throughput_token_per_s.p50
        }),
        ("output tokens mean", |r| {
            r.summary.number_output_tokens.mean
        }),
    ]
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e12 => format!("{}", x as i64),
        Some(x) if x.abs() >= 100.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

/// A text table, one column per run.
pub fn comparison_table(runs: &[Run]) -> String {
    let width = runs
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(8)
        .clamp(10, 40);
    let mut s = format!("{:<24}", "");
    for r in runs {
        let _ = write!(s, " {:>width$}", r.name);
    }
    s.push('\n');
    for (label, f) in rows() {
        let _ = write!(s, "{label:<24}");
        for r in runs {
            let _ = write!(s, " {:>width$}", fmt(f(r)));
        }
        s.push('\n');
    }
    s
}

/// The comparison as JSON: one object per run with the same rows.
pub fn comparison_json(runs: &[Run]) -> Value {
    json!({
        "schema_version": tokenperf_core::SCHEMA_VERSION,
        "runs": runs.iter().map(|r| {
            let mut o = serde_json::Map::new();
            o.insert("run".into(), json!(r.name));
            o.insert("source".into(), json!(r.source));
            for (label, f) in rows() {
                o.insert(label.into(), json!(f(r)));
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

/// `report.html`: tables, then every chart as an image linked relative to `out`.
pub fn html(runs: &[Run], charts: &[PathBuf], out: &Path) -> String {
    let mut h = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tokenperf report</title>\n\
         <style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
         th:first-child,td:first-child{text-align:left}pre{background:#f6f6f6;padding:1em;overflow:auto}\
         img{max-width:100%;border:1px solid #ddd}figure{margin:2em 0}</style></head><body>\n<h1>tokenperf report</h1>\n",
    );
    let _ = writeln!(
        h,
        "<p>{} run(s): {}</p>",
        runs.len(),
        runs.iter()
            .map(|r| esc(&r.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    h.push_str("<h2>Summary</h2>\n<table><tr><th></th>");
    for r in runs {
        let _ = write!(h, "<th>{}</th>", esc(&r.name));
    }
    h.push_str("</tr>\n");
    for (label, f) in rows() {
        let _ = write!(h, "<tr><td>{}</td>", esc(label));
        for r in runs {
            let _ = write!(h, "<td>{}</td>", fmt(f(r)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    for r in runs {
        let _ = writeln!(
            h,
            "<h3>{}</h3>\n<pre>{}</pre>",
            esc(&r.name),
            esc(&console(r))
        );
        let (n, failed) = r.counts();
        if failed == n {
            let _ = writeln!(
                h,
                "<p>Every one of the {n} requests failed: no charts for this run.</p>"
            );
        }
    }
    h.push_str("<h2>Charts</h2>\n");
    for c in charts {
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
    h.push_str("</body></html>\n");
    h
}
