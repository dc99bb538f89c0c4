//! The event queue: the conformance suite on every queue, the ack-fast processor, and
//! workers (retries, dead jobs, leases, shutdown, inbox mode, per-object order).
//!
//! Needs `DATABASE_URL_TEST` for the Postgres tests and `REDIS_URL_TEST` for the Redis
//! ones; `eval "$(scripts/services.sh start)"` or `scripts/test.sh` set them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(all(feature = "sqlite", feature = "testing"))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

#[cfg(any(feature = "postgres", feature = "redis"))]
use common::unique;
use common::TempDir;
use stripe_webhooks::queue::{
    Enqueued, JobState, MemoryQueue, NewJob, Queue, QueueAdmin, RetryPolicy, SqliteQueue, Worker,
    MAX_RETRY_DELAY,
};
use stripe_webhooks::testing::queue_conformance;
use stripe_webhooks::testing::store_conformance::LeaseTime;
use stripe_webhooks::testing::{self, ThinEventBuilder};
use stripe_webhooks::{
    async_trait, ClaimToken, Event, EventHandler, EventNotification, EventRouter, HandlerError,
    ManualClock, Processor, SigningSecret, SqliteStore, StoreError, ThinEventHandler, Verifier,
};

const SECRET: &str = "whsec_queue_tests";

fn verifier() -> Verifier {
    Verifier::new(SigningSecret::new(SECRET).unwrap())
}

fn signed(body: &str) -> String {
    testing::sign(body.as_bytes(), SECRET, testing::now())
}

fn customer_event(id: &str, customer: &str, created: i64) -> String {
    let body = testing::event_json(
        id,
        "customer.updated",
        &format!(r#"{{"id":"{customer}","object":"customer"}}"#),
    );
    let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["created"] = created.into();
    v.to_string()
}

async fn sqlite_queue(dir: &TempDir) -> SqliteQueue {
    SqliteStore::connect(dir.join("queue.db"))
        .await
        .unwrap()
        .queue()
}

/// The batch writer's connection is opened as the store's pool opens its own, its
/// `after_connect` hook included: a `PRAGMA synchronous = FULL` set there must hold for
/// the enqueues' commits. (Here the hook installs a trigger that logs each enqueue.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_batch_writer_runs_the_pools_after_connect_hook() {
    use stripe_webhooks::sqlx::sqlite::SqlitePoolOptions;
    use stripe_webhooks::sqlx::Executor;

    let dir = TempDir::new("queue_after_connect");
    let path = dir.join("queue.db");
    let migrated = SqliteStore::connect(&path).await.unwrap();
    migrated
        .pool()
        .execute("CREATE TABLE hook_log (job_key TEXT NOT NULL)")
        .await
        .unwrap();
    drop(migrated);
    let pool = SqlitePoolOptions::new()
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "CREATE TEMP TRIGGER IF NOT EXISTS log_enqueue \
                     AFTER INSERT ON main.stripe_webhook_events_jobs \
                     BEGIN INSERT INTO hook_log VALUES (NEW.job_key); END",
                )
                .await?;
                Ok(())
            })
        })
        .connect_with(SqliteStore::connect_options(&path))
        .await
        .unwrap();
    let queue = SqliteStore::new(pool).queue();
    enqueue_body(
        &queue,
        &customer_event("evt_hooked", "cus_1", testing::now()),
    )
    .await;
    let logged: Vec<String> = stripe_webhooks::sqlx::query_scalar("SELECT job_key FROM hook_log")
        .fetch_all(queue.pool())
        .await
        .unwrap();
    assert_eq!(logged, ["evt_hooked"]);
}

/// A SQLite queue with a `ledger` table, where inbox handlers write their effects.
async fn sqlite_ledger_queue(dir: &TempDir) -> SqliteQueue {
    let queue = sqlite_queue(dir).await;
    stripe_webhooks::sqlx::query("CREATE TABLE ledger (event_id TEXT NOT NULL)")
        .execute(queue.pool())
        .await
        .unwrap();
    queue
}

/// The event ids in the `ledger` table.
async fn ledger(queue: &SqliteQueue) -> Vec<String> {
    stripe_webhooks::sqlx::query_scalar("SELECT event_id FROM ledger")
        .fetch_all(queue.pool())
        .await
        .unwrap()
}

/// Records the events a handler saw, and fails the ones it is told to.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
    failing: Arc<Mutex<Vec<String>>>,
    sleep: Option<Duration>,
    panics: bool,
}

impl Recorder {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
    fn fail(&self, id: &str) {
        self.failing.lock().unwrap().push(id.to_owned());
    }
    fn fix(&self) {
        self.failing.lock().unwrap().clear();
    }
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        if let Some(d) = self.sleep {
            tokio::time::sleep(d).await;
        }
        self.seen
            .lock()
            .unwrap()
            .push(event.id().as_str().to_owned());
        if self.panics {
            // Quoting a signing secret, which the queue keeps hidden.
            panic!("handler panicked on purpose with whsec_abc");
        }
        if self
            .failing
            .lock()
            .unwrap()
            .iter()
            .any(|f| f == event.id().as_str())
        {
            return Err(HandlerError::new("downstream is down"));
        }
        Ok(())
    }
}

#[async_trait]
impl ThinEventHandler for Recorder {
    async fn handle(&self, n: &EventNotification) -> Result<(), HandlerError> {
        self.seen.lock().unwrap().push(n.id.as_str().to_owned());
        Ok(())
    }
}

/// Queues a verified body as the ingest path would.
async fn enqueue_body(queue: &impl Queue, body: &str) {
    queue
        .enqueue(&NewJob::parse(body.as_bytes()).unwrap())
        .await
        .unwrap();
}

/// A `MemoryQueue` with faults: renewals or completions it refuses (`unavailable`), or
/// takes and completions answered after a millisecond, as a networked queue's never are
/// at their first poll.
#[derive(Clone)]
struct Faulty {
    inner: MemoryQueue,
    no_renewals: bool,
    /// How many renewals to refuse before taking them.
    failed_renewals: Arc<std::sync::atomic::AtomicUsize>,
    no_completions: bool,
    /// How many completions to refuse before taking them, each after `refusal_delay`.
    failed_completions: Arc<std::sync::atomic::AtomicUsize>,
    refusal_delay: Duration,
    yields: bool,
}

impl Faulty {
    /// `queue` without faults; set the ones wanted.
    fn over(queue: &MemoryQueue) -> Self {
        Self {
            inner: queue.clone(),
            no_renewals: false,
            failed_renewals: Arc::default(),
            no_completions: false,
            failed_completions: Arc::default(),
            refusal_delay: Duration::ZERO,
            yields: false,
        }
    }

    async fn pause(&self) {
        if self.yields {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Whether a call is to be refused: takes one from `count` while any are left.
fn refuse_one(count: &std::sync::atomic::AtomicUsize) -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    count
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl Queue for Faulty {
    async fn enqueue(
        &self,
        job: &NewJob<'_>,
    ) -> Result<stripe_webhooks::queue::Enqueued, stripe_webhooks::StoreError> {
        self.inner.enqueue(job).await
    }
    async fn take(
        &self,
        max: usize,
        lease: Duration,
        per_object_order: bool,
    ) -> Result<Vec<stripe_webhooks::queue::Job>, stripe_webhooks::StoreError> {
        self.pause().await;
        self.inner.take(max, lease, per_object_order).await
    }
    async fn extend(
        &self,
        token: &stripe_webhooks::ClaimToken,
        lease: Duration,
    ) -> Result<(), stripe_webhooks::StoreError> {
        if self.no_renewals || refuse_one(&self.failed_renewals) {
            return Err(stripe_webhooks::StoreError::unavailable(
                "the queue is down",
            ));
        }
        self.inner.extend(token, lease).await
    }
    async fn complete(
        &self,
        token: &stripe_webhooks::ClaimToken,
    ) -> Result<(), stripe_webhooks::StoreError> {
        let refuse = refuse_one(&self.failed_completions);
        if refuse {
            tokio::time::sleep(self.refusal_delay).await;
        }
        if self.no_completions || refuse {
            return Err(stripe_webhooks::StoreError::unavailable(
                "the queue is down",
            ));
        }
        self.pause().await;
        self.inner.complete(token).await
    }
    async fn fail(
        &self,
        token: &stripe_webhooks::ClaimToken,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), stripe_webhooks::StoreError> {
        self.inner.fail(token, error, retry_in).await
    }
    async fn release(
        &self,
        token: &stripe_webhooks::ClaimToken,
    ) -> Result<(), stripe_webhooks::StoreError> {
        self.inner.release(token).await
    }
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(
        attempts,
        Duration::from_millis(20),
        Duration::from_millis(40),
    )
    .with_jitter(0.0)
}

/// Runs `run_once` until the queue has nothing queued, retrying or running.
async fn drain(worker: &Worker, queue: &impl QueueAdmin) {
    for _ in 0..500 {
        worker.run_once().await.unwrap();
        let c = queue.counts().await.unwrap();
        if c.queued + c.retrying + c.running == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the queue did not drain: {:?}",
        queue.counts().await.unwrap()
    );
}

// ---- conformance ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_queue_conformance() {
    let clock = ManualClock::new(1_700_000_000_000);
    let c = clock.clone();
    queue_conformance::run_all(
        move || {
            let c = c.clone();
            async move { MemoryQueue::with_clock(c) }
        },
        LeaseTime::Manual(clock),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_queue_conformance() {
    let dir = TempDir::new("queue_conf");
    let n = AtomicUsize::new(0);
    let path = dir.join("conf.db");
    queue_conformance::run_all(
        || {
            let table = format!("t{}", n.fetch_add(1, Ordering::Relaxed));
            let path = path.clone();
            async move {
                let store = SqliteStore::connect(&path)
                    .await
                    .unwrap()
                    .with_table(&table)
                    .unwrap();
                store.migrate().await.unwrap();
                store.queue()
            }
        },
        LeaseTime::Real,
    )
    .await;
}

// ---- ingest ----

#[tokio::test]
async fn ack_fast_queues_once_and_runs_nothing() {
    let queue = MemoryQueue::new();
    let p = Processor::queued(verifier(), queue.clone());
    let body = customer_event("evt_ack_1", "cus_1", testing::now());
    let o = p.process(Some(&signed(&body)), body.as_bytes()).await;
    assert_eq!((o.status(), o.kind().name()), (200, "queued"));
    assert_eq!(o.claim_key().unwrap().as_str(), "evt_ack_1");
    let again = p.process(Some(&signed(&body)), body.as_bytes()).await;
    assert_eq!((again.status(), again.kind().name()), (200, "duplicate"));
    let rec = queue.job(&"evt_ack_1".into()).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Queued);
    assert_eq!(rec.body, body.as_bytes(), "the raw verified body, as sent");

    // A bad signature writes nothing.
    let forged = customer_event("evt_forged", "cus_1", testing::now());
    let bad = testing::sign(forged.as_bytes(), "whsec_wrong", testing::now());
    let o = p.process(Some(&bad), forged.as_bytes()).await;
    assert_eq!(o.status(), 400);
    assert!(queue.job(&"evt_forged".into()).await.unwrap().is_none());
    // Neither does a verified body that is not an event.
    let o = p.process(Some(&signed("{}")), b"{}").await;
    assert_eq!((o.status(), o.kind().name()), (400, "not_an_event"));
    assert_eq!(queue.counts().await.unwrap().queued, 1);
}

#[tokio::test]
async fn ack_fast_keys_thin_events_by_their_snapshot_twin_and_answers_pings() {
    let queue = MemoryQueue::new();
    let p = Processor::queued(verifier(), queue.clone());
    let snapshot = customer_event("evt_twin", "cus_1", testing::now());
    let thin = ThinEventBuilder::new("evt_thin_twin", "v1.customer.updated")
        .related("cus_1", "customer", "/v1/customers/cus_1")
        .snapshot_event("evt_twin")
        .build();
    let o = p.process(Some(&signed(&thin)), thin.as_bytes()).await;
    assert_eq!(o.kind().name(), "queued");
    let o = p
        .process(Some(&signed(&snapshot)), snapshot.as_bytes())
        .await;
    assert_eq!(o.kind().name(), "duplicate", "one job for the change");
    let ping = ThinEventBuilder::new("evt_ping", "v2.core.event_destination.ping").build();
    let o = p.process(Some(&signed(&ping)), ping.as_bytes()).await;
    assert_eq!(o.kind().name(), "ping");
    assert_eq!(queue.counts().await.unwrap().queued, 1);
    // The livemode guard answers without queueing.
    let p = Processor::queued(verifier(), queue.clone()).with_livemode(true);
    let test_mode = customer_event("evt_test_mode", "cus_1", testing::now());
    let o = p
        .process(Some(&signed(&test_mode)), test_mode.as_bytes())
        .await;
    assert_eq!(o.kind().name(), "other_mode");
    assert_eq!(queue.counts().await.unwrap().queued, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_fast_answers_503_when_the_queue_is_down_and_loses_nothing() {
    use stripe_webhooks::sqlx::{Connection, SqliteConnection};
    let dir = TempDir::new("queue_down");
    let queue = sqlite_queue(&dir).await;
    let p =
        Processor::queued(verifier(), queue.clone()).with_store_timeout(Duration::from_millis(300));
    // Another process holds SQLite's write lock: the queue cannot write.
    let mut other =
        SqliteConnection::connect_with(&SqliteStore::connect_options(dir.join("queue.db")))
            .await
            .unwrap();
    stripe_webhooks::sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let body = customer_event("evt_down", "cus_1", testing::now());
    let o = p.process(Some(&signed(&body)), body.as_bytes()).await;
    assert_eq!((o.status(), o.kind().name()), (503, "store_unavailable"));
    stripe_webhooks::sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .unwrap();
    // Stripe delivers it again once the queue is back: queued, or a duplicate if the
    // write that timed out went through after the lock was released. One job either way.
    let o = p.process(Some(&signed(&body)), body.as_bytes()).await;
    assert!(matches!(o.kind().name(), "queued" | "duplicate"), "{o:?}");
    assert_eq!(queue.counts().await.unwrap().queued, 1);
}

// ---- workers ----

/// A handler that always fails: the job goes through its retries, ends dead with its
/// error and body, Stripe's retry of it is a duplicate, and requeued after the fix it
/// completes once.
async fn a_failing_job_retries_then_dies_and_runs_once_after_requeue_on<Q>(queue: Q)
where
    Q: QueueAdmin + Clone,
{
    let p = Processor::queued(verifier(), queue.clone());
    let body = customer_event("evt_dies", "cus_1", testing::now());
    let o = p.process(Some(&signed(&body)), body.as_bytes()).await;
    assert_eq!(o.kind().name(), "queued");
    let handler = Recorder::default();
    handler.fail("evt_dies");
    let worker = Worker::new(queue.clone(), handler.clone()).with_retry(fast_retry(3));
    drain(&worker, &queue).await;
    assert_eq!(handler.seen().len(), 3, "three attempts");
    let dead = queue.jobs(JobState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("handler failed: downstream is down")
    );
    assert_eq!(dead[0].body, body.as_bytes());
    // Stripe's retry of a dead event is a duplicate: the job stays dead for the operator.
    let o = p.process(Some(&signed(&body)), body.as_bytes()).await;
    assert_eq!(o.kind().name(), "duplicate");

    handler.fix();
    assert_eq!(queue.requeue_dead().await.unwrap(), 1);
    drain(&worker, &queue).await;
    assert_eq!(handler.seen().len(), 4, "runs once more after the fix");
    let rec = queue.job(&"evt_dies".into()).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempts), (JobState::Completed, 1));
}

/// A job this version cannot read (here, a kind from a newer release, written by
/// `spoil`) is dead with the reason, and the job taken beside it still runs.
async fn an_unreadable_job_dies_and_its_batch_still_runs_on<Q, F, Fut>(queue: Q, spoil: F)
where
    Q: QueueAdmin + Clone,
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let now = testing::now();
    enqueue_body(&queue, &customer_event("evt_fine", "cus_1", now)).await;
    enqueue_body(&queue, &customer_event("evt_spoilt", "cus_2", now)).await;
    spoil("evt_spoilt".to_owned()).await;
    let handler = Recorder::default();
    let worker = Worker::new(queue.clone(), handler.clone()).with_retry(fast_retry(3));
    drain(&worker, &queue).await;
    assert_eq!(handler.seen(), ["evt_fine"]);
    let dead = queue.jobs(JobState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].key.as_str(), "evt_spoilt");
    assert_eq!(dead[0].kind, "unknown");
    let why = dead[0].last_error.as_deref().unwrap_or_default();
    assert!(why.contains("cannot be read by this version"), "{why}");
    assert_eq!(queue.counts().await.unwrap().completed, 1);
}

/// Three updates of one object, queued out of order, run one at a time in `created`
/// order although the worker could run eight jobs at once.
async fn per_object_order_runs_a_slow_update_before_the_later_one_on<Q>(queue: Q)
where
    Q: QueueAdmin + Clone,
{
    let t = testing::now();
    for (id, created) in [("evt_o2", t + 1), ("evt_o1", t), ("evt_o3", t + 2)] {
        enqueue_body(&queue, &customer_event(id, "cus_ordered", created)).await;
    }
    let handler = Recorder {
        sleep: Some(Duration::from_millis(30)),
        ..Recorder::default()
    };
    let worker = Worker::new(queue.clone(), handler.clone())
        .with_concurrency(8)
        .with_per_object_order(true);
    drain(&worker, &queue).await;
    assert_eq!(handler.seen(), ["evt_o1", "evt_o2", "evt_o3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_retries_then_dies_and_runs_once_after_requeue() {
    let dir = TempDir::new("queue_dead");
    a_failing_job_retries_then_dies_and_runs_once_after_requeue_on(sqlite_queue(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_job_dies_and_its_batch_still_runs() {
    let dir = TempDir::new("queue_unreadable");
    let queue = sqlite_queue(&dir).await;
    let pool = queue.pool().clone();
    an_unreadable_job_dies_and_its_batch_still_runs_on(queue, |key| async move {
        stripe_webhooks::sqlx::query(
            "UPDATE stripe_webhook_events_jobs SET kind = 'future' WHERE job_key = ?1",
        )
        .bind(key)
        .execute(&pool)
        .await
        .unwrap();
    })
    .await;
}

/// A job row whose key or attempts cannot be read (a key written as a BLOB, attempts
/// past `i64` once the take counts one more, which SQLite makes a REAL) dies by its
/// `seq` with the reason, and the listings show it: it was taken and skipped at each
/// lease's end, never run nor dead, holding its object's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_row_without_a_readable_key_or_attempts_dies() {
    let dir = TempDir::new("queue_unnamed");
    let queue = sqlite_queue(&dir).await;
    let now = testing::now();
    for id in ["evt_fine", "evt_attempts", "evt_blob"] {
        enqueue_body(&queue, &customer_event(id, "cus_1", now)).await;
    }
    enqueue_body(&queue, &customer_event("evt_later", "cus_1", now + 1)).await;
    for spoil in [
        "UPDATE stripe_webhook_events_jobs SET attempts = 9223372036854775807 WHERE job_key = 'evt_attempts'",
        "UPDATE stripe_webhook_events_jobs SET job_key = CAST(job_key AS BLOB) \
         WHERE job_key = 'evt_blob'",
    ] {
        stripe_webhooks::sqlx::query(spoil)
            .execute(queue.pool())
            .await
            .unwrap();
    }
    let handler = Recorder::default();
    let worker = Worker::new(queue.clone(), handler.clone())
        .with_retry(fast_retry(3))
        .with_per_object_order(true);
    drain(&worker, &queue).await;
    assert_eq!(handler.seen(), ["evt_fine", "evt_later"]);
    let counts = queue.counts().await.unwrap();
    assert_eq!(
        (counts.completed, counts.dead, counts.running),
        (2, 2, 0),
        "{counts:?}"
    );
    let dead = queue.jobs(JobState::Dead, 10).await.unwrap();
    let keys: Vec<&str> = dead.iter().map(|j| j.key.as_str()).collect();
    assert_eq!(keys, ["evt_attempts", "evt_blob"], "{dead:?}");
    for job in &dead {
        let why = job.last_error.as_deref().unwrap_or_default();
        assert!(why.contains("cannot be read by this version"), "{why}");
    }
}

/// A dead job says why down to the root cause: a handler's error with context (as
/// `anyhow`'s `.context(…)` makes) keeps its source's text, which its own leaves out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_keeps_its_errors_root_cause() {
    #[derive(Debug, thiserror::Error)]
    #[error("could not sync the customer")]
    struct Context(#[source] std::io::Error);
    struct Failing;
    #[async_trait]
    impl EventHandler for Failing {
        async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
            let root = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "db down");
            Err(HandlerError::new(Context(root)))
        }
    }
    let queue = MemoryQueue::new();
    let body = customer_event("evt_root_cause", "cus_1", testing::now());
    enqueue_body(&queue, &body).await;
    let worker = Worker::new(queue.clone(), Failing).with_retry(fast_retry(1));
    drain(&worker, &queue).await;
    let rec = queue.job(&"evt_root_cause".into()).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Dead);
    assert_eq!(
        rec.last_error.as_deref(),
        Some("handler failed: could not sync the customer: db down")
    );
}

/// A job taken more often than its attempts allow (its last run's worker died) is dead
/// saying so and keeping the error its earlier runs recorded, which the dead record's
/// reason used to replace (and which said no run had settled, though two had).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_taken_too_often_dies_keeping_its_last_error() {
    struct Failing;
    #[async_trait]
    impl EventHandler for Failing {
        async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
            Err(HandlerError::new("the plan is missing"))
        }
    }
    let queue = MemoryQueue::new();
    let body = customer_event("evt_taken_often", "cus_1", testing::now());
    enqueue_body(&queue, &body).await;
    let worker = Worker::new(queue.clone(), Failing).with_retry(fast_retry(3));
    for _ in 0..2 {
        assert_eq!(worker.run_once().await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(60)).await; // past the retry's delay
    }
    // The third attempt's worker dies: its lease ends with nothing settled.
    let taken = queue
        .take(1, Duration::from_millis(1), false)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    drop(taken);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let rec = queue.job(&"evt_taken_often".into()).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempts), (JobState::Dead, 4), "{rec:?}");
    let why = rec.last_error.unwrap_or_default();
    assert!(why.contains("taken 4 times"), "{why}");
    assert!(why.contains("the plan is missing"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_deadlines_are_failures_and_bodies_that_are_not_events_die_at_once() {
    let queue = MemoryQueue::new();
    let body = customer_event("evt_panic", "cus_1", testing::now());
    enqueue_body(&queue, &body).await;
    let handler = Recorder {
        panics: true,
        ..Recorder::default()
    };
    let worker = Worker::new(queue.clone(), handler).with_retry(fast_retry(1));
    drain(&worker, &queue).await;
    let rec = queue.job(&"evt_panic".into()).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Dead);
    let why = rec.last_error.unwrap();
    assert!(why.contains("panicked on purpose with <redacted>"), "{why}");

    let body = customer_event("evt_slow", "cus_1", testing::now());
    enqueue_body(&queue, &body).await;
    let slow = Recorder {
        sleep: Some(Duration::from_secs(5)),
        ..Recorder::default()
    };
    let worker = Worker::new(queue.clone(), slow)
        .with_retry(fast_retry(1))
        .with_deadline(Some(Duration::from_millis(50)));
    drain(&worker, &queue).await;
    let rec = queue.job(&"evt_slow".into()).await.unwrap().unwrap();
    assert!(rec.last_error.unwrap().contains("deadline"));

    let mut job = NewJob::parse(body.as_bytes()).unwrap();
    job.key = "evt_garbage".into();
    job.body = b"not json";
    queue.enqueue(&job).await.unwrap();
    let worker = Worker::new(queue.clone(), Recorder::default()).with_retry(fast_retry(5));
    drain(&worker, &queue).await;
    let rec = queue.job(&"evt_garbage".into()).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempts), (JobState::Dead, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_jobs_need_a_thin_handler_and_are_kept_until_one_is_added() {
    let queue = MemoryQueue::new();
    let p = Processor::queued(verifier(), queue.clone());
    let thin = ThinEventBuilder::new("evt_thin_job", "v1.customer.updated")
        .related("cus_1", "customer", "/v1/customers/cus_1")
        .build();
    p.process(Some(&signed(&thin)), thin.as_bytes()).await;
    let handler = Recorder::default();
    let worker = Worker::new(queue.clone(), handler.clone());
    drain(&worker, &queue).await;
    let rec = queue.job(&"evt_thin_job".into()).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Dead);
    assert!(rec.last_error.unwrap().contains("with_thin_handler"));
    let worker = worker.with_thin_handler(handler.clone());
    assert!(queue.requeue(&"evt_thin_job".into()).await.unwrap());
    drain(&worker, &queue).await;
    assert_eq!(handler.seen(), ["evt_thin_job"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_types_complete_without_running() {
    let queue = MemoryQueue::new();
    let body = customer_event("evt_unrouted", "cus_1", testing::now());
    enqueue_body(&queue, &body).await;
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    let router = EventRouter::new().on(stripe_webhooks::EventType::InvoicePaid, move |_e| {
        r.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    });
    drain(&Worker::new(queue.clone(), router), &queue).await;
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(queue.counts().await.unwrap().completed, 1);
}

/// A test on tokio's paused clock that has let it run ahead (ten minutes here) before a
/// worker takes a job whose handler outlasts the lease: the run completes, its lease
/// renewed on tokio's clock. The worker counted the lease on the system's clock, which a
/// paused runtime leaves behind: in tokio's time the lease had ended before the run
/// started, and the run was stopped as lost at once.
#[tokio::test(start_paused = true)]
async fn a_worker_on_a_paused_clock_that_ran_ahead_renews_on_it() {
    tokio::time::sleep(Duration::from_secs(600)).await;
    let queue = MemoryQueue::new();
    let body = customer_event("evt_paused", "cus_1", testing::now());
    enqueue_body(&queue, &body).await;
    let slow = Recorder {
        sleep: Some(Duration::from_secs(10)),
        ..Recorder::default()
    };
    let worker = Worker::new(queue.clone(), slow.clone())
        .with_deadline(None)
        .with_lease(Duration::from_secs(3));
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(slow.seen(), ["evt_paused"]);
    let rec = queue.job(&"evt_paused".into()).await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.attempts),
        (JobState::Completed, 1),
        "{rec:?}"
    );
}

// Tokio's clock is paused (it moves on only when every task waits), so the worker's
// renewals and its handler's sleep land at their times however loaded the machine: on
// real time, a renewal falling between the test's clock move and its take renewed the
// lapsed lease, and the take found nothing.
#[tokio::test(start_paused = true)]
async fn a_worker_that_loses_its_lease_is_stopped_and_its_job_taken_over() {
    // The queue judges leases by a clock the test moves; the worker renews on tokio's.
    let clock = stripe_webhooks::ManualClock::new(1_700_000_000_000);
    let queue = MemoryQueue::with_clock(clock.clone());
    let body = customer_event("evt_lease", "cus_1", testing::now());
    enqueue_body(&queue, &body).await;
    let slow = Recorder {
        sleep: Some(Duration::from_secs(2)),
        ..Recorder::default()
    };
    let handle = Worker::new(queue.clone(), slow.clone())
        .with_deadline(None)
        .with_lease(Duration::from_secs(3))
        .with_poll_interval(Duration::from_millis(10))
        .spawn();
    wait_running(&queue, 1).await;
    // The lease runs out in the queue's eyes, and another worker takes the job over.
    clock.advance(Duration::from_secs(10));
    let taken = queue.take(1, Duration::from_secs(60), false).await.unwrap();
    assert_eq!(taken.len(), 1, "the job was not taken over");
    // The first worker's next renewal (at 1 s) finds the lease lost and stops its
    // handler, which would otherwise finish at 2 s (before its own lease, renewed or
    // not, would stop it at 2.7 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        slow.seen().is_empty(),
        "the stopped handler ran on: {:?}",
        slow.seen()
    );
    queue.complete(&taken[0].token).await.unwrap();
    let rec = queue.job(&"evt_lease".into()).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempts), (JobState::Completed, 2));
    handle.shutdown(Duration::from_secs(1)).await;
}

/// A job whose renewals fail is stopped before its lease can run out, and counted a
/// failed run (fenced: only while the job is still the worker's), retried by the policy:
/// it stayed running to its lease's end, and a handler that always outlasts its lease
/// ran again and again, never dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_renewals_fail_is_a_failed_run_and_dies_in_the_end() {
    let queue = MemoryQueue::new();
    enqueue_body(&queue, &customer_event("evt_unrenewed", "cus_1", 1)).await;
    let slow = Recorder {
        sleep: Some(Duration::from_secs(60)),
        ..Recorder::default()
    };
    let no_renewals = Faulty {
        no_renewals: true,
        ..Faulty::over(&queue)
    };
    let handle = Worker::new(no_renewals, slow.clone())
        .with_deadline(None)
        .with_lease(Duration::from_millis(300))
        .with_retry(fast_retry(3))
        .with_poll_interval(Duration::from_millis(10))
        .spawn();
    let mut dead = false;
    for _ in 0..200 {
        if queue.counts().await.unwrap().dead == 1 {
            dead = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown(Duration::from_secs(1)).await;
    assert!(dead, "{:?}", queue.counts().await.unwrap());
    let rec = queue.job(&"evt_unrenewed".into()).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempts), (JobState::Dead, 3));
    let why = rec.last_error.unwrap_or_default();
    assert!(why.contains("lease was lost"), "{why}");
    assert!(slow.seen().is_empty(), "no run finished: {:?}", slow.seen());
}

/// A renewal that failed is tried again a quarter of the renewal period on, not a whole
/// one: two failed renewals (at 400 and 500 ms of a 1.2 s lease) do not cut a handler of
/// 1.5 s, whose lease the third renewal (600 ms) moves on. Before, the third renewal
/// was due at 1.2 s, after the cut at nine tenths of the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_is_tried_again_soon() {
    let queue = MemoryQueue::new();
    enqueue_body(&queue, &customer_event("evt_renewed_late", "cus_1", 1)).await;
    let slow = Recorder {
        sleep: Some(Duration::from_millis(1500)),
        ..Recorder::default()
    };
    let flaky = Faulty::over(&queue);
    flaky
        .failed_renewals
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let handle = Worker::new(flaky, slow.clone())
        .with_deadline(None)
        .with_lease(Duration::from_millis(1200))
        .with_retry(fast_retry(3))
        .with_poll_interval(Duration::from_millis(10))
        .spawn();
    let mut done = false;
    for _ in 0..100 {
        if queue.counts().await.unwrap().completed == 1 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown(Duration::from_secs(1)).await;
    let rec = queue
        .job(&"evt_renewed_late".into())
        .await
        .unwrap()
        .unwrap();
    assert!(done, "{rec:?}");
    assert_eq!((rec.state, rec.attempts), (JobState::Completed, 1));
}

/// A renewal of no time at all still holds the job a millisecond, as a take does: a
/// lease that ended as it was renewed would let a take run the job beside its holder.
#[tokio::test]
async fn a_zero_renewal_still_holds_the_job() {
    let clock = stripe_webhooks::ManualClock::new(1_700_000_000_000);
    let queue = MemoryQueue::with_clock(clock.clone());
    enqueue_body(&queue, &customer_event("evt_zero", "cus_1", 1)).await;
    let taken = queue.take(1, Duration::from_secs(60), false).await.unwrap();
    queue.extend(&taken[0].token, Duration::ZERO).await.unwrap();
    let again = queue.take(1, Duration::from_secs(60), false).await.unwrap();
    assert!(again.is_empty(), "taken beside its holder: {again:?}");
    clock.advance(Duration::from_millis(1));
    let again = queue.take(1, Duration::from_secs(60), false).await.unwrap();
    assert_eq!(again.len(), 1, "the renewed lease ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_short_jobs_and_releases_long_ones() {
    let queue = MemoryQueue::new();
    for (i, _) in (0..2).enumerate() {
        let body = customer_event(&format!("evt_shutdown_{i}"), &format!("cus_{i}"), 1);
        enqueue_body(&queue, &body).await;
    }
    let slow = Recorder {
        sleep: Some(Duration::from_secs(30)),
        ..Recorder::default()
    };
    let handle = Worker::new(queue.clone(), slow)
        .with_poll_interval(Duration::from_millis(10))
        .spawn();
    wait_running(&queue, 2).await;
    let started = std::time::Instant::now();
    handle.shutdown(Duration::from_millis(100)).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let c = queue.counts().await.unwrap();
    assert_eq!((c.queued, c.running), (2, 0), "released, not lost");
    for i in 0..2 {
        let rec = queue
            .job(&format!("evt_shutdown_{i}").into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.attempts, 0, "a released run does not count");
    }

    // Jobs in hand that finish within the grace are finished, not released.
    let short = Recorder {
        sleep: Some(Duration::from_millis(300)),
        ..Recorder::default()
    };
    let handle = Worker::new(queue.clone(), short)
        .with_poll_interval(Duration::from_millis(10))
        .spawn();
    wait_running(&queue, 2).await;
    handle.shutdown(Duration::from_secs(5)).await;
    let c = queue.counts().await.unwrap();
    assert_eq!((c.completed, c.queued, c.running), (2, 0, 0), "{c:?}");
}

/// A handler whose `handles_event` check panics: the job is dead at once, saying so,
/// instead of the worker's task dying with it (the job then sat running until its lease
/// ended, an attempt counted at each take, and died as "no run settled").
#[tokio::test]
async fn a_panicking_handles_check_makes_the_job_dead_with_why() {
    struct Picky;
    #[async_trait]
    impl EventHandler for Picky {
        async fn handle(&self, _: &Event) -> Result<(), HandlerError> {
            Ok(())
        }
        fn handles_event(&self, event: &Event) -> bool {
            assert!(event.id().as_str() != "evt_bad", "no such customer tier");
            true
        }
    }
    let queue = MemoryQueue::new();
    for id in ["evt_bad", "evt_good"] {
        let body = customer_event(id, &format!("cus_{id}"), 1);
        queue
            .enqueue(&NewJob::parse(body.as_bytes()).unwrap())
            .await
            .unwrap();
    }
    let worker = Worker::new(queue.clone(), Picky);
    worker.run_once().await.unwrap();
    let bad = queue.job(&"evt_bad".into()).await.unwrap().unwrap();
    assert_eq!(bad.state, JobState::Dead, "{bad:?}");
    let why = bad.last_error.unwrap_or_default();
    assert!(
        why.contains("handles_event check panicked") && why.contains("no such customer tier"),
        "{why}"
    );
    let good = queue.job(&"evt_good".into()).await.unwrap().unwrap();
    assert_eq!(good.state, JobState::Completed);
}

/// An idle worker on a queue without wakeups (it sleeps its poll interval between
/// takes) stops at once when asked: the sleep races the stop signal. Before, a worker
/// polling hourly took up to an hour to shut down, past any grace.
#[tokio::test]
async fn an_idle_worker_stops_without_waiting_out_its_poll_interval() {
    let queue = MemoryQueue::new();
    let handle = Worker::new(queue.clone(), Recorder::default())
        .with_poll_interval(Duration::from_secs(3600))
        .spawn();
    // Let it find the queue empty and go to sleep.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(
        Duration::from_secs(60),
        handle.shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("shutdown returned within a minute, not an hour");
}

/// Waits (at most 2 s) until `n` jobs are running.
async fn wait_running(queue: &MemoryQueue, n: u64) {
    for _ in 0..200 {
        if queue.counts().await.unwrap().running == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} jobs never ran: {:?}", queue.counts().await.unwrap());
}

/// How many of the SQL queue `q`'s jobs are parked (`run_at` moved 10^15 ms ahead): a
/// closure whose future reads the count, on a clone of the queue's pool.
macro_rules! parked_jobs {
    ($q:expr) => {{
        let pool = $q.pool().clone();
        let sql = format!(
            "SELECT count(*) FROM {} WHERE run_at >= 1000000000000000",
            $q.table()
        );
        move || {
            let (pool, sql) = (pool.clone(), sql.clone());
            async move {
                stripe_webhooks::sqlx::query_scalar::<_, i64>(&sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        }
    }};
}

/// A backlog of one object held back behind its first job is parked by a take in
/// per-object order that reads past it (here every such take parks:
/// `with_parking_after(Duration::ZERO)`), so later takes do not read it again, and is
/// woken one job at a time as the jobs before it complete or die. Parked jobs are
/// listed and counted as they were queued. (`parked` counts the parked rows.)
async fn held_back_jobs_are_parked_until_their_turn_on<Q, F, Fut>(q: Q, parked: F)
where
    Q: QueueAdmin,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    const BACKLOG: i64 = 40;
    const LONG: Duration = Duration::from_secs(600);
    let job = queue_conformance::job;
    let keys = |jobs: &[stripe_webhooks::queue::Job]| -> Vec<String> {
        jobs.iter().map(|j| j.key().as_str().to_owned()).collect()
    };
    q.enqueue(&job("evt_head", Some("cus_park"), 1, b"{}"))
        .await
        .unwrap();
    for i in 0..BACKLOG {
        let key = format!("evt_next_{i:02}");
        q.enqueue(&job(&key, Some("cus_park"), 2 + i, b"{}"))
            .await
            .unwrap();
    }
    q.enqueue(&job("evt_free", Some("cus_free"), 1, b"{}"))
        .await
        .unwrap();
    let head = q.take(1, LONG, true).await.unwrap();
    assert_eq!(keys(&head), ["evt_head"]);
    assert_eq!(parked().await, BACKLOG, "the backlog read past is parked");
    q.fail(&head[0].token, "down", Some(LONG)).await.unwrap();
    let free = q.take(10, LONG, true).await.unwrap();
    assert_eq!(keys(&free), ["evt_free"]);
    assert_eq!(parked().await, BACKLOG);
    let counts = q.counts().await.unwrap();
    assert_eq!(counts.queued, BACKLOG as u64);
    let age = counts.oldest_queued_age_ms.unwrap();
    assert!(
        age < 600_000,
        "the oldest queued job's age, parked: {age} ms"
    );
    let listed = q.jobs(JobState::Queued, 100).await.unwrap();
    assert_eq!(listed.len(), BACKLOG as usize);
    let now_ms = testing::now() * 1000;
    for r in &listed {
        let run_at = r.run_at_ms.unwrap();
        assert!(
            run_at <= now_ms + 1000,
            "{}: listed as due at {run_at}",
            r.key
        );
    }
    q.complete(&free[0].token).await.unwrap();
    assert!(q.take(10, LONG, true).await.unwrap().is_empty());

    // The first job's retry comes (requeued by hand): it runs, then each job after it
    // in turn, whether the one before completed or died.
    assert!(q
        .requeue(&stripe_webhooks::EventId::new("evt_head"))
        .await
        .unwrap());
    let head = q.take(10, LONG, true).await.unwrap();
    assert_eq!(keys(&head), ["evt_head"]);
    q.complete(&head[0].token).await.unwrap();
    for i in 0..BACKLOG {
        let next = q.take(10, LONG, true).await.unwrap();
        assert_eq!(keys(&next), [format!("evt_next_{i:02}")]);
        assert_eq!(parked().await, BACKLOG - 1 - i, "one job woken at a time");
        if i == BACKLOG / 2 {
            q.fail(&next[0].token, "gave up", None).await.unwrap();
        } else {
            q.complete(&next[0].token).await.unwrap();
        }
    }
    let counts = q.counts().await.unwrap();
    assert_eq!(
        (counts.queued, counts.completed, counts.dead),
        (0, BACKLOG as u64 + 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_back_jobs_are_parked_until_their_turn() {
    let dir = TempDir::new("queue_park");
    let q = sqlite_queue(&dir).await.with_parking_after(Duration::ZERO);
    let parked = parked_jobs!(q);
    held_back_jobs_are_parked_until_their_turn_on(q, parked).await;
}

/// A schema without the trigger that wakes parked jobs (its migration not applied yet):
/// nothing is parked, since nothing would wake it, and the jobs run in order as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_parked_before_the_wake_trigger_is_in_the_database() {
    const LONG: Duration = Duration::from_secs(600);
    let job = queue_conformance::job;
    let dir = TempDir::new("queue_park_unready");
    let q = sqlite_queue(&dir).await.with_parking_after(Duration::ZERO);
    stripe_webhooks::sqlx::query(&format!("DROP TRIGGER {}_wake", q.table()))
        .execute(q.pool())
        .await
        .unwrap();
    for (i, key) in ["evt_first", "evt_second", "evt_third"].iter().enumerate() {
        let created = i64::try_from(i).unwrap();
        q.enqueue(&job(key, Some("cus_unready"), created, b"{}"))
            .await
            .unwrap();
    }
    q.enqueue(&job("evt_free", Some("cus_free"), 9, b"{}"))
        .await
        .unwrap();
    let count = parked_jobs!(q);
    let mut order = Vec::new();
    for _ in 0..4 {
        let jobs = q.take(1, LONG, true).await.unwrap();
        assert_eq!(count().await, 0, "a job parked with nothing to wake it");
        order.push(jobs[0].key().as_str().to_owned());
        q.complete(&jobs[0].token).await.unwrap();
    }
    assert_eq!(order, ["evt_first", "evt_second", "evt_third", "evt_free"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_object_order_runs_a_slow_update_before_the_later_one() {
    let dir = TempDir::new("queue_order");
    per_object_order_runs_a_slow_update_before_the_later_one_on(sqlite_queue(&dir).await).await;
}

/// Inbox mode: the handler's writes and the completion commit together; a failed
/// handler's writes roll back.
struct Ledger;

#[async_trait]
impl stripe_webhooks::TransactionalHandler<stripe_webhooks::sqlx::Sqlite> for Ledger {
    async fn handle(
        &self,
        event: &Event,
        conn: &mut stripe_webhooks::sqlx::SqliteConnection,
    ) -> Result<(), HandlerError> {
        stripe_webhooks::sqlx::query("INSERT INTO ledger (event_id) VALUES (?1)")
            .bind(event.id().as_str())
            .execute(&mut *conn)
            .await
            .map_err(HandlerError::new)?;
        if event.id().as_str().contains("fail") {
            return Err(HandlerError::new("refused after writing"));
        }
        Ok(())
    }
}

/// An inbox worker's thin handler names its routes to thin types newer than this
/// release in the worker's `enabled_events`, as a plain worker's does (they were left
/// out: the inbox runner's wrapper did not pass them on, and a thin router with only
/// such routes made the list empty, so a reconciler listed no thin events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_workers_thin_routes_to_new_types_are_enabled() {
    let dir = TempDir::new("queue_inbox_thin_types");
    let queue = sqlite_queue(&dir).await;
    let thin = stripe_webhooks::ThinEventRouter::new().on(
        stripe_webhooks::ThinEventType::from_wire("v2.core.brand_new_thing.updated"),
        |_n| Box::pin(async { Ok(()) }),
    );
    let worker = queue.inbox_worker(Ledger).with_thin_handler(thin);
    assert_eq!(
        worker.enabled_events().thin,
        ["v2.core.brand_new_thing.updated"]
    );
}

/// An inbox worker's handler that names types newer than this release
/// (`TransactionalHandler::unknown_types`) has them in the worker's `enabled_events`, so
/// a reconciler lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_workers_unknown_types_are_enabled() {
    struct NewTypes;
    #[async_trait]
    impl stripe_webhooks::TransactionalHandler<stripe_webhooks::sqlx::Sqlite> for NewTypes {
        async fn handle(
            &self,
            _event: &Event,
            _conn: &mut stripe_webhooks::sqlx::SqliteConnection,
        ) -> Result<(), HandlerError> {
            Ok(())
        }
        fn handles(&self, t: &stripe_webhooks::EventType) -> bool {
            matches!(t.as_str(), "invoice.paid" | "invoice.brand_new_thing")
        }
        fn unknown_types(&self) -> Vec<String> {
            vec!["invoice.brand_new_thing".to_owned()]
        }
    }
    let dir = TempDir::new("queue_inbox_unknown_types");
    let queue = sqlite_queue(&dir).await;
    let mut enabled = queue.inbox_worker(NewTypes).enabled_events().snapshot;
    enabled.sort();
    assert_eq!(enabled, ["invoice.brand_new_thing", "invoice.paid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_inbox_worker_commits_effects_with_the_completion() {
    let dir = TempDir::new("queue_inbox");
    let queue = sqlite_ledger_queue(&dir).await;
    for id in ["evt_inbox_ok", "evt_inbox_fail"] {
        let body = customer_event(id, "cus_1", 1);
        enqueue_body(&queue, &body).await;
    }
    let worker = queue.inbox_worker(Ledger).with_retry(fast_retry(2));
    drain(&worker, &queue).await;
    let rows = ledger(&queue).await;
    assert_eq!(
        rows,
        ["evt_inbox_ok"],
        "the failed handler's writes rolled back"
    );
    let c = queue.counts().await.unwrap();
    assert_eq!((c.completed, c.dead), (1, 1));
}

/// An inbox handler stopped at its deadline in the middle of a SQLite statement: the
/// statement is stopped too, so the rollback does not wait behind it (it ran on in the
/// driver's thread for as long as it took, holding the job's slot) and the run ends soon
/// after the deadline, failed, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_inbox_statement_cut_at_the_deadline_is_stopped() {
    struct LongStatement;
    #[async_trait]
    impl stripe_webhooks::TransactionalHandler<stripe_webhooks::sqlx::Sqlite> for LongStatement {
        async fn handle(
            &self,
            _: &Event,
            conn: &mut stripe_webhooks::sqlx::SqliteConnection,
        ) -> Result<(), HandlerError> {
            common::read_for_minutes(conn).await
        }
    }
    let dir = TempDir::new("queue_inbox_cut");
    let queue = sqlite_queue(&dir).await;
    enqueue_body(&queue, &customer_event("evt_cut", "cus_1", 1)).await;
    // The statement would run for minutes.
    assert_cut_at_its_deadline(queue.inbox_worker(LongStatement), &queue).await;
}

/// An inbox run the worker stops (its shutdown grace over) in the middle of a SQLite
/// statement, after the handler wrote: the statement is stopped and its connection
/// closed, so the write lock is let go and the job is given back (queued, no attempt
/// counted). Before, the statement ran on in the driver's thread holding the lock, the
/// release waited behind it and failed, and the job stayed running until its lease
/// ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_inbox_run_stopped_mid_statement_lets_the_lock_go() {
    /// Writes its ledger row (taking the write lock), says so, then reads for minutes.
    struct WritesThenReads(Arc<tokio::sync::Notify>);
    #[async_trait]
    impl stripe_webhooks::TransactionalHandler<stripe_webhooks::sqlx::Sqlite> for WritesThenReads {
        async fn handle(
            &self,
            event: &Event,
            conn: &mut stripe_webhooks::sqlx::SqliteConnection,
        ) -> Result<(), HandlerError> {
            Ledger.handle(event, conn).await?;
            self.0.notify_one();
            common::read_for_minutes(conn).await
        }
    }
    let dir = TempDir::new("queue_inbox_stopped");
    let queue = sqlite_ledger_queue(&dir).await;
    enqueue_body(&queue, &customer_event("evt_stopped", "cus_1", 1)).await;
    let wrote = Arc::new(tokio::sync::Notify::new());
    let worker = queue
        .inbox_worker(WritesThenReads(Arc::clone(&wrote)))
        .with_deadline(None)
        .with_poll_interval(Duration::from_millis(20))
        .spawn();
    tokio::time::timeout(Duration::from_secs(10), wrote.notified())
        .await
        .expect("the handler never wrote");
    let stopped = tokio::time::timeout(
        Duration::from_secs(30),
        worker.shutdown(Duration::from_millis(300)),
    );
    stopped.await.expect("the worker did not stop");
    let job = queue.job(&"evt_stopped".into()).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Queued, 0), "{job:?}");
    assert!(
        ledger(&queue).await.is_empty(),
        "the stopped run's write stayed"
    );
}

/// Runs one job with `worker` under a 300 ms deadline: the run ends within 4 s (not
/// waiting for the statement the deadline cut: PostgreSQL's ends a second after the
/// deadline, SQLite's is stopped at once; a SQLite stop that did not work would wait
/// 5 s for the statement, then close its connection), and the job is retrying, with an
/// error naming the deadline.
async fn assert_cut_at_its_deadline(worker: Worker, queue: &impl QueueAdmin) {
    let worker = worker
        .with_deadline(Some(Duration::from_millis(300)))
        .with_retry(fast_retry(2));
    let run = tokio::spawn(async move { worker.run_once().await });
    let ran = tokio::time::timeout(Duration::from_secs(4), run).await;
    assert!(ran.is_ok(), "the run waited for the statement it cut");
    let retrying = queue.jobs(JobState::Retrying, 10).await.unwrap();
    assert_eq!(retrying.len(), 1, "{retrying:?}");
    let why = retrying[0].last_error.clone().unwrap_or_default();
    assert!(why.contains("deadline"), "{why}");
}

/// A handler whose write made SQLite roll the whole transaction back (`INSERT OR
/// ROLLBACK` on a conflict), and which hid the error and returned `Ok`, does not complete
/// its job: the completion would have committed on its own, outside any transaction,
/// with the handler's writes gone. The job is retried, and dead with why in the end. One
/// that also writes on after the rollback keeps none of it: each of those writes would
/// have committed on its own, at every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_inbox_worker_never_completes_a_job_whose_transaction_rolled_back() {
    struct HidesRollback;
    #[async_trait]
    impl stripe_webhooks::TransactionalHandler<stripe_webhooks::sqlx::Sqlite> for HidesRollback {
        async fn handle(
            &self,
            event: &Event,
            conn: &mut stripe_webhooks::sqlx::SqliteConnection,
        ) -> Result<(), HandlerError> {
            let insert = "INSERT OR ROLLBACK INTO unique_ledger (event_id) VALUES (?1)";
            for _ in 0..2 {
                // The second conflicts and rolls the transaction back; ignored.
                let _ = stripe_webhooks::sqlx::query(insert)
                    .bind(event.id().as_str())
                    .execute(&mut *conn)
                    .await;
            }
            if event.id().as_str().ends_with("_writes_on") {
                let late = "INSERT INTO late_ledger (event_id) VALUES (?1)";
                let _ = stripe_webhooks::sqlx::query(late)
                    .bind(event.id().as_str())
                    .execute(&mut *conn)
                    .await;
            }
            Ok(())
        }
    }
    let dir = TempDir::new("queue_inbox_rolled_back");
    let queue = sqlite_queue(&dir).await;
    stripe_webhooks::sqlx::query("CREATE TABLE unique_ledger (event_id TEXT PRIMARY KEY)")
        .execute(queue.pool())
        .await
        .unwrap();
    stripe_webhooks::sqlx::query("CREATE TABLE late_ledger (event_id TEXT)")
        .execute(queue.pool())
        .await
        .unwrap();
    enqueue_body(&queue, &customer_event("evt_rolled_back", "cus_1", 1)).await;
    enqueue_body(&queue, &customer_event("evt_writes_on", "cus_2", 1)).await;
    let worker = queue.inbox_worker(HidesRollback).with_retry(fast_retry(2));
    drain(&worker, &queue).await;
    let c = queue.counts().await.unwrap();
    assert_eq!((c.completed, c.dead), (0, 2), "{c:?}");
    // Seen as the rollback happens (a rollback hook), not only at the completion.
    for key in ["evt_rolled_back", "evt_writes_on"] {
        let dead = queue.job(&key.into()).await.unwrap().unwrap();
        let error = dead.last_error.as_deref().unwrap_or_default();
        assert!(
            error.contains("transaction was lost while it ran")
                && error.contains("nothing it wrote was kept"),
            "{key}: {error}"
        );
    }
    let late: Vec<String> = stripe_webhooks::sqlx::query_scalar("SELECT event_id FROM late_ledger")
        .fetch_all(queue.pool())
        .await
        .unwrap();
    assert!(late.is_empty(), "{late:?}");
    let rows: Vec<String> =
        stripe_webhooks::sqlx::query_scalar("SELECT event_id FROM unique_ledger")
            .fetch_all(queue.pool())
            .await
            .unwrap();
    assert!(rows.is_empty(), "{rows:?}");
}

/// Durations too large for a clock or a database column are taken as the largest the
/// worker allows: the jobs still run, fail into `retrying` and complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_durations_too_large_for_the_database_as_its_limits() {
    let dir = TempDir::new("queue_huge_durations");
    let queue = sqlite_queue(&dir).await;
    enqueue_body(&queue, &customer_event("evt_huge_ok", "cus_1", 1)).await;
    enqueue_body(&queue, &customer_event("evt_huge_fail", "cus_2", 1)).await;
    let handler = Recorder::default();
    handler.fail("evt_huge_fail");
    let policy = RetryPolicy::new(3, Duration::MAX, Duration::MAX).with_jitter(0.0);
    assert_eq!(policy.delay_after(1), Some(MAX_RETRY_DELAY));
    let worker = Worker::new(queue.clone(), handler.clone())
        .with_lease(Duration::MAX)
        .with_deadline(Some(Duration::MAX))
        .with_retry(policy);
    worker.run_once().await.unwrap();
    let c = queue.counts().await.unwrap();
    assert_eq!((c.completed, c.retrying, c.dead), (1, 1, 0), "{c:?}");
    let retrying = queue.jobs(JobState::Retrying, 10).await.unwrap();
    let wait = retrying[0].run_at_ms.unwrap() - retrying[0].enqueued_at_ms;
    let year_ms = i64::try_from(MAX_RETRY_DELAY.as_millis()).unwrap();
    assert!(
        (year_ms - 60_000..=year_ms + 60_000).contains(&wait),
        "{wait}"
    );
}

/// `run_once` dropped while its jobs run (a timeout around it, as a scheduler puts one)
/// does not cut them: each runs to its end and is completed, once. They were cut, and
/// waited as running until their lease ended, an attempt spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_dropped_mid_handler_still_finishes_its_jobs() {
    let queue = MemoryQueue::new();
    enqueue_body(&queue, &customer_event("evt_cut_run_a", "cus_1", 1)).await;
    enqueue_body(&queue, &customer_event("evt_cut_run_b", "cus_2", 1)).await;
    let handler = Recorder {
        sleep: Some(Duration::from_millis(300)),
        ..Recorder::default()
    };
    let worker = Worker::new(queue.clone(), handler.clone()).with_lease(Duration::from_secs(600));
    let cut = tokio::time::timeout(Duration::from_millis(50), worker.run_once()).await;
    assert!(cut.is_err(), "the timeout came first: {cut:?}");
    let started = std::time::Instant::now();
    loop {
        let c = queue.counts().await.unwrap();
        if c.completed == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the jobs were cut: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen = handler.seen();
    seen.sort();
    assert_eq!(seen, ["evt_cut_run_a", "evt_cut_run_b"]);
}

/// A zero lease lasts a millisecond on the memory queue, as on the others: ending as it
/// is taken, it let a second take in the same millisecond take the running job again.
#[tokio::test]
async fn a_zero_lease_still_keeps_a_job_from_a_second_take() {
    let clock = ManualClock::new(1_700_000_000_000);
    let queue = MemoryQueue::with_clock(clock.clone());
    enqueue_body(&queue, &customer_event("evt_zero_lease", "cus_1", 1)).await;
    assert_eq!(queue.take(1, Duration::ZERO, false).await.unwrap().len(), 1);
    assert!(queue
        .take(1, Duration::ZERO, false)
        .await
        .unwrap()
        .is_empty());
    clock.advance(Duration::from_millis(1));
    assert_eq!(queue.take(1, Duration::ZERO, false).await.unwrap().len(), 1);
}

/// A store timeout of zero is taken as the floor (10 ms): as given, every queue call
/// that does not answer at its first poll, as a networked queue's never does, would time
/// out, and no job ever be taken or completed.
#[tokio::test]
async fn a_worker_with_a_zero_store_timeout_still_runs_its_jobs() {
    let queue = MemoryQueue::new();
    enqueue_body(&queue, &customer_event("evt_zero_timeout", "cus_1", 1)).await;
    let handler = Recorder::default();
    let worker = Worker::new(
        Faulty {
            yields: true,
            ..Faulty::over(&queue)
        },
        handler.clone(),
    )
    .with_store_timeout(Duration::ZERO);
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(queue.counts().await.unwrap().completed, 1);
}

/// A succeeded run's completion goes on under the lease's renewals: while the queue
/// refuses the first two completions, slowly (the settlement's third try comes 500 ms
/// on, past the 300 ms lease), no other worker takes the job and runs it again.
/// Before, the lease was not renewed once the handler returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_completion_keeps_its_lease() {
    let queue = MemoryQueue::new();
    enqueue_body(&queue, &customer_event("evt_slow_complete", "cus_1", 1)).await;
    let faulty = Faulty {
        failed_completions: Arc::new(std::sync::atomic::AtomicUsize::new(2)),
        refusal_delay: Duration::from_millis(100),
        ..Faulty::over(&queue)
    };
    let handler = Recorder::default();
    let lease = Duration::from_millis(300);
    let first = Worker::new(faulty, handler.clone()).with_lease(lease);
    let other = Worker::new(queue.clone(), handler.clone()).with_lease(lease);
    let first = tokio::spawn(async move { first.run_once().await });
    // The other worker looks for the job once the first one has run it.
    while handler.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let until = tokio::time::Instant::now() + Duration::from_millis(1_200);
    while tokio::time::Instant::now() < until {
        other.run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(handler.seen(), ["evt_slow_complete"]);
    assert_eq!(queue.counts().await.unwrap().completed, 1);
}

/// A handler deadline of zero is taken as the floor (10 ms), as the processor's is.
#[tokio::test]
async fn a_worker_with_a_zero_deadline_still_runs_its_jobs() {
    let queue = MemoryQueue::new();
    enqueue_body(&queue, &customer_event("evt_zero_deadline", "cus_1", 1)).await;
    let router = stripe_webhooks::EventRouter::new().fallback(|_e| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        })
    });
    let worker = Worker::new(queue.clone(), router).with_deadline(Some(Duration::ZERO));
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(queue.counts().await.unwrap().completed, 1);
}

/// SQLite: a take that waits for the write lock longer than the store timeout (2 s)
/// is not abandoned while its statement could still commit; it takes the job when the
/// lock is free (within the busy timeout) and runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_take_waiting_on_the_write_lock_is_not_abandoned() {
    let dir = TempDir::new("queue_take_waits");
    let queue = sqlite_queue(&dir).await;
    assert_eq!(queue.min_take_timeout(), Duration::from_secs(6));
    enqueue_body(&queue, &customer_event("evt_waited", "cus_1", 1)).await;
    let mut holder = queue.pool().begin_with("BEGIN IMMEDIATE").await.unwrap();
    stripe_webhooks::sqlx::query("CREATE TABLE held (n INTEGER)")
        .execute(&mut *holder)
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        holder.commit().await.unwrap();
    });
    let handler = Recorder::default();
    let worker = Worker::new(queue.clone(), handler.clone());
    assert_eq!(worker.run_once().await.unwrap(), 1);
    release.await.unwrap();
    assert_eq!(handler.seen(), ["evt_waited"]);
    let c = queue.counts().await.unwrap();
    assert_eq!((c.completed, c.running), (1, 0), "{c:?}");
}

/// A job's `Debug` output gives the body's length, never the body.
#[tokio::test]
async fn queued_bodies_stay_out_of_debug_output() {
    let dir = TempDir::new("queue_debug");
    let queue = sqlite_queue(&dir).await;
    let body = testing::event_json(
        "evt_private",
        "customer.updated",
        r#"{"id":"cus_1","object":"customer","email":"jenny.rosen@example.com"}"#,
    );
    let job = NewJob::parse(body.as_bytes()).unwrap();
    let shown = format!("{job:?}");
    assert!(
        shown.contains(&format!("body_len: {}", body.len())),
        "{shown}"
    );
    queue.enqueue(&job).await.unwrap();
    let record = queue.job(&"evt_private".into()).await.unwrap().unwrap();
    assert_eq!(record.body, body.as_bytes());
    for shown in [shown, format!("{record:?}"), format!("{record:#?}")] {
        assert!(!shown.contains("jenny"), "{shown}");
        assert!(shown.contains("body_len"), "{shown}");
    }
}

/// Reads, then writes: on its first run, another connection commits in between, so
/// SQLite refuses its write (`SQLITE_BUSY_SNAPSHOT`: its snapshot is stale).
struct ReadThenWrite {
    other: stripe_webhooks::sqlx::SqlitePool,
    runs: Arc<Mutex<u32>>,
    /// Instead: on the first run another connection holds the write lock when the
    /// handler writes (for 300 ms), so SQLite refuses the read transaction's upgrade
    /// at once (`SQLITE_BUSY`: it never waits for a lock from inside a transaction).
    hold_lock: bool,
}

#[async_trait]
impl stripe_webhooks::TransactionalHandler<stripe_webhooks::sqlx::Sqlite> for ReadThenWrite {
    async fn handle(
        &self,
        event: &Event,
        conn: &mut stripe_webhooks::sqlx::SqliteConnection,
    ) -> Result<(), HandlerError> {
        let run = {
            let mut runs = self.runs.lock().unwrap();
            *runs += 1;
            *runs
        };
        let before: i64 = stripe_webhooks::sqlx::query_scalar("SELECT count(*) FROM ledger")
            .fetch_one(&mut *conn)
            .await
            .map_err(HandlerError::new)?;
        if run == 1 && self.hold_lock {
            let mut locker = self.other.acquire().await.map_err(HandlerError::new)?;
            stripe_webhooks::sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *locker)
                .await
                .map_err(HandlerError::new)?;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = stripe_webhooks::sqlx::query("COMMIT")
                    .execute(&mut *locker)
                    .await;
            });
        } else if run == 1 {
            stripe_webhooks::sqlx::query("INSERT INTO elsewhere (n) VALUES (1)")
                .execute(&self.other)
                .await
                .map_err(HandlerError::new)?;
        }
        stripe_webhooks::sqlx::query("INSERT INTO ledger (event_id) VALUES (?1)")
            .bind(format!("{} after {before}", event.id()))
            .execute(&mut *conn)
            .await
            .map_err(HandlerError::new)?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_inbox_handler_whose_snapshot_went_stale_runs_again_at_once() {
    inbox_handler_runs_again_at_once(false).await;
}

/// A handler that reads, then writes while another connection holds the write lock:
/// SQLite answers `SQLITE_BUSY` at once (no busy wait inside a transaction), and the job
/// runs again under `BEGIN IMMEDIATE` (which waits for the lock) instead of going to the
/// retry schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_inbox_handler_refused_the_write_lock_runs_again_at_once() {
    inbox_handler_runs_again_at_once(true).await;
}

async fn inbox_handler_runs_again_at_once(hold_lock: bool) {
    let dir = TempDir::new(if hold_lock {
        "queue_inbox_busy"
    } else {
        "queue_inbox_snapshot"
    });
    let queue = sqlite_ledger_queue(&dir).await;
    stripe_webhooks::sqlx::query("CREATE TABLE elsewhere (n INTEGER)")
        .execute(queue.pool())
        .await
        .unwrap();
    enqueue_body(&queue, &customer_event("evt_stale_read", "cus_1", 1)).await;
    let runs = Arc::new(Mutex::new(0));
    let handler = ReadThenWrite {
        other: queue.pool().clone(),
        runs: Arc::clone(&runs),
        hold_lock,
    };
    let worker = queue.inbox_worker(handler).with_retry(fast_retry(1));
    worker.run_once().await.unwrap();
    // Ran twice in the one take: the first transaction rolled back, the second (begun
    // with the write lock) committed. Nothing went to the retry schedule.
    assert_eq!(*runs.lock().unwrap(), 2);
    let rows = ledger(&queue).await;
    assert_eq!(rows, ["evt_stale_read after 0"]);
    let c = queue.counts().await.unwrap();
    assert_eq!((c.completed, c.dead, c.retrying), (1, 0, 0), "{c:?}");
}

/// Writes a row, then works for 500 ms: its transaction holds SQLite's write lock.
struct WriteThenWork;

#[async_trait]
impl stripe_webhooks::TransactionalHandler<stripe_webhooks::sqlx::Sqlite> for WriteThenWork {
    async fn handle(
        &self,
        event: &Event,
        conn: &mut stripe_webhooks::sqlx::SqliteConnection,
    ) -> Result<(), HandlerError> {
        stripe_webhooks::sqlx::query("INSERT INTO ledger (event_id) VALUES (?1)")
            .bind(event.id().as_str())
            .execute(&mut *conn)
            .await
            .map_err(HandlerError::new)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }
}

/// A SQLite inbox job's lease renewal waits for the write lock its own transaction
/// holds. The run goes on meanwhile (it used to wait for the renewal, which could only
/// time out, and the job was then stopped as lost and rolled back), commits within its
/// lease, and the renewal then has the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_inbox_job_runs_on_while_its_renewal_waits_for_its_write_lock() {
    let dir = TempDir::new("queue_inbox_renewal");
    let queue = sqlite_ledger_queue(&dir).await;
    enqueue_body(&queue, &customer_event("evt_renewed", "cus_1", 1)).await;
    // Renewals every 300 ms; the run takes 500 ms, within the 810 ms the lease is safe.
    let worker = queue
        .inbox_worker(WriteThenWork)
        .with_deadline(None)
        .with_lease(Duration::from_millis(900))
        .with_retry(fast_retry(1));
    worker.run_once().await.unwrap();
    let c = queue.counts().await.unwrap();
    assert_eq!((c.completed, c.running, c.dead), (1, 0, 0), "{c:?}");
    let rows = ledger(&queue).await;
    assert_eq!(rows, ["evt_renewed"]);
}

/// A job whose every run outlives its lease (a SQLite inbox job writing, then working
/// past nine tenths of a 300 ms lease: its renewals wait for its own write lock) never
/// completes. Each run stopped for its lease is a failed run, so it is dead after its
/// attempts, with why, instead of being taken for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_never_settles_is_dead_after_its_attempts() {
    let dir = TempDir::new("queue_never_settles");
    let queue = sqlite_ledger_queue(&dir).await;
    enqueue_body(&queue, &customer_event("evt_outlives", "cus_1", 1)).await;
    let worker = queue
        .inbox_worker(WriteThenWork)
        .with_deadline(None)
        .with_lease(Duration::from_millis(300))
        .with_retry(fast_retry(2));
    let mut takes = 0;
    while queue.counts().await.unwrap().dead == 0 {
        takes += 1;
        assert!(takes <= 6, "still not dead after {takes} takes");
        worker.run_once().await.unwrap();
        // Past the lease of the run just lost.
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    let dead = queue.jobs(JobState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 2);
    let error = dead[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("lease was lost"), "{error}");
    assert!(ledger(&queue).await.is_empty(), "every run rolled back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sqlite_queue_wal_starts_over_under_steady_enqueues() {
    let dir = TempDir::new("queue_wal");
    let queue = sqlite_queue(&dir).await;
    // 24,000 bodies of 3.5 KiB, from 64 tasks that never pause: about 100 MB of WAL if it
    // never started over. Background checkpoints alone do not start it over (the
    // writer's next batch always begins before they end); the writer's catch-up does.
    let filler = "x".repeat(3500);
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (queue, filler) = (queue.clone(), filler.clone());
            tokio::spawn(async move {
                for n in 0..375 {
                    let mut v: serde_json::Value = serde_json::from_str(&customer_event(
                        &format!("evt_wal_{t}_{n}"),
                        "cus_wal",
                        1,
                    ))
                    .unwrap();
                    v["filler"] = filler.as_str().into();
                    enqueue_body(&queue, &v.to_string()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(queue.counts().await.unwrap().queued, 24_000);
    let wal = std::fs::metadata(dir.join("queue.db-wal")).unwrap().len();
    assert!(wal < 64 << 20, "the WAL grew to {wal} bytes");
}

/// Starts a worker polling every `poll`, lets it go idle, queues one event `id` and
/// waits up to 10 s for it to complete: whether it did, after the handler saw it alone.
#[cfg(any(feature = "postgres", feature = "redis"))]
async fn an_idle_worker_runs_a_new_job<Q: QueueAdmin + Clone>(
    queue: Q,
    poll: Duration,
    id: &str,
) -> bool {
    let handler = Recorder::default();
    let handle = Worker::new(queue.clone(), handler.clone())
        .with_poll_interval(poll)
        .spawn();
    tokio::time::sleep(Duration::from_millis(500)).await; // the worker is waiting
    let p = Processor::queued(verifier(), queue.clone());
    let body = customer_event(id, "cus_1", testing::now());
    let o = p.process(Some(&signed(&body)), body.as_bytes()).await;
    assert_eq!(o.kind().name(), "queued");
    let mut done = false;
    for _ in 0..200 {
        if queue.counts().await.unwrap().completed == 1 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown(Duration::from_secs(5)).await;
    if done {
        assert_eq!(handler.seen(), [id]);
    }
    done
}

// ---- Postgres ----

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use stripe_webhooks::queue::PostgresQueue;
    use stripe_webhooks::sqlx::postgres::PgPoolOptions;
    use stripe_webhooks::PostgresStore;

    pub(super) async fn queue(name: &str) -> PostgresQueue {
        queue_on(name).await.0
    }

    /// A queue, its pool and its table.
    async fn queue_on(name: &str) -> (PostgresQueue, stripe_webhooks::sqlx::PgPool, String) {
        let url = std::env::var("DATABASE_URL_TEST").unwrap_or_else(|_| {
            panic!(
                "DATABASE_URL_TEST is not set: start PostgreSQL with `eval \"$(scripts/services.sh start)\"` \
                 or run the whole suite with `scripts/test.sh`"
            )
        });
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(&url)
            .await
            .unwrap();
        let table = unique(name);
        let store = PostgresStore::new(pool.clone()).with_table(&table).unwrap();
        store.migrate().await.unwrap();
        (store.queue(), pool, table)
    }

    /// An unquoted name is one table whatever its case, so `QCASE_…` and `qcase_…` are one
    /// queue, and the names made from it outside SQL are too: an enqueue on one wakes
    /// the other's idle worker at once (the `NOTIFY` channel), long before its poll.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_table_names_differing_in_case_are_one_queue() {
        let (lower, pool, table) = queue_on("qcase").await;
        let upper = PostgresStore::new(pool)
            .with_table(&table.to_ascii_uppercase())
            .unwrap()
            .queue();
        assert_eq!(upper.table(), lower.table());
        let handler = Recorder::default();
        let handle = Worker::new(upper.clone(), handler.clone())
            .with_poll_interval(Duration::from_secs(120))
            .spawn();
        // The worker waits once its `LISTEN` is in (a `NOTIFY` before it is lost).
        let mut listening = 0;
        for _ in 0..200 {
            listening = stripe_webhooks::sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE query LIKE 'LISTEN%' AND position($1 in query) > 0",
            )
            .bind(lower.table())
            .fetch_one(lower.pool())
            .await
            .unwrap();
            if listening > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(listening, 1, "the worker never listened");
        enqueue_body(&lower, &customer_event("evt_case", "cus_1", testing::now())).await;
        let mut done = false;
        for _ in 0..200 {
            done = lower.counts().await.unwrap().completed == 1;
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        handle.shutdown(Duration::from_secs(5)).await;
        assert!(done, "the idle worker was not woken");
        assert_eq!(handler.seen(), ["evt_case"]);
    }

    /// What the server process of the queue's `LISTEN` connection waits on
    /// (`pg_stat_activity.wait_event`: `ClientRead` when idle, `ClientWrite` when blocked
    /// sending to a client that does not read).
    async fn listener_wait_event(pool: &stripe_webhooks::sqlx::PgPool, channel: &str) -> String {
        stripe_webhooks::sqlx::query_scalar::<_, Option<String>>(
            "SELECT wait_event FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND position($1 in query) > 0",
        )
        .bind(channel)
        .fetch_one(pool)
        .await
        .unwrap()
        .unwrap_or_default()
    }

    /// Sends `n` notifications of 200 bytes each on `channel`.
    async fn notify_many(pool: &stripe_webhooks::sqlx::PgPool, channel: &str, n: i32) {
        stripe_webhooks::sqlx::query(
            "SELECT count(pg_notify($1, repeat('x', 200) || i)) FROM generate_series(1, $2) i",
        )
        .bind(channel)
        .bind(n)
        .execute(pool)
        .await
        .unwrap();
    }

    /// The queue's `LISTEN` connection is not one of the pool's: on a pool of one
    /// connection, a waiting worker (which holds the listener) still lets the ack path
    /// enqueue and itself take, run and complete the job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_listener_takes_no_connection_from_the_queues_pool() {
        let url = std::env::var("DATABASE_URL_TEST").unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .unwrap();
        let store = PostgresStore::new(pool)
            .with_table(&unique("qonepool"))
            .unwrap();
        store.migrate().await.unwrap();
        let queue = store.queue();
        let recorder = Recorder::default();
        let handle = Worker::new(queue.clone(), recorder.clone())
            .with_poll_interval(Duration::from_secs(30))
            .spawn();
        // The worker finds nothing and waits on its listener.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let body = customer_event("evt_one_pool", "cus_1", 1);
        let enqueued = tokio::time::timeout(
            Duration::from_secs(20),
            queue.enqueue(&NewJob::parse(body.as_bytes()).unwrap()),
        )
        .await
        .expect("the enqueue got a connection");
        assert_eq!(enqueued.unwrap(), Enqueued::Queued);
        let mut done = false;
        for _ in 0..400 {
            if queue.counts().await.unwrap().completed == 1 {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        handle.shutdown(Duration::from_secs(1)).await;
        assert!(done, "the job never completed: {:?}", queue.counts().await);
    }

    /// "Requeue all dead" walks every dead job even when another operator's requeue
    /// takes one of a batch's jobs first: that batch comes back short by one, which
    /// used to end the walk with the later dead jobs left dead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requeue_dead_walks_past_a_job_requeued_meanwhile() {
        let (queue, pool, table) = queue_on("qrequeue").await;
        let jobs = format!("{table}_jobs");
        let n = 600;
        for i in 0..n {
            let body = customer_event(&format!("evt_rq_{i}"), &format!("cus_{i}"), 1);
            queue
                .enqueue(&NewJob::parse(body.as_bytes()).unwrap())
                .await
                .unwrap();
        }
        let taken = queue.take(n, Duration::from_secs(60), false).await.unwrap();
        assert_eq!(taken.len(), n);
        for job in &taken {
            queue.fail(&job.token, "boom", None).await.unwrap();
        }
        // Another operator requeues the first dead job, in a transaction still open when
        // the walk's first batch reaches it: the batch waits on its row, then skips it.
        let mut other = pool.begin().await.unwrap();
        stripe_webhooks::sqlx::query(&format!(
            "UPDATE {jobs} SET state = 'queued' WHERE seq = (SELECT min(seq) FROM {jobs})"
        ))
        .execute(&mut *other)
        .await
        .unwrap();
        let walk = tokio::spawn({
            let queue = queue.clone();
            async move { queue.requeue_dead().await.unwrap() }
        });
        let waited = common::lock_wait_seen(&pool, &jobs).await;
        assert!(waited, "the walk never waited on the row");
        other.commit().await.unwrap();
        assert_eq!(walk.await.unwrap(), (n - 1) as u64);
        let c = queue.counts().await.unwrap();
        assert_eq!((c.dead, c.queued), (0, n as u64), "{c:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_listener_is_read_while_no_worker_waits() {
        let (queue, pool, table) = queue_on("qlisten").await;
        let channel = format!("{table}_jobs");
        // The first wait connects the listener; then nobody waits, as when every worker
        // is busy with a backlog.
        assert!(queue.wait_for_jobs(Duration::from_millis(200)).await);
        // 20 MB of notifications: far more than the sockets between the server and this
        // process buffer.
        notify_many(&pool, &channel, 100_000).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut idle = 0;
        for _ in 0..300 {
            let e = listener_wait_event(&pool, &channel).await;
            idle = if e == "ClientRead" { idle + 1 } else { 0 };
            if idle == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            idle, 3,
            "the listener's server process is still sending (blocked on a connection nobody reads)"
        );
        // The notifications that came meanwhile end the next wait at once, and one more
        // still wakes it.
        let started = Instant::now();
        assert!(queue.wait_for_jobs(Duration::from_secs(30)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        let woken = tokio::spawn({
            let queue = queue.clone();
            async move {
                let started = Instant::now();
                queue.wait_for_jobs(Duration::from_secs(30)).await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        notify_many(&pool, &channel, 1).await;
        assert!(woken.await.unwrap() < Duration::from_secs(10));
    }

    /// A listener whose connection is cut is made again: an idle worker is still woken by
    /// `NOTIFY`, long before its poll.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_listener_reconnects_after_its_connection_is_cut() {
        let (queue, pool, table) = queue_on("qrelisten").await;
        let channel = format!("{table}_jobs");
        assert!(queue.wait_for_jobs(Duration::from_millis(200)).await);
        let cut: i64 = stripe_webhooks::sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND position($1 in query) > 0",
        )
        .bind(&channel)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(cut, 1);
        let done =
            an_idle_worker_runs_a_new_job(queue, Duration::from_secs(60), "evt_relisten").await;
        assert!(done, "woken within 10 s, long before the 60 s poll");
    }

    /// Writes a row, then outlasts a few lease renewals.
    struct SlowLedger;

    #[async_trait]
    impl stripe_webhooks::TransactionalHandler<stripe_webhooks::sqlx::Postgres> for SlowLedger {
        async fn handle(
            &self,
            event: &Event,
            conn: &mut stripe_webhooks::sqlx::PgConnection,
        ) -> Result<(), HandlerError> {
            let table = format!("{}_ledger", event.id());
            stripe_webhooks::sqlx::query(&format!("INSERT INTO {table} VALUES (1)"))
                .execute(&mut *conn)
                .await
                .map_err(HandlerError::new)?;
            tokio::time::sleep(Duration::from_millis(700)).await;
            Ok(())
        }
    }

    /// An inbox handler stopped at its deadline in the middle of a statement: the
    /// statement is cut on the server too (the transaction's `statement_timeout` is the
    /// deadline), so the rollback does not wait for it to end and the job's run ends
    /// soon after its deadline, failed, saying so. Before, the run lasted as long as
    /// the statement (a lock wait, a long `UPDATE`), holding its slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_postgres_inbox_statement_cut_at_the_deadline_ends_on_the_server() {
        let queue = queue("qcut").await;
        enqueue_body(&queue, &customer_event(&unique("evt_cut"), "cus_1", 1)).await;
        // The statement would sleep 30 s.
        let worker = queue.inbox_worker(common::SleepsInTheDatabase("queue_cut"));
        super::assert_cut_at_its_deadline(worker, &queue).await;
    }

    /// The job's lease is renewed beside the inbox transaction; under a database default
    /// of repeatable read, the completion would then fail on the renewed row. The inbox
    /// transaction is read committed whatever the default.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_postgres_inbox_job_renewed_while_it_runs_completes_under_repeatable_read() {
        let pool = pool_defaulting_to("repeatable read").await;
        let store = PostgresStore::new(pool).with_table(&unique("qrr")).unwrap();
        store.migrate().await.unwrap();
        let queue = store.queue();
        let id = unique("evt_rr");
        stripe_webhooks::sqlx::query(&format!("CREATE TABLE {id}_ledger (n INT)"))
            .execute(queue.pool())
            .await
            .unwrap();
        enqueue_body(&queue, &customer_event(&id, "cus_1", 1)).await;
        let worker = queue
            .inbox_worker(SlowLedger)
            .with_lease(Duration::from_millis(300))
            .with_retry(fast_retry(1));
        worker.run_once().await.unwrap();
        let c = queue.counts().await.unwrap();
        assert_eq!((c.completed, c.dead), (1, 0), "{c:?}");
        let rows: i64 =
            stripe_webhooks::sqlx::query_scalar(&format!("SELECT count(*) FROM {id}_ledger"))
                .fetch_one(queue.pool())
                .await
                .unwrap();
        assert_eq!(rows, 1);
    }

    /// A PostgreSQL inbox handler whose transaction ends under it never completes its
    /// job (which it did: the job `completed`, the handler's writes gone, never run
    /// again): one that hides a failed statement and then begins a transaction of its own
    /// (sqlx's undo of the failed `SAVEPOINT` is a whole `ROLLBACK`), and one that runs
    /// `ROLLBACK` itself. Each job is retried and dies, saying why; nothing the handler
    /// wrote in the transaction is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_postgres_inbox_job_whose_transaction_ended_under_its_handler_never_completes() {
        let (queue, _, table) = queue_on("qlost").await;
        let ledger = format!("{table}_ledger");
        stripe_webhooks::sqlx::query(&format!("CREATE TABLE {ledger} (event_id TEXT)"))
            .execute(queue.pool())
            .await
            .unwrap();
        let (hidden, rolled_back) = (unique("evt_hidden"), unique("evt_rollback"));
        let aborted = unique("evt_aborted");
        enqueue_body(&queue, &customer_event(&hidden, "cus_1", 1)).await;
        enqueue_body(&queue, &customer_event(&rolled_back, "cus_2", 1)).await;
        enqueue_body(&queue, &customer_event(&aborted, "cus_3", 1)).await;
        let worker = queue
            .inbox_worker(common::EndsItsTransaction {
                before: Some(ledger.clone()),
                after: None,
            })
            .with_retry(fast_retry(2));
        drain(&worker, &queue).await;
        let c = queue.counts().await.unwrap();
        assert_eq!((c.completed, c.dead), (0, 3), "{c:?}");
        for (key, why) in [
            (&hidden, "transaction ended before its completion"),
            (&rolled_back, "transaction ended before its completion"),
            (&aborted, "aborted the transaction"),
        ] {
            let dead = queue.job(&key.as_str().into()).await.unwrap().unwrap();
            let error = dead.last_error.as_deref().unwrap_or_default();
            assert!(error.contains(why), "{key}: {error}");
        }
        let rows: i64 =
            stripe_webhooks::sqlx::query_scalar(&format!("SELECT count(*) FROM {ledger}"))
                .fetch_one(queue.pool())
                .await
                .unwrap();
        assert_eq!(rows, 0);
    }

    /// A pool whose transactions default to `isolation`.
    async fn pool_defaulting_to(isolation: &'static str) -> stripe_webhooks::sqlx::PgPool {
        let url = std::env::var("DATABASE_URL_TEST").unwrap();
        PgPoolOptions::new()
            .max_connections(6)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    stripe_webhooks::sqlx::Executor::execute(
                        conn,
                        format!("SET default_transaction_isolation = '{isolation}'").as_str(),
                    )
                    .await
                    .map(|_| ())
                })
            })
            .connect(&url)
            .await
            .unwrap()
    }

    /// Under a stricter default isolation, a take that meets a job another take changed
    /// after its snapshot began would fail with a serialization error (40001) instead of
    /// skipping it: takes run read committed whatever the default, in order or not, and
    /// four workers taking at once run every job once.
    async fn concurrent_workers_run_every_job_once_under(isolation: &'static str) {
        let store = PostgresStore::new(pool_defaulting_to(isolation).await)
            .with_table(&unique("qiso"))
            .unwrap();
        store.migrate().await.unwrap();
        // Ordered takes park what they read past; unordered ones never take a parked job
        // until it is woken.
        let queue = store.queue().with_parking_after(Duration::ZERO);
        let jobs = 300;
        for i in 0..jobs {
            let body = customer_event(&format!("evt_iso_{i}"), &format!("cus_{}", i % 50), 1);
            enqueue_body(&queue, &body).await;
        }
        let handler = Recorder::default();
        let workers = (0..4).map(|w| {
            let worker = Worker::new(queue.clone(), handler.clone())
                .with_concurrency(3)
                .with_per_object_order(w % 2 == 1)
                .with_retry(fast_retry(1));
            tokio::spawn(async move {
                while worker.run_once().await? > 0 {}
                Ok::<_, StoreError>(())
            })
        });
        for w in workers.collect::<Vec<_>>() {
            w.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{isolation}: {e:?}"));
        }
        let mut seen = handler.seen();
        assert_eq!(seen.len(), jobs, "{isolation}");
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), jobs, "{isolation}: each job once");
        let c = queue.counts().await.unwrap();
        assert_eq!(
            (c.completed, c.dead),
            (jobs as u64, 0),
            "{isolation}: {c:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_workers_taking_at_once_run_each_job_once_under_repeatable_read() {
        concurrent_workers_run_every_job_once_under("repeatable read").await;
    }

    /// Under a `serializable` default, PostgreSQL fails even a statement on its own with a
    /// serialization error when it meets another's writes: the queue runs its statements
    /// again at once, so takers completing jobs side by side see no error (without a
    /// worker's own retries).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_settlements_side_by_side_succeed_under_serializable() {
        let store = PostgresStore::new(pool_defaulting_to("serializable").await)
            .with_table(&unique("qsettle"))
            .unwrap();
        store.migrate().await.unwrap();
        let queue = store.queue();
        let jobs = 200;
        for i in 0..jobs {
            let body = customer_event(&format!("evt_ser_{i}"), &format!("cus_{}", i % 40), 1);
            enqueue_body(&queue, &body).await;
        }
        let takers = (0..4).map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut done = 0;
                loop {
                    let batch = queue.take(3, Duration::from_secs(60), false).await?;
                    if batch.is_empty() {
                        return Ok::<_, StoreError>(done);
                    }
                    for job in batch {
                        queue.complete(&job.token).await?;
                        done += 1;
                    }
                }
            })
        });
        let mut done = 0;
        for taker in takers.collect::<Vec<_>>() {
            done += taker.await.unwrap().unwrap_or_else(|e| panic!("{e:?}"));
        }
        assert_eq!(done, jobs);
        assert_eq!(queue.counts().await.unwrap().completed, jobs as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_workers_taking_at_once_run_each_job_once_under_serializable() {
        concurrent_workers_run_every_job_once_under("serializable").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_unreadable_job_dies_and_its_batch_still_runs() {
        let table = unique("qspoil");
        let store = PostgresStore::new(queue("unused").await.pool().clone())
            .with_table(&table)
            .unwrap();
        store.migrate().await.unwrap();
        let queue = store.queue();
        let pool = queue.pool().clone();
        an_unreadable_job_dies_and_its_batch_still_runs_on(queue, |key| async move {
            stripe_webhooks::sqlx::query(&format!(
                "UPDATE {table}_jobs SET kind = 'future' WHERE job_key = $1"
            ))
            .bind(key)
            .execute(&pool)
            .await
            .unwrap();
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_failing_job_retries_then_dies_and_runs_once_after_requeue() {
        a_failing_job_retries_then_dies_and_runs_once_after_requeue_on(queue("qdead").await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_held_back_jobs_are_parked_until_their_turn() {
        let q = queue("qpark").await.with_parking_after(Duration::ZERO);
        let parked = parked_jobs!(q);
        held_back_jobs_are_parked_until_their_turn_on(q, parked).await;
    }

    /// Takes in per-object order from eight connections at once while updates of 300
    /// objects arrive out of order (the later one queued first): no object ever has two
    /// jobs taken at once. (Each take's statement reads its own snapshot; a job queued
    /// between two takes' starts must not let both pass the order check.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_takes_in_order_never_hold_two_jobs_of_one_object() {
        const OBJECTS: usize = 300;
        // Every take parks what it read past: a job parked as its object's earlier job
        // completes must still be woken.
        let queue = queue("qorderrace").await.with_parking_after(Duration::ZERO);
        let held: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
        let done = Arc::new(AtomicUsize::new(0));
        let t = testing::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (queue, held, done) = (queue.clone(), Arc::clone(&held), Arc::clone(&done));
            tasks.spawn(async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while done.load(Ordering::SeqCst) < 2 * OBJECTS {
                    assert!(std::time::Instant::now() < deadline, "jobs left undone");
                    let jobs = queue.take(4, Duration::from_secs(30), true).await.unwrap();
                    if jobs.is_empty() {
                        // Takes that overlap as much as they can: the race is between
                        // two of them and an enqueue.
                        tokio::task::yield_now().await;
                        continue;
                    }
                    let objects: Vec<String> = jobs
                        .iter()
                        .map(|j| j.key().as_str().rsplit_once('_').unwrap().0.to_owned())
                        .collect();
                    for o in &objects {
                        let mut h = held.lock().unwrap();
                        let n = h.entry(o.clone()).or_default();
                        *n += 1;
                        assert_eq!(*n, 1, "two jobs of {o} taken at once");
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    for (job, o) in jobs.iter().zip(&objects) {
                        *held.lock().unwrap().get_mut(o).unwrap() -= 1;
                        queue.complete(&job.token).await.unwrap();
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        for n in 0..OBJECTS {
            let customer = format!("cus_race{n}");
            enqueue_body(
                &queue,
                &customer_event(&format!("evt{n}_b"), &customer, t + 1),
            )
            .await;
            enqueue_body(&queue, &customer_event(&format!("evt{n}_a"), &customer, t)).await;
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let c = queue.counts().await.unwrap();
        assert_eq!(c.completed, 2 * OBJECTS as u64, "{c:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_per_object_order_runs_a_slow_update_before_the_later_one() {
        per_object_order_runs_a_slow_update_before_the_later_one_on(queue("qorder").await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_queue_conformance() {
        queue_conformance::run_all(|| queue("qconf"), LeaseTime::Real).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_workers_are_woken_by_notify_not_the_poll() {
        // A poll of a minute: only LISTEN/NOTIFY can wake the worker in time.
        let done = an_idle_worker_runs_a_new_job(
            queue("qnotify").await,
            Duration::from_secs(60),
            "evt_notify",
        )
        .await;
        assert!(done, "woken within 10 s, long before the 60 s poll");
    }
}

// ---- Redis ----

#[cfg(feature = "redis")]
mod redis_queue {
    use super::*;
    use stripe_webhooks::queue::RedisQueue;
    use stripe_webhooks::redis::{self, aio::ConnectionManager};
    use stripe_webhooks::RedisStore;

    const LONG: Duration = Duration::from_secs(600);

    async fn connect() -> ConnectionManager {
        let url = std::env::var("REDIS_URL_TEST").unwrap_or_else(|_| {
            panic!(
                "REDIS_URL_TEST is not set: start a Redis server with \
                 `eval \"$(scripts/services.sh start)\"` and run again, or run `scripts/test.sh`"
            )
        });
        let client = redis::Client::open(url).expect("REDIS_URL_TEST is a valid Redis URL");
        ConnectionManager::new(client)
            .await
            .expect("Redis at REDIS_URL_TEST answers")
    }

    /// A queue under its own prefix, taken from a store.
    pub(super) async fn queue(name: &str) -> RedisQueue {
        queue_and_prefix(name).await.0
    }

    /// A queue under its own prefix, and the prefix, to look at its keys.
    async fn queue_and_prefix(name: &str) -> (RedisQueue, String) {
        let prefix = unique(name);
        let queue = RedisStore::new(connect().await)
            .with_prefix(&prefix)
            .unwrap()
            .queue();
        (queue, prefix)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_unreadable_job_dies_and_its_batch_still_runs() {
        let (queue, prefix) = queue_and_prefix("qspoil").await;
        let mut conn = connect().await;
        an_unreadable_job_dies_and_its_batch_still_runs_on(queue, |key| async move {
            let _: () = redis::cmd("HSET")
                .arg(format!("{prefix}:q:job:{key}"))
                .arg("kind")
                .arg("future")
                .query_async(&mut conn)
                .await
                .unwrap();
        })
        .await;
    }

    /// A job whose hash the take script cannot use (attempts not a number, no seq, a
    /// state it does not know) dies with the reason, before anything is written for it:
    /// the script stopped at it, leaving the jobs it took before it running and out of
    /// reach until their leases ended. It leaves its object's order, and a requeue of the
    /// dead leaves it dead rather than fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_a_job_hash_the_take_cannot_use_dies_and_its_batch_still_runs() {
        let (queue, prefix) = queue_and_prefix("qhash").await;
        let mut conn = connect().await;
        let now = testing::now();
        let spoilt = [
            ("evt_attempts", "attempts", Some("many")),
            ("evt_seq", "seq", None),
            // `tonumber` reads it (as NaN), ZADD refuses it: buried with a score of 0.
            ("evt_nan", "seq", Some("nan")),
            ("evt_state", "state", Some("paused")),
        ];
        enqueue_body(&queue, &customer_event("evt_first", "cus_1", now)).await;
        for (id, _, _) in spoilt {
            enqueue_body(&queue, &customer_event(id, "cus_2", now)).await;
        }
        // The same object as the spoilt jobs, queued after them.
        enqueue_body(&queue, &customer_event("evt_after", "cus_2", now + 1)).await;
        for (id, field, value) in spoilt {
            let key = format!("{prefix}:q:job:{id}");
            let cmd = match value {
                Some(v) => {
                    let mut c = redis::cmd("HSET");
                    c.arg(&key).arg(field).arg(v);
                    c
                }
                None => {
                    let mut c = redis::cmd("HDEL");
                    c.arg(&key).arg(field);
                    c
                }
            };
            let _: i64 = cmd.query_async(&mut conn).await.unwrap();
        }
        let lease = Duration::from_secs(30);
        let taken = queue.take(10, lease, true).await.unwrap();
        let keys: Vec<&str> = taken.iter().map(|j| j.token.event_id().as_str()).collect();
        assert_eq!(keys, ["evt_first", "evt_after"]);
        for job in &taken {
            queue.complete(&job.token).await.unwrap();
        }
        let dead = queue.jobs(JobState::Dead, 10).await.unwrap();
        let mut dead_keys: Vec<&str> = dead.iter().map(|j| j.key.as_str()).collect();
        dead_keys.sort_unstable();
        assert_eq!(
            dead_keys,
            ["evt_attempts", "evt_nan", "evt_seq", "evt_state"],
            "{dead:?}"
        );
        for job in &dead {
            let why = job.last_error.as_deref().unwrap_or_default();
            assert!(why.contains("unreadable job"), "{why}");
        }
        // A requeue cannot give the ones without a readable seq their place: they stay
        // dead, listed.
        assert_eq!(queue.requeue_dead().await.unwrap(), 2);
        let dead = queue.jobs(JobState::Dead, 10).await.unwrap();
        let keys: Vec<&str> = dead.iter().map(|j| j.key.as_str()).collect();
        assert_eq!(keys, ["evt_nan", "evt_seq"], "{dead:?}");
        // Asked for by name, it says why it stays dead.
        let refused = queue
            .requeue(&stripe_webhooks::EventId::new("evt_seq"))
            .await
            .unwrap_err();
        assert!(format!("{refused:?}").contains("stays dead"), "{refused:?}");
        let counts = queue.counts().await.unwrap();
        assert_eq!(
            (counts.queued, counts.completed, counts.dead),
            (2, 2, 2),
            "{counts:?}"
        );
    }

    /// A running job whose stream entry id is corrupt, once its lease lapses, is buried
    /// with the reason: the take script passed the id to `XCLAIM`, which failed the
    /// script every time, so the whole queue took nothing until the hash was mended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_a_job_with_a_corrupt_entry_dies_and_the_queue_goes_on() {
        let (queue, prefix) = queue_and_prefix("qentry").await;
        let mut conn = connect().await;
        let now = testing::now();
        enqueue_body(&queue, &customer_event("evt_entry", "cus_1", now)).await;
        let taken = queue
            .take(1, Duration::from_millis(100), false)
            .await
            .unwrap();
        assert_eq!(taken.len(), 1);
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}:q:job:evt_entry"))
            .arg("entry")
            .arg("not-an-id")
            .query_async(&mut conn)
            .await
            .unwrap();
        enqueue_body(&queue, &customer_event("evt_next", "cus_2", now)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let taken = queue
            .take(10, Duration::from_secs(30), false)
            .await
            .unwrap();
        let keys: Vec<&str> = taken.iter().map(|j| j.token.event_id().as_str()).collect();
        assert_eq!(keys, ["evt_next"]);
        let dead = queue.jobs(JobState::Dead, 10).await.unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].key.as_str(), "evt_entry");
        let why = dead[0].last_error.as_deref().unwrap_or_default();
        assert!(why.contains("unreadable job"), "{why}");
        queue.complete(&taken[0].token).await.unwrap();
    }

    /// A job whose key is not text (written by hand: the crate's keys are event ids) is
    /// buried by its bytes when taken. It was skipped after each take and taken again
    /// at each lease's end, for ever, never dead, its attempts growing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_a_job_whose_key_is_not_text_is_buried() {
        let (queue, prefix) = queue_and_prefix("qkey").await;
        let mut conn = connect().await;
        enqueue_body(&queue, &customer_event("evt_k", "cus_1", testing::now())).await;
        // The job moved under a key that is not text, with a stream entry of its own.
        let bad = b"evt_\xff".to_vec();
        let mut hash = format!("{prefix}:q:job:").into_bytes();
        hash.extend_from_slice(&bad);
        let _: () = redis::cmd("RENAME")
            .arg(format!("{prefix}:q:job:evt_k"))
            .arg(&hash)
            .query_async(&mut conn)
            .await
            .unwrap();
        let entry: String = redis::cmd("XADD")
            .arg(format!("{prefix}:q:stream"))
            .arg("*")
            .arg("key")
            .arg(&bad)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg(&hash)
            .arg("entry")
            .arg(&entry)
            .query_async(&mut conn)
            .await
            .unwrap();
        let taken = queue
            .take(10, Duration::from_secs(30), false)
            .await
            .unwrap();
        assert!(taken.is_empty(), "{}", taken.len());
        let (state, why): (String, Option<String>) = redis::cmd("HMGET")
            .arg(&hash)
            .arg("state")
            .arg("last_error")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(state, "dead");
        let why = why.unwrap_or_default();
        assert!(why.contains("key is not text"), "{why}");
    }

    /// A job whose event type is not UTF-8 (a corrupt hash) dies with the reason; it
    /// failed the decoding of its whole take, so the jobs taken beside it never ran and
    /// the take failed again at each lease's end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_a_job_with_bytes_that_are_not_text_dies_and_its_batch_still_runs() {
        let (queue, prefix) = queue_and_prefix("qbytes").await;
        let mut conn = connect().await;
        let now = testing::now();
        enqueue_body(&queue, &customer_event("evt_fine", "cus_1", now)).await;
        enqueue_body(&queue, &customer_event("evt_bytes", "cus_2", now)).await;
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}:q:job:evt_bytes"))
            .arg("type")
            .arg(&b"customer.\xff\xfe"[..])
            .query_async(&mut conn)
            .await
            .unwrap();
        let handler = Recorder::default();
        let worker = Worker::new(queue.clone(), handler.clone()).with_retry(fast_retry(3));
        drain(&worker, &queue).await;
        assert_eq!(handler.seen(), ["evt_fine"]);
        let counts = queue.counts().await.unwrap();
        assert_eq!((counts.completed, counts.dead), (1, 1), "{counts:?}");
        // Listed with the bytes replaced, and with why: it does not fail the listing.
        let dead = queue.jobs(JobState::Dead, 10).await.unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].event_type, "customer.\u{fffd}\u{fffd}");
        let why = dead[0].last_error.as_deref().unwrap_or_default();
        assert!(why.contains("cannot be read by this version"), "{why}");
    }

    /// A completed-set member whose job is gone is dropped and not counted as purged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_purge_counts_only_the_jobs_it_deleted() {
        let (queue, prefix) = queue_and_prefix("qpurge").await;
        let mut conn = connect().await;
        for id in ["evt_purge_1", "evt_purge_2"] {
            let body = testing::event_for_type(id, "invoice.paid").unwrap();
            queue
                .enqueue(&NewJob::parse(body.as_bytes()).unwrap())
                .await
                .unwrap();
        }
        for job in queue.take(2, Duration::from_secs(60), false).await.unwrap() {
            queue.complete(&job.token).await.unwrap();
        }
        // Two members with no job behind them, older than both completions.
        for stale in ["evt_stale_1", "evt_stale_2"] {
            let _: () = redis::cmd("ZADD")
                .arg(format!("{prefix}:q:completed"))
                .arg(1)
                .arg(stale)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        assert_eq!(queue.purge_completed(Duration::ZERO, 2).await.unwrap(), 2);
        assert_eq!(queue.purge_completed(Duration::ZERO, 2).await.unwrap(), 0);
        let left: u64 = redis::cmd("ZCARD")
            .arg(format!("{prefix}:q:completed"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_queue_conformance() {
        queue_conformance::run_all(|| queue("qconf"), LeaseTime::Real).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_workers_are_woken_by_the_stream_not_the_poll() {
        let url = std::env::var("REDIS_URL_TEST").expect("REDIS_URL_TEST is set");
        let client = redis::Client::open(url).unwrap();
        let queue = queue("qwake").await.with_wakeups(client);
        assert!(format!("{queue:?}").contains("wakeups: true"));
        // A poll of a minute: only the blocking read can wake the worker in time.
        let done = an_idle_worker_runs_a_new_job(queue, Duration::from_secs(60), "evt_wake").await;
        assert!(done, "woken within 10 s, long before the 60 s poll");
    }

    /// A job queued after a worker's take found nothing, but before the worker blocks for
    /// the next, wakes it at once: the read starts after the last entry the workers were
    /// given, not at the stream's end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_a_job_queued_between_an_empty_take_and_the_wait_wakes_at_once() {
        let url = std::env::var("REDIS_URL_TEST").expect("REDIS_URL_TEST is set");
        let client = redis::Client::open(url).unwrap();
        let queue = queue("qwakerace").await.with_wakeups(client);
        let lease = Duration::from_secs(30);
        // A first wait on a queue never taken from (no stream, no group) times out.
        assert!(queue.wait_for_jobs(Duration::from_millis(50)).await);
        assert!(queue.take(1, lease, false).await.unwrap().is_empty());
        enqueue_body(&queue, &customer_event("evt_race", "cus_1", testing::now())).await;
        // Blocking from the stream's end, this would wait the whole minute.
        let woke = tokio::time::timeout(
            Duration::from_secs(10),
            queue.wait_for_jobs(Duration::from_secs(60)),
        )
        .await;
        assert_eq!(woke, Ok(true), "woken by the job queued before the wait");
        let taken = queue.take(1, lease, false).await.unwrap();
        assert_eq!(taken.len(), 1);
        // Taken: nothing new is past the group's last entry, so the wait blocks its time.
        let idle = tokio::time::timeout(
            Duration::from_millis(500),
            queue.wait_for_jobs(Duration::from_secs(60)),
        )
        .await;
        assert!(idle.is_err(), "nothing to wake for");
        queue.complete(&taken[0].token).await.unwrap();
    }

    /// Workers on clones of one queue wait side by side, each on a connection of its
    /// own: a short wait ends on time while a long one blocks. (They shared one
    /// connection, behind a lock, so a worker waited for another's whole wait first.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_waits_on_clones_of_a_queue_run_side_by_side() {
        let url = std::env::var("REDIS_URL_TEST").expect("REDIS_URL_TEST is set");
        let client = redis::Client::open(url).unwrap();
        let queue = queue("qwakeboth").await.with_wakeups(client);
        // The stream and the workers' group exist.
        assert!(queue
            .take(1, Duration::from_secs(30), false)
            .await
            .unwrap()
            .is_empty());
        let long = {
            let q = queue.clone();
            tokio::spawn(async move { q.wait_for_jobs(Duration::from_secs(30)).await })
        };
        // Time for the long wait to connect and block.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let short = tokio::time::timeout(
            Duration::from_secs(10),
            queue.clone().wait_for_jobs(Duration::from_secs(1)),
        )
        .await;
        assert_eq!(short, Ok(true), "the short wait did not end on time");
        assert!(!long.is_finished());
        long.abort();
    }

    /// A wakeup connection that cannot connect is no wake at all: the worker falls back
    /// to its poll and still runs the job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_workers_poll_when_the_wakeup_connection_fails() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let queue = queue("qwakefail").await.with_wakeups(client);
        let done =
            an_idle_worker_runs_a_new_job(queue, Duration::from_millis(50), "evt_poll").await;
        assert!(done, "the poll ran the job");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_failing_job_retries_then_dies_and_runs_once_after_requeue() {
        a_failing_job_retries_then_dies_and_runs_once_after_requeue_on(queue("qdead").await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_consumer_takes_over_the_job_of_a_consumer_that_died() {
        let prefix = unique("qtakeover");
        let dead = RedisQueue::new(connect().await, &prefix).unwrap();
        let alive = RedisQueue::new(connect().await, &prefix).unwrap();
        assert_ne!(dead.consumer(), alive.consumer());
        let body = customer_event("evt_orphan", "cus_1", testing::now());
        enqueue_body(&dead, &body).await;
        // Taken, and never settled: the consumer died.
        let lease = Duration::from_millis(300);
        let orphan = dead.take(1, lease, true).await.unwrap().remove(0);
        assert!(
            alive.take(1, lease, true).await.unwrap().is_empty(),
            "the lease is live"
        );

        let mut conn = connect().await;
        let stream = format!("{prefix}:q:stream");
        let pending = |conn: &mut ConnectionManager| {
            let mut conn = conn.clone();
            let stream = stream.clone();
            async move {
                let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                    .arg(&stream)
                    .arg("workers")
                    .arg("-")
                    .arg("+")
                    .arg(10)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                rows.into_iter().map(|r| r.1).collect::<Vec<_>>()
            }
        };
        assert_eq!(pending(&mut conn).await, [dead.consumer()]);

        tokio::time::sleep(lease + Duration::from_millis(200)).await;
        let jobs = alive.take(1, Duration::from_secs(30), true).await.unwrap();
        assert_eq!(jobs.len(), 1, "taken over");
        assert_eq!(jobs[0].key().as_str(), "evt_orphan");
        assert_eq!(jobs[0].token.attempt(), 2);
        assert_eq!(
            pending(&mut conn).await,
            [alive.consumer()],
            "the entry moved to the new consumer"
        );
        assert!(matches!(
            dead.complete(&orphan.token).await,
            Err(stripe_webhooks::StoreError::LeaseLost { .. })
        ));
        alive.complete(&jobs[0].token).await.unwrap();
        assert!(pending(&mut conn).await.is_empty(), "acked");
        let len: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(len, 0, "deleted");
        let rec = alive.job(&"evt_orphan".into()).await.unwrap().unwrap();
        assert_eq!((rec.state, rec.attempts), (JobState::Completed, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_job_whose_consumer_died_stops_holding_its_object_back() {
        let queue = queue("qparked").await;
        let job = queue_conformance::job;
        queue
            .enqueue(&job("evt_second", Some("sub_1"), 2, b"{}"))
            .await
            .unwrap();
        let lease = Duration::from_millis(300);
        let orphan = queue.take(1, lease, false).await.unwrap().remove(0);
        assert_eq!(orphan.key().as_str(), "evt_second");
        // An earlier event of the object arrives while the later one runs.
        queue
            .enqueue(&job("evt_first", Some("sub_1"), 1, b"{}"))
            .await
            .unwrap();
        assert!(
            queue.take(10, LONG, true).await.unwrap().is_empty(),
            "sub_1 has a job under a live lease"
        );
        assert_eq!(
            queue.counts().await.unwrap().queued,
            1,
            "parked, still queued"
        );
        tokio::time::sleep(lease + Duration::from_millis(200)).await;
        let first = queue.take(10, LONG, true).await.unwrap();
        let keys: Vec<&str> = first.iter().map(|j| j.key().as_str()).collect();
        assert_eq!(keys, ["evt_first"], "the earlier job runs first");
        assert!(queue.take(10, LONG, true).await.unwrap().is_empty());
        queue.complete(&first[0].token).await.unwrap();
        let second = queue.take(10, LONG, true).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(
            (second[0].key().as_str(), second[0].token.attempt()),
            ("evt_second", 2)
        );
        assert!(queue.complete(&orphan.token).await.is_err(), "fenced");
        queue.complete(&second[0].token).await.unwrap();
        assert_eq!(queue.counts().await.unwrap().completed, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_stream_entries_are_acked_and_never_run() {
        let prefix = unique("qstale");
        let queue = RedisQueue::new(connect().await, &prefix).unwrap();
        let job = queue_conformance::job;
        queue
            .enqueue(&job("evt_done", None, 1, b"{}"))
            .await
            .unwrap();
        let j = queue.take(1, LONG, false).await.unwrap().remove(0);
        queue.complete(&j.token).await.unwrap();
        queue
            .enqueue(&job("evt_live", None, 1, b"{}"))
            .await
            .unwrap();
        // Entries naming a completed job, a queued job (not its current entry) and no job.
        let mut conn = connect().await;
        let stream = format!("{prefix}:q:stream");
        for key in ["evt_done", "evt_live", "evt_gone"] {
            let _: String = redis::cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("key")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let jobs = queue.take(10, LONG, false).await.unwrap();
        let keys: Vec<&str> = jobs.iter().map(|j| j.key().as_str()).collect();
        assert_eq!(keys, ["evt_live"], "once");
        assert_eq!(jobs[0].token.attempt(), 1);
        queue.complete(&jobs[0].token).await.unwrap();
        let len: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(len, 0, "every stale entry was acked and deleted");
        assert!(queue.take(10, LONG, false).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_per_object_order_runs_a_slow_update_before_the_later_one() {
        per_object_order_runs_a_slow_update_before_the_later_one_on(queue("qorder").await).await;
    }
}

/// One change sent to both destinations, a worker whose snapshot handler does not take
/// its type but whose thin handler does: given the worker's types, the ack-fast
/// processor ignores the snapshot twin instead of queueing it under the shared key, so
/// the thin twin is queued and its handler runs once (as in inline mode). Types no
/// handler takes are not queued at all.
#[tokio::test]
async fn twins_reach_the_handler_that_takes_them_in_ack_fast_mode() {
    use stripe_webhooks::{ThinEventRouter, ThinEventType};

    let queue = MemoryQueue::new();
    let thin_runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&thin_runs);
    let worker = Worker::new(
        queue.clone(),
        EventRouter::new().on(stripe_webhooks::EventType::InvoicePaid, |_e| {
            Box::pin(async { Ok(()) })
        }),
    )
    .with_thin_handler(ThinEventRouter::new().on(
        ThinEventType::V1CustomerCreated,
        move |_n| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        },
    ));
    let p =
        Processor::queued(verifier(), queue.clone()).with_enabled_events(worker.enabled_events());
    let (snapshot, thin) = testing::event_pair("evt_twin", "customer.created", "cus_1");
    let mut answers = Vec::new();
    for body in [&snapshot, &thin, &snapshot, &thin] {
        answers.push(
            p.process(Some(&signed(body)), body.as_bytes())
                .await
                .kind()
                .name(),
        );
    }
    assert_eq!(answers, ["ignored", "queued", "ignored", "duplicate"]);
    let other = customer_event("evt_other", "cus_2", testing::now());
    let o = p.process(Some(&signed(&other)), other.as_bytes()).await;
    assert_eq!(o.kind().name(), "ignored");
    assert_eq!(queue.counts().await.unwrap().queued, 1);

    while worker.run_once().await.unwrap() > 0 {}
    assert_eq!(thin_runs.load(Ordering::SeqCst), 1);
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.completed, counts.dead), (1, 0), "{counts:?}");
}

/// An ack-fast processor given the workers' types still queues a type this release does
/// not know: a worker's prefix route may take it (here `invoice.*`), and the worker
/// decides. A known type no route takes is still not queued.
#[tokio::test]
async fn unknown_types_are_queued_for_a_workers_prefix_route() {
    let queue = MemoryQueue::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let worker = Worker::new(
        queue.clone(),
        EventRouter::new().on_prefix("invoice.*", move |_e| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }),
    );
    let p =
        Processor::queued(verifier(), queue.clone()).with_enabled_events(worker.enabled_events());
    let future = testing::event_json(
        "evt_future",
        "invoice.future_thing",
        r#"{"id":"in_1","object":"invoice"}"#,
    );
    let o = p.process(Some(&signed(&future)), future.as_bytes()).await;
    assert_eq!(o.kind().name(), "queued");
    let other = customer_event("evt_cust", "cus_2", testing::now());
    let o = p.process(Some(&signed(&other)), other.as_bytes()).await;
    assert_eq!(o.kind().name(), "ignored");
    while worker.run_once().await.unwrap() > 0 {}
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A thin type this release does not know whose name is a known snapshot type's
/// (`v1.` + it) is claimed under its snapshot twin's key. Given a worker's types, the
/// ack-fast processor asks the worker's thin handler whether it takes that type: if not,
/// the thin event is answered `ignored` rather than queued (queued, the worker would skip
/// it and complete the twin's key, and the snapshot event, which the worker's snapshot
/// route takes, would be answered `duplicate` and never run); if a thin prefix route
/// takes it, it is queued and runs, and its twin is the duplicate. A prefix route on
/// another stem, one whose router's account filter turns the event's account away, or
/// no thin handler at all, does not count.
#[tokio::test]
async fn a_new_thin_detail_type_does_not_take_its_snapshot_twins_key_from_the_worker() {
    use stripe_webhooks::{ThinEventRouter, ThinEventType};

    let (snapshot, thin) = new_detail_type_twins();
    // The thin router's prefix route, if any (`platform:`: its router takes the
    // platform's events only, and these are a connected account's); whether it takes
    // the new type.
    for (prefix, takes) in [
        (None, false),
        (Some("v1.treasury.*"), true),
        (Some("v1.billing.meter.*"), false),
        (Some("platform:v1.treasury.*"), false),
        (Some(""), false),
    ] {
        let queue = MemoryQueue::new();
        let runs = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let (snapshot_runs, thin_runs) = (Arc::clone(&runs), Arc::clone(&runs));
        let worker = Worker::new(
            queue.clone(),
            EventRouter::new().on_prefix("treasury.*", move |_e| {
                snapshot_runs[0].fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Ok(()) })
            }),
        );
        // `Some("")`: no thin handler at all.
        let worker = match prefix {
            Some("") => worker,
            _ => {
                let router = ThinEventRouter::new().on(ThinEventType::V1CustomerCreated, |_n| {
                    Box::pin(async { Ok(()) })
                });
                let router = match prefix {
                    Some(p) if p.starts_with("platform:") => router
                        .accounts(stripe_webhooks::AccountFilter::Platform)
                        .on_prefix(&p["platform:".len()..], |_n| Box::pin(async { Ok(()) })),
                    Some(p) => router.on_prefix(p, move |_n| {
                        thin_runs[1].fetch_add(1, Ordering::SeqCst);
                        Box::pin(async { Ok(()) })
                    }),
                    None => router,
                };
                worker.with_thin_handler(router)
            }
        };
        let answers = deliver_ack_fast(&worker, &queue, [&thin, &snapshot]).await;
        let ran = [0, 1].map(|i| runs[i].load(Ordering::SeqCst));
        if takes {
            assert_eq!(
                (answers, ran),
                (vec!["queued", "duplicate"], [0, 1]),
                "{prefix:?}"
            );
        } else {
            assert_eq!(
                (answers, ran),
                (vec!["ignored", "queued"], [1, 0]),
                "{prefix:?}"
            );
        }
    }
}

/// A known thin type with a snapshot twin, of a connected account, where the worker's
/// thin router takes the platform's events only: the thin event is answered `ignored`
/// rather than queued under the twin's key (queued, the worker would skip it and
/// complete that key, and the snapshot twin, which the snapshot route takes for every
/// account, would be a duplicate never run). For the platform's own, the thin event
/// takes the key and its twin is the duplicate.
#[tokio::test]
async fn a_thin_twin_the_workers_account_filter_turns_away_leaves_the_key_to_its_snapshot() {
    use stripe_webhooks::{AccountFilter, ThinEventRouter, ThinEventType};
    for account in [Some("acct_1"), None] {
        let object = r#"{"id":"cus_1","object":"customer"}"#;
        let created = testing::event_json("evt_snap_known", "customer.created", object);
        let mut snapshot: serde_json::Value = serde_json::from_str(&created).unwrap();
        let mut thin = ThinEventBuilder::new("evt_thin_known", "v1.customer.created")
            .related("cus_1", "customer", "/v1/customers/cus_1")
            .snapshot_event("evt_snap_known");
        if let Some(a) = account {
            snapshot["account"] = a.into();
            thin = thin.context(a);
        }
        let (snapshot, thin) = (snapshot.to_string(), thin.build());
        let queue = MemoryQueue::new();
        let runs = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let (snapshot_runs, thin_runs) = (Arc::clone(&runs), Arc::clone(&runs));
        let worker = Worker::new(
            queue.clone(),
            EventRouter::new().on_prefix("customer.*", move |_e| {
                snapshot_runs[0].fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Ok(()) })
            }),
        )
        .with_thin_handler(ThinEventRouter::new().accounts(AccountFilter::Platform).on(
            ThinEventType::V1CustomerCreated,
            move |_n| {
                thin_runs[1].fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Ok(()) })
            },
        ));
        let answers = deliver_ack_fast(&worker, &queue, [&thin, &snapshot]).await;
        let ran = [0, 1].map(|i| runs[i].load(Ordering::SeqCst));
        let want = match account {
            Some(_) => (vec!["ignored", "queued"], [1, 0]),
            None => (vec!["queued", "duplicate"], [0, 1]),
        };
        assert_eq!((answers, ran), want, "{account:?}");
    }
}

/// Delivers `bodies` in order to an ack-fast processor given `worker`'s types, then runs
/// the queue dry: the answers' names.
async fn deliver_ack_fast(
    worker: &Worker,
    queue: &MemoryQueue,
    bodies: [&str; 2],
) -> Vec<&'static str> {
    let p =
        Processor::queued(verifier(), queue.clone()).with_enabled_events(worker.enabled_events());
    let mut answers = Vec::new();
    for body in bodies {
        let o = p.process(Some(&signed(body)), body.as_bytes()).await;
        answers.push(o.kind().name());
    }
    while worker.run_once().await.unwrap() > 0 {}
    answers
}

/// A connected account's (`acct_1`) snapshot event `evt_snap` of
/// `treasury.inbound_transfer.created` and its thin twin `evt_thin_new`, of a thin type
/// this release does not know.
fn new_detail_type_twins() -> (String, String) {
    let ty = "treasury.inbound_transfer.created";
    assert!(stripe_webhooks::ThinEventType::from_wire(&format!("v1.{ty}")).is_unknown());
    let object = r#"{"id":"ibt_1","object":"treasury.inbound_transfer"}"#;
    let mut snapshot: serde_json::Value =
        serde_json::from_str(&testing::event_json("evt_snap", ty, object)).unwrap();
    snapshot["account"] = "acct_1".into();
    let thin = ThinEventBuilder::new("evt_thin_new", &format!("v1.{ty}"))
        .related(
            "ibt_1",
            "treasury.inbound_transfer",
            "/v1/treasury/inbound_transfers/ibt_1",
        )
        .snapshot_event("evt_snap")
        .context("acct_1")
        .build();
    (snapshot.to_string(), thin)
}

/// The same check, when the worker's thin handler's `handles_notification` panics: the
/// ack-fast processor queues the thin event and leaves the worker to decide, which keeps
/// the job dead with why (the snapshot twin, a duplicate, is recorded there rather than
/// lost), and the panic never reaches the delivery.
#[tokio::test]
async fn a_panicking_thin_check_leaves_a_new_detail_type_to_the_worker() {
    struct Panics;
    #[async_trait]
    impl ThinEventHandler for Panics {
        async fn handle(&self, _: &EventNotification) -> Result<(), HandlerError> {
            Ok(())
        }
        fn handles_notification(&self, n: &EventNotification) -> bool {
            assert!(!n.event_type.is_unknown(), "no such type");
            true
        }
    }
    let (snapshot, thin) = new_detail_type_twins();
    let queue = MemoryQueue::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let snapshot_runs = Arc::clone(&runs);
    let worker = Worker::new(
        queue.clone(),
        EventRouter::new().on_prefix("treasury.*", move |_e| {
            snapshot_runs.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }),
    )
    .with_thin_handler(Panics);
    let answers = deliver_ack_fast(&worker, &queue, [&thin, &snapshot]).await;
    assert_eq!(answers, ["queued", "duplicate"]);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let dead = queue.jobs(JobState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].key.as_str(), "evt_snap");
    let error = dead[0].last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("handles_notification check panicked") && error.contains("no such type"),
        "{error}"
    );
}

/// A run the queue cannot record is counted `settle_failed`, not `completed`: the job is
/// still running in the queue and runs again when its lease ends.
#[cfg(feature = "metrics")]
#[test]
fn a_completion_the_queue_cannot_record_is_counted_settle_failed() {
    let queue = MemoryQueue::new();
    let (c, text) = common::with_local_prometheus(async {
        enqueue_body(&queue, &customer_event("evt_unsettled", "cus_1", 1)).await;
        let handler = Recorder::default();
        let no_completions = Faulty {
            no_completions: true,
            ..Faulty::over(&queue)
        };
        let worker = Worker::new(no_completions, handler.clone());
        assert_eq!(worker.run_once().await.unwrap(), 1);
        assert_eq!(handler.seen(), ["evt_unsettled"]);
        queue.counts().await.unwrap()
    });
    let counted = |result: &str| {
        text.lines().any(|l| {
            l.starts_with("stripe_webhooks_jobs_total")
                && l.contains(&format!("result=\"{result}\""))
        })
    };
    assert!(counted("settle_failed"), "{text}");
    assert!(!counted("completed"), "{text}");
    assert_eq!(c.running, 1, "{c:?}");
}

/// A queue whose first take answers late: like a database finishing a statement whose
/// client stopped waiting, the take happens (on a task of its own) whether or not its
/// caller still waits.
#[derive(Clone)]
struct LateTake {
    inner: MemoryQueue,
    late: Arc<AtomicUsize>,
    /// The late take takes at once and only answers late (a statement that committed,
    /// its answer slow), rather than waiting before it takes.
    takes_first: bool,
    /// How late.
    delay: Duration,
    /// Takes started, and jobs given back (`release`).
    takes: Arc<AtomicUsize>,
    releases: Arc<AtomicUsize>,
}

impl LateTake {
    /// A memory queue whose first take is `delay` late (taking first, or waiting first).
    fn first_late(takes_first: bool, delay: Duration) -> Self {
        Self {
            inner: MemoryQueue::new(),
            late: Arc::new(AtomicUsize::new(1)),
            takes_first,
            delay,
            takes: Arc::default(),
            releases: Arc::default(),
        }
    }

    /// Waits (polling, at most 10 s) until `count` reaches `n`: a test waits for the
    /// worker's step rather than sleeping until it should have happened.
    async fn until(count: &AtomicUsize, n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while count.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The job keyed `key`, which the test queued.
    async fn record(&self, key: &str) -> stripe_webhooks::queue::JobRecord {
        self.inner.job(&key.into()).await.unwrap().unwrap()
    }
}

#[async_trait]
impl Queue for LateTake {
    async fn enqueue(&self, job: &NewJob<'_>) -> Result<Enqueued, StoreError> {
        self.inner.enqueue(job).await
    }
    async fn take(
        &self,
        max: usize,
        lease: Duration,
        ordered: bool,
    ) -> Result<Vec<stripe_webhooks::queue::Job>, StoreError> {
        self.takes.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.clone();
        let late = self
            .late
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok();
        let (takes_first, delay) = (self.takes_first, self.delay);
        let taking = tokio::spawn(async move {
            if late && !takes_first {
                tokio::time::sleep(delay).await;
            }
            let taken = inner.take(max, lease, ordered).await;
            if late && takes_first {
                tokio::time::sleep(delay).await;
            }
            taken
        });
        taking.await.unwrap()
    }
    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.inner.extend(token, lease).await
    }
    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        self.inner.complete(token).await
    }
    async fn fail(
        &self,
        token: &ClaimToken,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.inner.fail(token, error, retry_in).await
    }
    async fn release(&self, token: &ClaimToken) -> Result<(), StoreError> {
        let released = self.inner.release(token).await;
        self.releases.fetch_add(1, Ordering::SeqCst);
        released
    }
}

/// A take that answers after the job's lease may have ended (a lease of 300 ms, a take
/// of 300 ms): the worker does not start a handler it would stop at once; it records the
/// attempt as failed, saying why, so the job is retried and, were every take this slow,
/// would end dead rather than loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_taken_after_its_lease_window_is_retried_unrun() {
    let queue = LateTake::first_late(false, Duration::from_millis(300));
    let body = customer_event("evt_slow_take", "cus_1", testing::now());
    enqueue_body(&queue, &body).await;
    let handler = Recorder::default();
    let worker = Worker::new(queue.clone(), handler.clone())
        .with_store_timeout(Duration::from_secs(5))
        .with_lease(Duration::from_millis(300))
        .with_retry(RetryPolicy::new(
            3,
            Duration::from_millis(1),
            Duration::from_millis(1),
        ));
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert!(handler.seen().is_empty(), "{:?}", handler.seen());
    let rec = queue.record("evt_slow_take").await;
    assert_eq!(
        (rec.state, rec.attempts),
        (JobState::Retrying, 1),
        "{rec:?}"
    );
    let why = rec.last_error.unwrap_or_default();
    assert!(why.contains("raise the worker's lease"), "{why}");
    // The next take is prompt: the job runs.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(handler.seen(), ["evt_slow_take"]);
}

/// A take that answers after the worker's timeout still took its jobs: the worker gives
/// them back when it answers, queued again at once with the attempt not counted, rather
/// than leave them running under a lease no one holds (a lease's wait, an attempt spent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_a_timed_out_take_still_took_are_given_back() {
    let queue = LateTake::first_late(false, Duration::from_millis(300));
    let body = customer_event("evt_late_take", "cus_1", testing::now());
    enqueue_body(&queue, &body).await;
    let handler = Recorder::default();
    let worker = Worker::new(queue.clone(), handler.clone())
        .with_store_timeout(Duration::from_millis(100))
        .with_lease(Duration::from_secs(600));
    let err = worker.run_once().await.unwrap_err();
    assert!(matches!(err, StoreError::Timeout(_)), "{err:?}");
    // The late take answers at 300 ms, and its job is given back.
    LateTake::until(&queue.releases, 1, "the job given back").await;
    let rec = queue.record("evt_late_take").await;
    assert_eq!((rec.state, rec.attempts), (JobState::Queued, 0), "{rec:?}");
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(handler.seen(), ["evt_late_take"]);
    let rec = queue.record("evt_late_take").await;
    assert_eq!((rec.state, rec.attempts), (JobState::Completed, 1));
}

/// A queue whose every take answers after the store timeout (a large backlog, a busy
/// database) is still worked: each take that times out doubles the next one's timeout,
/// so the worker soon waits long enough. Before, every take timed out and gave its jobs
/// back, and nothing ever ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_takes_are_all_slow_is_still_worked() {
    let queue = LateTake {
        late: Arc::new(AtomicUsize::new(usize::MAX)),
        ..LateTake::first_late(true, Duration::from_millis(250))
    };
    let body = customer_event("evt_all_slow", "cus_1", testing::now());
    enqueue_body(&queue, &body).await;
    let handler = Recorder::default();
    let handle = Worker::new(queue.clone(), handler.clone())
        .with_store_timeout(Duration::from_millis(100))
        .with_poll_interval(Duration::from_millis(10))
        .with_lease(Duration::from_secs(600))
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while handler.seen().is_empty() {
        assert!(Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let released = queue.releases.load(Ordering::SeqCst);
    assert!(released >= 1, "no take timed out");
    // The longer timeout stays while takes answer within it: the next job's take does
    // not time out again (a reset to the store timeout did, every other take).
    let body = customer_event("evt_all_slow_2", "cus_2", testing::now());
    enqueue_body(&queue, &body).await;
    while handler.seen().len() < 2 {
        assert!(Instant::now() < deadline, "the second job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(handler.seen(), ["evt_all_slow", "evt_all_slow_2"]);
    let rec = queue.record("evt_all_slow").await;
    assert_eq!(
        (rec.state, rec.attempts),
        (JobState::Completed, 1),
        "{rec:?}"
    );
    assert_eq!(
        queue.releases.load(Ordering::SeqCst),
        released,
        "a take timed out again"
    );
}

/// A shutdown while the store holds a take up (a take may last the store timeout, here
/// a minute) ends within its grace: the worker stops waiting for the take, and gives
/// back what it took when it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_does_not_wait_out_a_slow_take() {
    let queue = LateTake::first_late(true, Duration::from_secs(2));
    let body = customer_event("evt_slow_stop", "cus_1", testing::now());
    enqueue_body(&queue, &body).await;
    let handler = Recorder::default();
    let handle = Worker::new(queue.clone(), handler.clone())
        .with_store_timeout(Duration::from_secs(60))
        .with_lease(Duration::from_secs(600))
        .spawn();
    tokio::time::sleep(Duration::from_millis(100)).await; // the take has the job
    let started = Instant::now();
    handle.shutdown(Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the shutdown took {took:?}"
    );
    assert!(handler.seen().is_empty(), "{:?}", handler.seen());
    // The take answers at 2 s; what it took is queued again, the attempt not counted.
    let mut rec = queue.record("evt_slow_stop").await;
    for _ in 0..100 {
        if rec.state == JobState::Queued {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        rec = queue.record("evt_slow_stop").await;
    }
    assert_eq!((rec.state, rec.attempts), (JobState::Queued, 0), "{rec:?}");
}

/// A job a take finds after the hard stop (the grace was over before the take answered)
/// is given back untouched when the take answers: its handler is not started only to be
/// stopped, and its attempt is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_taken_after_the_hard_stop_is_given_back_unstarted() {
    let queue = LateTake::first_late(false, Duration::from_millis(300));
    enqueue_body(
        &queue,
        &customer_event("evt_after_stop", "cus_1", testing::now()),
    )
    .await;
    let handler = Recorder::default();
    let handle = Worker::new(queue.clone(), handler.clone())
        .with_store_timeout(Duration::from_secs(2))
        .spawn();
    // The first take waits 300 ms before it takes; no grace at all.
    LateTake::until(&queue.takes, 1, "the first take").await;
    handle.shutdown(Duration::ZERO).await;
    // The take takes the job at 300 ms, and it is given back at once.
    LateTake::until(&queue.releases, 1, "the job given back").await;
    assert!(handler.seen().is_empty(), "started: {:?}", handler.seen());
    let rec = queue.record("evt_after_stop").await;
    assert_eq!((rec.state, rec.attempts), (JobState::Queued, 0), "{rec:?}");
}

/// A worker stopped while a timed-out take has not answered yet waits for it (within
/// the grace) and gives its jobs back: the runtime's end, right after the shutdown,
/// would otherwise cut the task that does, and the jobs would sit as running, an
/// attempt spent, until their lease ends.
#[test]
fn a_stopping_worker_gives_back_what_a_late_take_took() {
    let queue = LateTake::first_late(true, Duration::from_millis(300));
    // The worker's own runtime, ended as a service's is once its worker has stopped.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let body = customer_event("evt_late_stop", "cus_1", testing::now());
        enqueue_body(&queue, &body).await;
        let handle = Worker::new(queue.clone(), Recorder::default())
            .with_store_timeout(Duration::from_millis(100))
            .with_lease(Duration::from_secs(600))
            .with_poll_interval(Duration::from_secs(10))
            .spawn();
        // The first take takes the job at once, times out at 100 ms, answers at 300 ms.
        tokio::time::sleep(Duration::from_millis(150)).await;
        handle.shutdown(Duration::from_secs(5)).await;
    });
    drop(runtime);
    let rec = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(queue.record("evt_late_stop"));
    assert_eq!((rec.state, rec.attempts), (JobState::Queued, 0), "{rec:?}");
}
