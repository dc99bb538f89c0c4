//! Behaviours every [`IdempotencyStore`] must have. Call [`run_all`] from a test of your
//! store, or the functions one by one. Each uses fresh event ids, but two look at the
//! whole store ([`failed_events_page_in_order`] pages through every failed event, and
//! [`abandoned_claims_are_recorded_failed`] records every claim whose lease ended as
//! failed): give the suites ([`run_all`], [`run_ordering`]) a store of their own, one
//! at a time (a table or key prefix no other test uses), as the crate's own tests do.
//!
//! The behaviours about leases that run out need time to pass: give a store that takes
//! a clock a [`ManualClock`] and [`LeaseTime::Manual`] (no sleeping, nothing to race),
//! and a store that judges leases by its server's clock [`LeaseTime::Real`], whose
//! margins hold on a loaded machine.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use stripe_webhooks::testing::store_conformance::{self, LeaseTime};
//! use stripe_webhooks::{ManualClock, MemoryStore};
//!
//! let clock = ManualClock::new(1_700_000_000_000);
//! let store = MemoryStore::new().with_clock(clock.clone());
//! store_conformance::run_all(Arc::new(store), LeaseTime::Manual(clock)).await;
//! # });
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::clock::ManualClock;
use crate::event::{EventId, EventType};
use crate::idempotency::{
    Claim, ClaimToken, IdempotencyStore, LockedClaim, ObjectLock, OrderingStore, RecordStatus,
    StoreAdmin, StoreError, Watermark,
};

const LONG: Duration = Duration::from_secs(600);

/// The lease that [`LeaseTime::Real`] lets run out: long enough that a live lease stays
/// live across a few database calls on a loaded machine.
pub const SHORT_LEASE: Duration = Duration::from_secs(2);

/// How the behaviours about leases make a lease run out.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LeaseTime {
    /// The store judges leases by this clock (it was given to the store): the
    /// behaviours move it forward.
    Manual(ManualClock),
    /// The store judges leases by a real clock (its server's): the behaviours take a
    /// [`SHORT_LEASE`] and sleep past it.
    Real,
}

impl LeaseTime {
    fn short_lease(&self) -> Duration {
        match self {
            LeaseTime::Manual(_) => Duration::from_secs(30),
            LeaseTime::Real => SHORT_LEASE,
        }
    }

    /// Moves past the present millisecond, so that what happens next is later.
    async fn tick(&self) {
        match self {
            LeaseTime::Manual(clock) => clock.advance(Duration::from_millis(1)),
            LeaseTime::Real => tokio::time::sleep(Duration::from_millis(3)).await,
        }
    }

    /// Lets a [`short_lease`](Self::short_lease) taken before now run out.
    async fn run_out(&self) {
        match self {
            LeaseTime::Manual(clock) => clock.advance(Duration::from_secs(31)),
            LeaseTime::Real => tokio::time::sleep(SHORT_LEASE + Duration::from_millis(500)).await,
        }
    }
}

const TYPE: EventType = EventType::InvoicePaid;

fn fresh_id(what: &str) -> EventId {
    let nonce = ClaimToken::new(EventId::new(what), 0).fence() as u64;
    EventId::new(format!("evt_conf_{what}_{nonce:x}"))
}

async fn acquire<S: IdempotencyStore + ?Sized>(
    store: &S,
    id: &EventId,
    lease: Duration,
) -> ClaimToken {
    match store.claim(id, &TYPE, lease).await {
        Ok(Claim::Acquired(t)) => t,
        other => panic!("first claim of {id} should be Acquired, got {other:?}"),
    }
}

/// Runs every behaviour in turn: [`run_claims`], then those that read records back
/// through [`StoreAdmin`].
pub async fn run_all<S: StoreAdmin>(store: Arc<S>, time: LeaseTime) {
    run_claims(Arc::clone(&store), time.clone()).await;
    first_claim_acquires(&*store).await;
    complete_leads_to_completed(&*store).await;
    release_makes_claimable_again(&*store).await;
    failed_events_page_in_order(&*store, &time).await;
    zombie_cannot_complete(&*store, &time).await;
    abandoned_claims_are_recorded_failed(&*store, &time).await;
}

/// Runs the behaviours that need only [`IdempotencyStore`], for a store that does not
/// implement [`StoreAdmin`].
pub async fn run_claims<S: IdempotencyStore>(store: Arc<S>, time: LeaseTime) {
    claim_complete_release_cycle(&*store).await;
    live_claim_is_in_progress(&*store).await;
    expired_lease_is_taken_over(&*store, &time).await;
    extend_keeps_the_claim(&*store, &time).await;
    foreign_token_is_rejected(&*store).await;
    concurrent_takeovers_acquire_once(Arc::clone(&store), &time, 50).await;
    concurrent_claims_acquire_once(store, 50).await;
}

/// Claim, release, claim again (attempt 2), complete: then every claim is `Completed`,
/// and the finished claim can no longer be completed or released.
pub async fn claim_complete_release_cycle<S: IdempotencyStore + ?Sized>(store: &S) {
    let id = fresh_id("cycle");
    let first = acquire(store, &id, LONG).await;
    assert_eq!((first.attempt(), first.event_id()), (1, &id));
    store.release(&first, "try again").await.unwrap();
    let second = acquire(store, &id, LONG).await;
    assert_eq!(second.attempt(), 2);
    assert!(matches!(
        store.complete(&first).await,
        Err(StoreError::LeaseLost { .. })
    ));
    store.complete(&second).await.unwrap();
    assert_eq!(
        store.claim(&id, &TYPE, LONG).await.unwrap(),
        Claim::Completed
    );
    assert!(matches!(
        store.release(&second, "late").await,
        Err(StoreError::LeaseLost { .. })
    ));
}

/// The first claim of an id acquires it, attempt 1, and the record says processing.
pub async fn first_claim_acquires<S: StoreAdmin + ?Sized>(store: &S) {
    let id = fresh_id("first");
    let token = acquire(store, &id, LONG).await;
    assert_eq!(token.attempt(), 1);
    assert_eq!(token.event_id(), &id);
    let rec = store
        .record(&id)
        .await
        .unwrap()
        .expect("record after claim");
    assert_eq!(rec.status, RecordStatus::Processing);
    assert_eq!(rec.attempts, 1);
    assert_eq!(rec.event_type, TYPE);
}

/// A second claim during a live lease is `InProgress` with a positive `retry_after` no
/// longer than the lease.
pub async fn live_claim_is_in_progress<S: IdempotencyStore + ?Sized>(store: &S) {
    let id = fresh_id("live");
    acquire(store, &id, LONG).await;
    match store.claim(&id, &TYPE, LONG).await.unwrap() {
        Claim::InProgress { retry_after } => {
            assert!(
                retry_after > Duration::ZERO && retry_after <= LONG,
                "{retry_after:?}"
            );
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
}

/// After `complete`, every claim is `Completed`, and the record keeps the completion time.
pub async fn complete_leads_to_completed<S: StoreAdmin + ?Sized>(store: &S) {
    let id = fresh_id("complete");
    let token = acquire(store, &id, LONG).await;
    store.complete(&token).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            store.claim(&id, &TYPE, LONG).await.unwrap(),
            Claim::Completed
        );
    }
    let rec = store.record(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, RecordStatus::Completed);
    assert!(rec.completed_at_ms.is_some());
    // Completing again with the same token (its first answer was lost) succeeds and
    // changes nothing; releasing or extending it is refused: the claim is over.
    store.complete(&token).await.unwrap();
    let again = store.record(&id).await.unwrap().unwrap();
    assert_eq!(again.status, RecordStatus::Completed);
    assert_eq!(again.completed_at_ms, rec.completed_at_ms);
    assert!(matches!(
        store.release(&token, "late").await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.extend(&token, LONG).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(
        store.record(&id).await.unwrap().unwrap().status,
        RecordStatus::Completed
    );
}

/// [`failed_events_after`](StoreAdmin::failed_events_after) pages through
/// [`failed_events`](StoreAdmin::failed_events)' order (when each was first seen), each
/// failed event once; an event that completed since still marks its place, and an id the
/// store never had gives an empty page.
pub async fn failed_events_page_in_order<S: StoreAdmin + ?Sized>(store: &S, time: &LeaseTime) {
    let ids: Vec<EventId> = (0..5).map(|i| fresh_id(&format!("page{i}"))).collect();
    for id in &ids {
        time.tick().await;
        let token = acquire(store, id, LONG).await;
        store.release(&token, "down").await.unwrap();
    }
    time.tick().await;
    // The middle one completes on its second attempt: no longer failed.
    let token = acquire(store, &ids[2], LONG).await;
    store.complete(&token).await.unwrap();

    let ids_of = |v: &[crate::idempotency::EventRecord]| {
        v.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>()
    };
    let all = store.failed_events(100_000).await.unwrap();
    let mine: Vec<EventId> = ids_of(&all)
        .into_iter()
        .filter(|id| ids.contains(id))
        .collect();
    let want = [&ids[0], &ids[1], &ids[3], &ids[4]].map(Clone::clone);
    assert_eq!(mine, want, "failed events, oldest first");
    // Pages of two, each after the last id of the one before, make up the whole list.
    let mut paged = store.failed_events(2).await.unwrap();
    for _ in 0..all.len() {
        let Some(last) = paged.last().map(|r| r.event_id.clone()) else {
            break;
        };
        let page = store.failed_events_after(&last, 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2, "{} records in a page of 2", page.len());
        paged.extend(page);
    }
    assert_eq!(
        ids_of(&paged),
        ids_of(&all),
        "each failed event once, in order"
    );
    // After the completed one: from the next one failed on.
    let next = all.iter().position(|r| r.event_id == ids[3]).unwrap();
    let after = store.failed_events_after(&ids[2], 100_000).await.unwrap();
    assert_eq!(ids_of(&after), ids_of(&all[next..]));
    assert!(store
        .failed_events_after(&fresh_id("never_seen"), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .failed_events_after(&ids[0], 0)
        .await
        .unwrap()
        .is_empty());

    // With a clock that stands still, three failures in one millisecond, failed in another
    // order than their ids': listed by id, and paged so.
    if let LeaseTime::Manual(_) = time {
        time.tick().await;
        let tied: Vec<EventId> = ["c", "a", "b"]
            .iter()
            .map(|s| fresh_id(&format!("tie_{s}")))
            .collect();
        for id in &tied {
            let token = acquire(store, id, LONG).await;
            store.release(&token, "down").await.unwrap();
        }
        let mut by_id = tied.clone();
        by_id.sort();
        let listed: Vec<EventId> = ids_of(&store.failed_events(100_000).await.unwrap())
            .into_iter()
            .filter(|id| tied.contains(id))
            .collect();
        assert_eq!(listed, by_id, "ties listed by id");
        for pair in by_id.windows(2) {
            let page = store.failed_events_after(&pair[0], 1).await.unwrap();
            assert_eq!(ids_of(&page), [pair[1].clone()]);
        }
    }
}

/// After `release`, the event is claimable at once (attempt 2), the reason is kept and
/// the event is listed by `failed_events` until it completes.
pub async fn release_makes_claimable_again<S: StoreAdmin + ?Sized>(store: &S) {
    let id = fresh_id("release");
    let token = acquire(store, &id, LONG).await;
    store.release(&token, "mailer down").await.unwrap();
    let rec = store.record(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, RecordStatus::Failed);
    assert_eq!(rec.last_error.as_deref(), Some("mailer down"));
    let failed = store.failed_events(10_000).await.unwrap();
    assert!(
        failed.iter().any(|r| r.event_id == id),
        "failed_events lists the released event"
    );

    let second = acquire(store, &id, LONG).await;
    assert_eq!(second.attempt(), 2);
    store.complete(&second).await.unwrap();
    let failed = store.failed_events(10_000).await.unwrap();
    assert!(
        !failed.iter().any(|r| r.event_id == id),
        "a completed event is not failed"
    );
    // A reason longer than 1 KiB is cut.
    let id = fresh_id("longreason");
    let token = acquire(store, &id, LONG).await;
    store.release(&token, &"x".repeat(5000)).await.unwrap();
    let rec = store.record(&id).await.unwrap().unwrap();
    assert!(rec.last_error.unwrap().len() <= crate::idempotency::MAX_ERROR_LEN);
    // A NUL (which PostgreSQL refuses in text) is recorded as U+FFFD, in every store.
    let id = fresh_id("nulreason");
    let token = acquire(store, &id, LONG).await;
    store.release(&token, "bad\0byte").await.unwrap();
    let rec = store.record(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, RecordStatus::Failed);
    assert_eq!(rec.last_error.as_deref(), Some("bad\u{FFFD}byte"));
}

/// Once a lease expires, the next claim takes the event over (attempt 2).
pub async fn expired_lease_is_taken_over<S: IdempotencyStore + ?Sized>(
    store: &S,
    time: &LeaseTime,
) {
    let id = fresh_id("expire");
    acquire(store, &id, time.short_lease()).await;
    assert!(matches!(
        store.claim(&id, &TYPE, LONG).await.unwrap(),
        Claim::InProgress { .. }
    ));
    time.run_out().await;
    let taken = acquire(store, &id, LONG).await;
    assert_eq!(taken.attempt(), 2);
    store.complete(&taken).await.unwrap();
}

/// A holder whose lease expired and was taken over changes nothing: `complete`,
/// `release` and `extend` all report `LeaseLost`, and the new holder completes.
pub async fn zombie_cannot_complete<S: StoreAdmin + ?Sized>(store: &S, time: &LeaseTime) {
    let id = fresh_id("zombie");
    let a = acquire(store, &id, time.short_lease()).await;
    time.run_out().await;
    let b = acquire(store, &id, LONG).await;
    assert!(matches!(
        store.complete(&a).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.release(&a, "late").await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.extend(&a, LONG).await,
        Err(StoreError::LeaseLost { .. })
    ));
    let rec = store.record(&id).await.unwrap().unwrap();
    assert_eq!(
        rec.status,
        RecordStatus::Processing,
        "the zombie changed nothing"
    );
    store.complete(&b).await.unwrap();
    assert_eq!(
        store.claim(&id, &TYPE, LONG).await.unwrap(),
        Claim::Completed
    );
    // Once the new holder completed, the zombie's completion is still refused: only a
    // completion with the completing fence finds its own work done.
    assert!(matches!(
        store.complete(&a).await,
        Err(StoreError::LeaseLost { .. })
    ));
}

/// [`StoreAdmin::fail_abandoned`] records as failed a claim still processing whose lease
/// ended longer ago than it is told, and nothing else: not a live claim, not one whose
/// lease ended more recently. The abandoned claim's holder has lost it, it is listed
/// failed with [`ABANDONED_ERROR`](crate::ABANDONED_ERROR), and the next claim takes it
/// (attempt 2).
pub async fn abandoned_claims_are_recorded_failed<S: StoreAdmin + ?Sized>(
    store: &S,
    time: &LeaseTime,
) {
    let live = fresh_id("abandon_live");
    let live_token = acquire(store, &live, LONG).await;
    let id = fresh_id("abandoned");
    let token = acquire(store, &id, time.short_lease()).await;
    time.run_out().await;
    store
        .fail_abandoned(Duration::from_secs(3600))
        .await
        .unwrap();
    let rec = store.record(&id).await.unwrap().unwrap();
    assert_eq!(
        rec.status,
        RecordStatus::Processing,
        "its lease ended less than an hour ago"
    );
    let n = store.fail_abandoned(Duration::ZERO).await.unwrap();
    assert!(n >= 1, "{n} recorded");
    let rec = store.record(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, RecordStatus::Failed);
    assert_eq!(rec.attempts, 1);
    assert_eq!(
        rec.last_error.as_deref(),
        Some(crate::idempotency::ABANDONED_ERROR)
    );
    let failed = store.failed_events(10_000).await.unwrap();
    assert!(
        failed.iter().any(|r| r.event_id == id),
        "failed_events lists the abandoned event"
    );
    let rec = store.record(&live).await.unwrap().unwrap();
    assert_eq!(rec.status, RecordStatus::Processing, "a live claim stays");
    assert!(matches!(
        store.complete(&token).await,
        Err(StoreError::LeaseLost { .. })
    ));
    let again = acquire(store, &id, LONG).await;
    assert_eq!(again.attempt(), 2);
    store.complete(&again).await.unwrap();
    store.complete(&live_token).await.unwrap();
    let failed = store.failed_events(10_000).await.unwrap();
    assert!(!failed.iter().any(|r| r.event_id == id));
}

/// `extend` keeps a claim alive past its original lease.
pub async fn extend_keeps_the_claim<S: IdempotencyStore + ?Sized>(store: &S, time: &LeaseTime) {
    let id = fresh_id("extend");
    let token = acquire(store, &id, time.short_lease()).await;
    store.extend(&token, LONG).await.unwrap();
    time.run_out().await;
    assert!(matches!(
        store.claim(&id, &TYPE, LONG).await.unwrap(),
        Claim::InProgress { .. }
    ));
    store.complete(&token).await.unwrap();
}

/// A token with the right event id but another fence changes nothing.
pub async fn foreign_token_is_rejected<S: IdempotencyStore + ?Sized>(store: &S) {
    let id = fresh_id("foreign");
    let token = acquire(store, &id, LONG).await;
    // Same event and attempt, another fence.
    let forged = ClaimToken::new(id.clone(), token.attempt());
    assert!(matches!(
        store.complete(&forged).await,
        Err(StoreError::LeaseLost { .. })
    ));
    let unknown = ClaimToken::new(fresh_id("nobody"), 1);
    assert!(matches!(
        store.complete(&unknown).await,
        Err(StoreError::LeaseLost { .. })
    ));
    store.complete(&token).await.unwrap();
}

/// Of `n` concurrent claims of one id, on several tasks, exactly one is `Acquired`; the
/// others are `InProgress`.
pub async fn concurrent_claims_acquire_once<S: IdempotencyStore>(store: Arc<S>, n: usize) {
    let id = fresh_id("race");
    race_claims(&store, &id, n, "concurrent claims of a new event").await;
}

/// `n` claims of `id` at once (behind a barrier): exactly one acquires.
async fn race_claims<S: IdempotencyStore>(store: &Arc<S>, id: &EventId, n: usize, what: &str) {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.claim(&id, &TYPE, LONG).await
        }));
    }
    let mut acquired = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Claim::Acquired(_) => acquired += 1,
            Claim::InProgress { .. } => {}
            Claim::Completed => panic!("{what}: nothing completed the event"),
        }
    }
    assert_eq!(acquired, 1, "{what}: exactly one of {n} acquires");
}

/// Many claims at once of an event that is there to take over, failed (released) or
/// with its lease run out: exactly one acquires. (A store that reads the record and
/// then writes it passes a race on a new event, where its insert collides, and fails
/// this one.)
pub async fn concurrent_takeovers_acquire_once<S: IdempotencyStore>(
    store: Arc<S>,
    time: &LeaseTime,
    n: usize,
) {
    let released = fresh_id("race_released");
    let first = acquire(&*store, &released, LONG).await;
    store.release(&first, "failed on purpose").await.unwrap();
    race_claims(
        &store,
        &released,
        n,
        "concurrent takeovers of a failed event",
    )
    .await;
    let lapsed = fresh_id("race_lapsed");
    acquire(&*store, &lapsed, time.short_lease()).await;
    time.run_out().await;
    race_claims(&store, &lapsed, n, "concurrent takeovers of a lapsed claim").await;
}

/// Runs the behaviours of the ordering guard's side of a store ([`OrderingStore`]):
/// object locks, watermarks that never go back, and the one atomic completion.
pub async fn run_ordering<S: OrderingStore>(store: Arc<S>, time: LeaseTime) {
    object_lock_is_exclusive(&*store).await;
    complete_applied_moves_the_watermark_forward_only(&*store).await;
    complete_applied_with_a_lost_claim_changes_nothing(&*store).await;
    expired_object_lock_is_taken_over(&*store, &time).await;
    complete_applied_after_the_lock_was_taken_over_changes_nothing(&*store, &time).await;
    advance_watermark_only_moves_forward(&*store).await;
    lock_and_claim_locks_then_claims(&*store).await;
    claim_locks_and_object_locks_exclude_each_other(&*store, &time).await;
    concurrent_lock_and_claims_acquire_once(Arc::clone(&store), 50).await;
    concurrent_object_locks_acquire_once(store, 50).await;
}

/// The lock `lock_and_claim` takes and the one `lock_object` takes are one lock, however
/// a store keeps them: each
/// keeps other holders out of the other, the holder renews its own either way, the
/// holder's unlock frees both, and one whose claim's lease ran out is taken over.
pub async fn claim_locks_and_object_locks_exclude_each_other<S: OrderingStore + ?Sized>(
    store: &S,
    time: &LeaseTime,
) {
    let obj = fresh_object("both");
    let (first, second) = (fresh_id("both1"), fresh_id("both2"));
    let token = match store
        .lock_and_claim(&obj, "a", LONG, &first, &TYPE)
        .await
        .unwrap()
    {
        LockedClaim::Acquired { token, .. } => token,
        other => panic!("lock and claim should both succeed, got {other:?}"),
    };
    match store.lock_object(&obj, "b", LONG).await.unwrap() {
        ObjectLock::Busy { retry_after } => assert!(retry_after > Duration::ZERO),
        other => panic!("a claim's lock must keep others out, got {other:?}"),
    }
    assert_eq!(
        acquired(store.lock_object(&obj, "a", LONG).await.unwrap()),
        None
    );
    store.unlock_object(&obj, "a").await.unwrap();
    assert_eq!(
        acquired(store.lock_object(&obj, "b", LONG).await.unwrap()),
        None
    );
    match store
        .lock_and_claim(&obj, "c", LONG, &second, &TYPE)
        .await
        .unwrap()
    {
        LockedClaim::Busy { retry_after } => assert!(retry_after > Duration::ZERO),
        other => panic!("an object lock must keep claims out, got {other:?}"),
    }
    // The first claim is still held, but its holder let the object go and `b` has it:
    // it cannot complete under `b`'s lock. Locked again, it completes and moves the
    // watermark.
    assert!(matches!(
        store
            .complete_applied(&token, &obj, "a", &Watermark::new(5, first.clone()))
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    store.unlock_object(&obj, "b").await.unwrap();
    assert_eq!(
        acquired(store.lock_object(&obj, "a", LONG).await.unwrap()),
        None
    );
    store
        .complete_applied(&token, &obj, "a", &Watermark::new(5, first.clone()))
        .await
        .unwrap();

    // A holder that crashed holding a claim's lock: its lease ends, another takes over.
    match store
        .lock_and_claim(&obj, "crashed", time.short_lease(), &second, &TYPE)
        .await
        .unwrap()
    {
        LockedClaim::Acquired { watermark, .. } => {
            assert_eq!(watermark, Some(Watermark::new(5, first)));
        }
        other => panic!("the object is free again, got {other:?}"),
    }
    assert!(matches!(
        store.lock_object(&obj, "next", LONG).await.unwrap(),
        ObjectLock::Busy { .. }
    ));
    time.run_out().await;
    assert!(acquired(store.lock_object(&obj, "next", LONG).await.unwrap()).is_some());
}

/// `lock_and_claim`: both or neither. A busy object claims nothing; a refused claim
/// leaves the object unlocked.
pub async fn lock_and_claim_locks_then_claims<S: OrderingStore + ?Sized>(store: &S) {
    let obj = fresh_object("lac");
    let (first, second) = (fresh_id("lac1"), fresh_id("lac2"));
    let token = match store
        .lock_and_claim(&obj, "h1", LONG, &first, &TYPE)
        .await
        .unwrap()
    {
        LockedClaim::Acquired {
            watermark: None,
            token,
        } => token,
        other => panic!("lock and claim should both succeed, got {other:?}"),
    };
    assert!(matches!(
        store
            .lock_and_claim(&obj, "h2", LONG, &second, &TYPE)
            .await
            .unwrap(),
        LockedClaim::Busy { .. }
    ));
    // The busy call claimed nothing: the second event is still new.
    let probe = acquire(store, &second, LONG).await;
    store.release(&probe, "probe").await.unwrap();
    store
        .complete_applied(&token, &obj, "h1", &Watermark::new(7, first.clone()))
        .await
        .unwrap();
    // A completed event is refused, and the object stays free for others.
    assert_eq!(
        store
            .lock_and_claim(&obj, "h3", LONG, &first, &TYPE)
            .await
            .unwrap(),
        LockedClaim::Refused(Claim::Completed)
    );
    assert_eq!(
        acquired(store.lock_object(&obj, "h4", LONG).await.unwrap()),
        Some(Watermark::new(7, first))
    );
}

/// A redelivery of a completed event is a duplicate even while another holder has its
/// object (there is nothing to wait for), and that holder's lock stays: an event that is
/// not done still waits.
///
/// Not part of [`run_ordering`]: the trait's default
/// [`lock_and_claim`](OrderingStore::lock_and_claim) locks first and answers
/// [`Busy`](LockedClaim::Busy) then (a retry after the lock finds the event completed).
/// The crate's stores all pass it.
pub async fn a_completed_event_is_a_duplicate_while_its_object_is_locked<
    S: OrderingStore + ?Sized,
>(
    store: &S,
) {
    let obj = fresh_object("dup");
    let (done, waiting) = (fresh_id("dup1"), fresh_id("dup2"));
    let token = match store
        .lock_and_claim(&obj, "h1", LONG, &done, &TYPE)
        .await
        .unwrap()
    {
        LockedClaim::Acquired { token, .. } => token,
        other => panic!("lock and claim should both succeed, got {other:?}"),
    };
    store
        .complete_applied(&token, &obj, "h1", &Watermark::new(7, done.clone()))
        .await
        .unwrap();
    assert!(acquired(store.lock_object(&obj, "h2", LONG).await.unwrap()).is_some());
    assert_eq!(
        store
            .lock_and_claim(&obj, "h3", LONG, &done, &TYPE)
            .await
            .unwrap(),
        LockedClaim::Refused(Claim::Completed)
    );
    assert!(matches!(
        store
            .lock_and_claim(&obj, "h3", LONG, &waiting, &TYPE)
            .await
            .unwrap(),
        LockedClaim::Busy { .. }
    ));
    // h2 still has it: h3's calls changed nothing.
    assert!(matches!(
        store.lock_object(&obj, "h4", LONG).await.unwrap(),
        ObjectLock::Busy { .. }
    ));
    store.unlock_object(&obj, "h2").await.unwrap();
}

/// `advance_watermark` (the reconciler's cursors) moves forward, never back.
pub async fn advance_watermark_only_moves_forward<S: OrderingStore + ?Sized>(store: &S) {
    let key = format!("reconcile:{}", fresh_object("cursor"));
    assert_eq!(store.watermark(&key).await.unwrap(), None);
    let at = |created: i64, id: &str| Watermark::new(created, EventId::new(id));
    store
        .advance_watermark(&key, &at(10, "evt_a"))
        .await
        .unwrap();
    store
        .advance_watermark(&key, &at(9, "evt_old"))
        .await
        .unwrap();
    assert_eq!(store.watermark(&key).await.unwrap(), Some(at(10, "evt_a")));
    store
        .advance_watermark(&key, &at(12, "evt_b"))
        .await
        .unwrap();
    assert_eq!(store.watermark(&key).await.unwrap(), Some(at(12, "evt_b")));
    // Compared exactly, even where a double is not (above 2^53).
    let big = 100_000_000_000_000_001;
    for (created, id) in [(big, "evt_big"), (big - 1, "evt_big_old")] {
        store
            .advance_watermark(&key, &at(created, id))
            .await
            .unwrap();
    }
    assert_eq!(
        store.watermark(&key).await.unwrap(),
        Some(at(big, "evt_big"))
    );
}

fn fresh_object(what: &str) -> String {
    let nonce = ClaimToken::new(EventId::new(what), 0).fence() as u64;
    format!("cus_conf_{what}_{nonce:x}")
}

fn acquired(lock: ObjectLock) -> Option<Watermark> {
    match lock {
        ObjectLock::Acquired { watermark } => watermark,
        ObjectLock::Busy { .. } => panic!("the object lock should have been acquired"),
    }
}

/// One holder at a time; the holder renews its own lock; an unlock by another holder
/// does nothing; after the holder's unlock another holder acquires.
pub async fn object_lock_is_exclusive<S: OrderingStore + ?Sized>(store: &S) {
    let obj = fresh_object("lock");
    assert_eq!(
        acquired(store.lock_object(&obj, "a", LONG).await.unwrap()),
        None
    );
    match store.lock_object(&obj, "b", LONG).await.unwrap() {
        ObjectLock::Busy { retry_after } => assert!(retry_after > Duration::ZERO),
        other => panic!("a second holder must wait, got {other:?}"),
    }
    assert_eq!(
        acquired(store.lock_object(&obj, "a", LONG).await.unwrap()),
        None
    );
    store.unlock_object(&obj, "b").await.unwrap();
    assert!(matches!(
        store.lock_object(&obj, "b", LONG).await.unwrap(),
        ObjectLock::Busy { .. }
    ));
    store.unlock_object(&obj, "a").await.unwrap();
    assert_eq!(
        acquired(store.lock_object(&obj, "b", LONG).await.unwrap()),
        None
    );
    assert_eq!(store.watermark(&obj).await.unwrap(), None);
}

async fn apply<S: OrderingStore + ?Sized>(
    store: &S,
    obj: &str,
    created: i64,
    what: &str,
) -> Watermark {
    apply_keeping(store, obj, created, what).await.0
}

/// As [`apply`], also giving back the claim's token and the lock's holder.
async fn apply_keeping<S: OrderingStore + ?Sized>(
    store: &S,
    obj: &str,
    created: i64,
    what: &str,
) -> (Watermark, ClaimToken, String) {
    let id = fresh_id(what);
    let token = acquire(store, &id, LONG).await;
    let holder = token.fence_hex();
    let _ = acquired(store.lock_object(obj, &holder, LONG).await.unwrap());
    let wm = Watermark::new(created, id);
    store
        .complete_applied(&token, obj, &holder, &wm)
        .await
        .unwrap();
    assert_eq!(
        store.claim(token.event_id(), &TYPE, LONG).await.unwrap(),
        Claim::Completed,
        "complete_applied completes the claim"
    );
    (wm, token, holder)
}

/// The watermark moves to a newer or same-second event, never to an older one, and each
/// completion frees the lock.
pub async fn complete_applied_moves_the_watermark_forward_only<S: OrderingStore + ?Sized>(
    store: &S,
) {
    let obj = fresh_object("wm");
    let (first, first_token, first_holder) = apply_keeping(store, &obj, 1_000, "wm1").await;
    assert_eq!(store.watermark(&obj).await.unwrap().as_ref(), Some(&first));
    // The lock is free again, and the next holder reads the watermark.
    assert_eq!(
        acquired(store.lock_object(&obj, "reader", LONG).await.unwrap()).as_ref(),
        Some(&first)
    );
    store.unlock_object(&obj, "reader").await.unwrap();
    let _older = apply(store, &obj, 999, "wm0").await;
    assert_eq!(
        store.watermark(&obj).await.unwrap().as_ref(),
        Some(&first),
        "never back"
    );
    let same_second = apply(store, &obj, 1_000, "wm1b").await;
    assert_eq!(
        store.watermark(&obj).await.unwrap().as_ref(),
        Some(&same_second)
    );
    let newer = apply(store, &obj, 1_001, "wm2").await;
    assert_eq!(store.watermark(&obj).await.unwrap().as_ref(), Some(&newer));
    // Compared exactly, even where a double is not (above 2^53).
    let big = fresh_object("wm_big");
    let biggest = apply(store, &big, 100_000_000_000_000_001, "wm_big").await;
    let _older = apply(store, &big, 100_000_000_000_000_000, "wm_big_old").await;
    assert_eq!(store.watermark(&big).await.unwrap(), Some(biggest));
    // Another claim's token never passes for the completing one.
    let foreign = ClaimToken::new(first_token.event_id().clone(), 1);
    assert!(matches!(
        store
            .complete_applied(&foreign, &obj, &first_holder, &first)
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    // The first completion tried again (its answer was lost) succeeds and changes
    // nothing: not the watermark, not the lock.
    store
        .complete_applied(&first_token, &obj, &first_holder, &first)
        .await
        .unwrap();
    assert_eq!(store.watermark(&obj).await.unwrap().as_ref(), Some(&newer));
    let lock = store.lock_object(&obj, "after", LONG).await.unwrap();
    assert!(matches!(lock, ObjectLock::Acquired { .. }), "{lock:?}");
    store.unlock_object(&obj, "after").await.unwrap();
}

/// A token that lost its claim changes nothing: not the record, not the watermark, not
/// the lock (which the holder still has, until it unlocks or its lease ends).
pub async fn complete_applied_with_a_lost_claim_changes_nothing<S: OrderingStore + ?Sized>(
    store: &S,
) {
    let obj = fresh_object("lost");
    let id = fresh_id("lost");
    let token = acquire(store, &id, LONG).await;
    store.release(&token, "gone").await.unwrap();
    let holder = token.fence_hex();
    let _ = acquired(store.lock_object(&obj, &holder, LONG).await.unwrap());
    let res = store
        .complete_applied(&token, &obj, &holder, &Watermark::new(5, id.clone()))
        .await;
    assert!(matches!(res, Err(StoreError::LeaseLost { .. })), "{res:?}");
    assert_eq!(store.watermark(&obj).await.unwrap(), None);
    let other = store.lock_object(&obj, "other", LONG).await.unwrap();
    assert!(matches!(other, ObjectLock::Busy { .. }), "{other:?}");
    store.unlock_object(&obj, &holder).await.unwrap();
    assert!(matches!(
        store.claim(&id, &TYPE, LONG).await.unwrap(),
        Claim::Acquired(_)
    ));
}

/// A lock whose lease ran out is taken over by another holder.
pub async fn expired_object_lock_is_taken_over<S: OrderingStore + ?Sized>(
    store: &S,
    time: &LeaseTime,
) {
    let obj = fresh_object("expired");
    let _ = acquired(
        store
            .lock_object(&obj, "crashed", time.short_lease())
            .await
            .unwrap(),
    );
    assert!(matches!(
        store.lock_object(&obj, "next", LONG).await.unwrap(),
        ObjectLock::Busy { .. }
    ));
    time.run_out().await;
    assert_eq!(
        acquired(store.lock_object(&obj, "next", LONG).await.unwrap()),
        None
    );
}

/// The token of a `lock_and_claim` that must lock and claim.
async fn locked_and_claimed<S: OrderingStore + ?Sized>(
    store: &S,
    obj: &str,
    holder: &str,
    lease: Duration,
    id: &EventId,
) -> ClaimToken {
    match store
        .lock_and_claim(obj, holder, lease, id, &TYPE)
        .await
        .unwrap()
    {
        LockedClaim::Acquired { token, .. } => token,
        got => panic!("lock and claim should succeed, got {got:?}"),
    }
}

/// A `lock_and_claim` whose claim is refused (the event completed: a duplicate) leaves
/// the object's lock as it found it. A lock that ran out stays its holder's, so that
/// holder's late completion still goes through (nothing else took the object), instead
/// of failing and running its handler again on Stripe's retry.
///
/// Not part of [`run_ordering`]: it holds for a store that checks the claim before it
/// takes the lock in one atomic step (`MemoryStore`, `RedisStore`), or undoes the lock
/// atomically when the claim is refused (`SqliteStore`'s trigger).
/// `PostgresStore` takes the lock in the statement that claims, and gives it back in a
/// second statement when the claim is refused, which frees a lapsed lock of another
/// holder: a guard of its own for that statement cost more than the duplicate run it
/// would save (benches/README.md).
pub async fn a_refused_claim_leaves_the_objects_lock_alone<S: OrderingStore + ?Sized>(
    store: &S,
    time: &LeaseTime,
) {
    let obj = fresh_object("refused");
    let (slow, done) = (fresh_id("refused1"), fresh_id("refused2"));
    let t = acquire(store, &done, LONG).await;
    store.complete(&t).await.unwrap();
    let token = locked_and_claimed(store, &obj, "slow", time.short_lease(), &slow).await;
    // The slow delivery's lock runs out while it completes; a duplicate arrives.
    time.run_out().await;
    match store
        .lock_and_claim(&obj, "dup", LONG, &done, &TYPE)
        .await
        .unwrap()
    {
        LockedClaim::Refused(Claim::Completed) => {}
        got => panic!("the duplicate's claim should be refused, got {got:?}"),
    }
    store
        .complete_applied(&token, &obj, "slow", &Watermark::new(7, slow.clone()))
        .await
        .unwrap_or_else(|e| panic!("the slow delivery's lock was disturbed: {e}"));
    assert_eq!(
        acquired(store.lock_object(&obj, "probe", LONG).await.unwrap()),
        Some(Watermark::new(7, slow))
    );
}

/// A holder whose object lock ran out and was taken by another holder cannot complete
/// with `complete_applied`, even with its claim's fence: the other may have applied a
/// newer event meanwhile (or be applying one), and this completion would then record an
/// event applied over it. It is `LeaseLost` and changes nothing.
pub async fn complete_applied_after_the_lock_was_taken_over_changes_nothing<
    S: OrderingStore + ?Sized,
>(
    store: &S,
    time: &LeaseTime,
) {
    let obj = fresh_object("lapsed");
    let (late, other) = (fresh_id("lapsed1"), fresh_id("lapsed2"));
    let token = locked_and_claimed(store, &obj, "late", time.short_lease(), &late).await;
    time.run_out().await;
    let taken = match store
        .lock_and_claim(&obj, "next", LONG, &other, &TYPE)
        .await
        .unwrap()
    {
        LockedClaim::Acquired { token, .. } => token,
        got => panic!("the lapsed lock should be taken over, got {got:?}"),
    };
    let err = store
        .complete_applied(&token, &obj, "late", &Watermark::new(9, late.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost { .. }),
        "a completion under a lock taken over: {err:?}"
    );
    // Nothing changed: the watermark is where it was, and the late event not completed.
    store
        .complete_applied(&taken, &obj, "next", &Watermark::new(5, other.clone()))
        .await
        .unwrap();
    assert_eq!(
        acquired(store.lock_object(&obj, "probe", LONG).await.unwrap()),
        Some(Watermark::new(5, other))
    );
    assert!(
        !matches!(
            store.claim(&late, &TYPE, LONG).await.unwrap(),
            Claim::Completed
        ),
        "the late event was completed"
    );
}

/// Many `lock_and_claim`s at once on one object, each by its own holder for its own
/// event: exactly one gets the object and its claim; the others are busy, and claim
/// nothing (their events are claimable after).
pub async fn concurrent_lock_and_claims_acquire_once<S: OrderingStore>(store: Arc<S>, n: usize) {
    let obj = fresh_object("race_locked_claim");
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (store, obj, barrier) = (Arc::clone(&store), obj.clone(), barrier.clone());
        let id = fresh_id(&format!("race_locked_claim_{i}"));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let got = store
                .lock_and_claim(&obj, &format!("h{i}"), LONG, &id, &TYPE)
                .await
                .unwrap();
            (id, got)
        }));
    }
    let (mut acquired, mut busy) = (0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            (_, LockedClaim::Acquired { .. }) => acquired += 1,
            (id, LockedClaim::Busy { .. }) => busy.push(id),
            (id, LockedClaim::Refused(c)) => panic!("{id}: refused ({c:?}), nothing held it"),
        }
    }
    assert_eq!(
        acquired, 1,
        "exactly one holder gets the object and its claim"
    );
    for id in busy {
        let t = acquire(&*store, &id, LONG).await;
        assert_eq!(t.attempt(), 1, "{id}: a busy lock_and_claim claimed it");
    }
}

/// `n` holders race for one object's lock: exactly one acquires.
pub async fn concurrent_object_locks_acquire_once<S: OrderingStore>(store: Arc<S>, n: usize) {
    let obj = fresh_object("race");
    let mut tasks = Vec::new();
    for i in 0..n {
        let (store, obj) = (Arc::clone(&store), obj.clone());
        tasks.push(tokio::spawn(async move {
            store
                .lock_object(&obj, &format!("h{i}"), LONG)
                .await
                .unwrap()
        }));
    }
    let mut acquired_n = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), ObjectLock::Acquired { .. }) {
            acquired_n += 1;
        }
    }
    assert_eq!(acquired_n, 1, "exactly one holder gets the object");
}
