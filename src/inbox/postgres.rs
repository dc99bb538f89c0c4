//! Inbox mode on PostgreSQL: one transaction per delivery.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Postgres, Row};

use super::TransactionalHandler;
use crate::event::{Event, EventId, EventType};
use crate::handler::HandlerError;
use crate::idempotency::sql::is_deadlock;
use crate::idempotency::sql::postgres::{is_lock_timeout, is_serialization_failure};
use crate::idempotency::sql::{db_err, millis, watermark_of};
use crate::idempotency::{Claim, ClaimToken, PostgresStore, StoreError, Watermark};

/// Restores the session's `lock_timeout` (`$1`) once the claim is taken, bounds the
/// handler's statements to `$2` milliseconds (none: `0`) unless the session bounds them
/// itself, and marks the transaction as the delivery's (`$3`, the claim's fence: see
/// [`INBOX_MARK`]).
static RESTORE_TIMEOUTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT set_config('lock_timeout', $1, true), {}, set_config('{INBOX_MARK}', $3, true)",
        crate::idempotency::sql::postgres::bound_statements("$2::text")
    )
});

/// A transaction-local setting naming the delivery (its claim's fence) whose transaction
/// this is. It ends with the transaction: a completion that finds it gone runs outside
/// the transaction the handler ran in (rolled back, or ended, under the handler), and
/// must not complete anything.
const INBOX_MARK: &str = "stripe_webhooks.inbox";

/// The completion in inbox mode: the store's, in the transaction it was claimed in only.
fn inbox_complete(complete: &str) -> String {
    format!("{complete} AND current_setting('{INBOX_MARK}', true) = $2")
}

/// A delivery's transaction ended under its handler.
const LOST_UNDER_THE_HANDLER: &str = "the handler returned Ok, but its transaction had \
    ended under it: rolled back after a statement that failed (by sqlx, when the handler \
    then began a transaction of its own: its `SAVEPOINT` fails in the aborted transaction, \
    and sqlx undoes it with a whole `ROLLBACK`), or ended by the handler itself. What it \
    wrote in the transaction is gone, and anything it wrote after ran outside it: return \
    a failed statement's error instead of catching it, and leave the transaction alone";
use crate::processor::sealed::Sealed;
use crate::processor::{
    fetch_within, handler_future, run_handler, store_call, DispatchSettings, Dispatched,
    Dispatcher, Inbox, OutcomeKind, TiePolicy,
};

/// Inbox mode on PostgreSQL, for [`Processor::with_inbox`](crate::Processor::with_inbox): it claims the event, runs a
/// [`TransactionalHandler`] and marks the event completed, all in one transaction. The
/// handler's writes and the "done" mark commit together or not at all.
///
/// A concurrent duplicate blocks on the claim row's lock for at most the processor's
/// store timeout (`lock_timeout`), then gets 409, or 200 if the first delivery committed
/// in the meantime. A failed handler rolls everything back and the failure is recorded.
///
/// The handler's statements run under the session's `lock_timeout` and
/// `statement_timeout`; where the session sets no `statement_timeout`, the handler
/// deadline and a second bound each of them, so that a statement the deadline cuts (a
/// lock wait, a long `UPDATE`) ends on the server too: it is also cancelled at once
/// (`pg_cancel_backend`) when the pool has a connection to spare.
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
/// let processor = Processor::with_inbox(Verifier::from_secrets_list("whsec_…")?, store.inbox(Access));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PostgresInbox<H> {
    store: PostgresStore,
    handler: H,
    ordering: Option<TiePolicy>,
    /// [`inbox_complete`], for this store's table.
    complete: String,
}

impl<H> PostgresInbox<H> {
    pub(crate) fn new(store: PostgresStore, handler: H) -> Self {
        let complete = inbox_complete(&store.core.sql.complete);
        Self {
            store,
            handler,
            complete,
            ordering: None,
        }
    }

    /// Turns on the ordering guard (see [`Processor::ordered`](crate::Processor::ordered))
    /// inside the delivery's transaction: the object's row (`{table}_objects`) is locked
    /// with the claim, so deliveries about one object run one at a time (a delivery that
    /// waits past the store timeout gets 409), an event older than the object's
    /// watermark is completed without running the handler (`stale`; a [`TransactionalHandler`] has no
    /// `handle_stale`, so nothing runs for it), and the watermark
    /// moves in the transaction that commits the handler's writes. A guarded route
    /// outside the inbox on the same table ([`Processor::thin_ordered`](crate::Processor::thin_ordered))
    /// locks objects by a lease instead: a delivery that finds such a lock rolls back and
    /// gets 409 until it is freed, and that route's lock waits for the row lock. Types
    /// the handler's [`is_ordered`](TransactionalHandler::is_ordered) keeps out (a payment
    /// to record) run unguarded, whatever their age.
    #[must_use]
    pub fn ordered(mut self, ties: TiePolicy) -> Self {
        self.ordering = Some(ties);
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &PostgresStore {
        &self.store
    }
}

impl<H> PostgresInbox<H> {
    /// Records the handler's failure (its transaction rolled back) and answers it: 500,
    /// and Stripe retries.
    async fn failed(
        &self,
        id: &EventId,
        event_type: &EventType,
        attempt: u32,
        e: HandlerError,
        t: Duration,
    ) -> Dispatched {
        let core = &self.store.core;
        let reason = crate::error::error_text(&e);
        let recorded = store_call(t, async {
            core.record_failure_on(
                &core.pool,
                &core.sql.record_failure,
                id,
                event_type,
                attempt,
                &reason,
            )
            .await
            .map_err(db_err)
        })
        .await;
        Dispatched::failed(e, attempt, matches!(recorded, Ok(true)))
    }
}

/// What a delivery's claim step took, in its transaction.
enum Claimed {
    /// The claim (this attempt), and the object's watermark under its row lock.
    Took(u32, Option<Watermark>),
    /// The claim was refused: the event completed, or another delivery holds it.
    Refused,
    /// A guarded route outside the inbox holds the object's lease lock this long yet.
    ObjectBusy(Duration),
}

/// How many times a claim that failed to serialize (40001) runs again, each in a new
/// transaction: each failure means another delivery committed meanwhile.
const SERIALIZATION_TRIES: u32 = 3;

/// The handler's error when it returned `Ok` from an aborted transaction.
const ABORTED_BY_THE_HANDLER: &str = "the handler returned Ok, but one of its statements \
    had failed and aborted the transaction (SQLSTATE 25P02), so its writes were rolled back: \
    return the statement's error instead of catching it (or run it under a savepoint)";

/// Whether a `COMMIT` was refused for what the handler wrote: an integrity constraint
/// checked at the commit (SQLSTATE class 23: a deferred foreign key, unique or
/// exclusion constraint) or a deferred constraint trigger that raised (P0001). That is
/// the handler's failure, which a retry meets again; a lost connection, a timeout or a
/// serialization failure is not.
fn refused_for_the_handlers_writes(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(e) if e.downcast_ref::<sqlx::Error>().is_some_and(
        |e| matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(
            |c| c.starts_with("23") || c == "P0001"
        ))
    ))
}

/// Whether completing failed because the transaction was already aborted
/// (`in_failed_sql_transaction`): a statement of the handler failed and it went on.
fn aborted_by_the_handler(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(e) if e.downcast_ref::<sqlx::Error>().is_some_and(
        |e| matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("25P02"))
    ))
}

impl PostgresStore {
    /// Runs `handler` in inbox mode: see [`PostgresInbox`].
    pub fn inbox<H: TransactionalHandler<Postgres>>(&self, handler: H) -> PostgresInbox<H> {
        PostgresInbox::new(self.clone(), handler)
    }
}

/// How an inbox completion went, short of a store error.
enum Completion {
    /// Completed, and the watermark moved, in the delivery's transaction.
    Done,
    /// The delivery's transaction was gone: nothing was written.
    Lost,
}

impl<H: TransactionalHandler<Postgres>> Inbox for PostgresInbox<H> {}
impl<H: TransactionalHandler<Postgres>> Sealed for PostgresInbox<H> {}

impl<H: TransactionalHandler<Postgres>> PostgresInbox<H> {
    /// One try at the claim: a transaction begun with a short lock timeout for the claim,
    /// set in one round trip with reading the session's own (a pool's `after_connect` may
    /// have set one), which the handler gets back, and the server process's id (to cancel
    /// a statement the handler leaves running past its deadline); then the claim and,
    /// under the ordering guard, the object's row lock. `Err` when the transaction could
    /// not begin; else the transaction, the process id, and how the claim went.
    async fn try_claim(
        &self,
        event: &Event,
        object_id: Option<&str>,
        hex: &str,
        settings: &DispatchSettings,
    ) -> Result<
        (
            sqlx::Transaction<'static, Postgres>,
            i32,
            Result<Claimed, StoreError>,
        ),
        StoreError,
    > {
        let core = &self.store.core;
        let t = settings.store_timeout;
        let lock_ms = millis(t).max(1);
        let (mut tx, session_lock_timeout, backend) = store_call(t, async {
            let mut tx = core.pool.begin().await.map_err(db_err)?;
            let (session, pid): (String, i32) = sqlx::query_as(
                "WITH s AS MATERIALIZED (SELECT current_setting('lock_timeout') AS v, \
                 pg_backend_pid() AS pid) \
                 SELECT v, pid FROM s WHERE set_config('lock_timeout', $1, true) IS NOT NULL",
            )
            .bind(format!("{lock_ms}ms"))
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
            Ok((tx, session, pid))
        })
        .await?;
        // The claim and the object's row lock each wait up to `t`.
        let claimed = store_call(
            t.saturating_mul(2)
                .saturating_add(Duration::from_millis(500)),
            async {
                let attempt = core
                    .claim_on(
                        &mut *tx,
                        &core.sql.claim,
                        event.id(),
                        event.event_type(),
                        hex,
                        Some(settings.lease),
                    )
                    .await
                    .map_err(db_err)?;
                let Some(attempt) = attempt else {
                    return Ok(Claimed::Refused);
                };
                let mut watermark = None;
                // The ordering guard's row lock, under the same short lock timeout: a
                // delivery about the same object holds it until it commits.
                if let Some(object_id) = object_id {
                    let row = sqlx::query(&core.sql.lock_row)
                        .bind(object_id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    // A lease lock on the object (a guarded route outside the inbox,
                    // `Processor::thin_ordered` on this store, running its handler):
                    // wait for it, as for a row lock.
                    let held: Option<i64> = row.try_get(2).map_err(db_err)?;
                    if let Some(ms) = held.filter(|ms| *ms > 0) {
                        return Ok(Claimed::ObjectBusy(Duration::from_millis(
                            u64::try_from(ms).unwrap_or(1),
                        )));
                    }
                    watermark = watermark_of::<Postgres>(&row)?;
                }
                // The short lock timeout was for the claim only; the handler's own
                // statements run under the session's setting, and, with a deadline, no
                // longer than it and a second (unless the session bounds them itself):
                // a statement the deadline cuts ends on the server too, even when the
                // pool has no connection left for `pg_cancel_backend`.
                let bound = settings
                    .deadline
                    .map_or(0, crate::idempotency::sql::postgres::bounded_ms);
                sqlx::query(&RESTORE_TIMEOUTS)
                    .bind(session_lock_timeout.as_str())
                    .bind(i64::try_from(bound).unwrap_or(0))
                    .bind(hex)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                Ok(Claimed::Took(attempt, watermark))
            },
        )
        .await;
        Ok((tx, backend, claimed))
    }
}

#[async_trait]
impl<H: TransactionalHandler<Postgres>> Dispatcher for PostgresInbox<H> {
    fn handles(&self, event_type: &crate::EventType) -> bool {
        self.handler.handles(event_type)
    }

    fn unknown_types(&self) -> Vec<String> {
        self.handler.unknown_types()
    }

    fn is_ordered(&self, event_type: &crate::EventType) -> bool {
        self.handler.is_ordered(event_type)
    }

    fn store(&self) -> std::sync::Arc<dyn crate::IdempotencyStore> {
        std::sync::Arc::new(self.store.clone())
    }

    fn thin_guard(&self) -> Option<std::sync::Arc<crate::processor::OrderingGuard>> {
        let ties = self.ordering.clone()?;
        Some(std::sync::Arc::new(crate::processor::OrderingGuard {
            store: std::sync::Arc::new(self.store.clone()),
            ties,
        }))
    }

    async fn dispatch(&self, event: &Event, settings: &DispatchSettings) -> Dispatched {
        // A check that panics is recorded outside the delivery's transaction.
        let store = Dispatcher::store(self);
        let guarded = self.ordering.is_some();
        let ordered = match super::screen(store, &self.handler, guarded, event, settings).await {
            Ok(ordered) => ordered,
            Err(answer) => return answer,
        };
        let core = &self.store.core;
        let object_id = ordered.then(|| event.ordering_key()).flatten();
        let id = event.id();
        let event_type = event.event_type();
        let hex = ClaimToken::new(id.clone(), 0).fence_hex();
        let t = settings.store_timeout;

        // Under a `repeatable read` or `serializable` default, a claim that waited on
        // another delivery's row fails once that one commits (40001): in a transaction
        // begun after it, the claim sees what it committed (a duplicate, say).
        let mut tries = 0;
        let (mut tx, backend, claimed) = loop {
            let (tx, backend, claimed) = match self
                .try_claim(event, object_id.as_deref(), &hex, settings)
                .await
            {
                Ok(tried) => tried,
                Err(e) => return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e)),
            };
            match &claimed {
                Err(StoreError::Unavailable(e))
                    if tries < SERIALIZATION_TRIES
                        && e.downcast_ref::<sqlx::Error>()
                            .is_some_and(is_serialization_failure) =>
                {
                    tries += 1;
                    drop(tx);
                }
                _ => break (tx, backend, claimed),
            }
        };
        let (attempt, watermark) = match claimed {
            Ok(Claimed::Took(a, watermark)) => (a, watermark),
            // The transaction rolls back with the claim.
            Ok(Claimed::ObjectBusy(retry_after)) => {
                drop(tx);
                return Dispatched::unclaimed(OutcomeKind::InProgress { retry_after });
            }
            Ok(Claimed::Refused) => {
                // Under the store timeout like every other store call.
                let state = store_call(t, async { core.state_on(&mut *tx, id).await }).await;
                drop(tx);
                return match state {
                    Ok(Some(Claim::InProgress { retry_after })) => {
                        Dispatched::unclaimed(OutcomeKind::InProgress { retry_after })
                    }
                    Ok(Some(_)) => Dispatched::unclaimed(OutcomeKind::Duplicate),
                    Ok(None) => Dispatched::unclaimed(OutcomeKind::InProgress {
                        retry_after: Duration::from_secs(1),
                    }),
                    Err(e) => Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e)),
                };
            }
            // A lock that did not come in time, or a deadlock PostgreSQL broke by undoing
            // this claim (a thin twin of this event, beside this inbox, locks the object
            // first and claims after), or serialization failures past the tries: another
            // delivery holds it; Stripe retries.
            Err(StoreError::Unavailable(e))
                if e.downcast_ref::<sqlx::Error>().is_some_and(|e| {
                    is_lock_timeout(e) || is_deadlock(e) || is_serialization_failure(e)
                }) =>
            {
                return Dispatched::unclaimed(OutcomeKind::InProgress { retry_after: t });
            }
            Err(e) => return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e)),
        };

        let tie = watermark
            .as_ref()
            .is_some_and(|w| w.ties(event.created(), id));
        let ties_stale = matches!(self.ordering, Some(TiePolicy::Stale));
        let stale = watermark
            .as_ref()
            .is_some_and(|w| w.outdates(event.created(), id, ties_stale));
        // A tie under `TiePolicy::Fetch` runs on the object fetched from the API (within
        // the handler's deadline, since the transaction is open); a failed fetch is a
        // handler failure.
        let mut failed_fetch = None;
        let fresh;
        let event = match &self.ordering {
            Some(TiePolicy::Fetch(client)) if tie && !stale => {
                // Bounded even without a handler deadline: the claim's and the object's
                // rows stay locked meanwhile.
                match fetch_within(event, &**client, settings.deadline.or(Some(t))).await {
                    Ok(Some(e)) => {
                        fresh = e;
                        &fresh
                    }
                    Ok(None) => event,
                    Err(e) => {
                        failed_fetch = Some(e);
                        event
                    }
                }
            }
            _ => event,
        };
        let outcome = if let Some(e) = failed_fetch.take() {
            Err(e)
        } else if stale {
            Ok(())
        } else {
            run_handler(
                handler_future(|| self.handler.handle(event, &mut *tx)),
                settings.deadline,
            )
            .await
        };
        match outcome {
            Ok(()) => {
                // The completion first, and only in the transaction the claim was taken
                // in: were that transaction gone (ended under the handler), the watermark
                // would otherwise move on its own, outside any transaction.
                let completed = store_call(t, async {
                    let done = sqlx::query(&self.complete)
                        .bind(id.as_str())
                        .bind(&hex)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() != 1 {
                        let mark: Option<String> =
                            sqlx::query_scalar("SELECT current_setting($1, true)")
                                .bind(INBOX_MARK)
                                .fetch_one(&mut *tx)
                                .await
                                .map_err(db_err)?;
                        if mark.as_deref() != Some(hex.as_str()) {
                            return Ok(Completion::Lost);
                        }
                        return Err(StoreError::LeaseLost {
                            event_id: id.clone(),
                        });
                    }
                    if let (Some(object_id), false) = (&object_id, stale) {
                        sqlx::query(&core.sql.advance)
                            .bind(object_id.as_str())
                            .bind(event.created())
                            .bind(id.as_str())
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    }
                    Ok(Completion::Done)
                })
                .await;
                let committed = match completed {
                    Ok(Completion::Lost) => {
                        // Whatever the handler left open on the connection ends here (a
                        // warning, when nothing is), before the failure is recorded.
                        let _ = store_call(t, async {
                            sqlx::query("ROLLBACK")
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err)
                        })
                        .await;
                        drop(tx);
                        let e = HandlerError::new(LOST_UNDER_THE_HANDLER);
                        return self.failed(id, event_type, attempt, e, t).await;
                    }
                    Ok(Completion::Done) => {
                        match store_call(t, async { tx.commit().await.map_err(db_err) }).await {
                            // Refused for the handler's own writes, the transaction rolled
                            // back: the handler's failure, recorded, where a 503 would record
                            // nothing and fail the same way on every retry.
                            Err(e) if refused_for_the_handlers_writes(&e) => {
                                let e = HandlerError::new(format!(
                                    "the handler's writes could not be committed: {e}"
                                ));
                                return self.failed(id, event_type, attempt, e, t).await;
                            }
                            other => other,
                        }
                    }
                    Err(e) if aborted_by_the_handler(&e) => {
                        // The handler caught a failed statement and returned `Ok`, but
                        // PostgreSQL had aborted the transaction: its writes are gone.
                        // Its failure, not the store's: recorded, and Stripe retries.
                        // Rolled back first: until then the claim's row stays locked,
                        // and the record would wait on it.
                        let _ = store_call(t, async { tx.rollback().await.map_err(db_err) }).await;
                        let e = HandlerError::new(ABORTED_BY_THE_HANDLER);
                        return self.failed(id, event_type, attempt, e, t).await;
                    }
                    Err(e) => Err(e),
                };
                match committed {
                    Ok(()) if stale => Dispatched::attempt(
                        OutcomeKind::Stale {
                            watermark: watermark.unwrap_or_else(|| Watermark::new(0, id.clone())),
                        },
                        attempt,
                    ),
                    Ok(()) => Dispatched::attempt(OutcomeKind::Processed, attempt),
                    Err(e) => Dispatched::attempt(OutcomeKind::StoreUnavailable(e), attempt),
                }
            }
            Err(e) => {
                if matches!(
                    e,
                    HandlerError::DeadlineExceeded(_) | HandlerError::Panicked(_)
                ) {
                    // The handler was dropped, maybe in the middle of a statement, which
                    // the server would run to its end (a lock wait, a long `UPDATE`)
                    // before the rollback, holding the claim's row meanwhile, so the
                    // failure could not be recorded. Cancel it.
                    let _ = store_call(t, async {
                        sqlx::query("SELECT pg_cancel_backend($1)")
                            .bind(backend)
                            .execute(&core.pool)
                            .await
                            .map_err(db_err)
                    })
                    .await;
                }
                // Rolled back before the failure is recorded: until then the claim's row
                // stays locked, and the record would wait on it.
                let _ = store_call(t, async { tx.rollback().await.map_err(db_err) }).await;
                self.failed(id, event_type, attempt, e, t).await
            }
        }
    }
}
