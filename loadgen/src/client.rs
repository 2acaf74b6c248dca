//! One request against an OpenAI-compatible server, measured: sends it, reads the SSE stream, and
//! returns a [`RequestRecord`] whatever happens. Measurement code never prints.
//!
//! Every event is timestamped when its bytes come out of the socket, before it is parsed; several
//! events in one read share that read's timestamp. Tokens are counted after the stream ends (one
//! encoding of the whole text), so tokenization never sits between a read and its timestamp.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokenperf_core::openai::{ErrorObject, Reading, Recurring};

use crate::proxy::Proxy;
use tokenperf_core::record::{
    ConnectionInfo, Event, GroundTruth, Outcome, RequestRecord, ServerChunk, TokenCount,
};
use tokenperf_core::tokenizer::TokenCounter;

use crate::cut::CutSignal;
use crate::http::{Body, HttpClient, SendError};
use crate::prompt::PromptSpec;
use crate::sse::SseParser;

/// Which OpenAI endpoint to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST {base}/chat/completions` with `messages`.
    Chat,
    /// `POST {base}/completions` with `prompt`.
    Completions,
}

/// What every request of a run shares.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL ending in `/v1` (or wherever the API lives), e.g. `http://localhost:5543/v1`.
    pub api_base: String,
    pub api_key: String,
    pub model: String,
    pub endpoint: Endpoint,
    /// Merged over the body last, so it can override anything (as LLMPerf does).
    pub additional_params: Map<String, Value>,
    /// Ask for `stream_options.include_usage`.
    pub request_usage: bool,
    /// Longest silence allowed between two reads of the body.
    pub idle_timeout: Duration,
    /// Longest a whole request may take (`None`: no limit).
    pub total_timeout: Option<Duration>,
    /// Ask a mock-server for ground truth (`x-tokenperf-ground-truth: 1`); other servers ignore it.
    pub ground_truth: bool,
    /// Longest SSE line or event accepted; past it the request fails (`--max-sse-line-bytes`).
    pub max_line_bytes: usize,
    /// Most bytes one response may send; past it the request fails (`--max-response-bytes`).
    pub max_response_bytes: u64,
    /// Send `ignore_eos` and `min_tokens` so the server produces exactly `max_tokens`.
    pub ignore_eos: bool,
}

/// Most bytes of a non-2xx body read for its message.
const ERROR_BODY_CAP: usize = 64 * 1024;

impl ClientConfig {
    /// The endpoint's path below the base URL.
    pub fn path(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
        }
    }

    pub fn url(&self) -> String {
        format!("{}{}", self.api_base.trim_end_matches('/'), self.path())
    }

    /// The JSON body for one request.
    pub fn body(&self, spec: &PromptSpec) -> Value {
        let (prompt, max_tokens) = (spec.prompt.as_str(), spec.max_tokens);
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        match self.endpoint {
            Endpoint::Chat if spec.messages.is_some() => {
                body.insert("messages".into(), json!(spec.messages))
            }
            // LLMPerf's shape: an empty system message, then the prompt.
            Endpoint::Chat => body.insert(
                "messages".into(),
                json!([{"role": "system", "content": ""}, {"role": "user", "content": prompt}]),
            ),
            Endpoint::Completions => body.insert("prompt".into(), json!(prompt)),
        };
        body.insert("stream".into(), json!(true));
        body.insert("max_tokens".into(), json!(max_tokens));
        if self.ignore_eos {
            body.insert("ignore_eos".into(), json!(true));
            body.insert("min_tokens".into(), json!(max_tokens));
        }
        if self.request_usage {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        for (k, v) in &self.additional_params {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

/// rustls is built without a default crypto provider (to avoid compiling aws-lc); ring is installed
/// once, before any TLS client exists.
pub fn install_crypto_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The reqwest client for everything but measured requests (the tokenizer download follows the Hub's
/// redirects; measured requests never do).
pub fn http_client(pool_size: usize) -> reqwest::Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool_size)
        .tcp_nodelay(true)
        .build()
}

/// A reqwest client for plain `http://` requests only: it trusts no certificate, so building it
/// does not read the system's certificate store (tens of ms, before the first request).
pub fn plain_http_client(proxy: Option<&Proxy>) -> reqwest::Result<reqwest::Client> {
    install_crypto_provider();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    preconfigured_http_client(tls, proxy)
}

/// A reqwest client for one request at a time to the measured server, with these TLS settings.
/// It goes where the measured requests go: through `--proxy`, else directly (never through
/// `HTTP(S)_PROXY`).
pub fn preconfigured_http_client(
    tls: rustls::ClientConfig,
    proxy: Option<&Proxy>,
) -> reqwest::Result<reqwest::Client> {
    let builder = match proxy {
        Some(p) => reqwest::Client::builder().proxy(p.for_reqwest()?),
        None => reqwest::Client::builder().no_proxy(),
    };
    builder
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .tls_backend_preconfigured(tls)
        .build()
}

/// Run-wide measurement context: the clock's zero and the tokenizer.
pub struct Context {
    pub config: ClientConfig,
    /// The measured requests' client (our own pool; see [`crate::http`]).
    pub http: HttpClient,
    pub run_start: Instant,
    /// `run_start` on CLOCK_MONOTONIC, to place events on the clock ground truth uses.
    pub run_start_mono_us: u64,
    pub tokenizer: Arc<TokenCounter>,
    /// Requests sent and not yet finished (sampled for the Little's-law check): counted up exactly
    /// when a record's `sent_at_us` is stamped and down when its end is read, `read_lag` after its
    /// `done_at_us`, so with that lag both sides of the check measure the same interval.
    pub in_flight: Arc<AtomicI64>,
    /// How long ended requests waited to be read before `in_flight` dropped (the other half of the
    /// Little's-law check's live side).
    pub read_lag: tokenperf_core::summary::ReadLag,
    /// Where token counting runs, off the measuring threads.
    pub finisher: Arc<tokenperf_core::background::Background>,
    /// Waits for a place in the record writer's queue.
    pub record_waits: RecordWaits,
}

/// Requests that waited for a place in the record writer's bounded queue, because token counting
/// or the disk fell behind: a closed-loop worker sends its next request only after the wait, so the
/// load offered was lower than asked, and the user must be told.
#[derive(Debug, Default)]
pub struct RecordWaits {
    count: AtomicU64,
    total_us: AtomicU64,
    longest_us: AtomicU64,
}

impl RecordWaits {
    /// A place in the record writer's queue for a finished request; a wait for one is counted.
    /// `None` when the writer is gone.
    pub async fn slot(
        &self,
        tx: &tokio::sync::mpsc::Sender<RequestRecord>,
    ) -> Option<tokio::sync::mpsc::OwnedPermit<RequestRecord>> {
        use tokio::sync::mpsc::error::TrySendError;
        match tx.clone().try_reserve_owned() {
            Ok(slot) => return Some(slot),
            Err(TrySendError::Closed(_)) => return None,
            Err(TrySendError::Full(_)) => {}
        }
        let since = Instant::now();
        let slot = tx.clone().reserve_owned().await.ok();
        self.add(since.elapsed());
        slot
    }

    fn add(&self, waited: Duration) {
        let us = waited.as_micros() as u64;
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.longest_us.fetch_max(us, Ordering::Relaxed);
    }

    /// How many requests waited, for how long in all and at most (µs); `None` when none did.
    pub fn summary(&self) -> Option<(u64, u64, u64)> {
        let count = self.count.load(Ordering::Relaxed);
        (count > 0).then(|| {
            (
                count,
                self.total_us.load(Ordering::Relaxed),
                self.longest_us.load(Ordering::Relaxed),
            )
        })
    }
}

impl Context {
    /// Microseconds since the run start.
    pub fn now_us(&self) -> u64 {
        self.run_start.elapsed().as_micros() as u64
    }

    /// `t` as microseconds since the run start.
    pub fn us_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.run_start).as_micros() as u64
    }
}

/// One event as read: when its read returned (µs since the run start) and how many bytes of
/// content it carried. Kept beside each other because both are written for every event of every
/// stream, and one cache line per event is cheaper than two (BENCHMARKS.md, issue 17).
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at_us: u64,
    content_bytes: u32,
}

/// What the stream reader collected; turned into a record once the stream is over. Laid out in
/// the order written: what every event reads or writes comes first (through `done`), so that an
/// event of one of a thousand streams, whose state has gone cold since its last, touches few lines.
/// Aligning it to a line as well cost more L1 misses than it saved (BENCHMARKS.md, issue 17).
#[repr(C)]
struct Collected {
    events: Vec<Arrival>,
    text: String,
    /// Bytes of body received.
    body_bytes: u64,
    /// Events that were OpenAI chunks (had `choices` or `usage`); a stream of none is malformed.
    chunks: usize,
    /// The last plain event, to read the next ones against.
    recurring: Recurring,
    /// The first bytes of the body, for the message when it held no event at all.
    head: Vec<u8>,
    done: bool,
    model: Option<String>,
    /// Whether this request is counted in `Context::in_flight`.
    counted: bool,
    usage: Option<tokenperf_core::openai::Usage>,
    finish_reason: Option<String>,
    /// Ground truth chunks (event index, due, sent, tokens) and the server's arrival time.
    truth: Vec<ServerChunk>,
    arrival_mono_us: Option<u64>,
    /// The first event that was not a chunk, for the message.
    first_other: Option<String>,
}

// What every event touches fits in two cache lines.
const _: () = assert!(std::mem::offset_of!(Collected, done) < 128);

impl Collected {
    fn new(max_tokens: u64) -> Self {
        // Reserve for the expected events, but never in proportion to an absurd `max_tokens`.
        let cap = (max_tokens as usize).min(4096) + 4;
        Self {
            events: Vec::with_capacity(cap),
            text: String::new(),
            usage: None,
            finish_reason: None,
            done: false,
            truth: Vec::new(),
            arrival_mono_us: None,
            chunks: 0,
            first_other: None,
            head: Vec::new(),
            body_bytes: 0,
            model: None,
            counted: false,
            recurring: Recurring::default(),
        }
    }
}

/// Stamps the end of a request (once) and takes it out of the in-flight count at the same instant.
fn stamp_done(ctx: &Context, rec: &mut RequestRecord, c: &mut Collected, at: u64) {
    let done = *rec.done_at_us.get_or_insert(at);
    if c.counted {
        c.counted = false;
        ctx.in_flight.fetch_sub(1, Ordering::Relaxed);
        // With kernel stamps the record ends when the last packet arrived, earlier than this.
        ctx.read_lag.add(done, ctx.now_us());
    }
}

/// Sends one request and measures it. `intended_us` is when it should have been sent. When `cut`
/// turns true mid-request, the request ends as `cancelled` and keeps what it had measured.
pub async fn measure(
    ctx: &Context,
    id: u64,
    intended_us: u64,
    spec: &PromptSpec,
    cut: &CutSignal,
) -> Unfinished {
    let mut rec = RequestRecord::new(id, intended_us);
    rec.max_tokens = Some(spec.max_tokens);
    rec.prompt_target_tokens = spec.target_tokens;
    let body = Bytes::from(serde_json::to_vec(&ctx.config.body(spec)).unwrap_or_default());
    let mut c = Collected::new(spec.max_tokens);
    let outcome = {
        let total = ctx.config.total_timeout;
        let exchange = std::pin::pin!(exchange(ctx, &mut rec, &body, &mut c));
        let deadline = std::pin::pin!(total.map(tokio::time::sleep));
        let cut_wait = std::pin::pin!(cut.wait());
        match first_of(exchange, deadline, cut_wait).await {
            First::Exchange(o) => o,
            First::Timeout => Outcome::Timeout {
                message: format!(
                    "request exceeded the total timeout of {:?}",
                    total.unwrap_or_default()
                ),
            },
            First::Cut => Outcome::Cancelled {
                message: "run interrupted while the request was in flight".into(),
            },
        }
    };
    stamp_done(ctx, &mut rec, &mut c, ctx.now_us());
    rec.outcome = outcome;
    Unfinished {
        rec,
        c,
        prompt_tokens: spec.prompt_tokens,
        tokenizer: ctx.tokenizer.clone(),
        run_start_mono_us: ctx.run_start_mono_us,
    }
}

/// What ended a request's wait: its exchange, the total timeout, or the run's cut.
enum First {
    Exchange(Outcome),
    Timeout,
    Cut,
}

/// Whichever of the exchange, the total timeout (when there is one) and the run's cut comes first,
/// polled in that order at every wake-up, by hand rather than by `select!` and `timeout`: each of
/// those is one more level of state that every streamed event's wake-up passes through
/// (BENCHMARKS.md, issue 17); the cut costs one shared flag's read after the exchange (`CutSignal`).
fn first_of(
    mut exchange: Pin<&mut impl Future<Output = Outcome>>,
    mut deadline: Pin<&mut Option<tokio::time::Sleep>>,
    mut cut: Pin<&mut crate::cut::CutWait<'_>>,
) -> impl Future<Output = First> {
    let mut deadline_waker = None;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(o) = exchange.as_mut().poll(cx) {
            return Poll::Ready(First::Exchange(o));
        }
        if let Some(d) = deadline.as_mut().as_pin_mut()
            && poll_timer(d, &mut deadline_waker, cx).is_ready()
        {
            return Poll::Ready(First::Timeout);
        }
        cut.as_mut().poll(cx).map(|()| First::Cut)
    })
}

/// Polls `timer` only when that can tell something: with a waker it does not hold yet (its first
/// poll, a reset, which clears `registered`, or another task's waker), or once it has fired. In
/// between, the timer will wake the waker it holds when it fires, so polling it at every streamed
/// event only registered that waker again (`Sleep::poll` was 1.3 % of the pinned case's samples,
/// BENCHMARKS.md issue 17); `CutWait` keeps its wait the same way.
fn poll_timer(
    timer: Pin<&mut tokio::time::Sleep>,
    registered: &mut Option<std::task::Waker>,
    cx: &mut std::task::Context<'_>,
) -> Poll<()> {
    let held = registered.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
    if held && !timer.is_elapsed() {
        return Poll::Pending;
    }
    if !held {
        *registered = Some(cx.waker().clone());
    }
    timer.poll(cx)
}

/// A request whose exchange is over but whose tokens are not counted yet.
#[must_use = "an unfinished record must be finished, or the request is lost"]
pub struct Unfinished {
    rec: RequestRecord,
    c: Collected,
    prompt_tokens: u64,
    tokenizer: Arc<TokenCounter>,
    run_start_mono_us: u64,
}

impl Unfinished {
    /// Counts the tokens (CPU-bound: hundreds of µs for a long response) and returns the record.
    pub fn finish(self) -> RequestRecord {
        let mut rec = self.rec;
        finish_tokens(
            &self.tokenizer,
            self.run_start_mono_us,
            &mut rec,
            self.c,
            self.prompt_tokens,
        );
        rec
    }

    /// Finishes on the run's background threads and sends the record through `slot` (a place
    /// reserved in the writer's bounded queue) from there, so the caller can send its next request
    /// at once, and records waiting to be counted or written stay bounded.
    pub fn finish_and_send(
        self,
        ctx: &Context,
        slot: tokio::sync::mpsc::OwnedPermit<RequestRecord>,
    ) {
        ctx.finisher.submit(move || {
            slot.send(self.finish());
        });
    }
}

/// Fills token counts: the server's `usage` and one tokenizer pass over the whole output text, with
/// each token attributed to the event in which it started.
fn finish_tokens(
    tokenizer: &TokenCounter,
    run_start_mono_us: u64,
    rec: &mut RequestRecord,
    c: Collected,
    prompt_tokens: u64,
) {
    let counts = if c.text.is_empty() {
        vec![0; c.events.len()]
    } else {
        attribute_by_start(tokenizer, &c.text, &c.events)
    };
    let total: u64 = counts.iter().map(|&n| u64::from(n)).sum();
    rec.events = c
        .events
        .iter()
        .zip(&counts)
        .map(|(e, &n)| Event(e.at_us, n))
        .collect();
    let server_out = c.usage.map(|u| u.completion_tokens);
    let server_in = c.usage.map(|u| u.prompt_tokens).filter(|&n| n > 0);
    rec.output_tokens = TokenCount::new(server_out, Some(total));
    // LLMPerf's count: the same text encoded with the tokenizer's special tokens (BOS).
    rec.output_tokens.tokenizer_with_specials = Some(total + tokenizer.special_tokens() as u64);
    rec.input_tokens = TokenCount::new(server_in, Some(prompt_tokens));
    rec.finish_reason = c.finish_reason;
    rec.cached_input_tokens = c.usage.and_then(|u| u.cached_tokens());
    rec.model = c.model;
    if let Some(arrival_mono_us) = c.arrival_mono_us {
        rec.ground_truth = Some(GroundTruth {
            run_start_mono_us,
            arrival_mono_us,
            chunks: c.truth,
        });
    }
}

/// Token counts per piece, each token attributed to the piece holding its first byte, so that every
/// piece that starts new text gets its tokens and a piece that only completes an earlier token gets 0.
fn attribute_by_start(t: &TokenCounter, text: &str, pieces: &[Arrival]) -> Vec<u32> {
    let mut out = vec![0u32; pieces.len()];
    let Ok(starts) = t.token_starts(text) else {
        return out;
    };
    let mut piece = 0usize;
    let mut piece_end = pieces.first().map_or(0, |p| p.content_bytes as usize);
    for start in starts {
        while piece + 1 < pieces.len() && start >= piece_end {
            piece += 1;
            piece_end += pieces[piece].content_bytes as usize;
        }
        if let Some(slot) = out.get_mut(piece) {
            *slot += 1;
        }
    }
    out
}

/// The message of a non-2xx answer: the server's error message when its body has one, else the
/// body's text, else the status itself; never empty. 3xx are never followed: the message names the
/// `Location`, and common mistakes get a hint.
fn status_message(
    status: hyper::StatusCode,
    location: Option<&str>,
    body: &[u8],
    cut: Option<&str>,
) -> String {
    let text = String::from_utf8_lossy(body);
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        if let Some(e) = v.get("error") {
            let e = ErrorObject::from_value(e);
            return (!e.message.is_empty())
                .then_some(e.message)
                .or_else(|| e.kind.filter(|k| !k.is_empty()));
        }
        ["detail", "message"]
            .iter()
            .find_map(|k| v.get(*k))
            .map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_string))
    });
    let mut msg = match from_json {
        Some(m) if !m.trim().is_empty() => m,
        _ if !text.trim().is_empty() => text.trim().chars().take(500).collect(),
        _ => format!(
            "HTTP {} {} with an empty body",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    };
    if status.is_redirection() {
        msg = format!(
            "redirect to '{}' not followed (point --api-base at the final URL): {msg}",
            location.unwrap_or("(no Location header)")
        );
    } else if status == hyper::StatusCode::NOT_FOUND {
        msg.push_str(
            " (is --api-base right? It must end where chat/completions is appended, usually /v1)",
        );
    } else if status == hyper::StatusCode::UNAUTHORIZED || status == hyper::StatusCode::FORBIDDEN {
        msg.push_str(" (check --api-key / OPENAI_API_KEY)");
    }
    if let Some(cut) = cut {
        msg.push_str(&format!(" [{cut}]"));
    }
    msg
}

/// Reads a non-2xx body for its message: under the idle timeout between reads, at most
/// [`ERROR_BODY_CAP`] bytes. Returns the bytes and, when it stopped early, why.
async fn read_error_body(body: &mut Body, idle: Duration) -> (Vec<u8>, Option<String>) {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(idle, body.data()).await {
            Err(_) => return (out, Some(format!("the error body stalled for {idle:?}"))),
            Ok(None) => return (out, None),
            Ok(Some(Err(e))) => {
                let why = format!("the error body broke off: {}", crate::http::error_chain(&e));
                return (out, Some(why));
            }
            Ok(Some(Ok(d))) => {
                let room = ERROR_BODY_CAP - out.len();
                out.extend_from_slice(&d.bytes[..d.bytes.len().min(room)]);
                if out.len() >= ERROR_BODY_CAP {
                    return (
                        out,
                        Some(format!("error body cut at {ERROR_BODY_CAP} bytes")),
                    );
                }
            }
        }
    }
}

/// Sends the request and waits for the response head; a connection that cannot be made, or a
/// failure before the head, ends the request there.
async fn send(
    ctx: &Context,
    rec: &mut RequestRecord,
    body: &Bytes,
    c: &mut Collected,
) -> Result<crate::http::Sent, Outcome> {
    let auth = format!("Bearer {}", ctx.config.api_key);
    let mut headers = vec![("authorization", auth.as_str())];
    if ctx.config.ground_truth {
        headers.push(("x-tokenperf-ground-truth", "1"));
    }
    // The send is stamped, and the request counted in flight, when it is first attempted: a connect
    // failure is then a sent request with its own time, like any other failure. The pool is warmed
    // before the run, so only a server that closes connections puts a connect inside a request.
    rec.sent_at_us = Some(ctx.now_us());
    ctx.in_flight.fetch_add(1, Ordering::Relaxed);
    c.counted = true;
    let idle = ctx.config.idle_timeout;
    let result = {
        let rec = &mut *rec;
        let mut on_send = move |new: bool| {
            rec.connection.get_or_insert(ConnectionInfo {
                new,
                connect_us: None,
                retried_after: None,
            });
        };
        let post = ctx
            .http
            .post(ctx.config.path(), body, &headers, &mut on_send);
        tokio::time::timeout(idle, post).await
    };
    let fail = |rec: &mut RequestRecord, c: &mut Collected, o: Outcome| {
        stamp_done(ctx, rec, c, ctx.now_us());
        Err(o)
    };
    match result {
        Ok(Ok(sent)) => {
            if let Some(conn) = &mut rec.connection {
                conn.connect_us = sent.connect_us;
                conn.retried_after.clone_from(&sent.retried_after);
            }
            // The send is when the request's first byte reached the socket, not when it was handed
            // to the connection's task (which writes it after a wake-up).
            rec.sent_at_us = Some(ctx.us_at(sent.sent_at));
            Ok(sent)
        }
        Ok(Err(SendError::Connect(m))) => fail(rec, c, Outcome::Connect { message: m }),
        Ok(Err(SendError::Request(m))) => fail(
            rec,
            c,
            Outcome::Connect {
                message: format!("sending the request: {m}"),
            },
        ),
        Err(_) => fail(
            rec,
            c,
            Outcome::Timeout {
                message: format!("no response head within {idle:?} (idle timeout)"),
            },
        ),
    }
}

/// One request from send to verdict: the response head, then either the error answer or the event
/// stream, and the connection back to the pool when it ended cleanly.
async fn exchange(
    ctx: &Context,
    rec: &mut RequestRecord,
    body: &Bytes,
    c: &mut Collected,
) -> Outcome {
    let sent = match send(ctx, rec, body, c).await {
        Ok(s) => s,
        Err(o) => return o,
    };
    let (head, mut body) = (sent.head, sent.body);
    rec.response_head_at_us = Some(ctx.us_at(sent.head_at));
    if !(200..300).contains(&head.status) {
        return error_answer(ctx, rec, c, &head, body).await;
    }
    let mut ended = match read_stream(ctx, rec, c, &mut body).await {
        Ok(ended) => ended,
        Err(o) => return o,
    };
    if let Some(o) = stream_verdict(c) {
        return o;
    }
    // Read the rest (normally just the end of the chunked body) so the connection can be reused.
    if !ended {
        ended = drain(&mut body).await;
    }
    if ended {
        body.release();
    }
    Outcome::Ok
}

/// A non-2xx answer: its message, read under the idle timeout; the connection is reused when the
/// body was read to its end.
async fn error_answer(
    ctx: &Context,
    rec: &mut RequestRecord,
    c: &mut Collected,
    head: &crate::h1::Head,
    mut body: Body,
) -> Outcome {
    let (bytes, cut) = read_error_body(&mut body, ctx.config.idle_timeout).await;
    stamp_done(ctx, rec, c, ctx.now_us());
    if cut.is_none() {
        body.release();
    }
    // A status outside 100–999 cannot be a StatusCode; httparse reads three digits, so this is the
    // 0 of a head without one.
    let status = hyper::StatusCode::from_u16(head.status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    Outcome::HttpStatus {
        status: head.status,
        message: status_message(status, head.location.as_deref(), &bytes, cut.as_deref()),
    }
}

/// Reads events until `[DONE]`, a failure, or the end of the body (then `Ok(true)`); every read is
/// timestamped (with the socket read that brought it, from `clock`) before it is parsed. A failure
/// ends the request with its outcome.
async fn read_stream(
    ctx: &Context,
    rec: &mut RequestRecord,
    c: &mut Collected,
    body: &mut Body,
) -> Result<bool, Outcome> {
    let mut parser = SseParser::with_limit(ctx.config.max_line_bytes);
    let mut failure: Option<Outcome> = None;
    // One idle timer for the whole stream, moved forward only when it fires early: a fresh timeout
    // per read would insert and remove a timer-wheel entry for every event.
    let mut last_at = rec.response_head_at_us.unwrap_or_else(|| ctx.now_us());
    let idle_timer = tokio::time::sleep(ctx.config.idle_timeout);
    tokio::pin!(idle_timer);
    let mut timer_waker = None;
    loop {
        // Polled by hand rather than by `select!`: the body first, then the timer, one level of
        // state for an event's wake-up (BENCHMARKS.md, issue 17).
        let polled = std::future::poll_fn(|cx| match body.poll_piece(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => poll_timer(idle_timer.as_mut(), &mut timer_waker, cx).map(|()| None),
        });
        let next = match polled.await {
            Some(Ok(Some(len))) => body.piece(len).map(Ok),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(Err(e)),
            None => match idle_fired(ctx, rec, c, last_at, idle_timer.as_mut()) {
                Some(timeout) => return Err(timeout),
                None => {
                    // Moved to a new deadline: its next poll registers the waker again.
                    timer_waker = None;
                    continue;
                }
            },
        };
        // Never before the previous event, nor before the send (bytes read before the head).
        let (chunk, at) = match next {
            Some(Ok(d)) => (d.bytes, ctx.us_at(d.read_at).max(last_at)),
            Some(Err(e)) => {
                stamp_done(ctx, rec, c, ctx.now_us().max(last_at));
                return Err(Outcome::Stream {
                    message: format!(
                        "reading the stream after {} events: {}",
                        c.events.len(),
                        crate::http::error_chain(&e)
                    ),
                });
            }
            None => {
                // The end came with the connection's last read.
                let at = body
                    .last_read()
                    .map_or_else(|| ctx.now_us(), |t| ctx.us_at(t))
                    .max(last_at);
                if let Err(e) = parser.finish(&mut |d| on_data(d, at, c, &mut failure)) {
                    failure = Some(Outcome::Malformed {
                        message: e.to_string(),
                    });
                }
                stamp_done(ctx, rec, c, at);
                return failure.map_or(Ok(true), Err);
            }
        };
        last_at = at;
        take_chunk(ctx, c, &mut parser, chunk, at, &mut failure);
        if failure.is_some() || c.done {
            stamp_done(ctx, rec, c, at);
            return failure.map_or(Ok(false), Err);
        }
    }
}

/// The stream's idle timer fired: `None` when data came within the idle timeout after all (the
/// timer is moved to the new deadline), else the request's end as a timeout.
fn idle_fired(
    ctx: &Context,
    rec: &mut RequestRecord,
    c: &mut Collected,
    last_at: u64,
    timer: Pin<&mut tokio::time::Sleep>,
) -> Option<Outcome> {
    let idle = ctx.config.idle_timeout;
    let now = ctx.now_us();
    let quiet = now.saturating_sub(last_at);
    let idle_us = idle.as_micros() as u64;
    if quiet < idle_us {
        let left = Duration::from_micros(idle_us - quiet);
        timer.reset(tokio::time::Instant::now() + left);
        return None;
    }
    stamp_done(ctx, rec, c, now);
    Some(Outcome::Timeout {
        message: format!(
            "no data for {idle:?} (idle timeout) after {} events",
            c.events.len()
        ),
    })
}

/// Feeds one read to the parser, keeping the body's first bytes (for messages) and its size under
/// `--max-response-bytes`.
fn take_chunk(
    ctx: &Context,
    c: &mut Collected,
    parser: &mut SseParser,
    chunk: &[u8],
    at: u64,
    failure: &mut Option<Outcome>,
) {
    c.body_bytes += chunk.len() as u64;
    if c.head.len() < 256 {
        let room = 256 - c.head.len();
        c.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    if let Err(e) = parser.feed(chunk, &mut |d| on_data(d, at, c, failure)) {
        failure.get_or_insert(Outcome::Malformed {
            message: e.to_string(),
        });
    } else if c.body_bytes > ctx.config.max_response_bytes && failure.is_none() && !c.done {
        *failure = Some(Outcome::Malformed {
            message: format!(
                "the response passed {} bytes without ending (--max-response-bytes)",
                ctx.config.max_response_bytes
            ),
        });
    }
}

/// What a stream that ended without failing still lacks: an end, or any completion chunk.
fn stream_verdict(c: &Collected) -> Option<Outcome> {
    if !(c.done || c.finish_reason.is_some()) {
        return Some(Outcome::Truncated {
            message: truncated_message(c),
        });
    }
    (c.chunks == 0).then(|| Outcome::Malformed {
        message: format!(
            "{} events but none was a completion chunk (no `choices` or `usage`); first: {}",
            c.events.len(),
            c.first_other.as_deref().unwrap_or("[DONE]")
        ),
    })
}

/// Reads what is left of a body for up to 200 ms; whether it reached its end.
async fn drain(body: &mut Body) -> bool {
    let rest = tokio::time::timeout(Duration::from_millis(200), async {
        loop {
            match body.data().await {
                None => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) => return false,
            }
        }
    });
    rest.await.unwrap_or(false)
}

fn truncated_message(c: &Collected) -> String {
    if c.events.is_empty() && !c.head.is_empty() {
        let shown: String = String::from_utf8_lossy(&c.head).chars().take(200).collect();
        return format!("the body held no SSE event (is the server streaming?); it began: {shown}");
    }
    format!(
        "stream closed after {} events without [DONE] or a finish reason",
        c.events.len()
    )
}

/// Handles one SSE data payload that arrived at `at` µs.
fn on_data(data: &[u8], at: u64, c: &mut Collected, failure: &mut Option<Outcome>) {
    if failure.is_some() || c.done {
        return;
    }
    if data == b"[DONE]" {
        c.done = true;
        return;
    }
    // Read against the stream's last plain event where it can be (`Recurring`), else whole.
    let ev = match c.recurring.read(data) {
        Ok(Reading::Event(ev)) => ev,
        Ok(Reading::Again(text)) => {
            // The last plain event again with a new text: a chunk, no finish reason, usage, error
            // or ground truth, and the model (if any) recorded when that event was read.
            c.chunks += 1;
            arrived(c, at, text);
            return;
        }
        Err(e) => {
            let shown: String = String::from_utf8_lossy(data).chars().take(200).collect();
            *failure = Some(Outcome::Malformed {
                message: format!("event is not valid JSON ({e}): {shown}"),
            });
            return;
        }
    };
    if let Some(err) = &ev.error {
        let e = ErrorObject::from_value(err);
        let message = if e.message.is_empty() {
            err.to_string()
        } else {
            e.message
        };
        *failure = Some(Outcome::ServerError {
            code: e.code,
            message,
        });
        return;
    }
    if ev.choices.is_some() || ev.usage.is_some() {
        c.chunks += 1;
    } else if c.first_other.is_none() {
        c.first_other = Some(String::from_utf8_lossy(data).chars().take(200).collect());
    }
    if c.model.is_none()
        && let Some(m) = &ev.model
    {
        c.model = Some(m.to_string());
    }
    if let Some(f) = ev.finish_reason() {
        c.finish_reason = Some(f.to_string());
    }
    if let Some(u) = ev.usage {
        c.usage = Some(u);
    }
    if let Some(t) = ev.tokenperf {
        c.arrival_mono_us = Some(t.arrival_mono_us);
        c.truth.push(ServerChunk(
            c.events.len() as u32,
            t.due_mono_us,
            t.sent_mono_us,
            t.tokens,
        ));
    }
    arrived(c, at, ev.content().unwrap_or_default());
}

/// Records an event's arrival and its text.
fn arrived(c: &mut Collected, at: u64, text: &str) {
    c.text.push_str(text);
    c.events.push(Arrival {
        at_us: at,
        // An event is at most `--max-sse-line-bytes` (≤ 1 GiB) long, and so is its content.
        content_bytes: text.len() as u32,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that records that it was woken.
    struct Flag(std::sync::atomic::AtomicBool);
    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A timer polled by `poll_timer` wakes the last waker it was polled with, and is seen to fire
    /// when polled again with the waker it holds; after a reset it is registered again.
    #[tokio::test]
    async fn a_lazily_polled_timer_wakes_its_last_waker() {
        let flags: Vec<Arc<Flag>> = (0..3)
            .map(|_| Arc::new(Flag(std::sync::atomic::AtomicBool::new(false))))
            .collect();
        let wakers: Vec<std::task::Waker> = flags.iter().cloned().map(Into::into).collect();
        let poll = |t: Pin<&mut tokio::time::Sleep>, held: &mut Option<std::task::Waker>, i| {
            poll_timer(t, held, &mut std::task::Context::from_waker(&wakers[i]))
        };
        let woken = |i: usize| flags[i].0.load(Ordering::SeqCst);
        let wait_for = |i: usize| async move {
            for _ in 0..500 {
                if woken(i) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("waker {i} was never woken");
        };
        let mut timer = std::pin::pin!(tokio::time::sleep(Duration::from_millis(20)));
        let mut held = None;
        assert!(poll(timer.as_mut(), &mut held, 0).is_pending());
        assert!(poll(timer.as_mut(), &mut held, 0).is_pending());
        assert!(
            poll(timer.as_mut(), &mut held, 1).is_pending(),
            "another task's waker"
        );
        wait_for(1).await;
        assert!(!woken(0), "only the last waker is woken");
        assert!(
            poll(timer.as_mut(), &mut held, 1).is_ready(),
            "seen to have fired"
        );

        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + Duration::from_millis(20));
        held = None;
        assert!(poll(timer.as_mut(), &mut held, 2).is_pending());
        wait_for(2).await;
        assert!(poll(timer.as_mut(), &mut held, 2).is_ready());
    }

    /// A llama.cpp-like completions stream read against its last plain event gives what reading
    /// every event whole gives: texts, arrivals, chunks, model, finish reason and usage.
    #[test]
    fn events_read_against_the_last_one_are_read_as_whole_ones() {
        let token = |created: u32, text: &str| {
            format!(
                r#"{{"choices":[{{"text":"{text}","index":0,"logprobs":null,"finish_reason":null}}],"created":{created},"id":"chatcmpl-1","model":"llama","object":"text_completion"}}"#
            )
        };
        let events = [
            token(1, " The"),
            token(1, " quick"),
            token(1, ""),
            token(1, r#" \"q\""#),
            token(1, " é"),
            token(2, " fox"),
            token(2, " jumps"),
            r#"{"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"length"}],"created":2,"id":"chatcmpl-1","model":"llama","object":"text_completion","usage":{"completion_tokens":6,"prompt_tokens":3,"total_tokens":9},"timings":{"predicted_n":6}}"#.to_owned(),
            "[DONE]".to_owned(),
        ];
        let read = |whole: bool| {
            let (mut c, mut failure) = (Collected::new(16), None);
            for (n, e) in events.iter().enumerate() {
                if whole {
                    c.recurring = Recurring::default();
                }
                on_data(e.as_bytes(), n as u64, &mut c, &mut failure);
            }
            assert!(failure.is_none());
            let arrivals: Vec<_> = c
                .events
                .iter()
                .map(|a| (a.at_us, a.content_bytes))
                .collect();
            let usage = c.usage.map(|u| u.completion_tokens);
            (
                c.text,
                arrivals,
                c.chunks,
                c.model,
                c.finish_reason,
                usage,
                c.done,
            )
        };
        let got = read(false);
        assert_eq!(got.0, r#" The quick "q" é fox jumps"#);
        assert_eq!(got, read(true));
    }

    #[test]
    fn tokens_are_attributed_to_the_piece_where_they_start() {
        let t = TokenCounter::project();
        let pieces = ["", " the", " harb", "or", "", " tide"];
        let text: String = pieces.concat();
        let arrivals: Vec<Arrival> = (0..)
            .zip(pieces)
            .map(|(at_us, p)| Arrival {
                at_us,
                content_bytes: p.len() as u32,
            })
            .collect();
        let counts = attribute_by_start(&t, &text, &arrivals);
        assert_eq!(counts[0], 0, "an empty piece carries no token");
        assert!(counts[1] >= 1 && counts[2] >= 1 && counts[5] >= 1);
        assert_eq!(counts[4], 0);
        assert_eq!(
            counts.iter().sum::<u32>() as usize,
            t.count(&text, false).unwrap()
        );
    }

    /// A place in a free queue is no wait; one in a full queue is counted, for at least as long
    /// as the queue stayed full; a closed queue gives none.
    #[tokio::test]
    async fn waits_for_the_record_writer_are_counted() {
        let waits = RecordWaits::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RequestRecord>(1);
        waits
            .slot(&tx)
            .await
            .unwrap()
            .send(RequestRecord::new(1, 0));
        assert_eq!(waits.summary(), None);
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let first = rx.recv().await;
            (first, rx)
        });
        waits
            .slot(&tx)
            .await
            .unwrap()
            .send(RequestRecord::new(2, 0));
        let (count, total_us, longest_us) = waits.summary().expect("a wait");
        assert_eq!(count, 1);
        assert!(
            longest_us >= 20_000 && total_us == longest_us,
            "{longest_us} µs"
        );
        let (first, mut rx) = reader.await.unwrap();
        assert_eq!(first.unwrap().id, 1);
        assert_eq!(rx.recv().await.unwrap().id, 2);
        drop(rx);
        assert!(waits.slot(&tx).await.is_none());
        assert_eq!(waits.summary().unwrap().0, 1);
    }

    #[test]
    fn body_merges_additional_params_last() {
        let mut extra = Map::new();
        extra.insert("max_tokens".into(), json!(7));
        extra.insert("temperature".into(), json!(0.0));
        let cfg = ClientConfig {
            api_base: "http://x/v1/".into(),
            api_key: "k".into(),
            model: "m".into(),
            endpoint: Endpoint::Chat,
            additional_params: extra,
            request_usage: true,
            idle_timeout: Duration::from_secs(1),
            total_timeout: None,
            ground_truth: false,
            max_line_bytes: 1 << 20,
            max_response_bytes: 1 << 26,
            ignore_eos: true,
        };
        assert_eq!(cfg.url(), "http://x/v1/chat/completions");
        let b = cfg.body(&PromptSpec {
            prompt: "hi".into(),
            messages: None,
            prompt_tokens: 1,
            max_tokens: 100,
            target_tokens: None,
        });
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["temperature"], 0.0);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(
            (b["ignore_eos"].clone(), b["min_tokens"].clone()),
            (json!(true), json!(100))
        );
        assert_eq!(b["messages"][1]["content"], "hi");
    }
}
