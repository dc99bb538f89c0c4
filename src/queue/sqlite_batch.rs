//! SQLite's enqueue batcher: concurrent enqueues share one multi-row `INSERT`.
//!
//! SQLite has one writer at a time, and each autocommit `INSERT` pays for a transaction
//! of its own (the lock, the WAL frames of every page it touched, six b-trees). Under a
//! burst of deliveries the enqueues wait on each other anyway, so a single task writes
//! them: it takes whatever is waiting (at most [`MAX_ROWS`]) and inserts it in one
//! statement, `INSERT … VALUES (…), (…) ON CONFLICT (job_key) DO NOTHING RETURNING
//! job_key`, whose answer tells each enqueue whether it was queued or a duplicate. When
//! nothing else waits, a batch is one row and nothing is delayed. The task writes on a
//! connection of its own, and WAL checkpoints run beside it (see [`write`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{Enqueued, NewJob};
use crate::event::EventId;
use crate::idempotency::StoreError;

/// The most rows one statement inserts (7 parameters each, far below SQLite's 32,766).
pub(super) const MAX_ROWS: usize = 128;

/// One enqueue handed to the writer task: the job, owned (its body is copied once, to
/// cross to the task), and where to send the answer.
struct Pending {
    key: EventId,
    event_id: EventId,
    event_type: String,
    kind: &'static str,
    object_id: Option<String>,
    created: i64,
    body: Vec<u8>,
    reply: oneshot::Sender<Result<Enqueued, StoreError>>,
}

/// The writer task's handle, started on the first enqueue and shared by the queue's
/// clones. When the runtime that ran the task is gone, the next enqueue starts another.
#[derive(Debug, Clone)]
pub(super) struct Batcher {
    pool: SqlitePool,
    jobs_table: Arc<str>,
    tx: Arc<Mutex<Option<mpsc::Sender<Pending>>>>,
}

impl Batcher {
    pub(super) fn new(pool: SqlitePool, jobs_table: Arc<str>) -> Self {
        Self {
            pool,
            jobs_table,
            tx: Arc::default(),
        }
    }

    fn sender(&self) -> mpsc::Sender<Pending> {
        let mut slot = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = slot.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(4 * MAX_ROWS);
        // A connection of its own, opened with the pool's options: the pool's connections
        // may all be held (an inbox worker keeps one per running job), and enqueues must
        // not wait for them. The pool's own options, its `after_connect` hook included
        // (a `PRAGMA synchronous = FULL` set there must hold for the enqueues' commits
        // too), for one connection.
        let writer = self
            .pool
            .options()
            .clone()
            .min_connections(0)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            // Checkpoints run beside it (see `write`), never in its commits.
            .connect_lazy_with(
                (*self.pool.connect_options())
                    .clone()
                    .pragma("wal_autocheckpoint", "0")
                    // The key index takes random inserts: keep its pages in memory.
                    .pragma("cache_size", "-32768")
                    // One prepared statement per batch size, kept.
                    .statement_cache_capacity(MAX_ROWS + 8),
            );
        tokio::spawn(write(
            writer,
            self.pool.clone(),
            Arc::clone(&self.jobs_table),
            rx,
        ));
        *slot = Some(tx.clone());
        tx
    }

    /// Queues `job` through the writer task.
    pub(super) async fn enqueue(&self, job: &NewJob<'_>) -> Result<Enqueued, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            key: job.key.clone(),
            event_id: job.event_id.clone(),
            event_type: job.event_type.clone(),
            kind: job.kind.as_str(),
            object_id: job.object_id.clone(),
            created: job.created,
            body: job.body.to_vec(),
            reply,
        };
        if self.sender().send(pending).await.is_err() {
            return Err(StoreError::unavailable("the SQLite enqueue writer stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::unavailable("the SQLite enqueue writer stopped")))
    }
}

/// How many rows (about a page each) between two WAL checkpoints: about the 1000 pages at
/// which SQLite would checkpoint by itself.
const CHECKPOINT_EVERY: usize = 256;

/// How long the WAL may grow (in frames, 4 KiB each: 32 MiB) before the writer stops to
/// copy what the background checkpoints could not, so that the WAL starts over.
const CATCH_UP_FRAMES: i64 = 8192;

/// A background checkpoint this short copied only a few pages: what is left for the
/// writer's own stop is as little.
const SHORT_ROUND: Duration = Duration::from_millis(2);

/// The most background checkpoints in a row before the writer's stop.
const CATCH_UP_ROUNDS: usize = 6;

/// One background checkpoint, on a connection of the store's pool. When the WAL is long,
/// it checkpoints again (each round copies what the writer wrote during the one before,
/// so rounds get shorter) until a round is short, and then asks the writer to stop
/// between two batches for the rest.
async fn checkpoint_beside(pool: &SqlitePool, catch_up: &AtomicBool) {
    for _ in 0..CATCH_UP_ROUNDS {
        let started = Instant::now();
        // (busy, frames in the WAL, frames copied)
        let round = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(pool)
            .await;
        match round {
            Ok((_, log, _)) if log >= CATCH_UP_FRAMES => {
                if started.elapsed() <= SHORT_ROUND {
                    break;
                }
            }
            // A short WAL, or an error the next checkpoint will meet again.
            _ => return,
        }
    }
    catch_up.store(true, Ordering::SeqCst);
}

/// Clears a flag when dropped, however the task holding it ends.
struct Clear(Arc<AtomicBool>);

impl Drop for Clear {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The writer task: one statement per batch of waiting enqueues, until every sender is
/// gone.
///
/// The writer never checkpoints the WAL in its commits (a checkpoint there would hold up
/// every enqueue waiting behind it, for the copy and two `fsync`s). Every
/// [`CHECKPOINT_EVERY`] rows, a task checkpoints from a connection of the store's pool,
/// beside the writer (see [`checkpoint_beside`]). SQLite starts the WAL over only when a
/// write transaction begins after a checkpoint copied every frame; under steady load the
/// writer's next batch has begun before the background checkpoint ends, so the WAL goes
/// on growing. Once it holds [`CATCH_UP_FRAMES`], the writer itself copies the few pages
/// written since the last background round, between two batches, and its next batch
/// starts the WAL over. Measured at c=64: stopping after every background checkpoint
/// made one batch in ten wait 4 to 10 ms; stopping once the WAL is long, after a single
/// round, 10 to 25 ms (the round is long, and the writer copies all it wrote meanwhile);
/// after rounds until one is short, 1 to 3 ms mostly.
async fn write(
    pool: SqlitePool,
    store_pool: SqlitePool,
    jobs: Arc<str>,
    mut rx: mpsc::Receiver<Pending>,
) {
    let now = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
    // Anonymous `?`s, bound in order: sqlx asks SQLite each parameter's name, which for
    // numbered ones (`?7`) is a walk of the statement's name list, so a batch of `n`
    // numbered parameters cost `n²` steps.
    let row = format!("(?, ?, ?, ?, ?, ?, ?, 'queued', 0, {now}, {now})");
    let checkpointing = Arc::new(AtomicBool::new(false));
    let catch_up = Arc::new(AtomicBool::new(false));
    let mut since_checkpoint = 0usize;
    let mut batch = Vec::with_capacity(MAX_ROWS);
    while let Some(first) = rx.recv().await {
        if catch_up.swap(false, Ordering::SeqCst) {
            // Best effort: whatever it leaves, the next checkpoint copies.
            let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await;
        }
        batch.push(first);
        while batch.len() < MAX_ROWS {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut sql = format!(
            "INSERT INTO {jobs} (job_key, event_id, event_type, kind, object_id, created, body, \
             state, attempts, run_at, enqueued_at) VALUES "
        );
        for i in 0..batch.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&row);
        }
        sql.push_str(" ON CONFLICT (job_key) DO NOTHING RETURNING job_key");
        let mut q = sqlx::query(&sql);
        for p in &batch {
            q = q
                .bind(p.key.as_str())
                .bind(p.event_id.as_str())
                .bind(p.event_type.as_str())
                .bind(p.kind)
                .bind(p.object_id.as_deref())
                .bind(p.created)
                .bind(p.body.as_slice());
        }
        match q.fetch_all(&pool).await {
            Ok(rows) => {
                since_checkpoint += batch.len();
                if since_checkpoint >= CHECKPOINT_EVERY
                    && !checkpointing.swap(true, Ordering::SeqCst)
                {
                    since_checkpoint = 0;
                    let (store_pool, running, done) = (
                        store_pool.clone(),
                        Arc::clone(&checkpointing),
                        Arc::clone(&catch_up),
                    );
                    tokio::spawn(async move {
                        let _running = Clear(running);
                        checkpoint_beside(&store_pool, &done).await;
                    });
                }
                let mut queued: HashSet<String> = rows
                    .iter()
                    .filter_map(|r| r.try_get::<String, _>(0).ok())
                    .collect();
                for p in batch.drain(..) {
                    // A key twice in one batch: the first is queued, the rest duplicates.
                    let answer = if queued.remove(p.key.as_str()) {
                        Enqueued::Queued
                    } else {
                        Enqueued::Duplicate
                    };
                    let _ = p.reply.send(Ok(answer));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(db_err_shared(&e)));
                }
            }
        }
    }
}

/// The batch's error, for each of its enqueues.
fn db_err_shared(e: &Arc<sqlx::Error>) -> StoreError {
    StoreError::unavailable(SharedError(Arc::clone(e)))
}

/// An error shared by every enqueue of a failed batch.
#[derive(Debug)]
struct SharedError(Arc<sqlx::Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}
