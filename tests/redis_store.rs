#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(feature = "redis")]
//! The Redis store against a real server: the conformance suite, plus key layout, expiry,
//! the failed set and behaviour while Redis is paused.
//!
//! Needs `REDIS_URL_TEST`; `eval "$(scripts/services.sh start)"` or `scripts/test.sh` set
//! it.

use std::sync::Arc;
use std::time::Duration;

mod common;

use stripe_webhooks::redis::{self, aio::ConnectionManager};
use stripe_webhooks::testing::store_conformance::{self, LeaseTime};
use stripe_webhooks::{
    Claim, ClaimToken, EventId, EventType, IdempotencyStore, OrderingStore, RecordStatus,
    RedisStore, StoreAdmin, StoreError,
};
use tokio::sync::RwLock;

const LEASE: Duration = Duration::from_secs(30);

/// `CLIENT PAUSE` stops every client of the server, so the pause test takes this for
/// writing and every other test for reading.
static SERVER: RwLock<()> = RwLock::const_new(());

fn redis_url() -> String {
    std::env::var("REDIS_URL_TEST").unwrap_or_else(|_| {
        panic!(
            "REDIS_URL_TEST is not set: start a Redis server with \
             `eval \"$(scripts/services.sh start)\"` and run again, or run `scripts/test.sh`"
        )
    })
}

async fn connect() -> ConnectionManager {
    let client = redis::Client::open(redis_url()).expect("REDIS_URL_TEST is a valid Redis URL");
    ConnectionManager::new(client)
        .await
        .expect("Redis at REDIS_URL_TEST answers")
}

/// A store with its own key prefix, and a second connection to look at its keys.
async fn store() -> (RedisStore, String, ConnectionManager) {
    let prefix = common::unique("t");
    let store = RedisStore::new(connect().await)
        .with_prefix(&prefix)
        .unwrap();
    (store, prefix, connect().await)
}

async fn acquire(store: &RedisStore, id: &EventId) -> ClaimToken {
    match store
        .claim(id, &EventType::InvoicePaid, LEASE)
        .await
        .unwrap()
    {
        Claim::Acquired(t) => t,
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// Puts a string at `key`: a key of another type than the store expects there.
async fn set_string(conn: &mut ConnectionManager, key: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("x")
        .query_async(conn)
        .await
        .unwrap();
}

async fn del(conn: &mut ConnectionManager, key: &str) {
    let _: () = redis::cmd("DEL").arg(key).query_async(conn).await.unwrap();
}

async fn pttl(conn: &mut ConnectionManager, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

async fn pexpire(conn: &mut ConnectionManager, key: &str, ms: i64) {
    let _: () = redis::cmd("PEXPIRE")
        .arg(key)
        .arg(ms)
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_conformance() {
    let _shared = SERVER.read().await;
    let (store, _, _) = store().await;
    store_conformance::run_all(Arc::new(store), LeaseTime::Real).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_ordering_conformance() {
    let _shared = SERVER.read().await;
    let (store, _, _) = store().await;
    store_conformance::run_ordering(Arc::new(store.clone()), LeaseTime::Real).await;
    store_conformance::a_refused_claim_leaves_the_objects_lock_alone(&store, &LeaseTime::Real)
        .await;
    store_conformance::a_completed_event_is_a_duplicate_while_its_object_is_locked(&store).await;
}

#[tokio::test]
async fn prefix_is_validated() {
    let _shared = SERVER.read().await;
    let conn = connect().await;
    let err = RedisStore::new(conn.clone())
        .with_prefix("bad prefix!")
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidConfig(_)), "{err:?}");
    // `app:q` and `app:q:x` would share keys with the queue of prefix `app`.
    for bad in ["", "1abc", "a{b}", &"x".repeat(64), "app:q", "app:q:x"] {
        assert!(
            RedisStore::new(conn.clone()).with_prefix(bad).is_err(),
            "{bad}"
        );
    }
    for good in ["app:webhooks-1", "q", "q:app", "app:qq", "app:q1"] {
        assert!(
            RedisStore::new(conn.clone()).with_prefix(good).is_ok(),
            "{good}"
        );
    }
    for bad in ["app:q", "app:q:x"] {
        let err = stripe_webhooks::queue::RedisQueue::new(conn.clone(), bad).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidConfig(_)),
            "{bad}: {err:?}"
        );
    }
}

#[tokio::test]
async fn keys_follow_the_documented_layout() {
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    let id = EventId::new("evt_layout");
    let token = acquire(&store, &id).await;
    let key = format!("{prefix}:evt:evt_layout");
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fields["status"], "processing");
    assert_eq!(fields["type"], "invoice.paid");
    assert_eq!(fields["attempts"], "1");
    assert_eq!(fields["fence"], token.fence_hex());
    assert_eq!(fields["fence"].len(), 32);
    let first_seen: i64 = fields["first_seen_ms"].parse().unwrap();
    let lease_until: i64 = fields["lease_until_ms"].parse().unwrap();
    assert_eq!(lease_until - first_seen, 30_000);
    store.release(&token, "boom").await.unwrap();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("{prefix}:failed"))
        .arg("evt_layout")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(score, Some(first_seen as f64));
}

#[tokio::test]
async fn hostile_ids_stay_at_the_end_of_their_key() {
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    for raw in [
        "",
        "evt:{x}:failed",
        "../\r\n*3\r\n$3\r\nDEL",
        "évt 💳",
        "a b\0c",
    ] {
        let id = EventId::new(raw);
        let token = acquire(&store, &id).await;
        store.release(&token, "nope").await.unwrap();
        let key = format!("{prefix}:evt:{raw}");
        let status: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("status")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(status.as_deref(), Some("failed"), "{raw:?}");
        let rec = store.record(&id).await.unwrap().unwrap();
        assert_eq!(rec.event_id, id);
    }
    let failed = store.failed_events(100).await.unwrap();
    assert_eq!(failed.len(), 5);
    let kind: String = redis::cmd("TYPE")
        .arg(format!("{prefix}:failed"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "zset");
}

#[tokio::test]
async fn released_event_is_failed_until_completed() {
    let _shared = SERVER.read().await;
    let (store, _, _) = store().await;
    let id = EventId::new("evt_failed");
    let first = acquire(&store, &id).await;
    store.release(&first, "mailer down").await.unwrap();
    let failed = store.failed_events(10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event_id, id);
    assert_eq!(failed[0].status, RecordStatus::Failed);
    assert_eq!(failed[0].last_error.as_deref(), Some("mailer down"));
    assert_eq!(failed[0].event_type, EventType::InvoicePaid);

    // Claimed again: no longer listed while processing, nor once completed.
    let second = acquire(&store, &id).await;
    assert_eq!(second.attempt(), 2);
    assert!(store.failed_events(10).await.unwrap().is_empty());
    store.complete(&second).await.unwrap();
    assert!(store.failed_events(10).await.unwrap().is_empty());
    let rec = store.record(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, RecordStatus::Completed);
    assert_eq!(rec.attempts, 2);
}

#[tokio::test]
async fn failed_events_are_oldest_first_and_limited() {
    let _shared = SERVER.read().await;
    let (store, _, _) = store().await;
    let ids: Vec<EventId> = (0..4).map(|i| EventId::new(format!("evt_{i}"))).collect();
    let mut tokens = Vec::new();
    for id in &ids {
        tokens.push(acquire(&store, id).await);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // Released newest first: the order still follows when each was first seen.
    for t in tokens.iter().rev() {
        store.release(t, "x").await.unwrap();
    }
    let got: Vec<EventId> = store
        .failed_events(3)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    assert_eq!(got, ids[..3]);
    assert!(store.failed_events(0).await.unwrap().is_empty());
    assert_eq!(store.failed_events(usize::MAX).await.unwrap().len(), 4);
}

/// One `failed_events` script looks at a bounded number of set members (10,000 beyond
/// its limit), dropping the stale ones it meets, so a set that was never purged does not
/// stall Redis in one script; the call goes on with further scripts until it has its
/// limit or the set ends.
#[tokio::test]
async fn failed_events_walks_a_never_purged_set_in_bounded_scripts() {
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    let failed_key = format!("{prefix}:failed");
    // 10,050 ids whose records expired long ago, listed before any live one.
    for batch in 0..11 {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(&failed_key);
        for i in 0..1000 {
            let n = batch * 1000 + i;
            if n < 10_050 {
                cmd.arg(n).arg(format!("evt_gone_{n}"));
            }
        }
        let _: i64 = cmd.query_async(&mut conn).await.unwrap();
    }
    let id = EventId::new("evt_live_failed");
    let token = acquire(&store, &id).await;
    store.release(&token, "x").await.unwrap();
    let failed = store.failed_events(10).await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].event_id, id);
    let left: i64 = redis::cmd("ZCARD")
        .arg(&failed_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 1, "the stale ids it looked at are dropped");
}

/// A caller asking for more failed records than one script reads (1,000) gets them all,
/// in order, from several scripts.
#[tokio::test]
async fn failed_events_past_one_scripts_share_come_whole_and_in_order() {
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    let mut pipe = redis::pipe();
    for n in 0..1_500_i64 {
        let id = format!("evt_many_{n:04}");
        pipe.cmd("HSET")
            .arg(format!("{prefix}:evt:{id}"))
            .arg(&[
                ("status", "failed"),
                ("type", "invoice.paid"),
                ("attempts", "1"),
                ("last_error", "down"),
            ])
            .arg("first_seen_ms")
            .arg(1_000 + n)
            .ignore();
        pipe.cmd("EXPIRE")
            .arg(format!("{prefix}:evt:{id}"))
            .arg(3_600)
            .ignore();
        pipe.cmd("ZADD")
            .arg(format!("{prefix}:failed"))
            .arg(1_000 + n)
            .arg(&id)
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    let failed = store.failed_events(1_400).await.unwrap();
    assert_eq!(failed.len(), 1_400);
    for (n, record) in failed.iter().enumerate() {
        assert_eq!(record.event_id.as_str(), format!("evt_many_{n:04}"));
    }
    let all = store.failed_events(usize::MAX).await.unwrap();
    assert_eq!(all.len(), 1_500);
    let after = store
        .failed_events_after(&EventId::new("evt_many_0199"), 1_200)
        .await
        .unwrap();
    assert_eq!(after.len(), 1_200);
    assert_eq!(after[0].event_id.as_str(), "evt_many_0200");
    assert_eq!(after[1_199].event_id.as_str(), "evt_many_1399");
}

/// Failed events first seen in one millisecond list by id, and a page after one of them
/// starts at the next, whether it is still failed, gone from the set (completed), or
/// still in it though completed; a page that starts before thousands of stale ids walks
/// them in bounded scripts and still finds the next.
#[tokio::test]
async fn failed_events_after_places_ties_by_id_and_walks_past_stale_ids() {
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    let failed_key = format!("{prefix}:failed");
    let [a, b, c] = ["evt_tie_a", "evt_tie_b", "evt_tie_c"].map(EventId::new);
    // Failed in another order than their ids', then put in one millisecond.
    for id in [&c, &a, &b] {
        let token = acquire(&store, id).await;
        store.release(&token, "down").await.unwrap();
        let _: i64 = redis::cmd("ZADD")
            .arg(&failed_key)
            .arg(1_000)
            .arg(id.as_str())
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: i64 = redis::cmd("HSET")
            .arg(format!("{prefix}:evt:{}", id.as_str()))
            .arg("first_seen_ms")
            .arg(1_000)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let ids = |v: Vec<stripe_webhooks::EventRecord>| {
        v.into_iter().map(|r| r.event_id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.failed_events(10).await.unwrap()),
        [&a, &b, &c].map(Clone::clone)
    );
    assert_eq!(
        ids(store.failed_events_after(&a, 1).await.unwrap()),
        vec![b.clone()]
    );
    assert_eq!(
        ids(store.failed_events_after(&b, 1).await.unwrap()),
        vec![c.clone()]
    );
    assert!(store.failed_events_after(&c, 1).await.unwrap().is_empty());

    // b is claimed again and completes, which takes it out of the set: placed by its
    // record, between a and c.
    let token = acquire(&store, &b).await;
    store.complete(&token).await.unwrap();
    let rank = |conn: &mut ConnectionManager| {
        let mut conn = conn.clone();
        let (key, id) = (failed_key.clone(), b.as_str().to_owned());
        async move {
            redis::cmd("ZRANK")
                .arg(key)
                .arg(id)
                .query_async::<Option<i64>>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(rank(&mut conn).await, None);
    assert_eq!(
        ids(store.failed_events_after(&b, 10).await.unwrap()),
        vec![c.clone()]
    );
    // Left in the set, as a completion that raced a release can leave it: placed by its
    // rank, and dropped by the next walk that meets it.
    let _: i64 = redis::cmd("ZADD")
        .arg(&failed_key)
        .arg(1_000)
        .arg(b.as_str())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(rank(&mut conn).await, Some(1));
    assert_eq!(
        ids(store.failed_events_after(&b, 10).await.unwrap()),
        vec![c.clone()]
    );
    assert_eq!(
        ids(store.failed_events_after(&a, 10).await.unwrap()),
        vec![c.clone()]
    );
    assert_eq!(rank(&mut conn).await, None);

    // 10,050 ids whose records are gone, between a and c: the page after a walks them in
    // more than one script.
    for batch in 0..11 {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(&failed_key);
        for i in 0..1000 {
            let n = batch * 1000 + i;
            if n < 10_050 {
                cmd.arg(1_000).arg(format!("evt_tie_b_gone_{n:05}"));
            }
        }
        let _: i64 = cmd.query_async(&mut conn).await.unwrap();
    }
    assert_eq!(
        ids(store.failed_events_after(&a, 10).await.unwrap()),
        vec![c.clone()]
    );
    let left: i64 = redis::cmd("ZCARD")
        .arg(&failed_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 2, "the stale ids it walked are dropped");
    assert!(store
        .failed_events_after(&EventId::new("evt_never"), 10)
        .await
        .unwrap()
        .is_empty());
}

/// A watermark moved by `advance_watermark` lives for the retention from then, even on an
/// object whose holder locked it long ago and never unlocked (its TTL, set at the lock,
/// near its end); a live lock's longer TTL stays.
#[tokio::test]
async fn an_advanced_watermark_lives_for_the_retention_whatever_an_old_lock_left() {
    use stripe_webhooks::{OrderingStore, Watermark};
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    let store = store.with_retention(Duration::from_secs(600));
    let key = format!("{prefix}:obj:cus_ttl");
    store
        .lock_object("cus_ttl", "crashed", Duration::from_secs(30))
        .await
        .unwrap();
    let live = pttl(&mut conn, &key).await;
    assert!(live > 600_000 && live <= 630_000, "{live}");
    // A live lock's TTL (lease and retention) is not cut back.
    let at = |created| Watermark::new(created, EventId::new(format!("evt_{created}")));
    store.advance_watermark("cus_ttl", &at(10)).await.unwrap();
    assert!(pttl(&mut conn, &key).await > 600_000);
    // Days later, as it were: the lock's TTL is near its end, the holder still named.
    pexpire(&mut conn, &key, 5_000).await;
    store.advance_watermark("cus_ttl", &at(11)).await.unwrap();
    let ttl = pttl(&mut conn, &key).await;
    assert!(ttl > 590_000 && ttl <= 600_000, "{ttl}");
}

/// A reconciler's cursor (`reconcile:…`) carries no TTL, even where a TTL was set
/// before: a reconciler stopped for longer than the retention resumes from it.
#[tokio::test]
async fn a_reconcilers_cursor_never_expires() {
    use stripe_webhooks::{OrderingStore, Watermark};
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    let store = store.with_retention(Duration::from_secs(600));
    let at = |created| Watermark::new(created, EventId::new(format!("evt_{created}")));
    let cursor = "reconcile:default:platform:all:v1";
    let key = format!("{prefix}:obj:{cursor}");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("created")
        .arg(5)
        .query_async(&mut conn)
        .await
        .unwrap();
    pexpire(&mut conn, &key, 5_000).await;
    store.advance_watermark(cursor, &at(10)).await.unwrap();
    assert_eq!(pttl(&mut conn, &key).await, -1);
    assert_eq!(store.watermark(cursor).await.unwrap(), Some(at(10)));
    // Moved or not, it stays without one.
    store.advance_watermark(cursor, &at(9)).await.unwrap();
    assert_eq!(pttl(&mut conn, &key).await, -1);
    // Any other key lives for the retention.
    store
        .advance_watermark("cus_cursorlike", &at(10))
        .await
        .unwrap();
    let ttl = pttl(&mut conn, &format!("{prefix}:obj:cus_cursorlike")).await;
    assert!(ttl > 590_000 && ttl <= 600_000, "{ttl}");
}

#[tokio::test]
async fn records_carry_a_ttl() {
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    let store = store.with_retention(Duration::from_secs(600));

    let id = EventId::new("evt_ttl");
    let key = format!("{prefix}:evt:evt_ttl");
    let token = acquire(&store, &id).await;
    // Processing: the lease plus the retention, so it outlives its lease.
    let ttl = pttl(&mut conn, &key).await;
    assert!(ttl > 600_000 && ttl <= 630_000, "{ttl}");

    store
        .extend(&token, Duration::from_secs(120))
        .await
        .unwrap();
    let ttl = pttl(&mut conn, &key).await;
    assert!(ttl > 700_000 && ttl <= 720_000, "{ttl}");

    store.complete(&token).await.unwrap();
    let ttl = pttl(&mut conn, &key).await;
    assert!(ttl > 0 && ttl <= 600_000, "{ttl}");

    let id = EventId::new("evt_ttl_failed");
    let token = acquire(&store, &id).await;
    store.release(&token, "x").await.unwrap();
    let ttl = pttl(&mut conn, &format!("{prefix}:evt:evt_ttl_failed")).await;
    assert!(ttl > 0 && ttl <= 600_000, "{ttl}");
}

#[tokio::test]
async fn expired_records_are_gone_and_purge_trims_the_failed_set() {
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    // Long enough that nothing expires between the writes and the first checks, on a
    // loaded machine too.
    let store = store.with_retention(Duration::from_secs(2));

    let done = EventId::new("evt_done");
    let token = acquire(&store, &done).await;
    store.complete(&token).await.unwrap();
    let gone = EventId::new("evt_gone");
    let token = acquire(&store, &gone).await;
    store.release(&token, "x").await.unwrap();
    assert_eq!(store.failed_events(10).await.unwrap().len(), 1);

    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(store.record(&done).await.unwrap().is_none());
    assert!(store.record(&gone).await.unwrap().is_none());
    let members: i64 = redis::cmd("ZCARD")
        .arg(format!("{prefix}:failed"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, 1, "the expired id stays in the set until trimmed");
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    // A forgotten event starts afresh.
    assert_eq!(acquire(&store, &done).await.attempt(), 1);
}

#[tokio::test]
async fn failed_events_skips_and_drops_vanished_records() {
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    let (a, b) = (EventId::new("evt_a"), EventId::new("evt_b"));
    for id in [&a, &b] {
        let token = acquire(&store, id).await;
        store.release(&token, "x").await.unwrap();
    }
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}:evt:evt_a"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let failed = store.failed_events(10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event_id, b);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}:failed"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, vec!["evt_b".to_owned()]);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
}

#[tokio::test]
async fn purge_handles_more_than_one_batch() {
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    // 2500 stale ids (their records are gone) around a live failed one.
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(format!("{prefix}:failed"));
    for i in 0..2500 {
        cmd.arg(i).arg(format!("evt_stale_{i}"));
    }
    let _: i64 = cmd.query_async(&mut conn).await.unwrap();
    let live = EventId::new("evt_live");
    let token = acquire(&store, &live).await;
    store.release(&token, "x").await.unwrap();
    assert_eq!(store.purge_expired().await.unwrap(), 2500);
    let failed = store.failed_events(10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event_id, live);
}

#[tokio::test]
async fn unreadable_record_is_unavailable_not_a_panic() {
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    let key = format!("{prefix}:evt:evt_bad");
    let _: i64 = redis::cmd("HSET")
        .arg(&key)
        .arg("status")
        .arg("weird")
        .query_async(&mut conn)
        .await
        .unwrap();
    let id = EventId::new("evt_bad");
    assert!(matches!(
        store.claim(&id, &EventType::InvoicePaid, LEASE).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.record(&id).await,
        Err(StoreError::Unavailable(_))
    ));
    // The guard's one-script lock and claim says so too, naming the key, and takes no
    // lock; an unreadable watermark likewise, before anything is claimed.
    let obj = format!("{prefix}:obj:cus_bad");
    match store
        .lock_and_claim("cus_bad", "h", LEASE, &id, &EventType::InvoicePaid)
        .await
    {
        Err(StoreError::Unavailable(e)) => assert!(e.to_string().contains(&key), "{e}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let holder: Option<String> = redis::cmd("HGET")
        .arg(&obj)
        .arg("holder")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(holder, None);
    // Not a number, or one that Lua would read as a number but the crate cannot:
    // `lock_and_claim` and `lock_object` refuse it, and neither takes the lock.
    let fresh = EventId::new("evt_fresh_for_bad_object");
    for created in [
        "soon",
        "1e9",
        "0x10",
        " 7",
        "1.5",
        "99999999999999999999",
        "9223372036854775808",
        "-9223372036854775809",
    ] {
        let _: i64 = redis::cmd("HSET")
            .arg(&obj)
            .arg("created")
            .arg(created)
            .query_async(&mut conn)
            .await
            .unwrap();
        match store
            .lock_and_claim("cus_bad", "h", LEASE, &fresh, &EventType::InvoicePaid)
            .await
        {
            Err(StoreError::Unavailable(e)) => assert!(e.to_string().contains(&obj), "{e}"),
            other => panic!("{created:?}: expected Unavailable, got {other:?}"),
        }
        match store.lock_object("cus_bad", "h", LEASE).await {
            Err(StoreError::Unavailable(e)) => assert!(e.to_string().contains(&obj), "{e}"),
            other => panic!("{created:?}: expected Unavailable, got {other:?}"),
        }
        let holder: Option<String> = redis::cmd("HGET")
            .arg(&obj)
            .arg("holder")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(holder, None, "{created:?}: no lock taken");
        assert_eq!(store.record(&fresh).await.unwrap(), None, "nothing claimed");
    }
    // A key of another type is an error too, and nothing is overwritten.
    set_string(&mut conn, &key).await;
    match store.claim(&id, &EventType::InvoicePaid, LEASE).await {
        Err(StoreError::Unavailable(e)) => {
            let source = e
                .downcast_ref::<redis::RedisError>()
                .expect("the Redis error is kept");
            assert_eq!(source.code(), Some("WRONGTYPE"), "{source}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let value: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "x");
}

/// Every `created` the store writes it reads back, to the ends of `i64`: a watermark
/// of 19 digits did not wedge its object (every lock refused it as unreadable).
#[tokio::test]
async fn watermarks_to_the_ends_of_i64_are_read_back() {
    use stripe_webhooks::{LockedClaim, Watermark};
    let _shared = SERVER.read().await;
    let (store, _, _) = store().await;
    for (n, created) in [
        1_000_000_000_000_000_000,
        i64::MAX,
        -99_999_999_999_999_999,
        i64::MIN,
    ]
    .into_iter()
    .enumerate()
    {
        let (object, id) = (format!("cus_far_{n}"), EventId::new(format!("evt_far_{n}")));
        let LockedClaim::Acquired { token, .. } = store
            .lock_and_claim(&object, "h", LEASE, &id, &EventType::CustomerUpdated)
            .await
            .unwrap()
        else {
            panic!("not acquired")
        };
        let applied = Watermark::new(created, id.clone());
        store
            .complete_applied(&token, &object, "h", &applied)
            .await
            .unwrap();
        assert_eq!(
            store.watermark(&object).await.unwrap(),
            Some(applied.clone())
        );
        let lock = store.lock_object(&object, "h2", LEASE).await;
        assert!(lock.is_ok(), "{created}: {lock:?}");
        store.unlock_object(&object, "h2").await.unwrap();
        let next = EventId::new(format!("evt_far_next_{n}"));
        let again = store
            .lock_and_claim(&object, "h3", LEASE, &next, &EventType::CustomerUpdated)
            .await;
        assert!(
            matches!(again, Ok(LockedClaim::Acquired { .. })),
            "{created}: {again:?}"
        );
    }
}

/// A claim over a failed set of another type writes nothing: it answered 503 and left a
/// record `processing`, with no expiry, that every redelivery then found in progress.
#[tokio::test]
async fn a_claim_over_a_foreign_failed_set_writes_nothing() {
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    let failed = format!("{prefix}:failed");
    set_string(&mut conn, &failed).await;
    let id = EventId::new("evt_foreign_failed_set");
    let claim = store.claim(&id, &EventType::InvoicePaid, LEASE).await;
    assert!(
        matches!(claim, Err(StoreError::Unavailable(_))),
        "{claim:?}"
    );
    let locked = store
        .lock_and_claim("cus_foreign", "h", LEASE, &id, &EventType::InvoicePaid)
        .await;
    assert!(
        matches!(locked, Err(StoreError::Unavailable(_))),
        "{locked:?}"
    );
    assert_eq!(store.record(&id).await.unwrap(), None);
    del(&mut conn, &failed).await;
    acquire(&store, &id).await;
}

/// A guarded completion that fails on a key of another type (the failed set, here)
/// writes nothing: retried once the key is mended, it completes and moves the
/// watermark, rather than reading as done already with the watermark left behind. A
/// release likewise: not a failed record missing from the failed set, never listed.
#[tokio::test]
async fn settlements_that_fail_part_way_write_nothing() {
    use stripe_webhooks::{LockedClaim, OrderingStore, Watermark};
    let _shared = SERVER.read().await;
    let (store, prefix, mut conn) = store().await;
    let id = EventId::new("evt_part_way");
    let LockedClaim::Acquired { token, .. } = store
        .lock_and_claim("cus_part_way", "h", LEASE, &id, &EventType::CustomerUpdated)
        .await
        .unwrap()
    else {
        panic!("not acquired")
    };
    let released = acquire(&store, &EventId::new("evt_part_way_released")).await;
    let failed = format!("{prefix}:failed");
    set_string(&mut conn, &failed).await;
    let err = store.release(&released, "boom").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(
        store
            .record(released.event_id())
            .await
            .unwrap()
            .map(|r| r.status),
        Some(RecordStatus::Processing)
    );
    let applied = Watermark::new(1_700_000_123, id.clone());
    let err = store
        .complete_applied(&token, "cus_part_way", "h", &applied)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(
        store.record(&id).await.unwrap().map(|r| r.status),
        Some(RecordStatus::Processing)
    );
    del(&mut conn, &failed).await;
    store
        .complete_applied(&token, "cus_part_way", "h", &applied)
        .await
        .unwrap();
    assert_eq!(
        store.watermark("cus_part_way").await.unwrap(),
        Some(applied)
    );
    assert_eq!(
        store.record(&id).await.unwrap().map(|r| r.status),
        Some(RecordStatus::Completed)
    );
    store.release(&released, "boom").await.unwrap();
    let listed = store.failed_events(10).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].event_id, *released.event_id());
}

#[tokio::test]
async fn claim_while_redis_is_paused_returns_within_the_callers_timeout() {
    let _exclusive = SERVER.write().await;
    let (store, _, mut admin) = store().await;
    let id = EventId::new("evt_paused");
    // Load the script first, so the paused call is the EVALSHA itself.
    let warm = acquire(&store, &EventId::new("evt_warm")).await;
    store.complete(&warm).await.unwrap();

    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10_000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    // A failed assertion below must not leave the server paused for the other tests.
    let _unpause = Unpause;
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(1),
        store.claim(&id, &EventType::InvoicePaid, LEASE),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(8));
    // Redis holds the script until the pause ends, so the caller's timeout fires.
    assert!(res.is_err(), "claim answered during the pause: {res:?}");
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .unwrap();
    // The store works again once the pause ends.
    let after = acquire(&store, &EventId::new("evt_after")).await;
    store.complete(&after).await.unwrap();
}

/// Redis full under `noeviction` refuses a claim of a new event, as the store's docs say
/// (Stripe retries it later), and writes nothing: a script's first write decides whether
/// Redis refuses it, so a claim that let its first write through while full could run a
/// handler whose completion then cannot be written, and run it again once memory is
/// freed. Both claim paths, plain and with the object's lock.
///
/// A handler that already ran is still recorded: both completions write their first
/// command where a full Redis does not look (`ZREM`), so they are written while it is
/// full, and the event is not run again. A release or a renewal is refused.
#[tokio::test]
async fn a_full_redis_refuses_new_claims_and_writes_nothing() {
    use stripe_webhooks::{LockedClaim, Watermark};
    let _exclusive = SERVER.write().await;
    let (store, prefix, mut admin) = store().await;
    // Scripts loaded first, so the calls below are the EVALSHAs themselves.
    let warm = acquire(&store, &EventId::new("evt_warm")).await;
    store.complete(&warm).await.unwrap();
    // Claims taken before Redis fills up, whose handlers end while it is full.
    let running = acquire(&store, &EventId::new("evt_ran")).await;
    let LockedClaim::Acquired {
        token: running_locked,
        ..
    } = store
        .lock_and_claim(
            "in_ran",
            "holder",
            LEASE,
            &EventId::new("evt_ran_locked"),
            &EventType::InvoicePaid,
        )
        .await
        .unwrap()
    else {
        panic!("not acquired")
    };
    let to_release = acquire(&store, &EventId::new("evt_to_release")).await;
    // Put back however the test ends: a full server would fail every later test.
    let restore = RestoreMemory::of(&admin).await;
    config_set(&admin, "maxmemory-policy", "noeviction").await;
    config_set(&admin, "maxmemory", "1").await;
    let plain = store
        .claim(&EventId::new("evt_full"), &EventType::InvoicePaid, LEASE)
        .await;
    let locked = store
        .lock_and_claim(
            "in_full",
            "holder",
            LEASE,
            &EventId::new("evt_full_locked"),
            &EventType::InvoicePaid,
        )
        .await;
    let completed = store.complete(&running).await;
    let applied = Watermark::new(1, EventId::new("evt_ran_locked"));
    let completed_locked = store
        .complete_applied(&running_locked, "in_ran", "holder", &applied)
        .await;
    let released = store.release(&to_release, "handler failed").await;
    let extended = store.extend(&to_release, LEASE).await;
    drop(restore);
    completed.unwrap();
    completed_locked.unwrap();
    assert!(
        matches!(released, Err(StoreError::Unavailable(_))),
        "{released:?}"
    );
    assert!(
        matches!(extended, Err(StoreError::Unavailable(_))),
        "{extended:?}"
    );
    for id in ["evt_ran", "evt_ran_locked"] {
        let again = store
            .claim(&EventId::new(id), &EventType::InvoicePaid, LEASE)
            .await
            .unwrap();
        assert!(matches!(again, Claim::Completed), "{id}: {again:?}");
    }
    assert_eq!(store.watermark("in_ran").await.unwrap(), Some(applied));
    assert!(
        matches!(plain, Err(StoreError::Unavailable(_))),
        "{plain:?}"
    );
    assert!(
        matches!(locked, Err(StoreError::Unavailable(_))),
        "{locked:?}"
    );
    let written: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*full*"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(written, Vec::<String>::new());
    // The store works again once Redis has room.
    let after = acquire(&store, &EventId::new("evt_full")).await;
    store.complete(&after).await.unwrap();
}

/// Ends a `CLIENT PAUSE` when dropped, whether the test passed, failed or panicked.
struct Unpause;

impl Drop for Unpause {
    fn drop(&mut self) {
        let conn = redis::Client::open(redis_url()).and_then(|c| c.get_connection());
        if let Ok(mut conn) = conn {
            let _: redis::RedisResult<()> = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut conn);
        }
    }
}

/// Puts the server's memory limit and policy back when dropped, whether the test passed,
/// failed or panicked.
struct RestoreMemory {
    memory: String,
    policy: String,
}

impl RestoreMemory {
    /// The server's memory settings as they are now.
    async fn of(admin: &ConnectionManager) -> Self {
        Self {
            memory: config_get(admin, "maxmemory").await,
            policy: config_get(admin, "maxmemory-policy").await,
        }
    }
}

/// A server setting (`CONFIG GET`).
async fn config_get(admin: &ConnectionManager, key: &str) -> String {
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(key)
        .query_async(&mut admin.clone())
        .await
        .unwrap();
    v[1].clone()
}

/// Sets a server setting (`CONFIG SET`).
async fn config_set(admin: &ConnectionManager, key: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut admin.clone())
        .await
        .unwrap();
}

impl Drop for RestoreMemory {
    fn drop(&mut self) {
        let conn = redis::Client::open(redis_url()).and_then(|c| c.get_connection());
        if let Ok(mut conn) = conn {
            for (key, value) in [
                ("maxmemory", &self.memory),
                ("maxmemory-policy", &self.policy),
            ] {
                let _: redis::RedisResult<()> = redis::cmd("CONFIG")
                    .arg("SET")
                    .arg(key)
                    .arg(value)
                    .query(&mut conn);
            }
        }
    }
}

/// `check_server` reads the eviction policy and persistence, and names an eviction
/// policy that may lose completed records; a user refused `CONFIG` (as on managed
/// services) reads as not known, with no error.
#[tokio::test]
async fn check_server_names_an_eviction_policy_that_loses_records() {
    use stripe_webhooks::RedisServerSettings;
    let _exclusive = SERVER.write().await;
    let (store, _prefix, mut admin) = store().await;
    let _restore = RestoreMemory::of(&admin).await;
    let appendonly = config_get(&admin, "appendonly").await == "yes";
    // A memory limit: the policy decides what is evicted. None: nothing is.
    for (memory, bytes) in [("1gb", 1 << 30), ("0", 0)] {
        config_set(&admin, "maxmemory", memory).await;
        for policy in ["allkeys-lru", "volatile-ttl", "noeviction"] {
            config_set(&admin, "maxmemory-policy", policy).await;
            let settings = store.check_server().await.unwrap();
            assert_eq!(settings.maxmemory_policy.as_deref(), Some(policy));
            assert_eq!(settings.maxmemory, Some(bytes));
            assert_eq!(settings.appendonly, Some(appendonly));
            let problems = settings.problems();
            let evicts = problems.iter().any(|p| p.contains(policy));
            let want = policy != "noeviction" && bytes > 0;
            assert_eq!(evicts, want, "{memory} {policy}: {problems:?}");
        }
    }
    // A user without `CONFIG`.
    let user = common::unique("cfgless");
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                user.as_str(),
                "on",
                ">pw",
                "~*",
                "&*",
                "+@all",
                "-config",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = redis_url().replacen("redis://", &format!("redis://{user}:pw@"), 1);
    let conn = ConnectionManager::new(redis::Client::open(url).unwrap())
        .await
        .unwrap();
    let settings = RedisStore::new(conn).check_server().await;
    let _: () = redis::cmd("ACL")
        .arg(&["DELUSER", user.as_str()][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(settings.unwrap(), RedisServerSettings::default());
}

/// A key under the store's event prefix that is not UTF-8 (another program's) is passed
/// over by the purge's search for abandoned claims, which failed at it every time.
#[tokio::test]
async fn a_foreign_key_that_is_not_utf8_does_not_stop_the_purge() {
    let (store, prefix, mut conn) = store().await;
    let id = EventId::new("evt_abandoned_beside_binary");
    match store
        .claim(&id, &EventType::InvoicePaid, Duration::from_millis(100))
        .await
        .unwrap()
    {
        Claim::Acquired(_) => {}
        other => panic!("expected Acquired, got {other:?}"),
    }
    let key = [format!("{prefix}:evt:").into_bytes(), vec![0xff, 0xfe]].concat();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.fail_abandoned(Duration::ZERO).await.unwrap(), 1);
    let record = store.record(&id).await.unwrap().unwrap();
    assert_eq!(record.status, stripe_webhooks::RecordStatus::Failed);
}
