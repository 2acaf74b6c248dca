//! The collect stage: one writer task takes each finished record, completes it (LLMPerf's keys, the
//! SLO verdict, warm-up and cool-down marks), hands it to the sinks (the JSONL file, the progress
//! line) and to the tallies the summary is built from, and lets it go. Nothing holds every record,
//! so a run of any length costs the same memory; see [`tokenperf_core::tally`] for what the
//! tallies keep per request.
//!
//! Cool-down: whether a record finished in the last `--cooldown-seconds` of the run is only known
//! once the run ends, so records finishing within that span of the latest completion seen so far
//! are held back (bounded by the completions of one cool-down span), released unmarked once a later
//! completion puts them out of reach, and marked `cooldown` at the end.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tokenperf_core::llmperf::MetricDefinitions;
use tokenperf_core::record::RequestRecord;
use tokenperf_core::selfcheck::{SelfCheck, SelfCheckBuilder};
use tokenperf_core::slo::{Goodput, GoodputBuilder, Slo};
use tokenperf_core::summary::{InFlightTime, RunSummary};
use tokenperf_core::tally::SummaryBuilder;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::output::RecordSink;
use crate::runner::Control;

/// Records that may wait between a worker and the writer (being counted or queued): past it a
/// worker waits for the writer before sending its next request.
pub const RECORD_QUEUE: usize = 2048;

/// How records are completed and trimmed.
#[derive(Debug, Clone, Copy)]
pub struct CollectPlan {
    pub defs: MetricDefinitions,
    pub slo: Option<Slo>,
    /// Records sent before this (µs since run start) are `warmup`.
    pub warm_us: u64,
    /// Records finishing within this of the run's last completion are `cooldown`.
    pub cool_us: Option<u64>,
    /// Requests this process will send, when the plan says.
    pub requests: Option<u64>,
}

/// What the writer task leaves once the last record is in.
pub struct Collected {
    pub summary: RunSummary,
    /// Time in flight of every record (trimmed ones too), for the Little's-law check.
    pub in_flight: InFlightTime,
    pub goodput: Option<Goodput>,
    pub measurement_error: Option<SelfCheck>,
    /// Records received, trimmed ones included.
    pub records: u64,
    /// The first sink failure (a full disk): the run was stopped there.
    pub error: Option<anyhow::Error>,
}

/// The tallies of the records the results keep, and the sinks every record goes to.
struct Writer {
    sinks: Vec<Box<dyn RecordSink>>,
    summary: SummaryBuilder,
    goodput: Option<GoodputBuilder>,
    selfcheck: SelfCheckBuilder,
    in_flight: InFlightTime,
    records: u64,
    error: Option<anyhow::Error>,
    control: Control,
}

impl Writer {
    fn keep(&mut self, r: RequestRecord) {
        if r.excluded.is_none() {
            // `complete` filled the record's LLMPerf keys with the run's definitions.
            self.summary.add_finalized(&r);
            if let Some(g) = &mut self.goodput {
                g.add(&r);
            }
            self.selfcheck.add(&r);
        }
        if self.error.is_some() {
            return;
        }
        for s in &mut self.sinks {
            if let Err(e) = s.record(&r) {
                eprintln!("loadgen: error: {e:#}; stopping the run");
                self.control.stop();
                self.error = Some(e);
                return;
            }
        }
    }
}

/// A record held for the cool-down decision, ordered by completion.
struct Held(RequestRecord);

impl Held {
    fn done(&self) -> u64 {
        self.0.done_at_us.unwrap_or(0)
    }
}
impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        self.done() == o.done()
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.done().cmp(&o.done())
    }
}

/// Starts the writer task; records go in through the returned sender (bounded by
/// [`RECORD_QUEUE`]), and the task ends with [`Collected`] once every sender is gone.
pub fn spawn(
    plan: CollectPlan,
    sinks: Vec<Box<dyn RecordSink>>,
    control: Control,
) -> (mpsc::Sender<RequestRecord>, JoinHandle<Collected>) {
    let (tx, mut rx) = mpsc::channel::<RequestRecord>(RECORD_QUEUE);
    let task = tokio::spawn(async move {
        let mut summary = SummaryBuilder::new(plan.defs);
        if let Some(n) = plan.requests {
            summary.reserve(n);
        }
        let mut w = Writer {
            sinks,
            summary,
            goodput: plan.slo.map(GoodputBuilder::new),
            selfcheck: SelfCheckBuilder::default(),
            in_flight: InFlightTime::from(plan.warm_us),
            records: 0,
            error: None,
            control,
        };
        let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
        let mut last_done = 0u64;
        while let Some(mut r) = rx.recv().await {
            w.records += 1;
            complete(&mut r, &plan);
            w.in_flight.add(&r);
            let Some(cool) = plan.cool_us else {
                w.keep(r);
                continue;
            };
            last_done = last_done.max(r.done_at_us.unwrap_or(0));
            if r.excluded.is_some() || r.done_at_us.is_none() {
                w.keep(r);
            } else {
                held.push(Reverse(Held(r)));
            }
            while held.peek().is_some_and(|h| h.0.done() + cool < last_done) {
                let Some(Reverse(Held(r))) = held.pop() else {
                    break;
                };
                w.keep(r);
            }
        }
        // The run is over: what is still held finished within the cool-down of its end.
        if let Some(cool) = plan.cool_us {
            let from = last_done.saturating_sub(cool);
            while let Some(Reverse(Held(mut r))) = held.pop() {
                if r.done_at_us.is_some_and(|d| d > from) {
                    r.excluded = Some("cooldown".into());
                }
                w.keep(r);
            }
        }
        for s in &mut w.sinks {
            if let Err(e) = s.finish()
                && w.error.is_none()
            {
                w.error = Some(e);
            }
        }
        Collected {
            summary: w.summary.finish(),
            in_flight: w.in_flight,
            goodput: w.goodput.map(GoodputBuilder::finish),
            measurement_error: w.selfcheck.finish(),
            records: w.records,
            error: w.error,
        }
    });
    (tx, task)
}

/// LLMPerf's keys under the run's definitions, the SLO verdict, and the warm-up mark.
fn complete(r: &mut RequestRecord, plan: &CollectPlan) {
    r.finalize(plan.defs);
    if let Some(slo) = plan.slo {
        r.slo_met = Some(slo.met_by(r));
    }
    if plan.warm_us > 0 && r.sent_at_us.unwrap_or(r.intended_send_us) < plan.warm_us {
        r.excluded = Some("warmup".into());
    }
}

/// A sink that keeps every record in memory: for tests and library callers with small runs (a
/// long run should read its `*_requests.jsonl` instead).
#[derive(Debug, Clone, Default)]
pub struct KeepAll(pub std::sync::Arc<std::sync::Mutex<Vec<RequestRecord>>>);

impl KeepAll {
    /// Every record received so far, in the order written.
    pub fn records(&self) -> Vec<RequestRecord> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl RecordSink for KeepAll {
    fn record(&mut self, r: &RequestRecord) -> anyhow::Result<()> {
        if let Ok(mut v) = self.0.lock() {
            v.push(r.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenperf_core::record::{Event, TokenCount};

    fn rec(id: u64, sent: u64, done: u64) -> RequestRecord {
        let mut r = RequestRecord::new(id, sent);
        r.sent_at_us = Some(sent);
        r.events = vec![Event(sent + 10, 1), Event(done, 1)];
        r.done_at_us = Some(done);
        r.output_tokens = TokenCount::new(Some(2), Some(2));
        r
    }

    /// Cool-down marks equal marking after the fact, whatever order the records arrive in.
    #[tokio::test]
    async fn held_records_get_the_marks_the_whole_run_would_give() {
        let keep = KeepAll::default();
        let plan = CollectPlan {
            defs: MetricDefinitions::Tokenperf,
            slo: None,
            warm_us: 100_000,
            cool_us: Some(300_000),
            requests: None,
        };
        let (tx, task) = spawn(plan, vec![Box::new(keep.clone())], Control::new());
        // Completion order shuffled (token counting finishes out of order).
        let dones: Vec<u64> = (0..40).map(|i| ((i * 37) % 40) * 50_000 + 60_000).collect();
        for (i, d) in dones.iter().enumerate() {
            tx.send(rec(i as u64, d - 50_000, *d)).await.unwrap();
        }
        drop(tx);
        let got = task.await.unwrap();
        let end = *dones.iter().max().unwrap();
        let records = keep.records();
        assert_eq!(records.len(), 40);
        for r in &records {
            let (sent, done) = (r.sent_at_us.unwrap(), r.done_at_us.unwrap());
            let want = if sent < 100_000 {
                Some("warmup")
            } else if done > end - 300_000 {
                Some("cooldown")
            } else {
                None
            };
            assert_eq!(r.excluded.as_deref(), want, "record {}", r.id);
        }
        let kept = records.iter().filter(|r| r.excluded.is_none()).count() as u64;
        assert_eq!(got.summary.num_requests_started, kept);
        assert_eq!(got.records, 40);
    }
}
