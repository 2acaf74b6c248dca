//! The per-request record: what loadgen measured for one request, and the metrics derived from it.
//!
//! # Wire format (`*_requests.jsonl`, one JSON object per line)
//!
//! Every line is one [`RequestRecord`]. Fields may be added in later schema versions; readers must
//! ignore unknown fields. Removing or changing the meaning of a field bumps [`crate::SCHEMA_VERSION`].
//! `core/tests/data/requests-v1.jsonl` is a committed fixture that every later version must keep reading.
//!
//! * Times are integer microseconds since the run start (`*_us`), all read from one monotonic clock.
//!   The run start's wall-clock time is in the run metadata (`run_started_unix_us`).
//! * `events` lists every SSE `data:` event except `[DONE]`, in arrival order, as `[at_us, tokens]`:
//!   when its bytes were read, and how many output tokens its content carried (0 for role, finish and
//!   usage chunks).
//! * `outcome` is a tagged object: `{"kind": "ok"}`, `{"kind": "http_status", "status": 503, ...}` …
//! * The nine LLMPerf keys (`error_code` … `number_input_tokens`) are written beside the raw fields so
//!   that a line is also a valid LLMPerf record. They are derived from the raw fields by
//!   [`RequestRecord::llmperf_metrics`], with the run's definitions, and an older version may have
//!   derived them differently, so reading a record skips them (`llmperf` stays empty until
//!   [`RequestRecord::finalize`]); this also spares every reader serde's buffering of flattened
//!   fields, the largest part of parsing a line.

use serde::{Deserialize, Serialize};

use crate::llmperf::{LlmperfMetrics, MetricDefinitions};

/// How a request ended. Failure is data: every request that was scheduled produces a record, and any
/// kind but `ok` carries a message saying what went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The stream finished with a finish reason or `[DONE]`.
    Ok,
    /// The server answered with a non-2xx status before streaming.
    HttpStatus { status: u16, message: String },
    /// The total deadline or the idle timeout between chunks passed.
    Timeout { message: String },
    /// The connection could not be made (refused, reset before a response, DNS …).
    Connect { message: String },
    /// The connection failed while the body was streaming.
    Stream { message: String },
    /// The server sent an `{"error": …}` event inside the stream.
    ServerError {
        #[serde(default)]
        code: Option<serde_json::Value>,
        message: String,
    },
    /// An event that is not valid OpenAI SSE JSON.
    Malformed { message: String },
    /// The stream closed without a finish reason and without `[DONE]`.
    Truncated { message: String },
    /// The request was due and never sent (an open-loop arrival that found no free slot).
    Dropped { message: String },
    /// The run stopped (a signal, or its time limit) before this arrival was due: not a drop and not
    /// a failure, just load that was never offered.
    NotDue { message: String },
    /// The run was interrupted (Ctrl-C) while this request was in flight.
    Cancelled { message: String },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// The snake_case kind name, as written in the `kind` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::HttpStatus { .. } => "http_status",
            Outcome::Timeout { .. } => "timeout",
            Outcome::Connect { .. } => "connect",
            Outcome::Stream { .. } => "stream",
            Outcome::ServerError { .. } => "server_error",
            Outcome::Malformed { .. } => "malformed",
            Outcome::Truncated { .. } => "truncated",
            Outcome::Dropped { .. } => "dropped",
            Outcome::NotDue { .. } => "not_due",
            Outcome::Cancelled { .. } => "cancelled",
        }
    }

    /// What went wrong, empty for `ok`.
    pub fn message(&self) -> &str {
        match self {
            Outcome::Ok => "",
            Outcome::HttpStatus { message, .. }
            | Outcome::Timeout { message }
            | Outcome::Connect { message }
            | Outcome::Stream { message }
            | Outcome::ServerError { message, .. }
            | Outcome::Malformed { message }
            | Outcome::Truncated { message }
            | Outcome::Dropped { message }
            | Outcome::NotDue { message }
            | Outcome::Cancelled { message } => message,
        }
    }

    /// LLMPerf's `error_code`: `null` on success, the HTTP status or the server's in-stream error code
    /// when there is one, and `-1` for every client-side failure (as LLMPerf does).
    pub fn error_code(&self) -> Option<serde_json::Value> {
        match self {
            Outcome::Ok => None,
            Outcome::HttpStatus { status, .. } => Some((*status).into()),
            Outcome::ServerError { code: Some(c), .. } if !c.is_null() => Some(c.clone()),
            _ => Some((-1).into()),
        }
    }
}

/// One SSE data event: when its bytes were read (µs since run start) and how many output tokens its
/// content carried. Serialized as a two-element array to keep records of long streams small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event(pub u64, pub u32);

impl Event {
    pub fn at_us(&self) -> u64 {
        self.0
    }
    pub fn tokens(&self) -> u32 {
        self.1
    }
}

/// Where a token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server's `usage` block.
    Server,
    /// Our tokenizer, counting the text we sent or received.
    #[default]
    Tokenizer,
    /// Neither was available.
    None,
}

/// A token count as the server reported it and as our tokenizer counted it, and which one the metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TokenCount {
    /// From the server's `usage` (`prompt_tokens` / `completion_tokens`), when it sent one.
    #[serde(default)]
    pub server: Option<u64>,
    /// From our tokenizer, without special tokens for output and with them for input.
    #[serde(default)]
    pub tokenizer: Option<u64>,
    /// Which of the two the metrics use.
    #[serde(default)]
    pub used: TokenSource,
    /// Our tokenizer's count with its special tokens added (BOS for LLaMA), as LLMPerf counted
    /// output: `len(tokenizer.encode(text))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_with_specials: Option<u64>,
}

impl TokenCount {
    /// Prefer the server's count, fall back to the tokenizer's.
    pub fn new(server: Option<u64>, tokenizer: Option<u64>) -> Self {
        let used = match (server, tokenizer) {
            (Some(_), _) => TokenSource::Server,
            (None, Some(_)) => TokenSource::Tokenizer,
            (None, None) => TokenSource::None,
        };
        Self {
            server,
            tokenizer,
            used,
            tokenizer_with_specials: None,
        }
    }

    /// The count the metrics use (0 when neither source had one).
    pub fn value(&self) -> u64 {
        match self.used {
            TokenSource::Server => self.server.or(self.tokenizer).unwrap_or(0),
            TokenSource::Tokenizer => self.tokenizer.or(self.server).unwrap_or(0),
            TokenSource::None => 0,
        }
    }

    /// Relative disagreement between server and tokenizer, when both are known and non-zero.
    pub fn disagreement(&self) -> Option<f64> {
        match (self.server, self.tokenizer) {
            (Some(s), Some(t)) if s.max(t) > 0 => {
                Some((s as f64 - t as f64).abs() / s.max(t) as f64)
            }
            _ => None,
        }
    }
}

/// Everything measured for one request. See the module docs for the wire format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Schema version of this line ([`crate::SCHEMA_VERSION`] when written).
    pub schema_version: u32,
    /// Index of the request in the run's request plan (0-based; equal to the prompt index).
    pub id: u64,
    /// How the request ended.
    pub outcome: Outcome,
    /// When the request should have been sent: the schedule (open loop) or when its worker became free
    /// (closed loop).
    pub intended_send_us: u64,
    /// When the request was handed to the HTTP client. `None` for dropped requests.
    #[serde(default)]
    pub sent_at_us: Option<u64>,
    /// When the response status line and headers had been read.
    #[serde(default)]
    pub response_head_at_us: Option<u64>,
    /// Every SSE data event but `[DONE]`: arrival time and tokens carried.
    #[serde(default)]
    pub events: Vec<Event>,
    /// When the request ended: the stream finished, or the failure was seen.
    #[serde(default)]
    pub done_at_us: Option<u64>,
    /// Prompt tokens, server and tokenizer counts side by side.
    #[serde(default)]
    pub input_tokens: TokenCount,
    /// Output tokens, server and tokenizer counts side by side.
    #[serde(default)]
    pub output_tokens: TokenCount,
    /// `max_tokens` asked of the server.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// The finish reason the server gave (`length`, `stop` …).
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Set when the request is left out of the results: `warmup` (sent during --warmup-seconds) or
    /// `cooldown` (finished during --cooldown-seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
    /// Whether the request met every `--slo` objective (absent when none was stated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_met: Option<bool>,
    /// The prompt length that was sampled, when the prompt built differs from it (LLMPerf's
    /// sampling builds prompts a few % shorter and reports this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_target_tokens: Option<u64>,
    /// Which connection carried the request (absent when none could be made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionInfo>,
    /// Prompt tokens the server says it served from its prefix cache
    /// (`usage.prompt_tokens_details.cached_tokens`), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_tokens: Option<u64>,
    /// The model named in the response's chunks (may differ from the one asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What the server says it did, when it is a mock-server asked for ground truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ground_truth: Option<GroundTruth>,
    /// The nine LLMPerf keys, derived from the fields above when written; empty when read (see
    /// the module's notes), until [`RequestRecord::finalize`].
    #[serde(flatten, skip_deserializing)]
    pub llmperf: LlmperfMetrics,
}

/// How the request reached the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Whether the connection was opened for this request (else reused from the pool).
    pub new: bool,
    /// µs spent opening it (TCP, and TLS for https); not part of the request's own timing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_us: Option<u64>,
    /// Set when the first try failed on a reused connection before any response byte (the server
    /// never saw it) and the request was sent again on a new one: why the first try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_after: Option<String>,
}

/// Ground truth a mock-server sent with a request's chunks. All times are CLOCK_MONOTONIC µs, the
/// clock every process on the host shares; `run_start_mono_us + at_us` puts a client event on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// The client's run start on CLOCK_MONOTONIC.
    pub run_start_mono_us: u64,
    /// When the server had read the request.
    pub arrival_mono_us: u64,
    /// One per event that carried ground truth.
    pub chunks: Vec<ServerChunk>,
}

/// `[event index, due µs, sent µs, tokens]`: which of the record's events it was, when the server
/// meant to send it, when it did, and how many tokens it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerChunk(pub u32, pub u64, pub u64, pub u32);

const US: f64 = 1e-6;

impl RequestRecord {
    /// A record with no timing yet, for a request planned at `intended_send_us`.
    pub fn new(id: u64, intended_send_us: u64) -> Self {
        Self {
            schema_version: crate::SCHEMA_VERSION,
            id,
            outcome: Outcome::Ok,
            intended_send_us,
            sent_at_us: None,
            response_head_at_us: None,
            events: Vec::new(),
            done_at_us: None,
            input_tokens: TokenCount::default(),
            output_tokens: TokenCount::default(),
            max_tokens: None,
            finish_reason: None,
            slo_met: None,
            excluded: None,
            prompt_target_tokens: None,
            connection: None,
            cached_input_tokens: None,
            model: None,
            ground_truth: None,
            llmperf: LlmperfMetrics::default(),
        }
    }

    /// Arrival of the first event that carried output tokens.
    pub fn first_token_at_us(&self) -> Option<u64> {
        self.events.iter().find(|e| e.1 > 0).map(|e| e.0)
    }

    /// Arrival of the last event that carried output tokens.
    pub fn last_token_at_us(&self) -> Option<u64> {
        self.events.iter().rev().find(|e| e.1 > 0).map(|e| e.0)
    }

    /// Time to first token: send → first event with output tokens (first non-empty content), seconds.
    pub fn ttft_s(&self) -> Option<f64> {
        Some(self.first_token_at_us()?.checked_sub(self.sent_at_us?)? as f64 * US)
    }

    /// Time to the first SSE event of any kind (role chunks included), seconds.
    pub fn ttfe_s(&self) -> Option<f64> {
        Some(self.events.first()?.0.checked_sub(self.sent_at_us?)? as f64 * US)
    }

    /// End-to-end latency: send → end of stream, seconds.
    pub fn e2e_s(&self) -> Option<f64> {
        Some(self.done_at_us?.checked_sub(self.sent_at_us?)? as f64 * US)
    }

    /// Latency from the intended send time to the end (includes the client's own queueing; the
    /// coordinated-omission-correct figure for open-loop runs), seconds.
    pub fn e2e_from_intended_s(&self) -> Option<f64> {
        Some(self.done_at_us?.checked_sub(self.intended_send_us)? as f64 * US)
    }

    /// TTFT measured from the intended send time, seconds.
    pub fn ttft_from_intended_s(&self) -> Option<f64> {
        Some(
            self.first_token_at_us()?
                .checked_sub(self.intended_send_us)? as f64
                * US,
        )
    }

    /// How late the request left against its intended time, seconds.
    pub fn schedule_lag_s(&self) -> Option<f64> {
        Some(self.sent_at_us?.saturating_sub(self.intended_send_us) as f64 * US)
    }

    /// Output tokens the metrics use.
    pub fn output_token_count(&self) -> u64 {
        self.output_tokens.value()
    }

    /// Time per output token after the first: (e2e − ttft) / (n − 1), seconds. `None` below 2 tokens.
    pub fn tpot_s(&self) -> Option<f64> {
        let n = self.output_token_count();
        if n < 2 {
            return None;
        }
        Some((self.e2e_s()? - self.ttft_s()?) / (n - 1) as f64)
    }

    /// Gaps between consecutive events that carried tokens, in seconds, each with the number of tokens
    /// the later event brought (the gap per token is `gap / tokens`).
    pub fn token_gaps(&self) -> impl Iterator<Item = (f64, u32)> + '_ {
        self.token_gaps_us().map(|(g, n)| (g as f64 * US, n))
    }

    /// [`RequestRecord::token_gaps`] in integer µs, as measured.
    pub fn token_gaps_us(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        let mut prev: Option<u64> = None;
        self.events.iter().filter(|e| e.1 > 0).filter_map(move |e| {
            let gap = prev.map(|p| (e.0.saturating_sub(p), e.1));
            prev = Some(e.0);
            gap
        })
    }

    /// Output throughput of this request: output tokens / e2e, tokens per second.
    pub fn output_throughput_tps(&self) -> Option<f64> {
        let e2e = self.e2e_s()?;
        (e2e > 0.0).then(|| self.output_token_count() as f64 / e2e)
    }

    /// LLMPerf's `inter_token_latency_s`, reproduced exactly: (time of the last content event − send)
    /// divided by the number of data events (role, content, finish and usage chunks alike). It includes
    /// TTFT and divides by chunks, not tokens; see llmperf.md §4.
    pub fn llmperf_inter_token_latency_s(&self) -> Option<f64> {
        let n = self.events.len();
        if n == 0 {
            return Some(0.0);
        }
        let last = self.last_token_at_us()?;
        Some(last.saturating_sub(self.sent_at_us?) as f64 * US / n as f64)
    }

    /// Fills the nine LLMPerf keys from the raw fields, with the chosen definitions.
    pub fn finalize(&mut self, defs: MetricDefinitions) {
        self.llmperf = LlmperfMetrics::from_record(self, defs);
    }

    /// The nine LLMPerf keys computed from the raw fields.
    pub fn llmperf_metrics(&self, defs: MetricDefinitions) -> LlmperfMetrics {
        LlmperfMetrics::from_record(self, defs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 role chunk, 5 one-token content chunks (50 ms TTFT, 10 ms apart), a finish and a usage chunk.
    pub(crate) fn sample() -> RequestRecord {
        let mut r = RequestRecord::new(3, 1_000);
        r.sent_at_us = Some(1_000);
        r.response_head_at_us = Some(2_000);
        r.events = vec![
            Event(3_000, 0),
            Event(51_000, 1),
            Event(61_000, 1),
            Event(71_000, 1),
            Event(81_000, 1),
            Event(91_000, 1),
            Event(91_500, 0),
            Event(91_600, 0),
        ];
        r.done_at_us = Some(92_000);
        r.output_tokens = TokenCount::new(Some(5), Some(5));
        r.input_tokens = TokenCount::new(None, Some(100));
        r
    }

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("value");
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn metrics_by_hand() {
        let r = sample();
        close(r.ttft_s(), 0.050);
        close(r.ttfe_s(), 0.002);
        close(r.e2e_s(), 0.091);
        // (0.091 − 0.050) / 4
        close(r.tpot_s(), 0.01025);
        let gaps: Vec<_> = r.token_gaps().collect();
        assert_eq!(gaps.len(), 4);
        for (g, t) in gaps {
            assert!((g - 0.010).abs() < 1e-9);
            assert_eq!(t, 1);
        }
        close(r.output_throughput_tps(), 5.0 / 0.091);
        // LLMPerf: (91 000 − 1 000) µs / 8 events
        close(r.llmperf_inter_token_latency_s(), 0.090 / 8.0);
        close(r.schedule_lag_s(), 0.0);
    }

    #[test]
    fn failed_request_has_no_latency_and_no_panic() {
        let mut r = RequestRecord::new(0, 5);
        r.outcome = Outcome::Connect {
            message: "connection refused".into(),
        };
        assert!(r.ttft_s().is_none() && r.e2e_s().is_none() && r.tpot_s().is_none());
        assert!(r.output_throughput_tps().is_none());
        assert_eq!(r.outcome.error_code(), Some((-1).into()));
        assert_eq!(r.outcome.kind(), "connect");
    }

    #[test]
    fn token_count_prefers_server_and_measures_disagreement() {
        let c = TokenCount::new(Some(100), Some(90));
        assert_eq!(c.used, TokenSource::Server);
        assert_eq!(c.value(), 100);
        close(c.disagreement(), 0.1);
        let t = TokenCount::new(None, Some(7));
        assert_eq!((t.used, t.value()), (TokenSource::Tokenizer, 7));
        assert_eq!(TokenCount::new(None, None).value(), 0);
    }

    #[test]
    fn outcome_serializes_as_tagged_object() {
        let o = Outcome::HttpStatus {
            status: 503,
            message: "busy".into(),
        };
        let j = serde_json::to_value(&o).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"kind":"http_status","status":503,"message":"busy"})
        );
        assert_eq!(o.error_code(), Some(503.into()));
        let back: Outcome = serde_json::from_value(j).unwrap();
        assert_eq!(back, o);
    }
}
