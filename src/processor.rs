//! The processor: verify → parse → claim → handle → complete or release.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::event::{Event, EventId, EventType, ParseError};
use crate::handler::{EventHandler, HandlerError};
use crate::idempotency::{Claim, ClaimToken, IdempotencyStore, StoreError};
use crate::signature::{SignatureError, Verifier};

/// The largest body the processor accepts by default: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// How long a handler may run by default before it is dropped and the delivery fails.
pub const DEFAULT_HANDLER_DEADLINE: Duration = Duration::from_secs(10);
/// How long a claim is leased by default. It is always at least twice the deadline.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// How long a store call may take by default before the delivery is answered 503.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// What happened to one delivery, and the HTTP status to answer it with.
#[derive(Debug)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// The handler ran and succeeded, and the event is recorded as completed. 200.
    Processed,
    /// The event was processed before; the handler did not run. 200.
    Duplicate,
    /// The handler does not act on this event type; nothing was claimed. 200.
    Ignored,
    /// The handler succeeded but the completion could not be recorded even after
    /// retries. Answered 200 (a 5xx would run the handler again); the claim's lease will
    /// expire and a later delivery may run the handler again, so alert on it.
    CompletionNotRecorded(StoreError),
    /// The handler succeeded but its lease had expired and another delivery took the
    /// event over. 200; the other delivery records the completion.
    LeaseLost,
    /// Another delivery holds the event. 409 with `Retry-After`.
    InProgress {
        /// How long until the other delivery's lease ends.
        retry_after: Duration,
    },
    /// The signature was missing, malformed, stale or wrong. 400.
    Rejected(SignatureError),
    /// The verified body is not a Stripe event. 400.
    NotAnEvent(ParseError),
    /// The body is longer than the limit; nothing else was done. 413.
    PayloadTooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The handler failed, panicked or ran past its deadline; the claim was released so
    /// Stripe's retry runs it again. 500.
    HandlerFailed(HandlerError),
    /// The store could not be reached; the handler did not run. 503.
    StoreUnavailable(StoreError),
}

impl OutcomeKind {
    /// A short stable name for logs and response bodies, like `processed` or
    /// `in_progress`.
    pub fn name(&self) -> &'static str {
        match self {
            OutcomeKind::Processed => "processed",
            OutcomeKind::Duplicate => "duplicate",
            OutcomeKind::Ignored => "ignored",
            OutcomeKind::CompletionNotRecorded(_) => "completion_not_recorded",
            OutcomeKind::LeaseLost => "lease_lost",
            OutcomeKind::InProgress { .. } => "in_progress",
            OutcomeKind::Rejected(_) => "bad_signature",
            OutcomeKind::NotAnEvent(_) => "not_an_event",
            OutcomeKind::PayloadTooLarge { .. } => "payload_too_large",
            OutcomeKind::HandlerFailed(_) => "handler_failed",
            OutcomeKind::StoreUnavailable(_) => "store_unavailable",
        }
    }
}

/// The result of [`Processor::process`]: what happened, the HTTP status to answer with,
/// and the fields of an operator's log line. It never holds a secret or the body.
#[derive(Debug)]
pub struct Outcome {
    kind: OutcomeKind,
    event_id: Option<EventId>,
    event_type: Option<EventType>,
    attempt: Option<u32>,
    duration: Duration,
    secret_label: Option<Arc<str>>,
}

impl Outcome {
    fn new(kind: OutcomeKind, started: Instant) -> Self {
        Self {
            kind,
            event_id: None,
            event_type: None,
            attempt: None,
            duration: started.elapsed(),
            secret_label: None,
        }
    }

    /// What happened.
    pub fn kind(&self) -> &OutcomeKind {
        &self.kind
    }

    /// The HTTP status to answer Stripe with. This is the one place the mapping lives:
    ///
    /// | Outcome | Status |
    /// |---|---|
    /// | processed, duplicate, ignored, completion not recorded, lease lost | 200 |
    /// | bad signature, not an event | 400 |
    /// | in progress elsewhere | 409 |
    /// | body too large | 413 |
    /// | handler failed | 500 |
    /// | store unavailable | 503 |
    pub fn status(&self) -> u16 {
        match self.kind {
            OutcomeKind::Processed
            | OutcomeKind::Duplicate
            | OutcomeKind::Ignored
            | OutcomeKind::CompletionNotRecorded(_)
            | OutcomeKind::LeaseLost => 200,
            OutcomeKind::Rejected(_) | OutcomeKind::NotAnEvent(_) => 400,
            OutcomeKind::InProgress { .. } => 409,
            OutcomeKind::PayloadTooLarge { .. } => 413,
            OutcomeKind::HandlerFailed(_) => 500,
            OutcomeKind::StoreUnavailable(_) => 503,
        }
    }

    /// Whether Stripe should consider the event delivered (a 2xx status).
    pub fn is_success(&self) -> bool {
        self.status() == 200
    }

    /// For a 409, the seconds to send in `Retry-After` (at least 1).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self.kind {
            OutcomeKind::InProgress { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
                    .map(|s| s.max(1))
            }
            _ => None,
        }
    }

    /// The event id, once the body was parsed.
    pub fn event_id(&self) -> Option<&EventId> {
        self.event_id.as_ref()
    }

    /// The event type, once the body was parsed.
    pub fn event_type(&self) -> Option<&EventType> {
        self.event_type.as_ref()
    }

    /// Which attempt this was (1 for the first), when the event was claimed.
    pub fn attempt(&self) -> Option<u32> {
        self.attempt
    }

    /// How long the delivery took.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The label of the secret that verified the request, if it has one.
    pub fn secret_label(&self) -> Option<&str> {
        self.secret_label.as_deref()
    }
}

/// Ties a [`Verifier`], an [`IdempotencyStore`] and an [`EventHandler`] together. Build it
/// once and share it (`Arc<Processor>`); frameworks only translate its [`Outcome`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use stripe_webhooks::{testing, MemoryStore, Processor, Router, SigningSecret, Verifier};
///
/// let secret = "whsec_test_secret";
/// let processor = Processor::new(
///     Verifier::new(SigningSecret::new(secret)?),
///     MemoryStore::new(),
///     Router::new().fallback(|_event| Box::pin(async { Ok(()) })),
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
    settings: DispatchSettings,
}

/// The settings a [`Dispatcher`] runs an event under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatchSettings {
    /// How long a claim is leased.
    pub lease: Duration,
    /// How long the handler may run (`None`: no limit).
    pub deadline: Option<Duration>,
    /// How long one store call may take before the delivery is answered 503.
    pub store_timeout: Duration,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            lease: DEFAULT_LEASE,
            deadline: Some(DEFAULT_HANDLER_DEADLINE),
            store_timeout: DEFAULT_STORE_TIMEOUT,
        }
    }
}

/// What a [`Dispatcher`] did with one event.
#[derive(Debug)]
#[non_exhaustive]
pub struct Dispatched {
    /// What happened.
    pub kind: OutcomeKind,
    /// Which attempt it was, when the event was claimed.
    pub attempt: Option<u32>,
}

impl Dispatched {
    /// A result with no claim attempt (duplicate, in progress, ignored, store down).
    pub fn unclaimed(kind: OutcomeKind) -> Self {
        Self {
            kind,
            attempt: None,
        }
    }

    /// A result of attempt number `attempt`.
    pub fn attempt(kind: OutcomeKind, attempt: u32) -> Self {
        Self {
            kind,
            attempt: Some(attempt),
        }
    }
}

/// The step after verify and parse: claim the event, run the handler, record the result.
///
/// [`Processor::new`] uses [`StoreDispatcher`] (any [`IdempotencyStore`] and
/// [`EventHandler`]). The SQL stores' inbox mode (`SqliteStore::inbox`,
/// `PostgresStore::inbox`) is another, running the handler inside the claim's
/// transaction.
#[async_trait::async_trait]
pub trait Dispatcher: Send + Sync + 'static {
    /// Claims, handles and records one verified, parsed event.
    async fn dispatch(&self, event: &Event, settings: &DispatchSettings) -> Dispatched;
}

/// The standard [`Dispatcher`]: claim in the store, run the handler outside any
/// transaction, then complete (retried briefly) or release.
pub struct StoreDispatcher {
    store: Arc<dyn IdempotencyStore>,
    handler: Arc<dyn EventHandler>,
    completion_retries: u32,
}

impl std::fmt::Debug for StoreDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDispatcher").finish_non_exhaustive()
    }
}

impl StoreDispatcher {
    /// Pairs a store and a handler.
    pub fn new(store: impl IdempotencyStore, handler: impl EventHandler) -> Self {
        Self {
            store: Arc::new(store),
            handler: Arc::new(handler),
            completion_retries: 3,
        }
    }
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("verifier", &self.verifier)
            .field("max_body", &self.max_body)
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
        Self::with_dispatcher(verifier, StoreDispatcher::new(store, handler))
    }

    /// A processor that hands parsed events to `dispatcher`, for example a SQL store's
    /// inbox mode.
    pub fn with_dispatcher(verifier: Verifier, dispatcher: impl Dispatcher) -> Self {
        Self {
            verifier,
            dispatcher: Arc::new(dispatcher),
            max_body: DEFAULT_MAX_BODY,
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
            .max(deadline.unwrap_or_default().saturating_mul(2));
        self
    }

    /// Sets the claim lease: how long another delivery waits before taking over the
    /// event of a delivery that crashed. It is kept at least twice the deadline.
    ///
    /// While the handler runs, the processor renews the lease every third of it (with the
    /// `tokio` feature), so a slow handler is never taken over while its process is alive;
    /// the lease only bounds how long a crashed delivery blocks the event. A delivery
    /// whose future is dropped (the client went away) releases its claim.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.settings.lease =
            lease.max(self.settings.deadline.unwrap_or_default().saturating_mul(2));
        self
    }

    /// Sets how long a store call may take before the delivery is answered 503.
    #[must_use]
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.settings.store_timeout = timeout;
        self
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
            let span = delivery_span();
            let outcome = self
                .run(signature_header, body, started)
                .instrument(span.clone())
                .await;
            log_outcome(&span, &outcome);
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
            Err(e) => return Outcome::new(OutcomeKind::Rejected(e), started),
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
        record_event(&tracing::Span::current(), &event);
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
        let span = delivery_span();
        #[cfg(feature = "tracing")]
        record_event(&span, event);
        let dispatch = self.dispatcher.dispatch(event, &self.settings);
        #[cfg(feature = "tracing")]
        let dispatch = tracing::Instrument::instrument(dispatch, span.clone());
        let Dispatched { kind, attempt } = dispatch.await;
        let mut o = Outcome::new(kind, started);
        o.attempt = attempt;
        o.event_id = Some(event.id().clone());
        o.event_type = Some(event.event_type().clone());
        #[cfg(feature = "tracing")]
        log_outcome(&span, &o);
        o
    }
}

#[async_trait::async_trait]
impl Dispatcher for StoreDispatcher {
    async fn dispatch(&self, event: &Event, settings: &DispatchSettings) -> Dispatched {
        if !self.handler.handles(event.event_type()) {
            return Dispatched::unclaimed(OutcomeKind::Ignored);
        }
        let t = settings.store_timeout;
        let claim = store_call(
            t,
            self.store
                .claim(event.id(), event.event_type().as_str(), settings.lease),
        )
        .await;
        let token = match claim {
            Ok(Claim::Acquired(token)) => token,
            Ok(Claim::Completed) => return Dispatched::unclaimed(OutcomeKind::Duplicate),
            Ok(Claim::InProgress { retry_after }) => {
                return Dispatched::unclaimed(OutcomeKind::InProgress { retry_after })
            }
            Err(e) => return Dispatched::unclaimed(OutcomeKind::StoreUnavailable(e)),
        };
        // Until the claim is completed or released, dropping this future (a client that
        // went away, a server that cancels requests) releases it instead of leaving it
        // held for the rest of the lease.
        let mut guard = ReleaseOnDrop {
            store: &self.store,
            token: Some(token.clone()),
        };
        let handled = renewing_lease(
            &*self.store,
            &token,
            settings,
            run_handler(handler_future(&*self.handler, event), settings.deadline),
        )
        .await;
        let dispatched = match handled {
            Ok(()) => Dispatched::attempt(self.complete(&token, t).await, token.attempt()),
            Err(e) => {
                // If the release fails too, the lease expiring frees the event instead.
                let _ = store_call(t, self.store.release(&token, &e.to_string())).await;
                Dispatched::attempt(OutcomeKind::HandlerFailed(e), token.attempt())
            }
        };
        guard.token = None;
        dispatched
    }
}

/// Calls [`EventHandler::handle`] with a panic in the call itself (before the first poll,
/// possible in a handler written without `async-trait`) turned into a failed future.
fn handler_future<'a>(
    handler: &'a dyn EventHandler,
    event: &'a Event,
) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>> {
    match catch_unwind(AssertUnwindSafe(|| handler.handle(event))) {
        Ok(fut) => fut,
        Err(payload) => {
            let e = HandlerError::Panicked(panic_message(&*payload));
            Box::pin(std::future::ready(Err(e)))
        }
    }
}

/// Releases a claim whose delivery was dropped before it completed or released it. The
/// release is spawned on the current tokio runtime; without one (or without the `tokio`
/// feature) the lease expiring frees the event instead.
struct ReleaseOnDrop<'a> {
    store: &'a Arc<dyn IdempotencyStore>,
    token: Option<ClaimToken>,
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        #[cfg(feature = "tokio")]
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(self.store);
            runtime.spawn(async move {
                let reason = "delivery cancelled before the handler finished";
                let _ = store.release(&token, reason).await;
            });
        }
        #[cfg(not(feature = "tokio"))]
        let _ = (token, self.store);
    }
}

/// Runs `work` (the handler) while renewing the claim's lease every third of the lease,
/// so a handler that runs longer than the lease is not taken over by a redelivery. The
/// renewal runs alongside the handler, never pausing it. A failed renewal is not fatal:
/// the next one tries again, and `complete` reports a lost lease.
#[cfg(feature = "tokio")]
async fn renewing_lease<T>(
    store: &dyn IdempotencyStore,
    token: &ClaimToken,
    settings: &DispatchSettings,
    work: impl Future<Output = T>,
) -> T {
    let every = (settings.lease / 3).max(Duration::from_millis(1));
    let mut work = std::pin::pin!(work);
    loop {
        let due = tokio::time::Instant::now() + every;
        if let Ok(out) = tokio::time::timeout_at(due, work.as_mut()).await {
            return out;
        }
        let mut renew = std::pin::pin!(store_call(
            settings.store_timeout,
            store.extend(token, settings.lease)
        ));
        let mut renewed = false;
        let finished = std::future::poll_fn(|cx| {
            if !renewed {
                if let Poll::Ready(result) = renew.as_mut().poll(cx) {
                    renewed = true;
                    note_renewal(&result);
                }
            }
            match work.as_mut().poll(cx) {
                Poll::Ready(out) => Poll::Ready(Some(out)),
                Poll::Pending if renewed => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if let Some(out) = finished {
            return out;
        }
    }
}

/// Without a runtime there is no timer to renew on: the handler must finish within the
/// lease.
#[cfg(not(feature = "tokio"))]
async fn renewing_lease<T>(
    _store: &dyn IdempotencyStore,
    _token: &ClaimToken,
    _settings: &DispatchSettings,
    work: impl Future<Output = T>,
) -> T {
    work.await
}

#[cfg(feature = "tokio")]
fn note_renewal(result: &Result<(), StoreError>) {
    #[cfg(feature = "tracing")]
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not renew the lease of a running handler");
    }
    #[cfg(not(feature = "tracing"))]
    let _ = result;
}

impl StoreDispatcher {
    async fn complete(&self, token: &ClaimToken, t: Duration) -> OutcomeKind {
        let mut last = None;
        for i in 0..=self.completion_retries {
            if i > 0 {
                pause(Duration::from_millis(50 << (i - 1))).await;
            }
            match store_call(t, self.store.complete(token)).await {
                Ok(()) => return OutcomeKind::Processed,
                Err(StoreError::LeaseLost { .. }) => return OutcomeKind::LeaseLost,
                Err(e) => last = Some(e),
            }
        }
        OutcomeKind::CompletionNotRecorded(
            last.unwrap_or_else(|| StoreError::unavailable("completion failed")),
        )
    }
}

/// Runs a handler's future with panics caught and the deadline applied: a panic becomes
/// [`HandlerError::Panicked`], a timeout [`HandlerError::DeadlineExceeded`]. For
/// [`Dispatcher`] implementations.
pub async fn run_handler<'a>(
    fut: Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>,
    deadline: Option<Duration>,
) -> Result<(), HandlerError> {
    let fut = CatchUnwind(fut);
    match deadline {
        Some(d) => with_timeout(d, fut)
            .await
            .unwrap_or(Err(HandlerError::DeadlineExceeded(d))),
        None => fut.await,
    }
}

/// Runs a store call with a timeout: past it, [`StoreError::Timeout`]. For
/// [`Dispatcher`] implementations.
pub async fn store_call<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    with_timeout(timeout, fut)
        .await
        .unwrap_or(Err(StoreError::Timeout(timeout)))
}

/// The span of one delivery: it covers verification, the handler and the store calls,
/// and carries only these fields (never a secret or the body).
#[cfg(feature = "tracing")]
fn delivery_span() -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "stripe_webhook",
        event_id = Empty,
        event_type = Empty,
        attempt = Empty,
        secret = Empty,
        outcome = Empty,
        status = Empty,
        duration_ms = Empty,
    )
}

#[cfg(feature = "tracing")]
fn record_event(span: &tracing::Span, event: &Event) {
    span.record("event_id", event.id().as_str());
    span.record("event_type", event.event_type().as_str());
}

/// Fills in the span's last fields and writes the one log line of the delivery.
#[cfg(feature = "tracing")]
fn log_outcome(span: &tracing::Span, o: &Outcome) {
    let status = o.status();
    let duration_ms = o.duration.as_secs_f64() * 1000.0;
    if let Some(attempt) = o.attempt {
        span.record("attempt", attempt);
    }
    if let Some(label) = o.secret_label.as_deref() {
        span.record("secret", label);
    }
    span.record("outcome", o.kind.name());
    span.record("status", status);
    span.record("duration_ms", duration_ms);
    let _enter = span.enter();
    if status >= 500 {
        tracing::error!(
            outcome = o.kind.name(),
            status,
            duration_ms,
            "webhook delivery"
        );
    } else if status >= 400 {
        tracing::warn!(
            outcome = o.kind.name(),
            status,
            duration_ms,
            "webhook delivery"
        );
    } else {
        tracing::info!(
            outcome = o.kind.name(),
            status,
            duration_ms,
            "webhook delivery"
        );
    }
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

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
