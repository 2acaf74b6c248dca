//! The run summary: statistics over a run's records, and its two renderings, LLMPerf's `*_summary.json`
//! and LLMPerf's console block. Both loadgen (at the end of a run) and analyze (from files) call
//! [`RunSummary::from_records`], so the two cannot disagree.
//!
//! Throughput window: from the first actual send to the last completion among the records (failed
//! requests included). LLMPerf's own window also counted its actor start-up and the tail of discarded
//! requests; ours is stated in the summary as `window_s`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::llmperf::{LLMPERF_VERSION, LlmperfMetrics, MetricDefinitions, flatten_into, py_float};
use crate::record::RequestRecord;
use crate::stats::Stats;
use crate::tally::SummaryBuilder;

/// What a run was asked to do: the LLMPerf parameters the summary echoes, plus our metadata. Written as
/// `*_run.json` beside the records so that analyze can rebuild the same summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub schema_version: u32,
    /// Tool and version that wrote the run (`tokenperf-loadgen 0.1.0`).
    pub tool: String,
    pub model: String,
    pub llm_api: String,
    pub mean_input_tokens: u64,
    pub stddev_input_tokens: u64,
    pub mean_output_tokens: u64,
    pub stddev_output_tokens: u64,
    pub num_concurrent_requests: u64,
    /// `--additional-sampling-params`, as given.
    #[serde(default)]
    pub additional_sampling_params: Map<String, Value>,
    /// `--metadata k=v,…`, in the order given.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub metric_definitions: MetricDefinitions,
    /// Wall-clock time of the run start (the zero of every `*_us` offset), µs since the Unix epoch.
    pub run_started_unix_us: u64,
    /// Wall-clock time of the run end, µs since the Unix epoch.
    #[serde(default)]
    pub run_ended_unix_us: Option<u64>,
    /// The tokenizer used for counting (path or name).
    #[serde(default)]
    pub tokenizer: String,
    /// The fully resolved load plan, as loadgen validated it.
    #[serde(default)]
    pub plan: Value,
    /// Host name of the machine that ran the load.
    #[serde(default)]
    pub host: String,
    /// The models the server listed at `/v1/models` before the run (`None`: it did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_models: Option<Vec<String>>,
    /// Which shard of a split plan this run was, and how it started (absent: the whole plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// `--start-at`: the instant the load waited for, and how late it really began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartInfo>,
    /// What the kernel says of this host's clock discipline (NTP), when it says: the error bound
    /// between shards' clocks, on which their records are merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockSync>,
}

/// Shard `index` of `count`: request `i` of the plan was this shard's when `i mod count = index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: u64,
    pub count: u64,
}

/// A start held until a shared wall-clock instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartInfo {
    /// The instant asked for, µs since the Unix epoch.
    pub start_at_unix_us: u64,
    /// Actual start − asked, µs: how late this process began its load (never early; a process
    /// still loading at the instant starts as soon as it is ready, and this says by how much).
    pub start_skew_us: i64,
}

/// The host clock's synchronization as the kernel reports it (`adjtimex`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClockSync {
    /// Whether the clock is disciplined by NTP (or PTP) and not flagged unsynchronized.
    pub synchronized: bool,
    /// The offset the discipline last measured to its reference, µs.
    pub offset_us: f64,
    /// Estimated error of the clock, µs.
    pub est_error_us: u64,
    /// Maximum error of the clock, µs.
    pub max_error_us: u64,
}

/// Little's law as a check on the records: the time-average number of requests in flight that the
/// records give (Σ over records of the time each spent in flight inside the window, ÷ the window)
/// must equal the mean of a live counter sampled while the run went on. loadgen counts a request up
/// exactly when it stamps `sent_at_us` and down when it has read the request's end. A record ends
/// at `done_at_us`, when that end reached the host (the kernel's receive stamp) or was read, so
/// the counter also holds ends that arrived and wait to be read: loadgen measures that wait
/// ([`ReadLag`]) and the check adds it to the records' side. Then the two sides measure the same
/// thing and agree up to sampling error (the window's edges are one sample period wide). A gap
/// means the records are missing requests (lost on the way to the files) or carry wrong times; it
/// cannot say anything about the server. Every record counts, trimmed ones too, since the counter
/// saw them. Checked only with [`LittlesLaw::MIN_SAMPLES`] samples and
/// [`LittlesLaw::MIN_REQUESTS`] requests in the window, where sampling error is small.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LittlesLaw {
    /// Requests in flight inside the window per second of window.
    pub throughput_rps: f64,
    /// Mean time those requests spent in flight inside the window, seconds.
    pub mean_latency_s: f64,
    /// throughput × mean latency: the records' time-average in flight.
    pub predicted_in_flight: f64,
    /// Time-average of requests whose end had reached the host and waited for loadgen to read it
    /// (the [`ReadLag`] over the window): a client behind on its reads.
    #[serde(default)]
    pub unread_in_flight: f64,
    /// Mean of the sampled in-flight count over the same window.
    pub sampled_in_flight: f64,
    /// |predicted + unread − sampled| / sampled.
    pub relative_difference: f64,
    /// Samples inside the window.
    #[serde(default)]
    pub samples: u64,
    /// Whether the difference is over 10 %.
    pub flagged: bool,
}

/// The records' side of [`LittlesLaw`], one record at a time: time in flight after `from_us`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InFlightTime {
    from_us: u64,
    requests: u64,
    in_flight_us: u128,
}

impl InFlightTime {
    /// Counts time in flight from `from_us` (the end of a warm-up) on.
    pub fn from(from_us: u64) -> Self {
        Self {
            from_us,
            ..Self::default()
        }
    }

    pub fn add(&mut self, r: &RequestRecord) {
        let (Some(sent), Some(done)) = (r.sent_at_us, r.done_at_us) else {
            return;
        };
        if done > self.from_us {
            self.requests += 1;
            self.in_flight_us += u128::from(done - sent.max(self.from_us));
        }
    }
}

/// How long requests' ends waited to be read: from a record's `done_at_us` (with kernel receive
/// stamps, when its last packet reached the host) to when loadgen read it and counted it out of
/// flight; the part after `from_us` (a warm-up's end) is summed. Added to from many tasks at once.
#[derive(Debug, Default)]
pub struct ReadLag {
    from_us: u64,
    sum_us: AtomicU64,
}

impl ReadLag {
    /// Sums waits from `from_us` (the end of a warm-up) on.
    pub fn from(from_us: u64) -> Self {
        Self {
            from_us,
            sum_us: AtomicU64::new(0),
        }
    }

    /// A request that ended at `done_us` was read at `read_us` (both µs since run start).
    pub fn add(&self, done_us: u64, read_us: u64) {
        let lag = read_us.saturating_sub(done_us.max(self.from_us));
        if lag > 0 {
            self.sum_us.fetch_add(lag, Ordering::Relaxed);
        }
    }

    /// Σ of the waits, µs.
    pub fn total_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }
}

/// The live side of [`LittlesLaw`]: an in-flight counter sampled at a fixed period, kept as a sum,
/// so a run of any length costs nothing more. Each sample stands for the time since the one before:
/// a sampler held up (a loaded machine) takes fewer samples, and counting each alike over-weighted
/// the moments it did run (a healthy run under six CPU hogs was flagged 80–90 % off). The time
/// between two samples takes the mean of their counts (the trapezoid rule): a sampler held up
/// while ends arrive unread wakes to a count that rose through the gap, and standing it for the
/// whole gap read 3–4 % high under six hogs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InFlightSamples {
    from_us: u64,
    first_us: Option<u64>,
    last_us: u64,
    last_count: i64,
    count: u64,
    /// Σ (count + the previous sample's count) / 2 × µs since the previous sample.
    weighted: f64,
}

impl InFlightSamples {
    /// Keeps the samples taken at or after `from_us`.
    pub fn from(from_us: u64) -> Self {
        Self {
            from_us,
            ..Self::default()
        }
    }

    /// One sample: `count` requests in flight at `at_us` (µs since run start).
    pub fn add(&mut self, at_us: u64, count: i64) {
        if at_us < self.from_us {
            return;
        }
        if self.first_us.is_some() {
            let mean = (count + self.last_count) as f64 / 2.0;
            self.weighted += mean * at_us.saturating_sub(self.last_us) as f64;
        }
        self.first_us.get_or_insert(at_us);
        self.last_us = at_us;
        self.last_count = count;
        self.count += 1;
    }
}

impl LittlesLaw {
    /// Fewest samples (10 ms apart in loadgen) for a check: a second of run.
    pub const MIN_SAMPLES: u64 = 100;
    /// Fewest requests in flight inside the window for a check.
    pub const MIN_REQUESTS: u64 = 20;

    /// Checks the records' time in flight against the samples, over the samples' window (the
    /// sampler runs until every record is done). `None` when there are too few samples or requests
    /// for the check to mean anything.
    /// `read_lag_us` is the [`ReadLag`]'s total.
    pub fn check(
        records: &InFlightTime,
        samples: &InFlightSamples,
        read_lag_us: u64,
    ) -> Option<Self> {
        let start = samples.first_us?.max(records.from_us);
        let window_us = samples.last_us.checked_sub(start).filter(|&w| w > 0)?;
        if samples.count < Self::MIN_SAMPLES || records.requests < Self::MIN_REQUESTS {
            return None;
        }
        let window_s = window_us as f64 * 1e-6;
        let sampled = samples.weighted / (samples.last_us - samples.first_us?) as f64;
        let throughput_rps = records.requests as f64 / window_s;
        let mean_latency_s = records.in_flight_us as f64 * 1e-6 / records.requests as f64;
        let predicted = throughput_rps * mean_latency_s;
        let unread = read_lag_us as f64 / window_us as f64;
        let relative_difference = if sampled > 0.0 {
            (predicted + unread - sampled).abs() / sampled
        } else {
            0.0
        };
        Some(Self {
            throughput_rps,
            mean_latency_s,
            predicted_in_flight: predicted,
            unread_in_flight: unread,
            sampled_in_flight: sampled,
            relative_difference,
            samples: samples.count,
            flagged: relative_difference > 0.10,
        })
    }
}

/// Statistics of one run, computed from its records (see [`crate::tally::SummaryBuilder`]).
///
/// `inter_chunk_gap_s` comes from a histogram: exact below 2 ms, within 0.1 % above (its count,
/// mean, min and max are exact); every other statistic is exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub metric_definitions: MetricDefinitions,
    // The six metrics LLMPerf summarizes, over successful requests.
    pub inter_token_latency_s: Stats,
    pub ttft_s: Stats,
    pub end_to_end_latency_s: Stats,
    pub request_output_throughput_token_per_s: Stats,
    pub number_input_tokens: Stats,
    pub number_output_tokens: Stats,
    // Ours, over successful requests.
    /// (e2e − ttft) / (n − 1) per request.
    pub tpot_s: Stats,
    /// Send → first SSE event of any kind.
    pub time_to_first_event_s: Stats,
    /// Every gap between consecutive token-carrying events, pooled over requests.
    pub inter_chunk_gap_s: Stats,
    /// Intended send → end: latency including the client's own queueing (coordinated omission).
    pub e2e_from_intended_s: Stats,
    /// Actual − intended send time, over every sent request.
    pub schedule_lag_s: Stats,
    /// Records with a send time (LLMPerf's `num_requests_started` counted results instead).
    pub num_requests_started: u64,
    /// Sent requests that did not end `ok`.
    pub number_errors: u64,
    pub error_rate: f64,
    /// Error code → count, for LLMPerf's `error_code_frequency`.
    pub error_code_frequency: BTreeMap<String, u64>,
    /// Outcome kind → count, over every record.
    pub outcomes: BTreeMap<String, u64>,
    /// Arrivals that were due and never sent (no free slot).
    pub dropped: u64,
    /// Arrivals not yet due when the run stopped (never offered; not drops).
    #[serde(default)]
    pub not_due: u64,
    pub num_completed_requests: u64,
    /// Σ output tokens of successful requests / window.
    pub mean_output_throughput_token_per_s: Option<f64>,
    pub num_completed_requests_per_min: Option<f64>,
    /// First send → last completion, seconds.
    pub window_s: Option<f64>,
    /// Successful requests whose output count came from the server's `usage` / from our tokenizer.
    pub output_tokens_from_server: u64,
    pub output_tokens_from_tokenizer: u64,
    /// Successful requests whose server and tokenizer output counts differ by more than 5 %.
    pub output_token_mismatches: u64,
    /// Failed requests by outcome kind, most frequent first, each with its commonest messages.
    #[serde(default)]
    pub error_breakdown: Vec<ErrorGroup>,
    /// Successful requests that returned fewer tokens than their `max_tokens`.
    #[serde(default)]
    pub short_outputs: ShortOutputs,
    /// What the servers said of their prefix cache.
    #[serde(default)]
    pub cached_input: CachedInput,
    /// How requests reached the server.
    #[serde(default)]
    pub connections: Connections,
    /// Prompt tokens as the server counted them (`usage.prompt_tokens`: its tokenizer and its chat
    /// template), over successful requests that reported them; beside `number_input_tokens`, the
    /// count of the prompts loadgen built.
    #[serde(default)]
    pub server_input_tokens: Stats,
    /// Median of server count / built count over requests with both, when any.
    #[serde(default)]
    pub server_to_built_input_ratio: Option<f64>,
    /// Model named in the responses → requests (the server may answer with another model than asked).
    #[serde(default)]
    pub response_models: BTreeMap<String, u64>,
    /// SSE data events read, over every record (failed ones too).
    #[serde(default)]
    pub events_read: u64,
}

/// Failed requests of one outcome kind.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorGroup {
    pub kind: String,
    pub count: u64,
    /// Up to three messages with their counts, commonest first.
    pub messages: Vec<(String, u64)>,
}

/// Outputs shorter than asked for (a server stopping at EOS, a stop string or a full context).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ShortOutputs {
    /// Successful requests with fewer output tokens than `max_tokens`.
    pub requests: u64,
    /// Successful requests with a `max_tokens` to compare with.
    pub of: u64,
    /// Σ (max_tokens − output tokens) over the short ones.
    pub tokens_missing: u64,
    /// Median of output / max_tokens over the short ones.
    pub median_fraction: Option<f64>,
}

/// `usage.prompt_tokens_details.cached_tokens`, summed over successful requests that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CachedInput {
    /// Successful requests whose server reported a cached count (0 included).
    pub requests_reporting: u64,
    /// Of those, requests with at least one cached token.
    pub requests_with_hits: u64,
    pub cached_tokens: u64,
    /// Server-counted prompt tokens of the reporting requests.
    pub input_tokens: u64,
}

/// Connections the requests went out on.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Connections {
    /// Requests sent on a connection opened for them.
    pub new: u64,
    /// Requests sent on a pooled connection.
    pub reused: u64,
    /// Requests whose first try failed on a reused connection before any response byte and that
    /// were sent again on a new one.
    pub retried: u64,
}

impl RunSummary {
    /// The summary of `records` (all of them: pass only the ones the results keep).
    pub fn from_records(records: &[RequestRecord], defs: MetricDefinitions) -> Self {
        let mut b = SummaryBuilder::new(defs);
        records.iter().for_each(|r| b.add(r));
        b.finish()
    }

    /// A summary from LLMPerf's nine-key rows alone (LLMPerf's own files have no timestamps): the six
    /// metrics and the error counts; everything that needs timestamps is empty.
    pub fn from_llmperf_rows(rows: &[LlmperfMetrics], defs: MetricDefinitions) -> Self {
        let ok: Vec<&LlmperfMetrics> = rows.iter().filter(|r| r.error_code.is_none()).collect();
        let col = |f: fn(&LlmperfMetrics) -> Option<f64>| {
            Stats::from_values(ok.iter().filter_map(|r| f(r)))
        };
        let mut error_code_frequency = BTreeMap::new();
        for r in rows.iter().filter(|r| r.error_code.is_some()) {
            let code = match r.error_code.clone().unwrap_or(Value::Null) {
                Value::String(s) => s,
                other => other.to_string(),
            };
            *error_code_frequency.entry(code).or_insert(0) += 1;
        }
        let n = rows.len() as u64;
        let n_err = n - ok.len() as u64;
        let empty = Stats::default();
        Self {
            metric_definitions: defs,
            inter_token_latency_s: col(|r| r.inter_token_latency_s),
            ttft_s: col(|r| r.ttft_s),
            end_to_end_latency_s: col(|r| r.end_to_end_latency_s),
            request_output_throughput_token_per_s: col(|r| r.request_output_throughput_token_per_s),
            number_input_tokens: col(|r| Some(r.number_input_tokens as f64)),
            number_output_tokens: col(|r| Some(r.number_output_tokens as f64)),
            tpot_s: empty,
            time_to_first_event_s: empty,
            inter_chunk_gap_s: empty,
            e2e_from_intended_s: empty,
            schedule_lag_s: empty,
            num_requests_started: n,
            number_errors: n_err,
            error_rate: if n == 0 { 0.0 } else { n_err as f64 / n as f64 },
            error_code_frequency,
            outcomes: BTreeMap::new(),
            dropped: 0,
            not_due: 0,
            num_completed_requests: ok.len() as u64,
            mean_output_throughput_token_per_s: None,
            num_completed_requests_per_min: None,
            window_s: None,
            output_tokens_from_server: 0,
            output_tokens_from_tokenizer: 0,
            output_token_mismatches: 0,
            error_breakdown: Vec::new(),
            short_outputs: ShortOutputs::default(),
            cached_input: CachedInput::default(),
            connections: Connections::default(),
            server_input_tokens: Stats::default(),
            server_to_built_input_ratio: None,
            response_models: BTreeMap::new(),
            events_read: 0,
        }
    }

    /// Replaces the six LLMPerf-metric statistics, in [`RunSummary::llmperf_metrics`] order (ITL,
    /// TTFT, e2e, throughput, input, output tokens): for a summary built with
    /// [`SummaryBuilder::llmperf_columns_elsewhere`].
    pub fn set_llmperf_stats(&mut self, [itl, ttft, e2e, tps, input, output]: [Stats; 6]) {
        self.inter_token_latency_s = itl;
        self.ttft_s = ttft;
        self.end_to_end_latency_s = e2e;
        self.request_output_throughput_token_per_s = tps;
        self.number_input_tokens = input;
        self.number_output_tokens = output;
    }

    /// Where this summary and `other` differ, with numbers equal when within `rel` of each other
    /// (relative): for comparing summaries that two implementations of the same statistics made
    /// (core's and analyze's polars engine), which may round the last bits differently.
    pub fn first_difference(&self, other: &RunSummary, rel: f64) -> Option<String> {
        let a = serde_json::to_value(self).unwrap_or(Value::Null);
        let b = serde_json::to_value(other).unwrap_or(Value::Null);
        json_difference(&a, &b, rel, "summary")
    }

    /// The six LLMPerf metrics with their key names, in LLMPerf's order.
    pub fn llmperf_metrics(&self) -> [(&'static str, &Stats); 6] {
        [
            ("inter_token_latency_s", &self.inter_token_latency_s),
            ("ttft_s", &self.ttft_s),
            ("end_to_end_latency_s", &self.end_to_end_latency_s),
            (
                "request_output_throughput_token_per_s",
                &self.request_output_throughput_token_per_s,
            ),
            ("number_input_tokens", &self.number_input_tokens),
            ("number_output_tokens", &self.number_output_tokens),
        ]
    }

    /// `error_code_frequency` as LLMPerf writes it: a Python dict literal in a string (`"{503: 2}"`).
    pub fn error_code_frequency_string(&self) -> String {
        let body: Vec<String> = self
            .error_code_frequency
            .iter()
            .map(|(k, v)| {
                if k.parse::<f64>().is_ok() {
                    format!("{k}: {v}")
                } else {
                    format!("'{k}': {v}")
                }
            })
            .collect();
        format!("{{{}}}", body.join(", "))
    }

    /// LLMPerf's `*_summary.json` object, keys in LLMPerf's order, followed by a `tokenperf` object with
    /// our additions. `name` is the file stem (see [`crate::llmperf::file_stem`]).
    pub fn llmperf_summary_json(&self, info: &RunInfo, stem: &str) -> Value {
        let mut o = Map::new();
        o.insert("version".into(), json!(LLMPERF_VERSION));
        o.insert("name".into(), json!(format!("{stem}_summary")));
        o.insert("model".into(), json!(info.model));
        o.insert("mean_input_tokens".into(), json!(info.mean_input_tokens));
        o.insert(
            "stddev_input_tokens".into(),
            json!(info.stddev_input_tokens),
        );
        o.insert("mean_output_tokens".into(), json!(info.mean_output_tokens));
        o.insert(
            "stddev_output_tokens".into(),
            json!(info.stddev_output_tokens),
        );
        o.insert(
            "num_concurrent_requests".into(),
            json!(info.num_concurrent_requests),
        );
        flatten_into(
            "additional_sampling_params",
            &Value::Object(info.additional_sampling_params.clone()),
            &mut o,
        );
        for (name, s) in self.llmperf_metrics() {
            for (q, v) in s.quantiles() {
                o.insert(format!("results_{name}_quantiles_{q}"), json!(v));
            }
            o.insert(format!("results_{name}_mean"), json!(s.mean));
            o.insert(format!("results_{name}_min"), json!(s.min));
            o.insert(format!("results_{name}_max"), json!(s.max));
            o.insert(format!("results_{name}_stddev"), json!(s.stddev));
        }
        o.insert(
            "results_num_requests_started".into(),
            json!(self.num_requests_started),
        );
        o.insert("results_error_rate".into(), json!(self.error_rate));
        o.insert("results_number_errors".into(), json!(self.number_errors));
        o.insert(
            "results_error_code_frequency".into(),
            json!(self.error_code_frequency_string()),
        );
        o.insert(
            "results_mean_output_throughput_token_per_s".into(),
            json!(self.mean_output_throughput_token_per_s),
        );
        o.insert(
            "results_num_completed_requests".into(),
            json!(self.num_completed_requests),
        );
        o.insert(
            "results_num_completed_requests_per_min".into(),
            json!(self.num_completed_requests_per_min),
        );
        for (k, v) in &info.metadata {
            o.insert(k.clone(), v.clone());
        }
        let ts = info.run_ended_unix_us.unwrap_or(info.run_started_unix_us) / 1_000_000;
        o.insert("timestamp".into(), json!(ts));
        o.insert(
            "tokenperf".into(),
            json!({
                "schema_version": crate::SCHEMA_VERSION,
                "tool": info.tool,
                "metric_definitions": self.metric_definitions,
                "inter_token_latency_s_definition": match self.metric_definitions {
                    MetricDefinitions::Tokenperf => "tpot: (e2e - ttft) / (output_tokens - 1)",
                    MetricDefinitions::Llmperf => "llmperf: (last content - send) / data events",
                },
                "summary": self,
            }),
        );
        Value::Object(o)
    }

    /// LLMPerf's console block (the leading backslash included), then our own lines.
    pub fn console_block(&self, model: &str, llm_api: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\\Results for token benchmark for {model} queried with the {llm_api} api.\n"
        );
        let fmt = |v: Option<f64>, int: bool| match v {
            Some(x) if int && x.fract() == 0.0 => format!("{}", x as i64),
            Some(x) => py_float(x),
            None => "nan".to_string(),
        };
        for (name, st) in self.llmperf_metrics() {
            let is_count = name.starts_with("number_");
            let _ = writeln!(s, "{name}");
            for (q, v) in st.quantiles() {
                let _ = writeln!(s, "    {q} = {}", fmt(v, false));
            }
            let _ = writeln!(s, "    mean = {}", fmt(st.mean, false));
            let _ = writeln!(s, "    min = {}", fmt(st.min, is_count));
            let _ = writeln!(s, "    max = {}", fmt(st.max, is_count));
            let _ = writeln!(s, "    stddev = {}", fmt(st.stddev, false));
        }
        let _ = writeln!(s, "Number Of Errored Requests: {}", self.number_errors);
        if self.number_errors > 0 {
            let _ = writeln!(s, "Error Code Frequency");
            let _ = writeln!(s, "{}", self.error_code_frequency_string());
        }
        let _ = writeln!(
            s,
            "Overall Output Throughput: {}",
            fmt(self.mean_output_throughput_token_per_s, false)
        );
        let _ = writeln!(
            s,
            "Number Of Completed Requests: {}",
            self.num_completed_requests
        );
        let _ = writeln!(
            s,
            "Completed Requests Per Minute: {}",
            fmt(self.num_completed_requests_per_min, false)
        );
        s
    }

    /// Our lines after LLMPerf's block: which definitions were used, and the metrics LLMPerf lacks.
    pub fn tokenperf_block(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{:.2}", x * 1e3));
        let mut s = String::new();
        let _ = writeln!(
            s,
            "tokenperf (each percentile with its 95 % interval in parentheses): inter_token_latency_s = {}",
            match self.metric_definitions {
                MetricDefinitions::Tokenperf => "TPOT, (e2e - ttft) / (output tokens - 1)",
                MetricDefinitions::Llmperf =>
                    "LLMPerf's formula, (last content - send) / data events",
            }
        );
        for (name, st) in [
            ("ttft", &self.ttft_s),
            ("tpot", &self.tpot_s),
            ("chunk gap", &self.inter_chunk_gap_s),
            ("e2e", &self.end_to_end_latency_s),
            ("e2e from intended send", &self.e2e_from_intended_s),
            ("schedule lag", &self.schedule_lag_s),
        ] {
            let at = |q: f64| {
                let v = ms(st.at(q));
                match st.interval(q) {
                    Some((lo, hi)) => format!("{v} ({:.2}–{:.2})", lo * 1e3, hi * 1e3),
                    None => v,
                }
            };
            let _ = writeln!(
                s,
                "  {name:<24} p50 {} ms  p90 {} ms  p99 {} ms  (n={})",
                at(0.5),
                at(0.9),
                at(0.99),
                st.count
            );
        }
        let _ = writeln!(
            s,
            "  window {} s, {} sent, {} ok, {} errors, {} dropped{}; output tokens from server usage in {} requests, tokenizer in {}{}",
            self.window_s.map_or("n/a".into(), |w| format!("{w:.3}")),
            self.num_requests_started,
            self.num_completed_requests,
            self.number_errors,
            self.dropped,
            if self.not_due > 0 {
                format!(", {} not yet due when the run stopped", self.not_due)
            } else {
                String::new()
            },
            self.output_tokens_from_server,
            self.output_tokens_from_tokenizer,
            if self.output_token_mismatches > 0 {
                format!(
                    "; {} requests where server and tokenizer counts differ by > 5 %",
                    self.output_token_mismatches
                )
            } else {
                String::new()
            }
        );
        if let (Some(built), Some(server)) =
            (self.number_input_tokens.p50, self.server_input_tokens.p50)
        {
            let _ = writeln!(
                s,
                "  prompt tokens p50: {built:.0} as built (loadgen's tokenizer), {server:.0} as the server counts them (its tokenizer and chat template)"
            );
        }
        let c = &self.connections;
        if c.new + c.reused > 0 {
            let _ = writeln!(
                s,
                "  connections: {} requests on a new one, {} on a reused one; {} retried once after a reused connection failed before any response byte",
                c.new, c.reused, c.retried
            );
        }
        s
    }

    /// Failed requests by kind with their commonest messages, one line each; empty when none failed.
    pub fn error_breakdown_text(&self) -> String {
        let mut s = String::new();
        let failed: u64 = self.error_breakdown.iter().map(|g| g.count).sum();
        if failed == 0 {
            return s;
        }
        let _ = writeln!(s, "{failed} requests did not succeed:");
        for g in &self.error_breakdown {
            let _ = writeln!(s, "  {:>6} {}", g.count, g.kind);
            for (m, n) in &g.messages {
                let shown: String = m.chars().take(300).collect();
                let _ = writeln!(s, "         {n:>6} × {shown}");
            }
        }
        s
    }

    /// The readable summary, first thing a run prints: what ran, how many succeeded, throughput,
    /// and the latencies that matter with their 95 % intervals.
    pub fn headline(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} of {} requests succeeded ({} errors{}) in {}: {} output tokens/s, {} requests/min",
            self.num_completed_requests,
            self.num_requests_started,
            self.number_errors,
            if self.dropped > 0 {
                format!(", {} dropped", self.dropped)
            } else {
                String::new()
            },
            self.window_s.map_or("n/a".into(), |w| format!("{w:.2} s")),
            self.mean_output_throughput_token_per_s
                .map_or("n/a".into(), |v| format!("{v:.1}")),
            self.num_completed_requests_per_min
                .map_or("n/a".into(), |v| format!("{v:.1}")),
        );
        let itl_name = match self.metric_definitions {
            MetricDefinitions::Tokenperf => "time per output token",
            MetricDefinitions::Llmperf => "inter-token (LLMPerf's)",
        };
        for (name, st, unit, k) in [
            ("time to first token", &self.ttft_s, "ms", 1e3),
            (itl_name, &self.inter_token_latency_s, "ms", 1e3),
            ("end-to-end latency", &self.end_to_end_latency_s, "s", 1.0),
        ] {
            let at = |q: f64| {
                let v = st.at(q).map_or("n/a".into(), |v| format!("{:.2}", v * k));
                match st.interval(q) {
                    Some((a, b)) => format!("{v} {unit} ({:.2}–{:.2})", a * k, b * k),
                    None => format!("{v} {unit}"),
                }
            };
            let _ = writeln!(s, "  {name:<24} p50 {:<28} p99 {}", at(0.5), at(0.99));
        }
        s
    }

    /// What a user must know before trusting the numbers: outputs shorter than asked, prompts served
    /// from the server's cache, responses naming another model than `model_asked`.
    pub fn health_warnings(&self, model_asked: Option<&str>) -> Vec<String> {
        let mut w = Vec::new();
        let so = &self.short_outputs;
        if so.requests > 0 {
            w.push(format!(
                "{} of {} successful requests returned fewer tokens than max_tokens ({} tokens short in all; \
                 median {:.0} % of max_tokens); the server stopped early (EOS, a stop string or a full \
                 context). --ignore-eos asks servers that support it for exact lengths",
                so.requests,
                so.of,
                so.tokens_missing,
                so.median_fraction.unwrap_or(0.0) * 100.0
            ));
        }
        if let (Some(ratio), Some(server), Some(built)) = (
            self.server_to_built_input_ratio,
            self.server_input_tokens.p50,
            self.number_input_tokens.p50,
        ) && !(0.9..=1.1).contains(&ratio)
            && (server - built).abs() > 16.0
        {
            // A chat template adds a handful of tokens; more than that, either way, means the
            // server's tokenizer is not loadgen's, and prompts are not the length asked for.
            w.push(format!(
                "the server counts {server:.0} prompt tokens where loadgen built {built:.0} (medians, \
                 {:.0} % apart): loadgen's tokenizer is not the server's, so prompts are not the \
                 length asked for; pass --tokenizer with the model's tokenizer.json",
                (ratio - 1.0).abs() * 100.0
            ));
        }
        let ci = &self.cached_input;
        if ci.cached_tokens > 0 {
            w.push(format!(
                "the server served {} of {} prompt tokens from its prefix cache ({} of {} requests had \
                 hits); TTFT is that of a warm cache. --cache-bust makes every prompt's prefix unique",
                ci.cached_tokens, ci.input_tokens, ci.requests_with_hits, ci.requests_reporting
            ));
        }
        if let Some(asked) = model_asked {
            let others: Vec<String> = self
                .response_models
                .iter()
                .filter(|(m, _)| m.as_str() != asked)
                .map(|(m, n)| format!("'{m}' ({n} requests)"))
                .collect();
            if !others.is_empty() {
                w.push(format!(
                    "responses named another model than the '{asked}' asked for: {}",
                    others.join(", ")
                ));
            }
        }
        w
    }
}

/// The first place two JSON values differ, numbers compared with relative tolerance `rel`.
fn json_difference(a: &Value, b: &Value, rel: f64, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64()?, y.as_f64()?);
            let scale = x.abs().max(y.abs()).max(f64::MIN_POSITIVE);
            ((x - y).abs() / scale > rel).then(|| format!("{at}: {x} vs {y}"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (x, y))| json_difference(x, y, rel, &format!("{at}[{i}]"))),
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
            x.iter().find_map(|(k, v)| match y.get(k) {
                Some(w) => json_difference(v, w, rel, &format!("{at}.{k}")),
                None => Some(format!("{at}.{k}: only on one side")),
            })
        }
        _ => (a != b).then(|| format!("{at}: {a} vs {b}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Event, Outcome, TokenCount};

    fn rec(id: u64, sent: u64, ttft_ms: u64, n: u32, gap_ms: u64) -> RequestRecord {
        let mut r = RequestRecord::new(id, sent);
        r.sent_at_us = Some(sent);
        let first = sent + ttft_ms * 1000;
        r.events = (0..n)
            .map(|i| Event(first + u64::from(i) * gap_ms * 1000, 1))
            .collect();
        r.events
            .push(Event(first + u64::from(n - 1) * gap_ms * 1000, 0));
        r.done_at_us = Some(first + u64::from(n - 1) * gap_ms * 1000);
        r.output_tokens = TokenCount::new(Some(u64::from(n)), Some(u64::from(n)));
        r.input_tokens = TokenCount::new(None, Some(100));
        r
    }

    fn info() -> RunInfo {
        RunInfo {
            schema_version: crate::SCHEMA_VERSION,
            tool: "test".into(),
            model: "m/x".into(),
            llm_api: "openai".into(),
            mean_input_tokens: 100,
            stddev_input_tokens: 0,
            mean_output_tokens: 10,
            stddev_output_tokens: 0,
            num_concurrent_requests: 2,
            additional_sampling_params: Map::new(),
            metadata: [("team".to_string(), json!("a"))].into_iter().collect(),
            metric_definitions: MetricDefinitions::Tokenperf,
            run_started_unix_us: 1_700_000_000_000_000,
            run_ended_unix_us: Some(1_700_000_010_000_000),
            tokenizer: "t".into(),
            plan: Value::Null,
            server_models: None,
            host: "h".into(),
            shard: None,
            start: None,
            clock: None,
        }
    }

    #[test]
    fn summary_by_hand() {
        let mut failed = RequestRecord::new(2, 0);
        failed.sent_at_us = Some(0);
        failed.done_at_us = Some(5_000);
        failed.outcome = Outcome::HttpStatus {
            status: 503,
            message: "busy".into(),
        };
        let mut dropped = RequestRecord::new(3, 0);
        dropped.outcome = Outcome::Dropped {
            message: "no slot".into(),
        };
        let records = vec![
            rec(0, 0, 50, 11, 10),
            rec(1, 100_000, 70, 11, 10),
            failed,
            dropped,
        ];
        let s = RunSummary::from_records(&records, MetricDefinitions::Tokenperf);
        assert_eq!(s.num_requests_started, 3);
        assert_eq!(s.number_errors, 1);
        assert_eq!(s.dropped, 1);
        assert_eq!(s.num_completed_requests, 2);
        assert!((s.error_rate - 1.0 / 3.0).abs() < 1e-12);
        // ttft 50 and 70 ms → mean 60, p50 60.
        assert!((s.ttft_s.mean.unwrap() - 0.060).abs() < 1e-12);
        // TPOT = 100 ms / 10 = 10 ms for both.
        assert!((s.tpot_s.p50.unwrap() - 0.010).abs() < 1e-12);
        assert!((s.inter_token_latency_s.p50.unwrap() - 0.010).abs() < 1e-12);
        // window: first send 0 → last done 100 ms + 70 ms + 100 ms = 270 ms.
        assert!((s.window_s.unwrap() - 0.270).abs() < 1e-12);
        assert!((s.mean_output_throughput_token_per_s.unwrap() - 22.0 / 0.270).abs() < 1e-9);
        assert_eq!(s.error_code_frequency_string(), "{503: 1}");
        assert_eq!(s.outcomes["dropped"], 1);
    }

    #[test]
    fn llmperf_summary_keys_in_order_and_valid_json() {
        let records = vec![rec(0, 0, 50, 11, 10)];
        let s = RunSummary::from_records(&records, MetricDefinitions::Tokenperf);
        let v = s.llmperf_summary_json(&info(), "m-x_100_10");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "version");
        assert_eq!(keys[1], "name");
        assert_eq!(v["name"], "m-x_100_10_summary");
        let p25 = keys
            .iter()
            .position(|k| *k == "results_inter_token_latency_s_quantiles_p25")
            .unwrap();
        assert_eq!(keys[p25 + 6], "results_inter_token_latency_s_mean");
        assert_eq!(keys[p25 + 9], "results_inter_token_latency_s_stddev");
        // One sample: stddev is null, never NaN.
        assert!(v["results_ttft_s_stddev"].is_null());
        let text = serde_json::to_string(&v).unwrap();
        assert!(!text.contains("NaN"));
        assert_eq!(v["team"], "a");
        assert_eq!(v["timestamp"], 1_700_000_010);
        assert_eq!(keys[keys.len() - 1], "tokenperf");
    }

    #[test]
    fn a_server_counting_prompts_differently_is_warned_about_but_a_template_is_not() {
        let with = |server: u64| {
            let recs: Vec<RequestRecord> = (0..5)
                .map(|i| {
                    let mut r = rec(i, 0, 50, 5, 10);
                    r.input_tokens = TokenCount::new(Some(server), Some(100));
                    r
                })
                .collect();
            RunSummary::from_records(&recs, MetricDefinitions::Tokenperf)
        };
        let template = with(107);
        assert_eq!(
            template.number_input_tokens.p50,
            Some(100.0),
            "the built prompt's count"
        );
        assert_eq!(template.server_input_tokens.p50, Some(107.0));
        assert!(template.health_warnings(None).is_empty());
        let other_tokenizer = with(162);
        let w = other_tokenizer.health_warnings(None).join("\n");
        assert!(
            w.contains("162 prompt tokens where loadgen built 100"),
            "{w}"
        );
        assert!(other_tokenizer.tokenperf_block().contains("100 as built"));
    }

    #[test]
    fn littles_law_by_hand() {
        // 40 requests of 0.1 s each, one after the other: 1 in flight for 4 s.
        let recs: Vec<RequestRecord> = (0..40u64)
            .map(|i| {
                let mut r = RequestRecord::new(i, 0);
                r.sent_at_us = Some(i * 100_000);
                r.done_at_us = Some((i + 1) * 100_000);
                r
            })
            .collect();
        let tally = |from: u64, recs: &[RequestRecord]| {
            let mut t = InFlightTime::from(from);
            recs.iter().for_each(|r| t.add(r));
            t
        };
        let sampled = |n: i64, count: u64| {
            let mut s = InFlightSamples::from(0);
            (0..=count).for_each(|i| s.add(i * 10_000, n));
            s
        };
        let l = LittlesLaw::check(&tally(0, &recs), &sampled(1, 400), 0).unwrap();
        assert!(
            (l.predicted_in_flight - 1.0).abs() < 1e-9 && !l.flagged,
            "{l:?}"
        );
        // A sampler that saw two in flight: the records miss something.
        assert!(
            LittlesLaw::check(&tally(0, &recs), &sampled(2, 400), 0)
                .unwrap()
                .flagged
        );
        assert!(LittlesLaw::check(&tally(0, &[]), &sampled(1, 400), 0).is_none());
        // Too few samples or requests: no verdict.
        assert!(LittlesLaw::check(&tally(0, &recs), &sampled(1, 50), 0).is_none());
        assert!(LittlesLaw::check(&tally(0, &recs[..5]), &sampled(1, 400), 0).is_none());
        // Ends that waited to be read: the counter held each request 25 ms past its record's end
        // (1 s over the 4 s window), so it sampled 1.25; the measured wait accounts for it, and
        // without it the records look 20 % short.
        let lag = ReadLag::from(0);
        recs.iter()
            .for_each(|r| lag.add(r.done_at_us.unwrap(), r.done_at_us.unwrap() + 25_000));
        assert_eq!(lag.total_us(), 1_000_000);
        let behind = |n: u64| {
            let mut s = InFlightSamples::from(0);
            (0..=n).for_each(|i| s.add(i * 10_000, if i % 4 == 0 { 2 } else { 1 }));
            s
        };
        let l = LittlesLaw::check(&tally(0, &recs), &behind(400), lag.total_us()).unwrap();
        assert!((l.unread_in_flight - 0.25).abs() < 1e-9, "{l:?}");
        assert!(l.relative_difference < 0.01 && !l.flagged, "{l:?}");
        assert!(
            LittlesLaw::check(&tally(0, &recs), &behind(400), 0)
                .unwrap()
                .flagged
        );
        // Only waits after a warm-up count; none before the end.
        let warm = ReadLag::from(500_000);
        warm.add(100_000, 200_000);
        warm.add(450_000, 520_000);
        warm.add(600_000, 590_000);
        assert_eq!(warm.total_us(), 20_000);
        // A warm-up: only time after it counts on both sides.
        let mut late = InFlightSamples::from(500_000);
        (0..=400u64).for_each(|i| late.add(i * 10_000, if i < 50 { 7 } else { 1 }));
        let l = LittlesLaw::check(&tally(500_000, &recs), &late, 0).unwrap();
        assert!((l.sampled_in_flight - 1.0).abs() < 1e-9, "{l:?}");
        assert!((l.predicted_in_flight - 1.0).abs() < 1e-9, "{l:?}");
        // Samples that bunch (a sampler held up, then catching up) stand for the time they cover:
        // one request in flight, five for 10 ms of the 4 s, sampled a hundred times as often then
        // (counted alike, the samples would say 1.8).
        let mut bunched = InFlightSamples::from(0);
        for i in 0..=400u64 {
            bunched.add(i * 10_000, 1);
            if i == 200 {
                (1..=100u64).for_each(|k| bunched.add(i * 10_000 + k * 100, 5));
            }
        }
        let l = LittlesLaw::check(&tally(0, &recs), &bunched, 0).unwrap();
        assert!(
            (l.sampled_in_flight - 1.01).abs() < 1e-3 && !l.flagged,
            "{l:?}"
        );
    }

    #[test]
    fn console_block_reads_like_llmperf() {
        let records = vec![rec(0, 0, 50, 11, 10), rec(1, 0, 60, 11, 10)];
        let s = RunSummary::from_records(&records, MetricDefinitions::Tokenperf);
        let b = s.console_block("hf:x", "openai");
        assert!(b.starts_with(
            "\\Results for token benchmark for hf:x queried with the openai api.\n\n"
        ));
        assert!(b.contains("number_input_tokens\n    p25 = 100.0\n"));
        assert!(b.contains("    min = 100\n"));
        assert!(b.contains("Number Of Errored Requests: 0\n"));
        assert!(!b.contains("Error Code Frequency"));
        assert!(b.contains("Number Of Completed Requests: 2\n"));
    }
}
