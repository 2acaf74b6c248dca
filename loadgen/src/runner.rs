//! Drives load: workers send requests and pass each finished record to one writer task over a channel.
//!
//! Closed loop (LLMPerf's model): `concurrency` workers, each sending its next request as soon as its
//! last one finished; a request's intended send time is the moment its worker became free. No request
//! starts after `--timeout`; exactly `requests` requests are sent otherwise, and every one produces a
//! record, failures included.
//!
//! Stopping: [`Control::stop`] ends scheduling (in-flight requests finish); [`Control::cut`] also ends
//! in-flight requests, which are recorded as `cancelled` with what they had measured so far.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokenperf_core::record::RequestRecord;
use tokio::sync::{mpsc, watch};

use crate::client::{Context, measure};
use crate::prompt::PromptSpec;

/// Stop signals shared by the workers.
#[derive(Clone)]
pub struct Control {
    stop: watch::Sender<bool>,
    cut: watch::Sender<bool>,
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
            cut: watch::channel(false).0,
        }
    }
    /// No new requests; in-flight ones finish.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
    /// End in-flight requests now.
    pub fn cut(&self) {
        self.stop();
        self.cut.send_replace(true);
    }
    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }
    fn cut_receiver(&self) -> watch::Receiver<bool> {
        self.cut.subscribe()
    }
}

/// Runs a closed loop over `specs` with `concurrency` workers; records go to `tx` as they finish.
pub async fn closed_loop(
    ctx: Arc<Context>,
    specs: Arc<Vec<PromptSpec>>,
    concurrency: u64,
    timeout: Duration,
    control: Control,
    tx: mpsc::UnboundedSender<RequestRecord>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = ctx.run_start + timeout;
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(specs.len() as u64) {
        let (ctx, specs, next, control, tx) = (
            ctx.clone(),
            specs.clone(),
            next.clone(),
            control.clone(),
            tx.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut cut = control.cut_receiver();
            loop {
                if control.is_stopped() || Instant::now() >= deadline {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(spec) = specs.get(i as usize) else {
                    break;
                };
                let intended = ctx.now_us();
                let rec = measure(&ctx, i, intended, spec, &mut cut).await;
                if tx.send(rec).is_err() {
                    break;
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}
