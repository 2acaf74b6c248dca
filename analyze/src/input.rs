//! Reading runs: our `*_requests.jsonl`, and LLMPerf-format `*_individual_responses.json` (ours or
//! LLMPerf's own), from a file or a results folder, into one polars frame per run.
//!
//! LLMPerf's files have quirks every reader must accept: bare `NaN` (not JSON), numbers written as
//! strings, `error_code` null, int or string, records in completion order with no ids or timestamps.
//! Bad input is an error that names the file, and the line or record where it can.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use polars::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use tokenperf_core::llmperf::{LlmperfMetrics, MetricDefinitions, sanitize_nonstandard_json};
use tokenperf_core::record::RequestRecord;
use tokenperf_core::summary::{RunInfo, RunSummary};

/// One run, loaded.
#[derive(Debug)]
pub struct Run {
    /// Short name for legends and tables (the file stem).
    pub name: String,
    /// The file the records came from.
    pub source: PathBuf,
    /// One row per request: `ok`, `error_code` and the LLMPerf metric columns (f64, null when absent).
    pub frame: DataFrame,
    /// Our raw records, when the source had them.
    pub records: Option<Vec<RequestRecord>>,
    /// The run metadata, when a `*_run.json` sat beside the records.
    pub info: Option<RunInfo>,
    /// The model the run measured, from its metadata or LLMPerf's summary, when either says.
    pub model: Option<String>,
    /// What the reader had to leave out, for the user (e.g. a last line cut short).
    pub warnings: Vec<String>,
    /// The summary, computed with the shared statistics (equal to loadgen's for our runs).
    pub summary: RunSummary,
    /// The nine-key rows the frame was built from (sent requests only).
    pub rows: Vec<LlmperfMetrics>,
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
}

/// Column names of [`Run::frame`] besides `ok` and `error_code`, in LLMPerf's order.
pub const METRIC_COLUMNS: [&str; 7] = [
    "inter_token_latency_s",
    "ttft_s",
    "end_to_end_latency_s",
    "request_output_throughput_token_per_s",
    "number_total_tokens",
    "number_output_tokens",
    "number_input_tokens",
];

/// A number that may arrive as a number, a numeric string, or null (`NaN` was already turned into
/// null). A visitor rather than a `Value`, so a million records parse without a tree per field.
fn lenient_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number, a numeric string or null")
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(v.is_finite().then_some(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.trim().parse::<f64>().ok().filter(|x| x.is_finite()))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_any(V)
}

/// LLMPerf's `error_code`: null, an int (sometimes written as a float by pandas), or a string.
fn lenient_code<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an error code: null, a number or a string")
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(if v.fract() == 0.0 {
                (v as i64).into()
            } else {
                v.into()
            }))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.into()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.into()))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok((!v.is_empty()).then(|| v.into()))
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(v.then(|| true.into()))
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_any(V)
}

/// An LLMPerf record as found in the wild.
#[derive(Deserialize)]
struct LooseRecord {
    #[serde(default, deserialize_with = "lenient_code")]
    error_code: Option<Value>,
    #[serde(default, deserialize_with = "lenient_f64")]
    inter_token_latency_s: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    ttft_s: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    end_to_end_latency_s: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    request_output_throughput_token_per_s: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    number_total_tokens: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    number_output_tokens: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    number_input_tokens: Option<f64>,
}

/// Columns under construction.
#[derive(Default)]
struct Columns {
    ok: Vec<bool>,
    error_code: Vec<Option<String>>,
    metrics: [Vec<Option<f64>>; 7],
}

impl Columns {
    fn push(&mut self, error_code: &Value, m: [Option<f64>; 7]) {
        // `error_code` arrives null on success; anything else (int, string) is a failure.
        let code = match error_code {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            // LLMPerf's pandas writes codes that went through a float column as 500.0.
            Value::Number(n) => Some(match n.as_f64() {
                Some(f) if f.fract() == 0.0 => format!("{}", f as i64),
                _ => n.to_string(),
            }),
            other => Some(other.to_string()),
        };
        self.ok.push(code.is_none());
        self.error_code.push(code);
        for (col, v) in self.metrics.iter_mut().zip(m) {
            col.push(v);
        }
    }

    fn push_metrics(&mut self, m: &LlmperfMetrics) {
        self.push(
            &m.error_code.clone().unwrap_or(Value::Null),
            [
                m.inter_token_latency_s,
                m.ttft_s,
                m.end_to_end_latency_s,
                m.request_output_throughput_token_per_s,
                Some(m.number_total_tokens as f64),
                Some(m.number_output_tokens as f64),
                Some(m.number_input_tokens as f64),
            ],
        );
    }

    fn into_frame(self) -> PolarsResult<DataFrame> {
        let mut cols: Vec<Column> = vec![
            Column::new("ok".into(), self.ok),
            Column::new("error_code".into(), self.error_code),
        ];
        for (name, v) in METRIC_COLUMNS.iter().zip(self.metrics) {
            cols.push(Column::new((*name).into(), v));
        }
        DataFrame::new_infer_height(cols)
    }
}

/// Reads an LLMPerf-format array of records into nine-key rows.
pub fn read_llmperf(path: &Path) -> anyhow::Result<Vec<LlmperfMetrics>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading '{}'", path.display()))?;
    let clean = sanitize_nonstandard_json(&bytes);
    let first = clean.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'[') {
        // Tell "not JSON" from "JSON, but not an array of records".
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&clean) {
            bail!("'{}' is not valid JSON: {e}", path.display());
        }
        bail!(
            "'{}' is not an LLMPerf individual-responses file: expected a JSON array of records",
            path.display()
        );
    }
    let records: Vec<LooseRecord> = serde_json::from_slice(&clean).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            anyhow::anyhow!("'{}' is not valid JSON: {e}", path.display())
        } else {
            anyhow::anyhow!(
                "'{}': a record has the wrong shape ({e}); expected objects with LLMPerf's keys",
                path.display()
            )
        }
    })?;
    let count = |v: Option<f64>| v.map_or(0, |x| x.max(0.0) as u64);
    Ok(records
        .into_iter()
        .map(|r| LlmperfMetrics {
            error_code: r.error_code,
            error_msg: String::new(),
            inter_token_latency_s: r.inter_token_latency_s,
            ttft_s: r.ttft_s,
            end_to_end_latency_s: r.end_to_end_latency_s,
            request_output_throughput_token_per_s: r.request_output_throughput_token_per_s,
            number_total_tokens: count(r.number_total_tokens),
            number_output_tokens: count(r.number_output_tokens),
            number_input_tokens: count(r.number_input_tokens),
        })
        .collect())
}

/// The frame of nine-key rows.
pub fn frame_from_rows(rows: &[LlmperfMetrics]) -> anyhow::Result<DataFrame> {
    let mut c = Columns::default();
    for r in rows {
        c.push_metrics(r);
    }
    Ok(c.into_frame()?)
}

/// Reads our JSONL records (line numbers in errors). A last line cut short (a crash or a full disk
/// mid-write: no newline after it, and not a whole record) is left out with a warning, so every
/// complete record is still read; a bad line anywhere else is an error.
pub fn read_jsonl(path: &Path) -> anyhow::Result<(Vec<RequestRecord>, Vec<String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading '{}'", path.display()))?;
    let cut_at_end = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RequestRecord>(line) {
            Ok(r) => out.push(r),
            Err(_) if cut_at_end && i + 1 == lines.len() => warnings.push(format!(
                "'{}' line {}: the last line is cut short (the run ended mid-write); read the {} complete records before it",
                path.display(),
                i + 1,
                out.len()
            )),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "'{}' line {}: not a tokenperf request record",
                    path.display(),
                    i + 1
                )));
            }
        }
    }
    Ok((out, warnings))
}

/// The nine-key rows of our records (sent requests only), with the run's definitions.
pub fn rows_from_records(
    records: &[RequestRecord],
    defs: MetricDefinitions,
) -> Vec<LlmperfMetrics> {
    records
        .iter()
        .filter(|r| r.sent_at_us.is_some())
        .map(|r| r.llmperf_metrics(defs))
        .collect()
}

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
    let v: Value = serde_json::from_slice(&sanitize_nonstandard_json(&bytes))
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
    load_with(path, false)
}

/// [`load`], with shards kept apart when asked.
pub fn load_with(path: &Path, shards_apart: bool) -> anyhow::Result<Vec<Run>> {
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
        return Ok(vec![load_file(&records)?]);
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
            return load_shards(path, &shards, shards_apart);
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
                    let mut r =
                        load(&d).with_context(|| format!("sweep point '{}'", d.display()))?;
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
        return files.iter().map(|f| load_file(f)).collect();
    }
    Ok(vec![load_file(path)?])
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

/// A run of our records: the ones the results keep (loadgen's --warmup-seconds and
/// --cooldown-seconds marks hold here too), with their summary and frame.
fn run_from_records(
    name: String,
    source: &Path,
    records: Vec<RequestRecord>,
    info: Option<RunInfo>,
    warnings: Vec<String>,
) -> anyhow::Result<Run> {
    let records: Vec<RequestRecord> = records
        .into_iter()
        .filter(|r| r.excluded.is_none())
        .collect();
    let defs = info
        .as_ref()
        .map(|i| i.metric_definitions)
        .unwrap_or_default();
    let rows = rows_from_records(&records, defs);
    let frame = frame_from_rows(&rows)?;
    let summary = RunSummary::from_records(&records, defs);
    Ok(Run {
        name,
        source: source.to_path_buf(),
        frame,
        records: Some(records),
        model: info.as_ref().map(|i| i.model.clone()),
        warnings,
        info,
        summary,
        rows,
    })
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
) -> anyhow::Result<Vec<Run>> {
    if !apart {
        return Ok(vec![merge_shards(dir, shards)?]);
    }
    let mut runs = Vec::new();
    for (i, n, d) in shards {
        for mut r in load(d).with_context(|| format!("shard '{}'", d.display()))? {
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

/// One shard folder's records, metadata (needed: its start time places its records) and warnings.
fn read_shard(d: &Path) -> anyhow::Result<(RunInfo, Vec<RequestRecord>, Vec<String>)> {
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
    let (records, warnings) = read_jsonl(jsonl)?;
    Ok((info, records, warnings))
}

/// Shards of one plan as one run: every shard present once, each record moved onto the shared wall
/// clock (the earliest shard start is the zero; each shard's `run_started_unix_us` says where its
/// own zero was), and the statistics computed over the union of their records, as for one run.
pub fn merge_shards(dir: &Path, shards: &[(u64, u64, PathBuf)]) -> anyhow::Result<Run> {
    check_shard_set(dir, shards)?;
    let count = shards[0].1;
    let mut parts = shards
        .iter()
        .map(|(_, _, d)| read_shard(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let zero = parts
        .iter()
        .map(|p| p.0.run_started_unix_us)
        .min()
        .unwrap_or(0);
    let mut merged = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (info, records, w) in &mut parts {
        let offset = info.run_started_unix_us - zero;
        warnings.append(w);
        for mut r in records.drain(..) {
            if !seen.insert(r.id) {
                bail!(
                    "request {} appears in more than one shard of '{}': these shards are not one split plan",
                    r.id,
                    dir.display()
                );
            }
            shift(&mut r, offset);
            merged.push(r);
        }
    }
    let spread_us = parts
        .iter()
        .map(|p| p.0.run_started_unix_us - zero)
        .max()
        .unwrap_or(0);
    if spread_us > 100_000 {
        warnings.push(format!(
            "the {count} shards started up to {:.2} s apart (use loadgen --start-at to start them together)",
            spread_us as f64 / 1e6
        ));
    }
    merged.sort_by_key(|r| r.id);
    let mut info = parts.swap_remove(0).0;
    info.run_started_unix_us = zero;
    info.shard = None;
    let name = dir
        .file_name()
        .map_or("shards".into(), |n| n.to_string_lossy().into_owned());
    run_from_records(name, dir, merged, Some(info), warnings)
}

/// Moves a record's times `offset_us` later: from its shard's clock zero to the merged run's.
fn shift(r: &mut RequestRecord, offset_us: u64) {
    r.intended_send_us += offset_us;
    for t in [
        &mut r.sent_at_us,
        &mut r.response_head_at_us,
        &mut r.done_at_us,
    ]
    .into_iter()
    .flatten()
    {
        *t += offset_us;
    }
    for e in &mut r.events {
        e.0 += offset_us;
    }
    if let Some(gt) = &mut r.ground_truth {
        // Ground truth places events with `run_start_mono_us + at_us`: keep the sum.
        gt.run_start_mono_us = gt.run_start_mono_us.saturating_sub(offset_us);
    }
}

fn load_file(path: &Path) -> anyhow::Result<Run> {
    let s = path.to_string_lossy();
    if s.ends_with(".jsonl") {
        let info = read_run_info(path)?;
        let (records, warnings) = read_jsonl(path)?;
        run_from_records(
            stem_of(path, "_requests.jsonl"),
            path,
            records,
            info,
            warnings,
        )
    } else {
        let rows = read_llmperf(path)?;
        // LLMPerf's files only ever hold LLMPerf's definitions (or ours, if we wrote them with
        // `--metrics llmperf`); the label is informational for this kind of input.
        let mut summary = RunSummary::from_llmperf_rows(&rows, MetricDefinitions::Llmperf);
        let sibling = path.with_file_name(format!(
            "{}_summary.json",
            stem_of(path, "_individual_responses.json")
        ));
        let mut model = None;
        if sibling.is_file() {
            let s = read_llmperf_summary(&sibling)?;
            summary.mean_output_throughput_token_per_s = s.throughput_tps;
            summary.num_completed_requests_per_min = s.requests_per_min;
            model = s.model;
        }
        let frame = frame_from_rows(&rows)?;
        Ok(Run {
            name: stem_of(path, "_individual_responses.json")
                .trim_end_matches(".json")
                .to_string(),
            source: path.to_path_buf(),
            frame,
            records: None,
            info: None,
            model,
            warnings: Vec::new(),
            summary,
            rows,
        })
    }
}

impl Run {
    /// The run with only the requests `filter` keeps; frame and summary are recomputed.
    pub fn filtered(self, filter: &Filter) -> anyhow::Result<Run> {
        if filter.is_empty() {
            return Ok(self);
        }
        let defs = self.summary.metric_definitions;
        match self.records {
            Some(records) => {
                let keep: Vec<RequestRecord> = records
                    .into_iter()
                    .filter(|r| {
                        filter.window_s.is_none_or(|(a, b)| {
                            r.sent_at_us
                                .is_some_and(|t| (a..b).contains(&(t as f64 * 1e-6)))
                        }) && (filter.outcomes.is_empty()
                            || filter.outcomes.iter().any(|k| k == r.outcome.kind()))
                    })
                    .collect();
                let rows = rows_from_records(&keep, defs);
                Ok(Run {
                    frame: frame_from_rows(&rows)?,
                    summary: RunSummary::from_records(&keep, defs),
                    rows,
                    records: Some(keep),
                    ..self
                })
            }
            None => {
                if filter.window_s.is_some() {
                    bail!(
                        "--window needs send times, and '{}' is an LLMPerf file without them",
                        self.source.display()
                    );
                }
                let rows: Vec<LlmperfMetrics> = self
                    .rows
                    .into_iter()
                    .filter(|r| {
                        let kind = if r.error_code.is_none() {
                            "ok"
                        } else {
                            "error"
                        };
                        filter.outcomes.iter().any(|k| k == kind)
                    })
                    .collect();
                Ok(Run {
                    frame: frame_from_rows(&rows)?,
                    summary: RunSummary::from_llmperf_rows(&rows, defs),
                    rows,
                    ..self
                })
            }
        }
    }

    /// Values of a metric column over successful requests (nulls dropped).
    pub fn ok_values(&self, column: &str) -> anyhow::Result<Vec<f64>> {
        let ok = self.frame.column("ok")?.bool()?;
        let col = self.frame.column(column)?.f64()?;
        Ok(ok
            .iter()
            .zip(col.iter())
            .filter_map(|(ok, v)| if ok == Some(true) { v } else { None })
            .collect())
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

    /// Requests in the frame, and how many of them failed.
    pub fn counts(&self) -> (usize, usize) {
        let n = self.frame.height();
        let ok = self
            .frame
            .column("ok")
            .ok()
            .and_then(|c| c.bool().ok().map(|b| b.sum().unwrap_or(0) as usize))
            .unwrap_or(0);
        (n, n - ok)
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
