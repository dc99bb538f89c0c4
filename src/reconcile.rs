//! The reconciler: catches up on events that never reached the webhook routes.
//!
//! A webhook endpoint that was down, disabled or misconfigured for longer than Stripe's
//! three days of retries loses those events for good unless someone lists them from the
//! API. [`Reconciler`] lists them with a [`StripeClient`] and runs each through the
//! same [`Processor`] as the webhook routes (claim, handle, complete): an event the
//! webhook path already completed is a duplicate and skipped, one running elsewhere is
//! left to its holder, so running it beside live webhooks, and from several replicas at
//! once, still runs each handler once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{
    ClientError, ListEventsParams, ListV2EventsParams, RequestContext, StripeClient,
    UnreadableEvent,
};
use crate::clock::{Clock, SystemClock};
use crate::event::{rfc3339_from, Event, EventId, EventNotification};
use crate::handler::HandlerError;
use crate::idempotency::{OrderingStore, StoreError, Watermark};
use crate::processor::{Outcome, OutcomeKind, Processor};

/// How far back a reconciler looks when it has no cursor yet, and for undelivered
/// events: 3 days, as long as Stripe retries a delivery.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(3 * 24 * 3600);

/// How many attempts, counted by the store, a failed event older than the lookback gets
/// before it stops holding a cursor ([`Reconciler::with_attempts_past_lookback`]): with
/// a pass every 10 minutes, most of an hour to get past a passing failure.
pub const DEFAULT_ATTEMPTS_PAST_LOOKBACK: u32 = 5;

/// How far behind the present a cursor pass leaves its cursor unless told otherwise
/// ([`Reconciler::with_safety_lag`]): a minute.
pub const DEFAULT_SAFETY_LAG: Duration = Duration::from_secs(60);

/// How long Stripe lists events (and retrieves them by id): 30 days. A cursor pass
/// whose cursor is older finds the events of the span before gone
/// ([`ReconcileReport::unlisted_before`]).
pub const EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The most events a pass holds in memory at once unless told otherwise
/// ([`Reconciler::with_max_buffered`]).
pub const DEFAULT_MAX_BUFFERED: usize = 10_000;

/// The most `types[]` Stripe takes in one list request; with more, the reconciler lists
/// every type and the processor skips those it does not handle.
const MAX_TYPE_FILTERS: usize = 20;

/// How many v2 pages in a row may list only events listed before (and still have a next
/// page) before the listing counts as stalled: pages under ever new tokens that never move
/// on would otherwise be followed for good.
const MAX_REPEATED_PAGES: usize = 10;

/// Likewise for empty v2 pages that have a next page, which a filtered list may give over
/// a quiet span: many more are let through.
const MAX_EMPTY_PAGES: usize = 100;

/// What one reconciler pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// Pages listed, with those of windows of time listed again after halving
    /// ([`Reconciler::with_max_buffered`]).
    pub pages: usize,
    /// Events listed, each window of time counted once.
    pub listed: usize,
    /// Events whose handler ran and completed now: the webhook never delivered them.
    pub processed: usize,
    /// Events queued for the workers now (a reconciler over an ack-fast processor,
    /// [`Processor::queued`](crate::Processor::queued)): the webhook never delivered them.
    pub queued: usize,
    /// Events already completed (by the webhook path, or an earlier pass), or already
    /// queued.
    pub duplicates: usize,
    /// Events another delivery was running: left to it.
    pub in_progress: usize,
    /// Events whose handler failed, or whose claim the store could not take, or that
    /// another delivery took over while they ran (lease lost): the next pass (or
    /// Stripe's retry) runs them again.
    pub failed: usize,
    /// Events answered without running the handler (no route, stale, other mode).
    pub skipped: usize,
    /// Events Stripe listed that this crate could not read as events
    /// ([`UnreadableEvent`]), of a type the processor takes (or whose type could not be
    /// read), recorded now where the processor records failures: in its store as a
    /// failed event, with the parse error as its reason (listed by
    /// [`failed_events`](crate::StoreAdmin::failed_events), the CLI and the console),
    /// claimed under the key its delivery would be (a thin event's snapshot twin's); on
    /// an ack-fast processor, queued with its JSON, which the worker cannot read either
    /// and buries as dead with why. Such an event does not hold the cursor, since no later
    /// pass could read it either (a pass that lists it again records it again: one more
    /// attempt). One completed or queued already counts as a duplicate; one the processor
    /// could not record (or that another delivery holds) holds the cursor and counts in
    /// [`failed`](Self::failed) (or [`in_progress`](Self::in_progress)) instead.
    pub unreadable: usize,
    /// Of the events whose handler failed, those older than the lookback
    /// ([`Reconciler::with_lookback`]): they no longer hold the cursor back, so one event
    /// that fails every time cannot make every later pass list more. Each stays in the
    /// store as failed (listed by [`failed_events`](crate::StoreAdmin::failed_events));
    /// with a lookback of at least three days (the default), Stripe no longer retries it
    /// either. An event held elsewhere, or one the store could not record, holds the
    /// cursor whatever its age.
    pub beyond_lookback: usize,
    /// The cursor after the pass, for the passes that keep one.
    pub cursor: Option<Watermark>,
    /// Set when a cursor pass found that no pass of its cursor had listed for longer
    /// than Stripe lists events ([`EVENT_RETENTION`], 30 days): the events created from
    /// the cursor to this time (the present less 30 days) could not be listed, and those
    /// the webhook never delivered are out of the reconciler's reach (resync the objects
    /// they changed from the API). The pass lists and runs what Stripe still keeps.
    /// Logged as a warning (with the `tracing` feature). A cursor that is old only
    /// because nothing of its types happened (passes that list nothing leave it where
    /// it is) is not flagged, nor a first pass whose
    /// [lookback](Reconciler::with_lookback) reaches further back: it asked for whatever
    /// Stripe keeps.
    pub unlisted_before: Option<i64>,
}

impl ReconcileReport {
    fn count(&mut self, o: &Outcome) {
        match o.kind() {
            OutcomeKind::Processed | OutcomeKind::CompletionNotRecorded(_) => self.processed += 1,
            OutcomeKind::Queued => self.queued += 1,
            OutcomeKind::Duplicate => self.duplicates += 1,
            OutcomeKind::InProgress { .. } => self.in_progress += 1,
            // Answered 200, but taken over while it ran: it holds the cursor, and the
            // delivery that took it may fail in turn.
            OutcomeKind::LeaseLost => self.failed += 1,
            _ if o.status() >= 500 => self.failed += 1,
            _ => self.skipped += 1,
        }
    }
}

/// Why a reconciler pass stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// Listing events from Stripe failed (after the client's retries). Nothing after the
    /// cursor was skipped: the next pass lists it again.
    #[error("listing events from Stripe failed: {0}")]
    Client(#[from] ClientError),
    /// The cursor could not be read or written.
    #[error("the reconciler's cursor store failed: {0}")]
    Store(#[from] StoreError),
    /// Stripe said more events follow but gave no way to them: a v1 page with
    /// `has_more` and no events, a v1 page ending on the event the one before ended on,
    /// a v2 `next_page` equal to one already followed, or v2 pages that each have a next
    /// page and list no event not listed before: ten in a row that list only events
    /// listed before, or a hundred empty ones. The pass stops before
    /// running anything of the window of time it was listing and leaves the cursor where
    /// the windows before left it, so no unlisted event falls behind it; the next pass
    /// lists again.
    #[error("Stripe's event list stopped moving after page {page}: it says more events follow but gives no way to them")]
    ListingStalled {
        /// The page (from 1) after which the listing could not go on.
        page: usize,
    },
}

/// Lists events from Stripe and runs them through a [`Processor`]'s claims.
///
/// - [`undelivered`](Self::undelivered): the events Stripe could not deliver
///   (`delivery_success=false`) in the last [`lookback`](Self::with_lookback);
/// - [`since_cursor`](Self::since_cursor): every snapshot event since its cursor, which
///   it keeps in the idempotency store (an [`OrderingStore`] watermark under
///   [`cursor_keys`](Self::cursor_keys)) and only ever moves forward;
/// - [`thin_since_cursor`](Self::thin_since_cursor): the same from the v2 events list,
///   for a processor with a thin handler.
///
/// Only the types the processor's handlers take are listed
/// ([`Processor::enabled_events`]; up to 20 names, Stripe's limit, else every type),
/// and every type for a handler that takes types this release does not know (a prefix
/// route, `invoice.*`, takes those Stripe adds later). Stripe lists newest first, so a
/// pass lists a span of time whole and then runs it oldest first: with the ordering guard
/// ([`Processor::ordered`]) the missed updates of an object apply in order instead of
/// all but the newest being stale. A span holds at most
/// [`with_max_buffered`](Self::with_max_buffered) events in memory (10,000 by default):
/// a pass over a longer backlog (an endpoint down for days on a busy account) goes
/// through it in spans of time, oldest first, halving a span that lists more and moving
/// the cursor after each. A listed event this crate cannot read ([`UnreadableEvent`])
/// is recorded as failed, with why, where the processor records failures, rather than
/// stop the pass ([`ReconcileReport::unreadable`]).
///
/// Over an ack-fast processor ([`Processor::queued`]) a pass runs no handler: each event
/// goes to the queue under the same dedupe key as its webhook delivery
/// ([`ReconcileReport::queued`], or a duplicate when the webhook queued it first), and
/// the workers run it with their retries and dead state. Give that processor the
/// workers' types ([`Processor::with_enabled_events`] from
/// [`Worker::enabled_events`](crate::queue::Worker::enabled_events)), or it lists every
/// type.
///
/// Schedule a pass every few minutes, from every replica if you like:
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use stripe_webhooks::client::{ApiKey, HttpClient};
/// use stripe_webhooks::reconcile::Reconciler;
/// use stripe_webhooks::{EventRouter, Processor, SqliteStore, Verifier};
///
/// let store = SqliteStore::connect("stripe-webhooks.db").await?;
/// let processor = Arc::new(Processor::new(
///     Verifier::from_secrets_list(&std::env::var("STRIPE_WEBHOOK_SECRET")?)?,
///     store.clone(),
///     EventRouter::new().fallback(|_e| Box::pin(async { Ok(()) })),
/// ));
/// let client = HttpClient::new(ApiKey::new(std::env::var("STRIPE_API_KEY")?)?)?;
/// let reconciler = Reconciler::new(client, Arc::clone(&processor), store);
/// tokio::spawn(async move {
///     let mut every = tokio::time::interval(Duration::from_secs(600));
///     // A long pass delays the next one, rather than being followed by the missed ones.
///     every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
///     loop {
///         every.tick().await;
///         match reconciler.since_cursor().await {
///             Ok(report) => println!("reconciled: {report:?}"),
///             Err(e) => eprintln!("reconcile failed, next pass retries: {e}"),
///         }
///     }
/// });
/// # Ok(()) }
/// ```
///
/// A pass may be stopped by dropping its future (a shutdown signal), and the next pass,
/// or Stripe's retry, runs the event it was running. Over an
/// [`IdempotencyStore`](crate::IdempotencyStore), that event's claim is released from a
/// task of its own: before the runtime ends, wait for it with the processor's
/// [`drain`](Processor::drain), as `examples/reconcile.rs` does, or the event stays
/// held until its lease ends. (In inbox mode its transaction rolls back with the pass;
/// an ack-fast processor's enqueue is one statement.)
pub struct Reconciler {
    client: Arc<dyn StripeClient>,
    processor: Arc<Processor>,
    cursors: Arc<dyn OrderingStore>,
    name: String,
    context: RequestContext,
    lookback: Duration,
    attempts_past_lookback: u32,
    safety_lag: Duration,
    clock: Arc<dyn Clock>,
    page_size: u8,
    concurrency: usize,
    max_buffered: usize,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("name", &self.name)
            .field("context", &self.context)
            .field("lookback", &self.lookback)
            .field("attempts_past_lookback", &self.attempts_past_lookback)
            .field("safety_lag", &self.safety_lag)
            .field("clock", &self.clock)
            .field("page_size", &self.page_size)
            .field("concurrency", &self.concurrency)
            .field("max_buffered", &self.max_buffered)
            .finish_non_exhaustive()
    }
}

/// Puts a newest-first listing oldest first, keeping the order within a second reversed
/// too (Stripe lists the later of two same-second events first).
fn oldest_first<T>(items: &mut [T], created: impl Fn(&T) -> i64) {
    items.reverse();
    items.sort_by_key(created);
}

/// What one listing of a window of time found.
enum Listed<T> {
    /// Every event of the window, each once: those read, and those this crate could not
    /// read.
    All(Vec<T>, Vec<UnreadableEvent>),
    /// More than the cap: nothing kept, the window is to be halved. `newest` is the
    /// latest `created` among those listed before it stopped.
    TooMany { newest: Option<i64> },
}

/// The windows of time a pass lists, oldest first, each `[start, end)` and the last one
/// open (no end). The first is the whole span since the pass's start; one that lists
/// more than the cap is halved, down to a second, which is listed whole whatever it
/// holds; after a window, the next is as wide, or twice as wide when it held under a
/// quarter of the cap. The present is read again before each window, so the open last
/// window, which gathers the events created while the pass ran, is halved like any
/// other. So a pass holds at most the cap in memory (or one second's events, or, with
/// a cursor ahead of this machine's clock, the events after it), at the cost of
/// listing again the windows it halves.
#[derive(Debug)]
struct Windows {
    start: i64,
    /// The width of the next window, in seconds; `None` for everything from `start` on.
    width: Option<i64>,
    /// The present, as last read: a window reaching past it is the open last one.
    now: i64,
}

impl Windows {
    fn new(start: i64, now: i64) -> Self {
        Self {
            start,
            width: None,
            now,
        }
    }

    /// Reads the present again (never back).
    fn at(&mut self, now: i64) {
        self.now = self.now.max(now);
    }

    /// The next window: its start, and its end (`None`: open).
    fn next(&self) -> (i64, Option<i64>) {
        let end = self
            .width
            .map(|w| self.start.saturating_add(w))
            .filter(|end| *end <= self.now);
        (self.start, end)
    }

    /// Whether the next window can be halved: it spans more than a second (the open one:
    /// it starts before the present).
    fn halvable(&self) -> bool {
        match self.next() {
            (start, Some(end)) => end - start > 1,
            (start, None) => self.now > start,
        }
    }

    /// The most events the next window's listing may hold: `max`, or no limit for one
    /// that cannot be halved.
    fn cap(&self, max: usize) -> usize {
        if self.halvable() {
            max
        } else {
            usize::MAX
        }
    }

    /// The next window listed more than the cap: halves it.
    fn narrow(&mut self) {
        let width = match self.next() {
            (start, Some(end)) => end - start,
            // The open window, as if it ended a second past the present.
            (start, None) => self.now.saturating_sub(start).saturating_add(1),
        };
        self.width = Some((width / 2).max(1));
    }

    /// The next window, of `count` events, has run: moves past it. `false` when it was
    /// the last (open) one.
    fn done(&mut self, count: usize, max: usize) -> bool {
        let (_, Some(end)) = self.next() else {
            return false;
        };
        self.start = end;
        // (`max / 4` is 0 for a cap under 4: an empty window still widens.)
        if count == 0 || count.saturating_mul(4) < max {
            self.width = self.width.map(|w| w.saturating_mul(2));
        }
        true
    }
}

/// Where a cursor pass may move its cursor: up to the oldest event it could not settle
/// (so the next pass lists it again), else to the newest it saw.
struct Frontier {
    newest: Option<Watermark>,
    oldest_open: Option<i64>,
    /// The latest `created` listed so far in this pass, the halved listings' included:
    /// Stripe's clock had passed it when it was listed.
    present: Option<i64>,
    /// Where a window that ended past [`present`](Self::present) when it was listed
    /// stopped being known complete: with this machine's clock ahead of Stripe's, a
    /// window of time can end in Stripe's future, and the events created after its
    /// listing in its span are in no later window. The cursor stays behind this.
    ceiling: Option<i64>,
    /// When the pass started, in Unix seconds.
    now: i64,
    /// How far behind the present (or the newest event listed) the cursor stays.
    lag: i64,
    /// A failed event created before this (the lookback's start) no longer holds the
    /// cursor once the store counted `attempts_past` attempts of it.
    hold_from: i64,
    attempts_past: u32,
    /// How many did not.
    beyond_lookback: usize,
}

impl Frontier {
    /// A pass starting at `now` (Unix seconds) whose cursor stays `lag` seconds behind;
    /// `hold_from` is where its lookback starts, before which a failed event holds it
    /// for `attempts_past` attempts.
    fn new(now: i64, lag: i64, hold_from: i64, attempts_past: u32) -> Self {
        Self {
            newest: None,
            oldest_open: None,
            present: None,
            ceiling: None,
            now,
            lag,
            hold_from,
            attempts_past,
            beyond_lookback: 0,
        }
    }
}

/// Whether a context names one account (`acct_…`), which the v1 API takes as
/// `Stripe-Account`, rather than a path of them (`acct_1/acct_2`) or an organization.
fn is_account_id(context: &str) -> bool {
    context.strip_prefix("acct_").is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// A duration in whole seconds, as the cursors count, rounded up (a safety lag of
/// 900 ms is a second, not none).
fn secs(d: Duration) -> i64 {
    let whole = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i64::try_from(whole).unwrap_or(i64::MAX)
}

/// The id a cursor carries when it stops at a second rather than at an event.
const OPEN_EVENT: &str = "-";

impl Frontier {
    /// A listing found events up to `newest` (`None`: none).
    fn listed(&mut self, newest: Option<i64>) {
        self.present = self.present.max(newest);
    }

    /// The window `[start, end)` was listed (after [`listed`](Self::listed)). If it
    /// ends past the latest event listed so far, the part after that event (or after
    /// its start) may have been in Stripe's future then: the cursor stays before it.
    fn closed(&mut self, start: i64, end: i64) {
        if self.present.is_some_and(|p| end <= p) {
            return;
        }
        let known = self.present.map_or(start, |p| p.max(start));
        self.ceiling = Some(self.ceiling.map_or(known, |c| c.min(known)));
    }

    fn saw(&mut self, created: i64, id: &EventId, o: &Outcome) {
        if self.newest.as_ref().map_or(true, |w| w.created < created) {
            self.newest = Some(Watermark::new(created, id.clone()));
        }
        // Running elsewhere, failed, or taken over while it ran (the delivery that took it
        // may fail in turn): the next pass lists it again, and the store skips it if it
        // completed meanwhile.
        let open = matches!(
            o.kind(),
            OutcomeKind::InProgress { .. } | OutcomeKind::LeaseLost
        ) || o.status() >= 500;
        // A handler that failed (other than for a lost lease) and whose failure the
        // store confirmed (its claim released as failed, or the failure recorded after
        // its transaction rolled back): the store keeps the event. Any other open
        // outcome (held elsewhere, store unavailable, lease lost, a release or record
        // that failed or timed out) may have left no record, so it holds the cursor
        // whatever its age.
        let recorded_failure = o.failure_recorded
            && matches!(
                o.kind(),
                OutcomeKind::HandlerFailed(e) if !matches!(e, HandlerError::LeaseLost)
            );
        // Older than the lookback: Stripe no longer retries it. Holding the cursor for it
        // for good would make every later pass list everything since, for as long as
        // Stripe lists events; it holds it for a few attempts, so that a passing failure
        // (a backlog after a long outage meeting a busy database) is not its last try.
        let tried_enough = o.attempt().map_or(true, |a| a >= self.attempts_past);
        if recorded_failure && created < self.hold_from && tried_enough {
            self.beyond_lookback += 1;
        } else if open {
            self.oldest_open = Some(self.oldest_open.map_or(created, |c| c.min(created)));
        }
    }

    /// An event the crate could not read ([`Reconciler::record_unreadable`]): `held`
    /// when it was not recorded as failed, so the next pass lists it again.
    fn saw_unreadable(&mut self, created: i64, id: &EventId, held: bool) {
        if self.newest.as_ref().map_or(true, |w| w.created < created) {
            self.newest = Some(Watermark::new(created, id.clone()));
        }
        if held {
            self.oldest_open = Some(self.oldest_open.map_or(created, |c| c.min(created)));
        }
    }

    fn target(&self) -> Option<Watermark> {
        // The safety lag behind the present, by this machine's clock or, if that runs
        // ahead of Stripe's, by the newest event listed (which Stripe's clock has
        // passed), so that a clock ahead cannot carry the cursor past an event Stripe
        // lists late.
        // And never past where a window may have missed events (`ceiling`).
        let horizon = self
            .newest
            .as_ref()
            .map_or(self.now, |n| n.created.min(self.now))
            .min(self.ceiling.unwrap_or(i64::MAX))
            .saturating_sub(self.lag)
            .max(0);
        match (self.oldest_open, &self.newest) {
            // Not past an open event: the next pass starts at its second, or at the
            // horizon if that is earlier. (Stores read an empty id as no watermark,
            // hence a placeholder.)
            (Some(open), _) => Some(Watermark::new(open.min(horizon), EventId::new(OPEN_EVENT))),
            // Not past the horizon either: an event Stripe lists a little late still
            // falls in the next pass.
            (None, Some(_)) => Some(Watermark::new(horizon, EventId::new(OPEN_EVENT))),
            (None, None) => None,
        }
    }
}

/// The latest `created` among listed `items` (read by `created`) and the unreadable
/// events listed beside them, where it could be read.
fn newest<T>(
    items: &[T],
    created: impl Fn(&T) -> Option<i64>,
    unreadable: &[UnreadableEvent],
) -> Option<i64> {
    let unreadable = unreadable.iter().filter_map(|u| u.created);
    items.iter().filter_map(created).chain(unreadable).max()
}

/// One chain's run: its items, in order, each with its outcome.
type ChainRun<'a, T> = Pin<Box<dyn Future<Output = Vec<(T, Outcome)>> + Send + 'a>>;

fn run_events(p: &Processor, chain: Vec<Event>) -> ChainRun<'_, Event> {
    Box::pin(async move {
        let mut out = Vec::with_capacity(chain.len());
        for event in chain {
            let o = p.process_event(&event).await;
            out.push((event, o));
        }
        out
    })
}

fn run_notifications(
    p: &Processor,
    chain: Vec<EventNotification>,
) -> ChainRun<'_, EventNotification> {
    Box::pin(async move {
        let mut out = Vec::with_capacity(chain.len());
        for n in chain {
            let o = p.process_notification(&n).await;
            out.push((n, o));
        }
        out
    })
}

/// Runs `items` (oldest first) through `run`: with `concurrency` 1, all in order; else in
/// chains, one per object (`key`; an item without one is a chain of its own), each in
/// order, at most `concurrency` chains at once. The chains run interleaved on the
/// caller's task (no runtime needed, nothing spawned). Gives back every item with its
/// outcome.
async fn in_chains<'a, T: Send + 'a>(
    items: Vec<T>,
    concurrency: usize,
    key: impl Fn(&T) -> Option<String>,
    processor: &'a Processor,
    run: fn(&'a Processor, Vec<T>) -> ChainRun<'a, T>,
) -> Vec<(T, Outcome)> {
    if concurrency <= 1 || items.len() <= 1 {
        return run(processor, items).await;
    }
    let mut chains: Vec<Vec<T>> = Vec::new();
    let mut by_key: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for item in items {
        match key(&item) {
            Some(k) => match by_key.entry(k) {
                std::collections::hash_map::Entry::Occupied(e) => chains[*e.get()].push(item),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(chains.len());
                    chains.push(vec![item]);
                }
            },
            None => chains.push(vec![item]),
        }
    }
    Chains {
        running: Vec::with_capacity(concurrency),
        pending: chains.into_iter(),
        processor,
        run,
        concurrency,
        out: Vec::new(),
    }
    .await
}

/// The chains of [`in_chains`], polled together.
struct Chains<'a, T> {
    running: Vec<ChainRun<'a, T>>,
    pending: std::vec::IntoIter<Vec<T>>,
    processor: &'a Processor,
    run: fn(&'a Processor, Vec<T>) -> ChainRun<'a, T>,
    concurrency: usize,
    out: Vec<(T, Outcome)>,
}

// No field is ever pinned in place (the chains' futures are boxed), so moving one is
// fine whatever `T` is.
impl<T> Unpin for Chains<'_, T> {}

impl<T> Future for Chains<'_, T> {
    type Output = Vec<(T, Outcome)>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            while this.running.len() < this.concurrency {
                let Some(chain) = this.pending.next() else {
                    break;
                };
                this.running.push((this.run)(this.processor, chain));
            }
            if this.running.is_empty() {
                return std::task::Poll::Ready(std::mem::take(&mut this.out));
            }
            let mut finished = false;
            let mut i = 0;
            while i < this.running.len() {
                if let std::task::Poll::Ready(ran) = this.running[i].as_mut().poll(cx) {
                    this.out.extend(ran);
                    drop(this.running.swap_remove(i));
                    finished = true;
                } else {
                    i += 1;
                }
            }
            // A chain that finished frees a place: the loop fills it and polls again.
            if !finished {
                return std::task::Poll::Pending;
            }
        }
    }
}

impl Reconciler {
    /// A reconciler named `default`, for the platform account, looking back
    /// [`DEFAULT_LOOKBACK`], 100 events a page. `cursors` is the processor's store
    /// (any [`OrderingStore`]): the cursor lives beside the claims.
    pub fn new(
        client: impl StripeClient,
        processor: Arc<Processor>,
        cursors: impl OrderingStore,
    ) -> Self {
        Self {
            client: Arc::new(client),
            processor,
            cursors: Arc::new(cursors),
            name: "default".to_owned(),
            context: RequestContext::default(),
            lookback: DEFAULT_LOOKBACK,
            attempts_past_lookback: DEFAULT_ATTEMPTS_PAST_LOOKBACK,
            safety_lag: DEFAULT_SAFETY_LAG,
            clock: Arc::new(SystemClock),
            page_size: 100,
            concurrency: 1,
            max_buffered: DEFAULT_MAX_BUFFERED,
        }
    }

    /// Names the cursor (see [`cursor_keys`](Self::cursor_keys)). Reconcilers of
    /// different connected accounts or contexts ([`with_context`](Self::with_context)),
    /// or over processors that take different types, already keep cursors of their
    /// own; a name separates any others. Give one to each reconciler that shares a store
    /// with another of the same types: with API keys of different Stripe accounts
    /// (nothing in the key names the account), or over processors whose routers take
    /// different accounts (`EventRouter::accounts`). Sharing one cursor, one would move
    /// it past an event the other has still to run.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Lists the events of a connected account or context instead of the platform's.
    /// The v1 list is asked with `Stripe-Account` and the v2 list with
    /// `Stripe-Context`, whichever of the two `context` sets: an account given either way
    /// is sent in the header each list takes.
    #[must_use]
    pub fn with_context(mut self, context: RequestContext) -> Self {
        self.context = context;
        self
    }

    /// The store keys of this reconciler's two cursors, `[v1, v2]`:
    /// `reconcile:{name}:{scope}:{types}:v1` (and `…:v2`), where `scope` is the account
    /// or context (`platform` without one), followed by `/test` when the client's key is
    /// a test-mode one ([`StripeClient::livemode`]) or, for a key whose mode the client
    /// cannot tell (a proxy's token), when the processor is
    /// [`with_livemode(false)`](crate::Processor::with_livemode), and `types` is a short
    /// hash of the types the processor takes (`all` when it takes every one), and of
    /// whether it takes types Stripe adds later under a known stem (a prefix route,
    /// whose pass lists every type).
    /// Two reconcilers on one
    /// store over processors of different types, for different connected accounts, or
    /// with keys of different modes, thus never share a cursor: a shared one moved past
    /// an event that one of them could not settle (or never listed), because the other
    /// had nothing open there. A reconciler whose types change starts a cursor of its
    /// own, from its [lookback](Self::with_lookback). Beside each cursor, `{key}:listed`
    /// keeps when its last pass began listing ([`ReconcileReport::unlisted_before`]).
    /// The stores keep both past their retention
    /// ([`advance_watermark`](crate::OrderingStore::advance_watermark)), so a reconciler
    /// stopped for longer resumes from its cursor. A cursor no reconciler uses any more
    /// (a renamed one, changed types, an account gone) stays until you delete it: its
    /// row in the objects table (`{table}_objects`, `object_id` = the key) or its Redis
    /// key (`{prefix}:obj:{key}`).
    pub fn cursor_keys(&self) -> [String; 2] {
        let c = &self.context;
        let scope = c
            .stripe_account()
            .or(c.stripe_context())
            .unwrap_or("platform");
        let mode = match self.client.livemode().or(self.processor.livemode()) {
            Some(false) => "/test",
            Some(true) | None => "",
        };
        // The types taken, and whether new ones are: a prefix route (whose pass lists
        // every type) shares no cursor with a processor that names the same known types
        // (the one that ran ahead would move it past a new type the other never listed),
        // nor with one on another stem.
        let events = self.processor.enabled_events();
        let [new_snapshot, new_thin] = events.takes_new_types;
        [
            ("v1", events.snapshot, new_snapshot),
            ("v2", events.thin, new_thin),
        ]
        .map(|(family, mut types, takes_new)| {
            types.sort_unstable();
            types.dedup();
            let types = if types.iter().any(|t| t == "*") {
                "all".to_owned()
            } else {
                use sha2::Digest;
                let mut listed = types.join(",");
                if takes_new {
                    listed.push_str(",+new");
                }
                let digest = sha2::Sha256::digest(listed.as_bytes());
                hex::encode(&digest[..4])
            };
            format!(
                "{}{}:{scope}{mode}:{types}:{family}",
                crate::idempotency::CURSOR_KEY_PREFIX,
                self.name
            )
        })
    }

    /// Where a cursor pass starts: its cursor, else the lookback's start. (A cursor of
    /// another key is never taken over: one for other types or another account says
    /// nothing of where this one's events were settled.) A cursor that no pass has
    /// listed from within Stripe's [retention](EVENT_RETENTION) is noted in `report`.
    async fn start(&self, key: &str, report: &mut ReconcileReport) -> Result<i64, ReconcileError> {
        let Some(cursor) = self.cursors.watermark(key).await? else {
            return Ok(self.since());
        };
        let kept_from = self.clock.now_unix().saturating_sub(secs(EVENT_RETENTION));
        if cursor.created < kept_from {
            // A pass that lists nothing leaves the cursor where it is: when the last
            // pass listed from it is what tells whether events went unlisted.
            let listed = self.cursors.watermark(&listed_key(key)).await?;
            let last_listed = listed.map_or(cursor.created, |w| w.created);
            if last_listed < kept_from {
                report.unlisted_before = Some(kept_from);
                note_cursor_beyond_retention(key, cursor.created, kept_from);
            }
        }
        Ok(cursor.created)
    }

    /// The v1 list's context: `Stripe-Account` (or, for a context that is not one
    /// account, `Stripe-Context` as given).
    fn v1_context(&self) -> RequestContext {
        let c = &self.context;
        match (c.stripe_account(), c.stripe_context()) {
            (Some(account), _) => RequestContext::platform().with_stripe_account(account),
            (None, Some(ctx)) if is_account_id(ctx) => {
                RequestContext::platform().with_stripe_account(ctx)
            }
            (None, Some(ctx)) => RequestContext::platform().with_stripe_context(ctx),
            (None, None) => RequestContext::platform(),
        }
    }

    /// The v2 list's context: `Stripe-Context` (an account given as `Stripe-Account`
    /// becomes its context).
    fn v2_context(&self) -> RequestContext {
        let c = &self.context;
        match c.stripe_context().or(c.stripe_account()) {
            Some(ctx) => RequestContext::platform().with_stripe_context(ctx),
            None => RequestContext::platform(),
        }
    }

    /// How far back to look for undelivered events, and for a cursor pass's first run
    /// ([`DEFAULT_LOOKBACK`], three days). A failed event older than this holds a cursor
    /// for a few attempts only ([`with_attempts_past_lookback`](Self::with_attempts_past_lookback)),
    /// then no longer ([`ReconcileReport::beyond_lookback`]); its failure stays in the store.
    /// Stripe lists the last 30 days only ([`EVENT_RETENTION`]): a longer lookback
    /// finds nothing more. An `undelivered` pass lists an event it ran again on each
    /// pass for as long as the lookback reaches (Stripe still marks it undelivered), and
    /// the store's record is what makes it a duplicate: keep the store's retention
    /// (`with_retention`) longer than the lookback.
    #[must_use]
    pub fn with_lookback(mut self, lookback: Duration) -> Self {
        self.lookback = lookback;
        self
    }

    /// How many attempts, as the store counts them (the webhook path's included), a
    /// failed event older than the lookback gets while it holds a cursor
    /// ([`DEFAULT_ATTEMPTS_PAST_LOOKBACK`]; at least 1). Stripe no longer retries such
    /// an event, so without this its first failure in a pass would be its last try;
    /// past it, the cursor moves on ([`ReconcileReport::beyond_lookback`]), its failure
    /// stays in the store ([`failed_events`](crate::StoreAdmin::failed_events)), and
    /// one event that fails every time cannot make every later pass list all since.
    #[must_use]
    pub fn with_attempts_past_lookback(mut self, attempts: u32) -> Self {
        self.attempts_past_lookback = attempts.max(1);
        self
    }

    /// How far behind the present a cursor pass leaves its cursor ([`DEFAULT_SAFETY_LAG`],
    /// a minute): the next pass lists that span again, so an event Stripe lists a little
    /// after its `created` (its list is eventually consistent) is not skipped. The
    /// present is this reconciler's [clock](Self::with_clock), or the newest event
    /// listed if that is earlier (a clock running ahead of Stripe's cannot carry the
    /// cursor past an event; nor, in a backlog listed window by window, past the newest
    /// event listed when a window that ended after it was listed, since that window may
    /// have ended in Stripe's future). A longer lag relists more events each pass, each one
    /// answered by the store as a duplicate; zero trusts Stripe's list to be complete
    /// up to the second it was read.
    #[must_use]
    pub fn with_safety_lag(mut self, lag: Duration) -> Self {
        self.safety_lag = lag;
        self
    }

    /// Reads the present from `clock` (the system clock by default): the lookback's
    /// start and the cursor's [safety lag](Self::with_safety_lag) count from it. Tests
    /// and replays inject a [`FixedClock`](crate::FixedClock) or a
    /// [`ManualClock`](crate::ManualClock).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Runs up to `n` objects' events at once (1, the default: one event at a time).
    /// The events of one object (`data.object.id`; a thin event's related object) still
    /// run one after another, oldest first, so an ordering guard applies them in order;
    /// only different objects overlap. Worth it when the handler waits on the network:
    /// a pass after a long outage then takes a fraction of the time. `0` is taken as 1.
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The most events a pass holds in memory at once (at least 1): it lists the span
    /// since its cursor in windows of time, each listed whole and run oldest first, and
    /// halves a window that lists more than this (listing it again), down to one second,
    /// which it takes whole whatever it holds. A cursor pass moves its cursor after each
    /// window, so a pass stopped half-way resumes from there.
    #[must_use]
    pub fn with_max_buffered(mut self, n: usize) -> Self {
        self.max_buffered = n.max(1);
        self
    }

    /// Events per page (1 to 100).
    #[must_use]
    pub fn with_page_size(mut self, n: u8) -> Self {
        self.page_size = n.clamp(1, 100);
        self
    }

    /// The lookback's start, never before 1970 (a lookback of `Duration::MAX` is
    /// "everything": a time Stripe's lists take, not one 292 billion years back).
    fn since(&self) -> i64 {
        self.clock
            .now_unix()
            .saturating_sub(secs(self.lookback))
            .max(0)
    }

    /// A pass's frontier, starting now.
    fn frontier(&self) -> Frontier {
        Frontier::new(
            self.clock.now_unix(),
            secs(self.safety_lag),
            self.since(),
            self.attempts_past_lookback,
        )
    }

    /// The snapshot types to list: `None` to list them all.
    fn snapshot_types(&self) -> Option<Vec<String>> {
        let types = self.processor.listed_events().snapshot;
        (!types.iter().any(|t| t == "*") && types.len() <= MAX_TYPE_FILTERS).then_some(types)
    }

    /// The v1 list's filters but time: the types and the page size.
    fn v1_params(&self) -> ListEventsParams {
        let mut p = ListEventsParams::new().with_limit(self.page_size);
        if let Some(types) = self.snapshot_types() {
            p = p.with_types(types);
        }
        p
    }

    /// Lists the v1 events of `params` page after page, up to `cap` of them: all of
    /// them, or [`Listed::TooMany`] as soon as there are more (nothing kept).
    async fn list_v1(
        &self,
        mut params: ListEventsParams,
        cap: usize,
        report: &mut ReconcileReport,
    ) -> Result<Listed<Event>, ReconcileError> {
        let mut events = Vec::new();
        let mut unreadable = Vec::new();
        let context = self.v1_context();
        // Every page's last event: a page that leads back to one already listed (the
        // same page again, or a cycle) stops the pass rather than looping.
        let mut seen = std::collections::HashSet::new();
        loop {
            let page = self.client.list_events(&context, &params).await?;
            report.pages += 1;
            let next = page.next_params(&params);
            let stalled = page.has_more
                && next.as_ref().map_or(true, |n| {
                    n.starting_after
                        .as_ref()
                        .map_or(true, |after| !seen.insert(after.clone()))
                });
            if stalled {
                return Err(ReconcileError::ListingStalled { page: report.pages });
            }
            events.extend(page.data);
            unreadable.extend(page.unreadable);
            if events.len() + unreadable.len() > cap {
                let newest = newest(&events, |e| Some(e.created()), &unreadable);
                return Ok(Listed::TooMany { newest });
            }
            match next {
                Some(next) => params = next,
                None => break,
            }
        }
        // An event on two pages (the list moved under the walk) runs once: two copies in
        // two chains would find each other in progress and hold the cursor. Counted once.
        let mut ids = std::collections::HashSet::new();
        events.retain(|e| ids.insert(e.id().clone()));
        unreadable.retain(|u| ids.insert(u.id.clone()));
        report.listed += events.len() + unreadable.len();
        // Listed for a connected account (or in a context), an event that does not say
        // so is that account's (context's) all the same: keyed (and its object fetched)
        // as its webhook delivery is, as the thin list's are.
        if let Some(account) = context.stripe_account() {
            events = events.into_iter().map(|e| e.on_account(account)).collect();
        } else if let Some(ctx) = context.stripe_context() {
            events = events.into_iter().map(|e| e.in_context(ctx)).collect();
        }
        oldest_first(&mut events, |e| e.created());
        Ok(Listed::All(events, unreadable))
    }

    /// Lists the v1 events of `params` from `from` on, window after window of time
    /// ([`Windows`]), and runs each window's oldest first; after each, moves the cursor
    /// `key` (when the pass keeps one) to where the frontier allows.
    async fn run_v1(
        &self,
        params: ListEventsParams,
        from: i64,
        key: Option<&str>,
        report: &mut ReconcileReport,
        frontier: &mut Frontier,
    ) -> Result<(), ReconcileError> {
        let mut windows = Windows::new(from, frontier.now);
        loop {
            windows.at(self.clock.now_unix());
            let (start, end) = windows.next();
            let mut p = params.clone().with_created_gte(start);
            if let Some(end) = end {
                p = p.with_created_lt(end);
            }
            let (events, unreadable) = match self
                .list_v1(p, windows.cap(self.max_buffered), report)
                .await?
            {
                Listed::All(events, unreadable) => (events, unreadable),
                Listed::TooMany { newest } => {
                    frontier.listed(newest);
                    windows.narrow();
                    continue;
                }
            };
            frontier.listed(newest(&events, |e| Some(e.created()), &unreadable));
            if let Some(end) = end {
                frontier.closed(start, end);
            }
            let count = events.len() + unreadable.len();
            let ran = in_chains(
                events,
                self.concurrency,
                Event::ordering_key,
                &self.processor,
                run_events,
            )
            .await;
            for (event, o) in &ran {
                report.count(o);
                frontier.saw(event.created(), event.id(), o);
            }
            self.record_unreadable(unreadable, false, start, report, frontier)
                .await;
            if !windows.done(count, self.max_buffered) {
                return Ok(());
            }
            self.checkpoint(key, frontier).await?;
        }
    }

    /// Lists the v2 events of `params` page after page, up to `cap` of them, as
    /// [`list_v1`](Self::list_v1) does.
    async fn list_v2(
        &self,
        params: &ListV2EventsParams,
        cap: usize,
        report: &mut ReconcileReport,
    ) -> Result<Listed<EventNotification>, ReconcileError> {
        let mut notifications = Vec::new();
        let mut unreadable = Vec::new();
        let mut page_token = None;
        let context = self.v2_context();
        let mut seen = std::collections::HashSet::new();
        // Each event once (a page may repeat one of the page before), and how many pages
        // in a row listed none not listed before: only repeats, or nothing.
        let mut ids = std::collections::HashSet::new();
        let (mut repeated, mut empty) = (0, 0);
        loop {
            let page = self
                .client
                .list_v2_events(&context, params, page_token.as_ref())
                .await?;
            report.pages += 1;
            let before = ids.len();
            let listed_nothing = page.data.is_empty() && page.unreadable.is_empty();
            notifications.extend(page.data.into_iter().filter(|n| ids.insert(n.id.clone())));
            unreadable.extend(
                page.unreadable
                    .into_iter()
                    .filter(|u| ids.insert(u.id.clone())),
            );
            if ids.len() > before {
                (repeated, empty) = (0, 0);
            } else if listed_nothing {
                empty += 1;
            } else {
                repeated += 1;
            }
            if notifications.len() + unreadable.len() > cap {
                let newest = newest(&notifications, EventNotification::created_unix, &unreadable);
                return Ok(Listed::TooMany { newest });
            }
            // An empty page may still have a next one. A token already used (the same
            // page again, or a cycle) stops the pass rather than looping, and so do
            // pages that list nothing new under ever new tokens.
            match page.next_page {
                Some(next)
                    if !seen.insert(next.clone())
                        || repeated >= MAX_REPEATED_PAGES
                        || empty >= MAX_EMPTY_PAGES =>
                {
                    return Err(ReconcileError::ListingStalled { page: report.pages });
                }
                Some(next) => page_token = Some(next),
                None => break,
            }
        }
        report.listed += notifications.len() + unreadable.len();
        // Listed in a context, an event that does not name one is that context's all the
        // same: keyed (and its object fetched) as its webhook delivery is.
        if let Some(ctx) = context.stripe_context() {
            for n in notifications.iter_mut().filter(|n| n.context.is_none()) {
                n.context = Some(ctx.to_owned());
            }
        }
        Ok(Listed::All(notifications, unreadable))
    }

    /// Records each listed event the crate could not read where the processor records
    /// failures ([`Processor`]'s store, or on an ack-fast processor its queue, whose
    /// worker buries it), so that operators see it and the cursor moves past it: one the
    /// processor does not take is skipped, one completed or queued already is a
    /// duplicate, and one held elsewhere, or that could not be recorded, holds the cursor.
    /// `start` stands for a `created` that could not be read.
    async fn record_unreadable(
        &self,
        unreadable: Vec<UnreadableEvent>,
        thin: bool,
        start: i64,
        report: &mut ReconcileReport,
        frontier: &mut Frontier,
    ) {
        for u in unreadable {
            let o = self.processor.record_unreadable(&u, thin).await;
            let held = match o.kind() {
                OutcomeKind::Ignored => {
                    report.skipped += 1;
                    false
                }
                OutcomeKind::Duplicate => {
                    report.duplicates += 1;
                    false
                }
                OutcomeKind::Queued => {
                    report.unreadable += 1;
                    false
                }
                OutcomeKind::HandlerFailed(_) if o.failure_recorded => {
                    report.unreadable += 1;
                    false
                }
                OutcomeKind::InProgress { .. } => {
                    report.in_progress += 1;
                    true
                }
                _ => {
                    report.failed += 1;
                    true
                }
            };
            frontier.saw_unreadable(u.created.unwrap_or(start), &u.id, held);
        }
    }

    /// Moves the cursor `key` (when the pass keeps one) as far as the frontier allows
    /// after a window: the windows after it hold only newer events, so a pass stopped
    /// later resumes from here.
    async fn checkpoint(
        &self,
        key: Option<&str>,
        frontier: &Frontier,
    ) -> Result<(), ReconcileError> {
        if let (Some(key), Some(to)) = (key, frontier.target()) {
            self.cursors.advance_watermark(key, &to).await?;
        }
        Ok(())
    }

    /// Runs the snapshot events Stripe could not deliver (`delivery_success=false`) in
    /// the lookback. It keeps no cursor: an event stays listed until Stripe delivers
    /// it, and each later pass finds it completed.
    ///
    /// It rescues events while Stripe still retries them, on a schedule shorter than
    /// the lookback (3 days by default, Stripe's retry span). It does not see further
    /// back: after an outage longer than the lookback (this service down, so no pass
    /// ran), [`since_cursor`](Self::since_cursor), whose cursor remembers where it
    /// stopped, runs what was missed, or run one pass of this with a longer
    /// [`with_lookback`](Self::with_lookback) (Stripe lists events for 30 days). It
    /// lists only events whose delivery to some endpoint was tried and failed: an
    /// endpoint Stripe disabled is sent nothing, so its missed events are found by
    /// `since_cursor` only. (An account with another endpoint that always fails has
    /// every event listed here: keep the lookback short there, or use `since_cursor`.)
    ///
    /// # Errors
    ///
    /// [`ReconcileError::Client`] when listing fails, and
    /// [`ReconcileError::ListingStalled`] when a page says more follow but gives no way to
    /// them. Each window of time is listed before any of it runs: the events of the
    /// windows before the failing one have run.
    pub async fn undelivered(&self) -> Result<ReconcileReport, ReconcileError> {
        let mut report = ReconcileReport::default();
        if self.processor.enabled_events().snapshot.is_empty() {
            return Ok(report);
        }
        let from = self.since();
        let params = self.v1_params().with_delivery_success(false);
        self.run_v1(params, from, None, &mut report, &mut self.frontier())
            .await?;
        Ok(report)
    }

    /// Runs every snapshot event created since the cursor (on the first pass, since the
    /// lookback), then moves the cursor forward: to the
    /// [safety lag](Self::with_safety_lag) (a minute) before the newest event seen or the
    /// clock's present, whichever is earlier (an event Stripe lists a little late still
    /// falls in the next pass, even if this machine's clock runs ahead of Stripe's), or,
    /// when an event failed or was running elsewhere, to that event's second, so the next
    /// pass lists it again. An event older than the lookback holds the cursor until the
    /// store counts [`with_attempts_past_lookback`](Self::with_attempts_past_lookback)
    /// attempts of it (webhook deliveries included), then no longer ([`ReconcileReport::beyond_lookback`]): the store keeps its failure. A backlog of
    /// more than [`with_max_buffered`](Self::with_max_buffered) events goes window by
    /// window of time, the cursor moving after each; and not past the newest event
    /// listed when a window that ended after it was listed (it may have ended in Stripe's
    /// future, if this machine's clock runs ahead), so the next pass may list again the
    /// events created while this one ran.
    ///
    /// # Errors
    ///
    /// [`ReconcileError`] when listing, reading the cursor or moving it fails; the cursor
    /// then stays where the last window done left it (or where this pass moved it, if
    /// the store did so before its answer was lost).
    pub async fn since_cursor(&self) -> Result<ReconcileReport, ReconcileError> {
        let mut report = ReconcileReport::default();
        if self.processor.enabled_events().snapshot.is_empty() {
            return Ok(report);
        }
        let [key, _] = self.cursor_keys();
        let from = self.start(&key, &mut report).await?;
        let mut frontier = self.frontier();
        self.run_v1(
            self.v1_params(),
            from,
            Some(&key),
            &mut report,
            &mut frontier,
        )
        .await?;
        self.advance(&key, &frontier, &mut report).await?;
        Ok(report)
    }

    /// As [`since_cursor`](Self::since_cursor), from the v2 events list
    /// (`GET /v2/core/events`), for a processor with a thin handler; each notification
    /// runs through [`Processor::process_notification`], so it shares the dedupe key
    /// with its snapshot twin.
    ///
    /// # Errors
    ///
    /// As [`since_cursor`](Self::since_cursor).
    pub async fn thin_since_cursor(&self) -> Result<ReconcileReport, ReconcileError> {
        let mut report = ReconcileReport::default();
        let types = self.processor.listed_events().thin;
        if types.is_empty() {
            return Ok(report);
        }
        let [_, key] = self.cursor_keys();
        let from = self.start(&key, &mut report).await?;
        let mut base = ListV2EventsParams::new().with_limit(self.page_size);
        if !types.iter().any(|t| t == "*") && types.len() <= MAX_TYPE_FILTERS {
            base = base.with_types(types);
        }
        // Its clock starts before the listing, as the v1 pass's does: the cursor stays
        // the safety lag behind the listing's start however long the listing takes.
        let mut frontier = self.frontier();
        let mut windows = Windows::new(from, frontier.now);
        loop {
            windows.at(self.clock.now_unix());
            let (start, end) = windows.next();
            let mut params = base.clone().with_created_gte(rfc3339_from(start));
            if let Some(end) = end {
                params = params.with_created_lt(rfc3339_from(end));
            }
            let cap = windows.cap(self.max_buffered);
            let (mut notifications, unreadable) =
                match self.list_v2(&params, cap, &mut report).await? {
                    Listed::All(n, unreadable) => (n, unreadable),
                    Listed::TooMany { newest } => {
                        frontier.listed(newest);
                        windows.narrow();
                        continue;
                    }
                };
            frontier.listed(newest(
                &notifications,
                EventNotification::created_unix,
                &unreadable,
            ));
            if let Some(end) = end {
                frontier.closed(start, end);
            }
            oldest_first(&mut notifications, |n| n.created_unix().unwrap_or(start));
            let count = notifications.len() + unreadable.len();
            let ran = in_chains(
                notifications,
                self.concurrency,
                EventNotification::ordering_key,
                &self.processor,
                run_notifications,
            )
            .await;
            for (n, o) in &ran {
                report.count(o);
                frontier.saw(n.created_unix().unwrap_or(start), &n.id, o);
            }
            self.record_unreadable(unreadable, true, start, &mut report, &mut frontier)
                .await;
            if !windows.done(count, self.max_buffered) {
                break;
            }
            self.checkpoint(Some(&key), &frontier).await?;
        }
        self.advance(&key, &frontier, &mut report).await?;
        Ok(report)
    }

    async fn advance(
        &self,
        key: &str,
        frontier: &Frontier,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        report.beyond_lookback = frontier.beyond_lookback;
        let target = frontier.target();
        if let Some(to) = &target {
            self.cursors.advance_watermark(key, to).await?;
        }
        // When this pass began listing (all it lists is from its cursor up to then). Only
        // a warning reads it: a failed write does not fail the pass (the next pass may
        // warn once more).
        let listed = Watermark::new(frontier.now, EventId::new(OPEN_EVENT));
        let _ = self
            .cursors
            .advance_watermark(&listed_key(key), &listed)
            .await;
        // The pass is done and its cursor moved: a failed read of where the cursor stands
        // now (another replica's pass may have moved it further) does not undo that, so
        // the report names this pass's target instead of failing the pass.
        report.cursor = match self.cursors.watermark(key).await {
            Ok(cursor) => cursor,
            Err(_) => target,
        };
        Ok(())
    }
}

/// Where a cursor's passes record when the last of them listed (see
/// [`ReconcileReport::unlisted_before`]).
fn listed_key(cursor_key: &str) -> String {
    format!("{cursor_key}:listed")
}

#[allow(unused_variables)]
fn note_cursor_beyond_retention(key: &str, cursor: i64, kept_from: i64) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        cursor_key = key,
        cursor,
        kept_from,
        "reconcile: the cursor is older than the 30 days Stripe lists events; the events \
         between them cannot be listed (resync the objects they changed from the API)"
    );
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn frontier(now: i64) -> Frontier {
        Frontier::new(now, SAFETY_LAG, 0, 1)
    }

    /// A window that ended past every event listed so far caps the cursor there (or at
    /// its start, when nothing was listed): its end may have been in Stripe's future.
    #[test]
    fn a_window_ending_past_the_events_listed_caps_the_cursor() {
        let done = Outcome::new(OutcomeKind::Processed, Instant::now());
        let mut f = frontier(10_000);
        f.listed(Some(5_000));
        f.closed(1_000, 5_000);
        assert_eq!(
            f.ceiling, None,
            "ends at the newest event listed: known complete"
        );
        f.listed(Some(5_100));
        f.closed(5_000, 9_000);
        assert_eq!(f.ceiling, Some(5_100));
        f.closed(9_000, 9_500);
        assert_eq!(f.ceiling, Some(5_100), "the lowest cap stays");
        f.saw(9_900, &EventId::new("evt_new"), &done);
        assert_eq!(f.target().map(|w| w.created), Some(5_100 - SAFETY_LAG));

        let mut empty = frontier(10_000);
        empty.closed(2_000, 3_000);
        assert_eq!(empty.ceiling, Some(2_000));
    }

    const SAFETY_LAG: i64 = 60;

    /// `f` saw a delivery of `id` that claimed the event (its first attempt).
    /// A failed handler's failure is recorded (the store confirmed its release).
    fn saw(f: &mut Frontier, created: i64, id: &str, kind: OutcomeKind) {
        let mut o = Outcome::new(kind, Instant::now());
        o.attempt = Some(1);
        o.failure_recorded = matches!(o.kind, OutcomeKind::HandlerFailed(_));
        f.saw(created, &EventId::new(id), &o);
    }

    #[test]
    fn windows_halve_down_to_a_second_and_widen_when_sparse() {
        // The whole span first, open.
        let mut w = Windows::new(0, 100);
        assert_eq!(w.next(), (0, None));
        assert_eq!(w.cap(10), 10);
        // Too many: halved, as if the open window ended a second past the present.
        w.narrow();
        assert_eq!(w.next(), (0, Some(50)));
        w.narrow();
        assert_eq!(w.next(), (0, Some(25)));
        // Done with few events: the next window is twice as wide.
        assert!(w.done(1, 10));
        assert_eq!(w.next(), (25, Some(75)));
        // Done with many: as wide; past the present, it is the open last one.
        assert!(w.done(9, 10));
        assert_eq!(w.next(), (75, None));
        assert!(!w.done(9, 10));

        // A window of one second cannot be halved: it is listed whole.
        let mut w = Windows::new(10, 100);
        w.width = Some(1);
        assert_eq!(w.next(), (10, Some(11)));
        assert!(!w.halvable());
        assert_eq!(w.cap(10), usize::MAX);
        // Nor can the open window from the present on (a cursor at or past it).
        for start in [100, 150] {
            let w = Windows::new(start, 100);
            assert_eq!(w.next(), (start, None));
            assert_eq!(w.cap(10), usize::MAX);
        }
        // The open window a second before the present halves to that second.
        let mut w = Windows::new(99, 100);
        assert!(w.halvable());
        w.narrow();
        assert_eq!(w.next(), (99, Some(100)));
        assert_eq!(w.cap(10), usize::MAX);
        assert!(w.done(20, 10));
        assert_eq!(w.next(), (100, None));
        // The open window from the present on can be halved once the clock has moved
        // (events created while the pass ran); the present never goes back.
        let mut w = Windows::new(100, 100);
        assert_eq!(w.cap(10), usize::MAX);
        w.at(160);
        w.at(150);
        assert_eq!(w.cap(10), 10);
        w.narrow();
        assert_eq!(w.next(), (100, Some(130)));

        // A cap under 4 still widens after an empty window.
        let mut w = Windows::new(0, 1000);
        w.width = Some(1);
        assert!(w.done(0, 3));
        assert_eq!(w.next(), (1, Some(3)));
        assert!(w.done(1, 3));
        assert_eq!(w.next(), (3, Some(5)));
    }

    #[test]
    fn durations_count_in_whole_seconds_rounded_up() {
        assert_eq!(secs(Duration::from_millis(900)), 1);
        assert_eq!(secs(Duration::from_secs(60)), 60);
        assert_eq!(secs(Duration::ZERO), 0);
        assert_eq!(secs(Duration::MAX), i64::MAX);
    }

    #[test]
    fn an_open_event_keeps_the_cursor_a_minute_back_too() {
        // A recent event failed: the cursor stays a minute back (before the newest event
        // listed), not at its second, so an older event Stripe lists late still falls in
        // the next pass.
        let mut f = frontier(1000);
        saw(
            &mut f,
            995,
            "evt_open",
            OutcomeKind::InProgress {
                retry_after: Duration::from_secs(1),
            },
        );
        saw(&mut f, 999, "evt_done", OutcomeKind::Processed);
        assert_eq!(f.target().map(|w| w.created), Some(999 - SAFETY_LAG));
        // An older open event: its own second.
        saw(
            &mut f,
            500,
            "evt_old",
            OutcomeKind::InProgress {
                retry_after: Duration::from_secs(1),
            },
        );
        assert_eq!(f.target().map(|w| w.created), Some(500));
    }

    #[test]
    fn a_lost_lease_holds_the_cursor() {
        // Another delivery took the event over while it ran; if that one fails, the next
        // pass must still list it.
        let mut f = frontier(10_000);
        saw(&mut f, 100, "evt_taken", OutcomeKind::LeaseLost);
        saw(&mut f, 200, "evt_done", OutcomeKind::Processed);
        assert_eq!(f.target().map(|w| w.created), Some(100));
    }

    #[test]
    fn a_clock_ahead_of_stripes_does_not_carry_the_cursor_to_the_newest_event() {
        // This machine's clock is an hour ahead: the newest event listed, a second
        // old by Stripe's clock, looks an hour old here. The cursor still stays a minute
        // behind it, so an event Stripe lists a little late falls in the next pass.
        let mut f = frontier(10_000 + 3_600);
        saw(&mut f, 9_999, "evt_newest", OutcomeKind::Processed);
        assert_eq!(f.target().map(|w| w.created), Some(9_999 - SAFETY_LAG));
        // No event at all: the cursor stays.
        assert_eq!(frontier(10_000).target(), None);
    }

    #[test]
    fn an_event_older_than_the_lookback_holds_the_cursor_for_its_attempts() {
        let mut f = frontier(100_000);
        (f.hold_from, f.attempts_past) = (100_000 - 3_600, 3);
        let failed = |f: &mut Frontier, attempt| {
            let kind = OutcomeKind::HandlerFailed(HandlerError::new("database busy"));
            let mut o = Outcome::new(kind, Instant::now());
            (o.attempt, o.failure_recorded) = (Some(attempt), true);
            f.saw(1_000, &EventId::new("evt_old"), &o);
        };
        failed(&mut f, 2);
        saw(&mut f, 99_000, "evt_done", OutcomeKind::Processed);
        assert_eq!(f.beyond_lookback, 0);
        assert_eq!(f.target().map(|w| w.created), Some(1_000));
        let mut f = frontier(100_000);
        (f.hold_from, f.attempts_past) = (100_000 - 3_600, 3);
        failed(&mut f, 3);
        saw(&mut f, 99_000, "evt_done", OutcomeKind::Processed);
        assert_eq!(f.beyond_lookback, 1);
        assert_eq!(f.target().map(|w| w.created), Some(99_000 - SAFETY_LAG));
    }

    #[test]
    fn an_event_older_than_the_lookback_no_longer_holds_the_cursor() {
        // An event whose handler fails every time, from before the lookback: the store
        // keeps its failure, it is counted, and the cursor moves past it instead of every
        // later pass listing all since.
        let failed = || OutcomeKind::HandlerFailed(HandlerError::new("downstream down"));
        let mut f = frontier(100_000);
        f.hold_from = 100_000 - 3_600;
        saw(&mut f, 1_000, "evt_always_fails", failed());
        saw(&mut f, 99_000, "evt_done", OutcomeKind::Processed);
        assert_eq!(f.beyond_lookback, 1);
        assert_eq!(f.target().map(|w| w.created), Some(99_000 - SAFETY_LAG));
        // One within the lookback still holds it.
        saw(&mut f, 97_000, "evt_failed", failed());
        assert_eq!(f.beyond_lookback, 1);
        assert_eq!(f.target().map(|w| w.created), Some(97_000));
        // So does an old failure that nothing recorded (a check's panic whose record
        // could not be written).
        let before = f.target();
        f.saw(
            500,
            &EventId::new("evt_unclaimed"),
            &Outcome::new(
                OutcomeKind::HandlerFailed(HandlerError::Panicked("in handles_event".into())),
                Instant::now(),
            ),
        );
        assert_eq!(f.beyond_lookback, 1);
        assert_eq!(f.target().map(|w| w.created), Some(500), "{before:?}");
        // And one whose failure the store did not confirm (its release failed).
        let mut f = frontier(100_000);
        f.hold_from = 100_000 - 3_600;
        let mut o = Outcome::new(failed(), Instant::now());
        o.attempt = Some(1);
        f.saw(800, &EventId::new("evt_release_failed"), &o);
        saw(&mut f, 99_000, "evt_done", OutcomeKind::Processed);
        assert_eq!(f.beyond_lookback, 0);
        assert_eq!(f.target().map(|w| w.created), Some(800));
        // So does an old one that may have left no record: held elsewhere, a lost
        // lease, or a store that could not answer.
        for (i, kind) in [
            OutcomeKind::InProgress {
                retry_after: Duration::from_secs(1),
            },
            OutcomeKind::LeaseLost,
            OutcomeKind::HandlerFailed(HandlerError::LeaseLost),
            OutcomeKind::StoreUnavailable(crate::idempotency::StoreError::unavailable("down")),
        ]
        .into_iter()
        .enumerate()
        {
            let mut f = frontier(100_000);
            f.hold_from = 100_000 - 3_600;
            let created = 1_000 + i64::try_from(i).unwrap_or(0);
            saw(&mut f, created, "evt_unrecorded", kind);
            saw(&mut f, 99_000, "evt_done", OutcomeKind::Processed);
            assert_eq!(f.beyond_lookback, 0);
            assert_eq!(f.target().map(|w| w.created), Some(created));
        }
    }

    #[test]
    fn account_ids_are_told_from_other_contexts() {
        assert!(is_account_id("acct_1Abc"));
        for not in ["acct_", "acct_1/acct_2", "org_1", "", "acct_1 x"] {
            assert!(!is_account_id(not), "{not:?}");
        }
    }
}
