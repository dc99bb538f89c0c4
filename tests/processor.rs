//! Exactly-once processing through the Processor, under duplicates, failures and faults.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stripe_webhooks::{
    async_trait, testing, Claim, ClaimToken, Event, EventHandler, EventId, EventRouter, EventType,
    HandlerError, IdempotencyStore, ManualClock, MemoryStore, ObjectLock, OrderingStore,
    OutcomeKind, ParseError, Processor, RecordStatus, SignatureError, SigningSecret, StoreAdmin,
    StoreError, TiePolicy, Verifier, Watermark,
};
use tokio::sync::Notify;

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
            // Quoting a client secret, which the store keeps hidden.
            return Err(HandlerError::new(
                "downstream unavailable for pi_1_secret_abc",
            ));
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
    async fn claim(&self, id: &EventId, _t: &EventType, _l: Duration) -> Result<Claim, StoreError> {
        let seen = self.seen.lock().unwrap().contains(id);
        if seen {
            return Ok(Claim::Completed);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.seen.lock().unwrap().insert(id.clone());
        Ok(Claim::Acquired(ClaimToken::new(id.clone(), 1)))
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

/// Signals when it starts and holds until told to finish.
#[derive(Default)]
struct Gate {
    runs: AtomicUsize,
    started: Notify,
    finish: Notify,
}

#[async_trait]
impl EventHandler for Gate {
    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        self.finish.notified().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_duplicate_gets_409_with_retry_after() {
    let handler = Arc::new(Gate::default());
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
    handler.started.notified().await;
    let dup = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(dup.status(), 409);
    assert!(matches!(dup.kind(), OutcomeKind::InProgress { .. }));
    assert!(dup.retry_after_secs().unwrap() >= 1);
    handler.finish.notify_one();
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
    // The outcome keeps the handler's error; its `Debug` hides the client secret it quotes.
    let shown = format!("{first:?}");
    assert!(
        shown.contains("downstream unavailable for <redacted>"),
        "{shown}"
    );
    assert!(!shown.contains("pi_1_secret_abc"), "{shown}");
    let rec = store
        .record(&EventId::new("evt_fail"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.attempts, 1);
    assert_eq!(
        rec.last_error.as_deref(),
        Some("handler failed: downstream unavailable for <redacted>")
    );
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

/// A handler whose own `handles_event` check panics: the delivery is a 500 (Stripe
/// delivers it again), the event is recorded as failed with the panic's message (before,
/// nothing was, and it left no trace once Stripe stopped retrying), each delivery
/// counting an attempt, and the panic does not escape `process` (which would end a
/// reconciler's pass on that event every time).
#[tokio::test]
async fn a_panicking_handles_check_is_a_500_recorded_as_failed() {
    struct Picky;
    #[async_trait]
    impl EventHandler for Picky {
        async fn handle(&self, _: &Event) -> Result<(), HandlerError> {
            Ok(())
        }
        fn handles_event(&self, event: &Event) -> bool {
            assert!(event.id().as_str() != "evt_picky", "unknown plan");
            true
        }
    }
    let store = Arc::new(MemoryStore::new());
    let p = Processor::new(verifier(), store.clone(), Picky);
    let (h, b) = signed("evt_picky", "invoice.paid");
    for attempt in 1..=2 {
        let o = p.process(Some(&h), b.as_bytes()).await;
        common::assert_check_panic_recorded(&o, &*store, "evt_picky", attempt, "unknown plan")
            .await;
        assert!(format!("{o:?}").contains("handles_event"), "{o:?}");
    }
    let (h2, b2) = signed("evt_fine", "invoice.paid");
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
    let clock = ManualClock::new(1_700_000_000_000);
    let store = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let p = Processor::new(verifier(), store.clone(), handler.clone());
    let id = EventId::new("evt_crash");
    // A replica claims the event and dies: its token is simply dropped.
    let claim = store
        .claim(&id, &EventType::InvoicePaid, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Acquired(_)));
    drop(claim);
    let (h, b) = signed("evt_crash", "invoice.paid");
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::InProgress { .. }), "{o:?}");
    clock.advance(Duration::from_secs(31));
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
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
    async fn claim(&self, id: &EventId, t: &EventType, l: Duration) -> Result<Claim, StoreError> {
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
        async fn claim(
            &self,
            _: &EventId,
            _: &EventType,
            _: Duration,
        ) -> Result<Claim, StoreError> {
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

/// A handler deadline of zero is taken as the floor (10 ms): as given, every handler that
/// awaits anything would be cut, and its event fail at every retry.
#[tokio::test]
async fn a_zero_handler_deadline_is_raised_to_the_floor() {
    let router = stripe_webhooks::EventRouter::new().fallback(|_e| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        })
    });
    let p = Processor::new(verifier(), MemoryStore::new(), router)
        .with_handler_deadline(Some(Duration::ZERO));
    let (h, b) = signed("evt_zero_deadline", "invoice.paid");
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
}

/// A store timeout of zero is taken as the floor (10 ms): as given, every call to a store
/// that does not answer at its first poll would time out, and every delivery be 503.
#[tokio::test]
async fn a_zero_store_timeout_is_raised_to_the_floor() {
    /// A `MemoryStore` that answers after a millisecond, as a real store does.
    struct Yielding(MemoryStore);
    #[async_trait]
    impl IdempotencyStore for Yielding {
        async fn claim(
            &self,
            id: &EventId,
            event_type: &EventType,
            lease: Duration,
        ) -> Result<Claim, StoreError> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.0.claim(id, event_type, lease).await
        }
        async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.0.complete(token).await
        }
        async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError> {
            self.0.release(token, reason).await
        }
        async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
            self.0.extend(token, lease).await
        }
    }
    let handler = Arc::new(Counting::default());
    let p = Processor::new(verifier(), Yielding(MemoryStore::new()), handler.clone())
        .with_store_timeout(Duration::ZERO);
    let (h, b) = signed("evt_zero_timeout", "invoice.paid");
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!((o.status(), o.kind().name()), (200, "processed"));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
}

/// The body timeout is at least 100 ms (a zero one would answer every delivery 408) and
/// at most an hour.
#[test]
fn the_body_timeout_is_kept_between_100_ms_and_an_hour() {
    let p = || {
        Processor::new(
            verifier(),
            MemoryStore::new(),
            Arc::new(Counting::default()),
        )
    };
    let zero = p().with_body_timeout(Duration::ZERO);
    assert_eq!(zero.body_timeout(), Duration::from_millis(100));
    let forever = p().with_body_timeout(Duration::MAX);
    assert_eq!(forever.body_timeout(), Duration::from_secs(3600));
    let five = p().with_body_timeout(Duration::from_secs(5));
    assert_eq!(five.body_timeout(), Duration::from_secs(5));
}

#[tokio::test]
async fn each_rejection_has_its_own_outcome_and_status() {
    let handler = Arc::new(Counting::default());
    let p = Processor::new(verifier(), MemoryStore::new(), handler.clone()).with_max_body(4096);
    let (h, b) = signed("evt_r", "customer.created");

    let o = p.process(None, b.as_bytes()).await;
    assert!(
        matches!(
            o.kind(),
            OutcomeKind::BadSignature(SignatureError::MissingHeader)
        ),
        "{o:?}"
    );
    assert_eq!((o.status(), o.kind().name()), (400, "bad_signature"));

    let wrong = testing::sign(b.as_bytes(), "whsec_wrong", testing::now());
    let o = p.process(Some(&wrong), b.as_bytes()).await;
    assert!(
        matches!(
            o.kind(),
            OutcomeKind::BadSignature(SignatureError::Mismatch { .. })
        ),
        "{o:?}"
    );
    assert_eq!(o.status(), 400);

    let stale = testing::sign(b.as_bytes(), SECRET, testing::now() - 3600);
    let o = p.process(Some(&stale), b.as_bytes()).await;
    assert!(
        matches!(
            o.kind(),
            OutcomeKind::BadSignature(SignatureError::OutsideTolerance { .. })
        ),
        "{o:?}"
    );
    assert_eq!(o.status(), 400);

    let not_event = br#"{"hello":"world"}"#;
    let h2 = testing::sign(not_event, SECRET, testing::now());
    let o = p.process(Some(&h2), not_event).await;
    assert!(
        matches!(
            o.kind(),
            OutcomeKind::NotAnEvent(ParseError::NotAnEvent { .. })
        ),
        "{o:?}"
    );
    assert_eq!((o.status(), o.kind().name()), (400, "not_an_event"));
    assert_eq!(o.event_id(), None);
    // A body that names an event but is not one in some part (no `created`) carries its
    // id, for the logs and the caller.
    let no_created =
        br#"{"id":"evt_no_created","object":"event","type":"invoice.paid","livemode":false,"data":{"object":{}}}"#;
    let h3 = testing::sign(no_created, SECRET, testing::now());
    let o = p.process(Some(&h3), no_created).await;
    assert_eq!((o.status(), o.kind().name()), (400, "not_an_event"));
    assert_eq!(o.event_id().map(|id| id.as_str()), Some("evt_no_created"));

    let big = vec![b' '; 4097];
    let o = p.process(Some(&h), &big).await;
    assert!(
        matches!(
            o.kind(),
            OutcomeKind::PayloadTooLarge {
                len: 4097,
                limit: 4096
            }
        ),
        "{o:?}"
    );
    assert_eq!((o.status(), o.kind().name()), (413, "payload_too_large"));

    assert_eq!(handler.runs.load(Ordering::SeqCst), 0);
    // The valid one still works.
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
}

#[tokio::test]
async fn router_ignores_types_without_route_and_does_not_claim() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    let router = EventRouter::new().on(EventType::InvoicePaid, move |_e| {
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
        first_sleep: Duration::from_millis(7500),
        ..Default::default()
    });
    let store = Arc::new(MemoryStore::new());
    let p = Arc::new(
        Processor::new(verifier(), store.clone(), handler.clone())
            .with_handler_deadline(None)
            .with_lease(Duration::from_secs(2)),
    );
    let (h, b) = signed("evt_renewed", "invoice.paid");
    let first = {
        let (p, h, b) = (p.clone(), h.clone(), b.clone());
        tokio::spawn(async move { p.process(Some(&h), b.as_bytes()).await.status() })
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let dup = p.process(Some(&h), b.as_bytes()).await;
        assert!(
            matches!(dup.kind(), OutcomeKind::InProgress { .. }),
            "{dup:?}"
        );
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
    assert!(matches!(again.kind(), OutcomeKind::Processed), "{again:?}");
    assert_eq!(again.attempt(), Some(2));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
    let record = store
        .record(&EventId::new("evt_dropped"))
        .await
        .unwrap()
        .unwrap();
    assert!(record.last_error.unwrap().contains("cancelled"));
}

/// A caller that drops a delivery (a reconciler pass stopped by a signal) and then
/// drains before its runtime ends: `drain` waits for the release the drop spawned, which
/// the runtime's end would otherwise cut, leaving the event held for its whole lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_the_release_of_a_dropped_delivery() {
    let handler = Arc::new(SlowFirst {
        first_sleep: Duration::from_secs(30),
        ..Default::default()
    });
    // Releases take a while (renewals fail, but none falls due within the 60 s lease).
    let mut store = Flaky::new(|_| StoreError::unavailable("unused"));
    store.release_delay = Duration::from_millis(500);
    let store = Arc::new(store);
    let p = Processor::new(verifier(), store.clone(), handler.clone())
        .with_lease(Duration::from_secs(60));
    let (h, b) = signed("evt_drained", "invoice.paid");
    // Dropped once its handler runs (it would take 30 s), however slow the machine.
    let started = async {
        while handler.runs.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let dropped = tokio::select! {
        _ = p.process(Some(&h), b.as_bytes()) => false,
        () = started => true,
    };
    assert!(dropped, "the delivery should still be running");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    assert_eq!(p.deliveries_running(), 1, "the release is counted");
    assert!(p.drain(Duration::from_secs(10)).await);
    assert_eq!(p.deliveries_running(), 0);
    let record = store
        .inner
        .record(&EventId::new("evt_drained"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.status,
        RecordStatus::Failed,
        "released by the time drain returns"
    );
    assert!(record.last_error.unwrap().contains("cancelled"));
}

/// A store over a `MemoryStore` whose renewals always fail with `extend_error`, whose
/// first completion takes `first_complete_delay`, and whose releases take
/// `release_delay`.
struct Flaky {
    inner: MemoryStore,
    extend_error: fn(&ClaimToken) -> StoreError,
    first_complete_delay: Duration,
    release_delay: Duration,
    completes: AtomicUsize,
    /// Notified when the first completion starts.
    completing: Notify,
}

impl Flaky {
    fn new(extend_error: fn(&ClaimToken) -> StoreError) -> Self {
        Self {
            inner: MemoryStore::new(),
            extend_error,
            first_complete_delay: Duration::ZERO,
            release_delay: Duration::ZERO,
            completes: AtomicUsize::new(0),
            completing: Notify::new(),
        }
    }
}

#[async_trait]
impl IdempotencyStore for Flaky {
    async fn claim(&self, id: &EventId, t: &EventType, l: Duration) -> Result<Claim, StoreError> {
        self.inner.claim(id, t, l).await
    }
    async fn complete(&self, t: &ClaimToken) -> Result<(), StoreError> {
        if self.completes.fetch_add(1, Ordering::SeqCst) == 0 {
            self.completing.notify_one();
            tokio::time::sleep(self.first_complete_delay).await;
        }
        self.inner.complete(t).await
    }
    async fn release(&self, t: &ClaimToken, r: &str) -> Result<(), StoreError> {
        tokio::time::sleep(self.release_delay).await;
        self.inner.release(t, r).await
    }
    async fn extend(&self, t: &ClaimToken, _l: Duration) -> Result<(), StoreError> {
        Err((self.extend_error)(t))
    }
}

/// A store over a `MemoryStore` whose first completion is recorded but its answer lost:
/// it reports a timeout, as a database does whose connection was cut after the commit.
#[derive(Default)]
struct AnswerLost {
    inner: MemoryStore,
    completes: AtomicUsize,
}

#[async_trait]
impl IdempotencyStore for AnswerLost {
    async fn claim(&self, id: &EventId, t: &EventType, l: Duration) -> Result<Claim, StoreError> {
        self.inner.claim(id, t, l).await
    }
    async fn complete(&self, t: &ClaimToken) -> Result<(), StoreError> {
        self.inner.complete(t).await?;
        if self.completes.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(StoreError::Timeout(Duration::from_secs(5)));
        }
        Ok(())
    }
    async fn release(&self, t: &ClaimToken, r: &str) -> Result<(), StoreError> {
        self.inner.release(t, r).await
    }
    async fn extend(&self, t: &ClaimToken, l: Duration) -> Result<(), StoreError> {
        self.inner.extend(t, l).await
    }
}

/// A completion whose answer was lost is tried again and finds its own work done: the
/// event is processed, not reported as taken over by another delivery.
#[tokio::test]
async fn a_completion_whose_answer_was_lost_is_processed_not_lease_lost() {
    let store = Arc::new(AnswerLost::default());
    let p = Processor::new(verifier(), store.clone(), Counting::default());
    let (h, b) = signed("evt_answer_lost", "invoice.paid");
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
    assert_eq!(store.completes.load(Ordering::SeqCst), 2, "tried again");
    let again = p.process(Some(&h), b.as_bytes()).await;
    assert!(matches!(again.kind(), OutcomeKind::Duplicate), "{again:?}");
}

/// Counts the runs in progress, on every exit path (a dropped run included).
#[derive(Default)]
struct Overlap {
    runs: AtomicUsize,
    active: AtomicUsize,
    most_active: AtomicUsize,
    first_sleep: Duration,
}

struct Active<'a>(&'a AtomicUsize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl EventHandler for Overlap {
    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        let _active = Active(&self.active);
        self.most_active.fetch_max(now, Ordering::SeqCst);
        if self.runs.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(self.first_sleep).await;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_whose_renewals_fail_is_stopped_before_its_lease_can_run_out() {
    // No deadline, renewals failing: without the stop, a redelivery after the lease
    // would run the handler beside the first run, still sleeping.
    let handler = Arc::new(Overlap {
        first_sleep: Duration::from_secs(30),
        ..Default::default()
    });
    let store = Flaky::new(|_| StoreError::unavailable("connection reset"));
    let p = Arc::new(
        Processor::new(verifier(), store, handler.clone())
            .with_handler_deadline(None)
            .with_lease(Duration::from_secs(2)),
    );
    let (h, b) = signed("evt_unrenewed", "invoice.paid");
    let first = {
        let (p, h, b) = (p.clone(), h.clone(), b.clone());
        tokio::spawn(async move { p.process(Some(&h), b.as_bytes()).await })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let retry = p.process(Some(&h), b.as_bytes()).await;
    assert!(matches!(retry.kind(), OutcomeKind::Processed), "{retry:?}");
    let first = first.await.unwrap();
    assert!(
        matches!(
            first.kind(),
            OutcomeKind::HandlerFailed(HandlerError::LeaseLost)
        ),
        "{first:?}"
    );
    assert!(first.duration() < Duration::from_secs(4), "{first:?}");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        handler.most_active.load(Ordering::SeqCst),
        1,
        "two runs overlapped"
    );
}

/// A handler stopped because its lease may have run out releases its claim (fenced: a
/// claim another delivery took is not touched), so Stripe's retry runs at once instead
/// of being answered 409 until the lease's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_stopped_for_its_lease_releases_the_claim() {
    let handler = Arc::new(Overlap {
        first_sleep: Duration::from_secs(30),
        ..Default::default()
    });
    let store = Arc::new(Flaky::new(|_| StoreError::unavailable("connection reset")));
    let p = Processor::new(verifier(), Arc::clone(&store), handler.clone())
        .with_handler_deadline(None)
        .with_lease(Duration::from_secs(1));
    let (h, b) = signed("evt_stopped_released", "invoice.paid");
    let first = p.process(Some(&h), b.as_bytes()).await;
    assert!(
        matches!(
            first.kind(),
            OutcomeKind::HandlerFailed(HandlerError::LeaseLost)
        ),
        "{first:?}"
    );
    let record = store
        .inner
        .record(&EventId::new("evt_stopped_released"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RecordStatus::Failed, "{record:?}");
    let retry = p.process(Some(&h), b.as_bytes()).await;
    assert!(matches!(retry.kind(), OutcomeKind::Processed), "{retry:?}");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_is_stopped_when_the_store_says_its_claim_was_taken_over() {
    let handler = Arc::new(Overlap {
        first_sleep: Duration::from_secs(30),
        ..Default::default()
    });
    let store = Flaky::new(|t| StoreError::LeaseLost {
        event_id: t.event_id().clone(),
    });
    let p = Processor::new(verifier(), store, handler.clone())
        .with_handler_deadline(None)
        .with_lease(Duration::from_secs(3));
    let (h, b) = signed("evt_taken_over", "invoice.paid");
    let o = p.process(Some(&h), b.as_bytes()).await;
    assert!(
        matches!(
            o.kind(),
            OutcomeKind::HandlerFailed(HandlerError::LeaseLost)
        ),
        "{o:?}"
    );
    assert_eq!(o.status(), 500);
    assert!(
        o.duration() < Duration::from_secs(10),
        "stopped at the first renewal: {o:?}"
    );
}

/// A lease or deadline of `Duration::MAX` does not overflow any instant: the delivery
/// is processed.
#[tokio::test]
async fn huge_leases_and_deadlines_do_not_panic() {
    let handler = Arc::new(Counting::default());
    for p in [
        Processor::new(verifier(), MemoryStore::new(), handler.clone())
            .with_handler_deadline(None)
            .with_lease(Duration::MAX),
        Processor::new(verifier(), MemoryStore::new(), handler.clone())
            .with_handler_deadline(Some(Duration::MAX)),
    ] {
        let (h, b) = signed("evt_huge", "invoice.paid");
        let o = p.process(Some(&h), b.as_bytes()).await;
        assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
    }
}

/// A handler that returns `LeaseLost` itself is an ordinary failure: its claim is
/// released, so the retry runs at once instead of waiting out the lease.
#[tokio::test]
async fn a_handler_returning_lease_lost_is_an_ordinary_failure() {
    struct Liar(AtomicUsize);
    #[async_trait]
    impl EventHandler for Liar {
        async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(HandlerError::LeaseLost);
            }
            Ok(())
        }
    }
    let p = Processor::new(verifier(), MemoryStore::new(), Liar(AtomicUsize::new(0)));
    let (h, b) = signed("evt_liar", "invoice.paid");
    let first = p.process(Some(&h), b.as_bytes()).await;
    assert_eq!(first.status(), 500);
    let retry = p.process(Some(&h), b.as_bytes()).await;
    assert!(matches!(retry.kind(), OutcomeKind::Processed), "{retry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_dropped_after_its_handler_succeeded_is_completed_not_released() {
    // The handler succeeds; the client goes away while the completion is being written.
    // The claim must be completed, not released: a release would record a false
    // failure and run the handler again on Stripe's retry.
    let handler = Arc::new(Counting::default());
    let mut store = Flaky::new(|_| StoreError::unavailable("unused"));
    store.first_complete_delay = Duration::from_secs(3600);
    let store = Arc::new(store);
    let p = Processor::new(verifier(), store.clone(), handler.clone());
    let (h, b) = signed("evt_done_then_dropped", "invoice.paid");
    // Dropped as soon as the first completion is in flight (it would take an hour).
    let dropped = tokio::select! {
        _ = p.process(Some(&h), b.as_bytes()) => false,
        () = store.completing.notified() => true,
    };
    assert!(dropped, "the completion should have been in flight");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    let id = EventId::new("evt_done_then_dropped");
    let mut status = None;
    for _ in 0..100 {
        status = store.inner.record(&id).await.unwrap().map(|r| r.status);
        if status == Some(RecordStatus::Completed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, Some(RecordStatus::Completed));
    let record = store.inner.record(&id).await.unwrap().unwrap();
    assert_eq!(record.last_error, None, "no false failure is recorded");
    let retry = p.process(Some(&h), b.as_bytes()).await;
    assert!(matches!(retry.kind(), OutcomeKind::Duplicate), "{retry:?}");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
}

/// A handler stopped for a lost lease is counted in `HANDLER_DURATION` with the result
/// `lease_lost` (its dropped future records nothing itself).
#[cfg(feature = "metrics")]
#[test]
fn a_handler_stopped_for_a_lost_lease_is_counted_lease_lost() {
    let (o, text) = common::with_local_prometheus(async {
        let handler = Arc::new(Overlap {
            first_sleep: Duration::from_secs(30),
            ..Default::default()
        });
        let store = Flaky::new(|t| StoreError::LeaseLost {
            event_id: t.event_id().clone(),
        });
        let p = Processor::new(verifier(), store, handler)
            .with_handler_deadline(None)
            .with_lease(Duration::from_millis(600));
        let (h, b) = signed("evt_lost_counted", "invoice.paid");
        p.process(Some(&h), b.as_bytes()).await
    });
    assert!(
        matches!(
            o.kind(),
            OutcomeKind::HandlerFailed(HandlerError::LeaseLost)
        ),
        "{o:?}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("stripe_webhooks_handler_duration_seconds_count")
                && l.contains(r#"result="lease_lost""#)
        ),
        "{text}"
    );
}

/// A handler written without `async-trait`, which counts each *call* of `handle` (work
/// done before its future is polled) apart from each run of its future. Given by value
/// (an `Arc` around it would defer the call into its own future).
#[derive(Default, Clone)]
struct EagerCalls {
    calls: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
}

type BoxedRun<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HandlerError>> + Send + 'a>>;

impl EagerCalls {
    fn call<'a>(&'a self) -> BoxedRun<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let runs = Arc::clone(&self.runs);
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

impl EventHandler for EagerCalls {
    fn handle<'a, 'b, 'c>(&'a self, _event: &'b Event) -> BoxedRun<'c>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.call()
    }
}

impl stripe_webhooks::ThinEventHandler for EagerCalls {
    fn handle<'a, 'b, 'c>(&'a self, _n: &'b stripe_webhooks::EventNotification) -> BoxedRun<'c>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.call()
    }
}

/// The handler is called only once its event is claimed: a duplicate, an event another
/// delivery holds, or one whose store is down never reaches `handle`, even for work a
/// handler does in the call itself.
#[tokio::test]
async fn a_handler_is_called_only_once_its_event_is_claimed() {
    let h = EagerCalls::default();
    let store = MemoryStore::new();
    let p = Processor::new(verifier(), store.clone(), h.clone()).with_thin_handler(h.clone());
    let (header, body) = signed("evt_eager", "customer.created");
    for _ in 0..3 {
        let o = p.process(Some(&header), body.as_bytes()).await;
        assert!(o.is_success(), "{o:?}");
    }
    assert_eq!(h.calls.load(Ordering::SeqCst), 1, "called for duplicates");
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);

    // A thin event (its own id as the key) likewise.
    let thin = testing::ThinEventBuilder::new("evt_eager_thin", "v1.price.activated").build();
    let header = testing::sign(thin.as_bytes(), SECRET, testing::now());
    for _ in 0..3 {
        let o = p.process(Some(&header), thin.as_bytes()).await;
        assert!(o.is_success(), "{o:?}");
    }
    assert_eq!(
        h.calls.load(Ordering::SeqCst),
        2,
        "called for thin duplicates"
    );

    // The store down: 503, and no call.
    let down = Processor::new(
        verifier(),
        Broken {
            inner: MemoryStore::new(),
            claims_fail: true,
        },
        h.clone(),
    );
    let (header, body) = signed("evt_eager_down", "customer.created");
    let o = down.process(Some(&header), body.as_bytes()).await;
    assert_eq!(o.status(), 503, "{o:?}");
    assert_eq!(
        h.calls.load(Ordering::SeqCst),
        2,
        "called with the store down"
    );

    // Held by another delivery: 409, and no call.
    let (header, body) = signed("evt_eager_held", "customer.created");
    let held = store
        .claim(
            &EventId::new("evt_eager_held"),
            &EventType::CustomerCreated,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(matches!(held, Claim::Acquired(_)));
    let o = p.process(Some(&header), body.as_bytes()).await;
    assert_eq!(o.status(), 409, "{o:?}");
    assert_eq!(
        h.calls.load(Ordering::SeqCst),
        2,
        "called while held elsewhere"
    );
}

/// A lease of zero (which would end as it starts, letting every concurrent delivery
/// claim) is raised to the floor: a concurrent duplicate is still 409.
#[tokio::test]
async fn a_zero_lease_still_keeps_concurrent_duplicates_out() {
    let h = Arc::new(Counting {
        sleep: Some(Duration::from_millis(300)),
        ..Counting::default()
    });
    let store = Arc::new(MemoryStore::new());
    let p = Arc::new(
        Processor::new(verifier(), Arc::clone(&store), Arc::clone(&h))
            .with_handler_deadline(None)
            .with_lease(Duration::ZERO),
    );
    let (header, body) = signed("evt_zero_lease", "customer.created");
    let first = {
        let (p, header, body) = (Arc::clone(&p), header.clone(), body.clone());
        tokio::spawn(async move { p.process(Some(&header), body.as_bytes()).await })
    };
    // Once the first has claimed (its handler then runs 300 ms).
    let id = EventId::new("evt_zero_lease");
    for _ in 0..500 {
        if store.record(&id).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let second = p.process(Some(&header), body.as_bytes()).await;
    assert_eq!(second.status(), 409, "{second:?}");
    let first = first.await.unwrap();
    assert_eq!(first.kind().name(), "processed", "{first:?}");
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
}

/// A claim whose own call took most of its lease: another delivery may claim the event
/// any moment, so the handler is not called at all (500, Stripe retries). The claim is
/// given back (and, under the ordering guard, the object's lock), so Stripe's retry is
/// not answered 409 for a lease the store may have started late: both were left held.
#[tokio::test]
async fn a_claim_that_outlived_its_lease_does_not_call_the_handler() {
    /// Slow claims, or (`.1`) a slow lock and a quick claim, so that under the guard
    /// both leases start late.
    #[derive(Clone)]
    struct SlowClaims(Arc<MemoryStore>, bool);
    const SLOW: Duration = Duration::from_millis(250);
    #[async_trait]
    impl IdempotencyStore for SlowClaims {
        async fn claim(
            &self,
            id: &EventId,
            t: &EventType,
            l: Duration,
        ) -> Result<Claim, StoreError> {
            if !self.1 {
                tokio::time::sleep(SLOW).await;
            }
            self.0.claim(id, t, l).await
        }
        async fn complete(&self, t: &ClaimToken) -> Result<(), StoreError> {
            self.0.complete(t).await
        }
        async fn release(&self, t: &ClaimToken, r: &str) -> Result<(), StoreError> {
            self.0.release(t, r).await
        }
        async fn extend(&self, t: &ClaimToken, l: Duration) -> Result<(), StoreError> {
            self.0.extend(t, l).await
        }
    }
    // The ordering methods the guard needs; `lock_and_claim` is the trait's own (the
    // slow lock, then the claim).
    #[async_trait]
    impl OrderingStore for SlowClaims {
        async fn lock_object(
            &self,
            o: &str,
            h: &str,
            l: Duration,
        ) -> Result<ObjectLock, StoreError> {
            if self.1 {
                tokio::time::sleep(SLOW).await;
            }
            self.0.lock_object(o, h, l).await
        }
        async fn complete_applied(
            &self,
            t: &ClaimToken,
            o: &str,
            h: &str,
            a: &Watermark,
        ) -> Result<(), StoreError> {
            self.0.complete_applied(t, o, h, a).await
        }
        async fn unlock_object(&self, o: &str, h: &str) -> Result<(), StoreError> {
            self.0.unlock_object(o, h).await
        }
        async fn watermark(&self, o: &str) -> Result<Option<Watermark>, StoreError> {
            self.0.watermark(o).await
        }
        async fn advance_watermark(&self, k: &str, w: &Watermark) -> Result<(), StoreError> {
            self.0.advance_watermark(k, w).await
        }
    }
    let lease = Duration::from_secs(1);
    for ordered in [false, true] {
        let store = SlowClaims(Arc::new(MemoryStore::new()), ordered);
        let h = EagerCalls::default();
        let p = if ordered {
            Processor::ordered(verifier(), store.clone(), h.clone(), TiePolicy::Run)
        } else {
            Processor::new(verifier(), store.clone(), h.clone())
        }
        .with_handler_deadline(None)
        .with_lease(Duration::from_millis(200));
        let (header, body) = signed("evt_slow_claim", "customer.created");
        let o = p.process(Some(&header), body.as_bytes()).await;
        assert_eq!(o.status(), 500, "{o:?}");
        assert_eq!(h.calls.load(Ordering::SeqCst), 0);
        let record = store.0.record(&EventId::new("evt_slow_claim")).await;
        let status = record.unwrap().unwrap().status;
        assert_eq!(status, RecordStatus::Failed, "ordered: {ordered}");
        let event = stripe_webhooks::dangerous::parse_unverified(body.as_bytes()).unwrap();
        let object = event.object_id().unwrap();
        let lock = store.0.lock_object(object, "probe", lease).await.unwrap();
        assert!(
            matches!(lock, ObjectLock::Acquired { .. }),
            "ordered: {ordered}: {lock:?}"
        );
    }
}

/// A store over a `MemoryStore` that counts lease renewals.
#[derive(Default)]
struct CountsRenewals {
    inner: MemoryStore,
    extends: AtomicUsize,
}

#[async_trait]
impl IdempotencyStore for CountsRenewals {
    async fn claim(&self, id: &EventId, t: &EventType, l: Duration) -> Result<Claim, StoreError> {
        self.inner.claim(id, t, l).await
    }
    async fn complete(&self, t: &ClaimToken) -> Result<(), StoreError> {
        self.inner.complete(t).await
    }
    async fn release(&self, t: &ClaimToken, r: &str) -> Result<(), StoreError> {
        self.inner.release(t, r).await
    }
    async fn extend(&self, t: &ClaimToken, l: Duration) -> Result<(), StoreError> {
        self.extends.fetch_add(1, Ordering::SeqCst);
        self.inner.extend(t, l).await
    }
}

/// A user's test on tokio's paused clock (`start_paused`) with a handler that waits a
/// minute: the lease (3 s) is renewed every third of it, about 60 times, as on a real
/// clock. The renewals counted time on the system clock, which a paused runtime does not
/// move while its own jumps ahead, so each renewal was due again at once: 22 million
/// of them in the minute.
#[tokio::test(start_paused = true)]
async fn renewals_keep_their_pace_on_a_paused_clock() {
    let store = Arc::new(CountsRenewals::default());
    let p = Processor::new(
        verifier(),
        Arc::clone(&store),
        Counting {
            sleep: Some(Duration::from_secs(60)),
            ..Counting::default()
        },
    )
    .with_handler_deadline(None)
    .with_lease(Duration::from_secs(3));
    // The paused clock already ahead of the system's (the test waited before).
    tokio::time::sleep(Duration::from_secs(600)).await;
    let (header, body) = signed("evt_paused", "invoice.paid");
    let o = p.process(Some(&header), body.as_bytes()).await;
    assert_eq!(o.kind().name(), "processed", "{o:?}");
    let renewals = store.extends.load(Ordering::SeqCst);
    assert!((50..=70).contains(&renewals), "{renewals} renewals");
}
