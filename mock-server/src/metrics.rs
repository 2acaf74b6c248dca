//! Server-side metrics, exported at `GET /metrics` in Prometheus text format under vLLM's names,
//! labels and bucket boundaries where one exists (every series carries `model_name` and `engine`,
//! `vllm:request_success_total` also `finished_reason`, so vLLM's Grafana dashboards work unchanged),
//! plus our own emission-lateness histogram and the host's listen-queue overflows. Lock-free
//! atomics: the pacer's hot path only does a bucket search and two `fetch_add`s.

use std::fmt::Write as _;
use std::sync::Arc;
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
const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const LATENESS_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1,
    1.0,
];

/// vLLM's buckets for token counts: 1, 2, 5, 10, 20, 50 … up to `max` (the model length).
pub fn buckets_1_2_5(max: u64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 1u64;
    'outer: loop {
        for m in [1, 2, 5] {
            let b = decade.saturating_mul(m);
            if b > max {
                break 'outer;
            }
            out.push(b as f64);
        }
        decade = decade.saturating_mul(10);
    }
    out
}

/// A Prometheus histogram with fixed buckets.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    bounds: Vec<f64>,
    /// Non-cumulative counts per bucket; the last one is +Inf.
    counts: Vec<AtomicU64>,
    /// Sum of observations in units of 1 / `scale` (nanoseconds for seconds, whole tokens for
    /// counts), so that it fits an integer atomic.
    sum: AtomicU64,
    scale: f64,
}

impl Histogram {
    fn seconds(name: &'static str, help: &'static str, bounds: &[f64]) -> Self {
        Self::new(name, help, bounds.to_vec(), 1e9)
    }

    fn counts(name: &'static str, help: &'static str, bounds: Vec<f64>) -> Self {
        Self::new(name, help, bounds, 1.0)
    }

    fn new(name: &'static str, help: &'static str, bounds: Vec<f64>, scale: f64) -> Self {
        Self {
            name,
            help,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            bounds,
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Records one observation (seconds, or a count).
    pub fn observe(&self, v: f64) {
        let v = v.max(0.0);
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum
            .fetch_add((v * self.scale) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, labels: &str) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cum = 0u64;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
        }
        cum += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
    }
}

/// A gauge or counter as rendered: name, Prometheus type, help, and (labels, value) per series.
type Scalar = (&'static str, &'static str, &'static str, Vec<(String, u64)>);

/// Every metric the server exports.
pub struct Metrics {
    /// `model_name="…",engine="0"`, on every series.
    labels: String,
    pub running: AtomicI64,
    pub waiting: AtomicI64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    /// Finished requests by finish reason.
    pub requests_stop: AtomicU64,
    pub requests_length: AtomicU64,
    pub requests_rejected: AtomicU64,
    /// Token chunks the pacer wrote to the socket itself, and those that went through hyper.
    pub chunks_direct: AtomicU64,
    pub chunks_http: AtomicU64,
    /// Time the pacer spent formatting and writing the direct chunks, in nanoseconds.
    pub direct_write_ns: AtomicU64,
    /// The part of it inside the write system call.
    pub direct_send_ns: AtomicU64,
    /// Write system calls on client sockets (shared with every connection).
    pub socket_writes: Arc<AtomicU64>,
    /// Prompt tokens looked up in the prefix cache, and those it served.
    pub prefix_cache_queries: AtomicU64,
    pub prefix_cache_hits: AtomicU64,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub tpot: Histogram,
    pub e2e: Histogram,
    pub queue: Histogram,
    pub request_prompt_tokens: Histogram,
    pub request_generation_tokens: Histogram,
    pub lateness: Histogram,
    /// The host's listen-queue overflows when the server started, to report those since.
    overflows_at_start: Option<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new("mock", 131_072)
    }
}

/// One finished request, as the metrics see it.
pub struct Finished {
    /// `stop` or `length`.
    pub reason: &'static str,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    /// Seconds from arrival to the end.
    pub e2e_s: f64,
    /// Seconds per output token after the first.
    pub tpot_s: Option<f64>,
}

impl Metrics {
    /// Metrics labelled with `model_name`, with token-count buckets up to `max_model_len`.
    pub fn new(model_name: &str, max_model_len: u64) -> Self {
        let escaped = model_name.replace('\\', "\\\\").replace('"', "\\\"");
        Self {
            labels: format!("model_name=\"{escaped}\",engine=\"0\""),
            running: AtomicI64::new(0),
            waiting: AtomicI64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            requests_stop: AtomicU64::new(0),
            requests_length: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            chunks_direct: AtomicU64::new(0),
            chunks_http: AtomicU64::new(0),
            direct_write_ns: AtomicU64::new(0),
            direct_send_ns: AtomicU64::new(0),
            socket_writes: Arc::new(AtomicU64::new(0)),
            prefix_cache_queries: AtomicU64::new(0),
            prefix_cache_hits: AtomicU64::new(0),
            ttft: Histogram::seconds(
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds (arrival to first token written).",
                TTFT_BUCKETS,
            ),
            itl: Histogram::seconds(
                "vllm:inter_token_latency_seconds",
                "Histogram of time between written chunks in seconds.",
                ITL_BUCKETS,
            ),
            tpot: Histogram::seconds(
                "vllm:time_per_output_token_seconds",
                "Histogram of time per output token in seconds (after the first, per request).",
                TPOT_BUCKETS,
            ),
            e2e: Histogram::seconds(
                "vllm:e2e_request_latency_seconds",
                "Histogram of end-to-end request latency in seconds.",
                E2E_BUCKETS,
            ),
            queue: Histogram::seconds(
                "vllm:request_queue_time_seconds",
                "Histogram of time spent waiting for a running slot in seconds.",
                E2E_BUCKETS,
            ),
            request_prompt_tokens: Histogram::counts(
                "vllm:request_prompt_tokens",
                "Number of prefill tokens processed.",
                buckets_1_2_5(max_model_len),
            ),
            request_generation_tokens: Histogram::counts(
                "vllm:request_generation_tokens",
                "Number of generation tokens processed.",
                buckets_1_2_5(max_model_len),
            ),
            lateness: Histogram::seconds(
                "tokenperf_mock:emission_lateness_seconds",
                "Histogram of chunk write time minus its due time in seconds.",
                LATENESS_BUCKETS,
            ),
            overflows_at_start: crate::listener::listen_overflows(),
        }
    }

    /// Records a request that finished its response.
    pub fn finished(&self, f: &Finished) {
        match f.reason {
            "stop" => &self.requests_stop,
            _ => &self.requests_length,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.e2e.observe(f.e2e_s);
        if let Some(t) = f.tpot_s {
            self.tpot.observe(t);
        }
        self.request_prompt_tokens.observe(f.prompt_tokens as f64);
        self.request_generation_tokens
            .observe(f.output_tokens as f64);
    }

    /// Records one prompt's prefix-cache lookup, in tokens.
    pub fn prefix_cache(&self, queried: u64, hit: u64) {
        self.prefix_cache_queries
            .fetch_add(queried, Ordering::Relaxed);
        self.prefix_cache_hits.fetch_add(hit, Ordering::Relaxed);
    }

    /// Requests that finished, whatever the reason.
    pub fn requests_ok(&self) -> u64 {
        self.requests_stop.load(Ordering::Relaxed) + self.requests_length.load(Ordering::Relaxed)
    }

    /// The gauges and counters: name, type, help, and each labelled series with its value.
    fn scalars(&self) -> Vec<Scalar> {
        let l = &self.labels;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let plain = |v: u64| vec![(l.clone(), v)];
        let gauge = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0) as u64;
        let mut out = vec![
            (
                "vllm:num_requests_running",
                "gauge",
                "Number of requests in the running batch.",
                plain(gauge(&self.running)),
            ),
            (
                "vllm:num_requests_waiting",
                "gauge",
                "Number of requests waiting for a running slot.",
                plain(gauge(&self.waiting)),
            ),
            (
                "vllm:prompt_tokens_total",
                "counter",
                "Number of prompt tokens processed.",
                plain(load(&self.prompt_tokens)),
            ),
            (
                "vllm:generation_tokens_total",
                "counter",
                "Number of generated tokens written.",
                plain(load(&self.generation_tokens)),
            ),
            (
                "vllm:request_success_total",
                "counter",
                "Count of successfully processed requests.",
                vec![
                    (
                        format!("{l},finished_reason=\"stop\""),
                        load(&self.requests_stop),
                    ),
                    (
                        format!("{l},finished_reason=\"length\""),
                        load(&self.requests_length),
                    ),
                ],
            ),
            (
                "tokenperf_mock:requests_rejected_total",
                "counter",
                "Number of requests answered with an error status.",
                plain(load(&self.requests_rejected)),
            ),
            (
                "vllm:prefix_cache_queries_total",
                "counter",
                "Prefix cache queries, in terms of number of queried tokens.",
                plain(load(&self.prefix_cache_queries)),
            ),
            (
                "vllm:prefix_cache_hits_total",
                "counter",
                "Prefix cache hits, in terms of number of cached tokens.",
                plain(load(&self.prefix_cache_hits)),
            ),
        ];
        out.extend(self.write_scalars());
        if let (Some(start), Some(now)) =
            (self.overflows_at_start, crate::listener::listen_overflows())
        {
            out.push((
                "tokenperf_mock:host_listen_overflows_total",
                "counter",
                "Connections the kernel dropped for a full listen queue, on the whole host, since the server started.",
                plain(now.saturating_sub(start)),
            ));
        }
        out
    }

    /// How the mock wrote its tokens: chunks by path, the pacer's own write time, socket writes.
    fn write_scalars(&self) -> Vec<Scalar> {
        let l = &self.labels;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let plain = |v: u64| vec![(l.clone(), v)];
        vec![
            (
                "tokenperf_mock:chunks_written_total",
                "counter",
                "Token chunks written, by path: by the pacer straight to the socket, or through the HTTP library.",
                vec![
                    (format!("{l},path=\"direct\""), load(&self.chunks_direct)),
                    (format!("{l},path=\"http\""), load(&self.chunks_http)),
                ],
            ),
            (
                "tokenperf_mock:direct_write_microseconds_total",
                "counter",
                "Time the pacer spent formatting and writing the token chunks it wrote itself, from each release to the write's return.",
                plain(load(&self.direct_write_ns) / 1_000),
            ),
            (
                "tokenperf_mock:direct_send_microseconds_total",
                "counter",
                "The part of direct_write_microseconds_total inside the write system call.",
                plain(load(&self.direct_send_ns) / 1_000),
            ),
            (
                "tokenperf_mock:socket_writes_total",
                "counter",
                "Writes tried on client sockets: system calls, but for the few a full socket turned away before the kernel (tokio's readiness).",
                plain(load(&self.socket_writes)),
            ),
        ]
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(16 << 10);
        for (name, kind, help, series) in self.scalars() {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in series {
                let _ = writeln!(s, "{name}{{{labels}}} {v}");
            }
        }
        for h in [
            &self.ttft,
            &self.itl,
            &self.tpot,
            &self.e2e,
            &self.queue,
            &self.request_prompt_tokens,
            &self.request_generation_tokens,
            &self.lateness,
        ] {
            h.render(&mut s, &self.labels);
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
        let l = "model_name=\"mock\",engine=\"0\"";
        for line in [
            format!("tokenperf_mock:emission_lateness_seconds_bucket{{{l},le=\"0.00001\"}} 0"),
            format!("tokenperf_mock:emission_lateness_seconds_bucket{{{l},le=\"0.000025\"}} 2"),
            format!("tokenperf_mock:emission_lateness_seconds_bucket{{{l},le=\"1\"}} 2"),
            format!("tokenperf_mock:emission_lateness_seconds_bucket{{{l},le=\"+Inf\"}} 3"),
            format!("tokenperf_mock:emission_lateness_seconds_count{{{l}}} 3"),
            format!("vllm:num_requests_running{{{l}}} 0"),
        ] {
            assert!(text.contains(&line), "no {line} in\n{text}");
        }
        assert!(text.contains("# TYPE vllm:num_requests_running gauge"));
        assert_eq!(m.lateness.count(), 3);
    }

    #[test]
    fn finished_requests_by_reason_and_token_counts() {
        let m = Metrics::new("tiny \"x\"", 4096);
        m.finished(&Finished {
            reason: "stop",
            prompt_tokens: 17,
            output_tokens: 3,
            e2e_s: 0.2,
            tpot_s: Some(0.01),
        });
        let text = m.render();
        let l = "model_name=\"tiny \\\"x\\\"\",engine=\"0\"";
        assert!(
            text.contains(&format!(
                "vllm:request_success_total{{{l},finished_reason=\"stop\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "vllm:request_success_total{{{l},finished_reason=\"length\"}} 0"
        )));
        assert!(text.contains(&format!(
            "vllm:request_prompt_tokens_bucket{{{l},le=\"20\"}} 1"
        )));
        assert!(text.contains(&format!("vllm:request_prompt_tokens_sum{{{l}}} 17")));
        assert!(text.contains(&format!(
            "vllm:time_per_output_token_seconds_count{{{l}}} 1"
        )));
        assert_eq!(
            buckets_1_2_5(100),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(m.requests_ok(), 1);
    }
}
