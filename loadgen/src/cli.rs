//! Command line of `loadgen`: LLMPerf's `token_benchmark_ray.py` flags with LLMPerf's names and defaults,
//! plus ours, folded into one validated [`Plan`] by [`Args::into_plan`] (the only code that reads `Args`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;
use serde_json::{Map, Value};
use tokenperf_core::llmperf::MetricDefinitions;
use tokenperf_core::slo::Slo;

use crate::arrival::Arrival;
use crate::client::Endpoint;
use crate::dataset::{DatasetFormat, Sampling};
pub use crate::rxstamp::RxTimestamps;
use crate::sweep::{SweepSpec, SweepStop};

/// Longest duration any flag accepts, in seconds (115 days): far past any benchmark, and far from
/// where `Duration` and `Instant` arithmetic overflows.
pub const MAX_SECONDS: f64 = 1e7;

/// A finite number in `lo..=hi` (`lo` itself excluded when `open_lo`), naming `unit` in errors.
/// The one range check behind every numeric flag that is not an integer.
pub fn number_in(s: &str, lo: f64, open_lo: bool, hi: f64, unit: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number{unit}"))?;
    let above = if open_lo { v > lo } else { v >= lo };
    if v.is_finite() && above && v <= hi {
        Ok(v)
    } else {
        let from = if open_lo { "above" } else { "from" };
        Err(format!(
            "must be {from} {lo} and at most {hi:e}{unit}, got {s}"
        ))
    }
}

/// Most shards one plan may be split into.
pub const MAX_SHARDS: u64 = 10_000;

/// One shard of a plan split N ways: request `i` of the plan belongs to shard `i mod N`, so every
/// request belongs to exactly one shard and the shards' union is the unsharded plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The unsharded plan.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }
    /// Whether request `i` of the plan is this shard's.
    pub fn owns(&self, i: u64) -> bool {
        i % self.count == self.index
    }
    /// The plan index of this shard's `k`-th request.
    pub fn id(&self, k: u64) -> u64 {
        self.index + k * self.count
    }
    /// How many of the plan's first `n` requests (or streams) are this shard's: the shards' parts
    /// differ by at most one and sum to `n`.
    pub fn part(&self, n: u64) -> u64 {
        if n > self.index {
            (n - self.index - 1) / self.count + 1
        } else {
            0
        }
    }
    /// The folder name of this shard's results.
    pub fn folder(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }
}

/// `--shard I/N`.
fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("'{s}' is not of the form I/N (e.g. 0/4)"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| format!("'{s}' is not of the form I/N (e.g. 0/4)"))
    };
    let (index, count) = (parse(i)?, parse(n)?);
    if count == 0 || count > MAX_SHARDS {
        return Err(format!("N must be from 1 to {MAX_SHARDS}, got {count}"));
    }
    if index >= count {
        return Err(format!(
            "I must be below N (shards count from 0), got {index}/{count}"
        ));
    }
    Ok(Shard { index, count })
}

/// `--start-at`: RFC 3339 or Unix seconds, as µs since the Unix epoch.
fn parse_start_at(s: &str) -> Result<u64, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return if secs.is_finite() && (0.0..4e9).contains(&secs) {
            Ok((secs * 1e6) as u64)
        } else {
            Err(format!("'{s}' is not a Unix time in seconds"))
        };
    }
    let t = humantime::parse_rfc3339_weak(s.trim()).map_err(|e| {
        format!("'{s}' is neither RFC 3339 (2026-12-01T20:00:00Z) nor Unix seconds: {e}")
    })?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .map_err(|_| format!("'{s}' is before 1970"))
}

/// `--flag SECS` with `0 < SECS ≤ MAX_SECONDS`.
fn positive_seconds(s: &str) -> Result<f64, String> {
    number_in(s, 0.0, true, MAX_SECONDS, " seconds")
}

/// `--flag SECS` with `0 ≤ SECS ≤ MAX_SECONDS`.
fn non_negative_seconds(s: &str) -> Result<f64, String> {
    number_in(s, 0.0, false, MAX_SECONDS, " seconds")
}

/// A positive finite number up to `max`, for rates and scales.
fn positive_up_to(s: &str, max: f64) -> Result<f64, String> {
    number_in(s, 0.0, true, max, "")
}

fn request_rate(s: &str) -> Result<f64, String> {
    positive_up_to(s, 1e6)
}

fn shape(s: &str) -> Result<f64, String> {
    positive_up_to(s, 1e3)
}

fn time_scale(s: &str) -> Result<f64, String> {
    positive_up_to(s, 1e6)
}

fn fraction(s: &str) -> Result<f64, String> {
    number_in(s, 0.0, false, 1.0, "")
}

/// Most tokens any length flag accepts (a million-token context is the largest served today).
pub const MAX_TOKENS_FLAG: u64 = 1_000_000;
/// Most concurrent streams: each holds a connection and a task.
pub const MAX_STREAMS: u64 = 100_000;
/// Most requests one run may plan (prompts for up to [`MAX_PROMPT_POOL`] are built, then cycled).
pub const MAX_REQUESTS: u64 = 1_000_000_000;
/// Distinct prompts built up front at most; a longer run cycles them.
pub const MAX_PROMPT_POOL: u64 = 100_000;

/// The LLM APIs LLMPerf accepts; only `openai` is implemented here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmApi {
    Openai,
    Anthropic,
    Litellm,
    Sagemaker,
    Vertexai,
}

/// Which definitions fill the LLMPerf-named fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Metrics {
    /// Corrected: inter_token_latency_s is TPOT, (e2e - ttft) / (output tokens - 1).
    Tokenperf,
    /// LLMPerf's own formula: (last content - send) / data events (TTFT included, per chunk).
    Llmperf,
}

/// LLMPerf-compatible load generator for OpenAI-style streaming LLM servers.
///
/// Runs LLMPerf's command lines unchanged and writes LLMPerf's files, with its metric flaws fixed
/// (see README, "LLMPerf compatibility"). Exit codes: 0 success, 1 error rate above
/// --max-error-rate, 2 bad flags or a fatal error (a file that could not be read or written), 3 no
/// request succeeded, 130 stopped by SIGINT, SIGTERM or SIGHUP (every file still written).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Model name sent in every request; also names the output files.
    #[arg(long, required = true)]
    pub model: Option<String>,
    /// Mean number of prompt tokens (Gaussian; prompts are cut to exactly the sampled count).
    #[arg(long, default_value_t = 550, value_parser = clap::value_parser!(u64).range(1..=MAX_TOKENS_FLAG))]
    pub mean_input_tokens: u64,
    /// Standard deviation of the prompt length in tokens.
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(0..=MAX_TOKENS_FLAG))]
    pub stddev_input_tokens: u64,
    /// Mean of `max_tokens` asked per request.
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(1..=MAX_TOKENS_FLAG))]
    pub mean_output_tokens: u64,
    /// Standard deviation of `max_tokens`.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u64).range(0..=MAX_TOKENS_FLAG))]
    pub stddev_output_tokens: u64,
    /// Requests in flight at once (closed loop: each finished request starts the next).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_STREAMS))]
    pub num_concurrent_requests: u64,
    /// Seconds after which no new request is started (in-flight ones finish) [default: 90; --duration
    /// when that is given; none with --trace].
    #[arg(long, allow_negative_numbers = true, value_parser = positive_seconds)]
    pub timeout: Option<f64>,
    /// Number of requests to run [default: 10; without limit when --duration is given; the whole
    /// trace with --trace].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_REQUESTS))]
    pub max_num_completed_requests: Option<u64>,
    /// JSON object merged over every request body, e.g. '{"temperature": 0}'.
    #[arg(long, default_value = "{}")]
    pub additional_sampling_params: String,
    /// Folder for the output files (created). Empty: write no files, as LLMPerf.
    #[arg(long, default_value = "")]
    pub results_dir: String,
    /// API flavour; only `openai` is supported.
    #[arg(long, value_enum, default_value = "openai")]
    pub llm_api: LlmApi,
    /// Extra summary keys, `k=v,k2=v2`.
    #[arg(long, default_value = "")]
    pub metadata: String,
    /// Base URL of the API, ending where `chat/completions` is appended (e.g. http://localhost:5543/v1).
    #[arg(long, env = "OPENAI_API_BASE")]
    pub api_base: Option<String>,
    /// API key sent as a Bearer token.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Endpoint to call.
    #[arg(long, value_enum, default_value = "chat")]
    pub endpoint: Endpoint,
    /// Open loop: send requests at this mean rate (per second) on a schedule fixed in advance,
    /// whatever the server's speed, instead of a fixed concurrency.
    #[arg(
        long,
        conflicts_with = "num_concurrent_requests",
        allow_negative_numbers = true,
        value_parser = request_rate
    )]
    pub request_rate: Option<f64>,
    /// Arrival process of the open loop [default: poisson].
    #[arg(long, value_enum, requires = "request_rate")]
    pub arrival: Option<Arrival>,
    /// Shape of gamma arrivals: 1 is Poisson, below 1 burstier, above 1 smoother [default: 1].
    #[arg(long, requires = "request_rate", allow_negative_numbers = true, value_parser = shape)]
    pub burstiness: Option<f64>,
    /// Open loop (--request-rate or --trace): most requests in flight; an arrival that finds them all
    /// busy is recorded as dropped (never silently lost).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_STREAMS))]
    pub max_concurrency: Option<u64>,
    /// Replay a trace: a JSONL of {"timestamp" (ms), "input_length", "output_length"[, "prompt"]}
    /// (Mooncake style), or a *_requests.jsonl of ours; requests go out on its timestamps.
    #[arg(long, conflicts_with_all = ["request_rate", "num_concurrent_requests", "dataset"])]
    pub trace: Option<PathBuf>,
    /// Multiplies the trace's timestamps (0.5 replays twice as fast).
    #[arg(long, default_value_t = 1.0, requires = "trace", value_parser = time_scale)]
    pub time_scale: f64,
    /// Run the benchmark at several loads: `concurrency=1,2,4,8`, `rate=1,2,4` or `auto` (the
    /// synchronous rate, the saturated throughput, then --sweep-points rates between them). Each
    /// point's files go to a numbered subfolder of --results-dir, plus sweep_summary.json.
    #[arg(long, conflicts_with_all = ["trace", "request_rate"])]
    pub sweep: Option<SweepSpec>,
    /// End the sweep when a point passes a limit: `error_rate=0.1,ttft_p99=2,e2e_p99=30` (seconds).
    #[arg(long, requires = "sweep")]
    pub sweep_stop: Option<SweepStop>,
    /// Rates between the ends of `--sweep auto`.
    #[arg(long, default_value_t = 5, requires = "sweep", value_parser = clap::value_parser!(u64).range(1..=100))]
    pub sweep_points: u64,
    /// Seconds of load: no request starts after it (open loop: arrivals are scheduled within it).
    #[arg(long, allow_negative_numbers = true, value_parser = positive_seconds)]
    pub duration: Option<f64>,
    /// Requests sent before the measured run (same prompts and concurrency), not recorded.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_REQUESTS))]
    pub warmup_requests: u64,
    /// Requests sent in the first SECS of the run are sent but left out of the results (marked
    /// `"excluded": "warmup"` in *_requests.jsonl).
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative_seconds)]
    pub warmup_seconds: Option<f64>,
    /// Requests that finish in the last SECS of the run (the drain) are left out of the results
    /// (marked `"excluded": "cooldown"`).
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative_seconds)]
    pub cooldown_seconds: Option<f64>,
    /// Seconds to reach full load: a closed loop starts its streams evenly over it; an open loop's
    /// rate grows linearly from 0 over it [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative_seconds)]
    pub ramp_up: Option<f64>,
    /// Keep one worker polling the sockets, never sleeping, while requests are in flight: where
    /// reads are timed when they return (https://, or `--rx-timestamps read`), a sleeping thread's
    /// wake-up (about 0.1 ms on a VM) lands in every TTFT and inter-token time measured. It costs a
    /// whole core, and helps only where loadgen has a core to itself: on a machine it shares with
    /// the server it takes that core from the server (BENCHMARKS.md).
    #[arg(long)]
    pub busy_poll: bool,
    /// What a response's arrival times are: `kernel`, when its bytes reached this host (the
    /// kernel's receive stamp, so loadgen's own wake-up and queueing stay out of TTFT and
    /// inter-token times), or `read`, when loadgen's read returned. `auto` is `kernel` where it can
    /// be (plain http:// on Linux) and `read` elsewhere (https://); `kernel` refuses https:// and
    /// fails a connection the kernel will not stamp.
    #[arg(long, value_enum, default_value_t = RxTimestamps::Auto)]
    pub rx_timestamps: RxTimestamps,
    /// A PEM file of certificates to trust for https:// besides the system's: a server with a
    /// private CA or a self-signed certificate (e.g. `--ca-cert internal-ca.pem`). The system's
    /// roots come from SSL_CERT_FILE / SSL_CERT_DIR when set.
    #[arg(long, env = "TOKENPERF_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// An HTTP proxy to reach the server through (e.g. `--proxy http://user:pass@proxy.corp:3128`):
    /// every connection is a CONNECT tunnel through it, for https:// and http:// servers alike, so
    /// its hop is in every time measured. HTTPS_PROXY and the like are not used for the server:
    /// only this flag (or its variable) puts a proxy in the measurement.
    #[arg(long, env = "TOKENPERF_PROXY", value_name = "URL")]
    pub proxy: Option<String>,
    /// Seed for prompt and length sampling (LLMPerf's is 11111).
    #[arg(long, default_value_t = 11111)]
    pub seed: u64,
    /// Tokenizer: a Hugging Face repo id (looked up in the local HF cache), a tokenizer.json or a
    /// folder holding one, or `tokenperf` for the project's built-in tokenizer.
    #[arg(long, default_value = crate::tokenizer::DEFAULT_TOKENIZER)]
    pub tokenizer: String,
    /// How corpus prompts are built: `llmperf` runs LLMPerf's algorithm on CPython's random
    /// generator, so the same flags and seed give LLMPerf's requests (with its corpus and tokenizer,
    /// request for request); `exact` cuts each prompt to exactly the sampled token count.
    #[arg(long, value_enum, default_value = "llmperf")]
    pub prompt_sampling: crate::prompt::PromptSampling,
    /// Text file whose lines make the prompts (default: the project's own corpus).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Prompts from a dataset instead: a JSONL of {"prompt"} or {"messages"} (optional "max_tokens"),
    /// or ShareGPT JSON (first human turn; the reply's length is the output length).
    #[arg(long, conflicts_with = "corpus")]
    pub dataset: Option<PathBuf>,
    /// Dataset format [default: jsonl for *.jsonl, sharegpt otherwise].
    #[arg(long, value_enum, requires = "dataset")]
    pub dataset_format: Option<DatasetFormat>,
    /// How dataset entries are drawn.
    #[arg(
        long,
        value_enum,
        default_value = "without-replacement",
        requires = "dataset"
    )]
    pub sample: Sampling,
    /// `N:P`: N distinct prefixes of P tokens put ahead of the prompts in turn (prefix-cache studies).
    #[arg(long)]
    pub shared_prefix: Option<String>,
    /// Which definitions fill the LLMPerf-named fields.
    #[arg(long, value_enum, default_value = "tokenperf")]
    pub metrics: Metrics,
    /// Do not ask for `stream_options.include_usage` (for servers that reject it). With
    /// `--metrics llmperf` usage is not asked for unless `--usage` is given, as LLMPerf never asks.
    #[arg(long, conflicts_with = "usage")]
    pub no_usage: bool,
    /// Ask for `stream_options.include_usage` even with `--metrics llmperf`.
    #[arg(long)]
    pub usage: bool,
    /// Seconds a whole request may take (default: no limit).
    #[arg(long, allow_negative_numbers = true, value_parser = positive_seconds)]
    pub request_timeout: Option<f64>,
    /// Seconds of silence allowed between two reads of a response, and for connecting and for the
    /// response head (LLMPerf's read timeout is 180).
    #[arg(long, default_value_t = 180.0, allow_negative_numbers = true, value_parser = positive_seconds)]
    pub idle_timeout: f64,
    /// Longest SSE line or event accepted; a longer one fails its request (`malformed`).
    #[arg(long, default_value_t = crate::sse::DEFAULT_MAX_LINE as u64, value_parser = clap::value_parser!(u64).range(64..=(1 << 30)))]
    pub max_sse_line_bytes: u64,
    /// Most bytes one response may stream; past it the request fails (`malformed`), so a server
    /// that never ends a stream costs bounded memory.
    #[arg(long, default_value_t = 1 << 28, value_parser = clap::value_parser!(u64).range(1024..=(1 << 40)))]
    pub max_response_bytes: u64,
    /// Ask the server for exactly max_tokens tokens: sends `"ignore_eos": true` and `min_tokens`
    /// (vLLM, llama.cpp and TGI-style servers honour one or the other; others ignore both).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Put a unique, seeded marker at the start of every prompt so that no two requests share a
    /// prefix and a server's prefix cache cannot serve any of it (re-runs measure a cold cache).
    #[arg(long)]
    pub cache_bust: bool,
    /// Exit with code 1 when the error rate (0–1) is above this.
    #[arg(long, allow_negative_numbers = true, value_parser = fraction)]
    pub max_error_rate: Option<f64>,
    /// Also print LLMPerf's result block (`token_benchmark_ray.py`'s console output, 60 lines of
    /// figures) on stdout, first, for scripts that parse it; the files hold the same figures.
    #[arg(long)]
    pub llmperf_block: bool,
    /// Print only the summary (no progress, no warnings).
    #[arg(long, short)]
    pub quiet: bool,
    /// Ask a tokenperf mock-server for ground truth in every chunk; records keep it, and the summary
    /// reports the measurement error (other servers ignore the request header).
    #[arg(long)]
    pub ground_truth: bool,
    /// After the run, measure loadgen's own error at the same concurrency against an in-process mock
    /// and print it beside the results ("measurement error at this load").
    #[arg(long)]
    pub selfcheck: bool,
    /// Run shard I of N (`I/N`, I from 0): this process sends request i of the plan when
    /// i mod N = I, with its part of the concurrency (or of the rate and --max-concurrency), so the
    /// N shards together send exactly the unsharded plan. Results go to `--results-dir`/shard-I-of-N.
    #[arg(long, value_parser = parse_shard, conflicts_with = "shards")]
    pub shard: Option<Shard>,
    /// Run one of N shards, taking I from the JOB_COMPLETION_INDEX environment variable, as a
    /// Kubernetes Indexed Job sets it (see deploy/k8s/).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_SHARDS))]
    pub shards: Option<u64>,
    /// Hold the load until this wall-clock instant, so shards started minutes apart start together:
    /// RFC 3339 (`2026-12-01T20:00:00Z`) or Unix seconds. Tokenizer, prompts and connections are
    /// ready before it; the run records how late it really started.
    #[arg(long, value_parser = parse_start_at)]
    pub start_at: Option<u64>,
    /// Latency objectives in seconds, e.g. `ttft=0.5,tpot=0.05,e2e=10`: each record says whether it
    /// met them all, and the summary reports goodput and attainment with a 95 % interval.
    #[arg(long)]
    pub slo: Option<Slo>,
}

/// Subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Measure loadgen's own error against mock-server ground truth at a stated load.
    Selfcheck(crate::selfcheck::SelfCheckArgs),
}

/// How load is applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Load {
    /// Fixed concurrency: `concurrency` workers, each sending its next request when the last ends.
    Closed { concurrency: u64 },
    /// A schedule fixed in advance at `rate` requests per second, optionally capped in flight.
    Open {
        rate: f64,
        arrival: Arrival,
        burstiness: f64,
        max_concurrency: Option<u64>,
    },
    /// A recorded trace's timestamps and lengths, optionally capped in flight.
    Trace {
        path: PathBuf,
        time_scale: f64,
        max_concurrency: Option<u64>,
    },
}

/// Everything a run needs, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub model: String,
    pub llm_api: LlmApi,
    pub api_base: String,
    #[serde(skip)]
    pub api_key: String,
    pub endpoint: Endpoint,
    pub load: Load,
    /// Requests to send; `None`: as many as fit in the time limit.
    pub requests: Option<u64>,
    /// No new request after this.
    pub timeout_s: f64,
    /// Requests sent before the measured run and not recorded.
    pub warmup_requests: u64,
    /// Seconds to reach full load (0: at once).
    pub ramp_up_s: f64,
    /// Whether a worker polls the sockets without sleeping while requests are in flight.
    pub busy_poll: bool,
    /// Which clock times a read.
    pub rx_timestamps: RxTimestamps,
    /// More roots for https:// (`--ca-cert`), checked when the plan is made.
    pub ca_cert: Option<PathBuf>,
    /// The proxy every connection tunnels through (`--proxy`); recorded without its credentials.
    pub proxy: Option<crate::proxy::Proxy>,
    /// Leading and trailing seconds whose requests are left out of the results.
    pub warmup_s: f64,
    pub cooldown_s: f64,
    pub mean_input_tokens: u64,
    pub stddev_input_tokens: u64,
    pub mean_output_tokens: u64,
    pub stddev_output_tokens: u64,
    pub additional_sampling_params: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub results_dir: Option<PathBuf>,
    pub seed: u64,
    pub tokenizer: String,
    pub prompt_sampling: crate::prompt::PromptSampling,
    pub corpus: Option<PathBuf>,
    pub dataset: Option<(PathBuf, DatasetFormat, Sampling)>,
    /// (number of prefixes, tokens each).
    pub shared_prefix: Option<(u64, u64)>,
    pub metric_definitions: MetricDefinitions,
    pub request_usage: bool,
    pub request_timeout_s: Option<f64>,
    pub idle_timeout_s: f64,
    /// Longest SSE line or event accepted.
    pub max_line_bytes: usize,
    /// Most bytes one response may stream.
    pub max_response_bytes: u64,
    /// Ask for exactly `max_tokens` (`ignore_eos` and `min_tokens`).
    pub ignore_eos: bool,
    /// A unique seeded marker ahead of every prompt, so no prefix is shared.
    pub cache_bust: bool,
    pub max_error_rate: Option<f64>,
    pub quiet: bool,
    /// Print LLMPerf's console block too.
    pub llmperf_block: bool,
    pub ground_truth: bool,
    pub selfcheck: bool,
    pub slo: Option<Slo>,
    pub sweep: Option<SweepSpec>,
    pub sweep_stop: Option<SweepStop>,
    pub sweep_points: u64,
    /// Prompts to build when fewer than the requests should be cycled (self-check).
    #[serde(skip)]
    pub prompt_pool: Option<u64>,
    /// This process's shard of the plan (the whole plan unless --shard/--shards).
    pub shard: Shard,
    /// Wall-clock instant the load waits for (µs since the Unix epoch).
    pub start_at_unix_us: Option<u64>,
}

/// A flag value that cannot work, with the flag named.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub message: String,
}

fn bad(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
    }
}

/// Parses `k=v,k2=v2` (values stay strings). Unlike LLMPerf, a value may contain `=`.
pub fn parse_metadata(s: &str) -> Result<Map<String, Value>, ConfigError> {
    let mut m = Map::new();
    for item in s.split(',').filter(|i| !i.trim().is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| {
            bad(
                "--metadata",
                format!("'{item}' is not of the form key=value"),
            )
        })?;
        if k.trim().is_empty() {
            return Err(bad("--metadata", format!("'{item}' has an empty key")));
        }
        m.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}

impl Args {
    /// Parses flags given without the program name (for library callers and tests).
    pub fn from_flags(flags: &[&str]) -> Result<Self, clap::Error> {
        Self::try_parse_from(std::iter::once("loadgen").chain(flags.iter().copied()))
    }

    /// Tests' plan: `extra` after the flags every offline test needs (a model, a base URL nothing
    /// listens on, a key, the built-in tokenizer).
    #[cfg(test)]
    pub(crate) fn offline_plan(extra: &[&str]) -> Plan {
        let base = [
            "--model",
            "m",
            "--api-base",
            "http://127.0.0.1:9/v1",
            "--api-key",
            "k",
            "--tokenizer",
            "tokenperf",
        ];
        let flags: Vec<&str> = base.iter().chain(extra).copied().collect();
        Self::from_flags(&flags).unwrap().into_plan().unwrap()
    }

    /// Validates the flags into a [`Plan`]. Single values were range-checked by their parsers; what
    /// is left here are the rules between flags.
    pub fn into_plan(self) -> Result<Plan, ConfigError> {
        let (model, api_base, api_key) = self.endpoint_flags()?;
        let (requests, timeout_s) = self.limits();
        let load = self.load()?;
        let additional_sampling_params = self.sampling_params()?;
        let metadata = parse_metadata(&self.metadata)?;
        let shared_prefix = self
            .shared_prefix
            .as_deref()
            .map(parse_shared_prefix)
            .transpose()?;
        let shard = self.shard_flags(&load)?;
        Ok(Plan {
            model,
            llm_api: self.llm_api,
            api_base,
            api_key,
            endpoint: self.endpoint,
            load,
            requests,
            timeout_s,
            warmup_requests: self.warmup_requests,
            warmup_s: self.warmup_seconds.unwrap_or(0.0),
            cooldown_s: self.cooldown_seconds.unwrap_or(0.0),
            ramp_up_s: self.ramp_up.unwrap_or(0.0),
            busy_poll: self.busy_poll,
            rx_timestamps: self.rx_timestamps,
            ca_cert: self.ca_cert.clone(),
            proxy: self
                .proxy
                .as_deref()
                .map(crate::proxy::Proxy::parse)
                .transpose()
                .map_err(|e| bad("--proxy", e))?,
            mean_input_tokens: self.mean_input_tokens,
            stddev_input_tokens: self.stddev_input_tokens,
            mean_output_tokens: self.mean_output_tokens,
            stddev_output_tokens: self.stddev_output_tokens,
            additional_sampling_params,
            metadata,
            results_dir: (!self.results_dir.is_empty()).then(|| PathBuf::from(self.results_dir)),
            seed: self.seed,
            tokenizer: self.tokenizer,
            prompt_sampling: self.prompt_sampling,
            corpus: self.corpus,
            dataset: self.dataset.map(|d| {
                let f = self
                    .dataset_format
                    .unwrap_or_else(|| DatasetFormat::guess(&d));
                (d, f, self.sample)
            }),
            shared_prefix,
            metric_definitions: match self.metrics {
                Metrics::Tokenperf => MetricDefinitions::Tokenperf,
                Metrics::Llmperf => MetricDefinitions::Llmperf,
            },
            // LLMPerf never asked for usage, and its ITL divides by every data event: a usage chunk
            // would change its figure.
            request_usage: self.usage || (!self.no_usage && self.metrics != Metrics::Llmperf),
            request_timeout_s: self.request_timeout,
            idle_timeout_s: self.idle_timeout,
            max_line_bytes: self.max_sse_line_bytes as usize,
            max_response_bytes: self.max_response_bytes,
            ignore_eos: self.ignore_eos,
            cache_bust: self.cache_bust,
            max_error_rate: self.max_error_rate,
            quiet: self.quiet,
            llmperf_block: self.llmperf_block,
            ground_truth: self.ground_truth,
            selfcheck: self.selfcheck,
            slo: self.slo,
            sweep: self.sweep,
            sweep_stop: self.sweep_stop,
            sweep_points: self.sweep_points,
            prompt_pool: None,
            shard,
            start_at_unix_us: self.start_at,
        })
    }

    /// `--shard I/N`, or `--shards N` with I from JOB_COMPLETION_INDEX; every shard must get at
    /// least one stream.
    fn shard_flags(&self, load: &Load) -> Result<Shard, ConfigError> {
        let shard = match (self.shard, self.shards) {
            (Some(s), _) => s,
            (None, Some(count)) => {
                let flag = "--shards";
                let raw = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| {
                    bad(
                        flag,
                        "JOB_COMPLETION_INDEX is not set (a Kubernetes Indexed Job sets it; elsewhere use --shard I/N)",
                    )
                })?;
                let index: u64 = raw.trim().parse().map_err(|_| {
                    bad(
                        flag,
                        format!("JOB_COMPLETION_INDEX='{raw}' is not a number"),
                    )
                })?;
                if index >= count {
                    return Err(bad(
                        flag,
                        format!("JOB_COMPLETION_INDEX={index} is not below the {count} shards"),
                    ));
                }
                Shard { index, count }
            }
            (None, None) => Shard::WHOLE,
        };
        let streams = match load {
            Load::Closed { concurrency } => Some(("--num-concurrent-requests", *concurrency)),
            Load::Open {
                max_concurrency, ..
            }
            | Load::Trace {
                max_concurrency, ..
            } => max_concurrency.map(|c| ("--max-concurrency", c)),
        };
        if let Some((flag, c)) = streams
            && c < shard.count
        {
            return Err(bad(
                flag,
                format!(
                    "{c} streams cannot be split over {} shards: every shard needs at least one",
                    shard.count
                ),
            ));
        }
        Ok(shard)
    }

    /// `--llm-api`, `--model`, `--api-base` and `--api-key`.
    fn endpoint_flags(&self) -> Result<(String, String, String), ConfigError> {
        if self.llm_api != LlmApi::Openai {
            return Err(bad(
                "--llm-api",
                format!(
                    "'{}' is not supported; tokenperf speaks the OpenAI API (use openai)",
                    self.llm_api
                        .to_possible_value()
                        .map_or("?".into(), |v| v.get_name().to_string())
                ),
            ));
        }
        let model = self.model.clone().unwrap_or_default();
        if model.trim().is_empty() {
            return Err(bad("--model", "is required and must not be empty"));
        }
        let api_base = self
            .api_base
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                bad(
                    "--api-base",
                    "no API base URL: set OPENAI_API_BASE (e.g. http://localhost:5543/v1) or pass --api-base",
                )
            })?;
        let origin = crate::http::Origin::parse(&api_base).map_err(|e| bad("--api-base", e))?;
        if origin.tls && self.rx_timestamps == RxTimestamps::Kernel {
            return Err(bad(
                "--rx-timestamps",
                "kernel stamps are read on plain http:// connections only (a TLS record's bytes are \
                 decrypted before loadgen sees them); use `read` for https://",
            ));
        }
        if let Some(path) = &self.ca_cert {
            if !origin.tls {
                return Err(bad(
                    "--ca-cert",
                    format!("certificates are for https://, and {api_base} is plain http://"),
                ));
            }
            crate::http::read_ca_certs(path).map_err(|e| bad("--ca-cert", e))?;
        }
        let api_key = self.api_key.clone().ok_or_else(|| {
            bad(
                "--api-key",
                "no API key: set OPENAI_API_KEY (any value for servers without auth) or pass --api-key",
            )
        })?;
        Ok((model, api_base, api_key))
    }

    /// How many requests, and until when new ones may start.
    fn limits(&self) -> (Option<u64>, f64) {
        let requests = match (self.max_num_completed_requests, self.duration) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            // A trace sends all its requests unless told otherwise.
            (None, None) if self.trace.is_some() => None,
            (None, None) => Some(10),
        };
        let timeout_s = match (self.timeout, self.duration) {
            (Some(t), Some(d)) => t.min(d),
            (Some(t), None) => t,
            (None, Some(d)) => d,
            // A trace runs to its end unless told otherwise.
            (None, None) if self.trace.is_some() => MAX_SECONDS,
            (None, None) => 90.0,
        };
        (requests, timeout_s)
    }

    /// Closed loop, open loop or trace.
    fn load(&self) -> Result<Load, ConfigError> {
        if self.max_concurrency.is_some() && self.request_rate.is_none() && self.trace.is_none() {
            return Err(bad(
                "--max-concurrency",
                "applies to an open loop: use it with --request-rate or --trace (a closed loop's concurrency is --num-concurrent-requests)",
            ));
        }
        Ok(match (self.request_rate, &self.trace) {
            (None, Some(path)) => Load::Trace {
                path: path.clone(),
                time_scale: self.time_scale,
                max_concurrency: self.max_concurrency,
            },
            (None, None) => Load::Closed {
                concurrency: self.num_concurrent_requests,
            },
            (Some(rate), _) => {
                let arrival = self.arrival.unwrap_or(Arrival::Poisson);
                if self.burstiness.is_some() && arrival != Arrival::Gamma {
                    return Err(bad("--burstiness", "only applies to --arrival gamma"));
                }
                Load::Open {
                    rate,
                    arrival,
                    burstiness: self.burstiness.unwrap_or(1.0),
                    max_concurrency: self.max_concurrency,
                }
            }
        })
    }

    /// `--additional-sampling-params`, plus what `--ignore-eos` asks for.
    fn sampling_params(&self) -> Result<Map<String, Value>, ConfigError> {
        let flag = "--additional-sampling-params";
        let v: Value = serde_json::from_str(&self.additional_sampling_params)
            .map_err(|e| bad(flag, format!("not valid JSON: {e}")))?;
        let Value::Object(params) = v else {
            return Err(bad(
                flag,
                "must be a JSON object, e.g. '{\"temperature\": 0}'",
            ));
        };
        Ok(params)
    }
}

/// `N:P` of `--shared-prefix`.
fn parse_shared_prefix(s: &str) -> Result<(u64, u64), ConfigError> {
    let flag = "--shared-prefix";
    let (n, p) = s.split_once(':').ok_or_else(|| {
        bad(
            flag,
            format!("'{s}' is not N:P (prefixes:tokens), e.g. 4:256"),
        )
    })?;
    match (n.trim().parse::<u64>(), p.trim().parse::<u64>()) {
        (Ok(n), Ok(p)) if (1..=10_000).contains(&n) && (1..=MAX_TOKENS_FLAG).contains(&p) => {
            Ok((n, p))
        }
        _ => Err(bad(
            flag,
            format!("'{s}': N must be 1 to 10000 and P 1 to {MAX_TOKENS_FLAG}"),
        )),
    }
}

impl Plan {
    /// The certificates `--ca-cert` adds to the platform's roots (none without it).
    pub fn ca_certs(&self) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
        self.ca_cert.as_deref().map_or(Ok(Vec::new()), |p| {
            crate::http::read_ca_certs(p).map_err(|e| bad("--ca-cert", e))
        })
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_s)
    }
    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout_s.map(Duration::from_secs_f64)
    }
    /// Prompts to build: one per request, cycled when the run has no request limit (as LLMPerf
    /// cycles its prompt list).
    pub fn prompt_pool(&self) -> u64 {
        self.prompt_pool
            .or(self.requests)
            .unwrap_or(256)
            .clamp(1, MAX_PROMPT_POOL)
    }
    /// Connections worth keeping open: this shard's part of the concurrency, or of the cap of an
    /// open loop.
    pub fn concurrency(&self) -> u64 {
        self.shard.part(self.whole_concurrency()).max(1)
    }
    /// LLMPerf's file stem, `{model}_{mean_in}_{mean_out}`.
    pub fn stem(&self) -> String {
        tokenperf_core::llmperf::file_stem(
            &self.model,
            self.mean_input_tokens,
            self.mean_output_tokens,
        )
    }
    /// The concurrency (or open-loop cap) of the whole plan, every shard together.
    pub fn whole_concurrency(&self) -> u64 {
        match self.load {
            Load::Closed { concurrency } => concurrency,
            Load::Open {
                max_concurrency,
                rate,
                ..
            } => max_concurrency.unwrap_or((rate.ceil() as u64).clamp(1, 1024)),
            Load::Trace {
                max_concurrency, ..
            } => max_concurrency.unwrap_or(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn args(extra: &[&str]) -> Result<Plan, String> {
        plan_at("http://127.0.0.1:1/v1", extra)
    }

    /// The plan for a model `m` at `base` with key `k`, then `extra`, or its error as text.
    fn plan_at(base: &str, extra: &[&str]) -> Result<Plan, String> {
        let mut v = vec![
            "loadgen",
            "--model",
            "m",
            "--api-base",
            base,
            "--api-key",
            "k",
        ];
        v.extend_from_slice(extra);
        Args::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .into_plan()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn llmperf_defaults() {
        let p = args(&[]).unwrap();
        assert_eq!(
            (
                p.mean_input_tokens,
                p.stddev_input_tokens,
                p.mean_output_tokens,
                p.stddev_output_tokens
            ),
            (550, 150, 150, 80)
        );
        assert_eq!(p.load, Load::Closed { concurrency: 10 });
        assert_eq!(p.requests, Some(10));
        assert_eq!(p.timeout_s, 90.0);
        assert_eq!(p.seed, 11111);
        assert!(p.results_dir.is_none());
        assert!(p.additional_sampling_params.is_empty());
        assert!(p.request_usage);
        // LLMPerf never asked for usage: its metrics mode does not either, unless told to.
        assert!(!args(&["--metrics", "llmperf"]).unwrap().request_usage);
        assert!(
            args(&["--metrics", "llmperf", "--usage"])
                .unwrap()
                .request_usage
        );
        assert!(!args(&["--no-usage"]).unwrap().request_usage);
        assert_eq!(p.metric_definitions, MetricDefinitions::Tokenperf);
    }

    #[test]
    fn seed_command_line_parses() {
        let p = args(&[
            "--mean-input-tokens",
            "100",
            "--stddev-input-tokens",
            "50",
            "--mean-output-tokens",
            "200",
            "--stddev-output-tokens",
            "50",
            "--max-num-completed-requests",
            "50",
            "--num-concurrent-requests",
            "4",
            "--timeout",
            "600",
            "--results-dir",
            "result_outputs",
            "--llm-api",
            "openai",
        ])
        .unwrap();
        assert_eq!(p.load, Load::Closed { concurrency: 4 });
        assert_eq!((p.requests, p.timeout_s), (Some(50), 600.0));
        assert_eq!(p.results_dir, Some(PathBuf::from("result_outputs")));
    }

    /// `--ca-cert` is read when the plan is made: a missing file, a file with no certificate, or
    /// a plain http:// base names the flag before anything is sent.
    #[test]
    fn proxy_is_checked_when_the_plan_is_made_and_recorded_without_credentials() {
        let e = plan_at("https://example.com/v1", &["--proxy", "https://proxy:3128"]).unwrap_err();
        assert!(e.contains("--proxy") && e.contains("over TLS"), "{e}");
        let e = plan_at("http://example.com/v1", &["--proxy", "socks5://p:1080"]).unwrap_err();
        assert!(e.contains("--proxy") && e.contains("http://"), "{e}");
        let plan = plan_at(
            "https://example.com/v1",
            &["--proxy", "http://alice:secret@proxy:3128"],
        )
        .unwrap();
        assert_eq!(plan.proxy.as_ref().unwrap().addr, "proxy:3128");
        let recorded = serde_json::to_string(&plan).unwrap();
        assert!(
            recorded.contains("\"proxy\":\"http://proxy:3128\""),
            "{recorded}"
        );
        assert!(
            !recorded.contains("secret") && !recorded.contains("alice"),
            "{recorded}"
        );
    }

    #[test]
    fn ca_cert_is_checked_when_the_plan_is_made() {
        let plan = |base: &str, ca: &str| plan_at(base, &["--ca-cert", ca]);
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for (base, ca, says) in [
            ("https://example.com/v1", &missing, "reading"),
            ("https://example.com/v1", &empty, "no PEM certificate"),
            ("http://example.com/v1", &empty, "plain http://"),
        ] {
            let e = plan(base, ca.to_str().unwrap()).unwrap_err();
            assert!(e.contains("--ca-cert") && e.contains(says), "{e}");
        }
        // A certificate block that is not base64 is named too.
        let garbled = dir.path().join("garbled.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = plan("https://example.com/v1", garbled.to_str().unwrap()).unwrap_err();
        assert!(e.contains("--ca-cert") && e.contains("garbled.pem"), "{e}");
        // A file without end is not read into memory.
        let e = plan("https://example.com/v1", "/dev/zero").unwrap_err();
        assert!(e.contains("--ca-cert") && e.contains("larger than"), "{e}");
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (extra, flag) in [
            (
                &["--additional-sampling-params", "{nope"][..],
                "--additional-sampling-params",
            ),
            (
                &["--additional-sampling-params", "[1]"],
                "--additional-sampling-params",
            ),
            (&["--metadata", "novalue"], "--metadata"),
            (
                &["--num-concurrent-requests", "0"],
                "--num-concurrent-requests",
            ),
            (
                &["--max-num-completed-requests", "0"],
                "--max-num-completed-requests",
            ),
            (&["--timeout", "0"], "--timeout"),
            (&["--llm-api", "anthropic"], "--llm-api"),
            (&["--max-error-rate", "2"], "--max-error-rate"),
            (&["--request-timeout", "-1"], "--request-timeout"),
            (&["--request-rate", "0"], "--request-rate"),
            (
                &["--request-rate", "5", "--burstiness", "2"],
                "--burstiness",
            ),
            (
                &[
                    "--request-rate",
                    "5",
                    "--arrival",
                    "gamma",
                    "--burstiness",
                    "-1",
                ],
                "--burstiness",
            ),
            (
                &["--request-rate", "5", "--max-concurrency", "0"],
                "--max-concurrency",
            ),
            (&["--duration", "0"], "--duration"),
            (&["--slo", "itl=1"], "--slo"),
            (&["--shared-prefix", "4"], "--shared-prefix"),
            (&["--shared-prefix", "0:10"], "--shared-prefix"),
            (&["--sample", "with-replacement"], "--dataset"),
            (&["--time-scale", "2"], "--trace"),
            (&["--warmup-seconds", "-1"], "--warmup-seconds"),
            (&["--cooldown-seconds", "-1"], "--cooldown-seconds"),
            (&["--sweep", "load=3"], "--sweep"),
            (&["--sweep-stop", "error_rate=0.1"], "--sweep"),
            (
                &["--sweep", "rate=1", "--request-rate", "2"],
                "--request-rate",
            ),
            (
                &["--trace", "t.jsonl", "--request-rate", "3"],
                "--request-rate",
            ),
            (&["--trace", "t.jsonl", "--time-scale", "0"], "--time-scale"),
            (&["--ramp-up", "-2"], "--ramp-up"),
            // clap's own conflicts name both flags.
            (
                &["--request-rate", "5", "--num-concurrent-requests", "4"],
                "--num-concurrent-requests",
            ),
            (&["--arrival", "constant"], "--request-rate"),
            (&["--max-concurrency", "3"], "--request-rate"),
        ] {
            let e = args(extra).unwrap_err();
            assert!(e.contains(flag), "{extra:?}: {e}");
        }
        let e = plan_at("https://example.com/v1", &["--rx-timestamps", "kernel"]).unwrap_err();
        assert!(
            e.contains("--rx-timestamps") && e.contains("http://"),
            "{e}"
        );
        assert!(args(&["--rx-timestamps", "kernel"]).is_ok());
        let e = Args::try_parse_from(["loadgen", "--model", "m", "--api-key", "k"])
            .unwrap()
            .into_plan();
        // OPENAI_API_BASE may be set in the environment running the tests; only check when absent.
        if std::env::var_os("OPENAI_API_BASE").is_none() {
            assert!(e.unwrap_err().to_string().contains("OPENAI_API_BASE"));
        }
    }

    #[test]
    fn shards_split_every_request_and_stream_exactly_once() {
        for count in [1u64, 2, 3, 7, 16] {
            for n in [0u64, 1, 5, 16, 41, 1000] {
                let shards: Vec<Shard> = (0..count).map(|index| Shard { index, count }).collect();
                assert_eq!(shards.iter().map(|s| s.part(n)).sum::<u64>(), n);
                let parts: Vec<u64> = shards.iter().map(|s| s.part(n)).collect();
                assert!(parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1);
                for i in 0..n {
                    assert_eq!(shards.iter().filter(|s| s.owns(i)).count(), 1);
                }
                for s in &shards {
                    let ids: Vec<u64> = (0..s.part(n)).map(|k| s.id(k)).collect();
                    assert!(ids.iter().all(|&i| i < n && s.owns(i)));
                }
            }
        }
        assert_eq!(parse_shard("2/4").unwrap(), Shard { index: 2, count: 4 });
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_start_at("1764619200").unwrap(), 1_764_619_200_000_000);
        assert_eq!(
            parse_start_at("2025-12-01T20:00:00Z").unwrap(),
            1_764_619_200_000_000
        );
        assert!(parse_start_at("tomorrow").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn more_shards_than_streams_is_refused_naming_the_flag() {
        let plan = |streams: &str, shard: &str| {
            Args::from_flags(&[
                "--model",
                "m",
                "--api-base",
                "http://x/v1",
                "--api-key",
                "k",
                "--num-concurrent-requests",
                streams,
                "--shard",
                shard,
            ])
            .unwrap()
            .into_plan()
        };
        assert_eq!(
            plan("2", "0/3").unwrap_err().flag,
            "--num-concurrent-requests"
        );
        let p = plan("5", "1/3").unwrap();
        assert_eq!((p.concurrency(), p.whole_concurrency()), (2, 5));
    }

    #[test]
    fn open_loop_and_duration_plans() {
        let p = args(&[
            "--request-rate",
            "4",
            "--arrival",
            "gamma",
            "--burstiness",
            "0.5",
            "--max-concurrency",
            "8",
            "--duration",
            "30",
        ])
        .unwrap();
        assert_eq!(
            p.load,
            Load::Open {
                rate: 4.0,
                arrival: Arrival::Gamma,
                burstiness: 0.5,
                max_concurrency: Some(8)
            }
        );
        assert_eq!(
            p.requests, None,
            "a duration without a request count runs until the time is up"
        );
        assert_eq!(p.timeout_s, 30.0);
        let p = args(&[
            "--duration",
            "30",
            "--timeout",
            "10",
            "--max-num-completed-requests",
            "7",
        ])
        .unwrap();
        assert_eq!((p.requests, p.timeout_s), (Some(7), 10.0));
        let p = args(&["--request-rate", "2"]).unwrap();
        assert!(matches!(
            p.load,
            Load::Open {
                arrival: Arrival::Poisson,
                burstiness: 1.0,
                max_concurrency: None,
                ..
            }
        ));
    }

    #[test]
    fn metadata_and_params() {
        let p = args(&[
            "--metadata",
            "team=a,run=x=1",
            "--additional-sampling-params",
            "{\"temperature\":0}",
        ])
        .unwrap();
        assert_eq!(p.metadata["team"], "a");
        assert_eq!(p.metadata["run"], "x=1");
        assert_eq!(p.additional_sampling_params["temperature"], 0);
    }
}
