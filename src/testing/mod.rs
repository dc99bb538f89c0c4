//! Test kit (feature `testing`): sign requests like Stripe, build events from Stripe's
//! fixtures, and check any [`IdempotencyStore`](crate::IdempotencyStore) with
//! [`store_conformance`].

mod fixtures;
pub mod store_conformance;

use hmac::Mac;

use crate::secret::HmacSha256;

pub use crate::clock::ManualClock;

/// The current Unix time in seconds.
pub fn now() -> i64 {
    crate::clock::Clock::now_unix(&crate::clock::SystemClock)
}

fn v1(payload: &[u8], secret: &str, timestamp: i64) -> String {
    // HMAC takes keys of any length; an error here is impossible, and an empty MAC would
    // only make the signature fail to verify.
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// A `Stripe-Signature` header for `payload`, signed with `secret` at `timestamp`, in the
/// format of stripe-node's `generateTestHeaderString`: `t={timestamp},v1={hex}`.
///
/// ```
/// use stripe_webhooks::{testing, verify_signature};
/// let header = testing::sign(b"{}", "whsec_x", testing::now());
/// assert!(header.starts_with("t="));
/// assert!(verify_signature(b"{}", &header, "whsec_x").is_ok());
/// ```
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    format!("t={timestamp},v1={}", v1(payload, secret, timestamp))
}

/// A header with one `v1` signature per secret, as Stripe sends while an endpoint has
/// more than one active secret (during a rotation).
pub fn sign_with_secrets(payload: &[u8], secrets: &[&str], timestamp: i64) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&v1(payload, secret, timestamp));
    }
    header
}

/// Stripe's fixture JSON for an object type (`"invoice"`, `"checkout.session"`…).
pub fn fixture(object_type: &str) -> Option<&'static str> {
    fixtures::FIXTURES
        .iter()
        .find(|(o, _)| *o == object_type)
        .map(|(_, json)| *json)
}

/// Parses `json` into the struct of `object_type` (`"coupon"`, `"checkout.session"`),
/// the way an event's `data.object` is parsed, and gives the id read through the
/// struct. `None` for an object type without a struct. For drift tests over every
/// object: an unknown field, an unknown enum value or a field of another type must not
/// make a parse fail.
///
/// ```
/// use stripe_webhooks::testing;
/// let id = testing::parse_object("coupon", r#"{"id":"co_1","duration":"someday"}"#);
/// assert_eq!(id.unwrap().unwrap().as_deref(), Some("co_1"));
/// ```
///
/// # Errors
///
/// The JSON error when the object does not parse into its struct.
pub fn parse_object(
    object_type: &str,
    json: &str,
) -> Option<Result<Option<String>, serde_json::Error>> {
    crate::objects::PARSERS
        .iter()
        .find(|(o, _)| *o == object_type)
        .map(|(_, parse)| parse(json))
}

/// Every object type with a struct (hand-written or generated), sorted.
pub fn object_types() -> impl Iterator<Item = &'static str> {
    crate::objects::PARSERS.iter().map(|(o, _)| *o)
}

/// Every fixture, as `(object type, JSON)`.
pub fn fixtures() -> &'static [(&'static str, &'static str)] {
    fixtures::FIXTURES
}

/// A snapshot event envelope around `object_json`, as Stripe would send it.
pub fn event_json(id: &str, event_type: &str, object_json: &str) -> String {
    format!(
        r#"{{"id":{},"object":"event","api_version":"2026-07-29.dahlia","created":{},"data":{{"object":{}}},"livemode":false,"pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"type":{}}}"#,
        serde_json::Value::from(id),
        now(),
        object_json.trim(),
        serde_json::Value::from(event_type),
    )
}

/// An event of `event_type` built around Stripe's fixture for the object that type
/// carries (the first one, for types that carry one of several). `None` for a type that
/// is not documented.
///
/// ```
/// use stripe_webhooks::{testing, Event};
/// let json = testing::event_for_type("evt_1", "invoice.payment_failed").unwrap();
/// let event = stripe_webhooks::dangerous::parse_unverified(json.as_bytes()).unwrap();
/// assert!(matches!(event, Event::InvoicePaymentFailed(_)));
/// ```
pub fn event_for_type(id: &str, event_type: &str) -> Option<String> {
    let object = crate::EventType::from_wire(event_type).object_type()?;
    let first = object.split('|').next()?;
    Some(event_json(id, event_type, fixture(first)?))
}
