//! The crate's core without an async runtime (`default-features = false`): the tests
//! below run a [`Processor`](stripe_webhooks::Processor) on [`block_on`], an executor of
//! a dozen lines, as an application on smol, async-std or its own loop would. Without
//! the `tokio` feature there are no handler deadlines, store timeouts or lease renewals
//! (the crate's feature table says so); verification, parsing, claims and their
//! settlement are the same.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

/// Runs `future` to its end on this thread: polled whenever its waker unparks the
/// thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    use stripe_webhooks::{
        EventRouter, EventType, HandlerError, MemoryStore, Processor, SigningSecret, Verifier,
    };

    use super::block_on;

    const SECRET: &str = "whsec_no_runtime";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    }

    /// An `invoice.paid` event `id`, as Stripe sends it, and its `Stripe-Signature`.
    fn signed(id: &str) -> (String, String) {
        let t = now();
        let body = format!(
            r#"{{"id":"{id}","object":"event","api_version":"2026-10-28.endive","created":{t},"livemode":false,"pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"data":{{"object":{{"id":"in_1","object":"invoice","status":"paid"}}}},"type":"invoice.paid"}}"#
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        let header = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
        (header, body)
    }

    /// A processor on a memory store whose `invoice.paid` handler counts its runs and
    /// fails while `failing` is above zero (one failure per run).
    fn processor(runs: &Arc<AtomicUsize>, failing: &Arc<AtomicUsize>) -> Processor {
        let (runs, failing) = (Arc::clone(runs), Arc::clone(failing));
        Processor::new(
            Verifier::new(SigningSecret::new(SECRET).unwrap()),
            MemoryStore::new(),
            EventRouter::new().on(EventType::InvoicePaid, move |_event| {
                runs.fetch_add(1, Ordering::SeqCst);
                let fail = failing
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                Box::pin(async move {
                    if fail {
                        Err(HandlerError::new("downstream down"))
                    } else {
                        Ok(())
                    }
                })
            }),
        )
    }

    #[test]
    fn an_event_runs_once_and_its_redelivery_is_a_duplicate() {
        let (runs, failing) = (Arc::default(), Arc::default());
        let p = processor(&runs, &failing);
        let (header, body) = signed("evt_no_runtime_1");
        let first = block_on(p.process(Some(&header), body.as_bytes()));
        assert_eq!((first.status(), first.kind().name()), (200, "processed"));
        let again = block_on(p.process(Some(&header), body.as_bytes()));
        assert_eq!((again.status(), again.kind().name()), (200, "duplicate"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failed_run_is_released_and_the_retry_runs_it() {
        let (runs, failing) = (Arc::default(), Arc::new(AtomicUsize::new(1)));
        let p = processor(&runs, &failing);
        let (header, body) = signed("evt_no_runtime_2");
        let failed = block_on(p.process(Some(&header), body.as_bytes()));
        assert_eq!(failed.status(), 500, "{failed:?}");
        let retried = block_on(p.process(Some(&header), body.as_bytes()));
        assert_eq!(
            (retried.status(), retried.kind().name()),
            (200, "processed")
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn forged_and_unreadable_requests_are_refused_unrun() {
        let (runs, failing) = (Arc::default(), Arc::default());
        let p = processor(&runs, &failing);
        let (header, body) = signed("evt_no_runtime_3");
        let forged = block_on(p.process(Some(&header), body.replace("paid", "void").as_bytes()));
        assert_eq!(
            (forged.status(), forged.kind().name()),
            (400, "bad_signature")
        );
        let unsigned = block_on(p.process(None, body.as_bytes()));
        assert_eq!(unsigned.status(), 400, "{unsigned:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }
}
