//! The response to one request: its token schedule, its faults, and its bytes on the wire.
//!
//! Schedule: a request is admitted (at once, or when a running slot frees up); its first token is due
//! after the prefill (`ttft + prefill_per_token × prompt tokens`, jittered, or a replayed TTFT); each
//! later token is due one decode step after the previous *due time*, never after the previous write, so
//! a late write does not delay the rest. A decode step is `itl × (1 + load_factor × (running − 1))`,
//! jittered (or a replayed gap). A chunk carries one or more tokens and is due with its last token.
//! With the defaults (no cap, no jitter, one token per chunk) token `i` is due at exactly
//! `start + ttft + i·itl`.
//!
//! Wire format, as OpenAI sends it: chat streams a role chunk (with the first token), one chunk per
//! token group, a finish chunk, a usage chunk with `choices: []` when `stream_options.include_usage`
//! is set, then `data: [DONE]`. The end of the stream is written together with the last token.
//! Completions stream `text` chunks and no role chunk.
//!
//! Ground truth (off by default, so the stream is plain OpenAI): each content chunk gets a
//! `"tokenperf": {"arrival_mono_us", "due_mono_us", "sent_mono_us", "tokens"}` object. Times are
//! CLOCK_MONOTONIC microseconds, which any process on the same host can read (see
//! [`tokenperf_core::clock`]): when the request had been read, when the chunk was due, and when it was
//! formatted and handed to the HTTP layer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use futures_util::Stream;
use serde_json::json;
use tokenperf_core::rng::Rng;

use crate::admission::Ticket;
use crate::faults;
use crate::replay::Timing;
pub use crate::request::Endpoint;
use crate::request::{ApiError, Request};
use crate::{PromptTokens, State};

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A number drawn once per process (from the clock and the process id), so that ids stay unique
/// across mock processes that count their requests from zero alike.
fn process_nonce() -> u64 {
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NONCE.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut rng = Rng::new(t ^ (u64::from(std::process::id()) << 32));
        rng.next_u64()
    })
}

/// An id unique across requests and processes: `{prefix}-{process nonce}{counter}`, in hex.
pub fn new_id(prefix: &str) -> String {
    static IDS: AtomicU64 = AtomicU64::new(0);
    let n = IDS.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:016x}{n:08x}", process_nonce())
}

/// The next request's number and its own random stream, derived from the server seed, so a run is
/// reproducible for the same arrival order.
pub fn next_request(seed: u64) -> (u64, Rng) {
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    (
        n,
        Rng::new(seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
    )
}

/// Due time of token `i` (0-based) with fixed timing: `start + ttft + i·itl`.
pub fn due(start: Instant, ttft: Duration, itl: Duration, i: u64) -> Instant {
    start + ttft + itl * u32::try_from(i).unwrap_or(u32::MAX)
}

/// Decode step for `running` sequences: `itl × (1 + factor × (running − 1))`.
pub fn decode_step(itl: Duration, factor: f64, running: i64) -> Duration {
    itl.mul_f64(1.0 + factor * (running.max(1) - 1) as f64)
}

/// JSON string body (without quotes) of `s`.
fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

/// Counts the running sequences for as long as it lives.
struct Running<'a>(&'a State);

impl<'a> Running<'a> {
    fn new(state: &'a State) -> Self {
        state.metrics.running.fetch_add(1, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.metrics.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What became of a request, for the ground-truth log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Ok,
    ErrorEvent,
    Dropped,
    Malformed,
    ClientGone,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Ok => "ok",
            End::ErrorEvent => "error_event",
            End::Dropped => "dropped",
            End::Malformed => "malformed",
            End::ClientGone => "client_disconnected",
        }
    }
}

/// Per-request ground truth, written to the log when the request ends, however it ends (the drop
/// also runs when the client disconnects and the stream is abandoned).
struct Truth {
    state: Arc<State>,
    id: String,
    arrival: Instant,
    admitted: Option<Instant>,
    prompt_tokens: u64,
    chunks: Vec<(u64, u64, u32)>,
    end: End,
    finish_reason: &'static str,
}

impl Drop for Truth {
    fn drop(&mut self) {
        let c = &self.state.clock;
        let tokens: u64 = self.chunks.iter().map(|c| u64::from(c.2)).sum();
        tracing::debug!(
            id = %self.id,
            outcome = self.end.as_str(),
            prompt_tokens = self.prompt_tokens,
            completion_tokens = tokens,
            ms = self.arrival.elapsed().as_secs_f64() * 1e3,
            "request finished"
        );
        self.state.log_ground_truth(
            json!({
                "id": self.id,
                "arrival_mono_us": c.mono_us(self.arrival),
                "admitted_mono_us": self.admitted.map(|a| c.mono_us(a)),
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": tokens,
                "finish_reason": if self.end == End::Ok { Some(self.finish_reason) } else { None },
                "outcome": self.end.as_str(),
                "chunks": self.chunks,
            })
            .to_string(),
        );
    }
}

/// One request's response, decided when it arrives.
pub struct Plan {
    pub request: Request,
    pub endpoint: Endpoint,
    /// When the request had been read (TTFT and queue time count from here).
    pub start: Instant,
    pub ticket: Ticket,
    pub faults: faults::Plan,
    /// Ground truth in the chunks.
    pub ground_truth: bool,
    id: String,
    created: u64,
    model_json: String,
    rng: Rng,
    arrival_mono_us: u64,
}

impl Plan {
    /// `number` and `rng` come from [`next_request`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (number, rng): (u64, Rng),
        request: Request,
        endpoint: Endpoint,
        start: Instant,
        ticket: Ticket,
        faults: faults::Plan,
        ground_truth: bool,
    ) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        };
        Self {
            id: format!("{prefix}-{:016x}{number:08x}", process_nonce()),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model_json: serde_json::to_string(&request.model).expect("a string serializes"),
            request,
            endpoint,
            start,
            ticket,
            faults,
            ground_truth,
            rng,
            arrival_mono_us: 0,
        }
    }

    fn object(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
        }
    }

    /// `data: {"id":…,"choices":[` — everything before the choice.
    fn head(&self) -> String {
        format!(
            "data: {{\"id\":\"{}\",\"object\":\"{}\",\"created\":{},\"model\":{},\"choices\":[",
            self.id,
            self.object(),
            self.created,
            self.model_json
        )
    }

    fn content_chunk(
        &self,
        head: &str,
        text: &str,
        truth: Option<(u64, u64, u32)>,
        out: &mut String,
    ) {
        out.push_str(head);
        match self.endpoint {
            Endpoint::Chat => out.push_str("{\"index\":0,\"delta\":{\"content\":\""),
            Endpoint::Completions => out.push_str("{\"index\":0,\"text\":\""),
        }
        escape(text, out);
        match self.endpoint {
            Endpoint::Chat => out.push_str("\"},\"logprobs\":null,\"finish_reason\":null}]"),
            Endpoint::Completions => out.push_str("\",\"logprobs\":null,\"finish_reason\":null}]"),
        }
        if let Some((due, sent, k)) = truth {
            // Written in place: no temporary String per chunk.
            let _ = write!(
                out,
                ",\"tokenperf\":{{\"arrival_mono_us\":{},\"due_mono_us\":{due},\"sent_mono_us\":{sent},\"tokens\":{k}}}",
                self.arrival_mono_us
            );
        }
        out.push_str("}\n\n");
    }

    fn role_chunk(&self, head: &str, out: &mut String) {
        out.push_str(head);
        out.push_str(
            "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        );
    }

    fn finish_chunk(&self, head: &str, reason: &str, out: &mut String) {
        out.push_str(head);
        match self.endpoint {
            Endpoint::Chat => {
                out.push_str("{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"")
            }
            Endpoint::Completions => {
                out.push_str("{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"")
            }
        }
        out.push_str(reason);
        out.push_str("\"}]}\n\n");
    }

    fn usage(prompt: PromptTokens, completion: u64) -> serde_json::Value {
        let mut u = json!({
            "prompt_tokens": prompt.count,
            "completion_tokens": completion,
            "total_tokens": prompt.count + completion,
        });
        if let Some(cached) = prompt.cached {
            u["prompt_tokens_details"] = json!({"cached_tokens": cached});
        }
        u
    }

    /// How many tokens this request produces: `max_tokens` with `ignore_eos` or without an output
    /// length distribution; otherwise a sample capped by `max_tokens` and raised to `min_tokens`.
    fn output_tokens(&mut self, state: &State) -> u64 {
        let max = self.request.max_tokens;
        match state.config.output_len {
            Some(d) if !self.request.ignore_eos => d
                .sample(&mut self.rng)
                .clamp(self.request.min_tokens.min(max).max(1), max),
            _ => max,
        }
    }

    /// Admission, prefill and the per-token schedule, shared by the streaming and the JSON body.
    async fn admit(&mut self, state: &State) -> (crate::admission::Slot, Instant, Option<Timing>) {
        let waited = self.ticket.is_waiting();
        if waited {
            state.metrics.waiting.fetch_add(1, Ordering::Relaxed);
        }
        let ticket = std::mem::replace(&mut self.ticket, Ticket::Unlimited);
        let slot = ticket.wait().await;
        if waited {
            state.metrics.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        // Without a wait, the schedule counts from the request's arrival exactly.
        let admitted = if waited { Instant::now() } else { self.start };
        state
            .metrics
            .queue
            .observe((admitted - self.start).as_secs_f64());
        let timing = state
            .config
            .replay
            .as_ref()
            .map(|p| p.pick(&mut self.rng).clone());
        (slot, admitted, timing)
    }

    fn prefill(&mut self, state: &State, prompt_tokens: u64, timing: Option<&Timing>) -> Duration {
        let cfg = &state.config;
        match timing {
            Some(t) => t.ttft,
            None => (cfg.ttft()
                + cfg.prefill_per_token() * u32::try_from(prompt_tokens).unwrap_or(u32::MAX))
            .mul_f64(cfg.ttft_jitter.factor(&mut self.rng)),
        }
    }

    /// Due time of the next token after one due at `prev` (token index `i` ≥ 1).
    fn next_due(
        &mut self,
        state: &State,
        prev: Instant,
        i: u64,
        timing: Option<&Timing>,
    ) -> Instant {
        let cfg = &state.config;
        let base = match timing {
            Some(t) => t.gap(i, cfg.itl()),
            None => cfg.itl(),
        };
        let running = state.metrics.running.load(Ordering::Relaxed);
        let step = decode_step(base, cfg.itl_load_factor, running)
            .mul_f64(cfg.itl_jitter.factor(&mut self.rng));
        let mut due = prev + step;
        if cfg.prefill_stalls_decode {
            let busy = *state.prefill_busy_until.lock().expect("prefill lock");
            if busy > prev {
                due = due.max(busy);
            }
        }
        due
    }

    fn note_prefill(state: &State, admitted: Instant, prefill: Duration) {
        if state.config.prefill_stalls_decode {
            let mut busy = state.prefill_busy_until.lock().expect("prefill lock");
            *busy = (*busy).max(admitted + prefill);
        }
    }

    /// The SSE body. Each chunk is written when the pacer releases it at its due time.
    pub fn into_sse(
        mut self,
        state: Arc<State>,
        prompt_tokens: tokio::task::JoinHandle<PromptTokens>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        async_stream::stream! {
            let mut truth = Truth {
                state: state.clone(),
                id: self.id.clone(),
                arrival: self.start,
                admitted: None,
                prompt_tokens: 0,
                chunks: Vec::new(),
                end: End::ClientGone,
                finish_reason: "length",
            };
            self.arrival_mono_us = state.clock.mono_us(self.start);
            let (_slot, admitted, timing) = self.admit(&state).await;
            let _running = Running::new(&state);
            truth.admitted = Some(admitted);
            let prompt = prompt_tokens.await.unwrap_or_default();
            let prompt_tokens = prompt.count;
            truth.prompt_tokens = prompt_tokens;
            state.metrics.prompt_tokens.fetch_add(prompt_tokens, Ordering::Relaxed);
            let total = self.output_tokens(&state);
            let finish = if total < self.request.max_tokens { "stop" } else { "length" };
            truth.finish_reason = finish;
            let fault_at = self.faults.ends_stream_at().filter(|k| *k <= total);
            let stream_tokens = fault_at.unwrap_or(total);
            let prefill = self.prefill(&state, prompt.to_prefill(), timing.as_ref());
            Self::note_prefill(&state, admitted, prefill);
            let head = self.head();
            let mut due = admitted + prefill;
            let mut emitted = 0u64;
            let mut last_fired: Option<Instant> = None;
            let mut first_fired: Option<Instant> = None;
            let mut shift = Duration::ZERO;
            while emitted < stream_tokens {
                // Group the next chunk's tokens; its due time is its last token's.
                let k = self
                    .state_chunk_size(&state)
                    .min(stream_tokens - emitted);
                let mut text = String::with_capacity(8 * k.min(512) as usize);
                for j in 0..k {
                    let i = emitted + j;
                    if i > 0 {
                        due = self.next_due(&state, due, i, timing.as_ref());
                    }
                    text.push_str(state.vocabulary.pick(&mut self.rng, i));
                }
                // A stall after K tokens delays token K+1 and everything after it.
                if let Some((secs, after)) = self.faults.stall
                    && emitted >= after
                    && shift.is_zero()
                {
                    shift = Duration::from_secs_f64(secs);
                }
                let target = due + shift;
                let fired = state.pacer.sleep_until(target).await;
                state.metrics.lateness.observe((fired - target).as_secs_f64());
                match last_fired {
                    None => state.metrics.ttft.observe((fired - self.start).as_secs_f64()),
                    Some(l) => state.metrics.itl.observe((fired - l).as_secs_f64()),
                }
                last_fired = Some(fired);
                first_fired.get_or_insert(fired);
                emitted += k;
                let mut out = String::with_capacity(512);
                if emitted == k && self.endpoint == Endpoint::Chat {
                    self.role_chunk(&head, &mut out);
                }
                let sent = Instant::now();
                let gt = (state.clock.mono_us(target), state.clock.mono_us(sent), k as u32);
                truth.chunks.push(gt);
                self.content_chunk(&head, &text, self.ground_truth.then_some(gt), &mut out);
                state.metrics.generation_tokens.fetch_add(k, Ordering::Relaxed);
                if emitted == total && fault_at.is_none() {
                    // The end of the stream goes out in the same write as the last token, so a
                    // client's end-to-end time is not stretched by a second write.
                    self.finish_chunk(&head, finish, &mut out);
                    if self.request.include_usage {
                        out.push_str(&head);
                        out.push_str("],\"usage\":");
                        out.push_str(&Self::usage(prompt, total).to_string());
                        out.push_str("}\n\n");
                    }
                    out.push_str("data: [DONE]\n\n");
                    state.metrics.finished(&crate::metrics::Finished {
                        reason: finish,
                        prompt_tokens,
                        output_tokens: total,
                        e2e_s: (fired - self.start).as_secs_f64(),
                        tpot_s: first_fired
                            .filter(|_| total > 1)
                            .map(|f| (fired - f).as_secs_f64() / (total - 1) as f64),
                    });
                    truth.end = End::Ok;
                }
                yield Ok(Bytes::from(out));
            }
            if fault_at.is_some() {
                let f = self.faults;
                if f.error_after == fault_at {
                    truth.end = End::ErrorEvent;
                    yield Ok(Bytes::from(format!(
                        "data: {{\"error\":{{\"message\":\"mock fault: server error after {emitted} tokens\",\"type\":\"server_error\",\"param\":null,\"code\":500}}}}\n\n"
                    )));
                } else if f.malformed_after == fault_at {
                    truth.end = End::Malformed;
                    yield Ok(Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"trunc\n\n"));
                } else {
                    truth.end = End::Dropped;
                    yield Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock fault: connection dropped"));
                }
            }
        }
    }

    fn state_chunk_size(&mut self, state: &State) -> u64 {
        state.config.tokens_per_chunk.sample(&mut self.rng).max(1)
    }

    /// The non-streaming body, returned when the last token is due. Mid-stream faults become a 500.
    pub async fn into_json(
        mut self,
        state: Arc<State>,
        prompt_tokens: tokio::task::JoinHandle<PromptTokens>,
    ) -> Result<String, ApiError> {
        let (_slot, admitted, timing) = self.admit(&state).await;
        let _running = Running::new(&state);
        let prompt = prompt_tokens.await.unwrap_or_default();
        let prompt_tokens = prompt.count;
        state
            .metrics
            .prompt_tokens
            .fetch_add(prompt_tokens, Ordering::Relaxed);
        let total = self.output_tokens(&state);
        let finish = if total < self.request.max_tokens {
            "stop"
        } else {
            "length"
        };
        let prefill = self.prefill(&state, prompt.to_prefill(), timing.as_ref());
        Self::note_prefill(&state, admitted, prefill);
        // The words get their own seeded stream and are written only once the last token is due, so
        // a long request holds no text while it waits.
        let mut words = Rng::new(self.rng.next_u64());
        let first_due = admitted + prefill;
        let mut due = first_due;
        for i in 1..total {
            due = self.next_due(&state, due, i, timing.as_ref());
        }
        let tpot_s = (total > 1).then(|| (due - first_due).as_secs_f64() / (total - 1) as f64);
        if let Some((secs, _)) = self.faults.stall {
            due += Duration::from_secs_f64(secs);
        }
        let fired = state.pacer.sleep_until(due).await;
        let mut text = String::with_capacity(8 * total.min(1 << 16) as usize);
        for i in 0..total {
            text.push_str(state.vocabulary.pick(&mut words, i));
        }
        if self.faults.ends_stream_at().is_some() {
            return Err(ApiError::server_error(
                "mock fault: the request failed mid-generation",
            ));
        }
        state
            .metrics
            .ttft
            .observe((fired - self.start).as_secs_f64());
        state
            .metrics
            .generation_tokens
            .fetch_add(total, Ordering::Relaxed);
        state.metrics.finished(&crate::metrics::Finished {
            reason: finish,
            prompt_tokens,
            output_tokens: total,
            e2e_s: (fired - self.start).as_secs_f64(),
            tpot_s,
        });
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish,
            }),
            Endpoint::Completions => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": finish,
            }),
        };
        Ok(json!({
            "id": self.id,
            "object": match self.endpoint {
                Endpoint::Chat => "chat.completion",
                Endpoint::Completions => "text_completion",
            },
            "created": self.created,
            "model": self.request.model,
            "choices": [choice],
            "usage": Self::usage(prompt, total),
        })
        .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_absolute_from_start() {
        let s = Instant::now();
        let (ttft, itl) = (Duration::from_millis(50), Duration::from_micros(5_500));
        assert_eq!(due(s, ttft, itl, 0), s + ttft);
        assert_eq!(due(s, ttft, itl, 1), s + Duration::from_micros(55_500));
        // No accumulation: token 1000 is exactly ttft + 1000·itl after start.
        assert_eq!(
            due(s, ttft, itl, 1000),
            s + Duration::from_micros(5_550_000)
        );
    }

    #[test]
    fn decode_step_grows_linearly_with_running_sequences() {
        let itl = Duration::from_millis(10);
        assert_eq!(decode_step(itl, 0.5, 1), itl);
        assert_eq!(decode_step(itl, 0.5, 0), itl);
        assert_eq!(decode_step(itl, 0.5, 3), Duration::from_millis(20));
        assert_eq!(decode_step(itl, 0.0, 100), itl);
    }

    #[test]
    fn escaping_keeps_json_valid() {
        let mut s = String::from("\"");
        escape("a\"b\\c\nd\u{1}", &mut s);
        s.push('"');
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}");
    }
}

#[cfg(test)]
mod schedule_tests {
    //! The schedule, checked exactly with a fake pacer that records each deadline instead of sleeping.
    use super::*;
    use crate::dist::Dist;
    use crate::{Config, Settings, State};
    use futures_util::StreamExt;
    use tokenperf_core::tokenizer::TokenCounter;

    fn request(max_tokens: u64) -> Request {
        Request {
            model: "m".into(),
            prompt: "hello there".into(),
            max_tokens,
            min_tokens: 0,
            ignore_eos: false,
            stream: true,
            include_usage: true,
        }
    }

    async fn deadlines(settings: Settings, max_tokens: u64) -> (Instant, Vec<Instant>, String) {
        let config = Config::from_settings(&settings).unwrap();
        let pacer = crate::pacer::Pacer::fake();
        let state = State::with_pacer(config, TokenCounter::project(), pacer.clone()).unwrap();
        let start = Instant::now();
        let ticket = state.admission.reserve().unwrap();
        let plan = Plan::new(
            next_request(0),
            request(max_tokens),
            Endpoint::Chat,
            start,
            ticket,
            faults::Plan::default(),
            false,
        );
        let body: Vec<u8> = plan
            .into_sse(
                state.clone(),
                tokio::spawn(async {
                    crate::PromptTokens {
                        count: 7,
                        cached: None,
                    }
                }),
            )
            .map(|b| b.unwrap().to_vec())
            .concat()
            .await;
        (start, pacer.deadlines(), String::from_utf8(body).unwrap())
    }

    #[tokio::test]
    async fn fixed_timing_is_start_plus_ttft_plus_i_itl() {
        let cfg = Settings {
            ttft_ms: 50.0,
            itl_ms: 5.5,
            ..Settings::default()
        };
        let (start, d, body) = deadlines(cfg, 6).await;
        let want: Vec<Instant> = (0..6)
            .map(|i| {
                due(
                    start,
                    Duration::from_millis(50),
                    Duration::from_micros(5_500),
                    i,
                )
            })
            .collect();
        assert_eq!(d, want);
        assert_eq!(
            body.matches("\"content\":\"").count(),
            7,
            "role chunk + 6 tokens"
        );
        assert!(body.ends_with("data: [DONE]\n\n"));
        assert!(body.contains(
            "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":6,\"total_tokens\":13}"
        ));
    }

    #[tokio::test]
    async fn multi_token_chunks_are_due_with_their_last_token() {
        let cfg = Settings {
            ttft_ms: 20.0,
            itl_ms: 10.0,
            tokens_per_chunk: Dist::Fixed(2),
            ..Settings::default()
        };
        let (start, d, _) = deadlines(cfg, 5).await;
        let ms = |m: u64| start + Duration::from_millis(m);
        // Tokens due at 20, 30 | 40, 50 | 60 → chunks at 30, 50, 60.
        assert_eq!(d, vec![ms(30), ms(50), ms(60)]);
    }

    #[tokio::test]
    async fn prefill_cost_scales_with_prompt_tokens() {
        let cfg = Settings {
            ttft_ms: 10.0,
            prefill_per_token_ms: 1.0,
            itl_ms: 5.0,
            ..Settings::default()
        };
        let (start, d, _) = deadlines(cfg, 2).await;
        // 7 prompt tokens (the stubbed count): 10 + 7 ms, then one 5 ms step.
        assert_eq!(
            d,
            vec![
                start + Duration::from_millis(17),
                start + Duration::from_millis(22)
            ]
        );
    }
}
