//! The closure routers: [`EventRouter`] for snapshot events and [`ThinEventRouter`] for
//! thin ones, on one route table (exact type, prefix, catch-all, Connect filter).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;

use async_trait::async_trait;

use super::{EventHandler, HandlerError, ThinEventHandler};
use crate::event::{Event, EventNotification, EventType, ThinEventType};

/// The future a route returns: `Box::pin(async move { … })`.
type RouteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

type Route<E> = Box<dyn for<'a> Fn(&'a E) -> RouteFuture<'a> + Send + Sync>;

/// Which Connect accounts a router takes events from.
///
/// A snapshot event names its connected account in `account` (or, with only a
/// `context`, the account that names); a thin event in `context`. Events of the
/// platform itself have neither.
///
/// ```
/// use stripe_webhooks::AccountFilter;
///
/// assert!(AccountFilter::Platform.matches(None));
/// assert!(!AccountFilter::Platform.matches(Some("acct_1")));
/// assert!(AccountFilter::Connected.matches(Some("acct_1")));
/// assert!(AccountFilter::only(["acct_1"]).matches(Some("acct_1")));
/// assert!(!AccountFilter::only(["acct_1"]).matches(Some("acct_2")));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountFilter {
    /// Every event (the default).
    #[default]
    Any,
    /// Only the platform's own events (no connected account).
    Platform,
    /// Only events of connected accounts.
    Connected,
    /// Only events of these connected accounts (`acct_…`).
    Only(BTreeSet<String>),
}

impl AccountFilter {
    /// Only events of these connected accounts.
    pub fn only<I, S>(accounts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AccountFilter::Only(accounts.into_iter().map(Into::into).collect())
    }

    /// Whether an event of `account` (`None`: the platform's own) passes.
    pub fn matches(&self, account: Option<&str>) -> bool {
        match self {
            AccountFilter::Any => true,
            AccountFilter::Platform => account.is_none(),
            AccountFilter::Connected => account.is_some(),
            AccountFilter::Only(set) => account.is_some_and(|a| set.contains(a)),
        }
    }
}

/// One route table: exact types, prefixes (longest first), a catch-all, a Connect
/// filter, and the next table to try.
struct Routes<K, E: ?Sized> {
    exact: HashMap<K, Route<E>>,
    /// `(prefix ending in '.', route)`, longest prefix first.
    prefixes: Vec<(String, Route<E>)>,
    fallback: Option<Route<E>>,
    accounts: AccountFilter,
    next: Option<Box<Routes<K, E>>>,
}

impl<K, E: ?Sized> Default for Routes<K, E> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            prefixes: Vec::new(),
            fallback: None,
            accounts: AccountFilter::Any,
            next: None,
        }
    }
}

/// `"invoice.*"`, `"invoice."` and `"invoice"` all become `"invoice."`, so a prefix only
/// ever matches whole segments (`invoice` never matches `invoiceitem.created`).
fn normalise_prefix(prefix: &str) -> String {
    let p = prefix.trim_end_matches('*').trim_end_matches('.');
    format!("{p}.")
}

/// Whether a normalised prefix (`"v2.core.account."`) takes the type `wire`: a whole
/// segment follows it, after a `.` or a `[` (`v2.core.account[requirements].updated`
/// is one of the account's events too).
fn prefix_takes(prefix: &str, wire: &str) -> bool {
    let stem = prefix.strip_suffix('.').unwrap_or(prefix);
    // A whole type given as a prefix (`"invoice.paid"`) takes that type too.
    wire.strip_prefix(stem)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Panics on a `*` anywhere but as the whole pattern or after the pattern's last `.`. A
/// prefix takes whole segments, so such a pattern did not take what it reads as:
/// `"invoice.payment_*"` and `"*.created"` took no type (their events answered 200
/// `ignored`, which Stripe does not send again, and the endpoint set up for every type),
/// and `"invoice*"` took the `invoice.` types but not `invoiceitem.`'s. Route the types
/// one by one, or take their whole stem (`"invoice.*"`).
fn check_prefix(prefix: &str) {
    let stem = prefix.strip_suffix('*').unwrap_or(prefix);
    let starred = stem.len() < prefix.len();
    assert!(
        !stem.contains('*') && (!starred || stem.is_empty() || stem.ends_with('.')),
        "route prefix {prefix:?}: a `*` may only be the whole pattern or follow its last \
         `.` (\"invoice.*\"): a prefix takes whole segments, so this one would not take \
         what it reads as (\"invoice.payment_*\" takes no type, \"invoice*\" not \
         invoiceitem's)"
    );
}

/// Refuses a type or prefix of the other family: every thin event type starts with its
/// API's version (`v1.`, `v2.`, and a later `v3.` to come), and no snapshot type does,
/// so such a route would never run, and its unknown stem would widen `enabled_events`
/// to `["*"]`.
fn check_family(pattern: &str, thin: bool) {
    let stem = pattern.trim_end_matches('*').trim_end_matches('.');
    if stem.is_empty() {
        return;
    }
    let first = stem.split('.').next().unwrap_or(stem);
    let versioned = first
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if thin {
        assert!(
            versioned,
            "thin route {pattern:?}: thin event types start with their API's version \
             (`v1.`, `v2.`: \"v1.{stem}\"); a snapshot type is routed on an `EventRouter`"
        );
    } else {
        assert!(
            !versioned,
            "route {pattern:?}: a thin event type (`v1.`, `v2.`, …) is routed on a \
             `ThinEventRouter`; this router's events never have one"
        );
    }
}

impl<K: Eq + Hash, E: ?Sized> Routes<K, E> {
    /// This table's route for a type (not the next table's).
    fn own(&self, key: &K, wire: &str) -> Option<&Route<E>> {
        self.exact
            .get(key)
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| prefix_takes(p, wire))
                    .map(|(_, r)| r)
            })
            .or(self.fallback.as_ref())
    }

    /// The route for an event: the first table whose filter passes and that has one.
    fn find(&self, key: &K, wire: &str, account: Option<&str>) -> Option<&Route<E>> {
        let own = self
            .accounts
            .matches(account)
            .then(|| self.own(key, wire))
            .flatten();
        own.or_else(|| self.next.as_ref()?.find(key, wire, account))
    }

    /// Whether any table could route this type, whatever the account.
    fn handles_type(&self, key: &K, wire: &str) -> bool {
        self.own(key, wire).is_some()
            || self
                .next
                .as_ref()
                .is_some_and(|n| n.handles_type(key, wire))
    }

    fn add_prefix(&mut self, prefix: &str, route: Route<E>) {
        check_prefix(prefix);
        // `"*"` or `""` is every type: the catch-all.
        if prefix
            .trim_end_matches('*')
            .trim_end_matches('.')
            .is_empty()
        {
            self.fallback = Some(route);
            return;
        }
        let p = normalise_prefix(prefix);
        self.prefixes.retain(|(q, _)| *q != p);
        self.prefixes.push((p, route));
        self.prefixes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    fn append(&mut self, other: Routes<K, E>) {
        match &mut self.next {
            Some(next) => next.append(other),
            None => self.next = Some(Box::new(other)),
        }
    }

    /// The `enabled_events` a Stripe endpoint needs for these routes: `["*"]` with a
    /// catch-all or a prefix that takes none of `all` (a stem this release does not
    /// know, whose types it cannot name), otherwise every exact type and every known
    /// type under a prefix.
    fn enabled_events<'k>(
        &self,
        all: impl Iterator<Item = &'k str> + Clone,
        wire: impl Fn(&K) -> String,
    ) -> Vec<String> {
        let mut out = BTreeSet::new();
        let mut table = Some(self);
        while let Some(t) = table {
            if t.fallback.is_some() {
                return vec!["*".to_owned()];
            }
            out.extend(t.exact.keys().map(&wire));
            for (p, _) in &t.prefixes {
                if !all.clone().any(|w| prefix_takes(p, w)) {
                    return vec!["*".to_owned()];
                }
                out.extend(
                    all.clone()
                        .filter(|w| prefix_takes(p, w))
                        .map(str::to_owned),
                );
            }
            table = t.next.as_deref();
        }
        out.into_iter().collect()
    }

    /// The types these routes take that `all` (this release's) does not list: each exact
    /// route's type that `all` lacks, or `["*"]` with a catch-all or a prefix that takes
    /// none of `all` (a stem this release does not know).
    fn unknown_types<'k>(
        &self,
        all: impl Iterator<Item = &'k str> + Clone,
        wire: impl Fn(&K) -> String,
    ) -> Vec<String> {
        let mut names = self.enabled_events(all.clone(), wire);
        if names != ["*"] {
            names.retain(|n| !all.clone().any(|a| a == n));
        }
        names
    }

    fn describe(
        &self,
        f: &mut fmt::Formatter<'_>,
        name: &str,
        wire: impl Fn(&K) -> String,
    ) -> fmt::Result {
        let mut exact: Vec<String> = self.exact.keys().map(wire).collect();
        exact.sort();
        f.debug_struct(name)
            .field("routes", &exact)
            .field(
                "prefixes",
                &self.prefixes.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .field("fallback", &self.fallback.is_some())
            .field("accounts", &self.accounts)
            .field("next", &self.next.is_some())
            .finish()
    }
}

/// An [`EventHandler`] built from closures: one per event type, per type prefix
/// (`"invoice.*"`), and a catch-all [`fallback`](Self::fallback), optionally limited to
/// some Connect accounts. (Named so that it never collides with `axum::Router`.)
///
/// An event goes to its exact route, else to the longest matching prefix, else to the
/// fallback. An event with none of them is answered 200 without being claimed, and so is
/// one whose account the [`accounts`](Self::accounts) filter turns away.
///
/// ```
/// use stripe_webhooks::{AccountFilter, Event, EventType, HandlerError, EventRouter};
///
/// let router = EventRouter::new()
///     .on(EventType::CheckoutSessionCompleted, |event| {
///         Box::pin(async move {
///             match event {
///                 Event::CheckoutSessionCompleted(session) => println!("provision {}", session.id),
///                 // Its object did not fit this release's struct: fail, so the event is
///                 // recorded and comes back.
///                 Event::Unparsed(e) => return Err(HandlerError::new(e.error().to_string())),
///                 _ => {}
///             }
///             Ok(())
///         })
///     })
///     .on_prefix("invoice.*", |event| {
///         Box::pin(async move {
///             println!("invoice event {}", event.event_type());
///             Ok(())
///         })
///     })
///     // Connected accounts' events go to a router of their own.
///     .accounts(AccountFilter::Platform)
///     .or(EventRouter::new()
///         .accounts(AccountFilter::Connected)
///         .fallback(|_event| Box::pin(async { Err(HandlerError::new("not yet")) })));
///
/// // The endpoint configuration these routes need:
/// let enabled = router.enabled_events();
/// assert_eq!(enabled, ["*"]);
/// ```
#[derive(Default)]
pub struct EventRouter {
    routes: Routes<EventType, Event>,
    /// The types left outside the ordering guard ([`unordered`](Self::unordered)).
    unordered: Vec<EventType>,
}

impl fmt::Debug for EventRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.routes
            .describe(f, "EventRouter", |k| k.as_str().to_owned())
    }
}

impl EventRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes events of `event_type` to `f`, replacing any earlier route for it. A type
    /// given as [`EventType::Unknown`] that this release knows is routed as its own
    /// variant (`Unknown("invoice.paid")` as [`EventType::InvoicePaid`]), as the event
    /// parses. A name with a `*`, as an endpoint's `enabled_events` may hold (`"*"`,
    /// `"invoice.*"`), is routed as [`on_prefix`](Self::on_prefix) routes it: no event
    /// has such a type.
    ///
    /// # Panics
    ///
    /// As [`on_prefix`](Self::on_prefix), on a `*` it would refuse, or on a thin event
    /// type (`v1.…`, `v2.…`, any `v<n>.…`: route it on a [`ThinEventRouter`]).
    #[must_use]
    pub fn on<F>(mut self, event_type: EventType, f: F) -> Self
    where
        F: for<'a> Fn(&'a Event) -> RouteFuture<'a> + Send + Sync + 'static,
    {
        check_family(event_type.as_str(), false);
        let event_type = match event_type {
            EventType::Unknown(wire) if wire.contains('*') => return self.on_prefix(&wire, f),
            EventType::Unknown(wire) => EventType::from_wire(&wire),
            known => known,
        };
        self.routes.exact.insert(event_type, Box::new(f));
        self
    }

    /// Routes events whose type starts with `prefix` (`"invoice.*"`, `"invoice."` or
    /// `"invoice"`: whole segments only, after a `.` or a `[`) to `f`, when no exact route
    /// matches. The longest matching prefix wins; `"*"` is the catch-all
    /// ([`fallback`](Self::fallback)).
    ///
    /// # Panics
    ///
    /// On a `*` anywhere but as the whole pattern or after its last `.`: such a pattern
    /// would not take what it reads as (`"invoice.payment_*"` and `"*.created"` take no
    /// type, and their events would be answered 200 `ignored`, never sent again;
    /// `"invoice*"` takes no `invoiceitem.` type); or on a thin event type's prefix
    /// (`"v1.invoice.*"`: route it on a [`ThinEventRouter`]).
    #[must_use]
    pub fn on_prefix<F>(mut self, prefix: &str, f: F) -> Self
    where
        F: for<'a> Fn(&'a Event) -> RouteFuture<'a> + Send + Sync + 'static,
    {
        check_family(prefix, false);
        self.routes.add_prefix(prefix, Box::new(f));
        self
    }

    /// Routes every event that has no route of its own to `f` (the catch-all).
    #[must_use]
    pub fn fallback<F>(mut self, f: F) -> Self
    where
        F: for<'a> Fn(&'a Event) -> RouteFuture<'a> + Send + Sync + 'static,
    {
        self.routes.fallback = Some(Box::new(f));
        self
    }

    /// Takes only events of these Connect accounts (by the event's `account`); the others
    /// go to the [`or`](Self::or) router, if any, else are answered 200 unclaimed.
    ///
    /// Behind an ack-fast processor ([`Processor::queued`](crate::Processor::queued)),
    /// which queues snapshot events by type, the filter is applied by the worker: a
    /// snapshot event it turns away is queued, then completed without running. (A thin
    /// event claimed under its snapshot twin is asked of the worker's thin handler first,
    /// its account filter included, when the processor has the worker's
    /// [`enabled_events`](crate::queue::Worker::enabled_events).) So where the snapshot
    /// router takes a change for fewer accounts than the thin router, turn
    /// [`with_snapshot_dedupe`](crate::Processor::with_snapshot_dedupe) off on that
    /// processor: otherwise the snapshot twin queued first may be turned away, and the
    /// thin one, answered `duplicate`, never runs.
    #[must_use]
    pub fn accounts(mut self, filter: AccountFilter) -> Self {
        self.routes.accounts = filter;
        self
    }

    /// Tries `other` for every event this router does not take (no route, or turned away
    /// by its account filter).
    #[must_use]
    pub fn or(mut self, other: EventRouter) -> Self {
        self.routes.append(other.routes);
        self.unordered.extend(other.unordered);
        self
    }

    /// Leaves events of these types outside the ordering guard of a processor built
    /// with [`Processor::ordered`](crate::Processor::ordered)
    /// ([`EventHandler::is_ordered`]): each runs whatever its age, and is never answered
    /// `stale`. For the types whose every event must run (a payment to record, a
    /// receipt to send), beside guarded `*.updated` routes on the same endpoint. Adds to
    /// the types given before; [`or`](Self::or) keeps both routers'.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use stripe_webhooks::{dangerous, testing, EventRouter, EventType, MemoryStore, Processor, SigningSecret, TiePolicy, Verifier};
    ///
    /// let router = EventRouter::new()
    ///     .on(EventType::ChargeUpdated, |_e| Box::pin(async { Ok(()) }))
    ///     .on(EventType::ChargeSucceeded, |_e| Box::pin(async { Ok(()) }))
    ///     .unordered([EventType::ChargeSucceeded]);
    /// let p = Processor::ordered(
    ///     Verifier::new(SigningSecret::new("whsec_x")?),
    ///     MemoryStore::new(),
    ///     router,
    ///     TiePolicy::Run,
    /// );
    /// let charge = |id: &str, ty: &str, created: i64| {
    ///     let mut v: serde_json::Value = serde_json::from_str(&testing::event_json(
    ///         id,
    ///         ty,
    ///         r#"{"id":"ch_1","object":"charge"}"#,
    ///     ))
    ///     .unwrap();
    ///     v["created"] = created.into();
    ///     dangerous::parse_unverified(v.to_string().as_bytes()).unwrap()
    /// };
    /// let updated = charge("evt_2", "charge.updated", 1_700_000_002);
    /// assert_eq!(p.process_event(&updated).await.kind().name(), "processed");
    /// // The payment's own event arrives after a newer update of its charge: it still runs.
    /// let succeeded = charge("evt_1", "charge.succeeded", 1_700_000_001);
    /// assert_eq!(p.process_event(&succeeded).await.kind().name(), "processed");
    /// // An older update does not.
    /// let old = charge("evt_0", "charge.updated", 1_700_000_000);
    /// assert_eq!(p.process_event(&old).await.kind().name(), "stale");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[must_use]
    pub fn unordered<I: IntoIterator<Item = EventType>>(mut self, types: I) -> Self {
        self.unordered.extend(types);
        self
    }

    /// The `enabled_events` a Stripe webhook endpoint needs for these routes: `["*"]`
    /// when a fallback takes everything, or a prefix takes no type this release knows
    /// (`on_prefix("new_product.*")`: its types cannot be named), otherwise each routed
    /// type and every documented type under each prefix, sorted. Print it, or send it when creating the endpoint,
    /// instead of keeping the list by hand.
    pub fn enabled_events(&self) -> Vec<String> {
        self.routes
            .enabled_events(EventType::ALL.iter().map(EventType::as_str), |k| {
                k.as_str().to_owned()
            })
    }
}

#[async_trait]
impl EventHandler for EventRouter {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let ty = event.event_type();
        match self.routes.find(ty, ty.as_str(), event.account()) {
            Some(route) => route(event).await,
            None => Ok(()),
        }
    }

    fn handles(&self, event_type: &EventType) -> bool {
        self.routes.handles_type(event_type, event_type.as_str())
    }

    fn handles_event(&self, event: &Event) -> bool {
        let ty = event.event_type();
        self.routes.find(ty, ty.as_str(), event.account()).is_some()
    }

    fn unknown_types(&self) -> Vec<String> {
        self.routes
            .unknown_types(EventType::ALL.iter().map(EventType::as_str), |k| {
                k.as_str().to_owned()
            })
    }

    fn is_ordered(&self, event_type: &EventType) -> bool {
        is_ordered(&self.unordered, event_type)
    }
}

/// A [`ThinEventHandler`] built from closures, like [`EventRouter`]: by exact
/// [`ThinEventType`], by prefix (`"v1.invoice.*"`), and a catch-all, optionally limited
/// to some Connect accounts (by the notification's `context`). Notifications with no
/// route are answered 200 without being claimed.
///
/// ```
/// use stripe_webhooks::{ThinEventRouter, ThinEventType};
///
/// let router = ThinEventRouter::new()
///     .on(ThinEventType::V1CustomerCreated, |n| {
///         Box::pin(async move {
///             println!("fetch {:?}", n.related_object.as_ref().map(|o| &o.url));
///             Ok(())
///         })
///     })
///     .on_prefix("v1.billing.meter.*", |_n| Box::pin(async { Ok(()) }));
/// let enabled = router.enabled_events();
/// assert!(enabled.contains(&"v1.billing.meter.error_report_triggered".to_owned()));
/// assert!(enabled.contains(&"v1.customer.created".to_owned()));
/// assert!(!enabled.contains(&"v1.customer.updated".to_owned()));
/// ```
#[derive(Default)]
pub struct ThinEventRouter {
    routes: Routes<ThinEventType, EventNotification>,
    /// The snapshot twins' types left outside the ordering guard
    /// ([`unordered`](Self::unordered)).
    unordered: Vec<EventType>,
}

impl fmt::Debug for ThinEventRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.routes
            .describe(f, "ThinEventRouter", |k| k.as_str().to_owned())
    }
}

impl ThinEventRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes notifications of `event_type` to `f`, replacing any earlier route for it. A
    /// type given as [`ThinEventType::Unknown`] that this release knows is routed as its
    /// own variant, as the notification parses; a name with a `*` (`"*"`,
    /// `"v1.invoice.*"`) as [`on_prefix`](Self::on_prefix) routes it.
    ///
    /// A route for [`ThinEventType::V2CoreEventDestinationPing`] never runs: the
    /// processor answers a destination's ping itself, before any handler.
    ///
    /// # Panics
    ///
    /// As [`on_prefix`](Self::on_prefix): on a `*` it would refuse, or a type that does
    /// not start with its API's version, `v1.` or `v2.` (a snapshot type: route it on an
    /// [`EventRouter`]).
    #[must_use]
    pub fn on<F>(mut self, event_type: ThinEventType, f: F) -> Self
    where
        F: for<'a> Fn(&'a EventNotification) -> RouteFuture<'a> + Send + Sync + 'static,
    {
        check_family(event_type.as_str(), true);
        let event_type = match event_type {
            ThinEventType::Unknown(wire) if wire.contains('*') => return self.on_prefix(&wire, f),
            ThinEventType::Unknown(wire) => ThinEventType::from_wire(&wire),
            known => known,
        };
        self.routes.exact.insert(event_type, Box::new(f));
        self
    }

    /// Routes notifications whose type starts with `prefix` (`"v1.invoice.*"`; whole
    /// segments only) to `f`, when no exact route matches. The longest prefix wins.
    ///
    /// # Panics
    ///
    /// As [`EventRouter::on_prefix`], on a `*` anywhere but as the whole pattern or
    /// after its last `.`; and on a prefix that does not start with an API's version
    /// (`v1.`, `v2.`: `"customer.*"` takes no thin type; route snapshot types on an
    /// [`EventRouter`]).
    #[must_use]
    pub fn on_prefix<F>(mut self, prefix: &str, f: F) -> Self
    where
        F: for<'a> Fn(&'a EventNotification) -> RouteFuture<'a> + Send + Sync + 'static,
    {
        check_family(prefix, true);
        self.routes.add_prefix(prefix, Box::new(f));
        self
    }

    /// Routes every notification that has no route of its own to `f` (the catch-all).
    #[must_use]
    pub fn fallback<F>(mut self, f: F) -> Self
    where
        F: for<'a> Fn(&'a EventNotification) -> RouteFuture<'a> + Send + Sync + 'static,
    {
        self.routes.fallback = Some(Box::new(f));
        self
    }

    /// Takes only notifications of these Connect accounts (by the account in `context`).
    #[must_use]
    pub fn accounts(mut self, filter: AccountFilter) -> Self {
        self.routes.accounts = filter;
        self
    }

    /// Tries `other` for every notification this router does not take.
    #[must_use]
    pub fn or(mut self, other: ThinEventRouter) -> Self {
        self.routes.append(other.routes);
        self.unordered.extend(other.unordered);
        self
    }

    /// Leaves notifications claimed under a snapshot twin of these types (the twins'
    /// types: `charge.succeeded` for `v1.charge.succeeded`) outside the ordering guard
    /// of a processor built with [`Processor::thin_ordered`](crate::Processor::thin_ordered)
    /// ([`ThinEventHandler::is_ordered`]), as [`EventRouter::unordered`] does for the
    /// snapshot route: give both routers the same types. Adds to the types given
    /// before; [`or`](Self::or) keeps both routers'.
    #[must_use]
    pub fn unordered<I: IntoIterator<Item = EventType>>(mut self, types: I) -> Self {
        self.unordered.extend(types);
        self
    }

    /// The `enabled_events` a thin event destination needs for these routes (see
    /// [`EventRouter::enabled_events`]).
    pub fn enabled_events(&self) -> Vec<String> {
        self.routes
            .enabled_events(ThinEventType::ALL.iter().map(ThinEventType::as_str), |k| {
                k.as_str().to_owned()
            })
    }
}

#[async_trait]
impl ThinEventHandler for ThinEventRouter {
    async fn handle(&self, n: &EventNotification) -> Result<(), HandlerError> {
        let ty = &n.event_type;
        match self.routes.find(ty, ty.as_str(), n.account()) {
            Some(route) => route(n).await,
            None => Ok(()),
        }
    }

    fn handles(&self, event_type: &ThinEventType) -> bool {
        self.routes.handles_type(event_type, event_type.as_str())
    }

    fn handles_notification(&self, n: &EventNotification) -> bool {
        let ty = &n.event_type;
        self.routes.find(ty, ty.as_str(), n.account()).is_some()
    }

    fn unknown_types(&self) -> Vec<String> {
        self.routes
            .unknown_types(ThinEventType::ALL.iter().map(ThinEventType::as_str), |k| {
                k.as_str().to_owned()
            })
    }

    fn is_ordered(&self, snapshot_type: &EventType) -> bool {
        is_ordered(&self.unordered, snapshot_type)
    }
}

/// Whether `event_type` is not among a router's `unordered` types (by wire name, so that
/// `Unknown("charge.succeeded")` given to `unordered` counts as the variant).
fn is_ordered(unordered: &[EventType], event_type: &EventType) -> bool {
    !unordered.iter().any(|t| t.as_str() == event_type.as_str())
}
