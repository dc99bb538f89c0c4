//! v2 "thin" event notifications.

use serde::{Deserialize, Serialize};

use super::error::ParseError;

/// The object a thin event is about; fetch it from `url` with the Stripe API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RelatedObject {
    /// The object's id.
    pub id: String,
    /// The object's type, for example `billing.meter`.
    #[serde(rename = "type")]
    pub object_type: String,
    /// The API path to fetch it from, for example `/v1/billing/meters/mtr_123`.
    pub url: String,
}

/// A v2 thin event notification (`"object": "v2.core.event"`).
///
/// Thin events carry no snapshot of the object: fetch the full event or the
/// [`related_object`](Self::related_object) from the API when you need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventNotification {
    /// The event id (`evt_…`).
    pub id: String,
    /// The event type, for example `v1.billing.meter.error_report_triggered`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the event was created (RFC 3339).
    pub created: String,
    /// Whether the event happened in live mode.
    #[serde(default)]
    pub livemode: bool,
    /// The account or organization context the event happened in.
    #[serde(default)]
    pub context: Option<String>,
    /// The object the event is about, when there is one.
    #[serde(default)]
    pub related_object: Option<RelatedObject>,
    /// Why the event happened (for example a request from an API key), kept as raw JSON.
    #[serde(default)]
    pub reason: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(borrow, default)]
    object: Option<std::borrow::Cow<'a, str>>,
}

impl EventNotification {
    /// Parses a thin event notification from a body.
    ///
    /// # Errors
    ///
    /// - [`ParseError::SnapshotEvent`] if the body is a v1 snapshot event;
    /// - [`ParseError::InvalidJson`] or [`ParseError::NotAnEvent`] otherwise.
    pub(crate) fn from_slice(body: &[u8]) -> Result<Self, ParseError> {
        let tag: Tag<'_> = serde_json::from_slice(body).map_err(|e| ParseError::from_json(&e))?;
        match tag.object.as_deref() {
            Some("v2.core.event") => {}
            Some("event") => return Err(ParseError::SnapshotEvent),
            other => {
                return Err(ParseError::NotAnEvent {
                    message: match other {
                        Some(o) => format!("`object` is {o:?}, not \"v2.core.event\""),
                        None => "missing field `object`".to_owned(),
                    },
                    line: 1,
                    column: 1,
                    event_id: None,
                })
            }
        }
        serde_json::from_slice(body).map_err(|e| ParseError::from_json(&e))
    }
}
