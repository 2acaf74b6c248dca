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
//! [`tokenperf_core::clock`]): when the request reached the host (its kernel receive stamp, else
//! when it was read off the socket), when the chunk was due,
//! and when it was formatted, to be written by the pacer at once or handed to the HTTP layer.
//!
//! Writing: on an HTTP/1.1 connection every chunk but the last is written by the pacer itself
//! (`DirectJob`), one `write` per chunk; the last, with the end of the stream, and any chunk the
//! socket cannot take at once go through hyper.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use futures_util::Stream;
use serde_json::json;
use tokenperf_core::rng::Rng;
use tokio::sync::oneshot;

use crate::admission::Ticket;
use crate::faults;
use crate::listener::{ConnHandle, RawWrite, RawWriter};
use crate::replay::Timing;
pub use crate::request::Endpoint;
use crate::request::{ApiError, Request};
use crate::{PromptTokens, State};

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

/// Request `n`'s own random stream (`n` counts this server's requests from zero), derived from the
/// server seed, so a run is reproducible for the same arrival order.
pub fn request_rng(seed: u64, n: u64) -> Rng {
    Rng::new(seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
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
    /// Tokens written.
    tokens: u64,
    /// Each chunk's due and sent times and its tokens, kept only for a ground-truth log.
    chunks: Vec<(u64, u64, u32)>,
    end: End,
    finish_reason: &'static str,
}

impl Drop for Truth {
    fn drop(&mut self) {
        let c = &self.state.clock;
        let tokens = self.tokens;
        tracing::debug!(
            id = %self.id,
            outcome = self.end.as_str(),
            prompt_tokens = self.prompt_tokens,
            completion_tokens = tokens,
            ms = self.arrival.elapsed().as_secs_f64() * 1e3,
            "request finished"
        );
        if !self.state.logs_ground_truth() {
            return;
        }
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
    /// `rng` comes from [`request_rng`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rng: Rng,
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
            id: new_id(prefix),
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

    /// The SSE body. Each chunk is written when the pacer releases it at its due time. With `conn`
    /// (an HTTP/1.1 response on one of [`crate::serve`]'s connections), every chunk but the last is
    /// written by the pacer itself, straight to the socket (`DirectJob`); the last one, which
    /// carries the end of the stream, goes through hyper with its chunked terminator.
    pub fn into_sse(
        mut self,
        state: Arc<State>,
        prompt_tokens: crate::Counting,
        conn: Option<ConnHandle>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        async_stream::stream! {
            // This is the body's first poll, so hyper has the head in its buffer (see RawWriter).
            let raw = conn.map(|c| c.raw_writer());
            let mut truth = Truth {
                state: state.clone(),
                id: self.id.clone(),
                arrival: self.start,
                admitted: None,
                prompt_tokens: 0,
                tokens: 0,
                chunks: Vec::new(),
                end: End::ClientGone,
                finish_reason: "length",
            };
            self.arrival_mono_us = state.clock.mono_us(self.start);
            let (_slot, admitted, timing) = self.admit(&state).await;
            let _running = Running::new(&state);
            truth.admitted = Some(admitted);
            let prompt = prompt_tokens.get().await;
            let mut em = Box::new(Emitter::new(self, state.clone(), truth, admitted, timing, prompt));
            let mut next = em.draw();
            while let Some(target) = next {
                if let Some(raw) = raw.as_ref().filter(|_| !em.drawn_is_last()) {
                    if target > Instant::now() + JOB_HORIZON {
                        // A long wait (a long prefill, a stall) is waited out here, where hyper
                        // drops it with the connection if the client leaves.
                        state.pacer.sleep_until(target - JOB_HORIZON).await;
                    }
                    let Some(back) = DirectJob::run(em, raw.clone(), target).await else {
                        // The pacer dropped the job: the server is stopping.
                        yield Err(std::io::Error::other("the server is stopping"));
                        return;
                    };
                    (em, next) = (back.emitter, back.next);
                    match back.how {
                        Handback::Written => {}
                        Handback::Unframed(bytes, chunks) => {
                            state.metrics.chunks_http.fetch_add(chunks, Ordering::Relaxed);
                            yield Ok(bytes);
                        }
                        Handback::Remainder(bytes) => if let Err(e) = raw.write_all(&bytes).await {
                            yield Err(e);
                            return;
                        },
                        Handback::Failed(e) => {
                            yield Err(e);
                            return;
                        }
                    }
                    continue;
                }
                let fired = state.pacer.sleep_until(target).await;
                let mut out = String::with_capacity(512);
                em.write(fired, None, &mut out);
                state.metrics.chunks_http.fetch_add(1, Ordering::Relaxed);
                yield Ok(Bytes::from(out));
                next = em.draw();
            }
            if let Some(tail) = em.fault_tail() {
                yield tail;
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
        prompt_tokens: crate::Counting,
    ) -> Result<String, ApiError> {
        let (_slot, admitted, timing) = self.admit(&state).await;
        let _running = Running::new(&state);
        let prompt = prompt_tokens.get().await;
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
        Ok(self.json_body(text, finish, prompt, total))
    }

    /// The non-streaming response: one choice with the whole text, and the usage.
    fn json_body(&self, text: String, finish: &str, prompt: PromptTokens, total: u64) -> String {
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
        json!({
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
        .to_string()
    }
}

/// A streamed response's token loop once the request is admitted: draws each chunk's tokens and
/// due time, and writes the chunk when it is released. The same code writes every chunk, whether
/// the stream's task hands it to hyper or the pacer writes it to the socket, so the two paths send
/// the same bytes on the same schedule.
struct Emitter {
    plan: Plan,
    state: Arc<State>,
    truth: Truth,
    head: String,
    timing: Option<Timing>,
    prompt: PromptTokens,
    total: u64,
    /// Tokens before the stream ends: `total`, or where a mid-stream fault cuts it.
    stream_tokens: u64,
    fault_at: Option<u64>,
    finish: &'static str,
    /// Due time of the last token drawn, before any stall.
    due: Instant,
    emitted: u64,
    last_fired: Option<Instant>,
    first_fired: Option<Instant>,
    shift: Duration,
    /// The drawn chunk: its tokens' text, how many, and when it is due (stall included).
    text: String,
    k: u64,
    target: Instant,
}

impl Emitter {
    fn new(
        mut plan: Plan,
        state: Arc<State>,
        mut truth: Truth,
        admitted: Instant,
        timing: Option<Timing>,
        prompt: PromptTokens,
    ) -> Self {
        truth.prompt_tokens = prompt.count;
        state
            .metrics
            .prompt_tokens
            .fetch_add(prompt.count, Ordering::Relaxed);
        let total = plan.output_tokens(&state);
        let finish = if total < plan.request.max_tokens {
            "stop"
        } else {
            "length"
        };
        truth.finish_reason = finish;
        let fault_at = plan.faults.ends_stream_at().filter(|k| *k <= total);
        let prefill = plan.prefill(&state, prompt.to_prefill(), timing.as_ref());
        Plan::note_prefill(&state, admitted, prefill);
        Self {
            head: plan.head(),
            plan,
            state,
            truth,
            timing,
            prompt,
            total,
            stream_tokens: fault_at.unwrap_or(total),
            fault_at,
            finish,
            due: admitted + prefill,
            emitted: 0,
            last_fired: None,
            first_fired: None,
            shift: Duration::ZERO,
            text: String::new(),
            k: 0,
            target: admitted,
        }
    }

    /// Draws the next chunk's tokens; returns when it is due, or None once the stream's tokens
    /// are all written.
    fn draw(&mut self) -> Option<Instant> {
        if self.emitted >= self.stream_tokens {
            return None;
        }
        let state = &*self.state;
        // Group the next chunk's tokens; its due time is its last token's.
        let k = self
            .plan
            .state_chunk_size(state)
            .min(self.stream_tokens - self.emitted);
        self.text.clear();
        for j in 0..k {
            let i = self.emitted + j;
            if i > 0 {
                self.due = self.plan.next_due(state, self.due, i, self.timing.as_ref());
            }
            self.text
                .push_str(state.vocabulary.pick(&mut self.plan.rng, i));
        }
        // A stall after K tokens delays token K+1 and everything after it.
        if let Some((secs, after)) = self.plan.faults.stall
            && self.emitted >= after
            && self.shift.is_zero()
        {
            self.shift = Duration::from_secs_f64(secs);
        }
        self.k = k;
        self.target = self.due + self.shift;
        Some(self.target)
    }

    /// The drawn chunk is the stream's last: it carries the end of the stream, or a fault follows.
    fn drawn_is_last(&self) -> bool {
        self.emitted + self.k >= self.stream_tokens
    }

    /// Writes the drawn chunk, released by the pacer at `fired`, to `out`: the role chunk before
    /// the first, the end of the stream with the last. `sent` is when it is handed on for writing:
    /// the pacer writes at once, so it passes `fired` and saves a clock read per token; None reads
    /// the clock.
    fn write(&mut self, fired: Instant, sent: Option<Instant>, out: &mut String) {
        let (state, k, target) = (&*self.state, self.k, self.target);
        state
            .metrics
            .lateness
            .observe((fired - target).as_secs_f64());
        match self.last_fired {
            None => state
                .metrics
                .ttft
                .observe((fired - self.plan.start).as_secs_f64()),
            Some(l) => state.metrics.itl.observe((fired - l).as_secs_f64()),
        }
        self.last_fired = Some(fired);
        self.first_fired.get_or_insert(fired);
        self.emitted += k;
        let plan = &self.plan;
        if self.emitted == k && plan.endpoint == Endpoint::Chat {
            plan.role_chunk(&self.head, out);
        }
        // The clock is read for the send time only when ground truth wants it.
        let gt = (plan.ground_truth || state.logs_ground_truth()).then(|| {
            (
                state.clock.mono_us(target),
                state.clock.mono_us(sent.unwrap_or_else(Instant::now)),
                k as u32,
            )
        });
        self.truth.tokens += k;
        if let Some(gt) = gt.filter(|_| state.logs_ground_truth()) {
            self.truth.chunks.push(gt);
        }
        plan.content_chunk(
            &self.head,
            &self.text,
            gt.filter(|_| plan.ground_truth),
            out,
        );
        state
            .metrics
            .generation_tokens
            .fetch_add(k, Ordering::Relaxed);
        if self.emitted == self.total && self.fault_at.is_none() {
            self.end_stream(fired, out);
        }
    }

    /// The finish chunk, usage when asked for, and `[DONE]`: written with the last token, so a
    /// client's end-to-end time is not stretched by a second write.
    fn end_stream(&mut self, fired: Instant, out: &mut String) {
        let (plan, total) = (&self.plan, self.total);
        plan.finish_chunk(&self.head, self.finish, out);
        if plan.request.include_usage {
            out.push_str(&self.head);
            out.push_str("],\"usage\":");
            out.push_str(&Plan::usage(self.prompt, total).to_string());
            out.push_str("}\n\n");
        }
        out.push_str("data: [DONE]\n\n");
        self.state.metrics.finished(&crate::metrics::Finished {
            reason: self.finish,
            prompt_tokens: self.prompt.count,
            output_tokens: total,
            e2e_s: (fired - plan.start).as_secs_f64(),
            tpot_s: self
                .first_fired
                .filter(|_| total > 1)
                .map(|f| (fired - f).as_secs_f64() / (total - 1) as f64),
        });
        self.truth.end = End::Ok;
    }

    /// What a mid-stream fault sends once its tokens are out: an error event, a malformed event,
    /// or a dropped connection.
    fn fault_tail(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        self.fault_at?;
        let f = self.plan.faults;
        let emitted = self.emitted;
        Some(if f.error_after == self.fault_at {
            self.truth.end = End::ErrorEvent;
            Ok(Bytes::from(format!(
                "data: {{\"error\":{{\"message\":\"mock fault: server error after {emitted} tokens\",\"type\":\"server_error\",\"param\":null,\"code\":500}}}}\n\n"
            )))
        } else if f.malformed_after == self.fault_at {
            self.truth.end = End::Malformed;
            Ok(Bytes::from_static(
                b"data: {\"choices\":[{\"delta\":{\"content\":\"trunc\n\n",
            ))
        } else {
            self.truth.end = End::Dropped;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "mock fault: connection dropped",
            ))
        })
    }
}

/// How a [`DirectJob`] gave its stream back to the stream's task.
enum Handback {
    /// The chunk is on the socket; the next one is the stream's last (or there is none).
    Written,
    /// hyper had bytes of its own unwritten, or the socket was full: the chunks (how many) are to
    /// go through hyper, which waits for room.
    Unframed(Bytes, u64),
    /// Part of the framed chunk went: the rest must follow, straight to the socket.
    Remainder(Bytes),
    /// The connection broke.
    Failed(std::io::Error),
}

/// A stream given back by its job, with the next chunk already drawn (due at `next`).
struct Back {
    emitter: Box<Emitter>,
    next: Option<Instant>,
    how: Handback,
}

/// A stream's chunks written by the pacer: at each due time it formats the chunk and writes it to
/// the socket in one `write`, framed as HTTP/1.1 chunked encoding, then asks to run again at the
/// next one. Per token that saves a task wake-up, a poll of hyper's dispatcher and its encoder,
/// which the profile put at about as much CPU as the write itself. Anything out of the ordinary
/// (the last chunk, a full socket, hyper not idle, an error) hands the stream back to its task.
struct DirectJob {
    /// Inline, not boxed: one cache miss fewer per token.
    emitter: Option<Emitter>,
    raw: RawWriter,
    back: Option<oneshot::Sender<Back>>,
}

thread_local! {
    /// What the pacer's thread formats chunks in: one pair of buffers for every stream it writes,
    /// so they stay in cache. The pacer's own time per token is mostly cache misses on the stream's
    /// state (perf annotate); buffers of each stream's own were more of them.
    static SCRATCH: std::cell::RefCell<(String, Vec<u8>)> =
        std::cell::RefCell::new((String::with_capacity(1024), Vec::with_capacity(1024)));
}

impl DirectJob {
    /// Runs the stream's chunks from the one due at `first` on the pacer, until it hands the stream
    /// back. None if the pacer dropped the job (the server is stopping).
    async fn run(emitter: Box<Emitter>, raw: RawWriter, first: Instant) -> Option<Back> {
        let (tx, rx) = oneshot::channel();
        let pacer = emitter.state.pacer.clone();
        let job = Self {
            emitter: Some(*emitter),
            raw,
            back: Some(tx),
        };
        pacer.schedule(first, Box::new(job));
        rx.await.ok()
    }

    fn hand_back(&mut self, how: Handback, next: Option<Instant>) {
        if let (Some(tx), Some(emitter)) = (self.back.take(), self.emitter.take()) {
            // If the stream's task is gone, so is its client: dropping the emitter logs that.
            let _ = tx.send(Back {
                emitter: Box::new(emitter),
                next,
                how,
            });
        }
    }

    /// Formats the chunks due by `now` into `frame` (their text, unframed, into `text`) and writes
    /// them; returns the next deadline, or hands the stream back.
    fn write_due(
        &mut self,
        now: Instant,
        text: &mut String,
        frame: &mut Vec<u8>,
    ) -> Option<Instant> {
        // hyper drops a streaming body only with its connection, which the writer sees: a write
        // then fails and the stream goes back, to nobody (the emitter is dropped, logging so).
        let em = self.emitter.as_mut()?;
        text.clear();
        frame.clear();
        let mut chunks = 0;
        let next = loop {
            let from = text.len();
            em.write(now, Some(now), text);
            frame_chunk(&text[from..], frame);
            chunks += 1;
            let next = em.draw();
            // Behind schedule (a saturated core), chunks already due go out in the same write, as
            // they would from an HTTP library's buffer: the server catches up instead of paying a
            // write per token and falling further behind.
            match next {
                Some(t) if t <= now && !em.drawn_is_last() && frame.len() < CATCH_UP_BYTES => {}
                _ => break next,
            }
        };
        // Timed from the release, and around the system call: the pacer's whole cost of these
        // chunks and the kernel's part of it, which BENCHMARKS.md sets against a bare write's.
        let sending = Instant::now();
        let written = self.raw.try_write(frame);
        let sent = Instant::now();
        let metrics = &em.state.metrics;
        let ns = |d: Duration| d.as_nanos() as u64;
        metrics
            .direct_write_ns
            .fetch_add(ns(sent - now), Ordering::Relaxed);
        metrics
            .direct_send_ns
            .fetch_add(ns(sent - sending), Ordering::Relaxed);
        let how = match written {
            RawWrite::Done => {
                metrics.chunks_direct.fetch_add(chunks, Ordering::Relaxed);
                match next {
                    Some(t) if !em.drawn_is_last() && t <= now + JOB_HORIZON => return next,
                    _ => Handback::Written,
                }
            }
            RawWrite::NotNow => Handback::Unframed(Bytes::copy_from_slice(text.as_bytes()), chunks),
            RawWrite::Partial(n) => {
                metrics.chunks_direct.fetch_add(chunks, Ordering::Relaxed);
                Handback::Remainder(Bytes::copy_from_slice(&frame[n..]))
            }
            RawWrite::Failed(e) => Handback::Failed(e),
        };
        self.hand_back(how, next);
        None
    }
}

impl crate::pacer::Job for DirectJob {
    fn fire(&mut self, now: Instant) -> Option<Instant> {
        SCRATCH.with_borrow_mut(|(text, frame)| {
            let next = self.write_due(now, text, frame);
            // A chunk of many tokens grows them; they do not stay grown.
            if frame.capacity() > SCRATCH_KEEP {
                text.shrink_to(SCRATCH_KEEP / 2);
                frame.shrink_to(SCRATCH_KEEP / 2);
            }
            next
        })
    }
}

/// The most the pacer's format buffers keep between chunks.
const SCRATCH_KEEP: usize = 2 * CATCH_UP_BYTES;

/// The pacer holds a stream (and with it its socket) only for deadlines this close. A job holds its
/// socket until it next runs, even if hyper has let the connection go, so a client that left during
/// a minute's stall would keep a descriptor open for the minute: enough of them and the server runs
/// out. Longer waits go back to the stream's task, which hyper drops with its connection.
const JOB_HORIZON: Duration = Duration::from_millis(100);

/// At most this much of chunks already due goes out in one write when the pacer is behind.
const CATCH_UP_BYTES: usize = 16 << 10;

/// Appends `data` as one HTTP/1.1 chunk: its size in hex, CRLF, the data, CRLF. (The digits by
/// hand: `core::fmt` showed in the per-token profile.)
fn frame_chunk(data: &str, frame: &mut Vec<u8>) {
    let mut digits = [0u8; 16];
    let (mut n, mut i) = (data.len(), digits.len());
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    frame.extend_from_slice(&digits[i..]);
    frame.extend_from_slice(b"\r\n");
    frame.extend_from_slice(data.as_bytes());
    frame.extend_from_slice(b"\r\n");
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
    fn chunks_are_framed_with_their_size_in_hex() {
        let mut f = Vec::new();
        frame_chunk("", &mut f);
        frame_chunk("abc", &mut f);
        frame_chunk(&"x".repeat(0x1a2), &mut f);
        let want = format!("0\r\n\r\n3\r\nabc\r\n1a2\r\n{}\r\n", "x".repeat(0x1a2));
        assert_eq!(String::from_utf8(f).unwrap(), want);
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
            request_rng(0, 0),
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
                crate::Counting::Done(crate::PromptTokens {
                    count: 7,
                    cached: None,
                }),
                None,
            )
            .map(|b| b.unwrap().to_vec())
            .concat()
            .await;
        (start, pacer.deadlines(), String::from_utf8(body).unwrap())
    }

    #[tokio::test]
    async fn each_server_numbers_its_own_requests() {
        // Two servers in one process with one seed: the second's first request draws what the
        // first's did, however many the first has taken since (faults and timings stay
        // reproducible per server when tests share a process).
        let state = || {
            let config = Config::from_settings(&Settings::default()).unwrap();
            State::with_pacer(config, TokenCounter::project(), crate::pacer::Pacer::fake()).unwrap()
        };
        let (a, b) = (state(), state());
        let first = a.next_request_rng().next_u64();
        for _ in 0..5 {
            a.next_request_rng();
        }
        assert_eq!(b.next_request_rng().next_u64(), first);
        assert_eq!(first, request_rng(0, 0).next_u64());
        assert_ne!(b.next_request_rng().next_u64(), first);
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
