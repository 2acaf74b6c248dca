//! Where records go: sinks that consume each record as it finishes (the JSONL file, the progress line),
//! and the files assembled at the end (LLMPerf's two files and our run metadata).
//!
//! File names, for a stem `S` = LLMPerf's `{model}_{mean_in}_{mean_out}` (sanitized):
//! * `S_requests.jsonl`: one [`RequestRecord`] per line, appended and flushed as each request ends, so
//!   a crash or Ctrl-C keeps every finished record;
//! * `S_individual_responses.json`: LLMPerf's array of nine-key records, in completion order;
//! * `S_summary.json`: LLMPerf's summary keys, then a `tokenperf` object;
//! * `S_run.json`: the [`RunInfo`] (resolved plan, tokenizer, wall-clock start and end, host).

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use tokenperf_core::llmperf::MetricDefinitions;
use tokenperf_core::record::RequestRecord;
use tokenperf_core::summary::{RunInfo, RunSummary};

/// Consumes records as requests finish.
pub trait RecordSink: Send {
    fn record(&mut self, r: &RequestRecord) -> anyhow::Result<()>;
    /// Called once after the last record.
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Appends one JSON line per record and flushes it at once.
pub struct JsonlSink {
    path: PathBuf,
    w: BufWriter<File>,
}

impl JsonlSink {
    /// Creates (truncates) the file now, so a bad path fails before any load is sent.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let f = File::create(path).with_context(|| format!("creating '{}'", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            w: BufWriter::new(f),
        })
    }
}

impl RecordSink for JsonlSink {
    fn record(&mut self, r: &RequestRecord) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.w, r)?;
        self.w.write_all(b"\n")?;
        self.w
            .flush()
            .with_context(|| format!("writing '{}'", self.path.display()))
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(self.w.flush()?)
    }
}

/// A one-line progress display on stderr, shown only when stderr is a terminal.
pub struct Progress {
    /// Requests sent and not finished, shared with the client.
    in_flight: std::sync::Arc<std::sync::atomic::AtomicI64>,
    total: Option<u64>,
    done: u64,
    errors: u64,
    tokens: u64,
    start: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
}

impl Progress {
    pub fn new(
        total: Option<u64>,
        quiet: bool,
        in_flight: std::sync::Arc<std::sync::atomic::AtomicI64>,
    ) -> Self {
        Self {
            in_flight,
            total,
            done: 0,
            errors: 0,
            tokens: 0,
            start: Instant::now(),
            last_draw: None,
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }

    fn draw(&mut self, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last_draw
                .is_some_and(|t| now - t < std::time::Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        let secs = (now - self.start).as_secs_f64().max(1e-9);
        let total = self.total.map_or(String::new(), |t| format!("/{t}"));
        eprint!(
            "\r{}{total} done, {} errors, {} in flight, {:.0} output tok/s   ",
            self.done,
            self.errors,
            self.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            self.tokens as f64 / secs
        );
    }
}

impl RecordSink for Progress {
    fn record(&mut self, r: &RequestRecord) -> anyhow::Result<()> {
        self.done += 1;
        if r.outcome.is_ok() {
            self.tokens += r.output_token_count();
        } else {
            self.errors += 1;
        }
        if self.enabled {
            self.draw(false);
        }
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        if self.enabled {
            self.draw(true);
            eprintln!();
        }
        Ok(())
    }
}

/// Paths of the files a run writes.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFiles {
    pub requests_jsonl: PathBuf,
    pub individual_responses: PathBuf,
    pub summary: PathBuf,
    pub run: PathBuf,
}

impl OutputFiles {
    pub fn new(dir: &Path, stem: &str) -> Self {
        Self {
            requests_jsonl: dir.join(format!("{stem}_requests.jsonl")),
            individual_responses: dir.join(format!("{stem}_individual_responses.json")),
            summary: dir.join(format!("{stem}_summary.json")),
            run: dir.join(format!("{stem}_run.json")),
        }
    }
}

fn write_json(path: &Path, v: &impl Serialize) -> anyhow::Result<()> {
    let f = File::create(path).with_context(|| format!("creating '{}'", path.display()))?;
    let mut w = BufWriter::new(f);
    serde_json::to_writer_pretty(&mut w, v)?;
    w.write_all(b"\n")?;
    w.flush()
        .with_context(|| format!("writing '{}'", path.display()))
}

/// Writes LLMPerf's two files and the run metadata.
pub fn write_final(
    files: &OutputFiles,
    stem: &str,
    records: &[RequestRecord],
    summary: &RunSummary,
    info: &RunInfo,
    defs: MetricDefinitions,
    extra: &[(&str, serde_json::Value)],
) -> anyhow::Result<()> {
    // LLMPerf's individual responses hold only requests that were sent (dropped arrivals never were).
    let individual: Vec<_> = records
        .iter()
        .filter(|r| r.sent_at_us.is_some())
        .map(|r| r.llmperf_metrics(defs))
        .collect();
    write_json(&files.individual_responses, &individual)?;
    let mut json = summary.llmperf_summary_json(info, stem);
    for (k, v) in extra {
        json["tokenperf"][*k] = v.clone();
    }
    write_json(&files.summary, &json)?;
    write_json(&files.run, info)?;
    Ok(())
}
