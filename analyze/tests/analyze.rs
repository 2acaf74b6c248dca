//! analyze end to end on committed fixtures: LLMPerf's format with its quirks, and our records.

use std::path::{Path, PathBuf};

use analyze::charts::{Format, SIZE};
use analyze::{Args, analyze};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn our_records() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/requests-v1.jsonl")
}

fn close(a: Option<f64>, b: f64) {
    let a = a.expect("a value");
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

fn check_images(paths: &[PathBuf]) {
    for p in paths {
        let img = image::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!((img.width(), img.height()), SIZE, "{}", p.display());
    }
}

#[test]
fn llmperf_fixture_summary_by_hand_and_charts() {
    let out = tempfile::tempdir().unwrap();
    let a = analyze(&Args::new(
        vec![data("llmperf_individual_responses.json")],
        out.path().to_path_buf(),
    ))
    .unwrap();
    let s = &a.runs[0].summary;
    assert_eq!(
        (
            s.num_requests_started,
            s.number_errors,
            s.num_completed_requests
        ),
        (6, 2, 4)
    );
    close(Some(s.error_rate), 2.0 / 6.0);
    assert_eq!(
        s.error_code_frequency_string(),
        "{500: 1, 'rate_limit_exceeded': 1}"
    );
    // ok TTFTs 0.05, 0.07, 0.06, 0.09 → sorted 0.05 0.06 0.07 0.09.
    close(s.ttft_s.mean, 0.0675);
    close(s.ttft_s.p50, 0.065);
    close(s.ttft_s.p90, 0.084);
    close(s.ttft_s.min, 0.05);
    // Counts written as strings are numbers: output tokens 100, 191, 145, 225.
    close(s.number_output_tokens.mean, 165.25);
    close(s.number_output_tokens.max, 225.0);
    // The seed's four and three CDFs; no timeline (LLMPerf files have no timestamps), no sweep.
    assert_eq!(a.charts.len(), 7, "{:?}", a.charts);
    check_images(&a.charts);
    assert!(a.comparison.is_none());
}

#[test]
fn our_records_summary_equals_the_shared_one() {
    let out = tempfile::tempdir().unwrap();
    let a = analyze(&Args::new(vec![our_records()], out.path().to_path_buf())).unwrap();
    let text = std::fs::read_to_string(our_records()).unwrap();
    let records: Vec<tokenperf_core::record::RequestRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want = tokenperf_core::summary::RunSummary::from_records(&records, Default::default());
    // polars computes the six LLMPerf-metric statistics, core the rest; they may round the last
    // bit differently, no more.
    assert_eq!(a.runs[0].summary.first_difference(&want, 1e-12), None);
    assert!(a.charts.iter().any(|c| c.ends_with("timeline.png")));
    assert!(a.charts.iter().any(|c| c.ends_with("load_over_time.png")));
    check_images(&a.charts);
    // The over-time breakdown is in summary.json and report.html.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&a.summaries[0]).unwrap()).unwrap();
    let rows = doc["breakdowns"][0]["rows"].as_array().unwrap();
    let sent: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert_eq!(sent, want.num_requests_started);
    let html = std::fs::read_to_string(&a.report).unwrap();
    assert!(html.contains("Over the run: 10 windows"), "{html}");
}

#[test]
fn several_runs_overlay_and_compare_and_the_report_links_resolve() {
    let out = tempfile::tempdir().unwrap();
    let a = analyze(&Args::new(
        vec![our_records(), data("llmperf_individual_responses.json")],
        out.path().to_path_buf(),
    ))
    .unwrap();
    assert_eq!(a.runs.len(), 2);
    // Per-run summaries in their own folders, one comparison, and the sweep chart.
    assert_eq!(a.summaries.len(), 2);
    assert!(
        a.summaries
            .iter()
            .all(|p| p.parent().unwrap() != out.path())
    );
    let cmp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.comparison.as_ref().unwrap()).unwrap()).unwrap();
    assert_eq!(cmp["runs"].as_array().unwrap().len(), 2);
    assert_eq!(cmp["runs"][1]["errors"], 2.0);
    assert!(a.charts.iter().any(|c| c.ends_with("sweep.png")));
    assert!(
        !a.charts.iter().any(|c| c.ends_with("timeline.png")),
        "a timeline is per run"
    );
    check_images(&a.charts);
    let html = std::fs::read_to_string(&a.report).unwrap();
    let mut links = 0;
    for part in html.split("src=\"").skip(1) {
        let link = &part[..part.find('"').unwrap()];
        assert!(
            out.path().join(link).is_file(),
            "report links to missing '{link}'"
        );
        links += 1;
    }
    assert_eq!(links, a.charts.len());
    assert!(
        html.contains("rate_limit_exceeded"),
        "the LLMPerf block is in the report"
    );
    // The report answers first: what ran and the headline, then the comparison, the charts (the
    // sweep's first), and LLMPerf's blocks last.
    let at = |needle: &str| {
        html.find(needle)
            .unwrap_or_else(|| panic!("'{needle}' not in the report"))
    };
    let (what, headline) = (
        at("no *_run.json beside the records"),
        at("requests succeeded"),
    );
    let (table, charts, sweep) = (
        at("<h2>Comparison</h2>"),
        at("<h2>Charts</h2>"),
        at("sweep.png"),
    );
    let llmperf = at("<h2>LLMPerf's result blocks</h2>");
    assert!(
        what < headline && headline < table && table < charts,
        "{html}"
    );
    assert!(
        charts < sweep && sweep < at("e2e_latencies.png"),
        "the sweep leads"
    );
    assert!(charts < llmperf && at("Results for token benchmark") > llmperf);
    // Percentiles carry intervals in the table, and the note says what * means.
    assert!(cmp["runs"][0]["TTFT p50 (ms)"].get("ci95").is_some());
    assert!(html.contains("* marks a percentile"));
    // The console leads with the readable summary; LLMPerf's block only when asked.
    let console = analyze::report::console(&a.runs[0]);
    assert!(console.contains("requests succeeded") && !console.contains("Results for token"));
}

#[test]
fn svg_on_request() {
    let out = tempfile::tempdir().unwrap();
    let mut args = Args::new(vec![our_records()], out.path().to_path_buf());
    args.format = Format::Svg;
    let a = analyze(&args).unwrap();
    for c in &a.charts {
        assert_eq!(c.extension().unwrap(), "svg");
        let text = std::fs::read_to_string(c).unwrap();
        assert!(
            text.contains("<svg") && text.contains("</svg>"),
            "{}",
            c.display()
        );
    }
}

#[test]
fn filters_by_outcome_and_window() {
    let out = tempfile::tempdir().unwrap();
    let mut args = Args::new(
        vec![data("llmperf_individual_responses.json")],
        out.path().to_path_buf(),
    );
    args.outcomes = vec!["error".into()];
    let a = analyze(&args).unwrap();
    assert_eq!(a.runs[0].summary.num_requests_started, 2);
    assert!(a.charts.is_empty(), "only failed requests: nothing to draw");
    args.outcomes.clear();
    args.window = Some((0.0, 1.0));
    let e = format!("{:#}", analyze(&args).unwrap_err());
    assert!(
        e.contains("--window") && e.contains("llmperf_individual_responses.json"),
        "{e}"
    );

    let mut args = Args::new(vec![our_records()], out.path().join("w"));
    // The fixture's three ok requests were sent in the first 0.2 s; the 503 at 0.4 s.
    args.window = Some((0.0, 0.3));
    let a = analyze(&args).unwrap();
    assert_eq!(a.runs[0].summary.num_requests_started, 3);
}

#[test]
fn bad_input_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = |p: &Path| {
        format!(
            "{:#}",
            analyze(&Args::new(vec![p.to_path_buf()], out.clone())).unwrap_err()
        )
    };
    assert!(run(&dir.path().join("missing.json")).contains("missing.json"));
    let p = dir.path().join("x_individual_responses.json");
    std::fs::write(&p, "{oops").unwrap();
    assert!(run(&p).contains("not valid JSON"));
    std::fs::write(&p, "{\"a\": 1}").unwrap();
    assert!(run(&p).contains("expected a JSON array"));
    std::fs::write(&p, "[1, 2]").unwrap();
    assert!(run(&p).contains("wrong shape"));
    std::fs::write(&p, "[]").unwrap();
    assert!(run(&p).contains("holds no requests"));
    // Every request failed: the summary is written, no chart is drawn.
    std::fs::write(&p, r#"[{"error_code": 503, "error_msg": "busy"}]"#).unwrap();
    let a = analyze(&Args::new(vec![p.clone()], out.clone())).unwrap();
    assert!(a.charts.is_empty());
    assert!(
        std::fs::read_to_string(&a.report)
            .unwrap()
            .contains("Every one of the 1 requests failed")
    );
    // Writing into an input folder needs --into-input.
    let e = format!(
        "{:#}",
        analyze(&Args::new(vec![p.clone()], dir.path().to_path_buf())).unwrap_err()
    );
    assert!(e.contains("--into-input"), "{e}");
}

#[test]
fn chart_selection() {
    let out = tempfile::tempdir().unwrap();
    let mut args = Args::new(vec![our_records()], out.path().to_path_buf());
    args.charts = vec!["cdf_ttft".into(), "timeline".into()];
    let a = analyze(&args).unwrap();
    assert_eq!(a.charts.len(), 2);
    args.charts = vec!["pie".into()];
    let e = format!("{:#}", analyze(&args).unwrap_err());
    assert!(e.contains("'pie'") && e.contains("cdf_ttft"), "{e}");
}

#[test]
fn llmperf_summary_beside_the_records_gives_run_level_throughput() {
    // LLMPerf names the pair {stem}_summary.json and {stem}_individual_responses.json.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        data("llmperf_individual_responses.json"),
        dir.path().join("run_individual_responses.json"),
    )
    .unwrap();
    std::fs::copy(
        data("llmperf_summary.json"),
        dir.path().join("run_summary.json"),
    )
    .unwrap();
    let out = dir.path().join("out");
    for input in ["run_individual_responses.json", "run_summary.json"] {
        let a = analyze(&Args::new(vec![dir.path().join(input)], out.clone())).unwrap();
        let s = &a.runs[0].summary;
        // The string throughput and the NaN stddev are read; LLMPerf's run-level figures are kept.
        close(s.mean_output_throughput_token_per_s, 343.3687633083576);
        close(s.num_completed_requests_per_min, 194.43022532161083);
        assert_eq!(s.num_completed_requests, 4);
        // The console header names the model the summary names, not the file's stem ("run").
        let head = analyze::report::llmperf_block(&a.runs[0]);
        assert!(
            head.starts_with("\\Results for token benchmark for hf:mgoin/TinyStories-1M-ds "),
            "{head}"
        );
    }
    // A summary without its records, and a summary that is not one, name themselves.
    std::fs::remove_file(dir.path().join("run_individual_responses.json")).unwrap();
    let e = format!(
        "{:#}",
        analyze(&Args::new(
            vec![dir.path().join("run_summary.json")],
            out.clone()
        ))
        .unwrap_err()
    );
    assert!(
        e.contains("run_individual_responses.json") && e.contains("missing"),
        "{e}"
    );
    std::fs::copy(
        data("llmperf_individual_responses.json"),
        dir.path().join("run_individual_responses.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("run_summary.json"), "{\"name\": 1}").unwrap();
    let e = format!(
        "{:#}",
        analyze(&Args::new(
            vec![dir.path().join("run_individual_responses.json")],
            out
        ))
        .unwrap_err()
    );
    assert!(
        e.contains("run_summary.json") && e.contains("not an LLMPerf summary"),
        "{e}"
    );
}

/// Nothing is dropped or overwritten without a word: a cut last line keeps the complete records
/// and says so; two inputs with one stem keep two summaries; a broken sweep point fails the sweep.
#[test]
fn nothing_is_silently_dropped_or_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(our_records()).unwrap();
    let whole = text.lines().filter(|l| !l.trim().is_empty()).count();
    // A run cut mid-write: the last line half there, no newline after it.
    let last_start = text.trim_end().rfind('\n').unwrap() + 1;
    let cut = format!(
        "{}{}",
        &text[..last_start],
        &text[last_start..last_start + 40]
    );
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::write(a_dir.join("run_requests.jsonl"), &cut).unwrap();
    let out = dir.path().join("out-cut");
    let a = analyze(&Args::new(vec![a_dir.join("run_requests.jsonl")], out)).unwrap();
    let w = a.runs[0].warnings.join("\n");
    assert!(
        w.contains("run_requests.jsonl") && w.contains(&format!("line {whole}")),
        "{w}"
    );
    // Every complete record is read: all but the cut one.
    assert_eq!(a.runs[0].frame.height(), whole - 1);

    // Two inputs with the same file stem, from two folders.
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    std::fs::write(a_dir.join("run_requests.jsonl"), &text).unwrap();
    std::fs::write(b_dir.join("run_requests.jsonl"), &text).unwrap();
    let out = dir.path().join("out-two");
    let a = analyze(&Args::new(
        vec![
            a_dir.join("run_requests.jsonl"),
            b_dir.join("run_requests.jsonl"),
        ],
        out.clone(),
    ))
    .unwrap();
    let names: Vec<&str> = a.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["run", "run-2"]);
    assert!(out.join("run/summary.json").is_file() && out.join("run-2/summary.json").is_file());

    // A sweep with one corrupt point.
    let sweep = dir.path().join("sweep");
    for (p, body) in [
        ("01-c1", text.clone()),
        ("02-c2", format!("{{not json\n{text}")),
    ] {
        std::fs::create_dir_all(sweep.join(p)).unwrap();
        std::fs::write(sweep.join(p).join("run_requests.jsonl"), body).unwrap();
    }
    std::fs::create_dir_all(sweep.join("notes")).unwrap(); // not a point: ignored
    let e = format!(
        "{:#}",
        analyze(&Args::new(
            vec![sweep.clone()],
            dir.path().join("out-sweep")
        ))
        .unwrap_err()
    );
    assert!(e.contains("sweep point") && e.contains("02-c2"), "{e}");
}

/// A folder of shard folders that is not one split plan is refused, naming what is wrong; a shard
/// whose last line was cut still merges, with a warning.
#[test]
fn shard_folders_that_are_not_one_plan_are_refused() {
    let records = std::fs::read_to_string(our_records()).unwrap();
    let info = serde_json::json!({
        "schema_version": 1, "tool": "t", "model": "m", "llm_api": "openai",
        "mean_input_tokens": 1, "stddev_input_tokens": 0, "mean_output_tokens": 1,
        "stddev_output_tokens": 0, "num_concurrent_requests": 1,
        "run_started_unix_us": 1_700_000_000_000_000u64
    });
    // Shard `folder` with the fixture's records, ids moved by `shift`; with or without run.json.
    let shard = |root: &Path, folder: &str, shift: u64, with_info: bool| {
        let d = root.join(folder);
        std::fs::create_dir_all(&d).unwrap();
        let moved: String = records
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["id"] = (v["id"].as_u64().unwrap() * 2 + shift).into();
                format!("{v}\n")
            })
            .collect();
        std::fs::write(d.join("m_1_1_requests.jsonl"), moved).unwrap();
        if with_info {
            std::fs::write(d.join("m_1_1_run.json"), info.to_string()).unwrap();
        }
    };
    let err = |root: &Path| format!("{:#}", analyze::input::load(root).unwrap_err());

    let dup = tempfile::tempdir().unwrap();
    shard(dup.path(), "shard-0-of-2", 0, true);
    shard(dup.path(), "shard-1-of-2", 0, true);
    assert!(
        err(dup.path()).contains("appears in more than one shard"),
        "{}",
        err(dup.path())
    );

    let mixed = tempfile::tempdir().unwrap();
    shard(mixed.path(), "shard-0-of-2", 0, true);
    shard(mixed.path(), "shard-1-of-3", 1, true);
    assert!(
        err(mixed.path()).contains("is a shard of 3"),
        "{}",
        err(mixed.path())
    );

    let no_info = tempfile::tempdir().unwrap();
    shard(no_info.path(), "shard-0-of-2", 0, true);
    shard(no_info.path(), "shard-1-of-2", 1, false);
    assert!(
        err(no_info.path()).contains("no *_run.json"),
        "{}",
        err(no_info.path())
    );

    // A cut last line: the complete records merge, and the warning names the file.
    let cut = tempfile::tempdir().unwrap();
    shard(cut.path(), "shard-0-of-2", 0, true);
    shard(cut.path(), "shard-1-of-2", 1, true);
    let f = cut.path().join("shard-1-of-2/m_1_1_requests.jsonl");
    let mut text = std::fs::read_to_string(&f).unwrap();
    text.push_str("{\"schema_version\": 1, \"id\": 9");
    std::fs::write(&f, text).unwrap();
    let runs = analyze::input::load(cut.path()).unwrap();
    let n = records.lines().count();
    assert_eq!(runs[0].frame.height(), 2 * n);
    assert!(
        runs[0].warnings.iter().any(|w| w.contains("shard-1-of-2")),
        "{:?}",
        runs[0].warnings
    );
}
