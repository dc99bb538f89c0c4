//! Inbox mode on SQLite: each delivery in a savepoint of the shared transaction of the
//! group-commit engine (`group_commit`).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Row, Sqlite};

use super::group_commit::{busy_or_down, is_rolled_back, Batch, CommitError, GroupCommit, Writer};
use super::TransactionalHandler;
use crate::event::Event;
use crate::handler::HandlerError;
use crate::idempotency::sql::sqlite::{interrupt, HandlerRunning, BUSY_TIMEOUT};
use crate::idempotency::sql::{db_err, watermark_of};
use crate::idempotency::{Claim, ClaimToken, SqliteStore, StoreError};
use crate::processor::sealed::Sealed;
use crate::processor::{
    fetch_within, handler_future, run_handler, store_call, DispatchSettings, Dispatched,
    Dispatcher, Inbox, OutcomeKind, TiePolicy,
};

/// The savepoint each inbox delivery runs in.
const SAVEPOINT: &str = "stripe_webhooks_delivery";

/// Inbox mode on SQLite, for [`Processor::with_inbox`](crate::Processor::with_inbox): it claims the event, runs a
/// [`TransactionalHandler`] and marks the event completed in one transaction. The
/// handler's writes and the "done" mark commit together or not at all, so a crash
/// between them can never run the handler's effects twice.
///
/// SQLite has one writer at a time, so deliveries queue for it in arrival order, on one
/// connection of their own. Deliveries that queue behind each other share a transaction
/// (group commit): each runs in its own savepoint (claim, handler), and the last one in
/// the queue commits for all of them (at most 32 deliveries, or 20 ms after the first).
/// Every delivery is answered only once its
/// transaction has committed; if the commit fails, every delivery in it is answered 503
/// and Stripe delivers them again. A handler that fails rolls back its own savepoint
/// (its writes and its claim), its failure is recorded in the batch (kept if the batch
/// commits; if it does not, the event was answered 500 and comes back anyway), and the
/// others are unaffected.
///
/// A handler whose write makes SQLite roll back the whole transaction by itself (a
/// column with `UNIQUE ON CONFLICT ROLLBACK`, a trigger with `RAISE(ROLLBACK)`,
/// `INSERT OR ROLLBACK`, a full disk, or a write interrupted because the handler ran
/// past its deadline: SQLite rolls back a transaction whose write it interrupts) takes
/// its batch down with it: that delivery is
/// answered 500 and recorded as failed (see
/// [`failed_events`](crate::StoreAdmin::failed_events)), and the others are answered 503
/// and, when Stripe delivers them again, each runs in a transaction of its own until it
/// commits, so the culprit cannot take them down twice. A deferred constraint refused
/// at COMMIT is isolated the same way.
///
/// The writer connection leaves WAL checkpoints to a connection of the store's pool, in
/// the background, every 256 deliveries, so that no delivery waits for one. It is opened
/// as the store's pool opens its own (its connect options and its `after_connect` hook:
/// what the hook sets up on a connection is there for the handlers, except SQLite's
/// progress, commit and rollback hooks, which the inbox sets for itself on each
/// connection it runs handlers on, replacing any set before), so it is only as
/// durable as they say: [`SqliteStore::connect`] uses `synchronous = NORMAL`, with
/// which a power cut or OS crash (not a process crash) can undo the last transactions
/// after Stripe was answered 200. If the handlers' effects must survive that, build the
/// pool from [`SqliteStore::connect_options`] with
/// `.synchronous(SqliteSynchronous::Full)` and pass it to [`SqliteStore::new`]: an fsync
/// per transaction, shared by every delivery in it. Inbox mode needs a database file:
/// an in-memory database would be shared-cache, and block the pool's readers.
///
/// Under sustained load the writer holds SQLite's write lock nearly all the time. Other
/// writers to the same file (another process, [`purge_expired`](crate::StoreAdmin::purge_expired),
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
/// use stripe_webhooks::{async_trait, Event, EventType, HandlerError, Processor, SqliteStore, TransactionalHandler, Verifier};
///
/// struct Access;
///
/// #[async_trait]
/// impl TransactionalHandler<Sqlite> for Access {
///     async fn handle(&self, event: &Event, conn: &mut SqliteConnection) -> Result<(), HandlerError> {
///         let Event::CheckoutSessionCompleted(session) = event else {
///             // Its object did not fit this release's struct (`Event::Unparsed`): fail.
///             return Err(HandlerError::new(format!("unreadable {}", event.event_type())));
///         };
///         stripe_webhooks::sqlx::query("INSERT INTO access (customer) VALUES (?1)")
///             .bind(session.id.as_str())
///             .execute(&mut *conn)
///             .await
///             .map_err(HandlerError::new)?;
///         Ok(())
///     }
///
///     fn handles(&self, t: &EventType) -> bool {
///         *t == EventType::CheckoutSessionCompleted
///     }
/// }
///
/// let store = SqliteStore::connect("stripe-webhooks.db").await?;
/// let processor = Processor::with_inbox(Verifier::from_secrets_list("whsec_…")?, store.inbox(Access));
/// # Ok(()) }
/// ```
pub struct SqliteInbox<H> {
    store: SqliteStore,
    handler: H,
    engine: GroupCommit,
    sql: InboxSql,
    ordering: Option<TiePolicy>,
}

/// The inbox's statements, built once from the store's: each delivery's claim in a
/// savepoint of its own (releasing the previous delivery's first, when one is open), and
/// the undo of a failed delivery.
struct InboxSql {
    claim_first: String,
    claim_next: String,
    undo: String,
    /// Undoes a delivery's savepoint (its claim) without recording anything.
    abandon: String,
    /// Frees an object's lease lock that ran out (its holder stalled past its lease), so
    /// that the holder's late completion is refused, as after any takeover.
    take_over: String,
}

impl InboxSql {
    fn new(store: &SqliteStore) -> Self {
        let sql = &store.core.sql;
        Self {
            claim_first: format!("SAVEPOINT {SAVEPOINT}; {}", sql.claim_completed),
            claim_next: format!(
                "RELEASE {SAVEPOINT}; SAVEPOINT {SAVEPOINT}; {}",
                sql.claim_completed
            ),
            undo: format!(
                "ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}; {}",
                sql.record_failure
            ),
            abandon: format!("ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}"),
            take_over: format!(
                "UPDATE {}_objects SET holder = NULL, lock_until = NULL WHERE object_id = ?1",
                store.core.table
            ),
        }
    }
}

impl<H> fmt::Debug for SqliteInbox<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteInbox")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<H> SqliteInbox<H> {
    pub(crate) fn new(store: SqliteStore, handler: H) -> Self {
        let engine = GroupCommit::new(store.pool().clone());
        let sql = InboxSql::new(&store);
        Self {
            store,
            handler,
            engine,
            sql,
            ordering: None,
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// Turns on the ordering guard (see [`Processor::ordered`](crate::Processor::ordered))
    /// inside the delivery's transaction: an event older than its object's watermark is
    /// completed without running the handler (`stale`; `handle_stale` belongs to
    /// `EventHandler`, so nothing runs for it), and the watermark moves in the
    /// transaction that commits the handler's writes. SQLite's one writer already runs
    /// the deliveries of a file one at a time, so the inbox takes no object lock of its
    /// own; but a guarded route outside the inbox on the same store
    /// ([`Processor::thin_ordered`](crate::Processor::thin_ordered)) locks objects by a
    /// lease while its handler runs, and a delivery that finds such a lock is undone and
    /// gets 409 until it is freed. Types the handler's
    /// [`is_ordered`](TransactionalHandler::is_ordered) keeps out (a payment to record)
    /// run unguarded, whatever their age.
    #[must_use]
    pub fn ordered(mut self, ties: TiePolicy) -> Self {
        self.ordering = Some(ties);
        self
    }
}

impl SqliteStore {
    /// Runs `handler` in inbox mode: see [`SqliteInbox`].
    pub fn inbox<H: TransactionalHandler<Sqlite>>(&self, handler: H) -> SqliteInbox<H> {
        SqliteInbox::new(self.clone(), handler)
    }
}

impl<H: TransactionalHandler<Sqlite>> Inbox for SqliteInbox<H> {}
impl<H: TransactionalHandler<Sqlite>> Sealed for SqliteInbox<H> {}

/// What one delivery did inside a batch, before the batch commits.
enum Step {
    /// Answer now, without waiting for the commit.
    Now(Dispatched),
    /// Answer this once the batch has committed; 503 if it does not.
    AfterCommit(Dispatched),
    /// SQLite rolled the whole transaction back by itself: during this delivery's
    /// handler (`culprit`: its attempt and error), or earlier, unnoticed.
    RolledBack {
        culprit: Option<(u32, HandlerError)>,
    },
}

fn rolled_back() -> StoreError {
    StoreError::unavailable("SQLite rolled the inbox transaction back")
}

#[async_trait]
impl<H: TransactionalHandler<Sqlite>> Dispatcher for SqliteInbox<H> {
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
        // Whether the handler takes it and the ordering guard applies, asked before the
        // writer is taken (a check that panics is recorded outside any batch).
        let store = Dispatcher::store(self);
        let guarded = self.ordering.is_some();
        let ordered = match super::screen(store, &self.handler, guarded, event, settings).await {
            Ok(ordered) => ordered,
            Err(answer) => return answer,
        };
        let t = settings
            .store_timeout
            .max(BUSY_TIMEOUT + Duration::from_secs(1));
        // Waiting for the writer is waiting for SQLite's write lock: past the busy
        // timeout, 503 and Stripe delivers again.
        let mut writer = match self.engine.lock().await {
            Ok(writer) => writer,
            Err(e) => return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e)),
        };

        // An event whose earlier transaction failed because of some delivery's writes
        // runs in one of its own: commit what is open first, and its own right after it.
        let alone = writer.suspects.contains(event.id());
        if alone {
            if let Some(open) = writer.batch.take() {
                let _ = self.engine.finish(&mut writer, open, t).await;
            }
        }
        // The batch is taken out while this delivery works on it: if the delivery is
        // dropped half-way, so is the batch, which rolls back.
        let mut batch = match writer.batch.take() {
            Some(batch) => batch,
            None => match self.engine.open_fresh(&mut writer, t).await {
                Ok(batch) => batch,
                Err(e) => return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e)),
            },
        };
        let step = match self.deliver(&mut batch, event, ordered, settings, t).await {
            Ok(Step::RolledBack { culprit }) => {
                // The transaction is gone, with every delivery in it: they are answered
                // 503 and run alone when Stripe delivers them again.
                let events = std::mem::take(&mut batch.events);
                drop(batch);
                writer.suspect(&events);
                writer.suspect(std::slice::from_ref(event.id()));
                writer.discard_connection();
                return match culprit {
                    Some((attempt, error)) => {
                        self.record_failure(&writer, event, attempt, error, t).await
                    }
                    None => Dispatched::unclaimed(OutcomeKind::StoreUnavailable(rolled_back())),
                };
            }
            Ok(step) => step,
            // The transaction is in an unknown state: drop it (rolling back every
            // delivery in it; the others are answered 503), and its connection. Each of
            // them, and this one, runs alone when it comes back, so that whichever broke
            // the transaction cannot take the others down again.
            Err(e) => {
                let events = std::mem::take(&mut batch.events);
                drop(batch);
                writer.suspect(&events);
                writer.suspect(std::slice::from_ref(event.id()));
                writer.discard_connection();
                return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e));
            }
        };
        let mut committed = batch.committed.subscribe();
        let step = if alone || batch.is_full() || !self.engine.others_waiting() {
            let members = batch.events.len();
            let result = self.engine.finish(&mut writer, batch, t).await;
            match (result, step) {
                (Err(e), Step::AfterCommit(d)) => {
                    return match e {
                        // Alone in its transaction, and its handler ran: its own writes
                        // broke it. That is the handler's failure, recorded like one. (A
                        // duplicate or stale delivery ran no handler: not its failure.)
                        CommitError::Writes(e)
                            if members == 1 && matches!(d.kind, OutcomeKind::Processed) =>
                        {
                            let error = HandlerError::new(format!(
                                "the handler's writes could not be committed: {e}"
                            ));
                            let attempt = d.attempt.unwrap_or(1);
                            self.record_failure(&writer, event, attempt, error, t).await
                        }
                        e => not_committed(d, e.into_store_error()),
                    };
                }
                (_, step) => step,
            }
        } else {
            self.engine.leave_open(&mut writer, batch);
            step
        };
        drop(writer);
        // A batch left open commits after the next delivery's handler, which may run up
        // to its deadline, and its store calls (claim, watermark, a tie's fetch, an undo,
        // the commit: five store timeouts at most): wait that long before saying the
        // work was not committed (it would be a 503 for work that commits just after).
        let wait = settings
            .deadline
            .unwrap_or(Duration::from_secs(60))
            .saturating_add(t.saturating_mul(5));
        match step {
            Step::AfterCommit(d) => {
                let ok = tokio::time::timeout(wait, committed.wait_for(Option::is_some))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .is_some_and(|v| *v == Some(true));
                if ok {
                    d
                } else {
                    not_committed(
                        d,
                        StoreError::unavailable("the inbox transaction did not commit"),
                    )
                }
            }
            Step::Now(d) => d,
            Step::RolledBack { .. } => {
                Dispatched::unclaimed(OutcomeKind::StoreUnavailable(rolled_back()))
            }
        }
    }
}

/// Nothing of this delivery committed: 503, and Stripe delivers it again; a handler that
/// had failed is still its own failure (500, with its error), no longer recorded.
fn not_committed(d: Dispatched, e: StoreError) -> Dispatched {
    let kind = match d.kind {
        failed @ OutcomeKind::HandlerFailed(_) => failed,
        _ => OutcomeKind::StoreUnavailable(e),
    };
    Dispatched {
        kind,
        attempt: d.attempt,
        failure_recorded: false,
    }
}

impl<H: TransactionalHandler<Sqlite>> SqliteInbox<H> {
    /// Records, outside any transaction, a delivery whose writes could not be committed,
    /// and answers it as a failed handler (500: Stripe delivers it again). The record is
    /// what [`failed_events`](crate::StoreAdmin::failed_events) lists.
    async fn record_failure(
        &self,
        writer: &Writer,
        event: &Event,
        attempt: u32,
        error: HandlerError,
        t: Duration,
    ) -> Dispatched {
        let pool = writer.pool().unwrap_or(self.store.pool());
        let core = &self.store.core;
        let reason = crate::error::error_text(&error);
        let recorded = store_call(t, async {
            core.record_failure_on(
                pool,
                &core.sql.record_failure,
                event.id(),
                event.event_type(),
                attempt,
                &reason,
            )
            .await
            .map_err(db_err)
        })
        .await;
        Dispatched::failed(error, attempt, matches!(recorded, Ok(true)))
    }

    /// Undoes a failed delivery's savepoint (its claim and its writes) and records the
    /// failure in the batch, so Stripe's retry runs it again.
    async fn undo(
        &self,
        batch: &mut Batch,
        event: &Event,
        attempt: u32,
        e: HandlerError,
        t: Duration,
    ) -> Result<Step, StoreError> {
        let core = &self.store.core;
        let id = event.id();
        let reason = crate::error::error_text(&e);
        let undone = store_call(t, async {
            let recorded = core
                .record_failure_on(
                    &mut *batch.tx,
                    &self.sql.undo,
                    id,
                    event.event_type(),
                    attempt,
                    &reason,
                )
                .await;
            match recorded {
                Ok(_) => Ok(true),
                // The handler's own write made SQLite roll the whole transaction
                // back: there is no savepoint left to undo.
                Err(e) if is_rolled_back(&e) => Ok(false),
                Err(e) => Err(db_err(e)),
            }
        })
        .await?;
        if !undone {
            return Ok(Step::RolledBack {
                culprit: Some((attempt, e)),
            });
        }
        batch.savepoint_open = false;
        // The failure's record commits with the batch: answered once it has (a 503 if it
        // does not), so that the answer can say the store keeps it.
        Ok(Step::AfterCommit(Dispatched::failed(e, attempt, true)))
    }

    /// One delivery in the batch: claim (marked completed at once: nobody sees it before
    /// the commit, and a rollback removes it) and handler, in a savepoint of its own;
    /// through the ordering guard when `ordered`.
    async fn deliver(
        &self,
        batch: &mut Batch,
        event: &Event,
        ordered: bool,
        settings: &DispatchSettings,
        t: Duration,
    ) -> Result<Step, StoreError> {
        let core = &self.store.core;
        let id = event.id();
        let fence = ClaimToken::new(id.clone(), 0).fence_hex();
        // Down, should a delivery cut before it lowered it have left it up: it would stop
        // this delivery's statements.
        batch
            .interrupt
            .store(false, std::sync::atomic::Ordering::SeqCst);
        // The previous delivery's savepoint is released by this one's first statement.
        let claim = if batch.savepoint_open {
            &self.sql.claim_next
        } else {
            &self.sql.claim_first
        };
        let claimed = store_call(t, async {
            match core
                .claim_on(&mut *batch.tx, claim, id, event.event_type(), &fence, None)
                .await
            {
                Ok(claimed) => Ok(Some(claimed)),
                // An earlier delivery's write made SQLite roll everything back.
                Err(e) if is_rolled_back(&e) => Ok(None),
                Err(e) => Err(busy_or_down(e)),
            }
        })
        .await?;
        let Some(claimed) = claimed else {
            return Ok(Step::RolledBack { culprit: None });
        };
        batch.savepoint_open = true;
        batch.events.push(id.clone());
        let Some(attempt) = claimed else {
            let state = store_call(t, async { core.state_on(&mut *batch.tx, id).await }).await?;
            return Ok(match state {
                // Completed, perhaps earlier in this same batch: say so only once that
                // is committed.
                Some(Claim::Completed) => {
                    Step::AfterCommit(Dispatched::unclaimed(OutcomeKind::Duplicate))
                }
                Some(Claim::InProgress { retry_after }) => {
                    Step::Now(Dispatched::unclaimed(OutcomeKind::InProgress {
                        retry_after,
                    }))
                }
                // Cannot happen while this transaction holds the write lock (the claim
                // refused a row that is neither failed nor expired); answer "in
                // progress" rather than guess.
                Some(Claim::Acquired(_)) | None => {
                    Step::Now(Dispatched::unclaimed(OutcomeKind::InProgress {
                        retry_after: Duration::from_secs(1),
                    }))
                }
            });
        };

        // The ordering guard, in the batch's transaction (which sees the watermarks
        // this batch moved already).
        let object_id = ordered.then(|| event.ordering_key()).flatten();
        let mut watermark = None;
        if let Some(object_id) = &object_id {
            let row = store_call(t, async {
                sqlx::query(&core.sql.lock_row)
                    .bind(object_id.as_str())
                    .fetch_optional(&mut *batch.tx)
                    .await
                    .map_err(busy_or_down)
            })
            .await?;
            if let Some(row) = row {
                // A lease lock on the object: a guarded route outside the inbox
                // (`Processor::thin_ordered` on this store) is running its handler. This
                // delivery waits for it (its claim is undone), as for a busy object.
                let held: Option<i64> = row.try_get(2).map_err(db_err)?;
                if let Some(ms) = held.filter(|ms| *ms > 0) {
                    store_call(t, async {
                        sqlx::query(&self.sql.abandon)
                            .execute(&mut *batch.tx)
                            .await
                            .map_err(busy_or_down)
                    })
                    .await?;
                    batch.savepoint_open = false;
                    // Nothing of it is in the batch any more.
                    batch.events.pop();
                    return Ok(Step::Now(Dispatched::unclaimed(OutcomeKind::InProgress {
                        retry_after: Duration::from_millis(u64::try_from(ms).unwrap_or(1)),
                    })));
                }
                if held.is_some() {
                    // Run out: taken over (in this delivery's savepoint), so that its
                    // holder, which may apply an older event late, cannot complete.
                    store_call(t, async {
                        sqlx::query(&self.sql.take_over)
                            .bind(object_id.as_str())
                            .execute(&mut *batch.tx)
                            .await
                            .map_err(busy_or_down)
                    })
                    .await?;
                }
                watermark = watermark_of::<Sqlite>(&row)?;
            }
        }
        let tie = watermark
            .as_ref()
            .is_some_and(|w| w.ties(event.created(), id));
        let ties_stale = matches!(self.ordering, Some(TiePolicy::Stale));
        let stale = watermark
            .as_ref()
            .is_some_and(|w| w.outdates(event.created(), id, ties_stale));
        if let (true, Some(watermark)) = (stale, watermark.clone()) {
            // Claimed as completed already: the commit settles it, without the handler.
            return Ok(Step::AfterCommit(Dispatched::attempt(
                OutcomeKind::Stale { watermark },
                attempt,
            )));
        }
        let fresh;
        let event = match &self.ordering {
            // The batch holds SQLite's write lock meanwhile, and the deliveries queued
            // for it wait `BUSY_TIMEOUT` before they are answered 503: the fetch is
            // bounded by the store timeout and the handler deadline, and by half that
            // wait.
            Some(TiePolicy::Fetch(client)) if tie => {
                let limit = settings
                    .deadline
                    .map_or(settings.store_timeout, |d| d.min(settings.store_timeout))
                    .min(BUSY_TIMEOUT / 2);
                match fetch_within(event, &**client, Some(limit)).await {
                    Ok(Some(e)) => {
                        fresh = e;
                        &fresh
                    }
                    Ok(None) => event,
                    Err(e) => return self.undo(batch, event, attempt, e, t).await,
                }
            }
            _ => event,
        };
        // The watermark moves before the handler runs, in the delivery's savepoint: a
        // failed handler's undo takes it back, and a handler whose write made SQLite roll
        // the whole transaction back (`OR ROLLBACK`, a full disk) takes it along even if
        // the handler hides the error. Run after such a handler, it would commit on its
        // own, outside any transaction, and later events older than this one (never
        // applied) would be answered stale.
        if let Some(object_id) = &object_id {
            let advanced = store_call(t, async {
                sqlx::query(&core.sql.advance)
                    .bind(object_id.as_str())
                    .bind(event.created())
                    .bind(id.as_str())
                    .execute(&mut *batch.tx)
                    .await
                    .map_err(busy_or_down)
            })
            .await;
            if let Err(e) = advanced {
                return self
                    .undo(batch, event, attempt, HandlerError::new(e), t)
                    .await;
            }
        }

        let running = HandlerRunning::new(&batch.handler_running);
        let handled = run_handler(
            handler_future(|| self.handler.handle(event, &mut *batch.tx)),
            settings.deadline,
        )
        .await;
        // Dropped, maybe in the middle of a statement that would run on (see
        // `Batch::interrupt`): stop it, so the undo does not wait behind it. Once the
        // connection's worker has ended any statement left running (stopped by the
        // flag, or done), the flag comes down (see `sqlite::interrupt`). The commit gate
        // stays closed until then: a cut write must not commit. (So it does if this
        // delivery is cancelled meanwhile: `running` dropped without `done`, and the
        // batch, dropped with it, rolls back.)
        let cut = matches!(
            handled,
            Err(HandlerError::DeadlineExceeded(_) | HandlerError::Panicked(_))
        );
        if cut && !interrupt(&mut batch.tx, &batch.interrupt, t).await {
            // Left running: the gate stays closed on this connection, which is closed.
            return Err(StoreError::Timeout(t));
        }
        running.done();
        // The transaction lost while the handler ran (see `Batch::vetoed`): its failure,
        // known now rather than when the batch fails.
        if batch.vetoed.load(std::sync::atomic::Ordering::SeqCst) {
            let error = match handled {
                Ok(()) => HandlerError::new(super::group_commit::VETOED),
                Err(e) => e,
            };
            return Ok(Step::RolledBack {
                culprit: Some((attempt, error)),
            });
        }
        match handled {
            Ok(()) => Ok(Step::AfterCommit(Dispatched::attempt(
                OutcomeKind::Processed,
                attempt,
            ))),
            Err(e) => self.undo(batch, event, attempt, e, t).await,
        }
    }
}
