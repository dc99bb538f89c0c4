//! The event envelope: everything around `data.object`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::EventType;
use crate::objects::map_only::{map_deserialize, BorrowedStr};

/// A Stripe event id (`evt_…`). Cloning it is cheap (a shared, immutable string), so
/// outcomes, claim tokens and store indexes all hold the same one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Arc<str>);

impl EventId {
    /// Wraps an id string as Stripe sent it.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EventId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for EventId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for EventId {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::new(id))
    }
}

/// The API request that caused an event, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EventRequest {
    /// The request id (`req_…`); `None` for events Stripe caused itself (automatic
    /// collection, renewals).
    pub id: Option<String>,
    /// The `Idempotency-Key` the request was sent with.
    pub idempotency_key: Option<String>,
}

map_deserialize!(EventRequest {
    "id" => id,
    "idempotency_key" => idempotency_key,
});

/// Everything about an event except its `data.object`. Its `Debug` output hides
/// credentials in `previous_attributes`, as an event's object's does.
#[derive(Clone)]
pub struct Envelope {
    pub(crate) id: EventId,
    pub(crate) event_type: EventType,
    pub(crate) created: i64,
    pub(crate) livemode: bool,
    pub(crate) api_version: Option<String>,
    pub(crate) account: Option<String>,
    pub(crate) context: Option<String>,
    pub(crate) request: Option<EventRequest>,
    pub(crate) pending_webhooks: Option<u64>,
    pub(crate) previous_attributes: Option<Box<RawValue>>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field, named once: a field added and not shown does not compile.
        let Self {
            id,
            event_type,
            created,
            livemode,
            api_version,
            account,
            context,
            request,
            pending_webhooks,
            previous_attributes,
        } = self;
        f.debug_struct("Envelope")
            .field("id", id)
            .field("event_type", event_type)
            .field("created", created)
            .field("livemode", livemode)
            .field("api_version", api_version)
            .field("account", account)
            .field("context", context)
            .field("request", request)
            .field("pending_webhooks", pending_webhooks)
            .field(
                "previous_attributes",
                &previous_attributes
                    .as_ref()
                    .map(|p| crate::secret::DebugChangeSet(changed_type(event_type), p.get())),
            )
            .finish()
    }
}

/// The object type an event's `previous_attributes` belong to, for `Debug`: its data
/// object's, by its type (a bearer-link type when any of a polymorphic event's types is
/// one, so that its `url` is hidden), or `None` for a type this release does not know.
fn changed_type(event_type: &EventType) -> Option<&'static str> {
    let types = event_type.object_type()?;
    Some(
        types
            .split('|')
            .find(|t| crate::secret::BEARER_URL_OBJECTS.contains(t))
            .unwrap_or_else(|| types.split('|').next().unwrap_or(types)),
    )
}

impl Envelope {
    /// The event id (`evt_…`), the key for idempotency.
    pub fn id(&self) -> &EventId {
        &self.id
    }

    /// The event type.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// When the event was created, in Unix seconds.
    pub fn created(&self) -> i64 {
        self.created
    }

    /// Whether the event happened in live mode.
    pub fn livemode(&self) -> bool {
        self.livemode
    }

    /// The API version `data.object` is rendered in; `None` for very old events.
    pub fn api_version(&self) -> Option<&str> {
        self.api_version.as_deref()
    }

    /// The event's `account` member as Stripe sent it: for Connect events, the
    /// connected account (`acct_…`) the event happened on. An event from an organization
    /// or Accounts v2 destination carries only [`context`](Self::context);
    /// [`Event::account`](crate::Event::account) reads the account from either, and is
    /// the one to use for the account an event is about.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// For events from organization or Connect contexts, the `context` string.
    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// The API request that caused the event.
    pub fn request(&self) -> Option<&EventRequest> {
        self.request.as_ref()
    }

    /// How many webhook endpoints had not yet acknowledged the event when it was sent.
    pub fn pending_webhooks(&self) -> Option<u64> {
        self.pending_webhooks
    }

    /// On `*.updated` events, the previous values of the attributes that changed.
    pub fn previous_attributes(&self) -> Option<&RawValue> {
        self.previous_attributes.as_deref()
    }
}

/// The value of the top-level `object` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectTag {
    Event,
    ThinEvent,
}

impl<'de> Deserialize<'de> for ObjectTag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ObjectTag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"event\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ObjectTag, E> {
                match v {
                    "event" => Ok(ObjectTag::Event),
                    "v2.core.event" => Ok(ObjectTag::ThinEvent),
                    other => Err(E::custom(format_args!(
                        "`object` is {other:?}, not \"event\""
                    ))),
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// `request` is an object today and was a plain id string before API 2017-05-25.
fn request_any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EventRequest>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<EventRequest>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a request object, a request id or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(EventRequest {
                id: Some(v.to_owned()),
                idempotency_key: None,
            }))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            EventRequest::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_option(V)
}

/// `created` is Unix seconds in snapshot events and an RFC 3339 string in thin events;
/// read both here so a thin event reaches the check that names the right parser.
fn created_any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a Unix timestamp")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("timestamp out of range"))
        }
        fn visit_str<E: de::Error>(self, _v: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// The wire shape of a snapshot event, borrowing from the body. `D` is its `data`:
/// [`WireData`] keeps `data.object` raw, [`WireDataTyped`] parses it in the same pass.
///
/// Read by hand rather than derived: the one-pass parse reads it once per typed object,
/// and a derived visitor would be compiled again for each. Here only the loop over the
/// members is per `D`; the envelope's members are read by [`PartialHead::read`], compiled
/// once. It reads a JSON object only, with serde's own errors for a missing or repeated
/// member.
pub(crate) struct WireEvent<'a, D> {
    pub(crate) head: WireHead<'a>,
    pub(crate) data: Option<D>,
}

/// Every member of a snapshot event but `data`.
pub(crate) struct WireHead<'a> {
    pub(crate) id: Cow<'a, str>,
    pub(crate) object: ObjectTag,
    pub(crate) event_type: Cow<'a, str>,
    pub(crate) created: Option<i64>,
    pub(crate) livemode: bool,
    pub(crate) api_version: Option<String>,
    pub(crate) account: Option<String>,
    pub(crate) context: Option<String>,
    pub(crate) request: Option<EventRequest>,
    pub(crate) pending_webhooks: Option<u64>,
}

/// [`WireHead`] as its members arrive: each `Some` once read, to refuse a repeated one.
#[derive(Default)]
struct PartialHead<'a> {
    id: Option<BorrowedStr<'a>>,
    object: Option<ObjectTag>,
    event_type: Option<BorrowedStr<'a>>,
    created: Option<CreatedAny>,
    livemode: Option<bool>,
    api_version: Option<Option<String>>,
    account: Option<Option<String>>,
    context: Option<Option<String>>,
    request: Option<RequestAny>,
    pending_webhooks: Option<Option<u64>>,
}

/// Reads `T` into `slot`, or fails if the member was already read.
fn once<'de, A: de::MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// `created`, through [`created_any`].
struct CreatedAny(Option<i64>);

impl<'de> Deserialize<'de> for CreatedAny {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        created_any(d).map(CreatedAny)
    }
}

/// `request`, through [`request_any`].
struct RequestAny(Option<EventRequest>);

impl<'de> Deserialize<'de> for RequestAny {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        request_any(d).map(RequestAny)
    }
}

impl<'de> PartialHead<'de> {
    /// Reads the value of the member `key` (anything but `data`).
    fn read<A: de::MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "id" => once(map, &mut self.id, "id"),
            "object" => once(map, &mut self.object, "object"),
            "type" => once(map, &mut self.event_type, "type"),
            "created" => once(map, &mut self.created, "created"),
            "livemode" => once(map, &mut self.livemode, "livemode"),
            "api_version" => once(map, &mut self.api_version, "api_version"),
            "account" => once(map, &mut self.account, "account"),
            "context" => once(map, &mut self.context, "context"),
            "request" => once(map, &mut self.request, "request"),
            "pending_webhooks" => once(map, &mut self.pending_webhooks, "pending_webhooks"),
            _ => map.next_value::<de::IgnoredAny>().map(drop),
        }
    }

    /// The head, or serde's `missing field` error for the first required member absent.
    /// A snapshot event's `created` is required (the ordering guard, the queue's order
    /// and the reconciler's cursor all read it); a thin event's, an RFC 3339 string,
    /// reads as `None` here and is checked by the thin parser.
    fn finish<E: de::Error>(self) -> Result<WireHead<'de>, E> {
        let id = self.id.ok_or_else(|| E::missing_field("id"))?.0;
        // The key of the event's claim and of its object's watermark.
        if id.is_empty() {
            return Err(E::custom("`id` is empty"));
        }
        let object = self.object.ok_or_else(|| E::missing_field("object"))?;
        let created = self.created.and_then(|c| c.0);
        let event_type = self.event_type.ok_or_else(|| E::missing_field("type"))?.0;
        if object == ObjectTag::Event && created.is_none() {
            return Err(E::custom(
                "missing field `created` (a snapshot event's creation time, in Unix seconds)",
            ));
        }
        // Stripe always sends it; read as `false`, a live event would be answered as
        // another mode's by a processor that takes one mode only, and dropped.
        if object == ObjectTag::Event && self.livemode.is_none() {
            return Err(E::missing_field("livemode"));
        }
        Ok(WireHead {
            id,
            object,
            event_type,
            created,
            livemode: self.livemode.unwrap_or_default(),
            api_version: self.api_version.flatten(),
            account: self.account.flatten(),
            context: self.context.flatten(),
            request: self.request.and_then(|r| r.0),
            pending_webhooks: self.pending_webhooks.flatten(),
        })
    }
}

impl<'de, D: Deserialize<'de>> Deserialize<'de> for WireEvent<'de, D> {
    fn deserialize<De: Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        struct V<D>(PhantomData<D>);
        impl<'de, D: Deserialize<'de>> Visitor<'de> for V<D> {
            type Value = WireEvent<'de, D>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut head = PartialHead::default();
                let mut data: Option<Option<D>> = None;
                while let Some(key) = map.next_key::<BorrowedStr<'de>>()? {
                    match &*key.0 {
                        "data" => once(&mut map, &mut data, "data")?,
                        key => head.read(key, &mut map)?,
                    }
                }
                Ok(WireEvent {
                    head: head.finish()?,
                    data: data.flatten(),
                })
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl WireHead<'_> {
    /// The envelope, for a caller that read the type.
    pub(crate) fn into_envelope(self, event_type: EventType) -> Envelope {
        Envelope {
            id: EventId::new(&*self.id),
            event_type,
            created: self.created.unwrap_or_default(),
            livemode: self.livemode,
            api_version: self.api_version,
            account: self.account,
            context: self.context,
            request: self.request,
            pending_webhooks: self.pending_webhooks,
            previous_attributes: None,
        }
    }
}

impl<D> WireEvent<'_, D> {
    /// The envelope, and `data` for the caller.
    pub(crate) fn split(self) -> (Envelope, Option<D>) {
        let event_type = EventType::from_wire(&self.head.event_type);
        self.split_as(event_type)
    }

    /// As [`split`](Self::split), for a caller that already read the type.
    pub(crate) fn split_as(self, event_type: EventType) -> (Envelope, Option<D>) {
        (self.head.into_envelope(event_type), self.data)
    }
}

#[derive(Deserialize)]
pub(crate) struct WireData<'a> {
    #[serde(borrow)]
    pub(crate) object: &'a RawValue,
    #[serde(default, borrow)]
    pub(crate) previous_attributes: Option<&'a RawValue>,
}

/// `data` with its object parsed straight into `T`, in the same pass as the envelope.
/// Read by hand, from a JSON object only, for the reason [`WireEvent`] is.
pub(crate) struct WireDataTyped<'a, T> {
    pub(crate) object: T,
    pub(crate) previous_attributes: Option<&'a RawValue>,
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for WireDataTyped<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a, T>(PhantomData<(&'a (), T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de>> Visitor<'de> for V<'a, T> {
            type Value = WireDataTyped<'a, T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event's `data` object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut object = None;
                let mut previous_attributes: Option<Option<&'a RawValue>> = None;
                while let Some(key) = map.next_key::<BorrowedStr<'de>>()? {
                    match &*key.0 {
                        "object" => once(&mut map, &mut object, "object")?,
                        "previous_attributes" => {
                            once(&mut map, &mut previous_attributes, "previous_attributes")?
                        }
                        _ => map.next_value::<de::IgnoredAny>().map(drop)?,
                    }
                }
                Ok(WireDataTyped {
                    object: object.ok_or_else(|| de::Error::missing_field("object"))?,
                    previous_attributes: previous_attributes.flatten(),
                })
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// Where `data.object` is in a body, for [`RawObject`](super::RawObject).
#[derive(Deserialize)]
pub(crate) struct WireLocate<'a> {
    #[serde(borrow)]
    pub(crate) data: WireLocateData<'a>,
}

#[derive(Deserialize)]
pub(crate) struct WireLocateData<'a> {
    #[serde(borrow)]
    pub(crate) object: &'a RawValue,
}

/// The wire shape written by `Serialize for Event`.
#[derive(Serialize)]
pub(crate) struct WireOut<'a> {
    pub(crate) id: &'a str,
    pub(crate) object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) account: Option<&'a str>,
    pub(crate) api_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) context: Option<&'a str>,
    pub(crate) created: i64,
    pub(crate) data: WireDataOut<'a>,
    pub(crate) livemode: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pending_webhooks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request: Option<&'a EventRequest>,
    #[serde(rename = "type")]
    pub(crate) event_type: &'a str,
}

#[derive(Serialize)]
pub(crate) struct WireDataOut<'a> {
    pub(crate) object: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) previous_attributes: Option<&'a RawValue>,
}

/// `data` read for its object's `id` only, for the ack-fast path (which queues the body
/// and leaves typing the object to the worker). `object` must be there, as [`WireData`]
/// requires; any other member, and everything in the object but a string `id`, is
/// skipped.
pub(crate) struct WireDataId<'a> {
    pub(crate) object_id: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for WireDataId<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = WireDataId<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event's data")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut object: Option<ObjectId<'a>> = None;
                let mut previous: Option<de::IgnoredAny> = None;
                while let Some(key) = map.next_key::<BorrowedStr<'de>>()? {
                    match &*key.0 {
                        "object" => once(&mut map, &mut object, "object")?,
                        // Refused twice, as `WireData` refuses it.
                        "previous_attributes" => {
                            once(&mut map, &mut previous, "previous_attributes")?;
                        }
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let object = object.ok_or_else(|| de::Error::missing_field("object"))?;
                Ok(WireDataId {
                    object_id: object.0,
                })
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// `data.object` (`OBJECT`: any JSON value, read for its `id` member when it is an
/// object with a string `id`) or that member's value (kept when it is a string).
struct IdOf<'a, const OBJECT: bool>(Option<Cow<'a, str>>);

type ObjectId<'a> = IdOf<'a, true>;

impl<'de: 'a, 'a, const OBJECT: bool> Deserialize<'de> for IdOf<'a, OBJECT> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IdVisitor::<OBJECT>(PhantomData))
    }
}

/// Reads an [`IdOf`]; skips everything else.
struct IdVisitor<'a, const OBJECT: bool>(PhantomData<&'a ()>);

impl<'de: 'a, 'a, const OBJECT: bool> Visitor<'de> for IdVisitor<'a, OBJECT> {
    type Value = IdOf<'a, OBJECT>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(IdOf((!OBJECT).then_some(Cow::Borrowed(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(IdOf((!OBJECT).then(|| Cow::Owned(v.to_owned()))))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(IdOf(None))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(IdOf(None))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(IdOf(None))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(IdOf(None))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(IdOf(None))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if OBJECT {
            // An array for `data.object`: refused, for the full parse (whose raw id read
            // takes an array's first element) to answer.
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(IdOf(None))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // A repeated `id` is refused: the full parse then says what is wrong.
        let mut id: Option<IdOf<'a, false>> = None;
        while let Some(key) = map.next_key::<BorrowedStr<'de>>()? {
            if OBJECT && &*key.0 == "id" {
                once(&mut map, &mut id, "id")?;
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(IdOf(id.and_then(|v| v.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::map_only::MapOnly;

    fn wire(json: &str) -> Result<WireEvent<'_, WireData<'_>>, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    fn map_only(json: &str) -> Result<WireEvent<'_, MapOnly<WireData<'_>>>, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn the_envelope_is_read_with_serde_s_errors() {
        let w = wire(
            r#"{"id":"evt_1","object":"event","type":"invoice.paid","created":3,"livemode":true,
                "request":"req_1","extra":[1,{"a":null}],"data":{"object":{"id":"in_1"}}}"#,
        )
        .unwrap();
        assert_eq!(w.head.id, "evt_1");
        assert!(
            matches!(w.head.id, Cow::Borrowed(_)),
            "borrowed from the body"
        );
        assert!(matches!(w.head.event_type, Cow::Borrowed("invoice.paid")));
        assert_eq!(w.head.created, Some(3));
        assert!(w.head.livemode);
        assert_eq!(w.head.request.and_then(|r| r.id).as_deref(), Some("req_1"));
        assert_eq!(w.data.map(|d| d.object.get()), Some(r#"{"id":"in_1"}"#));

        // `data` is optional, and may be null.
        let w = wire(
            r#"{"id":"e","object":"event","type":"x","created":1,"livemode":false,"data":null}"#,
        )
        .unwrap();
        assert!(w.data.is_none());
        assert!(
            wire(r#"{"id":"e","object":"event","type":"x","created":1,"livemode":false}"#)
                .unwrap()
                .data
                .is_none()
        );
        // A thin event's `created` is a string, read by the thin parser.
        let w = wire(
            r#"{"id":"e","object":"v2.core.event","type":"x","created":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(w.head.created, None);

        for (json, error) in [
            (r#"{"object":"event","type":"x"}"#, "missing field `id`"),
            (r#"{"id":"e","type":"x"}"#, "missing field `object`"),
            (r#"{"id":"e","object":"event"}"#, "missing field `type`"),
            (
                r#"{"id":"e","object":"event","type":"x"}"#,
                "missing field `created`",
            ),
            (
                r#"{"id":"e","object":"event","type":"x","created":null}"#,
                "missing field `created`",
            ),
            (
                r#"{"id":"e","object":"event","type":"x","created":"2026-01-01T00:00:00Z"}"#,
                "missing field `created`",
            ),
            (
                r#"{"id":"e","object":"event","type":"x","created":1}"#,
                "missing field `livemode`",
            ),
            (
                r#"{"id":"e","id":"f","object":"event","type":"x"}"#,
                "duplicate field `id`",
            ),
            (
                r#"{"id":"e","object":"event","type":"x","type":"y"}"#,
                "duplicate field `type`",
            ),
            (
                r#"{"id":"e","object":"event","type":"x","data":null,"data":null}"#,
                "duplicate field `data`",
            ),
            (
                r#"{"id":"e","object":"event","type":"x","livemode":false,"livemode":true}"#,
                "duplicate field `livemode`",
            ),
            (
                r#"{"id":"e","object":"event","type":"x","account":"acct_1","account":"acct_2"}"#,
                "duplicate field `account`",
            ),
            (
                r#"{"id":"e","object":"event","type":"x","data":{}}"#,
                "missing field `object`",
            ),
            (
                r#"{"id":"e","object":"charge","type":"x"}"#,
                "`object` is \"charge\"",
            ),
            (r#"["e","event","x"]"#, "expected an event object"),
        ] {
            let e = wire(json).map(|_| ()).unwrap_err();
            assert!(e.contains(error), "{json}: {e}");
        }
        // `data` is an object too: a derived struct would read an array of its fields.
        let head = r#"{"id":"e","object":"event","type":"x","created":1,"livemode":false,"data":"#;
        let array = format!(r#"{head}[{{"id":"cus_1"}},{{"email":"old"}}]}}"#);
        assert!(wire(&array).is_ok(), "the derive reads an array");
        let e = map_only(&array).map(|_| ()).unwrap_err();
        assert!(e.contains("expected a JSON object"), "{e}");
        let object = format!(r#"{head}{{"object":{{"id":"cus_1"}}}}}}"#);
        let w = map_only(&object).unwrap();
        assert_eq!(w.data.map(|d| d.0.object.get()), Some(r#"{"id":"cus_1"}"#));
    }

    #[test]
    fn typed_data_reads_its_object_and_previous_attributes() {
        let d: WireDataTyped<'_, EventRequest> = serde_json::from_str(
            r#"{"previous_attributes":{"a":1},"x":2,"object":{"id":"req_1"}}"#,
        )
        .unwrap();
        assert_eq!(d.object.id.as_deref(), Some("req_1"));
        assert_eq!(d.previous_attributes.map(RawValue::get), Some(r#"{"a":1}"#));
        let e = serde_json::from_str::<WireDataTyped<'_, EventRequest>>(r#"{"x":1}"#);
        assert!(e.is_err_and(|e| e.to_string().contains("missing field `object`")));
    }
}
