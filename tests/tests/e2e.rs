//! The walking skeleton end to end, in process: mock-server on a loopback port 0, loadgen against it,
//! analyze on loadgen's files. Timing tolerances hold on a loaded 2-core machine running a debug build.

use std::time::Duration;

use loadgen::{Args as LoadArgs, Control};
use tokenperf_core::record::{RequestRecord, TokenSource};

const TTFT: Duration = Duration::from_millis(50);
const ITL: Duration = Duration::from_millis(10);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    tokenperf_core::stats::quantile(&v, 0.5).expect("non-empty")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_loadgen_analyze() {
    let server = mock_server::spawn(mock_server::Settings {
        ttft_ms: TTFT.as_secs_f64() * 1e3,
        itl_ms: ITL.as_secs_f64() * 1e3,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let base = server.base_url();
    let args = LoadArgs::from_flags(&[
        "--model",
        "hf:mgoin/TinyStories-1M-ds",
        "--api-base",
        &base,
        "--api-key",
        "dummy",
        "--mean-input-tokens",
        "100",
        "--stddev-input-tokens",
        "50",
        "--mean-output-tokens",
        "30",
        "--stddev-output-tokens",
        "10",
        "--max-num-completed-requests",
        "20",
        "--num-concurrent-requests",
        "4",
        "--tokenizer",
        "tokenperf",
        "--results-dir",
        results.to_str().unwrap(),
        "--quiet",
    ])
    .unwrap();
    let out = loadgen::run_plan(args.into_plan().unwrap(), Control::new())
        .await
        .unwrap();
    server.stop().await.unwrap();
    assert_eq!(out.exit, loadgen::Exit::Ok);

    // Files exist under LLMPerf's names and parse.
    let stem = "hf-mgoin-TinyStories-1M-ds_100_30";
    let individual: serde_json::Value = serde_json::from_slice(
        &std::fs::read(results.join(format!("{stem}_individual_responses.json"))).unwrap(),
    )
    .unwrap();
    let individual = individual.as_array().unwrap();
    assert_eq!(individual.len(), 20);
    let keys: Vec<&str> = individual[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "error_code",
            "error_msg",
            "inter_token_latency_s",
            "ttft_s",
            "end_to_end_latency_s",
            "request_output_throughput_token_per_s",
            "number_total_tokens",
            "number_output_tokens",
            "number_input_tokens"
        ]
    );
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(results.join(format!("{stem}_summary.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["version"], "2023-08-31");
    assert_eq!(summary["results_num_completed_requests"], 20);
    assert_eq!(summary["results_number_errors"], 0);
    let jsonl = std::fs::read_to_string(results.join(format!("{stem}_requests.jsonl"))).unwrap();
    let records: Vec<RequestRecord> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 20);

    // 20 ok records; every token accounted for exactly.
    let mut ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
    for r in &records {
        assert!(r.outcome.is_ok(), "{:?}", r.outcome);
        assert_eq!(r.output_tokens.used, TokenSource::Server);
        assert_eq!(
            r.output_tokens.server, r.max_tokens,
            "the mock streams max_tokens tokens"
        );
        assert_eq!(
            r.output_tokens.tokenizer, r.output_tokens.server,
            "usage = re-tokenized count"
        );
        let content_events = r.events.iter().filter(|e| e.tokens() > 0).count() as u64;
        assert_eq!(Some(content_events), r.max_tokens, "one event per token");
        assert!(r.input_tokens.tokenizer.is_some());
    }

    // Timing against the mock's settings. The mock can only be late, never early, so TTFT ≥ 50 ms;
    // the upper bounds leave room for a loaded CI machine.
    let ttfts: Vec<f64> = records.iter().map(|r| r.ttft_s().unwrap()).collect();
    assert!(ttfts.iter().all(|&t| t >= TTFT.as_secs_f64()), "{ttfts:?}");
    let ttft_med = median(ttfts);
    assert!(ttft_med < 0.080, "median TTFT {ttft_med}");
    let gaps: Vec<f64> = records
        .iter()
        .flat_map(|r| r.token_gaps().map(|(g, _)| g))
        .collect();
    let gap_med = median(gaps);
    assert!((gap_med - 0.010).abs() < 0.0015, "median gap {gap_med}");
    let tpot_med = median(records.iter().filter_map(RequestRecord::tpot_s).collect());
    assert!((tpot_med - 0.010).abs() < 0.0015, "median TPOT {tpot_med}");

    // analyze on the results folder: the same summary, and four PNGs of the right size.
    let out_dir = dir.path().join("analysis");
    let a = analyze::analyze(&analyze::Args::new(vec![results.clone()], out_dir.clone())).unwrap();
    assert_eq!(a.runs.len(), 1);
    assert_eq!(
        a.runs[0].summary, out.summary,
        "analyze and loadgen disagree on the summary"
    );
    // The seed's four, the pooled chunk gaps, three CDFs, the timeline and load over time.
    assert_eq!(a.charts.len(), 10, "{:?}", a.charts);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&a.summaries[0]).unwrap()).unwrap();
    assert_eq!(written["schema_version"], tokenperf_core::SCHEMA_VERSION);
    assert_eq!(written["summary"]["num_completed_requests"], 20);
    for name in [
        "e2e_latencies",
        "inter_token_latencies",
        "chunk_gaps",
        "time_to_first_token",
        "inter_token_vs_throughput",
        "cdf_ttft",
        "cdf_inter_token_latency",
        "cdf_e2e_latency",
        "timeline",
        "load_over_time",
    ] {
        let img = image::open(out_dir.join(format!("{name}.png"))).unwrap();
        assert_eq!((img.width(), img.height()), analyze::charts::SIZE, "{name}");
    }
    // The report opens with what was run, from the run's metadata.
    let html = std::fs::read_to_string(&a.report).unwrap();
    let described = html.find("closed loop, 4 streams").expect("the load shape");
    assert!(html.contains("tokenperf-loadgen") && html.contains("seed 11111"));
    assert!(html.contains(&format!("server {base}")));
    assert!(described < html.find("<h2>Charts</h2>").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_analyzed_as_its_points_in_order() {
    let server = mock_server::spawn(mock_server::Settings {
        ttft_ms: 5.0,
        itl_ms: 1.0,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("sweep");
    let base = server.base_url();
    let plan = LoadArgs::from_flags(&[
        "--model",
        "m",
        "--api-base",
        &base,
        "--api-key",
        "k",
        "--tokenizer",
        "tokenperf",
        "--mean-input-tokens",
        "50",
        "--stddev-input-tokens",
        "5",
        "--mean-output-tokens",
        "10",
        "--stddev-output-tokens",
        "2",
        "--sweep",
        "concurrency=1,2,4",
        "--max-num-completed-requests",
        "6",
        "--results-dir",
        results.to_str().unwrap(),
        "--quiet",
    ])
    .unwrap()
    .into_plan()
    .unwrap();
    let (result, _) = loadgen::sweep::run_sweep(plan, Control::new())
        .await
        .unwrap();
    server.stop().await.unwrap();
    assert_eq!(result.rows.len(), 3);
    let out = dir.path().join("analysis");
    let a = analyze::analyze(&analyze::Args::new(vec![results], out.clone())).unwrap();
    let names: Vec<&str> = a.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["01-concurrency-1", "02-concurrency-2", "03-concurrency-4"]
    );
    assert!(out.join("sweep.png").is_file());
    assert!(a.comparison.is_some());
    for (row, run) in result.rows.iter().zip(&a.runs) {
        assert_eq!(
            row.ttft_p50_s, run.summary.ttft_s.p50,
            "loadgen and analyze agree per point"
        );
    }
}
