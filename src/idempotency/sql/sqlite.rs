//! The SQLite store: the embedded default.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::{db_err, SqlCore};
use crate::idempotency::StoreError;

super::shipped_migrations! {
    /// The whole schema for a new database: every file under `migrations/sqlite/`, in
    /// order, for the default table name. [`SqliteStore::migrations`] gives them one by
    /// one, and [`SqliteStore::migration_sql`] for a renamed table.
    SQLITE_MIGRATION, SQLITE_MIGRATIONS = "sqlite": [
        1 "0001_webhook_events.sql",
        2 "0002_objects.sql",
        3 "0003_jobs.sql",
        4 "0004_guard_steps.sql",
        5 "0005_settle_checks_the_lock.sql",
        6 "0006_settle_updates_the_object_first.sql",
        7 "0007_park_held_back_jobs.sql",
    ]
}

/// How long a writer waits for SQLite's lock before giving up.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many SQLite virtual machine steps run between two looks at a stop flag (see
/// [`stop_on_flag`]): a few microseconds' work.
const INTERRUPT_EVERY: i32 = 1000;

/// Sets on `conn` a progress handler that stops the statement running (`SQLITE_INTERRUPT`)
/// once `flag` is up, and takes the flag down. A future dropped in the middle of a
/// statement (a handler cut at its deadline) leaves the statement running in the
/// driver's thread, holding SQLite's write lock, with the rollback queued behind it:
/// raising the flag stops it. Replaces any progress handler set before.
pub(crate) async fn stop_on_flag(
    conn: &mut sqlx::SqliteConnection,
    flag: &Arc<AtomicBool>,
) -> Result<(), sqlx::Error> {
    let flag = Arc::clone(flag);
    conn.lock_handle().await?.set_progress_handler(
        INTERRUPT_EVERY,
        // `false` stops the statement, once.
        move || !(flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::SeqCst)),
    );
    Ok(())
}

/// Sets on `conn` a commit hook that turns any commit into a rollback while `closed` is
/// up ([`HandlerRunning`](super::HandlerRunning) raises it while a transactional handler
/// runs). A write that
/// fails in certain ways (`SQLITE_FULL`, an `OR ROLLBACK` conflict) makes SQLite roll the
/// whole transaction back by itself; a handler that hides that error and writes on would
/// otherwise commit each later write on its own, outside the transaction that holds the
/// claim and its completion, and again at every redelivery. With the gate closed, each
/// such write fails instead, and `vetoed` goes up; it goes up too when the whole
/// transaction is rolled back while `closed` is up (SQLite's own rollback after such an
/// error, which a handler may hide: seen at once, rather than at the inbox's next
/// statement, which a transaction the handler opened since could let through). The
/// caller must then take the transaction as lost and close the connection (sqlx counts a
/// transaction the handler began and could not commit as still open). Replaces any
/// commit and rollback hooks set before (an `after_connect` hook's included); the hooks
/// cost a load per commit or rollback.
pub(crate) async fn veto_commits_while(
    conn: &mut sqlx::SqliteConnection,
    closed: &Arc<AtomicBool>,
    vetoed: &Arc<AtomicBool>,
) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let (gate, lost) = (Arc::clone(closed), Arc::clone(vetoed));
    // `true` lets the commit go ahead.
    handle.set_commit_hook(move || {
        let refuse = gate.load(Ordering::SeqCst);
        if refuse {
            lost.store(true, Ordering::SeqCst);
        }
        !refuse
    });
    let (gate, lost) = (Arc::clone(closed), Arc::clone(vetoed));
    // Called for a whole transaction's rollback, not for `ROLLBACK TO` a savepoint.
    handle.set_rollback_hook(move || {
        if gate.load(Ordering::SeqCst) {
            lost.store(true, Ordering::SeqCst);
        }
    });
    Ok(())
}

pub(crate) use super::HandlerRunning;

/// Raises `flag` (set on `conn` with [`stop_on_flag`]) and waits, at most `wait`, for
/// the driver's thread to be done with whatever ran (stopped, or ended), then takes the
/// flag down: SQLite asks the progress handler on a count of steps that a cached
/// statement keeps across runs, so a flag left up could stop the next statement (the
/// rollback's own). Whether the connection is idle now.
pub(crate) async fn interrupt(
    conn: &mut sqlx::SqliteConnection,
    flag: &AtomicBool,
    wait: Duration,
) -> bool {
    flag.store(true, Ordering::SeqCst);
    let idle = tokio::time::timeout(wait, async { conn.lock_handle().await.map(drop) }).await;
    flag.store(false, Ordering::SeqCst);
    matches!(idle, Ok(Ok(())))
}

/// Whether an error is SQLite's lock contention (`SQLITE_BUSY` or `SQLITE_LOCKED`).
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    sqlite_code(e).is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// SQLite's extended result code of a database error.
pub(crate) fn sqlite_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        sqlx::Error::Database(d) => d.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    }
}

/// An [`IdempotencyStore`](crate::IdempotencyStore) in a SQLite database: durable across restarts, and safe for
/// several processes sharing one file.
///
/// Claims are one `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING` statement, and lease
/// expiry is judged by SQLite's clock. [`SqliteStore::connect`] opens the file in WAL mode
/// with a 5 s busy timeout; a pool you build yourself should do the same
/// (`journal_mode(Wal)`, `busy_timeout`), or concurrent writers see `SQLITE_BUSY`.
///
/// Durable across a process crash; with `connect`'s `synchronous = NORMAL`, a power cut
/// or an OS crash can undo the last commits. An undone completion lets the event's
/// handler run again if the event comes again (a reconciler lists it); an undone
/// watermark lets an older event through once; an undone inbox transaction takes its
/// effects with it. Where that matters,
/// build the pool from [`connect_options`](Self::connect_options)`(path)
/// .synchronous(SqliteSynchronous::Full)`, pass it to [`new`](Self::new) and call
/// [`migrate`](Self::migrate): one fsync per commit.
///
/// ```no_run
/// # async fn f() -> Result<(), stripe_webhooks::StoreError> {
/// use stripe_webhooks::SqliteStore;
///
/// let store = SqliteStore::connect("stripe-webhooks.db").await?; // creates and migrates
/// # Ok(()) }
/// ```
///
/// For handlers whose effects live in the same database, [`SqliteStore::inbox`] runs the
/// handler inside the claim's transaction.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) core: SqlCore<Sqlite>,
}

impl SqliteStore {
    /// A store on a pool the application already owns, with the default table
    /// (`stripe_webhook_events`) and retention (30 days). Call
    /// [`migrate`](Self::migrate) once before use.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            core: SqlCore::new(pool),
        }
    }

    /// Opens (creating if needed) a database file in WAL mode with a 5 s busy timeout, and
    /// applies the schema.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the file cannot be opened or migrated.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let options = Self::connect_options(path);
        // Switching a new file to WAL, or two processes creating the schema at once, can
        // report SQLITE_BUSY without waiting on the busy timeout: retry for a while.
        let mut tries = 0;
        loop {
            let attempt = async {
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(options.clone())
                    .await?;
                let store = Self::new(pool);
                super::migrate_versioned!(&store.core, "BEGIN IMMEDIATE", None::<String>).await?;
                Ok::<_, sqlx::Error>(store)
            };
            match attempt.await {
                Ok(store) => return Ok(store),
                Err(e) if is_busy(&e) && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(db_err(e)),
            }
        }
    }

    /// The connection options [`connect`](Self::connect) uses: create if missing, WAL,
    /// `synchronous = NORMAL`, 5 s busy timeout. Use them for your own pool on the same
    /// file.
    pub fn connect_options(path: impl AsRef<Path>) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
    }

    /// Applies the [migrations](Self::migrations) this database has not had yet, each
    /// once, in version order, in one `BEGIN IMMEDIATE` transaction, and records them in
    /// the table `{table}_migrations`; answers the versions it applied now (none when the
    /// schema is up to date; such a database is only read, with no write lock). Safe to run
    /// again, and from several processes at once.
    /// [`connect`](Self::connect) runs it.
    ///
    /// A database migrated before versions were recorded (this crate before 0.1) has every
    /// migration applied once more and recorded: those migrations only create what is
    /// missing.
    ///
    /// A database that records versions this build does not know (migrated by a newer
    /// release, as after a rollback) is left as it is and answers none; with the
    /// `tracing` feature, a warning names those versions.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if a statement fails; nothing of that run is applied.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        super::migrate_versioned!(&self.core, "BEGIN IMMEDIATE", None::<String>)
            .await
            .map_err(db_err)
    }
}

super::store_impls!(SqliteStore, SqlitePool);

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use sqlx::{Connection, Executor, Row};

    use super::{veto_commits_while, HandlerRunning};

    /// A handler's run that ends without `done` (its future cancelled mid-statement)
    /// leaves the gate closed: a `COMMIT` still to run on the connection (the handler's
    /// own, left in the driver's thread) is turned into a rollback. `done` opens it.
    #[tokio::test]
    async fn a_run_dropped_without_done_keeps_the_commit_gate_closed() {
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("an in-memory database");
        conn.execute("CREATE TABLE t (x INTEGER)")
            .await
            .expect("a table");
        let (closed, vetoed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        veto_commits_while(&mut conn, &closed, &vetoed)
            .await
            .expect("the hooks");

        drop(HandlerRunning::new(&closed));
        assert!(
            closed.load(Ordering::SeqCst),
            "dropped: the gate stays closed"
        );
        conn.execute("BEGIN; INSERT INTO t VALUES (1)")
            .await
            .expect("a write");
        assert!(
            conn.execute("COMMIT").await.is_err(),
            "the commit is refused"
        );
        assert!(vetoed.load(Ordering::SeqCst));

        HandlerRunning::new(&closed).done();
        assert!(!closed.load(Ordering::SeqCst), "done: the gate opens");
        conn.execute("INSERT INTO t VALUES (2)")
            .await
            .expect("a write");
        let rows = sqlx::query("SELECT x FROM t")
            .fetch_all(&mut conn)
            .await
            .expect("a read");
        let xs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(xs, [2], "only the write after `done` committed");
    }
}
