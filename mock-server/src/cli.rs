//! Command line and configuration of `mock-server`. Every setting is defined once, in [`Settings`]: its
//! flag, its TOML key (the flag's name, e.g. `itl-ms = 5`), its default and its range. A setting's
//! value comes from its default, a preset, a config file, or a flag, in that order of precedence
//! (flags win); [`Args::settings`] folds them, and [`Config::from_settings`] validates the result
//! whichever way it was built (flags, file, or code).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use tokenperf_core::tokenizer::TokenCounter;

use crate::dist::{Dist, Jitter};
use crate::faults::Fault;
use crate::{Config, State};

/// Longest mock timing in milliseconds: an hour, far past any client's timeout.
pub const MAX_MS: f64 = 3_600_000.0;

/// A timing in milliseconds, from 0 to [`MAX_MS`].
fn millis(s: &str) -> Result<f64, String> {
    number(s, 0.0, MAX_MS, " ms")
}

/// A factor from 0 to 1000.
fn factor(s: &str) -> Result<f64, String> {
    number(s, 0.0, 1000.0, "")
}

/// A fraction from 0 to 1.
fn fraction(s: &str) -> Result<f64, String> {
    number(s, 0.0, 1.0, "")
}

/// A timeout in seconds, from 0.001 to a day.
fn timeout_secs(s: &str) -> Result<f64, String> {
    number(s, 0.001, 86_400.0, " seconds")
}

fn number(s: &str, lo: f64, hi: f64, unit: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number{unit}"))?;
    check(v, lo, hi, unit)
}

fn check(v: f64, lo: f64, hi: f64, unit: &str) -> Result<f64, String> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be from {lo} to {hi}{unit}, got {v}"))
    }
}

/// Every setting of the server, with its flag, TOML key, default and range. Field names are the
/// flag names (kebab-case in TOML and on the command line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Address to bind: localhost binds both 127.0.0.1 and ::1.
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// Port (the DeepSparse server's by default); 0 lets the OS choose (the URL is printed).
    #[arg(long, default_value_t = 5543)]
    pub port: u16,
    /// Fixed part of the time to first token, ms.
    #[arg(long, default_value_t = 50.0, value_parser = millis, allow_negative_numbers = true)]
    pub ttft_ms: f64,
    /// Prefill cost per prompt token, ms, added to the TTFT.
    #[arg(long, default_value_t = 0.0, value_parser = millis, allow_negative_numbers = true)]
    pub prefill_per_token_ms: f64,
    /// Time between tokens with one sequence running, ms.
    #[arg(long, default_value_t = 5.0, value_parser = millis, allow_negative_numbers = true)]
    pub itl_ms: f64,
    /// Decode slowdown per extra running sequence: step = itl × (1 + factor × (running − 1)).
    #[arg(long, default_value_t = 0.0, value_parser = factor, allow_negative_numbers = true)]
    pub itl_load_factor: f64,
    /// TTFT jitter: none, normal:CV, lognormal:CV or exponential.
    #[arg(long, default_value = "none")]
    pub ttft_jitter: Jitter,
    /// Per-token jitter: none, normal:CV, lognormal:CV or exponential.
    #[arg(long, default_value = "none")]
    pub itl_jitter: Jitter,
    /// Most sequences running at once (continuous batching); more wait in a queue. 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub max_num_seqs: usize,
    /// Most requests waiting for a running slot; beyond it, 429.
    #[arg(long, default_value_t = 1000)]
    pub max_waiting: usize,
    /// A new request's prefill stalls the running sequences' decoding, as real servers do.
    #[arg(long)]
    pub prefill_stalls_decode: bool,
    /// Output tokens when a request gives no max_tokens.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub default_max_tokens: u64,
    /// Largest max_tokens (and min_tokens) a request may ask for; above it, 400 naming the field.
    /// Nothing is allocated in proportion to it.
    #[arg(long, default_value_t = 131_072, value_parser = clap::value_parser!(u64).range(1..=(1 << 32)))]
    pub max_tokens_limit: u64,
    /// Output length distribution (capped by max_tokens, raised to min_tokens) for requests without
    /// ignore_eos, e.g. normal:100,30. Default: always max_tokens.
    #[arg(long)]
    pub output_len: Option<Dist>,
    /// Tokens per streamed chunk: a number or a distribution such as uniform:1,4.
    #[arg(long, default_value = "1")]
    pub tokens_per_chunk: Dist,
    /// Model name to serve (repeatable); unknown names get 404. Default: any name is accepted.
    #[arg(long)]
    pub model: Vec<String>,
    /// A Hugging Face tokenizer.json (or a folder with one) to count tokens with and to draw output
    /// words from. Default: the project's own. Byte-level BPE (GPT-2, LLaMA-3) and SentencePiece-style
    /// (LLaMA-2, Mistral) tokenizers both work: the output re-tokenizes, without special tokens, to
    /// exactly usage.completion_tokens. A tokenizer with fewer than 16 alphabetic words that stay one
    /// token in running text (one that merges across spaces) is refused at start-up.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Require this key as `Authorization: Bearer KEY` (401 otherwise).
    #[arg(long, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seed for output text, lengths, jitter and rate-based faults.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Request body limit in bytes; larger bodies get 413.
    #[arg(long, default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(1024..=(1 << 30)))]
    pub body_limit: u64,
    /// Most connections open at once; more wait in the accept queue until one closes. 0: the
    /// process's open-file limit less a reserve, so the server can always answer.
    #[arg(long, default_value_t = 0)]
    pub max_connections: usize,
    /// Context length: prompt + max_tokens above it gets a 400 context-length error. 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub max_context: u64,
    /// Fraction of requests (0–1) that get one of the --fault kinds, chosen with the seed.
    #[arg(long, default_value_t = 0.0, value_parser = fraction, allow_negative_numbers = true)]
    pub fault_rate: f64,
    /// Fault kinds for --fault-rate (repeatable): status=CODE, error-after=K, drop-after=K,
    /// malformed-after=K, stall=SECS@K, slow-first-byte=SECS. Tests pick per request with the
    /// `x-mock-fault` header instead.
    #[arg(long)]
    pub fault: Vec<Fault>,
    /// Put ground truth (due and actual send time) in every chunk, for every request. Per request:
    /// the `x-tokenperf-ground-truth: 1` header.
    #[arg(long)]
    pub ground_truth: bool,
    /// Write one JSON line per request with every chunk's due time, send time and token count.
    #[arg(long)]
    pub ground_truth_log: Option<PathBuf>,
    /// Serve the timing recorded in a run's records (a *_requests.jsonl or LLMPerf
    /// *_individual_responses.json): each request takes a recorded TTFT and gap sequence.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// Seconds a client may take to send a request's head, and to start the next one on a kept-alive
    /// connection; then the connection is closed.
    #[arg(long, default_value_t = 30.0, value_parser = timeout_secs)]
    pub header_timeout_s: f64,
    /// Seconds a client may pause while sending a request body; then 408.
    #[arg(long, default_value_t = 30.0, value_parser = timeout_secs)]
    pub body_timeout_s: f64,
    /// Deadline heaps of the token pacer, each served by its own task, which also writes its
    /// streams' token chunks; deadlines go to them in turn. 0: one per runtime worker (one per
    /// core), so emission is not held to one core's worth of writes on a big machine. On two cores
    /// one heap did better (BENCHMARKS.md), hence the default.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub pacer_shards: u64,
    /// Pending connections the kernel may queue before the server accepts them (the listen
    /// backlog; the kernel also caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub listen_backlog: u32,
    /// Model a prefix cache of this many 16-token blocks (0: off): a prompt's leading blocks that a
    /// recent prompt shared are not prefilled again, and `usage.prompt_tokens_details.cached_tokens`
    /// says how many tokens hit (vLLM's automatic prefix caching).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=(1 << 24)))]
    pub prefix_cache_blocks: u64,
    /// Close the connection after every streamed response while answering `Connection: keep-alive`
    /// and `Keep-Alive: timeout=5, max=100`, as llama.cpp's server does, to test clients against it.
    #[arg(long)]
    pub close_after_stream: bool,
    /// Keep one runtime worker polling the sockets at all times, so an arriving request is read
    /// within microseconds instead of after a parked worker's wake-up (about 0.1 ms on a VM). For
    /// measuring a client's own delay (`scripts/bench-ttft-excess.sh`); it costs a whole core.
    #[arg(long)]
    pub busy_poll: bool,
}

impl Default for Settings {
    /// The defaults written in the flags' attributes above: the one place they are defined.
    fn default() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            s: Settings,
        }
        Only::parse_from(["mock-server"]).s
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
#[derive(Debug, Clone, Parser)]
#[command(name = "mock-server", version)]
pub struct Args {
    /// TOML file with any of the settings below (same names, e.g. `itl-ms = 5`); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start from a profile of one of the seed document's servers; other settings override it.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Log level on stderr: error, warn (quiet: only problems), info (start-up, shutdown), debug (every
    /// request), trace.
    #[arg(long, value_enum, default_value = "warn")]
    pub log_level: LogLevel,
    #[command(flatten)]
    pub flags: Settings,
    /// The settings given on the command line (their TOML keys), so that only they override a
    /// preset or a config file.
    #[arg(skip)]
    pub given: Vec<String>,
}

impl Args {
    /// Parses the process's command line (exits with clap's message on bad flags).
    pub fn from_env() -> Self {
        Self::from_matches(&Self::command().get_matches()).unwrap_or_else(|e| e.exit())
    }

    /// Parses `args` (the first is the program name), for tests and library callers.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::from_matches(&Self::command().try_get_matches_from(args)?)
    }

    fn from_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut a = <Self as FromArgMatches>::from_arg_matches(m)?;
        a.given = m
            .ids()
            .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.as_str().replace('_', "-"))
            .collect();
        Ok(a)
    }
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

/// Reads a config file: the settings it holds, as a table of TOML keys.
fn read_config(path: &Path) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file '{}' (--config)", path.display()))?;
    // Parsed as settings first, so an unknown key or a bad value names itself and the file.
    let settings: Settings =
        toml::from_str(&text).with_context(|| format!("config file '{}'", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("config file '{}'", path.display()))?;
    let all = match serde_json::to_value(&settings)? {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("settings serialize to a map"),
    };
    Ok(all
        .into_iter()
        .filter(|(k, _)| table.contains_key(k))
        .collect())
}

/// Overwrites in `base` the `keys` of `top` (both serialized settings).
fn overlay(base: &Settings, top: &Settings, keys: &[String]) -> anyhow::Result<Settings> {
    let top = serde_json::to_value(top)?;
    let mut merged = serde_json::to_value(base)?;
    for k in keys {
        if let Some(v) = top.get(k) {
            merged[k] = v.clone();
        }
    }
    Ok(serde_json::from_value(merged)?)
}

impl Args {
    /// Defaults, then the preset, then the config file, then the flags given.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings::default();
        if let Some(p) = self.preset {
            p.apply(&mut s);
        }
        if let Some(path) = &self.config {
            // Only the keys the file sets override the preset.
            let mut merged = serde_json::to_value(&s)?;
            for (k, v) in read_config(path)? {
                merged[&k] = v;
            }
            s = serde_json::from_value(merged)?;
        }
        overlay(&s, &self.flags, &self.given)
    }

    /// The validated configuration.
    pub fn config(&self) -> anyhow::Result<Config> {
        Config::from_settings(&self.settings()?)
    }
}

impl Settings {
    /// Checks what a config file or code could set outside the flags' ranges, and the rules between
    /// settings; names the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, v) in [
            ("ttft-ms", self.ttft_ms),
            ("prefill-per-token-ms", self.prefill_per_token_ms),
            ("itl-ms", self.itl_ms),
        ] {
            check(v, 0.0, MAX_MS, " ms").map_err(|e| anyhow::anyhow!("--{name} {e}"))?;
        }
        check(self.itl_load_factor, 0.0, 1000.0, "")
            .map_err(|e| anyhow::anyhow!("--itl-load-factor {e}"))?;
        check(self.fault_rate, 0.0, 1.0, "").map_err(|e| anyhow::anyhow!("--fault-rate {e}"))?;
        for (name, v) in [
            ("header-timeout-s", self.header_timeout_s),
            ("body-timeout-s", self.body_timeout_s),
        ] {
            check(v, 0.001, 86_400.0, " seconds").map_err(|e| anyhow::anyhow!("--{name} {e}"))?;
        }
        if self.fault_rate > 0.0 && self.fault.is_empty() {
            bail!("--fault-rate needs at least one --fault kind to inject");
        }
        if let Dist::Fixed(0) = self.tokens_per_chunk {
            bail!("--tokens-per-chunk must be at least 1");
        }
        if self.default_max_tokens == 0 || self.default_max_tokens > self.max_tokens_limit {
            bail!(
                "--default-max-tokens must be from 1 to --max-tokens-limit ({}), got {}",
                self.max_tokens_limit,
                self.default_max_tokens
            );
        }
        if !(1024..=1 << 30).contains(&self.body_limit) {
            bail!(
                "--body-limit must be from 1024 to 2^30 bytes, got {}",
                self.body_limit
            );
        }
        Ok(())
    }

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1e3)
    }
}

impl Config {
    /// Validates settings into a runtime configuration (reads the replay file, if any).
    pub fn from_settings(s: &Settings) -> anyhow::Result<Config> {
        s.validate()?;
        let replay = match &s.replay {
            Some(p) => Some(std::sync::Arc::new(
                crate::replay::Profile::load(p)
                    .with_context(|| format!("--replay '{}'", p.display()))?,
            )),
            None => None,
        };
        Ok(Config {
            settings: s.clone(),
            replay,
        })
    }

    /// Fixed part of the time from admission to the first token (prefill).
    pub fn ttft(&self) -> Duration {
        Settings::ms(self.ttft_ms)
    }

    /// Prefill cost per prompt token.
    pub fn prefill_per_token(&self) -> Duration {
        Settings::ms(self.prefill_per_token_ms)
    }

    /// Decode step with one sequence running.
    pub fn itl(&self) -> Duration {
        Settings::ms(self.itl_ms)
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
        match crate::listener::bind(SocketAddr::new(*ip, port), settings.listen_backlog) {
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
        let a = Args::try_parse_args([
            "mock-server",
            "--port",
            "8000",
            "--ttft-ms",
            "50",
            "--itl-ms",
            "5",
        ])
        .unwrap();
        let s = a.settings().unwrap();
        let c = a.config().unwrap();
        assert_eq!(
            (s.port, c.ttft(), c.itl()),
            (8000, Duration::from_millis(50), Duration::from_millis(5))
        );
        assert_eq!(c.ttft_jitter, Jitter::None);
        assert_eq!(
            Args::try_parse_args(["mock-server"])
                .unwrap()
                .settings()
                .unwrap()
                .port,
            5543
        );
        // A bad value is refused where it comes in: by the flag's parser, by validation for code and
        // config files alike.
        let bad = Args::try_parse_args(["mock-server", "--itl-ms", "-1"]).unwrap_err();
        assert!(bad.to_string().contains("--itl-ms"), "{bad}");
        for (s, name) in [
            (
                Settings {
                    itl_ms: -1.0,
                    ..Settings::default()
                },
                "--itl-ms",
            ),
            (
                Settings {
                    ttft_ms: f64::INFINITY,
                    ..Settings::default()
                },
                "--ttft-ms",
            ),
            (
                Settings {
                    fault_rate: 2.0,
                    ..Settings::default()
                },
                "--fault-rate",
            ),
            (
                Settings {
                    default_max_tokens: 1 << 40,
                    ..Settings::default()
                },
                "--default-max-tokens",
            ),
            (
                Settings {
                    body_limit: 0,
                    ..Settings::default()
                },
                "--body-limit",
            ),
        ] {
            let e = Config::from_settings(&s).unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
        assert_eq!(Settings::default().max_tokens_limit, 131_072);
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
        let a = Args::try_parse_args([
            "mock-server",
            "--preset",
            "minichat3b-batch4",
            "--config",
            f.to_str().unwrap(),
            "--max-num-seqs",
            "2",
        ])
        .unwrap();
        let s = a.settings().unwrap();
        assert_eq!(s.itl_ms, 7.5, "file over preset");
        assert_eq!(s.max_num_seqs, 2, "flag over file");
        assert_eq!(s.itl_load_factor, 0.325, "preset over default");
        assert_eq!(s.fault, vec![Fault::Status(503)]);
        std::fs::write(&f, "itl_ms = 7.5\n").unwrap();
        let e = format!(
            "{:#}",
            Args::try_parse_args(["mock-server", "--config", f.to_str().unwrap()])
                .unwrap()
                .settings()
                .unwrap_err()
        );
        assert!(e.contains("mock.toml") && e.contains("itl_ms"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_combinations_are_named() {
        let e = Args::try_parse_args(["mock-server", "--fault-rate", "0.5"])
            .unwrap()
            .config()
            .unwrap_err();
        assert!(e.to_string().contains("--fault"), "{e}");
        let e = Args::try_parse_args(["mock-server", "--tokens-per-chunk", "0"])
            .unwrap()
            .config()
            .unwrap_err();
        assert!(e.to_string().contains("--tokens-per-chunk"), "{e}");
        assert!(Args::try_parse_args(["mock-server", "--ttft-jitter", "wobbly"]).is_err());
    }
}
