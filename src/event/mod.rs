//! The typed event model.

mod envelope;
mod error;
mod thin;
#[rustfmt::skip]
mod thin_types;
#[rustfmt::skip]
mod types;

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::objects::map_only::MapOnly;
use crate::objects::PaymentSource;
pub use envelope::{Envelope, EventId, EventRequest};
use envelope::{
    ObjectTag, WireData, WireDataId, WireDataOut, WireDataTyped, WireEvent, WireLocate, WireOut,
};
pub use error::{ObjectError, ParseError};
#[cfg(any(test, feature = "testing"))]
pub(crate) use thin::rfc3339_millis;
pub(crate) use thin::{rfc3339_from, rfc3339_seconds, twin_type, TYPES_WITHOUT_OBJECT_ID};
pub use thin::{
    AccountLinkReturned, AccountPersonData, CapabilityStatusUpdated, EventChanges,
    EventNotification, EventReason, InvoiceUpcoming, MeterErrorReason, MeterErrorReport,
    MeterErrorType, MeterSampleError, MeterSampleRequest, ReasonRequest, RelatedObject,
    ThinEventData,
};
pub use thin_types::ThinEventType;
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
    pub(crate) raw: RawObject,
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
        self.raw.get()
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

/// An event whose type this release does not know. Nothing is lost: the type string is
/// in the envelope and the object is kept raw.
#[derive(Debug, Clone)]
pub struct UnknownEvent {
    pub(crate) envelope: Envelope,
    pub(crate) raw: RawObject,
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
        self.raw.get()
    }
}

/// A known event type whose `data.object` did not parse into its struct (for example a
/// field changed type in an API version this release does not know). The event is kept
/// whole, with the reason.
#[derive(Debug, Clone)]
pub struct UnparsedEvent {
    pub(crate) envelope: Envelope,
    pub(crate) raw: RawObject,
    pub(crate) error: ObjectError,
}

impl UnparsedEvent {
    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The raw `data.object` JSON.
    pub fn raw_object(&self) -> &RawValue {
        self.raw.get()
    }

    /// Why the object did not parse, with its JSON path.
    pub fn error(&self) -> &ObjectError {
        &self.error
    }
}

/// `data.object` as Stripe sent it. The two-pass parse keeps it as it goes; the one-pass
/// parse keeps a copy of the body instead, and finds the object in it the first time it
/// is asked for (most handlers never ask).
#[derive(Clone)]
pub(crate) struct RawObject(RawInner);

#[derive(Clone)]
enum RawInner {
    Kept(Box<RawValue>),
    InBody {
        body: Box<str>,
        found: OnceLock<Option<Box<RawValue>>>,
    },
}

impl RawObject {
    fn kept(raw: Box<RawValue>) -> Self {
        Self(RawInner::Kept(raw))
    }

    fn in_body(body: &str) -> Self {
        Self(RawInner::InBody {
            body: body.into(),
            found: OnceLock::new(),
        })
    }

    pub(crate) fn get(&self) -> &RawValue {
        match &self.0 {
            RawInner::Kept(raw) => raw,
            RawInner::InBody { body, found } => found
                .get_or_init(|| {
                    serde_json::from_str::<WireLocate<'_>>(body)
                        .ok()
                        .map(|w| w.data.object.to_owned())
                })
                .as_deref()
                // The body parsed once already, so the object is found; `null` stands
                // in only if that somehow failed, rather than a panic.
                .unwrap_or(RawValue::NULL),
        }
    }
}

/// The object's JSON, with credentials such as `client_secret` hidden
/// (`RawValue(<json>)`).
impl fmt::Debug for RawObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RawValue({})",
            crate::secret::debug_json(self.get().get())
        )
    }
}

fn unparsed(envelope: Envelope, raw: Box<RawValue>, e: &serde_json::Error) -> Event {
    let error = ObjectError::new(raw.get(), e);
    Event::Unparsed(Box::new(UnparsedEvent {
        envelope,
        raw: RawObject::kept(raw),
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
            raw: RawObject::kept(raw),
        })),
        Err(e) => unparsed(envelope, raw, &e),
    }
}

/// The one-pass parse: the envelope and `data.object` (straight into `T`) together, for
/// a body whose type was read from its end. `None` whenever anything is off (the type
/// differs, the object does not fit `T`, a thin event, bad JSON): the two-pass parse then
/// gives the answer, and the error, it always gave.
fn one_pass<T: DeserializeOwned>(
    body: &[u8],
    ty: &EventType,
    wrap: fn(Box<TypedEvent<T>>) -> Event,
) -> Option<Event> {
    // Checked whole: serde_json skips the members a struct ignores without checking
    // their UTF-8, where the two-pass parse (which keeps `data.object` raw) rejects it.
    let text = std::str::from_utf8(body).ok()?;
    let wire: WireEvent<'_, WireDataTyped<'_, T>> = serde_json::from_str(text).ok()?;
    if wire.head.object != ObjectTag::Event || wire.head.event_type != ty.as_str() {
        return None;
    }
    let (mut envelope, data) = wire.split_as(ty.clone());
    let data = data?;
    envelope.previous_attributes = data.previous_attributes.map(RawValue::to_owned);
    Some(wrap(Box::new(TypedEvent {
        envelope,
        object: data.object,
        raw: RawObject::in_body(text),
    })))
}

/// The `type` of an event body when it is the last member of the top-level object, as
/// Stripe writes it: `…, "type": "invoice.paid"\n}`. Only a guess, which the one-pass
/// parse then checks.
fn type_at_end(body: &[u8]) -> Option<&str> {
    fn trim_end(mut s: &[u8]) -> &[u8] {
        while let [rest @ .., b' ' | b'\t' | b'\n' | b'\r'] = s {
            s = rest;
        }
        s
    }
    let rest = trim_end(trim_end(body).strip_suffix(b"}")?).strip_suffix(b"\"")?;
    let open = rest.iter().rposition(|&b| b == b'"')?;
    let value = &rest[open + 1..];
    if value.contains(&b'\\') {
        return None;
    }
    trim_end(trim_end(&rest[..open]).strip_suffix(b":")?).strip_suffix(b"\"type\"")?;
    std::str::from_utf8(value).ok()
}

/// As [`build_typed`], for a generated object: `data.object` is parsed into a
/// `serde_json::Value` and converted, leniently (see [`objects`](crate::objects)). Only
/// an object that is not a JSON object at all, or that a `Value` cannot hold, ends up
/// [`Event::Unparsed`].
fn build_generated<T: crate::objects::FromJson>(
    envelope: Envelope,
    raw: Box<RawValue>,
    wrap: fn(Box<TypedEvent<T>>) -> Event,
) -> Event {
    match generated_value(&raw).map(T::from_json) {
        Some(Some(object)) => wrap(Box::new(TypedEvent {
            envelope,
            object,
            raw: RawObject::kept(raw),
        })),
        _ => unparsed_generated(envelope, raw),
    }
}

fn generated_value(raw: &RawValue) -> Option<serde_json::Value> {
    serde_json::from_str(raw.get()).ok()
}

/// The [`Event::Unparsed`] of a generated object that is not a JSON object.
fn unparsed_generated(envelope: Envelope, raw: Box<RawValue>) -> Event {
    // Read as a map, so that the error says where (`invalid type: string "co_1",
    // expected a map at line 1 column 6`; a custom error has no position).
    let e = match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw.get()) {
        Err(e) => e,
        Ok(_) => serde::de::Error::custom("expected a JSON object"),
    };
    unparsed(envelope, raw, &e)
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
            // A kind of source this release does not know: kept as it is.
            _ => PaymentSource::Unknown(Box::new(serde_json::from_str(raw.get())?)),
        })
    });
    match parsed {
        Ok(object) => wrap(Box::new(TypedEvent {
            envelope,
            object,
            raw: RawObject::kept(raw),
        })),
        Err(e) => unparsed(envelope, raw, &e),
    }
}

fn build_unknown(envelope: Envelope, raw: Box<RawValue>) -> Event {
    Event::Unknown(Box::new(UnknownEvent {
        envelope,
        raw: RawObject::kept(raw),
    }))
}

/// The connected account a `context` names: its last part, when that is an `acct_…`.
pub(crate) fn context_account(context: &str) -> Option<&str> {
    let last = context.rsplit('/').next().unwrap_or(context);
    last.starts_with("acct_").then_some(last)
}

/// The key the ordering guard keeps an object's watermark and lock under: its id, within
/// its connected account (`acct_…/id`) for a Connect event, and within the mode for a
/// test-mode Connect event (`acct_…/test/id`). Some ids are unique only within an
/// account (a capability is `card_payments` on every account), so one account's event
/// must never be judged against another's watermark; and a connected account, with its
/// capabilities, has the same ids in both modes, while a live Connect endpoint receives
/// the test-mode events of its connected accounts too, so a test-mode change must never
/// make a live one stale. (The platform's own objects are not keyed by mode: a platform
/// endpoint receives one mode's events, and a processor that takes both modes, with both
/// endpoints' secrets, orders objects whose ids you choose, such as a product `gold`,
/// across them: give each mode its own store, `with_livemode` on each processor.)
/// An id you chose for a product, plan or price (`gold`, not `prod_…` or `price_…`), and
/// any coupon's, is keyed within its type ([`chosen_id_namespace`]: `product/gold`,
/// `price/gold`, `coupon/gold`), since a product, a plan and a coupon may all be `gold`,
/// and one's change must never make the other's stale. An empty id names no object:
/// `None` (never a bare `acct_…/`).
///
/// `object_type` is the object's type (a thin event's `related_object.type`), or the
/// snapshot event's type, whose first part names it (`product.updated`).
pub(crate) fn scoped_object_key(
    account: Option<&str>,
    livemode: bool,
    object_type: &str,
    object_id: &str,
) -> Option<String> {
    if object_id.is_empty() {
        return None;
    }
    let kind = object_type.split('.').next().unwrap_or(object_type);
    let id: std::borrow::Cow<'_, str> = match chosen_id_namespace(kind, object_id) {
        Some(namespace) => format!("{namespace}/{object_id}").into(),
        None => object_id.into(),
    };
    Some(match account {
        Some(account) if livemode => format!("{account}/{id}"),
        Some(account) => format!("{account}/test/{id}"),
        None => id.into_owned(),
    })
}

/// The namespace the ordering guard keys an object of type `kind` with id `id` in, for
/// the types whose ids you may choose when you create them (products, coupons, and
/// plans, which are prices under the same id): `product` or `price` when `id` is not
/// one Stripe made (`prod_…`; `price_…`, `plan_…`), and `coupon` always (Stripe's own
/// coupon ids have no prefix), so that a product `gold`, a plan `gold` and a coupon
/// `gold` are three objects. Ids Stripe made keep their bare key: they are unique
/// across types by their prefixes.
fn chosen_id_namespace(kind: &str, id: &str) -> Option<&'static str> {
    match kind {
        "product" if !id.starts_with("prod_") => Some("product"),
        "plan" | "price" if !(id.starts_with("price_") || id.starts_with("plan_")) => Some("price"),
        "coupon" => Some("coupon"),
        _ => None,
    }
}

/// Line and column just past the end of `body`, for errors found after parsing.
fn end_position(body: &[u8]) -> (usize, usize) {
    let line = 1 + body.iter().filter(|&&b| b == b'\n').count();
    let column = body.iter().rev().take_while(|&&b| b != b'\n').count();
    (line, column)
}

/// What the ack-fast path needs of a snapshot event: the keys it queues the body under,
/// read without typing `data.object` (the worker does that when it runs the job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventHead {
    pub(crate) id: EventId,
    pub(crate) event_type: String,
    pub(crate) created: i64,
    pub(crate) livemode: bool,
    /// [`Event::ordering_key`]: `data.object.id`, within its connected account
    /// (`acct_…/id`, or `acct_…/test/id` in test mode) for a Connect event, within its
    /// type for an id you chose (`product/gold`).
    pub(crate) object_id: Option<String>,
}

impl EventHead {
    /// The head of a snapshot event body: what [`Event::from_slice`] reads, with the same
    /// answer for every body (any body the lean read refuses goes through the full parse,
    /// which gives the error, or the head, it always gave).
    pub(crate) fn from_slice(body: &[u8]) -> Result<EventHead, ParseError> {
        match Self::lean(body) {
            Some(head) => Ok(head),
            None => Event::from_slice(body).map(|e| EventHead::of(&e)),
        }
    }

    /// The envelope and `data.object.id` in one pass that skips the rest of the object.
    /// `None` when anything is off: not UTF-8 (the full parse refuses it), not a JSON
    /// event object, a thin event, no `data.object`.
    fn lean(body: &[u8]) -> Option<EventHead> {
        let text = std::str::from_utf8(body).ok()?;
        let wire: WireEvent<'_, WireDataId<'_>> = serde_json::from_str(text).ok()?;
        if wire.head.object != ObjectTag::Event {
            return None;
        }
        let data = wire.data?;
        // Keyed as `Event::ordering_key` keys it: within the connected account.
        let account = wire
            .head
            .account
            .as_deref()
            .or_else(|| wire.head.context.as_deref().and_then(context_account));
        let object_id = data.object_id.and_then(|id| {
            scoped_object_key(account, wire.head.livemode, &wire.head.event_type, &id)
        });
        Some(EventHead {
            id: EventId::new(&*wire.head.id),
            event_type: wire.head.event_type.into_owned(),
            created: wire.head.created.unwrap_or_default(),
            livemode: wire.head.livemode,
            object_id,
        })
    }

    /// The head of a parsed event.
    pub(crate) fn of(event: &Event) -> EventHead {
        EventHead {
            id: event.id().clone(),
            event_type: event.event_type().as_str().to_owned(),
            created: event.created(),
            livemode: event.livemode(),
            object_id: event.ordering_key(),
        }
    }
}

impl Event {
    /// Parses a snapshot event from a body, without verification: the crate's one
    /// parse, behind [`VerifiedPayload::parse`](crate::VerifiedPayload::parse) and
    /// [`dangerous::parse_unverified`](crate::dangerous::parse_unverified).
    pub(crate) fn from_slice(body: &[u8]) -> Result<Event, ParseError> {
        if let Some(first) = body.iter().position(|b| !b.is_ascii_whitespace()) {
            // A JSON value that is not an object (an array, a string, a number); anything
            // else, and what only starts like one (`502 Bad Gateway`), is for the JSON
            // parser to name (`InvalidJson`).
            if matches!(body[first], b'[' | b'"' | b'-' | b'0'..=b'9') {
                // Checked whole: serde_json skips a string without checking its UTF-8.
                let text = match std::str::from_utf8(body) {
                    Ok(text) => text,
                    Err(e) => return Err(ParseError::not_utf8(body, &e)),
                };
                if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                    return Err(ParseError::from_json(&e));
                }
                let (line, column) = error::position(body, first);
                return Err(ParseError::NotAnEvent {
                    message: "expected a JSON object".to_owned(),
                    line,
                    column,
                    event_id: None,
                });
            }
        }
        // Stripe writes `type` last: read it from the end, and parse the object in the
        // same pass as the envelope.
        if let Some(ty) = type_at_end(body).map(EventType::from_wire) {
            if let Some(event) = types::parse_one_pass(&ty, body) {
                return Ok(event);
            }
        }
        // Checked whole, as the one-pass parse does: serde_json skips the members it
        // ignores without checking their UTF-8.
        let text = match std::str::from_utf8(body) {
            Ok(text) => text,
            Err(e) => return Err(ParseError::not_utf8(body, &e)),
        };
        let wire: WireEvent<'_, MapOnly<WireData<'_>>> = match serde_json::from_str(text) {
            Ok(wire) => wire,
            // A thin event whose `data` is not a snapshot's (the fetched form of some
            // types, `data.developer_message_summary`…) fails the envelope: say it is
            // thin, so the callers that take both families parse it as one.
            Err(_) if is_thin_envelope(body) => return Err(ParseError::ThinEventNotification),
            Err(e) => return Err(ParseError::from_json(&e).with_id_from(body)),
        };
        if wire.head.object == ObjectTag::ThinEvent {
            return Err(ParseError::ThinEventNotification);
        }
        let (mut envelope, data) = wire.split();
        let Some(MapOnly(data)) = data else {
            let (line, column) = end_position(body);
            return Err(ParseError::NotAnEvent {
                message: "missing field `data`".to_owned(),
                line,
                column,
                event_id: Some(envelope.id.as_str().to_owned()),
            });
        };
        envelope.previous_attributes = data.previous_attributes.map(RawValue::to_owned);
        Ok(types::build(envelope, data.object.to_owned()))
    }

    /// This event as on the connected account `account`, when it names none: a
    /// reconciler listing a connected account's events (`Stripe-Account`) keys them, and
    /// fetches their objects, as their webhook deliveries would be.
    pub(crate) fn on_account(self, account: &str) -> Event {
        if self.account().is_some() {
            return self;
        }
        self.with_envelope(|e| e.account = Some(account.to_owned()))
    }

    /// The same event in `context` (`Stripe-Context` a reconciler listed it with), unless
    /// it names an account or a context of its own.
    pub(crate) fn in_context(self, context: &str) -> Event {
        if self.account().is_some() || self.context().is_some() {
            return self;
        }
        self.with_envelope(|e| e.context = Some(context.to_owned()))
    }

    /// The same object in this event's envelope as `edit` changes it, typed again.
    fn with_envelope(&self, edit: impl FnOnce(&mut Envelope)) -> Event {
        let mut envelope = self.envelope().clone();
        edit(&mut envelope);
        types::build(envelope, self.raw_object().to_owned())
    }

    /// The same envelope around another `data.object` (for example the object fetched
    /// again from the API), typed as a body with that object would be.
    pub(crate) fn with_object(&self, raw: Box<RawValue>) -> Event {
        types::build(self.envelope().clone(), raw)
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

    /// For Connect events, the connected account the event happened on: the event's
    /// `account`, or else the last part of its [`context`](Self::context) when that
    /// names an account (an event from an organization or Accounts v2 destination
    /// carries only `context`).
    pub fn account(&self) -> Option<&str> {
        self.envelope()
            .account()
            .or_else(|| self.context().and_then(context_account))
    }

    /// For events from organization or Connect contexts, the `context` string (for
    /// example `acct_1…`, or a path of them).
    pub fn context(&self) -> Option<&str> {
        self.envelope().context()
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

    /// The object id the ordering guard keys on: [`object_id`](Self::object_id), or for
    /// an event whose object did not parse (or is of an unknown type) the raw
    /// `data.object.id`.
    pub(crate) fn ordering_key(&self) -> Option<String> {
        let event_type = self.event_type().as_str();
        if let Some(id) = self.object_id() {
            return scoped_object_key(self.account(), self.livemode(), event_type, id);
        }
        #[derive(Deserialize)]
        struct Id<'a> {
            #[serde(borrow, default)]
            id: Option<std::borrow::Cow<'a, str>>,
        }
        serde_json::from_str::<MapOnly<Id<'_>>>(self.raw_object().get())
            .ok()
            .and_then(|o| o.0.id)
            .and_then(|id| scoped_object_key(self.account(), self.livemode(), event_type, &id))
    }

    /// Whether the event's object is not typed: [`Event::Unknown`] or
    /// [`Event::Unparsed`]. Every other variant carries a struct of
    /// [`objects`](crate::objects). Read an untyped object from
    /// [`raw_object`](Self::raw_object).
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
    /// Reads an event in Stripe's JSON shape **without verifying any signature**, as
    /// [`dangerous::parse_unverified`](crate::dangerous::parse_unverified) does: for
    /// events you verified before and stored (a queue, a database), never for a request
    /// body. It needs a format that can hand over raw JSON, which is to say
    /// `serde_json`.
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

/// Whether `body` is a JSON object whose `object` is `v2.core.event` (read on the error
/// path only: every other member is skipped).
fn is_thin_envelope(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow, default)]
        object: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Head<'_>>(body)
        .is_ok_and(|h| h.object.as_deref() == Some("v2.core.event"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_is_read_from_the_end_only_where_stripe_puts_it() {
        assert_eq!(
            type_at_end(br#"{"id":"e","type":"invoice.paid"}"#),
            Some("invoice.paid")
        );
        assert_eq!(
            type_at_end(b"{\n  \"id\": \"e\",\n  \"type\" :\t\"invoice.paid\"\n}\n"),
            Some("invoice.paid")
        );
        // A nested `type`, an escape, no `type`, or not JSON at all: no guess.
        assert_eq!(type_at_end(br#"{"data":{"type":"x"}}"#), None);
        assert_eq!(type_at_end(br#"{"data":{"type":"x"} }"#), None);
        assert_eq!(type_at_end(br#"{"type":"invoice\u002epaid"}"#), None);
        assert_eq!(type_at_end(br#"{"id":"e","kind":"invoice.paid"}"#), None);
        assert_eq!(type_at_end(b"\"type\": \"x\"}"), Some("x"));
        assert_eq!(type_at_end(b""), None);
    }

    #[cfg(feature = "testing")]
    #[test]
    fn one_pass_takes_typed_events_and_leaves_the_rest() {
        let body = crate::testing::event_for_type("evt_1", "checkout.session.completed")
            .unwrap_or_default();
        let ty = EventType::CheckoutSessionCompleted;
        let event = types::parse_one_pass(&ty, body.as_bytes());
        assert!(matches!(event, Some(Event::CheckoutSessionCompleted(_))));
        // The type named at the end must be the event's own.
        assert!(
            types::parse_one_pass(&EventType::CheckoutSessionExpired, body.as_bytes()).is_none()
        );
        // Generated objects take the two-pass parse.
        assert!(types::parse_one_pass(&EventType::BalanceAvailable, body.as_bytes()).is_none());
        // The fixtures of the main hand-written objects take the one-pass parse.
        for ty in [
            "invoice.payment_failed",
            "customer.subscription.updated",
            "payment_intent.succeeded",
            "charge.refunded",
            "customer.created",
        ] {
            let body = crate::testing::event_for_type("evt_1", ty).unwrap_or_default();
            let event = types::parse_one_pass(&EventType::from_wire(ty), body.as_bytes());
            assert!(event.is_some_and(|e| !e.is_untyped()), "{ty}");
        }
    }

    /// The ack-fast path's head, against the full parse's, for every body.
    fn same_head(body: &[u8]) {
        let full = Event::from_slice(body).map(|e| EventHead::of(&e));
        let head = EventHead::from_slice(body);
        match (&head, &full) {
            (Ok(h), Ok(f)) => assert_eq!(h, f, "{}", String::from_utf8_lossy(body)),
            (Err(h), Err(f)) => assert_eq!(h.to_string(), f.to_string()),
            _ => panic!(
                "{head:?} against {full:?} for {}",
                String::from_utf8_lossy(body)
            ),
        }
    }

    /// An id you chose for a product or a plan (a price), and a coupon's, is keyed within
    /// its type, by both reads and a thin event's, so a product `gold`, a plan `gold` and
    /// a coupon `gold` are apart; ids Stripe made keep their bare key.
    #[test]
    fn chosen_ids_are_keyed_within_their_type() {
        for (ty, object, id, key) in [
            ("product.updated", "product", "gold", "product/gold"),
            ("product.updated", "product", "prod_1", "prod_1"),
            ("plan.updated", "plan", "gold", "price/gold"),
            ("price.updated", "price", "gold", "price/gold"),
            ("plan.created", "plan", "plan_1", "plan_1"),
            ("price.deleted", "price", "price_1", "price_1"),
            ("coupon.updated", "coupon", "gold", "coupon/gold"),
            ("coupon.deleted", "coupon", "plan_gold", "coupon/plan_gold"),
            ("plan.updated", "plan", "plan_gold", "plan_gold"),
            ("product.archived", "product", "gold", "product/gold"),
            ("customer.updated", "customer", "gold", "gold"),
        ] {
            for (connect, scoped) in [
                ("", key.to_owned()),
                (r#""account":"acct_1","#, format!("acct_1/{key}")),
            ] {
                let body = format!(
                    r#"{{"id":"evt_1","object":"event",{connect}"type":"{ty}","created":7,"livemode":true,"data":{{"object":{{"object":"{object}","id":"{id}"}}}}}}"#
                );
                same_head(body.as_bytes());
                let head = EventHead::lean(body.as_bytes()).unwrap_or_else(|| panic!("{body}"));
                assert_eq!(head.object_id.as_deref(), Some(scoped.as_str()), "{body}");
            }
            let thin = crate::testing::ThinEventBuilder::new("evt_t", &format!("v1.{ty}"))
                .related(id, object, &format!("/v1/{object}s/{id}"))
                .build();
            let n = crate::dangerous::parse_unverified_notification(thin.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(n.ordering_key().as_deref(), Some(key), "{thin}");
        }
    }

    #[test]
    fn the_lean_head_reads_what_the_full_parse_reads() {
        // Every documented type, on its fixture: the lean read takes each of them.
        let mut lean = 0;
        for ty in EventType::ALL {
            let Some(body) = crate::testing::event_for_type("evt_1", ty.as_str()) else {
                continue;
            };
            same_head(body.as_bytes());
            lean += usize::from(EventHead::lean(body.as_bytes()).is_some());
        }
        assert!(lean > 250, "{lean}");
        let escaped = br#"{"id":"evt_1","object":"event","type":"customer.updated","created":7,"livemode":true,"data":{"object":{"object":"customer","id":"cus_\u0031","x":{"id":"no"}}}}"#;
        same_head(escaped);
        let head = EventHead::lean(escaped).unwrap_or_else(|| panic!("lean refused"));
        assert_eq!(head.object_id.as_deref(), Some("cus_1"));
        assert_eq!((head.created, head.livemode), (7, true));
        // A Connect event's object is keyed within its account, by `account` or else by
        // the account its `context` ends with, as the ordering guard keys it: one
        // account's failing job must not hold back another's on the same bare id.
        for (connect, key) in [
            (r#""account":"acct_1","#, "acct_1/cus_1"),
            (r#""context":"acct_9/acct_2","#, "acct_2/cus_1"),
            (r#""context":"org_1","#, "cus_1"),
            (r#""account":null,"context":"acct_3","#, "acct_3/cus_1"),
        ] {
            let body = format!(
                r#"{{"id":"evt_1","object":"event",{connect}"type":"customer.updated","created":7,"livemode":true,"data":{{"object":{{"object":"customer","id":"cus_1"}}}}}}"#
            );
            same_head(body.as_bytes());
            let head = EventHead::lean(body.as_bytes()).unwrap_or_else(|| panic!("lean refused"));
            assert_eq!(head.object_id.as_deref(), Some(key), "{body}");
            // In test mode, within the mode too: a connected account has the same ids
            // in both.
            let test_mode = body.replace(r#""livemode":true"#, r#""livemode":false"#);
            same_head(test_mode.as_bytes());
            let head = EventHead::lean(test_mode.as_bytes()).unwrap_or_else(|| panic!("lean"));
            let key = key.replace('/', "/test/");
            assert_eq!(head.object_id.as_deref(), Some(key.as_str()), "{test_mode}");
        }
        // An empty id names no object, within an account too (never `acct_1/`).
        let empty = br#"{"id":"evt_1","object":"event","account":"acct_1","type":"customer.updated","created":7,"livemode":true,"data":{"object":{"object":"customer","id":""}}}"#;
        same_head(empty);
        assert_eq!(
            EventHead::from_slice(empty).map(|h| h.object_id).ok(),
            Some(None)
        );
        // Odd bodies: each gets the full parse's answer, whichever read gave it, for a
        // hand-written type, a generated one, one whose object has no id, a payment
        // source and an unknown type, with `type` first and (as Stripe writes it, for
        // the one-pass parse) last.
        let types = [
            "customer.updated",
            "account.updated",
            "balance.available",
            "customer.source.created",
            "x.y",
        ];
        let mut bodies = Vec::new();
        for data in [
            r#"{"object":"cus_1"}"#,
            r#"{"object":null}"#,
            r#"{"object":[{"id":"x"}]}"#,
            r#"{"object":["cus_1"]}"#,
            r#"{"object":[]}"#,
            r#"{"object":{"id":7}}"#,
            r#"{"object":{"id":{"id":"x"}}}"#,
            r#"{"object":{"id":"a","id":"b"}}"#,
            r#"{"object":{"\u0069d":"cus_1"}}"#,
            r#"{"object":{"id":"cus_\ud800"}}"#,
            r#"{"object":{"object":"card","id":"card_1"}}"#,
            r#"{"object":{},"object":{}}"#,
            r#"{"object":{},"previous_attributes":{},"previous_attributes":{}}"#,
            r#"{"object":{"id":""}}"#,
            r#"{"previous_attributes":{}}"#,
            "null",
            "[]",
        ] {
            for ty in types {
                bodies.push(format!(
                    r#"{{"id":"evt_1","object":"event","type":"{ty}","created":1,"livemode":false,"data":{data}}}"#
                ));
                bodies.push(format!(
                    r#"{{"id":"evt_1","object":"event","created":1,"livemode":false,"data":{data},"type":"{ty}"}}"#
                ));
            }
        }
        for ty in types {
            for rest in [
                r#""created":1"#,
                r#""created":"1","data":{"object":{}}"#,
                r#""created":1.5,"data":{"object":{}}"#,
                r#""created":18446744073709551616,"data":{"object":{}}"#,
                r#""created":1,"created":2,"data":{"object":{}}"#,
                r#""created":1,"data":{"object":{}},"data":{"object":{}}"#,
                r#""created":1,"data":{"object":{}},"type":"customer.created""#,
            ] {
                bodies.push(format!(
                    r#"{{"id":"evt_1","object":"event","livemode":false,{rest},"type":"{ty}"}}"#
                ));
            }
            let body = format!(
                r#"{{"id":"evt_1","object":"event","data":{{"object":{{"id":"o"}}}},"type":"{ty}"}}"#
            );
            bodies.push(format!("\u{c}{body}"));
            bodies.push(format!("\u{feff}{body}"));
            bodies.push(format!(" \n{body}\n"));
        }
        for body in &bodies {
            same_head(body.as_bytes());
        }
        // An unknown type's object read for its id: an object only, not an array whose
        // first item would read as the id.
        let array = br#"{"id":"evt_1","object":"event","type":"x.y","created":1,"livemode":false,"data":{"object":["cus_1"]}}"#;
        assert_eq!(EventHead::from_slice(array).unwrap().object_id, None);
        for body in [
            &b"[]"[..],
            b"",
            b"  ",
            b"{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"x\",\"data\":{\"object\":{\"id\":\"\xff\"}}}",
            br#"{"id":"evt_1","object":"v2.core.event","type":"v1.billing.meter.error_report_triggered","created":"2026-01-01T00:00:00.000Z","livemode":false}"#,
            br#"{"id":"evt_1","object":"charge","type":"x","data":{"object":{}}}"#,
            br#"{"id":"evt_1","object":"event","type":"x","data":{"object":{}},"id":"evt_2"}"#,
            br#"{"object":"event","type":"x","data":{"object":{}}}"#,
        ] {
            same_head(body);
        }
    }

    #[test]
    fn end_position_counts_lines() {
        assert_eq!(end_position(b"{}"), (1, 2));
        assert_eq!(end_position(b"{\n}"), (2, 1));
    }
}
