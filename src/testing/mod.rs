//! Test kit (feature `testing`): sign requests like Stripe, build events from Stripe's
//! fixtures, check any [`IdempotencyStore`](crate::IdempotencyStore) with
//! [`store_conformance`], and run a Stripe API client against a fake Stripe API
//! ([`FakeStripe`]).

mod fake_api;
mod fixtures;
pub mod queue_conformance;
pub mod store_conformance;

use hmac::Mac;

use crate::secret::HmacSha256;

pub use crate::clock::ManualClock;
pub use fake_api::{FakeStripe, Fault, RecordedRequest, FAKE_API_KEY, MAX_RECORDED};

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

/// A snapshot event envelope around `object_json`, as Stripe would send it, stamped with
/// the API version the crate is built against ([`API_VERSION`](crate::client::API_VERSION)).
pub fn event_json(id: &str, event_type: &str, object_json: &str) -> String {
    format!(
        r#"{{"id":{},"object":"event","api_version":{},"created":{},"data":{{"object":{}}},"livemode":false,"pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"type":{}}}"#,
        serde_json::Value::from(id),
        serde_json::Value::from(crate::client::API_VERSION),
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

/// Builds a thin event notification body (`"object": "v2.core.event"`), as Stripe would
/// push it to a thin event destination.
///
/// ```
/// use stripe_webhooks::{testing::ThinEventBuilder, dangerous, ThinEventType};
///
/// let body = ThinEventBuilder::new("evt_test_1", "v1.invoice.paid")
///     .related("in_1", "invoice", "/v1/invoices/in_1")
///     .snapshot_event("evt_1")
///     .context("acct_1")
///     .build();
/// let n = dangerous::parse_unverified_notification(body.as_bytes()).unwrap();
/// assert_eq!(n.event_type, ThinEventType::V1InvoicePaid);
/// assert_eq!(n.account(), Some("acct_1"));
/// ```
#[derive(Debug, Clone)]
pub struct ThinEventBuilder {
    value: serde_json::Map<String, serde_json::Value>,
}

impl ThinEventBuilder {
    /// A test-mode notification of `event_type`, created now, with no related object.
    pub fn new(id: &str, event_type: &str) -> Self {
        let mut value = serde_json::Map::new();
        value.insert("id".into(), id.into());
        value.insert("object".into(), "v2.core.event".into());
        value.insert("type".into(), event_type.into());
        value.insert("livemode".into(), false.into());
        value.insert("created".into(), rfc3339(now()).into());
        value.insert("context".into(), serde_json::Value::Null);
        value.insert(
            "reason".into(),
            serde_json::json!({"type": "request", "request": {"id": "req_test", "idempotency_key": "idem_test"}}),
        );
        Self { value }
    }

    /// Sets `related_object`.
    #[must_use]
    pub fn related(mut self, id: &str, object_type: &str, url: &str) -> Self {
        self.value.insert(
            "related_object".into(),
            serde_json::json!({"id": id, "type": object_type, "url": url}),
        );
        self
    }

    /// Sets `related_object` to a singleton without an id, as Stripe sends it for
    /// `v1.balance.available` (`"balance"`, `"/v1/balance"`).
    #[must_use]
    pub fn related_singleton(mut self, object_type: &str, url: &str) -> Self {
        self.value.insert(
            "related_object".into(),
            serde_json::json!({"type": object_type, "url": url}),
        );
        self
    }

    /// Sets `snapshot_event`: the id of the snapshot twin.
    #[must_use]
    pub fn snapshot_event(mut self, id: &str) -> Self {
        self.value.insert("snapshot_event".into(), id.into());
        self
    }

    /// Sets `context` (a connected account, `acct_…`).
    #[must_use]
    pub fn context(mut self, context: &str) -> Self {
        self.value.insert("context".into(), context.into());
        self
    }

    /// Sets `livemode`.
    #[must_use]
    pub fn livemode(mut self, livemode: bool) -> Self {
        self.value.insert("livemode".into(), livemode.into());
        self
    }

    /// Sets `created` (Unix seconds, written as RFC 3339).
    #[must_use]
    pub fn created(mut self, unix: i64) -> Self {
        self.value.insert("created".into(), rfc3339(unix).into());
        self
    }

    /// The JSON body.
    pub fn build(&self) -> String {
        serde_json::Value::Object(self.value.clone()).to_string()
    }
}

/// `unix` seconds as an RFC 3339 UTC timestamp with milliseconds, as Stripe writes them.
pub fn rfc3339(unix: i64) -> String {
    crate::event::rfc3339_from(unix)
}

/// One change delivered both ways, as Stripe does while a snapshot and a thin
/// destination run side by side: a snapshot event `snapshot_id` of `event_type` (around
/// the fixture for its object, with id `object_id`), and its thin twin
/// `v1.<event_type>` whose `snapshot_event` is `snapshot_id`. Its
/// `related_object.url` is [`related_object_url`]'s; for an object nested under another
/// (a `capability` under its account) or a singleton, build the thin event with
/// [`ThinEventBuilder::related`] and the real URL.
///
/// # Panics
///
/// If `event_type` is not a documented snapshot type with a fixture.
pub fn event_pair(snapshot_id: &str, event_type: &str, object_id: &str) -> (String, String) {
    let ty = crate::EventType::from_wire(event_type);
    let object_type = ty
        .object_type()
        .and_then(|o| o.split('|').next())
        .unwrap_or_else(|| panic!("{event_type} is not a documented snapshot type"));
    let mut object: serde_json::Value = fixture(object_type)
        .and_then(|f| serde_json::from_str(f).ok())
        .unwrap_or_else(|| panic!("no fixture for {object_type}"));
    object["id"] = object_id.into();
    let snapshot = event_json(snapshot_id, event_type, &object.to_string());
    let thin = ThinEventBuilder::new(
        &format!("evt_thin_{snapshot_id}"),
        &format!("v1.{event_type}"),
    )
    .related(
        object_id,
        object_type,
        &related_object_url(object_type, object_id),
    )
    .snapshot_event(snapshot_id)
    .build();
    (snapshot, thin)
}

/// The URL a thin event's `related_object` gives for object `object_id` of
/// `object_type`: its API path ([`object_path`](crate::client::object_path)), or, for a
/// type that table does not know, the path Stripe's naming gives: dots become slashes
/// and the last word is plural (`issuing.card` at `/v1/issuing/cards/{id}`), and a
/// `v2.` type is under `/v2/` (`v2.core.account` at `/v2/core/accounts/{id}`). An object
/// nested under another (a `capability` under its account) or a singleton has a URL of
/// its own, which this cannot know.
///
/// ```
/// use stripe_webhooks::testing::related_object_url;
///
/// assert_eq!(related_object_url("customer", "cus_1"), "/v1/customers/cus_1");
/// assert_eq!(related_object_url("issuing.dispute", "idp_1"), "/v1/issuing/disputes/idp_1");
/// assert_eq!(related_object_url("v2.core.account", "acct_1"), "/v2/core/accounts/acct_1");
/// assert_eq!(related_object_url("issuing.dispute", "a/b"), "/v1/issuing/disputes/a%2Fb");
/// assert_eq!(related_object_url("customer", ".."), "/v1/customers/%2E%2E");
/// ```
pub fn related_object_url(object_type: &str, object_id: &str) -> String {
    if let Some(path) = crate::client::object_path(object_type, object_id) {
        return path;
    }
    let mut url = match object_type.strip_prefix("v2.") {
        Some(v2) => format!("/v2/{}/", plural_path(v2)),
        None => format!("/v1/{}/", plural_path(object_type)),
    };
    match object_id {
        // A path's dot segments, which a client or server would resolve, written as data.
        "." | ".." => url.push_str(&object_id.replace('.', "%2E")),
        _ => crate::client::paths::push_segment(&mut url, object_id),
    }
    url
}

/// An object type's collection by Stripe's naming: `issuing.card` → `issuing/cards`,
/// `capability` → `capabilities`, `tax.settings` → `tax/settings`.
fn plural_path(object_type: &str) -> String {
    let path = object_type.replace('.', "/");
    let consonant_y = path
        .strip_suffix('y')
        .filter(|stem| !stem.ends_with(['a', 'e', 'i', 'o', 'u']));
    if let Some(stem) = consonant_y {
        format!("{stem}ies")
    } else if path.ends_with('s') {
        path
    } else if path.ends_with(['x', 'z']) || path.ends_with("ch") || path.ends_with("sh") {
        format!("{path}es")
    } else {
        format!("{path}s")
    }
}

#[cfg(test)]
mod thin_tests {
    #[test]
    fn paths_follow_stripes_naming() {
        for (object, path) in [
            ("issuing.card", "issuing/cards"),
            ("capability", "capabilities"),
            ("tax.settings", "tax/settings"),
            ("treasury.financial_account", "treasury/financial_accounts"),
            ("issuing.authorization", "issuing/authorizations"),
            ("radar.early_fraud_warning", "radar/early_fraud_warnings"),
            ("tax_id", "tax_ids"),
            (
                "entitlements.active_entitlement_summary",
                "entitlements/active_entitlement_summaries",
            ),
            ("billing.alert", "billing/alerts"),
            ("terminal.reader", "terminal/readers"),
            (
                "identity.verification_session",
                "identity/verification_sessions",
            ),
        ] {
            assert_eq!(super::plural_path(object), path, "{object}");
        }
        let (_, thin) = super::event_pair("evt_ic", "issuing_card.created", "ic_1");
        let n = crate::dangerous::parse_unverified_notification(thin.as_bytes()).unwrap();
        assert_eq!(n.related_object.unwrap().url, "/v1/issuing/cards/ic_1");
    }

    #[test]
    fn rfc3339_round_trips() {
        for t in [0, 951_782_400, 1_644_884_865, 1_793_455_407, 4_102_444_800] {
            let s = super::rfc3339(t);
            assert_eq!(crate::event::rfc3339_seconds(&s), Some(t), "{s}");
        }
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
