//! mock-server: an OpenAI-compatible streaming server that simulates an LLM with precise token timing.
//!
//! Its first job is to validate benchmark harnesses: told "50 ms to first token, then 5 ms per token",
//! it emits exactly that, on absolute deadlines (see [`pacer`]), so a client's measurement error can be
//! read off directly.
//!
//! # Layout
//! * [`cli`]: command-line flags, folded into a validated [`Config`].
//! * [`api`]: request parsing and OpenAI-shaped errors.
//! * [`stream`]: the response: token schedule and SSE/JSON bodies.
//! * [`pacer`]: the sub-millisecond deadline timer.
//! * [`words`]: output words that are single tokens of the server's tokenizer.
//!
//! Tests start the server with [`serve`] on a listener bound to port 0.

pub mod api;
pub mod cli;
pub mod pacer;
pub mod stream;
pub mod words;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokenperf_core::tokenizer::TokenCounter;
use tokio::net::TcpListener;

use crate::pacer::Pacer;
use crate::words::Vocabulary;

/// Everything the server needs to know, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time from request arrival to the first token.
    pub ttft: Duration,
    /// Time between consecutive tokens.
    pub itl: Duration,
    /// Tokens streamed when the request gives no `max_tokens`.
    pub default_max_tokens: u64,
    /// Model names served; empty means any name is accepted and echoed back.
    pub models: Vec<String>,
    /// Request body limit in bytes.
    pub body_limit: usize,
    /// Seed for the output words.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ttft: Duration::from_millis(50),
            itl: Duration::from_millis(5),
            default_max_tokens: 16,
            models: Vec::new(),
            body_limit: 4 << 20,
            seed: 0,
        }
    }
}

/// Shared, read-only server state.
pub struct State {
    pub config: Config,
    pub tokenizer: TokenCounter,
    pub vocabulary: Vocabulary,
    pub pacer: Pacer,
}

impl State {
    /// Builds the state with the given tokenizer (the project's own by default).
    pub fn new(config: Config, tokenizer: TokenCounter) -> anyhow::Result<Arc<Self>> {
        let vocabulary = Vocabulary::from_tokenizer(&tokenizer).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(Self {
            config,
            tokenizer,
            vocabulary,
            pacer: Pacer::new(),
        }))
    }
}

/// The HTTP routes.
pub fn app(state: Arc<State>) -> Router {
    let limit = state.config.body_limit;
    Router::new()
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/completions", post(api::completions))
        .route("/v1/models", get(api::models))
        .route("/health", get(api::health))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
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

/// Starts the server on 127.0.0.1 and an OS-chosen port.
pub async fn spawn(config: Config) -> anyhow::Result<Running> {
    let state = State::new(config, TokenCounter::project())?;
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

pub use cli::{Args, run};
