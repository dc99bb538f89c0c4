//! The step after verify and parse: claim the event, run the handler, record the result.
//! Crate-internal: the standard dispatcher here, and the SQL inbox dispatchers in
//! `crate::inbox`, are the only implementations.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::lease::{renewing_lease, ClaimGuard, Handled, LockAttempt};
use super::outcome::OutcomeKind;
use super::TiePolicy;
use super::{DEFAULT_HANDLER_DEADLINE, DEFAULT_LEASE, DEFAULT_STORE_TIMEOUT};
use crate::event::{Event, EventId, EventType};
use crate::handler::{EventHandler, HandlerError};
use crate::idempotency::{
    Claim, ClaimToken, IdempotencyStore, LockedClaim, ObjectLock, OrderingStore, StoreError,
    Watermark,
};

/// The settings an event is dispatched under.
#[derive(Clone)]
pub(crate) struct DispatchSettings {
    /// How long a claim is leased.
    pub(crate) lease: Duration,
    /// How long the handler may run (`None`: no limit).
    pub(crate) deadline: Option<Duration>,
    /// How long one store call may take before the delivery is answered 503.
    pub(crate) store_timeout: Duration,
    /// The processor's count of detached work: the deliveries its framework routes run
    /// on tasks of their own, and a dropped delivery's settling task, which
    /// [`Processor::drain`](super::Processor::drain) waits for.
    #[cfg(feature = "tokio")]
    pub(crate) in_flight: std::sync::Arc<super::drain::InFlight>,
    /// Whether the work run under a claim is a handler's, counted in the handler-run
    /// metrics; `false` for work that stands in for one (a stale thin event completed
    /// without a handler, an unreadable listed event recorded as failed).
    pub(crate) handler_work: bool,
}

impl std::fmt::Debug for DispatchSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the count of running work: the processor's own `Debug` is about settings.
        f.debug_struct("DispatchSettings")
            .field("lease", &self.lease)
            .field("deadline", &self.deadline)
            .field("store_timeout", &self.store_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            lease: DEFAULT_LEASE,
            deadline: Some(DEFAULT_HANDLER_DEADLINE),
            store_timeout: DEFAULT_STORE_TIMEOUT,
            #[cfg(feature = "tokio")]
            in_flight: std::sync::Arc::default(),
            handler_work: true,
        }
    }
}

impl DispatchSettings {
    /// These settings for work that is not a handler's (not counted as a handler run).
    pub(crate) fn standing_in(&self) -> Self {
        Self {
            handler_work: false,
            ..self.clone()
        }
    }
}

/// What a dispatcher did with one event.
#[derive(Debug)]
pub(crate) struct Dispatched {
    pub(crate) kind: OutcomeKind,
    /// Which attempt it was, when the event was claimed.
    pub(crate) attempt: Option<u32>,
    /// A failed handler's failure is in the store (its claim released as failed, or the
    /// failure recorded after its transaction rolled back): the store keeps the event
    /// whatever comes next. `false` when the store did not confirm it.
    pub(crate) failure_recorded: bool,
}

impl Dispatched {
    /// A result with no claim attempt (duplicate, in progress, ignored, store down).
    pub(crate) fn unclaimed(kind: OutcomeKind) -> Self {
        Self {
            kind,
            attempt: None,
            failure_recorded: false,
        }
    }

    /// A dispatcher's first step: whether the handler takes the event, by its own check
    /// (`name` in the error), its panic caught. `Ok(None)`: go on and claim it;
    /// `Ok(Some(_))`: ignored; `Err(_)`: the check panicked ([`check_panicked`]).
    pub(crate) fn screen(name: &str, takes: impl FnOnce() -> bool) -> Result<Option<Self>, Self> {
        match Self::ask(name, takes) {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(Self::unclaimed(OutcomeKind::Ignored))),
            Err(panicked) => Err(panicked),
        }
    }

    /// Asks a handler's check (`handles`, `is_ordered`) before anything is claimed: its
    /// answer, or, when it panics, a handler failure with nothing claimed yet, which
    /// [`check_panicked`] records.
    pub(crate) fn ask(name: &str, check: impl FnOnce() -> bool) -> Result<bool, Self> {
        check_caught(check).map_err(|panic| {
            Self::unclaimed(OutcomeKind::HandlerFailed(HandlerError::Panicked(format!(
                "in {name}: {panic}"
            ))))
        })
    }

    /// A result of attempt number `attempt`.
    pub(crate) fn attempt(kind: OutcomeKind, attempt: u32) -> Self {
        Self {
            kind,
            attempt: Some(attempt),
            failure_recorded: false,
        }
    }

    /// Attempt number `attempt` failed with `e`; `recorded` when the store confirmed
    /// that it keeps the failure.
    pub(crate) fn failed(e: HandlerError, attempt: u32, recorded: bool) -> Self {
        Self {
            failure_recorded: recorded,
            ..Self::attempt(OutcomeKind::HandlerFailed(e), attempt)
        }
    }
}

/// Claims, handles and records one verified, parsed event.
#[async_trait::async_trait]
pub(crate) trait Dispatcher: Send + Sync + 'static {
    async fn dispatch(&self, event: &Event, settings: &DispatchSettings) -> Dispatched;

    /// Whether its handler acts on events of this type (for the manifest).
    fn handles(&self, event_type: &crate::event::EventType) -> bool;

    /// Its handler's [`EventHandler::unknown_types`] (for the manifest).
    fn unknown_types(&self) -> Vec<String> {
        Vec::new()
    }

    /// Its handler's `is_ordered`: a thin event claimed under its snapshot twin on the
    /// same processor stays outside the guard when this handler keeps its twin's type
    /// out, as the twin would.
    fn is_ordered(&self, event_type: &crate::event::EventType) -> bool {
        let _ = event_type;
        true
    }

    /// The store it claims in, which thin events (always dispatched the standard way)
    /// share, so that both families deduplicate against one another.
    fn store(&self) -> Arc<dyn IdempotencyStore>;

    /// For a dispatcher that orders its events itself (an ordered inbox): the guard a
    /// thin event claimed under its snapshot twin joins, over the same store and tie
    /// policy, so that it moves the object's watermark as its twin would.
    fn thin_guard(&self) -> Option<Arc<OrderingGuard>> {
        None
    }
}

/// The standard dispatcher: claim in the store, run the handler outside any
/// transaction, then complete (retried briefly) or release.
pub(crate) struct StoreDispatcher {
    store: Arc<dyn IdempotencyStore>,
    handler: Arc<dyn EventHandler>,
    ordering: Option<Arc<OrderingGuard>>,
}

impl StoreDispatcher {
    pub(crate) fn new(
        store: Arc<dyn IdempotencyStore>,
        handler: impl EventHandler,
        ordering: Option<Arc<OrderingGuard>>,
    ) -> Self {
        Self {
            store,
            handler: Arc::new(handler),
            ordering,
        }
    }
}

/// How many times a completion is retried after the first try.
const COMPLETION_RETRIES: u32 = 3;

#[async_trait::async_trait]
impl Dispatcher for StoreDispatcher {
    async fn dispatch(&self, event: &Event, settings: &DispatchSettings) -> Dispatched {
        let panicked = |p| check_panicked(&self.store, event.id(), event.event_type(), settings, p);
        match Dispatched::screen("handles_event", || self.handler.handles_event(event)) {
            Ok(None) => {}
            Ok(Some(ignored)) => return ignored,
            Err(p) => return panicked(p).await,
        }
        let handler = &*self.handler;
        if let Some(ordering) = &self.ordering {
            // A type the handler keeps outside the guard runs as an unguarded
            // processor's would (`EventHandler::is_ordered`).
            let key = match Dispatched::ask("is_ordered", || handler.is_ordered(event.event_type()))
            {
                Ok(true) => event.ordering_key(),
                Ok(false) => None,
                Err(p) => return panicked(p).await,
            };
            if let Some(object_id) = key {
                return ordering
                    .dispatch(event, &object_id, handler, settings)
                    .await;
            }
        }
        claim_and_run(
            &self.store,
            event.id(),
            event.event_type(),
            settings,
            || handler.handle(event),
        )
        .await
    }

    fn handles(&self, event_type: &EventType) -> bool {
        self.handler.handles(event_type)
    }

    fn unknown_types(&self) -> Vec<String> {
        self.handler.unknown_types()
    }

    fn is_ordered(&self, event_type: &EventType) -> bool {
        self.handler.is_ordered(event_type)
    }

    fn store(&self) -> Arc<dyn IdempotencyStore> {
        Arc::clone(&self.store)
    }
}

/// A handler's check (`handles`, `is_ordered`, `handles_notification`) panicked
/// (`panicked`, [`Dispatched::ask`]'s answer): the event is claimed under `key` and the
/// claim released as failed with the panic's message, as a panicking handler's is, so
/// that the store lists it ([`failed_events`](crate::StoreAdmin::failed_events)) and
/// counts its attempts, and it is answered 500: Stripe, or a reconciler's next pass,
/// delivers it again. Nothing runs. One completed already is a duplicate; one held
/// elsewhere, in progress. (Without this, an event whose check always panicked left no
/// trace once Stripe stopped retrying, and held a reconciler's cursor for 30 days.)
pub(crate) async fn check_panicked(
    store: &Arc<dyn IdempotencyStore>,
    key: &EventId,
    event_type: &EventType,
    settings: &DispatchSettings,
    panicked: Dispatched,
) -> Dispatched {
    let OutcomeKind::HandlerFailed(error) = panicked.kind else {
        return panicked;
    };
    // Logged here too: an event completed already (a duplicate) or a store that is down
    // answers without it.
    #[cfg(feature = "tracing")]
    tracing::warn!(
        event_id = %key,
        error = %crate::error::error_text(&error),
        "a handler's check panicked; the event is recorded as failed"
    );
    let failed = move || -> HandlerFuture<'static> { Box::pin(std::future::ready(Err(error))) };
    claim_and_run(store, key, event_type, &settings.standing_in(), failed).await
}

/// Claims `key`, then calls the handler (`handler`, as `|| h.handle(event)`), runs its
/// future and settles the claim: the one claim-handle-complete path of snapshot and thin
/// events alike. The handler is called only once the claim is held: a handler written
/// without `async-trait` may do work in the call itself, before its future.
pub(crate) async fn claim_and_run<'a>(
    store: &Arc<dyn IdempotencyStore>,
    key: &EventId,
    event_type: &EventType,
    settings: &DispatchSettings,
    handler: impl FnOnce() -> HandlerFuture<'a> + Send,
) -> Dispatched {
    let claimed_at = std::time::Instant::now();
    match claim(&**store, key, event_type, settings).await {
        Ok(token) if claim_outlived(settings, claimed_at) => {
            let t = settings.store_timeout;
            let _ = store_call(t, store.release(&token, OUTLIVED)).await;
            outlived(&token)
        }
        Ok(token) => {
            let fut = handler_future(handler);
            run_claimed(store, &token, settings, claimed_at, fut).await
        }
        Err(refused) => refused,
    }
}

/// Whether a claim's own call took so much of its lease (nine tenths, where the renewal
/// stops a handler) that the handler must not be called: another delivery may claim the
/// event any moment.
fn claim_outlived(settings: &DispatchSettings, claimed_at: std::time::Instant) -> bool {
    claimed_at.elapsed() >= settings.lease - settings.lease / 10
}

/// Why a claim that outlived most of its lease was given back.
const OUTLIVED: &str = "the claim's call took most of its lease: the handler was not called";

/// The answer for a claim that outlived most of its lease: a failure Stripe retries. The
/// caller gives the claim (and an object's lock) back first, fenced: the store may have
/// started its lease late (a statement that waited on a lock), and a claim left to it
/// would answer Stripe's retries 409 until it ran out.
fn outlived(token: &ClaimToken) -> Dispatched {
    Dispatched::attempt(
        OutcomeKind::HandlerFailed(HandlerError::LeaseLost),
        token.attempt(),
    )
}

/// Claims `key`; `Err` is the answer when the claim was refused.
async fn claim(
    store: &dyn IdempotencyStore,
    key: &EventId,
    event_type: &EventType,
    settings: &DispatchSettings,
) -> Result<ClaimToken, Dispatched> {
    let claim = store_call(
        settings.store_timeout,
        store.claim(key, event_type, settings.lease),
    )
    .await;
    match claim {
        Ok(Claim::Acquired(token)) => Ok(token),
        Ok(Claim::Completed) => Err(Dispatched::unclaimed(OutcomeKind::Duplicate)),
        Ok(Claim::InProgress { retry_after }) => {
            Err(Dispatched::unclaimed(OutcomeKind::InProgress {
                retry_after,
            }))
        }
        Err(e) => Err(Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e))),
    }
}

/// Runs the handler of a held claim under a renewed lease, then completes the claim (the
/// handler succeeded) or releases it (it failed).
async fn run_claimed(
    store: &Arc<dyn IdempotencyStore>,
    token: &ClaimToken,
    settings: &DispatchSettings,
    claimed_at: std::time::Instant,
    handler: HandlerFuture<'_>,
) -> Dispatched {
    let t = settings.store_timeout;
    // Until the claim is settled, dropping this future (a client that went away, a
    // server that cancels requests) settles it from a task of its own: released while
    // the handler runs, completed once it has succeeded.
    let mut guard = ClaimGuard::new(store, token.clone(), settings);
    let handled = renewing_lease(
        &**store,
        token,
        settings,
        claimed_at,
        run_handler_counted(handler, settings.deadline, settings.handler_work),
        |result| {
            if result.is_ok() {
                guard.handler_succeeded();
            }
        },
    )
    .await;
    let dispatched = match handled {
        Handled::Finished(Ok(())) => {
            guard.handler_succeeded();
            let kind = complete(t, || store.complete(token)).await;
            Dispatched::attempt(kind, token.attempt())
        }
        // The lease may be gone: another delivery may hold the event now. The release is
        // fenced, so it frees the claim only if it is still this one's (the lease ran
        // out with no one taking it over, or a renewal still on its way when the handler
        // was stopped lands later and would hold it for a whole lease): Stripe's retry
        // then runs at once rather than answered 409 meanwhile.
        Handled::LeaseLost => {
            let reason = "the handler was stopped: its claim's lease was lost";
            let _ = store_call(t, store.release(token, reason)).await;
            Dispatched::attempt(
                OutcomeKind::HandlerFailed(HandlerError::LeaseLost),
                token.attempt(),
            )
        }
        Handled::Finished(Err(e)) => {
            // If the release fails too, the lease expiring frees the event instead.
            let released = store_call(t, store.release(token, &crate::error::error_text(&e))).await;
            Dispatched::failed(e, token.attempt(), released.is_ok())
        }
    };
    guard.settled();
    dispatched
}

/// The ordering guard of a processor built with [`Processor::ordered`](super::Processor::ordered).
pub(crate) struct OrderingGuard {
    pub(crate) store: Arc<dyn OrderingStore>,
    pub(crate) ties: TiePolicy,
}

impl OrderingGuard {
    /// [`outlived`], the claim released and the object unlocked first (each fenced).
    async fn outlived(
        &self,
        token: &ClaimToken,
        object_id: &str,
        holder: &str,
        settings: &DispatchSettings,
    ) -> Dispatched {
        let t = settings.store_timeout;
        let _ = store_call(t, self.store.release(token, OUTLIVED)).await;
        let _ = store_call(t, self.store.unlock_object(object_id, holder)).await;
        outlived(token)
    }

    /// Locks the object and claims `key`; `Err` is the answer when either is refused.
    async fn lock_and_claim(
        &self,
        key: &EventId,
        event_type: &EventType,
        object_id: &str,
        settings: &DispatchSettings,
    ) -> Result<(Option<Watermark>, ClaimToken, String), Dispatched> {
        let t = settings.store_timeout;
        // The lock first: an event that has to wait leaves no trace in the store.
        let holder = ClaimToken::new(key.clone(), 0).fence_hex();
        // Cut before its answer (a timeout, a drop), the lock may still land: let it go.
        let mut attempt = LockAttempt::new(&self.store, object_id, &holder, settings);
        let locked = self
            .store
            .lock_and_claim(object_id, &holder, settings.lease, key, event_type);
        let locked = store_call(t, locked).await;
        // An error may leave the lock taken too (a refused claim's lock given back by a
        // second call that failed, a connection lost after the statement went out).
        if locked.is_ok() {
            attempt.answered();
        }
        // Unanswered, it spawns its task now.
        drop(attempt);
        match locked {
            Ok(LockedClaim::Acquired { watermark, token }) => Ok((watermark, token, holder)),
            Ok(LockedClaim::Busy { retry_after })
            | Ok(LockedClaim::Refused(Claim::InProgress { retry_after })) => {
                Err(Dispatched::unclaimed(OutcomeKind::InProgress {
                    retry_after,
                }))
            }
            Ok(LockedClaim::Refused(Claim::Completed)) => {
                Err(Dispatched::unclaimed(OutcomeKind::Duplicate))
            }
            Ok(LockedClaim::Refused(Claim::Acquired(token))) => {
                // Not a refusal after all (a store's own lock_and_claim): settle it.
                let reason = "claimed without the object lock";
                let _ = store_call(t, self.store.release(&token, reason)).await;
                let _ = store_call(t, self.store.unlock_object(object_id, &holder)).await;
                Err(Dispatched::unclaimed(OutcomeKind::InProgress {
                    retry_after: Duration::from_millis(100),
                }))
            }
            Err(e) => Err(Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e))),
        }
    }

    /// The object lease every settlement of a guarded claim goes through: a completion
    /// moves the watermark to `applied` (none: stale, it stays) and frees the object, a
    /// release frees it too; the drop guard uses it as well.
    fn lease(
        &self,
        object_id: &str,
        holder: &str,
        seen: Option<Watermark>,
        applied: Option<Watermark>,
        settings: &DispatchSettings,
    ) -> Arc<ObjectLease> {
        Arc::new(ObjectLease {
            store: Arc::clone(&self.store),
            object_id: object_id.to_owned(),
            holder: holder.to_owned(),
            seen,
            applied,
            lease: settings.lease,
            store_timeout: settings.store_timeout,
            lock_lost: AtomicBool::new(false),
            renewal_unsettled: AtomicBool::new(false),
            relocks_unanswered: AtomicUsize::new(0),
            completions_unanswered: AtomicUsize::new(0),
            let_go_after_run: AtomicBool::new(false),
        })
    }

    /// A thin event claimed under its snapshot twin's id, guarded like the twin: keyed on
    /// the related object, its `created` second against the watermark. A stale one is
    /// completed without the handler (thin handlers have no `handle_stale`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dispatch_thin<'a>(
        &self,
        key: &EventId,
        record_type: &EventType,
        object_id: &str,
        created: i64,
        handler: impl FnOnce() -> HandlerFuture<'a> + Send,
        settings: &DispatchSettings,
    ) -> Dispatched {
        let claimed_at = std::time::Instant::now();
        let (watermark, token, holder) = match self
            .lock_and_claim(key, record_type, object_id, settings)
            .await
        {
            Ok((_, token, holder)) if claim_outlived(settings, claimed_at) => {
                return self.outlived(&token, object_id, &holder, settings).await;
            }
            Ok(held) => held,
            Err(refused) => return refused,
        };
        let ties_stale = matches!(self.ties, TiePolicy::Stale);
        let stale = watermark
            .clone()
            .filter(|w| w.outdates(created, key, ties_stale));
        if let Some(stale) = stale {
            let lease = self.lease(object_id, &holder, watermark, None, settings);
            let done = Box::pin(std::future::ready(Ok(())));
            let settings = &settings.standing_in();
            let mut d = lease.run(&token, settings, claimed_at, done).await;
            if matches!(d.kind, OutcomeKind::Processed) {
                d.kind = OutcomeKind::Stale { watermark: stale };
            }
            return d;
        }
        let lease = self.lease(
            object_id,
            &holder,
            watermark,
            Some(Watermark::new(created, key.clone())),
            settings,
        );
        lease
            .run(&token, settings, claimed_at, handler_future(handler))
            .await
    }

    /// Locks the object, claims the event, and runs it unless it is older than the
    /// object's watermark.
    async fn dispatch(
        &self,
        event: &Event,
        object_id: &str,
        handler: &dyn EventHandler,
        settings: &DispatchSettings,
    ) -> Dispatched {
        let claimed_at = std::time::Instant::now();
        let (watermark, token, holder) = match self
            .lock_and_claim(event.id(), event.event_type(), object_id, settings)
            .await
        {
            Ok((_, token, holder)) if claim_outlived(settings, claimed_at) => {
                return self.outlived(&token, object_id, &holder, settings).await;
            }
            Ok(held) => held,
            Err(refused) => return refused,
        };
        let ties_stale = matches!(self.ties, TiePolicy::Stale);
        let stale = watermark
            .clone()
            .filter(|w| w.outdates(event.created(), event.id(), ties_stale));
        let lease = |applied| self.lease(object_id, &holder, watermark.clone(), applied, settings);
        if let Some(watermark) = stale {
            // An older event than the one applied last: not applied over it. The claim
            // completes, so Stripe's retries of it are duplicates.
            let fut = handler_future(|| handler.handle_stale(event, &watermark));
            let mut d = lease(None).run(&token, settings, claimed_at, fut).await;
            if matches!(d.kind, OutcomeKind::Processed) {
                d.kind = OutcomeKind::Stale { watermark };
            }
            return d;
        }
        let tie = watermark
            .as_ref()
            .is_some_and(|w| w.ties(event.created(), event.id()));
        let applied = Watermark::new(event.created(), event.id().clone());
        let fut = match &self.ties {
            // The fetch is part of the handler's run: under the lease renewal, the
            // deadline and the drop guard.
            TiePolicy::Fetch(client) if tie => {
                let client = Arc::clone(client);
                handler_future(move || {
                    Box::pin(async move {
                        match refetched_for_tie(event, &*client).await? {
                            Some(fresh) => handler.handle(&fresh).await,
                            None => handler.handle(event).await,
                        }
                    })
                })
            }
            _ => handler_future(|| handler.handle(event)),
        };
        lease(Some(applied))
            .run(&token, settings, claimed_at, fut)
            .await
    }
}

/// The event rebuilt around its object fetched from the API, for a tie under
/// `TiePolicy::Fetch`. `Ok(None)` when the object cannot be fetched for good (deleted:
/// Stripe's 404 `resource_missing`; no API path; no id): the snapshot is then all there
/// is, and the event runs on it, rather than failing every retry. Any other failure (a
/// proxy's 404 included) is a handler failure.
pub(crate) async fn refetched_for_tie(
    event: &Event,
    client: &dyn crate::client::StripeClient,
) -> Result<Option<Event>, HandlerError> {
    use crate::client::ClientError;
    match event.refetched(client).await {
        Ok(fresh) => Ok(Some(fresh)),
        Err(e)
            if e.is_resource_missing()
                || matches!(
                    e,
                    ClientError::NoApiPath { .. } | ClientError::NothingToFetch(_)
                ) =>
        {
            #[cfg(feature = "tracing")]
            tracing::warn!(
                event_id = %event.id(),
                event_type = %event.event_type(),
                error = %e,
                "stripe_webhooks: a same-second event's object cannot be fetched for good; \
                 running it on its snapshot"
            );
            #[cfg(not(feature = "tracing"))]
            let _ = e;
            Ok(None)
        }
        Err(e) => Err(HandlerError::new(e)),
    }
}

/// [`refetched_for_tie`] within `limit`, for the inbox modes (which hold a transaction
/// meanwhile).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) async fn fetch_within(
    event: &Event,
    client: &dyn crate::client::StripeClient,
    limit: Option<Duration>,
) -> Result<Option<Event>, HandlerError> {
    let fetch = refetched_for_tie(event, client);
    match limit {
        Some(d) => with_timeout(d, fetch)
            .await
            .unwrap_or(Err(HandlerError::DeadlineExceeded(d))),
        None => fetch.await,
    }
}

/// The claim's store, seen by the lease renewal and the drop guard, with the object's
/// lock renewed beside the claim (losing either is losing the lease), and settled with
/// the claim.
struct ObjectLease {
    store: Arc<dyn OrderingStore>,
    object_id: String,
    holder: String,
    /// The object's watermark when the lock was taken. A renewal that finds another
    /// one knows that another holder applied an event while this lock had lapsed.
    seen: Option<Watermark>,
    /// The watermark a completion records; `None` for a stale event (the watermark
    /// stays).
    applied: Option<Watermark>,
    /// The lease a renewal asks for, and a completion that must lock again.
    lease: Duration,
    /// The store timeout the delivery runs under.
    store_timeout: Duration,
    /// Set (for good) when the object's lock was found taken over before this delivery
    /// completed: the delivery must then fail (500), so that Stripe delivers the event
    /// again, rather than answer as a lost claim (200).
    lock_lost: AtomicBool,
    /// Set while a renewal's `lock_object` is out. A renewal cut there (its timeout, or
    /// the handler finishing first) may have taken the object's lock again after it
    /// lapsed, with another holder's event applied meanwhile, and not yet compared the
    /// watermark: the completion compares it first.
    renewal_unsettled: AtomicBool,
    /// How many `lock_object` calls of renewals (and of the completion's check) went
    /// out without an answer (cut by their store timeout, or when the handler was
    /// stopped): each may still land on the server, after the lock was let go.
    relocks_unanswered: AtomicUsize,
    /// How many `complete_applied` calls went out without an answer: one may still
    /// land, and needs the lock to name this holder to be taken.
    completions_unanswered: AtomicUsize,
    /// Set when a renewal found the run lost while the handler still ran: the claim
    /// and the lock are let go once the handler has stopped ([`run`](Self::run)), never
    /// under it, or another delivery of the object could start beside it.
    let_go_after_run: AtomicBool,
}

impl ObjectLease {
    /// Runs the claimed event's handler under this lease ([`run_claimed`]). A lost
    /// object lock makes the delivery a failure Stripe retries, whatever the completion
    /// said.
    async fn run(
        self: Arc<Self>,
        token: &ClaimToken,
        settings: &DispatchSettings,
        claimed_at: std::time::Instant,
        handler: HandlerFuture<'_>,
    ) -> Dispatched {
        let store: Arc<dyn IdempotencyStore> = Arc::clone(&self) as Arc<dyn IdempotencyStore>;
        let mut d = run_claimed(&store, token, settings, claimed_at, handler).await;
        if self.let_go_after_run.swap(false, SeqCst) {
            // The handler has stopped: now the lock (if still this holder's) and the
            // claim (if still this delivery's) go, the release tried twice, so that
            // Stripe's retry is not held up for a lease by one that timed out. Under a
            // guard of its own: a delivery dropped meanwhile lets them go from a task.
            let mut guard = ClaimGuard::new(&store, token.clone(), settings);
            let t = settings.store_timeout;
            let _ = store_call(t, async {
                self.unlock().await;
                Ok(())
            })
            .await;
            for _ in 0..2 {
                let reason = "the object's lock lapsed";
                match store_call(t, self.store.release(token, reason)).await {
                    Err(StoreError::Timeout(_) | StoreError::Unavailable(_)) => continue,
                    _ => break,
                }
            }
            guard.settled();
        }
        if self.lock_lost.load(SeqCst) && !matches!(d.kind, OutcomeKind::HandlerFailed(_)) {
            d.kind = OutcomeKind::HandlerFailed(HandlerError::LeaseLost);
        }
        // The handler succeeded, but the watermark did not move: answered 200, an older
        // event arriving later would find the object unlocked (once the lease ends) and
        // the watermark behind, and be applied over this one for good. Stripe's retry
        // runs this one again instead, after any such older event.
        if self.applied.is_some() {
            if let OutcomeKind::CompletionNotRecorded(e) = d.kind {
                d.kind = OutcomeKind::StoreUnavailable(e);
            }
        }
        d
    }

    /// Gives the run up after the object's lock was lost: marks the delivery a failure
    /// (500), releases the claim and frees the lock; answers the error to return. The
    /// mark comes first and stays, whatever the release answers: a release cut by its
    /// timeout may have run, and its retry would then be refused as if another delivery
    /// held the claim. A 500 costs at most a duplicate (Stripe's retry finds the event
    /// settled, or runs it); a 200 could lose the event.
    async fn give_up(&self, token: &ClaimToken, reason: &str) -> StoreError {
        self.lock_lost.store(true, SeqCst);
        // The lock first: a release cut by the caller's timeout must not leave it held.
        self.unlock().await;
        let _ = self.store.release(token, reason).await;
        // Done here (a call cut before this leaves it to `run`, which tries again).
        self.let_go_after_run.store(false, SeqCst);
        StoreError::LeaseLost {
            event_id: token.event_id().clone(),
        }
    }

    /// The run is lost while its handler still runs (a renewal found it): the delivery
    /// fails (500), and the claim and the lock are let go once the handler has stopped.
    fn lost_while_running(&self, token: &ClaimToken) -> StoreError {
        self.lock_lost.store(true, SeqCst);
        self.let_go_after_run.store(true, SeqCst);
        StoreError::LeaseLost {
            event_id: token.event_id().clone(),
        }
    }

    /// Locks the object again for `lease` (the holder's own lock is renewed) and compares
    /// the watermark with the one this delivery started from: another holder's event
    /// applied meanwhile is a lost lock, and the run is given up (its claim and lock let
    /// go at once, or, while the handler still `running`, once it has stopped). Until
    /// the answer is compared the renewal stays unsettled, so a call cut before then (its
    /// timeout, or the handler finishing first) leaves the comparison to the completion.
    async fn relock(
        &self,
        token: &ClaimToken,
        lease: Duration,
        running: bool,
    ) -> Result<ObjectLock, StoreError> {
        self.renewal_unsettled.store(true, SeqCst);
        // Counted out until answered: a call cut before its answer is never counted back.
        self.relocks_unanswered.fetch_add(1, SeqCst);
        let locked = self
            .store
            .lock_object(&self.object_id, &self.holder, lease)
            .await;
        if locked.is_ok() {
            self.relocks_unanswered.fetch_sub(1, SeqCst);
        }
        let locked = locked?;
        match &locked {
            ObjectLock::Acquired { watermark } if *watermark == self.seen => {
                self.renewal_unsettled.store(false, SeqCst);
                Ok(locked)
            }
            ObjectLock::Acquired { .. } if running => Err(self.lost_while_running(token)),
            ObjectLock::Acquired { .. } => {
                Err(self.give_up(token, "the object's lock lapsed").await)
            }
            ObjectLock::Busy { .. } => Ok(locked),
        }
    }

    async fn unlock(&self) {
        // If this fails, the lock's lease ends it instead.
        let _ = self
            .store
            .unlock_object(&self.object_id, &self.holder)
            .await;
    }
}

/// When the run is over and nothing holds the lease any more (the delivery, and a
/// dropped delivery's settling task): a renewal's `lock_object` cut (by its store
/// timeout, or when the handler was stopped) may still land on the server after the
/// lock was let go, and hold the object's other events for a lease with nobody to let
/// it go. It is let go from a task, as an unanswered first lock is, whatever the
/// outcome (the lock is this delivery's own: unlocking after the completion changes
/// nothing else); but not while a `complete_applied` cut on its way may still land,
/// which needs the lock to name this holder to be taken.
impl Drop for ObjectLease {
    fn drop(&mut self) {
        if *self.relocks_unanswered.get_mut() > 0 && *self.completions_unanswered.get_mut() == 0 {
            let settings = DispatchSettings {
                lease: self.lease,
                store_timeout: self.store_timeout,
                ..DispatchSettings::default()
            };
            drop(LockAttempt::new(
                &self.store,
                &self.object_id,
                &self.holder,
                &settings,
            ));
        }
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for ObjectLease {
    async fn claim(
        &self,
        id: &EventId,
        t: &EventType,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.store.claim(id, t, lease).await
    }

    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        match &self.applied {
            // A renewal found the run lost (the claim and the lock go now, or after the
            // run): it must not complete, or Stripe's retry would be a duplicate.
            Some(_) if self.lock_lost.load(SeqCst) => {
                Err(self.give_up(token, "the object's lock lapsed").await)
            }
            Some(applied) => {
                // A renewal cut before it compared the watermark: compare it now. (Another
                // holder's lock: the completion below is refused, and says so.)
                if self.renewal_unsettled.load(SeqCst) {
                    self.relock(token, self.lease, false).await?;
                }
                // Counted out until answered: a call cut on its way may still land.
                self.completions_unanswered.fetch_add(1, SeqCst);
                let done = self
                    .store
                    .complete_applied(token, &self.object_id, &self.holder, applied)
                    .await;
                if done.is_ok() {
                    // Completed: an earlier call cut on its way (a timed-out try the
                    // settling task retried) changes nothing if it lands now, so it no
                    // longer keeps a late renewal's lock from being let go.
                    self.completions_unanswered.store(0, SeqCst);
                } else {
                    self.completions_unanswered.fetch_sub(1, SeqCst);
                }
                if let Err(StoreError::LeaseLost { .. }) = &done {
                    // Refused, with the claim perhaps still this delivery's: the lock ran
                    // out and was taken (or its row went). Then nothing records this run,
                    // and only Stripe's retry will apply it again, after the other. If
                    // the lock is still this holder's (the claim was what went), it is
                    // let go rather than held to its lease's end.
                    let reason = "the object's lock was taken over before the completion";
                    self.give_up(token, reason).await;
                }
                done
            }
            // A stale event whose run a renewal found lost as `handle_stale` returned:
            // not completed either, so that the delivery's 500 is not a duplicate to
            // Stripe's retry.
            None if self.lock_lost.load(SeqCst) => {
                Err(self.give_up(token, "the object's lock lapsed").await)
            }
            None => {
                // Nothing applied (a stale event): the lock first, so that a completion
                // cut by the caller's timeout does not hold the object for a lease.
                self.unlock().await;
                self.store.complete(token).await
            }
        }
    }

    async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError> {
        // The lock first: the caller's store timeout covers both calls, and a release that
        // used it up would otherwise leave every event of the object answered 409 until
        // the lock's lease ended. Safe: the claim stays this delivery's until released,
        // so a redelivery of this event waits, and its handler applied nothing.
        self.unlock().await;
        let released = self.store.release(token, reason).await;
        // Answered: the lock and the claim are let go, and `run` need not do it again
        // (a lost run's, released by the caller, would be let go twice).
        if !matches!(
            released,
            Err(StoreError::Timeout(_) | StoreError::Unavailable(_))
        ) {
            self.let_go_after_run.store(false, SeqCst);
        }
        released
    }

    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
        if let Err(e) = self.store.extend(token, lease).await {
            if matches!(e, StoreError::LeaseLost { .. }) {
                // The claim went: the lock, still this holder's, goes once the handler
                // has stopped, rather than stay to its lease's end.
                self.let_go_after_run.store(true, SeqCst);
            }
            return Err(e);
        }
        // Taken again after a lapse in which another holder applied an event, the two ran
        // side by side, so this run must not complete; held by another holder now (it
        // took the lapsed lock), likewise. The handler is stopped (this error), and then
        // the claim and the lock go, so that the object and Stripe's retry of this event
        // are not held up for a lease; never before it stopped, or another event of the
        // object could start beside it.
        match self.relock(token, lease, true).await? {
            ObjectLock::Acquired { .. } => Ok(()),
            ObjectLock::Busy { .. } => Err(self.lost_while_running(token)),
        }
    }
}

/// Records a completion, retrying briefly: the handler has run, and a 5xx now would run
/// it again.
pub(super) async fn complete<'a, F, Fut>(t: Duration, call: F) -> OutcomeKind
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), StoreError>> + 'a,
{
    let mut last = None;
    for i in 0..=COMPLETION_RETRIES {
        if i > 0 {
            pause(Duration::from_millis(50 << (i - 1))).await;
        }
        match store_call(t, call()).await {
            Ok(()) => return OutcomeKind::Processed,
            Err(StoreError::LeaseLost { .. }) => return OutcomeKind::LeaseLost,
            Err(e) => last = Some(e),
        }
    }
    OutcomeKind::CompletionNotRecorded(
        last.unwrap_or_else(|| StoreError::unavailable("completion failed")),
    )
}

/// A handler's boxed future.
pub(crate) type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// Calls a handler (`|| handler.handle(event)`) with a panic in the call itself (before
/// the first poll, possible in a handler written without `async-trait`) turned into a
/// failed future.
pub(crate) fn handler_future<'a>(call: impl FnOnce() -> HandlerFuture<'a>) -> HandlerFuture<'a> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(fut) => fut,
        Err(payload) => {
            let e = HandlerError::Panicked(panic_message(&*payload));
            Box::pin(std::future::ready(Err(e)))
        }
    }
}

/// Calls a handler's synchronous check (`handles`, `handles_event`…) with its panic
/// caught: `Err` with the panic's message. A worker must not lose the job's task to it
/// (the job would sit running until its lease ended, an attempt counted each time).
pub(crate) fn check_caught<T>(check: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(check)).map_err(|payload| panic_message(&*payload))
}

/// Runs a handler's future with panics caught and the deadline applied: a panic becomes
/// [`HandlerError::Panicked`], a timeout [`HandlerError::DeadlineExceeded`].
/// (The queue's worker and the inbox modes call it; without a runtime nothing does.)
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) async fn run_handler<'a>(
    fut: Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>,
    deadline: Option<Duration>,
) -> Result<(), HandlerError> {
    run_handler_counted(fut, deadline, true).await
}

/// [`run_handler`], counted as a handler run only when `counted` (work standing in for
/// a handler is not).
async fn run_handler_counted<'a>(
    fut: Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>,
    deadline: Option<Duration>,
    counted: bool,
) -> Result<(), HandlerError> {
    let fut = CatchUnwind(fut);
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    let result = match deadline {
        Some(d) => with_timeout(d, fut)
            .await
            .unwrap_or(Err(HandlerError::DeadlineExceeded(d))),
        None => fut.await,
    };
    #[cfg(feature = "metrics")]
    if counted {
        crate::metrics::handler_ran(started.elapsed(), &result);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = counted;
    result
}

/// Runs a store call with a timeout: past it, [`StoreError::Timeout`].
pub(crate) async fn store_call<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let result = with_timeout(timeout, fut)
        .await
        .unwrap_or(Err(StoreError::Timeout(timeout)));
    #[cfg(feature = "metrics")]
    if let Err(e) = &result {
        crate::metrics::store_error(e);
    }
    result
}

#[cfg(feature = "tokio")]
async fn with_timeout<F: Future>(d: Duration, f: F) -> Option<F::Output> {
    tokio::time::timeout(d, f).await.ok()
}

#[cfg(not(feature = "tokio"))]
async fn with_timeout<F: Future>(_d: Duration, f: F) -> Option<F::Output> {
    Some(f.await)
}

#[cfg(feature = "tokio")]
async fn pause(d: Duration) {
    tokio::time::sleep(d).await;
}

#[cfg(not(feature = "tokio"))]
async fn pause(_d: Duration) {}

/// Turns a panic while polling the handler's future into [`HandlerError::Panicked`].
struct CatchUnwind<'a>(Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>);

impl Future for CatchUnwind<'_> {
    type Output = Result<(), HandlerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(HandlerError::Panicked(panic_message(&*payload)))),
        }
    }
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
