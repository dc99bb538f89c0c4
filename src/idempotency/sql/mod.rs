//! The SQL stores: SQLite and PostgreSQL share one code path ([`SqlCore`]) over the
//! statements of their dialect (`statements.rs`).

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
pub(crate) mod statements;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{
    validate_name, Claim, ClaimToken, EventRecord, LockedClaim, ObjectLock, RecordStatus,
    StoreError, UnknownStatus, Watermark,
};
use crate::event::{EventId, EventType};
use statements::{render, Statements};

#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, POSTGRES_MIGRATION};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SQLITE_MIGRATION};

/// The table name the SQL stores use unless told otherwise.
pub const DEFAULT_TABLE: &str = "stripe_webhook_events";

/// One schema migration of a SQL store, for this store's table name. The store's
/// `migrate()` applies each once, in version order, and records it in the table
/// `{table}_migrations`; give them to your own migration tool instead if you run one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migration {
    /// Its version: the number its file name starts with.
    pub version: u32,
    /// Its file under `migrations/sqlite/` or `migrations/postgres/`.
    pub name: &'static str,
    /// Its SQL, with the store's table name.
    pub sql: String,
}

/// The longest table name: the schema names tables and indexes after it with suffixes of
/// up to 18 characters (`_objects_purge_idx`), and PostgreSQL cuts identifiers at 63, so
/// a longer name would make two of them the same.
pub(crate) const MAX_TABLE_LEN: usize = 63 - 18;

/// How many rows one purge statement deletes.
const PURGE_BATCH: i64 = 1000;

/// A database the SQL stores run on: its statements and its schema.
pub(crate) trait Dialect: Database {
    const STATEMENTS: &'static Statements;
    const MIGRATION: &'static str;
    /// The schema as versioned migrations: (version, file name, SQL).
    const MIGRATIONS: &'static [(u32, &'static str, &'static str)];
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

#[cfg(feature = "sqlite")]
impl Dialect for sqlx::Sqlite {
    const STATEMENTS: &'static Statements = &statements::SQLITE;
    const MIGRATION: &'static str = SQLITE_MIGRATION;
    const MIGRATIONS: &'static [(u32, &'static str, &'static str)] = sqlite::SQLITE_MIGRATIONS;
    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }
}

#[cfg(feature = "postgres")]
impl Dialect for sqlx::Postgres {
    const STATEMENTS: &'static Statements = &statements::POSTGRES;
    const MIGRATION: &'static str = POSTGRES_MIGRATION;
    const MIGRATIONS: &'static [(u32, &'static str, &'static str)] = postgres::POSTGRES_MIGRATIONS;
    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }
}

/// Whether a statement failed on purpose with `message`: a SQLite trigger's `RAISE`, or
/// PostgreSQL's error for the deliberately failing cast in `complete_applied`, which
/// quotes the value it could not read (`invalid input syntax for type bigint:
/// "stripe_webhooks: lease lost 1"`).
/// PostgreSQL's `deadlock_detected`: the statement was undone, another went on. (Never
/// SQLite's: it has one writer.)
pub(crate) fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("40P01"))
}

fn raised(e: &sqlx::Error, message: &str) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.message().contains(message))
}

/// The statements for one table name.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) claim: String,
    /// Only SQLite's inbox claims that way.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) claim_completed: String,
    pub(crate) state: String,
    pub(crate) complete: String,
    pub(crate) completed_by: String,
    pub(crate) release: String,
    pub(crate) extend: String,
    pub(crate) record_failure: String,
    pub(crate) record: String,
    pub(crate) failed: String,
    pub(crate) failed_after: String,
    pub(crate) purge: String,
    pub(crate) abandoned: String,
    pub(crate) abandon: String,
    pub(crate) lock_object: String,
    pub(crate) object_lock_left: String,
    pub(crate) advance: String,
    pub(crate) unlock_object: String,
    pub(crate) watermark: String,
    pub(crate) lock_row: String,
    pub(crate) purge_objects: String,
    pub(crate) purge_objects_upto: String,
    pub(crate) lock_and_claim: Option<String>,
    pub(crate) complete_applied: Option<String>,
    pub(crate) lock_and_claim_step: Option<String>,
    pub(crate) settle_step: Option<String>,
}

impl Sql {
    fn new(d: &Statements, t: &str) -> Self {
        Self {
            claim: render(d.claim, d, t),
            claim_completed: render(d.claim_completed, d, t),
            state: render(d.state, d, t),
            complete: render(d.complete, d, t),
            completed_by: render(d.completed_by, d, t),
            release: render(d.release, d, t),
            extend: render(d.extend, d, t),
            record_failure: render(d.record_failure, d, t),
            record: render(d.record, d, t),
            failed: render(d.failed, d, t),
            failed_after: render(d.failed_after, d, t),
            purge: render(d.purge, d, t),
            abandoned: render(d.abandoned, d, t),
            abandon: render(d.abandon, d, t),
            lock_object: render(d.lock_object, d, t),
            object_lock_left: render(d.object_lock_left, d, t),
            advance: render(d.advance, d, t),
            unlock_object: render(d.unlock_object, d, t),
            watermark: render(d.watermark, d, t),
            lock_row: render(d.lock_row, d, t),
            purge_objects: render(d.purge_objects, d, t),
            purge_objects_upto: render(d.purge_objects_upto, d, t),
            lock_and_claim: d.lock_and_claim.map(|q| render(q, d, t)),
            complete_applied: d.complete_applied.map(|q| render(q, d, t)),
            lock_and_claim_step: d.lock_and_claim_step.map(|q| render(q, d, t)),
            settle_step: d.settle_step.map(|q| render(q, d, t)),
        }
    }
}

/// What the SQLite and PostgreSQL stores have in common: the pool, the table, the
/// retention, and every store operation.
#[derive(Debug)]
pub(crate) struct SqlCore<DB: Dialect> {
    pub(crate) pool: Pool<DB>,
    pub(crate) table: Arc<str>,
    pub(crate) retention: Duration,
    pub(crate) sql: Arc<Sql>,
}

impl<DB: Dialect> Clone for SqlCore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            table: Arc::clone(&self.table),
            retention: self.retention,
            sql: Arc::clone(&self.sql),
        }
    }
}

pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

/// The longest duration the SQL statements take (a century, in milliseconds): added to or
/// taken from a database's clock, anything longer (`Duration::MAX` for "forever") would
/// overflow PostgreSQL's intervals and timestamps and SQLite's integers.
pub(crate) const MAX_SQL_MILLIS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// A lease, retention or delay as whole milliseconds for SQL, rounded up (a lease under
/// a millisecond lasts one, not none), at most [`MAX_SQL_MILLIS`].
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(crate::clock::ceil_millis(d))
        .unwrap_or(i64::MAX)
        .min(MAX_SQL_MILLIS)
}

/// An attempt count read back from a database, where it is a signed integer: clamped
/// into `u32` (a negative count reads as 0, a count past `u32::MAX` as `u32::MAX`).
pub(crate) fn attempts_from(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// `retry_after` from a lease's remaining milliseconds (at least 1 ms).
pub(crate) fn retry_after_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0).max(1))
}

/// What a `state` row says about a record that refused a claim: completed, or in
/// progress for how long. `None`: failed or expired since the claim ran (try again).
/// A status this crate never writes (a hand edit) is an error: no claim would ever take
/// such a record, and answering it as in progress would hide that for good.
pub(crate) fn claim_from_state(
    status: &str,
    left_ms: Option<i64>,
) -> Result<Option<Claim>, UnknownStatus> {
    Ok(match status.parse::<RecordStatus>()? {
        RecordStatus::Completed => Some(Claim::Completed),
        RecordStatus::Processing if left_ms.unwrap_or(0) > 0 => Some(Claim::InProgress {
            retry_after: retry_after_ms(left_ms.unwrap_or(0)),
        }),
        RecordStatus::Processing | RecordStatus::Failed => None,
    })
}

/// Words that cannot name a table unquoted, in lower case and sorted: PostgreSQL's
/// reserved keywords and those it keeps for function and type names (`pg_get_keywords()`,
/// `catcode` `R` and `T`), and the keywords SQLite does not take as a name in the
/// statements of this crate's schema.
#[rustfmt::skip]
const RESERVED_WORDS: &[&str] = &[
    "add", "all", "alter", "analyse", "analyze", "and", "any", "array", "as", "asc",
    "asymmetric", "authorization", "autoincrement", "between", "binary", "both", "case",
    "cast", "check", "collate", "collation", "column", "commit", "concurrently",
    "constraint", "create", "cross", "current_catalog", "current_date", "current_role",
    "current_schema", "current_time", "current_timestamp", "current_user", "default",
    "deferrable", "delete", "desc", "distinct", "do", "drop", "else", "end", "escape",
    "except", "exists", "false", "fetch", "for", "foreign", "freeze", "from", "full",
    "grant", "group", "having", "if", "ilike", "in", "index", "initially", "inner",
    "insert", "intersect", "into", "is", "isnull", "join", "lateral", "leading", "left",
    "like", "limit", "localtime", "localtimestamp", "natural", "not", "nothing",
    "notnull", "null", "offset", "on", "only", "or", "order", "outer", "overlaps",
    "placing", "primary", "raise", "references", "returning", "right", "select",
    "session_user", "set", "similar", "some", "symmetric", "system_user", "table",
    "tablesample", "then", "to", "trailing", "transaction", "true", "union", "unique",
    "update", "user", "using", "values", "variadic", "verbose", "when", "where",
    "window", "with",
];

/// Refuses a table name that PostgreSQL or SQLite reads as a keyword (`order`, `user`),
/// or that SQLite keeps for itself (`sqlite_…`): the store's statements name the table
/// unquoted, so its migration would fail with a syntax error.
fn check_not_reserved(table: &str) -> Result<(), StoreError> {
    let lower = table.to_ascii_lowercase();
    if lower.starts_with("sqlite_") {
        return Err(StoreError::InvalidConfig(format!(
            "{table:?} cannot name a table: SQLite keeps names starting with `sqlite_` for itself"
        )));
    }
    if RESERVED_WORDS.binary_search(&lower.as_str()).is_ok() {
        return Err(StoreError::InvalidConfig(format!(
            "{table:?} cannot name a table: it is a reserved word in SQL, and the store's \
             statements name the table unquoted (try `{lower}_events`)"
        )));
    }
    Ok(())
}

impl<DB: Dialect> SqlCore<DB> {
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        Self {
            pool,
            table: Arc::from(DEFAULT_TABLE),
            retention: super::DEFAULT_RETENTION,
            sql: Arc::new(Sql::new(DB::STATEMENTS, DEFAULT_TABLE)),
        }
    }

    pub(crate) fn with_table(mut self, table: &str) -> Result<Self, StoreError> {
        if table.len() > MAX_TABLE_LEN {
            return Err(StoreError::InvalidConfig(format!(
                "{table:?} is too long: a table name has at most {MAX_TABLE_LEN} characters, \
                 so that the names made from it (such as `{table}_objects_purge_idx`) stay \
                 within PostgreSQL's 63"
            )));
        }
        validate_name(table, &[])?;
        check_not_reserved(table)?;
        // Folded as both databases fold an unquoted name, so that `Events` and `events`,
        // one table, also share the names made from it outside SQL: PostgreSQL's
        // advisory lock keys (migrations, in-order takes) and the queue's `NOTIFY`
        // channel.
        let table = table.to_ascii_lowercase();
        self.sql = Arc::new(Sql::new(DB::STATEMENTS, &table));
        self.table = Arc::from(table);
        Ok(self)
    }

    /// The shipped schema, for this table name.
    pub(crate) fn migration_sql(&self) -> String {
        DB::MIGRATION.replace(DEFAULT_TABLE, &self.table)
    }

    /// The dialect's clock, in Unix milliseconds, as SQL.
    pub(crate) fn now_sql(&self) -> &'static str {
        DB::STATEMENTS.now
    }

    /// The shipped migrations, for this table name.
    pub(crate) fn migrations(&self) -> Vec<Migration> {
        DB::MIGRATIONS
            .iter()
            .map(|(version, name, sql)| Migration {
                version: *version,
                name,
                sql: sql.replace(DEFAULT_TABLE, &self.table),
            })
            .collect()
    }
}

/// Warns (with the `tracing` feature) when `{table}_migrations` records versions this build
/// does not ship: the database was migrated by a newer release, as after rolling a
/// deployment back. Not an error: each migration only adds to the schema, so the older
/// statements still run, and a rollback must be able to start.
pub(crate) fn note_newer_schema(table: &str, recorded: &[i64], shipped: &[Migration]) {
    let newer = newer_versions(recorded, shipped);
    if newer.is_empty() {
        return;
    }
    #[cfg(feature = "tracing")]
    tracing::warn!(
        table,
        ?newer,
        "the database has migrations newer than this build of stripe-webhooks \
         (migrated by a newer release); running on the older statements"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = (table, newer);
}

/// The recorded versions past the last one `shipped`.
fn newer_versions(recorded: &[i64], shipped: &[Migration]) -> Vec<i64> {
    let known = shipped
        .iter()
        .map(|m| i64::from(m.version))
        .max()
        .unwrap_or(0);
    recorded.iter().copied().filter(|v| *v > known).collect()
}

/// The migrations under `migrations/<dir>/`, named once: the whole script (`$whole`, for a
/// new database) and the versioned list (`$list`) that `migrate()` applies.
macro_rules! shipped_migrations {
    ($(#[$doc:meta])* $whole:ident, $list:ident = $dir:literal: [$($v:literal $file:literal),* $(,)?]) => {
        $(#[$doc])*
        pub const $whole: &str = concat!($(include_str!(concat!("../../../migrations/", $dir, "/", $file))),*);

        /// The schema's migrations, in version order: (version, file name, SQL).
        pub(crate) const $list: &[(u32, &str, &str)] = &[
            $(($v, $file, include_str!(concat!("../../../migrations/", $dir, "/", $file)))),*
        ];
    };
}
pub(crate) use shipped_migrations;

/// Applies the migrations of `$core` (a `SqlCore`) not yet recorded in
/// `{table}_migrations`, in one transaction begun with `$begin` (and `$lock`, an
/// `Option<String>` statement, run first in it); evaluates to the versions applied. An
/// error drops the transaction, which rolls all of it back. A macro rather than a generic
/// method, so that it runs on the concrete connection type, whose future is `Send`.
/// Statements go through `Executor::execute` with a plain `&str` (no arguments: the
/// simple protocol, several statements in one script); `raw_sql` on a transaction made the
/// future not provably `Send`.
macro_rules! migrate_versioned {
    ($core:expr, $begin:expr, $lock:expr) => {
        async {
            let core = $core;
            let t = &core.table;
            let now = core.now_sql();
            // Up to date already (every start of a service): answered by a read, with no
            // write lock. A missing record table is an error here, and the write path
            // below creates it.
            let select = format!("SELECT version FROM {t}_migrations");
            macro_rules! recorded {
                ($conn:expr) => {
                    sqlx::Executor::fetch_all($conn, select.as_str())
                        .await
                        .and_then(|rows| {
                            rows.iter()
                                .map(|row| sqlx::Row::try_get::<i64, usize>(row, 0))
                                .collect::<Result<Vec<i64>, _>>()
                        })
                };
            }
            if let Ok(have) = recorded!(&core.pool) {
                let shipped = core.migrations();
                if shipped.iter().all(|m| have.contains(&i64::from(m.version))) {
                    $crate::idempotency::sql::note_newer_schema(t, &have, &shipped);
                    return Ok(Vec::new());
                }
            }
            let mut tx = core.pool.begin_with($begin).await?;
            if let Some(lock) = $lock {
                sqlx::Executor::execute(&mut *tx, lock.as_str()).await?;
            }
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {t}_migrations (version BIGINT PRIMARY KEY, \
                 name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            );
            sqlx::Executor::execute(&mut *tx, create.as_str()).await?;
            let done = recorded!(&mut *tx)?;
            let mut applied = Vec::new();
            for m in core.migrations() {
                if done.contains(&i64::from(m.version)) {
                    continue;
                }
                // The name is a file name of this crate's (letters, digits, `_`, `.`).
                let script = format!(
                    "{}\n;INSERT INTO {t}_migrations (version, name, applied_at) \
                     VALUES ({}, '{}', {now})",
                    m.sql, m.version, m.name
                );
                sqlx::Executor::execute(&mut *tx, script.as_str()).await?;
                applied.push(m.version);
            }
            tx.commit().await?;
            Ok::<Vec<u32>, sqlx::Error>(applied)
        }
    };
}
pub(crate) use migrate_versioned;

impl<DB: Dialect> SqlCore<DB>
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Runs `claim` once; `Ok(None)` means the record refused it.
    pub(crate) async fn claim_on<'c, E>(
        &self,
        conn: E,
        statement: &str,
        id: &EventId,
        event_type: &EventType,
        fence: &str,
        lease: Option<Duration>,
    ) -> Result<Option<u32>, sqlx::Error>
    where
        E: Executor<'c, Database = DB>,
    {
        let q = sqlx::query(statement)
            .bind(id.as_str())
            .bind(event_type.as_str())
            .bind(fence);
        let q = match lease {
            Some(lease) => q.bind(millis(lease)),
            None => q,
        };
        let row = q.fetch_optional(conn).await?;
        row.map(|r| r.try_get::<i64, _>(0).map(attempts_from))
            .transpose()
    }

    /// Reads why a claim was refused.
    pub(crate) async fn state_on<'c, E>(
        &self,
        conn: E,
        id: &EventId,
    ) -> Result<Option<Claim>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let row = sqlx::query(&self.sql.state)
            .bind(id.as_str())
            .fetch_optional(conn)
            .await
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get(0).map_err(db_err)?;
        let left: Option<i64> = row.try_get(1).map_err(db_err)?;
        claim_from_state(&status, left)
            .map_err(|e| StoreError::unavailable(format!("event {id}: {e}")))
    }

    /// Records a failure outside any live claim (see `Statements::record_failure`);
    /// whether it did (`false`: another delivery's live claim holds the event, and its
    /// own settlement records what happened).
    pub(crate) async fn record_failure_on<'c, E>(
        &self,
        conn: E,
        statement: &str,
        id: &EventId,
        event_type: &EventType,
        attempt: u32,
        reason: &str,
    ) -> Result<bool, sqlx::Error>
    where
        E: Executor<'c, Database = DB>,
    {
        let reason = super::truncate_error(reason);
        let done = sqlx::query(statement)
            .bind(id.as_str())
            .bind(event_type.as_str())
            .bind(i64::from(attempt))
            .bind(ClaimToken::new(id.clone(), attempt).fence_hex())
            .bind(&*reason)
            .execute(conn)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    pub(crate) async fn claim(
        &self,
        id: &EventId,
        event_type: &EventType,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let token = ClaimToken::new(id.clone(), 0);
        let fence = token.fence_hex();
        for _ in 0..3 {
            let claimed = self
                .claim_on(
                    &self.pool,
                    &self.sql.claim,
                    id,
                    event_type,
                    &fence,
                    Some(lease),
                )
                .await
                .map_err(db_err)?;
            if let Some(attempt) = claimed {
                return Ok(Claim::Acquired(token.with_attempt(attempt)));
            }
            if let Some(claim) = self.state_on(&self.pool, id).await? {
                return Ok(claim);
            }
        }
        // The record keeps changing under us: another delivery is busy with it.
        Ok(Claim::InProgress {
            retry_after: Duration::from_secs(1),
        })
    }

    /// Runs a statement fenced by the token: exactly one row changes, or the claim is lost.
    async fn fenced(
        &self,
        statement: &str,
        token: &ClaimToken,
        extra: Option<Extra<'_>>,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(statement)
            .bind(token.event_id().as_str())
            .bind(token.fence_hex());
        let q = match extra {
            Some(Extra::Text(s)) => q.bind(s),
            Some(Extra::Millis(ms)) => q.bind(ms),
            None => q,
        };
        let done = q.execute(&self.pool).await.map_err(db_err)?;
        if DB::rows_affected(&done) == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost {
                event_id: token.event_id().clone(),
            })
        }
    }

    pub(crate) async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        let done = self.fenced(&self.sql.complete, token, None).await;
        self.unless_completed_by(token, done).await
    }

    /// `done`, unless it is a lost lease and the record is completed with `token`'s
    /// fence: a completion tried again after its first answer was lost (a timeout, a
    /// connection cut after the commit) finds its own work done, which is success.
    async fn unless_completed_by(
        &self,
        token: &ClaimToken,
        done: Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if !matches!(done, Err(StoreError::LeaseLost { .. })) {
            return done;
        }
        let mine: Option<i64> = sqlx::query_scalar(&self.sql.completed_by)
            .bind(token.event_id().as_str())
            .bind(token.fence_hex())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        if mine.is_some() {
            Ok(())
        } else {
            done
        }
    }

    pub(crate) async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError> {
        let reason = super::truncate_error(reason);
        self.fenced(&self.sql.release, token, Some(Extra::Text(&reason)))
            .await
    }

    pub(crate) async fn extend(
        &self,
        token: &ClaimToken,
        lease: Duration,
    ) -> Result<(), StoreError> {
        self.fenced(&self.sql.extend, token, Some(Extra::Millis(millis(lease))))
            .await
    }

    pub(crate) async fn record(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query(&self.sql.record)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(to_record::<DB>).transpose()
    }

    pub(crate) async fn failed_events(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(&self.sql.failed)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(to_record::<DB>).collect()
    }

    pub(crate) async fn failed_events_after(
        &self,
        after: &EventId,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(&self.sql.failed_after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(after.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(to_record::<DB>).collect()
    }

    /// Reads the abandoned claims (a walk of the table that takes no write lock), then
    /// records each as failed in a statement of its own, if it still is abandoned.
    pub(crate) async fn fail_abandoned(&self, lease_ended: Duration) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let ids: Vec<String> = sqlx::query_scalar(&self.sql.abandoned)
                .bind(millis(lease_ended))
                .bind(PURGE_BATCH)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
            let mut recorded = 0;
            for id in &ids {
                let done = sqlx::query(&self.sql.abandon)
                    .bind(millis(lease_ended))
                    .bind(crate::idempotency::ABANDONED_ERROR)
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                recorded += DB::rows_affected(&done);
            }
            total += recorded;
            // A batch none of which could be recorded (each taken over meanwhile) ends
            // the walk too, so a claim that keeps answering cannot loop it.
            if ids.len() < PURGE_BATCH.unsigned_abs() as usize || recorded == 0 {
                return Ok(total);
            }
        }
    }

    pub(crate) async fn purge_expired(&self) -> Result<u64, StoreError> {
        // The purge runs even when recording abandoned claims fails; that error is
        // reported after it.
        let abandoned = self
            .fail_abandoned(crate::idempotency::ABANDONED_AFTER)
            .await;
        let purged = self.purge_records().await;
        abandoned?;
        purged
    }

    async fn purge_records(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let done = sqlx::query(&self.sql.purge)
                .bind(millis(self.retention))
                .bind(PURGE_BATCH)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            let n = DB::rows_affected(&done);
            total += n;
            if n < PURGE_BATCH.unsigned_abs() {
                break;
            }
        }
        // Watermarks go after the same retention (they are not counted as records): a
        // walk over the objects in key order, one bounded batch per statement.
        // The first batch starts at the smallest id there is, "" (included).
        let (mut after, mut first) = (String::new(), true);
        loop {
            let upto: Option<String> = sqlx::query_scalar(&self.sql.purge_objects_upto)
                .bind(after.as_str())
                .bind(PURGE_BATCH)
                .bind(i64::from(first))
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
            let Some(upto) = upto else {
                return Ok(total);
            };
            sqlx::query(&self.sql.purge_objects)
                .bind(millis(self.retention))
                .bind(after.as_str())
                .bind(upto.as_str())
                .bind(i64::from(first))
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            (after, first) = (upto, false);
        }
    }

    pub(crate) async fn lock_object(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<ObjectLock, StoreError> {
        for _ in 0..3 {
            let row = sqlx::query(&self.sql.lock_object)
                .bind(object_id)
                .bind(holder)
                .bind(millis(lease))
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
            if let Some(row) = row {
                return match watermark_of::<DB>(&row) {
                    Ok(watermark) => Ok(ObjectLock::Acquired { watermark }),
                    Err(e) => {
                        // Taken, but not usable: given back, rather than held to its
                        // lease's end by a caller that gets an error.
                        let _ = self.unlock_object(object_id, holder).await;
                        Err(e)
                    }
                };
            }
            if let Some(retry_after) = self.lock_object_busy(object_id).await? {
                return Ok(ObjectLock::Busy { retry_after });
            }
        }
        Ok(ObjectLock::Busy {
            retry_after: Duration::from_secs(1),
        })
    }

    /// Locks the object and claims the event: one statement (and, on SQLite, a read of
    /// what it took); a refused claim leaves the object unlocked.
    pub(crate) async fn lock_and_claim(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
        id: &EventId,
        event_type: &EventType,
    ) -> Result<LockedClaim, StoreError> {
        let token = ClaimToken::new(id.clone(), 0);
        if let Some(step) = &self.sql.lock_and_claim_step {
            return self
                .lock_and_claim_by_step(step, object_id, holder, lease, id, event_type, token)
                .await;
        }
        if let Some(statement) = &self.sql.lock_and_claim {
            return self
                .lock_and_claim_at_once(statement, object_id, holder, lease, id, event_type, token)
                .await;
        }
        Err(StoreError::unavailable(
            "this dialect has no lock_and_claim statement",
        ))
    }

    /// `lock_and_claim` through a view's trigger (SQLite): one statement that locks and
    /// claims or, raising, does neither, then, in the same query (one round trip to the
    /// connection's thread), a read of the claim's attempts and the watermark (the lock
    /// keeps both as they are).
    #[allow(clippy::too_many_arguments)]
    async fn lock_and_claim_by_step(
        &self,
        step: &str,
        object_id: &str,
        holder: &str,
        lease: Duration,
        id: &EventId,
        event_type: &EventType,
        token: ClaimToken,
    ) -> Result<LockedClaim, StoreError> {
        let fence = token.fence_hex();
        for _ in 0..3 {
            let done = lock_and_claim_query(step, object_id, holder, lease, id, event_type, &fence)
                .fetch_optional(&self.pool)
                .await;
            let row = match done {
                Ok(row) => row,
                Err(e) if raised(&e, statements::OBJECT_BUSY) => {
                    match self.busy_or_done(object_id, id).await? {
                        Some(answer) => return Ok(answer),
                        None => continue,
                    }
                }
                Err(e) if raised(&e, statements::CLAIM_REFUSED) => {
                    match self.state_on(&self.pool, id).await? {
                        Some(claim) => return Ok(LockedClaim::Refused(claim)),
                        None => continue,
                    }
                }
                // No connection: the step never began.
                Err(e) if never_began(&e) => return Err(db_err(e)),
                // The step may have committed with its read failing after it: give back
                // what it may have taken (fenced: nothing if it did not commit).
                Err(e) => {
                    return Err(self
                        .give_back(object_id, holder, &token, "answer lost", db_err(e))
                        .await)
                }
            };
            let Some(row) = row else {
                // Taken from us already: only when the lease is shorter than this read.
                // The lock this pass took is given back first (the next pass's refusal
                // would not undo it).
                self.unlock_object(object_id, holder).await?;
                continue;
            };
            let read = row
                .try_get::<i64, _>(0)
                .map_err(db_err)
                .and_then(|a| Ok((a, watermark_at::<DB>(&row, 1)?)));
            return match read {
                Ok((attempts, watermark)) => Ok(LockedClaim::Acquired {
                    watermark,
                    token: token.with_attempt(attempts_from(attempts)),
                }),
                Err(e) => Err(self
                    .give_back(object_id, holder, &token, "unreadable", e)
                    .await),
            };
        }
        Ok(LockedClaim::Busy {
            retry_after: Duration::from_secs(1),
        })
    }

    /// `lock_and_claim` in one statement; a refused claim unlocks the object again.
    #[allow(clippy::too_many_arguments)]
    async fn lock_and_claim_at_once(
        &self,
        statement: &str,
        object_id: &str,
        holder: &str,
        lease: Duration,
        id: &EventId,
        event_type: &EventType,
        token: ClaimToken,
    ) -> Result<LockedClaim, StoreError> {
        let fence = token.fence_hex();
        for _ in 0..3 {
            let row =
                lock_and_claim_query(statement, object_id, holder, lease, id, event_type, &fence)
                    .fetch_optional(&self.pool)
                    .await;
            let row = match row {
                // PostgreSQL broke a deadlock by undoing this statement (an ordered inbox's
                // delivery of the twin claims the event first and locks the object after):
                // nothing was taken, and the other holds both.
                Err(e) if is_deadlock(&e) => {
                    return Ok(LockedClaim::Busy {
                        retry_after: Duration::from_secs(1),
                    });
                }
                // No connection, or the server refused it (and rolled it back): nothing
                // was taken.
                Err(e @ sqlx::Error::Database(_)) => return Err(db_err(e)),
                Err(e) if never_began(&e) => return Err(db_err(e)),
                // The statement may have committed with its answer lost: give back what it
                // may have taken (fenced: nothing if it did not commit).
                Err(e) => {
                    return Err(self
                        .give_back(object_id, holder, &token, "answer lost", db_err(e))
                        .await)
                }
                Ok(row) => row,
            };
            let Some(row) = row else {
                // Not locked: another holder has the object.
                match self.busy_or_done(object_id, id).await? {
                    Some(answer) => return Ok(answer),
                    None => continue,
                }
            };
            let read = row
                .try_get::<Option<i64>, _>(2)
                .map_err(db_err)
                .and_then(|a| Ok((a, watermark_at::<DB>(&row, 0)?)));
            let (attempts, watermark) = match read {
                Ok(read) => read,
                Err(e) => {
                    return Err(self
                        .give_back(object_id, holder, &token, "unreadable", e)
                        .await)
                }
            };
            if let Some(attempt) = attempts {
                return Ok(LockedClaim::Acquired {
                    watermark,
                    token: token.with_attempt(attempts_from(attempt)),
                });
            }
            // Refused: the lock was taken in the same statement; give it back first.
            self.unlock_object(object_id, holder).await?;
            let state = self.state_on(&self.pool, id).await?;
            if let Some(claim) = state {
                return Ok(LockedClaim::Refused(claim));
            }
        }
        Ok(LockedClaim::Busy {
            retry_after: Duration::from_secs(1),
        })
    }

    /// A `lock_and_claim` whose answer cannot be read (an unreadable watermark: a row
    /// written by hand, or by another version) or was lost (an error after the statement
    /// may have committed) gives back what it may have taken, the claim (released with
    /// `why` and `e` as the reason) and the lock, rather than hold both to their lease's
    /// end; answers `e`.
    async fn give_back(
        &self,
        object_id: &str,
        holder: &str,
        token: &ClaimToken,
        why: &str,
        e: StoreError,
    ) -> StoreError {
        let _ = self.release(token, &format!("{why}: {e}")).await;
        let _ = self.unlock_object(object_id, holder).await;
        e
    }

    /// The answer to a `lock_and_claim` that found another holder's lock on the object:
    /// a completed event is a duplicate whatever the lock (there is nothing to wait
    /// for), anything else waits for the lock; `None` when the lock is free by now.
    async fn busy_or_done(
        &self,
        object_id: &str,
        id: &EventId,
    ) -> Result<Option<LockedClaim>, StoreError> {
        if let Some(Claim::Completed) = self.state_on(&self.pool, id).await? {
            return Ok(Some(LockedClaim::Refused(Claim::Completed)));
        }
        Ok(self
            .lock_object_busy(object_id)
            .await?
            .map(|retry_after| LockedClaim::Busy { retry_after }))
    }

    /// How long another holder's lock on the object has left; `None` if it is free.
    async fn lock_object_busy(&self, object_id: &str) -> Result<Option<Duration>, StoreError> {
        let left: Option<Option<i64>> = sqlx::query_scalar(&self.sql.object_lock_left)
            .bind(object_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(left.flatten().filter(|ms| *ms > 0).map(retry_after_ms))
    }

    /// Completes the claim, moves the watermark and frees the lock: one statement where
    /// the dialect can, else one transaction.
    pub(crate) async fn complete_applied(
        &self,
        token: &ClaimToken,
        object_id: &str,
        holder: &str,
        applied: &Watermark,
    ) -> Result<(), StoreError> {
        let done = self
            .complete_applied_once(token, object_id, holder, applied)
            .await;
        self.unless_completed_by(token, done).await
    }

    async fn complete_applied_once(
        &self,
        token: &ClaimToken,
        object_id: &str,
        holder: &str,
        applied: &Watermark,
    ) -> Result<(), StoreError> {
        let lost = || StoreError::LeaseLost {
            event_id: token.event_id().clone(),
        };
        if let Some(step) = &self.sql.settle_step {
            return match sqlx::query(step)
                .bind(token.event_id().as_str())
                .bind(token.fence_hex())
                .bind(object_id)
                .bind(holder)
                .bind(applied.created)
                .bind(applied.event_id.as_str())
                .execute(&self.pool)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if raised(&e, statements::LEASE_LOST) => Err(lost()),
                Err(e) => Err(db_err(e)),
            };
        }
        if let Some(statement) = &self.sql.complete_applied {
            let done: Option<i64> = sqlx::query_scalar(statement)
                .bind(token.event_id().as_str())
                .bind(token.fence_hex())
                .bind(object_id)
                .bind(holder)
                .bind(applied.created)
                .bind(applied.event_id.as_str())
                .fetch_optional(&self.pool)
                .await
                .or_else(|e| {
                    if raised(&e, statements::LEASE_LOST) {
                        Ok(None)
                    } else {
                        Err(db_err(e))
                    }
                })?;
            return if done.is_some() { Ok(()) } else { Err(lost()) };
        }
        Err(StoreError::unavailable(
            "this dialect has no complete_applied statement",
        ))
    }

    pub(crate) async fn advance_watermark(
        &self,
        key: &str,
        to: &Watermark,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql.advance)
            .bind(key)
            .bind(to.created)
            .bind(to.event_id.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    pub(crate) async fn unlock_object(
        &self,
        object_id: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql.unlock_object)
            .bind(object_id)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    pub(crate) async fn watermark(&self, object_id: &str) -> Result<Option<Watermark>, StoreError> {
        let row = sqlx::query(&self.sql.watermark)
            .bind(object_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some(row) => watermark_of::<DB>(&row),
            None => Ok(None),
        }
    }
}

/// What the two SQL stores share, written once: their settings and accessors, and the
/// trait impls; each call goes to the store's `core`.
macro_rules! store_impls {
    ($store:ty, $pool:ty) => {
        impl $store {
            /// Uses another table name, without quoting: as the database reads it, in
            /// lower case (`Events` is `events`).
            ///
            /// # Errors
            ///
            /// [`StoreError::InvalidConfig`](crate::StoreError::InvalidConfig) unless the
            /// name is 1 to 45 ASCII letters, digits or underscores, not starting with a
            /// digit (the schema's other names add up to 18 characters to it, within
            /// PostgreSQL's 63), nor a word PostgreSQL or SQLite reserve (`order`,
            /// `user`) or a name SQLite keeps for itself (`sqlite_…`).
            pub fn with_table(
                mut self,
                table: &str,
            ) -> Result<Self, $crate::idempotency::StoreError> {
                self.core = self.core.with_table(table)?;
                Ok(self)
            }

            /// How long completed and failed records are kept (30 days by default; at
            /// most a century, which `Duration::MAX` means). Keep it longer than an
            /// event may come back: Stripe retries it for 3 days, and a
            /// [`Reconciler`](crate::reconcile::Reconciler) may list it again for as long
            /// as Stripe lists events (30 days: an `undelivered` pass with a lookback over
            /// 3 days, a cursor held back by a failing event). A completed record purged
            /// sooner lets its event run again. Objects' watermarks are kept for the
            /// retention after their last event; a reconciler's cursors whatever their
            /// age.
            #[must_use]
            pub fn with_retention(mut self, retention: std::time::Duration) -> Self {
                self.core.retention = retention;
                self
            }

            /// The pool.
            pub fn pool(&self) -> &$pool {
                &self.core.pool
            }

            /// The whole schema for this store's table name, as one script for a new
            /// database: every [migration](Self::migrations) in order.
            pub fn migration_sql(&self) -> String {
                self.core.migration_sql()
            }

            /// The schema's migrations for this store's table name, in version order,
            /// for your own migration tool: [`migrate`](Self::migrate) applies the ones a
            /// database has not had and records them in `{table}_migrations`. A tool of
            /// your own that applies them and also lets the store migrate (`connect`
            /// does) should record each in that table too (`version`, `name`,
            /// `applied_at` in Unix milliseconds), or the store applies it again.
            pub fn migrations(&self) -> Vec<$crate::idempotency::Migration> {
                self.core.migrations()
            }
        }

        #[async_trait::async_trait]
        impl $crate::idempotency::IdempotencyStore for $store {
            async fn claim(
                &self,
                id: &$crate::event::EventId,
                event_type: &$crate::event::EventType,
                lease: std::time::Duration,
            ) -> Result<$crate::idempotency::Claim, $crate::idempotency::StoreError> {
                self.core.claim(id, event_type, lease).await
            }

            async fn complete(
                &self,
                token: &$crate::idempotency::ClaimToken,
            ) -> Result<(), $crate::idempotency::StoreError> {
                self.core.complete(token).await
            }

            async fn release(
                &self,
                token: &$crate::idempotency::ClaimToken,
                reason: &str,
            ) -> Result<(), $crate::idempotency::StoreError> {
                self.core.release(token, reason).await
            }

            async fn extend(
                &self,
                token: &$crate::idempotency::ClaimToken,
                lease: std::time::Duration,
            ) -> Result<(), $crate::idempotency::StoreError> {
                self.core.extend(token, lease).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::idempotency::StoreAdmin for $store {
            async fn record(
                &self,
                id: &$crate::event::EventId,
            ) -> Result<Option<$crate::idempotency::EventRecord>, $crate::idempotency::StoreError>
            {
                self.core.record(id).await
            }

            async fn failed_events(
                &self,
                limit: usize,
            ) -> Result<Vec<$crate::idempotency::EventRecord>, $crate::idempotency::StoreError>
            {
                self.core.failed_events(limit).await
            }

            async fn failed_events_after(
                &self,
                after: &$crate::event::EventId,
                limit: usize,
            ) -> Result<Vec<$crate::idempotency::EventRecord>, $crate::idempotency::StoreError>
            {
                self.core.failed_events_after(after, limit).await
            }

            async fn purge_expired(&self) -> Result<u64, $crate::idempotency::StoreError> {
                self.core.purge_expired().await
            }
            async fn fail_abandoned(
                &self,
                lease_ended: std::time::Duration,
            ) -> Result<u64, $crate::idempotency::StoreError> {
                self.core.fail_abandoned(lease_ended).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::idempotency::OrderingStore for $store {
            async fn lock_object(
                &self,
                object_id: &str,
                holder: &str,
                lease: std::time::Duration,
            ) -> Result<$crate::idempotency::ObjectLock, $crate::idempotency::StoreError> {
                self.core.lock_object(object_id, holder, lease).await
            }

            async fn complete_applied(
                &self,
                token: &$crate::idempotency::ClaimToken,
                object_id: &str,
                holder: &str,
                applied: &$crate::idempotency::Watermark,
            ) -> Result<(), $crate::idempotency::StoreError> {
                self.core
                    .complete_applied(token, object_id, holder, applied)
                    .await
            }

            async fn unlock_object(
                &self,
                object_id: &str,
                holder: &str,
            ) -> Result<(), $crate::idempotency::StoreError> {
                self.core.unlock_object(object_id, holder).await
            }

            async fn watermark(
                &self,
                object_id: &str,
            ) -> Result<Option<$crate::idempotency::Watermark>, $crate::idempotency::StoreError>
            {
                self.core.watermark(object_id).await
            }

            async fn advance_watermark(
                &self,
                key: &str,
                to: &$crate::idempotency::Watermark,
            ) -> Result<(), $crate::idempotency::StoreError> {
                self.core.advance_watermark(key, to).await
            }

            async fn lock_and_claim(
                &self,
                object_id: &str,
                holder: &str,
                lease: std::time::Duration,
                event_id: &$crate::event::EventId,
                event_type: &$crate::event::EventType,
            ) -> Result<$crate::idempotency::LockedClaim, $crate::idempotency::StoreError> {
                self.core
                    .lock_and_claim(object_id, holder, lease, event_id, event_type)
                    .await
            }
        }
    };
}
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(unused_imports)
)]
pub(crate) use store_impls;

/// Whether a statement failed before it reached the database: no connection from the
/// pool.
fn never_began(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
}

/// A `lock_and_claim` statement (either form) with its six parameters bound, in the
/// order `statements.rs` gives.
fn lock_and_claim_query<'q, DB: Dialect>(
    statement: &'q str,
    object_id: &'q str,
    holder: &'q str,
    lease: Duration,
    id: &'q EventId,
    event_type: &'q EventType,
    fence: &'q str,
) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
where
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    sqlx::query(statement)
        .bind(object_id)
        .bind(holder)
        .bind(millis(lease))
        .bind(id.as_str())
        .bind(event_type.as_str())
        .bind(fence)
}

/// A watermark from a row's `created` and `event_id` columns (both null: none yet).
pub(crate) fn watermark_of<DB: Dialect>(row: &DB::Row) -> Result<Option<Watermark>, StoreError>
where
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    watermark_at::<DB>(row, 0)
}

/// The watermark in columns `first` (`created`) and `first + 1` (`event_id`) of a row.
fn watermark_at<DB: Dialect>(row: &DB::Row, first: usize) -> Result<Option<Watermark>, StoreError>
where
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let created: Option<i64> = row.try_get(first).map_err(db_err)?;
    let event_id: Option<String> = row.try_get(first + 1).map_err(db_err)?;
    Ok(match (created, event_id) {
        (Some(created), Some(id)) => Some(Watermark::new(created, EventId::new(id))),
        _ => None,
    })
}

/// The third parameter of a fenced statement.
enum Extra<'a> {
    Text(&'a str),
    Millis(i64),
}

fn to_record<DB: Dialect>(row: &DB::Row) -> Result<EventRecord, StoreError>
where
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let status: String = row.try_get(2).map_err(db_err)?;
    let event_type: String = row.try_get(1).map_err(db_err)?;
    Ok(EventRecord {
        event_id: EventId::new(row.try_get::<String, _>(0).map_err(db_err)?),
        event_type: EventType::from_wire(&event_type),
        status: RecordStatus::from_str(&status).map_err(StoreError::unavailable)?,
        attempts: attempts_from(row.try_get(3).map_err(db_err)?),
        last_error: row.try_get(4).map_err(db_err)?,
        first_seen_ms: row.try_get(5).map_err(db_err)?,
        completed_at_ms: row.try_get(6).map_err(db_err)?,
    })
}

/// Raises a flag around a transactional handler's run; on SQLite the flag closes the
/// connection's commit gate (`sqlite::veto_commits_while`). Only [`done`](Self::done)
/// takes it down, once the run is over and nothing of the handler's still runs on the
/// connection. Dropped without it (the future running the handler was cancelled, or
/// the caller found a statement left running), the flag stays up: a statement the
/// handler left in the driver's thread (its own `COMMIT` among them) must not commit
/// the claim and a cut run's writes. That connection's transaction is then rolled back
/// or the connection closed, and the next transaction on it arms a gate of its own.
#[must_use = "the gate stays closed unless `done` is called"]
pub(crate) struct HandlerRunning<'a>(&'a std::sync::atomic::AtomicBool);

impl<'a> HandlerRunning<'a> {
    pub(crate) fn new(closed: &'a std::sync::atomic::AtomicBool) -> Self {
        closed.store(true, std::sync::atomic::Ordering::SeqCst);
        Self(closed)
    }

    /// The run is over: the gate opens.
    pub(crate) fn done(self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check_not_reserved` searches the list by halves.
    #[test]
    fn reserved_words_are_sorted_lower_case_and_unique() {
        assert!(RESERVED_WORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(RESERVED_WORDS
            .iter()
            .all(|w| *w == w.to_ascii_lowercase().as_str()));
        assert!(check_not_reserved("Order").is_err());
        assert!(check_not_reserved("orders").is_ok());
        assert!(check_not_reserved("SQLITE_x").is_err());
    }

    #[test]
    fn versions_newer_than_the_shipped_ones_are_named() {
        let shipped = |versions: &[u32]| -> Vec<Migration> {
            versions
                .iter()
                .map(|v| Migration {
                    version: *v,
                    name: "x.sql",
                    sql: String::new(),
                })
                .collect()
        };
        assert_eq!(
            newer_versions(&[1, 2, 3], &shipped(&[1, 2, 3])),
            Vec::<i64>::new()
        );
        assert_eq!(
            newer_versions(&[1, 2, 3, 4, 7], &shipped(&[1, 2, 3])),
            vec![4, 7]
        );
        assert_eq!(newer_versions(&[1], &shipped(&[1, 2])), Vec::<i64>::new());
        assert_eq!(newer_versions(&[1, 2], &shipped(&[])), vec![1, 2]);
    }

    #[test]
    fn durations_past_a_century_are_a_century() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), MAX_SQL_MILLIS);
        let century = Duration::from_millis(u64::try_from(MAX_SQL_MILLIS).unwrap());
        assert_eq!(millis(century + Duration::from_secs(1)), MAX_SQL_MILLIS);
    }

    #[test]
    fn attempts_read_back_the_same_way_on_every_dialect() {
        assert_eq!(attempts_from(-1), 0);
        assert_eq!(attempts_from(0), 0);
        assert_eq!(attempts_from(7), 7);
        assert_eq!(attempts_from(i64::MAX), u32::MAX);
    }

    #[test]
    fn refused_claims_read_their_state() {
        assert_eq!(
            claim_from_state("completed", None),
            Ok(Some(Claim::Completed))
        );
        assert_eq!(
            claim_from_state("processing", Some(1500)),
            Ok(Some(Claim::InProgress {
                retry_after: Duration::from_millis(1500)
            }))
        );
        assert_eq!(claim_from_state("processing", Some(0)), Ok(None));
        assert_eq!(claim_from_state("failed", None), Ok(None));
        assert_eq!(
            claim_from_state("paused", Some(1500)),
            Err(UnknownStatus("paused".into()))
        );
    }

    /// A record with a status this crate never writes (a hand edit) makes a claim fail
    /// with an error that names it, rather than answer "in progress" (409) for ever.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn a_record_with_an_unknown_status_is_an_error_not_in_progress() {
        use crate::IdempotencyStore;
        let path = std::env::temp_dir().join(format!(
            "stripe_webhooks_unknown_status_{}.db",
            std::process::id()
        ));
        let store = crate::SqliteStore::connect(&path).await.unwrap();
        let (id, t) = (EventId::new("evt_edited"), EventType::InvoicePaid);
        let claim = store.claim(&id, &t, Duration::from_secs(60)).await;
        assert!(matches!(claim, Ok(Claim::Acquired(_))), "{claim:?}");
        // PostgreSQL's table has no check on the status (migration 4); SQLite's must be
        // told to let the edit through.
        let mut conn = store.core.pool.acquire().await.unwrap();
        let ignore = "PRAGMA ignore_check_constraints = ON";
        sqlx::query(ignore).execute(&mut *conn).await.unwrap();
        let edit = format!("UPDATE {DEFAULT_TABLE} SET status = 'paused' WHERE event_id = ?");
        let edited = sqlx::query(&edit)
            .bind(id.as_str())
            .execute(&mut *conn)
            .await;
        assert_eq!(edited.unwrap().rows_affected(), 1);
        let respect = "PRAGMA ignore_check_constraints = OFF";
        sqlx::query(respect).execute(&mut *conn).await.unwrap();
        drop(conn);
        let again = store.claim(&id, &t, Duration::from_secs(60)).await;
        let Err(StoreError::Unavailable(e)) = again else {
            panic!("an unknown status was answered {again:?}");
        };
        let text = e.to_string();
        assert!(
            text.contains("evt_edited") && text.contains("\"paused\""),
            "{text}"
        );
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// A failure recorded outside a claim says whether it was: not over another
    /// delivery's live claim (which settles the event itself), so a caller does not
    /// answer that the store keeps a failure it does not.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn a_failure_over_a_live_claim_is_not_recorded_and_says_so() {
        use crate::IdempotencyStore;
        let path = std::env::temp_dir().join(format!(
            "stripe_webhooks_record_failure_{}.db",
            std::process::id()
        ));
        let store = crate::SqliteStore::connect(&path).await.unwrap();
        let (held, free) = (EventId::new("evt_held"), EventId::new("evt_free"));
        let t = EventType::InvoicePaid;
        let claim = store.claim(&held, &t, Duration::from_secs(60)).await;
        assert!(matches!(claim, Ok(Claim::Acquired(_))), "{claim:?}");
        let core = &store.core;
        let sql = &core.sql.record_failure;
        let over_held = core.record_failure_on(&core.pool, sql, &held, &t, 1, "failed");
        assert!(!over_held.await.unwrap(), "a live claim holds it");
        let free = core.record_failure_on(&core.pool, sql, &free, &t, 1, "failed");
        assert!(free.await.unwrap());
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
