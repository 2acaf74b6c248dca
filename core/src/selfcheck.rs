//! Measurement error: how far a client's timings are from what the server really did, computed from
//! records that carry a mock-server's ground truth (see [`crate::record::GroundTruth`]).
//!
//! Per chunk: receive delay = client read time − server send time (what the network and the client
//! add); mock lateness = server send time − due time (what the mock adds). Per request: request delay
//! = server arrival − client send; TTFT error = measured TTFT − true TTFT, where the true TTFT is the
//! first chunk's due time − the server's arrival; TPOT error = measured TPOT − the schedule's
//! (last due − first due) / (tokens − 1); and every gap's error against the gap between due times.
//! All times are on CLOCK_MONOTONIC, shared by every process on the host.

use serde::{Deserialize, Serialize};

use crate::histogram::ExactCounts;
use crate::record::RequestRecord;
use crate::stats::Stats;

/// The error of a run's measurements against ground truth, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfCheck {
    /// Successful requests that carried ground truth.
    pub requests: usize,
    /// Content chunks matched with the server's.
    pub chunks: usize,
    /// Requests whose count of token-carrying events differs from the server's chunk count.
    pub chunk_count_mismatches: usize,
    pub receive_delay_ms: Stats,
    pub request_delay_ms: Stats,
    pub mock_lateness_ms: Stats,
    pub ttft_error_ms: Stats,
    pub tpot_error_ms: Stats,
    pub gap_error_ms: Stats,
    /// Measured inter-chunk gaps (to read the error against).
    pub measured_gap_ms: Stats,
    /// Measured TTFT.
    pub measured_ttft_ms: Stats,
}

fn ms(us: i64) -> f64 {
    us as f64 / 1e3
}

/// A [`SelfCheck`] built one record at a time. Per-chunk values are integer µs kept as exact counts
/// per distinct value ([`ExactCounts`]: a client's error spans a few hundred distinct µs, so a long
/// run costs no more); per-request values are kept as they are.
#[derive(Debug, Clone, Default)]
pub struct SelfCheckBuilder {
    receive: ExactCounts,
    lateness: ExactCounts,
    gap_err: ExactCounts,
    gaps: ExactCounts,
    request_delay: Vec<f64>,
    ttft_err: Vec<f64>,
    tpot_err: Vec<f64>,
    ttfts: Vec<f64>,
    requests: usize,
    chunks: usize,
    mismatches: usize,
}

impl SelfCheckBuilder {
    /// Adds a record; those without ground truth, or not successful, are skipped.
    pub fn add(&mut self, r: &RequestRecord) {
        if !r.outcome.is_ok() {
            return;
        }
        let (Some(gt), Some(sent)) = (&r.ground_truth, r.sent_at_us) else {
            return;
        };
        if gt.chunks.is_empty() {
            return;
        }
        self.requests += 1;
        let base = gt.run_start_mono_us as i64;
        let client_send = base + sent as i64;
        self.request_delay
            .push(ms(gt.arrival_mono_us as i64 - client_send));
        let content_events = r.events.iter().filter(|e| e.tokens() > 0).count();
        if content_events != gt.chunks.len() {
            self.mismatches += 1;
        }
        let mut prev: Option<(i64, i64)> = None;
        for c in &gt.chunks {
            let Some(ev) = r.events.get(c.0 as usize) else {
                continue;
            };
            let recv = base + ev.at_us() as i64;
            let (due, sent_s) = (c.1 as i64, c.2 as i64);
            self.chunks += 1;
            self.receive.record(recv - sent_s);
            self.lateness.record(sent_s - due);
            if let Some((prev_recv, prev_due)) = prev {
                self.gaps.record(recv - prev_recv);
                self.gap_err.record((recv - prev_recv) - (due - prev_due));
            }
            prev = Some((recv, due));
        }
        let first_due = gt.chunks[0].1 as i64;
        if let Some(t) = r.ttft_s() {
            let true_ttft_ms = ms(first_due - gt.arrival_mono_us as i64);
            self.ttft_err.push(t * 1e3 - true_ttft_ms);
            self.ttfts.push(t * 1e3);
        }
        let tokens: u64 = gt.chunks.iter().map(|c| u64::from(c.3)).sum();
        if let (Some(tpot), true) = (r.tpot_s(), tokens >= 2) {
            let last_due = gt.chunks[gt.chunks.len() - 1].1 as i64;
            let true_tpot_ms = ms(last_due - first_due) / (tokens - 1) as f64;
            self.tpot_err.push(tpot * 1e3 - true_tpot_ms);
        }
    }

    /// `None` when no record carried ground truth.
    pub fn finish(self) -> Option<SelfCheck> {
        (self.requests > 0).then(|| SelfCheck {
            requests: self.requests,
            chunks: self.chunks,
            chunk_count_mismatches: self.mismatches,
            receive_delay_ms: self.receive.stats(1e-3),
            request_delay_ms: Stats::from_values(self.request_delay),
            mock_lateness_ms: self.lateness.stats(1e-3),
            ttft_error_ms: Stats::from_values(self.ttft_err),
            tpot_error_ms: Stats::from_values(self.tpot_err),
            gap_error_ms: self.gap_err.stats(1e-3),
            measured_gap_ms: self.gaps.stats(1e-3),
            measured_ttft_ms: Stats::from_values(self.ttfts),
        })
    }
}

impl SelfCheck {
    /// `None` when no record carries ground truth.
    pub fn from_records(records: &[RequestRecord]) -> Option<Self> {
        let mut b = SelfCheckBuilder::default();
        records.iter().for_each(|r| b.add(r));
        b.finish()
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.3}"));
        let mut s = format!(
            "measurement error against ground truth ({} requests, {} chunks{}), milliseconds\n",
            self.requests,
            self.chunks,
            if self.chunk_count_mismatches > 0 {
                format!(
                    ", {} requests with chunk-count mismatches",
                    self.chunk_count_mismatches
                )
            } else {
                String::new()
            }
        );
        s.push_str(&format!(
            "  {:<34} {:>9} {:>9} {:>9} {:>9}\n",
            "", "mean", "p50", "p99", "max"
        ));
        for (name, st) in [
            ("receive delay (recv - server sent)", &self.receive_delay_ms),
            (
                "request delay (server arrival - send)",
                &self.request_delay_ms,
            ),
            ("mock lateness (server sent - due)", &self.mock_lateness_ms),
            ("TTFT error (measured - true)", &self.ttft_error_ms),
            ("TPOT error (measured - true)", &self.tpot_error_ms),
            ("gap error (measured - true)", &self.gap_error_ms),
            ("measured gap", &self.measured_gap_ms),
        ] {
            s.push_str(&format!(
                "  {name:<34} {:>9} {:>9} {:>9} {:>9}\n",
                f(st.mean),
                f(st.p50),
                f(st.p99),
                f(st.max)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Event, GroundTruth, ServerChunk, TokenCount};

    #[test]
    fn errors_by_hand() {
        // Client run starts at mono 1_000_000 µs; the request is sent at +0 and read by the server
        // 200 µs later; chunks are due at arrival + 50 ms, +10 ms each, sent 100 µs late and read
        // 300 µs after sending.
        let mut r = RequestRecord::new(0, 0);
        r.sent_at_us = Some(0);
        let arrival = 1_000_200u64;
        let dues: Vec<u64> = (0..3).map(|i| arrival + 50_000 + i * 10_000).collect();
        r.events = dues
            .iter()
            .map(|d| Event(d + 100 + 300 - 1_000_000, 1))
            .collect();
        r.done_at_us = Some(r.events[2].0);
        r.output_tokens = TokenCount::new(Some(3), Some(3));
        r.ground_truth = Some(GroundTruth {
            run_start_mono_us: 1_000_000,
            arrival_mono_us: arrival,
            chunks: dues
                .iter()
                .enumerate()
                .map(|(i, d)| ServerChunk(i as u32, *d, d + 100, 1))
                .collect(),
        });
        let s = SelfCheck::from_records(&[r]).unwrap();
        assert_eq!((s.requests, s.chunks, s.chunk_count_mismatches), (1, 3, 0));
        let close = |v: Option<f64>, want: f64| {
            assert!((v.unwrap() - want).abs() < 1e-9, "{v:?} != {want}")
        };
        close(s.receive_delay_ms.p50, 0.3);
        close(s.mock_lateness_ms.max, 0.1);
        close(s.request_delay_ms.p50, 0.2);
        // TTFT measured = 50.6 ms (0.2 + 50 + 0.1 + 0.3); true = 50 → error 0.6 ms.
        close(s.ttft_error_ms.mean, 0.6);
        close(s.gap_error_ms.max, 0.0);
        close(s.tpot_error_ms.mean, 0.0);
        assert!(s.table().contains("TTFT error"));
        assert!(SelfCheck::from_records(&[RequestRecord::new(1, 0)]).is_none());
    }
}
