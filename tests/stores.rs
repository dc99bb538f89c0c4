//! Idempotency stores: the conformance suite for each, plus store-specific behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use stripe_webhooks::{
    testing::store_conformance, Claim, EventId, IdempotencyStore, ManualClock, MemoryStore,
    RecordStatus,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conformance() {
    store_conformance::run_all(Arc::new(MemoryStore::new())).await;
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn memory_store_evicts_only_completed_oldest_first() {
    let clock = ManualClock::new(1_000_000);
    let store = MemoryStore::new()
        .with_clock(clock.clone())
        .with_capacity(3);
    let ids: Vec<EventId> = (0..5).map(|i| EventId::new(format!("evt_{i}"))).collect();
    // evt_0 and evt_1 complete; evt_2 is processing.
    for id in &ids[..3] {
        let Claim::Acquired(t) = store.claim(id, "x", LEASE).await.unwrap() else {
            panic!()
        };
        clock.advance(Duration::from_millis(10));
        if id.as_str() != "evt_2" {
            store.complete(&t).await.unwrap();
        }
    }
    // A fourth record evicts the oldest completed one, evt_0.
    store.claim(&ids[3], "x", LEASE).await.unwrap();
    assert_eq!(store.len(), 3);
    assert!(store.record(&ids[0]).await.unwrap().is_none());
    assert!(store.record(&ids[1]).await.unwrap().is_some());
    // Only processing records left besides evt_1: evt_1 goes, processing records never do.
    store.claim(&ids[4], "x", LEASE).await.unwrap();
    assert!(store.record(&ids[1]).await.unwrap().is_none());
    store
        .claim(&EventId::new("evt_5"), "x", LEASE)
        .await
        .unwrap();
    assert_eq!(
        store.len(),
        4,
        "over capacity rather than drop an in-flight claim"
    );
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
        .claim(&id, "x", Duration::from_secs(10))
        .await
        .unwrap()
    else {
        panic!()
    };
    clock.advance(Duration::from_secs(4));
    match store.claim(&id, "x", LEASE).await.unwrap() {
        Claim::InProgress { retry_after } => assert_eq!(retry_after, Duration::from_secs(6)),
        other => panic!("{other:?}"),
    }
    clock.advance(Duration::from_secs(7));
    let Claim::Acquired(b) = store.claim(&id, "x", LEASE).await.unwrap() else {
        panic!()
    };
    assert_eq!(b.attempt(), 2);
    assert!(store.complete(&a).await.is_err());
    store.complete(&b).await.unwrap();
}

#[tokio::test]
async fn memory_store_purges_past_retention_but_never_leased() {
    let clock = ManualClock::new(0);
    let store = MemoryStore::new()
        .with_clock(clock.clone())
        .with_retention(Duration::from_secs(100));
    let done = EventId::new("evt_done");
    let Claim::Acquired(t) = store.claim(&done, "x", LEASE).await.unwrap() else {
        panic!()
    };
    store.complete(&t).await.unwrap();
    let leased = EventId::new("evt_leased");
    store
        .claim(&leased, "x", Duration::from_secs(1000))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(50));
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    assert_eq!(
        store.claim(&done, "x", LEASE).await.unwrap(),
        Claim::Completed,
        "inside retention"
    );
    clock.advance(Duration::from_secs(51));
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    assert!(store.record(&done).await.unwrap().is_none());
    assert!(store.record(&leased).await.unwrap().is_some());
}

/// A table, key prefix or file name no other test uses.
fn unique(what: &str) -> String {
    format!("t_{what}_{:x}", stripe_webhooks::new_fence() as u64)
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use stripe_webhooks::{SqliteStore, StoreError};

    pub(super) async fn store(name: &str) -> (SqliteStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.db");
        (SqliteStore::connect(&path).await.unwrap(), path)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_store_conformance() {
        let (store, _) = store("conf").await;
        store_conformance::run_all(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn sqlite_migrate_is_idempotent_and_names_are_validated() {
        let (store, _) = store("mig").await;
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        let renamed = store.clone().with_table("my_events").unwrap();
        renamed.migrate().await.unwrap();
        assert!(renamed
            .migration_sql()
            .contains("CREATE TABLE IF NOT EXISTS my_events"));
        assert!(matches!(
            store.clone().with_table("events; DROP TABLE x"),
            Err(StoreError::InvalidConfig(_))
        ));
        assert!(stripe_webhooks::SQLITE_MIGRATION.contains("stripe_webhook_events"));
    }

    #[tokio::test]
    async fn sqlite_survives_reopen() {
        let (store, path) = store("reopen").await;
        let id = EventId::new("evt_durable");
        let Claim::Acquired(t) = store.claim(&id, "x", LEASE).await.unwrap() else {
            panic!()
        };
        store.complete(&t).await.unwrap();
        store.pool().close().await;
        let again = SqliteStore::connect(&path).await.unwrap();
        assert_eq!(
            again.claim(&id, "x", LEASE).await.unwrap(),
            Claim::Completed
        );
    }

    #[tokio::test]
    async fn sqlite_purge_keeps_leased_and_recent() {
        let (store, _) = store("purge").await;
        let store = store.with_retention(Duration::from_millis(300));
        let old = EventId::new("evt_old");
        let Claim::Acquired(t) = store.claim(&old, "x", LEASE).await.unwrap() else {
            panic!()
        };
        store.complete(&t).await.unwrap();
        let leased = EventId::new("evt_leased");
        store
            .claim(&leased, "x", Duration::from_secs(600))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let recent = EventId::new("evt_recent");
        let Claim::Acquired(t) = store.claim(&recent, "x", LEASE).await.unwrap() else {
            panic!()
        };
        store.complete(&t).await.unwrap();
        assert_eq!(store.purge_expired().await.unwrap(), 1);
        assert!(store.record(&old).await.unwrap().is_none());
        assert!(store.record(&leased).await.unwrap().is_some());
        assert_eq!(
            store.claim(&recent, "x", LEASE).await.unwrap(),
            Claim::Completed
        );
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use stripe_webhooks::sqlx::postgres::PgPoolOptions;
    use stripe_webhooks::sqlx::PgPool;
    use stripe_webhooks::{PostgresStore, StoreError};

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
        store_conformance::run_all(Arc::new(store("conf").await)).await;
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
        assert!(matches!(
            s.clone().with_table("x y"),
            Err(StoreError::InvalidConfig(_))
        ));
        assert!(stripe_webhooks::POSTGRES_MIGRATION.contains("stripe_webhook_events"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_purge_100k_keeps_leased_and_recent() {
        let s = store("purge")
            .await
            .with_retention(Duration::from_secs(3600));
        let table = s.migration_sql();
        let table = table
            .split("CREATE TABLE IF NOT EXISTS ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
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
            s.claim(&EventId::new("evt_96000"), "invoice.paid", LEASE)
                .await
                .unwrap(),
            Claim::InProgress { .. }
        ));
        for g in [99_001, 99_500, 100_000] {
            assert_eq!(
                s.claim(&EventId::new(format!("evt_{g}")), "invoice.paid", LEASE)
                    .await
                    .unwrap(),
                Claim::Completed
            );
        }
        assert_eq!(s.purge_expired().await.unwrap(), 0);
    }
}
