//! mock-server: an OpenAI-compatible streaming server that simulates an LLM with precise token timing.
//!
//! Its first job is to validate benchmark harnesses: told "50 ms to first token, then 5 ms per token",
//! it emits exactly that, on absolute deadlines (see [`pacer`]), so a client's measurement error can be
//! read off directly.
//!
//! # Layout
//! * [`cli`]: flags, presets and config files, folded into a validated [`Config`].
//! * [`api`]: request parsing, authentication, OpenAI-shaped errors, `/metrics`.
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
pub mod metrics;
pub mod pacer;
pub mod replay;
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
    /// Until when a prefill holds back decoding (with `prefill_stalls_decode`).
    pub prefill_busy_until: std::sync::Mutex<Instant>,
    gt_log: Option<GroundTruthLog>,
}

impl State {
    /// Builds the state with the given tokenizer (the project's own by default). Starts the pacer
    /// task, so it must be called inside the tokio runtime that will serve the requests.
    pub fn new(config: Config, tokenizer: TokenCounter) -> anyhow::Result<Arc<Self>> {
        Self::with_pacer(config, tokenizer, Pacer::new())
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
        Ok(Arc::new(Self {
            admission: Admission::new(config.max_num_seqs, config.max_waiting),
            config,
            tokenizer,
            vocabulary,
            pacer,
            metrics: Metrics::default(),
            clock: MonoAnchor::now(),
            prefill_busy_until: std::sync::Mutex::new(Instant::now()),
            gt_log,
        }))
    }

    /// Queues one ground-truth log line (no-op without `--ground-truth-log`).
    pub fn log_ground_truth(&self, line: String) {
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

/// The HTTP routes.
pub fn app(state: Arc<State>) -> Router {
    let limit = state.config.body_limit as usize;
    Router::new()
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/completions", post(api::completions))
        .route("/v1/models", get(api::models))
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` completes, with at most `max_connections` open.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limited = listener::LimitedListener::new(listener, state.config.max_connections);
    axum::serve(limited, app(state))
        .with_graceful_shutdown(shutdown)
        .await
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
    let listener = TcpListener::bind("127.0.0.1:0").await?;
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
