//! Records into polars frames, one row per request ([`FRAME_COLUMNS`]).
//!
//! * Our JSONL is read by [`crate::jsonl`] into rows built here.
//! * LLMPerf's files are read by [`crate::llmperf_file`].
//! * Per-chunk events (one per SSE event, often 100× the requests) are never in the frame: polars
//!   scans them lazily from the files, only the columns they need, only for the charts that draw
//!   them ([`token_events`]).

use std::path::PathBuf;

use polars::prelude::*;
use tokenperf_core::record::RequestRecord;

use crate::input::{Filter, METRIC_COLUMNS};

/// The frame's columns besides [`METRIC_COLUMNS`]: request id, outcome kind (`ok`, `http_status` …;
/// `ok` or `error` for LLMPerf's files), whether it succeeded and was sent, LLMPerf's `error_code`
/// (null on success), the times on the run's clock in µs (null for LLMPerf's files, which have
/// none), and the shard it came from (null unless merged from shards).
pub const FRAME_COLUMNS: [&str; 10] = [
    "id",
    "kind",
    "ok",
    "sent",
    "error_code",
    "intended_us",
    "sent_us",
    "first_token_us",
    "done_us",
    "shard",
];

/// One file of our records: where it is, how far its clock sits after the run's zero (shards of one
/// plan started at different instants), and which shard it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub path: PathBuf,
    pub offset_us: u64,
    pub shard: Option<u32>,
    /// How many bytes to scan, when the last line is cut short (set when the file was read).
    pub whole_bytes: Option<u64>,
}

/// Rows gathered this many at a time before they become polars chunks, so no column ever holds a
/// growing vector's spare half of a long run.
const CHUNK_ROWS: usize = 1 << 16;

/// The frame's columns under construction.
#[derive(Default)]
struct Pending {
    id: Vec<u64>,
    kind: Vec<&'static str>,
    ok: Vec<bool>,
    sent: Vec<bool>,
    error_code: Vec<Option<String>>,
    times: [Vec<Option<u64>>; 4],
    shard: Vec<Option<u32>>,
    metrics: [Vec<Option<f64>>; 7],
}

impl Pending {
    fn push(&mut self, r: &RequestRecord, shard: Option<u32>) {
        let m = &r.llmperf;
        let sent = r.sent_at_us.is_some();
        self.id.push(r.id);
        self.kind.push(r.outcome.kind());
        self.ok.push(r.outcome.is_ok());
        self.sent.push(sent);
        self.error_code.push(m.error_code.as_ref().map(|c| match c {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
        let times = [
            Some(r.intended_send_us),
            r.sent_at_us,
            r.first_token_at_us(),
            r.done_at_us,
        ];
        for (col, t) in self.times.iter_mut().zip(times) {
            col.push(t);
        }
        self.shard.push(shard);
        let values = [
            m.inter_token_latency_s,
            m.ttft_s,
            m.end_to_end_latency_s,
            m.request_output_throughput_token_per_s,
            Some(m.number_total_tokens as f64),
            Some(m.number_output_tokens as f64),
            Some(m.number_input_tokens as f64),
        ];
        for (col, v) in self.metrics.iter_mut().zip(values) {
            // Only a sent request has metrics (as LLMPerf's files hold only sent requests).
            col.push(v.filter(|_| sent));
        }
    }

    fn take_frame(&mut self) -> PolarsResult<DataFrame> {
        let p = std::mem::take(self);
        let [intended, sent_us, first, done] = p.times;
        let mut cols = vec![
            Column::new("id".into(), p.id),
            Column::new("kind".into(), p.kind),
            Column::new("ok".into(), p.ok),
            Column::new("sent".into(), p.sent),
            Column::new("error_code".into(), p.error_code),
            Column::new("intended_us".into(), intended),
            Column::new("sent_us".into(), sent_us),
            Column::new("first_token_us".into(), first),
            Column::new("done_us".into(), done),
            Column::new("shard".into(), p.shard),
        ];
        for (name, v) in METRIC_COLUMNS.iter().zip(p.metrics) {
            cols.push(Column::new((*name).into(), v));
        }
        DataFrame::new_infer_height(cols)
    }
}

/// A frame built in chunks of [`CHUNK_ROWS`].
#[derive(Default)]
pub(crate) struct FrameBuilder {
    pending: Pending,
    done: Option<DataFrame>,
}

impl FrameBuilder {
    pub(crate) fn push(&mut self, r: &RequestRecord, shard: Option<u32>) -> PolarsResult<()> {
        self.pending.push(r, shard);
        if self.pending.id.len() >= CHUNK_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> PolarsResult<()> {
        let chunk = self.pending.take_frame()?;
        match &mut self.done {
            Some(d) => {
                d.vstack_mut_owned(chunk)?;
            }
            None => self.done = Some(chunk),
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> PolarsResult<DataFrame> {
        if !self.pending.id.is_empty() || self.done.is_none() {
            self.flush()?;
        }
        Ok(self.done.unwrap_or_default())
    }
}

/// Moves a record's times `offset_us` later: from its shard's clock zero to the merged run's.
pub fn shift(r: &mut RequestRecord, offset_us: u64) {
    if offset_us == 0 {
        return;
    }
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

/// The schema of what [`token_events`] scans from our records: only these fields are parsed.
fn event_scan_schema() -> Schema {
    let pair = DataType::List(Box::new(DataType::UInt64));
    Schema::from_iter([
        Field::new("id".into(), DataType::UInt64),
        Field::new(
            "outcome".into(),
            DataType::Struct(vec![Field::new("kind".into(), DataType::String)]),
        ),
        Field::new("sent_at_us".into(), DataType::UInt64),
        Field::new("excluded".into(), DataType::String),
        Field::new("events".into(), DataType::List(Box::new(pair))),
    ])
}

/// What polars scans for `s`: the file, or, when its last line is cut short, its whole lines (read
/// into memory, as polars has no byte limit on a file scan; only a run that died mid-write pays it).
fn scan_source(s: &Source) -> PolarsResult<ScanSources> {
    let Some(whole) = s.whole_bytes else {
        let path = PlRefPath::new(s.path.to_string_lossy().as_ref());
        return Ok(ScanSources::Paths(polars_buffer::Buffer::from_vec(vec![
            path,
        ])));
    };
    let mut bytes = std::fs::read(&s.path)?;
    bytes.truncate(whole as usize);
    Ok(ScanSources::Buffers(Arc::from([
        polars_buffer::Buffer::from_vec(bytes),
    ])))
}

/// Every SSE event that carried tokens, of the successful requests the run keeps: `id`, `at_us` (on
/// the run's clock) and `tokens`, in arrival order within each request. polars scans the files
/// lazily for just these fields and explodes the events; the frame never holds them.
pub fn token_events(sources: &[Source], filter: &Filter) -> PolarsResult<DataFrame> {
    let schema = Arc::new(event_scan_schema());
    let mut scans = Vec::new();
    for s in sources {
        let offset = lit(s.offset_us);
        let scan = LazyJsonLineReader::new_with_sources(scan_source(s)?)
            .with_schema(Some(schema.clone()))
            .finish()?
            .filter(col("excluded").is_null())
            .with_columns([
                col("outcome").struct_().field_by_name("kind").alias("kind"),
                (col("sent_at_us") + offset.clone()).alias("sent_us"),
            ])
            .filter(col("kind").eq(lit("ok")).and(filter.expr()))
            .select([col("id"), col("events")])
            .explode(
                by_name(["events"], true, false),
                ExplodeOptions {
                    empty_as_null: false,
                    keep_nulls: false,
                },
            )
            .select([
                col("id"),
                (col("events").list().get(lit(0), true) + offset).alias("at_us"),
                col("events").list().get(lit(1), true).alias("tokens"),
            ])
            .filter(col("tokens").gt(lit(0)));
        scans.push(scan);
    }
    if scans.is_empty() {
        return Ok(DataFrame::empty());
    }
    concat(scans, UnionArgs::default())?.collect()
}
