//! The run's cut signal: it ends every request in flight (SIGINT, SIGTERM, a failed writer), and
//! each request checks it at every wake-up of its task, once per streamed event.
//!
//! Why not a `watch` channel: waiting on one polls its `Notified` at every wake-up, which takes the
//! notifier's lock and reads the receiver's and the waiter's state, lines of memory that are cold
//! when one of a thousand streams wakes. Here a wake-up reads one flag shared by all (warm) and the
//! waiting future's own first line; the notifier is registered with once per request, and again
//! only if the task's waker changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

/// Set once, when the run is cut; never reset.
#[derive(Debug, Default)]
pub struct CutSignal {
    cut: AtomicBool,
    notify: Notify,
}

impl CutSignal {
    /// Cuts the run: every [`CutSignal::wait`], past or future, resolves.
    pub fn cut(&self) {
        // The flag before the wake-ups: a waiter woken, or one registering after them, sees it.
        self.cut.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Resolves once the run is cut.
    pub fn wait(&self) -> CutWait<'_> {
        CutWait {
            signal: self,
            // Created now, so that a cut from here on is seen even before the first poll.
            notified: Box::pin(self.notify.notified()),
            registered: None,
        }
    }
}

/// The future of [`CutSignal::wait`]. Boxing the `Notified` keeps what a wake-up reads (the signal
/// and the registered waker) together in a few words.
pub struct CutWait<'a> {
    signal: &'a CutSignal,
    notified: Pin<Box<tokio::sync::futures::Notified<'a>>>,
    /// The waker the notifier holds for this future.
    registered: Option<Waker>,
}

impl Future for CutWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.signal.is_cut() {
            return Poll::Ready(());
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        if this.notified.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.registered = Some(cx.waker().clone());
        // A cut between the first check and the registration has woken no one for this future.
        if this.signal.is_cut() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A wait resolves when the run is cut: one already pending (woken), one created before the
    /// cut and first polled after it, and one created after it.
    #[tokio::test]
    async fn every_wait_ends_at_the_cut() {
        let signal = Arc::new(CutSignal::default());
        let pending = tokio::spawn({
            let s = signal.clone();
            async move { s.wait().await }
        });
        let early = signal.wait();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!pending.is_finished(), "no cut yet");
        signal.cut();
        tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .expect("the pending wait ends at the cut")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), early)
            .await
            .expect("a wait made before the cut ends");
        tokio::time::timeout(Duration::from_secs(10), signal.wait())
            .await
            .expect("a wait made after the cut ends at once");
    }

    /// Polled again with the same waker, a wait does not register again; polled with another
    /// waker, it moves to that one, which the cut then wakes.
    #[test]
    fn a_new_waker_is_registered_and_woken() {
        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let (a, b) = (
            Arc::new(Flag(AtomicBool::new(false))),
            Arc::new(Flag(AtomicBool::new(false))),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let signal = CutSignal::default();
        let mut wait = signal.wait();
        let mut w = Pin::new(&mut wait);
        assert!(w.as_mut().poll(&mut Context::from_waker(&wa)).is_pending());
        assert!(w.as_mut().poll(&mut Context::from_waker(&wa)).is_pending());
        assert!(w.as_mut().poll(&mut Context::from_waker(&wb)).is_pending());
        signal.cut();
        assert!(b.0.load(Ordering::SeqCst), "the last waker is woken");
        assert!(w.as_mut().poll(&mut Context::from_waker(&wa)).is_ready());
    }
}
