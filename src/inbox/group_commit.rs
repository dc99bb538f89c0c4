//! The SQLite inbox's group-commit engine: one writer connection, and the transaction
//! that deliveries queued behind each other share.
//!
//! Deliveries queue for the writer in arrival order. The one holding it works inside the
//! open batch (a transaction), in a savepoint of its own; the last one in the queue
//! commits for all of them (at most [`MAX_BATCH`] deliveries, or [`MAX_BATCH_AGE`] after
//! the first). WAL checkpoints run beside the writer, never in its commits.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use sqlx::{Sqlite, SqlitePool};
use tokio::sync::{watch, Mutex, MutexGuard};

use crate::event::EventId;
use crate::idempotency::sql::db_err;
#[cfg(doc)]
use crate::idempotency::sql::sqlite::HandlerRunning;
use crate::idempotency::sql::sqlite::{
    is_busy, sqlite_code, stop_on_flag, veto_commits_while, BUSY_TIMEOUT,
};
use crate::idempotency::StoreError;
use crate::processor::store_call;

/// How many committed deliveries (a few pages each) between two WAL checkpoints: about
/// the 1000 pages at which SQLite would checkpoint by itself.
const CHECKPOINT_EVERY: usize = 256;

/// The most deliveries one inbox transaction carries.
pub(super) const MAX_BATCH: usize = 32;

/// How long after its first delivery an inbox transaction commits at the latest (it
/// commits sooner whenever no delivery is waiting).
pub(super) const MAX_BATCH_AGE: Duration = Duration::from_millis(20);

/// The most suspects remembered (see [`Writer::suspects`]); past it, the set starts over.
const MAX_SUSPECTS: usize = 4096;

/// The inbox's writer: one connection (a pool of one, opened on first use with the store
/// pool's options, so that its transaction can be kept between deliveries) and the
/// transaction in progress, if any.
#[derive(Default)]
pub(super) struct Writer {
    pool: Option<SqlitePool>,
    pub(super) batch: Option<Batch>,
    /// Numbers the batches, so a finisher commits only the one it was started for.
    batches: u64,
    /// Deliveries committed since the last checkpoint was started.
    since_checkpoint: usize,
    /// Events that were in a transaction that failed because of some delivery's writes
    /// (refused at COMMIT, or rolled back by SQLite itself). Until each commits, each
    /// runs in a transaction of its own, so that the culprit fails alone and is recorded
    /// as failed.
    pub(super) suspects: HashSet<EventId>,
    /// Set to stop the statement running on the writer's connection (see
    /// [`Batch::interrupt`]); shared with the connection's progress handler.
    interrupt: Arc<AtomicBool>,
}

/// The error a batch whose handler made a commit the gate refused fails its commit with.
pub(super) const VETOED: &str = "the inbox transaction was lost while a handler ran: \
    SQLite rolled it back (after a write that failed, though the handler went on), or \
    the handler ended it itself; nothing it wrote was kept";

impl Writer {
    /// The writer connection's pool, if it is open.
    pub(super) fn pool(&self) -> Option<&SqlitePool> {
        self.pool.as_ref()
    }

    /// Makes every event of a lost transaction a suspect.
    pub(super) fn suspect(&mut self, events: &[EventId]) {
        if self.suspects.len() + events.len() > MAX_SUSPECTS {
            self.suspects.clear();
        }
        self.suspects.extend(events.iter().cloned());
    }

    /// Drops the writer connection after a transaction ended badly: SQLite may have
    /// rolled it back by itself, or a cancelled `BEGIN` may have left it open, and sqlx
    /// would then refuse every later `BEGIN` on it. The next delivery opens a fresh one;
    /// closing this one rolls back whatever it still holds.
    pub(super) fn discard_connection(&mut self) {
        if let Some(pool) = self.pool.take() {
            tokio::spawn(async move { pool.close().await });
        }
    }
}

/// An open inbox transaction and the deliveries waiting for its commit. Dropped without
/// committing (an error, a timeout, a cancelled delivery), it rolls back and its
/// deliveries are answered 503.
pub(super) struct Batch {
    pub(super) tx: sqlx::Transaction<'static, Sqlite>,
    number: u64,
    /// The events of its deliveries (one each), to suspect if it fails because of one
    /// of them.
    pub(super) events: Vec<EventId>,
    /// Whether a finisher task watches this batch (see [`GroupCommit::leave_open`]).
    finisher: bool,
    /// Whether the last delivery's savepoint is still open (released by the next one).
    pub(super) savepoint_open: bool,
    opened: Instant,
    pub(super) committed: watch::Sender<Option<bool>>,
    /// Stops the statement running on the batch's connection, if one is: a handler
    /// dropped at its deadline (or by a panic) in the middle of a statement leaves it
    /// running in the driver's thread, holding SQLite's write lock until it ends, with
    /// the delivery's undo queued behind it. The connection's progress handler
    /// ([`stop_on_flag`]) stops the first statement that
    /// runs that long after this is set, and clears it; the delivery clears it once the
    /// connection's worker is idle (in case no statement was running), before its undo,
    /// and each delivery clears it as it starts. (An interrupted write rolls the whole
    /// transaction back, which the undo then finds, as for any rolled-back batch.)
    pub(super) interrupt: Arc<AtomicBool>,
    /// Up while one of its handlers runs ([`HandlerRunning`]): the connection's commit
    /// hook ([`veto_commits_while`]) then turns a commit into a rollback, so a handler
    /// that hides an error after which SQLite rolled the batch back cannot commit its
    /// later writes on their own.
    pub(super) handler_running: Arc<AtomicBool>,
    /// Up once the commit hook refused a commit, or the whole transaction was rolled
    /// back, while a handler ran: the batch is lost (its commit is not sent) and the
    /// connection is closed.
    pub(super) vetoed: Arc<AtomicBool>,
}

impl Batch {
    /// Whether the batch should commit now rather than wait for more deliveries.
    pub(super) fn is_full(&self) -> bool {
        self.events.len() >= MAX_BATCH || self.opened.elapsed() >= MAX_BATCH_AGE
    }
}

/// Why a batch did not commit.
pub(super) enum CommitError {
    /// Some delivery's writes are at fault: a constraint checked at COMMIT (a deferred
    /// foreign key), or SQLite rolled the transaction back by itself.
    Writes(sqlx::Error),
    /// The store: busy, down, or too slow.
    Store(StoreError),
}

impl CommitError {
    pub(super) fn into_store_error(self) -> StoreError {
        match self {
            CommitError::Writes(e) => db_err(e),
            CommitError::Store(e) => e,
        }
    }
}

/// Whether an error is a constraint (`SQLITE_CONSTRAINT`).
fn is_constraint(e: &sqlx::Error) -> bool {
    sqlite_code(e).is_some_and(|c| c & 0xff == 19)
}

/// Whether an error says the transaction is gone: SQLite rolled it back by itself (a
/// write with `ON CONFLICT ROLLBACK`, `RAISE(ROLLBACK)`, `SQLITE_FULL`…), so the
/// savepoint or the transaction that the inbox opened no longer exists.
pub(super) fn is_rolled_back(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let m = d.message();
            m.contains("no such savepoint") || m.contains("no transaction is active")
        }
        sqlx::Error::Protocol(m) => m == VETOED,
        _ => false,
    }
}

/// Waiting past the busy timeout for the one write lock (another delivery's transaction
/// held it) is a `Timeout`; anything else means the store is down. Both are answered 503,
/// and Stripe delivers again.
pub(super) fn busy_or_down(e: sqlx::Error) -> StoreError {
    if is_busy(&e) {
        StoreError::Timeout(BUSY_TIMEOUT)
    } else {
        db_err(e)
    }
}

/// Commits a batch and tells its deliveries.
async fn commit(batch: Batch, t: Duration) -> Result<(), CommitError> {
    let Batch {
        tx,
        committed,
        vetoed,
        ..
    } = batch;
    // Not sent: sqlx's count of open transactions no longer matches SQLite's, and a
    // `COMMIT` it thinks nested might do nothing and report success.
    if vetoed.load(Ordering::SeqCst) {
        committed.send_replace(Some(false));
        return Err(CommitError::Writes(sqlx::Error::Protocol(
            VETOED.to_owned(),
        )));
    }
    let result = match tokio::time::timeout(t, tx.commit()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if is_constraint(&e) || is_rolled_back(&e) => Err(CommitError::Writes(e)),
        Ok(Err(e)) => Err(CommitError::Store(busy_or_down(e))),
        Err(_) => Err(CommitError::Store(StoreError::Timeout(t))),
    };
    committed.send_replace(Some(result.is_ok()));
    result
}

/// Commits a batch on its writer's behalf: on success its events are no longer suspect;
/// a failure of the writes makes every one of them suspect;
/// any other failure drops the connection.
async fn commit_batch(
    writer: &mut Writer,
    mut batch: Batch,
    t: Duration,
) -> Result<(), CommitError> {
    let events = std::mem::take(&mut batch.events);
    let result = commit(batch, t).await;
    match &result {
        Ok(()) => {
            for id in &events {
                writer.suspects.remove(id);
            }
        }
        Err(CommitError::Writes(e)) => {
            // One alone too: when another delivery, the finisher or a checkpoint
            // committed its batch, its own path answers 503 without recording the
            // failure, and its retry must then run alone rather than in a shared batch.
            writer.suspect(&events);
            if is_rolled_back(e) {
                writer.discard_connection();
            }
        }
        Err(CommitError::Store(_)) => writer.discard_connection(),
    }
    result
}

/// Counts a delivery as waiting for the writer for as long as it lives, cancelled or not.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn count(queued: &'a AtomicUsize) -> Self {
        queued.fetch_add(1, Ordering::SeqCst);
        Self(queued)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Clears the "checkpoint running" flag when the checkpoint task ends, however it ends.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The writer and the books around it.
pub(super) struct GroupCommit {
    /// The store's pool: its options open the writer, its connections checkpoint.
    pool: SqlitePool,
    writer: Arc<Mutex<Writer>>,
    /// Deliveries waiting for the writer: while there are some, a batch stays open.
    queued: AtomicUsize,
    /// Whether a background WAL checkpoint is running.
    checkpointing: Arc<AtomicBool>,
}

impl GroupCommit {
    pub(super) fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            writer: Arc::new(Mutex::new(Writer::default())),
            queued: AtomicUsize::new(0),
            checkpointing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Waits for the writer, at most SQLite's busy timeout (it is waiting for SQLite's
    /// write lock, after all).
    pub(super) async fn lock(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        let _queued = Queued::count(&self.queued);
        tokio::time::timeout(BUSY_TIMEOUT, self.writer.lock())
            .await
            .map_err(|_| StoreError::Timeout(BUSY_TIMEOUT))
    }

    /// Whether another delivery waits for the writer.
    pub(super) fn others_waiting(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > 0
    }

    /// Commits a batch and keeps the books: suspects, connection, checkpoints.
    pub(super) async fn finish(
        &self,
        writer: &mut Writer,
        batch: Batch,
        t: Duration,
    ) -> Result<(), CommitError> {
        let members = batch.events.len();
        let result = commit_batch(writer, batch, t).await;
        if result.is_ok() {
            self.checkpoint_soon(writer, members);
        }
        result
    }

    /// The writer never checkpoints the WAL itself: a checkpoint in its commit would hold
    /// up every delivery queued behind it (hundreds of milliseconds once the file is
    /// large). Instead, every [`CHECKPOINT_EVERY`] deliveries, a task checkpoints from a
    /// connection of the store's pool: first beside the writer (the bulk of the pages and
    /// the `fsync`), then once more with the writer paused for a moment, to copy the few
    /// pages written meanwhile. A complete checkpoint lets the next transaction start
    /// the WAL over, so it does not grow without end under steady load.
    fn checkpoint_soon(&self, writer: &mut Writer, committed: usize) {
        writer.since_checkpoint += committed;
        if writer.since_checkpoint < CHECKPOINT_EVERY
            || self.checkpointing.swap(true, Ordering::SeqCst)
        {
            return;
        }
        writer.since_checkpoint = 0;
        let pool = self.pool.clone();
        let (shared, running) = (Arc::clone(&self.writer), Arc::clone(&self.checkpointing));
        tokio::spawn(async move {
            // Cleared however the task ends, or checkpoints would stop for good.
            let _running = Running(running);
            let t = BUSY_TIMEOUT + Duration::from_secs(1);
            // Best effort: whatever a checkpoint leaves, the next one copies.
            let checkpoint = "PRAGMA wal_checkpoint(PASSIVE)";
            {
                let Ok(Ok(mut conn)) = tokio::time::timeout(t, pool.acquire()).await else {
                    return;
                };
                let _ = tokio::time::timeout(t, sqlx::query(checkpoint).execute(&mut *conn)).await;
                // The connection goes back to the pool here: held while waiting for the
                // writer, it would starve the store's other users (a pool of one for up
                // to the busy timeout).
            }
            let mut writer = shared.lock().await;
            if let Some(batch) = writer.batch.take() {
                let _ = commit_batch(&mut writer, batch, t).await;
            }
            // Only a connection that is free now: waiting for one would pause every
            // delivery. Only the pages written since the first step: a short pause.
            let Some(mut conn) = pool.try_acquire() else {
                return;
            };
            let pause = Duration::from_secs(1);
            let _ = tokio::time::timeout(pause, sqlx::query(checkpoint).execute(&mut *conn)).await;
        });
    }

    /// Leaves a batch open for the delivery queued next. In case that delivery never
    /// takes it (it gave up waiting, or was cancelled), a finisher task commits the
    /// batch a little later if it is still open.
    pub(super) fn leave_open(&self, writer: &mut Writer, mut batch: Batch) {
        if !batch.finisher {
            batch.finisher = true;
            let (shared, number) = (Arc::clone(&self.writer), batch.number);
            tokio::spawn(async move {
                tokio::time::sleep(MAX_BATCH_AGE * 2).await;
                let mut writer = shared.lock().await;
                if writer.batch.as_ref().is_some_and(|b| b.number == number) {
                    if let Some(batch) = writer.batch.take() {
                        // Its deliveries hear the result; nobody else is waiting for it.
                        let t = BUSY_TIMEOUT + Duration::from_secs(1);
                        let _ = commit_batch(&mut writer, batch, t).await;
                    }
                }
            });
        }
        writer.batch = Some(batch);
    }

    /// Opens a batch; if the connection refuses (stuck in a transaction sqlx lost track
    /// of), once more on a fresh connection. A lock held by another process is waited
    /// for only once.
    pub(super) async fn open_fresh(
        &self,
        writer: &mut Writer,
        t: Duration,
    ) -> Result<Batch, StoreError> {
        match self.open_batch(writer, t).await {
            Ok(batch) => Ok(batch),
            Err(e @ StoreError::Timeout(_)) => Err(e),
            Err(_) => {
                writer.discard_connection();
                let opened = self.open_batch(writer, t).await;
                if opened.is_err() {
                    writer.discard_connection();
                }
                opened
            }
        }
    }

    async fn open_batch(&self, writer: &mut Writer, t: Duration) -> Result<Batch, StoreError> {
        let interrupt = Arc::clone(&writer.interrupt);
        // Each batch's own: one left up (a statement that could not be stopped) refuses
        // only its connection's commits, and that connection is then closed.
        let handler_running = Arc::new(AtomicBool::new(false));
        let vetoed = Arc::new(AtomicBool::new(false));
        let pool = writer.pool.get_or_insert_with(|| {
            // The store pool's own options, its `after_connect` hook included (a
            // `PRAGMA synchronous = FULL`, or SQL functions the handlers call, set there
            // must hold on this connection too), for one connection.
            self.pool
                .options()
                .clone()
                .min_connections(0)
                .max_connections(1)
                .acquire_timeout(BUSY_TIMEOUT)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                // Checkpoints run beside it (see `checkpoint_soon`), not in its commits.
                .connect_lazy_with(
                    (*self.pool.connect_options())
                        .clone()
                        .pragma("wal_autocheckpoint", "0"),
                )
        });
        let tx = store_call(t, async {
            let mut tx = pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(busy_or_down)?;
            // The progress handler that stops a statement a cut handler left running
            // (see `Batch::interrupt`), set on the connection each batch runs on: sqlx
            // keeps one `after_connect` hook per pool, the store pool's here. Setting it
            // again replaces it.
            stop_on_flag(&mut tx, &interrupt)
                .await
                .map_err(busy_or_down)?;
            veto_commits_while(&mut tx, &handler_running, &vetoed)
                .await
                .map_err(busy_or_down)?;
            Ok(tx)
        })
        .await?;
        writer.batches += 1;
        Ok(Batch {
            tx,
            number: writer.batches,
            events: Vec::new(),
            finisher: false,
            savepoint_open: false,
            opened: Instant::now(),
            committed: watch::Sender::new(None),
            interrupt,
            handler_running,
            vetoed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqlitePoolOptions;

    /// The checkpoint task waits for the writer without holding a connection of the
    /// store's pool, so a pool of one still serves the store's reads meanwhile.
    #[tokio::test]
    async fn a_checkpoint_waiting_for_the_writer_holds_no_pool_connection() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("an in-memory database opens");
        let engine = GroupCommit::new(pool.clone());
        // The pool's one connection held here first, so the task waits for it.
        let held = pool.acquire().await.expect("the pool's connection");
        let mut writer = engine.lock().await.expect("the writer is free");
        engine.checkpoint_soon(&mut writer, CHECKPOINT_EVERY);
        // On this one-thread runtime the task runs while the test sleeps: it is waiting
        // for the connection when it is given back, so it takes it before the test asks
        // again, checkpoints, then waits for the writer, which the test holds.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
        let reader = tokio::time::timeout(Duration::from_secs(3), pool.acquire()).await;
        assert!(
            matches!(reader, Ok(Ok(_))),
            "the pool's one connection was held while the checkpoint waited for the writer"
        );
        drop(reader);
        drop(writer);
    }
}
