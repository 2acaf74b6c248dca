//! Low-priority background threads for CPU-bound bookkeeping (token counting) that must never delay
//! a measurement: the client's reads and timestamps, or the mock's writes.
//!
//! Counting a response's tokens with a Hugging Face tokenizer costs hundreds of µs per request (a
//! third of loadgen's CPU at 500 streams × 200 tokens, BENCHMARKS.md). On tokio's blocking pool it
//! runs at the workers' priority, so on a one-core run it takes the core from them while events wait.
//! These threads run at nice 19: the scheduler gives them the CPU only when the measuring threads do
//! not want it.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// A small pool of low-priority threads. Dropping the last handle lets the threads finish the queued
/// jobs and exit.
pub struct Background {
    tx: Sender<Job>,
}

impl Background {
    /// Starts `threads` threads (at least one) named `{name}-N`, each at nice 19 where the system
    /// allows it.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || work(&rx))?;
        }
        Ok(Self { tx })
    }

    /// As many threads as this process may run on.
    pub fn for_this_machine(name: &str) -> std::io::Result<Self> {
        Self::new(
            name,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )
    }

    /// Runs `job` on a background thread. If the pool is gone (cannot happen while `self` lives)
    /// the job runs here instead, so no record is ever lost.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        if let Err(rejected) = self.tx.send(Box::new(job)) {
            (rejected.0)();
        }
    }
}

/// Lowers the calling thread to nice 19 where the system allows it: Linux keeps nice values per
/// thread, so this lowers only this thread. Failing to lower it costs timing precision on a busy
/// machine, never correctness.
pub fn lower_this_thread() {
    lower_this_thread_to(19);
}

/// Sets the calling thread's nice value to `nice` (0–19; only ever lowered: an unprivileged thread
/// cannot raise it again), where the system allows it.
pub fn lower_this_thread_to(nice: i32) {
    let _ = rustix::process::setpriority_process(None, nice);
}

fn work(rx: &Mutex<Receiver<Job>>) {
    lower_this_thread();
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            // A job that panics must not take the thread, and with it every job queued behind it.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_and_threads_are_niced() {
        let f = Background::new("test-bg", 2).unwrap();
        let (tx, rx) = channel();
        for i in 0..100 {
            let tx = tx.clone();
            f.submit(move || {
                let nice = rustix::process::getpriority_process(None).unwrap_or(0);
                tx.send((i, nice)).unwrap();
            });
        }
        drop(tx);
        let mut got: Vec<(i32, i32)> = rx.iter().collect();
        got.sort_unstable();
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert!(got.iter().all(|g| g.1 == 19), "{:?}", &got[..3]);
    }

    #[test]
    fn a_panicking_job_does_not_stop_the_pool() {
        let f = Background::new("test-panic", 1).unwrap();
        let (tx, rx) = channel();
        f.submit(|| panic!("a job panics"));
        f.submit(move || tx.send(42).unwrap());
        // A nice-19 thread gets ~0.15 % of a core against ten busy nice-0 processes (load 10), and
        // unwinding a panic in a debug build costs real CPU: the bound only catches a dead pool.
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(300)), Ok(42));
    }
}
