//! Continuous batching's front door: at most `max_num_seqs` sequences run at once, at most
//! `max_waiting` more wait for a slot (in arrival order), and anything beyond is refused with 429.
//! The decision to refuse is made when the request arrives, before any response byte is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Running slots and the waiting queue.
pub struct Admission {
    slots: Option<Arc<Semaphore>>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
}

/// A place in the server: a slot already, or a place in the queue.
pub enum Ticket {
    Unlimited,
    Running(OwnedSemaphorePermit),
    Waiting {
        slots: Arc<Semaphore>,
        waiting: Arc<AtomicUsize>,
    },
}

/// Holds a running slot (if slots are limited) until dropped.
pub struct Slot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Admission {
    /// `max_num_seqs` 0 means no limit.
    pub fn new(max_num_seqs: usize, max_waiting: usize) -> Self {
        Self {
            slots: (max_num_seqs > 0).then(|| Arc::new(Semaphore::new(max_num_seqs))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
        }
    }

    /// A slot now, a place in the queue, or `None` when the queue is full.
    pub fn reserve(&self) -> Option<Ticket> {
        let Some(slots) = &self.slots else {
            return Some(Ticket::Unlimited);
        };
        // A free slot is only taken when nobody is queued, so arrivals keep their order.
        if self.waiting.load(Ordering::Acquire) == 0
            && let Ok(p) = slots.clone().try_acquire_owned()
        {
            return Some(Ticket::Running(p));
        }
        let mut w = self.waiting.load(Ordering::Acquire);
        loop {
            if w >= self.max_waiting {
                return None;
            }
            match self
                .waiting
                .compare_exchange(w, w + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Some(Ticket::Waiting {
                        slots: slots.clone(),
                        waiting: self.waiting.clone(),
                    });
                }
                Err(now) => w = now,
            }
        }
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

impl Ticket {
    /// Whether the request has to wait for a slot.
    pub fn is_waiting(&self) -> bool {
        matches!(self, Ticket::Waiting { .. })
    }

    /// Waits for a slot (tokio's semaphore is fair: first come, first served).
    pub async fn wait(self) -> Slot {
        match self {
            Ticket::Unlimited => Slot(None),
            Ticket::Running(p) => Slot(Some(p)),
            Ticket::Waiting { slots, waiting } => {
                // Leaves the queue even if the client goes away while waiting.
                struct Leave(Arc<AtomicUsize>);
                impl Drop for Leave {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                let _leave = Leave(waiting);
                let p = slots
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                Slot(Some(p))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cap_plus_first_waits_and_the_queue_overflows_to_none() {
        let a = Admission::new(2, 1);
        let t1 = a.reserve().unwrap();
        let t2 = a.reserve().unwrap();
        assert!(!t1.is_waiting() && !t2.is_waiting());
        let t3 = a.reserve().unwrap();
        assert!(t3.is_waiting(), "the (cap+1)-th request waits");
        assert!(a.reserve().is_none(), "the queue is full");
        let s1 = t1.wait().await;
        let waiter = tokio::spawn(t3.wait());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(s1);
        let _s3 = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("a freed slot goes to the waiter")
            .unwrap();
        assert_eq!(a.waiting(), 0);
        let unlimited = Admission::new(0, 0);
        assert!(matches!(unlimited.reserve(), Some(Ticket::Unlimited)));
    }
}
