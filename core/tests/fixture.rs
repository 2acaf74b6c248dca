//! The committed records fixture (schema version 1) must keep parsing, and the metrics derived from its
//! raw fields must equal the LLMPerf keys stored beside them.

use tokenperf_core::llmperf::MetricDefinitions;
use tokenperf_core::record::{Outcome, RequestRecord, TokenSource};
use tokenperf_core::summary::RunSummary;

const TEXT: &str = include_str!("data/requests-v1.jsonl");

/// The LLMPerf keys as stored on each line (reading a record leaves them out: they are recomputed).
fn stored() -> Vec<tokenperf_core::llmperf::LlmperfMetrics> {
    TEXT.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn fixture() -> Vec<RequestRecord> {
    TEXT.lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", i + 1)))
        .collect()
}

#[test]
fn v1_records_parse_and_recompute() {
    let recs = fixture();
    assert_eq!(recs.len(), 5);
    for (r, kept) in recs.iter().zip(stored()) {
        assert_eq!(
            r.llmperf,
            Default::default(),
            "read records carry no stale keys"
        );
        assert_eq!(r.schema_version, 1);
        if r.outcome.is_ok() {
            let m = r.llmperf_metrics(MetricDefinitions::Tokenperf);
            // Since 2026-12-01 `number_input_tokens` is the prompt loadgen built (the tokenizer's
            // count), no longer the server's; v1 files stored the server's. Everything else
            // recomputes to what was stored.
            assert_eq!(
                m.number_input_tokens,
                r.input_tokens.tokenizer.unwrap(),
                "record {}",
                r.id
            );
            let stored_as_now = tokenperf_core::llmperf::LlmperfMetrics {
                number_input_tokens: m.number_input_tokens,
                number_total_tokens: m.number_input_tokens + m.number_output_tokens,
                ..kept
            };
            assert_eq!(m, stored_as_now, "record {} recomputes differently", r.id);
            assert_eq!(r.output_tokens.used, TokenSource::Server);
            assert!(r.ttft_s().unwrap() > 0.0 && r.ttft_s() < r.e2e_s());
        }
    }
    assert!(matches!(
        recs[3].outcome,
        Outcome::HttpStatus { status: 503, .. }
    ));
    assert!(matches!(recs[4].outcome, Outcome::Dropped { .. }));
    assert_eq!(recs[4].sent_at_us, None);
    let s = RunSummary::from_records(&recs, MetricDefinitions::Tokenperf);
    assert_eq!(
        (
            s.num_requests_started,
            s.number_errors,
            s.dropped,
            s.num_completed_requests
        ),
        (4, 1, 1, 3)
    );
    assert_eq!(s.error_code_frequency_string(), "{503: 1}");
}

#[test]
fn unknown_fields_are_ignored() {
    let mut line: serde_json::Value = serde_json::from_str(
        include_str!("data/requests-v1.jsonl")
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    line["a_field_from_the_future"] = serde_json::json!({"x": 1});
    let r: RequestRecord = serde_json::from_value(line).unwrap();
    assert_eq!(r.id, 0);
}
