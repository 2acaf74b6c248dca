//! mock-server: an OpenAI-compatible streaming server that simulates an LLM with precise token timing.
//!
//! Its first job is to validate benchmark harnesses: told "50 ms to first token, then 5 ms per token",
//! it emits exactly that, on absolute deadlines (see [`pacer`]), so a client's measurement error can be
//! read off directly.
//!
//! # Layout
//! * [`cli`]: flags, presets and config files, folded into a validated [`Config`].
//! * [`api`]: the handlers: authentication, faults, admission, `/models`, `/metrics`, middleware.
//! * [`request`]: request validation and OpenAI-shaped errors (shared by `api` and `stream`).
//! * [`admission`]: continuous batching: running slots and the bounded waiting queue.
//! * [`stream`]: the response: token schedule, faults, SSE and JSON bodies.
//! * [`pacer`]: the sub-millisecond deadline timer.
//! * [`dist`], [`faults`], [`replay`]: what the timing and failures are drawn from.
//! * [`metrics`], [`gtlog`]: what the server reports about itself.
//! * [`words`]: output words that are single tokens of the server's tokenizer.
//!
//! Tests start the server with [`serve`] on a listener bound to port 0.

pub mod admission;
pub mod api;
pub mod cli;
pub mod dist;
pub mod faults;
pub mod gtlog;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod pacer;
pub mod prefix_cache;
pub mod replay;
pub mod request;
pub mod stream;
pub mod words;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokenperf_core::clock::MonoAnchor;
use tokenperf_core::tokenizer::TokenCounter;
use tokio::net::TcpListener;

use crate::admission::Admission;
use crate::gtlog::GroundTruthLog;
use crate::metrics::Metrics;
use crate::pacer::Pacer;
use crate::replay::Profile;
use crate::words::Vocabulary;

/// The validated configuration: the [`Settings`] as given (read through `Deref`), and what was
/// loaded from them. Built only by [`Config::from_settings`], so code, flags and files are checked
/// alike.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    /// The recorded timing of `--replay`.
    pub replay: Option<Arc<Profile>>,
}

impl std::ops::Deref for Config {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.settings
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::from_settings(&Settings::default()).expect("default settings are valid")
    }
}

/// A prompt's token count, and how many of its tokens the prefix cache served (when there is one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptTokens {
    pub count: u64,
    pub cached: Option<u64>,
}

impl PromptTokens {
    /// Tokens that must be prefilled.
    pub fn to_prefill(&self) -> u64 {
        self.count - self.cached.unwrap_or(0).min(self.count)
    }
}

/// A prompt's token count: counted already, or being counted on a blocking thread.
pub enum Counting {
    Done(PromptTokens),
    Blocking(tokio::task::JoinHandle<PromptTokens>),
}

impl Counting {
    /// Prompts up to this long are counted on the worker: that costs less than the hop to a blocking
    /// thread and back (a wake-up and a context switch, on the same core when the server is pinned).
    const INLINE_BYTES: usize = 512;

    /// Counts `prompt`'s tokens. A long prompt takes a while (in a debug build above all), so it is
    /// counted off the async workers, where it cannot delay other streams' writes, and overlaps
    /// the prefill, as in a real server.
    pub fn start(state: &Arc<State>, prompt: &str) -> Self {
        if prompt.len() <= Self::INLINE_BYTES {
            return Self::Done(state.prompt_tokens(prompt));
        }
        let (state, prompt) = (state.clone(), prompt.to_owned());
        Self::Blocking(tokio::task::spawn_blocking(move || {
            state.prompt_tokens(&prompt)
        }))
    }

    pub async fn get(self) -> PromptTokens {
        match self {
            Self::Done(p) => p,
            Self::Blocking(h) => h.await.unwrap_or_default(),
        }
    }
}

/// Shared server state.
pub struct State {
    pub config: Config,
    pub tokenizer: TokenCounter,
    pub vocabulary: Vocabulary,
    pub pacer: Pacer,
    pub metrics: Metrics,
    pub admission: Admission,
    /// Maps instants to CLOCK_MONOTONIC µs for ground truth.
    pub clock: MonoAnchor,
    /// `--prefix-cache-blocks`, when on.
    pub prefix_cache: Option<prefix_cache::PrefixCache>,
    /// Until when a prefill holds back decoding (with `prefill_stalls_decode`).
    pub prefill_busy_until: std::sync::Mutex<Instant>,
    gt_log: Option<GroundTruthLog>,
    /// Requests this server has taken: each one's random stream is drawn from its number. Per
    /// server, not per process, so that servers sharing a process (tests) do not shift each
    /// other's faults and timings.
    requests: std::sync::atomic::AtomicU64,
}

impl State {
    /// Builds the state with the given tokenizer (the project's own by default). Starts the pacer
    /// task, so it must be called inside the tokio runtime that will serve the requests.
    pub fn new(config: Config, tokenizer: TokenCounter) -> anyhow::Result<Arc<Self>> {
        let pacer = Pacer::with_shards(config.pacer_shards as usize);
        Self::with_pacer(config, tokenizer, pacer)
    }

    /// Builds the state with a given pacer ([`Pacer::fake`] in schedule tests).
    pub fn with_pacer(
        config: Config,
        tokenizer: TokenCounter,
        pacer: Pacer,
    ) -> anyhow::Result<Arc<Self>> {
        let vocabulary = Vocabulary::from_tokenizer(&tokenizer).map_err(anyhow::Error::msg)?;
        let gt_log = match &config.ground_truth_log {
            Some(p) => Some(GroundTruthLog::create(p)?),
            None => None,
        };
        // vLLM labels every series with the model it serves and sizes token buckets to its length.
        let metrics = Metrics::new(
            config.model.first().map_or("mock", String::as_str),
            if config.max_context > 0 {
                config.max_context
            } else {
                config.max_tokens_limit
            },
        );
        let prefix_cache = (config.prefix_cache_blocks > 0)
            .then(|| prefix_cache::PrefixCache::new(config.prefix_cache_blocks as usize));
        Ok(Arc::new(Self {
            prefix_cache,
            admission: Admission::new(config.max_num_seqs, config.max_waiting),
            config,
            tokenizer,
            vocabulary,
            pacer,
            metrics,
            clock: MonoAnchor::now(),
            prefill_busy_until: std::sync::Mutex::new(Instant::now()),
            gt_log,
            requests: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The next request's random stream: the server seed and the request's arrival number.
    pub fn next_request_rng(&self) -> tokenperf_core::rng::Rng {
        let n = self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        stream::request_rng(self.config.seed, n)
    }

    /// Counts a prompt's tokens (special tokens included) and, with a prefix cache, how many of
    /// them it served. CPU-bound: call it off the async workers.
    pub fn prompt_tokens(&self, prompt: &str) -> PromptTokens {
        match &self.prefix_cache {
            None => PromptTokens {
                count: self.tokenizer.count(prompt, true).map_or(0, |n| n as u64),
                cached: None,
            },
            Some(cache) => {
                let ids = self.tokenizer.encode(prompt, true).unwrap_or_default();
                let cached = cache.lookup_and_insert(&ids);
                self.metrics.prefix_cache(ids.len() as u64, cached);
                PromptTokens {
                    count: ids.len() as u64,
                    cached: Some(cached),
                }
            }
        }
    }

    /// Whether there is a ground-truth log (`--ground-truth-log`): without one, no line is built.
    pub fn logs_ground_truth(&self) -> bool {
        self.gt_log.is_some()
    }

    /// Queues one ground-truth log line (no-op without `--ground-truth-log`).
    pub fn log_ground_truth(&self, line: String) {
        debug_assert!(self.logs_ground_truth(), "a line built for no log");
        if let Some(l) = &self.gt_log {
            l.send(line);
        }
    }

    /// Waits until every queued ground-truth line is on disk.
    pub async fn flush_ground_truth_log(&self) {
        if let Some(l) = &self.gt_log {
            l.flush().await;
        }
    }
}

/// The HTTP routes. Unknown paths and methods answer in OpenAI's error shape like everything else;
/// every response carries an `x-request-id` (the client's, else a new one); request bodies are read
/// under the body limit and timeout before any handler sees them.
pub fn app(state: Arc<State>) -> Router {
    let limit = state.config.body_limit as usize;
    Router::new()
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/completions", post(api::completions))
        .route("/v1/models", get(api::models))
        .route("/v1/models/{id}", get(api::model))
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::read_body_in_time,
        ))
        .layer(axum::middleware::from_fn(api::request_id))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// `--busy-poll`: a task that only yields keeps its worker from parking, and tokio polls the sockets
/// before it polls a yielded task again, so readable sockets are seen at once.
async fn spin() {
    loop {
        tokio::task::yield_now().await;
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish their
/// responses. Each connection runs hyper's HTTP/1.1 with a timer, so a client that is slow to send a
/// request head, or idle between requests, is cut off after `--header-timeout-s`; at most
/// [`listener::connection_limit`] connections are open, and the rest wait in the listen backlog.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower::ServiceExt;
    let router = app(state.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(listener::connection_limit(
        state.config.max_connections,
    )));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs_f64(
            state.config.header_timeout_s,
        ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    // Open connections; when the last one closes, the server is idle and gives memory back.
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let idle = Arc::new(tokio::sync::Notify::new());
    let trimmer = tokio::spawn(memory::trim_when_idle(open.clone(), idle.clone()));
    let spinner = state.config.busy_poll.then(|| tokio::spawn(spin()));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                // Out of descriptors and the like: wait instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Tokens are small writes that must leave at once.
        let _ = tcp.set_nodelay(true);
        let (io, handle) = listener::ConnIo::new(tcp, slot, state.metrics.socket_writes.clone());
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(handle.clone());
            router.clone().oneshot(req)
        });
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let mut stop = stop_rx.clone();
        let (open, idle) = (open.clone(), idle.clone());
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        connections.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // The flag only ever goes from false to true: any change is the stop.
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            if open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 1 {
                idle.notify_one();
            }
        });
        // Reap finished connections as we go, so a long run holds only the open ones.
        while connections.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    trimmer.abort();
    if let Some(s) = spinner {
        s.abort();
    }
    Ok(())
}

/// A server running in this process on a loopback port, for tests and the quick start.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The OpenAI base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stops accepting and waits for the server task.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Starts the server with `settings` (validated) on 127.0.0.1 and an OS-chosen port.
pub async fn spawn(settings: Settings) -> anyhow::Result<Running> {
    let state = State::new(Config::from_settings(&settings)?, TokenCounter::project())?;
    let listener = listener::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        settings.listen_backlog,
    )?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    Ok(Running {
        addr,
        stop: Some(tx),
        task,
    })
}

pub use cli::{Args, Settings, run};
