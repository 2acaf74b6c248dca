//! The high-resolution pacer: wakes a task at an absolute deadline with sub-millisecond precision.
//!
//! tokio's timer wheel rounds every deadline up to the next millisecond, which would make a 5 ms token
//! gap come out anywhere between 5 and 6 ms. The pacer instead keeps all pending deadlines in one heap
//! served by a dedicated thread: it sleeps on a condition variable until shortly before the earliest
//! deadline, spins the last stretch, and completes the waiting task's oneshot at the deadline. Callers
//! compute every deadline from the request's start (never from the previous write), so lateness never
//! accumulates; the pacer returns the instant it actually fired so callers can measure lateness.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long before a deadline the pacer thread stops sleeping and starts spinning. Linux sleeps
/// overshoot by ~50–100 µs (timer slack plus wake-up); this covers that with margin.
const SPIN_WINDOW: Duration = Duration::from_micros(250);

/// Deadlines this close to the firing instant are released together.
const COALESCE: Duration = Duration::from_micros(2);

struct Entry {
    at: Instant,
    seq: u64,
    tx: oneshot::Sender<Instant>,
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

struct Shared {
    queue: Mutex<Queue>,
    cv: Condvar,
    /// Zero of the nanosecond offsets below.
    base: Instant,
    /// Earliest deadline registered since the pacer thread last looked (ns after `base`), so that a
    /// new, earlier deadline interrupts a wait for a later one.
    earliest_ns: AtomicU64,
}

impl Shared {
    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }
}

/// Handle to the pacer thread. Cloning shares the thread; it exits when the last handle is dropped.
#[derive(Clone)]
pub struct Pacer {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Real(Arc<PacerOwner>),
    /// For tests: records every deadline and returns at once, as if it had fired exactly on time.
    Fake(Arc<Mutex<Vec<Instant>>>),
}

struct PacerOwner {
    shared: Arc<Shared>,
}

impl Drop for PacerOwner {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.shutdown = true;
        }
        self.shared.cv.notify_all();
    }
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new()
    }
}

impl Pacer {
    /// Starts the pacer thread.
    pub fn new() -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            cv: Condvar::new(),
            base: Instant::now(),
            earliest_ns: AtomicU64::new(u64::MAX),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("mock-pacer".into())
            .spawn(move || run(&s))
            .expect("spawning the pacer thread");
        Self {
            inner: Inner::Real(Arc::new(PacerOwner { shared })),
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
        let owner = match &self.inner {
            Inner::Real(o) => o,
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
        {
            let shared = &owner.shared;
            let mut q = shared.queue.lock().expect("pacer lock");
            let earliest = q.heap.peek().map(|e| e.0.at);
            q.seq += 1;
            let seq = q.seq;
            q.heap.push(Reverse(Entry {
                at: deadline,
                seq,
                tx,
            }));
            if earliest.is_none_or(|e| deadline < e) {
                shared
                    .earliest_ns
                    .fetch_min(shared.ns(deadline), Ordering::AcqRel);
                shared.cv.notify_one();
            }
        }
        // If the pacer thread is gone (process shutting down) fall back to "now".
        let fired = rx.await.unwrap_or_else(|_| Instant::now());
        // A coalesced release can come up to COALESCE early: wait out the rest here, so nothing is
        // ever written before its due time.
        let mut now = fired;
        while now < deadline {
            std::hint::spin_loop();
            now = Instant::now();
        }
        now
    }
}

fn run(shared: &Shared) {
    let mut due: Vec<oneshot::Sender<Instant>> = Vec::with_capacity(64);
    let mut q = shared.queue.lock().expect("pacer lock");
    loop {
        if q.shutdown {
            return;
        }
        let Some(next) = q.heap.peek().map(|e| e.0.at) else {
            q = shared.cv.wait(q).expect("pacer lock");
            continue;
        };
        shared.earliest_ns.store(shared.ns(next), Ordering::Release);
        let now = Instant::now();
        if next > now + SPIN_WINDOW {
            let (g, _) = shared
                .cv
                .wait_timeout(q, next - now - SPIN_WINDOW)
                .expect("pacer lock");
            q = g;
            continue;
        }
        // Wait without the lock so that registrations are never blocked. Yield while more than a
        // few tens of µs remain, so a tokio worker sharing this core (one-core deployments) can run;
        // spin only the last stretch.
        drop(q);
        let next_ns = shared.ns(next);
        let mut preempted = false;
        loop {
            let now = Instant::now();
            if now >= next {
                break;
            }
            if shared.earliest_ns.load(Ordering::Acquire) < next_ns {
                preempted = true;
                break;
            }
            if next - now > Duration::from_micros(50) {
                std::thread::yield_now();
            } else {
                // A clock read costs more than the spin hint; read it once per short burst.
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
            }
        }
        q = shared.queue.lock().expect("pacer lock");
        if preempted {
            continue;
        }
        let fired = Instant::now();
        // Deadlines within COALESCE of now go out in this pass (one wake-up for a dense batch); they
        // are early by less than the clock read that decided to fire them.
        let horizon = fired + COALESCE;
        while q.heap.peek().is_some_and(|e| e.0.at <= horizon) {
            let Reverse(e) = q.heap.pop().expect("peeked");
            due.push(e.tx);
        }
        drop(q);
        for tx in due.drain(..) {
            // A receiver that went away (client disconnected) is not an error.
            let _ = tx.send(fired);
        }
        q = shared.queue.lock().expect("pacer lock");
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
}
