//! Drives load: workers send requests and pass each finished record to one writer task over a channel.
//! A worker's exchange ends when the stream does; its tokens are counted on background threads
//! (`tokenperf_core::background`), which then send the record, so the next request never waits.
//!
//! Closed loop (LLMPerf's model): `concurrency` workers, each sending its next request as soon as its
//! last one finished; a request's intended send time is the moment its worker became free. No request
//! starts after `--timeout`; exactly `requests` requests are sent otherwise, and every one produces a
//! record, failures included.
//!
//! Open loop: a dispatcher sends request `i` at its scheduled time (see [`crate::arrival`]), each in its
//! own task; the intended time is the schedule, so a late dispatch shows up as schedule lag.
//!
//! Stopping: [`Control::stop`] ends scheduling (in-flight requests finish); [`Control::cut`] also ends
//! in-flight requests, which are recorded as `cancelled` with what they had measured so far.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokenperf_core::record::{Outcome, RequestRecord, TokenCount};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::cli::Shard;
use crate::client::{Context, measure};
use crate::cut::CutSignal;
use crate::workload::PromptPool;

/// Stop signals shared by the workers.
#[derive(Clone)]
pub struct Control {
    stop: watch::Sender<bool>,
    cut: Arc<CutSignal>,
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

impl Control {
    pub fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            cut: Arc::default(),
        }
    }
    /// No new requests; in-flight ones finish.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
    /// End in-flight requests now.
    pub fn cut(&self) {
        self.stop();
        self.cut.cut();
    }
    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }
    fn cut_signal(&self) -> Arc<CutSignal> {
        self.cut.clone()
    }
    pub(crate) fn stop_receiver(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// The record of an arrival that was never sent (its prompt's lengths when the prompt is built).
fn unsent(id: u64, intended_us: u64, prompts: &PromptPool, outcome: Outcome) -> RequestRecord {
    let mut r = RequestRecord::new(id, intended_us);
    if let Some(spec) = prompts.peek(id) {
        r.max_tokens = Some(spec.max_tokens);
        r.input_tokens = TokenCount::new(None, Some(spec.prompt_tokens));
    }
    r.outcome = outcome;
    r
}

/// A slot under `--max-concurrency` (none without it), or why the arrival is dropped.
fn take_slot(
    slots: Option<&Arc<Semaphore>>,
    max_concurrency: Option<u64>,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, String> {
    match slots {
        None => Ok(None),
        Some(s) => s.clone().try_acquire_owned().map(Some).map_err(|_| {
            format!(
                "all {} slots were busy at its scheduled time (--max-concurrency)",
                max_concurrency.unwrap_or(0)
            )
        }),
    }
}

/// Records the arrivals of a run that stopped: those already due as dropped, the rest as not due
/// (never part of the offered load).
async fn record_unsent(
    rest: &[(u64, u64)],
    ctx: &Context,
    prompts: &PromptPool,
    tx: &mpsc::Sender<RequestRecord>,
) {
    let now = ctx.now_us();
    for &(j, tj) in rest {
        let outcome = if tj <= now {
            Outcome::Dropped {
                message: "due, but the run was stopping".into(),
            }
        } else {
            Outcome::NotDue {
                message: "the run stopped before its scheduled time".into(),
            }
        };
        if tx.send(unsent(j, tj, prompts, outcome)).await.is_err() {
            break;
        }
    }
}

/// Runs an open loop: each arrival `(i, t)` sends request `i` at `t` µs after the run start,
/// whatever the server's speed. With `max_concurrency`, an arrival that finds every slot busy is
/// recorded as dropped; arrivals after `stop_at` or after a stop are recorded as `not_due`.
pub async fn open_loop(
    ctx: Arc<Context>,
    prompts: Arc<PromptPool>,
    schedule: &[(u64, u64)],
    max_concurrency: Option<u64>,
    stop_at: Instant,
    control: Control,
    tx: mpsc::Sender<RequestRecord>,
) {
    let slots = max_concurrency.map(|c| Arc::new(Semaphore::new(c as usize)));
    let mut stop = control.stop_receiver();
    let mut tasks = JoinSet::new();
    for (k, &(i, t)) in schedule.iter().enumerate() {
        let at = ctx.run_start + Duration::from_micros(t);
        if !control.is_stopped() && at <= stop_at {
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {},
                _ = stop.wait_for(|s| *s) => {},
            }
        }
        if control.is_stopped() || at > stop_at {
            record_unsent(&schedule[k..], &ctx, &prompts, &tx).await;
            break;
        }
        let permit = match take_slot(slots.as_ref(), max_concurrency) {
            Ok(permit) => permit,
            Err(why) => {
                let rec = unsent(i, t, &prompts, Outcome::Dropped { message: why });
                if tx.send(rec).await.is_err() {
                    break;
                }
                continue;
            }
        };
        // The prompt is awaited here, not in the request's task: a builder slower than the schedule
        // then delays the arrivals (their schedule lag says so) instead of piling up a waiting task
        // per arrival, which a long trace replayed fast grew to over 100 MB.
        let spec = tokio::select! {
            spec = prompts.get(i) => spec,
            _ = stop.wait_for(|s| *s) => {
                record_unsent(&schedule[k..], &ctx, &prompts, &tx).await;
                break;
            }
        };
        let Some(spec) = spec else {
            let why = format!(
                "no prompt could be built: {}",
                prompts
                    .error()
                    .unwrap_or_else(|| "the builder stopped".into())
            );
            if tx
                .send(unsent(i, t, &prompts, Outcome::Dropped { message: why }))
                .await
                .is_err()
            {
                break;
            }
            continue;
        };
        prompts.release(i);
        let (ctx, tx, control) = (ctx.clone(), tx.clone(), control.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let cut = control.cut_signal();
            let done = measure(&ctx, i, t, &spec, &cut).await;
            if let Some(slot) = ctx.record_waits.slot(&tx).await {
                done.finish_and_send(&ctx, slot);
            }
        });
        // Reap finished requests as we go, so a long run does not hold every task's result.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Runs a closed loop with `concurrency` workers until `limit` requests were sent (if given) or
/// `stop_at`; the `k`-th request sent is the plan's request `shard.id(k)` and uses
/// prompt `id` of the pool. Worker `w` starts `w/concurrency · ramp` after the others' start.
/// Records go to `tx` as they finish.
#[allow(clippy::too_many_arguments)]
pub async fn closed_loop(
    ctx: Arc<Context>,
    prompts: Arc<PromptPool>,
    concurrency: u64,
    limit: Option<u64>,
    shard: Shard,
    ramp: Duration,
    stop_at: Instant,
    control: Control,
    tx: mpsc::Sender<RequestRecord>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let workers_wanted = limit.map_or(concurrency, |l| concurrency.min(l));
    let mut workers = Vec::new();
    for k in 0..workers_wanted {
        let first = ctx.run_start + ramp.mul_f64(k as f64 / workers_wanted as f64);
        let (ctx, prompts, next, control, tx) = (
            ctx.clone(),
            prompts.clone(),
            next.clone(),
            control.clone(),
            tx.clone(),
        );
        workers.push(tokio::spawn(async move {
            let cut = control.cut_signal();
            if first > Instant::now() {
                let mut stop = control.stop_receiver();
                tokio::select! {
                    _ = tokio::time::sleep_until(first.into()) => {},
                    _ = stop.wait_for(|s| *s) => {},
                }
            }
            loop {
                if control.is_stopped() || Instant::now() >= stop_at {
                    break;
                }
                let k = next.fetch_add(1, Ordering::Relaxed);
                if limit.is_some_and(|l| k >= l) {
                    break;
                }
                let i = shard.id(k);
                let intended = ctx.now_us();
                let Some(spec) = prompts.get(i).await else {
                    break;
                };
                let done = measure(&ctx, i, intended, &spec, &cut).await;
                // A full queue (the writer behind, a slow disk) holds the next request back rather
                // than let records pile up in memory.
                let Some(slot) = ctx.record_waits.slot(&tx).await else {
                    break;
                };
                // The next request goes out at once; token counting happens in the background.
                done.finish_and_send(&ctx, slot);
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}
