//! LLMPerf compatibility: its nine per-request keys, its file names, its summary JSON key order and its
//! console block, computed from our records with either LLMPerf's metric definitions or corrected ones.
//!
//! What we keep from LLMPerf and what we fix (see `README.md`, "LLMPerf compatibility"):
//! * kept: key names and order, file names, `version` "2023-08-31", `error_code_frequency` as a string,
//!   the console layout with Python-style float formatting;
//! * fixed: no bare `NaN` (a missing value is `null`), token-count min/max are numbers not strings, and
//!   by default `inter_token_latency_s` is TPOT (excludes TTFT, divides by tokens). `--metrics llmperf`
//!   restores LLMPerf's formula for that key; the summary says which definitions were used.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::record::RequestRecord;

/// LLMPerf's summary `version` field.
pub const LLMPERF_VERSION: &str = "2023-08-31";

/// Which definition fills the LLMPerf-named `inter_token_latency_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricDefinitions {
    /// TPOT: (e2e − ttft) / (output tokens − 1).
    #[default]
    Tokenperf,
    /// LLMPerf's: (last content − send) / data events, TTFT included, divided by chunks.
    Llmperf,
}

/// The nine keys of an LLMPerf `*_individual_responses.json` record, in LLMPerf's order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LlmperfMetrics {
    /// `null` on success; HTTP status, server error code, or -1.
    #[serde(default)]
    pub error_code: Option<Value>,
    #[serde(default)]
    pub error_msg: String,
    #[serde(default)]
    pub inter_token_latency_s: Option<f64>,
    #[serde(default)]
    pub ttft_s: Option<f64>,
    #[serde(default)]
    pub end_to_end_latency_s: Option<f64>,
    #[serde(default)]
    pub request_output_throughput_token_per_s: Option<f64>,
    #[serde(default)]
    pub number_total_tokens: u64,
    #[serde(default)]
    pub number_output_tokens: u64,
    #[serde(default)]
    pub number_input_tokens: u64,
}

impl LlmperfMetrics {
    pub fn from_record(r: &RequestRecord, defs: MetricDefinitions) -> Self {
        let ok = r.outcome.is_ok();
        // LLMPerf re-tokenized the streamed text with BOS, whatever the server said.
        let out = match defs {
            MetricDefinitions::Tokenperf => r.output_token_count(),
            MetricDefinitions::Llmperf => r
                .output_tokens
                .tokenizer_with_specials
                .unwrap_or_else(|| r.output_token_count()),
        };
        // The prompt loadgen built, by its tokenizer (what the flags asked for); the server's count,
        // chat template included, stays beside it in the record. LLMPerf reports the prompt length
        // it sampled, not the prompt it built.
        let inp = match defs {
            MetricDefinitions::Tokenperf => r
                .input_tokens
                .tokenizer
                .unwrap_or_else(|| r.input_tokens.value()),
            MetricDefinitions::Llmperf => r
                .prompt_target_tokens
                .unwrap_or_else(|| r.input_tokens.value()),
        };
        let itl = match defs {
            MetricDefinitions::Tokenperf => r.tpot_s(),
            MetricDefinitions::Llmperf => r.llmperf_inter_token_latency_s(),
        };
        Self {
            error_code: r.outcome.error_code(),
            error_msg: r.outcome.message().to_string(),
            inter_token_latency_s: if ok { itl } else { None },
            ttft_s: r.ttft_s(),
            end_to_end_latency_s: if ok { r.e2e_s() } else { None },
            request_output_throughput_token_per_s: if ok {
                match defs {
                    MetricDefinitions::Tokenperf => r.output_throughput_tps(),
                    MetricDefinitions::Llmperf => {
                        r.e2e_s().filter(|e| *e > 0.0).map(|e| out as f64 / e)
                    }
                }
            } else {
                None
            },
            number_total_tokens: inp + out,
            number_output_tokens: out,
            number_input_tokens: inp,
        }
    }
}

/// LLMPerf's output file stem: `{model}_{mean_in}_{mean_out}` with every run of characters other than
/// word characters and `-` replaced by one `-`, then runs of `-` squeezed.
/// `meta-llama/Llama-2-7b-chat-hf`, 550, 150 → `meta-llama-Llama-2-7b-chat-hf_550_150`.
pub fn file_stem(model: &str, mean_input_tokens: u64, mean_output_tokens: u64) -> String {
    let raw = format!("{model}_{mean_input_tokens}_{mean_output_tokens}");
    let mut out = String::with_capacity(raw.len());
    for ch in raw.chars() {
        // Python's `\w` is Unicode-aware: letters, digits and underscore.
        let c = if ch.is_alphanumeric() || ch == '_' {
            ch
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out
}

/// Flattens nested JSON objects with `_` as LLMPerf's `flatten_dict` does; an empty object disappears.
pub fn flatten_into(prefix: &str, value: &Value, out: &mut Map<String, Value>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}_{k}")
                };
                flatten_into(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` on integral values, scientific notation
/// below 1e-4 and from 1e16 (`1e-05`, `1.5e+16`). Used so our console block reads like LLMPerf's.
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let sci = format!("{x:e}");
    let (mant, exp) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exp: i32 = exp.parse().expect("exponent is an integer");
    if (-4..16).contains(&exp) {
        let s = format!("{x}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    }
}

/// Replaces bare `NaN`, `Infinity` and `-Infinity` tokens outside strings with `null`, so Python's
/// `json.dump` output parses as JSON.
pub fn sanitize_nonstandard_json(input: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !input.windows(3).any(|w| w == b"NaN" || w == b"Inf") {
        return std::borrow::Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    let mut in_str = false;
    while i < input.len() {
        let b = input[i];
        if in_str {
            out.push(b);
            if b == b'\\' && i + 1 < input.len() {
                out.push(input[i + 1]);
                i += 2;
                continue;
            }
            if b == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        let rest = &input[i..];
        if b == b'"' {
            in_str = true;
            out.push(b);
            i += 1;
        } else if rest.starts_with(b"NaN") {
            out.extend_from_slice(b"null");
            i += 3;
        } else if rest.starts_with(b"-Infinity") {
            out.extend_from_slice(b"null");
            i += 9;
        } else if rest.starts_with(b"Infinity") {
            out.extend_from_slice(b"null");
            i += 8;
        } else {
            out.push(b);
            i += 1;
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {

    /// `--metrics llmperf` against LLMPerf's formulas as shared/reference/llmperf.md §4 documents
    /// them, on a stream as a vLLM-style server sends it: a role chunk, three content chunks, a
    /// finish chunk and a usage chunk.
    #[test]
    fn llmperf_definitions_match_its_documented_formulas() {
        use crate::record::{Event, RequestRecord, TokenCount};
        let mut r = RequestRecord::new(0, 0);
        r.sent_at_us = Some(1_000);
        r.events = vec![
            Event(4_000, 0),  // role
            Event(51_000, 1), // content
            Event(61_000, 1),
            Event(71_000, 1),
            Event(72_000, 0), // finish
            Event(72_500, 0), // usage
        ];
        r.done_at_us = Some(73_000);
        r.output_tokens = TokenCount::new(Some(3), Some(3));
        r.output_tokens.tokenizer_with_specials = Some(4);
        r.input_tokens = TokenCount::new(Some(107), Some(93));
        r.prompt_target_tokens = Some(100);

        // The reference, term by term (seconds since the send, as LLMPerf's monotonic clock).
        let start = 0.001;
        let (first_content, last_content, closed) = (0.051, 0.071, 0.073);
        let data_lines = 6.0; // every data event but [DONE]: role, content, finish and usage alike
        let gen_tokens = 4.0; // len(llama.encode(generated_text)): 3 tokens and the BOS
        let want_ttft = first_content - start;
        let want_e2e = closed - start;
        let want_itl = (last_content - start) / data_lines;
        let want_tput = gen_tokens / want_e2e;

        let m = LlmperfMetrics::from_record(&r, MetricDefinitions::Llmperf);
        let near = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-12;
        assert!(near(m.ttft_s, want_ttft), "{m:?}");
        assert!(near(m.end_to_end_latency_s, want_e2e));
        assert!(near(m.inter_token_latency_s, want_itl), "{m:?}");
        assert!(near(m.request_output_throughput_token_per_s, want_tput));
        assert_eq!(m.number_output_tokens, 4);
        assert_eq!(
            m.number_input_tokens, 100,
            "the sampled length, not a count"
        );
        assert_eq!(m.number_total_tokens, 104);
        // Our own definitions on the same record: the server's output count, the built prompt's.
        let ours = LlmperfMetrics::from_record(&r, MetricDefinitions::Tokenperf);
        assert_eq!(
            (ours.number_output_tokens, ours.number_input_tokens),
            (3, 93)
        );
    }

    use super::*;

    #[test]
    fn file_stem_matches_llmperf_examples() {
        assert_eq!(
            file_stem("meta-llama/Llama-2-7b-chat-hf", 550, 150),
            "meta-llama-Llama-2-7b-chat-hf_550_150"
        );
        assert_eq!(
            file_stem("gpt-3.5-turbo", 550, 150),
            "gpt-3-5-turbo_550_150"
        );
        assert_eq!(
            file_stem("hf:neuralmagic/MiniChat-1.5-3B-pruned50-quant-ds", 100, 200),
            "hf-neuralmagic-MiniChat-1-5-3B-pruned50-quant-ds_100_200"
        );
        assert_eq!(file_stem("a -- b", 1, 2), "a-b_1_2");
    }

    #[test]
    fn python_float_repr() {
        assert_eq!(py_float(0.005656395034778967), "0.005656395034778967");
        assert_eq!(py_float(84.0), "84.0");
        assert_eq!(py_float(174.79999999999998), "174.79999999999998");
        assert_eq!(py_float(1e-5), "1e-05");
        assert_eq!(py_float(2.5e-7), "2.5e-07");
        assert_eq!(py_float(0.0001), "0.0001");
        assert_eq!(py_float(1.5e16), "1.5e+16");
        assert_eq!(py_float(1e15), "1000000000000000.0");
        assert_eq!(py_float(0.0), "0.0");
        assert_eq!(py_float(f64::NAN), "nan");
    }

    #[test]
    fn sanitizes_nan_outside_strings_only() {
        let s = br#"{"a": NaN, "b": "NaN", "c": [Infinity, -Infinity], "d": "x\"NaN"}"#;
        let out = sanitize_nonstandard_json(s);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["a"].is_null());
        assert_eq!(v["b"], "NaN");
        assert!(v["c"][0].is_null() && v["c"][1].is_null());
        assert_eq!(v["d"], "x\"NaN");
    }

    #[test]
    fn flatten_like_llmperf() {
        let v = serde_json::json!({"temperature": 0.5, "extra": {"top_k": 4}, "empty": {}});
        let mut m = Map::new();
        flatten_into("additional_sampling_params", &v, &mut m);
        assert_eq!(m["additional_sampling_params_temperature"], 0.5);
        assert_eq!(m["additional_sampling_params_extra_top_k"], 4);
        assert_eq!(m.len(), 2, "an empty dict disappears: {m:?}");
    }
}
