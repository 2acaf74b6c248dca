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
//! printing for the binary. A run goes through five stages, each with one job, and a request can be
//! followed from flag to file through them: the plan ([`cli::Args::into_plan`]), the workload
//! ([`workload`]: prompts and arrivals, from the seed), the drive ([`runner`] through [`client`]),
//! the collect stage ([`collect`]: each record written, tallied and let go), and the report (the
//! summary, end-of-run files and exit code).

pub mod arrival;
pub mod busy;
pub mod cli;
pub mod client;
pub mod clock;
pub mod collect;
pub mod cut;
pub mod dataset;
pub mod h1;
pub mod http;
pub mod jsonl;
pub mod output;
pub mod prompt;
pub mod proxy;
pub mod runner;
pub mod rxstamp;
pub mod selfcheck;
pub mod sse;
pub mod sweep;
pub mod tokenizer;
pub mod trace;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokenperf_core::background::Background;
use tokenperf_core::clock::MonoAnchor;
use tokenperf_core::record::RequestRecord;
use tokenperf_core::slo::Goodput;
use tokenperf_core::summary::{
    InFlightSamples, LittlesLaw, ReadLag, RunInfo, RunSummary, ShardInfo, StartInfo,
};
use tokio::sync::mpsc;

pub use cli::{Args, Load, Plan};
pub use runner::Control;

use crate::client::{ClientConfig, Context};
use crate::output::{JsonlSink, OutputFiles, Progress, RecordSink};
use crate::workload::Workload;

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
    /// Records the run produced, trimmed ones included (each went to the sinks and left memory).
    pub records_received: u64,
    pub summary: RunSummary,
    pub info: RunInfo,
    /// `None` when no results dir was given.
    pub files: Option<OutputFiles>,
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
    /// A file that could not be written (a full disk; the run stopped there), or prompts that could
    /// not all be built: the exit is [`Exit::Fatal`]; the summary is still complete for the console.
    pub file_error: Option<anyhow::Error>,
    pub exit: Exit,
}

pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The model ids the server lists at `{base}/models`, when it answers that in a few seconds with
/// OpenAI's shape; `None` otherwise (many servers do not serve it, and the run reports its own errors).
/// `measured` is the measured requests' client: the listing trusts what they trust (`--ca-cert`).
pub async fn list_models(plan: &Plan, measured: &http::HttpClient) -> Option<Vec<String>> {
    let url = format!("{}/models", plan.api_base.trim_end_matches('/'));
    let http = match measured.tls_config() {
        None => client::plain_http_client(plan.proxy.as_ref()).ok()?,
        Some(tls) => client::preconfigured_http_client(tls, plan.proxy.as_ref()).ok()?,
    };
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
    started: &Started,
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
            Load::Closed { .. } => plan.whole_concurrency(),
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
        run_started_unix_us: started.unix_us,
        run_ended_unix_us: Some(unix_us()),
        tokenizer: tokenizer.name().to_string(),
        plan: serde_json::to_value(plan)?,
        server_models,
        host: std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        shard: (!plan.shard.is_whole()).then_some(ShardInfo {
            index: plan.shard.index,
            count: plan.shard.count,
        }),
        start: plan.start_at_unix_us.map(|at| StartInfo {
            start_at_unix_us: at,
            start_skew_us: started.unix_us as i64 - at as i64,
        }),
        clock: clock::clock_sync(),
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
             latency) and {:.2} more whose end had arrived and waited for loadgen to read it, but \
             the live counter sampled {:.2} ({:.0} % apart, {} samples). Both count the same \
             interval of each request, so records were lost or carry wrong times: please report it",
            l.predicted_in_flight,
            l.unread_in_flight,
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

/// Requests held back by the record writer (how many, µs in all, the longest), and what the wait
/// did to the load: the client, not the server, limited it.
fn record_wait_warning(load: &Load, (count, total_us, longest_us): (u64, u64, u64)) -> String {
    let effect = match load {
        Load::Closed { .. } => {
            "a worker sends its next request only after such a wait, so the load offered was \
             lower than asked"
        }
        Load::Open {
            max_concurrency: Some(_),
            ..
        }
        | Load::Trace {
            max_concurrency: Some(_),
            ..
        } => {
            "a request keeps its --max-concurrency slot through such a wait, so later arrivals \
             may have been dropped for want of a slot"
        }
        _ => "the arrivals kept their schedule, but the waiting requests were held in memory",
    };
    format!(
        "{count} requests waited for the record writer ({:.1} s in all, the longest {:.1} ms): \
         token counting (at low priority, so as not to delay measurements) or the disk fell \
         behind; {effect}. Give loadgen more cores or fewer streams",
        total_us as f64 / 1e6,
        longest_us as f64 / 1e3
    )
}

/// Runs `plan` to completion (or until `control` stops it) and writes its files.
pub async fn run_plan(plan: Plan, control: Control) -> anyhow::Result<RunOutput> {
    run_plan_with(plan, control, Vec::new()).await
}

/// [`run_plan`] with more sinks for the records (e.g. [`collect::KeepAll`] in tests): each gets
/// every record, trimmed ones included, as it is written.
pub async fn run_plan_with(
    plan: Plan,
    control: Control,
    observers: Vec<Box<dyn RecordSink>>,
) -> anyhow::Result<RunOutput> {
    // The connections and the server's model list are made while the tokenizer loads (tens of ms
    // for a large one), on the runtime's workers: both are on the way to the first request.
    let roots = plan.ca_certs()?;
    let http = http::HttpClient::new(
        &plan.api_base,
        plan.concurrency() as usize,
        plan.idle_timeout(),
        &roots,
    )
    .map_err(|e| anyhow::anyhow!("--api-base: {e}"))?
    .with_rx_timestamps(plan.rx_timestamps)
    .with_proxy(plan.proxy.clone());
    let warming = tokio::spawn({
        let (http, n) = (http.clone(), plan.concurrency() as usize);
        async move { http.warm(n).await }
    });
    let models = tokio::spawn({
        let (plan, http) = (plan.clone(), http.clone());
        async move { list_models(&plan, &http).await }
    });
    let workload = Workload::prepare(&plan).await?;
    let files = output_files(&plan)?;
    let in_flight = Arc::new(AtomicI64::new(0));
    let mut sinks: Vec<Box<dyn RecordSink>> = vec![Box::new(Progress::new(
        plan.requests.map(|n| plan.shard.part(n)),
        plan.quiet,
        in_flight.clone(),
    ))];
    if let Some(f) = &files {
        sinks.push(Box::new(JsonlSink::create(&f.requests_jsonl)?));
    }
    sinks.extend(observers);
    let client = Client::new(&plan, http, &workload, in_flight)?;
    let _ = warming.await;
    if plan.warmup_requests > 0 {
        client.warm_up(&plan, &workload, &control).await;
        // The warm-up's connections may have been closed by the server: open the rest again.
        client.http.warm(plan.concurrency() as usize).await;
    }
    let server_models = models.await.ok().flatten();
    wait_for_start(&plan, &control).await;
    let started = Started::now();
    let warm_us = (plan.warmup_s * 1e6) as u64;
    let ctx = client.context(&started, warm_us);
    let sampler = Sampler::start(ctx.clone(), warm_us);
    let (tx, collector) = collect::spawn(collect_plan(&plan), sinks, control.clone());
    drive(&plan, &workload, ctx.clone(), &control, tx).await;
    let collected = collector.await.context("the record writer task failed")?;
    let samples = sampler.stop().await;
    let littles_law = LittlesLaw::check(&collected.in_flight, &samples, ctx.read_lag.total_us());
    let run = Finished {
        info: run_info(&plan, &workload.tokenizer, &started, server_models.clone())?,
        elapsed_s: ctx.run_start.elapsed().as_secs_f64(),
        collected,
        littles_law,
        server_models,
        record_waits: ctx.record_waits.summary(),
    };
    report(&plan, &workload, files, run, &control).await
}

/// The results files, in `--results-dir` (a shard's in its own folder under it); `None` without one.
fn output_files(plan: &Plan) -> anyhow::Result<Option<OutputFiles>> {
    let Some(dir) = &plan.results_dir else {
        return Ok(None);
    };
    let dir = if plan.shard.is_whole() {
        dir.clone()
    } else {
        dir.join(plan.shard.folder())
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the results dir '{}'", dir.display()))?;
    Ok(Some(OutputFiles::new(&dir, &plan.stem())))
}

fn collect_plan(plan: &Plan) -> collect::CollectPlan {
    collect::CollectPlan {
        defs: plan.metric_definitions,
        slo: plan.slo,
        warm_us: (plan.warmup_s * 1e6) as u64,
        cool_us: (plan.cooldown_s > 0.0).then_some((plan.cooldown_s * 1e6) as u64),
        requests: plan.requests.map(|n| plan.shard.part(n)),
    }
}

/// When the measured run began: the zero of every record's `*_us`.
struct Started {
    unix_us: u64,
    anchor: MonoAnchor,
}

impl Started {
    fn now() -> Self {
        let unix_us = unix_us();
        Self {
            unix_us,
            anchor: MonoAnchor::now(),
        }
    }
}

/// `--start-at`: waits (on the wall clock, which is what shards share) until the instant, or a stop.
async fn wait_for_start(plan: &Plan, control: &Control) {
    let Some(at) = plan.start_at_unix_us else {
        return;
    };
    let wait_us = at.saturating_sub(unix_us());
    if wait_us == 0 {
        return;
    }
    if !plan.quiet {
        eprintln!(
            "loadgen: holding the load for {:.1} s, until --start-at",
            wait_us as f64 / 1e6
        );
    }
    let mut stop = control.stop_receiver();
    // Sleep most of it on the monotonic timer, then correct against the wall clock, which NTP may
    // have stepped meanwhile.
    let deadline = Instant::now() + Duration::from_micros(wait_us);
    tokio::select! {
        _ = tokio::time::sleep_until(deadline.into()) => {},
        _ = stop.wait_for(|s| *s) => return,
    }
    while unix_us() < at && !control.is_stopped() {
        tokio::time::sleep(Duration::from_micros((at - unix_us()).min(1_000))).await;
    }
}

/// Everything a measured request needs, before the run's clock starts.
struct Client {
    http: http::HttpClient,
    config: ClientConfig,
    tokenizer: Arc<tokenperf_core::tokenizer::TokenCounter>,
    finisher: Arc<Background>,
    in_flight: Arc<AtomicI64>,
}

impl Client {
    fn new(
        plan: &Plan,
        http: http::HttpClient,
        workload: &Workload,
        in_flight: Arc<AtomicI64>,
    ) -> anyhow::Result<Self> {
        let finisher = Arc::new(
            Background::for_this_machine("loadgen-count")
                .context("starting the token-counting threads")?,
        );
        let config = ClientConfig {
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
        Ok(Self {
            http,
            config,
            tokenizer: workload.tokenizer.clone(),
            finisher,
            in_flight,
        })
    }

    /// The run's context; `warm_us` is where `--warmup-s` ends.
    fn context(&self, started: &Started, warm_us: u64) -> Arc<Context> {
        Arc::new(Context {
            config: self.config.clone(),
            http: self.http.clone(),
            run_start: started.anchor.instant(),
            run_start_mono_us: started.anchor.anchor_us(),
            tokenizer: self.tokenizer.clone(),
            in_flight: self.in_flight.clone(),
            read_lag: ReadLag::from(warm_us),
            finisher: self.finisher.clone(),
            record_waits: Default::default(),
        })
    }

    /// `--warmup-requests`: the same prompts, a closed loop at the run's concurrency; the records
    /// are discarded.
    async fn warm_up(&self, plan: &Plan, workload: &Workload, control: &Control) {
        let warm = Arc::new(Context {
            config: self.config.clone(),
            http: self.http.clone(),
            run_start: Instant::now(),
            run_start_mono_us: 0,
            tokenizer: self.tokenizer.clone(),
            in_flight: Arc::new(AtomicI64::new(0)),
            read_lag: ReadLag::default(),
            finisher: self.finisher.clone(),
            record_waits: Default::default(),
        });
        let (wtx, mut wrx) = mpsc::channel(collect::RECORD_QUEUE);
        let drain = tokio::spawn(async move { while wrx.recv().await.is_some() {} });
        runner::closed_loop(
            warm,
            workload.prompts.clone(),
            plan.concurrency(),
            Some(plan.shard.part(plan.warmup_requests)),
            plan.shard,
            Duration::from_secs_f64(plan.ramp_up_s),
            Instant::now() + Duration::from_secs_f64(plan.timeout_s),
            control.clone(),
            wtx,
        )
        .await;
        let _ = drain.await;
    }
}

/// Samples the in-flight count every 10 ms: an instrument independent of the records, for the
/// Little's-law check; kept as a running sum, so it costs nothing per second of run.
struct Sampler {
    done: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<InFlightSamples>,
}

impl Sampler {
    fn start(ctx: Arc<Context>, from_us: u64) -> Self {
        let (done, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut samples = InFlightSamples::from(from_us);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => samples.add(ctx.now_us(), ctx.in_flight.load(Ordering::Relaxed)),
                    _ = &mut done_rx => break,
                }
            }
            samples
        });
        Self { done, task }
    }

    async fn stop(self) -> InFlightSamples {
        let _ = self.done.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The drive stage: sends this shard's requests on the plan's schedule until done or stopped;
/// every one becomes a record on `tx`.
async fn drive(
    plan: &Plan,
    workload: &Workload,
    ctx: Arc<Context>,
    control: &Control,
    tx: mpsc::Sender<RequestRecord>,
) {
    let stop_at = ctx.run_start + Duration::from_secs_f64(plan.timeout_s);
    let prompts = workload.prompts.clone();
    let _poller = busy::Poller::start(plan.busy_poll, ctx.in_flight.clone());
    match (&plan.load, &workload.arrivals) {
        (Load::Closed { .. }, _) | (_, None) => {
            runner::closed_loop(
                ctx,
                prompts,
                plan.concurrency(),
                plan.requests.map(|n| plan.shard.part(n)),
                plan.shard,
                Duration::from_secs_f64(plan.ramp_up_s),
                stop_at,
                control.clone(),
                tx,
            )
            .await;
        }
        (
            Load::Open {
                max_concurrency, ..
            }
            | Load::Trace {
                max_concurrency, ..
            },
            Some(arrivals),
        ) => {
            let cap = max_concurrency.map(|c| plan.shard.part(c));
            runner::open_loop(ctx, prompts, arrivals, cap, stop_at, control.clone(), tx).await;
        }
    }
}

/// A run whose load is over and whose records are all in.
struct Finished {
    info: RunInfo,
    elapsed_s: f64,
    collected: collect::Collected,
    littles_law: Option<LittlesLaw>,
    server_models: Option<Vec<String>>,
    /// Requests that waited for the record writer: how many, µs in all, the longest.
    record_waits: Option<(u64, u64, u64)>,
}

/// The report stage: the self-check, the end-of-run files, warnings and the exit code.
async fn report(
    plan: &Plan,
    workload: &Workload,
    files: Option<OutputFiles>,
    run: Finished,
    control: &Control,
) -> anyhow::Result<RunOutput> {
    let c = run.collected;
    let summary = c.summary;
    let selfcheck = if plan.selfcheck {
        Some(
            Box::pin(selfcheck::after_run(plan, &summary))
                .await
                .context("the self-check after the run")?,
        )
    } else {
        None
    };
    let mut file_error = c
        .error
        .map(|e| e.context("writing records as they finished"));
    if let Some(e) = workload.prompts.error() {
        // Prompts past the first are built during the run; one that fails leaves the run cycling
        // the ones before it, which is not the plan.
        file_error.get_or_insert(anyhow::anyhow!(
            "building the prompts stopped after {} of them, and requests cycled those: {e}",
            workload.prompts.built()
        ));
    }
    if let Some(f) = &files {
        let extra = summary_extras(
            c.measurement_error.as_ref(),
            run.littles_law.as_ref(),
            c.goodput.as_ref(),
            selfcheck.as_ref(),
        )?;
        let stem = plan.stem();
        if let Err(e) = output::write_final(
            f,
            &stem,
            &summary,
            &run.info,
            plan.metric_definitions,
            &extra,
        ) {
            file_error.get_or_insert(e);
        }
    }
    let mut warnings = run_warnings(
        plan,
        &summary,
        run.littles_law,
        run.server_models.as_deref(),
    );
    warnings.extend(run.record_waits.map(|w| record_wait_warning(&plan.load, w)));
    warnings.extend(count_warnings(
        plan,
        &summary,
        workload.tokenizer.name(),
        run.elapsed_s,
    ));
    let exit = exit_code(plan, &summary, file_error.is_some(), control);
    Ok(RunOutput {
        records_received: c.records,
        summary,
        info: run.info,
        files,
        warnings,
        measurement_error: c.measurement_error,
        selfcheck,
        littles_law: run.littles_law,
        goodput: c.goodput,
        file_error,
        exit,
    })
}

/// What `*_summary.json` carries beyond LLMPerf's keys, under `tokenperf`.
fn summary_extras(
    measurement_error: Option<&tokenperf_core::selfcheck::SelfCheck>,
    littles_law: Option<&LittlesLaw>,
    goodput: Option<&Goodput>,
    selfcheck: Option<&selfcheck::SelfCheckReport>,
) -> anyhow::Result<Vec<(&'static str, serde_json::Value)>> {
    let mut extra = Vec::new();
    if let Some(m) = measurement_error {
        extra.push(("measurement_error", serde_json::to_value(m)?));
    }
    if let Some(l) = littles_law {
        extra.push(("littles_law", serde_json::to_value(l)?));
    }
    if let Some(g) = goodput {
        extra.push(("goodput", serde_json::to_value(g)?));
    }
    if let Some(s) = selfcheck {
        extra.push(("selfcheck", serde_json::to_value(s)?));
    }
    Ok(extra)
}

/// Token counts that disagree, and requests the time limit cut off.
fn count_warnings(
    plan: &Plan,
    summary: &RunSummary,
    tokenizer: &str,
    elapsed_s: f64,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if summary.output_token_mismatches > 0 {
        warnings.push(format!(
            "{} of {} successful requests: the server's usage and the tokenizer ('{tokenizer}') \
             disagree on output tokens by more than 5 %; metrics use the server's count (see \
             *_requests.jsonl, output_tokens)",
            summary.output_token_mismatches, summary.num_completed_requests,
        ));
    }
    if elapsed_s >= plan.timeout_s
        && plan
            .requests
            .is_some_and(|n| summary.num_requests_started < plan.shard.part(n))
    {
        warnings.push("Test timed out before all requests could be completed.".into());
    }
    warnings
}

fn exit_code(plan: &Plan, summary: &RunSummary, file_error: bool, control: &Control) -> Exit {
    if file_error {
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
    }
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
    let (model, grace) = (plan.model.clone(), Duration::from_secs(10));
    let print = Printing {
        quiet: plan.quiet,
        llmperf_block: plan.llmperf_block,
    };
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
    print_run(&out, &model, print);
    Ok(out.exit)
}

/// What the binary prints of a run.
#[derive(Debug, Clone, Copy)]
struct Printing {
    quiet: bool,
    llmperf_block: bool,
}

/// What a finished run prints: with `--llmperf-block` LLMPerf's block first (as LLMPerf printed it),
/// then the readable summary on stdout, then (unless `quiet`) the details and, on stderr, the
/// warnings; failures always, for a run that failed must look failed.
fn print_run(out: &RunOutput, model: &str, print: Printing) {
    let quiet = print.quiet;
    if print.llmperf_block {
        print!("{}", out.summary.console_block(model, "openai"));
    }
    print!("{}", out.summary.headline());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The warning says what the wait did under each kind of load, from the plan's own flags.
    #[test]
    fn a_wait_for_the_writer_is_told_for_the_load_it_hit() {
        let said = |extra: &[&str]| {
            record_wait_warning(&Args::offline_plan(extra).load, (3, 2_500_000, 1_200_000))
        };
        let closed = said(&[]);
        assert!(
            closed.starts_with(
                "3 requests waited for the record writer (2.5 s in all, the longest 1200.0 ms)"
            ),
            "{closed}"
        );
        assert!(closed.contains("lower than asked"), "{closed}");
        let capped = said(&["--request-rate", "5", "--max-concurrency", "4"]);
        assert!(capped.contains("--max-concurrency slot"), "{capped}");
        let open = said(&["--request-rate", "5"]);
        assert!(open.contains("kept their schedule"), "{open}");
    }

    /// An open-loop arrival whose prompt can never be built is a record that says why, not a
    /// request that vanishes; nothing is sent (the base URL goes nowhere).
    #[tokio::test]
    async fn an_arrival_without_a_prompt_is_recorded_as_dropped() {
        let plan = Args::offline_plan(&["--request-rate", "100"]);
        let workload = Workload {
            tokenizer: Arc::new(tokenperf_core::tokenizer::TokenCounter::project()),
            prompts: workload::PromptPool::build(3, true, |_| anyhow::bail!("the corpus failed"))
                .unwrap(),
            arrivals: None,
        };
        let http = http::HttpClient::new(&plan.api_base, 1, Duration::from_secs(1), &[]).unwrap();
        let client = Client::new(&plan, http, &workload, Arc::new(AtomicI64::new(0))).unwrap();
        let ctx = client.context(&Started::now(), 0);
        let (tx, mut rx) = mpsc::channel(16);
        let schedule = [(0, 0), (1, 1_000), (2, 2_000)];
        runner::open_loop(
            ctx,
            workload.prompts.clone(),
            &schedule,
            None,
            Instant::now() + Duration::from_secs(60),
            Control::new(),
            tx,
        )
        .await;
        let mut records = Vec::new();
        while let Some(r) = rx.recv().await {
            records.push(r);
        }
        assert_eq!(records.len(), 3);
        for r in &records {
            assert!(r.sent_at_us.is_none(), "nothing was sent");
            let tokenperf_core::record::Outcome::Dropped { message } = &r.outcome else {
                panic!("{:?}", r.outcome)
            };
            assert!(
                message.contains("no prompt could be built: the corpus failed"),
                "{message}"
            );
        }
    }
}
