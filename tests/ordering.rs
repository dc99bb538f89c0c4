//! The ordering guard (`Processor::ordered`): stale events, object locks, ties, failures.
//! The multi-process proofs on PostgreSQL and Redis are in `multiprocess.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stripe_webhooks::{
    async_trait, dangerous, testing, Claim, ClaimToken, Event, EventHandler, EventId, EventRouter,
    EventType, HandlerError, IdempotencyStore, LockedClaim, MemoryStore, ObjectLock, OrderingStore,
    OutcomeKind, Processor, SigningSecret, StoreError, TiePolicy, Verifier, Watermark,
};

const BASE: i64 = 1_700_000_000;

fn update(id: &str, object: &str, created: i64) -> Event {
    customer_updated(
        id,
        &format!(r#"{{"id":"{object}","object":"customer"}}"#),
        created,
    )
}

/// A `customer.updated` event around `customer` (JSON), created at `created`.
fn customer_updated(id: &str, customer: &str, created: i64) -> Event {
    event_at(id, "customer.updated", customer, created, |_| {})
}

/// An event of type `ty` around `object` (JSON), created at `created`, its JSON changed
/// by `edit` before it is parsed.
fn event_at(
    id: &str,
    ty: &str,
    object: &str,
    created: i64,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Event {
    let mut v: serde_json::Value =
        serde_json::from_str(&testing::event_json(id, ty, object)).unwrap();
    v["created"] = created.into();
    edit(&mut v);
    dangerous::parse_unverified(v.to_string().as_bytes()).unwrap()
}

#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<String>>,
    stale: Mutex<Vec<(String, String)>>,
    delay: Duration,
    /// How long `handle_stale` takes.
    stale_delay: Duration,
    fail_on: Option<&'static str>,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        tokio::time::sleep(self.delay).await;
        if self.fail_on == Some(event.id().as_str()) {
            return Err(HandlerError::new("downstream down"));
        }
        self.applied.lock().unwrap().push(event.id().to_string());
        Ok(())
    }

    async fn handle_stale(&self, event: &Event, watermark: &Watermark) -> Result<(), HandlerError> {
        tokio::time::sleep(self.stale_delay).await;
        self.stale
            .lock()
            .unwrap()
            .push((event.id().to_string(), watermark.event_id.to_string()));
        Ok(())
    }
}

fn processor(store: impl OrderingStore, h: Arc<Recorder>, ties: TiePolicy) -> Processor {
    Processor::ordered(
        Verifier::new(SigningSecret::new(common::SECRET).unwrap()),
        store,
        h,
        ties,
    )
}

#[tokio::test]
async fn an_older_event_is_stale_and_goes_to_handle_stale() {
    let h = Arc::new(Recorder::default());
    let store = Arc::new(MemoryStore::new());
    let p = processor(Arc::clone(&store), Arc::clone(&h), TiePolicy::Run);
    assert_eq!(
        p.process_event(&update("evt_2", "cus_1", BASE + 2))
            .await
            .kind()
            .name(),
        "processed"
    );
    let o = p.process_event(&update("evt_1", "cus_1", BASE + 1)).await;
    assert_eq!(o.status(), 200);
    let OutcomeKind::Stale { watermark } = o.kind() else {
        panic!("{o:?}")
    };
    assert_eq!(
        (watermark.created, watermark.event_id.as_str()),
        (BASE + 2, "evt_2")
    );
    assert_eq!(h.applied.lock().unwrap().as_slice(), ["evt_2"]);
    assert_eq!(
        h.stale.lock().unwrap().as_slice(),
        [("evt_1".to_owned(), "evt_2".to_owned())]
    );
    // The stale event is completed: Stripe's retry of it is a duplicate.
    assert_eq!(
        p.process_event(&update("evt_1", "cus_1", BASE + 1))
            .await
            .kind()
            .name(),
        "duplicate"
    );
    // A newer one applies and moves the watermark; other objects are independent.
    assert_eq!(
        p.process_event(&update("evt_3", "cus_1", BASE + 3))
            .await
            .kind()
            .name(),
        "processed"
    );
    assert_eq!(
        p.process_event(&update("evt_o", "cus_2", BASE))
            .await
            .kind()
            .name(),
        "processed"
    );
    assert_eq!(
        store
            .watermark("cus_1")
            .await
            .unwrap()
            .unwrap()
            .event_id
            .as_str(),
        "evt_3"
    );
}

#[tokio::test]
async fn ties_follow_the_policy() {
    for (ties, want) in [(TiePolicy::Run, "processed"), (TiePolicy::Stale, "stale")] {
        let h = Arc::new(Recorder::default());
        let p = processor(MemoryStore::new(), Arc::clone(&h), ties.clone());
        assert_eq!(
            p.process_event(&update("evt_a", "cus_1", BASE))
                .await
                .kind()
                .name(),
            "processed"
        );
        assert_eq!(
            p.process_event(&update("evt_b", "cus_1", BASE))
                .await
                .kind()
                .name(),
            want,
            "{ties:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_object_at_a_time_and_a_waiting_event_is_409() {
    let h = Arc::new(Recorder {
        delay: Duration::from_millis(300),
        ..Recorder::default()
    });
    let store = MemoryStore::new();
    let p = Arc::new(processor(store.clone(), Arc::clone(&h), TiePolicy::Run));
    let done = p.process_event(&update("evt_a", "cus_1", BASE + 1)).await;
    assert_eq!(done.kind().name(), "processed");
    let slow = {
        let p = Arc::clone(&p);
        tokio::spawn(async move { p.process_event(&update("evt_s", "cus_1", BASE + 5)).await })
    };
    // Once the slow event holds its claim (and so its object).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stripe_webhooks::StoreAdmin::record(&store, &EventId::new("evt_s"))
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "evt_s never claimed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let o = p.process_event(&update("evt_w", "cus_1", BASE + 4)).await;
    assert_eq!((o.status(), o.kind().name()), (409, "in_progress"));
    assert!(o.retry_after_secs().is_some());
    // A redelivery of an event that completed has nothing to wait for: 200, held or not.
    let again = p.process_event(&update("evt_a", "cus_1", BASE + 1)).await;
    assert_eq!((again.status(), again.kind().name()), (200, "duplicate"));
    // Another object is not held up.
    let other = p.process_event(&update("evt_x", "cus_2", BASE)).await;
    assert_eq!(other.kind().name(), "processed");
    assert_eq!(slow.await.unwrap().kind().name(), "processed");
    // Stripe's retry of the waiting (older) event: stale now.
    assert_eq!(
        p.process_event(&update("evt_w", "cus_1", BASE + 4))
            .await
            .kind()
            .name(),
        "stale"
    );
}

#[tokio::test]
async fn a_failed_handler_frees_the_object_and_keeps_the_watermark() {
    let h = Arc::new(Recorder {
        fail_on: Some("evt_bad"),
        ..Recorder::default()
    });
    let store = Arc::new(MemoryStore::new());
    let p = processor(Arc::clone(&store), Arc::clone(&h), TiePolicy::Run);
    assert_eq!(
        p.process_event(&update("evt_1", "cus_1", BASE + 1))
            .await
            .kind()
            .name(),
        "processed"
    );
    let o = p.process_event(&update("evt_bad", "cus_1", BASE + 2)).await;
    assert_eq!(o.status(), 500);
    assert_eq!(
        store
            .watermark("cus_1")
            .await
            .unwrap()
            .unwrap()
            .event_id
            .as_str(),
        "evt_1"
    );
    // The object is free at once (no 409), and the watermark did not move.
    assert_eq!(
        p.process_event(&update("evt_1b", "cus_1", BASE + 1))
            .await
            .kind()
            .name(),
        "processed"
    );
}

#[tokio::test]
async fn events_without_an_object_id_run_unguarded() {
    let h = Arc::new(Recorder::default());
    let p = processor(MemoryStore::new(), Arc::clone(&h), TiePolicy::Run);
    let body = testing::event_json(
        "evt_up",
        "invoice.upcoming",
        r#"{"object":"invoice","customer":"cus_1"}"#,
    );
    let e = dangerous::parse_unverified(body.as_bytes()).unwrap();
    assert_eq!(e.object_id(), None);
    assert_eq!(p.process_event(&e).await.kind().name(), "processed");
}

/// 30 objects × 5 updates, each twice, all at once on one processor: every object ends
/// at its newest update, and no update is applied after a newer one of its object.
async fn shuffled_updates_end_in_order(store: impl OrderingStore) {
    let h = Arc::new(Recorder {
        delay: Duration::from_millis(3),
        ..Recorder::default()
    });
    let p = Arc::new(processor(store, Arc::clone(&h), TiePolicy::Run));
    let mut events = Vec::new();
    for o in 0..30 {
        for v in 1..=5 {
            for _ in 0..2 {
                events.push(update(
                    &format!("evt_{o}_{v}"),
                    &format!("cus_{o}"),
                    BASE + v,
                ));
            }
        }
    }
    let mut seed = 7_u64;
    for i in (1..events.len()).rev() {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        events.swap(i, (seed >> 33) as usize % (i + 1));
    }
    let mut tasks = Vec::new();
    for e in events {
        let p = Arc::clone(&p);
        tasks.push(tokio::spawn(async move {
            loop {
                let o = p.process_event(&e).await;
                if o.status() == 200 {
                    return;
                }
                assert_eq!(o.status(), 409, "{o:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let applied = h.applied.lock().unwrap().clone();
    for o in 0..30 {
        let versions: Vec<i64> = applied
            .iter()
            .filter_map(|id| id.strip_prefix(&format!("evt_{o}_")))
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(versions.last(), Some(&5), "object {o}: {versions:?}");
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "object {o}: {versions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shuffled_updates_end_in_order_on_memory() {
    shuffled_updates_end_in_order(MemoryStore::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shuffled_updates_end_in_order_on_sqlite() {
    let dir = common::TempDir::new("ordering");
    let store = stripe_webhooks::SqliteStore::connect(dir.join("events.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    shuffled_updates_end_in_order(store).await;
}

/// `TiePolicy::Fetch`: a same-second event runs on the object fetched from the API; a
/// failed fetch is a 500, never the stale snapshot.
#[cfg(feature = "client")]
#[tokio::test]
async fn a_tie_runs_on_the_fetched_object_with_the_fetch_policy() {
    struct Seen(Mutex<Vec<String>>);
    #[async_trait]
    impl EventHandler for Seen {
        async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
            let v: serde_json::Value = serde_json::from_str(event.raw_object().get()).unwrap();
            let name = v["name"].as_str().unwrap_or("-").to_owned();
            self.0.lock().unwrap().push(name);
            Ok(())
        }
    }
    let fake = testing::FakeStripe::start().await.unwrap();
    fake.add_object(
        "/v1/customers/cus_1",
        r#"{"id":"cus_1","object":"customer","name":"from the API"}"#,
    )
    .unwrap();
    let seen = Arc::new(Seen(Mutex::new(Vec::new())));
    let p = Processor::ordered(
        Verifier::new(SigningSecret::new(common::SECRET).unwrap()),
        MemoryStore::new(),
        Arc::clone(&seen),
        TiePolicy::Fetch(Arc::new(fake.client().unwrap())),
    );
    let named = |id: &str, created: i64, name: &str| {
        let customer = format!(r#"{{"id":"cus_1","object":"customer","name":"{name}"}}"#);
        customer_updated(id, &customer, created)
    };
    assert_eq!(
        p.process_event(&named("evt_a", BASE, "snapshot a"))
            .await
            .kind()
            .name(),
        "processed"
    );
    assert_eq!(
        p.process_event(&named("evt_b", BASE, "snapshot b"))
            .await
            .kind()
            .name(),
        "processed"
    );
    assert_eq!(
        seen.0.lock().unwrap().as_slice(),
        ["snapshot a", "from the API"],
        "no watermark yet: the first runs as sent; the tie runs on the fetched object"
    );
    // A transient failure to fetch is a 500 (Stripe retries), never the stale snapshot.
    fake.fail_next(
        1,
        testing::Fault::ServerError {
            should_retry: Some(false),
        },
    );
    let o = p.process_event(&named("evt_c", BASE, "snapshot c")).await;
    assert_eq!(o.status(), 500, "{o:?}");
    assert_eq!(seen.0.lock().unwrap().len(), 2);
    // An object that cannot be fetched for good runs on its snapshot, rather than
    // failing every retry for three days: a deleted customer, which Stripe answers with
    // its deleted stub (never handed to the handler as the customer's state)…
    fake.add_object(
        "/v1/customers/cus_1",
        r#"{"id":"cus_1","object":"customer","deleted":true}"#,
    )
    .unwrap();
    let o = p.process_event(&named("evt_c", BASE, "snapshot c")).await;
    assert_eq!(o.kind().name(), "processed", "{o:?}");
    assert_eq!(
        seen.0.lock().unwrap().last().map(String::as_str),
        Some("snapshot c")
    );
    // …and any object Stripe answers 404 `resource_missing` for.
    fake.remove_object("/v1/customers/cus_1");
    let o = p.process_event(&named("evt_d", BASE, "snapshot d")).await;
    assert_eq!(o.kind().name(), "processed", "{o:?}");
    assert_eq!(
        seen.0.lock().unwrap().last().map(String::as_str),
        Some("snapshot d")
    );
}

/// The very event a watermark names, delivered again after its record was evicted (or
/// purged) while the watermark stayed, is no tie under `TiePolicy::Fetch`: it runs as it
/// is, without a fetch (which, failing, answered 500 until the API came back).
#[cfg(feature = "client")]
#[tokio::test]
async fn the_watermarks_own_event_again_is_no_tie_to_fetch_for() {
    let fake = testing::FakeStripe::start().await.unwrap();
    let h = Arc::new(Recorder::default());
    let p = Processor::ordered(
        Verifier::new(SigningSecret::new(common::SECRET).unwrap()),
        MemoryStore::new().with_max_records(2),
        Arc::clone(&h),
        TiePolicy::Fetch(Arc::new(fake.client().unwrap())),
    );
    let applied = update("evt_wm_own", "cus_wm_own", BASE + 5);
    assert_eq!(p.process_event(&applied).await.kind().name(), "processed");
    // Two older events of the object: stale, and their records evict the first one's.
    for (id, at) in [("evt_wm_old_1", BASE + 1), ("evt_wm_old_2", BASE + 2)] {
        let o = p.process_event(&update(id, "cus_wm_own", at)).await;
        assert_eq!(o.kind().name(), "stale");
    }
    let o = p.process_event(&applied).await;
    assert_eq!(o.kind().name(), "processed", "{o:?}");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert_eq!(h.applied.lock().unwrap().len(), 2);
}

/// A delivery dropped mid-handler (a client that hung up) frees its object at once: the
/// next event of the object is not held up for a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_delivery_frees_its_object() {
    let h = Arc::new(Recorder {
        delay: Duration::from_millis(2_000),
        ..Recorder::default()
    });
    let store = Arc::new(MemoryStore::new());
    let p = Arc::new(processor(
        Arc::clone(&store),
        Arc::clone(&h),
        TiePolicy::Run,
    ));
    let slow = {
        let p = Arc::clone(&p);
        tokio::spawn(async move {
            p.process_event(&update("evt_drop", "cus_1", BASE + 1))
                .await
        })
    };
    // Dropped once it holds the object (claimed; its handler runs 2 s).
    use stripe_webhooks::StoreAdmin as _;
    let mut claimed = false;
    for _ in 0..500 {
        if store
            .record(&EventId::new("evt_drop"))
            .await
            .unwrap()
            .is_some()
        {
            claimed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(claimed, "the first delivery never claimed");
    slow.abort();
    let mut last = None;
    for _ in 0..50 {
        let o = p
            .process_event(&update("evt_next", "cus_1", BASE + 2))
            .await;
        if o.status() != 409 {
            last = Some(o.kind().name());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        last,
        Some("processed"),
        "the object stayed locked after the drop"
    );
}

/// A thin event claimed under its snapshot twin joins the twin's ordering guard: it
/// moves the watermark, so an older snapshot of the object that arrives later is stale.
#[tokio::test]
async fn a_thin_twin_moves_the_watermark() {
    use stripe_webhooks::testing::ThinEventBuilder;
    let h = Arc::new(Recorder::default());
    let store = Arc::new(MemoryStore::new());
    let p = processor(Arc::clone(&store), Arc::clone(&h), TiePolicy::Run)
        .with_thin_handler(common::NoopThin);
    let thin = ThinEventBuilder::new("evt_thin_2", "v1.customer.updated")
        .related("cus_1", "customer", "/v1/customers/cus_1")
        .snapshot_event("evt_2")
        .created(BASE + 2)
        .build();
    let n = dangerous::parse_unverified_notification(thin.as_bytes()).unwrap();
    assert_eq!(p.process_notification(&n).await.kind().name(), "processed");
    let wm = store.watermark("cus_1").await.unwrap().unwrap();
    assert_eq!((wm.created, wm.event_id.as_str()), (BASE + 2, "evt_2"));
    assert_eq!(
        p.process_event(&update("evt_2", "cus_1", BASE + 2))
            .await
            .kind()
            .name(),
        "duplicate"
    );
    assert_eq!(
        p.process_event(&update("evt_1", "cus_1", BASE + 1))
            .await
            .kind()
            .name(),
        "stale"
    );
}

/// A thin twin that cannot join its object's guard (no related object id) is claimed
/// under its own id, not its twin's: its snapshot twin still runs through the guard
/// and moves the watermark, so a late older snapshot is stale.
#[tokio::test]
async fn a_thin_twin_without_an_object_leaves_its_twin_to_the_guard() {
    use stripe_webhooks::testing::ThinEventBuilder;
    let h = Arc::new(Recorder::default());
    let store = Arc::new(MemoryStore::new());
    let p = processor(Arc::clone(&store), Arc::clone(&h), TiePolicy::Run)
        .with_thin_handler(common::NoopThin);
    let thin = ThinEventBuilder::new("evt_thin_2", "v1.customer.updated")
        .snapshot_event("evt_2")
        .created(BASE + 2)
        .build();
    let n = dangerous::parse_unverified_notification(thin.as_bytes()).unwrap();
    let o = p.process_notification(&n).await;
    assert_eq!(o.kind().name(), "processed");
    assert_eq!(o.claim_key().unwrap().as_str(), "evt_thin_2");
    assert_eq!(store.watermark("cus_1").await.unwrap(), None);
    assert_eq!(
        p.process_event(&update("evt_2", "cus_1", BASE + 2))
            .await
            .kind()
            .name(),
        "processed"
    );
    assert_eq!(
        p.process_event(&update("evt_1", "cus_1", BASE + 1))
            .await
            .kind()
            .name(),
        "stale"
    );
}

/// An event about `object` on a connected account: `account`, or only `context` (as from
/// an organization or Accounts v2 destination).
fn connect_update(
    id: &str,
    object: &str,
    created: i64,
    account: &str,
    context_only: bool,
) -> Event {
    let capability = format!(r#"{{"id":"{object}","object":"capability","account":"{account}"}}"#);
    event_at(id, "capability.updated", &capability, created, |v| {
        let field = if context_only { "context" } else { "account" };
        v[field] = account.into();
    })
}

/// A live Connect endpoint receives its connected accounts' test-mode events too, and an
/// account (with its capabilities) has the same ids in both modes: a test-mode change is
/// never judged against the live watermark, nor the other way round. Before, a test-mode
/// `capability.updated` made an older live one stale, and the live change was never
/// applied.
#[tokio::test]
async fn a_connected_accounts_test_and_live_objects_are_ordered_apart() {
    let h = Arc::new(Recorder::default());
    let store = Arc::new(MemoryStore::new());
    let p = processor(Arc::clone(&store), Arc::clone(&h), TiePolicy::Run);
    let in_mode = |id: &str, created: i64, livemode: bool| {
        let test_mode = connect_update(id, "card_payments", created, "acct_M", false);
        let mut v = serde_json::to_value(&test_mode).unwrap();
        v["livemode"] = livemode.into();
        dangerous::parse_unverified(v.to_string().as_bytes()).unwrap()
    };
    let newer_in_test = in_mode("evt_m_test", BASE + 5, false);
    assert_eq!(
        p.process_event(&newer_in_test).await.kind().name(),
        "processed"
    );
    let older_live = in_mode("evt_m_live", BASE + 4, true);
    assert_eq!(
        p.process_event(&older_live).await.kind().name(),
        "processed"
    );
    // Each mode still orders its own.
    let oldest_live = in_mode("evt_m_live_0", BASE + 3, true);
    assert_eq!(p.process_event(&oldest_live).await.kind().name(), "stale");
    assert_eq!(
        last_applied(&store, "acct_M/card_payments").await,
        "evt_m_live"
    );
    assert_eq!(
        last_applied(&store, "acct_M/test/card_payments").await,
        "evt_m_test"
    );
}

/// The id of the last event applied to the object `key` (its watermark's).
async fn last_applied(store: &MemoryStore, key: &str) -> String {
    let wm = store.watermark(key).await.unwrap().unwrap();
    wm.event_id.as_str().to_owned()
}

/// Some ids are unique only within a connected account (every account's card payments
/// capability is `card_payments`): an event of one account is never judged against
/// another account's watermark, and a thin twin of a Connect event shares its
/// snapshot's.
#[tokio::test]
async fn connected_accounts_objects_are_ordered_apart() {
    use stripe_webhooks::testing::ThinEventBuilder;
    let h = Arc::new(Recorder::default());
    let store = Arc::new(MemoryStore::new());
    let p = processor(Arc::clone(&store), Arc::clone(&h), TiePolicy::Run)
        .with_thin_handler(common::NoopThin);
    let newer_on_a = connect_update("evt_a2", "card_payments", BASE + 2, "acct_A", false);
    assert_eq!(newer_on_a.account(), Some("acct_A"));
    assert_eq!(
        p.process_event(&newer_on_a).await.kind().name(),
        "processed"
    );
    // Older, but on another account (which names it in `context` only): not stale.
    let older_on_b = connect_update("evt_b1", "card_payments", BASE + 1, "acct_B", true);
    assert_eq!(older_on_b.account(), Some("acct_B"));
    assert_eq!(
        p.process_event(&older_on_b).await.kind().name(),
        "processed"
    );
    assert_eq!(h.applied.lock().unwrap().as_slice(), ["evt_a2", "evt_b1"]);
    // Still stale on its own account.
    let older_on_a = connect_update("evt_a1", "card_payments", BASE + 1, "acct_A", false);
    assert_eq!(p.process_event(&older_on_a).await.kind().name(), "stale");
    // A thin twin on acct_B moves acct_B's watermark: its older snapshot is then stale.
    let thin = ThinEventBuilder::new("evt_thin_b3", "v1.capability.updated")
        .related(
            "card_payments",
            "capability",
            "/v1/accounts/acct_B/capabilities/card_payments",
        )
        .snapshot_event("evt_b3")
        .context("acct_B")
        .created(BASE + 3)
        .build();
    let n = dangerous::parse_unverified_notification(thin.as_bytes()).unwrap();
    assert_eq!(p.process_notification(&n).await.kind().name(), "processed");
    let older_on_b = connect_update("evt_b2", "card_payments", BASE + 2, "acct_B", false);
    assert_eq!(p.process_event(&older_on_b).await.kind().name(), "stale");
    assert_eq!(
        last_applied(&store, "acct_B/test/card_payments").await,
        "evt_b3"
    );
    assert_eq!(
        last_applied(&store, "acct_A/test/card_payments").await,
        "evt_a2"
    );
}

/// A snapshot route with the ordering guard (recording into the `Recorder`) and a thin
/// route built with `thin_ordered` (doing nothing), on one memory store.
fn two_ordered_routes() -> (Arc<Recorder>, Arc<MemoryStore>, Processor, Processor) {
    let h = Arc::new(Recorder::default());
    let store = Arc::new(MemoryStore::new());
    let snapshot = processor(Arc::clone(&store), Arc::clone(&h), TiePolicy::Run);
    let thin = Processor::thin_ordered(
        Verifier::new(SigningSecret::new("whsec_thin_route").unwrap()),
        Arc::clone(&store),
        stripe_webhooks::ThinEventRouter::new().fallback(|_n| Box::pin(async { Ok(()) })),
        TiePolicy::Run,
    );
    (h, store, snapshot, thin)
}

/// Two routes on one store, as while both destinations run: a thin route built with
/// `thin_ordered` moves the watermark for the change it took first, so the snapshot
/// twin is a duplicate and an older snapshot that arrives later is stale.
#[tokio::test]
async fn a_thin_route_beside_an_ordered_route_moves_the_watermark() {
    use stripe_webhooks::testing::ThinEventBuilder;
    let (h, store, snapshot, thin) = two_ordered_routes();
    let n = ThinEventBuilder::new("evt_thin_route_2", "v1.customer.updated")
        .related("cus_route", "customer", "/v1/customers/cus_route")
        .snapshot_event("evt_route_2")
        .created(BASE + 2)
        .build();
    let n = dangerous::parse_unverified_notification(n.as_bytes()).unwrap();
    assert_eq!(
        thin.process_notification(&n).await.kind().name(),
        "processed"
    );
    let wm = store.watermark("cus_route").await.unwrap().unwrap();
    assert_eq!(
        (wm.created, wm.event_id.as_str()),
        (BASE + 2, "evt_route_2")
    );
    let twin = snapshot
        .process_event(&update("evt_route_2", "cus_route", BASE + 2))
        .await;
    assert_eq!(twin.kind().name(), "duplicate");
    let older = snapshot
        .process_event(&update("evt_route_1", "cus_route", BASE + 1))
        .await;
    assert_eq!(older.kind().name(), "stale");
    assert!(h.applied.lock().unwrap().is_empty());
    assert_eq!(
        *h.stale.lock().unwrap(),
        [("evt_route_1".to_owned(), "evt_route_2".to_owned())]
    );
}

/// The routers' `unordered` types run whatever their age on both routes: a payment's
/// snapshot event, and a thin one claimed under its twin, older than an update of their
/// charge, still run and leave the watermark where the update put it; without
/// `unordered` the thin one is stale.
#[tokio::test]
async fn unordered_types_run_on_both_routes_whatever_their_age() {
    use stripe_webhooks::testing::ThinEventBuilder;
    use stripe_webhooks::{EventRouter, EventType, ThinEventRouter};
    let ran = Arc::new(Mutex::new(Vec::<String>::new()));
    let store = Arc::new(MemoryStore::new());
    let noted = Arc::clone(&ran);
    let snapshot = Processor::ordered(
        Verifier::new(SigningSecret::new("whsec_unordered").unwrap()),
        Arc::clone(&store),
        EventRouter::new()
            .fallback(move |e| {
                noted.lock().unwrap().push(e.id().to_string());
                Box::pin(async { Ok(()) })
            })
            .unordered([EventType::ChargeSucceeded]),
        TiePolicy::Run,
    );
    let thin = |unordered: &[EventType]| {
        let noted = Arc::clone(&ran);
        Processor::thin_ordered(
            Verifier::new(SigningSecret::new("whsec_unordered_thin").unwrap()),
            Arc::clone(&store),
            ThinEventRouter::new()
                .fallback(move |n| {
                    noted.lock().unwrap().push(n.id.to_string());
                    Box::pin(async { Ok(()) })
                })
                .unordered(unordered.iter().cloned()),
            TiePolicy::Run,
        )
    };
    let charge = |id: &str, ty: &str, created: i64| {
        event_at(
            id,
            ty,
            r#"{"id":"ch_unordered","object":"charge"}"#,
            created,
            |_| {},
        )
    };
    // What the snapshot route answers `event`.
    let snapshot_answers = |event: Event| {
        let snapshot = &snapshot;
        async move { snapshot.process_event(&event).await.kind().name() }
    };
    let updated = charge("evt_ch_updated", "charge.updated", BASE + 3);
    assert_eq!(snapshot_answers(updated).await, "processed");
    let succeeded = charge("evt_ch_succeeded", "charge.succeeded", BASE + 1);
    assert_eq!(snapshot_answers(succeeded).await, "processed");
    let older = charge("evt_ch_updated_0", "charge.updated", BASE);
    assert_eq!(snapshot_answers(older).await, "stale");

    let payment = |id: &str| {
        let n = ThinEventBuilder::new(&format!("evt_thin_{id}"), "v1.charge.succeeded")
            .related("ch_unordered", "charge", "/v1/charges/ch_unordered")
            .snapshot_event(id)
            .created(BASE + 2)
            .build();
        dangerous::parse_unverified_notification(n.as_bytes()).unwrap()
    };
    let ordered_thin = thin(&[]);
    let o = ordered_thin
        .process_notification(&payment("evt_ch_paid_1"))
        .await;
    assert_eq!(o.kind().name(), "stale");
    let unordered_thin = thin(&[EventType::ChargeSucceeded]);
    let o = unordered_thin
        .process_notification(&payment("evt_ch_paid_2"))
        .await;
    assert_eq!(o.kind().name(), "processed");
    assert_eq!(
        *ran.lock().unwrap(),
        [
            "evt_ch_updated",
            "evt_ch_succeeded",
            "evt_thin_evt_ch_paid_2"
        ]
    );
    // Its snapshot twin, delivered after it, is a duplicate: the change ran once.
    let twin = charge("evt_ch_paid_2", "charge.succeeded", BASE + 2);
    assert_eq!(snapshot_answers(twin).await, "duplicate");
    assert_eq!(ran.lock().unwrap().len(), 3);
    // So with no related object id, which an ordered type's thin event would need to join
    // the guard (it is claimed under its own id then): an unordered one needs none, and
    // is claimed under its twin's.
    let n = ThinEventBuilder::new("evt_thin_ch_paid_3", "v1.charge.succeeded")
        .snapshot_event("evt_ch_paid_3")
        .created(BASE + 2)
        .build();
    let n = dangerous::parse_unverified_notification(n.as_bytes()).unwrap();
    let o = unordered_thin.process_notification(&n).await;
    assert_eq!(o.kind().name(), "processed");
    let twin = charge("evt_ch_paid_3", "charge.succeeded", BASE + 2);
    assert_eq!(snapshot_answers(twin).await, "duplicate");
    assert_eq!(ran.lock().unwrap().len(), 4);
    let wm = store.watermark("ch_unordered").await.unwrap().unwrap();
    assert_eq!(
        (wm.created, wm.event_id.as_str()),
        (BASE + 3, "evt_ch_updated")
    );
}

/// On one processor taking both families (`with_thin_handler`), a type the snapshot
/// handler keeps outside the guard is kept out for thin events claimed under their twin
/// too, though the thin handler says nothing: an older payment still runs.
#[tokio::test]
async fn one_processors_snapshot_handler_keeps_thin_twins_out_of_the_guard() {
    use stripe_webhooks::testing::ThinEventBuilder;
    use stripe_webhooks::{EventRouter, EventType, ThinEventRouter};
    let p = Processor::ordered(
        Verifier::new(SigningSecret::new("whsec_one_processor").unwrap()),
        MemoryStore::new(),
        EventRouter::new()
            .fallback(|_e| Box::pin(async { Ok(()) }))
            .unordered([EventType::ChargeSucceeded]),
        TiePolicy::Run,
    )
    .with_thin_handler(ThinEventRouter::new().fallback(|_n| Box::pin(async { Ok(()) })));
    let charge = r#"{"id":"ch_one","object":"charge"}"#;
    let updated = event_at(
        "evt_one_updated",
        "charge.updated",
        charge,
        BASE + 3,
        |_| {},
    );
    assert_eq!(p.process_event(&updated).await.kind().name(), "processed");
    let n = ThinEventBuilder::new("evt_thin_one_paid", "v1.charge.succeeded")
        .related("ch_one", "charge", "/v1/charges/ch_one")
        .snapshot_event("evt_one_paid")
        .created(BASE + 1)
        .build();
    let n = dangerous::parse_unverified_notification(n.as_bytes()).unwrap();
    assert_eq!(p.process_notification(&n).await.kind().name(), "processed");
}

/// A handler whose `is_ordered` panics, on the snapshot route and on the thin route: the
/// delivery is answered 500, as for a handler that panics, and recorded as failed under
/// its claim key (outside the guard: no object is locked), and the processor does not
/// panic.
#[tokio::test]
async fn a_panicking_is_ordered_is_a_500_recorded_as_failed() {
    use stripe_webhooks::testing::ThinEventBuilder;
    use stripe_webhooks::{EventNotification, Outcome, ThinEventHandler};
    struct Confused;
    #[async_trait]
    impl EventHandler for Confused {
        async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
            Ok(())
        }
        fn is_ordered(&self, _event_type: &EventType) -> bool {
            panic!("no idea")
        }
    }
    #[async_trait]
    impl ThinEventHandler for Confused {
        async fn handle(&self, _n: &EventNotification) -> Result<(), HandlerError> {
            Ok(())
        }
        fn is_ordered(&self, _snapshot_type: &EventType) -> bool {
            panic!("no idea")
        }
    }
    async fn assert_refused_unclaimed(o: &Outcome, store: &MemoryStore, claim_key: &str) {
        common::assert_check_panic_recorded(o, store, claim_key, 1, "no idea").await;
        assert!(format!("{o:?}").contains("is_ordered"), "{o:?}");
        // No object was locked, nor its watermark moved.
        let probe = store
            .lock_object("cus_confused", "probe", Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            matches!(probe, ObjectLock::Acquired { watermark: None }),
            "{probe:?}"
        );
        store.unlock_object("cus_confused", "probe").await.unwrap();
    }
    let verifier = || Verifier::new(SigningSecret::new(common::SECRET).unwrap());
    let store = Arc::new(MemoryStore::new());
    let snapshot = Processor::ordered(verifier(), Arc::clone(&store), Confused, TiePolicy::Run);
    let o = snapshot
        .process_event(&update("evt_confused", "cus_confused", BASE))
        .await;
    assert_refused_unclaimed(&o, &store, "evt_confused").await;

    let thin = Processor::thin_ordered(verifier(), Arc::clone(&store), Confused, TiePolicy::Run);
    let n = ThinEventBuilder::new("evt_thin_confused", "v1.customer.updated")
        .related("cus_confused", "customer", "/v1/customers/cus_confused")
        .snapshot_event("evt_confused_twin")
        .created(BASE)
        .build();
    let n = dangerous::parse_unverified_notification(n.as_bytes()).unwrap();
    let o = thin.process_notification(&n).await;
    assert_refused_unclaimed(&o, &store, "evt_confused_twin").await;

    // Beside an ordered snapshot route, a thin event with no related object id asks
    // whether its twin's type is ordered to choose its key: that panic too is recorded,
    // under its own id, and nothing runs (it ran, unguarded).
    let both = Processor::ordered(verifier(), Arc::clone(&store), Confused, TiePolicy::Run)
        .with_thin_handler(Confused);
    let n = ThinEventBuilder::new("evt_thin_loose", "v1.customer.updated")
        .snapshot_event("evt_loose_twin")
        .created(BASE)
        .build();
    let n = dangerous::parse_unverified_notification(n.as_bytes()).unwrap();
    let o = both.process_notification(&n).await;
    assert_refused_unclaimed(&o, &store, "evt_thin_loose").await;
}

/// Beside an ordered route, a thin event whose twin's object has no id
/// (`v1.balance.available`, whose `balance` has none, so the twin runs outside the
/// guard) and its twin run the work once between them, on the twin's key; a thin event
/// with no related object id whose twin's object has one, or of a type this release
/// does not know, is still claimed under its own; one whose related object has an id
/// but whose twin's object has none (a billing alert's trigger) is claimed under its
/// twin's, outside the guard. Before, the first kind ran under its own id too, and the
/// work ran twice; the last was ordered by the alert, so an earlier trigger taken
/// second was stale and never handled.
#[tokio::test]
async fn a_singletons_thin_event_and_its_twin_run_once_beside_an_ordered_route() {
    use stripe_webhooks::testing::ThinEventBuilder;
    let (h, _, snapshot, thin) = two_ordered_routes();
    let n = ThinEventBuilder::new("evt_thin_balance", "v1.balance.available")
        .related_singleton("balance", "/v1/balance")
        .snapshot_event("evt_balance")
        .created(BASE + 2)
        .build();
    let n = dangerous::parse_unverified_notification(n.as_bytes()).unwrap();
    let o = thin.process_notification(&n).await;
    assert_eq!(o.kind().name(), "processed");
    assert_eq!(o.claim_key().unwrap().as_str(), "evt_balance");
    let balance = testing::event_json(
        "evt_balance",
        "balance.available",
        r#"{"object":"balance","available":[],"livemode":false,"pending":[]}"#,
    );
    let balance = dangerous::parse_unverified(balance.as_bytes()).unwrap();
    assert_eq!(
        snapshot.process_event(&balance).await.kind().name(),
        "duplicate"
    );
    assert!(h.applied.lock().unwrap().is_empty());

    // No related object: its own id, unless the twin's object has no id either (an
    // entitlement summary); a type this release does not know: its own.
    for (thin_type, own) in [
        ("v1.account.external_account.created", true),
        ("v1.entitlements.active_entitlement_summary.updated", false),
        ("v1.brand_new.singleton.updated", true),
    ] {
        let (id, twin) = (format!("evt_thin_{thin_type}"), format!("evt_{thin_type}"));
        let n = ThinEventBuilder::new(&id, thin_type)
            .snapshot_event(&twin)
            .created(BASE + 2)
            .build();
        let n = dangerous::parse_unverified_notification(n.as_bytes()).unwrap();
        let o = thin.process_notification(&n).await;
        assert_eq!(o.kind().name(), "processed", "{thin_type}");
        let key = if own { &id } else { &twin };
        assert_eq!(o.claim_key().unwrap().as_str(), key, "{thin_type}");
    }
    // An upcoming invoice has no id though invoices have one: its thin event (no related
    // object) and its twin run once between them, on the twin's key.
    let n = ThinEventBuilder::new("evt_thin_upcoming", "v1.invoice.upcoming")
        .snapshot_event("evt_upcoming")
        .created(BASE + 2)
        .build();
    let n = dangerous::parse_unverified_notification(n.as_bytes()).unwrap();
    let o = thin.process_notification(&n).await;
    assert_eq!(o.claim_key().unwrap().as_str(), "evt_upcoming", "{o:?}");
    let upcoming = testing::event_json(
        "evt_upcoming",
        "invoice.upcoming",
        r#"{"object":"invoice","customer":"cus_1"}"#,
    );
    let upcoming = dangerous::parse_unverified(upcoming.as_bytes()).unwrap();
    assert_eq!(
        snapshot.process_event(&upcoming).await.kind().name(),
        "duplicate"
    );

    // A related object with an id (the alert) whose twin's object has none (one
    // trigger of it): claimed under the twin's id, outside the guard, so an earlier
    // trigger taken second runs too rather than being stale.
    for (i, created) in [(1, BASE + 5), (2, BASE + 4)] {
        let n = ThinEventBuilder::new(
            &format!("evt_thin_trigger_{i}"),
            "v1.billing.alert.triggered",
        )
        .related("alrt_1", "billing.alert", "/v1/billing/alerts/alrt_1")
        .snapshot_event(&format!("evt_trigger_{i}"))
        .created(created)
        .build();
        let n = dangerous::parse_unverified_notification(n.as_bytes()).unwrap();
        let o = thin.process_notification(&n).await;
        assert_eq!(o.kind().name(), "processed", "trigger {i}: {o:?}");
        let twin = format!("evt_trigger_{i}");
        assert_eq!(o.claim_key().unwrap().as_str(), twin);
    }
}

/// Records what it applied; its first run of `gated` waits until `open` is notified.
/// Notes whether another event's handler started while that run was still alive (its
/// future not dropped) and the other was not the one applied while its lock lapsed.
struct Gate {
    gated: &'static str,
    waited: std::sync::atomic::AtomicBool,
    applied: Mutex<Vec<String>>,
    open: tokio::sync::Notify,
    gated_alive: std::sync::atomic::AtomicBool,
    started_beside: Mutex<Vec<String>>,
}

/// Clears [`Gate::gated_alive`] when the gated run's future goes.
struct Alive<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.store(false, SeqCst);
    }
}

#[async_trait]
impl EventHandler for Gate {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        if event.id().as_str() == self.gated
            && !self.waited.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.gated_alive.store(true, SeqCst);
            let _alive = Alive(&self.gated_alive);
            self.open.notified().await;
        } else if self.gated_alive.load(SeqCst) {
            self.started_beside
                .lock()
                .unwrap()
                .push(event.id().to_string());
        }
        self.applied.lock().unwrap().push(event.id().to_string());
        Ok(())
    }
}

/// An ordered processor on a `MemoryStore` whose leases run by a manual clock (the
/// processor renews on real time), with a [`Gate`] on `gated` and no handler deadline.
fn gated(
    gated: &'static str,
    lease: Duration,
) -> (
    stripe_webhooks::ManualClock,
    MemoryStore,
    Arc<Gate>,
    Arc<Processor>,
) {
    let (clock, store, gate, p) = gated_on(gated, lease, |store| store);
    (clock, store, gate, Arc::new(p))
}

/// As [`gated`], on the store `wrap` makes of the clocked `MemoryStore`.
fn gated_on<S: OrderingStore + Clone>(
    gated: &'static str,
    lease: Duration,
    wrap: impl FnOnce(MemoryStore) -> S,
) -> (stripe_webhooks::ManualClock, S, Arc<Gate>, Processor) {
    let clock = stripe_webhooks::ManualClock::new(BASE * 1000);
    let store = wrap(MemoryStore::new().with_clock(clock.clone()));
    let gate = Arc::new(Gate {
        gated,
        waited: std::sync::atomic::AtomicBool::new(false),
        applied: Mutex::new(Vec::new()),
        open: tokio::sync::Notify::new(),
        gated_alive: std::sync::atomic::AtomicBool::new(false),
        started_beside: Mutex::new(Vec::new()),
    });
    let p = Processor::ordered(
        Verifier::new(SigningSecret::new(common::SECRET).unwrap()),
        store.clone(),
        Arc::clone(&gate),
        TiePolicy::Run,
    )
    .with_handler_deadline(None)
    .with_lease(lease);
    (clock, store, gate, p)
}

/// Starts the delivery of `gated` (its handler held by the gate) on `p`, lets the
/// store's time pass its lease (its real time does not), and has `other`, of the same
/// object, applied meanwhile; answers the gated delivery's task.
async fn lapse_beside(
    p: &Arc<Processor>,
    gate: &Gate,
    clock: &stripe_webhooks::ManualClock,
    lease: Duration,
    gated: (&'static str, i64),
    other: (&str, i64),
) -> tokio::task::JoinHandle<stripe_webhooks::Outcome> {
    let first = {
        let p = Arc::clone(p);
        tokio::spawn(async move { p.process_event(&update(gated.0, "cus_1", gated.1)).await })
    };
    until("the gated run started", || gate.gated_alive.load(SeqCst)).await;
    clock.advance(lease * 2);
    let applied = p.process_event(&update(other.0, "cus_1", other.1)).await;
    assert_eq!(applied.kind().name(), "processed");
    first
}

/// A delivery whose object lock lapsed (its store saw the lease run out) while another
/// delivery locked the object, applied a newer event and let go: the first one's next
/// renewal takes the free lock again, but finds a watermark it did not see when it
/// locked. The two ran side by side, so the first is stopped and never completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_after_another_holder_applied_stops_the_handler() {
    let lease = Duration::from_millis(900);
    let (clock, _store, gate, p) = gated("evt_a", lease);
    // The store's time passes the first delivery's lease (its real time does not).
    let first = lapse_beside(
        &p,
        &gate,
        &clock,
        lease,
        ("evt_a", BASE + 1),
        ("evt_b", BASE + 2),
    )
    .await;
    // The first delivery's renewal (every third of the lease) runs meanwhile.
    tokio::time::sleep(lease / 3 + Duration::from_millis(200)).await;
    gate.open.notify_one();
    let first = first.await.unwrap();
    assert_ne!(
        first.kind().name(),
        "processed",
        "a run that overlapped a newer event's completed"
    );
    assert!(
        first.status() >= 500,
        "Stripe retries it: {}",
        first.status()
    );
    assert_eq!(*gate.applied.lock().unwrap(), ["evt_b"]);
    // Neither its claim nor the object is held up: Stripe's retry runs at once, and is
    // stale (older than the event applied meanwhile).
    let retry = p.process_event(&update("evt_a", "cus_1", BASE + 1)).await;
    assert_eq!(retry.kind().name(), "stale", "{retry:?}");
}

/// Holds each delivery's handler until its event's gate opens; says when each starts.
struct Gates {
    gates: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
    start_tx: tokio::sync::mpsc::UnboundedSender<String>,
    started: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
    applied: Mutex<Vec<String>>,
}

impl Gates {
    fn new() -> Self {
        let (start_tx, started) = tokio::sync::mpsc::unbounded_channel();
        Self {
            gates: Mutex::default(),
            start_tx,
            started: tokio::sync::Mutex::new(started),
            applied: Mutex::default(),
        }
    }

    fn gate(&self, id: &str) -> Arc<tokio::sync::Notify> {
        Arc::clone(self.gates.lock().unwrap().entry(id.to_owned()).or_default())
    }

    /// Waits until the handler of `id` has started.
    async fn wait_started(&self, id: &str) {
        let mut started = self.started.lock().await;
        while let Some(next) = started.recv().await {
            if next == id {
                return;
            }
        }
    }
}

#[async_trait]
impl EventHandler for Gates {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let _ = self.start_tx.send(event.id().to_string());
        self.gate(event.id().as_str()).notified().await;
        self.applied.lock().unwrap().push(event.id().to_string());
        Ok(())
    }
}

/// A delivery whose object lock lapsed and was taken by another delivery still running:
/// the first one's renewal finds the object busy, stops the handler and lets its claim go
/// (it had just renewed it), so that Stripe's retry of it is answered as soon as the
/// other delivery is done (here: stale, older than the event applied meanwhile), not
/// held off for a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_finds_the_object_busy_lets_its_claim_go() {
    // Renewals every second (a third of the lease), on real time; the store's leases
    // run by the manual clock.
    let lease = Duration::from_secs(3);
    let clock = stripe_webhooks::ManualClock::new(BASE * 1000);
    let gates = Arc::new(Gates::new());
    let p = Arc::new(
        Processor::ordered(
            Verifier::new(SigningSecret::new(common::SECRET).unwrap()),
            MemoryStore::new().with_clock(clock.clone()),
            Arc::clone(&gates),
            TiePolicy::Run,
        )
        .with_handler_deadline(None)
        .with_lease(lease),
    );
    let run = |id: &'static str, created: i64| {
        let p = Arc::clone(&p);
        tokio::spawn(async move { p.process_event(&update(id, "cus_1", created)).await })
    };
    let first = run("evt_a", BASE + 1);
    gates.wait_started("evt_a").await;
    // The store's time passes the first delivery's lease; a newer event takes the lock
    // and is still running when the first one renews (a second after its claim).
    clock.advance(lease * 2);
    let second = run("evt_b", BASE + 2);
    gates.wait_started("evt_b").await;
    let first = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the renewal stops the first handler")
        .unwrap();
    assert!(
        first.status() >= 500,
        "stopped, and Stripe retries it: {first:?}"
    );
    gates.gate("evt_b").notify_one();
    let second = second.await.unwrap();
    assert_eq!(second.kind().name(), "processed", "{second:?}");
    // No lease passed in the store's time: a claim still held would answer 409.
    let retry = p.process_event(&update("evt_a", "cus_1", BASE + 1)).await;
    assert_eq!(retry.kind().name(), "stale", "{retry:?}");
    assert_eq!(*gates.applied.lock().unwrap(), ["evt_b"]);
}

/// A delivery whose handler finished after its object lock ran out and was taken (here
/// by an older event, which read the old watermark and was applied) cannot complete:
/// nothing would record its run, and the older event now stands over it. It releases its
/// claim and answers 500, so that Stripe delivers it again, and the retry applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_after_the_lock_was_taken_over_fails_so_stripe_retries() {
    let lease = Duration::from_secs(3);
    let (clock, store, gate, p) = gated("evt_new", lease);
    // The store's time passes the lock's lease; an older event locks the object and is
    // applied (the newer one's watermark is not recorded yet).
    let newer = lapse_beside(
        &p,
        &gate,
        &clock,
        lease,
        ("evt_new", BASE + 2),
        ("evt_old", BASE + 1),
    )
    .await;
    // The newer one's handler ends before its first renewal (at a second): its
    // completion finds the lock taken over.
    gate.open.notify_one();
    let newer = newer.await.unwrap();
    assert_eq!(newer.status(), 500, "{newer:?}");
    // Stripe's retry runs it again, at once, over the older one.
    let retry = p.process_event(&update("evt_new", "cus_1", BASE + 2)).await;
    assert_eq!(retry.kind().name(), "processed", "{retry:?}");
    assert_eq!(
        *gate.applied.lock().unwrap(),
        ["evt_old", "evt_new", "evt_new"]
    );
    assert_eq!(
        store
            .watermark("cus_1")
            .await
            .unwrap()
            .map(|w| w.event_id.to_string()),
        Some("evt_new".to_owned())
    );
}

/// A `MemoryStore` whose chosen calls misbehave on cue: a release or an object lock that
/// takes effect and then answers too late (its caller's timeout fires first), and a
/// guarded completion that fails.
#[derive(Clone)]
struct Faulty {
    inner: MemoryStore,
    late_release: Arc<AtomicUsize>,
    hung_release: Arc<AtomicUsize>,
    late_lock: Arc<AtomicUsize>,
    /// Object locks that take effect only after [`SLOW`], even if their caller stops
    /// waiting (as a statement sent to a database server runs on).
    slow_lock: Arc<AtomicUsize>,
    /// The same for `lock_and_claim`.
    slow_lock_and_claim: Arc<AtomicUsize>,
    failing_completions: Arc<AtomicUsize>,
    /// `lock_object` calls that took effect, slow ones aside (a lease renewal's, in
    /// these tests).
    lock_calls: Arc<AtomicUsize>,
}

const SLOW: Duration = Duration::from_millis(400);

impl Faulty {
    /// Every call as the inner store's, until a test cues a fault.
    fn new(inner: MemoryStore) -> Self {
        Self {
            inner,
            late_release: Arc::default(),
            hung_release: Arc::default(),
            late_lock: Arc::default(),
            slow_lock: Arc::default(),
            slow_lock_and_claim: Arc::default(),
            failing_completions: Arc::default(),
            lock_calls: Arc::default(),
        }
    }
}

const LATE: Duration = Duration::from_millis(400);

fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1)).is_ok()
}

/// Polls `done` every 5 ms until it holds, for at most 10 s: a test waits for a step of
/// another task (a renewal started) rather than sleeping until it should have, which a
/// busy machine's late timer can miss.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[async_trait]
impl IdempotencyStore for Faulty {
    async fn claim(
        &self,
        id: &EventId,
        t: &EventType,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.inner.claim(id, t, lease).await
    }
    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        self.inner.complete(token).await
    }
    async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError> {
        if take_one(&self.hung_release) {
            // Never reaches the store: its caller's timeout drops it first.
            tokio::time::sleep(LATE).await;
        }
        let done = self.inner.release(token, reason).await;
        if take_one(&self.late_release) {
            tokio::time::sleep(LATE).await;
        }
        done
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
    ) -> Result<ObjectLock, StoreError> {
        if take_one(&self.slow_lock) {
            let (inner, object_id, holder) =
                (self.inner.clone(), object_id.to_owned(), holder.to_owned());
            let sent = tokio::spawn(async move {
                tokio::time::sleep(SLOW).await;
                inner.lock_object(&object_id, &holder, lease).await
            });
            return sent
                .await
                .unwrap_or_else(|e| Err(StoreError::unavailable(e.to_string())));
        }
        let locked = self.inner.lock_object(object_id, holder, lease).await;
        // Counted once the lock took effect (the renewal's relock, in these tests).
        self.lock_calls.fetch_add(1, SeqCst);
        if take_one(&self.late_lock) {
            tokio::time::sleep(LATE).await;
        }
        locked
    }
    async fn complete_applied(
        &self,
        token: &ClaimToken,
        object_id: &str,
        holder: &str,
        applied: &Watermark,
    ) -> Result<(), StoreError> {
        if take_one(&self.failing_completions) {
            return Err(StoreError::unavailable("the database is restarting"));
        }
        self.inner
            .complete_applied(token, object_id, holder, applied)
            .await
    }
    async fn unlock_object(&self, object_id: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.unlock_object(object_id, holder).await
    }
    async fn watermark(&self, object_id: &str) -> Result<Option<Watermark>, StoreError> {
        self.inner.watermark(object_id).await
    }
    async fn lock_and_claim(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
        event_id: &EventId,
        event_type: &EventType,
    ) -> Result<LockedClaim, StoreError> {
        if take_one(&self.slow_lock_and_claim) {
            let inner = self.inner.clone();
            let (object_id, holder) = (object_id.to_owned(), holder.to_owned());
            let (event_id, event_type) = (event_id.clone(), event_type.clone());
            let sent = tokio::spawn(async move {
                tokio::time::sleep(SLOW).await;
                inner
                    .lock_and_claim(&object_id, &holder, lease, &event_id, &event_type)
                    .await
            });
            return sent
                .await
                .unwrap_or_else(|e| Err(StoreError::unavailable(e.to_string())));
        }
        self.inner
            .lock_and_claim(object_id, holder, lease, event_id, event_type)
            .await
    }
    async fn advance_watermark(&self, key: &str, to: &Watermark) -> Result<(), StoreError> {
        self.inner.advance_watermark(key, to).await
    }
}

/// A lock-and-claim whose call timed out but whose statement took the lock afterwards
/// (as one waiting on the object's row does) does not hold the object's other events
/// for its lease: the delivery that gave up lets the lock go once it lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_that_lands_after_its_call_timed_out_is_let_go() {
    let store = Faulty::new(MemoryStore::new());
    store.slow_lock_and_claim.store(1, SeqCst);
    let h = Arc::new(Recorder::default());
    let p = processor(store.clone(), h.clone(), TiePolicy::Run)
        .with_store_timeout(Duration::from_millis(150))
        .with_handler_deadline(Some(Duration::from_millis(100)))
        .with_lease(Duration::from_secs(4));
    let o = p.process_event(&update("evt_cut", "cus_cut", BASE)).await;
    assert_eq!(o.status(), 503, "{o:?}");
    // The lock lands at SLOW; the tries to let it go come after waits doubling from the
    // store timeout (150, 300, 600 ms…), the third and fourth past SLOW, all well before
    // the lease's end (4 s), which alone would free it without them.
    tokio::time::sleep(SLOW + Duration::from_millis(1600)).await;
    let o = p
        .process_event(&update("evt_next", "cus_cut", BASE + 1))
        .await;
    assert_eq!(o.kind().name(), "processed", "{o:?}");
    assert_eq!(*h.applied.lock().unwrap(), ["evt_next"]);
}

/// As [`gated`], on a [`Faulty`] store, with store calls timed out at 150 ms.
fn gated_faulty(
    gated: &'static str,
    lease: Duration,
) -> (
    stripe_webhooks::ManualClock,
    Faulty,
    Arc<Gate>,
    Arc<Processor>,
) {
    let (clock, store, gate, p) = gated_on(gated, lease, Faulty::new);
    let p = p.with_store_timeout(Duration::from_millis(150));
    (clock, store, gate, Arc::new(p))
}

/// A renewal that finds the run lost (another holder applied an event while this one's
/// lock had lapsed) stops the handler before it lets the object's lock go: a third
/// event of the object never starts beside it, even when the release that follows
/// takes effect and then answers after the store timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_run_lets_its_object_go_only_once_its_handler_stopped() {
    let lease = Duration::from_millis(900);
    let (clock, store, gate, p) = gated_faulty("evt_a", lease);
    // The store's time passes the first delivery's lease: another holder applies a
    // newer event meanwhile (beside it: that is the lapse).
    let first = lapse_beside(
        &p,
        &gate,
        &clock,
        lease,
        ("evt_a", BASE + 1),
        ("evt_b", BASE + 2),
    )
    .await;
    gate.started_beside.lock().unwrap().clear();
    store.late_release.store(1, SeqCst);
    // The first delivery's renewal (a third of the lease in) finds the watermark moved;
    // the third event waits (409) until the run has stopped and let the object go.
    until("the renewal started", || store.lock_calls.load(SeqCst) > 0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let third = loop {
        let third = p.process_event(&update("evt_c", "cus_1", BASE + 3)).await;
        if third.kind().name() != "in_progress" || tokio::time::Instant::now() > deadline {
            break third;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        gate.started_beside.lock().unwrap().is_empty(),
        "an event of the object started beside a run found lost: {third:?}"
    );
    // And the object was let go once the handler stopped: the third event ran.
    assert_eq!(third.kind().name(), "processed", "{third:?}");
    gate.open.notify_one();
    let first = first.await.unwrap();
    assert!(first.status() >= 500, "{first:?}");
}

/// As [`a_completion_after_the_lock_was_taken_over_fails_so_stripe_retries`], but the
/// release that follows the refused completion takes effect and answers after the
/// caller's timeout. The completion is tried again, refused again, and the release
/// again, now refused as if another delivery held the claim: the delivery must still
/// fail (500), or nothing would ever apply it over the older event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_fails_the_delivery_even_when_the_release_answers_late() {
    let lease = Duration::from_secs(3);
    let (clock, store, gate, p) = gated_faulty("evt_new", lease);
    let newer = lapse_beside(
        &p,
        &gate,
        &clock,
        lease,
        ("evt_new", BASE + 2),
        ("evt_old", BASE + 1),
    )
    .await;
    store.late_release.store(1, SeqCst);
    gate.open.notify_one();
    let newer = newer.await.unwrap();
    assert_eq!(newer.status(), 500, "{newer:?}");
    let retry = p.process_event(&update("evt_new", "cus_1", BASE + 2)).await;
    assert_eq!(retry.kind().name(), "processed", "{retry:?}");
    assert_eq!(
        *gate.applied.lock().unwrap(),
        ["evt_old", "evt_new", "evt_new"]
    );
}

/// A renewal whose object lock took effect (the lock had lapsed, and another holder had
/// applied a newer event and let go) but answered after its timeout, so the renewal
/// never compared the watermark: the completion compares it first, and the delivery
/// fails instead of completing an older event over the newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_cut_after_relocking_does_not_let_the_older_event_complete() {
    let lease = Duration::from_millis(900);
    let (clock, store, gate, p) = gated_faulty("evt_a", lease);
    let first = lapse_beside(
        &p,
        &gate,
        &clock,
        lease,
        ("evt_a", BASE + 1),
        ("evt_b", BASE + 2),
    )
    .await;
    // The first delivery's renewal (at a third of the lease) locks the free object again
    // and answers late; the handler finishes before the next renewal.
    store.late_lock.store(1, SeqCst);
    until("the renewal locked", || store.late_lock.load(SeqCst) == 0).await;
    tokio::time::sleep(LATE / 2).await;
    gate.open.notify_one();
    let first = first.await.unwrap();
    assert_ne!(first.kind().name(), "processed", "{first:?}");
    assert!(first.status() >= 500, "{first:?}");
    assert_eq!(
        store
            .watermark("cus_1")
            .await
            .unwrap()
            .map(|w| w.event_id.to_string()),
        Some("evt_b".to_owned())
    );
    // Neither the claim nor the object is held up: the retry is stale at once.
    let retry = p.process_event(&update("evt_a", "cus_1", BASE + 1)).await;
    assert_eq!(retry.kind().name(), "stale", "{retry:?}");
}

/// A guarded event whose handler succeeded but whose completion (which moves the
/// watermark) could not be recorded is answered 503, not 200: an older event arriving
/// after the lease ends finds the watermark behind and is applied, and only Stripe's
/// retry of the newer one puts it back on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_completion_that_was_not_recorded_is_retried() {
    let lease = Duration::from_secs(3);
    let (clock, store, gate, p) = gated_faulty("none", lease);
    store.failing_completions.store(100, SeqCst);
    let newer = p.process_event(&update("evt_new", "cus_1", BASE + 2)).await;
    assert_eq!(newer.status(), 503, "{newer:?}");
    assert_eq!(newer.kind().name(), "store_unavailable");
    store.failing_completions.store(0, SeqCst);
    clock.advance(lease * 2);
    let older = p.process_event(&update("evt_old", "cus_1", BASE + 1)).await;
    assert_eq!(older.kind().name(), "processed");
    let retry = p.process_event(&update("evt_new", "cus_1", BASE + 2)).await;
    assert_eq!(retry.kind().name(), "processed", "{retry:?}");
    assert_eq!(
        *gate.applied.lock().unwrap(),
        ["evt_new", "evt_old", "evt_new"]
    );
    assert_eq!(
        store
            .watermark("cus_1")
            .await
            .unwrap()
            .map(|w| w.event_id.to_string()),
        Some("evt_new".to_owned())
    );
}

/// A delivery of `evt_a` (its handler held by the gate) on a [`Faulty`] store whose
/// first object lock, the lease renewal's, lands [`SLOW`] after it is sent: the store,
/// the gate, the processor and the delivery's task.
fn renewal_lands_late(
    lease: Duration,
) -> (
    Faulty,
    Arc<Gate>,
    Arc<Processor>,
    tokio::task::JoinHandle<stripe_webhooks::Outcome>,
) {
    let (_clock, store, gate, p) = gated_on("evt_a", lease, |inner| Faulty {
        slow_lock: Arc::new(AtomicUsize::new(1)),
        ..Faulty::new(inner)
    });
    let p = Arc::new(p.with_store_timeout(Duration::from_secs(1)));
    let first = {
        let p = Arc::clone(&p);
        tokio::spawn(async move { p.process_event(&update("evt_a", "cus_1", BASE + 1)).await })
    };
    (store, gate, p, first)
}

/// A handler that finishes while its lease's renewal is on its way: the completion waits
/// for the renewal, whose object lock would otherwise take effect after the completion
/// freed the object, and hold it, with nobody to let it go, for a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_on_its_way_when_the_handler_ends_does_not_lock_the_object_again() {
    let lease = Duration::from_secs(3);
    let (store, gate, p, first) = renewal_lands_late(lease);
    // The renewal starts a third of the lease in; its object lock lands SLOW later.
    until("the renewal started", || store.slow_lock.load(SeqCst) == 0).await;
    tokio::time::sleep(SLOW / 2).await;
    gate.open.notify_one();
    let first = first.await.unwrap();
    assert_eq!(first.kind().name(), "processed", "{first:?}");
    assert_eq!(store.slow_lock.load(SeqCst), 0, "the renewal ran");
    tokio::time::sleep(SLOW).await;
    let next = p.process_event(&update("evt_b", "cus_1", BASE + 2)).await;
    assert_eq!(
        next.kind().name(),
        "processed",
        "the object is free: {next:?}"
    );
}

/// A delivery dropped while its succeeded handler waits for the renewal on its way (a
/// client that hung up then): its claim is completed, never released, or Stripe's
/// retry would run the handler a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_dropped_while_its_renewal_ends_completes_its_claim() {
    use stripe_webhooks::StoreAdmin;
    let lease = Duration::from_secs(3);
    let (store, gate, p, first) = renewal_lands_late(lease);
    until("the renewal started", || store.slow_lock.load(SeqCst) == 0).await;
    tokio::time::sleep(SLOW / 4).await;
    gate.open.notify_one();
    // The handler has succeeded; the delivery waits for the renewal, and is dropped.
    tokio::time::sleep(SLOW / 4).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // The drop guard settles the claim from a task of its own.
    tokio::time::sleep(SLOW).await;
    let record = store.inner.record(&EventId::new("evt_a")).await.unwrap();
    assert_eq!(
        record.map(|r| r.status),
        Some(stripe_webhooks::RecordStatus::Completed),
        "the handler ran: Stripe's retry must be a duplicate"
    );
    let retry = p.process_event(&update("evt_a", "cus_1", BASE + 1)).await;
    assert_eq!(retry.kind().name(), "duplicate", "{retry:?}");
    assert_eq!(*gate.applied.lock().unwrap(), ["evt_a"]);
}

/// A failed delivery whose release outlives the store timeout (it never reaches the
/// store): the object's lock is let go all the same, so the object's other events are
/// not answered 409 until the lock's lease ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_cut_by_its_timeout_still_frees_the_object() {
    let store = Faulty {
        hung_release: Arc::new(AtomicUsize::new(1)),
        ..Faulty::new(MemoryStore::new())
    };
    let p = Processor::ordered(
        Verifier::new(SigningSecret::new(common::SECRET).unwrap()),
        store.clone(),
        EventRouter::new().fallback(|_e| {
            Box::pin(async { Err(HandlerError::new(std::io::Error::other("card declined"))) })
        }),
        TiePolicy::Run,
    )
    .with_lease(Duration::from_secs(600))
    .with_store_timeout(Duration::from_millis(150));
    let failed = p
        .process_event(&update("evt_fails", "cus_1", BASE + 1))
        .await;
    assert_eq!(failed.status(), 500, "{failed:?}");
    let probe = store
        .inner
        .lock_object("cus_1", "probe", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(matches!(probe, ObjectLock::Acquired { .. }), "{probe:?}");
}

/// A renewal that finds the lock taken over (another holder applied a newer event while
/// it had lapsed) releases the claim, but the release never reaches the store (its
/// timeout drops it), and the handler finishes before the next renewal: the completion
/// must not go through, or Stripe's retry of the failed delivery would be a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_found_the_lock_lost_keeps_the_run_from_completing() {
    let lease = Duration::from_millis(900);
    let (clock, store, gate, p) = gated_faulty("evt_a", lease);
    let first = lapse_beside(
        &p,
        &gate,
        &clock,
        lease,
        ("evt_a", BASE + 1),
        ("evt_b", BASE + 2),
    )
    .await;
    store.hung_release.store(1, SeqCst);
    // The renewal at a third of the lease, and its release dropped at 150 ms.
    until("the renewal started", || store.lock_calls.load(SeqCst) > 0).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    gate.open.notify_one();
    let first = first.await.unwrap();
    assert!(first.status() >= 500, "{first:?}");
    assert_eq!(
        store
            .watermark("cus_1")
            .await
            .unwrap()
            .map(|w| w.event_id.to_string()),
        Some("evt_b".to_owned())
    );
    let retry = p.process_event(&update("evt_a", "cus_1", BASE + 1)).await;
    assert_eq!(retry.kind().name(), "stale", "{retry:?}");
}

/// A store on `OrderingStore`'s own `lock_and_claim` whose next `unlock_object` fails
/// (`fail_unlocks`).
#[derive(Default)]
struct FlakyUnlocks {
    inner: MemoryStore,
    fail_unlocks: AtomicUsize,
}

#[async_trait]
impl IdempotencyStore for FlakyUnlocks {
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
        self.inner.extend(t, l).await
    }
}

#[async_trait]
impl OrderingStore for FlakyUnlocks {
    async fn lock_object(&self, o: &str, h: &str, l: Duration) -> Result<ObjectLock, StoreError> {
        self.inner.lock_object(o, h, l).await
    }
    async fn complete_applied(
        &self,
        t: &ClaimToken,
        o: &str,
        h: &str,
        a: &Watermark,
    ) -> Result<(), StoreError> {
        self.inner.complete_applied(t, o, h, a).await
    }
    async fn unlock_object(&self, o: &str, h: &str) -> Result<(), StoreError> {
        let failing = self
            .fail_unlocks
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StoreError::unavailable("unlock refused"));
        }
        self.inner.unlock_object(o, h).await
    }
    async fn watermark(&self, o: &str) -> Result<Option<Watermark>, StoreError> {
        self.inner.watermark(o).await
    }
    async fn advance_watermark(&self, k: &str, w: &Watermark) -> Result<(), StoreError> {
        self.inner.advance_watermark(k, w).await
    }
}

/// `OrderingStore`'s own `lock_and_claim`, for a duplicate whose lock it could not give
/// back, answers the error, not the refusal: the processor answers 503 (Stripe retries
/// the duplicate, then 200) and lets the lock go again, so the object is free for its
/// other events at once. The refusal it answered left the lock to its lease, and every
/// other event of the object 409 meanwhile.
#[tokio::test]
async fn a_duplicates_lock_not_given_back_is_let_go_again() {
    let store = Arc::new(FlakyUnlocks::default());
    let h = Arc::new(Recorder::default());
    let p = processor(Arc::clone(&store), Arc::clone(&h), TiePolicy::Run)
        .with_lease(Duration::from_secs(30));
    let first = update("evt_dup", "cus_dup", BASE + 1);
    assert_eq!(p.process_event(&first).await.status(), 200);
    store.fail_unlocks.store(1, SeqCst);
    let again = p.process_event(&first).await;
    assert_eq!(again.status(), 503, "{again:?}");
    // The lock is let go by a task of its own.
    let mut freed = false;
    for _ in 0..100 {
        let lock = store
            .inner
            .lock_object("cus_dup", "probe", Duration::from_secs(1));
        if let ObjectLock::Acquired { .. } = lock.await.unwrap() {
            store.inner.unlock_object("cus_dup", "probe").await.unwrap();
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed, "the duplicate's lock stays held");
    let o = p
        .process_event(&update("evt_next", "cus_dup", BASE + 2))
        .await;
    assert_eq!(o.status(), 200, "{o:?}");
    assert_eq!(p.process_event(&first).await.kind().name(), "duplicate");
}

/// A store whose first renewal's `lock_object` (its `lock_and_claim` is the memory
/// store's own, so every `lock_object` is a renewal's or a completion's) runs on "the
/// server" (a task of its own) and lands `RELOCK_LANDS_AFTER` later, whether or not its
/// caller still waits; the later ones fail (`later_fail`) or answer at once.
struct LateRelocks {
    inner: Arc<MemoryStore>,
    calls: AtomicUsize,
    later_fail: bool,
    /// Completions (plain, a stale event's) hang until cut by the store timeout.
    completions_hang: bool,
    landed: Arc<std::sync::atomic::AtomicBool>,
}

const RELOCK_LANDS_AFTER: Duration = Duration::from_millis(700);

#[async_trait]
impl IdempotencyStore for LateRelocks {
    async fn claim(&self, id: &EventId, t: &EventType, l: Duration) -> Result<Claim, StoreError> {
        self.inner.claim(id, t, l).await
    }
    async fn complete(&self, t: &ClaimToken) -> Result<(), StoreError> {
        if self.completions_hang {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        self.inner.complete(t).await
    }
    async fn release(&self, t: &ClaimToken, r: &str) -> Result<(), StoreError> {
        self.inner.release(t, r).await
    }
    async fn extend(&self, t: &ClaimToken, l: Duration) -> Result<(), StoreError> {
        self.inner.extend(t, l).await
    }
}

#[async_trait]
impl OrderingStore for LateRelocks {
    async fn lock_and_claim(
        &self,
        o: &str,
        h: &str,
        l: Duration,
        id: &EventId,
        t: &EventType,
    ) -> Result<LockedClaim, StoreError> {
        self.inner.lock_and_claim(o, h, l, id, t).await
    }
    async fn lock_object(&self, o: &str, h: &str, l: Duration) -> Result<ObjectLock, StoreError> {
        if self.calls.fetch_add(1, SeqCst) > 0 {
            if self.later_fail {
                return Err(StoreError::unavailable("down"));
            }
            return self.inner.lock_object(o, h, l).await;
        }
        let (inner, landed) = (Arc::clone(&self.inner), Arc::clone(&self.landed));
        let (o, h) = (o.to_owned(), h.to_owned());
        let on_the_server = tokio::spawn(async move {
            tokio::time::sleep(RELOCK_LANDS_AFTER).await;
            let locked = inner.lock_object(&o, &h, l).await;
            landed.store(true, SeqCst);
            locked
        });
        on_the_server.await.unwrap()
    }
    async fn complete_applied(
        &self,
        t: &ClaimToken,
        o: &str,
        h: &str,
        a: &Watermark,
    ) -> Result<(), StoreError> {
        self.inner.complete_applied(t, o, h, a).await
    }
    async fn unlock_object(&self, o: &str, h: &str) -> Result<(), StoreError> {
        self.inner.unlock_object(o, h).await
    }
    async fn watermark(&self, o: &str) -> Result<Option<Watermark>, StoreError> {
        self.inner.watermark(o).await
    }
    async fn advance_watermark(&self, k: &str, w: &Watermark) -> Result<(), StoreError> {
        self.inner.advance_watermark(k, w).await
    }
}

/// A renewal's `lock_object` cut by its timeout, which lands on the server after the run
/// let the object go, is let go again from a task, so the object's other events are not
/// held up (409) for a lease more: whether the handler was then stopped (its renewals
/// failing), succeeded and completed, or its delivery was dropped (the client hung up);
/// and for a stale event whose completion was cut every time (a plain completion, which
/// needs no lock). Before, it held the object to its lease's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewals_lock_that_lands_after_the_run_is_let_go() {
    // (renewals after the first fail, the handler's run, the delivery's status (0: the
    // delivery is dropped at 450 ms, after the first renewal was cut), a stale event
    // whose completions hang (answered 200: its retry is stale again))
    for (later_fail, run, status, stale) in [
        (true, Duration::from_secs(3), 500, false),
        (false, Duration::from_millis(500), 200, false),
        (false, Duration::from_secs(3), 0, false),
        (false, Duration::from_millis(500), 200, true),
    ] {
        let landed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store = Arc::new(LateRelocks {
            inner: Arc::new(MemoryStore::new()),
            calls: AtomicUsize::new(0),
            later_fail,
            completions_hang: stale,
            landed: Arc::clone(&landed),
        });
        if stale {
            let newer = Watermark::new(BASE + 2, EventId::new("evt_newer"));
            store
                .inner
                .advance_watermark("cus_late", &newer)
                .await
                .unwrap();
        }
        let lease = Duration::from_secs(1);
        let h = Arc::new(Recorder {
            delay: run,
            stale_delay: run,
            ..Recorder::default()
        });
        let p = processor(Arc::clone(&store), Arc::clone(&h), TiePolicy::Run)
            .with_handler_deadline(None)
            .with_lease(lease)
            .with_store_timeout(Duration::from_millis(50));
        let started = std::time::Instant::now();
        let event = update("evt_slow", "cus_late", BASE + 1);
        let delivery = p.process_event(&event);
        if status == 0 {
            let cut = tokio::time::timeout(Duration::from_millis(450), delivery).await;
            assert!(cut.is_err(), "{cut:?}");
        } else {
            let o = delivery.await;
            assert_eq!(o.status(), status, "{o:?}");
            if stale {
                assert_eq!(o.kind().name(), "completion_not_recorded", "{o:?}");
            }
        }
        assert_eq!(
            h.applied.lock().unwrap().len(),
            usize::from(status == 200 && !stale)
        );
        assert_eq!(h.stale.lock().unwrap().len(), usize::from(stale));
        // The renewal's lock lands after the run ended, and must not stay: before the
        // lease it took would pass, another holder has the object.
        while !landed.load(SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut free = false;
        while started.elapsed() < Duration::from_millis(1900) && !free {
            let lock = store.inner.lock_object("cus_late", "probe", lease).await;
            free = matches!(lock.unwrap(), ObjectLock::Acquired { .. });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            free,
            "status {status}: the late lock held the object past {:?}",
            started.elapsed()
        );
    }
}

/// Stripe lets you choose the ids of products and plans (a plan is a price with the same
/// id): a product `gold` and a plan `gold` are two objects, and one's change never makes
/// the other's stale. A plan's and a price's events for `gold` are one object's, and a
/// thin twin shares its snapshot's key. Before, a `product.updated` for `gold` made an
/// older `plan.updated` for `gold` stale: the plan's change was never applied.
#[tokio::test]
async fn a_product_and_a_plan_with_one_chosen_id_are_ordered_apart() {
    use stripe_webhooks::testing::ThinEventBuilder;
    let h = Arc::new(Recorder::default());
    let store = Arc::new(MemoryStore::new());
    let p = processor(Arc::clone(&store), Arc::clone(&h), TiePolicy::Run)
        .with_thin_handler(common::NoopThin);
    let of = |id: &str, ty: &str, object: &str, object_id: &str, created: i64| {
        let json = format!(r#"{{"id":"{object_id}","object":"{object}"}}"#);
        event_at(id, ty, &json, created, |_| {})
    };
    let p = &p;
    let name = |e: Event| async move { p.process_event(&e).await.kind().name() };
    assert_eq!(
        name(of(
            "evt_prod",
            "product.updated",
            "product",
            "gold",
            BASE + 2
        ))
        .await,
        "processed"
    );
    assert_eq!(
        name(of("evt_plan", "plan.updated", "plan", "gold", BASE + 1)).await,
        "processed"
    );
    // The plan is also the price `gold`: an older price event is stale.
    assert_eq!(
        name(of("evt_price", "price.updated", "price", "gold", BASE)).await,
        "stale"
    );
    assert_eq!(last_applied(&store, "product/gold").await, "evt_prod");
    assert_eq!(last_applied(&store, "price/gold").await, "evt_plan");
    // Ids Stripe made keep their bare key.
    assert_eq!(
        name(of("evt_p2", "product.updated", "product", "prod_1", BASE)).await,
        "processed"
    );
    assert_eq!(last_applied(&store, "prod_1").await, "evt_p2");
    // A thin twin of the product's change moves the product's watermark.
    let thin = ThinEventBuilder::new("evt_thin_prod", "v1.product.updated")
        .related("gold", "product", "/v1/products/gold")
        .snapshot_event("evt_prod3")
        .created(BASE + 3)
        .build();
    let n = dangerous::parse_unverified_notification(thin.as_bytes()).unwrap();
    assert_eq!(p.process_notification(&n).await.kind().name(), "processed");
    assert_eq!(last_applied(&store, "product/gold").await, "evt_prod3");
    assert_eq!(last_applied(&store, "price/gold").await, "evt_plan");
}
