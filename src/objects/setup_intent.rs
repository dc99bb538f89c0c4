//! `setup_intent` (`setup_intent.*` events).

use serde::Serialize;

use super::common::{string_enum, Expandable, HasId, IdOnly, Metadata};
use super::customer::Customer;
use super::map_only::map_deserialize;
use super::payment_intent::{LastPaymentError, SetupFutureUsage};
use super::payment_method::PaymentMethod;

/// A SetupIntent: saving a payment method for later payments.
///
/// Carried by `setup_intent.succeeded`, `.setup_failed`, `.created`, `.canceled` and
/// `.requires_action`.
#[derive(Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SetupIntent {
    /// SetupIntent id (`seti_…`).
    pub id: String,
    /// Always `"setup_intent"`.
    pub object: Option<String>,
    /// Why it was canceled.
    pub cancellation_reason: Option<SetupIntentCancellationReason>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// The customer (expandable).
    pub customer: Option<Expandable<Customer>>,
    /// Your description.
    pub description: Option<String>,
    /// The error of the latest failed attempt.
    pub last_setup_error: Option<LastPaymentError>,
    /// The latest setup attempt (expandable).
    pub latest_attempt: Option<Expandable<IdOnly>>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// The mandate it created (expandable).
    pub mandate: Option<Expandable<IdOnly>>,
    /// Your metadata.
    pub metadata: Metadata,
    /// What the customer must do next, as raw JSON: its shape depends on its `type`.
    pub next_action: Option<serde_json::Value>,
    /// The connected account it is set up on behalf of (expandable).
    pub on_behalf_of: Option<Expandable<IdOnly>>,
    /// The payment method being saved (expandable).
    pub payment_method: Option<Expandable<PaymentMethod>>,
    /// Payment method types it may use.
    pub payment_method_types: Vec<String>,
    /// Status.
    pub status: Option<SetupIntentStatus>,
    /// How the saved payment method will be used.
    pub usage: Option<SetupFutureUsage>,
}

// `next_action` may hold the client secret in a URL's query.
crate::secret::debug_hiding_json!(SetupIntent {
    id,
    object,
    cancellation_reason,
    created,
    customer,
    description,
    last_setup_error,
    latest_attempt,
    livemode,
    mandate,
    metadata,
    on_behalf_of,
    payment_method,
    payment_method_types,
    status,
    usage;
    json: next_action
});

map_deserialize!(SetupIntent {
    required "id" => id;
    "object" => object,
    "cancellation_reason" => cancellation_reason,
    "created" => created,
    "customer" => customer,
    "description" => description,
    "last_setup_error" => last_setup_error,
    "latest_attempt" => latest_attempt,
    "livemode" => livemode,
    "mandate" => mandate,
    "metadata" => metadata: null_as_default,
    "next_action" => next_action,
    "on_behalf_of" => on_behalf_of,
    "payment_method" => payment_method,
    "payment_method_types" => payment_method_types: null_as_default,
    "status" => status,
    "usage" => usage,
});

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
