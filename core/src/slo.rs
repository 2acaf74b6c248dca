//! Service-level objectives and goodput: whether each request met every stated latency objective, the
//! rate of requests (and tokens) that did, and the attainment with a 95 % Wilson score interval.
//!
//! A request meets the objectives when it succeeded and each stated metric is at most its objective;
//! TPOT does not apply to a one-token answer (it is undefined) and counts as met there.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::record::RequestRecord;

/// Latency objectives, in seconds; `None` means not stated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_s: Option<f64>,
    pub tpot_s: Option<f64>,
    pub e2e_s: Option<f64>,
}

impl FromStr for Slo {
    type Err = String;
    /// `ttft=0.5,tpot=0.05,e2e=10` (seconds; any subset).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut slo = Slo::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not name=seconds (e.g. ttft=0.5)"))?;
            let v: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x > 0.0)
                .ok_or_else(|| {
                    format!("'{part}': the objective must be a positive number of seconds")
                })?;
            match k.trim() {
                "ttft" => slo.ttft_s = Some(v),
                "tpot" => slo.tpot_s = Some(v),
                "e2e" | "e2el" => slo.e2e_s = Some(v),
                other => {
                    return Err(format!(
                        "unknown objective '{other}': use ttft, tpot or e2e"
                    ));
                }
            }
        }
        if slo == Slo::default() {
            return Err("no objective given: use e.g. ttft=0.5,tpot=0.05,e2e=10".into());
        }
        Ok(slo)
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("ttft", self.ttft_s),
            ("tpot", self.tpot_s),
            ("e2e", self.e2e_s),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect();
        write!(f, "{}", parts.join(","))
    }
}

impl Slo {
    /// Whether `r` succeeded and met every stated objective.
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        if !r.outcome.is_ok() {
            return false;
        }
        let within = |limit: Option<f64>, v: Option<f64>, applies_without: bool| match (limit, v) {
            (None, _) => true,
            (Some(l), Some(v)) => v <= l,
            (Some(_), None) => applies_without,
        };
        within(self.ttft_s, r.ttft_s(), false)
            && within(self.tpot_s, r.tpot_s(), true)
            && within(self.e2e_s, r.e2e_s(), false)
    }
}

/// The 95 % Wilson score interval of a proportion `k / n`.
pub fn wilson95(k: u64, n: u64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (n, p, z) = (n as f64, k as f64 / n as f64, 1.959_963_984_540_054_f64);
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    Some(((center - half).max(0.0), (center + half).min(1.0)))
}

/// Goodput of a run against objectives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    pub slo: Slo,
    /// Sent requests.
    pub requests: u64,
    /// Requests that met every objective.
    pub met: u64,
    /// met / requests.
    pub attainment: Option<f64>,
    /// 95 % Wilson interval of the attainment.
    pub attainment_ci95: Option<(f64, f64)>,
    /// Requests that met every objective per second of the run's window.
    pub goodput_rps: Option<f64>,
    /// Their output tokens per second of the window.
    pub goodput_tokens_per_s: Option<f64>,
}

/// A [`Goodput`] built one record at a time.
#[derive(Debug, Clone, Copy)]
pub struct GoodputBuilder {
    slo: Slo,
    requests: u64,
    met: u64,
    tokens: u64,
    start_us: Option<u64>,
    end_us: Option<u64>,
}

impl GoodputBuilder {
    pub fn new(slo: Slo) -> Self {
        Self {
            slo,
            requests: 0,
            met: 0,
            tokens: 0,
            start_us: None,
            end_us: None,
        }
    }

    /// Adds a record the results keep; unsent ones do not count.
    pub fn add(&mut self, r: &RequestRecord) {
        let Some(sent) = r.sent_at_us else { return };
        self.requests += 1;
        self.start_us = Some(self.start_us.map_or(sent, |s| s.min(sent)));
        if let Some(done) = r.done_at_us {
            self.end_us = Some(self.end_us.map_or(done, |e| e.max(done)));
        }
        if self.slo.met_by(r) {
            self.met += 1;
            self.tokens += r.output_token_count();
        }
    }

    pub fn finish(self) -> Goodput {
        let window = match (self.start_us, self.end_us) {
            (Some(a), Some(b)) if b > a => Some((b - a) as f64 * 1e-6),
            _ => None,
        };
        let (n, k) = (self.requests, self.met);
        Goodput {
            slo: self.slo,
            requests: n,
            met: k,
            attainment: (n > 0).then(|| k as f64 / n as f64),
            attainment_ci95: wilson95(k, n),
            goodput_rps: window.map(|w| k as f64 / w),
            goodput_tokens_per_s: window.map(|w| self.tokens as f64 / w),
        }
    }
}

impl Goodput {
    /// Over the sent requests; the window is first send to last completion, as the run summary's.
    pub fn compute(records: &[RequestRecord], slo: Slo) -> Self {
        let mut b = GoodputBuilder::new(slo);
        records.iter().for_each(|r| b.add(r));
        b.finish()
    }

    /// One console line.
    pub fn line(&self) -> String {
        let pct = |v: f64| format!("{:.1} %", v * 100.0);
        format!(
            "goodput ({}): {} of {} requests met every objective ({}, 95 % CI {}), {} req/s, {} output tok/s",
            self.slo,
            self.met,
            self.requests,
            self.attainment.map_or("n/a".into(), pct),
            self.attainment_ci95
                .map_or("n/a".into(), |(a, b)| format!("{}–{}", pct(a), pct(b))),
            self.goodput_rps.map_or("n/a".into(), |v| format!("{v:.3}")),
            self.goodput_tokens_per_s
                .map_or("n/a".into(), |v| format!("{v:.1}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Event, Outcome, TokenCount};

    fn rec(sent: u64, ttft_ms: u64, e2e_ms: u64, n: u64) -> RequestRecord {
        let mut r = RequestRecord::new(0, sent);
        r.sent_at_us = Some(sent);
        r.events = vec![
            Event(sent + ttft_ms * 1000, 1),
            Event(sent + e2e_ms * 1000, (n - 1) as u32),
        ];
        r.done_at_us = Some(sent + e2e_ms * 1000);
        r.output_tokens = TokenCount::new(Some(n), None);
        r
    }

    #[test]
    fn parse_and_display() {
        let s: Slo = "ttft=0.5,tpot=0.05,e2e=10".parse().unwrap();
        assert_eq!(
            (s.ttft_s, s.tpot_s, s.e2e_s),
            (Some(0.5), Some(0.05), Some(10.0))
        );
        assert_eq!(s.to_string(), "ttft=0.5,tpot=0.05,e2e=10");
        assert!("ttft=0".parse::<Slo>().unwrap_err().contains("positive"));
        assert!(
            "itl=1"
                .parse::<Slo>()
                .unwrap_err()
                .contains("unknown objective")
        );
        assert!("ttft".parse::<Slo>().unwrap_err().contains("name=seconds"));
        assert!("".parse::<Slo>().is_err());
    }

    #[test]
    fn wilson_by_hand() {
        // k = 8, n = 10: p = 0.8; centre (0.8 + 0.19208)/1.38415 = 0.71679; half = 0.22005
        let (lo, hi) = wilson95(8, 10).unwrap();
        assert!(
            (lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson95(0, 5).unwrap();
        assert!(lo == 0.0 && hi > 0.4);
        assert!(wilson95(0, 0).is_none());
    }

    #[test]
    fn goodput_by_hand() {
        let slo: Slo = "ttft=0.1,e2e=1".parse().unwrap();
        let mut failed = rec(0, 10, 20, 2);
        failed.outcome = Outcome::Timeout {
            message: "t".into(),
        };
        let records = vec![
            rec(0, 50, 900, 10),       // meets both
            rec(0, 150, 900, 10),      // TTFT too slow
            rec(500_000, 50, 1500, 4), // e2e too slow; window ends at 2.0 s
            failed,                    // failed requests never meet
        ];
        assert!(slo.met_by(&records[0]) && !slo.met_by(&records[1]) && !slo.met_by(&records[2]));
        let g = Goodput::compute(&records, slo);
        assert_eq!((g.requests, g.met), (4, 1));
        assert_eq!(g.attainment, Some(0.25));
        assert!((g.goodput_rps.unwrap() - 0.5).abs() < 1e-12);
        assert!((g.goodput_tokens_per_s.unwrap() - 5.0).abs() < 1e-12);
        assert!(g.line().contains("1 of 4"));
    }
}
