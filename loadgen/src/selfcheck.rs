//! Self-check: runs a stated load through the normal loadgen path against a mock-server that reports
//! ground truth, and measures the harness's own error (see [`tokenperf_core::selfcheck`]).
//!
//! The mock runs in this process on its own runtime, whose threads are named `mock-*`, so the CPU the
//! client used can be told apart from the mock's; or a running mock-server is used (`--api-base`).

use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;
use tokenperf_core::clock::{process_usage, thread_cpu_s};
use tokenperf_core::selfcheck::SelfCheck;

use crate::cli::RxTimestamps;
use crate::{Args, Control, run_plan};

/// Measure loadgen's own error against mock-server ground truth at a stated load.
#[derive(Debug, Clone, Parser)]
pub struct SelfCheckArgs {
    /// Concurrent streams (closed loop).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=crate::cli::MAX_STREAMS))]
    pub concurrency: u64,
    /// Requests in all [default: 4 × concurrency, at least 20].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub requests: Option<u64>,
    /// The mock's time to first token, ms.
    #[arg(long, default_value_t = 50.0, value_parser = milliseconds)]
    pub ttft_ms: f64,
    /// The mock's time between tokens, ms.
    #[arg(long, default_value_t = 10.0, value_parser = milliseconds)]
    pub itl_ms: f64,
    /// Output tokens per request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub tokens: u64,
    /// Use a running mock-server at this base URL instead of one in this process.
    #[arg(long)]
    pub api_base: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// loadgen's `--busy-poll`, to measure with and without it.
    #[arg(long)]
    pub busy_poll: bool,
    /// loadgen's `--rx-timestamps`: time reads when their bytes reached the host (`kernel`; `auto`
    /// where it can) or when they returned (`read`).
    #[arg(long, value_enum, default_value_t = RxTimestamps::Auto)]
    pub rx_timestamps: RxTimestamps,
    /// Worker threads of the in-process mock (its pacer has one heap per worker).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub mock_threads: u64,
    /// The in-process mock's `--pacer-shards` (0: one per worker).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub mock_pacer_shards: u64,
}

/// A mock timing in milliseconds: 0 to an hour.
fn milliseconds(s: &str) -> Result<f64, String> {
    crate::cli::number_in(s, 0.0, false, 3_600_000.0, " ms")
}

/// What a self-check measured.
#[derive(Debug, Clone, Serialize)]
pub struct SelfCheckReport {
    pub concurrency: u64,
    pub requests: u64,
    pub ttft_ms: f64,
    pub itl_ms: f64,
    pub tokens: u64,
    /// `in-process` or the base URL used.
    pub mock: String,
    /// Whether the client busy-polled (`--busy-poll`).
    pub busy_poll: bool,
    /// Which clock timed the client's reads (`--rx-timestamps`).
    pub rx_timestamps: RxTimestamps,
    pub ok_requests: u64,
    pub errors: u64,
    pub events: u64,
    pub wall_s: f64,
    /// CPU seconds of the client (the in-process mock's threads excluded).
    pub client_cpu_s: f64,
    /// CPU seconds of the in-process mock, when there was one.
    pub mock_cpu_s: Option<f64>,
    /// Client CPU seconds per 100,000 SSE events.
    pub client_cpu_s_per_100k_events: f64,
    /// Peak resident memory of the whole process (client and in-process mock), MiB.
    pub peak_rss_mib: f64,
    pub error: Option<SelfCheck>,
}

impl SelfCheckReport {
    pub fn table(&self) -> String {
        let mut s = format!(
            "self-check: {} concurrent streams, {} requests, mock TTFT {} ms, gap {} ms, {} tokens ({}){}\n",
            self.concurrency,
            self.requests,
            self.ttft_ms,
            self.itl_ms,
            self.tokens,
            self.mock,
            match (self.busy_poll, self.rx_timestamps) {
                (false, RxTimestamps::Read) => "; reads timed when they returned",
                (true, RxTimestamps::Read) =>
                    "; the client busy-polls, reads timed when they returned",
                (false, _) => "",
                (true, _) => "; the client busy-polls",
            }
        );
        s.push_str(&format!(
            "  {} ok, {} errors, {} events in {:.2} s; client CPU {:.2} s ({:.3} s per 100k events){}; peak RSS {:.0} MiB\n",
            self.ok_requests,
            self.errors,
            self.events,
            self.wall_s,
            self.client_cpu_s,
            self.client_cpu_s_per_100k_events,
            // The mock's pacer busy-polls while a deadline is near, so its CPU is not its work.
            self.mock_cpu_s.map_or(String::new(), |m| format!(
                ", mock CPU {m:.2} s (busy-polling included)"
            )),
            self.peak_rss_mib
        ));
        match &self.error {
            Some(e) => s.push_str(&e.table()),
            None => {
                s.push_str("  no ground truth came back: is the server a tokenperf mock-server?\n")
            }
        }
        s
    }
}

/// A mock-server on its own runtime and threads in this process.
struct InProcessMock {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessMock {
    fn start(config: mock_server::Settings, threads: usize) -> anyhow::Result<Self> {
        let (url_tx, url_rx) = std::sync::mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("mock-main".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("mock-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = url_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    match mock_server::spawn(config).await {
                        Ok(running) => {
                            let _ = url_tx.send(Ok(running.base_url()));
                            let _ = stop_rx.await;
                            let _ = running.stop().await;
                        }
                        Err(e) => {
                            let _ = url_tx.send(Err(e));
                        }
                    }
                });
            })
            .context("starting the mock-server thread")?;
        let url = url_rx
            .recv()
            .context("the in-process mock-server did not start")??;
        Ok(Self {
            url,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for InProcessMock {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a self-check.
pub async fn run_selfcheck(a: &SelfCheckArgs) -> anyhow::Result<SelfCheckReport> {
    if a.concurrency == 0 || a.tokens == 0 {
        anyhow::bail!("--concurrency and --tokens must be at least 1");
    }
    let requests = a.requests.unwrap_or((a.concurrency * 4).max(20));
    let mock = in_process_mock(a)?;
    let base = a
        .api_base
        .clone()
        .or_else(|| mock.as_ref().map(|m| m.url.clone()))
        .expect("one of the two");
    let plan = selfcheck_plan(a, &base, requests)?;
    let mock_cpu_before = thread_cpu_s("mock-");
    let cpu_before = process_usage().cpu_s;
    let t0 = Instant::now();
    let (busy_poll, rx_timestamps) = (plan.busy_poll, plan.rx_timestamps);
    let out = run_plan(plan, Control::new()).await?;
    let wall_s = t0.elapsed().as_secs_f64();
    let mock_cpu = mock
        .as_ref()
        .map(|_| thread_cpu_s("mock-") - mock_cpu_before);
    let usage = process_usage();
    let client_cpu_s = (usage.cpu_s - cpu_before - mock_cpu.unwrap_or(0.0)).max(0.0);
    drop(mock);
    let events = out.summary.events_read;
    let report = SelfCheckReport {
        busy_poll,
        rx_timestamps,
        concurrency: a.concurrency,
        requests,
        ttft_ms: a.ttft_ms,
        itl_ms: a.itl_ms,
        tokens: a.tokens,
        mock: mock_label(a),
        ok_requests: out.summary.num_completed_requests,
        errors: out.summary.number_errors,
        events,
        wall_s,
        client_cpu_s,
        mock_cpu_s: mock_cpu,
        client_cpu_s_per_100k_events: if events > 0 {
            client_cpu_s / events as f64 * 1e5
        } else {
            0.0
        },
        peak_rss_mib: usage.peak_rss_bytes as f64 / (1 << 20) as f64,
        error: out.measurement_error.clone(),
    };
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing '{}' (--json)", p.display()))?;
    }
    Ok(report)
}

/// The mock the self-check measures against, in this process, unless `--api-base` names one.
fn in_process_mock(a: &SelfCheckArgs) -> anyhow::Result<Option<InProcessMock>> {
    if a.api_base.is_some() {
        return Ok(None);
    }
    let settings = mock_server::Settings {
        ttft_ms: a.ttft_ms,
        itl_ms: a.itl_ms,
        max_waiting: usize::MAX,
        pacer_shards: a.mock_pacer_shards,
        ..mock_server::Settings::default()
    };
    Ok(Some(InProcessMock::start(
        settings,
        a.mock_threads as usize,
    )?))
}

/// The run the self-check makes: a closed loop at the asked concurrency with ground truth on.
fn selfcheck_plan(a: &SelfCheckArgs, base: &str, requests: u64) -> anyhow::Result<crate::Plan> {
    // Streams start spread over one request's duration. With fixed timing a closed loop otherwise
    // stays in lock-step: every round would begin with all streams sending at once, and the burst
    // (not the harness's steady-state error) would dominate TTFT.
    let one_request_s = (a.ttft_ms + a.tokens as f64 * a.itl_ms) / 1e3;
    let (c, n, t, ramp) = (
        a.concurrency.to_string(),
        requests.to_string(),
        a.tokens.to_string(),
        one_request_s.to_string(),
    );
    let mut plan = Args::from_flags(&[
        "--model",
        "selfcheck",
        "--api-base",
        base,
        "--api-key",
        "selfcheck",
        "--tokenizer",
        "tokenperf",
        "--mean-input-tokens",
        "48",
        "--stddev-input-tokens",
        "0",
        "--mean-output-tokens",
        &t,
        "--stddev-output-tokens",
        "0",
        "--num-concurrent-requests",
        &c,
        "--max-num-completed-requests",
        &n,
        "--timeout",
        "86400",
        "--quiet",
        "--ground-truth",
        // One unrecorded request per stream first, so connections are open: the self-check measures
        // the steady state, not connection set-up.
        "--warmup-requests",
        &c,
        "--ramp-up",
        &ramp,
    ])?
    .into_plan()?;
    plan.busy_poll = a.busy_poll;
    plan.rx_timestamps = a.rx_timestamps;
    // The same few prompts serve every request: building thousands would only slow the start.
    plan.prompt_pool = Some(requests.min(64));
    Ok(plan)
}

/// Which mock was measured, for the report.
fn mock_label(a: &SelfCheckArgs) -> String {
    a.api_base.clone().unwrap_or_else(|| {
        let heaps = match a.mock_pacer_shards {
            0 => a.mock_threads,
            n => n,
        };
        format!(
            "in-process, {} worker thread{}, {heaps} pacer heap{}",
            a.mock_threads,
            if a.mock_threads == 1 { "" } else { "s" },
            if heaps == 1 { "" } else { "s" }
        )
    })
}

/// `--selfcheck`: loadgen's own error at the run's concurrency, against an in-process mock pacing
/// tokens at the run's median gap.
pub async fn after_run(
    plan: &crate::Plan,
    summary: &tokenperf_core::summary::RunSummary,
) -> anyhow::Result<SelfCheckReport> {
    let gap_ms = summary
        .inter_chunk_gap_s
        .p50
        .map_or(10.0, |g| (g * 1e3).clamp(1.0, 100.0));
    let a = SelfCheckArgs {
        concurrency: plan.concurrency(),
        requests: Some((plan.concurrency() * 2).clamp(20, 400)),
        ttft_ms: 50.0,
        itl_ms: gap_ms,
        tokens: plan.mean_output_tokens.clamp(8, 512),
        api_base: None,
        json: None,
        // As the run it checks: busy-polling when the run did.
        busy_poll: plan.busy_poll,
        rx_timestamps: plan.rx_timestamps,
        mock_threads: 1,
        mock_pacer_shards: 1,
    };
    run_selfcheck(&a).await
}
