//! The run summary: statistics over a run's records, and its two renderings, LLMPerf's `*_summary.json`
//! and LLMPerf's console block. Both loadgen (at the end of a run) and analyze (from files) call
//! [`RunSummary::from_records`], so the two cannot disagree.
//!
//! Throughput window: from the first actual send to the last completion among the records (failed
//! requests included). LLMPerf's own window also counted its actor start-up and the tail of discarded
//! requests; ours is stated in the summary as `window_s`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::llmperf::{LLMPERF_VERSION, LlmperfMetrics, MetricDefinitions, flatten_into, py_float};
use crate::record::{Outcome, RequestRecord, TokenSource};
use crate::stats::Stats;

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
}

/// Little's law as a check on the records: throughput × mean latency (from the records) must equal the
/// mean number of requests in flight, sampled from a live counter while the run went on. loadgen counts
/// a request up exactly when it stamps `sent_at_us` and down exactly when it stamps `done_at_us`, so the
/// two sides measure the same interval and agree up to sampling error. A gap means the records are
/// missing requests (lost on the way to the files) or carry wrong times; it cannot say anything about
/// the server. Checked only with [`LittlesLaw::MIN_SAMPLES`] samples and
/// [`LittlesLaw::MIN_REQUESTS`] requests in the window, where sampling error is small.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LittlesLaw {
    /// Requests that finished (any outcome) per second over the window.
    pub throughput_rps: f64,
    /// Mean send → end time of those requests, seconds.
    pub mean_latency_s: f64,
    /// throughput × mean latency.
    pub predicted_in_flight: f64,
    /// Mean of the sampled in-flight count over the same window.
    pub sampled_in_flight: f64,
    /// |predicted − sampled| / sampled.
    pub relative_difference: f64,
    /// Samples inside the window.
    #[serde(default)]
    pub samples: u64,
    /// Whether the difference is over 10 %.
    pub flagged: bool,
}

impl LittlesLaw {
    /// Fewest samples (10 ms apart in loadgen) for a check: a second of run.
    pub const MIN_SAMPLES: usize = 100;
    /// Fewest finished requests for a check.
    pub const MIN_REQUESTS: usize = 20;

    /// Checks `records` against in-flight samples `(µs since run start, count)`. `None` when there
    /// are too few samples or requests in the window for the check to mean anything.
    pub fn check(records: &[RequestRecord], samples: &[(u64, i64)]) -> Option<Self> {
        let done: Vec<(u64, u64)> = records
            .iter()
            .filter_map(|r| Some((r.sent_at_us?, r.done_at_us?)))
            .collect();
        let start = done.iter().map(|d| d.0).min()?;
        let end = done.iter().map(|d| d.1).max()?;
        if end <= start || done.len() < Self::MIN_REQUESTS {
            return None;
        }
        let window_s = (end - start) as f64 * 1e-6;
        let inside: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| (start..=end).contains(t))
            .map(|(_, n)| *n as f64)
            .collect();
        if inside.len() < Self::MIN_SAMPLES {
            return None;
        }
        let sampled = inside.iter().sum::<f64>() / inside.len() as f64;
        let throughput_rps = done.len() as f64 / window_s;
        let mean_latency_s =
            done.iter().map(|(s, e)| (e - s) as f64 * 1e-6).sum::<f64>() / done.len() as f64;
        let predicted = throughput_rps * mean_latency_s;
        let relative_difference = if sampled > 0.0 {
            (predicted - sampled).abs() / sampled
        } else {
            0.0
        };
        Some(Self {
            throughput_rps,
            mean_latency_s,
            predicted_in_flight: predicted,
            sampled_in_flight: sampled,
            relative_difference,
            samples: inside.len() as u64,
            flagged: relative_difference > 0.10,
        })
    }
}

/// Statistics of one run, computed from its records.
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
}

/// Median of the server's prompt count over the built prompt's, over requests with both.
fn server_to_built_ratio(ok: &[&RequestRecord]) -> Option<f64> {
    Stats::from_values(ok.iter().filter_map(|r| {
        let (s, b) = (r.input_tokens.server?, r.input_tokens.tokenizer?);
        (b > 0).then(|| s as f64 / b as f64)
    }))
    .p50
}

/// Model named in the responses → requests.
fn models_named(ok: &[&RequestRecord]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for name in ok.iter().filter_map(|r| r.model.clone()) {
        *m.entry(name).or_insert(0) += 1;
    }
    m
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

impl ErrorGroup {
    /// Groups the failed records (dropped arrivals included) by kind and message.
    pub fn from_records<'a>(failed: impl Iterator<Item = &'a RequestRecord>) -> Vec<Self> {
        let mut by_kind: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for r in failed {
            *by_kind
                .entry(r.outcome.kind())
                .or_default()
                .entry(r.outcome.message())
                .or_insert(0) += 1;
        }
        let mut groups: Vec<Self> = by_kind
            .into_iter()
            .map(|(kind, msgs)| {
                let mut messages: Vec<(String, u64)> =
                    msgs.into_iter().map(|(m, n)| (m.to_string(), n)).collect();
                messages.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                Self {
                    kind: kind.to_string(),
                    count: messages.iter().map(|m| m.1).sum(),
                    messages: messages.into_iter().take(3).collect(),
                }
            })
            .collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
        groups
    }
}

impl ShortOutputs {
    fn from_ok(ok: &[&RequestRecord]) -> Self {
        let mut fractions = Vec::new();
        let (mut of, mut missing) = (0, 0);
        for r in ok {
            let Some(max) = r.max_tokens.filter(|&m| m > 0) else {
                continue;
            };
            of += 1;
            let n = r.output_token_count();
            if n < max {
                missing += max - n;
                fractions.push(n as f64 / max as f64);
            }
        }
        Self {
            requests: fractions.len() as u64,
            of,
            tokens_missing: missing,
            median_fraction: Stats::from_values(fractions.iter().copied()).p50,
        }
    }
}

impl CachedInput {
    fn from_ok(ok: &[&RequestRecord]) -> Self {
        let mut c = Self::default();
        for r in ok {
            if let Some(n) = r.cached_input_tokens {
                c.requests_reporting += 1;
                c.requests_with_hits += u64::from(n > 0);
                c.cached_tokens += n;
                c.input_tokens += r.input_tokens.server.unwrap_or(0);
            }
        }
        c
    }
}

impl Connections {
    fn from_sent(sent: &[&RequestRecord]) -> Self {
        let mut c = Self::default();
        for conn in sent.iter().filter_map(|r| r.connection.as_ref()) {
            if conn.new {
                c.new += 1;
            } else {
                c.reused += 1;
            }
            c.retried += u64::from(conn.retried_after.is_some());
        }
        c
    }
}

impl RunSummary {
    pub fn from_records(records: &[RequestRecord], defs: MetricDefinitions) -> Self {
        let sent: Vec<&RequestRecord> = records.iter().filter(|r| r.sent_at_us.is_some()).collect();
        let ok: Vec<&RequestRecord> = sent.iter().copied().filter(|r| r.outcome.is_ok()).collect();
        let m: Vec<_> = ok.iter().map(|r| r.llmperf_metrics(defs)).collect();

        let stats = |f: &dyn Fn(&RequestRecord) -> Option<f64>| {
            Stats::from_values(ok.iter().filter_map(|r| f(r)))
        };

        let mut error_code_frequency = BTreeMap::new();
        let mut outcomes = BTreeMap::new();
        for r in records {
            *outcomes.entry(r.outcome.kind().to_string()).or_insert(0) += 1;
        }
        for r in sent.iter().filter(|r| !r.outcome.is_ok()) {
            let code = r
                .outcome
                .error_code()
                .map(|c| match c {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .unwrap_or_default();
            *error_code_frequency.entry(code).or_insert(0) += 1;
        }

        let first_send = sent.iter().filter_map(|r| r.sent_at_us).min();
        let last_done = sent.iter().filter_map(|r| r.done_at_us).max();
        let window_s = match (first_send, last_done) {
            (Some(a), Some(b)) if b > a => Some((b - a) as f64 * 1e-6),
            _ => None,
        };
        // Under the run's definitions: with LLMPerf's, its own re-tokenized counts, as its overall
        // throughput summed them.
        let total_out: u64 = m.iter().map(|x| x.number_output_tokens).sum();
        let n_started = sent.len() as u64;
        let n_err = sent.iter().filter(|r| !r.outcome.is_ok()).count() as u64;

        Self {
            metric_definitions: defs,
            inter_token_latency_s: Stats::from_values(
                m.iter().filter_map(|x| x.inter_token_latency_s),
            ),
            ttft_s: Stats::from_values(m.iter().filter_map(|x| x.ttft_s)),
            end_to_end_latency_s: Stats::from_values(
                m.iter().filter_map(|x| x.end_to_end_latency_s),
            ),
            request_output_throughput_token_per_s: Stats::from_values(
                m.iter()
                    .filter_map(|x| x.request_output_throughput_token_per_s),
            ),
            number_input_tokens: Stats::from_values(m.iter().map(|x| x.number_input_tokens as f64)),
            number_output_tokens: Stats::from_values(
                m.iter().map(|x| x.number_output_tokens as f64),
            ),
            tpot_s: stats(&|r| r.tpot_s()),
            time_to_first_event_s: stats(&|r| r.ttfe_s()),
            inter_chunk_gap_s: Stats::from_values(
                ok.iter().flat_map(|r| r.token_gaps().map(|(g, _)| g)),
            ),
            e2e_from_intended_s: stats(&|r| r.e2e_from_intended_s()),
            schedule_lag_s: Stats::from_values(sent.iter().filter_map(|r| r.schedule_lag_s())),
            num_requests_started: n_started,
            number_errors: n_err,
            error_rate: if n_started == 0 {
                0.0
            } else {
                n_err as f64 / n_started as f64
            },
            error_code_frequency,
            outcomes,
            dropped: records
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Dropped { .. }))
                .count() as u64,
            not_due: records
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::NotDue { .. }))
                .count() as u64,
            num_completed_requests: ok.len() as u64,
            mean_output_throughput_token_per_s: window_s.map(|w| total_out as f64 / w),
            num_completed_requests_per_min: window_s.map(|w| ok.len() as f64 / w * 60.0),
            window_s,
            output_tokens_from_server: ok
                .iter()
                .filter(|r| r.output_tokens.used == TokenSource::Server)
                .count() as u64,
            output_tokens_from_tokenizer: ok
                .iter()
                .filter(|r| r.output_tokens.used == TokenSource::Tokenizer)
                .count() as u64,
            output_token_mismatches: ok
                .iter()
                .filter(|r| r.output_tokens.disagreement().is_some_and(|d| d > 0.05))
                .count() as u64,
            error_breakdown: ErrorGroup::from_records(
                records
                    .iter()
                    .filter(|r| !matches!(r.outcome, Outcome::Ok | Outcome::NotDue { .. })),
            ),
            short_outputs: ShortOutputs::from_ok(&ok),
            cached_input: CachedInput::from_ok(&ok),
            connections: Connections::from_sent(&sent),
            server_input_tokens: Stats::from_values(
                ok.iter()
                    .filter_map(|r| r.input_tokens.server.map(|n| n as f64)),
            ),
            server_to_built_input_ratio: server_to_built_ratio(&ok),
            response_models: models_named(&ok),
        }
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
        }
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
            "tokenperf: inter_token_latency_s = {}",
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
            let _ = writeln!(
                s,
                "  {name:<24} p50 {:>9} ms  p90 {:>9} ms  p99 {:>9} ms  (n={})",
                ms(st.p50),
                ms(st.p90),
                ms(st.p99),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Event, TokenCount};

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
        // 20 requests of 0.1 s each, one after the other: 10 per s × 0.1 s = 1 in flight.
        let recs: Vec<RequestRecord> = (0..20u64)
            .map(|i| {
                let mut r = RequestRecord::new(i, 0);
                r.sent_at_us = Some(i * 100_000);
                r.done_at_us = Some((i + 1) * 100_000);
                r
            })
            .collect();
        let samples: Vec<(u64, i64)> = (0..200).map(|i| (i * 10_000, 1)).collect();
        let l = LittlesLaw::check(&recs, &samples).unwrap();
        assert!(
            (l.predicted_in_flight - 1.0).abs() < 1e-9 && !l.flagged,
            "{l:?}"
        );
        // A sampler that saw two in flight: the records miss something.
        let doubled: Vec<(u64, i64)> = samples.iter().map(|(t, _)| (*t, 2)).collect();
        assert!(LittlesLaw::check(&recs, &doubled).unwrap().flagged);
        assert!(LittlesLaw::check(&[], &samples).is_none());
        // Too few samples or requests: no verdict.
        assert!(LittlesLaw::check(&recs, &samples[..50]).is_none());
        assert!(LittlesLaw::check(&recs[..5], &samples).is_none());
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
