//! Measurement accuracy judged against the mock's ground truth, not against the clock: at concurrency
//! 1 and 64, 50 ms TTFT and 10 ms gaps, every request is accounted for, chunk counts are exact, no
//! timestamp is earlier than the event it stamps (receive delay, request delay and lateness are never
//! negative, so TTFT is never early), the error adds up from its parts, and the gap error telescopes
//! to the difference of two per-chunk delays. None of that depends on how busy the machine is, so the
//! test holds at load average 10; the only absolute bounds are gross (a timestamp taken after the
//! stream, or per token instead of per chunk, would break them). The tight figures are measured in
//! release builds by `scripts/bench.sh` and live in BENCHMARKS.md. The checks hold for reads timed
//! either way (`--rx-timestamps read` and `kernel`).

use loadgen::cli::RxTimestamps;
use loadgen::selfcheck::{SelfCheckArgs, run_selfcheck};

async fn check(concurrency: u64, requests: u64, tokens: u64, slack_ms: f64) {
    check_with(concurrency, requests, tokens, slack_ms, RxTimestamps::Read).await;
}

async fn check_with(
    concurrency: u64,
    requests: u64,
    tokens: u64,
    slack_ms: f64,
    rx_timestamps: RxTimestamps,
) {
    let report = run_selfcheck(&SelfCheckArgs {
        concurrency,
        requests: Some(requests),
        ttft_ms: 50.0,
        itl_ms: 10.0,
        tokens,
        api_base: None,
        json: None,
        busy_poll: false,
        rx_timestamps,
        mock_threads: 1,
        mock_pacer_shards: 1,
    })
    .await
    .unwrap();
    let ctx = format!("concurrency {concurrency}:\n{}", report.table());
    assert_eq!(report.ok_requests, requests, "{ctx}");
    assert_eq!(report.errors, 0, "{ctx}");
    // Every SSE event: role, `tokens` content chunks, finish, usage.
    assert_eq!(report.events, requests * (tokens + 3), "{ctx}");
    let e = report.error.as_ref().expect("ground truth came back");
    assert_eq!(e.requests as u64, requests, "{ctx}");
    assert_eq!(e.chunks as u64, requests * tokens, "{ctx}");
    assert_eq!(e.chunk_count_mismatches, 0, "{ctx}");

    // Never early: the true TTFT is 50 ms after the server read the request, and every part the
    // client adds is non-negative (checked below).
    let ttft = e.measured_ttft_ms.mean.unwrap();
    assert!(ttft >= 50.0, "mean TTFT {ttft} ms; {ctx}");
    // Gross errors only: half the requests' chunks read within `slack_ms` of their send.
    let rd50 = e.receive_delay_ms.p50.unwrap();
    assert!(rd50 < slack_ms, "receive delay p50 {rd50} ms; {ctx}");
    // Per request the gap errors telescope to (last − first chunk's delay) / gaps, bounded by the
    // delays themselves; at 29 gaps a request a wrong timestamp shows as whole milliseconds.
    let gap = e.measured_gap_ms.mean.unwrap();
    let spread = e.receive_delay_ms.max.unwrap() + e.mock_lateness_ms.max.unwrap();
    assert!(
        (gap - 10.0).abs() <= spread / (tokens - 1) as f64 + 0.01,
        "mean gap {gap} ms against a spread of {spread} ms; {ctx}"
    );

    // The parts add up: TTFT error = request delay + mock lateness + receive delay of the first chunk,
    // so on average the error is at least the mean request delay, and each part is non-negative up to
    // the clocks' microsecond resolution.
    let mean = |s: &tokenperf_core::stats::Stats| s.mean.unwrap();
    assert!(
        (mean(&e.ttft_error_ms) - (ttft - 50.0)).abs() < 1e-6,
        "{ctx}"
    );
    for (name, s) in [
        ("receive delay", &e.receive_delay_ms),
        ("request delay", &e.request_delay_ms),
        ("mock lateness", &e.mock_lateness_ms),
    ] {
        assert!(s.min.unwrap() > -0.01, "{name} negative: {s:?}; {ctx}");
    }
    assert!(
        mean(&e.ttft_error_ms) >= mean(&e.request_delay_ms) - 0.01,
        "{ctx}"
    );
    // Every true gap is 10 ms, so the mean gap error is the measured mean gap minus 10.
    assert!((mean(&e.gap_error_ms) - (gap - 10.0)).abs() < 1e-6, "{ctx}");
    assert!(report.client_cpu_s >= 0.0 && report.mock_cpu_s.is_some() && report.peak_rss_mib > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_at_concurrency_1() {
    check(1, 8, 30, 50.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_at_concurrency_64() {
    check(64, 128, 30, 250.0).await;
}

/// The same checks with reads timed by the kernel's receive stamps: a stamp is taken inside the
/// mock's write, after its send stamp, so no part may turn negative either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_with_kernel_stamps() {
    check_with(1, 8, 30, 50.0, RxTimestamps::Kernel).await;
    check_with(64, 128, 30, 250.0, RxTimestamps::Kernel).await;
}
