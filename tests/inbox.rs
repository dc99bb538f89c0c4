//! SQLite inbox mode in one process: the handler's writes and the "done" mark commit
//! together, failures roll both back, duplicates queue and run once, and a cancelled
//! delivery gives the write lock back at once.

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stripe_webhooks::sqlx::{self, Connection, Sqlite, SqliteConnection};
use stripe_webhooks::{
    async_trait, testing, Event, EventId, HandlerError, OutcomeKind, Processor, RecordStatus,
    SigningSecret, SqliteStore, StoreAdmin, TransactionalHandler, Verifier,
};
use tokio::sync::Notify;

const SECRET: &str = common::SECRET;

/// Writes one `effects` row per run; can be told to fail, or to hang after its write.
#[derive(Default)]
struct Effects {
    runs: AtomicUsize,
    fail_first: AtomicUsize,
    hang_first: AtomicUsize,
    wrote: Notify,
}

#[async_trait]
impl TransactionalHandler<Sqlite> for Effects {
    async fn handle(&self, event: &Event, conn: &mut SqliteConnection) -> Result<(), HandlerError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        write_effect(conn, event.id().as_str()).await?;
        if take(&self.hang_first) {
            self.wrote.notify_one();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if take(&self.fail_first) {
            // Quoting an API key, which the store keeps hidden.
            return Err(HandlerError::new(
                "boom: downstream said no to sk_test_abc123",
            ));
        }
        Ok(())
    }
}

/// A handler's one write: an `effects` row for the event `id`.
async fn write_effect(conn: &mut SqliteConnection, id: &str) -> Result<(), HandlerError> {
    sqlx::query("INSERT INTO effects (event_id) VALUES (?1)")
        .bind(id)
        .execute(conn)
        .await
        .map_err(HandlerError::new)?;
    Ok(())
}

fn take(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

/// A store in a fresh file, with the tables the handlers write (`effects`, and
/// `parents`/`children` with a foreign key checked only at COMMIT), and a processor
/// running `handler` in inbox mode. Also the directory of the file.
async fn setup<H: TransactionalHandler<Sqlite>>(
    name: &str,
    handler: Arc<H>,
) -> (SqliteStore, Arc<Processor>, common::TempDir) {
    let (store, dir) = fresh_store(name).await;
    let verifier = Verifier::new(SigningSecret::new(SECRET).unwrap());
    let processor = Processor::with_inbox(verifier, store.inbox(Shared(handler)));
    (store, Arc::new(processor), dir)
}

/// The store of [`setup`], with its tables, and the directory of its file.
async fn fresh_store(name: &str) -> (SqliteStore, common::TempDir) {
    let dir = common::TempDir::new(&format!("inbox_{name}"));
    let store = SqliteStore::connect(dir.join("events.db")).await.unwrap();
    for ddl in [
        "CREATE TABLE effects (event_id TEXT NOT NULL)",
        "CREATE TABLE parents (id TEXT PRIMARY KEY)",
        "CREATE TABLE children (parent TEXT REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)",
    ] {
        sqlx::query(ddl).execute(store.pool()).await.unwrap();
    }
    (store, dir)
}

/// Lets a test keep a handle on the handler the inbox owns.
struct Shared<H>(Arc<H>);

#[async_trait]
impl<H: TransactionalHandler<Sqlite>> TransactionalHandler<Sqlite> for Shared<H> {
    async fn handle(&self, event: &Event, conn: &mut SqliteConnection) -> Result<(), HandlerError> {
        self.0.handle(event, conn).await
    }
}

fn delivery(id: &str) -> (String, String) {
    let body = testing::event_for_type(id, "checkout.session.completed").unwrap();
    let header = testing::sign(body.as_bytes(), SECRET, testing::now());
    (header, body)
}

async fn effects(store: &SqliteStore, id: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM effects WHERE event_id = ?1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effect_and_done_mark_commit_together() {
    let handler = Arc::new(Effects::default());
    let (store, processor, _dir) = setup("commit", handler.clone()).await;
    let (header, body) = delivery("evt_inbox_commit");

    let first = processor.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(first.kind(), OutcomeKind::Processed), "{first:?}");
    assert_eq!(first.attempt(), Some(1));
    let again = processor.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(again.kind(), OutcomeKind::Duplicate), "{again:?}");
    assert_eq!(again.status(), 200);

    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    assert_eq!(effects(&store, "evt_inbox_commit").await, 1);
    let record = store
        .record(&EventId::new("evt_inbox_commit"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RecordStatus::Completed);
    assert_eq!(record.attempts, 1);
    assert!(record.completed_at_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handler_rolls_back_its_writes_and_is_recorded() {
    let handler = Arc::new(Effects::default());
    handler.fail_first.store(1, Ordering::SeqCst);
    let (store, processor, _dir) = setup("fail", handler.clone()).await;
    let (header, body) = delivery("evt_inbox_fail");
    let id = EventId::new("evt_inbox_fail");

    let failed = processor.process(Some(&header), body.as_bytes()).await;
    assert!(
        matches!(failed.kind(), OutcomeKind::HandlerFailed(_)),
        "{failed:?}"
    );
    assert_eq!(failed.status(), 500, "Stripe must deliver it again");
    assert_eq!(effects(&store, "evt_inbox_fail").await, 0, "rolled back");
    let record = store.record(&id).await.unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Failed);
    assert_eq!(record.attempts, 1);
    assert_eq!(
        record.last_error.as_deref(),
        Some("handler failed: boom: downstream said no to <redacted>")
    );
    assert_eq!(store.failed_events(10).await.unwrap().len(), 1);

    let retried = processor.process(Some(&header), body.as_bytes()).await;
    assert!(
        matches!(retried.kind(), OutcomeKind::Processed),
        "{retried:?}"
    );
    assert_eq!(retried.attempt(), Some(2));
    assert_eq!(effects(&store, "evt_inbox_fail").await, 1);
    let record = store.record(&id).await.unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Completed);
    assert_eq!(record.attempts, 2);
    assert!(store.failed_events(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_queue_and_run_once() {
    let handler = Arc::new(Effects::default());
    let (store, processor, _dir) = setup("dups", handler.clone()).await;
    // Four deliveries of each of eight events, all at once.
    let ids: Vec<String> = (0..4)
        .flat_map(|_| (0..8).map(|n| format!("evt_inbox_dup_{n}")))
        .collect();
    let mut processed = 0;
    for outcome in deliver_all(&processor, &ids).await {
        // Duplicates wait their turn for the writer, then see the event completed.
        assert_eq!(outcome.status(), 200, "{outcome:?}");
        if matches!(outcome.kind(), OutcomeKind::Processed) {
            processed += 1;
        }
    }
    assert_eq!(processed, 8);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 8);
    for n in 0..8 {
        assert_eq!(effects(&store, &format!("evt_inbox_dup_{n}")).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_delivery_rolls_back_and_frees_the_lock_at_once() {
    let handler = Arc::new(Effects::default());
    handler.hang_first.store(1, Ordering::SeqCst);
    let (store, processor, _dir) = setup("cancel", handler.clone()).await;
    let (header, body) = delivery("evt_inbox_cancel");

    let hung = {
        let (processor, header, body) = (processor.clone(), header.clone(), body.clone());
        tokio::spawn(async move { processor.process(Some(&header), body.as_bytes()).await })
    };
    tokio::time::timeout(Duration::from_secs(10), handler.wrote.notified())
        .await
        .expect("the handler wrote");
    hung.abort();
    assert!(hung.await.unwrap_err().is_cancelled());

    // Another writer on the same file gets the lock well inside SQLite's 5 s busy wait.
    tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("INSERT INTO effects (event_id) VALUES ('someone_else')").execute(store.pool()),
    )
    .await
    .expect("the write lock was given back")
    .unwrap();

    // Stripe's redelivery runs at once: the claim and the write were rolled back.
    let redelivered = tokio::time::timeout(
        Duration::from_secs(2),
        processor.process(Some(&header), body.as_bytes()),
    )
    .await
    .expect("no wait for a lease");
    assert!(
        matches!(redelivered.kind(), OutcomeKind::Processed),
        "{redelivered:?}"
    );
    assert_eq!(
        redelivered.attempt(),
        Some(1),
        "the first claim was rolled back"
    );
    assert_eq!(effects(&store, "evt_inbox_cancel").await, 1);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
}

/// Fails the events whose id ends in `_fail`; while `poison` is set, gives the events
/// whose id ends in `_poison` a write that makes the commit itself fail (a deferred
/// foreign key is checked only at COMMIT).
#[derive(Default)]
struct Picky {
    runs: AtomicUsize,
    poison: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl TransactionalHandler<Sqlite> for Picky {
    async fn handle(&self, event: &Event, conn: &mut SqliteConnection) -> Result<(), HandlerError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let id = event.id().as_str();
        write_effect(conn, id).await?;
        if id.ends_with("_poison") && self.poison.load(Ordering::SeqCst) {
            sqlx::query("INSERT INTO children (parent) VALUES ('nobody')")
                .execute(&mut *conn)
                .await
                .map_err(HandlerError::new)?;
        }
        if id.ends_with("_fail") {
            return Err(HandlerError::new("this one fails"));
        }
        if id.ends_with("_selfrollback") && self.poison.load(Ordering::SeqCst) {
            // `OR ROLLBACK` makes SQLite roll back the whole transaction by itself.
            for _ in 0..2 {
                sqlx::query("INSERT OR ROLLBACK INTO parents (id) VALUES ('same')")
                    .execute(&mut *conn)
                    .await
                    .map_err(HandlerError::new)?;
            }
        }
        if id.ends_with("_swallowed") && self.poison.load(Ordering::SeqCst) {
            // The same, with the errors ignored: the handler says Ok over a transaction
            // that no longer exists.
            for _ in 0..2 {
                let _ = sqlx::query("INSERT OR ROLLBACK INTO parents (id) VALUES ('same')")
                    .execute(&mut *conn)
                    .await;
            }
        }
        if id.ends_with("_writes_on") && self.poison.load(Ordering::SeqCst) {
            // Hides the rollback, then writes on (and hides that write's error too):
            // outside any transaction now, the write would commit on its own.
            for _ in 0..2 {
                let _ = sqlx::query("INSERT OR ROLLBACK INTO parents (id) VALUES ('same')")
                    .execute(&mut *conn)
                    .await;
            }
            let _ = write_effect(conn, &format!("{id}_late")).await;
            // Its own transaction, as a handler may open one (sqlx sends a SAVEPOINT,
            // which opens a real transaction here, and RELEASE, which would commit it).
            if let Ok(mut tx) = conn.begin().await {
                let _ = write_effect(&mut tx, &format!("{id}_nested_late")).await;
                let _ = tx.commit().await;
            }
        }
        if id.ends_with("_reopens") && self.poison.load(Ordering::SeqCst) {
            // Hides the rollback, then opens a transaction of its own (sqlx's SAVEPOINT,
            // a real transaction now) and drops it (sqlx's ROLLBACK TO, which leaves it
            // open): the inbox's COMMIT would then commit that empty transaction.
            for _ in 0..2 {
                let _ = sqlx::query("INSERT OR ROLLBACK INTO parents (id) VALUES ('same')")
                    .execute(&mut *conn)
                    .await;
            }
            drop(conn.begin().await);
        }
        if id.ends_with("_nested") {
            let mut tx = conn.begin().await.map_err(HandlerError::new)?;
            sqlx::query("INSERT INTO parents (id) VALUES (?1)")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(HandlerError::new)?;
            tx.commit().await.map_err(HandlerError::new)?;
        }
        Ok(())
    }
}

async fn picky(name: &str) -> (SqliteStore, Arc<Processor>, Arc<Picky>, common::TempDir) {
    let handler = Arc::new(Picky::default());
    let (store, processor, dir) = setup(name, handler.clone()).await;
    (store, processor, handler, dir)
}

fn assert_all_processed(outcomes: &[stripe_webhooks::Outcome]) {
    for outcome in outcomes {
        assert!(
            matches!(outcome.kind(), OutcomeKind::Processed),
            "{outcome:?}"
        );
    }
}

async fn deliver_all(processor: &Arc<Processor>, ids: &[String]) -> Vec<stripe_webhooks::Outcome> {
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let processor = processor.clone();
            let (header, body) = delivery(id);
            tokio::spawn(async move { processor.process(Some(&header), body.as_bytes()).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_handler_in_a_batch_leaves_the_others_committed() {
    let (store, processor, _handler, _dir) = picky("batchfail").await;
    let ids: Vec<String> = (0..12)
        .map(|n| format!("evt_batch_{n}{}", if n == 5 { "_fail" } else { "" }))
        .collect();
    for round in 0..2 {
        for (id, outcome) in ids.iter().zip(deliver_all(&processor, &ids).await) {
            if id.ends_with("_fail") {
                assert!(
                    matches!(outcome.kind(), OutcomeKind::HandlerFailed(_)),
                    "{outcome:?}"
                );
            } else if round == 0 {
                assert!(
                    matches!(outcome.kind(), OutcomeKind::Processed),
                    "{outcome:?}"
                );
            } else {
                assert!(
                    matches!(outcome.kind(), OutcomeKind::Duplicate),
                    "{outcome:?}"
                );
            }
        }
    }
    for id in &ids {
        let want = i64::from(!id.ends_with("_fail"));
        assert_eq!(effects(&store, id).await, want, "{id}");
    }
    let failed = store
        .record(&EventId::new("evt_batch_5_fail"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, RecordStatus::Failed);
    assert_eq!(failed.attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_commit_answers_its_deliveries_503_and_redelivery_runs_each_once() {
    let (store, processor, handler, _dir) = picky("commitfail").await;
    handler.poison.store(true, Ordering::SeqCst);

    // Alone: its own writes broke the commit. That is the handler's failure: 500,
    // recorded as failed (with why), nothing else kept.
    let lone = vec!["evt_lone_poison".to_owned()];
    let outcome = deliver_all(&processor, &lone).await.remove(0);
    assert!(
        matches!(outcome.kind(), OutcomeKind::HandlerFailed(_)),
        "{outcome:?}"
    );
    assert_eq!(outcome.status(), 500);
    let record = store
        .record(&EventId::new("evt_lone_poison"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RecordStatus::Failed);
    assert!(record
        .last_error
        .unwrap()
        .contains("could not be committed"));
    assert_eq!(effects(&store, "evt_lone_poison").await, 0);

    // Among others: whoever shared its transaction is answered 503 too, never 200; but
    // a handler that failed is a 500 with its own error whether its transaction
    // committed or not (it was a 503, its error lost, when it did not).
    let ids: Vec<String> = (0..16)
        .map(|n| {
            let suffix = match n {
                3 => "_poison",
                9 => "_fail",
                _ => "",
            };
            format!("evt_mixed_{n}{suffix}")
        })
        .collect();
    let mut pending: Vec<String> = ids
        .iter()
        .zip(deliver_all(&processor, &ids).await)
        .filter(|(id, o)| {
            if id.ends_with("_fail") {
                assert!(
                    matches!(o.kind(), OutcomeKind::HandlerFailed(e) if e.to_string().contains("this one fails")),
                    "{o:?}"
                );
                return false;
            }
            assert!(o.status() == 200 || o.status() == 503, "{o:?}");
            o.status() == 503
        })
        .map(|(id, _)| id.clone())
        .collect();
    assert!(pending.contains(&"evt_mixed_3_poison".to_owned()));
    eprintln!(
        "deliveries that shared the failed transaction: {}",
        pending.len()
    );
    for id in &ids {
        let committed = i64::from(!pending.contains(id) && !id.ends_with("_fail"));
        assert_eq!(effects(&store, id).await, committed, "{id}");
    }

    // Stripe delivers the 503s again; with the poison gone every event ends up once.
    handler.poison.store(false, Ordering::SeqCst);
    pending.extend(lone);
    assert_all_processed(&deliver_all(&processor, &pending).await);
    for id in ids.iter().chain(&pending) {
        let want = i64::from(!id.ends_with("_fail"));
        assert_eq!(effects(&store, id).await, want, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_is_checkpointed_and_started_over_under_steady_load() {
    let handler = Arc::new(Effects::default());
    let (store, processor, dir) = setup("wal", handler.clone()).await;
    // 4096 deliveries leave about 7 MB of WAL if nothing checkpoints it, or if it is
    // never started over; checkpointed every 256 deliveries it stays near 0.5 MB.
    for wave in 0..64 {
        let ids: Vec<String> = (0..64).map(|n| format!("evt_wal_{wave}_{n}")).collect();
        for outcome in deliver_all(&processor, &ids).await {
            assert!(outcome.is_success(), "{outcome:?}");
        }
    }
    assert_eq!(handler.runs.load(Ordering::SeqCst), 4096);
    let wal = std::fs::metadata(dir.join("events.db-wal")).unwrap().len();
    assert!(wal < 3 << 20, "the WAL grew to {wal} bytes");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM effects")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_that_always_breaks_the_commit_fails_alone_and_the_others_get_through() {
    let (store, processor, handler, _dir) = picky("poisoned").await;
    handler.poison.store(true, Ordering::SeqCst);
    let ids: Vec<String> = (0..16)
        .map(|n| format!("evt_stuck_{n}{}", if n == 7 { "_poison" } else { "" }))
        .collect();
    // Stripe delivers, then delivers again whatever was not answered 200; the poison
    // never goes away.
    let mut pending = ids.clone();
    let mut rounds = 0;
    while pending.iter().any(|id| !id.ends_with("_poison")) {
        rounds += 1;
        assert!(rounds <= 3, "still pending after 3 rounds: {pending:?}");
        let outcomes = deliver_all(&processor, &pending).await;
        pending = pending
            .into_iter()
            .zip(outcomes)
            .filter(|(id, o)| {
                if id.ends_with("_poison") {
                    assert_ne!(o.status(), 200, "{o:?}");
                } else {
                    assert!(o.status() == 200 || o.status() == 503, "{o:?}");
                }
                o.status() != 200
            })
            .map(|(id, _)| id)
            .collect();
    }
    for id in &ids {
        let want = i64::from(!id.ends_with("_poison"));
        assert_eq!(effects(&store, id).await, want, "{id}");
    }
    // Once it has been alone, it is recorded as failed, for an operator to look at.
    let again = deliver_all(&processor, &["evt_stuck_7_poison".to_owned()]).await;
    assert_eq!(again[0].status(), 500, "{:?}", again[0]);
    let failed = store.failed_events(10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event_id.as_str(), "evt_stuck_7_poison");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_sqlite_rolled_back_by_itself_costs_one_retry_not_the_writer() {
    let (store, processor, handler, _dir) = picky("selfrollback").await;
    handler.poison.store(true, Ordering::SeqCst);
    let first = deliver_all(&processor, &["evt_sr_selfrollback".to_owned()]).await;
    assert!(first[0].status() >= 500, "{:?}", first[0]);
    assert_eq!(effects(&store, "evt_sr_selfrollback").await, 0);

    // The writer connection was replaced: everything after it goes through.
    handler.poison.store(false, Ordering::SeqCst);
    let ids: Vec<String> = (0..8)
        .map(|n| format!("evt_sr_{n}"))
        .chain(["evt_sr_selfrollback".to_owned()])
        .collect();
    assert_all_processed(&deliver_all(&processor, &ids).await);
    for id in &ids {
        assert_eq!(effects(&store, id).await, 1, "{id}");
    }
}

/// 16 concurrent deliveries, one of which inserts the same unique key twice with
/// `OR ROLLBACK`, so SQLite rolls the whole shared transaction back. The culprit is
/// answered 500 and recorded as failed; the others are answered 200, or 503 and then 200
/// when delivered again; the culprit never takes them down twice.
async fn a_self_rollback_in_a_batch_is_isolated(suffix: &str) {
    let (store, processor, handler, _dir) = picky(&format!("isolate{suffix}")).await;
    handler.poison.store(true, Ordering::SeqCst);
    let culprit = format!("evt_iso_7{suffix}");
    let ids: Vec<String> = (0..16)
        .map(|n| {
            if n == 7 {
                culprit.clone()
            } else {
                format!("evt_iso_{n}")
            }
        })
        .collect();
    let mut pending = ids.clone();
    let mut rounds = 0;
    let mut culprit_answers = Vec::new();
    while pending.iter().any(|id| *id != culprit) {
        rounds += 1;
        assert!(
            rounds <= 4,
            "still pending after {rounds} rounds: {pending:?}"
        );
        let outcomes = deliver_all(&processor, &pending).await;
        pending = pending
            .into_iter()
            .zip(outcomes)
            .filter(|(id, o)| {
                if *id == culprit {
                    culprit_answers.push(o.status());
                } else {
                    assert!(
                        matches!(
                            o.kind(),
                            OutcomeKind::Processed | OutcomeKind::StoreUnavailable(_)
                        ),
                        "{id}: {o:?}"
                    );
                }
                o.status() != 200
            })
            .map(|(id, _)| id)
            .collect();
    }
    // A culprit whose own statement reports the rollback is known at once: 500 and
    // recorded from the first delivery. One that hid it is found when its batch fails.
    if suffix == "_selfrollback" {
        assert_eq!(culprit_answers.first(), Some(&500), "{culprit_answers:?}");
    }
    // Alone, the culprit fails as a handler fails, every time.
    let alone = deliver_all(&processor, std::slice::from_ref(&culprit)).await;
    assert!(
        matches!(alone[0].kind(), OutcomeKind::HandlerFailed(_)),
        "{:?}",
        alone[0]
    );
    assert!(
        culprit_answers.iter().all(|s| *s >= 500),
        "{culprit_answers:?}"
    );
    for id in &ids {
        let want = i64::from(*id != culprit);
        assert_eq!(effects(&store, id).await, want, "{id}");
    }
    let failed = store.failed_events(10).await.unwrap();
    let failed: Vec<&str> = failed.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(failed, [culprit.as_str()]);
    let record = store
        .record(&EventId::new(culprit.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RecordStatus::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_whose_write_rolls_back_the_batch_fails_alone() {
    a_self_rollback_in_a_batch_is_isolated("_selfrollback").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_that_hides_a_rolled_back_batch_fails_alone() {
    a_self_rollback_in_a_batch_is_isolated("_swallowed").await;
}

/// A handler that hides the write that made SQLite roll the batch back, then writes on:
/// none of its later writes commits (each would have committed on its own, outside the
/// transaction that holds the claim, and again at every redelivery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_a_hidden_rollback_never_commit() {
    let (store, processor, handler, _dir) = picky("writes_on").await;
    handler.poison.store(true, Ordering::SeqCst);
    let id = "evt_inbox_writes_on";
    let (header, body) = delivery(id);
    for _ in 0..3 {
        let o = processor.process(Some(&header), body.as_bytes()).await;
        assert!(o.status() >= 500, "{o:?}");
    }
    for effect in [
        id.to_owned(),
        format!("{id}_late"),
        format!("{id}_nested_late"),
    ] {
        assert_eq!(effects(&store, &effect).await, 0, "{effect}");
    }
    // The store and its writer work on: fixed, the delivery runs once.
    handler.poison.store(false, Ordering::SeqCst);
    let o = processor.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
    assert_eq!(effects(&store, id).await, 1);
}

/// A handler that hides the write that made SQLite roll the batch back, then opens a
/// transaction of its own and drops it, leaving one open: its delivery fails and its
/// failure is recorded. It was answered 200 with its claim and completion gone (the
/// inbox's COMMIT committed the handler's empty transaction), and never delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_rollback_is_seen_even_behind_a_transaction_the_handler_opened() {
    let (store, processor, handler, _dir) = picky("reopens").await;
    handler.poison.store(true, Ordering::SeqCst);
    let id = "evt_inbox_reopens";
    let (header, body) = delivery(id);
    let o = processor.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::HandlerFailed(_)), "{o:?}");
    assert_eq!(effects(&store, id).await, 0);
    let record = store.record(&EventId::new(id)).await.unwrap().unwrap();
    assert_eq!(record.status, RecordStatus::Failed);
    handler.poison.store(false, Ordering::SeqCst);
    let o = processor.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
    assert_eq!(effects(&store, id).await, 1);
}

/// An ordered inbox whose handler hides a write that made SQLite roll the whole
/// transaction back: the object's watermark does not move (it used to, committed on its
/// own outside any transaction, so that an older event of the object, never applied
/// over, would have been answered stale).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_inbox_never_moves_the_watermark_of_a_rolled_back_delivery() {
    use stripe_webhooks::{dangerous, OrderingStore, TiePolicy};
    let handler = Arc::new(Picky::default());
    handler.poison.store(true, Ordering::SeqCst);
    let (store, _dir) = fresh_store("ordered_swallowed").await;
    let p = Processor::with_inbox(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        store
            .inbox(Shared(Arc::clone(&handler)))
            .ordered(TiePolicy::Run),
    );
    let (header, body) = delivery("evt_ow_swallowed");
    let object = dangerous::parse_unverified(body.as_bytes())
        .unwrap()
        .object_id()
        .unwrap()
        .to_owned();
    let o = p.process(Some(&header), body.as_bytes()).await;
    assert!(o.status() >= 500, "{o:?}");
    assert_eq!(effects(&store, "evt_ow_swallowed").await, 0);
    assert_eq!(store.watermark(&object).await.unwrap(), None);
    // Delivered again once the handler is fixed, it runs and moves the watermark.
    handler.poison.store(false, Ordering::SeqCst);
    let o = p.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
    assert_eq!(effects(&store, "evt_ow_swallowed").await, 1);
    let moved = store.watermark(&object).await.unwrap().unwrap();
    assert_eq!(moved.event_id.as_str(), "evt_ow_swallowed");
}

/// An ordered SQLite inbox leaves the types its handler keeps outside the guard
/// (`TransactionalHandler::is_ordered`) unguarded: a payment's event older than an
/// update of its charge still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_inbox_runs_unordered_types_whatever_their_age() {
    use stripe_webhooks::TiePolicy;
    let (store, _dir) = fresh_store("ordered_unordered").await;
    let handler = common::PaymentsAlwaysRun::default();
    let p = Processor::with_inbox(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        store.inbox(handler.clone()).ordered(TiePolicy::Run),
    );
    common::unordered_types_run_whatever_their_age(&p, &handler, "ch_sqlite_unordered").await;
}

/// A lease lock that ran out (its route's handler stalled past the lease) is taken over
/// by an ordered inbox's delivery, as by any other holder: the stalled route's late
/// completion, which applied an older event, is refused. It went through, the lock still
/// naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_inbox_takes_over_a_lapsed_lease_lock() {
    use stripe_webhooks::{dangerous, LockedClaim, OrderingStore, TiePolicy, Watermark};
    let (store, _dir) = fresh_store("ordered_lapsed").await;
    let p = Processor::with_inbox(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        store
            .inbox(Shared(Arc::new(Effects::default())))
            .ordered(TiePolicy::Run),
    );
    let old = dangerous::parse_unverified(delivery("evt_lapsed_old").1.as_bytes()).unwrap();
    let object = old.object_id().unwrap().to_owned();
    let locked = store
        .lock_and_claim(
            &object,
            "stalled-route",
            Duration::from_millis(200),
            old.id(),
            old.event_type(),
        )
        .await
        .unwrap();
    let LockedClaim::Acquired { token, .. } = locked else {
        panic!("{locked:?}");
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (header, body) = delivery("evt_lapsed_new");
    let o = p.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
    let applied = Watermark::new(old.created(), old.id().clone());
    let late = store
        .complete_applied(&token, &object, "stalled-route", &applied)
        .await;
    assert!(
        matches!(late, Err(stripe_webhooks::StoreError::LeaseLost { .. })),
        "{late:?}"
    );
}

/// Beside an ordered inbox, a thin event claimed under its snapshot twin joins the
/// object's guard: it moves the watermark, so an older snapshot event of the object that
/// arrives later is stale in the inbox, and its twin a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_twin_beside_an_ordered_inbox_moves_the_watermark() {
    use stripe_webhooks::testing::ThinEventBuilder;
    use stripe_webhooks::{dangerous, OrderingStore, TiePolicy};
    let handler = Arc::new(Effects::default());
    let (store, _dir) = fresh_store("thin_twin").await;
    let p = Processor::with_inbox(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        store
            .inbox(Shared(Arc::clone(&handler)))
            .ordered(TiePolicy::Run),
    )
    .with_thin_handler(common::NoopThin);
    let base = testing::now() - 100;
    let update = |id: &str, created: i64| {
        let mut v: serde_json::Value = serde_json::from_str(&testing::event_json(
            id,
            "customer.updated",
            r#"{"id":"cus_twin","object":"customer"}"#,
        ))
        .unwrap();
        v["created"] = created.into();
        dangerous::parse_unverified(v.to_string().as_bytes()).unwrap()
    };
    let thin = ThinEventBuilder::new("evt_thin_tw2", "v1.customer.updated")
        .related("cus_twin", "customer", "/v1/customers/cus_twin")
        .snapshot_event("evt_tw2")
        .created(base + 2)
        .build();
    let n = dangerous::parse_unverified_notification(thin.as_bytes()).unwrap();
    assert_eq!(p.process_notification(&n).await.kind().name(), "processed");
    let wm = store.watermark("cus_twin").await.unwrap().unwrap();
    assert_eq!((wm.created, wm.event_id.as_str()), (base + 2, "evt_tw2"));
    let older = p.process_event(&update("evt_tw1", base + 1)).await;
    assert_eq!(older.kind().name(), "stale", "{older:?}");
    let twin = p.process_event(&update("evt_tw2", base + 2)).await;
    assert_eq!(twin.kind().name(), "duplicate", "{twin:?}");
    assert_eq!(effects(&store, "evt_tw1").await, 0);
    assert_eq!(effects(&store, "evt_tw2").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_may_open_its_own_nested_transaction() {
    let (store, processor, _handler, _dir) = picky("nested").await;
    let ids: Vec<String> = (0..6).map(|n| format!("evt_n{n}_nested")).collect();
    assert_all_processed(&deliver_all(&processor, &ids).await);
    for id in &ids {
        assert_eq!(effects(&store, id).await, 1, "{id}");
        let parents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM parents WHERE id = ?1")
            .bind(id)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(parents, 1, "{id}");
    }
}

/// Holds the delivery of `evt_gated` in its handler until the test opens the gate.
#[derive(Default)]
struct Gated {
    started: Notify,
    gate: Notify,
}

#[async_trait]
impl TransactionalHandler<Sqlite> for Gated {
    async fn handle(&self, event: &Event, conn: &mut SqliteConnection) -> Result<(), HandlerError> {
        write_effect(conn, event.id().as_str()).await?;
        if event.id().as_str() == "evt_gated" {
            self.started.notify_one();
            self.gate.notified().await;
        }
        Ok(())
    }
}

// One thread, so the order of the steps below is the order they run in.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_left_open_for_a_delivery_that_went_away_still_commits() {
    let handler = Arc::new(Gated::default());
    let (store, processor, _dir) = setup("finisher", handler.clone()).await;
    let spawn = |id: &str| {
        let (processor, (header, body)) = (processor.clone(), delivery(id));
        tokio::spawn(async move { processor.process(Some(&header), body.as_bytes()).await })
    };

    // A holds the writer, in its handler; B queues behind it.
    let a = spawn("evt_gated");
    handler.started.notified().await;
    let b = spawn("evt_queued");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    // A finishes while B is still queued, so A leaves the transaction open for B and
    // waits for its commit; then B goes away before it ever takes the transaction.
    handler.gate.notify_one();
    b.abort();

    // Someone must still commit A's transaction, long before the store timeout.
    let outcome = tokio::time::timeout(Duration::from_secs(2), a)
        .await
        .expect("A was answered without waiting for the store timeout")
        .unwrap();
    assert!(
        matches!(outcome.kind(), OutcomeKind::Processed),
        "{outcome:?}"
    );
    assert_eq!(effects(&store, "evt_gated").await, 1);
    assert_eq!(effects(&store, "evt_queued").await, 0);
}

/// Sleeps `slow` for events whose id contains `slow`, then writes; the others write at
/// once, and say that one started.
struct Sleepy {
    slow: Duration,
    quick_started: Notify,
}

#[async_trait]
impl TransactionalHandler<Sqlite> for Sleepy {
    async fn handle(&self, event: &Event, conn: &mut SqliteConnection) -> Result<(), HandlerError> {
        if event.id().as_str().contains("slow") {
            tokio::time::sleep(self.slow).await;
        } else {
            self.quick_started.notify_one();
        }
        write_effect(conn, event.id().as_str()).await?;
        Ok(())
    }
}

/// A delivery that leaves its batch open for the next one waits for the commit as long
/// as the next handler may run (its deadline, 10 s), not only the store timeout (6 s
/// here): in a burst of quick deliveries with a slow one among them, none is answered
/// 503 for work that committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_waits_out_the_next_handler_in_its_batch() {
    let handler = Arc::new(Sleepy {
        slow: Duration::from_secs(7),
        quick_started: Notify::new(),
    });
    let (store, processor, _dir) = setup("wait_next", Arc::clone(&handler)).await;
    let mut ids: Vec<String> = (0..12).map(|i| format!("evt_quick_{i}")).collect();
    ids.insert(6, "evt_then_slow".to_owned());
    let mut tasks = Vec::new();
    for id in &ids {
        // The slow one once a quick one before it runs in a batch: on a loaded machine
        // it could otherwise take the writer first, every other delivery then waiting
        // past the busy timeout (a 503, correctly, but no batch left open for it).
        if id.contains("slow") {
            handler.quick_started.notified().await;
        }
        let (p, (header, body)) = (Arc::clone(&processor), delivery(id));
        tasks.push(tokio::spawn(async move {
            p.process(Some(&header), body.as_bytes()).await
        }));
    }
    let mut answered = 0;
    for (id, task) in ids.iter().zip(tasks) {
        let o = task.await.unwrap();
        // 200 with its work committed, or (waiting for the writer past the busy timeout
        // while the slow handler held it) 503 with nothing done; never 503 for work done.
        match o.status() {
            200 => {
                answered += 1;
                assert_eq!(effects(&store, id).await, 1, "{id}: {o:?}");
            }
            503 => assert_eq!(effects(&store, id).await, 0, "{id}: {o:?}"),
            _ => panic!("{id}: {o:?}"),
        }
    }
    assert!(answered > 1, "{answered}");
}

/// A handler that panics, or runs out its deadline, while no statement of its runs:
/// recorded as failed (500), with the deliveries that share its batch committed. The
/// flag that stops a statement left running by the cut handler stayed set through the
/// undo, and SQLite asks the progress handler on a count of steps a cached statement
/// keeps across runs, so now and then it stopped the undo's own write, rolling the
/// whole batch back (503 for every delivery in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_cut_between_statements_fails_alone() {
    struct CutBetween;
    #[async_trait]
    impl TransactionalHandler<Sqlite> for CutBetween {
        async fn handle(
            &self,
            event: &Event,
            conn: &mut SqliteConnection,
        ) -> Result<(), HandlerError> {
            let id = event.id().as_str();
            write_effect(conn, id).await?;
            if id.contains("panic") {
                panic!("cut");
            }
            if id.contains("late") {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Ok(())
        }
    }
    let (store, _dir) = fresh_store("cut_between").await;
    let verifier = Verifier::new(SigningSecret::new(SECRET).unwrap());
    let processor = Arc::new(
        Processor::with_inbox(verifier, store.inbox(CutBetween))
            // Ample for one insert on a loaded machine.
            .with_handler_deadline(Some(Duration::from_millis(500))),
    );
    for round in 0..150 {
        // Mostly panics (at once), and now and then a handler past its deadline.
        let cut = if round % 15 == 7 { "late" } else { "panic" };
        let ids = [
            format!("evt_ok_a_{round}"),
            format!("evt_{cut}_{round}"),
            format!("evt_ok_b_{round}"),
        ];
        let mut tasks = Vec::new();
        for id in &ids {
            let (p, (header, body)) = (Arc::clone(&processor), delivery(id));
            tasks.push(tokio::spawn(async move {
                p.process(Some(&header), body.as_bytes()).await
            }));
        }
        for (id, task) in ids.iter().zip(tasks) {
            let o = task.await.unwrap();
            if id.contains(cut) {
                assert_eq!(o.status(), 500, "round {round}, {id}: {o:?}");
                assert_eq!(effects(&store, id).await, 0, "{id}: undone");
                let record = store.record(&EventId::new(id)).await.unwrap().unwrap();
                assert_eq!(record.status, RecordStatus::Failed, "{id}");
            } else {
                assert_eq!(o.status(), 200, "round {round}, {id}: {o:?}");
                assert_eq!(effects(&store, id).await, 1, "{id}");
            }
        }
    }
}

/// The inbox's writer connection is opened as the store's pool opens its own, its
/// `after_connect` hook included: what the hook sets up on a connection (here a
/// temporary table; a `PRAGMA synchronous = FULL`, or SQL functions) is there for the
/// handlers. It was opened with the pool's connect options only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_writer_runs_the_pools_after_connect_hook() {
    use stripe_webhooks::sqlx::sqlite::SqlitePoolOptions;
    use stripe_webhooks::sqlx::Executor;

    struct UsesTheHook;
    #[async_trait]
    impl TransactionalHandler<Sqlite> for UsesTheHook {
        async fn handle(
            &self,
            event: &Event,
            conn: &mut SqliteConnection,
        ) -> Result<(), HandlerError> {
            sqlx::query("INSERT INTO temp.hooked VALUES (?1)")
                .bind(event.id().as_str())
                .execute(conn)
                .await
                .map_err(HandlerError::new)?;
            Ok(())
        }
    }
    let (store, dir) = fresh_store("after_connect").await;
    drop(store);
    let pool = SqlitePoolOptions::new()
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS hooked (event_id TEXT)")
                    .await?;
                Ok(())
            })
        })
        .connect_with(SqliteStore::connect_options(dir.join("events.db")))
        .await
        .unwrap();
    let store = SqliteStore::new(pool);
    let p = Processor::with_inbox(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        store.inbox(UsesTheHook),
    );
    let (header, body) = delivery("evt_inbox_hooked");
    let o = p.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
}

/// An inbox handler whose `handles` check panics: a 500, the event recorded as failed
/// with the panic's message through the store (each delivery an attempt), the panic
/// kept inside `process` (a reconciler's pass goes on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_handles_check_is_a_500_recorded_as_failed() {
    struct Picky;
    impl TransactionalHandler<Sqlite> for Picky {
        fn handle<'a, 'b, 'c, 'd>(
            &'a self,
            _event: &'b Event,
            _conn: &'c mut SqliteConnection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), HandlerError>> + Send + 'd>,
        >
        where
            'a: 'd,
            'b: 'd,
            'c: 'd,
            Self: 'd,
        {
            Box::pin(async { Ok(()) })
        }
        fn handles(&self, _event_type: &stripe_webhooks::EventType) -> bool {
            panic!("no such plan")
        }
    }
    let dir = common::TempDir::new("inbox_panic_handles");
    let store = SqliteStore::connect(dir.join("events.db")).await.unwrap();
    let verifier = Verifier::new(SigningSecret::new(SECRET).unwrap());
    let processor = Processor::with_inbox(verifier, store.inbox(Picky));
    let (header, body) = delivery("evt_inbox_picky");
    for attempt in 1..=2 {
        let o = processor.process(Some(&header), body.as_bytes()).await;
        common::assert_check_panic_recorded(&o, &store, "evt_inbox_picky", attempt, "no such plan")
            .await;
    }
}

/// An inbox handler written without `async-trait` that panics in the call itself,
/// before returning its future: the delivery fails (500) and is recorded, as a panic in
/// the future is, instead of unwinding through the processor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_handler_call_is_a_recorded_failure() {
    struct PanicsInCall;
    impl TransactionalHandler<Sqlite> for PanicsInCall {
        fn handle<'a, 'b, 'c, 'd>(
            &'a self,
            _event: &'b Event,
            _conn: &'c mut SqliteConnection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), HandlerError>> + Send + 'd>,
        >
        where
            'a: 'd,
            'b: 'd,
            'c: 'd,
            Self: 'd,
        {
            panic!("bad config")
        }
    }
    let dir = common::TempDir::new("inbox_panic_call");
    let store = SqliteStore::connect(dir.join("events.db")).await.unwrap();
    let verifier = Verifier::new(SigningSecret::new(SECRET).unwrap());
    let processor = Processor::with_inbox(verifier, store.inbox(PanicsInCall));
    let (header, body) = delivery("evt_inbox_panic_call");
    let o = processor.process(Some(&header), body.as_bytes()).await;
    assert_eq!(o.status(), 500, "{o:?}");
    assert!(
        matches!(
            o.kind(),
            OutcomeKind::HandlerFailed(HandlerError::Panicked(_))
        ),
        "{o:?}"
    );
    let record = store
        .record(&EventId::new("evt_inbox_panic_call"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RecordStatus::Failed);
}

/// An ordered inbox beside a guarded route outside it (`Processor::thin_ordered` on the
/// same store): the lease lock that route holds on an object while its handler runs
/// makes the inbox's delivery about that object wait (409, its savepoint undone, nothing
/// written) instead of running beside it; the deliveries batched with it are not
/// touched, and once the lock is freed it runs.
#[tokio::test]
async fn an_ordered_inbox_waits_for_a_lease_lock_on_the_object() {
    use stripe_webhooks::{dangerous, ObjectLock, OrderingStore, TiePolicy};
    let handler = Arc::new(Effects::default());
    let (store, _dir) = fresh_store("lease").await;
    let p = Processor::with_inbox(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        store
            .inbox(Shared(Arc::clone(&handler)))
            .ordered(TiePolicy::Run),
    );
    let (header, body) = delivery("evt_lease_1");
    let event = dangerous::parse_unverified(body.as_bytes()).unwrap();
    let object = event.object_id().unwrap().to_owned();
    let lock = store
        .lock_object(&object, "another-route", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(lock, ObjectLock::Acquired { .. }), "{lock:?}");
    let o = p.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::InProgress { .. }), "{o:?}");
    assert_eq!(effects(&store, "evt_lease_1").await, 0);
    assert!(store.record(event.id()).await.unwrap().is_none());
    // Another object's delivery is not held up.
    let b2 = testing::event_for_type("evt_lease_2", "invoice.paid").unwrap();
    let h2 = testing::sign(b2.as_bytes(), SECRET, testing::now());
    let o = p.process(Some(&h2), b2.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
    store.unlock_object(&object, "another-route").await.unwrap();
    let o = p.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
    assert_eq!(effects(&store, "evt_lease_1").await, 1);
}

/// Reads a billion generated rows (minutes of work) for events whose id ends in `_long`,
/// then writes its `effects` row.
struct LongStatement;

#[async_trait]
impl TransactionalHandler<Sqlite> for LongStatement {
    async fn handle(&self, event: &Event, conn: &mut SqliteConnection) -> Result<(), HandlerError> {
        if event.id().as_str().ends_with("_long") {
            common::read_for_minutes(conn).await?;
        }
        write_effect(conn, event.id().as_str()).await?;
        Ok(())
    }
}

/// A handler stopped at its deadline in the middle of a statement: the statement is
/// stopped too (it would run on in the driver's thread, holding SQLite's write lock,
/// with the delivery's undo queued behind it), so the failure is recorded at once and
/// the next delivery gets through instead of waiting on the lock (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_running_past_the_handlers_deadline_is_stopped() {
    let (store, _dir) = fresh_store("long").await;
    let processor = Processor::with_inbox(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        store.inbox(LongStatement),
    )
    .with_handler_deadline(Some(Duration::from_millis(300)));
    let (header, body) = delivery("evt_inbox_long");
    let cut = processor.process(Some(&header), body.as_bytes()).await;
    assert!(
        matches!(
            cut.kind(),
            OutcomeKind::HandlerFailed(HandlerError::DeadlineExceeded(_))
        ),
        "{cut:?}"
    );
    let record = store
        .record(&EventId::new("evt_inbox_long"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RecordStatus::Failed);
    let (header, body) = delivery("evt_inbox_next");
    let next = processor.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(next.kind(), OutcomeKind::Processed), "{next:?}");
    assert_eq!(effects(&store, "evt_inbox_next").await, 1);
    assert_eq!(effects(&store, "evt_inbox_long").await, 0);
}

/// An inbox handler that takes a type this release does not know names it in
/// `unknown_types`, and the processor's `enabled_events` (what a reconciler lists)
/// carries it, on both inboxes. Before, the inboxes dropped the handler's names, and a
/// reconcile pass over an inbox processor filtered such events out.
#[tokio::test]
async fn an_inbox_handlers_unknown_types_are_in_enabled_events() {
    struct NewTypes;
    #[async_trait]
    impl TransactionalHandler<Sqlite> for NewTypes {
        async fn handle(&self, _e: &Event, _c: &mut SqliteConnection) -> Result<(), HandlerError> {
            Ok(())
        }
        fn handles(&self, t: &stripe_webhooks::EventType) -> bool {
            matches!(t.as_str(), "invoice.paid" | "invoice.brand_new_thing")
        }
        fn unknown_types(&self) -> Vec<String> {
            vec!["invoice.brand_new_thing".to_owned()]
        }
    }
    let (store, _dir) = fresh_store("unknown_types").await;
    let verifier = Verifier::new(SigningSecret::new(SECRET).unwrap());
    let processor = Processor::with_inbox(verifier, store.inbox(NewTypes));
    let mut enabled = processor.enabled_events().snapshot;
    enabled.sort();
    assert_eq!(enabled, ["invoice.brand_new_thing", "invoice.paid"]);

    #[cfg(feature = "postgres")]
    {
        use stripe_webhooks::sqlx::{PgConnection, Postgres};
        #[async_trait]
        impl TransactionalHandler<Postgres> for NewTypes {
            async fn handle(&self, _e: &Event, _c: &mut PgConnection) -> Result<(), HandlerError> {
                Ok(())
            }
            fn handles(&self, t: &stripe_webhooks::EventType) -> bool {
                t.as_str() == "invoice.paid"
            }
            fn unknown_types(&self) -> Vec<String> {
                vec!["*".to_owned()]
            }
        }
        // Building the processor opens no connection.
        let pool = stripe_webhooks::sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let store = stripe_webhooks::PostgresStore::new(pool);
        let verifier = Verifier::new(SigningSecret::new(SECRET).unwrap());
        let processor = Processor::with_inbox(verifier, store.inbox(NewTypes));
        assert_eq!(processor.enabled_events().snapshot, ["*"]);
    }
}

/// Deliveries that arrive together share a batch (one transaction, one commit): a
/// handler sees, in its transaction, the effects of other deliveries that no other
/// connection sees yet. (The batch tests above also pass with batches of one; this one
/// fails unless batches form.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_that_arrive_together_share_a_batch() {
    /// Records the most uncommitted effects a handler saw in its transaction.
    #[derive(Default)]
    struct Peek {
        pool: std::sync::OnceLock<sqlx::SqlitePool>,
        most_uncommitted: AtomicUsize,
    }
    #[async_trait]
    impl TransactionalHandler<Sqlite> for Peek {
        async fn handle(
            &self,
            event: &Event,
            conn: &mut SqliteConnection,
        ) -> Result<(), HandlerError> {
            write_effect(conn, event.id().as_str()).await?;
            let count = "SELECT COUNT(*) FROM effects";
            let in_batch: i64 = sqlx::query_scalar(count)
                .fetch_one(&mut *conn)
                .await
                .map_err(HandlerError::new)?;
            // Read after: a commit in between only makes the difference smaller.
            let pool = self
                .pool
                .get()
                .ok_or_else(|| HandlerError::new("no pool"))?;
            let committed: i64 = sqlx::query_scalar(count)
                .fetch_one(pool)
                .await
                .map_err(HandlerError::new)?;
            let uncommitted = usize::try_from(in_batch - committed).unwrap_or(0);
            self.most_uncommitted
                .fetch_max(uncommitted, Ordering::SeqCst);
            Ok(())
        }
    }
    let handler = Arc::new(Peek::default());
    let (store, processor, _dir) = setup("batched", handler.clone()).await;
    handler.pool.set(store.pool().clone()).unwrap();
    // Up to three rounds of forty at once, so that a loaded machine that happened to run
    // one round's deliveries one after another does not fail the test.
    for round in 0..3 {
        let ids: Vec<String> = (0..40)
            .map(|n| format!("evt_together_{round}_{n}"))
            .collect();
        assert_all_processed(&deliver_all(&processor, &ids).await);
        for id in &ids {
            assert_eq!(effects(&store, id).await, 1, "{id}");
        }
        if handler.most_uncommitted.load(Ordering::SeqCst) >= 2 {
            break;
        }
    }
    // Its own effect, and at least one other delivery's in the same transaction.
    let most = handler.most_uncommitted.load(Ordering::SeqCst);
    assert!(
        most >= 2,
        "no batch of two formed (most uncommitted seen: {most})"
    );
}

/// An ordered inbox fetching a same-second event's object (`TiePolicy::Fetch`) holds
/// SQLite's write lock while it waits, and the deliveries queued for the writer give up
/// after 5 s: the fetch is bounded by the handler deadline and the store timeout (and by
/// half that wait), not by the 6 s it was given whatever the deadline.
#[cfg(feature = "client")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_inbox_bounds_a_ties_fetch_by_the_deadline() {
    use stripe_webhooks::testing::{FakeStripe, Fault};
    use stripe_webhooks::{dangerous, TiePolicy};
    let fake = FakeStripe::start().await.unwrap();
    let (store, _dir) = fresh_store("tie_fetch").await;
    let p = Processor::with_inbox(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        store
            .inbox(Shared(Arc::new(Picky::default())))
            .ordered(TiePolicy::Fetch(Arc::new(fake.client().unwrap()))),
    )
    .with_handler_deadline(Some(Duration::from_secs(1)));
    let event = |id: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&testing::event_json(
            id,
            "customer.updated",
            r#"{"id":"cus_tie","object":"customer"}"#,
        ))
        .unwrap();
        v["created"] = 1_700_000_000.into();
        dangerous::parse_unverified(v.to_string().as_bytes()).unwrap()
    };
    let first = p.process_event(&event("evt_tie_1")).await;
    assert!(matches!(first.kind(), OutcomeKind::Processed), "{first:?}");
    fake.fail_next(1, Fault::Delay(Duration::from_secs(10)));
    let tie = p.process_event(&event("evt_tie_2")).await;
    assert!(
        matches!(
            tie.kind(),
            OutcomeKind::HandlerFailed(HandlerError::DeadlineExceeded(d)) if *d == Duration::from_secs(1)
        ),
        "{tie:?}"
    );
}
