//! Reading runs: our `*_requests.jsonl`, and LLMPerf-format `*_individual_responses.json` (ours or
//! LLMPerf's own), from a file, a results folder, a sweep folder or a folder of shard folders, into
//! one polars frame per run ([`crate::frame`] reads the files) and its summary.
//!
//! LLMPerf's files have quirks every reader must accept: bare `NaN` (not JSON), numbers written as
//! strings, `error_code` null, int or string, records in completion order with no ids or timestamps.
//! Bad input is an error that names the file, and the line or record where it can.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use polars::prelude::*;
use serde_json::Value;
use tokenperf_core::llmperf::MetricDefinitions;
use tokenperf_core::record::RequestRecord;
use tokenperf_core::summary::{RunInfo, RunSummary};

use crate::frame::{self, Source};

/// One run, loaded.
#[derive(Debug)]
pub struct Run {
    /// Short name for legends and tables (the file stem).
    pub name: String,
    /// The file (or shard folder) the records came from.
    pub source: PathBuf,
    /// One row per request, in [`frame::FRAME_COLUMNS`] and [`METRIC_COLUMNS`].
    pub frame: DataFrame,
    /// Our records' files, for the per-chunk scans ([`Run::token_events`]); empty for LLMPerf's.
    pub sources: Vec<Source>,
    /// The filter the run was read with (the per-chunk scans apply it too).
    pub filter: Filter,
    /// The run metadata, when a `*_run.json` sat beside the records.
    pub info: Option<RunInfo>,
    /// The model the run measured, from its metadata or LLMPerf's summary, when either says.
    pub model: Option<String>,
    /// What the reader had to leave out, for the user (e.g. a last line cut short).
    pub warnings: Vec<String>,
    /// The summary: core's statistics (equal to loadgen's for our runs).
    pub summary: RunSummary,
}

/// Which requests to keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Keep requests sent within [start, end) seconds since the run start (our records only).
    pub window_s: Option<(f64, f64)>,
    /// Keep requests whose outcome kind is listed (`ok`, `http_status`, `timeout` …; for LLMPerf's
    /// files, `ok` or `error`). Empty: keep all.
    pub outcomes: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.window_s.is_none() && self.outcomes.is_empty()
    }

    /// Whether one of our records is kept.
    pub fn keeps(&self, r: &RequestRecord) -> bool {
        self.window_s.is_none_or(|(a, b)| {
            r.sent_at_us
                .is_some_and(|t| (a..b).contains(&(t as f64 * 1e-6)))
        }) && (self.outcomes.is_empty() || self.outcomes.iter().any(|k| k == r.outcome.kind()))
    }

    /// The same choice as a polars predicate over a frame's `sent_us` and `kind` columns.
    pub fn expr(&self) -> Expr {
        let mut e = lit(true);
        if let Some((a, b)) = self.window_s {
            let t = col("sent_us").cast(DataType::Float64) * lit(1e-6);
            e = e.and(t.clone().gt_eq(lit(a)).and(t.lt(lit(b))));
        }
        if !self.outcomes.is_empty() {
            let any = self
                .outcomes
                .iter()
                .fold(lit(false), |acc, k| acc.or(col("kind").eq(lit(k.as_str()))));
            e = e.and(any);
        }
        e
    }
}

/// Column names of [`Run::frame`]'s LLMPerf metrics, in LLMPerf's order.
pub const METRIC_COLUMNS: [&str; 7] = [
    "inter_token_latency_s",
    "ttft_s",
    "end_to_end_latency_s",
    "request_output_throughput_token_per_s",
    "number_total_tokens",
    "number_output_tokens",
    "number_input_tokens",
];

fn stem_of(path: &Path, suffix: &str) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(suffix).unwrap_or(&name).to_string()
}

fn find_with_suffix(dir: &Path, suffix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the folder '{}'", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    Ok(v)
}

/// What an LLMPerf `*_summary.json` says that its records alone cannot: overall output throughput
/// and completed requests per minute (LLMPerf timed its whole run), and the model it ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmperfSummary {
    pub throughput_tps: Option<f64>,
    pub requests_per_min: Option<f64>,
    pub model: Option<String>,
}

/// Reads an LLMPerf `*_summary.json`, quirks accepted: bare `NaN`, numbers written as strings.
pub fn read_llmperf_summary(path: &Path) -> anyhow::Result<LlmperfSummary> {
    let bytes = std::fs::read(path).with_context(|| format!("reading '{}'", path.display()))?;
    let v: Value =
        serde_json::from_slice(&tokenperf_core::llmperf::sanitize_nonstandard_json(&bytes))
            .with_context(|| format!("'{}' is not valid JSON", path.display()))?;
    if !v.is_object() || v.get("results_num_completed_requests").is_none() {
        bail!(
            "'{}' is not an LLMPerf summary (no results_num_completed_requests)",
            path.display()
        );
    }
    let num = |k: &str| match v.get(k) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    Ok(LlmperfSummary {
        throughput_tps: num("results_mean_output_throughput_token_per_s"),
        requests_per_min: num("results_num_completed_requests_per_min"),
        model: v.get("model").and_then(Value::as_str).map(str::to_string),
    })
}

/// Loads every run a path names: a records file, or a results folder (each run in it). A folder of
/// shard folders (`shard-I-of-N`) is one run, merged ([`merge_shards`]), or with `shards_apart`
/// one run per shard.
pub fn load(path: &Path) -> anyhow::Result<Vec<Run>> {
    load_filtered(path, false, &Filter::default())
}

/// [`load`], with shards kept apart when asked.
pub fn load_with(path: &Path, shards_apart: bool) -> anyhow::Result<Vec<Run>> {
    load_filtered(path, shards_apart, &Filter::default())
}

/// [`load_with`], keeping only the requests `filter` keeps (summaries, frames and per-chunk scans
/// alike).
pub fn load_filtered(path: &Path, shards_apart: bool, filter: &Filter) -> anyhow::Result<Vec<Run>> {
    if !path.exists() {
        bail!("'{}' does not exist", path.display());
    }
    let shown = path.to_string_lossy();
    if let Some(stem) = shown.strip_suffix("_summary.json") {
        // LLMPerf's summary names its run: load the records beside it.
        let records = PathBuf::from(format!("{stem}_individual_responses.json"));
        if !records.is_file() {
            bail!(
                "'{}' is a summary; its records '{}' are missing (analyze needs the per-request file)",
                path.display(),
                records.display()
            );
        }
        return Ok(vec![load_file(&records, filter)?]);
    }
    if path.is_dir() {
        let mut files = find_with_suffix(path, "_requests.jsonl")?;
        // LLMPerf's files count only where no records file of ours covers the same run.
        for f in find_with_suffix(path, "_individual_responses.json")? {
            let stem = stem_of(&f, "_individual_responses.json");
            if !files.iter().any(|g| stem_of(g, "_requests.jsonl") == stem) {
                files.push(f);
            }
        }
        let shards = shard_dirs(path)?;
        if files.is_empty() && !shards.is_empty() {
            return load_shards(path, &shards, shards_apart, filter);
        }
        if files.is_empty() {
            // A sweep folder: one run per numbered subfolder, in order.
            let mut subdirs: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading the folder '{}'", path.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            subdirs.sort();
            let mut runs = Vec::new();
            for d in subdirs {
                // A subfolder with run files is a point of the sweep: it loads, or the whole sweep
                // fails naming it (never a point silently missing from the chart and the table).
                let is_point = !find_with_suffix(&d, "_requests.jsonl")?.is_empty()
                    || !find_with_suffix(&d, "_individual_responses.json")?.is_empty();
                if is_point {
                    let mut r = load_filtered(&d, shards_apart, filter)
                        .with_context(|| format!("sweep point '{}'", d.display()))?;
                    runs.append(&mut r);
                }
            }
            if runs.is_empty() {
                bail!(
                    "'{}' holds no *_requests.jsonl or *_individual_responses.json file",
                    path.display()
                );
            }
            // Name each run after its subfolder, so points of a sweep tell apart.
            return Ok(runs
                .into_iter()
                .map(|mut r| {
                    if let Some(parent) = r.source.parent().and_then(|p| p.file_name()) {
                        r.name = parent.to_string_lossy().into_owned();
                    }
                    r
                })
                .collect());
        }
        return files.iter().map(|f| load_file(f, filter)).collect();
    }
    Ok(vec![load_file(path, filter)?])
}

/// The `*_run.json` beside a records file, when there is one.
fn read_run_info(jsonl: &Path) -> anyhow::Result<Option<RunInfo>> {
    let stem = stem_of(jsonl, "_requests.jsonl");
    let info_path = jsonl.with_file_name(format!("{stem}_run.json"));
    match std::fs::read(&info_path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!("'{}' is not a tokenperf run file", info_path.display())
        })?)),
        Err(_) => Ok(None),
    }
}

/// The shard folders loadgen's `--shard I/N` writes (`shard-I-of-N`) directly in `dir`, by index.
pub fn shard_dirs(dir: &Path) -> anyhow::Result<Vec<(u64, u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .with_context(|| format!("reading the folder '{}'", dir.display()))?
        .filter_map(Result::ok)
    {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let parsed = name
            .strip_prefix("shard-")
            .and_then(|r| r.split_once("-of-"))
            .and_then(|(i, n)| Some((i.parse::<u64>().ok()?, n.parse::<u64>().ok()?)));
        if let (Some((i, n)), true) = (parsed, p.is_dir()) {
            out.push((i, n, p));
        }
    }
    out.sort();
    Ok(out)
}

/// A folder of shard folders: one merged run, or one run per shard.
fn load_shards(
    dir: &Path,
    shards: &[(u64, u64, PathBuf)],
    apart: bool,
    filter: &Filter,
) -> anyhow::Result<Vec<Run>> {
    if !apart {
        return Ok(vec![merge_shards(dir, shards, filter)?]);
    }
    let mut runs = Vec::new();
    for (i, n, d) in shards {
        for mut r in
            load_filtered(d, false, filter).with_context(|| format!("shard '{}'", d.display()))?
        {
            r.name = format!("shard-{i}-of-{n}");
            runs.push(r);
        }
    }
    Ok(runs)
}

/// Checks that `shards` are every shard of one split, each once.
fn check_shard_set(dir: &Path, shards: &[(u64, u64, PathBuf)]) -> anyhow::Result<()> {
    let count = shards[0].1;
    if let Some((_, n, p)) = shards.iter().find(|s| s.1 != count) {
        bail!(
            "'{}' is a shard of {n}, but '{}' is one of {count}: one folder holds one split plan",
            p.display(),
            shards[0].2.display()
        );
    }
    let missing: Vec<String> = (0..count)
        .filter(|i| !shards.iter().any(|s| s.0 == *i))
        .map(|i| format!("shard-{i}-of-{count}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "'{}': {} missing, so the merged run would not be the plan (analyze one shard's folder \
             to see it alone)",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// One shard folder's records file and metadata (needed: its start time places its records).
fn shard_files(d: &Path) -> anyhow::Result<(PathBuf, RunInfo)> {
    let files = find_with_suffix(d, "_requests.jsonl")?;
    let [jsonl] = files.as_slice() else {
        bail!(
            "'{}' should hold one *_requests.jsonl, holds {}",
            d.display(),
            files.len()
        );
    };
    let info = read_run_info(jsonl)?.with_context(|| {
        format!(
            "'{}' has no *_run.json beside it: its start time is needed to merge it",
            jsonl.display()
        )
    })?;
    Ok((jsonl.clone(), info))
}

/// Shards of one plan as one run: every shard present once, each record moved onto the shared wall
/// clock (the earliest shard start is the zero; each shard's `run_started_unix_us` says where its
/// own zero was), and the statistics computed over the union of their records, as for one run.
/// The frame's `shard` column says which shard each request came from.
pub fn merge_shards(
    dir: &Path,
    shards: &[(u64, u64, PathBuf)],
    filter: &Filter,
) -> anyhow::Result<Run> {
    check_shard_set(dir, shards)?;
    let count = shards[0].1;
    let parts = shards
        .iter()
        .map(|(i, _, d)| Ok((*i, shard_files(d)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let zero = parts
        .iter()
        .map(|p| p.1.1.run_started_unix_us)
        .min()
        .unwrap_or(0);
    let mut sources: Vec<Source> = parts
        .iter()
        .map(|(i, (path, info))| Source {
            path: path.clone(),
            offset_us: info.run_started_unix_us - zero,
            shard: Some(*i as u32),
            whole_bytes: None,
        })
        .collect();
    let mut info = parts[0].1.1.clone();
    let ours = crate::jsonl::read_ours(&mut sources, info.metric_definitions, filter)?;
    let frame = ours.frame;
    if let Some(id) = first_duplicate(&frame)? {
        bail!(
            "request {id} appears in more than one shard of '{}': these shards are not one split plan",
            dir.display()
        );
    }
    let mut warnings = ours.warnings;
    let spread_us = sources.iter().map(|s| s.offset_us).max().unwrap_or(0);
    if spread_us > 100_000 {
        warnings.push(format!(
            "the {count} shards started up to {:.2} s apart (use loadgen --start-at to start them together)",
            spread_us as f64 / 1e6
        ));
    }
    info.run_started_unix_us = zero;
    info.shard = None;
    Ok(Run {
        name: dir
            .file_name()
            .map_or("shards".into(), |n| n.to_string_lossy().into_owned()),
        source: dir.to_path_buf(),
        model: Some(info.model.clone()),
        frame,
        sources,
        filter: filter.clone(),
        info: Some(info),
        warnings,
        summary: ours.summary,
    })
}

/// The first id (in id order) that appears twice in `frame`; only the ids are sorted, not the frame.
fn first_duplicate(frame: &DataFrame) -> anyhow::Result<Option<u64>> {
    let ids = frame.column("id")?.u64()?.sort(false);
    let mut prev = None;
    for id in ids.iter().flatten() {
        if prev == Some(id) {
            return Ok(Some(id));
        }
        prev = Some(id);
    }
    Ok(None)
}

/// A run of our records from one file.
fn load_ours(path: &Path, filter: &Filter) -> anyhow::Result<Run> {
    let info = read_run_info(path)?;
    let defs = info
        .as_ref()
        .map(|i| i.metric_definitions)
        .unwrap_or_default();
    let mut sources = vec![Source {
        path: path.to_path_buf(),
        offset_us: 0,
        shard: None,
        whole_bytes: None,
    }];
    let ours = crate::jsonl::read_ours(&mut sources, defs, filter)?;
    Ok(Run {
        name: stem_of(path, "_requests.jsonl"),
        source: path.to_path_buf(),
        frame: ours.frame,
        sources,
        filter: filter.clone(),
        model: info.as_ref().map(|i| i.model.clone()),
        info,
        warnings: ours.warnings,
        summary: ours.summary,
    })
}

/// A run of LLMPerf-format records, with what its `*_summary.json` beside it adds.
fn load_llmperf(path: &Path, filter: &Filter) -> anyhow::Result<Run> {
    if filter.window_s.is_some() {
        bail!(
            "--window needs send times, and '{}' is an LLMPerf file without them",
            path.display()
        );
    }
    let mut frame = crate::llmperf_file::read_llmperf(path)?;
    if !filter.is_empty() {
        frame = frame.lazy().filter(filter.expr()).collect()?;
    }
    // LLMPerf's files only ever hold LLMPerf's definitions (or ours, if we wrote them with
    // `--metrics llmperf`); the label is informational for this kind of input.
    let mut summary = crate::llmperf_file::llmperf_summary(&frame, MetricDefinitions::Llmperf)?;
    let stem = stem_of(path, "_individual_responses.json");
    let sibling = path.with_file_name(format!("{stem}_summary.json"));
    let mut model = None;
    // Its run-level figures hold for the whole run, not for a filtered part of it.
    if sibling.is_file() && filter.is_empty() {
        let s = read_llmperf_summary(&sibling)?;
        summary.mean_output_throughput_token_per_s = s.throughput_tps;
        summary.num_completed_requests_per_min = s.requests_per_min;
        model = s.model;
    }
    Ok(Run {
        name: stem.trim_end_matches(".json").to_string(),
        source: path.to_path_buf(),
        frame,
        sources: Vec::new(),
        filter: filter.clone(),
        info: None,
        model,
        warnings: Vec::new(),
        summary,
    })
}

fn load_file(path: &Path, filter: &Filter) -> anyhow::Result<Run> {
    if path.to_string_lossy().ends_with(".jsonl") {
        load_ours(path, filter)
    } else {
        load_llmperf(path, filter)
    }
}

impl Run {
    /// Whether the run is our records (with times, events and outcomes), not LLMPerf's nine keys.
    pub fn ours(&self) -> bool {
        !self.sources.is_empty()
    }

    /// The per-chunk events of the run's successful requests (see [`frame::token_events`]); empty
    /// for LLMPerf's files.
    pub fn token_events(&self) -> anyhow::Result<DataFrame> {
        Ok(frame::token_events(&self.sources, &self.filter)?)
    }

    /// Values of a metric column over successful requests (nulls dropped).
    pub fn ok_values(&self, column: &str) -> anyhow::Result<Vec<f64>> {
        let v = self
            .frame
            .clone()
            .lazy()
            .select([col(column).filter(col("ok").and(col(column).is_not_null()))])
            .collect()?;
        let c = v.column(column)?.cast(&DataType::Float64)?;
        Ok(c.f64()?.into_no_null_iter().collect())
    }

    /// Pairs of two columns over successful requests where both are present.
    pub fn ok_pairs(&self, x: &str, y: &str) -> anyhow::Result<Vec<(f64, f64)>> {
        let ok = self.frame.column("ok")?.bool()?;
        let xs = self.frame.column(x)?.f64()?;
        let ys = self.frame.column(y)?.f64()?;
        Ok(ok
            .iter()
            .zip(xs.iter())
            .zip(ys.iter())
            .filter_map(|((ok, x), y)| match (ok, x, y) {
                (Some(true), Some(x), Some(y)) => Some((x, y)),
                _ => None,
            })
            .collect())
    }

    /// Requests sent, and how many of them failed.
    pub fn counts(&self) -> (usize, usize) {
        let sum = |name: &str| {
            self.frame
                .column(name)
                .ok()
                .and_then(|c| c.bool().ok().map(|b| b.sum().unwrap_or(0) as usize))
                .unwrap_or(0)
        };
        let sent = sum("sent");
        let ok = self
            .frame
            .column("ok")
            .ok()
            .zip(self.frame.column("sent").ok())
            .and_then(|(o, s)| Some((o.bool().ok()? & s.bool().ok()?).sum().unwrap_or(0) as usize))
            .unwrap_or(0);
        (sent, sent - ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llmperf_quirks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m_1_2_individual_responses.json");
        std::fs::write(
            &p,
            r#"[{"error_code": null, "error_msg": "", "inter_token_latency_s": 0.01, "ttft_s": 0.05,
                 "end_to_end_latency_s": 1.0, "request_output_throughput_token_per_s": 100.0,
                 "number_total_tokens": "150", "number_output_tokens": 100, "number_input_tokens": 50},
                {"error_code": 500, "error_msg": "boom", "inter_token_latency_s": NaN, "ttft_s": 0,
                 "end_to_end_latency_s": 0, "request_output_throughput_token_per_s": NaN,
                 "number_total_tokens": 0, "number_output_tokens": 0, "number_input_tokens": 50},
                {"error_code": "rate_limit", "error_msg": "x"}]"#,
        )
        .unwrap();
        let runs = load(&p).unwrap();
        let r = &runs[0];
        assert_eq!(r.name, "m_1_2");
        assert_eq!(r.counts(), (3, 2));
        assert_eq!(r.ok_values("number_total_tokens").unwrap(), vec![150.0]);
        assert_eq!(r.ok_values("ttft_s").unwrap(), vec![0.05]);
        let codes = r.frame.column("error_code").unwrap();
        assert_eq!(codes.str().unwrap().get(1), Some("500"));
        assert_eq!(codes.str().unwrap().get(2), Some("rate_limit"));
    }

    /// The filter is applied twice, to records as they are read (`keeps`) and to the per-chunk
    /// scan (`expr`): both must keep the same requests.
    #[test]
    fn the_per_chunk_scan_keeps_the_requests_the_frame_keeps() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/requests-v1.jsonl");
        let filters = [
            Filter::default(),
            Filter {
                window_s: Some((0.05, 0.3)),
                outcomes: Vec::new(),
            },
            Filter {
                window_s: None,
                outcomes: vec!["http_status".into()],
            },
        ];
        for filter in filters {
            let run = load_filtered(&fixture, false, &filter).unwrap().remove(0);
            let ok_ids: Vec<u64> = run
                .frame
                .clone()
                .lazy()
                .filter(col("ok"))
                .select([col("id")])
                .collect()
                .unwrap()
                .column("id")
                .unwrap()
                .u64()
                .unwrap()
                .into_no_null_iter()
                .collect();
            let events = run.token_events().unwrap();
            let mut scanned: Vec<u64> = if events.height() == 0 {
                Vec::new()
            } else {
                events
                    .column("id")
                    .unwrap()
                    .u64()
                    .unwrap()
                    .into_no_null_iter()
                    .collect()
            };
            scanned.dedup();
            assert_eq!(scanned, ok_ids, "{filter:?}");
        }
    }

    #[test]
    fn bad_input_names_the_file_and_place() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let e = load(&missing).err().unwrap().to_string();
        assert!(
            e.contains("nope.json") && e.contains("does not exist"),
            "{e}"
        );

        let p = dir.path().join("x_individual_responses.json");
        std::fs::write(&p, "{not json").unwrap();
        let e = format!("{:#}", load(&p).err().unwrap());
        assert!(
            e.contains("x_individual_responses.json") && e.contains("not valid JSON"),
            "{e}"
        );

        std::fs::write(&p, r#"{"a": 1}"#).unwrap();
        let e = format!("{:#}", load(&p).err().unwrap());
        assert!(e.contains("expected a JSON array"), "{e}");

        let j = dir.path().join("r_requests.jsonl");
        std::fs::write(&j, "{\"oops\": 1}\n").unwrap();
        let e = format!("{:#}", load(&j).err().unwrap());
        assert!(e.contains("line 1"), "{e}");

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = format!("{:#}", load(&empty).err().unwrap());
        assert!(e.contains("holds no"), "{e}");
    }
}
