//! The processor: verify → parse → claim → handle → complete or release.
//!
//! - `outcome`: what happened, and the one table of statuses and names;
//! - `dispatch`: claim, handle, complete (and the crate's inbox dispatchers' interface);
//! - `lease`: lease renewal, stopping a handler whose lease is lost, and the drop guard;
//! - `trace`: the span and log line of a delivery (feature `tracing`).

mod dispatch;
mod lease;
mod outcome;
#[cfg(feature = "tracing")]
mod trace;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::{Event, ParseError};
use crate::handler::EventHandler;
use crate::idempotency::IdempotencyStore;
use crate::signature::Verifier;

use dispatch::StoreDispatcher;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use dispatch::{run_handler, store_call};
pub(crate) use dispatch::{DispatchSettings, Dispatched, Dispatcher};
#[cfg(any(feature = "axum", feature = "actix-web"))]
pub(crate) use outcome::Answer;
pub use outcome::{Outcome, OutcomeKind};

/// The largest body the processor accepts by default: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// How long a handler may run by default before it is dropped and the delivery fails.
pub const DEFAULT_HANDLER_DEADLINE: Duration = Duration::from_secs(10);
/// How long a claim is leased by default. It is always at least twice the deadline.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The longest lease the processor takes: longer ones (or a deadline that would need
/// one) are cut to it, so lease arithmetic stays within every store's range.
const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);
/// How long a store call may take by default before the delivery is answered 503.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the adapters wait by default for a request's whole body before answering
/// 408: Stripe sends its bodies at once, so only a slow or hostile client needs longer.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

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
    dispatcher: Arc<dyn Dispatcher>,
    max_body: usize,
    body_timeout: Duration,
    settings: DispatchSettings,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("verifier", &self.verifier)
            .field("max_body", &self.max_body)
            .field("body_timeout", &self.body_timeout)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Processor {
    /// A processor with the default body limit (1 MiB), handler deadline (10 s), lease
    /// (30 s) and store timeout (2 s).
    pub fn new(
        verifier: Verifier,
        store: impl IdempotencyStore,
        handler: impl EventHandler,
    ) -> Self {
        Self::dispatching(verifier, StoreDispatcher::new(store, handler))
    }

    /// A processor that runs a SQL store's inbox mode (`SqliteStore::inbox`,
    /// `PostgresStore::inbox`): the handler's writes and the completion mark commit in
    /// one transaction.
    pub fn with_inbox(verifier: Verifier, inbox: impl Inbox) -> Self {
        Self::dispatching(verifier, inbox)
    }

    fn dispatching(verifier: Verifier, dispatcher: impl Dispatcher) -> Self {
        Self {
            verifier,
            dispatcher: Arc::new(dispatcher),
            max_body: DEFAULT_MAX_BODY,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            settings: DispatchSettings::default(),
        }
    }

    /// Sets the body limit; a longer body is answered 413 before any other work.
    #[must_use]
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets the handler deadline (`None`: no deadline). The lease is raised to twice the
    /// deadline if it was shorter.
    ///
    /// Deadlines, store timeouts and lease renewal need the `tokio` feature, which every
    /// store and adapter feature turns on. A build without it (`--no-default-features`
    /// plus your own runtime) enforces none of them, so its handlers must finish well
    /// within the lease.
    #[must_use]
    pub fn with_handler_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.settings.deadline = deadline;
        self.settings.lease = self
            .settings
            .lease
            .max(deadline.unwrap_or_default().saturating_mul(2))
            .min(MAX_LEASE);
        self
    }

    /// Sets the claim lease: how long another delivery waits before taking over the
    /// event of a delivery that crashed. It is kept at least twice the deadline.
    ///
    /// While the handler runs, the processor renews the lease every third of it (with the
    /// `tokio` feature), so a slow handler is never taken over while its process is alive;
    /// the lease only bounds how long a crashed delivery blocks the event. If renewals
    /// fail until the lease may have run out, the handler is stopped (500) rather than
    /// run beside a redelivery. A delivery whose future is dropped releases its claim, or
    /// completes it if the handler had already succeeded. The lease is at most one day.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease
            .max(self.settings.deadline.unwrap_or_default().saturating_mul(2))
            .min(MAX_LEASE);
        self
    }

    /// Sets how long a store call may take before the delivery is answered 503.
    #[must_use]
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.settings.store_timeout = timeout;
        self
    }

    /// Sets how long the framework adapters wait for a request's whole body (10 s by
    /// default); a body still arriving then is answered 408 and nothing else is done.
    #[must_use]
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
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

    /// The body limit in bytes.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// The claim lease.
    pub fn lease(&self) -> Duration {
        self.settings.lease
    }

    /// Processes one delivery: the `Stripe-Signature` header (if the request had one) and
    /// the raw body. Never panics, even if the handler does.
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
            outcome
        }
        #[cfg(not(feature = "tracing"))]
        self.run(signature_header, body, started).await
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
        let event = match verified.parse() {
            Ok(event) => event,
            // A genuine v2 thin event sent to a snapshot endpoint: nothing to run, but it
            // is Stripe's and must not be retried for three days. Acknowledge it.
            Err(ParseError::ThinEventNotification) => {
                let mut o = Outcome::new(OutcomeKind::Ignored, started);
                o.secret_label = secret_label;
                return o;
            }
            Err(e) => {
                let mut o = Outcome::new(OutcomeKind::NotAnEvent(e), started);
                o.secret_label = secret_label;
                return o;
            }
        };
        #[cfg(feature = "tracing")]
        trace::record_event(&tracing::Span::current(), &event);
        let Dispatched { kind, attempt } = self.dispatcher.dispatch(&event, &self.settings).await;
        let mut o = Outcome::new(kind, started);
        o.secret_label = secret_label;
        o.attempt = attempt;
        o.event_id = Some(event.id().clone());
        o.event_type = Some(event.event_type().clone());
        o
    }

    /// Claims, handles and completes an event that was already verified and parsed (for
    /// example one read back from a queue).
    pub async fn process_event(&self, event: &Event) -> Outcome {
        let started = Instant::now();
        #[cfg(feature = "tracing")]
        let span = trace::delivery_span();
        #[cfg(feature = "tracing")]
        trace::record_event(&span, event);
        let dispatch = self.dispatcher.dispatch(event, &self.settings);
        #[cfg(feature = "tracing")]
        let dispatch = tracing::Instrument::instrument(dispatch, span.clone());
        let Dispatched { kind, attempt } = dispatch.await;
        let mut o = Outcome::new(kind, started);
        o.attempt = attempt;
        o.event_id = Some(event.id().clone());
        o.event_type = Some(event.event_type().clone());
        #[cfg(feature = "tracing")]
        trace::log_outcome(&span, &o);
        o
    }
}
