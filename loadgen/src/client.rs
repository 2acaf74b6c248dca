//! One request against an OpenAI-compatible server, measured: sends it, reads the SSE stream, and
//! returns a [`RequestRecord`] whatever happens. Measurement code never prints.
//!
//! Every event is timestamped when its bytes come out of the socket, before it is parsed; several
//! events in one read share that read's timestamp. Tokens are counted after the stream ends (one
//! encoding of the whole text), so tokenization never sits between a read and its timestamp.

use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokenperf_core::openai::{ErrorObject, StreamEvent};
use tokenperf_core::record::{Event, GroundTruth, Outcome, RequestRecord, ServerChunk, TokenCount};
use tokenperf_core::tokenizer::TokenCounter;

use tokio::sync::watch;

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
}

impl ClientConfig {
    pub fn url(&self) -> String {
        let base = self.api_base.trim_end_matches('/');
        match self.endpoint {
            Endpoint::Chat => format!("{base}/chat/completions"),
            Endpoint::Completions => format!("{base}/completions"),
        }
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
        if self.request_usage {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        for (k, v) in &self.additional_params {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

/// Builds the HTTP client. reqwest is built without a default TLS provider (to avoid compiling
/// aws-lc); ring is installed once here, before any client exists.
pub fn http_client(pool_size: usize) -> reqwest::Result<reqwest::Client> {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool_size)
        .tcp_nodelay(true)
        .build()
}

/// Run-wide measurement context: the clock's zero and the tokenizer.
pub struct Context {
    pub config: ClientConfig,
    pub http: reqwest::Client,
    pub run_start: Instant,
    /// `run_start` on CLOCK_MONOTONIC, to place events on the clock ground truth uses.
    pub run_start_mono_us: u64,
    pub tokenizer: Arc<TokenCounter>,
    /// Requests sent and not yet finished (sampled for the Little's-law check).
    pub in_flight: Arc<std::sync::atomic::AtomicI64>,
    /// Where token counting runs, off the measuring threads.
    pub finisher: Arc<tokenperf_core::background::Background>,
}

impl Context {
    /// Microseconds since the run start.
    pub fn now_us(&self) -> u64 {
        self.run_start.elapsed().as_micros() as u64
    }
}

/// What the stream reader collected; turned into a record once the stream is over.
struct Collected {
    events: Vec<Event>,
    /// Byte length of the content each event carried (0 for none), parallel to `events`.
    piece_lens: Vec<usize>,
    text: String,
    usage: Option<tokenperf_core::openai::Usage>,
    finish_reason: Option<String>,
    done: bool,
    /// Ground truth chunks (event index, due, sent, tokens) and the server's arrival time.
    truth: Vec<ServerChunk>,
    arrival_mono_us: Option<u64>,
}

/// Sends one request and measures it. `intended_us` is when it should have been sent. When `cut`
/// turns true mid-request, the request ends as `cancelled` and keeps what it had measured.
pub async fn measure(
    ctx: &Context,
    id: u64,
    intended_us: u64,
    spec: &PromptSpec,
    cut: &mut watch::Receiver<bool>,
) -> Unfinished {
    let mut rec = RequestRecord::new(id, intended_us);
    rec.max_tokens = Some(spec.max_tokens);
    let body = ctx.config.body(spec);
    let mut c = Collected {
        events: Vec::with_capacity(spec.max_tokens as usize + 4),
        piece_lens: Vec::with_capacity(spec.max_tokens as usize + 4),
        text: String::new(),
        usage: None,
        finish_reason: None,
        done: false,
        truth: Vec::new(),
        arrival_mono_us: None,
    };
    let outcome = {
        let total = ctx.config.total_timeout;
        let fut = exchange(ctx, &mut rec, &body, &mut c);
        let timed = async move {
            match total {
                Some(t) => {
                    tokio::time::timeout(t, fut)
                        .await
                        .unwrap_or_else(|_| Outcome::Timeout {
                            message: format!("request exceeded the total timeout of {t:?}"),
                        })
                }
                None => fut.await,
            }
        };
        tokio::select! {
            o = timed => o,
            _ = cut.wait_for(|c| *c) => Outcome::Cancelled {
                message: "run interrupted while the request was in flight".into(),
            },
        }
    };
    if rec.done_at_us.is_none() {
        rec.done_at_us = Some(ctx.now_us());
    }
    rec.outcome = outcome;
    if rec.sent_at_us.is_some() {
        ctx.in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    Unfinished {
        rec,
        c,
        prompt_tokens: spec.prompt_tokens,
        tokenizer: ctx.tokenizer.clone(),
        run_start_mono_us: ctx.run_start_mono_us,
    }
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

    /// Finishes on the run's background threads and sends the record to `tx` from there, so the
    /// caller can send its next request at once.
    pub fn finish_and_send(
        self,
        ctx: &Context,
        tx: &tokio::sync::mpsc::UnboundedSender<RequestRecord>,
    ) {
        let tx = tx.clone();
        ctx.finisher.submit(move || {
            let _ = tx.send(self.finish());
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
        vec![0; c.piece_lens.len()]
    } else {
        attribute_by_start(tokenizer, &c.text, &c.piece_lens)
    };
    let total: u64 = counts.iter().map(|&n| u64::from(n)).sum();
    rec.events = c
        .events
        .iter()
        .zip(&counts)
        .map(|(e, &n)| Event(e.0, n))
        .collect();
    let server_out = c.usage.map(|u| u.completion_tokens);
    let server_in = c.usage.map(|u| u.prompt_tokens).filter(|&n| n > 0);
    rec.output_tokens = TokenCount::new(server_out, Some(total));
    rec.input_tokens = TokenCount::new(server_in, Some(prompt_tokens));
    rec.finish_reason = c.finish_reason;
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
fn attribute_by_start(t: &TokenCounter, text: &str, pieces: &[usize]) -> Vec<u32> {
    let mut out = vec![0u32; pieces.len()];
    let Ok(enc) = t.inner().encode(text, false) else {
        return out;
    };
    let mut piece = 0usize;
    let mut piece_end = pieces.first().copied().unwrap_or(0);
    for (start, _) in enc.get_offsets() {
        while piece + 1 < pieces.len() && *start >= piece_end {
            piece += 1;
            piece_end += pieces[piece];
        }
        if let Some(slot) = out.get_mut(piece) {
            *slot += 1;
        }
    }
    out
}

fn classify(e: &reqwest::Error, what: &str) -> Outcome {
    let message = format!("{what}: {}", error_chain(e));
    if e.is_timeout() {
        Outcome::Timeout { message }
    } else if e.is_connect() || e.is_request() {
        Outcome::Connect { message }
    } else {
        Outcome::Stream { message }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn exchange(
    ctx: &Context,
    rec: &mut RequestRecord,
    body: &Value,
    c: &mut Collected,
) -> Outcome {
    let mut req = ctx
        .http
        .post(ctx.config.url())
        .bearer_auth(&ctx.config.api_key)
        .json(body);
    if ctx.config.ground_truth {
        req = req.header("x-tokenperf-ground-truth", "1");
    }
    rec.sent_at_us = Some(ctx.now_us());
    ctx.in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let resp = match tokio::time::timeout(ctx.config.idle_timeout, req.send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return classify(&e, "sending the request"),
        Err(_) => {
            return Outcome::Timeout {
                message: format!("no response head within {:?}", ctx.config.idle_timeout),
            };
        }
    };
    rec.response_head_at_us = Some(ctx.now_us());
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        rec.done_at_us = Some(ctx.now_us());
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").map(ErrorObject::from_value))
            .map_or_else(|| text.chars().take(500).collect(), |e| e.message);
        return Outcome::HttpStatus {
            status: status.as_u16(),
            message,
        };
    }
    let mut stream = resp.bytes_stream();
    let mut parser = SseParser::new();
    let mut failure: Option<Outcome> = None;
    // One idle timer for the whole stream, moved forward only when it fires early: a fresh timeout
    // per read would insert and remove a timer-wheel entry for every event.
    let idle = ctx.config.idle_timeout;
    let idle_us = idle.as_micros() as u64;
    let mut last_at = ctx.now_us();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        let next = tokio::select! {
            biased;
            n = stream.next() => n,
            () = &mut idle_timer => {
                let now = ctx.now_us();
                let quiet = now.saturating_sub(last_at);
                if quiet < idle_us {
                    let left = Duration::from_micros(idle_us - quiet);
                    idle_timer.as_mut().reset(tokio::time::Instant::now() + left);
                    continue;
                }
                rec.done_at_us = Some(now);
                return Outcome::Timeout {
                    message: format!(
                        "no data for {idle:?} (idle timeout) after {} events",
                        c.events.len()
                    ),
                };
            }
        };
        let at = ctx.now_us();
        last_at = at;
        let chunk = match next {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                rec.done_at_us = Some(at);
                return classify(&e, "reading the stream");
            }
            None => {
                parser.finish(&mut |d| on_data(d, at, c, &mut failure));
                break;
            }
        };
        parser.feed(&chunk, &mut |d| on_data(d, at, c, &mut failure));
        if failure.is_some() || c.done {
            rec.done_at_us = Some(at);
            break;
        }
    }
    if rec.done_at_us.is_none() {
        rec.done_at_us = Some(ctx.now_us());
    }
    if let Some(f) = failure {
        return f;
    }
    if c.done || c.finish_reason.is_some() {
        // Read the rest (normally just the end of the chunked body) so the connection can be reused.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while stream.next().await.is_some() {}
        })
        .await;
        Outcome::Ok
    } else {
        Outcome::Truncated {
            message: format!(
                "stream closed after {} events without [DONE] or a finish reason",
                c.events.len()
            ),
        }
    }
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
    let ev: StreamEvent = match serde_json::from_slice(data) {
        Ok(ev) => ev,
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
        *failure = Some(Outcome::ServerError {
            code: e.code,
            message: e.message,
        });
        return;
    }
    let content = ev.content();
    let len = content.map_or(0, str::len);
    if let Some(text) = content {
        c.text.push_str(text);
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
    c.events.push(Event(at, 0));
    c.piece_lens.push(len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_attributed_to_the_piece_where_they_start() {
        let t = TokenCounter::project();
        let pieces = ["", " the", " harb", "or", "", " tide"];
        let text: String = pieces.concat();
        let lens: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
        let counts = attribute_by_start(&t, &text, &lens);
        assert_eq!(counts[0], 0, "an empty piece carries no token");
        assert!(counts[1] >= 1 && counts[2] >= 1 && counts[5] >= 1);
        assert_eq!(counts[4], 0);
        assert_eq!(
            counts.iter().sum::<u32>() as usize,
            t.count(&text, false).unwrap()
        );
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
        };
        assert_eq!(cfg.url(), "http://x/v1/chat/completions");
        let b = cfg.body(&PromptSpec {
            prompt: "hi".into(),
            messages: None,
            prompt_tokens: 1,
            max_tokens: 100,
        });
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["temperature"], 0.0);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["messages"][1]["content"], "hi");
    }
}
