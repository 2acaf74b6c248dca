//! Measurement accuracy against the mock's ground truth (issue: self-check). At concurrency 1 and 64,
//! 50 ms TTFT and 10 ms gaps: every request accounted for, chunk counts exact, the mean gap within 5 %
//! of truth, TTFT never early and its error consistent with its parts, and the self-check report
//! consistent with itself. Tolerances hold
//! for a debug build on a loaded 2-core machine; the tight figures live in BENCHMARKS.md.

use loadgen::selfcheck::{SelfCheckArgs, run_selfcheck};

async fn check(concurrency: u64, requests: u64, tokens: u64, ttft_slack_ms: f64) {
    let report = run_selfcheck(&SelfCheckArgs {
        concurrency,
        requests: Some(requests),
        ttft_ms: 50.0,
        itl_ms: 10.0,
        tokens,
        api_base: None,
        json: None,
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

    // Never early; the slack catches gross errors only, since a debug build on a loaded machine
    // adds tens of milliseconds (release figures are in BENCHMARKS.md).
    let ttft = e.measured_ttft_ms.mean.unwrap();
    assert!(
        ttft >= 50.0 && ttft < 50.0 + ttft_slack_ms,
        "mean TTFT {ttft} ms; {ctx}"
    );
    let gap = e.measured_gap_ms.mean.unwrap();
    assert!((gap - 10.0).abs() < 10.0 * 0.05, "mean gap {gap} ms; {ctx}");

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
    check(1, 8, 30, 25.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_at_concurrency_64() {
    check(64, 128, 30, 100.0).await;
}
