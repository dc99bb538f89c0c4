//! `setup_intent` (`setup_intent.*` events).

use serde::{Deserialize, Serialize};

use super::common::{null_as_default, string_enum, Expandable, HasId, IdOnly, Metadata};
use super::customer::Customer;
use super::payment_intent::{LastPaymentError, SetupFutureUsage};
use super::payment_method::PaymentMethod;

/// A SetupIntent: saving a payment method for later payments.
///
/// Carried by `setup_intent.succeeded`, `.setup_failed`, `.created`, `.canceled` and
/// `.requires_action`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SetupIntent {
    /// SetupIntent id (`seti_…`).
    pub id: String,
    /// Always `"setup_intent"`.
    #[serde(default)]
    pub object: Option<String>,
    /// Why it was canceled.
    #[serde(default)]
    pub cancellation_reason: Option<SetupIntentCancellationReason>,
    /// When it was created (Unix seconds).
    #[serde(default)]
    pub created: Option<i64>,
    /// The customer (expandable).
    #[serde(default)]
    pub customer: Option<Expandable<Customer>>,
    /// Your description.
    #[serde(default)]
    pub description: Option<String>,
    /// The error of the latest failed attempt.
    #[serde(default)]
    pub last_setup_error: Option<LastPaymentError>,
    /// The latest setup attempt (expandable).
    #[serde(default)]
    pub latest_attempt: Option<Expandable<IdOnly>>,
    /// Whether it exists in live mode.
    #[serde(default)]
    pub livemode: Option<bool>,
    /// The mandate it created (expandable).
    #[serde(default)]
    pub mandate: Option<Expandable<IdOnly>>,
    /// Your metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// What the customer must do next, as raw JSON: its shape depends on its `type`.
    #[serde(default)]
    pub next_action: Option<serde_json::Value>,
    /// The connected account it is set up on behalf of (expandable).
    #[serde(default)]
    pub on_behalf_of: Option<Expandable<IdOnly>>,
    /// The payment method being saved (expandable).
    #[serde(default)]
    pub payment_method: Option<Expandable<PaymentMethod>>,
    /// Payment method types it may use.
    #[serde(default, deserialize_with = "null_as_default")]
    pub payment_method_types: Vec<String>,
    /// Status.
    #[serde(default)]
    pub status: Option<SetupIntentStatus>,
    /// How the saved payment method will be used.
    #[serde(default)]
    pub usage: Option<SetupFutureUsage>,
}

impl SetupIntent {
    /// The customer's id, whether `customer` is expanded or not.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer.as_ref().and_then(Expandable::id)
    }

    /// The payment method's id, whether `payment_method` is expanded or not.
    pub fn payment_method_id(&self) -> Option<&str> {
        self.payment_method.as_ref().and_then(Expandable::id)
    }
}

impl HasId for SetupIntent {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

string_enum! {
    /// Status of a [`SetupIntent`].
    pub enum SetupIntentStatus {
        /// Canceled.
        Canceled = "canceled",
        /// Processing asynchronously.
        Processing = "processing",
        /// The customer must authenticate.
        RequiresAction = "requires_action",
        /// Waiting to be confirmed.
        RequiresConfirmation = "requires_confirmation",
        /// Needs a (new) payment method.
        RequiresPaymentMethod = "requires_payment_method",
        /// Succeeded: the payment method is saved.
        Succeeded = "succeeded",
    }
}

string_enum! {
    /// Why a [`SetupIntent`] was canceled.
    pub enum SetupIntentCancellationReason {
        /// Abandoned.
        Abandoned = "abandoned",
        /// A duplicate.
        Duplicate = "duplicate",
        /// The customer asked.
        RequestedByCustomer = "requested_by_customer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::ApiErrorType;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/setup_intent.json"
    ));

    #[test]
    fn parses_fixture() {
        let si: SetupIntent = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(si.id, "seti_1Pgag7B7WZ01zgkWSgwGdb8Z");
        assert_eq!(si.status, Some(SetupIntentStatus::RequiresPaymentMethod));
        assert_eq!(si.usage, Some(SetupFutureUsage::OffSession));
        assert_eq!(
            si.last_setup_error.as_ref().unwrap().type_,
            Some(ApiErrorType::IdempotencyError)
        );
        assert_eq!(si.customer_id(), None);
        let back: SetupIntent = serde_json::from_str(&serde_json::to_string(&si).unwrap()).unwrap();
        assert_eq!(back, si);
    }

    #[test]
    fn unknown_status_and_expanded_payment_method() {
        let si: SetupIntent = serde_json::from_str(
            r#"{"id":"seti_1","status":"requires_magic","customer":"cus_1",
                "payment_method":{"id":"pm_1","object":"payment_method","type":"sepa_debit"}}"#,
        )
        .unwrap();
        assert_eq!(
            si.status,
            Some(SetupIntentStatus::Unknown("requires_magic".into()))
        );
        assert_eq!(si.customer_id(), Some("cus_1"));
        assert_eq!(si.payment_method_id(), Some("pm_1"));
        assert!(si.payment_method.unwrap().is_expanded());
    }
}
