//! The typed event model.

mod envelope;
mod error;
mod notification;
mod objects;
#[rustfmt::skip]
mod types;

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

pub use envelope::{Envelope, EventId, EventRequest};
use envelope::{ObjectTag, WireDataOut, WireEvent, WireOut};
pub use error::{ObjectError, ParseError};
pub use notification::{EventNotification, RelatedObject};
pub use objects::*;
pub use types::{Event, EventType};

/// An event of a known type: its [`Envelope`], its typed object and the raw
/// `data.object` JSON.
///
/// It dereferences to the object, so `session.customer_email()` works directly on the
/// value an [`Event`] variant carries.
#[derive(Debug, Clone)]
pub struct TypedEvent<T> {
    pub(crate) envelope: Envelope,
    pub(crate) object: T,
    pub(crate) raw: Box<RawValue>,
}

impl<T> TypedEvent<T> {
    /// The envelope: id, type, created, livemode and so on.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The typed `data.object`.
    pub fn object(&self) -> &T {
        &self.object
    }

    /// The raw `data.object` JSON, for fields the struct does not carry.
    pub fn raw_object(&self) -> &RawValue {
        &self.raw
    }

    /// Takes the typed object out.
    pub fn into_object(self) -> T {
        self.object
    }
}

impl<T> Deref for TypedEvent<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.object
    }
}

/// The object of an event type the crate has no struct for yet. Read it from
/// [`TypedEvent::raw_object`]; a later release replaces `Untyped` with a struct without
/// renaming the variant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Untyped;

/// An event whose type this release does not know. Nothing is lost: the type string is
/// in the envelope and the object is kept raw.
#[derive(Debug, Clone)]
pub struct UnknownEvent {
    pub(crate) envelope: Envelope,
    pub(crate) raw: Box<RawValue>,
}

impl UnknownEvent {
    /// The envelope; its [`event_type`](Envelope::event_type) is
    /// [`EventType::Unknown`] with the wire name.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The type string as Stripe sent it.
    pub fn type_str(&self) -> &str {
        self.envelope.event_type.as_str()
    }

    /// The raw `data.object` JSON.
    pub fn raw_object(&self) -> &RawValue {
        &self.raw
    }
}

/// A known event type whose `data.object` did not parse into its struct (for example a
/// field changed type in an API version this release does not know). The event is kept
/// whole, with the reason.
#[derive(Debug, Clone)]
pub struct UnparsedEvent {
    pub(crate) envelope: Envelope,
    pub(crate) raw: Box<RawValue>,
    pub(crate) error: ObjectError,
}

impl UnparsedEvent {
    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The raw `data.object` JSON.
    pub fn raw_object(&self) -> &RawValue {
        &self.raw
    }

    /// Why the object did not parse, with its JSON path.
    pub fn error(&self) -> &ObjectError {
        &self.error
    }
}

fn unparsed(envelope: Envelope, raw: Box<RawValue>, e: &serde_json::Error) -> Event {
    let error = ObjectError::new(raw.get(), e);
    Event::Unparsed(Box::new(UnparsedEvent {
        envelope,
        raw,
        error,
    }))
}

fn build_typed<T: DeserializeOwned>(
    envelope: Envelope,
    raw: Box<RawValue>,
    wrap: fn(Box<TypedEvent<T>>) -> Event,
) -> Event {
    match serde_json::from_str::<T>(raw.get()) {
        Ok(object) => wrap(Box::new(TypedEvent {
            envelope,
            object,
            raw,
        })),
        Err(e) => unparsed(envelope, raw, &e),
    }
}

fn build_raw(
    envelope: Envelope,
    raw: Box<RawValue>,
    wrap: fn(Box<TypedEvent<Untyped>>) -> Event,
) -> Event {
    wrap(Box::new(TypedEvent {
        envelope,
        object: Untyped,
        raw,
    }))
}

fn build_source(
    envelope: Envelope,
    raw: Box<RawValue>,
    wrap: fn(Box<TypedEvent<PaymentSource>>) -> Event,
) -> Event {
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(borrow)]
        object: std::borrow::Cow<'a, str>,
    }
    let parsed = serde_json::from_str::<Tag<'_>>(raw.get()).and_then(|t| {
        Ok(match t.object.as_ref() {
            "card" => PaymentSource::Card(serde_json::from_str(raw.get())?),
            "bank_account" => PaymentSource::BankAccount(serde_json::from_str(raw.get())?),
            "source" => PaymentSource::Source(serde_json::from_str(raw.get())?),
            other => {
                return Err(serde::de::Error::custom(format_args!(
                    "`object` is {other:?}, expected card, bank_account or source"
                )))
            }
        })
    });
    match parsed {
        Ok(object) => wrap(Box::new(TypedEvent {
            envelope,
            object,
            raw,
        })),
        Err(e) => unparsed(envelope, raw, &e),
    }
}

fn build_unknown(envelope: Envelope, raw: Box<RawValue>) -> Event {
    Event::Unknown(Box::new(UnknownEvent { envelope, raw }))
}

/// Line and column just past the end of `body`, for errors found after parsing.
fn end_position(body: &[u8]) -> (usize, usize) {
    let line = 1 + body.iter().filter(|&&b| b == b'\n').count();
    let column = body.iter().rev().take_while(|&&b| b != b'\n').count();
    (line, column)
}

impl Event {
    /// Parses a snapshot event from a body.
    ///
    /// Use it on bodies you verified yourself or stored after verification; a request body
    /// should go through [`VerifiedPayload::parse`](crate::VerifiedPayload::parse).
    ///
    /// # Errors
    ///
    /// - [`ParseError::InvalidJson`] if the body is not JSON;
    /// - [`ParseError::NotAnEvent`] if it has no `id`, `type` or `data.object`, or its
    ///   `object` is not `"event"`;
    /// - [`ParseError::ThinEventNotification`] for a v2 thin event.
    pub fn from_slice(body: &[u8]) -> Result<Event, ParseError> {
        if let Some(first) = body.iter().position(|b| !b.is_ascii_whitespace()) {
            if body[first] != b'{' && body[first].is_ascii() && !body[first].is_ascii_alphabetic() {
                let line = 1 + body[..first].iter().filter(|&&b| b == b'\n').count();
                let column = 1 + body[..first]
                    .iter()
                    .rev()
                    .take_while(|&&b| b != b'\n')
                    .count();
                return Err(ParseError::NotAnEvent {
                    message: "expected a JSON object".to_owned(),
                    line,
                    column,
                    event_id: None,
                });
            }
        }
        let wire: WireEvent<'_> =
            serde_json::from_slice(body).map_err(|e| ParseError::from_json(&e))?;
        if wire.object == ObjectTag::ThinEvent {
            return Err(ParseError::ThinEventNotification);
        }
        let Some(data) = wire.data else {
            let (line, column) = end_position(body);
            return Err(ParseError::NotAnEvent {
                message: "missing field `data`".to_owned(),
                line,
                column,
                event_id: Some(wire.id.into_owned()),
            });
        };
        let envelope = Envelope {
            id: EventId::new(&*wire.id),
            event_type: EventType::from_wire(&wire.event_type),
            created: wire.created.unwrap_or_default(),
            livemode: wire.livemode,
            api_version: wire.api_version,
            account: wire.account,
            context: wire.context,
            request: wire.request,
            pending_webhooks: wire.pending_webhooks,
            previous_attributes: data.previous_attributes.map(RawValue::to_owned),
        };
        Ok(types::build(envelope, data.object.to_owned()))
    }

    /// The event id (`evt_…`).
    pub fn id(&self) -> &EventId {
        &self.envelope().id
    }

    /// The event type.
    pub fn event_type(&self) -> &EventType {
        &self.envelope().event_type
    }

    /// When the event was created, in Unix seconds.
    pub fn created(&self) -> i64 {
        self.envelope().created
    }

    /// Whether the event happened in live mode.
    pub fn livemode(&self) -> bool {
        self.envelope().livemode
    }

    /// The API version `data.object` is rendered in.
    pub fn api_version(&self) -> Option<&str> {
        self.envelope().api_version()
    }

    /// For Connect events, the connected account the event happened on.
    pub fn account(&self) -> Option<&str> {
        self.envelope().account()
    }

    /// The API request that caused the event.
    pub fn request(&self) -> Option<&EventRequest> {
        self.envelope().request()
    }

    /// How many endpoints had not yet acknowledged the event.
    pub fn pending_webhooks(&self) -> Option<u64> {
        self.envelope().pending_webhooks()
    }

    /// On `*.updated` events, the previous values of the changed attributes.
    pub fn previous_attributes(&self) -> Option<&RawValue> {
        self.envelope().previous_attributes()
    }

    /// Whether the event is [`Event::Unknown`] or [`Event::Unparsed`].
    pub fn is_untyped(&self) -> bool {
        matches!(self, Event::Unknown(_) | Event::Unparsed(_))
    }
}

impl Serialize for Event {
    /// Writes the event back in Stripe's JSON shape, so it can be queued and parsed again.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let env = self.envelope();
        WireOut {
            id: env.id.as_str(),
            object: "event",
            account: env.account(),
            api_version: env.api_version(),
            context: env.context(),
            created: env.created,
            data: WireDataOut {
                object: self.raw_object(),
                previous_attributes: env.previous_attributes(),
            },
            livemode: env.livemode,
            pending_webhooks: env.pending_webhooks,
            request: env.request(),
            event_type: env.event_type.as_str(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    /// Reads an event in Stripe's JSON shape. It needs a format that can hand over raw
    /// JSON, which is to say `serde_json`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Event::from_slice(raw.get().as_bytes()).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = std::convert::Infallible;
    /// Never fails: an unrecognised name becomes [`EventType::Unknown`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(EventType::from_wire(s))
    }
}

impl EventType {
    /// Whether this is [`EventType::Unknown`].
    pub fn is_unknown(&self) -> bool {
        matches!(self, EventType::Unknown(_))
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(EventType::from_wire(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_is_small() {
        assert!(std::mem::size_of::<Event>() <= 64);
    }

    #[test]
    fn end_position_counts_lines() {
        assert_eq!(end_position(b"{}"), (1, 2));
        assert_eq!(end_position(b"{\n}"), (2, 1));
    }
}
