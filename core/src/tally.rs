//! [`SummaryBuilder`]: a run summary built one record at a time, so a run of any length never holds
//! its records. Per request it keeps the handful of values its statistics need (exact, as
//! [`Stats::from_values`] would compute them over every record); the per-chunk gaps, one per SSE
//! event, go into a [`GapHistogram`] (see its precision). Error messages and model names are kept per
//! distinct value, up to a bound, past which they are counted together.
//!
//! [`crate::summary::RunSummary::from_records`] goes through here too, so loadgen (at the end of a
//! run) and analyze (from the files) cannot disagree.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::histogram::GapHistogram;
use crate::llmperf::{LlmperfMetrics, MetricDefinitions};
use crate::record::{Outcome, RequestRecord, TokenSource};
use crate::stats::Stats;
use crate::summary::{CachedInput, Connections, ErrorGroup, RunSummary, ShortOutputs};

/// Distinct values kept per tally before the rest are counted under [`OTHERS`].
pub const MAX_DISTINCT: usize = 1_000;
/// Most requests [`SummaryBuilder::reserve`] makes room for ahead (8 MiB per column).
pub const MAX_RESERVE: u64 = 1 << 20;
/// The name under which values past [`MAX_DISTINCT`] are counted.
pub const OTHERS: &str = "(other values, past 1,000 distinct ones)";

/// Counts per distinct string, bounded: a server that puts a request id in every error message
/// cannot make the tally grow with the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoundedCounts {
    counts: BTreeMap<String, u64>,
}

impl BoundedCounts {
    pub fn add(&mut self, key: &str) {
        if let Some(n) = self.counts.get_mut(key) {
            *n += 1;
        } else if self.counts.len() < MAX_DISTINCT {
            self.counts.insert(key.to_string(), 1);
        } else {
            *self.counts.entry(OTHERS.to_string()).or_insert(0) += 1;
        }
    }

    pub fn into_map(self) -> BTreeMap<String, u64> {
        self.counts
    }

    /// Adds `other`'s counts, within the same bound.
    pub fn merge(&mut self, other: BoundedCounts) {
        for (k, n) in other.counts {
            if let Some(m) = self.counts.get_mut(&k) {
                *m += n;
            } else if self.counts.len() < MAX_DISTINCT || k == OTHERS {
                self.counts.insert(k, n);
            } else {
                *self.counts.entry(OTHERS.to_string()).or_insert(0) += n;
            }
        }
    }
}

impl Columns {
    fn append(&mut self, mut o: Columns) {
        for (a, b) in [
            (&mut self.itl, &mut o.itl),
            (&mut self.ttft, &mut o.ttft),
            (&mut self.e2e, &mut o.e2e),
            (&mut self.throughput, &mut o.throughput),
            (&mut self.input, &mut o.input),
            (&mut self.output, &mut o.output),
            (&mut self.tpot, &mut o.tpot),
            (&mut self.ttfe, &mut o.ttfe),
            (&mut self.e2e_from_intended, &mut o.e2e_from_intended),
            (&mut self.server_input, &mut o.server_input),
            (&mut self.server_to_built, &mut o.server_to_built),
            (&mut self.short_fraction, &mut o.short_fraction),
        ] {
            a.append(b);
        }
    }
}

fn add_counts<K: Ord>(a: &mut BTreeMap<K, u64>, b: BTreeMap<K, u64>) {
    for (k, n) in b {
        *a.entry(k).or_insert(0) += n;
    }
}

/// The per-request values of successful requests, one column per statistic.
#[derive(Debug, Clone, Default)]
struct Columns {
    itl: Vec<f64>,
    ttft: Vec<f64>,
    e2e: Vec<f64>,
    throughput: Vec<f64>,
    input: Vec<f64>,
    output: Vec<f64>,
    tpot: Vec<f64>,
    ttfe: Vec<f64>,
    e2e_from_intended: Vec<f64>,
    server_input: Vec<f64>,
    server_to_built: Vec<f64>,
    short_fraction: Vec<f64>,
}

/// A [`RunSummary`] in the making.
#[derive(Debug, Clone)]
pub struct SummaryBuilder {
    defs: MetricDefinitions,
    ok: Columns,
    schedule_lag: Vec<f64>,
    gaps: GapHistogram,
    outcomes: BTreeMap<String, u64>,
    error_codes: BTreeMap<String, u64>,
    errors: BTreeMap<&'static str, BoundedCounts>,
    models: BoundedCounts,
    sent: u64,
    failed_sent: u64,
    succeeded: u64,
    dropped: u64,
    not_due: u64,
    first_send_us: Option<u64>,
    last_done_us: Option<u64>,
    output_tokens: u64,
    from_server: u64,
    from_tokenizer: u64,
    mismatches: u64,
    short: ShortOutputs,
    cached: CachedInput,
    connections: Connections,
    events: u64,
    /// Whether the six LLMPerf-metric columns are kept here (see [`SummaryBuilder::llmperf_columns_elsewhere`]).
    llmperf_columns: bool,
}

impl SummaryBuilder {
    pub fn new(defs: MetricDefinitions) -> Self {
        Self {
            defs,
            ok: Columns::default(),
            schedule_lag: Vec::new(),
            gaps: GapHistogram::new(),
            outcomes: BTreeMap::new(),
            error_codes: BTreeMap::new(),
            errors: BTreeMap::new(),
            models: BoundedCounts::default(),
            sent: 0,
            failed_sent: 0,
            succeeded: 0,
            dropped: 0,
            not_due: 0,
            first_send_us: None,
            last_done_us: None,
            output_tokens: 0,
            from_server: 0,
            from_tokenizer: 0,
            mismatches: 0,
            short: ShortOutputs::default(),
            cached: CachedInput::default(),
            connections: Connections::default(),
            events: 0,
            llmperf_columns: true,
        }
    }

    /// A builder that does not keep the per-request values of the six LLMPerf metrics, for a caller
    /// that holds them already (analyze, in its polars frame) and fills their statistics with
    /// [`RunSummary::set_llmperf_stats`]: a run's values are then held once, not twice.
    pub fn llmperf_columns_elsewhere(mut self) -> Self {
        self.llmperf_columns = false;
        self
    }

    /// Makes room for `requests` successful requests at once, so a run of known length holds its
    /// per-request values without a growing vector's spare half (at most [`MAX_RESERVE`]).
    pub fn reserve(&mut self, requests: u64) {
        let n = requests.min(MAX_RESERVE) as usize;
        let c = &mut self.ok;
        for col in [
            &mut c.itl,
            &mut c.ttft,
            &mut c.e2e,
            &mut c.throughput,
            &mut c.input,
            &mut c.output,
            &mut c.tpot,
            &mut c.ttfe,
            &mut c.e2e_from_intended,
            &mut self.schedule_lag,
        ] {
            col.reserve_exact(n);
        }
    }

    /// Adds one record the results keep, computing its LLMPerf keys (a record read from a file
    /// may carry stale ones).
    pub fn add(&mut self, r: &RequestRecord) {
        let m = r.llmperf_metrics(self.defs);
        self.add_with(r, &m);
    }

    /// Adds a record that [`RequestRecord::finalize`] just filled with this builder's definitions,
    /// using its LLMPerf keys as they are instead of computing them again.
    pub fn add_finalized(&mut self, r: &RequestRecord) {
        self.add_with(r, &r.llmperf);
    }

    fn add_with(&mut self, r: &RequestRecord, m: &LlmperfMetrics) {
        *self
            .outcomes
            .entry(r.outcome.kind().to_string())
            .or_insert(0) += 1;
        match r.outcome {
            Outcome::Dropped { .. } => self.dropped += 1,
            Outcome::NotDue { .. } => self.not_due += 1,
            _ => {}
        }
        if !matches!(r.outcome, Outcome::Ok | Outcome::NotDue { .. }) {
            self.errors
                .entry(r.outcome.kind())
                .or_default()
                .add(r.outcome.message());
        }
        self.events += r.events.len() as u64;
        let Some(sent) = r.sent_at_us else { return };
        self.add_sent(r, sent);
        if r.outcome.is_ok() {
            self.add_ok(r, m);
        } else {
            self.failed_sent += 1;
            let code = match r.outcome.error_code() {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => String::new(),
            };
            *self.error_codes.entry(code).or_insert(0) += 1;
        }
    }

    fn add_sent(&mut self, r: &RequestRecord, sent: u64) {
        self.sent += 1;
        self.first_send_us = Some(self.first_send_us.map_or(sent, |f| f.min(sent)));
        if let Some(done) = r.done_at_us {
            self.last_done_us = Some(self.last_done_us.map_or(done, |l| l.max(done)));
        }
        if let Some(lag) = r.schedule_lag_s() {
            self.schedule_lag.push(lag);
        }
        if let Some(conn) = &r.connection {
            if conn.new {
                self.connections.new += 1;
            } else {
                self.connections.reused += 1;
            }
            self.connections.retried += u64::from(conn.retried_after.is_some());
        }
    }

    fn add_ok(&mut self, r: &RequestRecord, m: &LlmperfMetrics) {
        self.succeeded += 1;
        let c = &mut self.ok;
        let push = |col: &mut Vec<f64>, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                col.push(v);
            }
        };
        if self.llmperf_columns {
            push(&mut c.itl, m.inter_token_latency_s);
            push(&mut c.ttft, m.ttft_s);
            push(&mut c.e2e, m.end_to_end_latency_s);
            push(&mut c.throughput, m.request_output_throughput_token_per_s);
            push(&mut c.input, Some(m.number_input_tokens as f64));
            push(&mut c.output, Some(m.number_output_tokens as f64));
        }
        push(&mut c.tpot, r.tpot_s());
        push(&mut c.ttfe, r.ttfe_s());
        push(&mut c.e2e_from_intended, r.e2e_from_intended_s());
        push(&mut c.server_input, r.input_tokens.server.map(|n| n as f64));
        if let (Some(s), Some(b)) = (r.input_tokens.server, r.input_tokens.tokenizer)
            && b > 0
        {
            push(&mut c.server_to_built, Some(s as f64 / b as f64));
        }
        // Under the run's definitions: with LLMPerf's, its own re-tokenized counts, as its overall
        // throughput summed them.
        self.output_tokens += m.number_output_tokens;
        for (gap_us, _) in r.token_gaps_us() {
            self.gaps.record(gap_us);
        }
        match r.output_tokens.used {
            TokenSource::Server => self.from_server += 1,
            TokenSource::Tokenizer => self.from_tokenizer += 1,
            TokenSource::None => {}
        }
        self.mismatches += u64::from(r.output_tokens.disagreement().is_some_and(|d| d > 0.05));
        self.add_short(r);
        if let Some(n) = r.cached_input_tokens {
            let c = &mut self.cached;
            c.requests_reporting += 1;
            c.requests_with_hits += u64::from(n > 0);
            c.cached_tokens += n;
            c.input_tokens += r.input_tokens.server.unwrap_or(0);
        }
        if let Some(name) = &r.model {
            self.models.add(name);
        }
    }

    fn add_short(&mut self, r: &RequestRecord) {
        let Some(max) = r.max_tokens.filter(|&m| m > 0) else {
            return;
        };
        self.short.of += 1;
        let n = r.output_token_count();
        if n < max {
            self.short.requests += 1;
            self.short.tokens_missing += max - n;
            self.ok.short_fraction.push(n as f64 / max as f64);
        }
    }

    /// Adds everything `other` was given, as if its records had been added here: for building one
    /// summary from parts of a file read in parallel. Every statistic comes out as from one pass
    /// (values are sorted before they are summed), but which messages past [`MAX_DISTINCT`] are
    /// named may depend on the split.
    pub fn merge(&mut self, o: SummaryBuilder) {
        self.ok.append(o.ok);
        self.schedule_lag.extend(o.schedule_lag);
        self.gaps.merge(&o.gaps);
        add_counts(&mut self.outcomes, o.outcomes);
        add_counts(&mut self.error_codes, o.error_codes);
        for (kind, msgs) in o.errors {
            self.errors.entry(kind).or_default().merge(msgs);
        }
        self.models.merge(o.models);
        self.sent += o.sent;
        self.failed_sent += o.failed_sent;
        self.succeeded += o.succeeded;
        self.dropped += o.dropped;
        self.not_due += o.not_due;
        self.first_send_us = match (self.first_send_us, o.first_send_us) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_done_us = self.last_done_us.max(o.last_done_us);
        self.output_tokens += o.output_tokens;
        self.from_server += o.from_server;
        self.from_tokenizer += o.from_tokenizer;
        self.mismatches += o.mismatches;
        self.short.requests += o.short.requests;
        self.short.of += o.short.of;
        self.short.tokens_missing += o.short.tokens_missing;
        let (c, d) = (&mut self.cached, o.cached);
        c.requests_reporting += d.requests_reporting;
        c.requests_with_hits += d.requests_with_hits;
        c.cached_tokens += d.cached_tokens;
        c.input_tokens += d.input_tokens;
        self.connections.new += o.connections.new;
        self.connections.reused += o.connections.reused;
        self.connections.retried += o.connections.retried;
        self.events += o.events;
    }

    /// The pooled per-chunk gaps so far (µs), to merge across shards or points.
    pub fn gaps(&self) -> &GapHistogram {
        &self.gaps
    }

    /// The summary of every record added.
    pub fn finish(self) -> RunSummary {
        let c = self.ok;
        let window_s = match (self.first_send_us, self.last_done_us) {
            (Some(a), Some(b)) if b > a => Some((b - a) as f64 * 1e-6),
            _ => None,
        };
        let ok = self.succeeded;
        let mut short = self.short;
        short.median_fraction = Stats::from_values(c.short_fraction).p50;
        RunSummary {
            metric_definitions: self.defs,
            inter_token_latency_s: Stats::from_values(c.itl),
            ttft_s: Stats::from_values(c.ttft),
            end_to_end_latency_s: Stats::from_values(c.e2e),
            request_output_throughput_token_per_s: Stats::from_values(c.throughput),
            number_input_tokens: Stats::from_values(c.input),
            number_output_tokens: Stats::from_values(c.output),
            tpot_s: Stats::from_values(c.tpot),
            time_to_first_event_s: Stats::from_values(c.ttfe),
            inter_chunk_gap_s: self.gaps.stats(1e-6),
            e2e_from_intended_s: Stats::from_values(c.e2e_from_intended),
            schedule_lag_s: Stats::from_values(self.schedule_lag),
            num_requests_started: self.sent,
            number_errors: self.failed_sent,
            error_rate: if self.sent == 0 {
                0.0
            } else {
                self.failed_sent as f64 / self.sent as f64
            },
            error_code_frequency: self.error_codes,
            outcomes: self.outcomes,
            dropped: self.dropped,
            not_due: self.not_due,
            num_completed_requests: ok,
            mean_output_throughput_token_per_s: window_s.map(|w| self.output_tokens as f64 / w),
            num_completed_requests_per_min: window_s.map(|w| ok as f64 / w * 60.0),
            window_s,
            output_tokens_from_server: self.from_server,
            output_tokens_from_tokenizer: self.from_tokenizer,
            output_token_mismatches: self.mismatches,
            error_breakdown: error_groups(self.errors),
            short_outputs: short,
            cached_input: self.cached,
            connections: self.connections,
            server_input_tokens: Stats::from_values(c.server_input),
            server_to_built_input_ratio: Stats::from_values(c.server_to_built).p50,
            response_models: self.models.into_map(),
            events_read: self.events,
        }
    }
}

/// Failed requests by kind, most frequent first, each with its three commonest messages.
fn error_groups(by_kind: BTreeMap<&'static str, BoundedCounts>) -> Vec<ErrorGroup> {
    let mut groups: Vec<ErrorGroup> = by_kind
        .into_iter()
        .map(|(kind, msgs)| {
            let mut messages: Vec<(String, u64)> = msgs.into_map().into_iter().collect();
            messages.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            ErrorGroup {
                kind: kind.to_string(),
                count: messages.iter().map(|m| m.1).sum(),
                messages: messages.into_iter().take(3).collect(),
            }
        })
        .collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any split of the records, built apart and merged, gives the summary of one pass.
    #[test]
    fn merged_parts_equal_one_pass() {
        let records: Vec<RequestRecord> = include_str!("../tests/data/requests-v1.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let whole = RunSummary::from_records(&records, MetricDefinitions::Tokenperf);
        for cut in 0..=records.len() {
            let part = |rs: &[RequestRecord]| {
                let mut b = SummaryBuilder::new(MetricDefinitions::Tokenperf);
                rs.iter().for_each(|r| b.add(r));
                b
            };
            let mut a = part(&records[cut..]);
            a.merge(part(&records[..cut]));
            assert_eq!(a.finish(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn distinct_messages_are_bounded_and_still_counted() {
        let mut c = BoundedCounts::default();
        for i in 0..5_000 {
            c.add(&format!("request {i} failed"));
        }
        c.add("request 3 failed");
        let m = c.into_map();
        assert_eq!(m.len(), MAX_DISTINCT + 1);
        assert_eq!(m.values().sum::<u64>(), 5_001);
        assert_eq!(m["request 3 failed"], 2);
        assert_eq!(m[OTHERS], 4_000);
    }
}
