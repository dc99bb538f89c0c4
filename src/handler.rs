//! The application's side: [`EventHandler`] and the closure router [`EventRouter`].

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;

use crate::event::{Event, EventType};

/// The future an [`EventRouter`] route returns: `Box::pin(async move { … })`.
type RouteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// Why a handler did not process an event. The processor answers 500, so Stripe delivers
/// the event again, and releases its claim (except after
/// [`LeaseLost`](Self::LeaseLost), when the claim may no longer be its own).
#[derive(Debug, thiserror::Error)]
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
    /// retry (or the delivery that took over) runs it again, and nothing is released,
    /// since the claim may be another delivery's now. (A handler that returns this
    /// itself is treated as any other failure.)
    #[error("handler stopped: its claim's lease was lost")]
    LeaseLost,
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
/// use stripe_webhooks::{async_trait, Event, EventHandler, HandlerError};
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
///             _ => {}
///         }
///         Ok(())
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
}

type Route = Box<dyn for<'a> Fn(&'a Event) -> RouteFuture<'a> + Send + Sync>;

/// An [`EventHandler`] built from one closure per event type, plus an optional fallback.
/// (Named so that it never collides with `axum::Router` in an application's imports.)
///
/// Types with no route and no fallback are answered 200 without being claimed.
///
/// ```
/// use stripe_webhooks::{Event, EventType, HandlerError, EventRouter};
///
/// let router = EventRouter::new()
///     .on(EventType::CheckoutSessionCompleted, |event| {
///         Box::pin(async move {
///             if let Event::CheckoutSessionCompleted(session) = event {
///                 println!("provision {}", session.id);
///             }
///             Ok(())
///         })
///     })
///     .on(EventType::InvoicePaymentFailed, |_event| {
///         Box::pin(async { Err(HandlerError::new("mailer down")) })
///     })
///     .fallback(|event| {
///         Box::pin(async move {
///             println!("unhandled {}", event.event_type());
///             Ok(())
///         })
///     });
/// # let _ = router;
/// ```
#[derive(Default)]
pub struct EventRouter {
    routes: HashMap<EventType, Route>,
    fallback: Option<Route>,
}

impl fmt::Debug for EventRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRouter")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl EventRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes events of `event_type` to `f`, replacing any earlier route for it.
    #[must_use]
    pub fn on<F>(mut self, event_type: EventType, f: F) -> Self
    where
        F: for<'a> Fn(&'a Event) -> RouteFuture<'a> + Send + Sync + 'static,
    {
        self.routes.insert(event_type, Box::new(f));
        self
    }

    /// Routes every event that has no route of its own to `f`.
    #[must_use]
    pub fn fallback<F>(mut self, f: F) -> Self
    where
        F: for<'a> Fn(&'a Event) -> RouteFuture<'a> + Send + Sync + 'static,
    {
        self.fallback = Some(Box::new(f));
        self
    }
}

#[async_trait]
impl EventHandler for EventRouter {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        match self
            .routes
            .get(event.event_type())
            .or(self.fallback.as_ref())
        {
            Some(route) => route(event).await,
            None => Ok(()),
        }
    }

    fn handles(&self, event_type: &EventType) -> bool {
        self.fallback.is_some() || self.routes.contains_key(event_type)
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
}
