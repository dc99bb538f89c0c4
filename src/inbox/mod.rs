//! Inbox mode for the SQL stores: the handler runs inside the transaction that claims
//! the event, and the completion mark commits with its writes.
//!
//! - [`TransactionalHandler`]: the application's side;
//! - `sqlite`: [`SqliteInbox`], one writer connection with group commit (`group_commit`);
//! - `postgres`: [`PostgresInbox`], one transaction per delivery.

#[cfg(feature = "sqlite")]
mod group_commit;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use async_trait::async_trait;

#[cfg(feature = "postgres")]
pub use postgres::PostgresInbox;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteInbox;

/// A handler for a SQL store's inbox mode: it receives the open transaction in which the
/// event was claimed, and the completion mark is written in that same transaction, so the
/// handler's writes and the "done" mark commit together or not at all.
///
/// Write the handler's effects through `conn` only; anything it does elsewhere (an HTTP
/// call, another database) is not covered by the transaction.
///
/// Never end the transaction yourself (`COMMIT`, `ROLLBACK` or `END`): the claim and the
/// completion are written in it, around the handler. And return a failed statement's
/// error rather than catching it: on PostgreSQL a failed statement aborts the
/// transaction, and a handler that then begins a transaction of its own through `conn`
/// has the whole inbox transaction rolled back by sqlx (the `SAVEPOINT` fails, and sqlx
/// undoes a failed begin at depth one with `ROLLBACK`).
///
/// On PostgreSQL, a delivery whose transaction was rolled back under its handler
/// completes nothing: it is the handler's failure (500, recorded with why; the queue's
/// inbox worker retries the job), and what the handler wrote in the transaction is gone.
/// What it wrote after the rollback ran on its own, outside any transaction, and is kept
/// (it runs again with the retry). A handler that commits makes its effects durable
/// before the event is marked done, and its claim with them (as `processing`), and
/// frees the object's row lock the ordering guard holds: the delivery fails (500) but
/// no failure is recorded, Stripe's retries get 409 until the claim's lease ends, and
/// then the handler runs again over its own writes.
/// Set session settings with `SET LOCAL` only: a plain `SET` (`search_path`, say) stays
/// on the pooled connection after the transaction, under every later delivery and the
/// store's own statements. On SQLite no write
/// commits while a handler runs (a commit hook refuses it), and a rollback of the whole
/// transaction while it runs is seen at once (a rollback hook): the delivery fails with
/// nothing it wrote kept and its failure recorded, the other deliveries of its batch
/// are answered 503 and come back, and the connection is replaced. That covers a handler
/// that ends the transaction itself, and one that hides an error after which SQLite can
/// roll the transaction back by itself (`SQLITE_FULL`, an `OR ROLLBACK` conflict) and
/// writes on: those writes would otherwise commit one by one, outside the transaction,
/// at every redelivery. (A transaction the handler begins through `conn` is a savepoint
/// inside the inbox's, and commits with it.) Use a savepoint (`SAVEPOINT`, `ROLLBACK
/// TO`) to undo part of the handler's own work.
///
/// On SQLite, deliveries that queue for the one writer share a transaction (see
/// [`SqliteInbox`]): a handler may read what an earlier delivery of its batch wrote
/// before that is committed, and would be undone with it if the batch rolls back. Do
/// not act outside the database on what another event wrote in the same moment.
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
#[async_trait]
pub trait TransactionalHandler<DB: sqlx::Database>: Send + Sync + 'static {
    /// Processes one event inside the claim's transaction.
    ///
    /// # Errors
    ///
    /// A [`HandlerError`](crate::HandlerError) rolls the transaction back (the
    /// handler's writes included) and records the failure, so Stripe's retry runs it again.
    async fn handle(
        &self,
        event: &crate::Event,
        conn: &mut DB::Connection,
    ) -> Result<(), crate::HandlerError>;

    /// Whether this handler acts on events of this type; `false` answers 200 without a
    /// transaction. The default handles everything.
    fn handles(&self, event_type: &crate::EventType) -> bool {
        let _ = event_type;
        true
    }

    /// The wire names of the types it takes that this release does not know (types Stripe
    /// added after it), or `["*"]` when it takes some it cannot name, as
    /// [`EventHandler::unknown_types`](crate::EventHandler::unknown_types): the processor
    /// adds them to its [`enabled_events`](crate::Processor::enabled_events), so that a
    /// [`Reconciler`](crate::reconcile::Reconciler) lists them too. The default: none.
    fn unknown_types(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the inbox's ordering guard ([`SqliteInbox::ordered`],
    /// [`PostgresInbox::ordered`]) applies to events of this type, as
    /// [`EventHandler::is_ordered`](crate::EventHandler::is_ordered): return `false` for
    /// the types whose every event must run whatever its age (a payment to record). The
    /// default: every type.
    fn is_ordered(&self, event_type: &crate::EventType) -> bool {
        let _ = event_type;
        true
    }
}

/// An inbox delivery's first step, before anything is claimed: whether `handler` takes
/// `event`, then, when the inbox has an ordering guard (`guarded`), whether it applies,
/// each by the handler's own check. `Ok`: whether the event is ordered; `Err`: the answer
/// (ignored, or a check that panicked, recorded as failed through `store`, outside any
/// transaction: [`check_panicked`](crate::processor::check_panicked)).
pub(crate) async fn screen<DB: sqlx::Database, H: TransactionalHandler<DB>>(
    store: std::sync::Arc<dyn crate::IdempotencyStore>,
    handler: &H,
    guarded: bool,
    event: &crate::Event,
    settings: &crate::processor::DispatchSettings,
) -> Result<bool, crate::processor::Dispatched> {
    use crate::processor::Dispatched;
    let ty = event.event_type();
    let checked = match Dispatched::screen("handles", || handler.handles(ty)) {
        Ok(Some(ignored)) => return Err(ignored),
        Ok(None) if !guarded => Ok(false),
        Ok(None) => Dispatched::ask("is_ordered", || handler.is_ordered(ty)),
        Err(panicked) => Err(panicked),
    };
    match checked {
        Ok(ordered) => Ok(ordered),
        Err(p) => Err(crate::processor::check_panicked(&store, event.id(), ty, settings, p).await),
    }
}
