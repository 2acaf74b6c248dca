//! Replay: timing profiles taken from a run's records, so that a real server's TTFT and token gaps can
//! be reproduced offline. Each successful record becomes one profile: its TTFT and its sequence of
//! per-token gaps (a gap that brought k tokens counts as k gaps of gap/k). LLMPerf's files have no
//! per-token times, so their profiles use the record's `inter_token_latency_s` as a constant gap.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokenperf_core::llmperf::sanitize_nonstandard_json;
use tokenperf_core::record::RequestRecord;
use tokenperf_core::rng::Rng;

/// One request's recorded timing.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub ttft: Duration,
    /// Gap before each token after the first; cycled when a request is longer than the recording.
    pub gaps: Vec<Duration>,
}

/// All the recorded timings of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub timings: Vec<Timing>,
}

impl Profile {
    /// Reads our `*_requests.jsonl` or an LLMPerf `*_individual_responses.json`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading '{}'", path.display()))?;
        let timings = if path.extension().is_some_and(|e| e == "jsonl") {
            Self::from_jsonl(&bytes, path)?
        } else {
            Self::from_llmperf(&bytes, path)?
        };
        if timings.is_empty() {
            bail!("'{}' has no successful request to replay", path.display());
        }
        Ok(Self { timings })
    }

    fn from_jsonl(bytes: &[u8], path: &Path) -> anyhow::Result<Vec<Timing>> {
        let text = std::str::from_utf8(bytes)
            .with_context(|| format!("'{}' is not UTF-8", path.display()))?;
        let mut out = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let r: RequestRecord = serde_json::from_str(line).with_context(|| {
                format!("'{}' line {}: not a request record", path.display(), i + 1)
            })?;
            if !r.outcome.is_ok() {
                continue;
            }
            let Some(ttft) = r.ttft_s() else { continue };
            let gaps = r
                .token_gaps()
                .flat_map(|(g, k)| {
                    std::iter::repeat_n(
                        Duration::from_secs_f64(g / f64::from(k.max(1))),
                        k as usize,
                    )
                })
                .collect();
            out.push(Timing {
                ttft: Duration::from_secs_f64(ttft),
                gaps,
            });
        }
        Ok(out)
    }

    fn from_llmperf(bytes: &[u8], path: &Path) -> anyhow::Result<Vec<Timing>> {
        let v: Value = serde_json::from_slice(&sanitize_nonstandard_json(bytes))
            .with_context(|| format!("'{}' is not valid JSON", path.display()))?;
        let Value::Array(items) = v else {
            bail!(
                "'{}' is not an LLMPerf individual-responses array",
                path.display()
            );
        };
        let num = |r: &Value, k: &str| {
            r.get(k)
                .and_then(Value::as_f64)
                .filter(|x| x.is_finite() && *x >= 0.0)
        };
        Ok(items
            .iter()
            .filter(|r| r.get("error_code").is_none_or(Value::is_null))
            .filter_map(|r| {
                Some(Timing {
                    ttft: Duration::from_secs_f64(num(r, "ttft_s")?),
                    gaps: vec![Duration::from_secs_f64(num(r, "inter_token_latency_s")?)],
                })
            })
            .collect())
    }

    /// A recorded timing, chosen with the request's random stream.
    pub fn pick(&self, rng: &mut Rng) -> &Timing {
        &self.timings[rng.below(self.timings.len())]
    }
}

impl Timing {
    /// The gap before token `i` (i ≥ 1), or `fallback` when the recording had none.
    pub fn gap(&self, i: u64, fallback: Duration) -> Duration {
        if self.gaps.is_empty() {
            return fallback;
        }
        self.gaps[((i.max(1) - 1) as usize) % self.gaps.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_our_records_and_llmperf_files() {
        let dir = std::env::temp_dir().join(format!("mock-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../core/tests/data/requests-v1.jsonl"
        );
        let p = Profile::load(Path::new(fixture)).unwrap();
        let ok: Vec<RequestRecord> = std::fs::read_to_string(fixture)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<RequestRecord>(l).unwrap())
            .filter(|r| r.outcome.is_ok())
            .collect();
        assert_eq!(p.timings.len(), ok.len());
        for (t, r) in p.timings.iter().zip(&ok) {
            assert_eq!(t.ttft, Duration::from_secs_f64(r.ttft_s().unwrap()));
            // One token per event: a gap before every token but the first.
            assert_eq!(t.gaps.len() as u64, r.output_token_count() - 1);
        }
        let lp = dir.join("x_individual_responses.json");
        std::fs::write(
            &lp,
            r#"[{"error_code": null, "ttft_s": 0.1, "inter_token_latency_s": 0.01},
                {"error_code": 500, "ttft_s": 0, "inter_token_latency_s": NaN}]"#,
        )
        .unwrap();
        let p = Profile::load(&lp).unwrap();
        assert_eq!(p.timings.len(), 1);
        assert_eq!(
            p.timings[0].gap(7, Duration::ZERO),
            Duration::from_millis(10)
        );
        std::fs::write(&lp, "[]").unwrap();
        assert!(
            Profile::load(&lp)
                .unwrap_err()
                .to_string()
                .contains("no successful request")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
