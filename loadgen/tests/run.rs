//! loadgen end to end against wiremock (canned server behaviour) and the mock-server (faults, timing):
//! every error kind becomes a record with a reason, open-loop schedules, Ctrl-C keeps records, and the
//! seed's command line produces LLMPerf's two files.

use std::time::{Duration, Instant};

use loadgen::{Control, Exit};
use tokenperf_core::record::{Outcome, RequestRecord};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;
use common::{FIN, ROLE, TOK, flags, mock, sse};

/// A mock (5 ms to first token, `itl_ms` per token) that applies `faults` to a seeded `rate` of
/// requests.
async fn faulty_mock(itl_ms: u64, rate: f64, faults: &[&str], seed: u64) -> mock_server::Running {
    mock_server::spawn(mock_server::Settings {
        ttft_ms: 5.0,
        itl_ms: itl_ms as f64,
        fault_rate: rate,
        fault: faults.iter().map(|f| f.parse().unwrap()).collect(),
        seed,
        ..mock_server::Settings::default()
    })
    .await
    .unwrap()
}

async fn run(plan: loadgen::Plan) -> common::Ran {
    common::run_keeping(plan, Control::new()).await.unwrap()
}

async fn wiremock_one(body: String, status: u16) -> RequestRecord {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(status).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let base = format!("{}/v1", server.uri());
    let out = run(flags(
        &base,
        &[
            "--max-num-completed-requests",
            "1",
            "--num-concurrent-requests",
            "1",
        ],
    ))
    .await;
    assert_eq!(out.records.len(), 1);
    out.records.into_iter().next().unwrap()
}

#[tokio::test]
async fn real_server_shapes_are_read_correctly() {
    // CRLF framing, comment pings, a role chunk with content null, all events in one read.
    let usage =
        r#"{"choices":[],"usage":{"prompt_tokens":70,"completion_tokens":3,"total_tokens":73}}"#;
    let body = format!(
        ":\r\n\r\n{}",
        sse(&[ROLE, TOK, TOK, TOK, FIN, usage, "[DONE]"], "\r\n")
    );
    let r = wiremock_one(body, 200).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(r.output_tokens.server, Some(3));
    assert_eq!(r.output_tokens.tokenizer, Some(3));
    assert_eq!(r.input_tokens.server, Some(70));
    assert_eq!(r.events.len(), 6, "role, 3 tokens, finish, usage");
    assert_eq!(
        r.events.iter().map(|e| e.tokens()).collect::<Vec<_>>(),
        vec![0, 1, 1, 1, 0, 0]
    );
    assert_eq!(r.finish_reason.as_deref(), Some("length"));

    // Completions-style: usage inside the finish chunk (llama.cpp); a finish reason ends the stream.
    let body = sse(
        &[
            r#"{"choices":[{"index":0,"text":" the","finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"text":"","finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6},"timings":{"x":1}}"#,
        ],
        "\n",
    );
    let r = wiremock_one(body, 200).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(r.output_tokens.server, Some(1));
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
}

#[tokio::test]
async fn every_failure_is_a_record_with_a_reason() {
    let r = wiremock_one(
        r#"{"error":{"message":"model is overloaded","type":"server_error","code":503}}"#.into(),
        503,
    )
    .await;
    assert_eq!(
        r.outcome,
        Outcome::HttpStatus {
            status: 503,
            message: "model is overloaded".into()
        }
    );
    assert_eq!(r.llmperf.error_code, Some(503.into()));

    let r = wiremock_one(
        sse(
            &[
                ROLE,
                TOK,
                r#"{"error":{"message":"out of memory","code":"oom"}}"#,
            ],
            "\n",
        ),
        200,
    )
    .await;
    assert_eq!(
        r.outcome,
        Outcome::ServerError {
            code: Some("oom".into()),
            message: "out of memory".into()
        }
    );

    let r = wiremock_one(sse(&[ROLE, TOK, "{not json"], "\n"), 200).await;
    assert!(
        matches!(&r.outcome, Outcome::Malformed { message } if message.contains("not valid JSON")),
        "{:?}",
        r.outcome
    );

    let r = wiremock_one(sse(&[ROLE, TOK, TOK], "\n"), 200).await;
    assert!(
        matches!(&r.outcome, Outcome::Truncated { message } if message.contains("[DONE]")),
        "{:?}",
        r.outcome
    );
    assert_eq!(
        r.output_tokens.tokenizer,
        Some(2),
        "what arrived is still counted"
    );

    // Connection refused: a port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let out = run(flags(
        &format!("http://127.0.0.1:{port}/v1"),
        &["--max-num-completed-requests", "2"],
    ))
    .await;
    assert_eq!(out.records.len(), 2);
    for r in &out.records {
        assert!(
            matches!(r.outcome, Outcome::Connect { .. }),
            "{:?}",
            r.outcome
        );
        assert_eq!(r.llmperf.error_code, Some((-1).into()));
    }
    assert_eq!(out.summary.number_errors, 2);
    assert_eq!(out.summary.error_rate, 1.0);

    // A server that answers too late: the idle timeout, then the total timeout.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(3))
                .set_body_raw(sse(&[TOK, FIN, "[DONE]"], "\n"), "text/event-stream"),
        )
        .mount(&server)
        .await;
    let base = format!("{}/v1", server.uri());
    for extra in [["--idle-timeout", "0.3"], ["--request-timeout", "0.3"]] {
        let mut f = vec!["--max-num-completed-requests", "1"];
        f.extend_from_slice(&extra);
        let out = run(flags(&base, &f)).await;
        assert!(
            matches!(out.records[0].outcome, Outcome::Timeout { .. }),
            "{extra:?}: {:?}",
            out.records[0].outcome
        );
    }
}

#[tokio::test]
async fn the_idle_timeout_counts_from_the_last_event_not_the_first() {
    // 8 tokens 150 ms apart: 1.2 s in all, never 0.4 s without data. A timer armed once per stream
    // must be moved forward, not fire at 0.4 s.
    let server = mock(10, 150).await;
    let out = run(flags(
        &server.base_url(),
        &["--max-num-completed-requests", "1", "--idle-timeout", "0.4"],
    ))
    .await;
    assert!(
        out.records[0].outcome.is_ok(),
        "{:?}",
        out.records[0].outcome
    );
    server.stop().await.unwrap();

    // A stall mid-stream: 3 tokens, then 5 s of silence, so the idle timeout ends the request and
    // says how far it got.
    let server = faulty_mock(5, 1.0, &["stall=5@3"], 0).await;
    let started = std::time::Instant::now();
    let out = run(flags(
        &server.base_url(),
        &["--max-num-completed-requests", "1", "--idle-timeout", "0.3"],
    ))
    .await;
    match &out.records[0].outcome {
        Outcome::Timeout { message } => {
            assert!(message.contains("idle timeout"), "{message}");
            assert!(message.contains("after 4 events"), "{message}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited out the stall"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_cut_ends_requests_whose_streams_are_silent() {
    // Every stream stalls for 30 s after its second token: no event wakes the requests, so the cut
    // itself must (a request that looked at the cut signal only when data came would wait out the
    // stall or the idle timeout).
    let server = faulty_mock(5, 1.0, &["stall=30@1"], 0).await;
    let plan = flags(
        &server.base_url(),
        &[
            "--max-num-completed-requests",
            "4",
            "--num-concurrent-requests",
            "2",
        ],
    );
    let control = Control::new();
    let c = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        c.cut();
    });
    let t = Instant::now();
    let out = common::run_keeping(plan, control).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(out.exit, Exit::Interrupted);
    let cancelled: Vec<_> = out
        .records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Cancelled { .. }))
        .collect();
    assert_eq!(cancelled.len(), 2, "{:?}", out.records);
    assert!(
        cancelled.iter().all(|r| r.events.len() == 2),
        "{cancelled:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mock_server_faults_become_records_and_the_run_goes_on() {
    let server = faulty_mock(
        1,
        1.0,
        &[
            "error-after=2",
            "drop-after=3",
            "malformed-after=1",
            "status=429",
            "status=500",
        ],
        7,
    )
    .await;
    let out = run(flags(
        &server.base_url(),
        &[
            "--max-num-completed-requests",
            "30",
            "--num-concurrent-requests",
            "3",
            "--max-error-rate",
            "0.5",
        ],
    ))
    .await;
    server.stop().await.unwrap();
    assert_eq!(out.records.len(), 30, "every request is recorded");
    let kinds: std::collections::BTreeSet<&str> =
        out.records.iter().map(|r| r.outcome.kind()).collect();
    for k in ["server_error", "stream", "malformed", "http_status"] {
        assert!(kinds.contains(k), "no '{k}' among {kinds:?}");
    }
    assert!(out.records.iter().all(|r| !r.outcome.is_ok()));
    assert_eq!(
        out.exit,
        Exit::NoSuccess,
        "every request failed: no request succeeded outranks --max-error-rate"
    );
    let kinds_listed: Vec<&str> = out
        .summary
        .error_breakdown
        .iter()
        .map(|g| g.kind.as_str())
        .collect();
    assert!(kinds_listed.contains(&"http_status"), "{kinds_listed:?}");
    assert!(
        out.summary
            .error_breakdown_text()
            .contains("30 requests did not succeed")
    );
    assert!(out.summary.error_code_frequency.contains_key("429"));
}

#[tokio::test]
async fn open_loop_schedule_counts_rate_and_drops() {
    let server = mock(5, 2).await;
    // 40 requests at 40/s, constant: ~1 s of arrivals, all sent, lag small.
    let out = run(flags(
        &server.base_url(),
        &[
            "--request-rate",
            "40",
            "--arrival",
            "constant",
            "--max-num-completed-requests",
            "40",
        ],
    ))
    .await;
    assert_eq!(out.records.len(), 40);
    assert!(out.records.iter().all(|r| r.outcome.is_ok()));
    let mut intended: Vec<u64> = out.records.iter().map(|r| r.intended_send_us).collect();
    intended.sort_unstable();
    assert_eq!(intended[1] - intended[0], 25_000);
    assert_eq!(intended[39], 39 * 25_000);
    let lag = out.summary.schedule_lag_s.p50.unwrap();
    assert!(lag < 0.02, "median schedule lag {lag}");
    // Achieved send rate within tolerance of the requested one.
    let sent: Vec<u64> = out.records.iter().filter_map(|r| r.sent_at_us).collect();
    let span = (*sent.iter().max().unwrap() - *sent.iter().min().unwrap()) as f64 / 1e6;
    let rate = 39.0 / span;
    assert!((rate - 40.0).abs() < 4.0, "achieved {rate}/s");

    // One slot and slow requests: arrivals that find it busy are recorded as dropped.
    let slow = mock(200, 10).await;
    let out = run(flags(
        &slow.base_url(),
        &[
            "--request-rate",
            "50",
            "--arrival",
            "constant",
            "--max-concurrency",
            "1",
            "--max-num-completed-requests",
            "20",
        ],
    ))
    .await;
    assert_eq!(
        out.records.len(),
        20,
        "sent and dropped account for every arrival"
    );
    let dropped = out
        .records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Dropped { .. }))
        .count();
    assert!(dropped >= 10, "{dropped} dropped");
    assert_eq!(out.summary.dropped as usize, dropped);
    assert!(out.records.iter().filter(|r| r.outcome.is_ok()).count() >= 1);
    server.stop().await.unwrap();
    slow.stop().await.unwrap();
}

#[tokio::test]
async fn stopping_keeps_every_finished_record() {
    let server = mock(50, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = flags(
        &server.base_url(),
        &[
            "--max-num-completed-requests",
            "1000",
            "--num-concurrent-requests",
            "2",
            "--results-dir",
            dir.path().to_str().unwrap(),
        ],
    );
    let control = Control::new();
    let c = control.clone();
    let t = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.cut();
    });
    let out = common::run_keeping(plan, control).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(out.exit, Exit::Interrupted);
    assert!(out.records.iter().filter(|r| r.outcome.is_ok()).count() >= 2);
    assert!(
        out.records
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Cancelled { .. })),
        "the cut ends requests in flight"
    );
    assert!(out.records.len() < 1000);
    let jsonl = std::fs::read_to_string(dir.path().join("m_60_8_requests.jsonl")).unwrap();
    assert_eq!(
        jsonl.lines().count(),
        out.records.len(),
        "every finished record is on disk"
    );
    assert!(dir.path().join("m_60_8_summary.json").exists());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn seed_command_line_against_the_mock_with_a_cached_tokenizer() {
    let server = mock(5, 1).await;
    // A fake Hugging Face cache holding the project tokenizer under LLMPerf's default name.
    let home = tempfile::tempdir().unwrap();
    let repo = home
        .path()
        .join("hub/models--hf-internal-testing--llama-tokenizer");
    std::fs::create_dir_all(repo.join("snapshots/0123abc")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abc").unwrap();
    std::fs::write(
        repo.join("snapshots/0123abc/tokenizer.json"),
        tokenperf_core::tokenizer::PROJECT_TOKENIZER_JSON,
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let base = server.base_url();
    let workdir = work.path().to_path_buf();
    let run = move |hf_home: std::path::PathBuf| {
        std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .current_dir(&workdir)
            .env("HF_HOME", hf_home)
            .env_remove("HF_HUB_CACHE")
            // Never reach for the real Hub from a test.
            .env("HF_HUB_OFFLINE", "1")
            .env("OPENAI_API_KEY", "dummy")
            .env("OPENAI_API_BASE", &base)
            .args([
                "--model",
                "hf:neuralmagic/MiniChat-1.5-3B-pruned50-quant-ds",
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
                "--llmperf-block",
            ])
            .output()
            .unwrap()
    };
    let (r1, r2) = (run.clone(), run);
    let cached = home.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || r1(cached))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(
        "\\Results for token benchmark for hf:neuralmagic/MiniChat-1.5-3B-pruned50-quant-ds queried with the openai api."
    ));
    assert!(stdout.contains("Number Of Completed Requests: 50"));
    let stem = "hf-neuralmagic-MiniChat-1-5-3B-pruned50-quant-ds_100_200";
    let dir = work.path().join("result_outputs");
    let individual: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{stem}_individual_responses.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(individual.as_array().unwrap().len(), 50);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{stem}_summary.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["name"], format!("{stem}_summary"));
    assert_eq!(summary["num_concurrent_requests"], 4);

    // The seed's first command line (TinyStories, one stream, no --results-dir) runs unchanged and
    // leads with the readable summary; like LLMPerf, it writes no files without a results dir.
    let (dir_first, home_first, base_first) = (
        work.path().join("result_outputs"),
        home.path().to_path_buf(),
        server.base_url(),
    );
    let first = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .current_dir(dir_first)
            .env("HF_HOME", home_first)
            .env_remove("HF_HUB_CACHE")
            .env("HF_HUB_OFFLINE", "1")
            .env("OPENAI_API_KEY", "dummy")
            .env("OPENAI_API_BASE", base_first)
            .args([
                "--model",
                "hf:mgoin/TinyStories-1M-ds",
                "--mean-input-tokens",
                "100",
                "--stddev-input-tokens",
                "50",
                "--mean-output-tokens",
                "100",
                "--stddev-output-tokens",
                "50",
                "--max-num-completed-requests",
                "50",
                "--num-concurrent-requests",
                "1",
                "--llm-api",
                "openai",
            ])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{text}");
    assert!(text.starts_with("50 of 50 requests succeeded"), "{text}");
    assert!(!text.contains("Number Of Completed Requests"), "{text}");
    assert_eq!(
        std::fs::read_dir(work.path().join("result_outputs"))
            .unwrap()
            .count(),
        4,
        "no new files"
    );

    // The same command with an empty cache: exit 2, naming the cache path and the flag.
    let empty = tempfile::tempdir().unwrap();
    let p = empty.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || r2(p)).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("models--hf-internal-testing--llama-tokenizer") && err.contains("--tokenizer"),
        "{err}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn slo_goodput_on_a_mock_with_known_timing() {
    // Half the requests (seeded) stall 300 ms before their first token: TTFT ≈ 305 ms against an
    // objective of 150 ms, so exactly the unstalled ones meet it.
    let server = faulty_mock(1, 0.5, &["stall=0.3@0"], 3).await;
    let out = run(flags(
        &server.base_url(),
        &[
            "--max-num-completed-requests",
            "20",
            "--num-concurrent-requests",
            "1",
            "--slo",
            "ttft=0.15,e2e=5",
        ],
    ))
    .await;
    server.stop().await.unwrap();
    let g = out.goodput.expect("goodput with --slo");
    let fast = out
        .records
        .iter()
        .filter(|r| r.ttft_s().is_some_and(|t| t < 0.15))
        .count() as u64;
    assert!(
        fast > 0 && fast < 20,
        "the seeded faults hit some requests: {fast}"
    );
    assert_eq!((g.requests, g.met), (20, fast));
    for r in &out.records {
        assert_eq!(
            r.slo_met,
            Some(r.ttft_s().unwrap() < 0.15),
            "record {}",
            r.id
        );
    }
    let (lo, hi) = g.attainment_ci95.unwrap();
    let a = g.attainment.unwrap();
    assert!(lo <= a && a <= hi && hi - lo < 0.6);
    assert!(g.goodput_rps.unwrap() > 0.0);
}

#[tokio::test]
async fn a_jsonl_dataset_over_completions_with_shared_prefixes() {
    let server = mock(5, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("prompts.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"the harbor lamps\", \"max_tokens\": 4}\n{\"prompt\": \"the river\", \"max_tokens\": 5}\n{\"prompt\": \"the engine room\", \"max_tokens\": 6}\n",
    )
    .unwrap();
    let out = run(flags(
        &server.base_url(),
        &[
            "--endpoint",
            "completions",
            "--dataset",
            data.to_str().unwrap(),
            "--shared-prefix",
            "2:16",
            "--max-num-completed-requests",
            "6",
            "--num-concurrent-requests",
            "2",
        ],
    ))
    .await;
    server.stop().await.unwrap();
    assert_eq!(out.records.len(), 6);
    let mut lengths: Vec<u64> = out.records.iter().map(|r| r.max_tokens.unwrap()).collect();
    lengths.sort_unstable();
    assert_eq!(
        lengths,
        vec![4, 4, 5, 5, 6, 6],
        "each entry twice, without replacement"
    );
    for r in &out.records {
        assert!(r.outcome.is_ok(), "{:?}", r.outcome);
        assert_eq!(r.output_tokens.server, r.max_tokens);
        // The prompt carries a 16-token prefix ahead of the entry.
        assert!(r.input_tokens.tokenizer.unwrap() > 16);
    }
}

#[tokio::test]
async fn trace_replay_on_its_timestamps_and_our_records_replay_too() {
    let server = mock(5, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let lines: String = (0..10)
        .map(|i| {
            format!(
                "{{\"timestamp\": {}, \"input_length\": {}, \"output_length\": {}, \"hash_ids\": [{i}]}}\n",
                i * 100,
                40 + i,
                3 + i
            )
        })
        .collect();
    std::fs::write(&trace, lines).unwrap();
    let results = dir.path().join("r");
    let out = run(flags(
        &server.base_url(),
        &[
            "--trace",
            trace.to_str().unwrap(),
            "--time-scale",
            "0.5",
            "--results-dir",
            results.to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(
        out.records.len(),
        10,
        "the whole trace, without a request limit"
    );
    let mut by_id = out.records.clone();
    by_id.sort_by_key(|r| r.id);
    for (i, r) in by_id.iter().enumerate() {
        let i = i as u64;
        assert!(r.outcome.is_ok(), "{:?}", r.outcome);
        assert_eq!(r.intended_send_us, i * 50_000, "timestamps scaled by 0.5");
        assert_eq!(r.input_tokens.tokenizer, Some(40 + i));
        assert_eq!(r.max_tokens, Some(3 + i));
    }
    let lag = out.summary.schedule_lag_s.p50.unwrap();
    assert!(lag < 0.02, "median schedule lag {lag}");

    // The run's own records are a trace: the same arrival pattern and lengths replay.
    let again = run(flags(
        &server.base_url(),
        &[
            "--trace",
            results.join("m_60_8_requests.jsonl").to_str().unwrap(),
        ],
    ))
    .await;
    server.stop().await.unwrap();
    let mut a: Vec<(u64, Option<u64>)> = by_id
        .iter()
        .map(|r| (r.intended_send_us, r.max_tokens))
        .collect();
    let mut b: Vec<(u64, Option<u64>)> = again
        .records
        .iter()
        .map(|r| (r.intended_send_us, r.max_tokens))
        .collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
}

#[tokio::test]
async fn sweep_points_summary_and_early_stop() {
    let server = mock(5, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = flags(
        &server.base_url(),
        &[
            "--sweep",
            "concurrency=1,2,4",
            "--max-num-completed-requests",
            "8",
            "--results-dir",
            dir.path().to_str().unwrap(),
        ],
    );
    let (result, exit) = loadgen::sweep::run_sweep(plan, Control::new())
        .await
        .unwrap();
    assert_eq!(exit, Exit::Ok);
    assert_eq!(result.rows.len(), 3);
    assert!(result.stopped.is_none());
    for (i, name) in ["01-concurrency-1", "02-concurrency-2", "03-concurrency-4"]
        .iter()
        .enumerate()
    {
        assert!(
            dir.path().join(name).join("m_60_8_summary.json").is_file(),
            "{name}"
        );
        assert_eq!(result.rows[i].requests, 8);
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("sweep_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["result"]["rows"].as_array().unwrap().len(), 3);
    assert!(result.table().contains("concurrency-4"));

    // Every request fails: the sweep stops after its first point.
    let failing = mock_server::spawn(mock_server::Settings {
        fault_rate: 1.0,
        fault: vec!["status=500".parse().unwrap()],
        ..mock_server::Settings::default()
    })
    .await
    .unwrap();
    let plan = flags(
        &failing.base_url(),
        &[
            "--sweep",
            "concurrency=1,2,4",
            "--sweep-stop",
            "error_rate=0.5",
            "--max-num-completed-requests",
            "4",
        ],
    );
    let (result, _) = loadgen::sweep::run_sweep(plan, Control::new())
        .await
        .unwrap();
    assert_eq!(result.rows.len(), 1);
    assert!(result.stopped.as_deref().unwrap().contains("error rate"));
    server.stop().await.unwrap();
    failing.stop().await.unwrap();
}

#[tokio::test]
async fn warmup_and_cooldown_seconds_trim_the_results_but_keep_the_records() {
    let server = mock(20, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(flags(
        &server.base_url(),
        &[
            "--request-rate",
            "20",
            "--arrival",
            "constant",
            "--max-num-completed-requests",
            "30",
            "--warmup-seconds",
            "0.3",
            "--cooldown-seconds",
            "0.3",
            "--results-dir",
            dir.path().to_str().unwrap(),
        ],
    ))
    .await;
    server.stop().await.unwrap();
    assert_eq!(out.all_records.len(), 30);
    let warm = out
        .all_records
        .iter()
        .filter(|r| r.excluded.as_deref() == Some("warmup"))
        .count();
    let cool = out
        .all_records
        .iter()
        .filter(|r| r.excluded.as_deref() == Some("cooldown"))
        .count();
    // Arrivals every 50 ms: those at 0–250 ms are warm-up (6); the drain's last 300 ms holds a few.
    assert_eq!(warm, 6);
    assert!(cool >= 3, "{cool}");
    assert_eq!(out.records.len(), 30 - warm - cool);
    assert_eq!(out.summary.num_requests_started as usize, out.records.len());
    let jsonl = std::fs::read_to_string(dir.path().join("m_60_8_requests.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 30, "every record is kept");
    assert_eq!(jsonl.matches("\"excluded\":\"warmup\"").count(), 6);
    assert_eq!(jsonl.matches("\"excluded\":\"cooldown\"").count(), cool);
    let individual: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("m_60_8_individual_responses.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(individual.as_array().unwrap().len(), out.records.len());
}

/// A healthy run: the records and the live in-flight counter measure the same interval of every
/// request, so Little's law agrees (it once flagged 22 % on exactly such a run). Requests last about
/// 190 ms, so the 50 streams are nearly always in flight: with 30 ms requests they spent most of
/// their time between requests, and at load 10 on two cores the check read 15-19 % and flagged.
/// With kernel stamps (the default) a record ends when its last packet arrived and the counter
/// when loadgen read it: under the suite's own load that moved the two 4 % apart (9 ms a request)
/// until the check added the measured wait to the records' side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn littles_law_holds_on_a_healthy_run() {
    let server = mock(50, 20).await;
    let out = run(flags(
        &server.base_url(),
        &[
            "--max-num-completed-requests",
            "1000",
            "--num-concurrent-requests",
            "50",
        ],
    ))
    .await;
    server.stop().await.unwrap();
    assert_eq!(out.summary.number_errors, 0);
    let l = out.littles_law.expect("a run of over a second is checked");
    assert!(!l.flagged, "{l:?}");
    // Tighter than the product's 10 %: here the two agreed within 0.1 % idle and 0.4 % at load 10,
    // and a mismatch like the bug above (22 % of 30 ms: about 6.6 ms a request) would read 3.5 %.
    assert!(l.relative_difference < 0.02, "{l:?}");
    assert!(out.warnings.iter().all(|w| !w.contains("Little")));
}

/// The same flags and seed send the same requests (LLMPerf's sampling, the default), and another
/// seed does not.
#[tokio::test]
async fn the_same_flags_and_seed_send_identical_requests() {
    use std::sync::{Arc, Mutex};
    let bodies = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = bodies.clone();
    let (base, _) = common::raw_server(move |mut s, _| {
        let seen = seen.clone();
        async move {
            while let Some(req) = common::read_request(&mut s).await {
                if req.method == "POST" {
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&req.body).into_owned());
                }
                common::send(
                    &mut s,
                    &common::stream_response(&[ROLE, TOK, FIN, "[DONE]"]),
                )
                .await;
            }
        }
    })
    .await;
    let mut runs = Vec::new();
    for seed in ["7", "7", "8"] {
        bodies.lock().unwrap().clear();
        let out = run(flags(
            &base,
            &[
                "--max-num-completed-requests",
                "6",
                "--num-concurrent-requests",
                "1",
                "--seed",
                seed,
            ],
        ))
        .await;
        assert_eq!(out.summary.num_completed_requests, 6);
        runs.push(bodies.lock().unwrap().clone());
    }
    assert_eq!(runs[0].len(), 6);
    assert_eq!(runs[0], runs[1], "same seed, same requests, byte for byte");
    assert_ne!(runs[0], runs[2], "another seed, other requests");
}
