//! Thin event notifications (`"object": "v2.core.event"`): [`EventNotification`] and its
//! parts. [`ThinEventType`] is generated in `thin_types.rs`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::ParseError;
use super::thin_types::ThinEventType;
use super::{EventId, EventType};
use crate::objects::map_only::{map_deserialize, MapOnly};

/// Snapshot event types whose object has no id although objects of its type have one:
/// `invoice.upcoming`'s invoice is not created yet.
pub(crate) const TYPES_WITHOUT_OBJECT_ID: &[&str] = &["invoice.upcoming"];

/// The object types whose objects have no `id` (Stripe's singletons), per the object
/// schemas in `data/stripe/schemas`.
pub(crate) const OBJECTS_WITHOUT_ID: &[&str] = &[
    "balance",
    "balance_settings",
    "billing.alert_triggered",
    "cash_balance",
    "entitlements.active_entitlement_summary",
    "tax.settings",
    "treasury.financial_account_features",
];

/// The object a thin event is about; fetch it from [`url`](Self::url) with the Stripe API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RelatedObject {
    /// The object's id; `None` for the singletons that have none (`v1.balance.available`,
    /// `v1.tax.settings.updated`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The object's type, for example `customer` or `billing.meter`.
    #[serde(rename = "type")]
    pub object_type: String,
    /// The API path to fetch it from, for example `/v1/customers/cus_123`.
    pub url: String,
}

/// Why a thin event happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventReason {
    /// What kind of cause: `request` today; Stripe may add others.
    #[serde(rename = "type")]
    pub reason_type: String,
    /// The API request behind the event, when `reason_type` is `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ReasonRequest>,
}

/// The API request behind a thin event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReasonRequest {
    /// The request id (`req_…`).
    #[serde(default)]
    pub id: Option<String>,
    /// The `Idempotency-Key` the request was sent with.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// On a fetched thin event, the changed fields of the related object, the thin
/// counterpart of a snapshot event's `previous_attributes`. Only the changed fields
/// appear; `before` is `None` for a creation and `after` for a deletion. Its `Debug`
/// output hides client secrets, as an object's does.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventChanges {
    /// The prior values.
    #[serde(default)]
    pub before: Option<serde_json::Value>,
    /// The new values.
    #[serde(default)]
    pub after: Option<serde_json::Value>,
}

impl fmt::Debug for EventChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A change set names no `object`: its `url` may be a bearer link. (Every field
        // named: one added later and left out does not compile.)
        let Self { before, after } = self;
        f.debug_struct("EventChanges")
            .field("before", &crate::secret::DebugChangeSetValue(before))
            .field("after", &crate::secret::DebugChangeSetValue(after))
            .finish()
    }
}

/// The `data` of a fetched thin event, typed for the types whose shape the crate knows.
/// Pushed notifications never carry `data`: it appears on the event fetched with
/// `GET /v2/core/events/{id}`. `Debug` shows [`Raw`](Self::Raw) with its client secrets
/// hidden.
#[derive(Clone, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum ThinEventData {
    /// `v1.billing.meter.error_report_triggered` and `v1.billing.meter.no_meter_found`.
    MeterErrorReport(MeterErrorReport),
    /// `v1.invoice.upcoming`: whose invoice is coming up.
    InvoiceUpcoming(InvoiceUpcoming),
    /// `v2.core.account[configuration.*].capability_status_updated`.
    CapabilityStatusUpdated(CapabilityStatusUpdated),
    /// `v2.core.account_link.returned`.
    AccountLinkReturned(AccountLinkReturned),
    /// `v2.core.account_person.created`, `.updated` and `.deleted`.
    AccountPerson(AccountPersonData),
    /// Any other type's `data` (the `v2.money_management.*` types, whose shape the
    /// reference data does not give), or a known type's `data` in a shape this release
    /// does not know, as Stripe sent it.
    Raw(Box<RawValue>),
}

impl std::fmt::Debug for ThinEventData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MeterErrorReport(d) => f.debug_tuple("MeterErrorReport").field(d).finish(),
            Self::InvoiceUpcoming(d) => f.debug_tuple("InvoiceUpcoming").field(d).finish(),
            Self::CapabilityStatusUpdated(d) => {
                f.debug_tuple("CapabilityStatusUpdated").field(d).finish()
            }
            Self::AccountLinkReturned(d) => f.debug_tuple("AccountLinkReturned").field(d).finish(),
            Self::AccountPerson(d) => f.debug_tuple("AccountPerson").field(d).finish(),
            Self::Raw(raw) => f
                .debug_tuple("Raw")
                .field(&crate::secret::DebugJson(raw.get()))
                .finish(),
        }
    }
}

/// Meter usage that Stripe could not record (`v1.billing.meter.*` thin events).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MeterErrorReport {
    /// A summary for the developer.
    pub developer_message_summary: Option<String>,
    /// The errors, by kind.
    pub reason: Option<MeterErrorReason>,
    /// The start of the window the errors were counted in (RFC 3339).
    pub validation_start: Option<String>,
    /// The end of that window (RFC 3339).
    pub validation_end: Option<String>,
}

map_deserialize!(MeterErrorReport {
    "developer_message_summary" => developer_message_summary,
    "reason" => reason,
    "validation_start" => validation_start,
    "validation_end" => validation_end,
});

/// How many meter events failed, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MeterErrorReason {
    /// How many meter events failed.
    pub error_count: Option<i64>,
    /// The failures grouped by error code.
    pub error_types: Vec<MeterErrorType>,
}

map_deserialize!(MeterErrorReason {
    "error_count" => error_count,
    "error_types" => error_types: null_as_default,
});

/// One kind of meter error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MeterErrorType {
    /// The error code, for example `meter_event_no_customer_defined`.
    pub code: Option<String>,
    /// How many meter events failed with it.
    pub error_count: Option<i64>,
    /// A few of them.
    pub sample_errors: Vec<MeterSampleError>,
}

map_deserialize!(MeterErrorType {
    "code" => code,
    "error_count" => error_count,
    "sample_errors" => sample_errors: null_as_default,
});

/// One failed meter event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MeterSampleError {
    /// What went wrong.
    pub error_message: Option<String>,
    /// The request that sent the meter event.
    pub request: Option<MeterSampleRequest>,
}

map_deserialize!(MeterSampleError {
    "error_message" => error_message,
    "request" => request,
});

/// The request of a failed meter event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MeterSampleRequest {
    /// The meter event's identifier.
    pub identifier: Option<String>,
}

map_deserialize!(MeterSampleRequest {
    "identifier" => identifier,
});

/// The `data` of `v1.invoice.upcoming`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct InvoiceUpcoming {
    /// The customer (`cus_…`).
    pub customer: Option<String>,
    /// The subscription (`sub_…`).
    pub subscription: Option<String>,
}

map_deserialize!(InvoiceUpcoming {
    "customer" => customer,
    "subscription" => subscription,
});

/// The `data` of `v2.core.account[configuration.*].capability_status_updated`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CapabilityStatusUpdated {
    /// The capability whose status changed, for example `cards` (an open set).
    pub updated_capability: Option<String>,
}

map_deserialize!(CapabilityStatusUpdated {
    "updated_capability" => updated_capability,
});

/// The `data` of `v2.core.account_link.returned`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AccountLinkReturned {
    /// The v2 account that was onboarded.
    pub account_id: Option<String>,
    /// Its configurations: `customer`, `merchant`, `recipient`.
    pub configurations: Vec<String>,
    /// `account_onboarding` or `account_update` (an open set).
    pub use_case: Option<String>,
}

map_deserialize!(AccountLinkReturned {
    "account_id" => account_id,
    "configurations" => configurations: null_as_default,
    "use_case" => use_case,
});

/// The `data` of `v2.core.account_person.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AccountPersonData {
    /// The v2 account the person belongs to.
    pub account_id: Option<String>,
}

map_deserialize!(AccountPersonData {
    "account_id" => account_id,
});

impl ThinEventData {
    fn build(event_type: &ThinEventType, raw: Box<RawValue>) -> Self {
        let typed = match event_type {
            ThinEventType::V1BillingMeterErrorReportTriggered
            | ThinEventType::V1BillingMeterNoMeterFound => {
                serde_json::from_str(raw.get()).map(ThinEventData::MeterErrorReport)
            }
            ThinEventType::V1InvoiceUpcoming => {
                serde_json::from_str(raw.get()).map(ThinEventData::InvoiceUpcoming)
            }
            ThinEventType::V2CoreAccountConfigurationCustomerCapabilityStatusUpdated
            | ThinEventType::V2CoreAccountConfigurationMerchantCapabilityStatusUpdated
            | ThinEventType::V2CoreAccountConfigurationRecipientCapabilityStatusUpdated => {
                serde_json::from_str(raw.get()).map(ThinEventData::CapabilityStatusUpdated)
            }
            ThinEventType::V2CoreAccountLinkReturned => {
                serde_json::from_str(raw.get()).map(ThinEventData::AccountLinkReturned)
            }
            ThinEventType::V2CoreAccountPersonCreated
            | ThinEventType::V2CoreAccountPersonDeleted
            | ThinEventType::V2CoreAccountPersonUpdated => {
                serde_json::from_str(raw.get()).map(ThinEventData::AccountPerson)
            }
            _ => return ThinEventData::Raw(raw),
        };
        // A shape this release does not know is kept as it came, never an error.
        typed.unwrap_or(ThinEventData::Raw(raw))
    }

    /// The data as JSON text, whatever its type: for [`Raw`](Self::Raw), the text as it
    /// came; for a typed variant, its struct written again, so members the struct does
    /// not model are left out and those it models but did not get are `null`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl PartialEq for ThinEventData {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::MeterErrorReport(a), Self::MeterErrorReport(b)) => a == b,
            (Self::InvoiceUpcoming(a), Self::InvoiceUpcoming(b)) => a == b,
            (Self::CapabilityStatusUpdated(a), Self::CapabilityStatusUpdated(b)) => a == b,
            (Self::AccountLinkReturned(a), Self::AccountLinkReturned(b)) => a == b,
            (Self::AccountPerson(a), Self::AccountPerson(b)) => a == b,
            (Self::Raw(a), Self::Raw(b)) => a.get() == b.get(),
            _ => false,
        }
    }
}

/// A thin event notification (`"object": "v2.core.event"`), typed by its
/// [`ThinEventType`].
///
/// A thin event carries no snapshot of the object: fetch the
/// [`related_object`](Self::related_object) (or the whole event) from the API when you
/// need it, in your client's API version. `data` and `changes` appear only on an event
/// fetched with `GET /v2/core/events/{id}`, never on the pushed notification.
///
/// ```
/// use stripe_webhooks::{dangerous, ThinEventType};
///
/// let body = br#"{"id":"evt_test_1","object":"v2.core.event","type":"v1.customer.created",
///   "created":"2026-10-30T14:03:27.512Z","livemode":false,"context":null,
///   "related_object":{"id":"cus_1","type":"customer","url":"/v1/customers/cus_1"},
///   "snapshot_event":"evt_1Pgc76"}"#;
/// let n = dangerous::parse_unverified_notification(body)?;
/// assert_eq!(n.event_type, ThinEventType::V1CustomerCreated);
/// assert_eq!(n.related_object_id(), Some("cus_1"));
/// // The snapshot twin's id is the key the processor deduplicates on.
/// assert_eq!(n.dedupe_key().as_str(), "evt_1Pgc76");
/// assert_eq!(n.created_unix(), Some(1_793_369_007));
/// # Ok::<(), stripe_webhooks::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EventNotification {
    /// The event id (`evt_…`).
    pub id: EventId,
    /// Always `"v2.core.event"`.
    pub object: &'static str,
    /// The event type, for example [`ThinEventType::V1CustomerCreated`].
    #[serde(rename = "type", serialize_with = "ser_type")]
    pub event_type: ThinEventType,
    /// When the event was created (RFC 3339, as Stripe sent it); see
    /// [`created_unix`](Self::created_unix).
    pub created: String,
    /// Whether the event happened in live mode.
    pub livemode: bool,
    /// The account (`acct_…`, for Connect) or organization the event belongs to. Send it
    /// as the `Stripe-Context` header when fetching the event or its object.
    pub context: Option<String>,
    /// Why the event happened.
    pub reason: Option<EventReason>,
    /// The object the event is about, when there is one.
    pub related_object: Option<RelatedObject>,
    /// The id of the snapshot event raised by the same change, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_event: Option<EventId>,
    /// The event's own data (fetched events of the types that have it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<ThinEventData>,
    /// The changed fields (fetched events of types that track changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<EventChanges>,
}

fn ser_type<S: serde::Serializer>(t: &ThinEventType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

/// The wire shape, borrowing what it can.
#[derive(Deserialize)]
struct Wire<'a> {
    id: EventId,
    #[serde(borrow)]
    object: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
    created: String,
    livemode: bool,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    reason: Option<MapOnly<EventReason>>,
    #[serde(default)]
    related_object: Option<MapOnly<RelatedObject>>,
    #[serde(default)]
    snapshot_event: Option<EventId>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    changes: Option<MapOnly<EventChanges>>,
}

#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(borrow, default)]
    object: Option<std::borrow::Cow<'a, str>>,
}

impl EventNotification {
    /// Parses a thin event notification from a body: the crate's one parse, behind
    /// [`VerifiedPayload::parse_notification`](crate::VerifiedPayload::parse_notification).
    ///
    /// # Errors
    ///
    /// - [`ParseError::SnapshotEvent`] if the body is a v1 snapshot event;
    /// - [`ParseError::InvalidJson`] or [`ParseError::NotAnEvent`] otherwise.
    pub(crate) fn from_slice(body: &[u8]) -> Result<Self, ParseError> {
        // Checked whole: serde_json skips the members it ignores without checking their
        // UTF-8.
        let text = match std::str::from_utf8(body) {
            Ok(text) => text,
            Err(e) => return Err(ParseError::not_utf8(body, &e)),
        };
        let MapOnly(wire): MapOnly<Wire<'_>> = match serde_json::from_str(text) {
            Ok(w) => w,
            Err(e) => return Err(Self::explain(body, &e).with_id_from(body)),
        };
        if wire.object != "v2.core.event" {
            return Err(Self::wrong_object(Some(&wire.object)).with_id_from(body));
        }
        if wire.id.as_str().is_empty() {
            return Err(ParseError::NotAnEvent {
                message: "`id` is empty".to_owned(),
                line: 1,
                column: 1,
                event_id: None,
            });
        }
        // The ordering guard and the reconciler's cursor read it.
        if rfc3339_seconds(&wire.created).is_none() {
            return Err(ParseError::NotAnEvent {
                message: "`created` is not an RFC 3339 timestamp".to_owned(),
                line: 1,
                column: 1,
                event_id: Some(wire.id.as_str().to_owned()),
            });
        }
        let event_type = ThinEventType::from_wire(&wire.event_type);
        let data = wire
            .data
            .filter(|d| d.get() != "null")
            .map(|d| ThinEventData::build(&event_type, d));
        Ok(EventNotification {
            id: wire.id,
            object: "v2.core.event",
            event_type,
            created: wire.created,
            livemode: wire.livemode,
            context: wire.context,
            reason: wire.reason.map(|r| r.0),
            related_object: wire.related_object.map(|r| r.0),
            // An empty id would be every such event's claim key, so that all but the
            // first were answered as duplicates: claimed under its own id instead.
            snapshot_event: wire.snapshot_event.filter(|id| !id.as_str().is_empty()),
            data,
            changes: wire.changes.map(|c| c.0),
        })
    }

    /// The error for a body that did not parse: a snapshot event or another object is
    /// named as such, anything else is the JSON error.
    fn explain(body: &[u8], e: &serde_json::Error) -> ParseError {
        match serde_json::from_slice::<MapOnly<Tag<'_>>>(body) {
            Ok(MapOnly(tag)) if tag.object.as_deref() != Some("v2.core.event") => {
                Self::wrong_object(tag.object.as_deref())
            }
            _ => ParseError::from_json(e),
        }
    }

    fn wrong_object(object: Option<&str>) -> ParseError {
        match object {
            Some("event") => ParseError::SnapshotEvent,
            other => ParseError::NotAnEvent {
                message: match other {
                    Some(o) => format!("`object` is {o:?}, not \"v2.core.event\""),
                    None => "missing field `object`".to_owned(),
                },
                line: 1,
                column: 1,
                event_id: None,
            },
        }
    }

    /// The key the processor claims this event under: the id of its snapshot twin
    /// ([`snapshot_event`](Self::snapshot_event)) when it has one, so one change
    /// delivered both as a snapshot and as a thin event runs the application's work once,
    /// as Stripe's migration guide recommends; otherwise its own id. A type known to
    /// have no snapshot twin ([`snapshot_type`](Self::snapshot_type) is `None`, such as
    /// `v1.invoice.line_item_added`) is always claimed under its own id, even if it names
    /// the snapshot event of the change that raised it: several such detail events of
    /// one change must each run. A `v1.*` type this crate does not know is a twin only
    /// when its name less `v1.` is a snapshot type it knows (`v1.reserve.hold.created`
    /// of `reserve.hold.created`), the rule every known twin follows: Stripe adds detail
    /// types (`v1.customer.subscription.…_changed`) that name the snapshot event of their
    /// change, and taken as twins they were answered `duplicate` of it (and of each
    /// other) and never run. So a thin type and its snapshot twin that are both new to
    /// this release are claimed apart: a handler that takes both runs that change twice.
    pub fn dedupe_key(&self) -> &EventId {
        match &self.snapshot_event {
            Some(twin) if self.snapshot_type().is_some() => twin,
            _ => &self.id,
        }
    }

    /// The related object's id, when there is one.
    pub fn related_object_id(&self) -> Option<&str> {
        self.related_object.as_ref().and_then(|o| o.id.as_deref())
    }

    /// `created` in Unix seconds, or `None` if it is not an RFC 3339 timestamp (the
    /// parser refuses such a notification; only a `created` changed after parsing reads
    /// `None`).
    pub fn created_unix(&self) -> Option<i64> {
        rfc3339_seconds(&self.created)
    }

    /// For Connect, the connected account (`acct_…`) the event belongs to: the last part
    /// of [`context`](Self::context) when it names an account.
    pub fn account(&self) -> Option<&str> {
        self.context.as_deref().and_then(super::context_account)
    }

    /// The key the ordering guard orders this event's related object under: as a
    /// snapshot event's, the object's id within its connected account (and mode).
    pub(crate) fn ordering_key(&self) -> Option<String> {
        let o = self.related_object.as_ref()?;
        let id = o.id.as_deref()?;
        super::scoped_object_key(self.account(), self.livemode, &o.object_type, id)
    }

    /// Whether its snapshot twin carries an object that has no id (`balance`,
    /// `tax.settings`: [`OBJECTS_WITHOUT_ID`]; an upcoming invoice:
    /// [`TYPES_WITHOUT_OBJECT_ID`]), so that the ordering guard never orders
    /// the twin either. `false` without a twin type, or for a twin type this release
    /// does not know.
    pub(crate) fn twin_object_has_no_id(&self) -> bool {
        self.snapshot_type().is_some_and(|t| {
            TYPES_WITHOUT_OBJECT_ID.contains(&t.as_str())
                || t.object_type()
                    .is_some_and(|types| types.split('|').all(|t| OBJECTS_WITHOUT_ID.contains(&t)))
        })
    }

    /// The snapshot event type raised by the same change, for the `v1.*` types that have
    /// a snapshot twin (see [`ThinEventType::snapshot_type`]), and for a `v1.*` type this
    /// release does not know whose name less `v1.` is a snapshot type it knows.
    pub fn snapshot_type(&self) -> Option<EventType> {
        twin_type(&self.event_type)
    }

    /// Whether this is `v2.core.event_destination.ping`, which the processor answers 200
    /// without running a handler.
    pub fn is_ping(&self) -> bool {
        self.event_type == ThinEventType::V2CoreEventDestinationPing
    }
}

impl<'de> Deserialize<'de> for EventNotification {
    /// Reads a thin event in Stripe's JSON shape **without verifying any signature**: for
    /// events you verified before and stored, never for a request body.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        EventNotification::from_slice(raw.get().as_bytes()).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ThinEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ThinEventType {
    type Err = std::convert::Infallible;
    /// Never fails: an unrecognised name becomes [`ThinEventType::Unknown`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ThinEventType::from_wire(s))
    }
}

impl ThinEventType {
    /// Whether this is [`ThinEventType::Unknown`].
    pub fn is_unknown(&self) -> bool {
        matches!(self, ThinEventType::Unknown(_))
    }
}

impl Serialize for ThinEventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ThinEventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(ThinEventType::from_wire(&s))
    }
}

/// The snapshot type whose twin `t` is: its own for a known `v1.*` type
/// ([`ThinEventType::snapshot_type`]), and for a `v1.*` type this release does not know,
/// the snapshot type named by the rest of its name when this release knows that one.
pub(crate) fn twin_type(t: &ThinEventType) -> Option<EventType> {
    match t {
        ThinEventType::Unknown(wire) => Some(EventType::from_wire(wire.strip_prefix("v1.")?))
            .filter(|snapshot| !snapshot.is_unknown()),
        known => known.snapshot_type(),
    }
}

/// `unix` seconds as an RFC 3339 UTC timestamp with milliseconds
/// (`2026-10-30T14:03:27.000Z`), as Stripe writes them.
pub(crate) fn rfc3339_from(unix: i64) -> String {
    let (y, mo, d, h, mi, s) = crate::display::civil(unix);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z")
}

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp: its seconds
/// ([`rfc3339_seconds`]) and the first three digits of its fraction, as Stripe
/// compares v2 events' times.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn rfc3339_millis(s: &str) -> Option<i64> {
    let seconds = rfc3339_seconds(s)?;
    let mut millis = 0;
    if let Some((b'.', frac)) = s.as_bytes().get(19..).and_then(<[u8]>::split_first) {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit());
        for (scale, d) in [100, 10, 1].into_iter().zip(digits) {
            millis += scale * i64::from(d - b'0');
        }
    }
    seconds.checked_mul(1000)?.checked_add(millis)
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp (`2026-10-30T14:03:27.512Z`,
/// `…+02:00`); fractions are dropped.
pub(crate) fn rfc3339_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    if let Some((b'.', frac)) = rest.split_first() {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let v = |a: u8, b: u8| i64::from(a - b'0') * 10 + i64::from(b - b'0');
            let (off_hours, off_minutes) = (v(digits[0], digits[1]), v(digits[2], digits[3]));
            if off_hours > 23 || off_minutes > 59 {
                return None;
            }
            let off = off_hours * 3600 + off_minutes * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = crate::display::days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days in `month` (1 to 12) of the proleptic Gregorian `year`.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`OBJECTS_WITHOUT_ID`] is every object schema without an `id` field.
    #[test]
    fn objects_without_id_are_the_schemas_without_one() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/stripe/schemas");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            if !text.lines().any(|l| l.split('\t').next() == Some("id")) {
                let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
                found.push(name);
            }
        }
        found.sort();
        assert_eq!(found, OBJECTS_WITHOUT_ID);
    }

    #[test]
    fn rfc3339_millis_keeps_three_digits_of_the_fraction() {
        assert_eq!(
            rfc3339_millis("2022-02-15T00:27:45.330Z"),
            Some(1_644_884_865_330)
        );
        assert_eq!(
            rfc3339_millis("2022-02-15T02:27:45.5+02:00"),
            Some(1_644_884_865_500)
        );
        assert_eq!(
            rfc3339_millis("2022-02-15T00:27:45.123999Z"),
            Some(1_644_884_865_123)
        );
        assert_eq!(rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_millis("2022-02-15T00:27:45.Z"), None);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_seconds("2022-02-15T00:27:45.330Z"),
            Some(1_644_884_865)
        );
        assert_eq!(
            rfc3339_seconds("2022-02-15T02:27:45+02:00"),
            Some(1_644_884_865)
        );
        assert_eq!(
            // 12:00 at UTC-01:30 is 13:30 UTC: 951_825_600 + 5_400.
            rfc3339_seconds("2000-02-29T12:00:00-01:30"),
            Some(951_831_000)
        );
        // Leap days and months' last days are dates.
        assert!(rfc3339_seconds("2024-02-29T00:00:00Z").is_some());
        assert!(rfc3339_seconds("2000-02-29T00:00:00Z").is_some());
        assert!(rfc3339_seconds("2022-12-31T23:59:59+23:59").is_some());
        for bad in [
            "",
            "2022-02-15",
            "2022-02-15T00:27:45",
            "2022-13-01T00:00:00Z",
            "2022-02-15T00:27:45.Z",
            "x022-02-15T00:27:45Z",
            "2022-02-15T00:27:45+0200",
            // Days that no calendar has, and offsets past a day.
            "2022-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2022-04-31T00:00:00Z",
            "2022-02-15T00:27:45+24:00",
            "2022-02-15T00:27:45-02:60",
            // Time separators other than `:`.
            "2026-10-30T14x03x27Z",
            "2026-10-30T14:03-27Z",
        ] {
            assert_eq!(rfc3339_seconds(bad), None, "{bad}");
        }
    }
}
