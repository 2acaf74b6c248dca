//! The high-resolution pacer: wakes a task at an absolute deadline with sub-millisecond precision.
//!
//! tokio's timer wheel rounds every deadline up to the next millisecond, which would make a 5 ms token
//! gap come out anywhere between 5 and 6 ms. The pacer keeps pending deadlines in heaps, each served
//! by one task on the server's own runtime and handed deadlines in turn. One heap is the default;
//! `--pacer-shards 0` gives one per runtime worker, so on a big machine the pacer's work (one release
//! per token) can spread over the cores instead of capping the server near one. When the earliest deadline is more than `SPIN` away, the
//! task waits on a CLOCK_MONOTONIC timerfd (which the kernel fires within tens of µs, unrounded).
//! Closer than that, it yields in a loop: the worker keeps polling its sockets without blocking and
//! releases every deadline on the same thread. So there is no futex, no cross-thread wake-up and no
//! second thread competing for the core, which matters most when the server has one core. Callers
//! compute every deadline from the request's start (never from the previous write), so lateness never
//! accumulates; the pacer returns the instant it actually fired so callers can measure lateness.
//! Besides waking a task, a deadline can run a [`Job`] on the pacer's own task: a stream's token
//! write then costs no wake-up at all (see `stream::DirectJob`).
//!
//! An earlier version ran the heap on a dedicated thread (condition variable, then yield, then spin).
//! On one core it had 4× the lateness p99 at 100 streams (0.21 vs 0.05 ms) and spent 16 % of the core
//! in the pacer thread at 1,000 streams (BENCHMARKS.md).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

/// Deadlines closer than this are waited for by yielding (busy polling); farther ones by the timerfd,
/// set this far ahead to cover its wake-up latency on a busy VM. 100 µs was tried: the in-process
/// self-check at 64 streams used a third less CPU, but the median lateness rose from ~7 to ~35 µs.
const SPIN: Duration = Duration::from_micros(200);
/// Without a timerfd, tokio's timer (whole milliseconds) is set this far ahead instead.
const SPIN_TOKIO_TIMER: Duration = Duration::from_micros(1_500);
/// Deadlines this close to the firing instant are released together.
const COALESCE: Duration = Duration::from_micros(2);

/// Work the pacer runs at a deadline itself, on its own task, instead of waking another task to do
/// it: a stream's token write costs no wake-up, no poll of the stream's task and no hand-off.
pub trait Job: Send + 'static {
    /// Runs at `now` (at or just after its deadline). Returns its next deadline to run again, or
    /// None when done. It runs on the pacer's task, so it must not block.
    fn fire(&mut self, now: Instant) -> Option<Instant>;
}

/// What is due at a deadline: a waiting task to wake, or a job to run.
enum Due {
    Wake(oneshot::Sender<Instant>),
    Run(Box<dyn Job>),
}

struct Entry {
    at: Instant,
    seq: u64,
    due: Due,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    shutdown: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the pacer task when a deadline earlier than all others arrives, or at shutdown.
    notify: Notify,
}

/// Handle to the pacer. Cloning shares the pacer task; it ends when the last handle is dropped.
#[derive(Clone)]
pub struct Pacer {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Real(Arc<Owner>),
    /// For tests: records every deadline and returns at once, as if it had fired exactly on time.
    Fake(Arc<Mutex<Vec<Instant>>>),
}

/// Ends the pacer tasks when the last [`Pacer`] handle is dropped.
struct Owner {
    shards: Vec<Arc<Shared>>,
    /// The shard the next deadline goes to (taken in turn).
    next: std::sync::atomic::AtomicUsize,
}

impl Drop for Owner {
    fn drop(&mut self) {
        for shared in &self.shards {
            if let Ok(mut q) = shared.queue.lock() {
                q.shutdown = true;
            }
            shared.notify.notify_one();
        }
    }
}

impl Pacer {
    /// Starts one pacer task (one heap) on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    #[allow(clippy::new_without_default)] // a Default that panics outside a runtime would surprise
    pub fn new() -> Self {
        Self::with_shards(1)
    }

    /// Starts `shards` pacer tasks (0: one per worker of the current tokio runtime).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn with_shards(shards: usize) -> Self {
        let n = match shards {
            0 => tokio::runtime::Handle::current().metrics().num_workers(),
            n => n,
        }
        .max(1);
        let shards: Vec<Arc<Shared>> = (0..n).map(|_| Arc::new(Shared::default())).collect();
        for shared in &shards {
            tokio::spawn(run(shared.clone()));
        }
        Self {
            inner: Inner::Real(Arc::new(Owner {
                shards,
                next: std::sync::atomic::AtomicUsize::new(0),
            })),
        }
    }

    /// How many heaps (each with its task) serve the deadlines; 0 for a fake pacer.
    pub fn shards(&self) -> usize {
        match &self.inner {
            Inner::Real(o) => o.shards.len(),
            Inner::Fake(_) => 0,
        }
    }

    /// A pacer that never sleeps and records the deadlines it was given (see [`Pacer::deadlines`]).
    pub fn fake() -> Self {
        Self {
            inner: Inner::Fake(Arc::new(Mutex::new(Vec::new()))),
        }
    }

    /// The deadlines a fake pacer was asked for, in order (empty for a real one).
    pub fn deadlines(&self) -> Vec<Instant> {
        match &self.inner {
            Inner::Real(_) => Vec::new(),
            Inner::Fake(v) => v.lock().expect("fake pacer lock").clone(),
        }
    }

    /// Waits until `deadline` and returns the instant the pacer released the caller (≥ `deadline`).
    /// A deadline already in the past returns at once.
    pub async fn sleep_until(&self, deadline: Instant) -> Instant {
        let shared = match &self.inner {
            Inner::Real(o) => o.shard(),
            Inner::Fake(v) => {
                v.lock().expect("fake pacer lock").push(deadline);
                return deadline;
            }
        };
        let now = Instant::now();
        if deadline <= now {
            return now;
        }
        let (tx, rx) = oneshot::channel();
        shared.push(deadline, Due::Wake(tx));
        // If the pacer task is gone (runtime shutting down) fall back to "now".
        let fired = rx.await.unwrap_or_else(|_| Instant::now());
        wait_out(fired, deadline)
    }

    /// Runs `job` at `deadline`, then at each deadline it returns, on a pacer task. A fake pacer
    /// runs it at once, as if each deadline had come exactly, and records them.
    pub fn schedule(&self, deadline: Instant, mut job: Box<dyn Job>) {
        match &self.inner {
            Inner::Real(o) => o.shard().push(deadline, Due::Run(job)),
            Inner::Fake(v) => {
                let mut at = Some(deadline);
                while let Some(d) = at {
                    v.lock().expect("fake pacer lock").push(d);
                    at = job.fire(d);
                }
            }
        }
    }
}

impl Owner {
    /// The heap the next deadline goes to.
    fn shard(&self) -> &Shared {
        // One heap (the default) takes no turn counter: an atomic shared by every worker on every
        // token would be contention for nothing.
        if self.shards.len() == 1 {
            return &self.shards[0];
        }
        let k = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.shards[k % self.shards.len()]
    }
}

impl Shared {
    fn push(&self, at: Instant, due: Due) {
        let mut q = self.queue.lock().expect("pacer lock");
        q.push(at, due);
        if q.heap.peek().is_some_and(|e| e.0.seq == q.seq) {
            // The new deadline is the earliest: stores a permit if the task is not waiting right
            // now, so no wake-up is lost.
            self.notify.notify_one();
        }
    }
}

impl Queue {
    fn push(&mut self, at: Instant, due: Due) {
        self.seq += 1;
        let seq = self.seq;
        self.heap.push(Reverse(Entry { at, seq, due }));
    }
}

/// A coalesced release can come up to COALESCE early: waits out the rest, so nothing is ever
/// written before its due time. Returns the instant it is done.
fn wait_out(fired: Instant, deadline: Instant) -> Instant {
    let mut now = fired;
    while now < deadline {
        std::hint::spin_loop();
        now = Instant::now();
    }
    now
}

async fn run(shared: Arc<Shared>) {
    let mut due: Vec<(Instant, Due)> = Vec::with_capacity(64);
    let mut again: Vec<(Instant, Box<dyn Job>)> = Vec::with_capacity(64);
    let timer = TimerFd::new();
    let spin = if timer.is_some() {
        SPIN
    } else {
        SPIN_TOKIO_TIMER
    };
    loop {
        let now = Instant::now();
        let next = {
            let mut q = shared.queue.lock().expect("pacer lock");
            if q.shutdown {
                return;
            }
            // Deadlines within COALESCE of now go out in this pass; they are early by less than
            // the clock read that decided to fire them.
            let horizon = now + COALESCE;
            while q.heap.peek().is_some_and(|e| e.0.at <= horizon) {
                let e = q.heap.pop().expect("peeked").0;
                due.push((e.at, e.due));
            }
            q.heap.peek().map(|e| e.0.at)
        };
        let (now, next) = if release(now, &mut due, &mut again) {
            // Jobs that run again go back in one pass. One that is already due (a write that fell
            // behind) runs after a yield, so the worker's other tasks are not starved.
            let mut q = shared.queue.lock().expect("pacer lock");
            for (at, job) in again.drain(..) {
                q.push(at, Due::Run(job));
            }
            // The jobs took time: the wait below counts from now.
            (Instant::now(), q.heap.peek().map(|e| e.0.at))
        } else {
            (now, next)
        };
        match next {
            None => shared.notify.notified().await,
            Some(n) if n > now + spin => match &timer {
                Some(t) => tokio::select! {
                    () = t.sleep(n - spin - now) => {}
                    () = shared.notify.notified() => {}
                },
                None => tokio::select! {
                    () = tokio::time::sleep_until((n - spin).into()) => {}
                    () = shared.notify.notified() => {}
                },
            },
            Some(_) => tokio::task::yield_now().await,
        }
    }
}

/// Wakes or runs everything in `due`, in deadline order; jobs to run again go into `again`.
/// Returns whether any job ran.
fn release(
    now: Instant,
    due: &mut Vec<(Instant, Due)>,
    again: &mut Vec<(Instant, Box<dyn Job>)>,
) -> bool {
    let mut ran = false;
    for (at, d) in due.drain(..) {
        match d {
            // A receiver that went away (client disconnected) is not an error.
            Due::Wake(tx) => {
                let _ = tx.send(now);
            }
            Due::Run(mut job) => {
                // Each job reads the clock itself: when many run in one pass, the last ones run
                // later than the pass began.
                let fired = wait_out(Instant::now(), at);
                if let Some(next) = job.fire(fired) {
                    again.push((next, job));
                }
                ran = true;
            }
        }
    }
    ran
}

/// A one-shot CLOCK_MONOTONIC timerfd registered with the runtime's reactor.
struct TimerFd(tokio::io::unix::AsyncFd<rustix::fd::OwnedFd>);

impl TimerFd {
    /// None where timerfd is not available; the pacer then falls back to tokio's timer.
    #[allow(unsafe_code)]
    fn new() -> Option<Self> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .ok()?;
        // SAFETY: `register` requires the descriptor to stay open and the same for the AsyncFd's
        // whole life. An OwnedFd moved into the AsyncFd is closed only when the AsyncFd drops it.
        unsafe { tokio::io::unix::AsyncFd::register(fd) }
            .ok()
            .map(Self)
    }

    /// Waits until `after` has passed, or returns early on a stale readiness (callers loop).
    async fn sleep(&self, after: Duration) {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: after.as_secs() as _,
                // An all-zero it_value would disarm the timer instead of firing it.
                tv_nsec: after.subsec_nanos().max(1) as _,
            },
        };
        // Re-arming also resets the expiry count, so a fire from an earlier arming is not seen.
        if timerfd_settime(self.0.get_ref(), TimerfdTimerFlags::empty(), &spec).is_err() {
            return;
        }
        if let Ok(mut ready) = self.0.readable().await {
            let mut ticks = [0u8; 8];
            if rustix::io::read(self.0.get_ref(), &mut ticks).is_err() {
                // EAGAIN: the readiness was stale.
                ready.clear_ready();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_at_or_after_the_deadline_in_order() {
        let p = Pacer::new();
        let start = Instant::now();
        let mut handles = Vec::new();
        for i in (0..20u64).rev() {
            let p = p.clone();
            let at = start + Duration::from_micros(2_000 + i * 300);
            handles.push(tokio::spawn(async move { (at, p.sleep_until(at).await) }));
        }
        for h in handles {
            let (at, fired) = h.await.unwrap();
            assert!(fired >= at, "fired before its deadline");
            // Generous bound: a loaded 2-core CI machine can deschedule the pacer thread.
            assert!(fired - at < Duration::from_millis(200));
        }
        let past = Instant::now() - Duration::from_millis(1);
        assert!(p.sleep_until(past).await >= past);
    }

    #[tokio::test]
    async fn an_earlier_deadline_interrupts_the_wait_for_a_later_one() {
        let p = Pacer::new();
        let start = Instant::now();
        let far = start + Duration::from_secs(30);
        let waiting = tokio::spawn({
            let p = p.clone();
            async move { p.sleep_until(far).await }
        });
        // Let the pacer task arm its timer for the far deadline first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let near = Instant::now() + Duration::from_millis(5);
        let fired = p.sleep_until(near).await;
        assert!(fired >= near);
        assert!(
            fired - near < Duration::from_millis(500),
            "waited {:?}",
            fired - near
        );
        assert!(!waiting.is_finished(), "the far deadline fired early");
        waiting.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn works_on_a_multi_thread_runtime() {
        let p = Pacer::with_shards(0);
        assert_eq!(p.shards(), 2, "one heap per worker");
        assert_eq!(Pacer::with_shards(3).shards(), 3);
        assert_eq!(Pacer::new().shards(), 1);
        let start = Instant::now();
        let handles: Vec<_> = (0..50u64)
            .map(|i| {
                let p = p.clone();
                let at = start + Duration::from_micros(1_000 + i * 100);
                tokio::spawn(async move { (at, p.sleep_until(at).await) })
            })
            .collect();
        for h in handles {
            let (at, fired) = h.await.unwrap();
            assert!(fired >= at);
        }
    }
}
