//! Where records go: sinks that consume each record as it finishes (the JSONL file, the progress line),
//! and the files assembled at the end (LLMPerf's two files and our run metadata).
//!
//! File names, for a stem `S` = LLMPerf's `{model}_{mean_in}_{mean_out}` (sanitized):
//! * `S_requests.jsonl`: one [`RequestRecord`] per line, written as each request ends, so
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

/// Appends one JSON line per record, written whole at once. A failed write (a full disk) is cut
/// back to the last complete line, so the file always holds whole records.
pub struct JsonlSink {
    path: PathBuf,
    f: File,
    /// Bytes of complete lines written so far.
    len: u64,
    line: Vec<u8>,
}

impl JsonlSink {
    /// Creates (truncates) the file now, so a bad path fails before any load is sent.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let f = File::create(path).with_context(|| format!("creating '{}'", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            f,
            len: 0,
            line: Vec::with_capacity(4096),
        })
    }
}

impl RecordSink for JsonlSink {
    fn record(&mut self, r: &RequestRecord) -> anyhow::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, r)?;
        self.line.push(b'\n');
        if let Err(e) = self.f.write_all(&self.line) {
            // Best effort: a device that cannot be truncated (e.g. /dev/full) is left as it is.
            let _ = self.f.set_len(self.len);
            return Err(anyhow::Error::new(e).context(format!("writing '{}'", self.path.display())));
        }
        self.len += self.line.len() as u64;
        Ok(())
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

/// Writes `path` whole or not at all: into `path.tmp`, then renamed over it. On failure the
/// temporary file is removed and the error names `path`.
pub fn write_json(path: &Path, v: &impl Serialize) -> anyhow::Result<()> {
    write_atomically(path, |w| {
        serde_json::to_writer_pretty(&mut *w, v)?;
        w.write_all(b"\n")?;
        Ok(())
    })
}

/// Writes `path` through `fill` into a temporary file beside it, then renames it into place.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let f = File::create(&tmp)?;
        let mut w = BufWriter::new(f);
        fill(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_data()?;
        std::fs::rename(&tmp, path)?;
        Ok::<_, anyhow::Error>(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing '{}'", path.display())));
    }
    Ok(())
}

/// Writes LLMPerf's two files and the run metadata. Every file is tried, each whole or not at all;
/// the first failure is returned. The individual responses are streamed from the records file, so
/// no record needs to be in memory.
pub fn write_final(
    files: &OutputFiles,
    stem: &str,
    summary: &RunSummary,
    info: &RunInfo,
    defs: MetricDefinitions,
    extra: &[(&str, serde_json::Value)],
) -> anyhow::Result<()> {
    let mut json = summary.llmperf_summary_json(info, stem);
    for (k, v) in extra {
        json["tokenperf"][*k] = v.clone();
    }
    let results = [
        write_individual_responses(&files.requests_jsonl, &files.individual_responses, defs),
        write_json(&files.summary, &json),
        write_json(&files.run, info),
    ];
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(())
}

/// LLMPerf's `*_individual_responses.json` from `*_requests.jsonl`, one record at a time: the nine
/// keys of every record the results keep that was sent (dropped arrivals never were), in the
/// records file's order.
pub fn write_individual_responses(
    jsonl: &Path,
    out: &Path,
    defs: MetricDefinitions,
) -> anyhow::Result<()> {
    let f = File::open(jsonl).with_context(|| format!("reading '{}'", jsonl.display()))?;
    // Only a regular file ends: a device in its place (/dev/full reads as endless zeros) would not.
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        anyhow::bail!(
            "'{}' is not a regular file: LLMPerf's individual responses are read from it",
            jsonl.display()
        );
    }
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(f));
    write_atomically(out, |w| {
        w.write_all(b"[")?;
        let mut first = true;
        for (n, line) in lines.by_ref().enumerate() {
            let line = line.with_context(|| format!("reading '{}'", jsonl.display()))?;
            let r: RequestRecord = serde_json::from_str(&line)
                .with_context(|| format!("'{}' line {}", jsonl.display(), n + 1))?;
            if r.excluded.is_some() || r.sent_at_us.is_none() {
                continue;
            }
            w.write_all(if first { b"\n  " } else { b",\n  " })?;
            first = false;
            serde_json::to_writer(&mut *w, &r.llmperf_metrics(defs))?;
        }
        w.write_all(if first { b"]\n" } else { b"\n]\n" })?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn individual_responses_stream_from_the_records_file() {
        let dir = tempfile::tempdir().unwrap();
        let (jsonl, out) = (dir.path().join("r.jsonl"), dir.path().join("i.json"));
        let mut sink = JsonlSink::create(&jsonl).unwrap();
        for i in 0..5u64 {
            let mut r = RequestRecord::new(i, 0);
            r.sent_at_us = (i != 1).then_some(10);
            r.done_at_us = Some(20);
            if i == 3 {
                r.excluded = Some("cooldown".into());
            }
            sink.record(&r).unwrap();
        }
        write_individual_responses(&jsonl, &out, MetricDefinitions::Tokenperf).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        // Unsent (1) and trimmed (3) records are not LLMPerf's.
        assert_eq!(v.as_array().unwrap().len(), 3);
        let empty = dir.path().join("e.jsonl");
        JsonlSink::create(&empty).unwrap();
        write_individual_responses(&empty, &out, MetricDefinitions::Tokenperf).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "[]\n");
        #[cfg(unix)]
        {
            let e = write_individual_responses(Path::new("/dev/zero"), &out, Default::default())
                .unwrap_err();
            assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_full_disk_keeps_whole_lines_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // /dev/full behind a symlink fails every write with ENOSPC, as a full disk does.
        let jsonl = dir.path().join("r_requests.jsonl");
        std::os::unix::fs::symlink("/dev/full", &jsonl).unwrap();
        let mut sink = JsonlSink::create(&jsonl).unwrap();
        let e = sink.record(&RequestRecord::new(0, 0)).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("r_requests.jsonl"), "{msg}");
        assert!(msg.contains("No space left"), "{msg}");

        // A real file: every line written is whole.
        let ok = dir.path().join("ok.jsonl");
        let mut sink = JsonlSink::create(&ok).unwrap();
        for i in 0..3 {
            sink.record(&RequestRecord::new(i, 0)).unwrap();
        }
        let text = std::fs::read_to_string(&ok).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with('\n'));

        // A whole-file write that fails leaves neither a truncated file nor its temporary.
        let summary = dir.path().join("s_summary.json");
        std::os::unix::fs::symlink("/dev/full", dir.path().join("s_summary.json.tmp")).unwrap();
        let e = write_json(&summary, &serde_json::json!({"a": 1})).unwrap_err();
        assert!(format!("{e:#}").contains("s_summary.json"), "{e:#}");
        assert!(!summary.exists());
        assert!(!dir.path().join("s_summary.json.tmp").exists());
    }
}
