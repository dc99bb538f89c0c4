//! Exactly-once processing through the Processor, under duplicates, failures and faults.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stripe_webhooks::{
    async_trait, testing, Claim, ClaimToken, Event, EventHandler, EventId, EventRecord, EventType,
    HandlerError, IdempotencyStore, MemoryStore, OutcomeKind, Processor, Router, SigningSecret,
    StoreError, Verifier,
};

const SECRET: &str = common::SECRET;

fn verifier() -> Verifier {
    Verifier::new(SigningSecret::new(SECRET).unwrap())
}

fn signed(id: &str, ty: &str) -> (String, String) {
    let body = testing::event_for_type(id, ty).unwrap();
    let header = testing::sign(body.as_bytes(), SECRET, testing::now());
    (header, body)
}

/// Counts executions; can be told to sleep, fail or panic.
#[derive(Default)]
struct Counting {
    runs: AtomicUsize,
    sleep: Option<Duration>,
    fail_first: AtomicUsize,
    panic_first: AtomicUsize,
}

#[async_trait]
impl EventHandler for Counting {
    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if let Some(d) = self.sleep {
            tokio::time::sleep(d).await;
        }
        if self.panic_first.load(Ordering::SeqCst) > 0 {
            self.panic_first.fetch_sub(1, Ordering::SeqCst);
            panic!("handler exploded");
        }
        if self.fail_first.load(Ordering::SeqCst) > 0 {
            self.fail_first.fetch_sub(1, Ordering::SeqCst);
            return Err(HandlerError::new("downstream unavailable"));
        }
        Ok(())
    }
}

/// The classic bug, on purpose: check, await, then insert.
#[derive(Default)]
struct NaiveStore {
    seen: Mutex<HashSet<EventId>>,
}

#[async_trait]
impl IdempotencyStore for NaiveStore {
    async fn claim(&self, id: &EventId, _t: &str, _l: Duration) -> Result<Claim, StoreError> {
        let seen = self.seen.lock().unwrap().contains(id);
        if seen {
            return Ok(Claim::Completed);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.seen.lock().unwrap().insert(id.clone());
        Ok(Claim::Acquired(ClaimToken::new(id.clone(), 1, 1)))
    }
    async fn complete(&self, _t: &ClaimToken) -> Result<(), StoreError> {
        Ok(())
    }
    async fn release(&self, _t: &ClaimToken, _r: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn extend(&self, _t: &ClaimToken, _l: Duration) -> Result<(), StoreError> {
        Ok(())
    }
    async fn record(&self, _id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        Ok(None)
    }
    async fn failed_events(&self, _l: usize) -> Result<Vec<EventRecord>, StoreError> {
        Ok(vec![])
    }
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// Sends `events` × `dups` deliveries, all at once, and returns the statuses.
async fn storm(p: Arc<Processor>, events: usize, dups: usize) -> Vec<u16> {
    let deliveries: Vec<(String, String)> = (0..events)
        .map(|i| signed(&format!("evt_storm_{i}"), "invoice.paid"))
        .collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(events * dups));
    let mut tasks = Vec::new();
    for _ in 0..dups {
        for (h, b) in &deliveries {
            let (p, h, b, barrier) = (p.clone(), h.clone(), b.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                p.process(Some(&h), b.as_bytes()).await.status()
            }));
        }
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn negative_control_naive_store_runs_duplicates() {
    let handler = Arc::new(Counting {
        sleep: Some(Duration::from_millis(5)),
        ..Default::default()
    });
    let p = Arc::new(Processor::new(
        verifier(),
        NaiveStore::default(),
        handler.clone(),
    ));
    storm(p, 20, 10).await;
    let runs = handler.runs.load(Ordering::SeqCst);
    assert!(
        runs > 20,
        "the harness must see the check-then-insert race; runs = {runs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_events_fifty_duplicates_run_exactly_once() {
    let handler = Arc::new(Counting {
        sleep: Some(Duration::from_millis(5)),
        ..Default::default()
    });
    let p = Arc::new(Processor::new(
        verifier(),
        MemoryStore::new(),
        handler.clone(),
    ));
    let statuses = storm(p.clone(), 100, 50).await;
    assert_eq!(handler.runs.load(Ordering::SeqCst), 100);
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&409), "concurrent duplicates see 409");
    // Everything again: all 200, no new executions.
    let again = storm(p, 100, 1).await;
    assert!(again.iter().all(|s| *s == 200));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_duplicate_gets_409_with_retry_after() {
    let handler = Arc::new(Counting {
        sleep: Some(Duration::from_millis(300)),
        ..Default::default()
    });
    let p = Arc::new(Processor::new(
        verifier(),
        MemoryStore::new(),
        handler.clone(),
    ));
    let (h, b) = signed("evt_inflight", "invoice.paid");
    let first = {
        let (p, h, b) = (p.clone(), h.clone(), b.clone());
        tokio::spawn(async move { p.process(Some(&h), b.as_bytes()).await.status() })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let dup = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(dup.status(), 409);
    assert!(matches!(dup.kind(), OutcomeKind::InProgress { .. }));
    assert!(dup.retry_after_secs().unwrap() >= 1);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn handler_error_is_500_then_retried_once() {
    let handler = Arc::new(Counting {
        fail_first: AtomicUsize::new(1),
        ..Default::default()
    });
    let store = Arc::new(MemoryStore::new());
    let p = Processor::new(verifier(), store.clone(), handler.clone());
    let (h, b) = signed("evt_fail", "invoice.paid");
    let first = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(first.status(), 500);
    assert_eq!(first.attempt(), Some(1));
    let rec = store
        .record(&EventId::new("evt_fail"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.attempts, 1);
    assert!(rec.last_error.unwrap().contains("downstream unavailable"));
    let second = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.attempt(), Some(2));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
    let third = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(third.status(), 200);
    assert_eq!(third.kind().name(), "duplicate");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn handler_panic_is_500_and_processor_keeps_serving() {
    let handler = Arc::new(Counting {
        panic_first: AtomicUsize::new(1),
        ..Default::default()
    });
    let store = Arc::new(MemoryStore::new());
    let p = Processor::new(verifier(), store.clone(), handler.clone());
    let (h, b) = signed("evt_panic", "invoice.paid");
    let first = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(first.status(), 500);
    match first.kind() {
        OutcomeKind::HandlerFailed(HandlerError::Panicked(msg)) => {
            assert!(msg.contains("exploded"))
        }
        other => panic!("{other:?}"),
    }
    let rec = store
        .record(&EventId::new("evt_panic"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.status,
        stripe_webhooks::RecordStatus::Failed,
        "the claim is not left held"
    );
    assert_eq!(p.process(Some(&h), b.as_bytes()).await.status(), 200);
    let (h2, b2) = signed("evt_after_panic", "invoice.paid");
    assert_eq!(p.process(Some(&h2), b2.as_bytes()).await.status(), 200);
}

#[tokio::test]
async fn handler_deadline_is_500() {
    let handler = Arc::new(Counting {
        sleep: Some(Duration::from_secs(5)),
        ..Default::default()
    });
    let p = Processor::new(verifier(), MemoryStore::new(), handler)
        .with_handler_deadline(Some(Duration::from_millis(100)));
    assert!(p.lease() >= Duration::from_millis(200));
    let (h, b) = signed("evt_slow", "invoice.paid");
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(o.status(), 500);
    assert!(matches!(
        o.kind(),
        OutcomeKind::HandlerFailed(HandlerError::DeadlineExceeded(_))
    ));
}

#[tokio::test]
async fn crash_after_claim_is_409_until_lease_then_taken_over() {
    let handler = Arc::new(Counting::default());
    let store = Arc::new(MemoryStore::new());
    let p = Processor::new(verifier(), store.clone(), handler.clone())
        .with_handler_deadline(Some(Duration::from_millis(100)))
        .with_lease(Duration::from_millis(400));
    let id = EventId::new("evt_crash");
    // A replica claims the event and dies: its token is simply dropped.
    let claim = store
        .claim(&id, "invoice.paid", Duration::from_millis(400))
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Acquired(_)));
    drop(claim);
    let (h, b) = signed("evt_crash", "invoice.paid");
    assert_eq!(p.process(Some(&h), b.as_bytes()).await.status(), 409);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(o.status(), 200);
    assert_eq!(o.attempt(), Some(2));
    assert_eq!(store.record(&id).await.unwrap().unwrap().attempts, 2);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
}

/// A store that is down for claims (or only for completions).
struct Broken {
    inner: MemoryStore,
    claims_fail: bool,
}

#[async_trait]
impl IdempotencyStore for Broken {
    async fn claim(&self, id: &EventId, t: &str, l: Duration) -> Result<Claim, StoreError> {
        if self.claims_fail {
            return Err(StoreError::unavailable("connection refused"));
        }
        self.inner.claim(id, t, l).await
    }
    async fn complete(&self, _t: &ClaimToken) -> Result<(), StoreError> {
        Err(StoreError::unavailable("connection reset"))
    }
    async fn release(&self, t: &ClaimToken, r: &str) -> Result<(), StoreError> {
        self.inner.release(t, r).await
    }
    async fn extend(&self, t: &ClaimToken, l: Duration) -> Result<(), StoreError> {
        self.inner.extend(t, l).await
    }
    async fn record(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        self.inner.record(id).await
    }
    async fn failed_events(&self, l: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.inner.failed_events(l).await
    }
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.inner.purge_expired().await
    }
}

#[tokio::test]
async fn store_down_is_503_and_handler_not_run() {
    let handler = Arc::new(Counting::default());
    let p = Processor::new(
        verifier(),
        Broken {
            inner: MemoryStore::new(),
            claims_fail: true,
        },
        handler.clone(),
    );
    let (h, b) = signed("evt_down", "invoice.paid");
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(o.status(), 503);
    assert!(matches!(o.kind(), OutcomeKind::StoreUnavailable(_)));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn completion_failure_is_200_completion_not_recorded() {
    let handler = Arc::new(Counting::default());
    let p = Processor::new(
        verifier(),
        Broken {
            inner: MemoryStore::new(),
            claims_fail: false,
        },
        handler.clone(),
    );
    let (h, b) = signed("evt_nocomplete", "invoice.paid");
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(o.status(), 200);
    assert!(matches!(o.kind(), OutcomeKind::CompletionNotRecorded(_)));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn store_that_hangs_is_503_within_timeout() {
    struct Hanging;
    #[async_trait]
    impl IdempotencyStore for Hanging {
        async fn claim(&self, _: &EventId, _: &str, _: Duration) -> Result<Claim, StoreError> {
            std::future::pending().await
        }
        async fn complete(&self, _: &ClaimToken) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn release(&self, _: &ClaimToken, _: &str) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn extend(&self, _: &ClaimToken, _: Duration) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn record(&self, _: &EventId) -> Result<Option<EventRecord>, StoreError> {
            Ok(None)
        }
        async fn failed_events(&self, _: usize) -> Result<Vec<EventRecord>, StoreError> {
            Ok(vec![])
        }
        async fn purge_expired(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
    }
    let handler = Arc::new(Counting::default());
    let p = Processor::new(verifier(), Hanging, handler.clone())
        .with_store_timeout(Duration::from_millis(100));
    let (h, b) = signed("evt_hang", "invoice.paid");
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(o.status(), 503);
    assert!(matches!(
        o.kind(),
        OutcomeKind::StoreUnavailable(StoreError::Timeout(_))
    ));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn rejections_map_to_400_and_413() {
    let handler = Arc::new(Counting::default());
    let p = Processor::new(verifier(), MemoryStore::new(), handler.clone()).with_max_body(4096);
    let (h, b) = signed("evt_r", "customer.created");
    assert_eq!(p.process(None, b.as_bytes()).await.status(), 400);
    let bad = testing::sign(b.as_bytes(), "whsec_wrong", testing::now());
    let o = p.process(Some(&bad), b.as_bytes()).await;
    assert_eq!(o.status(), 400);
    assert_eq!(o.kind().name(), "bad_signature");
    let stale = testing::sign(b.as_bytes(), SECRET, testing::now() - 3600);
    assert_eq!(p.process(Some(&stale), b.as_bytes()).await.status(), 400);
    let not_event = br#"{"hello":"world"}"#;
    let h2 = testing::sign(not_event, SECRET, testing::now());
    let o = p.process(Some(&h2), not_event).await;
    assert_eq!(o.status(), 400);
    assert_eq!(o.kind().name(), "not_an_event");
    let big = vec![b' '; 4097];
    let o = p.process(Some(&h), &big).await;
    assert_eq!(o.status(), 413);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 0);
    // The valid one still works.
    assert_eq!(p.process(Some(&h), b.as_bytes()).await.status(), 200);
}

#[tokio::test]
async fn router_ignores_types_without_route_and_does_not_claim() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    let router = Router::new().on(EventType::InvoicePaid, move |_e| {
        let h2 = h2.clone();
        Box::pin(async move {
            h2.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    });
    let store = Arc::new(MemoryStore::new());
    let p = Processor::new(verifier(), store.clone(), router);
    let (h, b) = signed("evt_ign", "customer.created");
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(o.status(), 200);
    assert_eq!(o.kind().name(), "ignored");
    assert!(store.is_empty(), "ignored events are not claimed");
    let (h, b) = signed("evt_route", "invoice.paid");
    assert_eq!(
        p.process(Some(&h), b.as_bytes()).await.kind().name(),
        "processed"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn outcome_carries_log_fields_without_secrets() {
    let v = Verifier::new(SigningSecret::new(SECRET).unwrap().with_label("current"));
    let p = Processor::new(v, MemoryStore::new(), Arc::new(Counting::default()));
    let (h, b) = signed("evt_log", "invoice.paid");
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(o.event_id().unwrap().as_str(), "evt_log");
    assert_eq!(o.event_type(), Some(&EventType::InvoicePaid));
    assert_eq!(o.attempt(), Some(1));
    assert_eq!(o.secret_label(), Some("current"));
    let dbg = format!("{o:?} {p:?}");
    assert!(!dbg.contains(SECRET), "{dbg}");
    assert!(!dbg.contains("in_1"), "no body in the outcome: {dbg}");
}

#[tokio::test]
async fn verified_thin_event_is_acknowledged_not_rejected() {
    let handler = Arc::new(Counting::default());
    let p = Processor::new(verifier(), MemoryStore::new(), handler.clone());
    let thin = br#"{"id":"evt_thin","object":"v2.core.event","type":"v1.billing.meter.no_meter_found","livemode":false,"created":"2026-01-01T00:00:00Z"}"#;
    let h = testing::sign(thin, SECRET, testing::now());
    let o = p.process(Some(&h), thin).await;
    assert_eq!(o.status(), 200);
    assert_eq!(o.kind().name(), "ignored");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 0);
}

/// Sleeps on its first run only.
#[derive(Default)]
struct SlowFirst {
    runs: AtomicUsize,
    first_sleep: Duration,
}

#[async_trait]
impl EventHandler for SlowFirst {
    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        if self.runs.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(self.first_sleep).await;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_handler_renews_its_lease_and_is_never_taken_over() {
    // The handler runs four times as long as the lease. Without renewal, the duplicates
    // sent after the lease would take the event over and run the handler again.
    let handler = Arc::new(SlowFirst {
        first_sleep: Duration::from_millis(1200),
        ..Default::default()
    });
    let store = Arc::new(MemoryStore::new());
    let p = Arc::new(
        Processor::new(verifier(), store.clone(), handler.clone())
            .with_handler_deadline(None)
            .with_lease(Duration::from_millis(300)),
    );
    let (h, b) = signed("evt_renewed", "invoice.paid");
    let first = {
        let (p, h, b) = (p.clone(), h.clone(), b.clone());
        tokio::spawn(async move { p.process(Some(&h), b.as_bytes()).await.status() })
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let dup = p.process(Some(&h), b.as_bytes()).await;
        assert_eq!(dup.status(), 409, "{:?}", dup.kind());
    }
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    let record = store
        .record(&EventId::new("evt_renewed"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.attempts, 1);
}

#[tokio::test]
async fn dropped_delivery_releases_its_claim_for_the_retry() {
    // The client goes away while the handler runs: the request future is dropped. The
    // claim is released at once, so Stripe's retry runs the handler instead of getting
    // 409 for the rest of the (here 60 s) lease.
    let handler = Arc::new(SlowFirst {
        first_sleep: Duration::from_secs(30),
        ..Default::default()
    });
    let store = Arc::new(MemoryStore::new());
    let p = Processor::new(verifier(), store.clone(), handler.clone())
        .with_lease(Duration::from_secs(60));
    let (h, b) = signed("evt_dropped", "invoice.paid");
    let cut = tokio::time::timeout(
        Duration::from_millis(100),
        p.process(Some(&h), b.as_bytes()),
    );
    assert!(
        cut.await.is_err(),
        "the first delivery should still be running"
    );
    // The release runs on a spawned task; give it a moment.
    let mut again = p.process(Some(&h), b.as_bytes()).await;
    for _ in 0..50 {
        if again.status() != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        again = p.process(Some(&h), b.as_bytes()).await;
    }
    assert_eq!(again.status(), 200, "{:?}", again.kind());
    assert_eq!(again.attempt(), Some(2));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
    let record = store
        .record(&EventId::new("evt_dropped"))
        .await
        .unwrap()
        .unwrap();
    assert!(record.last_error.unwrap().contains("cancelled"));
}
