//! The SQLite store: the embedded default.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool};
use tokio::sync::watch;

use super::{
    lease_ms, new_fence, retry_after_ms, truncate_error, validate_name, with_table, Claim,
    ClaimToken, EventRecord, IdempotencyStore, RecordStatus, StoreError, TransactionalHandler,
    DEFAULT_RETENTION, DEFAULT_TABLE,
};
use crate::event::{Event, EventId};
use crate::handler::HandlerError;
use crate::processor::{
    run_handler, store_call, DispatchSettings, Dispatched, Dispatcher, OutcomeKind,
};

/// The schema, as shipped in `migrations/sqlite/0001_webhook_events.sql`, for the default
/// table name. Use [`SqliteStore::migration_sql`] for a renamed table.
pub const SQLITE_MIGRATION: &str = include_str!("../../migrations/sqlite/0001_webhook_events.sql");

/// SQLite's own clock in Unix milliseconds; stable within one statement.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// How long a writer waits for SQLite's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The savepoint each inbox delivery runs in.
const SAVEPOINT: &str = "stripe_webhooks_delivery";

/// How many rows [`purge_expired`](IdempotencyStore::purge_expired) deletes per statement.
const PURGE_BATCH: i64 = 1000;

#[derive(Debug)]
struct Sql {
    claim: String,
    /// Inbox mode's claim, in a savepoint of its own: the row is written completed at
    /// once. Inside the inbox's transaction nobody else can see it before the commit,
    /// and a rollback removes it.
    inbox_claim: String,
    /// The same, releasing the previous delivery's savepoint first.
    inbox_next_claim: String,
    /// Rolls back a failed delivery's savepoint and records the failure.
    inbox_failed: String,
    /// Records a failure on its own (after a transaction that could not commit).
    record_failure: String,
    state: String,
    complete: String,
    release: String,
    extend: String,
    record: String,
    failed: String,
    purge: String,
}

impl Sql {
    fn new(t: &str) -> Self {
        let inbox_upsert = format!(
            "INSERT INTO {t} (event_id, event_type, status, attempts, fence, lease_until, first_seen, updated_at, completed_at) \
             VALUES (?1, ?2, 'completed', 1, ?3, NULL, {NOW_MS}, {NOW_MS}, {NOW_MS}) \
             ON CONFLICT (event_id) DO UPDATE SET status = 'completed', attempts = {t}.attempts + 1, \
             fence = excluded.fence, lease_until = NULL, updated_at = excluded.updated_at, \
             completed_at = excluded.completed_at \
             WHERE {t}.status = 'failed' OR ({t}.status = 'processing' AND {t}.lease_until <= excluded.updated_at) \
             RETURNING attempts"
        );
        let record_failure = format!(
            "INSERT INTO {t} (event_id, event_type, status, attempts, fence, lease_until, last_error, first_seen, updated_at) \
             VALUES (?1, ?2, 'failed', ?3, ?4, NULL, ?5, {NOW_MS}, {NOW_MS}) \
             ON CONFLICT (event_id) DO UPDATE SET status = 'failed', attempts = excluded.attempts, \
             fence = excluded.fence, lease_until = NULL, last_error = excluded.last_error, updated_at = excluded.updated_at \
             WHERE {t}.status = 'failed' OR ({t}.status = 'processing' AND {t}.lease_until <= excluded.updated_at)"
        );
        Self {
            claim: format!(
                "INSERT INTO {t} (event_id, event_type, status, attempts, fence, lease_until, first_seen, updated_at) \
                 VALUES (?1, ?2, 'processing', 1, ?3, {NOW_MS} + ?4, {NOW_MS}, {NOW_MS}) \
                 ON CONFLICT (event_id) DO UPDATE SET status = 'processing', attempts = {t}.attempts + 1, \
                 fence = excluded.fence, lease_until = excluded.lease_until, updated_at = excluded.updated_at \
                 WHERE {t}.status = 'failed' OR ({t}.status = 'processing' AND {t}.lease_until <= excluded.updated_at) \
                 RETURNING attempts"
            ),
            inbox_claim: format!("SAVEPOINT {SAVEPOINT}; {inbox_upsert}"),
            inbox_next_claim: format!(
                "RELEASE {SAVEPOINT}; SAVEPOINT {SAVEPOINT}; {inbox_upsert}"
            ),
            inbox_failed: format!(
                "ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}; {record_failure}"
            ),
            record_failure: record_failure.clone(),
            state: format!("SELECT status, lease_until - {NOW_MS} FROM {t} WHERE event_id = ?1"),
            complete: format!(
                "UPDATE {t} SET status = 'completed', completed_at = {NOW_MS}, lease_until = NULL, updated_at = {NOW_MS} \
                 WHERE event_id = ?1 AND fence = ?2 AND status = 'processing'"
            ),
            release: format!(
                "UPDATE {t} SET status = 'failed', last_error = ?3, lease_until = NULL, updated_at = {NOW_MS} \
                 WHERE event_id = ?1 AND fence = ?2 AND status = 'processing'"
            ),
            extend: format!(
                "UPDATE {t} SET lease_until = {NOW_MS} + ?3, updated_at = {NOW_MS} \
                 WHERE event_id = ?1 AND fence = ?2 AND status = 'processing'"
            ),
            record: format!(
                "SELECT event_id, event_type, status, attempts, last_error, first_seen, completed_at FROM {t} WHERE event_id = ?1"
            ),
            failed: format!(
                "SELECT event_id, event_type, status, attempts, last_error, first_seen, completed_at FROM {t} \
                 WHERE status = 'failed' ORDER BY first_seen LIMIT ?1"
            ),
            purge: format!(
                "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE status <> 'processing' \
                 AND updated_at < {NOW_MS} - ?1 LIMIT ?2)"
            ),
        }
    }
}

/// An [`IdempotencyStore`] in a SQLite database: durable across restarts, and safe for
/// several processes sharing one file.
///
/// Claims are one `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING` statement, and lease
/// expiry is judged by SQLite's clock. [`SqliteStore::connect`] opens the file in WAL mode
/// with a 5 s busy timeout; a pool you build yourself should do the same
/// (`journal_mode(Wal)`, `busy_timeout`), or concurrent writers see `SQLITE_BUSY`.
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
    pool: SqlitePool,
    table: Arc<str>,
    retention: Duration,
    sql: Arc<Sql>,
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

/// Whether an error is SQLite's lock contention (`SQLITE_BUSY` or `SQLITE_LOCKED`).
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// Whether an error is a constraint checked at COMMIT (a deferred foreign key): the
/// writes of some handler in the transaction are at fault, not the store.
fn is_constraint(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| c & 0xff == 19),
        _ => false,
    }
}

impl SqliteStore {
    /// A store on a pool the application already owns, with the default table
    /// (`stripe_webhook_events`) and retention (30 days). Call
    /// [`migrate`](Self::migrate) once before use.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            table: Arc::from(DEFAULT_TABLE),
            retention: DEFAULT_RETENTION,
            sql: Arc::new(Sql::new(DEFAULT_TABLE)),
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
                sqlx::raw_sql(&store.migration_sql())
                    .execute(&store.pool)
                    .await?;
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

    /// Uses another table name.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidConfig`] unless the name is 1 to 63 ASCII letters, digits or
    /// underscores, not starting with a digit.
    pub fn with_table(mut self, table: &str) -> Result<Self, StoreError> {
        validate_name(table, &[])?;
        self.table = Arc::from(table);
        self.sql = Arc::new(Sql::new(table));
        Ok(self)
    }

    /// How long completed and failed records are kept.
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The schema for this store's table name, for your own migration tool.
    pub fn migration_sql(&self) -> String {
        with_table(SQLITE_MIGRATION, &self.table)
    }

    /// Creates the table and its indexes if they are missing. Safe to run again, and from
    /// several processes.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the statements fail.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::raw_sql(&self.migration_sql())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Runs `handler` in inbox mode: see [`SqliteInbox`].
    pub fn inbox<H: TransactionalHandler<Sqlite>>(&self, handler: H) -> SqliteInbox<H> {
        SqliteInbox {
            store: self.clone(),
            handler,
            writer: Arc::new(tokio::sync::Mutex::new(Writer::default())),
            queued: AtomicUsize::new(0),
            checkpointing: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn fenced(
        &self,
        sql: &str,
        token: &ClaimToken,
        extra: Option<SqlArg<'_>>,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(sql)
            .bind(token.event_id().as_str())
            .bind(token.fence_hex());
        let q = match extra {
            Some(SqlArg::Text(s)) => q.bind(s),
            Some(SqlArg::Int(i)) => q.bind(i),
            None => q,
        };
        let done = q.execute(&self.pool).await.map_err(db_err)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost {
                event_id: token.event_id().clone(),
            })
        }
    }
}

enum SqlArg<'a> {
    Text(&'a str),
    Int(i64),
}

fn to_record(row: &sqlx::sqlite::SqliteRow) -> Result<EventRecord, StoreError> {
    let status: String = row.try_get(2).map_err(db_err)?;
    let attempts: i64 = row.try_get(3).map_err(db_err)?;
    Ok(EventRecord::new(
        EventId::new(row.try_get::<String, _>(0).map_err(db_err)?),
        row.try_get(1).map_err(db_err)?,
        RecordStatus::from_name(&status).ok_or_else(|| {
            StoreError::unavailable(format!("unknown status {status:?} in store"))
        })?,
        u32::try_from(attempts).unwrap_or(u32::MAX),
        row.try_get(4).map_err(db_err)?,
        row.try_get(5).map_err(db_err)?,
        row.try_get(6).map_err(db_err)?,
    ))
}

/// Runs the claim statement on `conn`; `Ok(None)` means someone else holds the event.
async fn claim_on<'c, E>(
    sql: &Sql,
    conn: E,
    id: &EventId,
    event_type: &str,
    fence: &str,
    lease: Duration,
) -> Result<Option<u32>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let row = sqlx::query(&sql.claim)
        .bind(id.as_str())
        .bind(event_type)
        .bind(fence)
        .bind(lease_ms(lease))
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some(r) => Some(u32::try_from(r.try_get::<i64, _>(0)?).unwrap_or(u32::MAX)),
        None => None,
    })
}

/// What a record that refused a claim says: completed, or in progress for how long.
async fn state_on<'c, E>(sql: &Sql, conn: E, id: &EventId) -> Result<Option<Claim>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let row = sqlx::query(&sql.state)
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get(0)?;
    let left: Option<i64> = row.try_get(1)?;
    Ok(match status.as_str() {
        "completed" => Some(Claim::Completed),
        "processing" if left.unwrap_or(0) > 0 => Some(Claim::InProgress {
            retry_after: retry_after_ms(left.unwrap_or(0)),
        }),
        // Failed or expired since the claim statement ran: the caller tries again.
        _ => None,
    })
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn claim(
        &self,
        id: &EventId,
        event_type: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let fence = new_fence();
        let hex = format!("{fence:032x}");
        for _ in 0..3 {
            if let Some(attempt) = claim_on(&self.sql, &self.pool, id, event_type, &hex, lease)
                .await
                .map_err(db_err)?
            {
                return Ok(Claim::Acquired(ClaimToken::new(id.clone(), fence, attempt)));
            }
            if let Some(claim) = state_on(&self.sql, &self.pool, id).await.map_err(db_err)? {
                return Ok(claim);
            }
        }
        // The record keeps changing under us: another delivery is busy with it.
        Ok(Claim::InProgress {
            retry_after: Duration::from_secs(1),
        })
    }

    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        self.fenced(&self.sql.complete, token, None).await
    }

    async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError> {
        self.fenced(
            &self.sql.release,
            token,
            Some(SqlArg::Text(truncate_error(reason))),
        )
        .await
    }

    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.fenced(&self.sql.extend, token, Some(SqlArg::Int(lease_ms(lease))))
            .await
    }

    async fn record(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query(&self.sql.record)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(to_record).transpose()
    }

    async fn failed_events(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(&self.sql.failed)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(to_record).collect()
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let done = sqlx::query(&self.sql.purge)
                .bind(lease_ms(self.retention))
                .bind(PURGE_BATCH)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            total += done.rows_affected();
            if done.rows_affected() < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

/// Inbox mode on SQLite: a [`Dispatcher`] that claims the event, runs a
/// [`TransactionalHandler`] and marks the event completed in one transaction. The
/// handler's writes and the "done" mark commit together or not at all, so a crash
/// between them can never run the handler's effects twice.
///
/// SQLite has one writer at a time, so deliveries queue for it in arrival order, on one
/// connection of their own. Deliveries that queue behind each other share a transaction
/// (group commit): each runs in its own savepoint (claim, handler), and the last one in
/// the queue commits for all of them (at most 32 deliveries, or 20 ms after the first). Every delivery is answered only once its
/// transaction has committed; if the commit fails, every delivery in it is answered 503
/// and Stripe delivers them again. A handler that fails rolls back its own savepoint
/// (its writes and its claim), its failure is recorded, and the others are unaffected.
///
/// The writer connection leaves WAL checkpoints to a connection of the store's pool, in
/// the background, every 256 deliveries, so that no delivery waits for one. It is opened
/// with the store pool's connect options (not its `after_connect` hooks), so it is only
/// as durable as they say: [`SqliteStore::connect`] uses `synchronous = NORMAL`, with
/// which a power cut or OS crash (not a process crash) can undo the last transactions
/// after Stripe was answered 200. If the handlers' effects must survive that, build the
/// pool from [`SqliteStore::connect_options`] with
/// `.synchronous(SqliteSynchronous::Full)` and pass it to [`SqliteStore::new`]: an fsync
/// per transaction, shared by every delivery in it. Inbox mode needs a database file:
/// an in-memory database would be shared-cache, and block the pool's readers.
///
/// Under sustained load the writer holds SQLite's write lock nearly all the time. Other
/// writers to the same file (another process, [`purge_expired`](IdempotencyStore::purge_expired),
/// a handler writing through another connection) wait in SQLite's busy handler, which is
/// not fair, and can give up with `SQLITE_BUSY` after 5 s: under heavy traffic, keep
/// inbox deliveries for one database file in one process, and purge at a quiet time.
///
/// A delivery that waits longer than the 5 s busy timeout for the writer is answered 503.
/// Keep inbox handlers short (local writes only): the next delivery waits for them. Use
/// the plain [`SqliteStore`] dispatcher for handlers that call other services. A handler
/// may open its own nested transaction (`conn.begin()`), which becomes a savepoint.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use stripe_webhooks::sqlx::{Sqlite, SqliteConnection};
/// use stripe_webhooks::{async_trait, Event, HandlerError, Processor, SqliteStore, TransactionalHandler, Verifier};
///
/// struct Access;
///
/// #[async_trait]
/// impl TransactionalHandler<Sqlite> for Access {
///     async fn handle(&self, event: &Event, conn: &mut SqliteConnection) -> Result<(), HandlerError> {
///         if let Event::CheckoutSessionCompleted(session) = event {
///             stripe_webhooks::sqlx::query("INSERT INTO access (customer) VALUES (?1)")
///                 .bind(session.id.as_str())
///                 .execute(&mut *conn)
///                 .await
///                 .map_err(HandlerError::new)?;
///         }
///         Ok(())
///     }
/// }
///
/// let store = SqliteStore::connect("stripe-webhooks.db").await?;
/// let processor = Processor::with_dispatcher(Verifier::from_secrets_list("whsec_…")?, store.inbox(Access));
/// # Ok(()) }
/// ```
pub struct SqliteInbox<H> {
    store: SqliteStore,
    handler: H,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    /// Deliveries waiting for the writer: while there are some, a batch stays open.
    queued: AtomicUsize,
    /// Whether a background WAL checkpoint is running.
    checkpointing: Arc<AtomicBool>,
}

/// How many committed deliveries (a few pages each) between two WAL checkpoints: about
/// the 1000 pages at which SQLite would checkpoint by itself.
const CHECKPOINT_EVERY: usize = 256;

/// The most deliveries one inbox transaction carries.
const MAX_BATCH: usize = 32;

/// How long after its first delivery an inbox transaction commits at the latest (it
/// commits sooner whenever no delivery is waiting).
const MAX_BATCH_AGE: Duration = Duration::from_millis(20);

/// The inbox's writer: one connection (a pool of one, opened on first use with the store
/// pool's options, so that its transaction can be kept between deliveries) and the
/// transaction in progress, if any.
#[derive(Default)]
struct Writer {
    pool: Option<SqlitePool>,
    batch: Option<Batch>,
    /// Numbers the batches, so a finisher commits only the one it was started for.
    batches: u64,
    /// Deliveries committed since the last checkpoint was started.
    since_checkpoint: usize,
    /// Events that were in a transaction whose commit failed on a constraint: one of
    /// them wrote something the commit refused. Until each commits, each runs in a
    /// transaction of its own, so that it fails alone and is recorded as failed.
    suspects: HashSet<EventId>,
}

/// The most suspects remembered (see [`Writer::suspects`]); past it, the set starts over.
const MAX_SUSPECTS: usize = 4096;

/// An open inbox transaction and the deliveries waiting for its commit. Dropped without
/// committing (an error, a timeout, a cancelled delivery), it rolls back and its
/// deliveries are answered 503.
struct Batch {
    tx: sqlx::Transaction<'static, Sqlite>,
    number: u64,
    /// The events of its deliveries (one each), to suspect if its commit fails on a
    /// constraint.
    events: Vec<EventId>,
    /// Whether a finisher task watches this batch (see [`SqliteInbox::leave_open`]).
    finisher: bool,
    /// Whether the last delivery's savepoint is still open (released by the next one).
    savepoint_open: bool,
    opened: Instant,
    committed: watch::Sender<Option<bool>>,
}

impl<H> fmt::Debug for SqliteInbox<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteInbox")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<H> SqliteInbox<H> {
    /// The store underneath.
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }
}

/// What one delivery did inside a batch, before the batch commits.
enum Step {
    /// Answer now, without waiting for the commit.
    Now(Dispatched),
    /// Answer this once the batch has committed; 503 if it does not.
    AfterCommit(Dispatched),
}

#[async_trait]
impl<H: TransactionalHandler<Sqlite>> Dispatcher for SqliteInbox<H> {
    async fn dispatch(&self, event: &Event, settings: &DispatchSettings) -> Dispatched {
        if !self.handler.handles(event.event_type()) {
            return Dispatched::unclaimed(OutcomeKind::Ignored);
        }
        let t = settings
            .store_timeout
            .max(BUSY_TIMEOUT + Duration::from_secs(1));
        // Waiting for the writer is waiting for SQLite's write lock: past the busy
        // timeout, 503 and Stripe delivers again.
        let locked = {
            let _queued = Queued::count(&self.queued);
            tokio::time::timeout(BUSY_TIMEOUT, self.writer.lock()).await
        };
        let Ok(mut writer) = locked else {
            return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(StoreError::Timeout(
                BUSY_TIMEOUT,
            )));
        };

        // An event whose earlier transaction failed at COMMIT runs in one of its own:
        // commit what is open first, and its own right after it.
        let alone = writer.suspects.contains(event.id());
        if alone {
            if let Some(open) = writer.batch.take() {
                let _ = self.finish(&mut writer, open, t).await;
            }
        }
        // The batch is taken out while this delivery works on it: if the delivery is
        // dropped half-way, so is the batch, which rolls back.
        let mut batch = match writer.batch.take() {
            Some(batch) => batch,
            None => match self.open_fresh(&mut writer, t).await {
                Ok(batch) => batch,
                Err(e) => return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e)),
            },
        };
        let step = match self.deliver(&mut batch, event, settings, t).await {
            Ok(step) => step,
            // The transaction is in an unknown state: drop it (rolling back every
            // delivery in it; the others are answered 503), and its connection.
            Err(e) => {
                drop(batch);
                discard_connection(&mut writer);
                return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e));
            }
        };
        let mut committed = batch.committed.subscribe();
        let full = batch.events.len() >= MAX_BATCH || batch.opened.elapsed() >= MAX_BATCH_AGE;
        if alone || full || self.queued.load(Ordering::SeqCst) == 0 {
            let members = batch.events.len();
            let result = self.finish(&mut writer, batch, t).await;
            if let (Err(e), Step::AfterCommit(d)) = (result, &step) {
                return match e {
                    // Alone in its transaction: its own writes broke a constraint.
                    // That is the handler's failure, recorded like one.
                    CommitError::Constraint(e) if members == 1 => {
                        self.record_commit_failure(&writer, event, d.attempt, &e, t)
                            .await
                    }
                    e => not_committed(d, e.into_store_error()),
                };
            }
        } else {
            self.leave_open(&mut writer, batch);
        }
        drop(writer);
        match step {
            Step::Now(d) => d,
            Step::AfterCommit(d) => {
                let ok = tokio::time::timeout(t, committed.wait_for(Option::is_some))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .is_some_and(|v| *v == Some(true));
                if ok {
                    d
                } else {
                    not_committed(
                        &d,
                        StoreError::unavailable("the inbox transaction did not commit"),
                    )
                }
            }
        }
    }
}

/// Nothing of this delivery committed: 503, and Stripe delivers it again.
fn not_committed(d: &Dispatched, e: StoreError) -> Dispatched {
    Dispatched {
        kind: OutcomeKind::StoreUnavailable(e),
        attempt: d.attempt,
    }
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

/// Why a batch did not commit.
enum CommitError {
    /// A constraint checked at COMMIT: some delivery's writes are at fault.
    Constraint(sqlx::Error),
    /// The store: busy, down, or too slow.
    Store(StoreError),
}

impl CommitError {
    fn into_store_error(self) -> StoreError {
        match self {
            CommitError::Constraint(e) => db_err(e),
            CommitError::Store(e) => e,
        }
    }
}

/// Commits a batch and tells its deliveries.
async fn commit(batch: Batch, t: Duration) -> Result<(), CommitError> {
    let Batch { tx, committed, .. } = batch;
    let result = match tokio::time::timeout(t, tx.commit()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if is_constraint(&e) => Err(CommitError::Constraint(e)),
        Ok(Err(e)) => Err(CommitError::Store(busy_or_down(e))),
        Err(_) => Err(CommitError::Store(StoreError::Timeout(t))),
    };
    committed.send_replace(Some(result.is_ok()));
    result
}

/// Clears the "checkpoint running" flag when the checkpoint task ends, however it ends.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Commits a batch on its writer's behalf: on success its events are no longer suspect;
/// a constraint failure makes every one of them suspect (when there were several); any
/// other failure drops the connection.
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
        Err(CommitError::Constraint(_)) if events.len() > 1 => {
            if writer.suspects.len() + events.len() > MAX_SUSPECTS {
                writer.suspects.clear();
            }
            writer.suspects.extend(events.iter().cloned());
        }
        Err(CommitError::Constraint(_)) => {}
        Err(CommitError::Store(_)) => discard_connection(writer),
    }
    result
}

/// Drops the writer connection after a transaction ended badly: SQLite may have rolled
/// it back by itself, or a cancelled `BEGIN` may have left it open, and sqlx would then
/// refuse every later `BEGIN` on it. The next delivery opens a fresh one; closing this
/// one rolls back whatever it still holds.
fn discard_connection(writer: &mut Writer) {
    if let Some(pool) = writer.pool.take() {
        tokio::spawn(async move { pool.close().await });
    }
}

impl<H> SqliteInbox<H> {
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
        let pool = self.store.pool.clone();
        let (shared, running) = (Arc::clone(&self.writer), Arc::clone(&self.checkpointing));
        tokio::spawn(async move {
            // Cleared however the task ends, or checkpoints would stop for good.
            let _running = Running(running);
            let t = BUSY_TIMEOUT + Duration::from_secs(1);
            // Best effort: whatever a checkpoint leaves, the next one copies. One
            // connection for both steps, taken before the writer is paused.
            let Ok(Ok(mut conn)) = tokio::time::timeout(t, pool.acquire()).await else {
                return;
            };
            let checkpoint = "PRAGMA wal_checkpoint(PASSIVE)";
            let _ = tokio::time::timeout(t, sqlx::query(checkpoint).execute(&mut *conn)).await;
            let mut writer = shared.lock().await;
            if let Some(batch) = writer.batch.take() {
                let _ = commit_batch(&mut writer, batch, t).await;
            }
            // Only the pages written since the first step: a short pause.
            let pause = Duration::from_secs(1);
            let _ = tokio::time::timeout(pause, sqlx::query(checkpoint).execute(&mut *conn)).await;
        });
    }

    /// Leaves a batch open for the delivery queued next. In case that delivery never
    /// takes it (it gave up waiting, or was cancelled), a finisher task commits the
    /// batch a little later if it is still open.
    fn leave_open(&self, writer: &mut Writer, mut batch: Batch) {
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
}

impl<H: TransactionalHandler<Sqlite>> SqliteInbox<H> {
    /// Commits a batch and keeps the books: suspects, connection, checkpoints.
    async fn finish(
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

    /// Records, outside any transaction, a delivery whose writes the commit refused, and
    /// answers it as a failed handler (500: Stripe delivers it again).
    async fn record_commit_failure(
        &self,
        writer: &Writer,
        event: &Event,
        attempt: Option<u32>,
        e: &sqlx::Error,
        t: Duration,
    ) -> Dispatched {
        let error = HandlerError::new(format!("the handler's writes could not be committed: {e}"));
        let attempt = attempt.unwrap_or(1);
        if let Some(pool) = &writer.pool {
            let reason = error.to_string();
            let _ = tokio::time::timeout(
                t,
                sqlx::query(&self.store.sql.record_failure)
                    .bind(event.id().as_str())
                    .bind(event.event_type().as_str())
                    .bind(i64::from(attempt))
                    .bind(format!("{:032x}", new_fence()))
                    .bind(truncate_error(&reason))
                    .execute(pool),
            )
            .await;
        }
        Dispatched::attempt(OutcomeKind::HandlerFailed(error), attempt)
    }

    /// Opens a batch; if the connection refuses (stuck in a transaction sqlx lost track
    /// of), once more on a fresh connection. A lock held by another process is waited
    /// for only once.
    async fn open_fresh(&self, writer: &mut Writer, t: Duration) -> Result<Batch, StoreError> {
        match self.open_batch(writer, t).await {
            Ok(batch) => Ok(batch),
            Err(e @ StoreError::Timeout(_)) => Err(e),
            Err(_) => {
                discard_connection(writer);
                let opened = self.open_batch(writer, t).await;
                if opened.is_err() {
                    discard_connection(writer);
                }
                opened
            }
        }
    }

    async fn open_batch(&self, writer: &mut Writer, t: Duration) -> Result<Batch, StoreError> {
        let pool = writer.pool.get_or_insert_with(|| {
            SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(BUSY_TIMEOUT)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                // Checkpoints run beside it (see `checkpoint_soon`), not in its commits.
                .connect_lazy_with(
                    (*self.store.pool.connect_options())
                        .clone()
                        .pragma("wal_autocheckpoint", "0"),
                )
        });
        let tx = store_call(t, async {
            pool.begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(busy_or_down)
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
        })
    }

    /// One delivery in the batch: claim (marked completed at once: nobody sees it before
    /// the commit, and a rollback removes it) and handler, in a savepoint of its own.
    async fn deliver(
        &self,
        batch: &mut Batch,
        event: &Event,
        settings: &DispatchSettings,
        t: Duration,
    ) -> Result<Step, StoreError> {
        let sql = &self.store.sql;
        let id = event.id();
        let event_type = event.event_type().as_str();
        let fence = format!("{:032x}", new_fence());
        let claim = if batch.savepoint_open {
            &sql.inbox_next_claim
        } else {
            &sql.inbox_claim
        };
        let claimed = store_call(t, async {
            sqlx::query(claim)
                .bind(id.as_str())
                .bind(event_type)
                .bind(&fence)
                .fetch_optional(&mut *batch.tx)
                .await
                .map_err(busy_or_down)
        })
        .await?;
        batch.savepoint_open = true;
        batch.events.push(id.clone());
        let attempt = match claimed {
            Some(row) => {
                u32::try_from(row.try_get::<i64, _>(0).map_err(db_err)?).unwrap_or(u32::MAX)
            }
            None => {
                let state = store_call(t, async {
                    state_on(sql, &mut *batch.tx, id).await.map_err(db_err)
                })
                .await?;
                return Ok(match state {
                    // Completed, perhaps earlier in this same batch: say so only once
                    // that is committed.
                    Some(Claim::Completed) => {
                        Step::AfterCommit(Dispatched::unclaimed(OutcomeKind::Duplicate))
                    }
                    Some(claim) => Step::Now(in_progress(claim)),
                    // Cannot happen while this transaction holds the write lock (the
                    // claim refused a row that is neither failed nor expired); answer
                    // "in progress" rather than guess.
                    None => Step::Now(in_progress(Claim::InProgress {
                        retry_after: Duration::from_secs(1),
                    })),
                });
            }
        };

        match run_handler(
            self.handler.handle(event, &mut *batch.tx),
            settings.deadline,
        )
        .await
        {
            Ok(()) => Ok(Step::AfterCommit(Dispatched::attempt(
                OutcomeKind::Processed,
                attempt,
            ))),
            Err(e) => {
                // Undo this delivery's savepoint (its claim and its writes) and record
                // the failure in the batch, so Stripe's retry runs it again.
                let reason = e.to_string();
                store_call(t, async {
                    sqlx::query(&sql.inbox_failed)
                        .bind(id.as_str())
                        .bind(event_type)
                        .bind(i64::from(attempt))
                        .bind(&fence)
                        .bind(truncate_error(&reason))
                        .execute(&mut *batch.tx)
                        .await
                        .map_err(db_err)
                })
                .await?;
                batch.savepoint_open = false;
                Ok(Step::Now(Dispatched::attempt(
                    OutcomeKind::HandlerFailed(e),
                    attempt,
                )))
            }
        }
    }
}

/// Waiting past the busy timeout for the one write lock (another delivery's transaction
/// held it) is a `Timeout`; anything else means the store is down. Both are answered 503,
/// and Stripe delivers again.
fn busy_or_down(e: sqlx::Error) -> StoreError {
    if is_busy(&e) {
        StoreError::Timeout(BUSY_TIMEOUT)
    } else {
        db_err(e)
    }
}

fn in_progress(claim: Claim) -> Dispatched {
    match claim {
        Claim::InProgress { retry_after } => {
            Dispatched::unclaimed(OutcomeKind::InProgress { retry_after })
        }
        Claim::Completed => Dispatched::unclaimed(OutcomeKind::Duplicate),
        Claim::Acquired(_) => Dispatched::unclaimed(OutcomeKind::InProgress {
            retry_after: Duration::from_secs(1),
        }),
    }
}
