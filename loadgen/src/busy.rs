//! Busy polling (`--busy-poll`): one task that keeps its worker awake while requests are in flight.
//!
//! An idle tokio worker parks in `epoll_wait`; the kernel then needs a wake-up (on a VM, a halted
//! vCPU brought back) before a response byte is read, about 0.1 ms that lands in every TTFT and gap
//! the client measures. A task that only yields keeps one worker running: tokio polls the sockets
//! without blocking before it polls a yielded task again, so a readable socket is seen within
//! microseconds and its task runs on that worker. It costs the core it runs on (more: tokio's other
//! workers steal the yielding task now and then), so it runs only while a request is in flight, and
//! only when asked: on a machine shared with the server it takes its core from the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// How long the poller sleeps when nothing is in flight (tokio's timer rounds up to 1 ms; a request
/// that starts meanwhile waits at least its TTFT for a first byte, far longer).
const IDLE_NAP: Duration = Duration::from_millis(1);

/// Polls until aborted, yielding while `in_flight` is above zero.
pub async fn spin(in_flight: Arc<AtomicI64>) {
    loop {
        if in_flight.load(Ordering::Relaxed) > 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(IDLE_NAP).await;
        }
    }
}

/// The poller for a run, stopped when dropped.
pub struct Poller(Option<tokio::task::JoinHandle<()>>);

impl Poller {
    /// Starts polling when `on`.
    pub fn start(on: bool, in_flight: Arc<AtomicI64>) -> Self {
        Self(on.then(|| tokio::spawn(spin(in_flight))))
    }

    /// Whether it is polling.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The poller yields while something is in flight and stops when dropped: other tasks on a
    /// one-worker runtime still run, and nothing is left polling after the run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn other_tasks_run_beside_it_and_it_stops_when_dropped() {
        let in_flight = Arc::new(AtomicI64::new(1));
        let poller = Poller::start(true, in_flight.clone());
        assert!(poller.is_on());
        let handle = poller.0.as_ref().unwrap().abort_handle();
        let done = tokio::spawn(async { 7 });
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(30), done)
                .await
                .unwrap()
                .unwrap(),
            7
        );
        in_flight.store(0, Ordering::Relaxed);
        drop(poller);
        // The abort lands when the worker next gets to the task: wait for it, however loaded the
        // machine, rather than a fixed while.
        let stopped = tokio::time::timeout(Duration::from_secs(30), async {
            while !handle.is_finished() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        assert!(stopped.await.is_ok(), "the poller outlived its run");
        assert!(!Poller::start(false, in_flight).is_on());
    }
}
