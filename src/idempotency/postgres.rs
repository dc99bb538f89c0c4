//! The PostgreSQL store: for replicated services.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row};

use super::{
    lease_ms, new_fence, retry_after_ms, truncate_error, validate_name, with_table, Claim,
    ClaimToken, EventRecord, IdempotencyStore, RecordStatus, StoreError, TransactionalHandler,
    DEFAULT_RETENTION, DEFAULT_TABLE,
};
use crate::event::{Event, EventId};
use crate::processor::{
    run_handler, store_call, DispatchSettings, Dispatched, Dispatcher, OutcomeKind,
};

/// The schema, as shipped in `migrations/postgres/0001_webhook_events.sql`, for the
/// default table name. Use [`PostgresStore::migration_sql`] for a renamed table.
pub const POSTGRES_MIGRATION: &str =
    include_str!("../../migrations/postgres/0001_webhook_events.sql");

const PURGE_BATCH: i64 = 1000;

const RECORD_COLS: &str = "event_id, event_type, status, attempts, last_error, \
    (extract(epoch FROM first_seen) * 1000)::bigint, (extract(epoch FROM completed_at) * 1000)::bigint";

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
                "INSERT INTO {t} AS e (event_id, event_type, status, attempts, fence, lease_until, first_seen, updated_at) \
                 VALUES ($1, $2, 'processing', 1, $3, now() + $4 * interval '1 millisecond', now(), now()) \
                 ON CONFLICT (event_id) DO UPDATE SET status = 'processing', attempts = e.attempts + 1, \
                 fence = EXCLUDED.fence, lease_until = EXCLUDED.lease_until, updated_at = now() \
                 WHERE e.status = 'failed' OR (e.status = 'processing' AND e.lease_until <= now()) \
                 RETURNING attempts"
            ),
            state: format!(
                "SELECT status, (extract(epoch FROM (lease_until - clock_timestamp())) * 1000)::bigint \
                 FROM {t} WHERE event_id = $1"
            ),
            complete: format!(
                "UPDATE {t} SET status = 'completed', completed_at = now(), lease_until = NULL, updated_at = now() \
                 WHERE event_id = $1 AND fence = $2 AND status = 'processing'"
            ),
            release: format!(
                "UPDATE {t} SET status = 'failed', last_error = $3, lease_until = NULL, updated_at = now() \
                 WHERE event_id = $1 AND fence = $2 AND status = 'processing'"
            ),
            extend: format!(
                "UPDATE {t} SET lease_until = now() + $3 * interval '1 millisecond', updated_at = now() \
                 WHERE event_id = $1 AND fence = $2 AND status = 'processing'"
            ),
            record: format!("SELECT {RECORD_COLS} FROM {t} WHERE event_id = $1"),
            failed: format!(
                "SELECT {RECORD_COLS} FROM {t} WHERE status = 'failed' ORDER BY first_seen LIMIT $1"
            ),
            purge: format!(
                "DELETE FROM {t} WHERE event_id IN (SELECT event_id FROM {t} WHERE status <> 'processing' \
                 AND updated_at < now() - $1 * interval '1 millisecond' LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
            record_failure: format!(
                "INSERT INTO {t} AS e (event_id, event_type, status, attempts, fence, lease_until, last_error, first_seen, updated_at) \
                 VALUES ($1, $2, 'failed', $3, $4, NULL, $5, now(), now()) \
                 ON CONFLICT (event_id) DO UPDATE SET status = 'failed', attempts = EXCLUDED.attempts, \
                 fence = EXCLUDED.fence, lease_until = NULL, last_error = EXCLUDED.last_error, updated_at = now() \
                 WHERE e.status = 'failed' OR (e.status = 'processing' AND e.lease_until <= now())"
            ),
        }
    }
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

/// Postgres's `lock_not_available` (a `lock_timeout` fired).
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03"))
}

/// An [`IdempotencyStore`] in PostgreSQL: the store for services with several replicas.
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
    pool: PgPool,
    table: Arc<str>,
    retention: Duration,
    sql: Arc<Sql>,
}

impl PostgresStore {
    /// A store on a pool the application already owns, with the default table
    /// (`stripe_webhook_events`) and retention (30 days). Call
    /// [`migrate`](Self::migrate) once before use.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            table: Arc::from(DEFAULT_TABLE),
            retention: DEFAULT_RETENTION,
            sql: Arc::new(Sql::new(DEFAULT_TABLE)),
        }
    }

    /// Connects a pool tuned for this store and creates the table if it is missing.
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

    /// Uses another table name (optionally without a schema; it is used as written).
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
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema for this store's table name, for your own migration tool.
    pub fn migration_sql(&self) -> String {
        with_table(POSTGRES_MIGRATION, &self.table)
    }

    /// Creates the table and its indexes if they are missing. Safe to run again, and from
    /// several replicas at once (it takes a transaction-scoped advisory lock).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the statements fail.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // One simple-protocol message runs as one implicit transaction, so the advisory
        // lock taken first is held until the schema statements are done.
        let key = self.table.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let sql = format!(
            "SELECT pg_advisory_xact_lock({}); {}",
            i64::from_ne_bytes(key.to_ne_bytes()),
            self.migration_sql()
        );
        sqlx::raw_sql(&sql)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Runs `handler` in inbox mode: see [`PostgresInbox`].
    pub fn inbox<H: TransactionalHandler<Postgres>>(&self, handler: H) -> PostgresInbox<H> {
        PostgresInbox {
            store: self.clone(),
            handler,
        }
    }

    async fn fenced<'a>(
        &self,
        q: sqlx::query::Query<'a, Postgres, sqlx::postgres::PgArguments>,
        token: &ClaimToken,
    ) -> Result<(), StoreError> {
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

fn to_record(row: &PgRow) -> Result<EventRecord, StoreError> {
    let status: String = row.try_get(2).map_err(db_err)?;
    let attempts: i32 = row.try_get(3).map_err(db_err)?;
    Ok(EventRecord::new(
        EventId::new(row.try_get::<String, _>(0).map_err(db_err)?),
        row.try_get(1).map_err(db_err)?,
        RecordStatus::from_name(&status).ok_or_else(|| {
            StoreError::unavailable(format!("unknown status {status:?} in store"))
        })?,
        u32::try_from(attempts).unwrap_or(0),
        row.try_get(4).map_err(db_err)?,
        row.try_get(5).map_err(db_err)?,
        row.try_get(6).map_err(db_err)?,
    ))
}

async fn claim_on<'c, E>(
    sql: &Sql,
    conn: E,
    id: &EventId,
    event_type: &str,
    fence: &str,
    lease: Duration,
) -> Result<Option<u32>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let row = sqlx::query(&sql.claim)
        .bind(id.as_str())
        .bind(event_type)
        .bind(fence)
        .bind(lease_ms(lease) as f64)
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some(r) => Some(u32::try_from(r.try_get::<i32, _>(0)?).unwrap_or(0)),
        None => None,
    })
}

async fn state_on<'c, E>(sql: &Sql, conn: E, id: &EventId) -> Result<Option<Claim>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Postgres>,
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
        _ => None,
    })
}

#[async_trait]
impl IdempotencyStore for PostgresStore {
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
        Ok(Claim::InProgress {
            retry_after: Duration::from_secs(1),
        })
    }

    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        let q = sqlx::query(&self.sql.complete)
            .bind(token.event_id().as_str())
            .bind(token.fence_hex());
        self.fenced(q, token).await
    }

    async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError> {
        let q = sqlx::query(&self.sql.release)
            .bind(token.event_id().as_str())
            .bind(token.fence_hex())
            .bind(truncate_error(reason));
        self.fenced(q, token).await
    }

    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
        let q = sqlx::query(&self.sql.extend)
            .bind(token.event_id().as_str())
            .bind(token.fence_hex())
            .bind(lease_ms(lease) as f64);
        self.fenced(q, token).await
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
                .bind(lease_ms(self.retention) as f64)
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

/// Inbox mode on PostgreSQL: a [`Dispatcher`] that claims the event, runs a
/// [`TransactionalHandler`] and marks the event completed, all in one transaction. The
/// handler's writes and the "done" mark commit together or not at all.
///
/// A concurrent duplicate blocks on the claim row's lock for at most the processor's
/// store timeout (`lock_timeout`), then gets 409, or 200 if the first delivery committed
/// in the meantime. A failed handler rolls everything back and the failure is recorded.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use stripe_webhooks::sqlx::{PgConnection, PgPool, Postgres};
/// use stripe_webhooks::{async_trait, Event, HandlerError, PostgresStore, Processor, TransactionalHandler, Verifier};
///
/// struct Access;
///
/// #[async_trait]
/// impl TransactionalHandler<Postgres> for Access {
///     async fn handle(&self, event: &Event, conn: &mut PgConnection) -> Result<(), HandlerError> {
///         if let Event::CustomerSubscriptionDeleted(sub) = event {
///             stripe_webhooks::sqlx::query("DELETE FROM access WHERE subscription = $1")
///                 .bind(sub.id.as_str())
///                 .execute(&mut *conn)
///                 .await
///                 .map_err(HandlerError::new)?;
///         }
///         Ok(())
///     }
/// }
///
/// let store = PostgresStore::new(PgPool::connect("postgres://app@127.0.0.1/app").await?);
/// store.migrate().await?;
/// let processor = Processor::with_dispatcher(Verifier::from_secrets_list("whsec_…")?, store.inbox(Access));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PostgresInbox<H> {
    store: PostgresStore,
    handler: H,
}

impl<H> PostgresInbox<H> {
    /// The store underneath.
    pub fn store(&self) -> &PostgresStore {
        &self.store
    }
}

#[async_trait]
impl<H: TransactionalHandler<Postgres>> Dispatcher for PostgresInbox<H> {
    async fn dispatch(&self, event: &Event, settings: &DispatchSettings) -> Dispatched {
        if !self.handler.handles(event.event_type()) {
            return Dispatched::unclaimed(OutcomeKind::Ignored);
        }
        let store = &self.store;
        let id = event.id();
        let event_type = event.event_type().as_str();
        let fence = new_fence();
        let hex = format!("{fence:032x}");
        let t = settings.store_timeout;
        let lock_ms = lease_ms(t).max(1);

        let begun = store_call(t, async {
            let mut tx = store.pool.begin().await.map_err(db_err)?;
            sqlx::query(&format!("SET LOCAL lock_timeout = '{lock_ms}ms'"))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            Ok(tx)
        })
        .await;
        let mut tx = match begun {
            Ok(tx) => tx,
            Err(e) => return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e)),
        };
        let claimed = store_call(t + Duration::from_millis(500), async {
            let attempt = claim_on(&store.sql, &mut *tx, id, event_type, &hex, settings.lease)
                .await
                .map_err(db_err)?;
            if attempt.is_some() {
                // The short lock timeout was for the claim only; the handler's own
                // statements run under the session's setting.
                sqlx::query("SET LOCAL lock_timeout TO DEFAULT")
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            Ok(attempt)
        })
        .await;
        let attempt = match claimed {
            Ok(Some(a)) => a,
            Ok(None) => {
                let state = state_on(&store.sql, &mut *tx, id).await;
                drop(tx);
                return match state {
                    Ok(Some(Claim::InProgress { retry_after })) => {
                        Dispatched::unclaimed(OutcomeKind::InProgress { retry_after })
                    }
                    Ok(Some(_)) => Dispatched::unclaimed(OutcomeKind::Duplicate),
                    Ok(None) => Dispatched::unclaimed(OutcomeKind::InProgress {
                        retry_after: Duration::from_secs(1),
                    }),
                    Err(e) => Dispatched::unclaimed(OutcomeKind::StoreUnavailable(db_err(e))),
                };
            }
            Err(StoreError::Unavailable(e))
                if e.downcast_ref::<sqlx::Error>().is_some_and(is_lock_timeout) =>
            {
                return Dispatched::unclaimed(OutcomeKind::InProgress { retry_after: t });
            }
            Err(e) => return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e)),
        };

        match run_handler(self.handler.handle(event, &mut *tx), settings.deadline).await {
            Ok(()) => {
                let completed = store_call(t, async {
                    let done = sqlx::query(&store.sql.complete)
                        .bind(id.as_str())
                        .bind(&hex)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() != 1 {
                        return Err(StoreError::LeaseLost {
                            event_id: id.clone(),
                        });
                    }
                    Ok(())
                })
                .await;
                let committed = match completed {
                    Ok(()) => store_call(t, async { tx.commit().await.map_err(db_err) }).await,
                    Err(e) => Err(e),
                };
                match committed {
                    Ok(()) => Dispatched::attempt(OutcomeKind::Processed, attempt),
                    Err(e) => Dispatched::attempt(OutcomeKind::StoreUnavailable(e), attempt),
                }
            }
            Err(e) => {
                drop(tx);
                let reason = e.to_string();
                let _ = store_call(t, async {
                    sqlx::query(&store.sql.record_failure)
                        .bind(id.as_str())
                        .bind(event_type)
                        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
                        .bind(&hex)
                        .bind(truncate_error(&reason))
                        .execute(&store.pool)
                        .await
                        .map_err(db_err)
                })
                .await;
                Dispatched::attempt(OutcomeKind::HandlerFailed(e), attempt)
            }
        }
    }
}
