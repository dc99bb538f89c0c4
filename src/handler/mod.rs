//! The application's side: [`EventHandler`] (snapshot events), [`ThinEventHandler`]
//! (thin events) and their closure routers (`router`).

mod router;

use std::error::Error as StdError;
use std::time::Duration;

use async_trait::async_trait;

use crate::event::{Event, EventNotification, EventType, ThinEventType};
use crate::idempotency::Watermark;

pub use router::{AccountFilter, EventRouter, ThinEventRouter};

/// Why a handler did not process an event. The processor answers 500, so Stripe delivers
/// the event again, and releases its claim (except after
/// [`LeaseLost`](Self::LeaseLost), when the claim may no longer be its own).
///
/// Its `Debug` output (and so an [`Outcome`](crate::Outcome)'s) shows a failure's or a
/// panic's text with the credentials it quotes hidden (API keys, signing secrets, client
/// secrets), as the crate keeps and logs it; `Display` (`to_string()`) gives the text as
/// the handler wrote it.
///
/// ```
/// use stripe_webhooks::HandlerError;
/// let e = HandlerError::new("refund failed with key sk_test_123");
/// assert!(!format!("{e:?}").contains("sk_test_123"));
/// assert!(e.to_string().contains("sk_test_123"));
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The handler returned an error.
    #[error("handler failed: {0}")]
    Failed(#[source] Box<dyn StdError + Send + Sync>),
    /// The handler panicked; the message is the panic's payload when it was a string.
    #[error("handler panicked: {0}")]
    Panicked(String),
    /// The handler ran past the processor's deadline and was dropped.
    #[error("handler passed its deadline of {0:?}")]
    DeadlineExceeded(Duration),
    /// The processor stopped the handler because its claim's lease was lost: the store
    /// said another delivery took the event over, or renewals failed until the lease may
    /// have run out. Stopping it keeps two runs of the handler from overlapping; Stripe's
    /// retry (or the delivery that took over) runs it again. The claim is released only
    /// if it is still this delivery's (the release is fenced: one another delivery took
    /// is left alone). (A handler that returns this itself is treated as any other
    /// failure.)
    #[error("handler stopped: its claim's lease was lost")]
    LeaseLost,
}

impl std::fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::secret::redact_text;
        match self {
            HandlerError::Failed(e) => f
                .debug_tuple("Failed")
                .field(&redact_text(&e.to_string()))
                .finish(),
            HandlerError::Panicked(m) => f.debug_tuple("Panicked").field(&redact_text(m)).finish(),
            HandlerError::DeadlineExceeded(d) => {
                f.debug_tuple("DeadlineExceeded").field(d).finish()
            }
            HandlerError::LeaseLost => f.write_str("LeaseLost"),
        }
    }
}

impl HandlerError {
    /// Wraps any error (or a string) as [`HandlerError::Failed`].
    ///
    /// ```
    /// use stripe_webhooks::HandlerError;
    /// let e = HandlerError::new("customer not found");
    /// assert_eq!(e.to_string(), "handler failed: customer not found");
    /// ```
    pub fn new(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        HandlerError::Failed(error.into())
    }
}

/// What the application does with each event. The processor calls it at most once per
/// event at a time, and not again after it has succeeded and its completion was recorded
/// (the README's "What it guarantees" lists the visible exceptions).
///
/// ```
/// use stripe_webhooks::{async_trait, Event, EventHandler, EventType, HandlerError};
///
/// struct Billing;
///
/// #[async_trait]
/// impl EventHandler for Billing {
///     async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
///         match event {
///             Event::CheckoutSessionCompleted(session) => {
///                 println!("provision {:?}", session.customer_email());
///             }
///             Event::InvoicePaymentFailed(invoice) => {
///                 println!("dunning for {:?}", invoice.customer_email);
///             }
///             Event::CustomerSubscriptionDeleted(sub) => {
///                 println!("revoke {}", sub.id);
///             }
///             // One of these types whose object this release could not read (Stripe
///             // changed its shape): fail, so it is recorded and comes back.
///             Event::Unparsed(e) => return Err(HandlerError::new(e.error().to_string())),
///             _ => {}
///         }
///         Ok(())
///     }
///
///     // Only these types are claimed: others are answered 200 `ignored`.
///     fn handles(&self, t: &EventType) -> bool {
///         matches!(
///             t,
///             EventType::CheckoutSessionCompleted
///                 | EventType::InvoicePaymentFailed
///                 | EventType::CustomerSubscriptionDeleted
///         )
///     }
/// }
/// ```
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Processes one event. Return an error to have Stripe deliver it again later.
    ///
    /// # Errors
    ///
    /// A [`HandlerError`] when the event was not processed.
    async fn handle(&self, event: &Event) -> Result<(), HandlerError>;

    /// Whether this handler acts on events of this type. When it returns `false` the
    /// processor answers 200 without claiming the event or calling
    /// [`handle`](Self::handle). The default handles everything.
    fn handles(&self, event_type: &EventType) -> bool {
        let _ = event_type;
        true
    }

    /// Whether this handler acts on this event: the check the processor makes before it
    /// claims the event. The default asks [`handles`](Self::handles) with the event's
    /// type; override it to filter on more than the type (the routers filter on the
    /// Connect account here, see [`AccountFilter`]).
    fn handles_event(&self, event: &Event) -> bool {
        self.handles(event.event_type())
    }

    /// For a handler that takes types [`EventType::ALL`] does not list: the wire names of the types it takes that this release does not know
    /// (types Stripe added after it, routed by name), or `["*"]` when it takes some it
    /// cannot name (a prefix route on a stem this release does not know). A processor adds
    /// them to its [`enabled_events`](crate::Processor::enabled_events), so that a
    /// [`Reconciler`](crate::reconcile::Reconciler) lists them too: nothing can ask
    /// [`handles`](Self::handles) about a name it has never seen. The default: none.
    /// [`EventRouter`](crate::EventRouter) gives its routes'.
    fn unknown_types(&self) -> Vec<String> {
        Vec::new()
    }

    /// Called instead of [`handle`](Self::handle) by a processor with the ordering guard
    /// ([`Processor::ordered`](crate::Processor::ordered)) for an event older than the
    /// last one applied to its object (`watermark`), so an old state is never applied
    /// over a newer one. The default does nothing; override it to log or count them.
    /// An error answers 500, like `handle`'s.
    ///
    /// # Errors
    ///
    /// A [`HandlerError`] to have Stripe deliver the event again.
    async fn handle_stale(&self, event: &Event, watermark: &Watermark) -> Result<(), HandlerError> {
        let _ = (event, watermark);
        Ok(())
    }

    /// Whether the ordering guard ([`Processor::ordered`](crate::Processor::ordered))
    /// applies to events of this type. The default: every type. Return `false` for the
    /// types whose every event must run whatever its age (`charge.succeeded`,
    /// `invoice.paid`: a payment to record, a receipt to send): they are claimed and run
    /// as an unguarded processor runs them, so they are never answered `stale`, and
    /// they neither wait for their object's lock nor move its watermark.
    /// [`EventRouter::unordered`](crate::EventRouter::unordered) sets it per type. Give a
    /// thin route beside it the same answer
    /// ([`ThinEventHandler::is_ordered`]). (A queue worker's per-object order,
    /// [`Worker::with_per_object_order`](crate::queue::Worker::with_per_object_order), is
    /// another thing: it runs an object's jobs one at a time whatever their type, and
    /// drops none.)
    fn is_ordered(&self, event_type: &EventType) -> bool {
        let _ = event_type;
        true
    }
}

#[async_trait]
impl<H: EventHandler + ?Sized> EventHandler for std::sync::Arc<H> {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        (**self).handle(event).await
    }

    fn handles(&self, event_type: &EventType) -> bool {
        (**self).handles(event_type)
    }

    fn handles_event(&self, event: &Event) -> bool {
        (**self).handles_event(event)
    }

    fn unknown_types(&self) -> Vec<String> {
        (**self).unknown_types()
    }

    async fn handle_stale(&self, event: &Event, watermark: &Watermark) -> Result<(), HandlerError> {
        (**self).handle_stale(event, watermark).await
    }

    fn is_ordered(&self, event_type: &EventType) -> bool {
        (**self).is_ordered(event_type)
    }
}

/// What the application does with each thin event notification: the thin counterpart of
/// [`EventHandler`], with the same guarantees. The processor claims a notification under
/// its [`dedupe_key`](EventNotification::dedupe_key), so a change delivered both as a
/// snapshot and as a thin event runs once across both handlers.
///
/// A thin event carries no object: fetch the
/// [`related_object`](EventNotification::related_object) when you need its state.
///
/// ```
/// use stripe_webhooks::{async_trait, EventNotification, HandlerError, ThinEventHandler, ThinEventType};
///
/// struct Sync;
///
/// #[async_trait]
/// impl ThinEventHandler for Sync {
///     async fn handle(&self, n: &EventNotification) -> Result<(), HandlerError> {
///         if n.event_type == ThinEventType::V1CustomerUpdated {
///             println!("refetch {:?}", n.related_object_id());
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait ThinEventHandler: Send + Sync + 'static {
    /// Processes one notification. Return an error to have Stripe deliver it again later.
    ///
    /// # Errors
    ///
    /// A [`HandlerError`] when the event was not processed.
    async fn handle(&self, notification: &EventNotification) -> Result<(), HandlerError>;

    /// Whether this handler acts on notifications of this type; when it returns `false`
    /// the processor answers 200 without claiming. The default handles everything.
    fn handles(&self, event_type: &ThinEventType) -> bool {
        let _ = event_type;
        true
    }

    /// Whether this handler acts on this notification (by default, by its type).
    fn handles_notification(&self, notification: &EventNotification) -> bool {
        self.handles(&notification.event_type)
    }

    /// For a handler that takes types [`ThinEventType::ALL`] does not list: the wire names of the types it takes that this release does not know
    /// (types Stripe added after it, routed by name), or `["*"]` when it takes some it
    /// cannot name (a prefix route on a stem this release does not know). A processor adds
    /// them to its [`enabled_events`](crate::Processor::enabled_events), so that a
    /// [`Reconciler`](crate::reconcile::Reconciler) lists them too: nothing can ask
    /// [`handles`](Self::handles) about a name it has never seen. The default: none.
    /// [`ThinEventRouter`](crate::ThinEventRouter) gives its routes'.
    fn unknown_types(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the ordering guard ([`Processor::thin_ordered`](crate::Processor::thin_ordered))
    /// applies to a notification claimed under its snapshot twin of this type (the
    /// twin's, `customer.updated` for `v1.customer.updated`), as
    /// [`EventHandler::is_ordered`] does on the snapshot route: give both routes the same
    /// answer. The default: every type.
    /// [`ThinEventRouter::unordered`](crate::ThinEventRouter::unordered) sets it per type.
    fn is_ordered(&self, snapshot_type: &EventType) -> bool {
        let _ = snapshot_type;
        true
    }
}

#[async_trait]
impl<H: ThinEventHandler + ?Sized> ThinEventHandler for std::sync::Arc<H> {
    async fn handle(&self, notification: &EventNotification) -> Result<(), HandlerError> {
        (**self).handle(notification).await
    }

    fn handles(&self, event_type: &ThinEventType) -> bool {
        (**self).handles(event_type)
    }

    fn handles_notification(&self, notification: &EventNotification) -> bool {
        (**self).handles_notification(notification)
    }

    fn unknown_types(&self) -> Vec<String> {
        (**self).unknown_types()
    }

    fn is_ordered(&self, snapshot_type: &EventType) -> bool {
        (**self).is_ordered(snapshot_type)
    }
}
