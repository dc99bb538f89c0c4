//! The processor: verify → parse → claim → handle → complete or release.
//!
//! - `outcome`: what happened, and the one table of statuses and names;
//! - `dispatch`: claim, handle, complete (and the crate's inbox dispatchers' interface);
//! - `lease`: lease renewal, stopping a handler whose lease is lost, and the drop guard;
//! - `trace`: the span and log line of a delivery (feature `tracing`);
//! - `drain`: the count of deliveries the framework routes run detached, for
//!   [`Processor::drain`] (feature `tokio`).

mod dispatch;
// For the framework adapters, which say why a delivery's task panicked.
#[cfg(all(feature = "tracing", any(feature = "axum", feature = "actix-web")))]
pub(crate) use dispatch::panic_message;
#[cfg(feature = "tokio")]
mod drain;
mod lease;
mod outcome;
#[cfg(feature = "tracing")]
mod trace;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::{Event, EventHead, EventNotification, EventType, ParseError, ThinEventType};
use crate::handler::{EventHandler, ThinEventHandler};
use crate::idempotency::IdempotencyStore;
use crate::signature::{VerifiedPayload, Verifier};

use crate::idempotency::OrderingStore;
pub(crate) use dispatch::check_caught;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use dispatch::check_panicked;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use dispatch::fetch_within;
pub(crate) use dispatch::OrderingGuard;
use dispatch::{claim_and_run, StoreDispatcher};
#[cfg_attr(not(feature = "tokio"), allow(unused_imports))]
pub(crate) use dispatch::{handler_future, run_handler, store_call};
pub(crate) use dispatch::{DispatchSettings, Dispatched, Dispatcher};
#[cfg(any(feature = "axum", feature = "actix-web"))]
pub(crate) use outcome::Answer;
pub use outcome::{Outcome, OutcomeKind};

/// The largest body the processor accepts by default: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// How long a handler may run by default before it is dropped and the delivery fails.
pub const DEFAULT_HANDLER_DEADLINE: Duration = Duration::from_secs(10);
/// How long a claim is leased by default. It is kept at least twice the deadline (up
/// to a day).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The longest lease the processor takes: longer ones (or a deadline that would need
/// one) are cut to it, so lease arithmetic stays within every store's range.
const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);
/// The shortest claim lease: a lease that ends as it starts would let every concurrent
/// delivery claim the event.
const MIN_LEASE: Duration = Duration::from_millis(100);

/// The longest store timeout a [`Processor`] or a [`Worker`](crate::queue::Worker) takes:
/// longer ones are taken as this.
pub const MAX_STORE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The least store timeout the processor and the workers take: a zero one would time
/// every store call out before it was sent.
pub(crate) const MIN_STORE_TIMEOUT: Duration = Duration::from_millis(10);
/// The least handler deadline the processor and the workers take: a zero one would cut
/// every handler that awaits anything, and fail its event at every retry.
pub(crate) const MIN_HANDLER_DEADLINE: Duration = Duration::from_millis(10);
/// How long a store call may take by default before the delivery is answered 503.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the adapters wait by default for a request's whole body before answering
/// 408: Stripe sends its bodies at once, so only a slow or hostile client needs longer.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How the ordering guard ([`Processor::ordered`]) settles a tie: an event of the same
/// object and the same `created` second as the last one applied, but another id. Within
/// one second Stripe's order is unknown, so the event's snapshot may or may not be the
/// newer state.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum TiePolicy {
    /// Run it (the default), and it becomes the watermark: both events of the second run,
    /// in the order they arrive. (Events that must each run whatever their age, a
    /// payment to record or a receipt to send, are better kept outside the guard
    /// altogether: [`EventHandler::is_ordered`], [`EventRouter::unordered`](crate::EventRouter::unordered).)
    #[default]
    Run,
    /// Fetch the object from the API and run the handler on the event rebuilt with that
    /// object ([`Event::refetched`](crate::Event::refetched)), so a handler that copies
    /// state copies the current one whatever the order. A fetch that may succeed later
    /// (network, 429, 5xx, deadline, a key without access, a key of the other mode than
    /// the event: [`ClientError::WrongMode`](crate::client::ClientError::WrongMode)) is
    /// a handler failure (500, and Stripe retries), never a fall back to the snapshot.
    /// An object the API cannot return for good (deleted: a 404 `resource_missing`, or a
    /// deleted customer's stub; a type without an API path; a connected account's test
    /// event with a live key, whose objects the key cannot reach) leaves the snapshot as
    /// all there is: the event runs on it, with a warning in the log (feature
    /// `tracing`), rather than failing every retry for three days.
    Fetch(Arc<dyn crate::client::StripeClient>),
    /// Treat it as stale: after one event of a second, another of the same second is not
    /// applied. For handlers that copy state and can live with keeping the first of two
    /// same-second states.
    Stale,
}

impl std::fmt::Debug for TiePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TiePolicy::Run => "Run",
            TiePolicy::Fetch(_) => "Fetch(..)",
            TiePolicy::Stale => "Stale",
        })
    }
}

/// The event types a processor's Stripe destinations need: see
/// [`Processor::enabled_events`]. Two are equal when their lists are.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct EnabledEvents {
    /// For the snapshot destination (webhook endpoint).
    pub snapshot: Vec<String>,
    /// For the thin event destination.
    pub thin: Vec<String>,
    /// Per family (snapshot, thin): whether the handler takes types this release does
    /// not know under a known type's stem (a prefix route, `invoice.*`). The lists above
    /// name the types it can (the known ones, and those a handler names in
    /// [`unknown_types`](crate::EventHandler::unknown_types)), as a destination's must; a
    /// [`Reconciler`](crate::reconcile::Reconciler) lists every type for such a family,
    /// so that the types Stripe adds later are reconciled too.
    #[serde(skip)]
    pub(crate) takes_new_types: [bool; 2],
    /// The worker's own answer for a thin event, where the lists came from a worker
    /// ([`Worker::enabled_events`](crate::queue::Worker::enabled_events)): an ack-fast
    /// processor asks it of a thin event of a type this release does not know that it
    /// would queue under its snapshot twin's key. `None` when built by hand.
    #[serde(skip)]
    pub(crate) thin_handles: Option<ThinHandles>,
}

impl PartialEq for EnabledEvents {
    fn eq(&self, other: &Self) -> bool {
        self.snapshot == other.snapshot
            && self.thin == other.thin
            && self.takes_new_types == other.takes_new_types
    }
}

impl Eq for EnabledEvents {}

/// A worker's thin handler's [`handles_notification`](ThinEventHandler::handles_notification),
/// kept by [`EnabledEvents`].
#[derive(Clone)]
pub(crate) struct ThinHandles(pub(crate) Arc<dyn Fn(&EventNotification) -> bool + Send + Sync>);

impl std::fmt::Debug for ThinHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThinHandles")
    }
}

impl EnabledEvents {
    /// Every type of both families: `["*"]` each.
    pub fn every_type() -> Self {
        Self {
            snapshot: vec!["*".to_owned()],
            thin: vec!["*".to_owned()],
            takes_new_types: [true; 2],
            thin_handles: None,
        }
    }

    /// The types a snapshot handler and a thin handler take, by their `handles` and the
    /// `unknown_types` they name (snapshot, thin): `["*"]` for a handler that takes any
    /// type this release does not know, or names `*`; empty for a family without a
    /// handler.
    pub(crate) fn of(
        snapshot: Option<impl Fn(&EventType) -> bool>,
        thin: Option<impl Fn(&ThinEventType) -> bool>,
        unknown: [Vec<String>; 2],
    ) -> Self {
        let takes_new_types = [
            snapshot.as_ref().is_some_and(|h| {
                takes_new_types_of_a_family(
                    h,
                    EventType::Unknown,
                    EventType::ALL,
                    EventType::as_str,
                )
            }),
            thin.as_ref().is_some_and(|h| {
                let (all, name) = (ThinEventType::ALL, ThinEventType::as_str);
                takes_new_types_of_a_family(h, ThinEventType::Unknown, all, name)
            }),
        ];
        let [named_snapshot, named_thin] = unknown;
        Self {
            takes_new_types,
            snapshot: taken(
                snapshot,
                EventType::Unknown,
                EventType::ALL,
                EventType::as_str,
                named_snapshot,
            ),
            thin: taken(
                thin,
                ThinEventType::Unknown,
                ThinEventType::ALL,
                ThinEventType::as_str,
                named_thin,
            ),
            thin_handles: None,
        }
    }
}

/// One family's list: `["*"]` when `handles` takes a type this release does not know
/// (built by `unknown`), or the handler names `*` (`named`, its `unknown_types`), else
/// the known types it takes and the unknown ones it names; empty without a handler.
fn taken<T>(
    handles: Option<impl Fn(&T) -> bool>,
    unknown: fn(String) -> T,
    all: &[T],
    name: fn(&T) -> &str,
    named: Vec<String>,
) -> Vec<String> {
    const PROBE: &str = "stripe_webhooks.unknown_type_probe";
    match handles {
        Some(h) if h(&unknown(PROBE.to_owned())) || named.iter().any(|t| t == "*") => {
            vec!["*".to_owned()]
        }
        Some(h) => {
            let mut list: Vec<String> = all
                .iter()
                .filter(|t| h(t))
                .map(|t| name(t).to_owned())
                .collect();
            for t in named {
                if !list.contains(&t) {
                    list.push(t);
                }
            }
            list
        }
        None => Vec::new(),
    }
}

/// Whether `handles` takes a type this release does not know under a known type's stem
/// (a prefix route such as `invoice.*`, or a `starts_with` check): probed once per stem.
fn takes_new_types_of_a_family<T>(
    handles: impl Fn(&T) -> bool,
    unknown: fn(String) -> T,
    all: &[T],
    name: fn(&T) -> &str,
) -> bool {
    let mut stems = std::collections::BTreeSet::new();
    for t in all {
        let n = name(t);
        for (i, c) in n.char_indices() {
            if c == '.' || c == '[' {
                stems.insert(&n[..i]);
            }
        }
    }
    stems.into_iter().any(|stem| {
        handles(&unknown(format!(
            "{stem}.stripe_webhooks_unknown_type_probe"
        )))
    })
}

/// The types an ack-fast processor queues, per family.
#[derive(Debug, Clone)]
struct QueuedTypes {
    snapshot: TypeSet,
    thin: TypeSet,
}

/// A family's types from an `enabled_events` list: `*` takes every one.
#[derive(Debug, Clone)]
struct TypeSet {
    all: bool,
    names: std::collections::HashSet<String>,
}

impl TypeSet {
    fn new(list: &[String]) -> Self {
        Self {
            all: list.iter().any(|t| t == "*"),
            names: list.iter().cloned().collect(),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.all || self.names.contains(name)
    }

    /// Whether it names `name` itself (not through `*`).
    fn names(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// A SQL store's inbox mode, for [`Processor::with_inbox`]: `SqliteInbox` and
/// `PostgresInbox` (from `SqliteStore::inbox` and `PostgresStore::inbox`). The trait is
/// sealed: only this crate's inbox types implement it.
pub trait Inbox: sealed::Sealed {}

pub(crate) mod sealed {
    /// Seals [`Inbox`](super::Inbox): its implementations are the crate's dispatchers.
    /// The bound on a crate-private trait is the point: nobody outside can implement it.
    #[allow(private_bounds)]
    pub trait Sealed: super::Dispatcher {}
}

/// Ties a [`Verifier`], an [`IdempotencyStore`] and an [`EventHandler`] together. Build it
/// once and share it (`Arc<Processor>`); frameworks only translate its [`Outcome`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use stripe_webhooks::{testing, EventRouter, MemoryStore, Processor, SigningSecret, Verifier};
///
/// let secret = "whsec_test_secret";
/// let processor = Processor::new(
///     Verifier::new(SigningSecret::new(secret)?),
///     MemoryStore::new(),
///     EventRouter::new().fallback(|_event| Box::pin(async { Ok(()) })),
/// );
///
/// let body = testing::event_json("evt_1", "customer.created", r#"{"id":"cus_1","object":"customer"}"#);
/// let header = testing::sign(body.as_bytes(), secret, testing::now());
/// let outcome = processor.process(Some(&header), body.as_bytes()).await;
/// assert_eq!(outcome.status(), 200);
/// // The same event again is a duplicate: 200, and the handler does not run.
/// let again = processor.process(Some(&header), body.as_bytes()).await;
/// assert_eq!(again.kind().name(), "duplicate");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Processor {
    verifier: Verifier,
    /// The snapshot side; `None` on a thin-only processor.
    dispatcher: Option<Arc<dyn Dispatcher>>,
    /// The thin side, on the snapshot side's store.
    thin: Option<Arc<dyn ThinEventHandler>>,
    store: Arc<dyn IdempotencyStore>,
    /// Claim thin events under their snapshot twin's id.
    dedupe_on_snapshot: bool,
    /// Only events of this mode are handled (`None`: both).
    livemode: Option<bool>,
    /// The ordering guard of [`Processor::ordered`], which thin twins go through too.
    ordering: Option<Arc<OrderingGuard>>,
    /// Ack-fast mode ([`Processor::queued`]): verified events go to this queue.
    queue: Option<Arc<dyn crate::queue::Queue>>,
    /// What an ack-fast processor reports as its enabled events, and queues.
    queued_events: Option<(EnabledEvents, QueuedTypes)>,
    max_body: usize,
    body_timeout: Duration,
    settings: DispatchSettings,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("verifier", &self.verifier)
            .field("snapshot", &self.dispatcher.is_some())
            .field("thin", &self.thin.is_some())
            .field("dedupe_on_snapshot", &self.dedupe_on_snapshot)
            .field("livemode", &self.livemode)
            .field("queued", &self.queue.is_some())
            .field("max_body", &self.max_body)
            .field("body_timeout", &self.body_timeout)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// `store` as the processor's store and the ordering guard over it.
fn guarded<S: OrderingStore>(
    store: S,
    ties: TiePolicy,
) -> (Arc<dyn IdempotencyStore>, Arc<OrderingGuard>) {
    let store = Arc::new(store);
    let guard = Arc::new(OrderingGuard {
        store: Arc::clone(&store) as Arc<dyn OrderingStore>,
        ties,
    });
    (store, guard)
}

impl Processor {
    /// A processor with the default body limit (1 MiB), handler deadline (10 s), lease
    /// (30 s) and store timeout (2 s).
    ///
    /// It handles snapshot events (`"object": "event"`). A thin event sent to it is
    /// answered 200 and dropped, unless [`with_thin_handler`](Self::with_thin_handler)
    /// gave it a thin handler too.
    pub fn new(
        verifier: Verifier,
        store: impl IdempotencyStore,
        handler: impl EventHandler,
    ) -> Self {
        let store: Arc<dyn IdempotencyStore> = Arc::new(store);
        let dispatcher = StoreDispatcher::new(Arc::clone(&store), handler, None);
        Self::dispatching(verifier, Some(Arc::new(dispatcher)), store)
    }

    /// A processor with the **ordering guard**: events about one object
    /// (`data.object.id`, within its connected account for a Connect event: `acct_…/id`,
    /// or `acct_…/test/id` for a test-mode one, since a live Connect endpoint also
    /// receives its accounts' test-mode events, with the same account and capability
    /// ids; the platform's own objects by id alone, so a processor that takes both modes
    /// orders ids you choose, such as a product `gold`, across them: give each mode its
    /// own store and [`with_livemode`](Self::with_livemode); an id you chose for a
    /// product or a plan, and a coupon's, is keyed within its type, `product/gold`,
    /// `price/gold` or `coupon/gold`, since all may be `gold`) run one at a time, and an
    /// event older than the last one applied to its object (its
    /// [`Watermark`](crate::Watermark), kept in the store and moved in the same atomic
    /// step as the completion) is answered 200 without running
    /// [`handle`](EventHandler::handle): the processor calls
    /// [`handle_stale`](EventHandler::handle_stale) instead (a no-op unless you
    /// override it) and reports [`OutcomeKind::Stale`]. A delivery that finds its object
    /// locked by another is answered 409, like a duplicate in flight, and Stripe retries
    /// it.
    ///
    /// Staleness is judged when an event runs, not when it was first delivered: an event
    /// whose handler failed is stale on its retry if a newer event of its object was
    /// applied meanwhile, and reaches [`handle_stale`](EventHandler::handle_stale), not
    /// `handle`. Guard only the types whose newest state is what matters (`*.updated`),
    /// and keep the types whose every event must run (a payment to record, a receipt to
    /// send) outside the guard: [`EventHandler::is_ordered`] answers `false` for them
    /// ([`EventRouter::unordered`](crate::EventRouter::unordered) on a router), and
    /// they run as an unguarded processor runs them. Otherwise such an event older than
    /// an update of its object (a `charge.succeeded` after a later `charge.updated`, or
    /// retried after one) is answered `stale` and never handled. (A queue
    /// [`Worker`](crate::queue::Worker) with per-object order instead holds an object's
    /// later jobs back while an earlier one waits for its retry.)
    ///
    /// Stripe's `created` has a resolution of one second and event ids are not ordered,
    /// so two events of one object in the same second are a tie, settled by `ties`
    /// ([`TiePolicy`]). Events without an object id (`balance.available`) run unguarded.
    /// A thin event claimed under its snapshot twin (the default,
    /// [`with_thin_handler`](Self::with_thin_handler)) goes through the guard as its
    /// twin would: an older one is answered `stale` and its thin handler is not called
    /// (thin handlers have no `handle_stale`), and since it settles the claim the two
    /// share, the snapshot twin that arrives after it is a duplicate and does not reach
    /// `handle_stale` either; other thin events run unguarded. In inbox mode, [`PostgresInbox::ordered`](crate::PostgresInbox::ordered)
    /// and [`SqliteInbox::ordered`](crate::SqliteInbox::ordered) run the same guard inside
    /// the delivery's transaction.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use stripe_webhooks::{dangerous, testing, EventRouter, MemoryStore, Processor, SigningSecret, TiePolicy, Verifier};
    ///
    /// let p = Processor::ordered(
    ///     Verifier::new(SigningSecret::new("whsec_x")?),
    ///     MemoryStore::new(),
    ///     EventRouter::new().fallback(|_e| Box::pin(async { Ok(()) })),
    ///     TiePolicy::Run,
    /// );
    /// let update = |id: &str, created: i64| {
    ///     let mut v: serde_json::Value = serde_json::from_str(&testing::event_json(
    ///         id,
    ///         "customer.updated",
    ///         r#"{"id":"cus_1","object":"customer"}"#,
    ///     ))
    ///     .unwrap();
    ///     v["created"] = created.into();
    ///     dangerous::parse_unverified(v.to_string().as_bytes()).unwrap()
    /// };
    /// assert_eq!(p.process_event(&update("evt_2", 1_700_000_002)).await.kind().name(), "processed");
    /// // The older update arrives late: it is not applied over the newer one.
    /// assert_eq!(p.process_event(&update("evt_1", 1_700_000_001)).await.kind().name(), "stale");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn ordered<S: OrderingStore>(
        verifier: Verifier,
        store: S,
        handler: impl EventHandler,
        ties: TiePolicy,
    ) -> Self {
        let (store, guard) = guarded(store, ties);
        let dispatcher =
            StoreDispatcher::new(Arc::clone(&store), handler, Some(Arc::clone(&guard)));
        let mut p = Self::dispatching(verifier, Some(Arc::new(dispatcher)), store);
        p.ordering = Some(guard);
        p
    }

    /// A processor for a thin event destination (`"object": "v2.core.event"`): the same
    /// verify, parse, claim, handle, complete path and statuses as [`new`](Self::new).
    /// Stripe signs each destination with its own secret, so mount one route per
    /// destination, each with its own processor and verifier, on one shared store: the
    /// two deduplicate against each other (see
    /// [`with_snapshot_dedupe`](Self::with_snapshot_dedupe)).
    ///
    /// A snapshot event sent to it is answered 200 and dropped;
    /// `v2.core.event_destination.ping` is answered 200 without a handler.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use stripe_webhooks::{testing, EventRouter, MemoryStore, Processor, SigningSecret, ThinEventRouter, Verifier};
    ///
    /// let store = Arc::new(MemoryStore::new());
    /// let snapshot = Processor::new(
    ///     Verifier::new(SigningSecret::new("whsec_snapshot")?),
    ///     Arc::clone(&store),
    ///     EventRouter::new().fallback(|_e| Box::pin(async { Ok(()) })),
    /// );
    /// let thin = Processor::thin(
    ///     Verifier::new(SigningSecret::new("whsec_thin")?),
    ///     store,
    ///     ThinEventRouter::new().fallback(|_n| Box::pin(async { Ok(()) })),
    /// );
    ///
    /// // One change, delivered both ways: the application's work runs once.
    /// let (snap, notification) = testing::event_pair("evt_1", "customer.created", "cus_1");
    /// let at = testing::now();
    /// let a = snapshot.process(Some(&testing::sign(snap.as_bytes(), "whsec_snapshot", at)), snap.as_bytes()).await;
    /// let b = thin.process(Some(&testing::sign(notification.as_bytes(), "whsec_thin", at)), notification.as_bytes()).await;
    /// assert_eq!((a.kind().name(), b.kind().name()), ("processed", "duplicate"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// Beside a snapshot route built with [`ordered`](Self::ordered), build this one with
    /// [`thin_ordered`](Self::thin_ordered): a thin event claimed under its snapshot twin
    /// completes the twin's claim, and only a guarded route moves the object's watermark
    /// as it does.
    pub fn thin(
        verifier: Verifier,
        store: impl IdempotencyStore,
        handler: impl ThinEventHandler,
    ) -> Self {
        let mut p = Self::dispatching(verifier, None, Arc::new(store));
        p.thin = Some(Arc::new(handler));
        p
    }

    /// [`thin`](Self::thin) with the ordering guard of [`ordered`](Self::ordered), for the
    /// thin route beside an ordered snapshot route on the same store. A thin event
    /// claimed under its snapshot twin (the default,
    /// [`with_snapshot_dedupe`](Self::with_snapshot_dedupe)) locks its related object,
    /// is stale when older than the object's watermark (its `created` second, with
    /// `ties`), and moves the watermark when it completes, as its twin would have; so a
    /// late retry of an older snapshot event is stale whichever route took the change.
    /// Keep the same types outside the guard on both routes
    /// ([`ThinEventRouter::unordered`](crate::ThinEventRouter::unordered) with the types
    /// given to [`EventRouter::unordered`](crate::EventRouter::unordered)): a thin event of
    /// a type only the snapshot route keeps out is answered `stale` when older, and
    /// settles the claim its twin would run under, so the twin is a `duplicate` and runs
    /// neither. (On one processor, [`with_thin_handler`](Self::with_thin_handler), either
    /// handler keeping a type out keeps it out for both.)
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use stripe_webhooks::testing::{self, ThinEventBuilder};
    /// use stripe_webhooks::{
    ///     dangerous, EventRouter, MemoryStore, Processor, SigningSecret, ThinEventRouter,
    ///     TiePolicy, Verifier,
    /// };
    ///
    /// let store = Arc::new(MemoryStore::new());
    /// let snapshot = Processor::ordered(
    ///     Verifier::new(SigningSecret::new("whsec_snapshot")?),
    ///     Arc::clone(&store),
    ///     EventRouter::new().fallback(|_e| Box::pin(async { Ok(()) })),
    ///     TiePolicy::Run,
    /// );
    /// let thin = Processor::thin_ordered(
    ///     Verifier::new(SigningSecret::new("whsec_thin")?),
    ///     store,
    ///     ThinEventRouter::new().fallback(|_n| Box::pin(async { Ok(()) })),
    ///     TiePolicy::Run,
    /// );
    /// // The change of 10:01 arrives as a thin event first…
    /// let n = ThinEventBuilder::new("evt_thin_2", "v1.customer.updated")
    ///     .related("cus_1", "customer", "/v1/customers/cus_1")
    ///     .snapshot_event("evt_2")
    ///     .created(1_700_000_060)
    ///     .build();
    /// let n = dangerous::parse_unverified_notification(n.as_bytes())?;
    /// assert_eq!(thin.process_notification(&n).await.kind().name(), "processed");
    /// // …then a retry of the snapshot event of 10:00: stale, not applied over it.
    /// let mut old: serde_json::Value = serde_json::from_str(&testing::event_json(
    ///     "evt_1",
    ///     "customer.updated",
    ///     r#"{"id":"cus_1","object":"customer"}"#,
    /// ))?;
    /// old["created"] = 1_700_000_000.into();
    /// let old = dangerous::parse_unverified(old.to_string().as_bytes())?;
    /// assert_eq!(snapshot.process_event(&old).await.kind().name(), "stale");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn thin_ordered<S: OrderingStore>(
        verifier: Verifier,
        store: S,
        handler: impl ThinEventHandler,
        ties: TiePolicy,
    ) -> Self {
        let (store, guard) = guarded(store, ties);
        let mut p = Self::dispatching(verifier, None, store);
        p.thin = Some(Arc::new(handler));
        p.ordering = Some(guard);
        p
    }

    /// An **ack-fast** processor: it verifies the signature, parses the envelope, writes
    /// the raw verified body to `queue` in one atomic statement keyed by the event's
    /// dedupe key ([`EventNotification::dedupe_key`] for a thin event), and answers 200
    /// [`OutcomeKind::Queued`] without running a handler. A [`Worker`](crate::queue::Worker)
    /// runs the queued events, with retries and a dead state.
    ///
    /// Both families are taken, on one route or two. A duplicate of a queued, running,
    /// finished or dead event answers 200 [`OutcomeKind::Duplicate`] and queues nothing;
    /// a queue that fails or does not answer within the store timeout answers 503
    /// [`OutcomeKind::StoreUnavailable`] (nothing is lost: Stripe delivers it again); a bad
    /// signature answers 400 and nothing is written. Pings and, with
    /// [`with_livemode`](Self::with_livemode), events of the other mode are answered
    /// without queueing. The adapters take this processor as any other. Give it the
    /// workers' types ([`with_enabled_events`](Self::with_enabled_events)) so it queues
    /// only what they run (and the types this release does not know). Events parsed elsewhere
    /// ([`process_event`](Self::process_event): a reconciler pass, a cloud bus) are
    /// queued the same way.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use stripe_webhooks::queue::{MemoryQueue, QueueAdmin};
    /// use stripe_webhooks::{testing, Processor, SigningSecret, Verifier};
    ///
    /// let queue = MemoryQueue::new();
    /// let p = Processor::queued(Verifier::new(SigningSecret::new("whsec_x")?), queue.clone());
    /// let body = testing::event_json("evt_1", "customer.created", r#"{"id":"cus_1","object":"customer"}"#);
    /// let header = testing::sign(body.as_bytes(), "whsec_x", testing::now());
    /// assert_eq!(p.process(Some(&header), body.as_bytes()).await.kind().name(), "queued");
    /// assert_eq!(p.process(Some(&header), body.as_bytes()).await.kind().name(), "duplicate");
    /// assert_eq!(queue.counts().await?.queued, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn queued(verifier: Verifier, queue: impl crate::queue::Queue) -> Self {
        // The ack path claims nothing: the store is never called.
        let mut p = Self::dispatching(verifier, None, Arc::new(crate::MemoryStore::new()));
        p.queue = Some(Arc::new(queue));
        p
    }

    /// A processor that runs a SQL store's inbox mode (`SqliteStore::inbox`,
    /// `PostgresStore::inbox`): the handler's writes and the completion mark commit in
    /// one transaction. (A thin handler added with
    /// [`with_thin_handler`](Self::with_thin_handler) runs the standard way, on the same
    /// store, outside the transaction. Beside an inbox with `ordered`, a thin event
    /// claimed under its snapshot twin joins the object's ordering guard as
    /// [`Processor::ordered`] runs it, under the inbox's tie policy: it holds the
    /// object's lease lock while its handler runs (the inbox's deliveries about that
    /// object wait, 409) and moves the watermark, so an older snapshot event arriving
    /// later is stale. A thin event that cannot join it (no related object id) is claimed
    /// under its own id instead, and runs beside its snapshot twin; one whose twin's
    /// object has no id (`v1.balance.available`), so that the twin runs outside the guard
    /// too, is claimed under the twin's id, unguarded. A thin twin that waits for an
    /// inbox delivery's transaction longer than the store timeout is answered 503; its
    /// statement may still take the object's lock when that transaction ends. The
    /// delivery that gave up lets such a lock go once it lands (tried on a task, after
    /// waits that double from the store timeout up to a quarter of the lease), so the
    /// object's other deliveries are held (409) that long at most rather than for the
    /// lease; the event's own claim, if the statement took it, stays to its lease.)
    pub fn with_inbox(verifier: Verifier, inbox: impl Inbox) -> Self {
        let store = inbox.store();
        let thin_guard = inbox.thin_guard();
        let mut p = Self::dispatching(verifier, Some(Arc::new(inbox)), store);
        p.ordering = thin_guard;
        p
    }

    fn dispatching(
        verifier: Verifier,
        dispatcher: Option<Arc<dyn Dispatcher>>,
        store: Arc<dyn IdempotencyStore>,
    ) -> Self {
        Self {
            verifier,
            dispatcher,
            thin: None,
            store,
            dedupe_on_snapshot: true,
            livemode: None,
            ordering: None,
            queue: None,
            queued_events: None,
            max_body: DEFAULT_MAX_BODY,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            settings: DispatchSettings::default(),
        }
    }

    /// Adds a thin event handler, so this processor's route takes both kinds of payload
    /// (it tells them apart by their `object`). Stripe signs each destination with its
    /// own secret: give the verifier both (`Verifier::new(snapshot).with_secret(thin)`).
    #[must_use]
    pub fn with_thin_handler(mut self, handler: impl ThinEventHandler) -> Self {
        self.thin = Some(Arc::new(handler));
        self
    }

    /// Whether a thin event that names its snapshot twin (`snapshot_event`) is claimed
    /// under the twin's id (`true`, the default; see
    /// [`EventNotification::dedupe_key`]) or its own. With `true`, one change
    /// delivered to a snapshot destination and to a thin destination runs the
    /// application's work once, whichever arrives first: the other is a duplicate. This
    /// is what Stripe's migration guide recommends while both destinations run.
    #[must_use]
    pub fn with_snapshot_dedupe(mut self, on: bool) -> Self {
        self.dedupe_on_snapshot = on;
        self
    }

    /// Handles only live-mode events (`true`) or only test-mode events (`false`). An event
    /// of the other mode is answered 200 without being claimed or handled
    /// ([`OutcomeKind::OtherMode`]), so a test endpoint pointed at production by mistake
    /// (or the other way round) never acts. By default both are handled.
    #[must_use]
    pub fn with_livemode(mut self, livemode: bool) -> Self {
        self.livemode = Some(livemode);
        self
    }

    /// The mode given to [`with_livemode`](Self::with_livemode), if any.
    pub fn livemode(&self) -> Option<bool> {
        self.livemode
    }

    /// Sets the body limit ([`DEFAULT_MAX_BODY`], 1 MiB, by default); a longer body is
    /// answered 413 before any other work. Stripe retries a 413 like any other failure
    /// for three days and then gives the event up, so a genuine event over the limit is
    /// lost to the webhook path (a [`Reconciler`](crate::reconcile::Reconciler) lists it
    /// again): keep the limit well above the largest events your account sends.
    #[must_use]
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets the handler deadline (`None`: no deadline; at least 10 ms otherwise). The
    /// lease is raised to twice the deadline if it was shorter.
    ///
    /// Deadlines, store timeouts and lease renewal need the `tokio` feature, which every
    /// store and adapter feature turns on. A build without it (`--no-default-features`
    /// plus your own runtime) enforces none of them, so its handlers must finish well
    /// within the lease.
    #[must_use]
    pub fn with_handler_deadline(mut self, deadline: Option<Duration>) -> Self {
        let deadline = deadline.map(|d| d.max(MIN_HANDLER_DEADLINE));
        self.settings.deadline = deadline;
        self.settings.lease = self
            .settings
            .lease
            .max(deadline.unwrap_or_default().saturating_mul(2))
            .clamp(MIN_LEASE, MAX_LEASE);
        self
    }

    /// Sets the claim lease: how long another delivery waits before taking over the
    /// event of a delivery that crashed. It is kept at least twice the deadline.
    ///
    /// While the handler runs, the processor renews the lease every third of it (with the
    /// `tokio` feature), so a slow handler is never taken over while its process is alive;
    /// the lease only bounds how long a crashed delivery blocks the event. If renewals
    /// fail until the lease may have run out, the handler is stopped (500) rather than
    /// run beside a redelivery. A delivery whose future is dropped once its handler has
    /// started releases its claim, or completes it if the handler had already succeeded
    /// (from a task, with the `tokio` feature). Dropped while its claim is being taken,
    /// or released without a run, the claim may stay until its lease ends (the crate's
    /// adapters never drop a delivery: they run each one to its end). The lease is at
    /// least 100 ms and at most one day.
    ///
    /// The store ends a lease by its own clock (SQLite: its host's; PostgreSQL: the
    /// server's; Redis: `TIME`), while the processor stops a handler whose renewals
    /// failed by this process's monotonic clock, at nine tenths of the lease: a step of
    /// the store's clock forward by more than a tenth of the lease (an NTP step, a
    /// virtual machine resumed) can end the lease under a running handler, and a
    /// redelivery then runs beside it. Keep store hosts' clocks slewed rather than
    /// stepped. (`MemoryStore` counts on a monotonic clock.)
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease
            .max(self.settings.deadline.unwrap_or_default().saturating_mul(2))
            .clamp(MIN_LEASE, MAX_LEASE);
        self
    }

    /// Sets how long a store call may take before the delivery is answered 503 (at least
    /// 10 ms, since a zero timeout would answer every delivery 503; at most
    /// [`MAX_STORE_TIMEOUT`], an hour: PostgreSQL's `lock_timeout`, which the inbox sets
    /// from it, holds no more than 24 days, and nothing needs more).
    #[must_use]
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.settings.store_timeout = timeout.clamp(MIN_STORE_TIMEOUT, MAX_STORE_TIMEOUT);
        self
    }

    /// Sets how long the framework adapters wait for a request's whole body (10 s by
    /// default); a body still arriving then is answered 408 and nothing else is done.
    /// At least 100 ms (a zero one would answer every delivery 408) and at most an hour
    /// (past that, a client trickling its body holds a connection for good).
    #[must_use]
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout.clamp(Duration::from_millis(100), Duration::from_secs(3600));
        self
    }

    /// The adapters' body read deadline.
    pub fn body_timeout(&self) -> Duration {
        self.body_timeout
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The `enabled_events` the Stripe destinations of this processor need, from what its
    /// handlers [`handles`](EventHandler::handles): a snapshot list and a thin list, each
    /// `["*"]` when a handler takes every type (it takes a type this release does not
    /// know), empty when the processor has no handler of that family. The types a
    /// handler names in [`unknown_types`](EventHandler::unknown_types) (a router's routes
    /// to types Stripe added after this release) are in it too. Print it, or send
    /// it when you create or update the endpoint, rather than keeping the list by hand.
    ///
    /// ```
    /// use stripe_webhooks::{EventRouter, EventType, MemoryStore, Processor, SigningSecret, Verifier};
    ///
    /// let p = Processor::new(
    ///     Verifier::new(SigningSecret::new("whsec_x").unwrap()),
    ///     MemoryStore::new(),
    ///     EventRouter::new()
    ///         .on(EventType::CheckoutSessionCompleted, |_e| Box::pin(async { Ok(()) }))
    ///         .on_prefix("customer.subscription.*", |_e| Box::pin(async { Ok(()) })),
    /// );
    /// let enabled = p.enabled_events();
    /// assert!(enabled.snapshot.contains(&"customer.subscription.deleted".to_owned()));
    /// assert!(enabled.snapshot.contains(&"checkout.session.completed".to_owned()));
    /// assert!(enabled.thin.is_empty());
    /// ```
    pub fn enabled_events(&self) -> EnabledEvents {
        if self.queue.is_some() {
            // An ack-fast processor takes what its workers take: every type unless told.
            return self
                .queued_events
                .as_ref()
                .map_or_else(EnabledEvents::every_type, |(e, _)| e.clone());
        }
        EnabledEvents::of(
            self.dispatcher
                .as_ref()
                .map(|d| |t: &EventType| d.handles(t)),
            self.thin.as_ref().map(|h| |t: &ThinEventType| h.handles(t)),
            [
                self.dispatcher
                    .as_ref()
                    .map_or_else(Vec::new, |d| d.unknown_types()),
                self.thin
                    .as_ref()
                    .map_or_else(Vec::new, |h| h.unknown_types()),
            ],
        )
    }

    /// The types a [`Reconciler`](crate::reconcile::Reconciler) lists: those of
    /// [`enabled_events`](Self::enabled_events), but every type (`*`) for a family whose
    /// handler takes a type this release does not know under a known one's stem (a
    /// prefix route such as `invoice.*`): a list of names would leave out a type Stripe
    /// adds later, which such a route takes when it is delivered. An ack-fast
    /// processor's come from its [`with_enabled_events`](Self::with_enabled_events)
    /// (a [`Worker::enabled_events`](crate::queue::Worker::enabled_events) carries its
    /// handler's).
    pub(crate) fn listed_events(&self) -> EnabledEvents {
        let mut events = self.enabled_events();
        let [snapshot, thin] = events.takes_new_types;
        if snapshot {
            events.snapshot = vec!["*".to_owned()];
        }
        if thin {
            events.thin = vec!["*".to_owned()];
        }
        events
    }

    /// For an ack-fast processor ([`Processor::queued`]): the event types its workers
    /// handle ([`Worker::enabled_events`](crate::queue::Worker::enabled_events)). It
    /// queues those, and any type this release does not know (a worker's prefix route
    /// may take it; the worker decides; but a thin type named `v1.` and a known snapshot
    /// type, claimed under its snapshot twin's key, only when the worker's thin handler
    /// takes it, which a worker's list asks of the handler itself; a list built by hand
    /// queues it), and answers any other known type 200 `ignored`
    /// without queueing it, as a processor that runs its handlers does; [`enabled_events`](Self::enabled_events)
    /// reports them, so the manifest and a [`Reconciler`](crate::reconcile::Reconciler)
    /// list only those. Ignored by a processor that runs handlers itself.
    ///
    /// Give it whenever one change reaches both destinations (snapshot and thin twins,
    /// deduplicated on `snapshot_event`) and the workers take one family's type but not
    /// the other's: without it the twin that arrives first is queued, the other answered
    /// `duplicate`, and a worker whose handler does not take the queued one skips it.
    /// A thin event claimed under its snapshot twin is asked of the worker's thin handler
    /// itself, its router's account filter
    /// ([`EventRouter::accounts`](crate::EventRouter::accounts)) included, and answered
    /// `ignored` when the worker would not run it, so its twin keeps the key. A snapshot
    /// event goes by its type only (the worker applies the account filter), so where the
    /// snapshot router takes fewer accounts than the thin one, turn
    /// [`with_snapshot_dedupe`](Self::with_snapshot_dedupe) off here.
    #[must_use]
    pub fn with_enabled_events(mut self, events: EnabledEvents) -> Self {
        let types = QueuedTypes {
            snapshot: TypeSet::new(&events.snapshot),
            thin: TypeSet::new(&events.thin),
        };
        self.queued_events = Some((events, types));
        self
    }

    /// The body limit in bytes.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Waits, at most `timeout`, until no delivery that this processor's framework routes
    /// ([`axum`](crate::axum), [`actix`](crate::actix)) started is still running; `true`
    /// when none is and none was cut since the last call (each call reports a cut
    /// delivery once, so a server started again in the same process starts clean). Call
    /// it after the server's graceful shutdown returns, before the runtime ends: the routes run each delivery on a task of its
    /// own, so that a client that hangs up (Stripe times out, a load balancer cuts the
    /// connection during a deploy) does not cancel its handler half-way, and the server's
    /// shutdown, which waits for connections, does not wait for those. A delivery cut by
    /// the runtime's end instead loses its completion, and Stripe's retry runs the handler
    /// again.
    ///
    /// It also waits for the settling of any delivery whose future was dropped before it
    /// settled its claim (a [`Reconciler`](crate::reconcile::Reconciler) pass stopped by
    /// a signal; a request cancelled by your own server calling
    /// [`process`](Self::process), where the crate's routes detach each delivery so that
    /// a cancelled request does not drop it): that delivery's claim is released (or, once
    /// its handler has succeeded, completed) from a task of its own, which the runtime's
    /// end would otherwise cut, leaving the event held until its lease ends.
    ///
    /// On axum (one tokio runtime, which outlives `axum::serve`) this waits the
    /// deliveries out. actix-web runs each worker on a runtime of its own and drops it
    /// when the worker stops, before `HttpServer::run` returns, so a detached delivery
    /// still running then is cut there: `drain` can only report it (`false`). Give actix's
    /// `shutdown_timeout` at least the handler deadline.
    ///
    /// ```no_run
    /// # async fn run(processor: std::sync::Arc<stripe_webhooks::Processor>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    /// use std::time::Duration;
    ///
    /// let app = stripe_webhooks::axum::router("/webhook", processor.clone());
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
    ///     .await?;
    /// if !processor.drain(Duration::from_secs(30)).await {
    ///     eprintln!("some deliveries were still running; Stripe retries them");
    /// }
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.settings.in_flight.drain(timeout).await
    }

    /// How many deliveries this processor's framework routes started are still running,
    /// with the settling tasks of dropped deliveries (see [`drain`](Self::drain)).
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn deliveries_running(&self) -> usize {
        self.settings.in_flight.running()
    }

    /// Counts a delivery a framework route runs on a task of its own, until the guard
    /// is dropped.
    #[cfg(any(feature = "axum", feature = "actix-web"))]
    pub(crate) fn delivery_started(&self) -> drain::Running {
        self.settings.in_flight.start()
    }

    /// The claim lease.
    pub fn lease(&self) -> Duration {
        self.settings.lease
    }

    /// Processes one delivery: the `Stripe-Signature` header (if the request had one) and
    /// the raw body. Never panics, even if the handler does. (With the `tokio` feature,
    /// which every store and adapter feature turns on, call it inside a Tokio runtime:
    /// its deadlines and store timeouts are Tokio's timers, which panic outside one.)
    pub async fn process(&self, signature_header: Option<&str>, body: &[u8]) -> Outcome {
        let started = Instant::now();
        #[cfg(feature = "tracing")]
        {
            use tracing::Instrument;
            let span = trace::delivery_span();
            let outcome = self
                .run(signature_header, body, started)
                .instrument(span.clone())
                .await;
            trace::log_outcome(&span, &outcome);
            record(&outcome);
            outcome
        }
        #[cfg(not(feature = "tracing"))]
        {
            let outcome = self.run(signature_header, body, started).await;
            record(&outcome);
            outcome
        }
    }

    async fn run(&self, header: Option<&str>, body: &[u8], started: Instant) -> Outcome {
        if body.len() > self.max_body {
            return Outcome::new(
                OutcomeKind::PayloadTooLarge {
                    len: body.len(),
                    limit: self.max_body,
                },
                started,
            );
        }
        let verified = match self.verifier.verify_request(body, header) {
            Ok(v) => v,
            Err(e) => return Outcome::new(OutcomeKind::BadSignature(e), started),
        };
        let secret_label = verified.matched_secret().label_arc().cloned();
        let mut o = self.route(&verified, started).await;
        o.secret_label = secret_label;
        o
    }

    /// Parses a verified body as the kind of payload this processor takes first, and
    /// runs it.
    async fn route(&self, verified: &VerifiedPayload<'_>, started: Instant) -> Outcome {
        if let Some(queue) = &self.queue {
            return self.enqueue(queue.as_ref(), verified.body(), started).await;
        }
        if self.dispatcher.is_none() {
            return match verified.parse_notification() {
                Ok(n) => self.run_notification(&n, started).await,
                // A genuine snapshot event at a thin route: nothing here handles it, but
                // it is Stripe's and must not be retried for three days.
                Err(ParseError::SnapshotEvent) => Outcome::new(OutcomeKind::Ignored, started),
                Err(e) => not_an_event(e, started),
            };
        }
        match verified.parse() {
            Ok(event) => {
                #[cfg(feature = "tracing")]
                trace::record_event(&tracing::Span::current(), &event);
                self.run_event(&event, started).await
            }
            // A genuine thin event: handled if this processor has a thin handler, else
            // acknowledged (it must not be retried for three days).
            Err(ParseError::ThinEventNotification) => match verified.parse_notification() {
                Ok(n) => self.run_notification(&n, started).await,
                // Without a thin handler it would only have been acknowledged: a body
                // that is a thin event in all but some detail must not be retried for
                // three days either.
                Err(_) if self.thin.is_none() => Outcome::new(OutcomeKind::Ignored, started),
                Err(e) => not_an_event(e, started),
            },
            Err(e) => not_an_event(e, started),
        }
    }

    /// The ack-fast path: parse, the ping and livemode answers, then one enqueue.
    async fn enqueue(
        &self,
        queue: &dyn crate::queue::Queue,
        body: &[u8],
        started: Instant,
    ) -> Outcome {
        // The envelope and `data.object.id` only: the worker types the object when it
        // runs the job.
        match EventHead::from_slice(body) {
            Ok(head) => self.enqueue_head(queue, head, body, started).await,
            Err(ParseError::ThinEventNotification) => match EventNotification::from_slice(body) {
                Ok(n) => self.enqueue_notification(queue, &n, body, started).await,
                Err(e) => not_an_event(e, started),
            },
            Err(e) => not_an_event(e, started),
        }
    }

    /// Queues a parsed snapshot event with its body (the verified request body, or the
    /// event written back as JSON).
    async fn enqueue_event(
        &self,
        queue: &dyn crate::queue::Queue,
        event: &Event,
        body: &[u8],
        started: Instant,
    ) -> Outcome {
        self.enqueue_head(queue, EventHead::of(event), body, started)
            .await
    }

    /// Queues a snapshot event by its head (see [`EventHead`]) with its body.
    async fn enqueue_head(
        &self,
        queue: &dyn crate::queue::Queue,
        head: EventHead,
        body: &[u8],
        started: Instant,
    ) -> Outcome {
        #[cfg(feature = "tracing")]
        trace::record_head(&tracing::Span::current(), &head);
        let mut o = Outcome::new(OutcomeKind::Ignored, started);
        o.event_id = Some(head.id.clone());
        o.event_type = Some(EventType::from_wire(&head.event_type));
        o.created = Some(head.created);
        // A type this release does not know is queued whatever the list says: a
        // worker's prefix route (`invoice.*`) may take it, and the worker decides.
        let taken = self.queued_events.as_ref().map_or(true, |(_, t)| {
            t.snapshot.contains(head.event_type.as_str())
                || EventType::from_wire(&head.event_type).is_unknown()
        });
        let livemode = head.livemode;
        let job = crate::queue::NewJob::from_head(head, body);
        self.enqueue_job(queue, &job, livemode, taken, o, started)
            .await
    }

    /// Queues a parsed thin event with its body; a ping is answered, not queued.
    async fn enqueue_notification(
        &self,
        queue: &dyn crate::queue::Queue,
        n: &EventNotification,
        body: &[u8],
        started: Instant,
    ) -> Outcome {
        #[cfg(feature = "tracing")]
        trace::record_notification(&tracing::Span::current(), n);
        let mut o = Outcome::new(OutcomeKind::Ping, started);
        o.event_id = Some(n.id.clone());
        o.thin_type = Some(n.event_type.clone());
        o.created = n.created_unix();
        if n.is_ping() {
            return o;
        }
        let job = crate::queue::NewJob::thin(n, body, self.dedupe_on_snapshot);
        let taken = self.queued_events.as_ref().map_or(true, |(events, t)| {
            let listed = t.thin.contains(n.event_type.as_str());
            match &events.thin_handles {
                // A new detail type of a known snapshot event is queued under its twin's
                // key: only if the list names it (not by `*`, which a prefix route on a
                // stem this release does not know gives) or the worker takes it, asked of
                // the worker itself (its router's account filter too). Queued for a
                // worker that does not, it would be skipped and complete that key, and the
                // snapshot twin, which a worker may take, would be a duplicate never run.
                // A `handles_notification` that panics leaves the worker to decide (it
                // buries the job as dead, with why).
                Some(handles) if n.event_type.is_unknown() && job.key != n.id => {
                    t.thin.names(n.event_type.as_str())
                        || check_caught(|| (handles.0)(n)).unwrap_or(true)
                }
                // A known type with a snapshot twin: listed, and taken by the worker
                // itself, whose router's account filter may turn this event's account
                // away (the snapshot twin, which its own route may take, then keeps
                // the key).
                Some(handles) if job.key != n.id => {
                    listed && check_caught(|| (handles.0)(n)).unwrap_or(true)
                }
                // Otherwise a type this release does not know is queued whatever the list
                // says: a worker's prefix route may take it, and the worker decides.
                _ => listed || n.event_type.is_unknown(),
            }
        });
        self.enqueue_job(queue, &job, n.livemode, taken, o, started)
            .await
    }

    /// The livemode answer, a type the workers do not take (`taken` false) ignored, then
    /// one enqueue under the job's dedupe key.
    async fn enqueue_job(
        &self,
        queue: &dyn crate::queue::Queue,
        job: &crate::queue::NewJob<'_>,
        livemode: bool,
        taken: bool,
        mut o: Outcome,
        started: Instant,
    ) -> Outcome {
        use crate::queue::Enqueued;
        o.claim_key = Some(job.key.clone());
        o.kind = match self.livemode {
            Some(mode) if mode != livemode => OutcomeKind::OtherMode { livemode },
            _ if !taken => OutcomeKind::Ignored,
            _ => match store_call(self.settings.store_timeout, queue.enqueue(job)).await {
                Ok(Enqueued::Queued) => OutcomeKind::Queued,
                Ok(Enqueued::Duplicate) => OutcomeKind::Duplicate,
                Err(e) => OutcomeKind::StoreUnavailable(e),
            },
        };
        o.duration = started.elapsed();
        o
    }

    /// An ack-fast processor given an event parsed elsewhere (a reconciler's list, a
    /// cloud bus): the event written back as Stripe's JSON, then queued like a request
    /// body.
    async fn enqueue_parsed(
        &self,
        queue: &dyn crate::queue::Queue,
        parsed: Parsed<'_>,
        started: Instant,
    ) -> Outcome {
        let body = match parsed {
            Parsed::Event(e) => serde_json::to_vec(e),
            Parsed::Notification(n) => serde_json::to_vec(n),
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                return Outcome::new(OutcomeKind::NotAnEvent(ParseError::from_json(&e)), started)
            }
        };
        match parsed {
            Parsed::Event(e) => self.enqueue_event(queue, e, &body, started).await,
            Parsed::Notification(n) => self.enqueue_notification(queue, n, &body, started).await,
        }
    }

    /// Records an event Stripe listed that this crate cannot read (`thin`: from the v2
    /// list), for a [`Reconciler`](crate::reconcile::Reconciler), where this processor
    /// records failures: claimed under the key its delivery would be claimed under (a
    /// thin event's snapshot twin's, as [`run_notification`](Self::run_notification)
    /// picks it) and released as failed with the parse error, through the one
    /// claim-and-settle path (so a delivery dropped meanwhile is released from a task);
    /// on an ack-fast processor, queued with its raw JSON, which the worker cannot read
    /// either and buries with why. `Ignored` when the processor does not take its type.
    pub(crate) async fn record_unreadable(
        &self,
        u: &crate::client::UnreadableEvent,
        thin: bool,
    ) -> Outcome {
        let started = Instant::now();
        let ty = u.event_type.as_deref().unwrap_or("unknown");
        // A thin event goes under its twin's key, with the twin's type, by the rule of
        // `EventNotification::dedupe_key` and `dispatch_notification`; but not into a
        // queue, where its job dies (the worker cannot read it either) and a dead job's
        // key makes the twin, when it comes, a duplicate never run.
        let twin_type = crate::event::twin_type(&ThinEventType::from_wire(ty));
        let key = match &u.snapshot_event {
            Some(twin)
                if thin
                    && self.dedupe_on_snapshot
                    && self.ordering.is_none()
                    && self.queue.is_none()
                    && twin_type.is_some() =>
            {
                twin
            }
            _ => &u.id,
        };
        let mut o = Outcome::new(OutcomeKind::Ignored, started);
        o.event_id = Some(u.id.clone());
        o.claim_key = Some(key.clone());
        o.created = u.created;
        // A type that cannot be read is taken whatever the handler takes: nothing tells
        // it apart, and recording it is what lets an operator see it.
        if u.event_type.is_some() && !self.takes_type(thin, ty) {
            return o;
        }
        if let Some(queue) = &self.queue {
            let job = crate::queue::NewJob {
                key: key.clone(),
                event_id: u.id.clone(),
                event_type: ty.to_owned(),
                kind: if thin {
                    crate::queue::PayloadKind::Thin
                } else {
                    crate::queue::PayloadKind::Snapshot
                },
                object_id: None,
                created: u.created.unwrap_or(0),
                body: u.raw_json().as_bytes(),
            };
            o.kind = match store_call(self.settings.store_timeout, queue.enqueue(&job)).await {
                Ok(crate::queue::Enqueued::Queued) => OutcomeKind::Queued,
                Ok(crate::queue::Enqueued::Duplicate) => OutcomeKind::Duplicate,
                Err(e) => OutcomeKind::StoreUnavailable(e),
            };
        } else {
            let why = format!(
                "Stripe listed this event, and it cannot be read as one: {}",
                u.error
            );
            let failed = move || -> dispatch::HandlerFuture<'static> {
                Box::pin(std::future::ready(Err(
                    crate::handler::HandlerError::Failed(why.into()),
                )))
            };
            let record_type = match twin_type {
                Some(t) if key != &u.id => t,
                _ => EventType::from_wire(ty),
            };
            let settings = self.settings.standing_in();
            let d = claim_and_run(&self.store, key, &record_type, &settings, failed).await;
            o.kind = d.kind;
            o.attempt = d.attempt;
            o.failure_recorded = d.failure_recorded;
        }
        o.duration = started.elapsed();
        o
    }

    /// Whether this processor takes events of type `ty` (`thin`: a thin type): its
    /// handler's `handles`, or on an ack-fast processor its workers' types and any type
    /// this release does not know. A `handles` that panics takes it.
    fn takes_type(&self, thin: bool, ty: &str) -> bool {
        if let Some((_, t)) = &self.queued_events {
            return if thin {
                t.thin.contains(ty) || ThinEventType::from_wire(ty).is_unknown()
            } else {
                t.snapshot.contains(ty) || EventType::from_wire(ty).is_unknown()
            };
        }
        if self.queue.is_some() {
            return true;
        }
        let taken = if thin {
            let t = ThinEventType::from_wire(ty);
            self.thin.as_ref().map(|h| check_caught(|| h.handles(&t)))
        } else {
            let t = EventType::from_wire(ty);
            self.dispatcher
                .as_ref()
                .map(|d| check_caught(|| d.handles(&t)))
        };
        taken.is_some_and(|r| r.unwrap_or(true))
    }

    /// The snapshot path after parsing: the livemode guard, then claim, handle, complete.
    async fn run_event(&self, event: &Event, started: Instant) -> Outcome {
        let d = match (&self.dispatcher, self.livemode) {
            (_, Some(mode)) if mode != event.livemode() => {
                Dispatched::unclaimed(OutcomeKind::OtherMode {
                    livemode: event.livemode(),
                })
            }
            (Some(d), _) => d.dispatch(event, &self.settings).await,
            (None, _) => Dispatched::unclaimed(OutcomeKind::Ignored),
        };
        let mut o = Outcome::new(d.kind, started);
        o.attempt = d.attempt;
        o.failure_recorded = d.failure_recorded;
        o.event_id = Some(event.id().clone());
        o.event_type = Some(event.event_type().clone());
        o.claim_key = o.event_id.clone();
        o.created = Some(event.created());
        o
    }

    /// The thin path after parsing: ping and livemode, then claim (under the dedupe key),
    /// handle, complete.
    async fn run_notification(&self, n: &EventNotification, started: Instant) -> Outcome {
        #[cfg(feature = "tracing")]
        trace::record_notification(&tracing::Span::current(), n);
        // A thin event whose twin's object has no id (`v1.balance.available`): the twin
        // runs outside the guard, so nothing is lost by claiming under its id unguarded.
        let twin_unguarded = n.twin_object_has_no_id();
        // Beside an ordered snapshot route, a thin event that cannot join its object's
        // guard (no related object id, or a `created` that does not read) is claimed
        // under its own id: under its twin's, it would complete the twin's claim without
        // the watermark moving, and a late retry of an older snapshot event would then be
        // applied over this change. Unless the handlers keep the twin's type outside the
        // guard: the twin moves no watermark either. (A panic in that check: under its
        // own id, recorded as failed.)
        let (own_id, panicked) = if self.dedupe_on_snapshot
            && self.ordering.is_some()
            && !twin_unguarded
            && (n.ordering_key().is_none() || n.created_unix().is_none())
        {
            match self.twin_is_ordered(n) {
                Ok(ordered) => (ordered, None),
                Err(p) => (true, Some(p)),
            }
        } else {
            (false, None)
        };
        let key = match self.dedupe_on_snapshot {
            true if own_id => &n.id,
            true => n.dedupe_key(),
            false => &n.id,
        };
        let d = match (&self.thin, panicked) {
            _ if n.is_ping() => Dispatched::unclaimed(OutcomeKind::Ping),
            _ if self.livemode.is_some_and(|mode| mode != n.livemode) => {
                Dispatched::unclaimed(OutcomeKind::OtherMode {
                    livemode: n.livemode,
                })
            }
            (Some(h), panicked) => {
                let takes =
                    Dispatched::screen("handles_notification", || h.handles_notification(n));
                match (takes, panicked) {
                    (Ok(Some(ignored)), _) => ignored,
                    (Err(p), _) | (Ok(None), Some(p)) => {
                        let record_type = thin_record_type(n, key);
                        dispatch::check_panicked(&self.store, key, &record_type, &self.settings, p)
                            .await
                    }
                    (Ok(None), None) => {
                        self.dispatch_notification(h.as_ref(), n, key, twin_unguarded)
                            .await
                    }
                }
            }
            (None, _) => Dispatched::unclaimed(OutcomeKind::Ignored),
        };
        let mut o = Outcome::new(d.kind, started);
        o.attempt = d.attempt;
        o.failure_recorded = d.failure_recorded;
        o.event_id = Some(n.id.clone());
        o.thin_type = Some(n.event_type.clone());
        o.claim_key = Some(key.clone());
        o.created = n.created_unix();
        o
    }

    /// Whether the ordering guard applies to `n`'s snapshot twin's type, by both handlers
    /// (`is_ordered`); `Err` when one panicked ([`dispatch::check_panicked`]).
    fn twin_is_ordered(&self, n: &EventNotification) -> Result<bool, Dispatched> {
        let Some(twin) = n.snapshot_type() else {
            return Ok(true);
        };
        Dispatched::ask("is_ordered", || {
            self.thin.as_ref().map_or(true, |h| h.is_ordered(&twin))
                && self
                    .dispatcher
                    .as_ref()
                    .map_or(true, |d| d.is_ordered(&twin))
        })
    }

    /// A thin event the handler takes: claimed under `key`, handled, completed; through
    /// the ordering guard when it is claimed under its snapshot twin.
    async fn dispatch_notification(
        &self,
        h: &dyn ThinEventHandler,
        n: &EventNotification,
        key: &crate::event::EventId,
        twin_unguarded: bool,
    ) -> Dispatched {
        let record_type = thin_record_type(n, key);
        let handler = || h.handle(n);
        // Claimed under its snapshot twin, a thin event joins the twin's ordering
        // guard: otherwise it would complete the twin's claim and leave the
        // watermark behind. Unless the twin's object has no id: the twin runs outside
        // the guard, and so does the thin event, even when its related object has an id
        // (`v1.billing.alert.triggered`: the alert, where the twin carries one trigger
        // of it, which no other trigger makes stale).
        // And unless the handler keeps the twin's type outside the guard
        // (`ThinEventHandler::is_ordered`), or this processor's snapshot handler does
        // (`EventHandler::is_ordered`, `TransactionalHandler::is_ordered`): the twin
        // would run outside it.
        let object_key = n.ordering_key();
        let ordered = match (&self.ordering, key != &n.id && !twin_unguarded) {
            (Some(_), true) => match Dispatched::ask("is_ordered", || {
                h.is_ordered(&record_type)
                    && self
                        .dispatcher
                        .as_ref()
                        .map_or(true, |d| d.is_ordered(&record_type))
            }) {
                Ok(ordered) => ordered,
                Err(p) => {
                    return dispatch::check_panicked(
                        &self.store,
                        key,
                        &record_type,
                        &self.settings,
                        p,
                    )
                    .await
                }
            },
            _ => false,
        };
        let guarded = match (&self.ordering, object_key.as_deref(), n.created_unix()) {
            (Some(guard), Some(object_id), Some(created)) if ordered => {
                Some((guard, object_id, created))
            }
            _ => None,
        };
        match guarded {
            Some((guard, object_id, created)) => {
                guard
                    .dispatch_thin(
                        key,
                        &record_type,
                        object_id,
                        created,
                        handler,
                        &self.settings,
                    )
                    .await
            }
            None => claim_and_run(&self.store, key, &record_type, &self.settings, handler).await,
        }
    }

    /// Claims, handles and completes an event that was already verified and parsed (for
    /// example one read back from a queue, or listed by a
    /// [`Reconciler`](crate::reconcile::Reconciler)). An ack-fast processor
    /// ([`Processor::queued`]) queues it instead, written back as Stripe's JSON, under the
    /// same dedupe key as its webhook delivery: [`OutcomeKind::Queued`], or
    /// [`OutcomeKind::Duplicate`] when the queue has it already.
    pub async fn process_event(&self, event: &Event) -> Outcome {
        self.process_parsed(Parsed::Event(event)).await
    }

    /// Runs an event that a cloud event bus delivered (see [`crate::cloud`]) **without
    /// any signature check**: only one whose delivery you authenticated (a platform
    /// invocation, or a pushed request whose credential you checked; see
    /// [`crate::cloud`]). The same claim, handle, complete path, livemode guard and
    /// deduplication as [`process`](Self::process).
    pub async fn process_unsigned(&self, event: &crate::cloud::CloudEvent) -> Outcome {
        match event {
            crate::cloud::CloudEvent::Snapshot(e) => self.process_event(e).await,
            crate::cloud::CloudEvent::Thin(n) => self.process_notification(n).await,
        }
    }

    /// Claims, handles and completes a thin event notification that was already verified
    /// and parsed (for example one read back from a queue). An ack-fast processor queues
    /// it instead, as [`process_event`](Self::process_event) does.
    pub async fn process_notification(&self, notification: &EventNotification) -> Outcome {
        self.process_parsed(Parsed::Notification(notification))
            .await
    }

    /// An event of either family that arrived parsed: queued by an ack-fast processor,
    /// run otherwise; traced and recorded either way.
    async fn process_parsed(&self, parsed: Parsed<'_>) -> Outcome {
        let started = Instant::now();
        #[cfg(feature = "tracing")]
        let span = trace::delivery_span();
        #[cfg(feature = "tracing")]
        if let Parsed::Event(event) = parsed {
            trace::record_event(&span, event);
        }
        let run = async {
            match (&self.queue, parsed) {
                (Some(queue), _) => self.enqueue_parsed(queue.as_ref(), parsed, started).await,
                (None, Parsed::Event(e)) => self.run_event(e, started).await,
                (None, Parsed::Notification(n)) => self.run_notification(n, started).await,
            }
        };
        #[cfg(feature = "tracing")]
        let run = tracing::Instrument::instrument(run, span.clone());
        let o = run.await;
        #[cfg(feature = "tracing")]
        trace::log_outcome(&span, &o);
        record(&o);
        o
    }
}

/// An event that arrived parsed, of either family.
#[derive(Clone, Copy)]
enum Parsed<'a> {
    Event(&'a Event),
    Notification(&'a EventNotification),
}

/// The type a thin event's record carries when claimed under `key`: keyed on its snapshot
/// twin, the twin's type, so that the record reads the same whichever delivery came first.
fn thin_record_type(n: &EventNotification, key: &crate::event::EventId) -> EventType {
    match n.snapshot_type() {
        Some(t) if key != &n.id => t,
        _ => EventType::from_wire(n.event_type.as_str()),
    }
}

/// A verified body that is not an event: 400, with the event id when the body named one
/// ([`ParseError::event_id`]), for the logs and the caller.
fn not_an_event(e: ParseError, started: Instant) -> Outcome {
    let event_id = e.event_id().map(crate::event::EventId::new);
    let mut o = Outcome::new(OutcomeKind::NotAnEvent(e), started);
    o.event_id = event_id;
    o
}

/// Reports a delivery to the metrics recorder (feature `metrics`).
#[inline]
fn record(outcome: &Outcome) {
    #[cfg(feature = "metrics")]
    crate::metrics::delivery(outcome);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's list, which carries its handler, equals one with the same types built
    /// without (an inline processor's).
    #[test]
    fn enabled_events_are_equal_by_their_lists() {
        let with_handler = EnabledEvents {
            thin_handles: Some(ThinHandles(Arc::new(|_| false))),
            ..EnabledEvents::every_type()
        };
        assert_eq!(with_handler, EnabledEvents::every_type());
        assert_ne!(with_handler, EnabledEvents::default());
    }
}
