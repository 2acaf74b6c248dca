//! Our `*_requests.jsonl` read into the frame and the summary, in parallel parts.
//!
//! Each file is cut at line ends into one part per core; each part is read record by record: the
//! record's metrics are recomputed from its raw fields with core's definitions (the keys stored
//! beside them may be an older version's), it is added to a part's summary builder and frame rows,
//! and let go. The parts are then joined in file order. Nothing of a record is held but its row, and
//! the result is what one pass over the file gives (core's builders merge exactly).
//!
//! The metrics come from core's record methods, not from polars expressions over the raw fields:
//! the summary needs every field of every record anyway (outcomes, messages, connections, token
//! sources), so the file is parsed once, here; polars computes the statistics from the rows.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use anyhow::Context;
use polars::prelude::*;
use tokenperf_core::lines::{MAX_LINE_BYTES, next_line};
use tokenperf_core::llmperf::MetricDefinitions;
use tokenperf_core::record::RequestRecord;
use tokenperf_core::summary::RunSummary;
use tokenperf_core::tally::SummaryBuilder;

use crate::engine;
use crate::frame::{FrameBuilder, Source, shift};
use crate::input::Filter;

/// Files smaller than this are read as one part: threads cost more than they save.
const MIN_PART_BYTES: u64 = 4 << 20;

/// What reading one part found besides its records.
#[derive(Debug, Default)]
pub struct PartRead {
    /// Complete records read.
    pub records: usize,
    /// A last line cut short: its line number within the part, and the file offset where it starts.
    pub cut: Option<(usize, u64)>,
}

/// Lines (newlines) in `path` before byte `offset`: only for naming a line in an error or warning
/// of a part that does not start the file.
fn lines_before(path: &Path, offset: u64) -> anyhow::Result<usize> {
    let f = std::fs::File::open(path).with_context(|| format!("reading '{}'", path.display()))?;
    let mut r = BufReader::with_capacity(1 << 20, f.take(offset));
    let mut n = 0;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(n);
        }
        n += buf.iter().filter(|b| **b == b'\n').count();
        let len = buf.len();
        r.consume(len);
    }
}

/// Hands each complete record in `range` of one of our JSONL files (`range` starts at a line start)
/// to `each`, in file order, holding one line at a time. A last line cut short (a crash or a full
/// disk mid-write: no newline after it, and not a whole record) is left out and reported, so every
/// complete record is still read; a bad line anywhere else, or one longer than `max_line` bytes
/// ([`MAX_LINE_BYTES`] outside tests), is an error naming the file and line.
pub fn for_each_record(
    path: &Path,
    range: Range<u64>,
    max_line: usize,
    mut each: impl FnMut(RequestRecord) -> anyhow::Result<()>,
) -> anyhow::Result<PartRead> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading '{}'", path.display()))?;
    file.seek(SeekFrom::Start(range.start))?;
    let mut reader = BufReader::with_capacity(1 << 20, file.take(range.end - range.start));
    let mut line = Vec::new();
    let mut read = PartRead::default();
    let (mut number, mut offset) = (0usize, range.start);
    loop {
        line.clear();
        let n = next_line(&mut reader, Some(&mut line), max_line).with_context(|| {
            let at = lines_before(path, range.start).map_or(0, |l| l + number + 1);
            format!("reading '{}' line {at}", path.display())
        })?;
        if n == 0 {
            return Ok(read);
        }
        number += 1;
        offset += n as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<RequestRecord>(&line) {
            Ok(r) => {
                read.records += 1;
                each(r)?;
            }
            Err(_) if line.last() != Some(&b'\n') => read.cut = Some((number, offset - n as u64)),
            Err(e) => {
                let line = lines_before(path, range.start)? + number;
                return Err(anyhow::Error::new(e).context(format!(
                    "'{}' line {line}: not a tokenperf request record",
                    path.display(),
                )));
            }
        }
    }
}

/// `len` bytes cut into up to `parts` ranges, each ending at a line end (or the file's end).
fn cut_points(path: &Path, len: u64, parts: u64) -> anyhow::Result<Vec<Range<u64>>> {
    if parts <= 1 || len < MIN_PART_BYTES {
        return Ok(std::iter::once(0..len).collect());
    }
    let mut f = BufReader::new(std::fs::File::open(path)?);
    let mut starts = vec![0u64];
    for k in 1..parts {
        let at = (len * k / parts).max(*starts.last().unwrap_or(&0));
        f.seek(SeekFrom::Start(at))?;
        let n = next_line(&mut f, None, usize::MAX)? as u64;
        if at + n < len {
            starts.push(at + n);
        }
    }
    starts.dedup();
    let ends = starts.iter().skip(1).copied().chain([len]);
    Ok(starts.iter().zip(ends).map(|(a, b)| *a..b).collect())
}

/// One part of one source, read.
struct Part {
    frame: DataFrame,
    summary: SummaryBuilder,
    read: PartRead,
}

/// Reads `range` of `source`: its unmarked records (loadgen's warm-up and cool-down marks hold here
/// too), moved onto the run's clock and kept by `filter`.
fn read_part(
    source: &Source,
    range: Range<u64>,
    defs: MetricDefinitions,
    filter: &Filter,
) -> anyhow::Result<Part> {
    let mut summary = SummaryBuilder::new(defs).llmperf_columns_elsewhere();
    let mut frame = FrameBuilder::default();
    let read = for_each_record(&source.path, range, MAX_LINE_BYTES, |mut r| {
        if r.excluded.is_some() {
            return Ok(());
        }
        shift(&mut r, source.offset_us);
        if !filter.keeps(&r) {
            return Ok(());
        }
        r.finalize(defs);
        summary.add_finalized(&r);
        Ok(frame.push(&r, source.shard)?)
    })?;
    Ok(Part {
        frame: frame.finish()?,
        summary,
        read,
    })
}

/// Our records, read: the frame, the summary (core's, with its six LLMPerf-metric statistics
/// computed by the engine from the frame), and what had to be left out.
pub struct Ours {
    pub frame: DataFrame,
    pub summary: RunSummary,
    pub warnings: Vec<String>,
}

/// Reads our records from `sources`, every file in parallel parts, into one frame and summary; each
/// source learns where a cut last line starts (for the per-chunk scans).
pub fn read_ours(
    sources: &mut [Source],
    defs: MetricDefinitions,
    filter: &Filter,
) -> anyhow::Result<Ours> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut jobs = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let len = std::fs::metadata(&s.path)
            .with_context(|| format!("reading '{}'", s.path.display()))?
            .len();
        for range in cut_points(&s.path, len, threads as u64)? {
            jobs.push((i, range));
        }
    }
    let results = run_parts(sources, &jobs, threads, defs, filter);
    let mut frame: Option<DataFrame> = None;
    let mut summary = SummaryBuilder::new(defs).llmperf_columns_elsewhere();
    let mut warnings = Vec::new();
    let mut records = vec![0usize; sources.len()];
    for ((i, range), part) in jobs.iter().zip(results) {
        let part = part?;
        records[*i] += part.read.records;
        if let Some((line, at)) = part.read.cut {
            let s = &mut sources[*i];
            s.whole_bytes = Some(at);
            warnings.push(format!(
                "'{}' line {}: the last line is cut short (the run ended mid-write); read the {} \
                 complete records before it",
                s.path.display(),
                lines_before(&s.path, range.start)? + line,
                records[*i],
            ));
        }
        summary.merge(part.summary);
        match &mut frame {
            Some(f) => {
                f.vstack_mut_owned(part.frame)?;
            }
            None => frame = Some(part.frame),
        }
    }
    let frame = frame.unwrap_or_default();
    let mut summary = summary.finish();
    summary.set_llmperf_stats(engine::summary_stats(&frame)?);
    Ok(Ours {
        frame,
        summary,
        warnings,
    })
}

/// Reads every job (a source and a range of it) on `threads` threads; the results in job order.
fn run_parts(
    sources: &[Source],
    jobs: &[(usize, Range<u64>)],
    threads: usize,
    defs: MetricDefinitions,
    filter: &Filter,
) -> Vec<anyhow::Result<Part>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, anyhow::Result<Part>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(jobs.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((i, range)) = jobs.get(k) else {
                            return mine;
                        };
                        mine.push((k, read_part(&sources[*i], range.clone(), defs, filter)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join().unwrap_or_else(|_| {
                    vec![(usize::MAX, Err(anyhow::anyhow!("a reader panicked")))]
                })
            })
            .collect()
    });
    done.sort_by_key(|(k, _)| *k);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record line past the cap is an error naming the file and the line, after the records
    /// before it were read.
    #[test]
    fn a_line_past_the_cap_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = include_str!("../../core/tests/data/requests-v1.jsonl");
        let first = fixture.lines().next().unwrap();
        let p = dir.path().join("long_requests.jsonl");
        let long = format!("{{\"pad\": \"{}\"}}", "x".repeat(first.len() * 2));
        std::fs::write(&p, format!("{first}\n{first}\n{long}\n{first}\n")).unwrap();
        let len = std::fs::metadata(&p).unwrap().len();
        let mut seen = 0;
        let e = for_each_record(&p, 0..len, first.len() + 1, |_| {
            seen += 1;
            Ok(())
        })
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("long_requests.jsonl' line 3") && msg.contains("a line longer than"),
            "{msg}"
        );
        assert_eq!(seen, 2);
    }

    /// A file read in parts gives the frame and summary of one pass, whatever the number of parts,
    /// and names a bad line by its number in the whole file.
    #[test]
    fn parts_read_as_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = include_str!("../../core/tests/data/requests-v1.jsonl");
        let n = 20_000;
        let mut text = String::new();
        for k in 0..n / fixture.lines().count() {
            for line in fixture.lines() {
                let mut r: RequestRecord = serde_json::from_str(line).unwrap();
                r.id += 100 * k as u64;
                text.push_str(&serde_json::to_string(&r).unwrap());
                text.push('\n');
            }
        }
        let p = dir.path().join("r_requests.jsonl");
        std::fs::write(&p, &text).unwrap();
        assert!(text.len() as u64 > 2 * MIN_PART_BYTES, "{}", text.len());
        let src = Source {
            path: p.clone(),
            offset_us: 0,
            shard: None,
            whole_bytes: None,
        };
        let defs = MetricDefinitions::Tokenperf;
        let len = text.len() as u64;
        let whole = read_part(&src, 0..len, defs, &Filter::default()).unwrap();
        for parts in [2, 3, 7] {
            let ranges = cut_points(&p, len, parts).unwrap();
            assert_eq!(ranges.len() as u64, parts);
            assert!(
                ranges
                    .iter()
                    .all(|r| r.end == len || text.as_bytes()[r.end as usize - 1] == b'\n')
            );
            let mut merged = SummaryBuilder::new(defs).llmperf_columns_elsewhere();
            let mut frame = DataFrame::default();
            for r in ranges {
                let part = read_part(&src, r, defs, &Filter::default()).unwrap();
                merged.merge(part.summary);
                frame.vstack_mut_owned(part.frame).unwrap();
            }
            assert_eq!(
                merged.finish(),
                whole.summary.clone().finish(),
                "{parts} parts"
            );
            assert!(frame.equals_missing(&whole.frame), "{parts} parts");
        }

        // A bad line in the second half is named by its line in the file.
        let bad = 15_001;
        let mut lines: Vec<&str> = text.lines().collect();
        lines[bad - 1] = "{\"oops\": 1}";
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let mut sources = [src];
        let e = format!(
            "{:#}",
            read_ours(&mut sources, defs, &Filter::default())
                .err()
                .unwrap()
        );
        assert!(e.contains(&format!("line {bad}:")), "{e}");
    }
}
