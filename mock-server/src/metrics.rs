//! Server-side metrics, exported at `GET /metrics` in Prometheus text format under vLLM's names where
//! one exists, plus our own emission-lateness histogram. Lock-free atomics: the pacer's hot path only
//! does a bucket search and two `fetch_add`s.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
const LATENESS_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1,
    1.0,
];

/// A Prometheus histogram with fixed buckets.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last one is +Inf.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        Self {
            name,
            help,
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation, in seconds.
    pub fn observe(&self, secs: f64) {
        let secs = secs.max(0.0);
        let i = self.bounds.partition_point(|b| *b < secs);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add((secs * 1e9) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        let mut cum = 0u64;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{}_bucket{{le=\"{b}\"}} {cum}", self.name);
        }
        cum += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{}_bucket{{le=\"+Inf\"}} {cum}", self.name);
        let _ = writeln!(
            out,
            "{}_sum {}",
            self.name,
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{}_count {cum}", self.name);
    }
}

/// Every metric the server exports.
pub struct Metrics {
    pub running: AtomicI64,
    pub waiting: AtomicI64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub requests_ok: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
    pub queue: Histogram,
    pub lateness: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            running: AtomicI64::new(0),
            waiting: AtomicI64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            requests_ok: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            ttft: Histogram::new(
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds (arrival to first token written).",
                TTFT_BUCKETS,
            ),
            itl: Histogram::new(
                "vllm:inter_token_latency_seconds",
                "Histogram of time between written chunks in seconds.",
                ITL_BUCKETS,
            ),
            e2e: Histogram::new(
                "vllm:e2e_request_latency_seconds",
                "Histogram of end-to-end request latency in seconds.",
                E2E_BUCKETS,
            ),
            queue: Histogram::new(
                "vllm:request_queue_time_seconds",
                "Histogram of time spent waiting for a running slot in seconds.",
                E2E_BUCKETS,
            ),
            lateness: Histogram::new(
                "tokenperf_mock:emission_lateness_seconds",
                "Histogram of chunk write time minus its due time in seconds.",
                LATENESS_BUCKETS,
            ),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(8 << 10);
        let gauge = |s: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        gauge(
            &mut s,
            "vllm:num_requests_running",
            "Number of requests in the running batch.",
            self.running.load(Ordering::Relaxed),
        );
        gauge(
            &mut s,
            "vllm:num_requests_waiting",
            "Number of requests waiting for a running slot.",
            self.waiting.load(Ordering::Relaxed),
        );
        counter(
            &mut s,
            "vllm:prompt_tokens_total",
            "Number of prompt tokens processed.",
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut s,
            "vllm:generation_tokens_total",
            "Number of generated tokens written.",
            self.generation_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut s,
            "vllm:request_success_total",
            "Number of requests that finished their stream.",
            self.requests_ok.load(Ordering::Relaxed),
        );
        counter(
            &mut s,
            "tokenperf_mock:requests_rejected_total",
            "Number of requests answered with an error status.",
            self.requests_rejected.load(Ordering::Relaxed),
        );
        for h in [
            &self.ttft,
            &self.itl,
            &self.e2e,
            &self.queue,
            &self.lateness,
        ] {
            h.render(&mut s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.lateness.observe(0.000_02);
        m.lateness.observe(0.000_02);
        m.lateness.observe(5.0);
        let text = m.render();
        assert!(text.contains("tokenperf_mock:emission_lateness_seconds_bucket{le=\"0.00001\"} 0"));
        assert!(
            text.contains("tokenperf_mock:emission_lateness_seconds_bucket{le=\"0.000025\"} 2")
        );
        assert!(text.contains("tokenperf_mock:emission_lateness_seconds_bucket{le=\"1\"} 2"));
        assert!(text.contains("tokenperf_mock:emission_lateness_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("tokenperf_mock:emission_lateness_seconds_count 3"));
        assert!(text.contains("# TYPE vllm:num_requests_running gauge"));
        assert_eq!(m.lateness.count(), 3);
    }
}
