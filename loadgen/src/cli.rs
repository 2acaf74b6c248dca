//! Command line of `loadgen`: LLMPerf's `token_benchmark_ray.py` flags with LLMPerf's names and defaults,
//! plus ours, folded into one validated [`Plan`] by [`Args::into_plan`] (the only code that reads `Args`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;
use serde_json::{Map, Value};
use tokenperf_core::llmperf::MetricDefinitions;

use crate::client::Endpoint;

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
/// --max-error-rate, 2 usage or fatal error, 130 interrupted.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version)]
pub struct Args {
    /// Model name sent in every request; also names the output files.
    #[arg(long)]
    pub model: String,
    /// Mean number of prompt tokens (Gaussian; prompts are cut to exactly the sampled count).
    #[arg(long, default_value_t = 550)]
    pub mean_input_tokens: u64,
    /// Standard deviation of the prompt length in tokens.
    #[arg(long, default_value_t = 150)]
    pub stddev_input_tokens: u64,
    /// Mean of `max_tokens` asked per request.
    #[arg(long, default_value_t = 150)]
    pub mean_output_tokens: u64,
    /// Standard deviation of `max_tokens`.
    #[arg(long, default_value_t = 80)]
    pub stddev_output_tokens: u64,
    /// Requests in flight at once (closed loop: each finished request starts the next).
    #[arg(long, default_value_t = 10)]
    pub num_concurrent_requests: u64,
    /// Seconds after which no new request is started (in-flight ones finish).
    #[arg(long, default_value_t = 90.0, allow_negative_numbers = true)]
    pub timeout: f64,
    /// Number of requests to run.
    #[arg(long, default_value_t = 10)]
    pub max_num_completed_requests: u64,
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
    /// Seed for prompt and length sampling (LLMPerf's is 11111).
    #[arg(long, default_value_t = 11111)]
    pub seed: u64,
    /// Tokenizer: a Hugging Face repo id (looked up in the local HF cache), a tokenizer.json or a
    /// folder holding one, or `tokenperf` for the project's built-in tokenizer.
    #[arg(long, default_value = crate::tokenizer::DEFAULT_TOKENIZER)]
    pub tokenizer: String,
    /// Text file whose lines make the prompts (default: the project's own corpus).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Which definitions fill the LLMPerf-named fields.
    #[arg(long, value_enum, default_value = "tokenperf")]
    pub metrics: Metrics,
    /// Do not ask for `stream_options.include_usage` (for servers that reject it).
    #[arg(long)]
    pub no_usage: bool,
    /// Seconds a whole request may take (default: no limit).
    #[arg(long, allow_negative_numbers = true)]
    pub request_timeout: Option<f64>,
    /// Seconds of silence allowed between two reads of a response (LLMPerf's read timeout is 180).
    #[arg(long, default_value_t = 180.0, allow_negative_numbers = true)]
    pub idle_timeout: f64,
    /// Exit with code 1 when the error rate (0–1) is above this.
    #[arg(long, allow_negative_numbers = true)]
    pub max_error_rate: Option<f64>,
    /// Print only the summary (no progress, no warnings).
    #[arg(long, short)]
    pub quiet: bool,
}

/// How load is applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Load {
    /// Fixed concurrency: `concurrency` workers, each sending its next request when the last ends.
    Closed { concurrency: u64, requests: u64 },
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
    /// No new request after this.
    pub timeout_s: f64,
    pub mean_input_tokens: u64,
    pub stddev_input_tokens: u64,
    pub mean_output_tokens: u64,
    pub stddev_output_tokens: u64,
    pub additional_sampling_params: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub results_dir: Option<PathBuf>,
    pub seed: u64,
    pub tokenizer: String,
    pub corpus: Option<PathBuf>,
    pub metric_definitions: MetricDefinitions,
    pub request_usage: bool,
    pub request_timeout_s: Option<f64>,
    pub idle_timeout_s: f64,
    pub max_error_rate: Option<f64>,
    pub quiet: bool,
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

fn seconds(flag: &'static str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(bad(
            flag,
            format!("must be a positive number of seconds, got {v}"),
        ))
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

    /// Validates the flags into a [`Plan`].
    pub fn into_plan(self) -> Result<Plan, ConfigError> {
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
        if self.model.trim().is_empty() {
            return Err(bad("--model", "must not be empty"));
        }
        let api_base = self
            .api_base
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                bad(
                    "--api-base",
                    "no API base URL: set OPENAI_API_BASE (e.g. http://localhost:5543/v1) or pass --api-base",
                )
            })?;
        if !(api_base.starts_with("http://") || api_base.starts_with("https://")) {
            return Err(bad(
                "--api-base",
                format!("'{api_base}' must start with http:// or https://"),
            ));
        }
        let api_key = self.api_key.ok_or_else(|| {
            bad(
                "--api-key",
                "no API key: set OPENAI_API_KEY (any value for servers without auth) or pass --api-key",
            )
        })?;
        if self.num_concurrent_requests == 0 {
            return Err(bad("--num-concurrent-requests", "must be at least 1"));
        }
        if self.max_num_completed_requests == 0 {
            return Err(bad("--max-num-completed-requests", "must be at least 1"));
        }
        if self.mean_input_tokens == 0 {
            return Err(bad("--mean-input-tokens", "must be at least 1"));
        }
        if self.mean_output_tokens == 0 {
            return Err(bad("--mean-output-tokens", "must be at least 1"));
        }
        let additional: Value =
            serde_json::from_str(&self.additional_sampling_params).map_err(|e| {
                bad(
                    "--additional-sampling-params",
                    format!("not valid JSON: {e}"),
                )
            })?;
        let Value::Object(additional_sampling_params) = additional else {
            return Err(bad(
                "--additional-sampling-params",
                "must be a JSON object, e.g. '{\"temperature\": 0}'",
            ));
        };
        if let Some(r) = self.max_error_rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(bad(
                "--max-error-rate",
                format!("must be between 0 and 1, got {r}"),
            ));
        }
        let request_timeout_s = self
            .request_timeout
            .map(|v| seconds("--request-timeout", v))
            .transpose()?;
        Ok(Plan {
            model: self.model,
            llm_api: self.llm_api,
            api_base,
            api_key,
            endpoint: self.endpoint,
            load: Load::Closed {
                concurrency: self.num_concurrent_requests,
                requests: self.max_num_completed_requests,
            },
            timeout_s: seconds("--timeout", self.timeout)?,
            mean_input_tokens: self.mean_input_tokens,
            stddev_input_tokens: self.stddev_input_tokens,
            mean_output_tokens: self.mean_output_tokens,
            stddev_output_tokens: self.stddev_output_tokens,
            additional_sampling_params,
            metadata: parse_metadata(&self.metadata)?,
            results_dir: (!self.results_dir.is_empty()).then(|| PathBuf::from(self.results_dir)),
            seed: self.seed,
            tokenizer: self.tokenizer,
            corpus: self.corpus,
            metric_definitions: match self.metrics {
                Metrics::Tokenperf => MetricDefinitions::Tokenperf,
                Metrics::Llmperf => MetricDefinitions::Llmperf,
            },
            request_usage: !self.no_usage,
            request_timeout_s,
            idle_timeout_s: seconds("--idle-timeout", self.idle_timeout)?,
            max_error_rate: self.max_error_rate,
            quiet: self.quiet,
        })
    }
}

impl Plan {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_s)
    }
    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout_s.map(Duration::from_secs_f64)
    }
    pub fn requests(&self) -> u64 {
        match self.load {
            Load::Closed { requests, .. } => requests,
        }
    }
    pub fn concurrency(&self) -> u64 {
        match self.load {
            Load::Closed { concurrency, .. } => concurrency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn args(extra: &[&str]) -> Result<Plan, String> {
        let mut v = vec![
            "loadgen",
            "--model",
            "m",
            "--api-base",
            "http://127.0.0.1:1/v1",
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
        assert_eq!(
            p.load,
            Load::Closed {
                concurrency: 10,
                requests: 10
            }
        );
        assert_eq!(p.timeout_s, 90.0);
        assert_eq!(p.seed, 11111);
        assert!(p.results_dir.is_none());
        assert!(p.additional_sampling_params.is_empty());
        assert!(p.request_usage);
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
        assert_eq!(
            p.load,
            Load::Closed {
                concurrency: 4,
                requests: 50
            }
        );
        assert_eq!(p.results_dir, Some(PathBuf::from("result_outputs")));
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
        ] {
            let e = args(extra).unwrap_err();
            assert!(e.contains(flag), "{extra:?}: {e}");
        }
        let e = Args::try_parse_from(["loadgen", "--model", "m", "--api-key", "k"])
            .unwrap()
            .into_plan();
        // OPENAI_API_BASE may be set in the environment running the tests; only check when absent.
        if std::env::var_os("OPENAI_API_BASE").is_none() {
            assert!(e.unwrap_err().to_string().contains("OPENAI_API_BASE"));
        }
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
