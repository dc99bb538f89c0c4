//! Stripe events delivered to Amazon EventBridge and Azure Event Grid.
//!
//! Stripe can send events to a cloud event bus instead of an HTTPS endpoint. There **no
//! `Stripe-Signature` exists**, and nothing here checks anything: these functions
//! trust the bytes they are given. Parse only what your platform delivered and you
//! have authenticated, then run it with
//! [`Processor::process_unsigned`](crate::Processor::process_unsigned): the same claim,
//! handle, complete path, and the same deduplication, as a signed delivery.
//!
//! # Authenticate the delivery first
//!
//! - **Invoked by the platform** (an AWS Lambda target of an EventBridge rule, an Azure
//!   Function with an Event Grid trigger): the platform's own credentials (IAM, the
//!   Functions runtime) authenticated it; the event is what the bus delivered.
//! - **Pushed to an HTTP endpoint** (an EventBridge API destination, an Event Grid
//!   webhook subscription): the URL is public, and anyone who learns it can post a
//!   forged `checkout.session.completed` (with no timestamp to refuse a replay). Check
//!   the credential the bus sends before parsing, and refuse the request without it:
//!   the API destination connection's `Authorization` or API-key header (basic, API
//!   key or OAuth), or Event Grid's Microsoft Entra bearer token (its signature, issuer,
//!   tenant and audience: your app registration). A forged event that carries the id
//!   of a genuine one to come would also take its claim, and the genuine one would be
//!   answered `duplicate`.
//!
//! Both families arrive this way: the envelope's payload is a snapshot event or a thin
//! event notification, told apart by its `object`.
//!
//! # Event Grid's handshake
//!
//! An Event Grid webhook subscription in the CloudEvents schema delivers nothing until
//! the endpoint has answered its validation request: an HTTP `OPTIONS` to the exact URL,
//! with a `WebHook-Request-Origin` header (`eventgrid.azure.net`). Answer it with 200
//! and a `WebHook-Allowed-Origin` header carrying the same value (and, if you like,
//! `WebHook-Allowed-Rate: *`); until then the subscription stays unvalidated. Nothing
//! here answers it for you: the handshake only says that the URL accepts deliveries,
//! and it proves nothing about a later `POST`. The `axum` and `actix` modules' webhook
//! routes answer any method but `POST` with 405 (they
//! are for Stripe's signed deliveries), so give the Event Grid endpoint its own route
//! that answers both methods.
//!
//! ```
//! use stripe_webhooks::cloud::{self, CloudEvent};
//!
//! let body = br#"{"version":"0","id":"1b2c","detail-type":"customer.created",
//!   "source":"aws.partner/stripe.com/ed_test_1","account":"123456789012",
//!   "time":"2026-10-30T14:03:27Z","region":"us-west-2","resources":[],
//!   "detail":{"id":"evt_1","object":"event","created":1793455407,"livemode":false,
//!     "data":{"object":{"id":"cus_1","object":"customer"}},"type":"customer.created"}}"#;
//! let CloudEvent::Snapshot(event) = cloud::parse_eventbridge(body)? else {
//!     panic!("a snapshot event");
//! };
//! assert_eq!(event.id().as_str(), "evt_1");
//! # Ok::<(), stripe_webhooks::ParseError>(())
//! ```

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{Event, EventNotification, ParseError};

/// A Stripe event taken out of a cloud envelope: a snapshot event or a thin event
/// notification.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CloudEvent {
    /// A snapshot event (`"object": "event"`).
    Snapshot(Event),
    /// A thin event notification (`"object": "v2.core.event"`).
    Thin(Box<EventNotification>),
}

impl CloudEvent {
    /// The event id.
    pub fn id(&self) -> &crate::EventId {
        match self {
            CloudEvent::Snapshot(e) => e.id(),
            CloudEvent::Thin(n) => &n.id,
        }
    }

    /// Parses a Stripe payload of either family.
    fn from_payload(payload: &RawValue) -> Result<Self, ParseError> {
        let bytes = payload.get().as_bytes();
        match Event::from_slice(bytes) {
            Ok(e) => Ok(CloudEvent::Snapshot(e)),
            Err(ParseError::ThinEventNotification) => {
                EventNotification::from_slice(bytes).map(|n| CloudEvent::Thin(Box::new(n)))
            }
            Err(e) => Err(e),
        }
    }
}

#[derive(Deserialize)]
struct EventBridge<'a> {
    #[serde(borrow)]
    detail: &'a RawValue,
}

#[derive(Deserialize)]
struct EventGrid<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
}

fn missing(what: &str) -> impl Fn(serde_json::Error) -> ParseError + '_ {
    move |e| {
        let mut err = ParseError::from_json(&e);
        if let ParseError::NotAnEvent { message, .. } = &mut err {
            *message = format!("not {what}: {message}");
        }
        err
    }
}

/// Takes the Stripe event out of an Amazon EventBridge event (its `detail`), **without
/// verifying anything**: call it only on a delivery you have authenticated (a Lambda
/// invocation, or an API destination's request whose credential you checked; see
/// [the module](self)).
///
/// # Errors
///
/// [`ParseError::InvalidJson`] for a body that is not JSON, [`ParseError::NotAnEvent`]
/// for one without a `detail` or whose `detail` is not a Stripe event.
pub fn parse_eventbridge(body: &[u8]) -> Result<CloudEvent, ParseError> {
    let envelope: EventBridge<'_> =
        serde_json::from_slice(body).map_err(missing("an EventBridge event"))?;
    CloudEvent::from_payload(envelope.detail)
}

/// Takes the Stripe events out of an Azure Event Grid delivery (CloudEvents schema:
/// each event's `data`; one event or a batch), **without verifying anything**: call it
/// only on a delivery you have authenticated (an Azure Function's Event Grid trigger,
/// or a webhook request whose Microsoft Entra token you validated; see
/// [the module](self)).
///
/// Each event of the batch is parsed on its own: one that is not a Stripe event does
/// not keep the others from running. Run the good ones, then answer for the batch: the
/// failure's own status if any did not run (409 or 5xx: Event Grid retries the whole
/// batch, and the events that ran are duplicates then, skipped by their claims), else
/// 400 if any was refused (Event Grid does not retry a 400: it dead-letters the batch,
/// where a dead-letter destination is set, with the refused event in it), else 200.
///
/// ```
/// # fn entra_token_is_valid(_: Option<&str>) -> bool { true }
/// # async fn run(processor: &stripe_webhooks::Processor, authorization: Option<&str>, body: &[u8]) -> u16 {
/// // A webhook subscription's request: its Entra bearer token checked first (with your
/// // JWT library: signature, issuer, tenant, audience).
/// if !entra_token_is_valid(authorization) {
///     return 401;
/// }
/// let Ok(batch) = stripe_webhooks::cloud::parse_event_grid(body) else {
///     return 400;
/// };
/// let mut status = 200;
/// for event in batch {
///     let outcome = match event {
///         Ok(event) => processor.process_unsigned(&event).await,
///         Err(_) => {
///             status = status.max(400);
///             continue;
///         }
///     };
///     if !outcome.is_success() {
///         status = status.max(outcome.status());
///     }
/// }
/// status
/// # }
/// ```
///
/// # Errors
///
/// [`ParseError::InvalidJson`] for a body that is not JSON, [`ParseError::NotAnEvent`]
/// for a single event that is not an Event Grid event (no `data`); in a batch, an
/// event without `data`, or whose `data` is not a Stripe event, is its own item's error.
pub fn parse_event_grid(body: &[u8]) -> Result<Vec<Result<CloudEvent, ParseError>>, ParseError> {
    let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let item = |raw: &RawValue| {
        serde_json::from_str::<EventGrid<'_>>(raw.get())
            .map_err(missing("an Event Grid event"))
            .and_then(|e| CloudEvent::from_payload(e.data))
    };
    if !batch {
        let envelope: EventGrid<'_> =
            serde_json::from_slice(body).map_err(missing("an Event Grid event"))?;
        return Ok(vec![CloudEvent::from_payload(envelope.data)]);
    }
    // Each item on its own: one without `data` (CloudEvents allows `data_base64`, or
    // none) does not cost the batch its Stripe events.
    let items: Vec<&RawValue> =
        serde_json::from_slice(body).map_err(missing("an Event Grid batch"))?;
    Ok(items.into_iter().map(item).collect())
}
