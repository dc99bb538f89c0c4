//! The deliveries a processor's framework routes run on tasks of their own, and the
//! tasks that settle the claim of a delivery whose future was dropped, counted so that a
//! service shutting down can wait for them ([`Processor::drain`](super::Processor::drain)).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// The count of deliveries running detached from their requests, and of dropped
/// deliveries' settling tasks.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    running: AtomicUsize,
    /// Deliveries dropped before they finished (their runtime ended under them).
    cut: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One delivery counted in [`InFlight`] until it is dropped; dropped before
/// [`finished`](Running::finished), it counts as cut.
#[derive(Debug)]
pub(crate) struct Running {
    in_flight: Arc<InFlight>,
    finished: bool,
}

impl Running {
    /// The delivery ran to its end.
    pub(crate) fn finished(mut self) {
        self.finished = true;
    }
}

impl InFlight {
    /// Counts a delivery until the returned guard is dropped.
    pub(crate) fn start(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, SeqCst);
        Running {
            in_flight: Arc::clone(self),
            finished: false,
        }
    }

    /// How many are running.
    pub(crate) fn running(&self) -> usize {
        self.running.load(SeqCst)
    }

    /// How many were cut before they finished, since the last drain.
    #[cfg(test)]
    fn cut(&self) -> usize {
        self.cut.load(SeqCst)
    }

    /// Waits until none runs, at most `timeout`; whether none runs and none was cut
    /// since the last call, which takes the cut count back to zero.
    pub(crate) async fn drain(&self, timeout: Duration) -> bool {
        let idle = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                // Registered before the count is read: a delivery ending in between still
                // wakes this wait.
                notified.as_mut().enable();
                if self.running() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let drained = tokio::time::timeout(timeout, idle).await.is_ok();
        let cut = self.cut.swap(0, SeqCst);
        drained && cut == 0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            self.in_flight.cut.fetch_add(1, SeqCst);
        }
        if self.in_flight.running.fetch_sub(1, SeqCst) == 1 {
            self.in_flight.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_the_running_and_reports_the_cut() {
        let in_flight = Arc::new(InFlight::default());
        assert!(in_flight.drain(Duration::from_millis(1)).await);
        let running = in_flight.start();
        assert!(!in_flight.drain(Duration::from_millis(10)).await);
        let waiter = {
            let in_flight = Arc::clone(&in_flight);
            tokio::spawn(async move { in_flight.drain(Duration::from_secs(30)).await })
        };
        running.finished();
        assert!(waiter.await.unwrap(), "finished: drained");
        // A delivery its runtime dropped before it finished is reported.
        drop(in_flight.start());
        assert_eq!((in_flight.running(), in_flight.cut()), (0, 1));
        assert!(!in_flight.drain(Duration::from_secs(1)).await);
        // Reported once: a server started again in the same process starts clean.
        assert_eq!(in_flight.cut(), 0);
        assert!(in_flight.drain(Duration::from_secs(1)).await);
    }
}
