//! loadgen: an LLMPerf-compatible load generator for OpenAI-style streaming servers.
//!
//! # Layout
//! * [`cli`]: flags (LLMPerf's names and defaults) → validated [`cli::Plan`].
//! * [`prompt`]: LLMPerf's prompt shape, token-exact.
//! * [`tokenizer`]: `--tokenizer` resolution (built-in, file, Hugging Face cache).
//! * [`client`]: one measured request → one [`RequestRecord`].
//! * [`sse`]: the incremental SSE parser.
//! * [`runner`]: closed- and open-loop scheduling, stop signals; [`arrival`]: open-loop schedules.
//! * [`output`]: record sinks and the final files.
//!
//! [`run_plan`] is the whole run as a library call (tests use it); [`run`] adds signal handling and
//! printing for the binary.

pub mod arrival;
pub mod cli;
pub mod client;
pub mod dataset;
pub mod http;
pub mod output;
pub mod prompt;
pub mod runner;
pub mod selfcheck;
pub mod sse;
pub mod sweep;
pub mod tokenizer;
pub mod trace;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokenperf_core::background::Background;
use tokenperf_core::clock::MonoAnchor;
use tokenperf_core::llmperf::file_stem;
use tokenperf_core::record::RequestRecord;
use tokenperf_core::rng::Rng;
use tokenperf_core::slo::Goodput;
use tokenperf_core::summary::{LittlesLaw, RunInfo, RunSummary};
use tokenperf_core::tokenizer::PROJECT_CORPUS;
use tokio::sync::mpsc;

pub use cli::{Args, Load, Plan};
pub use runner::Control;

use crate::client::{ClientConfig, Context};
use crate::output::{JsonlSink, OutputFiles, Progress, RecordSink};
use crate::prompt::{PromptBuilder, PromptSpec};

/// Process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The run completed (and, with --max-error-rate, stayed under it).
    Ok = 0,
    /// The run completed with an error rate above --max-error-rate.
    ErrorRate = 1,
    /// Bad flags, unreadable files, or another fatal error.
    Fatal = 2,
    /// No request succeeded (nothing listening, a wrong URL or key, every request failing).
    NoSuccess = 3,
    /// Interrupted by Ctrl-C, SIGTERM or SIGHUP; finished records were still written.
    Interrupted = 130,
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutput {
    pub records: Vec<RequestRecord>,
    pub summary: RunSummary,
    pub info: RunInfo,
    /// `None` when no results dir was given.
    pub files: Option<OutputFiles>,
    /// Every record, those left out by --warmup-seconds/--cooldown-seconds included.
    pub all_records: Vec<RequestRecord>,
    /// Warnings for the user (e.g. token-count disagreements).
    pub warnings: Vec<String>,
    /// Error against ground truth, when the records carry it (`--ground-truth` against a mock).
    pub measurement_error: Option<tokenperf_core::selfcheck::SelfCheck>,
    /// The self-check run after the run (`--selfcheck`).
    pub selfcheck: Option<selfcheck::SelfCheckReport>,
    /// Throughput × latency against the sampled in-flight count.
    pub littles_law: Option<LittlesLaw>,
    /// Goodput against `--slo`.
    pub goodput: Option<Goodput>,
    /// A file that could not be written (a full disk): the run stopped there, and the exit is
    /// [`Exit::Fatal`]; the summary is still complete for the console.
    pub file_error: Option<anyhow::Error>,
    pub exit: Exit,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Marks records sent in the first `warmup_s` seconds, or finished in the last `cooldown_s` seconds
/// of the run, as excluded from the results.
pub fn mark_trims(records: &mut [RequestRecord], warmup_s: f64, cooldown_s: f64) {
    let end = records
        .iter()
        .filter_map(|r| r.done_at_us)
        .max()
        .unwrap_or(0);
    let warm_us = (warmup_s * 1e6) as u64;
    let cool_from = end.saturating_sub((cooldown_s * 1e6) as u64);
    for r in records.iter_mut() {
        let sent = r.sent_at_us.unwrap_or(r.intended_send_us);
        if warmup_s > 0.0 && sent < warm_us {
            r.excluded = Some("warmup".into());
        } else if cooldown_s > 0.0 && r.done_at_us.is_some_and(|d| d > cool_from) {
            r.excluded = Some("cooldown".into());
        }
    }
}

/// Samples every request's prompt and `max_tokens` up front, seeded, as LLMPerf does: from the corpus,
/// or from `--dataset`; with `--shared-prefix`, prefixes go ahead of the prompts in turn.
pub fn build_prompts(
    plan: &Plan,
    builder: &PromptBuilder<'_>,
    tokenizer: &tokenperf_core::tokenizer::TokenCounter,
) -> anyhow::Result<Vec<PromptSpec>> {
    let mut rng = Rng::new(plan.seed);
    let out = (
        plan.mean_output_tokens as f64,
        plan.stddev_output_tokens as f64,
    );
    let prefixes = match plan.shared_prefix {
        Some((n, p)) => dataset::shared_prefixes(builder, tokenizer, &mut rng, n, p)
            .context("building the shared prefixes (--shared-prefix)")?,
        None => Vec::new(),
    };
    if let Some((path, format, sampling)) = &plan.dataset {
        let items = match format {
            dataset::DatasetFormat::Jsonl => dataset::read_jsonl(path)?,
            dataset::DatasetFormat::Sharegpt => dataset::read_sharegpt(path, tokenizer)?,
        };
        return dataset::specs(
            &items,
            plan.prompt_pool(),
            *sampling,
            &prefixes,
            tokenizer,
            &mut rng,
            out,
        );
    }
    let input = (
        plan.mean_input_tokens as f64,
        plan.stddev_input_tokens as f64,
    );
    let mut llmperf = match plan.prompt_sampling {
        prompt::PromptSampling::Llmperf => Some(
            prompt::LlmperfSampler::new(builder.corpus(), tokenizer, plan.seed)
                .context("reading the corpus (--corpus)")?,
        ),
        prompt::PromptSampling::Exact => None,
    };
    (0..plan.prompt_pool())
        .map(|k| {
            let mut spec = match &mut llmperf {
                Some(s) => s.next(input, out),
                None => builder.sample(&mut rng, input, out),
            }
            .context("building a prompt")?;
            if let Some(prefix) = prefixes.get(k as usize % prefixes.len().max(1)) {
                spec.prompt = format!("{prefix}{}", spec.prompt);
                spec.prompt_tokens = tokenizer.count(&spec.prompt, true)? as u64;
            }
            Ok(spec)
        })
        .collect()
}

/// The model ids the server lists at `{base}/models`, when it answers that in a few seconds with
/// OpenAI's shape; `None` otherwise (many servers do not serve it, and the run reports its own errors).
pub async fn list_models(plan: &Plan) -> Option<Vec<String>> {
    let http = client::http_client(1).ok()?;
    let url = format!("{}/models", plan.api_base.trim_end_matches('/'));
    let wait = plan.idle_timeout().min(Duration::from_secs(5));
    let resp = http
        .get(&url)
        .bearer_auth(&plan.api_key)
        .timeout(wait)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    // Read at most 1 MiB of it.
    let mut body = Vec::new();
    let mut resp = resp;
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > 1 << 20 {
            return None;
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let ids = v
        .get("data")?
        .as_array()?
        .iter()
        .filter_map(|m| m.get("id")?.as_str().map(str::to_string))
        .collect();
    Some(ids)
}

/// The run's metadata (`*_run.json`): what was asked, with what, where and when.
fn run_info(
    plan: &Plan,
    tokenizer: &tokenperf_core::tokenizer::TokenCounter,
    run_started_unix_us: u64,
    server_models: Option<Vec<String>>,
) -> anyhow::Result<RunInfo> {
    Ok(RunInfo {
        schema_version: tokenperf_core::SCHEMA_VERSION,
        tool: format!("tokenperf-loadgen {}", env!("CARGO_PKG_VERSION")),
        model: plan.model.clone(),
        llm_api: "openai".into(),
        mean_input_tokens: plan.mean_input_tokens,
        stddev_input_tokens: plan.stddev_input_tokens,
        mean_output_tokens: plan.mean_output_tokens,
        stddev_output_tokens: plan.stddev_output_tokens,
        num_concurrent_requests: match plan.load {
            Load::Closed { concurrency } => concurrency,
            Load::Open {
                max_concurrency, ..
            }
            | Load::Trace {
                max_concurrency, ..
            } => max_concurrency.unwrap_or(0),
        },
        additional_sampling_params: plan.additional_sampling_params.clone(),
        metadata: plan.metadata.clone(),
        metric_definitions: plan.metric_definitions,
        run_started_unix_us,
        run_ended_unix_us: Some(unix_us()),
        tokenizer: tokenizer.name().to_string(),
        plan: serde_json::to_value(plan)?,
        server_models,
        host: std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
    })
}

/// What the user must know before trusting a run's numbers: records that disagree with the live
/// in-flight count, a model the server does not list, and the summary's own health warnings.
fn run_warnings(
    plan: &Plan,
    summary: &RunSummary,
    littles_law: Option<LittlesLaw>,
    server_models: Option<&[String]>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(l) = littles_law.filter(|l| l.flagged) {
        warnings.push(format!(
            "Little's law: the records give {:.2} requests in flight on average (throughput × mean \
             latency), but the live counter sampled {:.2} ({:.0} % apart, {} samples). Both count the \
             same interval of each request, so records were lost or carry wrong times: please report it",
            l.predicted_in_flight,
            l.sampled_in_flight,
            l.relative_difference * 100.0,
            l.samples
        ));
    }
    // A server that answers any name (and names it back) may list others: only a listed mismatch
    // that the responses do not contradict is worth a warning.
    let answered_as_asked = summary.response_models.contains_key(&plan.model);
    if let Some(models) = server_models.filter(|m| !m.is_empty())
        && !models.iter().any(|m| m == &plan.model)
        && !answered_as_asked
    {
        warnings.push(format!(
            "the server lists {} at /models, not '{}'; servers that ignore the name answer anyway \
             (the models the responses named are in the summary)",
            models
                .iter()
                .take(5)
                .map(|m| format!("'{m}'"))
                .collect::<Vec<_>>()
                .join(", "),
            plan.model
        ));
    }
    warnings.extend(summary.health_warnings(Some(&plan.model)));
    warnings
}

/// Runs `plan` to completion (or until `control` stops it) and writes its files.
pub async fn run_plan(plan: Plan, control: Control) -> anyhow::Result<RunOutput> {
    let tokenizer = Arc::new(
        tokenizer::resolve(&plan.tokenizer)
            .await
            .context("loading the tokenizer (--tokenizer)")?,
    );
    let corpus_text = match &plan.corpus {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading the corpus file '{}' (--corpus)", p.display()))?,
        None => PROJECT_CORPUS.to_string(),
    };
    let builder = PromptBuilder::new(&corpus_text, &tokenizer)?;
    if builder.is_empty() {
        anyhow::bail!("--corpus: the corpus has no non-empty lines to build prompts from");
    }
    // A trace brings its own schedule and lengths; everything else samples prompts up front.
    let (trace_schedule, specs) = match &plan.load {
        Load::Trace {
            path, time_scale, ..
        } => {
            let mut entries = trace::read(path)?;
            if let Some(n) = plan.requests {
                entries.truncate(n as usize);
            }
            let mut rng = Rng::new(plan.seed);
            let (schedule, specs) =
                trace::plan(&entries, *time_scale, &builder, &tokenizer, &mut rng)?;
            (Some(schedule), specs)
        }
        _ => (None, build_prompts(&plan, &builder, &tokenizer)?),
    };
    let mut specs = specs;
    if plan.cache_bust {
        // Salted with the wall clock, so a re-run with the same seed does not meet its own prefixes.
        prompt::bust_cache(&mut specs, plan.seed ^ unix_us(), &tokenizer)?;
    }
    let specs = Arc::new(specs);

    let stem = file_stem(&plan.model, plan.mean_input_tokens, plan.mean_output_tokens);
    let files = match &plan.results_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the results dir '{}'", dir.display()))?;
            Some(OutputFiles::new(dir, &stem))
        }
        None => None,
    };
    let in_flight = Arc::new(AtomicI64::new(0));
    let mut sinks: Vec<Box<dyn RecordSink>> = vec![Box::new(Progress::new(
        plan.requests,
        plan.quiet,
        in_flight.clone(),
    ))];
    if let Some(f) = &files {
        sinks.push(Box::new(JsonlSink::create(&f.requests_jsonl)?));
    }

    let http = http::HttpClient::new(
        &plan.api_base,
        plan.concurrency() as usize,
        plan.idle_timeout(),
    )
    .map_err(|e| anyhow::anyhow!("--api-base: {e}"))?;
    let finisher = Arc::new(
        Background::for_this_machine("loadgen-count")
            .context("starting the token-counting threads")?,
    );
    let client_config = ClientConfig {
        api_base: plan.api_base.clone(),
        api_key: plan.api_key.clone(),
        model: plan.model.clone(),
        endpoint: plan.endpoint,
        additional_params: plan.additional_sampling_params.clone(),
        request_usage: plan.request_usage,
        idle_timeout: plan.idle_timeout(),
        total_timeout: plan.request_timeout(),
        ground_truth: plan.ground_truth,
        max_line_bytes: plan.max_line_bytes,
        max_response_bytes: plan.max_response_bytes,
        ignore_eos: plan.ignore_eos,
    };
    if plan.warmup_requests > 0 {
        // Warm-up: same prompts, a closed loop at the run's concurrency; the records are discarded.
        let warm = Arc::new(Context {
            config: client_config.clone(),
            http: http.clone(),
            run_start: Instant::now(),
            run_start_mono_us: 0,
            tokenizer: tokenizer.clone(),
            in_flight: Arc::new(AtomicI64::new(0)),
            finisher: finisher.clone(),
        });
        let (wtx, mut wrx) = mpsc::unbounded_channel();
        let drain = tokio::spawn(async move { while wrx.recv().await.is_some() {} });
        runner::closed_loop(
            warm,
            specs.clone(),
            plan.concurrency(),
            Some(plan.warmup_requests),
            Duration::from_secs_f64(plan.ramp_up_s),
            Instant::now() + Duration::from_secs_f64(plan.timeout_s),
            control.clone(),
            wtx,
        )
        .await;
        let _ = drain.await;
    }
    let server_models = list_models(&plan).await;
    // Connections opened now keep their set-up out of the first requests' timing.
    http.warm(plan.concurrency() as usize).await;
    let run_started_unix_us = unix_us();
    let anchor = MonoAnchor::now();
    let ctx = Arc::new(Context {
        config: client_config,
        http,
        run_start: anchor.instant(),
        run_start_mono_us: anchor.anchor_us(),
        tokenizer: tokenizer.clone(),
        in_flight: in_flight.clone(),
        finisher,
    });
    // Samples the in-flight count every 10 ms: an instrument independent of the records, for the
    // Little's-law check.
    let sampler = {
        let ctx = ctx.clone();
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => samples.push((ctx.now_us(), ctx.in_flight.load(Ordering::Relaxed))),
                    _ = &mut done_rx => break,
                }
            }
            samples
        });
        (done_tx, task)
    };

    let defs = plan.metric_definitions;
    let slo = plan.slo;
    let warm_us = (plan.warmup_s * 1e6) as u64;
    let (tx, mut rx) = mpsc::unbounded_channel::<RequestRecord>();
    // The writer runs on its own task so file I/O never delays a worker's next read.
    // The writer runs on its own task so file I/O never delays a worker's next read. The first failed
    // write (a full disk) stops the run: nothing after it could be kept.
    let writer = {
        let control = control.clone();
        tokio::spawn(async move {
            let mut records = Vec::new();
            let mut error: Option<anyhow::Error> = None;
            while let Some(mut r) = rx.recv().await {
                r.finalize(defs);
                if let Some(slo) = slo {
                    r.slo_met = Some(slo.met_by(&r));
                }
                if warm_us > 0 && r.sent_at_us.unwrap_or(r.intended_send_us) < warm_us {
                    r.excluded = Some("warmup".into());
                }
                if error.is_none() {
                    for s in &mut sinks {
                        if let Err(e) = s.record(&r) {
                            eprintln!("loadgen: error: {e:#}; stopping the run");
                            control.stop();
                            error = Some(e);
                            break;
                        }
                    }
                }
                records.push(r);
            }
            for s in &mut sinks {
                if let Err(e) = s.finish()
                    && error.is_none()
                {
                    error = Some(e);
                }
            }
            (records, error)
        })
    };

    let stop_at = ctx.run_start + Duration::from_secs_f64(plan.timeout_s);
    match &plan.load {
        Load::Trace {
            max_concurrency, ..
        } => {
            let schedule = trace_schedule.as_deref().unwrap_or_default();
            runner::open_loop(
                ctx.clone(),
                specs.clone(),
                schedule,
                *max_concurrency,
                stop_at,
                control.clone(),
                tx,
            )
            .await;
        }
        &Load::Closed { concurrency } => {
            runner::closed_loop(
                ctx.clone(),
                specs.clone(),
                concurrency,
                plan.requests,
                Duration::from_secs_f64(plan.ramp_up_s),
                stop_at,
                control.clone(),
                tx,
            )
            .await;
        }
        &Load::Open {
            rate,
            arrival,
            burstiness,
            max_concurrency,
        } => {
            let mut rng = Rng::new(plan.seed ^ 0x5EED_A771_7A15);
            let mut schedule = arrival::schedule(
                &mut rng,
                rate,
                arrival,
                burstiness,
                plan.requests,
                Some(plan.timeout_s),
            );
            arrival::ramp(&mut schedule, plan.ramp_up_s);
            if plan.requests.is_none() {
                // A time-bounded run: arrivals the ramp pushed past its end are not part of it.
                schedule.retain(|&t| t as f64 <= plan.timeout_s * 1e6);
            }
            runner::open_loop(
                ctx.clone(),
                specs.clone(),
                &schedule,
                max_concurrency,
                stop_at,
                control.clone(),
                tx,
            )
            .await;
        }
    }
    let (mut records, write_error) = writer.await.context("the record writer task failed")?;
    // Warm-up and cool-down trims: the records stay (and say why they are out); the results use the rest.
    if plan.warmup_s > 0.0 || plan.cooldown_s > 0.0 {
        mark_trims(&mut records, plan.warmup_s, plan.cooldown_s);
    }
    let mut file_error = write_error.map(|e| e.context("writing records as they finished"));
    if plan.cooldown_s > 0.0
        && file_error.is_none()
        && let Some(f) = &files
    {
        // The drain is only known at the end: rewrite the records file with the marks, atomically.
        file_error = output::write_atomically(&f.requests_jsonl, |w| {
            for r in &records {
                serde_json::to_writer(&mut *w, r)?;
                std::io::Write::write_all(w, b"\n")?;
            }
            Ok(())
        })
        .err();
    }
    let all_records = records;
    let records: Vec<RequestRecord> = all_records
        .iter()
        .filter(|r| r.excluded.is_none())
        .cloned()
        .collect();
    let _ = sampler.0.send(());
    let samples = sampler.1.await.unwrap_or_default();
    let littles_law = LittlesLaw::check(&records, &samples);

    let summary = RunSummary::from_records(&records, defs);
    let info = run_info(
        &plan,
        &tokenizer,
        run_started_unix_us,
        server_models.clone(),
    )?;
    let measurement_error = tokenperf_core::selfcheck::SelfCheck::from_records(&records);
    let goodput = plan.slo.map(|slo| Goodput::compute(&records, slo));
    let selfcheck = if plan.selfcheck {
        let gap_ms = summary
            .inter_chunk_gap_s
            .p50
            .map_or(10.0, |g| (g * 1e3).clamp(1.0, 100.0));
        let a = selfcheck::SelfCheckArgs {
            concurrency: plan.concurrency(),
            requests: Some((plan.concurrency() * 2).clamp(20, 400)),
            ttft_ms: 50.0,
            itl_ms: gap_ms,
            tokens: plan.mean_output_tokens.clamp(8, 512),
            api_base: None,
            json: None,
        };
        Some(
            Box::pin(selfcheck::run_selfcheck(&a))
                .await
                .context("the self-check after the run")?,
        )
    } else {
        None
    };
    if let Some(f) = &files {
        let mut extra = Vec::new();
        if let Some(m) = &measurement_error {
            extra.push(("measurement_error", serde_json::to_value(m)?));
        }
        if let Some(l) = &littles_law {
            extra.push(("littles_law", serde_json::to_value(l)?));
        }
        if let Some(g) = &goodput {
            extra.push(("goodput", serde_json::to_value(g)?));
        }
        if let Some(s) = &selfcheck {
            extra.push(("selfcheck", serde_json::to_value(s)?));
        }
        if let Err(e) = output::write_final(f, &stem, &records, &summary, &info, defs, &extra) {
            file_error.get_or_insert(e);
        }
    }

    let mut warnings = run_warnings(&plan, &summary, littles_law, server_models.as_deref());
    if summary.output_token_mismatches > 0 {
        warnings.push(format!(
            "{} of {} successful requests: the server's usage and the tokenizer ('{}') disagree on \
             output tokens by more than 5 %; metrics use the server's count (see *_requests.jsonl, \
             output_tokens)",
            summary.output_token_mismatches,
            summary.num_completed_requests,
            tokenizer.name()
        ));
    }
    let elapsed = ctx.run_start.elapsed().as_secs_f64();
    if elapsed >= plan.timeout_s
        && plan
            .requests
            .is_some_and(|n| (summary.num_requests_started) < n)
    {
        warnings.push("Test timed out before all requests could be completed.".into());
    }
    let exit = if file_error.is_some() {
        Exit::Fatal
    } else if control.is_stopped() {
        Exit::Interrupted
    } else if summary.num_completed_requests == 0 {
        Exit::NoSuccess
    } else if plan
        .max_error_rate
        .is_some_and(|max| summary.error_rate > max)
    {
        Exit::ErrorRate
    } else {
        Exit::Ok
    };
    Ok(RunOutput {
        all_records,
        records,
        summary,
        info,
        files,
        warnings,
        measurement_error,
        selfcheck,
        littles_law,
        goodput,
        file_error,
        exit,
    })
}

/// SIGINT (Ctrl-C), SIGTERM (`timeout`, `docker stop`, a CI cancel) and SIGHUP (a closed terminal)
/// all mean the same: stop scheduling, let requests in flight finish, write everything.
pub struct StopSignals {
    #[cfg(unix)]
    streams: Vec<(tokio::signal::unix::Signal, &'static str)>,
}

impl StopSignals {
    /// Installs the handlers; from here on these signals no longer kill the process.
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                streams: vec![
                    (signal(SignalKind::interrupt())?, "SIGINT"),
                    (signal(SignalKind::terminate())?, "SIGTERM"),
                    (signal(SignalKind::hangup())?, "SIGHUP"),
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next of them and names it.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let waits = self.streams.iter_mut().map(|(s, name)| {
                Box::pin(async move {
                    s.recv().await;
                    *name
                })
            });
            futures_util::future::select_all(waits).await.0
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "interrupt"
        }
    }
}

/// The binary's run: signal handling, the run, then LLMPerf's summary block on stdout.
pub async fn run(args: Args) -> anyhow::Result<Exit> {
    if let Some(cli::Command::Selfcheck(a)) = &args.command {
        let report = selfcheck::run_selfcheck(a).await?;
        print!("{}", report.table());
        return Ok(Exit::Ok);
    }
    let plan = args.into_plan()?;
    let (model, quiet, grace) = (plan.model.clone(), plan.quiet, Duration::from_secs(10));
    let sweeping = plan.sweep.is_some();
    let control = Control::new();
    let mut signals =
        StopSignals::new().context("installing the SIGINT/SIGTERM/SIGHUP handlers")?;
    let c = control.clone();
    tokio::spawn(async move {
        let first = signals.recv().await;
        eprintln!(
            "\nloadgen: {first}: stopping; waiting up to {}s for requests in flight (a second signal stops them now)",
            grace.as_secs()
        );
        c.stop();
        tokio::select! {
            _ = signals.recv() => {},
            _ = tokio::time::sleep(grace) => {},
        }
        c.cut();
    });
    if sweeping {
        let (result, exit) = sweep::run_sweep(plan, control).await?;
        print!("{}", result.table());
        return Ok(exit);
    }
    let out = run_plan(plan, control).await?;
    print_run(&out, &model, quiet);
    Ok(out.exit)
}

/// What a finished run prints: LLMPerf's block on stdout, then (unless `quiet`) ours and the
/// warnings on stderr; failures always, for a run that failed must look failed.
fn print_run(out: &RunOutput, model: &str, quiet: bool) {
    print!("{}", out.summary.console_block(model, "openai"));
    if !quiet {
        print!("{}", out.summary.tokenperf_block());
        if let Some(g) = &out.goodput {
            println!("  {}", g.line());
        }
        if let Some(l) = &out.littles_law {
            println!(
                "  Little's law: {:.2} req/s × {:.3} s = {:.2} in flight; sampled {:.2} ({:.1} % apart{})",
                l.throughput_rps,
                l.mean_latency_s,
                l.predicted_in_flight,
                l.sampled_in_flight,
                l.relative_difference * 100.0,
                if l.flagged { ", FLAGGED" } else { "" }
            );
        }
        if let Some(m) = &out.measurement_error {
            print!("{}", m.table());
        }
        if let Some(sc) = &out.selfcheck {
            if let Some(e) = &sc.error {
                let abs99 = |st: &tokenperf_core::stats::Stats| {
                    st.p99.unwrap_or(0.0).abs().max(st.p50.unwrap_or(0.0).abs())
                };
                println!(
                    "measurement error at this load ({} streams): TTFT ±{:.2} ms, inter-token gap ±{:.2} ms (p99, self-check)",
                    sc.concurrency,
                    abs99(&e.ttft_error_ms),
                    abs99(&e.gap_error_ms)
                );
            }
            print!("{}", sc.table());
        }
        for w in &out.warnings {
            eprintln!("loadgen: warning: {w}");
        }
    }
    // Failures are printed even with --quiet: a run that failed must look failed.
    eprint!("{}", out.summary.error_breakdown_text());
    if let Some(e) = &out.file_error {
        eprintln!("loadgen: error: {e:#}");
        return;
    }
    match (&out.files, out.exit) {
        (_, Exit::NoSuccess) => eprintln!(
            "loadgen: error: no request succeeded (exit code {})",
            Exit::NoSuccess as u8
        ),
        (Some(f), _) if !quiet => {
            let dir = f.summary.parent().map(PathBuf::from).unwrap_or_default();
            eprintln!("loadgen: results written to {}", dir.display());
        }
        (None, _) if !quiet => {
            eprintln!("loadgen: no --results-dir given, so no files were written (as LLMPerf)")
        }
        _ => {}
    }
}
