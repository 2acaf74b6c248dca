//! Trace replay: requests sent on the timestamps of a recorded trace, with its input and output
//! lengths, through the open-loop dispatcher (so schedule lag and drops are reported as for any open
//! loop).
//!
//! # Format (JSONL, one request per line)
//! * Mooncake-style: `{"timestamp": ms since the trace start, "input_length": tokens,
//!   "output_length": tokens}`; optional `"prompt"` (sent as is instead of corpus text); other keys
//!   (`hash_ids` …) are ignored.
//! * Our own `*_requests.jsonl`: each record's intended send time, input token count and `max_tokens`
//!   (dropped requests included: they were arrivals too), so a run's arrival pattern replays.
//!
//! `--time-scale F` multiplies every timestamp (0.5 replays twice as fast).

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;
use tokenperf_core::lines::MAX_LINE_BYTES;
use tokenperf_core::record::TokenCount;
use tokenperf_core::rng::Rng;
use tokenperf_core::tokenizer::TokenCounter;

use crate::jsonl::for_each_line;
use crate::prompt::{PromptBuilder, PromptSpec, prefix};

/// One request of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEntry {
    /// When to send it, µs since the trace start (before scaling).
    pub at_us: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub prompt: Option<String>,
}

fn uint(v: &Value, key: &str) -> Option<u64> {
    let x = v.get(key)?;
    x.as_u64()
        .or_else(|| x.as_f64().filter(|f| *f >= 0.0).map(|f| f.round() as u64))
}

/// Reads a trace a line at a time (a run's own records, events and all, can be gigabytes; only the
/// entries are kept); a line that is neither shape, or longer than [`MAX_LINE_BYTES`], is an error
/// naming its number.
pub fn read(path: &Path) -> anyhow::Result<Vec<TraceEntry>> {
    read_capped(path, MAX_LINE_BYTES)
}

fn read_capped(path: &Path, max_line: usize) -> anyhow::Result<Vec<TraceEntry>> {
    let mut out = Vec::new();
    for_each_line(path, "the --trace file", max_line, |line, at| {
        out.push(parse_line(line, at)?);
        Ok(())
    })?;
    if out.is_empty() {
        bail!("'{}' has no requests", path.display());
    }
    // Traces are usually sorted; the dispatcher needs them to be.
    out.sort_by_key(|e| e.at_us);
    Ok(out)
}

/// What a replay takes from one of our records; the rest (its events above all) is skipped by the
/// parser without being built.
#[derive(serde::Deserialize)]
struct RecordArrival {
    intended_send_us: u64,
    #[serde(default)]
    input_tokens: TokenCount,
    #[serde(default)]
    output_tokens: TokenCount,
    #[serde(default)]
    max_tokens: Option<u64>,
}

impl RecordArrival {
    fn entry(self) -> TraceEntry {
        TraceEntry {
            at_us: self.intended_send_us,
            input_tokens: self
                .input_tokens
                .tokenizer
                .unwrap_or(self.input_tokens.value())
                .max(1),
            output_tokens: self.max_tokens.unwrap_or(self.output_tokens.value()).max(1),
            prompt: None,
        }
    }
}

/// One trace line: one of our records, or a Mooncake-style entry.
fn parse_line(line: &str, at: &dyn Fn() -> String) -> anyhow::Result<TraceEntry> {
    // A record is read straight into the few fields a replay needs; a line that fails that (or is
    // not a record) goes through a JSON value, for an error that says what is wrong with it.
    if line.contains("\"intended_send_us\"")
        && let Ok(r) = serde_json::from_str::<RecordArrival>(line)
    {
        return Ok(r.entry());
    }
    let v: Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
    if v.get("intended_send_us").is_some() {
        let r: RecordArrival = serde_json::from_value(v)
            .with_context(|| format!("{}: not a tokenperf record", at()))?;
        return Ok(r.entry());
    }
    mooncake_entry(&v, at)
}

/// A Mooncake-style line: `timestamp` (ms), `output_length`, and `input_length` or a `prompt`.
fn mooncake_entry(v: &Value, at: &dyn Fn() -> String) -> anyhow::Result<TraceEntry> {
    let ts = v
        .get("timestamp")
        .and_then(Value::as_f64)
        .filter(|t| *t >= 0.0)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: needs a non-negative 'timestamp' (ms since the trace start)",
                at()
            )
        })?;
    let output_tokens = uint(v, "output_length")
        .filter(|n| *n > 0)
        .ok_or_else(|| anyhow::anyhow!("{}: needs a positive 'output_length'", at()))?;
    let prompt = v.get("prompt").and_then(Value::as_str).map(str::to_string);
    let input_tokens = match (uint(v, "input_length"), &prompt) {
        (Some(n), _) if n > 0 => n,
        (_, Some(_)) => 0, // counted from the prompt below
        _ => bail!("{}: needs a positive 'input_length' or a 'prompt'", at()),
    };
    Ok(TraceEntry {
        at_us: (ts * 1e3).round() as u64,
        input_tokens,
        output_tokens,
        prompt,
    })
}

/// The schedule: each entry's send time, µs after the run start, scaled.
pub fn schedule(entries: &[TraceEntry], time_scale: f64) -> Vec<u64> {
    entries
        .iter()
        .map(|e| (e.at_us as f64 * time_scale).round() as u64)
        .collect()
}

/// An entry's request: its own prompt, or one cut from the corpus to the traced input length.
/// Entries are built in trace order from one `rng`, so a seed gives the same prompts every time.
pub fn build_spec(
    e: &TraceEntry,
    builder: &PromptBuilder<'_>,
    tokenizer: &TokenCounter,
    rng: &mut Rng,
) -> anyhow::Result<PromptSpec> {
    let prompt = match &e.prompt {
        Some(p) => p.clone(),
        None => {
            // LLMPerf's instruction when it fits, then corpus lines, to exactly the length.
            let head = prefix(e.output_tokens);
            let head = if (tokenizer.count(&head, true)? as u64) <= e.input_tokens {
                head
            } else {
                String::new()
            };
            builder.exact_body(rng, head, e.input_tokens)?
        }
    };
    Ok(PromptSpec {
        prompt_tokens: tokenizer.count(&prompt, true)? as u64,
        prompt,
        messages: None,
        max_tokens: e.output_tokens,
        target_tokens: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenperf_core::tokenizer::PROJECT_CORPUS;

    #[test]
    fn mooncake_lines_and_bad_lines_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        std::fs::write(
            &p,
            "{\"timestamp\": 250, \"input_length\": 60, \"output_length\": 8, \"hash_ids\": [1,2]}\n\
             {\"timestamp\": 0, \"input_length\": 40, \"output_length\": 5}\n\
             {\"timestamp\": 100.5, \"prompt\": \"the harbor\", \"output_length\": 3}\n",
        )
        .unwrap();
        let e = read(&p).unwrap();
        assert_eq!(
            e.iter().map(|x| x.at_us).collect::<Vec<_>>(),
            vec![0, 100_500, 250_000],
            "sorted"
        );
        let t = TokenCounter::project();
        let b = PromptBuilder::new(PROJECT_CORPUS, &t).unwrap();
        assert_eq!(schedule(&e, 0.5), vec![0, 50_250, 125_000]);
        let mut rng = Rng::new(1);
        let specs: Vec<PromptSpec> = e
            .iter()
            .map(|x| build_spec(x, &b, &t, &mut rng).unwrap())
            .collect();
        assert_eq!((specs[0].prompt_tokens, specs[0].max_tokens), (40, 5));
        assert_eq!(specs[1].prompt, "the harbor");
        assert_eq!(specs[2].prompt_tokens, 60);
        for (text, needle) in [
            (
                "{\"input_length\": 5, \"output_length\": 2}\n",
                "line 1: needs a non-negative 'timestamp'",
            ),
            (
                "{\"timestamp\": 1, \"input_length\": 5}\n",
                "line 1: needs a positive 'output_length'",
            ),
            (
                "{\"timestamp\": 1, \"output_length\": 5}\n",
                "line 1: needs a positive 'input_length'",
            ),
            (
                "{\"timestamp\": 1, \"input_length\": 5, \"output_length\": 2}\n[\n",
                "line 2: not JSON",
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let err = format!("{:#}", read(&p).unwrap_err());
            assert!(err.contains(needle) && err.contains("t.jsonl"), "{err}");
        }
    }

    /// A line past the cap is refused by number; the lines are read by `jsonl::for_each_line`.
    #[test]
    fn a_trace_line_past_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        let ok = "{\"timestamp\": 2, \"input_length\": 5, \"output_length\": 2}";
        let long = format!(
            "{{\"timestamp\": 1, \"prompt\": \"{}\", \"output_length\": 2}}",
            "x".repeat(200)
        );
        std::fs::write(&p, format!("{ok}\n{long}\n{ok}")).unwrap();
        let err = format!("{:#}", read_capped(&p, 128).unwrap_err());
        assert!(
            err.contains("t.jsonl' line 2") && err.contains("longer than 128 bytes"),
            "{err}"
        );
        assert_eq!(read_capped(&p, 1024).unwrap().len(), 3);
    }

    #[test]
    fn our_records_are_a_trace() {
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../core/tests/data/requests-v1.jsonl"
        );
        let e = read(Path::new(fixture)).unwrap();
        assert_eq!(e.len(), 5, "dropped arrivals replay too");
        assert!(e.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        assert_eq!(e.last().unwrap().at_us, 500_000);
        // The few fields read straight from each line are what the whole record says.
        let mut whole: Vec<TraceEntry> = std::fs::read_to_string(fixture)
            .unwrap()
            .lines()
            .map(|l| {
                let r: tokenperf_core::record::RequestRecord = serde_json::from_str(l).unwrap();
                TraceEntry {
                    at_us: r.intended_send_us,
                    input_tokens: r
                        .input_tokens
                        .tokenizer
                        .unwrap_or(r.input_tokens.value())
                        .max(1),
                    output_tokens: r.max_tokens.unwrap_or(r.output_token_count()).max(1),
                    prompt: None,
                }
            })
            .collect();
        whole.sort_by_key(|x| x.at_us);
        assert_eq!(e, whole);

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(
            &p,
            "{\"intended_send_us\": 5}\n{\"intended_send_us\": \"soon\"}\n",
        )
        .unwrap();
        let err = format!("{:#}", read(&p).unwrap_err());
        assert!(
            err.contains("r.jsonl' line 2: not a tokenperf record"),
            "{err}"
        );
    }
}
