//! The deliveries a processor's framework routes run on tasks of their own, counted so
//! that a service shutting down can wait for them ([`Processor::drain`](super::Processor::drain)).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
#[cfg(any(feature = "axum", feature = "actix-web"))]
use std::sync::Arc;
use std::time::Duration;

/// The count of deliveries running detached from their requests.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One delivery counted in [`InFlight`] until it is dropped.
#[cfg(any(feature = "axum", feature = "actix-web"))]
#[derive(Debug)]
pub(crate) struct Running(Arc<InFlight>);

impl InFlight {
    /// Counts a delivery until the returned guard is dropped.
    #[cfg(any(feature = "axum", feature = "actix-web"))]
    pub(crate) fn start(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, SeqCst);
        Running(Arc::clone(self))
    }

    /// How many are running.
    pub(crate) fn running(&self) -> usize {
        self.running.load(SeqCst)
    }

    /// Waits until none runs, at most `timeout`; whether none runs.
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
        tokio::time::timeout(timeout, idle).await.is_ok()
    }
}

#[cfg(any(feature = "axum", feature = "actix-web"))]
impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
