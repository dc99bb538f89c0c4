//! The reconciler against the fake Stripe API: undelivered events, cursor passes across
//! pages while webhooks arrive, several replicas at once, failures that keep the cursor,
//! and thin events from the v2 list.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(all(feature = "client", feature = "testing"))]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stripe_webhooks::client::{RequestContext, StripeClient};
use stripe_webhooks::reconcile::{ReconcileError, Reconciler};
use stripe_webhooks::testing::{self, FakeStripe, Fault, ThinEventBuilder};
use stripe_webhooks::{
    async_trait, Claim, ClaimToken, Event, EventHandler, EventId, EventNotification, EventRouter,
    EventType, HandlerError, IdempotencyStore, MemoryStore, OrderingStore, Processor,
    SigningSecret, StoreAdmin, StoreError, ThinEventHandler, Verifier, Watermark,
};

const SECRET: &str = "whsec_reconcile";

/// Counts handler runs per event (or dedupe key), optionally failing some.
#[derive(Default)]
struct Runs {
    runs: Mutex<HashMap<String, usize>>,
    fail: Mutex<Vec<String>>,
}

impl Runs {
    fn run(&self, key: &str) -> Result<(), HandlerError> {
        if self.fail.lock().unwrap().iter().any(|f| f == key) {
            return Err(HandlerError::new("downstream down"));
        }
        *self.runs.lock().unwrap().entry(key.to_owned()).or_default() += 1;
        Ok(())
    }

    fn total(&self) -> usize {
        self.runs.lock().unwrap().values().sum()
    }

    fn all_once(&self, n: usize) {
        let runs = self.runs.lock().unwrap();
        assert_eq!(runs.len(), n, "{runs:?}");
        assert!(runs.values().all(|c| *c == 1), "every event once: {runs:?}");
    }
}

#[async_trait]
impl EventHandler for Runs {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.run(event.id().as_str())
    }

    fn handles(&self, t: &EventType) -> bool {
        matches!(t, EventType::InvoicePaid | EventType::CustomerCreated)
    }
}

#[async_trait]
impl ThinEventHandler for Runs {
    async fn handle(&self, n: &EventNotification) -> Result<(), HandlerError> {
        self.run(n.dedupe_key().as_str())
    }
}

/// Loads into `fake` an event of each `(id, type)`, created at `created` (around an
/// `invoice.paid` fixture: the type may be one this release does not know).
fn add_events_of_types(fake: &FakeStripe, created: i64, events: &[(&str, &str)]) {
    for (id, ty) in events {
        let mut v: serde_json::Value =
            serde_json::from_str(&event("x", "invoice.paid", created)).unwrap();
        v["id"] = (*id).into();
        v["type"] = (*ty).into();
        fake.add_event(&v.to_string()).unwrap();
    }
}

fn event(id: &str, ty: &str, created: i64) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&testing::event_for_type(id, ty).unwrap()).unwrap();
    v["created"] = created.into();
    v.to_string()
}

struct Setup {
    fake: FakeStripe,
    store: Arc<MemoryStore>,
    runs: Arc<Runs>,
    processor: Arc<Processor>,
}

async fn setup() -> Setup {
    let fake = FakeStripe::start().await.unwrap();
    let store = Arc::new(MemoryStore::new());
    let runs = Arc::new(Runs::default());
    let processor = Arc::new(
        Processor::new(
            Verifier::new(SigningSecret::new(SECRET).unwrap()),
            Arc::clone(&store),
            Arc::clone(&runs),
        )
        .with_thin_handler(Arc::clone(&runs)),
    );
    Setup {
        fake,
        store,
        runs,
        processor,
    }
}

impl Setup {
    /// The last request the fake API had for `path`.
    fn last_request(&self, path: &str) -> stripe_webhooks::testing::RecordedRequest {
        self.fake
            .requests()
            .into_iter()
            .rfind(|r| r.path == path)
            .unwrap_or_else(|| panic!("no request for {path}"))
    }

    /// A processor over this store, through a [`Faulty`] one whose releases all fail: a
    /// failed handler's failure is not recorded.
    fn failing_releases(&self) -> Arc<Processor> {
        Arc::new(Processor::new(
            Verifier::new(SigningSecret::new(SECRET).unwrap()),
            Faulty {
                inner: Arc::clone(&self.store),
                fail_releases: true,
                ..Faulty::default()
            },
            Arc::clone(&self.runs),
        ))
    }

    /// `body` delivered by the webhook path, signed now: processed.
    async fn delivered(&self, body: &str) {
        let header = testing::sign(body.as_bytes(), SECRET, testing::now());
        let o = self.processor.process(Some(&header), body.as_bytes()).await;
        assert_eq!(o.kind().name(), "processed");
    }

    fn reconciler(&self) -> Reconciler {
        Reconciler::new(
            self.fake.client().unwrap(),
            Arc::clone(&self.processor),
            Arc::clone(&self.store),
        )
        .with_page_size(4)
    }
}

#[tokio::test]
async fn undelivered_events_run_once_and_delivered_ones_are_duplicates() {
    let s = setup().await;
    let now = testing::now();
    for i in 0..5 {
        let body = event(&format!("evt_u{i}"), "invoice.paid", now - 100 + i);
        s.fake.add_event_with_delivery(&body, i % 2 == 1).unwrap();
    }
    // A type no handler takes, and one past the lookback: not listed.
    s.fake
        .add_event_with_delivery(&event("evt_other", "charge.succeeded", now - 50), false)
        .unwrap();
    s.fake
        .add_event_with_delivery(
            &event("evt_old", "invoice.paid", now - 5 * 24 * 3600),
            false,
        )
        .unwrap();
    // The webhook delivered evt_u0 already.
    let body = event("evt_u0", "invoice.paid", now - 100);
    s.delivered(&body).await;

    let report = s.reconciler().undelivered().await.unwrap();
    assert_eq!(
        (report.listed, report.processed, report.duplicates),
        (3, 2, 1),
        "{report:?}"
    );
    s.runs.all_once(3);
    // The request filtered on what the processor handles and on delivery_success.
    let req = s.last_request("/v1/events");
    assert_eq!(req.query_value("delivery_success"), Some("false"));
    let mut types = req.query_values("types[]");
    types.sort_unstable();
    assert_eq!(types, ["customer.created", "invoice.paid"]);
    // A second pass finds them all completed.
    let again = s.reconciler().undelivered().await.unwrap();
    assert_eq!((again.processed, again.duplicates), (0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cursor_pass_across_pages_while_webhooks_arrive_runs_each_event_once() {
    let s = setup().await;
    let now = testing::now();
    let bodies: Vec<String> = (0..10)
        .map(|i| event(&format!("evt_c{i}"), "invoice.paid", now - 60 + i))
        .collect();
    for b in &bodies {
        s.fake.add_event(b).unwrap();
    }
    // Slow pages, so webhooks for the same events land while the pass runs.
    s.fake.fail_path(
        "/v1/events",
        Some(3),
        Fault::Delay(Duration::from_millis(30)),
    );
    let webhooks = {
        let p = Arc::clone(&s.processor);
        let bodies = bodies.clone();
        tokio::spawn(async move {
            for b in bodies.iter().rev() {
                let h = testing::sign(b.as_bytes(), SECRET, testing::now());
                for _ in 0..2 {
                    let o = p.process(Some(&h), b.as_bytes()).await;
                    assert!(matches!(o.status(), 200 | 409), "{o:?}");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Two replicas reconcile at once, too.
    let (ra, rb) = (s.reconciler(), s.reconciler());
    let (a, b) = tokio::join!(ra.since_cursor(), rb.since_cursor());
    webhooks.await.unwrap();
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.pages >= 3, "10 events at 4 a page: {a:?}");
    assert_eq!(a.listed, 10);
    s.runs.all_once(10);
    // The cursor moved to a minute before the newest event (or to an event still running
    // elsewhere).
    let cursor = s
        .store
        .watermark(&ra.cursor_keys()[0])
        .await
        .unwrap()
        .unwrap();
    assert!(cursor.created >= now - 51 - 60, "{cursor:?} {a:?} {b:?}");
    // The next pass starts at the cursor and runs nothing new.
    let next = s.reconciler().since_cursor().await.unwrap();
    assert_eq!(next.processed, 0);
    s.runs.all_once(10);
}

#[tokio::test]
async fn a_failed_event_holds_the_cursor_until_it_succeeds() {
    let s = setup().await;
    let now = testing::now();
    for i in 0..6 {
        s.fake
            .add_event(&event(
                &format!("evt_f{i}"),
                "invoice.paid",
                now - 2000 + i * 100,
            ))
            .unwrap();
    }
    s.runs.fail.lock().unwrap().push("evt_f2".to_owned());
    let r = s.reconciler().since_cursor().await.unwrap();
    assert_eq!((r.processed, r.failed), (5, 1), "{r:?}");
    assert_eq!(
        r.cursor.as_ref().unwrap().created,
        now - 1800,
        "held at the failed event's second"
    );
    // Fixed: the next pass lists from there, runs it, and moves on, to a minute before
    // the newest event (Stripe's clock has passed that event, whatever this machine's
    // says; an event Stripe lists a little late is at most a minute older).
    s.runs.fail.lock().unwrap().clear();
    let r = s.reconciler().since_cursor().await.unwrap();
    assert_eq!((r.processed, r.failed), (1, 0), "{r:?}");
    let cursor = r.cursor.unwrap();
    assert_eq!(cursor.created, now - 1500 - 60);
    s.runs.all_once(6);

    // A recent event that fails holds the cursor a minute back, not at its own second,
    // so an older event that Stripe lists late still falls in the next pass.
    s.fake
        .add_event(&event("evt_recent", "invoice.paid", now - 5))
        .unwrap();
    s.runs.fail.lock().unwrap().push("evt_recent".to_owned());
    let r = s.reconciler().since_cursor().await.unwrap();
    assert_eq!((r.processed, r.failed), (0, 1), "{r:?}");
    let held = r.cursor.unwrap().created;
    assert!(held <= now - 55 && held >= now - 150, "{held}");
}

/// The cursor stays the configured safety lag behind the present, which the reconciler
/// reads from its clock, or behind the newest event listed when the clock is behind it;
/// the lookback counts from that clock too.
#[tokio::test]
async fn the_cursor_stays_the_safety_lag_behind_the_reconcilers_clock() {
    use stripe_webhooks::reconcile::DEFAULT_SAFETY_LAG;
    use stripe_webhooks::{FixedClock, ManualClock};

    let s = setup().await;
    let t = 1_900_000_000;
    for i in 0..3 {
        s.fake
            .add_event(&event(
                &format!("evt_l{i}"),
                "invoice.paid",
                t - 300 + i * 100,
            ))
            .unwrap();
    }
    let key = s.reconciler().cursor_keys()[0].clone();
    let cursor = || async { s.store.watermark(&key).await.unwrap().unwrap().created };
    // The clock far ahead of the events, with the default lag: a minute before the
    // newest event (t - 100), which Stripe's clock has passed.
    let r = s
        .reconciler()
        .with_clock(FixedClock(t + 3600))
        .with_lookback(Duration::from_secs(7200))
        .since_cursor()
        .await
        .unwrap();
    assert_eq!(r.processed, 3, "{r:?}");
    assert_eq!(cursor().await, t - 100 - 60);
    assert_eq!(DEFAULT_SAFETY_LAG, Duration::from_secs(60));
    // A clock behind the newest event (t - 120): the lag counts from the clock.
    let clock = ManualClock::new((t - 120) * 1000);
    let r = s
        .reconciler()
        .with_clock(clock.clone())
        .with_safety_lag(Duration::from_secs(10))
        .since_cursor()
        .await
        .unwrap();
    assert_eq!((r.listed, r.duplicates), (1, 1), "{r:?}");
    assert_eq!(cursor().await, t - 120 - 10);
    // No lag, the clock past the events: the cursor is at the newest event's second.
    clock.set((t + 5) * 1000);
    s.reconciler()
        .with_clock(clock.clone())
        .with_safety_lag(Duration::ZERO)
        .since_cursor()
        .await
        .unwrap();
    assert_eq!(cursor().await, t - 100);
    // The lookback counts from the clock: a new cursor an hour on from the events,
    // looking back half an hour, lists none of them.
    let fresh = s
        .reconciler()
        .with_name("fresh")
        .with_clock(FixedClock(t + 3600))
        .with_lookback(Duration::from_secs(1800))
        .since_cursor()
        .await
        .unwrap();
    assert_eq!(fresh.listed, 0, "{fresh:?}");
}

/// With this machine's clock ahead of Stripe's, a backlog's windows can end in Stripe's
/// future: the events created there after the window was listed are in no later
/// window, so the cursor must not pass them, however new the events the last window
/// lists. The next pass runs them.
#[tokio::test]
async fn a_clock_ahead_of_stripes_does_not_carry_a_windowed_cursor_past_unlisted_events() {
    use stripe_webhooks::FixedClock;

    /// Runs events; when it runs `evt_w9`, Stripe's clock moves on: two new events.
    struct Late {
        runs: Runs,
        fake: Arc<FakeStripe>,
        t: i64,
    }
    #[async_trait]
    impl EventHandler for Late {
        async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
            if event.id().as_str() == "evt_w9" {
                let at = |id: &str, created| event_json_at(id, created);
                self.fake.add_event(&at("evt_late", self.t + 100)).unwrap();
                self.fake.add_event(&at("evt_after", self.t + 650)).unwrap();
            }
            self.runs.run(event.id().as_str())
        }
    }
    fn event_json_at(id: &str, created: i64) -> String {
        event(id, "invoice.paid", created)
    }

    let t = 1_900_000_000;
    let fake = Arc::new(FakeStripe::start().await.unwrap());
    for i in 0..10 {
        fake.add_event(&event_json_at(&format!("evt_w{i}"), t - 3000 + 300 * i))
            .unwrap();
    }
    let store = Arc::new(MemoryStore::new());
    let handler = Arc::new(Late {
        runs: Runs::default(),
        fake: Arc::clone(&fake),
        t,
    });
    let processor = Arc::new(Processor::new(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        Arc::clone(&store),
        Arc::clone(&handler),
    ));
    // Ten minutes ahead: the last closed window is [t - 400, t + 600), listed before
    // `evt_late` (t + 100) exists; the open one after it lists `evt_after` (t + 650).
    let reconciler = || {
        Reconciler::new(
            fake.client().unwrap(),
            Arc::clone(&processor),
            Arc::clone(&store),
        )
        .with_page_size(4)
        .with_max_buffered(4)
        .with_clock(FixedClock(t + 600))
        .with_lookback(Duration::from_secs(4000))
    };
    let r = reconciler().since_cursor().await.unwrap();
    assert_eq!(r.processed, 11, "{r:?}");
    let cursor = r.cursor.unwrap().created;
    assert!(
        cursor < t + 100,
        "the cursor passed the unlisted event: {cursor}"
    );
    let again = reconciler().since_cursor().await.unwrap();
    assert_eq!(again.processed, 1, "{again:?}");
    handler.runs.all_once(12);
}

/// The same from the v2 events list: thin events.
#[tokio::test]
async fn a_clock_ahead_of_stripes_does_not_carry_a_windowed_thin_cursor_past_unlisted_events() {
    use stripe_webhooks::FixedClock;

    struct Late {
        runs: Runs,
        fake: Arc<FakeStripe>,
        t: i64,
    }
    #[async_trait]
    impl ThinEventHandler for Late {
        async fn handle(&self, n: &EventNotification) -> Result<(), HandlerError> {
            if n.id.as_str() == "evt_tw9" {
                self.fake
                    .add_v2_event(&thin_at("evt_tl", self.t + 100))
                    .unwrap();
                self.fake
                    .add_v2_event(&thin_at("evt_ta", self.t + 650))
                    .unwrap();
            }
            self.runs.run(n.dedupe_key().as_str())
        }
    }
    fn thin_at(id: &str, created: i64) -> String {
        ThinEventBuilder::new(id, "v1.price.activated")
            .created(created)
            .build()
    }

    let t = 1_900_000_000;
    let fake = Arc::new(FakeStripe::start().await.unwrap());
    for i in 0..10 {
        fake.add_v2_event(&thin_at(&format!("evt_tw{i}"), t - 3000 + 300 * i))
            .unwrap();
    }
    let store = Arc::new(MemoryStore::new());
    let handler = Arc::new(Late {
        runs: Runs::default(),
        fake: Arc::clone(&fake),
        t,
    });
    let processor = Arc::new(
        Processor::new(
            Verifier::new(SigningSecret::new(SECRET).unwrap()),
            Arc::clone(&store),
            Runs::default(),
        )
        .with_thin_handler(Arc::clone(&handler)),
    );
    let reconciler = || {
        Reconciler::new(
            fake.client().unwrap(),
            Arc::clone(&processor),
            Arc::clone(&store),
        )
        .with_page_size(4)
        .with_max_buffered(4)
        .with_clock(FixedClock(t + 600))
        .with_lookback(Duration::from_secs(4000))
    };
    let r = reconciler().thin_since_cursor().await.unwrap();
    assert_eq!(r.processed, 11, "{r:?}");
    let cursor = r.cursor.unwrap().created;
    assert!(
        cursor < t + 100,
        "the cursor passed the unlisted event: {cursor}"
    );
    let again = reconciler().thin_since_cursor().await.unwrap();
    assert_eq!(again.processed, 1, "{again:?}");
    handler.runs.all_once(12);
}

/// Lists `evt_poison` (two hours old, failing every time) and `evt_later` (ten minutes
/// old).
fn poison_and_later(s: &Setup, now: i64) {
    for (id, created) in [("evt_poison", now - 7200), ("evt_later", now - 600)] {
        s.fake
            .add_event(&event(id, "invoice.paid", created))
            .unwrap();
    }
    s.runs.fail.lock().unwrap().push("evt_poison".to_owned());
}

/// An event that fails every time holds the cursor only within the lookback: past it,
/// the cursor moves on (the store keeps the failure), so passes do not list ever more.
#[tokio::test]
async fn an_event_failing_past_the_lookback_stops_holding_the_cursor() {
    let s = setup().await;
    let now = testing::now();
    poison_and_later(&s, now);
    let reconciler = || s.reconciler().with_lookback(Duration::from_secs(3 * 3600));
    let r = reconciler().since_cursor().await.unwrap();
    assert_eq!(
        (r.processed, r.failed, r.beyond_lookback),
        (1, 1, 0),
        "{r:?}"
    );
    assert_eq!(
        r.cursor.unwrap().created,
        now - 7200,
        "held within the lookback"
    );
    // An hour of lookback: the poison event is older. It still fails, and is recorded
    // as failed; it holds the cursor until the store counted three attempts (one above,
    // two here), then the cursor moves on.
    let past = || {
        reconciler()
            .with_lookback(Duration::from_secs(3600))
            .with_attempts_past_lookback(3)
    };
    let r = past().since_cursor().await.unwrap();
    assert_eq!((r.failed, r.beyond_lookback), (1, 0), "{r:?}");
    assert_eq!(
        r.cursor.unwrap().created,
        now - 7200,
        "held for its attempts"
    );
    let r = past().since_cursor().await.unwrap();
    assert_eq!(
        (r.failed, r.beyond_lookback, r.duplicates),
        (1, 1, 1),
        "{r:?}"
    );
    assert_eq!(r.cursor.unwrap().created, now - 600 - 60);
    let failed = s.store.failed_events(10).await.unwrap();
    assert!(
        failed.iter().any(|f| f.event_id.as_str() == "evt_poison"),
        "{failed:?}"
    );
    // The next pass no longer lists it.
    let r = reconciler().since_cursor().await.unwrap();
    assert_eq!((r.listed, r.failed), (1, 0), "{r:?}");
}

/// An event whose handler's `handles_event` check panics is recorded as failed, so past
/// the lookback it stops holding the cursor once it had its attempts, as a failing
/// handler's event does (before, nothing recorded it, and it held the cursor for the 30
/// days Stripe lists it).
#[tokio::test]
async fn an_event_whose_check_panics_stops_holding_the_cursor_past_the_lookback() {
    struct PanicsOnPoison;
    #[async_trait]
    impl EventHandler for PanicsOnPoison {
        async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
            Ok(())
        }
        fn handles_event(&self, event: &Event) -> bool {
            assert!(
                event.id().as_str() != "evt_poison",
                "a plan this build does not know"
            );
            true
        }
    }
    let s = setup().await;
    let now = testing::now();
    poison_and_later(&s, now);
    let processor = Arc::new(Processor::new(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        Arc::clone(&s.store),
        PanicsOnPoison,
    ));
    let reconciler = || {
        Reconciler::new(
            s.fake.client().unwrap(),
            Arc::clone(&processor),
            Arc::clone(&s.store),
        )
        .with_lookback(Duration::from_secs(3600))
        .with_attempts_past_lookback(2)
    };
    s.store
        .advance_watermark(
            &reconciler().cursor_keys()[0],
            &Watermark::new(now - 8000, EventId::new("-")),
        )
        .await
        .unwrap();
    let r = reconciler().since_cursor().await.unwrap();
    assert_eq!(
        (r.failed, r.processed, r.beyond_lookback),
        (1, 1, 0),
        "{r:?}"
    );
    assert_eq!(
        r.cursor.map(|c| c.created),
        Some(now - 7200),
        "held for its attempts"
    );
    let r = reconciler().since_cursor().await.unwrap();
    assert_eq!((r.failed, r.beyond_lookback), (1, 1), "{r:?}");
    assert_eq!(r.cursor.map(|c| c.created), Some(now - 600 - 60));
    let failed = s.store.failed_events(10).await.unwrap();
    let poison = failed
        .iter()
        .find(|f| f.event_id.as_str() == "evt_poison")
        .unwrap_or_else(|| panic!("{failed:?}"));
    let error = poison.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("a plan this build does not know"), "{error}");
}

/// A failure past the lookback moves the cursor on only when the store confirmed it
/// keeps the failure: one whose release failed holds the cursor, as any open event does.
#[tokio::test]
async fn a_failure_the_store_did_not_record_holds_the_cursor_past_the_lookback() {
    let s = setup().await;
    let now = testing::now();
    poison_and_later(&s, now);
    let processor = s.failing_releases();
    let reconciler = Reconciler::new(s.fake.client().unwrap(), processor, Arc::clone(&s.store))
        .with_lookback(Duration::from_secs(3600));
    // The cursor is before the poison event, which is older than the hour of lookback.
    s.store
        .advance_watermark(
            &reconciler.cursor_keys()[0],
            &Watermark::new(now - 8000, EventId::new("-")),
        )
        .await
        .unwrap();
    let r = reconciler.since_cursor().await.unwrap();
    assert_eq!((r.failed, r.processed), (1, 1), "{r:?}");
    assert_eq!(r.beyond_lookback, 0, "{r:?}");
    assert_eq!(
        r.cursor.as_ref().map(|c| c.created),
        Some(now - 7200),
        "{r:?}"
    );
    assert!(s.store.failed_events(10).await.unwrap().is_empty());
}

/// `event`'s JSON without `livemode`, which Stripe's schema requires: a listed event
/// this crate cannot read.
fn unreadable(json: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    v.as_object_mut().unwrap().remove("livemode").unwrap();
    v.to_string()
}

/// A listed event the crate cannot read is recorded in the store as failed, with why,
/// and neither stops its page (here a whole page of them: the walk goes on from its
/// last) nor holds the cursor, so later passes move on; snapshot and thin lists alike.
#[tokio::test]
async fn an_unreadable_listed_event_is_recorded_as_failed_and_passes_move_on() {
    let s = setup().await;
    let now = testing::now();
    for i in 0..6 {
        let json = event(&format!("evt_u{i}"), "invoice.paid", now - 2000 + i * 100);
        // Newest first, four a page: the first page is evt_u5 to evt_u2.
        let json = if i >= 2 { unreadable(&json) } else { json };
        s.fake.add_event(&json).unwrap();
    }
    let r = s.reconciler().since_cursor().await.unwrap();
    assert_eq!(
        (r.listed, r.processed, r.unreadable, r.failed),
        (6, 2, 4, 0),
        "{r:?}"
    );
    s.runs.all_once(2);
    assert_eq!(r.cursor.as_ref().unwrap().created, now - 1500 - 60);
    let failed = s.store.failed_events(10).await.unwrap();
    assert_eq!(failed.len(), 4, "{failed:?}");
    for f in &failed {
        assert_eq!(f.event_type, EventType::InvoicePaid);
        let why = f.last_error.as_deref().unwrap();
        assert!(why.contains("livemode"), "{why}");
    }
    // The next pass starts a minute before the newest event (evt_u5, unreadable: recorded
    // again), past the others.
    let r = s.reconciler().since_cursor().await.unwrap();
    assert_eq!(
        (r.listed, r.processed, r.unreadable, r.failed),
        (1, 0, 1, 0),
        "{r:?}"
    );
    assert_eq!(s.store.failed_events(10).await.unwrap().len(), 4);

    for i in 0..3 {
        let n = ThinEventBuilder::new(&format!("evt_tu{i}"), "v1.price.activated")
            .created(now - 30 + i)
            .build();
        let n = if i == 1 { unreadable(&n) } else { n };
        s.fake.add_v2_event(&n).unwrap();
    }
    let r = s.reconciler().thin_since_cursor().await.unwrap();
    assert_eq!((r.listed, r.processed, r.unreadable), (3, 2, 1), "{r:?}");
    assert!(s
        .store
        .failed_events(10)
        .await
        .unwrap()
        .iter()
        .any(|f| f.event_id.as_str() == "evt_tu1"));
    assert_eq!(r.cursor.unwrap().created, now - 28 - 60);
}

/// An unreadable listed event the processor's store could not record holds the
/// cursor, as a failure it did not record does: the next pass lists it again.
#[tokio::test]
async fn an_unreadable_event_the_store_did_not_record_holds_the_cursor() {
    let s = setup().await;
    let now = testing::now();
    s.fake
        .add_event(&unreadable(&event("evt_ux", "invoice.paid", now - 900)))
        .unwrap();
    s.fake
        .add_event(&event("evt_uy", "invoice.paid", now - 300))
        .unwrap();
    let processor = s.failing_releases();
    let reconciler = Reconciler::new(s.fake.client().unwrap(), processor, Arc::clone(&s.store));
    let r = reconciler.since_cursor().await.unwrap();
    assert_eq!((r.processed, r.unreadable, r.failed), (1, 0, 1), "{r:?}");
    assert_eq!(r.cursor.as_ref().map(|c| c.created), Some(now - 900));
    assert!(s.store.failed_events(10).await.unwrap().is_empty());
}

/// Takes `invoice.paid` and any type this release does not know, so a reconciler lists
/// every type.
struct PaidAndUnknown;

#[async_trait]
impl EventHandler for PaidAndUnknown {
    async fn handle(&self, _: &Event) -> Result<(), HandlerError> {
        Ok(())
    }

    fn handles(&self, t: &EventType) -> bool {
        matches!(t, EventType::InvoicePaid | EventType::Unknown(_))
    }
}

/// Listing every type, an unreadable event of a type the processor does not take is
/// skipped (as its delivery would be ignored), and one of a type it takes is recorded.
#[tokio::test]
async fn an_unreadable_event_of_a_type_not_taken_is_skipped() {
    let s = setup().await;
    let now = testing::now();
    s.fake
        .add_event(&unreadable(&event(
            "evt_skip",
            "charge.refunded",
            now - 1200,
        )))
        .unwrap();
    s.fake
        .add_event(&unreadable(&event("evt_take", "invoice.paid", now - 900)))
        .unwrap();
    let processor = Arc::new(Processor::new(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        Arc::clone(&s.store),
        PaidAndUnknown,
    ));
    assert_eq!(processor.enabled_events().snapshot, ["*"]);
    let reconciler = Reconciler::new(s.fake.client().unwrap(), processor, Arc::clone(&s.store));
    let r = reconciler.since_cursor().await.unwrap();
    assert_eq!((r.listed, r.skipped, r.unreadable), (2, 1, 1), "{r:?}");
    let failed = s.store.failed_events(10).await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].event_id.as_str(), "evt_take");
}

/// An unreadable thin event is claimed under its snapshot twin's id, as its delivery
/// would be: a twin the webhook completed makes it a duplicate, not a failure recorded
/// under a key nothing completes.
#[tokio::test]
async fn an_unreadable_thin_event_is_keyed_on_its_snapshot_twin() {
    let s = setup().await;
    let (snapshot, thin) = testing::event_pair("evt_twin", "customer.created", "cus_1");
    s.delivered(&snapshot).await;
    s.fake.add_v2_event(&unreadable(&thin)).unwrap();
    let r = s.reconciler().thin_since_cursor().await.unwrap();
    assert_eq!((r.listed, r.duplicates, r.unreadable), (1, 1, 0), "{r:?}");
    assert!(s.store.failed_events(10).await.unwrap().is_empty());
}

/// A `MemoryStore` that misbehaves on cue: every release fails (a failed handler's
/// failure is then not recorded), or the watermark read right after a cursor moved fails.
#[derive(Default)]
struct Faulty {
    inner: Arc<MemoryStore>,
    fail_releases: bool,
    fail_read_after_advance: bool,
    /// Refuses the write of when a pass listed (`{cursor}:listed`).
    fail_listed_writes: bool,
    advanced: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl IdempotencyStore for Faulty {
    async fn claim(
        &self,
        id: &EventId,
        event_type: &EventType,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.inner.claim(id, event_type, lease).await
    }

    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        self.inner.complete(token).await
    }

    async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError> {
        if self.fail_releases {
            return Err(StoreError::unavailable("release refused"));
        }
        self.inner.release(token, reason).await
    }

    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.inner.extend(token, lease).await
    }
}

#[async_trait]
impl OrderingStore for Faulty {
    async fn lock_object(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<stripe_webhooks::ObjectLock, StoreError> {
        self.inner.lock_object(object_id, holder, lease).await
    }

    async fn complete_applied(
        &self,
        token: &ClaimToken,
        object_id: &str,
        holder: &str,
        applied: &Watermark,
    ) -> Result<(), StoreError> {
        self.inner
            .complete_applied(token, object_id, holder, applied)
            .await
    }

    async fn unlock_object(&self, object_id: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.unlock_object(object_id, holder).await
    }

    async fn watermark(&self, object_id: &str) -> Result<Option<Watermark>, StoreError> {
        if self
            .advanced
            .swap(false, std::sync::atomic::Ordering::SeqCst)
            && self.fail_read_after_advance
        {
            return Err(StoreError::unavailable("read refused"));
        }
        self.inner.watermark(object_id).await
    }

    async fn advance_watermark(&self, key: &str, to: &Watermark) -> Result<(), StoreError> {
        if self.fail_listed_writes && key.ends_with(":listed") {
            return Err(StoreError::unavailable("write refused"));
        }
        self.inner.advance_watermark(key, to).await?;
        self.advanced
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// A pass whose cursor moved is a pass done: a failed read of the cursor afterwards
/// reports where the pass moved it rather than failing the pass (whose events ran). And
/// when a pass listed only feeds a warning: a store that refuses to record it does not
/// fail the pass either.
#[tokio::test]
async fn store_failures_after_the_cursor_moved_still_report_the_pass() {
    for fail_listed_writes in [false, true] {
        let s = setup().await;
        let now = testing::now();
        s.fake
            .add_event(&event("evt_r1", "invoice.paid", now - 600))
            .unwrap();
        let cursors = Arc::new(Faulty {
            inner: Arc::clone(&s.store),
            fail_read_after_advance: !fail_listed_writes,
            fail_listed_writes,
            ..Faulty::default()
        });
        let reconciler = Reconciler::new(
            s.fake.client().unwrap(),
            Arc::clone(&s.processor),
            Arc::clone(&cursors),
        );
        let r = reconciler.since_cursor().await.unwrap();
        assert_eq!(r.processed, 1, "{r:?}");
        assert_eq!(r.cursor.as_ref().map(|c| c.created), Some(now - 600 - 60));
        let key = &reconciler.cursor_keys()[0];
        assert_eq!(s.store.watermark(key).await.unwrap(), r.cursor);
        // Nothing was recorded of when it listed, where that write was refused.
        let listed = s.store.watermark(&format!("{key}:listed")).await.unwrap();
        assert_eq!(listed.is_none(), fail_listed_writes, "{listed:?}");
        s.runs.all_once(1);
    }
}

#[tokio::test]
async fn listing_errors_keep_the_cursor_and_say_why() {
    let s = setup().await;
    let now = testing::now();
    s.fake
        .add_event(&event("evt_e1", "invoice.paid", now - 10))
        .unwrap();
    s.fake.fail_next(
        1,
        Fault::ServerError {
            should_retry: Some(false),
        },
    );
    let err = s.reconciler().since_cursor().await.unwrap_err();
    assert!(matches!(err, ReconcileError::Client(_)), "{err}");
    assert_eq!(
        s.store
            .watermark(&s.reconciler().cursor_keys()[0])
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.runs.total(), 0);
    // The client rides out a short 429 storm within its deadline.
    s.fake.fail_next(
        4,
        Fault::TooManyRequests {
            retry_after_secs: Some(0),
        },
    );
    let r = s.reconciler().since_cursor().await.unwrap();
    assert_eq!(r.processed, 1);
}

/// Two reconcilers on one store over processors that take different types keep
/// cursors of their own: with one shared cursor, the one with nothing open moved it past
/// the other's failed event, which no later pass listed again. A cursor of another key
/// (here the key of earlier development versions) is not where a new one starts: it
/// starts at the lookback.
#[tokio::test]
async fn reconcilers_of_different_types_keep_their_own_cursors() {
    // Pinned: a change to how a processor that names its types is keyed would start
    // every such reconciler over from its lookback (the hash is of
    // `customer.created,invoice.paid`; the thin handler takes every type).
    assert_eq!(
        setup().await.reconciler().cursor_keys(),
        [
            "reconcile:default:platform/test:897b94b7:v1",
            "reconcile:default:platform/test:all:v2"
        ]
    );
    let s = setup().await;
    let now = testing::now();
    s.fake
        .add_event(&event("evt_paid", "invoice.paid", now - 600))
        .unwrap();
    let other = Arc::new(Processor::new(
        Verifier::new(SigningSecret::new("whsec_other_types").unwrap()),
        Arc::clone(&s.store),
        EventRouter::new().on(EventType::CustomerUpdated, |_e| {
            Box::pin(async { Err(HandlerError::new(std::io::Error::other("down"))) })
        }),
    ));
    let failing = Reconciler::new(
        s.fake.client().unwrap(),
        Arc::clone(&other),
        Arc::clone(&s.store),
    );
    let keys = (s.reconciler().cursor_keys(), failing.cursor_keys());
    assert_ne!(keys.0[0], keys.1[0]);
    assert!(
        keys.0[0].starts_with("reconcile:default:platform/test:"),
        "{keys:?}"
    );
    s.fake
        .add_event(&event("evt_cust", "customer.updated", now - 600))
        .unwrap();
    let f = failing.since_cursor().await.unwrap();
    assert_eq!(f.failed, 1, "{f:?}");
    let held = s.store.watermark(&keys.1[0]).await.unwrap().unwrap();
    assert!(
        held.created <= now - 600,
        "held at the failed event: {held:?}"
    );
    // The other reconciler settles everything it lists and moves its own cursor on;
    // the failing one's stays where it was.
    s.reconciler().since_cursor().await.unwrap();
    assert_eq!(s.store.watermark(&keys.1[0]).await.unwrap(), Some(held));
    assert!(failing.since_cursor().await.unwrap().failed == 1);

    // An earlier version's cursor (`reconcile:{name}:v1`), or any other key's, is not
    // where a new key starts: a new account or type set has its own events to settle.
    let legacy = Reconciler::new(
        s.fake.client().unwrap(),
        Arc::clone(&other),
        Arc::clone(&s.store),
    )
    .with_name("legacy");
    s.store
        .advance_watermark(
            "reconcile:legacy:v1",
            &Watermark::new(now - 100, EventId::new("-")),
        )
        .await
        .unwrap();
    let r = legacy.since_cursor().await.unwrap();
    assert_eq!(
        r.listed, 1,
        "the customer event before the old cursor: {r:?}"
    );
    let lookback = now - 3 * 24 * 3600;
    let gte: i64 = s
        .last_request("/v1/events")
        .query_value("created[gte]")
        .unwrap()
        .parse()
        .unwrap();
    assert!((lookback - 5..=lookback + 5).contains(&gte), "{gte}");
}

#[tokio::test]
async fn connect_reconcilers_list_with_their_account() {
    let s = setup().await;
    let acct_event = {
        let mut v: serde_json::Value =
            serde_json::from_str(&event("evt_acct", "invoice.paid", testing::now() - 5)).unwrap();
        v["account"] = "acct_9".into();
        v.to_string()
    };
    s.fake.add_event(&acct_event).unwrap();
    // The platform's reconciler does not see a connected account's events.
    let platform = s.reconciler().since_cursor().await.unwrap();
    assert_eq!(
        (platform.listed, platform.processed),
        (0, 0),
        "{platform:?}"
    );
    let one = stripe_webhooks::dangerous::parse_unverified(acct_event.as_bytes()).unwrap();
    let ctx = RequestContext::for_event(&one);
    // Without a name of its own: the account is in its cursor's key, apart from the
    // platform's.
    let acct = s.reconciler().with_context(ctx.clone());
    let r = acct.since_cursor().await.unwrap();
    assert_eq!(r.processed, 1);
    let listed = s.last_request("/v1/events");
    assert_eq!(listed.header("stripe-account"), Some("acct_9"));
    let (acct_key, platform_key) = (
        acct.cursor_keys()[0].clone(),
        s.reconciler().cursor_keys()[0].clone(),
    );
    // (The fake's key is a test-mode one.)
    assert!(acct_key.contains(":acct_9/test:"), "{acct_key}");
    assert!(platform_key.contains(":platform/test:"), "{platform_key}");
    // The account's pass moved its own cursor, not the platform's (which listed nothing).
    assert!(s.store.watermark(&acct_key).await.unwrap().is_some());
    assert_eq!(s.store.watermark(&platform_key).await.unwrap(), None);

    // The same reconciler's thin pass asks the v2 list with `Stripe-Context` (the v2
    // API's header), not `Stripe-Account`, and finds the account's thin events.
    let thin = ThinEventBuilder::new("evt_thin_acct", "v1.price.activated")
        .created(testing::now() - 5)
        .context("acct_9")
        .build();
    s.fake.add_v2_event(&thin).unwrap();
    let r = s
        .reconciler()
        .with_name("acct_9")
        .with_context(ctx)
        .thin_since_cursor()
        .await
        .unwrap();
    assert_eq!((r.listed, r.processed), (1, 1), "{r:?}");
    let listed = s.last_request("/v2/core/events");
    assert_eq!(listed.header("stripe-context"), Some("acct_9"));
    assert_eq!(listed.header("stripe-account"), None);

    // A context that is not one account (a path of them) lists v1 events with
    // `Stripe-Context` as given, and finds the last account's events only.
    let nested = {
        let mut v: serde_json::Value =
            serde_json::from_str(&event("evt_nested", "invoice.paid", testing::now() - 5)).unwrap();
        v["account"] = "acct_2".into();
        v.to_string()
    };
    s.fake.add_event(&nested).unwrap();
    let r = s
        .reconciler()
        .with_name("nested")
        .with_context(RequestContext::platform().with_stripe_context("acct_1/acct_2"))
        .since_cursor()
        .await
        .unwrap();
    assert_eq!((r.listed, r.processed), (1, 1), "{r:?}");
    let listed = s.last_request("/v1/events");
    assert_eq!(listed.header("stripe-context"), Some("acct_1/acct_2"));
    assert_eq!(listed.header("stripe-account"), None);
    assert_eq!(s.runs.runs.lock().unwrap().get("evt_nested"), Some(&1));
}

#[tokio::test]
async fn thin_events_reconcile_from_the_v2_list_and_share_the_dedupe_key() {
    let s = setup().await;
    let now = testing::now();
    let (snapshot, thin) = testing::event_pair("evt_pair", "customer.created", "cus_1");
    // The snapshot twin was handled by the webhook path.
    s.delivered(&snapshot).await;
    s.fake.add_v2_event(&thin).unwrap();
    for i in 0..5 {
        let n = ThinEventBuilder::new(&format!("evt_t{i}"), "v1.price.activated")
            .created(now - 30 + i)
            .build();
        s.fake.add_v2_event(&n).unwrap();
    }
    let r = s.reconciler().thin_since_cursor().await.unwrap();
    assert_eq!((r.listed, r.processed, r.duplicates), (6, 5, 1), "{r:?}");
    s.runs.all_once(6);
    assert!(s
        .store
        .watermark(&s.reconciler().cursor_keys()[1])
        .await
        .unwrap()
        .is_some());
    let again = s.reconciler().thin_since_cursor().await.unwrap();
    assert_eq!(again.processed, 0);
}

/// With the ordering guard, missed updates of one object apply oldest first: none is
/// stale, and the handler sees them in order.
#[tokio::test]
async fn missed_updates_apply_in_order_under_the_ordering_guard() {
    struct Order(Mutex<Vec<String>>);
    #[async_trait]
    impl EventHandler for Order {
        async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
            self.0.lock().unwrap().push(event.id().to_string());
            Ok(())
        }
    }
    let fake = FakeStripe::start().await.unwrap();
    let now = testing::now();
    for (id, created) in [
        ("evt_o1", now - 30),
        ("evt_o2", now - 20),
        ("evt_o3", now - 20),
        ("evt_o4", now - 10),
    ] {
        let mut v: serde_json::Value = serde_json::from_str(&testing::event_json(
            id,
            "customer.updated",
            r#"{"id":"cus_1","object":"customer"}"#,
        ))
        .unwrap();
        v["created"] = created.into();
        fake.add_event(&v.to_string()).unwrap();
    }
    let store = Arc::new(MemoryStore::new());
    let order = Arc::new(Order(Mutex::new(Vec::new())));
    let processor = Arc::new(Processor::ordered(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        Arc::clone(&store),
        Arc::clone(&order),
        stripe_webhooks::TiePolicy::Run,
    ));
    let r = Reconciler::new(fake.client().unwrap(), processor, store)
        .with_page_size(2)
        .since_cursor()
        .await
        .unwrap();
    assert_eq!((r.processed, r.skipped), (4, 0), "{r:?}");
    assert_eq!(
        order.0.lock().unwrap().as_slice(),
        ["evt_o1", "evt_o2", "evt_o3", "evt_o4"]
    );
}

/// With `with_concurrency(n)`, different objects' events run at once (at most `n`),
/// while one object's events still run one after another, oldest first, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_passes_overlap_objects_but_keep_each_objects_order() {
    #[derive(Default)]
    struct Overlap {
        active: Mutex<(usize, usize)>,
        per_object: Mutex<HashMap<String, Vec<String>>>,
        busy: Mutex<std::collections::HashSet<String>>,
    }
    #[async_trait]
    impl EventHandler for Overlap {
        async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
            let object = event.object_id().unwrap().to_owned();
            assert!(
                self.busy.lock().unwrap().insert(object.clone()),
                "two events of {object} at once"
            );
            {
                let mut a = self.active.lock().unwrap();
                a.0 += 1;
                a.1 = a.1.max(a.0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.active.lock().unwrap().0 -= 1;
            self.busy.lock().unwrap().remove(&object);
            self.per_object
                .lock()
                .unwrap()
                .entry(object)
                .or_default()
                .push(event.id().to_string());
            Ok(())
        }
    }
    let fake = FakeStripe::start().await.unwrap();
    let now = testing::now();
    // 12 customers, 3 updates each, a second apart per customer.
    for round in 0..3_i64 {
        for c in 0..12 {
            let mut v: serde_json::Value = serde_json::from_str(&testing::event_json(
                &format!("evt_c{c}_u{round}"),
                "customer.updated",
                &format!(r#"{{"id":"cus_{c}","object":"customer"}}"#),
            ))
            .unwrap();
            v["created"] = (now - 100 + round).into();
            fake.add_event(&v.to_string()).unwrap();
        }
    }
    let store = Arc::new(MemoryStore::new());
    let handler = Arc::new(Overlap::default());
    let processor = Arc::new(Processor::ordered(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        Arc::clone(&store),
        Arc::clone(&handler),
        stripe_webhooks::TiePolicy::Run,
    ));
    let r = Reconciler::new(fake.client().unwrap(), processor, store)
        .with_page_size(10)
        .with_concurrency(4)
        .since_cursor()
        .await
        .unwrap();
    assert_eq!((r.processed, r.skipped, r.failed), (36, 0, 0), "{r:?}");
    let most = handler.active.lock().unwrap().1;
    assert!((2..=4).contains(&most), "{most} handlers at once");
    let per_object = handler.per_object.lock().unwrap();
    assert_eq!(per_object.len(), 12);
    for (object, ids) in per_object.iter() {
        let c = object.trim_start_matches("cus_");
        let expected: Vec<String> = (0..3).map(|u| format!("evt_c{c}_u{u}")).collect();
        assert_eq!(ids, &expected, "{object} in order, each once");
    }
}

/// Over an ack-fast processor a pass runs no handler: it queues what the webhook never
/// delivered, under the webhook's dedupe keys (snapshot and thin), lists only the
/// workers' types, and the workers then run each event once.
#[tokio::test]
async fn an_ack_fast_processor_queues_reconciled_events_for_its_workers() {
    use stripe_webhooks::queue::{MemoryQueue, QueueAdmin, Worker};

    let fake = FakeStripe::start().await.unwrap();
    let queue = MemoryQueue::new();
    let runs = Arc::new(Runs::default());
    let worker = Worker::new(queue.clone(), Arc::clone(&runs)).with_thin_handler(Arc::clone(&runs));
    let plain = Processor::queued(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        queue.clone(),
    );
    // Without the workers' types, a queued processor takes (and lists) every type.
    assert_eq!(plain.enabled_events().snapshot, ["*"]);
    let processor = Arc::new(plain.with_enabled_events(worker.enabled_events()));
    let mut types = processor.enabled_events().snapshot;
    types.sort_unstable();
    assert_eq!(types, ["customer.created", "invoice.paid"]);

    let now = testing::now();
    for i in 0..5 {
        let body = event(&format!("evt_q{i}"), "invoice.paid", now - 100 + i);
        fake.add_event_with_delivery(&body, i % 2 == 1).unwrap();
    }
    // The webhook queued evt_q0 and the snapshot twin of a thin event already.
    let (snapshot, thin) = testing::event_pair("evt_pair", "customer.created", "cus_1");
    for body in [event("evt_q0", "invoice.paid", now - 100), snapshot] {
        let header = testing::sign(body.as_bytes(), SECRET, now);
        let o = processor.process(Some(&header), body.as_bytes()).await;
        assert_eq!(o.kind().name(), "queued");
    }
    fake.add_v2_event(&thin).unwrap();
    let lone = ThinEventBuilder::new("evt_t0", "v1.price.activated")
        .created(now - 30)
        .build();
    fake.add_v2_event(&lone).unwrap();

    let store = Arc::new(MemoryStore::new());
    let reconciler =
        Reconciler::new(fake.client().unwrap(), Arc::clone(&processor), store).with_page_size(4);
    let r = reconciler.undelivered().await.unwrap();
    assert_eq!(
        (r.listed, r.queued, r.duplicates, r.processed, r.skipped),
        (3, 2, 1, 0, 0),
        "{r:?}"
    );
    let req = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/events")
        .unwrap();
    let mut listed = req.query_values("types[]");
    listed.sort_unstable();
    assert_eq!(listed, ["customer.created", "invoice.paid"]);
    let t = reconciler.thin_since_cursor().await.unwrap();
    assert_eq!((t.listed, t.queued, t.duplicates), (2, 1, 1), "{t:?}");
    assert_eq!(runs.total(), 0, "a pass over a queue runs no handler");
    assert_eq!(queue.counts().await.unwrap().queued, 5);

    // The workers parse what the pass wrote back and run each event once.
    while worker.run_once().await.unwrap() > 0 {}
    runs.all_once(5);
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.completed, counts.dead), (5, 0), "{counts:?}");
    // A second pass finds every event queued already.
    let again = reconciler.undelivered().await.unwrap();
    assert_eq!((again.queued, again.duplicates), (0, 3), "{again:?}");

    // An event the crate cannot read is queued with its JSON, and the worker, which
    // cannot read it either, buries it with why; a pass that lists it again finds it
    // queued.
    fake.add_event_with_delivery(
        &unreadable(&event("evt_qu", "invoice.paid", now - 50)),
        false,
    )
    .unwrap();
    let r = reconciler.undelivered().await.unwrap();
    assert_eq!((r.unreadable, r.queued, r.failed), (1, 0, 0), "{r:?}");
    while worker.run_once().await.unwrap() > 0 {}
    let dead = queue
        .jobs(stripe_webhooks::queue::JobState::Dead, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].key.as_str(), "evt_qu");
    let why = dead[0].last_error.as_deref().unwrap_or_default();
    assert!(why.contains("livemode"), "{why}");
    let again = reconciler.undelivered().await.unwrap();
    assert_eq!((again.unreadable, again.duplicates), (0, 4), "{again:?}");
}

/// A Stripe API whose lists answer fixed pages: `GET /v1/events` always `v1`, and
/// `GET /v2/core/events` `v2`, or an empty page pointing at the same next page (a list
/// that never moves on). It records the context of each request.
struct Stuck {
    v1: String,
    /// The v2 list's answer, when not the default empty page pointing at itself.
    v2: Option<String>,
    contexts: Mutex<Vec<RequestContext>>,
}

fn stuck(v1: String, v2: Option<String>) -> Stuck {
    Stuck {
        v1,
        v2,
        contexts: Mutex::default(),
    }
}

#[async_trait]
impl StripeClient for Stuck {
    async fn get(
        &self,
        ctx: &RequestContext,
        path: &str,
        _query: &[(String, String)],
    ) -> Result<String, stripe_webhooks::client::ClientError> {
        self.contexts.lock().unwrap().push(ctx.clone());
        Ok(match path {
            "/v1/events" => self.v1.clone(),
            _ if self.v2.is_some() => self.v2.clone().unwrap_or_default(),
            _ => r#"{"data":[],"next_page_url":"/v2/core/events?page=tok_same","previous_page_url":null}"#
                .to_owned(),
        })
    }
}

/// A listed event without a readable type is recorded whatever the handler takes
/// (nothing tells it apart); an unreadable thin event is recorded under its snapshot
/// twin's id and type, as its delivery would be claimed.
#[tokio::test]
async fn unreadable_events_without_a_type_or_with_a_twin_are_recorded_as_delivered() {
    let now = testing::now();
    let v1 = format!(
        r#"{{"object":"list","data":[{{"id":"evt_notype","object":"event","created":{}}}],"has_more":false}}"#,
        now - 100
    );
    let v2 = format!(
        r#"{{"data":[{{"id":"evt_thin_x","object":"v2.core.event","type":"v1.customer.updated","created":"{}","snapshot_event":"evt_snap_x"}}],"next_page_url":null,"previous_page_url":null}}"#,
        testing::rfc3339(now - 50)
    );
    let s = setup().await;
    let reconciler = Reconciler::new(
        stuck(v1, Some(v2)),
        Arc::clone(&s.processor),
        Arc::clone(&s.store),
    );
    let r = reconciler.since_cursor().await.unwrap();
    assert_eq!((r.listed, r.unreadable, r.skipped), (1, 1, 0), "{r:?}");
    let r = reconciler.thin_since_cursor().await.unwrap();
    assert_eq!((r.listed, r.unreadable), (1, 1), "{r:?}");
    let failed = s.store.failed_events(10).await.unwrap();
    let of = |id: &str| failed.iter().find(|f| f.event_id.as_str() == id);
    assert!(of("evt_notype").is_some(), "{failed:?}");
    assert!(of("evt_thin_x").is_none(), "{failed:?}");
    assert_eq!(
        of("evt_snap_x").map(|f| f.event_type.clone()),
        Some(EventType::CustomerUpdated),
        "{failed:?}"
    );
}

/// Listed for a connected account (`Stripe-Account`), an event whose body does not name
/// the account is that account's: the handler sees it, and the ordering guard keys its
/// object `acct_…/id`, as the webhook delivery of the same event is keyed.
#[tokio::test]
async fn events_listed_for_an_account_are_that_accounts() {
    let client = Arc::new(stuck(
        format!(
            r#"{{"object":"list","data":[{}],"has_more":false,"url":"/v1/events"}}"#,
            event("evt_no_account", "customer.updated", testing::now() - 100)
        ),
        None,
    ));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::new(MemoryStore::new());
    let recorded = Arc::clone(&seen);
    let processor = Arc::new(Processor::ordered(
        Verifier::new(SigningSecret::new("whsec_accounts").unwrap()),
        Arc::clone(&store),
        EventRouter::new().on(EventType::CustomerUpdated, move |e| {
            recorded
                .lock()
                .unwrap()
                .push(e.account().map(str::to_owned));
            Box::pin(async { Ok(()) })
        }),
        stripe_webhooks::TiePolicy::Run,
    ));
    let r = Reconciler::new(Arc::clone(&client), processor, Arc::clone(&store))
        .with_context(RequestContext::platform().with_stripe_account("acct_9"))
        .since_cursor()
        .await
        .unwrap();
    for ctx in client.contexts.lock().unwrap().iter() {
        assert_eq!(ctx.stripe_account(), Some("acct_9"));
    }
    assert_eq!(r.processed, 1, "{r:?}");
    assert_eq!(*seen.lock().unwrap(), [Some("acct_9".to_owned())]);
    let object = {
        let e = stripe_webhooks::dangerous::parse_unverified(
            event("evt_x", "customer.updated", 0).as_bytes(),
        )
        .unwrap();
        e.object_id().unwrap().to_owned()
    };
    assert!(store
        .watermark(&format!("acct_9/test/{object}"))
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.watermark(&object).await.unwrap(), None);
}

/// A prefix route (`invoice.*`) takes a type Stripe adds after this release: the
/// reconciler lists every type rather than the names this release knows, and the new
/// type's undelivered event runs, as its webhook delivery would.
#[tokio::test]
async fn a_prefix_route_reconciles_types_this_release_does_not_know() {
    let fake = FakeStripe::start().await.unwrap();
    let now = testing::now();
    add_events_of_types(
        &fake,
        now - 100,
        &[
            ("evt_new_type", "invoice.brand_new_thing"),
            ("evt_known", "invoice.paid"),
            ("evt_other", "customer.created"),
        ],
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    let store = Arc::new(MemoryStore::new());
    let processor = Arc::new(Processor::new(
        Verifier::new(SigningSecret::new("whsec_prefix").unwrap()),
        Arc::clone(&store),
        EventRouter::new().on_prefix("invoice.*", move |e| {
            recorded.lock().unwrap().push(e.id().to_string());
            Box::pin(async { Ok(()) })
        }),
    ));
    let r = Reconciler::new(fake.client().unwrap(), processor, store)
        .since_cursor()
        .await
        .unwrap();
    assert_eq!(r.processed, 2, "{r:?}");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["evt_known", "evt_new_type"]);
    let listed = fake
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/v1/events")
        .unwrap();
    assert!(listed.query_values("types[]").is_empty(), "{listed:?}");

    // An ack-fast processor given its workers' types does the same: the worker's
    // `enabled_events` carries what its prefix route takes.
    use stripe_webhooks::queue::{MemoryQueue, QueueAdmin, Worker};
    let queue = MemoryQueue::new();
    let worker = Worker::new(
        queue.clone(),
        EventRouter::new().on_prefix("invoice.*", |_e| Box::pin(async { Ok(()) })),
    );
    let processor = Arc::new(
        Processor::queued(
            Verifier::new(SigningSecret::new("whsec_prefix").unwrap()),
            queue.clone(),
        )
        .with_enabled_events(worker.enabled_events()),
    );
    let r = Reconciler::new(
        fake.client().unwrap(),
        processor,
        Arc::new(MemoryStore::new()),
    )
    .with_name("queued")
    .since_cursor()
    .await
    .unwrap();
    assert_eq!(r.queued, 2, "{r:?}");
    assert!(queue.job(&"evt_new_type".into()).await.unwrap().is_some());
}

/// The same for thin events: listed in a connected account's context (`Stripe-Context`),
/// a notification that does not name one is that account's, so the handler fetches its
/// object there and the ordering guard keys the object `acct_…/id`.
#[tokio::test]
async fn thin_events_listed_in_a_context_are_that_contexts() {
    // No `context`, as the builder makes it.
    let n = ThinEventBuilder::new("evt_thin_no_ctx", "v1.customer.updated")
        .created(testing::now() - 100)
        .related("cus_1", "customer", "/v1/customers/cus_1")
        .snapshot_event("evt_snap_no_ctx")
        .build();
    let client = Arc::new(stuck(
        String::new(),
        Some(format!(
            r#"{{"data":[{n}],"next_page_url":null,"previous_page_url":null}}"#
        )),
    ));
    struct Contexts(Arc<Mutex<Vec<Option<String>>>>);
    #[async_trait]
    impl ThinEventHandler for Contexts {
        async fn handle(&self, n: &EventNotification) -> Result<(), HandlerError> {
            self.0.lock().unwrap().push(n.context.clone());
            Ok(())
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::new(MemoryStore::new());
    let processor = Arc::new(Processor::thin_ordered(
        Verifier::new(SigningSecret::new("whsec_contexts").unwrap()),
        Arc::clone(&store),
        Contexts(Arc::clone(&seen)),
        stripe_webhooks::TiePolicy::Run,
    ));
    let r = Reconciler::new(Arc::clone(&client), processor, Arc::clone(&store))
        .with_context(RequestContext::platform().with_stripe_account("acct_9"))
        .thin_since_cursor()
        .await
        .unwrap();
    for ctx in client.contexts.lock().unwrap().iter() {
        assert_eq!(ctx.stripe_context(), Some("acct_9"));
    }
    assert_eq!(r.processed, 1, "{r:?}");
    assert_eq!(*seen.lock().unwrap(), [Some("acct_9".to_owned())]);
    assert!(store
        .watermark("acct_9/test/cus_1")
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.watermark("cus_1").await.unwrap(), None);
}

/// Two pages, the second repeating an event of the first (the list moved under the
/// walk): the event runs once and is not counted again, and no copy holds the cursor.
#[tokio::test]
async fn an_event_listed_twice_runs_once() {
    #[derive(Default)]
    struct Moving(Mutex<usize>);
    #[async_trait]
    impl StripeClient for Moving {
        async fn get(
            &self,
            _ctx: &RequestContext,
            _path: &str,
            _query: &[(String, String)],
        ) -> Result<String, stripe_webhooks::client::ClientError> {
            let now = testing::now();
            let mut calls = self.0.lock().unwrap();
            *calls += 1;
            let (data, more) = if *calls == 1 {
                (
                    vec![
                        event("evt_twice_b", "invoice.paid", now - 100),
                        event("evt_twice_a", "invoice.paid", now - 200),
                    ],
                    true,
                )
            } else {
                (vec![event("evt_twice_a", "invoice.paid", now - 200)], false)
            };
            Ok(format!(
                r#"{{"object":"list","data":[{}],"has_more":{more},"url":"/v1/events"}}"#,
                data.join(",")
            ))
        }
    }
    let s = setup().await;
    let r = Reconciler::new(
        Moving::default(),
        Arc::clone(&s.processor),
        Arc::clone(&s.store),
    )
    .with_concurrency(4)
    .since_cursor()
    .await
    .unwrap();
    assert_eq!(
        (r.listed, r.processed, r.duplicates, r.in_progress),
        (2, 2, 0, 0),
        "{r:?}"
    );
    s.runs.all_once(2);
}

#[tokio::test]
async fn a_listing_that_stops_moving_fails_the_pass_and_keeps_the_cursor() {
    let s = setup().await;
    let now = testing::now();
    let reconciler = |v1: String| {
        Reconciler::new(
            stuck(v1, None),
            Arc::clone(&s.processor),
            Arc::clone(&s.store),
        )
    };
    // `has_more` with no events: no way to the rest.
    let empty = r#"{"object":"list","data":[],"has_more":true,"url":"/v1/events"}"#;
    let err = reconciler(empty.to_owned())
        .since_cursor()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ReconcileError::ListingStalled { page: 1 }),
        "{err}"
    );
    // Every page ends on the same event: the second page is the first again.
    let same = format!(
        r#"{{"object":"list","data":[{}],"has_more":true,"url":"/v1/events"}}"#,
        event("evt_stuck", "invoice.paid", now - 10)
    );
    let err = reconciler(same.clone()).since_cursor().await.unwrap_err();
    assert!(
        matches!(err, ReconcileError::ListingStalled { page: 2 }),
        "{err}"
    );
    let err = reconciler(same).undelivered().await.unwrap_err();
    assert!(
        matches!(err, ReconcileError::ListingStalled { page: 2 }),
        "{err}"
    );
    // v2: the next page's token is the one just used.
    let err = reconciler(empty.to_owned())
        .thin_since_cursor()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ReconcileError::ListingStalled { page: 2 }),
        "{err}"
    );
    assert!(err.to_string().contains("after page 2"), "{err}");
    // v2: a next page whose URL is not a page of the list (another path, another host)
    // is an error, not the end of the list (the older pages after it would be skipped
    // and the cursor moved past them), and is never fetched.
    let elsewhere = Reconciler::new(
        stuck(
            empty.to_owned(),
            Some(
                r#"{"data":[],"next_page_url":"https://evil.example/v2/core/events?page=x","previous_page_url":null}"#
                    .to_owned(),
            ),
        ),
        Arc::clone(&s.processor),
        Arc::clone(&s.store),
    );
    let err = elsewhere.thin_since_cursor().await.unwrap_err();
    assert!(
        err.to_string().contains("is not a page of /v2/core/events"),
        "{err}"
    );
    // Nothing ran and no cursor moved.
    assert_eq!(s.runs.total(), 0);
    for key in s.reconciler().cursor_keys() {
        assert_eq!(s.store.watermark(&key).await.unwrap(), None, "{key}");
    }
}

/// A v2 list whose every page is the same (one event, or none) under a new token each
/// time, as a proxy adding a parameter of its own to `next_page_url` would make it.
struct Drifting {
    page: String,
    calls: Mutex<usize>,
}

#[async_trait]
impl StripeClient for Drifting {
    async fn get(
        &self,
        _ctx: &RequestContext,
        path: &str,
        _query: &[(String, String)],
    ) -> Result<String, stripe_webhooks::client::ClientError> {
        let mut calls = self.calls.lock().unwrap();
        *calls += 1;
        Ok(match path {
            "/v1/events" => r#"{"object":"list","data":[],"has_more":false}"#.to_owned(),
            _ => format!(
                r#"{{"data":[{}],"next_page_url":"/v2/core/events?page=tok_{calls}","previous_page_url":null}}"#,
                self.page
            ),
        })
    }
}

/// Pages that list nothing new under ever new tokens stop the pass (ten that repeat
/// events, or a hundred empty ones, which a filtered list may give over a quiet span),
/// with nothing run and no cursor moved; before, the pass followed them for good.
#[tokio::test]
async fn a_listing_that_drifts_without_moving_fails_the_pass() {
    let s = setup().await;
    let thin = format!(
        r#"{{"id":"evt_thin_drift","object":"v2.core.event","type":"v1.customer.updated","created":"{}","snapshot_event":"evt_snap_drift"}}"#,
        testing::rfc3339(testing::now() - 50)
    );
    // Empty pages: a hundred. The same event again: the first page was new.
    for (page, stalled_at) in [(String::new(), 100), (thin, 11)] {
        let reconciler = Reconciler::new(
            Drifting {
                page,
                calls: Mutex::new(0),
            },
            Arc::clone(&s.processor),
            Arc::clone(&s.store),
        );
        let err = reconciler.thin_since_cursor().await.unwrap_err();
        assert!(
            matches!(err, ReconcileError::ListingStalled { page } if page == stalled_at),
            "{err}"
        );
    }
    assert_eq!(s.runs.total(), 0);
    for key in s.reconciler().cursor_keys() {
        assert_eq!(s.store.watermark(&key).await.unwrap(), None, "{key}");
    }
}

/// Records each object's updates in the order they run; stalls (once) on one event.
#[derive(Default)]
struct PerObject {
    runs: Mutex<HashMap<String, Vec<String>>>,
    stall_on: Mutex<Option<String>>,
    stalled: tokio::sync::Notify,
}

#[async_trait]
impl EventHandler for PerObject {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let stall = {
            let mut s = self.stall_on.lock().unwrap();
            let hit = s.as_deref() == Some(event.id().as_str());
            if hit {
                *s = None;
            }
            hit
        };
        if stall {
            self.stalled.notify_one();
            std::future::pending::<()>().await;
        }
        let object = event.object_id().unwrap_or("-").to_owned();
        self.runs
            .lock()
            .unwrap()
            .entry(object)
            .or_default()
            .push(event.id().to_string());
        Ok(())
    }
}

/// `evt_{c}_{round}`: round `round` of an update of `cus_{c}`.
fn update(c: usize, round: usize, created: i64) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&testing::event_json(
        &format!("evt_{c}_{round}"),
        "customer.updated",
        &format!(r#"{{"id":"cus_{c}","object":"customer"}}"#),
    ))
    .unwrap();
    v["created"] = created.into();
    v.to_string()
}

fn ordered_on(store: &Arc<MemoryStore>, handler: &Arc<PerObject>) -> Arc<Processor> {
    Arc::new(Processor::ordered(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        Arc::clone(store),
        Arc::clone(handler),
        stripe_webhooks::TiePolicy::Run,
    ))
}

/// A backlog larger than a pass may hold goes window by window of time, oldest first:
/// each event runs once, each object's updates in order (none stale), and a second
/// holding more events than the cap is taken whole.
#[tokio::test]
async fn a_backlog_larger_than_the_buffer_goes_window_by_window() {
    let fake = FakeStripe::start().await.unwrap();
    let now = testing::now();
    // 8 customers × 5 rounds of updates, 500 s apart; then a burst of 7 customers'
    // updates in one second.
    for round in 0..5 {
        for c in 0..8 {
            let created = now - 4000 + 500 * i64::try_from(round).unwrap() + c as i64;
            fake.add_event(&update(c, round, created)).unwrap();
        }
    }
    for c in 100..107 {
        fake.add_event(&update(c, 0, now - 1000)).unwrap();
    }
    let store = Arc::new(MemoryStore::new());
    let handler = Arc::new(PerObject::default());
    let reconciler = Reconciler::new(
        fake.client().unwrap(),
        ordered_on(&store, &handler),
        Arc::clone(&store),
    )
    .with_page_size(3)
    .with_max_buffered(6);
    let r = reconciler.since_cursor().await.unwrap();
    assert_eq!((r.listed, r.processed, r.skipped), (47, 47, 0), "{r:?}");
    // Some windows were listed again, halved.
    assert!(r.pages > 47 / 3 + 1, "{r:?}");
    let runs = handler.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 15, "{runs:?}");
    for c in 0..8 {
        let want: Vec<String> = (0..5).map(|round| format!("evt_{c}_{round}")).collect();
        assert_eq!(runs[&format!("cus_{c}")], want);
    }
    assert_eq!(r.cursor.map(|c| c.created), Some(now - 1000 - 60));
}

/// A pass stopped half-way through a backlog (its future dropped) leaves the cursor
/// past the windows it finished: the next pass resumes there instead of listing the
/// whole backlog again, and every event runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_stopped_half_way_resumes_after_its_last_window() {
    let fake = FakeStripe::start().await.unwrap();
    let now = testing::now();
    for i in 0..20 {
        let created = now - 3000 + 100 * i64::try_from(i).unwrap();
        fake.add_event(&update(i, 0, created)).unwrap();
    }
    let store = Arc::new(MemoryStore::new());
    let handler = Arc::new(PerObject::default());
    *handler.stall_on.lock().unwrap() = Some("evt_9_0".to_owned());
    let processor = ordered_on(&store, &handler);
    let reconciler = Reconciler::new(
        fake.client().unwrap(),
        Arc::clone(&processor),
        Arc::clone(&store),
    )
    .with_page_size(2)
    .with_max_buffered(4);
    let key = reconciler.cursor_keys()[0].clone();
    tokio::select! {
        r = reconciler.since_cursor() => panic!("the pass ended: {r:?}"),
        () = handler.stalled.notified() => {}
    }
    // The stalled event's claim is released by a task of its own.
    assert!(processor.drain(Duration::from_secs(5)).await);
    let cursor = store
        .watermark(&key)
        .await
        .unwrap()
        .expect("moved mid-pass");
    assert!(cursor.created >= now - 3000 - 60, "{cursor:?}");
    assert!(
        cursor.created < now - 3000 + 900,
        "not past evt_9_0: {cursor:?}"
    );
    let r = reconciler.since_cursor().await.unwrap();
    assert!(r.listed < 20, "resumed, not started over: {r:?}");
    let runs = handler.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 20, "{runs:?}");
    assert!(runs.values().all(|v| v.len() == 1), "{runs:?}");
}

/// Thin events go window by window of time too.
#[tokio::test]
async fn a_thin_backlog_larger_than_the_buffer_goes_window_by_window() {
    let s = setup().await;
    let now = testing::now();
    for i in 0..15 {
        let n = ThinEventBuilder::new(&format!("evt_tw{i}"), "v1.price.activated")
            .created(now - 3000 + 100 * i)
            .build();
        s.fake.add_v2_event(&n).unwrap();
    }
    let r = s
        .reconciler()
        .with_page_size(2)
        .with_max_buffered(4)
        .thin_since_cursor()
        .await
        .unwrap();
    assert_eq!((r.listed, r.processed), (15, 15), "{r:?}");
    assert!(r.pages > 15 / 2 + 1, "windows listed again, halved: {r:?}");
    s.runs.all_once(15);
    assert_eq!(r.cursor.map(|c| c.created), Some(now - 3000 + 1400 - 60));
}

/// Over an ack-fast processor, an unreadable thin event is queued under its own id, not
/// its snapshot twin's: the worker buries it (it cannot read it either), and the twin,
/// delivered later, is still queued and run. Queued under the twin's key, its dead job
/// made the twin a duplicate, and the change was never handled.
#[tokio::test]
async fn an_ack_fast_pass_queues_an_unreadable_thin_event_apart_from_its_twin() {
    use stripe_webhooks::queue::{JobState, MemoryQueue, QueueAdmin, Worker};

    let fake = FakeStripe::start().await.unwrap();
    let queue = MemoryQueue::new();
    let runs = Arc::new(Runs::default());
    let worker = Worker::new(queue.clone(), Arc::clone(&runs)).with_thin_handler(Arc::clone(&runs));
    let processor = Arc::new(
        Processor::queued(
            Verifier::new(SigningSecret::new(SECRET).unwrap()),
            queue.clone(),
        )
        .with_enabled_events(worker.enabled_events()),
    );
    let (snapshot, thin) = testing::event_pair("evt_qtwin", "customer.created", "cus_1");
    fake.add_v2_event(&unreadable(&thin)).unwrap();
    let store = Arc::new(MemoryStore::new());
    let r = Reconciler::new(fake.client().unwrap(), Arc::clone(&processor), store)
        .thin_since_cursor()
        .await
        .unwrap();
    assert_eq!((r.listed, r.unreadable), (1, 1), "{r:?}");
    while worker.run_once().await.unwrap() > 0 {}
    let dead = queue.jobs(JobState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].key.as_str(), "evt_thin_evt_qtwin");

    let header = testing::sign(snapshot.as_bytes(), SECRET, testing::now());
    let o = processor.process(Some(&header), snapshot.as_bytes()).await;
    assert_eq!(o.kind().name(), "queued");
    while worker.run_once().await.unwrap() > 0 {}
    runs.all_once(1);
    assert_eq!(runs.runs.lock().unwrap().get("evt_qtwin"), Some(&1));
}

/// A reconciler with a live key and one with a test key, for one account on one store,
/// keep cursors of their own: the test one ran ahead would otherwise move the live one's
/// past live events it never listed.
#[tokio::test]
async fn live_and_test_keys_keep_cursors_of_their_own() {
    use stripe_webhooks::client::{ApiKey, HttpClient};
    let store = Arc::new(MemoryStore::new());
    let processor = Arc::new(Processor::new(
        Verifier::new(SigningSecret::new("whsec_modes").unwrap()),
        Arc::clone(&store),
        Runs::default(),
    ));
    let keys = ["sk_live_modes_1", "sk_test_modes_1"].map(|key| {
        let client = HttpClient::new(ApiKey::new(key).unwrap()).unwrap();
        Reconciler::new(client, Arc::clone(&processor), Arc::clone(&store))
            .with_context(RequestContext::platform().with_stripe_account("acct_1"))
            .cursor_keys()
    });
    assert!(
        keys[0][0].starts_with("reconcile:default:acct_1:"),
        "{keys:?}"
    );
    assert!(
        keys[1][0].starts_with("reconcile:default:acct_1/test:"),
        "{keys:?}"
    );
    assert_ne!(keys[0], keys[1]);

    // A key whose mode the client cannot tell (a proxy's token) takes the processor's
    // mode when it has one, and shares the live cursor only when neither says.
    let proxied = |processor: Arc<Processor>| {
        let client = HttpClient::new(ApiKey::new("proxy_token_1").unwrap()).unwrap();
        Reconciler::new(client, processor, Arc::clone(&store))
            .with_context(RequestContext::platform().with_stripe_account("acct_1"))
            .cursor_keys()
    };
    let test_only = Arc::new(
        Processor::new(
            Verifier::new(SigningSecret::new("whsec_modes").unwrap()),
            Arc::clone(&store),
            Runs::default(),
        )
        .with_livemode(false),
    );
    assert_eq!(proxied(test_only), keys[1]);
    assert_eq!(proxied(Arc::clone(&processor)), keys[0]);
}

/// A processor with a prefix route lists every type (it takes those Stripe adds later),
/// so it keeps a cursor of its own, not the one of a processor that names the same
/// known types (the one that ran ahead moved that cursor past a new type the other never
/// listed), nor that of a prefix route on another stem.
#[tokio::test]
async fn a_prefix_route_and_named_routes_keep_cursors_of_their_own() {
    let fake = FakeStripe::start().await.unwrap();
    let store = Arc::new(MemoryStore::new());
    let keys = |router: EventRouter| {
        let processor = Arc::new(Processor::new(
            Verifier::new(SigningSecret::new("whsec_keys").unwrap()),
            Arc::clone(&store),
            router,
        ));
        Reconciler::new(fake.client().unwrap(), processor, Arc::clone(&store)).cursor_keys()
    };
    let prefix = keys(EventRouter::new().on_prefix("invoice.*", |_e| Box::pin(async { Ok(()) })));
    let named = keys(
        EventType::ALL
            .iter()
            .filter(|t| t.as_str().starts_with("invoice."))
            .fold(EventRouter::new(), |r, t| {
                r.on(t.clone(), |_e| Box::pin(async { Ok(()) }))
            }),
    );
    let other_stem =
        keys(EventRouter::new().on_prefix("customer.*", |_e| Box::pin(async { Ok(()) })));
    assert_ne!(prefix[0], named[0]);
    assert_ne!(prefix[0], other_stem[0], "two prefix routes on other stems");
}

/// A lookback of `Duration::MAX` ("everything") starts at 1970, a time both lists take,
/// not 292 billion years back, which the v2 list refused (its RFC 3339 year out of
/// range) so that no thin pass ever ran.
#[tokio::test]
async fn a_lookback_of_duration_max_lists_from_1970() {
    let s = setup().await;
    let now = testing::now();
    s.fake
        .add_v2_event(
            &ThinEventBuilder::new("evt_thin_max", "v1.customer.created")
                .created(now - 120)
                .build(),
        )
        .unwrap();
    s.fake
        .add_event(&event("evt_max", "invoice.paid", now - 120))
        .unwrap();
    let r = s.reconciler().with_lookback(Duration::MAX);
    let thin = r.thin_since_cursor().await.unwrap();
    assert_eq!(thin.processed, 1, "{thin:?}");
    let v1 = r.since_cursor().await.unwrap();
    assert_eq!(v1.processed, 1, "{v1:?}");
    let listed = s.last_request("/v1/events");
    assert_eq!(listed.query_value("created[gte]"), Some("0"), "{listed:?}");
}

/// A route by name to a type this release does not know (`on(EventType::from_wire(…))`),
/// or a prefix on a stem it does not know, is in the processor's and the worker's
/// `enabled_events`, so a pass lists and runs those events. Before, the list named the
/// known types only, and with few enough of them the pass filtered the new type out.
#[tokio::test]
async fn routes_to_types_this_release_does_not_know_are_reconciled() {
    let fake = FakeStripe::start().await.unwrap();
    let now = testing::now();
    add_events_of_types(
        &fake,
        now - 100,
        &[
            ("evt_brand_new", "invoice.brand_new_thing"),
            ("evt_paid", "invoice.paid"),
            ("evt_unrouted", "invoice.other_new_thing"),
            ("evt_product", "new_product.thing.created"),
        ],
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let router = |seen: &Arc<Mutex<Vec<String>>>| {
        let (a, b) = (Arc::clone(seen), Arc::clone(seen));
        EventRouter::new()
            .on(EventType::InvoicePaid, move |e| {
                a.lock().unwrap().push(e.id().to_string());
                Box::pin(async { Ok(()) })
            })
            .on(EventType::from_wire("invoice.brand_new_thing"), move |e| {
                b.lock().unwrap().push(e.id().to_string());
                Box::pin(async { Ok(()) })
            })
    };
    let store = Arc::new(MemoryStore::new());
    let verifier = || Verifier::new(SigningSecret::new("whsec_new").unwrap());
    let processor = Arc::new(Processor::new(
        verifier(),
        Arc::clone(&store),
        router(&seen),
    ));
    let mut enabled = processor.enabled_events().snapshot;
    enabled.sort();
    assert_eq!(enabled, ["invoice.brand_new_thing", "invoice.paid"]);
    let r = Reconciler::new(fake.client().unwrap(), processor, store)
        .since_cursor()
        .await
        .unwrap();
    assert_eq!(r.processed, 2, "{r:?}");
    let mut ran = seen.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["evt_brand_new", "evt_paid"]);
    let listed = fake
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/v1/events")
        .unwrap();
    let mut types = listed.query_values("types[]");
    types.sort_unstable();
    assert_eq!(types, ["invoice.brand_new_thing", "invoice.paid"]);

    // A prefix on a stem this release does not know: every type is listed.
    let hits = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&hits);
    let on_new_stem = EventRouter::new().on_prefix("new_product.*", move |e| {
        recorded.lock().unwrap().push(e.id().to_string());
        Box::pin(async { Ok(()) })
    });
    let store = Arc::new(MemoryStore::new());
    let processor = Arc::new(Processor::new(verifier(), Arc::clone(&store), on_new_stem));
    assert_eq!(processor.enabled_events().snapshot, ["*"]);
    let r = Reconciler::new(fake.client().unwrap(), processor, store)
        .since_cursor()
        .await
        .unwrap();
    assert_eq!(r.processed, 1, "{r:?}");
    assert_eq!(*hits.lock().unwrap(), ["evt_product"]);

    // A worker's, for an ack-fast processor; and a thin router's.
    let worker = stripe_webhooks::queue::Worker::new(
        stripe_webhooks::queue::MemoryQueue::new(),
        router(&seen),
    );
    let mut enabled = worker.enabled_events().snapshot;
    enabled.sort();
    assert_eq!(enabled, ["invoice.brand_new_thing", "invoice.paid"]);
    let thin = stripe_webhooks::ThinEventRouter::new().on(
        stripe_webhooks::ThinEventType::from_wire("v2.core.brand_new_thing.updated"),
        |_n| Box::pin(async { Ok(()) }),
    );
    let processor =
        Processor::new(verifier(), MemoryStore::new(), Runs::default()).with_thin_handler(thin);
    assert_eq!(
        processor.enabled_events().thin,
        ["v2.core.brand_new_thing.updated"]
    );
}

/// Listed in a context that is not one account (`Stripe-Context: org_1/acct_2`), a v1
/// event that names neither account nor context is that context's, as a thin event
/// listed the same way is: its handler sees the context (and the account it ends in), so
/// its object is fetched there and keyed under that account. Before, it was the
/// platform's.
#[tokio::test]
async fn events_listed_in_a_context_are_that_contexts() {
    let client = Arc::new(stuck(
        format!(
            r#"{{"object":"list","data":[{}],"has_more":false,"url":"/v1/events"}}"#,
            event("evt_no_context", "customer.updated", testing::now() - 100)
        ),
        None,
    ));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    let store = Arc::new(MemoryStore::new());
    let processor = Arc::new(Processor::new(
        Verifier::new(SigningSecret::new("whsec_contexts").unwrap()),
        Arc::clone(&store),
        EventRouter::new().on(EventType::CustomerUpdated, move |e| {
            let ctx = RequestContext::for_event(e);
            recorded.lock().unwrap().push((
                e.context().map(str::to_owned),
                e.account().map(str::to_owned),
                ctx.stripe_context().map(str::to_owned),
            ));
            Box::pin(async { Ok(()) })
        }),
    ));
    let r = Reconciler::new(Arc::clone(&client), processor, store)
        .with_context(RequestContext::platform().with_stripe_context("org_1/acct_2"))
        .since_cursor()
        .await
        .unwrap();
    assert_eq!(r.processed, 1, "{r:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        [(
            Some("org_1/acct_2".to_owned()),
            Some("acct_2".to_owned()),
            Some("org_1/acct_2".to_owned())
        )]
    );
}

/// A router's own `enabled_events` agrees with the processor's for a prefix on a stem
/// this release does not know: every type, not none (an endpoint created from it never
/// had those events delivered).
#[test]
fn a_routers_prefix_on_a_new_stem_enables_every_type() {
    let router = EventRouter::new()
        .on(EventType::InvoicePaid, |_e| Box::pin(async { Ok(()) }))
        .on_prefix("new_product.*", |_e| Box::pin(async { Ok(()) }));
    assert_eq!(router.enabled_events(), ["*"]);
    let known = EventRouter::new().on_prefix("invoice.*", |_e| Box::pin(async { Ok(()) }));
    assert!(known.enabled_events().contains(&"invoice.paid".to_owned()));
    assert!(!known.enabled_events().contains(&"*".to_owned()));
    let thin = stripe_webhooks::ThinEventRouter::new()
        .on_prefix("v2.new_product.*", |_n| Box::pin(async { Ok(()) }));
    assert_eq!(thin.enabled_events(), ["*"]);
}

/// A reconciler stopped for longer than Stripe keeps events (30 days) finds the span
/// before gone: the pass says so, and runs what Stripe still lists (the fake forgets
/// old events as Stripe does).
#[tokio::test]
async fn a_cursor_older_than_stripes_thirty_days_is_reported() {
    use stripe_webhooks::reconcile::EVENT_RETENTION;
    use stripe_webhooks::FixedClock;

    let s = setup().await;
    let t = 1_900_000_000;
    let day = 24 * 3600;
    let kept_from = t - 30 * day;
    assert_eq!(EVENT_RETENTION, Duration::from_secs(30 * 24 * 3600));
    s.fake
        .add_event(&event("evt_gone", "invoice.paid", t - 40 * day))
        .unwrap();
    s.fake
        .add_event(&event("evt_kept", "invoice.paid", t - day))
        .unwrap();
    for (id, created) in [("evt_thin_gone", t - 40 * day), ("evt_thin_kept", t - day)] {
        let n = ThinEventBuilder::new(id, "v1.price.activated")
            .created(created)
            .build();
        s.fake.add_v2_event(&n).unwrap();
    }
    s.fake.retain_events_since(Some(kept_from));
    let client = s.fake.client().unwrap();
    let gone = client
        .retrieve_event(&RequestContext::platform(), "evt_gone")
        .await
        .unwrap_err();
    assert!(gone.is_resource_missing(), "{gone:?}");

    // Cursors last moved 45 days ago.
    let reconciler = || s.reconciler().with_clock(FixedClock(t));
    for key in reconciler().cursor_keys() {
        s.store
            .advance_watermark(&key, &Watermark::new(t - 45 * day, EventId::new("")))
            .await
            .unwrap();
    }
    let r = reconciler().since_cursor().await.unwrap();
    assert_eq!((r.listed, r.processed), (1, 1), "{r:?}");
    assert_eq!(r.unlisted_before, Some(kept_from), "{r:?}");
    let r = reconciler().thin_since_cursor().await.unwrap();
    assert_eq!((r.listed, r.processed), (1, 1), "{r:?}");
    assert_eq!(r.unlisted_before, Some(kept_from), "{r:?}");
    s.runs.all_once(2);

    // The cursors are recent now.
    let r = reconciler().since_cursor().await.unwrap();
    assert_eq!((r.listed, r.unlisted_before), (1, None), "{r:?}");
    // A first pass asking for more than Stripe keeps is not flagged.
    let first_pass = |name: &str| {
        let sixty_days = Duration::from_secs(60 * day as u64);
        let reconciler = reconciler().with_name(name).with_lookback(sixty_days);
        async move { reconciler.since_cursor().await.unwrap() }
    };
    let r = first_pass("first").await;
    assert_eq!((r.listed, r.unlisted_before), (1, None), "{r:?}");
    // Forgetting nothing again lists the old event.
    s.fake.retain_events_since(None);
    let r = first_pass("all").await;
    assert_eq!((r.listed, r.processed), (2, 1), "{r:?}");
}

/// A cursor that is old only because nothing of its types happened (a pass that lists
/// nothing leaves it where it is) is not reported once a pass has listed from it within
/// Stripe's thirty days; a pause of over thirty days since the last pass is.
#[tokio::test]
async fn a_quiet_cursor_is_not_reported_while_passes_keep_listing() {
    use stripe_webhooks::FixedClock;

    let s = setup().await;
    let t = 1_900_000_000;
    let day = 24 * 3600;
    let key = s.reconciler().cursor_keys()[0].clone();
    s.store
        .advance_watermark(&key, &Watermark::new(t - 45 * day, EventId::new("")))
        .await
        .unwrap();
    let pass_at = |now: i64| {
        let reconciler = s.reconciler().with_clock(FixedClock(now));
        async move { reconciler.since_cursor().await.unwrap() }
    };
    // Nobody listed since the cursor: reported, once.
    let r = pass_at(t - 10 * day).await;
    assert_eq!(
        (r.listed, r.unlisted_before),
        (0, Some(t - 40 * day)),
        "{r:?}"
    );
    assert_eq!(
        r.cursor.map(|c| c.created),
        Some(t - 45 * day),
        "the cursor stays"
    );
    // Every later pass within thirty days of the one before: not reported.
    for now in [t, t + 25 * day, t + 54 * day] {
        let r = pass_at(now).await;
        assert_eq!(r.unlisted_before, None, "at {now}: {r:?}");
    }
    // Thirty-one days without a pass.
    let r = pass_at(t + 85 * day).await;
    assert_eq!(r.unlisted_before, Some(t + 55 * day), "{r:?}");
}
