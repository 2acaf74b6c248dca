//! Command line and configuration of `mock-server`: every setting has a default, can come from a preset,
//! a TOML config file (same names as the flags, e.g. `itl-ms = 5`), or a flag, in that order of
//! precedence (flags win). [`Args::config`] folds them into one validated [`Config`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use tokenperf_core::tokenizer::TokenCounter;
use tokio::net::TcpListener;

use crate::dist::{Dist, Jitter};
use crate::faults::Fault;
use crate::{Config, State};

/// Every setting, with its default. Field names are the flag names (kebab-case in TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub ttft_ms: f64,
    pub prefill_per_token_ms: f64,
    pub itl_ms: f64,
    pub itl_load_factor: f64,
    pub ttft_jitter: Jitter,
    pub itl_jitter: Jitter,
    pub max_num_seqs: usize,
    pub max_waiting: usize,
    pub prefill_stalls_decode: bool,
    pub default_max_tokens: u64,
    pub output_len: Option<Dist>,
    pub tokens_per_chunk: Dist,
    pub model: Vec<String>,
    pub tokenizer: Option<PathBuf>,
    pub api_key: Option<String>,
    pub seed: u64,
    pub body_limit: usize,
    pub max_connections: usize,
    pub max_context: u64,
    pub fault_rate: f64,
    pub fault: Vec<Fault>,
    pub ground_truth: bool,
    pub ground_truth_log: Option<PathBuf>,
    pub replay: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 5543,
            ttft_ms: 50.0,
            prefill_per_token_ms: 0.0,
            itl_ms: 5.0,
            itl_load_factor: 0.0,
            ttft_jitter: Jitter::None,
            itl_jitter: Jitter::None,
            max_num_seqs: 0,
            max_waiting: 1000,
            prefill_stalls_decode: false,
            default_max_tokens: 16,
            output_len: None,
            tokens_per_chunk: Dist::Fixed(1),
            model: Vec::new(),
            tokenizer: None,
            api_key: None,
            seed: 0,
            body_limit: 4 << 20,
            max_connections: 0,
            max_context: 0,
            fault_rate: 0.0,
            fault: Vec::new(),
            ground_truth: false,
            ground_truth_log: None,
            replay: None,
        }
    }
}

/// Server profiles tuned to the seed document's DeepSparse runs (see README, "Presets").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// TinyStories-1M on DeepSparse, one stream: TTFT median ~77 ms with a long right tail, ~5.8 ms
    /// per token.
    Tinystories1m,
    /// MiniChat-1.5-3B pruned50-quant on DeepSparse with continuous batch size 4: ~67 ms per decode
    /// step with 4 sequences running, plus prefill stalls: ~12.7 tokens/s per stream.
    Minichat3bBatch4,
}

impl Preset {
    pub fn apply(self, s: &mut Settings) {
        match self {
            Preset::Tinystories1m => {
                s.ttft_ms = 97.0;
                s.ttft_jitter = Jitter::LogNormal(0.77);
                s.itl_ms = 5.8;
                s.itl_jitter = Jitter::Normal(0.15);
                s.max_num_seqs = 1;
            }
            Preset::Minichat3bBatch4 => {
                s.ttft_ms = 250.0;
                s.prefill_per_token_ms = 5.0;
                s.ttft_jitter = Jitter::LogNormal(0.2);
                // 34 ms × (1 + 0.325 × 3) ≈ 67 ms per step with 4 running; with the prefill stalls,
                // 50 requests of 200±50 tokens at concurrency 4 come out near the seed's 50.7 tok/s.
                s.itl_ms = 34.0;
                s.itl_load_factor = 0.325;
                s.itl_jitter = Jitter::Normal(0.1);
                s.max_num_seqs = 4;
                s.prefill_stalls_decode = true;
            }
        }
    }
}

/// An OpenAI-compatible streaming server that simulates an LLM with precise token timing.
///
/// The simplest use: `mock-server --port 8000 --ttft-ms 50 --itl-ms 5` (fixed timing, no jitter,
/// `max_tokens` tokens per request). Exit codes: 0 clean shutdown, 2 error.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "mock-server", version)]
pub struct Args {
    /// TOML file with any of the settings below (same names, e.g. `itl-ms = 5`); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start from a profile of one of the seed document's servers; other settings override it.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Address to bind [default: localhost, which binds both 127.0.0.1 and ::1].
    #[arg(long)]
    pub host: Option<String>,
    /// Port [default: 5543, the DeepSparse server's]; 0 lets the OS choose (the URL is printed).
    #[arg(long)]
    pub port: Option<u16>,
    /// Fixed part of the time to first token, ms [default: 50].
    #[arg(long, allow_negative_numbers = true)]
    pub ttft_ms: Option<f64>,
    /// Prefill cost per prompt token, ms, added to the TTFT [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub prefill_per_token_ms: Option<f64>,
    /// Time between tokens with one sequence running, ms [default: 5].
    #[arg(long, allow_negative_numbers = true)]
    pub itl_ms: Option<f64>,
    /// Decode slowdown per extra running sequence: step = itl × (1 + factor × (running − 1)) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub itl_load_factor: Option<f64>,
    /// TTFT jitter: none, normal:CV, lognormal:CV or exponential [default: none].
    #[arg(long)]
    pub ttft_jitter: Option<Jitter>,
    /// Per-token jitter: none, normal:CV, lognormal:CV or exponential [default: none].
    #[arg(long)]
    pub itl_jitter: Option<Jitter>,
    /// Most sequences running at once (continuous batching); more wait in a queue. 0: no limit [default: 0].
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    /// Most requests waiting for a running slot; beyond it, 429 [default: 1000].
    #[arg(long)]
    pub max_waiting: Option<usize>,
    /// A new request's prefill stalls the running sequences' decoding, as real servers do.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub prefill_stalls_decode: Option<bool>,
    /// Output tokens when a request gives no max_tokens [default: 16].
    #[arg(long)]
    pub default_max_tokens: Option<u64>,
    /// Output length distribution (capped by max_tokens, raised to min_tokens) for requests without
    /// ignore_eos, e.g. normal:100,30. Default: always max_tokens.
    #[arg(long)]
    pub output_len: Option<Dist>,
    /// Tokens per streamed chunk: a number or a distribution such as uniform:1,4 [default: 1].
    #[arg(long)]
    pub tokens_per_chunk: Option<Dist>,
    /// Model name to serve (repeatable); unknown names get 404. Default: any name is accepted.
    #[arg(long)]
    pub model: Vec<String>,
    /// tokenizer.json (or a folder with one) to count tokens with [default: the project's own].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Require this key as `Authorization: Bearer KEY` (401 otherwise).
    #[arg(long, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seed for output text, lengths, jitter and rate-based faults [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Request body limit in bytes; larger bodies get 413 [default: 4 MiB].
    #[arg(long)]
    pub body_limit: Option<usize>,
    /// Most connections open at once; more wait in the accept queue until one closes. 0: no limit.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Context length: prompt + max_tokens above it gets a 400 context-length error. 0: no limit.
    #[arg(long)]
    pub max_context: Option<u64>,
    /// Fraction of requests (0–1) that get one of the --fault kinds, chosen with the seed.
    #[arg(long, allow_negative_numbers = true)]
    pub fault_rate: Option<f64>,
    /// Fault kinds for --fault-rate (repeatable): status=CODE, error-after=K, drop-after=K,
    /// malformed-after=K, stall=SECS@K, slow-first-byte=SECS. Tests pick per request with the
    /// `x-mock-fault` header instead.
    #[arg(long)]
    pub fault: Vec<Fault>,
    /// Put ground truth (due and actual send time) in every chunk, for every request. Per request:
    /// the `x-tokenperf-ground-truth: 1` header.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ground_truth: Option<bool>,
    /// Write one JSON line per request with every chunk's due time, send time and token count.
    #[arg(long)]
    pub ground_truth_log: Option<PathBuf>,
    /// Serve the timing recorded in a run's records (a *_requests.jsonl or LLMPerf
    /// *_individual_responses.json): each request takes a recorded TTFT and gap sequence.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// Log level on stderr: error, warn (quiet: only problems), info (start-up, shutdown), debug (every
    /// request), trace.
    #[arg(long, value_enum, default_value = "warn")]
    pub log_level: LogLevel,
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogLevel {
    Error,
    #[default]
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn filter(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// Reads a config file: the settings it holds, and which keys it set.
fn read_config(path: &Path) -> anyhow::Result<(Settings, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file '{}' (--config)", path.display()))?;
    let settings: Settings =
        toml::from_str(&text).with_context(|| format!("config file '{}'", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("config file '{}'", path.display()))?;
    Ok((settings, table.keys().cloned().collect()))
}

fn millis(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{name} must be a non-negative number of milliseconds, got {v}");
    }
    Ok(Duration::from_secs_f64(v / 1e3))
}

macro_rules! override_fields {
    ($s:ident, $a:ident; $($f:ident),* $(,)?) => {
        $( if let Some(v) = &$a.$f { $s.$f = v.clone(); } )*
    };
}

impl Args {
    /// Defaults, then the preset, then the config file, then flags.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings::default();
        if let Some(p) = self.preset {
            p.apply(&mut s);
        }
        if let Some(path) = &self.config {
            // Only the keys the file sets override the preset; the rest of `file` is defaults.
            let (file, keys) = read_config(path)?;
            let from_file = serde_json::to_value(&file)?;
            let mut merged = serde_json::to_value(&s)?;
            for key in keys {
                merged[&key] = from_file[&key].clone();
            }
            s = serde_json::from_value(merged)?;
        }
        override_fields!(s, self;
            host, port, ttft_ms, prefill_per_token_ms, itl_ms, itl_load_factor, ttft_jitter,
            itl_jitter, max_num_seqs, max_waiting, prefill_stalls_decode, default_max_tokens,
            tokens_per_chunk, seed, body_limit, max_connections, max_context, fault_rate, ground_truth);
        if self.output_len.is_some() {
            s.output_len = self.output_len;
        }
        if self.api_key.is_some() {
            s.api_key = self.api_key.clone();
        }
        if self.tokenizer.is_some() {
            s.tokenizer = self.tokenizer.clone();
        }
        if self.ground_truth_log.is_some() {
            s.ground_truth_log = self.ground_truth_log.clone();
        }
        if self.replay.is_some() {
            s.replay = self.replay.clone();
        }
        if !self.model.is_empty() {
            s.model = self.model.clone();
        }
        if !self.fault.is_empty() {
            s.fault = self.fault.clone();
        }
        Ok(s)
    }

    /// The validated configuration.
    pub fn config(&self) -> anyhow::Result<Config> {
        Config::from_settings(&self.settings()?)
    }
}

impl Config {
    /// Validates settings into a runtime configuration (reads the replay file, if any).
    pub fn from_settings(s: &Settings) -> anyhow::Result<Config> {
        if s.itl_load_factor < 0.0 || !s.itl_load_factor.is_finite() {
            bail!("--itl-load-factor must be ≥ 0, got {}", s.itl_load_factor);
        }
        if !(0.0..=1.0).contains(&s.fault_rate) {
            bail!("--fault-rate must be between 0 and 1, got {}", s.fault_rate);
        }
        if s.fault_rate > 0.0 && s.fault.is_empty() {
            bail!("--fault-rate needs at least one --fault kind to inject");
        }
        if let Dist::Fixed(0) = s.tokens_per_chunk {
            bail!("--tokens-per-chunk must be at least 1");
        }
        let replay = match &s.replay {
            Some(p) => Some(std::sync::Arc::new(
                crate::replay::Profile::load(p)
                    .with_context(|| format!("--replay '{}'", p.display()))?,
            )),
            None => None,
        };
        Ok(Config {
            ttft: millis("ttft-ms", s.ttft_ms)?,
            prefill_per_token: millis("prefill-per-token-ms", s.prefill_per_token_ms)?,
            itl: millis("itl-ms", s.itl_ms)?,
            itl_load_factor: s.itl_load_factor,
            ttft_jitter: s.ttft_jitter,
            itl_jitter: s.itl_jitter,
            max_num_seqs: s.max_num_seqs,
            max_waiting: s.max_waiting,
            prefill_stalls_decode: s.prefill_stalls_decode,
            default_max_tokens: s.default_max_tokens.max(1),
            output_len: s.output_len,
            tokens_per_chunk: s.tokens_per_chunk,
            models: s.model.clone(),
            api_key: s.api_key.clone(),
            body_limit: s.body_limit,
            max_connections: s.max_connections,
            max_context: s.max_context,
            seed: s.seed,
            fault_rate: s.fault_rate,
            faults: s.fault.clone(),
            ground_truth: s.ground_truth,
            ground_truth_log: s.ground_truth_log.clone(),
            replay,
        })
    }
}

fn bind_addrs(host: &str) -> anyhow::Result<Vec<IpAddr>> {
    if host == "localhost" {
        return Ok(vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
    }
    let ip: IpAddr = host
        .trim_matches(['[', ']'])
        .parse()
        .with_context(|| format!("--host '{host}' is not an IP address or localhost"))?;
    Ok(vec![ip])
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Runs the server until SIGINT/SIGTERM: stops accepting, gives open streams 5 s to finish, exits.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // Structured logs on stderr, quiet by default; a second init (tests) is not an error.
    let _ = tracing_subscriber::fmt()
        .with_max_level(args.log_level.filter())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    let settings = args.settings()?;
    let config = Config::from_settings(&settings)?;
    let tokenizer = match &settings.tokenizer {
        Some(p) => TokenCounter::from_path(p)?,
        None => TokenCounter::project(),
    };
    let state = State::new(config, tokenizer)?;
    let mut port = settings.port;
    let mut listeners = Vec::new();
    for (i, ip) in bind_addrs(&settings.host)?.iter().enumerate() {
        match TcpListener::bind(SocketAddr::new(*ip, port)).await {
            Ok(l) => {
                port = l.local_addr()?.port();
                listeners.push(l);
            }
            // ::1 may be missing (IPv6 disabled); the IPv4 listener is enough then.
            Err(e) if i > 0 => eprintln!("mock-server: not listening on {ip}: {e}"),
            Err(e) => return Err(e).with_context(|| format!("binding {ip}:{port}")),
        }
    }
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::new();
    for l in listeners {
        let mut rx = stop_tx.subscribe();
        tasks.push(tokio::spawn(crate::serve(l, state.clone(), async move {
            let _ = rx.recv().await;
        })));
    }
    let host = match settings.host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{}]", settings.host),
        _ => settings.host.clone(),
    };
    println!("mock-server listening on http://{host}:{port}/v1");
    tracing::info!(
        port,
        ttft_ms = settings.ttft_ms,
        itl_ms = settings.itl_ms,
        max_num_seqs = settings.max_num_seqs,
        ground_truth = settings.ground_truth,
        "serving"
    );
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; open streams get 5 s");
    let _ = stop_tx.send(());
    let grace = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(grace);
    for t in tasks {
        tokio::select! {
            r = t => { r.context("server task panicked")??; }
            _ = &mut grace => break,
        }
    }
    state.flush_ground_truth_log().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn simplest_use_parses() {
        let a = Args::parse_from([
            "mock-server",
            "--port",
            "8000",
            "--ttft-ms",
            "50",
            "--itl-ms",
            "5",
        ]);
        let s = a.settings().unwrap();
        let c = a.config().unwrap();
        assert_eq!(
            (s.port, c.ttft, c.itl),
            (8000, Duration::from_millis(50), Duration::from_millis(5))
        );
        assert_eq!(c.ttft_jitter, Jitter::None);
        assert_eq!(
            Args::parse_from(["mock-server"]).settings().unwrap().port,
            5543
        );
        let bad = Args::parse_from(["mock-server", "--itl-ms", "-1"])
            .config()
            .unwrap_err();
        assert!(bad.to_string().contains("--itl-ms"), "{bad}");
    }

    #[test]
    fn precedence_defaults_preset_file_flags() {
        let dir = std::env::temp_dir().join(format!("mock-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("mock.toml");
        std::fs::write(
            &f,
            "itl-ms = 7.5\nmax-num-seqs = 8\nfault = [\"status=503\"]\n",
        )
        .unwrap();
        let a = Args::parse_from([
            "mock-server",
            "--preset",
            "minichat3b-batch4",
            "--config",
            f.to_str().unwrap(),
            "--max-num-seqs",
            "2",
        ]);
        let s = a.settings().unwrap();
        assert_eq!(s.itl_ms, 7.5, "file over preset");
        assert_eq!(s.max_num_seqs, 2, "flag over file");
        assert_eq!(s.itl_load_factor, 0.325, "preset over default");
        assert_eq!(s.fault, vec![Fault::Status(503)]);
        std::fs::write(&f, "itl_ms = 7.5\n").unwrap();
        let e = format!(
            "{:#}",
            Args::parse_from(["mock-server", "--config", f.to_str().unwrap()])
                .settings()
                .unwrap_err()
        );
        assert!(e.contains("mock.toml") && e.contains("itl_ms"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_combinations_are_named() {
        let e = Args::parse_from(["mock-server", "--fault-rate", "0.5"])
            .config()
            .unwrap_err();
        assert!(e.to_string().contains("--fault"), "{e}");
        let e = Args::parse_from(["mock-server", "--tokens-per-chunk", "0"])
            .config()
            .unwrap_err();
        assert!(e.to_string().contains("--tokens-per-chunk"), "{e}");
        assert!(Args::try_parse_from(["mock-server", "--ttft-jitter", "wobbly"]).is_err());
    }
}
