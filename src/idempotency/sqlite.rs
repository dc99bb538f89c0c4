//! The SQLite store: the embedded default.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool};

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

/// How many rows [`purge_expired`](IdempotencyStore::purge_expired) deletes per statement.
const PURGE_BATCH: i64 = 1000;

#[derive(Debug)]
struct Sql {
    claim: String,
    state: String,
    complete: String,
    release: String,
    extend: String,
    record: String,
    failed: String,
    purge: String,
    record_failure: String,
}

impl Sql {
    fn new(t: &str) -> Self {
        Self {
            claim: format!(
                "INSERT INTO {t} (event_id, event_type, status, attempts, fence, lease_until, first_seen, updated_at) \
                 VALUES (?1, ?2, 'processing', 1, ?3, {NOW_MS} + ?4, {NOW_MS}, {NOW_MS}) \
                 ON CONFLICT (event_id) DO UPDATE SET status = 'processing', attempts = {t}.attempts + 1, \
                 fence = excluded.fence, lease_until = excluded.lease_until, updated_at = excluded.updated_at \
                 WHERE {t}.status = 'failed' OR ({t}.status = 'processing' AND {t}.lease_until <= excluded.updated_at) \
                 RETURNING attempts"
            ),
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
            record_failure: format!(
                "INSERT INTO {t} (event_id, event_type, status, attempts, fence, lease_until, last_error, first_seen, updated_at) \
                 VALUES (?1, ?2, 'failed', ?3, ?4, NULL, ?5, {NOW_MS}, {NOW_MS}) \
                 ON CONFLICT (event_id) DO UPDATE SET status = 'failed', attempts = excluded.attempts, \
                 fence = excluded.fence, lease_until = NULL, last_error = excluded.last_error, updated_at = excluded.updated_at \
                 WHERE {t}.status = 'failed' OR ({t}.status = 'processing' AND {t}.lease_until <= excluded.updated_at)"
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
/// [`TransactionalHandler`] and marks the event completed, all in one `BEGIN IMMEDIATE`
/// transaction. The handler's writes and the "done" mark commit together or not at all,
/// so a crash between them can never run the handler's effects twice.
///
/// SQLite has one writer at a time, and the transaction holds it while the handler runs:
/// deliveries of *any* event are processed one after another. A concurrent duplicate
/// waits for the transaction (up to the 5 s busy timeout), then sees the event completed;
/// a delivery that waits longer is answered 503 and Stripe delivers it again. Keep inbox
/// handlers short (local writes only), or use the plain [`SqliteStore`] dispatcher for
/// handlers that call other services. A failed handler rolls everything back and the
/// failure is recorded, so Stripe's retry runs it again.
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
#[derive(Debug)]
pub struct SqliteInbox<H> {
    store: SqliteStore,
    handler: H,
}

impl<H> SqliteInbox<H> {
    /// The store underneath.
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }
}

#[async_trait]
impl<H: TransactionalHandler<Sqlite>> Dispatcher for SqliteInbox<H> {
    async fn dispatch(&self, event: &Event, settings: &DispatchSettings) -> Dispatched {
        if !self.handler.handles(event.event_type()) {
            return Dispatched::unclaimed(OutcomeKind::Ignored);
        }
        let store = &self.store;
        let id = event.id();
        let event_type = event.event_type().as_str();
        let fence = new_fence();
        let hex = format!("{fence:032x}");
        let t = settings
            .store_timeout
            .max(BUSY_TIMEOUT + Duration::from_secs(1));

        let begun = store_call(t, async {
            store
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(busy_or_down)
        })
        .await;
        let mut tx = match begun {
            Ok(tx) => tx,
            Err(e) => return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e)),
        };
        let attempt = match claim_on(&store.sql, &mut *tx, id, event_type, &hex, settings.lease)
            .await
        {
            Ok(Some(a)) => a,
            Ok(None) => {
                let state = state_on(&store.sql, &mut *tx, id).await;
                drop(tx);
                return match state {
                    Ok(Some(Claim::Completed)) => Dispatched::unclaimed(OutcomeKind::Duplicate),
                    Ok(Some(claim)) => in_progress(claim),
                    Ok(None) => in_progress(Claim::InProgress {
                        retry_after: Duration::from_secs(1),
                    }),
                    Err(e) => Dispatched::unclaimed(OutcomeKind::StoreUnavailable(db_err(e))),
                };
            }
            Err(e) => return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(busy_or_down(e))),
        };

        let result = run_handler(self.handler.handle(event, &mut *tx), settings.deadline).await;
        match result {
            Ok(()) => {
                let completed = async {
                    let done = sqlx::query(&store.sql.complete)
                        .bind(id.as_str())
                        .bind(&hex)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() != 1 {
                        return Err(sqlx::Error::RowNotFound);
                    }
                    tx.commit().await
                };
                let completed = store_call(t, async { completed.await.map_err(db_err) });
                match completed.await {
                    Ok(()) => Dispatched::attempt(OutcomeKind::Processed, attempt),
                    // Nothing committed, the handler's writes included: answer 503 so
                    // Stripe delivers again.
                    Err(e) => Dispatched::attempt(OutcomeKind::StoreUnavailable(e), attempt),
                }
            }
            Err(e) => {
                drop(tx); // rolls back the claim and the handler's writes
                self.record_failure(id, event_type, attempt, &hex, &e).await;
                Dispatched::attempt(OutcomeKind::HandlerFailed(e), attempt)
            }
        }
    }
}

impl<H> SqliteInbox<H> {
    async fn record_failure(
        &self,
        id: &EventId,
        event_type: &str,
        attempt: u32,
        fence: &str,
        e: &HandlerError,
    ) {
        let reason = e.to_string();
        // Best effort: if it fails, the event is simply claimable again, as it should be.
        let _ = sqlx::query(&self.store.sql.record_failure)
            .bind(id.as_str())
            .bind(event_type)
            .bind(i64::from(attempt))
            .bind(fence)
            .bind(truncate_error(&reason))
            .execute(&self.store.pool)
            .await;
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
