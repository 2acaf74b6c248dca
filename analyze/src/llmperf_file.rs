//! LLMPerf's `*_individual_responses.json` into the frame, in bounded memory.
//!
//! The file is one JSON array, written by Python's `json.dump` (bare `NaN`, which is not JSON; often
//! `indent=4`), so no JSON reader can take it as it is, and a 10M-record file is 4 GB. It is read a
//! block at a time; each block's complete records are turned into NDJSON (one record per line,
//! whitespace outside strings dropped, `NaN`, `Infinity` and `-Infinity` made `null`) and handed to
//! polars' parallel NDJSON reader, so no more than a block of text is ever held beside the frame.
//! The metrics are read as numbers; a block that writes some as strings (pandas does, for some
//! columns) is read again with them as strings, then cast. `error_code` arrives as null, int, float
//! or string and is kept as a string (`500.0` reads `500`).

use std::io::{BufReader, Cursor, Read};
use std::path::Path;

use anyhow::{Context, bail};
use polars::prelude::*;
use tokenperf_core::llmperf::MetricDefinitions;
use tokenperf_core::summary::RunSummary;

use crate::engine;
use crate::input::METRIC_COLUMNS;

/// Bytes read from the file at a time.
const READ_BYTES: u64 = 16 << 20;
/// NDJSON gathered before polars parses it as one batch.
const BATCH_BYTES: usize = 8 << 20;

/// How far one call of [`records_to_ndjson`] got.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Every complete record before this offset is converted; the rest needs more input.
    More(usize),
    /// The array's closing bracket ends just before this offset.
    End(usize),
}

/// Where the text stops being JSON, as an offset into the input given.
#[derive(Debug, PartialEq)]
pub struct Invalid(pub usize);

/// What a byte means outside strings, for [`records_to_ndjson`]'s inner loop (0: copied as is).
const SPACE: u8 = 1;
const QUOTE: u8 = 2;
const COMMA: u8 = 3;
const OPEN: u8 = 4;
const CLOSE: u8 = 5;
/// The first letter of a Python number word ([`WORDS`]).
const WORD: u8 = 6;
const SPECIAL: [(u8, u8); 12] = [
    (b' ', SPACE),
    (b'\t', SPACE),
    (b'\n', SPACE),
    (b'\r', SPACE),
    (b'"', QUOTE),
    (b',', COMMA),
    (b'[', OPEN),
    (b'{', OPEN),
    (b']', CLOSE),
    (b'}', CLOSE),
    (b'N', WORD),
    (b'I', WORD),
];

const fn byte_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut k = 0;
    while k < SPECIAL.len() {
        t[SPECIAL[k].0 as usize] = SPECIAL[k].1;
        k += 1;
    }
    t
}
const CLASSES: [u8; 256] = byte_classes();
/// Python's non-JSON number words, each written as `null` (`-Infinity` too: its sign is taken back
/// from the output when `Infinity` is found, so a `-`, common in exponents, is not a stop).
const WORDS: [&[u8]; 2] = [b"NaN", b"Infinity"];

/// Converts the records at the start of `input` (which begins inside the array, between records) to
/// NDJSON in `out`, up to the last complete one, or to the array's end. `eof` says no more input
/// follows, so a record cut short is an error rather than a wait. Hand-written rather than
/// parse-and-reprint because it runs at memory speed and keeps every number's text as written.
pub fn records_to_ndjson(input: &[u8], out: &mut Vec<u8>, eof: bool) -> Result<Step, Invalid> {
    let mut depth = 1usize;
    let (mut boundary, mut out_boundary) = (0usize, out.len());
    let mut i = 0;
    // Input ending inside a record: wait for more, keeping only whole records, or fail at `at`.
    let need_more = |out: &mut Vec<u8>, at: usize, (boundary, out_boundary): (usize, usize)| {
        if eof {
            return Err(Invalid(at));
        }
        out.truncate(out_boundary);
        Ok(Step::More(boundary))
    };
    while i < input.len() {
        let run = input[i..]
            .iter()
            .position(|b| CLASSES[*b as usize] != 0)
            .unwrap_or(input.len() - i);
        out.extend_from_slice(&input[i..i + run]);
        i += run;
        let Some(&b) = input.get(i) else { break };
        match CLASSES[b as usize] {
            SPACE => {
                // Indentation comes in runs (LLMPerf's files are written with indent=4).
                i += input[i..]
                    .iter()
                    .position(|b| CLASSES[*b as usize] != SPACE)
                    .unwrap_or(input.len() - i);
            }
            QUOTE => match copy_string(input, i, out) {
                Some(next) => i = next,
                None => return need_more(out, i, (boundary, out_boundary)),
            },
            COMMA if depth == 1 => {
                i += 1;
                (boundary, out_boundary) = (i, out.len());
            }
            OPEN => {
                depth += 1;
                out.push(b);
                i += 1;
            }
            CLOSE if depth == 1 => return Ok(Step::End(i + 1)),
            CLOSE => {
                depth -= 1;
                out.push(b);
                i += 1;
                if depth == 1 {
                    out.push(b'\n');
                    (boundary, out_boundary) = (i, out.len());
                }
            }
            WORD => {
                let rest = &input[i..];
                if let Some(w) = WORDS.iter().find(|w| rest.starts_with(w)) {
                    if w[0] == b'I' && out.last() == Some(&b'-') {
                        out.pop();
                    }
                    out.extend_from_slice(b"null");
                    i += w.len();
                } else if WORDS.iter().any(|w| w.starts_with(rest)) {
                    // A word cut by the end of the block.
                    return need_more(out, i, (boundary, out_boundary));
                } else {
                    out.push(b);
                    i += 1;
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    if depth == 1 && boundary == i && !eof {
        return Ok(Step::More(i));
    }
    need_more(out, input.len(), (boundary, out_boundary))
}

/// Copies the string starting at `input[at]` (a `"`) to `out`; the index after its closing quote,
/// or `None` when the input ends inside it.
fn copy_string(input: &[u8], at: usize, out: &mut Vec<u8>) -> Option<usize> {
    let mut i = at + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', input.get(i..)?)?;
        if input[i] == b'"' {
            break;
        }
        i += 2;
    }
    out.extend_from_slice(input.get(at..=i)?);
    Some(i + 1)
}

/// Reads up to [`READ_BYTES`] more of `file` onto `buf`; whether the file ended.
fn fill(file: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let before = buf.len();
    file.by_ref().take(READ_BYTES).read_to_end(buf)?;
    Ok(buf.len() == before)
}

/// The error for a file that is not a JSON array: not JSON at all, or JSON of another shape.
fn not_an_array(path: &Path) -> anyhow::Error {
    let parsed = std::fs::File::open(path).map(|f| {
        serde_json::from_reader::<_, serde::de::IgnoredAny>(BufReader::new(f)).map(|_| ())
    });
    match parsed {
        Ok(Err(e)) => anyhow::anyhow!("'{}' is not valid JSON: {e}", path.display()),
        _ => anyhow::anyhow!(
            "'{}' is not an LLMPerf individual-responses file: expected a JSON array of records",
            path.display()
        ),
    }
}

/// Reads an LLMPerf-format array of records into the frame (`kind`, `ok`, `sent`, `error_code` and
/// [`METRIC_COLUMNS`]), quirks accepted: bare `NaN`, numbers written as strings, `error_code` null,
/// int, float or string.
pub fn read_llmperf(path: &Path) -> anyhow::Result<DataFrame> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading '{}'", path.display()))?;
    let read_err = || format!("reading '{}'", path.display());
    let mut buf = Vec::new();
    let mut eof = false;
    let start = loop {
        if let Some(p) = buf.iter().position(|b: &u8| !b.is_ascii_whitespace()) {
            break p;
        }
        if eof {
            return Err(not_an_array(path));
        }
        eof = fill(&mut file, &mut buf).with_context(read_err)?;
    };
    if buf[start] != b'[' {
        return Err(not_an_array(path));
    }
    buf.drain(..=start);
    let base = (start + 1) as u64;
    // One thread turns blocks into NDJSON while polars parses the previous batch; parsed batches'
    // buffers go back to it, so the run does not fault in fresh pages for every batch.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let (give_back, reuse) = std::sync::mpsc::channel::<Vec<u8>>();
    let (frames, converted) = std::thread::scope(|scope| {
        let converter = scope.spawn(move || {
            let batches = Batches { tx, reuse };
            convert_file(file, buf, base, eof, path, batches)
        });
        // A parse error drops the receiver (at the end of this block), which stops the converter
        // at its next batch instead of leaving it blocked on a full channel.
        let frames: anyhow::Result<Vec<DataFrame>> = {
            let rx = rx;
            rx.iter()
                .map(|mut nd| {
                    let f = batch(&nd, path);
                    nd.clear();
                    let _ = give_back.send(nd);
                    f
                })
                .collect()
        };
        (frames, converter.join())
    });
    let converted = converted.map_err(|_| anyhow::anyhow!("the NDJSON converter panicked"))?;
    // The converter's error comes first: a batch it could not finish is the cause of any other.
    converted?;
    let mut frames = frames?.into_iter();
    let mut frame = frames.next().unwrap_or_default();
    for f in frames {
        frame.vstack_mut_owned(f)?;
    }
    Ok(frame)
}

/// Where the converter sends full batches, and gets emptied buffers back.
struct Batches {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    reuse: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl Batches {
    /// An empty buffer: one given back, or a new one.
    fn buffer(&self) -> Vec<u8> {
        self.reuse
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH_BYTES + (1 << 20)))
    }
}

/// Converts the rest of `file` (`buf` holds what was read of it, from file offset `base`) and sends
/// NDJSON batches of about [`BATCH_BYTES`] to `batches`, until the array ends.
fn convert_file(
    mut file: std::fs::File,
    mut buf: Vec<u8>,
    mut base: u64,
    mut eof: bool,
    path: &Path,
    batches: Batches,
) -> anyhow::Result<()> {
    let read_err = || format!("reading '{}'", path.display());
    let mut out = batches.buffer();
    loop {
        let step = records_to_ndjson(&buf, &mut out, eof).map_err(|Invalid(at)| {
            anyhow::anyhow!(
                "'{}' is not valid JSON (at byte {})",
                path.display(),
                base + at as u64
            )
        })?;
        let end = matches!(step, Step::End(_));
        if out.len() >= BATCH_BYTES || end {
            let next = batches.buffer();
            if batches.tx.send(std::mem::replace(&mut out, next)).is_err() {
                return Ok(());
            }
        }
        match step {
            Step::End(n) => return check_rest(&buf[n..], &mut file, path, base + n as u64),
            Step::More(n) => {
                buf.drain(..n);
                base += n as u64;
                eof = fill(&mut file, &mut buf).with_context(read_err)?;
            }
        }
    }
}

/// After the array's end only whitespace may follow.
fn check_rest(tail: &[u8], file: &mut impl Read, path: &Path, at: u64) -> anyhow::Result<()> {
    let mut rest = tail.to_vec();
    file.read_to_end(&mut rest)
        .with_context(|| format!("reading '{}'", path.display()))?;
    if let Some(p) = rest.iter().position(|b| !b.is_ascii_whitespace()) {
        bail!(
            "'{}' is not valid JSON: text after the array (at byte {})",
            path.display(),
            at + p as u64
        );
    }
    Ok(())
}

/// One batch of NDJSON records as frame rows.
fn batch(ndjson: &[u8], path: &Path) -> anyhow::Result<DataFrame> {
    anyhow::Context::with_context(llmperf_frame(ndjson), || {
        format!(
            "'{}': a record is not valid JSON or has the wrong shape; expected objects with \
             LLMPerf's keys",
            path.display()
        )
    })
}

/// The frame rows of LLMPerf records given as NDJSON.
fn llmperf_frame(ndjson: &[u8]) -> PolarsResult<DataFrame> {
    let raw = read_ndjson(ndjson, DataType::Float64)
        .or_else(|_| read_ndjson(ndjson, DataType::String))?;
    let mut exprs = vec![
        when(col("ok"))
            .then(lit("ok"))
            .otherwise(lit("error"))
            .alias("kind"),
        col("ok"),
        lit(true).alias("sent"),
        col("error_code"),
    ];
    for c in METRIC_COLUMNS {
        exprs.push(col(c).cast(DataType::Float64));
    }
    raw.lazy()
        .with_columns([when(col("error_code").eq(lit("")))
            .then(lit(NULL).cast(DataType::String))
            .otherwise(col("error_code"))
            .alias("error_code")])
        .with_columns([col("error_code").is_null().alias("ok")])
        .select(exprs)
        .collect()
}

/// `ndjson` read with `error_code` as a string and the metrics as `metrics`.
fn read_ndjson(ndjson: &[u8], metrics: DataType) -> PolarsResult<DataFrame> {
    let schema = Schema::from_iter(
        std::iter::once(Field::new("error_code".into(), DataType::String)).chain(
            METRIC_COLUMNS
                .iter()
                .map(|n| Field::new((*n).into(), metrics.clone())),
        ),
    );
    if ndjson.iter().all(u8::is_ascii_whitespace) {
        return Ok(DataFrame::empty_with_schema(&schema));
    }
    JsonReader::new(Cursor::new(ndjson))
        .with_json_format(JsonFormat::JsonLines)
        .with_schema(Arc::new(schema))
        .finish()
}

/// The summary of an LLMPerf frame: what LLMPerf's records say (counts, error codes, the six metric
/// statistics, computed by the engine), nothing they cannot.
pub fn llmperf_summary(frame: &DataFrame, defs: MetricDefinitions) -> anyhow::Result<RunSummary> {
    let mut s = RunSummary::from_llmperf_rows(&[], defs);
    let codes = frame.column("error_code")?.str()?;
    for c in codes.iter().flatten() {
        *s.error_code_frequency.entry(c.to_string()).or_insert(0) += 1;
    }
    let n = frame.height() as u64;
    let failed = s.error_code_frequency.values().sum::<u64>();
    s.num_requests_started = n;
    s.number_errors = failed;
    s.error_rate = if n == 0 {
        0.0
    } else {
        failed as f64 / n as f64
    };
    s.num_completed_requests = n - failed;
    s.set_llmperf_stats(engine::summary_stats(frame)?);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole input in one call, as NDJSON.
    fn lines(input: &str) -> String {
        let mut out = Vec::new();
        let body = &input.as_bytes()[input.find('[').unwrap() + 1..];
        match records_to_ndjson(body, &mut out, true).unwrap() {
            Step::End(_) => String::from_utf8(out).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    const QUIRKS: &str = "[\n    {\n        \"a\": NaN,\n        \"b\": [1, -Infinity],\n        \"s\": \"x, [NaN] \\\" }\"\n    },\n    {\"a\": Infinity, \"c\": {\"d\": -1.5e3}}\n]\n";
    const QUIRKS_NDJSON: &str = "{\"a\":null,\"b\":[1,null],\"s\":\"x, [NaN] \\\" }\"}\n{\"a\":null,\"c\":{\"d\":-1.5e3}}\n";

    #[test]
    fn llmperf_arrays_become_one_record_per_line() {
        assert_eq!(lines(QUIRKS), QUIRKS_NDJSON);
        assert_eq!(lines(" [ ] "), "");
        let mut out = Vec::new();
        assert!(records_to_ndjson(b"{\"a\": 1}", &mut out, true).is_err());
        assert!(records_to_ndjson(b"{\"a\": \"open", &mut out, true).is_err());
    }

    /// Cut anywhere (inside a string, an escape, a `NaN`, between records), a block converts its
    /// complete records and hands back the rest, and the pieces join to the whole.
    #[test]
    fn every_cut_gives_the_same_records() {
        let body = &QUIRKS.as_bytes()[QUIRKS.find('[').unwrap() + 1..];
        for cut in 0..body.len() {
            let mut out = Vec::new();
            let n = match records_to_ndjson(&body[..cut], &mut out, false).unwrap() {
                Step::More(n) => n,
                // The cut fell after the closing bracket.
                Step::End(_) => {
                    assert_eq!(String::from_utf8(out).unwrap(), QUIRKS_NDJSON, "cut {cut}");
                    continue;
                }
            };
            let end = records_to_ndjson(&body[n..], &mut out, true).unwrap();
            assert!(matches!(end, Step::End(_)), "cut {cut}");
            assert_eq!(String::from_utf8(out).unwrap(), QUIRKS_NDJSON, "cut {cut}");
        }
    }

    #[test]
    fn llmperf_frame_reads_every_quirk() {
        let text = br#"[{"error_code": null, "ttft_s": "0.25", "number_input_tokens": 150},
            {"error_code": 500.0, "ttft_s": 0.5},
            {"error_code": "", "ttft_s": 1e-3, "number_input_tokens": "7"},
            {"error_code": "rate_limit"}]"#;
        let mut nd = Vec::new();
        records_to_ndjson(&text[1..], &mut nd, true).unwrap();
        let df = llmperf_frame(&nd).unwrap();
        let codes: Vec<Option<&str>> = df
            .column("error_code")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(codes, [None, Some("500"), None, Some("rate_limit")]);
        let ttft: Vec<Option<f64>> = df.column("ttft_s").unwrap().f64().unwrap().iter().collect();
        assert_eq!(ttft, [Some(0.25), Some(0.5), Some(1e-3), None]);
        let s = llmperf_summary(&df, MetricDefinitions::Llmperf).unwrap();
        assert_eq!((s.num_requests_started, s.number_errors), (4, 2));
        assert_eq!(s.number_input_tokens.mean, Some(78.5));
    }

    /// A file bigger than a block reads to the same frame as its records say, across block edges.
    #[test]
    fn a_file_of_many_blocks_reads_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big_individual_responses.json");
        let n = 400_000usize;
        let mut text = String::from("[\n");
        for i in 0..n {
            let ttft = if i % 10 == 3 {
                "NaN".to_string()
            } else {
                format!("{}", i as f64 * 1e-6)
            };
            text.push_str(&format!(
                "    {{\n        \"error_code\": {},\n        \"error_msg\": \"m, [\\\"x\\\"]\",\n        \"ttft_s\": {ttft}\n    }}{}\n",
                if i % 7 == 0 { "503" } else { "null" },
                if i + 1 < n { "," } else { "" }
            ));
        }
        text.push_str("]\n");
        assert!(text.len() as u64 > READ_BYTES, "{}", text.len());
        std::fs::write(&p, &text).unwrap();
        let df = read_llmperf(&p).unwrap();
        assert_eq!(df.height(), n);
        let failed = df
            .column("ok")
            .unwrap()
            .bool()
            .unwrap()
            .iter()
            .filter(|o| *o == Some(false))
            .count();
        assert_eq!(failed, n.div_ceil(7));
        let ttft = df.column("ttft_s").unwrap().f64().unwrap();
        assert_eq!(ttft.null_count(), n / 10 + usize::from(n % 10 > 3));
        assert_eq!(ttft.get(n - 1), Some((n - 1) as f64 * 1e-6));

        std::fs::write(&p, format!("{text}x")).unwrap();
        let e = format!("{:#}", read_llmperf(&p).unwrap_err());
        assert!(e.contains("text after the array"), "{e}");
        std::fs::write(&p, &text[..text.len() - 40]).unwrap();
        let e = format!("{:#}", read_llmperf(&p).unwrap_err());
        assert!(e.contains("not valid JSON"), "{e}");
    }
}

/// The engine against core on LLMPerf files, with values taken from the files by an independent
/// reader (serde over the sanitized text, numbers or numeric strings).
#[cfg(test)]
mod pinned {
    use super::*;
    use tokenperf_core::stats::Stats;

    fn core_stats(path: &Path, key: &str) -> Stats {
        let bytes = std::fs::read(path).unwrap();
        let clean = tokenperf_core::llmperf::sanitize_nonstandard_json(&bytes);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&clean).unwrap();
        let num = |v: &serde_json::Value| match v {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        };
        Stats::from_values(
            rows.iter()
                .filter(|r| r["error_code"].is_null() || r["error_code"] == "")
                .filter_map(|r| num(&r[key])),
        )
    }

    #[test]
    fn engine_statistics_equal_cores_on_llmperf_files() {
        let dir = tempfile::tempdir().unwrap();
        // A generated file with heavy tails and a few quirks, beside the committed fixture.
        let big = dir.path().join("g_individual_responses.json");
        let mut rng = tokenperf_core::rng::Rng::new(3);
        let rows: Vec<String> = (0..30_000)
            .map(|i| {
                let code = if i % 50 == 7 { "429" } else { "null" };
                let ttft = 0.05 + rng.exponential(0.02);
                let itl = if i % 97 == 1 { "NaN".to_string() } else { format!("{}", 0.01 + rng.exponential(0.003)) };
                format!(
                    "{{\"error_code\": {code}, \"ttft_s\": {ttft}, \"inter_token_latency_s\": {itl}, \
                     \"end_to_end_latency_s\": \"{}\", \"number_input_tokens\": {}}}",
                    ttft + 1.0 + rng.next_f64(),
                    100 + i % 37
                )
            })
            .collect();
        std::fs::write(&big, format!("[{}]", rows.join(",\n"))).unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/llmperf_individual_responses.json");
        for path in [fixture, big] {
            let frame = read_llmperf(&path).unwrap();
            let s = llmperf_summary(&frame, MetricDefinitions::Llmperf).unwrap();
            for (key, got) in s.llmperf_metrics() {
                let want = core_stats(&path, key);
                crate::engine::tests::assert_same(got, &want, &format!("{} {key}", path.display()));
            }
        }
    }
}
