//! One plan split over shard processes, as a Kubernetes Indexed Job runs it: N loadgen processes
//! with `--shards N` and `JOB_COMPLETION_INDEX` against one in-process mock, held to one
//! `--start-at`, then analyze merging their folders into one run. The merged run must be exactly
//! the plan (every request once, the same prompts and lengths as the unsharded run) and its
//! statistics those of the union of the shards' records on the shared clock.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use tokenperf_core::record::RequestRecord;
use tokenperf_core::summary::{RunInfo, RunSummary};

const SHARDS: u64 = 3;
const REQUESTS: u64 = 41;

fn loadgen(base: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(tokenperf_tests::bin_dir().join("loadgen"));
    c.args([
        "--model",
        "m",
        "--api-base",
        base,
        "--api-key",
        "k",
        "--tokenizer",
        "tokenperf",
        "--mean-input-tokens",
        "40",
        "--stddev-input-tokens",
        "10",
        "--mean-output-tokens",
        "6",
        "--stddev-output-tokens",
        "3",
        "--num-concurrent-requests",
        "4",
        "--max-num-completed-requests",
        &REQUESTS.to_string(),
        "--quiet",
        "--results-dir",
    ])
    .arg(dir)
    .args(extra)
    .env("HF_HUB_OFFLINE", "1")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// The records and metadata of one results folder.
fn read_run(dir: &Path) -> (Vec<RequestRecord>, RunInfo) {
    let stem = tokenperf_core::llmperf::file_stem("m", 40, 6);
    let text = std::fs::read_to_string(dir.join(format!("{stem}_requests.jsonl"))).unwrap();
    let records = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let info =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{stem}_run.json"))).unwrap())
            .unwrap();
    (records, info)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_processes_merge_into_exactly_the_plan() {
    let server = mock_server::spawn(mock_server::Settings {
        ttft_ms: 5.0,
        itl_ms: 2.0,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = server.base_url();
    let tmp = tempfile::tempdir().unwrap();
    let (whole_dir, sharded) = (tmp.path().join("whole"), tmp.path().join("sharded"));

    // The shards wait for one instant a few seconds out, as pods started apart would.
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start_at = format!("{:.3}", now_s + 3.0);
    let children: Vec<_> = (0..SHARDS)
        .map(|i| {
            loadgen(
                &base,
                &sharded,
                &["--shards", &SHARDS.to_string(), "--start-at", &start_at],
            )
            .env("JOB_COMPLETION_INDEX", i.to_string())
            .spawn()
            .unwrap()
        })
        .collect();
    let whole = loadgen(&base, &whole_dir, &[]).spawn().unwrap();
    for child in children.into_iter().chain([whole]) {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Each shard: its own folder, its part of the requests, and how it started.
    let mut union = Vec::new();
    let mut zero = u64::MAX;
    let mut parts = Vec::new();
    for i in 0..SHARDS {
        let (records, info) = read_run(&sharded.join(format!("shard-{i}-of-{SHARDS}")));
        let shard = info.shard.expect("a shard says which");
        assert_eq!((shard.index, shard.count), (i, SHARDS));
        let start = info.start.expect("--start-at is recorded");
        assert!(
            (0..30_000_000).contains(&start.start_skew_us),
            "shard {i} began {} µs after --start-at",
            start.start_skew_us
        );
        assert!(!info.host.is_empty());
        assert!(
            records.iter().all(|r| r.id % SHARDS == i),
            "shard {i} sent another's request"
        );
        assert_eq!(records.len() as u64, (REQUESTS - i).div_ceil(SHARDS));
        zero = zero.min(info.run_started_unix_us);
        parts.push((records, info));
    }
    for (records, info) in parts {
        let offset = info.run_started_unix_us - zero;
        union.extend(records.into_iter().map(|mut r| {
            r.intended_send_us += offset;
            r.sent_at_us = r.sent_at_us.map(|t| t + offset);
            r.response_head_at_us = r.response_head_at_us.map(|t| t + offset);
            r.done_at_us = r.done_at_us.map(|t| t + offset);
            r.events.iter_mut().for_each(|e| e.0 += offset);
            r
        }));
    }

    // The union is the unsharded plan: every request once, with the same prompt and length.
    let (whole_records, _) = read_run(&whole_dir);
    let mut ids: Vec<u64> = union.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..REQUESTS).collect::<Vec<_>>());
    let by_id = |rs: &[RequestRecord], id: u64| rs.iter().find(|r| r.id == id).cloned().unwrap();
    for id in 0..REQUESTS {
        let (a, b) = (by_id(&union, id), by_id(&whole_records, id));
        assert_eq!(a.max_tokens, b.max_tokens, "request {id}");
        assert_eq!(
            a.input_tokens.tokenizer, b.input_tokens.tokenizer,
            "request {id}"
        );
    }
    let total = |rs: &[RequestRecord], f: fn(&RequestRecord) -> u64| rs.iter().map(f).sum::<u64>();
    let out_tokens = |r: &RequestRecord| r.output_token_count();
    let in_tokens = |r: &RequestRecord| r.input_tokens.value();
    assert_eq!(total(&union, out_tokens), total(&whole_records, out_tokens));
    assert_eq!(total(&union, in_tokens), total(&whole_records, in_tokens));

    // analyze merges the folder into one run whose statistics are the union's.
    let runs = analyze::input::load(&sharded).unwrap();
    assert_eq!(runs.len(), 1);
    let merged = &runs[0];
    union.sort_by_key(|r| r.id);
    let want = RunSummary::from_records(&union, Default::default());
    assert_eq!(merged.summary.first_difference(&want, 1e-12), None);
    assert_eq!(merged.summary.num_completed_requests, REQUESTS);
    assert_eq!(merged.info.as_ref().unwrap().run_started_unix_us, zero);
    // On the shared clock the merged window spans every shard's own window (whatever the load on
    // this machine made their start skews).
    for i in 0..SHARDS {
        let (r, _) = read_run(&sharded.join(format!("shard-{i}-of-{SHARDS}")));
        let own = RunSummary::from_records(&r, Default::default())
            .window_s
            .unwrap();
        assert!(merged.summary.window_s.unwrap() >= own - 1e-9, "shard {i}");
    }

    // The by-shard breakdown (a polars group-by over the merged frame) gives each shard what its
    // own records give.
    let by = analyze::breakdown::by_shard(merged).unwrap().unwrap();
    assert_eq!(by.rows.len(), SHARDS as usize);
    for (i, row) in by.rows.iter().enumerate() {
        let (r, _) = read_run(&sharded.join(format!("shard-{i}-of-{SHARDS}")));
        let own = RunSummary::from_records(&r, Default::default());
        assert_eq!(row.group, format!("shard {i}"));
        assert_eq!(row.requests, own.num_requests_started, "shard {i}");
        let (a, b) = (row.ttft_s.p50.unwrap(), own.ttft_s.p50.unwrap());
        assert!((a - b).abs() <= 1e-9 * b, "shard {i}: TTFT p50 {a} vs {b}");
    }

    // Apart, each shard is its own run; a missing shard is an error that names it.
    assert_eq!(
        analyze::input::load_with(&sharded, true).unwrap().len(),
        SHARDS as usize
    );
    std::fs::rename(
        sharded.join(format!("shard-1-of-{SHARDS}")),
        tmp.path().join("elsewhere"),
    )
    .unwrap();
    let e = analyze::input::load(&sharded).unwrap_err();
    assert!(format!("{e:#}").contains("shard-1-of-3 missing"), "{e:#}");
    server.stop().await.unwrap();
}
