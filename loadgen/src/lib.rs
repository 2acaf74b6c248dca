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

use crate::client::{ClientConfig, Context, http_client};
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
    /// Interrupted by Ctrl-C; finished records were still written.
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
    (0..plan.prompt_pool())
        .map(|k| {
            let mut spec = builder
                .sample(
                    &mut rng,
                    (
                        plan.mean_input_tokens as f64,
                        plan.stddev_input_tokens as f64,
                    ),
                    out,
                )
                .context("building a prompt")?;
            if let Some(prefix) = prefixes.get(k as usize % prefixes.len().max(1)) {
                spec.prompt = format!("{prefix}{}", spec.prompt);
                spec.prompt_tokens = tokenizer.count(&spec.prompt, true)? as u64;
            }
            Ok(spec)
        })
        .collect()
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

    let http = http_client(plan.concurrency() as usize).context("building the HTTP client")?;
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
    let writer = tokio::spawn(async move {
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
            for s in &mut sinks {
                if let Err(e) = s.record(&r)
                    && error.is_none()
                {
                    error = Some(e);
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
    });

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
    if plan.cooldown_s > 0.0
        && let Some(f) = &files
    {
        // The drain is only known at the end: rewrite the records file with the marks, atomically.
        let tmp = f.requests_jsonl.with_extension("jsonl.tmp");
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&tmp).with_context(|| format!("creating '{}'", tmp.display()))?,
        );
        for r in &records {
            serde_json::to_writer(&mut w, r)?;
            std::io::Write::write_all(&mut w, b"\n")?;
        }
        std::io::Write::flush(&mut w)?;
        drop(w);
        std::fs::rename(&tmp, &f.requests_jsonl)
            .with_context(|| format!("replacing '{}'", f.requests_jsonl.display()))?;
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
    let info = RunInfo {
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
        metric_definitions: defs,
        run_started_unix_us,
        run_ended_unix_us: Some(unix_us()),
        tokenizer: tokenizer.name().to_string(),
        plan: serde_json::to_value(&plan)?,
        host: std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
    };
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
        output::write_final(f, &stem, &records, &summary, &info, defs, &extra)?;
    }
    if let Some(e) = write_error {
        return Err(e.context("writing records as they finished"));
    }

    let mut warnings = Vec::new();
    if let Some(l) = littles_law.filter(|l| l.flagged) {
        warnings.push(format!(
            "Little's law check: throughput × mean latency = {:.2} requests in flight, but {:.2} were \
             sampled ({:.0} % apart); the records may be missing requests or carry wrong times",
            l.predicted_in_flight,
            l.sampled_in_flight,
            l.relative_difference * 100.0
        ));
    }
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
    let exit = if control.is_stopped() {
        Exit::Interrupted
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
        exit,
    })
}

/// The binary's run: Ctrl-C handling, the run, then LLMPerf's summary block on stdout.
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
    let c = control.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!(
            "\nloadgen: interrupted; waiting up to {}s for requests in flight (Ctrl-C again to stop now)",
            grace.as_secs()
        );
        c.stop();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
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
    print!("{}", out.summary.console_block(&model, "openai"));
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
        if let Some(f) = &out.files {
            let dir = f.summary.parent().map(PathBuf::from).unwrap_or_default();
            eprintln!("loadgen: results written to {}", dir.display());
        }
    }
    Ok(out.exit)
}
