//! The PostgreSQL store: for replicated services.

use std::time::Duration;

use sqlx::{PgPool, Postgres};

use super::{db_err, SqlCore};
use crate::idempotency::StoreError;

super::shipped_migrations! {
    /// The whole schema for a new database: every file under `migrations/postgres/`, in
    /// order, for the default table name. [`PostgresStore::migrations`] gives them one by
    /// one, and [`PostgresStore::migration_sql`] for a renamed table.
    POSTGRES_MIGRATION, POSTGRES_MIGRATIONS = "postgres": [
        1 "0001_webhook_events.sql",
        2 "0002_objects.sql",
        3 "0003_jobs.sql",
        4 "0004_no_check_constraints.sql",
        5 "0005_park_held_back_jobs.sql",
    ]
}

/// How long a migration waits for a table's lock before its run is undone and tried
/// again.
const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a migration run that could not get a lock is tried again.
const MIGRATION_TRIES: u64 = 10;

/// A statement that sets the transaction's `statement_timeout` to `deadline` and a
/// second, unless the session has one of its own (kept as it is, never widened): for an
/// inbox transaction, whose handler, stopped at its deadline in the middle of a
/// statement, leaves the statement running on the server, and the rollback waiting for
/// it. (The second lets the deadline come first, so the failure says so.)
pub(crate) fn statement_timeout_within(deadline: Duration) -> String {
    format!(
        "SELECT {}",
        bound_statements(&format!("'{}'", bounded_ms(deadline)))
    )
}

/// [`statement_timeout_within`]'s bound, in milliseconds.
pub(crate) fn bounded_ms(deadline: Duration) -> u128 {
    deadline
        .saturating_add(Duration::from_secs(1))
        .as_millis()
        .min(i32::MAX as u128)
}

/// The `set_config` call of [`statement_timeout_within`], for the milliseconds `value`
/// (an SQL expression: a literal, or a parameter; `'0'` leaves no bound).
pub(crate) fn bound_statements(value: &str) -> String {
    format!(
        "set_config('statement_timeout', CASE current_setting('statement_timeout') \
         WHEN '0' THEN {value} ELSE current_setting('statement_timeout') END, true)"
    )
}

/// Postgres's `lock_not_available` (a `lock_timeout` fired).
pub(crate) fn is_lock_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03"))
}

/// PostgreSQL's `serialization_failure` (40001): under a `repeatable read` or
/// `serializable` default, a statement met a row another transaction changed after its
/// snapshot began.
pub(crate) fn is_serialization_failure(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("40001"))
}

/// An [`IdempotencyStore`](crate::IdempotencyStore) in PostgreSQL: the store for services with several replicas.
///
/// Claims are one `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING` statement, and lease
/// expiry is judged by the database's clock (`now()`), never a replica's.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use stripe_webhooks::{sqlx::PgPool, PostgresStore};
///
/// // A pool of its own, tuned for the store, with the table created:
/// let store = PostgresStore::connect("postgres://app@127.0.0.1/app").await?;
///
/// // Or on the application's pool, with another table name:
/// let pool = PostgresStore::pool_options().connect("postgres://app@127.0.0.1/app").await?;
/// let store = PostgresStore::new(pool).with_table("stripe_events")?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pub(crate) core: SqlCore<Postgres>,
}

impl PostgresStore {
    /// A store on a pool the application already owns, with the default table
    /// (`stripe_webhook_events`) and retention (30 days). Call
    /// [`migrate`](Self::migrate) once before use.
    pub fn new(pool: PgPool) -> Self {
        Self {
            core: SqlCore::new(pool),
        }
    }

    /// Connects a pool tuned for this store and applies the migrations the database has
    /// not had ([`migrate`](Self::migrate)).
    ///
    /// The pool comes from [`pool_options`](Self::pool_options): unlike sqlx's default, it
    /// does not ping each connection before lending it out. A claim is a single
    /// statement, so the ping doubled its round trips; a connection that died is
    /// reported by the statement itself, and the delivery is answered 503 and retried.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the server cannot be reached or the migration fails.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = Self::pool_options().connect(url).await.map_err(db_err)?;
        let store = Self::new(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// The pool settings [`connect`](Self::connect) uses: up to 16 connections, no
    /// health-check round trip before each use, a 5 s acquire timeout. Start from them
    /// when you build the pool yourself.
    pub fn pool_options() -> sqlx::postgres::PgPoolOptions {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(5))
    }

    /// Applies the [migrations](Self::migrations) this database has not had yet, each
    /// once, in version order, in one transaction, and records them in the table
    /// `{table}_migrations`; answers the versions it applied now (none when the schema is
    /// up to date; such a database is only read, with no write lock). Safe to run
    /// again, and from several replicas at once: the transaction (read committed, whatever
    /// the database's default) first takes an advisory lock named after the table.
    ///
    /// A database migrated before versions were recorded (this crate before 0.1) has every
    /// migration applied once more and recorded: those migrations only create what is
    /// missing.
    ///
    /// A database that records versions this build does not know (migrated by a newer
    /// release, as after a rollback) is left as it is and answers none; with the
    /// `tracing` feature, a warning names those versions.
    ///
    /// A migration that alters a table needs its exclusive lock, which waits behind the
    /// open transactions on it (an old replica's inbox deliveries, during a rolling
    /// deploy) while the table's other statements wait behind it. So a run waits at most
    /// 5 s for a lock, then is undone and tried again after a pause, up to ten times:
    /// deliveries are held up for seconds at a time, never for as long as the longest
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if a statement fails, or if a lock could not be had
    /// in any of the tries; nothing of that run is applied.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        let key = self
            .core
            .table
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        // A migration that alters a table (0004) takes its exclusive lock, which waits
        // behind every open transaction on it, while every statement on the table waits
        // behind the migration: a lock it cannot get soon undoes the run, which is
        // tried again a little later, so webhook claims are held up for seconds, not
        // for as long as the longest transaction.
        // (After the advisory lock: a replica waiting for another's migration waits it
        // out, as before; no claim waits behind that lock.)
        let lock = format!(
            "SELECT pg_advisory_xact_lock({}); SET LOCAL lock_timeout = '{}ms'",
            i64::from_ne_bytes(key.to_ne_bytes()),
            MIGRATION_LOCK_TIMEOUT.as_millis(),
        );
        let mut tries = 0_u64;
        loop {
            let run = super::migrate_versioned!(
                &self.core,
                "BEGIN ISOLATION LEVEL READ COMMITTED",
                Some(lock.clone())
            )
            .await;
            match run {
                Err(e) if is_lock_timeout(&e) && tries < MIGRATION_TRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(250 * tries)).await;
                }
                done => return done.map_err(db_err),
            }
        }
    }
}

super::store_impls!(PostgresStore, PgPool);
