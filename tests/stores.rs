//! Idempotency stores: the conformance suite for each, plus store-specific behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

mod common;

use stripe_webhooks::testing::store_conformance::{self, LeaseTime};
use stripe_webhooks::{
    Claim, EventId, EventType, IdempotencyStore, ManualClock, MemoryStore, RecordStatus,
    StoreAdmin, StoreError,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conformance() {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = MemoryStore::new().with_clock(clock.clone());
    store_conformance::run_all(Arc::new(store), LeaseTime::Manual(clock)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_ordering_conformance() {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = MemoryStore::new().with_clock(clock.clone());
    store_conformance::run_ordering(Arc::new(store.clone()), LeaseTime::Manual(clock.clone()))
        .await;
    store_conformance::a_refused_claim_leaves_the_objects_lock_alone(
        &store,
        &LeaseTime::Manual(clock),
    )
    .await;
    store_conformance::a_completed_event_is_a_duplicate_while_its_object_is_locked(&store).await;
}

const LEASE: Duration = Duration::from_secs(30);

/// A guarded completion whose holder does not hold the object's lock (here: never
/// took it, so the object has no row) is refused and changes nothing: neither the
/// watermark nor the claim.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn complete_applied_without_the_lock_changes_nothing<S: stripe_webhooks::OrderingStore>(
    store: S,
) {
    use stripe_webhooks::Watermark;
    let id = EventId::new("evt_rowless");
    let Claim::Acquired(token) = store
        .claim(&id, &EventType::CustomerUpdated, LEASE)
        .await
        .unwrap()
    else {
        panic!("not claimed")
    };
    let err = store
        .complete_applied(
            &token,
            "cus_rowless",
            "holder",
            &Watermark::new(2, id.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    assert_eq!(store.watermark("cus_rowless").await.unwrap(), None);
    assert!(matches!(
        store
            .claim(&id, &EventType::CustomerUpdated, LEASE)
            .await
            .unwrap(),
        Claim::InProgress { .. }
    ));
    store.complete(&token).await.unwrap();
}

/// Watermarks past the retention go in a purge, walked a bounded batch at a time (2,500
/// objects: three batches); a locked object's and a recent one's stay, and so does one
/// whose lock lapsed within the retention (its holder may still complete). A
/// reconciler's cursor (`reconcile:…`) stays whatever its age: a reconciler stopped for
/// longer than the retention resumes from it.
async fn watermarks_purge_past_retention<S: stripe_webhooks::OrderingStore + StoreAdmin>(store: S) {
    use stripe_webhooks::{ObjectLock, Watermark};
    let mark =
        |i: usize| Watermark::new(1_700_000_000 + i as i64, EventId::new(format!("evt_{i}")));
    let cursor = "reconcile:default:platform:all:v1";
    store.advance_watermark(cursor, &mark(3)).await.unwrap();
    // Not a cursor: a key that only looks like one.
    store
        .advance_watermark("reconcilex:default", &mark(4))
        .await
        .unwrap();
    for i in 0..2500 {
        store
            .advance_watermark(&format!("cus_{i:05}"), &mark(i))
            .await
            .unwrap();
    }
    let locked = store
        .lock_object("cus_01000", "holder_a", Duration::from_secs(600))
        .await
        .unwrap();
    assert!(matches!(locked, ObjectLock::Acquired { .. }), "{locked:?}");
    let lapsing = store
        .lock_object("cus_01500", "holder_slow", Duration::from_secs(4))
        .await
        .unwrap();
    assert!(
        matches!(lapsing, ObjectLock::Acquired { .. }),
        "{lapsing:?}"
    );
    // Past the retention (5 s) for every watermark written before the locks, and past
    // the lapsing lock's end by more than a second, while that end is still within the
    // retention by more than three (a slow purge on a busy machine keeps its answer).
    tokio::time::sleep(Duration::from_millis(5300)).await;
    store
        .advance_watermark("cus_recent", &mark(9))
        .await
        .unwrap();
    store.purge_expired().await.unwrap();
    for i in [0, 999, 1001, 1999, 2000, 2499] {
        let object = format!("cus_{i:05}");
        assert_eq!(store.watermark(&object).await.unwrap(), None, "{object}");
    }
    assert_eq!(store.watermark("").await.unwrap(), None);
    assert_eq!(
        store.watermark("cus_01000").await.unwrap(),
        Some(mark(1000))
    );
    assert_eq!(
        store.watermark("cus_01500").await.unwrap(),
        Some(mark(1500))
    );
    assert_eq!(store.watermark("cus_recent").await.unwrap(), Some(mark(9)));
    assert_eq!(store.watermark(cursor).await.unwrap(), Some(mark(3)));
    assert_eq!(store.watermark("reconcilex:default").await.unwrap(), None);
    let busy = store
        .lock_object("cus_01000", "holder_b", LEASE)
        .await
        .unwrap();
    assert!(matches!(busy, ObjectLock::Busy { .. }), "{busy:?}");
}

/// A third-party store that implements only `IdempotencyStore` runs the claim behaviours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_admin_queries_runs_the_claim_behaviours() {
    struct OnlyClaims(MemoryStore);
    #[stripe_webhooks::async_trait]
    impl IdempotencyStore for OnlyClaims {
        async fn claim(
            &self,
            id: &EventId,
            t: &EventType,
            l: Duration,
        ) -> Result<Claim, StoreError> {
            self.0.claim(id, t, l).await
        }
        async fn complete(&self, t: &stripe_webhooks::ClaimToken) -> Result<(), StoreError> {
            self.0.complete(t).await
        }
        async fn release(
            &self,
            t: &stripe_webhooks::ClaimToken,
            r: &str,
        ) -> Result<(), StoreError> {
            self.0.release(t, r).await
        }
        async fn extend(
            &self,
            t: &stripe_webhooks::ClaimToken,
            l: Duration,
        ) -> Result<(), StoreError> {
            self.0.extend(t, l).await
        }
    }
    let clock = ManualClock::new(0);
    let store = OnlyClaims(MemoryStore::new().with_clock(clock.clone()));
    store_conformance::run_claims(Arc::new(store), LeaseTime::Manual(clock)).await;
}

#[tokio::test]
async fn memory_store_purges_watermarks_past_retention() {
    watermarks_purge_past_retention(MemoryStore::new().with_retention(Duration::from_secs(5)))
        .await;
}

#[tokio::test]
async fn memory_store_evicts_completed_oldest_first_and_never_a_live_claim() {
    let clock = ManualClock::new(1_000_000);
    let store = MemoryStore::new()
        .with_clock(clock.clone())
        .with_max_records(3);
    let ids: Vec<EventId> = (0..5).map(|i| EventId::new(format!("evt_{i}"))).collect();
    // evt_0 and evt_1 complete; evt_2 is processing.
    for id in &ids[..3] {
        let Claim::Acquired(t) = claim(&store, id.as_str(), LEASE).await else {
            panic!()
        };
        clock.advance(Duration::from_millis(10));
        if id.as_str() != "evt_2" {
            store.complete(&t).await.unwrap();
        }
    }
    // A fourth record evicts the oldest completed one, evt_0: a late duplicate of it
    // would run again (documented).
    claim(&store, "evt_3", LEASE).await;
    assert_eq!(store.len(), 3);
    assert!(store.record(&ids[0]).await.unwrap().is_none());
    assert!(store.record(&ids[1]).await.unwrap().is_some());
    // Then evt_1; after that only live claims are left, and none is dropped.
    claim(&store, "evt_4", LEASE).await;
    assert!(store.record(&ids[1]).await.unwrap().is_none());
    assert!(matches!(
        store
            .claim(&EventId::new("evt_5"), &EventType::InvoicePaid, LEASE)
            .await,
        Err(StoreError::Full { .. })
    ));
    assert_eq!(store.len(), 3);
    assert_eq!(
        store.record(&ids[2]).await.unwrap().unwrap().status,
        RecordStatus::Processing
    );
}

#[tokio::test]
async fn memory_store_leases_follow_its_clock() {
    let clock = ManualClock::new(5_000);
    let store = MemoryStore::new().with_clock(clock.clone());
    let id = EventId::new("evt_clock");
    let Claim::Acquired(a) = store
        .claim(&id, &EventType::InvoicePaid, Duration::from_secs(10))
        .await
        .unwrap()
    else {
        panic!()
    };
    clock.advance(Duration::from_secs(4));
    match store
        .claim(&id, &EventType::InvoicePaid, LEASE)
        .await
        .unwrap()
    {
        Claim::InProgress { retry_after } => assert_eq!(retry_after, Duration::from_secs(6)),
        other => panic!("{other:?}"),
    }
    clock.advance(Duration::from_secs(7));
    let Claim::Acquired(b) = store
        .claim(&id, &EventType::InvoicePaid, LEASE)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(b.attempt(), 2);
    assert!(store.complete(&a).await.is_err());
    store.complete(&b).await.unwrap();

    // A lease under a millisecond still holds for one: a second claim in the same
    // millisecond is refused.
    let short = EventId::new("evt_sub_ms");
    let lease = Duration::from_micros(300);
    let first = store.claim(&short, &EventType::InvoicePaid, lease).await;
    assert!(matches!(first, Ok(Claim::Acquired(_))), "{first:?}");
    let second = store.claim(&short, &EventType::InvoicePaid, lease).await;
    assert!(matches!(second, Ok(Claim::InProgress { .. })), "{second:?}");
    clock.advance(Duration::from_millis(1));
    let third = store.claim(&short, &EventType::InvoicePaid, lease).await;
    assert!(matches!(third, Ok(Claim::Acquired(_))), "{third:?}");
}

#[tokio::test]
async fn memory_store_purges_past_retention_but_never_leased() {
    let clock = ManualClock::new(0);
    let store = MemoryStore::new()
        .with_clock(clock.clone())
        .with_retention(Duration::from_secs(100));
    let done = EventId::new("evt_done");
    let Claim::Acquired(t) = store
        .claim(&done, &EventType::InvoicePaid, LEASE)
        .await
        .unwrap()
    else {
        panic!()
    };
    store.complete(&t).await.unwrap();
    let leased = EventId::new("evt_leased");
    store
        .claim(&leased, &EventType::InvoicePaid, Duration::from_secs(1000))
        .await
        .unwrap();
    // A claim whose lease ran out past the retention, but under the hour after which
    // it is abandoned: kept as it is, as on the SQL stores (it was deleted, and the
    // event's next claim counted attempt 1 again).
    let lapsed = EventId::new("evt_lapsed");
    store
        .claim(&lapsed, &EventType::InvoicePaid, Duration::from_secs(1))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(50));
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    assert_eq!(
        store
            .claim(&done, &EventType::InvoicePaid, LEASE)
            .await
            .unwrap(),
        Claim::Completed,
        "inside retention"
    );
    clock.advance(Duration::from_secs(51));
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    assert!(store.record(&done).await.unwrap().is_none());
    assert!(store.record(&leased).await.unwrap().is_some());
    let kept = store.record(&lapsed).await.unwrap().unwrap();
    assert_eq!((kept.status, kept.attempts), (RecordStatus::Processing, 1));
}

/// A SQL store as the versioned-migration checks see it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
trait MigrationDb: Sized {
    fn table(&self, name: &str) -> Self;
    async fn migrate(&self) -> Result<Vec<u32>, StoreError>;
    fn migrations(&self) -> Vec<stripe_webhooks::Migration>;
    fn migration_sql(&self) -> String;
    async fn exec(&self, sql: &str);
    /// The versions recorded for `table`, in order.
    async fn recorded(&self, table: &str) -> Vec<i64>;
    /// Whether a table or view named `name` exists.
    async fn exists(&self, name: &str) -> bool;
}

/// `MigrationDb` for a SQL store; `$exists` answers whether a table or view named `$1`
/// (or `?1`) exists.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! migration_db {
    ($store:ident, $exists:literal) => {
        impl MigrationDb for $store {
            fn table(&self, name: &str) -> Self {
                self.clone().with_table(name).unwrap()
            }
            async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
                $store::migrate(self).await
            }
            fn migrations(&self) -> Vec<stripe_webhooks::Migration> {
                $store::migrations(self)
            }
            fn migration_sql(&self) -> String {
                $store::migration_sql(self)
            }
            async fn exec(&self, sql: &str) {
                stripe_webhooks::sqlx::raw_sql(sql)
                    .execute(self.pool())
                    .await
                    .unwrap();
            }
            async fn recorded(&self, table: &str) -> Vec<i64> {
                stripe_webhooks::sqlx::query_scalar(&format!(
                    "SELECT version FROM {table}_migrations ORDER BY version"
                ))
                .fetch_all(self.pool())
                .await
                .unwrap()
            }
            async fn exists(&self, name: &str) -> bool {
                stripe_webhooks::sqlx::query_scalar::<_, bool>($exists)
                    .bind(name)
                    .fetch_one(self.pool())
                    .await
                    .unwrap()
            }
        }
    };
}

/// Migrations are versioned: each applied once and recorded, by one of several migrating
/// at once; a table migrated before versions were recorded is taken over; a failing
/// migration leaves nothing behind. `prefix` names this run's tables; the store ships
/// the files under `migrations/<dir>/`, of which 1 to `unrecorded` predate the record
/// table.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn migrations_are_versioned<S: MigrationDb>(db: S, prefix: &str, dir: &str, unrecorded: u32) {
    // The store ships every file under migrations/<dir>/, numbered from 1, in order.
    let mut files: Vec<String> = std::fs::read_dir(format!("migrations/{dir}"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let names: Vec<&str> = db.migrations().iter().map(|m| m.name).collect();
    assert_eq!(names, files);
    let last = u32::try_from(files.len()).unwrap();
    let versions: Vec<u32> = (1..=last).collect();
    // Every name the schema makes from the longest table name fits PostgreSQL's 63.
    let longest = "t".repeat(45);
    for m in db.table(&longest).migrations() {
        for name in m
            .sql
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        {
            if name.starts_with(&longest) {
                assert!(name.len() <= 63, "{name} in {}", m.name);
            }
        }
    }
    let fresh = db.table(&format!("{prefix}_fresh"));
    let listed: Vec<u32> = fresh.migrations().iter().map(|m| m.version).collect();
    assert_eq!(listed, versions);
    assert!(fresh
        .migrations()
        .iter()
        .all(|m| m.sql.contains(&format!("{prefix}_fresh")) && m.name.ends_with(".sql")));
    let whole: String = fresh.migrations().iter().map(|m| m.sql.as_str()).collect();
    assert_eq!(fresh.migration_sql(), whole);
    assert_eq!(fresh.migrate().await.unwrap(), versions);
    assert_eq!(fresh.migrate().await.unwrap(), Vec::<u32>::new());
    let expected: Vec<i64> = versions.iter().map(|v| i64::from(*v)).collect();
    assert_eq!(db.recorded(&format!("{prefix}_fresh")).await, expected);
    assert!(db.exists(&format!("{prefix}_fresh_migrations")).await);
    // Migrated by a newer release (a rollback): nothing applied, no error, the newer
    // record kept.
    let newer = last + 1;
    db.exec(&format!(
        "INSERT INTO {prefix}_fresh_migrations (version, name, applied_at) \
         VALUES ({newer}, '{newer:04}_later.sql', 0)"
    ))
    .await;
    assert_eq!(fresh.migrate().await.unwrap(), Vec::<u32>::new());
    let mut with_newer = expected.clone();
    with_newer.push(i64::from(newer));
    assert_eq!(db.recorded(&format!("{prefix}_fresh")).await, with_newer);

    // Migrated before versions were recorded: the migrations of then, each as a script.
    let old = db.table(&format!("{prefix}_old"));
    for m in old.migrations().iter().filter(|m| m.version <= unrecorded) {
        db.exec(&m.sql).await;
    }
    assert_eq!(old.migrate().await.unwrap(), versions);
    assert_eq!(old.migrate().await.unwrap(), Vec::<u32>::new());

    // Four at once on a new table: each version applied by exactly one of them.
    let t = format!("{prefix}_race");
    let (a, b, c, d) = (db.table(&t), db.table(&t), db.table(&t), db.table(&t));
    let (ra, rb, rc, rd) = tokio::join!(a.migrate(), b.migrate(), c.migrate(), d.migrate());
    let mut all: Vec<u32> = [ra, rb, rc, rd]
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    all.sort_unstable();
    assert_eq!(all, versions);
    assert_eq!(db.recorded(&t).await, expected);

    // A view in the table's place cannot be indexed: the first migration fails, and the
    // run leaves nothing behind, not even its record table.
    let broken = format!("{prefix}_broken");
    db.exec(&format!("CREATE VIEW {broken} AS SELECT 'x' AS event_id"))
        .await;
    assert!(matches!(
        db.table(&broken).migrate().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(!db.exists(&format!("{broken}_migrations")).await);
    assert!(!db.exists(&format!("{broken}_objects")).await);
}

/// A table, key prefix or file name no other test uses.
#[cfg(feature = "postgres")]
fn unique(what: &str) -> String {
    common::unique(&format!("t_{what}"))
}

async fn claim(store: &impl IdempotencyStore, id: &str, lease: Duration) -> Claim {
    store
        .claim(&EventId::new(id), &EventType::InvoicePaid, lease)
        .await
        .unwrap()
}

/// `Duration::MAX` as a lease or a retention ("forever") is taken as a century: claims,
/// duplicates and purges still work (on PostgreSQL they failed with "interval out of
/// range"; on SQLite the lease overflowed into a REAL and duplicates read as errors).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn durations_of_forever_are_a_century<S: StoreAdmin>(store: S) {
    let Claim::Acquired(token) = claim(&store, "evt_forever", Duration::MAX).await else {
        panic!("not acquired")
    };
    assert!(matches!(
        claim(&store, "evt_forever", Duration::MAX).await,
        Claim::InProgress { .. }
    ));
    store.complete(&token).await.unwrap();
    assert!(matches!(
        claim(&store, "evt_forever", Duration::from_secs(1)).await,
        Claim::Completed
    ));
    assert_eq!(store.purge_expired().await.unwrap(), 0);
}

/// Failed records are bounded like the others: a flood of failures at capacity 10 keeps
/// 10 records, the oldest failure going first.
#[tokio::test]
async fn memory_store_bounds_failed_records() {
    let clock = ManualClock::new(0);
    let store = MemoryStore::new()
        .with_clock(clock.clone())
        .with_max_records(10);
    for i in 0..1000 {
        let Claim::Acquired(t) = claim(&store, &format!("evt_fail_{i}"), LEASE).await else {
            panic!()
        };
        clock.advance(Duration::from_millis(1));
        store.release(&t, "downstream down").await.unwrap();
    }
    assert_eq!(store.len(), 10);
    let failed = store.failed_events(100).await.unwrap();
    let ids: Vec<&str> = failed.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids.len(), 10);
    assert!(
        ids.contains(&"evt_fail_999") && !ids.contains(&"evt_fail_0"),
        "{ids:?}"
    );
}

/// Past its bound of objects, the memory store evicts the object written longest ago,
/// never a reconciler's cursor, which it keeps however old.
#[tokio::test]
async fn memory_store_never_evicts_a_reconcilers_cursor() {
    use stripe_webhooks::{OrderingStore, Watermark};
    let clock = ManualClock::new(0);
    let store = MemoryStore::new()
        .with_clock(clock.clone())
        .with_max_records(2);
    let at = |created| Watermark::new(created, EventId::new("evt_a"));
    let cursor = "reconcile:default:platform:all:v1";
    store.advance_watermark(cursor, &at(1)).await.unwrap();
    for (i, object) in ["cus_1", "cus_2", "cus_3"].into_iter().enumerate() {
        clock.advance(Duration::from_secs(1));
        store
            .advance_watermark(object, &at(i as i64))
            .await
            .unwrap();
    }
    assert_eq!(store.watermark(cursor).await.unwrap(), Some(at(1)));
    assert_eq!(store.watermark("cus_1").await.unwrap(), None, "evicted");
    assert_eq!(store.watermark("cus_3").await.unwrap(), Some(at(2)));
}

/// Completed records go before failed ones: a failure is still Stripe's to retry.
#[tokio::test]
async fn memory_store_evicts_completed_before_failed() {
    let clock = ManualClock::new(0);
    let store = MemoryStore::new()
        .with_clock(clock.clone())
        .with_max_records(2);
    let Claim::Acquired(failed) = claim(&store, "evt_failed", LEASE).await else {
        panic!()
    };
    store.release(&failed, "down").await.unwrap();
    clock.advance(Duration::from_secs(1));
    let Claim::Acquired(done) = claim(&store, "evt_done", LEASE).await else {
        panic!()
    };
    store.complete(&done).await.unwrap();
    claim(&store, "evt_new", LEASE).await;
    assert!(store
        .record(&EventId::new("evt_done"))
        .await
        .unwrap()
        .is_none());
    assert!(store
        .record(&EventId::new("evt_failed"))
        .await
        .unwrap()
        .is_some());
}

/// Processing records whose lease ended (a crashed delivery) are evicted before a live
/// claim is refused, and, past the hour, recorded as failed by a purge and purged past
/// the retention from then, as on the SQL stores; when every record is a live claim, a
/// new claim is refused with `Full` (503) rather than dropping one.
#[tokio::test]
async fn memory_store_bounds_abandoned_claims_and_refuses_when_all_are_live() {
    let clock = ManualClock::new(0);
    let store = MemoryStore::new()
        .with_clock(clock.clone())
        .with_max_records(3)
        .with_retention(Duration::from_secs(100));
    for i in 0..3 {
        claim(&store, &format!("evt_crashed_{i}"), Duration::from_secs(10)).await;
    }
    assert!(matches!(
        store
            .claim(&EventId::new("evt_new"), &EventType::InvoicePaid, LEASE)
            .await,
        Err(StoreError::Full { max_records: 3 })
    ));
    clock.advance(Duration::from_secs(11));
    // Their leases ended: the oldest abandoned claim makes room.
    assert!(matches!(
        claim(&store, "evt_new", LEASE).await,
        Claim::Acquired(_)
    ));
    assert_eq!(store.len(), 3);
    // Past retention after their lease ended, the claims (evt_new's 30 s lease has ended
    // too) are kept: under the hour, the event's next delivery takes them over.
    clock.advance(Duration::from_secs(200));
    let Claim::Acquired(live) = claim(&store, "evt_live", Duration::from_secs(4000)).await else {
        panic!()
    };
    assert_eq!(
        store.purge_expired().await.unwrap(),
        0,
        "lapsed claims kept"
    );
    // Past the hour they are abandoned: recorded failed, kept for the retention, purged.
    clock.advance(stripe_webhooks::ABANDONED_AFTER);
    assert_eq!(store.purge_expired().await.unwrap(), 0, "failed, kept");
    let failed = store
        .record(&EventId::new("evt_new"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, RecordStatus::Failed, "{failed:?}");
    clock.advance(Duration::from_secs(101));
    assert_eq!(
        store.purge_expired().await.unwrap(),
        2,
        "two abandoned claims"
    );
    assert!(store.record(live.event_id()).await.unwrap().is_some());
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use stripe_webhooks::SqliteStore;

    pub(super) async fn store(name: &str) -> (SqliteStore, common::TempDir) {
        let dir = common::TempDir::new(name);
        (
            SqliteStore::connect(dir.join("events.db")).await.unwrap(),
            dir,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_store_conformance() {
        let (store, _dir) = store("conf").await;
        store_conformance::run_all(Arc::new(store), LeaseTime::Real).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_store_ordering_conformance() {
        let (store, _dir) = store("ordering").await;
        store_conformance::run_ordering(Arc::new(store.clone()), LeaseTime::Real).await;
        store_conformance::a_refused_claim_leaves_the_objects_lock_alone(&store, &LeaseTime::Real)
            .await;
        store_conformance::a_completed_event_is_a_duplicate_while_its_object_is_locked(&store)
            .await;
    }

    migration_db!(
        SqliteStore,
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = ?1"
    );

    #[tokio::test]
    async fn sqlite_migrations_are_versioned() {
        let (store, _dir) = store("versions").await;
        migrations_are_versioned(store, "v", "sqlite", 4).await;
    }

    #[tokio::test]
    async fn sqlite_migrate_is_idempotent_and_renamed_tables_are_used() {
        let (store, _dir) = store("mig").await;
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        let renamed = store.clone().with_table("my_events").unwrap();
        renamed.migrate().await.unwrap();
        renamed.migrate().await.unwrap();
        claim(&renamed, "evt_renamed", LEASE).await;
        let in_renamed: i64 = stripe_webhooks::sqlx::query_scalar(
            "SELECT count(*) FROM my_events WHERE event_id = 'evt_renamed'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(in_renamed, 1);
        assert!(store
            .record(&EventId::new("evt_renamed"))
            .await
            .unwrap()
            .is_none());
        assert!(matches!(
            store.clone().with_table("events; DROP TABLE x"),
            Err(StoreError::InvalidConfig(_))
        ));
        assert!(store.clone().with_table(&"t".repeat(45)).is_ok());
        assert!(matches!(
            store.clone().with_table(&"t".repeat(46)),
            Err(StoreError::InvalidConfig(_))
        ));
    }

    /// SQLite's keywords, from its documentation (`sqlite3_keyword_name`).
    const SQLITE_KEYWORDS: &str = "abort action add after all alter always analyze and as \
        asc attach autoincrement before begin between by cascade case cast check collate \
        column commit conflict constraint create cross current current_date current_time \
        current_timestamp database default deferrable deferred delete desc detach distinct \
        do drop each else end escape except exclude exclusive exists explain fail filter \
        first following for foreign from full generated glob group groups having if ignore \
        immediate in index indexed initially inner insert instead intersect into is isnull \
        join key last left like limit match materialized natural no not nothing notnull null \
        nulls of offset on or order others outer over partition plan pragma preceding \
        primary query raise range recursive references regexp reindex release rename \
        replace restrict returning right rollback row rows savepoint select set table temp \
        temporary then ties to transaction trigger unbounded union unique update using \
        vacuum values view virtual when where window with without";

    /// A table name the store takes, it can migrate and use: each of SQLite's keywords is
    /// either refused by `with_table` with a clear error, or works as a table name. A
    /// keyword such as `order` used to be taken and fail at `migrate` with a syntax error.
    #[tokio::test]
    async fn sqlite_table_names_taken_are_names_sqlite_takes() {
        let (store, _dir) = store("kw").await;
        let mut refused = Vec::new();
        for word in SQLITE_KEYWORDS.split_whitespace() {
            match store.clone().with_table(word) {
                Ok(s) => {
                    s.migrate()
                        .await
                        .unwrap_or_else(|e| panic!("{word:?} was taken and fails: {e}"));
                    claim(&s, "evt_kw", LEASE).await;
                }
                Err(e) => {
                    assert!(matches!(e, StoreError::InvalidConfig(_)), "{word}: {e:?}");
                    assert!(e.to_string().contains("reserved word"), "{e}");
                    refused.push(word);
                }
            }
        }
        for word in ["order", "select", "table", "transaction", "SELECT"] {
            assert!(store.clone().with_table(word).is_err(), "{word}");
        }
        // Not every keyword: most of SQLite's are names too.
        for word in ["key", "action", "row", "replace", "query"] {
            assert!(!refused.contains(&word), "{word}");
        }
        let e = store.clone().with_table("sqlite_events").unwrap_err();
        assert!(e.to_string().contains("sqlite_"), "{e}");
    }

    /// Both SQL stores read an attempt count the same way, even one out of `u32`'s range
    /// (they once disagreed: 0 in one, `u32::MAX` in the other).
    #[tokio::test]
    async fn sqlite_reads_out_of_range_attempts_like_postgres() {
        let (store, _dir) = store("attempts").await;
        let id = EventId::new("evt_attempts");
        claim(&store, id.as_str(), LEASE).await;
        for (written, read) in [(-5_i64, 0_u32), (1 << 40, u32::MAX)] {
            stripe_webhooks::sqlx::query("UPDATE stripe_webhook_events SET attempts = ?1")
                .bind(written)
                .execute(store.pool())
                .await
                .unwrap();
            assert_eq!(store.record(&id).await.unwrap().unwrap().attempts, read);
        }
    }

    /// An object whose watermark cannot be read (a row written by hand): `lock_and_claim`
    /// and `lock_object` fail, and give back the claim and the lock they took, which
    /// stayed to their lease's end (the event could not be claimed again meanwhile).
    #[tokio::test]
    async fn sqlite_gives_back_a_lock_whose_watermark_cannot_be_read() {
        use stripe_webhooks::{OrderingStore, RecordStatus, Watermark};
        let (store, _dir) = store("bad_watermark").await;
        store
            .advance_watermark("cus_bad", &Watermark::new(5, EventId::new("evt_0")))
            .await
            .unwrap();
        stripe_webhooks::sqlx::query(
            "UPDATE stripe_webhook_events_objects SET created = 'soon' WHERE object_id = 'cus_bad'",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let holder = || async {
            stripe_webhooks::sqlx::query_scalar::<_, Option<String>>(
                "SELECT holder FROM stripe_webhook_events_objects WHERE object_id = 'cus_bad'",
            )
            .fetch_one(store.pool())
            .await
            .unwrap()
        };
        let id = EventId::new("evt_bad_watermark");
        let locked = store
            .lock_and_claim("cus_bad", "h1", LEASE, &id, &EventType::CustomerUpdated)
            .await;
        assert!(
            matches!(locked, Err(StoreError::Unavailable(_))),
            "{locked:?}"
        );
        assert_eq!(holder().await, None);
        let record = store.record(&id).await.unwrap().unwrap();
        assert_eq!(record.status, RecordStatus::Failed, "{record:?}");
        // Claimable again at once.
        assert!(matches!(
            store.claim(&id, &EventType::CustomerUpdated, LEASE).await,
            Ok(Claim::Acquired(_))
        ));
        let locked = store.lock_object("cus_bad", "h2", LEASE).await;
        assert!(
            matches!(locked, Err(StoreError::Unavailable(_))),
            "{locked:?}"
        );
        assert_eq!(holder().await, None);
    }

    #[tokio::test]
    async fn sqlite_survives_reopen() {
        let (store, dir) = store("reopen").await;
        let path = dir.join("events.db");
        let id = EventId::new("evt_durable");
        let Claim::Acquired(t) = store
            .claim(&id, &EventType::InvoicePaid, LEASE)
            .await
            .unwrap()
        else {
            panic!()
        };
        store.complete(&t).await.unwrap();
        store.pool().close().await;
        let again = SqliteStore::connect(&path).await.unwrap();
        assert_eq!(
            again
                .claim(&id, &EventType::InvoicePaid, LEASE)
                .await
                .unwrap(),
            Claim::Completed
        );
    }

    #[tokio::test]
    async fn sqlite_refuses_a_completion_without_the_lock() {
        let (store, _dir) = store("rowless").await;
        complete_applied_without_the_lock_changes_nothing(store).await;
    }

    #[tokio::test]
    async fn sqlite_purges_watermarks_past_retention() {
        let (store, _dir) = store("purge_objects").await;
        watermarks_purge_past_retention(store.with_retention(Duration::from_secs(5))).await;
    }

    #[tokio::test]
    async fn sqlite_takes_durations_of_forever_as_a_century() {
        let (store, _dir) = store("forever").await;
        durations_of_forever_are_a_century(store.with_retention(Duration::MAX)).await;
    }

    #[tokio::test]
    async fn sqlite_purge_keeps_leased_and_recent() {
        let (store, _dir) = store("purge").await;
        let store = store.with_retention(Duration::from_secs(2));
        let old = EventId::new("evt_old");
        let Claim::Acquired(t) = store
            .claim(&old, &EventType::InvoicePaid, LEASE)
            .await
            .unwrap()
        else {
            panic!()
        };
        store.complete(&t).await.unwrap();
        let leased = EventId::new("evt_leased");
        store
            .claim(&leased, &EventType::InvoicePaid, Duration::from_secs(600))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let recent = EventId::new("evt_recent");
        let Claim::Acquired(t) = store
            .claim(&recent, &EventType::InvoicePaid, LEASE)
            .await
            .unwrap()
        else {
            panic!()
        };
        store.complete(&t).await.unwrap();
        assert_eq!(store.purge_expired().await.unwrap(), 1);
        assert!(store.record(&old).await.unwrap().is_none());
        assert!(store.record(&leased).await.unwrap().is_some());
        assert_eq!(
            store
                .claim(&recent, &EventType::InvoicePaid, LEASE)
                .await
                .unwrap(),
            Claim::Completed
        );
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use stripe_webhooks::sqlx::postgres::PgPoolOptions;
    use stripe_webhooks::sqlx::PgPool;
    use stripe_webhooks::PostgresStore;

    pub(super) async fn pool() -> PgPool {
        let url = std::env::var("DATABASE_URL_TEST").unwrap_or_else(|_| {
            panic!(
                "DATABASE_URL_TEST is not set: start PostgreSQL with `eval \"$(scripts/services.sh start)\"` \
                 or run the whole suite with `scripts/test.sh`"
            )
        });
        PgPoolOptions::new()
            .max_connections(20)
            .connect(&url)
            .await
            .unwrap()
    }

    pub(super) async fn store(name: &str) -> PostgresStore {
        let store = PostgresStore::new(pool().await)
            .with_table(&unique(name))
            .unwrap();
        store.migrate().await.unwrap();
        store
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_store_conformance() {
        store_conformance::run_all(Arc::new(store("conf").await), LeaseTime::Real).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_store_ordering_conformance() {
        let store = store("ordering").await;
        store_conformance::run_ordering(Arc::new(store.clone()), LeaseTime::Real).await;
        store_conformance::a_completed_event_is_a_duplicate_while_its_object_is_locked(&store)
            .await;
    }

    migration_db!(PostgresStore, "SELECT to_regclass($1) IS NOT NULL");

    #[tokio::test]
    async fn postgres_migrations_are_versioned() {
        let store = PostgresStore::new(pool().await);
        migrations_are_versioned(store, &unique("v"), "postgres", 3).await;
    }

    /// Migration 4 drops the status columns' `CHECK` constraints (PostgreSQL rebuilds them
    /// at each write), under the names PostgreSQL gave them, for the longest table name
    /// too; the first three migrations created them.
    #[tokio::test]
    async fn postgres_migrations_drop_the_check_constraints() {
        let base = unique("nochk");
        assert!(base.len() < 45, "{base}");
        let longest = format!("{base}{}", "x".repeat(45 - base.len()));
        for table in [base, longest] {
            let store = PostgresStore::new(pool().await).with_table(&table).unwrap();
            let checks = || async {
                stripe_webhooks::sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_constraint \
                     WHERE contype = 'c' AND conrelid IN ($1::regclass, $2::regclass)",
                )
                .bind(&table)
                .bind(format!("{table}_jobs"))
                .fetch_one(store.pool())
                .await
                .unwrap()
            };
            for m in store.migrations().iter().filter(|m| m.version <= 3) {
                stripe_webhooks::sqlx::raw_sql(&m.sql)
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
            assert_eq!(checks().await, 2, "{table}");
            store.migrate().await.unwrap();
            assert_eq!(checks().await, 0, "{table}");
        }
    }

    /// A new database's key columns compare bytewise (`COLLATE "C"`); a table created
    /// before they did keeps its collation, and migrating does not alter it (an
    /// `ALTER` would break the statements prepared on a running replica's connections,
    /// which return these columns).
    #[tokio::test]
    async fn postgres_keys_compare_bytewise_on_new_tables() {
        let collations = |store: PostgresStore, table: String| async move {
            let mut found = Vec::new();
            for (suffix, column) in [
                ("", "event_id"),
                ("_objects", "object_id"),
                ("_jobs", "job_key"),
                ("_jobs", "object_id"),
            ] {
                let collation: String = stripe_webhooks::sqlx::query_scalar(
                    "SELECT c.collname::text FROM pg_attribute a \
                     JOIN pg_collation c ON c.oid = a.attcollation \
                     WHERE a.attrelid = $1::regclass AND a.attname = $2",
                )
                .bind(format!("{table}{suffix}"))
                .bind(column)
                .fetch_one(store.pool())
                .await
                .unwrap();
                found.push(collation);
            }
            found
        };
        let name = unique("bytewise");
        let fresh = PostgresStore::new(pool().await).with_table(&name).unwrap();
        fresh.migrate().await.unwrap();
        assert_eq!(collations(fresh, name).await, ["C"; 4]);
        // An events table of before, in the database's collation, with a completed event.
        let name = unique("bytewise_old");
        let old = PostgresStore::new(pool().await).with_table(&name).unwrap();
        let first = &old.migrations()[0].sql;
        let before = first.replace("TEXT COLLATE \"C\" PRIMARY KEY", "TEXT PRIMARY KEY");
        assert_ne!(&before, first);
        stripe_webhooks::sqlx::raw_sql(&before)
            .execute(old.pool())
            .await
            .unwrap();
        let done = EventId::new("evt_bytewise_done");
        let Claim::Acquired(token) = claim(&old, done.as_str(), LEASE).await else {
            panic!("not acquired")
        };
        old.complete(&token).await.unwrap();
        old.migrate().await.unwrap();
        assert_eq!(collations(old.clone(), name).await[0], "default");
        assert_eq!(claim(&old, done.as_str(), LEASE).await, Claim::Completed);
    }

    #[tokio::test]
    async fn postgres_refuses_a_completion_without_the_lock() {
        complete_applied_without_the_lock_changes_nothing(store("rowless").await).await;
    }

    #[tokio::test]
    async fn postgres_takes_durations_of_forever_as_a_century() {
        let store = store("forever").await;
        durations_of_forever_are_a_century(store.with_retention(Duration::MAX)).await;
    }

    /// A migration that alters a table (0004, on a database the release before
    /// migrated) behind a transaction left open on that table, as an old replica's inbox
    /// delivery during a rolling deploy: the table's claims, queued behind the
    /// migration's lock request, wait for its lock timeout (5 s), not for that
    /// transaction; the migration is tried again and applied once it ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_migration_behind_an_open_transaction_does_not_hold_up_claims() {
        let store = store("mig_wait").await;
        let table = table_of(&store);
        stripe_webhooks::sqlx::query(&format!("DELETE FROM {table}_migrations WHERE version = 4"))
            .execute(store.pool())
            .await
            .unwrap();
        let mut open = store.pool().begin().await.unwrap();
        stripe_webhooks::sqlx::query(&format!("SELECT count(*) FROM {table}"))
            .execute(&mut *open)
            .await
            .unwrap();
        let migrating = tokio::spawn({
            let store = store.clone();
            async move { store.migrate().await }
        });
        assert!(
            common::lock_wait_seen(store.pool(), &table).await,
            "the migration never queued behind the open transaction"
        );
        // Without the lock timeout, this claim would wait for `open`, which ends only
        // after it: a bound of 20 s tells the two apart.
        let claimed = tokio::time::timeout(
            Duration::from_secs(20),
            store.claim(
                &EventId::new("evt_mig_wait"),
                &EventType::InvoicePaid,
                LEASE,
            ),
        )
        .await
        .expect("a claim held up behind the migration for as long as the open transaction")
        .unwrap();
        assert!(matches!(claimed, Claim::Acquired(_)), "{claimed:?}");
        open.commit().await.unwrap();
        assert_eq!(migrating.await.unwrap().unwrap(), vec![4]);
    }

    /// The guard's `lock_and_claim` locks the object, then claims; an ordered inbox's
    /// delivery of the same event claims, then locks the object. PostgreSQL breaks the
    /// deadlock by undoing one side: undone, `lock_and_claim` has taken nothing and
    /// answers busy (409), not a store failure (503).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_lock_and_claim_is_busy_when_postgres_breaks_a_deadlock() {
        use stripe_webhooks::{LockedClaim, OrderingStore};
        let store = store("deadlock").await;
        let table = table_of(&store);
        let mut inbox = store.pool().begin().await.unwrap();
        stripe_webhooks::sqlx::query(&format!(
            "INSERT INTO {table} (event_id, event_type, status, attempts, fence, lease_until) \
             VALUES ('evt_dl', 'customer.updated', 'processing', 1, 'f', now() + interval '1 minute')"
        ))
        .execute(&mut *inbox)
        .await
        .unwrap();
        let guarded = tokio::spawn({
            let store = store.clone();
            async move {
                let id = EventId::new("evt_dl");
                store
                    .lock_and_claim("cus_dl", "thin", LEASE, &id, &EventType::CustomerUpdated)
                    .await
            }
        });
        // The guard has the object's row and waits for the claim's.
        assert!(
            common::lock_wait_seen(store.pool(), &table).await,
            "the guard never waited for the claim's row"
        );
        let second = stripe_webhooks::sqlx::query(&format!(
            "INSERT INTO {table}_objects (object_id) VALUES ('cus_dl') \
             ON CONFLICT (object_id) DO UPDATE SET updated_at = now()"
        ))
        .execute(&mut *inbox)
        .await;
        // Bounded: a guard that never met the deadlock would wait for `inbox` for ever.
        let guarded = tokio::time::timeout(Duration::from_secs(30), guarded)
            .await
            .expect("the guard still waits: no deadlock was met")
            .unwrap()
            .unwrap();
        match second {
            // The guard's statement was undone (the waiter that checks first).
            Ok(_) => assert!(matches!(guarded, LockedClaim::Busy { .. }), "{guarded:?}"),
            // Or the other's: the guard went on and took both.
            Err(e) => {
                assert!(e.to_string().contains("deadlock"), "{e}");
                assert!(
                    matches!(guarded, LockedClaim::Acquired { .. }),
                    "{guarded:?}"
                );
            }
        }
        drop(inbox);
    }

    #[tokio::test]
    async fn postgres_purges_watermarks_past_retention() {
        let store = store("purge_objects").await;
        watermarks_purge_past_retention(store.with_retention(Duration::from_secs(5))).await;
    }

    /// See `sqlite_reads_out_of_range_attempts_like_postgres`; `INTEGER` is 32-bit here,
    /// so only a negative count is out of range.
    #[tokio::test]
    async fn postgres_reads_out_of_range_attempts_like_sqlite() {
        let s = store("attempts").await;
        let id = EventId::new("evt_attempts");
        claim(&s, id.as_str(), LEASE).await;
        let table = table_of(&s);
        stripe_webhooks::sqlx::query(&format!("UPDATE {table} SET attempts = -5"))
            .execute(s.pool())
            .await
            .unwrap();
        assert_eq!(s.record(&id).await.unwrap().unwrap().attempts, 0);
    }

    fn table_of(s: &PostgresStore) -> String {
        let sql = s.migration_sql();
        sql.split("CREATE TABLE IF NOT EXISTS ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn postgres_migrate_is_idempotent_and_names_are_validated() {
        let s = store("mig").await;
        s.migrate().await.unwrap();
        // Concurrent migrations of one table do not trip over each other.
        let t = unique("migc");
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let p = s.pool().clone();
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                PostgresStore::new(p)
                    .with_table(&t)
                    .unwrap()
                    .migrate()
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        claim(
            &PostgresStore::new(s.pool().clone()).with_table(&t).unwrap(),
            "evt_c",
            LEASE,
        )
        .await;
        assert!(matches!(
            s.clone().with_table("x y"),
            Err(StoreError::InvalidConfig(_))
        ));
    }

    /// Every word PostgreSQL reserves (`pg_get_keywords()`, as the server running the
    /// tests lists them) is refused as a table name, with a clear error, and each of
    /// the keywords it takes as a column or table name that the store takes migrates
    /// and works (in a schema of the test's own, dropped after). `user` used to be
    /// taken and fail at `migrate` with a syntax error.
    #[tokio::test]
    async fn postgres_table_names_taken_are_names_postgres_takes() {
        use std::str::FromStr;
        let admin = pool().await;
        let reserved: Vec<String> = stripe_webhooks::sqlx::query_scalar(
            "SELECT word FROM pg_get_keywords() WHERE catcode IN ('R', 'T')",
        )
        .fetch_all(&admin)
        .await
        .unwrap();
        assert!(reserved.len() > 90, "{reserved:?}");
        for word in &reserved {
            let e = PostgresStore::new(admin.clone())
                .with_table(word)
                .map(|_| ())
                .unwrap_err();
            assert!(e.to_string().contains("reserved word"), "{word}: {e}");
        }
        let schema = unique("kw");
        stripe_webhooks::sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        let url = std::env::var("DATABASE_URL_TEST").unwrap();
        let options = stripe_webhooks::sqlx::postgres::PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let in_schema = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        let others: Vec<String> = stripe_webhooks::sqlx::query_scalar(
            "SELECT word FROM pg_get_keywords() WHERE catcode = 'C'",
        )
        .fetch_all(&admin)
        .await
        .unwrap();
        let mut taken = 0;
        for word in &others {
            if let Ok(s) = PostgresStore::new(in_schema.clone()).with_table(word) {
                s.migrate()
                    .await
                    .unwrap_or_else(|e| panic!("{word:?} was taken and fails: {e}"));
                claim(&s, "evt_kw", LEASE).await;
                taken += 1;
            }
        }
        assert!(taken > 40, "{taken} of {others:?}");
        in_schema.close().await;
        stripe_webhooks::sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&admin)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_purge_100k_keeps_leased_and_recent() {
        let s = store("purge")
            .await
            .with_retention(Duration::from_secs(3600));
        let table = table_of(&s);
        // 100,000 records: 90,000 completed long ago, 5,000 failed long ago, 4,000 leased
        // (processing, first seen long ago), 1,000 completed recently.
        stripe_webhooks::sqlx::query(&format!(
            "INSERT INTO {table} (event_id, event_type, status, attempts, fence, lease_until, first_seen, completed_at, updated_at)
             SELECT 'evt_' || g, 'invoice.paid',
                    CASE WHEN g <= 90000 THEN 'completed' WHEN g <= 95000 THEN 'failed' WHEN g <= 99000 THEN 'processing' ELSE 'completed' END,
                    1, 'f',
                    CASE WHEN g > 95000 AND g <= 99000 THEN now() + interval '1 hour' END,
                    now() - interval '40 days',
                    CASE WHEN g <= 90000 THEN now() - interval '40 days' WHEN g > 99000 THEN now() END,
                    CASE WHEN g <= 95000 OR (g > 95000 AND g <= 99000) THEN now() - interval '40 days' ELSE now() END
             FROM generate_series(1, 100000) g"
        ))
        .execute(s.pool())
        .await
        .unwrap();
        assert_eq!(s.purge_expired().await.unwrap(), 95_000);
        let left: i64 =
            stripe_webhooks::sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(s.pool())
                .await
                .unwrap();
        assert_eq!(left, 5_000);
        // Leased records survive and are still in progress; recent ones are still completed.
        assert!(matches!(
            s.claim(&EventId::new("evt_96000"), &EventType::InvoicePaid, LEASE)
                .await
                .unwrap(),
            Claim::InProgress { .. }
        ));
        for g in [99_001, 99_500, 100_000] {
            assert_eq!(
                s.claim(
                    &EventId::new(format!("evt_{g}")),
                    &EventType::InvoicePaid,
                    LEASE
                )
                .await
                .unwrap(),
                Claim::Completed
            );
        }
        assert_eq!(s.purge_expired().await.unwrap(), 0);
    }
}
